//! Shared plumbing of the vault REST handlers: the request context, Key Vault's error
//! shapes, JSON and base64url helpers.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::identity::{Identity, ObjectKind};

/// Largest request body the vault accepts (Key Vault's own limit is of this order).
pub const MAX_BODY: usize = 256 * 1024;
/// Largest secret value, in bytes (Key Vault: 25 KiB).
pub const MAX_SECRET_VALUE: usize = 25 * 1024;

/// An error answered in Key Vault's shape: `{"error":{"code","message"}}` plus
/// `x-ms-error-code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code` and `x-ms-error-code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// `error.innererror.code`, when Key Vault sends one.
    pub inner: Option<String>,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            inner: None,
            retry_after: None,
        }
    }

    /// 400 BadParameter.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 400 BadParameter for a malformed body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 403 Forbidden with an inner error code.
    pub fn forbidden(message: impl Into<String>, inner: &str) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "Forbidden", message);
        e.inner = Some(inner.to_owned());
        e
    }

    /// 404 for a missing key, secret or certificate (name or name/version).
    pub fn not_found(kind: ObjectKind, id: &str) -> Self {
        let (code, noun) = match kind {
            ObjectKind::Keys => ("KeyNotFound", "key"),
            ObjectKind::Secrets => ("SecretNotFound", "secret"),
            ObjectKind::Certificates => ("CertificateNotFound", "certificate"),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            code,
            format!(
                "A {noun} with (name/id) {id} was not found in this key vault. If you recently \
                 deleted this {noun} you may be able to recover it using the correct recovery \
                 command. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    /// 404 for a path the vault does not serve.
    pub fn no_route(method: &Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No operation {method} {path} exists on this vault"),
        )
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
        )
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 429 Throttled with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Operations per second limit reached. Please retry after the time in the \
             Retry-After header.",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// An injected server error.
    pub fn server_error(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
            StatusCode::BAD_GATEWAY => "BadGateway",
            _ => "InternalServerError",
        };
        Self::new(
            status,
            code,
            "The service encountered an internal error. Please retry.",
        )
    }

    /// The JSON body. Strings are kept free of JSON escape sequences: the Azure SDKs parse
    /// `error.code` and `error.message` as borrowed strings and fail on escapes.
    pub fn body(&self) -> Value {
        let mut error =
            json!({"code": escape_free(&self.code), "message": escape_free(&self.message)});
        if let (Some(inner), Some(obj)) = (&self.inner, error.as_object_mut()) {
            obj.insert("innererror".into(), json!({"code": inner}));
        }
        json!({ "error": error })
    }
}

/// Replaces characters JSON would escape (quotes, backslashes, controls).
pub fn escape_free(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A handler's successful answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body (`Null` = empty body).
    pub body: Value,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }

    /// Any status with a body.
    pub fn with_status(status: StatusCode, body: Value) -> Self {
        Self { status, body }
    }
}

/// Result of a handler.
pub type ApiResult = Result<Reply, ApiError>;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An identity that presented a valid token.
    Identity(Box<Identity>),
    /// The control API: everything allowed.
    System,
}

impl Principal {
    /// Name for statistics.
    pub fn name(&self) -> &str {
        match self {
            Self::Identity(i) => &i.name,
            Self::System => "(control)",
        }
    }
}

/// One vault request, parsed.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path segments after the leading `/` (empty segments kept: they mean "latest").
    pub segments: Vec<&'a str>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Body.
    pub body: &'a Bytes,
    /// Base URL of the vault, e.g. `https://kv1.vault.localhost:8443`.
    pub base: &'a str,
    /// Vault name.
    pub vault: &'a str,
    /// Caller.
    pub principal: &'a Principal,
    /// Azure region reported in messages.
    pub region: &'a str,
}

impl Ctx<'_> {
    /// Fails with Key Vault's access-policy 403 unless the caller holds the permission.
    pub fn require(&self, kind: ObjectKind, permission: &str) -> Result<(), ApiError> {
        match self.principal {
            Principal::System => Ok(()),
            Principal::Identity(id) if id.allows(self.vault, kind, permission) => Ok(()),
            Principal::Identity(id) => Err(ApiError::forbidden(
                format!(
                    "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' \
                     does not have {} {} permission on key vault '{};location={}'. For help \
                     resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                    id.client_id,
                    id.object_id,
                    id.tenant(),
                    kind.as_str(),
                    permission,
                    self.vault,
                    self.region
                ),
                "AccessDenied",
            )),
        }
    }

    /// Parses the JSON body into `T`, with a message naming what is wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("The request body is missing."));
        }
        serde_json::from_slice(self.body).map_err(|e| {
            // serde_json's message names the field and position, never echoes the input.
            ApiError::bad_request(format!("The request body is not valid: {e}"))
        })
    }

    /// `maxresults` for list operations (1..=25, default 25).
    pub fn max_results(&self) -> Result<usize, ApiError> {
        match self.query.get("maxresults") {
            None => Ok(25),
            Some(v) => match v.parse::<usize>() {
                Ok(n @ 1..=25) => Ok(n),
                _ => Err(ApiError::bad_parameter(
                    "maxresults must be an integer between 1 and 25",
                )),
            },
        }
    }

    /// Start offset of a paged list (our `$skiptoken` is the offset).
    pub fn skip(&self) -> Result<usize, ApiError> {
        match self.query.get("$skiptoken") {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_parameter("$skiptoken is not valid")),
        }
    }

    /// A page of list results with `nextLink` when more remain.
    pub fn page(&self, path: &str, items: Vec<Value>) -> ApiResult {
        let max = self.max_results()?;
        let skip = self.skip()?;
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
        let next = if skip + max < total {
            let api_version = self
                .query
                .get("api-version")
                .map(String::as_str)
                .unwrap_or("7.5");
            Value::String(format!(
                "{}{}?api-version={}&$skiptoken={}&maxresults={}",
                self.base,
                path,
                api_version,
                skip + max,
                max
            ))
        } else {
            Value::Null
        };
        Ok(Reply::ok(json!({"value": page, "nextLink": next})))
    }
}

/// Validates an object name: 1-127 characters of `[0-9a-zA-Z-]`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::bad_parameter(
            "Object name must be 1-127 characters of letters, digits and dashes (0-9, a-z, A-Z, -).",
        ));
    }
    Ok(())
}

/// base64url without padding, as Key Vault writes binary fields.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a base64url field (padding and the standard alphabet tolerated, as the service
/// does), naming the field on failure.
pub fn b64url_decode(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    let trimmed = value.trim_end_matches('=');
    let normalised: String = trimmed
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(normalised.as_bytes())
        .map_err(|_| ApiError::bad_parameter(format!("Property '{field}' is not valid base64url.")))
}

/// Parses an `a=b&c=d` query string.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Tags from a request (`null` or absent = none). Key Vault allows 15 tags.
pub fn tags_from(v: Option<&Value>) -> Result<crate::store::Tags, ApiError> {
    let mut out = crate::store::Tags::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            if map.len() > 15 {
                return Err(ApiError::bad_parameter("At most 15 tags are allowed."));
            }
            for (k, v) in map {
                let v = v
                    .as_str()
                    .ok_or_else(|| ApiError::bad_parameter("Tag values must be strings."))?;
                if k.len() > 512 || v.len() > 256 {
                    return Err(ApiError::bad_parameter("Tag name or value is too long."));
                }
                out.insert(k.clone(), v.to_owned());
            }
        }
        Some(_) => {
            return Err(ApiError::bad_parameter(
                "Property 'tags' must be an object.",
            ));
        }
    }
    Ok(out)
}
