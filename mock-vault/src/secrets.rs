//! `/secrets` and `/deletedsecrets`.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::api::{ApiError, ApiResult, Ctx, MAX_SECRET_VALUE, Reply, check_name, tags_from};
use crate::identity::ObjectKind;
use crate::lifecycle::{self, UpdateRequest, Version, Versioned};
use crate::secret::SecretString;
use crate::store::{
    Attributes, AttributesPatch, Collection, SecretEntry, SecretVersion, Tags, Vault, VaultCell,
    new_version_id,
};

const S: ObjectKind = ObjectKind::Secrets;

/// Dispatches a request whose first segment is `secrets` or `deletedsecrets`.
pub fn handle(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    match ctx.segments.as_slice() {
        ["secrets", name] if ctx.method == Method::PUT => {
            ctx.require(S, "set")?;
            set(ctx, cell, name)
        }
        _ => lifecycle::handle::<SecretEntry>(ctx, cell),
    }
}

fn secret_url(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{}/secrets/{name}/{v}", ctx.base),
        None => format!("{}/secrets/{name}", ctx.base),
    }
}

impl Version for SecretVersion {
    fn id(&self) -> &str {
        &self.version
    }

    fn tags_mut(&mut self) -> &mut Tags {
        &mut self.tags
    }
}

impl Versioned for SecretEntry {
    type Version = SecretVersion;
    type Backing = ();
    type Update = UpdateSecret;

    const KIND: ObjectKind = S;
    const PATH: &'static str = "secrets";
    const NOUN: &'static str = "Secret";
    const UPDATE_PERMISSION: &'static str = "set";

    fn collection(vault: &Vault) -> &Collection<Self> {
        &vault.secrets
    }

    fn collection_mut(vault: &mut Vault) -> &mut Collection<Self> {
        &mut vault.secrets
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn versions(&self) -> &[SecretVersion] {
        &self.versions
    }

    fn versions_mut(&mut self) -> &mut [SecretVersion] {
        &mut self.versions
    }

    fn managed(&self) -> bool {
        self.managed
    }

    /// Bundle fields without the value.
    fn bundle(&self, ctx: &Ctx<'_>, sv: &SecretVersion) -> Value {
        let mut b = json!({
            "id": secret_url(ctx, &self.name, Some(&sv.version)),
            "attributes": sv.attributes.to_json(),
            "tags": sv.tags,
        });
        if let Some(obj) = b.as_object_mut() {
            if let Some(ct) = &sv.content_type {
                obj.insert("contentType".into(), ct.clone().into());
            }
            if self.managed {
                obj.insert("managed".into(), true.into());
                obj.insert(
                    "kid".into(),
                    format!("{}/keys/{}/{}", ctx.base, self.name, sv.version).into(),
                );
            }
        }
        b
    }

    fn list_item(&self, ctx: &Ctx<'_>, sv: Option<&SecretVersion>) -> Option<Value> {
        let shown = sv.or(self.versions.last());
        let mut item = json!({
            "id": secret_url(ctx, &self.name, sv.map(|s| s.version.as_str())),
            "attributes": shown.map(|s| s.attributes.to_json()).unwrap_or(Value::Null),
            "tags": shown.map(|s| json!(s.tags)).unwrap_or(Value::Null),
        });
        if let Some(obj) = item.as_object_mut() {
            if let Some(ct) = shown.and_then(|s| s.content_type.clone()) {
                obj.insert("contentType".into(), ct.into());
            }
            if self.managed {
                obj.insert("managed".into(), true.into());
            }
        }
        Some(item)
    }

    /// The bundle with the value, of an enabled version only.
    fn get(ctx: &Ctx<'_>, vault: &Vault, name: &str, version: Option<&str>) -> ApiResult {
        let (e, sv) = lifecycle::find::<Self>(vault, name, version)?;
        if !sv.attributes.enabled {
            return Err(ApiError::forbidden(
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            ));
        }
        let mut body = e.bundle(ctx, sv);
        let value = converted_value(ctx, sv)?;
        if let Some(obj) = body.as_object_mut() {
            if value.is_some() {
                obj.insert("contentType".into(), PEM.into());
            }
            let text = value.as_ref().map_or(sv.value.expose(), |v| v.as_str());
            obj.insert("value".into(), text.into());
        }
        Ok(Reply::ok(body))
    }

    fn apply_update(sv: &mut SecretVersion, req: &UpdateSecret) {
        if let Some(a) = &req.attributes {
            sv.attributes.apply(a);
        }
        if let Some(ct) = &req.content_type {
            sv.content_type = Some(ct.clone());
        }
    }

    fn detach(_: &mut Vault, _: &str) {}

    fn reattach(_: &mut Vault, _: &str, (): ()) {}
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
            .decode(sv.value.expose().trim().as_bytes())
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
#[derive(Debug, Deserialize)]
pub struct SetSecret {
    /// The value.
    pub value: SecretString,
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

/// Adds a secret version (also used for certificate backing secrets and fixtures).
pub fn add_version(
    vault: &mut Vault,
    name: &str,
    sv: SecretVersion,
    managed: bool,
) -> Result<(), ApiError> {
    lifecycle::check_not_deleted::<SecretEntry>(vault, name)?;
    let entry = vault
        .secrets
        .live
        .entry(name.to_ascii_lowercase())
        .or_insert_with(|| SecretEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            managed,
        });
    if entry.managed && !managed {
        return Err(lifecycle::managed_conflict::<SecretEntry>(name));
    }
    entry.versions.push(sv);
    Ok(())
}

/// A new secret version from a value.
pub fn new_version(value: SecretString, content_type: Option<String>, tags: Tags) -> SecretVersion {
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
    if req.value.expose().len() > MAX_SECRET_VALUE {
        return Err(ApiError::bad_parameter(format!(
            "Secret value is too large: {} bytes, the limit is {MAX_SECRET_VALUE}.",
            req.value.expose().len()
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
    let e = lifecycle::entry::<SecretEntry>(v, name)?;
    let sv = e
        .versions
        .last()
        .ok_or_else(|| ApiError::not_found(S, name))?;
    let mut body = e.bundle(ctx, sv);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("value".into(), sv.value.expose().into());
    }
    Ok(Reply::ok(body))
}

/// Body of `PATCH /secrets/{name}/{version}`.
#[derive(Debug, Deserialize)]
pub struct UpdateSecret {
    #[serde(default, rename = "contentType")]
    content_type: Option<String>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

impl UpdateRequest for UpdateSecret {
    fn tags(&self) -> Option<&Value> {
        self.tags.as_ref()
    }
}
