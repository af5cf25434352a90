//! `start`: release the created init to run the user process.

use anyhow::{bail, Result};
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use nix::sys::signal::Signal as NixSignal;

use super::{load, status_name, Ctx};
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, id: &str) -> Result<()> {
    start(&mut load(ctx, id)?)
}

/// Starts a container already in hand (`run` has it from `create`).
pub fn start(container: &mut Container) -> Result<()> {
    let id = container.id().to_owned();
    if container.status() != ContainerStatus::Created {
        bail!(
            "cannot start container {id}: it is {}, not created",
            status_name(container.status())
        );
    }
    if let Err(err) = container.start() {
        // runtime-spec 1.3: when a poststart hook fails the runtime must stop the
        // container. libcontainer 0.7 returns the error but leaves it running.
        if container.status() == ContainerStatus::Running {
            let _ = container.kill(Signal::from(NixSignal::SIGKILL), true);
        }
        bail!("starting container {id}: {}", describe(&err));
    }
    Ok(())
}
