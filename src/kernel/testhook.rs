//! Crash points for the fault tests: with the `test-hooks` feature, a
//! process whose `PVE_MICROSEG_TEST_CRASH_AT` names a point kills itself
//! there with SIGKILL, as an OOM kill or a power cut would, so that tests can
//! prove the next call converges from every intermediate state. The shipped
//! library is built without the feature: a point is then an empty function.

#[cfg(feature = "test-hooks")]
pub fn crash_point(name: &str) {
    if std::env::var_os("PVE_MICROSEG_TEST_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: raise has no preconditions; SIGKILL does not return.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// How often this process read the running config (feature `test-hooks`):
/// the tests tell the `apply_iface` fast path from the slow one by it.
#[cfg(feature = "test-hooks")]
pub static CONFIG_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(feature = "test-hooks")]
pub fn config_read() {
    CONFIG_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn config_read() {}
