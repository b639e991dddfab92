//! Azure/kubernetes-kms's proxy mode (`--proxy-mode`, `--proxy-address`, `--proxy-port`):
//! every Entra and Key Vault request goes, in plain HTTP, to a proxy on the node, which
//! forwards it by a header.
//!
//! The Go plugin's contract, which the proxy expects:
//! - Key Vault: `https://<vault host>/<path>` is sent to
//!   `http://<address>:<port>/<vault host>/<path>` with `x-azure-proxy-target: KeyVault`.
//! - Entra: the authority becomes `http://<address>:<port>/`, so
//!   `https://<authority host>/<tenant>/…` is sent to `http://<address>:<port>/<tenant>/…`
//!   with `x-azure-proxy-target: AzureActiveDirectory`.
//!
//! [`ProxyPolicy`] makes that rewrite as the last per-try policy, so everything before it
//! (the SDK's challenge authentication, which checks the vault's host, our upstream
//! classification) still sees the real URL. The key ids do not change: they are computed
//! from the vault URL, not from where requests are sent.

use std::net::IpAddr;
use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, Url};

use crate::azure::keyvault::{self, SetupError};
use crate::azure::upstream::Upstream;

/// The header the proxy routes by.
pub const TARGET_HEADER: &str = "x-azure-proxy-target";

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    base: Url,
}

/// Why a proxy setting is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// `--proxy-mode` without `--proxy-address`.
    #[error("--proxy-mode needs --proxy-address (the proxy's host or IP)")]
    NoAddress,
    /// The address does not make a URL.
    #[error("--proxy-address {0:?} is not a host name or IP address")]
    BadAddress(String),
}

impl Proxy {
    /// The proxy at `address:port`, as the Go plugin builds `http://<address>:<port>/`.
    pub fn new(address: &str, port: u16) -> Result<Self, ProxyError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(ProxyError::NoAddress);
        }
        // An IPv6 literal needs brackets in a URL.
        let host = match address.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => address.to_owned(),
        };
        let base = Url::parse(&format!("http://{host}:{port}/"))
            .ok()
            .filter(|u| u.host_str().is_some() && u.path() == "/" && u.query().is_none())
            .ok_or_else(|| ProxyError::BadAddress(address.to_owned()))?;
        Ok(Self { base })
    }

    /// Whether the proxy is on this machine. Tokens cross the link to it unencrypted, as
    /// in the Go plugin: anything but loopback deserves a warning.
    pub fn is_loopback(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }

    /// The proxy's base URL, for logs.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Where a request for `url` goes, and the target header's value.
    pub fn route(&self, url: &Url, to: Upstream) -> (Url, &'static str) {
        let mut routed = self.base.clone();
        let path = match to {
            Upstream::KeyVault => {
                // `<host>[:port]<path>`: the part of the URL after `https://`.
                let host = url.host_str().unwrap_or_default();
                match url.port() {
                    Some(port) => format!("/{host}:{port}{}", url.path()),
                    None => format!("/{host}{}", url.path()),
                }
            }
            Upstream::Entra | Upstream::TokenProxy => url.path().to_owned(),
        };
        routed.set_path(&path);
        routed.set_query(url.query());
        let target = match to {
            Upstream::KeyVault => "KeyVault",
            Upstream::Entra | Upstream::TokenProxy => "AzureActiveDirectory",
        };
        (routed, target)
    }

    /// The reqwest client for proxy mode: plain HTTP to the proxy (the one difference from
    /// [`crate::azure::keyvault::http_client`]), no redirects, the same timeouts.
    pub fn http_client(&self) -> Result<reqwest::Client, SetupError> {
        keyvault::base_http_client()
            .build()
            .map_err(|e| SetupError::Http(e.to_string()))
    }

    /// The policy that sends requests for `to` through this proxy.
    pub fn policy(&self, to: Upstream) -> Arc<dyn Policy> {
        Arc::new(ProxyPolicy {
            proxy: self.clone(),
            to,
        })
    }
}

/// Rewrites each request to go through the proxy; see the module documentation.
#[derive(Debug)]
pub struct ProxyPolicy {
    proxy: Proxy,
    to: Upstream,
}

// The trait declares `&Context` with its lifetime hidden; `async_trait` needs the same.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for ProxyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let (inner, rest) = crate::azure::upstream::next_policy(next, "proxy policy")?;
        let original = request.url().clone();
        let (routed, target) = self.proxy.route(&original, self.to);
        *request.url_mut() = routed;
        request.insert_header(TARGET_HEADER, target);
        let result = inner.send(ctx, request, rest).await;
        // A retry starts again from the real URL (policies before this one read it).
        *request.url_mut() = original;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_vault_requests_keep_the_vault_host_in_the_path() {
        let proxy = Proxy::new("127.0.0.1", 7788).unwrap();
        let url = Url::parse(
            "https://kv-prod.vault.azure.net/keys/kek/0123456789abcdef/decrypt?api-version=7.6",
        )
        .unwrap();
        let (routed, target) = proxy.route(&url, Upstream::KeyVault);
        assert_eq!(
            routed.as_str(),
            "http://127.0.0.1:7788/kv-prod.vault.azure.net/keys/kek/0123456789abcdef/decrypt?api-version=7.6"
        );
        assert_eq!(target, "KeyVault");
        let with_port = Url::parse("https://kv.vault.localhost:8443/keys/k").unwrap();
        assert_eq!(
            proxy.route(&with_port, Upstream::KeyVault).0.as_str(),
            "http://127.0.0.1:7788/kv.vault.localhost:8443/keys/k"
        );
    }

    #[test]
    fn entra_requests_replace_the_authority() {
        let proxy = Proxy::new("localhost", 7788).unwrap();
        let url = Url::parse(
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token",
        )
        .unwrap();
        let (routed, target) = proxy.route(&url, Upstream::Entra);
        assert_eq!(
            routed.as_str(),
            "http://localhost:7788/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(target, "AzureActiveDirectory");
        assert!(proxy.is_loopback());
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(Proxy::new("", 7788), Err(ProxyError::NoAddress));
        assert_eq!(Proxy::new("  ", 7788), Err(ProxyError::NoAddress));
        assert!(matches!(
            Proxy::new("a b", 7788),
            Err(ProxyError::BadAddress(_))
        ));
        assert!(matches!(
            Proxy::new("host/path", 7788),
            Err(ProxyError::BadAddress(_))
        ));
        let v6 = Proxy::new("::1", 7788).unwrap();
        assert_eq!(v6.base().as_str(), "http://[::1]:7788/");
        assert!(v6.is_loopback());
        assert!(!Proxy::new("10.0.0.4", 7788).unwrap().is_loopback());
    }
}
