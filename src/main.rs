//! The `akv-bridge` binary.

#![forbid(unsafe_code)]

fn main() {
    eprintln!("akv-bridge {}", env!("CARGO_PKG_VERSION"));
}
