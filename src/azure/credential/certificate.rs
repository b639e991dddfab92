//! Client-certificate credentials without OpenSSL: the PFX is read once with
//! `p12-keystore` (one RSA private key and its certificate), and each token request gets a
//! fresh RS256 client assertion signed with `aws-lc-rs`.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use azure_core::error::ErrorKind;
use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p12_keystore::Pkcs12Archive;
use serde::Serialize;
use zeroize::Zeroizing;

use super::CredentialError;
use crate::secret::SecretString;

/// Lifetime of a certificate client assertion, in seconds.
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// Largest PFX file accepted.
const MAX_PFX_SIZE: u64 = 1024 * 1024;

/// Signs client assertions with a certificate's RSA key: the JWT Entra accepts in place of
/// a client secret.
pub(super) struct CertificateAssertion {
    /// The private key. aws-lc clears its memory when the key is dropped.
    key: RsaKeyPair,
    /// Base64url of the JWT header, which never changes.
    header: String,
    /// `iss` and `sub`.
    client_id: String,
    /// `aud`: the token endpoint.
    audience: String,
    /// Base64url SHA-1 thumbprint of the certificate (public; for `Debug`).
    x5t: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("x5t", &self.x5t)
            .field("key", &format_args!("[redacted]"))
            .finish()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    x5t: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    exp: u64,
}

impl CertificateAssertion {
    /// Reads the PFX at `path`: exactly one private key, which must be RSA, and the
    /// certificate carrying its public key.
    pub(super) fn from_pfx(
        path: &Path,
        password: Option<&SecretString>,
        client_id: &str,
        audience: &str,
    ) -> Result<Self, CredentialError> {
        let invalid = |reason: String| CredentialError::InvalidPfx {
            path: path.to_owned(),
            reason,
        };
        let data = read_limited(path)?;
        let password = password.map_or("", SecretString::expose_secret);
        let archive = Pkcs12Archive::from_pkcs12(&data, password).map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
                CredentialError::CertificatePassword {
                    path: path.to_owned(),
                }
            }
            other => invalid(other.to_string()),
        })?;

        let mut keys = archive.keys.into_iter();
        let key_bag = keys
            .next()
            .ok_or_else(|| invalid("it holds no private key".to_owned()))?;
        if keys.next().is_some() {
            return Err(invalid(
                "it holds more than one private key; expected one".to_owned(),
            ));
        }
        let pkcs8 = Zeroizing::new(key_bag.key.as_der().to_vec());
        let key =
            RsaKeyPair::from_pkcs8(&pkcs8).map_err(|rejected| match key_algorithm(&pkcs8) {
                KeyAlgorithm::Rsa => CredentialError::InvalidKey {
                    path: path.to_owned(),
                    reason: rejected.to_string(),
                },
                other => CredentialError::NotRsa {
                    path: path.to_owned(),
                    found: other.to_string(),
                },
            })?;

        // The leaf is the certificate whose SubjectPublicKeyInfo holds this key: the
        // RSAPublicKey DER appears verbatim in it. This needs no localKeyId attribute.
        let public_key = key.public_key().as_ref();
        let leaf = archive
            .certs
            .iter()
            .map(|bag| bag.cert.as_der())
            .find(|der| contains(der, public_key))
            .ok_or_else(|| {
                invalid(if archive.certs.is_empty() {
                    "it holds no certificate".to_owned()
                } else {
                    "no certificate in it matches its private key".to_owned()
                })
            })?;

        let x5t = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, leaf));
        let header = serde_json::to_vec(&Header {
            alg: "RS256",
            typ: "JWT",
            x5t: &x5t,
        })
        .map_err(|e| invalid(format!("cannot encode the assertion header: {e}")))?;
        Ok(Self {
            key,
            header: URL_SAFE_NO_PAD.encode(header),
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
            x5t,
        })
    }

    /// A fresh signed assertion, valid for [`ASSERTION_LIFETIME_SECS`] from now.
    fn sign(&self) -> azure_core::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Credential, e, "clock error"))?
            .as_secs();
        let claims = serde_json::to_vec(&Claims {
            aud: &self.audience,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: random_uuid(),
            nbf: now,
            exp: now.saturating_add(ASSERTION_LIFETIME_SECS),
        })
        .map_err(|e| azure_core::Error::new(ErrorKind::DataConversion, e))?;
        let signing_input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "signing the client certificate assertion failed",
                )
            })?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

// `ClientAssertion` is an `#[async_trait]` trait; this is the signature that macro produces.
// Signing is synchronous, so the future is ready at once.
impl ClientAssertion for CertificateAssertion {
    fn secret<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _options: Option<ClientMethodOptions<'life1>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<String>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(self.sign()))
    }
}

/// Reads a PFX file (at most [`MAX_PFX_SIZE`] bytes) into a buffer cleared on drop.
fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    let read_error = |source| CredentialError::ReadCertificate {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    crate::file::read_at_most(file, MAX_PFX_SIZE)
        .map_err(read_error)?
        .ok_or_else(|| CredentialError::InvalidPfx {
            path: path.to_owned(),
            reason: format!("it is larger than {MAX_PFX_SIZE} bytes"),
        })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The algorithm of a PKCS#8 private key, for error messages.
#[derive(Debug, PartialEq, Eq)]
enum KeyAlgorithm {
    Rsa,
    Ec,
    Other,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "an RSA key",
            Self::Ec => "an EC key",
            Self::Other => "a key that is neither RSA nor EC",
        })
    }
}

/// Finds the key algorithm OID near the start of a PKCS#8 `PrivateKeyInfo` (it comes right
/// after the version), without a full DER parser.
fn key_algorithm(pkcs8: &[u8]) -> KeyAlgorithm {
    // DER of the OIDs 1.2.840.113549.1.1.1 (rsaEncryption) and 1.2.840.10045.2.1
    // (id-ecPublicKey), tag and length included.
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let head = pkcs8.get(..32).unwrap_or(pkcs8);
    if contains(head, RSA) {
        KeyAlgorithm::Rsa
    } else if contains(head, EC) {
        KeyAlgorithm::Ec
    } else {
        KeyAlgorithm::Other
    }
}

/// A random version-4 UUID, for the `jti` claim.
fn random_uuid() -> String {
    let mut r: u128 = rand::random();
    r = (r & !(0xF_u128 << 76)) | (0x4_u128 << 76); // version 4
    r = (r & !(0x3_u128 << 62)) | (0x2_u128 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        r >> 96,
        (r >> 80) & 0xFFFF,
        (r >> 64) & 0xFFFF,
        (r >> 48) & 0xFFFF,
        r & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests;
