//! [`ProbeOptions`]: what the probe does, with kube-apiserver's defaults, checked as
//! kube-apiserver checks its EncryptionConfiguration.

use std::path::PathBuf;
use std::time::Duration;

use super::ProbeError;

/// kube-apiserver's default KMS call timeout (`timeout` in the EncryptionConfiguration).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The provider name of Azure/kubernetes-kms's documented EncryptionConfiguration.
pub const DEFAULT_PROVIDER_NAME: &str = "azurekmsprovider";
/// The etcd key the sample Secret is sealed under (the AES-GCM additional data).
pub const DEFAULT_STORAGE_KEY: &str = "/registry/secrets/default/akv-bridge-probe";

/// What the probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Timeout of every RPC (kube-apiserver's `timeout`, 3 s by default).
    pub timeout: Duration,
    /// Also write and read a sample Secret through kube-apiserver's KMS v2 envelope.
    pub envelope: bool,
    /// The KMS provider `name` of the EncryptionConfiguration (no `:`), as in the etcd
    /// prefix `k8s:enc:kms:v2:<name>:`.
    pub provider_name: String,
    /// The etcd key of the sample Secret: kube-apiserver uses the etcd key as AES-GCM
    /// additional data, so a value only opens under the key it was written to. The replay
    /// appends a random suffix per record.
    pub storage_key: String,
    /// Replay a restarted kube-apiserver with this store file (`--store`) instead of the
    /// Status/Encrypt/Decrypt/envelope steps: see the module documentation.
    pub store: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            envelope: false,
            provider_name: DEFAULT_PROVIDER_NAME.to_owned(),
            storage_key: DEFAULT_STORAGE_KEY.to_owned(),
            store: None,
        }
    }
}

impl ProbeOptions {
    /// Checks the options as kube-apiserver checks its EncryptionConfiguration: a provider
    /// name that is non-empty and has no `:`, and a positive timeout.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.provider_name.is_empty() {
            return Err(ProbeError::InvalidOptions(
                "the provider name must not be empty".to_owned(),
            ));
        }
        if self.provider_name.contains(':') {
            return Err(ProbeError::InvalidOptions(format!(
                "the provider name {:?} must not contain ':'",
                self.provider_name
            )));
        }
        if self.timeout.is_zero() {
            return Err(ProbeError::InvalidOptions(
                "the timeout must be positive".to_owned(),
            ));
        }
        if self.storage_key.is_empty() {
            return Err(ProbeError::InvalidOptions(
                "the storage key must not be empty".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
