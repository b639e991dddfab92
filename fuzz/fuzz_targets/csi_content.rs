//! What the provider turns Key Vault's answers into files: PKCS#12 to PEM (key, chain
//! ordering), PEM splitting into `.crt`/`.key`, objectEncoding (base64, hex), objectJsonKey
//! and objectYamlKey paths, and a key's JWK to a PEM public key.
//!
//! Input: one mode byte, one flags byte, then the payload.

#![no_main]

use akv_bridge::fuzzing::SecretString;
use akv_bridge::fuzzing::csi_content::{
    self as content, CertValue, Document, FieldSelector, KeyValue, ObjectEncoding, ObjectFormat,
    ObjectOptions, PEM_CONTENT_TYPE, PFX_CONTENT_TYPE, ProviderOptions, SecretValue, VaultObject,
};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, flags, payload @ ..] = data else {
        return;
    };
    let provider = ProviderOptions {
        construct_pem_chain: flags & 1 != 0,
        write_cert_and_key_in_separate_files: flags & 2 != 0,
    };
    let options = ObjectOptions {
        format: if flags & 4 != 0 {
            ObjectFormat::Pfx
        } else {
            ObjectFormat::Pem
        },
        encoding: match (flags >> 3) & 3 {
            1 => ObjectEncoding::Base64,
            2 => ObjectEncoding::Hex,
            _ => ObjectEncoding::Utf8,
        },
        // A key, or a path through lists and mappings, in JSON or YAML.
        field: (flags & 0x20 != 0).then(|| FieldSelector {
            document: if flags & 0x40 != 0 {
                Document::Yaml
            } else {
                Document::Json
            },
            path: if flags & 0x80 != 0 { "a[0].b" } else { "k" }.to_owned(),
        }),
    };
    let secret = |value: String, content_type: Option<&str>, backs_certificate| {
        VaultObject::Secret(SecretValue {
            value: SecretString::from(value),
            content_type: content_type.map(str::to_owned),
            backs_certificate,
        })
    };
    let object = match mode % 5 {
        // A PFX as Key Vault stores it: base64 of the DER archive.
        0 => secret(
            base64::engine::general_purpose::STANDARD.encode(payload),
            Some(PFX_CONTENT_TYPE),
            true,
        ),
        // A PEM certificate secret (split into .crt/.key when asked).
        1 => secret(
            String::from_utf8_lossy(payload).into_owned(),
            Some(PEM_CONTENT_TYPE),
            true,
        ),
        // A plain secret: encodings and the JSON key.
        2 => secret(String::from_utf8_lossy(payload).into_owned(), None, false),
        // A key's JWK: the payload split into n|e or x|y on 0xff bytes.
        3 => {
            let mut parts = payload.split(|b| *b == 0xff).map(<[u8]>::to_vec);
            let (a, b) = (parts.next(), parts.next());
            let kty = ["RSA", "RSA-HSM", "EC", "EC-HSM", "oct"][usize::from(flags % 5)];
            let crv = ["P-256", "P-384", "P-521", "P-256K"][usize::from(flags >> 6)];
            VaultObject::Key(if kty.starts_with("RSA") {
                KeyValue {
                    kty: kty.into(),
                    n: a,
                    e: b,
                    ..KeyValue::default()
                }
            } else {
                KeyValue {
                    kty: kty.into(),
                    crv: Some(crv.into()),
                    x: a,
                    y: b,
                    ..KeyValue::default()
                }
            })
        }
        _ => VaultObject::Cert(CertValue {
            der: payload.to_vec(),
        }),
    };
    let _ = content::render(&object, &options, &provider);
});
