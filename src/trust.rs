//! Which host paths lwk-runc may trust: what it runs as root (the config, the LWK
//! tools, patchelf) and where it keeps node-wide state (the lease directory, the
//! launcher-closure cache).
//!
//! The rule is the one sudo and OpenSSH apply: a path is trusted when the file and
//! every directory on the way to it is owned by root (or by the user running lwk-runc,
//! who can only harm themself) and writable by nobody else. A world-writable directory
//! with the sticky bit (`/tmp`) is accepted on the way, because others can neither
//! rename nor remove an entry in it that they do not own; the entry below it is then
//! checked like any other. Symlinks are followed where they are found, so the link's
//! own directory is checked as well as its target.
//!
//! Directories lwk-runc creates for its own state are made with `mkdir` (0700) and
//! checked afterwards, never trusted for being there: a directory someone else made
//! first fails the check and is refused, not repaired.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// A path that must not be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} {why}")]
pub struct Untrusted {
    pub path: PathBuf,
    pub why: String,
}

impl Untrusted {
    fn new(path: &Path, why: impl Into<String>) -> Untrusted {
        Untrusted {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }

    /// What to do about it, for the end of an error message.
    pub fn fix(&self) -> String {
        format!(
            "make it root's and writable by root only (chown root {p}; chmod go-w {p}), \
             or choose another path",
            p = self.path.display()
        )
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() }
}

pub fn is_root() -> bool {
    euid() == 0
}

/// Owned by root, or by the user lwk-runc runs as.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Directories this process found trusted on the way to something, and whether others
/// may add entries to them (sticky, like /tmp). Only root could change that since, so
/// each is inspected once per process.
static CHECKED: Mutex<Option<HashMap<PathBuf, bool>>> = Mutex::new(None);

fn checked(p: &Path) -> Option<bool> {
    CHECKED
        .lock()
        .ok()
        .and_then(|g| g.as_ref().and_then(|m| m.get(p).copied()))
}

fn remember(p: &Path, open: bool) {
    if let Ok(mut g) = CHECKED.lock() {
        g.get_or_insert_with(HashMap::new)
            .insert(p.to_path_buf(), open);
    }
}

/// Private directories this process has made sure of (see [`ensure_private_dir`]).
static PRIVATE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// The ownership and mode rule for one path; `on_the_way`: a directory some other
/// path lies under (only there does the sticky bit make others' write access harmless).
pub fn check_meta(path: &Path, md: &std::fs::Metadata, on_the_way: bool) -> Result<(), Untrusted> {
    if !trusted_owner(md.uid()) {
        return Err(Untrusted::new(
            path,
            format!("is owned by uid {}, not root", md.uid()),
        ));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let sticky = md.is_dir() && mode & 0o1000 != 0 && on_the_way;
        if !sticky {
            return Err(Untrusted::new(
                path,
                format!("is writable by group or others (mode {mode:04o})"),
            ));
        }
    }
    Ok(())
}

/// Check `path` and every directory leading to it. A path that does not exist (yet)
/// is trusted when the directory that would hold it is one only trusted users can
/// write to.
pub fn check_path(path: &Path) -> Result<(), Untrusted> {
    walk(path, &mut 0, false).map(|_| ())
}

/// [`check_path`], taking the directories this process already found trusted on
/// the way to something else as they were (only root could have changed them since):
/// for the runtime, which checks several tools and directories under the same ones.
pub fn check_path_once(path: &Path) -> Result<(), Untrusted> {
    walk(path, &mut 0, true).map(|_| ())
}

/// Follows symlinks as it meets them; returns the resolved path.
fn walk(path: &Path, hops: &mut u32, cached: bool) -> Result<PathBuf, Untrusted> {
    if !path.is_absolute() {
        return Err(Untrusted::new(path, "is not an absolute path"));
    }
    let comps: Vec<Component> = path.components().collect();
    let last_normal = comps
        .iter()
        .rposition(|c| matches!(c, Component::Normal(_)));
    let mut cur = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        let name = match c {
            Component::Normal(n) => n,
            Component::ParentDir => {
                cur.pop();
                continue;
            }
            _ => continue,
        };
        // Whether `cur` is a directory others may add entries to (the sticky case).
        let open_to_others = match checked(&cur).filter(|_| cached) {
            Some(open) => open,
            None => {
                let md = std::fs::symlink_metadata(&cur)
                    .map_err(|e| Untrusted::new(&cur, format!("cannot be inspected: {e}")))?;
                check_meta(&cur, &md, true)?;
                let open = md.mode() & 0o002 != 0;
                remember(&cur, open);
                open
            }
        };
        let next = cur.join(name);
        if cached && Some(i) != last_normal && checked(&next).is_some() {
            cur = next; // a directory already found trusted (not a link)
            continue;
        }
        let md = match std::fs::symlink_metadata(&next) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if open_to_others {
                    return Err(Untrusted::new(
                        &next,
                        format!(
                            "does not exist, and anyone may create it in {}",
                            cur.display()
                        ),
                    ));
                }
                return Ok(next);
            }
            Err(e) => {
                return Err(Untrusted::new(&next, format!("cannot be inspected: {e}")));
            }
        };
        if md.file_type().is_symlink() {
            *hops += 1;
            if *hops > 40 {
                return Err(Untrusted::new(&next, "is a chain of too many symlinks"));
            }
            let target = std::fs::read_link(&next)
                .map_err(|e| Untrusted::new(&next, format!("cannot be read: {e}")))?;
            cur = walk(&cur.join(target), hops, cached)?;
            continue;
        }
        if Some(i) == last_normal {
            check_meta(&next, &md, false)?;
        }
        cur = next;
    }
    Ok(cur)
}

/// A directory for lwk-runc's own state: created (mode 0700, missing parents too) if
/// absent, then checked like any trusted path (once per process). Never repaired: one
/// that someone else owns or may write to is refused.
pub fn ensure_private_dir(dir: &Path) -> Result<(), Untrusted> {
    let known = PRIVATE
        .lock()
        .is_ok_and(|g| g.as_ref().is_some_and(|s| s.contains(dir)));
    if known {
        return Ok(());
    }
    make_private_dir(dir)?;
    if let Ok(mut g) = PRIVATE.lock() {
        g.get_or_insert_with(HashSet::new).insert(dir.to_path_buf());
    }
    Ok(())
}

fn make_private_dir(dir: &Path) -> Result<(), Untrusted> {
    if let Err(u) = check_path_once(dir) {
        // Missing in a directory anyone may add to (/tmp): made here, checked below.
        let missing = std::fs::symlink_metadata(&u.path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if !missing {
            return Err(u);
        }
    }
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => return Ok(()),
        Ok(md) if !md.file_type().is_symlink() => {
            return Err(Untrusted::new(dir, "is not a directory"))
        }
        _ => {}
    }
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(Untrusted::new(dir, format!("cannot be created: {e}")));
    }
    check_path_once(dir)?;
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        _ => Err(Untrusted::new(dir, "is not a directory")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lwk-trust-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn system_paths_are_trusted_and_a_sticky_tmp_is_passed_through() {
        check_path(Path::new("/bin/sh")).unwrap();
        let d = tmp("sticky");
        check_path(&d.join("missing")).unwrap();
        // Directly in /tmp, a missing name could be created by anyone.
        let e = check_path(&std::env::temp_dir().join("lwk-trust-nothing-here")).unwrap_err();
        assert!(e.why.contains("anyone may create it"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn writable_files_and_directories_on_the_way_are_named() {
        let d = tmp("writable");
        let tool = d.join("tool");
        fs::write(&tool, "").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_path(&tool).unwrap_err();
        assert_eq!(e.path, tool);
        assert!(
            e.why.contains("group or others") && e.why.contains("0777"),
            "{e}"
        );
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        check_path(&tool).unwrap();
        let sub = d.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o775)).unwrap();
        fs::write(sub.join("t"), "").unwrap();
        let e = check_path(&sub.join("t")).unwrap_err();
        assert_eq!(e.path, sub);
        assert!(e.why.contains("(mode 0775)"), "{e}");
        // A link in a trusted place to an untrusted target is untrusted.
        std::os::unix::fs::symlink(sub.join("t"), d.join("link")).unwrap();
        assert_eq!(check_path(&d.join("link")).unwrap_err().path, sub);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_private_dir_is_made_0700_and_a_foreign_one_is_refused() {
        let d = tmp("private");
        let p = d.join("a/b");
        ensure_private_dir(&p).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o700);
        assert_eq!(mode(&d.join("a")), 0o700);
        let open = d.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&open).unwrap_err();
        assert!(e.why.contains("writable by group or others"), "{e}");
        assert_eq!(mode(&open), 0o777, "refused, not repaired");
        if is_root() {
            let theirs = d.join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = ensure_private_dir(&theirs).unwrap_err();
            assert!(e.why.contains("owned by uid 65534"), "{e}");
        }
        let _ = fs::remove_dir_all(&d);
    }
}
