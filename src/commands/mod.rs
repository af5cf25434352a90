//! One file per runc command. Each is thin: arguments in, libcontainer (and, for
//! containers that ask for one, the LWK layer) called, result out. What they share
//! — the state root, loading a container with runc's error strings, the record we
//! keep beside libcontainer's state — lives here.

mod checkpoint;
mod conexec;
mod create;
mod delete;
mod doctor;
mod events;
mod exec;
mod features;
mod image;
mod kill;
mod list;
mod lwk;
mod pause;
mod ps;
mod run;
mod setup_engine;
mod spec;
mod start;
mod state;
mod update;
mod wait;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, Command, GlobalOpts};

/// What every command needs from the global flags.
pub struct Ctx {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Ctx {
    fn new(global: &GlobalOpts) -> Self {
        let root = global.root.clone().unwrap_or_else(default_root);
        Ctx {
            root,
            systemd_cgroup: global.systemd_cgroup,
        }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

/// `/run/lwk-runc` for root; `$XDG_RUNTIME_DIR/lwk-runc` otherwise, as runc does.
/// podman passes no `--root`, so this must not depend on anything but the user.
fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/lwk-runc");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("lwk-runc"),
        _ => std::env::temp_dir().join(format!("lwk-runc-{}", nix::unistd::geteuid())),
    }
}

pub fn dispatch(cli: Cli) -> Result<i32> {
    let ctx = Ctx::new(&cli.global);
    match cli.command {
        Command::Create(args) => create::run(&ctx, &args.opts).map(|_| 0),
        Command::Start(args) => start::run(&ctx, &args.container_id).map(|_| 0),
        Command::State(args) => state::run(&ctx, &args.container_id).map(|_| 0),
        Command::Kill(args) => kill::run(&ctx, &args).map(|_| 0),
        Command::Delete(args) => delete::run(&ctx, &args.container_id, args.force).map(|_| 0),
        Command::Run(args) => run::run(&ctx, &args),
        Command::Exec(args) => exec::run(&ctx, &args),
        Command::Ps(args) => ps::run(&ctx, &args).map(|_| 0),
        Command::List(args) => list::run(&ctx, &args).map(|_| 0),
        Command::Spec(args) => {
            let rootless = cli.global.rootless.as_deref() == Some("true");
            spec::run(&args, rootless).map(|_| 0)
        }
        Command::Pause(args) => pause::pause(&ctx, &args.container_id).map(|_| 0),
        Command::Resume(args) => pause::resume(&ctx, &args.container_id).map(|_| 0),
        Command::Events(args) => events::run(&ctx, &args).map(|_| 0),
        Command::Update(args) => update::run(&ctx, &args).map(|_| 0),
        Command::Features => features::run().map(|_| 0),
        Command::Checkpoint(_) => checkpoint::unsupported("checkpoint"),
        Command::Restore(_) => checkpoint::unsupported("restore"),
        Command::Lwk(args) => lwk::admin(&ctx, &args.action).map(|_| 0),
        Command::Hook(args) => lwk::hook(args.stage).map(|_| 0),
        Command::Doctor(args) => doctor::run(&args),
        Command::SetupEngine(args) => setup_engine::run(&args),
        Command::Image(args) => image::run(&args.action).map(|_| 0),
        Command::LwkReap { secs } => lwk::reap(secs).map(|_| 0),
        Command::Conexec(args) => conexec::run(&ctx, &args),
        Command::ConexecReap { id } => crate::conexec::reap(&ctx, &id).map(|_| 0),
        Command::RunReap {
            pidfd,
            done,
            init,
            id,
        } => run::reap(&ctx, &id, pidfd, done, init).map(|_| 0),
    }
}

/// Create a job container for `conexec`: the rank server as its init.
pub fn create_container(
    ctx: &Ctx,
    opts: &crate::cli::CreateOpts,
    server: &crate::lwk::ConexecServer,
) -> Result<Container> {
    create::create(ctx, opts, false, Some(server)).map(|(c, _)| c)
}

pub fn start_container(ctx: &Ctx, c: &mut Container) -> Result<()> {
    start::start(ctx, c)
}

/// `delete [--force]`, lease release included.
pub fn delete_container(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    delete::run(ctx, id, force)
}

/// The init pid of a container that is not known to have stopped.
pub fn container_pid(ctx: &Ctx, id: &str) -> Option<i32> {
    let c = load(ctx, id).ok()?;
    if c.status() == ContainerStatus::Stopped {
        return None;
    }
    c.pid().map(|p| p.as_raw())
}

pub use create::describe as describe_error;

/// The largest config.json (or process.json) read. Runtime-spec files are a few KiB; a
/// process's args and env must fit the kernel's 2 MiB exec limit anyway. Parsing costs
/// about eight times the file's size in memory, so this bounds `create` near 40 MiB.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Read a runtime-spec JSON file of at most [`MAX_SPEC_BYTES`].
pub fn read_spec_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    f.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > MAX_SPEC_BYTES {
        bail!(
            "{} is {} bytes; lwk-runc reads runtime-spec files of at most {MAX_SPEC_BYTES} bytes              (4 MiB), so it is refused unread: shrink it (large data belongs in the rootfs or a mount,              not in config.json)",
            path.display(),
            len.max(buf.len() as u64)
        );
    }
    Ok(buf)
}

/// A bundle's config.json, bounded in size (see [`MAX_SPEC_BYTES`]).
pub fn load_spec(path: &Path) -> Result<Spec> {
    let buf = read_spec_file(path)?;
    serde_json::from_slice(&buf).with_context(|| format!("parsing {}", path.display()))
}

/// runtime-spec: `process.cwd` must be an absolute path; runc refuses any other with
/// these words, before anything is set up.
pub fn check_cwd(cwd: &Path, file: &Path) -> Result<()> {
    if !cwd.is_absolute() {
        bail!(
            "Cwd must be an absolute path: process.cwd is {:?} in {}; give the full path              inside the container (e.g. \"/{}\")",
            cwd.display().to_string(),
            file.display(),
            cwd.display()
        );
    }
    Ok(())
}

/// runc's rule for container ids: `[\w+.-]+`, and not `.` or `..`. Checked before
/// anything touches the state root, so a hostile id can never name a path.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if !ok {
        bail!("invalid container id format: {id:?} (allowed: letters, digits, '_', '+', '-', '.')");
    }
    Ok(())
}

/// Loads a container, with the error string engines match on when it is absent
/// (containerd's shim ignores "does not exist" on delete and kill).
pub fn load(ctx: &Ctx, id: &str) -> Result<Container> {
    validate_id(id)?;
    let dir = ctx.container_dir(id);
    if !dir.join("state.json").exists() {
        bail!("container {id} does not exist");
    }
    let mut container =
        Container::load(dir).with_context(|| format!("loading state of container {id}"))?;
    if let Some(record) = Record::load(ctx, id) {
        record.correct_status(&mut container);
    }
    Ok(container)
}

/// The container's cgroup, for the commands that read or change it (ps, events, update).
pub fn cgroup_manager(container: &Container) -> Result<libcgroups::common::AnyCgroupManager> {
    let config = container
        .spec()
        .context("loading the container's cgroup path")?;
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: container.systemd(),
        container_name: container.id().to_owned(),
    })
    .context("opening the container's cgroup")
}

/// runc's lowercase status names.
pub fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// What lwk-runc keeps beside libcontainer's `state.json`: the caller's bundle and
/// rootfs (libcontainer only knows the bundle it was handed, which for an LWK
/// container is a private rewritten copy), and the init process' start time, so a
/// recycled pid is never mistaken for the container (libcontainer checks only that
/// /proc/<pid> exists).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub init_start_time: Option<u64>,
    /// The spec's poststart hooks, run by `start` once the process has exec'd (see
    /// start.rs); libcontainer is handed the spec without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<oci_spec::runtime::Hook>,
}

const RECORD_FILE: &str = "lwk-runc.json";

impl Record {
    pub fn load(ctx: &Ctx, id: &str) -> Option<Record> {
        Record::load_from(&ctx.container_dir(id))
    }

    /// The record in a container's state directory.
    pub fn load_from(dir: &Path) -> Option<Record> {
        let data = std::fs::read(dir.join(RECORD_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save(&self, ctx: &Ctx, id: &str) -> Result<()> {
        let dir = ctx.container_dir(id);
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(RECORD_FILE))
            .with_context(|| format!("saving the record of container {id}"))?;
        Ok(())
    }

    /// A pid that now belongs to another process means the container has stopped.
    fn correct_status(&self, container: &mut Container) {
        let (Some(expected), Some(pid)) = (self.init_start_time, container.pid()) else {
            return;
        };
        if container.status() == ContainerStatus::Stopped {
            return;
        }
        if crate::host::start_time(pid.as_raw()) != Some(expected) {
            container.set_status(ContainerStatus::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_name_a_path_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\n", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["abc", "a.b-c_d+e", "0123456789abcdef", "job.42.step.0"] {
            assert!(validate_id(good).is_ok(), "{good:?} refused");
        }
    }
}
