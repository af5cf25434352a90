//! Hooks: order, namespace, `path` resolution, state on stdin, failures
//! (runtime-spec v1.3.0 config.md "POSIX-platform Hooks", runtime.md "Lifecycle").

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
/// Where the startContainer hook lives inside the rootfs only.
const IN_CONTAINER_HOOK: &str = "/lwk-conformance-hooks/start.sh";
const HOST_STAGES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "poststart",
    "poststop",
];

struct HookBundle {
    bundle: PathBuf,
    out: PathBuf,
}

/// A bundle whose hooks each append `<stage> <mnt ns> <env>` to `out/order`
/// and save their stdin to `out/<stage>.json`. `out` is bind-mounted at
/// /hookout so the in-container startContainer hook can write there too.
fn hook_bundle(ctx: &Ctx, mut cfg: Value, failing: Option<&str>) -> HookBundle {
    let out = ctx.path("hookout");
    fs::create_dir_all(&out).unwrap();
    let host_hook = ctx.path("hook.sh");
    write_script(
        &host_hook,
        &format!(
            "#!/bin/sh\ncat > {o}/$1.json\necho \"$1 $(readlink /proc/self/ns/mnt) $LWK_HOOK_ENV\" >> {o}/order\n{fail}",
            o = out.display(),
            fail = failing
                .map(|f| format!("[ \"$1\" = {f} ] && exit 1\nexit 0\n"))
                .unwrap_or_default()
        ),
    );
    assert!(
        !Path::new(IN_CONTAINER_HOOK).exists(),
        "{IN_CONTAINER_HOOK} must not exist on the host"
    );
    let mut hooks = serde_json::Map::new();
    for stage in HOST_STAGES {
        hooks.insert(
            stage.to_string(),
            json!([{
                "path": s(&host_hook),
                "args": ["hook.sh", stage],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LWK_HOOK_ENV=env-ok"],
                "timeout": 10
            }]),
        );
    }
    hooks.insert(
        "startContainer".into(),
        json!([{
            "path": IN_CONTAINER_HOOK,
            "args": ["start.sh", "startContainer"],
            "env": ["PATH=/bin", "LWK_HOOK_ENV=env-ok"]
        }]),
    );
    cfg["hooks"] = Value::Object(hooks);
    cfg["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hookout", "type": "bind", "source": s(&out),
        "options": ["rbind", "rw"]
    }));
    let bundle = ctx.bundle("b", &cfg);
    write_script(
        &bundle.join("rootfs").join(&IN_CONTAINER_HOOK[1..]),
        // It takes its time, so a poststart hook run before the process exists (not
        // after the startContainer hooks) shows in the order.
        "#!/bin/sh\nsleep 0.3\ncat > /hookout/$1.json\necho \"$1 $(readlink /proc/self/ns/mnt) $LWK_HOOK_ENV\" >> /hookout/order\n",
    );
    HookBundle { bundle, out }
}

/// (stage, mnt ns, env) per line of the order file.
fn order(out: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(out.join("order"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(str::to_string);
            (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            )
        })
        .collect()
}

fn stages(out: &Path) -> Vec<String> {
    order(out).into_iter().map(|(s, _, _)| s).collect()
}

fn hook_state(out: &Path, stage: &str) -> Value {
    let text = fs::read_to_string(out.join(format!("{stage}.json")))
        .unwrap_or_else(|e| panic!("{stage} hook left no stdin copy: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{stage} hook stdin is not state JSON ({e}): {text:?}"))
}

fn pos(v: &[String], stage: &str) -> usize {
    let n = v.iter().filter(|s| *s == stage).count();
    assert_eq!(n, 1, "{stage} must run exactly once: {v:?}");
    v.iter().position(|s| s == stage).unwrap()
}

#[test]
fn hooks_order_namespaces_and_state() {
    let ctx = Ctx::new();
    let hb = hook_bundle(&ctx, base_config(&["sleep", "60"]), None);
    let id = ctx.id("hooks");
    let host_mnt = ns_of("self", "mnt");

    ctx.create(&hb.bundle, &id);
    let init = ctx.pid(&id);
    let ctr_mnt = ns_of(&init.to_string(), "mnt");
    let after_create = stages(&hb.out);
    assert!(
        !after_create.contains(&"startContainer".to_string()),
        "startContainer ran during create: {after_create:?}"
    );
    let (p, r, c) = (
        pos(&after_create, "prestart"),
        pos(&after_create, "createRuntime"),
        pos(&after_create, "createContainer"),
    );
    assert!(p < r && r < c, "create-time hook order: {after_create:?}");

    ctx.rt_ok(&["start", &id]);
    let all = wait_for(T, "startContainer hook", || {
        let v = stages(&hb.out);
        v.contains(&"startContainer".to_string()).then_some(v)
    });
    assert!(
        pos(&all, "createContainer") < pos(&all, "startContainer"),
        "{all:?}"
    );

    ctx.rt_ok(&["kill", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
    ctx.rt_ok(&["delete", &id]);
    let all = stages(&hb.out);
    assert_eq!(
        all.last().map(String::as_str),
        Some("poststop"),
        "poststop must be last and run by delete: {all:?}"
    );
    pos(&all, "poststop");

    // Namespaces and hook env.
    for (stage, mnt, env) in order(&hb.out) {
        assert_eq!(env, "env-ok", "{stage} hook did not get its env");
        match stage.as_str() {
            "createContainer" | "startContainer" => assert_eq!(
                mnt, ctr_mnt,
                "{stage} must run in the container's mount namespace"
            ),
            // "The runtime namespace": outside the container, seeing the host's
            // filesystem (each hook writes to the host-side `out/` to prove it). A
            // runtime may run in a mount namespace of its own (lwk-runc does when it
            // rewrites a spec), so equality with the caller's namespace is not owed
            // for the stages that run during create; poststart and poststop run
            // from fresh runtime invocations and must be in the caller's.
            "prestart" | "createRuntime" => assert_ne!(
                mnt, ctr_mnt,
                "{stage} must run in the runtime's namespace, not the container's"
            ),
            _ => assert_eq!(
                mnt, host_mnt,
                "{stage} must run in the runtime's mount namespace"
            ),
        }
    }

    // State on stdin (status per oci-contract.md §1.4).
    let bundle = s(&fs::canonicalize(&hb.bundle).unwrap());
    for (stage, status) in [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststop", "stopped"),
    ] {
        let st = hook_state(&hb.out, stage);
        assert_eq!(st["id"], id.as_str(), "{stage} state: {st}");
        assert_eq!(st["status"], status, "{stage} state: {st}");
        assert_eq!(
            st["bundle"].as_str(),
            Some(bundle.as_str()),
            "{stage}: {st}"
        );
        assert!(st["ociVersion"].is_string(), "{stage}: {st}");
    }
    // Runtime-namespace hooks during create see the host pid of the init.
    for stage in ["prestart", "createRuntime"] {
        let st = hook_state(&hb.out, stage);
        assert_eq!(st["pid"].as_i64(), Some(init as i64), "{stage}: {st}");
    }
}

#[test]
fn hooks_poststart_runs_in_start() {
    if skip_if_known_difference("hooks_poststart_runs_in_start") {
        return;
    }
    let ctx = Ctx::new();
    let hb = hook_bundle(&ctx, base_config(&["sleep", "60"]), None);
    let id = ctx.id("poststart");
    ctx.create(&hb.bundle, &id);
    let init = ctx.pid(&id);
    assert!(
        !stages(&hb.out).contains(&"poststart".to_string()),
        "poststart ran during create: {:?}",
        stages(&hb.out)
    );
    ctx.rt_ok(&["start", &id]);
    // poststart runs before `start` returns.
    let all = stages(&hb.out);
    assert!(
        pos(&all, "startContainer") < pos(&all, "poststart"),
        "poststart must follow startContainer: {all:?}"
    );
    let st = hook_state(&hb.out, "poststart");
    assert_eq!(st["status"], "running", "poststart state: {st}");
    assert_eq!(st["pid"].as_i64(), Some(init as i64), "poststart: {st}");
    assert_eq!(st["id"], id.as_str());
}

#[test]
fn hooks_failing_poststart_stops_container() {
    if skip_if_known_difference("hooks_failing_poststart_stops_container") {
        return;
    }
    let ctx = Ctx::new();
    let hb = hook_bundle(&ctx, base_config(&["sleep", "60"]), Some("poststart"));
    let id = ctx.id("failpoststart");
    ctx.create(&hb.bundle, &id);
    let init = ctx.pid(&id);
    let out = ctx.rt_fail(&["start", &id]);
    wait_for(T, "container to be stopped after failing poststart", || {
        (!pid_alive(init)).then_some(())
    });
    let st = ctx.rt(&["state", &id]);
    assert!(
        !st.ok() || st.stdout.contains("\"stopped\""),
        "container not stopped after failing poststart: {}\n{}",
        st.stdout,
        ctx.explain(&out)
    );
}

#[test]
fn hooks_failing_poststart_in_detached_run_leaves_nothing() {
    let ctx = Ctx::new();
    let hb = hook_bundle(&ctx, base_config(&["sleep", "60"]), Some("poststart"));
    let id = ctx.id("failrund");
    let out = ctx.rt_fail(&["run", "--detach", "--bundle", &s(&hb.bundle), &id]);
    let st = ctx.rt(&["state", &id]);
    assert!(
        !st.ok() && st.stderr.contains("does not exist"),
        "a detached run whose start failed left its container behind: {}{}\n{}",
        st.stdout,
        st.stderr,
        ctx.explain(&out)
    );
    assert!(
        !ctx.rt_ok(&["list", "--quiet"]).stdout.contains(&id),
        "listed after a failed detached run"
    );
}

#[test]
fn hooks_failing_create_runtime_fails_create() {
    let ctx = Ctx::new();
    let hb = hook_bundle(
        &ctx,
        base_config(&["sh", "-c", "touch /ran; sleep 60"]),
        Some("createRuntime"),
    );
    let id = ctx.id("failcr");
    let out = ctx.rt_fail(&["create", "--bundle", &s(&hb.bundle), &id]);
    assert!(
        !stages(&hb.out).contains(&"createContainer".to_string()),
        "createContainer ran after createRuntime failed: {:?}",
        stages(&hb.out)
    );
    // Nothing may be left running or startable.
    let st = ctx.rt(&["state", &id]);
    assert!(
        !st.ok() || st.stdout.contains("\"stopped\""),
        "container survived a failing createRuntime hook: {}\n{}",
        st.stdout,
        ctx.explain(&out)
    );
    let _ = ctx.rt(&["start", &id]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!hb.bundle.join("rootfs/ran").exists(), "user process ran");
}

#[test]
fn hooks_failing_poststop_only_warns() {
    let ctx = Ctx::new();
    let hb = hook_bundle(&ctx, base_config(&["sleep", "60"]), Some("poststop"));
    let id = ctx.id("failpoststop");
    ctx.create(&hb.bundle, &id);
    ctx.rt_ok(&["start", &id]);
    ctx.rt_ok(&["kill", &id, "KILL"]);
    ctx.wait_status(&id, "stopped", T);
    // runtime-spec: a poststop failure is logged, delete still succeeds.
    ctx.rt_ok(&["delete", &id]);
    assert!(stages(&hb.out).contains(&"poststop".to_string()));
    ctx.rt_fail(&["state", &id]);
}

/// A startContainer hook whose entry has no `env` runs with the container process's
/// environment, as runc runs it (from its init, after it took on the process's env);
/// one with an `env` gets exactly that.
#[test]
fn hooks_start_container_without_env_sees_the_process_env() {
    let ctx = Ctx::new();
    let mut cfg = base_config(&["true"]);
    cfg["process"]["env"] = json!(["PATH=/bin", "LWK_PROCESS_ONLY=from-process"]);
    cfg["hooks"] = json!({"startContainer": [
        {"path": "/start-hook.sh", "args": ["start-hook.sh", "no-env"]},
        {"path": "/start-hook.sh", "args": ["start-hook.sh", "own-env"],
         "env": ["LWK_HOOK_ONLY=from-hook"]}
    ]});
    let b = ctx.bundle("b", &cfg);
    write_script(
        &b.join("rootfs/start-hook.sh"),
        "#!/bin/sh\necho \"$1 [$LWK_PROCESS_ONLY] [$LWK_HOOK_ONLY]\" >> /tmp/start-hook.out\n",
    );
    let id = ctx.id("hookenv");
    let out = ctx.rt(&["run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    let seen = fs::read_to_string(b.join("rootfs/tmp/start-hook.out")).unwrap_or_default();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["no-env [from-process] []", "own-env [] [from-hook]"],
        "startContainer hooks' environments"
    );
}
