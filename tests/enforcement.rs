//! End to end against the real kernel: a simulated node (bridge, veth guests
//! in their own namespaces, one real tap driven through its fd), real packets,
//! and the measured matrix compared with what resolution predicts.

mod common;

use std::os::fd::AsFd;

use microseg::config;
use microseg::subsystems::microseg::resolve;
use microseg::kernel::sys;
use microseg::subsystems::microseg::maps::{NicKey, NicValue};
use microseg::IfaceOutcome;

use common::*;

const GROUPS: &[(&str, u16, Option<&str>)] = &[
    ("app", 10, None),
    ("web", 11, Some("app")),
    ("db", 20, None),
    ("dbprimary", 21, Some("db")),
    ("mon", 30, None),
];

const RULES_A: &[(&str, Option<&str>, &str, bool)] = &[
    ("r-mon-app", Some("mon"), "app", true),
    ("r-web-db", Some("web"), "db", false),
    ("r-app-dbprimary", Some("app"), "dbprimary", true),
    ("r-host-web", None, "web", true),
    ("r-app-mon", Some("app"), "mon", true),
    ("r-db-app", Some("db"), "app", false),
    ("r-web-web", Some("web"), "web", true),
];

const NICS_A: &[(u32, &str)] = &[(101, "web"), (102, "app"), (103, "db"), (104, "dbprimary"), (105, "mon"), (106, "web")];

fn expected(cfg_json: &str, lab: &Lab) -> Matrix {
    let cfg = config::parse(cfg_json.as_bytes()).unwrap();
    let pairs = resolve::resolve(&cfg, 1 << 20).unwrap().pairs();
    predict(&lab.names(), &nic_groups(&cfg), &pairs)
}

fn assert_matrix(lab: &mut Lab, cfg_json: &str, what: &str) -> Matrix {
    let want = expected(cfg_json, lab);
    let got = lab.measure();
    let names = lab.names();
    assert_eq!(
        got,
        want,
        "{what}: measured matrix differs from the policy\nmeasured:\n{}\nexpected:\n{}",
        render(&got, &names),
        render(&want, &names)
    );
    got
}

/// A node with five veth guests, one tap guest and one unassigned guest.
fn build_lab() -> Lab {
    let mut lab = Lab::new();
    for vmid in 101..=105u32 {
        lab.add_veth(&format!("veth{vmid}i0"), (vmid - 100) as u8, true);
    }
    lab.add_tap("tap106i0", 6, true);
    lab.add_veth("veth107i0", 7, true);
    lab
}

#[test]
fn node_matrix_follows_policy_through_apply_iface_and_clear() {
    let sandbox = Sandbox::new("e2e");
    let ms = sandbox.microseg();
    let mut lab = build_lab();

    // Before anything: full connectivity.
    let open = lab.measure();
    assert!(open.values().all(|&ok| ok), "lab is not fully connected before enforcement:\n{}", render(&open, &lab.names()));

    let cfg_a = sdn_config(GROUPS, RULES_A, NICS_A);
    sandbox.write_config(&cfg_a);
    let report = ms.apply_full().unwrap();
    assert!(report.loaded);
    assert_eq!(report.nics, 6);
    // Six assigned NICs, and the unassigned veth107i0 with pass-through
    // programs (its traffic untouched by the policy; SPEC section 4).
    assert_eq!(report.links_created, 14);
    let m_a = assert_matrix(&mut lab, &cfg_a, "config A");
    let m = m_a.clone();
    // The matrix exercises every kind of verdict.
    let at = |s: &str, d: &str| m[&(s.to_string(), d.to_string())];
    assert!(at("veth105i0", "veth101i0"), "mon -> web inherits mon -> app");
    assert!(!at("veth101i0", "veth103i0"), "web -> db denied");
    assert!(at("veth101i0", "veth104i0"), "web -> dbprimary allowed by app -> dbprimary");
    assert!(at("host", "tap106i0"), "unstamped host -> web allowed");
    assert!(!at("host", "veth102i0"), "unstamped host -> app: no rule");
    assert!(at("tap106i0", "veth101i0"), "tap guest is stamped as web");
    assert!(!at("veth103i0", "tap106i0"), "db -> app denied covers the tap");
    assert!(at("veth103i0", "veth107i0"), "unassigned guest is not enforced");
    assert!(!at("veth107i0", "veth102i0"), "unassigned guest is unstamped: no (0, app) rule");
    assert!(at("veth107i0", "veth101i0"), "unassigned guest is unstamped: (0, web) allowed");

    // Unchanged config: nothing loaded, no map entry written, no link touched.
    let before = snapshot(&ms);
    let again = ms.apply_full().unwrap();
    assert!(!again.loaded);
    assert_eq!((again.map_writes, again.map_deletes, again.links_created, again.links_updated, again.links_detached), (0, 0, 0, 0, 0));
    assert_eq!(snapshot(&ms), before, "a no-op re-apply changed kernel state");

    // Config B: a rule removed, a rule flipped, a guest moved to another group.
    let rules_b: Vec<_> = RULES_A
        .iter()
        .filter(|r| r.0 != "r-mon-app")
        .map(|r| match r.0 {
            "r-db-app" => ("r-db-app", Some("db"), "app", true),
            "r-app-dbprimary" => ("r-app-dbprimary", Some("app"), "dbprimary", false),
            _ => *r,
        })
        .collect();
    let nics_b: Vec<_> = NICS_A.iter().map(|&(v, g)| if v == 105 { (v, "db") } else { (v, g) }).collect();
    let cfg_b = sdn_config(GROUPS, &rules_b, &nics_b);
    sandbox.write_config(&cfg_b);
    let report = ms.apply_full().unwrap();
    assert!(!report.loaded);
    assert!(report.map_writes > 0 && report.map_deletes > 0);
    let m = assert_matrix(&mut lab, &cfg_b, "config B");
    assert!(m[&("veth103i0".into(), "veth102i0".into())], "db -> app allowed now");
    assert!(m[&("veth105i0".into(), "veth101i0".into())], "105 moved to db: db -> app covers web");
    assert!(!m[&("veth101i0".into(), "veth104i0".into())], "app -> dbprimary flipped to deny");
    assert!(m_a[&("veth101i0".into(), "veth104i0".into())]);

    // A new guest plugged as tap_plug does: create, enslave, apply_iface, up.
    let nics_c: Vec<_> = nics_b.iter().copied().chain([(108, "mon")]).collect();
    let cfg_c = sdn_config(GROUPS, &rules_b, &nics_c);
    sandbox.write_config(&cfg_c);
    lab.add_veth("veth108i0", 8, false);
    sh("ip link set veth108i0 master vmbr0");
    let before = snapshot(&ms);
    let out = ms.apply_iface(b"veth108i0").unwrap();
    let IfaceOutcome::Enforced { mark: 30, report } = out else { panic!("unexpected outcome {out:?}") };
    // Two writes: the NIC's counters (created zeroed) and its group entry.
    assert_eq!((report.map_writes, report.links_created), (2, 2));
    sh("ip link set veth108i0 up");
    let after = snapshot(&ms);
    assert_eq!(after.rules, before.rules, "apply_iface touched the rule map");
    for (pin, link) in &before.links {
        assert_eq!(after.links.get(pin), Some(link), "apply_iface touched link {pin}");
    }
    assert_eq!(after.links.len(), before.links.len() + 2);
    let new_ifindex = microseg::kernel::netdev::ifindex("veth108i0").unwrap();
    let mut taps = before.taps.clone();
    taps.insert(NicKey { ifindex: new_ifindex }, NicValue { mark: 30, flags: 0 });
    assert_eq!(after.taps, taps, "apply_iface wrote other group mappings");
    assert_matrix(&mut lab, &cfg_c, "after apply_iface");

    // clear: every link detached, nothing pinned, no run state, all open.
    let held: Vec<_> = ms.policy().link_pins().unwrap().iter().map(|l| sys::obj_get(&l.path).unwrap()).collect();
    ms.clear().unwrap();
    for fd in &held {
        assert_eq!(sys::link_info(fd.as_fd()).unwrap().ifindex, 0, "a link is still attached after clear");
    }
    drop(held);
    assert!(!sandbox.settings.bpf_root.exists(), "pins left: {:?}", sandbox.files());
    assert!(!sandbox.settings.run_dir.exists(), "run state left: {:?}", sandbox.files());
    let open = lab.measure();
    assert!(open.values().all(|&ok| ok), "not fully open after clear:\n{}", render(&open, &lab.names()));
    ms.clear().unwrap();
}

#[test]
fn no_microseg_config_attaches_nothing() {
    let sandbox = Sandbox::new("empty");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    lab.add_veth("veth101i0", 1, true);
    sandbox.write_config(r#"{"version": 1, "zones": {"ids": {}}}"#);
    assert_eq!(ms.apply_full().unwrap(), microseg::Report::default());
    assert!(!sandbox.settings.bpf_root.exists());
    // Remove a config that had enforced something: all state goes.
    sandbox.write_config(&sdn_config(&[("g", 1, None)], &[], &[(101, "g")]));
    ms.apply_full().unwrap();
    assert_eq!(ms.policy().link_pins().unwrap().len(), 2);
    // A missing file is not a deconfiguration (SPEC section 2, Absence): the
    // call fails naming the path and enforcement stays exactly as it is.
    let before = snapshot(&ms);
    std::fs::remove_file(&sandbox.settings.running_config).unwrap();
    let e = format!("{:#}", ms.apply_full().unwrap_err());
    let path = sandbox.settings.running_config.display().to_string();
    assert!(e.contains(&format!("running config {path} does not exist")), "{e}");
    assert_eq!(snapshot(&ms), before, "a missing running config changed the kernel state");
    let e = format!("{:#}", ms.apply_iface(b"veth101i0").unwrap_err());
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(snapshot(&ms), before);
    // An existing config without a microseg key is: all state goes.
    sandbox.write_config(r#"{"version": 2, "zones": {"ids": {}}}"#);
    assert_eq!(ms.apply_full().unwrap(), microseg::Report::default());
    // Only the signature of the applied config and its (empty) record stay,
    // so that apply_iface answers "unassigned" and apply_full does nothing
    // without reading a large SDN config.
    assert_eq!(sandbox.files(), ["run/applied-config", "run/applied-record"]);
    // And with nothing installed, a missing file is a no-op.
    std::fs::remove_file(&sandbox.settings.running_config).unwrap();
    assert_eq!(ms.apply_full().unwrap(), microseg::Report::default());
    assert_eq!(ms.apply_iface(b"veth101i0").unwrap(), IfaceOutcome::Unassigned);
    ms.clear().unwrap();
    assert!(sandbox.files().is_empty(), "left: {:?}", sandbox.files());
}

#[test]
fn invalid_configs_name_the_section_and_change_nothing() {
    let sandbox = Sandbox::new("invalid");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    lab.add_veth("veth101i0", 1, true);
    lab.add_veth("veth102i0", 2, true);
    let good = sdn_config(GROUPS, RULES_A, &[(101, "web"), (102, "db")]);
    sandbox.write_config(&good);
    ms.apply_full().unwrap();
    let before = snapshot(&ms);
    assert!(!before.links.is_empty() && !before.rules.is_empty() && !before.taps.is_empty());

    let many_groups: Vec<(String, u16)> = (0..2100u16).map(|i| (format!("g{i}"), 1000 + i)).collect();
    let mut overflow_groups: Vec<(&str, u16, Option<&str>)> = vec![("src", 1, None), ("dst", 2, None)];
    for (i, (name, mark)) in many_groups.iter().enumerate() {
        overflow_groups.push((name, *mark, Some(if i % 2 == 0 { "src" } else { "dst" })));
    }
    let cases: Vec<(String, &str)> = vec![
        (sdn_config(&[("bad", 0, None)], &[], &[]), "microseg group 'bad': mark 0 is outside 1..=65535"),
        (sdn_config(&[("big", 0, None)], &[], &[]).replace(r#""mark": "0""#, r#""mark": 70000"#), "microseg group 'big': mark 70000"),
        (sdn_config(&[("a", 5, None), ("b", 5, None)], &[], &[]), "microseg group 'b': mark 5 is already used by group 'a'"),
        (sdn_config(&[("a", 5, Some("ghost"))], &[], &[]), "microseg group 'a': parent names unknown group 'ghost'"),
        (sdn_config(&[("a", 5, None)], &[("r", Some("ghost"), "a", true)], &[]), "microseg rule 'r': src names unknown group 'ghost'"),
        (sdn_config(&[("a", 5, None)], &[("r", None, "ghost", true)], &[]), "microseg rule 'r': dst names unknown group 'ghost'"),
        (sdn_config(&[("a", 5, None)], &[], &[(101, "ghost")]), "microseg assignment 'a101': group names unknown group 'ghost'"),
        (sdn_config(&[("a", 5, Some("b")), ("b", 6, Some("a"))], &[], &[]), "microseg group 'a': parent chain forms a cycle"),
        (
            sdn_config(&[("a", 5, None)], &[], &[(101, "a")])
                .replace(r#""microseg": {"ids": {"#, r#""microseg": {"ids": {"dup": {"type": "assignment", "vmid": "101", "iface": "0", "group": "a"},"#),
            "microseg assignment 'dup': vmid 101 iface 0 is already assigned by 'a101'",
        ),
        (
            {
                // 1051 x 1051 pairs: more than the 2^20 the rule map holds.
                sdn_config(&overflow_groups, &[("huge", Some("src"), "dst", true)], &[])
            },
            "microseg rule 'huge': the policy expands to more (src, dst) pairs than the kernel rule map holds (1048576)",
        ),
        ("{ this is not json".to_string(), "invalid JSON"),
    ];
    for (json, want) in cases {
        sandbox.write_config(&json);
        let err = format!("{:#}", ms.apply_full().unwrap_err());
        assert!(err.contains(want), "error {err:?} does not contain {want:?}");
        if !want.contains("expands") {
            // The tap_plug path validates too (it skips only the resolution).
            let iface_err = format!("{:#}", ms.apply_iface(b"veth101i0").map(|_| ()).unwrap_err());
            assert!(iface_err.contains(want), "apply_iface error {iface_err:?} does not contain {want:?}");
        }
        assert_eq!(snapshot(&ms), before, "kernel state changed after invalid config ({want})");
    }
}
