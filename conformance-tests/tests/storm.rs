//! A storm: 64 concurrent loops of create, start, kill and delete of plain, McKernel
//! and mOS containers on one node, for `LWK_STORM_SECS` (default 60; raise it for a
//! soak of hours). Every call must succeed; afterwards the lease table holds exactly
//! the live LWK containers, `lwk status` agrees with the simulator, calls.log shows as
//! many teardowns as boots, and once they are deleted nothing is left.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lwk_conformance::*;
use serde_json::{json, Value};

const LOOPS: usize = 64;
const CALL_TIMEOUT: Duration = Duration::from_secs(180);

fn kernel_of(i: usize) -> &'static str {
    match i % 4 {
        0 => "none",
        1 | 2 => "mckernel",
        _ => "mos",
    }
}

/// One loop's bundle (its own rootfs and cgroup, as an engine gives each container).
fn bundle(ctx: &Ctx, i: usize) -> PathBuf {
    let mut c = base_config(&["/bin/sleep", "300"]);
    let env = c["process"]["env"].as_array_mut().unwrap();
    env.push(json!(format!("LWK_KERNEL={}", kernel_of(i))));
    if kernel_of(i) == "mos" {
        // One CPU each, so a loop's container never waits for another's.
        env.push(json!("LWK_ARGS=-C 1 -M 1M"));
    }
    ctx.bundle(&format!("storm{i}"), &c)
}

struct Storm<'a> {
    ctx: &'a Ctx,
    w: &'a World,
    calls: AtomicUsize,
    containers: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Storm<'_> {
    /// One call; a failure is recorded with what the runtime printed and, for a call on
    /// a container, what the container itself printed so far (`said`: the output files
    /// of its `create`, which its processes inherited).
    fn call_noting(&self, args: &[&str], said: Option<&Path>) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (o, e) = (
            self.ctx.path(&format!("{}.out", unique_id("c"))),
            self.ctx.path(&format!("{}.err", unique_id("c"))),
        );
        let out = run_into_files(
            self.w.cmd(self.ctx, args),
            o.clone(),
            e.clone(),
            CALL_TIMEOUT,
        );
        let ok = out.ok();
        if !ok {
            let container = said
                .map(|p| fs::read_to_string(p).unwrap_or_default())
                .unwrap_or_default();
            self.failures.lock().unwrap().push(format!(
                "{args:?}: {:?} {}; the container printed: {container:?}",
                out.status, out.stderr
            ));
        }
        let _ = fs::remove_file(o);
        let _ = fs::remove_file(e);
        ok
    }

    fn call(&self, args: &[&str], said: &Path) -> bool {
        self.call_noting(args, Some(said))
    }

    /// Create and start `id`; the container's output goes to `said` until its delete.
    fn start(&self, b: &Path, id: &str, said: &Path) -> bool {
        self.containers.fetch_add(1, Ordering::Relaxed);
        self.ctx.track(id);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = run_into_files(
            self.w.cmd(self.ctx, &["create", "--bundle", &s(b), id]),
            said.with_extension("out"),
            said.to_path_buf(),
            CALL_TIMEOUT,
        );
        if !out.ok() {
            self.failures
                .lock()
                .unwrap()
                .push(format!("create {id}: {:?} {}", out.status, out.stderr));
            return false;
        }
        self.call(&["start", id], said)
    }

    /// Until `until`: create, start, (kill,) delete; the last container stays up.
    fn run_loop(&self, i: usize, until: Instant) -> String {
        let b = bundle(self.ctx, i);
        let mut n = 0;
        loop {
            let id = format!("storm-{}-{i}-{n}", std::process::id());
            n += 1;
            let said = self.ctx.path(&format!("{id}.said"));
            let started = self.start(&b, &id, &said);
            if Instant::now() >= until && started {
                return id;
            }
            // Vary the ending: SIGKILL, SIGTERM, or delete --force of a live container.
            match n % 3 {
                0 => {
                    self.call(&["kill", &id, "KILL"], &said);
                }
                1 => {
                    self.call(&["kill", &id, "TERM"], &said);
                }
                _ => {}
            }
            self.call(&["delete", "--force", &id], &said);
            let _ = fs::remove_file(said.with_extension("out"));
            let _ = fs::remove_file(&said);
            if !started && Instant::now() >= until {
                return String::new();
            }
        }
    }
}

#[test]
fn sixty_four_loops_of_mixed_containers_leave_the_lease_table_exact() {
    let secs: u64 = std::env::var("LWK_STORM_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let ctx = Ctx::new();
    let w = World::with(
        &ctx,
        &WorldOpts {
            node_cpus: Some(64),
            mos: "partition = \"lwkcpus=1.2-33 lwkmem=256M\"",
            ..Default::default()
        },
    );
    let storm = Storm {
        ctx: &ctx,
        w: &w,
        calls: AtomicUsize::new(0),
        containers: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    };
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let last: Vec<(usize, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..LOOPS)
            .map(|i| {
                let storm = &storm;
                sc.spawn(move || (i, storm.run_loop(i, until)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    let failures = storm.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed, e.g.:\n{}",
        failures.len(),
        storm.calls.load(Ordering::Relaxed),
        failures[..failures.len().min(10)].join("\n")
    );
    // The live LWK containers, and the lease table: the same set.
    let mut live_lwk: Vec<String> = last
        .iter()
        .filter(|(i, id)| kernel_of(*i) != "none" && !id.is_empty())
        .map(|(_, id)| id.clone())
        .collect();
    live_lwk.sort();
    let status: Value =
        serde_json::from_str(&w.rt_ok(&ctx, &["lwk", "status", "--format", "json"]).stdout)
            .unwrap();
    let mut leased: Vec<String> = Vec::new();
    for k in status.as_array().unwrap() {
        for l in k["leases"].as_array().unwrap() {
            assert_eq!(l["alive"], true, "{l}");
            leased.push(l["id"].as_str().unwrap().to_string());
        }
    }
    leased.sort();
    assert_eq!(
        leased, live_lwk,
        "the lease table is not the live LWK containers"
    );
    assert_eq!(w.leases(), live_lwk.len());
    // `lwk status` and the simulator agree.
    let by = |k: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["kernel"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by("mckernel")["status"],
        w.tool("ihkosctl", &["0", "get", "status"]).as_str()
    );
    let lwkcpus = fs::read_to_string(w.sim.join("sys/kernel/mOS/lwkcpus")).unwrap();
    assert_eq!(by("mos")["status"], "RUNNING");
    assert_eq!(lwkcpus.trim(), "2-33");
    for (i, id) in &last {
        if !id.is_empty() {
            let st = ctx.status(id);
            assert_eq!(
                st, "running",
                "the last container of loop {i} ({id}) is {st}"
            );
        }
    }
    // Delete the last ones, all at once; then the node is as before the storm.
    std::thread::scope(|sc| {
        for (_, id) in last.iter().filter(|(_, id)| !id.is_empty()) {
            let storm = &storm;
            sc.spawn(move || storm.call_noting(&["delete", "--force", id], None));
        }
    });
    let failures = storm.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    let mck = w.count("\t0 boot\t");
    let mos = w.count("lwkctl\t-c");
    w.assert_booted_and_torn_down("mckernel", mck);
    w.assert_booted_and_torn_down("mos", mos);
    w.assert_node_clean(&ctx);
    say(&format!(
        "storm: {} loops, {} containers ({} runtime calls) in {:.0} s, McKernel booted {mck} times, mOS {mos} times, 0 failures, 0 leaks",
        LOOPS,
        storm.containers.load(Ordering::Relaxed),
        storm.calls.load(Ordering::Relaxed),
        took.as_secs_f64()
    ));
}
