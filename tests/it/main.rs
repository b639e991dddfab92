//! Integration tests, one binary: every scenario goes over the real wire (Unix sockets,
//! TLS to mock-vault, the official Azure SDK), with our servers in-process or as processes
//! where the scenario is about the process. One module per subject; `common` is the shared
//! plumbing. Run one subject with `cargo test --test it kms_outage::`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "../../mock-vault/tests/sdk/harness.rs"]
#[allow(dead_code)]
mod harness;

mod authority;
mod csi;
mod hostile_clients;
mod identity_binding;
mod kms;
mod kms_local_wrap;
mod kms_outage;
mod leak;
mod migration;
mod proxy_mode;
mod reliability;
mod soak;
mod upstream_errors;
