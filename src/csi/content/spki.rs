//! A key's JWK public parts (RSA `n`/`e`, EC `crv`/`x`/`y`) as a PKIX
//! SubjectPublicKeyInfo, DER.

use aws_lc_rs::agreement;
use zeroize::Zeroizing;

use super::curve::Curve;
use super::der::{self, strip_leading_zeros};
use super::{ContentError, KeyValue};

pub(super) fn rsa_spki(key: &KeyValue) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let n = strip_leading_zeros(
        key.n
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("n"))?,
    );
    let e = strip_leading_zeros(
        key.e
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("e"))?,
    );
    if n.is_empty() {
        return Err(ContentError::InvalidKeyParameter {
            param: "n",
            reason: "the modulus is empty or zero",
        });
    }
    // Go keeps the exponent in an int64.
    if e.is_empty() || e.len() > 8 || (e.len() == 8 && e.first().is_some_and(|b| *b >= 0x80)) {
        return Err(ContentError::InvalidKeyParameter {
            param: "e",
            reason: "the exponent must be a positive 63-bit integer",
        });
    }
    let public_key = der::tlv(der::SEQUENCE, &[&der::uint(n), &der::uint(e)]);
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION]),
            &[der::NULL, 0],
        ],
    );
    Ok(der::tlv(
        der::SEQUENCE,
        &[&algorithm, &der::tlv(der::BIT_STRING, &[&[0], &public_key])],
    ))
}

pub(super) fn ec_spki(key: &KeyValue) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let name = key
        .crv
        .as_deref()
        .ok_or(ContentError::MissingKeyParameter("crv"))?;
    let curve =
        Curve::by_name(name).ok_or_else(|| ContentError::UnsupportedCurve(name.to_owned()))?;
    let x = strip_leading_zeros(
        key.x
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("x"))?,
    );
    let y = strip_leading_zeros(
        key.y
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("y"))?,
    );
    if x.len() > curve.field_len || y.len() > curve.field_len {
        return Err(ContentError::InvalidEcPoint);
    }
    // 04 || x || y, each coordinate left-padded to the field size.
    let mut point = vec![0; 1 + 2 * curve.field_len];
    if let Some(first) = point.first_mut() {
        *first = 0x04;
    }
    let x_end = 1 + curve.field_len;
    for (coordinate, end) in [(x, x_end), (y, point.len())] {
        if let Some(slot) = point.get_mut(end - coordinate.len()..end) {
            slot.copy_from_slice(coordinate);
        }
    }
    agreement::ParsedPublicKey::try_from(agreement::UnparsedPublicKey::new(
        curve.agreement,
        &point,
    ))
    .map_err(|_| ContentError::InvalidEcPoint)?;
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
            &der::tlv(der::OID, &[curve.oid]),
        ],
    );
    Ok(der::tlv(
        der::SEQUENCE,
        &[&algorithm, &der::tlv(der::BIT_STRING, &[&[0], &point])],
    ))
}

#[cfg(test)]
mod tests;
