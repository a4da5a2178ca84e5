//! The FFI boundary between the XS glue (`glue.c`) and the microseg core.
//!
//! Every entry point runs the core under `catch_unwind` and reports failure
//! as a message string; the glue croaks with it only after Rust has returned,
//! so no Rust frame is ever skipped by Perl's longjmp and no panic crosses
//! into C. Nothing here keeps state between calls except the logger.

use std::ffi::{c_char, c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use microseg::{IfaceOutcome, Report};

mod logger;

/// Mirrors `struct ms_report` in glue.c.
#[repr(C)]
pub struct MsReport {
    loaded: u32,
    map_writes: u32,
    map_deletes: u32,
    links_created: u32,
    links_updated: u32,
    links_detached: u32,
    nics: u32,
}

impl From<&Report> for MsReport {
    fn from(r: &Report) -> Self {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        MsReport {
            loaded: u32::from(r.loaded),
            map_writes: n(r.map_writes),
            map_deletes: n(r.map_deletes),
            links_created: n(r.links_created),
            links_updated: n(r.links_updated),
            links_detached: n(r.links_detached),
            nics: n(r.nics),
        }
    }
}

extern "C" {
    fn microseg_glue_boot(perl: *mut c_void, cv: *mut c_void);
}

/// The XS bootstrap perl's DynaLoader calls. Defined in Rust so that rustc
/// exports it from the cdylib; it forwards to the C glue.
///
/// # Safety
/// Called by perl with its interpreter and the bootstrap CV.
#[no_mangle]
pub unsafe extern "C" fn boot_PVE__RS__SDN__Microseg(perl: *mut c_void, cv: *mut c_void) {
    logger::install();
    microseg_glue_boot(perl, cv);
}

/// Runs `f`, turning an error or a panic into a message for Perl: the anyhow
/// context chain on one line, ending in "\n" so Perl adds no " at FILE line N".
fn guarded<T>(err: *mut *mut c_char, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    logger::refresh_level();
    let msg = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => format!("{e:#}"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("microseg: internal error (panic): {what}")
        }
    };
    log::error!("{msg}");
    let mut msg = msg.replace('\0', "\\0");
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    if !err.is_null() {
        // SAFETY: err points to the glue's `char *err`.
        unsafe { *err = CString::new(msg).expect("NULs replaced").into_raw() };
    }
    None
}

/// # Safety
/// `report` and `err` point to the glue's locals.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_apply_full(report: *mut MsReport, err: *mut *mut c_char) -> c_int {
    match guarded(err, microseg::apply_full) {
        Some(r) => {
            *report = MsReport::from(&r);
            0
        }
        None => -1,
    }
}

/// # Safety
/// `name` points to `len` bytes; the out-pointers to the glue's locals.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_apply_iface(
    name: *const c_char,
    len: usize,
    outcome: *mut *const c_char,
    report: *mut MsReport,
    err: *mut *mut c_char,
) -> c_int {
    let bytes = if name.is_null() { &[][..] } else { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    match guarded(err, || microseg::apply_iface(bytes)) {
        Some(out) => {
            let (word, r): (&'static [u8], Report) = match out {
                IfaceOutcome::NotGuestNic => (b"not-guest-nic\0", Report::default()),
                IfaceOutcome::Unassigned => (b"unassigned\0", Report::default()),
                IfaceOutcome::Vanished => (b"vanished\0", Report::default()),
                IfaceOutcome::Enforced { report, .. } => (b"enforced\0", report),
                IfaceOutcome::FullPass(report) => (b"full-pass\0", report),
            };
            *outcome = word.as_ptr().cast();
            *report = MsReport::from(&r);
            0
        }
        None => -1,
    }
}

/// # Safety
/// `err` points to the glue's local.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_clear(err: *mut *mut c_char) -> c_int {
    match guarded(err, microseg::clear) {
        Some(()) => 0,
        None => -1,
    }
}

/// The resolved policy as a JSON string (see `Microseg::effective_policy`).
///
/// # Safety
/// `json` and `err` point to the glue's locals; `*json` is freed with `microseg_rs_free`.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_effective_policy(json: *mut *mut c_char, err: *mut *mut c_char) -> c_int {
    match guarded(err, || Ok(microseg::effective_policy()?.to_string())) {
        Some(text) => {
            // JSON escapes control characters, so there is no NUL in it.
            *json = CString::new(text).expect("JSON has no NUL").into_raw();
            0
        }
        None => -1,
    }
}

/// A panic on demand, for the test suite; refuses unless
/// `PVE_MICROSEG_TEST_HOOKS=1`.
///
/// # Safety
/// `err` points to the glue's local.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_test_panic(err: *mut *mut c_char) -> c_int {
    let r = guarded(err, || {
        if std::env::var_os("PVE_MICROSEG_TEST_HOOKS").as_deref() != Some("1".as_ref()) {
            anyhow::bail!("microseg: test hooks are disabled (set PVE_MICROSEG_TEST_HOOKS=1)");
        }
        panic!("test panic requested through _test_panic");
    });
    match r {
        Some(()) => 0,
        None => -1,
    }
}

/// # Safety
/// `err` is null or a message handed out by this library, freed once.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_free(err: *mut c_char) {
    if !err.is_null() {
        drop(CString::from_raw(err));
    }
}
