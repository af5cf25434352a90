//! Helpers for the OCI conformance suite: run a runc-compatible binary the way
//! an engine does (containerd's shim, conmon, Slurm) and check what it does on
//! real namespaces.
//!
//! The runtime under test is `$OCI_RUNTIME`, default
//! `<workspace>/target/release/lwk-runc`. The suite must also pass against
//! Debian's runc (`OCI_RUNTIME=$(which runc)`), except the cases listed in
//! [`KNOWN_RUNC_DIFFERENCES`]: that keeps the tests honest about the OCI
//! contract rather than our own quirks.
//!
//! Every test builds its own busybox-static rootfs and uses its own `--root`,
//! so tests run in parallel; [`Ctx`] deletes (`delete --force`) every container
//! it created when dropped, pass or fail.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod containerd;

/// How long any single runtime command may take before the test fails.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The one place where runc 1.1.5 (Debian 12) is known to differ from the OCI
/// runtime-spec v1.3.0 contract this suite checks. A test named here is
/// skipped (with the reason printed) only when `--version` says runc.
pub const KNOWN_RUNC_DIFFERENCES: &[(&str, &str)] = &[
    (
        "hooks_poststart_runs_in_start",
        "runc 1.1.5 runs poststart hooks during `create` (status \"created\"), \
         not after the user process starts in `start` (status \"running\")",
    ),
    (
        "hooks_failing_poststart_stops_container",
        "runtime-spec 1.3 (PR #1262): a failing poststart makes `start` error and \
         stops the container; runc 1.1.5 runs poststart in `create`, so `create` \
         fails instead and `start` never sees it",
    ),
];

/// Fail loudly unless we are root: the suite needs namespaces, mounts and cgroups.
pub fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the OCI conformance suite must run as root (it creates namespaces, mounts and cgroups); \
         try: sudo -E cargo test -p lwk-conformance"
    );
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The runtime binary under test: `$OCI_RUNTIME` or the workspace's release build.
pub fn runtime_bin() -> PathBuf {
    match std::env::var_os("OCI_RUNTIME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/release/lwk-runc"),
    }
}

/// `<runtime> --version` output (cached). Panics with a clear message when the
/// binary is missing or broken, since nothing else can be tested then.
pub fn runtime_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let bin = runtime_bin();
        let out = Command::new(&bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the runtime under test {} ({e}); build it (cargo build --release) \
                     or set OCI_RUNTIME=/path/to/runtime",
                    bin.display()
                )
            });
        assert!(
            out.status.success(),
            "{} --version failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// True when the runtime under test reports itself as runc.
pub fn runtime_is_runc() -> bool {
    runtime_version()
        .lines()
        .next()
        .is_some_and(|l| l.trim_start().starts_with("runc version"))
}

/// Returns true (and says why) when `name` is a known runc difference and the
/// runtime under test is runc: the caller then returns early.
pub fn skip_if_known_difference(name: &str) -> bool {
    let Some((_, reason)) = KNOWN_RUNC_DIFFERENCES.iter().find(|(n, _)| *n == name) else {
        panic!("{name} is not listed in KNOWN_RUNC_DIFFERENCES");
    };
    if runtime_is_runc() {
        say(&format!("SKIPPED {name}: known runc difference: {reason}"));
        true
    } else {
        false
    }
}

/// Print a line straight to fd 2: libtest captures print!/eprint! of passing tests,
/// and a skip must be visible in the normal `cargo test` output.
pub fn say(line: &str) {
    let mut stderr = std::mem::ManuallyDrop::new(
        // SAFETY: fd 2 is open for the whole test run; ManuallyDrop keeps it open.
        unsafe { File::from_raw_fd(2) },
    );
    let _ = stderr.write_all(format!("{line}\n").as_bytes());
}

/// True when the tests run in CI (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok(v) if !v.is_empty() && v != "false" && v != "0")
}

/// The one way an engine test does without its engine: outside CI it prints
/// `SKIPPED <test>: <why>` and the caller returns; under `CI=true` the test fails with
/// the same words, since CI installs every engine and must never pass by skipping.
pub fn skip_engine_test(test: &str, why: &str) {
    assert!(!in_ci(), "{test} cannot run under CI=true: {why}");
    say(&format!("SKIPPED {test}: {why}"));
}

/// An engine test's tool (`name` on `PATH`, else in /usr/sbin or /usr/bin), or `None`
/// once [`skip_engine_test`] has said why (failing under CI). `package` is the Debian
/// package that provides it (scripts/setup.sh installs it).
pub fn engine_tool(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let found = find_in_path(name).or_else(|| {
        ["/usr/sbin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_engine_test(
            test,
            &format!(
                "{name} is not installed (apt-get install {package}, or bash scripts/setup.sh)"
            ),
        );
    }
    found
}

/// [`engine_tool`] for every tool of a test: all of them, or `None` once one is missing.
pub fn engine_tools<const N: usize>(test: &str, tools: [(&str, &str); N]) -> Option<[PathBuf; N]> {
    let mut out = Vec::with_capacity(N);
    for (name, package) in tools {
        out.push(engine_tool(test, name, package)?);
    }
    out.try_into().ok()
}

/// `LWK_SKIP_ENGINES=docker,podman,...` skips those engine tests outside CI (and fails
/// them under CI, like any other skip).
pub fn engine_skipped_by_user(test: &str, engine: &str) -> bool {
    let listed = std::env::var("LWK_SKIP_ENGINES").unwrap_or_default();
    if listed.split(',').any(|e| e.trim() == engine) {
        skip_engine_test(test, &format!("LWK_SKIP_ENGINES names {engine}"));
        return true;
    }
    false
}

/// An exclusive `flock` on `/tmp/lwk-conformance-<name>.lock`, held until the file is
/// dropped: serialises tests across test binaries and concurrent `cargo test` runs.
pub fn cross_process_lock(name: &str) -> File {
    let path = format!("/tmp/lwk-conformance-{name}.lock");
    let f = File::create(&path).unwrap_or_else(|e| panic!("lock file {path}: {e}"));
    // SAFETY: flock on an fd we own; released when the File drops.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {path}: {}", std::io::Error::last_os_error());
    f
}

/// The lock every test holds while it writes machine-global paths (`/usr/bin/lwk-runc`,
/// `/etc/lwk-runc`, `/etc/containers`, `/run/lwk-sim`, ...), until it has put them back
/// as they were, pass or fail. No test may rely on those paths without holding it.
pub fn machine_lock() -> File {
    cross_process_lock("machine")
}

/// `podman` with its own storage, run dir and tmpdir under `state` (nothing of the
/// machine's podman touched), vfs, cgroupfs and file events: how every test runs it.
pub fn private_podman(podman: &Path, state: &Path) -> Command {
    private_podman_with(podman, state, "vfs")
}

/// [`private_podman`] with another storage driver (`overlay`: layer diffs with opaque
/// whiteouts, as podman makes them on a real host).
pub fn private_podman_with(podman: &Path, state: &Path, driver: &str) -> Command {
    let mut c = Command::new(podman);
    c.arg("--root")
        .arg(state.join("storage"))
        .arg("--runroot")
        .arg(state.join("run"))
        .arg("--tmpdir")
        .arg(state.join("tmp"))
        .args(["--storage-driver", driver, "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file"])
        .stdin(Stdio::null());
    c
}

/// `podman run --rm --network none` with `--ulimit` values any runtime may set: podman's
/// defaults (1048576 open files) need CAP_SYS_RESOURCE, which sandboxes drop, and
/// conmon may run under lower limits than ours; modest values (runc spec's 1024 files)
/// under our hard limit always work.
pub fn podman_run_args() -> Vec<String> {
    let ulimit = |name: &str, resource: libc::__rlimit_resource_t, want: u64| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
        let v = want.min(r.rlim_max);
        format!("{name}={v}:{v}")
    };
    let mut args: Vec<String> = ["run", "--rm", "--network", "none"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--ulimit".into(),
        ulimit("nofile", libc::RLIMIT_NOFILE, 1024),
        "--ulimit".into(),
        ulimit("nproc", libc::RLIMIT_NPROC, 4096),
    ]);
    args
}

/// A container id unique across parallel tests and test binaries.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "lwkc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn busybox_applets() -> &'static [String] {
    static L: OnceLock<Vec<String>> = OnceLock::new();
    L.get_or_init(|| {
        let out = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("/bin/busybox is needed (apt-get install busybox-static)");
        assert!(out.status.success(), "busybox --list failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && l != "busybox" && !l.contains('/'))
            .collect()
    })
}

/// Assemble a busybox-static rootfs at `dir`: /bin/busybox, one symlink per
/// applet, minimal /etc/passwd and /etc/group, and the usual empty dirs.
pub fn build_rootfs(dir: &Path) {
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "proc",
        "sys",
        "dev",
        "home/user",
    ] {
        fs::create_dir_all(dir.join(d)).expect("create rootfs dir");
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy /bin/busybox");
    for applet in busybox_applets() {
        symlink("busybox", dir.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A minimal runtime-spec config running `args` (no terminal, writable rootfs,
/// pid/net/ipc/uts/mount namespaces, one annotation to check in `state`).
pub fn base_config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "lwk-conformance",
        "annotations": {"org.lwk.conformance.test": "yes"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ]
        }
    })
}

/// Remove the pid namespace from a config (so the process is not an init and
/// `kill --all` has something to do that killing the init would not).
pub fn without_pid_ns(mut cfg: Value) -> Value {
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "pid");
    }
    cfg
}

/// The result of one runtime command.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Files the command's (and an inheriting container's) stdout/stderr went to.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// Re-read stdout (a container that inherited it may have written since).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }
}

/// One test's private world: a temp dir holding `--root`, the `--log` file and
/// bundles. Dropping it force-deletes every container it created.
pub struct Ctx {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub log: PathBuf,
    ids: std::sync::Mutex<Vec<String>>,
    n: AtomicUsize,
}

impl Ctx {
    pub fn new() -> Ctx {
        require_root();
        let _ = runtime_version();
        let dir = tempfile::Builder::new()
            .prefix("lwk-conf-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("state");
        let log = dir.path().join("runtime.log");
        Ctx {
            root,
            log,
            dir,
            ids: Default::default(),
            n: AtomicUsize::new(0),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A new container id, force-deleted when the context drops.
    pub fn id(&self, tag: &str) -> String {
        let id = unique_id(tag);
        self.track(&id);
        id
    }

    pub fn track(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_string());
    }

    /// Create a bundle directory `name` with a fresh rootfs and `cfg` as
    /// config.json; a unique cgroupsPath is added as engines do.
    pub fn bundle(&self, name: &str, cfg: &Value) -> PathBuf {
        let b = self.dir.path().join(name);
        build_rootfs(&b.join("rootfs"));
        let mut cfg = cfg.clone();
        if cfg["linux"].is_object() && cfg["linux"].get("cgroupsPath").is_none() {
            cfg["linux"]["cgroupsPath"] = json!(format!("/lwk-conformance/{}", unique_id(name)));
        }
        write_json(&b.join("config.json"), &cfg);
        b
    }

    /// `<runtime> --root R --log L --log-format json ARGS`, as containerd runs it.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(&runtime_bin(), args)
    }

    /// [`Ctx::cmd`] with another build of the runtime (`bin`), e.g. the failpoints one.
    pub fn cmd_of(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn out_files(&self) -> (PathBuf, PathBuf) {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        (
            self.path(&format!("cmd{n}.stdout")),
            self.path(&format!("cmd{n}.stderr")),
        )
    }

    /// Run a prepared command with stdout/stderr to files (a container may
    /// inherit them and outlive the command, so pipes would hang), bounded by
    /// [`CMD_TIMEOUT`].
    pub fn run_cmd(&self, c: Command) -> Out {
        let (o, e) = self.out_files();
        run_into_files(c, o, e, CMD_TIMEOUT)
    }

    pub fn rt(&self, args: &[&str]) -> Out {
        self.run_cmd(self.cmd(args))
    }

    /// Run and assert success, showing stderr and the runtime log otherwise.
    pub fn rt_ok(&self, args: &[&str]) -> Out {
        let out = self.rt(args);
        assert!(out.ok(), "{args:?} failed: {}", self.explain(&out));
        out
    }

    /// Run and assert failure.
    pub fn rt_fail(&self, args: &[&str]) -> Out {
        let out = self.rt(args);
        assert!(
            !out.ok(),
            "{args:?} unexpectedly succeeded: {}",
            self.explain(&out)
        );
        out
    }

    /// Start a runtime command in the background with output to files.
    pub fn spawn(&self, args: &[&str]) -> (Child, PathBuf, PathBuf) {
        let (o, e) = self.out_files();
        let child = self
            .cmd(args)
            .stdout(File::create(&o).expect("stdout file"))
            .stderr(File::create(&e).expect("stderr file"))
            .spawn()
            .expect("spawn runtime");
        (child, o, e)
    }

    /// Start a prepared command in the background with output to files.
    pub fn spawn_with(&self, mut c: Command) -> (Child, PathBuf, PathBuf) {
        let (o, e) = self.out_files();
        let child = c
            .stdout(File::create(&o).expect("stdout file"))
            .stderr(File::create(&e).expect("stderr file"))
            .spawn()
            .expect("spawn runtime");
        (child, o, e)
    }

    pub fn explain(&self, out: &Out) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- runtime log\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log_text()
        )
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the runtime said about a failure: its stderr and its log, which is
    /// what Docker, podman or Slurm would show the user.
    pub fn said(&self, out: &Out) -> String {
        format!("{}\n{}", out.stderr, self.log_text())
    }

    /// Asserts that what the runtime said (`said`) names every one of `wants`.
    pub fn assert_says(&self, out: &Out, wants: &[&str]) {
        let text = self.said(out);
        for w in wants {
            assert!(text.contains(w), "the error does not say {w:?}:\n{text}");
        }
    }

    /// `create --bundle B ID`, asserting success.
    pub fn create(&self, bundle: &Path, id: &str) -> Out {
        self.rt_ok(&["create", "--bundle", &s(bundle), id])
    }

    /// `state ID` parsed as JSON, asserting success.
    pub fn state(&self, id: &str) -> Value {
        let out = self.rt_ok(&["state", id]);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state output is not JSON ({e}): {}", out.stdout))
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Poll `state` until status == want, or panic after `timeout`.
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let st = self.status(id);
            if st == want {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "container {id} still {st:?} after {timeout:?}, wanted {want:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container init's host pid from `state`.
    pub fn pid(&self, id: &str) -> i32 {
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {st}")) as i32
    }

    /// Names of the entries under `--root` (what a failed command left behind).
    pub fn root_entries(&self) -> Vec<String> {
        match fs::read_dir(&self.root) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids.iter() {
            let _ = self
                .cmd(&["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Run `c` with its stdout and stderr going to the files `o` and `e` (not pipes: what
/// it starts may inherit them and outlive it), bounded by `timeout`.
pub fn run_into_files(mut c: Command, o: PathBuf, e: PathBuf, timeout: Duration) -> Out {
    c.stdout(File::create(&o).expect("stdout file"))
        .stderr(File::create(&e).expect("stderr file"));
    let child = c.spawn().unwrap_or_else(|err| panic!("spawn {c:?}: {err}"));
    let status = wait_timeout(child, timeout, &format!("{c:?}"));
    Out {
        status,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
        stdout_path: o,
        stderr_path: e,
    }
}

/// Wait for a child, killing it and panicking after `timeout`.
pub fn wait_timeout(mut child: Child, timeout: Duration, what: &str) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st,
            Ok(None) if t0.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// `name` in a directory of `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Path to &str for argument lists.
pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn write_json(path: &Path, v: &Value) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).expect("create dir");
    }
    fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write json");
}

/// Write an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).expect("create dir");
    }
    let mut f = File::create(path).expect("create script");
    f.write_all(body.as_bytes()).expect("write script");
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Poll until `f` returns Some, or panic with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised comm, which may itself hold ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// `readlink /proc/<pid>/ns/<ns>`.
pub fn ns_of(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| s(&p))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
}

/// The receiving end of `--console-socket`: a unix socket on which the runtime
/// sends the pty master as SCM_RIGHTS, as containerd's shim and conmon do.
pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> ConsoleSocket {
        let listener = UnixListener::bind(path).expect("bind console socket");
        listener
            .set_nonblocking(true)
            .expect("nonblocking console socket");
        ConsoleSocket {
            listener,
            path: path.to_path_buf(),
        }
    }

    /// Accept one connection and receive the pty master fd it carries.
    pub fn recv_master(&self, timeout: Duration) -> OwnedFd {
        let stream = wait_for(
            timeout,
            "runtime to connect to --console-socket",
            || match self.listener.accept() {
                Ok((st, _)) => Some(st),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("accept on console socket: {e}"),
            },
        );
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(timeout))
            .expect("stream timeout");
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg on console socket");
        for c in msg.cmsgs().expect("cmsgs") {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us; nobody else owns it.
                    return unsafe { OwnedFd::from_raw_fd(fd) };
                }
            }
        }
        panic!("console socket message carried no SCM_RIGHTS fd");
    }
}

/// Read everything from a pty master until the slave side closes (EIO) or
/// `timeout` passes.
pub fn read_pty(master: &OwnedFd, timeout: Duration) -> String {
    let fd = master.as_raw_fd();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < timeout {
        // SAFETY: reading into a local buffer of the stated length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
            continue;
        }
        if n == 0 {
            break;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => std::thread::sleep(Duration::from_millis(10)),
            _ => break, // EIO: every slave fd is closed
        }
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

/// Make `file` the child's fd 3 (for `--preserve-fds 1`). Keep `file` open
/// until the command has been spawned.
pub fn pass_fd3(cmd: &mut Command, file: &File) {
    use std::os::unix::process::CommandExt;
    let src = file.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if src == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(src, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where `lwk-sim install --prefix` put the simulator: `$LWK_SIM_PREFIX`, default
/// `/opt/lwk-sim`. A second prefix lets a simulator under development be tested beside
/// the installed one.
pub fn sim_prefix() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| match std::env::var("LWK_SIM_PREFIX") {
        Ok(p) if !p.is_empty() => p,
        _ => "/opt/lwk-sim".into(),
    })
}

/// The simulated LWK tools' directory, `<prefix>/bin`.
pub fn sim_bin() -> String {
    format!("{}/bin", sim_prefix())
}

/// How a simulated node is set up.
#[derive(Default)]
pub struct WorldOpts<'a> {
    /// Top-level lines of the lwk-runc config.
    pub top: &'a str,
    /// Extra lines of its `[mckernel]` table (e.g. `linger_secs = 1`).
    pub mckernel: &'a str,
    /// Leave the simulated kernel modules unloaded (boot_mode "script" loads them).
    pub no_modprobe: bool,
    /// McKernel's CPUs (default "1").
    pub cpus: Option<&'a str>,
    /// Extra lines of its `[mos]` table (e.g. a `partition`).
    pub mos: &'a str,
    /// The simulated node's CPU count (`$LWK_SIM_ROOT/topology`; default: the host's).
    pub node_cpus: Option<u32>,
}

/// A private simulated LWK node (`LWK_SIM_ROOT`), lease dir and lwk-runc config under
/// one directory, so tests (and a private dockerd) never share an LWK.
pub struct World {
    pub sim: PathBuf,
    pub config: PathBuf,
    pub leases: PathBuf,
}

impl World {
    pub fn new(ctx: &Ctx, top: &str) -> World {
        World::at(
            ctx.dir.path(),
            &WorldOpts {
                top,
                ..Default::default()
            },
        )
    }

    pub fn with(ctx: &Ctx, opts: &WorldOpts) -> World {
        World::at(ctx.dir.path(), opts)
    }

    pub fn at(dir: &Path, o: &WorldOpts) -> World {
        let sim_bin = sim_bin();
        assert!(
            Path::new(&sim_bin).join("lwk-sim").exists(),
            "install the simulator first: lwk-sim install --prefix {}",
            sim_prefix()
        );
        let sim = dir.join("sim");
        fs::create_dir_all(&sim).unwrap();
        if let Some(n) = o.node_cpus {
            fs::write(sim.join("topology"), format!("cpus={n}\n")).unwrap();
        }
        if !o.no_modprobe {
            let st = Command::new(format!("{sim_bin}/lwk-sim"))
                .arg("modprobe")
                .env("LWK_SIM_ROOT", &sim)
                .status()
                .unwrap();
            assert!(st.success(), "lwk-sim modprobe failed");
        }
        let leases = dir.join("leases");
        let config = dir.join("lwk.toml");
        fs::write(
            &config,
            format!(
                r#"lease_dir = "{l}"
{top}
[mckernel]
enabled = true
ihkconfig = "{SIM}/ihkconfig"
ihkosctl = "{SIM}/ihkosctl"
mcexec = "{SIM}/mcexec"
mcreboot = "{SIM}/mcreboot.sh"
mcstop = "{SIM}/mcstop+release.sh"
dev_dir = "{s}/dev"
cpus = "{cpus}"
memory = "64M@0"
image = "{p}/smp-x86/kernel/mckernel.img"
boot_timeout_secs = 20
{mck}

[mos]
enabled = true
lwkctl = "{SIM}/lwkctl"
yod = "{SIM}/yod"
sysfs = "{s}/sys/kernel/mOS"
{mos}
"#,
                l = leases.display(),
                s = sim.display(),
                SIM = sim_bin,
                p = sim_prefix(),
                top = o.top,
                mck = o.mckernel,
                cpus = o.cpus.unwrap_or("1"),
                mos = o.mos,
            ),
        )
        .unwrap();
        World {
            sim,
            config,
            leases,
        }
    }

    /// The environment the runtime needs to find this node.
    pub fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("LWK_SIM_ROOT", self.sim.clone()),
            ("LWK_RUNC_CONFIG", self.config.clone()),
        ]
    }

    pub fn cmd(&self, ctx: &Ctx, args: &[&str]) -> Command {
        let mut c = ctx.cmd(args);
        c.envs(self.env());
        c
    }

    pub fn rt(&self, ctx: &Ctx, args: &[&str]) -> Out {
        ctx.run_cmd(self.cmd(ctx, args))
    }

    /// [`World::rt`], asserting success (showing stderr and the runtime log otherwise).
    pub fn rt_ok(&self, ctx: &Ctx, args: &[&str]) -> Out {
        let out = self.rt(ctx, args);
        assert!(out.ok(), "{args:?} failed: {}", ctx.explain(&out));
        out
    }

    /// A simulated tool (`ihkosctl`, ...) run against this node: its stdout, trimmed.
    pub fn tool(&self, name: &str, args: &[&str]) -> String {
        let o = Command::new(format!("{}/{name}", sim_bin()))
            .args(args)
            .env("LWK_SIM_ROOT", &self.sim)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn calls(&self) -> String {
        fs::read_to_string(self.sim.join("calls.log")).unwrap_or_default()
    }

    pub fn count(&self, what: &str) -> usize {
        self.calls().lines().filter(|l| l.contains(what)).count()
    }

    /// Reserved CPUs + memory as the simulator reports them (empty = nothing).
    pub fn reserved(&self) -> String {
        let mos = fs::read_to_string(self.sim.join("sys/kernel/mOS/lwkcpus")).unwrap_or_default();
        format!(
            "{}{}{}",
            self.tool("ihkconfig", &["0", "query", "cpu"]),
            self.tool("ihkconfig", &["0", "query", "mem"]),
            mos.trim()
        )
    }

    pub fn leases(&self) -> usize {
        fs::read_dir(self.leases.join("leases"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The calls.log shows `boots` boots and as many teardowns of `kernel` ("mckernel" or
    /// "mos") so far, and nothing is left reserved or leased.
    pub fn assert_booted_and_torn_down(&self, kernel: &str, boots: usize) {
        let (up, down) = match kernel {
            "mos" => ("lwkctl\t-c", "lwkctl\t-d"),
            _ => ("\t0 boot\t", " destroy "),
        };
        assert_eq!(self.count(up), boots, "{kernel} boots: {}", self.calls());
        assert_eq!(
            self.count(down),
            boots,
            "{kernel} teardowns: {}",
            self.calls()
        );
        self.assert_clean();
    }

    /// The node after whatever a test did to it: nothing reserved, no instance or
    /// partition, no lease (so no pid slot), no container left under `ctx`'s root, no
    /// process of it (a container's, whose root is under `ctx`'s directory, or one run
    /// with this node's environment: the runtime, a tool, a watcher) and no mount under
    /// `ctx`'s directory. Processes are given a few seconds to finish going.
    pub fn assert_node_clean(&self, ctx: &Ctx) {
        self.assert_clean();
        assert!(
            !self.sim.join("dev/mcos0").exists(),
            "a McKernel instance is left: {}",
            self.calls()
        );
        let left: Vec<String> = ctx
            .root_entries()
            .into_iter()
            .filter(|e| !e.starts_with('@') && e != "conexec")
            .collect();
        assert!(left.is_empty(), "containers left under the root: {left:?}");
        let stray = || {
            let p = node_processes(ctx.dir.path(), &self.sim);
            p.is_empty().then_some(()).ok_or(p)
        };
        let t0 = Instant::now();
        while let Err(p) = stray() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "processes of this node are left: {p:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A lease directory on a file system of its own (a test's) is the test's mount.
        let mut mounts = mounts_under(ctx.dir.path());
        mounts.retain(|m| Path::new(m) != self.leases);
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    pub fn assert_clean(&self) {
        assert_eq!(
            self.reserved(),
            "",
            "something stays reserved; calls:\n{}",
            self.calls()
        );
        assert_eq!(self.leases(), 0, "a lease is left");
    }
}

/// A private dockerd: its config, data root, exec root, pid file and socket under `dir`
/// (keep it short: containerd's socket lives under the exec root), no networking of
/// its own, vfs storage, and containerd namespaces of its own should a system
/// containerd be running. `env` reaches the runtimes it starts.
pub fn private_dockerd(dockerd: &Path, dir: &Path, env: &[(&str, PathBuf)]) -> Command {
    let p = |s: &str| dir.join(s);
    let ns = format!("lwkconf{}", std::process::id());
    let mut c = Command::new(dockerd);
    c.arg("--config-file")
        .arg(p("daemon.json"))
        .arg("--data-root")
        .arg(p("data"))
        .arg("--exec-root")
        .arg(p("exec"))
        .arg("--pidfile")
        .arg(p("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", p("docker.sock").display()))
        .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
        .args(["--storage-driver", "vfs"])
        .args(["--containerd-namespace", &ns])
        .args(["--containerd-plugins-namespace", &format!("{ns}p")])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null());
    c
}

/// A rank's command line, as a launcher starts it: `<runtime> --root R --log L conexec
/// ARGS -- PROG`.
pub fn conexec_rank(ctx: &Ctx, args: &[&str], prog: &[&str]) -> Vec<String> {
    let mut v = vec![
        s(&runtime_bin()),
        "--root".into(),
        s(&ctx.root),
        "--log".into(),
        s(&ctx.log),
        "conexec".into(),
    ];
    v.extend(args.iter().map(|x| x.to_string()));
    v.push("--".into());
    v.extend(prog.iter().map(|x| x.to_string()));
    v
}

/// `mpirun --allow-run-as-root --oversubscribe -n N <rank...>` from the test's directory,
/// with the node's environment and `env` (which mpirun hands its local ranks).
pub fn mpirun(ctx: &Ctx, w: &World, n: usize, rank: &[String], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-n",
        &n.to_string(),
    ])
    .args(rank)
    .envs(w.env())
    .envs(env.iter().copied())
    .current_dir(ctx.dir.path())
    .stdin(Stdio::null());
    c
}

/// Start `c` with its stdout and stderr in the test's files `TAG.stdout`, `TAG.stderr`.
pub fn spawn_logged(ctx: &Ctx, mut c: Command, tag: &str) -> (Child, PathBuf, PathBuf) {
    let o = ctx.path(&format!("{tag}.stdout"));
    let e = ctx.path(&format!("{tag}.stderr"));
    c.stdout(File::create(&o).expect("stdout file"))
        .stderr(File::create(&e).expect("stderr file"));
    (c.spawn().expect("spawn"), o, e)
}

/// Stop a daemon this test started: SIGTERM, SIGKILL after `grace`, reaped.
pub fn stop_child(child: &mut Child, grace: Duration) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if t0.elapsed() > grace => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// SIGTERM `pid`, SIGKILL after `grace`.
pub fn terminate(pid: i32, grace: Duration) {
    // SAFETY: plain kill(2) on a pid the caller started or found under its own dir.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    while pid_alive(pid) && t0.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Pids of the live processes on this machine other than ours.
fn other_live_pids() -> impl Iterator<Item = i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(move |&pid| pid != me && pid_alive(pid))
}

/// Pids (other than ours) of live processes whose command line contains `needle`: a
/// private daemon's directory names its containerd and shims (`-address DIR/...`).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    other_live_pids()
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

/// Live processes (other than ours) that belong to a test's node: a container's (its
/// root is under `dir`) or one started with the node's `LWK_SIM_ROOT` (the runtime, an
/// LWK tool, a watcher), as "pid cmdline".
pub fn node_processes(dir: &Path, sim: &Path) -> Vec<String> {
    let env = format!("LWK_SIM_ROOT={}", s(sim));
    other_live_pids()
        .filter(|pid| {
            let in_dir =
                fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r.starts_with(dir));
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            in_dir || environ.split(|b| *b == 0).any(|v| v == env.as_bytes())
        })
        .map(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!("{pid} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// Mount points at or under `dir` in our mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = s(dir);
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// After a private daemon under `dir` was stopped, whatever it may have left: processes
/// whose command line names `dir` (its containerd, shims) are terminated, mounts under
/// `dir` detached (so the directory can be removed), and orphans reparented to us (a
/// subreaper) reaped.
pub fn stop_leftovers(dir: &Path) {
    for pid in processes_mentioning(&s(dir)) {
        terminate(pid, Duration::from_secs(5));
    }
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    // SAFETY: waitpid on any child; every Child handle of ours was already waited.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Make this process the subreaper of what it starts: containerd's shims daemonize, and
/// as orphans of this process (rather than of a pid 1 that may not reap) they can be
/// reaped by [`stop_leftovers`].
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Wait for a daemon this test started to answer: `probe` until it returns `Ok`, failing
/// with `log()` (the daemon's log) when `child` exits or `timeout` passes (the last
/// probe's `Err` says why).
pub fn wait_daemon_ready<T>(
    what: &str,
    child: Option<&Child>,
    log: impl Fn() -> String,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(child) = child {
            assert!(
                pid_alive(child.id() as i32),
                "{what} exited during start-up; its log:\n{}",
                log()
            );
        }
        let why = match probe() {
            Ok(v) => return v,
            Err(why) => why,
        };
        assert!(
            t0.elapsed() < timeout,
            "{what} not ready after {timeout:?} ({why}); its log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private simulated LWK node in a short directory under /tmp, for a daemon's runtime
/// (the daemon's own directory holds sockets that must stay short too). Keep the
/// directory until the daemon is gone.
pub fn private_node() -> (tempfile::TempDir, World) {
    let dir = tempfile::Builder::new()
        .prefix("lwkn-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let w = World::at(dir.path(), &WorldOpts::default());
    (dir, w)
}

/// Where [`mpi_image`] puts the program inside its rootfs.
pub const MPI_HELLO: &str = "/usr/local/bin/mpi_hello";

/// `conformance-tests/mpi/mpi_hello.c` built with mpicc, and a rootfs holding it with
/// Debian's Open MPI tree (`make-rootfs.sh`), once per test binary; its path inside
/// the rootfs is [`MPI_HELLO`].
pub fn mpi_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mpi = workspace_root().join("conformance-tests/mpi");
        let dir = workspace_root().join("target/mpi-image");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("mpi_hello");
        let mpicc = find_in_path("mpicc")
            .expect("mpicc is missing: install libopenmpi-dev and openmpi-bin (scripts/setup.sh)");
        let st = Command::new(mpicc)
            .args(["-O2", "-Wall", "-o"])
            .arg(&exe)
            .arg(mpi.join("mpi_hello.c"))
            .status()
            .unwrap();
        assert!(st.success(), "mpicc mpi_hello.c failed");
        let root = dir.join("rootfs");
        let st = Command::new("bash")
            .arg(mpi.join("make-rootfs.sh"))
            .arg(&root)
            .arg(&exe)
            .status()
            .unwrap();
        assert!(st.success(), "make-rootfs.sh failed");
        root
    })
}

/// The `key=value` fields of each `rank=` line `mpi_hello` printed, by rank.
pub fn mpi_ranks(stdout: &str) -> Vec<HashMap<String, String>> {
    let mut v: Vec<HashMap<String, String>> = stdout
        .lines()
        .filter(|l| l.starts_with("rank="))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    v.sort_by_key(|r| r["rank"].parse::<u32>().unwrap());
    v
}

/// Every entry under `dir`: path, type, mode, owner, size, mtime, link target, and the
/// content of small files.
pub fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let extra = if md.file_type().is_symlink() {
                s(&fs::read_link(&p).unwrap())
            } else if md.is_file() && md.len() < 65536 {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            out.push(format!(
                "{} {:o} {}:{} {} {}.{} {extra}",
                p.strip_prefix(dir).unwrap().display(),
                std::os::unix::fs::PermissionsExt::mode(&md.permissions()),
                std::os::unix::fs::MetadataExt::uid(&md),
                std::os::unix::fs::MetadataExt::gid(&md),
                md.len(),
                std::os::unix::fs::MetadataExt::mtime(&md),
                std::os::unix::fs::MetadataExt::mtime_nsec(&md),
            ));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
