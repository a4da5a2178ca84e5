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
    /// Key of `rules`: (source mark, destination mark).
    pub struct RuleKey = "rule_key" { pub src: u16, pub dst: u16 }
}

shared_struct! {
    /// Value of `rules`: `VERDICT_DENY` (0) or `VERDICT_ALLOW` (1).
    pub struct RuleValue = "rule_value" { pub verdict: u8 }
}

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
pub static RULES: MapDef<RuleKey, RuleValue> = MapDef::new("rules");
pub static UNDERLAY_ADDRS: MapDef<AddrKey, AddrValue> = MapDef::new("underlay_addrs");
/// An array: its key is the slot index (0).
pub static TUNNEL_CONFIG: MapDef<u32, TunnelSettings> = MapDef::new("tunnel_config");
