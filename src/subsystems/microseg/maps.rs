//! The microseg object's maps and their key and value types, mirroring
//! `bpf/include/policy.h` and `bpf/include/events.h` (layouts checked
//! against the object's BTF).

use crate::kernel::maps::{MapDef, RingDef};
use crate::shared_struct;

shared_struct! {
    /// Key of `tap_to_group`: an assigned local guest NIC.
    pub struct NicKey = "nic_key" { pub ifindex: u32 }
}

shared_struct! {
    /// Value of `tap_to_group`: the NIC's group mark (1..=65535) and flags
    /// (`NIC_F_AUDIT`).
    pub struct NicValue = "nic_value" { pub mark: u16, pub flags: u16 }
}

shared_struct! {
    /// Key of `assignments`: a guest NIC of the cluster (vmid, n of net<n>),
    /// recorded by the full pass for `apply_iface`.
    pub struct AssignmentKey = "assignment_key" { pub vmid: u32, pub iface: u32 }
}

/// The NIC's group is in audit mode.
pub const NIC_F_AUDIT: u16 = 1;

shared_struct! {
    /// Value of the per-CPU `nic_stats`: packets toward the guest delivered
    /// by a rule, as answers, dropped, passed in audit mode; packets from the
    /// guest refused; new flows of the NIC past its admission rate, not
    /// added to the flow table.
    pub struct NicCounters = "nic_counters" {
        pub allowed: u64,
        pub replied: u64,
        pub dropped: u64,
        pub audited: u64,
        pub blocked: u64,
        pub unrecorded: u64,
    }
}

impl std::ops::AddAssign for NicCounters {
    fn add_assign(&mut self, o: NicCounters) {
        self.allowed += o.allowed;
        self.replied += o.replied;
        self.dropped += o.dropped;
        self.audited += o.audited;
        self.blocked += o.blocked;
        self.unrecorded += o.unrecorded;
    }
}

/// Sums per-CPU limiter states (the counts; `tat` is per CPU and not summed).
impl std::ops::AddAssign for EventState {
    fn add_assign(&mut self, o: EventState) {
        self.emitted += o.emitted;
        self.suppressed += o.suppressed;
        self.lost += o.lost;
    }
}

pub const RULE_NAME_LEN: usize = 64;

shared_struct! {
    /// Value of `rule_names`: a rule's id, NUL padded (see `RuleName::of`).
    pub struct RuleName = "rule_name" { pub name: [u8; RULE_NAME_LEN] }
}

shared_struct! {
    /// A record of the `events` ring buffer.
    pub struct Event = "event" {
        pub time_ns: u64,
        pub ifindex: u32,
        pub rule: u32,
        pub src: u16,
        pub dst: u16,
        pub kind: u8,
        pub reason: u8,
        pub l3: u8,
        pub proto: u8,
        pub sport: u16,
        pub dport: u16,
        pub icmp_type: u8,
        pub pad: [u8; 3],
        pub saddr: [u8; 16],
        pub daddr: [u8; 16],
    }
}

pub const EVENT_DROP: u8 = 1;
pub const EVENT_AUDIT: u8 = 2;
pub const REASON_NO_RULE: u8 = 1;
pub const REASON_RULE: u8 = 2;
pub const REASON_RESOLUTION: u8 = 3;
pub const REASON_TUNNEL: u8 = 4;
pub const EVENT_L3_IPV4: u8 = 1;
pub const EVENT_L3_IPV6: u8 = 2;
pub const EVENT_L3_ARP: u8 = 3;

shared_struct! {
    /// Value of the one-entry `event_config`: the per-CPU rate limit.
    pub struct EventSettings = "event_settings" { pub cost_ns: u64, pub burst_ns: u64 }
}

shared_struct! {
    /// Value of the per-CPU `event_state`: the limiter and its counts.
    pub struct EventState = "event_state" { pub tat: u64, pub emitted: u64, pub suppressed: u64, pub lost: u64 }
}

shared_struct! {
    /// Key of the LPM trie `policy`: the prefix length, then (source mark,
    /// destination mark, protocol, 0, destination port in network order).
    pub struct PolicyKey = "policy_key" {
        pub prefixlen: u32,
        pub src: u16,
        pub dst: u16,
        pub proto: u8,
        pub pad: u8,
        pub dport: u16,
    }
}

shared_struct! {
    /// Key of `pair_verdicts`: a pair decided without L4 (its value is the
    /// trie's /32 entry for the pair).
    pub struct PairKey = "pair_key" { pub src: u16, pub dst: u16 }
}

shared_struct! {
    /// Value of `policy`: the verdict, flags, and the deciding rule (an
    /// index into the resolved rule list, plus one; 0: none).
    pub struct PolicyValue = "policy_value" { pub verdict: u8, pub flags: u8, pub pad: u16, pub rule: u32 }
}

shared_struct! {
    /// Key of the LRU `flows`: a flow a guest opened, from the guest's side
    /// (its address and port first); ICMP echo carries its identifier as
    /// `sport` and 0 as `dport`.
    pub struct FlowKey = "flow_key" {
        pub ifindex: u32,
        pub proto: u8,
        pub pad: [u8; 3],
        pub sport: u16,
        pub dport: u16,
        pub saddr: [u8; 16],
        pub daddr: [u8; 16],
    }
}

shared_struct! {
    /// Value of `flows`.
    pub struct FlowValue = "flow_value" { pub last_seen: u64, pub flags: u32, pub pad: u32 }
}

shared_struct! {
    /// Value of the per-CPU array `flow_cache`: a flow as the flow table and
    /// the policy last answered for it on one CPU. The data plane owns it;
    /// user space only clears it.
    pub struct FlowCacheEntry = "flow_cache_entry" {
        pub key: FlowKey,
        pub flow_flags: u32,
        pub flow_seen: u64,
        pub gen: u32,
        pub src: u16,
        pub dst: u16,
        pub verdict: PolicyValue,
    }
}

shared_struct! {
    /// Key of the LRU `peers`: an address a guest talks to or asked for.
    pub struct PeerKey = "peer_key" { pub ifindex: u32, pub addr: [u8; 16] }
}

shared_struct! {
    /// Value of `peers`.
    pub struct PeerSeen = "peer_seen" { pub last_seen: u64 }
}

/// The pair allows something at some L4: address resolution may pass.
pub const POLICY_FLAG_ANY_ALLOW: u8 = 1;

shared_struct! {
    /// Key of `underlay_addrs`: an IPv6 address, or an IPv4 one mapped (`::ffff:a.b.c.d`).
    pub struct AddrKey = "addr_key" { pub addr: [u8; 16] }
}

shared_struct! {
    /// Value of `underlay_addrs`: `ADDR_LOCAL`, `ADDR_BROADCAST` or `ADDR_PEER`.
    pub struct AddrValue = "addr_value" { pub kind: u8 }
}

shared_struct! {
    /// Value of the one-entry `tunnel_config` array: UDP ports the node
    /// decapsulates (0: unused).
    pub struct TunnelSettings = "tunnel_settings" { pub ports: [u16; 4] }
}

shared_struct! {
    /// Value of the one-entry `flow_admission` array: each NIC may add a
    /// flow to the flow table once per `cost_ns`, up to `burst_ns` early
    /// (cost 0: no limit).
    pub struct FlowAdmission = "flow_admission" { pub cost_ns: u64, pub burst_ns: u64 }
}

pub const ADDR_LOCAL: u8 = 1;
pub const ADDR_BROADCAST: u8 = 2;
pub const ADDR_PEER: u8 = 3;

pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

pub static TAP_TO_GROUP: MapDef<NicKey, NicValue> = MapDef::new("tap_to_group");
pub static POLICY: MapDef<PolicyKey, PolicyValue> = MapDef::new("policy");
pub static PAIR_VERDICTS: MapDef<PairKey, PolicyValue> = MapDef::new("pair_verdicts");
pub static FLOWS: MapDef<FlowKey, FlowValue> = MapDef::new("flows");
pub static PEERS: MapDef<PeerKey, PeerSeen> = MapDef::new("peers");
/// A per-CPU array indexed by a hash of the flow key.
pub static FLOW_CACHE: MapDef<u32, FlowCacheEntry> = MapDef::new("flow_cache");
/// A one-entry array: the policy generation, raised after every policy change.
pub static POLICY_GEN: MapDef<u32, u32> = MapDef::new("policy_gen");
pub static UNDERLAY_ADDRS: MapDef<AddrKey, AddrValue> = MapDef::new("underlay_addrs");
/// An array: its key is the slot index (0).
pub static TUNNEL_CONFIG: MapDef<u32, TunnelSettings> = MapDef::new("tunnel_config");
pub static NIC_STATS: MapDef<NicKey, NicCounters> = MapDef::new("nic_stats");
pub static ASSIGNMENTS: MapDef<AssignmentKey, NicValue> = MapDef::new("assignments");
pub static RULE_NAMES: MapDef<u32, RuleName> = MapDef::new("rule_names");
pub static RULE_HITS: MapDef<u32, u64> = MapDef::new("rule_hits");
pub static EVENTS: RingDef = RingDef { name: "events" };
pub static EVENT_CONFIG: MapDef<u32, EventSettings> = MapDef::new("event_config");
pub static EVENT_STATE: MapDef<u32, EventState> = MapDef::new("event_state");
pub static FLOW_ADMISSION: MapDef<u32, FlowAdmission> = MapDef::new("flow_admission");
/// Per NIC that adds flows: when its next new flow is due (an LRU the data plane keeps).
pub static FLOW_BUDGET: MapDef<NicKey, u64> = MapDef::new("flow_budget");

impl RuleName {
    /// How a rule id is kept: as it is when it fits; a longer one as its
    /// first 47 bytes, '~' and 16 hex digits of a hash of the whole id, so
    /// that distinct ids stay distinct.
    pub fn of(id: &str) -> RuleName {
        let mut name = [0u8; RULE_NAME_LEN];
        let b = id.as_bytes();
        if b.len() <= RULE_NAME_LEN {
            name[..b.len()].copy_from_slice(b);
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(b);
            let mut cut = 47;
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            let hex: String = digest[..8].iter().map(|x| format!("{x:02x}")).collect();
            let text = format!("{}~{hex}", &id[..cut]);
            name[..text.len()].copy_from_slice(text.as_bytes());
        }
        RuleName { name }
    }

    pub fn as_string(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(RULE_NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}
