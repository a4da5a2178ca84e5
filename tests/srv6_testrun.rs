//! The SRv6 carrier's programs under `BPF_PROG_TEST_RUN` (SPEC section 5):
//! every path of `srv6_send` and `srv6_receive`, in a namespace of their
//! own whose routes say what is this node's (an address and a seg6local
//! SID) and what it forwards. Real kernel, real FIB lookups.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;

use microseg::kernel::state::{KernelState, Loaded};
use microseg::kernel::sys::{self, SkBuffCtx};
use microseg::subsystems::srv6::maps::{Peer6Key, PeerValue, Srv6Counters, SRV6_PEERS, SRV6_STATS};
use microseg::subsystems::{srv6::Srv6, Subsystem};

use common::packet::{dest_opts, hop_by_hop, Frame, TPID_8021AD, TPID_8021Q};
use common::{ip, mac, sh, udp_frame, HostNs, Sandbox};

const NEXT: i32 = -1;
const DROP: i32 = 2;

/// This node's underlay address and SID, a peer, a stranger, a destination
/// the node forwards to.
const NODE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 1);
const SID: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 0x100);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, 1);
const STRANGER: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x66, 0, 0, 0, 0, 0, 1);
const ELSEWHERE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xc, 0, 0, 0, 0, 0, 1);

struct Carrier {
    _sandbox: Sandbox,
    loaded: Loaded,
    ifindex: u32,
    host: HostNs,
}

impl Carrier {
    fn new() -> Carrier {
        let host = HostNs::enter();
        let ns = &host.ns.name;
        sh(&format!(
            "ip link add ul0 type veth peer name ul1 && ip link set ul0 up && ip link set ul1 up && \
             ip addr add {NODE}/64 dev ul0 nodad && \
             ip -6 route add {SID}/128 encap seg6local action End.DX4 nh4 0.0.0.0 dev ul0 && \
             ip -6 route add default via fc00:a::2 dev ul0 && \
             ip netns exec {ns} sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.ul0.forwarding=1"
        ));
        let ifindex = microseg::kernel::netdev::ifindex("ul0").unwrap();
        let sandbox = Sandbox::new("srv6");
        let st = KernelState::new(Srv6::new().spec().clone(), &sandbox.settings.bpf_root, &sandbox.settings.run_dir);
        KernelState::check_bpf_root(&sandbox.settings.bpf_root).unwrap();
        let loaded = st.install(false, &|_| Ok(())).unwrap();
        loaded.map(&SRV6_PEERS).unwrap().set(&Peer6Key { addr: PEER.octets() }, &PeerValue { allowed: 1 }).unwrap();
        Carrier { _sandbox: sandbox, loaded, ifindex, host }
    }

    /// Runs `prog` on `pkt` with `mark`: verdict, mark after, packet after.
    fn run(&self, prog: &str, pkt: &[u8], mark: u32) -> (i32, u32, Vec<u8>) {
        let r = sys::prog_test_run(self.loaded.prog(prog).fd.as_fd(), pkt, &SkBuffCtx::new(self.ifindex, mark), 1)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e}", pkt.len()));
        (r.retval, r.ctx_out.mark(), r.data_out)
    }

    fn send(&self, pkt: &[u8], mark: u32) -> (i32, u32, Vec<u8>) {
        self.run("srv6_send", pkt, mark)
    }

    fn receive(&self, pkt: &[u8], mark: u32) -> (i32, u32) {
        let (v, m, _) = self.run("srv6_receive", pkt, mark);
        (v, m)
    }

    fn counters(&self) -> Srv6Counters {
        self.loaded.map(&SRV6_STATS).unwrap().get_summed(&0).unwrap()
    }
}

/// A segment routing header: `segments` (the list in wire order), the
/// given tag, segments-left and last-entry; hdrlen as the list needs
/// unless `hdrlen` says otherwise.
fn srh_with(tag: u16, segments_left: u8, last_entry: u8, hdrlen: Option<u8>, segments: &[Ipv6Addr]) -> (u8, Vec<u8>) {
    let hdrlen = hdrlen.unwrap_or((segments.len() * 2) as u8);
    let mut h = vec![0, hdrlen, 4, segments_left, last_entry, 0];
    h.extend_from_slice(&tag.to_be_bytes());
    for s in segments {
        h.extend_from_slice(&s.octets());
    }
    (43, h)
}

/// A consistent one-segment SRH toward `dst`, as `mode encap` writes it.
fn srh_to(dst: Ipv6Addr, tag: u16) -> (u8, Vec<u8>) {
    srh_with(tag, 0, 0, None, &[dst])
}

/// The inner packet: IPv4/UDP to a guest.
fn inner() -> Vec<u8> {
    udp_frame(mac(1), mac(2), ip(1), ip(2), b"inner-payload")[14..].to_vec()
}

/// IPv6 from `src` to `dst` with `ext`, carrying IPv4 (`mode encap`).
fn srv6(tags: &[(u16, u16)], src: Ipv6Addr, dst: Ipv6Addr, ext: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let f = tags.iter().fold(Frame::new(mac(1), mac(2)), |f, (t, v)| f.tag(*t, *v));
    f.ip(IpAddr::V6(src), IpAddr::V6(dst), 4, ext, &inner())
}

/// Offset of the tag in a frame whose SRH follows `before` bytes of extension headers.
fn tag_at(tags: usize, before: usize) -> usize {
    14 + 4 * tags + 40 + before + 6
}

fn stacks() -> Vec<Vec<(u16, u16)>> {
    vec![
        vec![],
        vec![(TPID_8021Q, 0)],
        vec![(TPID_8021Q, 7)],
        vec![(TPID_8021AD, 0), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 100), (TPID_8021Q, 5), (TPID_8021Q, 0)],
        vec![(TPID_8021AD, 0), (TPID_8021AD, 0), (TPID_8021Q, 0), (TPID_8021Q, 9)],
    ]
}

#[test]
fn send_writes_the_low_16_bits_of_the_mark_into_the_tag() {
    let c = Carrier::new();
    for tags in stacks() {
        let pkt = srv6(&tags, NODE, SID, &[srh_to(PEER, 0xdead)]);
        let (v, mark, out) = c.send(&pkt, 0x8048_1234);
        assert_eq!((v, mark), (NEXT, 0x8048_1234), "the mark itself is left alone ({tags:x?})");
        let at = tag_at(tags.len(), 0);
        assert_eq!(&out[at..at + 2], &[0x12, 0x34], "tag from the low 16 bits ({tags:x?})");
        let mut want = pkt.clone();
        want[at..at + 2].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(out, want, "nothing but the tag changes ({tags:x?})");
    }
    // Behind other extension headers, and the unstamped group writes 0.
    let pkt = srv6(&[], NODE, PEER, &[hop_by_hop(), dest_opts(), srh_to(PEER, 0xbeef)]);
    let (_, _, out) = c.send(&pkt, 0x8000_0000);
    let at = tag_at(0, 16);
    assert_eq!(&out[at..at + 2], &[0, 0]);
    assert_eq!(c.counters().tagged, stacks().len() as u64 + 1);
}

#[test]
fn send_leaves_everything_else_untouched() {
    let c = Carrier::new();
    let f = Frame::new(mac(1), mac(2));
    let mut untouched = vec![
        ("IPv4", udp_frame(mac(1), mac(2), ip(1), ip(2), b"v4")),
        ("IPv6/UDP", f.udp(IpAddr::V6(NODE), IpAddr::V6(PEER), 1, 2, b"v6")),
        ("IPv6 in IPv6 without SRH", srv6(&[], NODE, PEER, &[])),
        ("routing header type 2", srv6(&[], NODE, PEER, &[(43, vec![0, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])])),
        ("SRv6 the node forwards (a peer's source)", srv6(&[], PEER, ELSEWHERE, &[srh_to(ELSEWHERE, 7)])),
        ("SRv6 the node forwards (a stranger's)", srv6(&[], STRANGER, PEER, &[srh_to(PEER, 7)])),
        ("an inconsistent SRH", srv6(&[], NODE, PEER, &[srh_with(7, 3, 0, None, &[PEER])])),
    ];
    // Cut short at every length inside the headers. (Behind a VLAN tag: the
    // kernel refuses test runs of an IPv6 frame shorter than its header.)
    let whole = srv6(&[(TPID_8021Q, 0)], NODE, PEER, &[srh_to(PEER, 7)]);
    for len in 15..tag_at(1, 0) + 2 {
        untouched.push(("truncated", whole[..len].to_vec()));
    }
    for (what, pkt) in &untouched {
        let (v, mark, out) = c.send(pkt, 0x1234);
        assert_eq!((v, mark), (NEXT, 0x1234), "{what}");
        assert_eq!(&out, pkt, "{what} ({} bytes) was changed", pkt.len());
    }
    assert_eq!(c.counters().tagged, 0);
}

#[test]
fn receive_restores_the_group_from_a_peer_for_this_node() {
    let c = Carrier::new();
    for tags in stacks() {
        for dst in [SID, NODE] {
            let pkt = srv6(&tags, PEER, dst, &[srh_to(dst, 0x0014)]);
            assert_eq!(c.receive(&pkt, 0), (NEXT, 0x14), "{tags:x?} to {dst}");
            // Upper bits kept, an old group replaced.
            assert_eq!(c.receive(&pkt, 0x8000_0007), (NEXT, 0x8000_0014), "{tags:x?} to {dst}");
        }
    }
    // Behind a hop-by-hop header; with segments left (an End on the way).
    let pkt = srv6(&[], PEER, SID, &[hop_by_hop(), srh_with(0x0b, 1, 1, None, &[PEER, SID])]);
    assert_eq!(c.receive(&pkt, 0x4000_0000), (NEXT, 0x4000_000b));
    let n = stacks().len() as u64 * 4 + 1;
    let got = c.counters();
    assert_eq!((got.restored, got.dropped, got.invalid, got.transit), (n, 0, 0, 0));
}

#[test]
fn receive_passes_a_peers_srv6_for_another_node_untouched() {
    let c = Carrier::new();
    let pkt = srv6(&[], PEER, ELSEWHERE, &[srh_to(ELSEWHERE, 0x14)]);
    assert_eq!(c.receive(&pkt, 0x8000_0007), (NEXT, 0x8000_0007));
    assert_eq!(c.counters().transit, 1);
    // Without IPv6 forwarding the node forwards nothing: whatever it takes is its own.
    sh(&format!("ip netns exec {} sysctl -qw net.ipv6.conf.all.forwarding=0 net.ipv6.conf.ul0.forwarding=0", c.host.ns.name));
    assert_eq!(c.receive(&pkt, 0x8000_0007), (NEXT, 0x8000_0014));
}

#[test]
fn receive_drops_srv6_from_a_non_peer_behind_any_vlan_stack() {
    let c = Carrier::new();
    let mut n = 0;
    for tags in stacks() {
        for dst in [SID, NODE, ELSEWHERE] {
            let pkt = srv6(&tags, STRANGER, dst, &[srh_to(dst, 0x14)]);
            assert_eq!(c.receive(&pkt, 0), (DROP, 0), "{tags:x?} to {dst}");
            n += 1;
        }
        // Its other IPv6 and IPv4 pass: the carrier judges SRv6 only.
        let g = tags.iter().fold(Frame::new(mac(1), mac(2)), |f, (t, v)| f.tag(*t, *v));
        assert_eq!(c.receive(&g.udp(IpAddr::V6(STRANGER), IpAddr::V6(NODE), 1, 2, b"x"), 5), (NEXT, 5));
        assert_eq!(c.receive(&srv6(&tags, STRANGER, SID, &[]), 5), (NEXT, 5), "IPv4 in IPv6 without SRH");
    }
    assert_eq!(c.receive(&udp_frame(mac(1), mac(2), ip(1), ip(2), b"v4"), 5), (NEXT, 5));
    // Behind extension headers, and behind more than are looked through.
    let pkt = srv6(&[], STRANGER, SID, &[hop_by_hop(), dest_opts(), srh_to(SID, 0x14)]);
    assert_eq!(c.receive(&pkt, 0), (DROP, 0));
    let five = [hop_by_hop(), dest_opts(), dest_opts(), dest_opts(), dest_opts(), srh_to(SID, 0x14)];
    assert_eq!(c.receive(&srv6(&[], STRANGER, SID, &five), 0), (DROP, 0), "SRH behind five extension headers");
    assert_eq!(c.counters().dropped, n + 2);
    // More VLAN tags than are looked through: dropped whatever follows.
    let deep = [(TPID_8021Q, 0); 5];
    let pkt = srv6(&deep, PEER, SID, &[srh_to(SID, 0x14)]);
    assert_eq!(c.receive(&pkt, 0), (DROP, 0));
    assert_eq!(c.counters().invalid, 1);
}

#[test]
fn receive_drops_inconsistent_or_truncated_headers_and_never_reads_past_them() {
    let c = Carrier::new();
    let bad = [
        ("segments-left beyond the list", srh_with(0x14, 2, 0, None, &[SID])),
        ("the list longer than the header", srh_with(0x14, 0, 1, Some(2), &[SID, SID])),
        ("header length beyond the packet", srh_with(0x14, 0, 0, Some(8), &[SID])),
        ("odd header length, list cut", srh_with(0x14, 0, 0, Some(1), &[])),
    ];
    for (what, h) in &bad {
        for src in [PEER, STRANGER] {
            let pkt = srv6(&[], src, SID, std::slice::from_ref(h));
            assert_eq!(c.receive(&pkt, 0x8000_0000), (DROP, 0x8000_0000), "{what} from {src}");
        }
    }
    // Reduced encapsulation: segments-left one past the list is consistent.
    let red = srv6(&[], PEER, SID, &[srh_with(0x14, 1, 0, None, &[SID])]);
    assert_eq!(c.receive(&red, 0), (NEXT, 0x14));
    // Cut at every length (behind a VLAN tag, see above): before the
    // extension headers there is nothing the stack would take (passed);
    // inside them, dropped with the mark unchanged; once the SRH is whole
    // (only the inner packet cut), its tag counts.
    let whole = srv6(&[(TPID_8021Q, 0)], PEER, SID, &[hop_by_hop(), srh_to(SID, 0x14)]);
    let ext_at = 14 + 4 + 40;
    let srh_end = ext_at + 8 + 24;
    for len in 15..whole.len() {
        let want = match len {
            l if l < ext_at => (NEXT, 0x8000_0000),
            l if l < srh_end => (DROP, 0x8000_0000),
            _ => (NEXT, 0x8000_0014),
        };
        assert_eq!(c.receive(&whole[..len], 0x8000_0000), want, "cut at {len}");
    }
    assert_eq!(c.receive(&whole, 0x8000_0000), (NEXT, 0x8000_0014), "the whole packet");
}
