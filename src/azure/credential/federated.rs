//! A workload identity whose service-account token arrives in memory (the CSI driver's
//! Mount request) instead of in a file: [`FederatedToken`] and [`federated`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};

use super::{CredentialError, parse_authority};
use crate::secret::SecretString;

/// A service-account token held in memory (the CSI driver hands each pod's token over in the
/// Mount request), used as the client assertion of a workload identity. The newest token
/// replaces the older one; tokens are zeroized when replaced or dropped. Clones share the
/// token.
#[derive(Debug, Clone, Default)]
pub struct FederatedToken(Arc<std::sync::Mutex<SecretString>>);

impl FederatedToken {
    /// A holder of `token`.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(std::sync::Mutex::new(SecretString::from(token))))
    }

    /// Replaces the token.
    pub fn set(&self, token: &str) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = SecretString::from(token);
    }

    /// A copy for the SDK edge: `ClientAssertion::secret` returns a plain `String`.
    fn current(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expose_secret()
            .to_owned()
    }
}

// `ClientAssertion` is an `#[async_trait]` trait; see `CertificateAssertion`.
impl ClientAssertion for FederatedToken {
    fn secret<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _options: Option<ClientMethodOptions<'life1>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<String>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(Ok(self.current())))
    }
}

/// A workload-identity credential whose assertion is `token`, whatever token it holds when a
/// new access token is needed. `cloud_authority` and `client_options` as in [`build`](super::build).
pub fn federated(
    tenant_id: &str,
    client_id: &str,
    token: FederatedToken,
    cloud_authority: &str,
    mut client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    parse_authority(cloud_authority)?;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = cloud_authority.to_owned();
    client_options.cloud = Some(Arc::new(cloud.into()));
    let credential = ClientAssertionCredential::new(
        tenant_id.to_owned(),
        client_id.to_owned(),
        token,
        Some(ClientAssertionCredentialOptions { client_options }),
    )
    .map_err(|source| CredentialError::Sdk {
        kind: "workload identity",
        source,
    })?;
    Ok(credential)
}
