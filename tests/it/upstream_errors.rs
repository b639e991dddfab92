//! Who failed, and how, end to end: both servers on their real Unix sockets, mock-vault as an
//! HTTPS server answering as Key Vault and as Microsoft Entra, the official SDK in between.
//!
//! - Entra answering 500, 503, 429 (with and without `Retry-After`) or hanging is an outage
//!   or throttling named as Entra's (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`), not a rejected
//!   credential; KMS Status says so too, and the CSI provider serves cached objects through
//!   it (`--stale-if-error`). Entra rejecting the credential (`invalid_client`) is still
//!   `UNAUTHENTICATED`, never answered from the cache.
//! - A `Retry-After` beyond the deadline, from Key Vault or Entra, fails at once with
//!   `RESOURCE_EXHAUSTED` naming who throttles, instead of waiting out the deadline.
//! - A server certificate outside `--ca-bundle` is named as such, not "connection failed".

use std::time::{Duration, Instant};

use crate::common::kms::*;
use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use mock_vault::{FaultKind, MockVault};
use serde_json::json;
use tonic::Code;

/// Entra's failures in turn, what they must become, and what the message must say.
fn entra_failures(deadline: &str) -> Vec<(FaultKind, Code, String)> {
    let unavailable = |what: &str| format!("Microsoft Entra is unavailable: {what}");
    let throttled = "Microsoft Entra is throttling requests (HTTP 429".to_owned();
    vec![
        (
            FaultKind::Status { status: 500 },
            Code::Unavailable,
            unavailable("HTTP 500"),
        ),
        (
            FaultKind::Status { status: 503 },
            Code::Unavailable,
            unavailable("HTTP 503"),
        ),
        // A 429 without Retry-After, and one with.
        (
            FaultKind::Status { status: 429 },
            Code::ResourceExhausted,
            throttled.clone(),
        ),
        (
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
            Code::ResourceExhausted,
            throttled,
        ),
        // Entra hangs.
        (
            FaultKind::Latency {
                fixed_ms: Some(30_000),
                min_ms: None,
                max_ms: None,
            },
            Code::Unavailable,
            unavailable(&format!("it did not answer within {deadline}")),
        ),
    ]
}

/// Not the advice given when the credential itself is wrong.
fn assert_not_a_rejection(message: &str) {
    for wrong in ["authentication failed", "check the", "did not accept"] {
        assert!(!message.contains(wrong), "{message}");
    }
}

/// The identity `name` now has another client secret: the one our server holds is wrong.
fn rotate_secret(mock: &MockVault, name: &str, client_id: &str, permissions: serde_json::Value) {
    mock.upsert_identity(
        serde_json::from_value(json!({
            "name": name,
            "client_id": client_id,
            "client_secret": "a-secret-the-server-does-not-have",
            "permissions": permissions,
        }))
        .unwrap(),
    );
}

#[tokio::test]
async fn kms_entra_outages_and_throttling_are_not_authentication_failures() {
    let e = env(&[
        "--remote-encrypt",
        "--keyvault-timeout=2s",
        "--keyvault-max-retries=1",
    ])
    .await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    // Key Vault refuses the token in hand from now on: every call needs one from Entra.
    e.mock.expire_tokens();
    for (i, (kind, code, says)) in entra_failures("2s").into_iter().enumerate() {
        e.mock.clear_faults();
        e.mock
            .add_fault(fault(kind.clone(), Some("entra.")))
            .unwrap();
        let unseen = foreign(&e.mock, &[u8::try_from(i).unwrap(); 32]);
        let err = c.decrypt(decrypt_request(&unseen)).await.unwrap_err();
        assert_eq!(err.code(), code, "{kind:?}: {}", err.message());
        assert!(err.message().contains(&says), "{kind:?}: {}", err.message());
        assert_not_a_rejection(err.message());
        // Status tells kube-apiserver (and whoever reads its logs) the same.
        let status = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
        assert!(status.healthz.contains("Microsoft Entra"), "{status:?}");
        assert_not_a_rejection(&status.healthz);
    }

    // Entra rejecting the credential is still UNAUTHENTICATED, and says why.
    e.mock.clear_faults();
    rotate_secret(
        &e.mock,
        "kms",
        "00000000-0000-0000-0000-00000000c0de",
        json!({"kv1": {"keys": ["get", "list", "encrypt", "decrypt"]}}),
    );
    let err = c
        .decrypt(decrypt_request(&foreign(&e.mock, &[9; 32])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(
        err.message()
            .contains("Microsoft Entra rejected the credential (invalid_client"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once_naming_who_throttles() {
    let e = env(&["--keyvault-timeout=20s"]).await;
    let _plugin = Plugin::start(e.flags.clone(), &e.socket).await.unwrap();
    let mut c = v2(&e.socket).await;
    let long = FaultKind::Throttle {
        retry_after_secs: 60,
    };
    for (seed, by, operation) in [
        (7, "Key Vault", "keys.decrypt"),
        (8, "Microsoft Entra", "entra."),
    ] {
        e.mock.clear_faults();
        if by == "Microsoft Entra" {
            e.mock.expire_tokens();
        }
        e.mock
            .add_fault(fault(long.clone(), Some(operation)))
            .unwrap();
        let unseen = foreign(&e.mock, &[seed; 32]);
        let started = Instant::now();
        let err = c.decrypt(decrypt_request(&unseen)).await.unwrap_err();
        // Well inside the 20 s deadline: no waiting it out.
        assert!(started.elapsed() < Duration::from_secs(10), "{by}");
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "{by}: {}",
            err.message()
        );
        assert!(
            err.message().contains(&format!(
                "{by} is throttling requests (HTTP 429): Retry-After 60s is beyond this call's \
                 deadline"
            )),
            "{}",
            err.message()
        );
    }
}

const CSI_FIXTURE: &str = r#"
vaults:
  - name: kv1
    secrets:
      - {name: one, value: "value-one"}
      - {name: two, value: "value-two"}
identities:
  - name: sp
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: sp-secret-value
    permissions: {kv1: {secrets: [get, list]}}
  - name: app
    client_id: 11111111-0000-0000-0000-00000000a991
    federated: [{subject: "system:serviceaccount:apps:web"}]
    permissions: {kv1: {secrets: [get]}}
"#;

const SP_ID: &str = "33333333-0000-0000-0000-0000000005b1";

fn objects(names: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for n in names {
        out.push_str(&format!(
            "  - |\n    objectName: {n}\n    objectType: secret\n"
        ));
    }
    out
}

/// A Mount as the service principal (its secret from the node-publish Secret).
fn sp_mount(mock: &MockVault, names: &[&str]) -> csi::MountRequest {
    csi::MountRequest {
        attributes: json!({
            "keyvaultName": "kv1",
            "tenantId": mock.info().tenant_id,
            "objects": objects(names),
        })
        .to_string(),
        secrets: json!({"clientid": SP_ID, "clientsecret": "sp-secret-value"}).to_string(),
        target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

/// A Mount as the workload identity, with a service-account token Entra has not seen.
fn wi_mount(mock: &MockVault, names: &[&str]) -> csi::MountRequest {
    let token = mock
        .sa_token("system:serviceaccount:apps:web", Duration::from_secs(3600))
        .unwrap();
    csi::MountRequest {
        attributes: json!({
            "keyvaultName": "kv1",
            "tenantId": mock.info().tenant_id,
            "clientID": "11111111-0000-0000-0000-00000000a991",
            "objects": objects(names),
            "csi.storage.k8s.io/serviceAccount.tokens": json!({
                "api://AzureADTokenExchange": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}
            }).to_string(),
        })
        .to_string(),
        secrets: "{}".into(),
        target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

type CsiClient =
    csi::csi_driver_provider_client::CsiDriverProviderClient<tonic::transport::Channel>;

async fn csi_provider(mock: &MockVault, dir: &std::path::Path, extra: &[&str]) -> Provider {
    let socket = dir.join("azure.sock");
    let mut flags = csi_flags(mock, &socket);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    Provider::start(flags, &socket).await.unwrap()
}

async fn csi_client(provider: &Provider) -> CsiClient {
    CsiClient::new(channel(&provider.socket).await)
}

#[tokio::test]
async fn csi_serves_cached_objects_through_entra_outages_but_not_a_rejection() {
    let mock = mock(CSI_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = csi_provider(
        &mock,
        dir.path(),
        &[
            "--latest-cache-ttl=300ms",
            "--keyvault-timeout=3s",
            "--keyvault-max-retries=1",
        ],
    )
    .await;
    let mut client = csi_client(&provider).await;
    client.mount(sp_mount(&mock, &["one"])).await.unwrap();
    // Key Vault refuses the token in hand from now on: every read needs one from Entra.
    mock.expire_tokens();
    for (kind, code, says) in entra_failures("3s") {
        mock.clear_faults();
        mock.add_fault(fault(kind.clone(), Some("entra."))).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Past its TTL, the object read before is served.
        let r = client
            .mount(sp_mount(&mock, &["one"]))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"))
            .into_inner();
        assert_eq!(r.files[0].contents, b"value-one", "{kind:?}");
        // One never read fails, naming the object and Entra.
        let err = client.mount(sp_mount(&mock, &["two"])).await.unwrap_err();
        assert_eq!(err.code(), code, "{kind:?}: {}", err.message());
        for part in ["secret two", says.as_str()] {
            assert!(err.message().contains(part), "{kind:?}: {}", err.message());
        }
        assert_not_a_rejection(err.message());
    }

    // A workload identity's token Entra cannot judge now is an outage, not a refusal.
    mock.clear_faults();
    mock.add_fault(fault(FaultKind::Status { status: 503 }, Some("entra.")))
        .unwrap();
    let err = client.mount(wi_mount(&mock, &["one"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message()
            .contains("Microsoft Entra is unavailable: HTTP 503"),
        "{}",
        err.message()
    );
    assert_not_a_rejection(err.message());

    // Entra rejecting the credential: UNAUTHENTICATED, and the cache does not answer.
    mock.clear_faults();
    rotate_secret(
        &mock,
        "sp",
        SP_ID,
        json!({"kv1": {"secrets": ["get", "list"]}}),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = client.mount(sp_mount(&mock, &["one"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(
        err.message()
            .contains("Microsoft Entra rejected the credential (invalid_client"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn csi_a_retry_after_beyond_the_deadline_fails_at_once_and_is_served_stale() {
    let mock = mock(CSI_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = csi_provider(
        &mock,
        dir.path(),
        &[
            "--latest-cache-ttl=300ms",
            "--keyvault-timeout=20s",
            "--mount-timeout=60s",
        ],
    )
    .await;
    let mut client = csi_client(&provider).await;
    client.mount(sp_mount(&mock, &["one"])).await.unwrap();
    let long = FaultKind::Throttle {
        retry_after_secs: 60,
    };
    for (by, operation) in [("Key Vault", "secrets."), ("Microsoft Entra", "entra.")] {
        mock.clear_faults();
        if by == "Microsoft Entra" {
            mock.expire_tokens();
        }
        mock.add_fault(fault(long.clone(), Some(operation)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let started = Instant::now();
        let r = client
            .mount(sp_mount(&mock, &["one"]))
            .await
            .unwrap_or_else(|e| panic!("{by}: {e:?}"))
            .into_inner();
        assert_eq!(r.files[0].contents, b"value-one", "{by}: served stale");
        let err = client.mount(sp_mount(&mock, &["two"])).await.unwrap_err();
        // Both mounts, well inside one 20 s deadline.
        assert!(started.elapsed() < Duration::from_secs(10), "{by}");
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "{by}: {}",
            err.message()
        );
        assert!(
            err.message().contains(&format!(
                "{by} is throttling requests (HTTP 429): Retry-After 60s is beyond this call's \
                 deadline"
            )),
            "{}",
            err.message()
        );
    }
}

/// A CA bundle that does not hold the CA that signed mock-vault's certificate.
fn unrelated_ca(dir: &std::path::Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "a CA nobody here uses");
    let path = dir.join("unrelated-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

/// Replaces the `--ca-bundle` flag's value.
fn with_ca_bundle(mut flags: Vec<String>, pem: &std::path::Path) -> Vec<String> {
    flags.retain(|f| !f.starts_with("--ca-bundle="));
    flags.push(format!("--ca-bundle={}", pem.display()));
    flags
}

#[tokio::test]
async fn a_certificate_outside_the_ca_bundle_is_named() {
    let mock = mock(CSI_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = unrelated_ca(dir.path());
    let says = [
        "the TLS certificate of kv1.vault.localhost (Key Vault) could not be verified",
        "unknown issuer",
        "--ca-bundle",
    ];

    let socket = dir.path().join("azure.sock");
    let flags = with_ca_bundle(csi_flags(&mock, &socket), &other_ca);
    let provider = Provider::start(flags, &socket).await.unwrap();
    let err = csi_client(&provider)
        .await
        .mount(sp_mount(&mock, &["one"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for part in says {
        assert!(err.message().contains(part), "{}", err.message());
    }

    let kms = env(&[]).await;
    let flags = with_ca_bundle(kms.flags.clone(), &other_ca);
    let _plugin = Plugin::start_serving(flags, &kms.socket).await.unwrap();
    let status = wait_status(
        &kms.socket,
        |s| s.healthz.contains("could not be verified"),
        "Status naming the certificate",
    )
    .await;
    for part in says {
        assert!(status.healthz.contains(part), "{status:?}");
    }
}
