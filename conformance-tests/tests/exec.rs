//! `exec` as containerd's shim and conmon call it, plus the flags users type.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// A running `sleep` container; returns its bundle.
fn running(ctx: &Ctx, id: &str) -> PathBuf {
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    ctx.create(&b, id);
    ctx.rt_ok(&["start", id]);
    b
}

#[test]
fn exec_process_json() {
    let ctx = Ctx::new();
    let id = ctx.id("execp");
    running(&ctx, &id);
    let p = ctx.path("process.json");
    write_json(
        &p,
        &json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000},
            "args": ["sh", "-c", "echo $FOO; pwd; id -u; id -g; exit 7"],
            "env": ["PATH=/bin", "FOO=from-process-json"],
            "cwd": "/tmp"
        }),
    );
    let out = ctx.rt(&["exec", "--process", &s(&p), &id]);
    assert_eq!(
        out.code(),
        Some(7),
        "exec must pass the exit code through: {}",
        ctx.explain(&out)
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["from-process-json", "/tmp", "1000", "1000"],
        "{}",
        ctx.explain(&out)
    );
}

#[test]
fn exec_env_cwd_user_flags() {
    let ctx = Ctx::new();
    let id = ctx.id("execf");
    running(&ctx, &id);
    let out = ctx.rt_ok(&[
        "exec",
        "--env",
        "FOO=from-flag",
        "--cwd",
        "/home/user",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g; hostname",
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["from-flag", "/home/user", "1000", "1000", "lwk-conformance"],
        "{}",
        ctx.explain(&out)
    );
    // The exec'd process joins the container's namespaces.
    let out = ctx.rt_ok(&["exec", &id, "readlink", "/proc/self/ns/pid"]);
    assert_eq!(
        out.stdout.trim(),
        ns_of(&ctx.pid(&id).to_string(), "pid"),
        "exec must join the container's pid namespace"
    );
}

#[test]
fn exec_detach_pid_file() {
    let ctx = Ctx::new();
    let id = ctx.id("execd");
    let b = running(&ctx, &id);
    let pf = ctx.path("exec.pid");
    let p = ctx.path("process.json");
    write_json(
        &p,
        &json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "echo exec-ran > /exec-ran; exec sleep 60"],
            "env": ["PATH=/bin"],
            "cwd": "/"
        }),
    );
    // Exactly the shim's call.
    ctx.rt_ok(&[
        "exec",
        "--process",
        &s(&p),
        "--detach",
        "--pid-file",
        &s(&pf),
        &id,
    ]);
    let pid: i32 = fs::read_to_string(&pf)
        .expect("exec --pid-file written")
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert!(pid_alive(pid), "detached exec process {pid} not running");
    assert_eq!(
        ns_of(&pid.to_string(), "pid"),
        ns_of(&ctx.pid(&id).to_string(), "pid"),
        "exec pid is not in the container"
    );
    wait_for(T, "detached exec to run", || {
        b.join("rootfs/exec-ran").exists().then_some(())
    });
    let out = ctx.rt_ok(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_str(&out.stdout).expect("ps json");
    assert!(
        pids.contains(&(pid as i64)),
        "ps {pids:?} lacks exec pid {pid}"
    );
}

#[test]
fn exec_tty_console_socket() {
    let ctx = Ctx::new();
    let id = ctx.id("exect");
    running(&ctx, &id);
    let sock = ConsoleSocket::bind(&ctx.path("console.sock"));
    let pf = ctx.path("exec.pid");
    let (child, o, e) = ctx.spawn(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        &s(&sock.path),
        "--pid-file",
        &s(&pf),
        &id,
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo stdio-is-a-tty; echo tty=$(tty)",
    ]);
    let master = sock.recv_master(T);
    let st = wait_timeout(child, T, "exec --tty --detach");
    assert!(
        st.success(),
        "exec --tty failed: {}\n{}\n{}",
        fs::read_to_string(&o).unwrap_or_default(),
        fs::read_to_string(&e).unwrap_or_default(),
        ctx.log_text()
    );
    let text = read_pty(&master, T);
    assert!(text.contains("stdio-is-a-tty"), "pty output: {text:?}");
    assert!(text.contains("tty=/dev/pts/"), "pty output: {text:?}");
}

#[test]
fn create_terminal_console_socket() {
    let ctx = Ctx::new();
    let mut cfg = base_config(&["sh", "-c", "[ -t 1 ] && echo init-has-tty; sleep 60"]);
    cfg["process"]["terminal"] = json!(true);
    let b = ctx.bundle("b", &cfg);
    let id = ctx.id("ctty");
    let sock = ConsoleSocket::bind(&ctx.path("console.sock"));
    let (child, o, e) = ctx.spawn(&[
        "create",
        "--bundle",
        &s(&b),
        "--console-socket",
        &s(&sock.path),
        &id,
    ]);
    let master = sock.recv_master(T);
    let st = wait_timeout(child, T, "create --console-socket");
    assert!(
        st.success(),
        "create with terminal failed: {}\n{}\n{}",
        fs::read_to_string(&o).unwrap_or_default(),
        fs::read_to_string(&e).unwrap_or_default(),
        ctx.log_text()
    );
    ctx.rt_ok(&["start", &id]);
    let text = wait_for(T, "init output on the pty", || {
        let t = read_pty(&master, Duration::from_millis(200));
        (!t.is_empty()).then_some(t)
    });
    assert!(text.contains("init-has-tty"), "pty output: {text:?}");
}

#[test]
fn exec_in_stopped_container_fails() {
    let ctx = Ctx::new();
    let id = ctx.id("execstop");
    running(&ctx, &id);
    ctx.rt_ok(&["kill", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
    ctx.rt_fail(&["exec", &id, "true"]);
}

/// `exec --cap` takes runc's capability names (`CAP_KILL`), adding the capability to
/// the exec'd process only.
#[test]
fn exec_cap_flag_takes_runc_capability_names() {
    let ctx = Ctx::new();
    let id = ctx.id("execcap");
    let mut cfg = base_config(&["sleep", "60"]);
    for set in ["bounding", "effective", "permitted"] {
        cfg["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .retain(|c| c != "CAP_KILL");
    }
    let b = ctx.bundle("b", &cfg);
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    // CAP_KILL is bit 5 of the effective set.
    let cap_kill = |out: &Out| {
        let line = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap_or_else(|| panic!("no CapEff line: {}", ctx.explain(out)));
        u64::from_str_radix(line.trim(), 16).unwrap() & (1 << 5) != 0
    };
    let show = ["grep", "CapEff", "/proc/self/status"];
    let out = ctx.rt_ok(&[&["exec", &id][..], &show].concat());
    assert!(!cap_kill(&out), "CAP_KILL without --cap: {}", out.stdout);
    let out = ctx.rt_ok(&[&["exec", "--cap", "CAP_KILL", &id][..], &show].concat());
    assert!(cap_kill(&out), "--cap CAP_KILL not granted: {}", out.stdout);
}

#[test]
fn exec_runs_under_the_containers_seccomp_profile() {
    // As runc does, and as `docker exec` users rely on: a process joining the container
    // gets the container's seccomp profile, not an unconfined one.
    let ctx = Ctx::new();
    let id = ctx.id("execsc");
    let mut cfg = base_config(&["sleep", "60"]);
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let b = ctx.bundle("b", &cfg);
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    let out = ctx.rt(&["exec", &id, "mkdir", "/made-by-exec"]);
    assert!(
        !out.ok() && out.stderr.contains("Operation not permitted"),
        "the exec'd mkdir was not refused by the container's profile: {}",
        ctx.explain(&out)
    );
    assert!(
        !b.join("rootfs/made-by-exec").exists(),
        "the exec'd process created a directory its profile forbids"
    );
    // The profile refuses only what it names.
    ctx.rt_ok(&["exec", &id, "touch", "/tmp-file-by-exec"]);
}
