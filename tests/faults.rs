//! Faults against the real kernel: processes killed at every crash point,
//! concurrent callers from separate processes, lost and corrupt state, and
//! capacity limits. After each, the next call converges to exactly the
//! desired state: every assigned NIC has our program once per direction.

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use microseg::kernel::object::Hook;
use microseg::subsystems::microseg::maps::{NicKey, NicValue, PolicyKey, POLICY_GEN, RULE_NAMES};
use microseg::testobjects::{
    MICROSEG_BROKEN as MICROSEG_TEST_BROKEN_OBJECT, MICROSEG_CODE as MICROSEG_TEST_CODE_OBJECT,
    MICROSEG_LAYOUT as MICROSEG_TEST_LAYOUT_OBJECT,
};
use microseg::kernel::{netdev, sys};
use microseg::subsystems::microseg::resolve;
use microseg::{config, Microseg};

use common::*;

const GROUPS: &[(&str, u16, Option<&str>)] = &[("a", 1, None), ("b", 2, Some("a")), ("c", 3, None)];
const RULES: &[(&str, Option<&str>, &str, bool)] =
    &[("ab", Some("a"), "b", true), ("cb", Some("c"), "b", false), ("gw", None, "a", true), ("ca", Some("c"), "a", true)];

fn config_a() -> String {
    sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b")])
}

/// Moves 101, drops 102, adds 103, 104 and a rule: a full pass has every kind of work.
fn config_b() -> String {
    let mut rules = RULES.to_vec();
    rules.retain(|r| r.0 != "ca");
    rules.push(("bc", Some("b"), "c", true));
    sdn_config(GROUPS, &rules, &[(101, "c"), (103, "b"), (104, "a")])
}

/// Guest NICs for state tests: veths in the host namespace, peers unused.
fn add_nics(vmids: impl IntoIterator<Item = u32>) {
    let batch: String =
        vmids.into_iter().map(|v| format!("link add veth{v}i0 type veth peer name p{v}\nlink set veth{v}i0 up\n")).collect();
    ip_batch(None, &batch);
}

/// The CLI, with the sandbox's settings, in this thread's network namespace.
fn cli(sandbox: &Sandbox, args: &[&str], crash_at: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pve-microseg"));
    cmd.args(args)
        .env("PVE_MICROSEG_RUNNING_CONFIG", &sandbox.settings.running_config)
        .env("PVE_MICROSEG_BPF_ROOT", &sandbox.settings.bpf_root)
        .env("PVE_MICROSEG_RUN_DIR", &sandbox.settings.run_dir)
        .env_remove("PVE_MICROSEG_TEST_CRASH_AT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(point) = crash_at {
        cmd.env("PVE_MICROSEG_TEST_CRASH_AT", point);
    }
    cmd
}

/// Exactly the desired state: maps equal to the resolved policy, one link
/// per guest NIC (assigned or, pass-through, not) and program running the
/// current program, each NIC's TCX chain holding that program once, no
/// leftover pins; and a further full pass finds nothing to do.
fn assert_converged(ms: &Microseg, json: &str, what: &str) {
    let cfg = config::parse(json.as_bytes()).unwrap();
    let layouts = ms.policy().spec.map_layouts().unwrap();
    let cap = layouts.iter().find(|l| l.name == "policy").unwrap().max_entries as usize;
    let policy = resolve::resolve(&cfg, cap).unwrap();
    let mut want_taps = BTreeMap::new();
    for a in cfg.assignments.values() {
        let name = format!("veth{}i{}", a.vmid, a.iface);
        if let Some(ifindex) = netdev::ifindex(&name) {
            want_taps.insert(NicKey { ifindex }, NicValue { mark: cfg.groups[&a.group].mark, flags: 0 });
        }
    }
    let want_links: Vec<(String, u32)> = netdev::guest_nics().into_iter().map(|(nic, ifindex)| (nic.name(), ifindex)).collect();
    // The kernel keeps rule slots; both sides name the deciding rule.
    let want_rules: BTreeMap<PolicyKey, (u8, u8, Option<String>)> = policy
        .entries
        .iter()
        .map(|(k, v)| (*k, (v.verdict, v.flags, (v.rule > 0).then(|| policy.rules[(v.rule - 1) as usize].clone()))))
        .collect();

    let snap = snapshot(ms);
    let names = sys::obj_get(&ms.policy().map_pin(RULE_NAMES.name)).unwrap();
    let names = RULE_NAMES.open_fd(names.as_fd()).unwrap().entries().unwrap();
    let have_rules: BTreeMap<PolicyKey, (u8, u8, Option<String>)> = snap
        .rules
        .iter()
        .map(|(k, v)| (*k, (v.verdict, v.flags, (v.rule > 0).then(|| names[&(v.rule - 1)].as_string()))))
        .collect();
    assert_eq!(have_rules, want_rules, "{what}: rule map");
    assert_eq!(snap.taps, want_taps, "{what}: group map");
    assert!(!snap.files.iter().any(|f| f.contains("_tmp_")), "{what}: leftover temporary pins: {:?}", snap.files);
    let mut pins: Vec<String> = snap.links.keys().cloned().collect();
    pins.sort();
    let mut want_pins: Vec<String> =
        want_links.iter().flat_map(|(n, _)| [format!("{n}:microseg_enforce"), format!("{n}:microseg_stamp")]).collect();
    want_pins.sort();
    assert_eq!(pins, want_pins, "{what}: link pins");
    for (name, ifindex) in &want_links {
        for (hook, prog) in [(Hook::Egress, "microseg_enforce"), (Hook::Ingress, "microseg_stamp")] {
            let attached = sys::prog_query_tcx(*ifindex, hook.attach_type()).unwrap();
            assert_eq!(attached, vec![snap.progs[prog]], "{what}: {name} {} chain", hook.as_str());
        }
    }
    let again = ms.apply_full().unwrap();
    assert_eq!(again, microseg::Report { nics: want_taps.len(), ..Default::default() }, "{what}: not converged");
}

/// Waits for a CLI child; returns its exit status and what it printed on stderr.
fn finish(child: Child) -> (ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn wait_killed(child: Child, point: &str) {
    let (status, err) = finish(child);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "crash point {point} was not reached ({status}): {err}");
}

#[derive(Clone, Copy, Debug)]
enum Prep {
    Nothing,
    /// Config A installed with another build of the same layout.
    OtherCode,
    /// Config A installed with another map layout.
    OtherLayout,
    /// Config A installed with this build.
    Current,
}

#[test]
fn killed_at_every_crash_point_the_next_call_converges() {
    let cases: &[(&str, Prep, &[&str])] = &[
        ("install-after-load", Prep::Nothing, &["apply-full"]),
        ("install-after-prefill", Prep::OtherCode, &["apply-full"]),
        ("install-after-swap", Prep::OtherCode, &["apply-full"]),
        ("install-before-run-state", Prep::OtherCode, &["apply-full"]),
        ("install-after-unpin", Prep::OtherLayout, &["apply-full"]),
        ("install-after-prefill", Prep::OtherLayout, &["apply-full"]),
        ("full-after-maps", Prep::Current, &["apply-full"]),
        ("attach-after-create", Prep::Current, &["apply-full"]),
        ("attach-after-tmp-pin", Prep::Current, &["apply-full"]),
        ("attach-between-programs", Prep::Current, &["apply-full"]),
        ("full-after-attach", Prep::Current, &["apply-full"]),
        ("full-before-delete", Prep::Current, &["apply-full"]),
        ("iface-after-map", Prep::Current, &["apply-iface", "veth104i0"]),
        ("attach-after-create", Prep::Current, &["apply-iface", "veth104i0"]),
        ("attach-after-tmp-pin", Prep::Current, &["apply-iface", "veth104i0"]),
        ("attach-between-programs", Prep::Current, &["apply-iface", "veth104i0"]),
        ("install-after-swap", Prep::OtherCode, &["apply-iface", "veth104i0"]),
    ];
    let _host = HostNs::enter();
    add_nics(101..=103);
    for &(point, prep, args) in cases {
        let what = format!("{point} in {} after {prep:?}", args.join(" "));
        let sandbox = Sandbox::new("crash");
        let ms = sandbox.microseg();
        sandbox.write_config(&config_a());
        match prep {
            Prep::Nothing => {}
            Prep::OtherCode => drop(sandbox.microseg_with(&MICROSEG_TEST_CODE_OBJECT).apply_full().unwrap()),
            Prep::OtherLayout => drop(sandbox.microseg_with(&MICROSEG_TEST_LAYOUT_OBJECT).apply_full().unwrap()),
            Prep::Current => drop(ms.apply_full().unwrap()),
        }
        // A guest NIC that appears now (assigned in config B) needs new links.
        add_nics([104]);
        sandbox.write_config(&config_b());
        let child = cli(&sandbox, args, Some(point)).spawn().unwrap();
        wait_killed(child, &what);
        ms.apply_full().unwrap_or_else(|e| panic!("{what}: next call failed: {e:#}"));
        assert_converged(&ms, &config_b(), &what);
        drop(sandbox);
        sh("ip link del veth104i0");
    }
}

/// A pass killed after it wrote the new policy but before it raised the
/// policy generation: the next pass finds the policy maps already equal and
/// still raises it, so verdicts the data plane cached from the old policy
/// retire (they would otherwise hold for established flows indefinitely).
#[test]
fn a_pass_killed_before_raising_the_policy_generation_is_made_good_by_the_next() {
    let _host = HostNs::enter();
    add_nics(101..=104);
    let sandbox = Sandbox::new("gen");
    let ms = sandbox.microseg();
    sandbox.write_config(&config_a());
    ms.apply_full().unwrap();
    let generation = || {
        let fd = sys::obj_get(&ms.policy().map_pin(POLICY_GEN.name)).unwrap();
        POLICY_GEN.open_fd(fd.as_fd()).unwrap().get(&0).unwrap().unwrap()
    };
    let before = generation();
    assert!(before > 0, "a full pass that wrote a policy raised the generation");
    // A new rule and nothing else: the killed pass writes entries and deletes none,
    // so the next finds nothing to write or delete.
    let mut rules = RULES.to_vec();
    rules.push(("bc", Some("b"), "c", true));
    let added = sdn_config(GROUPS, &rules, &[(101, "a"), (102, "b")]);
    sandbox.write_config(&added);
    wait_killed(cli(&sandbox, &["apply-full"], Some("policy-before-generation")).spawn().unwrap(), "policy-before-generation");
    assert_eq!(generation(), before, "killed after the policy maps, before the generation");
    ms.apply_full().unwrap();
    assert!(generation() > before, "the next pass raised the generation although the policy maps were equal");
    assert_converged(&ms, &added, "after the killed pass");
}

#[test]
fn concurrent_apply_iface_processes_race_full_passes() {
    let _host = HostNs::enter();
    let sandbox = Sandbox::new("race");
    let ms = sandbox.microseg();
    let vmids: Vec<u32> = (200..264).collect();
    add_nics(vmids.iter().copied());
    let groups: Vec<(String, u16, Option<&str>)> = (0..8u16).map(|i| (format!("g{i}"), 10 + i, None)).collect();
    let groups_ref: Vec<(&str, u16, Option<&str>)> = groups.iter().map(|(n, m, p)| (n.as_str(), *m, *p)).collect();
    let rules: Vec<(String, String, String)> =
        (0..8).map(|i| (format!("r{i}"), format!("g{i}"), format!("g{}", (i + 1) % 8))).collect();
    let rules_ref: Vec<(&str, Option<&str>, &str, bool)> =
        rules.iter().map(|(id, s, d)| (id.as_str(), Some(s.as_str()), d.as_str(), true)).collect();
    let nics: Vec<(u32, String)> = vmids.iter().map(|&v| (v, format!("g{}", v % 8))).collect();
    let nics_ref: Vec<(u32, &str)> = nics.iter().map(|(v, g)| (*v, g.as_str())).collect();
    let json = sdn_config(&groups_ref, &rules_ref, &nics_ref);
    sandbox.write_config(&json);

    // Nothing installed yet: the first callers also race on the install.
    let start = Instant::now();
    let children: Vec<(u32, Child)> = vmids
        .iter()
        .map(|&v| (v, cli(&sandbox, &["apply-iface", &format!("veth{v}i0")], None).spawn().unwrap()))
        .collect();
    let mut passes = 0;
    while passes < 20 || start.elapsed() < Duration::from_millis(500) {
        ms.apply_full().unwrap();
        passes += 1;
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    for (v, child) in children {
        let (status, err) = finish(child);
        assert!(status.success(), "apply-iface veth{v}i0 failed: {err}");
    }
    let elapsed = start.elapsed();
    println!("64 apply-iface processes and {passes} full passes finished in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(120), "no progress bound: {elapsed:?} (deadlock?)");
    assert_converged(&ms, &json, "after the race");
}

#[test]
fn lost_or_corrupt_state_is_detected_and_repaired() {
    let _host = HostNs::enter();
    add_nics(101..=103);
    let json = config_b();

    type Damage = fn(&Microseg);
    let cases: &[(&str, Damage, bool)] = &[
        ("run directory wiped", |ms| std::fs::remove_dir_all(&ms.settings.run_dir).unwrap(), true),
        ("run state garbage", |ms| std::fs::write(ms.settings.run_dir.join("microseg/state.json"), b"\0garbage").unwrap(), true),
        ("policy map pin deleted", |ms| std::fs::remove_file(ms.policy().map_pin("policy")).unwrap(), true),
        ("group map pin deleted", |ms| std::fs::remove_file(ms.policy().map_pin("tap_to_group")).unwrap(), true),
        ("program pin deleted", |ms| std::fs::remove_file(ms.policy().prog_pin("microseg_enforce")).unwrap(), true),
        ("all pins but links deleted", |ms| {
            std::fs::remove_dir_all(ms.policy().pin_dir.join("maps")).unwrap();
            std::fs::remove_dir_all(ms.policy().pin_dir.join("progs")).unwrap();
        }, true),
        ("link pin deleted", |ms| std::fs::remove_file(ms.policy().link_pin("veth103i0", "microseg_enforce")).unwrap(), false),
        ("policy map of another type", |ms| plant_map(ms, "policy", 12, 8, 10), true),
        ("flow map with another value size", |ms| plant_map(ms, "flows", 44, 8, 1 << 16), true),
        ("group map with another key size", |ms| plant_map(ms, "tap_to_group", 8, 4, 65536), true),
    ];
    for &(what, damage, links_survive) in cases {
        let sandbox = Sandbox::new("corrupt");
        let ms = sandbox.microseg();
        sandbox.write_config(&json);
        ms.apply_full().unwrap();
        let before = snapshot(&ms);
        damage(&ms);
        // The tap_plug path notices too: it falls back to a full pass.
        let out = ms.apply_iface(b"veth103i0").unwrap_or_else(|e| panic!("{what}: {e:#}"));
        if what != "link pin deleted" {
            assert!(matches!(out, microseg::IfaceOutcome::FullPass(_)), "{what}: {out:?}");
        }
        ms.apply_full().unwrap();
        assert_converged(&ms, &json, what);
        if links_survive {
            let ids = |s: &Snapshot| s.links.iter().map(|(k, v)| (k.clone(), v.0)).collect::<BTreeMap<_, _>>();
            assert_eq!(ids(&snapshot(&ms)), ids(&before), "{what}: links were detached during the repair");
        }
    }
}

/// Replaces a pinned map with one of another shape.
fn plant_map(ms: &Microseg, name: &str, key: u32, value: u32, entries: u32) {
    let path = ms.policy().map_pin(name);
    std::fs::remove_file(&path).unwrap();
    let fd = sys::map_create(sys::BPF_MAP_TYPE_HASH, key, value, entries, 1).unwrap();
    sys::obj_pin(fd.as_fd(), &path).unwrap();
}

#[test]
fn capacity_and_verifier_failures_change_nothing() {
    let _host = HostNs::enter();
    add_nics(101..=105);
    let sandbox = Sandbox::new("capacity");
    let ms = sandbox.microseg();
    sandbox.write_config(&config_a());
    ms.apply_full().unwrap();
    let before = snapshot(&ms);

    // The test layout's group map holds 4 NICs; 5 are assigned and present.
    let small = sandbox.microseg_with(&MICROSEG_TEST_LAYOUT_OBJECT);
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a"), (102, "a"), (103, "b"), (104, "b"), (105, "c")]));
    let e = format!("{:#}", small.apply_full().unwrap_err());
    assert!(e.contains("microseg: 5 local assigned NICs, the kernel group map holds 4"), "{e}");
    assert_eq!(snapshot(&ms), before, "NIC overflow changed state");

    // 65 x 65 pairs > the test layout's 4096.
    let mut groups: Vec<(String, u16, Option<&str>)> = vec![("s".into(), 1, None), ("d".into(), 2, None)];
    for i in 0..64u16 {
        groups.push((format!("s{i}"), 100 + i, Some("s")));
        groups.push((format!("d{i}"), 200 + i, Some("d")));
    }
    let g: Vec<(&str, u16, Option<&str>)> = groups.iter().map(|(n, m, p)| (n.as_str(), *m, *p)).collect();
    sandbox.write_config(&sdn_config(&g, &[("big", Some("s"), "d", true)], &[(101, "s")]));
    let e = format!("{:#}", small.apply_full().unwrap_err());
    assert!(e.contains("microseg rule 'big': the policy expands to more (src, dst) pairs than the kernel rule map holds (4096)"), "{e}");
    assert_eq!(snapshot(&ms), before, "rule overflow changed state");

    // A new layout the verifier rejects: verified before anything is torn down.
    sandbox.write_config(&config_a());
    let broken = sandbox.microseg_with(&MICROSEG_TEST_BROKEN_OBJECT);
    let e = format!("{:#}", broken.apply_full().unwrap_err());
    assert!(e.contains("verify new object before replacing the old state: load program"), "{e}");
    assert!(e.contains("verifier log"), "{e}");
    assert_eq!(snapshot(&ms), before, "a rejected object changed state");
    assert_converged(&ms, &config_a(), "after the failures");
}

#[test]
fn a_link_held_open_elsewhere_is_adopted_not_duplicated() {
    let _host = HostNs::enter();
    add_nics(101..=103);
    let sandbox = Sandbox::new("adopt");
    let ms = sandbox.microseg();
    sandbox.write_config(&config_b());
    ms.apply_full().unwrap();
    // Another process keeps the link open, then its pin disappears.
    let pin = ms.policy().link_pin("veth103i0", "microseg_stamp");
    let held = sys::obj_get(&pin).unwrap();
    let id = sys::link_info(held.as_fd()).unwrap().id;
    std::fs::remove_file(&pin).unwrap();
    let report = ms.apply_full().unwrap();
    assert_eq!(report.links_created, 1);
    assert_eq!(snapshot(&ms).links["veth103i0:microseg_stamp"].0, id, "the held link was not adopted");
    drop(held);
    assert_converged(&ms, &config_b(), "after adopting");
}
