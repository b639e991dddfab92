//! The KMS plugin over a real Unix socket, against mock-vault running as an HTTPS server,
//! through the official Azure SDK inside the plugin.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::kms::*;
use crate::common::*;
use akv_bridge::kms::envelope::{self, KeyVersion};
use akv_bridge::proto::{kms_v1beta1 as v1, kms_v2 as v2};
use base64::Engine as _;
use mock_vault::{FaultKind, FaultSpec, Scope};
use serde_json::{Value, json};
use sha2::Digest as _;
use tonic::Code;

async fn encrypt(
    client: &mut v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
    seed: &[u8],
) -> v2::EncryptResponse {
    client
        .encrypt(v2::EncryptRequest {
            plaintext: seed.to_vec(),
            uid: "test-uid".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn encrypt_err(
    client: &mut v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
) -> tonic::Status {
    client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![1; 32],
            uid: String::new(),
        })
        .await
        .unwrap_err()
}

/// Key Vault unreachable, or not answering within the deadline.
fn assert_unavailable(err: &tonic::Status) {
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
}

#[tokio::test]
async fn round_trip_with_the_go_plugin_key_id_and_annotations() {
    let e = env(&[]).await;
    let plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let status = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.version, "v2beta1", "what the Go plugin reports");
    assert_eq!(status.healthz, "ok");
    let version = latest_version(&e.mock);
    // key_id = lowercase hex SHA-256 of the versioned key URL, as Azure/kubernetes-kms.
    let url = format!("{}/keys/kek/{version}", e.mock.info().vaults["kv1"].url);
    assert_eq!(
        status.key_id,
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    );

    let seed = [42u8; 32];
    e.mock.reset_stats();
    let enc = encrypt(&mut c, &seed).await;
    assert_eq!(
        e.mock.stats().total,
        0,
        "Encrypt wraps locally: no Key Vault call"
    );
    assert_eq!(
        enc.key_id, status.key_id,
        "Encrypt's key_id equals Status's"
    );
    // The ciphertext is Key Vault's base64url text, not the decoded bytes.
    let text = std::str::from_utf8(&enc.ciphertext).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap();
    assert_eq!(raw.len(), 256);
    assert_eq!(enc.annotations["version.azure.akv.io"], b"1");
    assert_eq!(enc.annotations["algorithm.azure.akv.io"], b"RSA-OAEP-256");
    assert_eq!(
        enc.annotations["key-version.akv-bridge.io"],
        version.as_bytes()
    );
    // A local wrap has no Key Vault response: only the date, in HTTP-date form.
    assert!(!enc.annotations.contains_key("x-ms-request-id.azure.akv.io"));
    assert!(
        !enc.annotations
            .contains_key("x-ms-keyvault-region.azure.akv.io")
    );
    let date = std::str::from_utf8(&enc.annotations["date.azure.akv.io"]).unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");

    // What the Go plugin would do with it: Key Vault decrypt, RSA-OAEP-256, configured
    // version, base64url-decoded ciphertext.
    assert_eq!(keyvault_unwrap(&e.mock, &version, text.as_bytes()), seed);

    e.mock.reset_stats();
    let plain = c
        .decrypt(decrypt_request(&enc))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(plain, seed);
    let plain = c
        .decrypt(decrypt_request(&enc))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(plain, seed);
    assert_eq!(
        kv_calls(&e.mock, "keys.decrypt"),
        0,
        "the seed Encrypt wrapped is cached as if it had been decrypted"
    );
    let other = foreign(&e.mock, &[43; 32]);
    for _ in 0..2 {
        let plain = c
            .decrypt(decrypt_request(&other))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(plain.plaintext, [43; 32]);
    }
    assert_eq!(
        kv_calls(&e.mock, "keys.decrypt"),
        1,
        "an unseen seed is unwrapped once, then a cache hit"
    );

    // Status is answered from state: no Key Vault traffic.
    e.mock.reset_stats();
    for _ in 0..20 {
        c.status(v2::StatusRequest {}).await.unwrap();
    }
    assert_eq!(e.mock.stats().total, 0, "Status never calls Key Vault");
    plugin.stop().await.unwrap();
    assert!(!e.socket.exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn reads_what_the_go_plugin_wrote_v2_and_v1() {
    let e = env(&[]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let version = latest_version(&e.mock);
    let seed = b"0123456789abcdef0123456789abcdef";
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    // v2 vector, exactly as Azure/kubernetes-kms writes it: Key Vault's text, its two
    // annotations plus the response headers, key_id = sha256(versioned URL).
    let out = e
        .mock
        .admin(
            "kv1",
            http::Method::POST,
            &format!("/keys/kek/{version}/encrypt"),
            json!({"alg": "RSA-OAEP-256", "value": b64(seed)}),
        )
        .unwrap();
    let mut annotations = HashMap::new();
    annotations.insert("version.azure.akv.io".to_owned(), b"1".to_vec());
    annotations.insert(
        "algorithm.azure.akv.io".to_owned(),
        b"RSA-OAEP-256".to_vec(),
    );
    annotations.insert(
        "date.azure.akv.io".to_owned(),
        b"Mon, 01 Jan 2026 00:00:00 GMT".to_vec(),
    );
    annotations.insert(
        "x-ms-request-id.azure.akv.io".to_owned(),
        b"00000000-0000-0000-0000-000000000000".to_vec(),
    );
    let key_id = key_ref(&e.mock).key_id(&KeyVersion::parse(&version).unwrap());
    let mut c = v2(&e.socket).await;
    let plain = c
        .decrypt(v2::DecryptRequest {
            ciphertext: out["value"].as_str().unwrap().as_bytes().to_vec(),
            uid: "go".into(),
            key_id,
            annotations,
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(plain, seed);

    // v1 vector: RSA1_5, Key Vault's text, through the v1beta1 API.
    let out = e
        .mock
        .admin(
            "kv1",
            http::Method::POST,
            &format!("/keys/kek/{version}/encrypt"),
            json!({"alg": "RSA1_5", "value": b64(seed)}),
        )
        .unwrap();
    let mut c1 = v1(&e.socket).await;
    let version_reply = c1
        .version(v1::VersionRequest {
            version: "v1beta1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version_reply.version, "v1beta1");
    assert_eq!(version_reply.runtime_name, "akv-bridge");
    let plain = c1
        .decrypt(v1::DecryptRequest {
            version: "v1beta1".into(),
            cipher: out["value"].as_str().unwrap().as_bytes().to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(plain, seed);
    // And v1 Encrypt round-trips.
    let cipher = c1
        .encrypt(v1::EncryptRequest {
            version: "v1beta1".into(),
            plain: seed.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .cipher;
    let back = c1
        .decrypt(v1::DecryptRequest {
            version: "v1beta1".into(),
            cipher,
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(back, seed);
    let err = c1
        .version(v1::VersionRequest {
            version: "v2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn rotation_shows_up_in_status_and_old_data_still_decrypts() {
    let e = env(&["--key-poll-interval=200ms"]).await;
    let plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let before = c
        .status(v2::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    let old = encrypt(&mut c, &[1; 32]).await;
    e.mock
        .admin("kv1", http::Method::POST, "/keys/kek/rotate", Value::Null)
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
        if s.key_id != before {
            break s.key_id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not seen within the poll interval"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new = encrypt(&mut c, &[2; 32]).await;
    assert_eq!(
        new.key_id, after,
        "new seeds are wrapped with the new version"
    );
    assert_ne!(
        new.annotations["key-version.akv-bridge.io"],
        old.annotations["key-version.akv-bridge.io"]
    );
    // A restarted plugin has neither seed cached: each is a real Key Vault unwrap.
    drop(c);
    plugin.stop().await.unwrap();
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    e.mock.reset_stats();
    assert_eq!(
        c.decrypt(decrypt_request(&old))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        [1; 32]
    );
    assert_eq!(
        c.decrypt(decrypt_request(&new))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        [2; 32]
    );
    assert_eq!(
        kv_calls(&e.mock, "keys.decrypt"),
        2,
        "each was a real Key Vault decrypt by its own version"
    );
}

#[tokio::test]
async fn pinned_version_does_not_follow_rotation() {
    let fixture = KMS_FIXTURE.replace(
        "{name: kek, kty: RSA, size: 2048}",
        "{name: kek, kty: RSA, size: 2048, versions: 2}",
    );
    let e = env_with(
        &fixture,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
        &["--key-poll-interval=100ms"],
    )
    .await;
    let versions = e
        .mock
        .admin("kv1", http::Method::GET, "/keys/kek/versions", Value::Null)
        .unwrap();
    let first = kid_version(&versions["value"][0]["kid"]);
    let mut flags = e.flags.clone();
    flags.push(format!("--key-version={first}"));
    let _plugin = Plugin::start(flags, &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let expect = key_ref(&e.mock).key_id(&KeyVersion::parse(&first).unwrap());
    assert_eq!(
        c.status(v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        expect
    );
    e.mock
        .admin("kv1", http::Method::POST, "/keys/kek/rotate", Value::Null)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.status(v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        expect
    );
    assert_eq!(encrypt(&mut c, &[3; 32]).await.key_id, expect);
}

#[tokio::test]
async fn hostile_requests_get_invalid_argument_with_a_clear_message() {
    let e = env(&[]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let good = encrypt(&mut c, &[9; 32]).await;
    let err = c
        .encrypt(v2::EncryptRequest {
            plaintext: vec![],
            uid: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "plaintext is empty")
    );
    let err = c
        .encrypt(v2::EncryptRequest {
            plaintext: vec![1; 500],
            uid: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("500 bytes"), "{}", err.message());

    let secret_text = String::from_utf8(good.ciphertext.clone()).unwrap();
    let mut cases: Vec<(&str, v2::DecryptRequest, &str)> = Vec::new();
    let mut r = decrypt_request(&good);
    r.ciphertext = vec![];
    cases.push(("empty ciphertext", r, "ciphertext is empty"));
    let mut r = decrypt_request(&good);
    r.ciphertext = vec![b'A'; 2000];
    cases.push(("oversized ciphertext", r, "at most 1024"));
    let mut r = decrypt_request(&good);
    r.ciphertext = b"***not base64***".to_vec();
    cases.push(("not base64url", r, "base64url"));
    let mut r = decrypt_request(&good);
    r.key_id = String::new();
    cases.push(("empty key id", r, "key_id is empty"));
    let mut r = decrypt_request(&good);
    r.key_id = "z".repeat(2000);
    cases.push(("oversized key id", r, "key_id"));
    let mut r = decrypt_request(&good);
    r.key_id = "ab".repeat(32);
    cases.push(("mismatched key id", r, "does not match key_id"));
    let mut r = decrypt_request(&good);
    r.annotations.remove("key-version.akv-bridge.io");
    r.key_id = "cd".repeat(32);
    cases.push(("unknown key id", r, "is not a version of key kek"));
    let mut r = decrypt_request(&good);
    r.annotations.clear();
    cases.push((
        "missing annotations",
        r,
        "annotation version.azure.akv.io is missing",
    ));
    let mut r = decrypt_request(&good);
    r.annotations
        .insert("algorithm.azure.akv.io".into(), b"A256GCM".to_vec());
    cases.push(("wrong algorithm", r, "algorithm.azure.akv.io"));
    let mut r = decrypt_request(&good);
    r.annotations
        .insert("version.azure.akv.io".into(), b"7".to_vec());
    cases.push(("wrong envelope version", r, "version.azure.akv.io"));
    let mut r = decrypt_request(&good);
    r.ciphertext = envelope::encode_ciphertext(&[7u8; 256]);
    cases.push(("tampered ciphertext", r, "could not be decrypted"));
    for (name, req, expect) in cases {
        let err = c.decrypt(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        assert!(err.message().contains(expect), "{name}: {}", err.message());
        assert!(
            !err.message().contains(&secret_text),
            "{name}: the message echoes input"
        );
    }
    // Still healthy: bad input is not a Key Vault failure.
    assert_eq!(
        c.status(v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .healthz,
        "ok"
    );
}

fn fault(kind: FaultKind, op: &str) -> FaultSpec {
    crate::common::fault(kind, Some(op))
}

#[tokio::test]
async fn key_vault_outage_cached_seeds_keep_working_and_status_recovers() {
    let e = env(&[
        "--key-poll-interval=200ms",
        "--keyvault-timeout=1s",
        "--keyvault-max-retries=1",
    ])
    .await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let wrapped_here = encrypt(&mut c, &[4; 32]).await;
    let seen = foreign(&e.mock, &[5; 32]);
    let unseen = foreign(&e.mock, &[6; 32]);
    c.decrypt(decrypt_request(&seen)).await.unwrap();

    e.mock.add_fault(fault(FaultKind::Outage, "keys.")).unwrap();
    for (req, seed) in [(&seen, [5; 32]), (&wrapped_here, [4; 32])] {
        let plain = c.decrypt(decrypt_request(req)).await.unwrap().into_inner();
        assert_eq!(plain.plaintext, seed, "served from the cache");
    }
    assert_unavailable(&c.decrypt(decrypt_request(&unseen)).await.unwrap_err());
    // Encrypt wraps locally: new Secrets keep being written through the outage.
    let during = encrypt(&mut c, &[7; 32]).await;
    let status = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.healthz, "ok", "the plugin can serve kube-apiserver");
    assert_eq!(during.key_id, status.key_id);
    assert!(
        e.mock.stats().operation("keys.encrypt") == 0,
        "no Key Vault encrypt was attempted"
    );

    e.mock.clear_faults();
    assert_eq!(
        c.decrypt(decrypt_request(&unseen))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        [6; 32]
    );
    // What was wrapped during the outage is Key Vault's to unwrap.
    let version = std::str::from_utf8(&during.annotations["key-version.akv-bridge.io"]).unwrap();
    let kv = e
        .mock
        .admin(
            "kv1",
            http::Method::POST,
            &format!("/keys/kek/{version}/decrypt"),
            json!({"alg": "RSA-OAEP-256", "value": std::str::from_utf8(&during.ciphertext).unwrap()}),
        )
        .unwrap();
    assert_eq!(
        kv["value"].as_str().unwrap(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])
    );
}

/// Key Vault refuses an access token the plugin still holds as valid (revoked, identity
/// re-created): the plugin gets a new one from Entra inside the same call, so the API
/// server sees no failure.
#[tokio::test]
async fn a_rejected_unexpired_token_is_replaced_without_a_failed_call() {
    let e = env(&[]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let unseen = foreign(&e.mock, &[7; 32]);
    let before = e.mock.stats();

    e.mock.expire_tokens();
    // Not in the decrypt cache: a Key Vault unwrap with the rejected token first.
    let plain = c
        .decrypt(decrypt_request(&unseen))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext, [7; 32]);
    let after = e.mock.stats();
    assert_eq!(
        after.operation("entra.token") - before.operation("entra.token"),
        1
    );
    assert_eq!(
        after.by_status.get(&401).copied().unwrap_or(0)
            - before.by_status.get(&401).copied().unwrap_or(0),
        1,
        "one rejected request, then the retry with the new token"
    );

    // Rebuilds are rate-limited: a second rejection inside the interval fails cleanly
    // (UNAUTHENTICATED) instead of asking Entra on every call.
    let again = foreign(&e.mock, &[8; 32]);
    e.mock.expire_tokens();
    let err = c.decrypt(decrypt_request(&again)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
}

#[tokio::test]
async fn throttling_storm_is_bounded_and_ends_in_a_clear_error() {
    // --remote-encrypt: every wrap is a Key Vault encrypt, as the Go plugin does.
    let e = env(&[
        "--keyvault-timeout=1500ms",
        "--keyvault-max-retries=2",
        "--remote-encrypt",
    ])
    .await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    e.mock.reset_stats();
    e.mock
        .add_fault(fault(
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
            "keys.encrypt",
        ))
        .unwrap();
    let started = std::time::Instant::now();
    let err = encrypt_err(&mut c).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message()
            .starts_with("Key Vault is throttling requests (HTTP 429"),
        "{}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the API server's deadline"
    );
    let calls = e.mock.stats().operation("keys.encrypt");
    assert!(
        (1..=3).contains(&calls),
        "retries honour Retry-After and stay bounded: {calls}"
    );
    e.mock.clear_faults();
    let enc = encrypt(&mut c, &[1; 32]).await;
    assert!(
        enc.annotations.contains_key("x-ms-request-id.azure.akv.io"),
        "a Key Vault wrap carries Key Vault's request id"
    );
    assert_eq!(
        enc.annotations["x-ms-keyvault-region.azure.akv.io"],
        b"eastus"
    );
}

#[tokio::test]
async fn identical_concurrent_decrypts_make_one_key_vault_call() {
    let e = env(&[]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let c = v2(&e.socket).await;
    let enc = foreign(&e.mock, &[8; 32]);
    e.mock
        .add_fault(FaultSpec {
            kind: FaultKind::Latency {
                fixed_ms: Some(100),
                min_ms: None,
                max_ms: None,
            },
            scope: Scope::default(),
            count: None,
            fraction: None,
            duration_ms: None,
        })
        .unwrap();
    e.mock.reset_stats();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut c = c.clone();
        let req = decrypt_request(&enc);
        tasks.push(tokio::spawn(async move {
            c.decrypt(req).await.map(|r| r.into_inner().plaintext)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), [8; 32]);
    }
    assert_eq!(kv_calls(&e.mock, "keys.decrypt"), 1);
}

#[tokio::test]
async fn missing_permissions_are_named_at_start_and_at_runtime() {
    let fixture = r#"
vaults: [{name: kv1, keys: [{name: kek}]}]
identities:
  - name: encrypt-only
    client_id: 00000000-0000-0000-0000-0000000000e1
    client_secret: s1
    permissions: {kv1: {keys: [get, encrypt]}}
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions: {kv1: {keys: [get, list, encrypt, decrypt]}}
"#;
    // Without keys/decrypt the start-up round trip fails: the plugin keeps running, says
    // why in Status, and refuses to wrap seeds nobody could unwrap.
    let e = env_with(fixture, "00000000-0000-0000-0000-0000000000e1", "s1", &[]).await;
    let _plugin = Plugin::start_serving(e.flags.clone(), &e.socket)
        .await
        .unwrap();
    let status = wait_status(
        &e.socket,
        |s| s.healthz.contains("keys/decrypt"),
        "the permission named",
    )
    .await;
    assert!(!status.key_id.is_empty(), "{status:?}");
    let mut c = v2(&e.socket).await;
    let err = encrypt_err(&mut c).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("keys/decrypt"), "{}", err.message());

    let e = env_with(
        fixture,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
        &[],
    )
    .await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let enc = foreign(&e.mock, &[4; 32]);
    let perms = serde_json::from_value(json!({"kv1": {"keys": ["get", "encrypt"]}})).unwrap();
    assert!(e.mock.set_permissions("kms", perms));
    let err = c.decrypt(decrypt_request(&enc)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("keys/decrypt"), "{}", err.message());
}

#[tokio::test]
async fn start_up_problems_are_named_in_status_and_config_errors_stop_the_start() {
    let e = env(&["--key-poll-interval=1s"]).await;
    let mut flags = e.flags.clone();
    flags.push("--key-name=absent".into());
    let plugin = Plugin::start_serving(flags, &e.socket).await.unwrap();
    let status = wait_status(&e.socket, |s| s.healthz.contains("absent"), "the key named").await;
    assert!(status.healthz.contains("not found"), "{status:?}");
    assert_eq!(status.key_id, "", "no key id until a version is usable");
    // The key is created: the plugin becomes ok by itself, no restart.
    e.mock
        .admin(
            "kv1",
            http::Method::POST,
            "/keys/absent/create",
            json!({"kty": "RSA", "key_size": 2048}),
        )
        .unwrap();
    wait_status(&e.socket, |s| s.healthz == "ok", "ok once the key exists").await;
    plugin.stop().await.unwrap();

    let version = latest_version(&e.mock);
    set_enabled(&e.mock, &version, false);
    let mut flags = e.flags.clone();
    flags.push(format!("--key-version={version}"));
    let plugin = Plugin::start_serving(flags, &e.socket).await.unwrap();
    let status = wait_status(
        &e.socket,
        |s| s.healthz.contains("disabled"),
        "disabled named",
    )
    .await;
    assert!(status.healthz.contains(&version), "{status:?}");
    // Re-enabled: the plugin becomes ok by itself.
    set_enabled(&e.mock, &version, true);
    wait_status(&e.socket, |s| s.healthz == "ok", "recovery").await;
    plugin.stop().await.unwrap();

    let mut flags = e.flags.clone();
    flags.push(format!(
        "--config-file-path={}",
        e.dir.path().join("nope.json").display()
    ));
    let err = Plugin::start_serving(flags, &e.socket)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");
}

#[tokio::test]
async fn restart_reads_old_data_and_a_second_instance_refuses_the_socket() {
    let e = env(&[]).await;
    let plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let enc = encrypt(&mut c, &[7; 32]).await;
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        akv_bridge::kms::run(kms_args(&e.flags), std::future::pending()),
    )
    .await
    .expect("the second instance gives up at once")
    .expect_err("second instance refused");
    assert!(second.to_string().contains("in use"), "{second}");
    // The first instance still answers.
    c.status(v2::StatusRequest {}).await.unwrap();
    plugin.stop().await.unwrap();
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    assert_eq!(
        c.decrypt(decrypt_request(&enc))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        [7; 32]
    );
}

/// The real binary: flags, health and metrics endpoints, `probe kms`, SIGTERM.
#[tokio::test]
async fn binary_serves_probes_reports_metrics_and_cleans_up_on_sigterm() {
    let e = env(&[]).await;
    let healthz = free_port();
    let metrics = free_port();
    let mut flags = e.flags.clone();
    flags.push(format!("--healthz-port={healthz}"));
    flags.push(format!("--metrics-addr=127.0.0.1:{metrics}"));
    flags.push("--log-format-json".into());
    let bin = env!("CARGO_BIN_EXE_akv-bridge");
    let log = e.dir.path().join("plugin.log");
    let mut child = tokio::process::Command::new(bin)
        .arg("kms")
        .args(&flags)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::UnixStream::connect(&e.socket).await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "plugin exited: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&e.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;

    let probe = tokio::process::Command::new(bin)
        .args([
            "probe",
            "kms",
            "--socket",
            &format!("unix://{}", e.socket.display()),
            "--envelope",
        ])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{report}");
    assert!(
        report.contains("k8s:enc:kms:v2:azurekmsprovider:"),
        "{report}"
    );

    let http = reqwest::Client::new();
    let live = http
        .get(format!("http://127.0.0.1:{healthz}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("http://127.0.0.1:{healthz}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let text = http
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "akv_bridge_kms_rpc_requests_total{method=\"v2.Encrypt\",code=\"OK\"}",
        "akv_bridge_kms_key_info{",
        "akv_bridge_kms_cache_lookups_total{result=\"hit\"}",
        "akv_bridge_kms_local_wraps_total 1",
        "akv_bridge_kms_keyvault_reachable 1",
        "akv_bridge_kms_newest_version_usable 1",
        "akv_bridge_kms_audit_lines_dropped_total 0",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    // SIGTERM: drain, remove the socket, exit 0.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!e.socket.exists());
    // Audit lines: one per Encrypt/Decrypt, no plaintext, no tokens.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("\"rpc\":\"Encrypt\""), "{log_text}");
    assert!(
        !log_text.contains("kms-secret"),
        "the client secret never reaches the logs"
    );
}
