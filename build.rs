//! Link options of the runtime binary, both for start-up cost (bench/README.md,
//! "Start-up footprint"):
//!
//! - `link/hot-text.ld` puts the functions that the lifecycle commands run together at
//!   the start of `.text`. The kernel maps 64 KiB of code around every code page fault,
//!   so code spread over the whole 6 MiB of text costs a fault and 64 KiB of resident
//!   memory per piece; packed, a command touches about a quarter of it. The list is
//!   made by `bench/hot-text` from the profile of those commands; a function missing
//!   from it only lands in the ordinary `.text`.
//! - RELR relocations (`-z pack-relative-relocs`): the dynamic loader reads a few KiB
//!   instead of ~400 KiB of `.rela.dyn` at every start. Only when the build host is the
//!   target and its glibc (2.36 or later) can load them.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let hot = Path::new(&dir).join("link").join("hot-text.ld");
    if hot.is_file() {
        println!("cargo:rustc-link-arg-bin=lwk-runc=-Wl,-T,{}", hot.display());
    }
    if target == host && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=lwk-runc=-Wl,-z,pack-relative-relocs");
    }
}

/// The build host's glibc, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}
