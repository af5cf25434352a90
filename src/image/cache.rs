//! The node's image cache: one unpacked rootfs per image, keyed by the image's config
//! digest (its image id), shared read-only by every job through an overlay mount.
//!
//! ```text
//! <cache_dir>/            root's, 0700: image rootfs trees hold set-uid files
//!   lock                  the cache lock: record updates, eviction, rm, prune
//!   entries/<hex>/        a complete image: rootfs/, image.json, used (mtime = last use)
//!   staging/<hex>.<pid>/  an image being fetched and unpacked; renamed into entries/
//!   trash/                entries being removed
//!   locks/<hex>.pull      held exclusively by whoever fetches <hex>; others wait in flock
//!   locks/<hex>.use       held shared from finding an entry until its overlay is mounted;
//!                         eviction takes it exclusively without waiting
//! ```
//!
//! An entry appears only by the rename of a finished staging directory, so a crash at
//! any point leaves nothing a later run would use; whoever next takes `<hex>.pull`
//! removes what a dead puller left in staging. An entry is in use while an overlay
//! mount names it (a running job), which the kernel's mount table records for us
//! whatever happened to the processes that made it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::defaults::Defaults;
use super::digest::Digest;
use crate::config::ImagesConfig;

/// What the cache knows of an image.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub digest: Digest,
    /// References it was used by (e.g. `docker://…:tag`), the latest last.
    pub names: Vec<String>,
    /// Other identities: manifest digests, an engine's image id.
    #[serde(default)]
    pub ids: Vec<String>,
    pub layers: usize,
    /// Bytes the unpacked rootfs takes on disk.
    pub size: u64,
    /// When it was unpacked (RFC 3339).
    pub unpacked: String,
    pub defaults: Defaults,
    /// What the unpack left out (device files it could not make).
    #[serde(default)]
    pub notes: Vec<String>,
}

pub struct Cache {
    pub dir: PathBuf,
    cap: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Pull,
    Use,
}

/// `flock` and the descriptor that holds it.
pub struct Held(#[allow(dead_code)] File);

fn flock(f: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

fn mkdir_private(p: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
    }
    let m = fs::symlink_metadata(p).with_context(|| format!("checking {}", p.display()))?;
    if !m.is_dir() || m.uid() != 0 {
        bail!(
            "{} is not a directory of root's; remove it and let lwk-runc make it again",
            p.display()
        );
    }
    if m.mode() & 0o077 != 0 {
        fs::set_permissions(p, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to root", p.display()))?;
    }
    Ok(())
}

impl Cache {
    pub fn open(cfg: &ImagesConfig) -> Result<Cache> {
        let dir = cfg.cache_dir.clone();
        // The lease directory's rule (src/trust.rs): root's, every directory on the way
        // too, writable by nobody else; made here if missing, never trusted for being there.
        crate::trust::ensure_private_dir(&dir).map_err(|u| {
            anyhow::anyhow!(
                "the image cache (images.cache_dir) {} is not safe: {u}; {}",
                dir.display(),
                u.fix()
            )
        })?;
        mkdir_private(&dir)?;
        for sub in ["entries", "staging", "trash", "locks"] {
            mkdir_private(&dir.join(sub))?;
        }
        Ok(Cache {
            dir,
            cap: cfg.max_bytes().map_err(anyhow::Error::msg)?,
        })
    }

    /// The cache as it is, for reading only (`lwk-runc doctor`): nothing is created,
    /// and a cache that is not there yet is `None`.
    pub fn inspect(cfg: &ImagesConfig) -> Option<Cache> {
        fs::symlink_metadata(cfg.cache_dir.join("entries")).ok()?;
        Some(Cache {
            dir: cfg.cache_dir.clone(),
            cap: cfg.max_bytes().unwrap_or(0),
        })
    }

    /// The size cap in bytes (0: none).
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Staging directories whose puller is gone (the next pull of that image, or
    /// `lwk-runc image prune`, removes them).
    pub fn abandoned_staging(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.join("staging"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match name
                    .rsplit_once('.')
                    .and_then(|(_, p)| p.parse::<i32>().ok())
                {
                    Some(pid) => crate::host::proc_stat(pid).is_none_or(|s| s.ending()),
                    None => true,
                }
            })
            .map(|e| e.path())
            .collect()
    }

    pub fn entry_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join("entries").join(d.hex())
    }

    pub fn rootfs(&self, d: &Digest) -> PathBuf {
        self.entry_dir(d).join("rootfs")
    }

    fn lock_file(&self, name: &str) -> Result<File> {
        let p = self.dir.join(name);
        crate::host::open_lock(&p).with_context(|| format!("opening the lock {}", p.display()))
    }

    fn digest_lock(&self, d: &Digest, which: Lock) -> Result<File> {
        let kind = match which {
            Lock::Pull => "pull",
            Lock::Use => "use",
        };
        self.lock_file(&format!("locks/{}.{kind}", d.hex()))
    }

    /// Take a digest's lock: shared or exclusive, waiting or not (None: busy).
    pub fn lock(
        &self,
        d: &Digest,
        which: Lock,
        exclusive: bool,
        wait: bool,
    ) -> Result<Option<Held>> {
        let f = self.digest_lock(d, which)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        } | if wait { 0 } else { libc::LOCK_NB };
        Ok(flock(&f, op)
            .context("locking the image cache")?
            .then_some(Held(f)))
    }

    /// The lock file of `<hex>.pull`, to wait on while another process fetches.
    pub fn pull_lock_file(&self, d: &Digest) -> Result<File> {
        self.digest_lock(d, Lock::Pull)
    }

    /// The cache lock (record updates, eviction, removal).
    pub fn lock_all(&self) -> Result<Held> {
        let f = self.lock_file("lock")?;
        flock(&f, libc::LOCK_EX).context("locking the image cache")?;
        Ok(Held(f))
    }

    pub fn record(&self, d: &Digest) -> Option<Record> {
        let text = fs::read(self.entry_dir(d).join("image.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = fs::read_dir(self.dir.join("entries"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Digest::from_hex(&e.file_name().to_string_lossy()))
            .filter_map(|d| self.record(&d))
            .collect();
        v.sort_by(|a, b| a.digest.cmp(&b.digest));
        v
    }

    /// The entry known by this digest or identity (manifest digest, engine id).
    pub fn find_id(&self, id: &str) -> Option<Record> {
        if let Ok(d) = Digest::parse(id) {
            if let Some(r) = self.record(&d) {
                return Some(r);
            }
        }
        self.records()
            .into_iter()
            .find(|r| r.ids.iter().any(|i| i == id))
    }

    /// The entry last used by this reference name.
    pub fn find_name(&self, name: &str) -> Option<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.names.iter().any(|n| n == name))
            .max_by_key(|r| self.last_used(&r.digest))
    }

    /// Add names and identities to a record (under the cache lock).
    pub fn note(&self, d: &Digest, name: &str, ids: &[String]) -> Result<()> {
        let _l = self.lock_all()?;
        let Some(mut r) = self.record(d) else {
            return Ok(());
        };
        let before = (r.names.clone(), r.ids.clone());
        r.names.retain(|n| n != name);
        r.names.push(name.to_string());
        for i in ids {
            if !r.ids.contains(i) && *i != d.to_string() {
                r.ids.push(i.clone());
            }
        }
        if (r.names.clone(), r.ids.clone()) != before {
            write_record(&self.entry_dir(d), &r)?;
        }
        Ok(())
    }

    pub fn touch(&self, d: &Digest) {
        let p = self.entry_dir(d).join("used");
        let _ = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .and_then(|f| f.set_modified(SystemTime::now()));
    }

    pub fn last_used(&self, d: &Digest) -> SystemTime {
        fs::metadata(self.entry_dir(d).join("used"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Whether a mounted overlay has this entry as its lower layer (a job using it).
    pub fn mounted(&self, d: &Digest) -> bool {
        let needle = format!("lowerdir={}", self.rootfs(d).display());
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split([',', ' ']).any(|opt| opt == needle))
    }

    /// A fresh staging directory for `d`; the caller holds `<hex>.pull`, so whatever
    /// other staging directories of `d` exist are a dead puller's and go first.
    pub fn staging(&self, d: &Digest) -> Result<PathBuf> {
        let base = self.dir.join("staging");
        for e in fs::read_dir(&base).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}.", d.hex()))
            {
                tracing::debug!("removing the unfinished pull {}", e.path().display());
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let p = base.join(format!("{}.{}", d.hex(), std::process::id()));
        mkdir_private(&p)?;
        Ok(p)
    }

    /// Make a finished staging directory the entry of `d`: synced, then renamed.
    pub fn commit(&self, staging: &Path, d: &Digest, rec: &Record) -> Result<()> {
        write_record(staging, rec)?;
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(staging.join("used"))
            .context("writing the entry's use time")?;
        let dir = File::open(staging).context("opening the staging directory")?;
        // SAFETY: syncfs on a descriptor we own: one flush of the whole tree.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error()).context("syncing the unpacked image");
        }
        let to = self.entry_dir(d);
        match fs::rename(staging, &to) {
            Ok(()) => {}
            // Made meanwhile by a puller of another identity of the same image.
            Err(e) if to.exists() => {
                tracing::debug!("{} appeared meanwhile ({e}); keeping it", to.display());
                let _ = fs::remove_dir_all(staging);
            }
            Err(e) => return Err(e).with_context(|| format!("renaming into {}", to.display())),
        }
        File::open(self.dir.join("entries"))
            .and_then(|f| f.sync_all())
            .context("syncing the cache")?;
        Ok(())
    }

    /// Remove an entry no job uses. Ok(false): in use.
    pub fn remove(&self, d: &Digest) -> Result<bool> {
        let Some(_u) = self.lock(d, Lock::Use, true, false)? else {
            return Ok(false);
        };
        if self.mounted(d) {
            return Ok(false);
        }
        let from = self.entry_dir(d);
        if !from.exists() {
            return Ok(true);
        }
        let trash = self
            .dir
            .join("trash")
            .join(format!("{}.{}", d.hex(), std::process::id()));
        let _ = fs::remove_dir_all(&trash);
        fs::rename(&from, &trash).with_context(|| format!("removing {}", from.display()))?;
        drop(_u);
        fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))?;
        Ok(true)
    }

    /// Evict least recently used entries no job uses until the cache fits its cap;
    /// `keep` (just unpacked) stays even if it alone is over. Returns what went.
    pub fn enforce_cap(&self, keep: &Digest) -> Result<Vec<Record>> {
        if self.cap == 0 {
            return Ok(Vec::new());
        }
        let _l = self.lock_all()?;
        let mut recs = self.records();
        let mut total: u64 = recs.iter().map(|r| r.size).sum();
        recs.sort_by_key(|r| self.last_used(&r.digest));
        let mut gone = Vec::new();
        for r in recs {
            if total <= self.cap {
                break;
            }
            if r.digest == *keep {
                continue;
            }
            if self.remove(&r.digest)? {
                total = total.saturating_sub(r.size);
                gone.push(r);
            }
        }
        if total > self.cap {
            tracing::warn!(
                "the image cache {} holds {} bytes, over its cap of {}; what is left is in use",
                self.dir.display(),
                total,
                self.cap
            );
        }
        Ok(gone)
    }

    /// Remove every entry no job uses, unfinished pulls and leftovers of removals.
    pub fn prune(&self) -> Result<Vec<Record>> {
        let _l = self.lock_all()?;
        let mut gone = Vec::new();
        for r in self.records() {
            if self.remove(&r.digest)? {
                gone.push(r);
            }
        }
        self.clean_leftovers();
        Ok(gone)
    }

    /// Staging directories whose puller is gone, and the trash.
    pub fn clean_leftovers(&self) {
        for e in fs::read_dir(self.dir.join("staging"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(d) = name.split('.').next().and_then(Digest::from_hex) else {
                continue;
            };
            if let Ok(Some(_held)) = self.lock(&d, Lock::Pull, true, false) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        for e in fs::read_dir(self.dir.join("trash"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn write_record(dir: &Path, r: &Record) -> Result<()> {
    let tmp = dir.join("image.json.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    serde_json::to_writer_pretty(&mut f, r)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("image.json")).context("writing the image record")?;
    Ok(())
}

/// Bytes a tree takes on disk (hard links once), never following a symlink.
pub fn disk_usage(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    total
}
