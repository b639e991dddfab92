//! Fixtures the content tests share: keys, a test CA and chains, PFX files built the way
//! Key Vault writes them, secrets, and PEM as an independent encoder writes it.

use std::sync::OnceLock;

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mock_vault::x509::{self, CertRequest, KeyKind, TestCa};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

use super::{
    ObjectOptions, OutputFile, PFX_CONTENT_TYPE, ProviderOptions, SecretValue, render_secret,
};
use crate::secret::SecretString;

/// A marker that must never appear in an error message or `Debug` output.
pub(super) const MARKER: &str = "s3cr3t-Marker-9f1c";

pub(super) fn rsa_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let der: Pkcs8V1Der<'_> = key.as_der().unwrap();
        der.as_ref().to_vec()
    })
}

pub(super) fn ec_key(kind: KeyKind) -> Vec<u8> {
    let alg = match kind {
        KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        KeyKind::EcP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        KeyKind::EcP521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
        KeyKind::Rsa => unreachable!(),
    };
    EcdsaKeyPair::generate(alg)
        .unwrap()
        .to_pkcs8v1()
        .unwrap()
        .as_ref()
        .to_vec()
}

pub(super) fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::generate("Content Test").unwrap())
}

/// Leaf, intermediate, root.
pub(super) fn issue(key: &[u8], kind: KeyKind, issuer: Option<&TestCa>) -> Vec<Vec<u8>> {
    let req = CertRequest {
        subject: "CN=web.example.com, O=Contoso".into(),
        dns_names: vec!["web.example.com".into()],
        validity_months: 6,
        ..Default::default()
    };
    x509::issue(&req, key, kind, issuer).unwrap().chain
}

pub(super) fn rsa_chain() -> &'static [Vec<u8>] {
    static CHAIN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CHAIN.get_or_init(|| issue(rsa_key(), KeyKind::Rsa, Some(ca())))
}

/// A PFX the way Key Vault writes it (3DES, SHA-1 MAC, 2000 iterations), keeping `certs`
/// in the given order. Without a key, the certificates are stored as trusted entries.
pub(super) fn build_pfx(key: Option<&[u8]>, certs: &[&[u8]], password: &str) -> Vec<u8> {
    let certs: Vec<Certificate> = certs
        .iter()
        .map(|der| Certificate::from_der(der).unwrap())
        .collect();
    let mut store = KeyStore::new();
    match key {
        Some(key) => store.add_entry(
            "entry",
            KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
                &b"local-key-id"[..],
                PrivateKey::from_der(key).unwrap(),
                certs,
            )),
        ),
        None => {
            for (i, cert) in certs.into_iter().enumerate() {
                store.add_entry(&format!("cert{i}"), KeyStoreEntry::Certificate(cert));
            }
        }
    }
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .encryption_iterations(2000)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .mac_iterations(2000)
        .write()
        .unwrap()
}

pub(super) fn cert_secret(value: String, content_type: &str) -> SecretValue {
    SecretValue {
        value: SecretString::from(value),
        content_type: Some(content_type.to_owned()),
        backs_certificate: true,
    }
}

pub(super) fn pfx_secret(pfx: &[u8]) -> SecretValue {
    cert_secret(STANDARD.encode(pfx), PFX_CONTENT_TYPE)
}

pub(super) fn plain_secret(value: &str) -> SecretValue {
    SecretValue {
        value: SecretString::from(value),
        content_type: None,
        backs_certificate: false,
    }
}

/// PEM as an independent encoder (the `pem` crate) writes it.
pub(super) fn pem_block(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), config)
}

pub(super) fn with_chain(options: &ProviderOptions, construct_pem_chain: bool) -> ProviderOptions {
    ProviderOptions {
        construct_pem_chain,
        ..*options
    }
}

/// The single file a render must produce.
pub(super) fn only(files: Vec<OutputFile>) -> Vec<u8> {
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].suffix, None);
    files[0].contents.to_vec()
}

pub(super) fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

pub(super) fn secret_files(secret: &SecretValue, options: &ObjectOptions) -> Vec<OutputFile> {
    render_secret(secret, options, &ProviderOptions::default()).unwrap()
}

/// `d` = 0x11 repeated, a valid P-256 scalar.
pub(super) fn p256_scalar() -> [u8; 32] {
    [0x11; 32]
}

pub(super) fn canonical_p256() -> Vec<u8> {
    let key =
        agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &p256_scalar()).unwrap();
    let der: Pkcs8V1Der<'_> = key.as_der().unwrap();
    der.as_ref().to_vec()
}

/// `der` as PEM with CRLF line endings and 76-character lines.
pub(super) fn crlf_pem(tag: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {tag}-----\r\n{}\r\n-----END {tag}-----\r\n",
        lines.join("\r\n")
    )
}
