//! `lazy-subreaper CMD ARGS...`: runs CMD as a child subreaper that never reaps the
//! orphans it inherits, as an engine that is gone or a host PID 1 slow to reap leaves
//! them: a container init reparented here and killed stays a zombie until this process
//! ends. Prints CMD's exit status, then waits to be killed.

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: lazy-subreaper CMD [ARGS...]");
        std::process::exit(2);
    };
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // status() waits for CMD's own pid only; orphans are never waited for.
    match Command::new(cmd).args(rest).status() {
        Ok(st) => println!("exited {}", st.code().unwrap_or(-1)),
        Err(e) => println!("exited: {cmd}: {e}"),
    }
    loop {
        // SAFETY: pause(2) just sleeps until a signal.
        unsafe { libc::pause() };
    }
}
