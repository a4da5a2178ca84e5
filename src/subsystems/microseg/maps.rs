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

pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

pub static TAP_TO_GROUP: MapDef<NicKey, NicValue> = MapDef::new("tap_to_group");
pub static RULES: MapDef<RuleKey, RuleValue> = MapDef::new("rules");
