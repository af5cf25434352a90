//! `spec`: write a starting config.json, as `runc spec` does.

use std::fs::OpenOptions;
use std::io::Write;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

use crate::cli::Spec as SpecArgs;

/// `rootless`: `--rootless` was given (runc's `spec --rootless`).
pub fn run(args: &SpecArgs, rootless: bool) -> Result<()> {
    let dir = args.bundle.clone().unwrap_or_else(|| ".".into());
    let path = dir.join("config.json");
    let spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        let mut spec = Spec::default();
        spec.set_hostname(Some("lwk-runc".into()));
        spec
    };
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("File {} exists. Remove it first", path.display())
        }
        Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
    };
    let text = serde_json::to_string_pretty(&spec)?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
