//! Tests of `objectEncoding` decoding and of `objectJsonKey` as `render` applies it (paths
//! and YAML: `field.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::csi::content::fixtures::{
    MARKER, cert_secret, only, pem_block, plain_secret, rsa_chain,
};
use crate::csi::content::{
    CertValue, ContentError, FieldSelector, ObjectEncoding, ObjectOptions, PEM_CONTENT_TYPE,
    ProviderOptions, VaultObject, render, render_secret,
};
use crate::csi::params::field_path::Document;

fn json_field(path: &str) -> Option<FieldSelector> {
    Some(FieldSelector {
        document: Document::Json,
        path: path.to_owned(),
    })
}

fn decoded(value: &str, encoding: ObjectEncoding) -> Result<Vec<u8>, ContentError> {
    let options = ObjectOptions {
        encoding,
        ..Default::default()
    };
    render_secret(&plain_secret(value), &options, &ProviderOptions::default()).map(only)
}

#[test]
fn base64_and_hex_encodings_decode_the_value() {
    let bytes = b"\x00\xffbinary secret\x80".to_vec();
    let b64 = STANDARD.encode(&bytes);
    for input in [
        b64.clone(),
        b64.trim_end_matches('=').to_owned(),
        format!(" {}\r\n{}\n", &b64[..8], &b64[8..]),
    ] {
        assert_eq!(
            decoded(&input, ObjectEncoding::Base64).unwrap(),
            bytes,
            "{input:?}"
        );
    }
    // Go accepts non-zero trailing bits ("QR==" decodes like "QQ==").
    assert_eq!(decoded("QR==", ObjectEncoding::Base64).unwrap(), b"A");
    // Padding is optional, so partial padding is accepted too.
    assert_eq!(decoded("QQ=", ObjectEncoding::Base64).unwrap(), b"A");
    let hex_text = hex::encode(&bytes);
    for input in [
        hex_text.clone(),
        hex_text.to_uppercase(),
        format!("{}\n {}\n", &hex_text[..6], &hex_text[6..]),
    ] {
        assert_eq!(
            decoded(&input, ObjectEncoding::Hex).unwrap(),
            bytes,
            "{input:?}"
        );
    }
    assert_eq!(decoded("", ObjectEncoding::Hex).unwrap(), b"");
    assert_eq!(decoded("", ObjectEncoding::Base64).unwrap(), b"");
    assert_eq!(
        decoded(MARKER, ObjectEncoding::Utf8).unwrap(),
        MARKER.as_bytes()
    );

    let errors = [
        decoded(&format!("{MARKER}*"), ObjectEncoding::Base64).unwrap_err(),
        decoded("QQ==QQ==", ObjectEncoding::Base64).unwrap_err(),
        decoded("Q", ObjectEncoding::Base64).unwrap_err(),
        decoded(MARKER, ObjectEncoding::Hex).unwrap_err(),
        decoded("abc", ObjectEncoding::Hex).unwrap_err(),
    ];
    assert!(matches!(errors[0], ContentError::InvalidBase64(_)));
    assert!(matches!(errors[1], ContentError::InvalidBase64(_)));
    assert!(matches!(errors[2], ContentError::InvalidBase64(_)));
    assert!(matches!(errors[3], ContentError::InvalidHex(_)));
    assert!(matches!(
        errors[4],
        ContentError::InvalidHex("odd number of hex digits")
    ));
    for e in errors {
        assert!(!e.to_string().contains("cr3t") && !format!("{e:?}").contains("cr3t"));
    }
}

fn json(value: &str, key: &str, encoding: ObjectEncoding) -> Result<Vec<u8>, ContentError> {
    let options = ObjectOptions {
        encoding,
        field: json_field(key),
        ..Default::default()
    };
    render_secret(&plain_secret(value), &options, &ProviderOptions::default()).map(only)
}

#[test]
fn json_key_extracts_one_value() {
    let doc = format!(
        r#"{{"user":"admin","password":"{MARKER}\"\u00e9","port":5432,"ratio":0.5,
               "nested":{{"z":[1,{{"k":"v"}}],"a":null}},"flag":true}}"#
    );
    let utf8 = ObjectEncoding::Utf8;
    assert_eq!(
        json(&doc, "password", utf8).unwrap(),
        format!("{MARKER}\"é").as_bytes()
    );
    assert_eq!(json(&doc, "port", utf8).unwrap(), b"5432");
    assert_eq!(json(&doc, "ratio", utf8).unwrap(), b"0.5");
    assert_eq!(json(&doc, "flag", utf8).unwrap(), b"true");
    assert_eq!(
        json(&doc, "nested", utf8).unwrap(),
        br#"{"a":null,"z":[1,{"k":"v"}]}"#
    );
    // Decoded first.
    let encoded = STANDARD.encode(&doc);
    assert_eq!(
        json(&encoded, "user", ObjectEncoding::Base64).unwrap(),
        b"admin"
    );

    let errors = [
        json(&doc, "missing", utf8).unwrap_err(),
        json(MARKER, "password", utf8).unwrap_err(),
        json(&format!(r#"["{MARKER}"]"#), "password", utf8).unwrap_err(),
        json(&format!(r#"{{"password": "{MARKER}""#), "password", utf8).unwrap_err(),
    ];
    assert!(matches!(&errors[0], ContentError::MissingField { path, .. } if path == "missing"));
    assert!(matches!(&errors[1], ContentError::InvalidJson { key, .. } if key == "password"));
    assert!(matches!(&errors[2], ContentError::FieldMismatch { .. }));
    assert!(matches!(&errors[3], ContentError::InvalidJson { .. }));
    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(MARKER) && !shown.contains("admin"),
            "{shown}"
        );
    }
    assert!(errors[0].to_string().contains("'missing'"));

    // Not for certificates or keys.
    let options = ObjectOptions {
        field: json_field("k"),
        ..Default::default()
    };
    let pem_secret = cert_secret(pem_block("CERTIFICATE", &rsa_chain()[0]), PEM_CONTENT_TYPE);
    assert!(matches!(
        render_secret(&pem_secret, &options, &ProviderOptions::default()),
        Err(ContentError::JsonKeyNotApplicable(_))
    ));
    let cert = VaultObject::Cert(CertValue {
        der: rsa_chain()[0].clone(),
    });
    assert!(matches!(
        render(&cert, &options, &ProviderOptions::default()),
        Err(ContentError::JsonKeyNotApplicable(_))
    ));
}
