//! `delete`: remove a stopped (or, with `--force`, any) container and everything it held.

use anyhow::{bail, Context, Result};
use libcontainer::config::YoukiConfig;
use libcontainer::container::ContainerStatus;

use super::{load, status_name, validate_id, Ctx};
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    validate_id(id)?;
    crate::failpoint::hit("delete-begin");
    let res = delete(ctx, id, force);
    // Once the container is gone (deleted now, or never fully created), drop its LWK
    // lease; the last one tears the LWK down. A teardown failure does not undo the
    // delete: `lwk-runc lwk gc` retries it.
    if !ctx.container_dir(id).join("state.json").exists() {
        crate::failpoint::hit("delete-container-gone");
        match crate::config::Config::load() {
            Ok(cfg) => {
                if let Err(e) = crate::lwk::release(&cfg, &ctx.root, id) {
                    tracing::warn!("releasing the LWK of container {id}: {e}");
                }
            }
            Err(e) => tracing::warn!("releasing the LWK of container {id}: {e}"),
        }
    }
    res
}

/// libcontainer's delete, given time to empty the cgroup. libcgroups removes a cgroup
/// with four tries over about 100 ms after killing its processes; on a loaded node
/// (64 containers coming and going on two CPUs) the killed processes take longer to
/// leave it, and `delete --force` failed with "could not delete" although the
/// container was on its way out. The container is stopped by then (libcontainer saved
/// it so), so trying again until the cgroup is empty, within a bound, is safe.
fn delete_waiting_for_cgroup(
    container: &mut libcontainer::container::Container,
    force: bool,
) -> Result<(), libcontainer::error::LibcontainerError> {
    const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
    let t0 = std::time::Instant::now();
    loop {
        match container.delete(force) {
            Err(libcontainer::error::LibcontainerError::CgroupManager(e))
                if t0.elapsed() < BOUND && container.status() == ContainerStatus::Stopped =>
            {
                tracing::debug!(
                    "the cgroup of container {} is not empty yet: {e}",
                    container.id()
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    let dir = ctx.container_dir(id);
    if force && dir.is_dir() && !dir.join("state.json").exists() {
        // A runtime killed in the middle of `create` leaves a directory without
        // state; `--force` is how engines clean up after it.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing leftover state of container {id}"))?;
        return Ok(());
    }
    let mut container = load(ctx, id)?;
    let status = container.status();
    if !force
        && matches!(
            status,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Creating
        )
    {
        bail!(
            "cannot delete container {id} that is not stopped: {}",
            status_name(status)
        );
    }

    // libcontainer 0.7 aborts `delete` when a poststop hook fails, leaving the
    // state behind; runtime-spec says a poststop failure is only a warning. So the
    // poststop hooks are taken out of its config and run here, after the delete.
    let root = container.root.clone();
    let original = YoukiConfig::load(&root).ok();
    let poststop = original
        .as_ref()
        .and_then(|c| c.hooks.as_ref())
        .and_then(|h| h.poststop().clone())
        .filter(|h| !h.is_empty());
    if let (Some(config), Some(_)) = (&original, &poststop) {
        let mut stripped = config.clone();
        if let Some(hooks) = stripped.hooks.as_mut() {
            hooks.set_poststop(None);
        }
        stripped
            .save(&root)
            .with_context(|| format!("preparing container {id} for delete"))?;
    }

    if let Err(err) = delete_waiting_for_cgroup(&mut container, force) {
        if let (Some(config), Some(_)) = (&original, &poststop) {
            let _ = config.save(&root);
        }
        bail!("deleting container {id}: {}", describe(&err));
    }

    if let Some(hooks) = poststop {
        container.set_status(ContainerStatus::Stopped);
        if let Err(err) =
            libcontainer::hooks::run_hooks(Some(&hooks), Some(&container.state), None, None, None)
        {
            tracing::warn!("poststop hook of container {id} failed: {}", describe(&err));
        }
    }
    Ok(())
}
