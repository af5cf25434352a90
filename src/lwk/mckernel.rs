//! IHK/McKernel driver (lwk-tools.md §1–2).
//!
//! `tools` mode reserves the configured CPUs and memory, then runs mcreboot.sh's steps
//! 10–12 (create, assign, load, kargs, boot) and polls `get status`, because `boot` does
//! not wait. Teardown follows mcstop+release.sh: `destroy` (it force-shuts the OS; it
//! returns EBUSY while an mcexec still holds /dev/mcosN, so it is retried briefly), then
//! release whatever `query` reports. Each step tolerates "already gone", so the same
//! teardown cleans up after a boot that failed halfway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{BootMode, McKernelConfig};
use crate::lwk::driver::{self, run, run_ok, strs, ContainerFacts, Driver, DriverError, Probe};
use crate::lwk::LwkKind;

const K: LwkKind = LwkKind::McKernel;
/// The config key naming ihkosctl, for errors about running it.
const IHKOSCTL_KEY: &str = "mckernel.ihkosctl";

pub struct McKernel<'a> {
    cfg: &'a McKernelConfig,
}

impl<'a> McKernel<'a> {
    pub fn new(cfg: &'a McKernelConfig) -> Self {
        McKernel { cfg }
    }

    fn mcd(&self) -> PathBuf {
        self.cfg.dev_dir.join(format!("mcd{}", self.cfg.device))
    }

    fn mcos(&self) -> PathBuf {
        self.cfg.dev_dir.join(format!("mcos{}", self.cfg.os_index))
    }

    fn ihkconfig(&self, args: &[&str]) -> Result<driver::ToolOutput, DriverError> {
        let mut a = vec![self.cfg.device.to_string()];
        a.extend(strs(args));
        run_ok(K, &self.cfg.ihkconfig, "mckernel.ihkconfig", &a)
    }

    /// `ihkosctl <os> args…`: the argument list of every ihkosctl call.
    fn osctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec![self.cfg.os_index.to_string()];
        a.extend(strs(args));
        a
    }

    fn ihkosctl(&self, args: &[&str]) -> Result<driver::ToolOutput, DriverError> {
        run_ok(K, &self.cfg.ihkosctl, IHKOSCTL_KEY, &self.osctl_args(args))
    }

    fn kmsg_tail(&self) -> String {
        match run(
            &self.cfg.ihkosctl,
            IHKOSCTL_KEY,
            &self.osctl_args(&["kmsg"]),
        ) {
            Ok(o) => {
                let lines: Vec<&str> = o.stdout.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                if tail.trim().is_empty() {
                    "(empty)".into()
                } else {
                    tail
                }
            }
            Err(e) => format!("(could not read kmsg: {e})"),
        }
    }

    fn boot_with_tools(&self) -> Result<(), DriverError> {
        let c = self.cfg;
        if !self.mcd().exists() {
            return Err(DriverError::NoModules {
                kind: K,
                path: self.mcd(),
            });
        }
        self.ihkconfig(&["reserve", "cpu", &c.cpus])?;
        self.ihkconfig(&["reserve", "mem", &c.memory])?;
        // `create`'s exit status is the new OS index (lwk-tools.md §1.2): 0 on a fresh node.
        let a = vec![c.device.to_string(), "create".to_string()];
        let o = run(&c.ihkconfig, "mckernel.ihkconfig", &a)?;
        if o.code != Some(c.os_index as i32) || !self.mcos().exists() {
            return Err(DriverError::ToolFailed {
                kind: K,
                cmd: format!("{} {}", c.ihkconfig.display(), a.join(" ")),
                status: format!("exit {:?}, expected OS index {}", o.code, c.os_index),
                output: o.text(),
            });
        }
        self.ihkosctl(&["assign", "cpu", &c.cpus])?;
        if !c.ikc_map.trim().is_empty() {
            self.ihkosctl(&["set", "ikc_map", &c.ikc_map])?;
        }
        self.ihkosctl(&["assign", "mem", &c.memory])?;
        let image = c.image.to_string_lossy();
        self.ihkosctl(&["load", &image])?;
        self.ihkosctl(&["kargs", &c.kargs])?;
        self.ihkosctl(&["boot"])?;
        Ok(())
    }

    fn boot_with_script(&self) -> Result<(), DriverError> {
        let c = self.cfg;
        let mut a = strs(&["-c", &c.cpus, "-m", &c.memory]);
        if !c.ikc_map.trim().is_empty() {
            a.extend(strs(&["-r", &c.ikc_map]));
        }
        a.extend(c.mcreboot_args.iter().cloned());
        run_ok(K, &c.mcreboot, "mckernel.mcreboot", &a)?;
        Ok(())
    }
}

impl Driver for McKernel<'_> {
    fn kind(&self) -> LwkKind {
        K
    }

    fn bring_up(&self) -> Result<(), DriverError> {
        match self.cfg.boot_mode {
            BootMode::Tools => self.boot_with_tools()?,
            BootMode::Script => self.boot_with_script()?,
            BootMode::External => {}
        }
        driver::wait_running(self, self.cfg.boot_timeout_secs, &|| self.kmsg_tail())
    }

    fn probe(&self) -> Result<Probe, DriverError> {
        if !self.mcos().exists() {
            return Ok(Probe::Known(None));
        }
        let args = self.osctl_args(&["get", "status"]);
        Ok(Probe::Running {
            kind: K,
            child: driver::spawn(&self.cfg.ihkosctl, IHKOSCTL_KEY, &args)?,
            tool: self.cfg.ihkosctl.clone(),
            key: IHKOSCTL_KEY,
            args,
        })
    }

    fn tear_down(&self) -> Result<(), DriverError> {
        let c = self.cfg;
        if !self.mcd().exists() {
            return Ok(()); // modules gone: nothing can be reserved
        }
        if c.boot_mode == BootMode::Script {
            run_ok(K, &c.mcstop, "mckernel.mcstop", &c.mcstop_args)?;
            return Ok(());
        }
        if self.mcos().exists() {
            let os = c.os_index.to_string();
            let mut last = None;
            // EBUSY while a dying mcexec still holds the device; ihklib retries 100x10 ms.
            for _ in 0..100 {
                match self.ihkconfig(&["destroy", &os]) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        if !self.mcos().exists() {
                            last = None;
                            break;
                        }
                        last = Some(e);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        let cpus = self.ihkconfig(&["query", "cpu"])?.stdout.trim().to_string();
        if !cpus.is_empty() {
            self.ihkconfig(&["release", "cpu", &cpus])?;
        }
        let mem = self.ihkconfig(&["query", "mem"])?.stdout.trim().to_string();
        if !mem.is_empty() {
            self.ihkconfig(&["release", "mem", "all"])?;
        }
        Ok(())
    }

    fn launcher(&self) -> (&Path, &'static str) {
        (&self.cfg.mcexec, "mckernel.mcexec")
    }

    fn launcher_args(&self) -> (Vec<String>, Vec<String>) {
        // The OS index is always explicit: it also stops mcexec from taking a program
        // name that starts with a digit for an OS index.
        (
            self.cfg.launcher_args.clone(),
            vec![self.cfg.os_index.to_string()],
        )
    }

    fn rank_group_args(&self, ppn: u32) -> Vec<String> {
        // mcexec groups the ranks of a node by their parent and splits the CPUs among them.
        vec!["-n".into(), ppn.to_string()]
    }

    fn container_facts(&self) -> Result<ContainerFacts, DriverError> {
        let os = self.cfg.os_index;
        let dev = driver::device_fact(K, &self.mcos(), Path::new(&format!("/dev/mcos{os}")))?;
        Ok(ContainerFacts {
            devices: vec![dev],
            rw_binds: vec![],
            tmpfs: vec![],
            unmask: vec![
                format!("/proc/mcos{os}"),
                "/sys/devices/virtual/mcos".into(),
                "/sys/class/mcos".into(),
            ],
            // mcexec sets ADDR_NO_RANDOMIZE on its personality (PER_LINUX, PER_LINUX32,
            // UNAME26 as Docker's profile allows them) and re-execs itself.
            personalities: [0x0, 0x8, 0x20000, 0x20008]
                .iter()
                .map(|p| p | libc::ADDR_NO_RANDOMIZE as u64)
                .collect(),
        })
    }

    fn needs_pid_slot(&self) -> bool {
        true
    }

    fn resources(&self) -> (String, String) {
        (self.cfg.cpus.clone(), self.cfg.memory.clone())
    }
}
