//! `status()` of the policy subsystem: per NIC what the kernel enforces and
//! counts, the rules' hits, the flow table, the event limiter, and the
//! warnings an administrator must see (SPEC section 7).

use std::collections::BTreeMap;

use anyhow::Result;

use crate::config::MicrosegConfig;
use crate::kernel::netdev;
use crate::kernel::object::Hook;
use crate::kernel::state::{KernelState, Loaded};
use crate::kernel::sys;
use crate::report::{NicCounts, NicStatus, RuleStatus, Status};

use super::maps::{
    EventState, NicCounters, NicKey, RuleName, EVENT_STATE, FLOWS, NIC_F_AUDIT, NIC_STATS, RULE_HITS, RULE_NAMES,
    TAP_TO_GROUP,
};
use super::NAME;

/// Whether the programs of `state` are attached, as links, to `ifindex`.
fn attached(state: &KernelState, loaded: &Loaded, ifindex: u32) -> bool {
    state.spec.programs.iter().all(|p| {
        let attach = match p.hook {
            Hook::Ingress => sys::BPF_TCX_INGRESS,
            Hook::Egress => sys::BPF_TCX_EGRESS,
        };
        loaded.prog_id(p.name).is_some_and(|id| sys::prog_query_tcx(ifindex, attach).is_ok_and(|ids| ids.contains(&id)))
    })
}

/// Why an assigned NIC carries no programs, from its link pins and the
/// group map: a defunct link while the group map holds this very netdev
/// was detached behind the library's back; a defunct link and no entry
/// for this netdev means the NIC was re-created (a guest restart) without
/// `apply_iface`.
fn why_unattached(state: &KernelState, name: &str, ifindex: u32, in_group_map: bool) -> &'static str {
    let mut links = Vec::new();
    for p in state.spec.programs {
        if let Ok(fd) = sys::obj_get(&state.link_pin(name, p.name)) {
            links.push(sys::link_info(std::os::fd::AsFd::as_fd(&fd)).map_or(0, |i| i.ifindex));
        }
    }
    if links.is_empty() {
        "it was created without apply_iface (tap_plug) and no full pass ran since"
    } else if links.iter().all(|&l| l == ifindex) {
        "its links carry other programs than the pinned ones (apply_full)"
    } else if in_group_map {
        "its programs were detached behind the library's back (apply_iface or apply_full re-attaches them)"
    } else {
        "it was re-created (a guest restart?) without apply_iface"
    }
}

pub fn status(state: &KernelState, cfg: Option<&MicrosegConfig>, out: &mut Status) -> Result<()> {
    let group_of_mark: BTreeMap<u16, &str> =
        cfg.map(|c| c.groups.values().map(|g| (g.mark, g.id.as_str())).collect()).unwrap_or_default();
    let loaded = state.open_pins()?;
    let nics = netdev::guest_nics();
    let Some(loaded) = loaded else {
        for (nic, _) in &nics {
            if let Some(g) = cfg.and_then(|c| c.group_of(nic.vmid, nic.iface)) {
                out.warnings.push(format!(
                    "{}: assigned to group {} but microseg is not loaded on this node (apply_full)",
                    nic.name(),
                    g.id
                ));
            }
        }
        return Ok(());
    };
    let groups = loaded.map(&TAP_TO_GROUP)?;
    let stats = loaded.map(&NIC_STATS)?;
    for (nic, ifindex) in &nics {
        let name = nic.name();
        let entry = groups.get(&NicKey { ifindex: *ifindex })?;
        let counters: NicCounters = stats.get_summed(&NicKey { ifindex: *ifindex })?;
        let on = attached(state, &loaded, *ifindex);
        let mark = entry.map_or(0, |e| e.mark);
        let wanted = cfg.and_then(|c| c.group_of(nic.vmid, nic.iface));
        match (wanted, entry) {
            (Some(g), _) if !on => out.warnings.push(format!(
                "{name}: assigned to group {} but carries no microseg programs: {}",
                g.id,
                why_unattached(state, &name, *ifindex, entry.is_some())
            )),
            (Some(g), None) => out.warnings.push(format!(
                "{name}: assigned to group {} in the running config but not enforced: \
                 apply_iface was not called since it was created",
                g.id
            )),
            (Some(g), Some(e)) if e.mark != g.mark => out.warnings.push(format!(
                "{name}: the running config assigns group {}, the kernel enforces mark {} (apply_full pending)",
                g.id, e.mark
            )),
            (None, Some(e)) if cfg.is_some() => out.warnings.push(format!(
                "{name}: enforced as mark {} but no longer assigned in the running config (apply_full pending)",
                e.mark
            )),
            _ => {}
        }
        out.nics.push(NicStatus {
            name,
            ifindex: *ifindex,
            group: entry.and_then(|e| group_of_mark.get(&e.mark).map(|g| g.to_string())),
            mark,
            audit: u8::from(entry.is_some_and(|e| e.flags & NIC_F_AUDIT != 0)),
            enforced: u8::from(entry.is_some() && on),
            attached: u8::from(on),
            counters: NicCounts {
                allowed: counters.allowed,
                replied: counters.replied,
                dropped: counters.dropped,
                audited: counters.audited,
                blocked: counters.blocked,
                unrecorded: counters.unrecorded,
            },
        });
    }

    // Rules: the kernel's by slot, named as the config names them.
    let config_ids: BTreeMap<RuleName, &str> =
        cfg.map(|c| c.rules.keys().map(|id| (RuleName::of(id), id.as_str())).collect()).unwrap_or_default();
    let hits = loaded.map(&RULE_HITS)?;
    for (slot, name) in loaded.map(&RULE_NAMES)?.entries()? {
        let id = config_ids.get(&name).map_or_else(|| name.as_string(), |id| id.to_string());
        let n: u64 = hits.get_summed(&slot)?;
        out.rules.insert(id, RuleStatus { hits: n, loaded: 1, configured: u8::from(config_ids.contains_key(&name)) });
    }
    for id in config_ids.values() {
        out.rules.entry(id.to_string()).or_insert(RuleStatus { hits: 0, loaded: 0, configured: 1 });
    }

    let (_, flows_info) = loaded.map_raw(FLOWS.name)?;
    out.flows.capacity = u64::from(flows_info.max_entries);
    out.flows.entries = loaded.map(&FLOWS)?.keys()?.len() as u64;

    let events: EventState = loaded.map(&EVENT_STATE)?.get_summed(&0)?;
    if let Some(s) = out.subsystems.get_mut(NAME) {
        s.counters.insert("events_emitted".into(), events.emitted);
        s.counters.insert("events_suppressed".into(), events.suppressed);
        s.counters.insert("events_lost".into(), events.lost);
    }

    // Cross-node traffic keeps its group only through gbp VXLAN devices.
    for vnet in cfg.map(|c| &c.vxlan_vnets).into_iter().flatten() {
        let dev = format!("vxlan_{vnet}");
        if let Some(ifindex) = netdev::ifindex(&dev) {
            if let Ok(Some(false)) = netdev::vxlan_gbp(ifindex) {
                out.warnings.push(format!(
                    "{dev}: the VXLAN device of vnet {vnet} lacks gbp: traffic from other nodes arrives unstamped"
                ));
            }
        }
    }
    Ok(())
}
