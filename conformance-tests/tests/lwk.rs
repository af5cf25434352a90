//! LWK acceptance: lwk-runc against the simulator (`lwk-sim install --prefix /opt/lwk-sim`),
//! on real namespaces. Each test gets its own simulated node (LWK_SIM_ROOT), lease dir and
//! config, so tests run in parallel without sharing an LWK.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lwk_conformance::*;
use serde_json::{json, Value};

const SIM: &str = "/opt/lwk-sim/bin";

struct World {
    sim: PathBuf,
    config: PathBuf,
    leases: PathBuf,
}

impl World {
    fn new(ctx: &Ctx, extra: &str) -> World {
        assert!(
            Path::new(SIM).join("lwk-sim").exists(),
            "install the simulator first: lwk-sim install --prefix /opt/lwk-sim"
        );
        let sim = ctx.path("sim");
        fs::create_dir_all(&sim).unwrap();
        let st = Command::new(format!("{SIM}/lwk-sim"))
            .arg("modprobe")
            .env("LWK_SIM_ROOT", &sim)
            .status()
            .unwrap();
        assert!(st.success(), "lwk-sim modprobe failed");
        let leases = ctx.path("leases");
        let config = ctx.path("lwk.toml");
        fs::write(
            &config,
            format!(
                r#"lease_dir = "{l}"
{extra}
[mckernel]
enabled = true
ihkconfig = "{SIM}/ihkconfig"
ihkosctl = "{SIM}/ihkosctl"
mcexec = "{SIM}/mcexec"
dev_dir = "{s}/dev"
cpus = "1"
memory = "64M@0"
image = "/opt/lwk-sim/smp-x86/kernel/mckernel.img"
boot_timeout_secs = 20

[mos]
enabled = true
lwkctl = "{SIM}/lwkctl"
yod = "{SIM}/yod"
sysfs = "{s}/sys/kernel/mOS"
"#,
                l = leases.display(),
                s = sim.display()
            ),
        )
        .unwrap();
        World {
            sim,
            config,
            leases,
        }
    }

    fn cmd(&self, ctx: &Ctx, args: &[&str]) -> Command {
        let mut c = ctx.cmd(args);
        c.env("LWK_SIM_ROOT", &self.sim)
            .env("LWK_RUNC_CONFIG", &self.config);
        c
    }

    fn rt(&self, ctx: &Ctx, args: &[&str]) -> Out {
        ctx.run_cmd(self.cmd(ctx, args))
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.sim.join("calls.log")).unwrap_or_default()
    }

    fn count(&self, what: &str) -> usize {
        self.calls().lines().filter(|l| l.contains(what)).count()
    }

    /// Reserved CPUs + memory as the simulator reports them (empty = nothing).
    fn reserved(&self) -> String {
        let q = |w: &str| {
            let o = Command::new(format!("{SIM}/ihkconfig"))
                .args(["0", "query", w])
                .env("LWK_SIM_ROOT", &self.sim)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let mos = fs::read_to_string(self.sim.join("sys/kernel/mOS/lwkcpus")).unwrap_or_default();
        format!("{}{}{}", q("cpu"), q("mem"), mos.trim())
    }

    fn leases(&self) -> usize {
        fs::read_dir(self.leases.join("leases"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn assert_clean(&self) {
        assert_eq!(
            self.reserved(),
            "",
            "something stays reserved; calls:\n{}",
            self.calls()
        );
        assert_eq!(self.leases(), 0, "a lease is left");
    }
}

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
    assert!(out.stdout.contains("launcher=1000"), "{}", out.stdout);
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
    let mut kids = Vec::new();
    for i in 0..32 {
        // One rootfs, but a bundle (and so a cgroup) per container, as engines do.
        let mut c = cfg_with(
            &["/bin/sh", "-c", "echo launcher=$PPID; sleep 3"],
            &["LWK_KERNEL=mckernel"],
            None,
        );
        c["root"]["path"] = json!(s(&shared.join("rootfs")));
        c["linux"]["cgroupsPath"] = json!(format!("/lwk-conformance/{}", unique_id("c32")));
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
    let mut pids = Vec::new();
    for (child, o, e) in kids {
        let st = wait_timeout(child, Duration::from_secs(120), "lwk-runc run");
        let out = fs::read_to_string(&o).unwrap_or_default();
        assert!(
            st.success(),
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
    assert_eq!(uniq.len(), 32, "launcher pids collided: {pids:?}");
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    assert_eq!(w.count(" destroy "), 1, "{}", w.calls());
    w.assert_clean();
}

#[test]
fn boot_panic_fails_every_queued_run_clearly_and_reserves_nothing() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    fs::write(w.sim.join("faults"), "boot_panic once\n").unwrap();
    let b = ctx.bundle(
        "b",
        &cfg_with(&["/bin/true"], &["LWK_KERNEL=mckernel"], None),
    );
    let kids: Vec<_> = (0..32)
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
    let mut failed = 0;
    for (child, _e) in kids {
        if !wait_timeout(child, Duration::from_secs(120), "lwk-runc run").success() {
            failed += 1;
        }
    }
    let log = ctx.log_text();
    // Containers that arrived after the failure may boot afresh (the fault was `once`);
    // every one queued behind the failed boot reports it.
    assert!(failed >= 1, "no run failed");
    assert!(
        log.contains("McKernel") && log.contains("PANIC") && log.contains("kmsg"),
        "{log}"
    );
    assert!(
        log.contains("simulated boot failure"),
        "kmsg tail missing: {log}"
    );
    assert!(w.count("\t0 boot\t") >= 1, "{}", w.calls());
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
