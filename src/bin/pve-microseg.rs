//! `pve-microseg`: the administrator's view of microsegmentation on this
//! node (SPEC section 8): the library's calls from a shell, `status`,
//! `simulate` and the live `monitor` of drop and audit events. Output
//! follows the PVE CLI conventions: `--output-format text` (the default)
//! for people, `json` for tools. Errors go to stderr with a non-zero exit.
//! pve-network never runs it: it calls the library in-process.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use microseg::report::Status;
use microseg::subsystems::microseg::events::{EventRecord, Until};
use microseg::{logger, IfaceOutcome, Microseg};

const USAGE: &str = "usage: pve-microseg <command> [OPTIONS]

commands:
  apply-full                     full pass: enforce the running config on this node
  apply-iface IFACE              enforce one guest NIC (what tap_plug calls)
  clear                          detach everything and remove all state
  status                         what is enforced: NICs, counters, rules, flows, warnings
  simulate SRC DST [PROTO [DPORT]]
                                 which rule decides a flow (SRC/DST: group or guest NIC, '' unstamped)
  monitor [--count N] [--timeout SECONDS]
                                 stream drop and audit events
  policy                         the resolved policy as JSON
  subsystems                     the subsystems' names
  help                           this text

options:
  --output-format text|json      (default text)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// Splits `--output-format`, `--count` and `--timeout` (also `--opt=value`) from the positional arguments.
struct Args {
    format: Format,
    count: Option<usize>,
    timeout: Option<f64>,
    positional: Vec<std::ffi::OsString>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { format: Format::Text, count: None, timeout: None, positional: Vec::new() };
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let text = a.to_string_lossy().into_owned();
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (text.clone(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().map(|v| v.to_string_lossy().into_owned()).with_context(|| format!("{what} needs a value")),
            }
        };
        match name.as_str() {
            "--output-format" => {
                args.format = match value("--output-format")?.as_str() {
                    "text" => Format::Text,
                    "json" | "json-pretty" => Format::Json,
                    other => bail!("--output-format: unknown format '{other}' (text or json)"),
                }
            }
            "--count" => args.count = Some(value("--count")?.parse().context("--count: not a number")?),
            "--timeout" => {
                let t: f64 = value("--timeout")?.parse().context("--timeout: not a number of seconds")?;
                if !(t > 0.0 && t.is_finite()) {
                    bail!("--timeout: must be a positive number of seconds");
                }
                args.timeout = Some(t);
            }
            s if s.starts_with("--") && s.len() > 2 => bail!("unknown option '{s}'"),
            _ => args.positional.push(a),
        }
    }
    Ok(args)
}

fn yes(flag: u8) -> &'static str {
    if flag != 0 {
        "yes"
    } else {
        "no"
    }
}

/// Words separated by spaces, `-` for none.
fn words_or_dash(words: &[String]) -> String {
    if words.is_empty() {
        "-".to_string()
    } else {
        words.join(" ")
    }
}

/// Counters as `name=value` words.
fn key_values(counters: &std::collections::BTreeMap<String, u64>) -> String {
    counters.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn status_text(s: &Status) -> String {
    let mut out = Vec::new();
    let nics: Vec<Vec<String>> = s
        .nics
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.ifindex.to_string(),
                n.group.clone().unwrap_or_else(|| if n.mark == 0 { "-".into() } else { format!("mark {}", n.mark) }),
                n.mark.to_string(),
                yes(n.audit).into(),
                yes(n.enforced).into(),
                n.counters.allowed.to_string(),
                n.counters.replied.to_string(),
                n.counters.dropped.to_string(),
                n.counters.audited.to_string(),
                n.counters.blocked.to_string(),
                n.counters.unrecorded.to_string(),
            ]
        })
        .collect();
    if nics.is_empty() {
        out.push("no guest NICs on this node".to_string());
    } else {
        let header =
            ["NIC", "IFINDEX", "GROUP", "MARK", "AUDIT", "ENFORCED", "ALLOWED", "REPLIED", "DROPPED", "AUDITED", "BLOCKED", "UNRECORDED"];
        out.push(table(&header, &nics));
    }
    if !s.rules.is_empty() {
        let rules: Vec<Vec<String>> = s
            .rules
            .iter()
            .map(|(id, r)| {
                let state = match (r.loaded, r.configured) {
                    (1, 1) => "enforced",
                    (1, _) => "enforced, not in the running config",
                    (_, _) => "decides nothing",
                };
                vec![id.clone(), r.hits.to_string(), state.to_string()]
            })
            .collect();
        out.push(String::new());
        out.push(table(&["RULE", "HITS", "STATE"], &rules));
    }
    out.push(String::new());
    out.push(format!("flows: {} of {}", s.flows.entries, s.flows.capacity));
    for (name, sub) in &s.subsystems {
        let mut line = format!("subsystem {name}: ");
        if sub.loaded == 0 {
            line.push_str("not loaded");
        } else {
            line.push_str(&format!(
                "loaded by version {}, schema {}, {}, {} links",
                sub.version.as_deref().unwrap_or("?"),
                sub.schema_version.map_or("?".to_string(), |v| v.to_string()),
                if sub.current != 0 { "current" } else { "other object than this library's" },
                sub.links
            ));
        }
        if !sub.counters.is_empty() {
            line.push_str(&format!("; {}", key_values(&sub.counters)));
        }
        out.push(line);
    }
    let u = &s.underlay;
    if !u.guarded.is_empty() || !u.interfaces.is_empty() || !u.peers.is_empty() {
        out.push(format!("underlay: guarded {}; peers {}", words_or_dash(&u.guarded), words_or_dash(&u.peers)));
    }
    let v = &u.srv6;
    if !v.carrying.is_empty() || !v.peers.is_empty() {
        out.push(format!(
            "srv6: carrying {}; peers {}; {}",
            words_or_dash(&v.carrying),
            words_or_dash(&v.peers),
            key_values(&v.counters)
        ));
    }
    for w in &s.warnings {
        out.push(format!("warning: {w}"));
    }
    out.join("\n")
}

fn emit(format: Format, json: serde_json::Value, text: impl FnOnce() -> String) -> String {
    match format {
        Format::Json => json.to_string(),
        Format::Text => text(),
    }
}

fn run(args: &Args) -> Result<Option<String>> {
    let pos = |i: usize| args.positional.get(i).map(|a| a.to_string_lossy().into_owned());
    let n = args.positional.len();
    let f = args.format;
    let ms = Microseg::from_env();
    let out = match (pos(0).as_deref(), n) {
        (Some("apply-full"), 1) => {
            let r = ms.apply_full().context("microseg: apply_full")?;
            emit(f, serde_json::to_value(&r)?, || r.to_string())
        }
        (Some("apply-iface"), 2) => {
            use std::os::unix::ffi::OsStrExt;
            let o = ms.apply_iface(args.positional[1].as_bytes()).context("microseg")?;
            let report = match &o {
                IfaceOutcome::Enforced { report, .. } | IfaceOutcome::FullPass(report) => Some(report.clone()),
                _ => None,
            };
            let json = serde_json::json!({ "outcome": o.word(), "report": report });
            emit(f, json, || match &report {
                Some(r) => format!("{}: {r}", o.word()),
                None => o.word().to_string(),
            })
        }
        (Some("clear"), 1) => {
            ms.clear().context("microseg: clear")?;
            emit(f, serde_json::json!({ "cleared": 1 }), || "cleared".to_string())
        }
        (Some("status"), 1) => {
            let s = ms.status().context("microseg: status")?;
            emit(f, serde_json::to_value(&s)?, || status_text(&s))
        }
        (Some("simulate"), 3..=5) => {
            let (src, dst, proto, dport) = (pos(1).unwrap_or_default(), pos(2).unwrap_or_default(), pos(3), pos(4));
            let s = ms.simulate(Some(&src), &dst, proto.as_deref(), dport.as_deref()).context("microseg: simulate")?;
            emit(f, serde_json::to_value(&s)?, || {
                let rule = s.rule.as_ref().map(|r| format!(" by rule {r}")).unwrap_or_default();
                let audit = if s.audit != 0 { " (audit mode: delivered and reported)" } else { "" };
                format!("{}{rule}{audit}: {}", s.verdict, s.reason)
            })
        }
        (Some("monitor"), 1) => {
            monitor(&ms, args)?;
            return Ok(None);
        }
        (Some("policy"), 1) => ms.effective_policy().context("microseg: effective_policy")?.to_string(),
        // The registry's subsystem names, one per line (the package's purge uses them).
        (Some("subsystems"), 1) => {
            let names: Vec<&str> = ms.units.iter().map(|u| u.state.name()).collect();
            emit(f, serde_json::json!(names), || names.join("\n"))
        }
        (Some("help"), _) => USAGE.to_string(),
        (Some(cmd), _) if ["apply-full", "apply-iface", "clear", "status", "simulate", "monitor", "policy", "subsystems"].contains(&cmd) => {
            bail!("{cmd}: wrong number of arguments\n{USAGE}")
        }
        (Some(cmd), _) => bail!("unknown command '{cmd}'\n{USAGE}"),
        (None, _) => bail!("no command given\n{USAGE}"),
    };
    Ok(Some(out))
}

/// Prints each event as it comes, one line (text) or one JSON object per line.
fn monitor(ms: &Microseg, args: &Args) -> Result<()> {
    let until = Until { count: args.count, duration: args.timeout.map(Duration::from_secs_f64) };
    let stdout = std::io::stdout();
    let mut sink = |ev: &EventRecord| {
        let line = match args.format {
            Format::Json => serde_json::to_string(ev).unwrap_or_default(),
            Format::Text => ev.to_string(),
        };
        let mut lock = stdout.lock();
        // A closed pipe (`| head`) ends the monitor.
        writeln!(lock, "{line}").and_then(|()| lock.flush()).is_ok()
    };
    ms.monitor(until, &mut sink).context("microseg: monitor")?;
    Ok(())
}

fn main() -> ExitCode {
    // Records go to the journal; the call's warnings are shown here too,
    // once, after the output (as a PVE task log shows a Perl caller's).
    logger::install();
    logger::begin_call();
    let result = parse_args().and_then(|args| run(&args));
    let code = match result {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            // Shown here (priority 3 when stderr is the journal), and a
            // record in the journal besides.
            let e = format!("{e:#}");
            logger::error_to_journal(&e);
            logger::stderr_line(3, &e);
            ExitCode::FAILURE
        }
    };
    for w in logger::end_call() {
        logger::stderr_line(4, &format!("warning: {w}"));
    }
    code
}
