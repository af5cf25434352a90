//! `create`: build the container up to the point where only the user process is
//! left to start (runtime-spec "create"); the init waits for `start`.

use anyhow::{Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::{process_start_time, validate_id, Ctx, Record};
use crate::cli::CreateOpts;

pub fn run(ctx: &Ctx, opts: &CreateOpts) -> Result<()> {
    create(ctx, opts).map(|_| ())
}

/// Creates the container and returns it in the `created` state. Shared by `run`.
pub fn create(ctx: &Ctx, opts: &CreateOpts) -> Result<Container> {
    let id = opts.container_id.as_str();
    validate_id(id)?;
    let bundle = std::fs::canonicalize(&opts.bundle).with_context(|| {
        format!(
            "bundle {} does not exist or is not accessible",
            opts.bundle.display()
        )
    })?;
    if ctx.container_dir(id).exists() {
        anyhow::bail!("container with id {id} already exists");
    }
    std::fs::create_dir_all(&ctx.root)
        .with_context(|| format!("creating state root {}", ctx.root.display()))?;

    // LWK: decide, lease (boot if first), rewrite into a private bundle. None = plain.
    let cfg = crate::config::Config::load()?;
    let prepared = crate::lwk::prepare_for_bundle(&cfg, &ctx.root, id, &bundle)?;
    let init_bundle = prepared
        .as_ref()
        .map_or(bundle.as_path(), |p| p.bundle.as_path());
    let built = build(ctx, opts, id, init_bundle);
    let container = match (built, &prepared) {
        (Ok(c), None) => c,
        (Ok(mut c), Some(_)) => {
            let pid = c.pid().map_or(0, |p| p.as_raw());
            if let Err(err) = crate::lwk::container_created(&cfg, &ctx.root, id, pid) {
                let _ = c.delete(true);
                let _ = crate::lwk::release(&cfg, &ctx.root, id);
                return Err(err.into());
            }
            c
        }
        (Err(err), prepared) => {
            if prepared.is_some() {
                if let Err(e) = crate::lwk::release(&cfg, &ctx.root, id) {
                    tracing::warn!(
                        "releasing the LWK of container {id} after a failed create: {e}"
                    );
                }
            }
            return Err(err);
        }
    };

    let rootfs = rootfs_of(&bundle);
    let record = Record {
        bundle,
        rootfs,
        init_start_time: container.pid().and_then(|p| process_start_time(p.as_raw())),
    };
    if let Err(err) = record.save(ctx, id) {
        // The container exists but we could not describe it: take it down rather than
        // leave a half-known container behind.
        let mut c = container;
        let _ = c.delete(true);
        let _ = crate::lwk::release(&cfg, &ctx.root, id);
        return Err(err);
    }
    Ok(container)
}

fn build(ctx: &Ctx, opts: &CreateOpts, id: &str, bundle: &std::path::Path) -> Result<Container> {
    ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(&ctx.root)
        .context("using the state root")?
        .with_pid_file(opts.pid_file.as_ref())
        .context("using the pid file")?
        .with_console_socket(opts.console_socket.as_ref())
        .with_preserved_fds(opts.preserve_fds)
        .validate_id()
        .with_context(|| format!("invalid container id {id:?}"))?
        .as_init(bundle)
        .with_systemd(ctx.systemd_cgroup)
        .with_detach(true)
        .with_no_pivot(opts.no_pivot)
        .build()
        .map_err(|err| anyhow::anyhow!(describe(&err)))
        .with_context(|| format!("creating container {id} from bundle {}", bundle.display()))
}

/// The bundle's rootfs as an absolute path, for `state` (read again only for display).
fn rootfs_of(bundle: &std::path::Path) -> std::path::PathBuf {
    let from_spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["root"]["path"].as_str().map(std::path::PathBuf::from));
    match from_spec {
        Some(p) if p.is_absolute() => p,
        Some(p) => bundle.join(p),
        None => bundle.join("rootfs"),
    }
}

/// libcontainer nests the useful part of an error (the init's message, the
/// executable that was not found) inside generic wrappers; bring it all into one line.
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
