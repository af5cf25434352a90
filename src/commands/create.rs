//! `create`: build the container up to the point where only the user process is
//! left to start (runtime-spec "create"); the init waits for `start`.

use std::path::Path;

use anyhow::{Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Spec;

use super::{validate_id, Ctx, Record};
use crate::cli::CreateOpts;
use crate::executor::WorkloadExecutor;

pub fn run(ctx: &Ctx, opts: &CreateOpts) -> Result<()> {
    create(ctx, opts, false, None).map(|_| ())
}

/// Creates the container and returns it in the `created` state. Shared by `run`, which
/// sets `own_console` in the foreground: a spec asking for a terminal then gets one
/// through a console socket of ours when the caller passed none (see console.rs).
pub fn create(
    ctx: &Ctx,
    opts: &CreateOpts,
    own_console: bool,
    conexec: Option<&crate::lwk::ConexecServer>,
) -> Result<(Container, Option<crate::console::Listener>)> {
    let id = opts.container_id.as_str();
    validate_id(id)?;
    crate::failpoint::hit("create-begin");
    let bundle = std::fs::canonicalize(&opts.bundle).with_context(|| {
        format!(
            "bundle {} does not exist or is not accessible",
            opts.bundle.display()
        )
    })?;
    if ctx.container_dir(id).exists() {
        anyhow::bail!("container with id {id} already exists");
    }
    std::fs::create_dir_all(&ctx.root)
        .with_context(|| format!("creating state root {}", ctx.root.display()))?;

    let config_path = bundle.join("config.json");
    let spec = super::load_spec(&config_path)?;
    if let Some(p) = spec.process() {
        super::check_cwd(p.cwd(), &config_path)?;
    }

    check_rlimits(&spec, &config_path)?;

    let wants_tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let console = match (wants_tty, own_console, &opts.console_socket) {
        // '@' cannot appear in a container id, so this never meets a container's directory.
        (true, true, None) => Some(crate::console::Listener::bind(
            &ctx.root.join(format!("@console-{id}.sock")),
        )?),
        (true, false, None) => anyhow::bail!(
            "cannot allocate tty if lwk-runc will detach without setting console socket: \
             pass --console-socket, or set process.terminal to false in {}",
            config_path.display()
        ),
        _ => None,
    };
    let console_socket = console
        .as_ref()
        .map(|c| c.path.clone())
        .or_else(|| opts.console_socket.clone());

    // LWK: decide, take the lease (booting the LWK if first), rewrite. None = plain.
    let cfg = crate::config::Config::load()?;
    let prepared = crate::lwk::prepare_create(&cfg, &ctx.root, id, &bundle, &spec, conexec)?;
    let lwk = prepared.is_some();
    crate::failpoint::hit("create-rewritten");
    let (rewritten, pending, fenced) = match prepared {
        Some(p) => (Some(p.spec), p.pending, p.fenced),
        None => (None, None, false),
    };
    let build = || {
        build(
            ctx,
            opts,
            console_socket.as_ref(),
            id,
            &bundle,
            &spec,
            rewritten,
        )
    };
    let built = if fenced {
        crate::lwk::boundary::fenced(build)
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
    } else {
        build()
    };
    let container = match built {
        Ok(mut c) if lwk => {
            crate::failpoint::hit("create-built");
            let pid = c.pid().map_or(0, |p| p.as_raw());
            if let Err(err) = crate::lwk::container_created(&cfg, &ctx.root, id, pid, pending) {
                let _ = c.delete(true);
                let _ = crate::lwk::release(&cfg, &ctx.root, id);
                return Err(err.into());
            }
            crate::failpoint::hit("create-init-recorded");
            c
        }
        Ok(c) => c,
        Err(err) => {
            if lwk {
                if let Err(e) = crate::lwk::release(&cfg, &ctx.root, id) {
                    tracing::warn!(
                        "releasing the LWK of container {id} after a failed create: {e}"
                    );
                }
            }
            return Err(err);
        }
    };

    let rootfs = rootfs_of(&bundle, &spec);
    let record = Record {
        bundle,
        rootfs,
        init_start_time: container
            .pid()
            .and_then(|p| crate::host::start_time(p.as_raw())),
        poststart: hooks_of(&spec, |h| h.poststart()),
    };
    if let Err(err) = record.save(ctx, id) {
        // The container exists but we could not describe it: take it down rather than
        // leave a half-known container behind.
        let mut c = container;
        let _ = c.delete(true);
        if lwk {
            let _ = crate::lwk::release(&cfg, &ctx.root, id);
        }
        return Err(err);
    }
    crate::failpoint::hit("create-done");
    Ok((container, console))
}

/// Hands the spec to libcontainer — the caller's, or `rewritten` overlaid on it —
/// and builds the container.
fn build(
    ctx: &Ctx,
    opts: &CreateOpts,
    console_socket: Option<&std::path::PathBuf>,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    rewritten: Option<Spec>,
) -> Result<Container> {
    // startContainer hooks move from libcontainer to our executor (see executor.rs),
    // poststart hooks to `start` (see start.rs).
    let start_container_hooks = hooks_of(spec, |h| h.start_container());
    let has_poststart = !hooks_of(spec, |h| h.poststart()).is_empty();
    let mut rewritten = rewritten;
    if !start_container_hooks.is_empty() || has_poststart {
        let s = rewritten.get_or_insert_with(|| spec.clone());
        if let Some(hooks) = s.hooks_mut() {
            hooks.set_start_container(None);
            hooks.set_poststart(None);
        }
    }
    if let Some(s) = &rewritten {
        // '@' cannot appear in a container id, so this never meets a container's directory.
        let scratch = ctx.root.join(format!("@spec-{id}.json"));
        crate::overlay::overlay_config(bundle, s, &scratch)?;
    }
    let executor = WorkloadExecutor {
        start_container_hooks,
        id: id.to_owned(),
        bundle: bundle.to_path_buf(),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };

    ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(&ctx.root)
        .context("using the state root")?
        .with_pid_file(opts.pid_file.as_ref())
        .context("using the pid file")?
        .with_console_socket(console_socket)
        .with_preserved_fds(opts.preserve_fds)
        .validate_id()
        .with_context(|| format!("invalid container id {id:?}"))?
        .as_init(bundle)
        .with_systemd(ctx.systemd_cgroup)
        .with_detach(true)
        .with_no_pivot(opts.no_pivot)
        .build()
        .map_err(|err| anyhow::anyhow!(describe(&err)))
        .with_context(|| format!("creating container {id} from bundle {}", bundle.display()))
}

/// One kind of the spec's hooks, none when absent.
fn hooks_of(
    spec: &Spec,
    kind: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| kind(h).clone())
        .unwrap_or_default()
}

/// The kernel refuses to raise a hard rlimit without CAP_SYS_RESOURCE in the initial
/// user namespace, and libcontainer then reports only "intermediate process error
/// EPERM". Name the limit and what to do before anything is set up. (podman asks for
/// 1048576 open files by default; sandboxes often drop CAP_SYS_RESOURCE.)
fn check_rlimits(spec: &Spec, config_path: &Path) -> Result<()> {
    let Some(limits) = spec.process().as_ref().and_then(|p| p.rlimits().as_ref()) else {
        return Ok(());
    };
    let own_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        });
    for l in limits {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own; the type's value is the resource
        // number (libcontainer passes it to setrlimit the same way).
        if unsafe { libc::getrlimit(l.typ() as _, &mut cur) } != 0 || l.hard() <= cur.rlim_max {
            continue;
        }
        let may_raise = !own_userns && has_cap_sys_resource();
        let name = serde_json::to_value(l.typ())
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| format!("{:?}", l.typ()));
        if let Some(why) = rlimit_refusal(&name, l.hard(), cur.rlim_max, may_raise, own_userns) {
            anyhow::bail!("process.rlimits in {}: {why}", config_path.display());
        }
    }
    Ok(())
}

/// Why setting a hard limit of `want` would fail, given the current hard limit.
fn rlimit_refusal(
    name: &str,
    want: u64,
    cur: u64,
    may_raise: bool,
    own_userns: bool,
) -> Option<String> {
    if want <= cur || may_raise {
        return None;
    }
    let who = if own_userns {
        "a container with its own user namespace does not have it"
    } else {
        "lwk-runc runs without it here"
    };
    Some(format!(
        "{name} hard limit {want} is above the current hard limit {cur}, and raising it \
         needs CAP_SYS_RESOURCE ({who}); ask for at most {cur} \
         (docker/podman: --ulimit {}={cur}:{cur})",
        ulimit_name(name)
    ))
}

/// `RLIMIT_NOFILE` -> `nofile`, as docker and podman spell it for --ulimit.
fn ulimit_name(name: &str) -> String {
    name.trim_start_matches("RLIMIT_").to_ascii_lowercase()
}

/// CAP_SYS_RESOURCE (bit 24) in this process's effective set.
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The bundle's rootfs as an absolute path, for `state`.
fn rootfs_of(bundle: &std::path::Path, spec: &Spec) -> std::path::PathBuf {
    match spec.root().as_ref().map(|r| r.path()) {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => bundle.join(p),
        None => bundle.join("rootfs"),
    }
}

/// libcontainer nests the useful part of an error (the init's message, the
/// executable that was not found) inside generic wrappers; bring it all into one line.
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_a_hard_rlimit_without_the_capability_is_named() {
        assert_eq!(
            rlimit_refusal("RLIMIT_NOFILE", 1024, 20000, false, false),
            None
        );
        assert_eq!(
            rlimit_refusal("RLIMIT_NOFILE", 1 << 20, 20000, true, false),
            None
        );
        let why = rlimit_refusal("RLIMIT_NOFILE", 1 << 20, 20000, false, false).unwrap();
        assert!(
            why.contains("RLIMIT_NOFILE hard limit 1048576")
                && why.contains("CAP_SYS_RESOURCE")
                && why.contains("--ulimit nofile=20000:20000"),
            "{why}"
        );
        let why = rlimit_refusal("RLIMIT_NPROC", 10, 5, false, true).unwrap();
        assert!(why.contains("own user namespace"), "{why}");
    }
}
