//! podman end to end: podman 4 drives the runtime through conmon, registered by name
//! with the shipped `config/engines/containers.conf` (so podman parses its JSON logs),
//! with private storage and no network. Without podman it is skipped, except under
//! `CI=true`, where it fails.

use std::fs;

use lwk_conformance::*;

#[test]
fn podman_end_to_end() {
    require_root();
    const TEST: &str = "podman_end_to_end";
    if engine_skipped_by_user(TEST, "podman") {
        return;
    }
    let Some(podman) = engine_tool(TEST, "podman", "podman") else {
        return;
    };
    let ctx = Ctx::new();
    let w = World::new(&ctx, "");
    let rootfs = ctx.bundle("b", &base_config(&["true"])).join("rootfs");

    // conmon hands the runtime a clean environment: a wrapper points it at the test's
    // simulated node, as /etc/lwk-runc/config.toml would on a real one.
    let wrapper = ctx.path("lwk-runc-wrapper");
    let [(k1, v1), (k2, v2)] = w.env();
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nexport {k1}={} {k2}={}\nexec {} \"$@\"\n",
            s(&v1),
            s(&v2),
            s(&runtime_bin())
        ),
    );
    let shipped = fs::read_to_string(workspace_root().join("config/engines/containers.conf"))
        .expect("config/engines/containers.conf");
    assert!(
        shipped.contains("\"/usr/bin/lwk-runc\"") && shipped.contains("\"lwk-runc\"]"),
        "containers.conf must register lwk-runc and list it in runtime_supports_json"
    );
    let conf = ctx.path("containers.conf");
    fs::write(&conf, shipped.replace("/usr/bin/lwk-runc", &s(&wrapper))).unwrap();

    let state = ctx.path("podman");
    let podman_cmd = |args: &[&str]| {
        let mut c = private_podman(&podman, &state);
        c.env("CONTAINERS_CONF", &conf).args(args);
        ctx.run_cmd(c)
    };
    let rootfs_s = s(&rootfs);
    // podman run --rm … [options] --rootfs DIR COMMAND…
    let run_args = podman_run_args();
    let podman_run = |opts: &[&str], cmd: &[&str]| {
        let mut head: Vec<&str> = run_args.iter().map(String::as_str).collect();
        head.extend(["--runtime", "lwk-runc"]);
        podman_cmd(&[&head[..], opts, &["--rootfs", &rootfs_s], cmd].concat())
    };

    let out = podman_run(&[], &["/bin/sh", "-c", "echo hi-podman; exit 3"]);
    assert_eq!(out.code(), Some(3), "{}", ctx.explain(&out));
    assert_eq!(out.stdout.trim(), "hi-podman");

    // The runtime's error reaches the user through podman.
    let out = podman_run(&[], &["/no/such/binary"]);
    assert!(!out.ok(), "{}", ctx.explain(&out));
    assert!(
        out.stderr.contains("/no/such/binary"),
        "podman's error must carry the runtime's message naming the binary: {}",
        out.stderr
    );

    if runtime_is_runc() {
        say("SKIPPED podman on the simulated LWK: runc has no LWK layer");
    } else {
        let show = "grep Cpus_allowed_list /proc/self/status; tr '\\0' ' ' < /proc/$PPID/cmdline";
        let out = podman_run(&["-e", "LWK_KERNEL=mckernel"], &["/bin/sh", "-c", show]);
        assert!(out.ok(), "{}", ctx.explain(&out));
        assert!(
            out.stdout.contains("Cpus_allowed_list:\t1\n") && out.stdout.contains("mcexec"),
            "not run under mcexec on the LWK CPU: {}",
            out.stdout
        );
        // Under podman's default seccomp profile too, a container cannot shut the LWK
        // down (the launcher's closure under ihkosctl's name).
        let attack = "ln -sf /dev/.lwk/mcexec/bin/mcexec /tmp/ihkosctl; \
                      /tmp/ihkosctl 0 shutdown; echo rc=$?";
        let out = podman_run(&["-e", "LWK_KERNEL=mckernel"], &["/bin/sh", "-c", attack]);
        assert!(
            out.stdout.contains("rc=255") && out.stderr.contains("error: shutting down"),
            "ihkosctl shutdown from a container was not refused: {}",
            ctx.explain(&out)
        );
        assert_eq!(w.count("\t0 shutdown\t"), 0, "{}", w.calls());
        w.assert_booted_and_torn_down("mckernel", 2);
    }
    let out = podman_cmd(&["ps", "-aq"]);
    assert_eq!(
        out.stdout.trim(),
        "",
        "podman left containers: {}",
        out.stdout
    );
}
