//! `/keys` and `/deletedkeys`: key lifecycle and cryptographic operations.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply, b64url, b64url_decode, check_name, tags_from};
use crate::crypto::{CryptoError, Curve, KeySpec, KeyType, Material, OpenParams, PublicJwk};
use crate::identity::ObjectKind;
use crate::lifecycle::{self, UpdateRequest, Version, Versioned};
use crate::store::{
    Attributes, AttributesPatch, Collection, KeyEntry, KeyVersion, Tags, Vault, VaultCell,
    VaultKind, new_version_id, now,
};

const K: ObjectKind = ObjectKind::Keys;

/// Dispatches a request whose first segment is `keys` or `deletedkeys`.
pub fn handle(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    let m = ctx.method;
    match ctx.segments.as_slice() {
        ["keys", name, "create"] if m == Method::POST => create(ctx, cell, name),
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
        ["keys", name, version, op] if m == Method::POST => operation(ctx, cell, name, version, op),
        _ => lifecycle::handle::<KeyEntry>(ctx, cell),
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

impl Version for KeyVersion {
    fn id(&self) -> &str {
        &self.version
    }

    fn tags_mut(&mut self) -> &mut Tags {
        &mut self.tags
    }
}

impl Versioned for KeyEntry {
    type Version = KeyVersion;
    type Backing = ();
    type Update = UpdateKey;

    const KIND: ObjectKind = K;
    const PATH: &'static str = "keys";
    const NOUN: &'static str = "Key";
    const UPDATE_PERMISSION: &'static str = "update";

    fn collection(vault: &Vault) -> &Collection<Self> {
        &vault.keys
    }

    fn collection_mut(vault: &mut Vault) -> &mut Collection<Self> {
        &mut vault.keys
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn versions(&self) -> &[KeyVersion] {
        &self.versions
    }

    fn versions_mut(&mut self) -> &mut [KeyVersion] {
        &mut self.versions
    }

    fn managed(&self) -> bool {
        self.managed
    }

    fn bundle(&self, ctx: &Ctx<'_>, kv: &KeyVersion) -> Value {
        let mut b = json!({
            "key": jwk(ctx, &self.name, kv),
            "attributes": kv.attributes.to_json(),
            "tags": kv.tags,
        });
        if self.managed
            && let Some(obj) = b.as_object_mut()
        {
            obj.insert("managed".into(), true.into());
        }
        b
    }

    fn list_item(&self, ctx: &Ctx<'_>, kv: Option<&KeyVersion>) -> Option<Value> {
        let shown = kv.or(self.versions.last());
        let mut item = json!({
            "kid": key_url(ctx, &self.name, kv.map(|k| k.version.as_str())),
            "attributes": shown.map(|k| k.attributes.to_json()).unwrap_or(Value::Null),
            "tags": shown.map(|k| json!(k.tags)).unwrap_or(Value::Null),
        });
        if self.managed
            && let Some(obj) = item.as_object_mut()
        {
            obj.insert("managed".into(), true.into());
        }
        Some(item)
    }

    fn apply_update(kv: &mut KeyVersion, req: &UpdateKey) {
        if let Some(a) = &req.attributes {
            kv.attributes.apply(a);
        }
        if let Some(ops) = &req.key_ops {
            kv.key_ops.clone_from(ops);
        }
    }

    fn detach(_: &mut Vault, _: &str) {}

    fn reattach(_: &mut Vault, _: &str, (): ()) {}
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
    tags: Tags,
) -> Result<Value, ApiError> {
    if let Some(a) = attributes {
        kv.attributes.apply(a);
        kv.attributes.updated = kv.attributes.created;
    }
    kv.tags = tags;
    lifecycle::check_not_deleted::<KeyEntry>(vault, name)?;
    let entry = vault
        .keys
        .live
        .entry(name.to_ascii_lowercase())
        .or_insert_with(|| KeyEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            managed: false,
            rotation_policy: None,
        });
    entry.versions.push(kv);
    lifecycle::latest_bundle(ctx, entry).ok_or_else(|| ApiError::not_found(K, &entry.name))
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
            .live
            .get(&name.to_ascii_lowercase())
            .is_some_and(|e| e.managed)
        {
            return Err(lifecycle::managed_conflict::<KeyEntry>(name));
        }
        add_version(v, ctx, name, kv, req.attributes.as_ref(), tags).map(Reply::ok)
    })
}

fn rotate(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    let (spec, ops, tags) = cell.read(|v| {
        let e = lifecycle::entry::<KeyEntry>(v, name)?;
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

/// Body of `PATCH /keys/{name}/{version}`.
#[derive(Debug, Deserialize)]
pub struct UpdateKey {
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

impl UpdateRequest for UpdateKey {
    fn tags(&self) -> Option<&Value> {
        self.tags.as_ref()
    }
}

fn get_rotation_policy(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.read(|v| {
        let e = lifecycle::entry::<KeyEntry>(v, name)?;
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
        let e = lifecycle::entry_mut::<KeyEntry>(v, name)?;
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
        let (e, kv) = lifecycle::find::<KeyEntry>(v, name, Some(version))?;
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
