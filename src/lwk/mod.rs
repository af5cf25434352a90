//! The LWK layer: the only place that knows lightweight kernels exist.

pub mod launcher;
pub mod policy;
pub mod rewrite;

use std::fmt;

/// Which lightweight kernel a container runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LwkKind {
    McKernel,
    Mos,
}

impl LwkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LwkKind::McKernel => "mckernel",
            LwkKind::Mos => "mos",
        }
    }
    /// The config table that configures it.
    pub fn config_section(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for LwkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LwkKind::McKernel => "McKernel",
            LwkKind::Mos => "mOS",
        })
    }
}

/// What a container asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwkRequest {
    pub kind: LwkKind,
    /// Launcher options, each checked against the config's allow-list.
    pub args: Vec<String>,
}
