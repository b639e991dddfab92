//! Which identity a mount authenticates as ([`AuthMode`]): workload identity (its token
//! exchanged at Entra or at AKS identity binding's token proxy), managed identity or a
//! service principal, with the pod's token and the client secret held in
//! [`SecretString`]s (zeroizing, redacted `Debug`).

use std::collections::BTreeMap;

use super::IDENTITY_BINDING_AUDIENCE;
use super::attributes::{Attributes, json_reason};
use super::error::ParamError;
use super::{
    A_SERVICE_ACCOUNT_TOKENS, MAX_ECHO_CHARS, P_CLIENT_ID, P_USE_AZURE_TOKEN_PROXY,
    P_USE_POD_IDENTITY, P_USE_POD_SA_ANNOTATION, P_USE_VM_MANAGED_IDENTITY,
    P_USER_ASSIGNED_IDENTITY_ID, S_CLIENT_ID, S_CLIENT_SECRET, WORKLOAD_IDENTITY_AUDIENCE, snippet,
};
use crate::secret::SecretString;

/// Where a workload identity's service-account token is exchanged for an Entra token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenExchange {
    /// At Microsoft Entra, with the token for [`WORKLOAD_IDENTITY_AUDIENCE`].
    Entra,
    /// At AKS identity binding's token proxy (`useAzureTokenProxy: "true"`), with the token
    /// for [`IDENTITY_BINDING_AUDIENCE`].
    IdentityBinding,
}

impl TokenExchange {
    /// The audience of the token this exchange takes.
    pub fn audience(self) -> &'static str {
        match self {
            Self::Entra => WORKLOAD_IDENTITY_AUDIENCE,
            Self::IdentityBinding => IDENTITY_BINDING_AUDIENCE,
        }
    }
}

/// How the provider authenticates to Entra for this mount.
#[derive(Debug)]
pub enum AuthMode {
    /// Workload identity: exchange the pod's service-account token for an Entra token of
    /// `client_id` (an app registration or user-assigned identity).
    WorkloadIdentity {
        /// `clientID`.
        client_id: String,
        /// The pod's service-account token (a JWT) for the exchange's audience, to hand to
        /// the credential as a client assertion.
        token: SecretString,
        /// The token's `expirationTimestamp` as the driver sent it (RFC 3339), if any.
        token_expiration: Option<String>,
        /// Where the token is exchanged.
        exchange: TokenExchange,
    },
    /// The node's managed identity (IMDS).
    ManagedIdentity {
        /// `userAssignedIdentityID`: the client id of a user-assigned identity; `None` for
        /// the system-assigned one.
        user_assigned_client_id: Option<String>,
    },
    /// A service principal with a client secret from the `nodePublishSecretRef` Secret.
    ServicePrincipal {
        /// The Secret's `clientid`.
        client_id: String,
        /// The Secret's `clientsecret`.
        client_secret: SecretString,
    },
}

/// Checks a client id: 1-128 characters of `[-._A-Za-z0-9]`.
fn is_client_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn client_id_param(attrs: &Attributes, name: &'static str) -> Result<Option<String>, ParamError> {
    let value = attrs.trimmed(name);
    if value.is_empty() {
        return Ok(None);
    }
    if !is_client_id(value) {
        return Err(ParamError::InvalidParameter {
            name,
            reason: format!(
                "{:?} is not a client id (1-128 characters of letters, digits, '-', '.', '_')",
                snippet(value)
            ),
        });
    }
    Ok(Some(value.to_owned()))
}

pub(super) fn parse_auth(
    attrs: &Attributes,
    secrets: &[(String, SecretString)],
) -> Result<AuthMode, ParamError> {
    if attrs.bool(P_USE_POD_IDENTITY)? {
        return Err(ParamError::PodIdentityUnsupported);
    }
    if attrs.bool(P_USE_POD_SA_ANNOTATION)? {
        return Err(ParamError::Unsupported {
            name: P_USE_POD_SA_ANNOTATION,
            reason: "akv-bridge does not read the Kubernetes API; set clientID in the \
                     SecretProviderClass",
        });
    }
    let use_vm = attrs.bool(P_USE_VM_MANAGED_IDENTITY)?;
    let client_id = client_id_param(attrs, P_CLIENT_ID)?;
    // Identity binding (the Go provider's `useAzureTokenProxy`, v1.8): workload identity
    // whose token goes to the cluster's token proxy. It names its identity by clientID, as
    // the Go provider requires; with a VM identity it would be two identities at once.
    let exchange = if attrs.bool(P_USE_AZURE_TOKEN_PROXY)? {
        let refused = |reason: &str| ParamError::InvalidParameter {
            name: P_USE_AZURE_TOKEN_PROXY,
            reason: reason.to_owned(),
        };
        if use_vm {
            return Err(refused(
                "cannot be combined with useVMManagedIdentity: keep one identity mode",
            ));
        }
        if client_id.is_none() {
            return Err(refused(
                "identity binding needs clientID: the client id of the managed identity the \
                 service account is bound to",
            ));
        }
        TokenExchange::IdentityBinding
    } else {
        TokenExchange::Entra
    };
    if let Some(client_id) = client_id {
        if use_vm {
            return Err(ParamError::ConflictingIdentity);
        }
        let (token, token_expiration) =
            service_account_token(attrs.trimmed(A_SERVICE_ACCOUNT_TOKENS), exchange)?;
        return Ok(AuthMode::WorkloadIdentity {
            client_id,
            token,
            token_expiration,
            exchange,
        });
    }
    if use_vm {
        return Ok(AuthMode::ManagedIdentity {
            user_assigned_client_id: client_id_param(attrs, P_USER_ASSIGNED_IDENTITY_ID)?,
        });
    }

    let client_id = find_secret(secrets, S_CLIENT_ID)?;
    let client_secret = find_secret(secrets, S_CLIENT_SECRET)?;
    match (client_id, client_secret) {
        (None, None) => Err(ParamError::NoIdentity {
            hint: attrs.case_hint(P_CLIENT_ID, &[]),
        }),
        (Some(_), None) => Err(ParamError::IncompleteServicePrincipal {
            missing: S_CLIENT_SECRET,
        }),
        (None, Some(_)) => Err(ParamError::IncompleteServicePrincipal {
            missing: S_CLIENT_ID,
        }),
        (Some(id), Some(secret)) => {
            if !is_client_id(id) {
                // Not echoed: it comes from a Secret. A trailing newline is the usual cause.
                return Err(ParamError::InvalidParameter {
                    name: "nodePublishSecretRef clientid",
                    reason: "is not a client id (1-128 characters of letters, digits, '-', \
                             '.', '_'; is there a trailing newline?)"
                        .to_owned(),
                });
            }
            Ok(AuthMode::ServicePrincipal {
                client_id: id.to_owned(),
                client_secret: SecretString::from(secret),
            })
        }
    }
}

/// The non-empty value of the one key of `secrets` equal to `name` ignoring ASCII case.
fn find_secret<'a>(
    secrets: &'a [(String, SecretString)],
    name: &'static str,
) -> Result<Option<&'a str>, ParamError> {
    let mut found = None;
    for (key, value) in secrets {
        if key.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(ParamError::DuplicateKey {
                    what: "secrets",
                    key: name.to_owned(),
                });
            }
            found = Some(value.expose_secret());
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// One entry of `csi.storage.k8s.io/serviceAccount.tokens`.
#[derive(serde::Deserialize)]
struct TokenEntry {
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default, rename = "expirationTimestamp")]
    expiration: Option<String>,
}

fn service_account_token(
    tokens: &str,
    exchange: TokenExchange,
) -> Result<(SecretString, Option<String>), ParamError> {
    const WHAT: &str = "attribute csi.storage.k8s.io/serviceAccount.tokens";
    let missing = || match exchange {
        TokenExchange::Entra => ParamError::MissingWorkloadIdentityToken,
        TokenExchange::IdentityBinding => ParamError::MissingIdentityBindingToken,
    };
    if tokens.is_empty() {
        return Err(missing());
    }
    let mut entries: BTreeMap<String, TokenEntry> = serde_json::from_str::<Option<_>>(tokens)
        .map_err(|e| ParamError::InvalidJson {
            what: WHAT,
            reason: json_reason(
                &e,
                "expected a JSON object mapping audiences to {\"token\": string, \
                     \"expirationTimestamp\": string}",
            ),
        })?
        .unwrap_or_default();
    match entries.remove(exchange.audience()) {
        Some(TokenEntry {
            token: Some(token),
            expiration,
        }) if !token.is_empty() => {
            let expiration = expiration
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty() && e.len() <= MAX_ECHO_CHARS);
            Ok((token, expiration))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests;
