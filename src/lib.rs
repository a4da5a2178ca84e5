//! Group-based microsegmentation for Proxmox VE guests, enforced with eBPF
//! tc programs on every guest NIC (see SPEC.md).
//!
//! Layers, from the input down to the kernel:
//! - [`config`]: the `microseg` part of the SDN running config, validated;
//! - [`resolve`]: the group forest flattened to `(src, dst) -> verdict`;
//! - [`bpf`]: the embedded data plane and its description as a subsystem;
//! - [`state`]: pinned maps, programs and links, and their lifecycle;
//! - [`sys`]: the raw `bpf(2)` commands the common path uses;
//! - [`api`]: `apply_full`, `apply_iface` and `clear`.
//!
//! Nothing here knows of Perl; the binding lives in the `perl-rs` crate.

pub mod api;
pub mod bpf;
pub mod config;
pub mod lock;
pub mod netdev;
pub mod resolve;
pub mod state;
pub mod sys;
pub mod testhook;

pub use api::{apply_full, apply_iface, clear, effective_policy, IfaceOutcome, Microseg, Report, Settings};
