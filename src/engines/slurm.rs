//! Slurm: `/etc/slurm/oci.conf`, whose `RunTime*` command patterns name the runtime
//! (`srun --container`). Only read (by `doctor`); the shipped engines/oci.conf is
//! the file to install.

use std::path::PathBuf;

use super::{is_lwk_runc, Registration};

pub const CONFIG: &str = "/etc/slurm/oci.conf";

/// The `RunTime*` keys of oci.conf whose command is lwk-runc.
pub fn registered(text: &str) -> Vec<Registration> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().starts_with("RunTime"))
        .filter_map(|(k, v)| {
            // slurmstepd runs the pattern through /bin/sh; the shipped RunTimeRun execs.
            let cmd = v.trim().trim_matches('"');
            let cmd = cmd.strip_prefix("exec ").map_or(cmd, str::trim_start);
            is_lwk_runc(cmd).then(|| Registration {
                name: k.trim().to_string(),
                path: PathBuf::from(cmd.split_whitespace().next().unwrap_or(cmd)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_oci_conf_runs_lwk_runc_and_runc_does_not_count() {
        let regs = registered(include_str!("../../config/engines/oci.conf"));
        let keys: Vec<&str> = regs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            keys,
            ["RunTimeQuery", "RunTimeKill", "RunTimeDelete", "RunTimeRun"]
        );
        assert!(registered("RunTimeRun=\"runc --root=/run/user/%U/ run %n -b %b\"\n").is_empty());
        assert!(registered("# RunTimeRun=\"lwk-runc run\"\n").is_empty());
        assert_eq!(
            registered("RunTimeRun=\"exec /usr/bin/lwk-runc run %n -b %b\"\n")[0].path,
            PathBuf::from("/usr/bin/lwk-runc")
        );
    }
}
