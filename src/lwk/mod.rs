//! The LWK layer: the only place that knows lightweight kernels exist.

pub mod launcher;
pub mod policy;
pub mod rewrite;

use std::fmt;

/// Which lightweight kernel a container runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LwkKind {
    McKernel,
    Mos,
}

impl LwkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LwkKind::McKernel => "mckernel",
            LwkKind::Mos => "mos",
        }
    }
    /// The config table that configures it.
    pub fn config_section(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for LwkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LwkKind::McKernel => "McKernel",
            LwkKind::Mos => "mOS",
        })
    }
}

/// What a container asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwkRequest {
    pub kind: LwkKind,
    /// Launcher options, each checked against the config's allow-list.
    pub args: Vec<String>,
}

pub mod boundary;
pub mod driver;
pub mod init;
pub mod lease;
pub mod mckernel;
pub mod mos;
pub mod pidns;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::trust;
use driver::{Driver, DriverError};
use launcher::{Closure, LauncherError, Want};
use lease::{LeaseError, NewLease};
use policy::PolicyError;
use rewrite::{NodeFacts, RewriteError, CLOSURE_MOUNT_DIR};

#[derive(Debug, thiserror::Error)]
pub enum LwkError {
    #[error("refusing the LWK request of container {id}: {source}")]
    Policy {
        id: String,
        #[source]
        source: PolicyError,
    },
    #[error("preparing the {kind} launcher for container {id}: {source}")]
    Launcher {
        id: String,
        kind: LwkKind,
        #[source]
        source: LauncherError,
    },
    #[error("LWK lease for container {id}: {source}")]
    Lease {
        id: String,
        #[source]
        source: LeaseError,
    },
    #[error("{kind} for container {id}: {source}")]
    Driver {
        id: String,
        kind: LwkKind,
        #[source]
        source: DriverError,
    },
    #[error("rewriting the spec of container {id} for {kind}: {source}")]
    Rewrite {
        id: String,
        kind: LwkKind,
        #[source]
        source: RewriteError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec into container {id} asks for {kind}, but the container was not created on {kind}; create it with {ANN}/LWK_KERNEL={k} instead", ANN = policy::ANN_KERNEL, k = kind.as_str())]
    ExecWithoutLwk { id: String, kind: LwkKind },
    #[error("setting up the pid namespace of container {id} for {kind}: {source}")]
    PidNs {
        id: String,
        kind: LwkKind,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id} asks for {kind}: {source}")]
    Config {
        id: String,
        kind: LwkKind,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("container {id} asks for {kind}, but lwk-runc runs as uid {uid}, and on this node only root may boot, join or tear down an LWK; run it through an engine that runs as root, or ask the node's administrator to set `rootless_join = true` in {file}, which lets users join an LWK that root has brought up")]
    RootOnly {
        id: String,
        kind: LwkKind,
        uid: u32,
        file: PathBuf,
    },
    #[error("container {id} asks for {kind}, which is not up (status: {status}); lwk-runc runs as uid {uid}, and only root may boot it: start it from a root container (or the scheduler, with boot_mode = \"external\"), then retry")]
    RootlessNotUp {
        id: String,
        kind: LwkKind,
        uid: u32,
        status: String,
    },
    #[error("`lwk-runc {what}` runs as uid {uid}, but only root may tear down an LWK or change the node's leases; run it as root")]
    NotRoot { what: &'static str, uid: u32 },
}

/// A container rewritten for an LWK: the spec libcontainer must see in place of the
/// caller's (the runtime overlays it on the bundle's config.json; see overlay.rs), and
/// the LWK status check still running while the container is built, which
/// [`container_created`] confirms.
pub struct Prepared {
    pub spec: Spec,
    pub pending: Option<lease::PendingCheck>,
    /// The container's processes get the LWK device boundary ([`boundary::fenced`]).
    pub fenced: bool,
}

fn io_err(what: &str, path: &Path, source: std::io::Error) -> LwkError {
    LwkError::Io {
        what: what.into(),
        path: path.into(),
        source,
    }
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The launcher-closure cache: root's, beside the lease table. A user joining an LWK
/// without root (`rootless_join`) keeps one of their own under their runtime root.
fn closure_cache(cfg: &Config, root: &Path) -> Result<PathBuf, LauncherError> {
    let (parent, dir) = if trust::is_root() {
        (cfg.lease_dir.clone(), cfg.lease_dir.join("closures"))
    } else {
        (root.to_path_buf(), root.join("@lwk-closures"))
    };
    for d in [&parent, &dir] {
        trust::ensure_private_dir(d).map_err(|source| LauncherError::Untrusted {
            fix: source.fix(),
            source,
        })?;
    }
    Ok(dir)
}

fn build_opts(cfg: &Config) -> launcher::Build<'_> {
    launcher::Build {
        patchelf: &cfg.patchelf,
        lock_timeout: std::time::Duration::from_secs(cfg.lock_timeout_secs),
    }
}

/// The lwk-runc binary, which runs as a container's init (`lwk-init`) and, in a
/// `conexec` job container, as its rank server.
fn init_want(cfg: &Config) -> Want<'_> {
    Want {
        name: "lwk-runc",
        binary: cfg
            .init_binary
            .as_deref()
            .unwrap_or(Path::new("/proc/self/exe")),
        key_name: "(the lwk-runc binary)",
        container_dir: Path::new(CLOSURE_MOUNT_DIR).join("init"),
    }
}

/// The host launcher of `drv` (mcexec, yod).
fn launcher_want<'a>(drv: &'a dyn Driver) -> Want<'a> {
    let (bin, key) = drv.launcher();
    let name = launcher::invoked_name(bin);
    Want {
        name,
        binary: bin,
        key_name: key,
        container_dir: Path::new(CLOSURE_MOUNT_DIR).join(name),
    }
}

fn init_closure(cfg: &Config, root: &Path) -> Result<Closure, LauncherError> {
    launcher::closure_for(
        &closure_cache(cfg, root)?,
        &init_want(cfg),
        &build_opts(cfg),
    )
}

/// What a `conexec` job container's init runs: `lwk-init` starts the rank server (its
/// first child, so on a pid-keyed LWK it has the container's slot pid, the common
/// parent `mcexec -n` groups by), and the server runs each rank under the launcher.
#[derive(Debug, Clone, Copy)]
pub struct ConexecServer {
    /// Ranks per node; 0 when unknown (then the last rank out ends the container).
    pub ppn: u32,
    pub join_timeout_ms: u64,
}

impl ConexecServer {
    /// argv from the init closure's binary up to where the launcher prefix starts.
    fn head(&self, init_exe: &str) -> Vec<String> {
        vec![
            init_exe.into(),
            "lwk-init".into(),
            "--".into(),
            init_exe.into(),
            "conexec-server".into(),
            "--ppn".into(),
            self.ppn.to_string(),
            "--join-timeout-ms".into(),
            self.join_timeout_ms.to_string(),
            "--".into(),
        ]
    }
}

/// Closures of the launcher (and, for pid-keyed LWKs and job containers, of lwk-runc as
/// init), plus the argv head/tail around the container's launcher options.
fn launch_facts(
    cfg: &Config,
    root: &Path,
    drv: &dyn Driver,
    with_init: bool,
    server: Option<&ConexecServer>,
) -> Result<NodeFacts, LauncherError> {
    let cache = closure_cache(cfg, root)?;
    let l: Closure = launcher::closure_for(&cache, &launcher_want(drv), &build_opts(cfg))?;
    let (head_args, tail) = drv.launcher_args();
    let mut facts = NodeFacts::default();
    if with_init || server.is_some() {
        let i = launcher::closure_for(&cache, &init_want(cfg), &build_opts(cfg))?;
        let exe = i.exe.to_string_lossy().into_owned();
        match server {
            Some(srv) => facts.head = srv.head(&exe),
            None => facts.head = vec![exe, "lwk-init".into(), "--".into()],
        }
        facts.closures.push((i.host_dir, i.container_dir));
    }
    facts.head.push(l.exe.to_string_lossy().into_owned());
    facts.head.extend(head_args);
    facts.tail = tail;
    facts.closures.push((l.host_dir, l.container_dir));
    Ok(facts)
}

/// A job container that asks for no LWK: the rank server as init, ranks on Linux.
fn prepare_plain_conexec(
    cfg: &Config,
    root: &Path,
    id: &str,
    spec: &Spec,
    server: &ConexecServer,
) -> Result<Prepared, LwkError> {
    let i = init_closure(cfg, root).map_err(|source| LwkError::Launcher {
        id: id.into(),
        kind: LwkKind::McKernel,
        source,
    })?;
    let facts = NodeFacts {
        head: server.head(&i.exe.to_string_lossy()),
        closures: vec![(i.host_dir, i.container_dir)],
        ..Default::default()
    };
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let req = LwkRequest {
        kind: LwkKind::McKernel,
        args: vec![],
    };
    let spec =
        rewrite::rewrite(spec, &req, &facts, &rootfs).map_err(|source| LwkError::Rewrite {
            id: id.into(),
            kind: LwkKind::McKernel,
            source,
        })?;
    Ok(Prepared {
        spec,
        pending: None,
        fenced: false,
    })
}

/// create/run, before libcontainer's build(): decide, take the lease (booting if first),
/// rewrite the spec. `Ok(None)`: no LWK; nothing was touched.
pub fn prepare_create(
    cfg: &Config,
    root: &Path,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    conexec: Option<&ConexecServer>,
) -> Result<Option<Prepared>, LwkError> {
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let req = policy::decide(cfg, spec.annotations().as_ref(), &env).map_err(|source| {
        LwkError::Policy {
            id: id.into(),
            source,
        }
    })?;
    let Some(mut req) = req else {
        return match conexec {
            Some(srv) => prepare_plain_conexec(cfg, root, id, spec, srv).map(Some),
            None => Ok(None),
        };
    };
    let kind = req.kind;
    // Everything that can fail without touching the node comes first: the id, who
    // asks, the tools, the launcher.
    lease::check_id(id).map_err(|source| LwkError::Lease {
        id: id.into(),
        source,
    })?;
    check_caller(cfg, id, kind)?;
    let drv = driver::for_kind(cfg, kind);
    if let Some(srv) = conexec.filter(|s| s.ppn > 0) {
        req.args.extend(drv.rank_group_args(srv.ppn));
    }
    let mut facts =
        launch_facts(cfg, root, drv.as_ref(), drv.needs_pid_slot(), conexec).map_err(|source| {
            LwkError::Launcher {
                id: id.into(),
                kind,
                source,
            }
        })?;
    let bundle =
        std::fs::canonicalize(bundle).map_err(|e| io_err("resolving the bundle", bundle, e))?;
    let root_rel = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| LwkError::Rewrite {
            id: id.into(),
            kind,
            source: RewriteError::NoRoot,
        })?;
    let rootfs = bundle.join(root_rel);
    if spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .is_none_or(|a| a.is_empty())
    {
        return Err(LwkError::Rewrite {
            id: id.into(),
            kind,
            source: RewriteError::NoArgs,
        });
    }
    // Root takes a lease (booting the LWK if first); a rootless joiner takes none and
    // needs the LWK up.
    let acquired = if trust::is_root() {
        let a = lease::acquire(
            cfg,
            kind,
            &NewLease {
                id,
                root,
                bundle: &bundle,
                owner_pid: std::process::id() as i32,
                init_pid: None,
            },
        )
        .map_err(|source| LwkError::Lease {
            id: id.into(),
            source,
        })?;
        Some(a)
    } else {
        rootless_join(cfg, id, kind)?;
        None
    };
    let rewritten = (|| {
        let c = drv.container_facts().map_err(|source| LwkError::Driver {
            id: id.into(),
            kind,
            source,
        })?;
        facts.devices = c.devices;
        facts.binds = c.binds;
        facts.tmpfs = c.tmpfs;
        facts.unmask = c.unmask;
        facts.personalities = c.personalities;
        rewrite::rewrite(spec, &req, &facts, &rootfs).map_err(|source| LwkError::Rewrite {
            id: id.into(),
            kind,
            source,
        })
    })();
    match rewritten {
        Ok(spec) => Ok(Some(Prepared {
            spec,
            pending: acquired.and_then(|a| a.pending),
            fenced: drv.fences_devices(),
        })),
        Err(e) => {
            if acquired.is_some() {
                if let Err(r) = lease::release(cfg, root, id) {
                    tracing::error!(error = %r, "releasing the LWK lease after a failed prepare");
                }
            }
            Err(e)
        }
    }
}

/// Before anything is touched for an LWK container: the tools the config names may
/// be run as root, and a caller that is not root may join at all.
pub(crate) fn check_caller(cfg: &Config, id: &str, kind: LwkKind) -> Result<(), LwkError> {
    cfg.check_tools(kind).map_err(|source| LwkError::Config {
        id: id.into(),
        kind,
        source: Box::new(source),
    })?;
    if !trust::is_root() && !cfg.rootless_join {
        return Err(LwkError::RootOnly {
            id: id.into(),
            kind,
            uid: uid(),
            file: cfg.file_name(),
        });
    }
    Ok(())
}

/// A caller that is not root (allowed by `rootless_join`) joins only an LWK that is
/// up, and holds no lease: it can neither boot nor tear down.
pub(crate) fn rootless_join(cfg: &Config, id: &str, kind: LwkKind) -> Result<(), LwkError> {
    let status = driver::for_kind(cfg, kind)
        .status()
        .map_err(|source| LwkError::Driver {
            id: id.into(),
            kind,
            source,
        })?;
    if status.as_deref() != Some("RUNNING") {
        return Err(LwkError::RootlessNotUp {
            id: id.into(),
            kind,
            uid: uid(),
            status: status.unwrap_or_else(|| "no instance".into()),
        });
    }
    tracing::debug!(id, kernel = %kind, "joining the LWK without a lease (rootless_join)");
    Ok(())
}

/// After build() succeeded: confirm the LWK is RUNNING (the check `prepare_create` left
/// running) and record the init pid. Call only when `prepare_create` returned Some; on
/// error the caller deletes the container and releases the lease.
pub fn container_created(
    cfg: &Config,
    root: &Path,
    id: &str,
    pid: i32,
    pending: Option<lease::PendingCheck>,
) -> Result<(), LwkError> {
    let lease_err = |source| LwkError::Lease {
        id: id.into(),
        source,
    };
    if let Some(p) = pending {
        p.confirm().map_err(lease_err)?;
    }
    if !trust::is_root() {
        return Ok(()); // a rootless joiner has no lease, so no pid slot either
    }
    lease::set_init(cfg, root, id, pid).map_err(lease_err)?;
    Ok(())
}

/// start, just before the init runs the user process: a container on a pid-keyed LWK
/// gets its launcher's pid slot now, from what the node looks like at this moment (see
/// pidns.rs). Nothing to do (two stats) for other containers.
pub fn before_start(cfg: &Config, root: &Path, id: &str, init_pid: i32) -> Result<(), LwkError> {
    match lease::get(cfg, root, id) {
        Some(l) if driver::for_kind(cfg, l.kernel).needs_pid_slot() => {
            place_launcher(cfg, root, id, init_pid, l.kernel)
        }
        _ => Ok(()),
    }
}

/// Choose the launcher's slot (pidns.rs) and point the namespace's ns_last_pid at it.
fn place_launcher(
    cfg: &Config,
    root: &Path,
    id: &str,
    init_pid: i32,
    kind: LwkKind,
) -> Result<(), LwkError> {
    let pid_err = |source| LwkError::PidNs {
        id: id.into(),
        kind,
        source,
    };
    if pidns::shares_our_namespace(init_pid).map_err(pid_err)? {
        return Ok(()); // host pids are node-unique already
    }
    let pid_keyed = |l: &lease::Lease| driver::for_kind(cfg, l.kernel).needs_pid_slot();
    // Other LWK containers, from a lock-free look at the table: a container that appears
    // meanwhile has not started, and its slot is seen under the lock below.
    let mut inits: Vec<i32> = lease::read_leases(&cfg.lease_dir)
        .iter()
        .filter(|(_, l)| pid_keyed(l))
        .filter_map(|(_, l)| l.init_pid)
        .filter(|p| *p != init_pid)
        .collect();
    inits.push(init_pid);
    let host_pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let space = pidns::SlotSpace::new(
        cfg.pid_base,
        cfg.pid_stride,
        pidns::ns_pid_max(init_pid).map_err(pid_err)?,
        host_pid_max,
    );
    // Above the host's pid_max no host process can be: its pids need no look.
    let in_use = pidns::pids_in_use(&inits, init_pid, space.lo < host_pid_max);
    let placed = lease::place_slot(cfg, root, id, |others| {
        let taken = others
            .iter()
            .filter(|l| pid_keyed(l))
            .map(|l| l.slot)
            .collect();
        pidns::choose_slot(&space, &taken, &in_use)
    })
    .map_err(|source| LwkError::Lease {
        id: id.into(),
        source,
    })?;
    let Some(l) = placed else { return Ok(()) };
    let first = space.first_pid(l.slot);
    let first = u32::try_from(first).map_err(|e| pid_err(std::io::Error::other(e)))?;
    pidns::set_ns_last_pid(init_pid, first - 1).map_err(pid_err)?;
    tracing::debug!(id, slot = l.slot, first, "LWK launcher pid arranged");
    Ok(())
}

/// create failed, or delete: drop the lease (no-op without one), reconcile, tear down if
/// last. Cheap (two stats) for containers without an LWK; nothing at all for a caller
/// that is not root (it holds no lease).
pub fn release(cfg: &Config, root: &Path, id: &str) -> Result<(), LwkError> {
    if !trust::is_root() {
        return Ok(());
    }
    lease::release(cfg, root, id)
        .map(|_| ())
        .map_err(|source| LwkError::Lease {
            id: id.into(),
            source,
        })
}

/// exec: if the process's own env asks for the LWK (not an `LWK_KERNEL` it inherited from
/// `inherited`, the container's env; see policy.rs), prefix its args with the launcher.
/// Returns the LWK the process now runs on.
pub fn rewrite_exec_process(
    cfg: &Config,
    root: &Path,
    id: &str,
    process: &mut Process,
    inherited: &[String],
) -> Result<Option<LwkKind>, LwkError> {
    let env = process.env().clone().unwrap_or_default();
    let Some(req) =
        policy::decide_exec(cfg, &env, inherited).map_err(|source| LwkError::Policy {
            id: id.into(),
            source,
        })?
    else {
        return Ok(None);
    };
    let kind = req.kind;
    check_caller(cfg, id, kind)?;
    if trust::is_root() {
        match lease::get(cfg, root, id) {
            Some(l) if l.kernel == kind => {}
            _ => {
                return Err(LwkError::ExecWithoutLwk {
                    id: id.into(),
                    kind,
                })
            }
        }
    } else {
        rootless_join(cfg, id, kind)?;
    }
    let drv = driver::for_kind(cfg, kind);
    let facts = launch_facts(cfg, root, drv.as_ref(), false, None).map_err(|source| {
        LwkError::Launcher {
            id: id.into(),
            kind,
            source,
        }
    })?;
    rewrite::prefix_process(process, &req, &facts).map_err(|source| LwkError::Rewrite {
        id: id.into(),
        kind,
        source,
    })?;
    Ok(Some(kind))
}

/// exec: the LWK an exec'd process's profile must account for: the one it asked for
/// (`asked`, from [`rewrite_exec_process`]), else its container's.
pub fn exec_lwk(cfg: &Config, root: &Path, id: &str, asked: Option<LwkKind>) -> Option<LwkKind> {
    asked.or_else(|| lease::get(cfg, root, id).map(|l| l.kernel))
}

/// exec: the container's spec as an exec'd process on or beside `kind` must see it, when
/// that differs from the bundle's. An exec'd process runs under the container's seccomp
/// profile, which must let the launcher set its `personality`, as the rewritten spec of
/// the container's init did. None: the bundle's spec serves as it is.
pub fn exec_spec(
    cfg: &Config,
    id: &str,
    kind: LwkKind,
    spec: &Spec,
) -> Result<Option<Spec>, LwkError> {
    let has_profile = spec.linux().as_ref().is_some_and(|l| l.seccomp().is_some());
    if !has_profile {
        return Ok(None);
    }
    let facts = driver::for_kind(cfg, kind)
        .container_facts()
        .map_err(|source| LwkError::Driver {
            id: id.into(),
            kind,
            source,
        })?;
    if facts.personalities.is_empty() {
        return Ok(None);
    }
    let mut out = spec.clone();
    let mut linux = out.linux().clone().unwrap_or_default();
    rewrite::allow_personalities(&mut linux, &facts.personalities);
    out.set_linux(Some(linux));
    Ok(Some(out))
}

/// exec: whether the process must carry the LWK device boundary ([`boundary::fenced`]):
/// any process exec'd into a container that holds a lease on such an LWK, whether or
/// not it asks for the LWK itself.
pub fn exec_fenced(cfg: &Config, root: &Path, id: &str) -> bool {
    lease::get(cfg, root, id).is_some_and(|l| driver::for_kind(cfg, l.kernel).fences_devices())
}

/// What `lwk gc` collected.
pub struct Collected {
    /// Ids of containers whose stale leases were dropped.
    pub leases: Vec<String>,
    /// Closure-cache entries removed (stale builds, unused old versions).
    pub closures: Vec<String>,
}

/// `lwk-runc lwk gc`: drop dead leases, tear down idle LWKs, prune the closure cache.
pub fn gc(cfg: &Config) -> Result<Collected, LwkError> {
    if !trust::is_root() {
        return Err(LwkError::NotRoot {
            what: "lwk gc",
            uid: uid(),
        });
    }
    let gc_err = |source| LwkError::Lease {
        id: "(gc)".into(),
        source,
    };
    let leases = lease::gc(cfg).map_err(gc_err)?;
    let mut closures = Vec::new();
    if cfg.lease_dir.join("closures").is_dir() {
        let launcher_err = |source| LwkError::Launcher {
            id: "(gc)".into(),
            kind: LwkKind::McKernel,
            source,
        };
        let cache = closure_cache(cfg, Path::new("/")).map_err(launcher_err)?;
        let _lock = launcher::lock_cache(
            &cache,
            std::time::Duration::from_secs(cfg.lock_timeout_secs),
        )
        .map_err(launcher_err)?;
        let mut keep: Vec<String> = launcher::current_entry(&init_want(cfg))
            .into_iter()
            .collect();
        for kind in [LwkKind::McKernel, LwkKind::Mos] {
            let drv = driver::for_kind(cfg, kind);
            keep.extend(launcher::current_entry(&launcher_want(drv.as_ref())));
        }
        closures = launcher::prune(&cache, &keep, None);
    }
    Ok(Collected { leases, closures })
}

#[derive(Debug, Serialize)]
pub struct KernelStatus {
    pub kernel: LwkKind,
    pub enabled: bool,
    pub boot_mode: String,
    pub status: String,
    pub cpus: String,
    pub memory: String,
    pub leases: Vec<LeaseStatus>,
}

#[derive(Debug, Serialize)]
pub struct LeaseStatus {
    pub id: String,
    pub pid: i32,
    pub since: u64,
    pub slot: u32,
    pub alive: bool,
}

/// `lwk-runc lwk status [--format json]`.
pub fn status(cfg: &Config, json: bool) -> Result<String, LwkError> {
    let leases = lease::read_leases(&cfg.lease_dir);
    let mut out = Vec::new();
    for kind in [LwkKind::McKernel, LwkKind::Mos] {
        let drv = driver::for_kind(cfg, kind);
        let status = if cfg.enabled(kind) {
            match drv.status() {
                Ok(s) => s.unwrap_or_else(|| "no instance".into()),
                Err(e) => format!("unknown ({e})"),
            }
        } else {
            "disabled".into()
        };
        let (cpus, memory) = drv.resources();
        out.push(KernelStatus {
            kernel: kind,
            enabled: cfg.enabled(kind),
            boot_mode: cfg.boot_mode(kind).as_str().into(),
            status,
            cpus,
            memory,
            leases: leases
                .iter()
                .filter(|(_, l)| l.kernel == kind)
                .map(|(_, l)| LeaseStatus {
                    id: l.id.clone(),
                    pid: l.init_pid.unwrap_or(l.owner_pid),
                    since: l.since,
                    slot: l.slot,
                    alive: l.is_alive(),
                })
                .collect(),
        });
    }
    if json {
        return serde_json::to_string_pretty(&out)
            .map_err(|e| io_err("encoding status", &cfg.lease_dir, e.into()));
    }
    let mut s = String::new();
    for k in &out {
        s.push_str(&format!(
            "{:<9} enabled={} boot_mode={} status={} cpus={} memory={}\n",
            k.kernel.as_str(),
            k.enabled,
            k.boot_mode,
            k.status,
            if k.cpus.is_empty() { "-" } else { &k.cpus },
            if k.memory.is_empty() { "-" } else { &k.memory }
        ));
        for l in &k.leases {
            s.push_str(&format!(
                "  lease {} pid={} since={} slot={}{}\n",
                l.id,
                l.pid,
                l.since,
                l.slot,
                if l.alive {
                    ""
                } else {
                    " (dead: gc will drop it)"
                }
            ));
        }
    }
    Ok(s)
}

/// `lwk-init` runs before any CLI parsing: it is a container's PID 1, started for
/// every LWK container, and needs none of the runtime's set-up. Returns the exit
/// code if it handled argv.
pub fn hidden_main(args: &[OsString]) -> Option<i32> {
    match args.get(1).and_then(|a| a.to_str()) {
        Some("lwk-init") => return Some(init::main(&args[2..])),
        Some("conexec-server") => return Some(crate::conexec::server::main(&args[2..])),
        _ => {}
    }
    None
}

/// Tests that drive the simulator set LWK_SIM_ROOT for the whole process; they take
/// this lock so they never see each other's simulated node.
#[cfg(test)]
pub static SIM_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
