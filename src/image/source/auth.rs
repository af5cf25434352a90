//! Registry credentials where `podman login` and `docker login` leave them
//! (containers-auth.json(5)): `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`), then Docker's
//! `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`); the first file that has an
//! entry for the registry wins. An entry may name a credential helper
//! (`credHelpers`, `credsStore`), which is run as Docker runs it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    auths: HashMap<String, Entry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The credential files, in the order they are searched.
fn files(explicit: &Path) -> Vec<PathBuf> {
    if !explicit.as_os_str().is_empty() {
        return vec![explicit.to_path_buf()];
    }
    let home = env_path("HOME").unwrap_or_else(|| "/root".into());
    let mut v = Vec::new();
    v.extend(env_path("REGISTRY_AUTH_FILE"));
    if let Some(d) = env_path("XDG_RUNTIME_DIR") {
        v.push(d.join("containers/auth.json"));
    }
    v.push(
        env_path("XDG_CONFIG_HOME")
            .unwrap_or_else(|| home.join(".config"))
            .join("containers/auth.json"),
    );
    v.push(
        env_path("DOCKER_CONFIG")
            .unwrap_or_else(|| home.join(".docker"))
            .join("config.json"),
    );
    v
}

/// The keys an entry for this registry and repository may have, most specific first.
fn keys(registry: &str, repo: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut path = format!("{registry}/{repo}");
    loop {
        v.push(path.clone());
        match path.rsplit_once('/') {
            Some((head, _)) => path = head.to_string(),
            None => break,
        }
    }
    for scheme in ["https://", "http://"] {
        v.push(format!("{scheme}{registry}"));
    }
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        v.extend(
            [
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
                "registry-1.docker.io",
            ]
            .map(String::from),
        );
    }
    v
}

fn decode(e: &Entry, file: &Path) -> Result<Option<RegistryAuth>> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
    }
    let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.trim())
        .with_context(|| format!("{}: an \"auth\" value is not base64", file.display()))?;
    let s = String::from_utf8_lossy(&raw);
    let Some((u, p)) = s.split_once(':') else {
        bail!("{}: an \"auth\" value is not user:password", file.display());
    };
    Ok(Some(RegistryAuth::Basic(u.to_string(), p.to_string())))
}

/// Ask `docker-credential-<helper>` for the registry's credentials.
fn helper(name: &str, registry: &str) -> Result<Option<RegistryAuth>> {
    if name.is_empty() || name.contains('/') {
        bail!("credential helper {name:?} is not a helper name");
    }
    let prog = format!("docker-credential-{name}");
    let mut c = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {prog}"))?;
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(registry.as_bytes());
    }
    let out = c.wait_with_output()?;
    if !out.status.success() {
        // "credentials not found in native keychain": no entry, anonymous then.
        return Ok(None);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Got {
        username: String,
        secret: String,
    }
    let g: Got = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{prog} get: its answer is not the credential JSON"))?;
    Ok(Some(RegistryAuth::Basic(g.username, g.secret)))
}

/// Credentials for `registry` (`host[:port]`) and `repo`, or anonymous.
pub fn credentials(
    explicit: &Path,
    registry: &str,
    repo: &str,
) -> Result<(RegistryAuth, Option<PathBuf>)> {
    let keys = keys(registry, repo);
    for path in files(explicit) {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && explicit.as_os_str().is_empty() =>
            {
                continue
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the credentials file {}", path.display()))
            }
        };
        let f: File = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a credentials file (auth.json)", path.display()))?;
        if let Some(h) = f.cred_helpers.get(registry) {
            if let Some(a) = helper(h, registry)? {
                return Ok((a, Some(path)));
            }
        }
        for k in &keys {
            if let Some(e) = f.auths.get(k) {
                if let Some(a) = decode(e, &path)? {
                    return Ok((a, Some(path)));
                }
            }
        }
        if let Some(s) = &f.creds_store {
            if let Some(a) = helper(s, registry)? {
                return Ok((a, Some(path)));
            }
        }
    }
    Ok((RegistryAuth::Anonymous, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_entry_of_the_first_file_wins() {
        let d = std::env::temp_dir().join(format!("lwk-auth-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            format!(
                r#"{{"auths": {{"reg:5000": {{"auth": "{}"}}, "reg:5000/team": {{"auth": "{}"}}}}}}"#,
                b64("all:pw1"),
                b64("team:pw2")
            ),
        )
        .unwrap();
        let (a, from) = credentials(&f, "reg:5000", "team/app").unwrap();
        assert!(matches!(a, RegistryAuth::Basic(ref u, ref p) if u == "team" && p == "pw2"));
        assert_eq!(from.as_deref(), Some(f.as_path()));
        let (a, _) = credentials(&f, "reg:5000", "other/app").unwrap();
        assert!(matches!(a, RegistryAuth::Basic(ref u, _) if u == "all"));
        let (a, _) = credentials(&f, "elsewhere", "x").unwrap();
        assert!(matches!(a, RegistryAuth::Anonymous));
        assert!(keys("docker.io", "library/busybox")
            .contains(&"https://index.docker.io/v1/".to_string()));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
