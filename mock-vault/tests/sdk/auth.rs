//! The challenge flow, token validation, per-identity permissions, and each credential type
//! of `azure_identity` against the mock's Entra endpoints.

use std::sync::Arc;

use azure_identity::ClientAssertionCredentialOptions;
use azure_identity::{
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_keys::models::{EncryptionAlgorithm, KeyOperationParameters};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use serde_json::Value;

use crate::harness::{Harness, error_code};

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    keys: [{name: kek}]
    secrets: [{name: db, value: hunter2}]
  - name: kv2
    secrets: [{name: other, value: elsewhere}]
identities:
  - name: admin
    client_id: 00000000-0000-0000-0000-0000000000ad
    client_secret: admin-secret
  - name: reader
    client_id: 00000000-0000-0000-0000-0000000000re
    client_secret: reader-secret
    permissions: {kv1: {secrets: [get]}}
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000000c
    client_secret: kms-secret
    permissions: {kv1: {keys: [encrypt, decrypt]}}
  - name: workload
    client_id: 00000000-0000-0000-0000-0000000000f1
    federated: [{subject: "system:serviceaccount:apps:web"}]
    permissions: {"*": {secrets: [get]}}
  - name: vm
    client_id: 00000000-0000-0000-0000-0000000000a1
    managed: system
    permissions: {kv1: {secrets: [get]}}
  - name: uami
    client_id: 00000000-0000-0000-0000-0000000000a2
    managed: user
    permissions: {kv2: {secrets: [get]}}
"#;

#[tokio::test]
async fn unauthenticated_requests_get_the_real_challenge() {
    let h = Harness::start(FIXTURE).await;
    let url = format!("{}/secrets/db?api-version=2025-07-01", h.vault_url("kv1"));
    let resp = h.http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let expected = format!(
        "Bearer authorization=\"{}/{}\", resource=\"https://vault.localhost:{}\"",
        h.mock.info().authority_host,
        h.mock.info().tenant_id,
        h.mock.info().address.port()
    );
    assert_eq!(challenge, expected);
    assert_eq!(resp.headers()["x-ms-error-code"], "Unauthorized");
    assert!(resp.headers().contains_key("x-ms-request-id"));
    assert_eq!(resp.headers()["x-ms-keyvault-region"], "eastus");
    assert!(resp.headers().contains_key("date"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
}

async fn raw_token(h: &Harness, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
    let info = h.mock.info();
    let resp = h
        .http()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            info.authority_host, info.tenant_id
        ))
        .form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn tokens_are_bound_to_resource_and_expire() {
    let h = Harness::start(FIXTURE).await;
    let url = format!("{}/secrets/db?api-version=2025-07-01", h.vault_url("kv1"));
    let port = h.mock.info().address.port();
    let (status, hsm_token) = raw_token(
        &h,
        "00000000-0000-0000-0000-0000000000ad",
        "admin-secret",
        &format!("https://managedhsm.localhost:{port}/.default"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        hsm_token["expires_in"].is_u64(),
        "expires_in is a JSON number"
    );
    let resp = h
        .http()
        .get(&url)
        .bearer_auth(hsm_token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a token for another resource is refused"
    );

    let (_, vault_token) = raw_token(
        &h,
        "00000000-0000-0000-0000-0000000000ad",
        "admin-secret",
        &format!("https://vault.localhost:{port}/.default"),
    )
    .await;
    let token = vault_token["access_token"].as_str().unwrap().to_owned();
    let resp = h.http().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["value"], "hunter2");

    h.mock.expire_tokens();
    let resp = h.http().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = h
        .http()
        .get(&url)
        .bearer_auth("made-up-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn entra_refuses_bad_client_credentials_with_aadsts_codes() {
    let h = Harness::start(FIXTURE).await;
    let (status, body) = raw_token(
        &h,
        "00000000-0000-0000-0000-0000000000ad",
        "wrong",
        "https://vault.localhost/.default",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);
    let (status, body) = raw_token(
        &h,
        "11111111-2222-3333-4444-555555555555",
        "x",
        "https://vault.localhost/.default",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"][0], 700016);
    let (status, body) = raw_token(
        &h,
        "00000000-0000-0000-0000-0000000000ad",
        "admin-secret",
        "https://vault.localhost",
    )
    .await;
    assert_eq!(status, 400, "client credentials need a /.default scope");
    assert_eq!(body["error"], "invalid_scope");

    // Through the SDK: a wrong secret is a credential error, not a vault error.
    let client = h.secrets(
        "kv1",
        h.credential("00000000-0000-0000-0000-0000000000ad", "wrong"),
    );
    let err = client.get_secret("db", None).await.unwrap_err();
    assert!(
        matches!(err.kind(), azure_core::error::ErrorKind::Credential),
        "got {:?}",
        err.kind()
    );

    let disco: Value = h
        .http()
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            h.mock.info().authority_host,
            h.mock.info().tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        disco["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/v2.0/token")
    );
}

#[tokio::test]
async fn permissions_are_enforced_per_identity_with_the_real_403() {
    let h = Harness::start(FIXTURE).await;
    let reader = h.credential("00000000-0000-0000-0000-0000000000re", "reader-secret");
    let secrets = h.secrets("kv1", reader.clone());
    assert_eq!(
        secrets
            .get_secret("db", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("hunter2")
    );
    let err = secrets
        .set_secret(
            "db",
            SetSecretParameters {
                value: Some("x".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));
    assert!(
        err.to_string()
            .contains("does not have secrets set permission"),
        "{err}"
    );
    // No permission at all on kv2.
    let err = h
        .secrets("kv2", reader.clone())
        .get_secret("other", None)
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));
    // Nor on keys.
    let err = h
        .keys("kv1", reader)
        .get_key("kek", None)
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));

    // The KMS-style identity may encrypt and decrypt but not read key metadata.
    let kms = h.keys(
        "kv1",
        h.credential("00000000-0000-0000-0000-00000000000c", "kms-secret"),
    );
    let sealed = kms
        .encrypt(
            "kek",
            KeyOperationParameters {
                algorithm: Some(EncryptionAlgorithm::RsaOaep256),
                value: Some(vec![1; 32]),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(sealed.result.unwrap().len(), 256);
    let err = kms.get_key("kek", None).await.unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));

    // Revoking a permission takes effect on the next request.
    h.mock.set_permissions("reader", Default::default());
    let err = secrets.get_secret("db", None).await.unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));
    // Counted per identity.
    let stats = h.mock.stats();
    assert!(stats.by_identity["reader"] >= 4);
}

#[tokio::test]
async fn workload_identity_exchanges_a_service_account_token() {
    let h = Harness::start(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let credential = |subject: &str, file: &std::path::Path| {
        // Projected tokens end with a newline; the SDK sends the file verbatim.
        let token = h
            .mock
            .sa_token(subject, std::time::Duration::from_secs(600))
            .unwrap();
        std::fs::write(file, format!("{token}\n")).unwrap();
        WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: h.client_options(),
            },
            client_id: Some("00000000-0000-0000-0000-0000000000f1".into()),
            tenant_id: Some(h.mock.info().tenant_id.clone()),
            token_file_path: Some(file.to_owned()),
        }))
        .unwrap()
    };
    let good = credential("system:serviceaccount:apps:web", &token_file);
    let secret = h
        .secrets("kv2", good)
        .get_secret("other", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("elsewhere"));

    let other_file = dir.path().join("other");
    let wrong_sa = credential("system:serviceaccount:apps:intruder", &other_file);
    let err = h
        .secrets("kv2", wrong_sa)
        .get_secret("other", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), azure_core::error::ErrorKind::Credential),
        "{err}"
    );

    // A token signed by someone else is refused even with the right claims.
    let forged = {
        let token = h
            .mock
            .sa_token(
                "system:serviceaccount:apps:web",
                std::time::Duration::from_secs(600),
            )
            .unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        // Change one signature character to another valid base64url character.
        let mut sig: Vec<char> = sig.chars().collect();
        sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
        format!("{input}.{}", sig.into_iter().collect::<String>())
    };
    let info = h.mock.info();
    let resp = h
        .http()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            info.authority_host, info.tenant_id
        ))
        .form(&[
            ("client_id", "00000000-0000-0000-0000-0000000000f1"),
            ("client_assertion", forged.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("grant_type", "client_credentials"),
            ("scope", "https://vault.localhost/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 700027);
}

/// Managed identity reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the process
/// environment, which a test may not change in-process; this runs the check in a child
/// process of this test binary with the variables set.
#[tokio::test]
async fn managed_identity_system_and_user_assigned() {
    let h = Harness::start(FIXTURE).await;
    let info = h.mock.info();
    for (which, vault, secret) in [("system", "kv1", "db"), ("user", "kv2", "other")] {
        // tokio's Command: a blocking wait would stall the runtime that serves the mock.
        let out = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "auth::managed_identity_child",
                "--ignored",
                "--nocapture",
            ])
            .env("IDENTITY_ENDPOINT", &info.identity_endpoint)
            .env("IDENTITY_HEADER", &info.identity_header)
            .env("MOCK_MI_WHICH", which)
            .env("MOCK_MI_VAULT_URL", h.vault_url(vault))
            .env("MOCK_MI_SECRET", secret)
            .env("MOCK_MI_CA", &info.ca_pem_path)
            .env("MOCK_MI_ADDR", info.address.to_string())
            .env("MOCK_MI_HOST", vault.to_owned() + ".vault.localhost")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{which}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
    }
    let stats = h.mock.stats();
    assert!(stats.by_identity.get("vm").copied().unwrap_or(0) > 0);
    assert!(stats.by_identity.get("uami").copied().unwrap_or(0) > 0);
}

#[tokio::test]
#[ignore = "run by managed_identity_system_and_user_assigned in a child process"]
async fn managed_identity_child() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by the parent"));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(var("MOCK_MI_CA")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = var("MOCK_MI_ADDR").parse().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(&var("MOCK_MI_HOST"), addr)
        .build()
        .unwrap();
    let client_options = azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(http))),
        ..Default::default()
    };
    let user_assigned_id = (var("MOCK_MI_WHICH") == "user")
        .then(|| UserAssignedId::ClientId("00000000-0000-0000-0000-0000000000a2".into()));
    let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id,
        client_options: client_options.clone(),
    }))
    .unwrap();
    let client = azure_security_keyvault_secrets::SecretClient::new(
        &var("MOCK_MI_VAULT_URL"),
        cred,
        Some(azure_security_keyvault_secrets::SecretClientOptions {
            client_options,
            ..Default::default()
        }),
    )
    .unwrap();
    let secret = client
        .get_secret(&var("MOCK_MI_SECRET"), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(secret.value.is_some());
}
