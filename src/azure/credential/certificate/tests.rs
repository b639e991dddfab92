//! Tests of client-certificate credentials: tokens over the wire from mock-vault, the
//! assertion JWT, and every way a PFX is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use mock_vault::x509;
use serde_json::{Value, json};

use super::*;
use crate::azure::azure_json::CredentialSource;
use crate::azure::credential::CredentialError;
use crate::azure::credential::fixtures::{
    CERT_CLIENT_ID, PFX_PASSWORD, TestCert, assert_token_reads_secret, build_error, build_for,
    scope, start_mock, tenant,
};

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn client_certificate_token_reads_a_secret() {
    let cert = TestCert::rsa();
    let mock = start_mock(&cert).await;
    let dir = tempfile::tempdir().unwrap();
    for password in [Some(PFX_PASSWORD), None] {
        let pfx_path = cert.write_pfx(
            dir.path(),
            std::slice::from_ref(&cert.der),
            password.unwrap_or(""),
        );
        let source = CredentialSource::ClientCertificate {
            tenant_id: tenant(&mock),
            client_id: CERT_CLIENT_ID.into(),
            pfx_path,
            password: password.map(SecretString::from),
        };
        let credential = build_for(&mock, &source);
        let dbg = format!("{credential:?}");
        assert!(!dbg.contains(PFX_PASSWORD), "{dbg}");
        assert_token_reads_secret(&mock, &credential).await;
    }
}

#[tokio::test]
async fn certificate_of_another_key_is_refused() {
    let registered = TestCert::rsa();
    let mock = start_mock(&registered).await;
    let other = TestCert::rsa();
    let dir = tempfile::tempdir().unwrap();
    let pfx_path = other.write_pfx(dir.path(), std::slice::from_ref(&other.der), "");
    let source = CredentialSource::ClientCertificate {
        tenant_id: tenant(&mock),
        client_id: CERT_CLIENT_ID.into(),
        pfx_path,
        password: None,
    };
    let err = build_for(&mock, &source)
        .get_token(&[&scope(&mock)], None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
}

#[test]
fn assertion_is_a_well_formed_rs256_jwt() {
    let cert = TestCert::rsa();
    let dir = tempfile::tempdir().unwrap();
    let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), "pw");
    let audience = "https://login.example/tenant-1/oauth2/v2.0/token";
    let assertion = CertificateAssertion::from_pfx(
        &pfx_path,
        Some(&SecretString::from("pw")),
        "app-1",
        audience,
    )
    .unwrap();
    let dbg = format!("{assertion:?}");
    assert!(dbg.contains("key: [redacted]"), "{dbg}");

    let jwt = assertion.sign().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_part(parts[0]);
    let x5t = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &cert.der));
    assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "x5t": x5t}));
    assert_eq!(x509::x5t(&cert.der), x5t);

    let claims = decode_part(parts[1]);
    assert_eq!(claims["aud"], audience);
    assert_eq!(claims["iss"], "app-1");
    assert_eq!(claims["sub"], "app-1");
    let nbf = claims["nbf"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - nbf, ASSERTION_LIFETIME_SECS);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(nbf.abs_diff(now) <= 5, "nbf {nbf}, now {now}");
    let jti = claims["jti"].as_str().unwrap();
    let groups: Vec<usize> = jti.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{jti}");
    assert!(jti.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_eq!(&jti[14..15], "4", "{jti}");
    assert!("89ab".contains(&jti[19..20]), "{jti}");

    // Signed by the certificate's key.
    let key = RsaKeyPair::from_pkcs8(&cert.pkcs8).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .unwrap();

    // Every call makes a fresh assertion.
    let again = assertion.sign().unwrap();
    assert_ne!(
        decode_part(again.split('.').nth(1).unwrap())["jti"],
        claims["jti"]
    );
}

#[test]
fn leaf_is_found_by_key_in_a_chain() {
    let cert = TestCert::rsa();
    let unrelated = TestCert::rsa();
    let dir = tempfile::tempdir().unwrap();
    // The key's certificate is not first: it is still picked.
    let pfx_path = cert.write_pfx(dir.path(), &[cert.der.clone(), unrelated.der.clone()], "");
    let assertion = CertificateAssertion::from_pfx(&pfx_path, None, "a", "aud").unwrap();
    assert_eq!(assertion.x5t, x509::x5t(&cert.der));
}

fn cert_source(pfx_path: PathBuf, password: Option<&str>) -> CredentialSource {
    CredentialSource::ClientCertificate {
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        client_id: CERT_CLIENT_ID.into(),
        pfx_path,
        password: password.map(SecretString::from),
    }
}

#[test]
fn ec_keys_are_refused() {
    let cert = TestCert::ec();
    let dir = tempfile::tempdir().unwrap();
    let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), "");
    let err = build_error(&cert_source(pfx_path.clone(), None));
    assert!(matches!(err, CredentialError::NotRsa { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "client certificate {}: certificate credentials need an RSA key, found an EC key",
            pfx_path.display()
        )
    );
}

#[test]
fn wrong_pfx_password_is_refused_without_echoing_it() {
    let cert = TestCert::rsa();
    let dir = tempfile::tempdir().unwrap();
    let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), PFX_PASSWORD);
    for wrong in [Some("guess-Pa55"), None] {
        let err = build_error(&cert_source(pfx_path.clone(), wrong));
        assert!(
            matches!(err, CredentialError::CertificatePassword { .. }),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(text.contains(&pfx_path.display().to_string()), "{text}");
        assert!(
            !text.contains(PFX_PASSWORD) && !text.contains("guess-Pa55"),
            "{text}"
        );
    }
}

#[test]
fn pfx_whose_certificate_does_not_match_its_key_is_refused() {
    let cert = TestCert::rsa();
    let other = TestCert::rsa();
    let dir = tempfile::tempdir().unwrap();
    let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&other.der), "");
    let err = build_error(&cert_source(pfx_path, None));
    assert!(matches!(err, CredentialError::InvalidPfx { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("no certificate in it matches its private key"),
        "{err}"
    );
}

#[test]
fn unreadable_or_garbage_pfx_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pfx");
    let err = build_error(&cert_source(missing.clone(), None));
    assert!(
        matches!(err, CredentialError::ReadCertificate { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pfx");
    std::fs::write(&garbage, b"-----BEGIN CERTIFICATE-----\nnot a pfx\n").unwrap();
    let err = build_error(&cert_source(garbage.clone(), Some("garbage-Pa55")));
    assert!(matches!(err, CredentialError::InvalidPfx { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&garbage.display().to_string()), "{text}");
    assert!(!text.contains("garbage-Pa55"), "{text}");
}

#[test]
fn key_algorithm_sniffing() {
    assert_eq!(key_algorithm(&TestCert::rsa().pkcs8), KeyAlgorithm::Rsa);
    assert_eq!(key_algorithm(&TestCert::ec().pkcs8), KeyAlgorithm::Ec);
    assert_eq!(key_algorithm(b"\x30\x03\x02\x01\x00"), KeyAlgorithm::Other);
}

#[test]
fn uuids_are_version_4() {
    let ids: BTreeMap<String, ()> = (0..64).map(|_| (random_uuid(), ())).collect();
    assert_eq!(ids.len(), 64);
    for id in ids.keys() {
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "{id}");
    }
}
