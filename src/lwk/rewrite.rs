//! Pure spec rewrite: (caller's Spec, LwkRequest, node facts) -> the Spec libcontainer runs.
//!
//! Nothing here touches the host; [`NodeFacts`] carries everything learnt from it (closure
//! dirs, device numbers), so every case is a unit test. The changes, in order:
//! `process.args` gets the launcher prefix; `root.path` becomes absolute (the rewritten
//! config.json lives in a private bundle dir, not next to the caller's rootfs); read-only
//! binds for the launcher closures under the container's /dev tmpfs; the LWK devices
//! (a device node + cgroup rule for a real char device, a rw bind for the simulator's
//! regular files); rw binds for sysfs views (mOS); the LWK's /proc and sysfs views removed
//! from maskedPaths/readonlyPaths; when the container has a seccomp profile, the
//! `personality` values the launcher must set (mcexec disables ASLR and re-execs itself,
//! which Docker's default profile forbids) are allowed.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Linux, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall, Mount, Process, Spec,
};

use crate::lwk::LwkRequest;

/// Where launcher closures appear in the container. Under /dev because /dev is a tmpfs
/// made for the container (by the spec, as Docker, podman and runc specs have it, or by
/// us when the spec mounts nothing there): the mount points of the closures and devices
/// are created in it, never in the caller's rootfs.
pub const CLOSURE_MOUNT_DIR: &str = "/dev/.lwk";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("the container has no process.args to run under the LWK launcher")]
    NoArgs,
    #[error("the container spec has no root.path")]
    NoRoot,
    #[error("the spec mounts {typ} {host} on /dev; an LWK container needs /dev to be a tmpfs (or no /dev mount at all, and lwk-runc makes one), because the launcher and the LWK device are added there and must not be written into {host}")]
    DevNotTmpfs { typ: String, host: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A real character device: create the node in the container and allow it in the device cgroup.
    Char { major: i64, minor: i64 },
    /// A regular file standing in for a device (simulator): bind-mount it read-write.
    File,
}

/// A bind of a host path (an LWK's sysfs view), writable or not, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindFact {
    pub host: PathBuf,
    pub container: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFact {
    pub host: PathBuf,
    pub container: PathBuf,
    pub kind: DeviceKind,
}

/// Host facts the rewrite needs, gathered by the drivers and the closure builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// (host dir, container dir) pairs bind-mounted read-only.
    pub closures: Vec<(PathBuf, PathBuf)>,
    /// argv before the container's launcher options (init, launcher, config launcher_args).
    pub head: Vec<String>,
    /// argv between the launcher options and the original args (e.g. mcexec's OS index).
    pub tail: Vec<String>,
    pub devices: Vec<DeviceFact>,
    /// Binds of the LWK's sysfs views (mOS: the directory read-only, yod's request
    /// files read-write on top of it), in this order.
    pub binds: Vec<BindFact>,
    /// Container dirs to cover with a fresh tmpfs first, when a bind target cannot be
    /// created in place (the simulator's /sys/kernel/mOS on a kernel without mOS).
    pub tmpfs: Vec<PathBuf>,
    /// Path prefixes to drop from maskedPaths and readonlyPaths.
    pub unmask: Vec<String>,
    /// `personality(2)` values the launcher sets; allowed in a seccomp profile if there is one.
    pub personalities: Vec<u64>,
}

/// `rootfs` is the caller's rootfs made absolute (bundle-relative paths resolved by the caller).
pub fn rewrite(
    spec: &Spec,
    req: &LwkRequest,
    facts: &NodeFacts,
    rootfs: &Path,
) -> Result<Spec, RewriteError> {
    let mut out = spec.clone();
    let mut root = out.root().clone().ok_or(RewriteError::NoRoot)?;
    root.set_path(rootfs.to_path_buf());
    out.set_root(Some(root));

    let mut process = out.process().clone().ok_or(RewriteError::NoArgs)?;
    prefix_process(&mut process, req, facts)?;
    out.set_process(Some(process));

    let mut mounts = out.mounts().clone().unwrap_or_default();
    let dev = Path::new("/dev");
    match mounts.iter().find(|m| m.destination() == dev) {
        Some(m) if m.typ().as_deref() == Some("tmpfs") => {}
        Some(m) => {
            return Err(RewriteError::DevNotTmpfs {
                typ: m.typ().clone().unwrap_or_else(|| "a mount".into()),
                host: m
                    .source()
                    .as_ref()
                    .map_or_else(|| "(no source)".into(), |p| p.display().to_string()),
            })
        }
        None => {
            // A /dev of our own, so that nothing is created in the caller's rootfs; it
            // goes before whatever the spec mounts under /dev (pts, shm, mqueue).
            let at = mounts
                .iter()
                .position(|m| m.destination().starts_with(dev))
                .unwrap_or(mounts.len());
            mounts.insert(at, dev_tmpfs());
        }
    }
    for (host, dest) in &facts.closures {
        mounts.push(bind(host, dest, &["rbind", "ro", "nosuid", "nodev"]));
    }
    for t in &facts.tmpfs {
        mounts.push(tmpfs_mount(t));
    }
    for b in &facts.binds {
        // Not recursive: a read-only remount would leave submounts writable.
        let mode = if b.writable { "rw" } else { "ro" };
        mounts.push(bind(
            &b.host,
            &b.container,
            &["bind", mode, "nosuid", "nodev", "noexec"],
        ));
    }
    let mut linux = out.linux().clone().unwrap_or_default();
    let mut devices = linux.devices().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    for d in &facts.devices {
        match d.kind {
            DeviceKind::File => mounts.push(bind(
                &d.host,
                &d.container,
                &["bind", "rw", "nosuid", "noexec"],
            )),
            DeviceKind::Char { major, minor } => {
                devices.retain(|x| x.path() != &d.container);
                let mut dev = LinuxDevice::default();
                dev.set_path(d.container.clone());
                dev.set_typ(LinuxDeviceType::C);
                dev.set_major(major);
                dev.set_minor(minor);
                dev.set_file_mode(Some(0o666));
                dev.set_uid(Some(0));
                dev.set_gid(Some(0));
                rules.push(LinuxDeviceCgroup::from(&dev));
                devices.push(dev);
            }
        }
    }
    if !devices.is_empty() {
        linux.set_devices(Some(devices));
    }
    if !rules.is_empty() {
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    let keep = |p: &String| {
        !facts
            .unmask
            .iter()
            .any(|u| p == u || p.starts_with(&format!("{u}/")))
    };
    if let Some(m) = linux.masked_paths().clone() {
        linux.set_masked_paths(Some(m.into_iter().filter(|p| keep(p)).collect()));
    }
    if let Some(r) = linux.readonly_paths().clone() {
        linux.set_readonly_paths(Some(r.into_iter().filter(|p| keep(p)).collect()));
    }
    allow_personalities(&mut linux, &facts.personalities);
    out.set_linux(Some(linux));
    out.set_mounts(Some(mounts));
    Ok(out)
}

/// When the container has a seccomp profile, allow the `personality(2)` values the
/// launcher sets (also for `exec`'d processes, which run under the same profile).
/// Rules for one syscall are OR'ed: these add to whatever the profile allows.
pub fn allow_personalities(linux: &mut Linux, personalities: &[u64]) {
    let Some(mut seccomp) = linux.seccomp().clone() else {
        return;
    };
    if personalities.is_empty() {
        return;
    }
    let mut syscalls = seccomp.syscalls().clone().unwrap_or_default();
    for &value in personalities {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .expect("all fields of a seccomp argument are set");
        let mut rule = LinuxSyscall::default();
        rule.set_names(vec!["personality".into()]);
        rule.set_action(LinuxSeccompAction::ScmpActAllow);
        rule.set_args(Some(vec![arg]));
        syscalls.push(rule);
    }
    seccomp.set_syscalls(Some(syscalls));
    linux.set_seccomp(Some(seccomp));
}

/// The part shared with `exec`: args become head + request options + tail + original args.
pub fn prefix_process(
    process: &mut Process,
    req: &LwkRequest,
    facts: &NodeFacts,
) -> Result<(), RewriteError> {
    let orig = process
        .args()
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or(RewriteError::NoArgs)?;
    let mut args =
        Vec::with_capacity(facts.head.len() + req.args.len() + facts.tail.len() + orig.len());
    args.extend(facts.head.iter().cloned());
    args.extend(req.args.iter().cloned());
    args.extend(facts.tail.iter().cloned());
    args.extend(orig);
    process.set_args(Some(args));
    Ok(())
}

fn bind(host: &Path, dest: &Path, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(host.to_path_buf()));
    m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
    m
}

/// The /dev Docker, podman and runc specs mount.
fn dev_tmpfs() -> Mount {
    tmpfs(
        Path::new("/dev"),
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    )
}

/// A small tmpfs for a bind to land on.
fn tmpfs_mount(dest: &Path) -> Mount {
    tmpfs(dest, &["nosuid", "noexec", "mode=755", "size=64k"])
}

fn tmpfs(dest: &Path, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some("tmpfs".into()));
    m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwk::LwkKind;

    fn base_spec() -> Spec {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap_or_default();
        p.set_args(Some(vec!["/bin/echo".into(), "hi".into()]));
        s.set_process(Some(p));
        s
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            closures: vec![("/run/c/mcexec-1".into(), "/dev/.lwk/mcexec".into())],
            head: vec!["/dev/.lwk/mcexec/bin/mcexec".into()],
            tail: vec!["0".into()],
            devices: vec![DeviceFact {
                host: "/dev/mcos0".into(),
                container: "/dev/mcos0".into(),
                kind: DeviceKind::Char {
                    major: 240,
                    minor: 0,
                },
            }],
            binds: vec![],
            tmpfs: vec![],
            unmask: vec!["/proc/mcos0".into(), "/sys/devices/virtual/mcos".into()],
            personalities: vec![],
        }
    }

    fn req() -> LwkRequest {
        LwkRequest {
            kind: LwkKind::McKernel,
            args: vec!["-t".into(), "4".into()],
        }
    }

    #[test]
    fn args_are_prefixed_and_root_made_absolute() {
        let out = rewrite(&base_spec(), &req(), &facts(), Path::new("/b/rootfs")).unwrap();
        let args = out.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(
            args,
            vec![
                "/dev/.lwk/mcexec/bin/mcexec",
                "-t",
                "4",
                "0",
                "/bin/echo",
                "hi"
            ]
        );
        assert_eq!(out.root().as_ref().unwrap().path(), Path::new("/b/rootfs"));
    }

    #[test]
    fn char_device_gets_node_and_cgroup_rule() {
        let out = rewrite(&base_spec(), &req(), &facts(), Path::new("/r")).unwrap();
        let linux = out.linux().as_ref().unwrap();
        let dev = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((dev.major(), dev.minor()), (240, 0));
        let rule = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert!(
            rule.allow() && rule.major() == Some(240) && rule.access().as_deref() == Some("rwm")
        );
    }

    #[test]
    fn file_device_is_a_rw_bind_and_closure_is_ro() {
        let mut f = facts();
        f.devices[0].kind = DeviceKind::File;
        f.devices[0].host = "/run/lwk-sim/dev/mcos0".into();
        let out = rewrite(&base_spec(), &req(), &f, Path::new("/r")).unwrap();
        let mounts = out.mounts().as_ref().unwrap();
        let dev = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/mcos0"))
            .unwrap();
        assert!(dev.options().as_ref().unwrap().contains(&"rw".to_string()));
        let cl = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/.lwk/mcexec"))
            .unwrap();
        assert!(cl.options().as_ref().unwrap().contains(&"ro".to_string()));
        // the default spec has a /dev tmpfs, so no extra tmpfs for the closure
        assert!(!mounts
            .iter()
            .any(|m| m.destination() == Path::new(CLOSURE_MOUNT_DIR)));
    }

    #[test]
    fn without_a_dev_mount_a_dev_tmpfs_of_our_own_comes_before_everything_under_dev() {
        let mut s = base_spec();
        let m: Vec<Mount> = s
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|m| m.destination() != Path::new("/dev"))
            .collect();
        s.set_mounts(Some(m));
        let out = rewrite(&s, &req(), &facts(), Path::new("/r")).unwrap();
        let mounts = out.mounts().as_ref().unwrap();
        let pos = |d: &str| mounts.iter().position(|m| m.destination() == Path::new(d));
        let dev = pos("/dev").expect("a /dev tmpfs");
        assert_eq!(mounts[dev].typ().as_deref(), Some("tmpfs"));
        for under in ["/dev/pts", "/dev/shm", "/dev/.lwk/mcexec"] {
            assert!(dev < pos(under).unwrap(), "{under} before /dev");
        }
        assert!(pos(CLOSURE_MOUNT_DIR).is_none());
    }

    #[test]
    fn a_dev_that_is_not_a_tmpfs_is_refused_rather_than_written_into() {
        let mut s = base_spec();
        let mut m = s.mounts().clone().unwrap();
        for x in m
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/dev"))
        {
            x.set_typ(Some("bind".into()));
            x.set_source(Some("/dev".into()));
        }
        s.set_mounts(Some(m));
        let err = rewrite(&s, &req(), &facts(), Path::new("/r")).unwrap_err();
        assert!(matches!(err, RewriteError::DevNotTmpfs { .. }), "{err}");
        assert!(
            err.to_string().contains("must not be written into /dev"),
            "{err}"
        );
    }

    #[test]
    fn lwk_views_are_unmasked() {
        let mut s = base_spec();
        let mut linux = s.linux().clone().unwrap();
        linux.set_masked_paths(Some(vec!["/proc/kcore".into(), "/proc/mcos0".into()]));
        linux.set_readonly_paths(Some(vec![
            "/sys/devices/virtual/mcos/mcos0".into(),
            "/proc/sys".into(),
        ]));
        s.set_linux(Some(linux));
        let out = rewrite(&s, &req(), &facts(), Path::new("/r")).unwrap();
        let l = out.linux().as_ref().unwrap();
        assert_eq!(
            l.masked_paths().as_ref().unwrap(),
            &vec!["/proc/kcore".to_string()]
        );
        assert_eq!(
            l.readonly_paths().as_ref().unwrap(),
            &vec!["/proc/sys".to_string()]
        );
    }

    #[test]
    fn launcher_personality_is_allowed_only_where_a_profile_exists() {
        let mut f = facts();
        f.personalities = vec![0x40000];
        let out = rewrite(&base_spec(), &req(), &f, Path::new("/b/rootfs")).unwrap();
        assert!(out.linux().as_ref().unwrap().seccomp().is_none());
        let mut spec = base_spec();
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut sc = oci_spec::runtime::LinuxSeccomp::default();
        sc.set_default_action(LinuxSeccompAction::ScmpActErrno);
        linux.set_seccomp(Some(sc));
        spec.set_linux(Some(linux));
        let out = rewrite(&spec, &req(), &f, Path::new("/b/rootfs")).unwrap();
        let calls = out
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .as_ref()
            .unwrap()
            .syscalls()
            .clone()
            .unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].names(), &vec!["personality".to_string()]);
        assert_eq!(calls[0].action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(calls[0].args().as_ref().unwrap()[0].value(), 0x40000);
    }

    #[test]
    fn no_args_is_an_error() {
        let mut s = base_spec();
        let mut p = s.process().clone().unwrap();
        p.set_args(None);
        s.set_process(Some(p));
        assert_eq!(
            rewrite(&s, &req(), &facts(), Path::new("/r")),
            Err(RewriteError::NoArgs)
        );
    }
}
