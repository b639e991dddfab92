//! The gRPC services kube-apiserver calls (v2, and v1beta1 for clusters migrating from the
//! deprecated v1 API), and the one mapping from our errors to gRPC status codes.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use crate::azure::keyvault::KvError;
use crate::kms::cache::{DecryptCache, Outcome};
use crate::kms::envelope::{
    self, EnvelopeError, KeyVersion, V1_ALGORITHM, WRAP_ALGORITHM, loggable_uid,
};
use crate::kms::keyring::KeyRing;
use crate::observability::metrics::ServerMetrics;
use crate::proto::{kms_v1beta1 as v1, kms_v2 as v2};

/// The version Status reports. It never changes while the plugin runs.
pub const STATUS_VERSION: &str = "v2";
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
    #[error("no key version is available yet")]
    NotReady,
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
            Self::NotReady => Code::Unavailable,
            Self::NoVersionDecrypts(_) => Code::InvalidArgument,
            Self::KeyVault(e) => match e {
                // Every authentication failure of a decrypt looks the same.
                KvError::Rejected(_) => Code::InvalidArgument,
                KvError::NotFound(_) | KvError::KeyUnusable { .. } => Code::FailedPrecondition,
                KvError::PermissionDenied(_) => Code::PermissionDenied,
                KvError::Unauthenticated(_) => Code::Unauthenticated,
                KvError::Throttled | KvError::Unavailable(_) => Code::Unavailable,
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

/// State both API versions share.
#[derive(Debug)]
pub struct Kms {
    ring: Arc<KeyRing>,
    cache: Arc<DecryptCache>,
    metrics: ServerMetrics,
}

impl Kms {
    /// The shared state.
    pub fn new(ring: Arc<KeyRing>, cache: Arc<DecryptCache>, metrics: ServerMetrics) -> Self {
        Self {
            ring,
            cache,
            metrics,
        }
    }

    fn observe<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, KmsError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map_err(|e| e.to_status());
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.rpc(method, code, started.elapsed());
        self.metrics
            .healthy
            .set(i64::from(self.ring.health().is_ok()));
        result.map(Response::new)
    }

    /// Runs a Key Vault call, recording its outcome for health and metrics.
    async fn keyvault<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = result.as_ref().map_or_else(KvError::label, |_| "ok");
        self.metrics.keyvault(operation, outcome, started.elapsed());
        self.ring.record(&result);
        result
    }

    /// Wraps `plaintext` with the current version.
    async fn wrap(
        &self,
        plaintext: &[u8],
        algorithm: &str,
    ) -> Result<(Vec<u8>, KeyVersion, envelope::ResponseInfo), KmsError> {
        envelope::check_plaintext(plaintext)?;
        let current = self.ring.current().ok_or(KmsError::NotReady)?;
        let (raw, info) = self
            .keyvault(
                "encrypt",
                self.ring
                    .keyvault()
                    .encrypt(&current.version, algorithm, plaintext),
            )
            .await?;
        Ok((envelope::encode_ciphertext(&raw), current.version, info))
    }

    /// Unwraps through the cache, coalescing identical concurrent requests.
    async fn unwrap(
        &self,
        cache_key: [u8; 32],
        version: &KeyVersion,
        algorithm: &'static str,
        raw: Vec<u8>,
    ) -> (Result<Arc<zeroize::Zeroizing<Vec<u8>>>, KvError>, Outcome) {
        let kv = self.ring.keyvault().clone();
        let version = version.clone();
        let metrics = self.metrics.clone();
        let ring = Arc::clone(&self.ring);
        let (result, outcome) = self
            .cache
            .get_or_fetch(cache_key, move || async move {
                let started = Instant::now();
                let result = kv.decrypt(&version, algorithm, &raw).await;
                let label = result.as_ref().map_or_else(KvError::label, |_| "ok");
                metrics.keyvault("decrypt", label, started.elapsed());
                ring.record(&result);
                result
            })
            .await;
        self.metrics.cache(outcome.label());
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        (result, outcome)
    }
}

fn audit(
    rpc: &str,
    uid: &str,
    key_id: &str,
    started: Instant,
    result: &Result<impl Sized, KmsError>,
    detail: &str,
) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(_) => {
            tracing::info!(target: "audit", rpc, uid = %loggable_uid(uid), key_id, outcome = "ok", latency_ms, detail)
        }
        Err(e) => {
            tracing::warn!(target: "audit", rpc, uid = %loggable_uid(uid), key_id, outcome = "error", error = %e, latency_ms, detail)
        }
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
        let key_id = kms.ring.current().map(|c| c.key_id).unwrap_or_default();
        let healthz = match kms.ring.health() {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason.chars().take(200).collect(),
        };
        kms.observe(
            "v2.Status",
            started,
            Ok(v2::StatusResponse {
                version: STATUS_VERSION.to_owned(),
                healthz,
                key_id,
            }),
        )
    }

    #[tracing::instrument(skip_all, fields(rpc = "v2.Encrypt"))]
    async fn encrypt(
        &self,
        request: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let req = request.into_inner();
        let plaintext = zeroize::Zeroizing::new(req.plaintext);
        let result = async {
            let (ciphertext, version, info) = kms.wrap(&plaintext, WRAP_ALGORITHM).await?;
            let key_id = kms.ring.key().key_id(&version);
            let annotations = envelope::encrypt_annotations(&version, &info);
            Ok(v2::EncryptResponse {
                ciphertext,
                key_id,
                annotations,
            })
        }
        .await;
        let key_id = result
            .as_ref()
            .map(|r| r.key_id.clone())
            .unwrap_or_default();
        audit("Encrypt", &req.uid, &key_id, started, &result, "");
        kms.observe("v2.Encrypt", started, result)
    }

    #[tracing::instrument(skip_all, fields(rpc = "v2.Decrypt"))]
    async fn decrypt(
        &self,
        request: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let req = request.into_inner();
        let mut cache_outcome = "";
        let result = async {
            envelope::check_key_id(&req.key_id)?;
            let raw = envelope::decode_ciphertext(&req.ciphertext)?;
            let meta = envelope::decrypt_meta(&req.annotations)?;
            let version = match &meta.key_version {
                // Written by akv-bridge: the annotation names the version; it must hash to
                // the key id, or the request mixes up two envelopes.
                Some(v) if kms.ring.key().key_id(v) == req.key_id => v.clone(),
                Some(_) => return Err(KmsError::Invalid(EnvelopeError::KeyVersionMismatch)),
                // Written by Azure/kubernetes-kms: find the version by its key id.
                None => kms.ring.resolve(&req.key_id).await.ok_or_else(|| {
                    KmsError::UnknownKeyId(req.key_id.clone(), kms.ring.key().name().to_owned())
                })?,
            };
            let cache_key = envelope::cache_key(&req.ciphertext, &req.key_id, &meta);
            let (plain, outcome) = kms.unwrap(cache_key, &version, meta.algorithm, raw).await;
            cache_outcome = outcome.label();
            Ok(v2::DecryptResponse {
                plaintext: plain?.to_vec(),
            })
        }
        .await;
        audit(
            "Decrypt",
            &req.uid,
            &req.key_id,
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
        let req = request.into_inner();
        let plain = zeroize::Zeroizing::new(req.plain);
        let result = async {
            check_v1_version(&req.version)?;
            let (cipher, _, _) = kms.wrap(&plain, V1_ALGORITHM).await?;
            Ok(v1::EncryptResponse { cipher })
        }
        .await;
        audit("v1beta1.Encrypt", "", "", started, &result, "");
        kms.observe("v1beta1.Encrypt", started, result)
    }

    async fn decrypt(
        &self,
        request: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        let started = Instant::now();
        let kms = &self.0;
        let req = request.into_inner();
        let result = async {
            check_v1_version(&req.version)?;
            let raw = envelope::decode_ciphertext(&req.cipher)?;
            // v1 ciphertexts carry no key id: the pinned version, else the current one and
            // then every other version of the key we know of.
            let candidates: Vec<KeyVersion> = match kms.ring.pinned() {
                Some(v) => vec![v.clone()],
                None => kms.ring.versions_newest_first(),
            };
            let meta = envelope::DecryptMeta {
                algorithm: V1_ALGORITHM,
                key_version: None,
            };
            for version in candidates {
                let cache_key = envelope::cache_key(&req.cipher, version.as_str(), &meta);
                match kms
                    .unwrap(cache_key, &version, V1_ALGORITHM, raw.clone())
                    .await
                    .0
                {
                    Ok(plain) => {
                        return Ok(v1::DecryptResponse {
                            plain: plain.to_vec(),
                        });
                    }
                    Err(KvError::Rejected(_)) => continue,
                    Err(e) => return Err(KmsError::KeyVault(e)),
                }
            }
            Err(KmsError::NoVersionDecrypts(
                kms.ring.key().name().to_owned(),
            ))
        }
        .await;
        audit("v1beta1.Decrypt", "", "", started, &result, "");
        kms.observe("v1beta1.Decrypt", started, result)
    }
}
