//! Tests of the etcd envelope: the KDF against HMAC written out, the sealed layout, and the
//! `EncryptedObject` protobuf fields.

use sha2::Digest as _;

use super::*;
use crate::probe::steps::SAMPLE_SECRET;

const SEED: [u8; 32] = [7; 32];
const INFO: [u8; 32] = [1; 32];
const NONCE: [u8; 12] = [2; 12];
const AAD: &[u8] = b"/registry/secrets/default/x";

/// HMAC-SHA256 written out, to check the KDF independently of the hkdf crate's API.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    sha2::Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn kdf_is_hkdf_expand_only_as_kube_apiserver() {
    // Go: hkdf.Expand(sha256.New, seed, info), 32 bytes = T(1) = HMAC(seed, info || 0x01).
    let mut msg = INFO.to_vec();
    msg.push(1);
    let key = hmac_sha256(&SEED, &msg);
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, b"hello", AAD).unwrap();
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let plain = cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(&NONCE),
            Payload {
                msg: &sealed[44..],
                aad: AAD,
            },
        )
        .unwrap();
    assert_eq!(plain, b"hello");
}

#[test]
fn envelope_layout_and_round_trip() {
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, SAMPLE_SECRET, AAD).unwrap();
    assert_eq!(
        sealed.len(),
        INFO_SIZE + NONCE_SIZE + SAMPLE_SECRET.len() + TAG_SIZE
    );
    assert_eq!(&sealed[..32], &INFO);
    assert_eq!(&sealed[32..44], &NONCE);
    assert_eq!(
        open_kdf(&SEED, &sealed, AAD).unwrap().as_slice(),
        SAMPLE_SECRET
    );

    // Random info and nonce: two seals differ, both open.
    let a = seal_kdf(&SEED, b"x", AAD).unwrap();
    let b = seal_kdf(&SEED, b"x", AAD).unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32 + 12 + 1 + 16);
    assert_eq!(open_kdf(&SEED, &b, AAD).unwrap().as_slice(), b"x");
}

#[test]
fn envelope_open_fails_with_wrong_seed_aad_or_data() {
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, SAMPLE_SECRET, AAD).unwrap();
    let wrong_seed = [8u8; 32];
    assert!(open_kdf(&wrong_seed, &sealed, AAD).is_err());
    assert!(open_kdf(&SEED, &sealed, b"/registry/secrets/default/y").is_err());
    let mut flipped = sealed.clone();
    flipped[5] ^= 1; // info is authenticated through the key
    assert!(open_kdf(&SEED, &flipped, AAD).is_err());
    assert!(open_kdf(&SEED, &sealed[..32 + 12 + 15], AAD).is_err());
    assert!(open_kdf(&SEED, &[], AAD).is_err());
    assert!(seal_kdf(&[0u8; 31], b"x", AAD).is_err());
    let err = open_kdf(&wrong_seed, &sealed, AAD).unwrap_err().to_string();
    assert!(!err.contains("07070707"));
}

#[test]
fn etcd_value_prefix_and_protobuf_fields() {
    let object = EncryptedObject {
        encrypted_data: vec![0xaa; 3],
        key_id: "kid".into(),
        encrypted_dek_source: vec![0xbb; 2],
        annotations: HashMap::from([("version.azure.akv.io".into(), b"1".to_vec())]),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    let value = encode_etcd_value("azurekmsprovider", &object);
    let prefix = b"k8s:enc:kms:v2:azurekmsprovider:";
    assert!(value.starts_with(prefix));
    let body = &value[prefix.len()..];
    // field 1 bytes, field 2 string, field 3 bytes, field 4 map entry, field 5 varint 1
    assert_eq!(&body[..5], &[0x0a, 3, 0xaa, 0xaa, 0xaa]);
    assert_eq!(&body[5..10], &[0x12, 3, b'k', b'i', b'd']);
    assert_eq!(&body[10..14], &[0x1a, 2, 0xbb, 0xbb]);
    assert_eq!(body[14], 0x22);
    assert_eq!(&body[body.len() - 2..], &[0x28, 0x01]);
    assert_eq!(
        decode_etcd_value("azurekmsprovider", &value).unwrap(),
        object
    );
    assert!(decode_etcd_value("other", &value).is_err());
    assert!(validate_encrypted_object(&object).is_empty());

    let bad = EncryptedObject {
        encrypted_data: vec![],
        key_id: String::new(),
        encrypted_dek_source: vec![],
        annotations: HashMap::from([("Bad_Key".into(), vec![])]),
        encrypted_dek_source_type: 7,
    };
    assert_eq!(validate_encrypted_object(&bad).len(), 5);
}
