//! The workload executor: runs the spec's startContainer hooks, then execs the
//! process, inside the container.
//!
//! libcontainer 0.7 runs startContainer hooks itself, but hands them the state it
//! captured at `create` (status `creating`, no pid); runtime-spec wants `created`
//! and the container's view of the pid. So create moves those hooks out of the
//! spec libcontainer sees and into this executor, which runs them at the same
//! point (after `start`, in the container's namespaces, before the exec).

use std::collections::HashMap;
use std::path::PathBuf;

use libcontainer::container::{ContainerStatus, State};
use libcontainer::workload::default::get_executor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::{Hook, Spec};

#[derive(Clone)]
pub struct WorkloadExecutor {
    pub start_container_hooks: Vec<Hook>,
    pub id: String,
    pub bundle: PathBuf,
    pub annotations: HashMap<String, String>,
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if !self.start_container_hooks.is_empty() {
            let mut state = State::new(
                &self.id,
                ContainerStatus::Created,
                Some(1),
                self.bundle.clone(),
            );
            state.annotations = Some(self.annotations.clone());
            libcontainer::hooks::run_hooks(
                Some(&self.start_container_hooks),
                Some(&state),
                None,
                None,
                None,
            )
            .map_err(|err| ExecutorError::Other(format!("startContainer hook failed: {err}")))?;
        }
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        get_executor().validate(spec)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        get_executor().setup_envs(envs)
    }
}
