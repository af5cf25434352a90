//! The driver interface: one implementation per kernel (mckernel.rs, mos.rs).
//! Drivers run the site's tools by absolute path from the config and know nothing of
//! leases or containers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::doctor::Finding;
use crate::lwk::rewrite::{BindFact, DeviceFact, DeviceKind};
use crate::lwk::{mckernel, mos, LwkKind};

/// How long a teardown waits for killed LWK processes to finish exiting (a rank with a
/// large memory image takes a while to free it before its files are closed).
pub const EXIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("LWK tool {path} (config key `{key}`) cannot be run: {source}; install it or fix `{key}` in the lwk-runc config")]
    MissingTool {
        path: PathBuf,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("LWK tool {path} (config key `{key}`) did not finish within {secs} s and was killed with what it started; `lwk-runc doctor` shows the node, and `tool_timeout_secs` in the lwk-runc config sets the bound")]
    ToolHung {
        path: PathBuf,
        key: String,
        secs: u64,
    },
    #[error("{kind}: `{cmd}` failed ({status}): {output}")]
    ToolFailed {
        kind: LwkKind,
        cmd: String,
        status: String,
        output: String,
    },
    #[error("{kind} failed to boot: instance status {status}. Last kernel messages (ihkosctl kmsg):\n{kmsg}\nNothing is left reserved; check the boot profile in the lwk-runc config and the node's LWK health")]
    BootFailed {
        kind: LwkKind,
        status: String,
        kmsg: String,
    },
    #[error("{kind} did not reach RUNNING within {secs} s (last status {status}). Last kernel messages:\n{kmsg}\nNothing is left reserved; raise boot_timeout_secs or check the node")]
    BootTimeout {
        kind: LwkKind,
        secs: u64,
        status: String,
        kmsg: String,
    },
    #[error("{kind}: {path} does not exist, so the kernel modules are not loaded; load them (ihk.ko, ihk-smp, mcctrl.ko) or use boot_mode = \"script\"")]
    NoModules { kind: LwkKind, path: PathBuf },
    #[error("{kind} is configured with boot_mode = \"external\" but is not running (status: {status}); the scheduler must boot it before containers ask for it")]
    ExternalNotRunning { kind: LwkKind, status: String },
    #[error("{kind} is in use by other containers but not RUNNING (status: {status}); `lwk-runc lwk status` shows them, `lwk-runc lwk gc` clears dead ones")]
    NotRunning { kind: LwkKind, status: String },
    #[error("{kind}: inspecting {path}: {source}")]
    Inspect {
        kind: LwkKind,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Device, mount and visibility facts a container of this LWK needs.
#[derive(Debug, Default, Clone)]
pub struct ContainerFacts {
    pub devices: Vec<DeviceFact>,
    pub binds: Vec<BindFact>,
    pub tmpfs: Vec<PathBuf>,
    pub unmask: Vec<String>,
    /// `personality(2)` values the launcher sets (see rewrite.rs).
    pub personalities: Vec<u64>,
}

pub trait Driver {
    fn kind(&self) -> LwkKind;
    /// Boot (never called for boot_mode external) and wait until RUNNING.
    fn bring_up(&self) -> Result<(), DriverError>;
    /// The instance's status word, None if there is no instance.
    fn status(&self) -> Result<Option<String>, DriverError> {
        self.probe()?.finish()
    }
    /// Start reading the status; a driver whose status needs a tool run returns it
    /// still running, so the caller can overlap it with other work.
    fn probe(&self) -> Result<Probe, DriverError>;
    fn is_running(&self) -> Result<bool, DriverError> {
        Ok(self.status()?.as_deref() == Some("RUNNING"))
    }
    /// Shut down, destroy, release CPUs and memory; tolerates any partial state.
    fn tear_down(&self) -> Result<(), DriverError>;
    /// The host launcher and the config key naming it.
    fn launcher(&self) -> (&Path, &'static str);
    /// Launcher arguments before the container's options, and after them.
    fn launcher_args(&self) -> (Vec<String>, Vec<String>);
    fn container_facts(&self) -> Result<ContainerFacts, DriverError>;
    /// Launcher options that give each of `ppn` ranks sharing a parent its share of the
    /// LWK (`conexec`).
    fn rank_group_args(&self, ppn: u32) -> Vec<String>;
    /// Whether launchers are keyed by namespace-local pid (needs a node-unique pid).
    fn needs_pid_slot(&self) -> bool;
    /// Whether containers get a device on which they must not issue the LWK's
    /// management requests (see boundary.rs).
    fn fences_devices(&self) -> bool;
    /// (CPUs, memory) as configured or reported, for `lwk status`.
    fn resources(&self) -> (String, String);
    /// `doctor`: this kernel's tools, devices, modules and build as the node has them.
    /// Read-only: stats, reads and the tools' query actions.
    fn diagnose(&self) -> Vec<Finding>;
    /// What is reserved for the LWK outside any instance's own accounting ("CPUs 2-3,
    /// memory 512M@0"), None when nothing; for `doctor` to spot a half-finished boot.
    fn reserved(&self) -> Result<Option<String>, DriverError>;
}

/// How long one tool may run: `tool_timeout_secs`, set by [`for_kind`], through which
/// every tool this process runs is reached.
static TOOL_TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(300);

pub fn for_kind(cfg: &Config, kind: LwkKind) -> Box<dyn Driver + '_> {
    TOOL_TIMEOUT_SECS.store(cfg.tool_timeout_secs, std::sync::atomic::Ordering::Relaxed);
    match kind {
        LwkKind::McKernel => Box::new(mckernel::McKernel::new(&cfg.mckernel)),
        LwkKind::Mos => Box::new(mos::Mos::new(&cfg.mos)),
    }
}

pub struct ToolOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn text(&self) -> String {
        let s = format!("{} {}", self.stdout.trim(), self.stderr.trim());
        s.trim().to_string()
    }
}

/// Start a tool with its output captured, in a process group of its own (so that a
/// tool that hangs is killed with whatever it started). Spawn failure (missing, not
/// executable) names the config key.
pub fn spawn(tool: &Path, key: &str, args: &[String]) -> Result<Child, DriverError> {
    use std::os::unix::process::CommandExt;
    tracing::debug!(tool = %tool.display(), ?args, "running LWK tool");
    Command::new(tool)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DriverError::MissingTool {
            path: tool.to_path_buf(),
            key: key.into(),
            source,
        })
}

/// Wait for a tool started by [`spawn`] and collect what it printed; one that runs
/// past `tool_timeout_secs` is killed with its process group, and the call fails.
pub fn collect(child: Child, tool: &Path, key: &str) -> Result<ToolOutput, DriverError> {
    let secs = TOOL_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed);
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let waited = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(w) => w,
        Err(_) => {
            // SAFETY: kill(2) of the process group spawn() made for this tool.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            // A descendant that left the group may keep the pipes open: do not wait on it.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            tracing::error!(tool = %tool.display(), secs, "LWK tool hung; killed");
            return Err(DriverError::ToolHung {
                path: tool.to_path_buf(),
                key: key.into(),
                secs,
            });
        }
    };
    let out = waited.map_err(|source| DriverError::MissingTool {
        path: tool.to_path_buf(),
        key: key.into(),
        source,
    })?;
    Ok(ToolOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run a tool to completion.
pub fn run(tool: &Path, key: &str, args: &[String]) -> Result<ToolOutput, DriverError> {
    collect(spawn(tool, key, args)?, tool, key)
}

/// `o` as the result of a tool that must exit 0.
pub fn ensure_ok(
    kind: LwkKind,
    tool: &Path,
    args: &[String],
    o: ToolOutput,
) -> Result<ToolOutput, DriverError> {
    if o.code == Some(0) {
        Ok(o)
    } else {
        Err(DriverError::ToolFailed {
            kind,
            cmd: format!("{} {}", tool.display(), args.join(" ")),
            status: o
                .code
                .map_or("killed by a signal".into(), |c| format!("exit {c}")),
            output: o.text(),
        })
    }
}

/// Run a tool that must exit 0.
pub fn run_ok(
    kind: LwkKind,
    tool: &Path,
    key: &str,
    args: &[String],
) -> Result<ToolOutput, DriverError> {
    ensure_ok(kind, tool, args, run(tool, key, args)?)
}

/// A status query that may still be running: see [`Driver::probe`].
#[derive(Debug)]
pub enum Probe {
    Known(Option<String>),
    Running {
        kind: LwkKind,
        child: Child,
        tool: PathBuf,
        key: &'static str,
        args: Vec<String>,
    },
}

impl Probe {
    /// The instance's status word (None: no instance), waiting for the tool if needed.
    pub fn finish(self) -> Result<Option<String>, DriverError> {
        match self {
            Probe::Known(s) => Ok(s),
            Probe::Running {
                kind,
                child,
                tool,
                key,
                args,
            } => {
                let o = ensure_ok(kind, &tool, &args, collect(child, &tool, key)?)?;
                Ok(Some(o.stdout.trim().to_string()))
            }
        }
    }
}

pub fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Poll `status` until RUNNING; PANIC/HUNGUP are fatal at once.
pub fn wait_running(
    d: &dyn Driver,
    timeout_secs: u64,
    kmsg: &dyn Fn() -> String,
) -> Result<(), DriverError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut delay = Duration::from_millis(5);
    loop {
        let st = d.status()?.unwrap_or_else(|| "no instance".into());
        match st.as_str() {
            "RUNNING" => return Ok(()),
            "PANIC" | "HUNGUP" => {
                return Err(DriverError::BootFailed {
                    kind: d.kind(),
                    status: st,
                    kmsg: kmsg(),
                })
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DriverError::BootTimeout {
                kind: d.kind(),
                secs: timeout_secs,
                status: st,
                kmsg: kmsg(),
            });
        }
        std::thread::sleep(delay);
        // Capped low: the whole job waits for this poll, and a 100 ms cap found a
        // 200 ms boot ~90 ms late. A status query is one cheap tool call (an ioctl on
        // real IHK), and only the booting process polls.
        delay = (delay * 2).min(Duration::from_millis(25));
    }
}

/// A char device gets its own node in the container; anything else (the simulator's
/// regular files) is bind-mounted.
pub fn device_fact(
    kind: LwkKind,
    host: &Path,
    container: &Path,
) -> Result<DeviceFact, DriverError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host).map_err(|source| DriverError::Inspect {
        kind,
        path: host.to_path_buf(),
        source,
    })?;
    let dk = if md.file_type().is_char_device() {
        let rdev = md.rdev();
        DeviceKind::Char {
            major: i64::from(libc::major(rdev)),
            minor: i64::from(libc::minor(rdev)),
        }
    } else {
        DeviceKind::File
    };
    Ok(DeviceFact {
        host: host.to_path_buf(),
        container: container.to_path_buf(),
        kind: dk,
    })
}
