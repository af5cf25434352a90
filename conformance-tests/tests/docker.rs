//! Docker end-to-end: a private dockerd with the runtime under test registered
//! as `lwk-runc` (pointing to `$OCI_RUNTIME`) by `lwk-runc setup-engine docker` in a
//! daemon.json that already holds a site's settings, driven with the docker CLI.
//!
//! One test function shares one daemon (starting dockerd is slow), and a file
//! lock keeps concurrent `cargo test` runs from starting two at once. The guard
//! stops only the dockerd it started, by pid, plus the containerd and shims
//! whose command line names its private directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lwk_conformance::*;
use serde_json::json;

const RUNTIME_NAME: &str = "lwk-runc";
const IMAGE: &str = "lwk-busybox:test";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const DOCKER_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The docker CLI: Debian's 20.10 client matches the daemon, so prefer it over
/// a newer client earlier on PATH.
fn docker_cli() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        return debian;
    }
    find_in_path("docker").expect("docker CLI not found (apt-get install docker.io)")
}

struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    sock: PathBuf,
    cli: PathBuf,
    n: std::cell::Cell<usize>,
}

struct DockerOut {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Daemon {
    /// `env` reaches the runtime: dockerd passes its environment to containerd, the
    /// shim and so the runtime (how a private simulated LWK node is named).
    fn start(dockerd: &Path, env: &[(&str, PathBuf)]) -> Daemon {
        // Short path: containerd's socket lives under the exec-root (108-byte limit).
        let dir = tempfile::Builder::new()
            .prefix("lwkd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let p = |s: &str| dir.path().join(s);
        let cfg = p("daemon.json");
        daemon_config(&cfg);
        let sock = p("docker.sock");
        let log = File::create(p("dockerd.log")).expect("dockerd log");
        let child = private_dockerd(dockerd, dir.path(), env)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", dockerd.display()));
        let d = Daemon {
            dir,
            child: Some(child),
            sock,
            cli: docker_cli(),
            n: Default::default(),
        };
        d.wait_ready();
        d
    }

    fn log(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_ready(&self) {
        wait_daemon_ready(
            "dockerd",
            self.child.as_ref(),
            || self.log(),
            READY_TIMEOUT,
            || {
                let out = self.try_docker(&["info", "--format", "{{json .Runtimes}}"]);
                if out.code != Some(0) {
                    return Err(format!("docker info: {}", out.stderr));
                }
                for rt in [RUNTIME_NAME, SITE_RUNTIME] {
                    assert!(
                        out.stdout.contains(&format!("\"{rt}\"")),
                        "dockerd is up but did not register runtime {rt}: {}",
                        out.stdout
                    );
                }
                Ok(())
            },
        )
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null());
        c
    }

    fn run_command(&self, mut c: Command) -> DockerOut {
        let n = self.n.get();
        self.n.set(n + 1);
        let o = self.dir.path().join(format!("c{n}.out"));
        let e = self.dir.path().join(format!("c{n}.err"));
        c.stdout(File::create(&o).unwrap())
            .stderr(File::create(&e).unwrap());
        let child = c.spawn().expect("spawn docker CLI");
        let st = wait_timeout(child, DOCKER_CMD_TIMEOUT, &format!("{c:?}"));
        DockerOut {
            code: st.code(),
            stdout: fs::read_to_string(&o).unwrap_or_default(),
            stderr: fs::read_to_string(&e).unwrap_or_default(),
        }
    }

    fn try_docker(&self, args: &[&str]) -> DockerOut {
        self.run_command(self.command(args))
    }

    fn docker(&self, args: &[&str]) -> DockerOut {
        let out = self.try_docker(args);
        assert_eq!(
            out.code,
            Some(0),
            "docker {args:?} failed\n--- stdout\n{}\n--- stderr\n{}\n--- dockerd log\n{}",
            out.stdout,
            out.stderr,
            self.log()
        );
        out
    }

    fn import_image(&self, rootfs: &Path) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tar");
        let mut c = self.command(&["import", "-", IMAGE]);
        c.stdin(tar.stdout.take().expect("tar stdout"));
        let out = self.run_command(c);
        let st = tar.wait().expect("wait tar");
        assert!(st.success(), "tar of the rootfs failed");
        assert_eq!(out.code, Some(0), "docker import: {}", out.stderr);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers first, so shims exit with them.
        let ids = self.try_docker(&["ps", "-aq"]).stdout;
        for id in ids.split_whitespace() {
            let _ = self.try_docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(20));
        }
        // containerd normally exits with dockerd; make sure of it.
        stop_leftovers(self.dir.path());
    }
}

/// A runtime and a setting the site had in daemon.json before lwk-runc came.
const SITE_RUNTIME: &str = "runc-debug";
const SITE_LABEL: &str = "lwk-conformance.site=1";

/// daemon.json as a site has it (a label, a runtime of its own), with the runtime under
/// test registered as an admin does it: `lwk-runc setup-engine docker`, which must keep
/// the rest. runc has no such command; it is added to the JSON directly.
fn daemon_config(cfg: &Path) {
    let mut site = json!({
        "labels": [SITE_LABEL],
        "runtimes": {SITE_RUNTIME: {"path": "/usr/bin/runc", "runtimeArgs": ["--debug"]}},
    });
    if runtime_is_runc() {
        site["runtimes"][RUNTIME_NAME] = json!({"path": s(&runtime_bin())});
        write_json(cfg, &site);
        return;
    }
    write_json(cfg, &site);
    let mut c = Command::new(runtime_bin());
    c.args(["setup-engine", "docker", "--config"])
        .arg(cfg)
        .arg("--runtime-path")
        .arg(runtime_bin());
    let out = c.output().expect("running lwk-runc setup-engine docker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("systemctl reload docker"),
        "setup-engine docker failed or named no daemon to reload:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_end_to_end() {
    const TEST: &str = "docker_end_to_end";
    require_root();
    if engine_skipped_by_user(TEST, "docker") {
        return;
    }
    let Some([dockerd, _]) =
        engine_tools(TEST, [("dockerd", "docker.io"), ("docker", "docker.io")])
    else {
        return;
    };
    let _ = runtime_version();
    // One private dockerd at a time across processes.
    let _lock = cross_process_lock("docker");
    become_subreaper();
    let t_start = Instant::now();
    // A private simulated LWK node for the runtime under this daemon.
    let (_node, w) = private_node();
    let setup_calls = w.calls();
    let d = Daemon::start(&dockerd, &w.env());
    let rootfs = d.dir.path().join("rootfs");
    build_rootfs(&rootfs);
    d.import_image(&rootfs);
    eprintln!(
        "dockerd ready and image imported in {:?}",
        t_start.elapsed()
    );
    // What the site had in daemon.json is still in force.
    let out = d.docker(&["info", "--format", "{{json .Labels}}"]);
    assert!(out.stdout.contains(SITE_LABEL), "labels: {}", out.stdout);

    let run = [
        "run",
        "--rm",
        "--runtime",
        RUNTIME_NAME,
        "--network",
        "none",
    ];

    // docker run prints the container's output.
    let out = d.docker(&[&run[..], &[IMAGE, "echo", "hi"]].concat());
    assert_eq!(out.stdout.trim(), "hi");

    // Exit code pass-through.
    let out = d.try_docker(&[&run[..], &[IMAGE, "sh", "-c", "exit 3"]].concat());
    assert_eq!(out.code, Some(3), "docker run exit code: {}", out.stderr);

    // A terminal (console socket through the shim).
    let out = d.docker(&[&run[..], &["-t", IMAGE, "tty"]].concat());
    assert!(
        out.stdout.trim().starts_with("/dev/pts/"),
        "docker run -t: {:?}",
        out.stdout
    );

    // A missing binary: the runtime's error text reaches the user.
    let out = d.try_docker(&[&run[..], &[IMAGE, "/nonexistent"]].concat());
    assert_ne!(out.code, Some(0), "running /nonexistent succeeded");
    assert!(
        out.stderr.contains("/nonexistent"),
        "docker's error must carry the runtime's message naming the path: {}",
        out.stderr
    );

    // A long-running container: exec, top, pause/unpause, stop.
    let name = format!("lwkc-e2e-{}", std::process::id());
    d.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        RUNTIME_NAME,
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let out = d.docker(&["inspect", "-f", "{{.HostConfig.Runtime}}", &name]);
    assert_eq!(out.stdout.trim(), RUNTIME_NAME);

    let out = d.docker(&["exec", &name, "echo", "exec-ok"]);
    assert_eq!(out.stdout.trim(), "exec-ok");
    let out = d.try_docker(&["exec", &name, "sh", "-c", "exit 5"]);
    assert_eq!(out.code, Some(5), "docker exec exit code: {}", out.stderr);
    let out = d.docker(&[
        "exec",
        "-u",
        "1000",
        "-w",
        "/tmp",
        &name,
        "sh",
        "-c",
        "id -u; pwd",
    ]);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["1000", "/tmp"]);

    let out = d.docker(&["top", &name]);
    assert!(
        out.stdout.contains("sleep") || out.stdout.contains("sh -c"),
        "docker top: {}",
        out.stdout
    );

    d.docker(&["pause", &name]);
    let out = d.docker(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert_eq!(out.stdout.trim(), "paused");
    d.docker(&["unpause", &name]);
    let out = d.docker(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert_eq!(out.stdout.trim(), "running");
    let out = d.docker(&["exec", &name, "echo", "alive"]);
    assert_eq!(
        out.stdout.trim(),
        "alive",
        "container unusable after unpause"
    );

    let stop_timeout = 30;
    let t0 = Instant::now();
    d.docker(&["stop", "-t", &stop_timeout.to_string(), &name]);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(stop_timeout / 2),
        "docker stop took {took:?}: SIGTERM did not reach the container's trap"
    );
    let out = d.docker(&["logs", &name]);
    assert!(out.stdout.contains("got-term"), "logs: {}", out.stdout);
    let out = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(out.stdout.trim(), "0");
    d.docker(&["rm", &name]);
    assert_eq!(
        w.calls(),
        setup_calls,
        "containers without an LWK called LWK tools"
    );

    // The LWK cases test lwk-runc's own feature, not the OCI contract: a runtime
    // without an LWK layer (runc, when the suite checks itself against it) skips them.
    if runtime_is_runc() {
        say("SKIPPED docker_on_the_simulated_lwk: the runtime under test is runc, which has no LWK layer");
    } else {
        docker_on_the_simulated_lwk(&d, &w, &run);
    }
    eprintln!("docker end-to-end took {:?}", t_start.elapsed());
}

/// `docker run -e LWK_KERNEL=mckernel` against the simulated node `w` the daemon's
/// runtime was pointed at.
fn docker_on_the_simulated_lwk(d: &Daemon, w: &World, run: &[&str]) {
    let show = "echo hello-lwk; grep Cpus_allowed_list /proc/self/status; \
                echo personality=$(cat /proc/self/personality); \
                tr '\\0' ' ' < /proc/$PPID/cmdline; echo";
    let out = d.docker(&[run, &["-e", "LWK_KERNEL=mckernel", IMAGE, "sh", "-c", show]].concat());
    assert!(out.stdout.contains("hello-lwk"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Cpus_allowed_list:\t1\n"),
        "not pinned to the LWK CPU: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("mcexec"),
        "the workload's parent is not mcexec: {}",
        out.stdout
    );
    // mcexec disabled ASLR although Docker's seccomp profile limits personality(2).
    assert!(
        out.stdout.contains("personality=00040000"),
        "{}",
        out.stdout
    );
    // `--rm` returns once the container is removed; the runtime's delete tore down.
    let calls = w.calls();
    assert_eq!(w.count("\t0 boot\t"), 1, "{calls}");
    assert_eq!(w.count(" destroy "), 1, "{calls}");
    w.assert_clean();

    // docker exec into an LWK container: Docker hands the exec the container's env, so
    // LWK_KERNEL arrives inherited; the process runs on Linux unless it asks itself, with
    // LWK_EXEC (the same LWK_KERNEL again cannot be told from the inherited one).
    let name = format!("lwkc-lwk-{}", std::process::id());
    let start = |env: &[&str]| {
        let head = ["run", "-d", "--name", &name, "--runtime", RUNTIME_NAME];
        let tail = ["--network", "none", IMAGE, "sleep", "100"];
        d.docker(&[&head[..], env, &tail].concat());
    };
    let remove = |teardowns: usize| {
        d.docker(&["rm", "-f", &name]);
        wait_for(
            Duration::from_secs(20),
            "teardown after docker rm -f",
            || (w.count(" destroy ") == teardowns && w.leases() == 0).then_some(()),
        );
    };
    let parent = "tr '\\0' ' ' < /proc/$PPID/cmdline; echo";
    let exec_parent = |opts: &[&str]| {
        d.docker(&[&["exec"][..], opts, &[&name, "sh", "-c", parent]].concat())
            .stdout
    };
    start(&["-e", "LWK_KERNEL=mckernel"]);
    let out = exec_parent(&[]);
    assert!(
        !out.contains("mcexec"),
        "plain docker exec ran on the LWK: {out}"
    );
    let out = exec_parent(&["-e", "LWK_KERNEL=mckernel"]);
    assert!(
        !out.contains("mcexec"),
        "the container's own LWK_KERNEL, given again, is still inherited: {out}"
    );
    let out = exec_parent(&["-e", "LWK_EXEC=mckernel"]);
    assert!(
        out.contains("mcexec"),
        "docker exec -e LWK_EXEC=mckernel ran on Linux: {out}"
    );
    // The device boundary under Docker's default seccomp profile: neither a container's
    // own process nor a `docker exec`'d one can shut the LWK down under a neighbour.
    let attack = "ln -sf /dev/.lwk/mcexec/bin/mcexec /tmp/ihkosctl; \
                  /tmp/ihkosctl 0 shutdown; echo rc=$?";
    let refused = |out: &DockerOut| {
        assert!(
            out.stdout.contains("rc=255") && out.stderr.contains("error: shutting down"),
            "ihkosctl shutdown from a container was not refused: {} {}",
            out.stdout,
            out.stderr
        );
    };
    refused(
        &d.try_docker(
            &[
                run,
                &["-e", "LWK_KERNEL=mckernel", IMAGE, "sh", "-c", attack],
            ]
            .concat(),
        ),
    );
    refused(&d.try_docker(&["exec", &name, "sh", "-c", attack]));
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    let out = exec_parent(&["-e", "LWK_EXEC=mckernel"]);
    assert!(
        out.contains("mcexec"),
        "the LWK is gone after the attack: {out}"
    );
    remove(2);

    // A container started with LWK_EXEC runs every docker exec on the LWK, unless one
    // says LWK_EXEC=none.
    start(&["-e", "LWK_KERNEL=mckernel", "-e", "LWK_EXEC=mckernel"]);
    let out = exec_parent(&[]);
    assert!(
        out.contains("mcexec"),
        "exec into an LWK_EXEC container ran on Linux: {out}"
    );
    let out = exec_parent(&["-e", "LWK_EXEC=none"]);
    assert!(
        !out.contains("mcexec"),
        "docker exec -e LWK_EXEC=none ran on the LWK: {out}"
    );
    remove(3);
    assert_eq!(w.count("\t0 boot\t"), 3, "{}", w.calls());
    w.assert_clean();
    let reserves = w.count(" reserve ");

    // Hostile launcher arguments: docker reports the runtime's refusal, nothing booted.
    let out = d.try_docker(
        &[
            run,
            &[
                "-e",
                "LWK_KERNEL=mckernel",
                "-e",
                "LWK_ARGS=; rm -rf /",
                IMAGE,
                "echo",
                "should-not-run",
            ],
        ]
        .concat(),
    );
    assert_ne!(
        out.code,
        Some(0),
        "hostile LWK_ARGS accepted: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("should-not-run"), "{}", out.stdout);
    assert!(
        out.stderr.contains("LWK_ARGS") && out.stderr.contains("refused"),
        "docker's error must name the refused LWK_ARGS: {}",
        out.stderr
    );
    assert_eq!(
        w.count(" reserve "),
        reserves,
        "the refused container reached the LWK: {}",
        w.calls()
    );
    w.assert_clean();

    // mOS: yod reserves the LWK CPU for the workload and execs it there; the partition
    // is created for the container and deleted after it.
    let show = "echo hello-mos; grep Cpus_allowed_list /proc/self/status; \
                echo reserved=$(cat /sys/kernel/mOS/lwkcpus_reserved)";
    let out = d.docker(&[run, &["-e", "LWK_KERNEL=mos", IMAGE, "sh", "-c", show]].concat());
    assert!(out.stdout.contains("hello-mos"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Cpus_allowed_list:\t1\n") && out.stdout.contains("reserved=1"),
        "not on the reserved mOS CPU: {}",
        out.stdout
    );
    // lwkctl (yod's closure under its name) cannot delete the partition from a container.
    let attack = "ln -sf /dev/.lwk/yod/bin/yod /tmp/lwkctl; /tmp/lwkctl -d -f; echo rc=$?";
    let out = d.try_docker(&[run, &["-e", "LWK_KERNEL=mos", IMAGE, "sh", "-c", attack]].concat());
    assert!(
        out.stdout.contains("rc=1") && out.stderr.contains("lwk_config: Read-only file system"),
        "lwkctl -d from a container was not refused: {} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(w.count("lwkctl\t-d -f"), 0, "{}", w.calls());
    w.assert_booted_and_torn_down("mos", 2);

    // Faults, as a Docker user meets them: the LWK's boot panics; a tool is missing.
    let boots = w.count("\t0 boot\t");
    let lwk_echo = [
        run,
        &["-e", "LWK_KERNEL=mckernel", IMAGE, "echo", "should-not-run"],
    ]
    .concat();
    std::fs::write(w.sim.join("faults"), "boot_panic once\n").unwrap();
    let out = d.try_docker(&lwk_echo);
    assert_ne!(out.code, Some(0), "ran on a panicked LWK: {}", out.stdout);
    for want in [
        "McKernel failed to boot",
        "PANIC",
        "kmsg",
        "Nothing is left reserved",
    ] {
        assert!(
            out.stderr.contains(want),
            "docker's error lacks {want:?}: {}",
            out.stderr
        );
    }
    assert_eq!(w.count("\t0 boot\t"), boots + 1, "{}", w.calls());
    w.assert_clean();
    let good = std::fs::read_to_string(&w.config).unwrap();
    let ihkconfig = format!("{}/ihkconfig", sim_bin());
    std::fs::write(
        &w.config,
        good.replace(&ihkconfig, "/nonexistent/ihkconfig"),
    )
    .unwrap();
    let out = d.try_docker(&lwk_echo);
    std::fs::write(&w.config, &good).unwrap();
    assert_ne!(out.code, Some(0), "ran without ihkconfig: {}", out.stdout);
    assert!(
        out.stderr.contains("/nonexistent/ihkconfig") && out.stderr.contains("mckernel.ihkconfig"),
        "docker's error names neither the tool nor its key: {}",
        out.stderr
    );
    assert_eq!(w.count("\t0 boot\t"), boots + 1, "{}", w.calls());
    w.assert_clean();
    // And the node serves the next container.
    let out = d.docker(
        &[
            run,
            &["-e", "LWK_KERNEL=mckernel", IMAGE, "echo", "recovered"],
        ]
        .concat(),
    );
    assert_eq!(out.stdout.trim(), "recovered");
    w.assert_clean();
}
