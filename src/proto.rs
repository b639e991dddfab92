//! Generated gRPC code (see `build.rs` and `proto/`).

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

/// KMS plugin API v2.
pub mod kms_v2 {
    tonic::include_proto!("v2");
}

/// KMS plugin API v1beta1 (deprecated).
pub mod kms_v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// Secrets Store CSI Driver provider API v1alpha1.
pub mod csi_v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
