//! The KMS plugin's test environment: mock-vault with one RSA key `kek` in vault `kv1`, an
//! azure.json for the plugin's identity, and the flags wiring the plugin to both.

use std::path::PathBuf;
use std::time::Duration;

use akv_bridge::kms::envelope::{self, KeyRef, KeyVersion};
use akv_bridge::proto::kms_v2 as v2;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{KMS_FIXTURE, azure_json, kms_flags, mock};

pub struct Env {
    pub mock: mock_vault::MockVault,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub flags: Vec<String>,
}

pub async fn env_with(fixture: &str, client_id: &str, secret: &str, extra: &[&str]) -> Env {
    let mock = mock(fixture).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("run/kms.sock");
    let azure = azure_json(dir.path(), &mock, client_id, secret);
    let mut flags = kms_flags(&mock, &socket, &azure);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    Env {
        mock,
        dir,
        socket,
        flags,
    }
}

pub async fn env(extra: &[&str]) -> Env {
    env_with(
        KMS_FIXTURE,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
        extra,
    )
    .await
}

/// The version at the end of a versioned `kid` (`.../keys/<name>/<version>`).
pub fn kid_version(kid: &Value) -> String {
    kid.as_str()
        .and_then(|kid| kid.rsplit('/').next())
        .expect("versioned kid")
        .to_owned()
}

/// The newest version of `name` in `vault`.
pub fn newest_version(mock: &mock_vault::MockVault, vault: &str, name: &str) -> String {
    let key = mock
        .admin(
            vault,
            http::Method::GET,
            &format!("/keys/{name}/"),
            Value::Null,
        )
        .expect("key");
    kid_version(&key["key"]["kid"])
}

pub fn latest_version(mock: &mock_vault::MockVault) -> String {
    newest_version(mock, "kv1", "kek")
}

/// An admin creates a new version of `kek` with this body (`kty`, `key_size`, `key_ops`...).
pub fn create_version(mock: &mock_vault::MockVault, body: Value) -> String {
    let key = mock
        .admin("kv1", http::Method::POST, "/keys/kek/create", body)
        .expect("create a version");
    kid_version(&key["key"]["kid"])
}

/// An admin enables or disables a version of `kek`.
pub fn set_enabled(mock: &mock_vault::MockVault, version: &str, enabled: bool) {
    mock.admin(
        "kv1",
        http::Method::PATCH,
        &format!("/keys/kek/{version}"),
        json!({"attributes": {"enabled": enabled}}),
    )
    .expect("update the version");
}

pub fn key_ref(mock: &mock_vault::MockVault) -> KeyRef {
    KeyRef::new(&mock.info().vaults["kv1"].url, "kek")
}

/// A seed wrapped by Key Vault's own `encrypt` with the latest version, as another plugin
/// instance (or this one before a restart) stored it: this process has never seen it, so
/// its Decrypt must reach Key Vault.
pub fn foreign(mock: &mock_vault::MockVault, seed: &[u8]) -> v2::EncryptResponse {
    let version = latest_version(mock);
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed);
    let wrapped = mock
        .admin(
            "kv1",
            http::Method::POST,
            &format!("/keys/kek/{version}/encrypt"),
            json!({"alg": "RSA-OAEP-256", "value": value}),
        )
        .expect("Key Vault encrypt");
    let version = KeyVersion::parse(&version).expect("version");
    v2::EncryptResponse {
        ciphertext: wrapped["value"]
            .as_str()
            .expect("value")
            .as_bytes()
            .to_vec(),
        key_id: key_ref(mock).key_id(&version),
        annotations: envelope::encrypt_annotations(&version, &envelope::ResponseInfo::default()),
    }
}

/// The Decrypt kube-apiserver sends for what an Encrypt returned.
pub fn decrypt_request(e: &v2::EncryptResponse) -> v2::DecryptRequest {
    v2::DecryptRequest {
        ciphertext: e.ciphertext.clone(),
        uid: "test-uid".into(),
        key_id: e.key_id.clone(),
        annotations: e.annotations.clone(),
    }
}

/// Key Vault's own `decrypt` (RSA-OAEP-256) of a stored ciphertext text with `version`.
pub fn keyvault_unwrap(mock: &mock_vault::MockVault, version: &str, ciphertext: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(ciphertext).expect("base64url text");
    let plain = mock
        .admin(
            "kv1",
            http::Method::POST,
            &format!("/keys/kek/{version}/decrypt"),
            json!({"alg": "RSA-OAEP-256", "value": text}),
        )
        .expect("Key Vault decrypt");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(plain["value"].as_str().expect("value"))
        .expect("base64url")
}

/// Every Key Vault and Entra request fails (connections dropped) until cleared.
pub fn full_outage(mock: &mock_vault::MockVault) {
    for operation in [None, Some("entra.")] {
        mock.add_fault(super::fault(mock_vault::FaultKind::Outage, operation))
            .expect("fault rule");
    }
}

/// The plugin as a process (the release-style binary), its stderr in `log`.
pub struct PluginProcess {
    pub child: tokio::process::Child,
    pub log: PathBuf,
    pub healthz_port: u16,
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PluginProcess {
    /// Starts `akv-bridge kms` with the environment's flags plus `extra`, and waits until
    /// its socket answers (not until Status is ok).
    pub async fn start(e: &Env, extra: &[&str], log_name: &str) -> Self {
        let healthz_port = free_port();
        let metrics_port = free_port();
        let log = e.dir.path().join(log_name);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
            .arg("kms")
            .args(&e.flags)
            .args(extra)
            .arg(format!("--healthz-port={healthz_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg("--log-format-json")
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("plugin starts");
        super::wait_for_child_socket(&e.socket, &mut child).await;
        Self {
            child,
            log,
            healthz_port,
            metrics_port,
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_none()
    }

    /// HTTP status of the readiness endpoint.
    pub async fn readyz(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.healthz_port))
            .await
            .expect("readyz answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// SIGKILL, as a node crash or an OOM kill.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until `f` holds, polling every 100 ms, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
