//! Fuzzing of what containers and admins hand lwk-runc: the config parser, the policy
//! (annotations and env to a request) and the spec rewrite. Property-based: proptest
//! generates inputs (hostile bytes among them), each checked against the invariants
//! below, and shrinks a failing one to a minimal case. `cargo test` runs a bounded
//! number of cases; `LWK_FUZZ_CASES=1000000 cargo test --release fuzz::` runs a long
//! campaign (PROPTEST_MAX_SHRINK_ITERS etc. apply as usual).
//!
//! Invariants:
//! - the parser never panics, and a config it accepts holds what validation promises;
//! - the policy never panics, and a request it grants passes only allow-listed options
//!   whose values are plain (no path, no shell, no control byte, no option, no number
//!   the launcher's `int` cannot hold);
//! - a refused request never touches the node: `prepare_create` fails before the lease
//!   directory exists;
//! - a rewrite never adds a host path that is not in the node facts (the config's tools
//!   and devices), never drops or changes a mount of the caller's, and keeps the
//!   caller's args, after the launcher's, unchanged.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::config::Config;
use crate::lwk::policy::{self, MAX_ARGS_BYTES, MAX_TOKEN_BYTES};
use crate::lwk::rewrite::{self, NodeFacts};
use crate::lwk::LwkRequest;

/// The config parser on `text`.
pub fn check_config(text: &str) {
    let Ok(c) = Config::parse(text, Path::new("/fuzz/lwk-runc.toml")) else {
        return;
    };
    for (key, p) in [
        ("lease_dir", &c.lease_dir),
        ("patchelf", &c.patchelf),
        ("mckernel.ihkconfig", &c.mckernel.ihkconfig),
        ("mckernel.ihkosctl", &c.mckernel.ihkosctl),
        ("mckernel.mcexec", &c.mckernel.mcexec),
        ("mckernel.image", &c.mckernel.image),
    ] {
        assert!(p.is_absolute(), "{key} accepted relative: {}", p.display());
    }
    assert!((1..=3600).contains(&c.lock_timeout_secs));
    assert!((1..=86_400).contains(&c.tool_timeout_secs));
    assert!(c.pid_base >= 2 && c.pid_stride >= 2);
    if c.mckernel.enabled && c.mckernel.boot_mode == crate::config::BootMode::Tools {
        assert!(!c.mckernel.cpus.trim().is_empty());
        assert!(c.mckernel.kargs.split_whitespace().any(|w| w == "hidos"));
    }
}

/// The policy on a container's annotations and env.
pub fn check_policy(cfg: &Config, ann: &HashMap<String, String>, env: &[String]) {
    let Ok(Some(req)) = policy::decide(cfg, Some(ann), env) else {
        return;
    };
    assert!(cfg.enabled(req.kind));
    check_granted(cfg, &req);
}

/// What a granted request may carry.
fn check_granted(cfg: &Config, req: &LwkRequest) {
    let allowed = cfg.allowed_args(req.kind);
    let total: usize = req.args.iter().map(|a| a.len() + 1).sum();
    assert!(total <= MAX_ARGS_BYTES + 1, "{} bytes of options", total);
    let mut want_value = false;
    for a in &req.args {
        assert!(a.len() <= 2 * MAX_TOKEN_BYTES + 1, "{a:?}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,:@=+%".contains(c)),
            "{a:?} carries a character outside the plain set"
        );
        let (name, value) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        let value = if want_value {
            want_value = false;
            Some(a.as_str())
        } else {
            let takes = allowed.iter().any(|x| x.strip_suffix('=') == Some(name));
            let flag = allowed.iter().any(|x| x == name);
            assert!(takes || flag, "{a:?} is not on the allow-list {allowed:?}");
            want_value = takes && value.is_none();
            value
        };
        if let Some(v) = value {
            assert!(!v.is_empty() && !v.starts_with('-'), "value {v:?} of {a:?}");
            if v.bytes().all(|b| b.is_ascii_digit()) {
                assert!(v.parse::<i32>().is_ok(), "value {v:?} overflows an int");
            }
        }
    }
    assert!(
        !want_value,
        "an option is left without its value: {:?}",
        req.args
    );
}

/// A refused request never touches the node: `prepare_create` fails before the lease
/// directory (`cfg.lease_dir`, which must not exist yet) is made.
pub fn check_refusal_touches_nothing(cfg: &Config, spec: &Spec) {
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    if policy::decide(cfg, spec.annotations().as_ref(), &env).is_ok() {
        return;
    }
    assert!(!cfg.lease_dir.exists());
    let r = crate::lwk::prepare_create(
        cfg,
        Path::new("/fuzz/root"),
        "fuzz",
        Path::new("/"),
        spec,
        None,
    );
    assert!(
        matches!(r, Err(crate::lwk::LwkError::Policy { .. })),
        "a refused request got past the policy: {:?}",
        r.err().map(|e| e.to_string())
    );
    assert!(
        !cfg.lease_dir.exists(),
        "a refused request made the lease directory"
    );
}

/// The rewrite of `spec` for `req` with `facts`.
pub fn check_rewrite(spec: &Spec, req: &LwkRequest, facts: &NodeFacts) {
    let rootfs = Path::new("/fuzz/bundle/rootfs");
    let Ok(out) = rewrite::rewrite(spec, req, facts, rootfs) else {
        return;
    };
    let before = spec.mounts().clone().unwrap_or_default();
    let after = out.mounts().clone().unwrap_or_default();
    // The caller's mounts all stay, unchanged and in order.
    let mut it = after.iter();
    for m in &before {
        assert!(it.any(|x| x == m), "mount {m:?} was dropped or changed");
    }
    // Every added host path is a node fact.
    let known: Vec<&Path> = facts
        .closures
        .iter()
        .map(|(h, _)| h.as_path())
        .chain(facts.devices.iter().map(|d| d.host.as_path()))
        .chain(facts.binds.iter().map(|b| b.host.as_path()))
        .collect();
    for m in after.iter().filter(|m| !before.contains(m)) {
        let src = m.source().clone().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        if typ == "tmpfs" {
            assert_eq!(src, Path::new("tmpfs"), "{m:?}");
            continue;
        }
        assert!(
            known.contains(&src.as_path()),
            "added host path {} is not a node fact",
            src.display()
        );
        let opts = m.options().clone().unwrap_or_default();
        let writable = opts.iter().any(|o| o == "rw");
        let may_write = facts.devices.iter().any(|d| d.host == src)
            || facts.binds.iter().any(|b| b.host == src && b.writable);
        assert!(!writable || may_write, "{} bound writable", src.display());
    }
    // The caller's args come last, untouched, after the launcher's.
    let orig = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let args = out
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let expect: Vec<String> = facts
        .head
        .iter()
        .chain(&req.args)
        .chain(&facts.tail)
        .chain(&orig)
        .cloned()
        .collect();
    assert_eq!(args, expect);
    assert_eq!(
        out.root().as_ref().map(|r| r.path().as_path()),
        Some(rootfs)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwk::rewrite::{BindFact, DeviceFact, DeviceKind};
    use crate::lwk::LwkKind;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// Cases per property: a bounded run in `cargo test`; `LWK_FUZZ_CASES` for a campaign.
    fn cases() -> u32 {
        std::env::var("LWK_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Strings a hostile user writes: plain words, option-like tokens, paths, shell
    /// syntax, control and non-ASCII characters, and numbers of every size.
    fn hostile() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            "[a-z0-9]{0,8}",
            "-{1,2}[a-z-]{1,20}(=[a-z0-9=-]{0,8})?",
            "-[tnR] [0-9]{1,12}",
            "-[tn] -[0-9]{1,4}",
            "/[a-z/.]{0,12}",
            Just("$(reboot)".to_string()),
            Just("`id`".to_string()),
            Just(";".to_string()),
            Just("\n".to_string()),
            Just("\u{0}".to_string()),
            Just("\u{feff}".to_string()),
            "\\PC{0,4}",
            "[0-9]{1,25}",
            Just("--mpol-threshold=--enable-uti".to_string()),
            Just("-t".to_string()),
        ];
        prop::collection::vec(token, 0..8).prop_map(|v| v.join(" "))
    }

    fn kernel() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("mckernel".to_string()),
            Just("mos".to_string()),
            Just("none".to_string()),
            Just("McKernel".to_string()),
            "\\PC{0,10}",
        ]
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        c.mckernel.enabled = true;
        c.mos.enabled = true;
        c.mckernel.allowed_args.push("-n=".into());
        c
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn the_config_parser_never_panics_and_keeps_its_promises(
            lines in prop::collection::vec(prop_oneof![
                "[a-z_]{1,20} = \"[a-z0-9/ .=-]{0,20}\"",
                "[a-z_]{1,20} = -?[0-9]{1,12}",
                "[a-z_]{1,20} = (true|false)",
                Just("[mckernel]".to_string()),
                Just("[mos]".to_string()),
                Just("[images]".to_string()),
                Just("enabled = true".to_string()),
                Just("lease_dir = \"relative\"".to_string()),
                Just("lock_timeout_secs = 0".to_string()),
                Just("tool_timeout_secs = 99999999999".to_string()),
                Just("cpus = \"\"".to_string()),
                Just("kargs = \"nohidos\"".to_string()),
                Just("allowed_args = [\"-t=\", 3]".to_string()),
                "\\PC{0,30}",
            ], 0..12)
        ) {
            check_config(&lines.join("\n"));
        }

        #[test]
        fn the_policy_grants_only_plain_allow_listed_options(
            k_ann in prop::option::of(kernel()),
            k_env in prop::option::of(kernel()),
            a_ann in prop::option::of(hostile()),
            a_env in prop::option::of(hostile()),
            sandbox in any::<bool>(),
        ) {
            let mut ann = HashMap::new();
            if let Some(k) = k_ann { ann.insert(policy::ANN_KERNEL.to_string(), k); }
            if let Some(a) = a_ann { ann.insert(policy::ANN_ARGS.to_string(), a); }
            if sandbox { ann.insert("io.kubernetes.cri.container-type".into(), "sandbox".into()); }
            let mut env = vec!["PATH=/bin".to_string()];
            if let Some(k) = k_env { env.push(format!("{}={k}", policy::ENV_KERNEL)); }
            if let Some(a) = a_env { env.push(format!("{}={a}", policy::ENV_ARGS)); }
            check_policy(&cfg(), &ann, &env);
            let granted = policy::decide(&cfg(), Some(&ann), &env);
            if sandbox {
                prop_assert_eq!(granted, Ok(None));
            }
            // Refused ones touch nothing.
            let dir = std::env::temp_dir().join(format!("lwk-fuzz-{}", std::process::id()));
            let mut c = cfg();
            c.lease_dir = dir.join("never");
            let mut spec = Spec::default();
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_env(Some(env));
            spec.set_process(Some(p));
            spec.set_annotations(Some(ann));
            check_refusal_touches_nothing(&c, &spec);
        }

        #[test]
        fn a_rewrite_adds_only_node_facts_and_keeps_the_callers_spec(
            mounts in prop::collection::vec((
                prop_oneof!["/[a-z/.]{0,16}", Just("/dev".to_string()), Just("/dev/pts".to_string()), Just("/proc".to_string())],
                prop_oneof![Just("bind"), Just("tmpfs"), Just("proc"), Just("devpts"), Just("overlay")],
                "/[a-z/.]{0,16}",
                any::<bool>(),
            ), 0..8),
            args in prop::collection::vec("\\PC{0,10}", 0..4),
            req_args in prop::collection::vec("[a-z0-9=-]{1,8}", 0..4),
            kind in prop_oneof![Just(LwkKind::McKernel), Just(LwkKind::Mos)],
            char_dev in any::<bool>(),
            masked in prop::collection::vec("/(proc|sys)/[a-z/]{0,10}", 0..4),
        ) {
            let mut spec: Spec = Spec::default();
            let ms: Vec<oci_spec::runtime::Mount> = mounts
                .into_iter()
                .map(|(dest, typ, src, ro)| {
                    let mut m = oci_spec::runtime::Mount::default();
                    m.set_destination(PathBuf::from(dest));
                    m.set_typ(Some(typ.to_string()));
                    m.set_source(Some(PathBuf::from(src)));
                    m.set_options(Some(vec![if ro { "ro" } else { "rw" }.to_string()]));
                    m
                })
                .collect();
            spec.set_mounts(Some(ms));
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(args));
            spec.set_process(Some(p));
            let mut linux = spec.linux().clone().unwrap_or_default();
            linux.set_masked_paths(Some(masked));
            spec.set_linux(Some(linux));
            let facts = NodeFacts {
                closures: vec![(PathBuf::from("/lease/closures/mcexec-1"), PathBuf::from("/dev/.lwk/mcexec"))],
                head: vec!["/dev/.lwk/mcexec/bin/mcexec".into()],
                tail: vec!["0".into()],
                devices: vec![DeviceFact {
                    host: PathBuf::from("/dev/mcos0"),
                    container: PathBuf::from("/dev/mcos0"),
                    kind: if char_dev { DeviceKind::Char { major: 240, minor: 0 } } else { DeviceKind::File },
                }],
                binds: vec![BindFact { host: PathBuf::from("/sys/kernel/mOS"), container: PathBuf::from("/sys/kernel/mOS"), writable: false }],
                tmpfs: vec![PathBuf::from("/sys/kernel")],
                unmask: vec!["/proc/mcos0".into()],
                personalities: vec![0x0040000],
            };
            check_rewrite(&spec, &LwkRequest { kind, args: req_args }, &facts);
        }

        #[test]
        fn any_json_spec_rewrites_within_the_invariants_or_is_refused(
            json in prop_oneof![
                "\\PC{0,64}",
                Just(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"]},"mounts":[{"destination":"/dev","type":"bind","source":"/dev"}]}"#.to_string()),
                Just(r#"{"ociVersion":"1.0.2","root":{"path":"../../etc"},"process":{"cwd":"/","args":["sh"]}}"#.to_string()),
            ],
        ) {
            if let Ok(spec) = serde_json::from_str::<Spec>(&json) {
                let req = LwkRequest { kind: LwkKind::McKernel, args: vec![] };
                check_rewrite(&spec, &req, &NodeFacts::default());
            }
        }
    }
}
