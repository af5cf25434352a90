//! `lwk-runc doctor`: the node checked the way an admin would ask, each finding with
//! its fix, ready (exit 0) or not (exit 1).
//!
//! Read-only by construction: it reads files, stats paths and runs only the LWK tools'
//! query actions (status, build id, reservation) through the drivers. It never takes
//! the node lock (a wedged lock holder must not hang the diagnosis of it), never
//! writes, never boots. The checks that know a kernel live with its driver
//! (`Driver::diagnose`); this file holds the host, config, lease and engine checks and
//! the report.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{BootMode, Config, CONFIG_ENV, DEFAULT_CONFIG_PATH};
use crate::engines::{self, Registration};
use crate::lwk::lease::{self, Lease};
use crate::lwk::{driver, LwkKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The section: host, config, mckernel, mos, leases, images, engines.
    pub area: String,
    /// What was checked, e.g. `kernel`, `mckernel.mcexec`.
    pub check: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(status: Status, check: &str, message: String, fix: Option<String>) -> Finding {
        Finding {
            area: String::new(),
            check: check.into(),
            status,
            message,
            fix,
        }
    }
    pub fn ok(check: &str, message: impl Into<String>) -> Finding {
        Finding::new(Status::Ok, check, message.into(), None)
    }
    pub fn info(check: &str, message: impl Into<String>) -> Finding {
        Finding::new(Status::Info, check, message.into(), None)
    }
    pub fn warn(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Status::Warn, check, message.into(), Some(fix.into()))
    }
    pub fn fail(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Status::Fail, check, message.into(), Some(fix.into()))
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// No finding failed: LWK containers can run on this node.
    pub ready: bool,
    pub version: &'static str,
    pub config: PathBuf,
    /// The kernels the config enables.
    pub kernels: Vec<LwkKind>,
    pub findings: Vec<Finding>,
}

/// Run every check.
pub fn run() -> Report {
    let mut findings = Vec::new();
    let mut add = |area: &str, list: Vec<Finding>| {
        findings.extend(list.into_iter().map(|mut f| {
            f.area = area.into();
            f
        }))
    };
    add("host", host());
    let (path, from_env) = match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let (list, cfg) = config(&path, from_env);
    add("config", list);
    let mut kernels = Vec::new();
    if let Some(cfg) = &cfg {
        let leases = lease::read_leases(&cfg.lease_dir);
        for kind in [LwkKind::McKernel, LwkKind::Mos] {
            if cfg.enabled(kind) {
                kernels.push(kind);
                add(kind.as_str(), kernel(cfg, kind, &leases));
            }
        }
        add("leases", lease_dir(cfg, &leases));
        add("images", images(&cfg.images));
    }
    add("engines", engines());
    Report {
        ready: !findings.iter().any(|f| f.status == Status::Fail),
        version: env!("CARGO_PKG_VERSION"),
        config: path,
        kernels,
        findings,
    }
}

// ---------------------------------------------------------------- host

fn host() -> Vec<Finding> {
    let mut out = Vec::new();
    let u = nix::sys::utsname::uname();
    let (release, machine) = match &u {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => ("(unknown)".into(), String::new()),
    };
    out.push(Finding::ok("kernel", format!("Linux {release} {machine}")));
    out.push(match crate::seal::probe() {
        Ok(()) => Finding::ok(
            "cve-2019-5736",
            "create/run/exec re-execute lwk-runc from a read-only clone of itself (open_tree + mount_setattr)",
        ),
        Err(e) if crate::seal::falls_back(&e) => Finding::warn(
            "cve-2019-5736",
            format!("open_tree/mount_setattr unavailable ({e}): create/run/exec copy lwk-runc into a sealed memfd instead (about 10 ms each)"),
            "a Linux 5.12 or newer kernel makes the protection free",
        ),
        Err(e) => Finding::fail(
            "cve-2019-5736",
            format!("making a read-only clone of the lwk-runc binary failed: {e}; create/run/exec will refuse to run"),
            "check that /proc is mounted and the binary is readable",
        ),
    });
    out.push(match libcgroups::common::get_cgroup_setup() {
        Ok(setup) => Finding::ok(
            "cgroups",
            match setup {
                libcgroups::common::CgroupSetup::Legacy => "v1 (legacy hierarchy)",
                libcgroups::common::CgroupSetup::Hybrid => {
                    "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)"
                }
                libcgroups::common::CgroupSetup::Unified => "v2 (unified hierarchy)",
            },
        ),
        Err(e) => Finding::fail(
            "cgroups",
            format!("no usable cgroup hierarchy at /sys/fs/cgroup: {e}"),
            "mount cgroup2 (or the v1 controllers) at /sys/fs/cgroup",
        ),
    });
    let have = |ns: &str| Path::new("/proc/self/ns").join(ns).exists();
    let needed = ["mnt", "pid", "ipc", "uts", "net", "cgroup"];
    let missing: Vec<&str> = needed.iter().copied().filter(|n| !have(n)).collect();
    out.push(if missing.is_empty() {
        Finding::ok("namespaces", needed.join(" "))
    } else {
        Finding::fail(
            "namespaces",
            format!("this kernel lacks namespaces: {}", missing.join(" ")),
            "a kernel built with CONFIG_NAMESPACES and each of them",
        )
    });
    let userns: Option<u64> = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if !have("user") || userns == Some(0) {
        out.push(Finding::info(
            "user namespaces",
            "disabled: rootless containers cannot run here (containers run by root are unaffected)",
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        out.push(Finding::warn(
            "privileges",
            "not running as root: LWK tools and the lease table may not be readable",
            "run lwk-runc doctor as root",
        ));
    }
    if let Ok(me) = std::env::current_exe() {
        out.push(secure_binary(
            "lwk-runc",
            &me,
            "the runtime every engine runs as root",
        ));
    }
    out
}

// -------------------------------------------------------------- config

fn config(path: &Path, from_env: bool) -> (Vec<Finding>, Option<Config>) {
    let mut out = Vec::new();
    let shown = if from_env {
        format!("{} (from {CONFIG_ENV})", path.display())
    } else {
        path.display().to_string()
    };
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push(Finding::fail(
                "config",
                format!("{shown} does not exist, so no LWK is enabled on this node (lwk-runc runs every container as runc would)"),
                format!(
                    "install the lwk-runc package (it ships {DEFAULT_CONFIG_PATH} with every key documented, \
                     see lwk-runc.toml(5)) or copy config/config.toml there, then enable a kernel: \
                     [mckernel] enabled = true with cpus and memory, or [mos] enabled = true"
                ),
            ));
            return (out, None);
        }
        Err(e) => {
            out.push(Finding::fail(
                "config",
                format!("{shown} cannot be read: {e}"),
                "make it a regular file readable by root",
            ));
            return (out, None);
        }
        Ok(_) => {}
    }
    let problems = insecure(path);
    out.push(if problems.is_empty() {
        Finding::ok(
            "config",
            format!("{shown}: root-owned, writable by root only"),
        )
    } else {
        Finding::fail(
            "config",
            format!(
                "{shown}: {}; whoever can write it decides what lwk-runc runs as root",
                problems.join("; ")
            ),
            secure_fix(path),
        )
    });
    let cfg = match Config::load_from(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                "config.keys",
                e.to_string(),
                "fix the key named above; every key is described in lwk-runc.toml(5) and the shipped config",
            ));
            return (out, None);
        }
    };
    let enabled: Vec<&str> = [LwkKind::McKernel, LwkKind::Mos]
        .into_iter()
        .filter(|k| cfg.enabled(*k))
        .map(LwkKind::as_str)
        .collect();
    if enabled.is_empty() {
        out.push(Finding::fail(
            "config.kernels",
            format!("{} enables no LWK: every container runs on Linux", path.display()),
            "set [mckernel] enabled = true (with cpus and memory) or [mos] enabled = true; see lwk-runc.toml(5)",
        ));
    } else {
        out.push(Finding::ok(
            "config.kernels",
            format!(
                "valid; enabled: {}; containers asking for none get {}",
                enabled.join(", "),
                cfg.default_kernel.kind().map_or("Linux", LwkKind::as_str)
            ),
        ));
    }
    (out, Some(cfg))
}

// -------------------------------------------------------------- kernels

fn kernel(cfg: &Config, kind: LwkKind, leases: &[(String, Lease)]) -> Vec<Finding> {
    let drv = driver::for_kind(cfg, kind);
    let mut out = drv.diagnose();
    if drv.needs_pid_slot() {
        let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        // A container's namespace may reach beyond the host's (Linux 6.14+): see pidns.rs.
        let ns_max = crate::lwk::pidns::fresh_ns_pid_max().unwrap_or(pid_max);
        let space =
            crate::lwk::pidns::SlotSpace::new(cfg.pid_base, cfg.pid_stride, ns_max, pid_max);
        let slots = space.candidates().len();
        out.push(if slots == 0 {
            Finding::fail(
                "pid slots",
                format!("kernel.pid_max {pid_max} leaves no launcher pid slot above pid_base {}", cfg.pid_base),
                "raise kernel.pid_max or lower pid_base/pid_stride",
            )
        } else {
            Finding::ok("pid slots", format!("{slots} LWK containers at a time (a container's pid_max {ns_max}, the host's {pid_max}, pid_base {}, pid_stride {})", cfg.pid_base, cfg.pid_stride))
        });
    }
    let (launcher, key) = drv.launcher();
    let mut dynamic = vec![];
    if matches!(crate::lwk::launcher::elf_interp(launcher), Ok(Some(_))) {
        dynamic.push(key.to_string());
    }
    if drv.needs_pid_slot()
        && matches!(
            crate::lwk::launcher::elf_interp(Path::new("/proc/self/exe")),
            Ok(Some(_))
        )
    {
        dynamic.push("lwk-runc (the container's init)".into());
    }
    if !dynamic.is_empty() {
        let mut f = check_tool("patchelf", &cfg.patchelf);
        f.message = format!(
            "{} (needed: {} dynamically linked)",
            f.message,
            dynamic.join(", ")
        );
        out.push(f);
    }
    out.push(instance(cfg, kind, drv.as_ref(), leases));
    out
}

/// The instance and its reservation, read against the leases: is what is up (or
/// reserved) accounted for by a container, a linger, or the scheduler?
fn instance(
    cfg: &Config,
    kind: LwkKind,
    drv: &dyn driver::Driver,
    leases: &[(String, Lease)],
) -> Finding {
    let mine: Vec<&Lease> = leases
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.kernel == kind)
        .collect();
    let live = mine.iter().filter(|l| l.is_alive()).count();
    let node = lease::read_node(&cfg.lease_dir, kind);
    let mode = cfg.boot_mode(kind);
    let status = match drv.status() {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                "instance",
                format!("cannot read the {kind} status: {e}"),
                "fix the tool named above",
            )
        }
    };
    let reserved = drv
        .reserved()
        .unwrap_or_else(|e| Some(format!("(unknown: {e})")));
    let users = format!("{live} container(s) hold a lease");
    match status.as_deref() {
        Some("RUNNING") if live > 0 => Finding::ok("instance", format!("RUNNING; {users}")),
        Some("RUNNING") if mode == BootMode::External => {
            Finding::ok("instance", "RUNNING (booted by the scheduler: boot_mode external)")
        }
        Some("RUNNING") => match node {
            Some(n) if n.idle_since.is_some() => Finding::ok(
                "instance",
                format!("RUNNING, idle, lingering {} s after its last container", cfg.linger_secs(kind)),
            ),
            Some(_) => Finding::warn(
                "instance",
                "RUNNING with no container using it (the last one's teardown did not happen)",
                "lwk-runc lwk gc",
            ),
            None => Finding::info(
                "instance",
                "RUNNING, booted outside lwk-runc; lwk-runc will use it and never tear it down",
            ),
        },
        Some(s @ ("PANIC" | "HUNGUP")) => Finding::fail(
            "instance",
            format!("{s}: the {kind} instance is dead; {users}"),
            "read its messages (ihkosctl kmsg), then `lwk-runc lwk gc` tears it down once no container holds it",
        ),
        Some(s) if mode == BootMode::External => Finding::warn(
            "instance",
            format!("{s}: with boot_mode external, LWK containers fail until the scheduler boots {kind}"),
            "boot it from the scheduler's prolog, or use boot_mode \"tools\"",
        ),
        None | Some("INACTIVE") if mode == BootMode::External => Finding::warn(
            "instance",
            format!("no instance: with boot_mode external, LWK containers fail until the scheduler boots {kind}"),
            "boot it from the scheduler's prolog, or use boot_mode \"tools\"",
        ),
        None | Some("INACTIVE") => match reserved {
            Some(r) if live == 0 => Finding::warn(
                "instance",
                format!("no instance, but {r} still reserved (a boot that died half-way?)"),
                "lwk-runc lwk gc (or mcstop+release.sh) releases it",
            ),
            _ => Finding::ok("instance", "no instance now; the first LWK container boots it"),
        },
        Some(s) => Finding::info("instance", format!("{s}; {users}")),
    }
}

// -------------------------------------------------------------- leases

fn lease_dir(cfg: &Config, leases: &[(String, Lease)]) -> Vec<Finding> {
    let dir = &cfg.lease_dir;
    let mut out = Vec::new();
    match fs::symlink_metadata(dir) {
        Err(_) => {
            out.push(Finding::ok("lease_dir", format!("{} does not exist yet; the first LWK container creates it (root only, 0700)", dir.display())));
            return out;
        }
        Ok(md) if md.uid() != 0 || !md.is_dir() => out.push(Finding::fail(
            "lease_dir",
            format!("{} is not a directory owned by root (uid {})", dir.display(), md.uid()),
            format!("remove it (no LWK container may be running), or point lease_dir elsewhere: rm -r {}", dir.display()),
        )),
        Ok(_) if !insecure(dir).is_empty() => out.push(Finding::fail(
            "lease_dir",
            format!("{}: {}; lwk-runc refuses it, since whoever can change it steers what root runs", dir.display(), insecure(dir).join("; ")),
            secure_fix(dir),
        )),
        Ok(md) if md.permissions().mode() & 0o077 != 0 => out.push(Finding::warn(
            "lease_dir",
            format!("{} has mode {:04o}; other users can list the node's LWK containers (ids and bundles)", dir.display(), md.permissions().mode() & 0o7777),
            format!("chmod 0700 {}", dir.display()),
        )),
        Ok(_) => out.push(Finding::ok("lease_dir", format!("{}: root only", dir.display()))),
    }
    let stale: Vec<&str> = leases
        .iter()
        .filter(|(_, l)| !l.is_alive())
        .map(|(_, l)| l.id.as_str())
        .collect();
    out.push(if stale.is_empty() {
        Finding::ok("leases", format!("{} lease(s), none stale", leases.len()))
    } else {
        Finding::warn(
            "leases",
            format!(
                "{} stale lease(s) of containers that are gone: {}",
                stale.len(),
                stale.join(", ")
            ),
            "lwk-runc lwk gc (every LWK container's start and end also drops them)",
        )
    });
    for kind in [LwkKind::McKernel, LwkKind::Mos] {
        if let Some((at, error)) = lease::read_failure(dir, kind) {
            let ago = lease::now_secs().saturating_sub((at / 1_000_000_000) as u64);
            out.push(Finding::warn(
                "last boot",
                format!("{kind} failed to boot {ago} s ago: {}", first_line(&error)),
                "the next LWK container tries again; fix what the error names first",
            ));
        }
    }
    out
}

// ---------------------------------------------------------------- images

/// The node's image cache (`conexec --image`, `lwk-runc image`): trusted, within its
/// cap, no unfinished pull left behind; and whether the engines that export
/// `docker-daemon:` and `containers-storage:` images are there.
fn images(cfg: &crate::config::ImagesConfig) -> Vec<Finding> {
    use crate::image::{cache::Cache, human_bytes};
    let dir = &cfg.cache_dir;
    let mut out = Vec::new();
    if let Err(u) = crate::trust::check_path(dir) {
        out.push(Finding::fail(
            "images.cache_dir",
            format!(
                "{}: {u}; `conexec --image` and `lwk-runc image` refuse it",
                dir.display()
            ),
            u.fix(),
        ));
        return out;
    }
    match Cache::inspect(cfg) {
        None => out.push(Finding::ok(
            "images.cache_dir",
            format!(
                "{} does not exist yet; the first image pulled creates it (root only, 0700)",
                dir.display()
            ),
        )),
        Some(cache) => {
            let recs = cache.records();
            let total: u64 = recs.iter().map(|r| r.size).sum();
            let in_use = recs.iter().filter(|r| cache.mounted(&r.digest)).count();
            let cap = cache.cap();
            let of_cap = if cap == 0 {
                "no size cap".to_string()
            } else {
                format!("cap {}", human_bytes(cap))
            };
            let summary = format!(
                "{}: {} image(s), {} ({of_cap}), {in_use} in use",
                dir.display(),
                recs.len(),
                human_bytes(total)
            );
            out.push(if cap != 0 && total > cap {
                Finding::warn(
                    "images.cache_dir",
                    format!("{summary}: over the cap, which only images in use may keep it"),
                    "lwk-runc image prune (removes every image no job uses), or raise images.max_size",
                )
            } else {
                Finding::ok("images.cache_dir", summary)
            });
            let left = cache.abandoned_staging();
            if !left.is_empty() {
                out.push(Finding::warn(
                    "images.staging",
                    format!(
                        "{} unfinished pull(s) of processes that are gone: {}",
                        left.len(),
                        left.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                    "lwk-runc image prune (or the next pull of the same image) removes them; no job uses them",
                ));
            }
        }
    }
    for (key, cli, transport) in [
        ("images.docker", &cfg.docker, "docker-daemon:"),
        ("images.podman", &cfg.podman, "containers-storage:"),
    ] {
        out.push(if is_executable(cli) {
            Finding::ok(key, format!("{} exports {transport} images", cli.display()))
        } else {
            Finding::info(
                key,
                format!(
                    "{} is not there: {transport} images cannot be used (the other transports can)",
                    cli.display()
                ),
            )
        });
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

// -------------------------------------------------------------- engines

fn engines() -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(bin) = find_binary("dockerd") {
        out.push(engine_registrations(
            "docker",
            &bin,
            read_config(engines::docker::CONFIG).map(|t| engines::docker::registered(&t)),
            engines::docker::CONFIG,
            "lwk-runc setup-engine docker",
        ));
    }
    if let Some(bin) = find_binary("podman") {
        out.push(podman(&bin));
    }
    if let Some(bin) = find_binary("containerd") {
        out.push(engine_registrations(
            "containerd",
            &bin,
            read_config(engines::containerd::CONFIG).map(|t| engines::containerd::registered(&t)),
            engines::containerd::CONFIG,
            "lwk-runc setup-engine containerd",
        ));
    }
    if let Some(bin) = find_binary("slurmd").or_else(|| find_binary("srun")) {
        out.push(engine_registrations(
            "slurm",
            &bin,
            read_config(engines::slurm::CONFIG).map(|t| Ok(engines::slurm::registered(&t))),
            engines::slurm::CONFIG,
            &format!(
                "cp /usr/share/lwk-runc/engines/oci.conf {}",
                engines::slurm::CONFIG
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::info(
            "engines",
            "no Docker, podman, containerd or Slurm found; lwk-runc can still be run directly",
        ));
    }
    out
}

fn read_config(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// One engine's finding from the lwk-runc runtimes registered in its config.
fn engine_registrations(
    engine: &str,
    bin: &Path,
    regs: Option<Result<Vec<Registration>, String>>,
    file: &str,
    fix: &str,
) -> Finding {
    let found = format!("{engine} ({})", bin.display());
    match regs {
        None => Finding::warn(
            engine,
            format!("{found} installed; {file} does not exist, so it cannot run lwk-runc"),
            fix,
        ),
        Some(Err(e)) => Finding::warn(
            engine,
            format!("{found} installed; {file}: {e}"),
            format!("fix {file}, then: {fix}"),
        ),
        Some(Ok(r)) if r.is_empty() => Finding::warn(
            engine,
            format!("{found} installed; {file} does not register lwk-runc"),
            fix,
        ),
        Some(Ok(r)) => registered_finding(engine, &found, &r, file),
    }
}

fn registered_finding(engine: &str, found: &str, regs: &[Registration], file: &str) -> Finding {
    let broken: Vec<String> = regs
        .iter()
        .filter(|r| !is_executable(&r.path))
        .map(|r| format!("{} -> {}", r.name, r.path.display()))
        .collect();
    if !broken.is_empty() {
        return Finding::fail(
            engine,
            format!(
                "{found}: {file} registers lwk-runc at a path that is not an executable file: {}",
                broken.join(", ")
            ),
            format!(
                "lwk-runc setup-engine {engine} (registers this binary), or fix the path in {file}"
            ),
        );
    }
    let list: Vec<String> = regs
        .iter()
        .map(|r| format!("{} -> {}", r.name, r.path.display()))
        .collect();
    Finding::ok(engine, format!("{found}: runtime {}", list.join(", ")))
}

/// podman merges several containers.conf files; the last `runtime_supports_json` wins.
fn podman(bin: &Path) -> Finding {
    let found = format!("podman ({})", bin.display());
    let mut files = Vec::new();
    for p in engines::podman::SEARCH {
        let p = Path::new(p);
        if p.is_dir() {
            let mut d: Vec<PathBuf> = fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            d.sort();
            files.extend(d);
        } else if p.is_file() {
            files.push(p.to_path_buf());
        }
    }
    let mut regs = Vec::new();
    let mut json: Option<Vec<String>> = None;
    for f in &files {
        let Some(text) = fs::read_to_string(f).ok() else {
            continue;
        };
        match engines::podman::registered(&text) {
            Ok((r, j)) => {
                regs.extend(r);
                if j.is_some() {
                    json = j;
                }
            }
            Err(e) => {
                return Finding::warn(
                    "podman",
                    format!("{found} installed; {}: {e}", f.display()),
                    format!("fix {}", f.display()),
                )
            }
        }
    }
    let conf = engines::podman::CONFIG;
    if regs.is_empty() {
        return Finding::warn(
            "podman",
            format!("{found} installed; no containers.conf registers lwk-runc"),
            "lwk-runc setup-engine podman",
        );
    }
    let mut f = registered_finding("podman", &found, &regs, conf);
    if f.status == Status::Ok
        && !regs
            .iter()
            .any(|r| json.as_ref().is_some_and(|j| j.contains(&r.name)))
    {
        f = Finding::warn(
            "podman",
            format!("{}; but runtime_supports_json does not list it, so podman hides lwk-runc's error messages", f.message),
            "lwk-runc setup-engine podman",
        );
    }
    f
}

// -------------------------------------------------------------- files

/// Why `path` (or a directory on the way to it) could be changed by someone other
/// than root: the rule the runtime itself applies (see trust.rs), so what doctor
/// passes lwk-runc accepts.
pub fn insecure(path: &Path) -> Vec<String> {
    match crate::trust::check_path(path) {
        Ok(()) => Vec::new(),
        Err(u) => {
            let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            vec![if u.path == real || u.path == path {
                u.why.trim_start_matches("is ").to_string()
            } else {
                format!("its directory {} {}", u.path.display(), u.why)
            }]
        }
    }
}

fn secure_fix(path: &Path) -> String {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!(
        "chown root:root {p} && chmod go-w {p} (and chmod go-w on any directory named)",
        p = real.display()
    )
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A binary lwk-runc runs as root, configured by `key`: present, a regular file,
/// executable, and changeable by root only.
pub fn check_tool(key: &str, path: &Path) -> Finding {
    check_file(key, path, true)
}

/// A file lwk-runc hands to the LWK (an image): present, and changeable by root only.
pub fn check_data(key: &str, path: &Path) -> Finding {
    check_file(key, path, false)
}

fn check_file(key: &str, path: &Path, exec: bool) -> Finding {
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::fail(
                key,
                format!("{} does not exist", path.display()),
                format!("install it, or set `{key}` in the lwk-runc config to where it is"),
            )
        }
        Err(e) => {
            return Finding::fail(
                key,
                format!("{}: {e}", path.display()),
                format!("check `{key}` in the lwk-runc config"),
            )
        }
    };
    if !md.is_file() {
        return Finding::fail(
            key,
            format!("{} is not a regular file", path.display()),
            format!("set `{key}` to the file itself"),
        );
    }
    let mode = md.permissions().mode() & 0o7777;
    if exec && mode & 0o111 == 0 {
        return Finding::fail(
            key,
            format!("{} is not executable (mode {mode:04o})", path.display()),
            format!("chmod 0755 {}", path.display()),
        );
    }
    secure_binary(key, path, "lwk-runc runs it as root")
}

fn secure_binary(key: &str, path: &Path, why: &str) -> Finding {
    let problems = insecure(path);
    if problems.is_empty() {
        let mode = fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777);
        Finding::ok(
            key,
            format!("{}: root-owned, mode {mode:04o}", path.display()),
        )
    } else {
        Finding::fail(
            key,
            format!(
                "{}: {}; {why}, so whoever can change it is root",
                path.display(),
                problems.join("; ")
            ),
            secure_fix(path),
        )
    }
}

/// `name` on PATH, or in the sbin directories an admin's PATH has.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
                "/usr/local/bin",
                "/usr/local/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

// -------------------------------------------------------------- report

pub fn render_text(r: &Report) -> String {
    let mut s = format!(
        "lwk-runc doctor (lwk-runc {}; config {})\n",
        r.version,
        r.config.display()
    );
    let mut area = "";
    for f in &r.findings {
        if f.area != area {
            area = &f.area;
            s.push_str(&format!("\n{area}\n"));
        }
        s.push_str(&format!(
            "  {:<5} {:<20} {}\n",
            f.status.label(),
            f.check,
            f.message
        ));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("  {:<5} {:<20} fix: {fix}\n", "", ""));
        }
    }
    let count = |st: Status| r.findings.iter().filter(|f| f.status == st).count();
    let (fails, warns) = (count(Status::Fail), count(Status::Warn));
    s.push('\n');
    if r.ready {
        let kernels: Vec<&str> = r.kernels.iter().map(|k| k.as_str()).collect();
        s.push_str(&format!(
            "READY for LWK containers on {} ({warns} warning(s))\n",
            kernels.join(", ")
        ));
    } else {
        s.push_str(&format!(
            "NOT READY for LWK containers: {fails} problem(s) marked FAIL, {warns} warning(s)\n"
        ));
    }
    s
}

pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lwk-doctor-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn tools_missing_not_executable_or_world_writable_fail_with_the_fix() {
        if !nix::unistd::geteuid().is_root() {
            return; // ownership checks need root-owned files
        }
        let d = scratch("tools");
        let tool = d.join("mcexec");
        let f = check_tool("mckernel.mcexec", &tool);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.message.contains("does not exist")
                && f.fix.as_deref().unwrap().contains("mckernel.mcexec"),
            "{f:?}"
        );
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_tool("k", &tool).message.contains("not executable"));
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o777)).unwrap();
        let f = check_tool("k", &tool);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.message
                .contains("writable by group or others (mode 0777)"),
            "{f:?}"
        );
        assert!(f.fix.unwrap().contains("chmod go-w"));
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_tool("k", &tool).status, Status::Ok);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let f = check_tool("k", &tool);
        assert!(
            f.message.contains("its directory") && f.message.contains("0777"),
            "{f:?}"
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            check_tool("k", &tool).status,
            Status::Ok,
            "a sticky directory is fine"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn text_report_ends_with_the_verdict() {
        let r = Report {
            ready: false,
            version: "0",
            config: "/etc/lwk-runc/config.toml".into(),
            kernels: vec![],
            findings: vec![Finding {
                area: "config".into(),
                ..Finding::fail("config", "missing", "create it")
            }],
        };
        let t = render_text(&r);
        assert!(t.contains("\nconfig\n  FAIL  config"), "{t}");
        assert!(t.contains("fix: create it"), "{t}");
        assert!(
            t.trim_end()
                .ends_with("NOT READY for LWK containers: 1 problem(s) marked FAIL, 0 warning(s)"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(j["ready"], false);
        assert_eq!(j["findings"][0]["status"], "fail");
    }

    #[test]
    fn an_image_cache_over_its_cap_or_with_a_dead_pull_is_named_with_the_fix() {
        use crate::image::cache::{Cache, Record};
        if !nix::unistd::geteuid().is_root() {
            return; // the cache is root's
        }
        let d = scratch("images");
        let cfg = crate::config::ImagesConfig {
            cache_dir: d.join("cache"),
            max_size: "1K".into(),
            docker: d.join("no-docker"),
            ..Default::default()
        };
        // Not there yet: fine, and inspecting it creates nothing.
        let f = images(&cfg);
        assert_eq!(f[0].status, Status::Ok, "{f:?}");
        assert!(!cfg.cache_dir.exists());
        assert!(f
            .iter()
            .any(|f| f.check == "images.docker" && f.status == Status::Info));

        let cache = Cache::open(&cfg).unwrap();
        let hex = "ab".repeat(32);
        let digest = crate::image::Digest::from_hex(&hex).unwrap();
        fs::create_dir_all(cache.rootfs(&digest)).unwrap();
        let rec = Record {
            digest,
            names: vec!["oci:/images/app".into()],
            ids: vec![],
            layers: 1,
            size: 4096,
            unpacked: "2026-01-01T00:00:00Z".into(),
            defaults: Default::default(),
            notes: vec![],
        };
        let json = serde_json::to_vec(&rec).unwrap();
        fs::write(cache.entry_dir(&rec.digest).join("image.json"), json).unwrap();
        // A pull whose process is gone (pid 0 is nobody's).
        fs::create_dir(d.join(format!("cache/staging/{hex}.0"))).unwrap();
        let f = images(&cfg);
        let over = f.iter().find(|f| f.check == "images.cache_dir").unwrap();
        assert_eq!(over.status, Status::Warn, "{f:?}");
        assert!(
            over.message.contains("1 image(s)") && over.message.contains("over the cap"),
            "{over:?}"
        );
        assert!(
            over.fix
                .as_deref()
                .unwrap()
                .contains("lwk-runc image prune"),
            "{over:?}"
        );
        let left = f.iter().find(|f| f.check == "images.staging").unwrap();
        assert_eq!(left.status, Status::Warn, "{f:?}");
        assert!(left.message.contains(&format!("{hex}.0")), "{left:?}");

        // A cache in a directory others may write: refused, as the runtime refuses it.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let f = images(&cfg);
        assert_eq!(f[0].status, Status::Fail, "{f:?}");
        assert!(f[0].fix.as_deref().unwrap().contains("chmod go-w"), "{f:?}");
        let _ = fs::remove_dir_all(&d);
    }
}
