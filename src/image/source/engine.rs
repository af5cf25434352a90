//! `docker-daemon:` and `containers-storage:`: an image the node's Docker or podman
//! already has. Its id (the config digest) comes from the engine's `image inspect`, so
//! a cached image costs one cheap call; otherwise the engine exports it once with
//! `save` into the staging directory, which is then read as a Docker archive.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::archive::Archive;
use super::{Resolved, Source};
use crate::config::ImagesConfig;
use crate::image::progress::Phase;
use crate::image::reference::ImageRef;

pub struct Engine {
    what: String,
    cli: PathBuf,
    /// Global options (podman's store) before the subcommand.
    global: Vec<String>,
    name: String,
    docker: bool,
    id: Option<String>,
    inner: Option<Archive>,
}

impl Engine {
    pub fn new(r: &ImageRef, cfg: &ImagesConfig) -> Engine {
        let (cli, global, name, docker) = match r {
            ImageRef::DockerDaemon { name } => (cfg.docker.clone(), Vec::new(), name.clone(), true),
            ImageRef::ContainersStorage { store, name } => {
                let mut g = Vec::new();
                if let Some(s) = store {
                    if let Some(d) = &s.driver {
                        g.extend(["--storage-driver".to_string(), d.clone()]);
                    }
                    if let Some(p) = &s.root {
                        g.extend(["--root".to_string(), p.display().to_string()]);
                    }
                    if let Some(p) = &s.runroot {
                        g.extend(["--runroot".to_string(), p.display().to_string()]);
                    }
                    for o in &s.options {
                        g.extend(["--storage-opt".to_string(), o.clone()]);
                    }
                }
                (cfg.podman.clone(), g, name.clone(), false)
            }
            _ => unreachable!("Engine::new is for docker-daemon: and containers-storage:"),
        };
        Engine {
            what: r.to_string(),
            cli,
            global,
            name,
            docker,
            id: None,
            inner: None,
        }
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let key = if self.docker {
            "images.docker"
        } else {
            "images.podman"
        };
        let out = Command::new(&self.cli)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "{}: running {} ({key}; install {} or set {key})",
                    self.what,
                    self.cli.display(),
                    if self.docker { "docker.io" } else { "podman" }
                )
            })?;
        if !out.status.success() {
            bail!(
                "{}: `{} {}` failed: {}",
                self.what,
                self.cli.display(),
                self.global
                    .iter()
                    .map(String::as_str)
                    .chain(args.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Source for Engine {
    fn known_id(&mut self) -> Result<Option<String>> {
        if self.id.is_some() {
            return Ok(self.id.clone());
        }
        let id = self.run(&["image", "inspect", "--format", "{{.Id}}", "--", &self.name])?;
        let id = id.strip_prefix("sha256:").unwrap_or(&id);
        match crate::image::digest::Digest::from_hex(id) {
            Some(d) => {
                self.id = Some(d.to_string());
                Ok(self.id.clone())
            }
            None => bail!(
                "{}: the engine gave the image id {id:?}, which is not a sha256 digest",
                self.what
            ),
        }
    }

    fn exports(&self) -> bool {
        true
    }

    fn export(&mut self, staging: &Path) -> Result<()> {
        let file = staging.join("export.tar");
        let f = file.display().to_string();
        if self.docker {
            self.run(&["save", "-o", &f, "--", &self.name])?;
        } else {
            self.run(&[
                "save",
                "--format",
                "docker-archive",
                "-o",
                &f,
                "--",
                &self.name,
            ])?;
        }
        self.inner = Some(Archive::new(&file, None));
        Ok(())
    }

    fn resolve(&mut self) -> Result<Resolved> {
        let id = self.known_id()?;
        let inner = self.inner.as_mut().context("the image was not exported")?;
        let mut r = inner
            .resolve()
            .with_context(|| format!("{}: reading its export", self.what))?;
        r.ids.extend(id.filter(|i| *i != r.id.to_string()));
        Ok(r)
    }

    fn fetch(&mut self, r: &Resolved, dir: &Path, phase: &Phase) -> Result<Vec<PathBuf>> {
        let inner = self.inner.as_mut().context("the image was not exported")?;
        inner.fetch(r, dir, phase)
    }
}
