//! The fixture file: vaults, identities with their permissions, and the keys, secrets and
//! certificates to create at start. YAML or JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::identity::{Identity, ManagedKind, VaultPermissions};
use crate::secret::SecretString;
use crate::store::VaultKind;

/// Tenant used when the fixture names none.
pub const DEFAULT_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Client id of the default identity.
pub const DEFAULT_CLIENT_ID: &str = "5e1f1b7a-0d6c-4d1e-9d8b-6f2f1b0c0a11";
/// Vault created when the fixture names none.
pub const DEFAULT_VAULT: &str = "kv1";

/// Whole fixture.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Default tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Region reported in `x-ms-keyvault-region`.
    #[serde(default)]
    pub region: Option<String>,
    /// Vaults (default: one vault `kv1`).
    #[serde(default)]
    pub vaults: Vec<VaultFixture>,
    /// Identities (default: one app identity allowed everything).
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// One vault.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultFixture {
    /// Name: 3-24 characters of letters, digits and dashes.
    pub name: String,
    /// Vault or Managed HSM.
    #[serde(default)]
    pub kind: VaultKind,
    /// Owning tenant (default: the fixture's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Keys to create.
    #[serde(default)]
    pub keys: Vec<KeyFixture>,
    /// Secrets to create.
    #[serde(default)]
    pub secrets: Vec<SecretFixture>,
    /// Certificates to create.
    #[serde(default)]
    pub certificates: Vec<CertFixture>,
}

/// A key to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFixture {
    /// Name.
    pub name: String,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    #[serde(default = "rsa")]
    pub kty: String,
    /// Bits (RSA / oct).
    #[serde(default)]
    pub size: Option<u32>,
    /// Curve (EC).
    #[serde(default)]
    pub crv: Option<String>,
    /// Allowed operations.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    /// How many versions to create (oldest first).
    #[serde(default = "one")]
    pub versions: u32,
    /// Whether the latest version is enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A secret to create.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFixture {
    /// Name.
    pub name: String,
    /// Value (one version).
    #[serde(default)]
    pub value: Option<String>,
    /// Values, one version each, oldest first.
    #[serde(default)]
    pub values: Vec<String>,
    /// Content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Whether the latest version is enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFixture")
            .field("name", &self.name)
            .field("values", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A certificate to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFixture {
    /// Name.
    pub name: String,
    /// Subject, e.g. `CN=web.example.com`.
    #[serde(default)]
    pub subject: Option<String>,
    /// DNS SANs.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// `Self` or the test CA's name (`MockCA`).
    #[serde(default = "self_issuer")]
    pub issuer: String,
    /// `RSA` or `EC`.
    #[serde(default = "rsa")]
    pub kty: String,
    /// RSA size.
    #[serde(default)]
    pub key_size: Option<u32>,
    /// EC curve.
    #[serde(default)]
    pub crv: Option<String>,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Validity.
    #[serde(default)]
    pub validity_months: Option<u32>,
    /// Versions to create.
    #[serde(default = "one")]
    pub versions: u32,
}

impl CertFixture {
    /// The certificate policy this fixture stands for.
    pub fn policy(&self) -> Value {
        let mut key_props = json!({"kty": self.kty, "exportable": true, "reuse_key": false});
        if let Some(obj) = key_props.as_object_mut() {
            if let Some(s) = self.key_size {
                obj.insert("key_size".into(), s.into());
            }
            if let Some(c) = &self.crv {
                obj.insert("crv".into(), c.clone().into());
            }
        }
        let subject = self.subject.clone().unwrap_or_else(|| {
            format!(
                "CN={}",
                self.dns_names
                    .first()
                    .map(String::as_str)
                    .unwrap_or(&self.name)
            )
        });
        json!({
            "key_props": key_props,
            "secret_props": {"contentType": self.content_type.clone().unwrap_or_else(|| "application/x-pkcs12".into())},
            "x509_props": {
                "subject": subject,
                "sans": {"dns_names": self.dns_names},
                "validity_months": self.validity_months.unwrap_or(12),
            },
            "issuer": {"name": self.issuer},
        })
    }
}

fn rsa() -> String {
    "RSA".into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn self_issuer() -> String {
    "Self".into()
}

/// Errors loading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Unreadable file.
    #[error("fixture {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid YAML/JSON for the format.
    #[error("fixture {path}: {reason}")]
    Parse {
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Valid syntax, invalid content.
    #[error("fixture: {0}")]
    Invalid(String),
}

impl Fixture {
    /// Reads a YAML or JSON fixture file.
    pub fn from_path(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| FixtureError::Parse {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses fixture text (YAML, of which JSON is a subset).
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills defaults (tenant, vault, identity) and validates names.
    pub fn normalise(&mut self) -> Result<(), FixtureError> {
        let tenant = self
            .tenant
            .get_or_insert_with(|| DEFAULT_TENANT.to_owned())
            .clone();
        if self.vaults.is_empty() {
            self.vaults.push(VaultFixture {
                name: DEFAULT_VAULT.into(),
                ..VaultFixture::default()
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &mut self.vaults {
            let ok = (3..=24).contains(&v.name.len())
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(FixtureError::Invalid(format!(
                    "vault name {:?} must be 3-24 characters of letters, digits and dashes",
                    v.name
                )));
            }
            if !seen.insert(v.name.to_ascii_lowercase()) {
                return Err(FixtureError::Invalid(format!(
                    "vault {} is listed twice",
                    v.name
                )));
            }
            if v.tenant.is_none() {
                v.tenant = Some(tenant.clone());
            }
        }
        if self.identities.is_empty() {
            self.identities.push(Identity {
                name: "default".into(),
                client_id: DEFAULT_CLIENT_ID.into(),
                object_id: String::new(),
                tenant: None,
                client_secret: Some(SecretString::new(crate::identity::random_token(24))),
                certificates: Vec::new(),
                federated: Vec::new(),
                identity_bindings: Vec::new(),
                managed: ManagedKind::None,
                resource_id: None,
                permissions: [("*".to_owned(), VaultPermissions::all())].into(),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        let mut systems = 0;
        for i in &mut self.identities {
            if !names.insert(i.name.clone()) {
                return Err(FixtureError::Invalid(format!(
                    "identity {} is listed twice",
                    i.name
                )));
            }
            if i.managed == ManagedKind::System {
                systems += 1;
            }
            i.normalise(&tenant);
        }
        if systems > 1 {
            return Err(FixtureError::Invalid(
                "at most one identity may be the system-assigned managed identity".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn yaml_fixture_parses_and_defaults_fill_in() {
        let mut f = Fixture::parse(
            r#"
vaults:
  - name: kv-prod
    keys: [{name: kek, kty: RSA, size: 3072, versions: 2}]
    secrets: [{name: db, value: hunter2}]
    certificates: [{name: web, dns_names: [web.example.com], issuer: MockCA}]
  - name: hsm1
    kind: managed-hsm
identities:
  - name: reader
    client_id: 11111111-1111-1111-1111-111111111111
    client_secret: s
    permissions: {kv-prod: {secrets: [get]}}
  - name: vm
    client_id: 22222222-2222-2222-2222-222222222222
    managed: system
"#,
        )
        .unwrap();
        f.normalise().unwrap();
        assert_eq!(f.tenant.as_deref(), Some(DEFAULT_TENANT));
        assert_eq!(f.vaults[1].kind, VaultKind::ManagedHsm);
        assert_eq!(f.vaults[0].keys[0].versions, 2);
        assert!(!format!("{:?}", f.vaults[0].secrets[0]).contains("hunter2"));
        assert!(f.identities[0].allows("kv-prod", crate::identity::ObjectKind::Secrets, "get"));
    }

    #[test]
    fn bad_fixtures_are_refused_with_a_reason() {
        assert!(Fixture::parse("vaults: [{name: kv, surprise: 1}]").is_err());
        let mut f = Fixture::parse("vaults: [{name: x}]").unwrap();
        assert!(f.normalise().unwrap_err().to_string().contains("3-24"));
    }
}
