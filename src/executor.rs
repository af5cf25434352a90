//! The workload executor: runs the spec's startContainer hooks, then execs the
//! process, inside the container.
//!
//! libcontainer 0.7 runs startContainer hooks itself, but hands them the state it
//! captured at `create` (status `creating`, no pid); runtime-spec wants `created`
//! and the container's view of the pid. So create moves those hooks out of the
//! spec libcontainer sees and into this executor, which runs them at the same
//! point (after `start`, in the container's namespaces, before the exec).
//!
//! Two more runc behaviours live here, because engines and images rely on them: a
//! startContainer hook whose spec entry has no `env` runs with the container process's
//! environment (runc 1.1 runs it from its init, whose environment is the process's by
//! then), and a process whose `args[0]` is a path needs no `PATH` (images without an
//! `Env`, and CRI's pause sandboxes built from them, have none).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use libcontainer::container::{ContainerStatus, State};
use libcontainer::workload::default::get_executor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::{Hook, Spec};

/// `Default` (no hooks) is what `exec` uses: only the process rules apply.
#[derive(Clone, Default)]
pub struct WorkloadExecutor {
    pub start_container_hooks: Vec<Hook>,
    pub id: String,
    pub bundle: PathBuf,
    pub annotations: HashMap<String, String>,
}

/// A pidfd of the foreground `run` whose container must not outlive it, or -1 (see
/// run.rs). Set before create; the init, a clone of the runtime, reads its copy.
static DIE_WITH_RUNTIME: AtomicI32 = AtomicI32::new(-1);

/// Tie the containers this process creates to its life (`pidfd` of this process).
pub fn die_with_runtime(pidfd: RawFd) {
    DIE_WITH_RUNTIME.store(pidfd, Ordering::Relaxed);
}

/// In the init, just before the user process: SIGKILL when the runtime dies. Set this
/// late because the parent the kernel watches is the runtime's thread that cloned the
/// init, which for a fenced create (boundary.rs) has ended by now, handing the init to
/// the main thread; set earlier, that hand-over would fire it. Then a runtime that died
/// before the prctl (the pidfd says so) ends the container here.
fn tie_to_runtime() -> Result<(), ExecutorError> {
    let fd = DIE_WITH_RUNTIME.load(Ordering::Relaxed);
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if crate::watcher::pidfd_ended(fd) {
        return Err(ExecutorError::Other(
            "the runtime that ran this container in the foreground has died".into(),
        ));
    }
    Ok(())
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        tie_to_runtime()?;
        if !self.start_container_hooks.is_empty() {
            let mut state = State::new(
                &self.id,
                ContainerStatus::Created,
                Some(1),
                self.bundle.clone(),
            );
            state.annotations = Some(self.annotations.clone());
            let process_env = libcontainer::utils::parse_env(&process_env(spec));
            libcontainer::hooks::run_hooks(
                Some(&self.start_container_hooks),
                Some(&state),
                None,
                None,
                Some(&process_env),
            )
            .map_err(|err| ExecutorError::Other(format!("startContainer hook failed: {err}")))?;
        }
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        // libcontainer refuses any process without PATH, even one it would not search
        // for; runc only needs PATH to look a bare name up.
        let env = process_env(spec);
        let names_a_path = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
            .is_some_and(|a0| a0.contains('/'));
        if names_a_path && !env.iter().any(|e| e.starts_with("PATH=")) {
            let mut spec = spec.clone();
            if let Some(p) = spec.process_mut() {
                p.set_env(Some([env, vec!["PATH=".to_string()]].concat()));
            }
            return get_executor().validate(&spec);
        }
        get_executor().validate(spec)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        get_executor().setup_envs(envs)
    }
}

fn process_env(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}
