//! Subsystems: each one BPF object with its maps and programs, the config
//! sections it reads, and how it turns them into a [`Plan`] for this node.
//! `api` runs every pass, `clear` and `status` over [`registry`]; the
//! generic lifecycle (`kernel`) knows no subsystem by name. Adding a
//! subsystem is one module and one line in `registry`.

pub mod microseg;
#[cfg(feature = "test-hooks")]
pub mod orderprobe;
pub mod srv6;
mod underlay;
pub mod vtepguard;

use anyhow::Result;

use crate::config::MicrosegConfig;
use crate::kernel::netdev::GuestNic;
use crate::kernel::object::ObjectSpec;
use crate::kernel::reconcile::Plan;
use crate::kernel::state::{KernelState, Loaded};
use crate::report::{Report, Status};

/// What the recorded state says about one NIC (see `plan_nic_recorded`).
pub enum Recorded {
    /// Nothing to do for this NIC.
    Nothing,
    /// Apply `plan`; `assigned` is the NIC's group mark, if it has one.
    Plan { plan: Plan, assigned: Option<crate::config::Mark> },
    /// The record cannot answer: the config must be read.
    NeedConfig,
}

pub trait Subsystem: Send + Sync {
    /// The object, its maps and programs, and where its state is pinned.
    fn spec(&self) -> &ObjectSpec;

    /// Section types of the running config this subsystem reads from
    /// [`MicrosegConfig::other`] (those `config` does not parse itself), so
    /// that they are not warned about as unknown.
    fn section_types(&self) -> &'static [&'static str] {
        &[]
    }

    /// The desired state on this node; `None` when the subsystem is not
    /// configured, and then all its state is removed. Fails on anything the
    /// kernel state could not hold, before any of it is touched.
    fn plan(&self, cfg: &MicrosegConfig) -> Result<Option<Plan>>;

    /// One guest NIC's share of the plan, for `apply_iface`: its map
    /// entries (written, never pruned) and the NIC as the only target.
    /// `None` when this subsystem has nothing for that NIC.
    fn plan_nic(&self, _cfg: &MicrosegConfig, _nic: &GuestNic, _ifindex: u32) -> Result<Option<Plan>> {
        Ok(None)
    }

    /// The NIC's share of the plan from what the last full pass recorded in
    /// the kernel (`loaded`), for `apply_iface` while the running config is
    /// the one that pass applied, so that its cost does not grow with the
    /// config. A subsystem without a per-NIC share has nothing to do.
    fn plan_nic_recorded(&self, _loaded: &Loaded, _nic: &GuestNic, _ifindex: u32) -> Result<Recorded> {
        Ok(Recorded::Nothing)
    }

    /// What a full pass records beside the applied config for
    /// `plan_recorded`: the config's inputs to the node-dependent part of
    /// the plan that the kernel maps do not hold (small; JSON).
    fn record(&self, _cfg: &MicrosegConfig) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// For a full pass over the config the last successful one applied:
    /// only the part of the plan that depends on the node (its NICs,
    /// interfaces and addresses, which change without the config), from
    /// the kernel state `loaded` and what that pass recorded. The maps the
    /// config alone decides are left as that pass wrote them. `None`: the
    /// config must be read.
    fn plan_recorded(&self, _loaded: &Loaded, _record: &serde_json::Value) -> Result<Option<Plan>> {
        Ok(None)
    }

    /// Adds what this subsystem enforces to `out` (SPEC section 7,
    /// `status()`), read from its kernel `state`; `cfg` is the running
    /// config if it could be read. The generic part (loaded, versions,
    /// links) is filled in before.
    fn status(&self, _state: &KernelState, _cfg: Option<&MicrosegConfig>, _out: &mut Status) -> Result<()> {
        Ok(())
    }

    /// Accounts the targets a full pass enforced in the report.
    fn count_targets(&self, _report: &mut Report, _targets: usize) {}
}

/// Every subsystem, in the order passes run and locks are taken. The
/// microseg object can be replaced (tests load variants of it).
pub fn registry(microseg_object: &'static crate::kernel::object::Embedded) -> Vec<Box<dyn Subsystem>> {
    vec![
        Box::new(vtepguard::VtepGuard::new()),
        Box::new(srv6::Srv6::new()),
        Box::new(microseg::Policy::new(microseg_object)),
        #[cfg(feature = "test-hooks")]
        Box::new(orderprobe::OrderProbe::new()),
    ]
}
