//! IHK: the simulated modules (`lwk-sim modprobe|rmmod`), `ihkconfig` and `ihkosctl`.
//!
//! Reservations (host-only) live in `$ROOT/ihk/state`, written atomically under
//! `$ROOT/lock`. Each OS instance is the file `dev/mcos<N>`: its live state
//! (status, CPUs, memory, build id, mcexec groups) is kept inside that file and
//! rewritten in place under `flock`, so a container that bind-mounts it as
//! `/dev/mcos<N>` sees the same instance. Lock order: root lock, then instance.

use crate::common::*;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const MAX_MINORS: u32 = 64;
/// Offset of mcexec's per-process-data byte lock: `PPD_BASE + nspid`.
pub const PPD_BASE: u64 = 1 << 30;

/// IHK's ioctl numbers (`linux/include/ihk/ihk_host_user.h`) and mcctrl's
/// (`executer/include/uprotocol.h`), as the real tools issue them.
pub mod nr {
    pub const DEVICE_CREATE_OS: u32 = 0x112900;
    pub const DEVICE_DESTROY_OS: u32 = 0x112901;
    pub const DEVICE_RESERVE_CPU: u32 = 0x112902;
    pub const DEVICE_RELEASE_CPU: u32 = 0x112903;
    pub const DEVICE_RESERVE_MEM: u32 = 0x112904;
    pub const DEVICE_RELEASE_MEM: u32 = 0x112905;
    pub const DEVICE_QUERY_CPU: u32 = 0x112906;
    pub const DEVICE_QUERY_MEM: u32 = 0x112907;
    pub const DEVICE_GET_BUILDID: u32 = 0x11290b;
    pub const OS_LOAD: u32 = 0x112a00;
    pub const OS_BOOT: u32 = 0x112a01;
    pub const OS_SHUTDOWN: u32 = 0x112a02;
    pub const OS_QUERY_STATUS: u32 = 0x112a03;
    pub const OS_SET_KARGS: u32 = 0x112a04;
    pub const OS_QUERY_FREE_MEM: u32 = 0x112a05;
    pub const OS_ALLOC_CPU: u32 = 0x112a10;
    pub const OS_ALLOC_MEM: u32 = 0x112a11;
    pub const OS_RESERVE_CPU: u32 = 0x112a12;
    pub const OS_RESERVE_MEM: u32 = 0x112a13;
    pub const OS_STATUS: u32 = 0x112a14;
    pub const OS_READ_KMSG: u32 = 0x112a20;
    pub const OS_CLEAR_KMSG: u32 = 0x112a21;
    pub const OS_ASSIGN_CPU: u32 = 0x112a22;
    pub const OS_RELEASE_CPU: u32 = 0x112a23;
    pub const OS_ASSIGN_MEM: u32 = 0x112a24;
    pub const OS_RELEASE_MEM: u32 = 0x112a25;
    pub const OS_QUERY_CPU: u32 = 0x112a26;
    pub const OS_QUERY_MEM: u32 = 0x112a27;
    pub const OS_SET_IKC_MAP: u32 = 0x112a28;
    pub const OS_GET_IKC_MAP: u32 = 0x112a29;
    pub const OS_GET_USAGE: u32 = 0x112a32;
    pub const OS_GET_CPU_USAGE: u32 = 0x112a33;
    pub const OS_GET_NUM_NUMA_NODES: u32 = 0x112a34;
    pub const OS_GET_BUILDID: u32 = 0x112a37;
    pub const OS_GET_NUM_CPUS: u32 = 0x112a38;
    pub const OS_READ_KADDR: u32 = 0x112a39;
    pub const OS_DEBUG_START: u32 = 0x122a00;
    pub const OS_DEBUG_END: u32 = 0x122aff;
    pub const OS_AUX_CALL_START: u32 = 0x1000_0000;
    pub const OS_AUX_CALL_END: u32 = 0x7fff_ffff;
    pub const MCEXEC_UP_GET_CPUSET: u32 = 0x30a0290d;
    pub const MCEXEC_UP_CREATE_PPD: u32 = 0x30a0290e;
}

/// IHK's `__ihk_os_ioctl_perm`: the requests on `/dev/mcos<N>` any user may make; every
/// other one needs euid 0.
fn os_ioctl_for_anyone(req: u32) -> bool {
    use nr::*;
    matches!(
        req,
        OS_QUERY_STATUS
            | OS_GET_NUM_NUMA_NODES
            | OS_QUERY_FREE_MEM
            | OS_ALLOC_CPU
            | OS_ALLOC_MEM
            | OS_RESERVE_CPU
            | OS_RESERVE_MEM
            | OS_READ_KMSG
            | OS_CLEAR_KMSG
            | OS_QUERY_CPU
            | OS_QUERY_MEM
            | OS_GET_BUILDID
            | OS_STATUS
            | OS_GET_USAGE
            | OS_GET_CPU_USAGE
            | OS_GET_NUM_CPUS
            | OS_READ_KADDR
            | OS_DEBUG_START..=OS_DEBUG_END
            | OS_AUX_CALL_START..=OS_AUX_CALL_END
    )
}

/// Issue `req` on a device fd, as the real tool does before the module acts. The
/// simulator's device is a regular file, for which the kernel answers ENOTTY: that
/// stands for "the module took the request". Any other failure (EPERM from a seccomp
/// filter above all) is the refusal the real tool would meet. The kernel passes the
/// request to the driver as 32 bits, and so do we.
fn ioctl_raw(file: &File, req: u64) -> Result<u32, i32> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: an ioctl with an integer argument on an fd we own; on a regular file the
    // kernel never dereferences it.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), req as libc::c_ulong, 0) };
    match (r, errno()) {
        (0, _) | (_, libc::ENOTTY) => Ok(req as u32),
        (_, e) => Err(e),
    }
}

/// An ioctl on `/dev/mcos<N>`: issued, then checked as `__ihk_os_ioctl_perm` checks it.
pub fn os_ioctl(file: &File, req: u64) -> Result<(), i32> {
    let cmd = ioctl_raw(file, req)?;
    if !os_ioctl_for_anyone(cmd) && !kernel_sees_root() {
        return Err(libc::EPERM);
    }
    Ok(())
}

/// An ioctl on `/dev/mcd<N>` (the device's own ioctls check no uid: the node is 0600).
fn mcd_ioctl(file: &File, req: u32) -> Result<(), i32> {
    ioctl_raw(file, u64::from(req)).map(|_| ())
}

pub fn is_sim_file(p: &Path) -> bool {
    let Ok(meta) = fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    use std::io::Read;
    let mut buf = [0u8; 16];
    File::open(p)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|_| buf.starts_with(DEV_MAGIC.as_bytes()))
        .unwrap_or(false)
}

/// `/dev/<name>` when it is a simulator device (bind-mounted into a
/// container), otherwise `$LWK_SIM_ROOT/dev/<name>`. A real device node is
/// never a regular file, so it is never mistaken for ours.
pub fn dev_path(name: &str) -> PathBuf {
    let sys = Path::new("/dev").join(name);
    if is_sim_file(&sys) {
        sys
    } else {
        root().join("dev").join(name)
    }
}

fn state_path() -> PathBuf {
    root().join("ihk").join("state")
}
fn kmsg_path(os: u32) -> PathBuf {
    root().join("ihk").join(format!("kmsg{}", os))
}

/// Host-side reservations (all reserved CPUs/memory, assigned or not).
struct Host {
    cpus: Vec<u32>,
    mem: Vec<u64>,
}

fn load_host(t: &Topology) -> Host {
    let kv = Kv::parse(&fs::read_to_string(state_path()).unwrap_or_default());
    Host {
        cpus: parse_cpulist(kv.get_or("reserved_cpus", "")).unwrap_or_default(),
        mem: parse_memnodes(kv.get_or("reserved_mem", ""), t.numa as usize),
    }
}

fn save_host(h: &Host) -> io::Result<()> {
    let mut kv = Kv::default();
    kv.set("reserved_cpus", fmt_cpulist(&h.cpus));
    kv.set("reserved_mem", fmt_memnodes(&h.mem));
    write_atomic(&state_path(), &kv.render(""))
}

// ---------------------------------------------------------------- instances

/// The printed status of an instance (lazy BOOTING → RUNNING/PANIC).
pub fn status_of(kv: &Kv) -> &'static str {
    match kv.get_or("state", "") {
        "BOOTING" => {
            let elapsed = now_ms().saturating_sub(kv.num("boot_ms"));
            if elapsed < kv.num("boot_delay_ms") {
                return "BOOTING";
            }
            match kv.get_or("boot_outcome", "run") {
                "panic" => "PANIC",
                "hang" => "BOOTING",
                _ => "RUNNING",
            }
        }
        "RUNNING" => "RUNNING",
        "SHUTDOWN" => "SHUTDOWN",
        "FAILED" => "PANIC",
        "HUNGUP" => "HUNGUP",
        "FREEZING" => "FREEZING",
        "FROZEN" => "FROZEN",
        _ => "INACTIVE",
    }
}

pub fn open_instance(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Read-modify-write an instance file in place under `flock`.
pub fn with_instance<R>(file: &File, f: impl FnOnce(&mut Kv) -> R) -> io::Result<R> {
    flock_fd(file, libc::LOCK_EX)?;
    let res = (|| {
        let text = read_fd(file)?;
        let mut kv = Kv::parse(&text);
        let before = kv.render(DEV_MAGIC);
        let r = f(&mut kv);
        let after = kv.render(DEV_MAGIC);
        if after != before {
            rewrite_in_place(file, &after)?;
        }
        Ok(r)
    })();
    let _ = flock_fd(file, libc::LOCK_UN);
    res
}

pub fn read_instance(file: &File) -> io::Result<Kv> {
    flock_fd(file, libc::LOCK_SH)?;
    let text = read_fd(file);
    let _ = flock_fd(file, libc::LOCK_UN);
    Ok(Kv::parse(&text?))
}

/// Existing instance minors under `$ROOT/dev`.
fn instances() -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(root().join("dev"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("mcos"))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// CPUs and memory assigned to all instances (caller holds the root lock).
fn assigned(t: &Topology) -> (Vec<u32>, Vec<u64>) {
    let mut cpus = Vec::new();
    let mut mem = vec![0u64; t.numa as usize];
    for os in instances() {
        let p = root().join("dev").join(format!("mcos{}", os));
        if let Ok(kv) = open_instance(&p, false).and_then(|f| read_instance(&f)) {
            cpus.extend(parse_cpulist(kv.get_or("cpus", "")).unwrap_or_default());
            for (i, b) in parse_memnodes(kv.get_or("mem", ""), t.numa as usize)
                .into_iter()
                .enumerate()
            {
                mem[i] += b;
            }
        }
    }
    (cpus, mem)
}

/// Return an instance's CPUs and memory to the reserved pool (state → SHUTDOWN).
fn shutdown_kv(kv: &mut Kv) {
    kv.set("state", "SHUTDOWN");
    kv.set("cpus", "");
    kv.set("mem", "");
    kv.set("boot_ms", "0");
}

fn modules_loaded() -> bool {
    root().join("dev").join("mcd0").exists()
}

// ---------------------------------------------------------------- modprobe

pub fn modprobe(args: &[String]) -> i32 {
    if !is_root() {
        eprintln!("modprobe: ERROR: could not insert 'ihk': Operation not permitted");
        return 1;
    }
    let r = root();
    // A node the user sized wrongly is refused before anything of it exists.
    let topo = match Topology::try_load() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("modprobe: ERROR: could not insert 'ihk': the simulated node: {e}");
            return 1;
        }
    };
    let res = (|| -> io::Result<()> {
        fs::create_dir_all(r.join("dev"))?;
        fs::create_dir_all(r.join("ihk"))?;
        let _g = root_lock()?;
        let topo_file = r.join("topology");
        let env_set = ["LWK_SIM_CPUS", "LWK_SIM_MEM", "LWK_SIM_NUMA"]
            .iter()
            .any(|k| std::env::var_os(k).is_some());
        if env_set || !topo_file.exists() {
            write_atomic(&topo_file, &topo.render())?;
        }
        if !state_path().exists() {
            save_host(&Host {
                cpus: vec![],
                mem: vec![],
            })?;
        }
        let mcd = r.join("dev").join("mcd0");
        if !mcd.exists() {
            write_atomic(&mcd, &format!("{} mcd\nbuildid={}\n", DEV_MAGIC, BUILDID))?;
            fs::set_permissions(&mcd, fs::Permissions::from_mode(0o600))?;
        }
        crate::mos::ensure_sysfs()?;
        Ok(())
    })();
    let _ = args;
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("modprobe: ERROR: could not insert 'ihk': {}", e);
            1
        }
    }
}

pub fn rmmod(_args: &[String]) -> i32 {
    if !is_root() {
        eprintln!("rmmod: ERROR: ../libkmod/libkmod-module.c:799 kmod_module_remove_module() could not remove 'mcctrl': Operation not permitted");
        return 1;
    }
    let Ok(_g) = root_lock() else {
        eprintln!("rmmod: ERROR: cannot lock {}", root().display());
        return 1;
    };
    if !modules_loaded() {
        eprintln!("rmmod: ERROR: Module mcctrl is not currently loaded");
        return 1;
    }
    if !instances().is_empty() {
        eprintln!("rmmod: ERROR: Module mcctrl is in use");
        return 1;
    }
    // Unloading ihk-smp gives every reserved CPU and byte back to Linux.
    let _ = save_host(&Host {
        cpus: vec![],
        mem: vec![],
    });
    let _ = fs::remove_file(root().join("dev").join("mcd0"));
    0
}

// ---------------------------------------------------------------- ihkconfig

fn ihkconfig_usage(argv0: &str) {
    let cmd = argv0.rsplit('/').next().unwrap_or(argv0);
    eprintln!("Usage: {} (dev #) (action)", cmd);
    eprintln!("action:");
    for a in [
        "create",
        "destroy",
        "scratch",
        "sbox",
        "read",
        "mmap",
        "ioctl",
        "clear_kmsg",
        "clear_kmsg_write",
        "reserve cpu|mem [resources]",
        "release cpu [resources]",
        "release mem",
        "query cpu|mem",
        "get os_instances",
        "get buildid",
    ] {
        eprintln!("    {}", a);
    }
}

/// C `atoi`: leading digits, else 0.
pub fn atoi(s: &str) -> u32 {
    let d: String = s
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    d.parse().unwrap_or(0)
}

/// `perror("open")` and exit 1, as both tools do when the device does not open.
fn open_failed(e: &io::Error) -> i32 {
    eprintln!(
        "open: {}",
        strerror(e.raw_os_error().unwrap_or(libc::ENOENT))
    );
    1
}

/// Exit status of a C tool returning -1: 255.
const FAIL: i32 = 255;

pub fn ihkconfig(argv: &[String]) -> i32 {
    let argv0 = argv.first().map(String::as_str).unwrap_or("ihkconfig");
    if argv.len() < 3 {
        ihkconfig_usage(argv0);
        return 1;
    }
    let dev = atoi(&argv[1]);
    let mcd = dev_path(&format!("mcd{}", dev));
    if argv[2] == "get" {
        return ihkconfig_get(argv, &mcd);
    }
    // The real tool opens /dev/mcd<N> O_RDWR; our file is mode 0600 like the node.
    let f = match OpenOptions::new().read(true).write(true).open(&mcd) {
        Ok(f) => f,
        Err(e) => return open_failed(&e),
    };
    // Loaded on first use: most calls (`get status` above all) never need it.
    let t = std::cell::LazyCell::new(Topology::load);
    match argv[2].as_str() {
        "create" => match mcd_ioctl(&f, nr::DEVICE_CREATE_OS) {
            Ok(()) => do_create(),
            Err(_) => {
                eprintln!("error: creating OS instance");
                FAIL
            }
        },
        "destroy" => {
            if argv.len() < 4 {
                println!("Usage: {} (dev #) destroy (os #)", argv0);
                return 1;
            }
            let os = atoi(&argv[3]);
            let done = mcd_ioctl(&f, nr::DEVICE_DESTROY_OS)
                .map_err(io::Error::from_raw_os_error)
                .and_then(|()| destroy(os));
            match done {
                Ok(()) => 0,
                Err(_) => {
                    eprintln!("error: destroying OS instance {}", os);
                    FAIL
                }
            }
        }
        "reserve" => do_reserve(&f, argv, &t),
        "release" => do_release(&f, argv, &t),
        "query" => do_query(&f, argv, &t),
        "clear_kmsg" | "read" | "mmap" | "clear_kmsg_write" => {
            if argv.len() > 3 {
                0
            } else {
                eprintln!("Address is not specified!");
                1
            }
        }
        "ioctl" => {
            eprintln!("error: ioctl()");
            FAIL
        }
        "scratch" | "sbox" => 0,
        other => {
            eprintln!("Unknown action : {}", other);
            ihkconfig_usage(argv0);
            0
        }
    }
}

fn ihkconfig_get(argv: &[String], mcd: &Path) -> i32 {
    if argv.len() < 4 {
        ihkconfig_usage(&argv[0]);
        return FAIL;
    }
    match argv[3].as_str() {
        "os_instances" => {
            if !is_root() || !mcd.exists() {
                println!("do_get_os_instances,ihk_get_num_os_instances failed");
                return FAIL;
            }
            let v: Vec<String> = instances().iter().map(|i| i.to_string()).collect();
            println!("{}", v.join(","));
            0
        }
        "buildid" => {
            let Ok(f) = File::open(mcd) else {
                println!("do_get_buildid,open failed");
                return FAIL;
            };
            if mcd_ioctl(&f, nr::DEVICE_GET_BUILDID).is_err() {
                println!("do_get_buildid,ioctl failed");
                return FAIL;
            }
            let kv = Kv::parse(&fs::read_to_string(mcd).unwrap_or_default());
            println!("{}", kv.get_or("buildid", BUILDID));
            0
        }
        other => {
            eprintln!("Unknown target : {}", other);
            ihkconfig_usage(&argv[0]);
            FAIL
        }
    }
}

/// IHK_DEVICE_CREATE_OS returns the new minor, and ihkconfig returns that
/// value: the first instance gives 0; a second `create` makes mcos1 and the
/// tool reports an error and exits 1.
fn do_create() -> i32 {
    let res = (|| -> io::Result<u32> {
        let _g = root_lock()?;
        let existing = instances();
        let minor = (0..MAX_MINORS)
            .find(|m| !existing.contains(m))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        let mut kv = Kv::default();
        kv.set("index", minor.to_string());
        kv.set("state", "NOT_BOOTED");
        for k in ["cpus", "mem", "image", "kargs"] {
            kv.set(k, "");
        }
        kv.set("buildid", "");
        let p = root().join("dev").join(format!("mcos{}", minor));
        write_atomic(&p, &kv.render(DEV_MAGIC))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))?;
        let _ = fs::write(kmsg_path(minor), "");
        Ok(minor)
    })();
    match res {
        Ok(0) => 0,
        Ok(m) => {
            eprintln!("error: creating OS instance");
            m as i32
        }
        Err(_) => {
            eprintln!("error: creating OS instance");
            FAIL
        }
    }
}

/// IHK_DEVICE_DESTROY_OS: EBUSY while any fd holds the instance open (an
/// mcexec's shared OFD lock on byte 0), otherwise force shutdown and remove.
pub fn destroy(os: u32) -> io::Result<()> {
    let _g = root_lock()?;
    let p = root().join("dev").join(format!("mcos{}", os));
    let f = open_instance(&p, true)?;
    if !ofd_try_lock(&f, 0, true)? {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    with_instance(&f, |kv| {
        shutdown_kv(kv);
        kv.set("state", "DESTROYED");
    })?;
    fs::remove_file(&p)?;
    let _ = fs::remove_file(kmsg_path(os));
    Ok(())
}

fn do_reserve(f: &File, argv: &[String], t: &Topology) -> i32 {
    if argv.len() < 5 {
        ihkconfig_usage(&argv[0]);
        return FAIL;
    }
    let what = argv[3].as_str();
    let spec = argv[4].as_str();
    match what {
        "cpu" => {
            let Some(cpus) = parse_cpulist(spec).filter(|v| !v.is_empty()) else {
                println!("do_reserve,get num of requested cpus failed");
                return FAIL;
            };
            let r = mcd_ioctl(f, nr::DEVICE_RESERVE_CPU)
                .err()
                .unwrap_or_else(|| reserve_cpus(&cpus, t));
            if r != 0 {
                eprintln!("error: reserving CPUs: {}", spec);
                return FAIL;
            }
            0
        }
        "mem" => {
            let Some(reqs) = parse_memlist(spec) else {
                println!("do_reserve,get num of requested mems failed");
                return FAIL;
            };
            let r = mcd_ioctl(f, nr::DEVICE_RESERVE_MEM)
                .err()
                .unwrap_or_else(|| reserve_mem(&reqs, t));
            if r != 0 {
                eprintln!("error: reserving memory: {}", spec);
                return FAIL;
            }
            0
        }
        _ => {
            ihkconfig_usage(&argv[0]);
            FAIL
        }
    }
}

/// The injected `reserve_ebusy` / `reserve_enomem` fault, as the errno a reservation returns.
fn reservation_fault() -> Option<i32> {
    take_fault(&["reserve_ebusy", "reserve_enomem"]).map(|f| {
        if f.name == "reserve_ebusy" {
            EBUSY
        } else {
            ENOMEM
        }
    })
}

fn reserve_cpus(cpus: &[u32], t: &Topology) -> i32 {
    if let Some(errno) = reservation_fault() {
        return errno;
    }
    let Ok(_g) = root_lock() else { return EBUSY };
    let mut h = load_host(t);
    // CPU 0 can never be reserved (it cannot be offlined).
    if cpus.iter().any(|c| *c == 0 || *c >= t.cpus) {
        return EINVAL;
    }
    if cpus.iter().any(|c| h.cpus.contains(c)) {
        return EBUSY;
    }
    h.cpus.extend_from_slice(cpus);
    h.cpus.sort_unstable();
    if save_host(&h).is_err() {
        return EBUSY;
    }
    0
}

/// Bytes that may be reserved on a node: 98% of it (IHK's cap outside Fugaku).
fn node_cap(t: &Topology) -> u64 {
    t.node_mem() / 100 * 98
}

fn reserve_mem(reqs: &[MemReq], t: &Topology) -> i32 {
    if let Some(errno) = reservation_fault() {
        return errno;
    }
    let Ok(_g) = root_lock() else { return EBUSY };
    let mut h = load_host(t);
    let cap = node_cap(t);
    for r in reqs {
        let nodes: Vec<usize> = if r.numa == u32::MAX {
            (0..t.numa as usize).collect()
        } else if r.numa < t.numa {
            vec![r.numa as usize]
        } else {
            return EINVAL;
        };
        for n in nodes {
            let free = cap.saturating_sub(h.mem[n]);
            match r.size {
                // `all` is best effort: whatever is left.
                None => h.mem[n] += free,
                Some(s) if s <= free => h.mem[n] += s,
                Some(_) => return ENOMEM,
            }
        }
    }
    if save_host(&h).is_err() {
        return EBUSY;
    }
    0
}

fn do_release(f: &File, argv: &[String], t: &Topology) -> i32 {
    if argv.len() < 5 {
        ihkconfig_usage(&argv[0]);
        return FAIL;
    }
    let spec = argv[4].as_str();
    let req = match argv[3].as_str() {
        "cpu" => Some((nr::DEVICE_RELEASE_CPU, "CPUs")),
        "mem" => Some((nr::DEVICE_RELEASE_MEM, "memory")),
        _ => None,
    };
    if let Some((req, what)) = req {
        if mcd_ioctl(f, req).is_err() {
            eprintln!("error: releasing {}: {}", what, spec);
            return FAIL;
        }
    }
    let Ok(_g) = root_lock() else { return FAIL };
    let mut h = load_host(t);
    let (acpus, amem) = assigned(t);
    match argv[3].as_str() {
        "cpu" => {
            let Some(cpus) = parse_cpulist(spec).filter(|v| !v.is_empty()) else {
                println!("do_release,get num of requested cpus failed");
                return FAIL;
            };
            if cpus
                .iter()
                .any(|c| !h.cpus.contains(c) || acpus.contains(c))
            {
                eprintln!("error: releasing CPUs: {}", spec);
                return FAIL;
            }
            h.cpus.retain(|c| !cpus.contains(c));
        }
        "mem" => {
            if spec == "all" {
                h.mem.copy_from_slice(&amem);
            } else {
                let Some(reqs) = parse_memlist(spec) else {
                    println!("do_release,get num of requested mems failed");
                    return FAIL;
                };
                for r in reqs {
                    let n = r.numa as usize;
                    let avail = match (h.mem.get(n), amem.get(n)) {
                        (Some(r), Some(a)) => r.saturating_sub(*a),
                        _ => 0,
                    };
                    match r.size {
                        Some(s) if s <= avail => h.mem[n] -= s,
                        None if r.numa == u32::MAX => {
                            h.mem.copy_from_slice(&amem);
                        }
                        None if n < h.mem.len() => h.mem[n] = amem[n],
                        _ => {
                            eprintln!("error: releasing memory: {}", spec);
                            return FAIL;
                        }
                    }
                }
            }
        }
        _ => {
            ihkconfig_usage(&argv[0]);
            return FAIL;
        }
    }
    if save_host(&h).is_err() {
        return FAIL;
    }
    0
}

fn do_query(f: &File, argv: &[String], t: &Topology) -> i32 {
    if argv.len() < 4 {
        ihkconfig_usage(&argv[0]);
        return FAIL;
    }
    let req = match argv[3].as_str() {
        "cpu" => Some(nr::DEVICE_QUERY_CPU),
        "mem" => Some(nr::DEVICE_QUERY_MEM),
        _ => None,
    };
    if req.is_some_and(|r| mcd_ioctl(f, r).is_err()) {
        println!("do_query,ioctl failed");
        return FAIL;
    }
    let Ok(_g) = root_lock() else { return FAIL };
    let h = load_host(t);
    let (acpus, amem) = assigned(t);
    match argv[3].as_str() {
        "cpu" => {
            let free: Vec<u32> = h
                .cpus
                .iter()
                .copied()
                .filter(|c| !acpus.contains(c))
                .collect();
            println!("{}", fmt_cpulist(&free));
        }
        "mem" => {
            let free: Vec<u64> = h
                .mem
                .iter()
                .zip(amem.iter())
                .map(|(r, a)| r.saturating_sub(*a))
                .collect();
            println!("{}", fmt_memnodes(&free));
        }
        _ => {
            ihkconfig_usage(&argv[0]);
            return FAIL;
        }
    }
    0
}

// ---------------------------------------------------------------- ihkosctl

fn ihkosctl_usage(argv0: &str) {
    let cmd = argv0.rsplit('/').next().unwrap_or(argv0);
    eprintln!("Usage: {} (os #) (action)", cmd);
    eprintln!("action:");
    for a in [
        "load (kernel.img)",
        "boot",
        "shutdown",
        "assign cpu|mem ",
        "       cpu (cpu_list) ",
        "       mem (size@NUMA) ",
        "release cpu|mem ",
        "        cpu (cpu_list) ",
        "        mem (size@NUMA) ",
        "query [cpu|mem]",
        "query_free_mem",
        "kargs (kernel arg)",
        "kmsg",
        "clear_kmsg",
        "get status|buildid",
    ] {
        eprintln!("    {}", a);
    }
}

fn boot_delay_ms() -> u64 {
    if let Some(v) = std::env::var("LWK_SIM_BOOT_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    read_trim(&root().join("boot_delay_ms"))
        .parse()
        .unwrap_or(200)
}

pub fn ihkosctl(argv: &[String]) -> i32 {
    let argv0 = argv.first().map(String::as_str).unwrap_or("ihkosctl");
    if argv.len() < 3 {
        ihkosctl_usage(argv0);
        return 1;
    }
    let os = atoi(&argv[1]);
    let path = dev_path(&format!("mcos{}", os));
    let write = !matches!(argv[2].as_str(), "get" | "kmsg" | "query");
    let file = match open_instance(&path, write).or_else(|_| open_instance(&path, false)) {
        Ok(f) => f,
        Err(e) => return open_failed(&e),
    };
    // A destroyed instance (an old inode still bind-mounted) is gone.
    if read_instance(&file)
        .map(|kv| kv.get("state") == Some("DESTROYED"))
        .unwrap_or(true)
    {
        eprintln!("open: {}", strerror(libc::ENOENT));
        return 1;
    }
    // Loaded on first use: most calls (`get status` above all) never need it.
    let t = std::cell::LazyCell::new(Topology::load);
    let arg = |i: usize| argv.get(i).map(String::as_str);
    // The action's ioctl, issued before it acts: refused, the tool stops as the real
    // one does on a failed ioctl.
    let refused = |req: u32| os_ioctl(&file, u64::from(req)).is_err();
    match argv[2].as_str() {
        "get" => match arg(3) {
            Some("status") if refused(nr::OS_STATUS) => {
                println!("do_get_status,error: ihk_os_get_status failed");
                FAIL
            }
            Some("ikc_map") if refused(nr::OS_GET_IKC_MAP) => {
                println!("do_get_ikc_map,ioctl failed");
                FAIL
            }
            Some("buildid") if refused(nr::OS_GET_BUILDID) => {
                println!("do_get_buildid,IHK_OS_GET_BUILDID failed");
                FAIL
            }
            Some("status") => match read_instance(&file) {
                Ok(kv) => {
                    println!("{}", status_of(&kv));
                    0
                }
                Err(_) => FAIL,
            },
            Some("ikc_map") => {
                let kv = read_instance(&file).unwrap_or_default();
                println!("{}", kv.get_or("ikc_map", ""));
                0
            }
            Some("buildid") => match read_instance(&file) {
                Ok(kv) => {
                    println!("{}", kv.get_or("buildid", ""));
                    0
                }
                Err(_) => FAIL,
            },
            _ => {
                ihkosctl_usage(argv0);
                FAIL
            }
        },
        "set" => match (arg(3), arg(4)) {
            (Some("ikc_map"), Some(map)) => {
                if refused(nr::OS_SET_IKC_MAP) {
                    eprintln!("error: setting up IKC map: {}", map);
                    return FAIL;
                }
                let r = with_instance(&file, |kv| match status_of(kv) {
                    "BOOTING" | "RUNNING" => EBUSY,
                    _ => {
                        kv.set("ikc_map", map);
                        0
                    }
                });
                if !matches!(r, Ok(0)) {
                    eprintln!("error: setting ikc_map: {}", map);
                    return FAIL;
                }
                0
            }
            _ => {
                ihkosctl_usage(argv0);
                FAIL
            }
        },
        "load" => {
            let img = arg(3).unwrap_or("/home/shimosawa/mcos/mcos.image");
            let r = if refused(nr::OS_LOAD) {
                libc::EPERM
            } else {
                load(&file, img)
            };
            if r != 0 {
                eprintln!("error: loading {}", img);
                return FAIL;
            }
            0
        }
        "kargs" => {
            let Some(k) = arg(3) else {
                eprintln!("error: no arg specified.");
                return 1;
            };
            if refused(nr::OS_SET_KARGS) {
                eprintln!("error: sending IRQ");
                return FAIL;
            }
            let r = with_instance(&file, |kv| match status_of(kv) {
                "BOOTING" | "RUNNING" => EBUSY,
                _ => {
                    kv.set("kargs", k.replace('\n', " "));
                    0
                }
            });
            if !matches!(r, Ok(0)) {
                eprintln!("error: sending IRQ");
                return FAIL;
            }
            0
        }
        "boot" => {
            if refused(nr::OS_BOOT) || boot(&file, os) != 0 {
                eprintln!("error: booting");
                return FAIL;
            }
            0
        }
        "shutdown" => {
            if refused(nr::OS_SHUTDOWN) || shutdown(&file, &t) != 0 {
                eprintln!("error: shutting down");
                return FAIL;
            }
            0
        }
        "assign" | "release" => {
            let (Some(what), Some(spec)) = (arg(3), arg(4)) else {
                ihkosctl_usage(argv0);
                return FAIL;
            };
            let assign = argv[2] == "assign";
            let req = match (what, assign) {
                ("cpu", true) => nr::OS_ASSIGN_CPU,
                ("cpu", false) => nr::OS_RELEASE_CPU,
                (_, true) => nr::OS_ASSIGN_MEM,
                (_, false) => nr::OS_RELEASE_MEM,
            };
            let r = if refused(req) {
                libc::EPERM
            } else {
                assign_release(&file, &t, assign, what, spec)
            };
            if r != 0 {
                let verb = if assign { "assigning" } else { "releasing" };
                match what {
                    "cpu" => eprintln!("error: {} CPUs: {}", verb, spec),
                    "mem" => eprintln!("error: {} memory: {}", verb, spec),
                    _ => ihkosctl_usage(argv0),
                }
                return FAIL;
            }
            0
        }
        "query" => {
            let Ok(kv) = read_instance(&file) else {
                return FAIL;
            };
            let req = match arg(3) {
                Some("cpu") => nr::OS_QUERY_CPU,
                _ => nr::OS_QUERY_MEM,
            };
            if refused(req) {
                eprintln!("error: querying {}", arg(3).unwrap_or("memory"));
                return FAIL;
            }
            match arg(3) {
                Some("cpu") => println!("{}", kv.get_or("cpus", "")),
                Some("mem") => println!("{}", kv.get_or("mem", "")),
                _ => {
                    ihkosctl_usage(argv0);
                    return FAIL;
                }
            }
            0
        }
        "query_free_mem" => {
            if refused(nr::OS_QUERY_FREE_MEM) {
                eprintln!("error: querying free memory");
                return FAIL;
            }
            let kv = read_instance(&file).unwrap_or_default();
            let bytes: u64 = parse_memnodes(kv.get_or("mem", ""), t.numa as usize)
                .iter()
                .sum();
            println!("number of free pages (4kB): {}", bytes / 4096);
            0
        }
        "kmsg" => {
            if refused(nr::OS_READ_KMSG) {
                eprintln!("error querying kmsg");
                return FAIL;
            }
            let kv = read_instance(&file).unwrap_or_default();
            let mut s = fs::read_to_string(kmsg_path(os)).unwrap_or_default();
            match status_of(&kv) {
                "RUNNING" => s.push_str("IHK/McKernel started.\n"),
                "PANIC" if kv.get("state") == Some("FAILED") => {
                    s.push_str("PANIC: simulated LWK panic while running (lwk-sim panic)\n")
                }
                "PANIC" => s.push_str("PANIC: simulated boot failure (lwk-sim fault boot_panic)\n"),
                _ => {}
            }
            println!("{}", s);
            0
        }
        "clear_kmsg" => {
            if refused(nr::OS_CLEAR_KMSG) {
                eprintln!("error: clearing kmsg");
                return FAIL;
            }
            let _ = fs::write(kmsg_path(os), "");
            0
        }
        "dump" => {
            eprintln!("dump is not supported.");
            1
        }
        "ioctl" => {
            let (Some(req), Some(_)) = (arg(3), arg(4)) else {
                eprintln!("No req or arg is specified.");
                return 1;
            };
            // `req = strtol(argv[3], NULL, 16)` into an unsigned int, as the tool does.
            let req = i64::from_str_radix(req.trim_start_matches("0x"), 16).unwrap_or(0) as u32;
            // The module acts on what it is asked; of its requests, boot and shutdown are
            // the ones the simulator models.
            let r = match req {
                _ if refused(req) => FAIL,
                nr::OS_SHUTDOWN => shutdown(&file, &t),
                nr::OS_BOOT => boot(&file, os),
                _ => 0,
            };
            if r != 0 {
                eprintln!("error: ioctl");
                return FAIL;
            }
            0
        }
        other => {
            eprintln!("Unknown action : {}", other);
            ihkosctl_usage(argv0);
            0
        }
    }
}

fn load(file: &File, img: &str) -> i32 {
    let Ok(content) = fs::read(img) else {
        return libc::ENOENT;
    };
    let text = String::from_utf8_lossy(&content[..content.len().min(4096)]).to_string();
    let buildid = Kv::parse(&text)
        .get("buildid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| BUILDID.to_string());
    let abs = fs::canonicalize(img)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| img.to_string());
    with_instance(file, |kv| match status_of(kv) {
        "BOOTING" | "RUNNING" | "PANIC" => EBUSY,
        _ => {
            kv.set("image", abs);
            kv.set("buildid", buildid);
            kv.set("state", "NOT_BOOTED");
            0
        }
    })
    .unwrap_or(EBUSY)
}

fn boot(file: &File, os: u32) -> i32 {
    let fault = take_fault(&["boot_panic", "boot_hang", "boot_slow"]);
    // Faults for mcexec move into the instance so that an mcexec inside a
    // container (which cannot see $LWK_SIM_ROOT) still meets them.
    let mcexec_faults = root_lock()
        .map(|_g| drain_faults(&["mcexec_crash"]))
        .unwrap_or_default();
    let mut delay = boot_delay_ms();
    let mut outcome = "run";
    let mut hang_wait = 40_000;
    if let Some(f) = &fault {
        match f.name.as_str() {
            "boot_panic" => outcome = "panic",
            "boot_hang" => {
                outcome = "hang";
                hang_wait = f.param_ms(40_000);
            }
            _ => delay = f.param_ms(5_000),
        }
    }
    let kargs_line;
    let r = with_instance(file, |kv| {
        let st = status_of(kv);
        if st == "BOOTING" || st == "RUNNING" || st == "PANIC" {
            return EBUSY;
        }
        if kv.get_or("image", "").is_empty()
            || kv.get_or("cpus", "").is_empty()
            || kv.get_or("mem", "").is_empty()
        {
            return EINVAL;
        }
        kv.set("state", "BOOTING");
        kv.set("boot_ms", now_ms().to_string());
        kv.set("boot_delay_ms", delay.to_string());
        kv.set("boot_outcome", outcome);
        kv.set("hang_shutdown_ms", hang_wait.to_string());
        kv.remove_all("fault");
        for f in &mcexec_faults {
            kv.push("fault", f.render());
        }
        0
    })
    .unwrap_or(EBUSY);
    if r == 0 {
        if let Ok(kv) = read_instance(file) {
            kargs_line = format!(
                "IHK/McKernel booting (lwk-sim {}): cpus={} mem={} kargs=\"{}\"\n",
                BUILDID,
                kv.get_or("cpus", ""),
                kv.get_or("mem", ""),
                kv.get_or("kargs", "")
            );
            if let Ok(mut f) = OpenOptions::new()
                .append(true)
                .create(true)
                .open(kmsg_path(os))
            {
                use std::io::Write;
                let _ = f.write_all(kargs_line.as_bytes());
            }
        }
    }
    r
}

/// IHK_OS_SHUTDOWN. The kernel waits for a booting OS (up to 20 s for READY,
/// then 20 s for RUNNING); the simulator waits out the remaining boot delay,
/// or `hang_shutdown_ms` for a hung boot. Resources go back to the reserved pool.
fn shutdown(file: &File, t: &Topology) -> i32 {
    let Ok(kv) = read_instance(file) else {
        return FAIL;
    };
    if kv.get("state") == Some("BOOTING") && status_of(&kv) == "BOOTING" {
        let wait = if kv.get("boot_outcome") == Some("hang") {
            kv.num("hang_shutdown_ms")
        } else {
            (kv.num("boot_ms") + kv.num("boot_delay_ms")).saturating_sub(now_ms())
        };
        std::thread::sleep(std::time::Duration::from_millis(wait.min(40_000)));
    }
    let _ = t;
    let Ok(_g) = root_lock() else { return FAIL };
    with_instance(file, |kv| {
        shutdown_kv(kv);
        0
    })
    .unwrap_or(FAIL)
}

fn assign_release(file: &File, t: &Topology, assign: bool, what: &str, spec: &str) -> i32 {
    let Ok(_g) = root_lock() else { return FAIL };
    let h = load_host(t);
    let (acpus, amem) = assigned(t);
    with_instance(file, |kv| {
        if matches!(status_of(kv), "BOOTING" | "RUNNING") {
            return EBUSY;
        }
        let mut mine = parse_cpulist(kv.get_or("cpus", "")).unwrap_or_default();
        let mut mymem = parse_memnodes(kv.get_or("mem", ""), t.numa as usize);
        match (what, assign) {
            ("cpu", _) => {
                let Some(cpus) = parse_cpulist(spec).filter(|v| !v.is_empty()) else {
                    return EINVAL;
                };
                if assign {
                    if cpus
                        .iter()
                        .any(|c| !h.cpus.contains(c) || acpus.contains(c))
                    {
                        return EINVAL;
                    }
                    mine.extend(cpus);
                } else {
                    if cpus.iter().any(|c| !mine.contains(c)) {
                        return EINVAL;
                    }
                    mine.retain(|c| !cpus.contains(c));
                }
                kv.set("cpus", fmt_cpulist(&mine));
            }
            ("mem", _) => {
                let reqs = if spec == "all" {
                    vec![MemReq {
                        size: None,
                        numa: u32::MAX,
                    }]
                } else {
                    match parse_memlist(spec) {
                        Some(r) => r,
                        None => return EINVAL,
                    }
                };
                for r in reqs {
                    let nodes: Vec<usize> = if r.numa == u32::MAX {
                        (0..t.numa as usize).collect()
                    } else if r.numa < t.numa {
                        vec![r.numa as usize]
                    } else {
                        return EINVAL;
                    };
                    for n in nodes {
                        let avail = if assign {
                            h.mem[n].saturating_sub(amem[n])
                        } else {
                            mymem[n]
                        };
                        let amount = match r.size {
                            None => avail,
                            Some(s) if s <= avail => s,
                            Some(_) => return ENOMEM,
                        };
                        if assign {
                            mymem[n] += amount;
                        } else {
                            mymem[n] -= amount;
                        }
                    }
                }
                kv.set("mem", fmt_memnodes(&mymem));
            }
            _ => return EINVAL,
        }
        0
    })
    .unwrap_or(FAIL)
}

/// `lwk-sim panic [OS]`: a fault, the running instance panics now. Its status reads
/// PANIC from then on, and the mcexecs running on it lose their processes (mcexec.rs).
pub fn panic_now(args: &[String]) -> i32 {
    let os = args.first().map_or(0, |a| atoi(a));
    let path = root().join("dev").join(format!("mcos{os}"));
    let Ok(file) = open_instance(&path, true) else {
        eprintln!("lwk-sim panic: no OS instance {os} ({})", path.display());
        return 1;
    };
    let r = with_instance(&file, |kv| {
        if status_of(kv) != "RUNNING" {
            return Err(status_of(kv));
        }
        kv.set("state", "FAILED");
        Ok(())
    });
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(st)) => {
            eprintln!("lwk-sim panic: OS instance {os} is {st}, not RUNNING");
            1
        }
        Err(e) => {
            eprintln!("lwk-sim panic: {}: {e}", path.display());
            1
        }
    }
}

/// Paths of the instance files whose holders `mcstop+release.sh -k` kills.
pub fn instance_paths() -> Vec<(u32, PathBuf)> {
    instances()
        .into_iter()
        .map(|os| (os, root().join("dev").join(format!("mcos{}", os))))
        .collect()
}

pub fn loaded() -> bool {
    modules_loaded()
}
