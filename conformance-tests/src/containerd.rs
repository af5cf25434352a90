//! A private containerd (Debian's 1.6) for the containerd and CRI tests, and the OCI
//! image archives they import into it.
//!
//! Everything the daemon keeps is under one short directory in /tmp (its socket path
//! must fit 108 bytes): root, state, sockets, the runtime's `--root`, FIFOs, the `opt`
//! plugin's directory. The only thing outside it is what containerd 1.6 hard-codes:
//! each shim's socket under /run/containerd/s/, named by a hash of our socket's path
//! and removed by the shim. Dropping [`Containerd`] removes every task and container
//! through `ctr`, stops the daemon by pid, then whatever still names the directory
//! (shims), pass or fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

/// Daemon start-up, and any one `ctr` command.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// An image's config whose processes find programs by name.
pub fn with_path(config: Value) -> Value {
    let mut c = config;
    c["Env"] = json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    c
}

/// The start of a containerd test (`test`, skippable as `engine`): root, the tools
/// (`containerd`, `ctr`; the runc v2 shim must be there too), and this process as the
/// subreaper of the shims. `None` once the test was skipped (a failure under CI).
pub fn tools(test: &str, engine: &str) -> Option<(PathBuf, PathBuf)> {
    require_root();
    if engine_skipped_by_user(test, engine) {
        return None;
    }
    let [containerd, ctr, _shim] = engine_tools(
        test,
        [
            ("containerd", "containerd"),
            ("ctr", "containerd"),
            ("containerd-shim-runc-v2", "containerd"),
        ],
    )?;
    let _ = runtime_version();
    become_subreaper();
    Some((containerd, ctr))
}

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    /// `--root` of the runtime under test, as the runc v2 shim passes it.
    pub runtime_root: PathBuf,
    ctr: PathBuf,
    child: Option<Child>,
    /// What the daemon (and so the shim and the runtime) was started with.
    env: Vec<(String, PathBuf)>,
    n: AtomicUsize,
}

impl Containerd {
    /// Start `containerd` with a config of its own whose `plugins` table is `plugins(dir)`
    /// merged over the private defaults (so CRI's runtimes can name paths under the
    /// daemon's directory). `env` reaches the shims and so the runtime: it names the
    /// test's simulated LWK node.
    pub fn start(
        containerd: &Path,
        ctr: &Path,
        plugins: impl FnOnce(&Path) -> toml::Table,
        env: &[(&str, PathBuf)],
    ) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("lwkcd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let sock = d.join("c.sock");
        let mut cfg: toml::Table = toml::from_str(&format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
address = "{sock}"
[ttrpc]
address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
path = "{d}/opt"
"#,
            d = d.display(),
            sock = sock.display()
        ))
        .expect("containerd base config");
        let extra = plugins(d);
        if let Some(toml::Value::Table(p)) = cfg.get_mut("plugins") {
            merge(p, extra);
        }
        let config = d.join("config.toml");
        fs::write(&config, toml::to_string(&cfg).expect("config toml")).expect("write config");
        let log = fs::File::create(d.join("containerd.log")).expect("containerd log");
        let child = Command::new(containerd)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", containerd.display()));
        let c = Containerd {
            runtime_root: d.join("runtime"),
            sock,
            ctr: ctr.to_path_buf(),
            child: Some(child),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            n: AtomicUsize::new(0),
            dir,
        };
        c.wait_ready();
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.path("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_ready(&self) {
        wait_daemon_ready(
            "containerd",
            self.child.as_ref(),
            || self.log(),
            CTR_TIMEOUT,
            || {
                let out = self.ctr("default", &["version"]);
                match out.ok() && out.stdout.contains("Server:") {
                    true => Ok(()),
                    false => Err(out.stderr),
                }
            },
        )
    }

    /// `ctr -a SOCK -n NS ARGS`, bounded by [`CTR_TIMEOUT`].
    pub fn ctr_cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("-a")
            .arg(&self.sock)
            .args(["-n", ns])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, c: Command) -> Out {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        run_into_files(
            c,
            self.path(&format!("ctr{n}.out")),
            self.path(&format!("ctr{n}.err")),
            CTR_TIMEOUT,
        )
    }

    pub fn ctr(&self, ns: &str, args: &[&str]) -> Out {
        self.run(self.ctr_cmd(ns, args))
    }

    /// `ctr` that must succeed.
    pub fn ctr_ok(&self, ns: &str, args: &[&str]) -> Out {
        let out = self.ctr(ns, args);
        assert!(
            out.ok(),
            "ctr -n {ns} {args:?} failed ({:?})\n--- stdout\n{}\n--- stderr\n{}\n--- containerd log\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log()
        );
        out
    }

    /// Build an image named `name` from a busybox rootfs ([`image_rootfs`]) with `config`
    /// as its config (Entrypoint, Env, ...) and import it into namespace `ns`.
    pub fn import_image(&self, ns: &str, name: &str, config: Value) {
        let rootfs = self.path("rootfs");
        if !rootfs.exists() {
            image_rootfs(&rootfs);
        }
        let archive = self.path("image.tar");
        oci_archive(&archive, &rootfs, name, config);
        self.ctr_ok(ns, &["images", "import", &s(&archive)]);
    }

    fn ids(&self, ns: &str, what: &str) -> Vec<String> {
        self.ctr(ns, &[what, "ls", "-q"])
            .stdout
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Tasks and containers of every namespace (`ns/kind/id`), shims still running, the
    /// runtime's containers and mounts under our directory: all that should be gone
    /// once a test removed what it made.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for ns in self.ids("default", "namespaces") {
            for kind in ["tasks", "containers"] {
                left.extend(
                    self.ids(&ns, kind)
                        .into_iter()
                        .map(|id| format!("{ns}/{kind}/{id}")),
                );
            }
        }
        let shims = processes_mentioning(&s(&self.sock))
            .into_iter()
            .filter(|&p| Some(p as u32) != self.child.as_ref().map(Child::id));
        left.extend(shims.map(|p| format!("shim process {p}")));
        left.extend(
            self.runtime_list()
                .into_iter()
                .map(|id| format!("runtime container {id}")),
        );
        left.extend(
            mounts_under(self.dir.path())
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left
    }

    /// `<runtime> --root <runtime_root>/<ns> list -q` over the namespaces' roots.
    fn runtime_list(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for ns in fs::read_dir(&self.runtime_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let out = Command::new(runtime_bin())
                .arg("--root")
                .arg(ns.path())
                .args(["list", "-q"])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .output();
            if let Ok(o) = out {
                ids.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(|id| format!("{}/{id}", ns.file_name().to_string_lossy())),
                );
            }
        }
        ids
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            for ns in self.ids("default", "namespaces") {
                for id in self.ids(&ns, "tasks") {
                    let _ = self.ctr(&ns, &["tasks", "delete", "--force", &id]);
                }
                for id in self.ids(&ns, "containers") {
                    let _ = self.ctr(&ns, &["containers", "delete", &id]);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(20));
        }
        stop_leftovers(self.dir.path());
        // A container the shims did not get to delete (a shim killed above) would keep
        // its LWK lease: the runtime deletes it.
        for ns_id in self.runtime_list() {
            let (ns, id) = ns_id.split_once('/').unwrap_or(("", &ns_id));
            let _ = Command::new(runtime_bin())
                .arg("--root")
                .arg(self.runtime_root.join(ns))
                .args(["delete", "--force", id])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Merge `extra` into `base`, table by table (later keys win).
pub fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An OCI image archive (`oci-layout`, `index.json`, blobs; what `ctr images import`
/// reads) at `out`, of one uncompressed layer holding `rootfs`, named `name` and with
/// `config` as the image config's `config` (Entrypoint, Env, ...).
pub fn oci_archive(out: &Path, rootfs: &Path, name: &str, config: Value) {
    let work = out.with_extension("d");
    let blobs = work.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("blobs dir");
    let layer = work.join("layer.tar");
    tar(&["-C", &s(rootfs), "-cf", &s(&layer), "."]);
    let layer_digest = sha256(&layer);
    let layer_size = fs::metadata(&layer).expect("layer").len();
    fs::rename(&layer, blobs.join(&layer_digest)).expect("move layer");
    let blob = |v: &Value| -> (String, usize) {
        let bytes = serde_json::to_vec(v).expect("json");
        let f = work.join("blob.json");
        fs::write(&f, &bytes).expect("write blob");
        let d = sha256(&f);
        fs::rename(&f, blobs.join(&d)).expect("move blob");
        (d, bytes.len())
    };
    let (cfg_digest, cfg_size) = blob(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}
    }));
    let (man_digest, man_size) = blob(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{cfg_digest}"), "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_size}]
    }));
    write_json(
        &work.join("index.json"),
        &json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{man_digest}"), "size": man_size,
            "annotations": {"io.containerd.image.name": name}
        }]}),
    );
    fs::write(work.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    tar(&[
        "-C",
        &s(&work),
        "-cf",
        &s(out),
        "oci-layout",
        "index.json",
        "blobs",
    ]);
    fs::remove_dir_all(&work).expect("remove image work dir");
}

fn tar(args: &[&str]) {
    let st = Command::new("tar").args(args).status().expect("run tar");
    assert!(st.success(), "tar {args:?} failed");
}

fn sha256(f: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(f)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", f.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A busybox rootfs fit for an image: [`build_rootfs`] plus the files a read-only
/// rootfs must already have for CRI's bind mounts (/etc/resolv.conf, /etc/hosts,
/// /etc/hostname).
pub fn image_rootfs(dir: &Path) {
    build_rootfs(dir);
    for f in ["etc/resolv.conf", "etc/hosts", "etc/hostname"] {
        fs::write(dir.join(f), "").expect("image /etc file");
    }
}
