//! Crash points: the runtime SIGKILLed at every step of create, start, delete, lease
//! acquire and release, boot and teardown (src/failpoint.rs), then the next container
//! or `lwk-runc lwk gc` reconciles, and the node ends clean.
//!
//! Runs the binary built with the `failpoints` feature, `target/failpoints/lwk-runc`
//! (scripts/test.sh builds it: `cargo build --features failpoints`, stripped into that
//! path; or `$LWK_RUNC_FAILPOINTS_BIN`). Each point is taken from the binary itself
//! (`lwk-runc crash-points`), so a point added there is tested here.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lwk_conformance::*;
use serde_json::{json, Value};

fn failpoints_bin(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("LWK_RUNC_FAILPOINTS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/failpoints/lwk-runc"));
    if p.is_file() {
        return Some(p);
    }
    let why = format!(
        "{} is missing; build it: cargo build --features failpoints --bin lwk-runc && \
         mkdir -p target/failpoints && strip -o target/failpoints/lwk-runc target/debug/lwk-runc",
        p.display()
    );
    skip_engine_test(test, &why);
    None
}

/// The failpoints binary as an engine runs a runtime, crashing at `at`.
fn fp(bin: &Path, ctx: &Ctx, w: &World, args: &[&str], at: Option<&str>) -> Out {
    let mut c = ctx.cmd_of(bin, args);
    c.envs(w.env());
    if let Some(p) = at {
        c.env("LWK_RUNC_CRASH_AT", p);
    }
    ctx.run_cmd(c)
}

fn killed(out: &Out) -> bool {
    out.status.signal() == Some(libc::SIGKILL)
}

/// Every record in the lease directory parses: a writer killed at any point leaves the
/// old record or the new one, whole (a temporary file at most).
fn records_whole(w: &World) -> Vec<String> {
    let mut names = Vec::new();
    for dir in [w.leases.clone(), w.leases.join("leases")] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                let text = fs::read(e.path()).unwrap();
                serde_json::from_slice::<Value>(&text)
                    .unwrap_or_else(|err| panic!("{name} is torn ({err}): {text:?}"));
            }
            names.push(name);
        }
    }
    names
}

/// One crash point, on a node of its own or one left clean by the previous point.
fn crash_at(bin: &Path, ctx: &Ctx, w: &World, point: &str, by_gc: bool) {
    say(&format!(
        "crash point {point}, reconciled by {}",
        if by_gc { "gc" } else { "the next container" }
    ));
    let b = ctx.bundle(&unique_id("b"), &{
        let mut c = base_config(&["/bin/sleep", "60"]);
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("LWK_KERNEL=mckernel"));
        c
    });
    let id = ctx.id("crash");
    let boots = w.count("\t0 boot\t");
    let first = fp(
        bin,
        ctx,
        w,
        &["run", "--detach", "--bundle", &s(&b), &id],
        Some(point),
    );
    let mut crashed = killed(&first);
    if !crashed {
        assert!(first.ok(), "{point}: {}", ctx.explain(&first));
        let del = fp(bin, ctx, w, &["delete", "--force", &id], Some(point));
        crashed = killed(&del);
        assert!(crashed || del.ok(), "{point}: {}", ctx.explain(&del));
    }
    assert!(crashed, "{point}: the runtime never got there");
    let names = records_whole(w);
    match point {
        // A crash between the node record and the boot: both records are there, whole,
        // and nothing was booted.
        "lease-booting-recorded" => {
            let node: Value =
                serde_json::from_slice(&fs::read(w.leases.join("node-mckernel.json")).unwrap())
                    .unwrap();
            assert_eq!(node["phase"], "booting", "{node}");
            assert_eq!(w.leases(), 1, "{names:?}");
            assert_eq!(w.count("\t0 boot\t"), boots, "{}", w.calls());
        }
        "record-tmp-written" => {
            assert!(names.iter().any(|n| n.contains(".tmp")), "{names:?}");
        }
        _ => {}
    }
    // Reconcile: the next container, or gc; neither may leave a dead lease behind.
    if by_gc {
        let out = w.rt(ctx, &["lwk", "gc"]);
        assert!(out.ok(), "{point}: gc: {}", ctx.explain(&out));
    } else {
        let nb = ctx.bundle(&unique_id("n"), &{
            let mut c = base_config(&["/bin/sh", "-c", "echo next"]);
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!("LWK_KERNEL=mckernel"));
            c
        });
        let out = w.rt(ctx, &["run", "--bundle", &s(&nb), &ctx.id("next")]);
        assert!(
            out.ok() && out.stdout.contains("next"),
            "{point}: the next container: {}",
            ctx.explain(&out)
        );
    }
    let status = w.rt_ok(ctx, &["lwk", "status"]).stdout;
    assert!(!status.contains("(dead"), "{point}: {status}");
    // The engine deletes what it created (a container whose init lives keeps its lease
    // until then), and the node is as before.
    let _ = w.rt(ctx, &["delete", "--force", &id]);
    if w.leases() != 0 {
        let l: Vec<String> = fs::read_dir(w.leases.join("leases"))
            .unwrap()
            .flatten()
            .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        panic!(
            "{point}: a lease is left after the engine's delete: {l:?}\n{}",
            ctx.log_text()
        );
    }
    let out = w.rt(ctx, &["lwk", "gc"]);
    assert!(out.ok(), "{point}: {}", ctx.explain(&out));
    let boots = w.count("\t0 boot\t");
    assert_eq!(w.count(" destroy "), boots, "{point}: {}", w.calls());
    w.assert_node_clean(ctx);
    assert!(
        !w.leases.join("node-mckernel.json").exists(),
        "{point}: the node record is left"
    );
}

#[test]
fn killed_at_every_step_the_next_container_or_gc_reconciles() {
    const TEST: &str = "killed_at_every_step_the_next_container_or_gc_reconciles";
    require_root();
    let Some(bin) = failpoints_bin(TEST) else {
        return;
    };
    let out = Command::new(&bin).arg("crash-points").output().unwrap();
    assert!(
        out.status.success(),
        "{} crash-points failed",
        bin.display()
    );
    let points: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(points.len() >= 20, "{points:?}");
    // Two nodes at a time, each taking every other point.
    let halves: Vec<Vec<(usize, String)>> = (0..2)
        .map(|h| {
            points
                .iter()
                .cloned()
                .enumerate()
                .filter(|(i, _)| i % 2 == h)
                .collect()
        })
        .collect();
    std::thread::scope(|sc| {
        for half in &halves {
            let bin = &bin;
            sc.spawn(move || {
                let ctx = Ctx::new();
                let w = World::new(&ctx, "");
                for (i, p) in half {
                    crash_at(bin, &ctx, &w, p, (i / 2) % 2 == 1);
                }
            });
        }
    });
    say(&format!(
        "crash points: killed at {} points, each reconciled: {}",
        points.len(),
        points.join(" ")
    ));
}
