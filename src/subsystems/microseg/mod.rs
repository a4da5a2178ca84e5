//! The policy subsystem: stamps what a guest sends with its group and
//! enforces the flattened policy on what reaches it (SPEC sections 3-4).

pub mod events;
pub mod maps;
pub mod resolve;
pub mod rules;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use crate::config::{Assignment, MicrosegConfig};
use crate::kernel::links::Target;
use crate::kernel::maps::{Counters, Entries, MapContent, MapDesc, Ownership, Prune};
use crate::kernel::netdev::{self, AddrKind, GuestNic, NicKind};
use crate::kernel::object::{rank, Hook, ObjectSpec, ProgramSpec};
use crate::kernel::reconcile::Plan;
use crate::kernel::state::Loaded;
use crate::report::Report;
use crate::subsystems::Recorded;

use maps::{
    AddrKey, AddrValue, AssignmentKey, EventSettings, ASSIGNMENTS, NicKey, NicValue, TunnelSettings, ADDR_BROADCAST, ADDR_LOCAL, ADDR_PEER,
    EVENTS, EVENT_CONFIG, PAIR_VERDICTS, EVENT_STATE, FLOWS, FLOW_CACHE, NIC_F_AUDIT, NIC_STATS, PEERS, POLICY, POLICY_GEN,
    RULE_HITS, RULE_NAMES, TAP_TO_GROUP, TUNNEL_CONFIG, UNDERLAY_ADDRS, FLOW_ADMISSION, FLOW_BUDGET, FlowAdmission,
};

/// The production data plane, built by `build.rs` from `bpf/microseg.bpf.c`.
pub static OBJECT: crate::kernel::object::Embedded = crate::embedded_object!("microseg.bpf.o");

/// The maps user space syncs, for the lifecycle code and the layout tests.
static MAPS: [&dyn MapDesc; 18] = [
    &ASSIGNMENTS,
    &PAIR_VERDICTS,
    &TAP_TO_GROUP,
    &POLICY,
    &FLOWS,
    &FLOW_CACHE,
    &POLICY_GEN,
    &PEERS,
    &UNDERLAY_ADDRS,
    &TUNNEL_CONFIG,
    &NIC_STATS,
    &RULE_NAMES,
    &RULE_HITS,
    &EVENTS,
    &EVENT_CONFIG,
    &EVENT_STATE,
    &FLOW_ADMISSION,
    &FLOW_BUDGET,
];

pub const NAME: &str = "microseg";

pub struct Policy {
    spec: ObjectSpec,
}

impl Policy {
    pub fn new(object: &'static crate::kernel::object::Embedded) -> Policy {
        Policy {
            spec: ObjectSpec {
                name: NAME,
                // 2: tap_to_group carries the audit flag, policy values rule slots.
                // 3: the flow cache and the policy generation.
                // 4: the admission rate of new flows (flow_admission,
                //    flow_budget) and the NIC counter `unrecorded`.
                schema_version: 4,
                object,
                maps: &MAPS,
                // Enforcement toward the guest is attached before the stamp
                // on what it sends, so a new NIC is never stamped unenforced.
                capacities: Vec::new(),
                programs: &[
                    ProgramSpec { name: "microseg_enforce", hook: Hook::Egress, rank: rank::POLICY },
                    ProgramSpec { name: "microseg_stamp", hook: Hook::Ingress, rank: rank::POLICY },
                ],
            },
        }
    }
}

/// Whether the policy is configured at all: without groups, rules or
/// assignments the subsystem is removed.
fn configured(cfg: &MicrosegConfig) -> bool {
    !(cfg.groups.is_empty() && cfg.rules.is_empty() && cfg.assignments.is_empty())
}

/// The policy `cfg` resolves to, within the capacity of `spec`'s policy map.
pub fn resolve_policy(spec: &ObjectSpec, cfg: &MicrosegConfig) -> Result<resolve::Policy> {
    let [capacity] = spec.capacities_of([POLICY.name])?;
    resolve::resolve(cfg, capacity)
}

/// The names an assignment's NIC has: a VM's tap or a container's veth.
pub fn nic_names(a: &Assignment) -> impl Iterator<Item = String> + '_ {
    NicKind::ALL.into_iter().map(move |kind| GuestNic { kind, vmid: a.vmid, iface: a.iface }.name())
}

/// The peers of every carrier: VXLAN zones, the VTEP guard, the SRv6
/// carrier. No guest may claim them as a tunnel source.
fn tunnel_peers(cfg: &MicrosegConfig) -> BTreeSet<IpAddr> {
    let srv6_peers = cfg.srv6.iter().flat_map(|s| s.peers.iter().map(|&p| IpAddr::V6(p)));
    cfg.zone_peers.iter().chain(cfg.guard.iter().flat_map(|g| g.peers.iter())).copied().chain(srv6_peers).collect()
}

/// The node's addresses and its subnets' broadcasts (read now, at every
/// full pass) and the tunnel `peers`, which no guest may aim a tunnel at or
/// claim as its source.
fn underlay_addrs(peers: &BTreeSet<IpAddr>) -> Result<BTreeMap<AddrKey, AddrValue>> {
    let key = |a: IpAddr| AddrKey {
        addr: match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        },
    };
    let mut out = BTreeMap::new();
    for &peer in peers {
        out.insert(key(peer), AddrValue { kind: ADDR_PEER });
    }
    // The node's own addresses win over a peer entry for the same address.
    for (addr, kind) in netdev::node_addresses().context("list the node's addresses")? {
        let kind = match kind {
            AddrKind::Local => ADDR_LOCAL,
            AddrKind::Broadcast => ADDR_BROADCAST,
        };
        out.insert(key(addr), AddrValue { kind });
    }
    let capacity = 16384;
    if out.len() > capacity {
        bail!("microseg: {} node addresses and peers, the kernel map holds {capacity}", out.len());
    }
    Ok(out)
}

/// Every local guest NIC as a target, and the group entries of those
/// `group_of` assigns.
fn local_nics(
    group_of: impl Fn(&GuestNic) -> Result<Option<NicValue>>,
    capacity: usize,
) -> Result<(BTreeMap<NicKey, NicValue>, Vec<Target>)> {
    let mut nics = BTreeMap::new();
    let mut targets = Vec::new();
    for (nic, ifindex) in netdev::guest_nics() {
        if let Some(value) = group_of(&nic)? {
            nics.insert(NicKey { ifindex }, value);
        }
        targets.push(Target { name: nic.name(), ifindex });
    }
    if nics.len() > capacity {
        bail!("microseg: {} local assigned NICs, the kernel group map holds {capacity}", nics.len());
    }
    Ok((nics, targets))
}

/// The maps whose content depends on the node and not on the config alone:
/// the counters and group entries of its assigned NICs (`nics`), the flows
/// and peers those own, the node's addresses beside the tunnel `peers`.
fn node_maps(nics: BTreeMap<NicKey, NicValue>, peers: &BTreeSet<IpAddr>) -> Result<Vec<Box<dyn MapContent>>> {
    // Flows and peers belong to a NIC: gone with its assignment.
    let assigned: BTreeSet<u32> = nics.keys().map(|k| k.ifindex).collect();
    let assigned2 = assigned.clone();
    let counted_nics = nics.keys().copied().collect();
    Ok(vec![
        Prune::boxed(&FLOWS, move |k| assigned.contains(&k.ifindex)),
        Prune::boxed(&PEERS, move |k| assigned2.contains(&k.ifindex)),
        // Counters exist before the group entry: every packet is counted.
        Counters::boxed(&NIC_STATS, counted_nics, Ownership::Whole, None),
        Entries::boxed(&TAP_TO_GROUP, nics, Ownership::Whole),
        Entries::boxed(&UNDERLAY_ADDRS, underlay_addrs(peers)?, Ownership::Whole),
    ])
}

/// The UDP ports the node decapsulates VXLAN on: PVE's 4789, and the VTEP
/// guard's port if it names another.
fn tunnel_settings(cfg: &MicrosegConfig) -> TunnelSettings {
    let mut ports = [4789u16, 0, 0, 0];
    if let Some(port) = cfg.guard.as_ref().map(|g| g.port).filter(|&p| p != 4789) {
        ports[1] = port;
    }
    TunnelSettings { ports }
}

/// The flow table holds `ct-max` flows; the peers table a quarter of that.
fn capacities(cfg: &MicrosegConfig) -> Vec<(&'static str, u32)> {
    let ct_max = cfg.ct_max();
    vec![(FLOWS.name, ct_max), (PEERS.name, ct_max / 4)]
}

/// Whether the netdev of a `tap_to_group` entry is gone.
fn nic_vanished(key: &NicKey) -> bool {
    netdev::name_of(key.ifindex).is_none()
}

/// The group entry a NIC of `group` gets: its mark, and the audit flag.
fn nic_value(cfg: &MicrosegConfig, group: &crate::config::Group) -> NicValue {
    NicValue { mark: group.mark, flags: if cfg.audit(&group.id) { NIC_F_AUDIT } else { 0 } }
}

/// One NIC's share of the plan: its counters and group entry when it is
/// assigned (`value`), and its programs either way (pass-through when not).
fn nic_plan(value: Option<NicValue>, nic: &GuestNic, ifindex: u32, capacities: Vec<(&'static str, u32)>) -> Plan {
    let entries: BTreeMap<NicKey, NicValue> = value.map(|v| (NicKey { ifindex }, v)).into_iter().collect();
    let counted = entries.keys().copied().collect();
    Plan {
        maps: vec![
            // Counters exist before the group entry: every packet is counted.
            Counters::boxed(&NIC_STATS, counted, Ownership::Additive, Some(nic_vanished)),
            Entries::boxed_per_netdev(&TAP_TO_GROUP, entries, Ownership::Additive, nic_vanished),
        ],
        targets: vec![Target { name: nic.name(), ifindex }],
        counted: 1,
        capacities,
    }
}

/// A tenth of a second of events may come early (a burst).
const EVENT_BURST_NS: u64 = 100_000_000;

/// The node's event rate shared evenly by the CPUs: each may emit one event
/// per `cost_ns`. So the node emits at most `event-rate` per second
/// sustained, plus a burst of a tenth of that (and one per CPU).
fn event_settings(cfg: &MicrosegConfig) -> Result<EventSettings> {
    let rate = u64::from(cfg.event_rate());
    if rate == 0 {
        return Ok(EventSettings { cost_ns: 0, burst_ns: 0 });
    }
    let cpus = crate::kernel::sys::possible_cpus().context("count possible CPUs")? as u64;
    Ok(EventSettings { cost_ns: (1_000_000_000 * cpus).div_ceil(rate), burst_ns: EVENT_BURST_NS })
}

/// Each NIC may add a quarter of `ct-max` flows a second to the flow table,
/// and an eighth of it at once, for the flows its guest opens and again for
/// the inbound marks of flows toward it: one guest's flood of new flows then
/// replaces the table no faster than once in about two seconds, while a flow
/// in use refreshes its place in it at least once a second (the flow cache's
/// trust).
fn flow_admission(cfg: &MicrosegConfig) -> FlowAdmission {
    let ct_max = u64::from(cfg.ct_max());
    FlowAdmission { cost_ns: 4_000_000_000_u64.div_ceil(ct_max), burst_ns: 500_000_000 }
}

impl super::Subsystem for Policy {
    fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    /// Every local guest NIC is a target: assigned ones are enforced,
    /// unassigned ones carry the programs as pass-through (their traffic is
    /// untouched by the policy; the tunnel check applies to every guest).
    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>> {
        if !configured(cfg) {
            return Ok(None);
        }
        let [policy_capacity, capacity, assign_capacity, rule_slots] =
            self.spec.capacities_of([POLICY.name, TAP_TO_GROUP.name, ASSIGNMENTS.name, RULE_NAMES.name])?;
        let policy = resolve::resolve(cfg, policy_capacity)?;
        let deciding: std::collections::BTreeSet<u32> = policy.entries.values().map(|v| v.rule).filter(|&r| r > 0).collect();
        if deciding.len() > rule_slots {
            bail!("microseg: {} rules decide the policy, the kernel's rule slots hold {rule_slots}", deciding.len());
        }
        let (nics, targets) = local_nics(|nic| Ok(cfg.group_of(nic.vmid, nic.iface).map(|g| nic_value(cfg, g))), capacity)?;
        let counted = nics.len();
        if cfg.assignments.len() > assign_capacity {
            bail!("microseg: {} assignments, the kernel map holds {assign_capacity}", cfg.assignments.len());
        }
        let recorded: BTreeMap<AssignmentKey, NicValue> = cfg
            .assignments
            .values()
            .map(|a| (AssignmentKey { vmid: a.vmid, iface: a.iface }, nic_value(cfg, &cfg.groups[&a.group])))
            .collect();
        let mut maps: Vec<Box<dyn MapContent>> = vec![
            Entries::boxed(&EVENT_CONFIG, BTreeMap::from([(0, event_settings(cfg)?)]), Ownership::Additive),
            rules::RulePolicy::boxed(policy),
            Entries::boxed(&ASSIGNMENTS, recorded, Ownership::Whole),
            Entries::boxed(&TUNNEL_CONFIG, BTreeMap::from([(0, tunnel_settings(cfg))]), Ownership::Additive),
            Entries::boxed(&FLOW_ADMISSION, BTreeMap::from([(0, flow_admission(cfg))]), Ownership::Additive),
        ];
        maps.extend(node_maps(nics, &tunnel_peers(cfg))?);
        Ok(Some(Plan { maps, targets, counted, capacities: capacities(cfg) }))
    }

    /// The tunnel peers: the only input of the node-dependent part that the
    /// kernel does not hold as the config gave it (a peer that is also a
    /// node address is stored as the latter).
    fn record(&self, cfg: &MicrosegConfig) -> serde_json::Value {
        if !configured(cfg) {
            return serde_json::Value::Null;
        }
        serde_json::json!({ "peers": tunnel_peers(cfg).iter().map(|p| p.to_string()).collect::<Vec<_>>() })
    }

    /// The local NICs' group entries from the assignments the last full
    /// pass recorded in the kernel, the node's addresses read now.
    fn plan_recorded(&self, loaded: &Loaded, record: &serde_json::Value) -> Result<Option<Plan>> {
        let Some(list) = record.get("peers").and_then(serde_json::Value::as_array) else { return Ok(None) };
        let mut peers = BTreeSet::new();
        for p in list {
            let Some(addr) = p.as_str().and_then(|p| p.parse::<IpAddr>().ok()) else { return Ok(None) };
            peers.insert(addr);
        }
        let (_, group_map) = loaded.map_raw(TAP_TO_GROUP.name)?;
        let assignments = loaded.map(&ASSIGNMENTS)?;
        let (nics, targets) = local_nics(
            |nic| assignments.get(&AssignmentKey { vmid: nic.vmid, iface: nic.iface }),
            group_map.max_entries as usize,
        )?;
        let counted = nics.len();
        // The installed capacities stay: the config that set them is unchanged.
        Ok(Some(Plan { maps: node_maps(nics, &peers)?, targets, counted, capacities: Vec::new() }))
    }

    /// Validates but does not resolve: resolution only feeds the rule map,
    /// which `apply_iface` never touches. An unassigned NIC gets the
    /// programs without a group entry.
    fn plan_nic(&self, cfg: &MicrosegConfig, nic: &GuestNic, ifindex: u32) -> Result<Option<Plan>> {
        if !configured(cfg) {
            return Ok(None);
        }
        let value = cfg.group_of(nic.vmid, nic.iface).map(|g| nic_value(cfg, g));
        Ok(Some(nic_plan(value, nic, ifindex, capacities(cfg))))
    }

    fn status(&self, state: &crate::kernel::state::KernelState, cfg: Option<&MicrosegConfig>, out: &mut crate::report::Status) -> Result<()> {
        status::status(state, cfg, out)
    }

    /// As `plan_nic`, from the assignment the full pass recorded.
    fn plan_nic_recorded(&self, loaded: &Loaded, nic: &GuestNic, ifindex: u32) -> Result<Recorded> {
        let key = AssignmentKey { vmid: nic.vmid, iface: nic.iface };
        let value = loaded.map(&ASSIGNMENTS)?.get(&key)?;
        // The capacities are those of the installed maps (the config is the applied one).
        Ok(Recorded::Plan { plan: nic_plan(value, nic, ifindex, Vec::new()), assigned: value.map(|v| v.mark) })
    }

    fn count_targets(&self, report: &mut Report, targets: usize) {
        report.nics += targets;
    }
}
