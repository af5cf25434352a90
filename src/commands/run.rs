//! `run`: create + start, then (unless `--detach`) wait with signals forwarded,
//! delete (unless `--keep`) and exit with the container's exit code.
//!
//! A foreground `run` ties the container to its own life, as runc's does: a scheduler
//! that SIGKILLs the runtime (Slurm at KillWait, when the program ignored SIGTERM)
//! must not leave the container running. The container's init gets SIGKILL when this
//! process dies (PR_SET_PDEATHSIG, set by the executor just before the user process;
//! see executor.rs). A container that holds an LWK lease also gets a watcher
//! (watcher.rs) that deletes it, and so drops the lease, if this process ends without
//! having said so.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

use super::{create, delete, start, wait, Ctx};
use crate::cli::Run;
use crate::console;

pub fn run(ctx: &Ctx, args: &Run) -> Result<i32> {
    let id = args.opts.container_id.as_str();
    let tie = if args.detach { None } else { Some(Tie::new()?) };
    let (mut container, console) = create::create(ctx, &args.opts, !args.detach, None)?;
    if args.detach {
        // As runc does: a detached run that fails to start leaves no container behind
        // (nobody holds its id to delete it, and an LWK container would hold a lease).
        if let Err(err) = start::start(ctx, &mut container) {
            if let Err(e) = delete::run(ctx, id, true) {
                tracing::warn!("removing container {id} after a failed start: {e:#}");
            }
            return Err(err);
        }
        return Ok(0);
    }
    let pid = container
        .pid()
        .ok_or_else(|| anyhow::anyhow!("container {id} has no init process after create"))?;
    // Said (by drop) on every way out of this function; not when the process is killed.
    let _watch = tie.and_then(|t| t.watch_if_leased(ctx, id, pid.as_raw()));
    let signals = wait::block(console.is_some())?;
    let relay = match console.map(|c| c.receive().and_then(console::Relay::start)) {
        Some(Err(err)) => {
            let _ = delete::run(ctx, id, true);
            return Err(err);
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    if let Err(err) = start::start(ctx, &mut container) {
        drop(relay);
        let _ = delete::run(ctx, id, true);
        return Err(err);
    }
    let code = wait::wait_forwarding(pid, &signals, &|| {
        if let Some(r) = &relay {
            r.resize();
        }
    });
    if let Some(r) = relay {
        r.finish();
    }
    let code = code?;
    if !args.keep {
        if let Err(err) = delete::run(ctx, id, true) {
            tracing::warn!("removing container {id} after it exited: {err:#}");
        }
    }
    Ok(code)
}

/// What ties a foreground container to this process: a pidfd of it (which the
/// container's init checks, see executor.rs) and the mount namespace a watcher must
/// run in (create may leave this process in a private one).
struct Tie {
    pidfd: Option<OwnedFd>,
    host_mnt: File,
}

impl Tie {
    fn new() -> Result<Tie> {
        let pidfd = crate::watcher::own_pidfd();
        crate::executor::die_with_runtime(pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()));
        Ok(Tie {
            pidfd,
            host_mnt: File::open("/proc/self/ns/mnt").context("opening /proc/self/ns/mnt")?,
        })
    }

    /// For a container holding an LWK lease: a `run-reap` watcher that deletes it if
    /// this process ends without dropping the returned guard.
    fn watch_if_leased(self, ctx: &Ctx, id: &str, init: i32) -> Option<Said> {
        let pidfd = self.pidfd?;
        let cfg = crate::config::Config::load().ok()?;
        crate::lwk::lease::get(&cfg, &ctx.root, id)?;
        let mut p = [0; 2];
        // SAFETY: pipe2 fills the array.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: the two descriptors pipe2 just made.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let (pfd, dfd) = (pidfd.as_raw_fd().to_string(), rd.as_raw_fd().to_string());
        let init = init.to_string();
        let args = [
            "run-reap", "--pidfd", &pfd, "--done", &dfd, "--init", &init, id,
        ];
        let keep = [pidfd.as_raw_fd(), rd.as_raw_fd()];
        match crate::watcher::spawn(&ctx.root, &args, &self.host_mnt, &keep) {
            Ok(()) => Some(Said(wr)),
            Err(e) => {
                tracing::warn!("starting the watcher of container {id}: {e}; if this run is killed, `lwk-runc lwk gc` drops its lease");
                None
            }
        }
    }
}

/// Tells the watcher, when dropped, that `run` ended by itself.
struct Said(OwnedFd);

impl Drop for Said {
    fn drop(&mut self) {
        // SAFETY: a one-byte write to our pipe.
        unsafe { libc::write(self.0.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}

/// `run-reap`: once the `run` behind `pidfd` has ended, delete its container unless
/// it said it ended by itself (then it deleted or kept the container as asked).
pub fn reap(ctx: &Ctx, id: &str, pidfd: RawFd, done: RawFd, init: i32) -> Result<()> {
    super::validate_id(id)?;
    crate::watcher::leave_callers_cgroups();
    crate::watcher::wait_pidfd(pidfd);
    let mut b = 0u8;
    // SAFETY: a non-blocking one-byte read of the inherited pipe.
    let said = unsafe {
        libc::fcntl(done, libc::F_SETFL, libc::O_NONBLOCK);
        libc::read(done, (&mut b as *mut u8).cast(), 1) == 1
    };
    if said {
        return Ok(());
    }
    // Only the container that run made: a new one with this id has another init.
    match super::load(ctx, id) {
        Ok(c) if c.pid().map(|p| p.as_raw()) != Some(init) => return Ok(()),
        _ => {}
    }
    tracing::info!("the foreground run of container {id} was killed; deleting the container");
    delete::run(ctx, id, true)
}
