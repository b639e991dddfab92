//! akv-bridge: a Kubernetes KMS v2 plugin and Secrets Store CSI provider backed by Azure
//! Key Vault.

#![forbid(unsafe_code)]
