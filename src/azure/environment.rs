//! Azure Stack Hub and other custom clouds: the go-autorest environment file the Go plugins
//! read when azure.json says `cloud: AzureStackCloud` (the path in
//! `AZURE_ENVIRONMENT_FILEPATH`).
//!
//! The file is JSON written by the installation (`name`, `activeDirectoryEndpoint`,
//! `keyVaultDNSSuffix`, `managedHSMDNSSuffix`, `resourceIdentifiers`, … and many endpoints
//! of other services). What the KMS plugin needs from it is where Entra is and the vaults'
//! DNS suffix; the token's resource comes from Key Vault's challenge, as for every cloud.
//!
//! Pure: the caller reads the file ([`CustomCloud::load`] does, bounded).

use std::path::Path;

use serde_json::Value;

use crate::azure::cloud::{Cloud, CloudError, validate_vault_name};

/// The variable naming the environment file, as go-autorest names it.
pub const FILE_VAR: &str = "AZURE_ENVIRONMENT_FILEPATH";

/// Largest environment file accepted (real ones are a few KiB).
const MAX_FILE_SIZE: u64 = 256 * 1024;

/// A cloud described by an environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCloud {
    /// `name`, for logs.
    pub name: String,
    /// `activeDirectoryEndpoint`: the Entra authority, e.g. `https://login.contoso.local/`.
    pub authority_host: String,
    /// `keyVaultDNSSuffix`, e.g. `vault.contoso.local`.
    pub key_vault_dns_suffix: String,
    /// `managedHSMDNSSuffix`, when the installation has Managed HSM.
    pub managed_hsm_dns_suffix: Option<String>,
}

/// Why an environment file is refused. No variant quotes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// `cloud: AzureStackCloud` without the variable.
    #[error(
        "azure.json names AzureStackCloud: set {FILE_VAR} to the Azure Stack Hub environment \
         file (JSON with activeDirectoryEndpoint and keyVaultDNSSuffix)"
    )]
    NoFile,
    /// The file cannot be read.
    #[error("cannot read the cloud environment file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is too large to be one.
    #[error("the cloud environment file {path} is larger than {MAX_FILE_SIZE} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not a JSON object.
    #[error("the cloud environment file {path} is not a JSON object: {reason}")]
    NotJson {
        /// The file.
        path: String,
        /// Where the parser stopped.
        reason: String,
    },
    /// A field it needs is missing or not a usable value.
    #[error("the cloud environment file {path}: {field} {problem}")]
    Field {
        /// The file.
        path: String,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl CustomCloud {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, EnvironmentError> {
        let name = path.display().to_string();
        let read = |source| EnvironmentError::Read {
            path: name.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let bytes = crate::file::read_at_most(file, MAX_FILE_SIZE)
            .map_err(read)?
            .ok_or_else(|| EnvironmentError::TooLarge { path: name.clone() })?;
        Self::parse(&bytes, &name)
    }

    /// Parses environment-file content; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, EnvironmentError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EnvironmentError::NotJson {
                path: origin.to_owned(),
                reason: e.to_string(),
            })?;
        let Value::Object(fields) = value else {
            return Err(EnvironmentError::NotJson {
                path: origin.to_owned(),
                reason: "the top level is not an object".into(),
            });
        };
        let field = |name: &'static str, problem| EnvironmentError::Field {
            path: origin.to_owned(),
            field: name,
            problem,
        };
        let text = |name: &'static str| -> Option<&str> {
            fields
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let authority = text("activeDirectoryEndpoint")
            .ok_or_else(|| field("activeDirectoryEndpoint", "is missing"))?;
        let authority_host = match url::Url::parse(authority) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {
                let mut s = u.to_string();
                if !s.ends_with('/') {
                    s.push('/');
                }
                s
            }
            _ => return Err(field("activeDirectoryEndpoint", "is not an https URL")),
        };
        let suffix = |name: &'static str| -> Result<Option<String>, EnvironmentError> {
            match text(name) {
                None => Ok(None),
                Some(s) => {
                    let s = s.trim_start_matches('.').to_ascii_lowercase();
                    let valid = !s.is_empty()
                        && s.split('.').all(|label| {
                            !label.is_empty()
                                && label.len() <= 63
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if valid {
                        Ok(Some(s))
                    } else {
                        Err(field(name, "is not a DNS suffix"))
                    }
                }
            }
        };
        let key_vault_dns_suffix =
            suffix("keyVaultDNSSuffix")?.ok_or_else(|| field("keyVaultDNSSuffix", "is missing"))?;
        Ok(Self {
            name: text("name").unwrap_or("AzureStackCloud").to_owned(),
            authority_host,
            key_vault_dns_suffix,
            managed_hsm_dns_suffix: suffix("managedHSMDNSSuffix")?,
        })
    }

    /// `https://<name>.<suffix>` for a vault (or a Managed HSM) of this cloud.
    pub fn vault_url(&self, vault_name: &str, managed_hsm: bool) -> Result<String, CloudError> {
        validate_vault_name(vault_name, managed_hsm)?;
        let suffix = if managed_hsm {
            self.managed_hsm_dns_suffix
                .as_deref()
                .ok_or(CloudError::Unsupported {
                    name: self.name.clone(),
                    reason: "its environment file has no managedHSMDNSSuffix",
                })?
        } else {
            &self.key_vault_dns_suffix
        };
        Ok(format!("https://{vault_name}.{suffix}"))
    }
}

/// The cloud azure.json names (`cloud`): one akv-bridge knows, or Azure Stack Hub described
/// by its environment file, as the Go plugin reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureJsonCloud {
    /// Public, US Government or China.
    Known(Cloud),
    /// `AzureStackCloud`, from the file `AZURE_ENVIRONMENT_FILEPATH` names.
    Custom(CustomCloud),
}

impl AzureJsonCloud {
    /// The cloud `name` (azure.json's `cloud`); `env_file` is `AZURE_ENVIRONMENT_FILEPATH`,
    /// read only for `AzureStackCloud`. Errors say what to fix.
    pub fn resolve(name: &str, env_file: Option<&Path>) -> Result<Self, String> {
        if !name.trim().eq_ignore_ascii_case("AzureStackCloud") {
            return Cloud::parse(name)
                .map(Self::Known)
                .map_err(|e| e.to_string());
        }
        let path = env_file.ok_or_else(|| EnvironmentError::NoFile.to_string())?;
        CustomCloud::load(path)
            .map(Self::Custom)
            .map_err(|e| e.to_string())
    }

    /// `https://<name>.<suffix>` for a vault (or a Managed HSM) of this cloud.
    pub fn vault_url(&self, vault_name: &str, managed_hsm: bool) -> Result<String, CloudError> {
        match self {
            Self::Known(cloud) => cloud.vault_url(vault_name, managed_hsm),
            Self::Custom(custom) => custom.vault_url(vault_name, managed_hsm),
        }
    }

    /// The Entra authority.
    pub fn authority_host(&self) -> &str {
        match self {
            Self::Known(cloud) => cloud.authority_host(),
            Self::Custom(custom) => &custom.authority_host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as an Azure Stack Hub installation writes it (trimmed of other services).
    const STACK: &str = r#"{
        "name": "AzureStackCloud",
        "managementPortalURL": "https://portal.local.azurestack.external/",
        "resourceManagerEndpoint": "https://management.local.azurestack.external/",
        "activeDirectoryEndpoint": "https://login.microsoftonline.com/",
        "keyVaultDNSSuffix": "vault.local.azurestack.external",
        "storageEndpointSuffix": "local.azurestack.external",
        "resourceIdentifiers": {"keyVault": "https://vault.local.azurestack.external"}
    }"#;

    #[test]
    fn an_azure_stack_file_gives_the_authority_and_the_vault_suffix() {
        let cloud = CustomCloud::parse(STACK.as_bytes(), "env.json").unwrap();
        assert_eq!(cloud.authority_host, "https://login.microsoftonline.com/");
        assert_eq!(
            cloud.vault_url("kv-prod", false).unwrap(),
            "https://kv-prod.vault.local.azurestack.external"
        );
        assert!(cloud.vault_url("kv-prod", true).is_err());
        assert!(cloud.vault_url("x", false).is_err());
    }

    #[test]
    fn unusable_files_are_refused_naming_the_field() {
        for (body, field) in [
            (
                r#"{"keyVaultDNSSuffix": "vault.x"}"#,
                "activeDirectoryEndpoint",
            ),
            (
                r#"{"activeDirectoryEndpoint": "http://login.x/", "keyVaultDNSSuffix": "vault.x"}"#,
                "activeDirectoryEndpoint",
            ),
            (
                r#"{"activeDirectoryEndpoint": "https://login.x/"}"#,
                "keyVaultDNSSuffix",
            ),
            (
                r#"{"activeDirectoryEndpoint": "https://login.x/", "keyVaultDNSSuffix": "vault.x/evil"}"#,
                "keyVaultDNSSuffix",
            ),
        ] {
            let err = CustomCloud::parse(body.as_bytes(), "env.json").unwrap_err();
            assert!(
                matches!(err, EnvironmentError::Field { field: f, .. } if f == field),
                "{body}: {err}"
            );
        }
        assert!(matches!(
            CustomCloud::parse(b"[]", "env.json"),
            Err(EnvironmentError::NotJson { .. })
        ));
    }
}
