//! Errors: bad ids, bad config.json, missing entrypoint, and the JSON log that
//! containerd/Docker read the user-visible error from.

use std::fs;
use std::time::Duration;

use lwk_conformance::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// The runtime's `--log` as JSON objects; asserts every line is one.
fn log_lines(ctx: &Ctx) -> Vec<Value> {
    ctx.log_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("--log-format json line is not JSON ({e}): {l:?}"))
        })
        .collect()
}

#[test]
fn duplicate_id_fails_and_keeps_first() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    let id = ctx.id("dup");
    ctx.create(&b, &id);
    let pid = ctx.pid(&id);
    ctx.rt_fail(&["create", "--bundle", &s(&b), &id]);
    let st = ctx.state(&id);
    assert_eq!(st["status"], "created", "first container damaged: {st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64), "{st}");
    assert!(pid_alive(pid));
    // run with a taken id fails too, without touching the first.
    ctx.rt_fail(&["run", "--detach", "--bundle", &s(&b), &id]);
    assert_eq!(ctx.pid(&id), pid);
    ctx.rt_ok(&["start", &id]);
    assert_eq!(ctx.status(&id), "running");
}

#[test]
fn invalid_ids_fail_and_leave_nothing() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["sleep", "60"]));
    for id in ["", "../x", "a/b", "..", "/abs"] {
        let out = ctx.rt_fail(&["create", "--bundle", &s(&b), id]);
        assert!(
            ctx.root_entries().is_empty(),
            "create {id:?} left {:?} under --root; {}",
            ctx.root_entries(),
            ctx.explain(&out)
        );
        assert!(
            !ctx.path("x").exists(),
            "create {id:?} escaped --root to its parent"
        );
        let out = ctx.rt_ok(&["list", "--quiet"]);
        assert!(
            out.stdout.trim().is_empty(),
            "list after invalid {id:?}: {}",
            out.stdout
        );
    }
}

#[test]
fn malformed_config_fails_with_error() {
    let ctx = Ctx::new();
    let good = base_config(&["sleep", "60"]);
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("invalid-json", None),
        ("missing-process", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("process");
            Some(c)
        }),
        ("missing-root", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("root");
            Some(c)
        }),
    ];
    for (name, cfg) in cases {
        let b = ctx.bundle(name, &good);
        match cfg {
            Some(c) => write_json(&b.join("config.json"), &c),
            None => fs::write(b.join("config.json"), "{\"ociVersion\": \"1.0.2\", bad").unwrap(),
        }
        let id = ctx.id(name);
        let out = ctx.rt_fail(&["create", "--bundle", &s(&b), &id]);
        assert!(
            !out.stderr.trim().is_empty() || log_lines(&ctx).iter().any(|l| l["level"] == "error"),
            "{name}: failure without any error message: {}",
            ctx.explain(&out)
        );
        assert!(
            ctx.root_entries().is_empty(),
            "{name}: left {:?} under --root",
            ctx.root_entries()
        );
        ctx.rt_fail(&["state", &id]);
    }
}

#[test]
fn missing_entrypoint_logs_json_error() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["/nonexistent"]));
    let id = ctx.id("noent");
    // The error may surface at create (runc) or at start; either way it must
    // fail and the log must carry it, because that is what Docker shows.
    let create = ctx.rt(&["create", "--bundle", &s(&b), &id]);
    let failed = if create.ok() {
        let start = ctx.rt(&["start", &id]);
        !start.ok() || {
            ctx.wait_status(&id, "stopped", T);
            false
        }
    } else {
        true
    };
    assert!(
        failed,
        "a missing entrypoint must make create or start fail: {}",
        ctx.explain(&create)
    );
    let lines = log_lines(&ctx);
    assert!(
        lines.iter().any(|l| l["level"] == "error"
            && l["msg"]
                .as_str()
                .is_some_and(|m| m.contains("/nonexistent"))),
        "no {{\"level\":\"error\"}} log line whose msg names /nonexistent:\n{}",
        ctx.log_text()
    );
}

#[test]
fn log_format_json_lines_are_logrus_objects() {
    let ctx = Ctx::new();
    // Errors that containerd's shim pattern-matches (go-runc/process/utils.go).
    for args in [
        vec!["kill", "lwkc-does-not-exist", "KILL"],
        vec!["delete", "lwkc-does-not-exist"],
        vec!["state", "lwkc-does-not-exist"],
    ] {
        let out = ctx.rt_fail(&args);
        let text = format!("{}{}", out.stderr, ctx.log_text());
        assert!(
            text.contains("does not exist"),
            "{args:?} on a missing container must say \"does not exist\": {}",
            ctx.explain(&out)
        );
    }
    let b = ctx.bundle("b", &base_config(&["true"]));
    let id = ctx.id("dbg");
    let out = ctx.rt(&["--debug", "run", "--bundle", &s(&b), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));

    let lines = log_lines(&ctx);
    assert!(lines.len() >= 3, "expected log lines: {}", ctx.log_text());
    for l in &lines {
        let level = l["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {l}"));
        assert!(
            ["trace", "debug", "info", "warning", "error", "fatal", "panic"].contains(&level),
            "level must be a lowercase logrus level: {l}"
        );
        assert!(l["msg"].is_string(), "msg must be a string: {l}");
        assert!(l["time"].is_string(), "time must be a string: {l}");
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["level"] == "error")
            .all(|l| l["msg"].as_str().is_some_and(|m| !m.is_empty())),
        "error lines need a message"
    );
}
