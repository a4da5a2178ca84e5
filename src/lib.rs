//! Group-based microsegmentation for Proxmox VE guests, enforced with eBPF
//! tc programs on every guest NIC.
//!
//! Layers, from the input down to the kernel:
//! - [`config`]: the running config's `microseg` sections, validated, one
//!   module per section family;
//! - [`subsystems`]: the registry; each subsystem owns a BPF object, its
//!   typed maps, and turns the config into a plan for this node;
//! - [`kernel`]: subsystem-agnostic kernel state: typed maps, pins, links,
//!   the one reconcile pass, the lock, and the raw `bpf(2)` layer (`sys`);
//! - [`api`]: the calls Perl makes, each a loop over the registry;
//! - [`report`]: the one definition of what a call returns;
//! - [`logger`]: records to the journal (or stderr), a call's warnings
//!   collected for the caller to show.
//!
//! Nothing here knows of Perl; the binding lives in the `perl-rs` crate.

pub mod api;
pub mod config;
pub mod kernel;
pub mod logger;
pub mod report;
pub mod subsystems;

#[cfg(feature = "test-hooks")]
pub mod testobjects;

pub use api::{apply_full, apply_iface, clear, effective_policy, simulate, status, IfaceOutcome, Microseg, Settings};
pub use report::{Report, Simulation, Status};
