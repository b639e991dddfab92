//! The `CSIDriverProvider` service: `Version`, and `Mount`, which turns one volume's
//! SecretProviderClass into files.
//!
//! A Mount: parse every input at the edge ([`params::parse_mount`]); resolve the identity
//! and, for workload identity, have its token accepted by Entra
//! ([`Identities::admit`]); read the objects in parallel (bounded) through the shared cache;
//! render each into the Go provider's files; refuse duplicate paths and oversized
//! responses; answer files and object versions. The whole Mount has a deadline well inside
//! kubelet's.
//!
//! Failures are gRPC statuses whose message names the object and the cause and never holds
//! a secret value. One mapping, [`MountError::to_status`]:
//!
//! | failure | code |
//! |---|---|
//! | bad SecretProviderClass parameters, duplicate paths, token not a JWT, a `cloudEnvFileName` the provider may not read | `INVALID_ARGUMENT` |
//! | object or version not found | `NOT_FOUND` |
//! | the identity lacks a permission | `PERMISSION_DENIED` |
//! | Entra rejected the credential (400/401: `invalid_client`, `invalid_grant`, `unauthorized_client`, ...), Key Vault answered 401 | `UNAUTHENTICATED` |
//! | version disabled or expired, content not convertible, a custom cloud's environment file that does not parse | `FAILED_PRECONDITION` |
//! | Key Vault or Entra throttling (429) past the retries, or with a `Retry-After` beyond the deadline; response over 4 MiB | `RESOURCE_EXHAUSTED` |
//! | Key Vault or Entra unreachable or failing (5xx), Entra too slow, a TLS certificate that cannot be verified | `UNAVAILABLE` |
//! | Key Vault did not answer within the read's deadline, or the mount's deadline passed | `DEADLINE_EXCEEDED` |
//!
//! Messages name who failed (Key Vault or Microsoft Entra). Throttling answers
//! `RESOURCE_EXHAUSTED`, not `UNAVAILABLE`: the driver retries `UNAVAILABLE` at once, which
//! would multiply the requests a throttled service sees. Outages and throttling of either
//! service (not a rejection) let a cached object answer past its TTL (`--stale-if-error`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tonic::{Code, Request, Response, Status};

use crate::azure::keyvault::KvError;
use crate::azure::upstream::Upstream;
use crate::cache::{CacheError as _, Outcome};
use crate::csi::cloud_env::{CloudEnvError, CloudEnvFiles};
use crate::csi::content::{self, ContentError, ObjectOptions, ProviderOptions};
use crate::csi::fetch::{Fetched, Fetcher, MAX_LISTED};
use crate::csi::identity::{Identities, Identity, IdentityError, vault_scope};
use crate::csi::params::{
    self, MountCloud, MountParams, ObjectSpec, ParamError, ParseOptions, VaultName,
};
use crate::observability::metrics::{MountMetrics, ServerMetrics};
use crate::proto::csi_v1alpha1 as pb;
use crate::server::budget::Charge;

/// The API version the driver speaks.
pub const API_VERSION: &str = "v1alpha1";
/// `runtime_name` of `Version`.
pub const RUNTIME_NAME: &str = "akv-bridge";
/// The driver refuses responses over 4 MiB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Files synced to a Kubernetes Secret must stay under 1 MiB: warned past it.
pub const WARN_RESPONSE_BYTES: usize = 1024 * 1024;

/// Every way a Mount can fail. Messages name the object; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The request's parameters.
    #[error("invalid SecretProviderClass parameters: {0}")]
    Params(#[source] ParamError),
    /// `cloudName` or the vault URL.
    #[error("{0}")]
    Config(String),
    /// A custom cloud's environment file (`cloudEnvFileName`).
    #[error(transparent)]
    CloudEnv(#[from] CloudEnvError),
    /// The identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Reading an object failed.
    #[error("{object}: {error}")]
    Object {
        /// `secret db-password in vault kv-prod`.
        object: String,
        /// Cause.
        error: KvError,
    },
    /// The object's content could not be turned into files.
    #[error("{object}: {error}")]
    Content {
        /// The object.
        object: String,
        /// Cause.
        error: ContentError,
    },
    /// `objectVersion` is not among the enabled versions (version history).
    #[error("{object}: version {version} is not an enabled version")]
    VersionNotListed {
        /// The object.
        object: String,
        /// The version asked for.
        version: String,
    },
    /// Two files would have the same path.
    #[error("two objects write the same file {0:?}; give one an objectAlias")]
    DuplicatePath(String),
    /// A selection (`objectNamePrefix`, `objectTag`) matches more secrets than it may mount.
    #[error("{0}")]
    Selection(String),
    /// The response would exceed what the driver accepts.
    #[error(
        "the objects add up to {0} bytes, more than the driver's 4 MiB limit; split them \
         across SecretProviderClasses"
    )]
    TooLarge(usize),
    /// The mount's deadline passed.
    #[error("the mount did not finish within {0:?} (Key Vault slow or throttling)")]
    Timeout(Duration),
}

impl From<ParamError> for MountError {
    fn from(error: ParamError) -> Self {
        match error {
            // A cloud name refused by `Cloud::parse` has always been reported as
            // `cloudName: ...`, without the parameters prefix; it keeps that message.
            ParamError::InvalidCloud(_) => Self::Config(error.to_string()),
            error => Self::Params(error),
        }
    }
}

impl MountError {
    /// The gRPC status: the single place mount errors become codes.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Self::Params(_) | Self::Config(_) | Self::DuplicatePath(_) => Code::InvalidArgument,
            // Refused paths and a missing file are the class's doing; a file the operator
            // put there that does not parse is the node's.
            Self::CloudEnv(CloudEnvError::Invalid { .. }) => Code::FailedPrecondition,
            Self::CloudEnv(_) => Code::InvalidArgument,
            Self::Identity(IdentityError::BadToken(_)) => Code::InvalidArgument,
            Self::Identity(IdentityError::Rejected(_)) => Code::Unauthenticated,
            Self::Identity(IdentityError::Entra { error, .. }) => kv_code(error),
            Self::Identity(IdentityError::Setup(_)) => Code::InvalidArgument,
            Self::Identity(IdentityError::TokenProxy { transient, .. }) => {
                if *transient {
                    Code::Unavailable
                } else {
                    Code::FailedPrecondition
                }
            }
            Self::Object { error, .. } => kv_code(error),
            Self::VersionNotListed { .. } => Code::NotFound,
            Self::Selection(_) => Code::FailedPrecondition,
            Self::Content { .. } => Code::FailedPrecondition,
            Self::TooLarge(_) => Code::ResourceExhausted,
            Self::Timeout(_) => Code::DeadlineExceeded,
        };
        Status::new(code, self.to_string())
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Params(_) | Self::Config(_) | Self::DuplicatePath(_) => "invalid",
            Self::CloudEnv(_) => "cloud_environment",
            Self::Identity(IdentityError::Entra { error, .. }) => error.label(),
            Self::Identity(IdentityError::TokenProxy { .. }) => "token_proxy",
            Self::Identity(_) => "identity",
            Self::Object { error, .. } => error.label(),
            Self::VersionNotListed { .. } => "not_found",
            Self::Selection(_) => "selection",
            Self::Content { .. } => "content",
            Self::TooLarge(_) => "too_large",
            Self::Timeout(_) => "deadline_exceeded",
        }
    }
}

/// The code of a Key Vault or Entra failure (part of [`MountError::to_status`]).
fn kv_code(error: &KvError) -> Code {
    match error {
        KvError::NotFound(_) => Code::NotFound,
        KvError::PermissionDenied(_) => Code::PermissionDenied,
        KvError::Unauthenticated { .. } => Code::Unauthenticated,
        KvError::KeyUnusable { .. } => Code::FailedPrecondition,
        KvError::Rejected(_) => Code::InvalidArgument,
        KvError::Throttled(_) => Code::ResourceExhausted,
        KvError::Unavailable { .. } | KvError::Certificate { .. } => Code::Unavailable,
        KvError::DeadlineExceeded(_) => Code::DeadlineExceeded,
    }
}

/// How vault names become URLs.
#[derive(Debug, Clone)]
pub enum VaultUrls {
    /// `https://<name>.<the mount's cloud's suffix>`.
    Cloud,
    /// A template with `{name}`.
    Template(String),
}

impl VaultUrls {
    fn url(&self, name: &VaultName, dns_suffix: &str) -> String {
        match self {
            Self::Cloud => format!("https://{}.{dns_suffix}", name.as_str()),
            Self::Template(t) => t.replace("{name}", name.as_str()),
        }
    }
}

/// Provider-wide settings of the Mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// File rendering flags.
    pub provider: ProviderOptions,
    /// Vault URLs.
    pub vault_urls: VaultUrls,
    /// Deadline of a whole Mount.
    pub timeout: Duration,
    /// Objects of one mount read in parallel.
    pub concurrency: usize,
    /// How long a vault found unreachable is skipped for objects with a failover vault.
    pub failover_hold: Duration,
    /// How parameters are parsed (`--strict-parameters`, `--cloud-name`).
    pub params: ParseOptions,
    /// Custom clouds' environment files (`--cloud-env-dir`, `--cloud-env-file`).
    pub cloud_envs: CloudEnvFiles,
}

/// The provider's shared state.
#[derive(Debug)]
pub struct Provider {
    identities: Identities,
    fetcher: Fetcher,
    config: MountConfig,
    metrics: ServerMetrics,
    mounts: MountMetrics,
    /// Vault URLs found unreachable or throttling, and until when objects with a failover
    /// vault skip them (`--failover-hold`).
    down: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

/// Vaults remembered as down at most (the oldest are forgotten first).
const MAX_DOWN_VAULTS: usize = 256;

/// One file of the answer.
struct OutFile {
    path: String,
    mode: u32,
    contents: zeroize::Zeroizing<Vec<u8>>,
}

/// What one object contributed.
struct ObjectResult {
    files: Vec<OutFile>,
    versions: Vec<pb::ObjectVersion>,
    skipped: bool,
    outcomes: Vec<Outcome>,
    /// Read from the failover vault.
    failed_over: bool,
}

/// An object's vault and its failover vault, each with its URL.
#[derive(Clone, Copy)]
struct FailoverPair<'a> {
    primary: (&'a VaultName, &'a str),
    failover: (&'a VaultName, &'a str),
}

/// A result read from the failover vault `other`: its versions say so (`<vault>/<version>`).
fn failed_over(mut result: ObjectResult, other: &VaultName) -> ObjectResult {
    for v in &mut result.versions {
        if !v.version.is_empty() {
            v.version = format!("{other}/{}", v.version);
        }
    }
    result.failed_over = true;
    result
}

/// Whether a failed read of an object may be retried in its failover vault: Key Vault
/// itself unreachable, failing, throttling past the deadline, too slow, or its certificate
/// refused. Never for an answer about the object (404, 403, a disabled version) nor an
/// identity problem: those would read the same in any vault, or must not be papered over.
/// That is: the failures a stale cached copy may answer (`CacheError::serve_stale`), when
/// Key Vault, not Entra or the token proxy, is the one failing.
fn fails_over(error: &KvError) -> bool {
    error.serve_stale() && error.upstream() == Upstream::KeyVault
}

impl Provider {
    /// The shared state.
    pub fn new(
        identities: Identities,
        fetcher: Fetcher,
        config: MountConfig,
        metrics: ServerMetrics,
        mounts: MountMetrics,
    ) -> Self {
        Self {
            identities,
            fetcher,
            config,
            metrics,
            mounts,
            down: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether `vault_url` was found down within `--failover-hold`.
    fn is_down(&self, vault_url: &str) -> bool {
        let down = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        down.get(vault_url)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Remembers `vault_url` as down (`true`) or forgets it (`false`: it answered).
    fn set_down(&self, vault_url: &str, is_down: bool) {
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !is_down {
            down.remove(vault_url);
            return;
        }
        if self.config.failover_hold.is_zero() {
            return;
        }
        let now = Instant::now();
        down.retain(|_, until| *until > now);
        if down.len() >= MAX_DOWN_VAULTS
            && let Some(oldest) = down
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(url, _)| url.clone())
        {
            down.remove(&oldest);
        }
        down.insert(vault_url.to_owned(), now + self.config.failover_hold);
    }

    /// The socket server's metrics.
    pub fn connection_metrics(&self) -> crate::observability::metrics::ConnectionMetrics {
        self.metrics.connections.clone()
    }

    /// Mounts one volume, within the configured deadline. With `answer` (the call's share
    /// of the server's in-flight budget), the response's bytes are reserved before it is
    /// built, waiting (within the deadline) while the budget has no room.
    pub async fn mount(
        &self,
        request: &pb::MountRequest,
        answer: Option<&Charge>,
    ) -> Result<pb::MountResponse, MountError> {
        let started = Instant::now();
        let params = params::parse_mount_with(
            &request.attributes,
            &request.secrets,
            &request.permission,
            &request.target_path,
            &self.config.params,
        )?;
        self.report_unknown_keys(&params);
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, self.mount_parsed(&params, answer)).await {
            Ok(r) => r,
            Err(_) => Err(MountError::Timeout(timeout)),
        };
        audit(&params, started, &result);
        result.map(|(response, _)| response)
    }

    async fn mount_parsed(
        &self,
        params: &MountParams,
        answer: Option<&Charge>,
    ) -> Result<(pb::MountResponse, MountSummary), MountError> {
        // The cloud's endpoints: built in, or a custom cloud's environment file.
        let custom;
        let (authority, dns_suffix) = match &params.cloud {
            MountCloud::Azure(cloud) => (cloud.authority_host(), cloud.key_vault_dns_suffix()),
            MountCloud::Custom { env_file } => {
                custom = self.config.cloud_envs.resolve(env_file.as_deref()).await?;
                (
                    // As the built-in clouds' hosts: no trailing `/`.
                    custom.authority_host.trim_end_matches('/'),
                    custom.key_vault_dns_suffix.as_str(),
                )
            }
        };
        let primary = self.config.vault_urls.url(&params.vault, dns_suffix);
        let scope = vault_scope(&primary).ok_or_else(|| {
            MountError::Config(format!(
                "vault URL {primary} has no domain to authenticate for"
            ))
        })?;
        let identity = self.identities.resolve(params, authority)?;
        self.identities.admit(&identity, params, &scope).await?;

        // Selections: list the vault (cached), match, and check the matches with the
        // objects as if they had been written out.
        let expanded;
        let objects: &[ObjectSpec] = if params.selections.is_empty() {
            &params.objects
        } else {
            let mut selected = Vec::with_capacity(params.selections.len());
            for selection in &params.selections {
                let vault = selection.vault.as_ref().unwrap_or(&params.vault);
                let vault_url = self.config.vault_urls.url(vault, dns_suffix);
                let what = format!("{} in vault {vault}", selection.describe());
                let (listed, _) = self.fetcher.secret_names(&identity, &vault_url).await;
                let listed = listed.map_err(|error| MountError::Object {
                    object: what.clone(),
                    error,
                })?;
                let Fetched::Names { secrets, truncated } = &*listed else {
                    return Err(MountError::Config(format!("{what}: no listing")));
                };
                if *truncated {
                    return Err(MountError::Config(format!(
                        "{what}: the vault has more than {MAX_LISTED} secrets, more than a \
                         selection lists; name the objects instead"
                    )));
                }
                let mut names: Vec<String> = secrets
                    .iter()
                    .filter(|s| selection.matches(&s.name, s.enabled, &s.tags))
                    .map(|s| s.name.clone())
                    .collect();
                names.sort();
                if names.len() > selection.max as usize {
                    return Err(MountError::Selection(format!(
                        "{what}: {} secrets match, more than objectMaxCount {}",
                        names.len(),
                        selection.max
                    )));
                }
                if names.is_empty() && !selection.optional {
                    return Err(MountError::Object {
                        object: what,
                        error: KvError::NotFound("no enabled secret matches".to_owned()),
                    });
                }
                selected.push((selection.index, names));
            }
            expanded = params.with_selected(&selected)?;
            &expanded
        };

        let mut reads = Vec::with_capacity(objects.len());
        for spec in objects {
            let vault = params.vault_for(spec);
            let vault_url = self.config.vault_urls.url(vault, dns_suffix);
            let failover = params.failover_for(spec);
            let mode = params.mode_for(spec);
            let identity = Arc::clone(&identity);
            reads.push(async move {
                match failover {
                    None => {
                        self.object(&identity, vault, &vault_url, spec, mode, answer)
                            .await
                    }
                    Some(other) => {
                        let other_url = self.config.vault_urls.url(other, dns_suffix);
                        let vaults = FailoverPair {
                            primary: (vault, &vault_url),
                            failover: (other, &other_url),
                        };
                        self.object_failing_over(&identity, vaults, spec, mode, answer)
                            .await
                    }
                }
            });
        }
        let results: Vec<Result<ObjectResult, MountError>> = futures::stream::iter(reads)
            .buffered(self.config.concurrency.max(1))
            .collect()
            .await;

        let mut summary = MountSummary {
            identity: identity.label.clone(),
            ..MountSummary::default()
        };
        let mut response = pb::MountResponse::default();
        let mut paths = BTreeSet::new();
        let mut total = 0usize;
        let mut files = Vec::new();
        for result in results {
            let object = result?;
            summary.skipped += usize::from(object.skipped);
            summary.failed_over += usize::from(object.failed_over);
            for o in object.outcomes {
                match o {
                    Outcome::Hit | Outcome::Coalesced | Outcome::Stale => summary.cached += 1,
                    Outcome::Miss => summary.read += 1,
                }
            }
            response.object_version.extend(object.versions);
            for file in object.files {
                if !paths.insert(file.path.clone()) {
                    return Err(MountError::DuplicatePath(file.path));
                }
                total = total.saturating_add(file.contents.len() + file.path.len());
                if total > MAX_RESPONSE_BYTES {
                    return Err(MountError::TooLarge(total));
                }
                files.push(file);
            }
        }
        if let Some(answer) = answer {
            // The copy below and its encoding: its bytes, and a little per entry.
            let versions: usize = response
                .object_version
                .iter()
                .map(|v| v.id.len() + v.version.len() + 16)
                .sum();
            answer
                .reserve_response(total + 16 * files.len() + versions)
                .await;
        }
        for file in files {
            response.files.push(pb::File {
                path: file.path,
                // 0..=0o777, checked when parsed.
                mode: i32::try_from(file.mode).unwrap_or(0o644),
                contents: file.contents.to_vec(),
            });
        }
        if total > WARN_RESPONSE_BYTES {
            tracing::warn!(
                bytes = total,
                "the mount is over 1 MiB: syncing it to a Kubernetes Secret will fail"
            );
        }
        summary.files = response.files.len();
        summary.bytes = total;
        self.mounts.observe_files(total);
        Ok((response, summary))
    }

    /// Reads one object that has a failover vault: from its vault, else (unreachable,
    /// failing, too slow, throttling) from the failover vault. While its vault is
    /// remembered as down (`--failover-hold`), a fresh cached copy or the failover vault
    /// answers without waiting out the vault's deadline; the vault is asked again when the
    /// failover vault fails too, or once the hold is over.
    async fn object_failing_over(
        &self,
        identity: &Identity,
        vaults: FailoverPair<'_>,
        spec: &ObjectSpec,
        mode: u32,
        answer: Option<&Charge>,
    ) -> Result<ObjectResult, MountError> {
        let ((vault, vault_url), (other, other_url)) = (vaults.primary, vaults.failover);
        let skip_primary = spec.history == 0
            && self.is_down(vault_url)
            && !self
                .fetcher
                .is_fresh(identity, vault_url, spec.kind, spec.name.as_str());
        if skip_primary {
            match self
                .object(identity, other, other_url, spec, mode, answer)
                .await
            {
                Ok(result) if !result.skipped => {
                    self.mounts.failover(true);
                    tracing::debug!(
                        object = %spec.name,
                        vault = %vault,
                        failover = %other,
                        "read from the failover vault: the vault is held as down"
                    );
                    return Ok(failed_over(result, other));
                }
                // The failover vault cannot answer for it: ask the vault after all.
                _ => {}
            }
        }
        let primary = self
            .object(identity, vault, vault_url, spec, mode, answer)
            .await;
        let (object, error) = match primary {
            Err(MountError::Object { object, error }) if fails_over(&error) => (object, error),
            Err(MountError::Object { object, error }) => {
                // Key Vault answered about the object: the vault is up.
                self.set_down(vault_url, false);
                return Err(MountError::Object { object, error });
            }
            Ok(result) => {
                self.set_down(vault_url, false);
                return Ok(result);
            }
            other => return other,
        };
        self.set_down(vault_url, true);
        let secondary = self
            .object(identity, other, other_url, spec, mode, answer)
            .await;
        self.mounts.failover(secondary.is_ok());
        match secondary {
            // An optional object missing in the failover vault is not what the primary
            // holds: keep the primary's error rather than remove the pod's file.
            Ok(result) if result.skipped => {
                tracing::warn!(
                    object = %object,
                    failover = %other,
                    "the failover vault does not have the object"
                );
                Err(MountError::Object { object, error })
            }
            Ok(result) => {
                tracing::warn!(
                    object = %object,
                    failover = %other,
                    error = %error,
                    "read from the failover vault"
                );
                Ok(failed_over(result, other))
            }
            // Both failed: the primary's error, which the operator acts on.
            Err(secondary) => {
                tracing::warn!(
                    object = %object,
                    failover = %other,
                    error = %secondary,
                    "the failover vault failed too"
                );
                Err(MountError::Object { object, error })
            }
        }
    }

    /// Reads and renders one object (all its history entries).
    async fn object(
        &self,
        identity: &Identity,
        vault: &VaultName,
        vault_url: &str,
        spec: &ObjectSpec,
        mode: u32,
        answer: Option<&Charge>,
    ) -> Result<ObjectResult, MountError> {
        let object_name = format!("{} {} in vault {vault}", spec.kind.as_str(), spec.name);
        let err = |error: KvError| MountError::Object {
            object: object_name.clone(),
            error,
        };
        let mut result = ObjectResult {
            files: Vec::new(),
            versions: Vec::new(),
            skipped: false,
            outcomes: Vec::new(),
            failed_over: false,
        };
        let options = ObjectOptions {
            format: spec.format,
            encoding: spec.encoding,
            field: spec.field.clone(),
        };
        let name = spec.name.as_str();

        // Which versions to read, one per file.
        let versions: Vec<Option<String>> = if spec.history == 0 {
            vec![spec.version.clone()]
        } else {
            let (listed, outcome) = self
                .fetcher
                .versions(identity, vault_url, spec.kind, name)
                .await;
            result.outcomes.push(outcome);
            match &*listed.map_err(err)? {
                Fetched::Versions(all) => {
                    let start = match &spec.version {
                        None => 0,
                        Some(v) => all.iter().position(|x| x == v).ok_or_else(|| {
                            MountError::VersionNotListed {
                                object: object_name.clone(),
                                version: v.clone(),
                            }
                        })?,
                    };
                    all.iter()
                        .skip(start)
                        // One per planned file: history + 1, as the Go provider.
                        .take(spec.files.len())
                        .map(|v| Some(v.clone()))
                        .collect()
                }
                _ => return self.missing(spec, &object_name, result),
            }
        };

        let reads = futures::future::join_all(versions.iter().map(|v| {
            self.fetcher
                .object(identity, vault_url, spec.kind, name, v.as_deref())
        }))
        .await;
        for ((fetched, outcome), file) in reads.into_iter().zip(&spec.files) {
            result.outcomes.push(outcome);
            let fetched = fetched.map_err(err)?;
            if let Some(answer) = answer {
                // What rendering makes of it (PEM and base64 grow it by at most about half)
                // is held until the answer is sent: reserve it before rendering.
                answer
                    .reserve_response(2 * crate::csi::fetch::weight(&fetched) + 4096)
                    .await;
            }
            let (version, object) = match &*fetched {
                Fetched::Object { version, object } => (version, object),
                _ => return self.missing(spec, &object_name, result),
            };
            let rendered =
                content::render(object, &options, &self.config.provider).map_err(|error| {
                    MountError::Content {
                        object: object_name.clone(),
                        error,
                    }
                })?;
            for out in rendered {
                let path = match out.suffix {
                    None => file.path.clone(),
                    Some(suffix) => file.path.with_suffix(suffix).map_err(|e| {
                        MountError::Config(format!("{object_name}: file path: {e}"))
                    })?,
                };
                result.files.push(OutFile {
                    path: path.as_str().to_owned(),
                    mode,
                    contents: out.contents,
                });
            }
            result.versions.push(pb::ObjectVersion {
                id: file.id.clone(),
                version: version.clone(),
            });
        }
        self.mounts.object(spec.kind.as_str(), "ok");
        Ok(result)
    }

    /// A missing object: skipped when optional (reported with an empty version), an error
    /// otherwise.
    fn missing(
        &self,
        spec: &ObjectSpec,
        object_name: &str,
        mut result: ObjectResult,
    ) -> Result<ObjectResult, MountError> {
        if !spec.optional {
            self.mounts.object(spec.kind.as_str(), "not_found");
            return Err(MountError::Object {
                object: object_name.to_owned(),
                error: KvError::NotFound(format!("{} {}", spec.kind.as_str(), spec.name)),
            });
        }
        tracing::info!(object = object_name, "optional object not found; skipped");
        self.mounts.object(spec.kind.as_str(), "skipped");
        result.skipped = true;
        result.files.clear();
        result.versions = vec![pb::ObjectVersion {
            id: spec.id.clone(),
            version: String::new(),
        }];
        Ok(result)
    }

    /// Logs each ignored object key ([`log_unknown_keys`]) and counts them all.
    fn report_unknown_keys(&self, params: &MountParams) {
        let count = log_unknown_keys(params);
        if count > 0 {
            self.mounts
                .unknown_parameters
                .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }

    fn observe<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.rpc(method, code, started.elapsed());
        result.map(Response::new)
    }
}

/// Logs the object keys a mount ignored: one warning per key (the pod, the class, the
/// object and the key, never a value), for the first
/// [`params::MAX_REPORTED_UNKNOWN_KEYS`], then one line with the total. Returns how many
/// there were.
fn log_unknown_keys(params: &MountParams) -> usize {
    let unknown = &params.unknown_keys;
    if unknown.count == 0 {
        return 0;
    }
    let pod = format!(
        "{}/{}",
        params.pod.namespace.as_deref().unwrap_or("-"),
        params.pod.name.as_deref().unwrap_or("-")
    );
    let spc = params.secret_provider_class.as_deref().unwrap_or("-");
    for (object, key) in &unknown.first {
        let object = object
            .as_ref()
            .map_or_else(|| "the objects document".to_owned(), ToString::to_string);
        tracing::warn!(
            pod,
            spc,
            object,
            key = ?key,
            "SecretProviderClass object has an unknown key, ignored as the Go provider \
             does (keys are case-sensitive; --strict-parameters refuses them)"
        );
    }
    if unknown.count > unknown.first.len() {
        tracing::warn!(
            pod,
            spc,
            unknown_keys = unknown.count,
            logged = unknown.first.len(),
            "more unknown object keys ignored than logged"
        );
    }
    unknown.count
}

/// What a mount did, for the audit line.
#[derive(Debug, Default)]
struct MountSummary {
    identity: String,
    failed_over: usize,
    files: usize,
    bytes: usize,
    skipped: usize,
    cached: usize,
    read: usize,
}

fn audit(
    params: &MountParams,
    started: Instant,
    result: &Result<(pb::MountResponse, MountSummary), MountError>,
) {
    let latency_ms = crate::observability::logging::millis(started.elapsed());
    let pod = format!(
        "{}/{}",
        params.pod.namespace.as_deref().unwrap_or("-"),
        params.pod.name.as_deref().unwrap_or("-")
    );
    let spc = params.secret_provider_class.as_deref().unwrap_or("-");
    match result {
        Ok((_, s)) => tracing::info!(
            target: "audit",
            rpc = "Mount",
            pod,
            spc,
            vault = %params.vault,
            identity = %s.identity,
            objects = params.objects.len(),
            files = s.files,
            bytes = s.bytes,
            skipped = s.skipped,
            failed_over = s.failed_over,
            from_cache = s.cached,
            keyvault_reads = s.read,
            outcome = "ok",
            latency_ms
        ),
        Err(e) => tracing::warn!(
            target: "audit",
            rpc = "Mount",
            pod,
            spc,
            vault = %params.vault,
            objects = params.objects.len(),
            outcome = e.label(),
            error = %e,
            latency_ms
        ),
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct CsiService(pub Arc<Provider>);

#[tonic::async_trait]
impl pb::csi_driver_provider_server::CsiDriverProvider for CsiService {
    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let started = Instant::now();
        let response = pb::VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: crate::SEMVER.to_owned(),
        };
        self.0.observe("Version", started, Ok(response))
    }

    async fn mount(
        &self,
        request: Request<pb::MountRequest>,
    ) -> Result<Response<pb::MountResponse>, Status> {
        let started = Instant::now();
        let answer = request.extensions().get::<Arc<Charge>>().cloned();
        let result = self
            .0
            .mount(request.get_ref(), answer.as_deref())
            .await
            .map_err(|e| e.to_status());
        self.0.mounts.mount(match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        });
        self.0.observe("Mount", started, result)
    }
}

#[cfg(test)]
mod tests;
