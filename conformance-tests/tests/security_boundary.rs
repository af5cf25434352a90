//! The container boundary of LWK containers, attacked for real on the simulated node:
//! a container must not shut down, boot or reload the LWK (McKernel's device), nor
//! delete or remake the partition (mOS's sysfs), nor take the namespace-local pid a
//! neighbour's launcher needs; and the caller's rootfs is never written to. Each test
//! performs the attack from inside a container, asserts that it fails (or hurts only
//! the attacker) with the real tools' error, and that nothing stays reserved or leased.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

fn lwk_config(kernel: &str, script: &str) -> Value {
    let mut c = base_config(&["/bin/sh", "-c", script]);
    c["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("LWK_KERNEL={kernel}")));
    c
}

/// `run --detach`: the container's output goes to the returned file.
fn run_detached(w: &World, ctx: &Ctx, bundle: &Path, id: &str) -> PathBuf {
    let out = w.rt(ctx, &["run", "--detach", "--bundle", &s(bundle), id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    out.stdout_path
}

/// A neighbour: an LWK container run in the background from `cfg`, once it printed
/// `ready`. Returns its id.
fn start_neighbour(w: &World, ctx: &Ctx, cfg: &Value, ready: &str) -> String {
    let id = ctx.id("nb");
    let b = ctx.bundle(&id, cfg);
    wait_output(&run_detached(w, ctx, &b, &id), ready);
    id
}

fn wait_output(path: &Path, what: &str) -> String {
    wait_for(Duration::from_secs(20), what, || {
        let t = fs::read_to_string(path).unwrap_or_default();
        t.contains(what).then_some(t)
    })
}

fn delete(w: &World, ctx: &Ctx, id: &str) {
    let out = w.rt(ctx, &["delete", "--force", id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
}

/// What the attacker runs: the launcher's closure binary under another tool's name (the
/// simulator acts by argv[0]; on a real node the container would bring the tool).
const MCKERNEL_ATTACK: &str = "ln -sf /dev/.lwk/mcexec/bin/mcexec /tmp/ihkosctl; \
     for a in shutdown boot 'kargs hidos' 'load /tmp/img' 'ioctl 112a02 0' 'assign cpu 1'; do \
       /tmp/ihkosctl 0 $a; echo \"[$a]=$?\"; done; \
     /tmp/ihkosctl 0 get status; echo \"[status]=$?\"";

fn assert_mckernel_attack_refused(out: &str, err: &str) {
    for a in [
        "shutdown",
        "boot",
        "kargs hidos",
        "load /tmp/img",
        "ioctl 112a02 0",
        "assign cpu 1",
    ] {
        assert!(
            out.contains(&format!("[{a}]=255")),
            "`ihkosctl 0 {a}` from a container was not refused:\n{out}\n{err}"
        );
    }
    for msg in [
        "error: shutting down",
        "error: booting",
        "error: loading /tmp/img",
        "error: ioctl",
    ] {
        assert!(err.contains(msg), "missing {msg:?} in:\n{err}");
    }
    // Queries are what mcexec and a job's user may do: they still work.
    assert!(
        out.contains("RUNNING\n[status]=0"),
        "status query refused:\n{out}"
    );
}

#[test]
fn a_mckernel_container_cannot_shut_down_boot_or_reload_the_lwk() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    // A neighbour using the LWK the whole time.
    let n = start_neighbour(
        &w,
        &ctx,
        &lwk_config("mckernel", "echo neighbour-up; sleep 30"),
        "neighbour-up",
    );

    // The attack from a container's own process.
    let ab = ctx.bundle("a", &lwk_config("mckernel", MCKERNEL_ATTACK));
    let a = ctx.id("atk");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&ab), &a]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_mckernel_attack_refused(&out.stdout, &out.stderr);

    // And from a process exec'd into the neighbour, which asks for no LWK itself.
    let out = w.rt(&ctx, &["exec", &n, "/bin/sh", "-c", MCKERNEL_ATTACK]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_mckernel_attack_refused(&out.stdout, &out.stderr);

    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    assert_eq!(w.count("\t0 shutdown\t"), 0, "{}", w.calls());
    assert_eq!(ctx.status(&n), "running");
    delete(&w, &ctx, &n);
    w.assert_booted_and_torn_down("mckernel", 1);
}

/// A node of four CPUs (three for mOS), and a neighbour holding one of them with yod.
fn mos_node_with_a_neighbour(ctx: &Ctx) -> (World, String) {
    let w = World::with(
        ctx,
        &WorldOpts {
            node_cpus: Some(4),
            ..Default::default()
        },
    );
    let mut cfg = lwk_config("mos", "echo neighbour-up; sleep 30");
    cfg["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("LWK_ARGS=-C 1 -M 16M"));
    let n = start_neighbour(&w, ctx, &cfg, "neighbour-up");
    (w, n)
}

#[test]
fn a_mos_container_cannot_delete_or_remake_the_partition() {
    let ctx = Ctx::new();
    let (w, n) = mos_node_with_a_neighbour(&ctx);
    let sysfs = w.sim.join("sys/kernel/mOS");
    let reserved = fs::read_to_string(sysfs.join("lwkcpus_reserved")).unwrap();
    assert!(
        !reserved.trim().is_empty(),
        "the neighbour holds no reservation"
    );
    let partition = fs::read_to_string(sysfs.join("lwkcpus")).unwrap();
    assert!(!partition.trim().is_empty());

    // lwkctl is the yod closure under another name; then the file it writes, directly.
    let attack = "ln -sf /dev/.lwk/yod/bin/yod /tmp/lwkctl; \
                  /tmp/lwkctl -d -f; echo \"[delete]=$?\"; \
                  /tmp/lwkctl -f -c 'lwkcpus=auto lwkmem=auto'; echo \"[create]=$?\"; \
                  echo 0 > /sys/kernel/mOS/lwk_config; echo \"[write]=$?\"; \
                  echo 9 > /sys/kernel/mOS/lwkcpus; echo \"[lwkcpus]=$?\"";
    let ab = ctx.bundle("a", &lwk_config("mos", attack));
    let a = ctx.id("atk");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&ab), &a]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    for step in ["delete", "create", "write", "lwkcpus"] {
        assert!(
            !out.stdout.contains(&format!("[{step}]=0")),
            "{step} succeeded from a container:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("lwk_config: Read-only file system"),
        "lwkctl's error must name the refused write: {}",
        out.stderr
    );
    // exec'd processes share the container's mounts.
    let out = w.rt(&ctx, &["exec", &n, "/bin/sh", "-c", attack]);
    assert!(!out.stdout.contains("[delete]=0"), "{}", out.stdout);

    // The partition and the neighbour's reservation are intact, and the neighbour's
    // own yod ran on a read-only directory.
    assert_eq!(
        fs::read_to_string(sysfs.join("lwk_config")).unwrap().trim(),
        "lwkcpus=auto lwkmem=auto"
    );
    assert_eq!(
        fs::read_to_string(sysfs.join("lwkcpus")).unwrap(),
        partition
    );
    assert_eq!(
        fs::read_to_string(sysfs.join("lwkcpus_reserved")).unwrap(),
        reserved
    );
    assert_eq!(w.count("lwkctl\t-d"), 0, "{}", w.calls());
    delete(&w, &ctx, &n);
    w.assert_booted_and_torn_down("mos", 1);
}

#[test]
fn yods_lock_on_the_mos_directory_is_node_wide() {
    let ctx = Ctx::new();
    let (w, n) = mos_node_with_a_neighbour(&ctx);
    // yod in a container flocks its /sys/kernel/mOS; while the host's directory is
    // locked it must wait (the same inode), and give up after YOD_TIMEOUT.
    let mut cfg = lwk_config("mos", "echo ran");
    cfg["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("YOD_TIMEOUT=300"));
    let b = ctx.bundle("l", &cfg);
    let dir = fs::File::open(w.sim.join("sys/kernel/mOS")).unwrap();
    // SAFETY: flock on a descriptor we own, released when it drops.
    assert_eq!(unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) }, 0);
    let id = ctx.id("locked");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert_eq!(out.code(), Some(240), "{}", ctx.explain(&out));
    assert!(!out.stdout.contains("ran"), "{}", out.stdout);
    drop(dir);
    let id = ctx.id("free");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
    assert!(
        out.ok() && out.stdout.contains("ran"),
        "{}",
        ctx.explain(&out)
    );
    delete(&w, &ctx, &n);
    w.assert_booted_and_torn_down("mos", 1);
}

/// Host processes whose pid in the namespace of `init` is `local`.
fn holders(init: i32, local: u32) -> Vec<i32> {
    let ns = ns_of(&init.to_string(), "pid");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| s(&l) == ns))
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .and_then(|v| v.split_whitespace().last()?.parse::<u32>().ok())
                })
                == Some(local)
        })
        .collect()
}

/// Make the next pid of the namespace of `init` be `next` (what a process that forks
/// long enough, or holds CAP_SYS_ADMIN, gets to), then exec a registered launcher
/// there: a neighbour holding that namespace-local pid.
fn squat(w: &World, ctx: &Ctx, container: &str, next: u32) -> Out {
    let init = ctx.pid(container);
    let st = Command::new("nsenter")
        .args(["-t", &init.to_string(), "-p", "--", "/bin/sh", "-c"])
        .arg(format!("echo {} > /proc/sys/kernel/ns_last_pid", next - 1))
        .status()
        .unwrap();
    assert!(st.success(), "setting ns_last_pid in {container}");
    w.rt(
        ctx,
        &[
            "exec",
            "--detach",
            container,
            "/dev/.lwk/mcexec/bin/mcexec",
            "0",
            "/bin/sleep",
            "30",
        ],
    )
}

fn launcher_of(stdout: &str) -> u32 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("launcher="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no launcher pid in {stdout:?}"))
}

#[test]
fn a_neighbour_holding_a_launchers_pid_before_or_after_it_starts_cannot_take_it() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let n = start_neighbour(&w, &ctx, &lwk_config("mckernel", "echo up; sleep 60"), "up");

    // Where the next container's launcher goes on this node.
    let vb = ctx.bundle("v", &lwk_config("mckernel", "echo launcher=$PPID"));
    let probe = ctx.id("probe");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&vb), &probe]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let want = launcher_of(&out.stdout);

    // Before: the neighbour holds that pid (with a registered launcher) first.
    let sq = squat(&w, &ctx, &n, want);
    assert!(sq.ok(), "{}", ctx.explain(&sq));
    let held = wait_for(Duration::from_secs(10), "the squatter's launcher", || {
        let h = holders(ctx.pid(&n), want);
        (!h.is_empty()).then_some(h)
    });
    let v = ctx.id("victim");
    let out = w.rt(&ctx, &["run", "--bundle", &s(&vb), &v]);
    assert!(out.ok(), "the victim failed: {}", ctx.explain(&out));
    let got = launcher_of(&out.stdout);
    assert_ne!(got, want, "the launcher took the pid a neighbour holds");
    assert!(held.iter().all(|p| pid_alive(*p)), "the squatter died");

    // After: the victim runs first; a neighbour that reaches its pid only fails its own
    // launcher, and the victim finishes undisturbed.
    let lb = ctx.bundle(
        "l",
        &lwk_config(
            "mckernel",
            "echo launcher=$PPID; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo victim-done",
        ),
    );
    let l = ctx.id("victim");
    let l_out = run_detached(&w, &ctx, &lb, &l);
    let pid = launcher_of(&wait_output(&l_out, "launcher="));
    let sq = squat(&w, &ctx, &n, pid);
    assert!(sq.ok(), "{}", ctx.explain(&sq));
    let refused = wait_for(Duration::from_secs(10), "the squatter's refusal", || {
        let e = fs::read_to_string(&sq.stderr_path).unwrap_or_default();
        e.contains("already exists").then_some(e)
    });
    assert!(
        refused.contains(&format!("per-process data for pid {pid} already exists")),
        "{refused}"
    );
    fs::write(lb.join("rootfs/tmp/go"), "").unwrap();
    wait_output(&l_out, "victim-done");
    wait_for(Duration::from_secs(10), "the victim to exit", || {
        (ctx.status(&l) == "stopped").then_some(())
    });
    for id in [&l, &n] {
        delete(&w, &ctx, id);
    }
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_container_running_many_launchers_never_meets_a_neighbours() {
    // A small stride: with slots handed out side by side, the first container's
    // launchers would reach the second's pid within 50 runs.
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            top: "pid_stride = 100",
            ..Default::default()
        },
    );
    let loop_ = "while [ ! -e /tmp/go ]; do sleep 0.05; done; i=0; \
                 while [ $i -lt 70 ]; do \
                   /dev/.lwk/mcexec/bin/mcexec 0 /bin/true || echo \"FAILED at $i\"; \
                   i=$((i+1)); done; echo runs-done";
    let ab = ctx.bundle("a", &lwk_config("mckernel", loop_));
    let a = ctx.id("many");
    let a_out = run_detached(&w, &ctx, &ab, &a);
    // The neighbour holds two adjacent pids with launchers (its own, and one its
    // workload runs), so a walk in steps of two cannot step over both.
    let n = start_neighbour(
        &w,
        &ctx,
        &lwk_config(
            "mckernel",
            "exec /dev/.lwk/mcexec/bin/mcexec 0 /bin/sh -c 'echo up; sleep 60'",
        ),
        "up",
    );
    fs::write(ab.join("rootfs/tmp/go"), "").unwrap();
    let text = wait_output(&a_out, "runs-done");
    let err = fs::read_to_string(a_out.with_extension("stderr")).unwrap_or_default();
    assert!(!text.contains("FAILED"), "{text}\n{err}");
    assert_eq!(ctx.status(&n), "running");
    for id in [&a, &n] {
        delete(&w, &ctx, id);
    }
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_spec_without_a_dev_tmpfs_leaves_the_rootfs_untouched() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    for kernel in ["mckernel", "mos"] {
        let mut cfg = lwk_config(kernel, "ls -a /dev/.lwk; ls /dev");
        cfg["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/dev");
        let b = ctx.bundle(&format!("b-{kernel}"), &cfg);
        let rootfs = b.join("rootfs");
        let before = snapshot(&rootfs);

        let id = ctx.id(kernel);
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &id]);
        assert!(out.ok(), "{}", ctx.explain(&out));
        assert!(out.stdout.contains("null"), "no devices: {}", out.stdout);

        let id = ctx.id(kernel);
        let out = w.rt(&ctx, &["create", "--bundle", &s(&b), &id]);
        assert!(out.ok(), "{}", ctx.explain(&out));
        w.rt(&ctx, &["start", &id]);
        ctx.wait_status(&id, "stopped", Duration::from_secs(20));
        delete(&w, &ctx, &id);

        let after = snapshot(&rootfs);
        let added: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
        let gone: Vec<_> = before.iter().filter(|e| !after.contains(e)).collect();
        assert!(
            added.is_empty() && gone.is_empty(),
            "{kernel}: the rootfs changed: new or changed {added:?}, gone {gone:?}"
        );
    }
    assert_eq!(w.count("\t0 boot\t"), 2, "{}", w.calls());
    w.assert_clean();
}
