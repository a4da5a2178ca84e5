//! Test-only subsystem (feature `test-hooks`): one program on a NIC's
//! ingress that must run before `microseg_stamp`. It exists to show that a
//! subsystem is added through the registry alone and that programs of
//! different subsystems on one hook run in their declared order.
//! Section type `order-probe`: `ifaces` (netdevs to carry the probe).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::config::MicrosegConfig;
use crate::kernel::links::Target;
use crate::kernel::maps::{Entries, MapDef, MapDesc, Ownership};
use crate::kernel::netdev;
use crate::kernel::object::{Hook, ObjectSpec, ProgramSpec};
use crate::kernel::reconcile::Plan;
use crate::shared_struct;

pub static OBJECT: crate::kernel::object::Embedded = crate::embedded_object!("test-order_probe.bpf.o");

/// The maps user space syncs, for the lifecycle code and the layout tests.
static MAPS: [&dyn MapDesc; 1] = [&PROBE_COUNTS];

shared_struct! {
    /// Packets seen, and of those, packets whose mark already had a group.
    pub struct ProbeCounts = "probe_counts" { pub seen: u64, pub stamped: u64 }
}

pub static PROBE_COUNTS: MapDef<u32, ProbeCounts> = MapDef::new("probe_counts");

pub const NAME: &str = "orderprobe";

pub struct OrderProbe {
    spec: ObjectSpec,
}

impl OrderProbe {
    pub fn new() -> OrderProbe {
        OrderProbe {
            spec: ObjectSpec {
                name: NAME,
                schema_version: 1,
                object: &OBJECT,
                maps: &MAPS,
                // Before the policy's stamp (rank 50).
                capacities: Vec::new(),
                programs: &[ProgramSpec { name: "order_probe", hook: Hook::Ingress, rank: 20 }],
            },
        }
    }
}

impl Default for OrderProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl super::Subsystem for OrderProbe {
    fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    fn section_types(&self) -> &'static [&'static str] {
        &["order-probe"]
    }

    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>> {
        let mut targets = Vec::new();
        let mut any = false;
        for (id, body) in cfg.sections_of("order-probe") {
            any = true;
            let ifaces = body.get("ifaces").and_then(|v| v.as_str()).with_context(|| format!("order-probe '{id}': ifaces"))?;
            for name in ifaces.split(',').filter(|s| !s.is_empty()) {
                if let Some(ifindex) = netdev::ifindex(name) {
                    targets.push(Target { name: name.to_string(), ifindex });
                }
            }
        }
        let zero = BTreeMap::from([(0u32, ProbeCounts::default())]);
        Ok(any.then(|| Plan { maps: vec![Entries::boxed(&PROBE_COUNTS, zero, Ownership::Additive)], targets, counted: 0, capacities: Vec::new() }))
    }
}
