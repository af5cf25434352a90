//! `lwk-runc conexec-server`: the common parent of a job's ranks on a node.
//!
//! It runs inside the job's container as the first child of `lwk-init` (so on an LWK
//! that keys processes by pid it has the container's node-unique slot pid, and
//! `mcexec -n` groups its children by that parent), listens on the socket the first
//! rank bound on the host and passed as fd 3, and for every rank that connects forks
//! the launcher prefix followed by the rank's argv, with the rank's own stdio, cwd,
//! environment, ids and umask. Each rank's exit is reported to its client; a client
//! whose connection drops (killed with SIGKILL, say) takes its rank with it. When no
//! rank is left and the node's ranks have all joined (or the join window has passed),
//! it closes the socket and exits, which ends the container.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::proto::{self, Control, Launch, Lines, Reply};

/// Where each rank's argv goes in the server's command line.
pub const RANK_ARGV: &str = "@rank-argv";
/// The listening socket, as passed by the creating rank (`--preserve-fds 1`).
const LISTEN_FD: RawFd = 3;
/// A rank's descriptors are first copied at or above this number, then moved to their
/// own numbers, so that no move overwrites a descriptor still to be moved.
const HIGH_FD: RawFd = 512;

/// Signals the server passes on to every rank when it receives them itself (from
/// `lwk-init`, which forwards what the container is sent).
const TO_ALL: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

struct Opts {
    ppn: u32,
    join_timeout: Duration,
    prefix: Vec<String>,
}

fn parse(args: &[std::ffi::OsString]) -> Result<Opts, String> {
    let mut ppn = 0;
    let mut join_timeout = Duration::from_secs(30);
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    let mut prefix = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ppn" => {
                ppn = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--ppn needs a number")?
            }
            "--join-timeout-ms" => {
                join_timeout = Duration::from_millis(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--join-timeout-ms needs a number")?,
                )
            }
            "--" => {
                prefix = it.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match prefix.last().map(String::as_str) {
        Some(RANK_ARGV) => {
            prefix.pop();
        }
        _ => return Err(format!("the launcher prefix must end with {RANK_ARGV}")),
    }
    Ok(Opts {
        ppn,
        join_timeout,
        prefix,
    })
}

struct Conn {
    stream: UnixStream,
    lines: Lines,
    /// The rank's pid, once started.
    pid: i32,
}

pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lwk-runc conexec-server: {e}");
            return 2;
        }
    };
    match serve(&opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lwk-runc conexec-server: {e}");
            1
        }
    }
}

fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local set; signalfd returns a new descriptor.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in TO_ALL {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn serve(opts: &Opts) -> io::Result<()> {
    // SAFETY: fd 3 is the listening socket the creating rank passed us; we own it now.
    let listener = unsafe { UnixListener::from_raw_fd(LISTEN_FD) };
    set_cloexec(listener.as_raw_fd())?;
    let sigfd = signal_fd()?;
    let me = nix::unistd::geteuid().as_raw();
    let started = Instant::now();
    let mut listener = Some(listener);
    let mut conns: Vec<Conn> = Vec::new();
    // pid -> index in `conns` is recomputed on each use; pids whose client is gone:
    let mut orphans: HashMap<i32, ()> = HashMap::new();
    let mut joined: u32 = 0;
    loop {
        let live = conns.iter().filter(|c| c.pid > 0).count() + orphans.len();
        let pending = conns.iter().filter(|c| c.pid == 0).count();
        let all_joined = opts.ppn == 0 || joined >= opts.ppn;
        let waited = started.elapsed();
        if live == 0 && pending == 0 && joined > 0 && (all_joined || waited >= opts.join_timeout) {
            return Ok(());
        }
        if live == 0 && joined == 0 && waited >= opts.join_timeout {
            return Err(io::Error::other(format!(
                "no rank joined within {} ms",
                opts.join_timeout.as_millis()
            )));
        }
        let timeout = if live == 0 {
            opts.join_timeout.saturating_sub(waited).as_millis() as i32 + 1
        } else {
            -1
        };
        let mut fds = vec![libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(l) = &listener {
            fds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let base = fds.len();
        for c in &conns {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            let all_joined = opts.ppn == 0 || joined >= opts.ppn;
            on_signals(&sigfd, &mut conns, &mut orphans, all_joined);
        }
        // Client messages, EOFs.
        let mut gone = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if fds[base + i].revents == 0 || c.pid == 0 {
                continue;
            }
            match c.lines.fill(&c.stream) {
                Ok(true) => {
                    while let Some(m) = c.lines.next::<Control>() {
                        if let Ok(Control::Signal { signal }) = m {
                            // SAFETY: kill(2) on our own child.
                            unsafe { libc::kill(c.pid, signal) };
                        }
                    }
                }
                _ => {
                    // The client is gone (SIGKILL, or its launcher ended it): its rank
                    // must not outlive it, since nobody would report its exit.
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(c.pid, libc::SIGKILL) };
                    gone.push(i);
                }
            }
        }
        for i in gone.into_iter().rev() {
            let c = conns.remove(i);
            orphans.insert(c.pid, ());
        }
        if listener.is_some() && fds.len() > 1 && fds[1].revents != 0 {
            if let Some(l) = &listener {
                if let Ok((stream, _)) = l.accept() {
                    set_cloexec(stream.as_raw_fd())?;
                    match admit(&stream, me, &opts.prefix) {
                        Ok(pid) => {
                            joined += 1;
                            conns.push(Conn {
                                stream,
                                lines: Lines::default(),
                                pid,
                            });
                        }
                        Err(message) => {
                            let _ = proto::send(&stream, &Reply::Error { message });
                        }
                    }
                }
            }
        }
        // Stop taking ranks the moment we decide to leave, so that a rank arriving now
        // gets a refused connection and makes a new container instead of a dying one.
        let live = conns.iter().filter(|c| c.pid > 0).count() + orphans.len();
        if live == 0
            && joined > 0
            && (opts.ppn == 0 || joined >= opts.ppn || started.elapsed() >= opts.join_timeout)
        {
            listener = None;
        }
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forward signals to the ranks and report the ranks that ended. The reply to the
/// job's last rank (every expected rank has joined and none other runs) says so, so
/// that its client waits for the container's deletion and `mpirun` returns to a clean
/// node.
fn on_signals(
    sigfd: &OwnedFd,
    conns: &mut Vec<Conn>,
    orphans: &mut HashMap<i32, ()>,
    all_joined: bool,
) {
    loop {
        // SAFETY: reading whole signalfd_siginfo records into a buffer of that size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let n = unsafe {
            libc::read(
                sigfd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n <= 0 {
            break;
        }
        let sig = info.ssi_signo as libc::c_int;
        if sig != libc::SIGCHLD {
            for c in conns.iter().filter(|c| c.pid > 0) {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(c.pid, sig) };
            }
        }
    }
    let mut ended = Vec::new();
    loop {
        let mut st = 0;
        // SAFETY: reaping our own children.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if orphans.remove(&pid).is_some() {
            continue;
        }
        if let Some(i) = conns.iter().position(|c| c.pid == pid) {
            ended.push((conns.remove(i), st));
        }
    }
    let n = ended.len();
    for (k, (c, st)) in ended.into_iter().enumerate() {
        let last = k + 1 == n && all_joined && orphans.is_empty() && conns.is_empty();
        let reply = if libc::WIFSIGNALED(st) {
            Reply::Signaled {
                signal: libc::WTERMSIG(st),
                last,
            }
        } else {
            Reply::Exited {
                code: libc::WEXITSTATUS(st),
                last,
            }
        };
        let _ = proto::send(&c.stream, &reply);
    }
}

/// Read a rank's launch request and start it; the error goes back to its client.
fn admit(stream: &UnixStream, me: u32, prefix: &[String]) -> Result<i32, String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("reading the rank's credentials: {e}"))?;
    if cred.uid() != 0 && cred.uid() != me {
        return Err(format!(
            "uid {} may not start ranks in a job container of uid {me}",
            cred.uid()
        ));
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let (launch, fds) =
        proto::recv_launch(stream).map_err(|e| format!("reading the launch request: {e}"))?;
    let _ = stream.set_read_timeout(None);
    if fds.len() != 3 + launch.extra_fds.len()
        || launch.extra_fds.iter().any(|&n| !(3..HIGH_FD).contains(&n))
    {
        return Err(format!(
            "the launch request carried {} descriptors for {} extra ones {:?} (numbers 3..{HIGH_FD})",
            fds.len(),
            launch.extra_fds.len(),
            launch.extra_fds
        ));
    }
    if cred.uid() != 0 && (launch.uid != cred.uid() || launch.gid != cred.gid()) {
        return Err("a rank may only run as its own user".into());
    }
    let pid = spawn(&launch, &fds, prefix)?;
    // Our copies of the rank's stdio must go now: the launcher waits for EOF on them.
    drop(fds);
    proto::send(stream, &Reply::Started { pid }).map_err(|e| format!("answering the rank: {e}"))?;
    Ok(pid)
}

/// The program to run: the launcher when there is one, else the rank's argv[0] looked
/// up in the rank's own PATH inside the container.
fn program(launch: &Launch, prefix: &[String]) -> Result<PathBuf, String> {
    let first = prefix
        .first()
        .or(launch.argv.first())
        .ok_or("the rank has no command")?;
    if first.contains('/') {
        return Ok(PathBuf::from(first));
    }
    let path = launch
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(first))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{first}: not found in the container (PATH={path})"))
}

fn cstr(s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| "an argument or variable contains a NUL byte".to_string())
}

/// Fork the rank. Everything the child needs is built first: between fork and exec
/// it only makes system calls. Failures before exec come back through a pipe.
fn spawn(launch: &Launch, fds: &[OwnedFd], prefix: &[String]) -> Result<i32, String> {
    let prog = cstr(program(launch, prefix)?.as_os_str().as_bytes())?;
    let argv: Vec<CString> = prefix
        .iter()
        .chain(launch.argv.iter())
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = launch
        .env
        .iter()
        .map(|e| cstr(e.as_bytes()))
        .collect::<Result<_, _>>()?;
    let cwd = cstr(launch.cwd.as_bytes())?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = launch.groups.clone();
    let switch_user = nix::unistd::geteuid().is_root() && (launch.uid != 0 || launch.gid != 0);
    let me = std::process::id() as libc::pid_t;

    let mut pipe = [0; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    let (rd, wr) = (pipe[0], pipe[1]);
    let targets: Vec<RawFd> = (0..3).chain(launch.extra_fds.iter().copied()).collect();
    let sources: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the child makes only async-signal-safe system calls on data prepared above,
    // then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(format!("fork: {e}"));
    }
    if pid == 0 {
        unsafe {
            let fail = |stage: u8| -> ! {
                let err = *libc::__errno_location();
                let msg = [stage, err as u8, (err >> 8) as u8];
                libc::write(wr, msg.as_ptr().cast(), msg.len());
                libc::_exit(127);
            };
            // The rank dies with the server: nothing else would report it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != me {
                libc::_exit(127);
            }
            let mut tmp = [0 as RawFd; 3 + proto::MAX_EXTRA_FDS];
            for (i, &fd) in sources.iter().enumerate() {
                tmp[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD);
                if tmp[i] < 0 {
                    fail(1);
                }
            }
            for (i, &to) in targets.iter().enumerate() {
                // dup2 also clears close-on-exec on the target.
                if libc::dup2(tmp[i], to) < 0 {
                    fail(1);
                }
            }
            libc::umask(launch.umask as libc::mode_t);
            if switch_user
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(launch.gid) != 0
                    || libc::setuid(launch.uid) != 0)
            {
                fail(2);
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                fail(3);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
            fail(4);
        }
    }
    // SAFETY: closing our write end, then reading the child's report.
    unsafe { libc::close(wr) };
    let mut msg = [0u8; 3];
    let n = unsafe { libc::read(rd, msg.as_mut_ptr().cast(), 3) };
    unsafe { libc::close(rd) };
    if n == 3 {
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        let err = io::Error::from_raw_os_error(msg[1] as i32 | (msg[2] as i32) << 8);
        let what = match msg[0] {
            1 => "passing the rank's stdio".to_string(),
            2 => format!("switching to uid {} gid {}", launch.uid, launch.gid),
            3 => format!(
                "entering the rank's working directory {} in the container (mount it, or start mpirun from a directory the container has)",
                launch.cwd
            ),
            _ => format!(
                "executing {}",
                String::from_utf8_lossy(prog.as_bytes())
            ),
        };
        return Err(format!("{what}: {err}"));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_prefix_must_end_with_the_rank_marker() {
        let a = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let o = parse(&a(&[
            "--ppn",
            "4",
            "--",
            "/l/mcexec",
            "-n",
            "4",
            "0",
            RANK_ARGV,
        ]))
        .unwrap();
        assert_eq!(o.ppn, 4);
        assert_eq!(o.prefix, ["/l/mcexec", "-n", "4", "0"]);
        let o = parse(&a(&["--", RANK_ARGV])).unwrap();
        assert!(o.prefix.is_empty());
        assert!(parse(&a(&["--", "/l/mcexec"])).is_err());
        assert!(parse(&a(&["--bogus"])).is_err());
    }
}
