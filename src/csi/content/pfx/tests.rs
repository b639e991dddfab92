//! Tests of PKCS#12 to PEM: key and chain order, hostile files, files without a key or
//! without certificates.

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mock_vault::x509::{self, KeyKind};

use crate::csi::content::fixtures::{
    MARKER, build_pfx, cert_secret, only, pem_block, pfx_secret, rsa_chain, rsa_key, secret_files,
    text, with_chain,
};
use crate::csi::content::{
    ContentError, ObjectOptions, PFX_CONTENT_TYPE, ProviderOptions, SecretValue, render_secret,
};

#[test]
fn pfx_becomes_pkcs8_key_then_chain_leaf_to_root_even_when_shuffled() {
    let [leaf, intermediate, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let pfx = build_pfx(Some(rsa_key()), &[root, leaf, intermediate], "");
    let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));

    let expected = [
        pem_block("PRIVATE KEY", rsa_key()),
        pem_block("CERTIFICATE", leaf),
        pem_block("CERTIFICATE", intermediate),
        pem_block("CERTIFICATE", root),
    ]
    .concat();
    assert_eq!(text(&main), expected);
    assert!(text(&main).ends_with("-----END CERTIFICATE-----\n"));

    let parsed = x509::parse_pem_bundle(text(&main)).unwrap();
    assert_eq!(parsed.key_pkcs8.as_slice(), rsa_key());
    assert_eq!(parsed.kind, KeyKind::Rsa);
    assert_eq!(
        parsed.chain,
        [leaf.clone(), intermediate.clone(), root.clone()]
    );
}

#[test]
fn without_construct_pem_chain_certificates_keep_the_pfx_order() {
    let [leaf, intermediate, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let pfx = build_pfx(Some(rsa_key()), &[root, leaf, intermediate], "");
    let provider = with_chain(&ProviderOptions::default(), false);
    let files = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider);
    let expected = [
        pem_block("PRIVATE KEY", rsa_key()),
        pem_block("CERTIFICATE", root),
        pem_block("CERTIFICATE", leaf),
        pem_block("CERTIFICATE", intermediate),
    ]
    .concat();
    assert_eq!(text(&only(files.unwrap())), expected);
}

/// Go provider v1.7.0+ (its PR #1701): when the certificates cannot all be linked into one
/// chain, they are written in the PFX's order, none dropped.
#[test]
fn certificates_that_cannot_all_be_linked_keep_the_pfx_order() {
    let [leaf, intermediate, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let other_ca = x509::TestCa::generate("Unrelated CA").unwrap();
    let other_root = other_ca.chain_der().pop().unwrap();
    let cases: [&[&Vec<u8>]; 4] = [
        // The intermediate is missing.
        &[root, leaf],
        &[leaf, root],
        // An unrelated certificate beside a complete chain.
        &[root, leaf, &other_root, intermediate],
        &[&other_root, leaf, intermediate, root],
    ];
    for certs in cases {
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        let pfx = build_pfx(Some(rsa_key()), &ders, "");
        let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
        let mut expected = vec![pem_block("PRIVATE KEY", rsa_key())];
        expected.extend(certs.iter().map(|c| pem_block("CERTIFICATE", c)));
        assert_eq!(
            text(&main),
            expected.concat(),
            "{} certificates",
            certs.len()
        );
    }
}

#[test]
fn hostile_pfx_secrets_are_errors_not_panics() {
    let leaf = &rsa_chain()[0];
    let render_default = |secret: &SecretValue| {
        render_secret(
            secret,
            &ObjectOptions::default(),
            &ProviderOptions::default(),
        )
    };
    let cases = [
        (
            cert_secret(format!("{MARKER}!!"), PFX_CONTENT_TYPE),
            "PfxNotBase64",
        ),
        (
            cert_secret(STANDARD.encode(MARKER), PFX_CONTENT_TYPE),
            "PfxMalformed",
        ),
        (cert_secret(String::new(), PFX_CONTENT_TYPE), "PfxMalformed"),
        (
            pfx_secret(&build_pfx(Some(rsa_key()), &[leaf], "pw")),
            "PfxPassword",
        ),
        (
            pfx_secret(&build_pfx(
                Some(
                    Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                        .unwrap()
                        .as_ref(),
                ),
                &[leaf],
                "",
            )),
            "UnsupportedPrivateKey",
        ),
        (
            cert_secret(MARKER.into(), "text/plain"),
            "UnknownContentType",
        ),
        (
            SecretValue {
                content_type: None,
                ..cert_secret(MARKER.into(), PFX_CONTENT_TYPE)
            },
            "MissingContentType",
        ),
    ];
    for (secret, variant) in cases {
        let err = render_default(&secret).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(format!("{err:?}").starts_with(variant), "{shown}");
        assert!(!shown.contains(MARKER), "{shown}");
    }
    // Every truncation of a PFX fails cleanly.
    let pfx = build_pfx(Some(rsa_key()), &[leaf], "");
    for len in (0..pfx.len()).step_by(7) {
        assert!(render_default(&pfx_secret(&pfx[..len])).is_err(), "{len}");
    }
}

#[test]
fn pfx_without_key_or_without_certificates_converts_like_go() {
    let [leaf, intermediate, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    // Certificates only: no key block.
    let pfx = build_pfx(None, &[root, leaf, intermediate], "");
    let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
    let chain = [leaf, intermediate, root]
        .map(|c| pem_block("CERTIFICATE", c))
        .concat();
    assert_eq!(text(&main), chain);
    // A key only: no leaf to start a chain from; without chain construction, the key.
    let pfx = build_pfx(Some(rsa_key()), &[], "");
    assert!(matches!(
        render_secret(
            &pfx_secret(&pfx),
            &ObjectOptions::default(),
            &ProviderOptions::default()
        ),
        Err(ContentError::NoLeafCertificate)
    ));
    let provider = with_chain(&ProviderOptions::default(), false);
    let main = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider);
    assert_eq!(
        text(&only(main.unwrap())),
        pem_block("PRIVATE KEY", rsa_key())
    );
}
