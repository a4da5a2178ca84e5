//! The policy subsystem: stamps what a guest sends with its group and
//! enforces the flattened policy on what reaches it (SPEC sections 3-4).

pub mod maps;
pub mod resolve;

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::config::{Assignment, MicrosegConfig};
use crate::kernel::links::Target;
use crate::kernel::maps::{Entries, MapDesc, Ownership};
use crate::kernel::netdev::{self, GuestNic, NicKind};
use crate::kernel::object::{rank, Hook, ObjectSpec, ProgramSpec};
use crate::kernel::reconcile::Plan;
use crate::report::Report;

use maps::{NicKey, NicValue, RuleKey, RuleValue, RULES, TAP_TO_GROUP, VERDICT_ALLOW, VERDICT_DENY};
use resolve::Verdict;

/// The production data plane, built by `build.rs` from `bpf/microseg.bpf.c`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg.bpf.o"));

/// The maps user space syncs, for the lifecycle code and the layout tests.
static MAPS: [&dyn MapDesc; 2] = [&TAP_TO_GROUP, &RULES];

pub const NAME: &str = "microseg";

pub struct Policy {
    spec: ObjectSpec,
}

impl Policy {
    pub fn new(object: &'static [u8]) -> Policy {
        Policy {
            spec: ObjectSpec {
                name: NAME,
                schema_version: 1,
                object,
                maps: &MAPS,
                // Enforcement toward the guest is attached before the stamp
                // on what it sends, so a new NIC is never stamped unenforced.
                programs: &[
                    ProgramSpec { name: "microseg_enforce", hook: Hook::Egress, rank: rank::POLICY },
                    ProgramSpec { name: "microseg_stamp", hook: Hook::Ingress, rank: rank::POLICY },
                ],
            },
        }
    }
}

/// The names an assignment's NIC has: a VM's tap or a container's veth.
pub fn nic_names(a: &Assignment) -> impl Iterator<Item = String> + '_ {
    NicKind::ALL.into_iter().map(move |kind| GuestNic { kind, vmid: a.vmid, iface: a.iface }.name())
}

pub fn verdict_value(v: Verdict) -> RuleValue {
    RuleValue { verdict: if v == Verdict::Allow { VERDICT_ALLOW } else { VERDICT_DENY } }
}

/// Whether the netdev of a `tap_to_group` entry is gone.
fn nic_vanished(key: &NicKey) -> bool {
    netdev::name_of(key.ifindex).is_none()
}

fn nic_entry(ifindex: u32, mark: u16) -> (NicKey, NicValue) {
    (NicKey { ifindex }, NicValue { mark: u32::from(mark) })
}

impl super::Subsystem for Policy {
    fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>> {
        if cfg.groups.is_empty() && cfg.rules.is_empty() && cfg.assignments.is_empty() {
            return Ok(None);
        }
        let pairs = resolve::resolve(cfg, self.spec.capacity(RULES.name)?)?;
        let rules: BTreeMap<RuleKey, RuleValue> =
            pairs.iter().map(|(&(src, dst), &v)| (RuleKey { src, dst }, verdict_value(v))).collect();
        let mut nics = BTreeMap::new();
        let mut targets = Vec::new();
        for a in cfg.assignments.values() {
            let mark = cfg.groups[&a.group].mark;
            for name in nic_names(a) {
                if let Some(ifindex) = netdev::ifindex(&name) {
                    let (k, v) = nic_entry(ifindex, mark);
                    nics.insert(k, v);
                    targets.push(Target { name, ifindex });
                }
            }
        }
        let capacity = self.spec.capacity(TAP_TO_GROUP.name)?;
        if targets.len() > capacity {
            bail!("microseg: {} local assigned NICs, the kernel group map holds {capacity}", targets.len());
        }
        Ok(Some(Plan {
            maps: vec![
                Entries::boxed(&RULES, rules, Ownership::Whole),
                Entries::boxed(&TAP_TO_GROUP, nics, Ownership::Whole),
            ],
            targets,
        }))
    }

    /// Validates but does not resolve: resolution only feeds the rule map,
    /// which `apply_iface` never touches.
    fn plan_nic(&self, cfg: &MicrosegConfig, nic: &GuestNic, ifindex: u32) -> Result<Option<Plan>> {
        let Some(group) = cfg.group_of(nic.vmid, nic.iface) else { return Ok(None) };
        let (k, v) = nic_entry(ifindex, group.mark);
        Ok(Some(Plan {
            maps: vec![Entries::boxed_per_netdev(
                &TAP_TO_GROUP,
                BTreeMap::from([(k, v)]),
                Ownership::Additive,
                nic_vanished,
            )],
            targets: vec![Target { name: nic.name(), ifindex }],
        }))
    }

    fn count_targets(&self, report: &mut Report, targets: usize) {
        report.nics += targets;
    }
}
