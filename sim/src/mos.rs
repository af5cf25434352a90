//! mOS: the simulated `/sys/kernel/mOS`, `lwkctl` and `yod`.
//!
//! Every sysfs file is rewritten in place, so a container bind-mounting the
//! directory keeps seeing live values. The kernel's per-process ownership of
//! a reservation is a ledger line in `.reservations` plus an OFD byte lock on
//! that file (offset `PPD_BASE + slot`) held by an fd yod leaves open across
//! `execvp`: when the launched process (and anything it forked) has exited,
//! the lock is gone and the next access reclaims the reservation.

use crate::common::*;
use crate::ihk::PPD_BASE;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FILES: &[&str] = &[
    "lwkcpus",
    "lwkcpus_syscall",
    "lwkmem",
    "lwkcpus_reserved",
    "lwkmem_reserved",
    "lwkcpus_request",
    "lwkmem_request",
    "lwk_util_threads",
    "lwkcpus_sequence",
    "lwk_options",
    "lwkmem_mempolicy_info",
    "lwkgpus",
    "lwkgpus_reserved",
    "lwkgpus_request",
    "lwkprocesses",
    "lwk_config",
    ".reservations",
    ".lwk-sim-faults",
];
const MARKER: &str = ".lwk-sim";
/// The files in which the simulator keeps what the mOS kernel keeps in its own memory:
/// a real yod writes only the request files and the kernel updates the rest, but the
/// simulated yod, inside a container too, updates these itself. The marker names them
/// (`kernel_state=`), so that a runtime binding the directory read-only for containers
/// can keep them writable on a simulated node (and only there).
const KERNEL_STATE: &[&str] = &[
    ".reservations",
    "lwkcpus_reserved",
    "lwkmem_reserved",
    "lwkprocesses",
    ".lwk-sim-faults",
];

/// `/sys/kernel/mOS` when it is the simulator's (bind-mounted into a
/// container), else `$LWK_SIM_ROOT/sys/kernel/mOS`.
pub fn sysfs() -> PathBuf {
    let sys = Path::new("/sys/kernel/mOS");
    if sys.join(MARKER).is_file() {
        sys.to_path_buf()
    } else {
        root().join("sys/kernel/mOS")
    }
}

pub fn ensure_sysfs() -> io::Result<()> {
    let d = root().join("sys/kernel/mOS");
    fs::create_dir_all(&d)?;
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777))?;
    for f in FILES {
        let p = d.join(f);
        if !p.exists() {
            fs::write(&p, "")?;
        }
        // udev's `chmod -R o=u`: whoever may write, everybody may.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))?;
    }
    let marker = format!("{DEV_MAGIC}\nkernel_state={}\n", KERNEL_STATE.join(" "));
    write_in_place(&d.join(MARKER), &marker)?;
    fs::set_permissions(d.join(MARKER), fs::Permissions::from_mode(0o644))
}

/// A reservation: slot, pid, CPUs, bytes per node.
#[derive(Clone, Debug)]
struct Resv {
    slot: u64,
    pid: u32,
    cpus: Vec<u32>,
    mem: Vec<u64>,
}

fn parse_resv(l: &str, numa: usize) -> Option<Resv> {
    let w: Vec<&str> = l.split_whitespace().collect();
    Some(Resv {
        slot: w.first()?.parse().ok()?,
        pid: w.get(1)?.parse().ok()?,
        cpus: parse_cpulist(w.get(2)?.trim_matches('-')).unwrap_or_default(),
        mem: {
            let mut v: Vec<u64> = w
                .get(3)?
                .split(',')
                .filter_map(|x| x.parse().ok())
                .collect();
            v.resize(numa, 0);
            v
        },
    })
}

fn render_resv(r: &Resv) -> String {
    let c = fmt_cpulist(&r.cpus);
    format!(
        "{} {} {} {}\n",
        r.slot,
        r.pid,
        if c.is_empty() { "-".into() } else { c },
        r.mem
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn fmt_bytes(v: &[u64]) -> String {
    v.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_bytes(s: &str, numa: usize) -> Vec<u64> {
    let mut v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    v.resize(numa, 0);
    v
}

/// The partition and its live reservations, read under the directory lock.
struct Part {
    dir: PathBuf,
    ledger: File,
    numa: usize,
    lwkcpus: Vec<u32>,
    lwkmem: Vec<u64>,
    resv: Vec<Resv>,
}

impl Part {
    /// Read everything and reclaim reservations whose owners have exited.
    fn load(dir: &Path) -> io::Result<Part> {
        let t = Topology::load();
        let numa = t.numa as usize;
        let ledger = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(".reservations"))?;
        let text = read_fd(&ledger)?;
        let all: Vec<Resv> = text.lines().filter_map(|l| parse_resv(l, numa)).collect();
        let resv: Vec<Resv> = all
            .iter()
            .filter(|r| ofd_held(&ledger, PPD_BASE + r.slot))
            .cloned()
            .collect();
        let p = Part {
            dir: dir.to_path_buf(),
            ledger,
            numa,
            lwkcpus: parse_cpulist(&read_trim(&dir.join("lwkcpus"))).unwrap_or_default(),
            lwkmem: parse_bytes(&read_trim(&dir.join("lwkmem")), numa),
            resv,
        };
        if p.resv.len() != all.len() {
            p.store()?;
        }
        Ok(p)
    }
    fn reserved_cpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.resv.iter().flat_map(|r| r.cpus.clone()).collect();
        v.sort_unstable();
        v
    }
    fn reserved_mem(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.numa];
        for r in &self.resv {
            for (i, b) in r.mem.iter().enumerate() {
                if i < v.len() {
                    v[i] += b;
                }
            }
        }
        v
    }
    fn store(&self) -> io::Result<()> {
        let s: String = self.resv.iter().map(render_resv).collect();
        rewrite_in_place(&self.ledger, &s)?;
        let w = |f: &str, v: String| write_in_place(&self.dir.join(f), &format!("{}\n", v));
        w("lwkcpus_reserved", fmt_cpulist(&self.reserved_cpus()))?;
        w("lwkmem_reserved", fmt_bytes(&self.reserved_mem()))?;
        let pids: Vec<String> = self.resv.iter().map(|r| r.pid.to_string()).collect();
        w("lwkprocesses", pids.join(","))?;
        Ok(())
    }
}

/// flock(LOCK_EX) on the sysfs directory, polling until `timeout` (None: forever).
fn lock_dir(dir: &Path, timeout: Option<Duration>) -> io::Result<Flock> {
    let file = File::open(dir)?;
    let start = Instant::now();
    loop {
        // SAFETY: flock on a valid fd.
        let r = unsafe {
            libc::flock(
                std::os::unix::io::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(Flock { file });
        }
        let e = errno();
        if e != libc::EWOULDBLOCK && e != libc::EINTR {
            return Err(io::Error::from_raw_os_error(e));
        }
        if let Some(t) = timeout {
            if start.elapsed() >= t {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------- lwkctl

fn lwkctl_usage() {
    eprintln!("Usage: lwkctl [-c 'lwkcpus=<spec> lwkmem=<spec> [lwkcpu_profile=normal|debug]'] [-p yes|no] [-d] [-s [-r]] [-t <sec>] [-f] [-v <level>]");
}

pub fn lwkctl(args: &[String]) -> i32 {
    let mut create: Option<String> = None;
    let (mut delete, mut show, mut raw, mut force, mut precise) =
        (false, false, false, false, false);
    let mut timeout = 300u64;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i).cloned()
        };
        match a {
            "-c" | "--create" => match val() {
                Some(v) => create = Some(v),
                None => {
                    lwkctl_usage();
                    return 1;
                }
            },
            "-d" | "--delete" => delete = true,
            "-s" | "--show" => show = true,
            "-r" | "--raw" => raw = true,
            "-f" | "--force" => force = true,
            "-p" | "--precise" => {
                precise = true;
                if val().is_none() {
                    lwkctl_usage();
                    return 1;
                }
            }
            "-t" | "--timeout" => match val().and_then(|v| v.parse().ok()) {
                Some(t) => timeout = t,
                None => {
                    lwkctl_usage();
                    return 1;
                }
            },
            "-v" | "--verbose" => {
                let _ = val();
            }
            "-h" | "--help" => {
                lwkctl_usage();
                return 0;
            }
            _ => {
                eprintln!("lwkctl: invalid option {}", a);
                lwkctl_usage();
                return 1;
            }
        }
        i += 1;
    }
    if precise && create.is_none() {
        eprintln!("lwkctl: -p requires -c");
        return 1;
    }
    if raw && !show {
        eprintln!("lwkctl: -r requires -s");
        return 1;
    }
    if create.is_none() && !delete && !show {
        lwkctl_usage();
        return 1;
    }
    if (create.is_some() || delete) && !is_root() {
        eprintln!("lwkctl: must be run as root");
        return 1;
    }
    let dir = sysfs();
    if !dir.join(MARKER).is_file() {
        eprintln!("lwkctl: {}: mOS is not running", dir.display());
        return 1;
    }
    let to = (timeout > 0).then(|| Duration::from_secs(timeout));
    let Ok(_g) = lock_dir(&dir, to) else {
        eprintln!("lwkctl: timed out waiting for the mOS lock");
        return 1;
    };
    let Ok(part) = Part::load(&dir) else {
        eprintln!("lwkctl: cannot read {}", dir.display());
        return 1;
    };
    if delete || create.is_some() {
        if !part.resv.is_empty() && !force {
            let pids: Vec<String> = part.resv.iter().map(|r| r.pid.to_string()).collect();
            eprintln!(
                "lwkctl: LWK partition is in use by process(es) {}; use -f to force",
                pids.join(",")
            );
            return 1;
        }
        // lwkctl's one write: the request to the kernel ("0" deletes). Where the file
        // cannot be written (a read-only bind in a container), nothing changes.
        let request = create.as_deref().unwrap_or("0");
        if let Err(e) = write_in_place(&dir.join("lwk_config"), &format!("{request}\n")) {
            eprintln!(
                "lwkctl: writing {}: {}",
                dir.join("lwk_config").display(),
                strerror(e.raw_os_error().unwrap_or(libc::EIO))
            );
            return 1;
        }
        if let Err(e) = clear_partition(&part) {
            eprintln!("lwkctl: deleting LWK partition: {}", e);
            return 1;
        }
    }
    if let Some(spec) = create {
        if let Err(msg) = create_partition(&dir, &spec) {
            eprintln!("lwkctl: {}", msg);
            return 1;
        }
    }
    if show {
        let Ok(p) = Part::load(&dir) else { return 1 };
        if raw {
            println!("{}", read_trim(&dir.join("lwk_config")));
        } else {
            let mem: Vec<String> = p
                .lwkmem
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{}@{}", b, i))
                .collect();
            println!("LWK CPUs         : {}", fmt_cpulist(&p.lwkcpus));
            println!(
                "Utility CPUs     : {}",
                read_trim(&dir.join("lwkcpus_syscall"))
            );
            println!("LWK memory       : {}", mem.join(","));
            println!("Reserved CPUs    : {}", fmt_cpulist(&p.reserved_cpus()));
            println!("Reserved memory  : {}", fmt_bytes(&p.reserved_mem()));
        }
    }
    0
}

fn clear_partition(p: &Part) -> io::Result<()> {
    rewrite_in_place(&p.ledger, "")?;
    for f in [
        "lwkcpus",
        "lwkcpus_syscall",
        "lwkmem",
        "lwkcpus_reserved",
        "lwkmem_reserved",
        "lwkprocesses",
        "lwk_config",
    ] {
        write_in_place(&p.dir.join(f), "")?;
    }
    Ok(())
}

fn create_partition(dir: &Path, spec: &str) -> Result<(), String> {
    let t = Topology::load();
    let mut lwk: Vec<u32> = Vec::new();
    let mut util: Vec<u32> = Vec::new();
    let mut mem = vec![0u64; t.numa as usize];
    let mut cfg = Vec::new();
    for tok in spec.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            return Err(format!("invalid specification: {}", tok));
        };
        match k {
            "lwkcpus" => {
                if v == "auto" {
                    // All but the first CPU of each NUMA node, which stay with Linux.
                    for n in 0..t.numa {
                        lwk.extend(t.cpus_of(n).into_iter().skip(1));
                    }
                } else {
                    for group in v.split(':') {
                        let (u, l) = match group.split_once('.') {
                            Some((u, l)) => (u, l),
                            None => ("", group),
                        };
                        let uc = parse_cpulist(u).ok_or(format!("invalid lwkcpus: {}", v))?;
                        let lc = parse_cpulist(l)
                            .filter(|x| !x.is_empty())
                            .ok_or(format!("invalid lwkcpus: {}", v))?;
                        util.extend(uc);
                        lwk.extend(lc);
                    }
                }
                if lwk.iter().any(|c| *c == 0 || *c >= t.cpus) {
                    return Err(format!(
                        "invalid lwkcpus: {} (CPU 0 and CPUs >= {} cannot be LWK CPUs)",
                        v, t.cpus
                    ));
                }
                cfg.push(tok.to_string());
            }
            "lwkmem" => {
                let node = t.node_mem() / 100 * 90;
                if v == "auto" || v == "auto:max" {
                    mem.iter_mut().for_each(|m| *m = node);
                } else {
                    for part in v.split(',') {
                        let (n, s) = match part.split_once(':') {
                            Some((n, s)) => (n.parse::<usize>().ok(), s),
                            None => (Some(0), part),
                        };
                        let size = parse_size(s);
                        match (n, size) {
                            (Some(n), Some(s)) if n < mem.len() && s <= node => mem[n] += s,
                            _ => return Err(format!("invalid lwkmem: {}", v)),
                        }
                    }
                }
                cfg.push(tok.to_string());
            }
            "lwkcpu_profile" => {
                if v != "normal" && v != "debug" {
                    return Err(format!("invalid lwkcpu_profile: {}", v));
                }
                cfg.push(tok.to_string());
            }
            _ => return Err(format!("invalid specification: {}", tok)),
        }
    }
    if lwk.is_empty() {
        return Err("no LWK CPUs specified (lwkcpus=)".into());
    }
    lwk.sort_unstable();
    lwk.dedup();
    let w = |f: &str, v: String| {
        write_in_place(&dir.join(f), &format!("{}\n", v)).map_err(|e| e.to_string())
    };
    w("lwkcpus", fmt_cpulist(&lwk))?;
    w("lwkcpus_syscall", fmt_cpulist(&util))?;
    w("lwkmem", fmt_bytes(&mem))?;
    w("lwk_config", cfg.join(" "))?;
    // Reservation faults for yod move next to the sysfs files, where a yod in
    // a container (without $LWK_SIM_ROOT) still meets them.
    if let Ok(_g) = root_lock() {
        let moved = drain_faults(&["yod_ebusy", "yod_enomem", "yod_einval", "yod_crash"]);
        if !moved.is_empty() {
            let mut s = fs::read_to_string(dir.join(".lwk-sim-faults")).unwrap_or_default();
            for f in moved {
                s.push_str(&f.render());
                s.push('\n');
            }
            let _ = write_in_place(&dir.join(".lwk-sim-faults"), &s);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- yod

fn yod_usage() {
    eprintln!("Usage: yod [-R frac|all|MPI|file:map] [-c list|mask|all -M size|frac|all|MPI] [-C n|frac|all|MPI -M ...] [-u n] [-o opt] [--dry-run] [-v n] command [args...]");
}

/// `yod_abort(-errno)`: exit status 256 - errno (EBUSY 240, EINVAL 234, -1 255).
fn abort(errno: i32, msg: &str) -> i32 {
    eprintln!("yod: {}", msg);
    if errno <= 0 {
        255
    } else {
        256 - errno
    }
}

const YOD_SHORT_ARG: &str = "cCGgMpRuovxyU";
/// (long name, getopt key: the short letter or else the name, takes a value).
const YOD_LONG: &[(&str, &str, bool)] = &[
    ("resources", "R", true),
    ("cpus", "c", true),
    ("cores", "C", true),
    ("mem", "M", true),
    ("gpus", "G", true),
    ("gpu-tiles", "g", true),
    ("util_threads", "u", true),
    ("memory-preference", "p", true),
    ("opt", "o", true),
    ("verbose", "v", true),
    ("help", "h", false),
    ("resource_algorithm", "resource_algorithm", true),
    ("layout", "layout", true),
    ("rank-layout", "rank-layout", true),
    ("aligned-mmap", "aligned-mmap", true),
    ("brk-clear-length", "brk-clear-length", true),
    ("mosview", "mosview", true),
    ("maxpage", "maxpage", true),
    ("pagefault", "pagefault", true),
    ("mempolicy", "mempolicy", true),
    ("memtype-ratio", "memtype-ratio", true),
    ("lwkmem-disable", "lwkmem-disable", false),
    ("dry-run", "dry-run", false),
];

#[derive(Default)]
struct YodOpts {
    r: Option<String>,
    c: Option<String>,
    cores: Option<String>,
    m: Option<String>,
    gpus: Option<String>,
    util: Option<String>,
    opts: Vec<String>,
    dry_run: bool,
    verbose: u32,
    cmd: Vec<String>,
}

fn parse_yod(args: &[String]) -> Result<YodOpts, i32> {
    let mut o = YodOpts::default();
    let apply = |o: &mut YodOpts, key: &str, v: Option<String>| -> Result<(), i32> {
        match key {
            "R" => o.r = v,
            "c" => o.c = v,
            "C" => o.cores = v,
            "M" => o.m = v,
            "G" | "g" => o.gpus = v,
            "u" => o.util = v,
            "o" => o.opts.extend(v),
            "v" => o.verbose = v.and_then(|x| x.parse().ok()).unwrap_or(1),
            "h" => {
                yod_usage();
                return Err(0);
            }
            "dry-run" => o.dry_run = true,
            "x" | "y" | "U" => return Err(abort(-1, &format!("option -{} is not supported", key))),
            other => o.opts.push(match v {
                Some(v) => format!("{}={}", other, v),
                None => other.to_string(),
            }),
        }
        Ok(())
    };
    let first = getopt_plus(
        args,
        YOD_SHORT_ARG,
        "h",
        YOD_LONG,
        |key, v| apply(&mut o, key, v),
        |e| match e {
            GetoptError::UnknownLong(a) => {
                yod_usage();
                abort(libc::EINVAL, &format!("unrecognized option '{a}'"))
            }
            GetoptError::MissingLong(a) => {
                abort(libc::EINVAL, &format!("option '{a}' requires an argument"))
            }
            GetoptError::UnknownShort(c) => {
                yod_usage();
                abort(libc::EINVAL, &format!("invalid option -- '{c}'"))
            }
            GetoptError::MissingShort(c) => abort(
                libc::EINVAL,
                &format!("option requires an argument -- '{c}'"),
            ),
        },
    )?;
    o.cmd = args[first..].to_vec();
    Ok(o)
}

fn mpi_rank() -> Option<(u32, u32)> {
    let r = std::env::var("MPI_LOCALRANKID").ok()?.trim().parse().ok()?;
    let n = std::env::var("MPI_LOCALNRANKS").ok()?.trim().parse().ok()?;
    Some((r, n))
}

/// A fraction `0<f<=1` like `0.5` or `1/4`.
fn parse_frac(s: &str) -> Option<f64> {
    let f = if let Some((a, b)) = s.split_once('/') {
        a.trim().parse::<f64>().ok()? / b.trim().parse::<f64>().ok()?
    } else if s.contains('.') {
        s.parse().ok()?
    } else {
        return None;
    };
    (f > 0.0 && f <= 1.0).then_some(f)
}

enum Amount {
    All,
    Frac(f64),
    Count(u64),
}

fn amount(s: &str, allow_size: bool) -> Result<Amount, i32> {
    if s == "all" {
        return Ok(Amount::All);
    }
    if s == "MPI" {
        return match mpi_rank() {
            Some((_, n)) if n > 0 => Ok(Amount::Frac(1.0 / n as f64)),
            _ => Err(abort(
                libc::EINVAL,
                "MPI resources need MPI_LOCALRANKID and MPI_LOCALNRANKS",
            )),
        };
    }
    if let Some(f) = parse_frac(s) {
        return Ok(Amount::Frac(f));
    }
    let n = if allow_size {
        parse_size(s)
    } else {
        s.parse().ok()
    };
    n.map(Amount::Count)
        .ok_or_else(|| abort(libc::EINVAL, &format!("invalid value: {}", s)))
}

/// Choose CPUs and memory for the request (under the lock).
fn select(o: &YodOpts, p: &Part) -> Result<(Vec<u32>, Vec<u64>), i32> {
    let reserved = p.reserved_cpus();
    let avail: Vec<u32> = p
        .lwkcpus
        .iter()
        .copied()
        .filter(|c| !reserved.contains(c))
        .collect();
    let rmem = p.reserved_mem();
    let memavail: Vec<u64> = p
        .lwkmem
        .iter()
        .zip(rmem.iter())
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total_mem: u64 = p.lwkmem.iter().sum();
    if p.lwkcpus.is_empty() {
        return Err(abort(-1, "no LWK CPUs are designated (see lwkctl -c)"));
    }
    let count_from = |a: &Amount, total: usize| -> usize {
        match a {
            Amount::All => usize::MAX,
            Amount::Frac(f) => ((total as f64) * f).ceil().max(1.0) as usize,
            Amount::Count(n) => *n as usize,
        }
    };
    let take_cpus = |n: usize| -> Result<Vec<u32>, i32> {
        if n == usize::MAX {
            if avail.is_empty() {
                return Err(abort(libc::EBUSY, "all LWK CPUs are reserved"));
            }
            return Ok(avail.clone());
        }
        if n > p.lwkcpus.len() || n == 0 {
            return Err(abort(
                libc::EINVAL,
                &format!("{} LWK CPUs requested, {} designated", n, p.lwkcpus.len()),
            ));
        }
        if n > avail.len() {
            return Err(abort(
                libc::EBUSY,
                &format!("{} LWK CPUs requested, {} available", n, avail.len()),
            ));
        }
        Ok(avail[..n].to_vec())
    };
    let (cpu_amt, mem_amt): (Option<Amount>, Amount) = if let Some(r) = &o.r {
        if o.c.is_some() || o.cores.is_some() || o.m.is_some() {
            return Err(abort(
                libc::EINVAL,
                "-R cannot be combined with -c, -C or -M",
            ));
        }
        if r.starts_with("file:") {
            return Err(abort(
                libc::EINVAL,
                "-R file: maps are not supported by lwk-sim",
            ));
        }
        let a = amount(r, false)?;
        let m = match &a {
            Amount::All => Amount::All,
            Amount::Frac(f) => Amount::Frac(*f),
            Amount::Count(_) => {
                return Err(abort(libc::EINVAL, &format!("invalid -R value: {}", r)))
            }
        };
        (Some(a), m)
    } else if o.c.is_some() || o.cores.is_some() || o.m.is_some() {
        if o.m.is_none() {
            return Err(abort(libc::EINVAL, "-c/-C requires -M"));
        }
        if o.c.is_none() && o.cores.is_none() {
            return Err(abort(libc::EINVAL, "-M requires -c or -C"));
        }
        if o.c.is_some() && o.cores.is_some() {
            return Err(abort(libc::EINVAL, "-c and -C are mutually exclusive"));
        }
        let m = amount(o.m.as_deref().unwrap_or("all"), true)?;
        (o.cores.as_deref().map(|c| amount(c, false)).transpose()?, m)
    } else {
        (Some(Amount::All), Amount::All)
    };

    let cpus = if let Some(list) = &o.c {
        let want = if list == "all" {
            p.lwkcpus.clone()
        } else if let Some(hex) = list.strip_prefix("0x").or_else(|| list.strip_prefix("0X")) {
            let mut v = Vec::new();
            for (i, ch) in hex.chars().rev().enumerate() {
                let d = ch
                    .to_digit(16)
                    .ok_or_else(|| abort(libc::EINVAL, &format!("invalid CPU mask: {}", list)))?;
                for b in 0..4 {
                    if d & (1 << b) != 0 {
                        v.push((i * 4 + b) as u32);
                    }
                }
            }
            v
        } else {
            parse_cpulist(list)
                .ok_or_else(|| abort(libc::EINVAL, &format!("invalid CPU list: {}", list)))?
        };
        if want.is_empty() || want.iter().any(|c| !p.lwkcpus.contains(c)) {
            return Err(abort(
                libc::EINVAL,
                &format!("CPUs {} are not all LWK CPUs", list),
            ));
        }
        if want.iter().any(|c| reserved.contains(c)) {
            return Err(abort(
                libc::EBUSY,
                &format!("CPUs {} are already reserved", list),
            ));
        }
        want
    } else {
        let a = cpu_amt.unwrap_or(Amount::All);
        take_cpus(count_from(&a, p.lwkcpus.len()))?
    };

    let want_mem: u64 = match mem_amt {
        Amount::All => memavail.iter().sum(),
        Amount::Frac(f) => ((total_mem as f64) * f) as u64,
        Amount::Count(b) => b,
    };
    if want_mem > total_mem {
        return Err(abort(
            libc::EINVAL,
            &format!("{} bytes requested, {} designated", want_mem, total_mem),
        ));
    }
    if want_mem > memavail.iter().sum::<u64>() {
        return Err(abort(
            libc::EBUSY,
            &format!(
                "{} bytes requested, {} available",
                want_mem,
                memavail.iter().sum::<u64>()
            ),
        ));
    }
    // Memory from the chosen CPUs' NUMA nodes first.
    let t = Topology::load();
    let mut order: Vec<usize> = cpus.iter().map(|c| t.node_of(*c) as usize).collect();
    order.extend(0..p.numa);
    order.dedup();
    let mut mem = vec![0u64; p.numa];
    let mut left = want_mem;
    let mut seen = Vec::new();
    for n in order {
        if seen.contains(&n) || n >= p.numa {
            continue;
        }
        seen.push(n);
        let take = left.min(memavail[n]);
        mem[n] = take;
        left -= take;
    }
    Ok((cpus, mem))
}

/// Per-user rank-order lock: ranks go through in `MPI_LOCALRANKID` order.
fn rank_turn(rank: u32, timeout: Duration) -> Result<Flock, i32> {
    let Ok(user) = std::env::var("USER") else {
        return Err(abort(-1, "USER is not set"));
    };
    let path = PathBuf::from(format!("/tmp/yod.local.lock.{}", user));
    let start = Instant::now();
    loop {
        let g = Flock::exclusive(&path)
            .map_err(|e| abort(-1, &format!("{}: {}", path.display(), e)))?;
        let turn: u32 = read_fd(&g.file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if turn == rank {
            return Ok(g);
        }
        drop(g);
        if start.elapsed() >= timeout {
            return Err(abort(
                libc::EBUSY,
                &format!("timed out waiting for rank {} before rank {}", turn, rank),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn yod(args: &[String]) -> i32 {
    let mut args = args.to_vec();
    if let Ok(env) = std::env::var("YOD_OPTIONS") {
        let mut pre: Vec<String> = Vec::new();
        for o in env.split_whitespace() {
            pre.push("-o".into());
            pre.push(o.into());
        }
        pre.extend(args);
        args = pre;
    }
    let mut o = match parse_yod(&args) {
        Ok(o) => o,
        Err(c) => return c,
    };
    if let Some(v) = std::env::var("YOD_VERBOSE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.verbose = o.verbose.max(v);
    }
    if o.cmd.is_empty() {
        yod_usage();
        return abort(libc::EINVAL, "no command specified");
    }
    if o.gpus.is_some() {
        return abort(libc::EINVAL, "no LWK GPUs are designated");
    }
    let dir = sysfs();
    if !dir.join(MARKER).is_file() {
        return abort(-1, &format!("{}: mOS is not running", dir.display()));
    }
    let timeout = Duration::from_millis(
        std::env::var("YOD_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(60_000),
    );
    let mpi = mpi_rank();
    let rank_guard = match mpi {
        Some((r, _)) => match rank_turn(r, timeout) {
            Ok(g) => Some(g),
            Err(c) => return c,
        },
        None => None,
    };
    let dir_guard = match lock_dir(&dir, Some(timeout)) {
        Ok(g) => g,
        Err(_) => return abort(libc::EBUSY, "timed out waiting for the mOS lock"),
    };
    let Ok(mut part) = Part::load(&dir) else {
        return abort(-1, &format!("cannot read {}", dir.display()));
    };
    let fault = take_fault(&["yod_ebusy", "yod_enomem", "yod_einval"]).or_else(|| {
        take_fault_in_file(
            &dir.join(".lwk-sim-faults"),
            &["yod_ebusy", "yod_enomem", "yod_einval"],
        )
    });
    let crash = take_fault(&["yod_crash"])
        .or_else(|| take_fault_in_file(&dir.join(".lwk-sim-faults"), &["yod_crash"]));
    let sel = match fault.as_ref().map(|f| f.name.as_str()) {
        Some("yod_ebusy") => Err(abort(libc::EBUSY, "simulated fault: resources busy")),
        Some("yod_enomem") => Err(abort(libc::ENOMEM, "simulated fault: out of memory")),
        Some(_) => Err(abort(libc::EINVAL, "simulated fault: invalid request")),
        None => select(&o, &part),
    };
    let (cpus, mem) = match sel {
        Ok(s) => s,
        Err(c) => {
            advance_rank(rank_guard, mpi);
            return c;
        }
    };
    if o.verbose > 0 {
        eprintln!(
            "yod: cpus={} mem={} cmd={}",
            fmt_cpulist(&cpus),
            fmt_bytes(&mem),
            o.cmd.join(" ")
        );
    }
    if o.dry_run {
        advance_rank(rank_guard, mpi);
        return 0;
    }
    // The owner marker: an fd without O_CLOEXEC, locked at PPD_BASE + slot,
    // inherited by the program across execvp.
    let slot = (0u64..)
        .find(|s| !part.resv.iter().any(|r| r.slot == *s))
        .unwrap_or(0);
    let owner = match OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(".reservations"))
    {
        Ok(f) => f,
        Err(e) => return abort(-1, &format!("opening reservations: {}", e)),
    };
    if !matches!(ofd_try_lock(&owner, PPD_BASE + slot, true), Ok(true)) {
        return abort(libc::EBUSY, "reservation slot is busy");
    }
    part.resv.push(Resv {
        slot,
        pid: std::process::id(),
        cpus: cpus.clone(),
        mem: mem.clone(),
    });
    let w = |f: &str, v: String| write_in_place(&dir.join(f), &format!("{}\n", v));
    let res = part
        .store()
        .and_then(|_| w("lwkcpus_request", fmt_cpulist(&cpus)))
        .and_then(|_| w("lwkmem_request", fmt_bytes(&mem)))
        .and_then(|_| w("lwkcpus_sequence", fmt_cpulist(&cpus)))
        .and_then(|_| {
            w(
                "lwk_util_threads",
                o.util.clone().unwrap_or_else(|| "0".into()),
            )
        })
        .and_then(|_| w("lwk_options", o.opts.join(" ")));
    if let Err(e) = res {
        return abort(-1, &format!("writing reservation: {}", e));
    }
    if let Err(e) = pin_to(&cpus) {
        return abort(-1, &format!("sched_setaffinity: {}", e));
    }
    crate::common::announce_cpus(&cpus);
    drop(dir_guard);
    advance_rank(rank_guard, mpi);
    // The owner fd must survive exec.
    // SAFETY: clearing FD_CLOEXEC on an fd we own.
    unsafe {
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&owner);
        libc::fcntl(fd, libc::F_SETFD, 0);
    }
    if let Some(f) = crash {
        crash_later(f.param_ms(100), &owner);
    }
    std::mem::forget(owner);
    crate::log_now("exec");
    let cargs: Vec<_> = o.cmd.iter().map(|a| cstr(a)).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: valid NUL-terminated argv; SIGPIPE back to default as any exec'd program expects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    let e = errno();
    crate::unlog();
    abort(-1, &format!("execvp({}): {}", o.cmd[0], strerror(e)))
}

/// Fault `yod_crash`: the LWK process (yod has exec'd, so it is the program) is killed
/// by SIGKILL `ms` after the exec, as by a crash. A watchdog child does it; it holds
/// neither the reservation nor stdio, and dies with the program if that ends first.
fn crash_later(ms: u64, owner: &std::fs::File) {
    let owner = std::os::unix::io::AsRawFd::as_raw_fd(owner);
    // SAFETY: fork in a single-threaded tool; the child makes only async-signal-safe
    // calls and leaves with _exit.
    unsafe {
        let parent = libc::getpid();
        if libc::fork() != 0 {
            return;
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::close(owner);
        for fd in 0..3 {
            libc::close(fd);
        }
        let ts = libc::timespec {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
        };
        libc::nanosleep(&ts, std::ptr::null_mut());
        libc::kill(parent, libc::SIGKILL);
        libc::_exit(0);
    }
}

fn advance_rank(g: Option<Flock>, mpi: Option<(u32, u32)>) {
    if let (Some(g), Some((r, n))) = (g, mpi) {
        let next = if r + 1 >= n { 0 } else { r + 1 };
        let _ = rewrite_in_place(&g.file, &format!("{}\n", next));
    }
}
