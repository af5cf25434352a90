//! mcexec: options, instance checks, the child, signals, pid collisions, -n groups, faults.
mod common;
use common::*;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

#[test]
fn runs_the_program_as_its_child_pinned_with_the_childs_exit_code() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.boot("3", "64M");
    let o = s.run(
        "mcexec",
        &["sh", "-c", "cat /proc/self/status; echo ppid-exe=$(readlink /proc/$PPID/exe); echo pers=$(cat /proc/self/personality); exit 7"],
    );
    assert_eq!(o.code, Some(7), "{}", o.stderr);
    assert_eq!(o.stderr, "", "mcexec adds nothing to the workload's stderr");
    assert_eq!(cpus_allowed(&o.stdout), real_cpu(3).to_string());
    assert!(
        o.stdout
            .contains(&format!("ppid-exe={}", s.bin("mcexec").display())),
        "{}",
        o.stdout
    );
    // The re-exec through /proc/self/exe with ADDR_NO_RANDOMIZE is inherited.
    assert!(o.stdout.contains("pers=00040000"), "{}", o.stdout);
}

#[test]
fn option_parsing_stops_at_the_first_non_option_and_takes_the_os_index() {
    let s = Sim::new();
    s.boot("1", "64M");
    let o = s.run(
        "mcexec",
        &[
            "-t",
            "4",
            "--mpol-no-heap",
            "--extend-heap-by=2M",
            "-s",
            "2M",
            "0",
            "echo",
            "-n",
            "x",
            "-t",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout, "x -t");
    let o = s.run("mcexec", &["-Z", "true"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("invalid option -- 'Z'"));
    assert_eq!(s.run("mcexec", &["-t"]).code, Some(1));
    assert_eq!(s.run("mcexec", &[]).code, Some(1));
    let o = s.run("mcexec", &["1", "true"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stderr.trim(), "Error: Failed to open /dev/mcos1.");
}

#[test]
fn refuses_an_instance_that_is_not_running_or_from_another_build() {
    let s = Sim::new().with_env("LWK_SIM_BOOT_DELAY_MS", "1500");
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.ok("ihkconfig", &["0", "reserve", "mem", "64M"]);
    s.ok("ihkconfig", &["0", "create"]);
    let o = s.run("mcexec", &["true"]);
    assert_eq!(o.stderr.trim(), "Error: Failed to open /dev/mcos0.");
    s.ok("ihkosctl", &["0", "assign", "cpu", "1"]);
    s.ok("ihkosctl", &["0", "assign", "mem", "64M"]);
    let img = s.root.join("other.img");
    std::fs::write(&img, "buildid=some-other-build\n").expect("write image");
    s.ok("ihkosctl", &["0", "load", &img.display().to_string()]);
    s.ok("ihkosctl", &["0", "boot"]);
    assert_eq!(
        s.run("mcexec", &["true"]).code,
        Some(1),
        "BOOTING is not RUNNING"
    );
    s.wait_status("RUNNING", 5000);
    let o = s.run("mcexec", &["true"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("build-id mismatch"), "{}", o.stderr);
    assert_eq!(
        s.ok("ihkosctl", &["0", "get", "buildid"]).trim(),
        "some-other-build"
    );
    let o = s.run("mcexec", &["/no/such/program"]);
    assert_eq!(o.code, Some(1));
}

#[test]
fn signals_are_forwarded_and_a_fatal_signal_is_re_raised() {
    let s = Sim::new();
    s.boot("1", "64M");
    // The workload dies of SIGTERM; mcexec dies of the same signal.
    let o = s.run("mcexec", &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.signal, Some(15));
    // SIGUSR1 sent to mcexec reaches the workload.
    let c = s.spawn(
        "mcexec",
        &[
            "sh",
            "-c",
            "trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let start = Instant::now();
    let pid = c.id() as i32;
    std::thread::sleep(Duration::from_millis(400));
    let st = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let out = c.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(42));
    assert!(start.elapsed() < Duration::from_secs(5));
    // SIGTERM to mcexec: forwarded, the child dies of it, so does mcexec.
    let c = s.spawn("mcexec", &["sleep", "10"]);
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .expect("kill");
    let out = c.wait_with_output().expect("wait");
    assert_eq!(out.status.signal(), Some(15));
    assert!(s
        .read("calls.log")
        .contains("\tmcexec\tsleep 10\tsignal 15"));
}

#[test]
fn same_namespace_local_pid_on_one_instance_collides() {
    let s = Sim::new();
    s.boot("1", "64M");
    let mcexec = s.bin("mcexec").display().to_string();
    // Two PID namespaces: both mcexec are pid 1 there.
    let first = s
        .sys("unshare")
        .args(["--pid", "--fork", &mcexec, "sleep", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare");
    std::thread::sleep(Duration::from_millis(500));
    let o: Out = s
        .sys("unshare")
        .args(["--pid", "--fork", &mcexec, "true"])
        .output()
        .expect("unshare")
        .into();
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr
            .contains("per-process data for pid 1 already exists"),
        "{}",
        o.stderr
    );
    // Different pids do not collide.
    assert_eq!(s.run("mcexec", &["true"]).code, Some(0));
    assert!(first.wait_with_output().expect("wait").status.success());
    // Once the first has exited, pid 1 is free again.
    let o: Out = s
        .sys("unshare")
        .args(["--pid", "--fork", &mcexec, "true"])
        .output()
        .expect("unshare")
        .into();
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn dash_n_splits_cpus_in_start_order_among_siblings() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.boot("2-3", "64M");
    let script = "grep Cpus_allowed_list /proc/self/status";
    let a = s.spawn("mcexec", &["-n", "2", "sh", "-c", script]);
    std::thread::sleep(Duration::from_millis(300));
    let b = s.spawn("mcexec", &["-n", "2", "sh", "-c", script]);
    let a = a.wait_with_output().expect("wait");
    let b = b.wait_with_output().expect("wait");
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        cpus_allowed(&String::from_utf8_lossy(&a.stdout)),
        real_cpu(2).to_string()
    );
    assert_eq!(
        cpus_allowed(&String::from_utf8_lossy(&b.stdout)),
        real_cpu(3).to_string()
    );
}

#[test]
fn dash_n_times_out_when_the_group_never_fills() {
    let s = Sim::new();
    s.boot("1", "64M");
    let start = Instant::now();
    let o = s.run("mcexec", &["-n", "2", "true"]);
    let took = start.elapsed();
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(
        took >= Duration::from_millis(10_200) && took < Duration::from_secs(15),
        "{:?}",
        took
    );
}

#[test]
fn mcexec_crash_fault_kills_proxy_and_workload() {
    let s = Sim::new();
    // Written before boot: boot moves it into the instance, where an mcexec
    // inside a container still finds it.
    s.write("faults", "mcexec_crash once 300\n");
    s.boot("1", "64M");
    assert!(!s.read("faults").contains("mcexec_crash"));
    let start = Instant::now();
    let o = s.run("mcexec", &["sh", "-c", "echo $$; exec sleep 5"]);
    assert_eq!(o.signal, Some(9));
    assert!(start.elapsed() < Duration::from_secs(3));
    let pid = o.stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(100));
    // Gone, or a zombie waiting for whoever inherited it: not running either way.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
    assert!(
        stat.is_empty() || state == Some('Z'),
        "workload {} survived: {}",
        pid,
        stat
    );
    // Consumed: the next run is fine, and the instance is not held.
    assert_eq!(s.run("mcexec", &["true"]).code, Some(0));
    s.ok("ihkconfig", &["0", "destroy", "0"]);
}

#[test]
fn inside_a_container_mcexec_works_through_dev_mcos0_alone() {
    let s = Sim::new();
    s.boot("1", "64M");
    let null = s.root.join("null");
    std::fs::write(&null, "").expect("null");
    // A private mount namespace with a fresh /dev holding only null and mcos0,
    // and no LWK_SIM_ROOT: what a container sees.
    let script = format!(
        "mount --bind /dev/null {null} && mount -t tmpfs tmpfs /dev && touch /dev/null /dev/mcos0 && \
         mount --bind {null} /dev/null && mount --bind {dev} /dev/mcos0 && \
         export LWK_SIM_ROOT=/nonexistent && \
         {bin}/ihkosctl 0 get status && {bin}/mcexec sh -c 'echo in-lwk' && \
         echo ready && read x && {bin}/ihkosctl 0 get status; {bin}/mcexec true; echo rc=$?",
        null = null.display(),
        dev = s.root.join("dev/mcos0").display(),
        bin = prefix().join("bin").display()
    );
    let mut c = s
        .sys("unshare")
        .args(["--mount", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare");
    std::thread::sleep(Duration::from_millis(700));
    // The host shuts the instance down; the container sees it in place.
    s.ok("ihkosctl", &["0", "shutdown"]);
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().expect("stdin");
        let _ = stdin.write_all(b"go\n");
    }
    let out = c.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "RUNNING\nin-lwk\nready\nSHUTDOWN\nrc=1\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Calls made inside the container are not in the host's log (its root is unreachable).
    assert_eq!(s.calls("mcexec", ""), 0);
}

#[test]
fn an_lwk_panic_under_a_running_program_ends_it_and_its_mcexec() {
    let s = Sim::new();
    s.boot("1", "64M");
    let mut c = s.spawn("mcexec", &["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.try_wait().unwrap().is_none());
    s.ok("lwk-sim", &["panic"]);
    assert_eq!(s.status(), "PANIC");
    let o: Out = c.wait_with_output().expect("wait").into();
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    assert!(o.stderr.contains("OS instance 0 is PANIC"), "{}", o.stderr);
    assert!(s.ok("ihkosctl", &["0", "kmsg"]).contains("PANIC"));
    // Only a RUNNING instance panics; the dead one is destroyed as usual.
    assert_eq!(s.run("lwk-sim", &["panic"]).code, Some(1));
    assert_eq!(s.run("mcexec", &["true"]).code, Some(1));
    s.ok("ihkconfig", &["0", "destroy", "0"]);
}
