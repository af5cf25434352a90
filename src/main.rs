mod config;
mod hook;
mod lwk;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = lwk::hidden_main(&args) {
        std::process::exit(code);
    }
}
