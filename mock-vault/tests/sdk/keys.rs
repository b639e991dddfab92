//! Keys through `azure_security_keyvault_keys::KeyClient`.

use std::collections::HashMap;

use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, EncryptionAlgorithm, KeyAttributes, KeyClientEncryptOptions,
    KeyClientGetKeyOptions, KeyClientListKeyPropertiesVersionsOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyOperationParameters, KeyRotationPolicy,
    KeyRotationPolicyAction, KeyType, LifetimeAction, LifetimeActionTrigger, LifetimeActionType,
    SignParameters, SignatureAlgorithm, UpdateKeyPropertiesParameters, VerifyParameters,
};
use azure_security_keyvault_keys::{KeyClient, ResourceExt};
use futures::TryStreamExt as _;

use crate::harness::{Harness, error_code};

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

async fn create(client: &KeyClient, name: &str, params: CreateKeyParameters) -> (String, String) {
    let key = client
        .create_key(name, params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let id = key.resource_id().unwrap();
    (id.name, id.version.expect("versioned kid"))
}

fn rsa(size: i32) -> CreateKeyParameters {
    CreateKeyParameters {
        kty: Some(KeyType::Rsa),
        key_size: Some(size),
        ..Default::default()
    }
}

fn op(alg: EncryptionAlgorithm, value: &[u8]) -> KeyOperationParameters {
    KeyOperationParameters {
        algorithm: Some(alg),
        value: Some(value.to_vec()),
        ..Default::default()
    }
}

#[tokio::test]
async fn rsa_keys_of_every_size_encrypt_and_decrypt_with_every_algorithm() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    for size in [2048, 3072, 4096] {
        let name = format!("rsa-{size}");
        let (_, version) = create(&client, &name, rsa(size)).await;
        let key = client
            .get_key(&name, None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        let jwk = key.key.unwrap();
        assert_eq!(jwk.n.unwrap().len() * 8, size as usize);
        assert_eq!(jwk.e.unwrap(), vec![1, 0, 1]);
        assert!(jwk.d.is_none(), "private parts are never returned");
        for alg in [
            EncryptionAlgorithm::RsaOaep,
            EncryptionAlgorithm::RsaOaep256,
            EncryptionAlgorithm::Rsa1_5,
        ] {
            let sealed = client
                .encrypt(
                    &name,
                    op(alg.clone(), b"32-byte seed for the api server")
                        .try_into()
                        .unwrap(),
                    None,
                )
                .await
                .unwrap()
                .into_model()
                .unwrap();
            assert_eq!(
                sealed.resource_id().unwrap().version.as_deref(),
                Some(version.as_str())
            );
            let opened = client
                .decrypt(
                    &name,
                    &version,
                    op(alg, &sealed.result.unwrap()).try_into().unwrap(),
                    None,
                )
                .await
                .unwrap()
                .into_model()
                .unwrap();
            assert_eq!(opened.result.unwrap(), b"32-byte seed for the api server");
        }
    }
}

#[tokio::test]
async fn get_by_version_latest_and_empty_version_segment() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    let (_, v1) = create(&client, "k", rsa(2048)).await;
    let (_, v2) = create(&client, "k", rsa(2048)).await;
    assert_ne!(v1, v2);
    let latest = client
        .get_key("k", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.resource_id().unwrap().version.unwrap(), v2);
    let first = client
        .get_key(
            "k",
            Some(KeyClientGetKeyOptions {
                key_version: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(first.resource_id().unwrap().version.unwrap(), v1);
    // encrypt with no version goes to `/keys/k//encrypt`: the latest version.
    let sealed = client
        .encrypt(
            "k",
            op(EncryptionAlgorithm::RsaOaep256, b"x")
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(sealed.resource_id().unwrap().version.unwrap(), v2);
    let missing = client
        .get_key(
            "k",
            Some(KeyClientGetKeyOptions {
                key_version: Some("0123456789abcdef0123456789abcdef".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&missing), (404, "KeyNotFound".into()));
    let missing = client.get_key("nope", None).await.unwrap_err();
    assert_eq!(error_code(&missing), (404, "KeyNotFound".into()));
}

#[tokio::test]
async fn list_versions_follows_next_link_across_pages() {
    let h = Harness::start("{vaults: [{name: kv1, keys: [{name: many, kty: EC, versions: 12}]}]}")
        .await;
    let client = h.keys("kv1", h.default_credential());
    let pager = client
        .list_key_properties_versions(
            "many",
            Some(KeyClientListKeyPropertiesVersionsOptions {
                maxresults: Some(5),
                ..Default::default()
            }),
        )
        .unwrap();
    let items: Vec<_> = pager.try_collect().await.unwrap();
    assert_eq!(items.len(), 12);
    let mut versions: Vec<_> = items
        .iter()
        .map(|k| k.resource_id().unwrap().version.unwrap())
        .collect();
    versions.dedup();
    assert_eq!(versions.len(), 12);
    // Three pages were fetched (5 + 5 + 2).
    assert_eq!(h.mock.stats().authenticated("keys.listversions"), 3);
}

#[tokio::test]
async fn ec_keys_sign_and_verify_on_every_curve() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    for (label, crv, alg, hash) in [
        (
            "p256",
            CurveName::P256,
            SignatureAlgorithm::Es256,
            &aws_lc_rs::digest::SHA256,
        ),
        (
            "p384",
            CurveName::P384,
            SignatureAlgorithm::Es384,
            &aws_lc_rs::digest::SHA384,
        ),
        (
            "p521",
            CurveName::P521,
            SignatureAlgorithm::Es512,
            &aws_lc_rs::digest::SHA512,
        ),
    ] {
        let name = format!("ec-{label}");
        let (_, version) = create(
            &client,
            &name,
            CreateKeyParameters {
                kty: Some(KeyType::Ec),
                curve: Some(crv.clone()),
                ..Default::default()
            },
        )
        .await;
        let digest = aws_lc_rs::digest::digest(hash, b"document")
            .as_ref()
            .to_vec();
        let sig = client
            .sign(
                &name,
                SignParameters {
                    algorithm: Some(alg.clone()),
                    value: Some(digest.clone()),
                }
                .try_into()
                .unwrap(),
                None,
            )
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .result
            .unwrap();
        // Verify locally with the public key from the vault (raw r||s, JOSE style).
        let jwk = client
            .get_key(&name, None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .key
            .unwrap();
        let mut point = vec![4u8];
        point.extend(jwk.x.unwrap());
        point.extend(jwk.y.unwrap());
        let verifier: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match crv {
            CurveName::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            CurveName::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
            _ => &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
        };
        aws_lc_rs::signature::UnparsedPublicKey::new(verifier, &point)
            .verify(b"document", &sig)
            .expect("signature verifies locally with the published public key");
        // And through the vault.
        for (signature, expect) in [
            (sig.clone(), true),
            (
                {
                    let mut s = sig.clone();
                    s[3] ^= 1;
                    s
                },
                false,
            ),
        ] {
            let ok = client
                .verify(
                    &name,
                    &version,
                    VerifyParameters {
                        algorithm: Some(alg.clone()),
                        digest: Some(digest.clone()),
                        signature: Some(signature),
                    }
                    .try_into()
                    .unwrap(),
                    None,
                )
                .await
                .unwrap()
                .into_model()
                .unwrap()
                .value;
            assert_eq!(ok, Some(expect));
        }
    }
}

#[tokio::test]
async fn rsa_sign_verify_and_wrong_algorithm_is_bad_parameter() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    let (_, version) = create(&client, "signer", rsa(2048)).await;
    let digest = sha256(b"hello");
    for alg in [SignatureAlgorithm::Rs256, SignatureAlgorithm::Ps256] {
        let sig = client
            .sign(
                "signer",
                SignParameters {
                    algorithm: Some(alg.clone()),
                    value: Some(digest.clone()),
                }
                .try_into()
                .unwrap(),
                None,
            )
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .result
            .unwrap();
        let ok = client
            .verify(
                "signer",
                &version,
                VerifyParameters {
                    algorithm: Some(alg),
                    digest: Some(digest.clone()),
                    signature: Some(sig),
                }
                .try_into()
                .unwrap(),
                None,
            )
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(ok.value, Some(true));
    }
    let err = client
        .encrypt(
            "signer",
            op(EncryptionAlgorithm::A256Gcm, b"x").try_into().unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
    let err = client
        .sign(
            "signer",
            SignParameters {
                algorithm: Some(SignatureAlgorithm::Rs256),
                value: Some(vec![1, 2, 3]),
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&err),
        (400, "BadParameter".into()),
        "digest of the wrong length"
    );
}

#[tokio::test]
async fn managed_hsm_oct_keys_do_aes_gcm_and_key_wrap() {
    let h = Harness::start("{vaults: [{name: hsm1, kind: managed-hsm}]}").await;
    assert!(h.vault_url("hsm1").contains(".managedhsm.localhost:"));
    let client = h.keys("hsm1", h.default_credential());
    let (_, version) = create(
        &client,
        "aes",
        CreateKeyParameters {
            kty: Some(KeyType::OctHsm),
            key_size: Some(256),
            ..Default::default()
        },
    )
    .await;
    let mut params = op(EncryptionAlgorithm::A256Gcm, b"envelope");
    params.additional_authenticated_data = Some(b"context".to_vec());
    let sealed = client
        .encrypt("aes", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        sealed.iv.as_ref().map(Vec::len),
        Some(12),
        "the service makes the iv"
    );
    assert_eq!(sealed.authentication_tag.as_ref().map(Vec::len), Some(16));
    let open = KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::A256Gcm),
        value: sealed.result.clone(),
        iv: sealed.iv.clone(),
        authentication_tag: sealed.authentication_tag.clone(),
        additional_authenticated_data: Some(b"context".to_vec()),
    };
    let plain = client
        .decrypt("aes", &version, open.clone().try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(plain.result.unwrap(), b"envelope");
    let mut tampered = open;
    tampered.additional_authenticated_data = Some(b"other".to_vec());
    let err = client
        .decrypt("aes", &version, tampered.try_into().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (400, "BadParameter".into()));

    let wrapped = client
        .wrap_key(
            "aes",
            op(EncryptionAlgorithm::A256Kw, &[9u8; 32])
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let unwrapped = client
        .unwrap_key(
            "aes",
            &version,
            op(EncryptionAlgorithm::A256Kw, &wrapped.result.unwrap())
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(unwrapped.result.unwrap(), vec![9u8; 32]);
    // Managed HSM serves keys only, and only HSM key types.
    let err = create_err(&client, "soft", rsa(2048)).await;
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
}

async fn create_err(
    client: &KeyClient,
    name: &str,
    params: CreateKeyParameters,
) -> azure_core::Error {
    client
        .create_key(name, params.try_into().unwrap(), None)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn wrap_with_one_version_unwrap_by_that_version_after_rotation() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    let (_, v1) = create(&client, "kek", rsa(2048)).await;
    let wrapped = client
        .wrap_key(
            "kek",
            op(EncryptionAlgorithm::RsaOaep256, &[7u8; 32])
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let rotated = client
        .rotate_key("kek", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let v2 = rotated.resource_id().unwrap().version.unwrap();
    assert_ne!(v1, v2);
    let latest = client
        .get_key("kek", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        latest.resource_id().unwrap().version.unwrap(),
        v2,
        "get returns the rotated version"
    );
    let unwrapped = client
        .unwrap_key(
            "kek",
            &v1,
            op(
                EncryptionAlgorithm::RsaOaep256,
                &wrapped.result.clone().unwrap(),
            )
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(unwrapped.result.unwrap(), vec![7u8; 32]);
    // The new version cannot open what the old one wrapped.
    let err = client
        .unwrap_key(
            "kek",
            &v2,
            op(EncryptionAlgorithm::RsaOaep256, &wrapped.result.unwrap())
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err).0, 400);
}

#[tokio::test]
async fn disabled_and_expired_versions_refuse_operations() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    let (_, v1) = create(&client, "k", rsa(2048)).await;
    let disable = UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        tags: Some(HashMap::from([("state".to_owned(), "off".to_owned())])),
        ..Default::default()
    };
    let updated = client
        .update_key_properties(
            "k",
            disable.try_into().unwrap(),
            Some(KeyClientUpdateKeyPropertiesOptions {
                key_version: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.attributes.unwrap().enabled, Some(false));
    assert_eq!(updated.tags.unwrap()["state"], "off");
    let err = client
        .encrypt(
            "k",
            op(EncryptionAlgorithm::RsaOaep256, b"x")
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));

    let (_, v2) = create(&client, "k2", rsa(2048)).await;
    let expire = UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            expires: Some(OffsetDateTime::now_utc() - azure_core::time::Duration::hours(1)),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .update_key_properties(
            "k2",
            expire.try_into().unwrap(),
            Some(KeyClientUpdateKeyPropertiesOptions {
                key_version: Some(v2.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let err = client
        .encrypt(
            "k2",
            op(EncryptionAlgorithm::RsaOaep256, b"x")
                .try_into()
                .unwrap(),
            Some(KeyClientEncryptOptions {
                key_version: Some(v2),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));
}

#[tokio::test]
async fn delete_get_deleted_recover_and_purge() {
    let h = Harness::start("{}").await;
    let client = h.keys("kv1", h.default_credential());
    create(&client, "gone", rsa(2048)).await;
    let deleted = client
        .delete_key("gone", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(deleted.recovery_id.unwrap().ends_with("/deletedkeys/gone"));
    assert!(deleted.scheduled_purge_date.is_some());
    let err = client.get_key("gone", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "KeyNotFound".into()));
    let again = client
        .get_deleted_key("gone", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(again.key.unwrap().kid.unwrap().contains("/keys/gone/"));
    // The name cannot be reused while the key is recoverable.
    let err = create_err(&client, "gone", rsa(2048)).await;
    assert_eq!(error_code(&err), (409, "Conflict".into()));
    client.recover_deleted_key("gone", None).await.unwrap();
    client.get_key("gone", None).await.unwrap();
    client.delete_key("gone", None).await.unwrap();
    client.purge_deleted_key("gone", None).await.unwrap();
    let err = client.get_deleted_key("gone", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "KeyNotFound".into()));
    create(&client, "gone", rsa(2048)).await;
}

#[tokio::test]
async fn rotation_policy_round_trips() {
    let h = Harness::start("{vaults: [{name: kv1, keys: [{name: kek}]}]}").await;
    let client = h.keys("kv1", h.default_credential());
    let default = client
        .get_key_rotation_policy("kek", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(default.lifetime_actions.is_some());
    let policy = KeyRotationPolicy {
        lifetime_actions: Some(vec![LifetimeAction {
            action: Some(LifetimeActionType {
                type_prop: Some(KeyRotationPolicyAction::Rotate),
            }),
            trigger: Some(LifetimeActionTrigger {
                time_after_create: Some("P30D".into()),
                time_before_expiry: None,
            }),
        }]),
        ..Default::default()
    };
    let set = client
        .update_key_rotation_policy("kek", policy.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(set.id.unwrap().ends_with("/keys/kek/rotationpolicy"));
    let got = client
        .get_key_rotation_policy("kek", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let action = &got.lifetime_actions.unwrap()[0];
    assert_eq!(
        action
            .trigger
            .as_ref()
            .unwrap()
            .time_after_create
            .as_deref(),
        Some("P30D")
    );
}

#[tokio::test]
async fn list_keys_and_bad_requests() {
    let h = Harness::start("{vaults: [{name: kv1, keys: [{name: a}, {name: b, kty: EC}]}]}").await;
    let client = h.keys("kv1", h.default_credential());
    let names: Vec<String> = client
        .list_key_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|k| k.resource_id().unwrap().name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let err = create_err(
        &client,
        "bad",
        CreateKeyParameters {
            kty: Some(KeyType::Rsa),
            key_size: Some(1024),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
    let err = create_err(&client, "bad_name!", rsa(2048)).await;
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
}
