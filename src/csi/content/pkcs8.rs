//! Private keys from a PKCS#12 file re-encoded as PKCS#8 exactly as Go's
//! `x509.MarshalPKCS8PrivateKey` writes them (RSA two-prime, EC on P-256, P-384, P-521).

use aws_lc_rs::agreement;
use zeroize::Zeroizing;

use super::ContentError;
use super::curve::Curve;
use super::der;

/// Re-encodes a PKCS#8 private key exactly as Go's `x509.MarshalPKCS8PrivateKey` would after
/// parsing it: version 0, no attributes; RSA with NULL parameters and a two-prime PKCS#1 key;
/// EC with the named curve in the algorithm and an inner SEC 1 key holding the scalar padded
/// to the order's length and the public point (recomputed), without parameters.
pub(super) fn canonical_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed PKCS#8 structure");
    let mut outer = der::Reader::new(der);
    let mut info = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    info.read(der::INTEGER).map_err(malformed)?;
    let mut algorithm = der::Reader::new(info.read(der::SEQUENCE).map_err(malformed)?);
    let private_key = info.read(der::OCTET_STRING).map_err(malformed)?;
    // Attributes and a v2 public key may follow; Go ignores them.
    let oid = algorithm.read(der::OID).map_err(malformed)?;
    let params = if algorithm.is_empty() {
        None
    } else {
        Some(algorithm.read_any().map_err(malformed)?)
    };
    if oid == der::OID_RSA_ENCRYPTION {
        match params {
            None | Some((der::NULL, [])) => rsa_pkcs8(private_key),
            Some(_) => Err(ContentError::InvalidPrivateKey(
                "RSA key with illegal algorithm parameters",
            )),
        }
    } else if oid == der::OID_EC_PUBLIC_KEY {
        let curve = match params {
            Some((der::OID, curve)) => Some(curve),
            _ => None,
        };
        ec_pkcs8(curve, private_key)
    } else {
        Err(ContentError::UnsupportedPrivateKey(
            "only RSA and EC (P-256, P-384, P-521) keys can be converted",
        ))
    }
}

fn rsa_pkcs8(pkcs1: &[u8]) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed PKCS#1 RSA key");
    let mut outer = der::Reader::new(pkcs1);
    let mut key = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    if !outer.is_empty() {
        return Err(ContentError::InvalidPrivateKey(
            "trailing data after the RSA key",
        ));
    }
    match key.read_uint().map_err(malformed)? {
        [] => {}
        [1] => {
            return Err(ContentError::UnsupportedPrivateKey("multi-prime RSA keys"));
        }
        _ => return Err(ContentError::InvalidPrivateKey("unknown RSA key version")),
    }
    // n, e, d, p, q, dp, dq, qinv.
    let mut fields: [&[u8]; 8] = [&[]; 8];
    for field in &mut fields {
        *field = key.read_uint().map_err(malformed)?;
    }
    if !key.is_empty() {
        return Err(ContentError::UnsupportedPrivateKey("multi-prime RSA keys"));
    }
    let [n, e, d, p, q, ..] = fields;
    if [n, e, d, p, q].iter().any(|v| v.is_empty()) {
        return Err(ContentError::InvalidPrivateKey(
            "RSA key contains a zero value",
        ));
    }
    let integers: Vec<Zeroizing<Vec<u8>>> = std::iter::once(&[][..])
        .chain(fields)
        .map(der::uint)
        .collect();
    let parts: Vec<&[u8]> = integers.iter().map(|i| i.as_slice()).collect();
    let inner = der::tlv(der::SEQUENCE, &parts);
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION]),
            &[der::NULL, 0],
        ],
    );
    Ok(pkcs8_envelope(&algorithm, &inner))
}

fn ec_pkcs8(
    curve_from_algorithm: Option<&[u8]>,
    sec1: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed SEC 1 EC key");
    let mut outer = der::Reader::new(sec1);
    let mut key = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    if key.read_uint().map_err(malformed)? != [1] {
        return Err(ContentError::InvalidPrivateKey(
            "unknown EC private key version",
        ));
    }
    let scalar = key.read(der::OCTET_STRING).map_err(malformed)?;
    let mut curve_from_key = None;
    while !key.is_empty() {
        let (tag, content) = key.read_any().map_err(malformed)?;
        if tag == der::CONTEXT_0 {
            curve_from_key = Some(
                der::Reader::new(content)
                    .read(der::OID)
                    .map_err(malformed)?,
            );
        }
        // [1] public key: Go recomputes it from the scalar, and so do we.
    }
    let curve_oid = curve_from_algorithm
        .or(curve_from_key)
        .ok_or(ContentError::InvalidPrivateKey("EC key names no curve"))?;
    let curve = Curve::by_oid(curve_oid).ok_or(ContentError::UnsupportedPrivateKey(
        "elliptic curve other than P-256, P-384 or P-521",
    ))?;

    // Extra leading zeros are tolerated, missing ones restored (as Go does).
    let mut scalar = scalar;
    while scalar.len() > curve.scalar_len {
        match scalar.split_first() {
            Some((0, rest)) => scalar = rest,
            _ => {
                return Err(ContentError::InvalidPrivateKey(
                    "EC private key longer than the curve order",
                ));
            }
        }
    }
    let mut padded = Zeroizing::new(vec![0; curve.scalar_len]);
    if let Some(tail) = padded.get_mut(curve.scalar_len - scalar.len()..) {
        tail.copy_from_slice(scalar);
    }
    let private = agreement::PrivateKey::from_private_key(curve.agreement, &padded)
        .map_err(|_| ContentError::InvalidPrivateKey("EC private key out of range"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| ContentError::InvalidPrivateKey("EC public key cannot be computed"))?;

    let inner = der::tlv(
        der::SEQUENCE,
        &[
            &der::uint(&[1]),
            &der::tlv(der::OCTET_STRING, &[&padded]),
            &der::tlv(
                der::CONTEXT_1,
                &[&der::tlv(der::BIT_STRING, &[&[0], public.as_ref()])],
            ),
        ],
    );
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
            &der::tlv(der::OID, &[curve.oid]),
        ],
    );
    Ok(pkcs8_envelope(&algorithm, &inner))
}

/// `PrivateKeyInfo { version 0, algorithm, privateKey }`.
fn pkcs8_envelope(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    der::tlv(
        der::SEQUENCE,
        &[
            &der::uint(&[]),
            algorithm,
            &der::tlv(der::OCTET_STRING, &[private_key]),
        ],
    )
}

#[cfg(test)]
mod tests;
