//! The SRv6 carrier across two simulated nodes (SPEC section 5): joined
//! only by an IPv6 underlay, the guests' IPv4 routed between them by the
//! kernel's seg6 routes (`mode encap` toward the other node's SID, which
//! decapsulates with End.DX4), both nodes reading the same running config.
//! Real packets, real kernel.

mod common;

use std::net::{Ipv6Addr, SocketAddrV4, UdpSocket};

use microseg::report::Status;

use common::packet::{mac_of, send_raw, srh_tagged, Frame, TPID_8021AD, TPID_8021Q};
use common::*;

/// The nodes' underlay addresses (also their `ip sr tunsrc`) and SIDs.
fn ul(host: u8) -> Ipv6Addr {
    format!("2001:db8::{host}").parse().unwrap()
}
const SID_A: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 0x100);
const SID_B: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, 0x100);
/// A source address a guest may claim that is no node's.
const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x66);

/// Hosts on the VNet subnet: node A's guests and bridge, node B's.
const ON_A: [u8; 3] = [1, 2, 254];
const ON_B: [u8; 5] = [11, 12, 13, 14, 253];

/// The carrier on `ifaces`, both nodes its peers (one list for the cluster).
fn srv6_section(ifaces: &str) -> String {
    format!(r#", "sr": {{"type": "srv6", "ifaces": "{ifaces}", "peers": "{},{}"}}"#, ul(1), ul(2))
}

fn running_config(extra: &str) -> String {
    format!(
        r#"{{"version": 3,
  "microseg": {{"ids": {{
    "app": {{"type": "group", "mark": 10}},
    "web": {{"type": "group", "mark": 11, "parent": "app"}},
    "db":  {{"type": "group", "mark": 20}},
    "web-db": {{"type": "rule", "src": "web", "dst": "db", "allow": 0}},
    "app-db": {{"type": "rule", "src": "app", "dst": "db", "allow": 1}},
    "db-app": {{"type": "rule", "src": "db", "dst": "app", "allow": 1}},
    "web-app": {{"type": "rule", "src": "web", "dst": "app", "allow": 1}},
    "gw-web": {{"type": "rule", "dst": "web", "allow": 1}},
    "a101": {{"type": "assignment", "vmid": 101, "iface": 0, "group": "web"}},
    "a102": {{"type": "assignment", "vmid": 102, "iface": 0, "group": "db"}},
    "a201": {{"type": "assignment", "vmid": 201, "iface": 0, "group": "web"}},
    "a202": {{"type": "assignment", "vmid": 202, "iface": 0, "group": "app"}},
    "a203": {{"type": "assignment", "vmid": 203, "iface": 0, "group": "db"}}{extra}
  }}}}}}"#
    )
}

/// Node A (this thread's namespace) and node B on an IPv6 underlay switch
/// with an outsider on it; each node routes the other's guests into SRv6.
fn sr_nodes() -> TwoNodeLab {
    let mut base = TwoNodeLab::new(|host| format!("addr add {}/64 dev ul0 nodad\n", ul(host)));
    let node_a = base.lab.first_node();
    let node_b = base.node_b.clone();
    let lab = &mut base.lab;
    lab.add_veth_on(&node_a, "veth101i0", 1, true);
    lab.add_veth_on(&node_a, "veth102i0", 2, true);
    lab.add_veth_on(&node_b, "veth201i0", 11, true);
    lab.add_veth_on(&node_b, "veth202i0", 12, true);
    lab.add_veth_on(&node_b, "veth203i0", 13, true);
    lab.add_veth_on(&node_b, "veth204i0", 14, true);
    // Each node: a router for its guests, its SID decapsulating into
    // its routing table, the other node's guests behind the other SID.
    for (ns, me, sid, other, other_sid, remote) in
        [(node_a.as_str(), 1u8, SID_A, 2u8, SID_B, &ON_B[..]), (node_b.as_str(), 2, SID_B, 1, SID_A, &ON_A[..])]
    {
        sh(&format!(
            "ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv6.conf.ul0.forwarding=1"
        ));
        let mut batch = format!(
            "sr tunsrc set {}\n\
             route add {sid}/128 encap seg6local action End.DX4 nh4 0.0.0.0 dev ul0\n\
             route add {other_sid}/128 via {} dev ul0\n",
            ul(me),
            ul(other)
        );
        for h in remote {
            batch.push_str(&format!("route add {}/32 encap seg6 mode encap segs {other_sid} dev ul0\n", ip(*h)));
        }
        ip_batch(Some(ns), &batch);
    }
    // The guests reach the other node's guests through their own node.
    for (guests, remote, router) in
        [(&["veth101i0", "veth102i0"][..], &ON_B[..], 254u8), (&["veth201i0", "veth202i0", "veth203i0", "veth204i0"][..], &ON_A[..], 253)]
    {
        for g in guests {
            let batch: String = remote
                .iter()
                .map(|h| format!("neigh replace {} lladdr {} dev eth0 nud permanent\n", ip(*h), mac_str(mac(router))))
                .collect();
            ip_batch(Some(&lab.guest_ns(g).name), &batch);
        }
    }
    base
}

fn on(m: &Matrix, s: &str, d: &str) -> bool {
    m[&(s.to_string(), d.to_string())]
}

fn srv6_counter(s: &Status, name: &str) -> u64 {
    s.underlay.srv6.counters.get(name).copied().unwrap_or_else(|| panic!("no srv6 counter {name}: {:?}", s.underlay.srv6))
}

fn nic_blocked(s: &Status, nic: &str) -> u64 {
    s.nics.iter().find(|n| n.name == nic).map(|n| n.counters.blocked).unwrap_or_else(|| panic!("no NIC {nic}"))
}

#[test]
fn the_policy_holds_across_srv6_and_status_counts_the_carrier() {
    let mut t = sr_nodes();
    let json = running_config(&srv6_section("ul0"));
    let (a, b) = t.apply_both(&json);
    assert_eq!((a.srv6, b.srv6), (1, 1), "ul0 carries the group on both nodes");
    assert_eq!((a.nics, b.nics), (2, 3));
    let m = t.assert_matrix(&json, "cross-node matrix over SRv6");
    assert!(on(&m, "veth101i0", "veth202i0"), "allowed: web (A) -> app (B)");
    assert!(!on(&m, "veth101i0", "veth203i0"), "denied: web (A) -> db (B), more specific source");
    assert!(on(&m, "veth202i0", "veth102i0"), "allowed: app (B) -> db (A)");
    assert!(on(&m, "veth203i0", "veth101i0"), "nested: db (B) -> web (A) via db -> app");
    assert!(!on(&m, "veth102i0", "veth203i0"), "db (A) -> db (B): no rule");
    assert!(on(&m, "hostB", "veth101i0"), "unstamped: node B's host -> web (A)");
    assert!(!on(&m, "hostB", "veth102i0"), "unstamped: node B's host -> db (A), no rule");
    assert!(!on(&m, "veth204i0", "veth102i0"), "an unassigned guest on B is unstamped on A");

    // Status: the carrier, its peers, and exact packet counters.
    let sa = t.status_a();
    assert_eq!(sa.underlay.srv6.carrying, vec!["ul0".to_string()]);
    assert_eq!(sa.underlay.srv6.peers, vec![ul(1).to_string(), ul(2).to_string()]);
    assert!(sa.warnings.is_empty(), "{:?}", sa.warnings);
    let (tagged, restored) = (srv6_counter(&sa, "tagged"), srv6_counter(&t.status_b(), "restored"));
    let target = t.listen("veth202i0", 7010);
    in_netns(t.lab.guest_ns("veth101i0"), || {
        let s = UdpSocket::bind(SocketAddrV4::new(t.lab.endpoint_ip("veth101i0"), 0)).unwrap();
        for i in 0..50 {
            s.send_to(format!("n{i}").as_bytes(), SocketAddrV4::new(t.lab.endpoint_ip("veth202i0"), 7010)).unwrap();
        }
    });
    assert_eq!(received(&target).len(), 50);
    assert_eq!(srv6_counter(&t.status_a(), "tagged") - tagged, 50, "node A tagged exactly the 50 datagrams");
    let sb = t.status_b();
    assert_eq!(srv6_counter(&sb, "restored") - restored, 50, "node B restored exactly the 50 datagrams");
    assert_eq!((srv6_counter(&sb, "dropped"), srv6_counter(&sb, "invalid")), (0, 0));

    // With the VTEP guard on the same interface: the carrier's peers pass it.
    let guarded = running_config(&(srv6_section("ul0") + r#", "g": {"type": "vtep-guard", "ifaces": "ul0"}"#));
    let (a, b) = t.apply_both(&guarded);
    assert_eq!((a.guarded, b.guarded, a.srv6, b.srv6), (1, 1, 1, 1));
    let again = t.assert_matrix(&guarded, "with the VTEP guard on ul0 too");
    assert_eq!(again, m);

    // A configured interface that does not exist is a warning.
    t.apply_both(&running_config(&srv6_section("ul0,nosuch0")));
    let warnings = t.status_a().warnings;
    assert_eq!(warnings, vec!["srv6 'sr': underlay interface nosuch0 does not exist on this node".to_string()]);

    // Switched off: the carrier goes away entirely, and what crosses
    // arrives unstamped (web -> app now fails, unstamped -> web still works).
    let plain = running_config("");
    let (a, b) = t.apply_both(&plain);
    assert_eq!((a.srv6, b.srv6), (0, 0));
    assert!(!t.sandbox_a.settings.bpf_root.join("srv6").exists());
    let m = t.lab.measure();
    assert!(!on(&m, "veth101i0", "veth202i0"), "without the carrier the group does not cross");
    assert!(on(&m, "veth202i0", "veth101i0"), "unstamped -> web is allowed");
}

#[test]
fn a_one_way_rule_holds_across_srv6_replies_included() {
    let t = sr_nodes();
    // web (A) may open TCP 80 and UDP 53 toward db (B); nothing the other way.
    let json = format!(
        r#"{{"microseg": {{"ids": {{
    "web": {{"type": "group", "mark": 11}},
    "db":  {{"type": "group", "mark": 20}},
    "r":   {{"type": "rule", "src": "web", "dst": "db", "proto": "tcp", "dport": "80", "allow": 1}},
    "u":   {{"type": "rule", "src": "web", "dst": "db", "proto": "udp", "dport": "53", "allow": 1}},
    "a101": {{"type": "assignment", "vmid": 101, "iface": 0, "group": "web"}},
    "a203": {{"type": "assignment", "vmid": 203, "iface": 0, "group": "db"}}{}
  }}}}}}"#,
        srv6_section("ul0")
    );
    t.apply_both(&json);
    assert_one_way(&t.lab, "veth101i0", "veth203i0", "SRv6");
}

#[test]
fn upper_mark_bits_on_the_sending_node_change_no_verdict() {
    let mut t = sr_nodes();
    let json = running_config(&srv6_section("ul0"));
    t.apply_both(&json);
    t.assert_upper_mark_bits_change_nothing(&json, &["veth101i0", "veth102i0"], "ul0");
}

/// SRv6 a guest builds itself: claiming app (10), which may reach db, the
/// inner packet UDP to db's guest on B at `port`; every outer source and
/// destination of `pairs`, untagged and behind a VID-0 tag (which the node
/// strips and takes). Sent to the node's router MAC. Returns the count.
fn guest_srv6(t: &TwoNodeLab, attacker: &str, router: u8, pairs: &[(Ipv6Addr, Ipv6Addr)], port: u16, round: &str) -> u64 {
    let me = t.host_of(attacker);
    let mut n = 0;
    in_netns(t.lab.guest_ns(attacker), || {
        for (src, dst) in pairs {
            for tags in [vec![], vec![(TPID_8021Q, 0)]] {
                n += 1;
                let payload = format!("{round}-{attacker}-{src}-{dst}-{}", tags.len());
                let mut inner = udp_frame(mac(me), mac(13), ip(me), ip(13), payload.as_bytes())[14..].to_vec();
                inner[22..24].copy_from_slice(&port.to_be_bytes());
                let f = tags.iter().fold(Frame::new(mac(me), mac(router)), |f, (tp, v)| f.tag(*tp, *v));
                let frame = f.ip((*src).into(), (*dst).into(), 4, &[srh_tagged(*dst, 10)], &inner);
                send_raw("eth0", &frame);
            }
        }
    });
    n
}

#[test]
fn a_guest_cannot_choose_its_group_or_make_a_node_decapsulate_its_srv6() {
    let t = sr_nodes();
    let target = t.listen("veth203i0", 7020);
    let to_target = SocketAddrV4::new(t.lab.endpoint_ip("veth203i0"), 7020);
    // db on A (no rule toward db) and web on B (denied toward db), and the
    // unassigned guest on B: every source they could claim, toward both
    // nodes' SIDs and addresses they reach.
    let sources = [ul(1), ul(2), GUEST6];
    let pairs = |dsts: &[Ipv6Addr]| -> Vec<(Ipv6Addr, Ipv6Addr)> {
        sources.iter().flat_map(|s| dsts.iter().map(move |d| (*s, *d))).collect()
    };
    let from_a = pairs(&[SID_B, SID_A, ul(1), ul(2)]);
    let from_b = pairs(&[SID_B, ul(2)]);
    let attack = |round: &str| {
        guest_srv6(&t, "veth102i0", 254, &from_a, 7020, round)
            + guest_srv6(&t, "veth201i0", 253, &from_b, 7020, round)
            + guest_srv6(&t, "veth204i0", 253, &from_b, 7020, round)
    };
    // Without microseg both nodes decapsulate what a guest sends them.
    attack("open");
    let open = received(&target);
    for attacker in ["veth102i0", "veth201i0", "veth204i0"] {
        assert!(open.iter().any(|p| p.contains(attacker)), "the attack of {attacker} does not work even without microseg: {open:?}");
    }

    let json = running_config(&srv6_section("ul0"));
    t.apply_both(&json);
    let (blocked_a, blocked_b) = (nic_blocked(&t.status_a(), "veth102i0"), nic_blocked(&t.status_b(), "veth201i0"));
    let dropped_b = srv6_counter(&t.status_b(), "dropped");
    attack("enforced");
    // A socket mark claiming app, set inside the guest.
    send_with_socket_mark(&t.lab, "veth102i0", 10, to_target, b"marked");
    assert_eq!(received(&target), Vec::<String>::new(), "a guest chose its group over SRv6");
    // Exactly accounted: node A refuses at the guest's NIC everything that
    // claims a node's address or aims at node A (its SID included): all but
    // the 2 x 2 with the guest's own source toward node B, which node B's
    // carrier drops as SRv6 from a non-peer. On B, web's NIC refuses all 12.
    let n_a = from_a.len() as u64 * 2;
    assert_eq!(nic_blocked(&t.status_a(), "veth102i0") - blocked_a, n_a - 4);
    assert_eq!(nic_blocked(&t.status_b(), "veth201i0") - blocked_b, from_b.len() as u64 * 2);
    assert_eq!(srv6_counter(&t.status_b(), "dropped") - dropped_b, 4);

    // Control: the app guest on B reaches the same port.
    in_netns(t.lab.guest_ns("veth202i0"), || {
        let s = UdpSocket::bind(SocketAddrV4::new(t.lab.endpoint_ip("veth202i0"), 0)).unwrap();
        s.send_to(b"app", to_target).unwrap();
    });
    assert_eq!(received(&target), vec!["app".to_string()]);
}

#[test]
fn srv6_from_a_non_peer_on_the_underlay_is_dropped_behind_any_vlan_stack() {
    let t = sr_nodes();
    let target = t.listen("veth203i0", 7030);
    let stacks: Vec<Vec<(u16, u16)>> = vec![
        vec![],
        vec![(TPID_8021Q, 0)],
        vec![(TPID_8021Q, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 0), (TPID_8021Q, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021Q, 5)],
        vec![(TPID_8021AD, 100), (TPID_8021Q, 0)],
        // The kernel strips the outermost tag before TCX: four are looked
        // through behind it, a sixth is one too many (counted invalid).
        vec![(TPID_8021Q, 0); 5],
        vec![(TPID_8021Q, 0); 6],
    ];
    let dst_mac = mac_of(Some(&t.node_b), "ul0");
    let src_mac = mac_of(Some(&t.outsider.name), "ul0");
    // An outsider claims app (10) toward db's guest on B, to B's SID and address.
    let send_all = |round: &str| -> u64 {
        let mut n = 0;
        in_netns(&t.outsider, || {
            for dst in [SID_B, ul(2)] {
                for (i, tags) in stacks.iter().enumerate() {
                    let mut inner = udp_frame(mac(99), mac(13), ip(99), ip(13), format!("{round}-{dst}-{i}").as_bytes())[14..].to_vec();
                    inner[22..24].copy_from_slice(&7030u16.to_be_bytes());
                    let f = tags.iter().fold(Frame::new(src_mac, dst_mac), |f, (tp, v)| f.tag(*tp, *v));
                    send_raw("ul0", &f.ip(ul(66).into(), dst.into(), 4, &[srh_tagged(dst, 10)], &inner));
                    n += 1;
                }
            }
        });
        n
    };
    send_all("open");
    let open = received(&target);
    assert!(open.iter().any(|p| p == &format!("open-{SID_B}-0")), "B does not decapsulate a stranger's SRv6 without microseg: {open:?}");

    let json = running_config(&srv6_section("ul0"));
    t.apply_both(&json);
    let before = t.status_b();
    let n = send_all("carried");
    assert_eq!(received(&target), Vec::<String>::new(), "SRv6 from a non-peer reached the guest");
    let after = t.status_b();
    let delta = |name| srv6_counter(&after, name) - srv6_counter(&before, name);
    assert_eq!((delta("dropped"), delta("invalid"), delta("restored")), (n - 2, 2, 0), "every frame dropped and counted");
}
