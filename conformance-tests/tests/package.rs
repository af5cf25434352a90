//! The Debian packages: `cargo xtask deb` builds lwk-runc's and lwk-sim's; their file
//! lists and control fields are checked; dpkg installs them on this machine, they are
//! used from the installed files (`lwk-runc --version`, `man lwk-runc`, `lwk-runc
//! doctor`, the OCI hooks under podman, the simulator), installed again over
//! themselves, and purged, after which nothing of them is left.
//!
//! Installing writes machine-global paths (/usr/bin/lwk-runc, /etc/lwk-runc, ...), so
//! the test holds the suite's machine lock throughout and purges both packages at the
//! end, pass or fail. It refuses to run where either package is installed already.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lwk_conformance::*;
use serde_json::Value;

const PACKAGES: [&str; 2] = ["lwk-runc", "lwk-sim"];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root()).stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    let shown = format!("{c:?}");
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(c: Command) -> String {
    let shown = format!("{c:?}");
    let o = run(c);
    assert!(o.status.success(), "{shown}: {}", text(&o));
    stdout(&o)
}

fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn installed(pkg: &str) -> Option<String> {
    let o = run(cmd("dpkg-query", &["-W", "-f", "${Status}", pkg]));
    let st = stdout(&o);
    (o.status.success() && !st.contains("not-installed")).then_some(st)
}

/// Purges both packages when dropped, so the machine is as it was, pass or fail.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let o = run(cmd("dpkg", &["--purge", PACKAGES[0], PACKAGES[1]]));
        if !o.status.success() {
            eprintln!("dpkg --purge after the package test failed: {}", text(&o));
        }
    }
}

/// `Key: value` of a .deb's control file.
fn field(deb: &Path, key: &str) -> String {
    ok(cmd("dpkg-deb", &["-f", &s(deb), key]))
        .trim()
        .to_string()
}

/// The paths a .deb installs, files and directories.
fn contents(deb: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for line in ok(cmd("dpkg-deb", &["-c", &s(deb)])).lines() {
        let Some(p) = line.split_whitespace().nth(5) else {
            continue;
        };
        let p = p.trim_start_matches('.').trim_end_matches('/').to_string();
        if p.is_empty() {
            continue;
        }
        if line.starts_with('d') {
            dirs.insert(p);
        } else {
            files.insert(p);
        }
    }
    (files, dirs)
}

/// The workspace's version, which both packages carry.
fn workspace_version() -> String {
    let toml = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let ws = &toml[toml
        .find("[workspace.package]")
        .expect("[workspace.package]")..];
    let line = ws.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// The commands `lwk-runc --help` lists: each has its man page.
fn commands(bin: &Path) -> Vec<String> {
    let mut c = Command::new(bin);
    c.arg("--help");
    let help = ok(c);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

fn man(page: &[&str]) -> String {
    let mut c = cmd("man", page);
    c.env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100");
    ok(c)
}

#[test]
fn debian_packages_build_check_install_upgrade_and_purge_cleanly() {
    require_root();
    const TEST: &str = "debian_packages_build_check_install_upgrade_and_purge_cleanly";
    let has_deb = run({
        let mut c = cargo();
        c.args(["deb", "--version"]);
        c
    })
    .status
    .success();
    if !has_deb {
        skip_engine_test(
            TEST,
            "cargo-deb is not installed (scripts/setup.sh installs the tested release)",
        );
        return;
    }
    let _lock = machine_lock();
    for p in PACKAGES {
        if let Some(st) = installed(p) {
            panic!("{p} is installed on this machine ({st}); this test installs and purges it: dpkg --purge {p} first");
        }
    }
    for p in ["/usr/bin/lwk-runc", "/etc/lwk-runc", "/usr/bin/lwk-sim"] {
        assert!(
            !Path::new(p).exists(),
            "{p} exists outside any package; this test would replace it"
        );
    }

    // A minimised image's dpkg drops man pages (path-exclude); then nothing here holds.
    for e in fs::read_dir("/etc/dpkg/dpkg.cfg.d")
        .into_iter()
        .flatten()
        .flatten()
    {
        let cfg = fs::read_to_string(e.path()).unwrap_or_default();
        assert!(
            !cfg.lines()
                .any(|l| l.starts_with("path-exclude") && l.contains("/usr/share/man")),
            "{} makes dpkg skip man pages; remove that path-exclude to test the package",
            e.path().display()
        );
    }

    // Build: the one documented command.
    let t0 = std::time::Instant::now();
    let mut c = cargo();
    c.args(["xtask", "deb"]);
    let built = ok(c);
    let t_build = t0.elapsed();
    let deb = |pkg: &str| -> PathBuf {
        let line = built
            .lines()
            .find(|l| l.contains(&format!("/{pkg}_")) && l.ends_with(".deb"))
            .unwrap_or_else(|| panic!("cargo xtask deb named no {pkg} package: {built}"));
        PathBuf::from(line.trim())
    };
    let (runc_deb, sim_deb) = (deb("lwk-runc"), deb("lwk-sim"));

    // Control fields.
    let version = workspace_version();
    let arch = ok(cmd("dpkg", &["--print-architecture"]))
        .trim()
        .to_string();
    for (deb, name, section) in [
        (&runc_deb, "lwk-runc", "admin"),
        (&sim_deb, "lwk-sim", "devel"),
    ] {
        assert_eq!(field(deb, "Package"), name);
        assert_eq!(field(deb, "Version"), format!("{version}-1"));
        assert_eq!(field(deb, "Architecture"), arch);
        assert_eq!(field(deb, "Section"), section);
        assert_eq!(field(deb, "Priority"), "optional");
        assert!(
            field(deb, "Maintainer").contains('<'),
            "Maintainer is not 'name <email>'"
        );
        assert!(
            field(deb, "Depends").contains("libc6"),
            "{name} Depends: {}",
            field(deb, "Depends")
        );
    }
    let depends = field(&runc_deb, "Depends");
    assert!(
        depends.contains("libseccomp2"),
        "lwk-runc Depends: {depends}"
    );
    assert!(
        !depends.contains("lwk-sim"),
        "lwk-runc must never pull in the simulator: {depends}"
    );
    assert_eq!(field(&runc_deb, "Recommends"), "patchelf");
    assert!(field(&runc_deb, "Description").starts_with("A runc-compatible OCI runtime"));
    let conffiles = ok(cmd("dpkg-deb", &["-I", &s(&runc_deb), "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/lwk-runc/config.toml");

    // File lists.
    let (runc_files, runc_dirs) = contents(&runc_deb);
    let (sim_files, sim_dirs) = contents(&sim_deb);
    let mut want: Vec<String> = [
        "/usr/bin/lwk-runc",
        "/etc/lwk-runc/config.toml",
        "/usr/share/man/man8/lwk-runc.8.gz",
        "/usr/share/man/man5/lwk-runc.toml.5.gz",
        "/usr/share/man/man8/lwk-runc-lwk-status.8.gz",
        "/usr/share/bash-completion/completions/lwk-runc",
        "/usr/share/zsh/vendor-completions/_lwk-runc",
        "/usr/share/fish/vendor_completions.d/lwk-runc.fish",
        "/usr/share/doc/lwk-runc/copyright",
        "/usr/share/doc/lwk-runc/changelog.Debian.gz",
        "/usr/share/lwk-runc/engines/daemon.json",
        "/usr/share/lwk-runc/engines/containers.conf",
        "/usr/share/lwk-runc/engines/containerd-2.x.toml",
        "/usr/share/lwk-runc/engines/runtimeclass.yaml",
        "/usr/share/lwk-runc/engines/oci.conf",
        "/usr/share/lwk-runc/hooks/lwk-runc-prestart.json",
        "/usr/share/lwk-runc/hooks/lwk-runc-poststop.json",
        "/usr/share/containers/oci/hooks.d/lwk-runc-prestart.json",
        "/usr/share/containers/oci/hooks.d/lwk-runc-poststop.json",
    ]
    .map(String::from)
    .to_vec();
    let bin = workspace_root().join("target/release/lwk-runc");
    let cmds = commands(&bin);
    for c in ["doctor", "setup-engine", "create", "conexec"] {
        assert!(cmds.iter().any(|x| x == c), "--help lists no {c}: {cmds:?}");
    }
    want.extend(
        cmds.iter()
            .map(|c| format!("/usr/share/man/man8/lwk-runc-{c}.8.gz")),
    );
    for w in &want {
        assert!(
            runc_files.contains(w),
            "lwk-runc's package lacks {w}; it has {runc_files:#?}"
        );
    }
    for f in runc_files.iter().chain(&sim_files) {
        assert!(
            !f.starts_with("/opt/") && !f.starts_with("/usr/local/"),
            "{f}: not a Debian path"
        );
    }
    assert!(
        !runc_files.iter().any(|f| f.contains("lwk-sim")),
        "{runc_files:#?}"
    );
    for w in [
        "/usr/bin/lwk-sim",
        "/usr/lib/lwk-sim/bin/mcexec",
        "/usr/lib/lwk-sim/bin/ihkconfig",
        "/usr/lib/lwk-sim/bin/yod",
        "/usr/lib/lwk-sim/smp-x86/kernel/mckernel.img",
        "/usr/share/doc/lwk-sim/examples/sim.toml",
        "/usr/share/man/man1/lwk-sim.1.gz",
        "/usr/share/doc/lwk-sim/copyright",
        "/usr/share/doc/lwk-sim/changelog.Debian.gz",
    ] {
        assert!(
            sim_files.contains(w),
            "lwk-sim's package lacks {w}; it has {sim_files:#?}"
        );
    }
    assert!(
        !sim_files.iter().any(|f| f.contains("lwk-runc")),
        "{sim_files:#?}"
    );
    let new_dirs: Vec<String> = runc_dirs
        .iter()
        .chain(&sim_dirs)
        .filter(|d| !Path::new(d).exists())
        .cloned()
        .collect();

    // Install.
    let _purge = Purge;
    ok(cmd("dpkg", &["-i", &s(&runc_deb)]));
    let v = ok(cmd("/usr/bin/lwk-runc", &["--version"]));
    assert!(v.starts_with(&format!("lwk-runc version {version}")), "{v}");
    let md = fs::metadata("/etc/lwk-runc/config.toml").unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o7777), (0, 0o644));
    assert_eq!(
        fs::read_to_string("/etc/lwk-runc/config.toml").unwrap(),
        fs::read_to_string(workspace_root().join("config/config.toml")).unwrap()
    );
    let page = man(&["lwk-runc"]);
    for w in [
        "runc-compatible",
        "doctor",
        "setup-engine",
        "LWK_RUNC_CONFIG",
        "lwk-runc.toml(5)",
    ] {
        assert!(page.contains(w), "man lwk-runc lacks {w}:\n{page}");
    }
    let page = man(&["5", "lwk-runc.toml"]);
    for w in ["default_kernel", "[mckernel]", "boot_timeout_secs", "[mos]"] {
        assert!(page.contains(w), "man 5 lwk-runc.toml lacks {w}:\n{page}");
    }
    assert!(man(&["lwk-runc-doctor"]).contains("Exit status"));
    let completion = ok(cmd(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/lwk-runc && complete -p lwk-runc",
        ],
    ));
    assert!(completion.contains("lwk-runc"), "{completion}");

    // doctor from the package: the installed config enables no LWK yet.
    let mut c = cmd("/usr/bin/lwk-runc", &["doctor"]);
    c.env_remove("LWK_RUNC_CONFIG");
    let o = run(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("/etc/lwk-runc/config.toml enables no LWK")
            && out.contains("fix: set [mckernel] enabled = true"),
        "{out}"
    );
    assert!(
        out.contains("/etc/lwk-runc/config.toml: root-owned"),
        "{out}"
    );

    hooks_are_inactive_until_enabled();

    // Upgrade over itself: the admin's change to the conffile stays.
    let mut conf = fs::read_to_string("/etc/lwk-runc/config.toml").unwrap();
    conf.push_str("# changed by the admin\n");
    fs::write("/etc/lwk-runc/config.toml", &conf).unwrap();
    ok(cmd("dpkg", &["-i", &s(&runc_deb)]));
    assert_eq!(
        fs::read_to_string("/etc/lwk-runc/config.toml").unwrap(),
        conf
    );
    ok(cmd("/usr/bin/lwk-runc", &["--version"]));

    // The simulator package, and the config it ships, drive the installed runtime.
    ok(cmd("dpkg", &["-i", &s(&sim_deb)]));
    ok(cmd("dpkg", &["-i", &s(&sim_deb)]));
    let v = ok(cmd("/usr/bin/lwk-sim", &["--version"]));
    assert!(v.contains(&version), "{v}");
    assert!(man(&["lwk-sim"]).contains("mcexec"));
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let example = fs::read_to_string("/usr/share/doc/lwk-sim/examples/sim.toml").unwrap();
    assert!(example.contains("/usr/lib/lwk-sim/bin/mcexec"), "{example}");
    let config = dir.path().join("sim.toml");
    fs::write(
        &config,
        example
            .replace("/run/lwk-sim", &s(&sim))
            .replace("/run/lwk-runc-lwk", &s(&dir.path().join("leases"))),
    )
    .unwrap();
    let mut c = cmd("/usr/bin/lwk-sim", &["modprobe"]);
    c.env("LWK_SIM_ROOT", &sim);
    ok(c);
    let mut c = cmd("/usr/bin/lwk-runc", &["doctor"]);
    c.env("LWK_SIM_ROOT", &sim).env("LWK_RUNC_CONFIG", &config);
    let o = run(c);
    assert!(
        o.status.success(),
        "the packaged simulator config is not ready: {}",
        text(&o)
    );

    // Purge: nothing of either package is left.
    let t_used = t0.elapsed();
    ok(cmd("dpkg", &["--purge", PACKAGES[0], PACKAGES[1]]));
    eprintln!(
        "package test: cargo xtask deb {t_build:?}; installed, used and reinstalled by {t_used:?}; purged by {:?}",
        t0.elapsed()
    );
    for p in PACKAGES {
        assert_eq!(installed(p), None, "{p} still known to dpkg");
    }
    for f in runc_files.iter().chain(&sim_files) {
        assert!(!Path::new(f).exists(), "{f} is left after dpkg --purge");
    }
    for d in &new_dirs {
        assert!(
            !Path::new(d).exists(),
            "directory {d} is left after dpkg --purge"
        );
    }
    assert!(
        !Path::new("/etc/lwk-runc").exists(),
        "/etc/lwk-runc is left after dpkg --purge"
    );
}

/// The hooks the package puts in podman's hooks.d never match; linked from
/// /etc/containers/oci/hooks.d (here: a later --hooks-dir) under the same name, the
/// active ones mask them and run `lwk-runc hook`, which, with the installed config,
/// refuses a container that asks for McKernel.
fn hooks_are_inactive_until_enabled() {
    for stage in ["prestart", "poststop"] {
        let name = format!("lwk-runc-{stage}.json");
        let read = |p: String| -> Value { serde_json::from_slice(&fs::read(&p).unwrap()).unwrap() };
        let inactive = read(format!("/usr/share/containers/oci/hooks.d/{name}"));
        let active = read(format!("/usr/share/lwk-runc/hooks/{name}"));
        assert_eq!(
            inactive["when"],
            serde_json::json!({"always": false}),
            "{inactive}"
        );
        assert_eq!(
            active["when"],
            serde_json::json!({"always": true}),
            "{active}"
        );
        assert_eq!(inactive["hook"], active["hook"]);
        assert_eq!(active["hook"]["path"], "/usr/bin/lwk-runc");
    }
    let Some(podman) = engine_tool(
        "debian_packages_build_check_install_upgrade_and_purge_cleanly",
        "podman",
        "podman",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    build_rootfs(&rootfs);
    let etc = dir.path().join("hooks-etc");
    fs::create_dir_all(&etc).unwrap();
    let podman_run = |hooks_dirs: &[&Path]| {
        let mut c = private_podman(&podman, &dir.path().join("podman"));
        c.args(["--runtime", "runc"]);
        for d in hooks_dirs {
            c.arg("--hooks-dir").arg(d);
        }
        c.args(podman_run_args())
            .args(["-e", "LWK_KERNEL=mckernel", "--rootfs"])
            .arg(&rootfs)
            .args(["/bin/sh", "-c", "echo ran"]);
        run(c)
    };
    // podman's default hook directories: /usr/share/containers/oci/hooks.d holds ours.
    let o = podman_run(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("ran"),
        "an inactive hook ran: {}",
        text(&o)
    );
    symlink(
        "/usr/share/lwk-runc/hooks/lwk-runc-prestart.json",
        etc.join("lwk-runc-prestart.json"),
    )
    .unwrap();
    let o = podman_run(&[Path::new("/usr/share/containers/oci/hooks.d"), &etc]);
    assert!(
        !o.status.success(),
        "the enabled hook did not run: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not enabled on this node"),
        "the enabled hook's refusal does not reach the user: {}",
        text(&o)
    );
}
