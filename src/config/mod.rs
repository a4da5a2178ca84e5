//! The `microseg` part of the SDN running config (SPEC section 2).
//!
//! The file carries the whole SDN configuration; only the `microseg` key is
//! read (and the peers of VXLAN zones). Sections follow the proxmox-ve-config
//! conventions: `{ "ids": { id: { "type": ..., ... } } }`, numbers may arrive
//! as JSON strings and booleans as 0/1 (`perl`), and unknown types and fields
//! only warn so that a newer pve-network does not break an older library.
//! One module per section family: `policy`, `underlay`.

mod perl;
pub mod options;
pub mod policy;
pub mod underlay;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

pub use policy::{validate, Assignment, Group, Rule, L4};
pub use underlay::{Srv6, VtepGuard};

/// A group mark: 1..=65535. Mark 0 is the unstamped group and never configured.
pub type Mark = u16;

/// A validated microseg configuration. Maps are keyed by section id, so every
/// iteration (and so every error message) is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicrosegConfig {
    pub groups: BTreeMap<String, Group>,
    pub rules: BTreeMap<String, Rule>,
    pub assignments: BTreeMap<String, Assignment>,
    pub guard: Option<VtepGuard>,
    /// The SRv6 carrier, if configured.
    pub srv6: Option<Srv6>,
    /// The `options` section, if any (see [`MicrosegConfig::ct_max`]).
    pub options: Option<options::Options>,
    /// The VTEP peers of every VXLAN zone: addresses a guest may never claim.
    pub zone_peers: std::collections::BTreeSet<std::net::IpAddr>,
    /// The vnets of VXLAN zones: PVE names their VXLAN device `vxlan_<vnet>`.
    pub vxlan_vnets: std::collections::BTreeSet<String>,
    /// Sections of types this module does not parse, by id: `(type, body)`.
    /// A subsystem may read its own; the rest are warned about once.
    pub other: BTreeMap<String, (String, Value)>,
    /// What the config carries that is ignored (unknown fields, keys of an
    /// unexpected shape): reported once per config change, see `digest`.
    pub warnings: Vec<String>,
    /// SHA-256 of the running config's bytes, hex.
    pub digest: String,
}

impl MicrosegConfig {
    /// Nothing at all configured: every subsystem is removed.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.rules.is_empty()
            && self.assignments.is_empty()
            && self.guard.is_none()
            && self.srv6.is_none()
            && self.options.is_none()
            && self.other.is_empty()
    }

    /// The group of guest NIC `(vmid, iface)`, if it is assigned.
    pub fn group_of(&self, vmid: u32, iface: u32) -> Option<&Group> {
        self.assignments
            .values()
            .find(|a| a.vmid == vmid && a.iface == iface)
            .and_then(|a| self.groups.get(&a.group))
    }

    /// Whether group `id` is in audit mode: its own `audit`, else the
    /// nearest ancestor's that sets one, else enforce. Call on a validated
    /// config (no cycles).
    pub fn audit(&self, id: &str) -> bool {
        let mut cur = self.groups.get(id);
        while let Some(g) = cur {
            if let Some(audit) = g.audit {
                return audit;
            }
            cur = g.parent.as_deref().and_then(|p| self.groups.get(p));
        }
        false
    }

    /// The sections of type `ty` that this module does not parse itself.
    pub fn sections_of<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.other.iter().filter(move |(_, (t, _))| t == ty).map(|(id, (_, v))| (id.as_str(), v))
    }
}

#[derive(Deserialize)]
struct RunningConfig {
    #[serde(default)]
    microseg: Option<SectionMap>,
    /// Read only for the peers of VXLAN zones; kept loose, since a key
    /// other than `microseg` of an unexpected shape must not invalidate
    /// the microseg configuration (it is ignored with a warning).
    #[serde(default)]
    zones: Option<Value>,
    /// Read only for the VXLAN devices of VXLAN zones (`status` checks gbp).
    #[serde(default)]
    vnets: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct SectionMap {
    #[serde(default)]
    pub(crate) ids: BTreeMap<String, Value>,
}

/// What identifies one version of the running config without reading it:
/// device, inode, size, modification and change times (ns). pve-network
/// replaces the file (write, then rename: a new inode) on every commit, and
/// any write in place changes the times; `None` if there is no file.
pub fn signature(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Reads the running config at `path`; `None` if there is no such file.
pub fn load(path: &Path) -> Result<Option<MicrosegConfig>> {
    crate::kernel::testhook::config_read();
    // A FIFO, a device or a huge file fails at once, not after a hang.
    let Some(text) = crate::kernel::fsutil::read_regular(path, true).context("read running config")? else {
        return Ok(None);
    };
    parse(&text).map(Some).with_context(|| format!("running config {}", path.display()))
}

/// Parses and validates a running config document (the whole SDN JSON).
pub fn parse(text: &[u8]) -> Result<MicrosegConfig> {
    let doc: RunningConfig = serde_json::from_slice(text).context("invalid JSON")?;
    let Some(section_map) = doc.microseg else {
        return Ok(MicrosegConfig { digest: digest(text), ..Default::default() });
    };
    let mut cfg = MicrosegConfig { digest: digest(text), ..Default::default() };
    for (id, value) in section_map.ids {
        parse_section(&mut cfg, id, value)?;
    }
    let zones = match doc.zones.map(serde_json::from_value::<SectionMap>) {
        Some(Ok(zones)) => Some(zones),
        Some(Err(e)) => {
            cfg.warnings.push(format!("running config: key 'zones' is not a section map ({e}), ignored"));
            None
        }
        None => None,
    };
    cfg.zone_peers = underlay::vxlan_zone_peers(zones.as_ref(), &mut cfg.warnings);
    let vnets = doc.vnets.and_then(|v| serde_json::from_value::<SectionMap>(v).ok());
    cfg.vxlan_vnets = underlay::vxlan_vnets(zones.as_ref(), vnets.as_ref());
    // The guard admits the SRv6 carrier's peers as well: both name the
    // cluster's nodes on the underlay.
    let srv6_peers = cfg.srv6.iter().flat_map(|s| s.peers.iter().map(|&p| IpAddr::V6(p)));
    let extra: Vec<IpAddr> = cfg.zone_peers.iter().copied().chain(srv6_peers).collect();
    if let Some(guard) = &mut cfg.guard {
        guard.peers.extend(extra);
    }
    validate(&cfg)?;
    Ok(cfg)
}

fn digest(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_section(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let ty = value.get("type").and_then(Value::as_str).map(str::to_owned);
    match ty.as_deref() {
        Some("group") => policy::parse_group(cfg, id, value),
        Some("rule") => policy::parse_rule(cfg, id, value),
        Some("assignment") => policy::parse_assignment(cfg, id, value),
        Some("vtep-guard") => underlay::parse_guard(cfg, id, value),
        Some("srv6") => underlay::parse_srv6(cfg, id, value),
        Some("options") => options::parse_options(cfg, id, value),
        Some(other) => {
            cfg.other.insert(id, (other.to_string(), value));
            Ok(())
        }
        None => {
            cfg.warnings.push(format!("microseg section '{id}': no type, ignored"));
            Ok(())
        }
    }
}

pub(crate) fn section_from<T: serde::de::DeserializeOwned>(id: &str, ty: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).with_context(|| format!("microseg {ty} '{id}'"))
}

pub(crate) fn warn_unknown(cfg: &mut MicrosegConfig, id: &str, ty: &str, other: &BTreeMap<String, Value>) {
    for key in other.keys().filter(|k| *k != "type" && *k != "id") {
        cfg.warnings.push(format!("microseg {ty} '{id}': unknown field '{key}' ignored"));
    }
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
        assert!(load(Path::new("/nonexistent/running-config")).unwrap().is_none());
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
        assert_eq!(cfg.sections_of("stateful-rule").map(|(id, _)| id).collect::<Vec<_>>(), ["f"]);
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
              "vx": {"type": "vxlan", "peers": "192.0.2.1, 192.0.2.2,2001:db8::1,not-an-address"},
              "evpn": {"type": "evpn", "peers": "192.0.2.99"}}},
            "microseg": {"ids": {"g": {"type": "vtep-guard", "ifaces": "eno1,eno2", "peers": ["198.51.100.7"]}}}}"#;
        let cfg = parse(text.as_bytes()).unwrap();
        let g = cfg.guard.unwrap();
        assert_eq!(g.ifaces, ["eno1", "eno2"]);
        assert_eq!(g.port, 4789);
        let peers: Vec<String> = g.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1"]);
        assert!(!cfg.groups.is_empty() || cfg.rules.is_empty());
    }

    #[test]
    fn srv6_section_and_its_peers_in_the_guard() {
        let text = r#"{"microseg": {"ids": {
            "s": {"type": "srv6", "ifaces": "eno1 eno2", "peers": "fc00:b::1,fc00:c::1", "color": 1},
            "g": {"type": "vtep-guard", "ifaces": "eno1", "peers": "192.0.2.7"}}}}"#;
        let cfg = parse(text.as_bytes()).unwrap();
        let s = cfg.srv6.clone().unwrap();
        assert_eq!(s.ifaces, ["eno1", "eno2"]);
        let peers: Vec<String> = s.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["fc00:b::1", "fc00:c::1"]);
        let guard: Vec<String> = cfg.guard.as_ref().unwrap().peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(guard, ["192.0.2.7", "fc00:b::1", "fc00:c::1"], "the guard admits the carrier's peers");
        assert_eq!(cfg.warnings, ["microseg srv6 's': unknown field 'color' ignored"]);
        assert!(!cfg.is_empty());
    }

    #[test]
    fn srv6_errors() {
        assert_eq!(err(r#""s": {"type": "srv6", "ifaces": ""}"#), "microseg srv6 's': ifaces lists no interface");
        assert_eq!(
            err(r#""s": {"type": "srv6", "ifaces": "eth0", "peers": "192.0.2.1"}"#),
            "microseg srv6 's': peer '192.0.2.1' is not an IPv6 address"
        );
        assert_eq!(err(r#""s": {"type": "srv6", "ifaces": "a/b"}"#), "microseg srv6 's': 'a/b' is not an interface name");
        assert_eq!(
            err(r#""s": {"type": "srv6", "ifaces": "a"}, "t": {"type": "srv6", "ifaces": "b"}"#),
            "microseg srv6 't': only one srv6 section is allowed, 's' is one"
        );
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
            "microseg vtep-guard 'g': peer '10.0.0.300' is not an IP address"
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

    #[test]
    fn options_ct_max() {
        let ok = |v: &str| parse(doc(&format!(r#""o": {{"type":"options","ct-max":{v}}}"#)).as_bytes()).unwrap().ct_max();
        assert_eq!(parse(doc("").as_bytes()).unwrap().ct_max(), options::CT_MAX_DEFAULT);
        assert_eq!(ok("262144"), 262144);
        assert_eq!(ok(r#""4096""#), 4096);
        assert_eq!(err(r#""o": {"type":"options","ct-max":10}"#), "microseg options 'o': ct-max 10 is outside 1024..=4194304");
        assert_eq!(
            err(r#""o": {"type":"options"}, "p": {"type":"options"}"#),
            "microseg options 'p': only one options section is allowed, 'o' is one"
        );
    }

    #[test]
    fn rule_protocols_and_ports() {
        let cfg = parse(
            doc(r#""g": {"type":"group","mark":1},
                   "a": {"type":"rule","dst":"g","allow":1,"proto":"tcp","dport":"443, 80,8000:8080,8079"},
                   "b": {"type":"rule","dst":"g","allow":1,"proto":"ipv6-icmp"},
                   "c": {"type":"rule","dst":"g","allow":1,"proto":"ICMPv6"},
                   "d": {"type":"rule","dst":"g","allow":1,"proto":"6","dport":22},
                   "e": {"type":"rule","dst":"g","allow":1,"proto":47},
                   "f": {"type":"rule","dst":"g","allow":1,"proto":"sctp","dport":"1:65535"},
                   "h": {"type":"rule","dst":"g","allow":1,"proto":"","dport":""}"#)
            .as_bytes(),
        )
        .unwrap();
        let l4 = |id: &str| cfg.rules[id].l4.clone();
        assert_eq!(l4("a"), L4 { proto: Some(6), dports: vec![(80, 80), (443, 443), (8000, 8080)] }, "sorted and merged");
        assert_eq!(l4("b"), L4 { proto: Some(58), dports: vec![] });
        assert_eq!(l4("c"), l4("b"));
        assert_eq!(l4("d"), L4 { proto: Some(6), dports: vec![(22, 22)] });
        assert_eq!(l4("e"), L4 { proto: Some(47), dports: vec![] });
        assert_eq!(l4("f"), L4 { proto: Some(132), dports: vec![(1, 65535)] });
        assert_eq!(l4("h"), L4::default(), "empty strings are absent, as SectionConfig writes them");
        assert_eq!((l4("a").specificity(), l4("b").specificity(), l4("h").specificity()), (0, 1, 2));
    }

    #[test]
    fn rule_protocol_and_port_errors() {
        let rule = |extra: &str| err(&format!(r#""g": {{"type":"group","mark":1}}, "r": {{"type":"rule","dst":"g","allow":1,{extra}}}"#));
        assert_eq!(rule(r#""proto":"tpc""#), "microseg rule 'r': unknown proto 'tpc'");
        assert_eq!(rule(r#""proto":"256""#), "microseg rule 'r': unknown proto '256'");
        assert_eq!(rule(r#""proto":"-1""#), "microseg rule 'r': unknown proto '-1'");
        assert_eq!(rule(r#""dport":"80""#), "microseg rule 'r': dport needs proto tcp, udp or sctp");
        assert_eq!(rule(r#""proto":"icmp","dport":"80""#), "microseg rule 'r': dport needs proto tcp, udp or sctp");
        assert_eq!(rule(r#""proto":"tcp","dport":"0""#), "microseg rule 'r': port 0 is outside 1..=65535");
        assert_eq!(rule(r#""proto":"tcp","dport":"80,65536""#), "microseg rule 'r': port 65536 is outside 1..=65535");
        assert_eq!(
            rule(r#""proto":"udp","dport":"5099:5000""#),
            "microseg rule 'r': port range 5099:5000 has its low end above its high end"
        );
        assert_eq!(rule(r#""proto":"udp","dport":"http""#), "microseg rule 'r': 'http' is not a port");
        assert_eq!(rule(r#""proto":"udp","dport":"80,,81""#), "microseg rule 'r': empty entry in dport '80,,81'");
        assert_eq!(rule(r#""proto":"udp","dport":"1:2:3""#), "microseg rule 'r': '2:3' is not a port");
    }

    #[test]
    fn another_key_of_an_unexpected_shape_does_not_invalidate_microseg() {
        for zones in [r#""zones": "broken""#, r#""zones": {"ids": 7}"#, r#""zones": [1, 2]"#, r#""zones": null"#] {
            let text = format!(r#"{{ {zones}, "vnets": 5, "microseg": {{"ids": {{"g": {{"type": "group", "mark": 1}}}}}}}}"#);
            let cfg = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{zones}: {e:#}"));
            assert_eq!(cfg.groups.len(), 1, "{zones}");
            assert!(cfg.zone_peers.is_empty());
        }
    }
}
