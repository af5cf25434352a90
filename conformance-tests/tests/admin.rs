//! The admin's commands: `lwk-runc doctor` on nodes that are and are not ready, and
//! `lwk-runc setup-engine` on engine config files a site already has. Everything here
//! is private to the test (its own simulated node, lease dir, configs); the engines'
//! system-wide files are never touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

/// The README's simulator set-up (config/sim.toml against the installed simulator,
/// `lwk-sim modprobe`), with the node and lease dir moved into the test's directory.
fn documented_sim_setup(ctx: &Ctx) -> (PathBuf, PathBuf) {
    let sim = ctx.path("sim");
    let text = fs::read_to_string(workspace_root().join("config/sim.toml")).unwrap();
    let text = text
        .replace("/run/lwk-sim", &s(&sim))
        .replace("/run/lwk-runc-lwk", &s(&ctx.path("leases")))
        .replace("/opt/lwk-sim", sim_prefix())
        + &format!("\n[images]\ncache_dir = \"{}\"\n", s(&ctx.path("images")));
    let config = ctx.path("sim.toml");
    fs::write(&config, text).unwrap();
    let st = Command::new(format!("{}/lwk-sim", sim_bin()))
        .arg("modprobe")
        .env("LWK_SIM_ROOT", &sim)
        .status()
        .unwrap();
    assert!(st.success(), "lwk-sim modprobe failed");
    (sim, config)
}

fn doctor(ctx: &Ctx, sim: Option<&Path>, config: &Path, json: bool) -> Out {
    let mut c = ctx.cmd(&["doctor"]);
    if json {
        c.args(["--format", "json"]);
    }
    c.env("LWK_RUNC_CONFIG", config);
    if let Some(sim) = sim {
        c.env("LWK_SIM_ROOT", sim);
    }
    ctx.run_cmd(c)
}

fn report(out: &Out) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --format json is not JSON ({e}): {}", out.stdout))
}

/// The finding `check` of `area` in a JSON report.
fn finding<'a>(r: &'a Value, area: &str, check: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["area"] == area && f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {area}/{check} in {r:#}"))
}

#[test]
fn doctor_without_a_config_names_it_and_the_fix_and_exits_1() {
    let ctx = Ctx::new();
    let missing = ctx.path("etc/lwk-runc/config.toml");
    let out = doctor(&ctx, None, &missing, false);
    assert_eq!(out.code(), Some(1), "{}", ctx.explain(&out));
    let text = &out.stdout;
    assert!(
        text.contains(&format!(
            "{} (from LWK_RUNC_CONFIG) does not exist",
            s(&missing)
        )),
        "{text}"
    );
    assert!(
        text.contains("fix: install the lwk-runc package") && text.contains("enabled = true"),
        "the fix is not named: {text}"
    );
    assert!(
        text.trim_end().ends_with("warning(s)") && text.contains("NOT READY"),
        "{text}"
    );

    let out = doctor(&ctx, None, &missing, true);
    assert_eq!(out.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["ready"], false);
    let f = finding(&r, "config", "config");
    assert_eq!(f["status"], "fail");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("[mckernel] enabled = true"),
        "{f}"
    );
    // The host checks ran all the same.
    assert_eq!(finding(&r, "host", "namespaces")["status"], "ok");
}

#[test]
fn doctor_after_the_documented_simulator_setup_reports_ready_and_changes_nothing() {
    let ctx = Ctx::new();
    let (sim, config) = documented_sim_setup(&ctx);
    let calls = || fs::read_to_string(sim.join("calls.log")).unwrap_or_default();
    let before = calls();
    let out = doctor(&ctx, Some(&sim), &config, false);
    assert_eq!(out.code(), Some(0), "{}", ctx.explain(&out));
    assert!(
        out.stdout
            .contains("READY for LWK containers on mckernel, mos"),
        "{}",
        out.stdout
    );
    for line in [
        "mckernel.mcexec",
        "build-id",
        "instance",
        "mos.yod",
        "images.cache_dir",
    ] {
        assert!(out.stdout.contains(line), "no {line} check: {}", out.stdout);
    }
    // Read-only: the simulated tools saw queries only, and no lease dir was made.
    let new_calls = calls()[before.len()..].to_string();
    for l in new_calls.lines() {
        assert!(
            ["get status", "get buildid", "query cpu", "query mem"]
                .iter()
                .any(|q| l.contains(q)),
            "doctor ran a tool action that is not a query: {l}"
        );
    }
    assert!(!ctx.path("leases").exists(), "doctor created the lease dir");
    assert!(
        !ctx.path("images").exists(),
        "doctor created the image cache"
    );

    // An LWK container up: the instance is accounted for by its lease.
    let env = [("LWK_SIM_ROOT", &sim), ("LWK_RUNC_CONFIG", &config)];
    let b = ctx.bundle("b", &{
        let mut c = base_config(&["sleep", "100"]);
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("LWK_KERNEL=mckernel"));
        c
    });
    let id = ctx.id("doc");
    let mut c = ctx.cmd(&["run", "--detach", "--bundle", &s(&b), &id]);
    c.envs(env);
    let out = ctx.run_cmd(c);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let r = report(&doctor(&ctx, Some(&sim), &config, true));
    assert_eq!(r["ready"], true, "{r:#}");
    let inst = finding(&r, "mckernel", "instance");
    assert_eq!(inst["status"], "ok", "{inst}");
    assert!(
        inst["message"]
            .as_str()
            .unwrap()
            .starts_with("RUNNING; 1 container"),
        "{inst}"
    );

    // Its init killed, its delete never coming: a stale lease, an instance nobody uses.
    let pid = ctx.pid(&id);
    // SAFETY: kill(2) on the init of a container this test created.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Gone means reaped: a zombie's pid and start time still match its lease.
    wait_for(
        Duration::from_secs(10),
        "the killed init to be reaped",
        || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );
    let out = doctor(&ctx, Some(&sim), &config, true);
    assert_eq!(out.code(), Some(0), "warnings only: {}", out.stdout);
    let r = report(&out);
    let leases = finding(&r, "leases", "leases");
    assert_eq!(leases["status"], "warn", "{leases}");
    assert!(
        leases["message"].as_str().unwrap().contains(&id),
        "{leases}"
    );
    assert_eq!(
        leases["fix"],
        "lwk-runc lwk gc (every LWK container's start and end also drops them)"
    );
    assert_eq!(finding(&r, "mckernel", "instance")["status"], "warn");

    let mut gc = ctx.cmd(&["lwk", "gc"]);
    gc.envs(env);
    let out = ctx.run_cmd(gc);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let r = report(&doctor(&ctx, Some(&sim), &config, true));
    assert_eq!(finding(&r, "leases", "leases")["status"], "ok");
    let inst = finding(&r, "mckernel", "instance");
    assert!(
        inst["message"].as_str().unwrap().starts_with("no instance"),
        "{inst}"
    );
    let mut del = ctx.cmd(&["delete", "--force", &id]);
    del.envs(env);
    let _ = ctx.run_cmd(del);
}

#[test]
fn doctor_reports_a_missing_or_world_writable_tool_and_config() {
    let ctx = Ctx::new();
    let (sim, config) = documented_sim_setup(&ctx);
    let tools = ctx.path("tools");
    fs::create_dir_all(&tools).unwrap();
    let mcexec = tools.join("mcexec");
    let original = fs::read_to_string(&config).unwrap();
    let text = original.replace(&format!("{}/mcexec", sim_bin()), &s(&mcexec));
    assert_ne!(text, original, "sim.toml names no mcexec");
    fs::write(&config, &text).unwrap();

    let r = report(&doctor(&ctx, Some(&sim), &config, true));
    assert_eq!(r["ready"], false);
    let f = finding(&r, "mckernel", "mckernel.mcexec");
    assert_eq!(f["status"], "fail");
    assert_eq!(f["message"], format!("{} does not exist", s(&mcexec)));
    assert!(
        f["fix"].as_str().unwrap().contains("mckernel.mcexec"),
        "{f}"
    );

    fs::copy(format!("{}/mcexec", sim_bin()), &mcexec).unwrap();
    fs::set_permissions(&mcexec, fs::Permissions::from_mode(0o777)).unwrap();
    let out = doctor(&ctx, Some(&sim), &config, false);
    assert_eq!(out.code(), Some(1), "{}", out.stdout);
    let r = report(&doctor(&ctx, Some(&sim), &config, true));
    let f = finding(&r, "mckernel", "mckernel.mcexec");
    assert_eq!(f["status"], "fail");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("writable by group or others (mode 0777)"),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("chmod go-w"), "{f}");

    fs::set_permissions(&mcexec, fs::Permissions::from_mode(0o755)).unwrap();
    let out = doctor(&ctx, Some(&sim), &config, false);
    assert_eq!(out.code(), Some(0), "fixed, ready again: {}", out.stdout);

    fs::set_permissions(&config, fs::Permissions::from_mode(0o666)).unwrap();
    let r = report(&doctor(&ctx, Some(&sim), &config, true));
    assert_eq!(r["ready"], false);
    let f = finding(&r, "config", "config");
    assert!(
        f["message"].as_str().unwrap().contains("(mode 0666)"),
        "a world-writable config is not reported: {f}"
    );
}

/// `setup-engine` run as an admin would, on a file of the test's own.
fn setup_engine(ctx: &Ctx, engine: &str, file: &Path, extra: &[&str]) -> Out {
    let mut c = ctx.cmd(&["setup-engine", engine, "--config"]);
    c.arg(file).args(extra);
    ctx.run_cmd(c)
}

/// Every file in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn setup_engine_docker_keeps_the_site_settings_backs_up_and_dry_run_changes_nothing() {
    let ctx = Ctx::new();
    let dir = ctx.path("etc-docker");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("daemon.json");
    let site = "{\n\t\"log-level\": \"warn\",\n\t\"runtimes\": {\n\t\t\"runc-debug\": {\n\t\t\t\"path\": \"/usr/bin/runc\",\n\t\t\t\"runtimeArgs\": [\"--debug\"]\n\t\t}\n\t},\n\t\"storage-driver\": \"overlay2\"\n}\n";
    fs::write(&file, site).unwrap();

    let out = setup_engine(&ctx, "docker", &file, &["--dry-run"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(
        out.stdout.contains("+\t\t\"lwk-runc\": {"),
        "no diff: {}",
        out.stdout
    );
    assert!(out.stdout.contains("dry run"), "{}", out.stdout);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        site,
        "--dry-run changed the file"
    );
    assert_eq!(listing(&dir), ["daemon.json"], "--dry-run left a file");

    let out = setup_engine(&ctx, "docker", &file, &[]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(
        out.stdout.contains("systemctl reload docker"),
        "{}",
        out.stdout
    );
    let v: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["log-level"], "warn");
    assert_eq!(v["storage-driver"], "overlay2");
    assert_eq!(
        v["runtimes"]["runc-debug"]["runtimeArgs"],
        json!(["--debug"])
    );
    let bin = fs::canonicalize(runtime_bin()).unwrap();
    assert_eq!(v["runtimes"]["lwk-runc"]["path"], s(&bin));
    let files = listing(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let backup = dir.join(&files[1]);
    assert!(
        files[1].starts_with("daemon.json.lwk-runc-") && files[1].ends_with(".bak"),
        "{files:?}"
    );
    assert_eq!(
        fs::read_to_string(backup).unwrap(),
        site,
        "the backup is not the old file"
    );

    let out = setup_engine(&ctx, "docker", &file, &[]);
    assert!(
        out.ok() && out.stdout.contains("nothing to do"),
        "{}",
        out.stdout
    );
    assert_eq!(listing(&dir).len(), 2, "a second run made another backup");

    let bad = dir.join("broken.json");
    fs::write(&bad, "{\"debug\": tru").unwrap();
    let out = setup_engine(&ctx, "docker", &bad, &[]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("broken.json: not valid JSON")
            && out.stderr.contains("nothing was changed"),
        "{}",
        ctx.explain(&out)
    );
    assert_eq!(fs::read_to_string(&bad).unwrap(), "{\"debug\": tru");
}

/// `setup-engine ENGINE` on `file` holding a site's `site` text: it succeeds, says
/// `next` (what to restart or run), and leaves the site's text first and unchanged.
/// The binary it registered, and the new text.
fn set_up_over_a_site_file(
    ctx: &Ctx,
    engine: &str,
    file: &Path,
    site: &str,
    next: &str,
) -> (String, String) {
    fs::write(file, site).unwrap();
    let out = setup_engine(ctx, engine, file, &[]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains(next), "{}", out.stdout);
    let text = fs::read_to_string(file).unwrap();
    assert!(text.starts_with(site), "the site's text moved: {text}");
    (s(&fs::canonicalize(runtime_bin()).unwrap()), text)
}

#[test]
fn setup_engine_containerd_writes_a_file_containerd_accepts() {
    const TEST: &str = "setup_engine_containerd_writes_a_file_containerd_accepts";
    let ctx = Ctx::new();
    // Debian's own config.toml: no runtimes table, so containerd's built-in runc.
    let ctd = ctx.path("containerd.toml");
    let site = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n";
    let (bin, _) = set_up_over_a_site_file(
        &ctx,
        "containerd",
        &ctd,
        site,
        "systemctl restart containerd",
    );
    let Some(containerd) = engine_tool(TEST, "containerd", "containerd") else {
        return;
    };
    // containerd's own reading of the file: the site's settings, lwk-runc, and runc
    // still there (the CRI plugin does not load without its default runtime).
    let o = Command::new(containerd)
        .args(["--config", &s(&ctd), "config", "dump"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "containerd refuses the file: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes";
    for want in [
        format!("{cri}.lwk-runc]"),
        format!("{cri}.runc]"),
        format!("BinaryName = \"{bin}\""),
        "default_runtime_name = \"runc\"".into(),
        "bin_dir = \"/usr/lib/cni\"".into(),
    ] {
        assert!(
            dump.contains(&want),
            "no {want} in containerd's view:\n{dump}"
        );
    }
}

#[test]
fn setup_engine_podman_writes_a_file_podman_accepts() {
    const TEST: &str = "setup_engine_podman_writes_a_file_podman_accepts";
    let ctx = Ctx::new();
    let conf = ctx.path("containers.conf");
    let site = "# site settings\n[engine]\nevents_logger = \"file\"   # no journald here\n";
    let (bin, text) =
        set_up_over_a_site_file(&ctx, "podman", &conf, site, "podman run --runtime lwk-runc");
    assert!(text.contains(&format!("lwk-runc = [\"{bin}\"]")), "{text}");
    let Some(podman) = engine_tool(TEST, "podman", "podman") else {
        return;
    };
    // podman resolves the runtime by name from the file.
    let o = private_podman(&podman, &ctx.path("podman"))
        .env("CONTAINERS_CONF", &conf)
        .args(["--runtime", "lwk-runc", "info", "--format"])
        .arg("{{.Host.OCIRuntime.Path}}")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "podman: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), bin);
}
