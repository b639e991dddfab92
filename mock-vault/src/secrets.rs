//! `/secrets` and `/deletedsecrets`.

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::api::{ApiError, ApiResult, Ctx, MAX_SECRET_VALUE, Reply, check_name, tags_from};
use crate::identity::ObjectKind;
use crate::store::{
    Attributes, AttributesPatch, Deleted, SecretEntry, SecretVersion, Tags, Vault, VaultCell,
    find_version, find_version_mut, new_version_id, now,
};

const S: ObjectKind = ObjectKind::Secrets;

/// Dispatches a request whose first segment is `secrets` or `deletedsecrets`.
pub fn handle(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    let m = ctx.method;
    match ctx.segments.as_slice() {
        ["secrets"] | ["secrets", ""] if m == Method::GET => {
            ctx.require(S, "list")?;
            let items = cell.read(|v| {
                v.secrets
                    .values()
                    .map(|e| list_item(ctx, e, None))
                    .collect()
            });
            ctx.page("/secrets", items)
        }
        ["secrets", name] if m == Method::PUT => {
            ctx.require(S, "set")?;
            set(ctx, cell, name)
        }
        ["secrets", name] if m == Method::DELETE => {
            ctx.require(S, "delete")?;
            delete(ctx, cell, name)
        }
        ["secrets", name, "versions"] if m == Method::GET => {
            ctx.require(S, "list")?;
            let items = cell.read(|v| {
                let e = v
                    .secrets
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(S, name))?;
                Ok::<_, ApiError>(
                    e.versions
                        .iter()
                        .map(|sv| list_item(ctx, e, Some(sv)))
                        .collect(),
                )
            })?;
            ctx.page(&format!("/secrets/{name}/versions"), items)
        }
        ["secrets", name] if m == Method::GET => {
            ctx.require(S, "get")?;
            get(ctx, cell, name, None)
        }
        ["secrets", name, version] if m == Method::GET => {
            ctx.require(S, "get")?;
            get(ctx, cell, name, Some(version))
        }
        ["secrets", name, version] if m == Method::PATCH => {
            ctx.require(S, "set")?;
            update(ctx, cell, name, version)
        }
        ["deletedsecrets"] if m == Method::GET => {
            ctx.require(S, "list")?;
            let items = cell.read(|v| {
                v.deleted_secrets
                    .values()
                    .map(|d| {
                        with_deleted(
                            ctx,
                            list_item(ctx, &d.entry, None),
                            &d.entry,
                            d.deleted_date,
                        )
                    })
                    .collect()
            });
            ctx.page("/deletedsecrets", items)
        }
        ["deletedsecrets", name] if m == Method::GET => {
            ctx.require(S, "get")?;
            cell.read(|v| {
                let d = v
                    .deleted_secrets
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(S, name))?;
                let body = latest_metadata(ctx, &d.entry);
                Ok(Reply::ok(with_deleted(ctx, body, &d.entry, d.deleted_date)))
            })
        }
        ["deletedsecrets", name] if m == Method::DELETE => {
            ctx.require(S, "purge")?;
            cell.write(|v| {
                v.deleted_secrets
                    .remove(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(S, name))?;
                Ok(Reply::with_status(StatusCode::NO_CONTENT, Value::Null))
            })
        }
        ["deletedsecrets", name, "recover"] if m == Method::POST => {
            ctx.require(S, "recover")?;
            cell.write(|v| {
                let lower = name.to_ascii_lowercase();
                let d = v
                    .deleted_secrets
                    .remove(&lower)
                    .ok_or_else(|| ApiError::not_found(S, name))?;
                let body = latest_metadata(ctx, &d.entry);
                v.secrets.insert(lower, d.entry);
                Ok(Reply::ok(body))
            })
        }
        ["secrets", ..] | ["deletedsecrets", ..] => Err(ApiError::method_not_allowed(m)),
        _ => Err(ApiError::no_route(m, &ctx.segments.join("/"))),
    }
}

fn secret_url(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{}/secrets/{name}/{v}", ctx.base),
        None => format!("{}/secrets/{name}", ctx.base),
    }
}

/// Bundle fields without the value.
fn metadata(ctx: &Ctx<'_>, entry: &SecretEntry, sv: &SecretVersion) -> Value {
    let mut b = json!({
        "id": secret_url(ctx, &entry.name, Some(&sv.version)),
        "attributes": sv.attributes.to_json(),
        "tags": sv.tags,
    });
    if let Some(obj) = b.as_object_mut() {
        if let Some(ct) = &sv.content_type {
            obj.insert("contentType".into(), ct.clone().into());
        }
        if entry.managed {
            obj.insert("managed".into(), true.into());
            obj.insert(
                "kid".into(),
                format!("{}/keys/{}/{}", ctx.base, entry.name, sv.version).into(),
            );
        }
    }
    b
}

fn latest_metadata(ctx: &Ctx<'_>, entry: &SecretEntry) -> Value {
    entry
        .versions
        .last()
        .map(|sv| metadata(ctx, entry, sv))
        .unwrap_or_else(|| json!({}))
}

fn with_deleted(ctx: &Ctx<'_>, mut body: Value, entry: &SecretEntry, deleted: i64) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "recoveryId".into(),
            format!("{}/deletedsecrets/{}", ctx.base, entry.name).into(),
        );
        obj.insert("deletedDate".into(), deleted.into());
        obj.insert("scheduledPurgeDate".into(), (deleted + 90 * 86_400).into());
    }
    body
}

fn list_item(ctx: &Ctx<'_>, entry: &SecretEntry, sv: Option<&SecretVersion>) -> Value {
    let shown = sv.or(entry.versions.last());
    let mut item = json!({
        "id": secret_url(ctx, &entry.name, sv.map(|s| s.version.as_str())),
        "attributes": shown.map(|s| s.attributes.to_json()).unwrap_or(Value::Null),
        "tags": shown.map(|s| json!(s.tags)).unwrap_or(Value::Null),
    });
    if let Some(obj) = item.as_object_mut() {
        if let Some(ct) = shown.and_then(|s| s.content_type.clone()) {
            obj.insert("contentType".into(), ct.into());
        }
        if entry.managed {
            obj.insert("managed".into(), true.into());
        }
    }
    item
}

fn get(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: Option<&str>) -> ApiResult {
    cell.read(|v| {
        let e = v
            .secrets
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(S, name))?;
        let sv = find_version(&e.versions, version, |s| &s.version)
            .ok_or_else(|| ApiError::not_found(S, &format!("{name}/{}", version.unwrap_or(""))))?;
        if !sv.attributes.enabled {
            return Err(ApiError::forbidden(
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            ));
        }
        let mut body = metadata(ctx, e, sv);
        let value = converted_value(ctx, sv)?;
        if let Some(obj) = body.as_object_mut() {
            if value.is_some() {
                obj.insert("contentType".into(), PEM.into());
            }
            let text = value.as_ref().map_or(sv.value.as_str(), |v| v.as_str());
            obj.insert("value".into(), text.into());
        }
        Ok(Reply::ok(body))
    })
}

const PEM: &str = "application/x-pem-file";
const PKCS12: &str = "application/x-pkcs12";

/// `outContentType=application/x-pem-file` turns a PKCS#12 value into PEM, as the service
/// does for certificate-backed secrets.
fn converted_value(
    ctx: &Ctx<'_>,
    sv: &SecretVersion,
) -> Result<Option<Zeroizing<String>>, ApiError> {
    use base64::Engine as _;
    let Some(wanted) = ctx.query.get("outcontenttype") else {
        return Ok(None);
    };
    if wanted != PEM && wanted != PKCS12 {
        return Err(ApiError::bad_parameter(
            "outContentType must be application/x-pem-file or application/x-pkcs12.",
        ));
    }
    if wanted == PKCS12 || sv.content_type.as_deref() != Some(PKCS12) {
        return Ok(None);
    }
    let der = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(sv.value.trim().as_bytes())
            .map_err(|_| ApiError::bad_parameter("The secret value is not a base64 PFX."))?,
    );
    let bundle = crate::x509::parse_pfx(&der, "")
        .map_err(|e| ApiError::bad_parameter(format!("The secret value is not a PFX: {e}")))?;
    Ok(Some(Zeroizing::new(crate::x509::build_pem_bundle(
        &bundle.key_pkcs8,
        &bundle.chain,
    ))))
}

/// Body of `PUT /secrets/{name}`.
#[derive(Deserialize)]
pub struct SetSecret {
    /// The value.
    pub value: Zeroizing<String>,
    /// Content type.
    #[serde(default, rename = "contentType")]
    pub content_type: Option<String>,
    /// Attributes.
    #[serde(default)]
    pub attributes: Option<AttributesPatch>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Value>,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecret")
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// Adds a secret version (also used for certificate backing secrets and fixtures).
pub fn add_version(
    vault: &mut Vault,
    name: &str,
    sv: SecretVersion,
    managed: bool,
) -> Result<(), ApiError> {
    let lower = name.to_ascii_lowercase();
    if vault.deleted_secrets.contains_key(&lower) {
        return Err(ApiError::conflict(format!(
            "Secret {name} is currently in a deleted but recoverable state, and its name cannot \
             be reused; in this state, the secret can only be recovered or purged."
        )));
    }
    let entry = vault.secrets.entry(lower).or_insert_with(|| SecretEntry {
        name: name.to_owned(),
        versions: Vec::new(),
        managed,
    });
    if entry.managed && !managed {
        return Err(ApiError::conflict(format!(
            "Secret {name} backs a certificate and can only be changed through the certificate."
        )));
    }
    entry.versions.push(sv);
    Ok(())
}

/// A new secret version from a value.
pub fn new_version(
    value: Zeroizing<String>,
    content_type: Option<String>,
    tags: Tags,
) -> SecretVersion {
    SecretVersion {
        version: new_version_id(),
        value,
        content_type,
        attributes: Attributes::new_now(),
        tags,
    }
}

fn set(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    check_name(name)?;
    let req: SetSecret = ctx.json()?;
    if req.value.len() > MAX_SECRET_VALUE {
        return Err(ApiError::bad_parameter(format!(
            "Secret value is too large: {} bytes, the limit is {MAX_SECRET_VALUE}.",
            req.value.len()
        )));
    }
    if let Some(ct) = &req.content_type
        && ct.len() > 255
    {
        return Err(ApiError::bad_parameter(
            "Property 'contentType' is too long (at most 255 characters).",
        ));
    }
    let tags = tags_from(req.tags.as_ref())?;
    let mut sv = new_version(req.value.clone(), req.content_type.clone(), tags);
    if let Some(a) = &req.attributes {
        sv.attributes.apply(a);
        sv.attributes.updated = sv.attributes.created;
    }
    cell.write(|v| {
        add_version(v, name, sv, false)?;
        get_written(ctx, v, name)
    })
}

fn get_written(ctx: &Ctx<'_>, v: &Vault, name: &str) -> ApiResult {
    let e = v
        .secrets
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| ApiError::not_found(S, name))?;
    let sv = e
        .versions
        .last()
        .ok_or_else(|| ApiError::not_found(S, name))?;
    let mut body = metadata(ctx, e, sv);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("value".into(), sv.value.as_str().into());
    }
    Ok(Reply::ok(body))
}

#[derive(Debug, Deserialize)]
struct UpdateSecret {
    #[serde(default, rename = "contentType")]
    content_type: Option<String>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

fn update(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: &str) -> ApiResult {
    let req: UpdateSecret = ctx.json()?;
    let tags = match &req.tags {
        Some(t) => Some(tags_from(Some(t))?),
        None => None,
    };
    cell.write(|v| {
        let e = v
            .secrets
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(S, name))?;
        let sv = find_version_mut(&mut e.versions, Some(version), |s| &s.version)
            .ok_or_else(|| ApiError::not_found(S, &format!("{name}/{version}")))?;
        if let Some(a) = &req.attributes {
            sv.attributes.apply(a);
        }
        if let Some(ct) = &req.content_type {
            sv.content_type = Some(ct.clone());
        }
        if let Some(t) = tags {
            sv.tags = t;
        }
        let sv = sv.clone();
        Ok(Reply::ok(metadata(ctx, e, &sv)))
    })
}

fn delete(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.write(|v| {
        let lower = name.to_ascii_lowercase();
        if v.secrets.get(&lower).is_some_and(|e| e.managed) {
            return Err(ApiError::forbidden(
                format!("Secret {name} backs a certificate; delete the certificate instead."),
                "SecretManaged",
            ));
        }
        let entry = v
            .secrets
            .remove(&lower)
            .ok_or_else(|| ApiError::not_found(S, name))?;
        let when = now();
        let body = with_deleted(ctx, latest_metadata(ctx, &entry), &entry, when);
        v.deleted_secrets.insert(
            lower,
            Deleted {
                entry,
                deleted_date: when,
            },
        );
        Ok(Reply::ok(body))
    })
}
