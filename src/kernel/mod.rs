//! Kernel state, subsystem-agnostic: objects, typed maps, pins, links, the
//! reconcile pass, the lock, netdevs, and the raw `bpf(2)` layer.

pub mod fsutil;
pub mod links;
pub mod lock;
pub mod maps;
pub mod netdev;
pub mod object;
pub mod reconcile;
pub mod ringbuf;
pub mod state;
pub mod sys;
pub mod testhook;
