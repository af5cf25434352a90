//! containerd end to end: a private containerd 1.6 runs containers through its runc v2
//! shim with the runtime under test as the shim's binary, as `ctr` asks for it
//! (`ctr run --runtime io.containerd.runc.v2 --runc-binary RUNTIME`): output, exit
//! codes, `ctr task exec`, `ctr task kill`, the errors a user sees, and (lwk-runc only)
//! containers on the simulated McKernel. Nothing is left behind: no task, container,
//! shim, mount, lease or reservation.

use lwk_conformance::containerd::{self, Containerd};
use lwk_conformance::*;
use serde_json::json;

const TEST: &str = "containerd_end_to_end";
const IMAGE: &str = "lwk.test/busybox:1";
const NS: &str = "default";

/// `ctr run` with the runtime under test behind the runc v2 shim.
fn ctr_run(cd: &Containerd, opts: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    let fifo = s(&cd.path("fifo"));
    let root = s(&cd.runtime_root.join(NS));
    let bin = s(&runtime_bin());
    // Under the suite's own cgroup, as the other tests' containers.
    let cgroup = format!("/lwk-conformance/{id}");
    let head = [
        "run",
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-binary",
        &bin,
        "--runc-root",
        &root,
        "--fifo-dir",
        &fifo,
        "--cgroup",
        &cgroup,
    ];
    [&head[..], opts, &[IMAGE, id], cmd]
        .concat()
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn containerd_end_to_end() {
    let Some((containerd, ctr)) = containerd::tools(TEST, "containerd") else {
        return;
    };
    let (_node, w) = private_node();
    let setup_calls = w.calls();
    // The CRI plugin is another test's subject; without it the daemon reads no CNI set-up.
    let cd = Containerd::start(&containerd, &ctr, |_| toml::Table::new(), &w.env());
    cd.import_image(NS, IMAGE, containerd::with_path(json!({"Cmd": ["sh"]})));
    let tag = std::process::id();

    // Output and exit codes pass through the shim.
    let out = cd.ctr_ok(
        NS,
        &args(&ctr_run(
            &cd,
            &["--rm"],
            &format!("echo-{tag}"),
            &["echo", "hi"],
        )),
    );
    assert_eq!(out.stdout.trim(), "hi");
    let out = cd.ctr(
        NS,
        &args(&ctr_run(
            &cd,
            &["--rm"],
            &format!("exit-{tag}"),
            &["sh", "-c", "exit 3"],
        )),
    );
    assert_eq!(out.code(), Some(3), "ctr run exit code: {}", out.stderr);

    // A missing program: the runtime's error reaches the user through the shim.
    let out = cd.ctr(
        NS,
        &args(&ctr_run(
            &cd,
            &["--rm"],
            &format!("nobin-{tag}"),
            &["/nonexistent"],
        )),
    );
    assert!(!out.ok(), "running /nonexistent succeeded: {}", out.stdout);
    assert!(
        out.stderr.contains("/nonexistent"),
        "ctr's error must carry the runtime's message naming the program: {}",
        out.stderr
    );
    // A missing runtime binary: the shim says which.
    let mut missing = ctr_run(&cd, &["--rm"], &format!("noruntime-{tag}"), &["true"]);
    let at = missing.iter().position(|a| a == "--runc-binary").unwrap() + 1;
    missing[at] = "/nonexistent/lwk-runc".into();
    let out = cd.ctr(NS, &args(&missing));
    assert!(!out.ok(), "a missing runtime binary ran: {}", out.stdout);
    assert!(
        out.stderr.contains("/nonexistent/lwk-runc"),
        "ctr's error must name the missing runtime binary: {}",
        out.stderr
    );
    assert_eq!(
        cd.leftovers(),
        Vec::<String>::new(),
        "after the failed runs"
    );

    // A long-running task: exec, kill, delete.
    let id = format!("long-{tag}");
    let trap = "trap 'exit 7' TERM; while true; do sleep 0.1; done";
    cd.ctr_ok(NS, &args(&ctr_run(&cd, &["-d"], &id, &["sh", "-c", trap])));
    exec_and_kill(&cd, &id, "");

    assert_eq!(
        w.calls(),
        setup_calls,
        "containers without an LWK called LWK tools"
    );
    if runtime_is_runc() {
        say("SKIPPED containerd on the simulated LWK: the runtime under test is runc, which has no LWK layer");
    } else {
        on_the_simulated_lwk(&cd, &w, tag);
    }
    assert_eq!(cd.leftovers(), Vec::<String>::new(), "left behind");
    w.assert_clean();
}

/// `ctr task exec` into the running task `id` (expecting the exec'd process's parent to
/// contain `parent` when not empty), then `ctr task kill` (SIGTERM reaches the task's
/// `exit 7` trap) and delete.
fn exec_and_kill(cd: &Containerd, id: &str, parent: &str) {
    let fifo = s(&cd.path("fifo"));
    let exec = |exec_id: &str, cmd: &[&str]| {
        cd.ctr(
            NS,
            &[
                &[
                    "tasks",
                    "exec",
                    "--fifo-dir",
                    &fifo,
                    "--exec-id",
                    exec_id,
                    id,
                ][..],
                cmd,
            ]
            .concat(),
        )
    };
    let out = exec("e1", &["sh", "-c", "echo exec-ok; exit 5"]);
    assert_eq!(
        out.code(),
        Some(5),
        "ctr task exec exit code: {}",
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "exec-ok");
    let out = exec(
        "e2",
        &["sh", "-c", "tr '\\0' ' ' < /proc/$PPID/cmdline; echo"],
    );
    assert!(out.ok(), "{}", out.stderr);
    if parent.is_empty() {
        assert!(
            !out.stdout.contains("mcexec"),
            "exec ran on the LWK: {}",
            out.stdout
        );
    } else {
        assert!(
            out.stdout.contains(parent),
            "exec's parent is not {parent}: {}",
            out.stdout
        );
    }

    cd.ctr_ok(NS, &["tasks", "kill", id]);
    wait_for(CTR_WAIT, "the task to stop after ctr task kill", || {
        let out = cd.ctr(NS, &["tasks", "ls"]);
        out.stdout
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED"))
            .then_some(())
    });
    // `ctr tasks delete` reports the task's exit code: the trap's 7, not SIGTERM's 143.
    let out = cd.ctr_ok(NS, &["tasks", "delete", id]);
    assert!(
        out.stderr.contains("exit code 7"),
        "SIGTERM from ctr task kill did not reach the trap: {}",
        out.stderr
    );
    cd.ctr_ok(NS, &["containers", "delete", id]);
}

const CTR_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// LWK containers through containerd: by env and by annotation, exec on Linux unless
/// asked with LWK_EXEC, kill, and one boot and one teardown per container's life.
fn on_the_simulated_lwk(cd: &Containerd, w: &World, tag: u32) {
    let show = "grep Cpus_allowed_list /proc/self/status; tr '\\0' ' ' < /proc/$PPID/cmdline; echo";
    for (n, opt) in [
        ["--env", "LWK_KERNEL=mckernel"],
        ["--annotation", "run.lwk.kernel=mckernel"],
    ]
    .iter()
    .enumerate()
    {
        let id = format!("lwk{n}-{tag}");
        let out = cd.ctr_ok(
            NS,
            &args(&ctr_run(
                cd,
                &[&["--rm"][..], opt].concat(),
                &id,
                &["sh", "-c", show],
            )),
        );
        assert!(
            out.stdout.contains("Cpus_allowed_list:\t1\n") && out.stdout.contains("mcexec"),
            "{opt:?}: not run under mcexec on the LWK CPU: {}",
            out.stdout
        );
        w.assert_booted_and_torn_down("mckernel", n + 1);
    }
    let out = cd.ctr(
        NS,
        &args(&ctr_run(
            cd,
            &["--rm", "--env", "LWK_KERNEL=windows"],
            &format!("bad-{tag}"),
            &["true"],
        )),
    );
    assert!(
        !out.ok() && out.stderr.contains("LWK_KERNEL") && out.stderr.contains("windows"),
        "a bad LWK request must fail naming it: {}",
        out.stderr
    );
    w.assert_booted_and_torn_down("mckernel", 2);

    // ctr task exec has no --env: the exec'd process gets the container's env, so an
    // annotated container's execs run on Linux, and a container started with
    // LWK_EXEC=mckernel runs them on the LWK.
    let trap = "trap 'exit 7' TERM; while true; do sleep 0.1; done";
    let id = format!("lwklong-{tag}");
    let opts = ["-d", "--annotation", "run.lwk.kernel=mckernel"];
    cd.ctr_ok(NS, &args(&ctr_run(cd, &opts, &id, &["sh", "-c", trap])));
    exec_and_kill(cd, &id, "");
    w.assert_booted_and_torn_down("mckernel", 3);
    let opts = [
        "-d",
        "--env",
        "LWK_KERNEL=mckernel",
        "--env",
        "LWK_EXEC=mckernel",
    ];
    cd.ctr_ok(NS, &args(&ctr_run(cd, &opts, &id, &["sh", "-c", trap])));
    exec_and_kill(cd, &id, "mcexec");
    w.assert_booted_and_torn_down("mckernel", 4);
}
