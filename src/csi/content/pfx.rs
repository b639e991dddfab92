//! A base64 PKCS#12 secret (empty password) to PEM, as the Go provider's `decodePKCS12`:
//! every private key as PKCS#8, then the certificates, optionally in chain order.

use std::collections::BTreeMap;

use p12_keystore::Pkcs12Archive;
use zeroize::Zeroizing;

use super::ContentError;
use super::chain::order_chain;
use super::encoding::{BASE64_LENIENT, decode_base64};
use super::pem::{CERTIFICATE_TYPE, PRIVATE_KEY_TYPE, concat, go_pem_encode};
use super::pkcs8::canonical_pkcs8;

/// The Go provider's `decodePKCS12`: every key block, then the certificate blocks.
pub(super) fn pfx_to_pem(
    value: &[u8],
    construct_chain: bool,
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let pfx = decode_base64(value, &BASE64_LENIENT, u8::is_ascii_whitespace)
        .map_err(|_| ContentError::PfxNotBase64)?;
    let archive = Pkcs12Archive::from_pkcs12(&pfx, "").map_err(pfx_error)?;
    if !archive.secrets.is_empty() {
        return Err(ContentError::PfxUnsupportedBag("secret bags"));
    }
    let mut blocks = Vec::with_capacity(archive.keys.len() + archive.certs.len());
    for bag in &archive.keys {
        let pkcs8 = canonical_pkcs8(bag.key.as_der())?;
        blocks.push(go_pem_encode(PRIVATE_KEY_TYPE, &BTreeMap::new(), &pkcs8));
    }
    let certs: Vec<&[u8]> = archive.certs.iter().map(|bag| bag.cert.as_der()).collect();
    let certs = if construct_chain {
        order_chain(&certs)?
    } else {
        certs
    };
    for der in certs {
        blocks.push(go_pem_encode(CERTIFICATE_TYPE, &BTreeMap::new(), der));
    }
    Ok(concat(&blocks))
}

fn pfx_error(e: p12_keystore::error::Error) -> ContentError {
    use p12_keystore::error::Error;
    match e {
        Error::MacError(_) | Error::UnpadError => ContentError::PfxPassword,
        Error::InvalidVersion => ContentError::PfxMalformed("unsupported PFX version"),
        Error::UnsupportedContentType => ContentError::PfxMalformed("unsupported content type"),
        Error::UnsupportedCertificateType => {
            ContentError::PfxMalformed("certificate bag is not an X.509 certificate")
        }
        Error::X509Error(_) => ContentError::PfxMalformed("a certificate is not valid X.509"),
        Error::UnsupportedEncryptionScheme | Error::UnsupportedMacAlgorithm => {
            ContentError::PfxMalformed("unsupported encryption or MAC algorithm")
        }
        Error::InvalidPrivateKey => ContentError::PfxMalformed("a private key is not PKCS#8"),
        Error::InvalidParameters => {
            ContentError::PfxMalformed("invalid algorithm parameters or iteration count")
        }
        _ => ContentError::PfxMalformed("malformed PKCS#12 structure"),
    }
}

#[cfg(test)]
mod tests;
