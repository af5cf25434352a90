//! `setup-engine docker|podman|containerd [--dry-run]`: register lwk-runc in the
//! engine's config file (the editing is in `engines/`).

use anyhow::{Context, Result};

use crate::cli::SetupEngineArgs;

pub fn run(args: &SetupEngineArgs) -> Result<i32> {
    let engine = args.engine;
    let file = args
        .config
        .clone()
        .unwrap_or_else(|| engine.default_config().to_path_buf());
    let runtime = match &args.runtime_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this lwk-runc binary")?,
    };
    if !runtime.is_file() {
        tracing::warn!(path = %runtime.display(), "the runtime path does not exist (yet); the engine will fail to run it until it does");
    }
    let name = args.name.as_str();
    let done = crate::engines::setup(engine, &file, name, &runtime, args.dry_run)?;
    let shown = done.file.display();
    if done.diff.is_empty() {
        println!(
            "{} already runs {} as runtime {name:?} in {shown}; nothing to do",
            engine.as_str(),
            runtime.display()
        );
        return Ok(0);
    }
    print!("{}", done.diff);
    if !done.written {
        println!("dry run: {shown} was not changed");
        return Ok(0);
    }
    match &done.backup {
        Some(b) => println!("backup of the previous file: {}", b.display()),
        None => println!("created {shown} (there was none)"),
    }
    println!(
        "registered runtime {name:?} -> {} in {shown}",
        runtime.display()
    );
    println!("{}", engine.next_steps(name));
    Ok(0)
}
