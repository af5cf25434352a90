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
//! pays one `stat` when the cache is warm.
//!
//! Host requirement: `patchelf` (config key `patchelf`) for dynamically linked launchers.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
}

/// A ready closure: mount `host_dir` read-only at `container_dir`, run `exe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    pub host_dir: PathBuf,
    pub container_dir: PathBuf,
    /// In-container path of the binary.
    pub exe: PathBuf,
}

/// Get (building if needed) the closure of `binary`, to be mounted at `container_dir`.
/// `name` is the file name the binary gets inside (multi-call binaries dispatch on it).
pub fn closure_for(
    cache_dir: &Path,
    name: &str,
    binary: &Path,
    key_name: &str,
    patchelf: &Path,
    container_dir: &Path,
) -> Result<Closure, LauncherError> {
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
    let host_dir = cache_dir.join(format!("{name}-{key:016x}"));
    let closure = Closure {
        host_dir: host_dir.clone(),
        container_dir: container_dir.to_path_buf(),
        exe: container_dir.join("bin").join(name),
    };
    if host_dir.is_dir() {
        return Ok(closure);
    }
    let build_err = |what: String| LauncherError::Build {
        binary: real.clone(),
        what,
    };
    fs::create_dir_all(cache_dir)
        .map_err(|e| build_err(format!("creating cache dir {}: {e}", cache_dir.display())))?;
    let lock = File::create(cache_dir.join(".lock"))
        .map_err(|e| build_err(format!("opening cache lock: {e}")))?;
    flock_exclusive(&lock).map_err(|e| build_err(format!("locking the closure cache: {e}")))?;
    // Another process may have built it while we waited.
    if host_dir.is_dir() {
        return Ok(closure);
    }
    let tmp = cache_dir.join(format!(".{name}-{key:016x}.tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let res = build(&real, name, patchelf, container_dir, &tmp).and_then(|_| {
        fs::rename(&tmp, &host_dir)
            .map_err(|e| build_err(format!("publishing {}: {e}", host_dir.display())))
    });
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res.map(|_| closure)
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
    fs::create_dir_all(&bin_dir).map_err(|e| err(format!("mkdir {}: {e}", bin_dir.display())))?;
    let exe = bin_dir.join(name);
    fs::copy(real, &exe).map_err(|e| err(format!("copying to {}: {e}", exe.display())))?;
    let Some(interp) = elf_interp(&exe)? else {
        return Ok(()); // static: runs anywhere as is
    };
    fs::create_dir_all(&lib_dir).map_err(|e| err(format!("mkdir {}: {e}", lib_dir.display())))?;
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

pub(crate) fn flock_exclusive(f: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a valid, owned fd.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
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
        let c = closure_for(
            &cache,
            "echo",
            Path::new("/bin/echo"),
            "test",
            Path::new("/usr/bin/patchelf"),
            &target,
        )
        .unwrap();
        let _ = fs::remove_file(&target);
        std::os::unix::fs::symlink(&c.host_dir, &target).unwrap();
        let interp = elf_interp(&c.host_dir.join("bin/echo")).unwrap().unwrap();
        assert!(interp.starts_with(target.to_str().unwrap()), "{interp}");
        let out = Command::new(&c.exe).arg("ok").env_clear().output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        let again = closure_for(
            &cache,
            "echo",
            Path::new("/bin/echo"),
            "test",
            Path::new("/usr/bin/patchelf"),
            &target,
        )
        .unwrap();
        assert_eq!(again, c);
        let _ = fs::remove_dir_all(&cache);
        let _ = fs::remove_file(&target);
    }

    #[test]
    fn missing_patchelf_and_launcher_are_clear() {
        let cache = std::env::temp_dir().join(format!("lwk-closure-test2-{}", std::process::id()));
        let e = closure_for(
            &cache,
            "true",
            Path::new("/bin/true"),
            "test",
            Path::new("/nonexistent/patchelf"),
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(matches!(e, LauncherError::NoPatchelf { .. }), "{e}");
        assert!(!fs::read_dir(&cache).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("true")));
        let e = closure_for(
            &cache,
            "mcexec",
            Path::new("/nonexistent/mcexec"),
            "mckernel.mcexec",
            Path::new("/usr/bin/patchelf"),
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mckernel.mcexec"), "{e}");
        let _ = fs::remove_dir_all(&cache);
    }
}
