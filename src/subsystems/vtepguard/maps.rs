//! The VTEP guard's maps and their key and value types, mirroring
//! `bpf/include/underlay.h` (layouts checked against the object's BTF).

use crate::kernel::maps::MapDef;
use crate::shared_struct;

shared_struct! {
    /// Key of `vtep_peers`: an outer IPv4 source address, network order.
    pub struct Peer4Key = "peer4_key" { pub addr: u32 }
}

shared_struct! {
    /// Key of `vtep_peers6`: an outer IPv6 source address.
    pub struct Peer6Key = "peer6_key" { pub addr: [u8; 16] }
}

shared_struct! {
    /// Value of `vtep_peers` and `vtep_peers6`.
    pub struct PeerValue = "peer_value" { pub allowed: u8 }
}

shared_struct! {
    /// Value of `guard_config`: the VXLAN UDP port, host order (0: 4789).
    pub struct GuardConfig = "guard_settings" { pub vxlan_port: u32 }
}

pub static VTEP_PEERS: MapDef<Peer4Key, PeerValue> = MapDef::new("vtep_peers");
pub static VTEP_PEERS6: MapDef<Peer6Key, PeerValue> = MapDef::new("vtep_peers6");
/// An array: its key is the slot index (0).
pub static GUARD_CONFIG: MapDef<u32, GuardConfig> = MapDef::new("guard_config");
