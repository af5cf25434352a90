//! `events`: resource statistics of a running container, in runc's event envelope
//! (`{"type":"stats","id":…,"data":…}`), once with `--stats` or every `--interval`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::ContainerStatus;

use super::{cgroup_manager, load, Ctx};
use crate::cli::Events;

pub fn run(ctx: &Ctx, args: &Events) -> Result<()> {
    let id = args.container_id.as_str();
    let interval = parse_interval(&args.interval)?;
    let container = load(ctx, id)?;
    if container.status() == ContainerStatus::Stopped {
        bail!("container not running");
    }
    let manager = cgroup_manager(&container)?;
    loop {
        let stats = manager.stats().context("reading cgroup statistics")?;
        let event = serde_json::json!({"type": "stats", "id": id, "data": stats});
        println!("{event}");
        if args.stats {
            return Ok(());
        }
        std::thread::sleep(interval);
        if load(ctx, id)
            .map(|c| c.status() == ContainerStatus::Stopped)
            .unwrap_or(true)
        {
            return Ok(());
        }
    }
}

/// Go duration syntax as runc takes it: `5s`, `500ms`, `1m`.
fn parse_interval(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid --interval {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid --interval {s:?}: unit must be ms, s, m or h"),
    };
    if secs <= 0.0 {
        bail!("invalid --interval {s:?}: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_go_syntax() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("fast").is_err());
    }
}
