//! containerd (CRI): `/etc/containerd/config.toml`, a runtime of type
//! `io.containerd.runc.v2` whose `options.BinaryName` is lwk-runc, under the CRI
//! plugin's name for the file's config `version` (1: `cri`, 2: `io.containerd.grpc.v1.cri`,
//! 3: `io.containerd.cri.v1.runtime`).

use std::path::{Path, PathBuf};

use toml_edit::{Array, Item, Table};

use super::{is_lwk_runc, parse_toml, render_toml, table_path, Registration};

pub const CONFIG: &str = "/etc/containerd/config.toml";
const RUNC_SHIM: &str = "io.containerd.runc.v2";

fn cri_plugin(version: i64) -> Result<&'static str, String> {
    match version {
        1 => Ok("cri"),
        2 => Ok("io.containerd.grpc.v1.cri"),
        3 => Ok("io.containerd.cri.v1.runtime"),
        v => Err(format!(
            "config version {v} is not one containerd knows (1, 2 or 3)"
        )),
    }
}

/// Every `plugins.<p>.containerd.runtimes.<name>` whose `options.BinaryName` is lwk-runc.
pub fn registered(text: &str) -> Result<Vec<Registration>, String> {
    let doc = parse_toml(text)?;
    let mut out = Vec::new();
    let Some(plugins) = doc.get("plugins").and_then(Item::as_table_like) else {
        return Ok(out);
    };
    for (_, plugin) in plugins.iter() {
        let runtimes = plugin
            .as_table_like()
            .and_then(|p| p.get("containerd"))
            .and_then(Item::as_table_like)
            .and_then(|c| c.get("runtimes"))
            .and_then(Item::as_table_like);
        for (name, rt) in runtimes.into_iter().flat_map(|r| r.iter()) {
            let bin = rt
                .as_table_like()
                .and_then(|r| r.get("options"))
                .and_then(Item::as_table_like)
                .and_then(|o| o.get("BinaryName"))
                .and_then(Item::as_str);
            if let Some(bin) = bin.filter(|b| is_lwk_runc(b)) {
                out.push(Registration {
                    name: name.to_string(),
                    path: PathBuf::from(bin),
                });
            }
        }
    }
    Ok(out)
}

/// Register `name`; a new runtime starts from the `runc` runtime's settings where the
/// file has one (so `SystemdCgroup` and the like match the node's), else from runc's
/// defaults, and lets pods choose their kernel by `run.lwk.*` annotations.
pub fn register(text: &str, name: &str, path: &Path) -> Result<Option<String>, String> {
    let mut doc = parse_toml(text)?;
    let version = match doc.get("version") {
        Some(v) => v.as_integer().ok_or("`version` is not an integer")?,
        // A new file: version 2, which containerd 1.x reads and 2.x migrates.
        None if text.trim().is_empty() => {
            doc.insert("version", toml_edit::value(2));
            2
        }
        None => 1,
    };
    let plugin = cri_plugin(version)?;
    let want = path.to_string_lossy().into_owned();
    let path_keys = ["plugins", plugin, "containerd", "runtimes"];
    let had_runtimes = path_keys
        .iter()
        .try_fold(doc.as_item(), |item, k| item.get(k))
        .is_some();
    let runtimes = table_path(doc.as_table_mut(), &path_keys)?;
    if !had_runtimes && name != "runc" {
        // containerd replaces its built-in runtimes (runc) by the file's table, and the
        // CRI plugin refuses to load when its default runtime is gone: keep runc.
        let mut runc = Table::new();
        runc.decor_mut().set_prefix(
            "\n# containerd's built-in runc, written out: a runtimes table replaces the built-in one\n",
        );
        runc.insert("runtime_type", toml_edit::value(RUNC_SHIM));
        runtimes.insert("runc", Item::Table(runc));
    }
    let existing = runtimes.get(name).is_some();
    let runc = runtimes.get("runc").and_then(Item::as_table).cloned();
    let rt = table_path(runtimes, &[name])?;
    rt.set_implicit(false);
    if !existing {
        let runtime_type = runc
            .as_ref()
            .and_then(|r| r.get("runtime_type"))
            .and_then(Item::as_str)
            .unwrap_or(RUNC_SHIM);
        rt.insert("runtime_type", toml_edit::value(runtime_type));
        let mut ann = Array::new();
        ann.push("run.lwk.*");
        rt.insert("pod_annotations", toml_edit::value(ann));
    }
    let opts = table_path(rt, &["options"])?;
    if opts.get("BinaryName").and_then(Item::as_str) == Some(want.as_str()) {
        return Ok(None);
    }
    if !existing {
        let runc_opts = runc
            .as_ref()
            .and_then(|r| r.get("options"))
            .and_then(Item::as_table);
        for (k, v) in runc_opts.into_iter().flat_map(Table::iter) {
            if k != "BinaryName" && v.is_value() {
                opts.insert(k, v.clone());
            }
        }
    }
    opts.insert("BinaryName", toml_edit::value(want));
    opts.set_implicit(false);
    Ok(Some(render_toml(doc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's /etc/containerd/config.toml, plus a runc runtime using systemd cgroups.
    const DEBIAN: &str = r#"version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"#;

    #[test]
    fn version_2_gets_a_runtime_like_runc_keeping_the_rest() {
        let out = register(DEBIAN, "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        let cri = &t["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
        let lwk = &cri["containerd"]["runtimes"]["lwk-runc"];
        assert_eq!(lwk["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(
            lwk["options"]["BinaryName"].as_str(),
            Some("/usr/bin/lwk-runc")
        );
        assert_eq!(lwk["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(lwk["pod_annotations"][0].as_str(), Some("run.lwk.*"));
        assert_eq!(
            t["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
            Some("/var/lib/containerd/opt")
        );
        assert!(
            out.starts_with(DEBIAN),
            "the file's own text comes first, unchanged: {out}"
        );
        assert_eq!(registered(&out).unwrap()[0].name, "lwk-runc");
        assert_eq!(registered(DEBIAN).unwrap(), vec![]);
        assert_eq!(
            register(&out, "lwk-runc", Path::new("/usr/bin/lwk-runc")).unwrap(),
            None
        );
    }

    #[test]
    fn version_3_and_new_files() {
        let out = register("version = 3\n", "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            t["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["lwk-runc"]
                ["options"]["BinaryName"]
                .as_str(),
            Some("/usr/bin/lwk-runc")
        );
        let out = register("", "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        assert!(out.starts_with("version = 2\n"), "{out}");
        assert!(
            out.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.lwk-runc]"),
            "{out}"
        );
        assert!(
            !out.contains("[plugins]\n"),
            "intermediate tables stay implicit: {out}"
        );
        // A file without runtimes had containerd's built-in runc; it still has.
        let t: toml::Table = toml::from_str(&out).unwrap();
        let rts = &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            rts["runc"]["runtime_type"].as_str(),
            Some(RUNC_SHIM),
            "{out}"
        );
        assert_eq!(
            registered(&out).unwrap().len(),
            1,
            "runc is not taken for lwk-runc"
        );
        assert!(register("version = 7\n", "lwk-runc", Path::new("/b"))
            .unwrap_err()
            .contains("version 7"));
    }

    #[test]
    fn the_shipped_snippets_count_as_registered_under_the_runtimeclass_handler() {
        for text in [
            include_str!("../../config/engines/containerd-1.x.toml"),
            include_str!("../../config/engines/containerd-2.x.toml"),
        ] {
            let regs = registered(text).unwrap();
            assert_eq!(regs.len(), 1);
            assert_eq!(regs[0].name, super::super::BINARY_NAME);
        }
        assert!(include_str!("../../config/engines/runtimeclass.yaml")
            .contains(&format!("handler: {}", super::super::BINARY_NAME)));
    }
}
