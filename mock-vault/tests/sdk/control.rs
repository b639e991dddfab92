//! Fault injection, counters, the control API over HTTP, the `mock-vault` binary's start-up
//! line, and `--state-file` persistence across a restart.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use azure_security_keyvault_secrets::models::SetSecretParameters;
use mock_vault::{Config, FaultKind, FaultSpec, Fixture, Scope};
use serde_json::{Value, json};

use crate::harness::{Harness, error_code};

fn fault(kind: FaultKind, op: &str, count: Option<u64>) -> FaultSpec {
    FaultSpec {
        kind,
        scope: Scope {
            operation: Some(op.into()),
            ..Scope::default()
        },
        count,
        fraction: None,
        duration_ms: None,
    }
}

#[tokio::test]
async fn sdk_retries_honour_retry_after_on_429() {
    let h = Harness::start("{vaults: [{name: kv1, secrets: [{name: s, value: v}]}]}").await;
    let client = h.secrets("kv1", h.default_credential());
    client.get_secret("s", None).await.unwrap(); // challenge and token done
    h.mock.reset_stats();
    h.mock
        .add_fault(fault(
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
            "secrets.get",
            Some(2),
        ))
        .unwrap();
    let secret = client
        .get_secret("s", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("v"));
    let log = h.mock.request_log(10);
    let statuses: Vec<u16> = log.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    for pair in log.windows(2) {
        assert!(
            pair[1].time_ms - pair[0].time_ms >= 1000,
            "the retry waited for Retry-After: {log:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_resets_and_outages() {
    let h = Harness::start("{vaults: [{name: kv1, secrets: [{name: s, value: v}]}]}").await;
    let client = h.secrets("kv1", h.default_credential());
    client.get_secret("s", None).await.unwrap();
    // One 503 and one reset are retried by the SDK and the call succeeds.
    h.mock
        .add_fault(fault(
            FaultKind::Status { status: 503 },
            "secrets.get",
            Some(1),
        ))
        .unwrap();
    h.mock
        .add_fault(fault(FaultKind::Reset, "secrets.get", Some(1)))
        .unwrap();
    client.get_secret("s", None).await.unwrap();
    // A persistent 500 exhausts the retries and surfaces.
    h.mock
        .add_fault(fault(
            FaultKind::Status { status: 500 },
            "secrets.get",
            None,
        ))
        .unwrap();
    let err = client.get_secret("s", None).await.unwrap_err();
    assert_eq!(error_code(&err).0, 500);
    h.mock.clear_faults();
    // An outage window drops every vault connection until it ends.
    h.mock
        .add_fault(FaultSpec {
            kind: FaultKind::Outage,
            scope: Scope::default(),
            count: None,
            fraction: None,
            duration_ms: Some(60_000),
        })
        .unwrap();
    let err = client.get_secret("s", None).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection
        ),
        "{:?}",
        err.kind()
    );
    h.mock.clear_faults();
    client.get_secret("s", None).await.unwrap();
    let stats = h.mock.stats();
    assert!(
        stats.by_status.get(&0).copied().unwrap_or(0) >= 2,
        "dropped connections are logged"
    );
}

#[tokio::test]
async fn control_api_over_http() {
    let h = Harness::start("{}").await;
    let control = h.mock.info().control_url.clone();
    let http = reqwest::Client::new();
    let info: Value = http
        .get(format!("{control}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["tenant_id"], h.mock.info().tenant_id);
    // Create objects through the control API with the vault's own REST shapes.
    let resp = http
        .post(format!("{control}/vaults/kv1/keys/made/create"))
        .json(&json!({"kty": "RSA", "key_size": 2048}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .put(format!("{control}/vaults/kv1/secrets/pw"))
        .json(&json!({"value": "from-control"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rotated: Value = http
        .post(format!("{control}/vaults/kv1/keys/made/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        rotated["key"]["kid"]
            .as_str()
            .unwrap()
            .contains("/keys/made/")
    );
    // Faults through HTTP, then visible to the SDK.
    let resp = http
        .post(format!("{control}/faults"))
        .json(&json!({"kind": "status", "status": 502, "scope": {"operation": "secrets.get"}, "count": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = http
        .post(format!("{control}/faults"))
        .json(&json!({"kind": "latency", "fixed_ms": 5, "fraction": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "an invalid fault is refused");
    let client = h.secrets("kv1", h.default_credential());
    let err = client.get_secret("pw", None).await.unwrap_err();
    assert_eq!(error_code(&err).0, 502);
    http.delete(format!("{control}/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        client
            .get_secret("pw", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("from-control")
    );
    let stats: Value = http
        .get(format!("{control}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["by_operation"]["secrets.get"].as_u64().unwrap() >= 5);
    assert!(stats["by_status"]["502"].as_u64().unwrap() >= 4);
    let log: Value = http
        .get(format!("{control}/log?limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 3);
    // A service-account token from the control API.
    let t: Value = http
        .post(format!("{control}/sa-tokens"))
        .json(&json!({"subject": "system:serviceaccount:a:b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["token"].as_str().unwrap().split('.').count(), 3);
}

#[tokio::test]
async fn control_api_must_be_loopback() {
    let err = mock_vault::start(Config {
        control_listen: "0.0.0.0:0".parse().unwrap(),
        ..Config::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    let err = Fixture::parse("vaults: [{name: kv, oops: 1}]").unwrap_err();
    assert!(err.contains("oops"), "{err}");
}

/// Starts the `mock-vault` binary and reads its JSON start-up line.
fn spawn_binary(args: &[&str]) -> (std::process::Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-vault"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).expect("one JSON line on stdout");
    (child, info)
}

fn stop(mut child: std::process::Child) {
    // SIGTERM via kill(1): the binary shuts down gracefully and persists its state.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "mock-vault exited with {status}");
}

#[tokio::test]
async fn binary_prints_its_wiring_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let (child, info) = spawn_binary(&["--state-file", state_arg, "--vault", "kv2"]);
    for key in [
        "address",
        "authority_host",
        "tenant_id",
        "client_id",
        "client_secret",
        "ca_pem_path",
        "control_url",
    ] {
        assert!(info.get(key).is_some(), "{key} in {info}");
    }
    assert!(
        info["vaults"]["kv1"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://kv1.vault.localhost:")
    );
    assert!(info["vaults"]["kv2"].is_object());

    let write = |info: Value| async move {
        let h = external(&info);
        let client = h.secrets("kv2");
        client
            .set_secret(
                "kept",
                SetSecretParameters {
                    value: Some("across restarts".into()),
                    ..Default::default()
                }
                .try_into()
                .unwrap(),
                None,
            )
            .await
            .unwrap();
    };
    write(info.clone()).await;
    stop(child);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file holds keys and secrets");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("across restarts"), "the secret was persisted");

    let (child, info) = spawn_binary(&["--state-file", state_arg, "--vault", "kv2"]);
    let h = external(&info);
    let secret = h
        .secrets("kv2")
        .get_secret("kept", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("across restarts"));
    stop(child);
}

/// SDK clients for a mock-vault running as another process, from its start-up line.
struct External {
    info: Value,
    http: reqwest::Client,
}

fn external(info: &Value) -> External {
    let ca = std::fs::read(info["ca_pem_path"].as_str().unwrap()).unwrap();
    let mut b =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]);
    for (host, addr) in info["resolve"].as_object().unwrap() {
        b = b.resolve(host, addr.as_str().unwrap().parse().unwrap());
    }
    External {
        info: info.clone(),
        http: b.build().unwrap(),
    }
}

impl External {
    fn secrets(&self, vault: &str) -> azure_security_keyvault_secrets::SecretClient {
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = self.info["authority_host"].as_str().unwrap().to_owned();
        let options = azure_core::http::ClientOptions {
            transport: Some(azure_core::http::Transport::new(std::sync::Arc::new(
                self.http.clone(),
            ))),
            cloud: Some(std::sync::Arc::new(cloud.into())),
            ..Default::default()
        };
        let cred = azure_identity::ClientSecretCredential::new(
            self.info["tenant_id"].as_str().unwrap(),
            self.info["client_id"].as_str().unwrap().to_owned(),
            self.info["client_secret"]
                .as_str()
                .unwrap()
                .to_owned()
                .into(),
            Some(azure_identity::ClientSecretCredentialOptions {
                client_options: options.clone(),
            }),
        )
        .unwrap();
        azure_security_keyvault_secrets::SecretClient::new(
            self.info["vaults"][vault]["url"].as_str().unwrap(),
            cred,
            Some(azure_security_keyvault_secrets::SecretClientOptions {
                client_options: options,
                ..Default::default()
            }),
        )
        .unwrap()
    }
}

#[tokio::test]
async fn harness_uses_the_same_wiring_as_external_clients() {
    // The in-process harness and a client built from the printed JSON agree.
    let h = Harness::start("{vaults: [{name: kv1, secrets: [{name: s, value: v}]}]}").await;
    let info = serde_json::to_value(h.mock.info()).unwrap();
    let ext = external(&info);
    assert_eq!(
        ext.secrets("kv1")
            .get_secret("s", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("v")
    );
}
