//! Command-line flags. The KMS flags keep Azure/kubernetes-kms's names and defaults, so a
//! manifest that runs it runs akv-bridge with only the image changed; every flag can also
//! come from an `AKV_BRIDGE_…` environment variable (the `AZURE_…` workload-identity and
//! authority variables keep their usual names).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

pub mod go;

/// Parses the flags of one command (`kms`, `csi`, …) given without the program and command
/// names, with the settings `main` gives that command (a repeated flag overrides the
/// earlier one, as Go's flag package does). For `dev` and the tests, which start the servers
/// in-process from the same flags an operator would write.
pub fn parse_flags<A, I, T>(command: &'static str, flags: I) -> Result<A, clap::Error>
where
    A: Args + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cmd = A::augment_args(
        clap::Command::new(command)
            .no_binary_name(true)
            .args_override_self(true),
    );
    A::from_arg_matches_mut(&mut cmd.try_get_matches_from(flags)?)
}

/// Flags of `akv-bridge probe csi`.
#[derive(Debug, Args)]
pub struct ProbeCsiArgs {
    /// The provider's socket: a path, `unix:///path` or `unix:///@abstract`.
    #[arg(
        long,
        default_value = "unix:///var/run/secrets-store-csi-providers/azure.sock"
    )]
    pub socket: String,
    /// The SecretProviderClass (YAML, `secrets-store.csi.x-k8s.io/v1`): its
    /// `spec.parameters` become the Mount attributes.
    #[arg(long)]
    pub spc: PathBuf,
    /// A service-account token for audience `api://AzureADTokenExchange` (workload identity),
    /// sent as `csi.storage.k8s.io/serviceAccount.tokens` the way the driver sends it.
    #[arg(long)]
    pub pod_token: Option<PathBuf>,
    /// The `nodePublishSecretRef` Secret's data: a YAML or JSON map, or a Kubernetes Secret
    /// manifest (`data` base64, `stringData` plain).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Pod name sent as `csi.storage.k8s.io/pod.name`.
    #[arg(long, default_value = "probe")]
    pub pod_name: String,
    /// Pod namespace sent as `csi.storage.k8s.io/pod.namespace`.
    #[arg(long, default_value = "default")]
    pub pod_namespace: String,
    /// Service account sent as `csi.storage.k8s.io/serviceAccount.name`.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Default file mode (octal), sent as the request's `permission`.
    #[arg(long, default_value = "0644", value_parser = parse_file_mode)]
    pub permission: u32,
    /// Write the returned files under this directory (as the driver would); without it the
    /// files are only listed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Timeout of the Mount call.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `akv-bridge csi`. The Go provider's flags keep their names and defaults.
#[derive(Debug, Clone, Args)]
pub struct CsiArgs {
    /// gRPC endpoint: `unix:///path` (deployed as
    /// `/var/run/secrets-store-csi-providers/azure.sock`).
    #[arg(
        long,
        env = "AKV_BRIDGE_CSI_ENDPOINT",
        default_value = "unix:///tmp/azure.sock"
    )]
    pub endpoint: String,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Port of the health endpoints.
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_PORT", default_value_t = 8989)]
    pub healthz_port: u16,
    /// Liveness path (the gRPC server answers `Version` over the socket).
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_PATH", default_value = "/healthz")]
    pub healthz_path: String,
    /// Readiness path.
    #[arg(long, env = "AKV_BRIDGE_READYZ_PATH", default_value = "/readyz")]
    pub readyz_path: String,
    /// Address the health endpoints bind (all interfaces: kubelet probes the pod IP).
    #[arg(
        long,
        env = "AKV_BRIDGE_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub healthz_bind_address: std::net::IpAddr,
    /// Timeout of the liveness self-check over the socket.
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub healthz_timeout: Duration,
    #[command(flatten)]
    pub metrics: MetricsBackendArgs,
    /// Port of the Prometheus `/metrics` endpoint (all interfaces).
    #[arg(long, env = "AKV_BRIDGE_PROMETHEUS_PORT", default_value_t = 8898)]
    pub prometheus_port: u16,
    /// Address the metrics endpoint binds.
    #[arg(
        long,
        env = "AKV_BRIDGE_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub metrics_bind_address: std::net::IpAddr,
    /// Order a certificate's PEM chain leaf to root.
    #[arg(long, env = "AKV_BRIDGE_CONSTRUCT_PEM_CHAIN", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub construct_pem_chain: bool,
    /// Also write `<name>.crt` and `<name>.key` beside a certificate's PEM.
    #[arg(long, env = "AKV_BRIDGE_WRITE_CERT_AND_KEY_IN_SEPARATE_FILES", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub write_cert_and_key_in_separate_files: bool,
    #[command(flatten)]
    pub log: LogArgs,
    /// Text appended to the `User-Agent` of Key Vault requests (after `akv-bridge/<version>`),
    /// as the Go provider appends it: printable ASCII, at most 256 bytes.
    #[arg(long, env = "AKV_BRIDGE_CUSTOM_USER_AGENT", default_value = "")]
    pub custom_user_agent: String,
    /// The cloud of a SecretProviderClass without `cloudName`: AzurePublicCloud,
    /// AzureUSGovernmentCloud or AzureChinaCloud (case-insensitive; also AzureCloud and
    /// AzureUSGovernment), or AzureStackCloud with `--cloud-env-file`. Checked at
    /// start-up, as the Go provider does.
    #[arg(
        long,
        env = "AKV_BRIDGE_CLOUD_NAME",
        default_value = "AzurePublicCloud"
    )]
    pub cloud_name: String,
    /// The directory `cloudEnvFileName` (custom clouds, `cloudName: AzureStackCloud`) may
    /// name files in, symbolic links resolved. Unset: `cloudEnvFileName` is refused. Only
    /// the operator should be able to write there.
    #[arg(long, env = "AKV_BRIDGE_CLOUD_ENV_DIR")]
    pub cloud_env_dir: Option<PathBuf>,
    /// The default custom cloud environment file (go-autorest JSON), read at start-up: for
    /// `--cloud-name=AzureStackCloud` and for `AzureStackCloud` mounts without
    /// `cloudEnvFileName`. Read from `AZURE_ENVIRONMENT_FILEPATH` as go-autorest does.
    #[arg(long, env = "AZURE_ENVIRONMENT_FILEPATH")]
    pub cloud_env_file: Option<PathBuf>,
    /// Refuse a mount whose objects have a key that is not an object field, naming it.
    /// Off: such keys are ignored, as the Go provider ignores them, with a warning and
    /// `akv_bridge_csi_unknown_parameters_total`.
    #[arg(long, env = "AKV_BRIDGE_STRICT_PARAMETERS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub strict_parameters: bool,
    /// Accepted for compatibility with the Go provider, which serves Go's pprof on
    /// `localhost:<pprof-port>`. akv-bridge has no pprof: nothing is served, and a warning
    /// says so at start-up.
    #[arg(long, env = "AKV_BRIDGE_ENABLE_PPROF", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub enable_pprof: bool,
    /// Accepted with `--enable-pprof`; no port is opened.
    #[arg(long, env = "AKV_BRIDGE_PPROF_PORT", default_value_t = 6060)]
    pub pprof_port: u16,
    /// AKS identity binding (`useAzureTokenProxy`): the token proxy's URL, as in the Go
    /// provider. Empty: `https://kubernetes.default.svc.cluster.local` (the API server).
    #[arg(long, env = "AKV_BRIDGE_TOKEN_PROXY_URL", default_value = "")]
    pub token_proxy_url: String,
    /// AKS identity binding: the TLS server name of the token proxy, as in the Go provider.
    /// Empty: computed from the API server's certificate at the first such mount.
    #[arg(long, env = "AKV_BRIDGE_SNI_NAME", default_value = "")]
    pub sni_name: String,
    /// AKS identity binding: the CA the token proxy's certificate is verified with, re-read
    /// on each token request. Unset: the service account's `ca.crt` if the pod has one (as
    /// in the Go provider), else the system roots.
    #[arg(long, env = "AKV_BRIDGE_TOKEN_PROXY_CA_FILE")]
    pub token_proxy_ca_file: Option<PathBuf>,
    /// Entra authority host for every mount (default: the mount's cloud's).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    /// Vault URL for a `keyvaultName`, `{name}` replaced (default: from the mount's
    /// `cloudName`, e.g. `https://{name}.vault.azure.net`). For private clouds and the
    /// local mock.
    #[arg(long, env = "AKV_BRIDGE_VAULT_URL_TEMPLATE")]
    pub vault_url_template: Option<String>,
    /// Connect every Key Vault and Entra host name to this address instead of resolving it.
    #[arg(long, env = "AKV_BRIDGE_VAULT_CONNECT_ADDR")]
    pub vault_connect_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Do not require the Key Vault challenge's resource to match the vault's domain.
    #[arg(
        long,
        env = "AKV_BRIDGE_INSECURE_SKIP_CHALLENGE_RESOURCE_VERIFICATION",
        default_value_t = false
    )]
    pub insecure_skip_challenge_resource_verification: bool,
    /// Deadline of one Key Vault read, retries (and their `Retry-After` waits) included.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub keyvault_timeout: Duration,
    /// Retries of a Key Vault read (429, 5xx, connection errors), within its deadline.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_MAX_RETRIES", default_value_t = 5)]
    pub keyvault_max_retries: u32,
    /// Concurrent Key Vault requests per vault, all mounts together: a cold 50-object mount
    /// goes out in one round trip.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_CONCURRENCY", default_value_t = 64)]
    pub keyvault_concurrency: usize,
    /// Deadline of a whole Mount (kubelet gives the driver about 2 minutes).
    #[arg(long, env = "AKV_BRIDGE_MOUNT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub mount_timeout: Duration,
    /// Objects of one mount fetched in parallel.
    #[arg(long, env = "AKV_BRIDGE_MOUNT_CONCURRENCY", default_value_t = 64)]
    pub mount_concurrency: usize,
    /// How long a `latest` lookup (and a version list) is reused, for every pod of the same
    /// identity. Keep it well under the driver's rotation poll interval (2m).
    #[arg(long, env = "AKV_BRIDGE_LATEST_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub latest_cache_ttl: Duration,
    /// How long an explicit object version (immutable) is reused. Also bounds how long an
    /// identity whose access was revoked is still served what it read before.
    #[arg(long, env = "AKV_BRIDGE_VERSION_CACHE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub version_cache_ttl: Duration,
    /// How long past its TTL a cached object may still be served while Key Vault or
    /// Microsoft Entra is unreachable or throttling (never after a 401/403, nor when Entra
    /// rejects the credential). 0 turns it off.
    #[arg(long, env = "AKV_BRIDGE_STALE_IF_ERROR", default_value = "10m", value_parser = parse_duration)]
    pub stale_if_error: Duration,
    /// Bytes of object content the cache may hold.
    #[arg(long, env = "AKV_BRIDGE_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: usize,
    /// Entries the cache may hold.
    #[arg(long, env = "AKV_BRIDGE_CACHE_MAX_ENTRIES", default_value_t = 8192)]
    pub cache_max_entries: usize,
    /// Accept the socket path older gRPC-Go clients (driver before v1.6.0) send as
    /// HTTP/2 `:authority`, by rewriting it to `localhost` in front of the server.
    #[arg(long, env = "AKV_BRIDGE_H2_AUTHORITY_REWRITE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub h2_authority_rewrite: bool,
    /// Time allowed to drain in-flight mounts on SIGTERM.
    #[arg(long, env = "AKV_BRIDGE_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After a vault is found unreachable or throttling, how long objects that have a
    /// `failoverKeyvaultName` skip it: a fresh cached copy still answers, else the failover
    /// vault does, without waiting out the vault's deadline first. 0 turns it off.
    #[arg(long, env = "AKV_BRIDGE_FAILOVER_HOLD", default_value = "30s", value_parser = parse_duration)]
    pub failover_hold: Duration,
}

/// Flags of `akv-bridge probe kms`.
#[derive(Debug, Args)]
pub struct ProbeKmsArgs {
    /// The plugin's socket: a path, `unix:///path` or `unix:///@abstract`.
    #[arg(long, default_value = "unix:///opt/azurekms.socket")]
    pub socket: String,
    /// Also run the API server's envelope (HKDF seed expansion + AES-256-GCM) on a sample
    /// Secret and show the `k8s:enc:kms:v2:<name>:` value.
    #[arg(long)]
    pub envelope: bool,
    /// Provider name used in the envelope prefix.
    #[arg(long, default_value = "azurekmsprovider")]
    pub provider_name: String,
    /// Timeout of each call (the API server uses 3 s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Replay a restarted API server with this store file (JSON lines, created 0600):
    /// Status and Encrypt, read every record earlier runs wrote, then write and append one
    /// more. Fails if any stored record no longer reads.
    #[arg(long, conflicts_with = "envelope")]
    pub store: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `akv-bridge kms`.
#[derive(Debug, Clone, Args)]
pub struct KmsArgs {
    /// gRPC listen address: `unix:///path` or `unix:///@abstract-name`.
    #[arg(
        long,
        env = "AKV_BRIDGE_LISTEN_ADDR",
        default_value = "unix:///opt/azurekms.socket"
    )]
    pub listen_addr: String,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Key Vault (or Managed HSM) name.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_NAME", default_value = "")]
    pub keyvault_name: String,
    /// Name of the key that wraps the API server's seeds.
    #[arg(long, env = "AKV_BRIDGE_KEY_NAME", default_value = "")]
    pub key_name: String,
    /// Pin this key version (as Azure/kubernetes-kms does). Empty: follow the newest
    /// enabled version (automatic rotation).
    #[arg(long, env = "AKV_BRIDGE_KEY_VERSION", default_value = "")]
    pub key_version: String,
    /// The vault is a Managed HSM.
    #[arg(long, env = "AKV_BRIDGE_MANAGED_HSM", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub managed_hsm: bool,
    /// Vault URL, instead of the one derived from `--keyvault-name` and the cloud (custom
    /// clouds, private endpoints under another name, the local mock).
    #[arg(long, env = "AKV_BRIDGE_VAULT_URL")]
    pub vault_url: Option<String>,
    /// Connect to this address for the vault's host name instead of resolving it (like
    /// `curl --resolve`).
    #[arg(long, env = "AKV_BRIDGE_VAULT_CONNECT_ADDR")]
    pub vault_connect_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Entra authority host (default: the cloud's).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    /// Do not require the Key Vault challenge's resource to match the vault's domain.
    /// Needed only when `--vault-url` names a host outside the resource's domain (a loopback
    /// mock, a private endpoint with another name). TLS stays verified.
    #[arg(
        long,
        env = "AKV_BRIDGE_INSECURE_SKIP_CHALLENGE_RESOURCE_VERIFICATION",
        default_value_t = false
    )]
    pub insecure_skip_challenge_resource_verification: bool,
    /// The cloud provider configuration (azure.json) with the identity to use.
    #[arg(
        long,
        env = "AKV_BRIDGE_CONFIG_FILE_PATH",
        default_value = "/etc/kubernetes/azure.json"
    )]
    pub config_file_path: PathBuf,
    /// Azure/kubernetes-kms's deprecated `--configFilePath`: accepted and ignored, as the
    /// Go plugin ignores it (it reads `--config-file-path`); a warning says so.
    #[arg(long = "configFilePath", hide = true, value_name = "PATH")]
    pub config_file_path_deprecated: Option<PathBuf>,
    /// Workload identity: client id (`AZURE_CLIENT_ID`).
    #[arg(long, env = "AZURE_CLIENT_ID", hide = true)]
    pub azure_client_id: Option<String>,
    /// Workload identity: tenant id (`AZURE_TENANT_ID`).
    #[arg(long, env = "AZURE_TENANT_ID", hide = true)]
    pub azure_tenant_id: Option<String>,
    /// Workload identity: projected token file (`AZURE_FEDERATED_TOKEN_FILE`).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE", hide = true)]
    pub azure_federated_token_file: Option<PathBuf>,
    /// Azure Stack Hub: the cloud environment file read when azure.json says
    /// `cloud: AzureStackCloud` (`AZURE_ENVIRONMENT_FILEPATH`, as the Go plugin reads it).
    #[arg(long, env = "AZURE_ENVIRONMENT_FILEPATH", hide = true)]
    pub azure_environment_filepath: Option<PathBuf>,
    /// Port of the health endpoints.
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_PORT", default_value_t = 8787)]
    pub healthz_port: u16,
    /// Liveness path (never calls Key Vault).
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_PATH", default_value = "/healthz")]
    pub healthz_path: String,
    /// Readiness path (a key version is resolved, the start-up round trip passed and Key
    /// Vault is reachable).
    #[arg(long, env = "AKV_BRIDGE_READYZ_PATH", default_value = "/readyz")]
    pub readyz_path: String,
    /// Address the health endpoints bind. The default, all interfaces, is the Go plugin's:
    /// its static pod runs with `hostNetwork` and kubelet probes the node's address. Our
    /// manifests pass `127.0.0.1` and probe that.
    #[arg(
        long,
        env = "AKV_BRIDGE_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub healthz_bind_address: std::net::IpAddr,
    /// Timeout of the liveness self-check over the socket.
    #[arg(long, env = "AKV_BRIDGE_HEALTHZ_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub healthz_timeout: Duration,
    #[command(flatten)]
    pub metrics: MetricsBackendArgs,
    /// Metrics address: a port (all interfaces, as Azure/kubernetes-kms) or `host:port`.
    #[arg(long, env = "AKV_BRIDGE_METRICS_ADDR", default_value = "8095", value_parser = parse_listen)]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub log: LogArgs,
    /// How often to read the key's metadata: picks up rotation, refreshes health.
    #[arg(long, env = "AKV_BRIDGE_KEY_POLL_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub key_poll_interval: Duration,
    /// Deadline of one Key Vault operation, retries included (inside the API server's 3 s).
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_TIMEOUT", default_value = "2500ms", value_parser = parse_duration)]
    pub keyvault_timeout: Duration,
    /// Retries of a Key Vault operation (429, 5xx, connection errors), within the deadline.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_MAX_RETRIES", default_value_t = 3)]
    pub keyvault_max_retries: u32,
    /// Concurrent Key Vault requests.
    #[arg(long, env = "AKV_BRIDGE_KEYVAULT_CONCURRENCY", default_value_t = 32)]
    pub keyvault_concurrency: usize,
    /// Plaintext seeds kept by the decrypt cache.
    #[arg(long, env = "AKV_BRIDGE_DECRYPT_CACHE_SIZE", default_value_t = 10_000)]
    pub decrypt_cache_size: usize,
    /// How long a decrypted seed stays cached (the API server keeps its own for 24 h).
    #[arg(long, env = "AKV_BRIDGE_DECRYPT_CACHE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub decrypt_cache_ttl: Duration,
    /// Accept the socket path older gRPC-Go clients (kube-apiserver before late 2024) send
    /// as HTTP/2 `:authority`, by rewriting it to `localhost` in front of the server.
    #[arg(long, env = "AKV_BRIDGE_H2_AUTHORITY_REWRITE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub h2_authority_rewrite: bool,
    /// Time allowed to drain in-flight calls on SIGTERM.
    #[arg(long, env = "AKV_BRIDGE_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Wrap every seed with Key Vault's `encrypt` operation, so each wrap shows in Key
    /// Vault's own logs. By default seeds are wrapped locally with the key version's public
    /// key (the same RSA-OAEP-256 Key Vault computes): no Key Vault call, and Encrypt keeps
    /// working while Key Vault is down.
    #[arg(long, env = "AKV_BRIDGE_REMOTE_ENCRYPT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub remote_encrypt: bool,
    /// Azure/kubernetes-kms's proxy mode: send every Entra and Key Vault request, in plain
    /// HTTP, to the proxy at `--proxy-address:--proxy-port`, which forwards it by the
    /// `x-azure-proxy-target` header.
    #[arg(long, env = "AKV_BRIDGE_PROXY_MODE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub proxy_mode: bool,
    /// The proxy's host or IP (proxy mode).
    #[arg(long, env = "AKV_BRIDGE_PROXY_ADDRESS", default_value = "")]
    pub proxy_address: String,
    /// The proxy's port (proxy mode).
    #[arg(long, env = "AKV_BRIDGE_PROXY_PORT", default_value_t = 7788)]
    pub proxy_port: u16,
    /// The `version` Status reports: `v2beta1` (what Azure/kubernetes-kms reports; every
    /// kube-apiserver from 1.27 accepts it) or `v2` (accepted from 1.29 only).
    #[arg(long, env = "AKV_BRIDGE_STATUS_VERSION", default_value = "v2beta1", value_parser = ["v2beta1", "v2"])]
    pub status_version: String,
}

// Flags `kms` and `csi` share word for word (name, env var, default, help, parser), each
// declared once and flattened into both where it stood, so `--help` keeps its order. The
// other flags both have (`--healthz-*`, `--readyz-path`, `--vault-connect-addr`,
// `--authority-host`, `--keyvault-*`, `--h2-authority-rewrite`, `--shutdown-grace`, ...)
// differ in default or help, and stay with their command.

/// `--socket-mode`, shared by `kms` and `csi`.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Permissions of the socket file (octal).
    #[arg(long, env = "AKV_BRIDGE_SOCKET_MODE", default_value = "0600", value_parser = parse_mode)]
    pub socket_mode: u32,
}

/// `--metrics-backend`, shared by `kms` and `csi`.
#[derive(Debug, Clone, Args)]
pub struct MetricsBackendArgs {
    /// Metrics backend (only `prometheus`, in any case: the Go provider's default is
    /// `Prometheus`).
    #[arg(long, env = "AKV_BRIDGE_METRICS_BACKEND", default_value = "prometheus", value_parser = ["prometheus"], ignore_case = true)]
    pub metrics_backend: String,
}

/// `--ca-bundle`, shared by `kms` and `csi`.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// PEM bundle of CAs to trust for Key Vault and Entra instead of the system roots.
    #[arg(long, env = "AKV_BRIDGE_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

/// Logging flags, shared by `kms` and `csi`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log JSON lines.
    #[arg(long, env = "AKV_BRIDGE_LOG_FORMAT_JSON", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = go::parse_bool, action = clap::ArgAction::Set)]
    pub log_format_json: bool,
    /// Log verbosity, on the Go original's scale: `kms` as Azure/kubernetes-kms (0-3 info,
    /// 4-5 debug, 6+ trace), `csi` as the provider-azure's klog (0-1 info, 2-4 debug, 5+
    /// trace).
    #[arg(short = 'v', long = "v", env = "AKV_BRIDGE_V", default_value_t = 0)]
    pub verbosity: u8,
}

/// The flags that point `kms` or `csi` at a stand-in for Key Vault and Entra (mock-vault,
/// for `dev`, the benchmarks and the tests): connect every vault and authority host name
/// to `connect`, trust `ca_bundle`, and use `authority_host` for Entra. Each caller adds
/// its vault URL flag (`--vault-url` or `--vault-url-template`) and the rest.
pub fn mock_vault_flags(
    connect: SocketAddr,
    ca_bundle: &std::path::Path,
    authority_host: &str,
) -> Vec<String> {
    vec![
        format!("--vault-connect-addr={connect}"),
        format!("--ca-bundle={}", ca_bundle.display()),
        format!("--authority-host={authority_host}"),
    ]
}

/// Parses `90s`, `5m`, `2500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 90s or 5m: {e}"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode like 0600"))?;
    if mode > 0o777 {
        return Err(format!("{s:?} has bits beyond 0777"));
    }
    if mode & 0o007 != 0 {
        return Err(format!("{s:?} would let any local user reach the socket"));
    }
    Ok(mode)
}

fn parse_file_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{s:?} is not an octal file mode like 0644")),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim().strip_prefix(':').unwrap_or(s.trim());
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is neither a port nor host:port"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn kms(args: &[&str]) -> Result<KmsArgs, clap::Error> {
        parse_flags("kms", args)
    }

    #[test]
    fn go_plugin_flags_parse_with_their_defaults() {
        let a = kms(&[
            "--keyvault-name=kv-prod",
            "--key-name=kek",
            "--key-version=0123456789abcdef0123456789abcdef",
            "--managed-hsm=false",
            "--log-format-json",
            "-v=2",
            "--healthz-timeout=20s",
            "--metrics-backend=prometheus",
            "--metrics-addr=8095",
        ])
        .unwrap();
        assert_eq!(a.listen_addr, "unix:///opt/azurekms.socket");
        assert_eq!(
            a.config_file_path,
            PathBuf::from("/etc/kubernetes/azure.json")
        );
        assert_eq!(a.healthz_port, 8787);
        assert_eq!(a.healthz_path, "/healthz");
        assert!(a.log.log_format_json);
        assert!(!a.managed_hsm);
        assert_eq!(a.log.verbosity, 2);
        assert_eq!(a.metrics_addr, "0.0.0.0:8095".parse().unwrap());
        assert_eq!(a.socket.socket_mode, 0o600);
        assert_eq!(a.key_poll_interval, Duration::from_secs(60));
    }

    fn csi(args: &[&str]) -> Result<CsiArgs, clap::Error> {
        parse_flags("csi", args)
    }

    #[test]
    fn go_provider_flags_parse_with_their_defaults() {
        let a = csi(&[]).unwrap();
        assert_eq!(a.endpoint, "unix:///tmp/azure.sock");
        assert_eq!((a.healthz_port, a.prometheus_port), (8989, 8898));
        assert_eq!(a.healthz_path, "/healthz");
        assert!(a.construct_pem_chain && !a.write_cert_and_key_in_separate_files);
        let a = csi(&[
            "--endpoint=unix:///provider/azure.sock",
            "--construct-pem-chain=false",
            "--write-cert-and-key-in-separate-files",
            "--metrics-backend=prometheus",
            "--log-format-json=true",
            "--custom-user-agent=ours",
            "-v=5",
        ])
        .unwrap();
        assert!(!a.construct_pem_chain && a.write_cert_and_key_in_separate_files);
        assert!(a.log.log_format_json);
        assert_eq!(a.log.verbosity, 5);
        assert!(csi(&["--socket-mode=0606"]).is_err());
    }

    /// The Go provider's `--cloud-name`, `--enable-pprof` and `--pprof-port` (cmd/main.go),
    /// and our `--strict-parameters`.
    #[test]
    fn cloud_name_pprof_and_strict_parameters() {
        let a = csi(&[]).unwrap();
        assert_eq!(a.cloud_name, "AzurePublicCloud");
        assert!(!a.enable_pprof && !a.strict_parameters);
        assert_eq!(a.pprof_port, 6060);
        let a = csi(&[
            "--cloud-name=AzureChinaCloud",
            "--enable-pprof",
            "--pprof-port=6061",
            "--strict-parameters",
        ])
        .unwrap();
        assert_eq!(a.cloud_name, "AzureChinaCloud");
        assert!(a.enable_pprof && a.strict_parameters);
        assert_eq!(a.pprof_port, 6061);
        let a = csi(&["--enable-pprof=false", "--strict-parameters=F"]).unwrap();
        assert!(!a.enable_pprof && !a.strict_parameters);
        assert!(csi(&["--pprof-port=70000"]).is_err());
        assert!(csi(&["--strict-parameters=yes"]).is_err());
    }

    #[test]
    fn mock_vault_flags_parse_for_both_servers() {
        let connect: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let flags = mock_vault_flags(connect, Path::new("/tmp/ca.pem"), "https://login.test/");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let k = kms(&flags).unwrap();
        let c = csi(&flags).unwrap();
        assert_eq!(
            (k.vault_connect_addr, c.vault_connect_addr),
            (Some(connect), Some(connect))
        );
        let ca = Some(PathBuf::from("/tmp/ca.pem"));
        assert_eq!((&k.trust.ca_bundle, &c.trust.ca_bundle), (&ca, &ca));
        assert_eq!(k.authority_host.as_deref(), Some("https://login.test/"));
        assert_eq!(c.authority_host.as_deref(), Some("https://login.test/"));
    }

    #[test]
    fn probe_kms_store_flag() {
        let parse = |args: &[&str]| parse_flags::<ProbeKmsArgs, _, _>("probe kms", args);
        assert_eq!(parse(&[]).unwrap().store, None);
        assert_eq!(
            parse(&["--store", "/var/lib/probe.jsonl"]).unwrap().store,
            Some(PathBuf::from("/var/lib/probe.jsonl"))
        );
        assert!(parse(&["--store", "x", "--envelope"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let e = kms(&["--socket-mode=0666"]).unwrap_err().to_string();
        assert!(e.contains("any local user"), "{e}");
        let e = kms(&["--key-poll-interval=soon"]).unwrap_err().to_string();
        assert!(e.contains("duration"), "{e}");
        assert!(kms(&["--metrics-backend=statsd"]).is_err());
        assert_eq!(
            parse_listen(":9090").unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
    }
}
