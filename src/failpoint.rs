//! Crash points for the crash tests: compiled in only with the cargo feature
//! `failpoints` (CI builds a second, debug binary with it; release builds have none).
//! `LWK_RUNC_CRASH_AT=NAME` (or `NAME@N`, the N-th time this process gets there) makes
//! the runtime SIGKILL itself at the point named NAME, as a `kill -9` arriving at that
//! very step would; the tests then check that the next container, or `lwk-runc lwk gc`,
//! reconciles what it left.
//!
//! Our own twenty lines rather than the `fail` crate: the one action needed is "die by
//! SIGKILL here", which `fail` does not have (its actions are panic, sleep, pause and
//! return, and a return needs a closure at every site), and a point must cost nothing
//! at all in a build without the feature.

/// Every crash point, in the order a container's life reaches them. `lwk-runc
/// crash-points` prints them and the crash tests walk that list, so a point added
/// here is tested.
#[cfg(feature = "failpoints")]
pub const POINTS: &[&str] = &[
    "create-begin",
    "lease-acquire-locked",
    "record-tmp-written",
    "lease-booting-recorded",
    "boot-reserved",
    "boot-issued",
    "lease-acquire-up",
    "create-rewritten",
    "create-built",
    "create-init-recorded",
    "create-done",
    "start-begin",
    "start-slot-placed",
    "start-done",
    "delete-begin",
    "delete-container-gone",
    "lease-release-locked",
    "lease-release-removed",
    "teardown-destroyed",
    "teardown-done",
];

#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    let at = AT.get_or_init(|| {
        let v = std::env::var("LWK_RUNC_CRASH_AT").ok()?;
        Some(match v.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((n, k)) = at {
        if n == name && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            // SAFETY: kill(2) of this very process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}
