//! Security of the node-wide lease (issue: nobody but root may steer it): each test
//! performs an attack or a fault for real against lwk-runc on a simulated node, and
//! asserts the outcome: a clear error naming what, where and what to do, and nothing
//! left booted, reserved or leased.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lwk_conformance::*;
use serde_json::{json, Value};

const NOBODY: &str = "65534";

fn lwk_cfg(args: &[&str]) -> Value {
    let mut c = base_config(args);
    c["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("LWK_KERNEL=mckernel"));
    c
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// A command run as the unprivileged user `nobody`.
fn as_nobody(program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(program)
    .args(args)
    .stdin(Stdio::null());
    c
}

/// The test's directory opened for traversal (still root's, writable by root only),
/// as /run is on a node: what stops another user is then the lease directory itself.
fn open_for_traversal(ctx: &Ctx) {
    chmod(ctx.dir.path(), 0o755);
}

/// A pid that has just ended (for build directories left by a killed create).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn nobody_else_can_hold_the_node_lock_and_a_stuck_holder_is_named_within_the_bound() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "lock_timeout_secs = 2");
    open_for_traversal(&ctx);
    // A node upgraded in place: the lease directory as earlier versions left it, its
    // directories 0755 and its lock files world-readable.
    let lock = w.leases.join("lock");
    let cache_lock = w.leases.join("closures/.lock");
    fs::create_dir_all(w.leases.join("closures")).unwrap();
    for d in [&w.leases, &w.leases.join("closures")] {
        chmod(d, 0o755);
    }
    for l in [&lock, &cache_lock] {
        fs::write(l, "").unwrap();
        chmod(l, 0o644);
    }
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/sleep", "100"]));
    let a = ctx.id("held");
    w.rt_ok(&ctx, &["run", "--detach", "--bundle", &s(&b), &a]);
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(mode(&cache_lock), 0o600);

    // The attack: a local user holding the lock. They cannot even open it.
    let mut c = as_nobody(Path::new("/usr/bin/flock"), &["-w", "1", &s(&lock), "true"]);
    let out = ctx.run_cmd({
        c.stdout(Stdio::null());
        c
    });
    assert!(!out.ok(), "nobody took the node lock");
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);

    // A stuck holder (here this test, as root): every wait ends naming the lock and
    // the holder's pid.
    let held = fs::File::open(&lock).unwrap();
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    let hpid = std::process::id();
    let boots = w.count("\t0 boot\t");
    let named = [
        s(&lock),
        format!("pid {hpid} ("),
        "lock_timeout_secs".into(),
    ];
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("queued")]);
    assert!(!out.ok(), "ran while the node lock was held");
    ctx.assert_says(&out, &named);
    let out = w.rt(&ctx, &["lwk", "gc"]);
    assert!(!out.ok(), "gc went on while the node lock was held");
    ctx.assert_says(&out, &named);
    // delete takes the container down and says why its lease could not go yet.
    let out = w.rt_ok(&ctx, &["delete", "--force", &a]);
    ctx.assert_says(&out, &named);
    assert_eq!(w.count("\t0 boot\t"), boots, "{}", w.calls());
    drop(held);
    // Once the holder is gone, gc finishes the delete's work.
    w.rt_ok(&ctx, &["lwk", "gc"]);
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_lease_directory_anyone_else_could_change_is_refused_and_planted_links_are_not_followed() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/true"]));
    let victim = ctx.path("victim");
    fs::write(&victim, "precious").unwrap();
    let run = || w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("r")]);
    let nobody = |p: &Path| std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();

    // 1. A user made the lease directory first and planted closures/.lock -> a root file.
    fs::create_dir_all(w.leases.join("closures")).unwrap();
    std::os::unix::fs::symlink(&victim, w.leases.join("closures/.lock")).unwrap();
    std::os::unix::fs::symlink(&victim, w.leases.join("lock")).unwrap();
    nobody(&w.leases);
    nobody(&w.leases.join("closures"));
    let out = run();
    assert!(!out.ok(), "a user's lease directory was used");
    ctx.assert_says(
        &out,
        &[&s(&w.leases), "owned by uid 65534, not root", "chown root"],
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    fs::remove_dir_all(&w.leases).unwrap();

    // 2. Root's, but open to everybody: refused, and left as it is (not repaired).
    fs::create_dir(&w.leases).unwrap();
    chmod(&w.leases, 0o777);
    let out = run();
    assert!(!out.ok(), "a world-writable lease directory was used");
    ctx.assert_says(
        &out,
        &[&s(&w.leases), "writable by group or others", "chmod go-w"],
    );
    assert_eq!(mode(&w.leases), 0o777);
    fs::remove_dir_all(&w.leases).unwrap();

    // 3. A root-only lease directory whose closure cache a user pre-placed (with a
    //    launcher of their own under the predictable name).
    fs::create_dir(&w.leases).unwrap();
    chmod(&w.leases, 0o700);
    fs::create_dir_all(w.leases.join("closures/mcexec-0123456789abcdef/bin")).unwrap();
    nobody(&w.leases.join("closures"));
    let out = run();
    assert!(!out.ok(), "a user's closure cache was used");
    ctx.assert_says(
        &out,
        &[&s(&w.leases.join("closures")), "owned by uid 65534"],
    );
    fs::remove_dir_all(&w.leases).unwrap();

    // 4. Root's lease directory with a symlink for its lock: never followed.
    fs::create_dir(&w.leases).unwrap();
    chmod(&w.leases, 0o700);
    std::os::unix::fs::symlink(&victim, w.leases.join("lock")).unwrap();
    let out = run();
    assert!(!out.ok(), "the node lock was opened through a symlink");
    ctx.assert_says(&out, &[&s(&w.leases.join("lock")), "symlink"]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(w.count("reserve"), 0, "{}", w.calls());
    fs::remove_dir_all(&w.leases).unwrap();

    // Made by lwk-runc itself: 0700, and it works.
    let out = run();
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(mode(&w.leases), 0o700);
    assert_eq!(mode(&w.leases.join("closures")), 0o700);
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_config_or_tool_that_others_could_change_is_refused() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/true"]));
    let run = || w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("t")]);

    // The config itself.
    chmod(&w.config, 0o666);
    let out = run();
    assert!(!out.ok(), "a world-writable config was used");
    ctx.assert_says(
        &out,
        &[
            &s(&w.config),
            "writable by group or others (mode 0666)",
            "chmod go-w",
        ],
    );
    chmod(&w.config, 0o644);
    std::os::unix::fs::chown(&w.config, Some(65534), None).unwrap();
    let out = run();
    assert!(!out.ok(), "a user's config was used");
    ctx.assert_says(&out, &[&s(&w.config), "owned by uid 65534"]);
    std::os::unix::fs::chown(&w.config, Some(0), None).unwrap();

    // Tools in a directory anyone may write to, then a tool anyone may write.
    let tools = ctx.path("tools");
    fs::create_dir(&tools).unwrap();
    let ihkconfig = tools.join("ihkconfig");
    fs::copy(format!("{}/ihkconfig", sim_bin()), &ihkconfig).unwrap();
    chmod(&ihkconfig, 0o777);
    chmod(&tools, 0o777);
    let text = fs::read_to_string(&w.config)
        .unwrap()
        .replace(&format!("{}/ihkconfig", sim_bin()), &s(&ihkconfig));
    fs::write(&w.config, text).unwrap();
    let out = run();
    assert!(!out.ok(), "tools in a world-writable directory were run");
    ctx.assert_says(
        &out,
        &[
            "mckernel.ihkconfig",
            &s(&tools),
            "writable by group or others",
            "as root",
        ],
    );
    chmod(&tools, 0o755);
    let out = run();
    assert!(!out.ok(), "a world-writable tool was run");
    ctx.assert_says(&out, &["mckernel.ihkconfig", &s(&ihkconfig), "(mode 0777)"]);
    assert_eq!(w.count("reserve"), 0, "a tool ran: {}", w.calls());
    assert!(!w.leases.exists(), "the lease directory was touched");
    chmod(&ihkconfig, 0o755);
    let out = run();
    assert!(out.ok(), "{}", ctx.explain(&out));
    w.assert_booted_and_torn_down("mckernel", 1);
}

/// A rootless bundle for `nobody`: its own user namespace, mapped to 65534.
fn rootless_bundle(ctx: &Ctx, name: &str, args: &[&str], cgroup: &str) -> PathBuf {
    let mut c = lwk_cfg(args);
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 65534, "size": 1}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 65534, "size": 1}]);
    c["linux"]["cgroupsPath"] = json!(cgroup);
    // A user namespace may not mount a fresh sysfs or mqueue; bind what exists.
    let mounts = c["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["type"] != "sysfs" && m["type"] != "mqueue");
    mounts.push(
        json!({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
    );
    let b = ctx.path(name);
    build_rootfs(&b.join("rootfs"));
    write_json(&b.join("config.json"), &c);
    b
}

/// v1 cgroups delegated to `nobody` (what a rootless engine is given by its site).
struct Delegated(Vec<PathBuf>);

impl Delegated {
    fn new(name: &str) -> Delegated {
        let mut dirs = Vec::new();
        for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = e.path().join(name);
            if e.path().is_dir() && fs::create_dir_all(&d).is_ok() {
                let _ = Command::new("chown")
                    .args(["-R", "65534:65534"])
                    .arg(&d)
                    .status();
                dirs.push(d);
            }
        }
        Delegated(dirs)
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for d in &self.0 {
            // Children first (libcontainer made the container's below ours).
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn users_other_than_root_never_boot_or_tear_down_and_join_only_where_allowed() {
    let ctx = Ctx::new();
    open_for_traversal(&ctx);
    let user_root = ctx.path("user-root");
    fs::create_dir(&user_root).unwrap();
    std::os::unix::fs::chown(&user_root, Some(65534), Some(65534)).unwrap();
    let cg = format!("lwkc-rootless-{}", std::process::id());
    let _delegated = Delegated::new(&cg);
    let b = rootless_bundle(
        &ctx,
        "rb",
        &[
            "/bin/sh",
            "-c",
            "echo joined; tr '\\0' ' ' < /proc/$PPID/cmdline",
        ],
        &format!("/{cg}/c"),
    );
    chmod(&b, 0o755);
    let user = |w: &World, args: &[&str]| {
        let mut full = vec!["--root", user_root.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut c = as_nobody(&runtime_bin(), &full);
        c.envs(w.env());
        ctx.run_cmd(c)
    };

    // Default: only root uses an LWK.
    let w = World::new(&ctx, "");
    let out = user(&w, &["run", "--bundle", &s(&b), "rootless"]);
    assert!(!out.ok(), "a user ran on the LWK by default");
    assert!(
        out.stderr.contains("runs as uid 65534")
            && out.stderr.contains("only root may boot, join or tear down")
            && out.stderr.contains("rootless_join = true"),
        "{}",
        out.stderr
    );
    let out = user(&w, &["lwk", "gc"]);
    assert!(!out.ok(), "a user ran lwk gc");
    assert!(
        out.stderr.contains("only root may tear down"),
        "{}",
        out.stderr
    );
    assert_eq!(
        w.calls()
            .lines()
            .filter(|l| !l.contains("modprobe"))
            .count(),
        0,
        "{}",
        w.calls()
    );

    // Allowed to join, but nothing is up: the user may not boot it.
    let ctx2 = Ctx::new();
    let w = World::at(
        &ctx.path("node2"),
        &WorldOpts {
            top: "rootless_join = true",
            ..Default::default()
        },
    );
    chmod(&ctx.path("node2"), 0o755);
    let out = user(&w, &["run", "--bundle", &s(&b), "rootless"]);
    assert!(!out.ok(), "a user booted the LWK");
    assert!(
        out.stderr.contains("not up (status: no instance)")
            && out.stderr.contains("only root may boot it"),
        "{}",
        out.stderr
    );
    assert_eq!(w.count("reserve"), 0, "{}", w.calls());

    // Up (a root container holds it): the user's container joins, on the LWK, with no
    // lease; its end tears nothing down.
    let rb = ctx2.bundle("root-b", &lwk_cfg(&["/bin/sleep", "100"]));
    let id = ctx2.id("root-holder");
    w.rt_ok(&ctx2, &["run", "--detach", "--bundle", &s(&rb), &id]);
    let out = user(&w, &["run", "--bundle", &s(&b), "rootless"]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("joined"), "{}", out.stdout);
    assert!(
        out.stdout.contains("mcexec"),
        "not under the launcher: {}",
        out.stdout
    );
    assert_eq!(w.leases(), 1, "the user's container took a lease");
    let cache = user_root.join("@lwk-closures");
    assert_eq!(fs::metadata(&cache).unwrap().uid(), 65534);
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    assert_eq!(w.count(" destroy "), 0, "{}", w.calls());
    let out = user(&w, &["lwk", "gc"]);
    assert!(!out.ok());
    // An MPI job's container has no user namespace: conexec says up front that only
    // root makes one, rather than failing later in libcontainer, and makes nothing.
    let rootfs = ctx.path("rb/rootfs");
    let out = user(
        &w,
        &[
            "conexec",
            "--job",
            "j1",
            "--ppn",
            "1",
            "--lwk",
            "mckernel",
            "--rootfs",
            &s(&rootfs),
            "--",
            "/bin/true",
        ],
    );
    assert!(!out.ok(), "a user made a job container");
    assert!(
        out.stderr.contains("runs as uid 65534")
            && out.stderr.contains("can only be made by root")
            && out.stderr.contains("--allow-run-as-root"),
        "{}",
        out.stderr
    );
    assert!(
        !user_root.join("conexec").exists(),
        "conexec as a user left files"
    );
    assert_eq!(w.leases(), 1, "{}", w.calls());
    w.rt_ok(&ctx2, &["delete", "--force", &id]);
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_delete_racing_a_create_never_drops_its_lease() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    fs::write(w.sim.join("faults"), "boot_slow once 1500\n").unwrap();
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/sleep", "100"]));
    let id = ctx.id("raced");
    let mut create = w
        .cmd(&ctx, &["create", "--bundle", &s(&b), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the create's lease", || {
        (w.leases() == 1).then_some(())
    });
    // A plain delete while the create boots the LWK: the container does not exist yet
    // (its state is not written), and the lease it is being created with must stay.
    let out = w.rt(&ctx, &["delete", &id]);
    assert!(!out.ok(), "deleted a container still being created");
    ctx.assert_says(&out, &["does not exist"]);
    assert!(create.wait().unwrap().success(), "{}", ctx.log_text());
    assert_eq!(ctx.status(&id), "created");
    assert_eq!(w.leases(), 1, "the created container has no lease");
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    w.rt_ok(&ctx, &["delete", "--force", &id]);
    w.assert_booted_and_torn_down("mckernel", 1);
}

/// What an engine hands `lwk-runc hook STAGE` on stdin.
fn hook(w: &World, ctx: &Ctx, stage: &str, state: &Value) -> Out {
    let (o, e) = (
        ctx.path(&format!("hook-{stage}-{}.out", unique_id("h"))),
        ctx.path(&format!("hook-{stage}-{}.err", unique_id("h"))),
    );
    let input = ctx.path(&format!("hook-{}.json", unique_id("in")));
    fs::write(&input, serde_json::to_vec(state).unwrap()).unwrap();
    let mut c = Command::new(runtime_bin());
    c.args(["hook", stage])
        .envs(w.env())
        .stdin(fs::File::open(&input).unwrap());
    run_into_files(c, o, e, CMD_TIMEOUT)
}

#[test]
fn hook_leases_of_two_engines_with_one_id_stay_apart() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let env = vec![
        format!("LWK_SIM_ROOT={}", w.sim.display()),
        format!("LWK_RUNC_CONFIG={}", w.config.display()),
    ];
    let h = |stage: &str| json!({"path": s(&runtime_bin()), "args": ["lwk-runc", "hook", stage], "env": env});
    let with_hooks = |args: &[&str]| {
        let mut c = lwk_cfg(args);
        c["hooks"] = json!({"prestart": [h("prestart")], "poststop": [h("poststop")]});
        c
    };
    let ba = ctx.bundle("engine-a", &with_hooks(&["/bin/sleep", "100"]));
    let bb = ctx.bundle("engine-b", &with_hooks(&["/bin/true"]));
    let id = unique_id("shared");
    let runc = |root: &str, args: &[&str]| {
        let mut c = Command::new("runc");
        c.arg("--root").arg(ctx.path(root)).args(args);
        ctx.run_cmd(c)
    };
    // Engine A's container runs on the LWK.
    let out = runc("a", &["run", "--detach", "--bundle", &s(&ba), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    // Engine B runs a container with the same id to its end: prestart, poststop.
    let out = runc("b", &["run", "--bundle", &s(&bb), &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(w.leases(), 1, "engine B's lease outlived it, or took A's");
    assert_eq!(w.tool("ihkosctl", &["0", "get", "status"]), "RUNNING");
    assert_eq!(w.count(" destroy "), 0, "torn down under A: {}", w.calls());
    // A poststop for A's very bundle and id while A's container lives (an engine
    // confused about which container stopped): the owner lives, the lease stays.
    let out = hook(
        &w,
        &ctx,
        "poststop",
        &json!({"ociVersion": "1.0.2", "id": id, "status": "stopped", "bundle": s(&ba)}),
    );
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert_eq!(w.leases(), 1, "a poststop dropped a live container's lease");
    assert_eq!(w.count(" destroy "), 0, "{}", w.calls());
    let out = runc("a", &["delete", "--force", &id]);
    assert!(out.ok(), "{}", ctx.explain(&out));
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn two_spellings_of_one_root_name_one_lease() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/sleep", "100"]));
    let root = ctx.path("state-r");
    fs::create_dir(&root).unwrap();
    let link = ctx.path("state-link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let with_root = |r: &str, args: &[&str]| {
        let mut c = Command::new(runtime_bin());
        c.args(["--root", r]).args(args).envs(w.env());
        ctx.run_cmd(c)
    };
    let spellings = [
        (format!("{}/", s(&root)), s(&root)),
        (s(&root), format!("{}/./", s(&root))),
        (s(&link), s(&root)),
    ];
    for (i, (create_as, delete_as)) in spellings.iter().enumerate() {
        let id = format!("{}-{i}", unique_id("spell"));
        let out = with_root(create_as, &["run", "--detach", "--bundle", &s(&b), &id]);
        assert!(out.ok(), "{}", ctx.explain(&out));
        assert_eq!(w.leases(), 1);
        let out = with_root(delete_as, &["delete", "--force", &id]);
        assert!(out.ok(), "{}", ctx.explain(&out));
        assert_eq!(
            w.leases(),
            0,
            "created under {create_as}, deleted under {delete_as}: the lease stayed"
        );
        w.assert_booted_and_torn_down("mckernel", i + 1);
    }
}

#[test]
fn a_corrupt_node_record_is_rebuilt_from_the_tools() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let record = w.leases.join("node-mckernel.json");
    let hold = ctx.bundle("hold", &lwk_cfg(&["/bin/sleep", "100"]));
    let join = ctx.bundle("join", &lwk_cfg(&["/bin/sh", "-c", "echo joined"]));
    let a = ctx.id("holder");
    w.rt_ok(&ctx, &["run", "--detach", "--bundle", &s(&hold), &a]);
    for garbage in ["{\"kernel\": \"mck", "", "\u{0}\u{1}not json"] {
        fs::write(&record, garbage).unwrap();
        // A joiner asks the tools, joins, and the record is whole again.
        let out = w.rt(&ctx, &["run", "--bundle", &s(&join), &ctx.id("joiner")]);
        assert!(
            out.ok(),
            "joining with a corrupt record: {}",
            ctx.explain(&out)
        );
        assert!(out.stdout.contains("joined"), "{}", out.stdout);
        let rec: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
        assert_eq!(rec["phase"], "up", "{rec}");
    }
    assert_eq!(w.count("\t0 boot\t"), 1, "{}", w.calls());
    // The last delete with a corrupt record still tears down.
    fs::write(&record, "garbage").unwrap();
    w.rt_ok(&ctx, &["delete", "--force", &a]);
    w.assert_booted_and_torn_down("mckernel", 1);
    assert!(!record.exists());
    // And the next container boots at once.
    w.rt_ok(&ctx, &["run", "--bundle", &s(&join), &ctx.id("next")]);
    w.assert_booted_and_torn_down("mckernel", 2);
}

#[test]
fn oversized_launcher_args_are_refused_before_anything_is_locked() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let mut c = lwk_cfg(&["/bin/true"]);
    c["annotations"]["run.lwk.args"] = json!(format!("-t {}", "1".repeat(200 * 1024)));
    let b = ctx.bundle("b", &c);
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("big")]);
    assert!(!out.ok(), "a 200 KB launcher argument was accepted");
    ctx.assert_says(&out, &["run.lwk.args", "at most 4096 bytes"]);
    assert!(
        ctx.log_text().len() < 4096,
        "the log is {} bytes",
        ctx.log_text().len()
    );
    assert!(!w.leases.exists(), "the lease directory was touched");
    assert_eq!(
        w.calls()
            .lines()
            .filter(|l| !l.contains("modprobe"))
            .count(),
        0,
        "{}",
        w.calls()
    );
}

#[test]
fn long_ids_are_refused_with_the_limit_before_anything_is_touched() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let long = format!("x{}", "y".repeat(240));
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/true"]));
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &long]);
    assert!(!out.ok(), "a 241-byte id was accepted for an LWK container");
    ctx.assert_says(&out, &["241 bytes", "at most 200 bytes"]);
    assert!(!w.leases.exists(), "the lease directory was touched");
    assert!(ctx.root_entries().is_empty(), "{:?}", ctx.root_entries());
    // The limit is the lease file's: a container without an LWK keeps runc's ids.
    let plain = ctx.bundle("plain", &base_config(&["/bin/true"]));
    ctx.track(&long);
    w.rt_ok(&ctx, &["run", "--bundle", &s(&plain), &long]);
    assert!(
        !ctx.log_text().contains("\"warning\""),
        "{}",
        ctx.log_text()
    );
    // The same through the OCI hook an engine calls.
    let out = hook(
        &w,
        &ctx,
        "prestart",
        &json!({"ociVersion": "1.0.2", "id": long, "pid": std::process::id(), "status": "created", "bundle": s(&b)}),
    );
    assert!(!out.ok(), "the hook accepted a 241-byte id");
    assert!(out.stderr.contains("at most 200 bytes"), "{}", out.stderr);
    assert!(!w.leases.exists(), "the lease directory was touched");
    // conexec derives a short container id from any job name.
    let rootfs = b.join("rootfs");
    let job = "j".repeat(4096);
    let mut c = w.cmd(
        &ctx,
        &[
            "conexec",
            "--job",
            &job,
            "--ppn",
            "1",
            "--lwk",
            "mckernel",
            "--rootfs",
            &s(&rootfs),
            "--",
            "/bin/echo",
            "rank-ok",
        ],
    );
    c.env_remove("LWK_KERNEL");
    let out = ctx.run_cmd(c);
    assert!(out.ok(), "{}", ctx.explain(&out));
    assert!(out.stdout.contains("rank-ok"), "{}", out.stdout);
    w.assert_booted_and_torn_down("mckernel", 1);
}

#[test]
fn a_successful_boot_clears_the_last_failure() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let marker = w.leases.join("failed-mckernel.json");
    fs::write(w.sim.join("faults"), "boot_panic once\n").unwrap();
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/true"]));
    let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("panics")]);
    assert!(!out.ok());
    assert!(marker.exists(), "no failure marker after a failed boot");
    w.rt_ok(&ctx, &["run", "--bundle", &s(&b), &ctx.id("boots")]);
    assert!(
        !marker.exists(),
        "the failure marker survived a successful boot"
    );
    w.assert_clean();
}

#[test]
fn a_relative_cwd_is_refused_as_runc_refuses_it() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    for (name, mut c) in [
        ("plain", base_config(&["/bin/true"])),
        ("lwk", lwk_cfg(&["/bin/true"])),
    ] {
        c["process"]["cwd"] = json!("tmp");
        let b = ctx.bundle(name, &c);
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id(name)]);
        assert!(!out.ok(), "{name}: a relative cwd was accepted");
        ctx.assert_says(
            &out,
            &[
                "Cwd must be an absolute path",
                "\"tmp\"",
                &s(&b.join("config.json")),
            ],
        );
        assert!(ctx.root_entries().is_empty(), "{:?}", ctx.root_entries());
    }
    assert!(!w.leases.exists(), "the lease directory was touched");
    let b = ctx.bundle("running", &base_config(&["/bin/sleep", "100"]));
    let id = ctx.id("exec");
    w.rt_ok(&ctx, &["run", "--detach", "--bundle", &s(&b), &id]);
    let out = w.rt(&ctx, &["exec", "--cwd", "tmp", &id, "/bin/pwd"]);
    assert!(!out.ok(), "exec with a relative cwd was accepted");
    ctx.assert_says(&out, &["Cwd must be an absolute path"]);
    w.rt_ok(&ctx, &["delete", "--force", &id]);
}

#[test]
fn an_oversized_config_json_is_refused_unread() {
    let ctx = Ctx::new();
    let b = ctx.bundle("b", &base_config(&["/bin/true"]));
    let config = b.join("config.json");
    // 100 MB of config.json, written in pieces (an annotation of 100 MB).
    let mut c: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    c["annotations"]["padding"] = json!("@PAD@");
    let text = serde_json::to_string(&c).unwrap();
    let (head, tail) = text.split_once("@PAD@").unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(&config).unwrap());
        f.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'p'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(tail.as_bytes()).unwrap();
    }
    assert!(fs::metadata(&config).unwrap().len() > 100 << 20);
    // With its heap held to 64 MiB, the runtime still refuses clearly (unbounded, parsing
    // this file took about 790 MB and would die of the limit instead).
    let id = ctx.id("huge");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--data={}", 64 << 20))
        .arg(runtime_bin())
        .args([
            "--root",
            &s(&ctx.root),
            "--log",
            &s(&ctx.log),
            "--log-format",
            "json",
        ])
        .args(["create", "--bundle", &s(&b), &id])
        .stdin(Stdio::null());
    let out = ctx.run_cmd(cmd);
    assert!(!out.ok(), "a 100 MB config.json was accepted");
    let log = ctx.log_text();
    assert!(
        log.contains(&s(&config)) && log.contains("at most 4194304 bytes"),
        "{}",
        ctx.explain(&out)
    );
    assert!(ctx.root_entries().is_empty(), "{:?}", ctx.root_entries());
}

#[test]
fn stale_closure_builds_and_unused_versions_are_collected_but_not_a_live_ones() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    // A launcher of our own, so that its version can change under a live container.
    let tools = ctx.path("tools");
    fs::create_dir(&tools).unwrap();
    let mcexec = tools.join("mcexec");
    fs::copy(format!("{}/mcexec", sim_bin()), &mcexec).unwrap();
    let text = fs::read_to_string(&w.config)
        .unwrap()
        .replace(&format!("{}/mcexec", sim_bin()), &s(&mcexec));
    fs::write(&w.config, text).unwrap();
    let cache = w.leases.join("closures");
    let entries = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        v.sort();
        v
    };
    let mcexecs = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|n| n.starts_with("mcexec-"))
            .cloned()
            .collect()
    };
    let hold = ctx.bundle("hold", &lwk_cfg(&["/bin/sleep", "100"]));
    let a = ctx.id("live");
    w.rt_ok(&ctx, &["run", "--detach", "--bundle", &s(&hold), &a]);
    let live = mcexecs(&entries());
    assert_eq!(live.len(), 1, "{:?}", entries());

    // What a create killed mid-build leaves, and an old version nobody uses.
    let stale = cache.join(format!(".mcexec-0123456789abcdef.tmp{}", dead_pid()));
    fs::create_dir_all(stale.join("lib")).unwrap();
    fs::write(stale.join("lib/libbig.so"), vec![0u8; 4 << 20]).unwrap();
    let old = cache.join("mcexec-00000000deadbeef");
    fs::create_dir_all(old.join("bin")).unwrap();

    // A new mcexec: its first container builds it and prunes what nobody uses, but
    // not the version the live container has mounted.
    let f = fs::OpenOptions::new().append(true).open(&mcexec).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let b = ctx.bundle("b", &lwk_cfg(&["/bin/true"]));
    w.rt_ok(&ctx, &["run", "--bundle", &s(&b), &ctx.id("new")]);
    let now = entries();
    assert!(!stale.exists() && !old.exists(), "{now:?}");
    assert!(
        now.contains(&live[0]),
        "the live container's closure went: {now:?}"
    );
    assert_eq!(mcexecs(&now).len(), 2, "{now:?}");

    // Its container gone, gc collects the old version and keeps the current one.
    w.rt_ok(&ctx, &["delete", "--force", &a]);
    let out = w.rt_ok(&ctx, &["lwk", "gc"]);
    assert!(
        out.stdout
            .contains(&format!("pruned launcher closure {}", live[0])),
        "{}",
        out.stdout
    );
    let after = entries();
    assert_eq!(mcexecs(&after).len(), 1, "{after:?}");
    assert!(!after.contains(&live[0]), "{after:?}");
    assert!(
        after.iter().any(|n| n.starts_with("lwk-runc-")),
        "{after:?}"
    );
    w.assert_booted_and_torn_down("mckernel", 1);
}
