//! Tests of the PKCS#8 re-encoding against aws-lc and Go, and of hostile private keys.

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::signature::Ed25519KeyPair;
use mock_vault::x509::{self, KeyKind};

use super::canonical_pkcs8;
use crate::csi::content::der;
use crate::csi::content::fixtures::{
    build_pfx, canonical_p256, ec_key, issue, only, p256_scalar, pem_block, pfx_secret, rsa_key,
    secret_files, text,
};
use crate::csi::content::{ContentError, ObjectOptions};

#[test]
fn ec_keys_on_every_curve_convert_to_the_canonical_pkcs8() {
    for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::EcP521] {
        let key = ec_key(kind);
        let chain = issue(&key, kind, None);
        let pfx = build_pfx(Some(&key), &[&chain[0]], "");
        let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
        // aws-lc writes EC PKCS#8 the way Go does: curve in the algorithm, an inner
        // SEC 1 key with the public point and without parameters.
        let expected = [
            pem_block("PRIVATE KEY", &key),
            pem_block("CERTIFICATE", &chain[0]),
        ];
        assert_eq!(text(&main), expected.concat(), "{kind}");
        let parsed = x509::parse_pem_bundle(text(&main)).unwrap();
        assert_eq!(parsed.kind, kind);
    }
}

#[test]
fn non_canonical_private_keys_are_re_encoded_as_go_does() {
    let attributes = der::tlv(der::CONTEXT_0, &[&der::tlv(der::SEQUENCE, &[])]);
    let p256_oid = der::tlv(der::OID, &[der::OID_P256]);
    let ec_algorithm = |params: &[u8]| {
        der::tlv(
            der::SEQUENCE,
            &[&der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]), params],
        )
    };
    let sec1 = |scalar: &[u8], with_params: bool| {
        let version = der::uint(&[1]);
        let scalar = der::tlv(der::OCTET_STRING, &[scalar]);
        let params = der::tlv(der::CONTEXT_0, &[&p256_oid]);
        let parts: Vec<&[u8]> = if with_params {
            vec![&version, &scalar, &params]
        } else {
            vec![&version, &scalar]
        };
        der::tlv(der::SEQUENCE, &parts)
    };
    let pkcs8 = |algorithm: &[u8], private: &[u8], extra: &[u8]| {
        der::tlv(
            der::SEQUENCE,
            &[
                &der::uint(&[]),
                algorithm,
                &der::tlv(der::OCTET_STRING, &[private]),
                extra,
            ],
        )
    };
    let expected = canonical_p256();

    // Curve inside the SEC 1 key, no public key, attributes: all normalised away.
    let odd = pkcs8(&ec_algorithm(&[]), &sec1(&p256_scalar(), true), &attributes);
    assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), expected);
    // A scalar with an extra leading zero, and one with its leading zero removed.
    let mut padded = vec![0];
    padded.extend_from_slice(&p256_scalar());
    let odd = pkcs8(&ec_algorithm(&p256_oid), &sec1(&padded, false), &[]);
    assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), expected);
    let mut short_scalar = [0u8; 32];
    short_scalar[1..].copy_from_slice(&[0x22; 31]);
    let short = pkcs8(
        &ec_algorithm(&p256_oid),
        &sec1(&short_scalar[1..], false),
        &[],
    );
    let full =
        agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &short_scalar).unwrap();
    let full: Pkcs8V1Der<'_> = full.as_der().unwrap();
    assert_eq!(canonical_pkcs8(&short).unwrap().as_slice(), full.as_ref());

    // RSA without NULL parameters and with attributes.
    let mut reader = der::Reader::new(rsa_key());
    let mut info = der::Reader::new(reader.read(der::SEQUENCE).unwrap());
    info.read(der::INTEGER).unwrap();
    info.read(der::SEQUENCE).unwrap();
    let pkcs1 = info.read(der::OCTET_STRING).unwrap();
    let bare = der::tlv(
        der::SEQUENCE,
        &[&der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION])],
    );
    let odd = pkcs8(&bare, pkcs1, &attributes);
    assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), rsa_key());

    // Through a whole PFX, too.
    let odd = pkcs8(&ec_algorithm(&[]), &sec1(&p256_scalar(), true), &attributes);
    let leaf = issue(&canonical_p256(), KeyKind::EcP256, None);
    let pfx = build_pfx(Some(&odd), &[&leaf[0]], "");
    let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
    let expected = [
        pem_block("PRIVATE KEY", &expected),
        pem_block("CERTIFICATE", &leaf[0]),
    ];
    assert_eq!(text(&main), expected.concat());
}

#[test]
fn hostile_private_keys_are_errors() {
    let p224 = der::tlv(
        der::SEQUENCE,
        &[
            &der::uint(&[]),
            &der::tlv(
                der::SEQUENCE,
                &[
                    &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
                    &der::tlv(der::OID, &[&[0x2b, 0x81, 0x04, 0x00, 0x21]]),
                ],
            ),
            &der::tlv(
                der::OCTET_STRING,
                &[&der::tlv(
                    der::SEQUENCE,
                    &[&der::uint(&[1]), &der::tlv(der::OCTET_STRING, &[&[1; 28]])],
                )],
            ),
        ],
    );
    assert!(matches!(
        canonical_pkcs8(&p224),
        Err(ContentError::UnsupportedPrivateKey(_))
    ));
    let ed25519 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec();
    assert!(matches!(
        canonical_pkcs8(&ed25519),
        Err(ContentError::UnsupportedPrivateKey(_))
    ));
    // Out-of-range scalars: zero and all ones (above the order).
    for scalar in [[0u8; 32], [0xff; 32]] {
        let mut bad = canonical_p256();
        let at = bad.windows(32).position(|w| w == p256_scalar()).unwrap();
        bad[at..at + 32].copy_from_slice(&scalar);
        assert!(
            matches!(
                canonical_pkcs8(&bad),
                Err(ContentError::InvalidPrivateKey(_))
            ),
            "{scalar:?}"
        );
    }
    // Every truncation of valid keys fails cleanly.
    for key in [rsa_key(), &canonical_p256()[..]] {
        for len in 0..key.len() {
            assert!(canonical_pkcs8(&key[..len]).is_err(), "{len}");
        }
    }
    // Garbage of every kind.
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x80\x00\x00",
        b"\x30\x84\xff\xff\xff\xff",
        b"junk",
    ] {
        assert!(canonical_pkcs8(garbage).is_err());
    }
}
