//! mOS driver (lwk-tools.md §3).
//!
//! The LWK partition is made with `lwkctl -c <spec>` and removed with `lwkctl -d`; it is
//! "up" when `/sys/kernel/mOS/lwkcpus` lists CPUs. yod reserves per process through that
//! sysfs directory and then execs the application, so a container needs the directory
//! read-write and no pid arrangement (yod leaves no proxy process behind).

use std::path::{Path, PathBuf};

use crate::config::{BootMode, MosConfig};
use crate::doctor::{self, Finding};
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

    fn diagnose(&self) -> Vec<Finding> {
        let c = self.cfg;
        let mut out = Vec::new();
        if c.boot_mode == BootMode::Tools {
            out.push(doctor::check_tool("mos.lwkctl", &c.lwkctl));
            if let Some(f) = lwkctl_matches_kernel(&c.lwkctl) {
                out.push(f);
            }
        }
        out.push(doctor::check_tool("mos.yod", &c.yod));
        let sysfs = &c.sysfs;
        out.push(if sysfs.join(".lwk-sim").exists() {
            Finding::ok(
                "kernel",
                format!("{}: simulated by lwk-sim", sysfs.display()),
            )
        } else if sysfs.join("lwkcpus").exists() {
            Finding::ok("kernel", format!("mOS ({} present)", sysfs.display()))
        } else {
            Finding::fail(
                "kernel",
                format!(
                    "{} has no lwkcpus: the running kernel is not mOS",
                    sysfs.display()
                ),
                "boot the node's mOS kernel, or fix mos.sysfs",
            )
        });
        out
    }

    /// The partition is the instance (`status`); nothing is reserved outside it.
    fn reserved(&self) -> Result<Option<String>, DriverError> {
        Ok(None)
    }
}

/// mOS's `lwkctl` is a wrapper that runs the `lwkctl` built with the running kernel
/// (`/lib/modules/$(uname -r)/lwkctl`): when it is, that binary must exist.
fn lwkctl_matches_kernel(lwkctl: &Path) -> Option<Finding> {
    let text = std::fs::read(lwkctl).ok()?;
    if !text.starts_with(b"#!") || !String::from_utf8_lossy(&text).contains("/lib/modules") {
        return None;
    }
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    let real = Path::new("/lib/modules").join(&release).join("lwkctl");
    Some(if real.exists() {
        Finding::ok(
            "version",
            format!(
                "lwkctl for the running kernel {release}: {}",
                real.display()
            ),
        )
    } else {
        Finding::fail(
            "version",
            format!("{} is missing: the mOS tools are not those of the running kernel {release}", real.display()),
            "install the mOS tools built with the running kernel, or boot the kernel they belong to",
        )
    })
}
