//! `lwk-runc image pull|ls|rm|prune`: the node's image cache (image/).

use anyhow::{bail, Result};

use crate::cli::{ImageAction, ListFormat};
use crate::config::Config;
use crate::image::cache::{Cache, Record};
use crate::image::{human_bytes, ImageRef, Ui};

pub fn run(action: &ImageAction) -> Result<()> {
    let cfg = Config::load()?;
    match action {
        ImageAction::Pull { reference } => {
            let r: ImageRef = reference.parse().map_err(anyhow::Error::msg)?;
            let rec = crate::image::pull(&cfg.images, &r, &Ui::new())?;
            println!("{}", rec.digest);
        }
        ImageAction::Ls { format, quiet } => {
            let cache = Cache::open(&cfg.images)?;
            let recs = cache.records();
            if *quiet {
                for r in &recs {
                    println!("{}", r.digest);
                }
            } else if *format == ListFormat::Json {
                let v: Vec<serde_json::Value> = recs
                    .iter()
                    .map(|r| {
                        let mut j = serde_json::to_value(r).unwrap_or_default();
                        j["in_use"] = cache.mounted(&r.digest).into();
                        j["last_used"] =
                            chrono::DateTime::<chrono::Utc>::from(cache.last_used(&r.digest))
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                                .into();
                        j
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<14}{:>11}  {:<21}{:<8}NAMES",
                    "IMAGE ID", "SIZE", "LAST USED", "IN USE"
                );
                for r in &recs {
                    let used = chrono::DateTime::<chrono::Local>::from(cache.last_used(&r.digest));
                    println!(
                        "{:<14}{:>11}  {:<21}{:<8}{}",
                        r.digest.short(),
                        human_bytes(r.size),
                        used.format("%Y-%m-%d %H:%M:%S"),
                        if cache.mounted(&r.digest) {
                            "yes"
                        } else {
                            "no"
                        },
                        r.names.join(" ")
                    );
                }
            }
        }
        ImageAction::Rm { images } => {
            let cache = Cache::open(&cfg.images)?;
            let _l = cache.lock_all()?;
            let recs = cache.records();
            let mut busy = Vec::new();
            for want in images {
                let r = find(&recs, want)?;
                if cache.remove(&r.digest)? {
                    println!("{}", r.digest);
                } else {
                    busy.push(format!("{want} ({})", r.digest.short()));
                }
            }
            if !busy.is_empty() {
                bail!(
                    "{} in use by a running job; remove it once the job has ended",
                    busy.join(", ")
                );
            }
        }
        ImageAction::Prune => {
            let cache = Cache::open(&cfg.images)?;
            let gone = cache.prune()?;
            let freed: u64 = gone.iter().map(|r| r.size).sum();
            for r in &gone {
                println!("{}", r.digest);
            }
            eprintln!("removed {} image(s), {}", gone.len(), human_bytes(freed));
        }
    }
    Ok(())
}

/// An entry by id, id prefix (at least 4 digits), reference, or name as `image ls` shows.
fn find<'a>(recs: &'a [Record], want: &str) -> Result<&'a Record> {
    let hex = want.strip_prefix("sha256:").unwrap_or(want);
    let canon = want.parse::<ImageRef>().map(|r| r.name()).ok();
    let hits: Vec<&Record> = recs
        .iter()
        .filter(|r| {
            (hex.len() >= 4 && r.digest.hex().starts_with(hex))
                || r.names
                    .iter()
                    .any(|n| n == want || Some(n) == canon.as_ref())
                || r.ids.iter().any(|i| i == want)
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no cached image {want:?} (`lwk-runc image ls` lists them)"),
        _ => bail!(
            "{want:?} names {} cached images; give more of the id",
            hits.len()
        ),
    }
}
