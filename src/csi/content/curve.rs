//! The elliptic curves Key Vault keys and certificates use (P-256, P-384, P-521): JWK name,
//! OID, sizes and the aws-lc algorithm, shared by the private and public key conversions.

use aws_lc_rs::agreement;

use super::der;

/// An elliptic curve Key Vault keys and certificates can use.
pub(super) struct Curve {
    /// JWK `crv`.
    pub(super) name: &'static str,
    /// Named-curve OID, DER content octets.
    pub(super) oid: &'static [u8],
    /// Bytes of a field element (x, y).
    pub(super) field_len: usize,
    /// Bytes of a private scalar: (bit length of the order + 7) / 8.
    pub(super) scalar_len: usize,
    pub(super) agreement: &'static agreement::Algorithm,
}

const CURVES: [Curve; 3] = [
    Curve {
        name: "P-256",
        oid: der::OID_P256,
        field_len: 32,
        scalar_len: 32,
        agreement: &agreement::ECDH_P256,
    },
    Curve {
        name: "P-384",
        oid: der::OID_P384,
        field_len: 48,
        scalar_len: 48,
        agreement: &agreement::ECDH_P384,
    },
    Curve {
        name: "P-521",
        oid: der::OID_P521,
        field_len: 66,
        scalar_len: 66,
        agreement: &agreement::ECDH_P521,
    },
];

impl Curve {
    pub(super) fn by_name(name: &str) -> Option<&'static Self> {
        CURVES.iter().find(|c| c.name == name)
    }

    pub(super) fn by_oid(oid: &[u8]) -> Option<&'static Self> {
        CURVES.iter().find(|c| c.oid == oid)
    }
}
