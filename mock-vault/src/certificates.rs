//! `/certificates` and `/deletedcertificates`: create (self-signed or by the mock's test CA),
//! the pending-operation poll, import, versions, and the managed backing key and secret.

use std::sync::Arc;

use base64::Engine as _;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::api::{ApiError, ApiResult, Ctx, Reply, check_name, tags_from};
use crate::crypto::{Curve, KeySpec, KeyType, Material};
use crate::identity::{ObjectKind, uuid_like};
use crate::lifecycle::{self, UpdateRequest, Version, Versioned};
use crate::secret::SecretString;
use crate::store::{
    Attributes, AttributesPatch, CertBacking, CertEntry, CertVersion, Collection, KeyEntry,
    KeyVersion, PendingOp, SecretEntry, SecretVersion, Tags, Vault, VaultCell, find_version_mut,
    new_version_id, now,
};
use crate::x509::{self, CertRequest, KeyKind, TestCa};

const C: ObjectKind = ObjectKind::Certificates;
const PKCS12: &str = "application/x-pkcs12";
const PEM: &str = "application/x-pem-file";
const STD_B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The issuers a policy may name besides `Self`: the mock's test CA.
#[derive(Debug)]
pub struct Issuers {
    /// Issuer name as it appears in `policy.issuer.name`.
    pub name: String,
    /// The CA.
    pub ca: TestCa,
}

/// Dispatches a request whose first segment is `certificates` or `deletedcertificates`.
pub fn handle(ctx: &Ctx<'_>, cell: &VaultCell, issuers: &Issuers) -> ApiResult {
    let m = ctx.method;
    match ctx.segments.as_slice() {
        ["certificates", name, "create"] if m == Method::POST => {
            ctx.require(C, "create")?;
            create(ctx, cell, issuers, name)
        }
        ["certificates", name, "import"] if m == Method::POST => {
            ctx.require(C, "import")?;
            import(ctx, cell, name)
        }
        ["certificates", name, "pending"] if m == Method::GET => {
            ctx.require(C, "get")?;
            pending(ctx, cell, name, PendingAction::Get)
        }
        ["certificates", name, "pending"] if m == Method::PATCH => {
            ctx.require(C, "update")?;
            pending(ctx, cell, name, PendingAction::Cancel)
        }
        ["certificates", name, "pending"] if m == Method::DELETE => {
            ctx.require(C, "delete")?;
            pending(ctx, cell, name, PendingAction::Delete)
        }
        ["certificates", name, "policy"] if m == Method::GET => {
            ctx.require(C, "get")?;
            cell.read(|v| {
                let e = entry(v, name)?;
                Ok(Reply::ok(policy_json(ctx, &e.name, &e.policy)))
            })
        }
        ["certificates", name, "policy"] if m == Method::PATCH => {
            ctx.require(C, "update")?;
            let patch: Value = ctx.json()?;
            let policy = normalise_policy(Some(&patch), issuers)?;
            cell.write(|v| {
                let e = entry_mut(v, name)?;
                merge(&mut e.policy, &policy);
                Ok(Reply::ok(policy_json(ctx, &e.name, &e.policy)))
            })
        }
        _ => lifecycle::handle::<CertEntry>(ctx, cell),
    }
}

fn entry<'a>(v: &'a Vault, name: &str) -> Result<&'a CertEntry, ApiError> {
    lifecycle::entry(v, name)
}

fn entry_mut<'a>(v: &'a mut Vault, name: &str) -> Result<&'a mut CertEntry, ApiError> {
    lifecycle::entry_mut(v, name)
}

fn cert_url(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{}/certificates/{name}/{v}", ctx.base),
        None => format!("{}/certificates/{name}", ctx.base),
    }
}

fn policy_json(ctx: &Ctx<'_>, name: &str, policy: &Value) -> Value {
    let mut p = policy.clone();
    if let Some(obj) = p.as_object_mut() {
        obj.insert(
            "id".into(),
            format!("{}/certificates/{name}/policy", ctx.base).into(),
        );
    }
    p
}

impl Version for CertVersion {
    fn id(&self) -> &str {
        &self.version
    }

    fn tags_mut(&mut self) -> &mut Tags {
        &mut self.tags
    }
}

impl Versioned for CertEntry {
    type Version = CertVersion;
    type Backing = CertBacking;
    type Update = UpdateCertificate;

    const KIND: ObjectKind = C;
    const PATH: &'static str = "certificates";
    const NOUN: &'static str = "Certificate";
    const UPDATE_PERMISSION: &'static str = "update";

    fn collection(vault: &Vault) -> &Collection<Self, CertBacking> {
        &vault.certificates
    }

    fn collection_mut(vault: &mut Vault) -> &mut Collection<Self, CertBacking> {
        &mut vault.certificates
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn versions(&self) -> &[CertVersion] {
        &self.versions
    }

    fn versions_mut(&mut self) -> &mut [CertVersion] {
        &mut self.versions
    }

    fn bundle(&self, ctx: &Ctx<'_>, cv: &CertVersion) -> Value {
        let leaf = cv.chain.first().map(Vec::as_slice).unwrap_or_default();
        json!({
            "id": cert_url(ctx, &self.name, Some(&cv.version)),
            "kid": format!("{}/keys/{}/{}", ctx.base, self.name, cv.version),
            "sid": format!("{}/secrets/{}/{}", ctx.base, self.name, cv.version),
            "x5t": x509::x5t(leaf),
            "cer": STD_B64.encode(leaf),
            "attributes": cv.attributes.to_json(),
            "tags": cv.tags,
            "policy": policy_json(ctx, &self.name, &cv.policy),
            "contentType": content_type_of(&cv.policy),
            "preserveCertOrder": false,
        })
    }

    /// Needs a version for `x5t`: a certificate without one is not listed.
    fn list_item(&self, ctx: &Ctx<'_>, cv: Option<&CertVersion>) -> Option<Value> {
        let (cv, versioned) = match cv {
            Some(cv) => (cv, true),
            None => (self.versions.last()?, false),
        };
        let leaf = cv.chain.first().map(Vec::as_slice).unwrap_or_default();
        Some(json!({
            "id": cert_url(ctx, &self.name, versioned.then_some(cv.version.as_str())),
            "x5t": x509::x5t(leaf),
            "attributes": cv.attributes.to_json(),
            "tags": cv.tags,
        }))
    }

    fn apply_update(cv: &mut CertVersion, req: &UpdateCertificate) {
        if let Some(a) = &req.attributes {
            // Validity comes from the certificate; only the enabled flag changes.
            let patch = AttributesPatch {
                enabled: a.enabled,
                ..AttributesPatch::default()
            };
            cv.attributes.apply(&patch);
        }
    }

    /// The backing key and secret follow the certificate's enabled flag.
    fn after_update(vault: &mut Vault, lower: &str, cv: &CertVersion) {
        if let Some(k) = vault.keys.live.get_mut(lower)
            && let Some(kv) = find_version_mut(&mut k.versions, Some(&cv.version), |x| &x.version)
        {
            kv.attributes.enabled = cv.attributes.enabled;
        }
        if let Some(s) = vault.secrets.live.get_mut(lower)
            && let Some(sv) = find_version_mut(&mut s.versions, Some(&cv.version), |x| &x.version)
        {
            sv.attributes.enabled = cv.attributes.enabled;
        }
    }

    fn detach(vault: &mut Vault, lower: &str) -> CertBacking {
        CertBacking {
            key: vault.keys.live.remove(lower),
            secret: vault.secrets.live.remove(lower),
        }
    }

    fn reattach(vault: &mut Vault, lower: &str, backing: CertBacking) {
        if let Some(k) = backing.key {
            vault.keys.live.insert(lower.to_owned(), k);
        }
        if let Some(s) = backing.secret {
            vault.secrets.live.insert(lower.to_owned(), s);
        }
    }
}

fn content_type_of(policy: &Value) -> String {
    policy
        .pointer("/secret_props/contentType")
        .and_then(Value::as_str)
        .unwrap_or(PKCS12)
        .to_owned()
}

/// Deep-merges `patch` into `base` (objects merged, everything else replaced).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Fills a policy's defaults and checks its values; the result is what `GET policy` shows.
pub fn normalise_policy(policy: Option<&Value>, issuers: &Issuers) -> Result<Value, ApiError> {
    let t = now();
    let mut p = json!({
        "key_props": {"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false},
        "secret_props": {"contentType": PKCS12},
        "x509_props": {
            "subject": "",
            "sans": {},
            "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
            "key_usage": ["digitalSignature", "keyEncipherment"],
            "validity_months": 12
        },
        "lifetime_actions": [
            {"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}
        ],
        "issuer": {"name": "Self"},
        "attributes": {"enabled": true, "created": t, "updated": t}
    });
    if let Some(given) = policy {
        if !given.is_object() {
            return Err(ApiError::bad_parameter(
                "Property 'policy' must be an object.",
            ));
        }
        merge(&mut p, given);
    }
    let ct = content_type_of(&p);
    if ct != PKCS12 && ct != PEM {
        return Err(ApiError::bad_parameter(format!(
            "secret_props.contentType must be {PKCS12} or {PEM}."
        )));
    }
    let issuer = p
        .pointer("/issuer/name")
        .and_then(Value::as_str)
        .unwrap_or("Self");
    if !issuer.eq_ignore_ascii_case("Self")
        && !issuer.eq_ignore_ascii_case(&issuers.name)
        && !issuer.eq_ignore_ascii_case("Unknown")
    {
        return Err(ApiError::bad_parameter(format!(
            "Issuer '{issuer}' is not configured in this vault; use Self or {}.",
            issuers.name
        )));
    }
    Ok(p)
}

fn key_spec(policy: &Value) -> Result<(KeySpec, KeyKind), ApiError> {
    let kty_s = policy
        .pointer("/key_props/kty")
        .and_then(Value::as_str)
        .unwrap_or("RSA");
    let kty = KeyType::parse(kty_s)
        .filter(|k| !matches!(k, KeyType::Oct | KeyType::OctHsm))
        .ok_or_else(|| {
            ApiError::bad_parameter("key_props.kty must be RSA, RSA-HSM, EC or EC-HSM.")
        })?;
    match kty {
        KeyType::Ec | KeyType::EcHsm => {
            let crv_s = policy
                .pointer("/key_props/crv")
                .and_then(Value::as_str)
                .unwrap_or("P-256");
            let crv = Curve::parse(crv_s).ok_or_else(|| {
                ApiError::bad_parameter("key_props.crv must be P-256, P-384 or P-521.")
            })?;
            let kind = match crv {
                Curve::P256 => KeyKind::EcP256,
                Curve::P384 => KeyKind::EcP384,
                Curve::P521 => KeyKind::EcP521,
            };
            Ok((
                KeySpec {
                    kty,
                    size: None,
                    curve: Some(crv),
                },
                kind,
            ))
        }
        _ => {
            let size = policy
                .pointer("/key_props/key_size")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(2048);
            Ok((
                KeySpec {
                    kty,
                    size: Some(size),
                    curve: None,
                },
                KeyKind::Rsa,
            ))
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn cert_request(policy: &Value) -> Result<CertRequest, ApiError> {
    let subject = policy
        .pointer("/x509_props/subject")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let dns_names = strings(policy.pointer("/x509_props/sans/dns_names"));
    if subject.is_empty() && dns_names.is_empty() {
        return Err(ApiError::bad_parameter(
            "The policy needs x509_props.subject or x509_props.sans.dns_names.",
        ));
    }
    let months = policy
        .pointer("/x509_props/validity_months")
        .and_then(Value::as_u64)
        .unwrap_or(12);
    if !(1..=1200).contains(&months) {
        return Err(ApiError::bad_parameter(
            "x509_props.validity_months must be between 1 and 1200.",
        ));
    }
    Ok(CertRequest {
        subject: if subject.is_empty() {
            format!("CN={}", dns_names.first().map(String::as_str).unwrap_or(""))
        } else {
            subject
        },
        dns_names,
        emails: strings(policy.pointer("/x509_props/sans/emails")),
        upns: strings(policy.pointer("/x509_props/sans/upns")),
        validity_months: u32::try_from(months).unwrap_or(12),
        key_usage: strings(policy.pointer("/x509_props/key_usage")),
        ekus: strings(policy.pointer("/x509_props/ekus")),
    })
}

/// The value of the backing secret in the policy's content type.
fn secret_value(
    content_type: &str,
    key_pkcs8: &[u8],
    chain: &[Vec<u8>],
) -> Result<SecretString, ApiError> {
    if content_type == PEM {
        Ok(SecretString::new(x509::build_pem_bundle(key_pkcs8, chain)))
    } else {
        let pfx = Zeroizing::new(
            x509::build_pfx(key_pkcs8, chain, "")
                .map_err(|e| ApiError::bad_parameter(e.to_string()))?,
        );
        Ok(SecretString::new(STD_B64.encode(pfx.as_slice())))
    }
}

/// Stores a new certificate version with its managed key and secret; returns its version.
#[allow(clippy::too_many_arguments)]
fn store_version(
    vault: &mut Vault,
    name: &str,
    version: &str,
    material: Material,
    kty: KeyType,
    chain: Vec<Vec<u8>>,
    policy: &Value,
    attributes: Option<&AttributesPatch>,
    tags: Tags,
) -> Result<(), ApiError> {
    lifecycle::check_not_deleted::<CertEntry>(vault, name)?;
    let lower = name.to_ascii_lowercase();
    if vault.keys.live.get(&lower).is_some_and(|k| !k.managed)
        || vault.secrets.live.get(&lower).is_some_and(|s| !s.managed)
    {
        return Err(ApiError::conflict(format!(
            "A key or secret named {name} already exists and is not managed by a certificate."
        )));
    }
    let leaf = chain
        .first()
        .ok_or_else(|| ApiError::bad_parameter("The certificate chain is empty."))?;
    let info = x509::cert_info(leaf).map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    let mut attrs = Attributes::new_now();
    if let Some(a) = attributes {
        attrs.apply(a);
        attrs.updated = attrs.created;
    }
    attrs.nbf = Some(info.not_before);
    attrs.exp = Some(info.not_after);
    let content_type = content_type_of(policy);
    let pkcs8 = material
        .pkcs8()
        .ok_or_else(|| ApiError::bad_parameter("Certificate keys must be RSA or EC."))?;
    let value = secret_value(&content_type, pkcs8, &chain)?;
    let exportable = policy
        .pointer("/key_props/exportable")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let key_ops = match kty {
        KeyType::Ec | KeyType::EcHsm => vec!["sign".into(), "verify".into()],
        _ => vec![
            "sign".into(),
            "verify".into(),
            "wrapKey".into(),
            "unwrapKey".into(),
            "encrypt".into(),
            "decrypt".into(),
        ],
    };
    let key_entry = vault
        .keys
        .live
        .entry(lower.clone())
        .or_insert_with(|| KeyEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            managed: true,
            rotation_policy: None,
        });
    key_entry.versions.push(KeyVersion {
        version: version.to_owned(),
        kty,
        material: Arc::new(material),
        key_ops,
        attributes: Attributes {
            exportable: Some(exportable),
            ..attrs.clone()
        },
        tags: tags.clone(),
    });
    let secret_entry = vault
        .secrets
        .live
        .entry(lower.clone())
        .or_insert_with(|| SecretEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            managed: true,
        });
    secret_entry.versions.push(SecretVersion {
        version: version.to_owned(),
        value,
        content_type: Some(content_type),
        attributes: attrs.clone(),
        tags: tags.clone(),
    });
    let cert_entry = vault
        .certificates
        .live
        .entry(lower)
        .or_insert_with(|| CertEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            policy: policy.clone(),
            pending: None,
        });
    cert_entry.policy = policy.clone();
    cert_entry.versions.push(CertVersion {
        version: version.to_owned(),
        chain,
        attributes: attrs,
        tags,
        policy: policy.clone(),
    });
    Ok(())
}

#[derive(Debug, Deserialize)]
struct CreateCertificate {
    #[serde(default)]
    policy: Option<Value>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

/// Issues a certificate from a policy and stores it (used by the REST create and fixtures).
pub fn issue_into(
    vault: &mut Vault,
    issuers: &Issuers,
    name: &str,
    policy: &Value,
    attributes: Option<&AttributesPatch>,
    tags: Tags,
) -> Result<String, ApiError> {
    let (spec, kind) = key_spec(policy)?;
    let request = cert_request(policy)?;
    let material = Material::generate(spec).map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    let pkcs8 = material
        .pkcs8()
        .ok_or_else(|| ApiError::bad_parameter("Certificate keys must be RSA or EC."))?;
    let issuer_name = policy
        .pointer("/issuer/name")
        .and_then(Value::as_str)
        .unwrap_or("Self");
    let ca = (!issuer_name.eq_ignore_ascii_case("Self")).then_some(&issuers.ca);
    let issued = x509::issue(&request, pkcs8, kind, ca)
        .map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    let version = new_version_id();
    store_version(
        vault,
        name,
        &version,
        material,
        spec.kty,
        issued.chain,
        policy,
        attributes,
        tags,
    )?;
    Ok(version)
}

fn operation_json(ctx: &Ctx<'_>, name: &str, op: &PendingOp, done: bool) -> Value {
    let mut v = json!({
        "id": format!("{}/certificates/{name}/pending", ctx.base),
        "issuer": {"name": op.issuer},
        "csr": op.csr,
        "cancellation_requested": false,
        "request_id": op.request_id,
    });
    if let Some(obj) = v.as_object_mut() {
        match (&op.error, done) {
            (Some((code, message)), _) => {
                obj.insert("status".into(), "failed".into());
                obj.insert("status_details".into(), message.clone().into());
                obj.insert("error".into(), json!({"code": code, "message": message}));
            }
            (None, true) => {
                obj.insert("status".into(), "completed".into());
                obj.insert("target".into(), cert_url(ctx, name, None).into());
            }
            (None, false) => {
                obj.insert("status".into(), "inProgress".into());
                obj.insert(
                    "status_details".into(),
                    "Pending certificate created. Please Perform Merge to complete the request."
                        .into(),
                );
            }
        }
    }
    v
}

fn create(ctx: &Ctx<'_>, cell: &VaultCell, issuers: &Issuers, name: &str) -> ApiResult {
    check_name(name)?;
    let req: CreateCertificate = ctx.json()?;
    let policy = match &req.policy {
        Some(p) => normalise_policy(Some(p), issuers)?,
        // Without a policy, a new version reuses the existing certificate's policy.
        None => cell
            .read(|v| entry(v, name).map(|e| e.policy.clone()))
            .map_err(|_| {
                ApiError::bad_parameter("Property 'policy' is required for a new certificate.")
            })?,
    };
    if policy
        .pointer("/issuer/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.eq_ignore_ascii_case("Unknown"))
    {
        return Err(ApiError::bad_parameter(
            "Issuer 'Unknown' (a CSR to be merged) is not supported by mock-vault; use Self or the test CA.",
        ));
    }
    let tags = tags_from(req.tags.as_ref())?;
    let issuer = policy
        .pointer("/issuer/name")
        .and_then(Value::as_str)
        .unwrap_or("Self")
        .to_owned();
    let op = cell.write(|v| {
        let version = issue_into(v, issuers, name, &policy, req.attributes.as_ref(), tags)?;
        let op = PendingOp {
            request_id: uuid_like().replace('-', ""),
            issuer,
            version,
            csr: String::new(),
            error: None,
        };
        let e = entry_mut(v, name)?;
        e.pending = Some(op.clone());
        Ok::<_, ApiError>(op)
    })?;
    // Key Vault answers 202 "inProgress" and completes asynchronously; the first poll
    // reports completion.
    Ok(Reply::with_status(
        StatusCode::ACCEPTED,
        operation_json(ctx, name, &op, false),
    ))
}

enum PendingAction {
    Get,
    Cancel,
    Delete,
}

fn pending(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, action: PendingAction) -> ApiResult {
    let not_found = || {
        let mut e = ApiError::not_found(C, name);
        e.message = format!("Pending certificate not found: {name}");
        e.code = "PendingCertificateNotFound".into();
        e
    };
    let answer = |e: &CertEntry| {
        let op = e.pending.as_ref().ok_or_else(not_found)?;
        Ok(Reply::ok(operation_json(ctx, &e.name, op, true)))
    };
    match action {
        // Operations complete at once, so a cancellation request finds nothing to cancel.
        PendingAction::Get | PendingAction::Cancel => {
            cell.read(|v| answer(entry(v, name).map_err(|_| not_found())?))
        }
        PendingAction::Delete => cell.write(|v| {
            let e = entry_mut(v, name).map_err(|_| not_found())?;
            let reply = answer(e)?;
            e.pending = None;
            Ok(reply)
        }),
    }
}

/// Body of `PATCH /certificates/{name}/{version}`.
#[derive(Debug, Deserialize)]
pub struct UpdateCertificate {
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

impl UpdateRequest for UpdateCertificate {
    fn tags(&self) -> Option<&Value> {
        self.tags.as_ref()
    }
}

#[derive(Deserialize)]
struct ImportCertificate {
    value: SecretString,
    #[serde(default)]
    pwd: Option<SecretString>,
    #[serde(default)]
    policy: Option<Value>,
    #[serde(default)]
    attributes: Option<AttributesPatch>,
    #[serde(default)]
    tags: Option<Value>,
}

fn import(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    check_name(name)?;
    let req: ImportCertificate = ctx.json()?;
    let given_ct = req
        .policy
        .as_ref()
        .and_then(|p| p.pointer("/secret_props/contentType"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let looks_pem = req.value.expose().trim_start().starts_with("-----BEGIN");
    let parsed = if given_ct.as_deref() == Some(PEM) || looks_pem {
        x509::parse_pem_bundle(req.value.expose())
    } else {
        let der = Zeroizing::new(
            STD_B64
                .decode(req.value.expose().trim().as_bytes())
                .map_err(|_| {
                    ApiError::bad_parameter("Property 'value' must be a base64 PFX or PEM text.")
                })?,
        );
        x509::parse_pfx(&der, req.pwd.as_ref().map_or("", SecretString::expose))
    }
    .map_err(|e| ApiError::bad_parameter(format!("The certificate could not be imported: {e}")))?;

    let (kty, curve) = match parsed.kind {
        KeyKind::Rsa => (KeyType::Rsa, None),
        KeyKind::EcP256 => (KeyType::Ec, Some(Curve::P256)),
        KeyKind::EcP384 => (KeyType::Ec, Some(Curve::P384)),
        KeyKind::EcP521 => (KeyType::Ec, Some(Curve::P521)),
    };
    let material = Material::from_pkcs8(kty, curve, &parsed.key_pkcs8)
        .map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    // The imported certificate's own subject and SANs become the policy.
    let mut policy = json!({
        "key_props": {"exportable": true, "kty": kty.as_str(), "reuse_key": false},
        "secret_props": {"contentType": given_ct.clone().unwrap_or_else(|| if looks_pem { PEM.into() } else { PKCS12.into() })},
        "x509_props": {"subject": parsed.subject, "sans": {"dns_names": parsed.dns_names}, "validity_months": 12},
        "issuer": {"name": "Unknown"},
    });
    if let (Some(obj), Some(crv)) = (
        policy
            .pointer_mut("/key_props")
            .and_then(Value::as_object_mut),
        curve,
    ) {
        obj.insert("crv".into(), crv.as_str().into());
    } else if let Some(obj) = policy
        .pointer_mut("/key_props")
        .and_then(Value::as_object_mut)
    {
        obj.insert("key_size".into(), material.bits().into());
    }
    if let Some(p) = &req.policy {
        merge(&mut policy, p);
    }
    let t = now();
    if let Some(obj) = policy.as_object_mut() {
        obj.insert(
            "attributes".into(),
            json!({"enabled": true, "created": t, "updated": t}),
        );
    }
    let tags = tags_from(req.tags.as_ref())?;
    let version = new_version_id();
    cell.write(|v| {
        store_version(
            v,
            name,
            &version,
            material,
            kty,
            parsed.chain,
            &policy,
            req.attributes.as_ref(),
            tags,
        )?;
        let e = entry(v, name)?;
        let cv = e
            .versions
            .last()
            .ok_or_else(|| ApiError::not_found(C, name))?;
        Ok(Reply::ok(e.bundle(ctx, cv)))
    })
}
