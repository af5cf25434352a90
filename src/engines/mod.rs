//! The container engines lwk-runc plugs into, as their config files see it: whether
//! lwk-runc is registered (`doctor`) and how to register it without disturbing the
//! rest of the file (`setup-engine`).
//!
//! Each engine's file is parsed and edited as data — serde_json keeping key order for
//! daemon.json, toml_edit keeping comments and layout for the TOML files — never
//! patched as text, so whatever the admin had there stays, and a file that does not
//! parse is refused rather than guessed at.

pub mod containerd;
pub mod docker;
pub mod podman;
pub mod slurm;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::Engine;

/// A runtime entry in an engine's config that runs lwk-runc.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Registration {
    /// The name containers ask for (`--runtime NAME`, a RuntimeClass handler).
    pub name: String,
    /// The binary the engine runs.
    pub path: PathBuf,
}

/// The binary name that marks a runtime entry as lwk-runc's, and the name it is
/// registered under in every engine (for containerd, the handler the shipped
/// RuntimeClass names).
pub const BINARY_NAME: &str = "lwk-runc";

/// True when `path` (a runtime path or command from an engine config) names lwk-runc.
pub fn is_lwk_runc(path: &str) -> bool {
    Path::new(path.split_whitespace().next().unwrap_or(""))
        .file_name()
        .is_some_and(|n| n == BINARY_NAME)
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "containerd",
        }
    }

    /// The system-wide config file lwk-runc is registered in.
    pub fn default_config(self) -> &'static Path {
        Path::new(match self {
            Engine::Docker => docker::CONFIG,
            Engine::Podman => podman::CONFIG,
            Engine::Containerd => containerd::CONFIG,
        })
    }

    /// `text` (the file's content, empty if absent) with `name` → `path` registered;
    /// None when it already is.
    pub fn register(self, text: &str, name: &str, path: &Path) -> Result<Option<String>, String> {
        match self {
            Engine::Docker => docker::register(text, name, path),
            Engine::Podman => podman::register(text, name, path),
            Engine::Containerd => containerd::register(text, name, path),
        }
    }

    /// What the admin does next for the engine to see the change, and how a container
    /// then asks for lwk-runc.
    pub fn next_steps(self, name: &str) -> String {
        match self {
            Engine::Docker => format!(
                "reload dockerd, which re-reads its runtimes on SIGHUP: systemctl reload docker\n\
                 then: docker run --runtime {name} -e LWK_KERNEL=mckernel IMAGE ..."
            ),
            Engine::Podman => format!(
                "podman reads containers.conf at every command; restart podman.service if its API service runs\n\
                 then: podman run --runtime {name} -e LWK_KERNEL=mckernel IMAGE ...\n\
                 (conmon gives the runtime a clean environment: the LWK config must be /etc/lwk-runc/config.toml)"
            ),
            Engine::Containerd => format!(
                "restart containerd (running containers keep running): systemctl restart containerd\n\
                 then: a RuntimeClass with handler {name} (/usr/share/lwk-runc/engines/runtimeclass.yaml), \
                 pods with that runtimeClassName and the annotation run.lwk.kernel=mckernel"
            ),
        }
    }
}

/// The outcome of [`setup`], for the caller to print.
pub struct Setup {
    pub file: PathBuf,
    /// Unified diff from the old to the new file; empty when nothing changes.
    pub diff: String,
    pub backup: Option<PathBuf>,
    pub written: bool,
}

/// `setup-engine`: register `name` → `runtime` in the engine's config `file`, keeping
/// the rest; back the old file up and replace it atomically with the same owner and
/// mode, unless `dry_run`.
pub fn setup(
    engine: Engine,
    file: &Path,
    name: &str,
    runtime: &Path,
    dry_run: bool,
) -> Result<Setup> {
    if !runtime.is_absolute() {
        bail!(
            "the runtime path {} is not absolute; engines run it from their own working directory",
            runtime.display()
        );
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("runtime name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    // Edit what a symlink points at, so the link stays a link.
    let file = match fs::canonicalize(file) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => file.to_path_buf(),
        Err(e) => return Err(e).with_context(|| format!("resolving {}", file.display())),
    };
    let (old, meta) = match fs::read_to_string(&file) {
        Ok(t) => (t, Some(fs::metadata(&file)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let new = engine.register(&old, name, runtime).map_err(|reason| {
        anyhow::anyhow!(
            "{} config {}: {reason}; nothing was changed",
            engine.as_str(),
            file.display()
        )
    })?;
    let Some(new) = new else {
        return Ok(Setup {
            file,
            diff: String::new(),
            backup: None,
            written: false,
        });
    };
    let diff = unified_diff(&old, &new, &file, meta.is_none());
    if dry_run {
        return Ok(Setup {
            file,
            diff,
            backup: None,
            written: false,
        });
    }
    let backup = match &meta {
        Some(_) => Some(back_up(&file)?),
        None => None,
    };
    replace(&file, new.as_bytes(), meta.as_ref())?;
    Ok(Setup {
        file,
        diff,
        backup,
        written: true,
    })
}

fn unified_diff(old: &str, new: &str, file: &Path, created: bool) -> String {
    let name = file.display().to_string();
    let from = if created {
        "/dev/null".to_string()
    } else {
        name.clone()
    };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&from, &name)
        .to_string()
}

/// `<file>.lwk-runc-<UTC time>.bak`, a copy with the original's mode.
fn back_up(file: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".lwk-runc-{stamp}.bak"));
    let backup = file.with_file_name(name);
    fs::copy(file, &backup)
        .with_context(|| format!("backing {} up to {}", file.display(), backup.display()))?;
    Ok(backup)
}

/// Write `data` to a temporary file beside `file`, give it the old file's owner and
/// mode (0644 root for a new file), fsync, and rename it over `file`.
fn replace(file: &Path, data: &[u8], old: Option<&fs::Metadata>) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file.file_name().unwrap_or_default());
    tmp_name.push(format!(".lwk-runc.tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let res = (|| -> std::io::Result<()> {
        let mode = old.map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some(m) = old {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, file)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", file.display()))
}

/// The table at `keys` under `root`, creating missing ones as implicit tables (so only
/// the deepest table a caller fills gets a header).
pub(crate) fn table_path<'a>(
    root: &'a mut toml_edit::Table,
    keys: &[&str],
) -> Result<&'a mut toml_edit::Table, String> {
    let mut t = root;
    let mut walked: Vec<&str> = Vec::new();
    for k in keys {
        walked.push(k);
        let item = t.entry(k).or_insert_with(|| {
            let mut n = toml_edit::Table::new();
            n.set_implicit(true);
            toml_edit::Item::Table(n)
        });
        t = item.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a [table] (an inline table or a value?); register the runtime by hand",
                dotted(&walked)
            )
        })?;
    }
    Ok(t)
}

/// `a."b.c".d`: a TOML key path as it is written.
pub(crate) fn dotted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                k.to_string()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The document as text, with the tables this edit created placed after all the
/// file's own (toml_edit would otherwise put them right after their parent, in the
/// middle of the admin's layout).
pub(crate) fn render_toml(mut doc: toml_edit::DocumentMut) -> String {
    fn walk(t: &mut toml_edit::Table, last: &mut usize, assign: bool) {
        if let Some(p) = t.position() {
            *last = (*last).max(p);
        } else if assign && !t.is_implicit() {
            *last += 1;
            t.set_position(*last);
        }
        for (_, item) in t.iter_mut() {
            if let Some(sub) = item.as_table_mut() {
                walk(sub, last, assign);
            }
        }
    }
    // The root table is the document itself, never moved; its key/values come first.
    let mut last = 0;
    for assign in [false, true] {
        for (_, item) in doc.as_table_mut().iter_mut() {
            if let Some(t) = item.as_table_mut() {
                walk(t, &mut last, assign);
            }
        }
    }
    doc.to_string()
}

pub(crate) fn parse_toml(text: &str) -> Result<toml_edit::DocumentMut, String> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| format!("not valid TOML: {}", e.to_string().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lwk_runc_is_recognised_by_binary_name() {
        assert!(is_lwk_runc("/usr/bin/lwk-runc"));
        assert!(is_lwk_runc("lwk-runc --rootless=true state x"));
        assert!(!is_lwk_runc("/usr/bin/runc"));
        assert!(!is_lwk_runc("/usr/bin/lwk-runc-wrapper"));
    }

    #[test]
    fn setup_backs_up_keeps_mode_and_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("lwk-runc-setup-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("daemon.json");
        fs::write(&f, "{\n  \"debug\": true\n}\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        let bin = Path::new("/usr/bin/lwk-runc");

        let dry = setup(Engine::Docker, &f, "lwk-runc", bin, true).unwrap();
        assert!(!dry.written && dry.backup.is_none());
        assert!(dry.diff.contains("+    \"lwk-runc\": {"), "{}", dry.diff);
        assert_eq!(fs::read_to_string(&f).unwrap(), "{\n  \"debug\": true\n}\n");

        let done = setup(Engine::Docker, &f, "lwk-runc", bin, false).unwrap();
        assert!(done.written);
        let backup = done.backup.expect("a backup");
        assert_eq!(
            fs::read_to_string(&backup).unwrap(),
            "{\n  \"debug\": true\n}\n"
        );
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let again = setup(Engine::Docker, &f, "lwk-runc", bin, false).unwrap();
        assert!(!again.written && again.diff.is_empty());

        let created = dir.join("sub/config.toml");
        let c = setup(Engine::Containerd, &created, "lwk-runc", bin, false).unwrap();
        assert!(c.written && c.backup.is_none());
        assert!(c.diff.starts_with("--- /dev/null"), "{}", c.diff);
        assert_eq!(
            fs::metadata(&created).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unparsable_files_are_refused_untouched() {
        let dir = std::env::temp_dir().join(format!("lwk-runc-setup-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("daemon.json");
        fs::write(&f, "{ \"debug\": tru").unwrap();
        let e = setup(
            Engine::Docker,
            &f,
            "lwk-runc",
            Path::new("/usr/bin/lwk-runc"),
            false,
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(
            e.contains("daemon.json") && e.contains("not valid JSON"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&f).unwrap(), "{ \"debug\": tru");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "a backup or temp file was left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
