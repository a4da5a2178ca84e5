//! Files and directories the library creates or reads, made safe against
//! local users and a faulty host (SPEC section 6): everything it creates is
//! private to root (directories 0700, files 0600) whatever the caller's
//! umask; no path it writes is followed if it is a symlink; temporary names
//! are random; and what it reads must be a regular file of bounded size, so
//! a FIFO, a device or a huge file fails at once instead of hanging a call.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The largest file the library reads: ten times the largest running
/// config the benchmarks use.
pub const MAX_READ: u64 = 100 << 20;

/// Makes `dir` (and missing parents) exist; `dir` itself must be a real
/// directory owned by us and is made 0700. Parents that exist are left as
/// they are (they are the system's: `/run`, `/sys/fs/bpf`).
pub fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
            }
        }
        Err(e) => return Err(e).with_context(|| format!("stat {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!("{} is not a directory (a symlink or a file is not followed)", dir.display());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        bail!("{} is owned by uid {}, not by uid {euid}: refusing to use it", dir.display(), meta.uid());
    }
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    Ok(())
}

/// A random name in `dir` for pin-then-rename and write-then-rename.
pub fn tmp_path(dir: &Path, prefix: &str, what: &str) -> PathBuf {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most bytes.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never predictable: fall back to the clock and the address of a local.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mix = (t.as_nanos() as u64) ^ ((&n as *const isize as u64).rotate_left(17));
        bytes = mix.to_ne_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{prefix}{what}_{hex}"))
}

/// Opens (creating) a private file for the lock: 0600, never through a
/// symlink, and it must be a regular file.
pub fn open_lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("open lock file {} (a symlink is not followed)", path.display()))?;
    let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("lock file {} is not a regular file", path.display());
    }
    if meta.mode() & 0o777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
    }
    Ok(file)
}

/// Writes `bytes` to `path` atomically: a new private file under a random
/// name (created exclusively, so nothing planted there is written through),
/// then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no directory")?;
    let name = path.file_name().context("path has no file name")?.to_string_lossy();
    let tmp = tmp_path(dir, "_tmp_", &name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    // The mode was masked by the umask: set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .with_context(|| format!("write {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display())).inspect_err(
        |_| {
            let _ = std::fs::remove_file(&tmp);
        },
    )
}

/// Reads a regular file of at most [`MAX_READ`] bytes; `None` if it does not
/// exist. A FIFO or a device is refused without blocking (`O_NONBLOCK`).
/// `follow`: whether a symlink at `path` is followed (the running config may
/// be one; files the library writes itself are never followed).
pub fn read_regular(path: &Path, follow: bool) -> Result<Option<Vec<u8>>> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let mut file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_READ {
        bail!("{} is {} bytes, more than the {} the library reads", path.display(), meta.len(), MAX_READ);
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while being read.
    (&mut file).take(MAX_READ + 1).read_to_end(&mut buf).with_context(|| format!("read {}", path.display()))?;
    if buf.len() as u64 > MAX_READ {
        bail!("{} grew past the {} bytes the library reads", path.display(), MAX_READ);
    }
    Ok(Some(buf))
}
