//! Pinned kernel state of one subsystem (SPEC section 6).
//!
//! ```text
//! <bpf root>/<subsystem>/maps/<map>               pinned maps
//! <bpf root>/<subsystem>/progs/<program>          pinned programs
//! <bpf root>/<subsystem>/links/<netdev>:<program> one TCX link per netdev and program
//! <run dir>/<subsystem>/lock                      flock: see lock.rs
//! <run dir>/<subsystem>/state.json                schema version, fingerprint, program ids
//! ```
//!
//! The verifier runs only when the state is not current: first install, an
//! object with another fingerprint, or another map layout. Everything else
//! (the common path) opens pins. Every write goes to a temporary name and is
//! renamed into place, so a process killed at any point leaves either the old
//! or the new pin, and the next call converges.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::SchedClassifier;
use serde::{Deserialize, Serialize};

use crate::kernel::fsutil;
use crate::kernel::lock::{self, Lock, Mode};
use crate::kernel::maps::{MapDef, Shared, TypedMap};
use crate::kernel::object::ObjectSpec;
use crate::kernel::sys::{self, MapInfo};
use crate::kernel::testhook::crash_point;

/// Where one subsystem keeps its pins and its run state.
#[derive(Debug, Clone)]
pub struct KernelState {
    pub spec: ObjectSpec,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
    /// This library's version, recorded with what it loads: a library never
    /// replaces programs that a newer version loaded.
    pub library_version: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RunState {
    schema_version: u32,
    fingerprint: String,
    /// Program pin name -> id: a pin replaced behind our back is not current.
    #[serde(default)]
    programs: BTreeMap<String, u32>,
    /// The library version that loaded the programs.
    #[serde(default)]
    library_version: String,
    /// Map name -> (type, key size, value size, capacity, flags) as loaded,
    /// so that the `apply_iface` fast path checks the pinned maps without
    /// parsing the object.
    #[serde(default)]
    maps: BTreeMap<String, [u32; 5]>,
}

fn shape(info: &MapInfo) -> [u32; 5] {
    [info.map_type, info.key_size, info.value_size, info.max_entries, info.map_flags]
}

/// `a` is a newer version than `b` (dotted numbers; missing parts are 0).
fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split(['.', '-', '+']).map_while(|p| p.parse().ok()).collect() };
    let (mut a, mut b) = (parse(a), parse(b));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a > b
}

/// Open handles on a current installation. Dropped at the end of each call,
/// so no descriptor outlives it.
#[derive(Debug)]
pub struct Loaded {
    maps: BTreeMap<&'static str, LoadedMap>,
    progs: BTreeMap<&'static str, Prog>,
}

#[derive(Debug)]
struct LoadedMap {
    fd: OwnedFd,
    info: MapInfo,
}

#[derive(Debug)]
pub struct Prog {
    pub fd: OwnedFd,
    pub id: u32,
}

impl Loaded {
    /// The typed handle of a map of this installation; its sizes are
    /// checked against the kernel's map here.
    pub fn map<K: Shared, V: Shared>(&self, def: &MapDef<K, V>) -> Result<TypedMap<'_, K, V>> {
        let m = self.maps.get(def.name).ok_or_else(|| anyhow!("no map '{}' in this object", def.name))?;
        def.open(m.fd.as_fd(), &m.info)
    }

    /// A map's descriptor and kernel info, for type-erased map contents.
    pub fn map_raw(&self, name: &str) -> Result<(std::os::fd::BorrowedFd<'_>, &MapInfo)> {
        let m = self.maps.get(name).ok_or_else(|| anyhow!("no map '{name}' in this object"))?;
        Ok((m.fd.as_fd(), &m.info))
    }

    pub fn prog(&self, name: &str) -> &Prog {
        &self.progs[name]
    }

    /// The id of a program, if it is open (see `KernelState::open_pins`).
    pub fn prog_id(&self, name: &str) -> Option<u32> {
        self.progs.get(name).map(|p| p.id)
    }
}

/// Why pinned state cannot be used as it is.
struct NotCurrent {
    reason: String,
    /// The pinned maps have another shape: they cannot be reused.
    layout_changed: bool,
}

/// Whether the programs and maps can be used as they are.
#[derive(Debug)]
pub enum Freshness {
    Current(Loaded),
    /// Needs an install; `layout_changed` means the pinned maps cannot be reused.
    Stale { reason: String, layout_changed: bool },
}

/// Prefix of temporary names. bpffs refuses dots in names, so no dot-files.
pub(crate) const TMP_PREFIX: &str = "_tmp_";

/// A random temporary name in `dir`, for pin-then-rename.
pub(crate) fn tmp_path(dir: &Path, what: &str) -> PathBuf {
    fsutil::tmp_path(dir, TMP_PREFIX, what)
}

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl KernelState {
    pub fn new(spec: ObjectSpec, bpf_root: &Path, run_root: &Path) -> KernelState {
        KernelState {
            pin_dir: bpf_root.join(spec.name),
            run_dir: run_root.join(spec.name),
            spec,
            library_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// This state with map capacities set from the configuration.
    pub fn with_capacities(&self, capacities: &[(&'static str, u32)]) -> KernelState {
        let mut state = self.clone();
        state.spec.capacities = capacities.to_vec();
        state
    }

    pub(crate) fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }
    pub(crate) fn progs_dir(&self) -> PathBuf {
        self.pin_dir.join("progs")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }
    fn state_file(&self) -> PathBuf {
        self.run_dir.join("state.json")
    }
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    pub fn prog_pin(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// Whether anything of this subsystem is pinned or recorded.
    pub fn exists(&self) -> bool {
        self.pin_dir.exists() || self.state_file().exists()
    }

    pub fn lock(&self, mode: Mode) -> Result<Lock> {
        let root = self.run_dir.parent().unwrap_or(&self.run_dir);
        Lock::acquire(root, &lock::lock_path(&self.run_dir), mode)
    }

    /// The ids of this subsystem's pinned programs (those that are pinned).
    pub fn pinned_program_ids(&self) -> BTreeMap<&'static str, u32> {
        let mut ids = BTreeMap::new();
        for spec in self.spec.programs {
            if let Ok(fd) = sys::obj_get(&self.prog_pin(spec.name)) {
                if let Ok(id) = sys::prog_id(&fd) {
                    ids.insert(spec.name, id);
                }
            }
        }
        ids
    }

    /// For `status`: the recorded library version, schema version and
    /// fingerprint of what is loaded, if anything is.
    pub fn run_info(&self) -> Option<(String, u32, String)> {
        let run = self.read_run_state().ok().flatten()?;
        Some((run.library_version, run.schema_version, run.fingerprint))
    }

    /// For reading (`status`, `monitor`): whatever maps and programs are
    /// pinned, opened without judging whether they are current (typed
    /// access still checks every map's sizes). `None` if nothing is pinned.
    pub fn open_pins(&self) -> Result<Option<Loaded>> {
        if !self.maps_dir().exists() {
            return Ok(None);
        }
        let mut maps = BTreeMap::new();
        for desc in self.spec.maps {
            if let Some(map) = self.open_map_pin(desc.name())? {
                maps.insert(desc.name(), map);
            }
        }
        let mut progs = BTreeMap::new();
        for spec in self.spec.programs {
            if let Some(prog) = self.open_prog_pin(spec.name)? {
                progs.insert(spec.name, prog);
            }
        }
        Ok(Some(Loaded { maps, progs }))
    }

    /// For the `apply_iface` fast path: the pinned maps and programs when the
    /// run state says that this very object loaded them (same fingerprint,
    /// computed at build time, and schema) and the programs are the recorded
    /// ones. No object parse and no layout check: the caller has made sure
    /// the running config is the one the last successful full pass applied,
    /// and that pass made the maps current (typed access still checks every
    /// map's sizes). `None` when anything differs: the slow path decides.
    pub fn open_recorded(&self) -> Result<Option<Loaded>> {
        let Some(run) = self.read_run_state()? else { return Ok(None) };
        if run.fingerprint != self.spec.object.fingerprint || run.schema_version != self.spec.schema_version {
            return Ok(None);
        }
        let Some(loaded) = self.open_pins()? else { return Ok(None) };
        let programs_recorded = loaded.progs.len() == self.spec.programs.len()
            && loaded.progs.iter().all(|(name, p)| run.programs.get(*name) == Some(&p.id));
        let maps_recorded = loaded.maps.len() == self.spec.maps.len()
            && loaded.maps.iter().all(|(name, m)| run.maps.get(*name) == Some(&shape(&m.info)));
        if !maps_recorded || !programs_recorded {
            return Ok(None);
        }
        Ok(Some(loaded))
    }

    /// A pinned map with its kernel info; `None` if it is not pinned.
    fn open_map_pin(&self, name: &str) -> Result<Option<LoadedMap>> {
        let path = self.map_pin(name);
        match sys::obj_get(&path) {
            Ok(fd) => {
                let info = sys::map_info(fd.as_fd()).with_context(|| format!("map info {}", path.display()))?;
                Ok(Some(LoadedMap { fd, info }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("open pinned map {}", path.display())),
        }
    }

    /// A pinned program with its id; `None` if it is not pinned.
    fn open_prog_pin(&self, name: &str) -> Result<Option<Prog>> {
        let path = self.prog_pin(name);
        match sys::obj_get(&path) {
            Ok(fd) => {
                let id = sys::prog_id(&fd).with_context(|| format!("program info {}", path.display()))?;
                Ok(Some(Prog { fd, id }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("open pinned program {}", path.display())),
        }
    }

    fn read_run_state(&self) -> Result<Option<RunState>> {
        let path = self.state_file();
        match fsutil::read_regular(&path, false) {
            Ok(Some(b)) => match serde_json::from_slice(&b) {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    log::warn!("{}: unreadable run state ({e}), treating as absent", path.display());
                    Ok(None)
                }
            },
            Ok(None) => Ok(None),
            // Not a regular file (a FIFO, a device, a symlink): replaced by the install.
            Err(e) => {
                log::warn!("run state: {e:#}; treating as absent");
                Ok(None)
            }
        }
    }

    fn write_run_state(&self, loaded: &Loaded) -> Result<()> {
        let state = RunState {
            schema_version: self.spec.schema_version,
            fingerprint: self.spec.fingerprint(),
            programs: loaded.progs.iter().map(|(name, p)| (name.to_string(), p.id)).collect(),
            library_version: self.library_version.clone(),
            maps: loaded.maps.iter().map(|(name, m)| (name.to_string(), shape(&m.info))).collect(),
        };
        fsutil::private_dir(&self.run_dir)?;
        let path = self.state_file();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
            // A FIFO or a directory in its place: rename cannot replace a directory.
            let _ = std::fs::remove_dir_all(&path);
        }
        fsutil::write_private(&path, &serde_json::to_vec(&state)?)
    }

    /// Opens what is pinned and tells whether it is current. Never loads.
    ///
    /// Programs a newer library version loaded count as current when their
    /// maps have the layout this library knows (same schema version and map
    /// shapes): a daemon not yet restarted after an upgrade works with them.
    /// Otherwise the call fails instead of loading its older programs.
    pub fn freshness(&self) -> Result<Freshness> {
        let stale = |reason: String, layout_changed| Ok(Freshness::Stale { reason, layout_changed });
        let run = self.read_run_state()?;
        let by_newer = run.as_ref().filter(|r| newer(&r.library_version, &self.library_version));
        if let Some(run) = by_newer {
            let newer_loaded = |why: String| {
                anyhow!(
                    "{}: programs of a newer library version ({}) are loaded and {why}; \
                     this process runs version {}: restart it to use the new library",
                    self.name(),
                    run.library_version,
                    self.library_version
                )
            };
            if run.schema_version != self.spec.schema_version {
                return Err(newer_loaded(format!(
                    "their schema version {} is not this library's {}",
                    run.schema_version, self.spec.schema_version
                )));
            }
            return match self.open_pinned(Some(run))? {
                Ok(loaded) => Ok(Freshness::Current(loaded)),
                Err(not_current) => Err(newer_loaded(not_current.reason)),
            };
        }
        if let Some(run) = &run {
            if run.schema_version != self.spec.schema_version {
                let reason =
                    format!("schema version {} pinned, object has {}", run.schema_version, self.spec.schema_version);
                return stale(reason, true);
            }
        }
        match self.open_pinned(run.as_ref())? {
            Ok(loaded) => Ok(Freshness::Current(loaded)),
            Err(NotCurrent { reason, layout_changed }) => stale(reason, layout_changed),
        }
    }

    /// Opens the pinned maps and programs, checking every map against the
    /// object's layout (aya reuses a pinned map without looking at it) and
    /// every program against the ids recorded in `run`. `Ok(Err(..))` when
    /// they cannot be used as they are.
    fn open_pinned(&self, run: Option<&RunState>) -> Result<std::result::Result<Loaded, NotCurrent>> {
        let other = |reason: String| Ok(Err(NotCurrent { reason, layout_changed: false }));
        let mut maps = BTreeMap::new();
        let mut missing = Vec::new();
        for layout in self.spec.map_layouts()? {
            match self.open_map_pin(layout.name)? {
                Some(map) => {
                    if let Some(reason) = layout.mismatch(&map.info) {
                        return Ok(Err(NotCurrent { reason, layout_changed: true }));
                    }
                    maps.insert(layout.name, map);
                }
                None => missing.push(layout.name),
            }
        }
        if !missing.is_empty() {
            return other(format!("maps not pinned: {}", missing.join(", ")));
        }
        let Some(run) = run else { return other("no run state".into()) };
        let by_us = !newer(&run.library_version, &self.library_version);
        if by_us && run.fingerprint != self.spec.fingerprint() {
            return other("BPF object changed".into());
        }
        let mut progs = BTreeMap::new();
        for spec in self.spec.programs {
            let Some(prog) = self.open_prog_pin(spec.name)? else {
                return other(format!("program {} not pinned", spec.name));
            };
            if run.programs.get(spec.name).is_some_and(|&recorded| recorded != prog.id) {
                return other(format!("program pin {} was replaced", spec.name));
            }
            progs.insert(spec.name, prog);
        }
        Ok(Ok(Loaded { maps, progs }))
    }

    /// The current installation: opened if current, else installed (see
    /// `install`) with `prefill` writing the new maps. Also returns, after an
    /// install, how many entries `prefill` wrote.
    pub fn ensure_current(&self, prefill: &dyn Fn(&Loaded) -> Result<usize>) -> Result<(Loaded, Option<usize>)> {
        match self.freshness()? {
            Freshness::Current(loaded) => Ok((loaded, None)),
            Freshness::Stale { reason, layout_changed } => {
                log::info!("{}: installing BPF programs: {reason}", self.name());
                let written = std::cell::Cell::new(0);
                let loaded =
                    self.install(layout_changed, &|l| prefill(l).map(|n| written.set(n))).context("install")?;
                Ok((loaded, Some(written.get())))
            }
        }
    }

    /// Runs the verifier on the object with throw-away maps, pinning nothing.
    pub fn verify_object(&self) -> Result<()> {
        let mut loader = aya::EbpfLoader::new();
        for &(name, capacity) in &self.spec.capacities {
            loader.map_max_entries(name, capacity);
        }
        let mut ebpf = loader.load(self.spec.object.bytes).context("load BPF object (verification)")?;
        for spec in self.spec.programs {
            load_program(&mut ebpf, spec.name)?;
        }
        Ok(())
    }

    /// Loads the object (the verifier runs) and makes it current.
    ///
    /// With `layout_changed`, the object is first verified against throw-away
    /// state, and only then are the old maps and programs unpinned. Existing
    /// links are kept and swapped onto the new programs with
    /// `bpf_link_update`, after `prefill` has written the desired entries into
    /// the (new or reused) maps: no netdev is ever without its programs, and
    /// with prefilled maps no packet sees an empty policy.
    pub fn install(&self, layout_changed: bool, prefill: &dyn Fn(&Loaded) -> Result<()>) -> Result<Loaded> {
        if layout_changed {
            self.verify_object().context("verify new object before replacing the old state")?;
            self.unpin_maps_and_programs().context("remove old maps and programs")?;
            crash_point("install-after-unpin");
        }
        for dir in [self.pin_dir.clone(), self.maps_dir(), self.progs_dir(), self.links_dir()] {
            fsutil::private_dir(&dir)?;
        }
        let map_pins: Vec<(&'static str, PathBuf)> =
            self.spec.maps.iter().map(|m| (m.name(), self.map_pin(m.name()))).collect();
        let mut loader = aya::EbpfLoader::new();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        for &(name, capacity) in &self.spec.capacities {
            loader.map_max_entries(name, capacity);
        }
        let mut ebpf = loader.load(self.spec.object.bytes).context("load BPF object")?;

        let mut maps = BTreeMap::new();
        for (name, path) in &map_pins {
            let fd = sys::obj_get(path).with_context(|| format!("open pinned map {}", path.display()))?;
            let info = sys::map_info(fd.as_fd()).with_context(|| format!("map info {}", path.display()))?;
            maps.insert(*name, LoadedMap { fd, info });
        }
        let mut progs = BTreeMap::new();
        for spec in self.spec.programs {
            let prog = load_program(&mut ebpf, spec.name)?;
            let fd = prog.fd().context("program fd")?.as_fd().try_clone_to_owned().context("dup program fd")?;
            let id = sys::prog_id(&fd).context("program info")?;
            progs.insert(spec.name, Prog { fd, id });
        }
        let loaded = Loaded { maps, progs };
        crash_point("install-after-load");
        prefill(&loaded).context("fill maps before swapping programs")?;
        crash_point("install-after-prefill");

        for link in self.link_pins()? {
            self.swap_link(&link, &loaded).with_context(|| format!("swap link {}", link.path.display()))?;
        }
        crash_point("install-after-swap");
        for spec in self.spec.programs {
            let path = self.prog_pin(spec.name);
            let tmp = tmp_path(&self.progs_dir(), spec.name);
            sys::obj_pin(loaded.progs[spec.name].fd.as_fd(), &tmp).with_context(|| format!("pin {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("pin program {}", path.display()))?;
        }
        crash_point("install-before-run-state");
        self.write_run_state(&loaded)?;
        log::info!(
            "{}: loaded BPF object {} (programs {})",
            self.name(),
            &self.spec.fingerprint()[..12],
            loaded.progs.iter().map(|(name, p)| format!("{name}={}", p.id)).collect::<Vec<_>>().join(", ")
        );
        Ok(loaded)
    }

    fn unpin_maps_and_programs(&self) -> Result<()> {
        for dir in [self.maps_dir(), self.progs_dir()] {
            remove_dir_all_if_exists(&dir)?;
        }
        // Without run state, a crash before the new install completes is
        // seen as "not installed" by the next call.
        remove_file_if_exists(&self.state_file())
    }

    /// Pins are only safe on a bpffs: anywhere else they fail, or vanish.
    /// The root is made private (0700) like everything the library creates.
    pub fn check_bpf_root(bpf_root: &Path) -> Result<()> {
        // The root itself if it exists (it may be a mount point), else where it would be created.
        let probe = match bpf_root.parent() {
            Some(parent) if !bpf_root.exists() => {
                std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
                parent
            }
            _ => bpf_root,
        };
        if !sys::is_bpffs(probe).with_context(|| format!("statfs {}", probe.display()))? {
            bail!("BPF pin root {} is not on a bpffs (mount -t bpf bpf DIR)", bpf_root.display());
        }
        fsutil::private_dir(bpf_root).context("BPF pin root")
    }

    /// Detaches every link and removes every pin and all run state.
    /// The caller holds the exclusive lock, which goes away with the run dir.
    pub fn remove_all(&self) -> Result<()> {
        self.sweep_tmp_pins();
        for link in self.link_pins()? {
            self.remove_link(&link).with_context(|| format!("detach {}", link.path.display()))?;
        }
        remove_dir_all_if_exists(&self.pin_dir)?;
        remove_dir_all_if_exists(&self.run_dir)?;
        Ok(())
    }
}

fn load_program<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("program {name} is not a tc classifier"))?;
    prog.load().map_err(|e| anyhow!("{}", verifier_message(&e))).with_context(|| format!("load program {name}"))?;
    Ok(prog)
}

/// aya's load error carries the verifier log in its variant, not its Display.
fn verifier_message(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            format!("{io_error}; verifier log:\n{verifier_log}")
        }
        other => other.to_string(),
    }
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if !is_not_found(&e) => Err(e).with_context(|| format!("remove {}", path.display())),
        _ => Ok(()),
    }
}

fn remove_dir_all_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if !is_not_found(&e) => Err(e).with_context(|| format!("remove {}", path.display())),
        _ => Ok(()),
    }
}
