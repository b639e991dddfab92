//! Identities, their vault permissions, and the tokens Entra issues to them.
//!
//! Tokens are opaque random strings bound to an identity, a tenant and a resource, with an
//! expiry. Client assertions (workload identity) are JWTs checked for issuer, subject,
//! audience, time window and signature.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::secret::SecretString;

/// The audience Kubernetes service-account tokens carry for Entra workload identity.
pub const WORKLOAD_AUDIENCE: &str = "api://AzureADTokenExchange";

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How an identity authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ManagedKind {
    /// An app registration (client secret, certificate or federated credential).
    #[default]
    None,
    /// The system-assigned managed identity of the (emulated) VM.
    System,
    /// A user-assigned managed identity.
    User,
}

/// A federated identity credential: which external tokens may act as this identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Federated {
    /// Expected `iss`. Defaults to mock-vault's own service-account issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Expected `sub`, e.g. `system:serviceaccount:default:workload`.
    pub subject: String,
    /// Accepted audiences (default `api://AzureADTokenExchange`).
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec![WORKLOAD_AUDIENCE.to_owned()]
}

/// Permissions on one vault, as access-policy permission names (lowercase), `all` = all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultPermissions {
    /// Key permissions (get, list, create, update, delete, encrypt, decrypt, wrapkey, ...).
    #[serde(default)]
    pub keys: BTreeSet<String>,
    /// Secret permissions (get, list, set, delete, ...).
    #[serde(default)]
    pub secrets: BTreeSet<String>,
    /// Certificate permissions (get, list, create, import, update, delete, ...).
    #[serde(default)]
    pub certificates: BTreeSet<String>,
}

impl VaultPermissions {
    /// Everything.
    pub fn all() -> Self {
        let all: BTreeSet<String> = ["all".to_owned()].into();
        Self {
            keys: all.clone(),
            secrets: all.clone(),
            certificates: all,
        }
    }

    fn normalise(&mut self) {
        for set in [&mut self.keys, &mut self.secrets, &mut self.certificates] {
            *set = set.iter().map(|p| p.to_ascii_lowercase()).collect();
        }
    }

    /// Whether `permission` (lowercase) on `kind` is granted.
    pub fn allows(&self, kind: ObjectKind, permission: &str) -> bool {
        let set = match kind {
            ObjectKind::Keys => &self.keys,
            ObjectKind::Secrets => &self.secrets,
            ObjectKind::Certificates => &self.certificates,
        };
        set.contains("all") || set.contains(permission)
    }
}

/// The three object families permissions are granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Keys.
    Keys,
    /// Secrets.
    Secrets,
    /// Certificates.
    Certificates,
}

impl ObjectKind {
    /// The word Key Vault uses in permission errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keys => "keys",
            Self::Secrets => "secrets",
            Self::Certificates => "certificates",
        }
    }
}

/// One identity: an app registration or a managed identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Friendly name (used in statistics and logs).
    pub name: String,
    /// Application (client) id.
    pub client_id: String,
    /// Object (principal) id.
    #[serde(default)]
    pub object_id: String,
    /// Tenant the identity lives in (defaults to the mock's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Client secret, if it may use one.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// PEM certificates whose keys may sign client assertions (certificate credentials).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Federated credentials (workload identity).
    #[serde(default)]
    pub federated: Vec<Federated>,
    /// Service accounts (`system:serviceaccount:<ns>:<name>`) that may use this identity
    /// through AKS identity binding's token proxy: what the identity binding and its RBAC
    /// grant say on AKS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_bindings: Vec<String>,
    /// Managed identity kind.
    #[serde(default)]
    pub managed: ManagedKind,
    /// Azure resource id, for user-assigned managed identities (`mi_res_id`).
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Permissions per vault name; the key `*` applies to every vault.
    #[serde(default = "all_vaults")]
    pub permissions: BTreeMap<String, VaultPermissions>,
}

fn all_vaults() -> BTreeMap<String, VaultPermissions> {
    [("*".to_owned(), VaultPermissions::all())].into()
}

impl Identity {
    /// Normalises permission names and fills defaults.
    pub fn normalise(&mut self, default_tenant: &str) {
        if self.object_id.is_empty() {
            self.object_id = uuid_like();
        }
        if self.tenant.is_none() {
            self.tenant = Some(default_tenant.to_owned());
        }
        for p in self.permissions.values_mut() {
            p.normalise();
        }
    }

    /// The tenant (after [`Identity::normalise`]).
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or_default()
    }

    /// Whether the identity holds `permission` on `kind` objects of `vault`.
    pub fn allows(&self, vault: &str, kind: ObjectKind, permission: &str) -> bool {
        let vault = vault.to_ascii_lowercase();
        self.permissions
            .iter()
            .filter(|(v, _)| v.as_str() == "*" || v.to_ascii_lowercase() == vault)
            .any(|(_, p)| p.allows(kind, permission))
    }
}

/// A random id in the 8-4-4-4-12 hex shape of Entra object ids and request ids.
pub fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

/// A random token-like string of `bytes` random bytes, base64url.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails if the OS RNG is unavailable; fall back to rand's.
    if SystemRandom::new().fill(&mut buf).is_err() {
        buf.iter_mut().for_each(|b| *b = rand::random());
    }
    B64URL.encode(buf)
}

/// What a token grants.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// Identity name.
    pub identity: String,
    /// Tenant that issued it.
    pub tenant: String,
    /// Resource (audience) it is for, without a trailing slash.
    pub resource: String,
    /// Expiry.
    pub expires_at: SystemTime,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a token we issued.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Issued for another resource.
    WrongAudience,
    /// Issued by another tenant.
    WrongTenant,
}

/// Tokens issued so far. Expired ones are pruned as new ones are issued.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: HashMap<String, TokenGrant>,
}

impl TokenStore {
    /// Issues a token.
    pub fn issue(&mut self, grant: TokenGrant) -> String {
        if self.tokens.len() > 10_000 {
            let now = SystemTime::now();
            self.tokens.retain(|_, g| g.expires_at > now);
        }
        let token = random_token(32);
        self.tokens.insert(token.clone(), grant);
        token
    }

    /// Validates a bearer token for a vault.
    pub fn check(
        &self,
        token: &str,
        resource: &str,
        tenant: &str,
    ) -> Result<&TokenGrant, TokenProblem> {
        let grant = self.tokens.get(token).ok_or(TokenProblem::Unknown)?;
        if grant.expires_at <= SystemTime::now() {
            return Err(TokenProblem::Expired);
        }
        if normalise_resource(&grant.resource) != normalise_resource(resource) {
            return Err(TokenProblem::WrongAudience);
        }
        if !grant.tenant.eq_ignore_ascii_case(tenant) {
            return Err(TokenProblem::WrongTenant);
        }
        Ok(grant)
    }

    /// Makes every issued token expire now (to test refresh).
    pub fn expire_all(&mut self) {
        let now = SystemTime::now();
        for g in self.tokens.values_mut() {
            g.expires_at = now;
        }
    }

    /// Forgets every token of one identity (revocation).
    pub fn revoke_identity(&mut self, identity: &str) {
        self.tokens.retain(|_, g| g.identity != identity);
    }
}

/// `https://vault.localhost/.default` and `https://vault.localhost/` both mean the resource
/// `https://vault.localhost`.
pub fn normalise_resource(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_suffix("/.default").unwrap_or(s);
    s.trim_end_matches('/').to_ascii_lowercase()
}

/// Unix seconds of a time.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// JWTs: the mock's own service-account issuer, and verification of client assertions.

/// Why a client assertion was refused; each maps to an Entra AADSTS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not three base64url parts of JSON.
    #[error("client assertion is not a well-formed JWT")]
    Malformed,
    /// `exp`/`nbf` outside the valid window.
    #[error("client assertion is not within its valid time range")]
    Expired,
    /// No federated credential or certificate matches.
    #[error("no matching federated identity record found for presented assertion")]
    NoMatch,
    /// The signature does not verify.
    #[error("client assertion signature is invalid")]
    BadSignature,
}

/// The claims checked in a client assertion.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// Issuer.
    #[serde(default)]
    pub iss: String,
    /// Subject.
    #[serde(default)]
    pub sub: String,
    /// Audience: a string or a list.
    #[serde(default)]
    pub aud: Value,
    /// Expiry.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
}

impl Claims {
    fn audiences(&self) -> Vec<&str> {
        match &self.aud {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// A decoded, not yet verified JWT.
#[derive(Debug)]
pub struct Jwt<'a> {
    /// `alg` from the header.
    pub alg: String,
    /// Claims.
    pub claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWT.
pub fn decode_jwt(token: &str) -> Result<Jwt<'_>, AssertionError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let header: Value = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AssertionError::Malformed)?;
    let claims: Claims = B64URL
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AssertionError::Malformed)?;
    let signature = B64URL.decode(s).map_err(|_| AssertionError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AssertionError::Malformed)?
        .to_owned();
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(AssertionError::Malformed)?;
    Ok(Jwt {
        alg,
        claims,
        signing_input,
        signature,
    })
}

impl Jwt<'_> {
    /// Checks `exp`/`nbf` (with five minutes of clock skew, as Entra allows).
    pub fn check_time(&self, now: i64) -> Result<(), AssertionError> {
        const SKEW: i64 = 300;
        match self.claims.exp {
            Some(exp) if now <= exp + SKEW => {}
            _ => return Err(AssertionError::Expired),
        }
        if self.claims.nbf.is_some_and(|nbf| now + SKEW < nbf) {
            return Err(AssertionError::Expired);
        }
        Ok(())
    }

    /// Whether any audience equals `aud`.
    pub fn has_audience(&self, aud: &str) -> bool {
        self.claims.audiences().contains(&aud)
    }

    /// Verifies the signature with a public key: SPKI DER of an RSA or EC P-256 key, or an
    /// RSA `RSAPublicKey` DER.
    pub fn verify(&self, public_key: &PublicKeyBytes) -> Result<(), AssertionError> {
        let algorithm: &'static dyn signature::VerificationAlgorithm =
            match (self.alg.as_str(), public_key) {
                ("RS256", PublicKeyBytes::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA256,
                ("RS384", PublicKeyBytes::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA384,
                ("RS512", PublicKeyBytes::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA512,
                ("PS256", PublicKeyBytes::Rsa(_)) => &signature::RSA_PSS_2048_8192_SHA256,
                ("ES256", PublicKeyBytes::EcP256(_)) => &signature::ECDSA_P256_SHA256_FIXED,
                _ => return Err(AssertionError::BadSignature),
            };
        let bytes = match public_key {
            PublicKeyBytes::Rsa(b) | PublicKeyBytes::EcP256(b) => b,
        };
        UnparsedPublicKey::new(algorithm, bytes)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| AssertionError::BadSignature)
    }
}

/// A public key for JWT verification.
#[derive(Debug, Clone)]
pub enum PublicKeyBytes {
    /// RSA public key (PKCS#1 `RSAPublicKey` DER).
    Rsa(Vec<u8>),
    /// Uncompressed P-256 point.
    EcP256(Vec<u8>),
}

/// Extracts the public key of a PEM certificate, for certificate credentials.
pub fn cert_public_key(pem_text: &str) -> Option<PublicKeyBytes> {
    let block = pem::parse(pem_text).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
    let spki = cert.public_key();
    let raw = spki.subject_public_key.data.to_vec();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => Some(PublicKeyBytes::Rsa(raw)),
        "1.2.840.10045.2.1" => Some(PublicKeyBytes::EcP256(raw)),
        _ => None,
    }
}

/// mock-vault's own service-account token issuer: it signs JWTs that stand in for the
/// Kubernetes tokens the CSI driver hands to providers (`ES256`).
pub struct SaIssuer {
    /// `iss` of its tokens.
    pub issuer: String,
    pair: signature::EcdsaKeyPair,
}

impl fmt::Debug for SaIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl SaIssuer {
    /// A new issuer with a fresh P-256 key.
    pub fn new(issuer: String) -> Option<Self> {
        let pair =
            signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
        Some(Self { issuer, pair })
    }

    /// The verification key.
    pub fn public_key(&self) -> PublicKeyBytes {
        PublicKeyBytes::EcP256(self.pair.public_key().as_ref().to_vec())
    }

    /// Signs a service-account-style token.
    pub fn sign(&self, subject: &str, audiences: &[String], ttl: Duration) -> Option<String> {
        let now = unix(SystemTime::now());
        let exp = now + i64::try_from(ttl.as_secs()).unwrap_or(3600);
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "mock-vault"});
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audiences,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": uuid_like(),
        });
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .ok()?;
        Some(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sa_tokens_verify_and_tampering_is_caught() {
        let issuer = SaIssuer::new("https://issuer.example".into()).unwrap();
        let token = issuer
            .sign(
                "system:serviceaccount:ns:sa",
                &[WORKLOAD_AUDIENCE.into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let jwt = decode_jwt(&token).unwrap();
        assert_eq!(jwt.claims.sub, "system:serviceaccount:ns:sa");
        assert!(jwt.has_audience(WORKLOAD_AUDIENCE));
        jwt.verify(&issuer.public_key()).unwrap();
        jwt.check_time(unix(SystemTime::now())).unwrap();
        assert_eq!(
            jwt.check_time(unix(SystemTime::now()) + 3600),
            Err(AssertionError::Expired)
        );

        let other = SaIssuer::new("https://issuer.example".into()).unwrap();
        assert_eq!(
            jwt.verify(&other.public_key()),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(
            decode_jwt("a.b").map(|_| ()),
            Err(AssertionError::Malformed)
        );
    }

    #[test]
    fn tokens_are_bound_to_resource_tenant_and_time() {
        let mut store = TokenStore::default();
        let t = store.issue(TokenGrant {
            identity: "app".into(),
            tenant: "t1".into(),
            resource: "https://vault.localhost".into(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
        });
        assert!(
            store
                .check(&t, "https://vault.localhost/.default", "t1")
                .is_ok()
        );
        assert_eq!(
            store
                .check(&t, "https://managedhsm.localhost", "t1")
                .map(|_| ()),
            Err(TokenProblem::WrongAudience)
        );
        assert_eq!(
            store.check(&t, "https://vault.localhost", "t2").map(|_| ()),
            Err(TokenProblem::WrongTenant)
        );
        assert_eq!(
            store
                .check("nope", "https://vault.localhost", "t1")
                .map(|_| ()),
            Err(TokenProblem::Unknown)
        );
        store.expire_all();
        assert_eq!(
            store.check(&t, "https://vault.localhost", "t1").map(|_| ()),
            Err(TokenProblem::Expired)
        );
    }

    #[test]
    fn permissions_match_vault_and_wildcard() {
        let mut id: Identity = serde_json::from_value(json!({
            "name": "reader", "client_id": "c",
            "permissions": {"kv1": {"secrets": ["Get"]}, "*": {"keys": ["encrypt"]}}
        }))
        .unwrap();
        id.normalise("t");
        assert!(id.allows("KV1", ObjectKind::Secrets, "get"));
        assert!(!id.allows("kv2", ObjectKind::Secrets, "get"));
        assert!(id.allows("kv2", ObjectKind::Keys, "encrypt"));
        assert!(!id.allows("kv1", ObjectKind::Keys, "decrypt"));
        assert!(!format!("{:?}", SecretString::new("s3cr3t".into())).contains("s3cr3t"));
    }
}
