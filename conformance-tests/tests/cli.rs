//! Commands that need no container: `--version`, `features`, `spec`.

use std::fs;

use lwk_conformance::*;
use serde_json::Value;

#[test]
fn version_works() {
    require_root();
    let v = runtime_version();
    assert!(!v.trim().is_empty(), "--version printed nothing");
    assert!(
        v.lines().any(|l| l.contains("version")),
        "--version output names no version: {v:?}"
    );
}

#[test]
fn features_json() {
    let ctx = Ctx::new();
    let out = ctx.rt_ok(&["features"]);
    let f: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("features is not JSON ({e}): {}", out.stdout));
    for k in ["ociVersionMin", "ociVersionMax"] {
        let v = f[k].as_str().unwrap_or_else(|| panic!("{k} missing: {f}"));
        assert!(v.starts_with("1."), "{k}={v}");
    }
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .unwrap_or_else(|| panic!("hooks missing: {f}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "features.hooks lacks {h}: {hooks:?}");
    }
    let opts: Vec<&str> = f["mountOptions"]
        .as_array()
        .unwrap_or_else(|| panic!("mountOptions missing: {f}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for o in ["bind", "rbind", "ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&o), "mountOptions lacks {o}");
    }
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("linux.namespaces missing: {f}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(ns.contains(&n), "linux.namespaces lacks {n}: {ns:?}");
    }
    assert!(
        f["linux"]["capabilities"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "CAP_SYS_ADMIN")),
        "linux.capabilities should list capabilities: {f}"
    );
}

#[test]
fn spec_writes_a_usable_template() {
    let ctx = Ctx::new();
    let dir = ctx.path("spec");
    fs::create_dir_all(&dir).unwrap();
    let mut c = ctx.cmd(&["spec"]);
    c.current_dir(&dir);
    let out = ctx.run_cmd(c);
    assert!(out.ok(), "spec failed: {}", ctx.explain(&out));
    let text = fs::read_to_string(dir.join("config.json")).expect("spec wrote config.json");
    let mut cfg: Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert!(cfg["ociVersion"].is_string(), "{cfg}");
    assert!(cfg["process"]["args"].is_array(), "{cfg}");
    assert!(cfg["root"]["path"].is_string(), "{cfg}");
    assert!(cfg["linux"]["namespaces"].is_array(), "{cfg}");

    // The template runs once the rootfs exists and the terminal is off.
    cfg["process"]["terminal"] = Value::Bool(false);
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", "echo from-spec"]);
    let root = cfg["root"]["path"].as_str().unwrap_or("rootfs").to_string();
    build_rootfs(&dir.join(&root));
    write_json(&dir.join("config.json"), &cfg);
    let id = ctx.id("spec");
    let out = ctx.rt(&["run", "--bundle", &s(&dir), &id]);
    assert!(out.ok(), "running the spec template: {}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "from-spec");
}
