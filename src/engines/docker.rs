//! Docker: `/etc/docker/daemon.json`, `"runtimes": {"<name>": {"path": "..."}}`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{is_lwk_runc, Registration};

pub const CONFIG: &str = "/etc/docker/daemon.json";

fn parse(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err("the top level is not a JSON object".into());
    }
    Ok(v)
}

/// The runtimes in `text` that run lwk-runc.
pub fn registered(text: &str) -> Result<Vec<Registration>, String> {
    let v = parse(text)?;
    let mut out = Vec::new();
    if let Some(rts) = v.get("runtimes").and_then(Value::as_object) {
        for (name, rt) in rts {
            if let Some(path) = rt.get("path").and_then(Value::as_str) {
                if is_lwk_runc(path) {
                    out.push(Registration {
                        name: name.clone(),
                        path: PathBuf::from(path),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// `text` with `runtimes.<name>.path` set to `path` (its other keys, e.g.
/// `runtimeArgs`, and every other setting kept in order); None if already so.
pub fn register(text: &str, name: &str, path: &Path) -> Result<Option<String>, String> {
    let mut doc = parse(text)?;
    let want = Value::String(path.to_string_lossy().into_owned());
    let top = doc
        .as_object_mut()
        .ok_or("the top level is not a JSON object")?;
    let runtimes = top
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("`runtimes` is not an object")?;
    match runtimes.get_mut(name) {
        Some(Value::Object(rt)) if rt.get("path") == Some(&want) => return Ok(None),
        Some(Value::Object(rt)) => {
            rt.insert("path".into(), want);
        }
        Some(_) => return Err(format!("`runtimes.{name}` is not an object")),
        None => {
            let mut rt = Map::new();
            rt.insert("path".into(), want);
            runtimes.insert(name.into(), Value::Object(rt));
        }
    }
    Ok(Some(render(&doc, indent_of(text))))
}

/// The indentation the file already uses (two spaces for a new one).
fn indent_of(text: &str) -> String {
    text.lines()
        .skip(1)
        .find_map(|l| {
            let ws: String = l.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
            (!ws.is_empty() && ws.len() < l.len()).then_some(ws)
        })
        .unwrap_or_else(|| "  ".into())
}

fn render(doc: &Value, indent: String) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value to a Vec cannot fail.
    let _ = doc.serialize(&mut ser);
    out.push(b'\n');
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = r#"{
	"log-level": "warn",
	"default-runtime": "runc",
	"runtimes": {
		"runc-debug": {
			"path": "/usr/bin/runc",
			"runtimeArgs": ["--debug"]
		}
	},
	"storage-driver": "overlay2"
}
"#;

    #[test]
    fn adds_lwk_runc_keeping_settings_order_and_indentation() {
        let out = register(EXISTING, "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["log-level"], "warn");
        assert_eq!(v["default-runtime"], "runc");
        assert_eq!(v["storage-driver"], "overlay2");
        assert_eq!(v["runtimes"]["runc-debug"]["runtimeArgs"][0], "--debug");
        assert_eq!(v["runtimes"]["lwk-runc"]["path"], "/usr/bin/lwk-runc");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["log-level", "default-runtime", "runtimes", "storage-driver"]
        );
        assert!(out.contains("\n\t\"log-level\""), "tabs kept: {out}");
        assert_eq!(
            registered(&out).unwrap(),
            vec![Registration {
                name: "lwk-runc".into(),
                path: "/usr/bin/lwk-runc".into()
            }]
        );
        assert_eq!(registered(EXISTING).unwrap(), vec![]);
        // Again: nothing to do.
        assert_eq!(
            register(&out, "lwk-runc", Path::new("/usr/bin/lwk-runc")).unwrap(),
            None
        );
    }

    #[test]
    fn a_moved_binary_updates_the_path_and_keeps_runtime_args() {
        let old = r#"{"runtimes": {"lwk-runc": {"path": "/usr/local/bin/lwk-runc", "runtimeArgs": ["--debug"]}}}"#;
        let out = register(old, "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["runtimes"]["lwk-runc"]["path"], "/usr/bin/lwk-runc");
        assert_eq!(v["runtimes"]["lwk-runc"]["runtimeArgs"][0], "--debug");
    }

    #[test]
    fn empty_or_missing_file_gets_a_minimal_config_and_bad_shapes_are_refused() {
        let out = register("", "lwk-runc", Path::new("/usr/bin/lwk-runc"))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "{\n  \"runtimes\": {\n    \"lwk-runc\": {\n      \"path\": \"/usr/bin/lwk-runc\"\n    }\n  }\n}\n"
        );
        assert!(register("[1]", "x", Path::new("/b"))
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(register(r#"{"runtimes": 3}"#, "x", Path::new("/b"))
            .unwrap_err()
            .contains("`runtimes`"));
    }
}
