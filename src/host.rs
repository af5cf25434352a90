//! Small facts about host processes and files, shared by the commands and the LWK
//! layer: a process' start time (what tells a living process from a recycled pid)
//! and a file that removes itself when its owner is done with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What lwk-runc reads from `/proc/<pid>/stat`.
pub struct ProcStat {
    /// Field 3: `R`, `S`, `Z`, …
    pub state: char,
    /// Field 9: the kernel's task flags (PF_*).
    pub flags: u64,
    /// Field 20: the number of threads.
    pub num_threads: u64,
    /// Field 22: the start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Killed or exited and on its way out (PF_EXITING): an init of a pid namespace
    /// stays so, sleeping, until every other process of its namespace is reaped.
    pub fn ending(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        matches!(self.state, 'Z' | 'X') || self.flags & PF_EXITING != 0
    }

    /// On its way out but not yet a zombie: it may still hold its files (the kernel
    /// closes them late in exit, after freeing the memory), and with them an LWK
    /// reservation or an open instance device.
    fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.flags & PF_EXITING != 0 && !matches!(self.state, 'Z' | 'X')
    }
}

/// `pid`'s fd directory lists a file: it has not closed its files (an exiting process's
/// is empty once the kernel has dropped them).
fn has_files(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|mut d| d.next().is_some())
}

/// `pid` is exiting and has not closed its files yet.
fn exiting_with_files(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.exiting()) && has_files(pid)
}

/// The PID namespace of `pid` (device and inode of its `ns/pid`).
fn pid_ns(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// `pid` is exiting, and it or, when it is the init of a PID namespace other than ours,
/// another process of that namespace still has files open: what the container held (an
/// LWK reservation, the instance device and the per-process data keyed by a pid of the
/// namespace) is not released yet. The init of a namespace stays exiting until every
/// other process of it is reaped; those that are killed and only wait for a parent
/// outside to reap them (zombies) hold nothing.
pub fn exit_unfinished(pid: i32) -> bool {
    if !proc_stat(pid).is_some_and(|s| s.exiting()) {
        return false;
    }
    if has_files(pid) {
        return true;
    }
    let Some(ns) = pid_ns(pid) else {
        return false;
    };
    if pid_ns(std::process::id() as i32) == Some(ns) {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != pid && pid_ns(*p) == Some(ns))
        .any(|p| proc_stat(p).is_some_and(|s| !matches!(s.state, 'Z' | 'X')) && has_files(p))
}

/// Waits, for at most `bound`, while any process `holders` names is exiting but still
/// holds its files. Tearing an LWK down is refused while a process holds a reservation
/// or the instance device; a container's process that another runtime's delete has just
/// killed gives them up only at the end of its exit, so a teardown that does not wait
/// for it fails (and is left to `lwk gc`). A holder that is not exiting is not waited
/// for: the teardown then reports it.
pub fn wait_for_exiting_holders(holders: impl Fn() -> Vec<i32>, bound: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < bound && holders().into_iter().any(exiting_with_files) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The processes with an open file description of `target`, matched by what it is (the
/// device number of a device node, else device and inode), so the same file reached
/// through a container's bind mount counts too. Unreadable processes are passed over.
pub fn fd_holders(target: &Path) -> Vec<i32> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(t) = std::fs::metadata(target) else {
        return Vec::new();
    };
    let same = |m: &std::fs::Metadata| {
        if t.file_type().is_char_device() || t.file_type().is_block_device() {
            m.file_type() == t.file_type() && m.rdev() == t.rdev()
        } else {
            (m.dev(), m.ino()) == (t.dev(), t.ino())
        }
    };
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| same(&m)))
        {
            pids.push(pid);
        }
    }
    pids
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let flags = rest.nth(5)?.parse().ok()?;
    let num_threads = rest.nth(10)?.parse().ok()?;
    let start_time = rest.nth(1)?.parse().ok()?;
    Some(ProcStat {
        state,
        flags,
        num_threads,
        start_time,
    })
}

/// Start time of `pid`, None if there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// Removes the file at its path when dropped, however the owner's scope ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A lock file (for flock): created 0600 if missing, never followed if a symlink.
pub fn open_lock(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_of_a_file_are_found_through_another_name_and_only_while_open() {
        let dir = std::env::temp_dir().join(format!("lwk-holders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (file, link) = (dir.join("mcos0"), dir.join("other-name"));
        std::fs::write(&file, "").unwrap();
        std::fs::hard_link(&file, &link).unwrap();
        let me = std::process::id() as i32;
        assert!(!fd_holders(&file).contains(&me));
        let f = std::fs::File::open(&link).unwrap();
        assert!(fd_holders(&file).contains(&me));
        // A holder that is not exiting is not waited for.
        let t0 = Instant::now();
        wait_for_exiting_holders(|| fd_holders(&file), Duration::from_secs(30));
        assert!(t0.elapsed() < Duration::from_secs(10));
        drop(f);
        assert!(!fd_holders(&file).contains(&me));
        assert!(fd_holders(&dir.join("absent")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_time_of_this_process_is_stable_and_absent_pids_have_none() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).expect("own stat");
        assert_eq!(start_time(me), Some(stat.start_time));
        assert!(matches!(stat.state, 'R' | 'S'), "{}", stat.state);
        assert!(!stat.ending());
        assert_eq!(start_time(i32::MAX), None);
        assert_eq!(start_time(0), None);
    }

    #[test]
    fn remove_on_drop_removes() {
        let path = std::env::temp_dir().join(format!("lwk-runc-rod-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        drop(RemoveOnDrop(path.clone()));
        assert!(!path.exists());
    }
}
