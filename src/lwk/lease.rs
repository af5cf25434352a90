//! The node-wide lease table: who uses which LWK, and when it must come up or go down.
//!
//! Layout under `lease_dir` (node-wide, never under a runtime's `--root`):
//! `lock` (flock'd around every change), `leases/<key>.json` (one per LWK container),
//! `node-<kernel>.json` (the instance we brought up, written *before* booting so that a
//! crash mid-boot is still torn down), `failed-<kernel>.json` (the last boot failure).
//!
//! Every file is written atomically (write, fsync, rename). Records of dead processes are
//! reconciled on every acquire/release and by `lwk-runc lwk gc`; liveness is pid + start
//! time from /proc/<pid>/stat so a recycled pid does not keep a lease alive. A lease
//! whose holder (the container's init, or the `create` still building it) lives is
//! never dropped by anyone but that `create` itself: a `delete` racing a `create` of
//! the same id, or another engine's hook with the same id, leaves it alone.
//!
//! Only root may use the table: the directory must be root's and writable by root only
//! (it is created 0700, files 0600), and is refused otherwise, never repaired (see
//! trust.rs). Files in it are opened with O_NOFOLLOW. Every wait for the node lock is
//! bounded by `lock_timeout_secs`; the error names the lock and its holder.
//!
//! A node record that cannot be read means "state unknown": the tools are asked, and
//! the record is rewritten from what they say.
//!
//! Boot failure: the booter tears down what it took and writes the failure marker with
//! its error; every acquirer that was already queued on the lock when the marker was
//! written reports that error instead of booting again (32 containers, one PANIC, one
//! boot attempt). An acquirer that arrives later tries a fresh boot.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{BootMode, Config};
use crate::flock::LockError;
use crate::host::start_time;
use crate::lwk::driver::{self, DriverError, Probe};
use crate::lwk::LwkKind;
use crate::trust::{self, Untrusted};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("LWK lease table {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing the LWK lease directory: {source}. Only root may be able to change the node's leases: {fix}")]
    Untrusted { source: Box<Untrusted>, fix: String },
    #[error("LWK lease table: {0}")]
    Lock(#[from] LockError),
    #[error("container {id} already holds an LWK lease (owner pid {pid} is alive); pick another id or delete it first")]
    Duplicate { id: String, pid: i32 },
    #[error("container id {0:?} cannot name a lease file")]
    BadId(String),
    #[error("container id is {0} bytes long; LWK containers take ids of at most {MAX_ID_LEN} bytes (the lease file name must fit the file system's limit)")]
    IdTooLong(usize),
    #[error("no LWK pid slot is free on this node (each is pid_stride pids that no other LWK container, nor the host, may be using); lower pid_stride in the lwk-runc config, or raise kernel.pid_max (Linux 6.14 and later give every container 4194304 pids of its own)")]
    NoSlot,
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("{kind} failed to come up for a container queued behind the boot attempt: {error}")]
    EarlierBootFailed { kind: LwkKind, error: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub root: PathBuf,
    pub kernel: LwkKind,
    pub owner_pid: i32,
    pub owner_start: u64,
    pub init_pid: Option<i32>,
    pub init_start: Option<u64>,
    /// Unix seconds.
    pub since: u64,
    pub slot: u32,
    /// The caller's bundle (reported by `state`), and the private one given to libcontainer.
    pub bundle: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub kernel: LwkKind,
    pub boot_mode: String,
    /// "booting" until the instance reported RUNNING, then "up".
    pub phase: String,
    pub since: u64,
    /// Set when the last lease went away and teardown waits for the linger to pass.
    pub idle_since: Option<u64>,
    /// When (Unix ns) a status check last saw it RUNNING, or was started for a
    /// container joining it; see `status_recheck_ms` in the config.
    #[serde(default)]
    pub checked_ns: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FailureMarker {
    at_ns: u128,
    error: String,
}

pub struct Table {
    dir: PathBuf,
    _lock: File,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The longest container id an LWK container may have: the lease file
/// `<id>.<8 hex>.json`, and its temporary `<id>.<8 hex>.tmp<pid>` while being written,
/// must fit NAME_MAX (255 bytes).
pub const MAX_ID_LEN: usize = 200;

/// An id an LWK container may have: short enough for its lease file name, and unable
/// to name a path. Checked before anything is touched.
pub fn check_id(id: &str) -> Result<(), LeaseError> {
    if id.len() > MAX_ID_LEN {
        return Err(LeaseError::IdTooLong(id.len()));
    }
    if id.is_empty() || id.contains('/') || id.starts_with('.') || id.contains('\0') {
        return Err(LeaseError::BadId(id.into()));
    }
    Ok(())
}

/// One spelling per runtime root: `--root S/`, `--root S/.` and `--root S` (or a
/// symlink to S) must name the same leases. Resolved when it exists, else normalized.
pub fn canonical_root(root: &Path) -> PathBuf {
    // A process works under one root: resolve it once.
    static LAST: std::sync::Mutex<Option<(PathBuf, PathBuf)>> = std::sync::Mutex::new(None);
    if let Some((_, c)) = LAST
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .filter(|(r, _)| r == root)
    {
        return c;
    }
    let c = match fs::canonicalize(root) {
        Ok(p) if root.is_absolute() => p,
        _ => root.components().collect(),
    };
    if let Ok(mut g) = LAST.lock() {
        *g = Some((root.to_path_buf(), c.clone()));
    }
    c
}

/// The lease file name: the id plus a hash of the (canonical) runtime root, so the same
/// id under two roots (two engines) cannot collide.
pub fn lease_key(root: &Path, id: &str) -> Result<String, LeaseError> {
    check_id(id)?;
    let root = canonical_root(root);
    let mut h: u32 = 0x811c9dc5;
    for b in root.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    Ok(format!("{id}.{h:08x}"))
}

/// The process `pid` started at `start` still runs, or is exiting and has not yet let go
/// of what its container held (see [`crate::host::exit_unfinished`]). A zombie, or an
/// exiting init whose namespace holds nothing any more, has ended: the init of a PID
/// namespace stays exiting until the host reaps every other process of it, which may
/// take seconds. Dropping the lease of a container whose launcher still holds its pid
/// slot or reservation would give them to the next container (McKernel refuses a second
/// launcher with the same pid) or fail the teardown.
pub fn alive(pid: i32, start: u64) -> bool {
    crate::host::proc_stat(pid).is_some_and(|s| {
        s.start_time == start && (!s.ending() || crate::host::exit_unfinished(pid))
    })
}

/// This process, as a lease records its owner.
fn me() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (pid, start_time(pid).unwrap_or(0))
}

/// Lease files, node records and markers are small; a larger one is not ours.
const MAX_RECORD_BYTES: u64 = 1 << 16;

/// Read a file of the lease directory without following a symlink.
fn read_record(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_RECORD_BYTES).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Lease {
    pub fn is_alive(&self) -> bool {
        match (self.init_pid, self.init_start) {
            (Some(p), Some(s)) => alive(p, s),
            _ => alive(self.owner_pid, self.owner_start),
        }
    }

    /// Taken by this very process (a `create` or `run` dropping its own lease).
    fn is_mine(&self) -> bool {
        (self.owner_pid, self.owner_start) == me()
    }
}

/// Write, fsync, rename; the temporary file is made afresh (O_EXCL, never through a
/// symlink), mode 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // left by a dead process that had our pid
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        crate::failpoint::hit("record-tmp-written");
        fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// The outcome of [`Table::sweep`].
pub struct Swept {
    /// Live leases, keyed by lease key, oldest first.
    pub live: Vec<(String, Lease)>,
    /// Ids of the containers whose stale leases were dropped.
    pub dropped: Vec<String>,
}

/// Where lwk-runc may keep files only root can reach: `dir` made (0700) if missing,
/// refused if anyone but root could change it.
pub fn private_dir(dir: &Path) -> Result<(), LeaseError> {
    trust::ensure_private_dir(dir).map_err(|source| LeaseError::Untrusted {
        fix: source.fix(),
        source: Box::new(source),
    })
}

impl Table {
    /// Take the node lock, waiting at most `lock_timeout_secs`; the directory is
    /// created on first use and checked once per process.
    pub fn lock(cfg: &Config) -> Result<Table, LeaseError> {
        Table::lock_at(&cfg.lease_dir, cfg.lock_timeout_secs)
    }

    fn lock_at(dir: &Path, timeout_secs: u64) -> Result<Table, LeaseError> {
        private_dir(dir)?;
        private_dir(&dir.join("leases"))?;
        let path = dir.join("lock");
        let f = crate::flock::open_private(&path, "the LWK node lock")?;
        crate::flock::lock_or_name_holder(
            &f,
            &path,
            "the LWK node lock",
            Duration::from_secs(timeout_secs),
            "`lock_timeout_secs` in the lwk-runc config",
        )?;
        Ok(Table {
            dir: dir.to_path_buf(),
            _lock: f,
        })
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> LeaseError {
        LeaseError::Io {
            path: self.dir.clone(),
            what,
            source,
        }
    }

    fn lease_path(&self, key: &str) -> PathBuf {
        lease_file(&self.dir, key)
    }

    pub fn get(&self, key: &str) -> Option<Lease> {
        let t = read_record(&self.lease_path(key)).ok()?;
        serde_json::from_slice(&t).ok()
    }

    pub fn put(&self, key: &str, l: &Lease) -> Result<(), LeaseError> {
        let data =
            serde_json::to_vec_pretty(l).map_err(|e| self.io("encoding a lease", e.into()))?;
        write_atomic(&self.lease_path(key), &data).map_err(|e| self.io("writing a lease", e))
    }

    pub fn remove(&self, key: &str) -> Result<bool, LeaseError> {
        match fs::remove_file(self.lease_path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("removing a lease", e)),
        }
    }

    /// One pass over the lease directory: drop leases whose process is gone and files
    /// that do not parse; return the live leases (oldest first) and the ids dropped.
    /// Callers under the lock use the live list instead of reading the directory again.
    pub fn sweep(&self) -> Result<Swept, LeaseError> {
        let mut parsed = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("leases")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let lease = read_record(&e.path())
                    .ok()
                    .and_then(|t| serde_json::from_slice::<Lease>(&t).ok());
                match (name.strip_suffix(".json"), lease) {
                    (Some(key), Some(l)) => parsed.push((key.to_string(), l)),
                    // A complete temporary file: its rename is still to come, unless its
                    // writer was killed first (then it is litter nobody would remove).
                    (None, Some(_)) => {
                        if !tmp_owner_alive(&name) {
                            let _ = fs::remove_file(e.path());
                        }
                    }
                    // Unparseable lease files (torn by hand) would block teardown
                    // forever; drop them, but not a write still in progress.
                    (_, None) => {
                        if !name.contains(".tmp") || !tmp_owner_alive(&name) {
                            let _ = fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
        parsed.sort_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(&b.0)));
        let mut live = Vec::new();
        let mut dropped = Vec::new();
        for (key, l) in parsed {
            if l.is_alive() {
                live.push((key, l));
            } else {
                tracing::info!(id = %l.id, kernel = %l.kernel, "dropping stale LWK lease (its process is gone)");
                self.remove(&key)?;
                dropped.push(l.id);
            }
        }
        Ok(Swept { live, dropped })
    }

    /// The instance record of `kind`: None when there is none; a record that cannot
    /// be read or parsed is [`NodeRecord::Unknown`].
    pub fn node_record(&self, kind: LwkKind) -> NodeRecord {
        read_node_record(&self.dir, kind)
    }

    /// The record of `kind`, with an unreadable one rebuilt from what the tools say:
    /// RUNNING is an instance that is up; anything else, one whose boot did not finish
    /// (which the caller then tears down before booting afresh, or reports to joiners).
    pub fn node(&self, cfg: &Config, kind: LwkKind) -> Result<Option<NodeState>, LeaseError> {
        let why = match self.node_record(kind) {
            NodeRecord::None => return Ok(None),
            NodeRecord::Known(n) => return Ok(Some(n)),
            NodeRecord::Unknown(why) => why,
        };
        let status = driver::for_kind(cfg, kind).status()?;
        let running = status.as_deref() == Some("RUNNING");
        tracing::warn!(kernel = %kind, %why, ?status, "the LWK node record is unreadable; rebuilt from the tools' status");
        let n = NodeState {
            kernel: kind,
            boot_mode: cfg.boot_mode(kind).as_str().into(),
            phase: if running { "up" } else { "booting" }.into(),
            since: now_secs(),
            idle_since: None,
            checked_ns: if running { now_ns() } else { 0 },
        };
        self.set_node(Some(&n), kind)?;
        Ok(Some(n))
    }

    pub fn set_node(&self, n: Option<&NodeState>, kind: LwkKind) -> Result<(), LeaseError> {
        let p = self.dir.join(format!("node-{}.json", kind.as_str()));
        match n {
            Some(n) => {
                let data = serde_json::to_vec_pretty(n)
                    .map_err(|e| self.io("encoding node state", e.into()))?;
                write_atomic(&p, &data).map_err(|e| self.io("writing node state", e))
            }
            None => match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(self.io("removing node state", e))
                }
                _ => Ok(()),
            },
        }
    }

    fn failure_path(&self, kind: LwkKind) -> PathBuf {
        failure_file(&self.dir, kind)
    }

    fn failure(&self, kind: LwkKind) -> Option<FailureMarker> {
        read_marker(&self.dir, kind)
    }

    /// A boot succeeded: an earlier failure no longer describes the node.
    fn clear_failure(&self, kind: LwkKind) {
        let _ = fs::remove_file(self.failure_path(kind));
    }

    fn set_failure(&self, kind: LwkKind, error: &str) -> Result<(), LeaseError> {
        let m = FailureMarker {
            at_ns: now_ns(),
            error: error.into(),
        };
        let data =
            serde_json::to_vec(&m).map_err(|e| self.io("encoding failure marker", e.into()))?;
        write_atomic(&self.failure_path(kind), &data)
            .map_err(|e| self.io("writing failure marker", e))
    }
}

/// What the lease directory says of an instance.
pub enum NodeRecord {
    None,
    Known(NodeState),
    /// Unreadable or corrupt: state unknown, ask the tools.
    Unknown(String),
}

fn read_node_record(dir: &Path, kind: LwkKind) -> NodeRecord {
    match read_record(&dir.join(format!("node-{}.json", kind.as_str()))) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeRecord::None,
        Err(e) => NodeRecord::Unknown(e.to_string()),
        Ok(t) => match serde_json::from_slice(&t) {
            Ok(n) => NodeRecord::Known(n),
            Err(e) => NodeRecord::Unknown(e.to_string()),
        },
    }
}

/// The instance record of `kind`, read without the lock (files are replaced by
/// rename, so a reader sees the old or the new one whole): for `doctor`.
pub fn read_node(dir: &Path, kind: LwkKind) -> Option<NodeState> {
    match read_node_record(dir, kind) {
        NodeRecord::Known(n) => Some(n),
        _ => None,
    }
}

fn failure_file(dir: &Path, kind: LwkKind) -> PathBuf {
    dir.join(format!("failed-{}.json", kind.as_str()))
}

fn read_marker(dir: &Path, kind: LwkKind) -> Option<FailureMarker> {
    let t = read_record(&failure_file(dir, kind)).ok()?;
    serde_json::from_slice(&t).ok()
}

/// The last boot failure of `kind` (Unix ns, error), read without the lock.
pub fn read_failure(dir: &Path, kind: LwkKind) -> Option<(u128, String)> {
    read_marker(dir, kind).map(|m| (m.at_ns, m.error))
}

/// Whether the process whose pid ends a temporary name (`….tmp<pid>`) still runs.
pub fn tmp_owner_alive(name: &str) -> bool {
    name.rsplit(".tmp")
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Where the lease of `key` lives under the lease dir.
fn lease_file(dir: &Path, key: &str) -> PathBuf {
    dir.join("leases").join(format!("{key}.json"))
}

pub fn read_leases(dir: &Path) -> Vec<(String, Lease)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir.join("leases")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".json") else {
            continue;
        };
        if let Some(l) = read_record(&e.path())
            .ok()
            .and_then(|t| serde_json::from_slice::<Lease>(&t).ok())
        {
            out.push((key.to_string(), l));
        }
    }
    out.sort_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(&b.0)));
    out
}

/// What a new lease records besides the decisions made here.
pub struct NewLease<'a> {
    pub id: &'a str,
    pub root: &'a Path,
    pub bundle: &'a Path,
    pub owner_pid: i32,
    /// Known at once for hooks (the container exists already).
    pub init_pid: Option<i32>,
}

/// What [`acquire`] took.
#[derive(Debug)]
pub struct Acquired {
    pub lease: Lease,
    /// Set when joining an LWK that other live containers use: see [`PendingCheck`].
    pub pending: Option<PendingCheck>,
}

impl Acquired {
    /// The lease, once the pending status check (if any) has seen RUNNING.
    pub fn confirm(self) -> Result<Lease, LeaseError> {
        if let Some(p) = self.pending {
            p.confirm()?;
        }
        Ok(self.lease)
    }
}

/// A status query of a shared LWK, still running so that it overlaps the container's
/// set-up. It must see RUNNING before the container may start.
#[derive(Debug)]
pub struct PendingCheck {
    kind: LwkKind,
    probe: Probe,
    lease_dir: PathBuf,
    lock_timeout_secs: u64,
}

impl PendingCheck {
    /// The same error as when `acquire` finds a shared LWK not running (it died under
    /// its containers). On that error every later joiner checks again at once.
    pub fn confirm(self) -> Result<(), LeaseError> {
        let status = self.probe.finish()?;
        if status.as_deref() == Some("RUNNING") {
            return Ok(());
        }
        if let Ok(t) = Table::lock_at(&self.lease_dir, self.lock_timeout_secs) {
            if let NodeRecord::Known(mut n) = t.node_record(self.kind) {
                n.checked_ns = 0;
                let _ = t.set_node(Some(&n), self.kind);
            }
        }
        Err(DriverError::NotRunning {
            kind: self.kind,
            status: status.unwrap_or_else(|| "no instance".into()),
        }
        .into())
    }
}

/// Record a lease for `n` on `kind`, bringing the LWK up first if nobody uses it.
/// On error nothing of ours is left: no lease, and no reservation if we were the booter.
///
/// When other live containers already use the LWK, its status is not awaited here: the
/// query runs on while the caller builds the container, and the caller confirms it.
/// Only the boot decision needs the status at once, and with other users there is
/// none to make (an LWK that died under its users is reported, never rebooted). Nor is
/// it queried for every joiner: at most once per `status_recheck_ms`, so 64 ranks
/// starting together cost one query; a joiner inside that window that meets a dead
/// LWK is stopped by the launcher itself (mcexec refuses an instance not RUNNING).
pub fn acquire(cfg: &Config, kind: LwkKind, n: &NewLease) -> Result<Acquired, LeaseError> {
    let key = lease_key(n.root, n.id)?;
    let queued_at = now_ns();
    let t = Table::lock(cfg)?;
    crate::failpoint::hit("lease-acquire-locked");
    let live = t.sweep()?.live;
    if let Some((_, old)) = live.iter().find(|(k, _)| *k == key) {
        // sweep() kept it, so its process lives.
        return Err(LeaseError::Duplicate {
            id: n.id.into(),
            pid: old.init_pid.unwrap_or(old.owner_pid),
        });
    }
    // Provisional: a pid-keyed LWK's launcher gets its slot when the container starts
    // (see `place_slot`); until then any number unique among the live leases will do.
    let used: BTreeSet<u32> = live.iter().map(|(_, l)| l.slot).collect();
    let slot = (0..).find(|s| !used.contains(s)).unwrap_or(u32::MAX);
    let owner_start = start_time(n.owner_pid).unwrap_or(0);
    let init_start = n.init_pid.and_then(start_time);
    let lease = Lease {
        id: n.id.into(),
        root: canonical_root(n.root),
        kernel: kind,
        owner_pid: n.owner_pid,
        owner_start,
        init_pid: init_start.and(n.init_pid),
        init_start,
        since: now_secs(),
        slot,
        bundle: n.bundle.into(),
    };
    let drv = driver::for_kind(cfg, kind);
    let mode = cfg.boot_mode(kind);
    let mut node = t.node(cfg, kind)?;
    let others = live.iter().any(|(_, l)| l.kernel == kind);
    let mut node_changed = false;
    let mut pending = None;
    let up = match node.as_mut() {
        Some(s) if s.phase == "up" && mode != BootMode::External => {
            if !others {
                // Idle (lingering): nobody watched it, so look before reusing it.
                let running = drv.is_running().unwrap_or(false);
                if running {
                    s.checked_ns = now_ns();
                }
                running
            } else {
                // Shared: a check at most every `status_recheck_ms`, overlapped with the
                // caller's set-up; in between, the launcher's own check guards start.
                let due = now_ns().saturating_sub(s.checked_ns)
                    >= u128::from(cfg.status_recheck_ms) * 1_000_000;
                if due {
                    pending = Some(PendingCheck {
                        kind,
                        probe: drv.probe()?,
                        lease_dir: cfg.lease_dir.clone(),
                        lock_timeout_secs: cfg.lock_timeout_secs,
                    });
                    s.checked_ns = now_ns();
                    node_changed = true;
                }
                true
            }
        }
        _ => false,
    };
    if mode == BootMode::External {
        // Never boot: only check that the scheduler did.
        let status = drv.status()?;
        if status.as_deref() != Some("RUNNING") {
            return Err(DriverError::ExternalNotRunning {
                kind,
                status: status.unwrap_or_else(|| "no instance".into()),
            }
            .into());
        }
    } else if !up {
        if let Some(f) = t.failure(kind) {
            if f.at_ns >= queued_at {
                return Err(LeaseError::EarlierBootFailed {
                    kind,
                    error: f.error,
                });
            }
        }
        if others {
            // Leases exist but the instance is not RUNNING (it died under them). Booting
            // over running launchers would not help them; report it.
            let status = drv
                .status()
                .ok()
                .flatten()
                .unwrap_or_else(|| "no instance".into());
            return Err(DriverError::NotRunning { kind, status }.into());
        }
        if node.is_some() {
            // A previous booter died mid-boot, or the instance died while idle: clear
            // what is left before booting afresh.
            drv.tear_down()?;
            t.set_node(None, kind)?;
        }
        // Write the lease and "booting" first: a crash during boot is then reconciled
        // (owner dead) and gc tears down whatever the boot had taken.
        t.put(&key, &lease)?;
        t.set_node(
            Some(&NodeState {
                kernel: kind,
                boot_mode: mode.as_str().into(),
                phase: "booting".into(),
                since: now_secs(),
                idle_since: None,
                checked_ns: 0,
            }),
            kind,
        )?;
        crate::failpoint::hit("lease-booting-recorded");
        if let Err(e) = drv.bring_up() {
            tracing::error!(kernel = %kind, error = %e, "LWK boot failed; tearing down");
            if let Err(td) = drv.tear_down() {
                tracing::error!(kernel = %kind, error = %td, "teardown after failed boot also failed");
            }
            let _ = t.remove(&key);
            let _ = t.set_node(None, kind);
            let _ = t.set_failure(kind, &e.to_string());
            return Err(e.into());
        }
        t.clear_failure(kind);
        t.set_node(
            Some(&NodeState {
                kernel: kind,
                boot_mode: mode.as_str().into(),
                phase: "up".into(),
                since: now_secs(),
                idle_since: None,
                checked_ns: now_ns(),
            }),
            kind,
        )?;
        crate::failpoint::hit("lease-acquire-up");
        return Ok(Acquired {
            lease,
            pending: None,
        });
    }
    if let Some(mut s) = node {
        if s.idle_since.take().is_some() || node_changed {
            t.set_node(Some(&s), kind)?;
        }
    }
    t.put(&key, &lease)?;
    Ok(Acquired { lease, pending })
}

/// Record the container's init once it exists, so the lease outlives the `create` process.
pub fn set_init(
    cfg: &Config,
    root: &Path,
    id: &str,
    pid: i32,
) -> Result<Option<Lease>, LeaseError> {
    let key = lease_key(root, id)?;
    if !lease_file(&cfg.lease_dir, &key).exists() {
        return Ok(None);
    }
    let t = Table::lock(cfg)?;
    let Some(mut l) = t.get(&key) else {
        return Ok(None);
    };
    l.init_pid = Some(pid);
    l.init_start = start_time(pid);
    t.put(&key, &l)?;
    Ok(Some(l))
}

/// Record the launcher's pid slot just before the container starts, under the lock:
/// `choose` gets the live leases of the other containers and returns the slot (or
/// None: none is free). Returns the updated lease; None when (root, id) holds none.
pub fn place_slot(
    cfg: &Config,
    root: &Path,
    id: &str,
    choose: impl FnOnce(&[Lease]) -> Option<u32>,
) -> Result<Option<Lease>, LeaseError> {
    let key = lease_key(root, id)?;
    let t = Table::lock(cfg)?;
    let Some(mut l) = t.get(&key) else {
        return Ok(None);
    };
    // Dead leases' slots count as taken too: cheaper than checking every owner here,
    // and the next acquire or gc drops them.
    let others: Vec<Lease> = read_leases(&t.dir)
        .into_iter()
        .filter(|(k, _)| *k != key)
        .map(|(_, l)| l)
        .collect();
    l.slot = choose(&others).ok_or(LeaseError::NoSlot)?;
    t.put(&key, &l)?;
    Ok(Some(l))
}

pub fn get(cfg: &Config, root: &Path, id: &str) -> Option<Lease> {
    let key = lease_key(root, id).ok()?;
    let t = read_record(&lease_file(&cfg.lease_dir, &key)).ok()?;
    serde_json::from_slice(&t).ok()
}

/// How long a release waits for a just-killed holder to be gone before keeping its
/// lease (gc drops it later).
const HOLDER_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Drop the lease of (root, id) if any, reconcile, and tear down idle LWKs.
/// Cheap (no lock) when this container holds no lease.
///
/// A lease whose holder lives is kept (Ok(false)) unless this process took it: a
/// `delete` of an id still being created, or a hook of another container that has the
/// same id, must not drop it. A holder that was just killed (delete --force) is given
/// [`HOLDER_EXIT_WAIT`] to be gone.
pub fn release(cfg: &Config, root: &Path, id: &str) -> Result<bool, LeaseError> {
    release_if(cfg, root, id, |_| true)
}

/// [`release`], dropping the lease only if `owns` says it is the caller's (hooks
/// compare the container they were called for).
pub fn release_if(
    cfg: &Config,
    root: &Path,
    id: &str,
    owns: impl Fn(&Lease) -> bool,
) -> Result<bool, LeaseError> {
    drop_lease(cfg, root, id, &owns, false)
}

/// Drop a lease the caller has just taken (a hook whose status check failed), whoever
/// the recorded holder is.
pub fn release_taken(cfg: &Config, root: &Path, id: &str) -> Result<bool, LeaseError> {
    drop_lease(cfg, root, id, &|_| true, true)
}

fn drop_lease(
    cfg: &Config,
    root: &Path,
    id: &str,
    owns: &dyn Fn(&Lease) -> bool,
    taken_by_caller: bool,
) -> Result<bool, LeaseError> {
    // An id no lease file can have (a plain container's may be longer) holds none.
    let Ok(key) = lease_key(root, id) else {
        return Ok(false);
    };
    let path = lease_file(&cfg.lease_dir, &key);
    if !path.exists() {
        return Ok(false);
    }
    let held_by_other = |l: &Lease| !taken_by_caller && l.is_alive() && !l.is_mine();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < HOLDER_EXIT_WAIT
        && read_record(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Lease>(&t).ok())
            .is_some_and(|l| held_by_other(&l))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Table::lock(cfg)?;
    crate::failpoint::hit("lease-release-locked");
    let mut dropped = false;
    if let Some(l) = t.get(&key) {
        if !owns(&l) {
            tracing::warn!(id, bundle = %l.bundle.display(), "keeping the LWK lease of another container with this id");
        } else if held_by_other(&l) {
            tracing::warn!(id, pid = l.init_pid.unwrap_or(l.owner_pid), "keeping the LWK lease of container {id}: its process is alive (still being created, or not yet stopped)");
        } else {
            dropped = t.remove(&key)?;
        }
    }
    crate::failpoint::hit("lease-release-removed");
    let live = t.sweep()?.live;
    settle(cfg, &t, &live, false)?;
    Ok(dropped)
}

/// `lwk-runc lwk gc`: reconcile and tear down whatever no live container uses.
pub fn gc(cfg: &Config) -> Result<Vec<String>, LeaseError> {
    if !cfg.lease_dir.exists() {
        return Ok(Vec::new());
    }
    let t = Table::lock(cfg)?;
    let swept = t.sweep()?;
    settle(cfg, &t, &swept.live, true)?;
    Ok(swept.dropped)
}

/// Under the lock, given the live leases from a sweep: for each kernel with no lease
/// left either tear down now (linger 0, or linger passed) or mark it idle and leave a
/// reaper behind.
fn settle(
    cfg: &Config,
    t: &Table,
    leases: &[(String, Lease)],
    from_gc: bool,
) -> Result<(), LeaseError> {
    let mut first_err = None;
    for kind in [LwkKind::McKernel, LwkKind::Mos] {
        if leases.iter().any(|(_, l)| l.kernel == kind) {
            continue;
        }
        let mut node = match t.node(cfg, kind) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        let linger = cfg.linger_secs(kind);
        let now = now_secs();
        let idle_since = *node.idle_since.get_or_insert(now);
        let due = node.phase != "up" || linger == 0 || now.saturating_sub(idle_since) >= linger;
        if !due {
            t.set_node(Some(&node), kind)?;
            if !from_gc {
                spawn_reaper(linger);
            }
            continue;
        }
        if node.boot_mode == BootMode::External.as_str() {
            t.set_node(None, kind)?;
            continue;
        }
        match driver::for_kind(cfg, kind).tear_down() {
            Ok(()) => {
                crate::failpoint::hit("teardown-done");
                t.set_node(None, kind)?
            }
            Err(e) => {
                tracing::error!(kernel = %kind, error = %e, "LWK teardown failed; `lwk-runc lwk gc` retries");
                first_err.get_or_insert(LeaseError::Driver(e));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Linger > 0: a detached `lwk-runc lwk-reap <secs>` sleeps, then runs gc, which tears
/// down only if the LWK is still idle. Best effort: the next acquire/release/gc also does it.
fn spawn_reaper(linger: u64) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut c = Command::new("/proc/self/exe");
    c.arg("lwk-reap")
        .arg(linger.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; detaches the reaper from the caller's session.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if let Err(e) = c.spawn() {
        tracing::warn!(error = %e, "could not start the linger reaper; `lwk-runc lwk gc` will tear down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &Path) -> Config {
        Config {
            lease_dir: dir.into(),
            ..Default::default()
        }
    }

    #[test]
    fn alive_needs_the_same_start_time() {
        let me = std::process::id() as i32;
        let s = start_time(me).unwrap();
        assert!(alive(me, s));
        assert!(!alive(me, s + 1));
        assert!(!alive(0, s));
    }

    #[test]
    fn keys_reject_path_ids_and_separate_roots() {
        assert!(lease_key(Path::new("/r"), "../x").is_err());
        assert!(lease_key(Path::new("/r"), ".x").is_err());
        assert_ne!(
            lease_key(Path::new("/a"), "c").unwrap(),
            lease_key(Path::new("/b"), "c").unwrap()
        );
    }

    #[test]
    fn long_ids_are_refused_with_the_limit_and_the_longest_fits_a_file_name() {
        let e = lease_key(Path::new("/r"), &"x".repeat(241))
            .unwrap_err()
            .to_string();
        assert!(e.contains("241 bytes") && e.contains("at most 200"), "{e}");
        let key = lease_key(Path::new("/r"), &"x".repeat(MAX_ID_LEN)).unwrap();
        let dir = std::env::temp_dir().join(format!("lwk-longid-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let t = Table::lock(&at(&dir)).unwrap();
        let mut l = Lease {
            id: "x".repeat(MAX_ID_LEN),
            root: "/r".into(),
            kernel: LwkKind::McKernel,
            owner_pid: std::process::id() as i32,
            owner_start: 0,
            init_pid: None,
            init_start: None,
            since: 1,
            slot: 0,
            bundle: "/b".into(),
        };
        l.owner_start = start_time(l.owner_pid).unwrap();
        t.put(&key, &l).unwrap();
        assert_eq!(t.get(&key), Some(l));
        drop(t);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_lease_table_is_root_only_and_an_open_one_is_refused_not_repaired() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lwk-perm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let t = Table::lock(&at(&dir)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("leases")), 0o700);
        assert_eq!(mode(&dir.join("lock")), 0o600);
        drop(t);
        // One someone opened up: refused, and left as it is. (Another path: a process
        // checks a directory once, since only root can change it afterwards.)
        let open = dir.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Table::lock(&at(&open)).err().unwrap().to_string();
        assert!(
            e.contains(&open.display().to_string()) && e.contains("writable by group or others"),
            "{e}"
        );
        assert_eq!(mode(&open), 0o777);
        // A lock file others may open is a lock they may hold: root's own (left by an
        // older lwk-runc) is restricted; anyone else's is refused.
        fs::set_permissions(dir.join("lock"), fs::Permissions::from_mode(0o644)).unwrap();
        drop(Table::lock(&at(&dir)).unwrap());
        assert_eq!(mode(&dir.join("lock")), 0o600);
        if trust::is_root() {
            std::os::unix::fs::chown(dir.join("lock"), Some(65534), None).unwrap();
            let e = Table::lock(&at(&dir)).err().unwrap().to_string();
            assert!(
                e.contains("lock") && e.contains("owned by uid 65534"),
                "{e}"
            );
        }
        fs::remove_file(dir.join("lock")).unwrap();
        // A planted symlink is not followed.
        let target = dir.join("target");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("lock")).unwrap();
        assert!(Table::lock(&at(&dir)).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lease_of_a_live_process_is_dropped_only_by_it_and_roots_are_canonical() {
        let dir = std::env::temp_dir().join(format!("lwk-owner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cfg = at(&dir);
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = other.id() as i32;
        let lease = |owner: i32| Lease {
            id: "c".into(),
            root: "/r".into(),
            kernel: LwkKind::McKernel,
            owner_pid: owner,
            owner_start: start_time(owner).unwrap(),
            init_pid: None,
            init_start: None,
            since: 1,
            slot: 0,
            bundle: "/b".into(),
        };
        let key = lease_key(Path::new("/r"), "c").unwrap();
        assert_eq!(key, lease_key(Path::new("/r/"), "c").unwrap());
        assert_eq!(key, lease_key(Path::new("/r/./"), "c").unwrap());
        Table::lock(&cfg).unwrap().put(&key, &lease(pid)).unwrap();
        // Another process's create is still running: kept.
        assert!(!release(&cfg, Path::new("/r/"), "c").unwrap());
        assert!(read_leases(&dir).len() == 1);
        // Nor does a hook called for another bundle.
        assert!(!release_if(&cfg, Path::new("/r"), "c", |l| l.bundle == Path::new("/x")).unwrap());
        other.kill().unwrap();
        other.wait().unwrap();
        // Its owner gone: dropped.
        assert!(release(&cfg, Path::new("/r"), "c").unwrap());
        // This process's own lease: dropped although its owner (we) lives.
        Table::lock(&cfg)
            .unwrap()
            .put(&key, &lease(std::process::id() as i32))
            .unwrap();
        assert!(release(&cfg, Path::new("/r"), "c").unwrap());
        assert!(read_leases(&dir).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn sweep_drops_dead_and_torn_and_keeps_live() {
        let dir = std::env::temp_dir().join(format!("lwk-lease-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let t = Table::lock(&at(&dir)).unwrap();
        let me = std::process::id() as i32;
        let mut l = Lease {
            id: "live".into(),
            root: "/r".into(),
            kernel: LwkKind::McKernel,
            owner_pid: me,
            owner_start: start_time(me).unwrap(),
            init_pid: None,
            init_start: None,
            since: 1,
            slot: 0,
            bundle: "/b".into(),
        };
        t.put("live.1", &l).unwrap();
        l.id = "dead".into();
        l.owner_start += 1; // same pid, other start time: a recycled pid
        t.put("dead.1", &l).unwrap();
        fs::write(dir.join("leases/torn.json"), b"{").unwrap();
        // Whole temporary files: one whose writer was killed before its rename (a pid
        // that is not running), and one still being written (ours).
        let whole = serde_json::to_vec(&l).unwrap();
        fs::write(dir.join("leases/killed.1.tmp2147483647"), &whole).unwrap();
        fs::write(dir.join(format!("leases/live.1.tmp{me}")), &whole).unwrap();
        let Swept { live, dropped } = t.sweep().unwrap();
        assert_eq!(dropped, vec!["dead".to_string()]);
        let ids = |v: Vec<(String, Lease)>| v.into_iter().map(|(_, l)| l.id).collect::<Vec<_>>();
        assert_eq!(ids(live), vec!["live".to_string()]);
        assert_eq!(ids(read_leases(&dir)), vec!["live".to_string()]);
        assert!(!dir.join("leases/torn.json").exists());
        assert!(!dir.join("leases/killed.1.tmp2147483647").exists());
        assert!(dir.join(format!("leases/live.1.tmp{me}")).exists());
        drop(t);
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Lease + driver lifecycle against the simulator (skipped where it is not installed).
/// One test function: it sets LWK_SIM_ROOT for the whole process.
#[cfg(test)]
mod sim_tests {
    use super::*;
    use std::process::Command;

    const BIN: &str = "/opt/lwk-sim/bin";

    fn sim_cfg(root: &Path, lease_dir: &Path) -> Config {
        let mut c = Config {
            lease_dir: lease_dir.into(),
            ..Default::default()
        };
        let m = &mut c.mckernel;
        m.enabled = true;
        m.ihkconfig = format!("{BIN}/ihkconfig").into();
        m.ihkosctl = format!("{BIN}/ihkosctl").into();
        m.mcexec = format!("{BIN}/mcexec").into();
        m.dev_dir = root.join("dev");
        m.cpus = "1".into();
        m.memory = "64M@0".into();
        m.image = "/opt/lwk-sim/smp-x86/kernel/mckernel.img".into();
        m.boot_timeout_secs = 10;
        c
    }

    fn calls(root: &Path, what: &str) -> usize {
        fs::read_to_string(root.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    fn reserved(root: &Path) -> String {
        let q = |w: &str| {
            let o = Command::new(format!("{BIN}/ihkconfig"))
                .args(["0", "query", w])
                .env("LWK_SIM_ROOT", root)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        format!("{}{}", q("cpu"), q("mem"))
    }

    #[test]
    fn boot_once_teardown_last_and_panic_leaves_nothing() {
        if !Path::new(BIN).join("lwk-sim").exists() {
            eprintln!("lwk-sim not installed; skipping");
            return;
        }
        let _g = crate::lwk::SIM_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let base = std::env::temp_dir().join(format!("lwk-simtest-{}", std::process::id()));
        let root = base.join("sim");
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&root).unwrap();
        std::env::set_var("LWK_SIM_ROOT", &root);
        assert!(Command::new(format!("{BIN}/lwk-sim"))
            .arg("modprobe")
            .status()
            .unwrap()
            .success());
        let cfg = sim_cfg(&root, &base.join("leases"));
        let me = std::process::id() as i32;
        let nl = |id: &'static str| NewLease {
            id,
            root: Path::new("/r"),
            bundle: Path::new("/b"),
            owner_pid: me,
            init_pid: None,
        };

        let a = acquire(&cfg, LwkKind::McKernel, &nl("a")).unwrap();
        assert!(a.pending.is_none(), "the booter saw RUNNING itself");
        let a = a.confirm().unwrap();
        let b = acquire(&cfg, LwkKind::McKernel, &nl("b")).unwrap();
        assert!(
            b.pending.is_none(),
            "joining right after the boot needs no status query"
        );
        let b = b.confirm().unwrap();
        assert_ne!(a.slot, b.slot);
        assert!(matches!(
            acquire(&cfg, LwkKind::McKernel, &nl("a")),
            Err(LeaseError::Duplicate { .. })
        ));
        assert_eq!(calls(&root, "\t0 boot\t"), 1);
        release(&cfg, Path::new("/r"), "a").unwrap();
        assert_eq!(calls(&root, "destroy"), 0);
        release(&cfg, Path::new("/r"), "b").unwrap();
        assert_eq!(calls(&root, "destroy"), 1);
        assert_eq!(reserved(&root), "");

        // A lease whose owner died (kill -9 mid-create): gc tears the LWK down.
        let mut dead = nl("dead");
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        acquire(&cfg, LwkKind::McKernel, &nl("live")).unwrap();
        dead.owner_pid = me;
        let l = acquire(&cfg, LwkKind::McKernel, &dead)
            .unwrap()
            .confirm()
            .unwrap();
        let t = Table::lock(&cfg).unwrap();
        let mut l2 = l.clone();
        l2.owner_pid = pid;
        t.put(&lease_key(Path::new("/r"), "dead").unwrap(), &l2)
            .unwrap();
        drop(t);
        release(&cfg, Path::new("/r"), "live").unwrap();
        assert_eq!(
            reserved(&root),
            "",
            "release reconciled the dead lease and tore down"
        );
        assert!(read_leases(&cfg.lease_dir).is_empty());

        // PANIC at boot: error names the LWK, the status and the kmsg; nothing reserved.
        fs::write(root.join("faults"), "boot_panic once\n").unwrap();
        let e = acquire(&cfg, LwkKind::McKernel, &nl("p"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("McKernel") && e.contains("PANIC") && e.contains("kmsg"),
            "{e}"
        );
        assert_eq!(reserved(&root), "");
        assert!(read_leases(&cfg.lease_dir).is_empty());
        assert!(!cfg.lease_dir.join("node-mckernel.json").exists());
        // The next container (not queued behind the failure) boots afresh.
        acquire(&cfg, LwkKind::McKernel, &nl("q")).unwrap();
        release(&cfg, Path::new("/r"), "q").unwrap();
        assert_eq!(reserved(&root), "");

        // The LWK dies under its users: a container joining it learns so when the status
        // check it overlapped with its set-up comes back, and the last user tears down.
        acquire(&cfg, LwkKind::McKernel, &nl("u1"))
            .unwrap()
            .confirm()
            .unwrap();
        assert!(Command::new(format!("{BIN}/ihkconfig"))
            .args(["0", "destroy", "0"])
            .status()
            .unwrap()
            .success());
        // Inside the recheck window a joiner is not queried (its launcher's own check
        // stops it); with the window at 0 it is, and so is every joiner after a failure.
        assert!(acquire(&cfg, LwkKind::McKernel, &nl("u2"))
            .unwrap()
            .pending
            .is_none());
        release(&cfg, Path::new("/r"), "u2").unwrap();
        let mut every = cfg.clone();
        every.status_recheck_ms = 0;
        for (cfg, id) in [(&every, "u3"), (&cfg, "u4")] {
            let joined = acquire(cfg, LwkKind::McKernel, &nl(id)).unwrap();
            assert!(joined.pending.is_some(), "{id} checks the LWK");
            let e = joined.confirm().unwrap_err().to_string();
            assert!(
                e.contains("McKernel is in use by other containers but not RUNNING")
                    && e.contains("no instance"),
                "{e}"
            );
            release(cfg, Path::new("/r"), id).unwrap();
        }
        release(&cfg, Path::new("/r"), "u1").unwrap();
        assert_eq!(reserved(&root), "");
        assert!(read_leases(&cfg.lease_dir).is_empty());
        let _ = fs::remove_dir_all(&base);
    }
}
