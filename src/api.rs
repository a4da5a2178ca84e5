//! The calls of SPEC section 7, in plain Rust, each a loop over the
//! subsystem registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::{self, Mark, MicrosegConfig};
use crate::kernel::fsutil;
use crate::kernel::links::Ranks;
use crate::kernel::lock::{Lock, Mode};
use crate::kernel::netdev::{self, GuestNic};
use crate::kernel::reconcile::Plan;
use crate::kernel::state::KernelState;
use crate::report::{Report, Simulation, Status, SubsystemStatus};
use crate::subsystems::microseg::resolve::UNSTAMPED;
use crate::subsystems::microseg::{self, nic_names, resolve};
use crate::subsystems::{registry, Recorded, Subsystem};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceOutcome {
    NotGuestNic,
    Unassigned,
    Vanished,
    Enforced { mark: Mark, report: Report },
    /// Programs were not current: a full pass ran instead.
    FullPass(Report),
}

impl IfaceOutcome {
    /// The word `apply_iface` returns to Perl.
    pub fn word(&self) -> &'static str {
        match self {
            IfaceOutcome::NotGuestNic => "not-guest-nic",
            IfaceOutcome::Unassigned => "unassigned",
            IfaceOutcome::Vanished => "vanished",
            IfaceOutcome::Enforced { .. } => "enforced",
            IfaceOutcome::FullPass(_) => "full-pass",
        }
    }
}

/// One registered subsystem and where its state lives.
pub struct Unit {
    pub subsystem: Box<dyn Subsystem>,
    pub state: KernelState,
}

/// The key of the applied record that names the library version that wrote it.
const RECORD_LIBRARY: &str = "_library";

/// The library, bound to its settings and the registry.
pub struct Microseg {
    pub settings: Settings,
    pub units: Vec<Unit>,
}

impl Microseg {
    pub fn new(settings: Settings, microseg_object: &'static crate::kernel::object::Embedded) -> Microseg {
        let units = registry(microseg_object)
            .into_iter()
            .map(|subsystem| {
                let state = KernelState::new(subsystem.spec().clone(), &settings.bpf_root, &settings.run_dir);
                Unit { subsystem, state }
            })
            .collect();
        Microseg { settings, units }
    }

    pub fn from_env() -> Microseg {
        Microseg::new(Settings::from_env(), &microseg::OBJECT)
    }

    /// The kernel state of subsystem `name`.
    pub fn kernel(&self, name: &str) -> &KernelState {
        &self.units.iter().find(|u| u.state.name() == name).unwrap_or_else(|| panic!("no subsystem {name}")).state
    }

    /// The policy subsystem's kernel state.
    pub fn policy(&self) -> &KernelState {
        self.kernel(microseg::NAME)
    }

    /// Program id -> rank of every pinned program of every subsystem, for
    /// placing a new link in its chain.
    fn ranks(&self) -> Ranks {
        let mut ranks = Ranks::new();
        for u in &self.units {
            for (name, id) in u.state.pinned_program_ids() {
                if let Some(p) = u.state.spec.program(name) {
                    ranks.insert(id, p.rank);
                }
            }
        }
        ranks
    }

    /// Every subsystem's lock in registry order (one order for every caller,
    /// so two passes never wait on each other crosswise).
    fn lock_all(&self, mode: Mode) -> Result<AllLocks<'_>> {
        // Built up one lock at a time, so that a failure part-way still
        // removes the lock files it created (on drop).
        let mut all = AllLocks { ms: self, _locks: Vec::new() };
        for u in &self.units {
            all._locks.push(u.state.lock(mode)?);
        }
        Ok(all)
    }

    /// The running config, or why there is none to act on. `Ok(None)`: the
    /// file does not exist and nothing is installed, so there is nothing to
    /// do. A missing file with state installed is not a deconfiguration (the
    /// cluster filesystem may not be mounted yet): it fails and leaves
    /// enforcement as it is.
    fn read_config(&self) -> Result<Option<MicrosegConfig>> {
        let path = &self.settings.running_config;
        match config::load(path)? {
            Some(cfg) => {
                self.report_config_warnings(&cfg);
                Ok(Some(cfg))
            }
            None if self.units.iter().any(|u| u.state.exists()) => bail!(
                "running config {} does not exist (is /etc/pve mounted?); enforcement left as it is",
                path.display()
            ),
            None => Ok(None),
        }
    }

    /// What the config carries that is ignored (unknown section types and
    /// fields, keys of an unexpected shape) is reported once per config
    /// change (SPEC section 2), not on every call: the digest of the config
    /// last reported is kept in the run directory. A node that cannot keep
    /// it only reports again.
    fn report_config_warnings(&self, cfg: &MicrosegConfig) {
        let mut warnings = cfg.warnings.clone();
        for (id, (ty, _)) in &cfg.other {
            if !self.units.iter().any(|u| u.subsystem.section_types().contains(&ty.as_str())) {
                warnings.push(format!("microseg section '{id}': unknown type '{ty}' ignored"));
            }
        }
        if warnings.is_empty() {
            return;
        }
        let marker = self.warned_marker();
        if fsutil::read_regular(&marker, false).ok().flatten().as_deref() == Some(cfg.digest.as_bytes()) {
            for w in &warnings {
                log::debug!("{w} (reported before)");
            }
            return;
        }
        for w in &warnings {
            log::warn!("{w}");
        }
        if fsutil::private_dir(&self.settings.run_dir).is_ok() {
            let _ = fsutil::write_private(&marker, cfg.digest.as_bytes());
        }
    }

    /// Where the digest of the config whose warnings were reported is kept.
    fn warned_marker(&self) -> PathBuf {
        self.settings.run_dir.join("config-warned")
    }

    /// Where the signature of the config the last successful full pass
    /// applied is kept (see `apply_recorded`).
    fn applied_marker(&self) -> PathBuf {
        self.settings.run_dir.join("applied-config")
    }

    /// What that pass recorded for the next one (`Subsystem::record`), by
    /// subsystem; written before the marker, removed with it.
    fn applied_record(&self) -> PathBuf {
        self.settings.run_dir.join("applied-record")
    }

    /// The subsystems' keys of the record, sorted (as a JSON object's are).
    fn record_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.units.iter().map(|u| u.state.name().to_string()).collect();
        keys.sort();
        keys
    }

    /// Whether the running config is the one the last successful full pass
    /// applied (`signature` read now).
    fn config_applied(&self, signature: &str) -> bool {
        fsutil::read_regular(&self.applied_marker(), false).ok().flatten().as_deref() == Some(signature.as_bytes())
    }

    /// Forgets the applied config: from here the kernel changes, and until a
    /// full pass succeeds every call reads the config.
    fn forget_applied(&self) -> Result<()> {
        crate::kernel::state::remove_file_if_exists(&self.applied_marker())?;
        crate::kernel::state::remove_file_if_exists(&self.applied_record())
    }

    /// A full pass over the config the last successful one applied (the
    /// caller holds every lock exclusively, and checked the signature under
    /// them): the maps that config decided are as that pass left them, so
    /// only what depends on the node is planned and synced (its NICs, their
    /// group entries from the recorded assignments, its addresses, the
    /// underlay interfaces), and the config is not read: its cost does not
    /// grow with the config. `None` when the record cannot answer (a
    /// subsystem's programs are not the recorded ones, no record).
    fn apply_full_recorded(&self) -> Result<Option<Report>> {
        let Ok(Some(bytes)) = fsutil::read_regular(&self.applied_record(), false) else { return Ok(None) };
        let Ok(record) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&bytes) else { return Ok(None) };
        // Written by this very library with this registry: after an upgrade
        // (another version, a subsystem added) the config must be read, as
        // the previous library may have ignored sections this one knows.
        if record.get(RECORD_LIBRARY).and_then(serde_json::Value::as_str) != Some(env!("CARGO_PKG_VERSION"))
            || !record.keys().filter(|k| *k != RECORD_LIBRARY).eq(self.record_keys().iter())
        {
            return Ok(None);
        }
        // Plan everything before touching anything.
        let mut plans = Vec::new();
        for u in &self.units {
            if !u.state.exists() {
                // The applied config does not configure it (that pass removed it).
                continue;
            }
            let Some(loaded) = u.state.open_recorded()? else { return Ok(None) };
            let none = serde_json::Value::Null;
            let rec = record.get(u.state.name()).unwrap_or(&none);
            let Some(plan) = u.subsystem.plan_recorded(&loaded, rec).with_context(|| format!("{}: plan", u.state.name()))? else {
                return Ok(None);
            };
            plans.push((u, loaded, plan));
        }
        // The marker stays: the config-decided state it vouches for is not
        // touched, whatever happens to the node-dependent part.
        let mut report = Report::default();
        for (u, loaded, plan) in &plans {
            report.links_detached += u.state.sweep_tmp_pins();
            u.state.reconcile_loaded(loaded, plan, &|| self.ranks(), &mut report).context(u.state.name())?;
            u.subsystem.count_targets(&mut report, plan.counted);
        }
        log::debug!("microseg: the running config is the applied one: only what depends on the node was synced");
        log::info!("microseg: full pass: {report}");
        Ok(Some(report))
    }

    /// Full pass: SPEC section 7, `apply_full()`.
    pub fn apply_full(&self) -> Result<Report> {
        KernelState::check_bpf_root(&self.settings.bpf_root)?;
        let _locks = self.lock_all(Mode::Exclusive)?;
        // Taken before the read: a change in between only makes the next call slow.
        let signature = config::signature(&self.settings.running_config);
        if signature.as_deref().is_some_and(|s| self.config_applied(s)) {
            if let Some(report) = self.apply_full_recorded()? {
                return Ok(report);
            }
        }
        // Read under the locks: of two overlapping passes, the later one's
        // config is what stays in the kernel.
        let Some(cfg) = self.read_config()? else { return Ok(Report::default()) };
        // Plan everything before touching anything: a config any subsystem
        // refuses changes nothing.
        let plans: Vec<Option<Plan>> = self
            .units
            .iter()
            .map(|u| u.subsystem.plan(&cfg).with_context(|| format!("{}: plan", u.state.name())))
            .collect::<Result<_>>()?;
        // From here the kernel changes: until this pass succeeds, apply_iface
        // and apply_full read the config.
        self.forget_applied()?;
        let mut record: BTreeMap<&str, serde_json::Value> =
            self.units.iter().map(|u| (u.state.name(), u.subsystem.record(&cfg))).collect();
        record.insert(RECORD_LIBRARY, serde_json::Value::from(env!("CARGO_PKG_VERSION")));
        let mut report = Report::default();
        for (u, plan) in self.units.iter().zip(&plans) {
            match plan {
                Some(plan) => {
                    let state = u.state.with_capacities(&plan.capacities);
                    state.reconcile(plan, &|| self.ranks(), &mut report).context(u.state.name())?;
                    u.subsystem.count_targets(&mut report, plan.counted);
                }
                None => {
                    if u.state.exists() {
                        log::info!("microseg: {} no longer configured, removing it", u.state.name());
                    }
                    u.state.remove_all().with_context(|| format!("{}: remove", u.state.name()))?;
                }
            }
        }
        // Also when nothing is configured: apply_iface then answers
        // "unassigned" without reading a large SDN config.
        if let Some(signature) = signature {
            fsutil::private_dir(&self.settings.run_dir).context("run directory")?;
            let recorded = serde_json::to_vec(&record)
                .map_err(anyhow::Error::from)
                .and_then(|r| fsutil::write_private(&self.applied_record(), &r))
                .and_then(|()| fsutil::write_private(&self.applied_marker(), signature.as_bytes()));
            if let Err(e) = recorded {
                log::warn!("microseg: cannot record the applied config ({e:#}): the next calls read the config");
            }
        }
        log::info!("microseg: full pass: {report}");
        Ok(report)
    }

    /// The `tap_plug` fast path (SPEC section 7): while the running config
    /// is the one the last successful full pass applied (same signature,
    /// checked under the lock, which no full pass holds then), every
    /// subsystem answers from what that pass recorded in the kernel, so the
    /// cost does not grow with the config. `None` when the slow path must
    /// decide (config changed, programs not current, a vanished NIC).
    fn apply_recorded(&self, nic: &GuestNic) -> Result<Option<IfaceOutcome>> {
        let Some(signature) = config::signature(&self.settings.running_config) else { return Ok(None) };
        if !self.config_applied(&signature) {
            return Ok(None);
        }
        let name = nic.name();
        let Some(ifindex) = netdev::ifindex(&name) else { return Ok(None) };
        let mut report = Report::default();
        let mut assigned = None;
        let mut checked = false;
        for u in &self.units {
            if !u.state.exists() {
                // The applied config does not configure this subsystem (and
                // a lock would only leave a file behind).
                continue;
            }
            let _lock = u.state.lock(Mode::Shared)?;
            // Under a lock no full pass holds: the record is that of the
            // last pass that succeeded.
            if !checked && !self.config_applied(&signature) {
                return Ok(None);
            }
            checked = true;
            let Some(loaded) = u.state.open_recorded()? else { return Ok(None) };
            let plan = match u.subsystem.plan_nic_recorded(&loaded, nic, ifindex)? {
                Recorded::Nothing => continue,
                Recorded::NeedConfig => return Ok(None),
                Recorded::Plan { plan, assigned: mark } => {
                    assigned = assigned.or(mark);
                    plan
                }
            };
            if let Err(e) = u.state.apply_loaded(&loaded, &plan, &|| self.ranks(), &mut report) {
                if netdev::ifindex(&name) != Some(ifindex) {
                    log::info!("microseg: {name} vanished while being enforced");
                    return Ok(Some(IfaceOutcome::Vanished));
                }
                return Err(e.context(u.state.name()));
            }
        }
        let Some(mark) = assigned else { return Ok(Some(IfaceOutcome::Unassigned)) };
        report.nics = 1;
        Ok(Some(IfaceOutcome::Enforced { mark, report }))
    }

    /// The `tap_plug` path: SPEC section 7, `apply_iface($iface)`.
    pub fn apply_iface(&self, name: &[u8]) -> Result<IfaceOutcome> {
        let Some(nic) = GuestNic::parse(name) else {
            log::debug!("microseg: {:?} is not a guest NIC", String::from_utf8_lossy(name));
            return Ok(IfaceOutcome::NotGuestNic);
        };
        let name = nic.name();
        self.apply_guest_nic(&nic).with_context(|| format!("apply {name}"))
    }

    fn apply_guest_nic(&self, nic: &GuestNic) -> Result<IfaceOutcome> {
        if let Some(outcome) = self.apply_recorded(nic)? {
            return Ok(outcome);
        }
        let name = nic.name();
        let Some(cfg) = self.read_config()? else { return Ok(IfaceOutcome::Unassigned) };
        let group = cfg.group_of(nic.vmid, nic.iface);
        let Some(ifindex) = netdev::ifindex(&name) else {
            if group.is_none() {
                return Ok(IfaceOutcome::Unassigned);
            }
            log::info!("microseg: {name} vanished before it could be enforced");
            return Ok(IfaceOutcome::Vanished);
        };
        let mut plans = Vec::new();
        for u in &self.units {
            if let Some(plan) = u.subsystem.plan_nic(&cfg, nic, ifindex)? {
                plans.push((u, plan));
            }
        }
        if plans.is_empty() {
            return Ok(IfaceOutcome::Unassigned);
        }
        KernelState::check_bpf_root(&self.settings.bpf_root)?;
        let mut report = Report::default();
        for (u, plan) in &plans {
            let _lock = u.state.lock(Mode::Shared)?;
            match u.state.with_capacities(&plan.capacities).apply_additive(plan, &|| self.ranks(), &mut report) {
                Ok(true) => {}
                Ok(false) => {
                    drop(_lock);
                    log::info!("microseg: {} programs not current, {name} triggers a full pass", u.state.name());
                    return self.apply_full().context("full pass").map(IfaceOutcome::FullPass);
                }
                Err(_) if netdev::ifindex(&name) != Some(ifindex) => {
                    log::info!("microseg: {name} vanished while being enforced");
                    return Ok(IfaceOutcome::Vanished);
                }
                Err(e) => return Err(e.context(u.state.name())),
            }
        }
        // An unassigned NIC got pass-through programs only.
        let Some(group) = group else { return Ok(IfaceOutcome::Unassigned) };
        report.nics = 1;
        Ok(IfaceOutcome::Enforced { mark: group.mark, report })
    }

    /// The resolved policy as JSON, for tools and the demo: group marks, the
    /// mark of every assignable NIC name, and every flattened pair
    /// (`"src:dst"`, 0 being unstamped). Reads the config; touches no kernel state.
    pub fn effective_policy(&self) -> Result<serde_json::Value> {
        let cfg = config::load(&self.settings.running_config)?.unwrap_or_default();
        let pairs = microseg::resolve_policy(&self.policy().spec, &cfg)?.pairs();
        let groups: BTreeMap<&str, Mark> = cfg.groups.values().map(|g| (g.id.as_str(), g.mark)).collect();
        let mut nics = BTreeMap::new();
        for a in cfg.assignments.values() {
            for name in nic_names(a) {
                nics.insert(name, cfg.groups[&a.group].mark);
            }
        }
        let pairs: BTreeMap<String, &str> = pairs
            .iter()
            .map(|(&(s, d), &v)| (format!("{s}:{d}"), if v == resolve::Verdict::Allow { "allow" } else { "deny" }))
            .collect();
        Ok(serde_json::json!({ "groups": groups, "nics": nics, "pairs": pairs }))
    }

    /// Which rule decides a flow (SPEC section 7, `simulate`), without
    /// touching anything: `src` and `dst` are group ids or guest NIC names
    /// (`src` absent or empty: unstamped), `proto` a protocol as rules
    /// write it, `dport` a port. The decision is the one the kernel entries
    /// make, explained from the config and checked against them.
    pub fn simulate(&self, src: Option<&str>, dst: &str, proto: Option<&str>, dport: Option<&str>) -> Result<Simulation> {
        let cfg = config::load(&self.settings.running_config)?.unwrap_or_default();
        let mark_of = |what: &str, name: &str| -> Result<Option<Mark>> {
            if let Some(g) = cfg.groups.get(name) {
                return Ok(Some(g.mark));
            }
            match GuestNic::parse(name.as_bytes()) {
                Some(nic) => Ok(cfg.group_of(nic.vmid, nic.iface).map(|g| g.mark)),
                None => bail!("{what} '{name}' is neither a group nor a guest NIC"),
            }
        };
        let src_mark = match src.filter(|s| !s.is_empty()) {
            None => UNSTAMPED,
            Some(s) => mark_of("src", s)?.unwrap_or(UNSTAMPED),
        };
        let proto = match proto.filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(config::policy::proto_number(p).ok_or_else(|| anyhow::anyhow!("unknown proto '{p}'"))?),
        };
        let port = match dport.filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => {
                if !proto.is_some_and(config::policy::has_ports) {
                    bail!("dport needs proto tcp, udp or sctp");
                }
                match d.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => bail!("'{d}' is not a port"),
                }
            }
        };
        let audit = |mark: Mark| u8::from(cfg.groups.values().any(|g| g.mark == mark && cfg.audit(&g.id)));
        let Some(dst_mark) = mark_of("dst", dst)? else {
            return Ok(Simulation {
                verdict: "allow",
                rule: None,
                reason: format!("{dst} is not assigned to a group: not enforced"),
                audit: 0,
            });
        };
        let kernel = microseg::resolve_policy(&self.policy().spec, &cfg)?.decide(src_mark, dst_mark, proto, port);
        let explained = resolve::explain(&cfg, src_mark, dst_mark, proto, port);
        if (kernel.verdict, &kernel.rule) != (explained.verdict, &explained.rule) {
            bail!("internal error: the kernel entries decide {kernel:?}, the rules {explained:?}");
        }
        Ok(Simulation {
            verdict: if explained.verdict == resolve::Verdict::Allow { "allow" } else { "deny" },
            rule: explained.rule,
            reason: explained.reason,
            audit: audit(dst_mark),
        })
    }

    /// What is enforced on this node (SPEC section 7, `status()`), read from
    /// the kernel without taking a lock or changing anything. The running
    /// config only names groups and rules and says what should be: an
    /// unreadable or invalid one is a warning, not an error.
    pub fn status(&self) -> Result<Status> {
        let mut out = Status::default();
        let cfg = match config::load(&self.settings.running_config) {
            Ok(Some(cfg)) => Some(cfg),
            Ok(None) => {
                if self.units.iter().any(|u| u.state.exists()) {
                    out.warnings.push(format!(
                        "running config {} does not exist (is /etc/pve mounted?)",
                        self.settings.running_config.display()
                    ));
                }
                None
            }
            Err(e) => {
                out.warnings.push(format!("{e:#}"));
                None
            }
        };
        for u in &self.units {
            let run = u.state.run_info();
            let fingerprint = u.state.spec.fingerprint();
            out.subsystems.insert(
                u.state.name().to_string(),
                SubsystemStatus {
                    loaded: u8::from(run.is_some() && !u.state.pinned_program_ids().is_empty()),
                    current: u8::from(run.as_ref().is_some_and(|r| r.2 == fingerprint)),
                    version: run.as_ref().map(|r| r.0.clone()),
                    schema_version: run.as_ref().map(|r| r.1),
                    fingerprint: run.map(|r| r.2),
                    library_version: u.state.library_version.clone(),
                    links: u.state.link_pins().map_or(0, |l| l.len()),
                    counters: BTreeMap::new(),
                },
            );
            if let Err(e) = u.subsystem.status(&u.state, cfg.as_ref(), &mut out) {
                out.warnings.push(format!("{}: status: {e:#}", u.state.name()));
            }
        }
        Ok(out)
    }

    /// Streams drop and audit events to `sink` (SPEC section 8, `monitor`).
    /// Group names come from the running config if it can be read.
    pub fn monitor(
        &self,
        until: microseg::events::Until,
        sink: &mut dyn FnMut(&microseg::events::EventRecord) -> bool,
    ) -> Result<usize> {
        let cfg = config::load(&self.settings.running_config).ok().flatten();
        microseg::events::monitor(self.policy(), cfg.as_ref(), until, sink)
    }

    /// Detaches every link and removes every pin and all run state of every
    /// subsystem. Idempotent.
    pub fn clear(&self) -> Result<()> {
        let _locks = self.lock_all(Mode::Exclusive)?;
        self.forget_applied()?;
        for u in &self.units {
            u.state.remove_all().with_context(|| format!("{}: remove", u.state.name()))?;
        }
        Ok(())
    }

    /// The roots may be shared with other subsystems: removed only if empty
    /// (with no subsystem left, the warnings marker goes too).
    fn remove_empty_roots(&self) {
        if !self.units.iter().any(|u| u.state.exists()) {
            let _ = std::fs::remove_file(self.warned_marker());
        }
        let _ = std::fs::remove_dir(&self.settings.bpf_root);
        let _ = std::fs::remove_dir(&self.settings.run_dir);
    }
}

/// Every subsystem's lock. Taking a lock creates its file; on release, the
/// lock file of a subsystem that holds no state is removed again, so that a
/// subsystem that is not configured leaves nothing behind. (A waiter on a
/// removed lock file retries on the new one: see `Lock::acquire`.)
struct AllLocks<'a> {
    ms: &'a Microseg,
    _locks: Vec<Lock>,
}

impl Drop for AllLocks<'_> {
    fn drop(&mut self) {
        for u in &self.ms.units {
            if !u.state.exists() {
                let _ = std::fs::remove_file(crate::kernel::lock::lock_path(&u.state.run_dir));
                let _ = std::fs::remove_dir(&u.state.run_dir);
            }
        }
        self.ms.remove_empty_roots();
    }
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

/// `simulate(...)` with the process environment's settings.
pub fn simulate(src: Option<&str>, dst: &str, proto: Option<&str>, dport: Option<&str>) -> Result<Simulation> {
    Microseg::from_env().simulate(src, dst, proto, dport).context("microseg: simulate")
}

/// `status()` with the process environment's settings.
pub fn status() -> Result<Status> {
    Microseg::from_env().status().context("microseg: status")
}

/// `clear()` with the process environment's settings.
pub fn clear() -> Result<()> {
    Microseg::from_env().clear().context("microseg: clear")
}
