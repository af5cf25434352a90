//! `lwk-runc conexec`: one process per MPI rank, started by `mpirun`, `mpiexec` or
//! `srun` where the rank itself would be. The ranks of a job on a node share one
//! container and, through it, one LWK lease.
//!
//! Joining is a lock plus a connect, never a poll: under the job's lock, a rank
//! connects to the job's rank server; when nobody answers it is the first (whatever
//! its local rank), and it creates the container, whose init starts the rank server
//! (server.rs) on the socket this rank bound. Every rank then hands the server its
//! stdio, argv, cwd, environment, ids and umask; the server forks the rank's launcher
//! as its own child, so `mcexec -n` groups a node's ranks by their common parent as on
//! bare metal. This process forwards the signals it gets, and exits as its rank did.
//! The creating rank also leaves a small watcher (`conexec-reap`) outside the launcher's
//! process group, which deletes the container (and so drops the lease) once the server
//! has ended; `lwk-runc lwk gc` collects what a killed watcher leaves.

mod image;
pub mod proto;
pub mod server;
pub mod spec;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::ConexecArgs;
use crate::commands::Ctx;
use proto::{Control, Launch, Lines, Reply};

/// How the job is known on this node, and where its files live.
pub struct Job {
    /// The job identity, as the launcher gave it (or --job).
    pub name: String,
    /// The container's id: `conexec-` and a digest of the name.
    pub id: String,
    pub dir: PathBuf,
}

/// What `lwk status` and people reading the state root see of a job.
#[derive(Serialize, Deserialize, Debug)]
pub struct JobRecord {
    pub job: String,
    pub container: String,
    pub ppn: u32,
    pub kernel: String,
}

const DIR: &str = "conexec";

impl Job {
    pub fn new(root: &Path, name: &str) -> Job {
        let id = format!("conexec-{:016x}", fnv1a(name.as_bytes()));
        let dir = root.join(DIR).join(&id);
        Job {
            name: name.into(),
            id,
            dir,
        }
    }
    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }
    fn reap_lock_path(&self) -> PathBuf {
        self.dir.join("reap.lock")
    }
    fn sock_path(&self) -> PathBuf {
        self.dir.join("rank.sock")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x100000001b3)
    })
}

fn env_of<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The launcher's job identity: Slurm's job.step, Open MPI's PMIx namespace, else (Hydra
/// sets none) the process every local rank shares as parent, by pid and start time.
pub fn job_name(explicit: Option<&str>, env: &[(String, String)], ppid: i32) -> String {
    if let Some(j) = explicit {
        return j.to_string();
    }
    if let Some(j) = env_of(env, "SLURM_JOB_ID") {
        return format!("slurm-{j}.{}", env_of(env, "SLURM_STEP_ID").unwrap_or("0"));
    }
    if let Some(ns) = env_of(env, "PMIX_NAMESPACE").or(env_of(env, "OMPI_MCA_ess_base_jobid")) {
        return format!("pmix-{ns}");
    }
    if let Some(j) = env_of(env, "PMI_JOBID") {
        return format!("pmi-{j}");
    }
    let start = crate::host::start_time(ppid).unwrap_or(0);
    format!("parent-{ppid}-{start}")
}

/// Ranks per node: --ppn, else what the launcher says of this node. Under srun that is
/// the step's own count for this node (`SLURM_STEP_TASKS_PER_NODE`, indexed by the
/// step-relative `SLURM_NODEID`), never the job's `SLURM_NTASKS_PER_NODE`: a step of a
/// `--ntasks-per-node=2` allocation may well put one task on a node.
pub fn ppn_of(explicit: Option<u32>, env: &[(String, String)]) -> u32 {
    if let Some(n) = explicit {
        return n;
    }
    for k in [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "PMI_LOCAL_SIZE",
    ] {
        if let Some(n) = env_of(env, k).and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    if let Some(list) = env_of(env, "SLURM_STEP_TASKS_PER_NODE") {
        let node: usize = env_of(env, "SLURM_NODEID")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Some(n) = slurm_tasks_on(list, node) {
            return n;
        }
    }
    0
}

/// Slurm's compressed tasks-per-node list, e.g. `2(x3),1`: the count on node `node`.
pub fn slurm_tasks_on(list: &str, node: usize) -> Option<u32> {
    let mut at = 0usize;
    for part in list.split(',') {
        let (n, reps) = match part.split_once("(x") {
            Some((n, r)) => (n, r.trim_end_matches(')').parse().ok()?),
            None => (part, 1usize),
        };
        let n: u32 = n.parse().ok()?;
        if node < at + reps {
            return Some(n);
        }
        at += reps;
    }
    None
}

/// The SIGKILL-proof half of signal forwarding: signals land here and the main loop
/// sends them on.
static SIG_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIG_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Signals a launcher may send a rank, forwarded to it; SIGKILL cannot be, and the
/// server kills a rank whose client is gone instead.
fn forwarded(sig: libc::c_int) -> bool {
    !matches!(
        sig,
        libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD | libc::SIGPIPE | libc::SIGTSTP
    ) && !(libc::SIGTTIN..=libc::SIGTTOU).contains(&sig)
        && sig < 32
}

fn install_forwarding() -> io::Result<OwnedFd> {
    let mut p = [0; 2];
    // SAFETY: pipe2 fills the array; handlers only write a byte.
    unsafe {
        if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
        SIG_PIPE.store(p[1], Ordering::Relaxed);
        set_forwarding(on_signal as extern "C" fn(libc::c_int) as usize);
        Ok(OwnedFd::from_raw_fd(p[0]))
    }
}

/// The action of every forwarded signal: our handler, or SIG_DFL.
fn set_forwarding(action: libc::sighandler_t) {
    for sig in 1..32 {
        if forwarded(sig) {
            // SAFETY: sigaction with a zeroed, filled-in struct.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = action;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }
}

/// Run `f` with the signals' default actions: a rank still fetching its job's image has
/// nothing to forward to, and the launcher's SIGTERM must end it.
fn with_default_signals<T>(f: impl FnOnce() -> T) -> T {
    set_forwarding(libc::SIG_DFL);
    let r = f();
    set_forwarding(on_signal as extern "C" fn(libc::c_int) as usize);
    r
}

/// `lwk-runc conexec`: returns the exit code, or does not return (dies of the rank's
/// signal).
pub fn run(ctx: &Ctx, a: &ConexecArgs) -> Result<i32> {
    if !crate::trust::is_root() {
        // The job's container shares the host's network, IPC and /dev/shm with the MPI
        // runtime and has no user namespace, which only root may make; said here, before
        // anything is created, rather than as libcontainer's cgroup EACCES later.
        anyhow::bail!(
            "lwk-runc conexec runs as uid {}, but a job's container can only be made by root \
             (it has no user namespace: the ranks share the host's network, IPC and /dev/shm \
             with the MPI runtime); start the ranks as root (e.g. `mpirun --allow-run-as-root`, \
             or an srun step run by root)",
            nix::unistd::geteuid()
        );
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    // SAFETY: getppid never fails.
    let ppid = unsafe { libc::getppid() };
    let job = Job::new(&ctx.root, &job_name(a.job.as_deref(), &env, ppid));
    let ppn = ppn_of(a.ppn, &env);
    let launch = own_launch(&a.command, a.image.is_some())?;
    let mut extra_fds = Vec::new();
    if let Some(n) = env_of(&env, "PMI_FD").and_then(|v| v.parse::<RawFd>().ok()) {
        // SAFETY: fcntl only asks whether the descriptor is open.
        if n > 2 && unsafe { libc::fcntl(n, libc::F_GETFD) } >= 0 {
            extra_fds.push(n);
        }
    }
    let launch = Launch {
        extra_fds: extra_fds.clone(),
        ..launch
    };
    let sigs = install_forwarding().context("installing signal forwarding")?;
    let mut fds = vec![0, 1, 2];
    fds.extend(extra_fds);
    // A server can close between our connect and its accept when it has just decided
    // to end (its last rank left); then the next try makes a new container.
    for attempt in 1..=3 {
        let (sock, lock) = join(ctx, a, &job, ppn, &launch, &env)?;
        let launch = image::launch(a, &job, &launch)?;
        let _ = proto::send_launch(&sock, &launch, &fds);
        let mut lines = Lines::default();
        match first_reply_of(&sock, &mut lines) {
            Some(Reply::Started { pid }) => {
                drop(lock);
                tracing::debug!(pid, job = %job.name, "rank started in the job container");
                return wait_rank(&sock, lines, &sigs, &job);
            }
            Some(Reply::Error { message }) => bail!(
                "the rank server of job {} (container {}) could not start this rank: {message}",
                job.name,
                job.id
            ),
            Some(other) => bail!(
                "the rank server of job {} answered {other:?} before starting the rank",
                job.name
            ),
            None => tracing::debug!(attempt, "the job's rank server closed while we joined"),
        }
    }
    bail!(
        "job {}: the rank server of container {} kept closing while this rank joined; \
         see its log {}",
        job.name,
        job.id,
        job.dir.join("server.log").display()
    )
}

/// The server's answer to a launch request, None if it closed first.
fn first_reply_of(sock: &UnixStream, lines: &mut Lines) -> Option<Reply> {
    loop {
        if let Some(m) = lines.next::<Reply>() {
            return m.ok();
        }
        match lines.fill(sock) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// This rank as it was started; with an image, an empty command means the image's own.
fn own_launch(command: &[String], image: bool) -> Result<Launch> {
    if command.is_empty() && !image {
        bail!("conexec needs a command to run for the rank: lwk-runc conexec [OPTIONS] -- CMD [ARGS...]");
    }
    let cwd = std::env::current_dir().context("reading the rank's working directory")?;
    // SAFETY: umask(2) cannot fail; set it back at once.
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    Ok(Launch {
        argv: command.to_vec(),
        env: std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect(),
        cwd: cwd.to_string_lossy().into_owned(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default(),
        umask: umask as u32,
        extra_fds: vec![],
    })
}

/// An exclusive flock on the job's lock file, released on drop.
struct JobLock(#[allow(dead_code)] File);

impl JobLock {
    /// Wait (blocked in flock, not polling) for the job's lock. The job directory may
    /// be removed by the job's reaper meanwhile; a lock taken on a file that is no
    /// longer at the lock's path is dropped and taken again on the new one.
    fn take(job: &Job, timeout: Duration) -> Result<JobLock> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            fs::create_dir_all(&job.dir)
                .with_context(|| format!("creating the job directory {}", job.dir.display()))?;
            let _ = fs::set_permissions(&job.dir, fs::Permissions::from_mode(0o700));
            let f = crate::host::open_lock(&job.lock_path())
                .with_context(|| format!("opening the job lock {}", job.lock_path().display()))?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !flock_within(&f, left)? {
                bail!(
                    "job {}: the job lock {} is held for more than {} s by {}; \
                     a rank may be stuck creating the job container (see `lwk-runc lwk status`)",
                    job.name,
                    job.lock_path().display(),
                    timeout.as_secs(),
                    crate::flock::holder(&f)
                );
            }
            let held = f.metadata().map(|m| (m.dev(), m.ino())).ok();
            let now = fs::symlink_metadata(job.lock_path())
                .map(|m| (m.dev(), m.ino()))
                .ok();
            if held.is_some() && held == now {
                return Ok(JobLock(f));
            }
        }
    }
}

/// A blocking exclusive flock, given up after `timeout` (see crate::flock).
fn flock_within(f: &File, timeout: Duration) -> Result<bool> {
    crate::flock::lock_within(f, timeout).context("locking the job lock")
}

/// Connect to the job's rank server, creating the job's container first when none
/// answers. Returns with the connection made and the lock released.
fn join(
    ctx: &Ctx,
    a: &ConexecArgs,
    job: &Job,
    ppn: u32,
    launch: &Launch,
    env: &[(String, String)],
) -> Result<(UnixStream, JobLock)> {
    let lock_timeout = Duration::from_secs(a.lock_timeout_secs);
    let (lock, ready) = loop {
        let lock = JobLock::take(job, lock_timeout)?;
        if let Ok(s) = UnixStream::connect(job.sock_path()) {
            tracing::debug!(job = %job.name, id = %job.id, "joining the job's container");
            return Ok((s, lock));
        }
        // An image the node lacks is fetched without the job's lock: the job's other
        // ranks wait on the image's own lock, however long the pull takes.
        // A job the image fails leaves no directory behind (a rank waiting for the lock
        // notices and makes it again).
        let forget = |job: &Job| {
            if !ctx.container_dir(&job.id).exists() && UnixStream::connect(job.sock_path()).is_err()
            {
                let _ = fs::remove_dir_all(&job.dir);
            }
        };
        match image::acquire(a, job).inspect_err(|_| forget(job))? {
            None => break (lock, None),
            Some(crate::image::Acquired::Ready(r)) => break (lock, Some(*r)),
            Some(crate::image::Acquired::Pending(work)) => {
                drop(lock);
                if let Err(e) = with_default_signals(|| work.finish(&crate::image::Ui::new())) {
                    let _lock = JobLock::take(job, lock_timeout)?;
                    forget(job);
                    return Err(e.context(format!("getting the image of job {}", job.name)));
                }
            }
        }
    };
    // Nobody answers: a container that is still there is on its way out.
    let cdir = ctx.container_dir(&job.id);
    if cdir.exists() {
        tracing::debug!(id = %job.id, "removing the job's previous container");
        crate::commands::delete_container(ctx, &job.id, true).with_context(|| {
            format!(
                "removing the ended container {} of job {}",
                job.id, job.name
            )
        })?;
    }
    let _ = fs::remove_file(job.sock_path());
    let listener = UnixListener::bind(job.sock_path())
        .with_context(|| format!("binding the rank socket {}", job.sock_path().display()))?;
    let created = (|| {
        let rootfs = ready.map(|r| image::mount(r, job)).transpose()?;
        let launch = image::launch(a, job, launch)?;
        let kind = spec::write_bundle(a, job, ppn, &launch, env, rootfs.as_deref())?;
        let server = crate::lwk::ConexecServer {
            ppn,
            join_timeout_ms: a.join_timeout_secs * 1000,
        };
        // create may leave this process in a mount namespace of its own (the spec
        // overlay); the watcher must live in the host's, to remove the job's files.
        let host_mnt = File::open("/proc/self/ns/mnt").context("opening /proc/self/ns/mnt")?;
        create_and_start(ctx, job, &listener, &server)?;
        let rec = JobRecord {
            job: job.name.clone(),
            container: job.id.clone(),
            ppn,
            kernel: kind,
        };
        let _ = fs::write(job.dir.join("job.json"), serde_json::to_vec(&rec)?);
        spawn_watcher(ctx, job, &host_mnt);
        Ok::<_, anyhow::Error>(())
    })();
    if let Err(e) = created {
        let _ = fs::remove_file(job.sock_path());
        if cdir.exists() {
            let _ = crate::commands::delete_container(ctx, &job.id, true);
        }
        image::release(&job.dir);
        return Err(e.context(format!(
            "creating the container of job {} on this node",
            job.name
        )));
    }
    drop(listener);
    let s = UnixStream::connect(job.sock_path()).with_context(|| {
        format!(
            "connecting to the rank server of job {} at {}",
            job.name,
            job.sock_path().display()
        )
    })?;
    Ok((s, lock))
}

/// Create and start the job's container with the listener as its fd 3 and with
/// stdio of its own (the creating rank's stdout must reach EOF when that rank ends,
/// not when the job does).
fn create_and_start(
    ctx: &Ctx,
    job: &Job,
    listener: &UnixListener,
    server: &crate::lwk::ConexecServer,
) -> Result<()> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(job.dir.join("server.log"))
        .context("opening the rank server's log")?;
    let null = File::open("/dev/null").context("opening /dev/null")?;
    let saved = Redirect::new(&[
        (0, null.as_raw_fd()),
        (1, null.as_raw_fd()),
        (2, log.as_raw_fd()),
        (3, listener.as_raw_fd()),
    ])?;
    let opts = crate::cli::CreateOpts {
        bundle: job.bundle(),
        console_socket: None,
        pidfd_socket: None,
        pid_file: None,
        no_pivot: false,
        no_new_keyring: false,
        preserve_fds: 1,
        container_id: job.id.clone(),
    };
    let res = crate::commands::create_container(ctx, &opts, server)
        .and_then(|mut c| crate::commands::start_container(ctx, &mut c));
    drop(saved);
    res
}

/// dup2s that are undone on drop.
struct Redirect {
    saved: Vec<(RawFd, RawFd)>,
}

impl Redirect {
    fn new(moves: &[(RawFd, RawFd)]) -> Result<Redirect> {
        let mut r = Redirect { saved: Vec::new() };
        for &(to, from) in moves {
            // SAFETY: plain descriptor juggling on our own table.
            unsafe {
                let keep = libc::fcntl(to, libc::F_DUPFD_CLOEXEC, 64);
                if libc::dup2(from, to) < 0 {
                    bail!("redirecting fd {to}: {}", io::Error::last_os_error());
                }
                r.saved.push((to, keep));
            }
        }
        Ok(r)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        for &(to, keep) in self.saved.iter().rev() {
            // SAFETY: restoring what `new` saved.
            unsafe {
                if keep >= 0 {
                    libc::dup2(keep, to);
                    libc::close(keep);
                } else {
                    libc::close(to);
                }
            }
        }
    }
}

/// The watcher: deletes the job's container once its init has gone. Detached from
/// the rank (own session, no stdio, out of the caller's cgroups: see watcher.rs), so a
/// launcher that kills the rank's process group, or a scheduler that kills the step's
/// cgroup, does not kill it, and nobody waits for its output.
///
/// The watcher holds an flock on the job's `reap.lock` from before it starts (taken
/// here, inherited) until it has finished, so the job's last client can wait for the
/// deletion by blocking on that lock.
fn spawn_watcher(ctx: &Ctx, job: &Job, host_mnt: &File) {
    let held = crate::host::open_lock(&job.reap_lock_path())
        .ok()
        .filter(|f| {
            // SAFETY: flock on a descriptor we own.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        });
    // The locked descriptor is kept across exec: the watcher holds the lock.
    let keep: Vec<RawFd> = held.iter().map(|f| f.as_raw_fd()).collect();
    if let Err(e) = crate::watcher::spawn(&ctx.root, &["conexec-reap", &job.id], host_mnt, &keep) {
        tracing::warn!(
            "starting the watcher of container {}: {e}; `lwk-runc lwk gc` will delete it",
            job.id
        );
    }
}

/// `conexec-reap ID`: wait for the job container's init to end, then delete it.
pub fn reap(ctx: &Ctx, id: &str) -> Result<()> {
    crate::commands::validate_id(id)?;
    crate::watcher::leave_callers_cgroups();
    // None: the container has stopped already (its ranks were done before this
    // watcher was up), or it is gone.
    let watched = crate::commands::container_pid(ctx, id);
    if watched.is_none() && !ctx.container_dir(id).exists() {
        return Ok(());
    }
    if let Some(pid) = watched {
        wait_for_exit(pid);
    }
    let job_dir = ctx.root.join(DIR).join(id);
    let job = Job {
        name: String::new(),
        id: id.into(),
        dir: job_dir.clone(),
    };
    let _lock = JobLock::take(&job, Duration::from_secs(60))?;
    // The init we watched is gone; a container of the same id with another init is a
    // new one, made meanwhile by a later rank.
    let now = crate::commands::container_pid(ctx, id);
    if now.is_none() || now == watched {
        crate::commands::delete_container(ctx, id, true)?;
        // Under the lock no rank is creating a new container here, so the job's
        // directory goes with it; a late rank makes a fresh one.
        if UnixStream::connect(job.sock_path()).is_err() {
            image::release(&job_dir);
            let _ = fs::remove_dir_all(&job_dir);
        }
    }
    Ok(())
}

/// Block until `pid` has ended.
fn wait_for_exit(pid: i32) {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if fd >= 0 {
        crate::watcher::wait_pidfd(fd);
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    } else {
        while crate::host::start_time(pid).is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Collect job containers whose init is gone (a watcher that was killed), for gc.
pub fn gc(ctx: &Ctx) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(rd) = fs::read_dir(ctx.root.join(DIR)) else {
        return done;
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if crate::commands::validate_id(&id).is_err() {
            continue;
        }
        let alive = crate::commands::container_pid(ctx, &id)
            .is_some_and(|p| crate::host::start_time(p).is_some());
        if !alive
            && ctx.container_dir(&id).exists()
            && crate::commands::delete_container(ctx, &id, true).is_ok()
        {
            done.push(id.clone());
        }
        if !alive && !ctx.container_dir(&id).exists() {
            image::release(&e.path());
            let _ = fs::remove_dir_all(e.path());
        }
    }
    done
}

/// Relay signals to the rank until it ends; then exit as it did.
fn wait_rank(sock: &UnixStream, mut lines: Lines, sigs: &OwnedFd, job: &Job) -> Result<i32> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigs.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two pollfds we own.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            let mut b = [0u8; 64];
            // SAFETY: reading the self-pipe.
            let n = unsafe { libc::read(sigs.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
            for &s in &b[..n.max(0) as usize] {
                let _ = proto::send(sock, &Control::Signal { signal: s as i32 });
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let open = lines.fill(sock).unwrap_or(false);
        while let Some(m) = lines.next::<Reply>() {
            match m.context("reading the rank server's answer")? {
                Reply::Started { .. } => {}
                Reply::Exited { code, last } => {
                    if last {
                        await_teardown(job);
                    }
                    return Ok(code);
                }
                Reply::Signaled { signal, last } => {
                    if last {
                        await_teardown(job);
                    }
                    die_of(signal)
                }
                Reply::Error { message } => {
                    bail!(
                        "the rank server of job {} could not start this rank: {message}",
                        job.name
                    )
                }
            }
        }
        if !open {
            // Read now: the job's reaper removes the directory once the container is gone.
            let log = fs::read_to_string(job.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let said = if tail.is_empty() {
                String::new()
            } else {
                let t: Vec<&str> = tail.into_iter().rev().collect();
                format!("; its init said: {}", t.join(" | "))
            };
            bail!(
                "the job container {} ({}) ended while this rank was running, so the rank is \
                 lost: the container's init was killed or the LWK failed{said}; \
                 `lwk-runc lwk status` shows the node",
                job.id,
                job.name,
            );
        }
    }
}

/// The job's last rank: wait until its watcher has deleted the container and dropped
/// the lease, so that when `mpirun` returns the node is as before the job. A watcher
/// that is gone (or never started) leaves its work to `lwk-runc lwk gc`.
fn await_teardown(job: &Job) {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(job.reap_lock_path())
    else {
        return; // already deleted with the job's directory
    };
    let limit = Duration::from_secs(120);
    match flock_within(&f, limit) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the watcher of job container {} did not finish its deletion within {} s;              `lwk-runc lwk status` shows what remains",
            job.id,
            limit.as_secs()
        ),
        Err(e) => tracing::debug!("waiting for the job's deletion: {e:#}"),
    }
}

/// Die of the rank's signal, so the launcher sees what it would see of a native rank.
fn die_of(sig: i32) -> ! {
    // SAFETY: restore the default action, unblock, raise; exit if it did not kill us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_job_is_known_by_the_launchers_own_identity() {
        assert_eq!(
            job_name(Some("j1"), &env(&[("SLURM_JOB_ID", "5")]), 1),
            "j1"
        );
        assert_eq!(
            job_name(
                None,
                &env(&[("SLURM_JOB_ID", "5"), ("SLURM_STEP_ID", "2")]),
                1
            ),
            "slurm-5.2"
        );
        assert_eq!(
            job_name(None, &env(&[("PMIX_NAMESPACE", "prterun-x-1@1")]), 1),
            "pmix-prterun-x-1@1"
        );
        assert!(job_name(None, &env(&[]), 1).starts_with("parent-1-"));
        let a = Job::new(Path::new("/r"), "pmix-a");
        let b = Job::new(Path::new("/r"), "pmix-b");
        assert_ne!(a.id, b.id);
        assert!(crate::commands::validate_id(&a.id).is_ok());
    }

    #[test]
    fn ranks_per_node_come_from_the_launcher() {
        assert_eq!(
            ppn_of(Some(3), &env(&[("OMPI_COMM_WORLD_LOCAL_SIZE", "4")])),
            3
        );
        assert_eq!(
            ppn_of(None, &env(&[("OMPI_COMM_WORLD_LOCAL_SIZE", "4")])),
            4
        );
        assert_eq!(ppn_of(None, &env(&[("MPI_LOCALNRANKS", "8")])), 8);
        assert_eq!(
            ppn_of(
                None,
                &env(&[
                    ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
                    ("SLURM_NODEID", "3")
                ])
            ),
            1
        );
        // The allocation's --ntasks-per-node=2 does not say what this step put here.
        assert_eq!(
            ppn_of(
                None,
                &env(&[
                    ("SLURM_NTASKS_PER_NODE", "2"),
                    ("SLURM_STEP_TASKS_PER_NODE", "2,1(x2)"),
                    ("SLURM_NODEID", "1")
                ])
            ),
            1
        );
        assert_eq!(slurm_tasks_on("2(x3),1", 2), Some(2));
        assert_eq!(slurm_tasks_on("2(x3),1", 4), None);
        assert_eq!(ppn_of(None, &env(&[])), 0);
    }
}
