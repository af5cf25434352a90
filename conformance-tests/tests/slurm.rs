//! Slurm 22.05 (Debian 12's) runs lwk-runc: `srun --container` through
//! `config/engines/oci.conf` exactly as shipped, and `srun lwk-runc conexec` for MPI
//! jobs (`--mpi=pmix`: Debian's Open MPI has a PMIx client and no PMI-2 one). Each test
//! has a private cluster from `conformance-tests/cluster/cluster.sh`: slurmctld, munged
//! and one or three slurmd, each node in PID, network, UTS, mount and cgroup namespaces
//! of its own, with its own /etc/lwk-runc/config.toml, lwk-runc root, lease directory
//! and simulated LWK. The cluster is stopped pass or fail, and [`Cluster::finish`]
//! checks that nothing of it is left: no process, namespace, mount or cgroup.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

const UP_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// A private Slurm cluster; stopped (`cluster.sh down`) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: usize,
    down: bool,
    n: std::cell::Cell<usize>,
}

fn script() -> PathBuf {
    workspace_root().join("conformance-tests/cluster/cluster.sh")
}

impl Cluster {
    /// A cluster of `nodes` nodes, up and idle; `None` when the test is skipped (Slurm
    /// missing outside CI, or the runtime under test is runc).
    fn up(test: &str, nodes: usize) -> Option<Cluster> {
        require_root();
        if engine_skipped_by_user(test, "slurm") {
            return None;
        }
        if runtime_is_runc() {
            say(&format!(
                "SKIPPED {test}: the runtime under test is runc, which has no LWK layer"
            ));
            return None;
        }
        engine_tools(
            test,
            [
                ("slurmctld", "slurmctld (slurm-wlm)"),
                ("slurmd", "slurmd (slurm-wlm)"),
                ("srun", "slurm-client (slurm-wlm)"),
                ("munged", "munge"),
                ("mungekey", "munge"),
            ],
        )?;
        // Each node gets its own cgroup tree, made of cgroup v1 hierarchies (cluster.sh).
        if !Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists() {
            skip_engine_test(
                test,
                "the Slurm cluster needs cgroup v1 hierarchies (a hybrid host); this one has none",
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("lwk-slurm-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // The guard exists before anything runs, so a failed bring-up is torn down too.
        let c = Cluster {
            dir,
            nodes,
            down: false,
            n: Default::default(),
        };
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("up")
            .arg(c.path("c"))
            .args(["--nodes", &nodes.to_string()])
            .env("RUNTIME", runtime_bin())
            .env("LWK_SIM_PREFIX", sim_prefix())
            .env("OCI_CONF", workspace_root().join("config/engines/oci.conf"))
            .stdin(Stdio::null());
        let out = run_into_files(cmd, c.path("up.out"), c.path("up.err"), UP_TIMEOUT);
        assert!(
            out.ok(),
            "cluster.sh up failed: {}{}\n{}",
            out.stdout,
            out.stderr,
            c.logs()
        );
        Some(c)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The cluster's directory (what cluster.sh was given).
    fn cdir(&self) -> PathBuf {
        self.path("c")
    }

    /// `cluster.sh ARGS` (`run DIR ...`, `enter DIR NODE ...`), with a clean environment:
    /// srun hands its environment to the job, and the test's must not leak into it.
    fn sh(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// A Slurm client (srun, salloc, squeue, scancel) on the head.
    fn client<A: AsRef<str>>(&self, args: &[A], env: &[(&str, &str)]) -> Command {
        let d = s(&self.cdir());
        let mut all = vec!["run", d.as_str()];
        all.extend(args.iter().map(AsRef::as_ref));
        self.sh(&all, env)
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        let n = self.n.get();
        self.n.set(n + 1);
        (
            self.path(&format!("cmd{n}.out")),
            self.path(&format!("cmd{n}.err")),
        )
    }

    /// Run a client to the end.
    fn run<A: AsRef<str>>(&self, args: &[A], env: &[(&str, &str)]) -> Out {
        let (o, e) = self.files();
        run_into_files(self.client(args, env), o, e, STEP_TIMEOUT)
    }

    /// Start a client in the background.
    fn spawn<A: AsRef<str>>(&self, args: &[A], env: &[(&str, &str)]) -> (Child, PathBuf, PathBuf) {
        let (o, e) = self.files();
        let child = self
            .client(args, env)
            .stdout(fs::File::create(&o).unwrap())
            .stderr(fs::File::create(&e).unwrap())
            .spawn()
            .expect("spawn a Slurm client");
        (child, o, e)
    }

    /// A command on node `k`, in its namespaces, to the end.
    fn on_node(&self, k: usize, args: &[&str]) -> Out {
        let d = s(&self.cdir());
        let node = format!("node{k}");
        let mut all = vec!["enter", d.as_str(), node.as_str()];
        all.extend_from_slice(args);
        let (o, e) = self.files();
        run_into_files(self.sh(&all, &[]), o, e, CMD_TIMEOUT)
    }

    /// Node `k`'s simulated LWK, lwk-runc config and lease directory.
    fn node(&self, k: usize) -> World {
        let n = self.cdir().join(format!("node{k}"));
        World {
            sim: n.join("run/lwk-sim"),
            config: n.join("lwk-runc/config.toml"),
            leases: n.join("run/lwk-runc-lwk"),
        }
    }

    /// The containers lwk-runc knows on node `k`.
    fn containers(&self, k: usize) -> Vec<String> {
        let out = self.on_node(k, &["lwk-runc", "list", "-q"]);
        assert!(out.ok(), "lwk-runc list on node{k}: {}", out.stderr);
        out.stdout.lines().map(str::to_string).collect()
    }

    /// The jobs slurmctld still knows (running or completing).
    fn jobs(&self) -> Vec<String> {
        let out = self.run(&["squeue", "-h", "-o", "%i %T"], &[]);
        assert!(out.ok(), "squeue: {}", out.stderr);
        out.stdout.lines().map(str::to_string).collect()
    }

    /// Processes on node `k` below the node's own daemons: in its cgroup tree but not in
    /// the node's top cgroup (where its init and slurmd live), i.e. every job step,
    /// container and anything they started.
    fn job_processes(&self, k: usize) -> Vec<String> {
        let cg = fs::read_to_string(self.cdir().join("cgroup")).unwrap();
        let top = Path::new("/sys/fs/cgroup/pids")
            .join(cg.trim())
            .join(format!("node{k}"));
        let mut found = Vec::new();
        let mut stack = vec![top.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            if d == top {
                continue;
            }
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                found.push(format!(
                    "{pid} {}",
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
        found
    }

    /// Node `k` is as before any job: no step or container process, no container, no
    /// lease, nothing reserved (waiting a little for a step that is completing).
    fn assert_node_clean(&self, k: usize) {
        let w = self.node(k);
        let mut last = (Vec::new(), Vec::new());
        for _ in 0..150 {
            last = (self.job_processes(k), self.containers(k));
            if last.0.is_empty() && last.1.is_empty() && w.leases() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            last.0.is_empty() && last.1.is_empty(),
            "node{k} keeps processes {:#?} and containers {:?}\n{}",
            last.0,
            last.1,
            self.logs()
        );
        w.assert_clean();
    }

    /// The tail of every daemon's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        let d = self.cdir();
        let mut files = vec![d.join("ctld/slurmctld.log"), d.join("ctld/head.out")];
        for k in 1..=self.nodes {
            for f in ["slurmd.log", "node.out"] {
                files.push(d.join(format!("node{k}/{f}")));
            }
        }
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            out.push_str(&format!("--- {}\n{tail}\n", f.display()));
        }
        out
    }

    fn stop(&mut self) -> Out {
        self.down = true;
        let d = s(&self.cdir());
        let (o, e) = self.files();
        run_into_files(self.sh(&["down", &d], &[]), o, e, UP_TIMEOUT)
    }

    /// Stop the cluster and check that nothing of it is left: `cluster.sh down` found
    /// everything it stopped; the `unshare` of the head and of each node and the PID 1
    /// of their namespaces are gone (a namespace's PID 1 exits last, and its network,
    /// UTS and mount namespaces, bridge and veths with them); no node process is left,
    /// since the node's cgroups, which hold all of them, containers included, are gone;
    /// no process names the cluster's directory; and no mount of it remains.
    fn finish(mut self) {
        let out = self.stop();
        assert!(
            out.ok() && !out.stderr.contains("cluster.sh:"),
            "cluster.sh down: {}{}",
            out.stdout,
            out.stderr
        );
        let d = self.cdir();
        let mut left = Vec::new();
        let mut recorded = 0;
        for e in fs::read_dir(d.join("pids")).unwrap().flatten() {
            let text = fs::read_to_string(e.path()).unwrap();
            let pid: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
            recorded += 1;
            if pid_alive(pid) {
                left.push(format!("{} {pid}", e.file_name().to_string_lossy()));
            }
        }
        // The head and each node: the `unshare` and its namespaces' PID 1.
        assert_eq!(
            recorded,
            2 * (self.nodes + 1),
            "pids recorded under {}",
            d.display()
        );
        for pid in processes_mentioning(&s(&d)) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            left.push(format!(
                "process {pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
        for m in mounts_under(&d) {
            left.push(format!("mount {m}"));
        }
        let cg = fs::read_to_string(d.join("cgroup")).unwrap();
        for h in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if h.path().join(cg.trim()).exists() {
                left.push(format!("cgroup {}", h.path().join(cg.trim()).display()));
            }
        }
        assert!(left.is_empty(), "the cluster left {left:#?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.stop();
        }
    }
}

/// A bundle of a busybox rootfs under `dir`: `env` added to the process's, `annotations`
/// set, more `mounts`. Its args do not matter: slurmstepd puts srun's command there.
fn bundle(dir: &Path, env: &[&str], annotations: Value, mounts: Value) -> PathBuf {
    let b = dir.to_path_buf();
    build_rootfs(&b.join("rootfs"));
    let mut cfg = base_config(&["true"]);
    for e in env {
        cfg["process"]["env"].as_array_mut().unwrap().push(json!(e));
    }
    cfg["annotations"] = annotations;
    for m in mounts.as_array().into_iter().flatten() {
        cfg["mounts"].as_array_mut().unwrap().push(m.clone());
    }
    write_json(&b.join("config.json"), &cfg);
    b
}

/// The shell a container step runs: its container's init and its parent (`lwk-init`
/// and `mcexec ...` on the LWK, itself on Linux) and the LWK CPUs it got, then `rest`.
fn report(rest: &str) -> String {
    format!(
        "echo \"init=$(tr '\\0' ' ' </proc/1/cmdline) \
         launcher=$(tr '\\0' ' ' </proc/$PPID/cmdline 2>/dev/null) \
         lwkcpus=$LWK_SIM_LWK_CPUS\"; {rest}"
    )
}

/// `srun -N<nodes> --container=<bundle> sh -c '<report(rest)>' [extra...]`.
fn container_step(nodes: usize, bundle: &Path, rest: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "srun".to_string(),
        format!("-N{nodes}"),
        format!("--container={}", s(bundle)),
        "sh".into(),
        "-c".into(),
        report(rest),
    ];
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

/// How many steps reported running under mcexec on McKernel's CPUs 1-4.
fn under_mcexec(out: &str) -> usize {
    out.lines()
        .filter(|l| {
            l.starts_with("init=/dev/.lwk/init/bin/lwk-runc lwk-init -- ")
                && l.contains(" launcher=/dev/.lwk/mcexec/bin/mcexec ")
                && l.ends_with(" lwkcpus=1-4")
        })
        .count()
}

fn explain(c: &Cluster, out: &Out) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr,
        c.logs()
    )
}

#[test]
fn slurm_container_steps_choose_the_lwk_as_under_docker_and_pass_exit_codes() {
    let test = "slurm_container_steps_choose_the_lwk_as_under_docker_and_pass_exit_codes";
    let Some(c) = Cluster::up(test, 1) else {
        return;
    };
    let by_env = bundle(
        &c.path("env"),
        &["LWK_KERNEL=mckernel"],
        json!({}),
        json!([]),
    );
    let by_ann = bundle(
        &c.path("ann"),
        &[],
        json!({"run.lwk.kernel": "mckernel"}),
        json!([]),
    );
    let plain = bundle(&c.path("plain"), &[], json!({}), json!([]));
    let w = c.node(1);

    // LWK_KERNEL in the bundle's env: on McKernel, under mcexec, and srun exits as the
    // container's process did.
    let out = c.run(&container_step(1, &by_env, "exit 3", &[]), &[]);
    assert_eq!(out.code(), Some(3), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 1, "{}", explain(&c, &out));
    c.assert_node_clean(1);
    w.assert_booted_and_torn_down("mckernel", 1);

    // The annotation alone does the same.
    let out = c.run(&container_step(1, &by_ann, "true", &[]), &[]);
    assert!(out.ok(), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 1, "{}", explain(&c, &out));
    c.assert_node_clean(1);
    w.assert_booted_and_torn_down("mckernel", 2);

    // So does LWK_KERNEL in the job's environment (slurmstepd appends it to the
    // bundle's).
    let out = c.run(
        &container_step(1, &plain, "true", &[]),
        &[("LWK_KERNEL", "mckernel")],
    );
    assert!(out.ok(), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 1, "{}", explain(&c, &out));
    c.assert_node_clean(1);
    w.assert_booted_and_torn_down("mckernel", 3);

    // No request: plain Linux, and not one LWK tool is called.
    let before = w.calls();
    let out = c.run(&container_step(1, &plain, "exit 5", &[]), &[]);
    assert_eq!(out.code(), Some(5), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 0, "{}", explain(&c, &out));
    assert!(
        out.stdout.starts_with("init=sh -c "),
        "{}",
        explain(&c, &out)
    );
    assert_eq!(
        w.calls(),
        before,
        "a step without an LWK request called LWK tools"
    );
    c.assert_node_clean(1);

    // slurmstepd got JSON from every RunTimeQuery (the last one of each step is
    // "does not exist", once run has deleted the container).
    let log = fs::read_to_string(c.cdir().join("node1/slurmd.log")).unwrap();
    assert!(
        log.contains("RunTimeQuery rc:"),
        "no RunTimeQuery was made:\n{log}"
    );
    assert!(
        !log.contains("JSON parsing error") && !log.contains("fatal"),
        "slurmstepd could not use oci.conf:\n{log}"
    );
    c.finish();
}

/// Start a one-node container step running `program` (which ends in `sleep 600`),
/// `scancel` it once its container runs, and return srun's stderr after asserting that
/// srun failed and said the step was cancelled, that the job left squeue and that the
/// node is clean.
fn scancel_step(c: &Cluster, b: &Path, program: &str) -> String {
    let (srun, o, e) = c.spawn(&container_step(1, b, program, &[]), &[]);
    let job = wait_for(
        Duration::from_secs(60),
        "the step's container running",
        || {
            let running = c.containers(1).len() == 1
                && c.job_processes(1).iter().any(|p| p.ends_with("sleep 600 "));
            let jobs = c.jobs();
            (running && jobs.len() == 1)
                .then(|| jobs[0].split_whitespace().next().unwrap().to_string())
        },
    );
    let out = c.run(&["scancel", &job], &[]);
    assert!(out.ok(), "scancel: {}", explain(c, &out));
    let st = wait_timeout(srun, STEP_TIMEOUT, "srun after scancel");
    let (so, se) = (
        fs::read_to_string(o).unwrap(),
        fs::read_to_string(e).unwrap(),
    );
    assert!(!st.success(), "srun succeeded after scancel: {so}{se}");
    assert!(
        se.contains("CANCELLED"),
        "srun does not say the step was cancelled: {se}"
    );
    wait_for(
        Duration::from_secs(30),
        "the job to be gone from squeue",
        || c.jobs().is_empty().then_some(()),
    );
    c.assert_node_clean(1);
    se
}

#[test]
fn slurm_scancel_stops_a_running_container_step_and_leaves_nothing() {
    let test = "slurm_scancel_stops_a_running_container_step_and_leaves_nothing";
    let Some(c) = Cluster::up(test, 1) else {
        return;
    };
    let b = bundle(&c.path("b"), &["LWK_KERNEL=mckernel"], json!({}), json!([]));
    let se = scancel_step(&c, &b, "exec sleep 600");
    // The step ended as a process of it would: SIGTERM, forwarded by the runtime.
    assert!(se.contains("exit code 143"), "{se}");
    c.node(1).assert_booted_and_torn_down("mckernel", 1);

    // A program that ignores SIGTERM: at KillWait (5 s here) Slurm SIGKILLs the step's
    // task, which is the runtime, not the program (its container has a cgroup of its
    // own). The foreground run ties the container to itself: the init dies with the
    // runtime and a watcher outside the step deletes the container and drops the lease,
    // so the LWK is torn down without an epilog's `lwk-runc lwk gc`.
    let se = scancel_step(&c, &b, "trap '' TERM; exec sleep 600");
    assert!(
        se.contains("Killed"),
        "the step was not killed at KillWait: {se}"
    );
    c.node(1).assert_booted_and_torn_down("mckernel", 2);
    c.finish();
}

#[test]
fn slurm_four_container_steps_at_once_share_one_boot() {
    let test = "slurm_four_container_steps_at_once_share_one_boot";
    let Some(c) = Cluster::up(test, 1) else {
        return;
    };
    let barrier = c.path("barrier");
    fs::create_dir_all(&barrier).unwrap();
    let b = bundle(
        &c.path("b"),
        &["LWK_KERNEL=mckernel"],
        json!({}),
        json!([{"destination": "/barrier", "type": "bind", "source": s(&barrier),
                "options": ["rbind", "rw"]}]),
    );
    // Each step waits (up to 60 s) until all four are running, so they overlap.
    let wait_all = "touch /barrier/$0; n=0; while [ $(ls /barrier | wc -l) -lt 4 ]; do \
                    n=$((n+1)); [ $n -lt 600 ] || exit 9; sleep 0.1; done; echo together";
    let steps: Vec<_> = (0..4)
        .map(|i| {
            c.spawn(
                &container_step(1, &b, wait_all, &[&format!("step{i}")]),
                &[],
            )
        })
        .collect();
    for (child, o, e) in steps {
        let st = wait_timeout(child, STEP_TIMEOUT, "a concurrent step");
        let (so, se) = (
            fs::read_to_string(o).unwrap(),
            fs::read_to_string(e).unwrap(),
        );
        assert!(st.success(), "{so}{se}\n{}", c.logs());
        assert!(so.contains("together"), "{so}{se}");
        assert_eq!(under_mcexec(&so), 1, "{so}{se}");
    }
    c.assert_node_clean(1);
    c.node(1).assert_booted_and_torn_down("mckernel", 1);
    c.finish();
}

#[test]
fn slurm_three_nodes_run_one_container_each() {
    let test = "slurm_three_nodes_run_one_container_each";
    let Some(c) = Cluster::up(test, 3) else {
        return;
    };
    let b = bundle(&c.path("b"), &["LWK_KERNEL=mckernel"], json!({}), json!([]));
    let out = c.run(&container_step(3, &b, "true", &[]), &[]);
    assert!(out.ok(), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 3, "{}", explain(&c, &out));
    for k in 1..=3 {
        c.assert_node_clean(k);
        c.node(k).assert_booted_and_torn_down("mckernel", 1);
    }
    c.finish();
}

/// The `mpi_hello` ranks of one job across the cluster: the right size and sum, and on
/// each node (by host name) the given number of ranks, all in one container that is not
/// another node's, each under `mcexec -n <that number>` with one common parent.
fn assert_job_per_node(out: &str, per_node: &[(&str, usize)]) {
    let rs = mpi_ranks(out);
    let n: usize = per_node.iter().map(|(_, k)| k).sum();
    assert_eq!(rs.len(), n, "{out}");
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r["rank"], i.to_string(), "{out}");
        assert_eq!(r["size"], n.to_string(), "{out}");
        assert_eq!(r["sum"], (n * (n + 1) / 2).to_string(), "{out}");
    }
    let mut by_host: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for r in &rs {
        by_host.entry(r["host"].as_str()).or_default().push(r);
    }
    let want: BTreeMap<&str, usize> = per_node.iter().copied().collect();
    let got: BTreeMap<&str, usize> = by_host.iter().map(|(h, v)| (*h, v.len())).collect();
    assert_eq!(got, want, "ranks per node: {out}");
    let mut namespaces = BTreeSet::new();
    for (host, ranks) in &by_host {
        let set = |k: &str| ranks.iter().map(|r| r[k].as_str()).collect::<BTreeSet<_>>();
        assert_eq!(
            set("mntns").len(),
            1,
            "{host}'s ranks in several containers: {out}"
        );
        assert_eq!(set("launcher_parent").len(), 1, "{host}: {out}");
        let group = format!("mcexec_-n_{}_", ranks.len());
        assert!(
            ranks.iter().all(|r| r["launcher_cmd"].contains(&group)),
            "{host}'s ranks are not under {group}: {out}"
        );
        namespaces.extend(set("mntns"));
    }
    assert_eq!(
        namespaces.len(),
        per_node.len(),
        "one container per node: {out}"
    );
}

#[test]
fn slurm_mpi_job_across_three_nodes_runs_each_nodes_ranks_in_one_container() {
    let test = "slurm_mpi_job_across_three_nodes_runs_each_nodes_ranks_in_one_container";
    let Some(c) = Cluster::up(test, 3) else {
        return;
    };
    let rootfs = s(mpi_image());
    let rank = [
        "lwk-runc", "conexec", "--lwk", "mckernel", "--rootfs", &rootfs, "--", MPI_HELLO,
    ];

    // Six ranks, two per node, through Slurm's PMIx.
    let mut args = vec!["srun", "-N3", "-n6", "--ntasks-per-node=2", "--mpi=pmix"];
    args.extend_from_slice(&rank);
    let out = c.run(&args, &[]);
    assert!(out.ok(), "{}", explain(&c, &out));
    assert_job_per_node(&out.stdout, &[("node1", 2), ("node2", 2), ("node3", 2)]);
    for k in 1..=3 {
        c.assert_node_clean(k);
        c.node(k).assert_booted_and_torn_down("mckernel", 1);
    }

    // A step of an allocation made with --ntasks-per-node=2 that puts 2, 1 and 1 ranks
    // on the nodes: each node groups the ranks it got, not the allocation's two.
    let mut args = vec![
        "salloc",
        "-N3",
        "--ntasks-per-node=2",
        "srun",
        "-N3",
        "-n4",
        "--mpi=pmix",
    ];
    args.extend_from_slice(&rank);
    let out = c.run(&args, &[]);
    assert!(out.ok(), "{}", explain(&c, &out));
    assert_job_per_node(&out.stdout, &[("node1", 2), ("node2", 1), ("node3", 1)]);
    for k in 1..=3 {
        c.assert_node_clean(k);
        c.node(k).assert_booted_and_torn_down("mckernel", 2);
    }
    c.finish();
}

#[test]
fn slurm_a_node_whose_lwk_fails_to_boot_fails_the_step_and_the_others_stay_clean() {
    let test = "slurm_a_node_whose_lwk_fails_to_boot_fails_the_step_and_the_others_stay_clean";
    let Some(c) = Cluster::up(test, 3) else {
        return;
    };
    let b = bundle(&c.path("b"), &["LWK_KERNEL=mckernel"], json!({}), json!([]));
    fs::write(c.node(2).sim.join("faults"), "boot_panic\n").unwrap();
    let out = c.run(&container_step(3, &b, "true", &[]), &[]);
    assert!(!out.ok(), "{}", explain(&c, &out));
    assert_eq!(under_mcexec(&out.stdout), 2, "{}", explain(&c, &out));
    // srun shows node2's task failing, and the LWK's own words.
    assert!(
        out.stderr
            .contains("node2: task 1: Exited with exit code 1"),
        "{}",
        explain(&c, &out)
    );
    assert!(
        out.stderr
            .contains("McKernel failed to boot: instance status PANIC")
            && out.stderr.contains("PANIC: simulated boot failure"),
        "{}",
        explain(&c, &out)
    );
    for k in 1..=3 {
        c.assert_node_clean(k);
        // node2 tried once, and took back what it had reserved.
        c.node(k).assert_booted_and_torn_down("mckernel", 1);
    }
    c.finish();
}
