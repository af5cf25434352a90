//! podman: `containers.conf`, `[engine.runtimes] <name> = ["/path"]`, plus the name in
//! `[engine] runtime_supports_json`, without which podman hides the runtime's JSON
//! error messages from the user.

use std::path::{Path, PathBuf};

use toml_edit::{Array, Item, Value};

use super::{is_lwk_runc, parse_toml, render_toml, table_path, Registration};

pub const CONFIG: &str = "/etc/containers/containers.conf";

/// Where podman reads containers.conf, lowest precedence first (containers.conf(5));
/// the drop-in directories are read in name order after the main files.
pub const SEARCH: &[&str] = &[
    "/usr/share/containers/containers.conf",
    "/etc/containers/containers.conf",
    "/usr/share/containers/containers.conf.d",
    "/etc/containers/containers.conf.d",
];

/// podman's built-in `runtime_supports_json`: setting the key replaces it, so a file
/// that did not set it gets these back along with lwk-runc.
const SUPPORTS_JSON: &[&str] = &["crun", "crun-vm", "runc", "kata", "runsc", "youki", "krun"];

/// The runtimes in `text` that run lwk-runc, and the file's `runtime_supports_json`
/// (None when the file does not set it).
pub fn registered(text: &str) -> Result<(Vec<Registration>, Option<Vec<String>>), String> {
    let doc = parse_toml(text)?;
    let mut out = Vec::new();
    let engine = doc.get("engine").and_then(Item::as_table_like);
    if let Some(rts) = engine
        .and_then(|e| e.get("runtimes"))
        .and_then(Item::as_table_like)
    {
        for (name, paths) in rts.iter() {
            let first = paths
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|p| is_lwk_runc(p));
            if let Some(p) = first {
                out.push(Registration {
                    name: name.to_string(),
                    path: PathBuf::from(p),
                });
            }
        }
    }
    let json = engine
        .and_then(|e| e.get("runtime_supports_json"))
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        });
    Ok((out, json))
}

pub fn register(text: &str, name: &str, path: &Path) -> Result<Option<String>, String> {
    let mut doc = parse_toml(text)?;
    let want = path.to_string_lossy().into_owned();
    let mut changed = false;
    {
        let runtimes = table_path(doc.as_table_mut(), &["engine", "runtimes"])?;
        let has = runtimes
            .get(name)
            .and_then(Item::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(want.as_str())));
        if !has {
            let mut a = Array::new();
            a.push(want.as_str());
            runtimes.insert(name, toml_edit::value(a));
            runtimes.set_implicit(false);
            changed = true;
        }
    }
    let engine = table_path(doc.as_table_mut(), &["engine"])?;
    match engine.get_mut("runtime_supports_json") {
        Some(item) => {
            let a = item
                .as_array_mut()
                .ok_or("`engine.runtime_supports_json` is not an array")?;
            if !a.iter().any(|v| v.as_str() == Some(name)) {
                a.push(name);
                changed = true;
            }
        }
        None => {
            let mut a: Array = SUPPORTS_JSON.iter().copied().collect();
            a.push(name);
            engine.insert("runtime_supports_json", toml_edit::value(a));
            engine.set_implicit(false);
            changed = true;
        }
    }
    Ok(changed.then(|| render_toml(doc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = r#"# site settings
[containers]
log_size_max = 1048576   # keep logs small

[engine]
cgroup_manager = "cgroupfs"
runtime_supports_json = ["crun", "runc"]

[engine.runtimes]
crun = ["/usr/bin/crun", "/usr/local/bin/crun"]
"#;

    #[test]
    fn adds_the_runtime_and_json_support_keeping_comments_and_others() {
        let out = register(EXISTING, "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        assert!(
            out.starts_with(
                "# site settings\n[containers]\nlog_size_max = 1048576   # keep logs small\n"
            ),
            "{out}"
        );
        assert!(out.contains("cgroup_manager = \"cgroupfs\""), "{out}");
        assert!(
            out.contains("runtime_supports_json = [\"crun\", \"runc\", \"lwk-runc\"]"),
            "{out}"
        );
        assert!(out.contains("crun = [\"/usr/bin/crun\", \"/usr/local/bin/crun\"]\nlwk-runc = [\"/usr/bin/lwk-runc\"]"), "{out}");
        let (regs, json) = registered(&out).unwrap();
        assert_eq!(regs[0].name, "lwk-runc");
        assert!(json.unwrap().contains(&"lwk-runc".to_string()));
        assert_eq!(
            register(&out, "lwk-runc", Path::new("/usr/bin/lwk-runc")).unwrap(),
            None
        );
    }

    #[test]
    fn a_file_without_engine_gets_the_default_json_list_back() {
        let out = register(
            "[containers]\nnetns = \"host\"\n",
            "lwk-runc",
            Path::new("/usr/bin/lwk-runc"),
        )
        .unwrap()
        .unwrap();
        let (regs, json) = registered(&out).unwrap();
        assert_eq!(regs.len(), 1, "{out}");
        let json = json.expect("set");
        for r in ["crun", "runc", "youki", "lwk-runc"] {
            assert!(json.contains(&r.to_string()), "{out}");
        }
        assert!(out.starts_with("[containers]\nnetns = \"host\"\n"), "{out}");
        let reparsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            reparsed["engine"]["runtimes"]["lwk-runc"][0].as_str(),
            Some("/usr/bin/lwk-runc")
        );
    }

    #[test]
    fn the_shipped_snippet_counts_as_registered() {
        let text = include_str!("../../config/engines/containers.conf");
        let (regs, json) = registered(text).unwrap();
        assert_eq!(regs.len(), 1);
        assert!(json.unwrap().contains(&regs[0].name));
    }
}
