//! `/keys` and `/deletedkeys`: key lifecycle and cryptographic operations.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply, b64url, b64url_decode, check_name, tags_from};
use crate::crypto::{CryptoError, Curve, KeySpec, KeyType, Material, OpenParams, PublicJwk};
use crate::identity::ObjectKind;
use crate::store::{
    Attributes, AttributesPatch, Deleted, KeyEntry, KeyVersion, Vault, VaultCell, VaultKind,
    find_version, find_version_mut, new_version_id, now,
};

const K: ObjectKind = ObjectKind::Keys;

/// Dispatches a request whose first segment is `keys` or `deletedkeys`.
pub fn handle(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    let m = ctx.method;
    match ctx.segments.as_slice() {
        ["keys"] | ["keys", ""] if m == Method::GET => {
            ctx.require(K, "list")?;
            list_keys(ctx, cell)
        }
        ["keys", name, "create"] if m == Method::POST => create(ctx, cell, name),
        ["keys", name, "versions"] if m == Method::GET => {
            ctx.require(K, "list")?;
            list_versions(ctx, cell, name)
        }
        ["keys", name, "rotate"] if m == Method::POST => {
            ctx.require(K, "rotate")?;
            rotate(ctx, cell, name)
        }
        ["keys", name, "rotationpolicy"] if m == Method::GET => {
            ctx.require(K, "getrotationpolicy")?;
            get_rotation_policy(ctx, cell, name)
        }
        ["keys", name, "rotationpolicy"] if m == Method::PUT => {
            ctx.require(K, "setrotationpolicy")?;
            set_rotation_policy(ctx, cell, name)
        }
        ["keys", name] if m == Method::DELETE => {
            ctx.require(K, "delete")?;
            delete(ctx, cell, name)
        }
        ["keys", name] if m == Method::GET => {
            ctx.require(K, "get")?;
            get(ctx, cell, name, None)
        }
        ["keys", name, version] if m == Method::GET => {
            ctx.require(K, "get")?;
            get(ctx, cell, name, Some(version))
        }
        ["keys", name, version] if m == Method::PATCH => {
            ctx.require(K, "update")?;
            update(ctx, cell, name, version)
        }
        ["keys", name, version, op] if m == Method::POST => operation(ctx, cell, name, version, op),
        ["deletedkeys"] if m == Method::GET => {
            ctx.require(K, "list")?;
            let items = cell.read(|v| {
                v.deleted_keys
                    .values()
                    .map(|d| deleted_item(ctx, &d.entry, d.deleted_date))
                    .collect()
            });
            ctx.page("/deletedkeys", items)
        }
        ["deletedkeys", name] if m == Method::GET => {
            ctx.require(K, "get")?;
            cell.read(|v| {
                let d = v
                    .deleted_keys
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(K, name))?;
                Ok(Reply::ok(deleted_bundle(ctx, &d.entry, d.deleted_date)))
            })
        }
        ["deletedkeys", name] if m == Method::DELETE => {
            ctx.require(K, "purge")?;
            cell.write(|v| {
                v.deleted_keys
                    .remove(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(K, name))?;
                Ok(Reply::with_status(StatusCode::NO_CONTENT, Value::Null))
            })
        }
        ["deletedkeys", name, "recover"] if m == Method::POST => {
            ctx.require(K, "recover")?;
            cell.write(|v| {
                let lower = name.to_ascii_lowercase();
                let d = v
                    .deleted_keys
                    .remove(&lower)
                    .ok_or_else(|| ApiError::not_found(K, name))?;
                let body = latest_bundle(ctx, &d.entry)?;
                v.keys.insert(lower, d.entry);
                Ok(Reply::ok(body))
            })
        }
        ["keys", ..] | ["deletedkeys", ..] => Err(ApiError::method_not_allowed(m)),
        _ => Err(ApiError::no_route(m, &ctx.segments.join("/"))),
    }
}

/// Body of `POST /keys/{name}/create`.
#[derive(Debug, Deserialize)]
pub struct CreateKey {
    /// Key type.
    pub kty: String,
    /// RSA or symmetric key size in bits.
    #[serde(default)]
    pub key_size: Option<u32>,
    /// RSA public exponent (only 65537 is supported, as in Key Vault).
    #[serde(default)]
    pub public_exponent: Option<u32>,
    /// EC curve.
    #[serde(default)]
    pub crv: Option<String>,
    /// Allowed operations.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    /// Initial attributes.
    #[serde(default)]
    pub attributes: Option<AttributesPatch>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Value>,
}

/// Parses and validates a create request into a key spec.
pub fn spec_of(req: &CreateKey, kind: VaultKind) -> Result<KeySpec, ApiError> {
    let kty = KeyType::parse(&req.kty).ok_or_else(|| {
        ApiError::bad_parameter(format!(
            "Property 'kty' has an invalid value '{}'; expected one of RSA, RSA-HSM, EC, EC-HSM, oct, oct-HSM.",
            truncate(&req.kty)
        ))
    })?;
    if kind == VaultKind::ManagedHsm && matches!(kty, KeyType::Rsa | KeyType::Ec | KeyType::Oct) {
        return Err(ApiError::bad_parameter(
            "Managed HSM only creates HSM-protected keys (RSA-HSM, EC-HSM, oct-HSM).",
        ));
    }
    if req.public_exponent.is_some_and(|e| e != 65537) {
        return Err(ApiError::bad_parameter(
            "Only the public exponent 65537 is supported.",
        ));
    }
    let curve = match &req.crv {
        None => None,
        Some(c) => Some(Curve::parse(c).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "Property 'crv' has an invalid value '{}'; expected P-256, P-384 or P-521.",
                truncate(c)
            ))
        })?),
    };
    Ok(KeySpec {
        kty,
        size: req.key_size,
        curve,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn crypto_err(e: CryptoError) -> ApiError {
    match e {
        CryptoError::DecryptFailed => ApiError::bad_parameter(e.to_string()),
        CryptoError::Internal => ApiError::server_error(StatusCode::INTERNAL_SERVER_ERROR),
        other => ApiError::bad_parameter(other.to_string()),
    }
}

fn key_url(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{}/keys/{name}/{v}", ctx.base),
        None => format!("{}/keys/{name}", ctx.base),
    }
}

/// The JSON Web Key of one version (public parts only).
pub fn jwk(ctx: &Ctx<'_>, name: &str, kv: &KeyVersion) -> Value {
    let mut jwk = json!({
        "kid": key_url(ctx, name, Some(&kv.version)),
        "kty": kv.kty.as_str(),
        "key_ops": kv.key_ops,
    });
    if let Some(obj) = jwk.as_object_mut() {
        match kv.material.public_jwk() {
            PublicJwk::Rsa { n, e } => {
                obj.insert("n".into(), b64url(&n).into());
                obj.insert("e".into(), b64url(&e).into());
            }
            PublicJwk::Ec { crv, x, y } => {
                obj.insert("crv".into(), crv.as_str().into());
                obj.insert("x".into(), b64url(&x).into());
                obj.insert("y".into(), b64url(&y).into());
            }
            PublicJwk::Oct => {}
        }
    }
    jwk
}

fn bundle(ctx: &Ctx<'_>, entry: &KeyEntry, kv: &KeyVersion) -> Value {
    let mut b = json!({
        "key": jwk(ctx, &entry.name, kv),
        "attributes": kv.attributes.to_json(),
        "tags": kv.tags,
    });
    if entry.managed
        && let Some(obj) = b.as_object_mut()
    {
        obj.insert("managed".into(), true.into());
    }
    b
}

fn latest_bundle(ctx: &Ctx<'_>, entry: &KeyEntry) -> Result<Value, ApiError> {
    let kv = entry
        .versions
        .last()
        .ok_or_else(|| ApiError::not_found(K, &entry.name))?;
    Ok(bundle(ctx, entry, kv))
}

fn deleted_bundle(ctx: &Ctx<'_>, entry: &KeyEntry, deleted: i64) -> Value {
    let mut b = entry
        .versions
        .last()
        .map(|kv| bundle(ctx, entry, kv))
        .unwrap_or_else(|| json!({}));
    if let Some(obj) = b.as_object_mut() {
        obj.insert(
            "recoveryId".into(),
            format!("{}/deletedkeys/{}", ctx.base, entry.name).into(),
        );
        obj.insert("deletedDate".into(), deleted.into());
        obj.insert("scheduledPurgeDate".into(), (deleted + 90 * 86_400).into());
    }
    b
}

fn deleted_item(ctx: &Ctx<'_>, entry: &KeyEntry, deleted: i64) -> Value {
    let mut item = list_item(ctx, entry, None);
    if let Some(obj) = item.as_object_mut() {
        obj.insert(
            "recoveryId".into(),
            format!("{}/deletedkeys/{}", ctx.base, entry.name).into(),
        );
        obj.insert("deletedDate".into(), deleted.into());
        obj.insert("scheduledPurgeDate".into(), (deleted + 90 * 86_400).into());
    }
    item
}

fn list_item(ctx: &Ctx<'_>, entry: &KeyEntry, kv: Option<&KeyVersion>) -> Value {
    let shown = kv.or(entry.versions.last());
    let mut item = json!({
        "kid": key_url(ctx, &entry.name, kv.map(|k| k.version.as_str())),
        "attributes": shown.map(|k| k.attributes.to_json()).unwrap_or(Value::Null),
        "tags": shown.map(|k| json!(k.tags)).unwrap_or(Value::Null),
    });
    if entry.managed
        && let Some(obj) = item.as_object_mut()
    {
        obj.insert("managed".into(), true.into());
    }
    item
}

fn list_keys(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    let items = cell.read(|v| v.keys.values().map(|e| list_item(ctx, e, None)).collect());
    ctx.page("/keys", items)
}

fn list_versions(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    let items = cell.read(|v| {
        let e = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        Ok::<_, ApiError>(
            e.versions
                .iter()
                .map(|kv| list_item(ctx, e, Some(kv)))
                .collect(),
        )
    })?;
    ctx.page(&format!("/keys/{name}/versions"), items)
}

fn get(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: Option<&str>) -> ApiResult {
    cell.read(|v| {
        let e = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let kv = find_version(&e.versions, version, |k| &k.version)
            .ok_or_else(|| ApiError::not_found(K, &format!("{name}/{}", version.unwrap_or(""))))?;
        Ok(Reply::ok(bundle(ctx, e, kv)))
    })
}

/// Creates a key version with fresh material (used by create, rotate and fixtures).
pub fn new_version(spec: KeySpec, key_ops: Option<Vec<String>>) -> Result<KeyVersion, ApiError> {
    let material = Material::generate(spec).map_err(crypto_err)?;
    Ok(KeyVersion {
        version: new_version_id(),
        kty: spec.kty,
        material: Arc::new(material),
        key_ops: key_ops.unwrap_or_else(|| spec.kty.default_ops()),
        attributes: Attributes::new_now(),
        tags: Default::default(),
    })
}

/// Adds a version to a key, creating the key if needed; returns the new bundle.
pub fn add_version(
    vault: &mut Vault,
    ctx: &Ctx<'_>,
    name: &str,
    mut kv: KeyVersion,
    attributes: Option<&AttributesPatch>,
    tags: crate::store::Tags,
) -> Result<Value, ApiError> {
    if let Some(a) = attributes {
        kv.attributes.apply(a);
        kv.attributes.updated = kv.attributes.created;
    }
    kv.tags = tags;
    let lower = name.to_ascii_lowercase();
    if vault.deleted_keys.contains_key(&lower) {
        return Err(ApiError::conflict(format!(
            "Key {name} is currently in a deleted but recoverable state, and its name cannot be \
             reused; in this state, the key can only be recovered or purged."
        )));
    }
    let entry = vault.keys.entry(lower).or_insert_with(|| KeyEntry {
        name: name.to_owned(),
        versions: Vec::new(),
        managed: false,
        rotation_policy: None,
    });
    entry.versions.push(kv);
    latest_bundle(ctx, entry)
}

fn create(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    ctx.require(K, "create")?;
    check_name(name)?;
    let req: CreateKey = ctx.json()?;
    let kind = cell.read(|v| v.kind);
    let spec = spec_of(&req, kind)?;
    let tags = tags_from(req.tags.as_ref())?;
    let kv = new_version(spec, req.key_ops.clone())?;
    cell.write(|v| {
        if v.keys
            .get(&name.to_ascii_lowercase())
            .is_some_and(|e| e.managed)
        {
            return Err(ApiError::conflict(format!(
                "Key {name} backs a certificate and can only be changed through the certificate."
            )));
        }
        add_version(v, ctx, name, kv, req.attributes.as_ref(), tags).map(Reply::ok)
    })
}

fn rotate(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    let (spec, ops, tags) = cell.read(|v| {
        let e = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        if e.managed {
            return Err(ApiError::forbidden(
                format!("Key {name} backs a certificate and cannot be rotated directly."),
                "KeyManaged",
            ));
        }
        let last = e
            .versions
            .last()
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let spec = KeySpec {
            kty: last.kty,
            size: match last.kty {
                KeyType::Ec | KeyType::EcHsm => None,
                _ => u32::try_from(last.material.bits()).ok(),
            },
            curve: match last.material.public_jwk() {
                PublicJwk::Ec { crv, .. } => Some(crv),
                _ => None,
            },
        };
        Ok((spec, last.key_ops.clone(), last.tags.clone()))
    })?;
    let kv = new_version(spec, Some(ops))?;
    cell.write(|v| add_version(v, ctx, name, kv, None, tags).map(Reply::ok))
}

#[derive(Debug, Deserialize)]
struct UpdateKey {
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

fn update(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: &str) -> ApiResult {
    let req: UpdateKey = ctx.json()?;
    let tags = match &req.tags {
        Some(t) => Some(tags_from(Some(t))?),
        None => None,
    };
    cell.write(|v| {
        let e = v
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let kv = find_version_mut(&mut e.versions, Some(version), |k| &k.version)
            .ok_or_else(|| ApiError::not_found(K, &format!("{name}/{version}")))?;
        if let Some(a) = &req.attributes {
            kv.attributes.apply(a);
        }
        if let Some(ops) = &req.key_ops {
            kv.key_ops.clone_from(ops);
        }
        if let Some(t) = tags {
            kv.tags = t;
        }
        let kv = kv.clone();
        Ok(Reply::ok(bundle(ctx, e, &kv)))
    })
}

fn delete(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.write(|v| {
        let lower = name.to_ascii_lowercase();
        if v.keys.get(&lower).is_some_and(|e| e.managed) {
            return Err(ApiError::forbidden(
                format!("Key {name} backs a certificate; delete the certificate instead."),
                "KeyManaged",
            ));
        }
        let entry = v
            .keys
            .remove(&lower)
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let when = now();
        let body = deleted_bundle(ctx, &entry, when);
        v.deleted_keys.insert(
            lower,
            Deleted {
                entry,
                deleted_date: when,
            },
        );
        Ok(Reply::ok(body))
    })
}

fn get_rotation_policy(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.read(|v| {
        let e = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let id = format!("{}/keys/{}/rotationpolicy", ctx.base, e.name);
        Ok(Reply::ok(match &e.rotation_policy {
            Some(p) => p.clone(),
            // A key that never had a policy set reports the default one.
            None => json!({
                "id": id,
                "lifetimeActions": [
                    {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
                ],
                "attributes": {"expiryTime": null, "created": null, "updated": null}
            }),
        }))
    })
}

fn set_rotation_policy(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    let mut policy: Value = ctx.json()?;
    let actions = policy.get("lifetimeActions").cloned().unwrap_or(json!([]));
    let Some(list) = actions.as_array() else {
        return Err(ApiError::bad_parameter(
            "Property 'lifetimeActions' must be an array.",
        ));
    };
    for a in list {
        let kind = a
            .pointer("/action/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !kind.eq_ignore_ascii_case("rotate") && !kind.eq_ignore_ascii_case("notify") {
            return Err(ApiError::bad_parameter(
                "Each lifetime action needs action.type 'Rotate' or 'Notify'.",
            ));
        }
        let trigger = a.get("trigger");
        let has_trigger = trigger
            .and_then(|t| {
                t.get("timeAfterCreate")
                    .or_else(|| t.get("timeBeforeExpiry"))
            })
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with('P'));
        if !has_trigger {
            return Err(ApiError::bad_parameter(
                "Each lifetime action needs a trigger with an ISO 8601 duration in \
                 timeAfterCreate or timeBeforeExpiry.",
            ));
        }
    }
    cell.write(|v| {
        let e = v
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let t = now();
        let created = e
            .rotation_policy
            .as_ref()
            .and_then(|p| p.pointer("/attributes/created"))
            .and_then(Value::as_i64)
            .unwrap_or(t);
        if let Some(obj) = policy.as_object_mut() {
            obj.insert(
                "id".into(),
                format!("{}/keys/{}/rotationpolicy", ctx.base, e.name).into(),
            );
            obj.insert("lifetimeActions".into(), actions.clone());
            let expiry = obj
                .get("attributes")
                .and_then(|a| a.get("expiryTime"))
                .cloned()
                .unwrap_or(Value::Null);
            obj.insert(
                "attributes".into(),
                json!({"expiryTime": expiry, "created": created, "updated": t}),
            );
        }
        e.rotation_policy = Some(policy.clone());
        Ok(Reply::ok(policy))
    })
}

#[derive(Debug, Deserialize)]
struct OpRequest {
    alg: String,
    value: String,
    #[serde(default)]
    iv: Option<String>,
    #[serde(default)]
    aad: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VerifyRequest {
    alg: String,
    digest: String,
    value: String,
}

fn operation(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: &str, op: &str) -> ApiResult {
    let (perm, key_op) = match op {
        "encrypt" => ("encrypt", "encrypt"),
        "decrypt" => ("decrypt", "decrypt"),
        "wrapkey" | "wrapKey" => ("wrapkey", "wrapKey"),
        "unwrapkey" | "unwrapKey" => ("unwrapkey", "unwrapKey"),
        "sign" => ("sign", "sign"),
        "verify" => ("verify", "verify"),
        _ => return Err(ApiError::no_route(ctx.method, &ctx.segments.join("/"))),
    };
    ctx.require(K, perm)?;
    // Look the version up under the lock; run the cryptography outside it.
    let (kid, material) = cell.read(|v| {
        let e = v
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| ApiError::not_found(K, name))?;
        let kv = find_version(&e.versions, Some(version), |k| &k.version)
            .ok_or_else(|| ApiError::not_found(K, &format!("{name}/{version}")))?;
        if let Some(reason) = kv.attributes.unusable_reason(now()) {
            return Err(ApiError::forbidden(
                format!("Operation {key_op} is not allowed on a {reason} key."),
                match reason {
                    "disabled" => "KeyDisabled",
                    "expired" => "KeyExpired",
                    _ => "KeyNotYetValid",
                },
            ));
        }
        if !kv.key_ops.iter().any(|o| o.eq_ignore_ascii_case(key_op)) {
            return Err(ApiError::forbidden(
                format!("Operation {key_op} is not permitted on this key."),
                "KeyOperationForbidden",
            ));
        }
        Ok((
            key_url(ctx, &e.name, Some(&kv.version)),
            Arc::clone(&kv.material),
        ))
    })?;

    if op == "verify" {
        let req: VerifyRequest = ctx.json()?;
        let digest = b64url_decode("digest", &req.digest)?;
        let sig = b64url_decode("value", &req.value)?;
        let ok = material
            .verify(&req.alg, &digest, &sig)
            .map_err(crypto_err)?;
        return Ok(Reply::ok(json!({ "value": ok })));
    }

    let req: OpRequest = ctx.json()?;
    let value = b64url_decode("value", &req.value)?;
    let iv = req
        .iv
        .as_deref()
        .map(|s| b64url_decode("iv", s))
        .transpose()?;
    let aad = req
        .aad
        .as_deref()
        .map(|s| b64url_decode("aad", s))
        .transpose()?;
    let tag = req
        .tag
        .as_deref()
        .map(|s| b64url_decode("tag", s))
        .transpose()?;
    let mut out = json!({"kid": kid});
    let obj = out
        .as_object_mut()
        .ok_or_else(|| ApiError::server_error(StatusCode::INTERNAL_SERVER_ERROR))?;
    match op {
        "encrypt" => {
            let sealed = material
                .encrypt(&req.alg, &value, aad.as_deref())
                .map_err(crypto_err)?;
            obj.insert("value".into(), b64url(&sealed.value).into());
            if let Some(iv) = sealed.iv {
                obj.insert("iv".into(), b64url(&iv).into());
            }
            if let Some(tag) = sealed.tag {
                obj.insert("tag".into(), b64url(&tag).into());
            }
            if let Some(aad) = &req.aad {
                obj.insert("aad".into(), aad.clone().into());
            }
        }
        "decrypt" => {
            let params = OpenParams {
                iv: iv.as_deref(),
                aad: aad.as_deref(),
                tag: tag.as_deref(),
            };
            let plain = material
                .decrypt(&req.alg, &value, &params)
                .map_err(crypto_err)?;
            obj.insert("value".into(), b64url(&plain).into());
        }
        "wrapkey" | "wrapKey" => {
            let sealed = material.wrap(&req.alg, &value).map_err(crypto_err)?;
            obj.insert("value".into(), b64url(&sealed.value).into());
        }
        "unwrapkey" | "unwrapKey" => {
            let plain = material.unwrap_key(&req.alg, &value).map_err(crypto_err)?;
            obj.insert("value".into(), b64url(&plain).into());
        }
        _ => {
            let sig = material.sign(&req.alg, &value).map_err(crypto_err)?;
            obj.insert("value".into(), b64url(&sig).into());
        }
    }
    Ok(Reply::ok(out))
}
