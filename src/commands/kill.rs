//! `kill`: send a signal to the init (or, with `--all`, every process of the container).

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use libcgroups::common::CgroupManager;

use super::{cgroup_manager, load, Ctx};
use crate::cli::Kill;
use crate::commands::create::describe;

pub fn run(ctx: &Ctx, args: &Kill) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    let mut container = load(ctx, &args.container_id)?;
    let before = container.status();
    // containerd's shim matches "container not running" to treat the kill as done.
    if matches!(before, ContainerStatus::Stopped) && !args.all {
        bail!("container not running");
    }
    let context = || {
        format!(
            "sending signal {} to container {}",
            args.signal, args.container_id
        )
    };
    match signal {
        Sig::Std(s) => container
            .kill(s, args.all)
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .with_context(context)?,
        // libcontainer's signals stop at 31; real-time ones go out directly.
        Sig::Rt(n) => {
            let pids = if args.all {
                cgroup_manager(&container)?
                    .get_all_pids()
                    .context("listing the container's processes")?
            } else {
                container.pid().into_iter().collect()
            };
            for pid in pids {
                // SAFETY: kill(2) with a valid signal number; no memory is involved.
                if unsafe { libc::kill(pid.as_raw(), n) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(e).with_context(context);
                    }
                }
            }
        }
    }

    // libcontainer records `stopped` after any signal, even one the container
    // handles (SIGUSR1, a SIGTERM it traps). Put the status back while it lives.
    if let Some(pid) = container.pid() {
        let alive = crate::host::proc_stat(pid.as_raw()).is_some_and(|s| s.state != 'Z');
        if alive && before != ContainerStatus::Stopped {
            container.set_status(before);
            container.save().context("saving container state")?;
        }
    }
    Ok(())
}

/// A signal `kill` can send.
#[derive(Debug)]
pub enum Sig {
    Std(Signal),
    /// A real-time signal number (SIGRTMIN..=SIGRTMAX).
    Rt(i32),
}

/// Accepts what runc accepts: `KILL`, `SIGKILL`, `9`, any case, and the real-time
/// signals as `RTMIN`, `RTMIN+3`, `SIGRTMAX-1` or their numbers (systemd in a
/// container stops on SIGRTMIN+3).
pub fn parse_signal(s: &str) -> Result<Sig> {
    let unknown = || anyhow::anyhow!("unknown signal {s:?}");
    let t = s.trim().to_ascii_uppercase();
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Result<i32> {
        match rest.strip_prefix(sign) {
            None if rest.is_empty() => Ok(0),
            Some(n) => n.parse::<i32>().map_err(|_| unknown()),
            None => Err(unknown()),
        }
    };
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        Some(min + offset(rest, '+')?)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        Some(max - offset(rest, '-')?)
    } else {
        name.parse::<i32>().ok().filter(|n| *n >= min)
    };
    match rt {
        Some(n) if (min..=max).contains(&n) => Ok(Sig::Rt(n)),
        Some(_) => Err(unknown()),
        None => Signal::try_from(s.trim())
            .map(Sig::Std)
            .map_err(|_| unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_number_and_prefix() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        let term = name("SIGTERM");
        assert!(term.contains("SIGTERM"));
        assert_eq!(name("TERM"), term);
        assert_eq!(name("15"), term);
        assert_eq!(name("term"), term);
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn real_time_signals_by_name_and_number() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let rt = |s: &str| match parse_signal(s).unwrap() {
            Sig::Rt(n) => n,
            other => panic!("{s} parsed as {other:?}"),
        };
        assert_eq!(rt("SIGRTMIN+3"), min + 3);
        assert_eq!(rt("rtmin"), min);
        assert_eq!(rt("RTMAX-1"), max - 1);
        assert_eq!(rt(&max.to_string()), max);
        for bad in ["RTMIN+99", "RTMAX-99", "RTMIN-1", "RTMIN+x", "65", "RTMINX"] {
            assert!(parse_signal(bad).is_err(), "{bad} accepted");
        }
    }
}
