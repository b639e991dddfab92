//! Tests of [`build`](super::build) over every credential kind, against mock-vault where a token is
//! needed, of its errors, and of the Entra authority.

use std::time::Duration;

use azure_core::error::ErrorKind;

use super::fixtures::{
    SP_CLIENT_ID, SP_SECRET, TestCert, WI_CLIENT_ID, WI_SUBJECT, assert_token_reads_secret,
    build_error, build_for, scope, start_mock, tenant,
};
use super::*;
use crate::secret::SecretString;

#[tokio::test]
async fn client_secret_token_reads_a_secret() {
    let mock = start_mock(&TestCert::rsa()).await;
    let source = CredentialSource::ClientSecret {
        tenant_id: tenant(&mock),
        client_id: SP_CLIENT_ID.into(),
        secret: SecretString::from(SP_SECRET),
    };
    let credential = build_for(&mock, &source);
    assert!(!format!("{credential:?}").contains(SP_SECRET));
    assert_token_reads_secret(&mock, &credential).await;
}

#[tokio::test]
async fn wrong_client_secret_is_refused() {
    let mock = start_mock(&TestCert::rsa()).await;
    let source = CredentialSource::ClientSecret {
        tenant_id: tenant(&mock),
        client_id: SP_CLIENT_ID.into(),
        secret: SecretString::from("not-the-secret"),
    };
    let err = build_for(&mock, &source)
        .get_token(&[&scope(&mock)], None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}

#[tokio::test]
async fn workload_identity_token_reads_a_secret() {
    let mock = start_mock(&TestCert::rsa()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let sa_token = mock.sa_token(WI_SUBJECT, Duration::from_secs(600)).unwrap();
    // Kubelet's projected files need not end with a newline; the mock tolerates one.
    std::fs::write(&token_file, format!("{sa_token}\n")).unwrap();
    let source = CredentialSource::WorkloadIdentity {
        tenant_id: tenant(&mock),
        client_id: WI_CLIENT_ID.into(),
        token_file,
    };
    assert_token_reads_secret(&mock, &build_for(&mock, &source)).await;
}

#[tokio::test]
async fn workload_identity_with_another_subject_is_refused() {
    let mock = start_mock(&TestCert::rsa()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let sa_token = mock
        .sa_token(
            "system:serviceaccount:default:intruder",
            Duration::from_secs(600),
        )
        .unwrap();
    std::fs::write(&token_file, sa_token).unwrap();
    let source = CredentialSource::WorkloadIdentity {
        tenant_id: tenant(&mock),
        client_id: WI_CLIENT_ID.into(),
        token_file,
    };
    let err = build_for(&mock, &source)
        .get_token(&[&scope(&mock)], None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
}

#[test]
fn workload_identity_needs_its_token_file() {
    let source = CredentialSource::WorkloadIdentity {
        tenant_id: "t".into(),
        client_id: "c".into(),
        token_file: "/nonexistent/akv-bridge/token".into(),
    };
    let err = build(
        &source,
        "https://login.microsoftonline.com",
        ClientOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Sdk {
                kind: "workload identity",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn audience_is_the_sdk_token_endpoint() {
    let url = parse_authority("https://login.microsoftonline.com").unwrap();
    assert_eq!(
        token_endpoint(&url, "t1").unwrap(),
        "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    );
    // A trailing slash, an explicit default port or a path change nothing, as in the SDK.
    let url = parse_authority("https://login.microsoftonline.us:443/some/path/").unwrap();
    assert_eq!(
        token_endpoint(&url, "t1").unwrap(),
        "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
    );
    let url = parse_authority("https://localhost:8443").unwrap();
    assert_eq!(
        token_endpoint(&url, "t1").unwrap(),
        "https://localhost:8443/t1/oauth2/v2.0/token"
    );
}

#[test]
fn authority_must_be_https() {
    let source = CredentialSource::ManagedIdentity {
        user_assigned_client_id: None,
    };
    for (authority, reason) in [
        ("http://login.microsoftonline.com", "https"),
        ("login.microsoftonline.com", "absolute URL"),
        ("", "absolute URL"),
    ] {
        let err = build(&source, authority, ClientOptions::default()).unwrap_err();
        assert!(
            matches!(err, CredentialError::InvalidAuthority { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(reason), "{err}");
    }
}

#[test]
fn managed_identity_builds_without_network() {
    // Which endpoint it uses (IMDS or App Service) comes from the process environment,
    // which tests cannot set (no unsafe): only construction is checked here.
    for id in [
        None,
        Some("9a8b7c6d-0000-1111-2222-333344445555".to_owned()),
    ] {
        let source = CredentialSource::ManagedIdentity {
            user_assigned_client_id: id,
        };
        build(
            &source,
            "https://login.microsoftonline.com",
            ClientOptions::default(),
        )
        .unwrap();
    }
}

#[test]
fn client_secret_with_an_invalid_tenant_is_refused() {
    let source = CredentialSource::ClientSecret {
        tenant_id: "not a tenant/../x".into(),
        client_id: SP_CLIENT_ID.into(),
        secret: SecretString::from(SP_SECRET),
    };
    let err = build_error(&source);
    assert!(
        matches!(
            err,
            CredentialError::Sdk {
                kind: "client secret",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(SP_SECRET));
}
