//! What a vanished caller leaves: a container whose init was killed while nothing
//! reaps it (a zombie, which is dead: `lwk status` says so and `lwk gc` tears the LWK
//! down under it), and a foreground `run` SIGKILLed as Slurm does at KillWait (its
//! container goes with it, lease and all). The Slurm step whose whole cgroup is killed
//! is in mpi.rs.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

fn lwk_cfg(args: &[&str], kernel: &str) -> Value {
    let mut c = base_config(args);
    if kernel != "none" {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("LWK_KERNEL={kernel}")));
    }
    c
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[test]
fn a_zombie_init_is_dead_to_lwk_status_and_gc() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle("z", &lwk_cfg(&["/bin/sleep", "600"], "mckernel"));
    let id = ctx.id("zombie");
    // `run --detach` under a subreaper that never reaps: the container's init becomes
    // its orphan.
    let mut c = Command::new(env!("CARGO_BIN_EXE_lazy-subreaper"));
    c.arg(runtime_bin())
        .args(["--root", &s(&ctx.root), "--log", &s(&ctx.log)])
        .args(["run", "--detach", "--bundle", &s(&b), &id])
        .envs(w.env())
        .stdin(Stdio::null());
    let (mut reaper, out, _) = ctx.spawn_with(c);
    wait_for(Duration::from_secs(60), "run --detach to return", || {
        fs::read_to_string(&out)
            .is_ok_and(|o| o.contains("exited"))
            .then_some(())
    });
    assert!(
        fs::read_to_string(&out).unwrap().contains("exited 0"),
        "{}",
        ctx.log_text()
    );
    let init = ctx.pid(&id);
    // SAFETY: kill(2) of the init of a container this test made.
    unsafe { libc::kill(init, libc::SIGKILL) };
    wait_for(Duration::from_secs(20), "the init to be a zombie", || {
        (proc_state(init) == Some('Z')).then_some(())
    });
    assert_eq!(ctx.status(&id), "stopped");
    let st = w.rt_ok(&ctx, &["lwk", "status"]).stdout;
    assert!(st.contains(&format!("lease {id} pid={init}")), "{st}");
    assert!(st.contains("(dead: gc will drop it)"), "{st}");
    let js: Value =
        serde_json::from_str(&w.rt_ok(&ctx, &["lwk", "status", "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(js[0]["leases"][0]["alive"], false, "{js}");
    let gc = w.rt_ok(&ctx, &["lwk", "gc"]);
    assert!(
        gc.stdout.contains(&format!("dropped stale lease of {id}")),
        "{}",
        gc.stdout
    );
    // Torn down while the zombie is still unreaped.
    assert_eq!(proc_state(init), Some('Z'));
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    assert_eq!(w.reserved(), "");
    assert_eq!(w.leases(), 0);
    w.rt_ok(&ctx, &["delete", &id]);
    reaper.kill().unwrap();
    reaper.wait().unwrap();
    w.assert_booted_and_torn_down("mckernel", 1);
    w.assert_node_clean(&ctx);
}

#[test]
fn a_foreground_run_killed_takes_its_container_and_lease_with_it() {
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            node_cpus: Some(8),
            mos: "partition = \"lwkcpus=1.2-5 lwkmem=64M\"",
            ..Default::default()
        },
    );
    for kernel in ["mckernel", "mos", "none"] {
        // A program that ignores SIGTERM, as the one scancel could not stop.
        let b = ctx.bundle(
            &format!("fg-{kernel}"),
            &lwk_cfg(
                &["/bin/sh", "-c", "trap '' TERM; echo up $$; exec sleep 600"],
                kernel,
            ),
        );
        let id = ctx.id(kernel);
        let (mut run, out, _) = ctx.spawn_with(w.cmd(&ctx, &["run", "--bundle", &s(&b), &id]));
        wait_for(Duration::from_secs(60), "the program to start", || {
            fs::read_to_string(&out)
                .is_ok_and(|o| o.contains("up"))
                .then_some(())
        });
        let init = ctx.pid(&id);
        // SAFETY: kill(2) of the foreground run this test started.
        unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            pid_alive(init),
            "{kernel}: the program did not ignore SIGTERM"
        );
        run.kill().unwrap();
        run.wait().unwrap();
        wait_for(
            Duration::from_secs(30),
            "the container's init to end",
            || (!pid_alive(init)).then_some(()),
        );
        if kernel == "none" {
            // No lease to drop: the stopped container waits for its engine's delete.
            assert_eq!(ctx.status(&id), "stopped");
            w.rt_ok(&ctx, &["delete", &id]);
        } else {
            wait_for(
                Duration::from_secs(30),
                "the watcher to delete the container",
                || (!ctx.root.join(&id).exists() && w.leases() == 0).then_some(()),
            );
        }
        w.assert_node_clean(&ctx);
    }
    w.assert_booted_and_torn_down("mckernel", 1);
    w.assert_booted_and_torn_down("mos", 1);
}
