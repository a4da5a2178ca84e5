//! `BPF_PROG_TEST_RUN` on both programs: every verdict path, real kernel.

mod common;

use std::os::fd::AsFd;

use microseg::kernel::object::Hook;
use microseg::kernel::state::{KernelState, Loaded};
use microseg::subsystems::microseg::maps::{NicKey, NicValue, PolicyValue, POLICY, TAP_TO_GROUP};
use microseg::subsystems::microseg::resolve::{policy_key, PREFIX_PAIR};
use microseg::kernel::sys::{self, SkBuffCtx};

use common::{ip, mac, udp_frame, Sandbox};

/// TCX_NEXT (allow, let later programs decide) and TCX_DROP.
const NEXT: i32 = -1;
const DROP: i32 = 2;
/// Test runs without a device in the context use the loopback device.
const LO: u32 = 1;

struct Plane {
    _sandbox: Sandbox,
    loaded: Loaded,
}

impl Plane {
    fn new() -> Plane {
        let sandbox = Sandbox::new("dp");
        let ms = sandbox.microseg();
        KernelState::check_bpf_root(&sandbox.settings.bpf_root).unwrap();
        let loaded = ms.policy().install(false, &|_| Ok(())).unwrap();
        Plane { _sandbox: sandbox, loaded }
    }

    fn assign(&self, ifindex: u32, mark: u32) {
        self.loaded.map(&TAP_TO_GROUP).unwrap().set(&NicKey { ifindex }, &NicValue { mark: mark as u16, flags: 0 }).unwrap();
    }

    fn rule(&self, src: u16, dst: u16, allow: bool) {
        let value = PolicyValue { verdict: allow as u8, flags: u8::from(allow), pad: 0, rule: 1 };
        self.loaded.map(&POLICY).unwrap().set(&policy_key(PREFIX_PAIR, src, dst, 0, 0), &value).unwrap();
    }

    fn run(&self, hook: Hook, ifindex: u32, mark: u32) -> (i32, u32) {
        let pkt = udp_frame(mac(1), mac(2), ip(1), ip(2), b"payload-for-test-run-000000000000");
        let prog = if hook == Hook::Ingress { "microseg_stamp" } else { "microseg_enforce" };
        let r = sys::prog_test_run(self.loaded.prog(prog).fd.as_fd(), &pkt, &SkBuffCtx::new(ifindex, mark), 1)
            .expect("BPF_PROG_TEST_RUN");
        (r.retval, r.ctx_out.mark())
    }
}

#[test]
fn stamp_sets_low_bits_and_keeps_upper_bits() {
    let p = Plane::new();
    p.assign(LO, 11);
    assert_eq!(p.run(Hook::Ingress, LO, 0), (NEXT, 11));
    // Bit 31 (PVE firewall) and other upper bits survive; an old group is replaced.
    assert_eq!(p.run(Hook::Ingress, LO, 0x8000_1234), (NEXT, 0x8000_000b));
    assert_eq!(p.run(Hook::Ingress, LO, 0x7fff_ffff), (NEXT, 0x7fff_000b));
}

#[test]
fn stamp_leaves_unassigned_nic_alone() {
    let p = Plane::new();
    assert_eq!(p.run(Hook::Ingress, LO, 0x8000_0007), (NEXT, 0x8000_0007));
}

#[test]
fn enforce_stamped_allow() {
    let p = Plane::new();
    p.assign(LO, 11);
    p.rule(20, 11, true);
    assert_eq!(p.run(Hook::Egress, LO, 20).0, NEXT);
    // Upper bits do not change the verdict.
    assert_eq!(p.run(Hook::Egress, LO, 0x8000_0014).0, NEXT);
}

#[test]
fn enforce_explicit_deny() {
    let p = Plane::new();
    p.assign(LO, 11);
    p.rule(21, 11, false);
    assert_eq!(p.run(Hook::Egress, LO, 21).0, DROP);
}

#[test]
fn enforce_no_rule_drops() {
    let p = Plane::new();
    p.assign(LO, 11);
    p.rule(20, 11, true);
    assert_eq!(p.run(Hook::Egress, LO, 22).0, DROP);
    // A rule for the reverse direction is not this one.
    p.rule(11, 22, true);
    assert_eq!(p.run(Hook::Egress, LO, 22).0, DROP);
}

#[test]
fn enforce_unstamped_with_and_without_rule() {
    let p = Plane::new();
    p.assign(LO, 11);
    assert_eq!(p.run(Hook::Egress, LO, 0).0, DROP);
    assert_eq!(p.run(Hook::Egress, LO, 0x8000_0000).0, DROP);
    p.rule(0, 11, true);
    assert_eq!(p.run(Hook::Egress, LO, 0).0, NEXT);
    assert_eq!(p.run(Hook::Egress, LO, 0x8000_0000).0, NEXT);
}

#[test]
fn enforce_passes_unassigned_ifindex() {
    let p = Plane::new();
    // Rules exist, but this NIC has no group: not ours to enforce.
    p.rule(20, 11, false);
    assert_eq!(p.run(Hook::Egress, LO, 20).0, NEXT);
    assert_eq!(p.run(Hook::Egress, LO, 0).0, NEXT);
}

#[test]
fn enforce_does_not_touch_the_mark() {
    let p = Plane::new();
    p.assign(LO, 11);
    p.rule(20, 11, true);
    assert_eq!(p.run(Hook::Egress, LO, 0x8000_0014), (NEXT, 0x8000_0014));
}

mod vtep_guard {
    use super::*;
    use common::packet::*;
    use microseg::subsystems::vtepguard::maps::{GuardConfig, Peer4Key, Peer6Key, PeerValue, GUARD_CONFIG, VTEP_PEERS, VTEP_PEERS6};
    use microseg::subsystems::{vtepguard::VtepGuard, Subsystem};
    use std::net::{IpAddr, Ipv6Addr};

    struct Guard {
        _sandbox: Sandbox,
        loaded: Loaded,
    }

    impl Guard {
        fn new(peers: &[IpAddr]) -> Guard {
            let sandbox = Sandbox::new("guard");
            let st = KernelState::new(VtepGuard::new().spec().clone(), &sandbox.settings.bpf_root, &sandbox.settings.run_dir);
            KernelState::check_bpf_root(&sandbox.settings.bpf_root).unwrap();
            let loaded = st.install(false, &|_| Ok(())).unwrap();
            let allowed = PeerValue { allowed: 1 };
            for p in peers {
                match p {
                    IpAddr::V4(a) => {
                        let key = Peer4Key { addr: u32::from_ne_bytes(a.octets()) };
                        loaded.map(&VTEP_PEERS).unwrap().set(&key, &allowed).unwrap()
                    }
                    IpAddr::V6(a) => loaded.map(&VTEP_PEERS6).unwrap().set(&Peer6Key { addr: a.octets() }, &allowed).unwrap(),
                }
            }
            Guard { _sandbox: sandbox, loaded }
        }

        fn port(&self, port: u32) {
            self.loaded.map(&GUARD_CONFIG).unwrap().set(&0, &GuardConfig { vxlan_port: port }).unwrap();
        }

        fn run(&self, pkt: &[u8]) -> i32 {
            let prog = self.loaded.prog("vtep_guard");
            sys::prog_test_run(prog.fd.as_fd(), pkt, &SkBuffCtx::new(LO, 0), 1).unwrap().retval
        }
    }

    /// An outer IPv4/UDP packet from `src` to `dport`.
    fn outer(src: [u8; 4], dport: u16, frag: u16) -> Vec<u8> {
        let mut f = udp_frame(mac(1), mac(2), src.into(), [192, 0, 2, 2].into(), &[0u8; 64]);
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    const PEER: [u8; 4] = [192, 0, 2, 1];
    const STRANGER: [u8; 4] = [192, 0, 2, 66];
    const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const STRANGER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
    const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn guard() -> Guard {
        Guard::new(&[IpAddr::from(PEER), IpAddr::from(PEER6)])
    }

    /// The VLAN stacks a sender may put in front: none, one, two and three
    /// tags of 802.1Q and 802.1ad, VID 0 (which the kernel strips and
    /// delivers) and others.
    fn stacks() -> Vec<Vec<(u16, u16)>> {
        vec![
            vec![],
            vec![(TPID_8021Q, 0)],
            vec![(TPID_8021Q, 7)],
            vec![(TPID_8021Q, 0), (TPID_8021Q, 0)],
            vec![(TPID_8021AD, 0), (TPID_8021Q, 0)],
            vec![(TPID_8021AD, 100), (TPID_8021Q, 5), (TPID_8021Q, 0)],
            vec![(TPID_8021AD, 0), (TPID_8021AD, 0), (TPID_8021Q, 0), (TPID_8021Q, 9)],
        ]
    }

    fn frame(tags: &[(u16, u16)]) -> Frame {
        tags.iter().fold(Frame::new(mac(1), mac(2)), |f, (t, v)| f.tag(*t, *v))
    }

    #[test]
    fn peer_vxlan_passes() {
        assert_eq!(guard().run(&outer(PEER, 4789, 0)), NEXT);
    }

    #[test]
    fn non_peer_vxlan_drops() {
        assert_eq!(guard().run(&outer(STRANGER, 4789, 0)), DROP);
    }

    #[test]
    fn non_peer_other_udp_passes() {
        assert_eq!(guard().run(&outer(STRANGER, 53, 0)), NEXT);
    }

    #[test]
    fn non_ip_passes() {
        let mut arp = outer(STRANGER, 4789, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(guard().run(&arp), NEXT);
    }

    #[test]
    fn non_peer_fragments_drop_peer_fragments_pass() {
        let g = guard();
        assert_eq!(g.run(&outer(STRANGER, 53, 0x2000)), DROP, "first fragment (MF)");
        assert_eq!(g.run(&outer(STRANGER, 53, 0x0010)), DROP, "later fragment");
        assert_eq!(g.run(&outer(PEER, 4789, 0x2000)), NEXT);
    }

    #[test]
    fn configured_port() {
        let g = guard();
        g.port(8472);
        assert_eq!(g.run(&outer(STRANGER, 8472, 0)), DROP);
        assert_eq!(g.run(&outer(STRANGER, 4789, 0)), NEXT);
    }

    #[test]
    fn every_vlan_stack_over_ipv4_and_ipv6() {
        let g = guard();
        let node4 = IpAddr::from([192, 0, 2, 2]);
        for tags in stacks() {
            let f = frame(&tags);
            for (peer, stranger, node) in [
                (IpAddr::from(PEER), IpAddr::from(STRANGER), node4),
                (IpAddr::from(PEER6), IpAddr::from(STRANGER6), IpAddr::from(NODE6)),
            ] {
                let what = format!("{tags:x?} from {stranger}");
                assert_eq!(g.run(&f.udp(stranger, node, 40000, 4789, &[0; 16])), DROP, "VXLAN {what}");
                assert_eq!(g.run(&f.udp(peer, node, 40000, 4789, &[0; 16])), NEXT, "VXLAN from the peer {peer}, {tags:x?}");
                assert_eq!(g.run(&f.udp(stranger, node, 40000, 53, &[0; 16])), NEXT, "other UDP {what}");
            }
        }
    }

    #[test]
    fn more_tags_than_looked_through_drop() {
        let tags = [(TPID_8021Q, 0); 5];
        let f = frame(&tags);
        assert_eq!(guard().run(&f.udp(IpAddr::from(PEER), IpAddr::from([192, 0, 2, 2]), 1, 53, &[0; 16])), DROP);
    }

    #[test]
    fn ipv6_extension_chains() {
        let g = guard();
        let f = Frame::new(mac(1), mac(2));
        let (s, p, d) = (IpAddr::from(STRANGER6), IpAddr::from(PEER6), IpAddr::from(NODE6));
        let vx = |src, ext: &[(u8, Vec<u8>)]| f.udp_ext(src, d, ext, 40000, 4789, &[0; 16]);
        assert_eq!(g.run(&vx(s, &[hop_by_hop(), dest_opts()])), DROP, "behind two extension headers");
        assert_eq!(g.run(&vx(p, &[hop_by_hop(), dest_opts()])), NEXT);
        let five = [hop_by_hop(), dest_opts(), dest_opts(), dest_opts(), dest_opts()];
        assert_eq!(g.run(&vx(s, &five)), DROP, "a chain longer than looked through");
        assert_eq!(g.run(&vx(s, &[srh(NODE6)])), DROP, "SRv6 from a non-peer");
        assert_eq!(g.run(&vx(p, &[srh(NODE6)])), NEXT, "SRv6 from a peer");
        let srv6_tcp = f.ip(s, d, 6, &[srh(NODE6)], &[0; 20]);
        assert_eq!(g.run(&srv6_tcp), DROP, "SRv6 whatever it carries");
        assert_eq!(g.run(&vx(s, &[fragment(0, true)])), DROP, "first fragment to the VXLAN port");
        assert_eq!(g.run(&vx(s, &[fragment(8, false)])), DROP, "later UDP fragment");
        assert_eq!(g.run(&f.udp_ext(s, d, &[fragment(0, true)], 1, 53, &[0; 16])), NEXT, "first fragment, other port");
        assert_eq!(g.run(&f.ip(s, d, 6, &[fragment(8, false)], &[0; 16])), NEXT, "later TCP fragment");
    }

    #[test]
    fn truncated_headers_never_crash() {
        let g = guard();
        let f = frame(&[(TPID_8021Q, 0), (TPID_8021AD, 0)]);
        let full = f.udp_ext(IpAddr::from(STRANGER6), IpAddr::from(NODE6), &[hop_by_hop(), srh(NODE6)], 1, 4789, &[0; 8]);
        for len in 0..full.len() {
            let r = g.run(&full[..len.max(14)]);
            assert!(r == NEXT || r == DROP, "length {len}: {r}");
        }
        // Cut inside the IPv6 header or its chain: not decapsulated by the stack, passed.
        assert_eq!(g.run(&full[..14 + 8 + 20]), NEXT);
    }
}

/// The batched map calls the full pass uses agree with element-wise access,
/// across many hash buckets and more than one batch.
#[test]
fn batched_map_sync_agrees_with_element_access() {
    let p = Plane::new();
    let map = p.loaded.map(&TAP_TO_GROUP).unwrap();
    let n = 20_000usize;
    let entries: Vec<(NicKey, NicValue)> =
        (0..n).map(|i| (NicKey { ifindex: 1000 + i as u32 }, NicValue { mark: (i % 65535) as u16 + 1, flags: 0 })).collect();
    map.set_all(&entries).unwrap();
    let dumped = map.entries().unwrap();
    let walked: std::collections::BTreeMap<NicKey, NicValue> =
        map.keys().unwrap().into_iter().map(|k| (k, map.get(&k).unwrap().expect("walked key present"))).collect();
    assert_eq!(dumped.len(), n);
    assert_eq!(dumped, walked);
    assert_eq!(dumped, entries.iter().copied().collect());
    let gone: Vec<NicKey> = entries[..5000].iter().map(|(k, _)| *k).collect();
    map.remove_all(&gone).unwrap();
    assert_eq!(map.entries().unwrap().len(), n - 5000);
}

/// The stamp on every guest NIC refuses tunnel packets aimed at the node.
mod guest_tunnels {
    use super::*;
    use common::packet::*;
    use microseg::subsystems::microseg::maps::{
        AddrKey, AddrValue, TunnelSettings, ADDR_BROADCAST, ADDR_LOCAL, ADDR_PEER, TUNNEL_CONFIG, UNDERLAY_ADDRS,
    };
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
    const BCAST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 255);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const OTHER_GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 13);
    const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe);
    const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 13);

    fn key(a: IpAddr) -> AddrKey {
        AddrKey {
            addr: match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            },
        }
    }

    fn plane() -> Plane {
        let p = Plane::new();
        let addrs = p.loaded.map(&UNDERLAY_ADDRS).unwrap();
        for (a, kind) in [
            (IpAddr::from(NODE), ADDR_LOCAL),
            (IpAddr::from(BCAST), ADDR_BROADCAST),
            (IpAddr::from(PEER), ADDR_PEER),
            (IpAddr::from(NODE6), ADDR_LOCAL),
        ] {
            addrs.set(&key(a), &AddrValue { kind }).unwrap();
        }
        p.loaded.map(&TUNNEL_CONFIG).unwrap().set(&0, &TunnelSettings { ports: [4789, 8472, 0, 0] }).unwrap();
        p
    }

    fn stamp(p: &Plane, pkt: &[u8]) -> i32 {
        sys::prog_test_run(p.loaded.prog("microseg_stamp").fd.as_fd(), pkt, &SkBuffCtx::new(LO, 0), 1).unwrap().retval
    }

    #[test]
    fn vxlan_to_the_node_or_from_a_claimed_address_drops_on_assigned_and_unassigned_nics() {
        let p = plane();
        for assigned in [false, true] {
            if assigned {
                p.assign(LO, 11);
            }
            for tags in [vec![], vec![(TPID_8021Q, 0)], vec![(TPID_8021AD, 0), (TPID_8021Q, 10)]] {
                let f = tags.iter().fold(Frame::new(mac(1), mac(254)), |f, (t, v)| f.tag(*t, *v));
                let vx = |src: Ipv4Addr, dst: Ipv4Addr, port| f.udp(src.into(), dst.into(), 40000, port, &[0; 24]);
                let what = format!("assigned {assigned}, tags {tags:x?}");
                for dst in [NODE, BCAST, Ipv4Addr::BROADCAST, Ipv4Addr::new(239, 1, 1, 1)] {
                    assert_eq!(stamp(&p, &vx(GUEST, dst, 4789)), DROP, "VXLAN to {dst}, {what}");
                }
                assert_eq!(stamp(&p, &vx(GUEST, NODE, 8472)), DROP, "second tunnel port, {what}");
                assert_eq!(stamp(&p, &vx(PEER, OTHER_GUEST, 4789)), DROP, "a peer's source, {what}");
                assert_eq!(stamp(&p, &vx(NODE, OTHER_GUEST, 4789)), DROP, "the node's source, {what}");
                assert_eq!(stamp(&p, &vx(GUEST, OTHER_GUEST, 4789)), NEXT, "VXLAN between guests, {what}");
                assert_eq!(stamp(&p, &vx(GUEST, NODE, 53)), NEXT, "other UDP to the node, {what}");
            }
        }
    }

    #[test]
    fn srv6_and_ipv6_tunnels_to_the_node_drop() {
        let p = plane();
        let f = Frame::new(mac(1), mac(254));
        let (g, n, o) = (IpAddr::from(GUEST6), IpAddr::from(NODE6), IpAddr::from(OTHER6));
        assert_eq!(stamp(&p, &f.udp(g, n, 40000, 4789, &[0; 24])), DROP, "VXLAN over IPv6 to the node");
        assert_eq!(stamp(&p, &f.udp(g, "ff02::1".parse().unwrap(), 40000, 4789, &[0; 24])), DROP, "to a multicast group");
        assert_eq!(stamp(&p, &f.ip(g, n, 41, &[srh(NODE6)], &[0x60; 40])), DROP, "SRv6 to the node");
        assert_eq!(stamp(&p, &f.ip(g, n, 4, &[], &[0x45; 20])), DROP, "IPv4 in IPv6 (reduced SRv6) to the node");
        assert_eq!(stamp(&p, &f.ip(g, n, 41, &[hop_by_hop()], &[0x60; 40])), DROP, "IPv6 in IPv6 behind an extension");
        assert_eq!(stamp(&p, &f.ip(g, o, 41, &[srh(OTHER6)], &[0x60; 40])), NEXT, "SRv6 between guests");
        assert_eq!(stamp(&p, &f.udp(g, n, 40000, 53, &[0; 24])), NEXT, "other UDP to the node");
        assert_eq!(stamp(&p, &f.udp_ext(g, n, &[fragment(8, false)], 1, 4789, &[0; 24])), NEXT, "a later fragment carries no port");
    }

    #[test]
    fn the_stamp_still_stamps() {
        let p = plane();
        p.assign(LO, 11);
        let f = Frame::new(mac(1), mac(254));
        let pkt = f.udp(GUEST.into(), OTHER_GUEST.into(), 1, 80, &[0; 24]);
        let r = sys::prog_test_run(p.loaded.prog("microseg_stamp").fd.as_fd(), &pkt, &SkBuffCtx::new(LO, 0x8000_0000), 1).unwrap();
        assert_eq!((r.retval, r.ctx_out.mark()), (NEXT, 0x8000_000b));
    }
}
