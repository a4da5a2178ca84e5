//! The three entry points of SPEC section 6, in plain Rust.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::bpf::{Hook, Subsystem, GUARD_CONFIG, MICROSEG_OBJECT, RULES, TAP_TO_GROUP, VTEP_PEERS};
use crate::config::{self, Assignment, Mark, MicrosegConfig, VtepGuard};
use crate::lock::Mode;
use crate::netdev::{self, GuestNic, NicKind};
use crate::resolve::{self, Verdict};
use crate::state::{AttachOutcome, Freshness, KernelState, Loaded};
use crate::sys;
use crate::testhook::crash_point;

/// Where the library reads and writes. Production needs no arguments; tests
/// and development redirect every path with environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub running_config: PathBuf,
    pub bpf_root: PathBuf,
    pub run_dir: PathBuf,
}

impl Settings {
    pub const DEFAULT_RUNNING_CONFIG: &'static str = "/etc/pve/sdn/.running-config";
    pub const DEFAULT_BPF_ROOT: &'static str = "/sys/fs/bpf/proxmox-ebpf";
    pub const DEFAULT_RUN_DIR: &'static str = "/run/proxmox-ebpf";

    /// Read at every call, so a long-running daemon follows its environment.
    pub fn from_env() -> Settings {
        let var = |name: &str, default: &str| {
            std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| default.into())
        };
        Settings {
            running_config: var("PVE_MICROSEG_RUNNING_CONFIG", Self::DEFAULT_RUNNING_CONFIG),
            bpf_root: var("PVE_MICROSEG_BPF_ROOT", Self::DEFAULT_BPF_ROOT),
            run_dir: var("PVE_MICROSEG_RUN_DIR", Self::DEFAULT_RUN_DIR),
        }
    }
}

/// What a pass changed in the kernel; counted where the change is made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The object was loaded (the verifier ran).
    pub loaded: bool,
    pub map_writes: usize,
    pub map_deletes: usize,
    pub links_created: usize,
    pub links_updated: usize,
    pub links_detached: usize,
    /// Local assigned NICs enforced after the pass.
    pub nics: usize,
    /// Underlay interfaces with the VTEP guard after the pass.
    pub guarded: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceOutcome {
    NotGuestNic,
    Unassigned,
    Vanished,
    Enforced { mark: Mark, report: Report },
    /// Programs were not current: a full pass ran instead.
    FullPass(Report),
}

/// One local NIC to enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalNic {
    name: String,
    ifindex: u32,
    mark: Mark,
}

/// The library, bound to its settings and BPF object.
#[derive(Debug, Clone)]
pub struct Microseg {
    pub settings: Settings,
    pub state: KernelState,
    /// The VTEP guard, a subsystem of its own (own pins, lock and run state).
    pub guard: KernelState,
}

impl Microseg {
    pub fn new(settings: Settings, object: &'static [u8]) -> Microseg {
        let state = KernelState::new(Subsystem::microseg(object), &settings.bpf_root, &settings.run_dir);
        let guard = KernelState::new(Subsystem::vtep_guard(), &settings.bpf_root, &settings.run_dir);
        Microseg { settings, state, guard }
    }

    pub fn from_env() -> Microseg {
        Microseg::new(Settings::from_env(), MICROSEG_OBJECT)
    }

    /// The capacities of the rule map and the group map, as the object defines them.
    fn capacities(&self) -> Result<(usize, usize)> {
        let layouts = self.state.sub.map_layouts()?;
        let cap = |map: &str| layouts.iter().find(|l| l.name == map).map_or(0, |l| l.max_entries as usize);
        Ok((cap(RULES), cap(TAP_TO_GROUP)))
    }

    /// Reads, validates and resolves the config: everything that can fail on
    /// bad input happens here, before the kernel is touched.
    fn desired(&self, cfg: &MicrosegConfig) -> Result<Desired> {
        let (rules_cap, nics_cap) = self.capacities()?;
        let pairs = resolve::resolve(cfg, rules_cap)?;
        let mut nics = Vec::new();
        for a in cfg.assignments.values() {
            let mark = cfg.groups[&a.group].mark;
            for name in nic_names(a) {
                if let Some(ifindex) = netdev::ifindex(&name) {
                    nics.push(LocalNic { name, ifindex, mark });
                }
            }
        }
        if nics.len() > nics_cap {
            bail!("microseg: {} local assigned NICs, the kernel group map holds {nics_cap}", nics.len());
        }
        Ok(Desired { pairs, nics })
    }

    /// Full pass: SPEC section 6, `apply_full()`.
    pub fn apply_full(&self) -> Result<Report> {
        let cfg = config::load(&self.settings.running_config)?;
        if cfg.is_empty() {
            log::info!("microseg: nothing configured, removing all state");
            self.clear()?;
            return Ok(Report::default());
        }
        let desired = self.desired(&cfg)?;
        self.state.check_bpf_root(&self.settings.bpf_root)?;
        let mut report = {
            let _lock = self.state.lock(Mode::Exclusive)?;
            self.full_pass_locked(&desired)?
        };
        report.guarded = self.guard_pass(cfg.guard.as_ref()).context("vtep guard")?;
        Ok(report)
    }

    /// Installs, updates or removes the VTEP guard; returns how many
    /// interfaces it guards.
    fn guard_pass(&self, guard: Option<&VtepGuard>) -> Result<usize> {
        if guard.is_none() && !self.guard.pin_dir.exists() && !self.guard.run_dir.exists() {
            // Never configured here: do not even create its lock file.
            return Ok(0);
        }
        let _lock = self.guard.lock(Mode::Exclusive)?;
        let Some(g) = guard else {
            if self.guard.pin_dir.exists() {
                log::info!("microseg: vtep guard no longer configured, removing it");
                self.guard.remove_all()?;
            }
            return Ok(0);
        };
        // Map keys are the outer source address as the packet carries it.
        let peers: BTreeMap<Vec<u8>, Vec<u8>> = g.peers.iter().map(|a| (a.octets().to_vec(), vec![1u8])).collect();
        let port = BTreeMap::from([(0u32.to_ne_bytes().to_vec(), u32::from(g.port).to_ne_bytes().to_vec())]);
        let write = |l: &Loaded| -> Result<usize> {
            Ok(write_entries(l.map(VTEP_PEERS).as_fd(), &peers).context("vtep_peers")?
                + write_entries(l.map(GUARD_CONFIG).as_fd(), &port).context("guard_config")?)
        };
        let (loaded, _) = self.guard.ensure_current(&write)?;
        write(&loaded)?;
        let mut present = BTreeSet::new();
        for iface in &g.ifaces {
            let Some(ifindex) = netdev::ifindex(iface) else {
                log::warn!("microseg: vtep guard: underlay interface {iface} does not exist on this node");
                continue;
            };
            self.guard.attach(&loaded, iface, ifindex, Hook::Ingress).with_context(|| format!("guard {iface}"))?;
            present.insert(iface.as_str());
        }
        for link in self.guard.link_pins()? {
            if !present.contains(link.nic.as_str()) {
                if let Err(e) = self.guard.remove_link(&link) {
                    log::warn!("microseg: vtep guard: detach {}: {e:#}", link.path.display());
                }
            }
        }
        delete_stale(loaded.map(VTEP_PEERS).as_fd(), &peers, 4, 1).context("vtep_peers")?;
        Ok(present.len())
    }

    fn full_pass_locked(&self, desired: &Desired) -> Result<Report> {
        let mut report = Report::default();
        report.links_detached += self.state.sweep_tmp_pins();
        let (loaded, prefilled) = self.state.ensure_current(&|l| desired.write_maps(l))?;
        report.loaded = prefilled.is_some();
        report.map_writes += prefilled.unwrap_or(0);
        report.map_writes += desired.write_maps(&loaded).context("sync maps")?;
        crash_point("full-after-maps");

        let mut failed = Vec::new();
        for nic in &desired.nics {
            if let Err(e) = self.attach_nic(&loaded, nic, &mut report).with_context(|| format!("apply {}", nic.name)) {
                log::error!("microseg: {e:#}");
                failed.push(format!("{e:#}"));
            }
        }
        report.nics = desired.nics.len() - failed.len();
        crash_point("full-after-attach");

        let wanted: BTreeSet<&str> = desired.nics.iter().map(|n| n.name.as_str()).collect();
        for link in self.state.link_pins()? {
            if !wanted.contains(link.nic.as_str()) {
                // Over-enforcement is safe: a failed detach only logs.
                match self.state.remove_link(&link) {
                    Ok(()) => report.links_detached += 1,
                    Err(e) => log::warn!("microseg: detach {}: {e:#}", link.path.display()),
                }
            }
        }
        crash_point("full-before-delete");
        report.map_deletes += desired.delete_stale(&loaded).context("remove stale map entries")?;
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        log::info!("microseg: full pass: {report:?}");
        Ok(report)
    }

    fn attach_nic(&self, loaded: &Loaded, nic: &LocalNic, report: &mut Report) -> Result<()> {
        // Enforce toward the guest before stamping what it sends.
        for hook in Hook::ALL {
            let outcome = self.state.attach(loaded, &nic.name, nic.ifindex, hook)?;
            if hook == Hook::Egress {
                crash_point("attach-between-hooks");
            }
            match outcome {
                AttachOutcome::Present => {}
                AttachOutcome::Updated => report.links_updated += 1,
                AttachOutcome::Created | AttachOutcome::Reclaimed => report.links_created += 1,
            }
        }
        Ok(())
    }

    /// The `tap_plug` path: SPEC section 6, `apply_iface($iface)`.
    pub fn apply_iface(&self, name: &[u8]) -> Result<IfaceOutcome> {
        let Some(nic) = GuestNic::parse(name) else {
            log::debug!("microseg: {:?} is not a guest NIC", String::from_utf8_lossy(name));
            return Ok(IfaceOutcome::NotGuestNic);
        };
        let name = nic.name();
        self.apply_guest_nic(nic).with_context(|| format!("apply {name}"))
    }

    fn apply_guest_nic(&self, nic: GuestNic) -> Result<IfaceOutcome> {
        let name = nic.name();
        let cfg = config::load(&self.settings.running_config)?;
        let Some(group) = cfg.group_of(nic.vmid, nic.iface) else {
            return Ok(IfaceOutcome::Unassigned);
        };
        let Some(ifindex) = netdev::ifindex(&name) else {
            log::info!("microseg: {name} vanished before it could be enforced");
            return Ok(IfaceOutcome::Vanished);
        };
        let local = LocalNic { name: name.clone(), ifindex, mark: group.mark };
        self.state.check_bpf_root(&self.settings.bpf_root)?;

        {
            let _lock = self.state.lock(Mode::Shared)?;
            if let Freshness::Current(loaded) = self.state.freshness()? {
                let mut report = Report::default();
                report.map_writes += write_tap_group(loaded.map(TAP_TO_GROUP).as_fd(), ifindex, group.mark)
                    .context("write group mapping")?;
                crash_point("iface-after-map");
                match self.attach_nic(&loaded, &local, &mut report) {
                    Ok(()) => {}
                    Err(_) if netdev::ifindex(&name) != Some(ifindex) => {
                        log::info!("microseg: {name} vanished while being enforced");
                        return Ok(IfaceOutcome::Vanished);
                    }
                    Err(e) => return Err(e),
                }
                report.nics = 1;
                return Ok(IfaceOutcome::Enforced { mark: group.mark, report });
            }
        }
        log::info!("microseg: programs not current, {name} triggers a full pass");
        let desired = self.desired(&cfg)?;
        let _lock = self.state.lock(Mode::Exclusive)?;
        let report = self.full_pass_locked(&desired).context("full pass")?;
        Ok(IfaceOutcome::FullPass(report))
    }

    /// The resolved policy as JSON, for tools and the demo: group marks, the
    /// mark of every assignable NIC name, and every flattened pair
    /// (`"src:dst"`, 0 being unstamped). Reads the config; touches no kernel state.
    pub fn effective_policy(&self) -> Result<serde_json::Value> {
        let cfg = config::load(&self.settings.running_config)?;
        let pairs = resolve::resolve(&cfg, self.capacities()?.0)?;
        let groups: BTreeMap<&str, Mark> = cfg.groups.values().map(|g| (g.id.as_str(), g.mark)).collect();
        let mut nics = BTreeMap::new();
        for a in cfg.assignments.values() {
            for name in nic_names(a) {
                nics.insert(name, cfg.groups[&a.group].mark);
            }
        }
        let pairs: BTreeMap<String, &str> = pairs
            .iter()
            .map(|(&(s, d), &v)| (format!("{s}:{d}"), if v == Verdict::Allow { "allow" } else { "deny" }))
            .collect();
        Ok(serde_json::json!({ "groups": groups, "nics": nics, "pairs": pairs }))
    }

    /// Detaches every link, removes every pin and all run state. Idempotent.
    pub fn clear(&self) -> Result<()> {
        for state in [&self.state, &self.guard] {
            let _lock = state.lock(Mode::Exclusive)?;
            state.remove_all()?;
        }
        // The roots may be shared with other subsystems: remove only if empty.
        let _ = std::fs::remove_dir(&self.settings.bpf_root);
        let _ = std::fs::remove_dir(&self.settings.run_dir);
        Ok(())
    }
}

/// The names an assignment's NIC has: a VM's tap or a container's veth.
fn nic_names(a: &Assignment) -> impl Iterator<Item = String> + '_ {
    NicKind::ALL.into_iter().map(move |kind| GuestNic { kind, vmid: a.vmid, iface: a.iface }.name())
}

/// The desired content of both maps and the NICs to enforce.
struct Desired {
    pairs: resolve::PairTable,
    nics: Vec<LocalNic>,
}

impl Desired {
    fn tap_entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.nics.iter().map(|n| (n.ifindex.to_ne_bytes().to_vec(), u32::from(n.mark).to_ne_bytes().to_vec())).collect()
    }

    fn rule_entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.pairs.iter().map(|(&(src, dst), &v)| (rule_key(src, dst).to_vec(), vec![verdict_byte(v)])).collect()
    }

    /// Writes new and changed entries of both maps; returns how many.
    fn write_maps(&self, loaded: &Loaded) -> Result<usize> {
        let rules = write_entries(loaded.map(RULES).as_fd(), &self.rule_entries()).context("rules")?;
        let taps = write_entries(loaded.map(TAP_TO_GROUP).as_fd(), &self.tap_entries()).context("tap_to_group")?;
        Ok(rules + taps)
    }

    /// Removes entries not desired; runs after links are settled.
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        let rules = delete_stale(loaded.map(RULES).as_fd(), &self.rule_entries(), 4, 1).context("rules")?;
        let taps = delete_stale(loaded.map(TAP_TO_GROUP).as_fd(), &self.tap_entries(), 4, 4).context("tap_to_group")?;
        Ok(rules + taps)
    }
}

pub fn rule_key(src: Mark, dst: Mark) -> [u8; 4] {
    let mut k = [0u8; 4];
    k[..2].copy_from_slice(&src.to_ne_bytes());
    k[2..].copy_from_slice(&dst.to_ne_bytes());
    k
}

pub fn verdict_byte(v: Verdict) -> u8 {
    match v {
        Verdict::Deny => 0,
        Verdict::Allow => 1,
    }
}

fn write_tap_group(map: BorrowedFd<'_>, ifindex: u32, mark: Mark) -> Result<usize> {
    let entry = BTreeMap::from([(ifindex.to_ne_bytes().to_vec(), u32::from(mark).to_ne_bytes().to_vec())]);
    write_entries(map, &entry)
}

/// Up to this many entries are checked one by one (the tap_plug path writes
/// one); larger sets compare against a batched dump of the map.
const PER_ENTRY_LIMIT: usize = 16;

/// Writes entries that are missing or differ; an equal entry is not rewritten.
fn write_entries(map: BorrowedFd<'_>, entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<usize> {
    let Some((first_key, first_value)) = entries.iter().next() else { return Ok(0) };
    let changed: Vec<(&Vec<u8>, &Vec<u8>)> = if entries.len() <= PER_ENTRY_LIMIT {
        let mut changed = Vec::new();
        for (key, value) in entries {
            let mut current = vec![0u8; value.len()];
            if !(sys::map_lookup(map, key, &mut current).context("lookup")? && current == *value) {
                changed.push((key, value));
            }
        }
        changed
    } else {
        let current: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            sys::map_dump(map, first_key.len(), first_value.len()).context("dump")?.into_iter().collect();
        entries.iter().filter(|(k, v)| current.get(*k) != Some(*v)).collect()
    };
    let keys: Vec<u8> = changed.iter().flat_map(|(k, _)| k.iter().copied()).collect();
    let values: Vec<u8> = changed.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    sys::map_update_batch(map, &keys, &values, changed.len()).context("update")?;
    Ok(changed.len())
}

fn delete_stale(map: BorrowedFd<'_>, wanted: &BTreeMap<Vec<u8>, Vec<u8>>, key_size: usize, value_size: usize) -> Result<usize> {
    let stale: Vec<u8> = sys::map_dump(map, key_size, value_size)
        .context("dump")?
        .into_iter()
        .filter(|(k, _)| !wanted.contains_key(k))
        .flat_map(|(k, _)| k)
        .collect();
    let count = stale.len() / key_size;
    sys::map_delete_batch(map, &stale, count).context("delete")?;
    Ok(count)
}

/// `apply_full()` with the process environment's settings.
pub fn apply_full() -> Result<Report> {
    Microseg::from_env().apply_full().context("microseg: apply_full")
}

/// `apply_iface($iface)` with the process environment's settings.
pub fn apply_iface(name: &[u8]) -> Result<IfaceOutcome> {
    Microseg::from_env().apply_iface(name).context("microseg")
}

/// `effective_policy()` with the process environment's settings.
pub fn effective_policy() -> Result<serde_json::Value> {
    Microseg::from_env().effective_policy().context("microseg: effective_policy")
}

/// `clear()` with the process environment's settings.
pub fn clear() -> Result<()> {
    Microseg::from_env().clear().context("microseg: clear")
}
