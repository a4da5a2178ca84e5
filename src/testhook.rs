//! Crash points for the fault tests: a process whose
//! `PVE_MICROSEG_TEST_CRASH_AT` names a point kills itself there with
//! SIGKILL, as an OOM kill or a power cut would, so that tests can prove the
//! next call converges from every intermediate state. Unset, a point costs
//! one environment lookup.

pub fn crash_point(name: &str) {
    if std::env::var_os("PVE_MICROSEG_TEST_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: raise has no preconditions; SIGKILL does not return.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
