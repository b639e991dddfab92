//! Who a mount reads Key Vault as, and the rule that keeps one pod's credentials and cached
//! data away from another identity.
//!
//! Every mount resolves to an [`Identity`], named by an [`IdentityKey`]: a keyed hash
//! (HMAC-SHA-256 under a random per-process key) of everything that makes the identity:
//!
//! | mode | the key covers |
//! |---|---|
//! | workload identity | authority, tenant, `clientID`, where the token is exchanged (Entra or AKS identity binding's token proxy), and the token's issuer and subject (`system:serviceaccount:<ns>:<sa>`) |
//! | service principal | authority, tenant, `clientid` and the client secret itself |
//! | managed identity | `userAssignedIdentityID` (empty: system-assigned) |
//!
//! The object cache is keyed by identity key, so two mounts share cached objects only when
//! they are the same identity. Sharing also needs proof, per mode:
//!
//! - **Service principal**: the secret is in the key, so a cached entry exists only if a read
//!   with that very secret succeeded.
//! - **Workload identity** (and identity binding, where the token proxy plays Entra's part):
//!   the token's claims are read without checking its signature (the
//!   provider cannot), so a forged token could name someone else's subject. Before a mount
//!   may use the identity, its own token must have been accepted by Microsoft Entra: each
//!   token not seen before is exchanged once ([`Identities::admit`]); accepted tokens are
//!   remembered by keyed hash until they expire. Entra is the judge, as it is for the Go
//!   provider, but a Deployment of many pods costs one Entra exchange per pod token, not
//!   one Key Vault read per object per pod.
//! - **Managed identity**: any pod on the node may use the node's identity (as with the Go
//!   provider); nothing more to prove.
//!
//! Identities are kept in a bounded LRU map. An evicted identity's accepted tokens are
//! forgotten, so they are proven again.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lru::LruCache;
use serde::Deserialize;

use crate::azure::azure_json::CredentialSource;
use crate::azure::credential::{self, FederatedToken};
use crate::azure::keyvault::{self, CallPolicy, KvError, unix_now};
use crate::azure::upstream::{self, TokenFailure, Upstream};
use crate::csi::params::{AuthMode, MountParams, TokenExchange};
use crate::csi::token_proxy::{self, TokenProxy, TokenProxyError, TokenProxyTransport};

/// Tokens remembered as accepted, per identity.
const ACCEPTED_TOKENS: usize = 4096;

/// How long an accepted token is remembered at most, whatever its `exp` says: tokens the
/// kubelet requests live 1 hour to 1 day.
pub const MAX_ACCEPTED_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Accepted-token lifetime when the token carries no `exp` (tokens normally do).
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 600;

/// The name of an identity in caches: a keyed hash, printed as a short prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey([u8; 32]);

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.0.get(..4).unwrap_or_default();
        write!(f, "IdentityKey({})", hex::encode(prefix))
    }
}

/// Why a mount's identity cannot be used. No variant carries a token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The request's token is unusable before any call (not a JWT, expired).
    #[error("workload identity: the service account token {0}")]
    BadToken(&'static str),
    /// Microsoft Entra refused the credential.
    #[error("{0}")]
    Rejected(String),
    /// Microsoft Entra did not answer the token exchange: unreachable, failing, throttling,
    /// too slow, or its certificate could not be verified.
    #[error("{identity}: {error}")]
    Entra {
        /// The identity's label.
        identity: String,
        /// What went wrong, classified as for Key Vault calls.
        error: KvError,
    },
    /// The credential could not be set up (bad authority host, SDK refusal).
    #[error("{0}")]
    Setup(String),
    /// AKS identity binding's token proxy cannot be used: the node lacks what it needs (the
    /// cluster CA, a server name), or the proxy or API server could not be reached.
    #[error("{reason}")]
    TokenProxy {
        /// What is wrong, without secrets.
        reason: String,
        /// Whether retrying may help (unreachable) rather than the node's setup.
        transient: bool,
    },
}

/// A resolved identity: its credential and, for workload identity, the tokens proven.
pub struct Identity {
    /// The cache key.
    pub key: IdentityKey,
    /// A description without secrets, for logs and errors.
    pub label: String,
    /// The credential Key Vault clients use, rebuilt when Key Vault rejects its token.
    pub credential: Arc<credential::Renewable>,
    federated: Option<Federated>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("key", &self.key)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

struct Federated {
    tenant_id: String,
    client_id: String,
    exchange: TokenExchange,
    authority: String,
    /// The assertion `credential` uses: the accepted token that expires last.
    token: FederatedToken,
    token_expires: Mutex<i64>,
    /// Accepted tokens by keyed hash, with their expiry.
    accepted: Mutex<LruCache<[u8; 32], i64>>,
}

/// The claims of a service-account token the key is built from. Read, not verified.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    exp: Option<i64>,
}

fn claims(token: &str) -> Result<Claims, IdentityError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::BadToken("is not a JWT"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| IdentityError::BadToken("payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&bytes)
        .map_err(|_| IdentityError::BadToken("payload is not a JSON claims set"))?;
    if claims.iss.is_empty() || claims.sub.is_empty() {
        return Err(IdentityError::BadToken("has no iss or sub claim"));
    }
    Ok(claims)
}

/// The scope of a Key Vault access token for `vault_url`: the vault's domain, i.e. its host
/// without the vault's own label (`https://kv.vault.azure.net` → `https://vault.azure.net`),
/// port kept. This is the resource Key Vault's challenge names.
pub fn vault_scope(vault_url: &str) -> Option<String> {
    let url = url::Url::parse(vault_url).ok()?;
    let host = url.host_str()?;
    let (_, domain) = host.split_once('.')?;
    Some(match url.port() {
        Some(port) => format!("https://{domain}:{port}/.default"),
        None => format!("https://{domain}/.default"),
    })
}

/// Every identity the provider has used recently.
pub struct Identities {
    entries: Mutex<LruCache<IdentityKey, Arc<Identity>>>,
    hmac: hmac::Key,
    http: reqwest::Client,
    policy: CallPolicy,
    authority_override: Option<String>,
    token_proxy: Arc<TokenProxy>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("entries", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// An empty set of at most `capacity` identities. Token requests go through `http` with
    /// `policy` (identity binding's through `token_proxy`); `authority_override` replaces
    /// every cloud's Entra authority host.
    pub fn new(
        capacity: usize,
        http: reqwest::Client,
        policy: CallPolicy,
        authority_override: Option<String>,
        token_proxy: Arc<TokenProxy>,
    ) -> Result<Self, IdentityError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let hmac = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| IdentityError::Setup("cannot generate the cache key".into()))?;
        Ok(Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hmac,
            http,
            policy,
            authority_override,
            token_proxy,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<IdentityKey, Arc<Identity>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Identities held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn digest(&self, parts: &[&str]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.hmac);
        for part in parts {
            // Length-prefixed, so no two different part lists hash alike.
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let tag = ctx.sign();
        let mut out = [0; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Options of the credentials' token requests.
    fn client_options(&self) -> azure_core::http::ClientOptions {
        keyvault::client_options(self.http.clone(), &self.policy, Upstream::Entra)
    }

    /// Options of a workload identity's token requests: to Entra, or through the token proxy
    /// (same retries and deadline, another transport).
    fn exchange_options(&self, exchange: TokenExchange) -> azure_core::http::ClientOptions {
        match exchange {
            TokenExchange::Entra => self.client_options(),
            TokenExchange::IdentityBinding => {
                let mut options =
                    keyvault::client_options(self.http.clone(), &self.policy, Upstream::TokenProxy);
                options.transport = Some(azure_core::http::Transport::new(Arc::new(
                    TokenProxyTransport(Arc::clone(&self.token_proxy)),
                )));
                options
            }
        }
    }

    fn renewable(
        &self,
        source: CredentialSource,
        authority: &str,
    ) -> Result<Arc<credential::Renewable>, credential::CredentialError> {
        let (authority, options) = (authority.to_owned(), self.client_options());
        credential::Renewable::new(move || credential::build(&source, &authority, options.clone()))
    }

    /// The identity of a mount, created on first use.
    pub fn resolve(
        &self,
        params: &MountParams,
        cloud_authority: &str,
    ) -> Result<Arc<Identity>, IdentityError> {
        let authority = self
            .authority_override
            .as_deref()
            .unwrap_or(cloud_authority)
            .to_owned();
        let tenant = params.tenant_id.as_str();
        let (key, label) = match &params.auth {
            AuthMode::WorkloadIdentity {
                client_id,
                token,
                exchange,
                ..
            } => {
                let c = claims(token.expose_secret())?;
                if c.exp.is_some_and(|exp| exp <= unix_now()) {
                    return Err(IdentityError::BadToken("has expired"));
                }
                let (mode, what) = match exchange {
                    TokenExchange::Entra => ("wi", "workload identity"),
                    TokenExchange::IdentityBinding => ("ib", "identity binding"),
                };
                (
                    self.digest(&[mode, &authority, tenant, client_id, &c.iss, &c.sub]),
                    format!("{what} {client_id} for {}", c.sub),
                )
            }
            AuthMode::ServicePrincipal {
                client_id,
                client_secret,
            } => (
                self.digest(&[
                    "sp",
                    &authority,
                    tenant,
                    client_id,
                    client_secret.expose_secret(),
                ]),
                format!("service principal {client_id}"),
            ),
            AuthMode::ManagedIdentity {
                user_assigned_client_id,
            } => {
                let id = user_assigned_client_id.as_deref().unwrap_or_default();
                (
                    self.digest(&["mi", id]),
                    match user_assigned_client_id {
                        Some(id) => format!("user-assigned managed identity {id}"),
                        None => "system-assigned managed identity".to_owned(),
                    },
                )
            }
        };
        let key = IdentityKey(key);
        if let Some(found) = self.lock().get(&key) {
            return Ok(Arc::clone(found));
        }
        let identity = Arc::new(self.build(key, label, params, &authority)?);
        let mut entries = self.lock();
        // Another mount may have built the same identity meanwhile: keep the first.
        if let Some(found) = entries.get(&key) {
            return Ok(Arc::clone(found));
        }
        entries.put(key, Arc::clone(&identity));
        Ok(identity)
    }

    fn build(
        &self,
        key: IdentityKey,
        label: String,
        params: &MountParams,
        authority: &str,
    ) -> Result<Identity, IdentityError> {
        let setup = |e: credential::CredentialError| IdentityError::Setup(e.to_string());
        let tenant_id = params.tenant_id.clone();
        let (credential, federated) = match &params.auth {
            AuthMode::WorkloadIdentity {
                client_id,
                token,
                exchange,
                ..
            } => {
                // Starts with this request's token; `admit` decides whether it is accepted.
                let holder = FederatedToken::new(token.expose_secret());
                let credential = {
                    let (tenant_id, client_id, holder) =
                        (tenant_id.clone(), client_id.clone(), holder.clone());
                    let (authority, options) =
                        (authority.to_owned(), self.exchange_options(*exchange));
                    credential::Renewable::new(move || {
                        credential::federated(
                            &tenant_id,
                            &client_id,
                            holder.clone(),
                            &authority,
                            options.clone(),
                        )
                    })
                    .map_err(setup)?
                };
                let federated = Federated {
                    tenant_id,
                    client_id: client_id.clone(),
                    exchange: *exchange,
                    authority: authority.to_owned(),
                    token: holder,
                    token_expires: Mutex::new(i64::MIN),
                    accepted: Mutex::new(LruCache::new(
                        NonZeroUsize::new(ACCEPTED_TOKENS).unwrap_or(NonZeroUsize::MIN),
                    )),
                };
                (credential, Some(federated))
            }
            AuthMode::ServicePrincipal {
                client_id,
                client_secret,
            } => {
                let source = CredentialSource::ClientSecret {
                    tenant_id,
                    client_id: client_id.clone(),
                    secret: client_secret.clone(),
                };
                (self.renewable(source, authority).map_err(setup)?, None)
            }
            AuthMode::ManagedIdentity {
                user_assigned_client_id,
            } => {
                let source = CredentialSource::ManagedIdentity {
                    user_assigned_client_id: user_assigned_client_id.clone(),
                };
                (self.renewable(source, authority).map_err(setup)?, None)
            }
        };
        Ok(Identity {
            key,
            label,
            credential,
            federated,
        })
    }

    /// Lets a mount use `identity`: for workload identity, its token must be one Entra has
    /// accepted (exchanged now if it was not seen before, for `scope`). Other modes pass.
    pub async fn admit(
        &self,
        identity: &Identity,
        params: &MountParams,
        scope: &str,
    ) -> Result<(), IdentityError> {
        let (Some(federated), AuthMode::WorkloadIdentity { token, .. }) =
            (&identity.federated, &params.auth)
        else {
            return Ok(());
        };
        let token = token.expose_secret();
        let hash = self.digest(&["token", token]);
        let now = unix_now();
        {
            let mut accepted = federated
                .accepted
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if accepted.get(&hash).is_some_and(|exp| *exp > now) {
                return Ok(());
            }
        }
        let binding = federated.exchange == TokenExchange::IdentityBinding;
        if binding {
            // A clear error for a node that cannot use identity binding, before any request.
            self.token_proxy
                .server_name()
                .await
                .map_err(token_proxy_error)?;
        }
        let max_age = i64::try_from(MAX_ACCEPTED_TOKEN_AGE.as_secs()).unwrap_or(i64::MAX);
        let expires = claims(token)?
            .exp
            .unwrap_or(now + DEFAULT_TOKEN_LIFETIME_SECS)
            .min(now.saturating_add(max_age));
        // A credential of this token alone, without a token cache: the exchange happens now.
        let one_shot = credential::federated(
            &federated.tenant_id,
            &federated.client_id,
            FederatedToken::new(token),
            &federated.authority,
            self.exchange_options(federated.exchange),
        )
        .map_err(|e| IdentityError::Setup(e.to_string()))?;
        let deadline = self.policy.deadline;
        let entra = |error| IdentityError::Entra {
            identity: identity.label.clone(),
            error,
        };
        match upstream::within(deadline, one_shot.get_token(&[scope], None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if let Some(proxy_error) = token_proxy::find_error(&e) {
                    return Err(token_proxy_error(proxy_error.clone()));
                }
                let by = if binding {
                    Upstream::TokenProxy
                } else {
                    Upstream::Entra
                };
                return Err(match upstream::token_failure_at(&e, by) {
                    TokenFailure::Rejected(answer) if binding => IdentityError::Rejected(format!(
                        "{}: the identity binding token proxy did not accept the pod's service \
                         account token ({answer}; check that the identity binding and its RBAC \
                         grant cover this service account, and the clientID)",
                        identity.label
                    )),
                    TokenFailure::Rejected(answer) => IdentityError::Rejected(format!(
                        "{}: Microsoft Entra did not accept the pod's service account token \
                         ({answer}; check the federated identity credential's issuer and \
                         subject, and the clientID)",
                        identity.label
                    )),
                    TokenFailure::Failed(error) => entra(error),
                });
            }
            Err(_) => {
                return Err(entra(KvError::Unavailable {
                    by: if binding {
                        Upstream::TokenProxy
                    } else {
                        Upstream::Entra
                    },
                    reason: format!("it did not answer within {deadline:?}"),
                }));
            }
        }
        federated
            .accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(hash, expires);
        let mut latest = federated
            .token_expires
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if expires > *latest {
            federated.token.set(token);
            *latest = expires;
        }
        Ok(())
    }
}

/// The identity error of a token proxy that cannot be used.
fn token_proxy_error(e: TokenProxyError) -> IdentityError {
    IdentityError::TokenProxy {
        transient: matches!(
            e,
            TokenProxyError::Unavailable(_) | TokenProxyError::Certificate { .. }
        ),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload.as_bytes()))
    }

    #[test]
    fn claims_are_read_and_bad_tokens_named() {
        let c = claims(&jwt(
            r#"{"iss":"https://issuer","sub":"system:serviceaccount:a:b","exp":5}"#,
        ))
        .unwrap();
        assert_eq!(
            (c.iss.as_str(), c.sub.as_str(), c.exp),
            ("https://issuer", "system:serviceaccount:a:b", Some(5))
        );
        assert_eq!(
            claims("abc").err(),
            Some(IdentityError::BadToken("is not a JWT"))
        );
        assert!(claims("a.b.c.d").is_err());
        assert!(claims(&jwt("[1]")).is_err());
        assert!(claims(&jwt(r#"{"iss":"x"}"#)).is_err());
    }

    #[test]
    fn vault_scope_is_the_vault_domain() {
        assert_eq!(
            vault_scope("https://kv.vault.azure.net").as_deref(),
            Some("https://vault.azure.net/.default")
        );
        assert_eq!(
            vault_scope("https://kv.vault.localhost:8443/").as_deref(),
            Some("https://vault.localhost:8443/.default")
        );
        assert_eq!(vault_scope("https://localhost"), None);
    }
}
