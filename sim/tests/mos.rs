//! mOS: lwkctl partitions and yod reservations.
mod common;
use common::*;
use std::time::Duration;

fn mos(cpus: &str) -> Sim {
    let s = Sim::new()
        .with_env("LWK_SIM_CPUS", "64")
        .with_env("LWK_SIM_MEM", "64G");
    s.ok("lwk-sim", &["modprobe"]);
    s.ok(
        "lwkctl",
        &["-c", &format!("lwkcpus=1.{} lwkmem=0:4G", cpus)],
    );
    s
}

fn sysfs(s: &Sim, f: &str) -> String {
    s.read(&format!("sys/kernel/mOS/{}", f)).trim().to_string()
}

#[test]
fn lwkctl_creates_shows_and_deletes_the_partition() {
    let s = mos("2-5");
    assert_eq!(sysfs(&s, "lwkcpus"), "2-5");
    assert_eq!(sysfs(&s, "lwkcpus_syscall"), "1");
    assert_eq!(sysfs(&s, "lwkmem"), "4294967296");
    assert_eq!(sysfs(&s, "lwk_config"), "lwkcpus=1.2-5 lwkmem=0:4G");
    let show = s.ok("lwkctl", &["-s"]);
    assert!(show.contains("LWK CPUs         : 2-5"), "{}", show);
    assert_eq!(
        s.ok("lwkctl", &["-s", "-r"]).trim(),
        "lwkcpus=1.2-5 lwkmem=0:4G"
    );
    s.ok("lwkctl", &["-d"]);
    assert_eq!(sysfs(&s, "lwkcpus"), "");
    assert_eq!(s.calls("lwkctl", "-c"), 1);
    assert_eq!(s.calls("lwkctl", "-d"), 1);
    // Bad specifications and option rules.
    for spec in [
        "lwkcpus=0-3",
        "lwkcpus=1.70",
        "lwkcpus=2 lwkmem=9:1G",
        "bogus=1",
    ] {
        assert_eq!(s.run("lwkctl", &["-c", spec]).code, Some(1), "{}", spec);
    }
    assert_eq!(s.run("lwkctl", &["-r"]).code, Some(1));
    assert_eq!(s.run("lwkctl", &["-p", "yes"]).code, Some(1));
}

#[test]
fn yod_without_options_reserves_everything_and_execs_the_program() {
    let s = mos("2-5");
    let dir = s.root.join("sys/kernel/mOS");
    let c = s.spawn(
        "yod",
        &["sh", "-c", &format!("echo $$; cat {d}/lwkcpus_reserved {d}/lwkmem_reserved {d}/lwkprocesses; grep Cpus_allowed_list /proc/self/status; exit 9", d = dir.display())],
    );
    let pid = c.id();
    let out = c.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(9),
        "exit status is the program's own"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    // execvp: the program has yod's pid.
    assert_eq!(lines[0], pid.to_string());
    assert_eq!(lines[1], "2-5");
    assert_eq!(lines[2], "4294967296");
    assert_eq!(lines[3], pid.to_string());
    let mut want: Vec<u32> = (2..=5).map(real_cpu).collect();
    want.sort_unstable();
    want.dedup();
    let got = cpus_allowed(&text);
    for c in want {
        assert!(got.contains(&c.to_string()), "{} not in {}", c, got);
    }
    // The owner has exited: the next access reclaims, and a new yod gets everything.
    s.ok("yod", &["true"]);
    s.ok("lwkctl", &["-s"]);
    assert_eq!(sysfs(&s, "lwkcpus_reserved"), "");
}

#[test]
fn yod_option_rules_and_exit_codes() {
    let s = mos("2-5");
    let code = |args: &[&str]| s.run("yod", args).code;
    assert_eq!(code(&["-c", "2", "true"]), Some(234), "-c needs -M");
    assert_eq!(code(&["-C", "1", "true"]), Some(234), "-C needs -M");
    assert_eq!(code(&["-M", "1G", "true"]), Some(234), "-M needs -c/-C");
    assert_eq!(code(&["-R", "all", "-M", "1G", "true"]), Some(234));
    assert_eq!(code(&["-x", "1", "true"]), Some(255));
    assert_eq!(
        code(&["-c", "1", "-M", "1M", "true"]),
        Some(234),
        "1 is not an LWK CPU"
    );
    assert_eq!(
        code(&["-C", "5", "-M", "1M", "true"]),
        Some(234),
        "more than designated"
    );
    assert_eq!(code(&["-C", "1", "-M", "5G", "true"]), Some(234));
    assert_eq!(code(&[]), Some(234));
    assert_eq!(
        code(&["-c", "2-3", "-M", "1G", "/no/such/program"]),
        Some(255)
    );
    assert_eq!(code(&["-c", "0x3c", "-M", "1G", "true"]), Some(0));
    assert_eq!(code(&["-R", "0.5", "--dry-run", "true"]), Some(0));
    assert_eq!(
        code(&[
            "-C",
            "all",
            "-M",
            "all",
            "--mosview",
            "lwk",
            "-u",
            "1",
            "true"
        ]),
        Some(0)
    );
    s.ok("lwkctl", &["-d"]);
    assert_eq!(code(&["true"]), Some(255), "no partition");
}

#[test]
fn yod_reservations_conflict_with_ebusy_until_the_owner_exits() {
    let s = mos("2-5");
    let holder = s.spawn("yod", &["-c", "2-3", "-M", "1G", "sleep", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sysfs(&s, "lwkcpus_reserved"), "2-3");
    let o = s.run("yod", &["-c", "3", "-M", "1G", "true"]);
    assert_eq!(o.code, Some(240), "{}", o.stderr);
    assert_eq!(
        s.run("yod", &["-C", "3", "-M", "1G", "true"]).code,
        Some(240)
    );
    assert_eq!(
        s.run("yod", &["-C", "2", "-M", "4G", "true"]).code,
        Some(240)
    );
    s.ok("yod", &["-C", "2", "-M", "3G", "true"]);
    // lwkctl will not delete a partition in use unless forced.
    assert_eq!(s.run("lwkctl", &["-d"]).code, Some(1));
    assert!(holder.wait_with_output().expect("wait").status.success());
    s.ok("yod", &["-c", "2-3", "-M", "1G", "true"]);
    s.ok("lwkctl", &["-d"]);
}

#[test]
fn yod_mpi_ranks_go_in_local_rank_order() {
    let s = mos("2-5").with_env("MPI_LOCALNRANKS", "2");
    let user = format!("lwksimtest{}", std::process::id());
    let _ = std::fs::remove_file(format!("/tmp/yod.local.lock.{}", user));
    let script = "grep Cpus_allowed_list /proc/self/status; sleep 0.5";
    let spawn = |rank: &str| {
        s.cmd("yod")
            .env("MPI_LOCALRANKID", rank)
            .env("MPI_LOCALNRANKS", "2")
            .env("USER", &user)
            .args(["-C", "1", "-M", "1M", "sh", "-c", script])
            .output()
    };
    let one = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| spawn("1"));
        std::thread::sleep(Duration::from_millis(300));
        let h0 = sc.spawn(|| spawn("0"));
        let r0 = h0.join().expect("join").expect("run");
        let r1 = h1.join().expect("join").expect("run");
        (r0, r1)
    });
    let (r0, r1) = one;
    assert!(r0.status.success() && r1.status.success());
    // Rank 1 started first but waited for rank 0, which took the first CPU.
    assert_eq!(
        cpus_allowed(&String::from_utf8_lossy(&r0.stdout)),
        real_cpu(2).to_string()
    );
    assert_eq!(
        cpus_allowed(&String::from_utf8_lossy(&r1.stdout)),
        real_cpu(3).to_string()
    );
    let o = s
        .cmd("yod")
        .env("MPI_LOCALRANKID", "0")
        .env_remove("USER")
        .args(["true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(255), "USER must be set");
    let _ = std::fs::remove_file(format!("/tmp/yod.local.lock.{}", user));
}

#[test]
fn yod_faults_from_the_root_and_moved_into_sysfs() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.ok("lwk-sim", &["modprobe"]);
    s.write("faults", "yod_ebusy\nyod_enomem\n");
    s.ok("lwkctl", &["-c", "lwkcpus=2-5 lwkmem=1G"]);
    // lwkctl -c moved them next to the sysfs files.
    assert_eq!(s.read("faults").trim(), "");
    // A yod that cannot see the root (as in a container) still meets them.
    let code = |s: &Sim| {
        s.cmd("yod")
            .env("LWK_SIM_ROOT", "/nonexistent")
            .args(["true"])
            .output()
            .expect("run")
            .status
            .code()
    };
    // Without the root it cannot find sysfs either, unless /sys/kernel/mOS is ours.
    assert_eq!(code(&s), Some(255));
    assert_eq!(s.run("yod", &["true"]).code, Some(240));
    assert_eq!(s.run("yod", &["true"]).code, Some(244));
    s.ok("yod", &["true"]);
    s.write("faults", "yod_ebusy always\n");
    assert_eq!(s.run("yod", &["true"]).code, Some(240));
    assert_eq!(s.run("yod", &["true"]).code, Some(240));
}

#[test]
fn forty_concurrent_yods_share_32_cpus_without_double_booking() {
    let s = mos("2-33");
    let kids: Vec<_> = (0..40)
        .map(|_| s.spawn("yod", &["-C", "1", "-M", "1M", "sleep", "1.5"]))
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for k in kids {
        match k.wait_with_output().expect("wait").status.code() {
            Some(0) => ok += 1,
            Some(240) => busy += 1,
            other => panic!("unexpected exit {:?}", other),
        }
    }
    assert_eq!((ok, busy), (32, 8));
    s.ok("lwkctl", &["-s"]);
    assert_eq!(sysfs(&s, "lwkcpus_reserved"), "");
    assert_eq!(sysfs(&s, "lwkmem_reserved"), "0");
}

#[test]
fn yod_crash_kills_the_program_mid_run_and_frees_its_reservation() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.ok("lwk-sim", &["modprobe"]);
    s.write("faults", "yod_crash once 300\n");
    s.ok("lwkctl", &["-c", "lwkcpus=1.2-5 lwkmem=1G"]);
    // Moved next to the sysfs files with the other yod faults.
    assert_eq!(s.read("faults").trim(), "");
    let o = s.run(
        "yod",
        &[
            "-C",
            "1",
            "-M",
            "1M",
            "sh",
            "-c",
            "echo started; exec sleep 30",
        ],
    );
    assert_eq!(o.signal, Some(9), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "started");
    // The dead owner's reservation is reclaimed: a yod asking for all four CPUs gets them.
    s.ok("yod", &["-C", "4", "-M", "1M", "true"]);
}
