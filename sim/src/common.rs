//! Shared plumbing: the simulator root, locks, atomic and in-place files,
//! CPU-list and size syntax, node topology, faults and the call log.
//!
//! Two kinds of state: host-only state (reservations) is written atomically
//! (write, fsync, rename) under `$LWK_SIM_ROOT/lock`; state a container must
//! see through a bind mount (device files, mOS sysfs files) is rewritten in
//! place under `flock` on that very file, so the container's inode stays live.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const EBUSY: i32 = libc::EBUSY;
pub const EINVAL: i32 = libc::EINVAL;
pub const ENOMEM: i32 = libc::ENOMEM;

/// Build id compiled into this simulator (mcexec compares it with the instance's).
pub const BUILDID: &str = concat!("lwk-sim-", env!("CARGO_PKG_VERSION"));

/// Magic first line of every simulated device / sysfs marker file.
pub const DEV_MAGIC: &str = "# lwk-sim device";

pub fn root() -> PathBuf {
    match std::env::var_os("LWK_SIM_ROOT") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("/run/lwk-sim"),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn strerror(e: i32) -> String {
    io::Error::from_raw_os_error(e)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------- locks

/// An exclusive or shared `flock` held until drop.
pub struct Flock {
    pub file: File,
}

impl Flock {
    pub fn exclusive(path: &Path) -> io::Result<Flock> {
        Self::take(path, libc::LOCK_EX)
    }
    fn take(path: &Path, op: i32) -> io::Result<Flock> {
        let file = OpenOptions::new()
            .read(true)
            .write(op == libc::LOCK_EX && !path.is_dir())
            .create(!path.exists())
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .or_else(|_| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
            })?;
        flock_fd(&file, op)?;
        Ok(Flock { file })
    }
}

pub fn flock_fd(file: &File, op: i32) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a valid fd.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// The global lock for host-only state.
pub fn root_lock() -> io::Result<Flock> {
    let r = root();
    fs::create_dir_all(&r)?;
    Flock::exclusive(&r.join("lock"))
}

fn ofd(fd: i32, cmd: i32, ty: i32, start: u64) -> io::Result<libc::flock> {
    // SAFETY: zeroed flock is a valid value; fcntl with a pointer to it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = 1;
    let r = unsafe { libc::fcntl(fd, cmd, &mut fl) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

/// Try to take an OFD byte lock (`F_OFD_SETLK`); Ok(false) if someone else holds it.
pub fn ofd_try_lock(file: &File, start: u64, exclusive: bool) -> io::Result<bool> {
    let ty = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    match ofd(file.as_raw_fd(), libc::F_OFD_SETLK, ty, start) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether some other open file description holds a lock on byte `start`.
pub fn ofd_held(file: &File, start: u64) -> bool {
    match ofd(file.as_raw_fd(), libc::F_OFD_GETLK, libc::F_WRLCK, start) {
        Ok(fl) => fl.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}

// ---------------------------------------------------------------- files

pub fn write_atomic(path: &Path, data: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rewrite an open file in place (same inode): pwrite at 0 and truncate.
pub fn rewrite_in_place(file: &File, data: &str) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data.as_bytes(), 0)?;
    file.set_len(data.len() as u64)?;
    Ok(())
}

pub fn read_fd(mut file: &File) -> io::Result<String> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut s = String::new();
    file.read_to_string(&mut s)?;
    Ok(s)
}

/// Write a sysfs-like file in place (truncate + write, same inode).
pub fn write_in_place(path: &Path, data: &str) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    rewrite_in_place(&f, data)
}

pub fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- key=value

/// Ordered `key=value` lines; keys may repeat.
#[derive(Clone, Debug, Default)]
pub struct Kv(pub Vec<(String, String)>);

impl Kv {
    pub fn parse(s: &str) -> Kv {
        Kv(s.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            })
            .collect())
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn get_or<'a>(&'a self, k: &str, d: &'a str) -> &'a str {
        self.get(k).unwrap_or(d)
    }
    pub fn num(&self, k: &str) -> u64 {
        self.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        let v = v.into();
        if let Some(e) = self.0.iter_mut().find(|(kk, _)| kk == k) {
            e.1 = v;
        } else {
            self.0.push((k.to_string(), v));
        }
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn remove_all(&mut self, k: &str) {
        self.0.retain(|(kk, _)| kk != k);
    }
    pub fn push(&mut self, k: &str, v: impl Into<String>) {
        self.0.push((k.to_string(), v.into()));
    }
    pub fn render(&self, header: &str) -> String {
        let mut s = String::new();
        if !header.is_empty() {
            s.push_str(header);
            s.push('\n');
        }
        for (k, v) in &self.0 {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        }
        s
    }
}

// ---------------------------------------------------------------- syntax

/// Parse `a,b-c` into a sorted, deduplicated list. Empty string is an empty list.
pub fn parse_cpulist(s: &str) -> Option<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: u32 = a.trim().parse().ok()?;
            let b: u32 = b.trim().parse().ok()?;
            if b < a || b - a > 1 << 16 {
                return None;
            }
            v.extend(a..=b);
        } else {
            v.push(part.trim().parse().ok()?);
        }
    }
    v.sort_unstable();
    v.dedup();
    Some(v)
}

/// Compressed form: `2-4,10`.
pub fn fmt_cpulist(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if j == i {
            out.push(v[i].to_string());
        } else {
            out.push(format!("{}-{}", v[i], v[j]));
        }
        i = j + 1;
    }
    out.join(",")
}

/// `512M`, `4G`, `1024` (bytes), suffixes k/K M G T P E (binary).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        'p' | 'P' => (&s[..s.len() - 1], 1 << 50),
        'e' | 'E' => (&s[..s.len() - 1], 1 << 60),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// A memory request chunk: `size@numa`, or `all` (size None).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemReq {
    pub size: Option<u64>,
    pub numa: u32,
}

/// `<size>[kMGTPE]@<numa>[,…]`, `all`/`ALL` (best effort on every node), NUMA 0 default.
pub fn parse_memlist(s: &str) -> Option<Vec<MemReq>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut v = Vec::new();
    for part in s.split(',') {
        let (sz, numa) = match part.split_once('@') {
            Some((a, b)) => (a, Some(b.trim().parse::<u32>().ok()?)),
            None => (part, None),
        };
        if sz.eq_ignore_ascii_case("all") {
            v.push(MemReq {
                size: None,
                numa: numa.unwrap_or(u32::MAX),
            });
        } else {
            v.push(MemReq {
                size: Some(parse_size(sz)?),
                numa: numa.unwrap_or(0),
            });
        }
    }
    Some(v)
}

/// Per-NUMA byte counts as `bytes@numa,…` (nodes with zero bytes omitted).
pub fn fmt_memnodes(nodes: &[u64]) -> String {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b > 0)
        .map(|(i, b)| format!("{}@{}", b, i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Inverse of `fmt_memnodes`, into a vector of `n` nodes.
pub fn parse_memnodes(s: &str, n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        if let Some((b, i)) = part.split_once('@') {
            if let (Ok(b), Ok(i)) = (b.trim().parse::<u64>(), i.trim().parse::<usize>()) {
                if i < n {
                    v[i] += b;
                }
            }
        }
    }
    v
}

// ---------------------------------------------------------------- topology

/// The simulated node: `cpus` CPUs split evenly into `numa` nodes, `mem` bytes
/// split evenly likewise.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    pub cpus: u32,
    pub mem: u64,
    pub numa: u32,
}

impl Topology {
    pub fn host() -> Topology {
        // SAFETY: sysconf is always safe to call.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let cpus = if n > 0 { n as u32 } else { 1 };
        let mem = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|x| x.parse::<u64>().ok())
                    })
            })
            .map(|kb| kb * 1024)
            .unwrap_or(1 << 30);
        let numa = fs::read_dir("/sys/devices/system/node")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                    })
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        Topology { cpus, mem, numa }
    }

    /// Env (`LWK_SIM_CPUS`, `LWK_SIM_MEM`, `LWK_SIM_NUMA`) over `$ROOT/topology` over
    /// the host. A value that does not parse is an error naming it: a simulated node of
    /// the host's size instead of the one asked for would make every later result wrong.
    pub fn try_load() -> Result<Topology, String> {
        let mut t = Topology::host();
        let file = root().join("topology");
        let f = Kv::parse(&fs::read_to_string(&file).unwrap_or_default());
        let from_file = format!("in {}", file.display());
        let mut set = |key: &str, value: &str, origin: &str| -> Result<(), String> {
            let v = value.trim();
            let bad = |what: &str| format!("{key}={value:?} {origin} is not {what}");
            match key {
                "cpus" | "LWK_SIM_CPUS" => {
                    t.cpus =
                        v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            bad("a CPU count (a whole number of at least 1, e.g. 8)")
                        })?
                }
                "mem" | "LWK_SIM_MEM" => {
                    t.mem = parse_size(v).filter(|n| *n > 0).ok_or_else(|| {
                        bad("a memory size (bytes, or with K, M, G or T, e.g. 16G)")
                    })?
                }
                _ => {
                    t.numa = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        bad("a NUMA node count (a whole number of at least 1, e.g. 2)")
                    })?
                }
            }
            Ok(())
        };
        for key in ["cpus", "mem", "numa"] {
            if let Some(v) = f.get(key) {
                set(key, v, &from_file)?;
            }
        }
        for key in ["LWK_SIM_CPUS", "LWK_SIM_MEM", "LWK_SIM_NUMA"] {
            if let Some(v) = std::env::var_os(key) {
                set(key, &v.to_string_lossy(), "in the environment")?;
            }
        }
        if t.numa > t.cpus {
            return Err(format!(
                "the simulated node has {} NUMA nodes but only {} CPUs; give at least one CPU per node",
                t.numa, t.cpus
            ));
        }
        Ok(t)
    }

    /// [`Topology::try_load`], or the error on stderr and exit status 2: a simulated
    /// node misconfigured by its user, which no real tool would meet.
    pub fn load() -> Topology {
        Topology::try_load().unwrap_or_else(|e| {
            eprintln!("lwk-sim: the simulated node: {e}");
            std::process::exit(2)
        })
    }

    pub fn node_of(&self, cpu: u32) -> u32 {
        (cpu as u64 * self.numa as u64 / self.cpus as u64) as u32
    }
    pub fn cpus_of(&self, node: u32) -> Vec<u32> {
        (0..self.cpus)
            .filter(|c| self.node_of(*c) == node)
            .collect()
    }
    pub fn node_mem(&self) -> u64 {
        self.mem / self.numa as u64
    }
    pub fn render(&self) -> String {
        format!("cpus={}\nmem={}\nnuma={}\n", self.cpus, self.mem, self.numa)
    }
}

/// The variable that tells an LWK process which simulated CPUs it was given: on a
/// real LWK `sched_getaffinity` says so, here the real mask folds them onto the
/// host's few CPUs, so the simulator also names them.
pub const LWK_CPUS_ENV: &str = "LWK_SIM_LWK_CPUS";

/// Name `cpus` to the LWK process about to be exec'd (call before fork/exec).
pub fn announce_cpus(cpus: &[u32]) {
    std::env::set_var(LWK_CPUS_ENV, fmt_cpulist(cpus));
}

/// Simulated CPU k runs on real CPU (k mod nproc).
pub fn pin_to(cpus: &[u32]) -> io::Result<()> {
    // SAFETY: sysconf is always safe to call.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
    // SAFETY: cpu_set_t is plain data; CPU_* macros operate on it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        unsafe { libc::CPU_SET((c % n) as usize, &mut set) };
    }
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------- faults

/// One fault line: `<name> [once|always] [param]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub name: String,
    pub always: bool,
    pub param: Option<String>,
}

impl Fault {
    pub fn parse(line: &str) -> Option<Fault> {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut it = line.split_whitespace();
        let name = it.next()?.to_string();
        let mut always = false;
        let mut param = None;
        for w in it {
            match w {
                "once" => always = false,
                "always" => always = true,
                p => param = Some(p.to_string()),
            }
        }
        Some(Fault {
            name,
            always,
            param,
        })
    }
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {}",
            self.name,
            if self.always { "always" } else { "once" }
        );
        if let Some(p) = &self.param {
            s.push(' ');
            s.push_str(p);
        }
        s
    }
    pub fn param_ms(&self, default: u64) -> u64 {
        self.param
            .as_deref()
            .and_then(|p| p.trim_end_matches("ms").parse().ok())
            .unwrap_or(default)
    }
}

/// Take the first fault whose name is in `names`, from `LWK_SIM_FAULTS`
/// (`;`-separated, never consumed) or `$ROOT/faults` (a `once` line is
/// removed when taken). The caller holds no root lock.
pub fn take_fault(names: &[&str]) -> Option<Fault> {
    if let Ok(env) = std::env::var("LWK_SIM_FAULTS") {
        for l in env.split(';') {
            if let Some(f) = Fault::parse(l) {
                if names.contains(&f.name.as_str()) {
                    return Some(f);
                }
            }
        }
    }
    let path = root().join("faults");
    if !path.exists() {
        return None;
    }
    let _g = root_lock().ok()?;
    take_fault_in_file(&path, names)
}

/// Take a fault from a faults file the caller has locked; `once` lines are removed.
pub fn take_fault_in_file(path: &Path, names: &[&str]) -> Option<Fault> {
    let text = fs::read_to_string(path).ok()?;
    let mut found = None;
    let mut keep = Vec::new();
    for l in text.lines() {
        match Fault::parse(l) {
            Some(f) if found.is_none() && names.contains(&f.name.as_str()) => {
                if f.always {
                    keep.push(l.to_string());
                }
                found = Some(f);
            }
            _ => keep.push(l.to_string()),
        }
    }
    if let Some(f) = &found {
        if !f.always {
            let mut s = keep.join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            let _ = write_in_place(path, &s);
        }
    }
    found
}

/// Move every fault named in `names` out of `$ROOT/faults` (caller holds the root lock).
pub fn drain_faults(names: &[&str]) -> Vec<Fault> {
    let path = root().join("faults");
    let mut out = Vec::new();
    if let Ok(env) = std::env::var("LWK_SIM_FAULTS") {
        out.extend(
            env.split(';')
                .filter_map(Fault::parse)
                .filter(|f| names.contains(&f.name.as_str())),
        );
    }
    let Ok(text) = fs::read_to_string(&path) else {
        return out;
    };
    let mut keep = Vec::new();
    for l in text.lines() {
        match Fault::parse(l) {
            Some(f) if names.contains(&f.name.as_str()) => out.push(f),
            _ => keep.push(l.to_string()),
        }
    }
    let mut s = keep.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    let _ = write_in_place(&path, &s);
    out
}

// ---------------------------------------------------------------- call log

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Append `TIME\tTOOL\tARGS\tEXIT` to `$ROOT/calls.log` if the root exists.
pub fn log_call(tool: &str, args: &[String], exit: &str) {
    let r = root();
    if !r.is_dir() {
        return;
    }
    let ms = now_ms();
    let line = format!(
        "{}.{:03}\t{}\t{}\t{}\n",
        ms / 1000,
        ms % 1000,
        tool,
        args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
        exit
    );
    if let Ok(mut f) = OpenOptions::new()
        .append(true)
        .create(true)
        .open(r.join("calls.log"))
    {
        // One write(2) with O_APPEND: lines from concurrent tools never interleave.
        let _ = f.write_all(line.as_bytes());
    }
}

pub fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() == 0 }
}

/// What a kernel module's `current_euid().val == 0` sees: euid 0 that is root outside
/// any user namespace too (container root in a user namespace maps to another uid).
pub fn kernel_sees_root() -> bool {
    if !is_root() {
        return false;
    }
    let Ok(map) = fs::read_to_string("/proc/self/uid_map") else {
        return true; // no /proc: assume the initial namespace
    };
    map.lines().any(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(v[..], [inside, outside, count] if inside == 0 && count > 0 && outside == 0)
    })
}

/// A command line `getopt_long` with a leading `+` refuses.
pub enum GetoptError {
    /// `--name` not in the table (as typed).
    UnknownLong(String),
    /// `--name` that takes a value, last on the line (as typed).
    MissingLong(String),
    UnknownShort(char),
    MissingShort(char),
}

/// `getopt_long` with a leading `+`, as mcexec and yod parse: options stop at `--` or
/// at the first operand. Short options in `short_with_arg` take a value (`-n4`, `-n 4`),
/// those in `short_flags` none; `long` lists (name, key, takes a value), and a value
/// comes as `--name=v` or `--name v`. Each option reaches `on` as (key, value), the key
/// of a short option being its letter. Returns the index of the first operand.
pub fn getopt_plus<E>(
    args: &[String],
    short_with_arg: &str,
    short_flags: &str,
    long: &[(&str, &str, bool)],
    mut on: impl FnMut(&str, Option<String>) -> Result<(), E>,
    err: impl Fn(GetoptError) -> E,
) -> Result<usize, E> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return Ok(i + 1);
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, val) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some((_, key, takes)) = long.iter().find(|(n, _, _)| *n == name) else {
                return Err(err(GetoptError::UnknownLong(a.clone())));
            };
            let v = if *takes && val.is_none() {
                i += 1;
                Some(
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| err(GetoptError::MissingLong(a.clone())))?,
                )
            } else {
                val
            };
            on(key, v)?;
        } else if a.len() > 1 && a.starts_with('-') {
            let c = a[1..].chars().next().unwrap_or('-');
            let key = c.to_string();
            if short_flags.contains(c) {
                on(&key, None)?;
            } else if !short_with_arg.contains(c) {
                return Err(err(GetoptError::UnknownShort(c)));
            } else if a.len() > 1 + c.len_utf8() {
                on(&key, Some(a[1 + c.len_utf8()..].to_string()))?;
            } else {
                i += 1;
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| err(GetoptError::MissingShort(c)))?;
                on(&key, Some(v))?;
            }
        } else {
            return Ok(i);
        }
        i += 1;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getopt_plus_stops_at_the_first_operand() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let long = [("flag", "flag", false), ("val", "v", true)];
        let args = a(&[
            "-n4", "-c", "1", "--flag", "--val=x", "--val", "y", "prog", "-n", "5",
        ]);
        let mut seen = Vec::new();
        let first = getopt_plus(
            &args,
            "nc",
            "h",
            &long,
            |k, v| {
                seen.push(format!("{k}={}", v.unwrap_or_default()));
                Ok(())
            },
            |e| e,
        );
        assert!(matches!(first, Ok(7)));
        assert_eq!(seen, ["n=4", "c=1", "flag=", "v=x", "v=y"]);
        let err = |v: &[&str]| getopt_plus(&a(v), "n", "h", &long, |_, _| Ok(()), |e| e).err();
        assert!(matches!(err(&["-z"]), Some(GetoptError::UnknownShort('z'))));
        assert!(matches!(err(&["-n"]), Some(GetoptError::MissingShort('n'))));
        assert!(matches!(err(&["--nope"]), Some(GetoptError::UnknownLong(a)) if a == "--nope"));
        assert!(matches!(err(&["--val"]), Some(GetoptError::MissingLong(a)) if a == "--val"));
        assert!(err(&["-h", "--", "-z"]).is_none());
    }

    #[test]
    fn cpulist_roundtrip() {
        assert_eq!(parse_cpulist("2-4,10,3").unwrap(), vec![2, 3, 4, 10]);
        assert_eq!(fmt_cpulist(&[2, 3, 4, 10, 12, 13]), "2-4,10,12-13");
        assert_eq!(parse_cpulist("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpulist("4-2").is_none());
        assert!(parse_cpulist("x").is_none());
    }

    #[test]
    fn memlist() {
        let v = parse_memlist("512M@0,1G@1,2G").unwrap();
        assert_eq!(v[0].size, Some(512 << 20));
        assert_eq!(v[1].numa, 1);
        assert_eq!(v[2].numa, 0);
        assert_eq!(parse_memlist("all").unwrap()[0].size, None);
        assert!(parse_memlist("12Q@0").is_none());
        assert_eq!(fmt_memnodes(&[536870912, 0, 5]), "536870912@0,5@2");
        assert_eq!(parse_memnodes("536870912@0,5@2", 3), vec![536870912, 0, 5]);
    }

    #[test]
    fn fault_lines() {
        let f = Fault::parse("boot_slow always 1500 # comment").unwrap();
        assert!(f.always);
        assert_eq!(f.param_ms(0), 1500);
        assert_eq!(
            Fault::parse("boot_panic").unwrap().render(),
            "boot_panic once"
        );
        assert!(Fault::parse("  # only comment").is_none());
    }
}
