//! `list`: every container under the state root.

use anyhow::{Context, Result};

use super::{load, state, Ctx};
use crate::cli::{List, ListFormat};

pub fn run(ctx: &Ctx, args: &List) -> Result<()> {
    let mut ids = Vec::new();
    match std::fs::read_dir(&ctx.root) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.join("state.json").is_file() {
                    ids.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", ctx.root.display())),
    }
    ids.sort();
    if args.quiet {
        for id in &ids {
            println!("{id}");
        }
        return Ok(());
    }
    // A container deleted while we list is simply not listed.
    let states: Vec<serde_json::Value> = ids
        .iter()
        .filter_map(|id| load(ctx, id).ok().map(|c| state::describe(ctx, id, &c)))
        .collect();
    match args.format {
        ListFormat::Json => println!("{}", serde_json::to_string(&states)?),
        ListFormat::Table => print_table(&states),
    }
    Ok(())
}

fn print_table(states: &[serde_json::Value]) {
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            ["id", "pid", "status", "bundle", "created", "owner"]
                .iter()
                .map(|k| match &s[*k] {
                    serde_json::Value::String(v) => v.clone(),
                    serde_json::Value::Null => String::new(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = w + 3));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
