//! Azure cloud environments: the Entra authority host and the Key Vault / Managed HSM DNS
//! suffixes of each sovereign cloud, and vault URLs built from a vault name.
//!
//! Pure: no I/O. The cloud names accepted are those Azure/kubernetes-kms accepts in the
//! `cloud` field of `azure.json` (go-autorest's `EnvironmentFromName`, case-insensitive).

use std::fmt;
use std::str::FromStr;

/// Errors from parsing a cloud name or building a vault URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The cloud name is not one of the known Azure clouds.
    #[error(
        "unknown Azure cloud {0:?}: expected AzurePublicCloud, AzureUSGovernmentCloud or \
         AzureChinaCloud (case-insensitive; empty means AzurePublicCloud)"
    )]
    Unknown(String),
    /// The cloud is a real Azure environment that akv-bridge does not support.
    #[error("Azure cloud {name:?} is not supported: {reason}")]
    Unsupported {
        /// The cloud name as given.
        name: String,
        /// Why it is not supported.
        reason: &'static str,
    },
    /// The vault name breaks Key Vault's naming rules.
    #[error(
        "invalid {kind} name {name:?}: {reason} (3-24 characters of letters, digits and '-', \
         starting with a letter, not ending with '-', no \"--\")"
    )]
    InvalidVaultName {
        /// `Key Vault` or `Managed HSM`.
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// An Azure cloud environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
// The variants are the clouds' own names (`AzurePublicCloud`, ...), as azure.json spells them.
#[allow(clippy::enum_variant_names)]
pub enum Cloud {
    /// The public Azure cloud (`AzurePublicCloud`, also `AzureCloud`).
    #[default]
    AzurePublicCloud,
    /// Azure Government (`AzureUSGovernmentCloud`, also `AzureUSGovernment`).
    AzureUSGovernmentCloud,
    /// Azure operated by 21Vianet in China (`AzureChinaCloud`).
    AzureChinaCloud,
}

impl Cloud {
    /// Every supported cloud.
    pub const ALL: [Self; 3] = [
        Self::AzurePublicCloud,
        Self::AzureUSGovernmentCloud,
        Self::AzureChinaCloud,
    ];

    /// Parses the `cloud` value of `azure.json`, case-insensitively, as Azure/kubernetes-kms
    /// does: empty (or blank) means the public cloud. `AzureStackCloud` and the closed
    /// `AzureGermanCloud` are refused with [`CloudError::Unsupported`]; anything else with
    /// [`CloudError::Unknown`].
    pub fn parse(name: &str) -> Result<Self, CloudError> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Ok(Self::AzurePublicCloud);
        }
        let is = |candidate: &str| trimmed.eq_ignore_ascii_case(candidate);
        if is("AzurePublicCloud") || is("AzureCloud") {
            Ok(Self::AzurePublicCloud)
        } else if is("AzureUSGovernmentCloud") || is("AzureUSGovernment") {
            Ok(Self::AzureUSGovernmentCloud)
        } else if is("AzureChinaCloud") {
            Ok(Self::AzureChinaCloud)
        } else if is("AzureStackCloud") {
            Err(CloudError::Unsupported {
                name: trimmed.to_owned(),
                reason: "Azure Stack Hub has per-installation endpoints; use \
                         AzurePublicCloud, AzureUSGovernmentCloud or AzureChinaCloud",
            })
        } else if is("AzureGermanCloud") {
            Err(CloudError::Unsupported {
                name: trimmed.to_owned(),
                reason: "Microsoft Cloud Deutschland was closed in 2021",
            })
        } else {
            Err(CloudError::Unknown(trimmed.to_owned()))
        }
    }

    /// The canonical name, as written in `azure.json` (`AzurePublicCloud`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::AzurePublicCloud => "AzurePublicCloud",
            Self::AzureUSGovernmentCloud => "AzureUSGovernmentCloud",
            Self::AzureChinaCloud => "AzureChinaCloud",
        }
    }

    /// The Microsoft Entra authority host (no trailing slash).
    pub const fn authority_host(self) -> &'static str {
        match self {
            Self::AzurePublicCloud => "https://login.microsoftonline.com",
            Self::AzureUSGovernmentCloud => "https://login.microsoftonline.us",
            Self::AzureChinaCloud => "https://login.chinacloudapi.cn",
        }
    }

    /// The DNS suffix of Key Vault vaults (`vault.azure.net` in the public cloud).
    pub const fn key_vault_dns_suffix(self) -> &'static str {
        match self {
            Self::AzurePublicCloud => "vault.azure.net",
            Self::AzureUSGovernmentCloud => "vault.usgovcloudapi.net",
            Self::AzureChinaCloud => "vault.azure.cn",
        }
    }

    /// The DNS suffix of Managed HSMs (`managedhsm.azure.net` in the public cloud).
    pub const fn managed_hsm_dns_suffix(self) -> &'static str {
        match self {
            Self::AzurePublicCloud => "managedhsm.azure.net",
            Self::AzureUSGovernmentCloud => "managedhsm.usgovcloudapi.net",
            Self::AzureChinaCloud => "managedhsm.azure.cn",
        }
    }

    /// The DNS suffix of a vault (`managed_hsm == false`) or a Managed HSM.
    pub const fn dns_suffix(self, managed_hsm: bool) -> &'static str {
        if managed_hsm {
            self.managed_hsm_dns_suffix()
        } else {
            self.key_vault_dns_suffix()
        }
    }

    /// The URL of a vault or Managed HSM: `https://<name>.<suffix>`, without a trailing slash
    /// or path. The name is validated against Key Vault's rules (see [`validate_vault_name`])
    /// and kept as given (host names are case-insensitive).
    pub fn vault_url(&self, vault_name: &str, managed_hsm: bool) -> Result<String, CloudError> {
        validate_vault_name(vault_name, managed_hsm)?;
        Ok(format!(
            "https://{vault_name}.{}",
            self.dns_suffix(managed_hsm)
        ))
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cloud {
    type Err = CloudError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a Key Vault or Managed HSM name: 3 to 24 characters of `[-A-Za-z0-9]`, starting
/// with a letter, not ending with `-`, and without `--`.
pub fn validate_vault_name(name: &str, managed_hsm: bool) -> Result<(), CloudError> {
    let invalid = |reason: &'static str| CloudError::InvalidVaultName {
        kind: if managed_hsm {
            "Managed HSM"
        } else {
            "Key Vault"
        },
        name: name.to_owned(),
        reason,
    };
    if !(3..=24).contains(&name.len()) {
        return Err(invalid("it must be 3 to 24 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(invalid("it may only contain letters, digits and '-'"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(invalid("it must start with a letter"));
    }
    if name.ends_with('-') {
        return Err(invalid("it must not end with '-'"));
    }
    if name.contains("--") {
        return Err(invalid("it must not contain consecutive '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_kms_names_case_insensitively() {
        let cases = [
            ("", Cloud::AzurePublicCloud),
            ("  ", Cloud::AzurePublicCloud),
            ("AzurePublicCloud", Cloud::AzurePublicCloud),
            ("azurepubliccloud", Cloud::AzurePublicCloud),
            ("AZURECLOUD", Cloud::AzurePublicCloud),
            ("AzureUSGovernmentCloud", Cloud::AzureUSGovernmentCloud),
            ("azureusgovernment", Cloud::AzureUSGovernmentCloud),
            ("AzureChinaCloud", Cloud::AzureChinaCloud),
            (" azurechinacloud\n", Cloud::AzureChinaCloud),
        ];
        for (name, expected) in cases {
            assert_eq!(Cloud::parse(name), Ok(expected), "{name:?}");
            assert_eq!(name.parse::<Cloud>(), Ok(expected), "{name:?}");
        }
    }

    #[test]
    fn canonical_names_round_trip() {
        for cloud in Cloud::ALL {
            assert_eq!(Cloud::parse(cloud.name()), Ok(cloud));
            assert_eq!(cloud.to_string(), cloud.name());
        }
        assert_eq!(Cloud::default(), Cloud::AzurePublicCloud);
    }

    #[test]
    fn unknown_cloud_names_the_value() {
        let err = Cloud::parse("AzureMarsCloud").unwrap_err();
        assert_eq!(err, CloudError::Unknown("AzureMarsCloud".into()));
        let msg = err.to_string();
        assert!(msg.contains("\"AzureMarsCloud\""), "{msg}");
        assert!(msg.contains("AzureChinaCloud"), "{msg}");
    }

    #[test]
    fn stack_and_german_clouds_are_unsupported() {
        for name in ["AzureStackCloud", "azurestackcloud", "AzureGermanCloud"] {
            let err = Cloud::parse(name).unwrap_err();
            assert!(
                matches!(err, CloudError::Unsupported { .. }),
                "{name}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("not supported") && msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn endpoints_per_cloud() {
        let public = Cloud::AzurePublicCloud;
        assert_eq!(public.authority_host(), "https://login.microsoftonline.com");
        assert_eq!(public.key_vault_dns_suffix(), "vault.azure.net");
        assert_eq!(public.managed_hsm_dns_suffix(), "managedhsm.azure.net");

        let gov = Cloud::AzureUSGovernmentCloud;
        assert_eq!(gov.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(gov.key_vault_dns_suffix(), "vault.usgovcloudapi.net");
        assert_eq!(gov.managed_hsm_dns_suffix(), "managedhsm.usgovcloudapi.net");

        let china = Cloud::AzureChinaCloud;
        assert_eq!(china.authority_host(), "https://login.chinacloudapi.cn");
        assert_eq!(china.key_vault_dns_suffix(), "vault.azure.cn");
        assert_eq!(china.managed_hsm_dns_suffix(), "managedhsm.azure.cn");
    }

    #[test]
    fn vault_urls() {
        assert_eq!(
            Cloud::AzurePublicCloud.vault_url("kv-prod", false).unwrap(),
            "https://kv-prod.vault.azure.net"
        );
        assert_eq!(
            Cloud::AzurePublicCloud.vault_url("hsm1", true).unwrap(),
            "https://hsm1.managedhsm.azure.net"
        );
        assert_eq!(
            Cloud::AzureUSGovernmentCloud
                .vault_url("Kv1", false)
                .unwrap(),
            "https://Kv1.vault.usgovcloudapi.net"
        );
        assert_eq!(
            Cloud::AzureChinaCloud.vault_url("a1-b2-c3", true).unwrap(),
            "https://a1-b2-c3.managedhsm.azure.cn"
        );
        // The limits themselves.
        let longest = "a".repeat(24);
        assert!(Cloud::AzurePublicCloud.vault_url("abc", false).is_ok());
        assert!(Cloud::AzurePublicCloud.vault_url(&longest, false).is_ok());
    }

    #[test]
    fn invalid_vault_names_are_refused_with_the_rule() {
        let cases = [
            ("ab", "3 to 24"),
            ("", "3 to 24"),
            ("a".repeat(25).as_str(), "3 to 24"),
            ("kv_prod", "letters, digits"),
            ("kv.prod", "letters, digits"),
            ("kv prod", "letters, digits"),
            ("kvé12", "letters, digits"),
            ("1kv", "start with a letter"),
            ("-kv", "start with a letter"),
            ("kv-", "end with '-'"),
            ("kv--prod", "consecutive"),
        ]
        .map(|(n, r)| (n.to_owned(), r));
        for (name, rule) in &cases {
            for hsm in [false, true] {
                let err = Cloud::AzurePublicCloud.vault_url(name, hsm).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(rule), "{name:?}: {msg}");
                assert!(msg.contains(&format!("{name:?}")), "{name:?}: {msg}");
                assert!(
                    msg.contains(if hsm { "Managed HSM" } else { "Key Vault" }),
                    "{msg}"
                );
            }
        }
    }
}
