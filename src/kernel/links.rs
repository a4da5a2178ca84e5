//! TCX links of one subsystem: pinned per netdev and program, created in
//! the declared order among all subsystems' programs on a hook, swapped
//! atomically onto new programs, reclaimed when their netdev is gone.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::kernel::netdev;
use crate::kernel::object::{Hook, ProgramSpec};
use crate::kernel::state::{is_not_found, remove_file_if_exists, tmp_path, KernelState, Loaded, Prog, TMP_PREFIX};
use crate::kernel::sys::{self, TcxPosition};
use crate::kernel::testhook::crash_point;

/// Separates netdev and program in a link pin's name. Netdev names cannot
/// contain ':' (the kernel's dev_valid_name refuses it) and bpffs refuses
/// dots, so `<netdev>:<program>` is unambiguous.
const LINK_SEP: char = ':';

/// Program id -> rank, for every program of every subsystem that is pinned.
pub type Ranks = HashMap<u32, u8>;

/// A link pin found in the links directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPin {
    pub netdev: String,
    pub program: String,
    pub path: PathBuf,
}

/// A netdev that carries every program of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Already attached to this netdev with the current program.
    Present,
    /// Attached with an older program, swapped atomically.
    Updated,
    Created,
    /// A pin for this name pointed at a gone or other netdev; replaced.
    Reclaimed,
}

impl KernelState {
    pub fn link_pin(&self, netdev: &str, program: &str) -> PathBuf {
        self.links_dir().join(format!("{netdev}{LINK_SEP}{program}"))
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
                // one: the sweep removes them under the exclusive lock.
                continue;
            }
            let Some((netdev, program)) = name.rsplit_once(LINK_SEP) else { continue };
            pins.push(LinkPin { netdev: netdev.to_string(), program: program.to_string(), path: entry.path() });
        }
        pins.sort_by(|a, b| (&a.netdev, &a.program).cmp(&(&b.netdev, &b.program)));
        Ok(pins)
    }

    /// The link pins whose link is live on the netdev of its name now (not
    /// detached, its ifindex not recycled): what `status` calls attached.
    pub fn live_link_pins(&self) -> Result<Vec<LinkPin>> {
        Ok(self
            .link_pins()?
            .into_iter()
            .filter(|link| {
                sys::obj_get(&link.path)
                    .ok()
                    .and_then(|fd| sys::link_info(fd.as_fd()).ok())
                    .is_some_and(|i| i.ifindex != 0 && netdev::ifindex(&link.netdev) == Some(i.ifindex))
            })
            .collect())
    }

    /// Makes sure `target` carries the current `program`.
    pub fn attach(
        &self,
        loaded: &Loaded,
        target: &Target,
        program: &ProgramSpec,
        ranks: &dyn Fn() -> Ranks,
    ) -> Result<AttachOutcome> {
        let path = self.link_pin(&target.name, program.name);
        let prog = loaded.prog(program.name);
        let mut outcome = AttachOutcome::Created;
        match sys::obj_get(&path) {
            Ok(fd) => {
                let info = sys::link_info(fd.as_fd()).with_context(|| format!("link info {}", path.display()))?;
                let same_netdev = info.link_type == sys::BPF_LINK_TYPE_TCX
                    && info.ifindex == target.ifindex
                    && info.attach_type == program.hook.attach_type();
                if same_netdev && info.prog_id == prog.id {
                    return Ok(AttachOutcome::Present);
                }
                if same_netdev {
                    sys::link_update(fd.as_fd(), prog.fd.as_fd()).context("bpf_link_update")?;
                    return Ok(AttachOutcome::Updated);
                }
                // The pin's link is not on this netdev: its netdev is gone
                // (guest restarted, ifindex recycled), or it was renamed and
                // still needs its programs. Settle it, then start over.
                self.release_pin(&path, &info, program)?;
                outcome = AttachOutcome::Reclaimed;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("open link pin {}", path.display())),
        }
        let link = self
            .create_or_adopt_link(prog, target.ifindex, program, ranks)
            .with_context(|| format!("attach {} ({}): bpf_link_create", program.name, program.hook.as_str()))?;
        // Pin under a temporary name, then rename: atomic, and if two shared
        // holders race on the same netdev, the last rename wins and the other
        // link goes away with its descriptor.
        crash_point("attach-after-create");
        let tmp = tmp_path(&self.links_dir(), &target.name);
        sys::obj_pin(link.as_fd(), &tmp).with_context(|| format!("pin link {}", tmp.display()))?;
        crash_point("attach-after-tmp-pin");
        std::fs::rename(&tmp, &path).with_context(|| format!("pin link {}", path.display()))?;
        Ok(outcome)
    }

    /// Lets go of a pin whose link does not belong under the pin's name:
    /// a defunct link (its netdev is gone) is detached; a live link stays
    /// on its netdev (renamed since it was pinned) and is pinned under that
    /// netdev's current name instead, so that whoever enforces that name
    /// keeps it and a full pass detaches it only if that name is not a target.
    fn release_pin(&self, path: &std::path::Path, info: &sys::LinkInfo, program: &ProgramSpec) -> Result<()> {
        let current = (info.link_type == sys::BPF_LINK_TYPE_TCX && info.ifindex != 0)
            .then(|| netdev::name_of(info.ifindex))
            .flatten();
        let moved = current.map(|name| (self.link_pin(&name, program.name), name)).filter(|(to, _)| to != path);
        match moved {
            Some((to, name)) => {
                log::info!("{}: link of {} now belongs to {name}: pinned as {}", self.name(), path.display(), to.display());
                if to.exists() {
                    // Its netdev's pin exists: TCX holds a program once per hook,
                    // so that pin holds this same link.
                    remove_file_if_exists(path)
                } else {
                    std::fs::rename(path, &to).with_context(|| format!("pin link {}", to.display()))
                }
            }
            None => {
                log::info!("{}: reclaiming link pin {} (its netdev is gone)", self.name(), path.display());
                if let Ok(fd) = sys::obj_get(path) {
                    let _ = sys::link_detach(fd.as_fd());
                }
                remove_file_if_exists(path)
            }
        }
    }

    /// A link pin that is not a target: detached, unless its link sits on a
    /// target's netdev with that target's program (the netdev was renamed
    /// and the target adopted the link): then only the stale pin goes.
    pub(crate) fn remove_stale_pin(&self, link: &LinkPin, loaded: &Loaded, target_ifindexes: &[u32]) -> Result<()> {
        if let Ok(fd) = sys::obj_get(&link.path) {
            if let Ok(info) = sys::link_info(fd.as_fd()) {
                let serves_target = info.ifindex != 0
                    && target_ifindexes.contains(&info.ifindex)
                    && self.spec.program(&link.program).is_some_and(|p| loaded.prog(p.name).id == info.prog_id);
                if serves_target {
                    log::info!("{}: {} is a stale name of a link in use: unpinned only", self.name(), link.path.display());
                    return remove_file_if_exists(&link.path);
                }
            }
        }
        self.remove_link(link)
    }

    /// Creates the TCX link in its place on the hook, or adopts the one
    /// already running our program there.
    ///
    /// The place: right before the first program of the chain whose rank is
    /// higher than ours, else at the end; programs of no subsystem are not
    /// moved around. The chain's revision makes the insert fail with `ESTALE`
    /// if another attach changed the chain meanwhile; it is then retried.
    ///
    /// TCX holds a program once per hook. If ours is there through a live
    /// link (a renamed netdev, a process holding the link open), that link
    /// is taken over, so a netdev never ends up with an unmanaged copy of
    /// our program. If it is there through a link being released (deferred
    /// to a workqueue), `EEXIST` is retried until it is gone.
    fn create_or_adopt_link(
        &self,
        prog: &Prog,
        ifindex: u32,
        program: &ProgramSpec,
        ranks: &dyn Fn() -> Ranks,
    ) -> io::Result<OwnedFd> {
        let attach_type = program.hook.attach_type();
        let mut last = None;
        for _ in 0..20 {
            let chain = sys::query_tcx(ifindex, attach_type)?;
            // Our program is already on the hook through a live link (the
            // netdev was renamed, or a process holds the link open): adopt it.
            if let Some(&link_id) =
                chain.progs.iter().zip(&chain.links).find(|(p, l)| **p == prog.id && **l != 0).map(|(_, l)| l)
            {
                if let Ok(fd) = sys::link_get_fd_by_id(link_id) {
                    log::info!("{}: adopting link {link_id} already on ifindex {ifindex}", self.name());
                    return Ok(fd);
                }
            }
            let position = if chain.progs.is_empty() {
                TcxPosition::Append
            } else {
                let ranks = ranks();
                chain
                    .progs
                    .iter()
                    .find(|id| ranks.get(id).is_some_and(|&r| r > program.rank))
                    .map_or(TcxPosition::Append, |&id| TcxPosition::BeforeProg(id))
            };
            match sys::link_create_tcx(prog.fd.as_fd(), ifindex, attach_type, position, chain.revision) {
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                    last = Some(e);
                    continue;
                }
                // A link being released (its last pin just went): gone within milliseconds.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => last = Some(e),
                other => return other,
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EEXIST)))
    }

    /// Puts a link onto the newly loaded program; a defunct link is removed
    /// (its netdev is gone; the next attach of that name creates a fresh
    /// one), as is a link of a program the object no longer has.
    pub(crate) fn swap_link(&self, link: &LinkPin, loaded: &Loaded) -> Result<()> {
        let fd = match sys::obj_get(&link.path) {
            Ok(fd) => fd,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e).context("open link pin"),
        };
        let info = sys::link_info(fd.as_fd()).context("link info")?;
        let Some(spec) = self.spec.program(&link.program) else {
            log::info!("{}: removing link {} of a program the object no longer has", self.name(), link.path.display());
            return self.remove_link(link);
        };
        if info.link_type != sys::BPF_LINK_TYPE_TCX || info.ifindex == 0 {
            log::info!("{}: removing defunct link {}", self.name(), link.path.display());
            return self.remove_link(link);
        }
        sys::link_update(fd.as_fd(), loaded.prog(spec.name).fd.as_fd()).context("bpf_link_update")
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
    /// rename (a temporary link pin holds a second, unmanaged attachment, so
    /// it is detached first), and renames link pins of the earlier
    /// `<netdev>-<hook>` scheme to `<netdev>:<program>`. Only under the
    /// exclusive lock: no one else can be mid-rename then.
    pub fn sweep_tmp_pins(&self) -> usize {
        let mut swept = 0;
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if dir == self.links_dir() {
                    self.migrate_legacy_link_pin(&name);
                }
                if !name.starts_with(TMP_PREFIX) {
                    continue;
                }
                if dir == self.links_dir() {
                    if let Ok(fd) = sys::obj_get(&entry.path()) {
                        let _ = sys::link_detach(fd.as_fd());
                    }
                }
                log::info!("{}: removing leftover {}", self.name(), entry.path().display());
                if std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
        }
        swept
    }

    /// `<netdev>-ingress` / `<netdev>-egress` (library 0.1) name the one
    /// program of this subsystem on that hook.
    fn migrate_legacy_link_pin(&self, name: &str) {
        if name.contains(LINK_SEP) || name.starts_with(TMP_PREFIX) {
            return;
        }
        let Some((netdev, hook)) = name.rsplit_once('-') else { return };
        let hook = match hook {
            "ingress" => Hook::Ingress,
            "egress" => Hook::Egress,
            _ => return,
        };
        let mut on_hook = self.spec.programs.iter().filter(|p| p.hook == hook);
        if let (Some(program), None) = (on_hook.next(), on_hook.next()) {
            let (from, to) = (self.links_dir().join(name), self.link_pin(netdev, program.name));
            log::info!("{}: renaming link pin {} to {}", self.name(), from.display(), to.display());
            if let Err(e) = std::fs::rename(&from, &to) {
                log::warn!("{}: rename {}: {e}", self.name(), from.display());
            }
        }
    }
}
