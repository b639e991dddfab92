//! Microsoft Entra endpoints: the client-credentials token endpoint (secret, certificate and
//! federated assertions), OpenID discovery, and the two managed-identity endpoints (App
//! Service style and IMDS style).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::identity::{
    AssertionError, Identity, ManagedKind, TokenGrant, cert_public_key, decode_jwt,
    normalise_resource, unix, uuid_like,
};
use crate::state::Shared;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An Entra answer: status and JSON body.
#[derive(Debug)]
pub struct EntraReply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Value,
    /// Identity the request authenticated as (for statistics).
    pub identity: Option<String>,
    /// Operation name (for statistics).
    pub operation: &'static str,
}

fn reply(status: StatusCode, body: Value, op: &'static str) -> EntraReply {
    EntraReply {
        status,
        body,
        identity: None,
        operation: op,
    }
}

/// An OAuth error in Entra's shape. Descriptions carry no JSON escapes (the Rust SDK parses
/// them as borrowed strings).
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> EntraReply {
    let description = crate::api::escape_free(&format!(
        "AADSTS{code}: {description} Trace ID: {} Correlation ID: {} Timestamp: {}",
        uuid_like(),
        uuid_like(),
        httpdate::fmt_http_date(SystemTime::now())
    ));
    reply(
        status,
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": httpdate::fmt_http_date(SystemTime::now()),
            "trace_id": uuid_like(),
            "correlation_id": uuid_like(),
        }),
        "entra.token",
    )
}

/// Whether a path belongs to the Entra side of the mock.
pub fn is_entra_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        [_, "oauth2", "v2.0", "token"]
            | [_, "v2.0", ".well-known", "openid-configuration"]
            | [_, "discovery", "instance"]
            | ["msi", "token"]
            | ["metadata", "identity", "oauth2", "token"]
    )
}

/// Handles an Entra request.
pub fn handle(
    shared: &Shared,
    method: &Method,
    segments: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> EntraReply {
    match (method, segments) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => token(shared, tenant, body),
        (&Method::GET, [tenant, "v2.0", ".well-known", "openid-configuration"]) => reply(
            StatusCode::OK,
            openid_configuration(shared, tenant),
            "entra.discovery",
        ),
        (&Method::GET, [tenant, "discovery", "instance"]) => {
            let base = &shared.authority;
            reply(
                StatusCode::OK,
                json!({
                    "tenant_discovery_endpoint":
                        format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
                    "api-version": "1.1",
                    "metadata": [{
                        "preferred_network": shared.authority_host(),
                        "preferred_cache": shared.authority_host(),
                        "aliases": [shared.authority_host()],
                    }],
                }),
                "entra.discovery",
            )
        }
        (&Method::GET, ["msi", "token"]) => {
            managed_identity(shared, query, headers, Style::AppService)
        }
        (&Method::GET, ["metadata", "identity", "oauth2", "token"]) => {
            managed_identity(shared, query, headers, Style::Imds)
        }
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "invalid_request", "error_description": "method not allowed"}),
            "entra.other",
        ),
    }
}

fn openid_configuration(shared: &Shared, tenant: &str) -> Value {
    let base = &shared.authority;
    json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "issuer": format!("{base}/{tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": shared.authority_host(),
    })
}

fn token(shared: &Shared, tenant: &str, body: &[u8]) -> EntraReply {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");

    if !shared.knows_tenant(tenant) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{}' not found.", truncate(tenant)),
        );
    }
    if field("grant_type") != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; only client_credentials is supported.",
        );
    }
    let scope = field("scope");
    if scope.is_empty() || scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a \
             scope value with /.default suffixed to the resource identifier.",
        );
    }
    let client_id = field("client_id");
    let Some(identity) = shared
        .identity_by(|i| {
            i.managed == ManagedKind::None && i.client_id.eq_ignore_ascii_case(client_id)
        })
        .filter(|i| i.tenant().eq_ignore_ascii_case(tenant))
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{}'.",
                truncate(client_id),
                truncate(tenant)
            ),
        );
    };

    let authenticated = if let Some(secret) = form.get("client_secret") {
        match &identity.client_secret {
            Some(expected) if expected.matches(secret) => Ok(()),
            _ => Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request \
                 is the client secret value, not the client secret ID.",
            )),
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if field("client_assertion_type") != JWT_BEARER {
            Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ))
        } else {
            check_assertion(shared, &identity, tenant, assertion).map_err(|e| {
                let (code, status) = match e {
                    AssertionError::Malformed => (50027, StatusCode::BAD_REQUEST),
                    AssertionError::Expired => (700024, StatusCode::BAD_REQUEST),
                    AssertionError::NoMatch => (700211, StatusCode::BAD_REQUEST),
                    AssertionError::BadSignature => (700027, StatusCode::UNAUTHORIZED),
                };
                oauth_error(status, "invalid_client", code, &format!("{e}."))
            })
        }
    } else {
        Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        ))
    };
    if let Err(e) = authenticated {
        return EntraReply {
            identity: Some(identity.name.clone()),
            ..e
        };
    }

    token_reply(shared, &identity, scope, "entra.token")
}

/// A client-credentials token for `identity` and `scope`, as Entra answers it (also the
/// token proxy's answer, `operation` naming which).
pub(crate) fn token_reply(
    shared: &Shared,
    identity: &Identity,
    scope: &str,
    operation: &'static str,
) -> EntraReply {
    let ttl = shared.token_ttl;
    let access_token = shared.issue_token(TokenGrant {
        identity: identity.name.clone(),
        tenant: identity.tenant().to_owned(),
        resource: normalise_resource(scope),
        expires_at: SystemTime::now() + ttl,
    });
    EntraReply {
        status: StatusCode::OK,
        body: json!({
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "ext_expires_in": ttl.as_secs(),
            "access_token": access_token,
        }),
        identity: Some(identity.name.clone()),
        operation,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Checks a client assertion: a federated credential (workload identity) or a certificate
/// credential.
fn check_assertion(
    shared: &Shared,
    identity: &Identity,
    tenant: &str,
    assertion: &str,
) -> Result<(), AssertionError> {
    // Projected token files often end with a newline; the SDK sends them verbatim.
    let jwt = decode_jwt(assertion.trim())?;
    let now = unix(SystemTime::now());

    // Certificate credential: iss = sub = client id, aud = this token endpoint.
    if !identity.certificates.is_empty() && jwt.claims.iss.eq_ignore_ascii_case(&identity.client_id)
    {
        jwt.check_time(now)?;
        let expected_aud = format!("{}/{tenant}/oauth2/v2.0/token", shared.authority);
        if !jwt.has_audience(&expected_aud)
            || !jwt.claims.sub.eq_ignore_ascii_case(&identity.client_id)
        {
            return Err(AssertionError::NoMatch);
        }
        let verified = identity
            .certificates
            .iter()
            .filter_map(|pem| cert_public_key(pem))
            .any(|key| jwt.verify(&key).is_ok());
        return if verified {
            Ok(())
        } else {
            Err(AssertionError::BadSignature)
        };
    }

    let own_issuer = shared.sa_issuer.issuer.as_str();
    let federated = identity.federated.iter().find(|f| {
        let issuer = f.issuer.as_deref().unwrap_or(own_issuer);
        issuer == jwt.claims.iss
            && f.subject == jwt.claims.sub
            && f.audiences.iter().any(|a| jwt.has_audience(a))
    });
    let Some(federated) = federated else {
        return Err(AssertionError::NoMatch);
    };
    jwt.check_time(now)?;
    // Tokens of mock-vault's own issuer are verified; a federated credential naming another
    // issuer is trusted on its claims alone (the mock cannot fetch that issuer's keys).
    if federated.issuer.as_deref().is_none_or(|i| i == own_issuer) {
        jwt.verify(&shared.sa_issuer.public_key())?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    AppService,
    Imds,
}

fn mi_error(status: StatusCode, error: &str, description: &str) -> EntraReply {
    reply(
        status,
        json!({"error": error, "error_description": description}),
        "entra.managed_identity",
    )
}

fn managed_identity(
    shared: &Shared,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    style: Style,
) -> EntraReply {
    match style {
        Style::AppService => {
            let presented = headers
                .get("x-identity-header")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !shared.identity_header.matches(presented) {
                return mi_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "The X-IDENTITY-HEADER header is missing or wrong.",
                );
            }
        }
        Style::Imds => {
            let ok = headers
                .get("metadata")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            if !ok {
                return mi_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Required metadata header not specified",
                );
            }
        }
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let by = |key: &str| query.get(key).filter(|v| !v.is_empty());
    let identity = if let Some(id) = by("client_id") {
        shared
            .identity_by(|i| i.managed == ManagedKind::User && i.client_id.eq_ignore_ascii_case(id))
    } else if let Some(id) = by("object_id").or_else(|| by("principal_id")) {
        shared
            .identity_by(|i| i.managed == ManagedKind::User && i.object_id.eq_ignore_ascii_case(id))
    } else if let Some(id) = by("msi_res_id").or_else(|| by("mi_res_id")) {
        shared.identity_by(|i| {
            i.managed == ManagedKind::User
                && i.resource_id
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(id))
        })
    } else {
        shared.identity_by(|i| i.managed == ManagedKind::System)
    };
    let Some(identity) = identity else {
        // Not 404: the SDK's IMDS retry policy retries 404 for over a minute.
        return mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    };
    let ttl = shared.token_ttl;
    let expires_at = SystemTime::now() + ttl;
    let resource = normalise_resource(resource);
    let access_token = shared.issue_token(TokenGrant {
        identity: identity.name.clone(),
        tenant: identity.tenant().to_owned(),
        resource: resource.clone(),
        expires_at,
    });
    let now = unix(SystemTime::now());
    let mut body = json!({
        "access_token": access_token,
        "expires_on": unix(expires_at).to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    });
    if style == Style::Imds
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("refresh_token".into(), "".into());
        obj.insert("expires_in".into(), ttl.as_secs().to_string().into());
        obj.insert("ext_expires_in".into(), ttl.as_secs().to_string().into());
        obj.insert("not_before".into(), now.to_string().into());
    }
    EntraReply {
        status: StatusCode::OK,
        body,
        identity: Some(identity.name.clone()),
        operation: "entra.managed_identity",
    }
}

/// Default token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
