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
//! Layout: this file holds the entry points ([`probe_socket`], [`probe_kms`],
//! [`wait_for_status_ok`]), the error and the display helpers; `options.rs` [`ProbeOptions`];
//! `report.rs` [`ProbeStep`], [`ProbeReport`] and its table and JSON; `steps.rs` the RPC of
//! each step and the checks applied to its answer; `limits.rs` kube-apiserver's limits on
//! plugin answers (pure); `envelope.rs` the etcd envelope kube-apiserver writes (pure:
//! [`EncryptedObject`], HKDF + AES-GCM seal and open); `apiserver.rs` [`ApiServer`],
//! kube-apiserver's KMS v2 transformer state (write state, seed cache); `replay.rs` the
//! `--store` replay and its file. Unit tests sit beside each module (`<module>/tests.rs`);
//! `tests.rs` holds the tests with a fake plugin on a real Unix socket.
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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::RngCore;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::proto::kms_v2::StatusRequest;
use crate::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;

mod apiserver;
mod envelope;
mod limits;
mod options;
mod replay;
mod report;
mod steps;

pub use apiserver::{ApiServer, NIL_TRANSFORMER, StatusSeen, WRITE_STATE_MAX_TTL};
pub use envelope::{
    EncryptedDekSourceType, EncryptedObject, INFO_SIZE, KMS_V2_PREFIX, NONCE_SIZE, SEED_SIZE,
    TAG_SIZE, decode_etcd_value, encode_etcd_value, open_kdf, seal_kdf, validate_encrypted_object,
};
pub use limits::{
    ANNOTATIONS_MAX_SIZE, CIPHERTEXT_MAX_SIZE, KEY_ID_MAX_SIZE, annotations_size,
    validate_annotation_key, validate_annotations, validate_ciphertext, validate_key_id,
};
pub use options::{DEFAULT_PROVIDER_NAME, DEFAULT_STORAGE_KEY, DEFAULT_TIMEOUT, ProbeOptions};
pub use replay::{STORE_MAX_BYTES, STORE_MAX_RECORDS};
pub use report::{ProbeReport, ProbeStep};
use steps::{
    Client, call, check_status, decrypt_step, encrypt_step, envelope_read_step,
    envelope_write_step, request, status_step,
};

/// Annotation values longer than this, or not printable ASCII, are shown as a length.
const ANNOTATION_VALUE_SHOW_MAX: usize = 128;

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

pub use crate::socket::{ConnectError, EndpointError};
use crate::socket::{SocketAddress, connect};

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
mod fixtures;
#[cfg(test)]
mod tests;
