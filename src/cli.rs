//! runc's command line, flag for flag (runc v1.1 / v1.5 surface), so that Docker's
//! shim, podman's conmon, containerd, Slurm's oci.conf patterns and Singularity can
//! call lwk-runc exactly as they call runc.
//!
//! liboci-cli is not used for parsing: it lacks `--rootless`, `--pidfd-socket`, a
//! default signal for `kill`, and several runc flags that engines pass, and clap
//! rejects any unknown flag outright.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

/// What `lwk-runc --version` prints after the name, runc-style. Here rather than in
/// main.rs so that this file stands alone: the man pages and completions are generated
/// from it (`cargo xtask deb`).
pub const VERSION_TEXT: &str = concat!(
    "version ",
    env!("CARGO_PKG_VERSION"),
    "\nspec: 1.2.1\nlibcontainer: 0.7.0"
);

#[derive(Parser, Debug)]
#[command(
    name = "lwk-runc",
    about = "runc-compatible OCI runtime that runs container workloads on a lightweight kernel (IHK/McKernel or mOS)",
    version = VERSION_TEXT,
    disable_version_flag = true,
    propagate_version = false
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// The command line, parsed. The lifecycle commands an engine runs for every container
/// are parsed against a definition holding only their own subcommand: building clap's
/// definition of all the commands cost more instructions than the rest of a `start`, and
/// pulled their code and help texts into memory (bench/README.md, "Profile"). Anything
/// else (help, version, an option the fast path does not know, any error) is parsed with
/// the full definition, so what clap prints is what it always printed.
pub fn parse(args: &[OsString]) -> Cli {
    parse_lifecycle(args).unwrap_or_else(|| Cli::parse_from(args))
}

/// The commands of a container's life, with the flags their arguments come from.
fn lifecycle_definition(name: &str) -> Option<clap::Command> {
    use clap::Command as C;
    Some(match name {
        "create" => Create::augment_args(C::new("create")),
        "start" => Id::augment_args(C::new("start")),
        "state" => Id::augment_args(C::new("state")),
        "kill" => Kill::augment_args(C::new("kill")),
        "delete" => Delete::augment_args(C::new("delete")),
        "run" => Run::augment_args(C::new("run")),
        "exec" => Exec::augment_args(C::new("exec")),
        _ => return None,
    })
}

fn parse_lifecycle(args: &[OsString]) -> Option<Cli> {
    let sub = lifecycle_definition(lifecycle_command(args)?)?;
    let cmd = GlobalOpts::augment_args(
        clap::Command::new("lwk-runc")
            .version(VERSION_TEXT)
            .disable_version_flag(true),
    )
    .subcommand_required(true)
    .subcommand(sub);
    let matches = cmd.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

/// The subcommand a command line names, when nothing before it could change how it is
/// read: only the global options, and `--rootless` only as `--rootless=VALUE` (its value
/// is optional, so `--rootless create` leaves clap to decide).
fn lifecycle_command(args: &[OsString]) -> Option<&str> {
    const WITH_VALUE: [&str; 4] = ["--log", "--log-format", "--root", "--criu"];
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if WITH_VALUE.contains(&word) {
            words.next()?;
        } else if word == "--debug"
            || word == "--systemd-cgroup"
            || WITH_VALUE
                .iter()
                .chain(&["--rootless"])
                .any(|flag| word.strip_prefix(flag).is_some_and(|v| v.starts_with('=')))
        {
        } else {
            return lifecycle_definition(word).map(|_| word);
        }
    }
    None
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// print the version
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    /// enable debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// set the log file to write logs to (default: stderr)
    #[arg(long, global = true, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// set the log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// root directory for storage of container state (this should be located in tmpfs)
    #[arg(long, global = true, value_name = "PATH")]
    pub root: Option<PathBuf>,
    /// path to the criu binary used for checkpoint and restore (accepted, unused)
    #[arg(long, global = true, hide = true)]
    pub criu: Option<PathBuf>,
    /// enable systemd cgroup support
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// ignore cgroup permission errors ('true', 'false', or 'auto'); with spec: generate a configuration for a rootless container
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// create a container
    Create(Create),
    /// executes the user defined process in a created container
    Start(Id),
    /// output the state of a container
    State(Id),
    /// kill sends the specified signal (default: SIGTERM) to the container's init process
    Kill(Kill),
    /// delete any resources held by the container often used with detached container
    Delete(Delete),
    /// create and run a container
    Run(Run),
    /// execute new process inside the container
    Exec(Exec),
    /// ps displays the processes running inside a container
    Ps(Ps),
    /// lists containers started by lwk-runc with the given root
    #[command(alias = "ls")]
    List(List),
    /// create a new specification file
    Spec(Spec),
    /// pause suspends all processes inside the container
    Pause(Id),
    /// resumes all processes that have been previously paused
    Resume(Id),
    /// display container events such as OOM notifications, cpu, memory, and IO usage statistics
    Events(Events),
    /// update container resource constraints
    Update(Update),
    /// show the enabled features
    Features,
    /// checkpoint a running container (not supported)
    Checkpoint(Passthrough),
    /// restore a container from a previous checkpoint (not supported)
    Restore(Passthrough),
    /// the LWK on this node: status, and garbage collection of stale leases
    Lwk(LwkCmd),
    /// the LWK lease logic as an OCI hook (state JSON on stdin), for runc, crun and podman users
    Hook(HookCmd),
    /// check this node for LWK containers: kernel, config, LWK tools and instance, images, engines
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
    /// register lwk-runc with a container engine, keeping the rest of its config file
    #[command(name = "setup-engine", after_help = SETUP_ENGINE_HELP)]
    SetupEngine(SetupEngineArgs),
    /// the node's image cache, from which `conexec --image` runs jobs
    #[command(after_help = IMAGE_HELP)]
    Image(ImageCmd),
    /// run this MPI rank in its job's container on this node (one container and one LWK per job per node)
    #[command(after_help = CONEXEC_EXAMPLES)]
    Conexec(ConexecArgs),
    /// internal: deletes a conexec job container once its rank server has ended
    #[command(name = "conexec-reap", hide = true)]
    ConexecReap {
        #[arg(value_name = "container-id")]
        id: String,
    },
    /// internal: deletes the container of a foreground `run` that was killed
    #[command(name = "run-reap", hide = true)]
    RunReap {
        /// a pidfd of the `run` process (inherited)
        #[arg(long)]
        pidfd: i32,
        /// the read end of the pipe `run` writes to when it ends by itself (inherited)
        #[arg(long)]
        done: i32,
        /// the container's init pid when `run` created it
        #[arg(long)]
        init: i32,
        #[arg(value_name = "container-id")]
        id: String,
    },
    /// internal: the linger reaper; sleeps, then tears the LWK down if still idle
    #[command(name = "lwk-reap", hide = true)]
    LwkReap {
        /// seconds to linger before checking
        secs: u64,
    },
}

const CONEXEC_EXAMPLES: &str = "\
Examples:
  mpirun -n 128 --map-by ppr:64:node lwk-runc conexec --lwk mckernel --rootfs /images/miniapps -- /miniapps/miniFE.x nx=660
  mpirun -n 4 lwk-runc conexec --lwk mos --bundle ./bundle -- ./mpi_hello
  srun -N 2 --ntasks-per-node=64 --mpi=pmix lwk-runc conexec --lwk mckernel --rootfs /images/app -- ./app
  srun -N 2 --ntasks-per-node=16 --mpi=pmix lwk-runc conexec --lwk mos --rootfs /images/app -- ./app
  mpiexec.hydra -n 8 lwk-runc conexec --lwk none --rootfs ./rootfs -- ./app
  mpirun -n 64 lwk-runc conexec --lwk mckernel --image docker://registry.example/hpc/app:1 -- ./app

The first rank of a job to reach a node creates the job's container; the others join it.
Each rank runs as a child of the container's rank server, under mcexec -n PPN (McKernel)
or yod -R 1/PPN (mOS), with its own stdio, argv, cwd and environment, and this process
exits as its rank does. The job is known by --job, else SLURM_JOB_ID.SLURM_STEP_ID,
PMIX_NAMESPACE, PMI_JOBID, or the launcher process that is the ranks' parent; ranks per
node by --ppn, else OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS, PMI_LOCAL_SIZE or Slurm's
tasks per node.

With --image, the job's first rank on a node brings the image into the node's cache (once
per image; see `lwk-runc image --help`) and the job runs on an overlay of it. The image's
Env is set over the rank's environment, its WorkingDir replaces the rank's directory, its
User applies to ranks started as root, and its Entrypoint and Cmd run when no command is
given; --env, --cwd and --user win over all of these.";

const DOCTOR_HELP: &str = "\
Each finding says what was checked, what was found and, where something is wrong, the fix.
Nothing on the node is changed: no lock is held, no file written, no LWK booted.
The config is LWK_RUNC_CONFIG, else /etc/lwk-runc/config.toml.

Exit status: 0 when the node is ready for LWK containers (warnings allowed), 1 otherwise.";

const SETUP_ENGINE_HELP: &str = "\
Default config files: docker /etc/docker/daemon.json, podman /etc/containers/containers.conf,
containerd /etc/containerd/config.toml. The file is parsed and edited (other settings,
runtimes, comments and key order stay), the change is printed as a diff, the previous
file is kept as <file>.lwk-runc-<time>.bak, and the daemon to restart is named.
Running it again when lwk-runc is already registered changes nothing.";

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// text for people, json for tools
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
    Containerd,
}

#[derive(Args, Debug)]
pub struct SetupEngineArgs {
    /// the engine whose config file gets lwk-runc
    #[arg(value_enum)]
    pub engine: Engine,
    /// the engine's config file (default: the engine's system-wide one)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// the lwk-runc binary the engine runs (default: this one)
    #[arg(long, value_name = "PATH")]
    pub runtime_path: Option<PathBuf>,
    /// the runtime's name in the engine (containerd: the RuntimeClass handler)
    #[arg(long, value_name = "NAME", default_value = "lwk-runc")]
    pub name: String,
    /// print the change, write nothing
    #[arg(long)]
    pub dry_run: bool,
}
const IMAGE_HELP: &str = "\
References, in skopeo's transport syntax:
  docker://HOST/NAME:TAG or docker://HOST/NAME@sha256:...   a registry (credentials from
                                      auth.json or ~/.docker/config.json)
  oci:DIR[:TAG]                       an OCI image layout
  docker-archive:FILE[:NAME:TAG]      what docker save / podman save write
  docker-daemon:NAME:TAG              an image of the node's Docker
  containers-storage:[DRIVER@ROOT+RUNROOT]NAME:TAG   an image of podman's store

The cache ([images] cache_dir in the config) holds each image once, unpacked, keyed by its
id; jobs mount it read-only under a private overlay. A size cap (max_size) evicts the least
recently used images that no job is using.";

#[derive(Args, Debug)]
pub struct ConexecArgs {
    /// the kernel the ranks run on (default: LWK_KERNEL, the bundle's run.lwk.kernel, else none)
    #[arg(long, value_name = "mckernel|mos|none")]
    pub lwk: Option<String>,
    /// a bundle whose spec the job container starts from (MPI's needs override it)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["rootfs", "image"],
        required_unless_present_any = ["rootfs", "image"]
    )]
    pub bundle: Option<PathBuf>,
    /// a root filesystem to run the ranks in, with a spec made for MPI
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// an image to run the ranks in, fetched into the node's cache once (docker://, oci:,
    /// docker-archive:, docker-daemon:, containers-storage:)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// set a variable in every rank's environment (over the image's Env)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// the ranks' working directory in the container (over the image's WorkingDir)
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// run the ranks as UID[:GID] (over the image's User; only a rank started as root
    /// may name another user)
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// the job's identity on this node (default: from the launcher's environment)
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// ranks of the job on this node (default: from the launcher's environment)
    #[arg(long, value_name = "N")]
    pub ppn: Option<u32>,
    /// seconds the container waits for the rest of the node's ranks once none is running
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub join_timeout_secs: u64,
    /// seconds a rank waits for another rank that is creating the job's container
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub lock_timeout_secs: u64,
    /// the rank's command (with --image, the image's Entrypoint and Cmd by default)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "image",
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Id {
    #[arg(value_name = "container-id")]
    pub container_id: String,
}

#[derive(Args, Debug, Clone)]
pub struct CreateOpts {
    /// path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// path to an AF_UNIX socket which will receive the pidfd of the init process (accepted; unsupported)
    #[arg(long, hide = true)]
    pub pidfd_socket: Option<PathBuf>,
    /// specify the file to write the process id to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// do not use pivot root to jail process inside rootfs
    #[arg(long)]
    pub no_pivot: bool,
    /// do not create a new session keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total)
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    #[arg(value_name = "container-id")]
    pub container_id: String,
}

#[derive(Args, Debug)]
pub struct Create {
    #[command(flatten)]
    pub opts: CreateOpts,
}

#[derive(Args, Debug)]
pub struct Run {
    #[command(flatten)]
    pub opts: CreateOpts,
    /// detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// do not delete the container after it exits
    #[arg(long)]
    pub keep: bool,
    /// disable the use of the subreaper used to reap reparented processes
    #[arg(long)]
    pub no_subreaper: bool,
}

#[derive(Args, Debug)]
pub struct Kill {
    #[arg(value_name = "container-id")]
    pub container_id: String,
    /// signal name or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// send the specified signal to all processes inside the container
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct Delete {
    #[arg(value_name = "container-id")]
    pub container_id: String,
    /// forcibly deletes the container if it is still running (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct Exec {
    /// path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub pidfd_socket: Option<PathBuf>,
    /// current working directory in the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// additional gids
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// path to the process.json
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// specify the file to write the process id to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// set the asm process label for the process commonly used with selinux
    #[arg(long)]
    pub process_label: Option<String>,
    /// set the apparmor profile for the process
    #[arg(long)]
    pub apparmor: Option<String>,
    /// set the no new privileges value for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// add a capability to the bounding set for the process
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    /// pass N additional file descriptors to the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// allow exec in a paused container
    #[arg(long)]
    pub ignore_paused: bool,
    /// run the process in an (existing) sub-cgroup(s)
    #[arg(long)]
    pub cgroup: Vec<String>,
    #[arg(value_name = "container-id")]
    pub container_id: String,
    /// command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Ps {
    /// select one of: table or json
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[arg(value_name = "container-id")]
    pub container_id: String,
    /// arguments passed to ps(1) in table mode
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct List {
    /// select one of: table or json
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// display only container IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// `spec --rootless` is the global `--rootless` (clap cannot have both under one name);
/// see [`GlobalOpts::rootless`].
#[derive(Args, Debug)]
pub struct Spec {
    /// path to the root of the bundle directory
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct Events {
    /// set the stats collection interval
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// display the container's stats then exit
    #[arg(long)]
    pub stats: bool,
    #[arg(value_name = "container-id")]
    pub container_id: String,
}

#[derive(Args, Debug)]
pub struct Update {
    /// path to a file containing the resources to update, or '-' to read from stdin
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// CPU shares (relative weight vs. other containers)
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPU CFS period to be used for hardcapping (in usecs)
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS hardcap limit (in usecs)
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU(s) to use
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// memory node(s) to use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// memory limit (in bytes)
    #[arg(short, long)]
    pub memory: Option<i64>,
    /// memory reservation or soft_limit (in bytes)
    #[arg(long)]
    pub memory_reservation: Option<i64>,
    /// total memory usage (memory + swap); set '-1' to enable unlimited swap
    #[arg(long)]
    pub memory_swap: Option<i64>,
    /// maximum number of pids allowed in the container
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// block IO weight
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    #[arg(value_name = "container-id")]
    pub container_id: String,
}

/// checkpoint/restore take many flags; they are accepted so the error is ours, not clap's.
#[derive(Args, Debug)]
pub struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LwkCmd {
    #[command(subcommand)]
    pub action: LwkAction,
}

#[derive(Subcommand, Debug)]
pub enum LwkAction {
    /// show each kernel, its instance status, CPUs, memory, boot mode and leases
    Status {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table, alias = "text")]
        format: ListFormat,
    },
    /// drop leases of containers that no longer exist; tear the LWK down if none remain
    Gc,
}

#[derive(Args, Debug)]
pub struct ImageCmd {
    #[command(subcommand)]
    pub action: ImageAction,
}

#[derive(Subcommand, Debug)]
pub enum ImageAction {
    /// fetch an image and unpack it into the node's cache (what a job's first rank does)
    Pull {
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// list the cached images: id, size, last use, whether a job uses it, names
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// remove cached images no job is using, by id (or a prefix of one) or reference
    Rm {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// remove every cached image no job is using, and what unfinished pulls left
    Prune,
}

#[derive(Args, Debug)]
pub struct HookCmd {
    /// the OCI lifecycle stage this hook is installed at
    #[arg(value_enum)]
    pub stage: HookStage,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStage {
    #[value(name = "prestart")]
    Prestart,
    #[value(name = "createRuntime")]
    CreateRuntime,
    #[value(name = "poststop")]
    Poststop,
}

impl HookStage {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStage::Prestart => "prestart",
            HookStage::CreateRuntime => "createRuntime",
            HookStage::Poststop => "poststop",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::{CommandFactory, Parser};

    use super::{lifecycle_definition, parse_lifecycle, Cli};

    fn argv(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    /// The fast path reads every command line an engine sends exactly as the full
    /// definition does.
    #[test]
    fn lifecycle_commands_parse_as_with_the_full_definition() {
        for line in [
            "lwk-runc create --bundle /b --pid-file /p --console-socket /s id",
            "lwk-runc --root /r --log /l --log-format json create --bundle /b id",
            "lwk-runc --root=/r --systemd-cgroup --debug start id",
            "lwk-runc --rootless=true state id",
            "lwk-runc kill id",
            "lwk-runc kill --all id KILL",
            "lwk-runc --root /r delete --force id",
            "lwk-runc run -d --bundle /b --no-pivot --preserve-fds 2 id",
            "lwk-runc run --keep --bundle /b --root /r id",
            "lwk-runc exec --tty --cwd / -e A=1 -e B=2 --user 1:2 -g 3 id sh -c echo -n x",
            "lwk-runc exec --process /p.json --detach --pid-file /p id",
            "lwk-runc --log /l create --bundle /b --log-format json id",
        ] {
            let args = argv(line);
            let fast = parse_lifecycle(&args).unwrap_or_else(|| panic!("no fast parse: {line}"));
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{line}");
        }
    }

    /// What the fast path leaves to the full definition: it prints help, version and
    /// errors, and decides what an optional value means.
    #[test]
    fn help_version_errors_and_ambiguity_take_the_full_definition() {
        for line in [
            "lwk-runc --help",
            "lwk-runc -v",
            "lwk-runc create --help",
            "lwk-runc help create",
            "lwk-runc --rootless create --bundle /b id",
            "lwk-runc create --bundle",
            "lwk-runc create --no-such-flag id",
            "lwk-runc list",
            "lwk-runc --root",
        ] {
            assert!(parse_lifecycle(&argv(line)).is_none(), "{line}");
        }
    }

    /// Each fast subcommand has the arguments its full definition has.
    #[test]
    fn fast_definitions_match_the_full_ones() {
        let full = Cli::command();
        for name in ["create", "start", "state", "kill", "delete", "run", "exec"] {
            let args = |c: &clap::Command| {
                let mut a: Vec<String> = c.get_arguments().map(|a| format!("{a:?}")).collect();
                a.sort();
                a
            };
            let fast = lifecycle_definition(name).unwrap();
            let want = full.find_subcommand(name).unwrap();
            assert_eq!(args(&fast), args(want), "{name}");
        }
    }

    /// clap checks a command line's consistency only in debug builds, and only for the
    /// subcommand being parsed; the man pages are built from all of them.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
