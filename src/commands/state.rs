//! `state`: the runtime-spec state of one container, as runc prints it.

use anyhow::Result;
use libcontainer::container::ContainerStatus;
use serde_json::json;

use super::{load, status_name, Ctx, Record};

pub fn run(ctx: &Ctx, id: &str) -> Result<()> {
    let value = state_json(ctx, id)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub fn state_json(ctx: &Ctx, id: &str) -> Result<serde_json::Value> {
    let container = load(ctx, id)?;
    Ok(describe(ctx, id, &container))
}

pub fn describe(
    ctx: &Ctx,
    id: &str,
    container: &libcontainer::container::Container,
) -> serde_json::Value {
    let record = Record::load(ctx, id);
    let status = container.status();
    let pid = match status {
        ContainerStatus::Stopped => 0,
        _ => container.pid().map(|p| p.as_raw()).unwrap_or(0),
    };
    let bundle = record
        .as_ref()
        .map(|r| r.bundle.clone())
        .unwrap_or_else(|| container.bundle().clone());
    let rootfs = record
        .as_ref()
        .map(|r| r.rootfs.clone())
        .unwrap_or_else(|| bundle.join("rootfs"));
    let created = container
        .created()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    let owner = container
        .creator()
        .map(|o| o.to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "ociVersion": "1.2.1",
        "id": id,
        "pid": pid,
        "status": status_name(status),
        "bundle": bundle,
        "rootfs": rootfs,
        "created": created,
        "owner": owner,
        "annotations": container.state.annotations.clone().unwrap_or_default(),
    })
}
