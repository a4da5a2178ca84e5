//! The SRv6 carrier's maps and their key and value types, mirroring
//! `bpf/include/srv6.h` and the underlay's peer types (layouts checked
//! against the object's BTF).

use crate::kernel::maps::MapDef;
use crate::shared_struct;
pub use crate::subsystems::vtepguard::maps::{Peer6Key, PeerValue};

shared_struct! {
    /// Value of the per-CPU `srv6_stats` array (slot 0): packet counters.
    pub struct Srv6Counters = "srv6_counters" {
        pub tagged: u64,
        pub restored: u64,
        pub transit: u64,
        pub dropped: u64,
        pub invalid: u64,
    }
}

impl std::ops::AddAssign for Srv6Counters {
    fn add_assign(&mut self, o: Srv6Counters) {
        self.tagged += o.tagged;
        self.restored += o.restored;
        self.transit += o.transit;
        self.dropped += o.dropped;
        self.invalid += o.invalid;
    }
}

pub static SRV6_PEERS: MapDef<Peer6Key, PeerValue> = MapDef::new("srv6_peers");
/// A per-CPU array: its key is the slot index (0).
pub static SRV6_STATS: MapDef<u32, Srv6Counters> = MapDef::new("srv6_stats");
