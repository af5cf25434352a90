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
///
/// A hierarchy whose root this process is already in is left alone, and on a cgroup v1
/// hierarchy a single-threaded watcher moves its one thread through `tasks` (writing
/// "0": the calling thread). Both for the same reason: a write to `cgroup.procs` takes
/// the kernel's global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU
/// grace period (5-15 ms) and meanwhile stalls every fork, exec and exit on the node,
/// among them those of the container this watcher was started for. Moving the calling
/// thread needs no such lock, and with one thread it moves the whole process (the
/// same argument as the libcgroups patch in vendor/README.md). A cgroup v2 hierarchy
/// has no per-thread move across domains, so there `cgroup.procs` is written.
pub fn leave_callers_cgroups() {
    let me = std::process::id().to_string();
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let one_thread =
        crate::host::proc_stat(std::process::id() as i32).is_some_and(|s| s.num_threads == 1);
    for h in cgroup_roots() {
        if at_root(&cgroups, &h) {
            continue;
        }
        let (file, what) = match &h.controllers {
            Some(_) if one_thread => ("tasks", "0"),
            _ => ("cgroup.procs", me.as_str()),
        };
        let path = Path::new(&h.mount).join(file);
        if let Err(e) = std::fs::write(&path, what) {
            tracing::debug!("moving the watcher to {}: {e}", path.display());
        }
    }
}

/// A mounted cgroup hierarchy, seen from its root.
struct Hierarchy {
    mount: String,
    /// cgroup v1: the mount's super options (its controllers, `name=…`, flags such as
    /// `rw`); None for cgroup v2.
    controllers: Option<Vec<String>>,
}

/// Whether `/proc/self/cgroup` (given as `cgroups`) puts this process in the root of
/// hierarchy `h`: a v1 line naming one of the mount's controllers, or the v2 line
/// (`0::`), with the path `/`.
fn at_root(cgroups: &str, h: &Hierarchy) -> bool {
    cgroups.lines().any(|line| {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        path == "/"
            && match &h.controllers {
                None => names.is_empty(),
                Some(opts) => {
                    !names.is_empty() && names.split(',').any(|n| opts.iter().any(|o| o == n))
                }
            }
    })
}

/// The cgroup hierarchies (v1 and v2) mounted in this mount namespace, each mounted
/// at the root of its hierarchy as this namespace sees it.
fn cgroup_roots() -> Vec<Hierarchy> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let opts = r.nth(1).unwrap_or("");
        let mut f = left.split_whitespace();
        let (root, mount) = (f.nth(3), f.next());
        if matches!(fstype, "cgroup" | "cgroup2") && root == Some("/") {
            if let Some(m) = mount {
                if !out.iter().any(|o| o.mount == m) {
                    out.push(Hierarchy {
                        mount: m.to_string(),
                        controllers: (fstype == "cgroup")
                            .then(|| opts.split(',').map(str::to_string).collect()),
                    });
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
            assert!(
                Path::new(&r.mount).join("cgroup.procs").exists(),
                "{}",
                r.mount
            );
            // v1 hierarchies have the per-thread file the single-threaded move uses.
            if r.controllers.is_some() {
                assert!(Path::new(&r.mount).join("tasks").exists(), "{}", r.mount);
            }
        }
    }

    #[test]
    fn a_hierarchy_already_at_its_root_is_recognised() {
        let v1 = |o: &str| Hierarchy {
            mount: String::new(),
            controllers: Some(o.split(',').map(str::to_string).collect()),
        };
        let v2 = Hierarchy {
            mount: String::new(),
            controllers: None,
        };
        let cg = "9:name=systemd:/\n4:memory:/job/step\n2:cpu,cpuacct:/\n0::/user.slice\n";
        assert!(at_root(cg, &v1("rw,xattr,name=systemd")));
        assert!(at_root(cg, &v1("rw,cpu,cpuacct")));
        assert!(!at_root(cg, &v1("rw,memory")));
        assert!(!at_root(cg, &v2));
        assert!(at_root("0::/\n", &v2));
        // A v1 hierarchy is never taken for v2's line, nor the reverse.
        assert!(!at_root("0::/\n", &v1("rw,memory")));
        assert!(!at_root("4:memory:/\n", &v2));
    }
}
