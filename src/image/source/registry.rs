//! `docker://`: a registry, through `oci-client` (the ORAS project's OCI distribution
//! client) on a single-threaded tokio runtime that lives only as long as the pull.
//! HTTPS with the system's roots plus the registry's own CA from the certs.d
//! directories; plain HTTP only for registries the config lists as insecure.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use std::io::Write;

use super::{check_blob, parse_manifest, pick, resolved, Manifest, Resolved, Source};
use crate::config::ImagesConfig;
use crate::image::digest::Digest;
use crate::image::digest::HashingWriter;
use crate::image::progress::Phase;

/// Layers fetched at once.
const PARALLEL: usize = 3;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

pub struct Registry {
    reference: Reference,
    client: Client,
    auth: RegistryAuth,
    auth_from: Option<PathBuf>,
    rt: tokio::runtime::Runtime,
}

fn certs(dirs: &[PathBuf], registry: &str) -> Vec<Certificate> {
    let mut v = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d.join(registry)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt") {
                if let Ok(data) = std::fs::read(&p) {
                    tracing::debug!("trusting {} for {registry}", p.display());
                    v.push(Certificate {
                        encoding: CertificateEncoding::Pem,
                        data,
                    });
                }
            }
        }
    }
    v
}

impl Registry {
    pub fn new(reference: Reference, cfg: &ImagesConfig) -> Result<Registry> {
        // rustls' crypto: ring, which builds with cc alone (aws-lc-rs wants a much larger C
        // build); its lack of post-quantum key exchange does not matter for fetching
        // public, digest-verified content.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(cfg.insecure_registries.clone()),
            extra_root_certificates: certs(&cfg.certs_dirs, reference.registry()),
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            // A registry that stops sending fails the pull rather than hanging the job.
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..Default::default()
        };
        let client =
            Client::try_from(config).map_err(|e| anyhow!("setting up the registry client: {e}"))?;
        let (auth, auth_from) =
            super::auth::credentials(&cfg.auth_file, reference.registry(), reference.repository())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the registry client's runtime")?;
        Ok(Registry {
            reference,
            client,
            auth,
            auth_from,
            rt,
        })
    }

    fn what(&self) -> String {
        format!("docker://{}", self.reference.whole())
    }

    /// A registry error, with what a person would do about it.
    fn explain(&self, e: oci_client::errors::OciDistributionError, doing: &str) -> anyhow::Error {
        let text = format!("{e:?} {e}");
        let reg = self.reference.registry();
        let hint = if text.contains("401")
            || text.contains("Unauthorized")
            || text.contains("UNAUTHORIZED")
            || text.contains("AuthenticationFailure")
        {
            match &self.auth_from {
                Some(f) => format!("; the registry refused the credentials for {reg} in {}", f.display()),
                None => format!(
                    "; the registry wants credentials: log in to {reg} (podman login / docker login) \
                     or set images.auth_file"
                ),
            }
        } else if text.contains("InvalidContentType")
            || text.contains("CorruptMessage")
            || text.contains("record overflow")
            || text.contains("wrong version number")
        {
            format!("; {reg} does not speak HTTPS: if it really serves plain HTTP, list it in images.insecure_registries")
        } else if text.contains("certificate")
            || text.contains("UnknownIssuer")
            || text.contains("invalid peer")
        {
            format!(
                "; the certificate of {reg} is not trusted: put its CA in <certs dir>/{reg}/ca.crt \
                 (images.certs_dirs)"
            )
        } else {
            String::new()
        };
        let mut chain = String::new();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push_str(&format!(": {s}"));
            src = s.source();
        }
        anyhow!("{} {doing}: {e}{chain}{hint}", self.what())
    }

    fn manifest(&self, r: &Reference) -> Result<(Vec<u8>, Digest)> {
        let (body, digest) = self
            .rt
            .block_on(self.client.pull_manifest_raw(r, &self.auth, ACCEPT))
            .map_err(|e| self.explain(e, "fetching the manifest"))?;
        let got = Digest::of(&body);
        // The client checked the registry's digest header; the reference's digest,
        // when there is one, is what we were asked for.
        if let Some(want) = r.digest() {
            if got.to_string() != want {
                bail!(
                    "{}: the registry sent a manifest with digest {got}, not {want}",
                    self.what()
                );
            }
        }
        if Digest::parse(&digest).is_ok_and(|d| d != got) {
            bail!(
                "{}: the manifest's digest {got} is not the {digest} the registry claims",
                self.what()
            );
        }
        Ok((body.to_vec(), got))
    }

    fn blob_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        let what = format!("{}: the blob {d}", self.what());
        self.rt.block_on(async {
            let s = self
                .client
                .pull_blob_stream(&self.reference, d.to_string().as_str())
                .await
                .map_err(|e| self.explain(e, &format!("fetching the blob {d}")))?;
            let mut v = Vec::new();
            let mut s = s.stream;
            while let Some(chunk) = s
                .try_next()
                .await
                .with_context(|| format!("reading {what}"))?
            {
                v.extend_from_slice(&chunk);
                if v.len() as u64 > super::MAX_JSON {
                    bail!("{what} is too large for an image config");
                }
            }
            Ok(v)
        })
    }
}

impl Source for Registry {
    fn resolve(&mut self) -> Result<Resolved> {
        let what = self.what();
        let (mut body, mut digest) = self.manifest(&self.reference.clone())?;
        for _ in 0..4 {
            match parse_manifest(&body, &what)? {
                Manifest::Image(m) => {
                    let config =
                        Digest::parse(m.config().digest().as_ref()).map_err(anyhow::Error::msg)?;
                    let cfg = self.blob_bytes(&config)?;
                    return resolved(&m, cfg, Some(digest), &what);
                }
                Manifest::Index(i) => {
                    let d = pick(&i, &what)?;
                    let r = self.reference.clone_with_digest(d.to_string());
                    (body, digest) = self.manifest(&r)?;
                    if digest != d {
                        bail!("{what}: the registry sent manifest {digest} for {d}");
                    }
                }
            }
        }
        bail!("{what}: image indexes nested too deep")
    }

    fn fetch(&mut self, r: &Resolved, dir: &Path, phase: &Phase) -> Result<Vec<PathBuf>> {
        let n = r.layers.len();
        let what = self.what();
        let this = &*self;
        let jobs = r.layers.iter().enumerate().map(|(i, l)| {
            let to = dir.join(format!("layer{i}"));
            let (phase, what) = (phase.clone(), what.clone());
            async move {
                phase.layer(i + 1, n);
                let doing = format!("fetching layer {} ({})", i + 1, l.digest);
                let mut s = this
                    .client
                    .pull_blob_stream(&this.reference, l.digest.to_string().as_str())
                    .await
                    .map_err(|e| this.explain(e, &doing))?
                    .stream;
                let label = format!("layer {} of {what} ({})", i + 1, l.digest);
                let f = std::fs::File::create(&to)
                    .with_context(|| format!("creating {}", to.display()))?;
                let mut w = HashingWriter {
                    inner: std::io::BufWriter::with_capacity(1 << 20, f),
                    hasher: Default::default(),
                };
                while let Some(chunk) = s
                    .try_next()
                    .await
                    .with_context(|| format!("{doing} of {what}"))?
                {
                    w.write_all(&chunk)
                        .with_context(|| format!("writing {}", to.display()))?;
                    phase.inc(chunk.len() as u64);
                }
                w.flush()?;
                check_blob(w.hasher, l, &label)?;
                Ok::<_, anyhow::Error>(to)
            }
        });
        this.rt.block_on(
            futures_util::stream::iter(jobs)
                .buffered(PARALLEL)
                .try_collect(),
        )
    }
}
