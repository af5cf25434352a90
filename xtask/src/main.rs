//! Release tasks, run as `cargo xtask <task>` (the alias is in .cargo/config.toml):
//!
//! - `deb`: build lwk-runc and lwk-sim (release), generate their man pages, shell
//!   completions and packaged files, and make both Debian packages with cargo-deb
//!   (`target/debian/*.deb`).
//! - `docs [DIR]`: only generate those files (default `target/release/assets`).
//!
//! The man pages and completions come from the clap definitions the binaries parse
//! with (src/cli.rs and sim/src/cli.rs, compiled in here by path), so they cannot drift
//! from the command line; lwk-runc.toml(5) comes from config/config.toml, whose comments
//! document every key (src/config.rs holds that file to the schema). A task of its own
//! rather than a build script keeps `cargo build` as fast as it was.

#[allow(dead_code)]
#[path = "../../src/cli.rs"]
mod lwk_runc_cli;
#[allow(dead_code)]
#[path = "../../sim/src/cli.rs"]
mod lwk_sim_cli;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// The cargo-deb release that `scripts/setup.sh` installs and this task is tested with.
const CARGO_DEB_VERSION: &str = "3.8.0";
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(name = "cargo xtask", about = "lwk-runc release tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// build both Debian packages into target/debian/
    Deb,
    /// generate man pages, completions and packaged files only
    Docs {
        /// output directory (default: target/release/assets)
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let res = match Xtask::parse().task {
        Task::Deb => deb(),
        Task::Docs { dir } => docs(&dir.unwrap_or_else(assets_dir)).map(|_| ()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

/// Where generated package files go: under `target/release/`, the prefix cargo-deb
/// resolves to the real target directory.
fn assets_dir() -> PathBuf {
    target_dir().join("release/assets")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Result<String, String> {
    let shown = format!("{c:?}");
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn deb() -> Result<(), String> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "lwk-runc",
        "--package",
        "lwk-sim",
    ]);
    run(build)?;
    let assets = docs(&assets_dir())?;
    sim_tree(&assets)?;
    let mut probe = cargo();
    probe.args(["deb", "--version"]);
    if run(probe).is_err() {
        return Err(format!(
            "cargo-deb is not installed: cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked"
        ));
    }
    for pkg in ["lwk-runc", "lwk-sim"] {
        let mut c = cargo();
        c.args(["deb", "--package", pkg, "--no-build", "--quiet"]);
        let out = run(c)?;
        for line in out.lines().filter(|l| l.ends_with(".deb")) {
            println!("{line}");
        }
    }
    Ok(())
}

/// Everything generated for the packages, under `dir`.
fn docs(dir: &Path) -> Result<PathBuf, String> {
    let io = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
    let man = dir.join("man");
    let comp = dir.join("completions");
    let hooks = dir.join("hooks.d");
    for d in [&man, &comp, &hooks] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).map_err(|e| io("creating directories", e))?;
    }
    let runc = lwk_runc_cli::Cli::command();
    runtime_pages(runc.clone(), &man).map_err(|e| io("writing lwk-runc's man pages", e))?;
    let config = fs::read_to_string(root().join("config/config.toml"))
        .map_err(|e| format!("reading config/config.toml: {e}"))?;
    fs::write(man.join("lwk-runc.toml.5"), config_page(&config))
        .map_err(|e| io("writing lwk-runc.toml.5", e))?;
    sim_page(&man).map_err(|e| io("writing lwk-sim.1", e))?;
    for (shell, file) in [
        (Shell::Bash, "lwk-runc"),
        (Shell::Zsh, "_lwk-runc"),
        (Shell::Fish, "lwk-runc.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut runc.clone(), "lwk-runc", &mut out);
        fs::write(comp.join(file), out).map_err(|e| io("writing completions", e))?;
    }
    inactive_hooks(&hooks)?;
    // Debian policy: compressed, without a timestamp. cargo-deb compresses man pages
    // only when they are not under target/.
    let mut gzip = Command::new("gzip");
    gzip.args(["-9nf"]);
    for e in fs::read_dir(&man).map_err(|e| io("listing man pages", e))? {
        gzip.arg(e.map_err(|e| io("listing man pages", e))?.path());
    }
    run(gzip)?;
    Ok(dir.to_path_buf())
}

/// lwk-runc(8) and one page per command (`lwk-runc-create(8)`, `lwk-runc-lwk-status(8)`).
fn runtime_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd
        .version(VERSION)
        .long_about(RUNTIME_DESCRIPTION)
        .disable_help_subcommand(true);
    cmd.build();
    let mut subs = Vec::new();
    collect(&cmd, &mut subs);
    let names: Vec<String> = subs
        .iter()
        .map(|c| c.get_display_name().unwrap_or(c.get_name()).to_string())
        .collect();
    let mut see_also: Vec<(String, &str)> = vec![
        ("lwk-runc.toml".into(), "5"),
        ("lwk-sim".into(), "1"),
        ("runc".into(), "8"),
    ];
    see_also.extend(names.iter().map(|n| (n.clone(), "8")));
    write_page(
        &cmd,
        dir,
        "8",
        &[files_section(), see_also_section(&see_also)],
    )?;
    for sub in &subs {
        write_page(
            sub,
            dir,
            "8",
            &[see_also_section(&[("lwk-runc".into(), "8")])],
        )?;
    }
    Ok(())
}

const RUNTIME_DESCRIPTION: &str = "lwk-runc is a runc-compatible OCI runtime: Docker, podman, \
containerd, Slurm and Kubernetes call it exactly as they call runc. A container that asks for a \
lightweight kernel (the annotation run.lwk.kernel, or LWK_KERNEL=mckernel|mos in its environment) \
has its entrypoint run under the LWK's launcher (mcexec or yod) with the launcher and the LWK's \
devices made visible inside; the first such container on a node boots the LWK and the last one \
shuts it down. A container that asks for nothing runs as under runc. Which kernels a node offers \
is set in /etc/lwk-runc/config.toml; lwk-runc doctor says whether the node is ready and \
lwk-runc setup-engine registers lwk-runc with Docker, podman or containerd.";

fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(sub.clone());
        collect(sub, out);
    }
}

fn write_page(
    cmd: &clap::Command,
    dir: &Path,
    section: &str,
    extra: &[Roff],
) -> std::io::Result<()> {
    let man = Man::new(cmd.clone())
        .section(section)
        .source(format!("lwk-runc {VERSION}"))
        .manual(if section == "8" {
            "System Administration"
        } else {
            "User Commands"
        });
    let mut out = Vec::new();
    man.render(&mut out)?;
    for r in extra {
        out.extend(r.to_roff().into_bytes());
    }
    fs::write(dir.join(man.get_filename()), out)
}

fn files_section() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in [
        ("/etc/lwk-runc/config.toml", "which LWKs the node offers and how to drive them (lwk-runc.toml(5)); LWK_RUNC_CONFIG names another file"),
        ("/run/lwk-runc", "container state (--root), as runc keeps it in /run/runc"),
        ("/run/lwk-runc-lwk", "the node-wide LWK lease table (lease_dir)"),
        ("/usr/share/lwk-runc/engines/", "Docker, podman, containerd, Kubernetes and Slurm configuration snippets"),
        ("/usr/share/lwk-runc/hooks/", "OCI hooks running the LWK lease logic for runc or crun containers: link them into /etc/containers/oci/hooks.d to enable them"),
        ("/usr/share/containers/oci/hooks.d/lwk-runc-*.json", "the same hooks, inactive (their condition never matches) until masked from /etc/containers/oci/hooks.d"),
    ] {
        r.control("TP", []);
        r.text([bold(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("LWK_RUNC_CONFIG")]);
    r.text([roman(
        "the LWK configuration file to read instead of /etc/lwk-runc/config.toml",
    )]);
    r.control("TP", []);
    r.text([bold("LWK_KERNEL"), roman(", "), bold("LWK_ARGS")]);
    r.text([roman(
        "in a container's environment: the kernel it runs on and the launcher options it asks for \
         (engines without annotations)",
    )]);
    r
}

fn see_also_section(pages: &[(String, &str)]) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    let mut parts = Vec::new();
    for (i, (name, sec)) in pages.iter().enumerate() {
        parts.push(bold(name.clone()));
        parts.push(roman(format!(
            "({sec}){}",
            if i + 1 < pages.len() { ", " } else { "" }
        )));
    }
    r.text(parts);
    r
}

/// lwk-sim(1), from the simulator's own clap definition.
fn sim_page(dir: &Path) -> std::io::Result<()> {
    let mut cmd = lwk_sim_cli::SimCli::command()
        .version(VERSION)
        .disable_help_subcommand(true);
    cmd.build();
    let mut files = Roff::new();
    files.control("SH", ["FILES"]);
    files.control("TP", []);
    files.text([bold("/usr/lib/lwk-sim/bin/")]);
    files.text([roman(
        "the simulated tools, as installed by the lwk-sim package",
    )]);
    files.control("TP", []);
    files.text([bold("/usr/share/doc/lwk-sim/examples/sim.toml")]);
    files.text([roman(
        "an lwk-runc config (LWK_RUNC_CONFIG) that drives them",
    )]);
    files.control("TP", []);
    files.text([
        bold("$LWK_SIM_ROOT"),
        roman(" (default "),
        italic("/run/lwk-sim"),
        roman(")"),
    ]);
    files.text([roman(
        "the simulated node: devices, reservations, instance state, calls.log, faults",
    )]);
    // One page: its subcommands are listed in it, not given pages of their own.
    let man = Man::new(cmd.clone())
        .section("1")
        .source(format!("lwk-runc {VERSION}"))
        .manual("User Commands");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut commands = Roff::new();
    commands.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        commands.control("TP", []);
        let mut usage = vec![bold(sub.get_name().to_string())];
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
        {
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or(String::new(), |v| v.to_string());
            usage.push(roman(" "));
            match arg.get_long() {
                Some(long) => {
                    usage.push(bold(format!("--{long}")));
                    usage.push(roman(" "));
                    usage.push(italic(value));
                }
                None => usage.push(italic(format!("[{value}...]"))),
            }
        }
        commands.text(usage);
        commands.text([roman(
            sub.get_about().map_or(String::new(), |a| a.to_string()),
        )]);
    }
    out.extend(commands.to_roff().into_bytes());
    man.render_extra_section(&mut out)?;
    man.render_version_section(&mut out)?;
    out.extend(files.to_roff().into_bytes());
    let see = see_also_section(&[("lwk-runc".into(), "8"), ("lwk-runc.toml".into(), "5")]);
    out.extend(see.to_roff().into_bytes());
    fs::write(dir.join(man.get_filename()), out)
}

/// One entry of lwk-runc.toml(5): its `key = default` lines and their description.
type Entry = (Vec<(String, String)>, Vec<String>);

/// lwk-runc.toml(5) from the shipped config: its leading comment is the description,
/// each key's comment lines above it are its entry, keys without comment of their own
/// share the entry above.
fn config_page(text: &str) -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "LWK-RUNC.TOML",
            "5",
            "",
            &format!("lwk-runc {VERSION}"),
            "File Formats",
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman("lwk-runc.toml - the LWK configuration of lwk-runc")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold("/etc/lwk-runc/config.toml")]);
    let mut lines = text.lines().peekable();
    let mut intro = Vec::new();
    while let Some(l) = lines.next_if(|l| l.starts_with('#')) {
        intro.push(l.trim_start_matches('#').trim().to_string());
    }
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(intro.join(" "))]);
    r.control("PP", []);
    r.text([roman(
        "Each entry below shows a key with its default value. lwk-runc doctor checks the file, \
         its ownership and permissions, and every tool it names.",
    )]);
    r.control("SH", ["TOP-LEVEL KEYS"]);
    let mut comment: Vec<String> = Vec::new();
    let mut entry: Option<Entry> = None;
    let flush = |r: &mut Roff, entry: &mut Option<Entry>| {
        if let Some((keys, doc)) = entry.take() {
            r.control("TP", []);
            let mut tag = Vec::new();
            for (i, (k, v)) in keys.iter().enumerate() {
                if i > 0 {
                    tag.push(roman(", "));
                }
                tag.push(bold(k.clone()));
                tag.push(roman(format!(" = {v}")));
            }
            r.text(tag);
            r.text([roman(doc.join(" "))]);
        }
    };
    for line in lines {
        let l = line.trim();
        if let Some(c) = l.strip_prefix('#') {
            comment.push(c.trim().to_string());
        } else if l.starts_with('[') {
            flush(&mut r, &mut entry);
            r.control("SH", [l]);
            if !comment.is_empty() {
                r.text([roman(comment.join(" "))]);
                comment.clear();
            }
        } else if let Some((k, v)) = l.split_once('=') {
            let kv = (k.trim().to_string(), v.trim().to_string());
            match (&mut entry, comment.is_empty()) {
                (Some((keys, _)), true) => keys.push(kv),
                _ => {
                    flush(&mut r, &mut entry);
                    entry = Some((vec![kv], std::mem::take(&mut comment)));
                }
            }
        } else if l.is_empty() && entry.is_some() {
            flush(&mut r, &mut entry);
        }
    }
    flush(&mut r, &mut entry);
    r.control("SH", ["FILES"]);
    r.text([
        bold("/usr/share/lwk-runc/engines/"),
        roman(": engine snippets; "),
        bold("/usr/share/doc/lwk-sim/examples/sim.toml"),
        roman(": a config for the simulator (package lwk-sim)."),
    ]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("lwk-runc"),
        roman("(8), "),
        bold("lwk-runc-doctor"),
        roman("(8), "),
        bold("lwk-sim"),
        roman("(1)"),
    ]);
    r.to_roff()
}

/// The hooks under hooks/ as podman must not pick them up until the admin enables them:
/// the same definition with a condition that never matches. An admin enables a hook by
/// linking the active one (/usr/share/lwk-runc/hooks/) into /etc/containers/oci/hooks.d
/// under the same name, which masks this one (oci-hooks(5)).
fn inactive_hooks(out: &Path) -> Result<(), String> {
    let src = root().join("hooks");
    let entries = fs::read_dir(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let mut hook: serde_json::Value = fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
            .map_err(|e| format!("reading {}: {e}", p.display()))?;
        hook["when"] = serde_json::json!({ "always": false });
        let inactive = serde_json::to_string_pretty(&hook).map_err(|e| e.to_string())? + "\n";
        fs::write(out.join(e.file_name()), inactive).map_err(|e| format!("writing hooks: {e}"))?;
    }
    Ok(())
}

/// The simulator's tool tree and a config for it, as the lwk-sim package installs them
/// (/usr/lib/lwk-sim, /usr/share/doc/lwk-sim/examples/sim.toml).
fn sim_tree(assets: &Path) -> Result<(), String> {
    let tree = assets.join("lwk-sim");
    let _ = fs::remove_dir_all(&tree);
    let mut c = Command::new(target_dir().join("release/lwk-sim"));
    c.arg("install").arg("--prefix").arg(&tree);
    run(c)?;
    let cfg = fs::read_to_string(root().join("config/sim.toml"))
        .map_err(|e| format!("reading config/sim.toml: {e}"))?;
    // The source's set-up comment (install, modprobe) becomes the packaged one.
    let body: String = cfg
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let packaged = format!(
        "# lwk-runc config for the simulator installed by the lwk-sim package:\n\
         #   LWK_SIM_ROOT=/run/lwk-sim lwk-sim modprobe\n\
         #   LWK_RUNC_CONFIG=/usr/share/doc/lwk-sim/examples/sim.toml lwk-runc doctor\n\
         # Every key is documented in lwk-runc.toml(5).\n{}",
        body.replace("/opt/lwk-sim", "/usr/lib/lwk-sim")
    );
    fs::write(assets.join("sim.toml"), packaged).map_err(|e| format!("writing sim.toml: {e}"))
}
