//! Lifecycle against the real kernel: code swap under traffic, layout change,
//! guest restart with a recycled ifindex.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use microseg::testobjects::{MICROSEG_CODE as MICROSEG_TEST_CODE_OBJECT, MICROSEG_LAYOUT as MICROSEG_TEST_LAYOUT_OBJECT};
use microseg::kernel::sys;
use microseg::subsystems::microseg::maps::{NicKey, FLOWS, PEERS};
use microseg::IfaceOutcome;

use common::*;

const CONFIG: &str = r#"{"version": 1, "microseg": {"ids": {
    "a": {"type": "group", "mark": 1},
    "b": {"type": "group", "mark": 2},
    "c": {"type": "group", "mark": 3},
    "a-b": {"type": "rule", "src": "a", "dst": "b", "allow": 1},
    "c-b": {"type": "rule", "src": "c", "dst": "b", "allow": 0},
    "b-a": {"type": "rule", "src": "b", "dst": "a", "allow": 1},
    "n1": {"type": "assignment", "vmid": 101, "iface": 0, "group": "a"},
    "n2": {"type": "assignment", "vmid": 102, "iface": 0, "group": "b"},
    "n3": {"type": "assignment", "vmid": 103, "iface": 0, "group": "c"}
}}}"#;

fn lab3() -> Lab {
    let mut lab = Lab::new();
    for v in 101..=103u32 {
        lab.add_veth(&format!("veth{v}i0"), (v - 100) as u8, true);
    }
    lab
}

fn link_ids(s: &Snapshot) -> BTreeMap<String, u32> {
    s.links.iter().map(|(k, v)| (k.clone(), v.0)).collect()
}

/// Calls `send` every 100 µs (at least 2,000 times) from another thread
/// while a full pass with the code-only variant swaps the programs under it;
/// returns that pass's report and how many times `send` ran.
fn swap_while_sending(sandbox: &Sandbox, mut send: impl FnMut() + Send + 'static) -> (microseg::Report, u64) {
    let sending = Arc::new(AtomicBool::new(true));
    let flag = sending.clone();
    let sender = std::thread::spawn(move || {
        let mut sent = 0u64;
        while flag.load(Ordering::Relaxed) || sent < 2000 {
            send();
            sent += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(200));
    let report = sandbox.microseg_with(&MICROSEG_TEST_CODE_OBJECT).apply_full().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sending.store(false, Ordering::Relaxed);
    (report, sender.join().unwrap())
}

#[test]
fn code_change_swaps_programs_under_traffic_without_loss_or_leak() {
    let sandbox = Sandbox::new("swap");
    let lab = lab3();
    sandbox.write_config(CONFIG);
    sandbox.microseg().apply_full().unwrap();
    let before = snapshot(&sandbox.microseg());

    let to_b = SocketAddrV4::new(lab.endpoint_ip("veth102i0"), PORT);
    let (a, c, b) = (lab.socket("veth101i0"), lab.socket("veth103i0"), lab.socket("veth102i0"));
    b.set_nonblocking(false).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut from_a, mut from_c) = (0u64, 0u64);
        let mut buf = [0u8; 64];
        while let Ok(n) = b.recv(&mut buf) {
            match buf[..n].first() {
                Some(b'a') => from_a += 1,
                Some(b'c') => from_c += 1,
                _ => {}
            }
        }
        (from_a, from_c)
    });
    let (report, sent) = swap_while_sending(&sandbox, move || {
        a.send_to(b"a", to_b).unwrap();
        c.send_to(b"c", to_b).unwrap();
    });
    let (from_a, from_c) = receiver.join().unwrap();

    assert!(report.loaded, "the new object was not loaded");
    let after = snapshot(&sandbox.microseg_with(&MICROSEG_TEST_CODE_OBJECT));
    assert_eq!(link_ids(&after), link_ids(&before), "links were recreated instead of updated");
    for (pin, (_, prog, _)) in &after.links {
        assert_ne!(Some(prog), before.links.get(pin).map(|l| &l.1), "{pin} still runs the old program");
    }
    assert_ne!(after.progs, before.progs);
    println!("swap under traffic: sent {sent} per sender, allowed received {from_a}, denied received {from_c}");
    assert_eq!(from_a, sent, "allowed pair lost packets across the swap");
    assert_eq!(from_c, 0, "denied pair leaked packets across the swap");
}

#[test]
fn layout_change_verifies_rebuilds_and_keeps_enforcing() {
    let sandbox = Sandbox::new("layout");
    let mut lab = lab3();
    sandbox.write_config(CONFIG);
    let ms = sandbox.microseg();
    ms.apply_full().unwrap();
    let before = snapshot(&ms);
    let m0 = lab.measure();

    let other = sandbox.microseg_with(&MICROSEG_TEST_LAYOUT_OBJECT);
    match other.policy().freshness().unwrap() {
        microseg::kernel::state::Freshness::Stale { layout_changed: true, reason } => {
            assert!(reason.contains("pinned map 'tap_to_group' has capacity 65536 (object wants 4)"), "{reason}")
        }
        f => panic!("layout change not detected: {f:?}"),
    }
    let report = other.apply_full().unwrap();
    assert!(report.loaded);
    let rules = sys::obj_get(&other.policy().map_pin("policy")).unwrap();
    assert_eq!(sys::map_info(rules.as_fd()).unwrap().max_entries, 4096);
    let taps = sys::obj_get(&other.policy().map_pin("tap_to_group")).unwrap();
    assert_eq!(sys::map_info(taps.as_fd()).unwrap().max_entries, 4);
    let after = snapshot(&other);
    assert_eq!(link_ids(&after), link_ids(&before), "links were not kept across the rebuild");
    assert_eq!((after.rules.clone(), after.taps.clone()), (before.rules.clone(), before.taps.clone()));
    assert_eq!(lab.measure(), m0, "enforcement changed across the rebuild");

    // And back: again a layout change, again the same policy.
    assert!(ms.apply_full().unwrap().loaded);
    assert_eq!(lab.measure(), m0);
    assert!(!ms.apply_full().unwrap().loaded, "a current state was reloaded");
}

#[test]
fn restarted_guest_with_recycled_ifindex_is_reclaimed() {
    let sandbox = Sandbox::new("recycle");
    let mut lab = lab3();
    sandbox.write_config(CONFIG);
    let ms = sandbox.microseg();
    ms.apply_full().unwrap();
    let m0 = lab.measure();
    let old = microseg::kernel::netdev::ifindex("veth101i0").unwrap();

    // The guest stops; its old ifindex goes to an unrelated netdev; it starts
    // again under the same name and a new ifindex.
    sh("ip link del veth101i0");
    sh(&format!("ip link add squatter index {old} type veth peer name squatterp"));
    lab.endpoints.retain(|e| e.name != "veth101i0");
    lab.add_veth("veth101i0", 1, false);
    sh("ip link set veth101i0 master vmbr0");
    let new = microseg::kernel::netdev::ifindex("veth101i0").unwrap();
    assert_ne!(new, old);

    let out = ms.apply_iface(b"veth101i0").unwrap();
    let IfaceOutcome::Enforced { report, .. } = out else { panic!("{out:?}") };
    assert_eq!(report.links_created, 2, "stale link pins were not reclaimed");
    sh("ip link set veth101i0 up");
    let s = snapshot(&ms);
    for prog in ["microseg_enforce", "microseg_stamp"] {
        assert_eq!(s.links[&format!("veth101i0:{prog}")].2, new);
    }
    assert!(s.links.values().all(|l| l.2 != old), "a link still sits on the recycled ifindex");
    assert_eq!(lab.measure(), m0);

    // The full pass drops the stale mapping of the old ifindex, and the
    // flows and peers that NIC's guest had.
    let of_old = |ms: &Microseg| {
        let flows = sys::obj_get(&ms.policy().map_pin(FLOWS.name)).unwrap();
        let peers = sys::obj_get(&ms.policy().map_pin(PEERS.name)).unwrap();
        let f = FLOWS.open_fd(flows.as_fd()).unwrap().entries().unwrap().keys().filter(|k| k.ifindex == old).count();
        let p = PEERS.open_fd(peers.as_fd()).unwrap().entries().unwrap().keys().filter(|k| k.ifindex == old).count();
        (f, p)
    };
    let (flows, peers) = of_old(&ms);
    assert!(flows > 0, "the measurement opened flows from the old NIC");
    let r = ms.apply_full().unwrap();
    // The group entry and the counters of the old ifindex, its flows and peers.
    assert_eq!(r.map_deletes, 2 + flows + peers);
    assert!(!snapshot(&ms).taps.contains_key(&NicKey { ifindex: old }));
    assert_eq!(of_old(&ms), (0, 0));
}

#[test]
fn ct_max_sizes_the_flow_table_and_a_change_keeps_the_links() {
    let sandbox = Sandbox::new("ctmax");
    let _lab = lab3();
    let ms = sandbox.microseg();
    let with = |ct: Option<u32>| {
        let opt = ct.map(|n| format!(r#""opt": {{"type": "options", "ct-max": {n}}},"#)).unwrap_or_default();
        CONFIG.replacen(r#""microseg": {"ids": {"#, &format!(r#""microseg": {{"ids": {{ {opt}"#), 1)
    };
    let capacity = |ms: &Microseg, map: &str| {
        let fd = sys::obj_get(&ms.policy().map_pin(map)).unwrap();
        sys::map_info(fd.as_fd()).unwrap().max_entries
    };
    sandbox.write_config(&with(None));
    ms.apply_full().unwrap();
    assert_eq!((capacity(&ms, "flows"), capacity(&ms, "peers")), (65536, 16384), "the default");
    let links = link_ids(&snapshot(&ms));
    sandbox.write_config(&with(Some(4096)));
    let r = ms.apply_full().unwrap();
    assert!(r.loaded, "a new ct-max is a layout change");
    assert_eq!((capacity(&ms, "flows"), capacity(&ms, "peers")), (4096, 1024));
    assert_eq!(link_ids(&snapshot(&ms)), links, "links were detached for a new ct-max");
    assert!(!ms.apply_full().unwrap().loaded, "the same ct-max reloads nothing");
    assert!(matches!(ms.apply_iface(b"veth101i0").unwrap(), IfaceOutcome::Enforced { .. }));
}

/// a may open toward b, nothing may open toward a: what reaches a are the
/// replies its flows let in, through the flow table.
const ONE_WAY: &str = r#"{"version": 1, "microseg": {"ids": {
    "a": {"type": "group", "mark": 1},
    "b": {"type": "group", "mark": 2},
    "c": {"type": "group", "mark": 3},
    "a-b": {"type": "rule", "src": "a", "dst": "b", "proto": "udp", "allow": 1},
    "n1": {"type": "assignment", "vmid": 101, "iface": 0, "group": "a"},
    "n2": {"type": "assignment", "vmid": 102, "iface": 0, "group": "b"},
    "n3": {"type": "assignment", "vmid": 103, "iface": 0, "group": "c"}
}}}"#;

#[test]
fn a_code_swap_keeps_established_flows() {
    use std::net::UdpSocket;
    let sandbox = Sandbox::new("swapflows");
    let lab = lab3();
    sandbox.write_config(ONE_WAY);
    sandbox.microseg().apply_full().unwrap();
    let (ip_a, ip_b) = (lab.endpoint_ip("veth101i0"), lab.endpoint_ip("veth102i0"));
    // b echoes; a asks from one socket (one flow); c writes to that socket unasked.
    let b = lab.socket("veth102i0");
    b.set_nonblocking(false).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let a = in_netns(lab.guest_ns("veth101i0"), || UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap());
    a.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let a_addr = a.local_addr().unwrap();
    let c = lab.socket("veth103i0");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = b.recv_from(&mut buf) {
            b.send_to(&buf[..n], from).unwrap();
        }
    });
    let a_rx = a.try_clone().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut replies, mut unasked) = (0u64, 0u64);
        let mut buf = [0u8; 64];
        while let Ok(n) = a_rx.recv(&mut buf) {
            match buf[..n].first() {
                Some(b'q') => replies += 1,
                Some(b'c') => unasked += 1,
                _ => {}
            }
        }
        (replies, unasked)
    });
    let (report, sent) = swap_while_sending(&sandbox, move || {
        a.send_to(b"q", SocketAddrV4::new(ip_b, PORT)).unwrap();
        c.send_to(b"c", a_addr).unwrap();
    });
    let (replies, unasked) = receiver.join().unwrap();
    echo.join().unwrap();
    assert!(report.loaded, "the new object was not loaded");
    println!("swap with flows: {sent} requests, {replies} replies, {unasked} unasked datagrams delivered");
    assert_eq!(replies, sent, "replies of an established flow were lost across the swap");
    assert_eq!(unasked, 0, "datagrams nobody asked for reached a");
}
