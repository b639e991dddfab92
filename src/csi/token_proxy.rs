//! AKS identity binding (`useAzureTokenProxy: "true"`): the pod's token for the audience
//! `api://AKSIdentityBinding` is exchanged for an Entra token, not at Entra, but at the
//! cluster's token proxy, which checks that the pod's service account is bound to the
//! managed identity. One federated credential on the identity then serves every cluster and
//! workload, lifting workload identity's limit of 20 federated credentials per identity.
//!
//! The contract, as the Go provider (v1.8, `internal/identitybinding`) and azidentity's
//! `customtokenproxy` transport implement it:
//! - **Where.** `--token-proxy-url`, default `https://kubernetes.default.svc.cluster.local`:
//!   https only, no user info, query or fragment. The token request keeps Entra's path
//!   (`/<tenant>/oauth2/v2.0/token`), appended to the proxy URL's path; the query is kept.
//! - **TLS.** The server name sent (SNI) and verified is the identity-binding name, not the
//!   proxy's host: `--sni-name`, or computed once from the API server's certificate. The
//!   roots are the cluster CA (the service account's `ca.crt`), re-read on every request
//!   so a rotated CA is picked up; an empty file mid-rotation keeps the last good CA. Without
//!   that file, the system roots.
//! - **Host.** The `Host` header stays Entra's host: Go keeps `req.Host` when it rewrites the
//!   URL. HTTP/1.1, so the header is sent as given.
//! - **Computed server name.** TLS to the API server (`KUBERNETES_SERVICE_HOST` and
//!   `KUBERNETES_SERVICE_PORT`, as every pod has them; `kubernetes.default.svc.cluster.local`
//!   and 443 otherwise), verified as `kubernetes.default.svc.cluster.local` with the cluster
//!   CA (the service account's `ca.crt` if present, as in the Go provider, else
//!   `--token-proxy-ca-file`); the certificate's `hcp-kubernetes.<id>.svc.cluster.local` names the cluster id; the
//!   server name is `a` + lower-case unpadded base32hex(SHA-256(`identity-binding` + id)) +
//!   `.ests.aks`. The Go provider dials the DNS name; the service address every pod is given
//!   needs no cluster DNS and reaches the same server.
//!
//! Unlike the Go provider, which computes the server name once at start-up and keeps a
//! failure until restarted, the name is computed at the first identity-binding mount; a
//! failure is answered again for 5 s (mounts queued behind a failing attempt do not each
//! wait for their own) and then retried: an API server that was briefly unreachable, or a
//! CA that was rotated in, does not need a provider restart. Requests to the proxy and the
//! API server never use the environment's `HTTPS_PROXY`: both are in the cluster, and the
//! proxy's URL carries a name only the cluster knows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Url};

use crate::azure::keyvault;

/// The Go provider's default token proxy: the API server.
pub const DEFAULT_TOKEN_PROXY_URL: &str = "https://kubernetes.default.svc.cluster.local";

/// Where a pod finds its cluster's CA.
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The API server's in-cluster name, which its certificate is verified for.
const API_SERVER_NAME: &str = "kubernetes.default.svc.cluster.local";

/// A CA bundle larger than this is refused (cluster CAs are a few KiB).
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// How long computing the server name may take.
const SERVER_NAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failure to compute the server name is answered without trying again.
const FAILURE_REUSE: Duration = Duration::from_secs(5);

/// Why identity binding cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenProxyError {
    /// A flag is wrong (refused at start-up).
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The node is not set up for it (no cluster CA, a certificate without a cluster id).
    #[error("identity binding: {0}")]
    Setup(String),
    /// The API server could not be reached to compute the server name.
    #[error("identity binding: {0}")]
    Unavailable(String),
    /// The token proxy's certificate did not verify for the server name.
    #[error(
        "identity binding: the token proxy's TLS certificate for {server_name} could not be \
         verified: {reason}; is the cluster CA ({ca}) and the server name (--sni-name) right?"
    )]
    Certificate {
        /// The server name it was verified for.
        server_name: String,
        /// Why it did not verify.
        reason: String,
        /// Where the trusted CA came from.
        ca: String,
    },
}

/// The flags.
#[derive(Debug, Clone, Default)]
pub struct TokenProxyConfig {
    /// `--token-proxy-url` (empty: [`DEFAULT_TOKEN_PROXY_URL`]).
    pub url: String,
    /// `--sni-name` (empty: computed).
    pub sni_name: String,
    /// `--token-proxy-ca-file` (unset: [`SERVICE_ACCOUNT_CA`] if it exists at start-up,
    /// else the system roots).
    pub ca_file: Option<PathBuf>,
    /// The API server's address: `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`.
    pub api_server: Option<(String, u16)>,
}

impl TokenProxyConfig {
    /// The API server address of a pod's environment.
    pub fn api_server_from_env() -> Option<(String, u16)> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let host = host.trim();
        if host.is_empty() {
            return None;
        }
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(443);
        Some((host.to_owned(), port))
    }
}

/// The client last built for the current CA.
struct Built {
    ca: Vec<u8>,
    client: reqwest::Client,
}

/// The token proxy, shared by every identity-binding identity.
pub struct TokenProxy {
    url: Url,
    /// `(host, port)` of `url`, where connections go.
    target: (String, u16),
    ca_file: Option<PathBuf>,
    api_server: (String, u16),
    server_name: tokio::sync::OnceCell<String>,
    /// The last failure to compute the server name, answered again for a few seconds so
    /// mounts that queue behind a failing attempt do not each wait for their own.
    last_failure: Mutex<Option<(std::time::Instant, TokenProxyError)>>,
    built: Mutex<Option<Built>>,
}

impl std::fmt::Debug for TokenProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProxy")
            .field("url", &self.url.as_str())
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name.get())
            .finish_non_exhaustive()
    }
}

fn check_server_name(name: &str) -> bool {
    rustls_pki_types::ServerName::try_from(name)
        .is_ok_and(|n| matches!(n, rustls_pki_types::ServerName::DnsName(_)))
}

/// `url` addressed to `server_name`, if the URL keeps that name exactly (the url crate
/// applies IDNA rules rustls does not).
fn with_host(url: &Url, server_name: &str) -> Option<Url> {
    let mut routed = url.clone();
    routed.set_host(Some(server_name)).ok()?;
    routed
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(server_name))
        .then_some(routed)
}

impl TokenProxy {
    /// Checks the flags; nothing is read from the network yet.
    pub fn new(config: &TokenProxyConfig) -> Result<Self, TokenProxyError> {
        let raw = config.url.trim();
        let raw = if raw.is_empty() {
            DEFAULT_TOKEN_PROXY_URL
        } else {
            raw
        };
        let parsed = Url::parse(raw);
        // Echoed without its user info: a password must not reach a log.
        let shown = match &parsed {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                let mut u = u.clone();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            _ => raw.to_owned(),
        };
        let bad = |reason| TokenProxyError::Flag {
            flag: "--token-proxy-url",
            value: shown.clone(),
            reason,
        };
        let url = parsed.map_err(|_| bad("is not a URL"))?;
        if url.scheme() != "https" {
            return Err(bad("must be an https URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain user info"));
        }
        // As Go's url.URL: an empty `?` or `#` is no query or fragment.
        if url.query().is_some_and(|q| !q.is_empty()) {
            return Err(bad("must not contain a query"));
        }
        if url.fragment().is_some_and(|f| !f.is_empty()) {
            return Err(bad("must not contain a fragment"));
        }
        let mut url = url;
        url.set_query(None);
        url.set_fragment(None);
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("has no host")),
        };
        let port = url.port_or_known_default().unwrap_or(443);

        let server_name = tokio::sync::OnceCell::new();
        let sni = config.sni_name.trim();
        if !sni.is_empty() {
            if !check_server_name(sni) || with_host(&url, sni).is_none() {
                return Err(TokenProxyError::Flag {
                    flag: "--sni-name",
                    value: sni.to_owned(),
                    reason: "is not a DNS name",
                });
            }
            let _ = server_name.set(sni.to_ascii_lowercase());
        }
        let ca_file = match &config.ca_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(TokenProxyError::Setup(format!(
                        "--token-proxy-ca-file {}: no such file",
                        path.display()
                    )));
                }
                Some(path.clone())
            }
            // As the Go provider: the service account's CA when the pod has one.
            None => Some(PathBuf::from(SERVICE_ACCOUNT_CA)).filter(|p| p.is_file()),
        };
        Ok(Self {
            url,
            target: (host, port),
            ca_file,
            api_server: config
                .api_server
                .clone()
                .unwrap_or_else(|| (API_SERVER_NAME.to_owned(), 443)),
            server_name,
            last_failure: Mutex::new(None),
            built: Mutex::new(None),
        })
    }

    /// The proxy URL, for logs.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The CA file trusted for the proxy, if any (else the system roots).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The identity-binding server name: the flag's, or computed from the API server's
    /// certificate on first use (a failure is retried by the next call).
    pub async fn server_name(&self) -> Result<&str, TokenProxyError> {
        self.server_name
            .get_or_try_init(|| async {
                if let Some((at, error)) = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    && at.elapsed() < FAILURE_REUSE
                {
                    return Err(error.clone());
                }
                let name = match self.compute_server_name().await {
                    Ok(name) => name,
                    Err(e) => {
                        *self
                            .last_failure
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            Some((std::time::Instant::now(), e.clone()));
                        return Err(e);
                    }
                };
                tracing::info!(
                    server_name = %name,
                    token_proxy = %self.url,
                    "identity binding: server name computed from the API server's certificate"
                );
                Ok(name)
            })
            .await
            .map(String::as_str)
    }

    async fn compute_server_name(&self) -> Result<String, TokenProxyError> {
        // The API server is the cluster CA's, as in the Go provider: the service account's
        // `ca.crt` when the pod has one, else the CA given for the proxy.
        let service_account_ca = PathBuf::from(SERVICE_ACCOUNT_CA);
        let api_server_ca = if service_account_ca.is_file() {
            Some(&service_account_ca)
        } else {
            self.ca_file.as_ref()
        };
        let Some(path) = api_server_ca else {
            return Err(TokenProxyError::Setup(format!(
                "computing the identity-binding server name needs the cluster CA \
                 ({SERVICE_ACCOUNT_CA}, or --token-proxy-ca-file); or set --sni-name"
            )));
        };
        let certs = read_ca(path)?.ok_or_else(|| {
            TokenProxyError::Setup(format!("CA file {} is empty", path.display()))
        })?;
        let (host, port) = self.api_server.clone();
        tracing::debug!(
            api_server = %format!("{host}:{port}"),
            ca = %path.display(),
            "identity binding: reading the API server's certificate for the server name"
        );
        let client = keyvault::base_http_client()
            .https_only(true)
            .http1_only()
            // In-cluster: never through an HTTP proxy of the environment.
            .no_proxy()
            .tls_certs_only(certs)
            .tls_info(true)
            .dns_resolver(Arc::new(FixedTarget {
                host: host.clone(),
                port,
            }))
            .build()
            .map_err(|e| TokenProxyError::Setup(format!("HTTP client: {e}")))?;
        let unreachable = |reason: String| {
            TokenProxyError::Unavailable(format!(
                "cannot read the API server's certificate at {host}:{port} to compute the \
                 server name ({reason}); set --sni-name to skip this"
            ))
        };
        let response = tokio::time::timeout(
            SERVER_NAME_TIMEOUT,
            client
                .get(format!("https://{API_SERVER_NAME}:{port}/livez"))
                .send(),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {SERVER_NAME_TIMEOUT:?}")))?
        .map_err(|e| unreachable(describe(&e)))?;
        let der = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .ok_or_else(|| unreachable("no certificate presented".to_owned()))?;
        let id = cluster_id(der)?;
        Ok(binding_server_name(&id))
    }

    /// The client for the current CA: rebuilt when the file changes.
    fn client(&self, server_name: &str) -> Result<reqwest::Client, TokenProxyError> {
        // Read before taking the lock; a token request is rare enough to read the file
        // each time, as azidentity does.
        let read = self.ca_file.as_deref().map(read_file).transpose()?;
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        let ca = match (&self.ca_file, read) {
            (None, _) | (Some(_), None) => Vec::new(),
            (Some(path), Some(bytes)) => {
                if bytes.is_empty() {
                    // Mid-rotation: keep the last good CA, if there is one.
                    return match built.as_ref() {
                        Some(b) => Ok(b.client.clone()),
                        None => Err(TokenProxyError::Setup(format!(
                            "CA file {} is empty",
                            path.display()
                        ))),
                    };
                }
                bytes
            }
        };
        if let Some(b) = built.as_ref()
            && b.ca == ca
        {
            return Ok(b.client.clone());
        }
        let mut builder = keyvault::base_http_client()
            .https_only(true)
            .http1_only()
            // The proxy is in the cluster: an environment's HTTPS_PROXY would be asked for
            // the identity-binding name, which only the cluster knows.
            .no_proxy()
            .dns_resolver(Arc::new(FixedTarget {
                host: self.target.0.clone(),
                port: self.target.1,
            }));
        if let Some(path) = &self.ca_file {
            builder = builder.tls_certs_only(parse_ca(path, &ca)?);
        }
        let client = builder
            .build()
            .map_err(|e| TokenProxyError::Setup(format!("HTTP client: {e}")))?;
        tracing::debug!(%server_name, "identity binding: token proxy client built for the current CA");
        *built = Some(Built {
            ca,
            client: client.clone(),
        });
        Ok(client)
    }

    /// Where a token request for `url` goes: the proxy's port and path with `url`'s path
    /// and query, addressed to `server_name` (connections go to the proxy's host).
    pub fn route(&self, url: &Url, server_name: &str) -> Option<Url> {
        let mut routed = with_host(&self.url, server_name)?;
        routed.set_port(Some(self.target.1)).ok()?;
        let base = routed.path().trim_end_matches('/').to_owned();
        routed.set_path(&format!("{base}/{}", url.path().trim_start_matches('/')));
        routed.set_query(url.query());
        Some(routed)
    }

    /// Where the trusted CA comes from, for messages.
    fn ca_source(&self) -> String {
        self.ca_file.as_ref().map_or_else(
            || "the system roots".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// A reqwest error for a message: a certificate refusal said plainly, else the error and
/// its causes.
fn describe(e: &reqwest::Error) -> String {
    if let Some(problem) = crate::azure::upstream::certificate_problem(e) {
        return format!("its certificate was refused: {problem}");
    }
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        text.push_str(": ");
        text.push_str(&err.to_string());
        next = err.source();
    }
    text.chars().take(400).collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, TokenProxyError> {
    let err =
        |reason: String| TokenProxyError::Setup(format!("CA file {}: {reason}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let bytes = crate::file::read_at_most(file, MAX_CA_BYTES)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("larger than {MAX_CA_BYTES} bytes")))?;
    Ok(bytes.to_vec())
}

fn parse_ca(path: &Path, pem: &[u8]) -> Result<Vec<reqwest::Certificate>, TokenProxyError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| TokenProxyError::Setup(format!("CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TokenProxyError::Setup(format!(
            "CA file {}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_ca(path: &Path) -> Result<Option<Vec<reqwest::Certificate>>, TokenProxyError> {
    let pem = read_file(path)?;
    if pem.is_empty() {
        return Ok(None);
    }
    parse_ca(path, &pem).map(Some)
}

/// The cluster id in an API server certificate: `<id>` of the DNS name
/// `hcp-kubernetes.<id>.svc.cluster.local`.
fn cluster_id(der: &[u8]) -> Result<String, TokenProxyError> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| {
        TokenProxyError::Setup("the API server's certificate cannot be parsed".to_owned())
    })?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    for name in names {
        if let GeneralName::DNSName(dns) = name
            && let Some(id) = dns
                .strip_prefix("hcp-kubernetes.")
                .and_then(|rest| rest.strip_suffix(".svc.cluster.local"))
        {
            if id.is_empty() {
                return Err(TokenProxyError::Setup(format!(
                    "empty cluster id in the API server certificate's name {dns:?}"
                )));
            }
            return Ok(id.to_owned());
        }
    }
    Err(TokenProxyError::Setup(
        "the API server's certificate names no cluster id (hcp-kubernetes.<id>.svc.cluster.local): \
         not an AKS cluster with identity binding? Set --sni-name to give the server name"
            .to_owned(),
    ))
}

/// `a` + lower-case unpadded base32hex (RFC 4648 §7) of SHA-256(`identity-binding` + id) +
/// `.ests.aks`.
pub fn binding_server_name(cluster_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("identity-binding{cluster_id}").as_bytes());
    format!("a{}.ests.aks", base32hex_lower(&digest))
}

fn base32hex_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let symbol = |v: u64| char::from(ALPHABET.get((v & 31) as usize).copied().unwrap_or(b'0'));
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(symbol(buffer >> bits));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(symbol(buffer << (5 - bits)));
    }
    out
}

/// Resolves every name to one host (an IP literal, or a name looked up on each
/// connection): connections go there whatever name TLS verifies.
struct FixedTarget {
    host: String,
    port: u16,
}

impl reqwest::dns::Resolve for FixedTarget {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, port) = (self.host.clone(), self.port);
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The SDK transport of identity-binding credentials: every token request goes to the
/// proxy; see the module documentation.
#[derive(Debug)]
pub struct TokenProxyTransport(pub Arc<TokenProxy>);

/// A [`TokenProxyError`] for the SDK: `Other`, so the retry policy does not repeat a setup
/// problem, and kept in the error chain for [`find_error`].
fn sdk_error(e: TokenProxyError) -> azure_core::Error {
    azure_core::Error::new(ErrorKind::Other, e)
}

/// The [`TokenProxyError`] in an SDK error's chain, if the transport failed with one.
pub fn find_error(e: &azure_core::Error) -> Option<&TokenProxyError> {
    crate::azure::upstream::find::<TokenProxyError>(e)
}

#[async_trait::async_trait]
impl HttpClient for TokenProxyTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let server_name = self.0.server_name().await.map_err(sdk_error)?;
        let client = self.0.client(server_name).map_err(sdk_error)?;
        let original = request.url();
        let host = match (original.host_str(), original.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        let routed_url = self.0.route(original, server_name).ok_or_else(|| {
            sdk_error(TokenProxyError::Setup(format!(
                "{server_name:?} cannot be the token proxy's host name"
            )))
        })?;
        let mut routed = request.clone();
        *routed.url_mut() = routed_url;
        routed.insert_header("host", host);
        client.execute_request(&routed).await.map_err(|e| {
            // Said here, where the name it was verified for is known (the SDK's request
            // still names Entra's host).
            match crate::azure::upstream::certificate_problem(&e) {
                Some(reason) => sdk_error(TokenProxyError::Certificate {
                    server_name: server_name.to_owned(),
                    reason,
                    ca: self.0.ca_source(),
                }),
                None => e,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32hex_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "co"),
            ("fo", "cpng"),
            ("foo", "cpnmu"),
            ("foob", "cpnmuog"),
            ("fooba", "cpnmuoj1"),
            ("foobar", "cpnmuoj1e8"),
        ] {
            assert_eq!(base32hex_lower(input.as_bytes()), want);
        }
    }

    #[test]
    fn server_name_of_a_cluster_id() {
        // Computed independently: python3 -c 'import base64,hashlib;
        // print("a"+base64.b32hexencode(hashlib.sha256(b"identity-bindingmock-cluster")
        // .digest()).decode().rstrip("=").lower()+".ests.aks")'
        assert_eq!(binding_server_name("mock-cluster"), MOCK_CLUSTER_NAME);
    }

    const MOCK_CLUSTER_NAME: &str =
        "ah9nas7gt5b5sihgcufjqorjv4r7rjcaprabosb6sadqhhksj6gvg.ests.aks";

    fn proxy(url: &str, sni: &str) -> Result<TokenProxy, TokenProxyError> {
        TokenProxy::new(&TokenProxyConfig {
            url: url.to_owned(),
            sni_name: sni.to_owned(),
            ca_file: None,
            api_server: None,
        })
    }

    #[test]
    fn urls_are_checked_as_azidentity_checks_them() {
        for (url, shown, reason) in [
            ("http://proxy", "http://proxy", "must be an https URL"),
            // The password is not echoed.
            (
                "https://user:pw@proxy",
                "https://proxy/",
                "must not contain user info",
            ),
            (
                "https://proxy/?a=b",
                "https://proxy/?a=b",
                "must not contain a query",
            ),
            (
                "https://proxy/#frag",
                "https://proxy/#frag",
                "must not contain a fragment",
            ),
            ("not a url", "not a url", "is not a URL"),
        ] {
            assert_eq!(
                proxy(url, "").unwrap_err(),
                TokenProxyError::Flag {
                    flag: "--token-proxy-url",
                    value: shown.to_owned(),
                    reason
                },
                "{url}"
            );
        }
        assert!(matches!(
            proxy("https://proxy", "not a name!").unwrap_err(),
            TokenProxyError::Flag {
                flag: "--sni-name",
                ..
            }
        ));
        assert!(matches!(
            proxy("https://proxy", "10.0.0.1").unwrap_err(),
            TokenProxyError::Flag {
                flag: "--sni-name",
                ..
            }
        ));
        let p = proxy("", "").unwrap();
        assert_eq!(
            p.url().as_str(),
            "https://kubernetes.default.svc.cluster.local/"
        );
        // As Go's url.URL, an empty query or fragment is none.
        assert_eq!(
            proxy("https://proxy/?#", "").unwrap().url().as_str(),
            "https://proxy/"
        );
        // rustls takes this name, the url crate's IDNA does not: refused, not ignored.
        assert!(matches!(
            proxy("https://proxy", "xn--a.ests.aks").unwrap_err(),
            TokenProxyError::Flag {
                flag: "--sni-name",
                ..
            }
        ));
    }

    fn built_ca(p: &TokenProxy) -> Option<Vec<u8>> {
        p.built.lock().unwrap().as_ref().map(|b| b.ca.clone())
    }

    #[test]
    fn the_ca_file_is_reread_and_an_empty_one_keeps_the_last_client() {
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.self_signed(&key).unwrap().pem().into_bytes()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, b"").unwrap();
        let p = TokenProxy::new(&TokenProxyConfig {
            url: "https://proxy".into(),
            sni_name: "a1.ests.aks".into(),
            ca_file: Some(file.clone()),
            api_server: None,
        })
        .unwrap();
        // Empty before any client: an error (retried by the next request).
        assert!(matches!(
            p.client("a1.ests.aks"),
            Err(TokenProxyError::Setup(_))
        ));
        assert_eq!(built_ca(&p), None);
        let first = ca("first");
        std::fs::write(&file, &first).unwrap();
        p.client("a1.ests.aks").unwrap();
        assert_eq!(built_ca(&p), Some(first.clone()));
        // Emptied mid-rotation: the last client stays.
        std::fs::write(&file, b"").unwrap();
        p.client("a1.ests.aks").unwrap();
        assert_eq!(built_ca(&p), Some(first));
        // Rotated: rebuilt with the new CA.
        let second = ca("second");
        std::fs::write(&file, &second).unwrap();
        p.client("a1.ests.aks").unwrap();
        assert_eq!(built_ca(&p), Some(second));
        // Gone: refused, naming the file.
        std::fs::remove_file(&file).unwrap();
        assert!(
            matches!(p.client("a1.ests.aks"), Err(TokenProxyError::Setup(m)) if m.contains("ca.crt"))
        );
    }

    #[test]
    fn token_requests_keep_their_path_and_query_under_the_proxy() {
        let entra =
            Url::parse("https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token?x=1").unwrap();
        let p = proxy("https://10.0.0.1", "a1.ests.aks").unwrap();
        assert_eq!(
            p.route(&entra, "a1.ests.aks").unwrap().as_str(),
            "https://a1.ests.aks/tenant-1/oauth2/v2.0/token?x=1"
        );
        let p = proxy("https://proxy.example:8443/base/", "a1.ests.aks").unwrap();
        assert_eq!(
            p.route(&entra, "a1.ests.aks").unwrap().as_str(),
            "https://a1.ests.aks:8443/base/tenant-1/oauth2/v2.0/token?x=1"
        );
        assert_eq!(p.target, ("proxy.example".to_owned(), 8443));
    }

    #[tokio::test]
    async fn a_given_server_name_is_used_without_asking_the_api_server() {
        let p = proxy("https://127.0.0.1:1", "A1.ests.aks").unwrap();
        assert_eq!(p.server_name().await.unwrap(), "a1.ests.aks");
    }

    #[test]
    fn cluster_id_is_read_from_the_api_server_certificate() {
        let make = |names: Vec<&str>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(
                names.into_iter().map(str::to_owned).collect::<Vec<_>>(),
            )
            .unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let der = make(vec![
            "kubernetes.default.svc.cluster.local",
            "hcp-kubernetes.6789abcdef.svc.cluster.local",
        ]);
        assert_eq!(cluster_id(&der).unwrap(), "6789abcdef");
        assert!(matches!(
            cluster_id(&make(vec!["kubernetes.default.svc.cluster.local"])),
            Err(TokenProxyError::Setup(_))
        ));
        assert!(cluster_id(&make(vec!["hcp-kubernetes..svc.cluster.local"])).is_err());
        assert!(cluster_id(b"not a certificate").is_err());
    }
}
