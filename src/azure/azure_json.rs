//! `/etc/kubernetes/azure.json`, the cloud-provider configuration file Azure/kubernetes-kms
//! reads, and the choice of Entra credential it implies.
//!
//! Pure: [`AzureJson::load`] reads one file, nothing else touches the file system or the
//! process environment. Workload identity settings come from the caller as a
//! [`WorkloadIdentityEnv`] (the `AZURE_…` variables, read by the flags).
//!
//! Only the fields Azure/kubernetes-kms reads are kept: `cloud`, `tenantId`, `aadClientId`,
//! `aadClientSecret`, `useManagedIdentityExtension`, `userAssignedIdentityID`,
//! `aadClientCertPath` and `aadClientCertPassword`. Every other field (`subscriptionId`,
//! `resourceGroup`, `location`, `vmType`, ...) is ignored. Field names are case-sensitive, as
//! in the Go plugin; a missing field or `null` means empty (or `false`).
//!
//! Secret values (`aadClientSecret`, `aadClientCertPassword`) are held in [`SecretString`]s
//! (zeroizing, redacted by their own `Debug`, so the types here derive `Debug`), and are
//! never part of an error message. The Azure SDK's `Secret` is made only where the
//! credential is built ([`crate::azure::credential`]).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::secret::SecretString;

/// Largest `azure.json` accepted (real files are a few KiB).
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The `aadClientId` (and `aadClientSecret`) AKS writes when the cluster uses a managed
/// identity.
const MSI_CLIENT_ID: &str = "msi";

/// Errors reading `azure.json` or choosing a credential from it. No variant carries a secret
/// value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be opened or read.
    #[error("cannot read azure.json {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    #[error("azure.json {} is larger than {MAX_FILE_SIZE} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content is neither valid JSON nor YAML (the reason names positions, never the
    /// content).
    #[error("{origin} is not valid JSON (nor YAML): {reason}")]
    NotJson {
        /// The file path, or `azure.json` for in-memory content.
        origin: String,
        /// What the JSON parser found wrong, with line and column.
        reason: String,
    },
    /// The top-level JSON value is not an object.
    #[error("{origin} must hold a JSON object, found {found}")]
    NotObject {
        /// The file path, or `azure.json` for in-memory content.
        origin: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A known field has the wrong JSON type.
    #[error("{origin}: field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// The file path, or `azure.json` for in-memory content.
        origin: String,
        /// The field name, as spelled in `azure.json`.
        field: &'static str,
        /// The JSON type expected.
        expected: &'static str,
        /// The JSON type found (never the value).
        found: &'static str,
    },
    /// No credential is configured.
    #[error(
        "azure.json configures no credential: set `useManagedIdentityExtension: true` (plus \
         `userAssignedIdentityID` for a user-assigned identity), or `tenantId`, `aadClientId` \
         and `aadClientSecret`, or `tenantId`, `aadClientId` and `aadClientCertPath` (plus \
         `aadClientCertPassword`), or run with workload identity (AZURE_FEDERATED_TOKEN_FILE)"
    )]
    NoCredential,
    /// The chosen credential lacks a field it needs.
    #[error("{mode} authentication needs `{field}` in azure.json")]
    MissingField {
        /// The credential chosen: `client secret` or `client certificate`.
        mode: &'static str,
        /// The missing `azure.json` field.
        field: &'static str,
    },
    /// Workload identity lacks a tenant or client id.
    #[error("workload identity needs a {what}: set {env_var} or `{field}` in azure.json")]
    WorkloadIdentityIncomplete {
        /// `tenant id` or `client id`.
        what: &'static str,
        /// The environment variable that normally provides it.
        env_var: &'static str,
        /// The `azure.json` fallback field.
        field: &'static str,
    },
}

/// The parts of `azure.json` that Azure/kubernetes-kms reads. Empty strings mean "not set".
#[derive(Debug, Clone, Default)]
pub struct AzureJson {
    /// `cloud`: the Azure cloud name; empty means the public cloud (see
    /// [`crate::azure::cloud::Cloud::parse`]).
    pub cloud: String,
    /// `tenantId`: the Entra tenant of the service principal.
    pub tenant_id: String,
    /// `aadClientId`: the service principal's application (client) id; `msi` on AKS clusters
    /// that use a managed identity.
    pub aad_client_id: String,
    /// `aadClientSecret`: the service principal's client secret.
    pub aad_client_secret: SecretString,
    /// `useManagedIdentityExtension`: authenticate with the node's managed identity.
    pub use_managed_identity_extension: bool,
    /// `userAssignedIdentityID`: client id of the user-assigned managed identity to use
    /// (empty: the system-assigned identity).
    pub user_assigned_identity_id: String,
    /// `aadClientCertPath`: path of a PKCS#12 (PFX) file with the service principal's
    /// certificate and RSA private key.
    pub aad_client_cert_path: String,
    /// `aadClientCertPassword`: the PFX password.
    pub aad_client_cert_password: SecretString,
}

impl AzureJson {
    /// Parses `azure.json` content. Errors name the content `azure.json`.
    #[cfg(test)]
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::parse(bytes, "azure.json")
    }

    /// Reads and parses the file at `path`. Errors name the path.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let bytes = crate::file::read_at_most(file, MAX_FILE_SIZE)
            .map_err(read_error)?
            .ok_or_else(|| ConfigError::TooLarge {
                path: path.to_owned(),
            })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// The content as a tree: JSON, or else YAML, which the Go plugin accepts too (it reads
    /// the file with a YAML parser, and JSON is YAML). YAML's own errors may quote the
    /// content, so only their position is kept.
    fn tree(bytes: &[u8], origin: &str) -> Result<Value, ConfigError> {
        let json_error = match serde_json::from_slice(bytes) {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let yaml_error = match serde_yaml_ng::from_slice::<Value>(bytes) {
            // An empty or comment-only file is no configuration at all.
            Ok(Value::Null) => None,
            Ok(value) => return Ok(value),
            Err(e) => e.location(),
        };
        let reason = match yaml_error {
            Some(at) => format!(
                "{json_error}; as YAML: line {} column {}",
                at.line(),
                at.column()
            ),
            None => json_error.to_string(),
        };
        Err(ConfigError::NotJson {
            origin: origin.to_owned(),
            reason,
        })
    }

    fn parse(bytes: &[u8], origin: &str) -> Result<Self, ConfigError> {
        // Files written on Windows may start with a UTF-8 byte order mark.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // Parse into a tree first: serde's typed errors quote the offending value ("invalid
        // type: integer `1234`..."), which could be a secret. Syntax errors only give a
        // position.
        let value = Self::tree(bytes, origin)?;
        let Value::Object(mut fields) = value else {
            return Err(ConfigError::NotObject {
                origin: origin.to_owned(),
                found: json_type(&value),
            });
        };
        let mut take = |field: &'static str| take_string(&mut fields, field, origin);
        let cloud = take("cloud")?;
        let tenant_id = take("tenantId")?;
        let aad_client_id = take("aadClientId")?;
        let aad_client_secret = SecretString::from(take("aadClientSecret")?);
        let user_assigned_identity_id = take("userAssignedIdentityID")?;
        let aad_client_cert_path = take("aadClientCertPath")?;
        let aad_client_cert_password = SecretString::from(take("aadClientCertPassword")?);
        let use_managed_identity_extension = match fields.remove("useManagedIdentityExtension") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(ConfigError::WrongType {
                    origin: origin.to_owned(),
                    field: "useManagedIdentityExtension",
                    expected: "a boolean",
                    found: json_type(&other),
                });
            }
        };
        Ok(Self {
            cloud,
            tenant_id,
            aad_client_id,
            aad_client_secret,
            use_managed_identity_extension,
            user_assigned_identity_id,
            aad_client_cert_path,
            aad_client_cert_password,
        })
    }

    /// Chooses the credential, in this order:
    ///
    /// 1. workload identity, when `workload` is given (the caller found
    ///    `AZURE_FEDERATED_TOKEN_FILE`); its tenant and client ids fall back to `tenantId`
    ///    and `aadClientId`;
    /// 2. managed identity, when `useManagedIdentityExtension` is true or `aadClientId` is
    ///    `msi` (as AKS writes it): user-assigned when `userAssignedIdentityID` is set, else
    ///    system-assigned;
    /// 3. client secret, when `aadClientSecret` is set (needs `tenantId` and `aadClientId`);
    /// 4. client certificate, when `aadClientCertPath` is set (needs `tenantId` and
    ///    `aadClientId`; `aadClientCertPassword` is optional);
    /// 5. otherwise [`ConfigError::NoCredential`].
    pub fn credential_source(
        &self,
        workload: Option<WorkloadIdentityEnv>,
    ) -> Result<CredentialSource, ConfigError> {
        if let Some(env) = workload {
            return self.workload_identity(env);
        }
        if self.use_managed_identity_extension
            || self.aad_client_id.eq_ignore_ascii_case(MSI_CLIENT_ID)
        {
            return Ok(CredentialSource::ManagedIdentity {
                user_assigned_client_id: non_empty(&self.user_assigned_identity_id),
            });
        }
        if !self.aad_client_secret.is_empty() {
            let (tenant_id, client_id) = self.service_principal("client secret")?;
            return Ok(CredentialSource::ClientSecret {
                tenant_id,
                client_id,
                secret: self.aad_client_secret.clone(),
            });
        }
        if !self.aad_client_cert_path.is_empty() {
            let (tenant_id, client_id) = self.service_principal("client certificate")?;
            let password = (!self.aad_client_cert_password.is_empty())
                .then(|| self.aad_client_cert_password.clone());
            return Ok(CredentialSource::ClientCertificate {
                tenant_id,
                client_id,
                pfx_path: PathBuf::from(&self.aad_client_cert_path),
                password,
            });
        }
        Err(ConfigError::NoCredential)
    }

    fn service_principal(&self, mode: &'static str) -> Result<(String, String), ConfigError> {
        let missing = |field| ConfigError::MissingField { mode, field };
        let tenant_id = non_empty(&self.tenant_id).ok_or_else(|| missing("tenantId"))?;
        let client_id = non_empty(&self.aad_client_id).ok_or_else(|| missing("aadClientId"))?;
        Ok((tenant_id, client_id))
    }

    fn workload_identity(&self, env: WorkloadIdentityEnv) -> Result<CredentialSource, ConfigError> {
        let tenant_id = env
            .tenant_id
            .filter(|t| !t.is_empty())
            .or_else(|| non_empty(&self.tenant_id))
            .ok_or(ConfigError::WorkloadIdentityIncomplete {
                what: "tenant id",
                env_var: WorkloadIdentityEnv::TENANT_ID_VAR,
                field: "tenantId",
            })?;
        let client_id = env
            .client_id
            .filter(|c| !c.is_empty())
            .or_else(|| {
                non_empty(&self.aad_client_id).filter(|c| !c.eq_ignore_ascii_case(MSI_CLIENT_ID))
            })
            .ok_or(ConfigError::WorkloadIdentityIncomplete {
                what: "client id",
                env_var: WorkloadIdentityEnv::CLIENT_ID_VAR,
                field: "aadClientId",
            })?;
        Ok(CredentialSource::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file: env.token_file,
        })
    }
}

/// Removes `field` from the object and returns it as a string (`""` if absent or `null`).
fn take_string(
    fields: &mut Map<String, Value>,
    field: &'static str,
    origin: &str,
) -> Result<String, ConfigError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ConfigError::WrongType {
            origin: origin.to_owned(),
            field,
            expected: "a string",
            found: json_type(&other),
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Workload identity settings, as the Azure Workload Identity webhook injects them into a
/// pod's environment. The caller reads the environment; this module never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentityEnv {
    /// `AZURE_CLIENT_ID`: the application (client) id with the federated credential.
    pub client_id: Option<String>,
    /// `AZURE_TENANT_ID`: its tenant.
    pub tenant_id: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the projected service-account token.
    pub token_file: PathBuf,
}

impl WorkloadIdentityEnv {
    /// The variable naming the projected service-account token file.
    #[cfg(test)]
    pub const TOKEN_FILE_VAR: &'static str = "AZURE_FEDERATED_TOKEN_FILE";
    /// The variable holding the client id.
    pub const CLIENT_ID_VAR: &'static str = "AZURE_CLIENT_ID";
    /// The variable holding the tenant id.
    pub const TENANT_ID_VAR: &'static str = "AZURE_TENANT_ID";

    /// Builds the settings from an environment lookup (for example
    /// `|name| std::env::var(name).ok()`). `None` when `AZURE_FEDERATED_TOKEN_FILE` is unset
    /// or empty, i.e. workload identity is not in use. Empty ids count as unset.
    #[cfg(test)]
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let token_file = lookup(Self::TOKEN_FILE_VAR).filter(|f| !f.is_empty())?;
        Some(Self {
            client_id: lookup(Self::CLIENT_ID_VAR).filter(|v| !v.is_empty()),
            tenant_id: lookup(Self::TENANT_ID_VAR).filter(|v| !v.is_empty()),
            token_file: PathBuf::from(token_file),
        })
    }
}

/// How to authenticate to Microsoft Entra. `Debug` never prints secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A service principal with a client secret.
    ClientSecret {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        secret: SecretString,
    },
    /// A service principal with a certificate: a PKCS#12 file holding an RSA key and its
    /// certificate.
    ClientCertificate {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The PFX file.
        pfx_path: PathBuf,
        /// Its password (`None`: no password).
        password: Option<SecretString>,
    },
    /// The managed identity of the node (IMDS) or App Service environment.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` for the system-assigned identity.
        user_assigned_client_id: Option<String>,
    },
    /// Kubernetes workload identity: a projected service-account token exchanged through a
    /// federated credential.
    WorkloadIdentity {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The projected service-account token file.
        token_file: PathBuf,
    },
}

impl CredentialSource {
    /// A short stable name for metrics and logs: `client_secret`, `client_certificate`,
    /// `managed_identity` or `workload_identity`.
    #[cfg(test)]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client_secret",
            Self::ClientCertificate { .. } => "client_certificate",
            Self::ManagedIdentity { .. } => "managed_identity",
            Self::WorkloadIdentity { .. } => "workload_identity",
        }
    }

    /// A one-line description for logs, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => format!("client secret for app {client_id} in tenant {tenant_id}"),
            Self::ClientCertificate {
                tenant_id,
                client_id,
                pfx_path,
                ..
            } => format!(
                "client certificate {} for app {client_id} in tenant {tenant_id}",
                pfx_path.display()
            ),
            Self::ManagedIdentity {
                user_assigned_client_id: Some(id),
            } => format!("user-assigned managed identity {id}"),
            Self::ManagedIdentity {
                user_assigned_client_id: None,
            } => "system-assigned managed identity".to_owned(),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => format!(
                "workload identity for app {client_id} in tenant {tenant_id} (token file {})",
                token_file.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Value~42";
    const PASSWORD: &str = "pfx-Pa55word!";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "0b0d6a52-1111-2222-3333-444455556666";
    const UAMI: &str = "9a8b7c6d-0000-1111-2222-333344445555";

    fn parse(json: &str) -> AzureJson {
        AzureJson::from_slice(json.as_bytes()).unwrap()
    }

    fn source(json: &str) -> Result<CredentialSource, ConfigError> {
        parse(json).credential_source(None)
    }

    fn workload(client: Option<&str>, tenant: Option<&str>) -> WorkloadIdentityEnv {
        WorkloadIdentityEnv {
            client_id: client.map(str::to_owned),
            tenant_id: tenant.map(str::to_owned),
            token_file: PathBuf::from("/var/run/secrets/azure/tokens/azure-identity-token"),
        }
    }

    /// A realistic AKS-engine style file with many fields the plugin ignores.
    fn full_file() -> String {
        format!(
            r#"{{
                "cloud": "AzurePublicCloud",
                "tenantId": "{TENANT}",
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "aadClientId": "{APP}",
                "aadClientSecret": "{SECRET}",
                "resourceGroup": "rg",
                "location": "westeurope",
                "vmType": "vmss",
                "subnetName": "aks-subnet",
                "securityGroupName": "aks-nsg",
                "vnetName": "aks-vnet",
                "routeTableName": "aks-rt",
                "primaryAvailabilitySetName": "",
                "cloudProviderBackoff": true,
                "cloudProviderBackoffRetries": 6,
                "cloudProviderBackoffExponent": 1.5,
                "cloudProviderRateLimitQPS": 10,
                "useInstanceMetadata": true,
                "loadBalancerSku": "Standard",
                "maximumLoadBalancerRuleCount": 250,
                "excludeMasterFromStandardLB": true,
                "providerVaultName": "",
                "tags": {{"a": "b"}},
                "zones": ["1", "2"],
                "useManagedIdentityExtension": false,
                "userAssignedIdentityID": "",
                "aadClientCertPath": "",
                "aadClientCertPassword": ""
            }}"#
        )
    }

    #[test]
    fn parses_known_fields_and_ignores_the_rest() {
        let cfg = parse(&full_file());
        assert_eq!(cfg.cloud, "AzurePublicCloud");
        assert_eq!(cfg.tenant_id, TENANT);
        assert_eq!(cfg.aad_client_id, APP);
        assert_eq!(cfg.aad_client_secret.expose_secret(), SECRET);
        assert!(!cfg.use_managed_identity_extension);
        assert_eq!(cfg.user_assigned_identity_id, "");
        assert_eq!(cfg.aad_client_cert_path, "");
        assert_eq!(cfg.aad_client_cert_password.expose_secret(), "");
    }

    #[test]
    fn missing_and_null_fields_are_empty() {
        let cfg = parse("{}");
        assert_eq!(cfg.cloud, "");
        assert!(!cfg.use_managed_identity_extension);
        let cfg =
            parse(r#"{"cloud": null, "tenantId": null, "useManagedIdentityExtension": null}"#);
        assert_eq!(cfg.cloud, "");
        assert_eq!(cfg.tenant_id, "");
        assert!(!cfg.use_managed_identity_extension);
    }

    #[test]
    fn field_names_are_case_sensitive() {
        // Go's yaml.v3 (which Azure/kubernetes-kms uses) matches tags exactly.
        let cfg = parse(r#"{"TenantID": "x", "aadclientid": "y"}"#);
        assert_eq!(cfg.tenant_id, "");
        assert_eq!(cfg.aad_client_id, "");
    }

    #[test]
    fn yaml_is_read_as_the_go_plugin_reads_it() {
        let yaml = format!(
            "# written by a provisioning tool\ncloud: AzureUSGovernmentCloud\ntenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\naadClientId: \"00000000-0000-0000-0000-00000000c0de\"\naadClientSecret: '{SECRET}'\nuseManagedIdentityExtension: false\nsubscriptionId: ignored\n"
        );
        let cfg = AzureJson::from_slice(yaml.as_bytes()).unwrap();
        assert_eq!(cfg.cloud, "AzureUSGovernmentCloud");
        assert_eq!(cfg.tenant_id, "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(cfg.aad_client_id, "00000000-0000-0000-0000-00000000c0de");
        assert_eq!(cfg.aad_client_secret.expose_secret(), SECRET);
        assert!(!cfg.use_managed_identity_extension);
        // A YAML number where a string belongs is refused without echoing it.
        let err = AzureJson::from_slice(b"aadClientSecret: 123456\n").unwrap_err();
        assert!(matches!(err, ConfigError::WrongType { .. }), "{err:?}");
        assert!(!err.to_string().contains("123456"), "{err}");
        // Broken YAML: positions only.
        let err =
            AzureJson::from_slice(format!("aadClientSecret: [{SECRET}\n").as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("as YAML: line"), "{msg}");
        assert!(!msg.contains(SECRET), "{msg}");
    }

    #[test]
    fn accepts_a_byte_order_mark() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(br#"{"cloud": "AzureChinaCloud"}"#);
        assert_eq!(
            AzureJson::from_slice(&bytes).unwrap().cloud,
            "AzureChinaCloud"
        );
    }

    #[test]
    fn bad_json_names_the_origin_and_position_only() {
        let err = AzureJson::from_slice(format!(r#"{{"aadClientSecret": "{SECRET}""#).as_bytes())
            .unwrap_err();
        assert!(matches!(err, ConfigError::NotJson { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("azure.json is not valid JSON"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(!msg.contains(SECRET), "{msg}");
        assert!(!format!("{err:?}").contains(SECRET));

        let err = AzureJson::from_slice(b"").unwrap_err();
        assert!(matches!(err, ConfigError::NotJson { .. }), "{err:?}");
    }

    #[test]
    fn top_level_must_be_an_object() {
        for (json, found) in [("[]", "an array"), ("\"x\"", "a string"), ("null", "null")] {
            let err = AzureJson::from_slice(json.as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("azure.json must hold a JSON object, found {found}")
            );
        }
    }

    #[test]
    fn wrong_types_name_the_field_but_never_the_value() {
        let cases = [
            (
                r#"{"aadClientSecret": 987654321}"#,
                "aadClientSecret",
                "a string",
                "a number",
            ),
            (
                r#"{"aadClientCertPassword": ["987654321"]}"#,
                "aadClientCertPassword",
                "a string",
                "an array",
            ),
            (
                r#"{"tenantId": {"id": 987654321}}"#,
                "tenantId",
                "a string",
                "an object",
            ),
            (r#"{"cloud": true}"#, "cloud", "a string", "a boolean"),
            (
                r#"{"useManagedIdentityExtension": "987654321"}"#,
                "useManagedIdentityExtension",
                "a boolean",
                "a string",
            ),
            (
                r#"{"useManagedIdentityExtension": 1}"#,
                "useManagedIdentityExtension",
                "a boolean",
                "a number",
            ),
            (
                r#"{"userAssignedIdentityID": 1}"#,
                "userAssignedIdentityID",
                "a string",
                "a number",
            ),
            (
                r#"{"aadClientCertPath": false}"#,
                "aadClientCertPath",
                "a string",
                "a boolean",
            ),
            (
                r#"{"aadClientId": 3}"#,
                "aadClientId",
                "a string",
                "a number",
            ),
        ];
        for (json, field, expected, found) in cases {
            let err = AzureJson::from_slice(json.as_bytes()).unwrap_err();
            let msg = err.to_string();
            assert_eq!(
                msg,
                format!("azure.json: field `{field}` must be {expected}, found {found}"),
                "{json}"
            );
            assert!(!msg.contains("987654321"));
            assert!(!format!("{err:?}").contains("987654321"));
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut cfg = parse(&full_file());
        cfg.aad_client_cert_password = SecretString::from(PASSWORD);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(!dbg.contains(PASSWORD), "{dbg}");
        assert!(dbg.contains("aad_client_secret: [redacted]"), "{dbg}");
        assert!(
            dbg.contains("aad_client_cert_password: [redacted]"),
            "{dbg}"
        );
        assert!(dbg.contains(TENANT) && dbg.contains(APP), "{dbg}");
        // Unset secrets show as empty, so a missing secret is visible when debugging.
        let dbg = format!("{:?}", parse("{}"));
        assert!(dbg.contains(r#"aad_client_secret: """#), "{dbg}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("azure.json");
        std::fs::write(&path, full_file()).unwrap();
        assert_eq!(AzureJson::load(&path).unwrap().tenant_id, TENANT);

        let missing = dir.path().join("missing.json");
        let err = AzureJson::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");

        // An unquoted value is not JSON but is YAML, which the Go plugin reads too.
        std::fs::write(&path, format!(r#"{{"aadClientSecret": {SECRET}}}"#)).unwrap();
        let cfg = AzureJson::load(&path).unwrap();
        assert_eq!(cfg.aad_client_secret.expose_secret(), SECRET);
        std::fs::write(&path, format!(r#"{{"aadClientSecret": "{SECRET}""#)).unwrap();
        let err = AzureJson::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{} is not valid JSON", path.display())),
            "{msg}"
        );
        assert!(!msg.contains(SECRET), "{msg}");

        std::fs::write(&path, r#"{"useManagedIdentityExtension": "yes"}"#).unwrap();
        let msg = AzureJson::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("`useManagedIdentityExtension` must be a boolean"),
            "{msg}"
        );

        // A directory is unreadable as a file.
        let err = AzureJson::load(dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[test]
    fn load_refuses_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("azure.json");
        let mut big = String::from("{\"pad\": \"");
        big.push_str(&"x".repeat(usize::try_from(MAX_FILE_SIZE).unwrap()));
        big.push_str("\"}");
        std::fs::write(&path, big).unwrap();
        let err = AzureJson::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn workload_identity_wins_over_everything() {
        let cfg = parse(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}", "aadClientSecret": "{SECRET}",
                "useManagedIdentityExtension": true, "aadClientCertPath": "/x.pfx"}}"#
        ));
        let src = cfg
            .credential_source(Some(workload(Some("wi-client"), Some("wi-tenant"))))
            .unwrap();
        assert_eq!(
            src,
            CredentialSource::WorkloadIdentity {
                tenant_id: "wi-tenant".into(),
                client_id: "wi-client".into(),
                token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
            }
        );
        assert_eq!(src.kind(), "workload_identity");
        assert_eq!(
            src.describe(),
            "workload identity for app wi-client in tenant wi-tenant \
             (token file /var/run/secrets/azure/tokens/azure-identity-token)"
        );
    }

    #[test]
    fn workload_identity_falls_back_to_azure_json_ids() {
        let cfg = parse(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}"}}"#
        ));
        let src = cfg
            .credential_source(Some(workload(None, Some(""))))
            .unwrap();
        let CredentialSource::WorkloadIdentity {
            tenant_id,
            client_id,
            ..
        } = src
        else {
            panic!("expected workload identity, got {src:?}");
        };
        assert_eq!((tenant_id.as_str(), client_id.as_str()), (TENANT, APP));
    }

    #[test]
    fn workload_identity_without_ids_is_a_clear_error() {
        let err = parse("{}")
            .credential_source(Some(workload(Some("c"), None)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload identity needs a tenant id: set AZURE_TENANT_ID or `tenantId` in azure.json"
        );
        // "msi" is not an application id.
        let err = parse(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "msi"}}"#
        ))
        .credential_source(Some(workload(None, None)))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload identity needs a client id: set AZURE_CLIENT_ID or `aadClientId` in azure.json"
        );
    }

    #[test]
    fn workload_identity_env_from_vars() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(WorkloadIdentityEnv::from_vars(vars(&[])), None);
        assert_eq!(
            WorkloadIdentityEnv::from_vars(vars(&[
                ("AZURE_FEDERATED_TOKEN_FILE", ""),
                ("AZURE_CLIENT_ID", "c")
            ])),
            None
        );
        assert_eq!(
            WorkloadIdentityEnv::from_vars(vars(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_TENANT_ID", ""),
            ])),
            Some(WorkloadIdentityEnv {
                client_id: Some("c".into()),
                tenant_id: None,
                token_file: "/t".into(),
            })
        );
    }

    #[test]
    fn managed_identity_system_and_user_assigned() {
        let src = source(&format!(
            r#"{{"useManagedIdentityExtension": true, "aadClientSecret": "{SECRET}",
                "tenantId": "{TENANT}", "aadClientId": "{APP}"}}"#
        ))
        .unwrap();
        assert_eq!(
            src,
            CredentialSource::ManagedIdentity {
                user_assigned_client_id: None
            }
        );
        assert_eq!(src.describe(), "system-assigned managed identity");
        assert_eq!(src.kind(), "managed_identity");

        let src = source(&format!(
            r#"{{"useManagedIdentityExtension": true, "userAssignedIdentityID": "{UAMI}"}}"#
        ))
        .unwrap();
        assert_eq!(
            src,
            CredentialSource::ManagedIdentity {
                user_assigned_client_id: Some(UAMI.into())
            }
        );
        assert_eq!(
            src.describe(),
            format!("user-assigned managed identity {UAMI}")
        );
    }

    #[test]
    fn aks_msi_client_id_means_managed_identity() {
        // AKS writes aadClientId/aadClientSecret "msi" for managed-identity clusters.
        let aks = format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "msi", "aadClientSecret": "msi",
                "useManagedIdentityExtension": true, "userAssignedIdentityID": "{UAMI}"}}"#
        );
        assert_eq!(
            source(&aks).unwrap(),
            CredentialSource::ManagedIdentity {
                user_assigned_client_id: Some(UAMI.into())
            }
        );
        // Even without the flag, "msi" is never sent to Entra as an application id.
        let src =
            source(r#"{"tenantId": "t", "aadClientId": "MSI", "aadClientSecret": "msi"}"#).unwrap();
        assert_eq!(
            src,
            CredentialSource::ManagedIdentity {
                user_assigned_client_id: None
            }
        );
    }

    #[test]
    fn client_secret() {
        let src = source(&full_file()).unwrap();
        assert_eq!(
            src,
            CredentialSource::ClientSecret {
                tenant_id: TENANT.into(),
                client_id: APP.into(),
                secret: SecretString::from(SECRET),
            }
        );
        assert_eq!(src.kind(), "client_secret");
        assert_eq!(
            src.describe(),
            format!("client secret for app {APP} in tenant {TENANT}")
        );
        let dbg = format!("{src:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
        assert!(!src.describe().contains(SECRET));
    }

    #[test]
    fn client_secret_wins_over_certificate() {
        let src = source(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}", "aadClientSecret": "{SECRET}",
                "aadClientCertPath": "/etc/kubernetes/sp.pfx", "aadClientCertPassword": "{PASSWORD}"}}"#
        ))
        .unwrap();
        assert_eq!(src.kind(), "client_secret");
    }

    #[test]
    fn client_secret_needs_tenant_and_client_id() {
        let err = source(&format!(
            r#"{{"aadClientId": "{APP}", "aadClientSecret": "{SECRET}"}}"#
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client secret authentication needs `tenantId` in azure.json"
        );
        let err = source(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientSecret": "{SECRET}"}}"#
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client secret authentication needs `aadClientId` in azure.json"
        );
        assert!(!format!("{err:?}").contains(SECRET));
    }

    #[test]
    fn client_certificate_with_and_without_password() {
        let src = source(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}",
                "aadClientCertPath": "/etc/kubernetes/sp.pfx", "aadClientCertPassword": "{PASSWORD}"}}"#
        ))
        .unwrap();
        assert_eq!(
            src,
            CredentialSource::ClientCertificate {
                tenant_id: TENANT.into(),
                client_id: APP.into(),
                pfx_path: "/etc/kubernetes/sp.pfx".into(),
                password: Some(SecretString::from(PASSWORD)),
            }
        );
        assert_eq!(src.kind(), "client_certificate");
        assert_eq!(
            src.describe(),
            format!("client certificate /etc/kubernetes/sp.pfx for app {APP} in tenant {TENANT}")
        );
        let dbg = format!("{src:?}");
        assert!(!dbg.contains(PASSWORD), "{dbg}");
        assert!(dbg.contains("password: Some([redacted])"), "{dbg}");

        let src = source(&format!(
            r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}", "aadClientCertPath": "/sp.pfx"}}"#
        ))
        .unwrap();
        let CredentialSource::ClientCertificate { password, .. } = &src else {
            panic!("expected a certificate, got {src:?}");
        };
        assert_eq!(password, &None);
        assert!(format!("{src:?}").contains("password: None"));
    }

    #[test]
    fn client_certificate_needs_tenant_and_client_id() {
        let err = source(r#"{"aadClientId": "a", "aadClientCertPath": "/sp.pfx"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "client certificate authentication needs `tenantId` in azure.json"
        );
        let err = source(r#"{"tenantId": "t", "aadClientCertPath": "/sp.pfx"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "client certificate authentication needs `aadClientId` in azure.json"
        );
    }

    #[test]
    fn nothing_configured_says_which_fields_to_set() {
        for json in [
            "{}".to_owned(),
            format!(
                r#"{{"tenantId": "{TENANT}", "aadClientId": "{APP}", "aadClientCertPassword": "{PASSWORD}"}}"#
            ),
        ] {
            let err = source(&json).unwrap_err();
            assert!(matches!(err, ConfigError::NoCredential), "{err:?}");
            let msg = err.to_string();
            for field in [
                "useManagedIdentityExtension",
                "userAssignedIdentityID",
                "aadClientSecret",
                "aadClientCertPath",
                "AZURE_FEDERATED_TOKEN_FILE",
            ] {
                assert!(msg.contains(field), "{field} missing from: {msg}");
            }
        }
    }

    #[test]
    fn managed_identity_debug() {
        let src = CredentialSource::ManagedIdentity {
            user_assigned_client_id: Some(UAMI.into()),
        };
        assert_eq!(
            format!("{src:?}"),
            format!("ManagedIdentity {{ user_assigned_client_id: Some(\"{UAMI}\") }}")
        );
    }
}
