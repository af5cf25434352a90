//! The spec of a job's container: what MPI needs, on top of the caller's bundle or a
//! bare rootfs. Ranks share the host's network (PMIx and PMI rendezvous on loopback,
//! the interconnect), IPC and UTS namespaces (shared memory, the host name the
//! launcher knows the node by); they share one PID namespace and one mount namespace
//! of their own; the launcher's rendezvous directories and the host's /dev/shm are
//! bound at their own paths; the container runs as the calling user.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec, UserBuilder};

use super::proto::Launch;
use super::server::RANK_ARGV;
use super::Job;
use crate::cli::ConexecArgs;
use crate::lwk::policy::ANN_KERNEL;

/// Variables naming directories the MPI launcher's local server shares with its ranks.
const RENDEZVOUS_VARS: &[&str] = &[
    "PMIX_SERVER_TMPDIR",
    "OMPI_MCA_orte_top_session_dir",
    "OMPI_MCA_orte_jobfam_session_dir",
    "PMIX_SYSTEM_TMPDIR",
    "OMPI_MCA_orte_tmpdir_base",
];

/// Write the job's bundle (config.json only; the rootfs stays where it is) and say
/// which kernel it asks for. `image_rootfs`: the job's mounted image (`--image`).
pub fn write_bundle(
    a: &ConexecArgs,
    job: &Job,
    _ppn: u32,
    launch: &Launch,
    env: &[(String, String)],
    image_rootfs: Option<&Path>,
) -> Result<String> {
    let rootfs_arg = a.rootfs.clone().or(image_rootfs.map(Path::to_path_buf));
    let (mut spec, rootfs) = match (&a.bundle, &rootfs_arg) {
        (Some(b), None) => {
            let path = b.join("config.json");
            let spec = crate::commands::load_spec(&path)?;
            let rel = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| "rootfs".into());
            let rootfs = if rel.is_absolute() { rel } else { b.join(rel) };
            (spec, rootfs)
        }
        (None, Some(r)) => (Spec::default(), r.clone()),
        _ => bail!("conexec needs exactly one of --bundle DIR, --rootfs DIR and --image REF"),
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .with_context(|| format!("the job's rootfs {} is not accessible", rootfs.display()))?;
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs.clone());
    spec.set_root(Some(root));
    let kernel = a
        .lwk
        .clone()
        .or_else(|| super::env_of(env, "LWK_KERNEL").map(String::from))
        .or_else(|| {
            spec.annotations()
                .as_ref()
                .and_then(|m| m.get(ANN_KERNEL).cloned())
        })
        .unwrap_or_else(|| "none".into());
    let mut ann = spec.annotations().clone().unwrap_or_default();
    ann.insert(ANN_KERNEL.into(), kernel.clone());
    spec.set_annotations(Some(ann));
    let changes = fit_for_mpi(&mut spec, launch, &rootfs)?;
    if a.bundle.is_some() {
        for c in &changes {
            tracing::debug!("conexec: changed the bundle's spec: {c}");
        }
    }
    std::fs::create_dir_all(job.bundle())
        .with_context(|| format!("creating {}", job.bundle().display()))?;
    let path = job.bundle().join("config.json");
    spec.save(&path)
        .map_err(|e| anyhow::anyhow!(crate::commands::describe_error(&e)))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(kernel)
}

/// Override what MPI needs; returns what was changed, for --debug.
pub fn fit_for_mpi(spec: &mut Spec, launch: &Launch, rootfs: &Path) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(vec![RANK_ARGV.into()]));
    process.set_terminal(Some(false));
    process.set_cwd("/".into());
    let user = UserBuilder::default()
        .uid(launch.uid)
        .gid(launch.gid)
        .additional_gids(launch.groups.clone())
        .build()
        .context("building the container's user")?;
    process.set_user(user);
    changes.push(format!(
        "process: the rank server, as uid {} gid {}",
        launch.uid, launch.gid
    ));
    spec.set_process(Some(process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    let before = ns.len();
    ns.retain(|n| {
        !matches!(
            n.typ(),
            LinuxNamespaceType::Network
                | LinuxNamespaceType::Ipc
                | LinuxNamespaceType::Uts
                | LinuxNamespaceType::User
        )
    });
    for want in [LinuxNamespaceType::Pid, LinuxNamespaceType::Mount] {
        if !ns.iter().any(|n| n.typ() == want) {
            let mut n = oci_spec::runtime::LinuxNamespace::default();
            n.set_typ(want);
            ns.push(n);
        }
    }
    if ns.len() != before {
        changes.push("namespaces: host network, IPC and UTS; one PID and mount namespace".into());
    }
    linux.set_namespaces(Some(ns));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    spec.set_linux(Some(linux));
    spec.set_hostname(None);

    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
    if !mounts.iter().any(|m| m.destination() == Path::new("/proc")) {
        mounts.push(mount(
            "/proc",
            "proc",
            "proc",
            &["nosuid", "noexec", "nodev"],
        ));
    }
    if !mounts.iter().any(|m| m.destination() == Path::new("/sys")) {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ));
    }
    if !mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        mounts.push(mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ));
    }
    mounts.push(bind(Path::new("/dev/shm"), Path::new("/dev/shm")));
    changes.push("/dev/shm: the host's".into());
    if !mounts.iter().any(|m| m.destination() == Path::new("/tmp")) {
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        ));
    }
    for dir in rendezvous_dirs(&launch.env) {
        changes.push(format!("{}: bound from the host", dir.display()));
        mounts.push(bind(&dir, &dir));
    }
    let cwd = Path::new(&launch.cwd);
    if cwd != Path::new("/") && !rootfs.join(cwd.strip_prefix("/").unwrap_or(cwd)).is_dir() {
        changes.push(format!(
            "{}: the rank's working directory, bound from the host",
            cwd.display()
        ));
        mounts.push(bind(cwd, cwd));
    }
    spec.set_mounts(Some(mounts));
    Ok(changes)
}

/// The launcher's rendezvous directories that exist, outermost only, never `/` or `/tmp`
/// itself (the container's /tmp is its own).
pub fn rendezvous_dirs(env: &[String]) -> Vec<PathBuf> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    for var in RENDEZVOUS_VARS {
        let prefix = format!("{var}=");
        let Some(v) = env.iter().find_map(|e| e.strip_prefix(&prefix)) else {
            continue;
        };
        let p = PathBuf::from(v.trim_end_matches('/'));
        if p.is_absolute() && p != Path::new("/") && p != Path::new("/tmp") && p.is_dir() {
            found.insert(p);
        }
    }
    let all: Vec<PathBuf> = found.iter().cloned().collect();
    found
        .into_iter()
        .filter(|p| !all.iter().any(|q| q != p && p.starts_with(q)))
        .collect()
}

fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(src.into()));
    m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(src: &Path, dest: &Path) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src.into()));
    m.set_options(Some(
        ["rbind", "rw", "nosuid", "nodev"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_existing_rendezvous_dirs_are_bound() {
        let t = std::env::temp_dir().join(format!("conexec-rdv-{}", std::process::id()));
        let inner = t.join("pid.1");
        std::fs::create_dir_all(&inner).unwrap();
        let env = vec![
            format!("PMIX_SERVER_TMPDIR={}", inner.display()),
            format!("OMPI_MCA_orte_top_session_dir={}/", t.display()),
            "PMIX_SYSTEM_TMPDIR=/tmp".into(),
            "OMPI_MCA_orte_tmpdir_base=/does/not/exist".into(),
        ];
        assert_eq!(rendezvous_dirs(&env), vec![t.clone()]);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn an_mpi_container_shares_the_host_network_and_runs_as_the_caller() {
        let mut s = Spec::default();
        let l = Launch {
            argv: vec!["a".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 1000,
            gid: 100,
            groups: vec![],
            umask: 0o22,
            extra_fds: vec![],
        };
        fit_for_mpi(&mut s, &l, Path::new("/nonexistent")).unwrap();
        let ns: Vec<_> = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(ns.iter().all(|n| !matches!(
            n.typ(),
            LinuxNamespaceType::Network | LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts
        )));
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.args().as_ref().unwrap(), &vec![RANK_ARGV.to_string()]);
        assert!(s.mounts().as_ref().unwrap().iter().any(|m| m.destination()
            == Path::new("/dev/shm")
            && m.typ().as_deref() == Some("bind")));
    }
}
