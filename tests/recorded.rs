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
