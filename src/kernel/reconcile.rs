//! The one pass that makes a subsystem's kernel state equal its plan.
//!
//! Every subsystem goes through the same steps, in an order that never
//! leaves a target unenforced: sweep leftovers, make the programs current
//! (an install prefills the new maps before any link is swapped onto them),
//! write new and changed map entries, attach every target, detach every
//! link that is not a target, and only then delete stale map entries (a
//! link still attached never sees its entries vanish first).

use std::collections::BTreeSet;
use anyhow::{bail, Context, Result};

use crate::kernel::links::{AttachOutcome, Ranks, Target};
use crate::kernel::maps::MapContent;
use crate::kernel::state::{Freshness, KernelState, Loaded};
use crate::kernel::testhook::crash_point;
use crate::report::Report;

/// The desired kernel state of one subsystem on this node.
#[derive(Default)]
pub struct Plan {
    /// Desired contents of the maps user space owns.
    pub maps: Vec<Box<dyn MapContent>>,
    /// Netdevs that carry every program of the subsystem.
    pub targets: Vec<Target>,
    /// How many targets the report counts as enforced (a subsystem may
    /// carry pass-through programs on targets it does not enforce).
    pub counted: usize,
    /// Map capacities the configuration sets (see `ObjectSpec::capacities`).
    pub capacities: Vec<(&'static str, u32)>,
}

impl Plan {
    /// Writes new and changed entries of every map; returns how many.
    fn write_maps(&self, loaded: &Loaded) -> Result<usize> {
        self.sum_over_maps("write", |m| m.write(loaded))
    }

    /// Deletes the entries no map wants; returns how many.
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        self.sum_over_maps("prune", |m| m.delete_stale(loaded))
    }

    fn sum_over_maps(&self, what: &str, f: impl Fn(&dyn MapContent) -> Result<usize>) -> Result<usize> {
        let mut total = 0;
        for m in &self.maps {
            total += f(m.as_ref()).with_context(|| format!("{what} map {}", m.name()))?;
        }
        Ok(total)
    }
}

impl KernelState {
    /// Full pass (caller holds the exclusive lock): afterwards the kernel
    /// holds exactly `plan`. A target
    /// that cannot be attached fails the pass (after every other target was
    /// tried); a link that cannot be detached only warns (over-enforcement
    /// is safe).
    pub fn reconcile(&self, plan: &Plan, ranks: &dyn Fn() -> Ranks, report: &mut Report) -> Result<()> {
        report.links_detached += self.sweep_tmp_pins();
        let (loaded, prefilled) = self.ensure_current(&|l| plan.write_maps(l))?;
        report.loaded |= prefilled.is_some();
        report.map_writes += prefilled.unwrap_or(0);
        self.reconcile_loaded(&loaded, plan, ranks, report)
    }

    /// A full pass over the current installation `loaded` (caller holds
    /// the exclusive lock): for `reconcile`, and for a pass whose plan holds
    /// only what depends on the node (the config is the one the last full
    /// pass applied, so the maps it decides are as that pass left them).
    pub fn reconcile_loaded(&self, loaded: &Loaded, plan: &Plan, ranks: &dyn Fn() -> Ranks, report: &mut Report) -> Result<()> {
        report.map_writes += plan.write_maps(loaded).context("sync maps")?;
        crash_point("full-after-maps");

        let mut failed = Vec::new();
        for target in &plan.targets {
            // Reported once, in the error the pass returns (the caller shows it).
            if let Err(e) = self.attach_target(loaded, target, ranks, report) {
                failed.push(format!("{:#}", e.context(format!("apply {}", target.name))));
            }
        }
        crash_point("full-after-attach");

        let wanted: BTreeSet<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        let ifindexes: Vec<u32> = plan.targets.iter().map(|t| t.ifindex).collect();
        for link in self.link_pins()? {
            if !wanted.contains(link.netdev.as_str()) {
                match self.remove_stale_pin(&link, loaded, &ifindexes) {
                    Ok(()) => report.links_detached += 1,
                    Err(e) => log::warn!("{}: detach {}: {e:#}", self.name(), link.path.display()),
                }
            }
        }
        crash_point("full-before-delete");
        report.map_deletes += plan.delete_stale(loaded).context("remove stale map entries")?;
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        Ok(())
    }

    /// Additive pass (caller holds the shared lock): writes `plan`'s entries
    /// and attaches its targets, touching nothing else. `false` when the
    /// programs are not current: the caller must run a full pass instead.
    pub fn apply_additive(&self, plan: &Plan, ranks: &dyn Fn() -> Ranks, report: &mut Report) -> Result<bool> {
        let Freshness::Current(loaded) = self.freshness()? else { return Ok(false) };
        self.apply_loaded(&loaded, plan, ranks, report)?;
        Ok(true)
    }

    /// Writes `plan`'s entries into the current installation `loaded` and
    /// attaches its targets (caller holds the shared lock).
    pub fn apply_loaded(&self, loaded: &Loaded, plan: &Plan, ranks: &dyn Fn() -> Ranks, report: &mut Report) -> Result<()> {
        report.map_writes += plan.write_maps(loaded)?;
        crash_point("iface-after-map");
        for target in &plan.targets {
            self.attach_target(loaded, target, ranks, report)?;
        }
        Ok(())
    }

    /// Attaches every program of the subsystem to `target`, in the declared
    /// order (microseg: enforcement toward the guest before stamping).
    fn attach_target(&self, loaded: &Loaded, target: &Target, ranks: &dyn Fn() -> Ranks, report: &mut Report) -> Result<()> {
        for (i, program) in self.spec.programs.iter().enumerate() {
            if i > 0 {
                crash_point("attach-between-programs");
            }
            match self.attach(loaded, target, program, ranks)? {
                AttachOutcome::Present => {}
                AttachOutcome::Updated => report.links_updated += 1,
                AttachOutcome::Created | AttachOutcome::Reclaimed => report.links_created += 1,
            }
        }
        Ok(())
    }
}
