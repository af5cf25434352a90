//! Lifecycle: create/start/state/kill/delete/list/ps/pause/resume/run.

use std::fs;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

#[test]
fn lifecycle_states_and_state_json() {
    let ctx = Ctx::new();
    let b = ctx.bundle(
        "b",
        &base_config(&["sh", "-c", "echo started > /started; exec sleep 60"]),
    );
    let id = ctx.id("life");

    ctx.create(&b, &id);
    let st = ctx.state(&id);
    assert_eq!(st["status"], "created", "after create: {st}");
    assert_eq!(st["id"], id.as_str());
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "ociVersion missing: {st}"
    );
    let bundle = fs::canonicalize(&b).unwrap();
    assert_eq!(
        st["bundle"].as_str(),
        Some(s(&bundle).as_str()),
        "bundle must be the absolute bundle path: {st}"
    );
    assert_eq!(
        st["annotations"]["org.lwk.conformance.test"], "yes",
        "annotations from config.json must be in state: {st}"
    );
    let pid = st["pid"].as_i64().expect("created state has a pid") as i32;
    assert!(pid > 0 && pid_alive(pid), "init pid {pid} must be alive");
    // create applies everything except the user process.
    assert!(
        !b.join("rootfs/started").exists(),
        "user process ran before start"
    );

    // start on a created container → running, user process runs.
    ctx.rt_ok(&["start", &id]);
    wait_for(T, "user process to run after start", || {
        b.join("rootfs/started").exists().then_some(())
    });
    let st = ctx.state(&id);
    assert_eq!(st["status"], "running", "after start: {st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64), "pid changed: {st}");

    // start on a non-created container fails and changes nothing.
    ctx.rt_fail(&["start", &id]);
    assert_eq!(ctx.status(&id), "running");

    // delete of a running container fails, the process survives.
    ctx.rt_fail(&["delete", &id]);
    assert!(pid_alive(pid), "failed delete killed the container");
    assert_eq!(ctx.status(&id), "running");

    // kill → stopped; state of a stopped container still works.
    ctx.rt_ok(&["kill", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
    wait_for(T, "init to die", || (!pid_alive(pid)).then_some(()));

    // start on a stopped container fails.
    ctx.rt_fail(&["start", &id]);

    // delete → gone.
    ctx.rt_ok(&["delete", &id]);
    let out = ctx.rt_fail(&["state", &id]);
    assert!(
        ctx.root_entries().iter().all(|e| !e.contains(&id)),
        "state dir left after delete: {:?}; {}",
        ctx.root_entries(),
        ctx.explain(&out)
    );
}

#[test]
fn delete_force_kills_running_container() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let id = ctx.id("force");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    let pid = ctx.pid(&id);
    ctx.rt_fail(&["delete", &id]);
    ctx.rt_ok(&["delete", "--force", &id]);
    wait_for(T, "init to die after delete --force", || {
        (!pid_alive(pid)).then_some(())
    });
    ctx.rt_fail(&["state", &id]);
}

#[test]
fn delete_force_of_created_container() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let id = ctx.id("fcreated");
    ctx.create(&b, &id);
    let pid = ctx.pid(&id);
    ctx.rt_ok(&["delete", "--force", &id]);
    wait_for(T, "init to die", || (!pid_alive(pid)).then_some(()));
    ctx.rt_fail(&["state", &id]);
}

/// Starts a container whose init traps `trap_sig` (an init ignores untrapped signals
/// from outside), sends `kill <id> <kill_arg>`, and checks that the trap ran.
fn kill_runs_the_trap(ctx: &Ctx, trap_sig: &str, kill_arg: &str) {
    let b = ctx.bundle(
        &format!("trap{trap_sig}"),
        &base_config(&[
            "sh",
            "-c",
            &format!(
                "trap 'echo got > /got; exit 0' {trap_sig}; touch /ready; while true; do sleep 0.1; done"
            ),
        ]),
    );
    let id = ctx.id("killtrap");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    wait_for(T, "container ready", || {
        b.join("rootfs/ready").exists().then_some(())
    });
    ctx.rt_ok(&["kill", &id, kill_arg]);
    ctx.wait_status(&id, "stopped", T);
    assert_eq!(
        fs::read_to_string(b.join("rootfs/got"))
            .unwrap_or_default()
            .trim(),
        "got",
        "`kill {kill_arg}` did not run the container's trap for {trap_sig}"
    );
}

#[test]
fn kill_by_name_and_number() {
    let ctx = Ctx::new();
    kill_runs_the_trap(&ctx, "TERM", "TERM");

    // By number, and SIG-prefixed name.
    for sig in ["9", "SIGKILL"] {
        let b = ctx.bundle(&format!("b{sig}"), &base_config(&["sleep", "60"]));
        let id = ctx.id("killnum");
        ctx.create(&b, &id);
        ctx.rt_ok(&["start", &id]);
        let pid = ctx.pid(&id);
        ctx.rt_ok(&["kill", &id, sig]);
        ctx.wait_status(&id, "stopped", T);
        assert!(!pid_alive(pid), "kill {sig} left pid {pid} alive");
        // containerd's checkKillError: killing a stopped container must say so.
        let out = ctx.rt_fail(&["kill", &id, "KILL"]);
        let msg = format!("{}{}", out.stderr, ctx.log_text());
        assert!(
            ["container not running", "no such process", "does not exist"]
                .iter()
                .any(|m| msg.contains(m)),
            "kill of a stopped container must report one of containerd's known strings: {}",
            ctx.explain(&out)
        );
    }
}

#[test]
fn kill_real_time_signal() {
    // systemd in a container stops on SIGRTMIN+3: 37 with glibc's SIGRTMIN of 34 (runc
    // takes real-time signals by number only; lwk-runc also by name, see its unit tests).
    kill_runs_the_trap(&Ctx::new(), "37", "37");
}

#[test]
fn kill_created_container() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let id = ctx.id("killcreated");
    ctx.create(&b, &id);
    ctx.rt_ok(&["kill", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
}

#[test]
fn kill_all_reaches_every_process() {
    let ctx = Ctx::new();
    // Without a pid namespace, killing the init would leave the sleeps behind.
    let b = ctx.bundle(
        "b",
        &without_pid_ns(base_config(&[
            "sh",
            "-c",
            "sleep 60 & sleep 60 & touch /ready; wait",
        ])),
    );
    let id = ctx.id("killall");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    wait_for(T, "container ready", || {
        b.join("rootfs/ready").exists().then_some(())
    });
    let pids: Vec<i32> = wait_for(T, "ps to show 3 processes", || {
        let out = ctx.rt_ok(&["ps", "--format", "json", &id]);
        let v: Vec<i32> = serde_json::from_str(&out.stdout).ok()?;
        (v.len() >= 3).then_some(v)
    });
    ctx.rt_ok(&["kill", "--all", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
    for p in pids {
        wait_for(T, &format!("pid {p} to die after kill --all"), || {
            (!pid_alive(p)).then_some(())
        });
    }
}

#[test]
fn list_json_and_quiet() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let a = ctx.id("lista");
    let c = ctx.id("listc");
    ctx.create(&b, &a);
    ctx.create(&b, &c);
    ctx.rt_ok(&["start", &a]);

    let out = ctx.rt_ok(&["list", "--quiet"]);
    let mut ids: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    ids.sort();
    let mut want = vec![a.as_str(), c.as_str()];
    want.sort();
    assert_eq!(ids, want, "list --quiet: {}", out.stdout);

    let out = ctx.rt_ok(&["list", "--format", "json"]);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("list --format json is not JSON ({e}): {}", out.stdout));
    let arr = v.as_array().expect("list json is an array");
    assert_eq!(arr.len(), 2, "{v}");
    let find = |id: &str| {
        arr.iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in list: {v}"))
            .clone()
    };
    assert_eq!(find(&a)["status"], "running");
    assert_eq!(find(&c)["status"], "created");
    let bundle = s(&fs::canonicalize(&b).unwrap());
    assert_eq!(find(&a)["bundle"].as_str(), Some(bundle.as_str()));
    assert_eq!(find(&a)["pid"].as_i64(), Some(ctx.pid(&a) as i64));
}

#[test]
fn ps_json_lists_host_pids() {
    let ctx = Ctx::new();
    let b = ctx.bundle(
        "b",
        &base_config(&["sh", "-c", "sleep 60 & touch /ready; wait"]),
    );
    let id = ctx.id("ps");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    wait_for(T, "container ready", || {
        b.join("rootfs/ready").exists().then_some(())
    });
    let init = ctx.pid(&id);
    let pids: Vec<i64> = wait_for(T, "ps to show the init and its child", || {
        let out = ctx.rt_ok(&["ps", "--format", "json", &id]);
        let v: Vec<i64> = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!("ps --format json is not a pid array ({e}): {}", out.stdout)
        });
        (v.len() >= 2).then_some(v)
    });
    assert!(pids.contains(&(init as i64)), "{pids:?} lacks init {init}");
    for p in &pids {
        assert_eq!(
            ns_of(&p.to_string(), "pid"),
            ns_of(&init.to_string(), "pid"),
            "ps pid {p} is not in the container"
        );
    }
}

#[test]
fn pause_and_resume() {
    let ctx = Ctx::new();
    let b = ctx.bundle(
        "b",
        &base_config(&[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /counter; sleep 0.02; done",
        ]),
    );
    let id = ctx.id("pause");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    let counter = b.join("rootfs/counter");
    let read = || fs::read_to_string(&counter).unwrap_or_default();
    wait_for(T, "counter to start", || (!read().is_empty()).then_some(()));

    ctx.rt_ok(&["pause", &id]);
    assert_eq!(ctx.status(&id), "paused");
    std::thread::sleep(Duration::from_millis(100));
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "a paused container kept running");

    ctx.rt_ok(&["resume", &id]);
    assert_eq!(ctx.status(&id), "running");
    wait_for(T, "counter to move after resume", || {
        (read() != frozen && !read().is_empty()).then_some(())
    });
}

#[test]
fn run_foreground_output_and_exit_code() {
    let ctx = Ctx::new();
    let b = ctx.bundle(
        "b",
        &base_config(&["sh", "-c", "echo out-line; echo err-line >&2; exit 3"]),
    );
    let id = ctx.id("run");
    let out = ctx.rt(&["run", "--bundle", &s(&b), &id]);
    assert_eq!(out.code(), Some(3), "exit code: {}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "out-line");
    assert!(out.stderr.contains("err-line"), "{}", ctx.explain(&out));
    // Foreground run deletes the container when it exits.
    ctx.rt_fail(&["state", &id]);
}

#[test]
fn run_foreground_terminal_without_console_socket() {
    // `runc spec`'s default: terminal true. Run by hand from a terminal (script(1) gives
    // the runtime one), the process gets a pty of its own, sized like ours.
    let ctx = Ctx::new();
    let mut cfg = base_config(&["sh", "-c", "tty; stty size; exit 3"]);
    cfg["process"]["terminal"] = Value::Bool(true);
    let b = ctx.bundle("b", &cfg);
    let id = ctx.id("runtty");
    ctx.track(&id);
    let line = format!(
        "stty rows 33 cols 111; {} --root {} --log {} run --bundle {} {}",
        s(&runtime_bin()),
        s(&ctx.root),
        s(&ctx.log),
        s(&b),
        id
    );
    let attempt = || {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null());
        ctx.run_cmd(c)
    };
    let mut out = attempt();
    // runc 1.1 races its own console set-up: now and then (about 1 run in 15 here) the
    // process starts before the pty is ready, and `stty` fails with ECHILD ("No child
    // processes") on a terminal that is there. That is the reference runtime's bug, not
    // what this test is about; runc alone gets two more tries, lwk-runc none.
    for _ in 0..2 {
        if !(runtime_is_runc() && out.stdout.contains("No child processes")) {
            break;
        }
        say("runc raced its console set-up (stty: ECHILD); trying again");
        ctx.rt(&["delete", "--force", &id]);
        out = attempt();
    }
    assert_eq!(out.code(), Some(3), "exit code: {}", ctx.explain(&out));
    assert!(
        out.stdout.contains("/dev/pts/") && out.stdout.contains("33 111"),
        "the process had no pty of the caller's size: {:?}\n{}",
        out.stdout,
        ctx.explain(&out)
    );
}

#[test]
fn run_signal_exit_is_128_plus_n() {
    let ctx = Ctx::new();
    // Not an init (no pid ns), so the shell can kill itself with TERM.
    let b = ctx.bundle(
        "b",
        &without_pid_ns(base_config(&["sh", "-c", "kill -TERM $$; sleep 5"])),
    );
    let id = ctx.id("runsig");
    let out = ctx.rt(&["run", "--bundle", &s(&b), &id]);
    assert_eq!(out.code(), Some(128 + 15), "{}", ctx.explain(&out));

    // An init killed from outside by the runtime: 128+9.
    let b = ctx.bundle("b9", &base_config(&["sleep", "60"]));
    let id = ctx.id("runsig9");
    let (child, _, _) = ctx.spawn(&["run", "--bundle", &s(&b), &id]);
    wait_for(T, "run to reach running", || {
        let out = ctx.rt(&["state", &id]);
        (out.ok() && out.stdout.contains("\"running\"")).then_some(())
    });
    ctx.rt_ok(&["kill", &id, "KILL"]);
    let st = wait_timeout(child, T, "run after kill");
    assert_eq!(st.code(), Some(128 + 9), "run exit status {st:?}");
}

#[test]
fn run_detach() {
    let ctx = Ctx::new();
    let b = ctx.bundle(
        "b",
        &base_config(&["sh", "-c", "echo detached-out; exec sleep 60"]),
    );
    let id = ctx.id("rund");
    let out = ctx.rt_ok(&["run", "--detach", "--bundle", &s(&b), &id]);
    let st = ctx.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid));
    wait_for(T, "detached container output", || {
        out.stdout_now().contains("detached-out").then_some(())
    });
    ctx.rt_ok(&["delete", "--force", &id]);
}

#[test]
fn create_pid_file_holds_host_pid() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let id = ctx.id("pidfile");
    let pf = ctx.path("init.pid");
    ctx.rt_ok(&["create", "--bundle", &s(&b), "--pid-file", &s(&pf), &id]);
    let text = fs::read_to_string(&pf).expect("pid file written by create");
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("pid file {text:?}: {e}"));
    assert_eq!(pid, ctx.pid(&id), "pid file != state pid");
    assert!(pid_alive(pid));
    assert_ne!(
        ns_of(&pid.to_string(), "pid"),
        ns_of("self", "pid"),
        "pid-file pid is not in the container's pid namespace"
    );
}

#[test]
fn preserve_fds_passes_fd3() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sh", "-c", "cat <&3"]));
    let id = ctx.id("fds");
    let data = ctx.path("fd3.txt");
    fs::write(&data, "content-from-fd3\n").unwrap();
    let f = fs::File::open(&data).unwrap();
    let mut c = ctx.cmd(&["run", "--preserve-fds", "1", "--bundle", &s(&b), &id]);
    pass_fd3(&mut c, &f);
    let out = ctx.run_cmd(c);
    drop(f);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "content-from-fd3");
}

/// An image without `Env` (`podman import`, `FROM scratch`, CRI's pause sandboxes)
/// gives its process no `PATH`; a process named by path runs all the same, in `run`
/// and in `exec`, as under runc.
#[test]
fn absolute_args0_runs_without_path() {
    let ctx = Ctx::new();
    let mut cfg = base_config(&["/bin/sh", "-c", "echo ran-without-path; exit 4"]);
    cfg["process"]["env"] = json!(["HOME=/root"]);
    let b = ctx.bundle("b", &cfg);
    let id = ctx.id("nopath");
    let out = ctx.rt(&["run", "--bundle", &s(&b), &id]);
    assert_eq!(out.code(), Some(4), "{}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "ran-without-path");

    let mut cfg = base_config(&["/bin/sleep", "60"]);
    cfg["process"]["env"] = json!([]);
    let b = ctx.bundle("b2", &cfg);
    let id = ctx.id("nopathx");
    ctx.create(&b, &id);
    ctx.rt_ok(&["start", &id]);
    let p = ctx.path("process.json");
    write_json(
        &p,
        &json!({"terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                "args": ["/bin/echo", "exec-no-path"], "env": []}),
    );
    let out = ctx.rt_ok(&["exec", "--process", &s(&p), &id]);
    assert_eq!(out.stdout.trim(), "exec-no-path");
}
