//! Shared test plumbing: mock-vault in-process (a real HTTPS server), the KMS plugin
//! in-process on a real Unix socket, and a gRPC client over that socket.

#![allow(dead_code)]

pub mod kms;

use std::path::{Path, PathBuf};
use std::time::Duration;

use akv_bridge::proto::kms_v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use akv_bridge::proto::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use mock_vault::{Config, Fixture, MockVault};
use serde_json::json;
use tonic::transport::Channel;

pub const KMS_FIXTURE: &str = r#"
vaults:
  - name: kv1
    keys: [{name: kek, kty: RSA, size: 2048}]
identities:
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions: {kv1: {keys: [get, list, encrypt, decrypt]}}
  - name: admin
    client_id: 00000000-0000-0000-0000-0000000000ad
    client_secret: admin-secret
"#;

/// Vault `kv1` with secrets `one`, `two`, `three`, read by the service principal `sp`.
pub const CSI_SP_FIXTURE: &str = r#"
vaults:
  - name: kv1
    secrets:
      - {name: one, value: "value-one"}
      - {name: two, value: "value-two"}
      - {name: three, value: "value-three"}
identities:
  - name: sp
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: sp-secret-value
    permissions: {kv1: {secrets: [get, list]}}
"#;

pub async fn mock(fixture: &str) -> MockVault {
    mock_vault::start(Config {
        fixture: Fixture::parse(fixture).expect("fixture"),
        ..Config::default()
    })
    .await
    .expect("mock-vault starts")
}

/// Writes an azure.json for a client-secret identity.
pub fn azure_json(dir: &Path, mock: &MockVault, client_id: &str, secret: &str) -> PathBuf {
    let path = dir.join("azure.json");
    let body = json!({
        "cloud": "AzurePublicCloud",
        "tenantId": mock.info().tenant_id,
        "aadClientId": client_id,
        "aadClientSecret": secret,
        "subscriptionId": "ignored",
        "resourceGroup": "ignored",
    });
    std::fs::write(&path, body.to_string()).expect("write azure.json");
    path
}

/// [`akv_bridge::cli::mock_vault_flags`] for this mock.
pub fn mock_flags(mock: &MockVault) -> Vec<String> {
    let info = mock.info();
    akv_bridge::cli::mock_vault_flags(info.address, &info.ca_pem_path, &info.authority_host)
}

/// The plugin flags that wire it to the mock.
pub fn kms_flags(mock: &MockVault, socket: &Path, azure_json: &Path) -> Vec<String> {
    let info = mock.info();
    let mut flags = vec![
        format!("--listen-addr=unix://{}", socket.display()),
        format!("--vault-url={}", info.vaults["kv1"].url),
    ];
    flags.extend(mock_flags(mock));
    flags.extend([
        format!("--config-file-path={}", azure_json.display()),
        "--key-name=kek".into(),
        "--healthz-port=0".into(),
        "--metrics-addr=127.0.0.1:0".into(),
        "--keyvault-timeout=2500ms".into(),
        "--shutdown-grace=5s".into(),
    ]);
    flags
}

pub fn kms_args(flags: &[String]) -> akv_bridge::cli::KmsArgs {
    akv_bridge::cli::parse_flags("kms", flags).expect("flags parse")
}

/// A server (KMS plugin or CSI provider) running in this process on a real Unix socket.
pub struct Server<E> {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), E>>>,
}

/// The KMS plugin.
pub type Plugin = Server<akv_bridge::kms::KmsStartError>;
/// The CSI provider.
pub type Provider = Server<akv_bridge::csi::CsiStartError>;

impl<E: std::fmt::Debug + Send + 'static> Server<E> {
    /// Starts `run(stop)` and waits until `socket` answers.
    async fn spawn<F>(
        socket: &Path,
        run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
    ) -> Result<Self, E>
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if task.is_finished() {
                return Err(task
                    .await
                    .expect("join")
                    .expect_err("stopped without an error"));
            }
            if socket.exists() && tokio::net::UnixStream::connect(socket).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            socket: socket.to_owned(),
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// SIGTERM-equivalent: drain and stop; returns the run result.
    pub async fn stop(mut self) -> Result<(), E> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await.expect("join")
    }
}

impl Plugin {
    /// Starts the KMS plugin and waits until Status says "ok", polling as kube-apiserver
    /// does (the key is resolved in the background after the socket is bound).
    pub async fn start(
        flags: Vec<String>,
        socket: &Path,
    ) -> Result<Self, akv_bridge::kms::KmsStartError> {
        let plugin = Self::start_serving(flags, socket).await?;
        wait_status(socket, |s| s.healthz == "ok", "Status ok").await;
        Ok(plugin)
    }

    /// Starts the KMS plugin and waits only until its socket answers.
    pub async fn start_serving(
        flags: Vec<String>,
        socket: &Path,
    ) -> Result<Self, akv_bridge::kms::KmsStartError> {
        let args = kms_args(&flags);
        Self::spawn(socket, |rx| {
            akv_bridge::kms::run(args, async {
                let _ = rx.await;
            })
        })
        .await
    }
}

/// Polls Status every 50 ms until `done` holds (20 s at most); returns that answer.
pub async fn wait_status(
    socket: &Path,
    done: impl Fn(&akv_bridge::proto::kms_v2::StatusResponse) -> bool,
    what: &str,
) -> akv_bridge::proto::kms_v2::StatusResponse {
    let mut client = v2(socket).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .status(akv_bridge::proto::kms_v2::StatusRequest {})
            .await
            .expect("Status answers")
            .into_inner();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached; last Status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Provider {
    /// Starts the CSI provider and waits until its socket answers.
    pub async fn start(
        flags: Vec<String>,
        socket: &Path,
    ) -> Result<Self, akv_bridge::csi::CsiStartError> {
        let args = csi_args(&flags);
        Self::spawn(socket, |rx| {
            akv_bridge::csi::run(args, async {
                let _ = rx.await;
            })
        })
        .await
    }
}

impl<E> Drop for Server<E> {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The CSI provider flags that wire it to the mock.
pub fn csi_flags(mock: &MockVault, socket: &Path) -> Vec<String> {
    let info = mock.info();
    let template = info
        .vaults
        .values()
        .next()
        .map(|v| {
            let (_, rest) = v.url.split_once("://").expect("url");
            let (_, domain) = rest.split_once('.').expect("vault host");
            format!("https://{{name}}.{domain}")
        })
        .expect("a vault");
    let mut flags = vec![
        format!("--endpoint=unix://{}", socket.display()),
        format!("--vault-url-template={template}"),
    ];
    flags.extend(mock_flags(mock));
    flags.extend([
        "--healthz-port=0".into(),
        "--healthz-bind-address=127.0.0.1".into(),
        "--prometheus-port=0".into(),
        "--metrics-bind-address=127.0.0.1".into(),
        "--keyvault-timeout=10s".into(),
        "--shutdown-grace=5s".into(),
    ]);
    flags
}

pub fn csi_args(flags: &[String]) -> akv_bridge::cli::CsiArgs {
    akv_bridge::cli::parse_flags("csi", flags).expect("flags parse")
}

pub async fn channel(socket: &Path) -> Channel {
    let spec = akv_bridge::socket::SocketAddress::Path(socket.to_owned());
    akv_bridge::socket::connect(&spec, Duration::from_secs(10))
        .await
        .expect("connect to the plugin socket")
}

pub async fn v2(socket: &Path) -> V2Client<Channel> {
    V2Client::new(channel(socket).await)
}

pub async fn v1(socket: &Path) -> V1Client<Channel> {
    V1Client::new(channel(socket).await)
}

/// Key Vault requests of one operation that reached the handler authenticated.
pub fn kv_calls(mock: &MockVault, op: &str) -> u64 {
    mock.stats().authenticated(op)
}

/// A fault rule for every request (or one operation), without count, fraction or end.
pub fn fault(kind: mock_vault::FaultKind, operation: Option<&str>) -> mock_vault::FaultSpec {
    mock_vault::FaultSpec {
        kind,
        scope: mock_vault::Scope {
            operation: operation.map(str::to_owned),
            ..mock_vault::Scope::default()
        },
        count: None,
        fraction: None,
        duration_ms: None,
    }
}

/// Waits until a server running as a child process answers on `socket`; fails the test if
/// the process exits or 20 s pass.
pub async fn wait_for_child_socket(socket: &Path, child: &mut tokio::process::Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        assert!(
            child.try_wait().expect("child status").is_none(),
            "server exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
