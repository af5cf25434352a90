//! Small facts about host processes and files, shared by the commands and the LWK
//! layer: a process' start time (what tells a living process from a recycled pid)
//! and a file that removes itself when its owner is done with it.

use std::path::PathBuf;

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
