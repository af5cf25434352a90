//! `lwk status|gc`, `hook <stage>` and the linger reaper: the node's LWK, administered
//! through the same CLI, logs and error reporting as every other command.

use std::time::Duration;

use anyhow::Result;

use crate::cli::{HookStage, ListFormat, LwkAction};
use crate::config::Config;

pub fn admin(ctx: &super::Ctx, action: &LwkAction) -> Result<()> {
    let cfg = Config::load()?;
    match action {
        LwkAction::Status { format } => {
            print!("{}", crate::lwk::status(&cfg, *format == ListFormat::Json)?);
        }
        LwkAction::Gc => {
            // Job containers whose every rank died first: deleting them releases
            // their leases, which the node-wide pass below then finds gone.
            for id in crate::conexec::gc(ctx) {
                println!("deleted job container {id}, whose init was gone");
            }
            let done = crate::lwk::gc(&cfg)?;
            for id in done.leases {
                println!("dropped stale lease of {id}");
            }
            for entry in done.closures {
                println!("pruned launcher closure {entry}");
            }
        }
    }
    Ok(())
}

pub fn hook(stage: HookStage) -> Result<()> {
    let cfg = Config::load()?;
    crate::hook::main(&cfg, stage.as_str())?;
    Ok(())
}

/// Started detached by the last release when `linger_secs` > 0; gc tears down only
/// if no container has taken a lease in the meantime.
pub fn reap(secs: u64) -> Result<()> {
    std::thread::sleep(Duration::from_secs(secs));
    let cfg = Config::load()?;
    crate::lwk::gc(&cfg)?;
    Ok(())
}
