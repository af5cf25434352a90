//! `pause` and `resume`: freeze and thaw every process of the container.

use anyhow::{anyhow, Result};

use super::{load, Ctx};
use crate::commands::create::describe;

pub fn pause(ctx: &Ctx, id: &str) -> Result<()> {
    let mut container = load(ctx, id)?;
    container
        .pause()
        .map_err(|e| anyhow!("pausing container {id}: {}", describe(&e)))
}

pub fn resume(ctx: &Ctx, id: &str) -> Result<()> {
    let mut container = load(ctx, id)?;
    container
        .resume()
        .map_err(|e| anyhow!("resuming container {id}: {}", describe(&e)))
}
