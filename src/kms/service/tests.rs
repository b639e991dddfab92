//! The one error → status mapping, variant by variant, and the v2 service over the
//! in-memory fake: what reaches Key Vault, and which status each Key Vault failure becomes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tonic::Code;

use super::*;
use crate::azure::keyvault::Throttle;
use crate::azure::upstream::Upstream;
use crate::kms::backend::KeyBackend;
use crate::kms::backend::fake::{Failure, FakeVault, Op};
use crate::kms::envelope::{ANNOTATION_ALGORITHM, ANNOTATION_VERSION};
use crate::proto::kms_v2::key_management_service_server::KeyManagementService as _;

/// One of each Key Vault failure, and the code it must become.
fn every_kv_error() -> Vec<(KvError, Code)> {
    vec![
        (
            KvError::NotFound("key kek/v1".into()),
            Code::FailedPrecondition,
        ),
        (
            KvError::PermissionDenied("keys/decrypt"),
            Code::PermissionDenied,
        ),
        (
            KvError::KeyUnusable {
                version: "v1".into(),
                reason: "disabled",
            },
            Code::FailedPrecondition,
        ),
        (
            KvError::Rejected("upstream body: bad padding".into()),
            Code::InvalidArgument,
        ),
        (
            KvError::Unauthenticated {
                by: Upstream::Entra,
                reason: "invalid_client".into(),
            },
            Code::Unauthenticated,
        ),
        (
            KvError::Throttled(Throttle {
                by: Upstream::Entra,
                retry_after: Some(Duration::from_secs(3)),
                beyond_deadline: true,
            }),
            Code::ResourceExhausted,
        ),
        (KvError::unavailable("HTTP 503"), Code::Unavailable),
        (
            KvError::Certificate {
                by: Upstream::KeyVault,
                host: "fake.vault.azure.net".into(),
                reason: "unknown issuer".into(),
            },
            Code::Unavailable,
        ),
        (
            KvError::DeadlineExceeded(Duration::from_millis(2500)),
            Code::DeadlineExceeded,
        ),
    ]
}

#[test]
fn every_key_vault_failure_has_its_code_and_its_own_message() {
    let table = every_kv_error();
    let labels: BTreeSet<&str> = table.iter().map(|(e, _)| e.label()).collect();
    assert_eq!(labels.len(), 9, "one of each KvError variant");
    for (error, code) in table {
        let status = KmsError::KeyVault(error.clone()).to_status();
        assert_eq!(status.code(), code, "{error:?}");
        if matches!(error, KvError::Rejected(_)) {
            // Every authentication failure of a decrypt looks the same, and Key Vault's
            // words are not passed on.
            assert_eq!(
                status.message(),
                "the ciphertext could not be decrypted with this key version"
            );
        } else {
            assert_eq!(status.message(), error.to_string(), "{error:?}");
        }
    }
}

#[test]
fn every_other_failure_has_its_code() {
    let cases = [
        (
            KmsError::Invalid(EnvelopeError::EmptyPlaintext),
            Code::InvalidArgument,
            "plaintext is empty",
        ),
        (
            KmsError::UnknownKeyId("ab".into(), "kek".into()),
            Code::InvalidArgument,
            "key_id ab is not a version of key kek",
        ),
        (
            KmsError::BadApiVersion("v2".into()),
            Code::InvalidArgument,
            "unsupported KMS API version \"v2\"; this endpoint serves v1beta1",
        ),
        (
            KmsError::NotReady("resolving the key version".into()),
            Code::Unavailable,
            "no key version is available yet: resolving the key version",
        ),
        (
            KmsError::WrapRefused("self-test: failed".into()),
            Code::FailedPrecondition,
            "Encrypt is refused: self-test: failed",
        ),
        (
            KmsError::Wrap(WrapError::Encrypt),
            Code::Internal,
            "local RSA encryption failed",
        ),
        (
            KmsError::NoVersionDecrypts("kek".into()),
            Code::InvalidArgument,
            "the ciphertext could not be decrypted with any known version of key kek",
        ),
    ];
    for (error, code, message) in cases {
        let status = error.to_status();
        assert_eq!((status.code(), status.message()), (code, message));
    }
}

/// A v2 service on `fake`, with its ring polled once (settled) unless `fake` fails.
async fn service(fake: &Arc<FakeVault>, remote_encrypt: bool) -> V2 {
    let backend: Arc<dyn KeyBackend> = Arc::clone(fake) as _;
    let ring = Arc::new(KeyRing::new(
        backend,
        None,
        remote_encrypt,
        KeyMetrics::default(),
    ));
    ring.poll_once().await;
    let cache = Arc::new(DecryptCache::new(100, Duration::from_secs(60)));
    V2(Arc::new(Kms::new(
        ring,
        cache,
        ServerMetrics::register(&mut Registry::default()),
        KeyMetrics::default(),
        ServiceConfig {
            status_version: STATUS_VERSION_V2,
        },
    )))
}

async fn encrypt(v2: &V2, plaintext: &[u8]) -> Result<v2::EncryptResponse, Status> {
    v2.encrypt(Request::new(v2::EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "uid".into(),
    }))
    .await
    .map(Response::into_inner)
}

async fn decrypt(v2: &V2, sealed: &v2::EncryptResponse) -> Result<Vec<u8>, Status> {
    v2.decrypt(Request::new(v2::DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: "uid".into(),
        key_id: sealed.key_id.clone(),
        annotations: sealed.annotations.clone(),
    }))
    .await
    .map(|r| r.into_inner().plaintext)
}

#[tokio::test]
async fn a_cached_seed_decrypts_without_key_vault_and_a_miss_asks_once() {
    let fake = FakeVault::new();
    fake.add("v1");
    for remote in [false, true] {
        let v2 = service(&fake, remote).await;
        let sealed = encrypt(&v2, b"seed").await.unwrap();
        let before = fake.calls(Op::Decrypt);
        assert_eq!(decrypt(&v2, &sealed).await.unwrap(), b"seed");
        assert_eq!(
            fake.calls(Op::Decrypt),
            before,
            "a cache hit, remote {remote}"
        );

        // The same ciphertext at a plugin with an empty cache: one Key Vault unwrap.
        let other = service(&fake, remote).await;
        let before = fake.calls(Op::Decrypt);
        assert_eq!(decrypt(&other, &sealed).await.unwrap(), b"seed");
        assert_eq!(decrypt(&other, &sealed).await.unwrap(), b"seed");
        assert_eq!(fake.calls(Op::Decrypt), before + 1, "remote {remote}");
    }
}

#[tokio::test]
async fn key_vault_failures_of_a_decrypt_become_their_statuses() {
    let fake = FakeVault::new();
    fake.add("v1");
    let sealer = service(&fake, false).await;
    let cases = [
        (Failure::Outage, Code::Unavailable),
        (Failure::Forbidden, Code::PermissionDenied),
        (
            Failure::Throttled(Duration::from_secs(2)),
            Code::ResourceExhausted,
        ),
        (Failure::NotFound, Code::FailedPrecondition),
    ];
    for (failure, code) in cases {
        let sealed = encrypt(&sealer, b"seed").await.unwrap();
        // A plugin that has not seen this seed, so Key Vault is asked.
        let v2 = service(&fake, false).await;
        fake.fail(Op::Decrypt, failure.clone());
        let status = decrypt(&v2, &sealed).await.unwrap_err();
        fake.heal(Op::Decrypt);
        assert_eq!(status.code(), code, "{failure:?}: {status:?}");
    }
}

#[tokio::test]
async fn a_ciphertext_key_vault_refuses_is_invalid_and_says_nothing_more() {
    let fake = FakeVault::new();
    fake.add("v1");
    let v2 = service(&fake, false).await;
    let mut sealed = encrypt(&v2, b"seed").await.unwrap();
    // Another ciphertext of the right size under the same key id: not in the cache, and
    // RSA-OAEP refuses it.
    sealed.ciphertext = envelope::encode_ciphertext(&[0x42; 256]);
    let status = decrypt(&v2, &sealed).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "the ciphertext could not be decrypted with this key version"
    );
}

#[tokio::test]
async fn an_unknown_key_id_is_invalid_after_one_listing() {
    let fake = FakeVault::new();
    fake.add("v1");
    let v2 = service(&fake, false).await;
    let lists = fake.calls(Op::List);
    let sealed = v2::EncryptResponse {
        ciphertext: envelope::encode_ciphertext(&[1; 256]),
        key_id: "ab".repeat(32),
        annotations: HashMap::from([
            (ANNOTATION_VERSION.to_owned(), b"1".to_vec()),
            (
                ANNOTATION_ALGORITHM.to_owned(),
                WRAP_ALGORITHM.as_bytes().to_vec(),
            ),
        ]),
    };
    for _ in 0..2 {
        let status = decrypt(&v2, &sealed).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("is not a version of key kek"),
            "{status:?}"
        );
    }
    // The start-up listing happened within the cooldown: no new listing at all.
    assert_eq!(fake.calls(Op::List), lists);
    assert_eq!(fake.calls(Op::Decrypt), 1, "only the start-up self-test");
}

#[tokio::test]
async fn encrypt_before_a_version_is_known_is_unavailable_without_key_vault() {
    let fake = FakeVault::new();
    fake.add("v1");
    fake.fail(Op::Get, Failure::Outage);
    let v2 = service(&fake, false).await;
    let status = encrypt(&v2, b"seed").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .starts_with("no key version is available yet"),
        "{status:?}"
    );
    assert_eq!(fake.calls(Op::Encrypt), 0);
}
