//! `akv-bridge probe kms`: a KMS v2 client that talks to a plugin exactly as kube-apiserver
//! does, and checks every limit kube-apiserver checks.
//!
//! The probe:
//!
//! 1. **Status**: `healthz == "ok"`, `version` is `v2` or `v2beta1`, `key_id` non-empty and
//!    at most 1024 bytes.
//! 2. **Encrypt** a fresh random 32-byte seed (as kube-apiserver ≥ 1.29 does): ciphertext
//!    non-empty and at most 1024 bytes, `key_id` valid and equal to Status's, every annotation
//!    key a fully-qualified domain name (RFC 1123), annotation keys + values ≤ 32 KiB.
//! 3. **Decrypt** it back with the ciphertext, key id and annotations; the plaintext must
//!    equal the seed (compared, never printed).
//! 4. Optionally (`ProbeOptions::envelope`) the **envelope** kube-apiserver writes to etcd for
//!    a sample Secret, and reads it back through the plugin.
//!
//! With [`ProbeOptions::store`] it instead replays a restarted kube-apiserver (`replay`):
//! an [`ApiServer`] polls (Status, Encrypt), reads every record a previous run left in the
//! store file, writes one more and appends it.
//!
//! Layout: this file holds the socket addresses, the one-shot probe, kube-apiserver's limits
//! and the envelope functions (pure); `apiserver.rs` holds [`ApiServer`], kube-apiserver's
//! KMS v2 transformer state (write state, seed cache); `replay.rs` the `--store` replay and
//! its file; `tests.rs` the tests, with a fake plugin on a real Unix socket.
//!
//! Every RPC runs under [`ProbeOptions::timeout`] (3 s by default, kube-apiserver's default):
//! a timeout is a failed step, never a hang.
//!
//! # Sources (checked against the Kubernetes sources, `kubernetes/kubernetes` master)
//!
//! - `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/envelope.go`:
//!   `annotationsMaxSize = 32 * 1024`, `KeyIDMaxSize = 1024`,
//!   `encryptedDEKSourceMaxSize = 1024`; `ValidateEncryptedObject` (known source type,
//!   non-empty `encryptedData`, DEK source 1..=1024 bytes, key id, annotations);
//!   `validateAnnotations` uses `validation.IsFullyQualifiedDomainName` and sums
//!   `len(key) + len(value)`.
//! - `staging/src/k8s.io/apiserver/pkg/server/options/encryptionconfig/config.go`:
//!   Status checks (`healthz == "ok"`, version `v2`/`v2beta1`, `ValidateKeyID`), the Encrypt
//!   key id must equal the Status key id (`rotateDEKOnKeyIDChange`), and the etcd prefix is
//!   `"k8s:enc:kms:v2:" + name + ":"`.
//! - `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/aes/aes_extended_nonce.go` and
//!   `aes.go`: the KDF mode. The derived key is **HKDF-Expand only**
//!   (`hkdf.Expand(sha256.New, seed, info)`, no Extract step and hence no salt) with 32 random
//!   info bytes, 32 bytes of output; AES-256-GCM with a random 12-byte nonce; stored data is
//!   `info(32) || nonce(12) || ciphertext || tag(16)`; the GCM additional data is the etcd
//!   key (`value.Context.AuthenticatedData()`, `authenticatedDataString` in
//!   `storage/etcd3/store.go`).
//! - `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto`:
//!   `EncryptedObject` (see [`EncryptedObject`]) and `EncryptedDEKSourceType`
//!   (`AES_GCM_KEY = 0`, `HKDF_SHA256_XNONCE_AES_GCM_SEED = 1`).
//! - `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/grpc_service.go`
//!   and `staging/src/k8s.io/kms/pkg/util/util.go`: `unix` is the only scheme, `/@name` is
//!   an abstract socket, `:authority` is `localhost`, every call has its own timeout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Serialize, Serializer};
use sha2::Sha256;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use crate::proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};

mod apiserver;
mod replay;

pub use apiserver::{ApiServer, NIL_TRANSFORMER, StatusSeen, WRITE_STATE_MAX_TTL};
pub use replay::{STORE_MAX_BYTES, STORE_MAX_RECORDS};

/// kube-apiserver's default KMS call timeout (`timeout` in the EncryptionConfiguration).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The provider name of Azure/kubernetes-kms's documented EncryptionConfiguration.
pub const DEFAULT_PROVIDER_NAME: &str = "azurekmsprovider";
/// The etcd key the sample Secret is sealed under (the AES-GCM additional data).
pub const DEFAULT_STORAGE_KEY: &str = "/registry/secrets/default/akv-bridge-probe";
/// The prefix of every KMS v2 value in etcd; the provider name and `:` follow.
pub const KMS_V2_PREFIX: &str = "k8s:enc:kms:v2:";
/// Largest key id kube-apiserver accepts (`KeyIDMaxSize`).
pub const KEY_ID_MAX_SIZE: usize = 1024;
/// Largest Encrypt ciphertext kube-apiserver accepts (`encryptedDEKSourceMaxSize`).
pub const CIPHERTEXT_MAX_SIZE: usize = 1024;
/// Largest total size of annotation keys plus values (`annotationsMaxSize`).
pub const ANNOTATIONS_MAX_SIZE: usize = 32 * 1024;
/// Size of the seed kube-apiserver wraps (`MinSeedSizeExtendedNonceGCM`).
pub const SEED_SIZE: usize = 32;
/// Size of the random HKDF info prefixed to every sealed value.
pub const INFO_SIZE: usize = 32;
/// AES-GCM nonce size.
pub const NONCE_SIZE: usize = 12;
/// AES-GCM tag size.
pub const TAG_SIZE: usize = 16;

/// Longest DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label.
const DNS1123_LABEL_MAX: usize = 63;
/// Annotation values longer than this, or not printable ASCII, are shown as a length.
const ANNOTATION_VALUE_SHOW_MAX: usize = 128;
/// Longest plugin error message the report repeats.
const MESSAGE_SHOW_MAX: usize = 512;
/// How many leading bytes of the etcd value's protobuf the report shows in hex.
const HEX_PREVIEW: usize = 24;
/// The sample object sealed by the envelope check (kube-apiserver itself stores Secrets as
/// protobuf with the `k8s\0` magic; the envelope does not care what the bytes are).
const SAMPLE_SECRET: &[u8] = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"akv-bridge-probe","namespace":"default"},"type":"Opaque","data":{"probe":"YWt2LWJyaWRnZQ=="}}"#;

/// Errors of the probe set-up and of the pure envelope functions. Failed checks are not
/// errors: they are failed steps of the [`ProbeReport`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The socket argument is not a usable Unix socket address.
    #[error(transparent)]
    Socket(#[from] EndpointError),
    /// Status did not say "ok" within the time allowed.
    #[error("the plugin's Status was not ok within {}: {last}", humantime::format_duration(*limit))]
    NotReady {
        /// The time allowed.
        limit: Duration,
        /// The last Status healthz, or the last failure.
        last: String,
    },
    /// No connection to the socket could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The probe options are invalid (provider name, timeout, storage key).
    #[error("invalid probe options: {0}")]
    InvalidOptions(String),
    /// Sealing, opening, encoding or decoding an envelope failed (no secret bytes included).
    #[error("envelope: {0}")]
    Envelope(String),
    /// The replay's store file cannot be read or appended to, or is over its limits.
    #[error("store {}: {reason}", path.display())]
    Store {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------
// Socket addresses and connection
// ---------------------------------------------------------------------------------------

use crate::socket::error_chain;
pub use crate::socket::{ConnectError, EndpointError};
use crate::socket::{SocketAddress, connect};

// ---------------------------------------------------------------------------------------
// Options and report
// ---------------------------------------------------------------------------------------

/// What the probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Timeout of every RPC (kube-apiserver's `timeout`, 3 s by default).
    pub timeout: Duration,
    /// Also write and read a sample Secret through kube-apiserver's KMS v2 envelope.
    pub envelope: bool,
    /// The KMS provider `name` of the EncryptionConfiguration (no `:`), as in the etcd
    /// prefix `k8s:enc:kms:v2:<name>:`.
    pub provider_name: String,
    /// The etcd key of the sample Secret: kube-apiserver uses the etcd key as AES-GCM
    /// additional data, so a value only opens under the key it was written to. The replay
    /// appends a random suffix per record.
    pub storage_key: String,
    /// Replay a restarted kube-apiserver with this store file (`--store`) instead of the
    /// Status/Encrypt/Decrypt/envelope steps: see the module documentation.
    pub store: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            envelope: false,
            provider_name: DEFAULT_PROVIDER_NAME.to_owned(),
            storage_key: DEFAULT_STORAGE_KEY.to_owned(),
            store: None,
        }
    }
}

impl ProbeOptions {
    /// Checks the options as kube-apiserver checks its EncryptionConfiguration: a provider
    /// name that is non-empty and has no `:`, and a positive timeout.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.provider_name.is_empty() {
            return Err(ProbeError::InvalidOptions(
                "the provider name must not be empty".to_owned(),
            ));
        }
        if self.provider_name.contains(':') {
            return Err(ProbeError::InvalidOptions(format!(
                "the provider name {:?} must not contain ':'",
                self.provider_name
            )));
        }
        if self.timeout.is_zero() {
            return Err(ProbeError::InvalidOptions(
                "the timeout must be positive".to_owned(),
            ));
        }
        if self.storage_key.is_empty() {
            return Err(ProbeError::InvalidOptions(
                "the storage key must not be empty".to_owned(),
            ));
        }
        Ok(())
    }
}

/// One step of the probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeStep {
    /// `connect`, `status`, `encrypt`, `decrypt`, `envelope-write`, `envelope-read`; with a
    /// store `connect`, `status`, `encrypt`, `stored-read`, `write` (or `options` when the
    /// options are invalid).
    pub name: String,
    /// Whether the step passed every check.
    pub ok: bool,
    /// Whether the step was not run because an earlier one failed.
    pub skipped: bool,
    /// Wall time of the step in milliseconds (the RPC for RPC steps).
    pub latency_ms: f64,
    /// What was seen, one fact per line; never secret bytes.
    pub detail: String,
    /// The checks that failed, one sentence each.
    pub problems: Vec<String>,
}

impl ProbeStep {
    fn new(name: &str, latency_ms: f64, detail: String, problems: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            ok: problems.is_empty(),
            skipped: false,
            latency_ms,
            detail,
            problems,
        }
    }

    fn skipped(name: &str, reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            ok: false,
            skipped: true,
            latency_ms: 0.0,
            detail: format!("skipped: {reason}"),
            problems: Vec::new(),
        }
    }
}

/// The outcome of a probe: a table for the terminal ([`ProbeReport::to_table`]) or JSON
/// (serde, with a top-level `ok`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The socket probed, when known.
    pub socket: Option<String>,
    /// The provider name used for the etcd prefix.
    pub provider_name: String,
    /// The per-call timeout.
    pub timeout: Duration,
    /// The API version from Status, if Status answered.
    pub version: Option<String>,
    /// The key id from Status, if Status answered.
    pub key_id: Option<String>,
    /// The steps, in order.
    pub steps: Vec<ProbeStep>,
}

impl ProbeReport {
    fn new(socket: Option<String>, options: &ProbeOptions) -> Self {
        Self {
            socket,
            provider_name: options.provider_name.clone(),
            timeout: options.timeout,
            version: None,
            key_id: None,
            steps: Vec::new(),
        }
    }

    /// Whether every step ran and passed.
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// A human-readable table for the terminal.
    pub fn to_table(&self) -> String {
        const NAME_W: usize = 15;
        const RESULT_W: usize = 6;
        const LATENCY_W: usize = 11;
        let indent = " ".repeat(NAME_W + RESULT_W + LATENCY_W + 3);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "KMS v2 probe of {} (provider {}, call timeout {})",
            self.socket.as_deref().unwrap_or("<channel>"),
            self.provider_name,
            humantime::format_duration(self.timeout)
        );
        let _ = writeln!(
            out,
            "{:<NAME_W$} {:<RESULT_W$} {:>LATENCY_W$} DETAIL",
            "STEP", "RESULT", "LATENCY"
        );
        for step in &self.steps {
            let result = if step.skipped {
                "skip"
            } else if step.ok {
                "ok"
            } else {
                "FAIL"
            };
            let latency = if step.skipped {
                "-".to_owned()
            } else {
                format!("{:.1} ms", step.latency_ms)
            };
            let mut lines = step
                .detail
                .lines()
                .map(str::to_owned)
                .chain(step.problems.iter().map(|p| format!("error: {p}")));
            let first = lines.next().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<NAME_W$} {:<RESULT_W$} {:>LATENCY_W$} {first}",
                step.name, result, latency
            );
            for line in lines {
                let _ = writeln!(out, "{indent}{line}");
            }
        }
        let failed = self.steps.iter().filter(|s| !s.ok).count();
        if self.ok() {
            let _ = writeln!(out, "result: OK ({} steps passed)", self.steps.len());
        } else {
            let _ = writeln!(
                out,
                "result: FAILED ({failed} of {} steps did not pass)",
                self.steps.len()
            );
        }
        out
    }

    fn push(&mut self, step: ProbeStep) {
        self.steps.push(step);
    }
}

impl Serialize for ProbeReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            ok: bool,
            socket: Option<&'a str>,
            provider_name: &'a str,
            timeout_ms: u64,
            version: Option<&'a str>,
            key_id: Option<&'a str>,
            steps: &'a [ProbeStep],
        }
        View {
            ok: self.ok(),
            socket: self.socket.as_deref(),
            provider_name: &self.provider_name,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            version: self.version.as_deref(),
            key_id: self.key_id.as_deref(),
            steps: &self.steps,
        }
        .serialize(serializer)
    }
}

// ---------------------------------------------------------------------------------------
// The probe
// ---------------------------------------------------------------------------------------

/// Connects to `socket` and probes it: [`connect`] as a `connect` step, then
/// [`probe_kms`]. Never fails: a failed connection is a failed step.
pub async fn probe_socket(socket: &SocketAddress, options: &ProbeOptions) -> ProbeReport {
    let start = Instant::now();
    match connect(socket, options.timeout).await {
        Ok(channel) => {
            let connected = ProbeStep::new(
                "connect",
                millis(start.elapsed()),
                format!("connected to {socket}"),
                Vec::new(),
            );
            let mut report = probe_kms(channel, options).await;
            report.socket = Some(socket.to_string());
            report.steps.insert(0, connected);
            report
        }
        Err(e) => {
            let mut report = ProbeReport::new(Some(socket.to_string()), options);
            report.push(ProbeStep::new(
                "connect",
                millis(start.elapsed()),
                String::new(),
                vec![e.to_string()],
            ));
            report
        }
    }
}

/// Polls Status every 100 ms, as kube-apiserver keeps polling a plugin that is not ready,
/// until `healthz` is "ok" (the plugin resolves its key after binding its socket). Returns
/// the key id; fails with the last answer after `limit`.
pub async fn wait_for_status_ok(channel: Channel, limit: Duration) -> Result<String, ProbeError> {
    let mut client = KeyManagementServiceClient::new(channel);
    let deadline = Instant::now() + limit;
    loop {
        let (_, result) = call(
            DEFAULT_TIMEOUT,
            client.status(request(StatusRequest {}, DEFAULT_TIMEOUT)),
        )
        .await;
        let last = match result {
            Ok(s) if s.healthz == "ok" => return Ok(s.key_id),
            Ok(s) => printable(&s.healthz, 200),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(ProbeError::NotReady { limit, last });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Probes a KMS v2 plugin over `channel` exactly as kube-apiserver uses it (see the module
/// documentation): Status, Encrypt of a fresh seed, Decrypt, and with `options.envelope`
/// the etcd envelope of a sample Secret; with `options.store` the restarted-API-server
/// replay instead. Never fails and never hangs: every RPC is bounded by `options.timeout`,
/// and failures are failed steps.
pub async fn probe_kms(channel: Channel, options: &ProbeOptions) -> ProbeReport {
    let mut report = ProbeReport::new(None, options);
    if let Err(e) = options.validate() {
        report.push(ProbeStep::new(
            "options",
            0.0,
            String::new(),
            vec![e.to_string()],
        ));
        return report;
    }
    if let Some(store) = &options.store {
        return replay::replay(channel, options, store).await;
    }
    let mut client = KeyManagementServiceClient::new(channel);

    let status_key_id = status_step(&mut client, options, &mut report).await;

    let mut seed = Zeroizing::new([0u8; SEED_SIZE]);
    rand::rng().fill_bytes(seed.as_mut_slice());
    let (step, encrypted) =
        encrypt_step(&mut client, options, &seed, status_key_id.as_deref()).await;
    report.push(step);

    let Some(encrypted) = encrypted else {
        report.push(ProbeStep::skipped("decrypt", "Encrypt gave no ciphertext"));
        if options.envelope {
            report.push(ProbeStep::skipped("envelope-write", "no wrapped seed"));
            report.push(ProbeStep::skipped("envelope-read", "no wrapped seed"));
        }
        return report;
    };

    report.push(decrypt_step(&mut client, options, &seed, &encrypted).await);

    if options.envelope {
        let (step, value) = envelope_write_step(options, &seed, &encrypted);
        report.push(step);
        match value {
            Some(value) => {
                let step =
                    envelope_read_step(&mut client, options, &value, status_key_id.as_deref())
                        .await;
                report.push(step);
            }
            None => report.push(ProbeStep::skipped(
                "envelope-read",
                "no etcd value was written",
            )),
        }
    }
    report
}

type Client = KeyManagementServiceClient<Channel>;

/// Runs one RPC under the timeout; returns its latency and the message or a description of
/// the failure.
async fn call<T>(
    timeout: Duration,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (f64, Result<T, String>) {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, rpc).await;
    let latency = millis(start.elapsed());
    let result = match result {
        Err(_) => Err(format!(
            "no answer within {} (the call timeout; kube-apiserver gives up here too)",
            humantime::format_duration(timeout)
        )),
        Ok(Err(status)) => Err(describe_status(&status, timeout)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    };
    (latency, result)
}

/// A request carrying the timeout as `grpc-timeout`, as a Go client with a deadline sends.
fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn describe_status(status: &tonic::Status, timeout: Duration) -> String {
    let mut out = format!(
        "gRPC {:?}: {}",
        status.code(),
        printable(status.message(), MESSAGE_SHOW_MAX)
    );
    if let Some(source) = std::error::Error::source(status) {
        let _ = write!(
            out,
            " ({})",
            printable(&error_chain(source), MESSAGE_SHOW_MAX)
        );
    }
    if matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) {
        let _ = write!(
            out,
            " [call timeout {}]",
            humantime::format_duration(timeout)
        );
    }
    out
}

async fn status_step(
    client: &mut Client,
    options: &ProbeOptions,
    report: &mut ProbeReport,
) -> Option<String> {
    let (latency, result) = call(
        options.timeout,
        client.status(request(StatusRequest {}, options.timeout)),
    )
    .await;
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            report.push(ProbeStep::new("status", latency, String::new(), vec![e]));
            return None;
        }
    };
    let problems = check_status(&status.healthz, &status.version, &status.key_id);
    let detail = format!(
        "version={} healthz={} key_id={}",
        printable(&status.version, 64),
        printable(&status.healthz, 256),
        printable(&status.key_id, KEY_ID_MAX_SIZE)
    );
    report.version = Some(status.version);
    report.key_id = Some(status.key_id.clone());
    report.push(ProbeStep::new("status", latency, detail, problems));
    validate_key_id(&status.key_id).ok().map(|()| status.key_id)
}

/// The checks kube-apiserver applies to a Status response.
fn check_status(healthz: &str, version: &str, key_id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if healthz != "ok" {
        problems.push(format!(
            "healthz is {:?}, not \"ok\": kube-apiserver marks the plugin unhealthy",
            printable(healthz, 256)
        ));
    }
    if version != "v2" && version != "v2beta1" {
        problems.push(format!(
            "version is {:?}; kube-apiserver expects \"v2\" (or \"v2beta1\")",
            printable(version, 64)
        ));
    }
    if let Err(e) = validate_key_id(key_id) {
        problems.push(format!("Status key_id {e}"));
    }
    problems
}

async fn encrypt_step(
    client: &mut Client,
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    status_key_id: Option<&str>,
) -> (ProbeStep, Option<EncryptResponse>) {
    let message = EncryptRequest {
        plaintext: seed.to_vec(),
        uid: new_uid(),
    };
    let (latency, result) = call(
        options.timeout,
        client.encrypt(request(message, options.timeout)),
    )
    .await;
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            return (
                ProbeStep::new("encrypt", latency, String::new(), vec![e]),
                None,
            );
        }
    };
    let problems = check_encrypt_response(&response, status_key_id);
    let mut detail = format!(
        "wrapped a {SEED_SIZE}-byte seed: ciphertext {} bytes, key_id={}",
        response.ciphertext.len(),
        printable(&response.key_id, KEY_ID_MAX_SIZE)
    );
    match status_key_id {
        Some(id) if id == response.key_id => detail.push_str(" (matches Status)"),
        Some(_) => {}
        None => detail.push_str(" (not compared: no valid Status key_id)"),
    }
    let _ = write!(
        detail,
        "\nannotations: {} ({} bytes of keys+values)",
        response.annotations.len(),
        annotations_size(&response.annotations)
    );
    let mut keys: Vec<&String> = response.annotations.keys().collect();
    keys.sort();
    for key in keys {
        let value = response
            .annotations
            .get(key)
            .map(|v| show_annotation_value(v))
            .unwrap_or_default();
        let _ = write!(detail, "\n  {} = {value}", printable(key, 256));
    }
    let step = ProbeStep::new("encrypt", latency, detail, problems);
    let response = (!response.ciphertext.is_empty()).then_some(response);
    (step, response)
}

/// The checks kube-apiserver applies to an Encrypt response (and to the `EncryptedObject`
/// it builds from it).
fn check_encrypt_response(response: &EncryptResponse, status_key_id: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = validate_ciphertext(&response.ciphertext) {
        problems.push(e);
    }
    match validate_key_id(&response.key_id) {
        Err(e) => problems.push(format!("Encrypt key_id {e}")),
        Ok(()) => {
            if let Some(status_id) = status_key_id
                && status_id != response.key_id
            {
                problems.push(format!(
                    "key_id mismatch: Encrypt returned {:?} but Status said {:?}; \
                     kube-apiserver throws the new seed away and marks the plugin unhealthy",
                    printable(&response.key_id, KEY_ID_MAX_SIZE),
                    printable(status_id, KEY_ID_MAX_SIZE)
                ));
            }
        }
    }
    problems.extend(validate_annotations(&response.annotations));
    problems
}

async fn decrypt_step(
    client: &mut Client,
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    encrypted: &EncryptResponse,
) -> ProbeStep {
    let message = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: new_uid(),
        key_id: encrypted.key_id.clone(),
        annotations: encrypted.annotations.clone(),
    };
    let (latency, result) = call(
        options.timeout,
        client.decrypt(request(message, options.timeout)),
    )
    .await;
    match result {
        Err(e) => ProbeStep::new("decrypt", latency, String::new(), vec![e]),
        Ok(response) => {
            let plaintext = Zeroizing::new(response.plaintext);
            if constant_time_eq(&plaintext, seed.as_slice()) {
                ProbeStep::new(
                    "decrypt",
                    latency,
                    format!("unwrapped {SEED_SIZE} bytes, equal to the seed"),
                    Vec::new(),
                )
            } else {
                ProbeStep::new(
                    "decrypt",
                    latency,
                    format!("unwrapped {} bytes", plaintext.len()),
                    vec!["the plaintext differs from the seed that was encrypted".to_owned()],
                )
            }
        }
    }
}

fn envelope_write_step(
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    encrypted: &EncryptResponse,
) -> (ProbeStep, Option<Vec<u8>>) {
    let start = Instant::now();
    let sealed = match seal_kdf(
        seed.as_slice(),
        SAMPLE_SECRET,
        options.storage_key.as_bytes(),
    ) {
        Ok(sealed) => sealed,
        Err(e) => {
            let step = ProbeStep::new(
                "envelope-write",
                millis(start.elapsed()),
                String::new(),
                vec![e.to_string()],
            );
            return (step, None);
        }
    };
    let sealed_len = sealed.len();
    let object = EncryptedObject {
        encrypted_data: sealed,
        key_id: encrypted.key_id.clone(),
        encrypted_dek_source: encrypted.ciphertext.clone(),
        annotations: encrypted.annotations.clone(),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    let problems = validate_encrypted_object(&object);
    let value = encode_etcd_value(&options.provider_name, &object);
    let proto_len = value
        .len()
        .saturating_sub(prefix(&options.provider_name).len());
    let preview: Vec<u8> = value
        .iter()
        .skip(prefix(&options.provider_name).len())
        .take(HEX_PREVIEW)
        .copied()
        .collect();
    let detail = format!(
        "etcd value: {} + {proto_len}-byte EncryptedObject (protobuf {}…)\n\
         encryptedData {sealed_len} bytes = info {INFO_SIZE} + nonce {NONCE_SIZE} + sealed {} + tag {TAG_SIZE}\n\
         encryptedDEKSourceType=HKDF_SHA256_XNONCE_AES_GCM_SEED, sample {} bytes, AAD {:?}",
        prefix(&options.provider_name),
        hex::encode(preview),
        SAMPLE_SECRET.len(),
        SAMPLE_SECRET.len(),
        options.storage_key
    );
    let problems: Vec<String> = problems
        .into_iter()
        .map(|p| format!("kube-apiserver would refuse to write: {p}"))
        .collect();
    let ok = problems.is_empty();
    let step = ProbeStep::new("envelope-write", millis(start.elapsed()), detail, problems);
    (step, ok.then_some(value))
}

async fn envelope_read_step(
    client: &mut Client,
    options: &ProbeOptions,
    value: &[u8],
    status_key_id: Option<&str>,
) -> ProbeStep {
    let start = Instant::now();
    let fail = |detail: String, problem: String| {
        ProbeStep::new(
            "envelope-read",
            millis(start.elapsed()),
            detail,
            vec![problem],
        )
    };
    let object = match decode_etcd_value(&options.provider_name, value) {
        Ok(object) => object,
        Err(e) => return fail(String::new(), e.to_string()),
    };
    let problems = validate_encrypted_object(&object);
    if !problems.is_empty() {
        return fail(String::new(), problems.join("; "));
    }
    let message = DecryptRequest {
        ciphertext: object.encrypted_dek_source.clone(),
        uid: new_uid(),
        key_id: object.key_id.clone(),
        annotations: object.annotations.clone(),
    };
    let (rpc_latency, result) = call(
        options.timeout,
        client.decrypt(request(message, options.timeout)),
    )
    .await;
    let seed = match result {
        Ok(response) => Zeroizing::new(response.plaintext),
        Err(e) => return fail(String::new(), format!("Decrypt of the stored seed: {e}")),
    };
    let mut detail =
        format!("decoded the etcd value; Decrypt of the stored seed took {rpc_latency:.1} ms");
    if status_key_id != Some(object.key_id.as_str()) {
        detail.push_str("\nkey_id differs from Status: kube-apiserver would count it stale");
    }
    match open_kdf(
        &seed,
        &object.encrypted_data,
        options.storage_key.as_bytes(),
    ) {
        Err(e) => fail(detail, e.to_string()),
        Ok(plaintext) if plaintext.as_slice() == SAMPLE_SECRET => {
            let _ = write!(
                detail,
                "\nopened {} bytes: equal to the sample Secret",
                plaintext.len()
            );
            ProbeStep::new("envelope-read", millis(start.elapsed()), detail, Vec::new())
        }
        Ok(plaintext) => fail(
            detail,
            format!(
                "opened {} bytes that differ from the sample Secret",
                plaintext.len()
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// kube-apiserver's limits (pure)
// ---------------------------------------------------------------------------------------

/// `ValidateKeyID`: non-empty and at most [`KEY_ID_MAX_SIZE`] bytes.
pub fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("is empty".to_owned());
    }
    if key_id.len() > KEY_ID_MAX_SIZE {
        return Err(format!(
            "is {} bytes, more than the {KEY_ID_MAX_SIZE} kube-apiserver accepts",
            key_id.len()
        ));
    }
    Ok(())
}

/// `validateEncryptedDEKSource`: the Encrypt ciphertext is non-empty and at most
/// [`CIPHERTEXT_MAX_SIZE`] bytes.
pub fn validate_ciphertext(ciphertext: &[u8]) -> Result<(), String> {
    if ciphertext.is_empty() {
        return Err("the ciphertext is empty".to_owned());
    }
    if ciphertext.len() > CIPHERTEXT_MAX_SIZE {
        return Err(format!(
            "the ciphertext is {} bytes, more than the {CIPHERTEXT_MAX_SIZE} kube-apiserver accepts",
            ciphertext.len()
        ));
    }
    Ok(())
}

/// `validation.IsFullyQualifiedDomainName` (k8s.io/apimachinery), which kube-apiserver
/// applies to every annotation key: an optional trailing `.` is dropped, then the name is a
/// DNS-1123 subdomain of at most 253 characters with at least two labels, each label 1 to 63
/// lowercase alphanumerics or `-`, not starting or ending with `-`.
pub fn validate_annotation_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let name = key.strip_suffix('.').unwrap_or(key);
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "is {} characters, more than {DNS1123_SUBDOMAIN_MAX}",
            name.len()
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let bytes = label.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let alnum =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !bytes.iter().all(allowed) || !alnum(bytes.first()) || !alnum(bytes.last()) {
            return Err(
                "must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', \
                 each label starting and ending with an alphanumeric"
                    .to_owned(),
            );
        }
    }
    if labels.len() < 2 {
        return Err("must be a domain with at least two segments separated by dots".to_owned());
    }
    if let Some(label) = labels.iter().find(|l| l.len() > DNS1123_LABEL_MAX) {
        return Err(format!(
            "has a label of {} characters, more than {DNS1123_LABEL_MAX}",
            label.len()
        ));
    }
    Ok(())
}

/// Total size of the annotation keys plus values, as kube-apiserver counts it.
pub fn annotations_size(annotations: &HashMap<String, Vec<u8>>) -> usize {
    annotations.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// `validateAnnotations`: every key valid ([`validate_annotation_key`]) and keys plus values
/// at most [`ANNOTATIONS_MAX_SIZE`] bytes. Returns one sentence per problem, keys sorted.
pub fn validate_annotations(annotations: &HashMap<String, Vec<u8>>) -> Vec<String> {
    let mut keys: Vec<&String> = annotations.keys().collect();
    keys.sort();
    let mut problems: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            validate_annotation_key(key)
                .err()
                .map(|e| format!("annotation key {:?} {e}", printable(key, 256)))
        })
        .collect();
    let total = annotations_size(annotations);
    if total > ANNOTATIONS_MAX_SIZE {
        problems.push(format!(
            "annotations total {total} bytes (keys + values), more than the \
             {ANNOTATIONS_MAX_SIZE} kube-apiserver accepts"
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The etcd envelope (pure)
// ---------------------------------------------------------------------------------------

/// The value kube-apiserver stores in etcd after the `k8s:enc:kms:v2:<name>:` prefix:
/// `EncryptedObject` of `k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto`
/// (package `v2`). Field numbers verified against that file: `encryptedData = 1`,
/// `keyID = 2`, `encryptedDEKSource = 3`, `annotations = 4`, `encryptedDEKSourceType = 5`.
/// Everything in it is stored in etcd in the clear: it holds no secret bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    /// The sealed object: `info(32) || nonce(12) || ciphertext || tag(16)` in KDF mode.
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The KMS key id returned by Encrypt.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The Encrypt ciphertext of the seed (or of the DEK in the pre-1.29 mode).
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// The annotations returned by Encrypt.
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
    /// How the plaintext of `encrypted_dek_source` becomes the DEK
    /// ([`EncryptedDekSourceType`]).
    #[prost(enumeration = "EncryptedDekSourceType", tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// `EncryptedDEKSourceType` (values verified against the kube-apiserver `api.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EncryptedDekSourceType {
    /// `AES_GCM_KEY = 0`: the plaintext is the AES-GCM DEK itself (kube-apiserver < 1.29,
    /// or the `KMSv2KDF` feature gate off).
    AesGcmKey = 0,
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED = 1`: the plaintext is a seed; each write derives
    /// its DEK with HKDF-SHA256-Expand from 32 random info bytes (kube-apiserver ≥ 1.29).
    HkdfSha256XnonceAesGcmSeed = 1,
}

fn prefix(provider_name: &str) -> String {
    format!("{KMS_V2_PREFIX}{provider_name}:")
}

/// The etcd value: `k8s:enc:kms:v2:<provider_name>:` followed by the protobuf `object`.
pub fn encode_etcd_value(provider_name: &str, object: &EncryptedObject) -> Vec<u8> {
    let prefix = prefix(provider_name);
    let mut value = Vec::with_capacity(prefix.len() + prost::Message::encoded_len(object));
    value.extend_from_slice(prefix.as_bytes());
    value.extend_from_slice(&prost::Message::encode_to_vec(object));
    value
}

/// Parses an etcd value written with the provider `provider_name`.
pub fn decode_etcd_value(provider_name: &str, value: &[u8]) -> Result<EncryptedObject, ProbeError> {
    let prefix = prefix(provider_name);
    let body = value.strip_prefix(prefix.as_bytes()).ok_or_else(|| {
        ProbeError::Envelope(format!("the etcd value does not start with {prefix:?}"))
    })?;
    <EncryptedObject as prost::Message>::decode(body)
        .map_err(|e| ProbeError::Envelope(format!("the EncryptedObject does not decode: {e}")))
}

/// `ValidateEncryptedObject`: what kube-apiserver checks before writing and after reading.
/// Returns one sentence per problem.
pub fn validate_encrypted_object(object: &EncryptedObject) -> Vec<String> {
    let mut problems = Vec::new();
    if EncryptedDekSourceType::try_from(object.encrypted_dek_source_type).is_err() {
        problems.push(format!(
            "unknown encryptedDEKSourceType {}",
            object.encrypted_dek_source_type
        ));
    }
    if object.encrypted_data.is_empty() {
        problems.push("encryptedData is empty".to_owned());
    }
    if let Err(e) = validate_ciphertext(&object.encrypted_dek_source) {
        problems.push(e);
    }
    if let Err(e) = validate_key_id(&object.key_id) {
        problems.push(format!("keyID {e}"));
    }
    problems.extend(validate_annotations(&object.annotations));
    problems
}

/// Seals `plaintext` as kube-apiserver does in KDF mode: 32 random info bytes, DEK =
/// HKDF-SHA256-Expand(seed, info) (no Extract, no salt), AES-256-GCM with a random nonce and
/// `aad` (the etcd key) as additional data. Returns `info || nonce || ciphertext || tag`.
pub fn seal_kdf(seed: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, ProbeError> {
    let mut info = [0u8; INFO_SIZE];
    let mut nonce = [0u8; NONCE_SIZE];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut info);
    rng.fill_bytes(&mut nonce);
    seal_kdf_with(seed, &info, &nonce, plaintext, aad)
}

fn seal_kdf_with(
    seed: &[u8],
    info: &[u8; INFO_SIZE],
    nonce: &[u8; NONCE_SIZE],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, ProbeError> {
    let cipher = kdf_cipher(seed, info)?;
    let sealed = cipher
        .encrypt(
            &aes_gcm::Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| ProbeError::Envelope("AES-GCM sealing failed".to_owned()))?;
    let mut out = Vec::with_capacity(INFO_SIZE + NONCE_SIZE + sealed.len());
    out.extend_from_slice(info);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal_kdf`] (or kube-apiserver in KDF mode) sealed with `seed` under `aad`.
pub fn open_kdf(seed: &[u8], data: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProbeError> {
    let short = || {
        ProbeError::Envelope(format!(
            "the stored data is {} bytes, shorter than info {INFO_SIZE} + nonce {NONCE_SIZE} + tag {TAG_SIZE}",
            data.len()
        ))
    };
    let (info, rest) = data.split_first_chunk::<INFO_SIZE>().ok_or_else(short)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_SIZE>().ok_or_else(short)?;
    if sealed.len() < TAG_SIZE {
        return Err(short());
    }
    let cipher = kdf_cipher(seed, info)?;
    cipher
        .decrypt(&aes_gcm::Nonce::from(*nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| {
            ProbeError::Envelope(
                "AES-GCM authentication failed (wrong seed, wrong storage key, or corrupted data)"
                    .to_owned(),
            )
        })
}

/// The AES-256-GCM cipher keyed with HKDF-SHA256-Expand(seed, info), as
/// `extendedNonceGCM.sha256KDFExpandOnly`.
fn kdf_cipher(seed: &[u8], info: &[u8; INFO_SIZE]) -> Result<Aes256Gcm, ProbeError> {
    if seed.len() < SEED_SIZE {
        return Err(ProbeError::Envelope(format!(
            "the seed is {} bytes; kube-apiserver requires at least {SEED_SIZE}",
            seed.len()
        )));
    }
    let hkdf = Hkdf::<Sha256>::from_prk(seed)
        .map_err(|_| ProbeError::Envelope("the seed is not a usable HKDF key".to_owned()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf.expand(info, key.as_mut_slice())
        .map_err(|_| ProbeError::Envelope("HKDF expansion failed".to_owned()))?;
    Aes256Gcm::new_from_slice(key.as_slice())
        .map_err(|_| ProbeError::Envelope("AES-256 key setup failed".to_owned()))
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A random version-4 UUID string (kube-apiserver sends a UUID as `uid`).
fn new_uid() -> String {
    let mut v: u128 = rand::random();
    v = (v & !(0xf_u128 << 76)) | (0x4_u128 << 76);
    v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

/// Plugin-supplied text made safe for a terminal: control characters escaped, cut after
/// `max` bytes with the full length noted.
fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() >= max {
            let _ = write!(out, "… ({} bytes)", s.len());
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An annotation value: quoted if printable ASCII of at most 128 bytes, else its length.
fn show_annotation_value(value: &[u8]) -> String {
    if value.len() <= ANNOTATION_VALUE_SHOW_MAX && value.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(value))
    } else {
        format!("<{} bytes>", value.len())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
