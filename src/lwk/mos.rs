//! mOS driver (lwk-tools.md §3).
//!
//! The LWK partition is made with `lwkctl -c <spec>` and removed with `lwkctl -d`; it is
//! "up" when `/sys/kernel/mOS/lwkcpus` lists CPUs. yod reserves per process through that
//! sysfs directory and then execs the application, so a container needs no pid
//! arrangement (yod leaves no proxy process behind).
//!
//! A container sees the directory read-only, with read-write binds on top of it of only
//! the request files yod writes: `lwk_config` stays read-only, so `lwkctl -d` run from
//! a container (the yod closure under another name, or a tool it brings) cannot delete
//! the partition under its neighbours. The directory itself is the host's, not a copy,
//! because yod serialises reservations with `flock` on it, node-wide.

use std::path::{Path, PathBuf};

use crate::config::{BootMode, MosConfig};
use crate::doctor::{self, Finding};
use crate::lwk::driver::{self, run_ok, strs, ContainerFacts, Driver, DriverError, Probe};
use crate::lwk::rewrite::BindFact;
use crate::lwk::LwkKind;

const K: LwkKind = LwkKind::Mos;
/// Where yod looks, inside the container.
const MOS_SYSFS: &str = "/sys/kernel/mOS";

/// The files yod writes to reserve resources (mOS `yod/mos_plugin.c`); it only reads
/// the rest of the directory.
const YOD_WRITES: &[&str] = &[
    "lwkcpus_request",
    "lwkmem_request",
    "lwk_util_threads",
    "lwkcpus_sequence",
    "lwkmem_mempolicy_info",
    "lwk_options",
    "lwkgpus_request",
];

/// The simulator's marker file; it names the files in which the simulated yod keeps
/// what a real mOS kernel keeps in memory (see sim/README.md).
const SIM_MARKER: &str = ".lwk-sim";

/// The files the simulated kernel updates from inside a container (`kernel_state=` in
/// its marker); none on a real mOS node. Only plain names of regular files count.
fn simulated_kernel_state(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(SIM_MARKER)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("kernel_state="))
        .flat_map(|v| v.split_whitespace())
        .filter(|n| !n.contains('/') && *n != "." && *n != "..")
        .filter(|n| dir.join(n).is_file())
        .map(str::to_string)
        .collect()
}

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

    /// The processes that hold a reservation (`lwkprocesses`: pids, comma-separated).
    fn processes(&self) -> Vec<i32> {
        self.read("lwkprocesses")
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|p| p.parse().ok())
            .collect()
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
        // lwkctl refuses while a process holds a reservation; one killed a moment ago
        // (its lease already dropped as ending) frees it at the end of its exit.
        crate::host::wait_for_exiting_holders(|| self.processes(), driver::EXIT_WAIT);
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
        let dir = &self.cfg.sysfs;
        let mut binds = vec![BindFact {
            host: dir.clone(),
            container: PathBuf::from(MOS_SYSFS),
            writable: false,
        }];
        let writable = YOD_WRITES
            .iter()
            .map(|f| f.to_string())
            .filter(|f| dir.join(f).is_file())
            .chain(simulated_kernel_state(dir));
        for f in writable {
            binds.push(BindFact {
                host: dir.join(&f),
                container: Path::new(MOS_SYSFS).join(&f),
                writable: true,
            });
        }
        Ok(ContainerFacts {
            devices: vec![],
            binds,
            tmpfs,
            unmask: vec![MOS_SYSFS.into()],
            personalities: vec![],
        })
    }

    fn fences_devices(&self) -> bool {
        // No device: the boundary is the read-only sysfs directory.
        false
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory standing in for /sys/kernel/mOS, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("lwk-mos-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn facts(dir: &Path) -> ContainerFacts {
        let cfg = MosConfig {
            sysfs: dir.to_path_buf(),
            ..Default::default()
        };
        Mos::new(&cfg).container_facts().unwrap()
    }

    #[test]
    fn the_directory_is_read_only_and_only_yods_request_files_are_writable() {
        let d = Dir::new("ro");
        for f in [
            "lwkcpus",
            "lwkcpus_reserved",
            "lwk_config",
            "lwkcpus_request",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::write(d.path().join("lwkmem_request"), "").unwrap();
        let b = facts(d.path()).binds;
        assert_eq!(b[0].host, d.path());
        assert_eq!(b[0].container, Path::new(MOS_SYSFS));
        assert!(!b[0].writable);
        let rw: Vec<_> = b[1..]
            .iter()
            .inspect(|x| assert!(x.writable && x.host.parent() == Some(d.path())))
            .map(|x| x.container.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(rw, ["lwkcpus_request", "lwkmem_request"]);
    }

    #[test]
    fn a_simulated_node_names_its_kernel_state_files_and_nothing_else_counts() {
        let d = Dir::new("sim");
        for f in [".reservations", "lwkprocesses", "lwk_config"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::write(
            d.path().join(SIM_MARKER),
            "# lwk-sim device\nkernel_state=.reservations lwkprocesses ../etc/passwd missing\n",
        )
        .unwrap();
        let rw: Vec<_> = facts(d.path())
            .binds
            .into_iter()
            .filter(|b| b.writable)
            .map(|b| b.container)
            .collect();
        assert_eq!(
            rw,
            [
                Path::new(MOS_SYSFS).join(".reservations"),
                Path::new(MOS_SYSFS).join("lwkprocesses")
            ]
        );
    }
}
