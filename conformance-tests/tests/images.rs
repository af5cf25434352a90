//! `conexec --image` and `lwk-runc image` with real images and engines: images built
//! by podman (private store) from the busybox rootfs, run through every transport
//! (a private registry on loopback over HTTPS with credentials, an OCI layout, a
//! Docker archive, a private dockerd, podman's store) under Open MPI on a simulated
//! McKernel; whiteouts checked against what `podman run` shows; hostile layers
//! refused; one fetch and one unpack per image however many ranks arrive; a killed
//! unpack leaving nothing a later run would use; the cache's size cap.
//!
//! Each test has its own node, `--root`, image cache and (where it needs one) registry,
//! so they run in parallel; the podman store with the built images is shared.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lwk_conformance::*;
use serde_json::json;
use sha2::Digest as _;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
const BASE: &str = "localhost/lwk-base:1";
const WH: &str = "localhost/lwk-wh:1";
const TRANSPORTS: [&str; 5] = ["registry", "oci", "archive", "daemon", "storage"];
const USER: &str = "lwk";
const PASSWORD: &str = "s3cret-pw";

fn run_ok(c: &mut Command, what: &str) -> String {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with a private store (overlay: its layer diffs carry real opaque whiteouts).
struct Store {
    podman: PathBuf,
    state: PathBuf,
}

impl Store {
    fn podman(&self, args: &[&str]) -> String {
        let mut c = private_podman_with(&self.podman, &self.state, "overlay");
        // runc, whatever the host's default: podman picks crun where it is installed,
        // and crun 1.8 refuses a hybrid cgroup v1+v2 host.
        c.args(["--runtime", "runc"]);
        run_ok(c.args(args), &format!("podman {args:?}"))
    }

    /// skopeo's name for an image of this store.
    fn reference(&self, image: &str) -> String {
        format!(
            "containers-storage:[overlay@{}+{}]{image}",
            s(&self.state.join("storage")),
            s(&self.state.join("run"))
        )
    }

    fn build(&self, ctx: &Path, containerfile: &str, tag: &str) {
        let f = ctx.join(format!("Containerfile.{}", tag.replace(['/', ':'], "_")));
        fs::write(&f, containerfile).unwrap();
        self.podman(&[
            "build",
            "-q",
            "--network",
            "none",
            "-f",
            &s(&f),
            "-t",
            tag,
            &s(ctx),
        ]);
    }
}

/// A CA and a certificate for 127.0.0.1 it signed.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        fs::create_dir_all(dir).unwrap();
        let p = |n: &str| s(&dir.join(n));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run_ok(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args(["-keyout", &p("ca.key"), "-out", &p("ca.crt"), "-days", "2"])
                .args(["-subj", "/CN=lwk test CA"]),
            "openssl: the test CA",
        );
        run_ok(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-keyout", &p("server.key"), "-out", &p("server.csr")])
                .args(["-subj", "/CN=127.0.0.1"]),
            "openssl: the registry's key",
        );
        fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-in", &p("server.csr"), "-CA", &p("ca.crt")])
                .args(["-CAkey", &p("ca.key"), "-CAcreateserial", "-days", "2"])
                .args(["-out", &p("server.crt"), "-extfile", &p("ext")]),
            "openssl: the registry's certificate",
        );
        Tls {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// The images every test uses, built once per test binary.
struct Fixture {
    dir: PathBuf,
    store: Store,
    tls: Tls,
}

impl Fixture {
    /// The image of transport `t` saved as a Docker archive (`podman save`).
    fn archive(&self, t: &str) -> PathBuf {
        let file = self.dir.join(format!("{t}.tar"));
        let (out, image) = (s(&file), image_of(t));
        self.store
            .podman(&["save", "--format", "docker-archive", "-o", &out, &image]);
        file
    }
}

fn image_of(t: &str) -> String {
    format!("localhost/lwk-{t}:1")
}

fn file_of(t: &str) -> String {
    format!("the file of the {t} image")
}

/// What every test needs on the machine (scripts/setup.sh installs it).
const TOOLS: [(&str, &str); 6] = [
    ("podman", "podman"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
    ("openssl", "openssl"),
    ("python3", "python3"),
    ("mpirun", "openmpi-bin"),
];

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The fixture for `test`, built by the first test that gets here; None (the test
/// skips, or fails under CI) when a tool is missing.
fn fixture(test: &str) -> Option<&'static Fixture> {
    require_root();
    let [podman, ..] = engine_tools(test, TOOLS)?;
    Some(FIXTURE.get_or_init(|| build_fixture(podman)))
}

/// The fixture of a test that has called [`fixture`].
fn fx() -> &'static Fixture {
    FIXTURE.get().expect("the test calls fixture() first")
}

fn build_fixture(podman: PathBuf) -> Fixture {
    {
        // Short and per checkout: podman refuses a runroot path over 50 bytes, which a
        // directory under a deep clone's target/ easily is.
        let tag = workspace_root()
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0x811c9dc5u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x01000193)
            });
        let dir = std::env::temp_dir().join(format!("lwk-img-{tag:08x}"));
        stop_leftovers(&dir);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = Store {
            podman,
            state: dir.join("podman"),
        };
        let ctx = dir.join("ctx");
        build_rootfs(&ctx.join("rootfs"));
        store.build(&ctx, "FROM scratch\nCOPY rootfs/ /\n", BASE);
        for t in TRANSPORTS {
            fs::write(ctx.join(format!("{t}.txt")), format!("{}\n", file_of(t))).unwrap();
            store.build(
                &ctx,
                &format!(
                    "FROM {BASE}\nCOPY {t}.txt /the/file\nENV GREETING=hello-{t}\nWORKDIR /srv/{t}\n"
                ),
                &image_of(t),
            );
        }
        // A lower layer with files and a directory tree; an upper layer (a RUN, so
        // podman's own diff) that deletes a file and replaces the directory.
        let w = ctx.join("w");
        for d in ["opq/x", "keep"] {
            fs::create_dir_all(w.join(d)).unwrap();
        }
        for f in ["gone", "opq/x/z", "opq/y", "keep/k"] {
            fs::write(w.join(f), f).unwrap();
        }
        store.build(
            &ctx,
            &format!(
                "FROM {BASE}\nCOPY w/ /w/\nRUN rm /w/gone && rm -rf /w/opq && mkdir /w/opq && \
                 touch /w/opq/new && chmod 0750 /w/opq && chown 1000:1000 /w/opq/new && \
                 chmod 4755 /w/keep/k\n"
            ),
            WH,
        );
        let tls = Tls::new(&dir.join("tls"));
        Fixture { dir, store, tls }
    }
}

/// A private registry on loopback: HTTPS with the fixture's certificate and htpasswd
/// credentials, or plain HTTP and anonymous. Stopped by pid when dropped.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    secure: bool,
}

impl Registry {
    fn start(secure: bool) -> Registry {
        let f = fx();
        let dir = tempfile::Builder::new()
            .prefix("lwk-reg-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            s(&dir.path().join("data"))
        );
        if secure {
            let hash = run_ok(
                Command::new("python3").args([
                    "-W",
                    "ignore",
                    "-c",
                    &format!(
                        "import crypt; print(crypt.crypt('{PASSWORD}', crypt.mksalt(crypt.METHOD_BLOWFISH)))"
                    ),
                ]),
                "python3: a bcrypt password for the registry",
            );
            fs::write(
                dir.path().join("htpasswd"),
                format!("{USER}:{}\n", hash.trim()),
            )
            .unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: lwk-test\n    path: {}\n",
                s(&f.tls.cert),
                s(&f.tls.key),
                s(&dir.path().join("htpasswd"))
            ));
        }
        let conf = dir.path().join("config.yml");
        fs::write(&conf, cfg).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let r = Registry {
            child,
            dir,
            addr,
            secure,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                pid_alive(r.child.id() as i32) && t0.elapsed() < Duration::from_secs(30),
                "the registry did not come up: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Push an image of the fixture's store as `name` (e.g. `lwk/app:1`).
    fn push(&self, image: &str, name: &str) -> String {
        let f = fx();
        let mut c = Command::new("skopeo");
        c.arg("copy").arg("--quiet");
        if self.secure {
            let certs = self.dir.path().join("client-certs");
            fs::create_dir_all(&certs).unwrap();
            fs::copy(&f.tls.ca, certs.join("ca.crt")).unwrap();
            c.arg("--dest-cert-dir")
                .arg(&certs)
                .arg("--dest-creds")
                .arg(format!("{USER}:{PASSWORD}"));
        } else {
            c.arg("--dest-tls-verify=false");
        }
        let reference = format!("docker://{}/{name}", self.addr);
        c.arg(f.store.reference(image)).arg(&reference);
        run_ok(&mut c, &format!("skopeo copy {image} {reference}"));
        reference
    }

    /// How often the registry served this blob (its access log).
    fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the registry this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private dockerd that only keeps images (the docker-daemon: transport), stopped by
/// pid when dropped with whatever it left.
struct Docker {
    dir: tempfile::TempDir,
    child: Child,
    cli: PathBuf,
}

impl Docker {
    fn start(dockerd: &Path, cli: &Path) -> Docker {
        let dir = tempfile::Builder::new()
            .prefix("lwkd-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = private_dockerd(dockerd, dir.path(), &[])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let d = Docker {
            dir,
            child,
            cli: cli.to_path_buf(),
        };
        let log = || fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default();
        wait_daemon_ready("dockerd", Some(&d.child), log, JOB_TIMEOUT, || {
            let o = d.cli(&["info"]).output().map_err(|e| e.to_string())?;
            match o.status.success() {
                true => Ok(()),
                false => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            }
        });
        d
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("-H")
            .arg(format!("unix://{}", s(&self.sock())))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(20));
        stop_leftovers(self.dir.path());
    }
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One node: a simulated LWK, a `--root`, an image cache, credentials and CAs.
struct Node {
    ctx: Ctx,
    w: World,
    cache: PathBuf,
}

impl Node {
    fn new(images: &str) -> Node {
        Node::sized(images, "1-4", 8)
    }

    /// `images`: extra lines of the `[images]` table.
    fn sized(images: &str, cpus: &str, node_cpus: u32) -> Node {
        let ctx = Ctx::new();
        let cache = ctx.path("cache");
        let top = format!(
            "[images]\ncache_dir = \"{}\"\ncerts_dirs = [\"{}\"]\n{images}\n",
            s(&cache),
            s(&ctx.path("certs.d"))
        );
        let w = World::with(
            &ctx,
            &WorldOpts {
                top: &top,
                cpus: Some(cpus),
                node_cpus: Some(node_cpus),
                ..Default::default()
            },
        );
        Node { ctx, w, cache }
    }

    /// Trust the fixture's CA for `reg` and log in to it (an auth.json of our own).
    fn login(&self, reg: &Registry) -> (&'static str, String) {
        let d = self.ctx.path("certs.d").join(&reg.addr);
        fs::create_dir_all(&d).unwrap();
        fs::copy(&fx().tls.ca, d.join("ca.crt")).unwrap();
        let auth = self.ctx.path("auth.json");
        fs::write(
            &auth,
            json!({"auths": {reg.addr.clone(): {"auth": base64(format!("{USER}:{PASSWORD}").as_bytes())}}})
                .to_string(),
        )
        .unwrap();
        ("REGISTRY_AUTH_FILE", s(&auth))
    }

    /// A rank's command line: `lwk-runc ... conexec --lwk K --image REF -- PROG`.
    fn rank(&self, image: &str, lwk: &str, prog: &[&str]) -> Vec<String> {
        conexec_rank(&self.ctx, &["--lwk", lwk, "--image", image], prog)
    }

    fn mpirun(&self, n: usize, rank: &[String], env: &[(&str, String)]) -> Command {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        mpirun(&self.ctx, &self.w, n, rank, &env)
    }

    fn run(&self, c: Command, tag: &str) -> Out {
        run_into_files(
            c,
            self.ctx.path(&format!("{tag}.stdout")),
            self.ctx.path(&format!("{tag}.stderr")),
            JOB_TIMEOUT,
        )
    }

    fn spawn(&self, c: Command, tag: &str) -> (Child, PathBuf, PathBuf) {
        spawn_logged(&self.ctx, c, tag)
    }

    /// `lwk-runc image ARGS` on this node.
    fn image(&self, args: &[&str], env: &[(&str, String)]) -> Out {
        let mut c = self.w.cmd(&self.ctx, &[&["image"], args].concat());
        c.envs(env.iter().map(|(k, v)| (*k, v)));
        run_into_files(
            c,
            self.ctx.path("image.stdout"),
            self.ctx.path("image.stderr"),
            JOB_TIMEOUT,
        )
    }

    /// The cached images' ids.
    fn entries(&self) -> Vec<String> {
        let out = self.image(&["ls", "-q"], &[]);
        assert!(out.ok(), "{}", self.ctx.explain(&out));
        out.stdout.lines().map(str::to_string).collect()
    }

    fn staging(&self) -> Vec<String> {
        fs::read_dir(self.cache.join("staging"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn explain(&self, out: &Out) -> String {
        format!("{}\n--- calls\n{}", self.ctx.explain(out), self.w.calls())
    }

    /// No container, job directory, mount, lease or unfinished pull is left.
    fn assert_clean(&self) {
        let dir = s(self.ctx.dir.path());
        let leftovers = || {
            let mut left = Vec::new();
            let out = self.w.rt(&self.ctx, &["list", "-q"]);
            left.extend(out.stdout.lines().map(|c| format!("container {c}")));
            if let Ok(rd) = fs::read_dir(self.ctx.root.join("conexec")) {
                left.extend(rd.flatten().map(|e| format!("job dir {:?}", e.file_name())));
            }
            let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
            left.extend(
                mounts
                    .lines()
                    .filter(|l| l.contains(&dir))
                    .map(|m| format!("mount {m}")),
            );
            left.extend(self.staging().into_iter().map(|p| format!("staging {p}")));
            left
        };
        let t0 = Instant::now();
        let mut left = leftovers();
        while !left.is_empty() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
            left = leftovers();
        }
        assert!(
            left.is_empty(),
            "left behind: {left:#?}\n--- calls\n{}",
            self.w.calls()
        );
        self.w.assert_clean();
    }
}

/// The summary lines of the rank that fetched and unpacked an image.
fn unpacks(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("lwk-runc: ") && l.contains("unpacked image"))
        .count()
}

/// Two jobs of 4 ranks on `image`: the first prints the file from every rank (after one
/// fetch and one unpack), the second shows the image's Env and WorkingDir from every
/// rank and needs neither.
fn runs_on_every_rank(n: &Node, image: &str, t: &str, env: &[(&str, String)]) {
    let out = n.run(
        n.mpirun(4, &n.rank(image, "mckernel", &["cat", "/the/file"]), env),
        "job1",
    );
    assert!(out.ok(), "{}", n.explain(&out));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, vec![file_of(t).as_str(); 4], "{}", n.explain(&out));
    assert_eq!(
        unpacks(&out.stderr),
        1,
        "one fetch and unpack: {}",
        out.stderr
    );

    let show = "echo \"$GREETING $(pwd) $OMPI_COMM_WORLD_SIZE\"";
    let out = n.run(
        n.mpirun(4, &n.rank(image, "mckernel", &["sh", "-c", show]), env),
        "job2",
    );
    assert!(out.ok(), "{}", n.explain(&out));
    let want = format!("hello-{t} /srv/{t} 4");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec![want.as_str(); 4],
        "{}",
        n.explain(&out)
    );
    assert_eq!(
        unpacks(&out.stderr),
        0,
        "a cached image was fetched again: {}",
        out.stderr
    );
    assert_eq!(n.entries().len(), 1, "one cache entry per image");
    n.w.assert_booted_and_torn_down("mckernel", 2);
    n.assert_clean();
}

#[test]
fn registry_image_over_https_with_credentials_runs_on_every_rank() {
    if fixture("registry_image_over_https_with_credentials_runs_on_every_rank").is_none() {
        return;
    }
    let reg = Registry::start(true);
    let image = reg.push(&image_of("registry"), "lwk/registry:1");
    let n = Node::new("");
    // Without credentials, the registry's refusal is named.
    let d = n.ctx.path("certs.d").join(&reg.addr);
    fs::create_dir_all(&d).unwrap();
    fs::copy(&fx().tls.ca, d.join("ca.crt")).unwrap();
    let out = n.image(
        &["pull", &image],
        &[("REGISTRY_AUTH_FILE", s(&n.ctx.path("none.json")))],
    );
    assert!(!out.ok(), "an anonymous pull passed: {}", n.explain(&out));
    assert!(out.stderr.contains("log in"), "{}", out.stderr);
    let login = n.login(&reg);
    runs_on_every_rank(&n, &image, "registry", &[login]);
}

#[test]
fn plain_http_is_only_for_registries_listed_as_insecure() {
    if fixture("plain_http_is_only_for_registries_listed_as_insecure").is_none() {
        return;
    }
    let reg = Registry::start(false);
    let image = reg.push(&image_of("registry"), "lwk/plain:1");
    let n = Node::new("");
    let out = n.image(&["pull", &image], &[]);
    assert!(
        !out.ok(),
        "plain HTTP was used unasked: {}",
        n.explain(&out)
    );
    assert!(
        out.stderr.contains("insecure_registries"),
        "the refusal does not say what to do: {}",
        out.stderr
    );
    assert!(n.entries().is_empty());
    let n = Node::new(&format!("insecure_registries = [\"{}\"]", reg.addr));
    let out = n.image(&["pull", &image], &[]);
    assert!(out.ok(), "{}", n.explain(&out));
    assert_eq!(n.entries().len(), 1);
}

#[test]
fn oci_layout_image_runs_on_every_rank() {
    let Some(f) = fixture("oci_layout_image_runs_on_every_rank") else {
        return;
    };
    let dir = f.dir.join("oci-layout");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(f.store.reference(&image_of("oci")))
            .arg(format!("oci:{}:v1", s(&dir))),
        "skopeo copy to an OCI layout",
    );
    let n = Node::new("");
    runs_on_every_rank(&n, &format!("oci:{}:v1", s(&dir)), "oci", &[]);
}

#[test]
fn docker_archive_image_runs_on_every_rank() {
    let Some(f) = fixture("docker_archive_image_runs_on_every_rank") else {
        return;
    };
    let file = f.archive("archive");
    let n = Node::new("");
    runs_on_every_rank(&n, &format!("docker-archive:{}", s(&file)), "archive", &[]);
}

#[test]
fn containers_storage_image_is_exported_once_and_runs_on_every_rank() {
    let Some(f) = fixture("containers_storage_image_is_exported_once_and_runs_on_every_rank")
    else {
        return;
    };
    let n = Node::new("");
    let conf = n.ctx.path("containers.conf");
    fs::write(
        &conf,
        "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    let image = f.store.reference(&image_of("storage"));
    runs_on_every_rank(&n, &image, "storage", &[("CONTAINERS_CONF", s(&conf))]);
}

#[test]
fn docker_daemon_image_is_exported_once_and_runs_on_every_rank() {
    let Some(f) = fixture("docker_daemon_image_is_exported_once_and_runs_on_every_rank") else {
        return;
    };
    const TEST: &str = "docker_daemon_image_is_exported_once_and_runs_on_every_rank";
    if engine_skipped_by_user(TEST, "docker") {
        return;
    }
    let Some([dockerd, cli]) =
        engine_tools(TEST, [("dockerd", "docker.io"), ("docker", "docker.io")])
    else {
        return;
    };
    // One private dockerd at a time across processes.
    let _lock = cross_process_lock("docker");
    become_subreaper();
    let d = Docker::start(&dockerd, &cli);
    let file = f.archive("daemon");
    run_ok(&mut d.cli(&["load", "-i", &s(&file)]), "docker load");
    let n = Node::new("");
    let host = format!("unix://{}", s(&d.sock()));
    runs_on_every_rank(
        &n,
        &format!("docker-daemon:{}", image_of("daemon")),
        "daemon",
        &[("DOCKER_HOST", host)],
    );
}

/// `stat` of every path under the listed trees, as `podman run` and our rank see them.
const LISTING: &str =
    "cd / && find bin etc w the srv -exec stat -c '%n %a %u:%g %F' {} + 2>/dev/null | sort";

/// What the engine puts in a container's /etc itself: not the image's to compare.
fn image_lines(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter(|l| {
            ![
                "etc/hosts ",
                "etc/hostname ",
                "etc/resolv.conf ",
                "etc/mtab ",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect()
}

#[test]
fn whiteouts_and_opaque_dirs_unpack_as_podman_runs_them() {
    let Some(f) = fixture("whiteouts_and_opaque_dirs_unpack_as_podman_runs_them") else {
        return;
    };
    let n = Node::new("");
    let image = f.store.reference(WH);
    // The upper layer podman made really carries both kinds of whiteout.
    let oci = f.dir.join("wh-layout");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(&image)
            .arg(format!("oci:{}:wh", s(&oci))),
        "skopeo copy of the whiteout image",
    );
    let mut names = String::new();
    for e in fs::read_dir(oci.join("blobs/sha256")).unwrap().flatten() {
        let t = Command::new("tar")
            .arg("tzf")
            .arg(e.path())
            .output()
            .unwrap();
        names.push_str(&String::from_utf8_lossy(&t.stdout));
    }
    assert!(
        names.contains("w/.wh.gone"),
        "no whiteout file in the layers: {names}"
    );
    assert!(
        names.contains("w/opq/.wh..wh..opq"),
        "no opaque dir in the layers: {names}"
    );

    let conf = n.ctx.path("containers.conf");
    fs::write(
        &conf,
        "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    let env = [("CONTAINERS_CONF", s(&conf))];
    let ours = n.run(
        n.mpirun(1, &n.rank(&image, "none", &["sh", "-c", LISTING]), &env),
        "ours",
    );
    assert!(ours.ok(), "{}", n.explain(&ours));
    let run = podman_run_args();
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let theirs = f
        .store
        .podman(&[&run[..], &[WH, "sh", "-c", LISTING]].concat());
    assert_eq!(
        image_lines(&ours.stdout),
        image_lines(&theirs),
        "the unpacked rootfs differs from what podman runs"
    );
    let w: Vec<&str> = ours.stdout.lines().filter(|l| l.starts_with("w")).collect();
    assert_eq!(
        w,
        [
            "w 755 0:0 directory",
            "w/keep 755 0:0 directory",
            "w/keep/k 4755 0:0 regular file",
            "w/opq 750 0:0 directory",
            "w/opq/new 644 1000:1000 regular empty file",
        ],
        "{}",
        ours.stdout
    );
    // And the cache holds no whiteout files.
    let entry = fs::read_dir(n.cache.join("entries"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let found = run_ok(
        Command::new("find")
            .arg(entry.join("rootfs"))
            .args(["-name", ".wh.*"]),
        "find",
    );
    assert_eq!(found, "", "whiteout files were unpacked");
    n.assert_clean();
}

/// A handmade OCI layout: the busybox rootfs as its first layer, then `layers`.
fn layout(dir: &Path, layers: &[Vec<u8>], tamper: bool) -> String {
    layout_with(
        dir,
        layers,
        tamper,
        json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
    )
}

/// [`layout`] with `run` as the image config's `config` (Env, User, Entrypoint, ...).
fn layout_with(dir: &Path, layers: &[Vec<u8>], tamper: bool, run: serde_json::Value) -> String {
    let sha = |b: &[u8]| {
        let d = sha2::Sha256::digest(b);
        format!(
            "sha256:{}",
            d.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    };
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut all = vec![base_layer()];
    all.extend(layers.iter().cloned());
    let digests: Vec<String> = all.iter().map(|l| put(l)).collect();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": digests},
    })
    .to_string();
    let cd = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": all.iter().zip(&digests).map(|(l, d)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let md = put(manifest.as_bytes());
    fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]})
        .to_string(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    if tamper {
        // One byte of a file's content in the last layer: its digest no longer matches.
        let p = blobs.join(&digests.last().unwrap()[7..]);
        let mut b = fs::read(&p).unwrap();
        b[512] ^= 0x20; // the first entry's first byte of content

        fs::write(&p, b).unwrap();
    }
    format!("oci:{}:v1", s(dir))
}

/// The busybox rootfs as an uncompressed layer (once).
fn base_layer() -> Vec<u8> {
    static L: OnceLock<Vec<u8>> = OnceLock::new();
    L.get_or_init(|| {
        let dir = fx().dir.join("ctx/rootfs");
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &dir).unwrap();
        b.into_inner().unwrap()
    })
    .clone()
}

/// A layer of raw entries: (name, kind, link target, content). Names are written as
/// given, `..` included (tar's builder would refuse them; a hostile layer would not).
fn raw_layer(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_700_000_000);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_layers_are_refused_and_nothing_is_written_outside_the_cache() {
    if fixture("hostile_layers_are_refused_and_nothing_is_written_outside_the_cache").is_none() {
        return;
    }
    use tar::EntryType::{Regular, Symlink};
    let n = Node::new("");
    let canary = n.ctx.path("canary");
    fs::create_dir_all(&canary).unwrap();
    let up = "../".repeat(12);
    let escape = format!("{up}{}", s(&canary).trim_start_matches('/'));
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "tampered",
            raw_layer(&[("data/file", Regular, "", b"what the manifest was made for")]),
            true,
            "was tampered with",
        ),
        (
            "symlink",
            raw_layer(&[
                ("evil", Symlink, &escape, b""),
                ("evil/pwned", Regular, "", b"written through the link"),
            ]),
            false,
            "leads outside the image's root",
        ),
        (
            "dotdot",
            raw_layer(&[(&format!("{escape}/pwned"), Regular, "", b"climbed out")]),
            false,
            "'..' component",
        ),
    ];
    for (name, layer, tamper, says) in cases {
        let image = layout(&n.ctx.path(name), &[layer], tamper);
        let out = n.image(&["pull", &image], &[]);
        assert!(
            !out.ok(),
            "{name}: the layer was accepted: {}",
            n.explain(&out)
        );
        assert!(out.stderr.contains(says), "{name}: {}", out.stderr);
        assert_eq!(
            fs::read_dir(&canary).unwrap().count(),
            0,
            "{name}: wrote outside"
        );
        assert!(n.entries().is_empty(), "{name}: a refused image is cached");
        assert!(n.staging().is_empty(), "{name}: left {:?}", n.staging());
    }
    // Through a job: the rank fails with the reason and leaves nothing for the job.
    let image = layout(
        &n.ctx.path("tampered-job"),
        &[raw_layer(&[("f", Regular, "", b"x")])],
        true,
    );
    let rank = n.rank(&image, "mckernel", &["true"]);
    let mut c = Command::new(&rank[0]);
    c.args(&rank[1..5])
        .args(["conexec", "--job", "tampered", "--ppn", "1"])
        .args(&rank[6..])
        .envs(n.w.env());
    let out = n.run(c, "one");
    assert!(!out.ok(), "{}", n.explain(&out));
    assert!(out.stderr.contains("was tampered with"), "{}", out.stderr);
    assert!(
        fs::read_dir(n.ctx.root.join("conexec")).map_or(true, |mut d| d.next().is_none()),
        "the failed job left its directory"
    );
    // And under mpirun, every rank's failure names it.
    let out = n.run(n.mpirun(2, &rank, &[]), "job");
    assert!(!out.ok(), "{}", n.explain(&out));
    assert!(out.stderr.contains("was tampered with"), "{}", out.stderr);
    assert_eq!(
        n.w.count("boot"),
        0,
        "an LWK was booted for a refused image"
    );
    // A rank mpirun killed while it waited for the image's lock may leave its job's
    // directory, as any killed rank may: gc collects it.
    let gc = n.w.rt(&n.ctx, &["lwk", "gc"]);
    assert!(gc.ok(), "{}", n.ctx.explain(&gc));
    // An absolute link is taken inside the image's root, as the container sees it.
    let abs = s(&canary);
    let image = layout(
        &n.ctx.path("absolute"),
        &[raw_layer(&[
            ("abs", Symlink, &abs, b""),
            ("abs/inside", Regular, "", b"inside the image"),
        ])],
        false,
    );
    let out = n.image(&["pull", &image], &[]);
    assert!(out.ok(), "{}", n.explain(&out));
    assert_eq!(fs::read_dir(&canary).unwrap().count(), 0, "wrote outside");
    let id = out.stdout.trim().trim_start_matches("sha256:").to_string();
    let inside = n
        .cache
        .join("entries")
        .join(id)
        .join("rootfs")
        .join(abs.trim_start_matches('/'))
        .join("inside");
    assert_eq!(fs::read_to_string(inside).unwrap(), "inside the image");
    n.assert_clean();
}

#[test]
fn the_image_entrypoint_cmd_and_user_apply_and_the_command_line_wins() {
    if fixture("the_image_entrypoint_cmd_and_user_apply_and_the_command_line_wins").is_none() {
        return;
    }
    let n = Node::new("");
    let show = "echo \"$(id -u):$(id -g) $(pwd) $MODE\"";
    let image = layout_with(
        &n.ctx.path("run"),
        &[raw_layer(&[(
            "home/app/",
            tar::EntryType::Directory,
            "",
            b"",
        )])],
        false,
        json!({
            "Env": ["PATH=/bin", "MODE=image"],
            "User": "user",
            "WorkingDir": "/home/app",
            "Entrypoint": ["sh", "-c"],
            "Cmd": [show],
        }),
    );
    // No command: the image's Entrypoint and Cmd, as its User (build_rootfs's "user",
    // uid 1000) in its WorkingDir.
    let out = n.run(n.mpirun(2, &n.rank(&image, "none", &[]), &[]), "image");
    assert!(out.ok(), "{}", n.explain(&out));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["1000:1000 /home/app image"; 2],
        "{}",
        n.explain(&out)
    );
    // The command line wins: a command, --user, --cwd and --env.
    let rank = conexec_rank(
        &n.ctx,
        &[
            "--lwk", "none", "--image", &image, "--user", "0:0", "--cwd", "/tmp", "--env",
            "MODE=cli",
        ],
        &["sh", "-c", show],
    );
    let out = n.run(n.mpirun(2, &rank, &[]), "cli");
    assert!(out.ok(), "{}", n.explain(&out));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["0:0 /tmp cli"; 2],
        "{}",
        n.explain(&out)
    );
    n.assert_clean();
}

#[test]
fn sixteen_ranks_and_another_job_at_once_fetch_and_unpack_an_image_once() {
    if fixture("sixteen_ranks_and_another_job_at_once_fetch_and_unpack_an_image_once").is_none() {
        return;
    }
    let reg = Registry::start(false);
    let image = reg.push(&image_of("registry"), "lwk/sixteen:1");
    let n = Node::sized(
        &format!("insecure_registries = [\"{}\"]", reg.addr),
        "1-16",
        18,
    );
    // 16 ranks of one job, 4 of another and a manual pull, all on the uncached image.
    let cat = n.rank(&image, "mckernel", &["cat", "/the/file"]);
    let (a, ao, ae) = n.spawn(n.mpirun(16, &cat, &[]), "a");
    let (b, bo, be) = n.spawn(n.mpirun(4, &cat, &[]), "b");
    let (p, _, pe) = n.spawn(n.w.cmd(&n.ctx, &["image", "pull", &image]), "pull");
    let sa = wait_timeout(a, JOB_TIMEOUT, "the 16-rank job");
    let sb = wait_timeout(b, JOB_TIMEOUT, "the 4-rank job");
    let sp = wait_timeout(p, JOB_TIMEOUT, "image pull");
    let text = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    assert!(
        sa.success(),
        "{}{}{}",
        text(&ao),
        text(&ae),
        n.ctx.log_text()
    );
    assert!(sb.success(), "{}{}", text(&bo), text(&be));
    assert!(sp.success(), "{}", text(&pe));
    let want = file_of("registry");
    assert_eq!(
        text(&ao).lines().filter(|l| *l == want).count(),
        16,
        "{}",
        text(&ao)
    );
    assert_eq!(
        text(&bo).lines().filter(|l| *l == want).count(),
        4,
        "{}",
        text(&bo)
    );
    let all = format!("{}{}{}", text(&ae), text(&be), text(&pe));
    assert_eq!(unpacks(&all), 1, "more than one unpack: {all}");
    // Each layer left the registry once.
    let inspect = run_ok(
        Command::new("skopeo").args(["inspect", "--tls-verify=false", &image]),
        "skopeo inspect",
    );
    let layers: Vec<String> = serde_json::from_str::<serde_json::Value>(&inspect).unwrap()
        ["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 2);
    for l in &layers {
        assert_eq!(
            reg.blob_gets(l),
            1,
            "layer {l} fetched more than once:\n{}",
            reg.log()
        );
    }
    assert_eq!(n.entries().len(), 1);
    n.assert_clean();
}

/// A layer of `n` small files under /many: long enough to unpack to be caught at it.
fn many_files(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "many/", &[][..]).unwrap();
    for i in 0..n {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(8);
        b.append_data(&mut h, format!("many/f{i:06}"), &b"12345678"[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn a_rank_killed_mid_unpack_leaves_nothing_used_and_the_next_job_unpacks_cleanly() {
    if fixture("a_rank_killed_mid_unpack_leaves_nothing_used_and_the_next_job_unpacks_cleanly")
        .is_none()
    {
        return;
    }
    const FILES: usize = 60_000;
    let n = Node::new("");
    let image = layout(&n.ctx.path("big"), &[many_files(FILES)], false);
    // One rank by hand, killed once its unpack is under way.
    let rank = n.rank(&image, "mckernel", &["true"]);
    let mut c = Command::new(&rank[0]);
    c.args(&rank[1..5])
        .args(["conexec", "--job", "killed", "--ppn", "1"])
        .args(&rank[6..]);
    c.envs(n.w.env()).stdin(Stdio::null());
    let (mut child, _, e) = n.spawn(c, "killed");
    let staging = n.cache.join("staging");
    let caught = wait_for(
        Duration::from_secs(60),
        "the unpack to be under way",
        || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "the rank ended ({st:?}) before it could be killed mid-unpack: {}",
                    fs::read_to_string(&e).unwrap_or_default()
                );
            }
            let dir = fs::read_dir(&staging).ok()?.flatten().next()?.path();
            let made = fs::read_dir(dir.join("rootfs/many")).ok()?.count();
            (made > 100).then_some(made)
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(caught < FILES, "the unpack had finished");
    assert!(
        n.entries().is_empty(),
        "a half-unpacked image is in the cache"
    );
    assert_eq!(
        n.w.count("boot"),
        0,
        "the LWK was booted before the image was ready"
    );

    let out = n.run(
        n.mpirun(
            4,
            &n.rank(&image, "mckernel", &["sh", "-c", "ls /many | wc -l"]),
            &[],
        ),
        "next",
    );
    assert!(out.ok(), "{}", n.explain(&out));
    assert_eq!(
        out.stdout.lines().map(str::trim).collect::<Vec<_>>(),
        vec![FILES.to_string().as_str(); 4],
        "{}",
        n.explain(&out)
    );
    assert_eq!(unpacks(&out.stderr), 1, "{}", out.stderr);
    assert_eq!(n.entries().len(), 1);
    // The killed rank's job never got a container; gc removes its directory.
    let gc = n.w.rt(&n.ctx, &["lwk", "gc"]);
    assert!(gc.ok(), "{}", n.ctx.explain(&gc));
    n.w.assert_booted_and_torn_down("mckernel", 1);
    n.assert_clean();
}

#[test]
fn the_size_cap_evicts_the_least_recently_used_image_no_job_uses() {
    if fixture("the_size_cap_evicts_the_least_recently_used_image_no_job_uses").is_none() {
        return;
    }
    use tar::EntryType::Regular;
    // Each image is the busybox rootfs (~2 MiB) plus a file: two do not fit in 3 MiB.
    let n = Node::new("max_size = \"3M\"");
    let a = layout(
        &n.ctx.path("a"),
        &[raw_layer(&[("the/file", Regular, "", b"image a")])],
        false,
    );
    let b = layout(
        &n.ctx.path("b"),
        &[raw_layer(&[("the/file", Regular, "", b"image b")])],
        false,
    );
    let pull = |r: &str| {
        let out = n.image(&["pull", r], &[]);
        assert!(out.ok(), "{}", n.explain(&out));
        out.stdout.trim().to_string()
    };
    let ia = pull(&a);
    let ib = pull(&b);
    assert_eq!(
        n.entries(),
        vec![ib.clone()],
        "a, least recently used, was not evicted"
    );
    // While a job runs on b, pulling a again must not evict b.
    let rank = n.rank(&b, "none", &["sleep", "30"]);
    let (job, _, _) = n.spawn(n.mpirun(1, &rank, &[]), "job");
    wait_for(Duration::from_secs(60), "the job's container", || {
        let out = n.w.rt(&n.ctx, &["list", "-q"]);
        (!out.stdout.trim().is_empty()).then_some(())
    });
    pull(&a);
    let mut both = vec![ia.clone(), ib.clone()];
    both.sort();
    assert_eq!(n.entries(), both, "an image in use was evicted");
    let ls = n.image(&["ls"], &[]);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with(&ib[7..19]) && l.contains(" yes ")),
        "image ls does not show b in use: {}",
        ls.stdout
    );
    let rm = n.image(&["rm", &ib], &[]);
    assert!(
        !rm.ok() && rm.stderr.contains("in use"),
        "{}",
        n.explain(&rm)
    );
    // SAFETY: kill(2) on the mpirun this test started; it ends its rank.
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    wait_timeout(job, JOB_TIMEOUT, "the job after SIGTERM");
    n.assert_clean();
    let out = n.image(&["prune"], &[]);
    assert!(out.ok(), "{}", n.explain(&out));
    assert!(n.entries().is_empty(), "prune left images no job uses");
}
