//! lwk-runc: a runc-compatible OCI runtime that runs container workloads on a
//! lightweight kernel (IHK/McKernel or mOS) of a multi-kernel HPC node.
//!
//! `main` parses runc's command line, seals the binary where a container is
//! entered, sets up runc-style logging and dispatches; everything else lives in
//! `commands/` (the CLI contract) and the modules they call.

mod cli;
mod commands;
mod conexec;
mod config;
mod console;
mod doctor;
mod engines;
mod executor;
mod failpoint;
mod flock;
#[cfg(test)]
mod fuzz;
mod hook;
mod host;
mod image;
mod logging;
mod lwk;
mod nolibm;
mod overlay;
mod seal;
mod trust;
mod watcher;

fn main() {
    // A container's PID 1 (`lwk-init`) and the LWK admin commands bypass runc's CLI.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = lwk::hidden_main(&args) {
        std::process::exit(code);
    }
    #[cfg(feature = "failpoints")]
    if args.get(1).is_some_and(|a| a == "crash-points") {
        println!("{}", failpoint::POINTS.join("\n"));
        std::process::exit(0);
    }
    // CVE-2019-5736: a process inside the container must not be able to reach the
    // runtime binary for writing through /proc/<pid>/exe. Only commands that join
    // or build a container are exposed, so only they pay for the re-exec. It happens
    // before parsing when the command line names one of them, so that the command
    // line is parsed once, in the sealed image; the check after parsing then finds
    // the binary sealed and costs two system calls.
    if seal::named_in(&args) {
        seal_or_exit();
    }
    let cli = cli::parse(&args);
    if matches!(
        cli.command,
        cli::Command::Create(_)
            | cli::Command::Run(_)
            | cli::Command::Exec(_)
            | cli::Command::Conexec(_)
    ) {
        seal_or_exit();
    }

    let target = match logging::init(
        cli.global.log.as_deref(),
        cli.global.log_format,
        cli.global.debug,
    ) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("lwk-runc: {err:#}");
            std::process::exit(1);
        }
    };

    match commands::dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let msg = one_line(&err);
            tracing::error!("{msg}");
            // runc prints the fatal error on stderr as well; with the log in a file this
            // is what a person running the command by hand sees.
            if target.to_file {
                eprintln!("lwk-runc: {msg}");
            }
            std::process::exit(1);
        }
    }
}

fn seal_or_exit() {
    if let Err(err) = seal::ensure_sealed() {
        eprintln!("lwk-runc: protecting the runtime binary (CVE-2019-5736): {err:#}");
        std::process::exit(1);
    }
}

/// The error and its causes on one line, as `{:#}` would print them, but without a
/// cause whose text an outer message already carries (the LWK errors embed their
/// source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
