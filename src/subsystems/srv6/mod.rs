//! The SRv6 carrier (SPEC section 5): the group crosses nodes in the Tag
//! field of the segment routing header. Two programs on each underlay
//! interface of the `srv6` section: on egress the group is written into the
//! SRv6 packets this node encapsulates, on ingress it is restored from the
//! SRv6 of peers addressed to this node, and SRv6 from anyone else is
//! dropped (`bpf/srv6.bpf.c`).

pub mod maps;

use std::collections::BTreeMap;

use anyhow::Result;

use crate::config::MicrosegConfig;
use crate::kernel::maps::{Entries, MapDesc, Ownership};
use crate::kernel::object::{rank, Hook, ObjectSpec, ProgramSpec};
use crate::kernel::reconcile::Plan;
use crate::kernel::state::{KernelState, Loaded};
use crate::report::{Report, Status};
use crate::subsystems::underlay;

use maps::{Peer6Key, PeerValue, Srv6Counters, SRV6_PEERS, SRV6_STATS};

/// From `bpf/srv6.bpf.c`.
pub static OBJECT: crate::kernel::object::Embedded = crate::embedded_object!("srv6.bpf.o");

/// The maps user space syncs or reads, for the lifecycle code and the layout tests.
static MAPS: [&dyn MapDesc; 2] = [&SRV6_PEERS, &SRV6_STATS];

const PROGRAMS: [ProgramSpec; 2] = [
    ProgramSpec { name: "srv6_receive", hook: Hook::Ingress, rank: rank::CARRIER },
    ProgramSpec { name: "srv6_send", hook: Hook::Egress, rank: rank::CARRIER },
];

pub struct Srv6 {
    spec: ObjectSpec,
}

impl Srv6 {
    pub fn new() -> Srv6 {
        Srv6 {
            spec: ObjectSpec {
                name: "srv6",
                schema_version: 1,
                object: &OBJECT,
                maps: &MAPS,
                capacities: Vec::new(),
                programs: &PROGRAMS,
            },
        }
    }
}

impl Default for Srv6 {
    fn default() -> Self {
        Self::new()
    }
}

/// The netdevs that carry every program of `state` as a live link.
fn carrying(state: &KernelState) -> Result<Vec<String>> {
    let mut by_netdev: BTreeMap<String, usize> = BTreeMap::new();
    for link in state.live_link_pins()? {
        *by_netdev.entry(link.netdev).or_default() += 1;
    }
    Ok(by_netdev.into_iter().filter(|(_, n)| *n == PROGRAMS.len()).map(|(name, _)| name).collect())
}

impl super::Subsystem for Srv6 {
    fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>> {
        let Some(s) = &cfg.srv6 else { return Ok(None) };
        let peers: BTreeMap<Peer6Key, PeerValue> =
            s.peers.iter().map(|p| (Peer6Key { addr: p.octets() }, PeerValue { allowed: 1 })).collect();
        let targets = underlay::targets(&s.ifaces, "srv6");
        Ok(Some(Plan {
            maps: vec![Entries::boxed(&SRV6_PEERS, peers, Ownership::Whole)],
            counted: targets.len(),
            capacities: Vec::new(),
            targets,
        }))
    }

    /// The interfaces: the peers are in the kernel map.
    fn record(&self, cfg: &MicrosegConfig) -> serde_json::Value {
        underlay::record(cfg.srv6.as_ref().map(|s| &s.ifaces))
    }

    /// The configured interfaces that exist now; the peers stay as they are.
    fn plan_recorded(&self, _loaded: &Loaded, record: &serde_json::Value) -> Result<Option<Plan>> {
        Ok(underlay::plan_recorded(record, "srv6"))
    }

    /// The carrying interfaces, the peers, the packet counters; a
    /// configured interface that does not exist or does not carry the
    /// programs is a warning.
    fn status(&self, state: &KernelState, cfg: Option<&MicrosegConfig>, out: &mut Status) -> Result<()> {
        let out6 = &mut out.underlay.srv6;
        out6.carrying = carrying(state)?;
        if let Some(loaded) = state.open_pins()? {
            let sum: Srv6Counters = loaded.map(&SRV6_STATS)?.get_summed(&0)?;
            for (k, v) in [
                ("tagged", sum.tagged),
                ("restored", sum.restored),
                ("transit", sum.transit),
                ("dropped", sum.dropped),
                ("invalid", sum.invalid),
            ] {
                out6.counters.insert(k.to_string(), v);
            }
        }
        let Some(s) = cfg.and_then(|c| c.srv6.as_ref()) else { return Ok(()) };
        out6.peers = s.peers.iter().map(|p| p.to_string()).collect();
        out.underlay.interfaces.insert(self.spec.name.to_string(), s.ifaces.clone());
        let section = format!("srv6 '{}'", s.id);
        underlay::warnings(&section, &s.ifaces, &out.underlay.srv6.carrying, "does not carry the group", &mut out.warnings);
        Ok(())
    }

    fn count_targets(&self, report: &mut Report, targets: usize) {
        report.srv6 += targets;
    }
}
