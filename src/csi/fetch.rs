//! Reading objects from Key Vault for mounts, through the shared cache.
//!
//! Each read goes through the official SDK clients (`SecretClient`, `CertificateClient`,
//! `KeyClient`) of the mount's [`Identity`], under a per-vault concurrency limit shared by
//! every mount and a deadline per read (the SDK's retries, which honour `Retry-After`,
//! included; an access token from Entra, when one is needed, too). Results are cached by
//! identity + vault + object + version:
//!
//! - an explicit version is immutable: kept `version_ttl`;
//! - `latest`, a version list, and a missing object (404): kept `latest_ttl`;
//! - any entry may answer for `stale_grace` more while Key Vault or Microsoft Entra is
//!   unavailable, throttling or too slow, or its certificate cannot be verified (never after
//!   a 401 or 403, nor when Entra rejects the credential).
//!
//! Identical concurrent reads (many pods of one Deployment mounting at once) share one
//! Key Vault request.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_security_keyvault_certificates::models::CertificateClientGetCertificateOptions;
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::KeyClientGetKeyOptions;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt as _;
use lru::LruCache;
use tokio::sync::Semaphore;

use crate::azure::keyvault::{self, CallPolicy, KvError, SetupError, bounded_call};
use crate::azure::upstream::Upstream;
use crate::azure::user_agent::UserAgentSuffix;
use crate::cache::{CoalescingCache, Fresh, Outcome};
use crate::csi::content::{CertValue, KeyValue, SecretValue, VaultObject};
use crate::csi::identity::{Identity, IdentityKey};
use crate::csi::params::ObjectKind;
use crate::observability::metrics::ServerMetrics;
use crate::secret::SecretString;

/// Clients and the credential they were built with.
type ClientsOf = (Arc<crate::azure::credential::Renewable>, Arc<VaultClients>);

/// Identity-and-vault pairs whose clients are kept (the identity cache holds 1,024
/// identities; most use one or two vaults).
const CLIENTS: usize = 4096;

/// The SDK clients of one identity for one vault.
pub struct VaultClients {
    secrets: SecretClient,
    certificates: CertificateClient,
    keys: KeyClient,
    /// One per client: set once a read through it has been authenticated by Key Vault.
    gates: Gates,
}

#[derive(Default)]
struct Gates {
    secrets: Gate,
    certificates: Gate,
    keys: Gate,
}

impl VaultClients {
    fn gate(&self, kind: ObjectKind) -> &Gate {
        match kind {
            ObjectKind::Secret => &self.gates.secrets,
            ObjectKind::Cert => &self.gates.certificates,
            ObjectKind::Key => &self.gates.keys,
        }
    }
}

/// The first read through a new client goes alone: each client learns Key Vault's
/// challenge (tenant, resource) from its first, unauthenticated request, so reads sent
/// together before then would each be answered 401 and sent again (a 50-object mount of a
/// new identity: 50 extra requests). The others wait for it within their own deadline; once
/// it has finished, whatever its answer, nobody waits again.
#[derive(Default)]
struct Gate {
    primed: std::sync::atomic::AtomicBool,
    first: tokio::sync::Mutex<()>,
}

impl Gate {
    /// Runs `read`, given what is left of `deadline`: at once when the client is primed,
    /// else alone (the first) or after the first finished (the others). The deadline covers
    /// the wait, so a read never takes longer than `deadline` in all.
    async fn run<T, F, Fut>(&self, deadline: Duration, read: F) -> Result<T, KvError>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<T, KvError>>,
    {
        use std::sync::atomic::Ordering;
        if self.primed.load(Ordering::Acquire) {
            return read(deadline).await;
        }
        let started = Instant::now();
        let Ok(first) = tokio::time::timeout(deadline, self.first.lock()).await else {
            return Err(KvError::DeadlineExceeded(deadline));
        };
        let left = deadline.saturating_sub(started.elapsed());
        if self.primed.load(Ordering::Acquire) {
            drop(first);
            return read(left).await;
        }
        let result = read(left).await;
        // Whatever the answer, the challenge was tried: the others go now, together
        // (during an outage each would otherwise wait behind one read in turn).
        self.primed.store(true, Ordering::Release);
        drop(first);
        result
    }
}

impl std::fmt::Debug for VaultClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClients")
            .field("vault", &self.secrets.endpoint().as_str())
            .finish_non_exhaustive()
    }
}

/// What a read found.
#[derive(Debug)]
pub enum Fetched {
    /// The object, with its version (the last segment of its Key Vault id).
    Object {
        /// Version.
        version: String,
        /// Contents.
        object: VaultObject,
    },
    /// The object does not exist (404).
    Missing,
    /// The object's enabled versions, newest first.
    Versions(Vec<String>),
    /// The vault's secrets (for selections), at most [`MAX_LISTED`]; `truncated` when the
    /// vault has more.
    Names {
        /// What the listing says of each secret.
        secrets: Vec<ListedSecret>,
        /// More than [`MAX_LISTED`] secrets: the listing stopped.
        truncated: bool,
    },
}

/// A secret as the vault's listing shows it: no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    /// Its name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Its tags.
    pub tags: std::collections::HashMap<String, String>,
}

/// The most secrets a selection's listing reads (1,000 pages of 25).
pub const MAX_LISTED: usize = 25_000;

/// How the cache and the reads behave.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Deadline, retries and challenge verification of each read.
    pub policy: CallPolicy,
    /// How long `latest`, version lists and 404s are reused.
    pub latest_ttl: Duration,
    /// How long explicit versions are reused.
    pub version_ttl: Duration,
    /// How long past its TTL an entry may answer during an outage.
    pub stale_grace: Duration,
    /// Bytes the cache may hold.
    pub max_bytes: usize,
    /// Entries the cache may hold.
    pub max_entries: usize,
    /// Appended to the `User-Agent` of every Key Vault request (`--custom-user-agent`).
    pub user_agent: UserAgentSuffix,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lookup {
    Latest,
    Version(String),
    Versions,
    /// Every secret of the vault (for selections).
    Names,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    identity: IdentityKey,
    vault_url: String,
    kind: ObjectKind,
    name: String,
    lookup: Lookup,
}

/// Reads objects for mounts. Shared by every mount.
pub struct Fetcher {
    cache: Arc<CoalescingCache<CacheKey, Arc<Fetched>, KvError>>,
    limits: Mutex<LruCache<String, Arc<Semaphore>>>,
    /// SDK clients by identity and vault URL, with the credential they were built on: an
    /// identity resolved anew (a new credential) gets new clients.
    clients: Mutex<LruCache<(IdentityKey, String), ClientsOf>>,
    http: reqwest::Client,
    config: FetchConfig,
    metrics: ServerMetrics,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.cache)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The version in a Key Vault object id: `https://<vault>/<collection>/<name>/<version>`.
fn id_version(id: Option<&str>) -> Option<String> {
    let url = url::Url::parse(id?).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [_, _, version] => Some((*version).to_owned()),
        _ => None,
    }
}

/// Bytes a fetched entry holds (what the cache counts).
pub(crate) fn weight(fetched: &Fetched) -> usize {
    let bytes = match fetched {
        Fetched::Object { object, version } => {
            version.len()
                + match object {
                    VaultObject::Secret(s) => {
                        s.value.len() + s.content_type.as_ref().map_or(0, String::len)
                    }
                    VaultObject::Cert(c) => c.der.len(),
                    VaultObject::Key(k) => [&k.n, &k.e, &k.x, &k.y]
                        .iter()
                        .map(|v| v.as_ref().map_or(0, Vec::len))
                        .sum(),
                }
        }
        Fetched::Missing => 0,
        Fetched::Versions(v) => v.iter().map(String::len).sum(),
        Fetched::Names { secrets, .. } => secrets
            .iter()
            .map(|s| {
                s.name.len()
                    + 16
                    + s.tags
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 16)
                        .sum::<usize>()
            })
            .sum(),
    };
    // Key, bookkeeping and allocation overhead.
    bytes + 128
}

impl Fetcher {
    /// A fetcher sending through `http`.
    pub fn new(http: reqwest::Client, config: FetchConfig, metrics: ServerMetrics) -> Self {
        Self {
            cache: Arc::new(CoalescingCache::new(config.max_entries, config.max_bytes)),
            limits: Mutex::new(LruCache::new(
                NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            )),
            clients: Mutex::new(LruCache::new(
                NonZeroUsize::new(CLIENTS).unwrap_or(NonZeroUsize::MIN),
            )),
            http,
            config,
            metrics,
        }
    }

    /// Entries and bytes in the cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        (self.cache.len(), self.cache.weight())
    }

    fn limit(&self, vault_url: &str) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = limits.get(vault_url) {
            return Arc::clone(l);
        }
        let l = Arc::new(Semaphore::new(self.config.policy.max_concurrency.max(1)));
        limits.put(vault_url.to_owned(), Arc::clone(&l));
        l
    }

    /// Options of `identity`'s Key Vault clients: the transport, the call policy, and the
    /// credential's renewal on a rejected token.
    fn client_options(&self, identity: &Identity) -> ClientOptions {
        let mut options =
            keyvault::client_options(self.http.clone(), &self.config.policy, Upstream::KeyVault);
        options.per_try_policies.push(identity.credential.policy());
        options
            .per_call_policies
            .push(self.config.user_agent.policy());
        options
    }

    fn clients(&self, identity: &Identity, vault_url: &str) -> Result<Arc<VaultClients>, KvError> {
        let key = (identity.key, vault_url.to_owned());
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((credential, c)) = clients.get(&key)
            && Arc::ptr_eq(credential, &identity.credential)
        {
            return Ok(Arc::clone(c));
        }
        let verify = Some(self.config.policy.verify_challenge_resource);
        let setup = |e: azure_core::Error| {
            KvError::unavailable(
                SetupError::VaultUrl {
                    url: vault_url.to_owned(),
                    reason: e.to_string(),
                }
                .to_string(),
            )
        };
        let credential: Arc<dyn TokenCredential> = identity.credential.clone();
        let built = Arc::new(VaultClients {
            secrets: SecretClient::new(
                vault_url,
                Arc::clone(&credential),
                Some(SecretClientOptions {
                    client_options: self.client_options(identity),
                    verify_challenge_resource: verify,
                    ..SecretClientOptions::default()
                }),
            )
            .map_err(setup)?,
            certificates: CertificateClient::new(
                vault_url,
                Arc::clone(&credential),
                Some(CertificateClientOptions {
                    client_options: self.client_options(identity),
                    verify_challenge_resource: verify,
                    ..CertificateClientOptions::default()
                }),
            )
            .map_err(setup)?,
            keys: KeyClient::new(
                vault_url,
                credential,
                Some(KeyClientOptions {
                    client_options: self.client_options(identity),
                    verify_challenge_resource: verify,
                    ..KeyClientOptions::default()
                }),
            )
            .map_err(setup)?,
            gates: Gates::default(),
        });
        clients.put(key, (Arc::clone(&identity.credential), Arc::clone(&built)));
        Ok(built)
    }

    /// One object: `version` `None` is the latest.
    pub async fn object(
        &self,
        identity: &Identity,
        vault_url: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
    ) -> (Result<Arc<Fetched>, KvError>, Outcome) {
        let lookup = match version {
            Some(v) => Lookup::Version(v.to_owned()),
            None => Lookup::Latest,
        };
        self.lookup(identity, vault_url, kind, name, lookup).await
    }

    /// Whether the newest version of an object is cached and fresh (no request needed).
    pub fn is_fresh(
        &self,
        identity: &Identity,
        vault_url: &str,
        kind: ObjectKind,
        name: &str,
    ) -> bool {
        self.cache
            .peek(&CacheKey {
                identity: identity.key,
                vault_url: vault_url.to_owned(),
                kind,
                name: name.to_owned(),
                lookup: Lookup::Latest,
            })
            .is_some()
    }

    /// The vault's secrets, names and tags only (needs `secrets/list`), shared by every
    /// selection of the identity for `--latest-cache-ttl`.
    pub async fn secret_names(
        &self,
        identity: &Identity,
        vault_url: &str,
    ) -> (Result<Arc<Fetched>, KvError>, Outcome) {
        self.lookup(identity, vault_url, ObjectKind::Secret, "", Lookup::Names)
            .await
    }

    /// The object's enabled versions, newest first (needs the `list` permission).
    pub async fn versions(
        &self,
        identity: &Identity,
        vault_url: &str,
        kind: ObjectKind,
        name: &str,
    ) -> (Result<Arc<Fetched>, KvError>, Outcome) {
        self.lookup(identity, vault_url, kind, name, Lookup::Versions)
            .await
    }

    async fn lookup(
        &self,
        identity: &Identity,
        vault_url: &str,
        kind: ObjectKind,
        name: &str,
        lookup: Lookup,
    ) -> (Result<Arc<Fetched>, KvError>, Outcome) {
        let clients = match self.clients(identity, vault_url) {
            Ok(c) => c,
            Err(e) => return (Err(e), Outcome::Miss),
        };
        let key = CacheKey {
            identity: identity.key,
            vault_url: vault_url.to_owned(),
            kind,
            name: name.to_owned(),
            lookup: lookup.clone(),
        };
        let limit = self.limit(vault_url);
        let deadline = self.config.policy.deadline;
        let ttl = match lookup {
            Lookup::Version(_) => self.config.version_ttl,
            Lookup::Latest | Lookup::Versions | Lookup::Names => self.config.latest_ttl,
        };
        let latest_ttl = self.config.latest_ttl;
        let stale_grace = self.config.stale_grace;
        let metrics = self.metrics.clone();
        let name = name.to_owned();
        let (result, outcome) = self
            .cache
            .get_or_fetch(key, move || async move {
                let started = Instant::now();
                let operation = match (&lookup, kind) {
                    (Lookup::Versions, _) => "list_versions",
                    (Lookup::Names, _) => "list_secrets",
                    (_, ObjectKind::Secret) => "get_secret",
                    (_, ObjectKind::Cert) => "get_certificate",
                    (_, ObjectKind::Key) => "get_key",
                };
                let result = clients
                    .gate(kind)
                    .run(deadline, |left| {
                        read(&clients, &limit, left, kind, &name, &lookup)
                    })
                    .await;
                let failure = result.as_ref().err().map(KvError::metric_labels);
                let object_type = match kind {
                    ObjectKind::Secret => "secret",
                    ObjectKind::Cert => "cert",
                    ObjectKind::Key => "key",
                };
                metrics.keyvault_object(operation, object_type, &name, failure, started.elapsed());
                let (fetched, ttl) = match result {
                    Ok(f) => (f, ttl),
                    Err(KvError::NotFound(_)) => (Fetched::Missing, latest_ttl),
                    Err(e) => return Err(e),
                };
                let weight = weight(&fetched);
                Ok(Fresh {
                    value: Arc::new(fetched),
                    ttl,
                    stale_grace,
                    weight,
                })
            })
            .await;
        self.metrics.cache(outcome.label());
        let (entries, _) = self.cache_usage();
        self.metrics
            .cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        (result, outcome)
    }
}

/// One Key Vault read.
async fn read(
    clients: &VaultClients,
    limit: &Semaphore,
    deadline: Duration,
    kind: ObjectKind,
    name: &str,
    lookup: &Lookup,
) -> Result<Fetched, KvError> {
    let version = match lookup {
        Lookup::Version(v) => Some(v.clone()),
        Lookup::Latest => None,
        Lookup::Versions => return list_versions(clients, limit, deadline, kind, name).await,
        Lookup::Names => return list_secrets(clients, limit, deadline).await,
    };
    let what = match &version {
        Some(v) => format!("{} {name}/{v}", kind.as_str()),
        None => format!("{} {name}", kind.as_str()),
    };
    let unversioned =
        || KvError::unavailable(format!("Key Vault returned {what} without a version"));
    match kind {
        ObjectKind::Secret => {
            let options = SecretClientGetSecretOptions {
                secret_version: version,
                ..Default::default()
            };
            let secret = bounded_call(limit, deadline, "secrets/get", &what, async {
                clients
                    .secrets
                    .get_secret(name, Some(options))
                    .await?
                    .into_model()
            })
            .await?;
            let version = id_version(secret.id.as_deref()).ok_or_else(unversioned)?;
            let value = SecretValue {
                value: SecretString::from(secret.value.unwrap_or_default()),
                content_type: secret.content_type,
                backs_certificate: secret.kid.is_some_and(|k| !k.is_empty()),
            };
            Ok(Fetched::Object {
                version,
                object: VaultObject::Secret(value),
            })
        }
        ObjectKind::Cert => {
            let options = CertificateClientGetCertificateOptions {
                certificate_version: version,
                ..Default::default()
            };
            let cert = bounded_call(limit, deadline, "certificates/get", &what, async {
                clients
                    .certificates
                    .get_certificate(name, Some(options))
                    .await?
                    .into_model()
            })
            .await?;
            let version = id_version(cert.id.as_deref()).ok_or_else(unversioned)?;
            Ok(Fetched::Object {
                version,
                object: VaultObject::Cert(CertValue {
                    der: cert.cer.unwrap_or_default(),
                }),
            })
        }
        ObjectKind::Key => {
            let options = KeyClientGetKeyOptions {
                key_version: version,
                ..Default::default()
            };
            let key = bounded_call(limit, deadline, "keys/get", &what, async {
                clients
                    .keys
                    .get_key(name, Some(options))
                    .await?
                    .into_model()
            })
            .await?;
            let jwk = key.key.unwrap_or_default();
            let version = id_version(jwk.kid.as_deref()).ok_or_else(unversioned)?;
            Ok(Fetched::Object {
                version,
                object: VaultObject::Key(KeyValue {
                    kty: jwk.kty.map(|k| k.to_string()).unwrap_or_default(),
                    n: jwk.n,
                    e: jwk.e,
                    crv: jwk.crv.map(|c| c.to_string()),
                    x: jwk.x,
                    y: jwk.y,
                }),
            })
        }
    }
}

/// `(version, enabled, created)` of each listed version.
type VersionRow = (Option<String>, bool, Option<i64>);

async fn list_versions(
    clients: &VaultClients,
    limit: &Semaphore,
    deadline: Duration,
    kind: ObjectKind,
    name: &str,
) -> Result<Fetched, KvError> {
    let what = format!("{} {name}", kind.as_str());
    // The three clients' version listings differ only in types: one body for all.
    macro_rules! rows {
        ($permission:literal, $pager:expr, $id:ident) => {
            bounded_call(limit, deadline, $permission, &what, async {
                let items: Vec<_> = $pager?.try_collect().await?;
                Ok(items
                    .iter()
                    .map(|p| {
                        let a = p.attributes.as_ref();
                        (
                            id_version(p.$id.as_deref()),
                            a.and_then(|a| a.enabled).unwrap_or(true),
                            a.and_then(|a| a.created).map(|t| t.unix_timestamp()),
                        )
                    })
                    .collect::<Vec<VersionRow>>())
            })
            .await?
        };
    }
    let rows = match kind {
        ObjectKind::Secret => rows!(
            "secrets/list",
            clients.secrets.list_secret_properties_versions(name, None),
            id
        ),
        ObjectKind::Cert => rows!(
            "certificates/list",
            clients
                .certificates
                .list_certificate_properties_versions(name, None),
            id
        ),
        ObjectKind::Key => rows!(
            "keys/list",
            clients.keys.list_key_properties_versions(name, None),
            kid
        ),
    };
    Ok(Fetched::Versions(newest_enabled(rows)))
}

/// Every secret of the vault, up to [`MAX_LISTED`] (the listing pages through the vault:
/// Key Vault cannot filter by name or tag).
async fn list_secrets(
    clients: &VaultClients,
    limit: &Semaphore,
    deadline: Duration,
) -> Result<Fetched, KvError> {
    let (secrets, truncated) = bounded_call(
        limit,
        deadline,
        "secrets/list",
        "the vault's secrets",
        async {
            let mut pager = clients.secrets.list_secret_properties(None)?;
            let mut secrets = Vec::new();
            while let Some(p) = pager.try_next().await? {
                if secrets.len() == MAX_LISTED {
                    return Ok((secrets, true));
                }
                let Some(name) = id_name(p.id.as_deref()) else {
                    continue;
                };
                secrets.push(ListedSecret {
                    name,
                    enabled: p
                        .attributes
                        .as_ref()
                        .and_then(|a| a.enabled)
                        .unwrap_or(true),
                    tags: p.tags.unwrap_or_default(),
                });
            }
            Ok((secrets, false))
        },
    )
    .await?;
    Ok(Fetched::Names { secrets, truncated })
}

/// The name in an object id without version (`https://kv.vault.azure.net/secrets/db`).
fn id_name(id: Option<&str>) -> Option<String> {
    let url = url::Url::parse(id?).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [_, name] => Some((*name).to_owned()),
        _ => None,
    }
}

/// Enabled versions, newest first (by creation time, then version for a stable order).
fn newest_enabled(rows: Vec<VersionRow>) -> Vec<String> {
    let mut enabled: Vec<(i64, String)> = rows
        .into_iter()
        .filter_map(|(version, enabled, created)| {
            enabled.then_some((created.unwrap_or(0), version?))
        })
        .collect();
    enabled.sort_by(|a, b| b.cmp(a));
    enabled.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_ids() {
        assert_eq!(
            id_version(Some("https://kv.vault.azure.net/secrets/db/0123abc")).as_deref(),
            Some("0123abc")
        );
        assert_eq!(
            id_version(Some("https://kv.vault.azure.net/secrets/db")),
            None
        );
        assert_eq!(id_version(Some("not a url")), None);
        assert_eq!(id_version(None), None);
    }

    #[test]
    fn newest_enabled_versions_first() {
        let rows = vec![
            (Some("a".into()), true, Some(10)),
            (Some("b".into()), false, Some(30)),
            (Some("c".into()), true, Some(20)),
            (None, true, Some(40)),
        ];
        assert_eq!(newest_enabled(rows), vec!["c".to_owned(), "a".to_owned()]);
    }
}
