//! Tests of the render API: which files an object becomes, in which order, and that
//! nothing secret shows in `Debug`.

use super::der;
use super::fixtures::{
    MARKER, build_pfx, cert_secret, crlf_pem, only, pem_block, pfx_secret, plain_secret, rsa_chain,
    rsa_key, secret_files, text,
};
use super::{
    CERT_SUFFIX, CertValue, KEY_SUFFIX, ObjectEncoding, ObjectFormat, ObjectOptions,
    PEM_CONTENT_TYPE, PFX_CONTENT_TYPE, ProviderOptions, SecretValue, VaultObject, render,
    render_cert, render_secret,
};

#[test]
fn format_pfx_writes_the_secret_text_and_base64_encoding_makes_it_binary() {
    let pfx = build_pfx(Some(rsa_key()), &[&rsa_chain()[0]], "");
    let secret = pfx_secret(&pfx);
    let as_text = ObjectOptions {
        format: ObjectFormat::Pfx,
        ..Default::default()
    };
    assert_eq!(
        only(secret_files(&secret, &as_text)),
        secret.value.expose_secret().as_bytes()
    );
    let as_binary = ObjectOptions {
        format: ObjectFormat::Pfx,
        encoding: ObjectEncoding::Base64,
        ..Default::default()
    };
    assert_eq!(only(secret_files(&secret, &as_binary)), pfx);
}

#[test]
fn separate_files_come_first_and_split_key_from_certificates() {
    let [leaf, intermediate, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let pfx = build_pfx(Some(rsa_key()), &[intermediate, root, leaf], "");
    let provider = ProviderOptions {
        write_cert_and_key_in_separate_files: true,
        ..Default::default()
    };
    let files = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider).unwrap();
    let suffixes: Vec<_> = files.iter().map(|f| f.suffix).collect();
    assert_eq!(suffixes, [Some(CERT_SUFFIX), Some(KEY_SUFFIX), None]);
    let chain = [leaf, intermediate, root]
        .map(|c| pem_block("CERTIFICATE", c))
        .concat();
    assert_eq!(text(&files[0].contents), chain);
    assert_eq!(
        text(&files[1].contents),
        pem_block("PRIVATE KEY", rsa_key())
    );
    assert_eq!(
        [files[1].contents.as_slice(), &files[0].contents].concat(),
        files[2].contents.as_slice()
    );

    // A PFX kept as PFX has no PEM blocks: both extra files are empty, as in Go.
    let as_binary = ObjectOptions {
        format: ObjectFormat::Pfx,
        encoding: ObjectEncoding::Base64,
        ..Default::default()
    };
    let files = render_secret(&pfx_secret(&pfx), &as_binary, &provider).unwrap();
    assert_eq!(files.len(), 3);
    assert!(files[0].contents.is_empty() && files[1].contents.is_empty());
    assert_eq!(files[2].contents.as_slice(), pfx);

    // Plain secrets never get extra files.
    let files = render_secret(&plain_secret("x"), &ObjectOptions::default(), &provider);
    assert_eq!(only(files.unwrap()), b"x");
}

#[test]
fn pem_secrets_pass_through_unchanged_and_split_like_go() {
    let [leaf, _, root] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let ec_params = der::tlv(der::OID, &[der::OID_P256]);
    let bundle = [
        "Bag Attributes: friendlyName\r\n".to_owned(),
        crlf_pem("CERTIFICATE", root),
        crlf_pem("PRIVATE KEY", rsa_key()),
        "some text between blocks\n".to_owned(),
        crlf_pem("EC PARAMETERS", &ec_params),
        crlf_pem("CERTIFICATE", leaf),
    ]
    .concat();
    let secret = cert_secret(bundle.clone(), PEM_CONTENT_TYPE);
    // Never reordered, even with construct_pem_chain.
    assert_eq!(
        only(secret_files(&secret, &ObjectOptions::default())),
        bundle.as_bytes()
    );

    let provider = ProviderOptions {
        write_cert_and_key_in_separate_files: true,
        ..Default::default()
    };
    let files = render_secret(&secret, &ObjectOptions::default(), &provider).unwrap();
    assert_eq!(
        text(&files[0].contents),
        [
            pem_block("CERTIFICATE", root),
            pem_block("CERTIFICATE", leaf)
        ]
        .concat()
    );
    assert_eq!(
        text(&files[1].contents),
        [
            pem_block("PRIVATE KEY", rsa_key()),
            pem_block("EC PARAMETERS", &ec_params)
        ]
        .concat()
    );
    assert_eq!(files[2].contents.as_slice(), bundle.as_bytes());
}

#[test]
fn plain_secrets_are_written_as_is() {
    let value = "pässwörd\n with spaces ";
    assert_eq!(
        only(secret_files(
            &plain_secret(value),
            &ObjectOptions::default()
        )),
        value.as_bytes()
    );
    // A PKCS#12 content type without kid is just a secret.
    let secret = SecretValue {
        backs_certificate: false,
        ..cert_secret("not even base64".into(), PFX_CONTENT_TYPE)
    };
    assert_eq!(
        only(secret_files(&secret, &ObjectOptions::default())),
        b"not even base64"
    );
}

#[test]
fn cert_objects_are_the_leaf_as_pem() {
    let leaf = &rsa_chain()[0];
    let file = render_cert(&CertValue { der: leaf.clone() });
    assert_eq!(file.suffix, None);
    assert_eq!(text(&file.contents), pem_block("CERTIFICATE", leaf));
    assert_eq!(
        pem::parse(&*file.contents).unwrap().contents(),
        leaf.as_slice()
    );
    let via_render = render(
        &VaultObject::Cert(CertValue { der: leaf.clone() }),
        &ObjectOptions {
            encoding: ObjectEncoding::Hex,
            ..Default::default()
        },
        &ProviderOptions::default(),
    );
    assert_eq!(only(via_render.unwrap()), file.contents.as_slice());
}

#[test]
fn debug_output_hides_secret_values() {
    let secret = plain_secret(MARKER);
    let shown = format!("{secret:?}");
    assert!(
        !shown.contains(MARKER) && shown.contains("redacted"),
        "{shown}"
    );
    let files = secret_files(&secret, &ObjectOptions::default());
    let shown = format!("{files:?}");
    assert!(
        !shown.contains(MARKER) && shown.contains(&MARKER.len().to_string()),
        "{shown}"
    );
    let object = VaultObject::Secret(plain_secret(MARKER));
    assert!(!format!("{object:?}").contains(MARKER));
}
