//! Image references in skopeo's transport syntax (containers-transports(5)):
//! `docker://`, `oci:`, `docker-archive:`, `docker-daemon:` and `containers-storage:`.

use std::fmt;
use std::path::PathBuf;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://HOST/NAME[:TAG][@sha256:…]`: a registry (normalized: `docker.io/library/…`).
    Registry(oci_client::Reference),
    /// `oci:DIR[:TAG]`: an OCI image layout; TAG is an `org.opencontainers.image.ref.name`.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:NAME:TAG]`: what `docker save` and `podman save` write.
    DockerArchive { file: PathBuf, name: Option<String> },
    /// `docker-daemon:NAME:TAG` (or an image id): the node's Docker.
    DockerDaemon { name: String },
    /// `containers-storage:[DRIVER@ROOT+RUNROOT:OPTS]NAME:TAG`: podman's store.
    ContainersStorage { store: Option<Store>, name: String },
}

/// The bracketed store specification of `containers-storage:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Store {
    pub driver: Option<String>,
    pub root: Option<PathBuf>,
    pub runroot: Option<PathBuf>,
    pub options: Vec<String>,
}

const HINT: &str = "use docker://HOST/NAME:TAG, oci:DIR[:TAG], docker-archive:FILE, \
                    docker-daemon:NAME:TAG or containers-storage:NAME:TAG";

impl std::str::FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| format!("image reference {s:?}: {why}");
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| bad(&format!("names no transport; {HINT}")))?;
        if rest.is_empty() {
            return Err(bad(&format!("nothing follows {transport:?}; {HINT}")));
        }
        match transport {
            "docker" => {
                let name = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("a registry reference is docker://HOST/NAME:TAG"))?;
                let r: oci_client::Reference = name
                    .parse()
                    .map_err(|e| bad(&format!("not a valid registry reference: {e}")))?;
                Ok(ImageRef::Registry(r))
            }
            "oci" => {
                let (dir, tag) = split_path(rest);
                Ok(ImageRef::OciLayout {
                    dir: dir.into(),
                    tag,
                })
            }
            "docker-archive" => {
                let (file, name) = split_path(rest);
                Ok(ImageRef::DockerArchive {
                    file: file.into(),
                    name,
                })
            }
            "docker-daemon" => Ok(ImageRef::DockerDaemon {
                name: engine_name(rest).map_err(|e| bad(&e))?,
            }),
            "containers-storage" => {
                let (store, name) = match rest.strip_prefix('[') {
                    Some(r) => {
                        let (spec, name) = r
                            .split_once(']')
                            .ok_or_else(|| bad("the store specification lacks its ']'"))?;
                        (Some(parse_store(spec).map_err(|e| bad(&e))?), name)
                    }
                    None => (None, rest),
                };
                Ok(ImageRef::ContainersStorage {
                    store,
                    name: engine_name(name).map_err(|e| bad(&e))?,
                })
            }
            other => Err(bad(&format!("unknown transport {other:?}; {HINT}"))),
        }
    }
}

/// `PATH[:REF]`, split at the first colon as containers/image does (a path holding a
/// colon cannot be named this way there either).
fn split_path(s: &str) -> (&str, Option<String>) {
    match s.split_once(':') {
        Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
        Some((p, _)) => (p, None),
        None => (s, None),
    }
}

/// An engine's image name or id: passed to its CLI as one argument, so it must not
/// look like an option.
fn engine_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(format!("{s:?} is not an image name or id"));
    }
    Ok(s.to_string())
}

/// `[DRIVER@]ROOT[+RUNROOT][:OPT,OPT]` (containers-transports(5)).
fn parse_store(spec: &str) -> Result<Store, String> {
    let (main, opts) = match spec.split_once(':') {
        Some((m, o)) => (
            m,
            o.split(',')
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect(),
        ),
        None => (spec, Vec::new()),
    };
    let (driver, paths) = match main.split_once('@') {
        Some((d, p)) => (Some(d.to_string()), p),
        None => (None, main),
    };
    let (root, runroot) = match paths.split_once('+') {
        Some((r, rr)) => (r, Some(rr)),
        None => (paths, None),
    };
    let abs = |p: &str| -> Result<Option<PathBuf>, String> {
        match p {
            "" => Ok(None),
            p if p.starts_with('/') => Ok(Some(p.into())),
            p => Err(format!("store path {p:?} must be absolute")),
        }
    };
    if driver
        .as_deref()
        .is_some_and(|d| !d.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(format!("storage driver {driver:?} is not a driver name"));
    }
    Ok(Store {
        driver: driver.filter(|d| !d.is_empty()),
        root: abs(root)?,
        runroot: runroot.map(abs).transpose()?.flatten(),
        options: opts,
    })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "docker://{}", r.whole()),
            ImageRef::OciLayout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::DockerArchive { file, name } => {
                write!(f, "docker-archive:{}", file.display())?;
                name.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            ImageRef::ContainersStorage { store, name } => {
                write!(f, "containers-storage:")?;
                if let Some(s) = store {
                    write!(f, "[")?;
                    if let Some(d) = &s.driver {
                        write!(f, "{d}@")?;
                    }
                    if let Some(r) = &s.root {
                        write!(f, "{}", r.display())?;
                    }
                    if let Some(r) = &s.runroot {
                        write!(f, "+{}", r.display())?;
                    }
                    if !s.options.is_empty() {
                        write!(f, ":{}", s.options.join(","))?;
                    }
                    write!(f, "]")?;
                }
                write!(f, "{name}")
            }
        }
    }
}

impl ImageRef {
    /// The name a cached image is also known by, for `image ls` and for a registry
    /// that cannot be reached: registry references by name and tag only.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn registry_references_are_normalized() {
        assert_eq!(
            p("docker://busybox").to_string(),
            "docker://docker.io/library/busybox:latest"
        );
        assert_eq!(
            p("docker://127.0.0.1:5000/lwk/img:t1").to_string(),
            "docker://127.0.0.1:5000/lwk/img:t1"
        );
        let d = format!("docker://h.example/a/b@sha256:{}", "a".repeat(64));
        match p(&d) {
            ImageRef::Registry(r) => {
                assert_eq!(r.registry(), "h.example");
                assert_eq!(
                    r.digest(),
                    Some(format!("sha256:{}", "a".repeat(64)).as_str())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_transports_split_path_and_name() {
        assert_eq!(
            p("oci:/srv/layout:v1"),
            ImageRef::OciLayout {
                dir: "/srv/layout".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            p("oci:rel/dir"),
            ImageRef::OciLayout {
                dir: "rel/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            p("docker-archive:/a.tar:app:v2"),
            ImageRef::DockerArchive {
                file: "/a.tar".into(),
                name: Some("app:v2".into())
            }
        );
        assert_eq!(
            p("docker-daemon:app:v2"),
            ImageRef::DockerDaemon {
                name: "app:v2".into()
            }
        );
        let cs = p(
            "containers-storage:[vfs@/s/root+/s/run:vfs.ignore_chown_errors=true]localhost/app:v2",
        );
        assert_eq!(
            cs,
            ImageRef::ContainersStorage {
                store: Some(Store {
                    driver: Some("vfs".into()),
                    root: Some("/s/root".into()),
                    runroot: Some("/s/run".into()),
                    options: vec!["vfs.ignore_chown_errors=true".into()],
                }),
                name: "localhost/app:v2".into()
            }
        );
        assert_eq!(
            cs.to_string(),
            "containers-storage:[vfs@/s/root+/s/run:vfs.ignore_chown_errors=true]localhost/app:v2"
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (r, says) in [
            ("busybox", "no transport"),
            ("docker:busybox", "docker://"),
            ("ftp://x", "unknown transport"),
            ("docker-daemon:--help", "not an image name"),
            ("containers-storage:[vfs@rel]x", "absolute"),
            ("containers-storage:[vfs@/r x", "']'"),
            ("oci:", "nothing follows"),
        ] {
            let e = r.parse::<ImageRef>().unwrap_err();
            assert!(e.contains(says), "{r}: {e}");
        }
    }
}
