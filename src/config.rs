//! The `microseg` part of the SDN running config (SPEC section 2).
//!
//! The file carries the whole SDN configuration; only the `microseg` key is
//! read. Sections follow the proxmox-ve-config conventions: `{ "ids": { id: {
//! "type": ..., ... } } }`, numbers may arrive as JSON strings and booleans as
//! 0/1, and unknown types and fields only warn so that a newer pve-network does
//! not break an older library.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// A group mark: 1..=65535. Mark 0 is the unstamped group and never configured.
pub type Mark = u16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub mark: Mark,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// `None` is the unstamped group 0.
    pub src: Option<String>,
    pub dst: String,
    pub allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: String,
    pub vmid: u32,
    pub iface: u32,
    pub group: String,
}

/// The VTEP guard (section type `vtep-guard`): VXLAN to `port` is accepted
/// on `ifaces` only from `peers`, which are the peers of every VXLAN zone
/// plus the section's own `peers` (for EVPN or other VTEPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepGuard {
    pub id: String,
    pub ifaces: Vec<String>,
    pub port: u16,
    pub peers: BTreeSet<Ipv4Addr>,
}

/// A validated microseg configuration. Maps are keyed by section id, so every
/// iteration (and so every error message) is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicrosegConfig {
    pub groups: BTreeMap<String, Group>,
    pub rules: BTreeMap<String, Rule>,
    pub assignments: BTreeMap<String, Assignment>,
    pub guard: Option<VtepGuard>,
}

impl MicrosegConfig {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.rules.is_empty() && self.assignments.is_empty() && self.guard.is_none()
    }

    /// The group of guest NIC `(vmid, iface)`, if it is assigned.
    pub fn group_of(&self, vmid: u32, iface: u32) -> Option<&Group> {
        self.assignments
            .values()
            .find(|a| a.vmid == vmid && a.iface == iface)
            .and_then(|a| self.groups.get(&a.group))
    }
}

#[derive(Deserialize)]
struct RunningConfig {
    #[serde(default)]
    microseg: Option<SectionMap>,
    /// Read only for the peers of VXLAN zones, which the VTEP guard admits.
    #[serde(default)]
    zones: Option<SectionMap>,
}

#[derive(Deserialize)]
struct SectionMap {
    #[serde(default)]
    ids: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct GroupSection {
    #[serde(deserialize_with = "perl_u64")]
    mark: u64,
    #[serde(default, deserialize_with = "perl_opt_string")]
    parent: Option<String>,
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
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct GuardSection {
    #[serde(deserialize_with = "perl_string_list")]
    ifaces: Vec<String>,
    #[serde(default, deserialize_with = "perl_opt_u64")]
    port: Option<u64>,
    #[serde(default, deserialize_with = "perl_string_list")]
    peers: Vec<String>,
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

/// Reads the running config at `path`. No file means nothing is configured.
pub fn load(path: &Path) -> Result<MicrosegConfig> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("no running config at {}: nothing configured", path.display());
            return Ok(MicrosegConfig::default());
        }
        Err(e) => return Err(e).with_context(|| format!("read running config {}", path.display())),
    };
    parse(&text).with_context(|| format!("running config {}", path.display()))
}

/// Parses and validates a running config document (the whole SDN JSON).
pub fn parse(text: &[u8]) -> Result<MicrosegConfig> {
    let doc: RunningConfig = serde_json::from_slice(text).context("invalid JSON")?;
    let Some(section_map) = doc.microseg else {
        return Ok(MicrosegConfig::default());
    };
    let mut cfg = MicrosegConfig::default();
    for (id, value) in section_map.ids {
        parse_section(&mut cfg, id, value)?;
    }
    if let Some(guard) = &mut cfg.guard {
        guard.peers.extend(vxlan_zone_peers(doc.zones.as_ref()));
    }
    validate(&cfg)?;
    Ok(cfg)
}

/// The IPv4 peers of every VXLAN zone (`peers`: a comma or space separated
/// list). IPv6 peers are not guarded yet and are skipped with a warning.
fn vxlan_zone_peers(zones: Option<&SectionMap>) -> BTreeSet<Ipv4Addr> {
    let mut peers = BTreeSet::new();
    for (id, zone) in zones.map(|z| &z.ids).into_iter().flatten() {
        if zone.get("type").and_then(Value::as_str) != Some("vxlan") {
            continue;
        }
        let Some(list) = zone.get("peers").and_then(Value::as_str) else { continue };
        for p in list.split([',', ' ', ';']).filter(|p| !p.is_empty()) {
            match p.parse::<Ipv4Addr>() {
                Ok(a) => {
                    peers.insert(a);
                }
                Err(_) => log::warn!("zone '{id}': peer '{p}' is not an IPv4 address, not admitted by the VTEP guard"),
            }
        }
    }
    peers
}

fn parse_section(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let ty = value.get("type").and_then(Value::as_str).map(str::to_owned);
    match ty.as_deref() {
        Some("group") => {
            let s: GroupSection = section_from(&id, "group", value)?;
            warn_unknown(&id, "group", &s.other);
            if !(1..=u64::from(Mark::MAX)).contains(&s.mark) {
                bail!("microseg group '{id}': mark {} is outside 1..=65535", s.mark);
            }
            let mark = s.mark as Mark;
            cfg.groups.insert(id.clone(), Group { id, mark, parent: s.parent });
        }
        Some("rule") => {
            let s: RuleSection = section_from(&id, "rule", value)?;
            warn_unknown(&id, "rule", &s.other);
            cfg.rules.insert(id.clone(), Rule { id, src: s.src, dst: s.dst, allow: s.allow });
        }
        Some("assignment") => {
            let s: AssignmentSection = section_from(&id, "assignment", value)?;
            warn_unknown(&id, "assignment", &s.other);
            let vmid = u32::try_from(s.vmid)
                .with_context(|| format!("microseg assignment '{id}': vmid {} is too large", s.vmid))?;
            let iface = u32::try_from(s.iface)
                .with_context(|| format!("microseg assignment '{id}': iface {} is too large", s.iface))?;
            cfg.assignments.insert(id.clone(), Assignment { id, vmid, iface, group: s.group });
        }
        Some("vtep-guard") => {
            let s: GuardSection = section_from(&id, "vtep-guard", value)?;
            warn_unknown(&id, "vtep-guard", &s.other);
            if let Some(first) = &cfg.guard {
                bail!("microseg vtep-guard '{id}': only one vtep-guard section is allowed, '{}' is one", first.id);
            }
            if s.ifaces.is_empty() {
                bail!("microseg vtep-guard '{id}': ifaces lists no interface");
            }
            for iface in &s.ifaces {
                if iface.len() > 15 || iface.contains(['/', ':']) || iface == "." || iface == ".." {
                    bail!("microseg vtep-guard '{id}': '{iface}' is not an interface name");
                }
            }
            let port = match s.port {
                None => 4789,
                Some(p) if (1..=65535).contains(&p) => p as u16,
                Some(p) => bail!("microseg vtep-guard '{id}': port {p} is outside 1..=65535"),
            };
            let mut peers = BTreeSet::new();
            for p in &s.peers {
                let addr = p
                    .parse::<Ipv4Addr>()
                    .map_err(|_| anyhow::anyhow!("microseg vtep-guard '{id}': peer '{p}' is not an IPv4 address"))?;
                peers.insert(addr);
            }
            cfg.guard = Some(VtepGuard { id, ifaces: s.ifaces, port, peers });
        }
        Some(other) => log::warn!("microseg section '{id}': unknown type '{other}' ignored"),
        None => log::warn!("microseg section '{id}': no type, ignored"),
    }
    Ok(())
}

fn section_from<T: serde::de::DeserializeOwned>(id: &str, ty: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).with_context(|| format!("microseg {ty} '{id}'"))
}

fn warn_unknown(id: &str, ty: &str, other: &BTreeMap<String, Value>) {
    for key in other.keys().filter(|k| *k != "type" && *k != "id") {
        log::warn!("microseg {ty} '{id}': unknown field '{key}' ignored");
    }
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

// Perl writes numbers as JSON strings as often as not, and booleans as 0/1.

#[derive(Deserialize)]
#[serde(untagged)]
enum PerlScalar {
    Num(serde_json::Number),
    Str(String),
    Bool(bool),
}

fn perl_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match PerlScalar::deserialize(d)? {
        PerlScalar::Num(n) => n.as_u64().ok_or_else(|| D::Error::custom(format!("expected an unsigned integer, got {n}"))),
        PerlScalar::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("expected an unsigned integer, got \"{s}\""))),
        PerlScalar::Bool(b) => Err(D::Error::custom(format!("expected an unsigned integer, got {b}"))),
    }
}

fn perl_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    match PerlScalar::deserialize(d)? {
        PerlScalar::Bool(b) => Ok(b),
        PerlScalar::Num(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(D::Error::custom(format!("expected 0 or 1, got {n}"))),
        },
        PerlScalar::Str(s) => match s.trim() {
            "0" | "" => Ok(false),
            "1" => Ok(true),
            _ => Err(D::Error::custom(format!("expected 0 or 1, got \"{s}\""))),
        },
    }
}

fn perl_opt_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "perl_u64")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// A list as PVE writes it: one string, comma or space separated, or an array.
fn perl_string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let items = match List::deserialize(d)? {
        List::One(s) => s.split([',', ' ', ';']).map(str::to_owned).collect(),
        List::Many(v) => v,
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

/// Perl's SectionConfig writes an unset optional value as an empty string or null.
fn perl_opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(sections: &str) -> String {
        format!(r#"{{"version": 7, "zones": {{"ids": {{"z1": {{"type": "vxlan"}}}}}}, "microseg": {{"ids": {{ {sections} }}}}}}"#)
    }

    fn err(sections: &str) -> String {
        format!("{:#}", parse(doc(sections).as_bytes()).unwrap_err())
    }

    #[test]
    fn spec_example_parses() {
        let cfg = parse(
            doc(r#"
            "app":  { "type": "group", "id": "app", "mark": 10 },
            "web":  { "type": "group", "id": "web", "mark": 11, "parent": "app" },
            "mon":  { "type": "group", "id": "mon", "mark": 20 },
            "r1":   { "type": "rule",  "id": "r1", "src": "mon", "dst": "app", "allow": 1 },
            "r2":   { "type": "rule",  "id": "r2", "dst": "web", "allow": 1 },
            "a100": { "type": "assignment", "id": "a100", "vmid": 100, "iface": 0, "group": "web" }"#)
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(cfg.groups.len(), 3);
        assert_eq!(cfg.groups["web"].parent.as_deref(), Some("app"));
        assert_eq!(cfg.rules["r2"].src, None);
        assert!(cfg.rules["r1"].allow);
        assert_eq!(cfg.group_of(100, 0).unwrap().mark, 11);
        assert!(cfg.group_of(100, 1).is_none());
    }

    #[test]
    fn stringly_numbers_and_booleans() {
        let cfg = parse(
            doc(r#"
            "a": { "type": "group", "mark": "10" },
            "r": { "type": "rule", "src": "", "dst": "a", "allow": true },
            "s": { "type": "rule", "src": "a", "dst": "a", "allow": "0" },
            "x": { "type": "assignment", "vmid": "100", "iface": "2", "group": "a" }"#)
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(cfg.groups["a"].mark, 10);
        assert_eq!(cfg.rules["r"].src, None);
        assert!(cfg.rules["r"].allow);
        assert!(!cfg.rules["s"].allow);
        assert_eq!((cfg.assignments["x"].vmid, cfg.assignments["x"].iface), (100, 2));
    }

    #[test]
    fn missing_allow_is_deny() {
        let cfg = parse(doc(r#""a": {"type":"group","mark":1}, "r": {"type":"rule","dst":"a"}"#).as_bytes()).unwrap();
        assert!(!cfg.rules["r"].allow);
    }

    #[test]
    fn absent_file_or_key_is_nothing_configured() {
        assert!(parse(br#"{"version": 1, "zones": {"ids": {}}}"#).unwrap().is_empty());
        assert!(load(Path::new("/nonexistent/running-config")).unwrap().is_empty());
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        let cfg = parse(
            doc(r#""a": { "type": "group", "mark": 1, "comment": "x", "color": 3 },
                   "f": { "type": "stateful-rule", "whatever": 1 }"#)
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(cfg.groups.len(), 1);
        assert!(cfg.rules.is_empty());
    }

    #[test]
    fn mark_out_of_range() {
        assert_eq!(err(r#""g0": {"type":"group","mark":0}"#), "microseg group 'g0': mark 0 is outside 1..=65535");
        assert_eq!(
            err(r#""big": {"type":"group","mark":65536}"#),
            "microseg group 'big': mark 65536 is outside 1..=65535"
        );
        assert!(err(r#""neg": {"type":"group","mark":-1}"#).starts_with("microseg group 'neg'"));
        assert!(err(r#""s": {"type":"group","mark":"ten"}"#).starts_with("microseg group 's'"));
    }

    #[test]
    fn duplicate_mark() {
        assert_eq!(
            err(r#""a": {"type":"group","mark":5}, "b": {"type":"group","mark":"5"}"#),
            "microseg group 'b': mark 5 is already used by group 'a'"
        );
    }

    #[test]
    fn unknown_group_references() {
        assert_eq!(
            err(r#""a": {"type":"group","mark":1,"parent":"nope"}"#),
            "microseg group 'a': parent names unknown group 'nope'"
        );
        assert_eq!(
            err(r#""a": {"type":"group","mark":1}, "r": {"type":"rule","src":"x","dst":"a","allow":1}"#),
            "microseg rule 'r': src names unknown group 'x'"
        );
        assert_eq!(
            err(r#""a": {"type":"group","mark":1}, "r": {"type":"rule","src":"a","dst":"y","allow":1}"#),
            "microseg rule 'r': dst names unknown group 'y'"
        );
        assert_eq!(
            err(r#""a": {"type":"group","mark":1}, "n": {"type":"assignment","vmid":1,"iface":0,"group":"z"}"#),
            "microseg assignment 'n': group names unknown group 'z'"
        );
    }

    #[test]
    fn parent_cycle() {
        assert_eq!(
            err(r#""a": {"type":"group","mark":1,"parent":"c"},
                   "b": {"type":"group","mark":2,"parent":"a"},
                   "c": {"type":"group","mark":3,"parent":"b"}"#),
            "microseg group 'a': parent chain forms a cycle (a -> c -> b -> a)"
        );
        assert_eq!(
            err(r#""self": {"type":"group","mark":1,"parent":"self"}"#),
            "microseg group 'self': parent chain forms a cycle (self -> self)"
        );
    }

    #[test]
    fn duplicate_assignment() {
        assert_eq!(
            err(r#""g": {"type":"group","mark":1},
                   "a1": {"type":"assignment","vmid":100,"iface":0,"group":"g"},
                   "a2": {"type":"assignment","vmid":"100","iface":"0","group":"g"}"#),
            "microseg assignment 'a2': vmid 100 iface 0 is already assigned by 'a1'"
        );
    }

    #[test]
    fn malformed_sections_name_the_section() {
        assert!(err(r#""r": {"type":"rule","allow":1}"#).starts_with("microseg rule 'r': missing field `dst`"));
        assert!(err(r#""g": {"type":"group","mark":1}, "r": {"type":"rule","dst":"g","allow":2}"#)
            .starts_with("microseg rule 'r'"));
        assert!(err(r#""a": {"type":"assignment","vmid":"x","iface":0,"group":"g"}"#)
            .starts_with("microseg assignment 'a'"));
        assert!(format!("{:#}", parse(b"{not json").unwrap_err()).starts_with("invalid JSON"));
    }

    #[test]
    fn vtep_guard_section_and_zone_peers() {
        let text = r#"{"zones": {"ids": {
              "vx": {"type": "vxlan", "peers": "192.0.2.1, 192.0.2.2,2001:db8::1"},
              "evpn": {"type": "evpn", "peers": "192.0.2.99"}}},
            "microseg": {"ids": {"g": {"type": "vtep-guard", "ifaces": "eno1,eno2", "peers": ["198.51.100.7"]}}}}"#;
        let cfg = parse(text.as_bytes()).unwrap();
        let g = cfg.guard.unwrap();
        assert_eq!(g.ifaces, ["eno1", "eno2"]);
        assert_eq!(g.port, 4789);
        let peers: Vec<String> = g.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["192.0.2.1", "192.0.2.2", "198.51.100.7"]);
        assert!(!cfg.groups.is_empty() || cfg.rules.is_empty());
    }

    #[test]
    fn vtep_guard_errors() {
        assert_eq!(err(r#""g": {"type": "vtep-guard", "ifaces": ""}"#), "microseg vtep-guard 'g': ifaces lists no interface");
        assert_eq!(
            err(r#""g": {"type": "vtep-guard", "ifaces": "eth0", "port": 0}"#),
            "microseg vtep-guard 'g': port 0 is outside 1..=65535"
        );
        assert_eq!(
            err(r#""g": {"type": "vtep-guard", "ifaces": "eth0", "peers": "10.0.0.300"}"#),
            "microseg vtep-guard 'g': peer '10.0.0.300' is not an IPv4 address"
        );
        assert_eq!(
            err(r#""g": {"type": "vtep-guard", "ifaces": "../x"}"#),
            "microseg vtep-guard 'g': '../x' is not an interface name"
        );
        assert_eq!(
            err(r#""g": {"type": "vtep-guard", "ifaces": "a"}, "h": {"type": "vtep-guard", "ifaces": "b"}"#),
            "microseg vtep-guard 'h': only one vtep-guard section is allowed, 'g' is one"
        );
    }

    #[test]
    fn long_parent_chain_is_linear() {
        let mut s = String::from(r#""g0": {"type":"group","mark":1}"#);
        for i in 1..10_000 {
            s.push_str(&format!(r#", "g{i}": {{"type":"group","mark":{},"parent":"g{}"}}"#, i + 1, i - 1));
        }
        let cfg = parse(doc(&s).as_bytes()).unwrap();
        assert_eq!(cfg.groups.len(), 10_000);
    }
}
