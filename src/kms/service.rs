//! The gRPC services kube-apiserver calls (v2, and v1beta1 for clusters migrating from the
//! deprecated v1 API), and the one mapping from our errors to gRPC status codes.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use zeroize::Zeroizing;

use crate::azure::keyvault::KvError;
use crate::kms::audit::{AuditLog, Record};
use crate::kms::cache::{DecryptCache, Outcome, Plaintext};
use crate::kms::envelope::{
    self, CacheKey, EnvelopeError, KeyVersion, ResponseInfo, V1_ALGORITHM, WRAP_ALGORITHM,
};
use crate::kms::keyring::{Current, KeyRing};
use crate::kms::wrap::WrapError;
use crate::observability::metrics::{KeyMetrics, ServerMetrics};
use crate::proto::{kms_v1beta1 as v1, kms_v2 as v2};

/// The Status `version` kube-apiserver 1.29 and later accept besides `v2beta1`.
pub const STATUS_VERSION_V2: &str = "v2";
/// The Status `version` every kube-apiserver from 1.27 on accepts, and the one
/// Azure/kubernetes-kms reports: the default.
pub const STATUS_VERSION_V2BETA1: &str = "v2beta1";
/// Runtime name reported by v1beta1 `Version`.
pub const RUNTIME_NAME: &str = "akv-bridge";

/// Every way a KMS request can fail.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] EnvelopeError),
    /// The key id names no version of the configured key.
    #[error("key_id {0} is not a version of key {1}")]
    UnknownKeyId(String, String),
    /// The v1beta1 API version is not `v1beta1`.
    #[error("unsupported KMS API version {0:?}; this endpoint serves v1beta1")]
    BadApiVersion(String),
    /// No key version is usable yet.
    #[error("no key version is available yet: {0}")]
    NotReady(String),
    /// The start-up round trip found that Key Vault does not unwrap what would be wrapped.
    #[error("Encrypt is refused: {0}")]
    WrapRefused(String),
    /// Wrapping with the public key failed.
    #[error(transparent)]
    Wrap(#[from] WrapError),
    /// The plaintext did not decrypt with any candidate version (v1beta1).
    #[error("the ciphertext could not be decrypted with any known version of key {0}")]
    NoVersionDecrypts(String),
    /// Key Vault failed.
    #[error(transparent)]
    KeyVault(#[from] KvError),
}

impl KmsError {
    /// The gRPC status: the single place errors become codes. Messages name the problem
    /// and never carry request bytes or upstream response bodies.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Self::Invalid(_) | Self::UnknownKeyId(..) | Self::BadApiVersion(_) => {
                Code::InvalidArgument
            }
            Self::NotReady(_) => Code::Unavailable,
            Self::WrapRefused(_) => Code::FailedPrecondition,
            Self::Wrap(_) => Code::Internal,
            Self::NoVersionDecrypts(_) => Code::InvalidArgument,
            Self::KeyVault(e) => match e {
                // Every authentication failure of a decrypt looks the same.
                KvError::Rejected(_) => Code::InvalidArgument,
                KvError::NotFound(_) | KvError::KeyUnusable { .. } => Code::FailedPrecondition,
                KvError::PermissionDenied(_) => Code::PermissionDenied,
                KvError::Unauthenticated { .. } => Code::Unauthenticated,
                KvError::Throttled(_) => Code::ResourceExhausted,
                KvError::Unavailable { .. } | KvError::Certificate { .. } => Code::Unavailable,
                KvError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            },
        };
        let message = match self {
            Self::KeyVault(KvError::Rejected(_)) => {
                "the ciphertext could not be decrypted with this key version".to_owned()
            }
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}

/// How the services behave.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The Status `version` (`v2beta1` or `v2`); it never changes while the plugin runs.
    pub status_version: &'static str,
}

/// State both API versions share.
#[derive(Debug)]
pub struct Kms {
    ring: Arc<KeyRing>,
    cache: Arc<DecryptCache>,
    metrics: ServerMetrics,
    key_metrics: KeyMetrics,
    audit: AuditLog,
    config: ServiceConfig,
}

/// A wrapped seed: the stored ciphertext text, the version, and what Key Vault said.
struct Wrapped {
    ciphertext: Vec<u8>,
    current: Arc<Current>,
    info: ResponseInfo,
    detail: &'static str,
}

/// The `Date` annotation of a local wrap: the time in HTTP-date form, as Key Vault's
/// `Date` header would have said.
fn http_date_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

impl Kms {
    /// The shared state. Starts the audit writer thread.
    pub fn new(
        ring: Arc<KeyRing>,
        cache: Arc<DecryptCache>,
        metrics: ServerMetrics,
        key_metrics: KeyMetrics,
        config: ServiceConfig,
    ) -> Self {
        let audit = AuditLog::start(key_metrics.audit_dropped.clone());
        Self {
            ring,
            cache,
            metrics,
            key_metrics,
            audit,
            config,
        }
    }

    /// The socket server's metrics.
    pub fn connection_metrics(&self) -> crate::observability::metrics::ConnectionMetrics {
        self.metrics.connections.clone()
    }

    /// Waits (briefly) until the audit lines of finished calls are written.
    pub async fn flush_audit(&self) {
        self.audit.flush(std::time::Duration::from_secs(2)).await;
    }

    fn observe<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: Result<T, KmsError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map_err(|e| e.to_status());
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.rpc(method, code, started.elapsed());
        self.metrics.healthy.set(i64::from(self.ring.status_ok()));
        result.map(Response::new)
    }

    fn audit<T>(
        &self,
        rpc: &'static str,
        uid: String,
        key_id: Option<Arc<str>>,
        started: Instant,
        result: &Result<T, KmsError>,
        detail: &'static str,
    ) {
        self.audit.log(Record {
            rpc,
            uid,
            key_id,
            error: result.as_ref().err().map(ToString::to_string),
            latency: started.elapsed(),
            at: std::time::SystemTime::now(),
            detail,
        });
    }

    /// Wraps `plaintext` with the current version: locally with its public key, or with
    /// Key Vault's `encrypt` (`--remote-encrypt`, or no public key). The seed then goes
    /// into the decrypt cache, exactly as if it had been decrypted, so a restarted
    /// kube-apiserver reads it back without Key Vault.
    async fn wrap(&self, plaintext: &[u8], algorithm: &'static str) -> Result<Wrapped, KmsError> {
        envelope::check_plaintext(plaintext)?;
        let current = self
            .ring
            .current()
            .ok_or_else(|| KmsError::NotReady(self.ring.status().err().unwrap_or_default()))?;
        self.ring.wrap_allowed().map_err(KmsError::WrapRefused)?;
        let (raw, info, detail) = match self.ring.local_wrap_key(&current) {
            Some(key) => {
                let raw = key.wrap(algorithm, plaintext)?;
                self.key_metrics.local_wraps.inc();
                let info = ResponseInfo {
                    date: Some(http_date_now()),
                    ..ResponseInfo::default()
                };
                (raw, info, "local")
            }
            None => {
                let started = Instant::now();
                let result = self
                    .ring
                    .backend()
                    .encrypt(&current.version, algorithm, plaintext)
                    .await;
                let failure = result.as_ref().err().map(KvError::metric_labels);
                self.metrics.keyvault("encrypt", failure, started.elapsed());
                self.ring.record(&result);
                let (raw, info) = result?;
                (raw, info, "keyvault")
            }
        };
        Ok(Wrapped {
            ciphertext: envelope::encode_ciphertext(&raw),
            current,
            info,
            detail,
        })
    }

    /// Caches a seed this plugin wrapped under the key its Decrypt will look up.
    fn remember(&self, key: CacheKey, plaintext: &[u8]) {
        self.cache.put(key, Zeroizing::new(plaintext.to_vec()));
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
    }

    /// Unwraps through the cache, coalescing identical concurrent requests. A hit does no
    /// decoding; a miss decodes the ciphertext and asks Key Vault.
    async fn unwrap(
        &self,
        key: CacheKey,
        ciphertext: &[u8],
        algorithm: &'static str,
        version: &KeyVersion,
    ) -> (Result<Plaintext, KmsError>, Outcome) {
        if let Some(plain) = self.cache.peek(&key) {
            self.metrics.cache(Outcome::Hit.label());
            return (Ok(plain), Outcome::Hit);
        }
        let raw = match envelope::decode_ciphertext(ciphertext) {
            Ok(raw) => raw,
            Err(e) => return (Err(e.into()), Outcome::Miss),
        };
        let kv = Arc::clone(self.ring.backend());
        let version = version.clone();
        let metrics = self.metrics.clone();
        let ring = Arc::clone(&self.ring);
        let (result, outcome) = self
            .cache
            .get_or_fetch(key, move || async move {
                let started = Instant::now();
                let result = kv.decrypt(&version, algorithm, &raw).await;
                let failure = result.as_ref().err().map(KvError::metric_labels);
                metrics.keyvault("decrypt", failure, started.elapsed());
                ring.record(&result);
                result
            })
            .await;
        self.metrics.cache(outcome.label());
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        (result.map_err(KmsError::from), outcome)
    }
}

/// The v2 service.
#[derive(Debug, Clone)]
pub struct V2(pub Arc<Kms>);

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for V2 {
    async fn status(
        &self,
        _request: Request<v2::StatusRequest>,
    ) -> Result<Response<v2::StatusResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let key_id = kms
            .ring
            .current()
            .map(|c| c.key_id.to_string())
            .unwrap_or_default();
        let healthz = match kms.ring.status() {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason.chars().take(200).collect(),
        };
        kms.observe(
            "v2.Status",
            started,
            Ok(v2::StatusResponse {
                version: kms.config.status_version.to_owned(),
                healthz,
                key_id,
            }),
        )
    }

    async fn encrypt(
        &self,
        request: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let v2::EncryptRequest { plaintext, uid } = request.into_inner();
        let plaintext = Zeroizing::new(plaintext);
        let mut detail = "";
        let mut key_id = None;
        let result = async {
            let wrapped = kms.wrap(&plaintext, WRAP_ALGORITHM).await?;
            detail = wrapped.detail;
            let current = &wrapped.current;
            key_id = Some(Arc::clone(&current.key_id));
            let annotations = envelope::encrypt_annotations(&current.version, &wrapped.info);
            kms.remember(
                CacheKey::new(&wrapped.ciphertext, &current.key_id, WRAP_ALGORITHM),
                &plaintext,
            );
            Ok(v2::EncryptResponse {
                ciphertext: wrapped.ciphertext,
                key_id: current.key_id.to_string(),
                annotations,
            })
        }
        .await;
        kms.audit("Encrypt", uid, key_id, started, &result, detail);
        kms.observe("v2.Encrypt", started, result)
    }

    async fn decrypt(
        &self,
        request: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let v2::DecryptRequest {
            ciphertext,
            uid,
            key_id,
            annotations,
        } = request.into_inner();
        let mut cache_outcome = "";
        let mut audit_key_id = None;
        let result = async {
            envelope::check_key_id(&key_id)?;
            envelope::check_ciphertext_len(&ciphertext)?;
            let meta = envelope::decrypt_meta(&annotations)?;
            let version = match &meta.key_version {
                // Written by akv-bridge: the annotation names the version; it must hash to
                // the key id, or the request mixes up two envelopes.
                Some(v) => {
                    let id = kms.ring.key_id_for(v);
                    if *id != *key_id {
                        return Err(KmsError::Invalid(EnvelopeError::KeyVersionMismatch));
                    }
                    audit_key_id = Some(id);
                    v.clone()
                }
                // Written by Azure/kubernetes-kms: find the version by its key id.
                None => {
                    let v = kms.ring.resolve(&key_id).await?.ok_or_else(|| {
                        KmsError::UnknownKeyId(key_id.clone(), kms.ring.key().name().to_owned())
                    })?;
                    audit_key_id = Some(kms.ring.key_id_for(&v));
                    v
                }
            };
            let key = CacheKey::new(&ciphertext, &key_id, meta.algorithm);
            let (plain, outcome) = kms.unwrap(key, &ciphertext, meta.algorithm, &version).await;
            cache_outcome = outcome.label();
            Ok(v2::DecryptResponse {
                plaintext: plain?.to_vec(),
            })
        }
        .await;
        kms.audit(
            "Decrypt",
            uid,
            audit_key_id,
            started,
            &result,
            cache_outcome,
        );
        kms.observe("v2.Decrypt", started, result)
    }
}

/// The v1beta1 service (deprecated API): RSA1_5 as the Go plugin used it.
#[derive(Debug, Clone)]
pub struct V1(pub Arc<Kms>);

fn check_v1_version(v: &str) -> Result<(), KmsError> {
    if v == "v1beta1" {
        Ok(())
    } else {
        Err(KmsError::BadApiVersion(v.chars().take(32).collect()))
    }
}

impl Kms {
    /// One Key Vault unwrap, not cached (a v1beta1 candidate that may be a wrong guess).
    async fn unwrap_uncached(
        &self,
        ciphertext: &[u8],
        algorithm: &'static str,
        version: &KeyVersion,
    ) -> (Result<Plaintext, KmsError>, Outcome) {
        let raw = match envelope::decode_ciphertext(ciphertext) {
            Ok(raw) => raw,
            Err(e) => return (Err(e.into()), Outcome::Miss),
        };
        let started = Instant::now();
        let result = self.ring.backend().decrypt(version, algorithm, &raw).await;
        let failure = result.as_ref().err().map(KvError::metric_labels);
        self.metrics.keyvault("decrypt", failure, started.elapsed());
        self.ring.record(&result);
        (result.map(Arc::new).map_err(KmsError::from), Outcome::Miss)
    }
}

/// The cache key of a v1beta1 ciphertext under one candidate version (v1 has no key id:
/// the version's own key id stands in).
fn v1_key(kms: &Kms, cipher: &[u8], version: &KeyVersion) -> CacheKey {
    CacheKey::new(cipher, &kms.ring.key_id_for(version), V1_ALGORITHM)
}

#[tonic::async_trait]
impl v1::key_management_service_server::KeyManagementService for V1 {
    async fn version(
        &self,
        request: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        let started = Instant::now();
        let result =
            check_v1_version(&request.into_inner().version).map(|()| v1::VersionResponse {
                version: "v1beta1".to_owned(),
                runtime_name: RUNTIME_NAME.to_owned(),
                runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
            });
        self.0.observe("v1beta1.Version", started, result)
    }

    async fn encrypt(
        &self,
        request: Request<v1::EncryptRequest>,
    ) -> Result<Response<v1::EncryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let v1::EncryptRequest { version, plain } = request.into_inner();
        let plain = Zeroizing::new(plain);
        let mut detail = "";
        let mut key_id = None;
        let result = async {
            check_v1_version(&version)?;
            let wrapped = kms.wrap(&plain, V1_ALGORITHM).await?;
            detail = wrapped.detail;
            key_id = Some(Arc::clone(&wrapped.current.key_id));
            kms.remember(
                v1_key(kms, &wrapped.ciphertext, &wrapped.current.version),
                &plain,
            );
            Ok(v1::EncryptResponse {
                cipher: wrapped.ciphertext,
            })
        }
        .await;
        kms.audit(
            "v1beta1.Encrypt",
            String::new(),
            key_id,
            started,
            &result,
            detail,
        );
        kms.observe("v1beta1.Encrypt", started, result)
    }

    async fn decrypt(
        &self,
        request: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let v1::DecryptRequest { version, cipher } = request.into_inner();
        let mut detail = "";
        let result = async {
            check_v1_version(&version)?;
            envelope::decode_ciphertext(&cipher)?;
            // v1 ciphertexts carry no key id: try the pinned version alone, or the current
            // version and every other known version. The cache answers first for any of them; then
            // Key Vault, where a version that refuses (wrong key, disabled, deleted) is
            // skipped, never fatal. An outage is reported only if no version decrypts.
            let candidates = kms.ring.versions_newest_first();
            for version in &candidates {
                if let Some(plain) = kms.cache.peek(&v1_key(kms, &cipher, version)) {
                    kms.metrics.cache(Outcome::Hit.label());
                    detail = Outcome::Hit.label();
                    return Ok(v1::DecryptResponse {
                        plain: plain.to_vec(),
                    });
                }
            }
            let mut outage = None;
            let mut candidates = candidates;
            let mut tried = 0;
            loop {
                let Some(version) = candidates.get(tried) else {
                    // Every known version refused: learn versions created since the last
                    // listing (at most every 30 s) and try those.
                    if kms.ring.pinned().is_none()
                        && matches!(kms.ring.list_versions().await, Ok(true))
                    {
                        let more: Vec<KeyVersion> = kms
                            .ring
                            .versions_newest_first()
                            .into_iter()
                            .filter(|v| !candidates.contains(v))
                            .collect();
                        if !more.is_empty() {
                            candidates.extend(more);
                            continue;
                        }
                    }
                    break;
                };
                tried += 1;
                // RSA1_5 with the wrong key passes its padding check about once in 10^5:
                // only the first candidate's answer is cached, so a wrong guess is never
                // served again from the cache.
                let attempt = if tried == 1 {
                    kms.unwrap(
                        v1_key(kms, &cipher, version),
                        &cipher,
                        V1_ALGORITHM,
                        version,
                    )
                    .await
                } else {
                    kms.unwrap_uncached(&cipher, V1_ALGORITHM, version).await
                };
                match attempt {
                    (Ok(plain), outcome) => {
                        detail = outcome.label();
                        return Ok(v1::DecryptResponse {
                            plain: plain.to_vec(),
                        });
                    }
                    (
                        Err(KmsError::KeyVault(
                            KvError::Rejected(_)
                            | KvError::KeyUnusable { .. }
                            | KvError::NotFound(_),
                        )),
                        _,
                    ) => {}
                    // An outage ends the search: trying every other version against a vault
                    // that does not answer would outlast kube-apiserver's timeout.
                    (Err(KmsError::KeyVault(e)), _) if e.is_transient() => {
                        outage = Some(e);
                        break;
                    }
                    (Err(e), _) => return Err(e),
                }
            }
            match outage {
                Some(e) => Err(KmsError::KeyVault(e)),
                None => Err(KmsError::NoVersionDecrypts(
                    kms.ring.key().name().to_owned(),
                )),
            }
        }
        .await;
        kms.audit(
            "v1beta1.Decrypt",
            String::new(),
            None,
            started,
            &result,
            detail,
        );
        kms.observe("v1beta1.Decrypt", started, result)
    }
}

#[cfg(test)]
mod tests;
