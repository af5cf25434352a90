//! `mcreboot.sh` and `mcstop+release.sh`: the same step sequences as the
//! real scripts, each step a call to the simulated tool (so every step is
//! logged in calls.log), and, like the real scripts, no locking at all.

use crate::common::*;
use crate::ihk;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Run one of our tools under its own name; returns (exit code, stdout).
fn tool(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("/proc/self/exe").arg0(name).args(args).output();
    match out {
        Ok(o) => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            (o.status.code().unwrap_or(255), String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        Err(e) => {
            eprintln!("{}: {}", name, e);
            (255, String::new())
        }
    }
}

fn script_sleep(default_ms: u64) {
    let ms = std::env::var("LWK_SIM_SCRIPT_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_ms);
    std::thread::sleep(Duration::from_millis(ms));
}

/// `<prefix>/smp-x86/kernel/mckernel.img`, prefix = the directory above bin/.
pub fn image_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(|b| b.parent()).map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("/"))
        .join("smp-x86/kernel/mckernel.img")
}

fn upper_half_of_node0() -> String {
    let t = Topology::load();
    let n0 = t.cpus_of(0);
    let half: Vec<u32> = n0[n0.len() / 2..].iter().copied().filter(|c| *c != 0).collect();
    fmt_cpulist(&half)
}

pub fn mcreboot(args: &[String]) -> i32 {
    let mut cpus = None;
    let mut mem = "512M@0".to_string();
    let mut ikc_map = None;
    let mut owner = None;
    let mut extra = String::new();
    let mut dump_level = "24".to_string();
    let mut rereserve = false;
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let with_arg = ["-c", "-m", "-r", "-o", "-k", "-i", "-f", "-q", "-d", "-e", "-T"];
        if with_arg.contains(&a) {
            i += 1;
            let Some(v) = args.get(i).cloned() else {
                eprintln!("Usage: mcreboot.sh [-c cpus] [-m mem] [-r ikc_map] [-o owner] [-e kargs] [-d dump_level] [-R] ...");
                return 1;
            };
            match a {
                "-c" => cpus = Some(v),
                "-m" => mem = v,
                "-r" => ikc_map = Some(v),
                "-o" => owner = Some(v),
                "-e" => extra = v,
                "-d" => dump_level = v,
                "-T" => flags.push(format!("time_sharing={}", v)),
                _ => {}
            }
        } else {
            match a {
                "-R" => rereserve = true,
                "-t" => flags.push("turbo".into()),
                "-s" => flags.push("safe_kernel_map".into()),
                "-h" => flags.push("idle_halt".into()),
                "-O" => flags.push("allow_oversubscribe".into()),
                _ => {
                    eprintln!("Usage: mcreboot.sh [-c cpus] [-m mem] [-r ikc_map] [-o owner] [-e kargs] [-d dump_level] [-R] ...");
                    return 1;
                }
            }
        }
        i += 1;
    }
    let cpus = cpus.unwrap_or_else(upper_half_of_node0);
    if !is_root() {
        eprintln!("error: you need to be root to run this script");
        return 1;
    }
    let img = image_path();
    let img_s = img.display().to_string();
    // Unwinding on error, as the script's error_exit does per stage.
    let mut loaded_here = false;
    let mut reserved_here = false;
    let mut created = false;
    let unwind = |loaded: bool, reserved: bool, created: bool| {
        if created {
            tool("ihkconfig", &["0", "destroy", "0"]);
        }
        if reserved {
            let (_, q) = tool("ihkconfig", &["0", "query", "cpu"]);
            if !q.is_empty() {
                tool("ihkconfig", &["0", "release", "cpu", &q]);
            }
            tool("ihkconfig", &["0", "release", "mem", "all"]);
        }
        if loaded {
            crate::ihk::rmmod(&[]);
        }
    };
    if !ihk::loaded() {
        if ihk::modprobe(&[]) != 0 {
            eprintln!("error: loading ihk-smp");
            return 1;
        }
        loaded_here = true;
        rereserve = true;
    } else if rereserve {
        let (_, q) = tool("ihkconfig", &["0", "query", "cpu"]);
        if !q.is_empty() {
            tool("ihkconfig", &["0", "release", "cpu", &q]);
        }
        tool("ihkconfig", &["0", "release", "mem", "all"]);
    }
    if rereserve {
        if tool("ihkconfig", &["0", "reserve", "mem", &mem]).0 != 0 {
            eprintln!("error: reserving memory");
            unwind(loaded_here, true, false);
            return 1;
        }
        if tool("ihkconfig", &["0", "reserve", "cpu", &cpus]).0 != 0 {
            eprintln!("error: reserving CPUs");
            unwind(loaded_here, true, false);
            return 1;
        }
        reserved_here = true;
    }
    let (rc, bid) = tool("ihkconfig", &["0", "get", "buildid"]);
    if rc != 0 || bid != BUILDID {
        eprintln!("IHK build-id ({}) didn't match McKernel build-id ({}).", bid, BUILDID);
        unwind(loaded_here, reserved_here, false);
        return 1;
    }
    for (os, _) in ihk::instance_paths() {
        let o = os.to_string();
        let mut ok = false;
        for _ in 0..4 {
            if tool("ihkconfig", &["0", "destroy", &o]).0 == 0 {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if !ok {
            eprintln!("error: destroying LWK instance {} failed", os);
            unwind(loaded_here, reserved_here, false);
            return 1;
        }
    }
    let kargs = {
        let mut k = format!("hidos ksyslogd=0 dump_level={}", dump_level);
        for f in &flags {
            k.push(' ');
            k.push_str(f);
        }
        if !extra.is_empty() {
            k.push(' ');
            k.push_str(&extra);
        }
        k
    };
    let mut steps: Vec<(Vec<String>, &str)> = vec![(vec!["0".into(), "create".into()], "ihkconfig")];
    steps.push((vec!["0".into(), "assign".into(), "cpu".into(), cpus.clone()], "ihkosctl"));
    if let Some(m) = &ikc_map {
        steps.push((vec!["0".into(), "set".into(), "ikc_map".into(), m.clone()], "ihkosctl"));
    }
    steps.push((vec!["0".into(), "assign".into(), "mem".into(), mem.clone()], "ihkosctl"));
    steps.push((vec!["0".into(), "load".into(), img_s.clone()], "ihkosctl"));
    steps.push((vec!["0".into(), "kargs".into(), kargs], "ihkosctl"));
    steps.push((vec!["0".into(), "boot".into()], "ihkosctl"));
    for (argv, t) in steps {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        if tool(t, &a).0 != 0 {
            eprintln!("error: {} {}", t, argv.join(" "));
            unwind(loaded_here, reserved_here, created);
            return 1;
        }
        if argv[1] == "create" {
            created = true;
        }
    }
    if let Some(o) = owner {
        for p in [ihk::dev_path("mcd0"), ihk::dev_path("mcos0")] {
            let _ = Command::new("chown").arg(&o).arg(&p).status();
        }
    }
    0
}

/// Pids holding `path` open, found as lsof/fuser do, through /proc/*/fd.
fn holders(path: &std::path::Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else { return vec![] };
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return v };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(fm) = std::fs::metadata(fd.path()) {
                if fm.dev() == m.dev() && fm.ino() == m.ino() {
                    v.push(pid);
                    break;
                }
            }
        }
    }
    v
}

pub fn mcstop_release(args: &[String]) -> i32 {
    let mut kill = false;
    let mut keep_modules = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-k" => kill = true,
            "-R" => keep_modules = true,
            "-r" => i += 1,
            _ => {
                eprintln!("Usage: mcstop+release.sh [-r rmmod_path] [-k] [-R]");
                return 1;
            }
        }
        i += 1;
    }
    if !ihk::loaded() {
        return 0;
    }
    for (os, path) in ihk::instance_paths() {
        let held = ihk::open_instance(&path, false)
            .map(|f| ofd_held(&f, 0))
            .unwrap_or(false);
        if held {
            if !kill {
                eprintln!("mcexec or other processes are still using /dev/mcos{}", os);
                return 1;
            }
            for pid in holders(&path) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            for _ in 0..200 {
                let still = ihk::open_instance(&path, false)
                    .map(|f| ofd_held(&f, 0))
                    .unwrap_or(false);
                if !still {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if tool("ihkconfig", &["0", "destroy", &os.to_string()]).0 != 0 {
            eprintln!("error: destroying LWK instance {} failed", os);
            return 1;
        }
    }
    script_sleep(2000);
    let (_, q) = tool("ihkconfig", &["0", "query", "cpu"]);
    if !q.is_empty() && tool("ihkconfig", &["0", "release", "cpu", &q]).0 != 0 {
        eprintln!("error: releasing CPUs");
        return 1;
    }
    if tool("ihkconfig", &["0", "release", "mem", "all"]).0 != 0 {
        eprintln!("error: releasing memory");
        return 1;
    }
    if !keep_modules && ihk::rmmod(&[]) != 0 {
        eprintln!("error: removing kernel modules");
        return 1;
    }
    0
}
