use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        attach(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}

/// Moves `pid` into the cgroup at `cgroup_path`.
///
/// lwk-runc patch: a write to `cgroup.procs` takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, and that waits for a full RCU grace period
/// (5-15 ms on a busy node, the largest single cost of creating a container) unless
/// another attach happened within the last one. A single-threaded process that moves
/// itself writes "0" into `tasks` instead: the kernel migrates the calling thread
/// without the global lock (`cgroup_procs_write_start`: "If the thread is `current`,
/// it won't exit(2) under our hands or change PID through exec(2) ... we can skip the
/// global lock"), and with one thread that thread is the whole process. libcontainer's
/// intermediate process, which moves itself before it forks the container's init, is
/// such a process; any other caller keeps `cgroup.procs`.
pub(super) fn attach(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        return common::write_cgroup_file_str(cgroup_path.join(CGROUP_TASKS), "0");
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

const CGROUP_TASKS: &str = "tasks";

/// Whether the calling process has exactly one thread (`num_threads`, the 20th field
/// of /proc/self/stat; the command name before it may contain spaces).
fn single_threaded() -> bool {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some(after_comm) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return false;
    };
    after_comm.split(' ').nth(17) == Some("1")
}
