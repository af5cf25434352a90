//! The device boundary of McKernel containers: a container's processes may use
//! `/dev/mcosN` as `mcexec` does, never to load, boot, shut down or reconfigure the LWK.
//!
//! IHK checks only `euid == 0` for its OS-management ioctls (`__ihk_os_ioctl_perm`), and
//! an LWK container without a user namespace runs as euid 0 with the device open for
//! writing, so the device itself would obey `ihkosctl 0 shutdown` from any container
//! (the launcher's closure under another name, or a binary the container brings). The
//! boundary is therefore a seccomp filter on the ioctl *requests*: whatever binary
//! issues them, the management requests fail with EPERM, while mcexec's own (IHK's
//! build-id and status queries, and mcctrl's `MCEXEC_UP_*` calls) pass.
//!
//! How it is installed, and why so: the runtime loads a small filter of its own
//! (default allow, EPERM for the refused requests) in the thread that makes
//! libcontainer clone the container's init, or the process of an `exec`, just before
//! it does; every process of the container descends from those and inherits the
//! filter, which no process can remove. The kernel runs every stacked filter and the
//! strictest answer wins, so the spec's own profile (Docker's, podman's) still applies
//! on top, unchanged. The alternatives measured worse:
//! - Merging the rules into the spec's profile: libseccomp 2.5 silently drops a
//!   conditional `ioctl arg1 == N -> ERRNO` rule when the same filter allows `ioctl`
//!   unconditionally, as Docker's and podman's defaults do (measured: the rule is
//!   accepted and has no effect), so every profile would have to be rewritten into
//!   conditional allows; and libcontainer 0.7's `exec` applied no seccomp profile at
//!   all (`TenantContainerBuilder` rebuilt `linux` without it; vendor/README.md), so
//!   an exec'd process escaped any spec-based rule. The filter needs neither.
//! - A filter installed by lwk-init inside the container: the container's capabilities
//!   are dropped by then, so loading it needs `no_new_privs`, which would change what
//!   the workload may do (setuid binaries); and exec'd processes never pass through it.
//! - A user namespace: the right long-term answer, but it changes file ownership, device
//!   access and every engine's expectations.
//!
//! Only the loading thread carries the filter: the runtime's other work (a teardown
//! after a failed create runs the site's tools, which must manage the LWK) does not.
//! The createRuntime and prestart hooks libcontainer runs from that thread carry it too:
//! booting and tearing down are lwk-runc's own job, never a hook's.
//! The kernel passes the request to the driver as 32 bits, so the comparisons are masked
//! to 32 bits; a value with high bits set cannot slip through. A runtime that is not
//! root installs nothing: its containers cannot have euid 0, which the module refuses.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

/// IHK's blocks of ioctl requests (`linux/include/ihk/ihk_host_user.h`): the device's
/// (`IHK_DEVICE_*`), its debug range, the OS instance's (`IHK_OS_*`) and its debug range.
const IHK_DEVICE: u32 = 0x112900;
const IHK_DEVICE_DEBUG: u32 = 0x122900;
const IHK_OS: u32 = 0x112a00;
const IHK_OS_DEBUG: u32 = 0x122a00;

/// The `IHK_OS_*` requests a container may make: the read-only queries (status, build
/// id, CPUs, memory, usage, kernel messages). mcexec needs `IHK_OS_GET_BUILDID`; its
/// other calls are mcctrl's (`MCEXEC_UP_*`, 0x30a029xx), outside every refused block.
/// Refused besides the management requests, although IHK lets any user make them:
/// `IHK_OS_READ_KADDR` (reads the LWK's memory, which every container's processes
/// share), `IHK_OS_CLEAR_KMSG`, the legacy `ALLOC_*`/`RESERVE_*` and the debug range
/// (interrupts to the LWK's CPUs).
const IHK_OS_QUERIES: &[u32] = &[
    0x112a03, // IHK_OS_QUERY_STATUS
    0x112a05, // IHK_OS_QUERY_FREE_MEM
    0x112a14, // IHK_OS_STATUS
    0x112a20, // IHK_OS_READ_KMSG
    0x112a26, // IHK_OS_QUERY_CPU
    0x112a27, // IHK_OS_QUERY_MEM
    0x112a32, // IHK_OS_GET_USAGE
    0x112a33, // IHK_OS_GET_CPU_USAGE
    0x112a34, // IHK_OS_GET_NUM_NUMA_NODES
    0x112a37, // IHK_OS_GET_BUILDID
    0x112a38, // IHK_OS_GET_NUM_CPUS
];

#[derive(Debug, thiserror::Error)]
pub enum BoundaryError {
    #[error("building the seccomp filter that keeps containers from managing the LWK: {0}")]
    Build(String),
    #[error("loading the seccomp filter that keeps containers from managing the LWK: {0} (lwk-runc needs CAP_SYS_ADMIN to load it)")]
    Load(String),
    #[error("the thread that starts the container's process failed: {0}")]
    Thread(String),
}

/// Refused requests: those with `request & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub value: u32,
    pub mask: u32,
}

/// Aligned power-of-two blocks covering `[start, start + size)` except `keep`: one
/// masked comparison each, so 256 requests cost a handful of rules.
fn cover(start: u32, size: u32, keep: &[u32], out: &mut Vec<Refused>) {
    let kept = keep.iter().any(|k| (start..start + size).contains(k));
    if !kept {
        out.push(Refused {
            value: start,
            mask: !(size - 1),
        });
    } else if size > 1 {
        cover(start, size / 2, keep, out);
        cover(start + size / 2, size / 2, keep, out);
    }
}

/// Every request a container's process may not make on an IHK device.
pub fn refused() -> Vec<Refused> {
    let mut out = Vec::new();
    for block in [IHK_DEVICE, IHK_DEVICE_DEBUG, IHK_OS_DEBUG] {
        cover(block, 0x100, &[], &mut out);
    }
    cover(IHK_OS, 0x100, IHK_OS_QUERIES, &mut out);
    out
}

fn filter() -> Result<ScmpFilterContext, BoundaryError> {
    let build = |e: libseccomp::error::SeccompError| BoundaryError::Build(e.to_string());
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(build)?;
    // Never kill a process for using another ABI: this filter only refuses.
    ctx.set_act_badarch(ScmpAction::Allow).map_err(build)?;
    // We have CAP_SYS_ADMIN; no_new_privs would change what the container may do.
    ctx.set_ctl_nnp(false).map_err(build)?;
    if ScmpArch::native() == ScmpArch::X8664 {
        // 32-bit calls reach no IHK handler (it has no compat_ioctl); refuse them anyway.
        for arch in [ScmpArch::X86, ScmpArch::X32] {
            ctx.add_arch(arch).map_err(build)?;
        }
    }
    let ioctl = ScmpSyscall::from_name("ioctl").map_err(build)?;
    for r in refused() {
        let cmp = ScmpArgCompare::new(
            1,
            ScmpCompareOp::MaskedEqual(u64::from(r.mask)),
            u64::from(r.value),
        );
        ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), ioctl, &[cmp])
            .map_err(build)?;
    }
    Ok(ctx)
}

/// Runs `f` on a thread of its own that carries the filter, so that the processes `f`
/// starts (libcontainer's clone of a container's init or exec'd process) inherit it and
/// the runtime's other threads do not. Without root, `f` runs as is (see the module doc).
pub fn fenced<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, BoundaryError> {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        tracing::debug!(
            "not root: the IHK module itself refuses the container's management ioctls"
        );
        return Ok(f());
    }
    let tid = std::sync::atomic::AtomicI32::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(
                unsafe { libc::gettid() },
                std::sync::atomic::Ordering::SeqCst,
            );
            filter()?
                .load()
                .map_err(|e| BoundaryError::Load(e.to_string()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| BoundaryError::Thread("it panicked".into()))?
    });
    gone(tid.into_inner());
    out
}

/// Wait until the thread `tid` of this process has finished exiting, not only let go
/// of its join (which the kernel signals before the rest of the exit).
///
/// The container's init (or exec'd process) is a child of that thread, and the
/// executor sets PR_SET_PDEATHSIG=SIGKILL in it just before the user process, which
/// the kernel fires when the *thread* that is its parent exits. Once the thread has
/// gone, the process has been reparented to another thread of the runtime without a
/// signal; a `start` that came first (a fast `run`, many containers at once) had its
/// process killed with status 137 by the end of the fence thread's exit. The thread
/// leaves /proc/self/task only after that reparenting (exit_notify, then release).
fn gone(tid: i32) {
    if tid <= 0 {
        return;
    }
    let path = format!("/proc/self/task/{tid}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&path).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `request` (as the driver sees it: 32 bits) is refused.
    fn is_refused(request: u64) -> bool {
        let r = request as u32;
        refused().iter().any(|b| r & b.mask == b.value)
    }

    #[test]
    fn management_is_refused_and_mcexecs_requests_pass() {
        for shutdown_like in [0x112a00, 0x112a01, 0x112a02, 0x112a04, 0x112a22, 0x112a39] {
            assert!(is_refused(shutdown_like), "{shutdown_like:#x}");
        }
        // The kernel truncates the request to 32 bits; so do we.
        assert!(is_refused(0xffff_ffff_0011_2a02));
        for q in IHK_OS_QUERIES {
            assert!(!is_refused(u64::from(*q)), "{q:#x}");
        }
        // mcctrl's calls, the aux range, ordinary tty ioctls.
        for ok in [
            0x30a0290e,
            0x30a02903,
            0x5401,
            0x541b,
            0x1000_0000,
            0x112b00,
        ] {
            assert!(!is_refused(ok), "{ok:#x}");
        }
        for all in [0x112900, 0x1129ff, 0x122900, 0x122a05] {
            assert!(is_refused(all), "{all:#x}");
        }
        // Aligned masked blocks: 256 minus 11 kept requests in a few rules.
        assert!(refused().len() < 30, "{}", refused().len());
        for r in refused() {
            assert_eq!(r.value & !r.mask, 0, "{r:?} is not aligned");
        }
    }

    /// The filter itself, loaded for real in a child: refused requests fail with EPERM,
    /// the others reach the file (a regular file answers ENOTTY). Needs root.
    #[test]
    fn the_loaded_filter_refuses_what_the_table_says() {
        // SAFETY: geteuid never fails.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED the_loaded_filter_refuses_what_the_table_says: needs root");
            return;
        }
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let probe = |req: u64| -> i32 {
            // SAFETY: an integer-argument ioctl on a regular file we own.
            let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, 0) };
            if r == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            }
        };
        let results = fenced(|| {
            [
                0x112a02u64,
                0xffff_ffff_0011_2a02,
                0x112a37,
                0x30a0290e,
                0x112901,
            ]
            .map(|r| (r, probe(r)))
        })
        .unwrap();
        for (req, errno) in results {
            let want = if is_refused(req) {
                libc::EPERM
            } else {
                libc::ENOTTY
            };
            assert_eq!(errno, want, "request {req:#x}");
        }
        // The caller's thread carries no filter.
        assert_eq!(probe(0x112a02), libc::ENOTTY);
    }
}
