//! The fault matrix: every fault the simulator injects (and the node's own: a full or
//! read-only lease directory, a broken config, tools missing or hanging), met through
//! lwk-runc as an engine runs it. For each: the error the user sees, and the node
//! afterwards (`World::assert_node_clean`: nothing reserved, no instance, no lease and
//! so no pid slot, no container, process or mount left).
//!
//! Cells covered elsewhere: boot PANIC with 32 queued containers (lwk.rs
//! `boot_panic_fails_every_queued_run_clearly_and_reserves_nothing`), a runtime killed
//! mid-boot (lwk.rs, and every step in crash_points.rs), boot PANIC and missing tools
//! through Docker (docker.rs), the faults' own behaviour in the simulator (sim/tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

fn cfg(args: &[&str], env: &[&str]) -> Value {
    let mut c = base_config(args);
    for e in env {
        c["process"]["env"].as_array_mut().unwrap().push(json!(e));
    }
    c
}

/// `run` of `args` on `kernel` (LWK_KERNEL), in a bundle of its own.
fn run(w: &World, ctx: &Ctx, kernel: &str, args: &[&str]) -> Out {
    let env = format!("LWK_KERNEL={kernel}");
    let b = ctx.bundle(&unique_id("b"), &cfg(args, &[&env]));
    w.rt(ctx, &["run", "--bundle", &s(&b), &ctx.id(kernel)])
}

fn run_detached(w: &World, ctx: &Ctx, kernel: &str, args: &[&str]) -> String {
    let env = format!("LWK_KERNEL={kernel}");
    let b = ctx.bundle(&unique_id("b"), &cfg(args, &[&env]));
    let id = ctx.id(kernel);
    w.rt_ok(ctx, &["run", "--detach", "--bundle", &s(&b), &id]);
    id
}

/// A fault's run fails with `wants` in its error, and leaves the node clean; then the
/// next container on the node works.
fn fails_then_recovers(w: &World, ctx: &Ctx, kernel: &str, out: Out, wants: &[&str]) {
    assert!(
        !out.ok(),
        "the run succeeded despite the fault: {}",
        ctx.explain(&out)
    );
    ctx.assert_says(&out, wants);
    w.assert_node_clean(ctx);
    let out = run(w, ctx, kernel, &["/bin/sh", "-c", "echo recovered"]);
    assert!(
        out.ok() && out.stdout.contains("recovered"),
        "{}",
        ctx.explain(&out)
    );
    w.assert_node_clean(ctx);
}

#[test]
fn a_boot_that_hangs_past_the_timeout_fails_clearly_and_is_torn_down() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let text = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        text.replace("boot_timeout_secs = 20", "boot_timeout_secs = 2"),
    )
    .unwrap();
    fs::write(w.sim.join("faults"), "boot_hang once 300\n").unwrap();
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    fails_then_recovers(
        &w,
        &ctx,
        "mckernel",
        out,
        &[
            "McKernel did not reach RUNNING within 2 s",
            "BOOTING",
            "Nothing is left reserved",
        ],
    );
    assert_eq!(w.count("\t0 boot\t"), 2, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 2, "{}", w.calls());
}

#[test]
fn a_slow_boot_with_32_waiters_boots_once_and_serves_them_all() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    fs::write(w.sim.join("faults"), "boot_slow once 2000\n").unwrap();
    // A bundle (and so a cgroup) per container, as engines give them.
    let kids: Vec<(Child, std::path::PathBuf, std::path::PathBuf)> = (0..32)
        .map(|i| {
            let b = ctx.bundle(
                &format!("b{i}"),
                &cfg(&["/bin/sh", "-c", "echo up"], &["LWK_KERNEL=mckernel"]),
            );
            ctx.spawn_with(w.cmd(&ctx, &["run", "--bundle", &s(&b), &ctx.id("slow")]))
        })
        .collect();
    for (child, o, e) in kids {
        let st = wait_timeout(child, Duration::from_secs(180), "lwk-runc run");
        let out = fs::read_to_string(&o).unwrap_or_default();
        assert!(
            st.success() && out.contains("up"),
            "a waiter failed ({st:?}): {out}\n{}\n{}",
            fs::read_to_string(&e).unwrap_or_default(),
            ctx.log_text()
        );
    }
    w.assert_booted_and_torn_down("mckernel", 1);
    w.assert_node_clean(&ctx);
}

#[test]
fn reservation_ebusy_and_enomem_fail_the_boot_and_reserve_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    for (fault, wants) in [
        ("reserve_ebusy", ["reserving CPUs", "ihkconfig"]),
        ("reserve_enomem", ["error: reserving", "ihkconfig"]),
    ] {
        // ENOMEM on the memory reservation: CPUs were reserved first and must go back.
        let at = if fault == "reserve_enomem" {
            "always"
        } else {
            "once"
        };
        fs::write(w.sim.join("faults"), format!("{fault} {at}\n")).unwrap();
        let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
        fs::write(w.sim.join("faults"), "").unwrap();
        fails_then_recovers(&w, &ctx, "mckernel", out, &wants);
    }
}

#[test]
fn mcexec_and_yod_crashing_mid_run_end_the_container_and_release_the_lwk() {
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            node_cpus: Some(8),
            mos: "partition = \"lwkcpus=1.2-5 lwkmem=64M\"",
            ..Default::default()
        },
    );
    for (kernel, fault) in [("mckernel", "mcexec_crash"), ("mos", "yod_crash")] {
        fs::write(w.sim.join("faults"), format!("{fault} once 500\n")).unwrap();
        let env = format!("LWK_KERNEL={kernel}");
        let mut c = cfg(&["/bin/sh", "-c", "echo started; exec sleep 60"], &[&env]);
        if kernel == "mos" {
            // yod execs the program, which would be the pid namespace's init, and a
            // namespace's init ignores the simulator's SIGKILL from inside (a real crash
            // is a fault the kernel forces on it).
            c = without_pid_ns(c);
        }
        let b = ctx.bundle(&unique_id("b"), &c);
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id(kernel)]);
        // The container's program died of SIGKILL: run exits as a shell would, 128 + 9.
        assert_eq!(out.code(), Some(137), "{kernel}: {}", ctx.explain(&out));
        assert!(out.stdout.contains("started"), "{}", out.stdout);
        w.assert_node_clean(&ctx);
        let out = run(&w, &ctx, kernel, &["/bin/sh", "-c", "echo again"]);
        assert!(
            out.ok() && out.stdout.contains("again"),
            "{}",
            ctx.explain(&out)
        );
    }
    w.assert_booted_and_torn_down("mckernel", 2);
    w.assert_booted_and_torn_down("mos", 2);
    w.assert_node_clean(&ctx);
}

#[test]
fn yod_ebusy_fails_the_container_with_yods_error_and_leaves_the_partition_free() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    fs::write(w.sim.join("faults"), "yod_ebusy once\n").unwrap();
    let out = run(&w, &ctx, "mos", &["/bin/true"]);
    // yod's exit status is the container's: 240 (EBUSY), with its message.
    assert_eq!(out.code(), Some(240), "{}", ctx.explain(&out));
    assert!(out.stderr.contains("resources busy"), "{}", out.stderr);
    w.assert_node_clean(&ctx);
    let out = run(&w, &ctx, "mos", &["/bin/sh", "-c", "echo fine"]);
    assert!(
        out.ok() && out.stdout.contains("fine"),
        "{}",
        ctx.explain(&out)
    );
    w.assert_booted_and_torn_down("mos", 2);
    w.assert_node_clean(&ctx);
}

/// A copy of the simulator's tools in `dir` (root's, like the originals), and a World
/// whose config names them, so a test can take one away or break it.
fn own_tools(ctx: &Ctx, opts_top: &str) -> (World, std::path::PathBuf) {
    let dir = ctx.path("tools");
    fs::create_dir_all(&dir).unwrap();
    for t in ["ihkconfig", "ihkosctl", "mcexec", "lwkctl", "yod"] {
        fs::copy(format!("{}/{t}", sim_bin()), dir.join(t)).unwrap();
    }
    let w = World::new(ctx, opts_top);
    let text = fs::read_to_string(&w.config).unwrap();
    let mut text = text.replace(&format!("{}/", sim_bin()), &format!("{}/", s(&dir)));
    // The image stays the installed one.
    text = text.replace(
        &format!("{}/smp-x86", s(&dir)),
        &format!("{}/smp-x86", sim_prefix()),
    );
    fs::write(&w.config, text).unwrap();
    (w, dir)
}

#[test]
fn missing_not_executable_and_hanging_tools_fail_clearly_and_leave_nothing() {
    let ctx = Ctx::new();
    let (w, tools) = own_tools(&ctx, "tool_timeout_secs = 2");
    let take = |t: &str| fs::rename(tools.join(t), tools.join(format!("{t}.away"))).unwrap();
    let back = |t: &str| fs::rename(tools.join(format!("{t}.away")), tools.join(t)).unwrap();
    // Missing: the boot tool, then the launcher (found before anything is touched).
    for (tool, wants) in [
        (
            "ihkconfig",
            vec![
                "ihkconfig",
                "mckernel.ihkconfig",
                "No such file or directory",
            ],
        ),
        (
            "mcexec",
            vec!["mcexec", "mckernel.mcexec", "No such file or directory"],
        ),
        ("yod", vec!["yod", "mos.yod", "No such file or directory"]),
    ] {
        take(tool);
        let kernel = if tool == "yod" { "mos" } else { "mckernel" };
        let out = run(&w, &ctx, kernel, &["/bin/true"]);
        back(tool);
        fails_then_recovers(&w, &ctx, kernel, out, &wants);
    }
    // Not executable.
    let mode = |t: &str, m: u32| {
        fs::set_permissions(tools.join(t), fs::Permissions::from_mode(m)).unwrap()
    };
    mode("ihkconfig", 0o644);
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    mode("ihkconfig", 0o755);
    fails_then_recovers(
        &w,
        &ctx,
        "mckernel",
        out,
        &["ihkconfig", "cannot be run", "Permission denied"],
    );
    // Hanging: killed at tool_timeout_secs; the boot fails and what it took is released.
    for (kernel, fault, tool) in [
        ("mckernel", "ihkconfig_hang", "ihkconfig"),
        ("mckernel", "ihkosctl_hang", "ihkosctl"),
        ("mos", "lwkctl_hang", "lwkctl"),
    ] {
        fs::write(w.sim.join("faults"), format!("{fault} once\n")).unwrap();
        let out = run(&w, &ctx, kernel, &["/bin/true"]);
        fails_then_recovers(
            &w,
            &ctx,
            kernel,
            out,
            &[
                tool,
                "did not finish within 2 s and was killed",
                "tool_timeout_secs",
            ],
        );
    }
    // A teardown tool that hangs: the container still goes; the LWK is torn down by gc.
    let id = run_detached(&w, &ctx, "mckernel", &["/bin/sleep", "60"]);
    fs::write(w.sim.join("faults"), "ihkconfig_hang once\n").unwrap();
    let out = w.rt(&ctx, &["delete", "--force", &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    ctx.assert_says(&out, &["did not finish within 2 s"]);
    assert_eq!(w.leases(), 0);
    let out = w.rt(&ctx, &["lwk", "gc"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    w.assert_node_clean(&ctx);
}

/// A tmpfs of `size` at `dir` (0700, root's), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts} of {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Fills the file system of `file` (a 64 MiB tmpfs here) by writing zeros to `file`
/// until it is full; `dd` stops at ENOSPC, which is the point.
fn fill(file: &Path) {
    let _ = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            "count=128",
            &format!("of={}", s(file)),
        ])
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
fn a_full_or_read_only_lease_directory_fails_before_the_lwk_is_touched() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let fs_ = Tmpfs::mount(&w.leases, "64m");
    // A first container fills the launcher-closure cache beside the lease table.
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let reserves = w.count(" reserve ");
    // Full: the lease cannot be written.
    let filler = w.leases.join("filler");
    fill(&filler);
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    assert!(!out.ok(), "ran on a full lease directory");
    ctx.assert_says(&out, &["LWK lease table", "No space left on device"]);
    assert_eq!(
        w.count(" reserve "),
        reserves,
        "the LWK was touched: {}",
        w.calls()
    );
    w.assert_node_clean(&ctx);
    // A container that holds a lease is deleted, and the LWK torn down, on a full disk.
    fs::remove_file(&filler).unwrap();
    let id = run_detached(&w, &ctx, "mckernel", &["/bin/sleep", "60"]);
    fill(&filler);
    w.rt_ok(&ctx, &["delete", "--force", &id]);
    w.assert_node_clean(&ctx);
    fs::remove_file(&filler).unwrap();
    // Read-only.
    fs_.remount("ro");
    let reserves = w.count(" reserve ");
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    assert!(!out.ok(), "ran on a read-only lease directory");
    ctx.assert_says(&out, &["Read-only file system"]);
    assert_eq!(
        w.count(" reserve "),
        reserves,
        "the LWK was touched: {}",
        w.calls()
    );
    w.assert_node_clean(&ctx);
    fs_.remount("rw");
    let out = run(
        &w,
        &ctx,
        "mckernel",
        &["/bin/sh", "-c", "echo writable-again"],
    );
    assert!(
        out.ok() && out.stdout.contains("writable-again"),
        "{}",
        ctx.explain(&out)
    );
    w.assert_node_clean(&ctx);
}

#[test]
fn an_unreadable_or_invalid_config_is_named_with_the_fix_and_touches_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let good = fs::read_to_string(&w.config).unwrap();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "not TOML",
            b"lease_dir = \n[mckernel".to_vec(),
            vec!["LWK config", "lwk.toml"],
        ),
        (
            "an unknown key",
            format!("{good}\nbogus_key = 1\n").into_bytes(),
            vec!["bogus_key", "lwk.toml"],
        ),
        (
            "a bad value",
            good.replace("lease_dir = \"", "lease_dir = \"relative/")
                .into_bytes(),
            vec!["lease_dir", "must be an absolute path"],
        ),
        (
            "not UTF-8",
            [good.as_bytes(), b"\n# \xff\xfe\n"].concat(),
            vec!["reading LWK config", "UTF-8"],
        ),
    ];
    for (what, text, wants) in cases {
        fs::write(&w.config, text).unwrap();
        let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
        assert!(!out.ok(), "{what}: ran");
        ctx.assert_says(&out, &wants);
        w.assert_node_clean(&ctx);
    }
    // A directory where the file should be cannot be read.
    fs::remove_file(&w.config).unwrap();
    fs::create_dir(&w.config).unwrap();
    let out = run(&w, &ctx, "mckernel", &["/bin/true"]);
    assert!(!out.ok());
    ctx.assert_says(&out, &["reading LWK config", "Is a directory"]);
    fs::remove_dir(&w.config).unwrap();
    fs::write(&w.config, good).unwrap();
    assert_eq!(w.count(" reserve "), 0, "{}", w.calls());
    w.assert_node_clean(&ctx);
}

fn panic_now(w: &World) {
    let st = std::process::Command::new(format!("{}/lwk-sim", sim_bin()))
        .arg("panic")
        .env("LWK_SIM_ROOT", &w.sim)
        .status()
        .unwrap();
    assert!(st.success(), "lwk-sim panic");
}

#[test]
fn an_lwk_panic_under_running_containers_ends_them_and_the_node_recovers() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let ids: Vec<String> = (0..2)
        .map(|_| run_detached(&w, &ctx, "mckernel", &["/bin/sleep", "600"]))
        .collect();
    panic_now(&w);
    // Their programs are lost with the LWK: the containers stop, and `lwk status` shows
    // the instance's PANIC and their leases as dead.
    for id in &ids {
        wait_for(Duration::from_secs(30), "the container to stop", || {
            (ctx.status(id) == "stopped").then_some(())
        });
    }
    let st = w.rt_ok(&ctx, &["lwk", "status"]).stdout;
    assert!(st.contains("status=PANIC"), "{st}");
    assert_eq!(st.matches("(dead: gc will drop it)").count(), 2, "{st}");
    // The next container gets a fresh LWK; a foreground one, to see what its user sees
    // when that one panics under it: the launcher's error and status.
    let b = ctx.bundle(
        "fg",
        &cfg(
            &["/bin/sh", "-c", "echo up; exec sleep 600"],
            &["LWK_KERNEL=mckernel"],
        ),
    );
    let (fg, fg_out, fg_err) =
        ctx.spawn_with(w.cmd(&ctx, &["run", "--bundle", &s(&b), &ctx.id("fg")]));
    wait_for(
        Duration::from_secs(30),
        "the new container on a new LWK",
        || {
            fs::read_to_string(&fg_out)
                .is_ok_and(|o| o.contains("up"))
                .then_some(())
        },
    );
    panic_now(&w);
    let st = wait_timeout(fg, Duration::from_secs(30), "the foreground run");
    let err = fs::read_to_string(&fg_err).unwrap_or_default();
    let out = fs::read_to_string(&fg_out).unwrap_or_default();
    assert_eq!(st.code(), Some(255), "{err}{out}");
    assert!(err.contains("OS instance 0 is PANIC"), "{err}");
    for id in &ids {
        w.rt_ok(&ctx, &["delete", id]);
    }
    w.assert_booted_and_torn_down("mckernel", 2);
    w.assert_node_clean(&ctx);
}
