//! mock-vault: an offline Azure Key Vault and Microsoft Entra emulator that the official
//! Azure SDKs accept unmodified, with TLS verified and challenge-resource checks left on.
//!
//! It is akv-bridge's test double and the backend of `akv-bridge dev`. Every key is real,
//! every token is checked, every identity has its own permissions, and faults (latency,
//! throttling, errors, resets, outages) can be injected on demand.
//!
//! # Layout
//!
//! - [`crypto`]: key material and Key Vault's cryptographic operations (pure).
//! - [`x509`]: certificates, the test CA, PKCS#12 and PEM bundles (pure).
//! - [`store`]: vault state (keys, secrets, certificates and versions) and the state file.
//! - [`identity`]: identities, permissions, tokens, client-assertion JWTs.
//! - [`fixture`]: the YAML/JSON seed file.
//! - [`api`], [`keys`], [`secrets`], [`certificates`]: the vault REST API;
//!   [`lifecycle`]: what the three share (versions, update, soft delete, recover, purge).
//! - [`entra`]: token, discovery and managed-identity endpoints.
//! - [`faults`], [`stats`]: fault injection, request counters and log.
//! - [`tls`]: test CA and server certificate, or operator-given PEM.
//! - [`state`]: what every connection and the control API share (vaults, identities,
//!   tokens, faults, statistics, persistence); it depends on none of the modules below.
//! - [`server`]: HTTPS serving, host routing, the challenge flow; [`control`]: the control API.
//!
//! Host names: each vault answers at `<name>.vault.localhost` (Managed HSM:
//! `<name>.managedhsm.localhost`) on the one HTTPS port, with token resource
//! `https://vault.localhost:<port>` (`https://managedhsm.localhost:<port>`); `localhost` and IP literals
//! reach the first vault; Entra is served on the same port (`https://localhost:PORT`).
//! Names under `.localhost` do not resolve everywhere: clients pin them to the bound address
//! (reqwest's `ClientBuilder::resolve`).

#![forbid(unsafe_code)]

pub mod api;
pub mod certificates;
pub mod control;
pub mod crypto;
pub mod entra;
pub mod faults;
pub mod fixture;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod secret;
pub mod secrets;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod tls;
pub mod token_proxy;
pub mod x509;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::api::ApiError;
use crate::certificates::Issuers;
pub use crate::faults::{FaultKind, FaultSpec, Scope};
pub use crate::fixture::Fixture;
pub use crate::identity::{Identity, VaultPermissions};
use crate::identity::{SaIssuer, TokenStore};
use crate::secret::SecretString;
use crate::server::{Shared, VaultMeta};
pub use crate::stats::{LogEntry, Snapshot};
use crate::store::{StateFile, Vault, VaultCell, VaultKind};

/// Name of the test CA that policies may name as issuer.
pub const TEST_CA_ISSUER: &str = "MockCA";

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum TlsSource {
    /// A fresh test CA and server certificate.
    #[default]
    Generate,
    /// PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// CA clients should trust (default: last certificate of the chain).
        ca: Option<PathBuf>,
    },
}

/// How to start the mock.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTPS address for the vaults and Entra (port 0 = any free port).
    pub listen: SocketAddr,
    /// Control API address; must be a loopback address.
    pub control_listen: SocketAddr,
    /// Seed content.
    pub fixture: Fixture,
    /// Keep vault content across restarts in this file (written 0600).
    pub state_file: Option<PathBuf>,
    /// TLS certificate source.
    pub tls: TlsSource,
    /// Write the CA PEM to this path (default: a file in a fresh temporary directory).
    pub ca_out: Option<PathBuf>,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// DNS suffix of vaults.
    pub vault_domain: String,
    /// DNS suffix of Managed HSMs.
    pub hsm_domain: String,
    /// Also serve AKS identity binding's token proxy ([`token_proxy`]).
    pub token_proxy: Option<TokenProxyConfig>,
}

/// Where and as which cluster the token proxy listens.
#[derive(Debug, Clone)]
pub struct TokenProxyConfig {
    /// HTTPS address (port 0 = any free port).
    pub listen: SocketAddr,
    /// The cluster id its API server certificate names.
    pub cluster_id: String,
}

impl Default for TokenProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_id: "mock-cluster".into(),
        }
    }
}

/// The token proxy, as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenProxyInfo {
    /// Its address.
    pub address: SocketAddr,
    /// `https://127.0.0.1:<port>`: the CSI provider's `--token-proxy-url`.
    pub url: String,
    /// The identity-binding TLS server name: the CSI provider's `--sni-name`.
    pub sni_name: String,
    /// The cluster id in its certificate.
    pub cluster_id: String,
    /// The cluster CA's PEM file (the service account's `ca.crt` in a pod).
    pub ca_pem_path: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: Fixture::default(),
            state_file: None,
            tls: TlsSource::Generate,
            ca_out: None,
            token_ttl: entra::DEFAULT_TOKEN_TTL,
            vault_domain: "vault.localhost".into(),
            hsm_domain: "managedhsm.localhost".into(),
            token_proxy: None,
        }
    }
}

/// One vault, as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct VaultInfo {
    /// Vault URL.
    pub url: String,
    /// `vault` or `managed-hsm`.
    pub kind: VaultKind,
    /// Token resource (the challenge's `resource`).
    pub resource: String,
}

/// Everything a client needs, printed as one JSON line at start.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Bound HTTPS address.
    pub address: SocketAddr,
    /// Vaults by name.
    pub vaults: BTreeMap<String, VaultInfo>,
    /// Host names to pin to `address` (they may not resolve).
    pub resolve: BTreeMap<String, SocketAddr>,
    /// Entra authority host (`AZURE_AUTHORITY_HOST`).
    pub authority_host: String,
    /// Default tenant.
    pub tenant_id: String,
    /// Default identity's client id.
    pub client_id: String,
    /// Default identity's client secret.
    pub client_secret: String,
    /// CA to trust (PEM file).
    pub ca_pem_path: PathBuf,
    /// Control API base URL.
    pub control_url: String,
    /// `IDENTITY_ENDPOINT` for App Service-style managed identity.
    pub identity_endpoint: String,
    /// `IDENTITY_HEADER` for it.
    pub identity_header: String,
    /// IMDS-style managed identity endpoint on this server.
    pub imds_endpoint: String,
    /// `iss` of the service-account tokens `POST /sa-tokens` makes.
    pub sa_token_issuer: String,
    /// The token proxy, when started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_proxy: Option<TokenProxyInfo>,
}

/// Errors starting the mock.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad fixture.
    #[error(transparent)]
    Fixture(#[from] fixture::FixtureError),
    /// Bad state file.
    #[error(transparent)]
    State(#[from] store::StateError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The control API must not be reachable from other hosts.
    #[error("the control API must listen on a loopback address, not {0}")]
    ControlNotLoopback(SocketAddr),
    /// Seeding the fixture failed.
    #[error("fixture: {0}")]
    Seed(String),
    /// Other I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running mock vault. Dropping it stops the servers (without waiting).
#[derive(Debug)]
pub struct MockVault {
    info: Arc<Info>,
    ca_pem: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _tmp: Option<Arc<TempDir>>,
}

/// A temporary directory removed on drop (holds the CA PEM by default).
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the mock: binds, seeds, and serves in the background of the current runtime.
pub async fn start(mut config: Config) -> Result<MockVault, StartError> {
    if !config.control_listen.ip().is_loopback() {
        return Err(StartError::ControlNotLoopback(config.control_listen));
    }
    config.fixture.normalise()?;
    let fixture = config.fixture.clone();
    let tenant = fixture.tenant.clone().unwrap_or_default();

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let address = listener.local_addr()?;
    let control = TcpListener::bind(config.control_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.control_listen,
            source,
        })?;
    let control_addr = control.local_addr()?;
    let port = address.port();
    let authority = format!("https://localhost:{port}");

    // Vault metadata and TLS names.
    let mut meta = BTreeMap::new();
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        format!("*.{}", config.vault_domain),
        format!("*.{}", config.hsm_domain),
    ];
    for v in &fixture.vaults {
        let domain = match v.kind {
            VaultKind::Vault => &config.vault_domain,
            VaultKind::ManagedHsm => &config.hsm_domain,
        };
        let host = format!("{}.{domain}", v.name.to_ascii_lowercase());
        names.push(host.clone());
        meta.insert(
            v.name.to_ascii_lowercase(),
            VaultMeta {
                kind: v.kind,
                url: format!("https://{host}:{port}"),
                // The port is part of the resource: Python's challenge check compares
                // host:port, and the Rust SDK compares host names only.
                resource: format!("https://{domain}:{port}"),
                host,
            },
        );
    }
    let tls = match &config.tls {
        TlsSource::Generate => tls::generate(&names)?,
        TlsSource::Files { cert, key, ca } => tls::from_files(cert, key, ca.as_deref())?,
    };
    let (ca_path, tmp) = match &config.ca_out {
        Some(p) => (p.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "mock-vault-{}-{}",
                std::process::id(),
                identity::random_token(6)
            ));
            std::fs::create_dir_all(&dir)?;
            (dir.join("ca.pem"), Some(Arc::new(TempDir(dir))))
        }
    };
    std::fs::write(&ca_path, &tls.ca_pem)?;

    // The token proxy: its own listener and its own (the cluster's) CA.
    let token_proxy = match &config.token_proxy {
        Some(tp) => {
            let listener =
                TcpListener::bind(tp.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: tp.listen,
                        source,
                    })?;
            let address = listener.local_addr()?;
            let cluster = Arc::new(token_proxy::Cluster::new(&tp.cluster_id));
            let material =
                tls::generate_with_ca("mock-vault cluster CA", &cluster.certificate_names())?;
            let ca_pem_path = ca_path.with_file_name("cluster-ca.pem");
            std::fs::write(&ca_pem_path, &material.ca_pem)?;
            let info = TokenProxyInfo {
                address,
                url: format!("https://127.0.0.1:{}", address.port()),
                sni_name: cluster.binding_name.clone(),
                cluster_id: cluster.id.clone(),
                ca_pem_path,
            };
            Some((listener, material, cluster, info))
        }
        None => None,
    };

    // Vault contents: the state file if it exists, else the fixture's seed.
    let restored = match &config.state_file {
        Some(p) => StateFile::load(p)?,
        None => None,
    };
    let test_ca =
        x509::TestCa::generate(TEST_CA_ISSUER).map_err(|e| StartError::Seed(e.to_string()))?;
    let issuers = Issuers {
        name: TEST_CA_ISSUER.to_owned(),
        ca: test_ca,
    };
    let mut vaults = BTreeMap::new();
    for vf in &fixture.vaults {
        let lower = vf.name.to_ascii_lowercase();
        let from_state = restored.as_ref().and_then(|r| {
            r.iter()
                .find(|v| v.name.eq_ignore_ascii_case(&vf.name))
                .cloned()
        });
        let vault = match from_state {
            Some(v) => v,
            None => seed_vault(vf, &tenant, &issuers, &meta)?,
        };
        vaults.insert(lower, VaultCell::new(vault));
    }

    let mut tenants = vec![tenant.clone()];
    for i in &fixture.identities {
        let t = i.tenant().to_owned();
        if !tenants.contains(&t) {
            tenants.push(t);
        }
    }
    for v in &fixture.vaults {
        if let Some(t) = &v.tenant
            && !tenants.contains(t)
        {
            tenants.push(t.clone());
        }
    }
    let default = fixture
        .identities
        .iter()
        .find(|i| i.client_secret.is_some())
        .or(fixture.identities.first());
    let sa_issuer_url = format!("{authority}/sa-issuer");
    let identity_header = SecretString::new(identity::random_token(16));
    let info = Arc::new(Info {
        address,
        vaults: meta
            .iter()
            .map(|(name, m)| {
                (
                    name.clone(),
                    VaultInfo {
                        url: m.url.clone(),
                        kind: m.kind,
                        resource: m.resource.clone(),
                    },
                )
            })
            .collect(),
        resolve: meta.values().map(|m| (m.host.clone(), address)).collect(),
        authority_host: authority.clone(),
        tenant_id: tenant.clone(),
        client_id: default.map(|i| i.client_id.clone()).unwrap_or_default(),
        client_secret: default
            .and_then(|i| i.client_secret.as_ref())
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
        ca_pem_path: ca_path,
        control_url: format!("http://{control_addr}"),
        identity_endpoint: format!("{authority}/msi/token"),
        identity_header: identity_header.expose().to_owned(),
        imds_endpoint: format!("{authority}/metadata/identity/oauth2/token"),
        sa_token_issuer: sa_issuer_url.clone(),
        token_proxy: token_proxy.as_ref().map(|(_, _, _, info)| info.clone()),
    });
    let default_vault = fixture
        .vaults
        .first()
        .map(|v| v.name.to_ascii_lowercase())
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        vaults,
        meta,
        default_vault,
        identities: RwLock::new(fixture.identities.clone()),
        tokens: Mutex::new(TokenStore::default()),
        faults: Mutex::new(faults::Faults::default()),
        stats: Mutex::new(stats::Stats::default()),
        authority,
        tenants,
        token_ttl: config.token_ttl,
        sa_issuer: SaIssuer::new(sa_issuer_url)
            .ok_or_else(|| StartError::Seed("cannot create the issuer key".into()))?,
        identity_header,
        issuers,
        region: fixture.region.clone().unwrap_or_else(|| "eastus".into()),
        state_file: config.state_file.clone(),
        persist_lock: Mutex::new(()),
    });
    if shared.state_file.is_some() {
        // Write the seeded state right away so a restart finds it.
        for cell in shared.vaults.values() {
            cell.write(|_| ());
        }
        shared.persist_if_dirty();
    }

    let (tx, rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(server::run_https(
            listener,
            Arc::clone(&tls.config),
            Arc::clone(&shared),
            server::Role::Vaults,
            rx.clone(),
        )),
        tokio::spawn(server::run_control(
            control,
            Arc::clone(&shared),
            Arc::clone(&info),
            rx.clone(),
        )),
    ];
    if let Some((listener, material, cluster, _)) = token_proxy {
        tasks.push(tokio::spawn(server::run_https(
            listener,
            material.config,
            Arc::clone(&shared),
            server::Role::TokenProxy(cluster),
            rx,
        )));
    }
    Ok(MockVault {
        info,
        ca_pem: tls.ca_pem,
        shared,
        shutdown: tx,
        tasks,
        _tmp: tmp,
    })
}

fn seed_vault(
    vf: &fixture::VaultFixture,
    default_tenant: &str,
    issuers: &Issuers,
    meta: &BTreeMap<String, VaultMeta>,
) -> Result<Vault, StartError> {
    let seed_err = |what: &str, name: &str, e: ApiError| {
        StartError::Seed(format!("{what} {name} in vault {}: {}", vf.name, e.message))
    };
    let tenant = vf.tenant.as_deref().unwrap_or(default_tenant);
    let mut vault = Vault::new(&vf.name, vf.kind, tenant);
    let base = meta
        .get(&vf.name.to_ascii_lowercase())
        .map(|m| m.url.clone())
        .unwrap_or_default();
    let principal = api::Principal::System;
    let body = Bytes::new();
    let ctx = api::Ctx {
        method: &Method::POST,
        segments: Vec::new(),
        query: Default::default(),
        body: &body,
        base: &base,
        vault: &vf.name,
        principal: &principal,
        region: "",
    };
    for k in &vf.keys {
        api::check_name(&k.name).map_err(|e| seed_err("key", &k.name, e))?;
        let req = keys::CreateKey {
            kty: k.kty.clone(),
            key_size: k.size,
            public_exponent: None,
            crv: k.crv.clone(),
            key_ops: k.key_ops.clone(),
            attributes: None,
            tags: None,
        };
        let spec = keys::spec_of(&req, vf.kind).map_err(|e| seed_err("key", &k.name, e))?;
        for i in 0..k.versions.max(1) {
            let mut kv = keys::new_version(spec, k.key_ops.clone())
                .map_err(|e| seed_err("key", &k.name, e))?;
            if i + 1 == k.versions.max(1) {
                kv.attributes.enabled = k.enabled;
            }
            backdate(&mut kv.attributes, k.versions.max(1) - 1 - i);
            keys::add_version(&mut vault, &ctx, &k.name, kv, None, k.tags.clone())
                .map_err(|e| seed_err("key", &k.name, e))?;
        }
    }
    for s in &vf.secrets {
        api::check_name(&s.name).map_err(|e| seed_err("secret", &s.name, e))?;
        let mut values: Vec<String> = s.values.clone();
        if let Some(v) = &s.value {
            values.push(v.clone());
        }
        if values.is_empty() {
            return Err(StartError::Seed(format!(
                "secret {} needs value or values",
                s.name
            )));
        }
        let count = values.len();
        for (i, value) in values.into_iter().enumerate() {
            let mut sv = secrets::new_version(
                SecretString::new(value),
                s.content_type.clone(),
                s.tags.clone(),
            );
            if i + 1 == count {
                sv.attributes.enabled = s.enabled;
            }
            backdate(
                &mut sv.attributes,
                u32::try_from(count - 1 - i).unwrap_or(u32::MAX),
            );
            secrets::add_version(&mut vault, &s.name, sv, false)
                .map_err(|e| seed_err("secret", &s.name, e))?;
        }
    }
    for c in &vf.certificates {
        api::check_name(&c.name).map_err(|e| seed_err("certificate", &c.name, e))?;
        let policy = certificates::normalise_policy(Some(&c.policy()), issuers)
            .map_err(|e| seed_err("certificate", &c.name, e))?;
        for _ in 0..c.versions.max(1) {
            certificates::issue_into(
                &mut vault,
                issuers,
                &c.name,
                &policy,
                None,
                Default::default(),
            )
            .map_err(|e| seed_err("certificate", &c.name, e))?;
        }
    }
    Ok(vault)
}

/// Seeded versions are created a second apart, oldest first, as if written over time:
/// clients that order versions by creation time (version history) see a stable order.
fn backdate(attributes: &mut store::Attributes, seconds_before_now: u32) {
    attributes.created -= i64::from(seconds_before_now);
    attributes.updated = attributes.created;
}

impl MockVault {
    /// Start-up information.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The CA PEM clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// URL of a vault.
    pub fn vault_url(&self, name: &str) -> Option<&str> {
        self.info
            .vaults
            .get(&name.to_ascii_lowercase())
            .map(|v| v.url.as_str())
    }

    /// Request counters.
    pub fn stats(&self) -> Snapshot {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()
    }

    /// Resets counters and the log.
    pub fn reset_stats(&self) {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reset();
    }

    /// The last `limit` requests.
    pub fn request_log(&self, limit: usize) -> Vec<LogEntry> {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .log(limit)
    }

    /// Installs a fault rule.
    pub fn add_fault(&self, spec: FaultSpec) -> Result<u64, faults::FaultError> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(spec)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Runs a vault REST call as an all-powerful caller (no auth, faults or counters), e.g.
    /// `admin("kv1", Method::POST, "/keys/k1/rotate", Value::Null)`.
    pub fn admin(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        self.shared
            .admin(vault, &method, path, query, bytes)
            .map(|r| r.body)
    }

    /// A service-account token from the mock's issuer for `subject`
    /// (`system:serviceaccount:<ns>:<name>`), audience `api://AzureADTokenExchange`.
    pub fn sa_token(&self, subject: &str, ttl: Duration) -> Option<String> {
        self.shared
            .sa_issuer
            .sign(subject, &[identity::WORKLOAD_AUDIENCE.to_owned()], ttl)
    }

    /// A service-account token from the mock's issuer for `subject` and `audiences` (for
    /// example [`token_proxy::BINDING_AUDIENCE`]).
    pub fn sa_token_for(&self, subject: &str, audiences: &[&str], ttl: Duration) -> Option<String> {
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
        self.shared.sa_issuer.sign(subject, &audiences, ttl)
    }

    /// Adds or replaces an identity.
    pub fn upsert_identity(&self, mut identity: Identity) {
        let tenant = self.info.tenant_id.clone();
        identity.normalise(&tenant);
        control::upsert_identity(&self.shared, identity);
    }

    /// Replaces an identity's permissions (takes effect on the next request).
    pub fn set_permissions(
        &self,
        identity: &str,
        perms: BTreeMap<String, VaultPermissions>,
    ) -> bool {
        control::set_permissions(&self.shared, identity, perms)
    }

    /// Expires every issued token.
    pub fn expire_tokens(&self) {
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expire_all();
    }

    /// Stops the servers and waits for in-flight requests (at most a few seconds).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.shared.persist_if_dirty();
    }
}

impl Drop for MockVault {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
