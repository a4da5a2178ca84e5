//! Section family of the underlay: `vtep-guard` and `srv6` (SPEC section
//! 5), with the peers of every VXLAN zone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;

use super::perl::{perl_opt_u64, perl_string_list};
use super::{section_from, warn_unknown, MicrosegConfig, SectionMap};

/// The VTEP guard (section type `vtep-guard`): VXLAN to `port` is accepted
/// on `ifaces` only from `peers`, which are the peers of every VXLAN zone
/// plus the section's own `peers` (for EVPN or other VTEPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepGuard {
    pub id: String,
    pub ifaces: Vec<String>,
    pub port: u16,
    pub peers: BTreeSet<IpAddr>,
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

pub(crate) fn parse_guard(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: GuardSection = section_from(&id, "vtep-guard", value)?;
    warn_unknown(cfg, &id, "vtep-guard", &s.other);
    if let Some(first) = &cfg.guard {
        bail!("microseg vtep-guard '{id}': only one vtep-guard section is allowed, '{}' is one", first.id);
    }
    check_ifaces(&id, "vtep-guard", &s.ifaces)?;
    let port = match s.port {
        None => 4789,
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => bail!("microseg vtep-guard '{id}': port {p} is outside 1..=65535"),
    };
    let mut peers = BTreeSet::new();
    for p in &s.peers {
        let addr = p
            .parse::<IpAddr>()
            .map_err(|_| anyhow::anyhow!("microseg vtep-guard '{id}': peer '{p}' is not an IP address"))?;
        peers.insert(addr);
    }
    cfg.guard = Some(VtepGuard { id, ifaces: s.ifaces, port, peers });
    Ok(())
}

/// Underlay interface names: at least one, each a possible netdev name.
fn check_ifaces(id: &str, ty: &str, ifaces: &[String]) -> Result<()> {
    if ifaces.is_empty() {
        bail!("microseg {ty} '{id}': ifaces lists no interface");
    }
    for iface in ifaces {
        if iface.len() > 15 || iface.contains(['/', ':']) || iface == "." || iface == ".." {
            bail!("microseg {ty} '{id}': '{iface}' is not an interface name");
        }
    }
    Ok(())
}

/// The SRv6 carrier (section type `srv6`): on `ifaces` the group is written
/// into the segment routing header's tag of the SRv6 packets this node
/// encapsulates, and restored from it on SRv6 from `peers` (the outer
/// source addresses of the other nodes' SRv6 encapsulation, `ip sr
/// tunsrc`); SRv6 from anyone else is dropped there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv6 {
    pub id: String,
    pub ifaces: Vec<String>,
    pub peers: BTreeSet<Ipv6Addr>,
}

#[derive(Deserialize)]
struct Srv6Section {
    #[serde(deserialize_with = "perl_string_list")]
    ifaces: Vec<String>,
    #[serde(default, deserialize_with = "perl_string_list")]
    peers: Vec<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

pub(crate) fn parse_srv6(cfg: &mut MicrosegConfig, id: String, value: Value) -> Result<()> {
    let s: Srv6Section = section_from(&id, "srv6", value)?;
    warn_unknown(cfg, &id, "srv6", &s.other);
    if let Some(first) = &cfg.srv6 {
        bail!("microseg srv6 '{id}': only one srv6 section is allowed, '{}' is one", first.id);
    }
    check_ifaces(&id, "srv6", &s.ifaces)?;
    let mut peers = BTreeSet::new();
    for p in &s.peers {
        let addr = p
            .parse::<Ipv6Addr>()
            .map_err(|_| anyhow::anyhow!("microseg srv6 '{id}': peer '{p}' is not an IPv6 address"))?;
        peers.insert(addr);
    }
    cfg.srv6 = Some(Srv6 { id, ifaces: s.ifaces, peers });
    Ok(())
}

/// The peers of every VXLAN zone (`peers`: a comma or space separated list
/// of IPv4 and IPv6 addresses).
pub(crate) fn vxlan_zone_peers(zones: Option<&SectionMap>, warnings: &mut Vec<String>) -> BTreeSet<IpAddr> {
    let mut peers = BTreeSet::new();
    for (id, zone) in zones.map(|z| &z.ids).into_iter().flatten() {
        if zone.get("type").and_then(Value::as_str) != Some("vxlan") {
            continue;
        }
        let Some(list) = zone.get("peers").and_then(Value::as_str) else { continue };
        for p in list.split([',', ' ', ';']).filter(|p| !p.is_empty()) {
            match p.parse::<IpAddr>() {
                Ok(a) => {
                    peers.insert(a);
                }
                Err(_) => warnings.push(format!("zone '{id}': peer '{p}' is not an IP address, not admitted by the VTEP guard")),
            }
        }
    }
    peers
}

/// The vnets whose zone is a VXLAN zone (their device is `vxlan_<vnet>`).
pub(crate) fn vxlan_vnets(zones: Option<&SectionMap>, vnets: Option<&SectionMap>) -> BTreeSet<String> {
    let vxlan_zone = |id: &str| {
        zones.and_then(|z| z.ids.get(id)).and_then(|z| z.get("type")).and_then(Value::as_str) == Some("vxlan")
    };
    vnets
        .map(|v| &v.ids)
        .into_iter()
        .flatten()
        .filter(|(_, vnet)| vnet.get("zone").and_then(Value::as_str).is_some_and(vxlan_zone))
        .map(|(id, _)| id.clone())
        .collect()
}
