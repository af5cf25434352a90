//! Exclusive flock waits with a bound, and who holds a lock that is not given up.
//!
//! The wait itself happens in a blocking `flock` (on a helper thread) rather than in a
//! poll loop, so a lock that is freed is taken at once: 64 containers queued on the
//! node lock cost no polling delays. The helper owns a duplicate of the descriptor;
//! if the caller gives up, the duplicate is closed as soon as the helper gets the lock
//! (or the process ends), so a late grant never stays held.
//!
//! The holder is found in /proc/locks, which lists flock holders by device and inode
//! with the pid that took the lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::trust::{self, Untrusted};

/// A lock wait that ran out.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path} is still held after {secs} s by {holder}; if that process is stuck, end it and retry (the wait is {knob})")]
pub struct Timeout {
    pub what: &'static str,
    /// What sets the bound, e.g. "`lock_timeout_secs` in the lwk-runc config".
    pub knob: &'static str,
    pub path: PathBuf,
    pub secs: u64,
    /// "pid 123 (lwk-runc, uid 0)" or why the holder is unknown.
    pub holder: String,
}

/// Take an exclusive flock on `f`, waiting at most `timeout`. Ok(false): not granted.
pub fn lock_within(f: &File, timeout: Duration) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(e);
    }
    let fd = f.try_clone()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        // SAFETY: flock on a descriptor this thread owns.
        let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) };
        let err = std::io::Error::last_os_error();
        if r != 0 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // If the receiver is gone, `fd` is dropped with the message: closed.
        let _ = tx.send((r, err, fd));
        return;
    });
    match rx.recv_timeout(timeout) {
        // The lock belongs to the open file description, which `f` shares.
        Ok((0, _, _)) => Ok(true),
        Ok((_, e, _)) => Err(e),
        Err(_) => Ok(false),
    }
}

/// Lock `f` (opened from `path`) within `timeout`, or say who holds it.
pub fn lock_or_name_holder(
    f: &File,
    path: &Path,
    what: &'static str,
    timeout: Duration,
    knob: &'static str,
) -> Result<(), LockError> {
    match lock_within(f, timeout) {
        Ok(true) => Ok(()),
        Ok(false) => Err(LockError::Timeout(Box::new(Timeout {
            what,
            knob,
            path: path.to_path_buf(),
            secs: timeout.as_secs(),
            holder: holder(f),
        }))),
        Err(source) => Err(LockError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Timeout(Box<Timeout>),
    #[error("refusing {what}: {source}; {fix}")]
    Untrusted {
        what: &'static str,
        source: Box<Untrusted>,
        fix: String,
    },
    #[error("taking {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Open (creating, 0600) the lock file of a private directory (one the caller checked
/// only root may write), never through a symlink. flock works on a read-only
/// descriptor, so a lock file others can read is a lock they can hold: one that is not
/// root's is refused, and root's own with more than 0600 (as earlier lwk-runc versions
/// left them on a node) is restricted through the descriptor just opened, which
/// reaches nothing but that file.
pub fn open_private(path: &Path, what: &'static str) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let f = match crate::host::open_lock(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LockError::Untrusted {
                what,
                source: Box::new(Untrusted {
                    path: path.to_path_buf(),
                    why: "is a symlink, and lwk-runc never opens a lock through one".into(),
                }),
                fix: format!(
                    "remove it (rm {}); lwk-runc makes the lock file itself",
                    path.display()
                ),
            })
        }
        Err(e) => return Err(io(e)),
    };
    let md = f.metadata().map_err(io)?;
    let why = if !md.is_file() {
        "is not a regular file".to_string()
    } else if !trust::trusted_owner(md.uid()) {
        format!("is owned by uid {}, not root", md.uid())
    } else if md.mode() & 0o7077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        tracing::info!(path = %path.display(), mode = format!("{:04o}", md.mode() & 0o7777), "restricting a lock file to root (0600)");
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        return Ok(f);
    } else {
        return Ok(f);
    };
    Err(LockError::Untrusted {
        what,
        source: Box::new(Untrusted {
            path: path.to_path_buf(),
            why,
        }),
        fix: format!(
            "remove it when no LWK operation runs (rm {}); lwk-runc makes it again, mode 0600",
            path.display()
        ),
    })
}

/// Who holds a flock on `f`, for an error message.
pub fn holder(f: &File) -> String {
    let Ok(md) = f.metadata() else {
        return "an unknown process".into();
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    match holder_pid(&locks, md.dev(), md.ino()) {
        Some(pid) => describe_pid(pid),
        None => "a process /proc/locks does not name (it may live in another pid namespace)".into(),
    }
}

/// The pid holding (not waiting for) a flock on dev:ino in /proc/locks text.
fn holder_pid(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let id = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|l| {
        let mut f = l.split_whitespace().skip(1);
        let kind = f.next()?;
        if kind != "FLOCK" {
            return None;
        }
        let _advisory = f.next()?;
        let _mode = f.next()?;
        let pid = f.next()?.parse::<i32>().ok()?;
        (f.next()? == id && pid > 0).then_some(pid)
    })
}

fn describe_pid(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(String::from))
        });
    match (comm.is_empty(), uid) {
        (false, Some(u)) => format!("pid {pid} ({comm}, uid {u})"),
        _ => format!("pid {pid} (no longer running, or it handed the lock to a child)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let dev = libc::makedev(0xfe, 0);
        let text = "1: POSIX  ADVISORY  WRITE 14442 fe:00:10020748 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 11884 fe:00:10010984 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 999 fe:00:10010984 0 EOF\n";
        assert_eq!(holder_pid(text, dev, 10010984), Some(11884));
        assert_eq!(
            holder_pid(text, dev, 10020748),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_pid(text, dev, 1), None);
    }

    #[test]
    fn a_held_lock_times_out_naming_this_process_and_a_free_one_is_taken() {
        let p = std::env::temp_dir().join(format!("lwk-flock-{}", std::process::id()));
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        assert!(lock_within(&a, Duration::from_secs(1)).unwrap());
        let e = lock_or_name_holder(
            &b,
            &p,
            "the test lock",
            Duration::from_millis(100),
            "a test",
        )
        .unwrap_err()
        .to_string();
        let me = format!("pid {} (", std::process::id());
        assert!(
            e.contains(&me) && e.contains(&p.display().to_string()),
            "{e}"
        );
        drop(a);
        assert!(lock_within(&b, Duration::from_secs(5)).unwrap());
        let _ = std::fs::remove_file(&p);
    }
}
