//! `ps`: the processes of a container, from its cgroup.

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;

use super::{cgroup_manager, load, Ctx};
use crate::cli::{ListFormat, Ps};

pub fn run(ctx: &Ctx, args: &Ps) -> Result<()> {
    let pids = container_pids(ctx, &args.container_id)?;
    match args.format {
        ListFormat::Json => println!("{}", serde_json::to_string(&pids)?),
        ListFormat::Table => print_table(&pids, &args.ps_args)?,
    }
    Ok(())
}

pub fn container_pids(ctx: &Ctx, id: &str) -> Result<Vec<i32>> {
    let container = load(ctx, id)?;
    let manager = cgroup_manager(&container)?;
    let mut pids: Vec<i32> = manager
        .get_all_pids()
        .context("listing the container's processes")?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Runs ps(1) on the host (default `-ef`) and keeps its header and the rows of the
/// container's processes, found by the PID column, as runc does.
fn print_table(pids: &[i32], ps_args: &[String]) -> Result<()> {
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps(1)")?;
    if !out.status.success() {
        bail!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("ps {} printed no PID column", args.join(" "));
    };
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}
