//! LWK acceptance: lwk-runc against the simulator (`lwk-sim install --prefix /opt/lwk-sim`),
//! on real namespaces. Each test gets its own simulated node (LWK_SIM_ROOT), lease dir and
//! config, so tests run in parallel without sharing an LWK.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lwk_conformance::*;
use serde_json::{json, Value};

fn cfg_with(args: &[&str], env: &[&str], ann: Option<(&str, &str)>) -> Value {
    let mut c = base_config(args);
    for e in env {
        c["process"]["env"].as_array_mut().unwrap().push(json!(e));
    }
    if let Some((k, v)) = ann {
        c["annotations"][k] = json!(v);
    }
    c
}

const SHOW: &str = "echo hello; grep Cpus_allowed_list /proc/self/status; echo launcher=$PPID; cat /proc/1/cmdline | tr '\\0' ' '; echo";

#[test]
fn mckernel_run_boots_once_runs_under_mcexec_and_leaves_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/sh", "-c", SHOW], &["LWK_KERNEL=mckernel"], None),
    );
    let id = ctx.id("mck");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("hello"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Cpus_allowed_list:\t1"),
        "not pinned to the instance CPUs: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("mcexec"),
        "PID 1 chain shows no mcexec: {}",
        out.stdout
    );
    // The launcher is not PID 1 but sits on a pid slot (pid_base 1000 and up).
    let launcher: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("launcher="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no launcher pid: {}", out.stdout));
    assert!(launcher >= 1000, "launcher pid {launcher}");
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn mos_run_by_annotation_uses_yod_and_leaves_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let script = "echo hello; grep Cpus_allowed_list /proc/self/status; cat /sys/kernel/mOS/lwkcpus_reserved";
    let b = ctx.bundle(
        "b",
        &cfg_with(
            &["/bin/sh", "-c", script],
            &[],
            Some(("run.lwk.kernel", "mos")),
        ),
    );
    let id = ctx.id("mos");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("hello"), "{}", out.stdout);
    // yod reserved the LWK CPU for the workload and pinned it there.
    assert!(
        out.stdout.lines().any(|l| l.trim() == "1"),
        "{}",
        out.stdout
    );
    assert_eq!(w.count("lwkctl\t-c"), 1, "{}", w.calls());
    assert_eq!(w.count("lwkctl\t-d"), 1, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn no_request_means_no_launcher_and_no_lwk_call() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let before = w.calls();
    let b = ctx.bundle(
        "b",
        &cfg_with(
            &["/bin/sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"],
            &[],
            None,
        ),
    );
    let id = ctx.id("plain");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(
        out.stdout.trim(),
        "/bin/sh -c cat /proc/1/cmdline | tr '\\0' ' '"
    );
    assert_eq!(w.calls(), before, "an LWK tool was called");
    assert!(!w.leases.exists(), "the lease dir was touched");
}

#[test]
fn launcher_runs_in_a_musl_only_rootfs() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let musl_loader = Path::new("/lib/ld-musl-x86_64.so.1");
    assert!(
        musl_loader.exists() && Path::new("/usr/bin/musl-gcc").exists(),
        "needs musl-tools"
    );
    let src = ctx.path("hello.c");
    fs::write(
        &src,
        "#include <stdio.h>\nint main(void){puts(\"hello from musl\");return 0;}\n",
    )
    .unwrap();
    let b = ctx.path("musl");
    let rootfs = b.join("rootfs");
    for d in ["bin", "lib", "proc", "dev", "sys"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let st = Command::new("musl-gcc")
        .arg("-o")
        .arg(rootfs.join("bin/hello"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    fs::copy(musl_loader, rootfs.join("lib/ld-musl-x86_64.so.1")).unwrap();
    fs::set_permissions(
        rootfs.join("lib/ld-musl-x86_64.so.1"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut c = cfg_with(&["/bin/hello"], &["LWK_KERNEL=mckernel"], None);
    c["linux"]["cgroupsPath"] = json!(format!("/lwk-conformance/{}", unique_id("musl")));
    write_json(&b.join("config.json"), &c);
    let id = ctx.id("musl");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "hello from musl");
    w.assert_clean();
}

#[test]
fn thirty_two_concurrent_runs_share_one_boot_without_pid_collisions() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let shared = ctx.bundle("b", &cfg_with(&["/bin/true"], &[], None));
    // A barrier: every workload says it is up, then waits for `go`, which the test
    // creates only once all 32 are up. So all 32 overlap on the LWK by construction.
    let barrier = ctx.path("barrier");
    fs::create_dir_all(&barrier).unwrap();
    fs::create_dir_all(shared.join("rootfs/barrier")).unwrap();
    let n = 32;
    let mut kids = Vec::new();
    for i in 0..n {
        let script = format!(
            "echo launcher=$PPID; touch /barrier/up{i}; \
             while [ ! -e /barrier/go ]; do sleep 0.05; done; echo done"
        );
        // One rootfs, but a bundle (and so a cgroup) per container, as engines do.
        let mut c = cfg_with(&["/bin/sh", "-c", &script], &["LWK_KERNEL=mckernel"], None);
        c["root"]["path"] = json!(s(&shared.join("rootfs")));
        c["linux"]["cgroupsPath"] = json!(format!("/lwk-conformance/{}", unique_id("c32")));
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/barrier", "type": "bind", "source": s(&barrier),
            "options": ["rbind", "rw"]
        }));
        let b = ctx.path(&format!("b{i}"));
        fs::create_dir_all(&b).unwrap();
        write_json(&b.join("config.json"), &c);
        let id = ctx.id(&format!("c{i}"));
        let o = ctx.path(&format!("c{i}.out"));
        let e = ctx.path(&format!("c{i}.err"));
        let child = w
            .cmd(&ctx, &["run", "--bundle", &s(&b), &id])
            .stdout(fs::File::create(&o).unwrap())
            .stderr(fs::File::create(&e).unwrap())
            .spawn()
            .unwrap();
        kids.push((child, o, e));
    }
    let up = |i: usize| barrier.join(format!("up{i}")).exists();
    let t0 = Instant::now();
    while !(0..n).all(up) {
        if t0.elapsed() > Duration::from_secs(120) {
            let missing: Vec<_> = (0..n).filter(|i| !up(*i)).collect();
            fs::write(barrier.join("go"), "").unwrap();
            panic!(
                "containers {missing:?} never came up; calls:\n{}\nlog:\n{}",
                w.calls(),
                ctx.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // All 32 run at once: one LWK, booted once, 32 leases, nothing torn down yet.
    let (leases, boots, destroys) = (w.leases(), w.count("\t0 boot\t"), w.count(" destroy "));
    fs::write(barrier.join("go"), "").unwrap();
    assert_eq!(leases, n, "leases while all {n} run");
    assert_eq!(boots, 1, "boots while all run:\n{}", w.calls());
    assert_eq!(
        destroys,
        0,
        "torn down under running containers:\n{}",
        w.calls()
    );
    let mut pids = Vec::new();
    for (child, o, e) in kids {
        let st = wait_timeout(child, Duration::from_secs(120), "lwk-runc run");
        let out = fs::read_to_string(&o).unwrap_or_default();
        assert!(
            st.success() && out.contains("done"),
            "run failed ({st:?}): {out}\n{}\n{}",
            fs::read_to_string(&e).unwrap_or_default(),
            ctx.log_text()
        );
        let pid = out
            .lines()
            .find_map(|l| l.strip_prefix("launcher="))
            .expect("launcher pid printed")
            .to_string();
        pids.push(pid);
    }
    let mut uniq = pids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), n, "launcher pids collided: {pids:?}");
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn boot_panic_fails_every_queued_run_clearly_and_reserves_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    // `always`: every boot panics, so a run that arrives after the first failure and
    // boots afresh fails too; all of them must.
    fs::write(w.sim.join("faults"), "boot_panic always\n").unwrap();
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/true"], &["LWK_KERNEL=mckernel"], None),
    );
    let n = 32;
    let kids: Vec<_> = (0..n)
        .map(|i| {
            let id = ctx.id(&format!("p{i}"));
            let e = ctx.path(&format!("p{i}.err"));
            let child = w
                .cmd(&ctx, &["run", "--bundle", &s(&b), &id])
                .stdout(fs::File::create(ctx.path(&format!("p{i}.out"))).unwrap())
                .stderr(fs::File::create(&e).unwrap())
                .spawn()
                .unwrap();
            (child, e)
        })
        .collect();
    for (i, (child, e)) in kids.into_iter().enumerate() {
        let st = wait_timeout(child, Duration::from_secs(120), "lwk-runc run");
        let err = fs::read_to_string(&e).unwrap_or_default();
        assert!(!st.success(), "run {i} succeeded on a panicking LWK");
        for want in ["McKernel", "PANIC", "kmsg", "simulated boot failure"] {
            assert!(
                err.contains(want),
                "run {i}'s error does not name {want:?}:\n{err}"
            );
        }
    }
    let boots = w.count("\t0 boot\t");
    assert!((1..=n).contains(&boots), "{}", w.calls());
    w.assert_clean();
    assert!(
        !w.sim.join("dev/mcos0").exists(),
        "the panicked instance was left: {}",
        w.calls()
    );
}

#[test]
fn linger_keeps_the_lwk_up_after_delete_and_the_reaper_tears_it_down() {
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            mckernel: "linger_secs = 3",
            ..Default::default()
        },
    );
    let b = ctx.bundle(
        "b",
        &cfg_with(
            &["/bin/sh", "-c", "echo on-lwk"],
            &["LWK_KERNEL=mckernel"],
            None,
        ),
    );
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("l1")]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    // Right after delete the LWK is still up, with its resources, and no lease.
    assert_eq!(w.leases(), 0);
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    assert_eq!(w.count(" destroy "), 0, "{}", w.calls());
    // gc within the linger leaves it up too.
    let out = w.rt(&ctx, &["lwk", "gc"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    // A container arriving within the linger reuses it: no second boot.
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("l2")]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("on-lwk"), "{}", out.stdout);
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 0, "{}", w.calls());
    // Nobody comes back: the reaper the last delete left behind tears it down.
    // (The reaper runs on its own; wait until its teardown has released everything.)
    wait_for(
        Duration::from_secs(15),
        "the linger reaper's teardown",
        || {
            (w.count(" destroy ") == 1
                && w.reserved().is_empty()
                && !w.sim.join("dev/mcos0").exists())
            .then_some(())
        },
    );
    w.assert_clean();
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
}

#[test]
fn script_boot_mode_boots_with_mcreboot_and_stops_with_mcstop() {
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            mckernel: "boot_mode = \"script\"",
            no_modprobe: true,
            ..Default::default()
        },
    );
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/sh", "-c", SHOW], &["LWK_KERNEL=mckernel"], None),
    );
    let mut c = w.cmd(&ctx, &["run", "--bundle", &s(&b), &ctx.id("script")]);
    c.env("LWK_SIM_SCRIPT_SLEEP_MS", "100");
    let out = ctx.run_cmd(c);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("hello"), "{}", out.stdout);
    assert!(out.stdout.contains("mcexec"), "{}", out.stdout);
    let calls = w.calls();
    let tools: Vec<&str> = calls.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    assert_eq!(
        tools.iter().filter(|t| **t == "mcreboot.sh").count(),
        1,
        "{calls}"
    );
    assert_eq!(
        tools.iter().filter(|t| **t == "mcstop+release.sh").count(),
        1,
        "{calls}"
    );
    // The script did the boot, and the stop script came after it.
    let pos = |t: &str| tools.iter().position(|x| *x == t).unwrap();
    assert!(pos("mcreboot.sh") < pos("mcstop+release.sh"), "{calls}");
    assert_eq!(w.count("\t0 boot\t"), 1, "{calls}");
    w.assert_clean();
    assert!(
        !w.sim.join("dev/mcd0").exists(),
        "mcstop+release.sh left the modules loaded: {calls}"
    );
}

/// `cat /proc/self/status` run by exec: is it under mcexec and pinned to the LWK CPU?
const EXEC_SHOW: &str =
    "grep Cpus_allowed_list /proc/self/status; tr '\\0' ' ' < /proc/$PPID/cmdline; echo";

#[test]
fn exec_runs_on_linux_unless_its_own_env_asks_for_the_lwk() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/sleep", "100"], &["LWK_KERNEL=mckernel"], None),
    );
    let id = ctx.id("exec");
    let out = w.rt(&ctx, &["run", "--detach", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let linux_cpus = format!(
        "Cpus_allowed_list:\t{}",
        fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
    );
    // Default: the container's LWK_KERNEL is inherited, not asked for: Linux.
    let out = w.rt(&ctx, &["exec", &id, "/bin/sh", "-c", EXEC_SHOW]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(!out.stdout.contains("mcexec"), "{}", out.stdout);
    assert!(out.stdout.contains(&linux_cpus), "{}", out.stdout);
    // Docker/containerd style: a process.json carrying the container's env unchanged.
    let mut p = cfg_with(
        &["/bin/sh", "-c", EXEC_SHOW],
        &["LWK_KERNEL=mckernel"],
        None,
    )["process"]
        .clone();
    let pf = ctx.path("process.json");
    write_json(&pf, &p);
    let out = w.rt(&ctx, &["exec", "--process", &s(&pf), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(!out.stdout.contains("mcexec"), "{}", out.stdout);
    // Its own -e LWK_KERNEL asks for the LWK: under mcexec, on the LWK CPU.
    let out = w.rt(
        &ctx,
        &[
            "exec",
            "-e",
            "LWK_KERNEL=mckernel",
            &id,
            "/bin/sh",
            "-c",
            EXEC_SHOW,
        ],
    );
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("mcexec"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Cpus_allowed_list:\t1\n"),
        "{}",
        out.stdout
    );
    // Through --process, a value that is not the inherited one asks too.
    p["env"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e != "LWK_KERNEL=mckernel");
    p["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("LWK_KERNEL=McKernel"));
    write_json(&pf, &p);
    let out = w.rt(&ctx, &["exec", "--process", &s(&pf), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("mcexec"), "{}", out.stdout);
    // One LWK for all of it, torn down with the container.
    let out = w.rt(&ctx, &["delete", "--force", &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn hostile_launcher_args_are_refused_before_anything_is_reserved() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    for (i, args) in ["-t /etc/passwd", "-t 4;reboot", "--enable-uti"]
        .iter()
        .enumerate()
    {
        let b = ctx.bundle(
            &format!("b{i}"),
            &cfg_with(
                &["/bin/true"],
                &["LWK_KERNEL=mckernel", &format!("LWK_ARGS={args}")],
                None,
            ),
        );
        let id = ctx.id("hostile");
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
        assert!(!out.ok(), "{args:?} accepted");
        let text = format!("{}{}", out.stderr, ctx.log_text());
        assert!(text.contains("refused"), "{text}");
    }
    assert_eq!(w.count("reserve"), 0, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn runtime_killed_mid_create_and_undeleted_container_are_collected_by_gc() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    // 1. kill -9 of lwk-runc while the LWK boots.
    fs::write(w.sim.join("faults"), "boot_slow once 3000\n").unwrap();
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/sleep", "100"], &["LWK_KERNEL=mckernel"], None),
    );
    let id = ctx.id("killed");
    let mut child = w
        .cmd(&ctx, &["create", "--bundle", &s(&b), &id])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while w.count("\t0 boot\t") == 0 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    child.kill().unwrap();
    child.wait().unwrap();
    let out = w.rt(&ctx, &["lwk", "gc"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    w.assert_clean();
    // 2. a running container killed, its delete never coming.
    let id2 = ctx.id("orphan");
    let out = w.rt(&ctx, &["run", "--detach", "--bundle", &s(&b), &id2]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(w.leases(), 1);
    let pid = ctx.pid(&id2);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = w.rt(&ctx, &["lwk", "gc"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    w.assert_clean();
    let _ = w.rt(&ctx, &["delete", "--force", &id2]);
}

#[test]
fn plain_runc_with_the_shipped_hooks_boots_at_prestart_and_tears_down_at_poststop() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let hooks: Value = serde_json::from_slice(
        &fs::read(workspace_root().join("hooks/lwk-runc-prestart.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(hooks["version"], "1.0.0");
    let env = vec![
        format!("LWK_SIM_ROOT={}", w.sim.display()),
        format!("LWK_RUNC_CONFIG={}", w.config.display()),
    ];
    let hook = |stage: &str| json!({"path": s(&runtime_bin()), "args": ["lwk-runc", "hook", stage], "env": env});
    let mut c = cfg_with(
        &["/bin/sh", "-c", "echo inside"],
        &["LWK_KERNEL=mckernel"],
        None,
    );
    c["hooks"] = json!({"prestart": [hook("prestart")], "poststop": [hook("poststop")]});
    let b = ctx.bundle("b", &c);
    let id = ctx.id("runc");
    let mut cmd = Command::new("runc");
    cmd.args([
        "--root",
        &s(&ctx.path("runc-root")),
        "run",
        "--bundle",
        &s(&b),
        &id,
    ]);
    let out = ctx.run_cmd(cmd);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("inside"));
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    w.assert_clean();
}
