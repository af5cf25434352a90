//! `docker-archive:FILE[:NAME:TAG]`: what `docker save` and `podman save` write, a
//! tar holding `manifest.json`, the config and one tar per layer. The config is named
//! by its digest; a layer either by its own digest (`blobs/sha256/<hex>`, Docker 25 and
//! later) or it is the uncompressed tar whose digest the config lists as its diff_id.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{copy_verified, read_small, with_config, Resolved, Source};
use crate::image::digest::Digest;
use crate::image::progress::Phase;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Item {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub struct Archive {
    file: PathBuf,
    name: Option<String>,
    /// Member name -> (offset of its data, size).
    members: HashMap<String, (u64, u64)>,
}

/// The digest a member's name gives it: `blobs/sha256/<hex>`, `<hex>.json` or `<hex>`.
fn named_digest(member: &str) -> Option<Digest> {
    let base = member.rsplit('/').next()?;
    Digest::from_hex(base.strip_suffix(".json").unwrap_or(base))
}

/// `docker.io/library/busybox:1` and `busybox:1` are one name.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.strip_prefix("docker.io/")
            .map(|s| s.strip_prefix("library/").unwrap_or(s))
            .unwrap_or(s)
            .to_string()
    };
    norm(a) == norm(b)
}

impl Archive {
    pub fn new(file: &Path, name: Option<String>) -> Archive {
        Archive {
            file: file.to_path_buf(),
            name,
            members: HashMap::new(),
        }
    }

    fn what(&self) -> String {
        match &self.name {
            Some(n) => format!("docker-archive:{}:{n}", self.file.display()),
            None => format!("docker-archive:{}", self.file.display()),
        }
    }

    fn member(&self, f: &File, name: &str) -> Result<std::io::Take<File>> {
        let Some(&(off, size)) = self.members.get(name.trim_start_matches("./")) else {
            bail!("{}: the archive has no member {name:?}", self.what());
        };
        let mut g = f.try_clone()?;
        g.seek(SeekFrom::Start(off))?;
        Ok(g.take(size))
    }

    fn index(&mut self, f: &File) -> Result<()> {
        let mut ar = tar::Archive::new(f);
        for e in ar
            .entries_with_seek()
            .with_context(|| format!("{}: reading the archive", self.what()))?
        {
            let e = e.with_context(|| format!("{}: reading the archive", self.what()))?;
            if e.header().entry_type().is_file() {
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                self.members.insert(
                    name.trim_start_matches("./").to_string(),
                    (e.raw_file_position(), e.size()),
                );
            }
        }
        Ok(())
    }
}

impl Source for Archive {
    fn resolve(&mut self) -> Result<Resolved> {
        let what = self.what();
        let f = File::open(&self.file).with_context(|| format!("opening {what}"))?;
        self.index(&f)?;
        let manifest: Vec<Item> = serde_json::from_slice(&read_small(
            self.member(&f, "manifest.json")?,
            "manifest.json",
        )?)
        .with_context(|| format!("{what}: manifest.json is not a Docker archive manifest"))?;
        let tags = |i: &Item| i.repo_tags.clone().unwrap_or_default();
        let all: Vec<String> = manifest.iter().flat_map(tags).collect();
        let item = match &self.name {
            Some(n) => manifest
                .iter()
                .find(|i| tags(i).iter().any(|t| same_name(t, n)))
                .with_context(|| format!("{what}: no image of that name (it has: {})", all.join(", ")))?,
            None if manifest.len() == 1 => &manifest[0],
            None => bail!(
                "{what}: the archive holds {} images; name one as docker-archive:FILE:NAME:TAG (it has: {})",
                manifest.len(),
                all.join(", ")
            ),
        };
        let id = named_digest(&item.config).with_context(|| {
            format!(
                "{what}: the config member {:?} is not named by its digest, so it cannot be verified",
                item.config
            )
        })?;
        let config = read_small(self.member(&f, &item.config)?, "the config")?;
        let config = super::verified(config, &id, &format!("the config of {what}"))?;
        let cfg: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config)
            .with_context(|| format!("the config of {what} is not a valid image config"))?;
        let diff_ids = cfg.rootfs().diff_ids().clone();
        let layers = item
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // A classic layer.tar is uncompressed: its digest is its diff_id.
                let d = match named_digest(l) {
                    Some(d) => d,
                    None => diff_ids
                        .get(i)
                        .map(|s| Digest::parse(s).map_err(anyhow::Error::msg))
                        .transpose()?
                        .with_context(|| format!("{what}: layer {} has no diff_id", i + 1))?,
                };
                Ok((
                    d,
                    self.members.get(l.trim_start_matches("./")).map(|m| m.1),
                    l.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        with_config(id, config, layers, Vec::new(), &what)
    }

    fn fetch(&mut self, r: &Resolved, dir: &Path, phase: &Phase) -> Result<Vec<PathBuf>> {
        let f = File::open(&self.file).with_context(|| format!("opening {}", self.what()))?;
        let n = r.layers.len();
        let mut out = Vec::new();
        for (i, l) in r.layers.iter().enumerate() {
            phase.layer(i + 1, n);
            let what = format!("layer {} of {} ({})", i + 1, self.what(), l.at);
            let to = dir.join(format!("layer{i}"));
            copy_verified(&mut self.member(&f, &l.at)?, &to, l, &what, phase)?;
            out.push(to);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_named_by_digest_are_recognized() {
        let h = "a".repeat(64);
        assert!(named_digest(&format!("blobs/sha256/{h}")).is_some());
        assert!(named_digest(&format!("{h}.json")).is_some());
        assert!(named_digest(&format!("{h}/layer.tar")).is_none());
        assert!(same_name("docker.io/library/busybox:1", "busybox:1"));
        assert!(!same_name("localhost/app:1", "app:1"));
    }
}
