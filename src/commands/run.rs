//! `run`: create + start, then (unless `--detach`) wait with signals forwarded,
//! delete (unless `--keep`) and exit with the container's exit code.

use anyhow::Result;

use super::{create, delete, start, wait, Ctx};
use crate::cli::Run;
use crate::console;

pub fn run(ctx: &Ctx, args: &Run) -> Result<i32> {
    let id = args.opts.container_id.as_str();
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
