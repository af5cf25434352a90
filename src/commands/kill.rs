//! `kill`: send a signal to the init (or, with `--all`, every process of the container).

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use super::{load, Ctx};
use crate::cli::Kill;
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, args: &Kill) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    let mut container = load(ctx, &args.container_id)?;
    let before = container.status();
    // containerd's shim matches "container not running" to treat the kill as done.
    if matches!(before, ContainerStatus::Stopped) && !args.all {
        bail!("container not running");
    }
    container
        .kill(signal, args.all)
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .with_context(|| {
            format!(
                "sending signal {} to container {}",
                args.signal, args.container_id
            )
        })?;

    // libcontainer records `stopped` after any signal, even one the container
    // handles (SIGUSR1, a SIGTERM it traps). Put the status back while it lives.
    if let Some(pid) = container.pid() {
        let alive = crate::host::proc_stat(pid.as_raw()).is_some_and(|s| s.state != 'Z');
        if alive && before != ContainerStatus::Stopped {
            container.set_status(before);
            container.save().context("saving container state")?;
        }
    }
    Ok(())
}

/// Accepts what runc accepts: `KILL`, `SIGKILL`, `9`, any case.
pub fn parse_signal(s: &str) -> Result<Signal> {
    Signal::try_from(s.trim()).map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_number_and_prefix() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        let term = name("SIGTERM");
        assert!(term.contains("SIGTERM"));
        assert_eq!(name("TERM"), term);
        assert_eq!(name("15"), term);
        assert_eq!(name("term"), term);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
