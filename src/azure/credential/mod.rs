//! Entra credentials built from a [`CredentialSource`]: client secret, client certificate,
//! managed identity and workload identity, all on `azure_identity`.
//!
//! `azure_identity`'s own `ClientCertificateCredential` needs OpenSSL (its
//! `client_certificate` feature), so certificate credentials are implemented here: the PFX
//! is read once with `p12-keystore`, and each token request gets a fresh RS256 client
//! assertion signed with `aws-lc-rs`, handed to `azure_identity`'s
//! [`ClientAssertionCredential`].
//!
//! Layout: this file holds [`build`] (every [`CredentialSource`]), the errors and the Entra
//! authority; `certificate.rs` the client-certificate assertion (PFX reading, RS256 JWT);
//! `federated.rs` [`FederatedToken`] and [`federated()`], a workload identity whose token
//! arrives in memory; `renewable.rs` [`Renewable`], the credential rebuilt when Key Vault
//! rejects its token, and its pipeline policy. Tests sit beside each module
//! (`<module>/tests.rs`), on `fixtures.rs` (a test certificate and mock-vault).

use std::path::PathBuf;
use std::sync::Arc;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Url};
use azure_identity::{
    ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::azure::azure_json::CredentialSource;

mod certificate;
mod federated;
mod renewable;

use certificate::CertificateAssertion;
pub use federated::{FederatedToken, federated};
pub use renewable::Renewable;

/// Errors building a credential. No variant carries a secret, a password or key material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The authority host is not an absolute `https` URL.
    #[error("invalid Entra authority host {authority:?}: {reason}")]
    InvalidAuthority {
        /// The authority host as given.
        authority: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The certificate file cannot be read.
    #[error("cannot read client certificate {}: {source}", path.display())]
    ReadCertificate {
        /// The PFX file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file cannot be decrypted with the password given.
    #[error(
        "cannot decrypt client certificate {}: the password (aadClientCertPassword) is wrong \
         or missing",
        path.display()
    )]
    CertificatePassword {
        /// The PFX file.
        path: PathBuf,
    },
    /// The certificate file is not a PKCS#12 file with one private key and its certificate.
    #[error("client certificate {} is not a usable PKCS#12 (PFX) file: {reason}", path.display())]
    InvalidPfx {
        /// The PFX file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not an RSA key (Entra certificate credentials are RS256 only).
    #[error(
        "client certificate {}: certificate credentials need an RSA key, found {found}",
        path.display()
    )]
    NotRsa {
        /// The PFX file.
        path: PathBuf,
        /// The kind of key found.
        found: String,
    },
    /// The RSA private key is malformed or unacceptable (for example smaller than 2048 bits).
    #[error("client certificate {}: unusable RSA private key: {reason}", path.display())]
    InvalidKey {
        /// The PFX file.
        path: PathBuf,
        /// Why the key was rejected.
        reason: String,
    },
    /// The Azure SDK refused to create the credential.
    #[error("cannot create the {kind} credential: {source}")]
    Sdk {
        /// Which credential: `client secret`, `client certificate`, `managed identity` or
        /// `workload identity`.
        kind: &'static str,
        /// The SDK's error.
        source: azure_core::Error,
    },
}

/// Builds the credential `source` describes.
///
/// `cloud_authority` is the Entra authority host, already resolved by the caller (from
/// `AZURE_AUTHORITY_HOST`, a flag or the cloud), e.g. `https://login.microsoftonline.com`.
/// It must be an absolute `https` URL. `client_options` carries the caller's transport and
/// retry policy; its `cloud` is replaced by a custom cloud with that authority host.
///
/// A certificate's PFX file is read here, once; a workload identity token file must exist
/// (the SDK reads it here and re-reads it every ten minutes). Managed identity picks App
/// Service (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) or IMDS from the process environment.
pub fn build(
    source: &CredentialSource,
    cloud_authority: &str,
    mut client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let authority = parse_authority(cloud_authority)?;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = cloud_authority.to_owned();
    client_options.cloud = Some(Arc::new(cloud.into()));

    let sdk = |kind| move |source| CredentialError::Sdk { kind, source };
    match source {
        CredentialSource::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => {
            // The SDK edge: `ClientSecretCredential` takes the SDK's own `Secret`.
            let credential = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                secret.to_sdk_secret(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(sdk("client secret"))?;
            Ok(credential)
        }
        CredentialSource::ClientCertificate {
            tenant_id,
            client_id,
            pfx_path,
            password,
        } => {
            let assertion = CertificateAssertion::from_pfx(
                pfx_path,
                password.as_ref(),
                client_id,
                &token_endpoint(&authority, tenant_id)?,
            )?;
            let credential = ClientAssertionCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                assertion,
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map_err(sdk("client certificate"))?;
            Ok(credential)
        }
        CredentialSource::ManagedIdentity {
            user_assigned_client_id,
        } => {
            let credential =
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: user_assigned_client_id
                        .clone()
                        .map(UserAssignedId::ClientId),
                    client_options,
                }))
                .map_err(sdk("managed identity"))?;
            Ok(credential)
        }
        CredentialSource::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let credential =
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant_id.clone()),
                    token_file_path: Some(token_file.clone()),
                }))
                .map_err(sdk("workload identity"))?;
            Ok(credential)
        }
    }
}

fn parse_authority(authority: &str) -> Result<Url, CredentialError> {
    let invalid = |reason| CredentialError::InvalidAuthority {
        authority: authority.to_owned(),
        reason,
    };
    let url = Url::parse(authority).map_err(|_| invalid("not an absolute URL"))?;
    if url.scheme() != "https" {
        return Err(invalid("Entra requires https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host name"));
    }
    Ok(url)
}

/// The token endpoint, exactly as `azure_identity` computes it (an absolute path joined to
/// the authority host, so any path there is dropped): the audience of client assertions.
fn token_endpoint(authority: &Url, tenant_id: &str) -> Result<String, CredentialError> {
    authority
        .join(&format!("/{tenant_id}/oauth2/v2.0/token"))
        .map(String::from)
        .map_err(|_| CredentialError::InvalidAuthority {
            authority: authority.to_string(),
            reason: "the tenant id does not form a valid token endpoint URL",
        })
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
