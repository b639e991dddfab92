//! The Secrets Store CSI provider (`akv-bridge csi`), in progress.
//!
//! The pure layers are here and tested; the gRPC server, the Key Vault fetching with its
//! cache, and `akv-bridge probe csi` are not built yet.
//!
//! - [`params`]: the driver's `MountRequest` (attributes, secrets, permission, objects YAML)
//!   parsed into typed, validated values, including every file path.
//! - [`content`]: fetched Key Vault objects turned into the files the Go provider writes
//!   (PFX to PEM with the chain ordered, public keys as PKIX PEM, decodings, JSON keys).

pub mod content;
pub mod params;
