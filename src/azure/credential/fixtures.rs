//! Fixtures the credential tests share: an RSA or EC key with its certificate and PFX, and
//! mock-vault with one secret and three app identities allowed to read it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mock_vault::{Config, Fixture, MockVault, x509};
use serde_json::{Value, json};

use super::{CredentialError, CredentialSource, build};

pub(super) const SECRET_NAME: &str = "db-password";
pub(super) const SECRET_VALUE: &str = "hunter2";
pub(super) const SP_CLIENT_ID: &str = "0b0d6a52-1111-2222-3333-444455556666";
pub(super) const SP_SECRET: &str = "sp-Secret-value~1";
pub(super) const CERT_CLIENT_ID: &str = "0c0d6a52-1111-2222-3333-444455556666";
pub(super) const WI_CLIENT_ID: &str = "0d0d6a52-1111-2222-3333-444455556666";
pub(super) const WI_SUBJECT: &str = "system:serviceaccount:kube-system:akv-bridge";
pub(super) const PFX_PASSWORD: &str = "pfx-Pa55word!";

/// An RSA key and its self-signed certificate.
pub(super) struct TestCert {
    pub(super) pkcs8: Vec<u8>,
    pub(super) der: Vec<u8>,
}

impl TestCert {
    pub(super) fn rsa() -> Self {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&key)
            .unwrap()
            .as_ref()
            .to_vec();
        Self::issue(pkcs8, x509::KeyKind::Rsa)
    }

    pub(super) fn ec() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let pkcs8 = key.to_pkcs8v1().unwrap().as_ref().to_vec();
        Self::issue(pkcs8, x509::KeyKind::EcP256)
    }

    fn issue(pkcs8: Vec<u8>, kind: x509::KeyKind) -> Self {
        let issued = x509::issue(
            &x509::CertRequest {
                subject: "CN=akv-bridge-test".into(),
                validity_months: 1,
                ..Default::default()
            },
            &pkcs8,
            kind,
            None,
        )
        .unwrap();
        let der = issued.leaf().to_vec();
        Self { pkcs8, der }
    }

    fn pem(&self) -> String {
        let b64 = STANDARD.encode(&self.der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// Writes a PFX of this key with `chain` to a temporary directory.
    pub(super) fn write_pfx(&self, dir: &Path, chain: &[Vec<u8>], password: &str) -> PathBuf {
        let pfx = x509::build_pfx(&self.pkcs8, chain, password).unwrap();
        let path = dir.join(format!("sp-{}.pfx", rand::random::<u32>()));
        std::fs::write(&path, pfx).unwrap();
        path
    }
}

/// mock-vault with vault `kv1` holding one secret, and three app identities allowed to
/// read it: one with a client secret, one with `cert`, one federated.
pub(super) async fn start_mock(cert: &TestCert) -> MockVault {
    let fixture = json!({
        "vaults": [{
            "name": "kv1",
            "secrets": [{"name": SECRET_NAME, "value": SECRET_VALUE}],
        }],
        "identities": [
            {
                "name": "sp-secret",
                "client_id": SP_CLIENT_ID,
                "client_secret": SP_SECRET,
                "permissions": {"kv1": {"secrets": ["get"]}},
            },
            {
                "name": "sp-cert",
                "client_id": CERT_CLIENT_ID,
                "certificates": [cert.pem()],
                "permissions": {"kv1": {"secrets": ["get"]}},
            },
            {
                "name": "workload",
                "client_id": WI_CLIENT_ID,
                "federated": [{"subject": WI_SUBJECT}],
                "permissions": {"kv1": {"secrets": ["get"]}},
            },
        ],
    });
    let fixture = Fixture::parse(&fixture.to_string()).unwrap();
    mock_vault::start(Config {
        fixture,
        ..Config::default()
    })
    .await
    .unwrap()
}

/// A reqwest client that trusts only the mock's CA and pins its host names.
fn http(mock: &MockVault) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(mock.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none());
    for (host, addr) in &mock.info().resolve {
        builder = builder.resolve(host, *addr);
    }
    builder.build().unwrap()
}

fn client_options(mock: &MockVault) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http(mock)))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(10),
            max_retries: 2,
            max_total_elapsed: azure_core::time::Duration::seconds(10),
            max_delay: azure_core::time::Duration::seconds(1),
        }),
        ..ClientOptions::default()
    }
}

pub(super) fn build_for(mock: &MockVault, source: &CredentialSource) -> Arc<dyn TokenCredential> {
    build(source, &mock.info().authority_host, client_options(mock)).unwrap()
}

pub(super) fn scope(mock: &MockVault) -> String {
    format!("{}/.default", mock.info().vaults["kv1"].resource)
}

pub(super) fn tenant(mock: &MockVault) -> String {
    mock.info().tenant_id.clone()
}

/// Gets a token from `credential` and reads the secret with it, over the wire.
pub(super) async fn assert_token_reads_secret(
    mock: &MockVault,
    credential: &Arc<dyn TokenCredential>,
) {
    let token = credential.get_token(&[&scope(mock)], None).await.unwrap();
    let url = format!(
        "{}/secrets/{SECRET_NAME}?api-version=2025-07-01",
        mock.info().vaults["kv1"].url
    );
    let resp = http(mock)
        .get(&url)
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["value"], SECRET_VALUE);

    // Without the token the vault challenges: the 200 above is the token's doing.
    let resp = http(mock).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

pub(super) fn build_error(source: &CredentialSource) -> CredentialError {
    build(
        source,
        "https://login.microsoftonline.com",
        ClientOptions::default(),
    )
    .unwrap_err()
}
