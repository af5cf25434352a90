//! `lwk-runc conexec` under Debian's Open MPI: the ranks of a job on a node share one
//! container and one LWK, each rank under the LWK's launcher with the container's
//! init as the common parent, and the node is left clean however the job ends.
//! Each test has its own simulated node (8 CPUs, McKernel on 1-4, a mOS partition
//! of 1-4), lease dir and `--root`, so the tests run in parallel.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lwk_conformance::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// One node with an MPI rootfs.
struct Node {
    ctx: Ctx,
    w: World,
    rootfs: PathBuf,
}

impl Node {
    fn new() -> Node {
        find_in_path("mpirun").expect("mpirun is missing: install openmpi-bin (scripts/setup.sh)");
        let ctx = Ctx::new();
        let w = World::with(
            &ctx,
            &WorldOpts {
                cpus: Some("1-4"),
                node_cpus: Some(8),
                mos: r#"partition = "lwkcpus=0.1-4 lwkmem=auto""#,
                ..Default::default()
            },
        );
        let rootfs = ctx.path("rootfs");
        let st = Command::new("cp")
            .arg("-a")
            .arg(mpi_image())
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(st.success());
        Node { ctx, w, rootfs }
    }

    /// The runtime's command line for a rank: `lwk-runc --root R --log L conexec ...`.
    fn conexec(&self, lwk: &str, extra: &[&str], prog: &[&str]) -> Vec<String> {
        let rootfs = s(&self.rootfs);
        let args = [&["--lwk", lwk, "--rootfs", &rootfs][..], extra].concat();
        conexec_rank(&self.ctx, &args, prog)
    }

    fn mpirun(&self, n: usize, rank: &[String], env: &[(&str, &str)]) -> Command {
        mpirun(&self.ctx, &self.w, n, rank, env)
    }

    fn run(&self, c: Command) -> Out {
        let o = self.ctx.path("mpirun.stdout");
        let e = self.ctx.path("mpirun.stderr");
        run_into_files(c, o, e, JOB_TIMEOUT)
    }

    fn spawn(&self, c: Command, tag: &str) -> (Child, PathBuf, PathBuf) {
        spawn_logged(&self.ctx, c, tag)
    }

    fn explain(&self, out: &Out) -> String {
        format!("{}\n--- calls\n{}", self.ctx.explain(out), self.w.calls())
    }

    /// Processes that belong to this test: their command line or environment names
    /// its directory (ranks carry the node's `LWK_SIM_ROOT` in theirs).
    fn ours(&self) -> Vec<(i32, String, String)> {
        let dir = s(self.ctx.dir.path());
        let me = std::process::id() as i32;
        let mut v = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let read = |f: &str| {
                String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default())
                    .replace('\0', " ")
            };
            let (cmd, env) = (read("cmdline"), read("environ"));
            if pid != me && (cmd.contains(&dir) || env.contains(&dir)) && pid_alive(pid) {
                v.push((pid, read("comm").trim().to_string(), cmd));
            }
        }
        v
    }

    /// Live processes of this test named `comm` (the ranks' programs).
    fn procs(&self, comm: &str) -> Vec<i32> {
        self.ours()
            .into_iter()
            .filter(|(_, c, _)| c == comm)
            .map(|(p, _, _)| p)
            .collect()
    }

    /// The job containers under `--root`.
    fn containers(&self) -> Vec<String> {
        let out = self.w.rt(&self.ctx, &["list", "-q"]);
        out.stdout.lines().map(str::to_string).collect()
    }

    /// Nothing of the job is left: no container, job directory, lease or reservation,
    /// no mount and no process that refers to this test's directory.
    fn assert_clean(&self) {
        let dir = s(self.ctx.dir.path());
        let leftovers = || {
            let mut left = Vec::new();
            for c in self.containers() {
                left.push(format!("container {c}"));
            }
            if let Ok(rd) = fs::read_dir(self.ctx.root.join("conexec")) {
                for e in rd.flatten() {
                    left.push(format!("job dir {}", e.file_name().to_string_lossy()));
                }
            }
            if self.w.leases() != 0 {
                left.push("a lease".into());
            }
            let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
            for m in mounts.lines().filter(|l| l.contains(&dir)) {
                left.push(format!("mount {m}"));
            }
            for (pid, _, cmd) in self.ours() {
                left.push(format!("process {pid}: {cmd}"));
            }
            left
        };
        let mut last = Vec::new();
        for _ in 0..500 {
            last = leftovers();
            if last.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            last.is_empty(),
            "left behind: {last:#?}\n--- calls\n{}",
            self.w.calls()
        );
        assert_eq!(self.w.reserved(), "", "still reserved: {}", self.w.calls());
    }
}

fn field<'a>(rs: &'a [HashMap<String, String>], k: &str) -> BTreeSet<&'a str> {
    rs.iter().map(|r| r[k].as_str()).collect()
}

fn host_mntns() -> String {
    let l = ns_of("self", "mnt");
    l.trim_start_matches("mnt:[")
        .trim_end_matches(']')
        .to_string()
}

/// Ranks 0..n of n, the right sum, one mount namespace that is not the host's.
fn assert_one_job(rs: &[HashMap<String, String>], n: usize, out: &str) {
    assert_eq!(rs.len(), n, "{out}");
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r["rank"], i.to_string(), "{out}");
        assert_eq!(r["size"], n.to_string(), "{out}");
        assert_eq!(r["sum"], (n * (n + 1) / 2).to_string(), "{out}");
    }
    let ns = field(rs, "mntns");
    assert_eq!(ns.len(), 1, "ranks in several mount namespaces: {out}");
    assert!(
        !ns.contains(host_mntns().as_str()),
        "ranks ran in the host's mount namespace: {out}"
    );
}

#[test]
fn mckernel_job_shares_one_container_and_groups_its_ranks_under_mcexec() {
    let n = Node::new();
    let out = n.run(n.mpirun(4, &n.conexec("mckernel", &[], &[MPI_HELLO]), &[]));
    assert!(out.ok(), "{}", n.explain(&out));
    let rs = mpi_ranks(&out.stdout);
    assert_one_job(&rs, 4, &out.stdout);
    // Each rank's launcher is `mcexec -n 4`, and all four launchers have one parent.
    for r in &rs {
        assert!(
            r["launcher_cmd"].contains("mcexec_-n_4_"),
            "rank not under mcexec -n 4: {}",
            out.stdout
        );
    }
    assert_eq!(field(&rs, "launcher").len(), 4, "{}", out.stdout);
    assert_eq!(field(&rs, "launcher_parent").len(), 1, "{}", out.stdout);
    // mcexec -n gave each rank its own share of the instance's CPUs 1-4.
    assert_eq!(
        field(&rs, "cpus"),
        ["1", "2", "3", "4"].into_iter().collect(),
        "{}",
        out.stdout
    );
    n.w.assert_booted_and_torn_down("mckernel", 1);
    n.assert_clean();
}

#[test]
fn mos_job_runs_each_rank_under_yod_with_its_share() {
    let n = Node::new();
    let out = n.run(n.mpirun(4, &n.conexec("mos", &[], &[MPI_HELLO]), &[]));
    assert!(out.ok(), "{}", n.explain(&out));
    let rs = mpi_ranks(&out.stdout);
    assert_one_job(&rs, 4, &out.stdout);
    // yod -R 1/4 execs the rank, so the container's init is every rank's parent and
    // its command line shows the launcher prefix.
    for r in &rs {
        assert!(
            r["launcher_cmd"].contains("yod_-R_1/4_"),
            "rank not started through yod -R 1/4: {}",
            out.stdout
        );
    }
    assert_eq!(field(&rs, "launcher").len(), 1, "{}", out.stdout);
    // Only yod hands out LWK CPUs: each rank got one of the partition's four.
    assert_eq!(
        field(&rs, "cpus"),
        ["1", "2", "3", "4"].into_iter().collect(),
        "{}",
        out.stdout
    );
    n.w.assert_booted_and_torn_down("mos", 1);
    n.assert_clean();
}

#[test]
fn plain_linux_job_still_shares_one_container() {
    let n = Node::new();
    let out = n.run(n.mpirun(4, &n.conexec("none", &[], &[MPI_HELLO]), &[]));
    assert!(out.ok(), "{}", n.explain(&out));
    let rs = mpi_ranks(&out.stdout);
    assert_one_job(&rs, 4, &out.stdout);
    assert_eq!(
        field(&rs, "launcher").len(),
        1,
        "one parent: {}",
        out.stdout
    );
    assert!(
        rs.iter().all(|r| !r["launcher_cmd"].contains("mcexec")),
        "{}",
        out.stdout
    );
    assert_eq!(n.w.count("boot"), 0, "a plain job booted: {}", n.w.calls());
    assert_eq!(
        n.w.count("lwkctl"),
        0,
        "a plain job booted: {}",
        n.w.calls()
    );
    n.assert_clean();
}

#[test]
fn two_jobs_at_once_get_two_containers_and_share_one_boot() {
    let n = Node::new();
    let rank = n.conexec("mckernel", &[], &[MPI_HELLO]);
    let env = [("MPI_HELLO_SLEEP_MS", "1500")];
    let (a, ao, ae) = n.spawn(n.mpirun(2, &rank, &env), "a");
    let (b, bo, be) = n.spawn(n.mpirun(2, &rank, &env), "b");
    // Both containers live at once, and `lwk status` shows both jobs' leases.
    let both = wait_for(Duration::from_secs(60), "two job containers", || {
        let c = n.containers();
        (c.len() == 2).then_some(c)
    });
    let status = n.w.rt(&n.ctx, &["lwk", "status"]);
    for c in &both {
        assert!(status.stdout.contains(c.as_str()), "{}", status.stdout);
    }
    let sa = wait_timeout(a, JOB_TIMEOUT, "job a");
    let sb = wait_timeout(b, JOB_TIMEOUT, "job b");
    let (oa, ob) = (
        fs::read_to_string(ao).unwrap(),
        fs::read_to_string(bo).unwrap(),
    );
    assert!(sa.success(), "{oa}{}", fs::read_to_string(ae).unwrap());
    assert!(sb.success(), "{ob}{}", fs::read_to_string(be).unwrap());
    let (ra, rb) = (mpi_ranks(&oa), mpi_ranks(&ob));
    assert_one_job(&ra, 2, &oa);
    assert_one_job(&rb, 2, &ob);
    assert_ne!(field(&ra, "mntns"), field(&rb, "mntns"), "one container");
    n.w.assert_booted_and_torn_down("mckernel", 1);
    n.assert_clean();
}

#[test]
fn a_rank_exiting_7_fails_the_job_and_leaves_nothing() {
    let n = Node::new();
    let out = n.run(n.mpirun(
        4,
        &n.conexec("mckernel", &[], &[MPI_HELLO]),
        &[("MPI_HELLO_EXIT", "7")],
    ));
    assert!(
        !out.ok(),
        "mpirun did not see the failure: {}",
        n.explain(&out)
    );
    assert!(
        out.stderr.contains("Exit code:    7"),
        "mpirun does not report the rank's exit code 7: {}",
        out.stderr
    );
    // A failed job ends on mpirun's schedule, not ours: it signals the other ranks'
    // clients and may SIGKILL the one waiting for the deletion, so the node is clean
    // once the job's watcher has finished, which assert_clean waits for.
    n.assert_clean();
    n.w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_and_gc_leaves_nothing() {
    let n = Node::new();
    let rank = n.conexec("mckernel", &[], &[MPI_HELLO]);
    let (job, _, e) = n.spawn(
        n.mpirun(4, &rank, &[("MPI_HELLO_SLEEP_MS", "60000")]),
        "job",
    );
    let pids = wait_for(Duration::from_secs(60), "four running ranks", || {
        let p = n.procs("mpi_hello");
        (p.len() == 4).then_some(p)
    });
    // SAFETY: kill(2) on a rank this test started.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let st = wait_timeout(job, JOB_TIMEOUT, "the job after a killed rank");
    let err = fs::read_to_string(e).unwrap();
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("signal 9"),
        "mpirun names no killed rank: {err}"
    );
    let gc = n.w.rt(&n.ctx, &["lwk", "gc"]);
    assert!(gc.ok(), "{}", n.ctx.explain(&gc));
    n.assert_clean();
    n.w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn killing_the_container_init_ends_every_rank_with_a_clear_error() {
    let n = Node::new();
    let rank = n.conexec("mckernel", &[], &[MPI_HELLO]);
    let (job, _, e) = n.spawn(
        n.mpirun(4, &rank, &[("MPI_HELLO_SLEEP_MS", "60000")]),
        "job",
    );
    wait_for(Duration::from_secs(60), "four running ranks", || {
        (n.procs("mpi_hello").len() == 4).then_some(())
    });
    let id = n.containers().pop().expect("the job container");
    let init = n.ctx.pid(&id);
    // SAFETY: kill(2) on the init of a container this test made.
    unsafe { libc::kill(init, libc::SIGKILL) };
    let st = wait_timeout(job, JOB_TIMEOUT, "the job after its init was killed");
    let err = fs::read_to_string(e).unwrap();
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("ended while this rank was running"),
        "the ranks' clients gave no clear message: {err}"
    );
    let gc = n.w.rt(&n.ctx, &["lwk", "gc"]);
    assert!(gc.ok(), "{}", n.ctx.explain(&gc));
    n.assert_clean();
    n.w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_killed_client_takes_its_rank_and_only_its_rank() {
    let n = Node::new();
    // Two ranks of one job started by hand, without a launcher to end the other.
    let rank = n.conexec(
        "mckernel",
        &["--job", "by-hand", "--ppn", "2"],
        &["/bin/sleep", "120"],
    );
    let start = |tag: &str| {
        let mut c = Command::new(&rank[0]);
        c.args(&rank[1..]).envs(n.w.env()).stdin(Stdio::null());
        n.spawn(c, tag)
    };
    let (mut a, _, _) = start("a");
    let (b, _, be) = start("b");
    let sleeps = wait_for(Duration::from_secs(60), "two ranks", || {
        let p = n.procs("sleep");
        (p.len() == 2).then_some(p)
    });
    assert_eq!(
        n.containers().len(),
        1,
        "two ranks of one job, one container"
    );
    a.kill().unwrap();
    a.wait().unwrap();
    let left = wait_for(Duration::from_secs(20), "client a's rank to end", || {
        let p = n.procs("sleep");
        (p.len() == 1).then_some(p)
    });
    assert!(sleeps.contains(&left[0]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(pid_alive(left[0]), "the other rank went too");
    // The survivor's client forwards SIGTERM and dies of its rank's signal.
    // SAFETY: kill(2) on a client this test started.
    unsafe { libc::kill(b.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(b, JOB_TIMEOUT, "client b");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGTERM),
        "client b did not die of its rank's SIGTERM: {st:?} {}",
        fs::read_to_string(be).unwrap()
    );
    n.assert_clean();
    n.w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn staggered_ranks_still_make_one_container_and_one_group() {
    let n = Node::new();
    // Each rank waits 2 s per rank number before it becomes a conexec client.
    let wrapper = n.ctx.path("stagger.sh");
    write_script(
        &wrapper,
        "#!/bin/sh\nsleep $((OMPI_COMM_WORLD_RANK * 2))\nexec \"$@\"\n",
    );
    let mut rank = vec![s(&wrapper)];
    rank.extend(n.conexec("mckernel", &[], &[MPI_HELLO]));
    let out = n.run(n.mpirun(4, &rank, &[]));
    assert!(out.ok(), "{}", n.explain(&out));
    let rs = mpi_ranks(&out.stdout);
    assert_one_job(&rs, 4, &out.stdout);
    for r in &rs {
        assert!(r["launcher_cmd"].contains("mcexec_-n_4_"), "{}", out.stdout);
    }
    assert_eq!(field(&rs, "launcher_parent").len(), 1, "{}", out.stdout);
    assert_eq!(
        field(&rs, "cpus").len(),
        4,
        "one group of four: {}",
        out.stdout
    );
    n.w.assert_booted_and_torn_down("mckernel", 1);
    n.assert_clean();
}

/// A Slurm step's cgroups, made by hand: a cgroup `name` in every hierarchy (cpuset's
/// CPUs and memory copied from its parent, as Slurm's task/cgroup fills them in).
struct StepCgroup(Vec<PathBuf>);

impl StepCgroup {
    fn new(name: &str) -> StepCgroup {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut dirs = Vec::new();
        for l in info.lines() {
            let (left, right) = l.split_once(" - ").unwrap();
            let f: Vec<&str> = left.split_whitespace().collect();
            if !matches!(right.split_whitespace().next(), Some("cgroup" | "cgroup2")) || f[3] != "/"
            {
                continue;
            }
            let d = Path::new(f[4]).join(name);
            fs::create_dir_all(&d).unwrap();
            for k in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(Path::new(f[4]).join(k)) {
                    let _ = fs::write(d.join(k), v.trim());
                }
            }
            dirs.push(d);
        }
        StepCgroup(dirs)
    }

    /// A shell line that moves itself into the step, then runs the command.
    fn enter(&self) -> String {
        self.0
            .iter()
            .map(|d| format!("echo $$ > {}/cgroup.procs; ", s(d)))
            .collect()
    }

    /// The step's processes, as proctrack/cgroup sees them (the freezer's, else v2).
    fn procs(&self) -> Vec<i32> {
        let d = self
            .0
            .iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
            .unwrap_or(&self.0[0]);
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn a_step_whose_cgroup_is_killed_leaves_nothing_without_gc() {
    let n = Node::new();
    let step = StepCgroup::new(&format!("lwk-conformance-step-{}", std::process::id()));
    let rank = n.conexec(
        "mckernel",
        &["--job", "step", "--ppn", "2"],
        &["/bin/sleep", "600"],
    );
    let line = format!("{}exec \"$@\"", step.enter());
    let start = |tag: &str| {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(&line)
            .arg("sh")
            .args(&rank)
            .envs(n.w.env())
            .stdin(Stdio::null());
        n.spawn(c, tag)
    };
    let (a, _, _) = start("a");
    let (b, _, _) = start("b");
    wait_for(Duration::from_secs(60), "two ranks", || {
        (n.procs("sleep").len() == 2).then_some(())
    });
    assert_eq!(n.w.leases(), 1);
    // The job's watcher left the step's cgroup (else the kill below would take it).
    let watchers: Vec<i32> = n
        .ours()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains("conexec-reap"))
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(watchers.len(), 1, "{:?}", n.ours());
    assert!(
        !step.procs().contains(&watchers[0]),
        "the watcher is in the step's cgroup"
    );
    // Slurm's end of step: SIGKILL to every process in the step's cgroup, until none is
    // left (the ranks' clients, and anything else they started there).
    let mut killed = 0;
    wait_for(
        Duration::from_secs(30),
        "the step's cgroup to empty",
        || {
            let p = step.procs();
            for pid in &p {
                // SAFETY: kill(2) on a process of the cgroup this test made.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                killed += 1;
            }
            p.is_empty().then_some(())
        },
    );
    assert!(killed >= 2, "the clients were not in the step");
    for c in [a, b] {
        wait_timeout(c, JOB_TIMEOUT, "a killed client");
    }
    // No `lwk gc`: the job's watcher, outside the step, deletes the container.
    n.assert_clean();
    n.w.assert_booted_and_torn_down("mckernel", 1);
}
