//! `oci:DIR[:TAG]`: an OCI image layout (what `skopeo copy`, `umoci` and
//! `podman save --format oci-dir` write).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::ImageIndex;

use super::{
    copy_verified, parse_manifest, pick, read_small, resolved, verified, Manifest, Resolved, Source,
};
use crate::image::digest::Digest;
use crate::image::progress::Phase;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct Layout {
    dir: PathBuf,
    tag: Option<String>,
}

impl Layout {
    pub fn new(dir: &Path, tag: Option<&str>) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            tag: tag.map(String::from),
        }
    }

    fn what(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    fn blob(&self, d: &Digest, what: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let f = File::open(&p).with_context(|| format!("opening {what} at {}", p.display()))?;
        verified(read_small(f, what)?, d, what)
    }
}

impl Source for Layout {
    fn resolve(&mut self) -> Result<Resolved> {
        let what = self.what();
        if !self.dir.join("oci-layout").is_file() {
            bail!(
                "{what}: {} is not an OCI image layout (it has no oci-layout file)",
                self.dir.display()
            );
        }
        let index: ImageIndex = serde_json::from_slice(&read_small(
            File::open(self.dir.join("index.json"))
                .with_context(|| format!("{what}: opening index.json"))?,
            "index.json",
        )?)
        .with_context(|| format!("{what}: index.json is not a valid image index"))?;
        let found: Vec<_> = index
            .manifests()
            .iter()
            .filter(|m| match &self.tag {
                Some(t) => m
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == t || n.rsplit_once(':').is_some_and(|(_, tag)| tag == t)),
                None => true,
            })
            .collect();
        let names = || {
            index
                .manifests()
                .iter()
                .filter_map(|m| {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .cloned()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let desc = match found.as_slice() {
            [one] => *one,
            [] => bail!(
                "{what}: no image of that name in index.json (it has: {})",
                names()
            ),
            _ => bail!(
                "{what}: index.json holds several images; name one as oci:DIR:NAME (it has: {})",
                names()
            ),
        };
        let mut digest = Digest::parse(desc.digest().as_ref()).map_err(anyhow::Error::msg)?;
        for _ in 0..4 {
            let body = self.blob(&digest, &format!("the manifest {digest} of {what}"))?;
            match parse_manifest(&body, &what)? {
                Manifest::Image(m) => {
                    let config =
                        Digest::parse(m.config().digest().as_ref()).map_err(anyhow::Error::msg)?;
                    let cfg = read_small(
                        File::open(self.blob_path(&config))
                            .with_context(|| format!("{what}: opening its config {config}"))?,
                        "the config",
                    )?;
                    return resolved(&m, cfg, Some(digest), &what);
                }
                Manifest::Index(i) => digest = pick(&i, &what)?,
            }
        }
        bail!("{what}: image indexes nested too deep")
    }

    fn fetch(&mut self, r: &Resolved, dir: &Path, phase: &Phase) -> Result<Vec<PathBuf>> {
        let n = r.layers.len();
        let mut out = Vec::new();
        for (i, l) in r.layers.iter().enumerate() {
            phase.layer(i + 1, n);
            let what = format!("layer {} of {} ({})", i + 1, self.what(), l.digest);
            let p = self.blob_path(&l.digest);
            let mut f =
                File::open(&p).with_context(|| format!("opening {what} at {}", p.display()))?;
            let to = dir.join(format!("layer{i}"));
            copy_verified(&mut f, &to, l, &what, phase)?;
            out.push(to);
        }
        Ok(out)
    }
}
