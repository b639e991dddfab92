//! [`Renewable`]: a credential rebuilt when Key Vault rejects its unexpired access token,
//! and the per-try pipeline policy that notices the rejection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::headers::AUTHORIZATION;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, StatusCode};

use super::CredentialError;

/// Shortest time between two rebuilds of a [`Renewable`] credential.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(30);

/// Builds a fresh credential (with an empty token cache) for [`Renewable`].
pub type CredentialBuilder =
    dyn Fn() -> Result<Arc<dyn TokenCredential>, CredentialError> + Send + Sync;

/// A credential that can be rebuilt when Key Vault rejects its access token.
///
/// The SDK's credentials cache access tokens until they near expiry, and the SDK's
/// authorization policy, on a 401, asks the credential again, which hands back the same
/// cached token. A token Key Vault stops accepting before it expires (the identity deleted
/// and re-created, its token revoked, a vault moved to another tenant) would so fail every
/// call until expiry: up to 24 hours for a managed identity. [`Renewable::policy`] sees
/// such a 401 on the wire and rebuilds the credential, so the authorization policy's own
/// retry of that request already gets a new token from Entra.
///
/// Rebuilds happen at most once per [`RENEW_INTERVAL`], so an identity Key Vault keeps
/// refusing costs Entra one extra token request per interval, not one per call.
pub struct Renewable {
    build: Box<CredentialBuilder>,
    current: std::sync::RwLock<Arc<dyn TokenCredential>>,
    last_renewal: std::sync::Mutex<Option<Instant>>,
    renewals: AtomicU64,
}

impl fmt::Debug for Renewable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renewable")
            .field("renewals", &self.renewals())
            .finish_non_exhaustive()
    }
}

impl Renewable {
    /// A credential `build` makes now and again on each renewal.
    pub fn new(
        build: impl Fn() -> Result<Arc<dyn TokenCredential>, CredentialError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, CredentialError> {
        let first = build()?;
        Ok(Arc::new(Self {
            build: Box::new(build),
            current: std::sync::RwLock::new(first),
            last_renewal: std::sync::Mutex::new(None),
            renewals: AtomicU64::new(0),
        }))
    }

    /// Rebuilds the credential unless that was done less than [`RENEW_INTERVAL`] ago (then
    /// a fresh one is already in place). Returns whether it rebuilt. A builder failure
    /// keeps the current credential.
    pub fn renew(&self) -> bool {
        // Held across the (synchronous, local) rebuild: a request rejected meanwhile waits
        // and then finds the fresh credential in place.
        let mut last = self
            .last_renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < RENEW_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match (self.build)() {
            Ok(fresh) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                self.renewals.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot rebuild the credential; keeping the current one");
                false
            }
        }
    }

    /// How many times the credential was rebuilt.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// The per-try pipeline policy for Key Vault clients that use this credential: on a 401
    /// to a request that carried an access token, it rebuilds the credential. (The SDK's
    /// first request to a vault carries none, to learn the vault's tenant from the
    /// challenge; that 401 is expected.) Not for the credential's own token requests.
    pub fn policy(self: &Arc<Self>) -> Arc<dyn Policy> {
        Arc::new(RenewOnRejection(Arc::clone(self)))
    }

    fn current(&self) -> Arc<dyn TokenCredential> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[async_trait::async_trait]
impl TokenCredential for Renewable {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.current().get_token(scopes, options).await
    }
}

#[derive(Debug)]
struct RenewOnRejection(Arc<Renewable>);

// The trait declares `&Context` with its lifetime hidden; `async_trait` needs the same.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for RenewOnRejection {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let carried_token = request.headers().get_optional_str(&AUTHORIZATION).is_some();
        // A per-try policy always has the transport after it; an empty rest is a bug in the
        // pipeline, answered as an error rather than a panic.
        let (inner, rest) = crate::azure::upstream::next_policy(next, "credential renewal policy")?;
        let response = inner.send(ctx, request, rest).await?;
        if carried_token && response.status() == StatusCode::Unauthorized && self.0.renew() {
            tracing::warn!(
                renewals = self.0.renewals(),
                "Key Vault rejected an unexpired access token (401): the credential was \
                 rebuilt, the next token comes from Microsoft Entra"
            );
        }
        Ok(response)
    }
}
