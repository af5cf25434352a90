//! `start`: release the created init to run the user process.
//!
//! Poststart hooks run here rather than in libcontainer: libcontainer 0.7 runs them
//! as soon as it has told the init to go, while the init may still be running the
//! startContainer hooks, so a poststart hook could run before the process exists.
//! runtime-spec (and runc, which reads its exec fifo to EOF) has them run after the
//! user process has been executed. create hands libcontainer the spec without them and
//! keeps them in the container's record; start waits for the init to exec first.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use nix::sys::signal::Signal as NixSignal;

use super::{load, status_name, Ctx, Record};
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, id: &str) -> Result<()> {
    start(ctx, &mut load(ctx, id)?)
}

/// Starts a container already in hand (`run` has it from `create`).
pub fn start(ctx: &Ctx, container: &mut Container) -> Result<()> {
    let id = container.id().to_owned();
    crate::failpoint::hit("start-begin");
    if container.status() != ContainerStatus::Created {
        bail!(
            "cannot start container {id}: it is {}, not created",
            status_name(container.status())
        );
    }
    let poststart = Record::load_from(&container.root)
        .map(|r| r.poststart)
        .unwrap_or_default();
    let pid = container.pid().map(|p| p.as_raw());
    if let Some(pid) = pid {
        // The LWK launcher's pid is chosen now, the moment before it is forked.
        let cfg = crate::config::Config::load()?;
        crate::lwk::before_start(&cfg, &ctx.root, &id, pid)
            .with_context(|| format!("starting container {id}"))?;
        crate::failpoint::hit("start-slot-placed");
    }
    let before = pid.and_then(exe_of);
    if let Err(err) = container.start() {
        // A container created before poststart hooks moved here still has libcontainer
        // run them, and it leaves the container running when one fails.
        if container.status() == ContainerStatus::Running {
            let _ = container.kill(Signal::from(NixSignal::SIGKILL), true);
        }
        bail!("starting container {id}: {}", describe(&err));
    }
    crate::failpoint::hit("start-done");
    if poststart.is_empty() {
        return Ok(());
    }
    if let (Some(pid), Some(before)) = (pid, before) {
        wait_for_exec(pid, before);
    }
    if let Err(err) = libcontainer::hooks::run_hooks(
        Some(&poststart),
        Some(&container.state),
        Some(&container.root),
        None,
        None,
    ) {
        // runtime-spec 1.3: when a poststart hook fails the runtime must stop the
        // container (and log the error).
        let _ = container.kill(Signal::from(NixSignal::SIGKILL), true);
        bail!("starting container {id}: poststart hook failed: {err}");
    }
    Ok(())
}

/// The file the process runs, as (device, inode): it changes when the init execs.
fn exe_of(pid: i32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Wait until the init runs another program than it did at create (it has run the
/// startContainer hooks and exec'd the process), or is gone. A hook that never returns
/// holds start as it holds runc's.
fn wait_for_exec(pid: i32, before: (u64, u64)) {
    let mut pause = Duration::from_micros(100);
    while let Some(now) = exe_of(pid) {
        if now != before {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
