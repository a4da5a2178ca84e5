//! Pinned kernel state of one subsystem (SPEC section 5).
//!
//! ```text
//! <bpf root>/<subsystem>/maps/<map>            pinned maps
//! <bpf root>/<subsystem>/progs/<program>       pinned programs
//! <bpf root>/<subsystem>/links/<nic>-<hook>    one TCX link per NIC and hook
//! <run dir>/<subsystem>/lock                   flock: see lock.rs
//! <run dir>/<subsystem>/state.json             schema version and fingerprint
//! ```
//!
//! The verifier runs only when the state is not current: first install, an
//! object with another fingerprint, or another map layout. Everything else
//! (the common path) opens pins. Every write goes to a temporary name and is
//! renamed into place, so a process killed at any point leaves either the old
//! or the new pin, and the next call converges.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::SchedClassifier;
use serde::{Deserialize, Serialize};

use crate::bpf::{Hook, Subsystem};
use crate::lock::{self, Lock, Mode};
use crate::sys;
use crate::testhook::crash_point;

/// Where one subsystem keeps its pins and its run state.
#[derive(Debug, Clone)]
pub struct KernelState {
    pub sub: Subsystem,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RunState {
    schema_version: u32,
    fingerprint: String,
}

/// Open handles on a current installation. Dropped at the end of each call,
/// so no descriptor outlives it.
#[derive(Debug)]
pub struct Loaded {
    pub maps: HashMap<&'static str, OwnedFd>,
    pub progs: HashMap<Hook, Prog>,
}

#[derive(Debug)]
pub struct Prog {
    pub fd: OwnedFd,
    pub id: u32,
}

impl Loaded {
    pub fn map(&self, name: &str) -> &OwnedFd {
        &self.maps[name]
    }
}

/// Whether the programs and maps can be used as they are.
#[derive(Debug)]
pub enum Freshness {
    Current(Loaded),
    /// Needs an install; `layout_changed` means the pinned maps cannot be reused.
    Stale { reason: String, layout_changed: bool },
}

/// A link pin found in the links directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPin {
    pub nic: String,
    pub hook: Hook,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Already attached to this NIC with the current program.
    Present,
    /// Attached with an older program, swapped atomically.
    Updated,
    Created,
    /// A pin for this name pointed at a gone or other netdev; replaced.
    Reclaimed,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prefix of temporary names. bpffs refuses dots in names, so no dot-files.
const TMP_PREFIX: &str = "_tmp_";

/// A unique temporary name in `dir`, for pin-then-rename.
fn tmp_path(dir: &Path, what: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TMP_PREFIX}{what}_{}_{n}", std::process::id()))
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl KernelState {
    pub fn new(sub: Subsystem, bpf_root: &Path, run_root: &Path) -> KernelState {
        KernelState { pin_dir: bpf_root.join(sub.name), run_dir: run_root.join(sub.name), sub }
    }

    fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }
    fn progs_dir(&self) -> PathBuf {
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
    pub fn link_pin(&self, nic: &str, hook: Hook) -> PathBuf {
        // bpffs reserves dots in names: the separator is a dash.
        self.links_dir().join(format!("{nic}-{}", hook.as_str()))
    }

    pub fn lock(&self, mode: Mode) -> Result<Lock> {
        lock::Lock::acquire(&lock::lock_path(&self.run_dir), mode)
    }

    /// Pins are only safe on a bpffs: anywhere else they fail, or vanish.
    pub fn check_bpf_root(&self, bpf_root: &Path) -> Result<()> {
        std::fs::create_dir_all(bpf_root).with_context(|| format!("create BPF pin root {}", bpf_root.display()))?;
        if !sys::is_bpffs(bpf_root).with_context(|| format!("statfs {}", bpf_root.display()))? {
            bail!("BPF pin root {} is not on a bpffs (mount -t bpf bpf DIR)", bpf_root.display());
        }
        Ok(())
    }

    fn read_run_state(&self) -> Result<Option<RunState>> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    log::warn!("{}: unreadable run state ({e}), treating as absent", path.display());
                    Ok(None)
                }
            },
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    fn write_run_state(&self) -> Result<()> {
        let state = RunState { schema_version: self.sub.schema_version, fingerprint: self.sub.fingerprint() };
        std::fs::create_dir_all(&self.run_dir).with_context(|| format!("create {}", self.run_dir.display()))?;
        let tmp = tmp_path(&self.run_dir, "state");
        std::fs::write(&tmp, serde_json::to_vec(&state)?).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, self.state_file()).with_context(|| format!("rename to {}", self.state_file().display()))
    }

    /// Opens what is pinned and tells whether it is current. Never loads.
    pub fn freshness(&self) -> Result<Freshness> {
        let stale = |reason: String, layout_changed| Ok(Freshness::Stale { reason, layout_changed });
        let run = self.read_run_state()?;
        if let Some(run) = &run {
            if run.schema_version != self.sub.schema_version {
                let reason =
                    format!("schema version {} pinned, object has {}", run.schema_version, self.sub.schema_version);
                return stale(reason, true);
            }
        }
        // aya reuses a pinned map without looking at it: check every one.
        let mut maps = HashMap::new();
        let mut missing = Vec::new();
        for layout in self.sub.map_layouts()? {
            let path = self.map_pin(layout.name);
            match sys::obj_get(&path) {
                Ok(fd) => {
                    let info = sys::map_info(fd.as_fd()).with_context(|| format!("map info {}", path.display()))?;
                    if let Some(diff) = layout.mismatch(&info) {
                        return stale(diff, true);
                    }
                    maps.insert(layout.name, fd);
                }
                Err(e) if is_not_found(&e) => missing.push(layout.name),
                Err(e) => return Err(e).with_context(|| format!("open pinned map {}", path.display())),
            }
        }
        if !missing.is_empty() {
            return stale(format!("maps not pinned: {}", missing.join(", ")), false);
        }
        match run {
            None => return stale("no run state".into(), false),
            Some(run) if run.fingerprint != self.sub.fingerprint() => {
                return stale("BPF object changed".into(), false)
            }
            Some(_) => {}
        }
        let mut progs = HashMap::new();
        for spec in self.sub.programs {
            let path = self.prog_pin(spec.name);
            match sys::obj_get(&path) {
                Ok(fd) => {
                    let id = sys::prog_id(&fd).with_context(|| format!("program info {}", path.display()))?;
                    progs.insert(spec.hook, Prog { fd, id });
                }
                Err(e) if is_not_found(&e) => return stale(format!("program {} not pinned", spec.name), false),
                Err(e) => return Err(e).with_context(|| format!("open pinned program {}", path.display())),
            }
        }
        Ok(Freshness::Current(Loaded { maps, progs }))
    }

    /// The current installation: opened if current, else installed (see
    /// `install`) with `prefill` writing the new maps. Also returns, after an
    /// install, how many entries `prefill` wrote.
    pub fn ensure_current(&self, prefill: &dyn Fn(&Loaded) -> Result<usize>) -> Result<(Loaded, Option<usize>)> {
        match self.freshness()? {
            Freshness::Current(loaded) => Ok((loaded, None)),
            Freshness::Stale { reason, layout_changed } => {
                log::info!("{}: installing BPF programs: {reason}", self.sub.name);
                let written = std::cell::Cell::new(0);
                let loaded = self
                    .install(layout_changed, &|l| prefill(l).map(|n| written.set(n)))
                    .context("install")?;
                Ok((loaded, Some(written.get())))
            }
        }
    }

    /// Runs the verifier on the object with throw-away maps, pinning nothing.
    pub fn verify_object(&self) -> Result<()> {
        let mut ebpf = aya::EbpfLoader::new().load(self.sub.object).context("load BPF object (verification)")?;
        for spec in self.sub.programs {
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
    /// the (new or reused) maps: no NIC is ever without its programs, and with
    /// prefilled maps no packet sees an empty policy.
    pub fn install(&self, layout_changed: bool, prefill: &dyn Fn(&Loaded) -> Result<()>) -> Result<Loaded> {
        if layout_changed {
            self.verify_object().context("verify new object before replacing the old state")?;
            self.unpin_maps_and_programs().context("remove old maps and programs")?;
            crash_point("install-after-unpin");
        }
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let map_pins: Vec<(&str, PathBuf)> = self.sub.maps.iter().map(|&m| (m, self.map_pin(m))).collect();
        let mut loader = aya::EbpfLoader::new();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(self.sub.object).context("load BPF object")?;

        let mut maps = HashMap::new();
        for (name, path) in &map_pins {
            let fd = sys::obj_get(path).with_context(|| format!("open pinned map {}", path.display()))?;
            maps.insert(*name, fd);
        }
        let mut progs = HashMap::new();
        for spec in self.sub.programs {
            let prog = load_program(&mut ebpf, spec.name)?;
            let fd = prog.fd().context("program fd")?.as_fd().try_clone_to_owned().context("dup program fd")?;
            let id = sys::prog_id(&fd).context("program info")?;
            progs.insert(spec.hook, Prog { fd, id });
        }
        let loaded = Loaded { maps, progs };
        crash_point("install-after-load");
        prefill(&loaded).context("fill maps before swapping programs")?;
        crash_point("install-after-prefill");

        for link in self.link_pins()? {
            self.swap_link(&link, &loaded).with_context(|| format!("swap link {}", link.path.display()))?;
        }
        crash_point("install-after-swap");
        for spec in self.sub.programs {
            let path = self.prog_pin(spec.name);
            let tmp = tmp_path(&self.progs_dir(), spec.name);
            sys::obj_pin(loaded.progs[&spec.hook].fd.as_fd(), &tmp).with_context(|| format!("pin {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("pin program {}", path.display()))?;
        }
        crash_point("install-before-run-state");
        self.write_run_state()?;
        log::info!(
            "{}: loaded BPF object {} (programs {})",
            self.sub.name,
            &self.sub.fingerprint()[..12],
            self.sub.programs.iter().map(|p| format!("{}={}", p.name, loaded.progs[&p.hook].id)).collect::<Vec<_>>().join(", ")
        );
        Ok(loaded)
    }

    /// Puts a link onto the newly loaded program; a defunct link is removed
    /// (its NIC is gone; the next attach of that name creates a fresh one).
    fn swap_link(&self, link: &LinkPin, loaded: &Loaded) -> Result<()> {
        let fd = match sys::obj_get(&link.path) {
            Ok(fd) => fd,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e).context("open link pin"),
        };
        let info = sys::link_info(fd.as_fd()).context("link info")?;
        if info.link_type != sys::BPF_LINK_TYPE_TCX || info.ifindex == 0 {
            log::info!("{}: removing defunct link {}", self.sub.name, link.path.display());
            return self.remove_link(link);
        }
        sys::link_update(fd.as_fd(), loaded.progs[&link.hook].fd.as_fd()).context("bpf_link_update")
    }

    fn unpin_maps_and_programs(&self) -> Result<()> {
        for dir in [self.maps_dir(), self.progs_dir()] {
            remove_dir_all_if_exists(&dir)?;
        }
        // Without run state, a crash before the new install completes is
        // seen as "not installed" by the next call.
        remove_file_if_exists(&self.state_file())
    }

    /// Every link pin, skipping temporary names and names that are not ours.
    pub fn link_pins(&self) -> Result<Vec<LinkPin>> {
        let dir = self.links_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut pins = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                // Mid-rename by a concurrent apply_iface, or left by a killed
                // one: install() sweeps them under the exclusive lock.
                continue;
            }
            let Some((nic, hook)) = name.rsplit_once('-') else { continue };
            let Some(hook) = Hook::parse(hook) else { continue };
            pins.push(LinkPin { nic: nic.to_string(), hook, path: entry.path() });
        }
        pins.sort_by(|a, b| (&a.nic, a.hook.as_str()).cmp(&(&b.nic, b.hook.as_str())));
        Ok(pins)
    }

    /// Makes sure NIC `nic` (now `ifindex`) has the current program on `hook`.
    pub fn attach(&self, loaded: &Loaded, nic: &str, ifindex: u32, hook: Hook) -> Result<AttachOutcome> {
        let path = self.link_pin(nic, hook);
        let prog = &loaded.progs[&hook];
        let mut outcome = AttachOutcome::Created;
        match sys::obj_get(&path) {
            Ok(fd) => {
                let info = sys::link_info(fd.as_fd()).with_context(|| format!("link info {}", path.display()))?;
                let same_netdev = info.link_type == sys::BPF_LINK_TYPE_TCX
                    && info.ifindex == ifindex
                    && info.attach_type == hook.attach_type();
                if same_netdev && info.prog_id == prog.id {
                    return Ok(AttachOutcome::Present);
                }
                if same_netdev {
                    sys::link_update(fd.as_fd(), prog.fd.as_fd()).context("bpf_link_update")?;
                    return Ok(AttachOutcome::Updated);
                }
                // The pin outlived its netdev (guest restarted, ifindex
                // recycled): detach whatever it holds and start over.
                log::info!(
                    "{}: reclaiming link pin {} (was ifindex {}, {nic} is now {ifindex})",
                    self.sub.name,
                    path.display(),
                    info.ifindex
                );
                let _ = sys::link_detach(fd.as_fd());
                remove_file_if_exists(&path)?;
                outcome = AttachOutcome::Reclaimed;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("open link pin {}", path.display())),
        }
        let link = self
            .create_or_adopt_link(prog, ifindex, hook)
            .with_context(|| format!("attach {}: bpf_link_create", hook.as_str()))?;
        // Pin under a temporary name, then rename: atomic, and if two shared
        // holders race on the same NIC, the last rename wins and the other
        // link goes away with its descriptor.
        crash_point("attach-after-create");
        let tmp = tmp_path(&self.links_dir(), nic);
        sys::obj_pin(link.as_fd(), &tmp).with_context(|| format!("pin link {}", tmp.display()))?;
        crash_point("attach-after-tmp-pin");
        std::fs::rename(&tmp, &path).with_context(|| format!("pin link {}", path.display()))?;
        Ok(outcome)
    }

    /// Creates the TCX link, or adopts the one already running our program
    /// there. TCX refuses the same program twice on a hook (`EEXIST`): that
    /// happens when a link pin was removed and the kernel has not yet
    /// released the link (release is deferred to a workqueue), or when some
    /// process still holds the link open. The first goes away within
    /// milliseconds; the second is taken over, so a NIC never ends up with
    /// an unmanaged copy of our program.
    fn create_or_adopt_link(&self, prog: &Prog, ifindex: u32, hook: Hook) -> io::Result<OwnedFd> {
        let mut last = None;
        for attempt in 0..20 {
            match sys::link_create_tcx(prog.fd.as_fd(), ifindex, hook.attach_type()) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => last = Some(e),
                other => return other,
            }
            if attempt >= 10 {
                let (progs, links) = sys::query_tcx(ifindex, hook.attach_type())?;
                if let Some(&link_id) = progs.iter().zip(&links).find(|(p, l)| **p == prog.id && **l != 0).map(|(_, l)| l) {
                    if let Ok(fd) = sys::link_get_fd_by_id(link_id) {
                        log::info!("{}: adopting unmanaged link {link_id} on ifindex {ifindex}", self.sub.name);
                        return Ok(fd);
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EEXIST)))
    }

    /// Detaches a link now and removes its pin.
    pub fn remove_link(&self, link: &LinkPin) -> Result<()> {
        match sys::obj_get(&link.path) {
            Ok(fd) => {
                if let Err(e) = sys::link_detach(fd.as_fd()) {
                    log::debug!("detach {}: {e}", link.path.display());
                }
            }
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => log::warn!("open link pin {}: {e}", link.path.display()),
        }
        remove_file_if_exists(&link.path)
    }

    /// Removes temporary pins left by a process killed between pin and
    /// rename; a temporary link pin holds a second, unmanaged attachment, so
    /// it is detached first. Only under the exclusive lock: no one else can
    /// be mid-rename then.
    pub fn sweep_tmp_pins(&self) -> usize {
        let mut swept = 0;
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    continue;
                }
                if dir == self.links_dir() {
                    if let Ok(fd) = sys::obj_get(&entry.path()) {
                        let _ = sys::link_detach(fd.as_fd());
                    }
                }
                log::info!("{}: removing leftover {}", self.sub.name, entry.path().display());
                if std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
        }
        swept
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

fn remove_file_if_exists(path: &Path) -> Result<()> {
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
