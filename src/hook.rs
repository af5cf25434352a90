//! `lwk-runc hook prestart|createRuntime|poststop`: the LWK lease lifecycle as an OCI hook,
//! so runc, crun and podman users get boot-on-first / teardown-on-last too.
//!
//! The hook reads the OCI state on stdin, the bundle's config.json for the container's
//! annotations and env, and runs the same policy and lease code lwk-runc runs in-process.
//! It does not rewrite the process (another runtime owns the spec); the container names
//! the launcher itself. Leases taken by hooks live under a pseudo-root made of
//! [`HOOK_ROOT`] and the container's bundle, so they never collide with lwk-runc's own,
//! nor two engines' containers that share an id; and `poststop` drops a lease only for
//! the bundle it was called for, and never while the container holding it lives.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::lwk::{self, lease, policy, LwkError};

/// Lease roots of containers managed through hooks start with this.
pub const HOOK_ROOT: &str = "oci-hook";

/// The lease root of a hook-managed container: its (canonical) bundle under
/// [`HOOK_ROOT`], so two engines using one id for two containers hold two leases.
fn hook_root(bundle: &Path) -> PathBuf {
    PathBuf::from(format!("{HOOK_ROOT}:{}", bundle.display()))
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("lwk-runc hook: reading the OCI state from stdin: {0}")]
    State(String),
    #[error("lwk-runc hook: reading {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("lwk-runc hook: unknown stage {0:?}; use prestart, createRuntime or poststop")]
    Stage(String),
    #[error("lwk-runc hook: {0}")]
    Lwk(#[from] LwkError),
}

#[derive(Debug, Deserialize)]
struct State {
    id: String,
    #[serde(default)]
    pid: Option<i32>,
    bundle: PathBuf,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

/// Entry point: `stage` from argv, state JSON from stdin.
pub fn main(cfg: &Config, stage: &str) -> Result<(), HookError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| HookError::State(e.to_string()))?;
    run(cfg, stage, &buf)
}

pub fn run(cfg: &Config, stage: &str, state: &[u8]) -> Result<(), HookError> {
    let st: State = serde_json::from_slice(state).map_err(|e| HookError::State(e.to_string()))?;
    let bundle = std::fs::canonicalize(&st.bundle).unwrap_or_else(|_| st.bundle.clone());
    let root = &hook_root(&bundle);
    match stage {
        "prestart" | "createRuntime" => {
            let path = st.bundle.join("config.json");
            let spec = crate::commands::load_spec(&path).map_err(|e| HookError::Spec {
                path: path.clone(),
                reason: format!("{e:#}"),
            })?;
            let mut ann = spec.annotations().clone().unwrap_or_default();
            ann.extend(st.annotations.clone().unwrap_or_default());
            let env = spec
                .process()
                .as_ref()
                .and_then(|p| p.env().clone())
                .unwrap_or_default();
            let req = policy::decide(cfg, Some(&ann), &env).map_err(|source| LwkError::Policy {
                id: st.id.clone(),
                source,
            })?;
            let Some(req) = req else { return Ok(()) };
            let lwk_err = |source| LwkError::Lease {
                id: st.id.clone(),
                source,
            };
            lease::check_id(&st.id).map_err(lwk_err)?;
            lwk::check_caller(cfg, &st.id, req.kind)?;
            if !crate::trust::is_root() {
                // Joins an LWK that is up; holds no lease (see lwk::rootless_join).
                return Ok(lwk::rootless_join(cfg, &st.id, req.kind)?);
            }
            let pid = st.pid.unwrap_or(0);
            let acquired = lease::acquire(
                cfg,
                req.kind,
                &lease::NewLease {
                    id: &st.id,
                    root,
                    bundle: &bundle,
                    owner_pid: pid,
                    init_pid: Some(pid),
                },
            )
            .map_err(|source| LwkError::Lease {
                id: st.id.clone(),
                source,
            })?;
            match acquired.confirm() {
                Ok(_) => {}
                Err(source) => {
                    // The lease was taken before the check failed: it must not outlive us.
                    let _ = lease::release_taken(cfg, root, &st.id);
                    return Err(LwkError::Lease {
                        id: st.id.clone(),
                        source,
                    }
                    .into());
                }
            };
            if pid > 0 {
                // Best effort: a launcher the container starts itself (not as PID 1) then
                // gets a node-unique pid too.
                if let Err(e) = lwk::before_start(cfg, root, &st.id, pid) {
                    tracing::warn!(id = %st.id, error = %e, "could not arrange the launcher pid");
                }
            }
            Ok(())
        }
        "poststop" => {
            if !crate::trust::is_root() {
                return Ok(());
            }
            lease::release_if(cfg, root, &st.id, |l| l.bundle == bundle).map_err(|source| {
                LwkError::Lease {
                    id: st.id.clone(),
                    source,
                }
            })?;
            Ok(())
        }
        other => Err(HookError::Stage(other.into())),
    }
}
