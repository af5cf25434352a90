//! `mcexec`: the McKernel proxy. Runs the program as its child, pinned to the
//! instance's CPUs, while holding `/dev/mcos<N>` open.
//!
//! "Holding the instance open" and "per-process data for pid N" are OFD byte
//! locks on the device file (byte 0 shared; byte `PPD_BASE + nspid`
//! exclusive). The kernel drops them when mcexec dies, however it dies, as
//! mcctrl's release handler drops the real ones.

use crate::common::*;
use crate::ihk::{self, PPD_BASE};
use std::fs::File;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Options that take an argument (getopt `+c:n:t:M:h:e:s:m:u:S:f:`).
const SHORT_ARG: &str = "cntMhesmuSf";
/// Long options and whether they take an argument.
const LONG: &[(&str, bool)] = &[
    ("extend-heap-by", true),
    ("stack-premap", true),
    ("mpol-threshold", true),
    ("mpol-no-heap", false),
    ("mpol-no-stack", false),
    ("mpol-no-bss", false),
    ("mpol-shm-premap", false),
    ("no-bind-ikc-map", false),
    ("enable-straight-map", false),
    ("straight-map-threshold", true),
    ("disable-sched-yield", false),
    ("enable-uti", false),
    ("uti-thread-rank", true),
    ("uti-use-last-cpu", false),
    ("enable-tofu", false),
    ("profile", false),
    ("debug-mcexec", false),
    ("enable-vdso", false),
    ("disable-vdso", false),
];

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn usage(argv0: &str) {
    eprintln!(
        "Usage: {} [-c target_core] [-n nr_partitions] [<-t nr_threads>] [--mpol-threshold=N] [--enable-straight-map] [--extend-heap-by=N] [-s (--stack-premap=)[premap_size][,max]] [--mpol-no-heap] [--mpol-no-bss] [--mpol-no-stack] [--mpol-shm-premap] [--disable-sched-yield] [--enable-uti] [<mcos-id>] (program) [args...]",
        argv0
    );
}

struct Opts {
    nr_partitions: u32,
    rest: Vec<String>,
}

/// getopt with a leading `+`: stop at the first non-option.
fn parse(args: &[String], argv0: &str) -> Result<Opts, i32> {
    let long: Vec<(&str, &str, bool)> = LONG.iter().map(|&(n, a)| (n, n, a)).collect();
    let mut nr_partitions = 0;
    let first = getopt_plus(
        args,
        SHORT_ARG,
        "",
        &long,
        |key, v| {
            if key == "n" {
                nr_partitions = ihk::atoi(v.as_deref().unwrap_or(""));
            }
            Ok(())
        },
        |e| {
            match e {
                GetoptError::UnknownLong(a) => eprintln!("{argv0}: unrecognized option '{a}'"),
                GetoptError::MissingLong(a) => {
                    eprintln!("{argv0}: option '{a}' requires an argument")
                }
                GetoptError::UnknownShort(c) => eprintln!("{argv0}: invalid option -- '{c}'"),
                GetoptError::MissingShort(c) => {
                    eprintln!("{argv0}: option requires an argument -- '{c}'")
                }
            }
            usage(argv0);
            1
        },
    )?;
    Ok(Opts {
        nr_partitions,
        rest: args[first..].to_vec(),
    })
}

fn find_program(prog: &str) -> Option<String> {
    if prog.contains('/') {
        return std::path::Path::new(prog)
            .is_file()
            .then(|| prog.to_string());
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':')
        .map(|d| std::path::Path::new(if d.is_empty() { "." } else { d }).join(prog))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// `argv` is the full argv (argv[0] is the name called under); `args` the
/// arguments after the tool name.
pub fn mcexec(argv: &[String], args: &[String]) -> i32 {
    reexec_once(argv);
    let argv0 = argv.first().map(String::as_str).unwrap_or("mcexec");
    let opts = match parse(args, argv0) {
        Ok(o) => o,
        Err(c) => return c,
    };
    let mut rest = opts.rest;
    let mut os = 0u32;
    if rest
        .first()
        .map(|s| s.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(false)
    {
        os = ihk::atoi(&rest[0]);
        rest.remove(0);
    }
    if rest.is_empty() {
        usage(argv0);
        return 1;
    }
    let fail_open = || {
        eprintln!("Error: Failed to open /dev/mcos{}.", os);
        1
    };
    let path = ihk::dev_path(&format!("mcos{}", os));
    let Ok(dev) = ihk::open_instance(&path, true).or_else(|_| ihk::open_instance(&path, false))
    else {
        return fail_open();
    };
    // Hold the instance open: `ihkconfig destroy` gets EBUSY from now on.
    if !matches!(ofd_try_lock(&dev, 0, false), Ok(true)) {
        return fail_open();
    }
    if ihk::os_ioctl(&dev, u64::from(ihk::nr::OS_GET_BUILDID)).is_err() {
        eprintln!("Error: IHK_OS_GET_BUILDID failed");
        return 1;
    }
    let Ok(kv) = ihk::read_instance(&dev) else {
        return fail_open();
    };
    if kv.get("state") == Some("DESTROYED") || ihk::status_of(&kv) != "RUNNING" {
        return fail_open();
    }
    let theirs = kv.get_or("buildid", "");
    if theirs != BUILDID {
        eprintln!(
            "Error: IHK_OS_GET_BUILDID: build-id mismatch: mcexec {}, /dev/mcos{} {}",
            BUILDID, os, theirs
        );
        return 1;
    }
    let Some(prog) = find_program(&rest[0]) else {
        eprintln!("Error: {}: {}", rest[0], strerror(libc::ENOENT));
        return 1;
    };

    // MCEXEC_UP_CREATE_PPD, keyed by the namespace-local pid.
    let nspid = std::process::id() as u64;
    if let Err(e) = ihk::os_ioctl(&dev, u64::from(ihk::nr::MCEXEC_UP_CREATE_PPD)) {
        eprintln!("creating mcctrl per-process structure: {}", strerror(e));
        return 1;
    }
    match ofd_try_lock(&dev, PPD_BASE + nspid, true) {
        Ok(true) => {}
        _ => {
            eprintln!(
                "Error: MCEXEC_UP_CREATE_PPD: {} (per-process data for pid {} already exists)",
                strerror(libc::EINVAL),
                nspid
            );
            return 1;
        }
    }

    let all_cpus = parse_cpulist(kv.get_or("cpus", "")).unwrap_or_default();
    let cpus = if opts.nr_partitions > 0 {
        let joined = ihk::os_ioctl(&dev, u64::from(ihk::nr::MCEXEC_UP_GET_CPUSET))
            .and_then(|()| join_group(&dev, opts.nr_partitions, nspid, &all_cpus));
        match joined {
            Ok(c) => c,
            Err(e) => {
                eprintln!("Error: MCEXEC_UP_GET_CPUSET: {}", strerror(e));
                return 1;
            }
        }
    } else {
        all_cpus
    };

    let crash = take_fault(&["mcexec_crash"]).or_else(|| instance_fault(&dev));
    watch_instance(dev, os);
    run_child(&prog, &rest, &cpus, crash.map(|f| f.param_ms(100)))
}

/// Set when the instance stopped RUNNING under the program (`lwk-sim panic`).
static LOST: AtomicI32 = AtomicI32::new(0);

/// The LWK dies under its processes: a kernel that panicked runs nothing any more.
/// mcexec notices (its offload calls fail), kills what stood for the LWK process and
/// exits 255 with a message (our wording; the sources name none).
fn watch_instance(dev: File, os: u32) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let st = match ihk::read_instance(&dev) {
            Ok(kv) if kv.get("state") == Some("DESTROYED") => "DESTROYED",
            Ok(kv) => ihk::status_of(&kv),
            Err(_) => continue,
        };
        if st == "RUNNING" {
            continue;
        }
        eprintln!("mcexec: OS instance {os} is {st}: the program running on it is lost");
        LOST.store(1, Ordering::SeqCst);
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return;
    });
}

/// Re-execute once through /proc/self/exe with ADDR_NO_RANDOMIZE, as the real
/// proxy does; argv (argv[0] included) is kept so name dispatch still works.
fn reexec_once(argv: &[String]) {
    // SAFETY: personality(0xffffffff) only queries.
    let pers = unsafe { libc::personality(0xffff_ffff) };
    if pers < 0 || pers & libc::ADDR_NO_RANDOMIZE != 0 {
        return;
    }
    // SAFETY: personality(2) with an integer argument.
    if unsafe { libc::personality((pers | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong) } < 0 {
        // A seccomp profile that forbids it (Docker's default does): re-executing now
        // would find ASLR still on and re-execute forever. We do not know that the real
        // proxy carries on with ASLR, so fail loudly rather than pretend.
        eprintln!(
            "mcexec: personality(ADDR_NO_RANDOMIZE): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let cargs: Vec<_> = argv.iter().map(|a| cstr(a)).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let exe = cstr("/proc/self/exe");
    // SAFETY: NUL-terminated argv of valid C strings.
    unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
    // Without /proc the real mcexec carries on without the re-exec too.
}

fn instance_fault(dev: &File) -> Option<crate::common::Fault> {
    ihk::with_instance(dev, |kv| {
        let faults: Vec<Fault> = kv
            .all("fault")
            .iter()
            .filter_map(|l| Fault::parse(l))
            .collect();
        let found = faults.iter().find(|f| f.name == "mcexec_crash").cloned()?;
        if !found.always {
            kv.remove_all("fault");
            let mut dropped = false;
            for f in faults {
                if !dropped && f == found {
                    dropped = true;
                    continue;
                }
                kv.push("fault", f.render());
            }
        }
        Some(found)
    })
    .ok()
    .flatten()
}

/// `-n N`: group by parent pid, wait for N members (10 s + N×0.1 s), give
/// each CPUs/N in start order. Record: `pe=<ppid> <batch> <n> <joined> <pids>`.
fn join_group(dev: &File, n: u32, nspid: u64, cpus: &[u32]) -> Result<Vec<u32>, i32> {
    // SAFETY: getppid never fails.
    let ppid = unsafe { libc::getppid() } as u64;
    let parse = |l: &str| -> Option<(u64, u64, u32, u32, Vec<u64>)> {
        let w: Vec<&str> = l.split_whitespace().collect();
        Some((
            w.first()?.parse().ok()?,
            w.get(1)?.parse().ok()?,
            w.get(2)?.parse().ok()?,
            w.get(3)?.parse().ok()?,
            w.get(4)
                .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default(),
        ))
    };
    let render = |r: &(u64, u64, u32, u32, Vec<u64>)| {
        format!(
            "{} {} {} {} {}",
            r.0,
            r.1,
            r.2,
            r.3,
            r.4.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let joined = ihk::with_instance(dev, |kv| {
        let mut recs: Vec<_> = kv.all("pe").iter().filter_map(|l| parse(l)).collect();
        // Groups whose members have all exited are gone.
        recs.retain(|r| r.4.iter().any(|p| ofd_held(dev, PPD_BASE + p)));
        let batch;
        let order;
        if let Some(r) = recs.iter_mut().find(|r| r.0 == ppid && r.2 == n && r.3 < n) {
            order = r.3;
            r.3 += 1;
            r.4.push(nspid);
            batch = r.1;
        } else {
            batch = recs.iter().map(|r| r.1).max().unwrap_or(0) + 1;
            order = 0;
            recs.push((ppid, batch, n, 1, vec![nspid]));
        }
        kv.remove_all("pe");
        for r in &recs {
            kv.push("pe", render(r));
        }
        (batch, order)
    });
    let Ok((batch, order)) = joined else {
        return Err(libc::EINVAL);
    };
    let deadline = Instant::now() + Duration::from_millis(10_000 + n as u64 * 100);
    loop {
        let kv = ihk::read_instance(dev).map_err(|_| libc::EINVAL)?;
        let full = kv
            .all("pe")
            .iter()
            .filter_map(|l| parse(l))
            .any(|r| r.0 == ppid && r.1 == batch && r.3 >= n);
        if full {
            break;
        }
        if Instant::now() >= deadline {
            return Err(libc::ETIMEDOUT);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let per = cpus.len() / n as usize;
    if per == 0 {
        return Err(libc::EINVAL);
    }
    let start = order as usize * per;
    Ok(cpus[start..start + per].to_vec())
}

fn run_child(prog: &str, args: &[String], cpus: &[u32], crash_after: Option<u64>) -> i32 {
    crate::common::announce_cpus(cpus);
    let cprog = cstr(prog);
    let cargs: Vec<_> = args.iter().map(|a| cstr(a)).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: signal-mask and fork/exec plumbing on plain data.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        let pid = libc::fork();
        if pid < 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            eprintln!("Error: fork: {}", strerror(errno()));
            return 1;
        }
        if pid == 0 {
            // The LWK process: default dispositions, pinned to the instance CPUs. It
            // lives no longer than its proxy: a killed mcexec closes /dev/mcosN and
            // mcctrl's release handler tears the LWK process down.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            for s in 1..=64 {
                libc::signal(s, libc::SIG_DFL);
            }
            let _ = pin_to(cpus);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::execv(cprog.as_ptr(), ptrs.as_ptr());
            let msg = format!("Error: execve {}: {}\n", prog, strerror(errno()));
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
            libc::_exit(1);
        }
        CHILD.store(pid, Ordering::SeqCst);
        for s in 1..=64 {
            if [
                libc::SIGKILL,
                libc::SIGSTOP,
                libc::SIGCHLD,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ]
            .contains(&s)
            {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());

        if let Some(ms) = crash_after {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                // The proxy dies; mcctrl's release handler tears the LWK process down.
                libc::kill(pid, libc::SIGKILL);
                libc::kill(libc::getpid(), libc::SIGKILL);
            });
        }

        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            if r < 0 && errno() != libc::EINTR {
                return 1;
            }
        }
        if LOST.load(Ordering::SeqCst) != 0 {
            return 255;
        }
        if libc::WIFEXITED(status) {
            return libc::WEXITSTATUS(status);
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            if libc::isatty(2) == 1 {
                eprintln!("Terminate by signal {}", sig);
            }
            crate::log_now(&format!("signal {}", sig));
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            return 128 + sig;
        }
        1
    }
}
