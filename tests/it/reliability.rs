//! Faults survived and hostile input refused, over real sockets and, where the scenario is
//! about the process, real processes: Key Vault outages and slowness, the mock vault
//! restarting, SIGKILL and restart, oversized messages, and a
//! table of malformed CSI requests with their exact codes.

use std::time::{Duration, Instant};

use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use mock_vault::FaultKind;
use serde_json::json;
use tonic::Code;

fn objects(names: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for n in names {
        out.push_str(&format!(
            "  - |\n    objectName: {n}\n    objectType: secret\n"
        ));
    }
    out
}

fn mount_request(mock: &mock_vault::MockVault, names: &[&str]) -> csi::MountRequest {
    csi::MountRequest {
        attributes: json!({
            "keyvaultName": "kv1",
            "tenantId": mock.info().tenant_id,
            "objects": objects(names),
        })
        .to_string(),
        secrets: json!({"clientid": "33333333-0000-0000-0000-0000000005b1", "clientsecret": "sp-secret-value"})
            .to_string(),
        target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

async fn csi_client(
    socket: &std::path::Path,
) -> csi::csi_driver_provider_client::CsiDriverProviderClient<tonic::transport::Channel> {
    csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel(socket).await)
}

#[tokio::test]
async fn csi_outage_serves_cached_objects_and_fails_uncached_ones_clearly() {
    let mock = mock(CSI_SP_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let mut flags = csi_flags(&mock, &socket);
    flags.extend([
        "--latest-cache-ttl=500ms".to_owned(),
        "--keyvault-timeout=2s".to_owned(),
        "--keyvault-max-retries=1".to_owned(),
    ]);
    let provider = Provider::start(flags, &socket).await.unwrap();
    let mut client = csi_client(&provider.socket).await;
    client
        .mount(mount_request(&mock, &["one", "two"]))
        .await
        .unwrap();
    let outage = mock.add_fault(fault(FaultKind::Outage, None)).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Past the TTL, during the outage: the last values answer.
    let r = client
        .mount(mount_request(&mock, &["one", "two"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files.len(), 2);
    assert_eq!(r.files[0].contents, b"value-one");
    // Never read before: a clear failure naming the object.
    let started = Instant::now();
    let err = client
        .mount(mount_request(&mock, &["three"]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(err.message().contains("secret three"), "{}", err.message());
    // Recovery: no restart needed.
    mock.clear_faults();
    let _ = outage;
    let r = client
        .mount(mount_request(&mock, &["three"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, b"value-three");
}

#[tokio::test]
async fn key_vault_slower_than_the_deadline_fails_in_time_without_pile_up() {
    let mock = mock(KMS_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let azure = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let mut flags = kms_flags(&mock, &socket, &azure);
    flags.retain(|f| !f.starts_with("--keyvault-timeout"));
    flags.push("--keyvault-timeout=500ms".into());
    // Wraps through Key Vault, so the slow vault is on the Encrypt path (local wraps are
    // covered by tests/it/kms_outage.rs).
    flags.push("--remote-encrypt".into());
    let plugin = Plugin::start(flags, &socket).await.unwrap();
    let client = v2(&plugin.socket).await;
    mock.add_fault(fault(
        FaultKind::Latency {
            fixed_ms: Some(5_000),
            min_ms: None,
            max_ms: None,
        },
        Some("keys.encrypt"),
    ))
    .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.encrypt(v2::EncryptRequest {
                plaintext: vec![i; 32],
                uid: format!("uid-{i}"),
            })
            .await
        }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // The slow requests were abandoned, not left running: once the vault is fast again,
    // the plugin answers at once.
    mock.clear_faults();
    let mut c = client.clone();
    let started = Instant::now();
    c.encrypt(v2::EncryptRequest {
        plaintext: vec![9; 32],
        uid: "after".into(),
    })
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_mock_vault_restarting_mid_run_is_survived_without_a_restart_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("vault-state.json");
    // One server certificate for both lives of the mock, as a real vault keeps its own.
    let tls = write_tls(dir.path());
    let start = |listen: std::net::SocketAddr| {
        let state = state.clone();
        let tls = tls.clone();
        async move {
            mock_vault::start(mock_vault::Config {
                fixture: mock_vault::Fixture::parse(KMS_FIXTURE).unwrap(),
                listen,
                state_file: Some(state),
                tls,
                // Key Vault checks Entra tokens statelessly, so a real restart never
                // invalidates them; the mock keeps issued tokens in memory only. Tokens
                // that expire at once make every call fetch a fresh one, so what this
                // test checks is reconnection and state, not token persistence.
                token_ttl: Duration::from_secs(1),
                ..mock_vault::Config::default()
            })
            .await
            .unwrap()
        }
    };
    let mock = start("127.0.0.1:0".parse().unwrap()).await;
    let address = mock.info().address;
    let socket = dir.path().join("kms.sock");
    let azure = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let mut flags = kms_flags(&mock, &socket, &azure);
    // Wraps through Key Vault, so the vault's absence shows on Encrypt (local wraps carry
    // on through outages: tests/it/kms_outage.rs).
    flags.push("--remote-encrypt".into());
    let plugin = Plugin::start(flags, &socket).await.unwrap();
    let mut client = v2(&plugin.socket).await;
    let before = client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![4; 32],
            uid: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    mock.shutdown().await;
    // Down: a clear failure.
    let err = client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![5; 32],
            uid: "b".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    // Back on the same address with the same state (keys, CA): the plugin recovers.
    let mock = start(address).await;
    let r = client
        .decrypt(v2::DecryptRequest {
            ciphertext: before.ciphertext.clone(),
            uid: "c".into(),
            key_id: before.key_id.clone(),
            annotations: before.annotations.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.plaintext, vec![4; 32]);
    client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![6; 32],
            uid: "d".into(),
        })
        .await
        .unwrap();
    assert!(
        mock.stats().authenticated("keys.encrypt") >= 1,
        "the vault back with its state serves the plugin's wraps"
    );
    let version = std::str::from_utf8(&before.annotations["key-version.akv-bridge.io"]).unwrap();
    assert_eq!(
        crate::common::kms::keyvault_unwrap(&mock, version, &before.ciphertext),
        [4; 32],
        "and unwraps what was wrapped before its restart"
    );
}

/// A CA and a server certificate for the mock's names, as PEM files.
fn write_tls(dir: &std::path::Path) -> mock_vault::TlsSource {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = vec![
        "localhost".to_owned(),
        "kv1.vault.localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
    std::fs::write(&paths.0, cert.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, ca_cert.pem()).unwrap();
    mock_vault::TlsSource::Files {
        cert: paths.0,
        key: paths.1,
        ca: Some(paths.2),
    }
}

#[tokio::test]
async fn sigkill_and_restart_recreates_the_socket_and_old_data_still_decrypts() {
    let mock = mock(KMS_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let azure = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let flags = kms_flags(&mock, &socket, &azure);
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
            .arg("kms")
            .args(&flags)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    wait_for_child_socket(&socket, &mut first).await;
    wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
    let mut client = v2(&socket).await;
    let written = client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![7; 32],
            uid: "before-kill".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // A second instance on the same socket refuses to start while the first serves.
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .arg("kms")
        .args(&flags)
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use by a running server"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // SIGKILL: no clean-up runs, the socket file stays behind.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(socket.exists(), "a killed server leaves its socket file");
    let mut restarted = spawn();
    wait_for_child_socket(&socket, &mut restarted).await;
    wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
    let mut client = v2(&socket).await;
    let r = client
        .decrypt(v2::DecryptRequest {
            ciphertext: written.ciphertext,
            uid: "after-restart".into(),
            key_id: written.key_id,
            annotations: written.annotations,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.plaintext, vec![7; 32]);
    // SIGTERM drains and removes the socket.
    let pid =
        rustix::process::Pid::from_raw(i32::try_from(restarted.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), restarted.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "SIGTERM removes the socket");
}

#[tokio::test]
async fn oversized_messages_are_refused_and_the_server_keeps_serving() {
    let mock = mock(CSI_SP_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let provider = Provider::start(csi_flags(&mock, &socket), &socket)
        .await
        .unwrap();
    let mut client = csi_client(&provider.socket)
        .await
        .max_encoding_message_size(64 * 1024 * 1024);
    let mut request = mount_request(&mock, &["one"]);
    request.attributes = format!("{{\"padding\":\"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let err = client.mount(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    // Under the transport limit but over the parser's: a clear invalid argument.
    let mut request = mount_request(&mock, &["one"]);
    request.attributes = format!("{{\"padding\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let err = client.mount(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("attributes"), "{}", err.message());
    let r = client
        .mount(mount_request(&mock, &["one"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, b"value-one");
}

/// Each malformed Mount, its exact code and a word of its message.
#[tokio::test]
async fn malformed_mount_requests_get_their_exact_code_and_reason() {
    let mock = mock(CSI_SP_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let provider = Provider::start(csi_flags(&mock, &socket), &socket)
        .await
        .unwrap();
    let mut client = csi_client(&provider.socket).await;
    let tenant = mock.info().tenant_id.clone();
    let good = mount_request(&mock, &["one"]);
    let with_attrs = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r = good.clone();
        let mut a: serde_json::Value = serde_json::from_str(&r.attributes).unwrap();
        f(&mut a);
        r.attributes = a.to_string();
        r
    };
    let cases: Vec<(&str, csi::MountRequest, Code, &str)> = vec![
        (
            "attributes not JSON",
            csi::MountRequest {
                attributes: "{not json".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "attributes not an object",
            csi::MountRequest {
                attributes: "[1,2]".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "secrets not JSON",
            csi::MountRequest {
                secrets: "nope".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "secrets",
        ),
        (
            "permission not a number",
            csi::MountRequest {
                permission: "rw-r--r--".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "permission",
        ),
        (
            "permission over 0777",
            csi::MountRequest {
                permission: "4096".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "permission",
        ),
        (
            "relative target path",
            csi::MountRequest {
                target_path: "relative/dir".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "target",
        ),
        (
            "no keyvaultName",
            with_attrs(&|a| {
                a.as_object_mut().unwrap().remove("keyvaultName");
            }),
            Code::InvalidArgument,
            "keyvaultName",
        ),
        (
            "bad keyvaultName",
            with_attrs(&|a| a["keyvaultName"] = json!("kv_1!")),
            Code::InvalidArgument,
            "kv_1",
        ),
        (
            "no tenant",
            with_attrs(&|a| {
                a.as_object_mut().unwrap().remove("tenantId");
            }),
            Code::InvalidArgument,
            "tenant",
        ),
        (
            "unknown cloud",
            with_attrs(&|a| a["cloudName"] = json!("MarsCloud")),
            Code::InvalidArgument,
            "MarsCloud",
        ),
        (
            "objects not YAML",
            with_attrs(&|a| a["objects"] = json!("array: [unclosed")),
            Code::InvalidArgument,
            "objects",
        ),
        (
            "unknown objectType",
            with_attrs(&|a| {
                a["objects"] = json!("array:\n  - |\n    objectName: x\n    objectType: blob\n")
            }),
            Code::InvalidArgument,
            "objectType",
        ),
        (
            "history too long",
            with_attrs(&|a| {
                a["objects"] = json!(
                    "array:\n  - |\n    objectName: x\n    objectType: secret\n    objectVersionHistory: 1000\n"
                )
            }),
            Code::InvalidArgument,
            "objectVersionHistory",
        ),
        (
            "pfx on a key",
            with_attrs(&|a| {
                a["objects"] = json!(
                    "array:\n  - |\n    objectName: x\n    objectType: key\n    objectFormat: pfx\n"
                )
            }),
            Code::InvalidArgument,
            "objectFormat",
        ),
        (
            "pod identity",
            with_attrs(&|a| a["usePodIdentity"] = json!("true")),
            Code::InvalidArgument,
            "usePodIdentity",
        ),
        (
            "token not a JWT",
            with_attrs(&|a| {
                a["clientID"] = json!("11111111-0000-0000-0000-000000000001");
                a["csi.storage.k8s.io/serviceAccount.tokens"] = json!(json!({"api://AzureADTokenExchange": {"token": "not-a-jwt", "expirationTimestamp": "2099-01-01T00:00:00Z"}}).to_string());
            }),
            Code::InvalidArgument,
            "JWT",
        ),
        (
            "unknown vault",
            with_attrs(&|a| a["keyvaultName"] = json!("nosuchvault")),
            Code::NotFound,
            "nosuchvault",
        ),
    ];
    let _ = tenant;
    for (name, request, code, word) in cases {
        let err = client.mount(request).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains(word),
            "{name}: {:?} does not name {word:?}",
            err.message()
        );
        assert!(!err.message().contains("sp-secret-value"), "{name}");
    }
    // Still serving.
    client.mount(good).await.unwrap();
}
