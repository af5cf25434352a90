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
use crate::doctor::{self, Finding};
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
        crate::failpoint::hit("boot-reserved");
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
        crate::failpoint::hit("boot-issued");
        Ok(())
    }

    /// (CPUs, memory) reserved from Linux, assigned to an instance or not.
    fn query_reserved(&self) -> Result<(String, String), DriverError> {
        let cpus = self.ihkconfig(&["query", "cpu"])?.stdout.trim().to_string();
        let mem = self.ihkconfig(&["query", "mem"])?.stdout.trim().to_string();
        Ok((cpus, mem))
    }

    /// `doctor`: the device, the modules behind it, and whether mcexec, the modules and
    /// the instance come from one build (mcexec refuses an instance of another).
    fn diagnose_device(&self, out: &mut Vec<Finding>) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let mcd = self.mcd();
        match std::fs::metadata(&mcd) {
            Ok(md) if md.file_type().is_char_device() => {
                out.push(Finding::ok(
                    "device",
                    format!(
                        "{}: char device {}:{}",
                        mcd.display(),
                        libc::major(md.rdev()),
                        libc::minor(md.rdev())
                    ),
                ));
                let loaded: Vec<String> = std::fs::read_to_string("/proc/modules")
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_whitespace().next().map(String::from))
                    .collect();
                let has = |m: &str| {
                    loaded
                        .iter()
                        .any(|l| l == m || (m.ends_with('*') && l.starts_with(&m[..m.len() - 1])))
                };
                let missing: Vec<&str> = ["ihk", "ihk_smp_*", "mcctrl"]
                    .into_iter()
                    .filter(|m| !has(m))
                    .collect();
                out.push(if missing.is_empty() {
                    Finding::ok("modules", "ihk, ihk_smp, mcctrl loaded")
                } else {
                    Finding::fail(
                        "modules",
                        format!("not loaded: {} (mcexec needs mcctrl)", missing.join(", ")),
                        "load ihk.ko, ihk-smp-<arch>.ko and mcctrl.ko in that order (mcreboot.sh does)",
                    )
                });
            }
            Ok(md) if md.is_file() && is_simulated(&mcd) => out.push(Finding::ok(
                "device",
                format!(
                    "{}: simulated by lwk-sim (modules \"loaded\")",
                    mcd.display()
                ),
            )),
            Ok(_) => {
                out.push(Finding::fail(
                    "device",
                    format!(
                        "{} is neither a character device nor a simulated one",
                        mcd.display()
                    ),
                    "check mckernel.dev_dir and mckernel.device",
                ));
                return;
            }
            Err(_) => {
                out.push(match self.cfg.boot_mode {
                    BootMode::Tools => Finding::fail(
                        "device",
                        format!("{} does not exist: the IHK modules are not loaded, and boot_mode \"tools\" does not load them", mcd.display()),
                        "load ihk.ko, ihk-smp-<arch>.ko and mcctrl.ko at boot (or set boot_mode = \"script\" to let mcreboot.sh do it)",
                    ),
                    BootMode::Script => Finding::ok(
                        "device",
                        format!("{} absent; mcreboot.sh loads the modules when the first LWK container boots McKernel", mcd.display()),
                    ),
                    BootMode::External => Finding::warn(
                        "device",
                        format!("{} does not exist: nothing runs on McKernel until the scheduler loads the modules and boots it", mcd.display()),
                        "boot McKernel from the scheduler's prolog",
                    ),
                });
                return;
            }
        }
        let modules = match run(
            &self.cfg.ihkconfig,
            "mckernel.ihkconfig",
            &[self.cfg.device.to_string(), "get".into(), "buildid".into()],
        ) {
            Ok(o) if o.code == Some(0) && !o.stdout.trim().is_empty() => {
                o.stdout.trim().to_string()
            }
            Ok(o) => {
                out.push(Finding::warn(
                    "build-id",
                    format!(
                        "`ihkconfig {} get buildid` failed: {}",
                        self.cfg.device,
                        o.text()
                    ),
                    "check the IHK modules and ihkconfig",
                ));
                return;
            }
            Err(e) => {
                out.push(Finding::warn(
                    "build-id",
                    e.to_string(),
                    "fix mckernel.ihkconfig",
                ));
                return;
            }
        };
        if self.mcos().exists() {
            if let Ok(o) = run(
                &self.cfg.ihkosctl,
                IHKOSCTL_KEY,
                &self.osctl_args(&["get", "buildid"]),
            ) {
                let inst = o.stdout.trim();
                if o.code == Some(0) && !inst.is_empty() && inst != modules {
                    out.push(Finding::fail(
                        "build-id",
                        format!("instance {} runs build {inst}, the modules are build {modules}: mcexec refuses it", self.cfg.os_index),
                        "`lwk-runc lwk gc` once no container uses it; the next LWK container boots the configured image",
                    ));
                    return;
                }
            }
        }
        let in_mcexec = std::fs::read(&self.cfg.mcexec)
            .is_ok_and(|b| b.windows(modules.len()).any(|w| w == modules.as_bytes()));
        out.push(if in_mcexec {
            Finding::ok("build-id", format!("modules and mcexec are build {modules}"))
        } else {
            Finding::warn(
                "build-id",
                format!("{} does not carry the modules' build-id {modules}; mcexec refuses to run on modules of another build", self.cfg.mcexec.display()),
                "install mcexec from the same McKernel build as the loaded IHK modules",
            )
        });
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
            // Every mcexec holds the device open; one killed a moment ago (its lease
            // already dropped as ending) closes it at the end of its exit.
            crate::host::wait_for_exiting_holders(
                || crate::host::fd_holders(&self.mcos()),
                driver::EXIT_WAIT,
            );
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
        crate::failpoint::hit("teardown-destroyed");
        let (cpus, mem) = self.query_reserved()?;
        if !cpus.is_empty() {
            self.ihkconfig(&["release", "cpu", &cpus])?;
        }
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
            binds: vec![],
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

    fn fences_devices(&self) -> bool {
        // /dev/mcosN obeys shutdown, boot and load from any euid-0 process.
        true
    }

    fn needs_pid_slot(&self) -> bool {
        true
    }

    fn resources(&self) -> (String, String) {
        (self.cfg.cpus.clone(), self.cfg.memory.clone())
    }

    fn diagnose(&self) -> Vec<Finding> {
        let c = self.cfg;
        let mut tools = vec![
            ("mckernel.ihkosctl", &c.ihkosctl),
            ("mckernel.mcexec", &c.mcexec),
        ];
        match c.boot_mode {
            BootMode::Tools => tools.insert(0, ("mckernel.ihkconfig", &c.ihkconfig)),
            BootMode::Script => {
                tools.insert(0, ("mckernel.mcreboot", &c.mcreboot));
                tools.insert(1, ("mckernel.mcstop", &c.mcstop));
            }
            BootMode::External => {}
        }
        let mut out: Vec<Finding> = tools
            .into_iter()
            .map(|(k, p)| doctor::check_tool(k, p))
            .collect();
        if c.boot_mode == BootMode::Tools {
            out.push(doctor::check_data("mckernel.image", &c.image));
        }
        if c.boot_mode != BootMode::External && cpu_list_has_zero(&c.cpus) {
            out.push(Finding::fail(
                "mckernel.cpus",
                format!("\"{}\" includes CPU 0, which IHK can never reserve", c.cpus),
                "take CPU 0 out of mckernel.cpus",
            ));
        }
        self.diagnose_device(&mut out);
        out
    }

    fn reserved(&self) -> Result<Option<String>, DriverError> {
        if !self.mcd().exists() {
            return Ok(None);
        }
        let (cpus, mem) = self.query_reserved()?;
        Ok((!cpus.is_empty() || !mem.is_empty())
            .then(|| format!("CPUs {cpus:?} and memory {mem:?}")))
    }
}

/// A simulator device file (lwk-sim's `# lwk-sim device` magic), which no real device is.
fn is_simulated(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head.starts_with(b"# lwk-sim device")
}

/// Whether an ihkconfig CPU list (`a,b-c`) names CPU 0.
fn cpu_list_has_zero(list: &str) -> bool {
    list.split(',').any(|part| {
        let first = part.trim().split('-').next().unwrap_or("");
        first.trim().parse::<u32>() == Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_zero_is_spotted_in_lists_and_ranges() {
        assert!(cpu_list_has_zero("0"));
        assert!(cpu_list_has_zero("2,0-3"));
        assert!(!cpu_list_has_zero("1-3,10"));
        assert!(!cpu_list_has_zero(""));
    }
}
