//! `lwk-runc lwk-init -- <launcher> <args…>`: the PID 1 of McKernel containers.
//!
//! McKernel keys its per-process data by the launcher's namespace-local pid, so mcexec
//! must not be PID 1 (every container's PID 1 would collide). This init forks the
//! launcher, which gets the node-unique pid the runtime prepared through ns_last_pid (see
//! `pidns`), forwards every catchable signal to it (PID 1 gets no default signal
//! handling, so without forwarding `docker stop` would do nothing), reaps orphans, and
//! exits with the launcher's status. A launcher killed by a signal is reported by
//! re-raising it when we are not PID 1, and as 128+signal when we are (the kernel never
//! delivers a default-action signal from inside the namespace to its init).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn forwarded(sig: libc::c_int) -> bool {
    !matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD)
}

/// Never returns on success paths; the return value is the exit code on errors.
pub fn main(args: &[OsString]) -> i32 {
    let args: Vec<&OsString> = match args.first() {
        Some(a) if a == "--" => args[1..].iter().collect(),
        _ => args.iter().collect(),
    };
    if args.is_empty() {
        eprintln!("lwk-init: usage: lwk-runc lwk-init -- <launcher> [args...]");
        return 127;
    }
    let cargs: Result<Vec<CString>, _> = args.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(cargs) = cargs else {
        eprintln!("lwk-init: argument contains NUL");
        return 127;
    };
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());

    // SAFETY: plain libc signal and process calls on a single-threaded process; the child
    // only calls async-signal-safe functions before execvp.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        // Block everything until the child's pid is known, so nothing is forwarded to pid 0.
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        for sig in 1..=libc::SIGRTMAX() {
            if forwarded(sig) {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            eprintln!("lwk-init: fork: {}", std::io::Error::last_os_error());
            return 126;
        }
        if pid == 0 {
            for sig in 1..=libc::SIGRTMAX() {
                if forwarded(sig) {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::execvp(argv[0], argv.as_ptr());
            let msg = b"lwk-init: cannot execute the LWK launcher\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
        CHILD.store(pid, Ordering::SeqCst);
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return 126;
            }
            if r != pid {
                continue; // a reparented orphan
            }
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                if libc::getpid() != 1 {
                    libc::signal(sig, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, sig);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::kill(libc::getpid(), sig);
                }
                return 128 + sig;
            }
        }
    }
}
