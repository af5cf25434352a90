//! ihkconfig / ihkosctl / modules / scripts, as a site admin drives them.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn without_modprobe_the_tools_fail_like_the_real_ones() {
    let s = Sim::new();
    let o = s.run("ihkconfig", &["0", "query", "cpu"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("open: No such file or directory"),
        "{}",
        o.stderr
    );
    let o = s.run("ihkosctl", &["0", "get", "status"]);
    assert_eq!(o.code, Some(1));
    let o = s.run("mcexec", &["/bin/true"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stderr.trim(), "Error: Failed to open /dev/mcos0.");
}

#[test]
fn admin_walkthrough_boot_run_second_create_and_stop() {
    let s = Sim::new().with_env("LWK_SIM_BOOT_DELAY_MS", "300");
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.ok("ihkconfig", &["0", "reserve", "mem", "512M@0"]);
    assert_eq!(s.ok("ihkconfig", &["0", "create"]), "");
    s.ok("ihkosctl", &["0", "assign", "cpu", "1"]);
    s.ok("ihkosctl", &["0", "assign", "mem", "512M@0"]);
    s.ok("ihkosctl", &["0", "load", &s.image()]);
    s.ok("ihkosctl", &["0", "kargs", "hidos ksyslogd=0"]);
    assert_eq!(s.status(), "INACTIVE");
    s.ok("ihkosctl", &["0", "boot"]);
    assert_eq!(s.status(), "BOOTING");
    s.wait_status("RUNNING", 3000);
    assert_eq!(s.run("mcexec", &["/bin/true"]).code, Some(0));
    // A second create makes a second minor and reports it as an error (exit = minor).
    let o = s.run("ihkconfig", &["0", "create"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stderr.trim(), "error: creating OS instance");
    assert_eq!(
        s.ok("ihkconfig", &["0", "get", "os_instances"]).trim(),
        "0,1"
    );
    s.ok("mcstop+release.sh", &["-R"]);
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]), "\n");
    assert_eq!(s.ok("ihkconfig", &["0", "query", "mem"]), "\n");
    assert!(!s.root.join("dev/mcos0").exists());
    assert!(!s.root.join("dev/mcos1").exists());
    // Without -R the modules go too and the device with them.
    s.ok("mcstop+release.sh", &[]);
    assert!(!s.root.join("dev/mcd0").exists());
    assert_eq!(s.run("ihkconfig", &["0", "query", "cpu"]).code, Some(1));
}

#[test]
fn query_prints_compressed_cpus_and_bytes_at_numa() {
    let s = Sim::new()
        .with_env("LWK_SIM_CPUS", "16")
        .with_env("LWK_SIM_MEM", "16G")
        .with_env("LWK_SIM_NUMA", "2");
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "3,1-2"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "7,10-11"]);
    assert_eq!(
        s.ok("ihkconfig", &["0", "query", "cpu"]).trim(),
        "1-3,7,10-11"
    );
    s.ok("ihkconfig", &["0", "reserve", "mem", "512M@0,1G@1"]);
    assert_eq!(
        s.ok("ihkconfig", &["0", "query", "mem"]).trim(),
        "536870912@0,1073741824@1"
    );
    s.ok("ihkconfig", &["0", "create"]);
    s.ok("ihkosctl", &["0", "assign", "cpu", "1-2"]);
    s.ok("ihkosctl", &["0", "assign", "mem", "512M@0"]);
    // query shows what is reserved but not yet assigned
    assert_eq!(
        s.ok("ihkconfig", &["0", "query", "cpu"]).trim(),
        "3,7,10-11"
    );
    assert_eq!(
        s.ok("ihkconfig", &["0", "query", "mem"]).trim(),
        "1073741824@1"
    );
    assert_eq!(s.ok("ihkosctl", &["0", "query", "cpu"]).trim(), "1-2");
    assert_eq!(
        s.ok("ihkosctl", &["0", "query", "mem"]).trim(),
        "536870912@0"
    );
    // Assigned CPUs cannot be released from the device; free ones can.
    let o = s.run("ihkconfig", &["0", "release", "cpu", "1"]);
    assert_eq!(o.code, Some(255));
    assert!(o.stderr.contains("error: releasing CPUs: 1"));
    s.ok("ihkconfig", &["0", "release", "cpu", "7"]);
    s.ok("ihkconfig", &["0", "release", "mem", "all"]);
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "3,10-11");
    assert_eq!(s.ok("ihkconfig", &["0", "query", "mem"]).trim(), "");
}

#[test]
fn cpu0_and_unknown_cpus_are_never_reserved() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.ok("lwk-sim", &["modprobe"]);
    for bad in ["0", "0-2", "8", "x"] {
        let o = s.run("ihkconfig", &["0", "reserve", "cpu", bad]);
        assert_eq!(o.code, Some(255), "reserve cpu {}", bad);
    }
    let o = s.run("ihkconfig", &["0", "reserve", "cpu", "0"]);
    assert_eq!(o.stderr.trim(), "error: reserving CPUs: 0");
    let o = s.run("ihkconfig", &["0", "reserve", "cpu", "x"]);
    assert_eq!(
        o.stdout.trim(),
        "do_reserve,get num of requested cpus failed"
    );
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "");
    s.ok("ihkconfig", &["0", "reserve", "cpu", "7"]);
    assert_eq!(
        s.run("ihkconfig", &["0", "reserve", "cpu", "6-7"]).code,
        Some(255)
    );
    // Memory beyond the node fails; `all` takes what is left.
    let o = s.run("ihkconfig", &["0", "reserve", "mem", "1P@0"]);
    assert_eq!(o.code, Some(255));
    assert!(o.stderr.contains("error: reserving memory: 1P@0"));
    assert_eq!(
        s.run("ihkconfig", &["0", "reserve", "mem", "1G@5"]).code,
        Some(255)
    );
    s.ok("ihkconfig", &["0", "reserve", "mem", "all"]);
    assert!(!s.ok("ihkconfig", &["0", "query", "mem"]).trim().is_empty());
}

#[test]
fn usage_unknown_actions_and_buildid() {
    let s = Sim::new();
    s.ok("lwk-sim", &["modprobe"]);
    let o = s.run("ihkconfig", &["0"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.starts_with("Usage: ihkconfig (dev #) (action)"));
    // An unknown action exits 0, as the real tool does.
    let o = s.run("ihkconfig", &["0", "frobnicate"]);
    assert_eq!(o.code, Some(0));
    assert!(o.stderr.contains("Unknown action : frobnicate"));
    assert_eq!(s.ok("ihkconfig", &["0", "get", "os_instances"]).trim(), "");
    assert!(s
        .ok("ihkconfig", &["0", "get", "buildid"])
        .starts_with("lwk-sim-"));
    assert_eq!(s.run("ihkconfig", &["0", "destroy"]).code, Some(1));
    assert_eq!(s.run("ihkconfig", &["0", "destroy", "0"]).code, Some(255));
}

#[test]
fn boot_needs_image_cpus_and_memory() {
    let s = Sim::new();
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.ok("ihkconfig", &["0", "reserve", "mem", "64M"]);
    s.ok("ihkconfig", &["0", "create"]);
    let o = s.run("ihkosctl", &["0", "boot"]);
    assert_eq!(o.code, Some(255));
    assert_eq!(o.stderr.trim(), "error: booting");
    let o = s.run("ihkosctl", &["0", "load", "/nonexistent/mckernel.img"]);
    assert_eq!(o.code, Some(255));
    assert_eq!(o.stderr.trim(), "error: loading /nonexistent/mckernel.img");
    assert_eq!(s.run("ihkosctl", &["0", "kargs"]).code, Some(1));
    let o = s.run("ihkosctl", &["0", "assign", "cpu", "2"]);
    assert_eq!(o.code, Some(255));
    assert_eq!(o.stderr.trim(), "error: assigning CPUs: 2");
    assert_eq!(s.run("ihkosctl", &["1", "get", "status"]).code, Some(1));
    s.ok("ihkosctl", &["0", "assign", "cpu", "1"]);
    s.ok("ihkosctl", &["0", "assign", "mem", "64M"]);
    s.ok("ihkosctl", &["0", "load", &s.image()]);
    s.ok("ihkosctl", &["0", "boot"]);
    // Booting twice, or re-assigning while up, is refused.
    assert_eq!(s.run("ihkosctl", &["0", "boot"]).code, Some(255));
    s.wait_status("RUNNING", 3000);
    assert_eq!(
        s.run("ihkosctl", &["0", "release", "cpu", "1"]).code,
        Some(255)
    );
    let kmsg = s.ok("ihkosctl", &["0", "kmsg"]);
    assert!(
        kmsg.contains("kargs=\"hidos") || kmsg.contains("kargs=\"\""),
        "{}",
        kmsg
    );
    assert!(kmsg.contains("IHK/McKernel started."), "{}", kmsg);
}

#[test]
fn shutdown_returns_resources_and_allows_reboot() {
    let s = Sim::new();
    s.boot("1", "128M@0");
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "");
    s.ok("ihkosctl", &["0", "shutdown"]);
    assert_eq!(s.status(), "SHUTDOWN");
    assert_eq!(s.run("mcexec", &["/bin/true"]).code, Some(1));
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "1");
    // mcreboot-lwk.sh style: re-assign, load, kargs, boot.
    s.ok("ihkosctl", &["0", "assign", "cpu", "1"]);
    s.ok("ihkosctl", &["0", "assign", "mem", "128M@0"]);
    s.ok("ihkosctl", &["0", "load", &s.image()]);
    s.ok("ihkosctl", &["0", "boot"]);
    s.wait_status("RUNNING", 3000);
    assert_eq!(s.calls("ihkosctl", "0 boot"), 2);
}

#[test]
fn the_module_lets_only_root_manage_an_instance_and_anyone_query_it() {
    let s = Sim::new();
    s.boot("1", "64M");
    // As IHK's __ihk_os_ioctl_perm: management needs euid 0, queries and mcexec do not.
    let as_nobody = |tool: &str, args: &[&str]| -> Out {
        s.sys("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(s.bin(tool))
            .args(args)
            .output()
            .expect("setpriv")
            .into()
    };
    for (args, msg) in [
        (&["0", "shutdown"][..], "error: shutting down"),
        (&["0", "kargs", "hidos"][..], "error: sending IRQ"),
        (&["0", "ioctl", "112a02", "0"][..], "error: ioctl"),
    ] {
        let o = as_nobody("ihkosctl", args);
        assert_eq!(o.code, Some(255), "{args:?}: {}", o.stderr);
        assert_eq!(o.stderr.trim(), msg);
    }
    assert_eq!(s.status(), "RUNNING");
    let o = as_nobody("ihkosctl", &["0", "get", "status"]);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (Some(0), "RUNNING"),
        "{}",
        o.stderr
    );
    let o = as_nobody("mcexec", &["0", "/bin/echo", "user-job"]);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (Some(0), "user-job"),
        "{}",
        o.stderr
    );
    // Root may, through the same raw request.
    s.ok("ihkosctl", &["0", "ioctl", "112a02", "0"]);
    assert_eq!(s.status(), "SHUTDOWN");
}

#[test]
fn destroy_is_ebusy_while_mcexec_holds_the_instance() {
    let s = Sim::new();
    s.boot("1", "64M");
    let mut child = s.spawn("mcexec", &["sleep", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let o = s.run("ihkconfig", &["0", "destroy", "0"]);
    assert_eq!(o.code, Some(255));
    assert_eq!(o.stderr.trim(), "error: destroying OS instance 0");
    assert!(child.wait().expect("wait").success());
    s.ok("ihkconfig", &["0", "destroy", "0"]);
    assert!(!s.root.join("dev/mcos0").exists());
    // Destroy gives the CPUs back to the reserved pool.
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "1");
    assert_eq!(s.calls("ihkconfig", "0 destroy 0"), 2);
}

#[test]
fn boot_faults_panic_hang_slow_from_the_faults_file() {
    let s = Sim::new();
    s.write("faults", "# next boot panics\nboot_panic\n");
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.ok("ihkconfig", &["0", "reserve", "mem", "64M"]);
    s.ok("ihkconfig", &["0", "create"]);
    let up = |s: &Sim| {
        s.ok("ihkosctl", &["0", "assign", "cpu", "1"]);
        s.ok("ihkosctl", &["0", "assign", "mem", "64M"]);
        s.ok("ihkosctl", &["0", "load", &s.image()]);
        s.ok("ihkosctl", &["0", "boot"]);
    };
    up(&s);
    assert_eq!(s.status(), "BOOTING");
    s.wait_status("PANIC", 3000);
    assert!(s.ok("ihkosctl", &["0", "kmsg"]).contains("PANIC"));
    // `once` was consumed.
    assert!(!s.read("faults").contains("boot_panic"));
    s.ok("ihkosctl", &["0", "shutdown"]);
    s.write("faults", "boot_hang once 50\n");
    up(&s);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(s.status(), "BOOTING");
    s.ok("ihkosctl", &["0", "shutdown"]);
    s.write("faults", "boot_slow always 700\n");
    up(&s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.status(), "BOOTING");
    s.wait_status("RUNNING", 3000);
    assert!(s.read("faults").contains("boot_slow always 700"));
}

#[test]
fn reservation_faults_ebusy_and_enomem() {
    let s = Sim::new();
    s.ok("lwk-sim", &["modprobe"]);
    s.write("faults", "reserve_ebusy\n");
    let o = s.run("ihkconfig", &["0", "reserve", "cpu", "1"]);
    assert_eq!(o.code, Some(255));
    assert_eq!(o.stderr.trim(), "error: reserving CPUs: 1");
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.write("faults", "reserve_enomem always\n");
    assert_eq!(
        s.run("ihkconfig", &["0", "reserve", "mem", "1M"]).code,
        Some(255)
    );
    assert_eq!(
        s.run("ihkconfig", &["0", "reserve", "mem", "1M"]).code,
        Some(255)
    );
    // Env form: `;`-separated, never consumed.
    s.write("faults", "");
    let o = s
        .cmd("ihkconfig")
        .env("LWK_SIM_FAULTS", "reserve_enomem")
        .args(["0", "reserve", "mem", "1M"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(255));
    s.ok("ihkconfig", &["0", "reserve", "mem", "1M"]);
}

#[test]
fn calls_log_has_one_line_per_call_with_exit_code() {
    let s = Sim::new();
    s.ok("lwk-sim", &["modprobe"]);
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
    s.run("ihkconfig", &["0", "reserve", "cpu", "0"]);
    assert_eq!(
        s.run("ihkosctl", &["9", "kargs", "hidos a b"]).code,
        Some(1)
    );
    let log = s.read("calls.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{}", log);
    let f: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(f.len(), 4);
    assert!(f[0].contains('.') && f[0].split('.').all(|p| p.parse::<u64>().is_ok()));
    assert_eq!(&f[1..], &["ihkconfig", "0 reserve cpu 0", "255"]);
    assert_eq!(lines[3].split('\t').nth(2), Some("9 kargs 'hidos a b'"));
    assert_eq!(lines[3].split('\t').nth(3), Some("1"));
}

#[test]
fn mcreboot_and_mcstop_release_follow_the_script_sequences() {
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.ok(
        "mcreboot.sh",
        &["-c", "2-3", "-m", "256M@0", "-e", "extra=1"],
    );
    s.wait_status("RUNNING", 3000);
    assert_eq!(s.ok("ihkosctl", &["0", "query", "cpu"]).trim(), "2-3");
    let steps: Vec<String> = s
        .read("calls.log")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{} {}", f[1], f[2])
        })
        .collect();
    let pos = |p: &str| {
        steps
            .iter()
            .position(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("{} not in {:?}", p, steps))
    };
    assert!(pos("ihkconfig 0 reserve mem") < pos("ihkconfig 0 reserve cpu"));
    assert!(pos("ihkconfig 0 reserve cpu") < pos("ihkconfig 0 create"));
    assert!(pos("ihkosctl 0 assign cpu 2-3") < pos("ihkosctl 0 assign mem"));
    assert!(pos("ihkosctl 0 load") < pos("ihkosctl 0 kargs"));
    assert!(
        pos("ihkosctl 0 kargs 'hidos ksyslogd=0 dump_level=24 extra=1'") < pos("ihkosctl 0 boot")
    );
    // A second run destroys the instance and boots again, without re-reserving.
    s.ok("mcreboot.sh", &["-c", "2-3", "-m", "256M@0"]);
    assert_eq!(s.calls("ihkosctl", "0 boot"), 2);
    assert_eq!(s.calls("ihkconfig", "0 destroy 0"), 1);
    assert_eq!(s.calls("ihkconfig", "0 reserve cpu"), 1);
    s.wait_status("RUNNING", 3000);
    // mcstop+release.sh refuses while mcexec runs; -k kills it.
    let mut m = s.spawn("mcexec", &["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    let o = s.run("mcstop+release.sh", &[]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("still using /dev/mcos0"), "{}", o.stderr);
    s.ok("mcstop+release.sh", &["-k"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(m.wait().expect("wait").signal(), Some(9));
    assert!(!s.root.join("dev/mcd0").exists());
}

#[test]
fn mcreboot_defaults_to_upper_half_of_numa0() {
    let s = Sim::new()
        .with_env("LWK_SIM_CPUS", "8")
        .with_env("LWK_SIM_NUMA", "1");
    s.ok("mcreboot.sh", &[]);
    assert_eq!(s.ok("ihkosctl", &["0", "query", "cpu"]).trim(), "4-7");
    assert_eq!(
        s.ok("ihkosctl", &["0", "query", "mem"]).trim(),
        "536870912@0"
    );
}

#[test]
fn thirty_two_concurrent_callers_never_corrupt_state() {
    let s = Sim::new()
        .with_env("LWK_SIM_CPUS", "64")
        .with_env("LWK_SIM_MEM", "64G");
    s.ok("lwk-sim", &["modprobe"]);
    let cpu: Vec<String> = (1..=32).map(|c| c.to_string()).collect();
    let kids: Vec<_> = (0..32)
        .map(|i| {
            if i % 2 == 0 {
                s.spawn("ihkconfig", &["0", "reserve", "cpu", &cpu[i]])
            } else {
                // The same tool through the multi-call form `lwk-sim <tool>`.
                s.spawn("lwk-sim", &["ihkconfig", "0", "reserve", "cpu", &cpu[i]])
            }
        })
        .collect();
    for k in kids {
        assert!(k.wait_with_output().expect("wait").status.success());
    }
    let mem: Vec<_> = (0..32)
        .map(|_| s.spawn("ihkconfig", &["0", "reserve", "mem", "1M@0"]))
        .collect();
    for k in mem {
        assert!(k.wait_with_output().expect("wait").status.success());
    }
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "1-32");
    assert_eq!(
        s.ok("ihkconfig", &["0", "query", "mem"]).trim(),
        format!("{}@0", 32u64 << 20)
    );
    // 32 concurrent creates: every minor 0..31 handed out exactly once.
    let creates: Vec<_> = (0..32)
        .map(|_| s.spawn("ihkconfig", &["0", "create"]))
        .collect();
    let mut codes: Vec<i32> = creates
        .into_iter()
        .map(|k| {
            k.wait_with_output()
                .expect("wait")
                .status
                .code()
                .unwrap_or(-1)
        })
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, (0..32).collect::<Vec<i32>>());
    // modprobe, 96 calls above and the two queries: one line each.
    assert_eq!(s.read("calls.log").lines().count(), 1 + 32 + 32 + 2 + 32);
    // 32 concurrent releases of distinct CPUs leave nothing behind.
    let rel: Vec<_> = (0..32)
        .map(|i| s.spawn("ihkconfig", &["0", "release", "cpu", &cpu[i]]))
        .collect();
    for k in rel {
        assert!(k.wait_with_output().expect("wait").status.success());
    }
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "");
}

#[test]
fn a_malformed_node_size_is_an_error_naming_it_not_the_hosts_size() {
    for (var, value, what) in [
        ("LWK_SIM_CPUS", "0-8", "a CPU count"),
        ("LWK_SIM_CPUS", "0", "a CPU count"),
        ("LWK_SIM_MEM", "lots", "a memory size"),
        ("LWK_SIM_NUMA", "-1", "a NUMA node count"),
    ] {
        let s = Sim::new().with_env(var, value);
        let o = s.run("lwk-sim", &["modprobe"]);
        assert_eq!(o.code, Some(1), "{var}={value}: {o:?}", o = o.stderr);
        assert!(
            o.stderr.contains(&format!("{var}=\"{value}\"")) && o.stderr.contains(what),
            "{var}={value}: {}",
            o.stderr
        );
        assert!(
            !s.root.join("dev/mcd0").exists(),
            "{var}={value} made a node"
        );
    }
    // More NUMA nodes than CPUs cannot be split.
    let s = Sim::new()
        .with_env("LWK_SIM_CPUS", "2")
        .with_env("LWK_SIM_NUMA", "4");
    let o = s.run("lwk-sim", &["modprobe"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("4 NUMA nodes but only 2 CPUs"),
        "{}",
        o.stderr
    );
    // A node made right, then a tool run with a bad value: refused, state unchanged.
    let s = Sim::new().with_env("LWK_SIM_CPUS", "8");
    s.ok("lwk-sim", &["modprobe"]);
    let o = s
        .cmd("ihkconfig")
        .env("LWK_SIM_CPUS", "0-8")
        .args(["0", "reserve", "cpu", "1"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LWK_SIM_CPUS=\"0-8\""));
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "");
    // The topology file is checked the same way.
    s.write("topology", "cpus=eight\n");
    let o = s.run("ihkconfig", &["0", "reserve", "cpu", "1"]);
    assert!(
        o.code == Some(2) && o.stderr.contains("topology"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_hanging_tool_fault_holds_the_call_until_it_is_killed() {
    let s = Sim::new();
    s.ok("lwk-sim", &["modprobe"]);
    s.write("faults", "ihkconfig_hang once\n");
    let mut c = s.spawn("ihkconfig", &["0", "reserve", "cpu", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.try_wait().unwrap().is_none(),
        "the hanging ihkconfig returned"
    );
    c.kill().unwrap();
    c.wait().unwrap();
    // Killed before it acted: nothing reserved; the fault was used up.
    assert_eq!(s.ok("ihkconfig", &["0", "query", "cpu"]).trim(), "");
    assert!(!s.read("faults").contains("ihkconfig_hang"));
    s.ok("ihkconfig", &["0", "reserve", "cpu", "1"]);
}
