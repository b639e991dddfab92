//! The envelope kube-apiserver writes to etcd (pure): the `k8s:enc:kms:v2:<name>:` prefix,
//! the `EncryptedObject` protobuf, and the KDF-mode sealing (HKDF-SHA256-Expand + AES-256-GCM).

use std::collections::HashMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{ProbeError, validate_annotations, validate_ciphertext, validate_key_id};

/// The prefix of every KMS v2 value in etcd; the provider name and `:` follow.
pub const KMS_V2_PREFIX: &str = "k8s:enc:kms:v2:";
/// Size of the seed kube-apiserver wraps (`MinSeedSizeExtendedNonceGCM`).
pub const SEED_SIZE: usize = 32;
/// Size of the random HKDF info prefixed to every sealed value.
pub const INFO_SIZE: usize = 32;
/// AES-GCM nonce size.
pub const NONCE_SIZE: usize = 12;
/// AES-GCM tag size.
pub const TAG_SIZE: usize = 16;

/// The value kube-apiserver stores in etcd after the `k8s:enc:kms:v2:<name>:` prefix:
/// `EncryptedObject` of `k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto`
/// (package `v2`). Field numbers verified against that file: `encryptedData = 1`,
/// `keyID = 2`, `encryptedDEKSource = 3`, `annotations = 4`, `encryptedDEKSourceType = 5`.
/// Everything in it is stored in etcd in the clear: it holds no secret bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    /// The sealed object: `info(32) || nonce(12) || ciphertext || tag(16)` in KDF mode.
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The KMS key id returned by Encrypt.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The Encrypt ciphertext of the seed (or of the DEK in the pre-1.29 mode).
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// The annotations returned by Encrypt.
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
    /// How the plaintext of `encrypted_dek_source` becomes the DEK
    /// ([`EncryptedDekSourceType`]).
    #[prost(enumeration = "EncryptedDekSourceType", tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// `EncryptedDEKSourceType` (values verified against the kube-apiserver `api.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EncryptedDekSourceType {
    /// `AES_GCM_KEY = 0`: the plaintext is the AES-GCM DEK itself (kube-apiserver < 1.29,
    /// or the `KMSv2KDF` feature gate off).
    AesGcmKey = 0,
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED = 1`: the plaintext is a seed; each write derives
    /// its DEK with HKDF-SHA256-Expand from 32 random info bytes (kube-apiserver ≥ 1.29).
    HkdfSha256XnonceAesGcmSeed = 1,
}

pub(super) fn prefix(provider_name: &str) -> String {
    format!("{KMS_V2_PREFIX}{provider_name}:")
}

/// The etcd value: `k8s:enc:kms:v2:<provider_name>:` followed by the protobuf `object`.
pub fn encode_etcd_value(provider_name: &str, object: &EncryptedObject) -> Vec<u8> {
    let prefix = prefix(provider_name);
    let mut value = Vec::with_capacity(prefix.len() + prost::Message::encoded_len(object));
    value.extend_from_slice(prefix.as_bytes());
    value.extend_from_slice(&prost::Message::encode_to_vec(object));
    value
}

/// Parses an etcd value written with the provider `provider_name`.
pub fn decode_etcd_value(provider_name: &str, value: &[u8]) -> Result<EncryptedObject, ProbeError> {
    let prefix = prefix(provider_name);
    let body = value.strip_prefix(prefix.as_bytes()).ok_or_else(|| {
        ProbeError::Envelope(format!("the etcd value does not start with {prefix:?}"))
    })?;
    <EncryptedObject as prost::Message>::decode(body)
        .map_err(|e| ProbeError::Envelope(format!("the EncryptedObject does not decode: {e}")))
}

/// `ValidateEncryptedObject`: what kube-apiserver checks before writing and after reading.
/// Returns one sentence per problem.
pub fn validate_encrypted_object(object: &EncryptedObject) -> Vec<String> {
    let mut problems = Vec::new();
    if EncryptedDekSourceType::try_from(object.encrypted_dek_source_type).is_err() {
        problems.push(format!(
            "unknown encryptedDEKSourceType {}",
            object.encrypted_dek_source_type
        ));
    }
    if object.encrypted_data.is_empty() {
        problems.push("encryptedData is empty".to_owned());
    }
    if let Err(e) = validate_ciphertext(&object.encrypted_dek_source) {
        problems.push(e);
    }
    if let Err(e) = validate_key_id(&object.key_id) {
        problems.push(format!("keyID {e}"));
    }
    problems.extend(validate_annotations(&object.annotations));
    problems
}

/// Seals `plaintext` as kube-apiserver does in KDF mode: 32 random info bytes, DEK =
/// HKDF-SHA256-Expand(seed, info) (no Extract, no salt), AES-256-GCM with a random nonce and
/// `aad` (the etcd key) as additional data. Returns `info || nonce || ciphertext || tag`.
pub fn seal_kdf(seed: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, ProbeError> {
    let mut info = [0u8; INFO_SIZE];
    let mut nonce = [0u8; NONCE_SIZE];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut info);
    rng.fill_bytes(&mut nonce);
    seal_kdf_with(seed, &info, &nonce, plaintext, aad)
}

fn seal_kdf_with(
    seed: &[u8],
    info: &[u8; INFO_SIZE],
    nonce: &[u8; NONCE_SIZE],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, ProbeError> {
    let cipher = kdf_cipher(seed, info)?;
    let sealed = cipher
        .encrypt(
            &aes_gcm::Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| ProbeError::Envelope("AES-GCM sealing failed".to_owned()))?;
    let mut out = Vec::with_capacity(INFO_SIZE + NONCE_SIZE + sealed.len());
    out.extend_from_slice(info);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal_kdf`] (or kube-apiserver in KDF mode) sealed with `seed` under `aad`.
pub fn open_kdf(seed: &[u8], data: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProbeError> {
    let short = || {
        ProbeError::Envelope(format!(
            "the stored data is {} bytes, shorter than info {INFO_SIZE} + nonce {NONCE_SIZE} + tag {TAG_SIZE}",
            data.len()
        ))
    };
    let (info, rest) = data.split_first_chunk::<INFO_SIZE>().ok_or_else(short)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_SIZE>().ok_or_else(short)?;
    if sealed.len() < TAG_SIZE {
        return Err(short());
    }
    let cipher = kdf_cipher(seed, info)?;
    cipher
        .decrypt(&aes_gcm::Nonce::from(*nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| {
            ProbeError::Envelope(
                "AES-GCM authentication failed (wrong seed, wrong storage key, or corrupted data)"
                    .to_owned(),
            )
        })
}

/// The AES-256-GCM cipher keyed with HKDF-SHA256-Expand(seed, info), as
/// `extendedNonceGCM.sha256KDFExpandOnly`.
fn kdf_cipher(seed: &[u8], info: &[u8; INFO_SIZE]) -> Result<Aes256Gcm, ProbeError> {
    if seed.len() < SEED_SIZE {
        return Err(ProbeError::Envelope(format!(
            "the seed is {} bytes; kube-apiserver requires at least {SEED_SIZE}",
            seed.len()
        )));
    }
    let hkdf = Hkdf::<Sha256>::from_prk(seed)
        .map_err(|_| ProbeError::Envelope("the seed is not a usable HKDF key".to_owned()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf.expand(info, key.as_mut_slice())
        .map_err(|_| ProbeError::Envelope("HKDF expansion failed".to_owned()))?;
    Aes256Gcm::new_from_slice(key.as_slice())
        .map_err(|_| ProbeError::Envelope("AES-256 key setup failed".to_owned()))
}

#[cfg(test)]
mod tests;
