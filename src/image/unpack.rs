//! Applying an image's layers to a root filesystem, in order, with OCI whiteouts.
//!
//! A layer is untrusted input. Every name is resolved inside the root by walking it one
//! component at a time from a directory descriptor (`openat` with `O_NOFOLLOW`), never
//! by a path the host would resolve: a symlink met on the way is followed as the
//! container would see it (an absolute target from the image's root), and one that
//! climbs above the root with `..` refuses the image. Names holding `..` are refused
//! outright. The last component is never followed: an entry replaces whatever is
//! there, symlink included. Nothing else writes the staging tree meanwhile (it is
//! root's, under the image's pull lock), so a walk cannot be raced.
//!
//! Whiteouts follow the image spec: `.wh.NAME` removes NAME of the layers below,
//! `.wh..wh..opq` empties its directory of what the layers below put there. Both
//! spare what the same layer adds, whatever the order of the entries in its tar.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Symlinks followed while resolving one name (the kernel's own limit).
const MAX_LINKS: usize = 40;
const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// What was left out of a rootfs, for the summary.
#[derive(Default, Debug)]
pub struct Notes {
    /// Device files mknod refused (no CAP_MKNOD, a user namespace, a device cgroup).
    pub skipped_devices: Vec<String>,
    /// Entries of kinds a rootfs cannot hold (sockets, unknown tar types).
    pub skipped_other: Vec<String>,
}

/// A root directory being unpacked into.
pub struct Root {
    fd: OwnedFd,
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_at(
    dir: RawFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: openat with a valid C string; the descriptor is ours.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: fstatat fills the zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn unlink_at(dir: RawFd, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: unlinkat with a valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(|_| ())
}

/// The names in a directory (not `.` and `..`).
fn list(dir: RawFd) -> io::Result<Vec<OsString>> {
    // SAFETY: dup of a descriptor we hold, handed to the Dir that owns it.
    let fd = check(unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) })?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut v = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(v)
}

/// Remove `name` in `dir` whatever it is, a directory with all it holds; never follows
/// a symlink. Missing is fine.
pub fn remove_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    match lstat_at(dir, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => {
            let sub = open_dir_at(dir, name)?;
            for n in list(sub.as_raw_fd())? {
                remove_at(sub.as_raw_fd(), &n)?;
            }
            unlink_at(dir, name, libc::AT_REMOVEDIR)
        }
        Some(_) => unlink_at(dir, name, 0),
    }
}

/// A tar name as components, or why it is refused.
fn components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    let mut v = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("it holds a '..' component".into()),
            c => v.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(v)
}

fn key(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

fn shown(raw: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(raw))
}

/// Why a walk stopped.
enum Walk {
    Dir(OwnedFd),
    /// A component is missing (and `create` was false).
    Missing,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = open_dir_at(libc::AT_FDCWD, path.as_os_str())
            .with_context(|| format!("opening the rootfs {}", path.display()))?;
        Ok(Root { fd })
    }

    /// The directory `dir` (components from the root), following symlinks inside the
    /// root only; missing directories are made (0755, root) when `create`.
    fn walk(&self, dir: &[OsString], create: bool, entry: &[u8]) -> Result<Walk> {
        // SAFETY: dup of our root descriptor.
        let root = check(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        let mut stack: Vec<OwnedFd> = vec![unsafe { OwnedFd::from_raw_fd(root) }];
        let mut todo: VecDeque<OsString> = dir.iter().cloned().collect();
        let mut links = 0usize;
        let mut via: Option<(OsString, PathBuf)> = None;
        while let Some(c) = todo.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() == 1 {
                        let (l, t) = via.unwrap_or_default();
                        bail!(
                            "entry {} would be written through the symlink {:?} -> {:?}, which \
                             leads outside the image's root",
                            shown(entry),
                            l,
                            t
                        );
                    }
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let top = stack.last().map_or(-1, |f| f.as_raw_fd());
            let st = lstat_at(top, &c)
                .with_context(|| format!("entry {}: looking up {c:?}", shown(entry)))?;
            match st {
                None if create => {
                    let name = cstr(&c)?;
                    // SAFETY: mkdirat with a valid C string.
                    check(unsafe { libc::mkdirat(top, name.as_ptr(), 0o755) })
                        .with_context(|| format!("entry {}: creating {c:?}", shown(entry)))?;
                }
                None => return Ok(Walk::Missing),
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!(
                            "entry {}: more than {MAX_LINKS} symlinks on its path",
                            shown(entry)
                        );
                    }
                    let target = read_link_at(top, &c).with_context(|| {
                        format!("entry {}: reading the symlink {c:?}", shown(entry))
                    })?;
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    for t in target.iter().rev() {
                        if t != OsStr::new("/") {
                            todo.push_front(t.to_os_string());
                        }
                    }
                    via = Some((c, target));
                    continue;
                }
                Some(st) if is_dir(&st) => {}
                Some(_) => bail!(
                    "entry {}: {c:?} on its path is not a directory",
                    shown(entry)
                ),
            }
            let fd = open_dir_at(top, &c)
                .with_context(|| format!("entry {}: opening {c:?}", shown(entry)))?;
            stack.push(fd);
        }
        stack
            .pop()
            .map(Walk::Dir)
            .ok_or_else(|| anyhow!("entry {}: empty walk", shown(entry)))
    }

    /// Apply one layer (an uncompressed tar stream).
    pub fn apply(&self, input: impl Read, notes: &mut Notes) -> Result<()> {
        let mut ar = tar::Archive::new(input);
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
        for e in ar.entries().context("reading the layer's tar stream")? {
            let mut e = e.context("reading the layer's tar stream")?;
            let raw = e.path_bytes().into_owned();
            let comps = components(&raw)
                .map_err(|why| anyhow!("entry {} is refused: {why}", shown(&raw)))?;
            let meta = Meta::of(&mut e)?;
            let kind = e.header().entry_type();
            let Some((base, parent)) = comps.split_last() else {
                if kind.is_dir() {
                    meta.apply_fd(self.fd.as_raw_fd(), &raw)?;
                }
                continue;
            };
            let b = base.as_bytes();
            if let Some(victim) = b.strip_prefix(WHITEOUT) {
                let Walk::Dir(dir) = self.walk(parent, false, &raw)? else {
                    continue;
                };
                if b == OPAQUE {
                    opaque(dir.as_raw_fd(), &key(parent), &this_layer)
                        .with_context(|| format!("applying the opaque whiteout {}", shown(&raw)))?;
                } else if !victim.starts_with(WHITEOUT) {
                    let victim = OsStr::from_bytes(victim);
                    if !this_layer.contains(&key(parent).join(victim)) {
                        remove_at(dir.as_raw_fd(), victim)
                            .with_context(|| format!("applying the whiteout {}", shown(&raw)))?;
                    }
                }
                continue;
            }
            let Walk::Dir(dir) = self.walk(parent, true, &raw)? else {
                unreachable!("walk creates what is missing");
            };
            let at = dir.as_raw_fd();
            let mut k = PathBuf::new();
            for c in &comps {
                k.push(c);
                this_layer.insert(k.clone());
            }
            let io = |what: &str| format!("entry {}: {what}", shown(&raw));
            use tar::EntryType as T;
            match kind {
                T::Directory => {
                    match lstat_at(at, base).with_context(|| io("looking it up"))? {
                        Some(st) if is_dir(&st) => {}
                        Some(_) => {
                            remove_at(at, base).with_context(|| io("replacing it"))?;
                            mkdir(at, base).with_context(|| io("creating it"))?;
                        }
                        None => mkdir(at, base).with_context(|| io("creating it"))?,
                    }
                    let fd = open_dir_at(at, base).with_context(|| io("opening it"))?;
                    meta.apply_fd(fd.as_raw_fd(), &raw)?;
                    dir_times.push((comps.clone(), meta.mtime));
                }
                T::Regular | T::Continuous | T::GNUSparse => {
                    remove_at(at, base).with_context(|| io("replacing it"))?;
                    let fd = open_at(
                        at,
                        base,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                        0o600,
                    )
                    .with_context(|| io("creating it"))?;
                    let mut f = std::fs::File::from(fd);
                    copy(&mut e, &mut f).with_context(|| io("writing it"))?;
                    meta.apply_fd(f.as_raw_fd(), &raw)?;
                }
                T::Symlink => {
                    let target = e
                        .link_name_bytes()
                        .ok_or_else(|| anyhow!("{}", io("a symlink without a target")))?
                        .into_owned();
                    remove_at(at, base).with_context(|| io("replacing it"))?;
                    let t = CString::new(target).map_err(|_| anyhow!("{}", io("NUL in target")))?;
                    let n = cstr(base)?;
                    // SAFETY: symlinkat with valid C strings.
                    check(unsafe { libc::symlinkat(t.as_ptr(), at, n.as_ptr()) })
                        .with_context(|| io("creating the symlink"))?;
                    meta.apply_at(at, base, false, &raw)?;
                }
                T::Link => {
                    let target = e
                        .link_name_bytes()
                        .ok_or_else(|| anyhow!("{}", io("a hard link without a target")))?
                        .into_owned();
                    let tcomps = components(&target).map_err(|why| {
                        anyhow!(
                            "entry {} is refused: its hard link target {} {why}",
                            shown(&raw),
                            shown(&target)
                        )
                    })?;
                    let Some((tbase, tparent)) = tcomps.split_last() else {
                        bail!("{}", io("a hard link to the root"));
                    };
                    let Walk::Dir(tdir) = self.walk(tparent, false, &target)? else {
                        bail!(
                            "{}",
                            io(&format!(
                                "its hard link target {} does not exist",
                                shown(&target)
                            ))
                        );
                    };
                    match lstat_at(tdir.as_raw_fd(), tbase)? {
                        Some(st) if !is_dir(&st) => {}
                        Some(_) => bail!("{}", io("a hard link to a directory")),
                        None => bail!(
                            "{}",
                            io(&format!(
                                "its hard link target {} does not exist",
                                shown(&target)
                            ))
                        ),
                    }
                    if tcomps == comps {
                        continue;
                    }
                    remove_at(at, base).with_context(|| io("replacing it"))?;
                    let (o, n) = (cstr(tbase)?, cstr(base)?);
                    // SAFETY: linkat with valid C strings; the target is not followed.
                    check(unsafe { libc::linkat(tdir.as_raw_fd(), o.as_ptr(), at, n.as_ptr(), 0) })
                        .with_context(|| io(&format!("linking it to {}", shown(&target))))?;
                }
                T::Char | T::Block | T::Fifo => {
                    remove_at(at, base).with_context(|| io("replacing it"))?;
                    let (typ, dev) = match kind {
                        T::Char => (libc::S_IFCHR, meta.dev),
                        T::Block => (libc::S_IFBLK, meta.dev),
                        _ => (libc::S_IFIFO, 0),
                    };
                    let n = cstr(base)?;
                    // SAFETY: mknodat with a valid C string.
                    let r = unsafe { libc::mknodat(at, n.as_ptr(), typ | 0o600, dev) };
                    if r != 0 {
                        let err = io::Error::last_os_error();
                        if typ != libc::S_IFIFO && err.raw_os_error() == Some(libc::EPERM) {
                            notes
                                .skipped_devices
                                .push(format!("/{}", key(&comps).display()));
                            continue;
                        }
                        return Err(err).with_context(|| io("creating the device file"));
                    }
                    meta.apply_at(at, base, true, &raw)?;
                }
                other => notes
                    .skipped_other
                    .push(format!("/{} ({other:?})", key(&comps).display())),
            }
        }
        // A directory's time is its own only once nothing more is written into it.
        for (comps, mtime) in dir_times.into_iter().rev() {
            if let Ok(Walk::Dir(fd)) = self.walk(&comps, false, b"") {
                set_times(fd.as_raw_fd(), None, mtime, true)?;
            }
        }
        Ok(())
    }

    /// Create `dir` (absolute, inside the root) if it is missing: an image's
    /// WorkingDir, which Docker makes when a container starts.
    pub fn ensure_dir(&self, dir: &str) -> Result<()> {
        let comps = components(dir.as_bytes())
            .map_err(|why| anyhow!("the image's working directory {dir:?} is refused: {why}"))?;
        self.walk(&comps, true, dir.as_bytes()).map(|_| ())
    }

    /// Read a small file inside the root (an image's /etc/passwd), resolved as the
    /// container would; None when it is missing.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let comps = components(path.as_bytes()).map_err(|e| anyhow!("{path}: {e}"))?;
        let Some((base, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let Walk::Dir(dir) = self.walk(parent, false, path.as_bytes())? else {
            return Ok(None);
        };
        let mut b = base.clone();
        // Follow a final symlink inside the root too.
        let mut d = dir;
        for _ in 0..MAX_LINKS {
            match lstat_at(d.as_raw_fd(), &b)? {
                None => return Ok(None),
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    let t = read_link_at(d.as_raw_fd(), &b)?;
                    let mut full: Vec<OsString> = if t.is_absolute() {
                        Vec::new()
                    } else {
                        parent.to_vec()
                    };
                    full.extend(t.iter().filter(|c| *c != "/").map(|c| c.to_os_string()));
                    let Some((nb, np)) = full.split_last() else {
                        return Ok(None);
                    };
                    let Walk::Dir(nd) = self.walk(np, false, path.as_bytes())? else {
                        return Ok(None);
                    };
                    d = nd;
                    b = nb.clone();
                }
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                    let f = open_at(d.as_raw_fd(), &b, libc::O_RDONLY, 0)?;
                    let mut v = Vec::new();
                    std::fs::File::from(f).take(1 << 20).read_to_end(&mut v)?;
                    return Ok(Some(v));
                }
                Some(_) => return Ok(None),
            }
        }
        Ok(None)
    }
}

fn read_link_at(dir: RawFd, name: &OsStr) -> io::Result<PathBuf> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into a buffer of the stated length.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

fn mkdir(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: mkdirat with a valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) }).map(|_| ())
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Remove from `dir` what the layers below put there: whatever this layer does not
/// name, and inside the directories it does name, the same again.
fn opaque(dir: RawFd, at: &Path, this_layer: &HashSet<PathBuf>) -> io::Result<()> {
    for n in list(dir)? {
        let k = at.join(&n);
        if !this_layer.contains(&k) {
            remove_at(dir, &n)?;
        } else if lstat_at(dir, &n)?.is_some_and(|st| is_dir(&st)) {
            let sub = open_dir_at(dir, &n)?;
            opaque(sub.as_raw_fd(), &k, this_layer)?;
        }
    }
    Ok(())
}

fn set_times(fd: RawFd, name: Option<&OsStr>, mtime: i64, follow_fd: bool) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: futimens/utimensat with a two-element array.
    let r = match name {
        None if follow_fd => unsafe { libc::futimens(fd, ts.as_ptr()) },
        None => 0,
        Some(n) => {
            let c = cstr(n)?;
            unsafe { libc::utimensat(fd, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }
        }
    };
    check(r).map(|_| ())
}

/// Ownership, mode, times and the extended attributes an entry carries.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    dev: libc::dev_t,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    fn of<R: Read>(e: &mut tar::Entry<R>) -> Result<Meta> {
        let h = e.header();
        let mut m = Meta {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: h.mtime().unwrap_or(0) as i64,
            dev: libc::makedev(
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            xattrs: Vec::new(),
        };
        if let Some(pax) = e
            .pax_extensions()
            .context("reading the entry's PAX header")?
        {
            for x in pax.flatten() {
                let (Ok(k), v) = (x.key(), x.value_bytes()) else {
                    continue;
                };
                let num = || std::str::from_utf8(v).ok();
                match k {
                    "uid" => m.uid = num().and_then(|s| s.parse().ok()).unwrap_or(m.uid),
                    "gid" => m.gid = num().and_then(|s| s.parse().ok()).unwrap_or(m.gid),
                    "mtime" => {
                        m.mtime = num()
                            .and_then(|s| s.split('.').next())
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(m.mtime)
                    }
                    _ => {
                        // File capabilities and user attributes are part of an image;
                        // security labels and trusted.* belong to the host.
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            if name == "security.capability" || name.starts_with("user.") {
                                if let Ok(c) = CString::new(name) {
                                    m.xattrs.push((c, v.to_vec()));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    /// Owner first (chown clears set-id bits and capabilities), then mode, attributes
    /// and time.
    fn apply_fd(&self, fd: RawFd, entry: &[u8]) -> Result<()> {
        let io = |what: &str| format!("entry {}: {what}", shown(entry));
        // SAFETY: fchown/fchmod/fsetxattr on a descriptor we hold.
        check(unsafe { libc::fchown(fd, self.uid, self.gid) })
            .with_context(|| io(&format!("chown {}:{}", self.uid, self.gid)))?;
        check(unsafe { libc::fchmod(fd, self.mode) })
            .with_context(|| io(&format!("chmod {:o}", self.mode)))?;
        for (k, v) in &self.xattrs {
            check(unsafe { libc::fsetxattr(fd, k.as_ptr(), v.as_ptr().cast(), v.len(), 0) })
                .with_context(|| io(&format!("setting the attribute {k:?}")))?;
        }
        set_times(fd, None, self.mtime, true).with_context(|| io("setting its time"))
    }

    /// For what cannot be opened (symlinks, device files): by name, never followed.
    fn apply_at(&self, dir: RawFd, name: &OsStr, chmod: bool, entry: &[u8]) -> Result<()> {
        let io = |what: &str| format!("entry {}: {what}", shown(entry));
        let c = cstr(name)?;
        // SAFETY: *at calls with a valid C string; symlinks are not followed.
        check(unsafe {
            libc::fchownat(
                dir,
                c.as_ptr(),
                self.uid,
                self.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .with_context(|| io(&format!("chown {}:{}", self.uid, self.gid)))?;
        if chmod {
            // A device node or fifo we just made: fchmodat does not follow it.
            check(unsafe { libc::fchmodat(dir, c.as_ptr(), self.mode, 0) })
                .with_context(|| io(&format!("chmod {:o}", self.mode)))?;
        }
        set_times(dir, Some(name), self.mtime, false).with_context(|| io("setting its time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_dot_dot_are_refused_and_others_normalized() {
        assert_eq!(
            components(b"./usr//bin/./sh").unwrap(),
            vec![OsString::from("usr"), "bin".into(), "sh".into()]
        );
        assert!(components(b"/").unwrap().is_empty());
        assert!(components(b"a/../b").is_err());
        assert!(components(b"../../etc/passwd").is_err());
    }

    /// A layer as a tar made with the tar crate's builder.
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Layer {
            Layer(tar::Builder::new(Vec::new()))
        }
        fn entry(
            &mut self,
            name: &str,
            kind: tar::EntryType,
            link: Option<&str>,
            data: &[u8],
        ) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_000_000);
            // Names are set raw: the builder refuses `..`, and a hostile layer would not.
            let b = name.as_bytes();
            h.as_old_mut().name[..b.len()].copy_from_slice(b);
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn file(&mut self, name: &str, data: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Regular, None, data.as_bytes())
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Directory, None, b"")
        }
        fn link(&mut self, name: &str, to: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Symlink, Some(to), b"")
        }
        fn bytes(&mut self) -> Vec<u8> {
            std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
                .into_inner()
                .unwrap()
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lwk-unpack-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root")).unwrap();
        d
    }

    fn tree(root: &Path) -> Vec<String> {
        fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                let ft = e.file_type().unwrap();
                if ft.is_symlink() {
                    out.push(format!(
                        "{rel} -> {}",
                        std::fs::read_link(&p).unwrap().display()
                    ));
                } else if ft.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(base, &p, out);
                } else {
                    out.push(format!("{rel} = {}", std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut v = Vec::new();
        walk(root, root, &mut v);
        v.sort();
        v
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_only_the_layers_below() {
        let d = tmp("wh");
        let root = Root::open(&d.join("root")).unwrap();
        let mut n = Notes::default();
        let lower = Layer::new()
            .dir("w/")
            .file("w/gone", "1")
            .file("w/kept", "2")
            .dir("w/opq/")
            .file("w/opq/old", "3")
            .dir("w/opq/sub/")
            .file("w/opq/sub/old", "4")
            .bytes();
        root.apply(&lower[..], &mut n).unwrap();
        // The upper layer's own entries come before and after its whiteouts.
        let upper = Layer::new()
            .file("w/opq/new", "5")
            .dir("w/opq/sub/")
            .file("w/opq/sub/new", "6")
            .file("w/.wh.gone", "")
            .file("w/opq/.wh..wh..opq", "")
            .file("w/again", "7")
            .file("w/.wh.again", "")
            .bytes();
        root.apply(&upper[..], &mut n).unwrap();
        assert_eq!(
            tree(&d.join("root")),
            [
                "w/",
                "w/again = 7",
                "w/kept = 2",
                "w/opq/",
                "w/opq/new = 5",
                "w/opq/sub/",
                "w/opq/sub/new = 6"
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_are_followed_inside_the_root_and_never_out_of_it() {
        let d = tmp("ln");
        std::fs::create_dir_all(d.join("outside")).unwrap();
        let root = Root::open(&d.join("root")).unwrap();
        let mut n = Notes::default();
        let l = Layer::new()
            .dir("usr/lib/")
            .link("lib", "usr/lib")
            .file("lib/a", "in")
            .link("abs", "/usr/lib")
            .file("abs/b", "in")
            .bytes();
        root.apply(&l[..], &mut n).unwrap();
        assert!(d.join("root/usr/lib/a").is_file());
        assert!(d.join("root/usr/lib/b").is_file());
        let evil = Layer::new()
            .link("evil", "../outside")
            .file("evil/pwned", "x")
            .bytes();
        let e = root.apply(&evil[..], &mut n).unwrap_err().to_string();
        assert!(e.contains("leads outside the image's root"), "{e}");
        let dotdot = Layer::new().file("a/../../outside/x", "x").bytes();
        let e = format!("{:#}", root.apply(&dotdot[..], &mut n).unwrap_err());
        assert!(e.contains("'..'"), "{e}");
        assert_eq!(std::fs::read_dir(d.join("outside")).unwrap().count(), 0);
        // A file replaces a symlink rather than writing through it.
        let replace = Layer::new()
            .link("x", "/etc/passwd")
            .file("x", "mine")
            .bytes();
        root.apply(&replace[..], &mut n).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("root/x")).unwrap(), "mine");
        assert_eq!(root.read("/x").unwrap().unwrap(), b"mine");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hard_links_stay_inside_the_root() {
        let d = tmp("hl");
        let root = Root::open(&d.join("root")).unwrap();
        let mut n = Notes::default();
        let l = Layer::new()
            .file("a", "data")
            .entry("b", tar::EntryType::Link, Some("a"), b"")
            .bytes();
        root.apply(&l[..], &mut n).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(d.join("root/a")).unwrap().ino(),
            std::fs::metadata(d.join("root/b")).unwrap().ino()
        );
        let bad = Layer::new()
            .entry("c", tar::EntryType::Link, Some("../../etc/passwd"), b"")
            .bytes();
        assert!(root.apply(&bad[..], &mut n).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
