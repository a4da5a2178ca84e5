//! The FFI boundary between the XS glue (`glue.c`) and the microseg core.
//!
//! Every Perl function is one row of [`FUNCTIONS`]; `glue.c` registers them
//! all with one dispatching XSUB. Each call runs under `catch_unwind` and
//! hands back one encoded value (see `value`): `[result, warnings]` on
//! success, `[message, warnings]` on failure. The glue warns and croaks only
//! after Rust has returned and the buffer is freed, so no Rust frame is ever
//! skipped by Perl's longjmp and no panic crosses into C. Nothing here keeps
//! state between calls except the logger.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use microseg::logger;
mod value;

/// One argument as the glue saw it, after get-magic.
#[repr(C)]
pub struct MsArg {
    ptr: *const u8,
    len: usize,
    /// `ARG_*`.
    kind: u32,
}

const ARG_UNDEF: u32 = 0;
const ARG_STRING: u32 = 1;
const ARG_REF: u32 = 2;

/// A buffer owned by Rust, released with `microseg_rs_free_buf`.
#[repr(C)]
pub struct MsBuf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

/// A Perl-visible function: its name, its parameters (for usage messages;
/// a leading `?` marks one that may be undef), and the core call behind it.
struct Function {
    name: &'static str,
    params: &'static [&'static str],
    call: fn(&[Option<&[u8]>]) -> Result<Value>,
}

/// An argument the function requires (dispatch has checked it is defined).
fn required<'a>(a: &[Option<&'a [u8]>], i: usize) -> &'a [u8] {
    a[i].unwrap_or_default()
}

/// An optional argument as text.
fn text(a: Option<&[u8]>) -> Option<String> {
    a.map(|b| String::from_utf8_lossy(b).into_owned())
}

const FUNCTIONS: &[Function] = &[
    Function { name: "apply_full", params: &[], call: |_| Ok(serde_json::to_value(microseg::apply_full()?)?) },
    Function {
        name: "apply_iface",
        params: &["iface"],
        call: |a| Ok(Value::from(microseg::apply_iface(required(a, 0))?.word())),
    },
    Function {
        name: "simulate",
        params: &["?src", "dst", "?proto", "?dport"],
        call: |a| {
            let (src, dst, proto, dport) = (text(a[0]), text(a[1]).unwrap_or_default(), text(a[2]), text(a[3]));
            let s = microseg::simulate(src.as_deref(), &dst, proto.as_deref(), dport.as_deref())?;
            Ok(serde_json::to_value(s)?)
        },
    },
    Function { name: "status", params: &[], call: |_| Ok(serde_json::to_value(microseg::status()?)?) },
    Function {
        name: "clear",
        params: &[],
        call: |_| {
            microseg::clear()?;
            Ok(Value::Null)
        },
    },
    Function {
        name: "effective_policy_json",
        params: &[],
        call: |_| Ok(Value::from(microseg::effective_policy()?.to_string())),
    },
    // The keys of the hash apply_full returns, from the same definition.
    Function { name: "_report_fields", params: &[], call: |_| Ok(Value::from(microseg::Report::fields())) },
    Function { name: "_test_panic", params: &[], call: |_| test_panic() },
];

/// A panic on demand, for the test suite; refuses unless
/// `PVE_MICROSEG_TEST_HOOKS=1`.
fn test_panic() -> Result<Value> {
    if std::env::var_os("PVE_MICROSEG_TEST_HOOKS").as_deref() != Some("1".as_ref()) {
        bail!("microseg: test hooks are disabled (set PVE_MICROSEG_TEST_HOOKS=1)");
    }
    panic!("test panic requested through _test_panic");
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

/// The name of function `index` (NUL-terminated, static), or null past the end.
#[no_mangle]
pub extern "C" fn microseg_rs_function(index: u32) -> *const c_char {
    static NAMES: std::sync::OnceLock<Vec<std::ffi::CString>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| FUNCTIONS.iter().map(|f| std::ffi::CString::new(f.name).unwrap()).collect());
    names.get(index as usize).map_or(std::ptr::null(), |n| n.as_ptr())
}

fn usage(f: &Function) -> String {
    let params: Vec<&str> = f.params.iter().map(|p| p.trim_start_matches('?')).collect();
    format!("Usage: PVE::RS::SDN::Microseg::{}({})", f.name, params.join(", "))
}

/// Checks the arguments and runs the function: the error for a wrong
/// call names the function's usage.
fn dispatch(f: &Function, args: &[MsArg], argc: usize) -> Result<Value> {
    // Trailing optional parameters may be left out.
    let required = f.params.iter().rposition(|p| !p.starts_with('?')).map_or(0, |i| i + 1);
    if argc < required || argc > f.params.len() || args.len() != argc {
        bail!("{}\n", usage(f));
    }
    let mut bytes = Vec::with_capacity(args.len());
    for (arg, param) in args.iter().zip(f.params) {
        let (optional, param) = match param.strip_prefix('?') {
            Some(p) => (true, p),
            None => (false, *param),
        };
        match arg.kind {
            ARG_UNDEF if optional => bytes.push(None),
            ARG_UNDEF => bail!("{}: {param} is undefined\n", usage(f)),
            ARG_REF => bail!("{}: {param} must be a string, not a reference\n", usage(f)),
            ARG_STRING if arg.ptr.is_null() => bytes.push(Some(&[][..])),
            // SAFETY: the glue passes a pointer to `len` bytes of a mortal
            // copy that lives until the XSUB returns.
            ARG_STRING => bytes.push(Some(unsafe { std::slice::from_raw_parts(arg.ptr, arg.len) })),
            other => return Err(anyhow!("microseg: internal error: argument kind {other}")),
        }
    }
    bytes.resize(f.params.len(), None);
    (f.call)(&bytes)
}

/// Runs function `index` with `argc` arguments (of which the first
/// `args_len` are in `args`) and stores `[result or message, warnings]` in
/// `*out`. Returns 0 on success, -1 on failure.
///
/// # Safety
/// `args` points to `args_len` arguments; `out` to the glue's local.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_call(
    index: u32,
    args: *const MsArg,
    args_len: usize,
    argc: usize,
    out: *mut MsBuf,
) -> c_int {
    logger::begin_call();
    let args = if args.is_null() { &[][..] } else { std::slice::from_raw_parts(args, args_len) };
    let result = match FUNCTIONS.get(index as usize) {
        None => Err(format!("microseg: internal error: no function {index}")),
        Some(f) => match catch_unwind(AssertUnwindSafe(|| dispatch(f, args, argc))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("microseg: internal error (panic): {what}"))
            }
        },
    };
    let (rc, first) = match result {
        Ok(v) => (0, v),
        Err(msg) => {
            // Usage errors are the caller's, not the node's: not logged.
            // A record like any other (SPEC section 7): the journal, or
            // stderr where there is none.
            if !msg.starts_with("Usage: ") {
                log::error!("{}", msg.trim_end());
            }
            let mut msg = msg.replace('\0', "\\0");
            if !msg.ends_with('\n') {
                msg.push('\n');
            }
            (-1, Value::from(msg))
        }
    };
    let warnings: Vec<Value> = logger::end_call().into_iter().map(|w| Value::from(format!("{w}\n"))).collect();
    let mut buf = Vec::new();
    value::encode(&Value::Array(vec![first, Value::Array(warnings)]), &mut buf);
    let mut buf = std::mem::ManuallyDrop::new(buf);
    *out = MsBuf { ptr: buf.as_mut_ptr(), len: buf.len(), cap: buf.capacity() };
    rc
}

/// # Safety
/// `buf` was handed out by `microseg_rs_call`, and is freed once.
#[no_mangle]
pub unsafe extern "C" fn microseg_rs_free_buf(buf: MsBuf) {
    if !buf.ptr.is_null() {
        drop(Vec::from_raw_parts(buf.ptr, buf.len, buf.cap));
    }
}
