//! Tests of certificate chain ordering, on minimal certificates built with chosen key
//! identifiers.

use std::sync::OnceLock;

use aws_lc_rs::encoding::{AsDer as _, PublicKeyX509Der};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

use super::order_chain;
use crate::csi::content::ContentError;
use crate::csi::content::der;
use crate::csi::content::fixtures::canonical_p256;

/// A minimal certificate with the given key identifiers (x509-parser does not check the
/// signature).
fn fake_cert(cn: &str, ski: Option<&[u8]>, aki: Option<&[u8]>) -> Vec<u8> {
    static SPKI: OnceLock<Vec<u8>> = OnceLock::new();
    let spki = SPKI.get_or_init(|| {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &canonical_p256()).unwrap();
        let der: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
        der.as_ref().to_vec()
    });
    let sig_alg = der::tlv(
        der::SEQUENCE,
        &[&der::tlv(
            der::OID,
            &[&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]],
        )],
    );
    let name = der::tlv(
        der::SEQUENCE,
        &[&der::tlv(
            0x31,
            &[&der::tlv(
                der::SEQUENCE,
                &[
                    &der::tlv(der::OID, &[&[0x55, 0x04, 0x03]]),
                    &der::tlv(0x0c, &[cn.as_bytes()]),
                ],
            )],
        )],
    );
    let validity = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(0x17, &[b"250101000000Z"]),
            &der::tlv(0x17, &[b"350101000000Z"]),
        ],
    );
    let mut extensions = Vec::new();
    if let Some(ski) = ski {
        extensions.push(der::tlv(
            der::SEQUENCE,
            &[
                &der::tlv(der::OID, &[&[0x55, 0x1d, 0x0e]]),
                &der::tlv(der::OCTET_STRING, &[&der::tlv(der::OCTET_STRING, &[ski])]),
            ],
        ));
    }
    if let Some(aki) = aki {
        extensions.push(der::tlv(
            der::SEQUENCE,
            &[
                &der::tlv(der::OID, &[&[0x55, 0x1d, 0x23]]),
                &der::tlv(
                    der::OCTET_STRING,
                    &[&der::tlv(der::SEQUENCE, &[&der::tlv(0x80, &[aki])])],
                ),
            ],
        ));
    }
    let ext_parts: Vec<&[u8]> = extensions.iter().map(|e| e.as_slice()).collect();
    let extensions = der::tlv(0xa3, &[&der::tlv(der::SEQUENCE, &ext_parts)]);
    let tbs = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::CONTEXT_0, &[&der::uint(&[2])]),
            &der::uint(cn.as_bytes()),
            &sig_alg,
            &name,
            &validity,
            &name,
            spki,
            &extensions,
        ],
    );
    der::tlv(
        der::SEQUENCE,
        &[
            &tbs,
            &sig_alg,
            &der::tlv(der::BIT_STRING, &[&[0, 0x30, 0x00]]),
        ],
    )
    .to_vec()
}

fn names(chain: &[&[u8]], all: &[(&str, &Vec<u8>)]) -> Vec<String> {
    chain
        .iter()
        .map(|der| {
            all.iter()
                .find(|(_, c)| c.as_slice() == *der)
                .map(|(n, _)| (*n).to_owned())
                .unwrap()
        })
        .collect()
}

#[test]
fn chain_ordering_follows_go_fetch_cert_chains() {
    let root = fake_cert("root", Some(b"R"), None);
    let inter = fake_cert("inter", Some(b"I"), Some(b"R"));
    let leaf = fake_cert("leaf", Some(b"L"), Some(b"I"));
    let other = fake_cert("other", Some(b"O"), None);
    let bare_a = fake_cert("bare-a", None, None);
    let bare_b = fake_cert("bare-b", None, None);
    let all = [
        ("root", &root),
        ("inter", &inter),
        ("leaf", &leaf),
        ("other", &other),
        ("bare-a", &bare_a),
        ("bare-b", &bare_b),
    ];
    let order = |certs: &[&Vec<u8>]| {
        let certs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        order_chain(&certs).map(|chain| names(&chain, &all))
    };
    assert_eq!(
        order(&[&root, &leaf, &inter]).unwrap(),
        ["leaf", "inter", "root"]
    );
    // A chain that does not take in every certificate keeps the stored order (Go
    // provider v1.7.0+): an unrelated certificate, a missing intermediate, or
    // certificates without identifiers.
    assert_eq!(
        order(&[&leaf, &root, &other, &inter]).unwrap(),
        ["leaf", "root", "other", "inter"]
    );
    assert_eq!(
        order(&[&other, &leaf, &inter, &root]).unwrap(),
        ["other", "leaf", "inter", "root"]
    );
    assert_eq!(order(&[&leaf, &root]).unwrap(), ["leaf", "root"]);
    assert_eq!(order(&[&root, &leaf]).unwrap(), ["root", "leaf"]);
    assert_eq!(order(&[&bare_a, &bare_b]).unwrap(), ["bare-a", "bare-b"]);
    assert_eq!(order(&[&bare_b, &bare_a]).unwrap(), ["bare-b", "bare-a"]);
    // One certificate is a complete chain.
    assert_eq!(order(&[&other]).unwrap(), ["other"]);

    // Loops.
    let x = fake_cert("x", Some(b"1"), Some(b"2"));
    let y = fake_cert("y", Some(b"2"), Some(b"1"));
    let into_loop = fake_cert("into-loop", None, Some(b"1"));
    assert!(matches!(
        order(&[&x, &y]),
        Err(ContentError::NoLeafCertificate)
    ));
    assert!(matches!(
        order(&[&into_loop, &x, &y]),
        Err(ContentError::ChainCycle)
    ));
    assert!(matches!(order(&[]), Err(ContentError::NoLeafCertificate)));

    let junk = b"junk".to_vec();
    assert!(matches!(
        order(&[&root, &junk]),
        Err(ContentError::InvalidCertificate { index: 1, .. })
    ));
    let trailing = [root.as_slice(), b"\x00"].concat();
    assert!(matches!(
        order(&[&trailing]),
        Err(ContentError::InvalidCertificate { index: 0, .. })
    ));
}
