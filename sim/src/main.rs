//! lwk-sim: one multi-call binary standing in for the IHK/McKernel and mOS
//! tools. It acts by the name it is called under (`ihkconfig`, `mcexec`, ...)
//! or by its first argument (`lwk-sim ihkconfig 0 query cpu`).

mod cli;
mod common;
mod ihk;
mod mcexec;
mod mos;
mod scripts;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

const TOOLS: &[&str] = &[
    "ihkconfig",
    "ihkosctl",
    "mcexec",
    "mcreboot.sh",
    "mcstop+release.sh",
    "lwkctl",
    "yod",
];

static CALL: OnceLock<(String, Vec<String>)> = OnceLock::new();
static LOGGED: AtomicBool = AtomicBool::new(false);

/// Append this invocation's calls.log line now (before an exec or a re-raised signal).
pub fn log_now(exit: &str) {
    if LOGGED.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some((tool, args)) = CALL.get() {
        common::log_call(tool, args, exit);
    }
}

/// Forget that the line was written (the exec it announced failed).
pub fn unlog() {
    LOGGED.store(false, Ordering::SeqCst);
}

fn install(prefix: std::path::PathBuf) -> i32 {
    let res = (|| -> std::io::Result<()> {
        let bin = prefix.join("bin");
        std::fs::create_dir_all(&bin)?;
        let me = std::env::current_exe()?;
        let main = bin.join("lwk-sim");
        let tmp = bin.join(".lwk-sim.tmp");
        std::fs::copy(&me, &tmp)?;
        std::fs::rename(&tmp, &main)?;
        for t in TOOLS {
            let p = bin.join(t);
            let _ = std::fs::remove_file(&p);
            // Hard links, not symlinks: each tool stays a regular file that
            // can be bind-mounted into a container on its own.
            if std::fs::hard_link(&main, &p).is_err() {
                std::fs::copy(&main, &p)?;
            }
        }
        let img = prefix.join("smp-x86/kernel/mckernel.img");
        std::fs::create_dir_all(img.parent().unwrap_or(&prefix))?;
        std::fs::write(
            &img,
            format!(
                "# lwk-sim McKernel image (not a kernel)\nbuildid={}\n",
                common::BUILDID
            ),
        )?;
        Ok(())
    })();
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lwk-sim install: {}: {}", prefix.display(), e);
            1
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let (tool, args): (String, Vec<String>) = if TOOLS.contains(&name.as_str()) {
        (name.clone(), argv[1..].to_vec())
    } else if argv.len() > 1 && TOOLS.contains(&argv[1].as_str()) {
        (argv[1].clone(), argv[2..].to_vec())
    } else {
        // lwk-sim's own commands; a tool named as the first argument never gets here,
        // so its arguments reach it exactly as given.
        use clap::Parser;
        let cli = cli::SimCli::parse_from(&argv);
        let (tool, args) = match cli.command {
            cli::SimCommand::Install { prefix } => {
                let args = vec!["--prefix".to_string(), prefix.display().to_string()];
                let _ = CALL.set(("install".into(), args));
                let code = install(prefix);
                log_now(&code.to_string());
                std::process::exit(code);
            }
            cli::SimCommand::Modprobe(a) => ("modprobe", a.args),
            cli::SimCommand::Rmmod(a) => ("rmmod", a.args),
            cli::SimCommand::Ihkconfig(a) => ("ihkconfig", a.args),
            cli::SimCommand::Ihkosctl(a) => ("ihkosctl", a.args),
            cli::SimCommand::Mcexec(a) => ("mcexec", a.args),
            cli::SimCommand::Mcreboot(a) => ("mcreboot.sh", a.args),
            cli::SimCommand::McstopRelease(a) => ("mcstop+release.sh", a.args),
            cli::SimCommand::Lwkctl(a) => ("lwkctl", a.args),
            cli::SimCommand::Yod(a) => ("yod", a.args),
            cli::SimCommand::Panic(a) => ("panic", a.args),
        };
        (tool.to_string(), args)
    };
    let _ = CALL.set((tool.clone(), args.clone()));
    // C-style argv for tools that print their own name.
    let mut cargv = vec![if TOOLS.contains(&name.as_str()) {
        argv[0].clone()
    } else {
        tool.clone()
    }];
    cargv.extend(args.iter().cloned());
    // A tool stuck in the kernel (an ioctl that never returns) before it acts.
    if matches!(tool.as_str(), "ihkconfig" | "ihkosctl" | "lwkctl") {
        if let Some(f) = common::take_fault(&[&format!("{tool}_hang")]) {
            std::thread::sleep(std::time::Duration::from_millis(f.param_ms(3_600_000)));
        }
    }
    let code = match tool.as_str() {
        "ihkconfig" => ihk::ihkconfig(&cargv),
        "panic" => ihk::panic_now(&args),
        "ihkosctl" => ihk::ihkosctl(&cargv),
        "mcexec" => mcexec::mcexec(&argv, &args),
        "mcreboot.sh" => scripts::mcreboot(&args),
        "mcstop+release.sh" => scripts::mcstop_release(&args),
        "lwkctl" => mos::lwkctl(&args),
        "yod" => mos::yod(&args),
        "modprobe" => ihk::modprobe(&args),
        _ => ihk::rmmod(&args),
    };
    let _ = std::io::stdout().flush();
    log_now(&(code & 0xff).to_string());
    std::process::exit(code & 0xff);
}
