//! The Key Vault client the servers use: the official `azure_security_keyvault_keys`
//! `KeyClient` behind a deadline per call, the SDK's jittered retries (which honour
//! `Retry-After`, and give up at once when it is beyond the deadline), a concurrency limit
//! per vault, and the failures as one type, [`KvError`], classified in
//! [`crate::azure::upstream`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, Key, KeyAttributes, KeyClientEncryptOptions, KeyClientGetKeyOptions,
    KeyOperationParameters, KeyType,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceExt};
use futures::TryStreamExt as _;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::azure::key::{KeyRef, KeyVersion, ResponseInfo};
use crate::azure::upstream::{self, Upstream, UpstreamPolicy};
use crate::observability::metrics::UpstreamLabels;

/// How to reach a vault.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// PEM bundle of CAs to trust instead of the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Connect the vault's host name to this address instead of resolving it (private
    /// endpoints with custom DNS, the local mock).
    pub connect_addr: Option<SocketAddr>,
    /// Host name `connect_addr` applies to; `None`: every host name.
    pub pinned_host: Option<String>,
}

/// Resolves every host name to one address (`--vault-connect-addr` without a single host).
/// A port in the URL still wins, as with any resolver.
struct PinnedResolver(SocketAddr);

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(std::future::ready(Ok(
            Box::new(std::iter::once(addr)) as reqwest::dns::Addrs
        )))
    }
}

/// How calls behave.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Deadline of one operation, retries included.
    pub deadline: Duration,
    /// Retries after the first attempt (429, 5xx, connection errors).
    pub max_retries: u32,
    /// Concurrent requests to the vault.
    pub max_concurrency: usize,
    /// Verify that the challenge's resource matches the vault's domain (on by default).
    pub verify_challenge_resource: bool,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(2500),
            max_retries: 3,
            max_concurrency: 32,
            verify_challenge_resource: true,
        }
    }
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA bundle could not be read or parsed.
    #[error("CA bundle {path}: {reason}")]
    CaBundle {
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The SDK refused the vault URL.
    #[error("vault URL {url}: {reason}")]
    VaultUrl {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Throttling: who answered 429, and the wait it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// Key Vault or Microsoft Entra.
    pub by: Upstream,
    /// The `Retry-After` of the last 429, if it had one.
    pub retry_after: Option<Duration>,
    /// The call gave up at once: `Retry-After` was beyond what was left of its deadline.
    pub beyond_deadline: bool,
}

impl std::fmt::Display for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is throttling requests (HTTP 429", self.by)?;
        match (self.retry_after, self.beyond_deadline) {
            (Some(wait), true) => write!(
                f,
                "): Retry-After {wait:?} is beyond this call's deadline, so it was not retried"
            ),
            (Some(wait), false) => write!(f, ", Retry-After {wait:?}) past the retries"),
            (None, _) => f.write_str(") past the retries"),
        }
    }
}

/// A failed Key Vault operation, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The object or version does not exist (404). Names the object, e.g. `key kek/1a2b`.
    #[error("{0} was not found in the vault")]
    NotFound(String),
    /// The identity lacks a permission (403 access denied), e.g. `keys/encrypt`.
    #[error("the identity lacks the {0} permission on the vault")]
    PermissionDenied(&'static str),
    /// The object version is disabled, expired or not yet valid (403).
    #[error("{version} is {reason}")]
    KeyUnusable {
        /// The version.
        version: String,
        /// Disabled, expired, not yet valid.
        reason: &'static str,
    },
    /// The vault refused the input (400), e.g. a ciphertext that does not decrypt.
    #[error("Key Vault refused the request: {0}")]
    Rejected(String),
    /// The credential was rejected: Microsoft Entra refused it (`invalid_client`,
    /// `invalid_grant`, `unauthorized_client`, ...), or Key Vault answered 401.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// Microsoft Entra (it refused the credential) or Key Vault (it answered 401).
        by: Upstream,
        /// What was said.
        reason: String,
    },
    /// Key Vault or Entra answered 429, past the retries or with a `Retry-After` beyond the
    /// deadline.
    #[error("{0}")]
    Throttled(Throttle),
    /// Key Vault or Entra could not be reached, failed (5xx), or (Entra) did not answer in
    /// time.
    #[error("{by} is unavailable: {reason}")]
    Unavailable {
        /// Key Vault or Microsoft Entra.
        by: Upstream,
        /// What happened, e.g. `HTTP 503`.
        reason: String,
    },
    /// The server's TLS certificate could not be verified.
    #[error(
        "the TLS certificate of {host} ({by}) could not be verified: {reason}; is its CA in \
         --ca-bundle (or the system roots)?"
    )]
    Certificate {
        /// Key Vault or Microsoft Entra.
        by: Upstream,
        /// The host name it was presented for.
        host: String,
        /// Why verification failed.
        reason: String,
    },
    /// The deadline passed while waiting for Key Vault.
    #[error("Key Vault did not answer within {0:?}")]
    DeadlineExceeded(Duration),
}

impl KvError {
    /// Whether this failure says the vault (or our access to it) is unhealthy, as opposed to
    /// a problem with one request's input.
    pub fn is_health_failure(&self) -> bool {
        !matches!(
            self,
            Self::Rejected(_) | Self::NotFound(_) | Self::KeyUnusable { .. }
        )
    }

    /// A Key Vault outage (unreachable, 5xx): for messages built outside the classifier.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            by: Upstream::KeyVault,
            reason: reason.into(),
        }
    }

    /// Whether this failure may pass by itself and the call is worth retrying later: an
    /// outage or throttling of Key Vault or Entra, a deadline, a certificate that cannot be
    /// verified, or a rejected credential (it can be fixed without a restart: a federated
    /// credential created, a secret rotated in Entra).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled(_)
                | Self::Unavailable { .. }
                | Self::Certificate { .. }
                | Self::DeadlineExceeded(_)
                | Self::Unauthenticated { .. }
        )
    }

    /// Who failed and how, for metrics.
    pub fn metric_labels(&self) -> UpstreamLabels {
        UpstreamLabels {
            upstream: self.upstream_label(),
            outcome: self.label(),
        }
    }

    /// Who failed: a deadline and every answer about an object are Key Vault's.
    pub fn upstream(&self) -> Upstream {
        match self {
            Self::Unauthenticated { by, .. }
            | Self::Unavailable { by, .. }
            | Self::Certificate { by, .. } => *by,
            Self::Throttled(t) => t.by,
            Self::NotFound(_)
            | Self::PermissionDenied(_)
            | Self::KeyUnusable { .. }
            | Self::Rejected(_)
            | Self::DeadlineExceeded(_) => Upstream::KeyVault,
        }
    }

    /// Who failed, for metrics: `entra`, `token_proxy` (AKS identity binding) or
    /// `key_vault` ([`Self::upstream`]).
    pub fn upstream_label(&self) -> &'static str {
        match self.upstream() {
            Upstream::Entra => "entra",
            Upstream::TokenProxy => "token_proxy",
            Upstream::KeyVault => "key_vault",
        }
    }

    /// Every [`Self::label`], for metric series created at zero.
    pub const LABELS: [&'static str; 9] = [
        "not_found",
        "forbidden",
        "key_unusable",
        "rejected",
        "unauthenticated",
        "throttled",
        "unavailable",
        "certificate",
        "deadline_exceeded",
    ];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::PermissionDenied(_) => "forbidden",
            Self::KeyUnusable { .. } => "key_unusable",
            Self::Rejected(_) => "rejected",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::Throttled(_) => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::Certificate { .. } => "certificate",
            Self::DeadlineExceeded(_) => "deadline_exceeded",
        }
    }
}

impl crate::cache::CacheError for KvError {
    fn abandoned() -> Self {
        KvError::unavailable("fetch ended without a result")
    }

    /// Outages and throttling of Key Vault or Entra (an unverifiable certificate included)
    /// may be answered from a stale entry; a denial or a rejected credential never is.
    fn serve_stale(&self) -> bool {
        matches!(
            self,
            Self::Throttled(_)
                | Self::Unavailable { .. }
                | Self::Certificate { .. }
                | Self::DeadlineExceeded(_)
        )
    }
}

/// What the servers need to know about a key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Version.
    pub version: KeyVersion,
    /// Enabled flag.
    pub enabled: bool,
    /// Not valid before (Unix seconds).
    pub not_before: Option<i64>,
    /// Expiry (Unix seconds).
    pub expires: Option<i64>,
    /// Creation time (Unix seconds).
    pub created: Option<i64>,
    /// `kty` (`RSA`, `RSA-HSM`, ...).
    pub kty: Option<String>,
    /// Allowed operations (empty when the service did not say).
    pub key_ops: Vec<String>,
    /// The RSA public key (`n`, `e` of the JWK), when the service returned one.
    pub rsa: Option<RsaPublic>,
}

/// An RSA public key as a JWK carries it: big-endian modulus and exponent.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// Modulus, big-endian, leading zero bytes removed.
    pub n: Vec<u8>,
    /// Public exponent, big-endian, leading zero bytes removed.
    pub e: Vec<u8>,
}

impl std::fmt::Debug for RsaPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublic({} bits)", self.bits())
    }
}

impl RsaPublic {
    /// From JWK fields; `None` when either is empty.
    pub fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        let strip = |b: &[u8]| -> Vec<u8> {
            let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
            b.get(start..).unwrap_or_default().to_vec()
        };
        let (n, e) = (strip(n), strip(e));
        (!n.is_empty() && !e.is_empty()).then_some(Self { n, e })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        match self.n.first() {
            Some(top) => (self.n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
            None => 0,
        }
    }
}

/// The smallest RSA modulus accepted for wrapping (Key Vault's own minimum).
pub const MIN_RSA_BITS: usize = 2048;

impl KeyInfo {
    /// Why the version cannot be used now, if it cannot.
    pub fn unusable_reason(&self, now: i64) -> Option<&'static str> {
        if !self.enabled {
            Some("disabled")
        } else if self.expires.is_some_and(|e| now >= e) {
            Some("expired")
        } else if self.not_before.is_some_and(|n| now < n) {
            Some("not yet valid")
        } else {
            None
        }
    }

    /// Why the version cannot wrap seeds, if it cannot: not enabled and valid now, not an
    /// RSA key, `key_ops` without `encrypt` or `decrypt`, or smaller than 2048 bits.
    pub fn wrap_problem(&self, now: i64) -> Option<String> {
        self.unusable_reason(now)
            .map(str::to_owned)
            .or_else(|| self.rsa_wrap_problem())
    }

    /// Whether the key can wrap with RSA (type RSA and, if listed, encrypt/decrypt allowed,
    /// at least 2048 bits when the modulus is known).
    pub fn rsa_wrap_problem(&self) -> Option<String> {
        match self.kty.as_deref() {
            Some("RSA" | "RSA-HSM") | None => {}
            Some(other) => {
                return Some(format!(
                    "key type {other} cannot wrap with RSA-OAEP-256; use an RSA or RSA-HSM key"
                ));
            }
        }
        for op in ["encrypt", "decrypt"] {
            if !self.key_ops.is_empty() && !self.key_ops.iter().any(|o| o.eq_ignore_ascii_case(op))
            {
                return Some(format!("the key's key_ops do not allow {op}"));
            }
        }
        match &self.rsa {
            Some(rsa) if rsa.bits() < MIN_RSA_BITS => Some(format!(
                "the RSA key has {} bits; at least {MIN_RSA_BITS} are required",
                rsa.bits()
            )),
            _ => None,
        }
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What every client to Azure (or to a proxy in front of it) shares: timeouts, idle
/// connections, no redirects.
pub fn base_http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
}

/// Builds the reqwest client every Azure call goes through (vault and Entra).
pub fn http_client(config: &TransportConfig) -> Result<reqwest::Client, SetupError> {
    let mut b = base_http_client().https_only(true);
    if let Some(path) = &config.ca_bundle {
        let certs = load_ca_bundle(path)?;
        b = b.tls_certs_only(certs);
    }
    match (config.connect_addr, &config.pinned_host) {
        (Some(addr), Some(host)) => b = b.resolve(host, addr),
        (Some(addr), None) => b = b.dns_resolver(PinnedResolver(addr)),
        (None, _) => {}
    }
    b.build().map_err(|e| SetupError::Http(e.to_string()))
}

fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, SetupError> {
    let err = |reason: String| SetupError::CaBundle {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// `ClientOptions` for requests to `upstream` (Key Vault clients, or the credentials' token
/// requests): our transport, a retry policy bounded by the deadline, and the
/// `UpstreamPolicy` that gives up at once on a `Retry-After` beyond it.
pub fn client_options(
    http: reqwest::Client,
    policy: &CallPolicy,
    upstream: Upstream,
) -> ClientOptions {
    let deadline_ms = i64::try_from(policy.deadline.as_millis()).unwrap_or(i64::MAX);
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(50),
            max_retries: policy.max_retries,
            max_total_elapsed: azure_core::time::Duration::milliseconds(deadline_ms),
            max_delay: azure_core::time::Duration::seconds(1),
        }),
        per_try_policies: vec![UpstreamPolicy::arc(upstream, policy.deadline)],
        ..ClientOptions::default()
    }
}

/// A key in one vault, reached through the official SDK.
#[derive(Clone)]
pub struct KeyVault {
    client: Arc<KeyClient>,
    key: KeyRef,
    limit: Arc<Semaphore>,
    deadline: Duration,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("key", &self.key)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn header(headers: &azure_core::http::headers::Headers, name: &'static str) -> Option<String> {
    headers.get_optional_string(&HeaderName::from_static(name))
}

impl KeyVault {
    /// A client for `key`.
    pub fn new(
        key: KeyRef,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
        policy: &CallPolicy,
    ) -> Result<Self, SetupError> {
        let client = KeyClient::new(
            key.vault_url(),
            credential,
            Some(KeyClientOptions {
                client_options: options,
                verify_challenge_resource: Some(policy.verify_challenge_resource),
                ..KeyClientOptions::default()
            }),
        )
        .map_err(|e| SetupError::VaultUrl {
            url: key.vault_url().to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            client: Arc::new(client),
            key,
            limit: Arc::new(Semaphore::new(policy.max_concurrency.max(1))),
            deadline: policy.deadline,
        })
    }

    /// The key this client addresses.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// Runs `f` under the concurrency limit and the deadline (queueing counts against it).
    async fn call<T, F>(&self, permission: &'static str, what: &str, f: F) -> Result<T, KvError>
    where
        F: std::future::Future<Output = azure_core::Result<T>>,
    {
        bounded_call(&self.limit, self.deadline, permission, what, f).await
    }

    /// Reads a key version's metadata (`None` = the latest version).
    pub async fn get(&self, version: Option<&KeyVersion>) -> Result<KeyInfo, KvError> {
        let what = describe(&self.key, version);
        let options = KeyClientGetKeyOptions {
            key_version: version.map(|v| v.as_str().to_owned()),
            ..Default::default()
        };
        let key: Key = self
            .call("keys/get", &what, async {
                self.client
                    .get_key(self.key.name(), Some(options))
                    .await?
                    .into_model()
            })
            .await?;
        key_info(&key)
            .ok_or_else(|| KvError::unavailable("Key Vault returned a key without a versioned kid"))
    }

    /// Lists every version's metadata.
    pub async fn list_versions(&self) -> Result<Vec<KeyInfo>, KvError> {
        let what = describe(&self.key, None);
        self.call("keys/list", &what, async {
            let pager = self
                .client
                .list_key_properties_versions(self.key.name(), None)?;
            let items: Vec<_> = pager.try_collect().await?;
            Ok(items
                .iter()
                .filter_map(|p| version_info(p, p.attributes.as_ref()))
                .collect())
        })
        .await
    }

    /// Encrypts (wraps) `plaintext` with `version`. Returns Key Vault's raw result and the
    /// response facts the Go plugin records as annotations.
    pub async fn encrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, ResponseInfo), KvError> {
        let what = describe(&self.key, Some(version));
        let params = KeyOperationParameters {
            algorithm: Some(algorithm_of(algorithm)),
            value: Some(plaintext.to_vec()),
            ..Default::default()
        };
        let options = KeyClientEncryptOptions {
            key_version: Some(version.as_str().to_owned()),
            ..Default::default()
        };
        self.call("keys/encrypt", &what, async {
            let response = self
                .client
                .encrypt(self.key.name(), params.try_into()?, Some(options))
                .await?;
            let headers = response.headers();
            let info = ResponseInfo {
                date: header(headers, "date"),
                request_id: header(headers, "x-ms-request-id"),
                region: header(headers, "x-ms-keyvault-region"),
            };
            let result = response.into_model()?.result.unwrap_or_default();
            Ok((result, info))
        })
        .await
    }

    /// Decrypts (unwraps) `ciphertext` with `version`.
    pub async fn decrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KvError> {
        let what = describe(&self.key, Some(version));
        let params = KeyOperationParameters {
            algorithm: Some(algorithm_of(algorithm)),
            value: Some(ciphertext.to_vec()),
            ..Default::default()
        };
        self.call("keys/decrypt", &what, async {
            let result = self
                .client
                .decrypt(self.key.name(), version.as_str(), params.try_into()?, None)
                .await?
                .into_model()?;
            Ok(Zeroizing::new(result.result.unwrap_or_default()))
        })
        .await
    }
}

/// Runs one Key Vault operation under `limit` and `deadline` (queueing counts against it)
/// and classifies its failure. `permission` is the data action it needs (`keys/get`,
/// `secrets/list`, ...) and `what` names the object (`key kek/1a2b`), for the messages.
/// A deadline that passes while the call waits for an access token is Entra's: it is
/// `Unavailable` naming Microsoft Entra, not Key Vault's `DeadlineExceeded`.
pub(crate) async fn bounded_call<T, F>(
    limit: &Semaphore,
    deadline: Duration,
    permission: &'static str,
    what: &str,
    f: F,
) -> Result<T, KvError>
where
    F: std::future::Future<Output = azure_core::Result<T>>,
{
    let work = async {
        let _permit = limit
            .acquire()
            .await
            .map_err(|_| KvError::unavailable("client is shutting down"))?;
        upstream::started();
        f.await
            .map_err(|e| upstream::classify(&e, permission, what))
    };
    match upstream::within(deadline, work).await {
        Ok(r) => r,
        Err(Upstream::KeyVault) => Err(KvError::DeadlineExceeded(deadline)),
        Err(by @ (Upstream::Entra | Upstream::TokenProxy)) => Err(KvError::Unavailable {
            by,
            reason: format!("it did not answer within {deadline:?}"),
        }),
    }
}

fn describe(key: &KeyRef, version: Option<&KeyVersion>) -> String {
    match version {
        Some(v) => format!("key {}/{}", key.name(), v),
        None => format!("key {}", key.name()),
    }
}

fn algorithm_of(name: &str) -> EncryptionAlgorithm {
    match name {
        "RSA-OAEP-256" => EncryptionAlgorithm::RsaOaep256,
        "RSA-OAEP" => EncryptionAlgorithm::RsaOaep,
        "RSA1_5" => EncryptionAlgorithm::Rsa1_5,
        other => EncryptionAlgorithm::UnknownValue(other.to_owned()),
    }
}

/// Version and attributes of a key or a key listing entry.
fn version_info(resource: &impl ResourceExt, attrs: Option<&KeyAttributes>) -> Option<KeyInfo> {
    let version = resource
        .resource_id()
        .ok()?
        .version
        .and_then(|v| KeyVersion::parse(&v))?;
    Some(KeyInfo {
        version,
        enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
        not_before: attrs.and_then(|a| a.not_before).map(|t| t.unix_timestamp()),
        expires: attrs.and_then(|a| a.expires).map(|t| t.unix_timestamp()),
        created: attrs.and_then(|a| a.created).map(|t| t.unix_timestamp()),
        kty: None,
        key_ops: Vec::new(),
        rsa: None,
    })
}

fn key_info(key: &Key) -> Option<KeyInfo> {
    let jwk = key.key.as_ref();
    Some(KeyInfo {
        kty: jwk.and_then(|j| j.kty.as_ref()).map(|k| match k {
            KeyType::Rsa => "RSA".to_owned(),
            KeyType::RsaHsm => "RSA-HSM".to_owned(),
            KeyType::Ec => "EC".to_owned(),
            KeyType::EcHsm => "EC-HSM".to_owned(),
            KeyType::Oct => "oct".to_owned(),
            KeyType::OctHsm => "oct-HSM".to_owned(),
            other => format!("{other:?}"),
        }),
        key_ops: jwk.and_then(|j| j.key_ops.clone()).unwrap_or_default(),
        rsa: jwk.and_then(|j| RsaPublic::new(j.n.as_deref()?, j.e.as_deref()?)),
        ..version_info(key, key.attributes.as_ref())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed_once() {
        let by = Upstream::KeyVault;
        let all = [
            KvError::NotFound("x".into()),
            KvError::PermissionDenied("keys/get"),
            KvError::KeyUnusable {
                version: "v".into(),
                reason: "disabled",
            },
            KvError::Rejected("x".into()),
            KvError::Unauthenticated {
                by,
                reason: "x".into(),
            },
            KvError::Throttled(Throttle {
                by,
                retry_after: None,
                beyond_deadline: false,
            }),
            KvError::Unavailable {
                by,
                reason: "x".into(),
            },
            KvError::Certificate {
                by,
                host: "h".into(),
                reason: "x".into(),
            },
            KvError::DeadlineExceeded(Duration::from_secs(1)),
        ];
        let labels: Vec<_> = all.iter().map(KvError::label).collect();
        assert_eq!(labels, KvError::LABELS);
    }

    #[test]
    fn unusable_reasons() {
        let base = KeyInfo {
            version: KeyVersion::parse("v1").unwrap(),
            enabled: true,
            not_before: None,
            expires: None,
            created: None,
            kty: Some("RSA".into()),
            key_ops: vec!["encrypt".into(), "decrypt".into()],
            rsa: RsaPublic::new(&[0, 0xc0, 0, 0, 1], &[1, 0, 1]),
        };
        assert_eq!(
            base.rsa.as_ref().unwrap().bits(),
            32,
            "leading zeros stripped"
        );
        assert!(base.rsa_wrap_problem().unwrap().contains("32 bits"));
        let base = KeyInfo {
            rsa: RsaPublic::new(&[0x80; 256], &[1, 0, 1]),
            ..base
        };
        assert_eq!(base.rsa.as_ref().unwrap().bits(), 2048);
        assert_eq!(base.unusable_reason(100), None);
        assert_eq!(base.rsa_wrap_problem(), None);
        let disabled = KeyInfo {
            enabled: false,
            ..base.clone()
        };
        assert_eq!(disabled.unusable_reason(100), Some("disabled"));
        let expired = KeyInfo {
            expires: Some(50),
            ..base.clone()
        };
        assert_eq!(expired.unusable_reason(100), Some("expired"));
        let ec = KeyInfo {
            kty: Some("EC".into()),
            ..base.clone()
        };
        assert!(ec.rsa_wrap_problem().is_some());
        let sign_only = KeyInfo {
            key_ops: vec!["sign".into()],
            ..base
        };
        assert!(sign_only.rsa_wrap_problem().unwrap().contains("encrypt"));
        assert!(KvError::unavailable("x").is_health_failure());
        assert!(!KvError::Rejected("x".into()).is_health_failure());
    }
}
