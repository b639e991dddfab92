//! TLS for the mock: a fresh test CA and server certificate per start, or operator-given
//! PEM files.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating the test certificates failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Server TLS configuration plus the CA clients must trust.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// PEM of the CA that issued the server certificate.
    pub ca_pem: String,
    /// rustls server configuration (ALPN h2 and http/1.1).
    pub config: Arc<ServerConfig>,
}

/// Creates a test CA and a server certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<TlsMaterial, TlsError> {
    generate_with_ca("mock-vault test CA", names)
}

/// As [`generate`], with the CA's common name: each listener with its own trust (the
/// token proxy's CA is the cluster's, not the vaults').
pub fn generate_with_ca(ca_name: &str, names: &[String]) -> Result<TlsMaterial, TlsError> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca_name);
    dn.push(DnType::OrganizationName, "akv-bridge");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(30);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "mock-vault");
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let chain = vec![server_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        config: server_config(chain, key)?,
    })
}

/// Loads a certificate chain and key from PEM files; `ca` names the PEM clients should
/// trust (defaults to the last certificate of the chain).
pub fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<TlsMaterial, TlsError> {
    let pem_err = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
    let ca_pem = match ca {
        Some(p) => std::fs::read_to_string(p).map_err(|e| pem_err(p, e.to_string()))?,
        None => chain
            .last()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .unwrap_or_default(),
    };
    Ok(TlsMaterial {
        ca_pem,
        config: server_config(chain, private)?,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
