//! Logs in runc's (logrus) format, because engines parse them.
//!
//! containerd's shim reads `--log <bundle>/log.json --log-format json` and takes the
//! `msg` of the last object whose `level` is `"error"` as the reason a command
//! failed; podman does the same with its oci-log. So in JSON mode each line is one
//! object with lowercase `level`, `msg` and `time` (tracing-subscriber's own JSON
//! uses `"level":"ERROR","message"`, which engines ignore). Text mode is logrus'
//! `time="…" level=… msg="…"` with extra fields as `key=value`.
//!
//! Each record is formatted into one buffer and written with a single `write(2)`
//! on an `O_APPEND` file, so lines from the runtime and its forked container
//! processes never interleave.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

enum Sink {
    Stderr,
    File(Mutex<File>),
}

struct LogrusLayer {
    sink: Sink,
    format: LogFormat,
    max_level: Level,
}

/// Collects an event's fields: `message` becomes `msg`, the rest are kept in order.
#[derive(Default)]
struct Fields {
    msg: String,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_owned();
        } else {
            self.extra.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.extra
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// logrus quotes a text value when it holds anything but a conservative set of characters.
fn push_text_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        out.push_str(value);
    } else {
        out.push_str(&serde_json::Value::String(value.to_owned()).to_string());
    }
}

/// Formats one record as a single line (with its trailing newline).
fn format_record(format: LogFormat, level: &str, msg: &str, extra: &[(String, String)]) -> String {
    let time = now_rfc3339();
    match format {
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            for (k, v) in extra {
                obj.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            obj.insert("level".into(), level.into());
            obj.insert("msg".into(), msg.into());
            obj.insert("time".into(), time.into());
            let mut line = serde_json::Value::Object(obj).to_string();
            line.push('\n');
            line
        }
        LogFormat::Text => {
            let mut line = String::with_capacity(64 + msg.len());
            let _ = write!(line, "time=\"{time}\" level={level} msg=");
            push_text_value(&mut line, msg);
            for (k, v) in extra {
                let _ = write!(line, " {k}=");
                push_text_value(&mut line, v);
            }
            line.push('\n');
            line
        }
    }
}

impl LogrusLayer {
    fn write_line(&self, line: &str) {
        // A failed log write has nowhere better to go; the command's result still stands.
        match &self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::File(file) => {
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogrusLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: LayerContext<'_, S>) -> bool {
        // libcontainer warns on every container about cgroup controllers this host
        // lacks (hugetlb, net_cls, …); that is debugging detail, not news for a user.
        // Its errors stay: they carry the reason behind our own final error line.
        let library = metadata.target().starts_with("libcontainer")
            || metadata.target().starts_with("libcgroups");
        let limit = if library && self.max_level < Level::DEBUG {
            Level::ERROR
        } else {
            self.max_level
        };
        *metadata.level() <= limit
    }

    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = level_name(event.metadata().level());
        self.write_line(&format_record(
            self.format,
            level,
            &fields.msg,
            &fields.extra,
        ));
    }
}

/// Where errors go, so that `main` can also tell the user on stderr when the log is a file.
pub struct LogTarget {
    pub to_file: bool,
}

/// Installs the global logger. `--debug` lowers the level to debug; otherwise warnings
/// and errors only, which is what engines read (and keeps the hot path quiet).
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> Result<LogTarget> {
    let sink = match log {
        Some(path) if path != Path::new("/dev/stderr") => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            Sink::File(Mutex::new(file))
        }
        _ => Sink::Stderr,
    };
    let to_file = matches!(sink, Sink::File(_));
    let max_level = if debug { Level::DEBUG } else { Level::WARN };
    let layer = LogrusLayer {
        sink,
        format,
        max_level,
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(LogTarget { to_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_record_has_lowercase_level_msg_and_time() {
        let line = format_record(LogFormat::Json, "error", "exec: \"/nope\": not found", &[]);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "exec: \"/nope\": not found");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_record_quotes_like_logrus() {
        let line = format_record(
            LogFormat::Text,
            "warning",
            "container not running",
            &[("id".into(), "abc".into())],
        );
        assert!(line.starts_with("time=\""));
        assert!(line.contains(" level=warning msg=\"container not running\" id=abc\n"));
    }

    #[test]
    fn extra_fields_cannot_override_level_or_msg() {
        let line = format_record(
            LogFormat::Json,
            "error",
            "real",
            &[
                ("msg".into(), "fake".into()),
                ("level".into(), "info".into()),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["msg"], "real");
        assert_eq!(v["level"], "error");
    }
}
