//! Launcher closures: a host binary made runnable inside any rootfs.
//!
//! The container may have no libc (static busybox), musl only, or a glibc unlike the
//! host's, and mcexec must be the host's own build (it checks the IHK build id). So the
//! host binary is copied together with the libraries it needs and its loader, and the
//! copy's PT_INTERP and DT_RPATH are pointed at the closure's own `lib/` at the path where
//! it will be mounted in the container. `ld.so --library-path … mcexec` would not do:
//! mcexec re-executes itself through /proc/self/exe, which would then start without the
//! loader's arguments. RPATH (not RUNPATH) because RPATH is also searched for the
//! dependencies of dependencies and beats the container's LD_LIBRARY_PATH.
//! A static binary needs neither libs nor patching.
//!
//! Closures are cached under `<lease_dir>/closures/<name>-<key>`, keyed by the binary's
//! path, size and mtime, built once under a lock and published by rename, so a create
//! pays one `stat` when the cache is warm. The cache is root's like the lease table
//! (checked by the caller; an entry anyone else owns or may write is refused, since
//! what it holds runs as a container's PID 1 or launcher).
//!
//! Pruning ([`prune`], under the cache lock): a build directory whose builder died,
//! and a closure that is neither the current one of its binary nor in use. In use is
//! mounted in some mount namespace (a live container), or held by a process that is
//! still setting a container up: every process that hands out a closure keeps a shared
//! flock on its directory until it exits, and pruning takes an exclusive one without
//! waiting, so a closure is never removed between its lookup and its mount. Building a
//! new version of a binary prunes that binary's old ones; `lwk-runc lwk gc` prunes
//! everything.
//!
//! Host requirement: `patchelf` (config key `patchelf`) for dynamically linked launchers.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::flock::{self, LockError};
use crate::trust::{self, Untrusted};

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("launcher {path} (config key {key}) not found: {source}; install it or fix the key")]
    Missing {
        path: PathBuf,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading ELF headers of {path}: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("patchelf is needed to make the dynamically linked {binary} runnable inside containers, but {patchelf} (config key `patchelf`) cannot be run: {reason}; install the `patchelf` package or set `patchelf` in the lwk-runc config")]
    NoPatchelf {
        binary: PathBuf,
        patchelf: PathBuf,
        reason: String,
    },
    #[error("building the launcher closure for {binary}: {what}")]
    Build { binary: PathBuf, what: String },
    #[error("launcher closure cache: {0}")]
    Lock(#[from] LockError),
    #[error("refusing the launcher closure cache: {source}; what it holds runs in containers as root, so only root may be able to change it: {fix}")]
    Untrusted { source: Untrusted, fix: String },
}

/// A ready closure: mount `host_dir` read-only at `container_dir`, run `exe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    pub host_dir: PathBuf,
    pub container_dir: PathBuf,
    /// In-container path of the binary.
    pub exe: PathBuf,
}

/// What to build a closure of: the binary, the config key naming it (for errors), the
/// file name it gets inside (multi-call binaries dispatch on it), where it is mounted.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub name: &'a str,
    pub binary: &'a Path,
    pub key_name: &'a str,
    pub container_dir: PathBuf,
}

/// How closures are built and waited for.
pub struct Build<'a> {
    pub patchelf: &'a Path,
    pub lock_timeout: Duration,
}

/// The cache entry (`<name>-<key>`) of `w`'s binary as it is now, and its real path.
fn entry_of(w: &Want) -> Result<(PathBuf, String), LauncherError> {
    let (name, binary, key_name, container_dir) = (w.name, w.binary, w.key_name, &w.container_dir);
    // The runtime itself runs from a sealed, unattached clone whose link target does
    // not resolve; /proc/self/exe still opens and stats the real binary.
    let real = if binary == Path::new("/proc/self/exe") {
        binary.to_path_buf()
    } else {
        fs::canonicalize(binary).map_err(|source| LauncherError::Missing {
            path: binary.to_path_buf(),
            key: key_name.into(),
            source,
        })?
    };
    let md = fs::metadata(&real).map_err(|source| LauncherError::Missing {
        path: real.clone(),
        key: key_name.into(),
        source,
    })?;
    let key = fnv64(&[
        real.as_os_str().as_encoded_bytes(),
        &md.size().to_le_bytes(),
        &md.mtime().to_le_bytes(),
        &md.mtime_nsec().to_le_bytes(),
        &md.ino().to_le_bytes(),
        container_dir.as_os_str().as_encoded_bytes(),
    ]);
    Ok((real, format!("{name}-{key:016x}")))
}

/// The cache entry `w` would use now (for gc: the closures to keep).
pub fn current_entry(w: &Want) -> Option<String> {
    entry_of(w).ok().map(|(_, e)| e)
}

/// Whether the cache holds `dir` as a closure only root could have made.
fn cached(dir: &Path) -> Result<bool, LauncherError> {
    match fs::symlink_metadata(dir) {
        Err(_) => Ok(false),
        Ok(md) => {
            let checked = if md.is_dir() {
                trust::check_meta(dir, &md, false)
            } else {
                Err(Untrusted {
                    path: dir.to_path_buf(),
                    why: "is not a directory".into(),
                })
            };
            checked
                .map(|_| true)
                .map_err(|source| LauncherError::Untrusted {
                    fix: format!("remove it (rm -rf {}) and retry", dir.display()),
                    source,
                })
        }
    }
}

/// Closure directories this process handed out, each with a shared flock (see the
/// module doc), kept until the process ends.
static HELD: std::sync::Mutex<Vec<File>> = std::sync::Mutex::new(Vec::new());

fn open_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

fn flock(f: &File, op: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return true;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Mark `dir` in use by this process. False if it is gone (pruned meanwhile).
fn hold(dir: &Path) -> bool {
    let Ok(f) = open_dir(dir) else {
        return false;
    };
    // Blocks only while a prune decides about this very directory.
    if !flock(&f, libc::LOCK_SH) {
        return false;
    }
    let same = match (f.metadata(), fs::symlink_metadata(dir)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if same {
        if let Ok(mut h) = HELD.lock() {
            h.push(f);
        }
    }
    same
}

/// Get (building if needed) the closure of `w.binary` in `cache_dir`, a directory the
/// caller has checked is root's. The closure stays in use by this process until it
/// ends.
pub fn closure_for(cache_dir: &Path, w: &Want, b: &Build) -> Result<Closure, LauncherError> {
    let (real, entry) = entry_of(w)?;
    let (name, container_dir) = (w.name, &w.container_dir);
    let host_dir = cache_dir.join(&entry);
    let closure = Closure {
        host_dir: host_dir.clone(),
        container_dir: container_dir.to_path_buf(),
        exe: container_dir.join("bin").join(name),
    };
    if cached(&host_dir)? && hold(&host_dir) {
        return Ok(closure);
    }
    let build_err = |what: String| LauncherError::Build {
        binary: real.clone(),
        what,
    };
    let _lock = lock_cache(cache_dir, b.lock_timeout)?;
    // Another process may have built it while we waited.
    if cached(&host_dir)? && hold(&host_dir) {
        return Ok(closure);
    }
    // A new version of this binary: its old closures go unless a container uses them.
    prune(cache_dir, std::slice::from_ref(&entry), Some(name));
    let tmp = cache_dir.join(format!(".{entry}.tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let res = build(&real, name, b.patchelf, container_dir, &tmp).and_then(|_| {
        fs::rename(&tmp, &host_dir)
            .map_err(|e| build_err(format!("publishing {}: {e}", host_dir.display())))
    });
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res?;
    // Under the cache lock nobody prunes it before it is held.
    hold(&host_dir);
    Ok(closure)
}

fn build(
    real: &Path,
    name: &str,
    patchelf: &Path,
    container_dir: &Path,
    tmp: &Path,
) -> Result<(), LauncherError> {
    let err = |what: String| LauncherError::Build {
        binary: real.to_path_buf(),
        what,
    };
    let bin_dir = tmp.join("bin");
    let lib_dir = tmp.join("lib");
    // Explicit modes: under an engine's umask 0 the closure would be writable by all,
    // and refused from then on.
    let mkdir = |d: &Path| {
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o755)
            .create(d)
            .map_err(|e| err(format!("mkdir {}: {e}", d.display())))
    };
    mkdir(tmp)?;
    mkdir(&bin_dir)?;
    let exe = bin_dir.join(name);
    fs::copy(real, &exe).map_err(|e| err(format!("copying to {}: {e}", exe.display())))?;
    let Some(interp) = elf_interp(&exe)? else {
        return Ok(()); // static: runs anywhere as is
    };
    mkdir(&lib_dir)?;
    let interp = PathBuf::from(interp);
    let interp_name = interp
        .file_name()
        .ok_or_else(|| err(format!("odd PT_INTERP {}", interp.display())))?
        .to_owned();
    fs::copy(&interp, lib_dir.join(&interp_name))
        .map_err(|e| err(format!("copying loader {}: {e}", interp.display())))?;
    // List the copy: for /proc/self/exe the loader would list itself.
    for (soname, path) in list_libs(&interp, &exe).map_err(err)? {
        fs::copy(&path, lib_dir.join(&soname))
            .map_err(|e| err(format!("copying {}: {e}", path.display())))?;
    }
    let c_lib = container_dir.join("lib");
    let out = Command::new(patchelf)
        .arg("--set-interpreter")
        .arg(c_lib.join(&interp_name))
        .arg("--force-rpath")
        .arg("--set-rpath")
        .arg(&c_lib)
        .arg(&exe)
        .output()
        .map_err(|e| LauncherError::NoPatchelf {
            binary: real.to_path_buf(),
            patchelf: patchelf.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(err(format!(
            "{} failed ({}): {}",
            patchelf.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Ask the binary's own loader which libraries it resolves (`ld.so --list`); this is what
/// `ldd` does, without trusting a shell script, and it never runs the binary's code.
fn list_libs(interp: &Path, binary: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let out = Command::new(interp)
        .arg("--list")
        .arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|e| format!("running {} --list: {e}", interp.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list {} failed: {}",
            interp.display(),
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_ld_list(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ld_list(text: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((soname, rest)) = line.split_once(" => ") {
            let path = rest.split(" (").next().unwrap_or("").trim();
            if path == "not found" || path.is_empty() {
                return Err(format!("library {soname} not found on the host"));
            }
            libs.push((soname.trim().to_string(), PathBuf::from(path)));
        }
        // Lines without "=>" are the vdso and the loader itself.
    }
    Ok(libs)
}

/// PT_INTERP of a 64-bit little-endian ELF, `None` for a static binary.
pub fn elf_interp(path: &Path) -> Result<Option<String>, LauncherError> {
    let err = |reason: String| LauncherError::Elf {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| err(e.to_string()))?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h)
        .map_err(|e| err(format!("short header: {e}")))?;
    if &h[..4] != b"\x7fELF" {
        return Err(err("not an ELF file".into()));
    }
    if h[4] != 2 || h[5] != 1 {
        return Err(err("only 64-bit little-endian ELF is supported".into()));
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let phoff = u64_at(&h, 0x20);
    let phentsize = u16_at(&h, 0x36) as usize;
    let phnum = u16_at(&h, 0x38) as usize;
    if phentsize < 56 || phnum > 4096 {
        return Err(err("implausible program header table".into()));
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff))
        .map_err(|e| err(e.to_string()))?;
    f.read_exact(&mut ph)
        .map_err(|e| err(format!("reading program headers: {e}")))?;
    for i in 0..phnum {
        let p = &ph[i * phentsize..];
        if u32_at(p, 0) == 3 {
            let (off, size) = (u64_at(p, 8), u64_at(p, 32));
            if size == 0 || size > 4096 {
                return Err(err("implausible PT_INTERP".into()));
            }
            let mut s = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(off))
                .map_err(|e| err(e.to_string()))?;
            f.read_exact(&mut s)
                .map_err(|e| err(format!("reading PT_INTERP: {e}")))?;
            let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
            return Ok(Some(String::from_utf8_lossy(&s[..end]).into_owned()));
        }
    }
    Ok(None)
}

/// The cache's lock, held while a closure is built or the cache pruned.
pub fn lock_cache(cache_dir: &Path, timeout: Duration) -> Result<File, LauncherError> {
    let path = cache_dir.join(".lock");
    let what = "the launcher closure cache lock";
    let f = flock::open_private(&path, what)?;
    flock::lock_or_name_holder(
        &f,
        &path,
        what,
        timeout,
        "`lock_timeout_secs` in the lwk-runc config",
    )?;
    Ok(f)
}

/// Remove (under the cache lock) build directories whose builder is gone, and closures
/// that are not in `keep`, not mounted anywhere, and (with `only`) of that binary
/// name. Returns the names removed.
pub fn prune(cache_dir: &Path, keep: &[String], only: Option<&str>) -> Vec<String> {
    let Ok(rd) = fs::read_dir(cache_dir) else {
        return Vec::new();
    };
    let names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut removed = Vec::new();
    let mut mounted: Option<HashSet<String>> = None;
    for n in &names {
        let path = cache_dir.join(n);
        let gone = if n.starts_with('.') {
            n.contains(".tmp")
                && !crate::lwk::lease::tmp_owner_alive(n)
                && fs::remove_dir_all(&path).is_ok()
        } else {
            entry_binary(n).is_some()
                && !keep.contains(n)
                && only.is_none_or(|o| entry_binary(n) == Some(o))
                && !mounted
                    .get_or_insert_with(|| mounted_entries(cache_dir, &names))
                    .contains(n)
                // Not held by a process setting up a container; held while removed.
                && open_dir(&path).is_ok_and(|f| {
                    flock(&f, libc::LOCK_EX | libc::LOCK_NB) && fs::remove_dir_all(&path).is_ok()
                })
        };
        if gone {
            tracing::info!(entry = %n, "pruned the launcher closure cache");
            removed.push(n.clone());
        }
    }
    removed
}

/// The binary name of a cache entry `<name>-<16 hex digits>`.
fn entry_binary(n: &str) -> Option<&str> {
    let (name, key) = n.rsplit_once('-')?;
    (!name.is_empty() && key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(name)
}

/// Which of `names` (entries of `cache_dir`) some mount namespace has mounted: the
/// mountinfo root of a bind mount is its source's path within its file system.
fn mounted_entries(cache_dir: &Path, names: &[String]) -> HashSet<String> {
    let mut found = HashSet::new();
    let Ok(md) = fs::metadata(cache_dir) else {
        return found;
    };
    let dev = format!("{}:{}", libc::major(md.dev()), libc::minor(md.dev()));
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(ns) = fs::read_link(p.path().join("ns/mnt")) else {
            continue;
        };
        if !seen.insert(ns) {
            continue;
        }
        let Ok(info) = fs::read_to_string(p.path().join("mountinfo")) else {
            continue;
        };
        for line in info.lines() {
            let mut f = line.split(' ');
            let (Some(_), Some(_), Some(d), Some(root)) = (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if d != dev {
                continue;
            }
            for c in root.split('/') {
                if wanted.contains(c) {
                    found.insert(c.to_string());
                }
            }
        }
    }
    found
}

fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The file name a binary is invoked by (`mcexec`, `yod`), from its configured path.
pub fn invoked_name(p: &Path) -> &str {
    p.file_name().and_then(OsStr::to_str).unwrap_or("launcher")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(
        cache: &Path,
        name: &str,
        binary: &str,
        key_name: &str,
        patchelf: &str,
        container_dir: &Path,
    ) -> Result<Closure, LauncherError> {
        crate::trust::ensure_private_dir(cache).unwrap();
        closure_for(
            cache,
            &Want {
                name,
                binary: Path::new(binary),
                key_name,
                container_dir: container_dir.to_path_buf(),
            },
            &Build {
                patchelf: Path::new(patchelf),
                lock_timeout: Duration::from_secs(10),
            },
        )
    }

    #[test]
    fn parses_ld_list() {
        let t = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ld_list(t).unwrap(),
            vec![(
                "libc.so.6".to_string(),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
            )]
        );
        assert!(parse_ld_list("\tlibfoo.so => not found\n")
            .unwrap_err()
            .contains("libfoo.so"));
    }

    #[test]
    fn elf_interp_of_dynamic_and_static() {
        assert!(elf_interp(Path::new("/bin/true"))
            .unwrap()
            .unwrap()
            .contains("ld-linux"));
        if Path::new("/bin/busybox").exists() {
            assert_eq!(elf_interp(Path::new("/bin/busybox")).unwrap(), None);
        }
        assert!(
            elf_interp(Path::new("/etc/hostname")).is_err() || !Path::new("/etc/hostname").exists()
        );
    }

    /// Build a closure whose "container dir" is its own host dir, then run it with an
    /// empty environment: the copy must find its loader and libc through the closure only.
    #[test]
    fn dynamic_closure_runs_and_is_cached() {
        if !Path::new("/usr/bin/patchelf").exists() {
            return;
        }
        let cache = std::env::temp_dir().join(format!("lwk-closure-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&cache);
        // Stand in for the container's mount with a symlink to the built dir.
        let target = std::env::temp_dir().join(format!("lwk-closure-mnt-{}", std::process::id()));
        let c = get(
            &cache,
            "echo",
            "/bin/echo",
            "test",
            "/usr/bin/patchelf",
            &target,
        )
        .unwrap();
        let _ = fs::remove_file(&target);
        std::os::unix::fs::symlink(&c.host_dir, &target).unwrap();
        let interp = elf_interp(&c.host_dir.join("bin/echo")).unwrap().unwrap();
        assert!(interp.starts_with(target.to_str().unwrap()), "{interp}");
        let out = Command::new(&c.exe).arg("ok").env_clear().output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        let again = get(
            &cache,
            "echo",
            "/bin/echo",
            "test",
            "/usr/bin/patchelf",
            &target,
        )
        .unwrap();
        assert_eq!(again, c);
        let _ = fs::remove_dir_all(&cache);
        let _ = fs::remove_file(&target);
    }

    #[test]
    fn prune_removes_dead_builds_and_unused_versions_but_not_held_or_kept_ones() {
        let cache = std::env::temp_dir().join(format!("lwk-closure-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&cache);
        crate::trust::ensure_private_dir(&cache).unwrap();
        let mut dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let names = [
            format!(".mcexec-0000000000000001.tmp{dead_pid}"),
            format!(".mcexec-0000000000000002.tmp{}", std::process::id()),
            "mcexec-00000000000000aa".to_string(),
            "mcexec-00000000000000bb".to_string(),
            "mcexec-00000000000000cc".to_string(),
            "yod-00000000000000dd".to_string(),
            "not-a-closure".to_string(),
        ];
        for n in &names {
            fs::create_dir_all(cache.join(n).join("bin")).unwrap();
        }
        assert!(hold(&cache.join("mcexec-00000000000000bb")));
        let kept = ["mcexec-00000000000000cc".to_string()];
        let mut removed = prune(&cache, &kept, Some("mcexec"));
        removed.sort();
        assert_eq!(
            removed,
            vec![names[0].clone(), "mcexec-00000000000000aa".to_string()]
        );
        // Without a name, every unused version goes.
        assert_eq!(
            prune(&cache, &kept, None),
            vec!["yod-00000000000000dd".to_string()]
        );
        let _ = fs::remove_dir_all(&cache);
    }

    #[test]
    fn missing_patchelf_and_launcher_are_clear() {
        let cache = std::env::temp_dir().join(format!("lwk-closure-test2-{}", std::process::id()));
        let e = get(
            &cache,
            "true",
            "/bin/true",
            "test",
            "/nonexistent/patchelf",
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(matches!(e, LauncherError::NoPatchelf { .. }), "{e}");
        assert!(!fs::read_dir(&cache).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("true")));
        let e = get(
            &cache,
            "mcexec",
            "/nonexistent/mcexec",
            "mckernel.mcexec",
            "/usr/bin/patchelf",
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mckernel.mcexec"), "{e}");
        let _ = fs::remove_dir_all(&cache);
    }
}
