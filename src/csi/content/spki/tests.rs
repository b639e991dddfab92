//! Tests of JWK public keys to PEM `PUBLIC KEY`, against aws-lc and x509-parser.

use aws_lc_rs::encoding::{AsDer as _, PublicKeyX509Der};
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, KeyPair as _,
};
use mock_vault::x509::KeyKind;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::csi::content::der::strip_leading_zeros;
use crate::csi::content::fixtures::{ec_key, pem_block, rsa_key, text};
use crate::csi::content::{ContentError, KeyValue, render_key};

fn key_pem(key: &KeyValue) -> Vec<u8> {
    let file = render_key(key).unwrap();
    assert_eq!(file.suffix, None);
    let block = pem::parse(&*file.contents).unwrap();
    assert_eq!(block.tag(), "PUBLIC KEY");
    assert_eq!(
        text(&file.contents),
        pem_block("PUBLIC KEY", block.contents())
    );
    block.into_contents()
}

#[test]
fn rsa_keys_become_the_same_spki_as_aws_lc() {
    let pair = RsaKeyPair::from_pkcs8(rsa_key()).unwrap();
    let public = pair.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    let expected: PublicKeyX509Der<'_> = public.as_der().unwrap();
    for kty in ["RSA", "RSA-HSM"] {
        let key = KeyValue {
            kty: kty.into(),
            n: Some(n.clone()),
            e: Some(e.clone()),
            ..Default::default()
        };
        let spki = key_pem(&key);
        assert_eq!(spki, expected.as_ref());
        let (rest, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert!(rest.is_empty());
        let PublicKey::RSA(rsa) = info.parsed().unwrap() else {
            panic!("not RSA")
        };
        assert_eq!(strip_leading_zeros(rsa.modulus), n);
        assert_eq!(rsa.try_exponent().unwrap(), 65537);
    }
    // Leading zeros in the JWK do not change the result.
    let padded = KeyValue {
        kty: "RSA".into(),
        n: Some([&[0, 0][..], &n].concat()),
        e: Some([&[0][..], &e].concat()),
        ..Default::default()
    };
    assert_eq!(key_pem(&padded), expected.as_ref());
}

#[test]
fn ec_keys_become_the_same_spki_as_aws_lc() {
    for (kind, crv, len) in [
        (KeyKind::EcP256, "P-256", 32),
        (KeyKind::EcP384, "P-384", 48),
        (KeyKind::EcP521, "P-521", 66),
    ] {
        let alg = match kind {
            KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyKind::EcP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            _ => &ECDSA_P521_SHA512_ASN1_SIGNING,
        };
        let pair = EcdsaKeyPair::from_pkcs8(alg, &ec_key(kind)).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let expected: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
        let (x, y) = point[1..].split_at(len);
        for kty in ["EC", "EC-HSM"] {
            let key = KeyValue {
                kty: kty.into(),
                crv: Some(crv.into()),
                x: Some(strip_leading_zeros(x).to_vec()),
                y: Some([&[0][..], y].concat()),
                ..Default::default()
            };
            let spki = key_pem(&key);
            assert_eq!(spki, expected.as_ref(), "{crv}");
            let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
            let PublicKey::EC(ec) = info.parsed().unwrap() else {
                panic!("not EC")
            };
            assert_eq!(ec.data(), point.as_slice());
        }
    }
}

#[test]
fn unusable_keys_are_errors() {
    let rsa = |n: Option<Vec<u8>>, e: Option<Vec<u8>>| KeyValue {
        kty: "RSA".into(),
        n,
        e,
        ..Default::default()
    };
    let ec = |crv: Option<&str>, x: Vec<u8>, y: Vec<u8>| KeyValue {
        kty: "EC".into(),
        crv: crv.map(Into::into),
        x: Some(x),
        y: Some(y),
        ..Default::default()
    };
    let e = Some(vec![1, 0, 1]);
    let cases = [
        (
            KeyValue {
                kty: "oct".into(),
                ..Default::default()
            },
            "UnsupportedKeyType",
        ),
        (
            KeyValue {
                kty: "oct-HSM".into(),
                ..Default::default()
            },
            "UnsupportedKeyType",
        ),
        (rsa(None, e.clone()), "MissingKeyParameter"),
        (rsa(Some(vec![]), e.clone()), "InvalidKeyParameter"),
        (rsa(Some(vec![0, 0]), e.clone()), "InvalidKeyParameter"),
        (rsa(Some(vec![0xc5; 256]), None), "MissingKeyParameter"),
        (
            rsa(Some(vec![0xc5; 256]), Some(vec![])),
            "InvalidKeyParameter",
        ),
        (
            rsa(Some(vec![0xc5; 256]), Some(vec![0x80, 0, 0, 0, 0, 0, 0, 1])),
            "InvalidKeyParameter",
        ),
        (
            rsa(Some(vec![0xc5; 256]), Some(vec![1; 9])),
            "InvalidKeyParameter",
        ),
        (ec(None, vec![1], vec![1]), "MissingKeyParameter"),
        (ec(Some("P-256K"), vec![1], vec![1]), "UnsupportedCurve"),
        (ec(Some("p-256"), vec![1], vec![1]), "UnsupportedCurve"),
        (ec(Some("P-256"), vec![1], vec![1]), "InvalidEcPoint"),
        (ec(Some("P-256"), vec![], vec![]), "InvalidEcPoint"),
        (
            ec(Some("P-256"), vec![1; 33], vec![1; 32]),
            "InvalidEcPoint",
        ),
        (
            ec(Some("P-384"), vec![0xff; 48], vec![0xff; 48]),
            "InvalidEcPoint",
        ),
    ];
    for (key, variant) in cases {
        let err = render_key(&key).unwrap_err();
        assert!(format!("{err:?}").starts_with(variant), "{key:?}: {err:?}");
    }
    let no_x = KeyValue {
        x: None,
        ..ec(Some("P-256"), vec![], vec![])
    };
    assert!(matches!(
        render_key(&no_x),
        Err(ContentError::MissingKeyParameter("x"))
    ));
}
