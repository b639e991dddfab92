//! Vault state: keys, secrets and certificates with their versions, and its persistence.
//!
//! Names are case-insensitive in Key Vault and keep the case they were created with;
//! maps here are keyed by the lowercased name. "Latest" is always the most recently
//! created version.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::crypto::{KeyType, Material, StoredMaterial};
use crate::secret::SecretString;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A fresh 32-hex-character version id, the shape Key Vault uses.
pub fn new_version_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// How long a soft-deleted object stays recoverable, in days.
pub const RECOVERABLE_DAYS: i64 = 90;

/// What kind of service a vault emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VaultKind {
    /// Azure Key Vault (keys, secrets, certificates).
    #[default]
    Vault,
    /// Azure Managed HSM (keys only; its own DNS suffix and token resource).
    ManagedHsm,
}

/// Object attributes, as Key Vault returns them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the version may be used.
    pub enabled: bool,
    /// Not valid before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Creation time.
    pub created: i64,
    /// Last update time.
    pub updated: i64,
    /// Exportable flag (keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
}

impl Attributes {
    /// Attributes of a version created now.
    pub fn new_now() -> Self {
        let t = now();
        Self {
            enabled: true,
            nbf: None,
            exp: None,
            created: t,
            updated: t,
            exportable: None,
        }
    }

    /// The JSON Key Vault returns, with the recovery fields of a soft-delete vault.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(nbf) = self.nbf {
                obj.insert("nbf".into(), nbf.into());
            }
            if let Some(exp) = self.exp {
                obj.insert("exp".into(), exp.into());
            }
            if let Some(e) = self.exportable {
                obj.insert("exportable".into(), e.into());
            }
        }
        v
    }

    /// Applies the mutable fields of a request's `attributes` object.
    pub fn apply(&mut self, patch: &AttributesPatch) {
        if let Some(enabled) = patch.enabled {
            self.enabled = enabled;
        }
        if let Some(nbf) = patch.nbf {
            self.nbf = nbf;
        }
        if let Some(exp) = patch.exp {
            self.exp = exp;
        }
        if let Some(e) = patch.exportable {
            self.exportable = Some(e);
        }
        self.updated = now();
    }

    /// Why the version cannot be used now, if it cannot.
    pub fn unusable_reason(&self, at: i64) -> Option<&'static str> {
        if !self.enabled {
            Some("disabled")
        } else if self.nbf.is_some_and(|nbf| at < nbf) {
            Some("not yet valid")
        } else if self.exp.is_some_and(|exp| at >= exp) {
            Some("expired")
        } else {
            None
        }
    }
}

/// The `attributes` object of a create/update request. `null` clears `nbf`/`exp`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AttributesPatch {
    /// New enabled flag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New not-before (`Some(None)` clears it).
    #[serde(default, deserialize_with = "double_option")]
    pub nbf: Option<Option<i64>>,
    /// New expiry (`Some(None)` clears it).
    #[serde(default, deserialize_with = "double_option")]
    pub exp: Option<Option<i64>>,
    /// Exportable flag.
    #[serde(default)]
    pub exportable: Option<bool>,
}

fn double_option<'de, D>(d: D) -> Result<Option<Option<i64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<i64>::deserialize(d).map(Some)
}

/// Tags: free-form string pairs.
pub type Tags = BTreeMap<String, String>;

/// One key version.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    /// 32-hex version id.
    pub version: String,
    /// Key type as created (`RSA`, `RSA-HSM`, ...).
    pub kty: KeyType,
    /// Private material, shared so operations can run outside the store lock.
    pub material: Arc<Material>,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    pub tags: Tags,
}

/// A key with all its versions.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// Name as created.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<KeyVersion>,
    /// Backs a certificate.
    pub managed: bool,
    /// Rotation policy as last set (JSON), if any.
    pub rotation_policy: Option<Value>,
}

/// One secret version.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// 32-hex version id.
    pub version: String,
    /// The value. Never printed.
    pub value: SecretString,
    /// Content type.
    pub content_type: Option<String>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    pub tags: Tags,
}

/// A secret with all its versions.
#[derive(Debug, Clone)]
pub struct SecretEntry {
    /// Name as created.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<SecretVersion>,
    /// Backs a certificate (`kid` set, `managed: true`).
    pub managed: bool,
}

/// One certificate version.
#[derive(Debug, Clone)]
pub struct CertVersion {
    /// 32-hex version id, shared with the backing key and secret versions.
    pub version: String,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Attributes (nbf/exp from the certificate).
    pub attributes: Attributes,
    /// Tags.
    pub tags: Tags,
    /// The policy in force when this version was made.
    pub policy: Value,
}

/// A pending certificate operation, reported by `GET /certificates/{name}/pending`.
#[derive(Debug, Clone)]
pub struct PendingOp {
    /// Request id.
    pub request_id: String,
    /// Issuer name from the policy.
    pub issuer: String,
    /// The version it will produce / produced.
    pub version: String,
    /// CSR (base64) of the new key.
    pub csr: String,
    /// Set when the operation failed.
    pub error: Option<(String, String)>,
}

/// A certificate with all its versions.
#[derive(Debug, Clone)]
pub struct CertEntry {
    /// Name as created.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<CertVersion>,
    /// Current policy.
    pub policy: Value,
    /// Last create operation.
    pub pending: Option<PendingOp>,
}

/// A soft-deleted object of any kind, with what was deleted along with it.
#[derive(Debug, Clone)]
pub struct Deleted<T, B = ()> {
    /// The object as it was.
    pub entry: T,
    /// What went with it (a certificate's managed key and secret).
    pub backing: B,
    /// When it was deleted.
    pub deleted_date: i64,
}

/// The live and the soft-deleted objects of one kind, each by lowercased name.
#[derive(Debug, Clone)]
pub struct Collection<T, B = ()> {
    /// Live objects.
    pub live: BTreeMap<String, T>,
    /// Soft-deleted objects.
    pub deleted: BTreeMap<String, Deleted<T, B>>,
}

impl<T, B> Default for Collection<T, B> {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            deleted: BTreeMap::new(),
        }
    }
}

/// A certificate's managed key and secret, kept with it while it is soft-deleted.
#[derive(Debug, Clone)]
pub struct CertBacking {
    /// The backing key.
    pub key: Option<KeyEntry>,
    /// The backing secret.
    pub secret: Option<SecretEntry>,
}

/// One emulated vault.
#[derive(Debug, Clone)]
pub struct Vault {
    /// Vault name (the first DNS label).
    pub name: String,
    /// Vault or Managed HSM.
    pub kind: VaultKind,
    /// Tenant that owns the vault.
    pub tenant: String,
    /// Keys.
    pub keys: Collection<KeyEntry>,
    /// Secrets.
    pub secrets: Collection<SecretEntry>,
    /// Certificates (soft-deleted with their backing key and secret).
    pub certificates: Collection<CertEntry, CertBacking>,
}

impl Vault {
    /// An empty vault.
    pub fn new(name: &str, kind: VaultKind, tenant: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            tenant: tenant.to_owned(),
            keys: Collection::default(),
            secrets: Collection::default(),
            certificates: Collection::default(),
        }
    }
}

/// Finds a version: empty or absent means the latest.
pub fn find_version<'a, T>(
    versions: &'a [T],
    version: Option<&str>,
    id: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    match version {
        None | Some("") => versions.last(),
        Some(v) => versions.iter().find(|x| id(x).eq_ignore_ascii_case(v)),
    }
}

/// Mutable variant of [`find_version`].
pub fn find_version_mut<'a, T>(
    versions: &'a mut [T],
    version: Option<&str>,
    id: impl Fn(&T) -> &str,
) -> Option<&'a mut T> {
    match version {
        None | Some("") => versions.last_mut(),
        Some(v) => versions.iter_mut().find(|x| id(x).eq_ignore_ascii_case(v)),
    }
}

// ---------------------------------------------------------------------------------------
// Persistence (`--state-file`).

/// On-disk form of every vault. Contains private keys and secret values: written 0600.
#[derive(Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub format: u32,
    vaults: Vec<StoredVault>,
}

impl fmt::Debug for StateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateFile({} vaults, [redacted])", self.vaults.len())
    }
}

#[derive(Serialize, Deserialize)]
struct StoredVault {
    name: String,
    kind: VaultKind,
    tenant: String,
    keys: Vec<StoredKey>,
    secrets: Vec<StoredSecret>,
    certificates: Vec<StoredCert>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    name: String,
    managed: bool,
    rotation_policy: Option<Value>,
    versions: Vec<StoredKeyVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyVersion {
    version: String,
    kty: KeyType,
    key_ops: Vec<String>,
    attributes: Attributes,
    tags: Tags,
    material: StoredMaterial,
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    name: String,
    managed: bool,
    versions: Vec<StoredSecretVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecretVersion {
    version: String,
    value: SecretString,
    content_type: Option<String>,
    attributes: Attributes,
    tags: Tags,
}

#[derive(Serialize, Deserialize)]
struct StoredCert {
    name: String,
    policy: Value,
    versions: Vec<StoredCertVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredCertVersion {
    version: String,
    chain_b64: Vec<String>,
    attributes: Attributes,
    tags: Tags,
    policy: Value,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid state.
    #[error("state file {path} is not valid: {reason}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl StateFile {
    /// Snapshot of the given vaults (soft-deleted objects are not kept across restarts).
    pub fn capture<'a>(vaults: impl Iterator<Item = &'a Vault>) -> Self {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let vaults = vaults
            .map(|v| StoredVault {
                name: v.name.clone(),
                kind: v.kind,
                tenant: v.tenant.clone(),
                keys: v
                    .keys
                    .live
                    .values()
                    .map(|k| StoredKey {
                        name: k.name.clone(),
                        managed: k.managed,
                        rotation_policy: k.rotation_policy.clone(),
                        versions: k
                            .versions
                            .iter()
                            .map(|kv| StoredKeyVersion {
                                version: kv.version.clone(),
                                kty: kv.kty,
                                key_ops: kv.key_ops.clone(),
                                attributes: kv.attributes.clone(),
                                tags: kv.tags.clone(),
                                material: kv.material.to_stored(),
                            })
                            .collect(),
                    })
                    .collect(),
                secrets: v
                    .secrets
                    .live
                    .values()
                    .map(|s| StoredSecret {
                        name: s.name.clone(),
                        managed: s.managed,
                        versions: s
                            .versions
                            .iter()
                            .map(|sv| StoredSecretVersion {
                                version: sv.version.clone(),
                                value: sv.value.clone(),
                                content_type: sv.content_type.clone(),
                                attributes: sv.attributes.clone(),
                                tags: sv.tags.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
                certificates: v
                    .certificates
                    .live
                    .values()
                    .map(|c| StoredCert {
                        name: c.name.clone(),
                        policy: c.policy.clone(),
                        versions: c
                            .versions
                            .iter()
                            .map(|cv| StoredCertVersion {
                                version: cv.version.clone(),
                                chain_b64: cv.chain.iter().map(|d| b64.encode(d)).collect(),
                                attributes: cv.attributes.clone(),
                                tags: cv.tags.clone(),
                                policy: cv.policy.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Self { format: 1, vaults }
    }

    /// Rebuilds vaults from the snapshot.
    pub fn restore(self) -> Result<Vec<Vault>, String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        if self.format != 1 {
            return Err(format!("unknown format {}", self.format));
        }
        let mut out = Vec::new();
        for sv in self.vaults {
            let mut vault = Vault::new(&sv.name, sv.kind, &sv.tenant);
            for k in sv.keys {
                let mut versions = Vec::new();
                for kv in k.versions {
                    let material = Material::from_stored(&kv.material)
                        .map_err(|e| format!("key {}: {e}", k.name))?;
                    versions.push(KeyVersion {
                        version: kv.version,
                        kty: kv.kty,
                        material: Arc::new(material),
                        key_ops: kv.key_ops,
                        attributes: kv.attributes,
                        tags: kv.tags,
                    });
                }
                vault.keys.live.insert(
                    k.name.to_ascii_lowercase(),
                    KeyEntry {
                        name: k.name,
                        versions,
                        managed: k.managed,
                        rotation_policy: k.rotation_policy,
                    },
                );
            }
            for s in sv.secrets {
                let versions = s
                    .versions
                    .into_iter()
                    .map(|v| SecretVersion {
                        version: v.version,
                        value: v.value,
                        content_type: v.content_type,
                        attributes: v.attributes,
                        tags: v.tags,
                    })
                    .collect();
                vault.secrets.live.insert(
                    s.name.to_ascii_lowercase(),
                    SecretEntry {
                        name: s.name,
                        versions,
                        managed: s.managed,
                    },
                );
            }
            for c in sv.certificates {
                let mut versions = Vec::new();
                for cv in c.versions {
                    let chain = cv
                        .chain_b64
                        .iter()
                        .map(|d| b64.decode(d))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| format!("certificate {}: chain is not base64", c.name))?;
                    versions.push(CertVersion {
                        version: cv.version,
                        chain,
                        attributes: cv.attributes,
                        tags: cv.tags,
                        policy: cv.policy,
                    });
                }
                vault.certificates.live.insert(
                    c.name.to_ascii_lowercase(),
                    CertEntry {
                        name: c.name,
                        versions,
                        policy: c.policy,
                        pending: None,
                    },
                );
            }
            out.push(vault);
        }
        Ok(out)
    }

    /// Reads a state file; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Vec<Vault>>, StateError> {
        let text = match std::fs::read(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let file: StateFile = serde_json::from_slice(&text).map_err(|e| StateError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        file.restore()
            .map(Some)
            .map_err(|reason| StateError::Invalid {
                path: path.display().to_string(),
                reason,
            })
    }

    /// Writes atomically (temporary file in the same directory, mode 0600, then rename).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let io_err = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = Zeroizing::new(serde_json::to_vec(self).map_err(|e| StateError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&bytes).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err)
    }
}

/// One vault behind a lock, with a flag telling the server to persist after a change.
#[derive(Debug)]
pub struct VaultCell {
    inner: std::sync::RwLock<Vault>,
    dirty: std::sync::atomic::AtomicBool,
}

impl VaultCell {
    /// Wraps a vault.
    pub fn new(vault: Vault) -> Self {
        Self {
            inner: std::sync::RwLock::new(vault),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&Vault) -> R) -> R {
        let guard = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&guard)
    }

    /// Changes under the lock and marks the vault dirty.
    pub fn write<R>(&self, f: impl FnOnce(&mut Vault) -> R) -> R {
        let mut guard = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        f(&mut guard)
    }

    /// Clears and returns the dirty flag.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}
