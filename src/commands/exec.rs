//! `exec`: run a new process inside a running container.
//!
//! The process is always described to libcontainer as a process.json: either the
//! caller's (`--process`, what containerd and conmon pass) or one built here from
//! the container's own process with the command-line overrides applied. That is
//! the only way libcontainer 0.7 honours `--tty`, and it gives one place where the
//! process can be examined before it runs.

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::{Process, Spec};

use super::{load, status_name, wait, Ctx};
use crate::cli::Exec;
use crate::commands::create::describe;
use crate::lwk::policy;

pub fn run(ctx: &Ctx, args: &Exec) -> Result<i32> {
    let id = args.container_id.as_str();
    let container = load(ctx, id)?;
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused if args.ignore_paused => {}
        other => bail!(
            "cannot exec in a container that is {}: {id}",
            status_name(other)
        ),
    }

    let load_spec = || {
        let spec_path = container.bundle().join("config.json");
        super::load_spec(&spec_path)
            .with_context(|| format!("loading the container's spec {}", spec_path.display()))
    };
    let env_of = |spec: &Spec| {
        spec.process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default()
    };
    // `inherited`: the container's own env entries this process may carry without
    // asking for anything (see lwk::policy on exec).
    let (mut process, inherited) = match &args.process {
        Some(path) => {
            let data = super::read_spec_file(path)
                .with_context(|| format!("reading process file {}", path.display()))?;
            let process = serde_json::from_slice::<Process>(&data)
                .with_context(|| format!("parsing process file {}", path.display()))?;
            // Only a process that names an LWK needs the container's env to compare with.
            let names_lwk = process.env().as_ref().is_some_and(|e| policy::names_lwk(e));
            let inherited = if names_lwk {
                env_of(&load_spec()?)
            } else {
                Vec::new()
            };
            (process, inherited)
        }
        None => {
            if args.command.is_empty() {
                bail!("exec needs a command to run, or --process");
            }
            let spec = load_spec()?;
            let inherited = policy::exec_inherited(env_of(&spec), &args.env);
            (
                process_from_args(spec.process().clone().unwrap_or_default(), args)?,
                inherited,
            )
        }
    };

    let origin = args
        .process
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("the exec arguments"));
    super::check_cwd(process.cwd(), &origin)?;

    // An exec'd process runs on Linux unless its own env asks for the LWK.
    let cfg = crate::config::Config::load()?;
    let asked = crate::lwk::rewrite_exec_process(&cfg, &ctx.root, id, &mut process, &inherited)?;
    // libcontainer reads the container's spec from the bundle again; where the exec'd
    // process needs it changed (its seccomp profile in an LWK container), it reads ours.
    if let Some(kind) = crate::lwk::exec_lwk(&cfg, &ctx.root, id, asked) {
        if let Some(spec) = crate::lwk::exec_spec(&cfg, id, kind, &load_spec()?)? {
            let scratch = ctx
                .container_dir(id)
                .join(format!("exec-{}-spec.json", std::process::id()));
            crate::overlay::overlay_config(container.bundle(), &spec, &scratch)?;
        }
    }

    // Written inside the container's state directory, which only root can reach.
    let process_file = ctx
        .container_dir(id)
        .join(format!("exec-{}.json", std::process::id()));
    let _cleanup = crate::host::RemoveOnDrop(process_file.clone());
    std::fs::write(&process_file, serde_json::to_vec(&process)?)
        .with_context(|| format!("writing {}", process_file.display()))?;

    let sub_cgroup = args.cgroup.iter().find_map(|c| match c.split_once(':') {
        None => Some(c.clone()),
        Some(_) => None,
    });
    let build = || {
        ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_executor(crate::executor::WorkloadExecutor::default())
            .with_root_path(&ctx.root)
            .context("using the state root")?
            .with_console_socket(args.console_socket.as_ref())
            .with_pid_file(args.pid_file.as_ref())
            .context("using the pid file")?
            .with_preserved_fds(args.preserve_fds)
            .validate_id()
            .with_context(|| format!("invalid container id {id:?}"))?
            .as_tenant()
            .with_detach(args.detach)
            .with_process(Some(&process_file))
            .with_ignore_paused(args.ignore_paused)
            .with_sub_cgroup(sub_cgroup)
            .build()
            .map_err(|err| anyhow::anyhow!(describe(&err)))
            .with_context(|| format!("executing a process in container {id}"))
    };
    // Any process of an LWK container, exec'd ones too, carries the device boundary.
    let pid = if crate::lwk::exec_fenced(&cfg, &ctx.root, id) {
        crate::lwk::boundary::fenced(build)??
    } else {
        build()?
    };

    if args.detach {
        return Ok(0);
    }
    let signals = wait::block(false)?;
    wait::wait_forwarding(pid, &signals, &|| {})
}

/// The container's process with runc's `exec` flags applied on top.
fn process_from_args(mut process: Process, args: &Exec) -> Result<Process> {
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    process.set_console_size(None);
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    for kv in &args.env {
        let Some((key, _)) = kv.split_once('=') else {
            bail!("invalid environment variable {kv:?}: expected KEY=VALUE");
        };
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(kv.clone());
    }
    process.set_env(Some(env));
    if let Some(user) = &args.user {
        let (uid, gid) = parse_user(user)?;
        let mut u = process.user().clone();
        u.set_uid(uid);
        if let Some(gid) = gid {
            u.set_gid(gid);
        }
        if !args.additional_gids.is_empty() {
            u.set_additional_gids(Some(args.additional_gids.clone()));
        }
        process.set_user(u);
    } else if !args.additional_gids.is_empty() {
        let mut u = process.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        process.set_user(u);
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap = parse_capability(name)?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(p);
        }
        process.set_capabilities(Some(caps));
    }
    Ok(process)
}

/// runc's capability names (`CAP_KILL`); the bare form (`KILL`) is accepted too, as
/// in a spec. oci-spec's `FromStr` knows only its own enum spelling, its deserializer
/// knows the spec's.
fn parse_capability(name: &str) -> Result<oci_spec::runtime::Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))
}

/// runc's `--user uid[:gid]` (numeric only, as in runc).
fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let bad = || anyhow::anyhow!("invalid --user {s:?}: expected <uid>[:<gid>]");
    match s.split_once(':') {
        Some((u, g)) => Ok((
            u.parse().map_err(|_| bad())?,
            Some(g.parse().map_err(|_| bad())?),
        )),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_flag_forms() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("1000:100").unwrap(), (1000, Some(100)));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn capability_names_as_runc_spells_them() {
        use oci_spec::runtime::Capability;
        assert_eq!(parse_capability("CAP_KILL").unwrap(), Capability::Kill);
        assert_eq!(
            parse_capability("CAP_NET_ADMIN").unwrap(),
            Capability::NetAdmin
        );
        assert_eq!(parse_capability("SYS_ADMIN").unwrap(), Capability::SysAdmin);
        let e = parse_capability("CAP_NOPE").unwrap_err().to_string();
        assert!(e.contains("unknown capability \"CAP_NOPE\""), "{e}");
    }
}
