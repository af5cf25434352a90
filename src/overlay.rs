//! Handing libcontainer a rewritten spec without touching the caller's bundle.
//!
//! libcontainer 0.7 reads `<bundle>/config.json` from disk and records `<bundle>`
//! as the container's bundle; hooks and `state` report it. Writing the rewrite to
//! a private bundle would make every hook and engine see a path the caller never
//! gave. Instead, this process moves into its own mount namespace (a slave of the
//! host's, so host mounts still arrive) and bind-mounts the rewritten file over
//! `<bundle>/config.json` there. libcontainer reads the rewrite at the caller's
//! path; on disk, and for every other process, the bundle is what the caller wrote.
//!
//! The price, paid only by containers whose spec is rewritten: mounts the
//! container makes with `rshared` propagation do not travel back to the host.
//!
//! A user other than root (joining an LWK under `rootless_join`) may not make a mount
//! namespace from the host's; it first enters a user namespace of its own in which its
//! uid and gid map to themselves, which owns the new mount namespace. Its identity
//! (and so what it may reach on the host) does not change.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::Spec;

/// Makes `<bundle>/config.json` read as `spec` for this process and its children.
/// `scratch` is a path in the state root (a tmpfs) for the rewritten file; it is
/// unlinked as soon as it is mounted, so nothing of it outlives this process.
pub fn overlay_config(bundle: &Path, spec: &Spec, scratch: &Path) -> Result<()> {
    let target = bundle.join("config.json");
    let data = serde_json::to_vec(spec).context("serializing the rewritten spec")?;
    // (A memfd would be neater, but the kernel refuses to bind-mount from its internal mount.)
    let mut file = std::fs::File::create(scratch)
        .with_context(|| format!("creating {}", scratch.display()))?;
    let _unlink = crate::host::RemoveOnDrop(scratch.to_path_buf());
    file.write_all(&data)
        .with_context(|| format!("writing {}", scratch.display()))?;

    if !nix::unistd::geteuid().is_root() {
        enter_own_user_namespace()?;
    }
    unshare(CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace for the runtime")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the runtime's mount namespace a slave of the host's")?;
    mount(
        Some(scratch),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("placing the rewritten spec over {}", target.display()))?;
    Ok(())
}

/// Become the owner of a new user namespace, mapping this process' own uid and gid
/// to themselves (all a process without privileges may map).
fn enter_own_user_namespace() -> Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    unshare(CloneFlags::CLONE_NEWUSER).context("creating a user namespace for the runtime")?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).with_context(|| format!("writing {file}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}
