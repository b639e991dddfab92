//! Test harness: starts mock-vault on an ephemeral port and builds official SDK clients that
//! trust only its CA and pin its `*.localhost` host names to the bound address.

use std::sync::Arc;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use mock_vault::{Config, Fixture, MockVault};

pub struct Harness {
    pub mock: MockVault,
}

impl Harness {
    pub async fn start(fixture_yaml: &str) -> Self {
        let fixture = Fixture::parse(fixture_yaml).expect("fixture parses");
        Self::start_with(Config {
            fixture,
            ..Config::default()
        })
        .await
    }

    pub async fn start_with(config: Config) -> Self {
        let mock = mock_vault::start(config).await.expect("mock starts");
        Self { mock }
    }

    /// A reqwest client that trusts only the mock's CA and resolves its host names.
    pub fn http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.mock.ca_pem().as_bytes()).expect("CA PEM");
        let mut b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none());
        for (host, addr) in &self.mock.info().resolve {
            b = b.resolve(host, *addr);
        }
        b.build().expect("reqwest client")
    }

    pub fn client_options(&self) -> ClientOptions {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self.mock.info().authority_host.clone();
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http()))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(10),
                max_retries: 3,
                max_total_elapsed: azure_core::time::Duration::seconds(20),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            cloud: Some(Arc::new(cloud.into())),
            ..ClientOptions::default()
        }
    }

    pub fn credential(&self, client_id: &str, secret: &str) -> Arc<dyn TokenCredential> {
        ClientSecretCredential::new(
            &self.mock.info().tenant_id,
            client_id.to_owned(),
            Secret::from(secret.to_owned()),
            Some(ClientSecretCredentialOptions {
                client_options: self.client_options(),
            }),
        )
        .expect("credential")
    }

    pub fn default_credential(&self) -> Arc<dyn TokenCredential> {
        let info = self.mock.info();
        self.credential(&info.client_id, &info.client_secret)
    }

    pub fn vault_url(&self, vault: &str) -> String {
        self.mock.vault_url(vault).expect("vault exists").to_owned()
    }

    pub fn keys(&self, vault: &str, cred: Arc<dyn TokenCredential>) -> KeyClient {
        KeyClient::new(
            &self.vault_url(vault),
            cred,
            Some(KeyClientOptions {
                client_options: self.client_options(),
                ..Default::default()
            }),
        )
        .expect("key client")
    }

    pub fn secrets(&self, vault: &str, cred: Arc<dyn TokenCredential>) -> SecretClient {
        SecretClient::new(
            &self.vault_url(vault),
            cred,
            Some(SecretClientOptions {
                client_options: self.client_options(),
                ..Default::default()
            }),
        )
        .expect("secret client")
    }

    pub fn certificates(&self, vault: &str, cred: Arc<dyn TokenCredential>) -> CertificateClient {
        CertificateClient::new(
            &self.vault_url(vault),
            cred,
            Some(CertificateClientOptions {
                client_options: self.client_options(),
                ..Default::default()
            }),
        )
        .expect("certificate client")
    }
}

/// The HTTP status and Key Vault error code of an SDK error.
pub fn error_code(err: &azure_core::Error) -> (u16, String) {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.clone().unwrap_or_default()),
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}
