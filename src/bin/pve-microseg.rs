//! `pve-microseg`: the library's calls from a shell, for administrators
//! debugging a node, for the fault tests (which need separate processes to
//! race and to kill) and for measuring the one-shot-process model against the
//! in-process one. pve-network itself never runs it: it calls the library.

use std::process::ExitCode;

const USAGE: &str =
    "usage: pve-microseg apply-full | apply-iface IFACE | clear | policy | subsystems | simulate SRC DST [PROTO [DPORT]]";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let arg = |i: usize| args.get(i).map(|a| a.to_string_lossy().into_owned());
    let result = match (arg(0).as_deref(), args.len()) {
        (Some("apply-full"), 1) => microseg::apply_full().map(|r| r.to_string()),
        (Some("apply-iface"), 2) => {
            use std::os::unix::ffi::OsStrExt;
            microseg::apply_iface(args[1].as_bytes()).map(|o| match &o {
                microseg::IfaceOutcome::Enforced { report, .. } | microseg::IfaceOutcome::FullPass(report) => {
                    format!("{}: {report}", o.word())
                }
                other => other.word().to_string(),
            })
        }
        (Some("clear"), 1) => microseg::clear().map(|()| "cleared".to_string()),
        (Some("policy"), 1) => microseg::effective_policy().map(|p| p.to_string()),
        // SRC '' is unstamped; PROTO and DPORT may be left out.
        (Some("simulate"), 3..=5) => {
            let (proto, dport) = (arg(3), arg(4));
            microseg::simulate(Some(&arg(1).unwrap()), &arg(2).unwrap(), proto.as_deref(), dport.as_deref()).map(|s| {
                let rule = s.rule.map(|r| format!(" by rule '{r}'")).unwrap_or_default();
                format!("{}{rule}: {}", s.verdict, s.reason)
            })
        }
        // The registry's subsystem names, one per line (the package's purge uses them).
        (Some("subsystems"), 1) => Ok(microseg::Microseg::from_env()
            .units
            .iter()
            .map(|u| u.state.name())
            .collect::<Vec<_>>()
            .join("\n")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
