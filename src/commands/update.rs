//! `update`: change the resource limits of a running container (`--resources -` is
//! what containerd and podman pass, with the JSON on stdin).

use std::io::Read;

use anyhow::{Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::{LinuxPids, LinuxResources};

use super::{cgroup_manager, load, Ctx};
use crate::cli::Update;
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, args: &Update) -> Result<()> {
    let id = args.container_id.as_str();
    let container = load(ctx, id)?;
    let mut resources = match &args.resources {
        Some(path) => {
            let mut data = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading resources from stdin")?;
            } else {
                data =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            }
            serde_json::from_slice::<LinuxResources>(&data).context("parsing the resources JSON")?
        }
        None => LinuxResources::default(),
    };
    apply_flags(&mut resources, args);

    let manager = cgroup_manager(&container)?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| anyhow::anyhow!("updating resources of container {id}: {}", describe(&e)))
}

fn apply_flags(r: &mut LinuxResources, a: &Update) {
    if a.cpu_shares.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
    {
        let mut cpu = r.cpu().clone().unwrap_or_default();
        if let Some(v) = a.cpu_shares {
            cpu.set_shares(Some(v));
        }
        if let Some(v) = a.cpu_period {
            cpu.set_period(Some(v));
        }
        if let Some(v) = a.cpu_quota {
            cpu.set_quota(Some(v));
        }
        if let Some(v) = &a.cpuset_cpus {
            cpu.set_cpus(Some(v.clone()));
        }
        if let Some(v) = &a.cpuset_mems {
            cpu.set_mems(Some(v.clone()));
        }
        r.set_cpu(Some(cpu));
    }
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut mem = r.memory().unwrap_or_default();
        if let Some(v) = a.memory {
            mem.set_limit(Some(v));
        }
        if let Some(v) = a.memory_reservation {
            mem.set_reservation(Some(v));
        }
        if let Some(v) = a.memory_swap {
            mem.set_swap(Some(v));
        }
        r.set_memory(Some(mem));
    }
    if let Some(v) = a.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(v);
        r.set_pids(Some(pids));
    }
    if let Some(v) = a.blkio_weight {
        let mut blkio = r.block_io().clone().unwrap_or_default();
        blkio.set_weight(Some(v));
        r.set_block_io(Some(blkio));
    }
}
