//! The VTEP guard: VXLAN reaches the node's VTEP only from configured peers
//! (SPEC section 5). One program on the ingress of the underlay interfaces.

pub mod maps;

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;

use crate::config::MicrosegConfig;
use crate::kernel::maps::{Entries, MapDesc, Ownership};
use crate::kernel::object::{rank, Hook, ObjectSpec, ProgramSpec};
use crate::kernel::reconcile::Plan;
use crate::kernel::state::Loaded;
use crate::report::Report;
use crate::subsystems::underlay;

use maps::{GuardConfig, Peer4Key, Peer6Key, PeerValue, GUARD_CONFIG, VTEP_PEERS, VTEP_PEERS6};

/// From `bpf/vtepguard.bpf.c`.
pub static OBJECT: crate::kernel::object::Embedded = crate::embedded_object!("vtepguard.bpf.o");

/// The maps user space syncs, for the lifecycle code and the layout tests.
static MAPS: [&dyn MapDesc; 3] = [&VTEP_PEERS, &VTEP_PEERS6, &GUARD_CONFIG];

pub struct VtepGuard {
    spec: ObjectSpec,
}

impl VtepGuard {
    pub fn new() -> VtepGuard {
        VtepGuard {
            spec: ObjectSpec {
                name: "vtepguard",
                schema_version: 1,
                object: &OBJECT,
                maps: &MAPS,
                capacities: Vec::new(),
                programs: &[ProgramSpec { name: "vtep_guard", hook: Hook::Ingress, rank: rank::UNDERLAY_GUARD }],
            },
        }
    }
}

impl Default for VtepGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl super::Subsystem for VtepGuard {
    fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>> {
        let Some(g) = &cfg.guard else { return Ok(None) };
        // Keys are the outer source address as the packet carries it.
        let allowed = PeerValue { allowed: 1 };
        let mut peers = BTreeMap::new();
        let mut peers6 = BTreeMap::new();
        for peer in &g.peers {
            match peer {
                IpAddr::V4(a) => peers.insert(Peer4Key { addr: u32::from_ne_bytes(a.octets()) }, allowed),
                IpAddr::V6(a) => peers6.insert(Peer6Key { addr: a.octets() }, allowed),
            };
        }
        let config = BTreeMap::from([(0u32, GuardConfig { vxlan_port: u32::from(g.port) })]);
        let targets = underlay::targets(&g.ifaces, "vtep guard");
        Ok(Some(Plan {
            maps: vec![
                Entries::boxed(&VTEP_PEERS, peers, Ownership::Whole),
                Entries::boxed(&VTEP_PEERS6, peers6, Ownership::Whole),
                // An array's slots cannot be deleted: written, never pruned.
                Entries::boxed(&GUARD_CONFIG, config, Ownership::Additive),
            ],
            counted: targets.len(),
            capacities: Vec::new(),
            targets,
        }))
    }

    /// The interfaces: the peers and the port are in the kernel maps.
    fn record(&self, cfg: &MicrosegConfig) -> serde_json::Value {
        underlay::record(cfg.guard.as_ref().map(|g| &g.ifaces))
    }

    /// The configured interfaces that exist now; the maps stay as they are.
    fn plan_recorded(&self, _loaded: &Loaded, record: &serde_json::Value) -> Result<Option<Plan>> {
        Ok(underlay::plan_recorded(record, "vtep guard"))
    }

    /// The guarded interfaces (those carrying the guard's links), the
    /// configured ones, the admitted peers; a configured interface that
    /// does not exist is a warning.
    fn status(
        &self,
        state: &crate::kernel::state::KernelState,
        cfg: Option<&MicrosegConfig>,
        out: &mut crate::report::Status,
    ) -> Result<()> {
        out.underlay.guarded = state.live_link_pins()?.into_iter().map(|link| link.netdev).collect();
        let Some(g) = cfg.and_then(|c| c.guard.as_ref()) else { return Ok(()) };
        out.underlay.interfaces.insert(self.spec.name.to_string(), g.ifaces.clone());
        out.underlay.peers = g.peers.iter().map(|p| p.to_string()).collect();
        let section = format!("vtep-guard '{}'", g.id);
        underlay::warnings(&section, &g.ifaces, &out.underlay.guarded, "is not guarded", &mut out.warnings);
        Ok(())
    }

    fn count_targets(&self, report: &mut Report, targets: usize) {
        report.guarded += targets;
    }
}
