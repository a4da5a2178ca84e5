//! Subsystems: each one BPF object with its maps and programs, the config
//! sections it reads, and how it turns them into a [`Plan`] for this node.
//! `api` runs every pass, `clear` and `status` over [`registry`]; the
//! generic lifecycle (`kernel`) knows no subsystem by name. Adding a
//! subsystem is one module and one line in `registry`.

pub mod microseg;
#[cfg(feature = "test-hooks")]
pub mod orderprobe;
pub mod vtepguard;

use anyhow::Result;

use crate::config::MicrosegConfig;
use crate::kernel::netdev::GuestNic;
use crate::kernel::object::ObjectSpec;
use crate::kernel::reconcile::Plan;
use crate::kernel::state::KernelState;
use crate::report::{Report, Status};

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
pub fn registry(microseg_object: &'static [u8]) -> Vec<Box<dyn Subsystem>> {
    vec![
        Box::new(vtepguard::VtepGuard::new()),
        Box::new(microseg::Policy::new(microseg_object)),
        #[cfg(feature = "test-hooks")]
        Box::new(orderprobe::OrderProbe::new()),
    ]
}
