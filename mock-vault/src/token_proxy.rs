//! AKS identity binding's token proxy, as a CSI provider meets it: an HTTPS endpoint at the
//! cluster's API server address that exchanges a pod's service-account token (audience
//! `api://AKSIdentityBinding`) for an Entra access token of a managed identity the service
//! account is bound to. One federated credential on the identity serves every cluster and
//! workload; the binding (an AKS resource plus an RBAC grant) is what says who may use it.
//!
//! What a client sees, and what this emulation checks:
//! - **One listener, two names.** The API server's own name
//!   (`kubernetes.default.svc.cluster.local`) and the identity-binding name
//!   (`a<base32hex(sha256("identity-binding" + cluster id))>.ests.aks`, lower case), told
//!   apart by the TLS server name (SNI). Both are in a certificate from the cluster's CA,
//!   which is not the CA of the vault and Entra listener: a client that trusts the wrong
//!   one fails, as on AKS. The API server's certificate also carries
//!   `hcp-kubernetes.<cluster id>.svc.cluster.local`, from which clients compute the
//!   identity-binding name.
//! - **The token request** is Entra's (`POST /<tenant>/oauth2/v2.0/token`, client
//!   credentials with a JWT client assertion) sent to the proxy under the identity-binding
//!   name. Any other server name or path is not the token endpoint.
//! - **The assertion** must be a token of mock-vault's service-account issuer for the
//!   audience `api://AKSIdentityBinding`, unexpired, with a valid signature; its subject
//!   must be listed in the identity's `identity_bindings`.
//!
//! Every request is logged with its `Host` header (the Go provider keeps Entra's host
//! there) and goes through fault injection as the operation `token_proxy.token`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::api::MAX_BODY;
use crate::entra::{EntraReply, JWT_BEARER, oauth_error, token_reply};
use crate::identity::{decode_jwt, unix, uuid_like};
use crate::server::{Body, DropConnection, entra_fault, json_response};
use crate::state::Shared;
use crate::stats::LogEntry;

/// The audience of the service-account tokens the proxy accepts.
pub const BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";

/// The API server's in-cluster name.
pub const API_SERVER_NAME: &str = "kubernetes.default.svc.cluster.local";

/// The operation name of token requests, for statistics and fault rules.
pub const TOKEN_OPERATION: &str = "token_proxy.token";

/// The identity-binding server name of a cluster: `a` + the unpadded base32 ("extended
/// hex" alphabet, RFC 4648 §7) of SHA-256(`identity-binding` + `cluster_id`), lower case,
/// + `.ests.aks`.
pub fn binding_server_name(cluster_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("identity-binding{cluster_id}").as_bytes(),
    );
    format!("a{}.ests.aks", base32hex_lower(digest.as_ref()))
}

fn base32hex_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let symbol = |v: u32| char::from(ALPHABET.get((v & 31) as usize).copied().unwrap_or(b'0'));
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
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

/// The emulated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster id in the API server certificate's `hcp-kubernetes.<id>.svc.cluster.local`.
    pub id: String,
    /// The identity-binding server name ([`binding_server_name`] of `id`).
    pub binding_name: String,
}

impl Cluster {
    /// A cluster with this id.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            binding_name: binding_server_name(id),
        }
    }

    /// The DNS names of the listener's certificate.
    pub fn certificate_names(&self) -> Vec<String> {
        vec![
            API_SERVER_NAME.to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes".to_owned(),
            format!("hcp-kubernetes.{}.svc.cluster.local", self.id),
            self.binding_name.clone(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ]
    }
}

/// Serves one request on the token-proxy listener; `server_name` is the connection's SNI.
pub async fn serve_request(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    server_name: Option<String>,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect::<String>())
    };
    let mut entry = LogEntry {
        operation: "apiserver".into(),
        host: header(header::HOST).or_else(|| parts.uri.authority().map(ToString::to_string)),
        server_name: server_name.clone(),
        ..LogEntry::begin(&parts.method, &path, &parts.headers, uuid_like())
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let resp = json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "invalid_request", "error_description": "body too large"}),
            );
            entry.status = resp.status().as_u16();
            shared.record(entry);
            return Ok(resp);
        }
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_binding = server_name
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(&cluster.binding_name));

    let resp = if !is_binding {
        // The API server itself: clients only need its certificate here.
        let (status, body) = if path == "/livez" || path == "/readyz" || path == "/healthz" {
            (StatusCode::OK, json!("ok"))
        } else {
            (
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "Forbidden", "code": 403,
                       "message": "forbidden: User \"system:anonymous\" cannot get path"}),
            )
        };
        json_response(status, &body)
    } else if let (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) =
        (&parts.method, segments.as_slice())
    {
        entry.operation = TOKEN_OPERATION.into();
        let decision = shared.decide(None, TOKEN_OPERATION, None);
        entry.faults.clone_from(&decision.fired);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        match entra_fault(decision.failure.as_ref()) {
            Some(Err(drop)) => {
                shared.record(entry);
                return Err(drop);
            }
            Some(Ok(resp)) => resp,
            None => {
                let out = token(&shared, tenant, &body);
                entry.identity = out.identity;
                json_response(out.status, &out.body)
            }
        }
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "invalid_request", "error_description": "not the token endpoint"}),
        )
    };
    entry.status = resp.status().as_u16();
    entry.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    shared.record(entry);
    Ok(resp)
}

fn token(shared: &Shared, tenant: &str, body: &[u8]) -> EntraReply {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let unauthorized = |code, description: &str| {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    };
    if !shared.knows_tenant(tenant) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            "Tenant not found.",
        );
    }
    if field("grant_type") != "client_credentials" || field("client_assertion_type") != JWT_BEARER {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "The token proxy accepts client credentials with a JWT client assertion only.",
        );
    }
    let scope = field("scope");
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid.",
        );
    }
    let Ok(jwt) = decode_jwt(field("client_assertion").trim()) else {
        return unauthorized(50027, "The client assertion is not a JWT.");
    };
    if jwt.claims.iss != shared.sa_issuer.issuer || !jwt.has_audience(BINDING_AUDIENCE) {
        return unauthorized(
            700211,
            "The client assertion is not a service-account token of this cluster for the \
             identity binding audience.",
        );
    }
    if jwt.check_time(unix(SystemTime::now())).is_err() {
        return unauthorized(700024, "The client assertion has expired.");
    }
    if jwt.verify(&shared.sa_issuer.public_key()).is_err() {
        return unauthorized(
            700027,
            "The client assertion's signature could not be verified.",
        );
    }
    let client_id = field("client_id");
    let subject = jwt.claims.sub.clone();
    let Some(identity) = shared
        .identity_by(|i| {
            i.client_id.eq_ignore_ascii_case(client_id) && i.identity_bindings.contains(&subject)
        })
        .filter(|i| i.tenant().eq_ignore_ascii_case(tenant))
    else {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            700016,
            "The service account is not bound to this identity (no identity binding grants \
             it the managed identity).",
        );
    };
    token_reply(shared, &identity, scope, TOKEN_OPERATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32hex_matches_rfc4648_vectors() {
        // RFC 4648 §10, base32hex without padding, lower case.
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
    fn binding_name_shape() {
        let name = binding_server_name("mock-cluster");
        assert!(
            name.starts_with('a') && name.ends_with(".ests.aks"),
            "{name}"
        );
        // 32 bytes of SHA-256 are 52 base32 characters.
        assert_eq!(name.len(), 1 + 52 + ".ests.aks".len());
        assert_ne!(name, binding_server_name("other"));
    }
}
