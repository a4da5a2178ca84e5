//! `log` records to the system log (the journal), or to stderr; used by the
//! Perl binding and the CLI.
//!
//! PVE daemons run tasks with stderr captured into the task log, so the
//! default is syslog (`/dev/log`, which journald serves), written with one
//! datagram per record on a socket opened and closed for it, under the
//! identifier `pve-microseg`: no `openlog`, no descriptor kept, nothing of
//! the process changed. Where there is no `/dev/log` the record goes to
//! stderr instead. Both settings are read at every call:
//!
//! - `PVE_MICROSEG_LOG`: `off`, `error`, `warn`, `info` (default), `debug`, `trace`;
//! - `PVE_MICROSEG_LOG_TARGET`: `syslog` (default) or `stderr` (tests, the
//!   systemd unit: there stderr is the journal, and every line carries its
//!   priority as a `<N>` prefix, which journald reads).
//!
//! Warnings of a call are also collected (per thread, for that call only)
//! and handed to the caller, which shows them: the Perl glue raises them as
//! Perl warnings (that is how they reach the PVE task log), the CLI prints
//! them on stderr.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;
static LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);
static TO_STDERR: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Warnings of the call in progress on this thread, if one is.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Starts collecting this thread's warnings (and re-reads the settings).
pub fn begin_call() {
    refresh_level();
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Stops collecting and returns the call's warnings.
pub fn end_call() -> Vec<String> {
    CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default()
}

/// Registers the logger for this shared object's copy of the `log` crate.
pub fn install() {
    // Fails only if already set (a second bootstrap): fine.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Trace);
    refresh_level();
}

/// Re-reads the environment; called at the start of every entry point.
pub fn refresh_level() {
    let level = match std::env::var("PVE_MICROSEG_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => LevelFilter::Info,
    };
    LEVEL.store(level as usize, Ordering::Relaxed);
    let stderr = std::env::var("PVE_MICROSEG_LOG_TARGET").map(|t| t == "stderr").unwrap_or(false);
    TO_STDERR.store(usize::from(stderr), Ordering::Relaxed);
}

/// Sends one record to the system log; `false` when there is none.
fn to_syslog(level: Level, text: &str) -> bool {
    // facility daemon (3) << 3 | severity
    let msg = format!("<{}>pve-microseg[{}]: {text}", (3 << 3) | severity(level), std::process::id());
    UnixDatagram::unbound().and_then(|sock| sock.send_to(msg.as_bytes(), "/dev/log")).is_ok()
}

/// The CLI's error, for the system log only: the CLI prints it on stderr
/// itself (under the unit, where stderr is the journal, not at all).
pub fn error_to_journal(text: &str) {
    if level_enabled(Level::Error) && TO_STDERR.load(Ordering::Relaxed) == 0 {
        to_syslog(Level::Error, text);
    }
}

/// Whether records of `level` are kept (`PVE_MICROSEG_LOG`).
fn level_enabled(level: Level) -> bool {
    (level as usize) <= LEVEL.load(Ordering::Relaxed)
}

/// Whether stderr is the journal (systemd sets `JOURNAL_STREAM`).
fn journal_stream() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Writes `line` to stderr, with its syslog priority as a `<N>` prefix when
/// stderr is the journal.
pub fn stderr_line(priority: u8, line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if journal_stream() { writeln!(err, "<{priority}>{line}") } else { writeln!(err, "{line}") };
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        level_enabled(metadata.level())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let captured = record.level() == Level::Warn
            && CAPTURED.with(|c| c.borrow_mut().as_mut().map(|v| v.push(text.clone())).is_some());
        if TO_STDERR.load(Ordering::Relaxed) == 0 && to_syslog(record.level(), &text) {
            return;
        }
        if captured {
            // The caller shows it on stderr as a warning: once is enough.
            return;
        }
        if journal_stream() {
            // The journal has the identifier and the priority already.
            stderr_line(severity(record.level()), &text);
        } else {
            stderr_line(severity(record.level()), &format!("pve-microseg: {}: {text}", record.level().as_str().to_lowercase()));
        }
    }

    fn flush(&self) {}
}
