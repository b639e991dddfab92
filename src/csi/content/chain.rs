//! Certificate chain order, as the Go provider's `fetchCertChains`: leaf to root, linked by
//! Authority Key Identifier = Subject Key Identifier; a chain that does not take in every
//! certificate leaves them in their stored order (Go provider v1.7.0 and later).

use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::ContentError;

/// Orders certificates as the Go provider's `fetchCertChains`: certificate `i`'s parent is
/// the first other certificate whose Subject Key Identifier equals `i`'s Authority Key
/// Identifier (pairs where both are absent never match); the chain starts at the first
/// certificate that is nobody's parent and follows the links.
///
/// When that chain does not take in every certificate (an intermediate or the root is
/// missing, or an unrelated certificate is present), the certificates are returned
/// unchanged, in their stored order, as the Go provider does since v1.7.0 (it logs
/// "certificate chain is not complete" and returns its input). Errors stay errors: an
/// unparsable certificate, no certificate that is nobody's parent, a walk that loops.
pub(super) fn order_chain<'c>(certs: &[&'c [u8]]) -> Result<Vec<&'c [u8]>, ContentError> {
    let ids = certs
        .iter()
        .enumerate()
        .map(|(index, der)| {
            key_identifiers(der)
                .map_err(|reason| ContentError::InvalidCertificate { index, reason })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut parent: Vec<Option<usize>> = vec![None; ids.len()];
    let mut is_parent = vec![false; ids.len()];
    for (i, (child_aki, _)) in ids.iter().enumerate() {
        for (j, (_, candidate_ski)) in ids.iter().enumerate() {
            if i == j || (child_aki.is_none() && candidate_ski.is_none()) {
                continue;
            }
            if child_aki.as_deref().unwrap_or_default()
                == candidate_ski.as_deref().unwrap_or_default()
            {
                if let Some(flag) = is_parent.get_mut(j) {
                    *flag = true;
                }
                if let Some(link) = parent.get_mut(i) {
                    *link = Some(j);
                }
                break;
            }
        }
    }

    let leaf = is_parent
        .iter()
        .position(|p| !p)
        .ok_or(ContentError::NoLeafCertificate)?;
    let mut chain = Vec::with_capacity(certs.len());
    let mut next = Some(leaf);
    while let Some(i) = next {
        if chain.len() == certs.len() {
            return Err(ContentError::ChainCycle);
        }
        chain.extend(certs.get(i).copied());
        next = parent.get(i).copied().flatten();
    }
    if chain.len() != certs.len() {
        tracing::warn!(
            certificates = certs.len(),
            linked = chain.len(),
            "certificate chain is not complete (missing intermediate or root, or an \
             unrelated certificate): the certificates keep their stored order"
        );
        return Ok(certs.to_vec());
    }
    Ok(chain)
}

/// `(authority key identifier, subject key identifier)` of a DER certificate.
type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);

fn key_identifiers(der: &[u8]) -> Result<KeyIds, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing data after the certificate".to_owned());
    }
    let mut aki = None;
    let mut ski = None;
    for ext in cert.extensions() {
        if ext.oid == OID_X509_EXT_SUBJECT_KEY_IDENTIFIER {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                _ => return Err("malformed subject key identifier".to_owned()),
            }
        } else if ext.oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(id) => {
                    aki = id.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => return Err("malformed authority key identifier".to_owned()),
            }
        }
    }
    Ok((aki, ski))
}

#[cfg(test)]
mod tests;
