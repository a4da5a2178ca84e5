//! Section family of the policy: `group`, `rule`, `assignment` (SPEC
//! section 2), parsed and validated.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use super::perl::{perl_bool, perl_opt_bool, perl_opt_scalar, perl_opt_string, perl_u64};
use super::{section_from, warn_unknown, Mark, MicrosegConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub mark: Mark,
    pub parent: Option<String>,
    /// `audit` as the section sets it; `None` inherits the parent's (see
    /// [`MicrosegConfig::audit`]).
    pub audit: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// `None` is the unstamped group 0.
    pub src: Option<String>,
    pub dst: String,
    pub allow: bool,
    pub l4: L4,
}

/// What a rule matches beyond the groups: a protocol, and for TCP, UDP and
/// SCTP destination ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L4 {
    /// IP protocol number; `None` matches every frame.
    pub proto: Option<u8>,
    /// Inclusive port ranges, sorted and merged; empty matches every port.
    pub dports: Vec<(u16, u16)>,
}

impl L4 {
    /// How specific the match is: a `dport` rule before a `proto`-only rule
    /// before a rule without `proto` (SPEC section 3). Smaller is more specific.
    pub fn specificity(&self) -> u8 {
        match (self.proto, self.dports.is_empty()) {
            (Some(_), false) => 0,
            (Some(_), true) => 1,
            (None, _) => 2,
        }
    }
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// Protocols with ports.
pub fn has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

/// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6` (alias `ipv6-icmp`) or a number 0..=255.
pub fn proto_number(s: &str) -> Option<u8> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        "icmp" => PROTO_ICMP,
        "icmpv6" | "ipv6-icmp" => PROTO_ICMPV6,
        other => match other.parse::<u16>() {
            Ok(n) if n <= 255 && !other.starts_with('+') => n as u8,
            _ => return None,
        },
    })
}

fn parse_proto(id: &str, s: &str) -> Result<u8> {
    proto_number(s).ok_or_else(|| anyhow::anyhow!("microseg rule '{id}': unknown proto '{s}'"))
}

/// A list of ports and ranges as the PVE firewall writes it: `80,443,8000:8080`.
fn parse_dports(id: &str, s: &str) -> Result<Vec<(u16, u16)>> {
    let port = |p: &str| -> Result<u16> {
        let n: u64 = p.trim().parse().map_err(|_| anyhow::anyhow!("microseg rule '{id}': '{p}' is not a port"))?;
        if !(1..=65535).contains(&n) {
            bail!("microseg rule '{id}': port {n} is outside 1..=65535");
        }
        Ok(n as u16)
    };
    let mut ranges = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            bail!("microseg rule '{id}': empty entry in dport '{s}'");
        }
        let (lo, hi) = match item.split_once(':') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(item)?, port(item)?),
        };
        if lo > hi {
            bail!("microseg rule '{id}': port range {lo}:{hi} has its low end above its high end");
        }
        ranges.push((lo, hi));
    }
    // Sorted and merged: overlapping and adjacent ranges become one.
    ranges.sort();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Ok(merged)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: String,
    pub vmid: u32,
    pub iface: u32,
    pub group: String,
}

#[derive(Deserialize)]
struct GroupSection {
    #[serde(deserialize_with = "perl_u64")]
    mark: u64,
    #[serde(default, deserialize_with = "perl_opt_string")]
    parent: Option<String>,
    #[serde(default, deserialize_with = "perl_opt_bool")]
    audit: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RuleSection {
    #[serde(default, deserialize_with = "perl_opt_string")]
    src: Option<String>,
    dst: String,
    /// Absent means deny: a rule that does not say allow must not open anything.
    #[serde(default, deserialize_with = "perl_bool")]
    allow: bool,
    #[serde(default, deserialize_with = "perl_opt_scalar")]
    proto: Option<String>,
    #[serde(default, deserialize_with = "perl_opt_scalar")]
    dport: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct AssignmentSection {
    #[serde(deserialize_with = "perl_u64")]
    vmid: u64,
    #[serde(deserialize_with = "perl_u64")]
    iface: u64,
    group: String,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

pub(crate) fn parse_group(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: GroupSection = section_from(&id, "group", value)?;
    warn_unknown(cfg, &id, "group", &s.other);
    if !(1..=u64::from(Mark::MAX)).contains(&s.mark) {
        bail!("microseg group '{id}': mark {} is outside 1..=65535", s.mark);
    }
    let mark = s.mark as Mark;
    cfg.groups.insert(id.clone(), Group { id, mark, parent: s.parent, audit: s.audit });
    Ok(())
}

pub(crate) fn parse_rule(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: RuleSection = section_from(&id, "rule", value)?;
    warn_unknown(cfg, &id, "rule", &s.other);
    let proto = s.proto.as_deref().map(|p| parse_proto(&id, p)).transpose()?;
    let dports = match (&s.dport, proto) {
        (None, _) => Vec::new(),
        (Some(d), Some(p)) if has_ports(p) => parse_dports(&id, d)?,
        (Some(_), _) => bail!("microseg rule '{id}': dport needs proto tcp, udp or sctp"),
    };
    cfg.rules.insert(id.clone(), Rule { id, src: s.src, dst: s.dst, allow: s.allow, l4: L4 { proto, dports } });
    Ok(())
}

pub(crate) fn parse_assignment(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: AssignmentSection = section_from(&id, "assignment", value)?;
    warn_unknown(cfg, &id, "assignment", &s.other);
    let vmid =
        u32::try_from(s.vmid).with_context(|| format!("microseg assignment '{id}': vmid {} is too large", s.vmid))?;
    let iface =
        u32::try_from(s.iface).with_context(|| format!("microseg assignment '{id}': iface {} is too large", s.iface))?;
    cfg.assignments.insert(id.clone(), Assignment { id, vmid, iface, group: s.group });
    Ok(())
}

/// Every check of SPEC section 2 but the rule map capacity, which only
/// resolution can tell (see `resolve`).
pub fn validate(cfg: &MicrosegConfig) -> Result<()> {
    let mut by_mark: HashMap<Mark, &str> = HashMap::new();
    for g in cfg.groups.values() {
        if let Some(first) = by_mark.insert(g.mark, &g.id) {
            bail!("microseg group '{}': mark {} is already used by group '{first}'", g.id, g.mark);
        }
        if let Some(parent) = &g.parent {
            if !cfg.groups.contains_key(parent) {
                bail!("microseg group '{}': parent names unknown group '{parent}'", g.id);
            }
        }
    }
    check_parent_cycles(cfg)?;
    for r in cfg.rules.values() {
        if let Some(src) = &r.src {
            if !cfg.groups.contains_key(src) {
                bail!("microseg rule '{}': src names unknown group '{src}'", r.id);
            }
        }
        if !cfg.groups.contains_key(&r.dst) {
            bail!("microseg rule '{}': dst names unknown group '{}'", r.id, r.dst);
        }
    }
    let mut nics: HashMap<(u32, u32), &str> = HashMap::new();
    for a in cfg.assignments.values() {
        if !cfg.groups.contains_key(&a.group) {
            bail!("microseg assignment '{}': group names unknown group '{}'", a.id, a.group);
        }
        if let Some(first) = nics.insert((a.vmid, a.iface), &a.id) {
            bail!(
                "microseg assignment '{}': vmid {} iface {} is already assigned by '{first}'",
                a.id,
                a.vmid,
                a.iface
            );
        }
    }
    Ok(())
}

/// Walks every parent chain once (colouring), so a 10,000-deep chain costs
/// 10,000 steps, not 10,000 squared.
fn check_parent_cycles(cfg: &MicrosegConfig) -> Result<()> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Walking,
        Done,
    }
    let mut state: HashMap<&str, State> = HashMap::new();
    for start in cfg.groups.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut cur = Some(start.as_str());
        while let Some(id) = cur {
            match state.get(id) {
                Some(State::Done) => break,
                Some(State::Walking) => {
                    let from = path.iter().position(|p| *p == id).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..].to_vec();
                    cycle.push(id);
                    bail!("microseg group '{id}': parent chain forms a cycle ({})", cycle.join(" -> "));
                }
                None => {}
            }
            state.insert(id, State::Walking);
            path.push(id);
            cur = cfg.groups[id].parent.as_deref();
        }
        for id in path {
            state.insert(id, State::Done);
        }
    }
    Ok(())
}
