//! The run-directory lock: exclusive for full passes, installs and `clear`,
//! shared for single-NIC passes so that concurrent guest starts run in
//! parallel. Waiting is bounded (SPEC section 6, as `PVE::Tools::lock_file`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kernel::fsutil;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// How long a call waits for a lock before it fails.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Held until dropped; closing the file releases the `flock`.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub mode: Mode,
}

impl Lock {
    /// Takes the lock at `path`, creating it (and its directory, and `root`
    /// above that, all private) if needed, waiting at most [`LOCK_TIMEOUT`].
    ///
    /// `clear` removes the lock file while holding it, so a waiter may wake up
    /// holding a lock on an unlinked inode: it then retries on the new file.
    pub fn acquire(root: &Path, path: &Path, mode: Mode) -> Result<Lock> {
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | libc::LOCK_NB;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let opened = fsutil::private_dir(root)
                .and_then(|_| path.parent().map_or(Ok(()), fsutil::private_dir))
                .and_then(|_| fsutil::open_lock_file(path));
            let file = match opened {
                Ok(file) => file,
                // A `clear` holding this lock removed the directory between
                // making it and opening the file: make it again.
                Err(e) if vanished(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
                    _ => return Err(e).with_context(|| format!("lock {}", path.display())),
                }
                if Instant::now() >= deadline {
                    bail!(
                        "lock {}: still held by another process after {} s",
                        path.display(),
                        LOCK_TIMEOUT.as_secs()
                    );
                }
                // Polls start fast (a pass holds the lock for milliseconds)
                // and back off to 50 ms.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
                continue;
            }
            if same_inode(&file, path) {
                return Ok(Lock { _file: file, mode });
            }
        }
    }
}

fn vanished(e: &anyhow::Error) -> bool {
    e.root_cause().downcast_ref::<std::io::Error>().is_some_and(crate::kernel::state::is_not_found)
}

fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

pub fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("lock")
}
