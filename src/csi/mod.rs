//! The Secrets Store CSI Driver provider (`akv-bridge csi`): a drop-in for
//! Azure/secrets-store-csi-driver-provider-azure.
//!
//! - [`params`] (pure): the driver's `MountRequest` (attributes, secrets, permission,
//!   objects YAML) parsed into typed, validated values, including every file path.
//! - [`content`] (pure): fetched Key Vault objects turned into the files the Go provider
//!   writes (PFX to PEM with the chain ordered, public keys as PKIX PEM, decodings, JSON
//!   keys).
//! - [`identity`]: the identity a mount reads as, and the rule that keeps one pod's
//!   credentials and cached data away from another identity.
//! - [`fetch`]: Key Vault reads through the shared, coalescing cache.
//! - [`service`]: the gRPC service (`Version`, `Mount`) and its error mapping.
//! - `cloud_env`: custom clouds' environment files, read only where the operator allows.
//! - [`token_proxy`]: AKS identity binding's token proxy (`useAzureTokenProxy`).
//! - here: `prepare`, `serve`, `run`.

pub(crate) mod cloud_env;
pub(crate) mod content;
pub(crate) mod fetch;
pub(crate) mod identity;
pub(crate) mod params;
pub mod probe;
pub(crate) mod service;
pub(crate) mod token_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::UnixListener;

use crate::azure::cloud::Cloud;
use crate::azure::keyvault::{self, CallPolicy, TransportConfig};
use crate::azure::user_agent::UserAgentSuffix;
use crate::cli::CsiArgs;
use crate::csi::cloud_env::CloudEnvFiles;
use crate::csi::content::ProviderOptions;
use crate::csi::fetch::{FetchConfig, Fetcher};
use crate::csi::identity::Identities;
use crate::csi::params::{MountCloud, ParseOptions};
use crate::csi::service::{CsiService, MountConfig, Provider, VaultUrls};
use crate::csi::token_proxy::{TokenProxy, TokenProxyConfig};
use crate::observability::go_metrics::GoCsiMetrics;
use crate::observability::metrics::{GoCompat, MountMetrics, ServerMetrics};
use crate::proto::csi_v1alpha1 as pb;
use crate::server::process::{self, Served, Shell, ShellError, StopSignal};
use crate::socket::{self, SocketAddress};

/// Largest request accepted: attributes (with tokens), secrets and objects are bounded by
/// the parser well below this.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Identities (and their credentials and clients) kept.
const IDENTITIES: usize = 1024;

/// Why the provider did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CsiStartError {
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] keyvault::SetupError),
    /// The socket address is invalid.
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// The socket or a listener could not be bound.
    #[error(transparent)]
    Shell(#[from] ShellError),
}

fn vault_urls(template: Option<&str>) -> Result<VaultUrls, CsiStartError> {
    let Some(template) = template else {
        return Ok(VaultUrls::Cloud);
    };
    let bad =
        |why: &str| CsiStartError::Config(format!("--vault-url-template {template:?}: {why}"));
    if template.matches("{name}").count() != 1 {
        return Err(bad("must contain {name} once"));
    }
    let sample =
        url::Url::parse(&template.replace("{name}", "kv")).map_err(|e| bad(&e.to_string()))?;
    if sample.scheme() != "https" {
        return Err(bad("must use https"));
    }
    if !matches!(sample.path(), "" | "/") || sample.query().is_some() {
        return Err(bad("must have no path or query"));
    }
    Ok(VaultUrls::Template(
        template.trim_end_matches('/').to_owned(),
    ))
}

/// `--cloud-name`, checked as the Go provider checks it at start-up (an empty or unknown
/// name stops the provider; `AzureStackCloud` needs its environment file, read already).
fn default_cloud(name: &str, envs: &CloudEnvFiles) -> Result<MountCloud, CsiStartError> {
    if name.trim().is_empty() {
        return Err(CsiStartError::Config(
            "--cloud-name is empty: expected AzurePublicCloud, AzureUSGovernmentCloud or \
             AzureChinaCloud"
                .to_owned(),
        ));
    }
    if name.trim().eq_ignore_ascii_case("AzureStackCloud") {
        if !envs.has_default() {
            return Err(CsiStartError::Config(
                "--cloud-name AzureStackCloud needs the environment file: set \
                 --cloud-env-file or AZURE_ENVIRONMENT_FILEPATH"
                    .to_owned(),
            ));
        }
        return Ok(MountCloud::Custom { env_file: None });
    }
    Cloud::parse(name)
        .map(MountCloud::Azure)
        .map_err(|e| CsiStartError::Config(format!("--cloud-name: {e}")))
}

/// Builds the provider's shared state from its flags.
pub fn prepare(args: &CsiArgs, registry: &mut Registry) -> Result<Arc<Provider>, CsiStartError> {
    let cloud_envs = CloudEnvFiles::new(
        args.cloud_env_dir.as_deref(),
        args.cloud_env_file.as_deref(),
    )
    .map_err(CsiStartError::Config)?;
    let default_cloud = default_cloud(&args.cloud_name, &cloud_envs)?;
    if args.enable_pprof {
        tracing::warn!(
            pprof_port = args.pprof_port,
            "--enable-pprof is accepted for compatibility with the Go provider, but \
             akv-bridge has no Go pprof: no profile endpoint is served"
        );
    }
    let vault_urls = vault_urls(args.vault_url_template.as_deref())?;
    if let Some(authority) = &args.authority_host {
        let ok = url::Url::parse(authority).is_ok_and(|u| u.scheme() == "https");
        if !ok {
            return Err(CsiStartError::Config(format!(
                "--authority-host {authority:?} must be an https URL"
            )));
        }
    }
    let http = keyvault::http_client(&TransportConfig {
        ca_bundle: args.trust.ca_bundle.clone(),
        connect_addr: args.vault_connect_addr,
        // Every vault and Entra host: their names come with each mount.
        pinned_host: None,
    })?;
    let policy = CallPolicy {
        deadline: args.keyvault_timeout,
        max_retries: args.keyvault_max_retries,
        max_concurrency: args.keyvault_concurrency,
        verify_challenge_resource: !args.insecure_skip_challenge_resource_verification,
    };
    let token_proxy = TokenProxy::new(&TokenProxyConfig {
        url: args.token_proxy_url.clone(),
        sni_name: args.sni_name.clone(),
        ca_file: args.token_proxy_ca_file.clone(),
        api_server: TokenProxyConfig::api_server_from_env(),
    })
    .map_err(|e| CsiStartError::Config(e.to_string()))?;
    tracing::debug!(
        token_proxy = %token_proxy.url(),
        ca_file = ?token_proxy.ca_file(),
        "identity binding (useAzureTokenProxy) token proxy"
    );
    let identities = Identities::new(
        IDENTITIES,
        http.clone(),
        CallPolicy {
            deadline: args.keyvault_timeout.max(Duration::from_secs(10)),
            ..policy.clone()
        },
        args.authority_host.clone(),
        Arc::new(token_proxy),
    )
    .map_err(|e| CsiStartError::Config(e.to_string()))?;
    let go_metrics = GoCsiMetrics::register(registry);
    let csi_registry = registry.sub_registry_with_prefix("akv_bridge_csi");
    let metrics = ServerMetrics::register(csi_registry).with_go(GoCompat::Csi(go_metrics));
    let mounts = MountMetrics::register(csi_registry);
    metrics.precreate(
        &["Version", "Mount"],
        &[
            "get_secret",
            "get_certificate",
            "get_key",
            "list_versions",
            "list_secrets",
        ],
    );
    mounts.precreate();
    let fetcher = Fetcher::new(
        http,
        FetchConfig {
            policy,
            latest_ttl: args.latest_cache_ttl,
            version_ttl: args.version_cache_ttl,
            stale_grace: args.stale_if_error,
            max_bytes: args.cache_max_bytes,
            max_entries: args.cache_max_entries,
            user_agent: UserAgentSuffix::new(&args.custom_user_agent)
                .map_err(|e| CsiStartError::Config(e.to_string()))?,
        },
        metrics.clone(),
    );
    metrics.healthy.set(1);
    Ok(Arc::new(Provider::new(
        identities,
        fetcher,
        MountConfig {
            provider: ProviderOptions {
                construct_pem_chain: args.construct_pem_chain,
                write_cert_and_key_in_separate_files: args.write_cert_and_key_in_separate_files,
            },
            vault_urls,
            timeout: args.mount_timeout,
            concurrency: args.mount_concurrency,
            failover_hold: args.failover_hold,
            params: ParseOptions {
                strict: args.strict_parameters,
                default_cloud,
            },
            cloud_envs,
        },
        metrics,
        mounts,
    )))
}

/// The socket server's policy for the provider: the driver keeps one connection and sends
/// one Mount per volume; requests are at most [`MAX_REQUEST`]. The call timeout is above
/// the mount deadline, so the mount's own, clearer error answers first.
pub const LIMITS: crate::server::Limits = crate::server::Limits {
    max_message: MAX_REQUEST,
    call_timeout: Duration::from_secs(150),
    byte_budget: 32 * 1024 * 1024,
    stream_window: 256 * 1024,
    connection_window: 512 * 1024,
    ..crate::server::Limits::COMMON
};

/// Serves the provider (and `grpc.health.v1`) on `listener` until `shutdown` resolves.
/// `rewrite_authority` puts the [`crate::authority`] layer in front of tonic.
pub async fn serve(
    listener: UnixListener,
    provider: Arc<Provider>,
    rewrite_authority: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), std::convert::Infallible> {
    let metrics = provider.connection_metrics();
    let health_service = tonic_health::pb::health_server::HealthServer::new(CheckOnly);
    let service =
        pb::csi_driver_provider_server::CsiDriverProviderServer::new(CsiService(provider))
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(service::MAX_RESPONSE_BYTES + 64 * 1024);
    let routes = tonic::service::Routes::new(health_service).add_service(service);
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

/// The standard `grpc.health.v1.Health`, `Check` only: the provider is serving whenever
/// it answers. `Watch` would hold a stream (and a connection) open for ever, so it answers
/// `UNIMPLEMENTED`, which the protocol tells clients not to retry.
struct CheckOnly;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for CheckOnly {
    async fn check(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        use tonic::server::NamedService as _;
        let provider = <pb::csi_driver_provider_server::CsiDriverProviderServer<CsiService>>::NAME;
        match request.get_ref().service.as_str() {
            "" => {}
            name if name == provider => {}
            _ => return Err(tonic::Status::not_found("service not registered")),
        }
        Ok(tonic::Response::new(
            tonic_health::pb::HealthCheckResponse {
                status: tonic_health::pb::health_check_response::ServingStatus::Serving.into(),
            },
        ))
    }

    type WatchStream =
        futures::stream::Empty<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "Watch is not served (it would hold a stream open for ever); use Check",
        ))
    }
}

/// The provider in the process shell: liveness and readiness are a new client's
/// `Version` over the socket, as the driver calls it.
impl Served for Provider {
    const NAME: &'static str = "CSI provider";
    const IN_FLIGHT: &'static str = "mounts";
    const LIVENESS_CALL: &'static str = "Version";

    async fn liveness_call(channel: tonic::transport::Channel) -> bool {
        let mut client = pb::csi_driver_provider_client::CsiDriverProviderClient::new(channel);
        client
            .version(pb::VersionRequest {
                version: service::API_VERSION.to_owned(),
            })
            .await
            .is_ok()
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    async fn serve(self: Arc<Self>, listener: UnixListener, rewrite: bool, stop: StopSignal) {
        let Ok(()) = serve(listener, self, rewrite, stop).await;
    }
}

/// The whole provider process: prepare, then run in the shell until `shutdown`.
pub async fn run(
    args: CsiArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CsiStartError> {
    let address = SocketAddress::parse(&args.endpoint)?;
    let mut registry = Registry::default();
    let provider = prepare(&args, &mut registry)?;
    let shell = Shell {
        address,
        socket_mode: args.socket.socket_mode,
        healthz_addr: SocketAddr::new(args.healthz_bind_address, args.healthz_port),
        healthz_path: args.healthz_path.clone(),
        readyz_path: args.readyz_path.clone(),
        metrics_addr: SocketAddr::new(args.metrics_bind_address, args.prometheus_port),
        healthz_timeout: args.healthz_timeout,
        shutdown_grace: args.shutdown_grace,
        rewrite_authority: args.h2_authority_rewrite,
    };
    Ok(process::run(shell, provider, Arc::new(registry), shutdown).await?)
}
