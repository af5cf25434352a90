//! `conexec --image`: the job's image on this node and what its config makes of each
//! rank's launch. The job's first rank brings the image into the node's cache (or
//! waits, without the job's lock, for whoever does) and mounts it for the job at
//! `<job dir>/rootfs`, the rootfs the bundle then names, exactly as `--rootfs` would;
//! every rank reads the image's defaults from `<job dir>/image.json`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::proto::Launch;
use super::Job;
use crate::cli::ConexecArgs;
use crate::image::{Acquired, Defaults, Digest, ImageRef, Ready};

const DEFAULTS: &str = "image.json";
/// The image id the reference resolved to, for the job's other ranks (no second lookup).
const ID: &str = "image-id";

/// Under the job's lock, for the rank that makes the job's container: the image, or
/// the work to do (or wait for) before trying again. None without `--image`.
pub fn acquire(a: &ConexecArgs, job: &Job) -> Result<Option<Acquired>> {
    let Some(text) = &a.image else {
        return Ok(None);
    };
    let r: ImageRef = text.parse().map_err(anyhow::Error::msg)?;
    let cfg = crate::config::Config::load()?;
    let id_file = job.dir.join(ID);
    let hint = fs::read_to_string(&id_file)
        .ok()
        .and_then(|s| Digest::parse(s.trim()).ok());
    let got = crate::image::acquire(&cfg.images, &r, hint.as_ref(), &mut |id| {
        let _ = fs::write(&id_file, id.to_string());
    })
    .with_context(|| format!("getting the image {r} of job {}", job.name))?;
    Ok(Some(got))
}

/// Mount the job's image and record its defaults for the job's ranks.
pub fn mount(ready: Ready, job: &Job) -> Result<PathBuf> {
    let d = serde_json::to_vec(&ready.record.defaults)?;
    fs::write(job.dir.join(DEFAULTS), d).context("writing the job's image defaults")?;
    ready.mount(&job.dir)
}

/// Unmount the job's image, if it has one (before its directory goes).
pub fn release(job_dir: &Path) {
    crate::image::unmount(job_dir);
}

/// The launch this rank sends: its own, with the image's defaults under it and the
/// command line's --env, --cwd and --user over it.
pub fn launch(a: &ConexecArgs, job: &Job, own: &Launch) -> Result<Launch> {
    let defaults: Option<Defaults> = match &a.image {
        Some(_) => {
            let p = job.dir.join(DEFAULTS);
            let text = fs::read(&p)
                .with_context(|| format!("reading the job's image defaults {}", p.display()))?;
            Some(serde_json::from_slice(&text).context("reading the job's image defaults")?)
        }
        None => None,
    };
    apply(
        own.clone(),
        defaults.as_ref(),
        &a.env,
        a.cwd.as_deref(),
        a.user.as_deref(),
    )
}

fn set(env: &mut Vec<String>, kv: &str) {
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(kv.to_string());
}

pub fn apply(
    mut l: Launch,
    d: Option<&Defaults>,
    env: &[String],
    cwd: Option<&str>,
    user: Option<&str>,
) -> Result<Launch> {
    if let Some(d) = d {
        if l.argv.is_empty() {
            l.argv = d.command();
        }
        for e in &d.env {
            set(&mut l.env, e);
        }
        if let Some(w) = &d.working_dir {
            l.cwd = w.clone();
        }
        // The image's user applies to ranks started as root: a user's rank runs as them.
        if l.uid == 0 && user.is_none() {
            match &d.ids {
                Some(Ok((uid, gid, groups))) => {
                    (l.uid, l.gid, l.groups) = (*uid, *gid, groups.clone());
                }
                Some(Err(why)) => {
                    bail!("{why}; give --user UID[:GID] to run the ranks as someone else")
                }
                None => {}
            }
        }
    }
    for e in env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env {e:?}: give KEY=VALUE");
        }
        set(&mut l.env, e);
    }
    if let Some(c) = cwd {
        if !c.starts_with('/') {
            bail!("--cwd {c:?}: give an absolute path in the container");
        }
        l.cwd = c.to_string();
    }
    if let Some(u) = user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse::<u32>().ok(), g.parse::<u32>().ok()),
            None => (u.parse::<u32>().ok(), Some(0)),
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            bail!("--user {u:?}: give a numeric UID[:GID]");
        };
        (l.uid, l.gid, l.groups) = (uid, gid, Vec::new());
    }
    if l.argv.is_empty() {
        bail!("the image defines no Entrypoint or Cmd: give the rank's command after --");
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(argv: &[&str], uid: u32) -> Launch {
        Launch {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/host/bin".into(), "OMPI_COMM_WORLD_RANK=3".into()],
            cwd: "/home/u/run".into(),
            uid,
            gid: uid,
            groups: vec![],
            umask: 0o22,
            extra_fds: vec![],
        }
    }

    fn image() -> Defaults {
        Defaults {
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hi".into()],
            working_dir: Some("/srv/app".into()),
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--default".into()],
            user: Some("app".into()),
            ids: Some(Ok((1000, 100, vec![500]))),
        }
    }

    #[test]
    fn the_image_fills_in_and_the_command_line_wins() {
        let l = apply(launch(&[], 0), Some(&image()), &[], None, None).unwrap();
        assert_eq!(l.argv, ["/bin/app", "--default"]);
        assert!(l.env.contains(&"PATH=/usr/bin:/bin".to_string()));
        assert!(l.env.contains(&"OMPI_COMM_WORLD_RANK=3".to_string()));
        assert!(!l.env.contains(&"PATH=/host/bin".to_string()));
        assert_eq!(l.cwd, "/srv/app");
        assert_eq!((l.uid, l.gid, l.groups.clone()), (1000, 100, vec![500]));

        let l = apply(
            launch(&["cat", "/f"], 0),
            Some(&image()),
            &["GREETING=bye".into()],
            Some("/tmp"),
            Some("0"),
        )
        .unwrap();
        assert_eq!(l.argv, ["cat", "/f"]);
        assert!(l.env.contains(&"GREETING=bye".to_string()));
        assert!(!l.env.contains(&"GREETING=hi".to_string()));
        assert_eq!(l.cwd, "/tmp");
        assert_eq!((l.uid, l.gid), (0, 0));

        // A user's own rank stays theirs.
        let l = apply(launch(&["x"], 1234), Some(&image()), &[], None, None).unwrap();
        assert_eq!(l.uid, 1234);
    }

    #[test]
    fn what_cannot_run_is_refused() {
        let mut d = image();
        d.entrypoint.clear();
        d.cmd.clear();
        assert!(apply(launch(&[], 0), Some(&d), &[], None, None).is_err());
        d.ids = Some(Err(
            "the image's user \"app\" is not in its /etc/passwd".into()
        ));
        let e = apply(launch(&["x"], 0), Some(&d), &[], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--user"), "{e}");
        assert!(apply(launch(&["x"], 0), None, &["NOEQUALS".into()], None, None).is_err());
        assert!(apply(launch(&["x"], 0), None, &[], Some("rel"), None).is_err());
        assert!(apply(launch(&["x"], 0), None, &[], None, Some("bob")).is_err());
    }
}
