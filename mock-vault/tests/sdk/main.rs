//! mock-vault driven over HTTPS by the official Azure SDK crates, TLS verified against the
//! mock's CA and challenge-resource verification left on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_debug_implementations
)]

mod auth;
mod certificates;
mod control;
mod harness;
mod keys;
mod secrets;
