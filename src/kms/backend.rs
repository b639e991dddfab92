//! The seam between the key ring and Key Vault: [`KeyBackend`], the four key operations
//! the KMS plugin makes (read a version's metadata, list the versions, encrypt, decrypt),
//! as Azure/kubernetes-kms `pkg/plugin/keyvault.go` puts its `Client` interface in front of
//! the SDK. [`KeyVault`] is the real one; the unit tests' in-memory fake (`fake`, tests
//! only) lets rotation, version choice and error mapping be tested without HTTPS. The
//! integration tests against mock-vault still go over the real wire.

use zeroize::Zeroizing;

use crate::azure::key::{KeyRef, KeyVersion, ResponseInfo};
use crate::azure::keyvault::{KeyInfo, KeyVault, KvError};

#[cfg(test)]
pub(crate) mod fake;

/// The key operations the KMS plugin needs from a vault, on one key.
///
/// Only cache misses, polls and the self-test call it: a decrypt answered from the cache
/// never reaches the backend.
#[async_trait::async_trait]
pub trait KeyBackend: std::fmt::Debug + Send + Sync {
    /// The key the operations address (its key ids are built from it).
    fn key(&self) -> &KeyRef;

    /// Reads a key version's metadata (`None` = the latest version).
    async fn get(&self, version: Option<&KeyVersion>) -> Result<KeyInfo, KvError>;

    /// Lists every version's metadata (attributes only: no key type, operations or public
    /// key, as Key Vault's listing).
    async fn list_versions(&self) -> Result<Vec<KeyInfo>, KvError>;

    /// Encrypts (wraps) `plaintext` with `version`; returns the raw result and the response
    /// facts recorded as annotations.
    async fn encrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, ResponseInfo), KvError>;

    /// Decrypts (unwraps) `ciphertext` with `version`.
    async fn decrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KvError>;
}

#[async_trait::async_trait]
impl KeyBackend for KeyVault {
    fn key(&self) -> &KeyRef {
        KeyVault::key(self)
    }

    async fn get(&self, version: Option<&KeyVersion>) -> Result<KeyInfo, KvError> {
        KeyVault::get(self, version).await
    }

    async fn list_versions(&self) -> Result<Vec<KeyInfo>, KvError> {
        KeyVault::list_versions(self).await
    }

    async fn encrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, ResponseInfo), KvError> {
        KeyVault::encrypt(self, version, algorithm, plaintext).await
    }

    async fn decrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KvError> {
        KeyVault::decrypt(self, version, algorithm, ciphertext).await
    }
}
