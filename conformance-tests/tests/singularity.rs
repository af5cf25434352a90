//! SingularityCE 4 `--oci` through the shipped shim (`config/engines/singularity.conf`):
//! a directory holding lwk-runc under the name `runc`, first in SingularityCE's search
//! path. SingularityCE itself is not installable here (no Debian 12 package, and nothing
//! but the package registries can be reached), so the test drives the shim with the
//! command lines SingularityCE 4 issues (`internal/pkg/runtime/launcher/oci/
//! oci_runc_linux.go`): in the bundle directory, `runc --root DIR run -b BUNDLE
//! [--pid-file=FILE] ID` in the foreground with its stdio, and each signal it receives
//! proxied as `runc --root DIR kill ID SIGNUM`. `--systemd-cgroup` is left out: SingularityCE
//! drops it where systemd cannot manage cgroups, as here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lwk_conformance::*;

const WAIT: Duration = Duration::from_secs(20);
/// Where the shipped snippet puts the shim directory.
const SHIPPED_SHIM_DIR: &str = "/usr/local/lib/lwk-runc/oci";

/// The shipped `root search path` with the shim directory moved to `shim_dir`.
fn root_search_path(shim_dir: &Path) -> String {
    let conf = fs::read_to_string(workspace_root().join("config/engines/singularity.conf"))
        .expect("config/engines/singularity.conf");
    let line = conf
        .lines()
        .find_map(|l| l.strip_prefix("root search path ="))
        .expect("singularity.conf sets root search path");
    let path = line.trim();
    assert!(
        path.starts_with(SHIPPED_SHIM_DIR),
        "the shim directory must come first: {path}"
    );
    path.replacen(SHIPPED_SHIM_DIR, &s(shim_dir), 1)
}

/// What SingularityCE runs (`oci.Runtime()`): `crun` from the search path, else `runc`.
fn singularity_runtime(search_path: &str) -> Option<PathBuf> {
    ["crun", "runc"].iter().find_map(|name| {
        search_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

struct Singularity<'a> {
    ctx: &'a Ctx,
    w: &'a World,
    runtime: PathBuf,
}

impl Singularity<'_> {
    /// `RUNTIME --root DIR run -b BUNDLE [--pid-file=FILE] ID`, from the bundle directory,
    /// with the node's environment (SingularityCE hands the runtime its own).
    fn run_cmd(&self, bundle: &Path, pid_file: Option<&Path>, id: &str) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root")
            .arg(&self.ctx.root)
            .args(["run", "-b", &s(bundle)]);
        if let Some(p) = pid_file {
            c.arg(format!("--pid-file={}", s(p)));
        }
        c.arg(id)
            .current_dir(bundle)
            .envs(self.w.env())
            .stdin(Stdio::null());
        c
    }

    /// The signal proxy: `RUNTIME --root DIR kill ID SIGNUM`.
    fn kill(&self, id: &str, signum: i32) -> Out {
        let mut c = Command::new(&self.runtime);
        c.arg("--root")
            .arg(&self.ctx.root)
            .args(["kill", id, &signum.to_string()])
            .envs(self.w.env())
            .stdin(Stdio::null());
        self.ctx.run_cmd(c)
    }

    /// A foreground run of a container that prints `ready`, then waits for SIGTERM, which
    /// the proxy sends once `ready` is out; returns the run's output and exit code.
    fn run_and_proxy_sigterm(&self, bundle: &Path, id: &str) -> (String, Option<i32>) {
        let pid_file = self.ctx.path(&format!("{id}.pid"));
        let (o, e) = (
            self.ctx.path(&format!("{id}.out")),
            self.ctx.path(&format!("{id}.err")),
        );
        let mut c = self.run_cmd(bundle, Some(&pid_file), id);
        c.stdout(fs::File::create(&o).unwrap())
            .stderr(fs::File::create(&e).unwrap());
        let child = c.spawn().expect("spawn the runtime's run");
        wait_for(WAIT, "the container to print ready", || {
            fs::read_to_string(&o)
                .unwrap_or_default()
                .contains("ready")
                .then_some(())
        });
        // runc writes the pid file once the process runs, which may be after `ready`.
        let pid: i32 = wait_for(WAIT, "--pid-file= to be written", || {
            fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
        });
        assert!(pid_alive(pid), "the pid file names no living process");
        let k = self.kill(id, libc::SIGTERM);
        assert!(k.ok(), "kill {id} 15: {}", self.ctx.explain(&k));
        let st = wait_timeout(child, WAIT, "run after the proxied SIGTERM");
        let out = format!(
            "{}{}",
            fs::read_to_string(&o).unwrap_or_default(),
            fs::read_to_string(&e).unwrap_or_default()
        );
        (out, st.code())
    }
}

#[test]
fn singularity_oci_through_the_runc_shim() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let setup_calls = w.calls();

    // The shim as singularity.conf describes it, and SingularityCE's choice from it.
    let shim_dir = ctx.path("oci-bin");
    fs::create_dir_all(&shim_dir).unwrap();
    std::os::unix::fs::symlink(runtime_bin(), shim_dir.join("runc")).expect("shim link");
    // On a node with crun installed, singularity.conf says to link crun as well.
    let search = root_search_path(&shim_dir);
    if singularity_runtime(&search).is_some_and(|p| p.ends_with("crun")) {
        std::os::unix::fs::symlink(runtime_bin(), shim_dir.join("crun")).expect("shim link");
    }
    let runtime = singularity_runtime(&search).expect("SingularityCE would find no OCI runtime");
    assert_eq!(
        runtime.parent(),
        Some(shim_dir.as_path()),
        "SingularityCE would run {} (crun is taken before runc: link crun in the shim \
         directory too, as singularity.conf says)",
        runtime.display()
    );
    let sing = Singularity {
        ctx: &ctx,
        w: &w,
        runtime,
    };
    let version = Command::new(&sing.runtime)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        runtime_version(),
        "the shim is the runtime under test"
    );

    // `singularity run --oci`: output and exit code.
    let b = ctx.bundle(
        "plain",
        &base_config(&["sh", "-c", "echo from-the-shim; exit 3"]),
    );
    let id = ctx.id("sing");
    let out = ctx.run_cmd(sing.run_cmd(&b, None, &id));
    assert_eq!(out.code(), Some(3), "{}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "from-the-shim");

    // `singularity oci run --pid-file`, and a signal proxied to the container.
    let trap = "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done";
    let b = ctx.bundle("signal", &base_config(&["sh", "-c", trap]));
    let id = ctx.id("singsig");
    let (out, code) = sing.run_and_proxy_sigterm(&b, &id);
    assert_eq!(code, Some(7), "SIGTERM did not reach the trap: {out}");
    assert_eq!(
        w.calls(),
        setup_calls,
        "containers without an LWK called LWK tools"
    );

    if runtime_is_runc() {
        say("SKIPPED SingularityCE's OCI mode on the simulated LWK: runc has no LWK layer");
    } else {
        // `singularity run --oci --env LWK_KERNEL=mckernel`.
        let script =
            "grep Cpus_allowed_list /proc/self/status; tr '\\0' ' ' < /proc/$PPID/cmdline; \
                      echo; trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done";
        let mut cfg = base_config(&["sh", "-c", script]);
        cfg["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("LWK_KERNEL=mckernel".into());
        let b = ctx.bundle("lwk", &cfg);
        let id = ctx.id("singlwk");
        let (out, code) = sing.run_and_proxy_sigterm(&b, &id);
        assert!(
            out.contains("Cpus_allowed_list:\t1\n") && out.contains("mcexec"),
            "not run under mcexec on the LWK CPU: {out}"
        );
        assert_eq!(code, Some(7), "SIGTERM did not reach the workload: {out}");
        w.assert_booted_and_torn_down("mckernel", 1);
    }

    // run without --keep deletes the container: nothing is left for SingularityCE to clean.
    assert_eq!(
        ctx.root_entries(),
        Vec::<String>::new(),
        "left under --root"
    );
    w.assert_clean();
}
