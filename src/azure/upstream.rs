//! Who failed upstream, and how: Key Vault or Microsoft Entra; an outage, throttling, a
//! rejected credential, or a TLS certificate that could not be verified. One classification,
//! `classify`, turns an SDK error into a [`KvError`] for both servers.
//!
//! - **A rejection is Entra's answer, not a guess.** A token request that fails carries, under
//!   `azure_identity`'s `Credential` error, the HTTP status and the OAuth error body of Entra
//!   (or of the managed identity endpoint). 400 and 401 (`invalid_client`, `invalid_grant`,
//!   `unauthorized_client`, ...) reject the credential; 408, 5xx and `temporarily_unavailable`
//!   are outages; 429 is throttling; no answer at all is an outage.
//! - **A `Retry-After` beyond the deadline fails at once.** The SDK's retry policy sleeps for
//!   `Retry-After` whatever the deadline. `UpstreamPolicy`, a per-try policy on every Key
//!   Vault and Entra pipeline, sees each answer and the deadline of the call it belongs to
//!   (`within`), and ends the call when a 429 or 503 asks for a wait that outlasts it.
//! - **A deadline names who was slow.** The policy also records whether the call was waiting
//!   for Key Vault or for an access token, so an Entra that hangs is not reported as a slow
//!   Key Vault.
//! - **A certificate that cannot be verified says so** (found as rustls'
//!   `InvalidCertificate` under the transport error), and is not retried.
//!
//! Messages carry status codes, OAuth error names from a fixed list and AADSTS numbers,
//! never upstream bodies, tokens or secrets.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::error::ErrorKind;
use azure_core::http::headers::{Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{Policy, PolicyResult, get_retry_after};
use azure_core::http::{Context, RawResponse, Request, StatusCode};

use crate::azure::keyvault::{KvError, Throttle};

/// The service a failure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The Key Vault (or Managed HSM) data plane.
    KeyVault,
    /// Microsoft Entra's token endpoint, or the managed identity endpoint that stands in for
    /// it.
    Entra,
    /// AKS identity binding's token proxy, which exchanges a pod's token in Entra's place
    /// (`crate::csi::token_proxy`).
    TokenProxy,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeyVault => "Key Vault",
            Self::Entra => "Microsoft Entra",
            Self::TokenProxy => "the identity binding token proxy",
        })
    }
}

/// What a call is waiting for, as far as [`UpstreamPolicy`] has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Our own concurrency limit.
    Queue,
    /// An access token: Entra, or another call already asking it for the same token.
    Token,
    /// Key Vault: a request in flight, or the retry policy's pause after its answer.
    KeyVault,
}

/// The call the current task is running: its deadline and what it waits for.
struct Call {
    deadline: Instant,
    waiting: Cell<Waiting>,
}

tokio::task_local! {
    static CALL: Call;
}

fn mark(waiting: Waiting) {
    let _ = CALL.try_with(|c| c.waiting.set(waiting));
}

/// Marks that the call holds its concurrency permit: from now on, time not spent on a Key
/// Vault request goes to getting an access token.
pub(crate) fn started() {
    mark(Waiting::Token);
}

/// Runs `f` with a deadline that [`UpstreamPolicy`] sees. On expiry, says who the call was
/// waiting for: Key Vault (its answer, or our queue in front of it) or Microsoft Entra.
pub(crate) async fn within<F: Future>(deadline: Duration, f: F) -> Result<F::Output, Upstream> {
    let call = Call {
        deadline: Instant::now() + deadline,
        waiting: Cell::new(Waiting::Queue),
    };
    CALL.scope(call, async move {
        tokio::time::timeout(deadline, f)
            .await
            .map_err(|_| match CALL.with(|c| c.waiting.get()) {
                Waiting::Token => Upstream::Entra,
                Waiting::Queue | Waiting::KeyVault => Upstream::KeyVault,
            })
    })
    .await
}

/// What [`UpstreamPolicy`] ends a try with.
#[derive(Debug, thiserror::Error)]
enum Cut {
    /// A 429 or 503 whose `Retry-After` is beyond what is left of the deadline.
    #[error("{by} answered {status} with Retry-After {retry_after:?}, beyond the deadline")]
    WaitPastDeadline {
        by: Upstream,
        status: u16,
        retry_after: Duration,
    },
    /// The server's certificate could not be verified.
    #[error("the TLS certificate of {host} could not be verified: {reason}")]
    Certificate {
        by: Upstream,
        host: String,
        reason: String,
    },
}

/// The per-try policy of every Key Vault and Entra pipeline (see the module documentation).
#[derive(Debug)]
pub(crate) struct UpstreamPolicy {
    by: Upstream,
    /// The deadline used when no [`within`] scope encloses the call.
    budget: Duration,
}

impl UpstreamPolicy {
    /// A policy for requests to `by`; `budget` stands in for the deadline of calls made
    /// outside [`within`].
    pub(crate) fn arc(by: Upstream, budget: Duration) -> Arc<dyn Policy> {
        Arc::new(Self { by, budget })
    }

    fn left(&self) -> Duration {
        CALL.try_with(|c| c.deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(self.budget)
    }
}

/// The rest of a pipeline, after one policy.
pub type Policies<'a> = &'a [Arc<dyn Policy>];

/// The policy after `policy` in a pipeline and the ones after that, for our policies'
/// `send`; an error (never a panic) if `policy` was placed last.
pub fn next_policy<'a>(
    next: &'a [Arc<dyn Policy>],
    policy: &str,
) -> azure_core::Result<(&'a Arc<dyn Policy>, Policies<'a>)> {
    next.split_first().ok_or_else(|| {
        azure_core::Error::with_message(ErrorKind::Other, format!("no policy after the {policy}"))
    })
}

// The trait declares `&Context` with its lifetime hidden; `async_trait` needs the same.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for UpstreamPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let (inner, rest) = next_policy(next, "upstream policy")?;
        mark(match self.by {
            Upstream::KeyVault => Waiting::KeyVault,
            Upstream::Entra | Upstream::TokenProxy => Waiting::Token,
        });
        let response = match inner.send(ctx, request, rest).await {
            Ok(response) => response,
            Err(e) => {
                return Err(match certificate_problem(&e) {
                    // Not `Io`/`Connection`: the retry policy gives up at once.
                    Some(reason) => azure_core::Error::new(
                        ErrorKind::Other,
                        Cut::Certificate {
                            by: self.by,
                            host: request.url().host_str().unwrap_or("?").to_owned(),
                            reason,
                        },
                    ),
                    None => e,
                });
            }
        };
        let status = response.status();
        if self.by == Upstream::KeyVault && status == StatusCode::Unauthorized {
            // The authorization policy gets a token next (the challenge, or a rejected one).
            mark(Waiting::Token);
        }
        if matches!(
            status,
            StatusCode::TooManyRequests | StatusCode::ServiceUnavailable
        ) && let Some(retry_after) = retry_after(response.headers())
            && retry_after > self.left()
        {
            return Err(azure_core::Error::new(
                ErrorKind::Other,
                Cut::WaitPastDeadline {
                    by: self.by,
                    status: u16::from(status),
                    retry_after,
                },
            ));
        }
        Ok(response)
    }
}

/// The wait an answer asks for, read as the SDK's retry policy reads it.
fn retry_after(headers: &Headers) -> Option<Duration> {
    get_retry_after(
        headers,
        azure_core::time::OffsetDateTime::now_utc,
        &[X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
    )
    .map(|d| d.unsigned_abs())
}

/// Why a server's certificate was refused, if that is what `e` (or an error under it) says.
pub(crate) fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(describe_certificate_error(c));
        }
        // `io::Error::source` skips the error it wraps (tokio-rustls wraps rustls' error in
        // one, hyper-util that one in another): step into it instead.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let text = match e {
        C::UnknownIssuer => "it is not issued by a trusted CA (unknown issuer)".to_owned(),
        C::NotValidForName => "it is not valid for this host name".to_owned(),
        C::Expired => "it has expired".to_owned(),
        C::NotValidYet => "it is not valid yet".to_owned(),
        C::Revoked => "it has been revoked".to_owned(),
        C::BadSignature => "its signature is invalid".to_owned(),
        // The context variants print names and times: public facts of the certificate.
        other => other.to_string(),
    };
    text.chars().take(300).collect()
}

/// `e` and the errors under it, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}

/// The SDK errors in `e`'s chain, outermost first.
fn sdk_errors<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a azure_core::Error> {
    chain(e).filter_map(|err| err.downcast_ref::<azure_core::Error>())
}

/// Whether an error (or any error under it) is a failure to reach the service at all, as
/// opposed to the service answering.
pub(crate) fn transport_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    chain(e).any(|err| {
        err.downcast_ref::<azure_core::Error>()
            .is_some_and(|az| matches!(az.kind(), ErrorKind::Io | ErrorKind::Connection))
            || err
                .downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_connect() || r.is_timeout() || r.is_request())
            || err.downcast_ref::<std::io::Error>().is_some()
    })
}

/// The first error of type `T` in `e`'s chain, `e` included.
pub(crate) fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    chain(e).find_map(|err| err.downcast_ref::<T>())
}

/// Whether an SDK error under `e` says an answer could not be read (not JSON, not the
/// expected shape).
fn data_conversion(e: &azure_core::Error) -> bool {
    sdk_errors(e).any(|az| matches!(az.kind(), ErrorKind::DataConversion))
}

/// The HTTP answer an SDK error carries, anywhere in its chain.
fn http_answer(e: &azure_core::Error) -> Option<(u16, Option<&str>, Option<&RawResponse>)> {
    sdk_errors(e).find_map(|az| match az.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => Some((
            u16::from(*status),
            error_code.as_deref(),
            raw_response.as_deref(),
        )),
        _ => None,
    })
}

/// The OAuth `error` of a token endpoint's answer, when it is one of the standard values
/// (anything else is not repeated).
fn oauth_error(body: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    const KNOWN: &[&str] = &[
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "interaction_required",
        "consent_required",
        "invalid_resource",
        "server_error",
        "temporarily_unavailable",
    ];
    let parsed: OAuthError = serde_json::from_slice(body).ok()?;
    KNOWN.iter().copied().find(|k| *k == parsed.error)
}

/// How a token request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenFailure {
    /// Entra (or the managed identity endpoint) rejected the credential; the text names its
    /// answer, e.g. `invalid_client, AADSTS7000215, HTTP 401`.
    Rejected(String),
    /// Anything else: an outage, throttling, a certificate, a slow answer.
    Failed(KvError),
}

/// Classifies the failure of a credential's `get_token`, its token endpoint being Entra's.
pub(crate) fn token_failure(e: &azure_core::Error) -> TokenFailure {
    token_failure_at(e, Upstream::Entra)
}

/// Classifies the failure of a credential's `get_token` whose token endpoint is `by`'s
/// (Entra, or AKS identity binding's token proxy).
pub(crate) fn token_failure_at(e: &azure_core::Error, by: Upstream) -> TokenFailure {
    if let Some(cut) = find::<Cut>(e) {
        return TokenFailure::Failed(from_cut(cut));
    }
    let entra = |reason: String| TokenFailure::Failed(KvError::Unavailable { by, reason });
    if let Some((status, codes, raw)) = http_answer(e) {
        let oauth = raw.and_then(|r| oauth_error(r.body()));
        return match status {
            429 => TokenFailure::Failed(KvError::Throttled(Throttle {
                by,
                retry_after: raw.and_then(|r| retry_after(r.headers())),
                beyond_deadline: false,
            })),
            408 | 500..=599 => entra(format!("HTTP {status}")),
            _ if oauth == Some("temporarily_unavailable") => {
                entra(format!("HTTP {status}, temporarily_unavailable"))
            }
            _ => {
                let mut parts: Vec<String> = oauth.map(str::to_owned).into_iter().collect();
                if let Some(codes) = codes {
                    let codes: String = codes
                        .chars()
                        .filter(|c| c.is_ascii_digit() || *c == ',')
                        .take(40)
                        .collect();
                    if !codes.is_empty() {
                        parts.push(format!("AADSTS{}", codes.replace(',', ", AADSTS")));
                    }
                }
                parts.push(format!("HTTP {status}"));
                TokenFailure::Rejected(parts.join(", "))
            }
        };
    }
    if transport_failure(e) {
        return entra("it could not be reached".into());
    }
    if data_conversion(e) {
        return entra("its answer is not a token response".into());
    }
    TokenFailure::Rejected("no token could be had".into())
}

fn from_cut(cut: &Cut) -> KvError {
    match cut {
        Cut::WaitPastDeadline {
            by,
            status: 429,
            retry_after,
        } => KvError::Throttled(Throttle {
            by: *by,
            retry_after: Some(*retry_after),
            beyond_deadline: true,
        }),
        Cut::WaitPastDeadline {
            by,
            status,
            retry_after,
        } => KvError::Unavailable {
            by: *by,
            reason: format!(
                "HTTP {status}, Retry-After {retry_after:?} is beyond this call's deadline"
            ),
        },
        Cut::Certificate { by, host, reason } => KvError::Certificate {
            by: *by,
            host: host.clone(),
            reason: reason.clone(),
        },
    }
}

/// Maps an SDK error to our classification. `permission` is the data action the call
/// needed, so a 403 can name it; upstream messages are summarised, not forwarded.
pub(crate) fn classify(e: &azure_core::Error, permission: &'static str, what: &str) -> KvError {
    if let Some(cut) = find::<Cut>(e) {
        return from_cut(cut);
    }
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let code = u16::from(*status);
            let text = e.to_string();
            match code {
                404 => KvError::NotFound(what.to_owned()),
                403 => forbidden(&text, permission, what),
                401 => KvError::Unauthenticated {
                    by: Upstream::KeyVault,
                    reason: format!(
                        "Key Vault answered 401 ({})",
                        error_code.as_deref().unwrap_or("Unauthorized")
                    ),
                },
                429 => KvError::Throttled(Throttle {
                    by: Upstream::KeyVault,
                    retry_after: raw_response
                        .as_deref()
                        .and_then(|r| retry_after(r.headers())),
                    beyond_deadline: false,
                }),
                400 => KvError::Rejected(
                    error_code
                        .as_deref()
                        .unwrap_or("BadParameter")
                        .chars()
                        .take(64)
                        .collect(),
                ),
                _ => KvError::Unavailable {
                    by: Upstream::KeyVault,
                    reason: format!("HTTP {code}"),
                },
            }
        }
        ErrorKind::Credential => match token_failure(e) {
            TokenFailure::Failed(error) => error,
            TokenFailure::Rejected(answer) => KvError::Unauthenticated {
                by: Upstream::Entra,
                reason: format!(
                    "Microsoft Entra rejected the credential ({answer}); check the identity \
                     configuration: client id, tenant, secret or certificate, federated \
                     credential"
                ),
            },
        },
        ErrorKind::Io | ErrorKind::Connection => KvError::Unavailable {
            by: Upstream::KeyVault,
            reason: "connection failed".into(),
        },
        _ => KvError::Unavailable {
            by: Upstream::KeyVault,
            reason: "unexpected client error".into(),
        },
    }
}

/// A 403: a firewall, an unusable key version, or a missing permission.
fn forbidden(text: &str, permission: &'static str, what: &str) -> KvError {
    let lower = text.to_ascii_lowercase();
    // A vault firewall or private-endpoint refusal is the network path, not the identity:
    // an outage for this client, not a revocation.
    if lower.contains("firewall") || lower.contains("client address is not authorized") {
        return KvError::Unavailable {
            by: Upstream::KeyVault,
            reason: "the vault's firewall refused this client (ForbiddenByFirewall)".into(),
        };
    }
    let reason =
        if lower.contains("not permitted on this key") || lower.contains("keyoperationforbidden") {
            Some("not allowed by the key's key_ops")
        } else if lower.contains("disabled") {
            Some("disabled")
        } else if lower.contains("expired") {
            Some("expired")
        } else if lower.contains("not yet valid") || lower.contains("notyetvalid") {
            Some("not yet valid")
        } else {
            None
        };
    match reason {
        Some(reason) => KvError::KeyUnusable {
            version: what.to_owned(),
            reason,
        },
        None => KvError::PermissionDenied(permission),
    }
}

#[cfg(test)]
mod tests;
