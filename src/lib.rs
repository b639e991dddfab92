//! akv-bridge: a Kubernetes KMS v2 plugin and Secrets Store CSI provider backed by Azure
//! Key Vault.
//!
//! # Layout
//!
//! Pure code (no I/O) is kept apart from code that talks to the network. Everything is
//! crate-private unless `main.rs`, the integration tests, `akv-bridge-bench` or the fuzz
//! targets need it; this is the public surface:
//!
//! - [`kms`]: `prepare`, `serve(listener, kms, rewrite, shutdown)` and the process `run`;
//!   [`kms::envelope`] (pure: key ids, annotations, ciphertext and request validation, the
//!   wire contract tests emulate) and [`kms::wrap`] (the local RSA wrap).
//! - [`csi`]: the provider's `run`; [`csi::probe`], a CSI driver stand-in.
//! - [`probe`]: `akv-bridge probe`, a client that behaves like kube-apiserver.
//! - [`server`]: what both servers share; public is [`server::process`] (the process shell:
//!   bind, health and metrics listeners, serve, drain) and the limits.
//! - [`socket`]: the one Unix-socket address type: binding (stale sockets, permissions,
//!   abstract names) and connecting.
//! - [`cli`]: the flags of each command and [`cli::go`] (the Go originals' command lines);
//!   the command tree itself is in `main.rs`. [`dev`] (feature `dev`): `akv-bridge dev`.
//! - [`observability::logging`]; [`proto`], the generated gRPC code.
//! - `fuzzing` (hidden): re-exports of the parsers of outside input for `fuzz/`, the one
//!   door to crate-private code.
//!
//! Crate-private, by trust boundary:
//!
//! - `secret` (pure): `SecretString` and `SecretBytes`, the one holder of secret material:
//!   zeroized on drop, `Debug` prints `[redacted]`, so containers derive `Debug`; the Azure
//!   SDK's `Secret` only at the SDK edge.
//! - `azure::azure_json`, `azure::cloud` (pure): `azure.json` and cloud environments;
//!   `azure::key` (pure): a key, its versions, what Key Vault said about an operation.
//! - `azure::credential`: Entra credentials (secret, certificate, managed and workload
//!   identity) built on `azure_identity`.
//! - `azure::keyvault`: the Key Vault client: deadlines, retries, concurrency limit;
//!   `azure::upstream`: one classification of Key Vault and Entra failures (rejected
//!   credential, outage, throttling, unverifiable certificate) and the per-try policy that
//!   gives up when a `Retry-After` is beyond the deadline.
//! - `kms::backend`: the seam in front of Key Vault, `KeyBackend` (get, list, encrypt,
//!   decrypt), implemented by the Key Vault client and, in unit tests, by an in-memory fake;
//!   `kms::keyring`: the current key version (chosen by a pure rule, `keyring::choice`),
//!   rotation polling and health; `kms::cache`, `kms::audit`, `kms::service` (the gRPC
//!   services and the one error-to-status mapping).
//! - `cache`: the bounded cache with request coalescing both servers use.
//! - `csi::params` and `csi::content` (pure: mount parameters, file contents),
//!   `csi::identity`, `csi::fetch` (Key Vault reads through the cache), `csi::service`.
//! - `authority`: the HTTP/2 layer that accepts the socket path older Go clients send as
//!   `:authority` (HPACK re-encoding in front of tonic).
//! - `server::budget`, `server::liveness`; `observability::{metrics, go_metrics, http}`.
//!
//! The benchmarks are their own workspace package (`bench/`, binary `akv-bridge-bench`),
//! outside this library.

#![forbid(unsafe_code)]

mod authority;
mod azure;
mod cache;
pub mod cli;
pub mod csi;
#[cfg(feature = "dev")]
pub mod dev;
mod file;
pub mod kms;
pub mod observability;
pub mod probe;
pub mod proto;
mod secret;
pub mod server;
pub mod socket;

/// Version and commit, as `--version` prints them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AKV_BRIDGE_COMMIT"),
    ")"
);

/// The semver version alone (the CSI `Version` RPC's `runtime_version`).
pub const SEMVER: &str = env!("CARGO_PKG_VERSION");

/// The parsers of outside input, re-exported for the cargo-fuzz targets in `fuzz/` and for
/// nothing else: not an API, no stability promise. Everything else the targets reach is
/// crate-private.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::authority::AuthorityRewrite;
    pub use crate::secret::SecretString;

    /// What the CSI provider turns Key Vault's answers into (files).
    pub mod csi_content {
        pub use crate::csi::content::{
            CertValue, FieldSelector, KeyValue, ObjectEncoding, ObjectFormat, ObjectOptions,
            PEM_CONTENT_TYPE, PFX_CONTENT_TYPE, ProviderOptions, SecretValue, VaultObject, render,
        };
        pub use crate::csi::params::field_path::Document;
    }

    /// The CSI Mount request's parameters.
    pub mod csi_params {
        pub use crate::csi::params::{RelativeFilePath, parse_mount};
    }

    /// The KMS requests' fields.
    pub mod kms_envelope {
        pub use crate::kms::envelope::{
            CacheKey, check_ciphertext_len, check_key_id, decode_ciphertext, decrypt_meta,
            loggable_uid,
        };
    }
}
