//! The KMS plugin through Key Vault outages, end to end: the plugin runs as a process, and
//! kube-apiserver is played by `probe::ApiServer`, which drives the socket as the real one
//! does (Status, Encrypt whenever Status names a key id it holds no write state for, even
//! when healthz is not ok; no transformer until an Encrypt succeeded; its own seed never
//! sent to Decrypt; every other stored seed decrypted once and cached).

use std::time::Duration;

use crate::common::kms::*;
use crate::common::*;
use akv_bridge::probe::{ApiServer, NIL_TRANSFORMER, ProbeOptions};
use akv_bridge::proto::kms_v2 as v2;
use mock_vault::FaultKind;
use serde_json::json;
use tonic::Code;

/// A fresh kube-apiserver (no state) on its own connection to the plugin.
async fn api_server(e: &Env) -> ApiServer {
    ApiServer::new(channel(&e.socket).await, ProbeOptions::default())
}

/// What a kube-apiserver stored: etcd key and value.
type Stored = Vec<(String, Vec<u8>, Vec<u8>)>;

/// Writes `n` Secrets through `api`, returning (etcd key, value, plaintext).
fn write_secrets(api: &ApiServer, prefix: &str, n: usize) -> Stored {
    (0..n)
        .map(|i| {
            let key = format!("/registry/secrets/default/{prefix}-{i}");
            let plain = format!("{{\"data\":\"{prefix}-{i}\"}}").into_bytes();
            let value = api.write(&key, &plain).expect("write");
            (key, value, plain)
        })
        .collect()
}

/// Reads every stored Secret through `api`; returns the failures.
async fn read_all(api: &mut ApiServer, stored: &Stored) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, value, plain) in stored {
        match api.read(key, value).await {
            Ok(got) if got.as_slice() == plain.as_slice() => {}
            Ok(_) => failures.push(format!("{key}: wrong plaintext")),
            Err(e) => failures.push(format!("{key}: {e}")),
        }
    }
    failures
}

/// The acceptance scenario of a restarted kube-apiserver: while every Key Vault and Entra
/// request fails, a fresh API server gets its Encrypt, reads every Secret whose seed the
/// plugin has seen (through Encrypt or Decrypt), and writes new ones. Nothing needs a
/// restart afterwards.
#[tokio::test]
async fn a_restarted_api_server_reads_and_writes_through_a_full_outage() {
    let e = env(&["--key-poll-interval=1s"]).await;
    // Generation 0 wrote through an earlier plugin process: the plugin under test sees
    // that seed only through Decrypt, when generation 1 reads it.
    let earlier = PluginProcess::start(&e, &[], "earlier.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut gen0 = api_server(&e).await;
    gen0.poll().await.unwrap();
    let stored0 = write_secrets(&gen0, "gen0", 5);
    drop(gen0);
    earlier.kill().await;
    let other = foreign(&e.mock, &[9; 32]);

    let mut plugin = PluginProcess::start(&e, &[], "plugin.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;

    let mut gen1 = api_server(&e).await;
    gen1.poll().await.unwrap();
    assert!(read_all(&mut gen1, &stored0).await.is_empty());
    assert_eq!(
        gen1.decrypt_calls(),
        1,
        "gen0's seed reached this plugin by Decrypt"
    );
    let stored1 = write_secrets(&gen1, "gen1", 5);
    assert!(read_all(&mut gen1, &stored1).await.is_empty());
    drop(gen1);

    full_outage(&e.mock);
    e.mock.reset_stats();

    // kube-apiserver restarts during the outage.
    let mut gen2 = api_server(&e).await;
    let status = gen2
        .poll()
        .await
        .expect("Status and Encrypt during the outage");
    assert_eq!(status.healthz, "ok", "{status:?}");
    assert!(gen2.has_transformer(), "the Encrypt succeeded");
    let mut failures = read_all(&mut gen2, &stored0).await;
    failures.extend(read_all(&mut gen2, &stored1).await);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        gen2.decrypt_calls(),
        2,
        "one Decrypt per distinct stored seed, both answered from the plugin's cache"
    );
    let stored2 = write_secrets(&gen2, "gen2", 5);
    assert!(read_all(&mut gen2, &stored2).await.is_empty());
    assert_eq!(
        e.mock.stats().operation("keys.decrypt"),
        0,
        "every read was answered without trying Key Vault"
    );
    // A seed this plugin never saw cannot be unwrapped now, and says why.
    let mut c = v2(&e.socket).await;
    let err = c.decrypt(decrypt_request(&other)).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(err.message().contains("Key Vault"), "{}", err.message());
    assert!(
        (1..=4).contains(&e.mock.stats().operation("keys.decrypt")),
        "the unseen seed was tried (with the SDK's retries), and failed"
    );
    let (code, body) = plugin.readyz().await;
    assert_eq!(code, 503, "readiness reports Key Vault: {body}");
    assert!(
        plugin
            .metrics()
            .await
            .contains("akv_bridge_kms_keyvault_reachable 0")
    );

    // The outage ends: nothing restarts, everything heals.
    e.mock.clear_faults();
    assert_eq!(
        c.decrypt(decrypt_request(&other))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        [9; 32]
    );
    eventually(
        Duration::from_secs(60),
        "readiness after the outage",
        async || plugin.readyz().await.0 == 200,
    )
    .await;
    assert!(plugin.running());
    let log = plugin.log_text();
    assert_eq!(
        log.matches("Key Vault unreachable").count(),
        1,
        "one transition into the outage:\n{log}"
    );
}

/// The plugin itself restarts during the outage: it cannot know its key, so it says so
/// (Status not ok, no key id), stays up instead of crash-looping, fails Decrypts clearly,
/// and becomes ok by itself when Key Vault returns.
#[tokio::test]
async fn a_plugin_restarted_during_an_outage_stays_up_and_recovers_alone() {
    let e = env(&["--key-poll-interval=2s"]).await;
    let plugin = PluginProcess::start(&e, &[], "before.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut gen1 = api_server(&e).await;
    gen1.poll().await.unwrap();
    let stored = write_secrets(&gen1, "s", 3);
    plugin.kill().await;

    full_outage(&e.mock);
    let mut plugin = PluginProcess::start(&e, &[], "during.log").await;
    let status = wait_status(
        &e.socket,
        |s| s.healthz.contains("Key Vault") || s.healthz.contains("Entra"),
        "the outage named in Status",
    )
    .await;
    assert!(status.key_id.is_empty(), "{status:?}");
    assert!(
        status.healthz.starts_with("no usable key version yet"),
        "{status:?}"
    );

    let mut gen2 = api_server(&e).await;
    gen2.poll().await.unwrap();
    assert!(
        !gen2.has_transformer(),
        "no key id, so kube-apiserver sends no Encrypt"
    );
    let err = gen2.read(&stored[0].0, &stored[0].1).await.unwrap_err();
    assert!(err.contains(NIL_TRANSFORMER), "{err}");
    // The kube-apiserver that kept running holds its seeds: it reads and writes on (for 3
    // minutes after the last Status with its key id, kube-apiserver's own write expiry).
    let status = gen1.poll().await.unwrap();
    assert!(status.key_id.is_empty(), "{status:?}");
    assert!(read_all(&mut gen1, &stored).await.is_empty());
    let more = write_secrets(&gen1, "kept", 2);
    assert!(read_all(&mut gen1, &more).await.is_empty());
    assert_eq!(gen1.decrypt_calls(), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(plugin.running(), "no crash loop:\n{}", plugin.log_text());

    e.mock.clear_faults();
    wait_status(
        &e.socket,
        |s| s.healthz == "ok",
        "recovery without a restart",
    )
    .await;
    gen2.poll().await.unwrap();
    assert!(read_all(&mut gen2, &stored).await.is_empty());
    assert!(plugin.running());
}

/// Decrypt fails, the key metadata read works (a partial outage), and both the plugin and
/// kube-apiserver restart: the plugin resolves its key, kube-apiserver gets its Encrypt and
/// writes and reads new Secrets; only seeds never seen by this plugin fail, clearly.
#[tokio::test]
async fn both_restarted_during_a_decrypt_only_outage_keep_writing() {
    let e = env(&["--key-poll-interval=1s", "--keyvault-timeout=1s"]).await;
    let plugin = PluginProcess::start(&e, &[], "before.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut gen1 = api_server(&e).await;
    gen1.poll().await.unwrap();
    let old = write_secrets(&gen1, "old", 2);
    drop(gen1);
    plugin.kill().await;

    e.mock
        .add_fault(fault(
            FaultKind::Status { status: 503 },
            Some("keys.decrypt"),
        ))
        .unwrap();
    let _plugin = PluginProcess::start(&e, &[], "during.log").await;
    wait_status(
        &e.socket,
        |s| s.healthz == "ok",
        "Status ok without decrypt",
    )
    .await;
    let mut gen2 = api_server(&e).await;
    gen2.poll().await.unwrap();
    let new = write_secrets(&gen2, "new", 3);
    assert!(read_all(&mut gen2, &new).await.is_empty());
    let failures = read_all(&mut gen2, &old).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|f| f.contains("Unavailable: Key Vault")
                || f.contains("DeadlineExceeded: Key Vault")),
        "{failures:?}"
    );
    e.mock.clear_faults();
    assert!(
        read_all(&mut gen2, &old).await.is_empty(),
        "read once Key Vault is back"
    );
}

/// Entra down, Key Vault up: the plugin keeps the access token it holds, so a restarted
/// kube-apiserver reads even seeds this plugin never saw.
#[tokio::test]
async fn an_entra_outage_is_carried_by_the_token_in_hand() {
    let e = env(&[]).await;
    let _plugin = PluginProcess::start(&e, &[], "plugin.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut gen0 = api_server(&e).await;
    gen0.poll().await.unwrap();
    let stored = write_secrets(&gen0, "s", 2);
    drop(gen0);
    e.mock
        .add_fault(fault(FaultKind::Status { status: 503 }, Some("entra.")))
        .unwrap();
    let other = foreign(&e.mock, &[2; 32]);
    let mut gen1 = api_server(&e).await;
    gen1.poll().await.unwrap();
    assert!(read_all(&mut gen1, &stored).await.is_empty());
    let mut c = v2(&e.socket).await;
    let plain = c
        .decrypt(decrypt_request(&other))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(
        plain, [2; 32],
        "an unseen seed, unwrapped with the token in hand"
    );
}

/// Booting in a 429 storm: the plugin starts, answers Status, backs off, and becomes ok
/// by itself once the vault stops throttling.
#[tokio::test]
async fn boot_during_a_throttling_storm_retries_in_the_background() {
    let e = env(&["--key-poll-interval=2s", "--keyvault-timeout=1s"]).await;
    e.mock
        .add_fault(fault(
            FaultKind::Throttle {
                retry_after_secs: 5,
            },
            None,
        ))
        .unwrap();
    let mut plugin = PluginProcess::start(&e, &[], "plugin.log").await;
    let status = wait_status(&e.socket, |s| s.healthz != "ok", "not ok").await;
    assert!(status.key_id.is_empty(), "{status:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let throttled = e.mock.stats().by_status.get(&429).copied().unwrap_or(0);
    assert!(
        (1..=12).contains(&throttled),
        "retries back off instead of hammering the vault: {throttled}"
    );
    assert!(plugin.running());
    e.mock.clear_faults();
    wait_status(&e.socket, |s| s.healthz == "ok", "ok after the storm").await;
}

/// Decrypt failing while the metadata read succeeds (a partial outage) must not make the
/// plugin alternate between healthy and unhealthy.
#[tokio::test]
async fn a_decrypt_only_outage_does_not_flap() {
    let e = env(&[
        "--key-poll-interval=200ms",
        "--keyvault-timeout=500ms",
        "--keyvault-max-retries=0",
    ])
    .await;
    let plugin = PluginProcess::start(&e, &[], "plugin.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    e.mock
        .add_fault(fault(
            FaultKind::Status { status: 503 },
            Some("keys.decrypt"),
        ))
        .unwrap();
    let mut c = v2(&e.socket).await;
    let mut statuses = Vec::new();
    for i in 0..15u8 {
        let unseen = foreign(&e.mock, &[i; 32]);
        let req = decrypt_request(&unseen);
        assert_eq!(c.decrypt(req).await.unwrap_err().code(), Code::Unavailable);
        statuses.push(
            c.status(v2::StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .healthz,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        statuses.iter().all(|h| h == "ok"),
        "Status says the plugin can serve: {statuses:?}"
    );
    let log = plugin.log_text();
    assert_eq!(
        log.matches("Key Vault unreachable").count(),
        1,
        "one transition, then quiet while the polls succeed:\n{log}"
    );
    assert_eq!(log.matches("Key Vault reachable again").count(), 0, "{log}");
    assert_eq!(plugin.readyz().await.0, 503);
}

/// An admin adds an EC version, or an RSA version that may only sign: the plugin keeps the
/// newest usable version, running and restarted, and says so in a metric. The key id moves
/// only when the usable set changes.
#[tokio::test]
async fn an_unusable_newest_version_is_skipped_running_and_restarted() {
    let e = env(&["--key-poll-interval=200ms"]).await;
    let plugin = PluginProcess::start(&e, &[], "a.log").await;
    let first = wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let v1 = latest_version(&e.mock);

    create_version(&e.mock, json!({"kty": "EC", "crv": "P-256"}));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut c = v2(&e.socket).await;
    for _ in 0..5 {
        let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((s.healthz.as_str(), &s.key_id), ("ok", &first.key_id));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eventually(Duration::from_secs(5), "metric at 0", async || {
        plugin
            .metrics()
            .await
            .contains("akv_bridge_kms_newest_version_usable 0")
    })
    .await;
    assert!(
        plugin
            .log_text()
            .contains("the newest key version cannot wrap")
    );
    plugin.kill().await;

    // Restarted with the EC version newest: starts, and wraps with the RSA one.
    let plugin = PluginProcess::start(&e, &[], "b.log").await;
    let s = wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    assert_eq!(s.key_id, first.key_id);
    let mut c = v2(&e.socket).await;
    let enc = c
        .encrypt(v2::EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enc.annotations["key-version.akv-bridge.io"], v1.as_bytes());
    assert_eq!(keyvault_unwrap(&e.mock, &v1, &enc.ciphertext), [1; 32]);

    // A sign-only RSA version is skipped too; a usable RSA version is taken.
    create_version(
        &e.mock,
        json!({"kty": "RSA", "key_size": 2048, "key_ops": ["sign", "verify"]}),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.healthz.as_str(), &s.key_id), ("ok", &first.key_id));
    let v3 = create_version(&e.mock, json!({"kty": "RSA", "key_size": 3072}));
    let moved = wait_status(&e.socket, |s| s.key_id != first.key_id, "the new version").await;
    assert_eq!(
        moved.key_id,
        key_ref(&e.mock).key_id(&akv_bridge::kms::envelope::KeyVersion::parse(&v3).unwrap())
    );
    // The current version disabled: back to the newest usable one (it cannot wrap).
    set_enabled(&e.mock, &v3, false);
    wait_status(
        &e.socket,
        |s| s.key_id == first.key_id,
        "back to the usable version",
    )
    .await;
    drop(plugin);
}

/// Wraps `plain` through v1beta1 on a fresh connection.
async fn v1_encrypt(socket: &std::path::Path, plain: &[u8]) -> Vec<u8> {
    v1(socket)
        .await
        .encrypt(akv_bridge::proto::kms_v1beta1::EncryptRequest {
            version: "v1beta1".into(),
            plain: plain.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .cipher
}

/// Unwraps `cipher` through v1beta1 on a fresh connection.
async fn v1_decrypt(socket: &std::path::Path, cipher: Vec<u8>) -> Vec<u8> {
    v1(socket)
        .await
        .decrypt(akv_bridge::proto::kms_v1beta1::DecryptRequest {
            version: "v1beta1".into(),
            cipher,
        })
        .await
        .unwrap()
        .into_inner()
        .plain
}

/// Creates a version of `kek` with `body` (newer than the data's version, so v1beta1
/// tries it first among the older ones), then one usable newest version that becomes
/// current; returns the first.
async fn a_version_tried_before(mock: &mock_vault::MockVault, body: serde_json::Value) -> String {
    let before = create_version(mock, body);
    // Creation times are in seconds: keep the order unambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_version(mock, json!({"kty": "RSA", "key_size": 2048}));
    before
}

/// v1beta1 Decrypt (no key id): a disabled version among the candidates is skipped, and
/// the data of the enabled version still reads.
#[tokio::test]
async fn v1beta1_decrypt_skips_a_disabled_version() {
    let e = env(&["--key-poll-interval=200ms"]).await;
    let plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let cipher = v1_encrypt(&e.socket, &[3; 32]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let disabled = a_version_tried_before(&e.mock, json!({"kty": "RSA", "key_size": 2048})).await;
    set_enabled(&e.mock, &disabled, false);
    plugin.stop().await.unwrap();

    // A fresh plugin (empty cache): it learns every version at start.
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    assert_eq!(v1_decrypt(&e.socket, cipher).await, [3; 32]);
}

async fn try_encrypt(
    c: &mut v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
) -> Result<v2::EncryptResponse, tonic::Status> {
    c.encrypt(v2::EncryptRequest {
        plaintext: vec![1; 32],
        uid: "u".into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Revocation: disabling the key, or removing `keys/decrypt`, stops new wraps (local wraps
/// would otherwise go on with the public key) and says why; undoing it heals.
#[tokio::test]
async fn revoking_the_key_or_decrypt_stops_new_wraps() {
    let e = env(&["--key-poll-interval=200ms"]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    try_encrypt(&mut c).await.unwrap();

    let version = latest_version(&e.mock);
    set_enabled(&e.mock, &version, false);
    let s = wait_status(&e.socket, |s| s.healthz != "ok", "Status not ok").await;
    assert!(s.healthz.contains("disabled"), "{s:?}");
    let err = try_encrypt(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{}", err.message());
    set_enabled(&e.mock, &version, true);
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok again").await;
    try_encrypt(&mut c).await.unwrap();

    let perms =
        serde_json::from_value(json!({"kv1": {"keys": ["get", "list", "encrypt"]}})).unwrap();
    assert!(e.mock.set_permissions("kms", perms));
    let unseen = foreign(&e.mock, &[3; 32]);
    let err = c.decrypt(decrypt_request(&unseen)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = try_encrypt(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("keys/decrypt"), "{}", err.message());
    let perms =
        serde_json::from_value(json!({"kv1": {"keys": ["get", "list", "encrypt", "decrypt"]}}))
            .unwrap();
    assert!(e.mock.set_permissions("kms", perms));
    wait_status(
        &e.socket,
        |s| s.healthz == "ok",
        "ok once decrypt is allowed",
    )
    .await;
    try_encrypt(&mut c).await.unwrap();
}

/// The least privilege local wraps need: `keys/get` and `keys/decrypt` alone.
fn least_privilege_fixture() -> String {
    let fixture = KMS_FIXTURE.replace("[get, list, encrypt, decrypt]", "[get, decrypt]");
    assert_ne!(fixture, KMS_FIXTURE);
    fixture
}

/// The least privilege local wraps need: `keys/get` and `keys/decrypt`, no `keys/list`, no
/// `keys/encrypt`. The plugin serves, and the refused listing neither fails readiness nor
/// makes Key Vault reachability alternate.
#[tokio::test]
async fn get_and_decrypt_alone_serve_without_flapping() {
    let e = env_with(
        &least_privilege_fixture(),
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
        &["--key-poll-interval=200ms"],
    )
    .await;
    let plugin = PluginProcess::start(&e, &[], "plugin.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut c = v2(&e.socket).await;
    try_encrypt(&mut c).await.unwrap();
    let unseen = foreign(&e.mock, &[4; 32]);
    let plain = c
        .decrypt(decrypt_request(&unseen))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(plain, [4; 32]);
    eventually(Duration::from_secs(10), "ready", async || {
        plugin.readyz().await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(plugin.readyz().await.0, 200);
    assert!(
        plugin
            .metrics()
            .await
            .contains("akv_bridge_kms_keyvault_reachable 1")
    );
    let log = plugin.log_text();
    assert!(!log.contains("Key Vault unreachable"), "{log}");
    assert!(
        log.matches("cannot list the key's versions").count() <= 1,
        "the refused listing is not retried at every poll:\n{log}"
    );
}

/// A pinned version and no `keys/get` (the Go plugin needs none): wraps go to Key Vault;
/// once `keys/get` is granted, the next poll reads the public key and wraps turn local.
#[tokio::test]
async fn a_pinned_version_without_get_wraps_in_key_vault_until_get_is_granted() {
    let fixture = KMS_FIXTURE.replace("[get, list, encrypt, decrypt]", "[encrypt, decrypt]");
    assert_ne!(fixture, KMS_FIXTURE);
    let e = env_with(
        &fixture,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
        &["--key-poll-interval=200ms"],
    )
    .await;
    let version = latest_version(&e.mock);
    let plugin =
        PluginProcess::start(&e, &[&format!("--key-version={version}")], "plugin.log").await;
    wait_status(&e.socket, |s| s.healthz == "ok", "Status ok").await;
    let mut c = v2(&e.socket).await;
    let remote = try_encrypt(&mut c).await.unwrap();
    assert!(
        remote
            .annotations
            .contains_key("x-ms-request-id.azure.akv.io"),
        "wrapped by Key Vault"
    );
    eventually(Duration::from_secs(10), "ready", async || {
        plugin.readyz().await.0 == 200
    })
    .await;

    let perms =
        serde_json::from_value(json!({"kv1": {"keys": ["get", "encrypt", "decrypt"]}})).unwrap();
    assert!(e.mock.set_permissions("kms", perms));
    eventually(Duration::from_secs(10), "local wraps", async || {
        let enc = try_encrypt(&mut c).await.unwrap();
        !enc.annotations.contains_key("x-ms-request-id.azure.akv.io")
    })
    .await;
    assert!(
        plugin
            .metrics()
            .await
            .contains("akv_bridge_kms_local_wraps_total")
    );
}

/// v1beta1 Decrypt meets a version whose key_ops forbid decrypt (Key Vault answers 403
/// `KeyOperationForbidden`): that version is skipped like a disabled one, and it is not
/// taken for a lost `keys/decrypt` permission, so wraps go on.
#[tokio::test]
async fn v1beta1_decrypt_skips_a_sign_only_version_and_wraps_go_on() {
    let e = env(&["--key-poll-interval=200ms"]).await;
    let plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let cipher = v1_encrypt(&e.socket, &[6; 32]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a_version_tried_before(
        &e.mock,
        json!({"kty": "RSA", "key_size": 2048, "key_ops": ["sign", "verify"]}),
    )
    .await;
    plugin.stop().await.unwrap();

    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    assert_eq!(v1_decrypt(&e.socket, cipher).await, [6; 32]);
    let mut c = v2(&e.socket).await;
    try_encrypt(&mut c).await.unwrap();
    let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.healthz, "ok");
}

/// kube-apiserver 1.27 and 1.28 accept only `v2beta1`; 1.29 and later accept `v2` too.
#[tokio::test]
async fn the_status_version_is_a_flag() {
    let e = env(&["--status-version=v2"]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let s = wait_status(&e.socket, |s| s.healthz == "ok", "ok").await;
    assert_eq!(s.version, "v2");
}
