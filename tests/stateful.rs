//! The stateful L3/L4 data plane under `BPF_PROG_TEST_RUN`: every verdict
//! path, with the policy entries the resolver produces from a real config.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use microseg::kernel::state::{KernelState, Loaded};
use microseg::kernel::sys::{self, SkBuffCtx};
use microseg::kernel::ringbuf::RingReader;
use microseg::subsystems::microseg::maps::{
    AddrKey, AddrValue, Event, EventSettings, EventState, FlowAdmission, FlowKey, NicCounters, NicKey, NicValue, PairKey, PolicyValue,
    TunnelSettings, EVENTS, EVENT_AUDIT, EVENT_CONFIG, FLOW_CACHE, EVENT_DROP, EVENT_STATE, FLOWS, NIC_F_AUDIT, NIC_STATS,
    FLOW_ADMISSION, PAIR_VERDICTS, POLICY, REASON_RULE,
    REASON_TUNNEL, RULE_HITS, TAP_TO_GROUP, TUNNEL_CONFIG, UNDERLAY_ADDRS,
};
use microseg::subsystems::microseg::{resolve, rules};

use common::packet::*;
use common::*;

const NEXT: i32 = -1;
const DROP: i32 = 2;
/// Test runs use the loopback device: the "guest NIC" is ifindex 1.
const NIC: u32 = 1;

/// Groups: a (1), b (2, the NIC's group), c (3). Rules: a -> b tcp/80 and
/// udp/5000:5099 allow, a -> b icmp allow, c -> b tcp allow except tcp/22.
const POLICY_JSON: &str = r#"{"microseg": {"ids": {
    "a": {"type": "group", "mark": 1}, "b": {"type": "group", "mark": 2}, "c": {"type": "group", "mark": 3},
    "web": {"type": "rule", "src": "a", "dst": "b", "proto": "tcp", "dport": "80", "allow": 1},
    "range": {"type": "rule", "src": "a", "dst": "b", "proto": "udp", "dport": "5000:5099", "allow": 1},
    "ping": {"type": "rule", "src": "a", "dst": "b", "proto": "icmp", "allow": 1},
    "ping6": {"type": "rule", "src": "a", "dst": "b", "proto": "icmpv6", "allow": 1},
    "ctcp": {"type": "rule", "src": "c", "dst": "b", "proto": "tcp", "allow": 1},
    "nossh": {"type": "rule", "src": "c", "dst": "b", "proto": "tcp", "dport": "22", "allow": 0}}}}"#;

struct Plane {
    _sandbox: Sandbox,
    loaded: Loaded,
}

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

impl Plane {
    fn new() -> Plane {
        let sandbox = Sandbox::new("stateful");
        let ms = sandbox.microseg();
        KernelState::check_bpf_root(&sandbox.settings.bpf_root).unwrap();
        let loaded = ms.policy().install(false, &|_| Ok(())).unwrap();
        loaded.map(&TAP_TO_GROUP).unwrap().set(&NicKey { ifindex: NIC }, &NicValue { mark: 2, flags: 0 }).unwrap();
        let plane = Plane { _sandbox: sandbox, loaded };
        plane.set_policy(POLICY_JSON);
        plane
    }

    /// Replaces the policy with the one `json` resolves to, as a full pass
    /// does: new entries, stale ones removed, the generation raised.
    fn set_policy(&self, json: &str) {
        let policy = resolve::resolve(&microseg::config::parse(json.as_bytes()).unwrap(), 1 << 20).unwrap();
        let map = self.loaded.map(&POLICY).unwrap();
        let stale: Vec<_> = map.keys().unwrap().into_iter().filter(|k| !policy.entries.contains_key(k)).collect();
        for (k, v) in &policy.entries {
            map.set(k, v).unwrap();
        }
        for k in stale {
            map.remove(&k).unwrap();
        }
        rules::policy_changed(&self.loaded).unwrap();
    }

    fn run(&self, prog: &str, pkt: &[u8], mark: u32) -> i32 {
        sys::prog_test_run(self.loaded.prog(prog).fd.as_fd(), pkt, &SkBuffCtx::new(NIC, mark), 1).unwrap().retval
    }

    /// Toward the guest (group b), from group `src`.
    fn to_guest(&self, src: u32, pkt: &[u8]) -> i32 {
        self.run("microseg_enforce", pkt, src)
    }

    /// From the guest: stamped and tracked.
    fn sent_by_guest(&self, pkt: &[u8]) -> i32 {
        self.run("microseg_stamp", pkt, 0)
    }

    fn flows(&self) -> Vec<FlowKey> {
        self.loaded.map(&FLOWS).unwrap().keys().unwrap()
    }
}

fn eth_in() -> Frame {
    Frame::new(mac(1), mac(2))
}
fn eth_out() -> Frame {
    Frame::new(mac(2), mac(1))
}
fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

#[test]
fn forward_verdicts_at_every_l4_specificity() {
    let p = Plane::new();
    let tcp_to = |src: u32, port| p.to_guest(src, &eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(40000, port, TCP_SYN, b"")));
    assert_eq!(tcp_to(1, 80), NEXT, "a -> b tcp/80: a dport rule");
    assert_eq!(tcp_to(1, 81), DROP, "a -> b tcp/81: no rule");
    assert_eq!(tcp_to(3, 443), NEXT, "c -> b tcp: a proto-only rule");
    assert_eq!(tcp_to(3, 22), DROP, "c -> b tcp/22: a more specific dport deny");
    assert_eq!(tcp_to(0, 80), DROP, "unstamped: no rule");
    let udp_to = |port| p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 40000, port, b"x"));
    assert_eq!((udp_to(4999), udp_to(5000), udp_to(5050), udp_to(5099), udp_to(5100)), (DROP, NEXT, NEXT, NEXT, DROP));
    assert_eq!(p.to_guest(1, &eth_in().ip(v4(PEER), v4(GUEST), 1, &[], &icmp(8, &echo(7, 1)))), NEXT, "icmp rule");
    assert_eq!(p.to_guest(3, &eth_in().ip(v4(PEER), v4(GUEST), 1, &[], &icmp(8, &echo(7, 1)))), DROP);
    let ping6 = eth_in().ip(IpAddr::V6(PEER6), IpAddr::V6(GUEST6), 58, &[], &icmp(128, &echo(7, 1)));
    assert_eq!(p.to_guest(1, &ping6), NEXT, "icmpv6 rule");
    // Not IP: only rules without proto, and there are none here.
    let mut other = eth_in().udp(v4(PEER), v4(GUEST), 1, 80, b"x");
    other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    assert_eq!(p.to_guest(1, &other), DROP, "non-IP frame");
}

#[test]
fn replies_pass_through_the_flow_table_and_nothing_else_does() {
    let p = Plane::new();
    // The guest (b) opens TCP and UDP flows toward a, which has no rule back.
    assert_eq!(p.sent_by_guest(&eth_out().ip(v4(GUEST), v4(PEER), 6, &[], &tcp(33333, 8080, TCP_SYN, b""))), NEXT);
    assert_eq!(p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), 44444, 53, b"q")), NEXT);
    assert_eq!(p.flows().len(), 2, "both flows recorded: {:?}", p.flows());
    let reply_tcp = |sport, dport| eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(sport, dport, TCP_SYN | TCP_ACK, b""));
    assert_eq!(p.to_guest(1, &reply_tcp(8080, 33333)), NEXT, "the TCP reply");
    assert_eq!(p.to_guest(3, &reply_tcp(8080, 33333)), NEXT, "a reply passes whatever the stamp");
    assert_eq!(p.to_guest(1, &reply_tcp(8080, 33334)), DROP, "another port: not a reply");
    assert_eq!(p.to_guest(1, &reply_tcp(8081, 33333)), DROP);
    let other_peer = Ipv4Addr::new(10, 77, 0, 9);
    assert_eq!(p.to_guest(1, &eth_in().ip(v4(other_peer), v4(GUEST), 6, &[], &tcp(8080, 33333, TCP_ACK, b""))), DROP);
    assert_eq!(p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 53, 44444, b"r")), NEXT, "the UDP reply");
    assert_eq!(p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 53, 44444, b"r")[..]), NEXT);
    // ICMP echo: the reply with the same identifier, nothing else.
    p.sent_by_guest(&eth_out().ip(v4(GUEST), v4(PEER), 1, &[], &icmp(8, &echo(99, 1))));
    let icmp_in = |kind, id| eth_in().ip(v4(PEER), v4(GUEST), 1, &[], &icmp(kind, &echo(id, 1)));
    assert_eq!(p.to_guest(3, &icmp_in(0, 99)), NEXT, "echo reply");
    assert_eq!(p.to_guest(3, &icmp_in(0, 98)), DROP, "other identifier");
    assert_eq!(p.to_guest(3, &icmp_in(8, 99)), DROP, "a request with that identifier is no reply");
    // IPv6 likewise.
    p.sent_by_guest(&eth_out().udp(IpAddr::V6(GUEST6), IpAddr::V6(PEER6), 5353, 53, b"q"));
    assert_eq!(p.to_guest(3, &eth_in().udp(IpAddr::V6(PEER6), IpAddr::V6(GUEST6), 53, 5353, b"r")), NEXT);
    assert_eq!(p.to_guest(3, &eth_in().udp(IpAddr::V6(PEER6), IpAddr::V6(GUEST6), 53, 5354, b"r")), DROP);
    // IPv4 flows are keyed by their IPv4-mapped IPv6 addresses: an IPv6
    // packet carrying those (never valid on the wire) answers nothing and
    // opens nothing.
    let mapped = |a: Ipv4Addr| IpAddr::V6(a.to_ipv6_mapped());
    assert_eq!(p.to_guest(1, &eth_in().udp(mapped(PEER), mapped(GUEST), 53, 44444, b"r")), DROP, "IPv6 posing as the UDP reply");
    assert_eq!(p.to_guest(1, &eth_in().ip(mapped(PEER), mapped(GUEST), 6, &[], &tcp(8080, 33333, TCP_ACK, b""))), DROP);
    let flows = p.flows().len();
    p.sent_by_guest(&eth_out().udp(mapped(GUEST), mapped(PEER), 44445, 53, b"q"));
    assert_eq!(p.flows().len(), flows, "an IPv6 packet with IPv4-mapped addresses was recorded as a flow");
    assert_eq!(p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 53, 44445, b"r")), DROP, "an IPv4 answer to it");
}

#[test]
fn icmp_errors_pass_only_when_they_quote_a_tracked_flow() {
    let p = Plane::new();
    let sent = eth_out().udp(v4(GUEST), v4(PEER), 40001, 9999, b"big");
    p.sent_by_guest(&sent);
    let quoted = |pkt: &[u8]| pkt[14..14 + 28].to_vec();
    let router = Ipv4Addr::new(10, 77, 0, 254);
    let err = |kind, inner: Vec<u8>| eth_in().ip(v4(router), v4(GUEST), 1, &[], &icmp(kind, &[[0u8; 4].as_slice(), &inner].concat()));
    assert_eq!(p.to_guest(0, &err(3, quoted(&sent))), NEXT, "fragmentation needed for a tracked flow (PMTU)");
    assert_eq!(p.to_guest(0, &err(11, quoted(&sent))), NEXT, "time exceeded");
    let untracked = eth_out().udp(v4(GUEST), v4(PEER), 40002, 9999, b"big");
    assert_eq!(p.to_guest(0, &err(3, quoted(&untracked))), DROP, "quotes no flow of the guest");
    // ICMPv6 packet too big.
    let sent6 = eth_out().udp(IpAddr::V6(GUEST6), IpAddr::V6(PEER6), 40003, 9999, b"big");
    p.sent_by_guest(&sent6);
    let quoted6 = |pkt: &[u8]| pkt[14..14 + 48].to_vec();
    let err6 = |inner: Vec<u8>| {
        eth_in().ip(IpAddr::V6(PEER6), IpAddr::V6(GUEST6), 58, &[], &icmp(2, &[[0u8, 0, 5, 0].as_slice(), &inner].concat()))
    };
    assert_eq!(p.to_guest(0, &err6(quoted6(&sent6))), NEXT, "packet too big for a tracked flow");
    let untracked6 = eth_out().udp(IpAddr::V6(GUEST6), IpAddr::V6(PEER6), 40004, 9999, b"big");
    assert_eq!(p.to_guest(0, &err6(quoted6(&untracked6))), DROP);
    // An ICMPv6 error quoting the tracked IPv4 flow's packet as IPv6 with
    // IPv4-mapped addresses: the keys would be equal, the flow is not its.
    let posing = eth_out().udp(IpAddr::V6(GUEST.to_ipv6_mapped()), IpAddr::V6(PEER.to_ipv6_mapped()), 40001, 9999, b"big");
    assert_eq!(p.to_guest(0, &err6(quoted6(&posing))), DROP, "an IPv6 quote posing as the IPv4 flow");
}

#[test]
fn arp_and_nd_follow_the_policy() {
    let p = Plane::new();
    let request = |sender| arp(mac(1), [0xff; 6], 1, sender, GUEST);
    // a may open something toward b: its requests reach the guest; c too; an unstamped one not.
    assert_eq!(p.to_guest(1, &request(PEER)), NEXT, "a -> b allows something");
    assert_eq!(p.to_guest(3, &request(PEER)), NEXT, "c -> b allows something");
    assert_eq!(p.to_guest(0, &request(PEER)), DROP, "unstamped -> b allows nothing: a scan finds nothing");
    // Replies pass only when the guest asked.
    let reply = arp(mac(1), mac(2), 2, PEER, GUEST);
    assert_eq!(p.to_guest(0, &reply), DROP, "unsolicited reply");
    assert_eq!(p.sent_by_guest(&arp(mac(2), [0xff; 6], 1, GUEST, PEER)), NEXT);
    assert_eq!(p.to_guest(0, &reply), NEXT, "the guest asked");
    // A requester the guest talks to may resolve it, whatever the policy.
    let talker = Ipv4Addr::new(10, 77, 0, 50);
    assert_eq!(p.to_guest(0, &request(talker)), DROP);
    p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(talker), 1234, 53, b"q"));
    assert_eq!(p.to_guest(0, &request(talker)), NEXT, "the guest has a flow with the requester");

    // Neighbour discovery: solicitations like ARP requests, advertisements when asked.
    let ns = |src: Ipv6Addr, target: Ipv6Addr| {
        eth_in().ip(IpAddr::V6(src), "ff02::1:ff00:2".parse().unwrap(), 58, &[], &icmp(135, &[[0u8; 4].as_slice(), &target.octets()].concat()))
    };
    let na = |src: Ipv6Addr| eth_in().ip(IpAddr::V6(src), IpAddr::V6(GUEST6), 58, &[], &icmp(136, &[[0x60u8, 0, 0, 0].as_slice(), &src.octets()].concat()));
    assert_eq!(p.to_guest(1, &ns(PEER6, GUEST6)), NEXT);
    assert_eq!(p.to_guest(0, &ns(PEER6, GUEST6)), DROP);
    assert_eq!(p.to_guest(0, &na(PEER6)), DROP, "unsolicited advertisement");
    let asked = eth_out().ip(IpAddr::V6(GUEST6), "ff02::1:ff00:1".parse().unwrap(), 58, &[], &icmp(135, &[[0u8; 4].as_slice(), &PEER6.octets()].concat()));
    p.sent_by_guest(&asked);
    assert_eq!(p.to_guest(0, &na(PEER6)), NEXT, "the guest solicited it");
}

#[test]
fn flows_are_created_refreshed_and_expire() {
    let p = Plane::new();
    let out = eth_out().udp(v4(GUEST), v4(PEER), 50000, 53, b"q");
    p.sent_by_guest(&out);
    let map = p.loaded.map(&FLOWS).unwrap();
    let keys = map.keys().unwrap();
    assert_eq!(keys.len(), 1);
    let k = keys[0];
    assert_eq!((k.ifindex, k.proto, k.sport, k.dport), (NIC, 17, 50000, 53));
    assert_eq!(&k.saddr[12..], &GUEST.octets());
    let first = map.get(&k).unwrap().unwrap();
    // Within a second the entry is only looked up, not rewritten.
    p.sent_by_guest(&out);
    assert_eq!(map.get(&k).unwrap().unwrap(), first);
    // Older than that: refreshed.
    let mut old = first;
    old.last_seen -= 2_000_000_000;
    map.set(&k, &old).unwrap();
    forget_flow_cache(&p.loaded);
    p.sent_by_guest(&out);
    assert!(map.get(&k).unwrap().unwrap().last_seen > old.last_seen, "not refreshed");
    // Idle past the UDP timeout: a reply no longer passes.
    let reply = eth_in().udp(v4(PEER), v4(GUEST), 53, 50000, b"r");
    assert_eq!(p.to_guest(3, &reply), NEXT);
    let mut idle = map.get(&k).unwrap().unwrap();
    idle.last_seen -= 31_000_000_000;
    map.set(&k, &idle).unwrap();
    forget_flow_cache(&p.loaded);
    assert_eq!(p.to_guest(3, &reply), DROP, "an expired flow");
    // TCP after FIN: short timeout.
    let syn = eth_out().ip(v4(GUEST), v4(PEER), 6, &[], &tcp(40000, 22, TCP_SYN, b""));
    p.sent_by_guest(&syn);
    p.sent_by_guest(&eth_out().ip(v4(GUEST), v4(PEER), 6, &[], &tcp(40000, 22, TCP_FIN | TCP_ACK, b"")));
    let tk = map.keys().unwrap().into_iter().find(|k| k.proto == 6).unwrap();
    let mut closing = map.get(&tk).unwrap().unwrap();
    assert_eq!(closing.flags & 1, 1, "FIN marks the flow closing");
    closing.last_seen -= 11_000_000_000;
    map.set(&tk, &closing).unwrap();
    forget_flow_cache(&p.loaded);
    // (Unstamped: no rule lets it in, only the flow could.)
    let after_fin = eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(22, 40000, TCP_ACK, b""));
    assert_eq!(p.to_guest(0, &after_fin), DROP, "closed and idle past the short timeout");
    // An unassigned NIC opens nothing.
    p.loaded.map(&TAP_TO_GROUP).unwrap().remove(&NicKey { ifindex: NIC }).unwrap();
    let before = map.keys().unwrap().len();
    p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), 50001, 53, b"q"));
    assert_eq!(map.keys().unwrap().len(), before);
}

#[test]
fn a_revoked_rule_stops_an_established_flow_at_once() {
    let p = Plane::new();
    let syn = eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(40000, 80, TCP_SYN, b""));
    let data = eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(40000, 80, TCP_ACK, b"data"));
    // a connects to the guest's port 80, the guest answers, data flows.
    assert_eq!(p.to_guest(1, &syn), NEXT);
    p.sent_by_guest(&eth_out().ip(v4(GUEST), v4(PEER), 6, &[], &tcp(80, 40000, TCP_SYN | TCP_ACK, b"")));
    assert_eq!(p.to_guest(1, &data), NEXT);
    p.sent_by_guest(&eth_out().ip(v4(GUEST), v4(PEER), 6, &[], &tcp(80, 40000, TCP_ACK, b"ok")));
    let flows = p.loaded.map(&FLOWS).unwrap().entries().unwrap();
    assert!(flows.values().all(|v| v.flags & 2 != 0), "the guest's answers opened a flow of its own: {flows:?}");
    // The rule goes: the next packet in the opened direction is judged anew.
    p.set_policy(&POLICY_JSON.replace(r#""dport": "80""#, r#""dport": "8080""#));
    assert_eq!(p.to_guest(1, &data), DROP, "the flow the rule let in is stopped");
    // UDP likewise: a -> b udp/5000 let in and answered, then revoked.
    let query = eth_in().udp(v4(PEER), v4(GUEST), 41000, 5000, b"q");
    p.set_policy(POLICY_JSON);
    assert_eq!(p.to_guest(1, &query), NEXT);
    p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), 5000, 41000, b"a"));
    assert_eq!(p.to_guest(1, &query), NEXT);
    p.set_policy(&POLICY_JSON.replace(r#""dport": "5000:5099""#, r#""dport": "6000""#));
    assert_eq!(p.to_guest(1, &query), DROP, "a revoked UDP flow is stopped despite the guest's answers");
}

/// The flow cache answers an established flow's packets from what the
/// flow table and the policy said, and only while the policy generation is
/// the one it was cached under: a policy change that did not raise it is
/// not seen by the flow on this CPU, raising it is. (User space raises it
/// after every change; this shows that the cache is used, and what for.)
#[test]
fn the_flow_cache_answers_only_under_the_policy_generation_it_was_made_in() {
    stay_on_this_cpu();
    let p = Plane::new();
    p.loaded.map(&NIC_STATS).unwrap().create_zeroed_per_cpu(&NicKey { ifindex: NIC }).unwrap();
    let data = eth_in().udp(v4(PEER), v4(GUEST), 41000, 5000, b"q");
    assert_eq!(p.to_guest(1, &data), NEXT, "udp/5000 from a is allowed");
    // Every policy entry goes, the generation stays: the cached verdict holds.
    let map = p.loaded.map(&POLICY).unwrap();
    for k in map.keys().unwrap() {
        map.remove(&k).unwrap();
    }
    let before = nic_counters(&p);
    assert_eq!(p.to_guest(1, &data), NEXT, "answered from the cache");
    let after = nic_counters(&p);
    assert_eq!((after.allowed - before.allowed, after.dropped - before.dropped), (1, 0), "counted as allowed");
    // Another source group or another port is not the cached flow.
    assert_eq!(p.to_guest(3, &data), DROP, "another source group");
    assert_eq!(p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 41000, 5001, b"q")), DROP, "another port");
    // Raised: the same flow is judged by the (now empty) policy.
    rules::policy_changed(&p.loaded).unwrap();
    assert_eq!(p.to_guest(1, &data), DROP, "the generation changed");
}


/// The flow cache spreads flows over its slots: 64 flows of one guest that
/// differ only in a port, or only in the peer's address, land in at least
/// 52 distinct slots of 512 (a uniform hash leaves about 60: the birthday
/// bound); a degenerate hash would put them in a few and make every packet
/// take the slow path.
#[test]
fn the_flow_cache_spreads_flows_over_its_slots() {
    stay_on_this_cpu();
    let cpu = unsafe { libc::sched_getcpu() } as usize;
    for by_port in [true, false] {
        let p = Plane::new();
        p.loaded.map(&TAP_TO_GROUP).unwrap().set(&NicKey { ifindex: NIC }, &NicValue { mark: 2, flags: 0 }).unwrap();
        for i in 0..64u16 {
            let pkt = if by_port {
                eth_out().udp(v4(GUEST), v4(PEER), 40000 + i, 53, b"q")
            } else {
                eth_out().udp(v4(GUEST), v4(Ipv4Addr::new(10, 78, (i / 8) as u8, (i % 8) as u8 + 1)), 40000, 53, b"q")
            };
            p.sent_by_guest(&pkt);
        }
        let cache = p.loaded.map(&FLOW_CACHE).unwrap();
        let used = (0..512u32).filter(|slot| cache.get_per_cpu(slot).unwrap().unwrap()[cpu].flow_seen != 0).count();
        assert!(used >= 52, "64 flows (by {}) in {used} slots", if by_port { "port" } else { "address" });
        println!("64 flows differing by {}: {used} slots", if by_port { "port" } else { "address" });
    }
}

/// Per-CPU counters of the guest NIC, summed.
fn nic_counters(p: &Plane) -> NicCounters {
    p.loaded.map(&NIC_STATS).unwrap().get_summed(&NicKey { ifindex: NIC }).unwrap()
}

#[test]
fn a_nic_adds_flows_no_faster_than_its_admission_rate() {
    let p = Plane::new();
    p.loaded.map(&NIC_STATS).unwrap().create_zeroed_per_cpu(&NicKey { ifindex: NIC }).unwrap();
    const HOUR: u64 = 3_600_000_000_000;
    let admission = |cost_ns, burst_ns| p.loaded.map(&FLOW_ADMISSION).unwrap().set(&0, &FlowAdmission { cost_ns, burst_ns }).unwrap();
    admission(HOUR, 0);
    let open = |sport| p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), sport, 53, b"q"));
    let answer = |dport| p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 53, dport, b"r"));
    assert_eq!(open(40000), NEXT);
    assert_eq!((p.flows().len(), nic_counters(&p).unrecorded), (1, 0), "the first new flow is admitted");
    assert_eq!(open(40001), NEXT, "a flow past the rate is still sent");
    assert_eq!((p.flows().len(), nic_counters(&p).unrecorded), (1, 1), "but not recorded");
    assert_eq!((answer(40000), answer(40001)), (NEXT, DROP), "only the recorded flow is answered");
    assert_eq!(open(40000), NEXT);
    assert_eq!(nic_counters(&p).unrecorded, 1, "a known flow costs nothing");
    // Flows the policy lets in toward the NIC are delivered; their inbound
    // marks have a budget of their own, so a flood toward the guest does not
    // keep it from opening flows.
    let syn_in = |sport| p.to_guest(1, &eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(sport, 80, TCP_SYN, b"")));
    assert_eq!((syn_in(50000), syn_in(50001)), (NEXT, NEXT));
    assert_eq!((p.flows().len(), nic_counters(&p).unrecorded), (2, 2), "one inbound mark, one refused");
    // A burst of two costs: two more flows now, then none.
    admission(HOUR, 2 * HOUR);
    for sport in [40002, 40003, 40004] {
        open(sport);
    }
    assert_eq!((p.flows().len(), nic_counters(&p).unrecorded), (4, 3));
    // No limit.
    admission(0, 0);
    for sport in 41000..41100 {
        open(sport);
    }
    assert_eq!((p.flows().len(), nic_counters(&p).unrecorded), (104, 3));
}

#[test]
fn every_verdict_is_counted_and_audit_mode_delivers_what_would_drop() {
    let p = Plane::new();
    p.loaded.map(&NIC_STATS).unwrap().create_zeroed_per_cpu(&NicKey { ifindex: NIC }).unwrap();
    let hits = p.loaded.map(&RULE_HITS).unwrap();
    // The plane's entries carry (rule index + 1) as the slot + 1: rule i counts in slot i.
    let cfg = microseg::config::parse(POLICY_JSON.as_bytes()).unwrap();
    let rules = resolve::resolve(&cfg, 1 << 20).unwrap().rules;
    for slot in 0..rules.len() as u32 {
        hits.create_zeroed_per_cpu(&slot).unwrap();
    }
    let hits_of = |id: &str| -> u64 {
        let slot = rules.iter().position(|r| r == id).unwrap() as u32;
        hits.get_per_cpu(&slot).unwrap().unwrap().iter().sum()
    };
    let tcp_to = |_src: u32, port| eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(40000, port, TCP_SYN, b""));
    assert_eq!(p.to_guest(1, &tcp_to(1, 80)), NEXT);
    assert_eq!(p.to_guest(3, &tcp_to(3, 22)), DROP);
    assert_eq!(p.to_guest(1, &tcp_to(1, 81)), DROP);
    p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), 44444, 53, b"q"));
    assert_eq!(p.to_guest(1, &eth_in().udp(v4(PEER), v4(GUEST), 53, 44444, b"r")), NEXT);
    let c = nic_counters(&p);
    assert_eq!((c.allowed, c.replied, c.dropped, c.audited, c.blocked), (1, 1, 2, 0, 0));
    assert_eq!((hits_of("web"), hits_of("nossh"), hits_of("ctcp")), (1, 1, 0), "the deciding rules");

    // Events: the drop is recorded with its fields; the limiter lets one through per cost_ns.
    let settings = EventSettings { cost_ns: 3_600_000_000_000, burst_ns: 0 };
    p.loaded.map(&EVENT_CONFIG).unwrap().set(&0, &settings).unwrap();
    let (fd, info) = p.loaded.map_raw(EVENTS.name).unwrap();
    let ring = RingReader::new(fd.try_clone_to_owned().unwrap(), info.max_entries as usize).unwrap();
    assert_eq!(p.to_guest(3, &tcp_to(3, 22)), DROP);
    assert_eq!(p.to_guest(3, &tcp_to(3, 22)), DROP);
    let mut events = Vec::new();
    ring.consume(|b| events.push(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Event>()) }));
    assert_eq!(events.len(), 1, "the second drop is over the limit");
    let e = events[0];
    assert_eq!((e.ifindex, e.src, e.dst, e.kind, e.reason, e.proto, e.sport, e.dport), (NIC, 3, 2, EVENT_DROP, REASON_RULE, 6, 40000, 22));
    assert_eq!(e.rule as usize, rules.iter().position(|r| r == "nossh").unwrap() + 1);
    assert_eq!(&e.saddr[12..], &PEER.octets());
    let state: Vec<EventState> = p.loaded.map(&EVENT_STATE).unwrap().get_per_cpu(&0).unwrap().unwrap();
    let (emitted, suppressed): (u64, u64) = (state.iter().map(|s| s.emitted).sum(), state.iter().map(|s| s.suppressed).sum());
    assert_eq!((emitted, suppressed), (1, 1));

    // Audit mode: what would drop is delivered, counted and reported as audit.
    p.loaded.map(&TAP_TO_GROUP).unwrap().set(&NicKey { ifindex: NIC }, &NicValue { mark: 2, flags: NIC_F_AUDIT }).unwrap();
    // (The limiter ran an hour ahead above: a burst allowance past that lets every event through.)
    let wide_open = EventSettings { cost_ns: 1, burst_ns: 7_200_000_000_000 };
    p.loaded.map(&EVENT_CONFIG).unwrap().set(&0, &wide_open).unwrap();
    let before = nic_counters(&p);
    assert_eq!(p.to_guest(3, &tcp_to(3, 22)), NEXT, "audit: a rule's deny is delivered");
    assert_eq!(p.to_guest(1, &tcp_to(1, 81)), NEXT, "audit: no rule is delivered");
    assert_eq!(p.to_guest(1, &tcp_to(1, 80)), NEXT);
    let c = nic_counters(&p);
    assert_eq!((c.allowed - before.allowed, c.dropped - before.dropped, c.audited - before.audited), (1, 0, 2));
    let mut kinds = Vec::new();
    ring.consume(|b| kinds.push(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Event>()) }.kind));
    assert_eq!(kinds, [EVENT_AUDIT, EVENT_AUDIT]);
    // The audited flow stays inbound: the guest's answer does not turn it into its own flow.
    let inbound = p.loaded.map(&FLOWS).unwrap().entries().unwrap();
    assert!(inbound.iter().any(|(k, v)| k.sport == 81 && v.flags & 2 != 0), "{inbound:?}");
    // Back to enforce.
    p.loaded.map(&TAP_TO_GROUP).unwrap().set(&NicKey { ifindex: NIC }, &NicValue { mark: 2, flags: 0 }).unwrap();
    assert_eq!(p.to_guest(3, &tcp_to(3, 22)), DROP);
}

#[test]
fn a_tunnel_packet_from_the_guest_is_blocked_counted_and_reported() {
    let p = Plane::new();
    p.loaded.map(&NIC_STATS).unwrap().create_zeroed_per_cpu(&NicKey { ifindex: NIC }).unwrap();
    p.loaded.map(&EVENT_CONFIG).unwrap().set(&0, &EventSettings { cost_ns: 1, burst_ns: 1_000_000_000 }).unwrap();
    p.loaded.map(&TUNNEL_CONFIG).unwrap().set(&0, &TunnelSettings { ports: [4789, 0, 0, 0] }).unwrap();
    let node = AddrKey { addr: PEER.to_ipv6_mapped().octets() };
    p.loaded.map(&UNDERLAY_ADDRS).unwrap().set(&node, &AddrValue { kind: 1 }).unwrap();
    let (fd, info) = p.loaded.map_raw(EVENTS.name).unwrap();
    let ring = RingReader::new(fd.try_clone_to_owned().unwrap(), info.max_entries as usize).unwrap();
    assert_eq!(p.sent_by_guest(&eth_out().udp(v4(GUEST), v4(PEER), 40000, 4789, &[0u8; 16])), DROP);
    assert_eq!(nic_counters(&p).blocked, 1);
    let mut events = Vec::new();
    ring.consume(|b| events.push(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Event>()) }));
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason, events[0].src, events[0].dport, events[0].kind), (REASON_TUNNEL, 2, 4789, EVENT_DROP));
}

#[test]
fn a_pair_without_l4_is_decided_by_the_pair_hash_first() {
    let p = Plane::new();
    let pairs = p.loaded.map(&PAIR_VERDICTS).unwrap();
    let allow = PolicyValue { verdict: 1, flags: 1, pad: 0, rule: 0 };
    let udp_from = |src| p.to_guest(src, &eth_in().udp(v4(PEER), v4(GUEST), 40000, 9, b"x"));
    assert_eq!(udp_from(5), DROP, "no entry anywhere");
    pairs.set(&PairKey { src: 5, dst: 2 }, &allow).unwrap();
    rules::policy_changed(&p.loaded).unwrap();
    assert_eq!(udp_from(5), NEXT, "the hash alone decides");
    assert_eq!(p.to_guest(5, &arp(mac(1), [0xff; 6], 1, PEER, GUEST)), NEXT, "resolution asks it too");
    // Asked before the trie (user space never writes a hash entry that disagrees with the trie).
    let deny = PolicyValue { verdict: 0, flags: 0, pad: 0, rule: 0 };
    pairs.set(&PairKey { src: 1, dst: 2 }, &deny).unwrap();
    rules::policy_changed(&p.loaded).unwrap();
    assert_eq!(p.to_guest(1, &eth_in().ip(v4(PEER), v4(GUEST), 6, &[], &tcp(40000, 80, TCP_SYN, b""))), DROP);
}

#[test]
fn the_pair_hash_holds_exactly_the_pairs_without_l4_entries() {
    let sandbox = Sandbox::new("pairs");
    let ms = sandbox.microseg();
    let config = |ssh_deny: bool| {
        let extra = if ssh_deny { r#""ssh": {"type": "rule", "src": "a", "dst": "b", "proto": "tcp", "dport": "22", "allow": 0},"# } else { "" };
        format!(
            r#"{{"microseg": {{"ids": {{ {extra}
            "a": {{"type": "group", "mark": 1}}, "b": {{"type": "group", "mark": 2}}, "c": {{"type": "group", "mark": 3}},
            "ab": {{"type": "rule", "src": "a", "dst": "b", "allow": 1}},
            "cb": {{"type": "rule", "src": "c", "dst": "b", "proto": "udp", "allow": 1}},
            "ca": {{"type": "rule", "src": "c", "dst": "a", "allow": 0}} }}}}}}"#
        )
    };
    let read = |ms: &Microseg| {
        let fd = sys::obj_get(&ms.policy().map_pin(PAIR_VERDICTS.name)).unwrap();
        let pairs = PAIR_VERDICTS.open_fd(fd.as_fd()).unwrap().entries().unwrap();
        let fd = sys::obj_get(&ms.policy().map_pin(POLICY.name)).unwrap();
        let trie = POLICY.open_fd(fd.as_fd()).unwrap().entries().unwrap();
        (pairs, trie)
    };
    for (round, ssh) in [false, true, false].into_iter().enumerate() {
        sandbox.write_config(&config(ssh));
        ms.apply_full().unwrap();
        let (pairs, trie) = read(&ms);
        let with_l4: std::collections::BTreeSet<(u16, u16)> =
            trie.keys().filter(|k| k.prefixlen > 32).map(|k| (k.src, k.dst)).collect();
        let want: std::collections::BTreeMap<PairKey, PolicyValue> = trie
            .iter()
            .filter(|(k, _)| k.prefixlen == 32 && !with_l4.contains(&(k.src, k.dst)))
            .map(|(k, v)| (PairKey { src: k.src, dst: k.dst }, *v))
            .collect();
        assert_eq!(pairs, want, "round {round}: the hash is the trie's L4-free pairs");
        let names: Vec<(u16, u16)> = pairs.keys().map(|k| (k.src, k.dst)).collect();
        let expect = if ssh { vec![(3, 1)] } else { vec![(1, 2), (3, 1)] };
        assert_eq!(names, expect, "round {round}: a -> b has an L4 entry only with the ssh rule");
    }
}
