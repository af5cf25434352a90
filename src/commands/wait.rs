//! Waiting for a foreground container process while forwarding signals to it, as
//! runc does for `run` and `exec` without `--detach`: whoever signals the runtime
//! (a shell's Ctrl-C, Slurm's `scancel`, SingularityCE's `kill`) reaches the workload.

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals the runtime passes on. SIGCHLD is kept for waking the wait loop;
/// SIGKILL and SIGSTOP cannot be caught; SIGURG is runtime-internal noise in Go
/// runtimes and is not forwarded by runc either; SIGWINCH only matters for a tty.
fn forwarded() -> impl Iterator<Item = Signal> {
    Signal::iterator().filter(|s| {
        !matches!(
            s,
            Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD | Signal::SIGURG | Signal::SIGWINCH
        )
    })
}

/// Blocks the forwarded signals and SIGCHLD (and SIGWINCH when `winch`: the runtime
/// relays a terminal) so they queue for [`wait_forwarding`]. Call after the container
/// process exists (a blocked mask is inherited by fork).
pub fn block(winch: bool) -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in forwarded() {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    if winch {
        set.add(Signal::SIGWINCH);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("blocking signals")?;
    Ok(set)
}

/// Waits for `pid` to end, forwarding every queued signal to it (SIGWINCH goes to
/// `on_winch` instead); returns its exit code, or 128+N when it died of signal N (the
/// shell convention engines expect).
pub fn wait_forwarding(pid: Pid, set: &SigSet, on_winch: &dyn Fn()) -> Result<i32> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(err).with_context(|| format!("waiting for process {pid}")),
        }
        let sig = set.wait().context("waiting for signals")?;
        if sig == Signal::SIGWINCH {
            on_winch();
        } else if sig != Signal::SIGCHLD {
            match kill(pid, sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(err) => tracing::warn!("forwarding {sig} to {pid}: {err}"),
            }
        }
    }
}
