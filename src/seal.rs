//! CVE-2019-5736 protection: make `/proc/self/exe` of every runtime process that
//! joins a container point at a file that cannot be opened for writing.
//!
//! runc 1.1 and youki copy the whole binary into a sealed memfd on every command,
//! which costs ~10 ms for a binary of this size. Here the binary is re-executed from
//! a detached, read-only bind mount of itself (`open_tree(OPEN_TREE_CLONE)` +
//! `mount_setattr(MOUNT_ATTR_RDONLY)` + `execveat`): nothing is copied, no mount is
//! ever attached to any namespace, and a write through /proc/<pid>/exe fails with
//! EROFS. Kernels without the new mount API (< 5.12) fall back to the memfd copy.
//! A binary that already lives on a read-only mount needs neither.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

const MEMFD_NAME: &str = "lwk-runc-sealed";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The commands that build or join a container, by the names clap selects them by.
const SEALED_COMMANDS: [&str; 4] = ["create", "run", "exec", "conexec"];

/// Whether a command line may select a command that must run sealed: any argument
/// spelling one of their names counts. A container or file named "run" costs a needless
/// re-exec, never a missed one (clap selects a command only by a name in argv); the
/// parsed command is checked again after parsing in any case.
pub fn named_in(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .any(|a| SEALED_COMMANDS.iter().any(|c| a.as_os_str() == *c))
}

/// Returns only if the running binary is already sealed; otherwise re-executes it sealed.
pub fn ensure_sealed() -> Result<()> {
    if is_sealed()? {
        return Ok(());
    }
    let fd = match readonly_clone() {
        Ok(fd) => fd,
        Err(err) if falls_back(&err) => {
            memfd_copy().context("copying the runtime binary into a sealed memfd")?
        }
        Err(err) => return Err(err).context("making a read-only clone of the runtime binary"),
    };
    reexec(&fd)
}

/// Whether a failed read-only clone means "this kernel cannot" (use the memfd copy)
/// rather than a real error.
pub fn falls_back(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EINVAL)
    )
}

/// `doctor`: does the read-only clone work on this kernel? The clone is detached and
/// dropped at once; nothing is attached anywhere.
pub fn probe() -> io::Result<()> {
    readonly_clone().map(drop)
}

fn is_sealed() -> Result<bool> {
    let st = nix::sys::statvfs::statvfs("/proc/self/exe").context("statvfs /proc/self/exe")?;
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Ok(true);
    }
    let target = std::fs::read_link("/proc/self/exe").context("readlink /proc/self/exe")?;
    Ok(target
        .to_string_lossy()
        .starts_with(&format!("/memfd:{MEMFD_NAME}")))
}

fn readonly_clone() -> io::Result<OwnedFd> {
    let path = c"/proc/self/exe";
    // SAFETY: plain syscalls with valid pointers; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: attr lives across the call and its size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn memfd_copy() -> Result<OwnedFd> {
    let name = CString::new(MEMFD_NAME)?;
    // SAFETY: valid C string; the fd is owned below.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: memfd_create returned a new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut src = File::open("/proc/self/exe")?;
    let mut dst = File::from(fd.try_clone()?);
    io::copy(&mut src, &mut dst)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(fd)
}

fn reexec(fd: &OwnedFd) -> Result<()> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_encoded_bytes()))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_encoded_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let empty = c"";
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    bail!(
        "re-executing the sealed runtime binary: {}",
        io::Error::last_os_error()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_naming_a_sealed_command_is_sealed_before_parsing() {
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        for sealed in [
            &["lwk-runc", "create", "--bundle", "b", "id"][..],
            &[
                "lwk-runc",
                "--root",
                "/r",
                "--log-format",
                "json",
                "run",
                "id",
            ],
            &["lwk-runc", "--debug", "exec", "id", "true"],
            &["lwk-runc", "conexec", "--", "true"],
            &["lwk-runc", "state", "run"],
        ] {
            assert!(named_in(&argv(sealed)), "{sealed:?}");
        }
        for plain in [
            &["run"][..],
            &["lwk-runc", "state", "id"],
            &["lwk-runc", "--root", "/run/x", "delete", "created"],
        ] {
            assert!(!named_in(&argv(plain)), "{plain:?}");
        }
    }
}
