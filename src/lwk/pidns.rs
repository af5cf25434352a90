//! Give a container's LWK launcher a node-unique namespace-local pid.
//!
//! McKernel keys processes by their pid *inside* their PID namespace and refuses a second
//! mcexec with the same one (lwk-tools.md §2.5), while every container numbers its pids
//! from 1. Before `start`, the runtime sets the container namespace's `ns_last_pid` to
//! `pid_base + slot*pid_stride - 1`, where `slot` is the container's lease slot (unique
//! among live leases), so the first fork in the container, lwk-init's fork of the
//! launcher, gets that pid, and the launcher's later children stay within the slot's
//! stride. The sysctl acts on the *writer's* active PID namespace, and setns(CLONE_NEWPID)
//! only moves a process's future children, hence: fork, setns, fork, write.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Returns Ok(false) when the container shares our PID namespace (nothing to arrange:
/// host pids are unique already).
pub fn set_ns_last_pid(init_pid: i32, last: u32) -> std::io::Result<bool> {
    let ns = format!("/proc/{init_pid}/ns/pid");
    if std::fs::metadata(&ns)?.ino() == std::fs::metadata("/proc/self/ns/pid")?.ino() {
        return Ok(false);
    }
    let fd = std::fs::File::open(&ns)?;
    let path = CString::new("/proc/sys/kernel/ns_last_pid").map_err(std::io::Error::other)?;
    let value = last.to_string();
    // SAFETY: the children only call async-signal-safe functions on data prepared above.
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if child == 0 {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
                libc::_exit(2);
            }
            let gc = libc::fork();
            if gc < 0 {
                libc::_exit(3);
            }
            if gc == 0 {
                let f = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if f < 0 {
                    libc::_exit(4);
                }
                let n = libc::write(f, value.as_ptr().cast(), value.len());
                libc::_exit(if n == value.len() as isize { 0 } else { 5 });
            }
            let mut st = 0;
            while libc::waitpid(gc, &mut st, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(6);
                }
            }
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                7
            });
        }
        let mut st = 0;
        while libc::waitpid(child, &mut st, 0) < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        match libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)) {
            Some(0) => Ok(true),
            Some(2) => Err(std::io::Error::other("setns into the container's PID namespace failed")),
            Some(4) | Some(5) => Err(std::io::Error::other("writing /proc/sys/kernel/ns_last_pid failed (needs CONFIG_CHECKPOINT_RESTORE and CAP_SYS_ADMIN over the namespace)")),
            _ => Err(std::io::Error::other(format!("helper failed (wait status {st})"))),
        }
    }
}
