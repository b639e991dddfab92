//! The control API: plain HTTP on a loopback-only listener, separate from the vault API.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /info` | the start-up information |
//! | `GET /stats`, `DELETE /stats` | request counters; reset them (and the log) |
//! | `GET /log?limit=N` | the last N requests |
//! | `GET /faults`, `POST /faults`, `DELETE /faults`, `DELETE /faults/{id}` | fault rules |
//! | `POST /tokens/expire` | every issued token expires now |
//! | `POST /sa-tokens` | a service-account JWT from the mock's issuer |
//! | `GET /identities`, `PUT /identities/{name}`, `DELETE /identities/{name}` | identities |
//! | `PUT /identities/{name}/permissions` | replace one identity's permissions |
//! | `ANY /vaults/{vault}/{vault API path}` | the vault REST API as an all-powerful caller |

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Info;
use crate::api::{self, MAX_BODY};
use crate::faults::FaultSpec;
use crate::identity::{Identity, VaultPermissions, WORKLOAD_AUDIENCE};
use crate::state::{Body, Shared};

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn bad(message: impl Into<String>) -> Response<Body> {
    reply(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": "BadRequest", "message": message.into()}}),
    )
}

#[derive(Debug, Deserialize)]
struct SaTokenRequest {
    subject: String,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// Handles one control request.
pub async fn handle(shared: &Shared, info: &Info, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad(format!("body larger than {MAX_BODY} bytes")),
    };
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = api::parse_query(parts.uri.query());
    let m = &parts.method;
    match segments.as_slice() {
        ["info"] if m == Method::GET => reply(StatusCode::OK, &json!(info)),
        ["stats"] if m == Method::GET => {
            let snap = shared
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot();
            reply(StatusCode::OK, &json!(snap))
        }
        ["stats"] if m == Method::DELETE => {
            shared
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reset();
            reply(StatusCode::OK, &json!({}))
        }
        ["log"] if m == Method::GET => {
            let limit = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let log = shared
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .log(limit);
            reply(StatusCode::OK, &json!(log))
        }
        ["faults"] if m == Method::GET => {
            let list: Vec<Value> = shared
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .list()
                .into_iter()
                .map(
                    |(id, spec, remaining)| json!({"id": id, "spec": spec, "remaining": remaining}),
                )
                .collect();
            reply(StatusCode::OK, &json!(list))
        }
        ["faults"] if m == Method::POST => {
            let spec: FaultSpec = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => return bad(format!("invalid fault: {e}")),
            };
            match shared
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(spec)
            {
                Ok(id) => reply(StatusCode::CREATED, &json!({"id": id})),
                Err(e) => bad(e.to_string()),
            }
        }
        ["faults"] if m == Method::DELETE => {
            shared
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            reply(StatusCode::OK, &json!({}))
        }
        ["faults", id] if m == Method::DELETE => {
            let Ok(id) = id.parse() else {
                return bad("fault id must be a number");
            };
            let removed = shared
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
            if removed {
                reply(StatusCode::OK, &json!({}))
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    &json!({"error": {"code": "NotFound", "message": "no such fault"}}),
                )
            }
        }
        ["tokens", "expire"] if m == Method::POST => {
            shared
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .expire_all();
            reply(StatusCode::OK, &json!({}))
        }
        ["sa-tokens"] if m == Method::POST => {
            let req: SaTokenRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return bad(format!("invalid request: {e}")),
            };
            let audiences = req
                .audiences
                .unwrap_or_else(|| vec![WORKLOAD_AUDIENCE.to_owned()]);
            let ttl = Duration::from_secs(req.ttl_secs.unwrap_or(3600));
            match shared.sa_issuer.sign(&req.subject, &audiences, ttl) {
                Some(token) => reply(StatusCode::OK, &json!({"token": token})),
                None => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "signing failed"}),
                ),
            }
        }
        ["identities"] if m == Method::GET => {
            let ids: Vec<Value> = shared
                .identities
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|i| {
                    json!({"name": i.name, "client_id": i.client_id, "object_id": i.object_id,
                           "tenant": i.tenant, "managed": i.managed, "permissions": i.permissions})
                })
                .collect();
            reply(StatusCode::OK, &json!(ids))
        }
        ["identities", name] if m == Method::PUT => {
            let mut identity: Identity = match serde_json::from_slice(&body) {
                Ok(i) => i,
                Err(e) => return bad(format!("invalid identity: {e}")),
            };
            if identity.name != *name {
                return bad("the identity's name must match the path");
            }
            let tenant = shared.tenants.first().cloned().unwrap_or_default();
            identity.normalise(&tenant);
            upsert_identity(shared, identity);
            reply(StatusCode::OK, &json!({}))
        }
        ["identities", name] if m == Method::DELETE => {
            shared
                .identities
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|i| i.name != *name);
            shared
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .revoke_identity(name);
            reply(StatusCode::OK, &json!({}))
        }
        ["identities", name, "permissions"] if m == Method::PUT => {
            let perms: BTreeMap<String, VaultPermissions> = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => return bad(format!("invalid permissions: {e}")),
            };
            if set_permissions(shared, name, perms) {
                reply(StatusCode::OK, &json!({}))
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    &json!({"error": {"code": "NotFound", "message": "no such identity"}}),
                )
            }
        }
        ["vaults", vault, rest @ ..] if !rest.is_empty() => {
            let api_path = format!("/{}", rest.join("/"));
            match shared.admin(vault, m, &api_path, parts.uri.query(), body) {
                Ok(r) => reply(r.status, &r.body),
                Err(e) => reply(e.status, &e.body()),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "NotFound", "message": format!("no control operation {m} {path}")}}),
        ),
    }
}

/// Adds or replaces an identity.
pub fn upsert_identity(shared: &Shared, identity: Identity) {
    let mut ids = shared
        .identities
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    ids.retain(|i| i.name != identity.name);
    ids.push(identity);
}

/// Replaces one identity's permissions; false if it does not exist.
pub fn set_permissions(
    shared: &Shared,
    name: &str,
    mut perms: BTreeMap<String, VaultPermissions>,
) -> bool {
    let mut ids = shared
        .identities
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(identity) = ids.iter_mut().find(|i| i.name == name) else {
        return false;
    };
    for p in perms.values_mut() {
        for set in [&mut p.keys, &mut p.secrets, &mut p.certificates] {
            *set = set.iter().map(|s| s.to_ascii_lowercase()).collect();
        }
    }
    identity.permissions = perms;
    true
}
