//! Give a container's LWK launcher a node-unique namespace-local pid.
//!
//! McKernel keys processes by their pid *inside* their PID namespace and refuses a second
//! mcexec with the same one (lwk-tools.md §2.5), while every container numbers its pids
//! from 1. Before `start`, the runtime sets the container namespace's `ns_last_pid` to
//! `pid_base + slot*pid_stride - 1`, where `slot` is the container's lease slot (unique
//! among live leases), so the first fork in the container, lwk-init's fork of the
//! launcher, gets that pid, and the launcher's later children stay within the slot's
//! stride. The sysctl acts on the *writer's* active PID namespace, and setns(CLONE_NEWPID)
//! only moves a process's future children, hence: a child that enters the namespace, and
//! its child that writes.
//!
//! Both are `clone(CLONE_VM | CLONE_VFORK)` children on small stacks of their own: they
//! share our memory while we wait, so no page tables are copied (a fork of the runtime
//! cost about a millisecond, most of the LWK's per-container overhead). They only make
//! raw system calls on data prepared beforehand.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

const STACK: usize = 64 * 1024;

/// What the two children need, prepared before either exists.
struct Job {
    ns_fd: libc::c_int,
    path: CString,
    value: Vec<u8>,
    /// The top of the writer's stack (stacks grow down on every Linux target we build for).
    writer_stack: *mut libc::c_void,
}

/// Exit codes of the children, mapped to errors by [`set_ns_last_pid`].
const SETNS_FAILED: libc::c_int = 2;
const CLONE_FAILED: libc::c_int = 3;
const OPEN_FAILED: libc::c_int = 4;
const WRITE_FAILED: libc::c_int = 5;
const WAIT_FAILED: libc::c_int = 6;

fn stack_top(stack: &mut [u8]) -> *mut libc::c_void {
    let top = stack.as_mut_ptr() as usize + stack.len();
    (top & !15) as *mut libc::c_void
}

/// Wait for a child, retrying on EINTR; its exit code, or `None`.
///
/// # Safety
/// `pid` must be a child of the caller.
unsafe fn wait_exit(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut st = 0;
    loop {
        if libc::waitpid(pid, &mut st, libc::__WALL) == pid {
            return libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st));
        }
        if *libc::__errno_location() != libc::EINTR {
            return None;
        }
    }
}

/// Runs in the namespace: writes the value to ns_last_pid.
extern "C" fn writer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the Job the parent keeps alive while it is suspended.
    unsafe {
        let job = &*(arg as *const Job);
        let f = libc::open(job.path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if f < 0 {
            return OPEN_FAILED;
        }
        let n = libc::write(f, job.value.as_ptr().cast(), job.value.len());
        libc::close(f);
        if n == job.value.len() as isize {
            0
        } else {
            WRITE_FAILED
        }
    }
}

/// Enters the container's PID namespace for its children, then starts the writer there.
extern "C" fn enterer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as in `writer`; the writer's stack is a separate buffer of the parent's.
    unsafe {
        let job = &*(arg as *const Job);
        if libc::setns(job.ns_fd, libc::CLONE_NEWPID) != 0 {
            return SETNS_FAILED;
        }
        let pid = libc::clone(
            writer,
            job.writer_stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if pid < 0 {
            return CLONE_FAILED;
        }
        wait_exit(pid).unwrap_or(WAIT_FAILED)
    }
}

/// Returns Ok(false) when the container shares our PID namespace (nothing to arrange:
/// host pids are unique already).
pub fn set_ns_last_pid(init_pid: i32, last: u32) -> std::io::Result<bool> {
    let ns = format!("/proc/{init_pid}/ns/pid");
    if std::fs::metadata(&ns)?.ino() == std::fs::metadata("/proc/self/ns/pid")?.ino() {
        return Ok(false);
    }
    let fd = std::fs::File::open(&ns)?;
    let mut stacks = vec![0u8; 2 * STACK];
    let (enterer_stack, writer_stack) = stacks.split_at_mut(STACK);
    let job = Job {
        ns_fd: fd.as_raw_fd(),
        path: CString::new("/proc/sys/kernel/ns_last_pid").map_err(std::io::Error::other)?,
        value: last.to_string().into_bytes(),
        writer_stack: stack_top(writer_stack),
    };
    // SAFETY: CLONE_VFORK suspends us until the child exits, so `job` and both stacks
    // outlive every use the children make of them; the children make raw system calls only.
    let code = unsafe {
        let pid = libc::clone(
            enterer,
            stack_top(enterer_stack),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &job as *const Job as *mut libc::c_void,
        );
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        wait_exit(pid)
    };
    match code {
        Some(0) => Ok(true),
        Some(SETNS_FAILED) => Err(std::io::Error::other(
            "setns into the container's PID namespace failed",
        )),
        Some(OPEN_FAILED) | Some(WRITE_FAILED) => Err(std::io::Error::other(
            "writing /proc/sys/kernel/ns_last_pid failed (needs CONFIG_CHECKPOINT_RESTORE and CAP_SYS_ADMIN over the namespace)",
        )),
        other => Err(std::io::Error::other(format!(
            "the helper that sets ns_last_pid failed (exit {other:?})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_namespace_needs_nothing() {
        let me = std::process::id() as i32;
        assert!(!set_ns_last_pid(me, 5000).unwrap());
    }

    #[test]
    fn the_next_fork_in_the_namespace_gets_the_pid() {
        // A process in a new PID namespace: unshare's child is its PID 1.
        let mut init = match std::process::Command::new("unshare")
            .args(["--pid", "--fork", "sleep", "30"])
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("unshare unavailable ({e}); skipping");
                return;
            }
        };
        // unshare forks `sleep` as the namespace's PID 1; find it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let ns_pid = loop {
            let kids =
                std::fs::read_to_string(format!("/proc/{}/task/{}/children", init.id(), init.id()))
                    .unwrap_or_default();
            if let Some(p) = kids.split_whitespace().next() {
                break p.parse::<i32>().unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "no namespace init");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(set_ns_last_pid(ns_pid, 4321).unwrap());
        // The namespace's next pid is 4322: enter it and look.
        let out = std::process::Command::new("nsenter")
            .args(["-t", &ns_pid.to_string(), "-p", "--", "sh", "-c", "echo $$"])
            .output()
            .unwrap();
        let _ = init.kill();
        let _ = init.wait();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4322");
    }
}
