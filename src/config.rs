//! `/etc/lwk-runc/config.toml`: which LWKs this node offers and how to drive them.
//!
//! Loading is on the fast path of every `create`, so it is one `read` + one TOML parse;
//! a missing file means "no LWK enabled" and costs a failed `open` only.
//! Every key is documented in `config/config.toml`. Errors name the file, the key and
//! the reason, because the person reading them is an operator editing that file.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::lwk::LwkKind;
use crate::trust::{self, Untrusted};

/// Where the config lives unless `LWK_RUNC_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lwk-runc/config.toml";
/// Env var that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_ENV: &str = "LWK_RUNC_CONFIG";
/// A config file larger than this is refused unread (the shipped one is 6 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading LWK config {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LWK config {file}: key `{key}`: {reason} (fix the file or point {CONFIG_ENV} at another one)")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
    #[error("refusing LWK config {file}: {source}. lwk-runc runs the tools it names as root, so nobody but root may be able to change it: {fix}")]
    Untrusted {
        file: PathBuf,
        source: Untrusted,
        fix: String,
    },
    #[error("LWK config {file}: key `{key}`: refusing {source}. lwk-runc runs it as root, so nobody but root may be able to change it: {fix}")]
    UntrustedTool {
        file: PathBuf,
        key: &'static str,
        source: Untrusted,
        fix: String,
    },
}

/// How an LWK instance gets booted and shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// McKernel: ihkconfig/ihkosctl sequence (lwk-tools.md §1.5 steps 9-12). mOS: `lwkctl -c/-d`.
    Tools,
    /// McKernel only: the site's `mcreboot.sh` / `mcstop+release.sh`.
    Script,
    /// The scheduler boots it; lwk-runc only checks it is RUNNING and never boots or tears down.
    External,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Tools => "tools",
            BootMode::Script => "script",
            BootMode::External => "external",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kernel for containers that ask for none.
    pub default_kernel: KernelChoice,
    /// Lease table, node lock and launcher-closure cache. Node-wide, so never under a runtime's `--root`.
    pub lease_dir: PathBuf,
    /// patchelf, used to build launcher closures of dynamically linked launchers.
    pub patchelf: PathBuf,
    /// First namespace-local pid handed to an LWK container's launcher (see `lwk` module doc).
    pub pid_base: u32,
    /// Pids reserved per LWK container above its base.
    pub pid_stride: u32,
    /// While containers share an LWK, how often (ms) a joining container re-checks its
    /// status; 0 = every one.
    pub status_recheck_ms: u64,
    /// The longest wait (s) for the node lock or the closure-cache lock.
    pub lock_timeout_secs: u64,
    /// The longest an LWK tool may run (s) before it is killed and its call fails.
    pub tool_timeout_secs: u64,
    /// Whether a user other than root may run a container on an LWK that is already up.
    pub rootless_join: bool,
    pub mckernel: McKernelConfig,
    pub mos: MosConfig,
    pub images: ImagesConfig,
    /// Not a key: the binary injected as the container's init; None = the running
    /// lwk-runc (/proc/self/exe). Tests point it at the built binary.
    #[serde(skip)]
    pub init_binary: Option<PathBuf>,
    /// Set by `load` (not a key): the file this came from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KernelChoice {
    #[default]
    None,
    Mckernel,
    Mos,
}

impl KernelChoice {
    pub fn kind(self) -> Option<LwkKind> {
        match self {
            KernelChoice::None => None,
            KernelChoice::Mckernel => Some(LwkKind::McKernel),
            KernelChoice::Mos => Some(LwkKind::Mos),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McKernelConfig {
    pub enabled: bool,
    pub boot_mode: BootMode,
    pub ihkconfig: PathBuf,
    pub ihkosctl: PathBuf,
    pub mcexec: PathBuf,
    pub mcreboot: PathBuf,
    pub mcstop: PathBuf,
    /// Directory holding `mcd<N>` / `mcos<N>` on the host.
    pub dev_dir: PathBuf,
    /// IHK device index (`/dev/mcd<device>`).
    pub device: u32,
    /// OS instance index (`/dev/mcos<os_index>`); `create` on a fresh node yields 0.
    pub os_index: u32,
    pub cpus: String,
    pub memory: String,
    pub ikc_map: String,
    pub kargs: String,
    pub image: PathBuf,
    pub mcreboot_args: Vec<String>,
    pub mcstop_args: Vec<String>,
    pub boot_timeout_secs: u64,
    pub linger_secs: u64,
    /// Launcher options containers may pass (`-t=` takes a value, `--disable-sched-yield` does not).
    pub allowed_args: Vec<String>,
    /// Options always given to mcexec, before the container's own.
    pub launcher_args: Vec<String>,
}

impl Default for McKernelConfig {
    fn default() -> Self {
        McKernelConfig {
            enabled: false,
            boot_mode: BootMode::Tools,
            ihkconfig: "/opt/mckernel/sbin/ihkconfig".into(),
            ihkosctl: "/opt/mckernel/sbin/ihkosctl".into(),
            mcexec: "/opt/mckernel/bin/mcexec".into(),
            mcreboot: "/opt/mckernel/sbin/mcreboot.sh".into(),
            mcstop: "/opt/mckernel/sbin/mcstop+release.sh".into(),
            dev_dir: "/dev".into(),
            device: 0,
            os_index: 0,
            cpus: String::new(),
            memory: "512M@0".into(),
            ikc_map: String::new(),
            kargs: "hidos".into(),
            image: "/opt/mckernel/smp-x86/kernel/mckernel.img".into(),
            mcreboot_args: Vec::new(),
            mcstop_args: Vec::new(),
            boot_timeout_secs: 30,
            linger_secs: 0,
            allowed_args: vec![
                "-t=".into(),
                "--mpol-threshold=".into(),
                "--mpol-no-heap".into(),
                "--mpol-no-stack".into(),
                "--mpol-no-bss".into(),
                "--mpol-shm-premap".into(),
                "--disable-sched-yield".into(),
                "--extend-heap-by=".into(),
                "--stack-premap=".into(),
            ],
            launcher_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MosConfig {
    pub enabled: bool,
    /// `tools` = `lwkctl -c/-d`; `external` = partition made by the scheduler or at boot.
    pub boot_mode: BootMode,
    pub lwkctl: PathBuf,
    pub yod: PathBuf,
    /// Host path of the mOS sysfs directory (bound read-only at /sys/kernel/mOS, yod's
    /// request files read-write on top).
    pub sysfs: PathBuf,
    /// The `lwkctl -c` spec.
    pub partition: String,
    /// Extra lwkctl options (e.g. `["-t", "60"]`).
    pub lwkctl_args: Vec<String>,
    pub boot_timeout_secs: u64,
    pub linger_secs: u64,
    pub allowed_args: Vec<String>,
    pub launcher_args: Vec<String>,
}

impl Default for MosConfig {
    fn default() -> Self {
        MosConfig {
            enabled: false,
            boot_mode: BootMode::Tools,
            lwkctl: "/usr/sbin/lwkctl".into(),
            yod: "/usr/bin/yod".into(),
            sysfs: "/sys/kernel/mOS".into(),
            partition: "lwkcpus=auto lwkmem=auto".into(),
            lwkctl_args: Vec::new(),
            boot_timeout_secs: 30,
            linger_secs: 0,
            allowed_args: vec![
                "-R=".into(),
                "--resources=".into(),
                "-C=".into(),
                "--cores=".into(),
                "-M=".into(),
                "--mem=".into(),
                "-u=".into(),
                "--util_threads=".into(),
                "--resource_algorithm=".into(),
                "-p=".into(),
                "--memory-preference=".into(),
                "--mosview=".into(),
                "--maxpage=".into(),
                "--pagefault=".into(),
                "--mempolicy=".into(),
                "--aligned-mmap=".into(),
                "--brk-clear-length=".into(),
                "--lwkmem-disable".into(),
                "-v=".into(),
            ],
            launcher_args: Vec::new(),
        }
    }
}

/// `[images]`: the node's image cache and how images are fetched (`conexec --image`,
/// `lwk-runc image`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Unpacked images, one directory per image; root's alone (0700).
    pub cache_dir: PathBuf,
    /// The cache's size cap ("50G", "800M", bytes; "0" = none).
    pub max_size: String,
    /// Registries (`host[:port]`) reached over plain HTTP; every other one over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Directories of per-registry CA certificates, `<dir>/<host[:port]>/*.crt`.
    pub certs_dirs: Vec<PathBuf>,
    /// The one credentials file to use; empty = the usual search (see config.toml).
    pub auth_file: PathBuf,
    /// The CLIs that export `docker-daemon:` and `containers-storage:` images.
    pub docker: PathBuf,
    pub podman: PathBuf,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            cache_dir: "/var/lib/lwk-runc/images".into(),
            max_size: "0".into(),
            insecure_registries: Vec::new(),
            certs_dirs: vec![
                "/etc/containers/certs.d".into(),
                "/etc/docker/certs.d".into(),
            ],
            auth_file: PathBuf::new(),
            docker: "/usr/bin/docker".into(),
            podman: "/usr/bin/podman".into(),
        }
    }
}

impl ImagesConfig {
    /// `max_size` in bytes (0 = no cap).
    pub fn max_bytes(&self) -> Result<u64, String> {
        parse_size(&self.max_size)
    }
}

/// `123`, `800K`, `50G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: the unit must be K, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size like \"50G\" or \"0\""))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_kernel: KernelChoice::None,
            lease_dir: "/run/lwk-runc-lwk".into(),
            patchelf: "/usr/bin/patchelf".into(),
            pid_base: 1000,
            pid_stride: 500,
            status_recheck_ms: 1000,
            lock_timeout_secs: 120,
            tool_timeout_secs: 300,
            rootless_join: false,
            mckernel: McKernelConfig::default(),
            mos: MosConfig::default(),
            images: ImagesConfig::default(),
            init_binary: None,
            source: None,
        }
    }
}

impl Config {
    /// `LWK_RUNC_CONFIG` or `/etc/lwk-runc/config.toml`; a missing file yields the defaults.
    pub fn load() -> Result<Config, ConfigError> {
        let path = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        Self::load_from(&path)
    }

    /// Refuses a file (or a directory on its path) that anyone but root could change,
    /// and a file over [`MAX_CONFIG_BYTES`].
    pub fn load_from(path: &Path) -> Result<Config, ConfigError> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        trust::check_path(&abs).map_err(|source| ConfigError::Untrusted {
            file: path.to_path_buf(),
            fix: source.fix(),
            source,
        })?;
        let read_err = |source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        };
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(read_err(e)),
        };
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "larger than {MAX_CONFIG_BYTES} bytes; this is not an lwk-runc config"
            ))));
        }
        Self::parse(&text, path)
    }

    /// The paths lwk-runc runs (or boots) as root for `kind` in its boot mode, with
    /// their config keys.
    pub fn trusted_paths(&self, kind: LwkKind) -> Vec<(&'static str, &Path)> {
        let mut v: Vec<(&'static str, &Path)> = vec![("patchelf", &self.patchelf)];
        match kind {
            LwkKind::McKernel => {
                let m = &self.mckernel;
                v.push(("mckernel.ihkosctl", &m.ihkosctl));
                v.push(("mckernel.mcexec", &m.mcexec));
                match m.boot_mode {
                    BootMode::Tools => {
                        v.push(("mckernel.ihkconfig", &m.ihkconfig));
                        v.push(("mckernel.image", &m.image));
                    }
                    BootMode::Script => {
                        v.push(("mckernel.mcreboot", &m.mcreboot));
                        v.push(("mckernel.mcstop", &m.mcstop));
                    }
                    BootMode::External => {}
                }
            }
            LwkKind::Mos => {
                v.push(("mos.yod", &self.mos.yod));
                if self.mos.boot_mode == BootMode::Tools {
                    v.push(("mos.lwkctl", &self.mos.lwkctl));
                }
            }
        }
        v
    }

    /// Refuse tools of `kind` that anyone but root could replace (each path checked
    /// once per process).
    pub fn check_tools(&self, kind: LwkKind) -> Result<(), ConfigError> {
        static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let paths = self.trusted_paths(kind);
        if DONE
            .lock()
            .is_ok_and(|d| paths.iter().all(|(_, p)| d.iter().any(|q| q == p)))
        {
            return Ok(());
        }
        for (key, path) in paths.iter().copied() {
            trust::check_path_once(path).map_err(|source| ConfigError::UntrustedTool {
                file: self.file_name(),
                key,
                fix: source.fix(),
                source,
            })?;
        }
        if let Ok(mut d) = DONE.lock() {
            d.extend(paths.iter().map(|(_, p)| p.to_path_buf()));
        }
        Ok(())
    }

    /// The file this config came from, for messages.
    pub fn file_name(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(built-in defaults)"))
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: e
                .span()
                .and_then(|s| key_at(text, s.start))
                .unwrap_or_else(|| "(document)".into()),
            reason: e.message().trim().to_string(),
        })?;
        cfg.source = Some(file.to_path_buf());
        cfg.validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                file: file.to_path_buf(),
                key,
                reason,
            })?;
        Ok(cfg)
    }

    /// Whether a kernel may be used on this node.
    pub fn enabled(&self, kind: LwkKind) -> bool {
        match kind {
            LwkKind::McKernel => self.mckernel.enabled,
            LwkKind::Mos => self.mos.enabled,
        }
    }

    pub fn allowed_args(&self, kind: LwkKind) -> &[String] {
        match kind {
            LwkKind::McKernel => &self.mckernel.allowed_args,
            LwkKind::Mos => &self.mos.allowed_args,
        }
    }

    pub fn linger_secs(&self, kind: LwkKind) -> u64 {
        match kind {
            LwkKind::McKernel => self.mckernel.linger_secs,
            LwkKind::Mos => self.mos.linger_secs,
        }
    }

    pub fn boot_mode(&self, kind: LwkKind) -> BootMode {
        match kind {
            LwkKind::McKernel => self.mckernel.boot_mode,
            LwkKind::Mos => self.mos.boot_mode,
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let abs = |key: &str, p: &Path| -> Result<(), (String, String)> {
            if p.is_absolute() {
                Ok(())
            } else {
                Err((
                    key.into(),
                    format!("`{}` must be an absolute path", p.display()),
                ))
            }
        };
        abs("lease_dir", &self.lease_dir)?;
        abs("patchelf", &self.patchelf)?;
        if self.pid_base < 2 {
            return Err((
                "pid_base".into(),
                "must be at least 2 (pid 1 is the container's init)".into(),
            ));
        }
        if self.pid_stride < 2 {
            return Err(("pid_stride".into(), "must be at least 2".into()));
        }
        if !(1..=3600).contains(&self.lock_timeout_secs) {
            return Err((
                "lock_timeout_secs".into(),
                "must be between 1 and 3600 (seconds)".into(),
            ));
        }
        if !(1..=86_400).contains(&self.tool_timeout_secs) {
            return Err((
                "tool_timeout_secs".into(),
                "must be between 1 and 86400 (seconds)".into(),
            ));
        }
        if self.status_recheck_ms > 60_000 {
            return Err((
                "status_recheck_ms".into(),
                "must be at most 60000 (a minute); a dead LWK would go unnoticed longer".into(),
            ));
        }
        let m = &self.mckernel;
        for (k, p) in [
            ("mckernel.ihkconfig", &m.ihkconfig),
            ("mckernel.ihkosctl", &m.ihkosctl),
            ("mckernel.mcexec", &m.mcexec),
            ("mckernel.mcreboot", &m.mcreboot),
            ("mckernel.mcstop", &m.mcstop),
            ("mckernel.dev_dir", &m.dev_dir),
            ("mckernel.image", &m.image),
        ] {
            abs(k, p)?;
        }
        if m.enabled && m.boot_mode == BootMode::Tools {
            if m.cpus.trim().is_empty() {
                return Err((
                    "mckernel.cpus".into(),
                    "must name the CPUs to reserve (e.g. \"2-3\") when boot_mode = \"tools\""
                        .into(),
                ));
            }
            if m.memory.trim().is_empty() {
                return Err((
                    "mckernel.memory".into(),
                    "must name the memory to reserve (e.g. \"512M@0\") when boot_mode = \"tools\""
                        .into(),
                ));
            }
            // ihk_os_kargs rejects kargs without `hidos` (lwk-tools.md §1.4); fail here, not at boot.
            if !m.kargs.split_whitespace().any(|w| w == "hidos") {
                return Err((
                    "mckernel.kargs".into(),
                    "must contain `hidos` (IHK refuses kargs without it)".into(),
                ));
            }
        }
        if m.boot_timeout_secs == 0 {
            return Err(("mckernel.boot_timeout_secs".into(), "must be > 0".into()));
        }
        check_allow_list("mckernel.allowed_args", &m.allowed_args)?;
        check_static_args("mckernel.launcher_args", &m.launcher_args)?;
        let o = &self.mos;
        for (k, p) in [
            ("mos.lwkctl", &o.lwkctl),
            ("mos.yod", &o.yod),
            ("mos.sysfs", &o.sysfs),
        ] {
            abs(k, p)?;
        }
        if o.boot_mode == BootMode::Script {
            return Err((
                "mos.boot_mode".into(),
                "mOS supports \"tools\" (lwkctl) or \"external\" only".into(),
            ));
        }
        if o.boot_timeout_secs == 0 {
            return Err(("mos.boot_timeout_secs".into(), "must be > 0".into()));
        }
        check_allow_list("mos.allowed_args", &o.allowed_args)?;
        check_static_args("mos.launcher_args", &o.launcher_args)?;
        let i = &self.images;
        abs("images.cache_dir", &i.cache_dir)?;
        // The cache path goes into overlayfs' lowerdir= option and /proc/self/mountinfo,
        // where these characters are separators or escaped.
        let cache = i.cache_dir.to_string_lossy();
        if cache.contains(|c: char| matches!(c, ',' | ':' | '\\') || c.is_whitespace())
            || cache == "/"
        {
            return Err((
                "images.cache_dir".into(),
                format!("`{cache}` may not be / nor contain ',', ':', '\\' or white space"),
            ));
        }
        i.max_bytes().map_err(|e| ("images.max_size".into(), e))?;
        for r in &i.insecure_registries {
            if r.is_empty() || r.contains(['/', ' ']) {
                return Err((
                    "images.insecure_registries".into(),
                    format!("{r:?} is not a host[:port]"),
                ));
            }
        }
        for (k, p) in [("images.docker", &i.docker), ("images.podman", &i.podman)] {
            abs(k, p)?;
        }
        for p in &i.certs_dirs {
            abs("images.certs_dirs", p)?;
        }
        if !i.auth_file.as_os_str().is_empty() {
            abs("images.auth_file", &i.auth_file)?;
        }
        if let Some(k) = self.default_kernel.kind() {
            if !self.enabled(k) {
                return Err((
                    "default_kernel".into(),
                    format!(
                        "names {k}, which is not enabled ([{}] enabled = false)",
                        k.config_section()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_allow_list(key: &str, list: &[String]) -> Result<(), (String, String)> {
    for entry in list {
        let name = entry.strip_suffix('=').unwrap_or(entry);
        let ok = name.starts_with('-')
            && name.len() > 1
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err((
                key.into(),
                format!("entry `{entry}` is not an option name like \"-t=\" or \"--flag\""),
            ));
        }
    }
    Ok(())
}

fn check_static_args(key: &str, args: &[String]) -> Result<(), (String, String)> {
    if let Some(a) = args.iter().find(|a| a.is_empty() || a.contains('\0')) {
        return Err((
            key.into(),
            format!("argument {a:?} is empty or contains NUL"),
        ));
    }
    Ok(())
}

/// Best effort: the dotted key whose line contains byte offset `at`, for error messages.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/lwk-runc/config.toml"))
    }

    #[test]
    fn missing_file_is_defaults_with_nothing_enabled() {
        let c = Config::load_from(Path::new("/nonexistent/lwk.toml")).expect("defaults");
        assert!(!c.mckernel.enabled && !c.mos.enabled);
        assert_eq!(c.default_kernel, KernelChoice::None);
        assert_eq!(c.lease_dir, PathBuf::from("/run/lwk-runc-lwk"));
    }

    #[test]
    fn shipped_configs_parse() {
        for f in ["config/config.toml", "config/sim.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let text = std::fs::read_to_string(&p).expect("shipped config exists");
            parse(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    /// lwk-runc.toml(5) is generated from config/config.toml, so every key of the schema
    /// must be there, with its comment. serde lists the schema's keys when it meets an
    /// unknown one.
    #[test]
    fn every_schema_key_is_documented_in_the_shipped_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.toml");
        let text = std::fs::read_to_string(&path).expect("config/config.toml");
        let shipped: toml::Table = toml::from_str(&text).unwrap();
        for table in ["", "mckernel", "mos"] {
            let probe = if table.is_empty() {
                "lwk_runc_probe = 1\n".to_string()
            } else {
                format!("[{table}]\nlwk_runc_probe = 1\n")
            };
            let err = parse(&probe).unwrap_err().to_string();
            let keys = err
                .split("expected one of")
                .nth(1)
                .unwrap_or_else(|| panic!("no key list in {err}"));
            let have = if table.is_empty() {
                &shipped
            } else {
                shipped[table].as_table().unwrap()
            };
            for key in keys.split('`').skip(1).step_by(2) {
                assert!(
                    have.contains_key(key),
                    "key `{table}.{key}` is missing from config/config.toml (and so from lwk-runc.toml(5))"
                );
            }
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse("[mckernel]\nenabled = true\ncpus = \"1\"\nbogus = 3\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/etc/lwk-runc/config.toml"), "{s}");
        assert!(s.contains("mckernel.bogus"), "{s}");
    }

    #[test]
    fn wrong_type_names_key() {
        let s = parse("[mos]\nenabled = \"yes\"\n").unwrap_err().to_string();
        assert!(s.contains("mos.enabled"), "{s}");
    }

    #[test]
    fn a_config_or_tool_others_may_change_is_refused_naming_the_key_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("lwk-cfg-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = d.join("config.toml");
        let tool = d.join("ihkosctl");
        std::fs::write(&tool, "").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o757)).unwrap();
        std::fs::write(
            &file,
            format!(
                "[mckernel]\nenabled = true\ncpus = \"1\"\nihkosctl = \"{}\"\n",
                tool.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).unwrap();
        let e = Config::load_from(&file).unwrap_err().to_string();
        assert!(
            e.contains("writable by group or others (mode 0646)") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load_from(&file).unwrap();
        let e = c.check_tools(LwkKind::McKernel).unwrap_err().to_string();
        assert!(
            e.contains("mckernel.ihkosctl") && e.contains(&tool.display().to_string()),
            "{e}"
        );
        // mOS's tools are not McKernel's.
        c.check_tools(LwkKind::Mos).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn semantic_errors_name_key() {
        let s = parse("lock_timeout_secs = 0\n").unwrap_err().to_string();
        assert!(s.contains("lock_timeout_secs"), "{s}");
        let s = parse("lease_dir = \"rel\"\n").unwrap_err().to_string();
        assert!(s.contains("`lease_dir`") && s.contains("absolute"), "{s}");
        let s = parse("[mckernel]\nenabled = true\ncpus = \"1\"\nkargs = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("mckernel.kargs") && s.contains("hidos"), "{s}");
        let s = parse("default_kernel = \"mos\"\n").unwrap_err().to_string();
        assert!(s.contains("default_kernel"), "{s}");
        let s = parse("[images]\nmax_size = \"12Q\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("images.max_size"), "{s}");
        let s = parse("[images]\ncache_dir = \"/var/a,b\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("images.cache_dir"), "{s}");
        assert_eq!(parse_size("50G"), Ok(50 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        let s = parse("[mckernel]\nallowed_args = [\"/bin/sh\"]\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("mckernel.allowed_args"), "{s}");
    }
}
