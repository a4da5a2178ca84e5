//! Section family of node-wide options: `options` (at most one), with
//! `ct-max`, the capacity of the flow table (SPEC section 2), and
//! `event-rate`, the node's limit of drop and audit events per second.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;

use super::perl::perl_opt_u64;
use super::{section_from, warn_unknown, MicrosegConfig};

/// The flow table's capacity when `ct-max` is not set: 65,536 flows, about
/// 9 MiB of preallocated kernel memory (an LRU hash is preallocated).
pub const CT_MAX_DEFAULT: u32 = 65_536;
/// Bounds of `ct-max`: small enough a table still serves a node, large
/// enough for 4,096 busy guests (about 560 MiB at the top).
pub const CT_MAX_MIN: u32 = 1024;
pub const CT_MAX_MAX: u32 = 1 << 22;

/// Drop and audit events per second for the node when `event-rate` is not
/// set: enough to see what breaks, little enough for any reader.
pub const EVENT_RATE_DEFAULT: u32 = 1000;
pub const EVENT_RATE_MAX: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub id: String,
    pub ct_max: u32,
    /// Events per second for the node (0: none).
    pub event_rate: u32,
}

#[derive(Deserialize)]
struct OptionsSection {
    #[serde(default, rename = "ct-max", deserialize_with = "perl_opt_u64")]
    ct_max: Option<u64>,
    #[serde(default, rename = "event-rate", deserialize_with = "perl_opt_u64")]
    event_rate: Option<u64>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

pub(crate) fn parse_options(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: OptionsSection = section_from(&id, "options", value)?;
    warn_unknown(cfg, &id, "options", &s.other);
    if let Some(first) = &cfg.options {
        bail!("microseg options '{id}': only one options section is allowed, '{}' is one", first.id);
    }
    let ct_max = match s.ct_max {
        None => CT_MAX_DEFAULT,
        Some(n) if (u64::from(CT_MAX_MIN)..=u64::from(CT_MAX_MAX)).contains(&n) => n as u32,
        Some(n) => bail!("microseg options '{id}': ct-max {n} is outside {CT_MAX_MIN}..={CT_MAX_MAX}"),
    };
    let event_rate = match s.event_rate {
        None => EVENT_RATE_DEFAULT,
        Some(n) if n <= u64::from(EVENT_RATE_MAX) => n as u32,
        Some(n) => bail!("microseg options '{id}': event-rate {n} is outside 0..={EVENT_RATE_MAX}"),
    };
    cfg.options = Some(Options { id, ct_max, event_rate });
    Ok(())
}

impl MicrosegConfig {
    /// The flow table's capacity.
    pub fn ct_max(&self) -> u32 {
        self.options.as_ref().map_or(CT_MAX_DEFAULT, |o| o.ct_max)
    }

    /// Drop and audit events per second for the node (0: none).
    pub fn event_rate(&self) -> u32 {
        self.options.as_ref().map_or(EVENT_RATE_DEFAULT, |o| o.event_rate)
    }
}
