//! Images: references in skopeo's transport syntax, fetching from registries, OCI
//! layouts, Docker archives and the node's engines, verification, unpacking, and the
//! node's cache (cache.rs) from which every job gets an overlay of its own.
//!
//! Identity is the image's config digest (what Docker and podman call its id), not its
//! name nor its manifest: the same image reached through two transports is unpacked
//! once, and a layer's uncompressed digest is checked against the config's `diff_ids`
//! whatever the transport, so the whole chain from the name to the files is verified.
//!
//! Fetching and unpacking happen once per image on a node: whoever finds an image
//! missing takes its pull lock and does the work in a staging directory; everyone else
//! waits in `flock` on that lock (no polling) and then finds the finished entry.

pub mod cache;
mod defaults;
mod digest;
mod progress;
mod reference;
mod source;
mod unpack;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::ImagesConfig;
use cache::{Cache, Held, Lock, Record};
pub use defaults::Defaults;
pub use digest::Digest;
pub use progress::{bytes as human_bytes, Ui};
pub use reference::ImageRef;
use source::{Resolved, Source};

/// An image in the cache, held (shared) so that eviction leaves it alone until the
/// holder has mounted it.
pub struct Ready {
    pub record: Record,
    pub rootfs: PathBuf,
    _use: Held,
}

/// What stands between a reference and a ready image.
pub enum Acquired {
    Ready(Box<Ready>),
    /// Work to do (or wait for) first; then acquire again.
    Pending(Pending),
}

pub struct Pending(Work);

enum Work {
    /// This process holds the image's pull lock: fetch and unpack it.
    Pull(Box<Puller>),
    /// Another process holds it: wait until it lets go.
    Wait(File),
}

struct Puller {
    cache: Cache,
    src: Box<dyn Source>,
    resolved: Option<Resolved>,
    id: Digest,
    name: String,
    _use: Held,
    _pull: Held,
}

/// Find `r` in the cache, or the work that brings it there. `hint`: the image id
/// another rank of the job already resolved the reference to; `on_id` learns the id
/// as soon as it is known (before any layer is fetched).
pub fn acquire(
    cfg: &ImagesConfig,
    r: &ImageRef,
    hint: Option<&Digest>,
    on_id: &mut dyn FnMut(&Digest),
) -> Result<Acquired> {
    let cache = Cache::open(cfg)?;
    let name = r.name();
    if let Some(id) = hint {
        if let Some(ready) = ready(&cache, id, &name, &[])? {
            return Ok(Acquired::Ready(Box::new(ready)));
        }
        // Another rank is fetching it: wait for that, without asking the source again.
        if cache.lock(id, Lock::Pull, true, false)?.is_none() {
            return Ok(Acquired::Pending(Pending(Work::Wait(
                cache.pull_lock_file(id)?,
            ))));
        }
    }
    let mut src = source::open(r, cfg)?;
    let known = match r {
        ImageRef::Registry(x) => x.digest().map(String::from),
        _ => src.known_id()?,
    };
    if let Some(rec) = known.as_deref().and_then(|k| cache.find_id(k)) {
        if let Some(ready) = ready(&cache, &rec.digest, &name, &[])? {
            return Ok(Acquired::Ready(Box::new(ready)));
        }
    }
    let (id, resolved) = if src.exports() {
        let k = known.context("the engine gave no image id")?;
        (Digest::parse(&k).map_err(anyhow::Error::msg)?, None)
    } else {
        match src.resolve() {
            Ok(res) => (res.id.clone(), Some(res)),
            Err(e) => {
                // A registry out of reach: a node that has the image runs it anyway.
                if let (ImageRef::Registry(_), Some(rec)) = (r, cache.find_name(&name)) {
                    if let Some(ready) = ready(&cache, &rec.digest, &name, &[])? {
                        tracing::warn!(
                            "{name}: using the cached image {} ({e:#})",
                            rec.digest.short()
                        );
                        eprintln!(
                            "lwk-runc: warning: {name}: using the cached image {}: {e:#}",
                            rec.digest.short()
                        );
                        return Ok(Acquired::Ready(Box::new(ready)));
                    }
                }
                return Err(e);
            }
        }
    };
    on_id(&id);
    let ids = resolved.as_ref().map(|r| r.ids.clone()).unwrap_or_default();
    if let Some(ready) = ready(&cache, &id, &name, &ids)? {
        return Ok(Acquired::Ready(Box::new(ready)));
    }
    let Some(u) = cache.lock(&id, Lock::Use, false, true)? else {
        unreachable!("a waiting lock is always taken");
    };
    let Some(p) = cache.lock(&id, Lock::Pull, true, false)? else {
        return Ok(Acquired::Pending(Pending(Work::Wait(
            cache.pull_lock_file(&id)?,
        ))));
    };
    if cache.entry_dir(&id).exists() {
        drop((p, u));
        return match ready(&cache, &id, &name, &ids)? {
            Some(r) => Ok(Acquired::Ready(Box::new(r))),
            None => bail!(
                "the cache entry {} vanished while it was looked up",
                id.short()
            ),
        };
    }
    Ok(Acquired::Pending(Pending(Work::Pull(Box::new(Puller {
        cache,
        src,
        resolved,
        id,
        name,
        _use: u,
        _pull: p,
    })))))
}

/// The entry `id`, held, with `name` and `ids` noted on it; None when absent.
fn ready(cache: &Cache, id: &Digest, name: &str, ids: &[String]) -> Result<Option<Ready>> {
    let Some(u) = cache.lock(id, Lock::Use, false, true)? else {
        return Ok(None);
    };
    let Some(record) = cache.record(id) else {
        return Ok(None);
    };
    cache.note(id, name, ids)?;
    cache.touch(id);
    Ok(Some(Ready {
        record,
        rootfs: cache.rootfs(id),
        _use: u,
    }))
}

/// `lwk-runc image pull`: bring `r` into the cache, waiting for whoever fetches it.
pub fn pull(cfg: &ImagesConfig, r: &ImageRef, ui: &Ui) -> Result<Record> {
    for _ in 0..3 {
        match acquire(cfg, r, None, &mut |_| {})? {
            Acquired::Ready(ready) => return Ok(ready.record),
            Acquired::Pending(p) => p.finish(ui)?,
        }
    }
    bail!("{r}: the image was fetched but is not in the cache; see the log")
}

impl Pending {
    /// Do the work, or wait for whoever does it; then acquire again.
    pub fn finish(self, ui: &Ui) -> Result<()> {
        match self.0 {
            Work::Wait(f) => {
                tracing::debug!("waiting for another process fetching the image");
                // SAFETY: flock on a descriptor we own; it is released when `f` drops.
                while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINTR) {
                        return Err(e).context("waiting for the image's pull lock");
                    }
                }
                Ok(())
            }
            Work::Pull(p) => p.run(ui),
        }
    }
}

/// Removes a staging directory unless it was committed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Counts what is read through it as progress.
struct Counting<'a, R> {
    inner: R,
    phase: &'a progress::Phase,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.phase.inc(n as u64);
        Ok(n)
    }
}

/// A layer blob as its tar stream: gzip and zstd are recognized by their magic.
fn decompressed<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let head = r.fill_buf().context("reading the layer")?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| anyhow::anyhow!("reading the zstd layer: {e}"))?,
        )
    } else {
        Box::new(r)
    })
}

impl Puller {
    fn run(mut self, ui: &Ui) -> Result<()> {
        let what = self.name.clone();
        let staging = Staging(Some(self.cache.staging(&self.id)?));
        let dir = staging.0.clone().unwrap_or_default();
        let res = match self.resolved.take() {
            Some(r) => r,
            None => {
                self.src.export(&dir)?;
                self.src.resolve()?
            }
        };
        let total: u64 = res.layers.iter().filter_map(|l| l.size).sum();
        let blobs = dir.join("blobs");
        std::fs::create_dir(&blobs).context("creating the staging area")?;
        let fetch_phase = ui.phase("fetching", total);
        let files = self.src.fetch(&res, &blobs, &fetch_phase)?;
        let fetched = fetch_phase.finish();
        let _ = std::fs::remove_file(dir.join("export.tar"));

        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).context("creating the staging rootfs")?;
        std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let root = unpack::Root::open(&rootfs)?;
        let mut notes = unpack::Notes::default();
        let sizes: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let phase = ui.phase("unpacking", sizes);
        let n = files.len();
        for (i, (f, l)) in files.iter().zip(&res.layers).enumerate() {
            phase.layer(i + 1, n);
            let label = format!("layer {} of {what} ({})", i + 1, l.digest);
            let file = File::open(f).with_context(|| format!("opening {label}"))?;
            let mut tar = digest::HashingReader::new(decompressed(Counting {
                inner: file,
                phase: &phase,
            })?);
            root.apply(&mut tar, &mut notes)
                .with_context(|| format!("unpacking {label}; nothing was kept"))?;
            let h = tar.finish().with_context(|| format!("reading {label}"))?;
            let got = h.finish();
            if got != l.diff_id {
                bail!(
                    "{label} unpacks to content with digest {got}, not the {} its config \
                     names: the image is corrupt or was tampered with; nothing was kept",
                    l.diff_id
                );
            }
            let _ = std::fs::remove_file(f);
        }
        let defaults = Defaults::of(&res.config, &root);
        if let Some(w) = &defaults.working_dir {
            root.ensure_dir(w)?;
        }
        let unpacked = phase.finish();
        let _ = std::fs::remove_dir(&blobs);
        let size = cache::disk_usage(&rootfs);
        let mut notes_text = Vec::new();
        if !notes.skipped_devices.is_empty() {
            notes_text.push(format!(
                "skipped {} device file(s) mknod refused here: {}",
                notes.skipped_devices.len(),
                notes.skipped_devices.join(" ")
            ));
        }
        if !notes.skipped_other.is_empty() {
            notes_text.push(format!("skipped {}", notes.skipped_other.join(" ")));
        }
        let mut ids = res.ids.clone();
        if self.id != res.id {
            ids.push(self.id.to_string());
        }
        let rec = Record {
            digest: res.id.clone(),
            names: vec![self.name.clone()],
            ids,
            layers: n,
            size,
            unpacked: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            defaults,
            notes: notes_text.clone(),
        };
        self.cache.commit(&dir, &res.id, &rec)?;
        let mut staging = staging;
        staging.0 = None;
        let line =
            format!(
            "{what}: fetched {n} layer(s) ({}) in {:.1} s and unpacked image {} ({}) in {:.1} s{}",
            human_bytes(total.max(sizes)),
            fetched.as_secs_f64(),
            res.id.short(),
            human_bytes(size),
            unpacked.as_secs_f64(),
            notes_text.iter().map(|t| format!("; {t}")).collect::<String>()
        );
        tracing::info!("{line}");
        ui.summary(&line);
        for gone in self.cache.enforce_cap(&res.id)? {
            let l = format!(
                "evicted image {} ({}, {}) to keep the cache under its size cap",
                gone.digest.short(),
                gone.names.last().map(String::as_str).unwrap_or("?"),
                human_bytes(gone.size)
            );
            tracing::info!("{l}");
            ui.summary(&l);
        }
        Ok(())
    }
}

impl Ready {
    /// Mount this image for a job at `dir/rootfs`: an overlay whose lower layer is the
    /// cache entry (never written) and whose upper layer is the job's own (`dir/upper`),
    /// removed with the job.
    pub fn mount(&self, dir: &Path) -> Result<PathBuf> {
        let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
            }
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.rootfs.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("lwk-image"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| {
            format!(
                "mounting image {} for the job at {} (overlay {opts})",
                self.record.digest.short(),
                rootfs.display()
            )
        })?;
        Ok(rootfs)
    }
}

/// Undo [`Ready::mount`] (nothing when it is not mounted).
pub fn unmount(dir: &Path) {
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    }
}
