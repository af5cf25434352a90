//! Watchers: small detached lwk-runc processes that finish a container's clean-up when
//! the process that should have done it is gone (`conexec-reap` for a job container,
//! `run-reap` for a foreground `run` that was killed).
//!
//! A watcher must outlive whatever kills its starter. Detaching it from the session is
//! not enough under a scheduler: Slurm's `proctrack/cgroup` ends a step by SIGKILLing
//! every process in the step's cgroup, watchers included, while the container lives on
//! in a cgroup of its own. So a watcher first moves itself to the root cgroup of every
//! hierarchy, where a node daemon started at boot would be (as podman moves conmon out
//! of the caller's cgroup). The root rather than a cgroup of lwk-runc's own: a new
//! cgroup v1 cpuset starts with no CPUs and would refuse the move until filled in.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Start `lwk-runc --root ROOT ARGS…` detached: its own session, no stdio, in the
/// mount namespace `host_mnt` (the runtime may be in a private one by now, see
/// overlay.rs), with the descriptors `keep` inherited at their numbers.
pub fn spawn(root: &Path, args: &[&str], host_mnt: &File, keep: &[RawFd]) -> io::Result<()> {
    // Not current_exe(): the sealed binary's path is a detached mount nobody can open.
    let mut c = Command::new("/proc/self/exe");
    c.arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mnt = host_mnt.as_raw_fd();
    let keep = keep.to_vec();
    // SAFETY: setns, setsid and fcntl in the (single-threaded) child before exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(mnt, libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::setsid();
            for &fd in &keep {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    c.spawn().map(|_| ())
}

/// Move this process to the root cgroup of every mounted hierarchy (see the module
/// doc). Best effort: a hierarchy that refuses is logged and left.
pub fn leave_callers_cgroups() {
    let me = std::process::id().to_string();
    for dir in cgroup_roots() {
        let procs = Path::new(&dir).join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, &me) {
            tracing::debug!("moving the watcher to {}: {e}", procs.display());
        }
    }
}

/// Mount points of the cgroup hierarchies (v1 and v2) in this mount namespace, each the
/// root of its hierarchy as this namespace sees it.
fn cgroup_roots() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        let mut f = left.split_whitespace();
        let (root, mount) = (f.nth(3), f.next());
        if matches!(fstype, "cgroup" | "cgroup2") && root == Some("/") {
            if let Some(m) = mount {
                if !out.iter().any(|o| o == m) {
                    out.push(m.to_string());
                }
            }
        }
    }
    out
}

/// A pidfd of this process, for a watcher to learn when it has ended (inherited by
/// the watcher; close-on-exec otherwise). None on kernels without pidfd_open (< 5.3).
pub fn own_pidfd() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open of our own pid returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) } as RawFd;
    // SAFETY: a descriptor the kernel just made for us (pidfds are close-on-exec).
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Block until the process behind `pidfd` has ended.
pub fn wait_pidfd(pidfd: RawFd) {
    let mut p = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own.
    while unsafe { libc::poll(&mut p, 1, -1) } < 0 {}
}

/// Whether the process behind `pidfd` has ended, without waiting.
pub fn pidfd_ended(pidfd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_roots_are_the_mounted_hierarchies() {
        let roots = cgroup_roots();
        for r in &roots {
            assert!(Path::new(r).join("cgroup.procs").exists(), "{r}");
        }
    }
}
