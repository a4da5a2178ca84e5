//! Observability on a simulated node with real packets (SPEC section 7):
//! `status()` and its warnings, exact per-NIC counters and rule hits, drop
//! events in `pve-microseg monitor` matching a measured matrix, audit mode,
//! and the rate limit of events under a flood.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use microseg::kernel::sys;
use microseg::report::{NicCounts, Status};

use common::*;

/// a (1), b (2, audit when `audit_b`), c (3). a may send UDP to b's 5555;
/// c is denied toward b by a rule; everything else has no rule.
fn config(audit_b: bool, extra: &str) -> String {
    format!(
        r#"{{"version": 1, {extra} "microseg": {{"ids": {{
        "a": {{"type": "group", "mark": 1}},
        "b": {{"type": "group", "mark": 2, "audit": {}}},
        "c": {{"type": "group", "mark": 3}},
        "ab-udp": {{"type": "rule", "src": "a", "dst": "b", "proto": "udp", "dport": "5555", "allow": 1}},
        "cb-deny": {{"type": "rule", "src": "c", "dst": "b", "allow": 0}},
        "a101": {{"type": "assignment", "vmid": 101, "iface": 0, "group": "a"}},
        "a102": {{"type": "assignment", "vmid": 102, "iface": 0, "group": "b"}},
        "a103": {{"type": "assignment", "vmid": 103, "iface": 0, "group": "c"}},
        "a104": {{"type": "assignment", "vmid": 104, "iface": 0, "group": "b"}}
        }}}}}}"#,
        u8::from(audit_b)
    )
}

/// No IPv6 in any namespace of the lab (no router solicitations, DAD or MLD
/// reports), with static neighbours (the lab's): the only packets are the
/// test's own, so counters can be compared exactly.
fn quiet(lab: &Lab) {
    let mut names = vec![lab.host.ns.name.clone()];
    for e in &lab.endpoints {
        if let Kind::Veth { ns, .. } = &e.kind {
            names.push(ns.name.clone());
        }
    }
    for ns in names {
        sh(&format!(
            "ip netns exec {ns} sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
        ));
    }
    // Reports already scheduled (MLD, on the way down) go out within this.
    std::thread::sleep(Duration::from_millis(1500));
}

fn node(guests: &[(&str, u8)]) -> Lab {
    let mut lab = Lab::new();
    for (name, host) in guests {
        lab.add_veth(name, *host, true);
    }
    quiet(&lab);
    lab
}

fn nic<'a>(s: &'a Status, name: &str) -> &'a microseg::report::NicStatus {
    s.nics.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("{name} not in status: {s:?}"))
}

fn counters(ms: &Microseg, name: &str) -> NicCounts {
    nic(&ms.status().unwrap(), name).counters
}

fn hits(ms: &Microseg, rule: &str) -> u64 {
    ms.status().unwrap().rules[rule].hits
}

fn delta(after: NicCounts, before: NicCounts) -> [u64; 5] {
    [
        after.allowed - before.allowed,
        after.replied - before.replied,
        after.dropped - before.dropped,
        after.audited - before.audited,
        after.blocked - before.blocked,
    ]
}

fn guest_socket(lab: &Lab, guest: &str) -> UdpSocket {
    in_netns(lab.guest_ns(guest), || UdpSocket::bind("0.0.0.0:0").unwrap())
}

fn send_n(sock: &UdpSocket, to: Ipv4Addr, port: u16, n: u64) {
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), SocketAddrV4::new(to, port)).unwrap();
    }
    // The packets cross the bridge in softirq context; let them all land.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn counters_and_rule_hits_are_exact() {
    let sandbox = Sandbox::new("counters");
    let ms = sandbox.microseg();
    let lab = node(&[("veth101i0", 1), ("veth102i0", 2), ("veth103i0", 3)]);
    sandbox.write_config(&config(false, ""));
    ms.apply_full().unwrap();
    let (a, b, c) = ("veth101i0", "veth102i0", "veth103i0");
    let (ip_a, ip_b, ip_c) = (lab.endpoint_ip(a), lab.endpoint_ip(b), lab.endpoint_ip(c));
    let sock_a = lab.socket(a);
    let sock_b = lab.socket(b);
    let n = 500;

    // a -> b udp/5555: delivered by rule ab-udp.
    let (before_b, before_hits) = (counters(&ms, b), hits(&ms, "ab-udp"));
    send_n(&sock_a, ip_b, PORT, n);
    assert_eq!(delta(counters(&ms, b), before_b), [n, 0, 0, 0, 0], "b: allowed by rule");
    assert_eq!(hits(&ms, "ab-udp") - before_hits, n, "ab-udp hits");

    // b answers from 5555 to a's 5555: a's own flow, no rule.
    let before_a = counters(&ms, a);
    send_n(&sock_b, ip_a, PORT, n);
    assert_eq!(delta(counters(&ms, a), before_a), [0, n, 0, 0, 0], "a: delivered as replies");
    assert_eq!(hits(&ms, "ab-udp") - before_hits, n, "replies hit no rule");

    // c -> b: dropped by rule cb-deny.
    let (before_b, before_deny) = (counters(&ms, b), hits(&ms, "cb-deny"));
    send_n(&guest_socket(&lab, c), ip_b, PORT, n);
    assert_eq!(delta(counters(&ms, b), before_b), [0, 0, n, 0, 0], "b: dropped");
    assert_eq!(hits(&ms, "cb-deny") - before_deny, n, "cb-deny hits");

    // b -> c from a fresh port: no rule, no flow of c's: default deny.
    let before_c = counters(&ms, c);
    let rules_before: BTreeMap<String, u64> = ms.status().unwrap().rules.iter().map(|(k, v)| (k.clone(), v.hits)).collect();
    send_n(&guest_socket(&lab, b), ip_c, PORT, n);
    assert_eq!(delta(counters(&ms, c), before_c), [0, 0, n, 0, 0], "c: dropped by default");
    let rules_after: BTreeMap<String, u64> = ms.status().unwrap().rules.iter().map(|(k, v)| (k.clone(), v.hits)).collect();
    assert_eq!(rules_after, rules_before, "a default deny hits no rule");

    // c sends VXLAN to the node's own address: refused as it leaves c.
    let before_c = counters(&ms, c);
    send_n(&guest_socket(&lab, c), lab.endpoint_ip("host"), 4789, n);
    assert_eq!(delta(counters(&ms, c), before_c), [0, 0, 0, 0, n], "c: tunnel packets blocked");

    // The hits survive a change of other rules (stable rule slots).
    let extra = config(false, "").replace(
        r#""a101""#,
        r#""ca": {"type": "rule", "src": "c", "dst": "a", "allow": 1}, "a101""#,
    );
    sandbox.write_config(&extra);
    ms.apply_full().unwrap();
    let s = ms.status().unwrap();
    assert_eq!(s.rules["ab-udp"].hits, n);
    assert_eq!(s.rules["cb-deny"].hits, n);
    assert_eq!((s.rules["ca"].hits, s.rules["ca"].loaded), (0, 1));
    println!("counters: {n} packets per column, exact; rules: {:?}", rules_after);
}

/// Makes a VXLAN device as PVE names them for vnet `vnet`.
fn vxlan(vnet: &str, id: u32, gbp: bool) {
    sh(&format!(
        "ip link add vxlan_{vnet} type vxlan id {id} dstport 4789 nolearning {}",
        if gbp { "gbp" } else { "" }
    ));
}

#[test]
fn status_shows_what_is_enforced_and_warns_about_what_is_not() {
    let sandbox = Sandbox::new("status");
    let ms = sandbox.microseg();
    let _lab = node(&[("veth101i0", 1), ("veth102i0", 2), ("veth105i0", 5)]);
    sh("ip link add ul0 type veth peer name ul0p && ip link set ul0 up");
    vxlan("vx1", 11, false);
    vxlan("vx2", 12, true);
    let extra = r#""zones": {"ids": {"zx": {"type": "vxlan", "peers": "192.0.2.7"}}},
        "vnets": {"ids": {"vx1": {"type": "vnet", "zone": "zx"}, "vx2": {"type": "vnet", "zone": "zx"}}},"#;
    let with_guard = config(false, extra).replace(
        r#""a101""#,
        r#""guard": {"type": "vtep-guard", "ifaces": "ul0,nosuch0"}, "a101""#,
    );
    sandbox.write_config(&with_guard);
    ms.apply_full().unwrap();

    let s = ms.status().unwrap();
    let a = nic(&s, "veth101i0");
    assert_eq!(a.ifindex, microseg::kernel::netdev::ifindex("veth101i0").unwrap());
    assert_eq!((a.group.as_deref(), a.mark, a.audit, a.enforced, a.attached), (Some("a"), 1, 0, 1, 1));
    let b = nic(&s, "veth102i0");
    assert_eq!((b.group.as_deref(), b.mark, b.enforced), (Some("b"), 2, 1));
    let free = nic(&s, "veth105i0");
    assert_eq!((free.group.as_deref(), free.mark, free.enforced, free.attached), (None, 0, 0, 1), "pass-through");
    assert_eq!(s.nics.len(), 3);
    assert_eq!(s.rules["ab-udp"].loaded, 1);
    assert_eq!(s.rules["cb-deny"].configured, 1);
    assert_eq!(s.flows.capacity, 65_536);
    let sub = &s.subsystems["microseg"];
    assert_eq!((sub.loaded, sub.current, sub.schema_version), (1, 1, Some(4)));
    assert_eq!(sub.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(sub.links, 6, "two links on each of three NICs");
    assert!(sub.counters.contains_key("events_emitted"));
    assert_eq!(s.subsystems["vtepguard"].loaded, 1);
    assert_eq!(s.underlay.guarded, vec!["ul0".to_string()]);
    assert!(s.underlay.peers.contains(&"192.0.2.7".to_string()));
    let want: BTreeSet<String> = [
        "vtep-guard 'guard': underlay interface nosuch0 does not exist on this node".to_string(),
        "vxlan_vx1: the VXLAN device of vnet vx1 lacks gbp: traffic from other nodes arrives unstamped".to_string(),
    ]
    .into();
    assert_eq!(s.warnings.iter().cloned().collect::<BTreeSet<_>>(), want);

    // The CLI: JSON with the same content, text an administrator reads.
    let out = cli!(&sandbox, &["status", "--output-format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["flows", "nics", "rules", "subsystems", "underlay", "warnings"]);
    assert_eq!(json["nics"], serde_json::to_value(&ms.status().unwrap().nics).unwrap());
    assert_eq!(json["warnings"], serde_json::to_value(&s.warnings).unwrap());
    let out = cli!(&sandbox, &["status"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(text.starts_with("NIC "), "{text}");
    let row = text.lines().find(|l| l.starts_with("veth101i0 ")).expect("row of veth101i0");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[2..6], ["a", "1", "no", "yes"], "{row}");
    assert!(text.contains("\nwarning: vxlan_vx1: the VXLAN device of vnet vx1 lacks gbp"), "{text}");
    assert!(text.contains("flows: "), "{text}");
    for debug in ["Some(", "None", "NicStatus", "{ "] {
        assert!(!text.contains(debug), "Rust Debug output in: {text}");
    }

    // Programs detached behind the library's back.
    let pin = ms.policy().link_pin("veth101i0", "microseg_enforce");
    sys::link_detach(sys::obj_get(&pin).unwrap().as_fd()).unwrap();
    // A guest restarted without apply_iface: a new netdev of the same name.
    sh("ip link del veth102i0 && ip link add veth102i0 type veth peer name r102 && ip link set veth102i0 up");
    let s = ms.status().unwrap();
    assert_eq!((nic(&s, "veth101i0").enforced, nic(&s, "veth101i0").attached), (0, 0));
    assert_eq!((nic(&s, "veth102i0").enforced, nic(&s, "veth102i0").mark), (0, 0));
    let nic_warnings: Vec<&String> = s.warnings.iter().filter(|w| w.starts_with("veth")).collect();
    assert_eq!(nic_warnings.len(), 2, "{:?}", s.warnings);
    assert!(nic_warnings[0].starts_with(
        "veth101i0: assigned to group a but carries no microseg programs: its programs were detached behind the library's back"
    ));
    assert!(nic_warnings[1].starts_with("veth102i0: assigned to group b but carries no microseg programs: it was re-created"));
    let out = cli!(&sandbox, &["status"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("warning: veth101i0: assigned to group a but carries no"));

    // apply_iface and a full pass put it right.
    ms.apply_iface(b"veth102i0").unwrap();
    ms.apply_full().unwrap();
    let s = ms.status().unwrap();
    assert!(s.nics.iter().all(|n| n.attached == 1), "{:?}", s.nics);
    assert_eq!((nic(&s, "veth101i0").enforced, nic(&s, "veth102i0").enforced), (1, 1));
    assert_eq!(s.warnings.len(), 2, "only the underlay warnings remain: {:?}", s.warnings);
}

/// `pve-microseg monitor --output-format json` for `secs`, started and ready.
fn monitor(sandbox: &Sandbox, secs: f64) -> Child {
    let child = cli!(sandbox, &["monitor", "--output-format", "json", "--timeout", &secs.to_string()]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    child
}

fn events_of(child: Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "monitor: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (source endpoint, destination NIC) of the events of `kind`.
fn event_pairs(lab: &Lab, events: &[serde_json::Value], kind: &str) -> BTreeSet<(String, String)> {
    let by_ip: BTreeMap<String, String> = lab.names().into_iter().map(|n| (lab.endpoint_ip(&n).to_string(), n)).collect();
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| (by_ip[e["src"].as_str().unwrap()].clone(), e["nic"].as_str().unwrap().to_string()))
        .collect()
}

fn dropped(m: &Matrix, to: impl Fn(&str) -> bool) -> BTreeSet<(String, String)> {
    m.iter().filter(|((_, d), ok)| !**ok && to(d)).map(|(p, _)| p.clone()).collect()
}

#[test]
fn every_drop_is_an_event_and_audit_mode_reports_exactly_what_enforce_drops() {
    let sandbox = Sandbox::new("events");
    let ms = sandbox.microseg();
    let mut lab = node(&[("veth101i0", 1), ("veth102i0", 2), ("veth103i0", 3), ("veth104i0", 4), ("veth105i0", 5)]);
    sandbox.write_config(&config(false, ""));
    ms.apply_full().unwrap();

    let child = monitor(&sandbox, 2.5);
    let enforce = lab.measure();
    let events = events_of(child);
    let drops = dropped(&enforce, |_| true);
    assert!(drops.len() >= 10, "the matrix drops something: {drops:?}");
    assert_eq!(event_pairs(&lab, &events, "drop"), drops, "every dropped probe is an event, and nothing else");
    let e = events
        .iter()
        .find(|e| e["nic"] == "veth102i0" && e["src"] == lab.endpoint_ip("veth103i0").to_string())
        .expect("c -> b event");
    assert_eq!((&e["src_group"], &e["dst_group"], &e["reason"], &e["rule"]), (&"c".into(), &"b".into(), &"rule".into(), &"cb-deny".into()));
    assert_eq!((&e["family"], &e["proto"], &e["dport"], &e["direction"]), (&"ipv4".into(), &"udp".into(), &5555.into(), &"to-guest".into()));
    assert!(e["sport"].as_u64().is_some_and(|p| p > 1024) && e["time"].as_f64().is_some_and(|t| t > 1.7e9));
    let e = events.iter().find(|e| e["nic"] == "veth101i0" && e["src"] == "10.99.0.254".to_string() || e["src_group"].is_null() && e["nic"] == "veth101i0");
    let e = e.expect("host -> a event");
    assert_eq!((&e["reason"], &e["rule"], &e["src_group"], &e["src_mark"]), (&"no-rule".into(), &serde_json::Value::Null, &serde_json::Value::Null, &0.into()));

    // The text form: one line per event.
    let child = cli!(&sandbox, &["monitor", "--count", "1", "--timeout", "5"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    send_n(&guest_socket(&lab, "veth103i0"), lab.endpoint_ip("veth102i0"), PORT, 1);
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    println!("{line}");
    let ip_c = lab.endpoint_ip("veth103i0");
    assert!(line.contains(&format!(" drop veth102i0 c -> b udp {ip_c}:")), "{line}");
    assert!(line.trim_end().ends_with(":5555 rule=cb-deny (rule)"), "{line}");

    // Audit mode for b: everything toward b's NICs is delivered, and
    // reported exactly where enforce mode dropped.
    sandbox.write_config(&config(true, ""));
    ms.apply_full().unwrap();
    let s = ms.status().unwrap();
    assert_eq!((nic(&s, "veth102i0").audit, nic(&s, "veth104i0").audit, nic(&s, "veth101i0").audit), (1, 1, 0));
    let sim = ms.simulate(Some("c"), "b", None, None).unwrap();
    assert_eq!((sim.verdict, sim.audit), ("deny", 1));
    let before = counters(&ms, "veth102i0");
    let child = monitor(&sandbox, 2.5);
    let audit = lab.measure();
    let events = events_of(child);
    let is_b = |d: &str| d == "veth102i0" || d == "veth104i0";
    assert!(audit.iter().filter(|((_, d), _)| is_b(d)).all(|(_, ok)| *ok), "audit mode delivers everything to b");
    let audited = event_pairs(&lab, &events, "audit");
    assert_eq!(audited, dropped(&enforce, is_b), "audit events = what enforce mode drops toward b");
    assert_eq!(event_pairs(&lab, &events, "drop"), dropped(&enforce, |d| !is_b(d)), "the others still drop");
    let after = counters(&ms, "veth102i0");
    let toward_b = dropped(&enforce, |d| d == "veth102i0").len() as u64;
    assert_eq!(after.audited - before.audited, 2 * toward_b, "two probes per pair, each counted");
    assert_eq!(after.dropped, before.dropped);

    // Back to enforce: dropped again.
    sandbox.write_config(&config(false, ""));
    ms.apply_full().unwrap();
    assert_eq!(lab.measure(), enforce, "enforce mode again");
}

/// rx packets of a netdev in this thread's namespace.
fn rx_packets(dev: &str) -> u64 {
    let out = sh(&format!("ip -s -j link show {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

#[test]
fn a_flood_of_drops_is_rate_limited_in_events_and_counted_exactly() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let sandbox = Sandbox::new("evflood");
    let ms = sandbox.microseg();
    let mut lab = node(&[("veth101i0", 1), ("veth102i0", 2), ("veth103i0", 3)]);
    // a -> b any UDP (the unrelated allowed flow); c -> b nothing.
    let cfg = config(false, "").replace(r#""dport": "5555", "#, "");
    sandbox.write_config(&cfg);
    ms.apply_full().unwrap();
    lab.measure(); // the bridge learns every MAC: the flood goes to b alone
    let (a, b, c) = ("veth101i0", "veth102i0", "veth103i0");
    let (ip_a, ip_b) = (lab.endpoint_ip(a), lab.endpoint_ip(b));

    // b echoes on 6000; a asks every 10 ms and measures the round trip.
    let echo = in_netns(lab.guest_ns(b), || UdpSocket::bind(SocketAddrV4::new(ip_b, 6000)).unwrap());
    echo.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_echo = stop.clone();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop_echo.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let ask = in_netns(lab.guest_ns(a), || UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap());
    ask.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let rtts = |secs: u64| {
        let (mut asked, mut answered, mut rtts) = (0u32, 0u32, Vec::new());
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while start.elapsed() < Duration::from_secs(secs) {
            let t = Instant::now();
            ask.send_to(b"ping", SocketAddrV4::new(ip_b, 6000)).unwrap();
            asked += 1;
            if ask.recv(&mut buf).is_ok() {
                answered += 1;
                rtts.push(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        rtts.sort();
        (asked, answered, rtts.get(rtts.len() / 2).copied().unwrap_or_default())
    };
    let (asked0, answered0, p50_quiet) = rtts(1);
    assert_eq!(answered0, asked0);

    let status0 = ms.status().unwrap();
    let (dropped0, rx0) = (nic(&status0, b).counters.dropped, rx_packets(c));
    let ev0 = status0.subsystems["microseg"].counters.clone();
    let child = monitor(&sandbox, 9.0);
    let flood_sock = guest_socket(&lab, c);
    let flooding = Arc::new(AtomicBool::new(true));
    let flag = flooding.clone();
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        while flag.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                let _ = flood_sock.send_to(b"x", SocketAddrV4::new(ip_b, 7777));
            }
        }
    });
    let (mut asked, mut answered, mut p50_flood) = (0, 0, Duration::ZERO);
    while rx_packets(c) - rx0 < 1_000_000 && started.elapsed() < Duration::from_secs(6) {
        (asked, answered, p50_flood) = rtts(1);
    }
    flooding.store(false, Ordering::Relaxed);
    flood.join().unwrap();
    let flood_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().unwrap();
    let sent = rx_packets(c) - rx0;
    let status1 = ms.status().unwrap();
    let dropped = nic(&status1, b).counters.dropped - dropped0;
    let ev1 = &status1.subsystems["microseg"].counters;
    let ev = |k: &str| ev1[k] - ev0[k];
    let events = events_of(child);
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for e in &events {
        *per_second.entry(e["time"].as_f64().unwrap().floor() as i64).or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    let cpus = sys::possible_cpus().unwrap() as u64;
    println!(
        "event flood: {sent} dropped packets in {flood_secs:.1} s ({:.0}/s), counted {dropped}; events emitted {} \
         suppressed {} lost {}, monitor saw {} (busiest second {busiest}, limit 1000/s + 10% burst + {cpus}); \
         allowed flow during the flood {answered}/{asked} answered, round trip p50 {p50_flood:?} (quiet {p50_quiet:?})",
        sent as f64 / flood_secs,
        ev("events_emitted"),
        ev("events_suppressed"),
        ev("events_lost"),
        events.len()
    );
    assert!(sent >= 1_000_000, "the flood reached b with {sent} packets only");
    assert_eq!(dropped, sent, "every flooded packet counted as dropped");
    assert_eq!(ev("events_emitted") + ev("events_suppressed") + ev("events_lost"), dropped, "every drop went to the limiter");
    assert_eq!(ev("events_lost"), 0, "the monitor kept up");
    assert_eq!(events.len() as u64, ev("events_emitted"), "the monitor saw every event emitted, and only those");
    assert!(busiest <= 1100 + cpus, "{busiest} events in one second");
    assert!(events.len() as f64 >= 500.0 * flood_secs.floor(), "events flowed during the flood: {}", events.len());
    assert_eq!(answered, asked, "the allowed flow lost answers during the flood");
}

#[test]
fn simulate_agrees_with_what_the_node_measures_on_every_pair_and_port() {
    let sandbox = Sandbox::new("simulate");
    let ms = sandbox.microseg();
    let guests = ["veth101i0", "veth102i0", "veth103i0", "veth104i0", "veth105i0"];
    let lab = node(&[("veth101i0", 1), ("veth102i0", 2), ("veth103i0", 3), ("veth104i0", 4), ("veth105i0", 5)]);
    let cfg = config(false, "").replace(
        r#""a101""#,
        r#""h7": {"type": "rule", "dst": "a", "proto": "udp", "dport": "7000", "allow": 1},
           "ca": {"type": "rule", "src": "c", "dst": "a", "allow": 1},
           "ca-7000": {"type": "rule", "src": "c", "dst": "a", "proto": "udp", "dport": "7000", "allow": 0},
           "a101""#,
    );
    sandbox.write_config(&cfg);
    ms.apply_full().unwrap();
    let ports = [PORT, 7000];
    let mut receivers: BTreeMap<(&str, u16), UdpSocket> = BTreeMap::new();
    for g in guests {
        receivers.insert((g, PORT), lab.socket(g));
        receivers.insert((g, 7000), in_netns(lab.guest_ns(g), || UdpSocket::bind("0.0.0.0:7000").unwrap()));
    }
    for s in receivers.values() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 64];
        while s.recv(&mut buf).is_ok() {}
    }
    let sources: Vec<&str> = std::iter::once("host").chain(guests).collect();
    let senders: BTreeMap<&str, UdpSocket> = sources
        .iter()
        .map(|&s| (s, if s == "host" { UdpSocket::bind("0.0.0.0:0").unwrap() } else { guest_socket(&lab, s) }))
        .collect();
    for &src in &sources {
        for dst in guests.iter().filter(|&&d| d != src) {
            for port in ports {
                let payload = format!("{src}>{dst}:{port}");
                senders[src].send_to(payload.as_bytes(), SocketAddrV4::new(lab.endpoint_ip(dst), port)).unwrap();
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut delivered = BTreeSet::new();
    for s in receivers.values() {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.recv(&mut buf) {
            delivered.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let mut checked = 0;
    let mut verdicts = BTreeMap::new();
    for &src in &sources {
        for dst in guests.iter().filter(|&&d| d != src) {
            for port in ports {
                let key = format!("{src}>{dst}:{port}");
                let sim_src = if src == "host" { "" } else { src };
                let sim = ms.simulate(Some(sim_src), dst, Some("udp"), Some(&port.to_string())).unwrap();
                let measured = if delivered.contains(&key) { "allow" } else { "deny" };
                assert_eq!(measured, sim.verdict, "{key}: measured {measured}, simulate says {sim:?}");
                *verdicts.entry((sim.verdict, sim.rule.clone())).or_insert(0) += 1;
                checked += 1;
            }
        }
    }
    println!("simulate = measured on {checked} (pair, port) probes: {verdicts:?}");
    assert!(verdicts.len() >= 5, "the policy exercises several rules and verdicts: {verdicts:?}");

    // The CLI prints the same decision.
    let sim = ms.simulate(Some("veth103i0"), "veth101i0", Some("udp"), Some("7000")).unwrap();
    assert_eq!((sim.verdict, sim.rule.as_deref()), ("deny", Some("ca-7000")));
    let out = cli!(&sandbox, &["simulate", "veth103i0", "veth101i0", "udp", "7000"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("deny by rule ca-7000: {}\n", sim.reason));
    let out = cli!(&sandbox, &["simulate", "veth103i0", "veth101i0", "udp", "7000", "--output-format", "json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::to_value(&sim).unwrap());
}

#[test]
fn the_cli_fails_with_the_error_on_stderr() {
    let sandbox = Sandbox::new("clierr");
    sandbox.write_config(&config(false, ""));
    for (args, want) in [
        (&["simulate", "a", "nope"][..], "microseg: simulate: dst 'nope' is neither a group nor a guest NIC\n"),
        (&["simulate", "a", "b", "udp", "x"], "microseg: simulate: 'x' is not a port\n"),
        (&["status", "--output-format", "yaml"], "--output-format: unknown format 'yaml' (text or json)\n"),
        (&["frobnicate"], "unknown command 'frobnicate'\nusage: pve-microseg <command> [OPTIONS]\n"),
        (&["apply-iface"], "apply-iface: wrong number of arguments\nusage: pve-microseg <command> [OPTIONS]\n"),
    ] {
        let out = cli!(&sandbox, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
    sandbox.write_config("{ broken");
    let out = cli!(&sandbox, &["apply-full"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("microseg: apply_full: running config ") && err.contains("invalid JSON"), "{err}");
    // The monitor needs the programs.
    let out = cli!(&sandbox, &["monitor", "--timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is microseg configured on this node?"));
}

#[test]
fn the_man_page_renders_and_completion_completes_commands_and_nics() {
    let _host = HostNs::enter();
    sh("ip link add veth4242i0 type veth peer name p4242 && ip link add tap77i1 type veth peer name p77");
    let root = env!("CARGO_MANIFEST_DIR");
    let page = sh(&format!("pod2man --section 1 --center 'Proxmox VE' --name PVE-MICROSEG {root}/doc/pve-microseg.1.pod | MANWIDTH=80 man -l - 2>&1"));
    assert!(page.contains("pve-microseg - group-based microsegmentation"), "{page}");
    for cmd in ["apply-full", "apply-iface", "clear", "status", "simulate", "monitor", "--output-format"] {
        assert!(page.contains(cmd), "the man page documents {cmd}");
    }
    let complete = |words: &str| {
        sh(&format!(
            "bash -c 'source {root}/completion/pve-microseg.bash; COMP_WORDS=({words}); \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _pve_microseg; echo \"${{COMPREPLY[@]}}\"'"
        ))
        .trim()
        .to_string()
    };
    assert_eq!(complete("pve-microseg s"), "status simulate subsystems");
    assert_eq!(complete("pve-microseg apply-iface \"\""), "veth4242i0 tap77i1");
    assert_eq!(complete("pve-microseg simulate veth42"), "veth4242i0");
    assert_eq!(complete("pve-microseg status --output-format \"\""), "text json");
    assert_eq!(complete("pve-microseg monitor --c"), "--count");
}
