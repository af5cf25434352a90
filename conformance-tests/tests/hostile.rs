//! Hostile input, as a container's author (or a compromised engine) can give it: LWK
//! requests with paths, shell syntax, control bytes and smuggled options; malformed,
//! deeply nested and non-UTF-8 config.json; ids that name paths; a rootfs that is a
//! symlink out of the bundle; and from inside, writes to the launcher's closure and a
//! look for the other LWK's sysfs. Each is refused with an error naming it, or
//! contained; nothing is ever reserved for a refused one.
//!
//! Elsewhere: an oversized config.json and launcher options (security_lease.rs), the
//! LWK device and partition attacked from inside (security_boundary.rs), the plain
//! runtime's invalid ids (errors.rs).

use std::fs;

use lwk_conformance::*;
use serde_json::{json, Value};

fn with_env(args: &[&str], env: &[&str]) -> Value {
    let mut c = base_config(args);
    for e in env {
        c["process"]["env"].as_array_mut().unwrap().push(json!(e));
    }
    c
}

/// `run` of a bundle whose config.json is `raw`, expected to fail saying `want`.
fn refused_raw(w: &World, ctx: &Ctx, what: &str, raw: &[u8], wants: &[&str]) {
    let b = ctx.bundle(&unique_id("h"), &base_config(&["/bin/true"]));
    fs::write(b.join("config.json"), raw).unwrap();
    let out = w.rt(ctx, &["run", "--bundle", &s(&b), &ctx.id("h")]);
    assert!(!out.ok(), "{what}: accepted");
    let text = format!("{}{}", out.stderr, ctx.log_text());
    for want in wants {
        assert!(
            text.contains(want),
            "{what}: the error does not say {want:?}:\n{text}"
        );
    }
}

fn refused(w: &World, ctx: &Ctx, what: &str, cfg: &Value, wants: &[&str]) {
    refused_raw(w, ctx, what, &serde_json::to_vec(cfg).unwrap(), wants);
}

#[test]
fn hostile_lwk_requests_and_specs_are_refused_before_anything_is_reserved() {
    let ctx = Ctx::new();
    // A site that lets containers pick a thread count and mcexec's partition count.
    let w = World::with(
        &ctx,
        &WorldOpts {
            mckernel: "allowed_args = [\"-t=\", \"-n=\", \"--mpol-threshold=\"]",
            ..Default::default()
        },
    );
    let long = format!("-t {}", "9".repeat(5000));
    let args_cases: Vec<(&str, String, &str)> = vec![
        ("a path", "-t /etc/passwd".into(), "paths are not allowed"),
        ("a bare path", "/etc/passwd".into(), "paths are not allowed"),
        ("';'", "-t 4;reboot".into(), "';'"),
        ("$()", "-t $(reboot)".into(), "'$'"),
        ("backticks", "-t `reboot`".into(), "'`'"),
        ("a newline", "-t 4\nreboot".into(), "not an option"),
        ("a NUL", "-t 4\u{0}--enable-uti".into(), "'\\0'"),
        ("overlong", long, "at most 4096 bytes"),
        (
            "not on the allow-list",
            "--enable-uti".into(),
            "not on this node's allow-list",
        ),
        (
            "a core option",
            "-c 1".into(),
            "not on this node's allow-list",
        ),
        (
            "an option inside a value",
            "--mpol-threshold=--foo=bar".into(),
            "not another option",
        ),
        (
            "an option as the value",
            "-t --foo=bar".into(),
            "not another option",
        ),
        (
            "a huge count",
            "-n 99999999999".into(),
            "larger than the launcher can take",
        ),
        ("a negative count", "-n -1".into(), "negative number"),
        ("non-ASCII", "-t 4\u{feff}".into(), "is not allowed"),
    ];
    for (what, args, want) in &args_cases {
        let env = format!("LWK_ARGS={args}");
        refused(
            &w,
            &ctx,
            &format!("LWK_ARGS with {what}"),
            &with_env(&["/bin/true"], &["LWK_KERNEL=mckernel", &env]),
            &["LWK_ARGS", want],
        );
        let mut c = base_config(&["/bin/true"]);
        c["annotations"]["run.lwk.kernel"] = json!("mckernel");
        c["annotations"]["run.lwk.args"] = json!(args);
        refused(
            &w,
            &ctx,
            &format!("run.lwk.args with {what}"),
            &c,
            &["run.lwk.args", want],
        );
    }
    for kernel in [
        "mckernel;reboot",
        "../mckernel",
        "$(mckernel)",
        "mckernel\nmos",
        "mos\u{0}",
    ] {
        let env = format!("LWK_KERNEL={kernel}");
        refused(
            &w,
            &ctx,
            &format!("LWK_KERNEL={kernel:?}"),
            &with_env(&["/bin/true"], &[&env]),
            &["LWK_KERNEL", "valid values are"],
        );
    }
    // Malformed config.json.
    let nested = format!(
        "{{\"ociVersion\":\"1.0.2\",\"annotations\":{{\"run.lwk.args\":{}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    refused_raw(
        &w,
        &ctx,
        "truncated JSON",
        b"{\"ociVersion\":",
        &["config.json", "EOF"],
    );
    refused_raw(
        &w,
        &ctx,
        "deeply nested",
        nested.as_bytes(),
        &["config.json", "invalid type: sequence"],
    );
    let mut raw = serde_json::to_vec(&with_env(&["/bin/true"], &["LWK_KERNEL=mckernel"])).unwrap();
    let at = raw.windows(8).position(|x| x == b"mckernel").unwrap();
    raw[at + 2] = 0xff;
    refused_raw(
        &w,
        &ctx,
        "non-UTF-8 bytes",
        &raw,
        &["config.json", "invalid unicode"],
    );
    refused_raw(
        &w,
        &ctx,
        "a lone surrogate",
        br#"{"ociVersion":"1.0.2","annotations":{"run.lwk.kernel":"\udc80"}}"#,
        &["config.json", "surrogate"],
    );
    refused(
        &w,
        &ctx,
        "no process",
        &{
            let mut c = with_env(&["/bin/true"], &["LWK_KERNEL=mckernel"]);
            c["process"]["args"] = json!([]);
            c
        },
        &["args"],
    );
    // Ids that name paths, for a container that asks for an LWK.
    let b = ctx.bundle("ids", &with_env(&["/bin/true"], &["LWK_KERNEL=mckernel"]));
    for id in ["../x", "a/b", "..", "/abs", ".hidden/../../x"] {
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), id]);
        assert!(!out.ok(), "id {id:?} accepted");
        let text = format!("{}{}", out.stderr, ctx.log_text());
        assert!(text.contains("invalid container id"), "{id:?}: {text}");
        assert!(!ctx.path("x").exists(), "{id:?} escaped the state root");
    }
    assert_eq!(
        w.count(" reserve "),
        0,
        "a refused request reached the LWK: {}",
        w.calls()
    );
    assert_eq!(w.count("lwkctl\t-c"), 0, "{}", w.calls());
    w.assert_node_clean(&ctx);
    say(&format!(
        "hostile input: {} launcher-option cases twice (env and annotation), 5 kernels, 5 specs, 5 ids: all refused, nothing reserved",
        args_cases.len()
    ));
}

#[test]
fn a_rootfs_symlinked_out_of_the_bundle_is_left_untouched() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    for kernel in ["mckernel", "mos"] {
        // The bundle's rootfs is a symlink to a directory elsewhere (as a shared image
        // cache gives it); the LWK set-up must write nothing into it.
        let outside = ctx.path(&format!("elsewhere-{kernel}"));
        build_rootfs(&outside);
        let mut c = with_env(&["/bin/sh", "-c", "echo ran; ls /dev/.lwk"], &[]);
        c["annotations"]["run.lwk.kernel"] = json!(kernel);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/dev");
        let b = ctx.bundle(&format!("sym-{kernel}"), &c);
        fs::remove_dir_all(b.join("rootfs")).unwrap();
        std::os::unix::fs::symlink(&outside, b.join("rootfs")).unwrap();
        let before = (snapshot(&outside), snapshot(&b));
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id(kernel)]);
        assert!(
            out.ok() && out.stdout.contains("ran"),
            "{}",
            ctx.explain(&out)
        );
        assert_eq!(
            (snapshot(&outside), snapshot(&b)),
            before,
            "{kernel}: written to"
        );
    }
    w.assert_node_clean(&ctx);
}

#[test]
fn a_container_cannot_write_the_launcher_closure_nor_see_the_other_lwk() {
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let closures = w.leases.join("closures");
    let script = "for f in /dev/.lwk/mcexec/bin/mcexec /dev/.lwk/init/bin/lwk-runc /dev/.lwk/mcexec/new; do \
                    if echo x > $f 2>/dev/null || touch $f 2>/dev/null; then echo WROTE $f; fi; done; \
                  mount -o remount,rw /dev/.lwk/mcexec 2>/dev/null && echo REMOUNTED; \
                  ls /sys/kernel/mOS 2>/dev/null && echo SAW-MOS; \
                  grep -c mOS /proc/self/mountinfo; \
                  ls /dev/mcd0 2>/dev/null && echo SAW-MCD; echo done";
    let b = ctx.bundle(
        "w",
        &with_env(&["/bin/sh", "-c", script], &["LWK_KERNEL=mckernel"]),
    );
    // Twice: the first run builds the closures, the second attacks ones that exist.
    let mut before = Vec::new();
    for round in 0..2 {
        let out = w.rt(&ctx, &["run", "--bundle", &s(&b), &ctx.id("w")]);
        assert!(
            out.ok() && out.stdout.contains("done"),
            "{}",
            ctx.explain(&out)
        );
        for bad in ["WROTE", "REMOUNTED", "SAW-MOS", "SAW-MCD"] {
            assert!(!out.stdout.contains(bad), "{bad}: {}", out.stdout);
        }
        assert!(
            out.stdout.lines().any(|l| l.trim() == "0"),
            "a mOS mount: {}",
            out.stdout
        );
        if round == 0 {
            before = snapshot(&closures);
        }
    }
    assert_eq!(snapshot(&closures), before, "the launcher closure changed");
    w.assert_node_clean(&ctx);
}
