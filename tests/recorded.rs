//! The `apply_iface` fast path (SPEC section 7): while the running config is
//! the one the last successful full pass applied, `apply_iface` answers from
//! what that pass recorded in the kernel without reading the config; after
//! any change it reads the config, and its answers are always those the
//! config on disk gives. The test hook counts the config reads.

mod common;

use std::sync::atomic::Ordering;

use microseg::kernel::testhook::CONFIG_READS;
use microseg::subsystems::microseg::maps::{NicKey, NicValue, NIC_F_AUDIT, TAP_TO_GROUP};
use microseg::testobjects::MICROSEG_CODE;
use microseg::IfaceOutcome;

use common::*;

/// The read counter is one for the process: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const GROUPS: &[(&str, u16, Option<&str>)] = &[("a", 1, None), ("b", 2, None)];
const RULES: &[(&str, Option<&str>, &str, bool)] = &[("ab", Some("a"), "b", true)];

/// `apply_iface(name)` and how many times it read the config.
fn plug(ms: &Microseg, name: &str) -> (IfaceOutcome, usize) {
    let before = CONFIG_READS.load(Ordering::Relaxed);
    let out = ms.apply_iface(name.as_bytes()).unwrap();
    (out, CONFIG_READS.load(Ordering::Relaxed) - before)
}

fn mark_of(out: &IfaceOutcome) -> Option<u16> {
    match out {
        IfaceOutcome::Enforced { mark, .. } => Some(*mark),
        _ => None,
    }
}

fn group_entry(ms: &Microseg, name: &str) -> Option<NicValue> {
    let ifindex = microseg::kernel::netdev::ifindex(name).unwrap();
    let fd = microseg::kernel::sys::obj_get(&ms.policy().map_pin(TAP_TO_GROUP.name)).unwrap();
    TAP_TO_GROUP.open_fd(std::os::fd::AsFd::as_fd(&fd)).unwrap().get(&NicKey { ifindex }).unwrap()
}

#[test]
fn apply_iface_answers_from_the_record_only_while_the_config_is_the_applied_one() {
    let _serial = serial();
    let sandbox = Sandbox::new("recorded");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    for (name, host) in [("veth101i0", 1), ("veth102i0", 2), ("veth105i0", 5)] {
        lab.add_veth(name, host, true);
    }
    let config_a = sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b")]);
    sandbox.write_config(&config_a);
    ms.apply_full().unwrap();
    let m0 = lab.measure();

    // Unchanged config: no read, the answers of the config.
    let (out, reads) = plug(&ms, "veth101i0");
    assert_eq!((mark_of(&out), reads), (Some(1), 0), "{out:?}");
    let (out, reads) = plug(&ms, "veth105i0");
    assert_eq!((out, reads), (IfaceOutcome::Unassigned, 0));
    let (out, reads) = plug(&ms, "eth0");
    assert_eq!((out, reads), (IfaceOutcome::NotGuestNic, 0));
    // A guest restarted: a new netdev, enforced from the record.
    sh("ip link del veth102i0");
    lab.endpoints.retain(|e| e.name != "veth102i0");
    lab.add_veth("veth102i0", 2, true);
    let (out, reads) = plug(&ms, "veth102i0");
    assert_eq!((mark_of(&out), reads), (Some(2), 0));
    assert_eq!(group_entry(&ms, "veth102i0"), Some(NicValue { mark: 2, flags: 0 }));
    assert_eq!(lab.measure(), m0, "the re-created NIC is enforced as before");

    // Changed on disk, no full pass yet: the config is read, and followed.
    let config_b = sdn_config(GROUPS, RULES, &[(101, "b"), (102, "b"), (105, "a")]);
    sandbox.write_config(&config_b);
    let (out, reads) = plug(&ms, "veth101i0");
    assert_eq!((mark_of(&out), reads), (Some(2), 1), "the config on disk decides");
    let (out, reads) = plug(&ms, "veth105i0");
    assert_eq!((mark_of(&out), reads), (Some(1), 1));
    // Applied: the record again.
    ms.apply_full().unwrap();
    let (out, reads) = plug(&ms, "veth105i0");
    assert_eq!((mark_of(&out), reads), (Some(1), 0));

    // The record carries the audit flag.
    let audit = config_b.replace(r#""mark": "2""#, r#""mark": "2", "audit": 1"#);
    assert_ne!(audit, config_b);
    sandbox.write_config(&audit);
    ms.apply_full().unwrap();
    sh("ip link del veth101i0");
    lab.endpoints.retain(|e| e.name != "veth101i0");
    lab.add_veth("veth101i0", 1, true);
    let (out, reads) = plug(&ms, "veth101i0");
    assert_eq!((mark_of(&out), reads), (Some(2), 0));
    assert_eq!(group_entry(&ms, "veth101i0"), Some(NicValue { mark: 2, flags: NIC_F_AUDIT }));

    // A failed full pass forgets the record: the config is read (and fails).
    sandbox.write_config("{ broken");
    assert!(ms.apply_full().is_err());
    sandbox.write_config(&audit);
    let (_, reads) = plug(&ms, "veth101i0");
    assert_eq!(reads, 1, "no record after a failed pass");
    ms.apply_full().unwrap();
    assert_eq!(plug(&ms, "veth101i0").1, 0);

    // Programs of another object: not current, so the slow path (a full pass).
    sandbox.microseg_with(&MICROSEG_CODE).apply_full().unwrap();
    let (out, reads) = plug(&ms, "veth101i0");
    assert!(matches!(out, IfaceOutcome::FullPass(_)), "{out:?}");
    assert!(reads >= 1);
    assert_eq!(plug(&ms, "veth101i0").1, 0, "current again after the full pass");

    // Nothing configured: unassigned, without reading a large config.
    sandbox.write_config(r#"{"version": 1, "zones": {"ids": {}}}"#);
    ms.apply_full().unwrap();
    let (out, reads) = plug(&ms, "veth101i0");
    assert_eq!((out, reads), (IfaceOutcome::Unassigned, 0));
    // clear removes the record with everything else.
    ms.clear().unwrap();
    assert!(!sandbox.settings.run_dir.join("applied-config").exists());
    assert_eq!(sandbox.files(), Vec::<String>::new());
}

/// `apply_full` and how many times it read the config.
fn full(ms: &Microseg) -> (microseg::Report, usize) {
    let before = CONFIG_READS.load(Ordering::Relaxed);
    let report = ms.apply_full().unwrap();
    (report, CONFIG_READS.load(Ordering::Relaxed) - before)
}

#[test]
fn a_full_pass_over_the_applied_config_does_not_read_it_and_still_follows_the_node() {
    let _serial = serial();
    use microseg::subsystems::microseg::resolve;
    let sandbox = Sandbox::new("recorded-full");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    lab.add_veth("veth101i0", 1, true);
    lab.add_veth("veth102i0", 2, true);
    // Both underlay subsystems name ul0, which does not exist yet.
    let underlay = r#""g": {"type": "vtep-guard", "ifaces": "ul0"}, "s": {"type": "srv6", "ifaces": "ul0", "peers": "fc00::2"},"#;
    let json = sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b"), (103, "a")])
        .replace(r#""microseg": {"ids": { "#, &format!(r#""microseg": {{"ids": {{ {underlay} "#));
    assert!(json.contains("vtep-guard"), "{json}");
    sandbox.write_config(&json);
    let (r, reads) = full(&ms);
    assert_eq!((reads, r.nics, r.guarded, r.srv6), (1, 2, 0, 0));
    let snap = snapshot(&ms);

    // Nothing changed: the config is not read, the kernel not touched.
    let (r, reads) = full(&ms);
    assert_eq!(reads, 0, "the applied config was read again");
    assert_eq!(r, microseg::Report { nics: 2, ..Default::default() });
    assert_eq!(snapshot(&ms), snap);

    // The node changed, not the config: a guest NIC appeared without
    // apply_iface, another vanished, the underlay interface appeared.
    lab.add_veth("veth103i0", 3, true);
    sh("ip link del veth102i0");
    lab.endpoints.retain(|e| e.name != "veth102i0");
    sh("ip link add ul0 type veth peer name ul0p");
    let (r, reads) = full(&ms);
    assert_eq!(reads, 0);
    assert_eq!((r.nics, r.guarded, r.srv6, r.links_created), (2, 1, 1, 2 + 1 + 2), "{r:?}");
    assert!(r.map_deletes >= 2 && r.links_detached == 2, "veth102i0's entries and links go: {r:?}");
    assert_eq!(group_entry(&ms, "veth103i0"), Some(NicValue { mark: 1, flags: 0 }));
    let cfg = microseg::config::parse(json.as_bytes()).unwrap();
    let pairs = resolve::resolve(&cfg, 1 << 20).unwrap().pairs();
    let want = predict(&lab.names(), &nic_groups(&cfg), &pairs);
    assert_eq!(lab.measure(), want, "the new NIC is enforced");

    // Exactly what a pass that reads the config makes of this node.
    let recorded = snapshot(&ms);
    sandbox.write_config(&json); // same bytes, a new signature
    let (r, reads) = full(&ms);
    assert_eq!(reads, 1);
    assert_eq!((r.map_writes, r.map_deletes, r.links_created, r.links_detached, r.loaded), (0, 0, 0, 0, false), "{r:?}");
    assert_eq!(snapshot(&ms), recorded);

    // A record another library version wrote (an upgrade: it may have
    // ignored sections this one knows) is not trusted: the config is read.
    let path = sandbox.settings.run_dir.join("applied-record");
    let record = std::fs::read_to_string(&path).unwrap();
    let version = format!(r#""_library":"{}""#, env!("CARGO_PKG_VERSION"));
    assert!(record.contains(&version), "{record}");
    std::fs::write(&path, record.replace(&version, r#""_library":"0.0.1""#)).unwrap();
    assert_eq!(full(&ms).1, 1, "a record of another version was trusted");
    assert_eq!(full(&ms).1, 0, "this version's record again");

    // A changed config is read and followed.
    let moved = json.replace(r#""vmid": 103, "iface": 0, "group": "a""#, r#""vmid": 103, "iface": 0, "group": "b""#);
    assert_ne!(moved, json);
    sandbox.write_config(&moved);
    let (_, reads) = full(&ms);
    assert_eq!(reads, 1);
    assert_eq!(group_entry(&ms, "veth103i0"), Some(NicValue { mark: 2, flags: 0 }));
}
