//! akv-bridge: a Kubernetes KMS v2 plugin and Secrets Store CSI provider backed by Azure
//! Key Vault.
//!
//! # Layout
//!
//! Pure code (no I/O) is kept apart from code that talks to the network:
//!
//! - [`secret`] (pure): [`secret::SecretString`] and [`secret::SecretBytes`], the one
//!   holder of secret material: zeroized on drop, `Debug` prints `[redacted]`, so containers
//!   derive `Debug`; the Azure SDK's `Secret` only at the SDK edge.
//! - [`kms::envelope`] (pure): key ids, annotations, ciphertext and request validation.
//! - [`azure::azure_json`], [`azure::cloud`] (pure): `azure.json` and cloud environments.
//! - [`azure::credential`]: Entra credentials (secret, certificate, managed and workload
//!   identity) built on `azure_identity`.
//! - [`azure::keyvault`]: the Key Vault client: deadlines, retries, concurrency limit.
//! - [`azure::upstream`]: one classification of Key Vault and Entra failures (rejected
//!   credential, outage, throttling, unverifiable certificate) and the per-try policy that
//!   gives up when a `Retry-After` is beyond the deadline.
//! - [`kms::backend`]: the seam in front of Key Vault, [`kms::backend::KeyBackend`] (get,
//!   list, encrypt, decrypt), implemented by the Key Vault client and, in unit tests, by an
//!   in-memory fake.
//! - [`kms::keyring`]: the current key version (chosen by a pure rule, `keyring::choice`),
//!   rotation polling and health.
//! - [`cache`]: the bounded cache with request coalescing both servers use;
//!   [`kms::cache`] is the decrypt cache built on it.
//! - [`kms::service`]: the gRPC services (v2, v1beta1) and the error-to-status mapping.
//! - [`kms`]: `serve(listener, kms, rewrite, shutdown)` and the process `run`.
//! - [`authority`]: the HTTP/2 layer that accepts the socket path older Go clients send as
//!   `:authority` (HPACK re-encoding in front of tonic).
//! - [`socket`]: the one Unix-socket address type: binding (stale sockets, permissions,
//!   abstract names) and connecting.
//! - [`server`]: what both servers share: the process shell, the gRPC server loop on
//!   their socket (connection cap with eviction, timers, the in-flight byte budget),
//!   liveness by a real call.
//! - [`observability`]: metrics, health endpoints, logging.
//! - [`csi`]: the CSI provider: mount parameters and file contents (pure), identities, the
//!   Key Vault reads through the cache, the gRPC service, `probe csi`.
//! - [`probe`]: `akv-bridge probe`, a client that behaves like kube-apiserver.
//! - [`cli`]: the flags of each command (the command tree itself is in `main.rs`);
//!   [`dev`] (feature `dev`): `akv-bridge dev`, the whole system on one machine.
//!
//! The benchmarks are their own workspace package (`bench/`, binary `akv-bridge-bench`),
//! outside this library.

#![forbid(unsafe_code)]

pub mod authority;
pub mod azure;
pub mod cache;
pub mod cli;
pub mod csi;
#[cfg(feature = "dev")]
pub mod dev;
pub mod kms;
pub mod observability;
pub mod probe;
pub mod proto;
pub mod secret;
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
