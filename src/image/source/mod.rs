//! Where images come from. Each source yields the image's manifest and config
//! (verified against their digests) and then each layer's blob as a file in the staging
//! directory, verified against its digest while it is copied there: nothing is
//! unpacked from bytes that were not checked first, nor from a file someone else could
//! change after the check.

mod archive;
mod auth;
mod engine;
mod layout;
mod registry;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::digest::{Digest, HashingWriter};
use super::progress::Phase;
use super::reference::ImageRef;
use crate::config::ImagesConfig;

/// Manifests and configs are small; anything this big is not one.
const MAX_JSON: u64 = 16 << 20;

/// An image's identity and contents, known before any layer is fetched.
pub struct Resolved {
    /// The config's digest: the image id, the cache key.
    pub id: Digest,
    pub config: ImageConfiguration,
    /// Other identities (the manifest's digest), recorded so they find the entry.
    pub ids: Vec<String>,
    pub layers: Vec<Blob>,
}

/// A layer: the digest its blob must have, its size when known, and its uncompressed
/// digest (the config's `diff_id`).
pub struct Blob {
    pub digest: Digest,
    pub size: Option<u64>,
    pub diff_id: Digest,
    /// Where the source finds it (a path in an archive).
    pub at: String,
}

pub trait Source {
    /// An identity known without fetching anything big (an engine's image id), so a
    /// cached image needs nothing from its source.
    fn known_id(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Whether `export` must run (under the image's pull lock) before `resolve`.
    fn exports(&self) -> bool {
        false
    }
    /// Copy the image out of an engine into `staging`.
    fn export(&mut self, _staging: &Path) -> Result<()> {
        Ok(())
    }
    /// Manifest and config, verified.
    fn resolve(&mut self) -> Result<Resolved>;
    /// Each layer's blob as a file in `dir`, verified.
    fn fetch(&mut self, r: &Resolved, dir: &Path, phase: &Phase) -> Result<Vec<PathBuf>>;
}

pub fn open(r: &ImageRef, cfg: &ImagesConfig) -> Result<Box<dyn Source>> {
    Ok(match r {
        ImageRef::Registry(reference) => Box::new(registry::Registry::new(reference.clone(), cfg)?),
        ImageRef::OciLayout { dir, tag } => Box::new(layout::Layout::new(dir, tag.as_deref())),
        ImageRef::DockerArchive { file, name } => {
            Box::new(archive::Archive::new(file, name.clone()))
        }
        ImageRef::DockerDaemon { .. } | ImageRef::ContainersStorage { .. } => {
            Box::new(engine::Engine::new(r, cfg))
        }
    })
}

/// The digest a JSON document must have, checked.
pub fn verified(bytes: Vec<u8>, want: &Digest, what: &str) -> Result<Vec<u8>> {
    let got = Digest::of(&bytes);
    if got != *want {
        bail!(
            "{what} has digest {got}, not the {want} it is named by: the image is corrupt or \
             was tampered with; nothing was unpacked"
        );
    }
    Ok(bytes)
}

/// Copy `from` into `to`, counting progress, and check the digest (and size) of what
/// was copied.
pub fn copy_verified(
    from: &mut dyn Read,
    to: &Path,
    blob: &Blob,
    what: &str,
    phase: &Phase,
) -> Result<()> {
    let f = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut w = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, f),
        hasher: Default::default(),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {what}")),
        };
        w.write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        phase.inc(n as u64);
    }
    w.flush()?;
    check_blob(w.hasher, blob, what)
}

pub fn check_blob(h: super::digest::Hasher, blob: &Blob, what: &str) -> Result<()> {
    let n = h.bytes;
    let got = h.finish();
    if got != blob.digest {
        bail!(
            "{what} has digest {got}, not the {} its manifest names: the image is corrupt or \
             was tampered with; nothing was unpacked",
            blob.digest
        );
    }
    if let Some(size) = blob.size.filter(|&s| s != n) {
        bail!("{what} is {n} bytes, not the {size} its manifest says; nothing was unpacked");
    }
    Ok(())
}

/// Read a whole small file, refusing anything larger than a manifest could be.
pub fn read_small(r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(MAX_JSON + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("reading {what}"))?;
    if v.len() as u64 > MAX_JSON {
        bail!("{what} is larger than {MAX_JSON} bytes; it is not a manifest or config");
    }
    Ok(v)
}

/// This host's platform in the image spec's terms (Go's GOARCH names).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "x86" => "386",
        a => a,
    }
}

pub enum Manifest {
    Image(Box<ImageManifest>),
    /// A list of per-platform manifests; `pick` chooses this host's.
    Index(Box<ImageIndex>),
}

pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        bail!("{what} is a Docker schema 1 manifest, which is not supported; push the image again with a current tool");
    }
    if v.get("manifests").is_some() {
        let i: ImageIndex = serde_json::from_value(v)
            .with_context(|| format!("{what} is not a valid image index"))?;
        return Ok(Manifest::Index(Box::new(i)));
    }
    let m: ImageManifest = serde_json::from_value(v)
        .with_context(|| format!("{what} is not a valid image manifest"))?;
    Ok(Manifest::Image(Box::new(m)))
}

/// This host's manifest in an index.
pub fn pick(index: &ImageIndex, what: &str) -> Result<Digest> {
    let arch = host_arch();
    let mut seen = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        seen.push(format!("{}/{}", p.os(), p.architecture()));
        if p.os().to_string() == "linux" && p.architecture().to_string() == arch {
            return Digest::parse(m.digest().as_ref()).map_err(anyhow::Error::msg);
        }
    }
    if index.manifests().len() == 1 && index.manifests()[0].platform().is_none() {
        return Digest::parse(index.manifests()[0].digest().as_ref()).map_err(anyhow::Error::msg);
    }
    bail!(
        "{what} has no image for linux/{arch} (it has {})",
        if seen.is_empty() {
            "none with a platform".to_string()
        } else {
            seen.join(", ")
        }
    )
}

/// The config and layer list of a manifest, checked against each other.
pub fn resolved(
    manifest: &ImageManifest,
    config: Vec<u8>,
    manifest_digest: Option<Digest>,
    what: &str,
) -> Result<Resolved> {
    let id = Digest::parse(manifest.config().digest().as_ref()).map_err(anyhow::Error::msg)?;
    let config = verified(config, &id, &format!("the config of {what}"))?;
    let layers: Vec<(Digest, Option<u64>, String)> = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mt = l.media_type().to_string();
            if !is_layer(&mt) {
                bail!(
                    "layer {} of {what} has media type {mt}, which is not a filesystem layer lwk-runc can unpack",
                    i + 1
                );
            }
            let d = Digest::parse(l.digest().as_ref()).map_err(anyhow::Error::msg)?;
            Ok((d.clone(), Some(l.size()), d.to_string()))
        })
        .collect::<Result<_>>()?;
    with_config(
        id,
        config,
        layers,
        manifest_digest.map(|d| d.to_string()).into_iter().collect(),
        what,
    )
}

/// Pair layers with the config's diff_ids.
pub fn with_config(
    id: Digest,
    config: Vec<u8>,
    layers: Vec<(Digest, Option<u64>, String)>,
    ids: Vec<String>,
    what: &str,
) -> Result<Resolved> {
    let cfg: ImageConfiguration = serde_json::from_slice(&config)
        .with_context(|| format!("the config of {what} is not a valid image config"))?;
    if cfg.os().to_string() != "linux" {
        bail!("{what} is an image for {}, not linux", cfg.os());
    }
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        bail!(
            "{what} lists {} layers but its config {} diff_ids; the image is inconsistent",
            layers.len(),
            diff_ids.len()
        );
    }
    let layers = layers
        .into_iter()
        .zip(diff_ids)
        .map(|((digest, size, at), diff)| {
            Ok(Blob {
                digest,
                size,
                diff_id: Digest::parse(diff).map_err(anyhow::Error::msg)?,
                at,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Resolved {
        id,
        config: cfg,
        ids,
        layers,
    })
}

fn is_layer(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}
