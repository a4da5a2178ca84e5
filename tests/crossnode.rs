//! Across nodes (SPEC section 4, "Across hosts"): two simulated nodes joined
//! by an underlay, each with a VNet bridge and a VXLAN device with `gbp`
//! (static peers, as a PVE VXLAN zone configures them), both reading the
//! same running config. Real packets, real kernel.

mod common;

use std::net::{SocketAddrV4, UdpSocket};


use common::*;

const VNI: u32 = 4242;
const UNDERLAY: &str = "192.0.2";

fn underlay_ip(host: u8) -> String {
    format!("{UNDERLAY}.{host}")
}

fn underlay_ip6(host: u8) -> String {
    format!("2001:db8::{host}")
}

/// Node B also decapsulates VXLAN over IPv6 (VNI + 1, same bridge).
const VNI6: u32 = VNI + 1;

fn running_config(guard: bool) -> String {
    let guard = if guard { r#", "guard": {"type": "vtep-guard", "ifaces": "ul0"}"# } else { "" };
    format!(
        r#"{{"version": 9,
  "zones": {{"ids": {{"vxz": {{"type": "vxlan", "peers": "{a},{b},{a6},{b6}", "mtu": 1450}}}}}},
  "vnets": {{"ids": {{"vnet1": {{"type": "vnet", "zone": "vxz", "tag": {VNI}}}}}}},
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
    "a103": {{"type": "assignment", "vmid": 103, "iface": 0, "group": "web"}},
    "a201": {{"type": "assignment", "vmid": 201, "iface": 0, "group": "web"}},
    "a202": {{"type": "assignment", "vmid": 202, "iface": 0, "group": "app"}},
    "a203": {{"type": "assignment", "vmid": 203, "iface": 0, "group": "db"}}{guard}
  }}}}}}"#,
        a = underlay_ip(1),
        b = underlay_ip(2),
        a6 = underlay_ip6(1),
        b6 = underlay_ip6(2)
    )
}

/// Node A (this thread's namespace) and node B, an underlay switch with an
/// outsider on it, VXLAN with GBP on both nodes, guests on both.
fn two_nodes() -> TwoNodeLab {
    let mut base = TwoNodeLab::new(|host| {
        format!("addr add {}/24 dev ul0\naddr add {}/64 dev ul0 nodad\n", underlay_ip(host), underlay_ip6(host))
    });
    let node_a = base.lab.first_node();
    let node_b = base.node_b.clone();
    let lab = &mut base.lab;
    ip_batch(
        Some(&node_b),
        &format!(
            "link add vxlan6 type vxlan id {VNI6} local {} dstport 4789 gbp\nlink set vxlan6 mtu 1430 master vmbr0 up\n",
            underlay_ip6(2)
        ),
    );
    for (ns, local, peer) in [(node_a.as_str(), 1u8, 2u8), (node_b.as_str(), 2, 1)] {
        ip_batch(
            Some(ns),
            &format!(
                "link add vxlan_vnet1 type vxlan id {VNI} local {} dstport 4789 gbp\n\
                 link set vxlan_vnet1 mtu 1450 master vmbr0 up\n",
                underlay_ip(local)
            ),
        );
        sh(&format!("bridge -n {ns} fdb append 00:00:00:00:00:00 dev vxlan_vnet1 dst {}", underlay_ip(peer)));
    }
    lab.add_veth_on(&node_a, "veth101i0", 1, true);
    lab.add_veth_on(&node_a, "veth102i0", 2, true);
    lab.add_tap("tap103i0", 3, true);
    lab.add_veth_on(&node_b, "veth201i0", 11, true);
    lab.add_veth_on(&node_b, "veth202i0", 12, true);
    lab.add_veth_on(&node_b, "veth203i0", 13, true);
    lab.add_veth_on(&node_b, "veth204i0", 14, true);
    base
}

fn on(m: &Matrix, s: &str, d: &str) -> bool {
    m[&(s.to_string(), d.to_string())]
}

#[test]
fn cross_node_matrix_follows_the_policy() {
    let mut t = two_nodes();
    let json = running_config(false);
    let (a, b) = t.apply_both(&json);
    assert_eq!((a.nics, b.nics), (3, 4 - 1), "node A enforces 101-103, node B 201-203");
    let m = t.assert_matrix(&json, "cross-node matrix");
    // Every kind of verdict crosses the VXLAN tunnel.
    assert!(on(&m, "veth101i0", "veth202i0"), "allowed: web (A) -> app (B)");
    assert!(!on(&m, "veth101i0", "veth203i0"), "denied: web (A) -> db (B), more specific source");
    assert!(on(&m, "veth202i0", "veth102i0"), "allowed: app (B) -> db (A)");
    assert!(on(&m, "veth203i0", "tap103i0"), "nested: db (B) -> web (A) via db -> app");
    assert!(on(&m, "hostB", "veth101i0"), "unstamped: node B's host -> web (A)");
    assert!(!on(&m, "hostB", "veth102i0"), "unstamped: node B's host -> db (A), no rule");
    assert!(!on(&m, "veth204i0", "veth102i0"), "an unassigned guest on B is unstamped on A");
    assert!(on(&m, "veth204i0", "veth101i0"), "unstamped -> web allowed on A");
}

#[test]
fn upper_mark_bits_on_one_node_change_no_verdict_on_the_other() {
    let mut t = two_nodes();
    let json = running_config(false);
    t.apply_both(&json);
    t.assert_upper_mark_bits_change_nothing(&json, &["veth101i0", "veth102i0", "tap103i0"], "vxlan_vnet1");
}

/// A VXLAN-GBP packet: header with the G and I flags, `group`, the VNI, then `inner`.
fn vxlan_gbp(group: u16, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x88, 0x00];
    p.extend_from_slice(&group.to_be_bytes());
    p.extend_from_slice(&(VNI << 8).to_be_bytes());
    p.extend_from_slice(inner);
    p
}

#[test]
fn a_guest_cannot_choose_its_group() {
    let t = two_nodes();
    t.apply_both(&running_config(false));
    // db -> db has no rule; app -> db is allowed. The db guest on A claims app.
    let target = t.listen("veth203i0", 7000);
    let vxlan_target = t.listen("veth203i0", 4789);
    let to = |port| SocketAddrV4::new(t.lab.endpoint_ip("veth203i0"), port);
    // 1. A socket mark with app's group, set inside the guest.
    send_with_socket_mark(&t.lab, "veth102i0", 10, to(7000), b"marked");
    // 2. VXLAN-GBP it encapsulates itself, claiming app, to the target.
    in_netns(t.lab.guest_ns("veth102i0"), || {
        let s = UdpSocket::bind(SocketAddrV4::new(t.lab.endpoint_ip("veth102i0"), 0)).unwrap();
        let inner = udp_frame(mac(99), mac(13), ip(99), ip(13), b"inner");
        s.send_to(&vxlan_gbp(10, &inner), to(4789)).unwrap();
    });
    assert_eq!(received(&target), Vec::<String>::new(), "a socket mark chose the guest's group");
    assert!(received(&vxlan_target).is_empty(), "self-encapsulated VXLAN passed as another group");
    // Control: the real app guest on B gets through to the same ports.
    in_netns(t.lab.guest_ns("veth202i0"), || {
        let s = UdpSocket::bind(SocketAddrV4::new(t.lab.endpoint_ip("veth202i0"), 0)).unwrap();
        s.send_to(b"app", to(7000)).unwrap();
        s.send_to(b"app", to(4789)).unwrap();
    });
    assert_eq!(received(&target), vec!["app".to_string()]);
    assert_eq!(received(&vxlan_target), vec!["app".to_string()]);
}

#[test]
fn forged_vxlan_from_the_underlay_is_dropped_with_the_vtep_guard() {
    let mut t = two_nodes();
    t.apply_both(&running_config(false));
    let target = t.listen("veth203i0", 7001);
    // An outsider on the underlay claims group app (10), which may reach db.
    let forge = |t: &TwoNodeLab, n: u32| {
        in_netns(&t.outsider, || {
            let s = UdpSocket::bind(format!("{}:0", underlay_ip(66))).unwrap();
            for i in 0..n {
                let mut inner = udp_frame(mac(99), mac(13), ip(99), ip(13), format!("forged{i}").as_bytes());
                inner[36..38].copy_from_slice(&7001u16.to_be_bytes());
                s.send_to(&vxlan_gbp(10, &inner), format!("{}:4789", underlay_ip(2))).unwrap();
            }
        })
    };
    forge(&t, 3);
    let got = received(&target);
    assert_eq!(got.len(), 3, "without the guard the forged group is accepted (the documented trust problem): {got:?}");

    let guarded = running_config(true);
    let (a, b) = t.apply_both(&guarded);
    assert_eq!((a.guarded, b.guarded), (1, 1));
    forge(&t, 3);
    assert_eq!(received(&target), Vec::<String>::new(), "forged VXLAN from a non-peer reached the guest");
    // Peer traffic keeps working: the whole matrix is as before.
    t.assert_matrix(&guarded, "with the vtep guard on");

    // Switched off again: the guard goes away entirely.
    let (a, b) = t.apply_both(&running_config(false));
    assert_eq!((a.guarded, b.guarded), (0, 0));
    assert!(!t.sandbox_a.settings.bpf_root.join("vtepguard").exists());
    forge(&t, 1);
    assert_eq!(received(&target).len(), 1);
}

/// A forged VXLAN-GBP frame from the outsider to node B: outer IPv4 or IPv6,
/// behind `tags`, claiming group app (10), inner UDP to db's guest on B.
fn forged_frame(t: &TwoNodeLab, v6: bool, tags: &[(u16, u16)], payload: &str) -> Vec<u8> {
    use common::packet::Frame;
    let mut inner = udp_frame(mac(99), mac(13), ip(99), ip(13), payload.as_bytes());
    inner[36..38].copy_from_slice(&7002u16.to_be_bytes());
    let mut vx = vxlan_gbp(10, &inner);
    if v6 {
        vx[4..8].copy_from_slice(&(VNI6 << 8).to_be_bytes());
    }
    let dst_mac = common::packet::mac_of(Some(&t.node_b), "ul0");
    let src_mac = common::packet::mac_of(Some(&t.outsider.name), "ul0");
    let f = tags.iter().fold(Frame::new(src_mac, dst_mac), |f, (tpid, vid)| f.tag(*tpid, *vid));
    let (src, dst) = if v6 {
        (underlay_ip6(66).parse().unwrap(), underlay_ip6(2).parse().unwrap())
    } else {
        (underlay_ip(66).parse().unwrap(), underlay_ip(2).parse().unwrap())
    };
    f.udp(src, dst, 40000, 4789, &vx)
}

#[test]
fn forged_vxlan_over_ipv6_and_vlan_stacks_is_dropped_with_the_vtep_guard() {
    use common::packet::{TPID_8021AD, TPID_8021Q};
    let t = two_nodes();
    t.apply_both(&running_config(false));
    let target = t.listen("veth203i0", 7002);
    let stacks: Vec<Vec<(u16, u16)>> = vec![
        vec![],
        vec![(TPID_8021Q, 0)],
        vec![(TPID_8021Q, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 0), (TPID_8021Q, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021Q, 5)],
        vec![(TPID_8021AD, 100), (TPID_8021Q, 0)],
    ];
    let send_all = |t: &TwoNodeLab, round: &str| {
        in_netns(&t.outsider, || {
            for v6 in [false, true] {
                for (i, tags) in stacks.iter().enumerate() {
                    let frame = forged_frame(t, v6, tags, &format!("{round}-v{}-{i}", if v6 { 6 } else { 4 }));
                    common::packet::send_raw("ul0", &frame);
                }
            }
        })
    };
    // Without the guard the node decapsulates what a non-peer sends: over
    // IPv4, over IPv6, and behind VLAN tags with VID 0 (the kernel strips them).
    send_all(&t, "open");
    let open = received(&target);
    for must in ["open-v4-0", "open-v6-0", "open-v4-2", "open-v4-3"] {
        assert!(open.iter().any(|p| p == must), "{must} was not decapsulated without the guard: {open:?}");
    }
    let guarded = running_config(true);
    t.apply_both(&guarded);
    send_all(&t, "guarded");
    assert_eq!(received(&target), Vec::<String>::new(), "forged VXLAN got through the guard");
    // Peers over IPv4 still reach each other (the matrix), and over IPv6 too.
    let mut t = t;
    t.assert_matrix(&guarded, "with the vtep guard on");
    // VXLAN from a peer over IPv6 (node A's address) is decapsulated.
    let mut inner = udp_frame(mac(99), mac(13), ip(99), ip(13), b"peer6");
    inner[36..38].copy_from_slice(&7002u16.to_be_bytes());
    let mut vx = vxlan_gbp(10, &inner);
    vx[4..8].copy_from_slice(&(VNI6 << 8).to_be_bytes());
    let s = UdpSocket::bind(format!("[{}]:0", underlay_ip6(1))).unwrap();
    s.send_to(&vx, format!("[{}]:4789", underlay_ip6(2))).unwrap();
    assert_eq!(received(&target), vec!["peer6".to_string()], "VXLAN over IPv6 from a peer");
}

/// Guests on node B (web 201 with no rule toward db, and the unassigned
/// 204) send VXLAN-GBP claiming app (10), which may reach db, with the
/// VNet's VNI, to every address of node B they can reach: its bridge
/// address, its underlay address (routed by the node), the subnet and the
/// limited broadcast; from their own address, and raw with a peer's and the
/// node's address as source, untagged and VLAN-tagged.
fn guest_forgeries(t: &TwoNodeLab, attacker: &str, round: &str) {
    use common::packet::{send_raw, Frame, TPID_8021AD, TPID_8021Q};
    let mut n = 0;
    let mut next = |what: &str| {
        n += 1;
        let mut inner = udp_frame(mac(99), mac(13), ip(99), ip(13), format!("{round}-{attacker}-{what}-{n}").as_bytes());
        inner[36..38].copy_from_slice(&7003u16.to_be_bytes());
        vxlan_gbp(10, &inner)
    };
    let node_b_bridge = ip(253);
    let node_b_underlay: std::net::Ipv4Addr = underlay_ip(2).parse().unwrap();
    let bcast = std::net::Ipv4Addr::new(10, 77, 0, 255);
    let me = t.lab.endpoint_ip(attacker);
    in_netns(t.lab.guest_ns(attacker), || {
        let s = UdpSocket::bind(SocketAddrV4::new(me, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        for dst in [node_b_bridge, node_b_underlay, bcast, std::net::Ipv4Addr::BROADCAST] {
            let _ = s.send_to(&next(&format!("sock-{dst}")), SocketAddrV4::new(dst, 4789));
        }
        let peer: std::net::Ipv4Addr = underlay_ip(1).parse().unwrap();
        for src in [peer, node_b_underlay, me] {
            for tags in [vec![], vec![(TPID_8021Q, 0)], vec![(TPID_8021AD, 0), (TPID_8021Q, 0)]] {
                for dst in [node_b_bridge, node_b_underlay] {
                    let f = tags.iter().fold(Frame::new(mac(t.host_of(attacker)), mac(253)), |f, (tp, v)| f.tag(*tp, *v));
                    let frame = f.udp(src.into(), dst.into(), 40000, 4789, &next(&format!("raw-{src}-{dst}-{tags:?}")));
                    send_raw("eth0", &frame);
                }
            }
        }
    });
}


#[test]
fn a_guest_cannot_make_the_node_decapsulate_its_own_vxlan() {
    let mut t = two_nodes();
    let target = t.listen("veth203i0", 7003);
    for attacker in ["veth201i0", "veth204i0"] {
        // The node routes what the guests send to its underlay address.
        ip_batch(Some(&t.lab.guest_ns(attacker).name), &format!("route add {UNDERLAY}.0/24 via {}\n", ip(253)));
    }
    // Without microseg the node decapsulates what a guest sends it.
    for attacker in ["veth201i0", "veth204i0"] {
        guest_forgeries(&t, attacker, "open");
    }
    let open = received(&target);
    assert!(open.len() >= 8, "the attack does not work even without microseg: {open:?}");

    let json = running_config(true);
    t.apply_both(&json);
    for attacker in ["veth201i0", "veth204i0"] {
        guest_forgeries(&t, attacker, "enforced");
    }
    assert_eq!(received(&target), Vec::<String>::new(), "a guest chose its group through the node's VXLAN");

    // Peers still carry the policy, and guests exchange VXLAN among themselves.
    t.assert_matrix(&json, "with the tunnel checks on");
    let vx_between = t.listen("veth202i0", 4789);
    in_netns(t.lab.guest_ns("veth201i0"), || {
        let s = UdpSocket::bind(SocketAddrV4::new(t.lab.endpoint_ip("veth201i0"), 0)).unwrap();
        s.send_to(b"guest-vxlan", SocketAddrV4::new(t.lab.endpoint_ip("veth202i0"), 4789)).unwrap();
    });
    assert_eq!(received(&vx_between), vec!["guest-vxlan".to_string()], "VXLAN between guests in the VNet");
}

/// web (node A) may open TCP 80 and UDP 53 toward db (node B); nothing the
/// other way.
fn one_way_config() -> String {
    format!(
        r#"{{"zones": {{"ids": {{"vxz": {{"type": "vxlan", "peers": "{a},{b}"}}}}}},
  "microseg": {{"ids": {{
    "web": {{"type": "group", "mark": 11}},
    "db":  {{"type": "group", "mark": 20}},
    "r":   {{"type": "rule", "src": "web", "dst": "db", "proto": "tcp", "dport": "80", "allow": 1}},
    "u":   {{"type": "rule", "src": "web", "dst": "db", "proto": "udp", "dport": "53", "allow": 1}},
    "a101": {{"type": "assignment", "vmid": 101, "iface": 0, "group": "web"}},
    "a203": {{"type": "assignment", "vmid": 203, "iface": 0, "group": "db"}}
  }}}}}}"#,
        a = underlay_ip(1),
        b = underlay_ip(2)
    )
}

#[test]
fn a_one_way_rule_holds_across_nodes_replies_included() {
    let t = two_nodes();
    t.apply_both(&one_way_config());
    assert_one_way(&t.lab, "veth101i0", "veth203i0", "VXLAN");
}
