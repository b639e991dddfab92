//! Certificates through `azure_security_keyvault_certificates::CertificateClient`, with the
//! backing secret read through `SecretClient` and parsed as PFX / PEM.

use azure_security_keyvault_certificates::models::{
    CertificatePolicy, CreateCertificateParameters, ImportCertificateParameters, IssuerParameters,
    KeyProperties, KeyType, SecretProperties, SubjectAlternativeNames, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{CertificateClient, ResourceExt};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use base64::Engine as _;
use futures::TryStreamExt as _;
use mock_vault::x509;

use crate::harness::{Harness, error_code};

fn policy(issuer: &str, content_type: &str, kty: KeyType) -> CertificatePolicy {
    CertificatePolicy {
        issuer_parameters: Some(IssuerParameters {
            name: Some(issuer.into()),
            ..Default::default()
        }),
        key_properties: Some(KeyProperties {
            key_type: Some(kty),
            exportable: Some(true),
            ..Default::default()
        }),
        secret_properties: Some(SecretProperties {
            content_type: Some(content_type.into()),
        }),
        x509_certificate_properties: Some(X509CertificateProperties {
            subject: Some("CN=web.example.com, O=Contoso".into()),
            subject_alternative_names: Some(SubjectAlternativeNames {
                dns_names: Some(vec!["web.example.com".into(), "www.example.com".into()]),
                ..Default::default()
            }),
            validity_in_months: Some(6),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    client: &CertificateClient,
    name: &str,
    p: CertificatePolicy,
) -> azure_security_keyvault_certificates::models::Certificate {
    let params = CreateCertificateParameters {
        certificate_policy: Some(p),
        ..Default::default()
    };
    client
        .begin_create_certificate(name, params.try_into().unwrap(), None)
        .unwrap()
        .await
        .unwrap()
        .into_model()
        .unwrap()
}

#[tokio::test]
async fn self_signed_pkcs12_certificate_with_backing_key_and_secret() {
    let h = Harness::start("{}").await;
    let cred = h.default_credential();
    let certs = h.certificates("kv1", cred.clone());
    let cert = create(
        &certs,
        "web",
        policy("Self", "application/x-pkcs12", KeyType::Rsa),
    )
    .await;
    let version = cert.resource_id().unwrap().version.unwrap();
    assert!(
        cert.kid
            .as_deref()
            .unwrap()
            .ends_with(&format!("/keys/web/{version}"))
    );
    assert!(
        cert.sid
            .as_deref()
            .unwrap()
            .ends_with(&format!("/secrets/web/{version}"))
    );
    let cer = cert.cer.unwrap();
    assert_eq!(
        cert.x509_thumbprint.unwrap(),
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cer).as_ref()
    );
    let info = x509::cert_info(&cer).unwrap();
    assert!(info.subject.contains("web.example.com"));
    assert_eq!(info.dns_names, ["web.example.com", "www.example.com"]);

    // The backing secret: managed, kid set, base64 PFX with an empty password.
    let secrets = h.secrets("kv1", cred.clone());
    let secret = secrets
        .get_secret("web", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.managed, Some(true));
    assert!(secret.kid.is_some());
    assert_eq!(secret.content_type.as_deref(), Some("application/x-pkcs12"));
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(secret.value.unwrap())
        .unwrap();
    let bundle = x509::parse_pfx(&pfx, "").unwrap();
    assert_eq!(bundle.chain.len(), 1);
    assert_eq!(bundle.chain[0], cer);

    // The backing key is managed and answers with the certificate's public key.
    let keys = h.keys("kv1", cred);
    let key = keys
        .get_key("web", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(key.managed, Some(true));
    // Deleting the managed key directly is refused.
    let err = keys.delete_key("web", None).await.unwrap_err();
    assert_eq!(error_code(&err).0, 403);

    // A second create makes a new version; both are listed.
    create(
        &certs,
        "web",
        policy("Self", "application/x-pkcs12", KeyType::Rsa),
    )
    .await;
    let versions: Vec<_> = certs
        .list_certificate_properties_versions("web", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
}

#[tokio::test]
async fn ca_issued_pem_certificate_has_the_full_chain() {
    let h = Harness::start("{}").await;
    let cred = h.default_credential();
    let certs = h.certificates("kv1", cred.clone());
    let cert = create(
        &certs,
        "chained",
        policy(
            mock_vault::TEST_CA_ISSUER,
            "application/x-pem-file",
            KeyType::Ec,
        ),
    )
    .await;
    let secrets = h.secrets("kv1", cred);
    let secret = secrets
        .get_secret("chained", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        secret.content_type.as_deref(),
        Some("application/x-pem-file")
    );
    let pem_text = secret.value.unwrap();
    assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    let bundle = x509::parse_pem_bundle(&pem_text).unwrap();
    assert_eq!(bundle.chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(bundle.chain[0], cert.cer.unwrap());
    let leaf = x509::cert_info(&bundle.chain[0]).unwrap();
    let intermediate = x509::cert_info(&bundle.chain[1]).unwrap();
    let root = x509::cert_info(&bundle.chain[2]).unwrap();
    assert_eq!(leaf.issuer, intermediate.subject);
    assert_eq!(intermediate.issuer, root.subject);
    assert!(root.is_ca && intermediate.is_ca && !leaf.is_ca);
    // outContentType converts a PFX-backed secret to PEM, as the service does.
    let pfx_cert = create(
        &certs,
        "pfx",
        policy(
            mock_vault::TEST_CA_ISSUER,
            "application/x-pkcs12",
            KeyType::Rsa,
        ),
    )
    .await;
    let as_pem = secrets
        .get_secret(
            "pfx",
            Some(SecretClientGetSecretOptions {
                out_content_type: Some(azure_security_keyvault_secrets::models::ContentType::Pem),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let converted = x509::parse_pem_bundle(&as_pem.value.unwrap()).unwrap();
    assert_eq!(converted.chain[0], pfx_cert.cer.unwrap());
    assert_eq!(converted.chain.len(), 3);
}

#[tokio::test]
async fn import_pfx_and_pem_and_refuse_garbage() {
    let h = Harness::start("{}").await;
    let certs = h.certificates("kv1", h.default_credential());
    // Build a bundle to import with the same pure code the CSI tests use.
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 =
        aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key).unwrap();
    let ca = x509::TestCa::generate("Import").unwrap();
    let issued = x509::issue(
        &x509::CertRequest {
            subject: "CN=imported".into(),
            dns_names: vec!["imported.example".into()],
            validity_months: 3,
            ..Default::default()
        },
        pkcs8.as_ref(),
        x509::KeyKind::Rsa,
        Some(&ca),
    )
    .unwrap();
    let pfx = x509::build_pfx(pkcs8.as_ref(), &issued.chain, "pa55").unwrap();
    let imported = certs
        .import_certificate(
            "from-pfx",
            ImportCertificateParameters {
                base64_encoded_certificate: Some(
                    base64::engine::general_purpose::STANDARD.encode(&pfx),
                ),
                password: Some("pa55".into()),
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
    assert_eq!(imported.cer.unwrap(), issued.chain[0]);

    let pem_bundle = x509::build_pem_bundle(pkcs8.as_ref(), &issued.chain);
    let pem_policy = CertificatePolicy {
        secret_properties: Some(SecretProperties {
            content_type: Some("application/x-pem-file".into()),
        }),
        ..Default::default()
    };
    let imported = certs
        .import_certificate(
            "from-pem",
            ImportCertificateParameters {
                base64_encoded_certificate: Some(pem_bundle),
                certificate_policy: Some(pem_policy),
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
    assert_eq!(imported.cer.unwrap(), issued.chain[0]);

    let err = certs
        .import_certificate(
            "bad",
            ImportCertificateParameters {
                base64_encoded_certificate: Some(
                    base64::engine::general_purpose::STANDARD.encode(&pfx),
                ),
                password: Some("wrong".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
    let err = certs
        .import_certificate(
            "bad",
            ImportCertificateParameters {
                base64_encoded_certificate: Some("not base64 at all!".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
    let err = certs.get_certificate("absent", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "CertificateNotFound".into()));
}

#[tokio::test]
async fn update_delete_recover_and_purge_carry_the_backing_key_and_secret() {
    use azure_security_keyvault_certificates::models::{
        CertificateAttributes, CertificateClientUpdateCertificatePropertiesOptions,
        UpdateCertificatePropertiesParameters,
    };
    let h = Harness::start("{}").await;
    let cred = h.default_credential();
    let certs = h.certificates("kv1", cred.clone());
    let keys = h.keys("kv1", cred.clone());
    let secrets = h.secrets("kv1", cred);
    let p = || policy("Self", "application/x-pkcs12", KeyType::Rsa);
    let cert = create(&certs, "web", p()).await;
    let version = cert.resource_id().unwrap().version.unwrap();

    // Disabling the certificate disables its backing secret; tags are replaced.
    let params = UpdateCertificatePropertiesParameters {
        certificate_attributes: Some(CertificateAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        tags: Some([("stage".to_owned(), "old".to_owned())].into()),
        ..Default::default()
    };
    let updated = certs
        .update_certificate_properties(
            "web",
            params.try_into().unwrap(),
            Some(CertificateClientUpdateCertificatePropertiesOptions {
                certificate_version: Some(version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.attributes.unwrap().enabled, Some(false));
    assert_eq!(updated.tags.unwrap()["stage"], "old");
    let err = secrets.get_secret("web", None).await.unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));

    // Deleting the certificate takes the key and secret with it.
    let deleted = certs
        .delete_certificate("web", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        deleted
            .recovery_id
            .unwrap()
            .ends_with("/deletedcertificates/web")
    );
    assert!(deleted.scheduled_purge_date.is_some());
    let err = certs.get_certificate("web", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "CertificateNotFound".into()));
    let err = keys.get_key("web", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "KeyNotFound".into()));
    let again = certs
        .get_deleted_certificate("web", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        again
            .id
            .unwrap()
            .ends_with(&format!("/certificates/web/{version}"))
    );
    let listed: Vec<_> = certs
        .list_deleted_certificate_properties(None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0]
            .recovery_id
            .as_deref()
            .unwrap()
            .ends_with("/deletedcertificates/web")
    );

    // The name cannot be reused while the certificate is recoverable.
    let params = CreateCertificateParameters {
        certificate_policy: Some(p()),
        ..Default::default()
    };
    let err = match certs.begin_create_certificate("web", params.try_into().unwrap(), None) {
        Ok(poller) => poller.await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(error_code(&err), (409, "Conflict".into()));

    // Recovery brings back the certificate, its key and its secret.
    certs
        .recover_deleted_certificate("web", None)
        .await
        .unwrap();
    certs.get_certificate("web", None).await.unwrap();
    let key = keys
        .get_key("web", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(key.managed, Some(true));

    certs.delete_certificate("web", None).await.unwrap();
    certs.purge_deleted_certificate("web", None).await.unwrap();
    let err = certs
        .get_deleted_certificate("web", None)
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (404, "CertificateNotFound".into()));
    create(&certs, "web", p()).await;
}
