//! The KMS v2 plugin: `prepare` resolves configuration (no Key Vault call: start-up never
//! depends on Key Vault), `serve` answers kube-apiserver on a Unix socket, `run` is the
//! whole process, with the key ring's maintainer resolving the key in the background.

pub(crate) mod audit;
pub(crate) mod backend;
pub(crate) mod cache;
pub mod envelope;
pub(crate) mod keyring;
pub(crate) mod service;
pub mod wrap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::UnixListener;

use crate::azure::azure_json::{AzureJson, WorkloadIdentityEnv};
use crate::azure::credential;
use crate::azure::environment::AzureJsonCloud;
use crate::azure::key::{KeyRef, KeyVersion};
use crate::azure::keyvault::{self, CallPolicy, KeyVault, TransportConfig};
use crate::azure::proxy::Proxy;
use crate::azure::upstream::Upstream;
use crate::cli::KmsArgs;
use crate::kms::cache::DecryptCache;
use crate::kms::keyring::KeyRing;
use crate::kms::service::{Kms, ServiceConfig, V1, V2};
use crate::observability::go_metrics::GoKmsMetrics;
use crate::observability::metrics::{GoCompat, KeyMetrics, ServerMetrics};
use crate::proto::{kms_v1beta1, kms_v2};
use crate::server::process::{self, Served, Shell, ShellError, StopSignal};
use crate::socket::{self, SocketAddress};

/// Largest gRPC message accepted: KMS requests are at most a few KiB (1 KiB ciphertext,
/// 32 KiB of annotations); anything larger is refused before it is buffered further.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why the plugin did not start or stopped. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum KmsStartError {
    /// A flag is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// azure.json or credential set-up failed.
    #[error("identity: {0}")]
    Identity(String),
    /// The Key Vault client could not be built.
    #[error(transparent)]
    Setup(#[from] keyvault::SetupError),
    /// The socket address is invalid.
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// The socket or a listener could not be bound.
    #[error(transparent)]
    Shell(#[from] ShellError),
}

/// A prepared plugin: the key ring (with its poller not yet started) and the services.
#[derive(Debug)]
pub struct Prepared {
    /// The key ring.
    pub ring: Arc<KeyRing>,
    /// The services' shared state.
    pub kms: Arc<Kms>,
}

/// Resolves configuration and builds the Key Vault client and the services. Makes no Key
/// Vault call: the key is resolved and checked by the ring's maintainer
/// ([`KeyRing::spawn_maintainer`]), which [`run`] starts once the socket is bound.
pub async fn prepare(args: &KmsArgs, registry: &mut Registry) -> Result<Prepared, KmsStartError> {
    if args.key_name.is_empty() {
        return Err(KmsStartError::Config("--key-name is required".into()));
    }
    let pinned = match args.key_version.as_str() {
        "" => None,
        v => Some(KeyVersion::parse(v).ok_or_else(|| {
            KmsStartError::Config(format!(
                "--key-version {v:?} is not a Key Vault key version"
            ))
        })?),
    };
    if let Some(ignored) = &args.config_file_path_deprecated {
        tracing::warn!(
            ignored = %ignored.display(),
            used = %args.config_file_path.display(),
            "--configFilePath is deprecated and ignored, as Azure/kubernetes-kms ignores it; \
             --config-file-path names the azure.json read"
        );
    }
    let azure_json = AzureJson::load(&args.config_file_path)
        .map_err(|e| KmsStartError::Identity(e.to_string()))?;
    // Azure Stack Hub: the environment file names Entra and the vault suffix.
    // Azure Stack Hub: its environment file names Entra and the vault suffix.
    let cloud = AzureJsonCloud::resolve(
        &azure_json.cloud,
        args.azure_environment_filepath.as_deref(),
    )
    .map_err(KmsStartError::Config)?;
    if let (AzureJsonCloud::Custom(custom), Some(file)) = (&cloud, &args.azure_environment_filepath)
    {
        tracing::info!(cloud = %custom.name, file = %file.display(), "custom cloud from its environment file");
    }
    let vault_url = match &args.vault_url {
        Some(url) => normalise_vault_url(url)?,
        None if args.keyvault_name.is_empty() => {
            return Err(KmsStartError::Config(
                "--keyvault-name (or --vault-url) is required".into(),
            ));
        }
        None => cloud
            .vault_url(&args.keyvault_name, args.managed_hsm)
            .map_err(|e| KmsStartError::Config(e.to_string()))?,
    };
    let workload = args
        .azure_federated_token_file
        .as_ref()
        .map(|file| WorkloadIdentityEnv {
            client_id: args.azure_client_id.clone(),
            tenant_id: args.azure_tenant_id.clone(),
            token_file: file.clone(),
        });
    let source = azure_json
        .credential_source(workload)
        .map_err(|e| KmsStartError::Identity(e.to_string()))?;
    let proxy = if args.proxy_mode {
        let proxy = Proxy::new(&args.proxy_address, args.proxy_port)
            .map_err(|e| KmsStartError::Config(e.to_string()))?;
        if proxy.is_loopback() {
            tracing::info!(proxy = %proxy.base(), "proxy mode: Entra and Key Vault requests go through the proxy");
        } else {
            tracing::warn!(
                proxy = %proxy.base(),
                "proxy mode with a proxy off this machine: tokens and key operations cross the network unencrypted to it"
            );
        }
        Some(proxy)
    } else {
        None
    };
    let http = match &proxy {
        Some(proxy) => proxy.http_client()?,
        None => keyvault::http_client(&TransportConfig {
            ca_bundle: args.trust.ca_bundle.clone(),
            connect_addr: args.vault_connect_addr,
            pinned_host: url_host(&vault_url),
        })?,
    };
    let policy = CallPolicy {
        deadline: args.keyvault_timeout,
        max_retries: args.keyvault_max_retries,
        max_concurrency: args.keyvault_concurrency,
        verify_challenge_resource: !args.insecure_skip_challenge_resource_verification,
    };
    let authority = args
        .authority_host
        .clone()
        .unwrap_or_else(|| cloud.authority_host().to_owned());
    // Token requests get their own, longer deadline: Entra can be slower than Key Vault.
    let credential_policy = CallPolicy {
        deadline: Duration::from_secs(30),
        ..policy.clone()
    };
    let credential = {
        let (source, authority, http) = (source.clone(), authority.clone(), http.clone());
        let proxy = proxy.clone();
        credential::Renewable::new(move || {
            let mut options =
                keyvault::client_options(http.clone(), &credential_policy, Upstream::Entra);
            if let Some(proxy) = &proxy {
                options.per_try_policies.push(proxy.policy(Upstream::Entra));
            }
            credential::build(&source, &authority, options)
        })
        .map_err(|e| KmsStartError::Identity(e.to_string()))?
    };
    let mut vault_options = keyvault::client_options(http, &policy, Upstream::KeyVault);
    vault_options.per_try_policies.push(credential.policy());
    // Last before the transport: everything above sees the real URL.
    if let Some(proxy) = &proxy {
        vault_options
            .per_try_policies
            .push(proxy.policy(Upstream::KeyVault));
    }
    let key = KeyRef::new(&vault_url, &args.key_name);
    let kv = KeyVault::new(key, credential, vault_options, &policy)?;

    let go_metrics = GoKmsMetrics::register(registry);
    let kms_registry = registry.sub_registry_with_prefix("akv_bridge_kms");
    let key_metrics = KeyMetrics::register(kms_registry);
    let server_metrics = ServerMetrics::register(kms_registry).with_go(GoCompat::Kms(go_metrics));
    server_metrics.precreate(
        &["v2.Status", "v2.Encrypt", "v2.Decrypt"],
        &["encrypt", "decrypt"],
    );
    let ring = Arc::new(KeyRing::new(
        Arc::new(kv),
        pinned,
        args.remote_encrypt,
        key_metrics.clone(),
    ));
    tracing::info!(
        vault = %vault_url,
        key = %args.key_name,
        pinned = args.key_version.as_str(),
        identity = %source.describe(),
        wrap = if args.remote_encrypt { "keyvault" } else { "local" },
        status_version = args.status_version.as_str(),
        "KMS plugin configured"
    );
    let cache = Arc::new(DecryptCache::new(
        args.decrypt_cache_size,
        args.decrypt_cache_ttl,
    ));
    let status_version = match args.status_version.as_str() {
        service::STATUS_VERSION_V2 => service::STATUS_VERSION_V2,
        _ => service::STATUS_VERSION_V2BETA1,
    };
    let kms = Arc::new(Kms::new(
        Arc::clone(&ring),
        cache,
        server_metrics,
        key_metrics,
        ServiceConfig { status_version },
    ));
    Ok(Prepared { ring, kms })
}

fn normalise_vault_url(url: &str) -> Result<String, KmsStartError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| KmsStartError::Config(format!("--vault-url {url:?}: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(KmsStartError::Config(format!(
            "--vault-url {url:?} must use https"
        )));
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(KmsStartError::Config(format!(
            "--vault-url {url:?} must have no path or query"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn url_host(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.host_str().map(str::to_owned)
}

/// The socket server's policy for the plugin: kube-apiserver keeps one connection and
/// calls with a 3 s deadline; requests are at most [`MAX_MESSAGE`].
pub const LIMITS: crate::server::Limits = crate::server::Limits {
    max_connections: 128,
    max_message: MAX_MESSAGE,
    message_timeout: Duration::from_secs(5),
    call_budget: 16 * 1024 * 1024,
    max_concurrent_streams: 256,
    ..crate::server::Limits::COMMON
};

/// Serves both API versions on `listener` until `shutdown` resolves, then drains.
/// `rewrite_authority` puts the [`crate::authority`] layer in front of tonic.
pub async fn serve(
    listener: UnixListener,
    kms: Arc<Kms>,
    rewrite_authority: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), std::convert::Infallible> {
    let metrics = kms.connection_metrics();
    let v2 = kms_v2::key_management_service_server::KeyManagementServiceServer::new(V2(
        Arc::clone(&kms),
    ))
    .max_decoding_message_size(MAX_MESSAGE);
    let v1 = kms_v1beta1::key_management_service_server::KeyManagementServiceServer::new(V1(kms))
        .max_decoding_message_size(MAX_MESSAGE);
    let routes = tonic::service::Routes::new(v2).add_service(v1);
    crate::server::serve(
        listener,
        routes,
        LIMITS,
        rewrite_authority,
        metrics,
        shutdown,
    )
    .await
}

/// The plugin in the process shell: liveness is a new client's v2 `Status` (any answer:
/// liveness never depends on Key Vault); readiness adds the key ring's.
struct Plugin {
    kms: Arc<Kms>,
    ring: Arc<KeyRing>,
}

impl Served for Plugin {
    const NAME: &'static str = "KMS plugin";
    const IN_FLIGHT: &'static str = "calls";
    const LIVENESS_CALL: &'static str = "Status";

    async fn liveness_call(channel: tonic::transport::Channel) -> bool {
        let mut client =
            kms_v2::key_management_service_client::KeyManagementServiceClient::new(channel);
        client.status(kms_v2::StatusRequest {}).await.is_ok()
    }

    fn ready(&self) -> Result<(), String> {
        self.ring.ready()
    }

    async fn serve(self: Arc<Self>, listener: UnixListener, rewrite: bool, stop: StopSignal) {
        let Ok(()) = serve(listener, Arc::clone(&self.kms), rewrite, stop).await;
    }
}

/// The whole plugin process: prepare, start the key ring's maintainer, run in the shell
/// until `shutdown`, then stop the maintainer and flush the audit log.
pub async fn run(
    args: KmsArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), KmsStartError> {
    let address = SocketAddress::parse(&args.listen_addr)?;
    let mut registry = Registry::default();
    let prepared = prepare(&args, &mut registry).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintainer = prepared
        .ring
        .spawn_maintainer(args.key_poll_interval, stop_rx);
    let shell = Shell {
        address,
        socket_mode: args.socket.socket_mode,
        healthz_addr: SocketAddr::new(args.healthz_bind_address, args.healthz_port),
        healthz_path: args.healthz_path.clone(),
        readyz_path: args.readyz_path.clone(),
        metrics_addr: args.metrics_addr,
        healthz_timeout: args.healthz_timeout,
        shutdown_grace: args.shutdown_grace,
        rewrite_authority: args.h2_authority_rewrite,
    };
    let plugin = Arc::new(Plugin {
        kms: Arc::clone(&prepared.kms),
        ring: Arc::clone(&prepared.ring),
    });
    let result = process::run(shell, plugin, Arc::new(registry), shutdown).await;
    let _ = stop_tx.send(true);
    let _ = maintainer.await;
    prepared.kms.flush_audit().await;
    Ok(result?)
}
