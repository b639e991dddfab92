//! The KMS ciphertext contract, as pure code: key ids, annotations, and the validation of
//! every field kube-apiserver sends. Compatible with Azure/kubernetes-kms: the same key id,
//! the same ciphertext (Key Vault's base64url text), the same annotations, plus ours.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;

pub use crate::azure::key::{KeyRef, KeyVersion, ResponseInfo};

/// `version.azure.akv.io`: the envelope format version the Go plugin writes (`1`).
pub const ANNOTATION_VERSION: &str = "version.azure.akv.io";
/// `algorithm.azure.akv.io`: the Key Vault algorithm that wrapped the seed.
pub const ANNOTATION_ALGORITHM: &str = "algorithm.azure.akv.io";
/// `date.azure.akv.io`: Key Vault's `Date` header.
pub const ANNOTATION_DATE: &str = "date.azure.akv.io";
/// `x-ms-request-id.azure.akv.io`: Key Vault's request id.
pub const ANNOTATION_REQUEST_ID: &str = "x-ms-request-id.azure.akv.io";
/// `x-ms-keyvault-region.azure.akv.io`: the region that served the request.
pub const ANNOTATION_REGION: &str = "x-ms-keyvault-region.azure.akv.io";
/// `key-version.akv-bridge.io`: the key version that wrapped the seed (ours), so Decrypt
/// needs no lookup and keeps working after rotation.
pub const ANNOTATION_KEY_VERSION: &str = "key-version.akv-bridge.io";

/// The envelope format version.
pub const ENVELOPE_VERSION: &str = "1";
/// The algorithm new seeds are wrapped with.
pub const WRAP_ALGORITHM: &str = "RSA-OAEP-256";
/// The algorithm of the v1beta1 API (as the Go plugin used it).
pub const V1_ALGORITHM: &str = "RSA1_5";

/// Largest ciphertext or key id kube-apiserver stores.
pub const MAX_CIPHERTEXT: usize = 1024;
/// Largest key id.
pub const MAX_KEY_ID: usize = 1024;
/// Largest plaintext: RSA-OAEP-256 with a 2048-bit key carries at most 190 bytes (the API
/// server's seeds are 32).
pub const MAX_PLAINTEXT: usize = 190;
/// Largest total size of annotation keys and values.
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

/// Why a request is refused. Messages name the problem and never contain request bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The plaintext is empty.
    #[error("plaintext is empty")]
    EmptyPlaintext,
    /// The plaintext is larger than RSA-OAEP-256 can carry.
    #[error("plaintext is {0} bytes; at most {MAX_PLAINTEXT} are allowed")]
    PlaintextTooLarge(usize),
    /// The ciphertext is empty.
    #[error("ciphertext is empty")]
    EmptyCiphertext,
    /// The ciphertext is larger than the API server stores.
    #[error("ciphertext is {0} bytes; at most {MAX_CIPHERTEXT} are allowed")]
    CiphertextTooLarge(usize),
    /// The ciphertext is not Key Vault's base64url text.
    #[error("ciphertext is not base64url text as Key Vault returns it")]
    CiphertextNotBase64Url,
    /// The key id is missing.
    #[error("key_id is empty")]
    EmptyKeyId,
    /// The key id is not one this plugin could have produced.
    #[error("key_id is not a lowercase hex SHA-256 ({0} bytes given)")]
    MalformedKeyId(usize),
    /// A required annotation is absent.
    #[error("annotation {0} is missing")]
    MissingAnnotation(&'static str),
    /// An annotation has a value we do not accept.
    #[error("annotation {key} has unsupported value (expected {expected})")]
    BadAnnotation {
        /// The annotation.
        key: &'static str,
        /// What is accepted.
        expected: &'static str,
    },
    /// The annotations are larger than the API server allows.
    #[error("annotations total {0} bytes; at most {MAX_ANNOTATIONS_BYTES} are allowed")]
    AnnotationsTooLarge(usize),
    /// Our key-version annotation names a version whose key id differs from `key_id`.
    #[error("annotation {ANNOTATION_KEY_VERSION} does not match key_id")]
    KeyVersionMismatch,
}

/// Checks a plaintext given to Encrypt.
pub fn check_plaintext(plaintext: &[u8]) -> Result<(), EnvelopeError> {
    match plaintext.len() {
        0 => Err(EnvelopeError::EmptyPlaintext),
        n if n > MAX_PLAINTEXT => Err(EnvelopeError::PlaintextTooLarge(n)),
        _ => Ok(()),
    }
}

/// Checks a key id's shape (64 lowercase hex characters).
pub fn check_key_id(key_id: &str) -> Result<(), EnvelopeError> {
    if key_id.is_empty() {
        return Err(EnvelopeError::EmptyKeyId);
    }
    if key_id.len() != 64
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(EnvelopeError::MalformedKeyId(
            key_id.len().min(MAX_KEY_ID + 1),
        ));
    }
    Ok(())
}

/// Checks a stored ciphertext's size (non-empty, at most 1 KiB), before anything else
/// looks at it.
pub fn check_ciphertext_len(ciphertext: &[u8]) -> Result<(), EnvelopeError> {
    match ciphertext.len() {
        0 => Err(EnvelopeError::EmptyCiphertext),
        n if n > MAX_CIPHERTEXT => Err(EnvelopeError::CiphertextTooLarge(n)),
        _ => Ok(()),
    }
}

/// Decodes a stored ciphertext: Key Vault's base64url text (no padding) of the RSA
/// ciphertext.
pub fn decode_ciphertext(ciphertext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    check_ciphertext_len(ciphertext)?;
    let trimmed = ciphertext
        .iter()
        .rposition(|b| *b != b'=')
        .and_then(|end| ciphertext.get(..=end))
        .ok_or(EnvelopeError::CiphertextNotBase64Url)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| EnvelopeError::CiphertextNotBase64Url)
}

/// Encodes Key Vault's result as the stored ciphertext (base64url, no padding).
pub fn encode_ciphertext(raw: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(raw)
        .into_bytes()
}

/// The annotations of a v2 Encrypt response.
pub fn encrypt_annotations(version: &KeyVersion, info: &ResponseInfo) -> HashMap<String, Vec<u8>> {
    let mut a = HashMap::new();
    a.insert(
        ANNOTATION_VERSION.to_owned(),
        ENVELOPE_VERSION.as_bytes().to_vec(),
    );
    a.insert(
        ANNOTATION_ALGORITHM.to_owned(),
        WRAP_ALGORITHM.as_bytes().to_vec(),
    );
    a.insert(
        ANNOTATION_KEY_VERSION.to_owned(),
        version.as_str().as_bytes().to_vec(),
    );
    // Header values are printable ASCII by HTTP's rules; anything else is left out.
    let printable = |s: &String| s.len() <= 256 && s.bytes().all(|b| (0x20..0x7f).contains(&b));
    for (key, value) in [
        (ANNOTATION_DATE, &info.date),
        (ANNOTATION_REQUEST_ID, &info.request_id),
        (ANNOTATION_REGION, &info.region),
    ] {
        if let Some(v) = value.as_ref().filter(|v| printable(v)) {
            a.insert(key.to_owned(), v.as_bytes().to_vec());
        }
    }
    a
}

/// What the annotations of a Decrypt request say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptMeta {
    /// The Key Vault algorithm to unwrap with.
    pub algorithm: &'static str,
    /// Our key-version annotation, when the ciphertext was written by akv-bridge.
    pub key_version: Option<KeyVersion>,
}

/// Validates a Decrypt request's annotations.
pub fn decrypt_meta(annotations: &HashMap<String, Vec<u8>>) -> Result<DecryptMeta, EnvelopeError> {
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(EnvelopeError::AnnotationsTooLarge(total));
    }
    let version = annotations
        .get(ANNOTATION_VERSION)
        .ok_or(EnvelopeError::MissingAnnotation(ANNOTATION_VERSION))?;
    if version.as_slice() != ENVELOPE_VERSION.as_bytes() {
        return Err(EnvelopeError::BadAnnotation {
            key: ANNOTATION_VERSION,
            expected: ENVELOPE_VERSION,
        });
    }
    let algorithm = annotations
        .get(ANNOTATION_ALGORITHM)
        .ok_or(EnvelopeError::MissingAnnotation(ANNOTATION_ALGORITHM))?;
    let algorithm = match algorithm.as_slice() {
        b"RSA-OAEP-256" => "RSA-OAEP-256",
        b"RSA-OAEP" => "RSA-OAEP",
        _ => {
            return Err(EnvelopeError::BadAnnotation {
                key: ANNOTATION_ALGORITHM,
                expected: "RSA-OAEP-256 or RSA-OAEP",
            });
        }
    };
    let key_version = match annotations.get(ANNOTATION_KEY_VERSION) {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(KeyVersion::parse)
                .ok_or(EnvelopeError::BadAnnotation {
                    key: ANNOTATION_KEY_VERSION,
                    expected: "a Key Vault key version",
                })?,
        ),
    };
    Ok(DecryptMeta {
        algorithm,
        key_version,
    })
}

/// The decrypt-cache key: a SHA-256 digest (length-prefixed parts) of everything that
/// determines the plaintext: the stored ciphertext text, the key id and the algorithm. The
/// key id names the version (our annotation is checked against it), so the version needs
/// no part of its own. A digest keeps an entry small (10,000 entries cost about 1.5 MiB,
/// not the ~6 MiB of whole ciphertexts), and a hit still decodes nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

impl CacheKey {
    /// The key of a stored ciphertext. v1beta1 has no key id: it passes the key id of the
    /// candidate version.
    pub fn new(ciphertext: &[u8], key_id: &str, algorithm: &str) -> Self {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [ciphertext, key_id.as_bytes(), algorithm.as_bytes()] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        Self(out)
    }
}

/// A request uid made safe for logs: at most 64 printable characters.
pub fn loggable_uid(uid: &str) -> String {
    uid.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest as _, Sha256};

    fn v(s: &str) -> KeyVersion {
        KeyVersion::parse(s).unwrap()
    }

    #[test]
    fn key_id_is_sha256_of_the_versioned_url_like_the_go_plugin() {
        let key = KeyRef::new("https://kv.vault.azure.net/", "kek");
        let version = v("0123456789abcdef0123456789abcdef");
        assert_eq!(
            key.versioned_url(&version),
            "https://kv.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef"
        );
        // printf %s URL | sha256sum
        let expected = hex::encode(Sha256::digest(
            b"https://kv.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef",
        ));
        assert_eq!(key.key_id(&version), expected);
        check_key_id(&expected).unwrap();
    }

    #[test]
    fn request_limits() {
        assert_eq!(check_plaintext(b""), Err(EnvelopeError::EmptyPlaintext));
        assert_eq!(
            check_plaintext(&[0; 191]),
            Err(EnvelopeError::PlaintextTooLarge(191))
        );
        check_plaintext(&[0; 32]).unwrap();
        assert_eq!(decode_ciphertext(b""), Err(EnvelopeError::EmptyCiphertext));
        assert_eq!(
            decode_ciphertext(&[b'A'; 1025]),
            Err(EnvelopeError::CiphertextTooLarge(1025))
        );
        assert_eq!(
            decode_ciphertext(b"not base64!"),
            Err(EnvelopeError::CiphertextNotBase64Url)
        );
        assert_eq!(
            decode_ciphertext(b"ab+/"),
            Err(EnvelopeError::CiphertextNotBase64Url),
            "the standard alphabet is not what Key Vault returns"
        );
        assert_eq!(check_key_id(""), Err(EnvelopeError::EmptyKeyId));
        assert!(check_key_id(&"A".repeat(64)).is_err());
        assert!(check_key_id("abc").is_err());
    }

    #[test]
    fn annotations_round_trip_and_are_checked() {
        let version = v("abc123");
        let info = ResponseInfo {
            date: Some("Mon, 23 Nov 2026 05:00:00 GMT".into()),
            request_id: Some("rid".into()),
            region: Some("bad\nregion".into()),
        };
        let a = encrypt_annotations(&version, &info);
        assert!(
            !a.contains_key(ANNOTATION_REGION),
            "non-printable values are dropped"
        );
        let meta = decrypt_meta(&a).unwrap();
        assert_eq!(meta.algorithm, WRAP_ALGORITHM);
        assert_eq!(meta.key_version, Some(version));

        let mut go = HashMap::new();
        go.insert(ANNOTATION_VERSION.to_owned(), b"1".to_vec());
        go.insert(ANNOTATION_ALGORITHM.to_owned(), b"RSA-OAEP-256".to_vec());
        assert_eq!(
            decrypt_meta(&go).unwrap().key_version,
            None,
            "Go plugin data"
        );

        let mut bad = go.clone();
        bad.insert(ANNOTATION_VERSION.to_owned(), b"2".to_vec());
        assert!(matches!(
            decrypt_meta(&bad),
            Err(EnvelopeError::BadAnnotation { .. })
        ));
        let mut bad = go.clone();
        bad.remove(ANNOTATION_ALGORITHM);
        assert_eq!(
            decrypt_meta(&bad),
            Err(EnvelopeError::MissingAnnotation(ANNOTATION_ALGORITHM))
        );
        let mut bad = go.clone();
        bad.insert(ANNOTATION_KEY_VERSION.to_owned(), b"../../x".to_vec());
        assert!(matches!(
            decrypt_meta(&bad),
            Err(EnvelopeError::BadAnnotation { .. })
        ));
        let mut big = go;
        big.insert("pad.example.com".into(), vec![0; MAX_ANNOTATIONS_BYTES]);
        assert!(matches!(
            decrypt_meta(&big),
            Err(EnvelopeError::AnnotationsTooLarge(_))
        ));
    }

    #[test]
    fn cache_keys_separate_fields() {
        let key = CacheKey::new;
        assert_ne!(
            key(b"ab", "c", WRAP_ALGORITHM),
            key(b"a", "bc", WRAP_ALGORITHM)
        );
        assert_ne!(key(b"a", "b", WRAP_ALGORITHM), key(b"a", "b", V1_ALGORITHM));
        assert_eq!(
            key(b"a", "b", WRAP_ALGORITHM),
            key(b"a", "b", WRAP_ALGORITHM)
        );
        assert_eq!(
            format!("{:?}", key(b"a", "b", WRAP_ALGORITHM)),
            "CacheKey(..)"
        );
        assert_eq!(loggable_uid("a\nb"), "a?b");
    }

    proptest! {
        #[test]
        fn ciphertext_encoding_round_trips(raw in proptest::collection::vec(any::<u8>(), 1..700)) {
            let text = encode_ciphertext(&raw);
            prop_assert!(text.len() <= MAX_CIPHERTEXT);
            prop_assert_eq!(decode_ciphertext(&text).unwrap(), raw);
        }

        #[test]
        fn hostile_ciphertexts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = decode_ciphertext(&bytes);
        }
    }
}
