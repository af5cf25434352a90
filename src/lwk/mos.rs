//! mOS driver (lwk-tools.md §3).
//!
//! The LWK partition is made with `lwkctl -c <spec>` and removed with `lwkctl -d`; it is
//! "up" when `/sys/kernel/mOS/lwkcpus` lists CPUs. yod reserves per process through that
//! sysfs directory and then execs the application, so a container needs the directory
//! read-write and no pid arrangement (yod leaves no proxy process behind).

use std::path::{Path, PathBuf};

use crate::config::{BootMode, MosConfig};
use crate::lwk::driver::{self, run_ok, strs, ContainerFacts, Driver, DriverError, Probe};
use crate::lwk::LwkKind;

const K: LwkKind = LwkKind::Mos;
/// Where yod looks, inside the container.
const MOS_SYSFS: &str = "/sys/kernel/mOS";

pub struct Mos<'a> {
    cfg: &'a MosConfig,
}

impl<'a> Mos<'a> {
    pub fn new(cfg: &'a MosConfig) -> Self {
        Mos { cfg }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.cfg.sysfs.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn lwkctl(&self, args: &[&str]) -> Result<(), DriverError> {
        let mut a = self.cfg.lwkctl_args.clone();
        a.extend(strs(args));
        run_ok(K, &self.cfg.lwkctl, "mos.lwkctl", &a).map(|_| ())
    }
}

impl Driver for Mos<'_> {
    fn kind(&self) -> LwkKind {
        K
    }

    fn bring_up(&self) -> Result<(), DriverError> {
        if self.cfg.boot_mode == BootMode::Tools {
            self.lwkctl(&["-c", &self.cfg.partition])?;
        }
        driver::wait_running(self, self.cfg.boot_timeout_secs, &|| {
            "(mOS keeps its messages in the Linux kernel log: dmesg)".into()
        })
    }

    /// A sysfs read: always known at once.
    fn probe(&self) -> Result<Probe, DriverError> {
        if !self.cfg.sysfs.is_dir() {
            return Ok(Probe::Known(None));
        }
        Ok(Probe::Known(Some(match self.read("lwkcpus") {
            Some(c) if !c.is_empty() => "RUNNING".into(),
            _ => "INACTIVE".into(),
        })))
    }

    fn tear_down(&self) -> Result<(), DriverError> {
        if self.status()?.as_deref() != Some("RUNNING") {
            return Ok(());
        }
        self.lwkctl(&["-d"])
    }

    fn launcher(&self) -> (&Path, &'static str) {
        (&self.cfg.yod, "mos.yod")
    }

    fn launcher_args(&self) -> (Vec<String>, Vec<String>) {
        (self.cfg.launcher_args.clone(), Vec::new())
    }

    fn rank_group_args(&self, ppn: u32) -> Vec<String> {
        // yod reserves a fraction of the LWK's CPUs and memory for each rank.
        vec!["-R".into(), format!("1/{ppn}")]
    }

    fn container_facts(&self) -> Result<ContainerFacts, DriverError> {
        let mut tmpfs = Vec::new();
        // A simulated mOS on a kernel without it has no /sys/kernel/mOS to mount over;
        // a tmpfs on /sys/kernel gives the bind a place to land. Never on a real mOS node.
        if self.cfg.sysfs != Path::new(MOS_SYSFS) && !Path::new(MOS_SYSFS).exists() {
            tmpfs.push(PathBuf::from("/sys/kernel"));
        }
        Ok(ContainerFacts {
            devices: vec![],
            rw_binds: vec![(self.cfg.sysfs.clone(), PathBuf::from(MOS_SYSFS))],
            tmpfs,
            unmask: vec![MOS_SYSFS.into()],
            personalities: vec![],
        })
    }

    fn needs_pid_slot(&self) -> bool {
        false
    }

    fn resources(&self) -> (String, String) {
        (
            self.read("lwkcpus").unwrap_or_default(),
            self.read("lwkmem").unwrap_or_default(),
        )
    }
}
