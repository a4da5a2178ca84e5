//! The microseg object's maps and their key and value types, mirroring
//! `bpf/include/policy.h` (layouts checked against the object's BTF).

use crate::kernel::maps::MapDef;
use crate::shared_struct;

shared_struct! {
    /// Key of `tap_to_group`: an assigned local guest NIC.
    pub struct NicKey = "nic_key" { pub ifindex: u32 }
}

shared_struct! {
    /// Value of `tap_to_group`: the NIC's group mark (1..=65535).
    pub struct NicValue = "nic_value" { pub mark: u32 }
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

pub const ADDR_LOCAL: u8 = 1;
pub const ADDR_BROADCAST: u8 = 2;
pub const ADDR_PEER: u8 = 3;

pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

pub static TAP_TO_GROUP: MapDef<NicKey, NicValue> = MapDef::new("tap_to_group");
pub static POLICY: MapDef<PolicyKey, PolicyValue> = MapDef::new("policy");
pub static FLOWS: MapDef<FlowKey, FlowValue> = MapDef::new("flows");
pub static PEERS: MapDef<PeerKey, PeerSeen> = MapDef::new("peers");
pub static UNDERLAY_ADDRS: MapDef<AddrKey, AddrValue> = MapDef::new("underlay_addrs");
/// An array: its key is the slot index (0).
pub static TUNNEL_CONFIG: MapDef<u32, TunnelSettings> = MapDef::new("tunnel_config");
