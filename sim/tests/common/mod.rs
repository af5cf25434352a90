//! Test harness: each test gets a private LWK_SIM_ROOT and runs the installed tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Tools installed once per test binary with `lwk-sim install --prefix`.
pub fn prefix() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        // Under the target dir, one per test binary: reinstalled, never left in /tmp.
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lwk-sim-prefix-{}", env!("CARGO_CRATE_NAME")));
        let st = Command::new(env!("CARGO_BIN_EXE_lwk-sim"))
            .args(["install", "--prefix"])
            .arg(&p)
            .status()
            .expect("run lwk-sim install");
        assert!(st.success(), "lwk-sim install failed");
        p
    })
}

pub struct Sim {
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
}

pub struct Out {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        use std::os::unix::process::ExitStatusExt;
        Out {
            code: o.status.code(),
            signal: o.status.signal(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Sim {
    pub fn new() -> Sim {
        let root = std::env::temp_dir().join(format!(
            "lwk-sim-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create root");
        Sim {
            root,
            env: vec![
                ("LWK_SIM_BOOT_DELAY_MS".into(), "100".into()),
                ("LWK_SIM_SCRIPT_SLEEP_MS".into(), "10".into()),
            ],
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Sim {
        self.env.retain(|(kk, _)| kk != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        prefix().join("bin").join(tool)
    }

    pub fn cmd(&self, tool: &str) -> Command {
        self.sys(self.bin(tool))
    }

    /// Any program, with this simulator's environment.
    pub fn sys(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env("LWK_SIM_ROOT", &self.root);
        c.env_remove("LWK_SIM_FAULTS");
        c.env_remove("MPI_LOCALRANKID");
        c.env_remove("MPI_LOCALNRANKS");
        c.env_remove("YOD_OPTIONS");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let path = format!(
            "{}:{}",
            prefix().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path);
        c
    }

    pub fn run(&self, tool: &str, args: &[&str]) -> Out {
        self.cmd(tool)
            .args(args)
            .output()
            .expect("spawn tool")
            .into()
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert_eq!(
            o.code,
            Some(0),
            "{} {:?} failed: stdout={:?} stderr={:?}",
            tool,
            args,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    pub fn spawn(&self, tool: &str, args: &[&str]) -> Child {
        self.cmd(tool)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tool")
    }

    pub fn status(&self) -> String {
        self.ok("ihkosctl", &["0", "get", "status"])
            .trim()
            .to_string()
    }

    /// Poll `get status` until it prints `want` (or panic after `ms`).
    pub fn wait_status(&self, want: &str, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        loop {
            let s = self.status();
            if s == want {
                return;
            }
            assert!(
                Instant::now() < end,
                "status stayed {} (wanted {})",
                s,
                want
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn image(&self) -> String {
        prefix()
            .join("smp-x86/kernel/mckernel.img")
            .display()
            .to_string()
    }

    /// modprobe, reserve, create, assign, load, kargs, boot; wait for RUNNING.
    pub fn boot(&self, cpus: &str, mem: &str) {
        self.ok("lwk-sim", &["modprobe"]);
        self.ok("ihkconfig", &["0", "reserve", "cpu", cpus]);
        self.ok("ihkconfig", &["0", "reserve", "mem", mem]);
        self.ok("ihkconfig", &["0", "create"]);
        self.ok("ihkosctl", &["0", "assign", "cpu", cpus]);
        self.ok("ihkosctl", &["0", "assign", "mem", mem]);
        self.ok("ihkosctl", &["0", "load", &self.image()]);
        self.ok("ihkosctl", &["0", "kargs", "hidos ksyslogd=0"]);
        self.ok("ihkosctl", &["0", "boot"]);
        self.wait_status("RUNNING", 5000);
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.root.join(rel), text).expect("write file under root");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// calls.log lines for `tool` whose args start with `args`.
    pub fn calls(&self, tool: &str, args: &str) -> usize {
        self.read("calls.log")
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                f.len() == 4 && f[1] == tool && f[2].starts_with(args)
            })
            .count()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Real CPU a simulated CPU is pinned to.
pub fn real_cpu(sim_cpu: u32) -> u32 {
    let n = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    sim_cpu % n
}

pub fn cpus_allowed(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
