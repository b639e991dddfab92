//! The HTTPS server: connection handling, routing by host name and path, the challenge
//! flow, fault injection, statistics and persistence.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiError, Ctx, MAX_BODY, Principal, Reply};
use crate::entra;
use crate::faults::FaultKind;
use crate::identity::{Identity, TokenProblem};
use crate::state::lock;
pub use crate::state::{Body, Shared, VaultMeta};
use crate::stats::LogEntry;
use crate::store::{VaultCell, VaultKind};

impl Shared {
    /// Finds the vault a host name addresses: `<name>.vault.localhost`,
    /// `<name>.managedhsm.localhost`, or the default vault for `localhost` and IP literals.
    fn vault_for_host(&self, host: &str) -> Option<&str> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
            return Some(self.default_vault.as_str());
        }
        self.meta
            .iter()
            .find(|(_, m)| m.host == host)
            .map(|(name, _)| name.as_str())
    }

    /// Runs a vault API request as the control principal (no auth, faults or statistics).
    pub(crate) fn admin(
        &self,
        vault: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let name = vault.to_ascii_lowercase();
        let (Some(cell), Some(meta)) = (self.vaults.get(&name), self.meta.get(&name)) else {
            return Err(ApiError::bad_parameter(format!("No vault named {vault}.")));
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let principal = Principal::System;
        let ctx = Ctx {
            method,
            segments,
            query: api::parse_query(query),
            body: &body,
            base: &meta.url,
            vault: &name,
            principal: &principal,
            region: &self.region,
        };
        let out = dispatch(self, &ctx, cell, meta.kind);
        self.persist_if_dirty();
        out
    }
}

/// Routes a vault request to its handler.
fn dispatch(shared: &Shared, ctx: &Ctx<'_>, cell: &VaultCell, kind: VaultKind) -> api::ApiResult {
    match ctx.segments.first().copied() {
        Some("keys" | "deletedkeys") => crate::keys::handle(ctx, cell),
        Some("secrets" | "deletedsecrets") if kind == VaultKind::Vault => {
            crate::secrets::handle(ctx, cell)
        }
        Some("certificates" | "deletedcertificates") if kind == VaultKind::Vault => {
            crate::certificates::handle(ctx, cell, &shared.issuers)
        }
        _ => Err(ApiError::no_route(ctx.method, &ctx.segments.join("/"))),
    }
}

/// The operation name used in statistics and fault scopes, e.g. `keys.decrypt`.
pub fn operation_name(method: &Method, segments: &[&str]) -> String {
    let family = match segments.first().copied().unwrap_or("") {
        "keys" | "deletedkeys" => "keys",
        "secrets" | "deletedsecrets" => "secrets",
        "certificates" | "deletedcertificates" => "certificates",
        _ => return "unknown".into(),
    };
    let deleted = segments.first().is_some_and(|s| s.starts_with("deleted"));
    let action = match (method, segments.get(1..).unwrap_or_default()) {
        (&Method::GET, []) | (&Method::GET, [""]) => "list",
        _ if deleted => match *method {
            Method::GET => "getdeleted",
            Method::DELETE => "purge",
            _ => "recover",
        },
        (&Method::GET, [_, "versions"]) => "listversions",
        (&Method::GET, [_, "rotationpolicy"]) => "getrotationpolicy",
        (&Method::PUT, [_, "rotationpolicy"]) => "setrotationpolicy",
        (&Method::GET, [_, "pending"]) => "getoperation",
        (&Method::GET, [_, "policy"]) => "getpolicy",
        (&Method::GET, _) => "get",
        (&Method::PUT, [_]) => "set",
        (&Method::DELETE, [_]) => "delete",
        (&Method::PATCH, _) => "update",
        (&Method::POST, [_, op]) => op,
        (&Method::POST, [_, _, op]) => op,
        _ => "other",
    };
    format!("{family}.{}", action.to_ascii_lowercase())
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    if !body.is_null() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.status, &e.body());
    if let Ok(v) = HeaderValue::from_str(&e.code) {
        resp.headers_mut().insert("x-ms-error-code", v);
    }
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn add_service_headers(resp: &mut Response<Body>, request_id: &str, region: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-ms-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(region) {
        h.insert("x-ms-keyvault-region", v);
    }
    h.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static("1.9.2.0"),
    );
    h.insert(
        "x-ms-keyvault-network-info",
        HeaderValue::from_static("conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"),
    );
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        h.insert(header::DATE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000;includeSubDomains"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The request could not be answered: the connection must drop (injected reset or outage).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// What an Entra-style endpoint (Entra, the token proxy) answers for an injected fault:
/// `None` when the request is to be served (no fault, or latency only, already slept),
/// `Err` when the connection drops.
pub(crate) fn entra_fault(
    failure: Option<&FaultKind>,
) -> Option<Result<Response<Body>, DropConnection>> {
    match failure? {
        FaultKind::Reset | FaultKind::Outage => Some(Err(DropConnection)),
        FaultKind::Throttle { retry_after_secs } => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({"error": "temporarily_unavailable", "error_description": "throttled", "error_codes": [50196]}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            Some(Ok(r))
        }
        FaultKind::Status { status } => Some(Ok(json_response(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &serde_json::json!({"error": "temporarily_unavailable", "error_description": "injected failure", "error_codes": [0]}),
        ))),
        FaultKind::Latency { .. } => None,
    }
}

/// Serves one HTTP request on the vault/Entra port.
pub async fn serve_request(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let started = Instant::now();
    let request_id = crate::identity::uuid_like();
    let (parts, body) = req.into_parts();
    let host = parts
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| {
                    // Strip a port, including from bracketed IPv6 literals.
                    if let Some(rest) = h.strip_prefix('[') {
                        rest.split(']').next().unwrap_or("").to_owned()
                    } else {
                        h.split(':').next().unwrap_or("").to_owned()
                    }
                })
        })
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = api::parse_query(parts.uri.query());
    let method = parts.method.clone();

    // Bounded body read: an oversized body is refused, never buffered.
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::bad_parameter(format!(
                "The request body is larger than {MAX_BODY} bytes or could not be read."
            ));
            let mut resp = error_response(&e);
            add_service_headers(&mut resp, &request_id, &shared.region);
            return Ok(resp);
        }
    };

    let mut entry = LogEntry::begin(&method, &path, &parts.headers, request_id.clone());

    if entra::is_entra_path(&segments) {
        let op = match segments.as_slice() {
            [_, "oauth2", ..] => "entra.token",
            ["msi", ..] | ["metadata", ..] => "entra.managed_identity",
            _ => "entra.discovery",
        };
        entry.operation = op.into();
        let decision = shared.decide(None, op, None);
        entry.faults.clone_from(&decision.fired);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        let resp = match entra_fault(decision.failure.as_ref()) {
            Some(Err(drop)) => {
                shared.record(entry);
                return Err(drop);
            }
            Some(Ok(resp)) => resp,
            None => {
                let out = entra::handle(&shared, &method, &segments, &query, &parts.headers, &body);
                entry.identity = out.identity;
                entry.operation = out.operation.into();
                json_response(out.status, &out.body)
            }
        };
        entry.status = resp.status().as_u16();
        entry.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.record(entry);
        return Ok(resp);
    }

    let op = operation_name(&method, &segments);
    entry.operation.clone_from(&op);
    let Some(vault) = shared.vault_for_host(&host).map(str::to_owned) else {
        let e = ApiError {
            status: StatusCode::NOT_FOUND,
            code: "VaultNotFound".into(),
            message: format!(
                "No vault answers at host {}.",
                host.chars().take(255).collect::<String>()
            ),
            inner: None,
            retry_after: None,
        };
        let mut resp = error_response(&e);
        add_service_headers(&mut resp, &request_id, &shared.region);
        entry.status = resp.status().as_u16();
        shared.record(entry);
        return Ok(resp);
    };
    entry.vault = Some(vault.clone());
    let (Some(cell), Some(meta)) = (shared.vaults.get(&vault), shared.meta.get(&vault)) else {
        return Err(DropConnection);
    };

    // Authenticate: a valid bearer token for this vault's resource and tenant.
    let tenant = cell.read(|v| v.tenant.clone());
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let auth: Result<Identity, Option<TokenProblem>> = match bearer {
        None => Err(None),
        Some(token) => {
            let checked = lock(&shared.tokens)
                .check(token, &meta.resource, &tenant)
                .map(|g| g.identity.clone());
            match checked {
                Ok(name) => shared
                    .identity_by(|i| i.name == name)
                    .ok_or(Some(TokenProblem::Unknown)),
                Err(p) => Err(Some(p)),
            }
        }
    };
    let identity_name = auth.as_ref().ok().map(|i| i.name.clone());
    entry.identity.clone_from(&identity_name);

    let decision = shared.decide(Some(&vault), &op, identity_name.as_deref());
    entry.faults.clone_from(&decision.fired);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let result: Result<Reply, ApiError> = match decision.failure {
        Some(FaultKind::Reset | FaultKind::Outage) => {
            entry.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            shared.record(entry);
            return Err(DropConnection);
        }
        Some(FaultKind::Throttle { retry_after_secs }) => {
            Err(ApiError::throttled(retry_after_secs))
        }
        Some(FaultKind::Status { status }) => Err(ApiError::server_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        )),
        Some(FaultKind::Latency { .. }) | None => match auth {
            Err(problem) => Err(ApiError::unauthorized(match problem {
                None => "AKV10000: Request is missing a Bearer or PoP token.",
                Some(TokenProblem::Expired) => "AKV10013: Token is expired.",
                Some(TokenProblem::WrongAudience) => {
                    "AKV10022: Invalid audience: the token was issued for another resource."
                }
                Some(TokenProblem::WrongTenant) => {
                    "AKV10032: Invalid issuer: the token was issued by another tenant."
                }
                Some(TokenProblem::Unknown) => "AKV10000: The bearer token is not valid.",
            })),
            Ok(identity) => {
                let principal = Principal::Identity(Box::new(identity));
                let ctx = Ctx {
                    method: &method,
                    segments: segments.clone(),
                    query,
                    body: &body,
                    base: &meta.url,
                    vault: &vault,
                    principal: &principal,
                    region: &shared.region,
                };
                dispatch(&shared, &ctx, cell, meta.kind)
            }
        },
    };

    let mut resp = match &result {
        Ok(reply) => {
            let mut r = json_response(reply.status, &reply.body);
            if op.starts_with("certificates.") {
                // The certificate poller sleeps for this long between polls.
                r.headers_mut()
                    .insert("retry-after-ms", HeaderValue::from_static("100"));
            }
            r
        }
        Err(e) => {
            let mut r = error_response(e);
            if e.status == StatusCode::UNAUTHORIZED {
                let challenge = format!(
                    "Bearer authorization=\"{}/{}\", resource=\"{}\"",
                    shared.authority, tenant, meta.resource
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            r
        }
    };
    add_service_headers(&mut resp, &request_id, &shared.region);
    entry.status = resp.status().as_u16();
    entry.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match &result {
        Ok(_) if method != Method::GET => shared.persist_if_dirty(),
        _ => {}
    }
    shared.record(entry);
    Ok(resp)
}

/// What a TLS listener serves.
#[derive(Debug, Clone)]
pub enum Role {
    /// The vaults and Entra.
    Vaults,
    /// AKS identity binding's token proxy (and the API server's name).
    TokenProxy(Arc<crate::token_proxy::Cluster>),
}

/// Accepts TLS connections until `shutdown` flips, serving each with hyper (HTTP/1.1 and
/// HTTP/2) in `role`.
pub async fn run_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        let role = role.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let server_name = stream.get_ref().1.server_name().map(str::to_owned);
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let role = role.clone();
                let server_name = server_name.clone();
                async move {
                    match role {
                        Role::Vaults => serve_request(shared, req).await,
                        Role::TokenProxy(cluster) => {
                            crate::token_proxy::serve_request(shared, cluster, server_name, req)
                                .await
                        }
                    }
                }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Accepts plain HTTP/1.1 connections for the control API.
pub async fn run_control(
    listener: TcpListener,
    shared: Arc<Shared>,
    info: Arc<crate::Info>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        let shared = Arc::clone(&shared);
        let info = Arc::clone(&info);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let info = Arc::clone(&info);
                async move { Ok::<_, Infallible>(crate::control::handle(&shared, &info, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}
