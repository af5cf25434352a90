//! Who gets an LWK: spec annotations + process env + config -> `Option<LwkRequest>`.
//!
//! Sources, first match wins: annotation `run.lwk.kernel`, env `LWK_KERNEL` (Docker 20.10
//! has no `--annotation`), the config's `default_kernel`. Launcher options come from
//! `run.lwk.args` or `LWK_ARGS` and are checked token by token against the kernel's
//! allow-list: they end up on a root-run launcher's command line, so anything that could
//! name a file, smuggle a positional argument or reach a shell is refused here, before
//! any lock is taken or anything is reserved. Lengths are capped too ([`MAX_ARGS_BYTES`],
//! [`MAX_TOKEN_BYTES`]): launcher options are short, and a huge value would otherwise
//! pass, boot the LWK, and fail only at `start` with E2BIG.
//!
//! Processes started with `exec` run on Linux unless their own env asks for the LWK.
//! Engines build an exec'd process's env from the container's (Docker merges the
//! container's env under `docker exec -e`), so an `LWK_KERNEL` the container itself
//! carries is not a request. The rule ([`decide_exec`]), first match wins:
//! - `LWK_EXEC=mckernel|mos|none` in the process's env decides, inherited or not: it is
//!   the variable for exec'd processes. `docker exec -e LWK_EXEC=mckernel` asks for one
//!   process; a container started with `-e LWK_EXEC=mckernel` runs every exec on the LWK
//!   (`-e LWK_EXEC=none` opts one out). `LWK_EXEC` has no effect on the container's own
//!   process.
//! - `LWK_KERNEL` asks only with a value that was not inherited, i.e. the container's own
//!   env has no `LWK_KERNEL` entry or a different one (compared as written).
//!   `lwk-runc exec -e LWK_KERNEL=...` always counts as the process's own, since the
//!   runtime sees the flag. Through an engine (`--process`), the inherited value cannot
//!   be told apart from the same value given again (`docker exec -e LWK_KERNEL=mckernel`
//!   into a container started with it hands the runtime the very same env), which is
//!   why `LWK_EXEC` exists.
//!
//! Annotations and the config's default never apply to exec.

use std::collections::HashMap;

use crate::config::Config;
use crate::lwk::{LwkKind, LwkRequest};

pub const ANN_KERNEL: &str = "run.lwk.kernel";
pub const ANN_ARGS: &str = "run.lwk.args";
pub const ENV_KERNEL: &str = "LWK_KERNEL";
pub const ENV_ARGS: &str = "LWK_ARGS";
/// Where exec'd processes run (see the module doc).
pub const ENV_EXEC: &str = "LWK_EXEC";
/// containerd/CRI marks pod sandbox (pause) containers with this.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI-O spells it differently.
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
/// The longest launcher-option text (`run.lwk.args`, `LWK_ARGS`) a container may give.
pub const MAX_ARGS_BYTES: usize = 4096;
/// The longest single launcher option or value.
pub const MAX_TOKEN_BYTES: usize = 256;
/// How much of a refused value an error message shows.
const SHOWN: usize = 64;

/// `v`, cut to [`SHOWN`] characters for an error message.
fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}… ({} bytes)", &v[..i], v.len()),
        None => v.to_string(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{source_name} asks for LWK kernel {value:?}; valid values are \"mckernel\", \"mos\" and \"none\"")]
    UnknownKernel { source_name: String, value: String },
    #[error("{source_name} asks for {kind}, but {kind} is not enabled on this node (set [{section}] enabled = true in the lwk-runc config, or run the container without an LWK)")]
    NotEnabled {
        source_name: String,
        kind: LwkKind,
        section: &'static str,
    },
    #[error("{source_name}: launcher argument {token:?} refused: {reason}")]
    BadArg {
        source_name: String,
        token: String,
        reason: String,
    },
    #[error("{source_name} is {len} bytes long; launcher options may take at most {MAX_ARGS_BYTES} bytes (each option or value at most {MAX_TOKEN_BYTES}); give fewer or shorter options")]
    TooLong { source_name: String, len: usize },
}

/// Where the request came from, for error messages.
enum Origin {
    Annotation,
    Env,
    Default,
}

/// Decide for a container being created. `annotations` and `env` are the spec's.
pub fn decide(
    cfg: &Config,
    annotations: Option<&HashMap<String, String>>,
    env: &[String],
) -> Result<Option<LwkRequest>, PolicyError> {
    let ann = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    // A pod's sandbox only holds namespaces; booting a kernel for it would be waste.
    if ann(CRI_CONTAINER_TYPE) == Some("sandbox") || ann(CRIO_CONTAINER_TYPE) == Some("sandbox") {
        return Ok(None);
    }
    let (value, origin) = if let Some(v) = ann(ANN_KERNEL) {
        (Some(v.to_string()), Origin::Annotation)
    } else if let Some(v) = env_get(env, ENV_KERNEL) {
        (Some(v.to_string()), Origin::Env)
    } else {
        (None, Origin::Default)
    };
    let kind = match value {
        Some(v) => parse_kernel(&v, origin_name(&origin, ANN_KERNEL, ENV_KERNEL))?,
        None => cfg.default_kernel.kind(),
    };
    let Some(kind) = kind else { return Ok(None) };
    if !cfg.enabled(kind) {
        return Err(PolicyError::NotEnabled {
            source_name: origin_name(&origin, ANN_KERNEL, ENV_KERNEL).into(),
            kind,
            section: kind.config_section(),
        });
    }
    let (args_text, args_src) = match (ann(ANN_ARGS), env_get(env, ENV_ARGS)) {
        (Some(a), _) => (a, ANN_ARGS),
        (None, Some(e)) => (e, ENV_ARGS),
        (None, None) => ("", ENV_ARGS),
    };
    let args = check_args(cfg.allowed_args(kind), args_text, args_src)?;
    Ok(Some(LwkRequest { kind, args }))
}

/// Whether an env names an LWK at all (only then does an exec need the container's env
/// to compare with).
pub fn names_lwk(env: &[String]) -> bool {
    env_get(env, ENV_KERNEL).is_some()
}

/// The entries of the container's env an exec'd process may carry without asking for an
/// LWK: all of them, except `LWK_KERNEL` when the exec's own command line sets it
/// (`exec -e LWK_KERNEL=…` is the process's own wish, even with the container's value).
pub fn exec_inherited(mut container_env: Vec<String>, cli_env: &[String]) -> Vec<String> {
    if names_lwk(cli_env) {
        let key = format!("{ENV_KERNEL}=");
        container_env.retain(|e| !e.starts_with(&key));
    }
    container_env
}

/// Decide for a process started by `exec` (see the module doc): `env` is the process's
/// env, `inherited` the container's own env entries it may have inherited. Only an
/// `LWK_KERNEL` entry that is not among the inherited ones asks; no default, no
/// annotations, so a debugging shell exec'd into an LWK container runs on Linux.
pub fn decide_exec(
    cfg: &Config,
    env: &[String],
    inherited: &[String],
) -> Result<Option<LwkRequest>, PolicyError> {
    let (v, source_name) = match (env_get(env, ENV_EXEC), env_get(env, ENV_KERNEL)) {
        (Some(v), _) => (v, ENV_EXEC),
        (None, Some(v)) if env_get(inherited, ENV_KERNEL) != Some(v) => (v, ENV_KERNEL),
        _ => return Ok(None),
    };
    let Some(kind) = parse_kernel(v, source_name)? else {
        return Ok(None);
    };
    if !cfg.enabled(kind) {
        return Err(PolicyError::NotEnabled {
            source_name: source_name.into(),
            kind,
            section: kind.config_section(),
        });
    }
    let args = check_args(
        cfg.allowed_args(kind),
        env_get(env, ENV_ARGS).unwrap_or(""),
        ENV_ARGS,
    )?;
    Ok(Some(LwkRequest { kind, args }))
}

fn origin_name(o: &Origin, ann: &'static str, env: &'static str) -> &'static str {
    match o {
        Origin::Annotation => ann,
        Origin::Env => env,
        Origin::Default => "config default_kernel",
    }
}

fn parse_kernel(v: &str, source_name: &str) -> Result<Option<LwkKind>, PolicyError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "mckernel" => Ok(Some(LwkKind::McKernel)),
        "mos" => Ok(Some(LwkKind::Mos)),
        "none" | "" | "linux" => Ok(None),
        _ => Err(PolicyError::UnknownKernel {
            source_name: source_name.into(),
            value: shown(v),
        }),
    }
}

/// Last `KEY=` entry wins, as engines that merge image and user env intend.
pub fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// Characters a launcher option or value may contain. No `/` (no paths), no shell
/// metacharacters, no whitespace or quotes: what is left can only be a number, a size,
/// a list or a keyword.
fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ',' | ':' | '@' | '=' | '+' | '%')
}

fn char_reason(c: char) -> String {
    if c == '/' {
        "paths are not allowed in launcher arguments".to_string()
    } else {
        format!("character {c:?} is not allowed (no shell metacharacters, quotes or control characters)")
    }
}

/// Split `text` on whitespace and check every token against `allowed`
/// (entries ending in `=` take a value). Returns the normalized argument list.
pub fn check_args(
    allowed: &[String],
    text: &str,
    source_name: &str,
) -> Result<Vec<String>, PolicyError> {
    if text.len() > MAX_ARGS_BYTES {
        return Err(PolicyError::TooLong {
            source_name: source_name.into(),
            len: text.len(),
        });
    }
    let bad = |token: &str, reason: String| PolicyError::BadArg {
        source_name: source_name.into(),
        token: shown(token),
        reason,
    };
    let lookup = |name: &str| -> Option<bool> {
        allowed.iter().find_map(|a| match a.strip_suffix('=') {
            Some(n) if n == name => Some(true),
            None if a == name => Some(false),
            _ => None,
        })
    };
    let mut out = Vec::new();
    let mut tokens = text.split_whitespace();
    while let Some(tok) = tokens.next() {
        if tok.len() > MAX_TOKEN_BYTES {
            return Err(bad(
                tok,
                format!("longer than {MAX_TOKEN_BYTES} bytes; no launcher option is"),
            ));
        }
        if let Some(c) = tok.chars().find(|c| !safe_char(*c)) {
            return Err(bad(tok, char_reason(c)));
        }
        if !tok.starts_with('-') {
            // A bare word would become a positional argument: mcexec takes a leading digit
            // as the OS instance and everything after it as the program to run.
            return Err(bad(
                tok,
                "not an option; only options from the allow-list may be passed".into(),
            ));
        }
        let (name, inline) = match tok.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (tok, None),
        };
        let takes_value = lookup(name).ok_or_else(|| {
            bad(
                tok,
                format!(
                    "option {name} is not on this node's allow-list ({})",
                    allowed.join(" ")
                ),
            )
        })?;
        // A value, inline or the next token, is a value: never an option (or a negative
        // count) and never a number the launcher's `int` cannot hold.
        let check_value = |v: &str| -> Result<(), PolicyError> {
            if v.len() > MAX_TOKEN_BYTES {
                return Err(bad(
                    v,
                    format!("longer than {MAX_TOKEN_BYTES} bytes; no launcher value is"),
                ));
            }
            if let Some(c) = v.chars().find(|c| !safe_char(*c)) {
                return Err(bad(v, char_reason(c)));
            }
            if v.starts_with('-') {
                return Err(bad(
                    v,
                    format!("option {name} needs a value, not another option or a negative number"),
                ));
            }
            if v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<i32>().is_err() {
                return Err(bad(
                    v,
                    format!(
                        "option {name}: {v} is larger than the launcher can take (at most {})",
                        i32::MAX
                    ),
                ));
            }
            Ok(())
        };
        match (takes_value, inline) {
            (false, None) => out.push(tok.to_string()),
            (false, Some(_)) => return Err(bad(tok, format!("option {name} takes no value"))),
            (true, Some(v)) if !v.is_empty() => {
                check_value(v)?;
                out.push(tok.to_string())
            }
            (true, Some(_)) => return Err(bad(tok, format!("option {name} needs a value"))),
            (true, None) => {
                let v = tokens
                    .next()
                    .ok_or_else(|| bad(tok, format!("option {name} needs a value")))?;
                check_value(v)?;
                if name.starts_with("--") {
                    out.push(format!("{name}={v}"));
                } else {
                    out.push(name.to_string());
                    out.push(v.to_string());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.mckernel.enabled = true;
        c.mos.enabled = true;
        c
    }

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn ann(v: &[(&str, &str)]) -> HashMap<String, String> {
        v.iter()
            .map(|(k, x)| (k.to_string(), x.to_string()))
            .collect()
    }

    #[test]
    fn nothing_requested_means_none() {
        assert_eq!(decide(&cfg(), None, &env(&["PATH=/bin"])), Ok(None));
    }

    #[test]
    fn annotation_beats_env() {
        let a = ann(&[(ANN_KERNEL, "mos")]);
        let r = decide(&cfg(), Some(&a), &env(&["LWK_KERNEL=mckernel"]))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, LwkKind::Mos);
        let a = ann(&[(ANN_KERNEL, "none")]);
        assert_eq!(
            decide(&cfg(), Some(&a), &env(&["LWK_KERNEL=mckernel"])),
            Ok(None)
        );
    }

    #[test]
    fn env_selects_and_parses_args() {
        let r = decide(
            &cfg(),
            None,
            &env(&[
                "LWK_KERNEL=mckernel",
                "LWK_ARGS=-t 4 --mpol-threshold 1M --disable-sched-yield",
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.kind, LwkKind::McKernel);
        assert_eq!(
            r.args,
            vec!["-t", "4", "--mpol-threshold=1M", "--disable-sched-yield"]
        );
    }

    #[test]
    fn default_kernel_applies_but_not_to_sandboxes() {
        let mut c = cfg();
        c.default_kernel = crate::config::KernelChoice::Mckernel;
        assert!(decide(&c, None, &[]).unwrap().is_some());
        let a = ann(&[(CRI_CONTAINER_TYPE, "sandbox"), (ANN_KERNEL, "mckernel")]);
        assert_eq!(decide(&c, Some(&a), &[]), Ok(None));
    }

    #[test]
    fn disabled_or_unknown_kernel_is_an_error() {
        let c = Config::default();
        let e = decide(&c, None, &env(&["LWK_KERNEL=mckernel"])).unwrap_err();
        assert!(e.to_string().contains("not enabled"), "{e}");
        let e = decide(&cfg(), None, &env(&["LWK_KERNEL=windows"])).unwrap_err();
        assert!(e.to_string().contains("\"windows\""), "{e}");
    }

    #[test]
    fn hostile_args_refused() {
        let c = cfg();
        for (a, want) in [
            ("-t /etc/passwd", "paths"),
            ("--mpol-threshold=../x", "paths"),
            ("-t 4;reboot", "';'"),
            ("-t $(id)", "'$'"),
            ("--enable-uti", "allow-list"),
            ("0 /bin/sh", "not an option"),
            ("-t", "needs a value"),
            ("-t -t", "not another option"),
            ("--disable-sched-yield=1", "takes no value"),
            ("-t `x`", "'`'"),
            ("--mpol-threshold=--foo=bar", "not another option"),
            ("--mpol-threshold=-1", "negative"),
            ("-t 99999999999", "larger than the launcher can take"),
            (
                "--extend-heap-by=2147483648",
                "larger than the launcher can take",
            ),
        ] {
            let e = decide(
                &c,
                None,
                &env(&["LWK_KERNEL=mckernel", &format!("LWK_ARGS={a}")]),
            )
            .unwrap_err();
            assert!(e.to_string().contains(want), "{a}: {e}");
        }
    }

    #[test]
    fn long_values_are_refused_with_the_limit_and_shown_cut() {
        let c = cfg();
        let huge = format!("LWK_ARGS=-t {}", "1".repeat(200 * 1024));
        let e = decide(&c, None, &env(&["LWK_KERNEL=mckernel", &huge]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 4096 bytes") && e.len() < 400, "{e}");
        let long = format!("LWK_ARGS=-t {}", "1".repeat(300));
        let e = decide(&c, None, &env(&["LWK_KERNEL=mckernel", &long]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("longer than 256") && e.contains("(300 bytes)"),
            "{e}"
        );
        let k = format!("LWK_KERNEL={}", "x".repeat(100_000));
        let e = decide(&c, None, &env(&[&k])).unwrap_err().to_string();
        assert!(e.contains("(100000 bytes)") && e.len() < 400, "{e}");
        let e = decide_exec(&c, &env(&["LWK_KERNEL=mos", &huge]), &[]).unwrap_err();
        assert!(matches!(e, PolicyError::TooLong { .. }), "{e}");
    }

    #[test]
    fn exec_only_listens_to_its_own_env() {
        let mut c = cfg();
        c.default_kernel = crate::config::KernelChoice::Mckernel;
        assert_eq!(decide_exec(&c, &[], &[]), Ok(None));
        assert!(decide_exec(&c, &env(&["LWK_KERNEL=mos"]), &[])
            .unwrap()
            .is_some());
    }

    #[test]
    fn exec_ignores_the_lwk_kernel_it_inherited() {
        let c = cfg();
        let container = env(&["PATH=/bin", "LWK_KERNEL=mckernel", "LWK_ARGS=-t 2"]);
        // Docker's exec env: the container's env, passed down unchanged.
        assert_eq!(decide_exec(&c, &container, &container), Ok(None));
        // A value of its own (another kernel, or another spelling) asks.
        let own = env(&["PATH=/bin", "LWK_KERNEL=McKernel", "LWK_ARGS=-t 2"]);
        let r = decide_exec(&c, &own, &container).unwrap().unwrap();
        assert_eq!(r.kind, LwkKind::McKernel);
        assert_eq!(r.args, vec!["-t", "2"]);
        let r = decide_exec(&c, &env(&["LWK_KERNEL=mos"]), &container)
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, LwkKind::Mos);
        // Hostile args are refused for exec too.
        assert!(decide_exec(&c, &env(&["LWK_KERNEL=mos", "LWK_ARGS=-c /x"]), &container).is_err());
    }

    #[test]
    fn exec_lwk_exec_decides_inherited_or_not() {
        let c = cfg();
        let container = env(&["PATH=/bin", "LWK_KERNEL=mckernel"]);
        // `docker exec -e LWK_EXEC=mckernel`: the container's env plus the exec's own.
        let exec = env(&["PATH=/bin", "LWK_KERNEL=mckernel", "LWK_EXEC=mckernel"]);
        let r = decide_exec(&c, &exec, &container).unwrap().unwrap();
        assert_eq!(r.kind, LwkKind::McKernel);
        // A container started with LWK_EXEC: every exec inherits it, and it still asks.
        let container = env(&["LWK_KERNEL=mos", "LWK_EXEC=mos"]);
        let r = decide_exec(&c, &container, &container).unwrap().unwrap();
        assert_eq!(r.kind, LwkKind::Mos);
        // LWK_EXEC=none keeps one exec on Linux, whatever LWK_KERNEL says.
        let own = env(&["LWK_KERNEL=McKernel", "LWK_EXEC=none"]);
        assert_eq!(decide_exec(&c, &own, &[]), Ok(None));
        // A bad value names LWK_EXEC.
        let e = decide_exec(&c, &env(&["LWK_EXEC=linux2"]), &[]).unwrap_err();
        assert!(e.to_string().starts_with("LWK_EXEC asks"), "{e}");
        // The container's own process ignores LWK_EXEC.
        assert_eq!(decide(&c, None, &env(&["LWK_EXEC=mckernel"])), Ok(None));
    }

    #[test]
    fn exec_command_line_kernel_is_its_own_wish() {
        let c = cfg();
        let container = env(&["PATH=/bin", "LWK_KERNEL=mckernel"]);
        // `exec` without -e LWK_KERNEL: the container's value is inherited, not asked for.
        let inherited = exec_inherited(container.clone(), &env(&["FOO=1"]));
        assert_eq!(inherited, container);
        assert_eq!(decide_exec(&c, &container, &inherited), Ok(None));
        // `exec -e LWK_KERNEL=mckernel`: asked for, even with the container's own value.
        let inherited = exec_inherited(container.clone(), &env(&["LWK_KERNEL=mckernel"]));
        assert_eq!(inherited, env(&["PATH=/bin"]));
        let r = decide_exec(&c, &container, &inherited).unwrap().unwrap();
        assert_eq!(r.kind, LwkKind::McKernel);
        assert!(names_lwk(&container) && !names_lwk(&env(&["PATH=/bin"])));
    }
}
