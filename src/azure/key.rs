//! Key Vault key names (pure): a key in a vault, one of its versions, and what Key Vault
//! said about an operation on it. The KMS plugin builds its key ids and annotations from
//! these; the Key Vault client addresses keys with them.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A Key Vault key version: 1-64 ASCII letters and digits (Key Vault uses 32 hex).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(String);

impl KeyVersion {
    /// Parses a version.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(s.to_owned()))
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyVersion({})", self.0)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key in a vault: the vault URL (`https://<host>`, no trailing slash) and key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    vault_url: String,
    name: String,
}

impl KeyRef {
    /// A key reference. The vault URL's trailing slash is dropped.
    pub fn new(vault_url: &str, name: &str) -> Self {
        Self {
            vault_url: vault_url.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
        }
    }

    /// The vault URL.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://<vault>/keys/<name>/<version>`, the URL Key Vault reports as `kid`.
    pub fn versioned_url(&self, version: &KeyVersion) -> String {
        format!("{}/keys/{}/{}", self.vault_url, self.name, version.as_str())
    }

    /// The KMS key id of a version: lowercase hex SHA-256 of its versioned URL, exactly as
    /// Azure/kubernetes-kms computes it (so switching plugins changes no key id).
    pub fn key_id(&self, version: &KeyVersion) -> String {
        hex::encode(Sha256::digest(self.versioned_url(version).as_bytes()))
    }
}

/// What Key Vault said about an Encrypt, copied into annotations as the Go plugin does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    /// `Date` header.
    pub date: Option<String>,
    /// `x-ms-request-id` header.
    pub request_id: Option<String>,
    /// `x-ms-keyvault-region` header.
    pub region: Option<String>,
}
