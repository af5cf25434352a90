//! `pow`, the one libm function left in the binary (indicatif's progress estimate),
//! defined here from rust-lang's pure-Rust `libm` so that the linker resolves it in the
//! executable and does not make every start map and relocate libm.so for it (~0.3 MiB of
//! each process's resident memory, one more library for the loader; bench/README.md).
//! Should another libm function come in, libm.so comes back: slower, never wrong.

/// C `pow(3)`.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
