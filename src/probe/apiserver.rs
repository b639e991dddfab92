//! [`ApiServer`]: kube-apiserver's KMS v2 transformer state over one plugin connection.
//!
//! What it models, from `staging/src/k8s.io/apiserver/pkg/server/options/encryptionconfig/config.go`
//! (`kmsv2PluginProbe`, `rotateDEKOnKeyIDChange`, `getCurrentState`) and
//! `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/envelope.go`
//! (`TransformFromStorage`, `TransformToStorage`, `GenerateTransformer`, `generateCacheKey`):
//!
//! - Every Status poll whose `key_id` is valid (non-empty, at most 1024 bytes) checks the
//!   write state, **whatever `healthz` says**. Same key id: the state's write expiry moves
//!   forward by [`WRITE_STATE_MAX_TTL`]. No state or another key id: a fresh 32-byte seed
//!   is wrapped with Encrypt; the result becomes the write state only if Encrypt succeeded,
//!   its `EncryptedObject` validates and its key id equals Status's. Otherwise the previous
//!   state stays.
//! - Without a write state there is no transformer: every read and every write fails with
//!   `got unexpected nil transformer`.
//! - Writes use the write state's seed (HKDF + AES-GCM, the etcd key as additional data)
//!   and fail once the state has not been confirmed by a Status for
//!   [`WRITE_STATE_MAX_TTL`]. Reads never expire.
//! - Seeds are cached keyed by (DEK source type, encrypted DEK source, key id, annotations);
//!   the seeds this stand-in wrapped itself are in that cache from the start, so it never
//!   sends Decrypt for them. Any other DEK source costs one Decrypt, then hits the cache.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::{
    Client, EncryptedDekSourceType, EncryptedObject, KEY_ID_MAX_SIZE, ProbeOptions, SEED_SIZE,
    call, decode_etcd_value, encode_etcd_value, new_uid, open_kdf, printable, request, seal_kdf,
    validate_encrypted_object, validate_key_id,
};
use crate::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use crate::proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use crate::secret::SecretBytes;

/// How long kube-apiserver keeps writing with a write state no Status has confirmed
/// (`kmsv2PluginWriteDEKSourceMaxTTL`). Reads are allowed indefinitely.
pub const WRITE_STATE_MAX_TTL: Duration = Duration::from_secs(3 * 60);

/// kube-apiserver's error for a read or write before any Encrypt succeeded.
pub const NIL_TRANSFORMER: &str = "got unexpected nil transformer";

/// What one Status call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSeen {
    /// `healthz` as sent (kube-apiserver's health check wants `"ok"`).
    pub healthz: String,
    /// `version` as sent (`v2` or `v2beta1`).
    pub version: String,
    /// `key_id` as sent.
    pub key_id: String,
}

/// A seed (a plugin's Decrypt plaintext or one this stand-in generated). The only place
/// seed bytes live; zeroed on drop and never printed (`Seed([redacted])`). A newtype for
/// the meaning, over the crate's one secret type.
#[derive(Debug)]
struct Seed(SecretBytes);

/// kube-apiserver's seed-cache key (`generateCacheKey`): the DEK source type, the encrypted
/// DEK source, the key id and the annotations. None of it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeedKey {
    source_type: i32,
    encrypted_dek_source: Vec<u8>,
    key_id: String,
    annotations: BTreeMap<String, Vec<u8>>,
}

impl SeedKey {
    fn of(object: &EncryptedObject) -> Self {
        Self {
            source_type: object.encrypted_dek_source_type,
            encrypted_dek_source: object.encrypted_dek_source.clone(),
            key_id: object.key_id.clone(),
            annotations: object
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The current write state: the seed wrapped by the last accepted Encrypt, and the
/// `EncryptedObject` fields every write carries.
#[derive(Debug)]
struct WriteState {
    seed: Seed,
    /// The Encrypt response, as every written `EncryptedObject` carries it.
    encrypted: EncryptResponse,
    key: SeedKey,
    /// Writes fail after this instant (extended by every Status with the same key id).
    expires_at: Instant,
}

/// What [`ApiServer::poll_steps`] saw, for the probe report.
#[derive(Debug)]
pub(super) struct PollOutcome {
    /// The Status RPC's latency and its answer or failure.
    pub(super) status: (f64, Result<StatusSeen, String>),
    /// The Encrypt RPC's latency and what became of it; `None` when no Encrypt was sent.
    pub(super) encrypt: Option<(f64, Result<EncryptResponse, String>)>,
}

/// A kube-apiserver's KMS v2 transformer state over one plugin connection.
///
/// Each value is one kube-apiserver process: a new one has no write state and an empty seed
/// cache, as after a restart. It holds seeds in memory only (zeroed on drop) and never
/// prints them. The seed cache grows with the distinct DEK sources read (kube-apiserver's
/// expires entries after 24 h; this one lives as long as the value).
pub struct ApiServer {
    client: Client,
    options: ProbeOptions,
    write: Option<WriteState>,
    seeds: HashMap<SeedKey, Seed>,
    decrypt_calls: usize,
    encrypt_calls: usize,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("provider_name", &self.options.provider_name)
            .field("write_key_id", &self.write_key_id())
            .field("cached_seeds", &self.seeds.len())
            .field("decrypt_calls", &self.decrypt_calls)
            .field("encrypt_calls", &self.encrypt_calls)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A freshly started kube-apiserver talking to the plugin over `channel`: no write state,
    /// no cached seeds. `options` gives the call timeout and the provider name of the etcd
    /// prefix (its `envelope`, `storage_key` and `store` are not used here).
    pub fn new(channel: Channel, options: ProbeOptions) -> Self {
        Self {
            client: KeyManagementServiceClient::new(channel),
            options,
            write: None,
            seeds: HashMap::new(),
            decrypt_calls: 0,
            encrypt_calls: 0,
        }
    }

    /// One Status poll as kube-apiserver makes it, with the write-state rule above.
    /// Returns what Status said (healthz, version, key_id) or the failure as a sentence;
    /// a failed Encrypt after a valid Status is an Err naming Encrypt's failure.
    ///
    /// An unhealthy `healthz`, an unknown version or an invalid key id is not an Err: the
    /// caller judges what Status said. With an invalid key id no Encrypt is sent.
    pub async fn poll(&mut self) -> Result<StatusSeen, String> {
        let outcome = self.poll_steps().await;
        let seen = outcome.status.1?;
        match outcome.encrypt {
            Some((_, Err(e))) => Err(e),
            _ => Ok(seen),
        }
    }

    /// [`ApiServer::poll`] with each RPC's latency and the Encrypt response, for the report.
    pub(super) async fn poll_steps(&mut self) -> PollOutcome {
        let timeout = self.options.timeout;
        let (latency, result) = call(
            timeout,
            self.client.status(request(StatusRequest {}, timeout)),
        )
        .await;
        let seen = match result {
            Ok(status) => StatusSeen {
                healthz: status.healthz,
                version: status.version,
                key_id: status.key_id,
            },
            Err(e) => {
                return PollOutcome {
                    status: (latency, Err(format!("Status: {e}"))),
                    encrypt: None,
                };
            }
        };
        let encrypt = if validate_key_id(&seen.key_id).is_ok() {
            self.rotate_on_key_id_change(&seen.key_id).await
        } else {
            None
        };
        PollOutcome {
            status: (latency, Ok(seen)),
            encrypt,
        }
    }

    /// `rotateDEKOnKeyIDChange`: keep (and extend) the write state if its key id is
    /// Status's, else wrap a fresh seed. Returns the Encrypt RPC, if one was sent.
    async fn rotate_on_key_id_change(
        &mut self,
        status_key_id: &str,
    ) -> Option<(f64, Result<EncryptResponse, String>)> {
        // The expiry counts from before the call, as kube-apiserver's.
        let expires_at = Instant::now() + WRITE_STATE_MAX_TTL;
        if let Some(state) = self.write.as_mut()
            && state.encrypted.key_id == status_key_id
        {
            state.expires_at = expires_at;
            return None;
        }

        let mut seed = Zeroizing::new(vec![0u8; SEED_SIZE]);
        rand::rng().fill_bytes(seed.as_mut_slice());
        let timeout = self.options.timeout;
        let message = EncryptRequest {
            plaintext: seed.to_vec(),
            uid: new_uid(),
        };
        self.encrypt_calls += 1;
        let (latency, result) = call(timeout, self.client.encrypt(request(message, timeout))).await;
        let response = match result {
            Ok(response) => response,
            Err(e) => return Some((latency, Err(format!("Encrypt: {e}")))),
        };
        if response.key_id != status_key_id {
            return Some((
                latency,
                Err(format!(
                    "Encrypt returned key_id {:?} but Status said {:?}: kube-apiserver throws \
                     the new seed away and keeps its previous write state",
                    printable(&response.key_id, KEY_ID_MAX_SIZE),
                    printable(status_key_id, KEY_ID_MAX_SIZE)
                )),
            ));
        }
        let object = state_object(&response);
        let problems = validate_encrypted_object(&object);
        if !problems.is_empty() {
            return Some((
                latency,
                Err(format!(
                    "kube-apiserver refuses the Encrypt response: {}",
                    problems.join("; ")
                )),
            ));
        }
        let key = SeedKey::of(&object);
        if let Some(previous) = self.write.take() {
            // Values written with the previous seed still open without a Decrypt, as
            // kube-apiserver's cache holds the transformers it wrote with.
            self.seeds.insert(previous.key, previous.seed);
        }
        self.write = Some(WriteState {
            seed: Seed(seed.into()),
            encrypted: response.clone(),
            key,
            expires_at,
        });
        Some((latency, Ok(response)))
    }

    /// Whether an Encrypt has succeeded since this stand-in started.
    pub fn has_transformer(&self) -> bool {
        self.write.is_some()
    }

    /// The key_id of the current write state.
    pub fn write_key_id(&self) -> Option<&str> {
        self.write.as_ref().map(|w| w.encrypted.key_id.as_str())
    }

    /// Seals `plaintext` under `storage_key` (the etcd key, AES-GCM additional data) with the
    /// write state's seed: the full etcd value `k8s:enc:kms:v2:<provider>:` + EncryptedObject.
    /// Err("got unexpected nil transformer") without a write state.
    ///
    /// Also fails, as kube-apiserver's `ValidateEncryptCapability`, when no Status has
    /// confirmed the write state's key id for [`WRITE_STATE_MAX_TTL`].
    pub fn write(&self, storage_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let state = self.write.as_ref().ok_or(NIL_TRANSFORMER)?;
        if Instant::now() > state.expires_at {
            return Err(format!(
                "the write state for key_id {:?} expired: no Status has confirmed it for {} \
                 (kube-apiserver's kmsv2PluginWriteDEKSourceMaxTTL)",
                printable(&state.encrypted.key_id, KEY_ID_MAX_SIZE),
                humantime::format_duration(WRITE_STATE_MAX_TTL)
            ));
        }
        let sealed = seal_kdf(
            state.seed.0.expose_secret(),
            plaintext,
            storage_key.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let object = EncryptedObject {
            encrypted_data: sealed,
            ..state_object(&state.encrypted)
        };
        let problems = validate_encrypted_object(&object);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(encode_etcd_value(&self.options.provider_name, &object))
    }

    /// Reads an etcd value as kube-apiserver: decode, nil-transformer check, own seed if the
    /// DEK source is its own write state's, else its seed cache, else one Decrypt RPC (under
    /// options.timeout), then open with AAD = storage_key.
    ///
    /// The order of the first two is `TransformFromStorage`'s (`doDecode`, then
    /// `stateFunc`): a value that does not decode fails for that reason even without a
    /// transformer; a valid one fails with `got unexpected nil transformer`. Values of the
    /// pre-1.29 mode (`AES_GCM_KEY`, the Decrypt plaintext is the DEK itself) are refused
    /// with an error saying so.
    pub async fn read(
        &mut self,
        storage_key: &str,
        value: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let object =
            decode_etcd_value(&self.options.provider_name, value).map_err(|e| e.to_string())?;
        let problems = validate_encrypted_object(&object);
        if !problems.is_empty() {
            return Err(format!("invalid EncryptedObject: {}", problems.join("; ")));
        }
        if self.write.is_none() {
            return Err(NIL_TRANSFORMER.to_owned());
        }
        if object.encrypted_dek_source_type
            != EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32
        {
            return Err(
                "encryptedDEKSourceType AES_GCM_KEY (kube-apiserver < 1.29 or KMSv2KDF off) is \
                 not read by this stand-in"
                    .to_owned(),
            );
        }
        let key = SeedKey::of(&object);
        if self.seed(&key).is_none() {
            let seed = self.decrypt_seed(&object).await?;
            self.seeds.insert(key.clone(), seed);
        }
        let seed = self.seed(&key).ok_or(NIL_TRANSFORMER)?;
        open_kdf(
            seed.0.expose_secret(),
            &object.encrypted_data,
            storage_key.as_bytes(),
        )
        .map_err(|e| e.to_string())
    }

    /// The seed for `key`: the write state's, else the cache's.
    fn seed(&self, key: &SeedKey) -> Option<&Seed> {
        match &self.write {
            Some(state) if state.key == *key => Some(&state.seed),
            _ => self.seeds.get(key),
        }
    }

    /// One Decrypt of a stored DEK source (`addTransformerForDecryption` refuses a seed
    /// shorter than 32 bytes, so it is not cached).
    async fn decrypt_seed(&mut self, object: &EncryptedObject) -> Result<Seed, String> {
        let timeout = self.options.timeout;
        let message = DecryptRequest {
            ciphertext: object.encrypted_dek_source.clone(),
            uid: new_uid(),
            key_id: object.key_id.clone(),
            annotations: object.annotations.clone(),
        };
        self.decrypt_calls += 1;
        let (_, result) = call(timeout, self.client.decrypt(request(message, timeout))).await;
        let seed = Zeroizing::new(
            result
                .map_err(|e| format!("failed to decrypt DEK, error: {e}"))?
                .plaintext,
        );
        if seed.len() < SEED_SIZE {
            return Err(format!(
                "Decrypt returned {} bytes; kube-apiserver needs a seed of at least {SEED_SIZE}",
                seed.len()
            ));
        }
        Ok(Seed(seed.into()))
    }

    /// Decrypt RPCs sent so far.
    pub fn decrypt_calls(&self) -> usize {
        self.decrypt_calls
    }

    /// Encrypt RPCs sent so far.
    pub fn encrypt_calls(&self) -> usize {
        self.encrypt_calls
    }

    /// Makes the write state look unconfirmed for longer than [`WRITE_STATE_MAX_TTL`].
    #[cfg(test)]
    pub(super) fn expire_write_state(&mut self) {
        if let Some(state) = self.write.as_mut() {
            state.expires_at = Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now);
        }
    }
}

/// The `EncryptedObject` of the write state, without `encryptedData` (which each write
/// fills in).
fn state_object(encrypted: &EncryptResponse) -> EncryptedObject {
    EncryptedObject {
        encrypted_data: vec![0],
        key_id: encrypted.key_id.clone(),
        encrypted_dek_source: encrypted.ciphertext.clone(),
        annotations: encrypted.annotations.clone(),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    }
}

#[cfg(test)]
mod tests;
