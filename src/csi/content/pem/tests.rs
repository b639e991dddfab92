//! Tests of the PEM codec against Go's `encoding/pem` and an independent encoder.

use std::collections::BTreeMap;

use super::{go_pem_decode, go_pem_encode, go_trim_space, split_cert_and_key};
use crate::csi::content::fixtures::{crlf_pem, pem_block, rsa_chain, rsa_key, text};

/// Type, headers and bytes of a decoded block.
type Decoded = (String, BTreeMap<Vec<u8>, Vec<u8>>, Vec<u8>);

fn decode_all(text: &str) -> Vec<Decoded> {
    let mut rest = text.as_bytes();
    let mut out = Vec::new();
    while let Some((block, next)) = go_pem_decode(rest) {
        assert!(next.len() < rest.len());
        out.push((
            String::from_utf8(block.kind).unwrap(),
            block.headers,
            block.bytes.to_vec(),
        ));
        rest = next;
    }
    out
}

#[test]
fn pem_decoding_follows_go_encoding_pem() {
    let kinds = |text: &str| -> Vec<String> { decode_all(text).into_iter().map(|b| b.0).collect() };
    let block =
        |kind: &str, body: &str| format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n");

    // Text around and between blocks is skipped; CRLF and trailing blanks are fine.
    let input = format!(
        "junk\n{}middle\r\n-----BEGIN B-----  \r\nAAAA\r\n-----END B-----\t\r\n",
        block("A", "AAAA")
    );
    let blocks = decode_all(&input);
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0].0.as_str(), blocks[0].2.as_slice()),
        ("A", &[0u8, 0, 0][..])
    );
    assert_eq!(blocks[1].0, "B");
    // BEGIN must start a line.
    assert!(kinds(&format!("x{}", block("A", "AAAA"))).is_empty());
    // A block with a defect (wrong END type, bad base64, missing padding, text after
    // END) is skipped and the search goes on after its END line.
    for broken in [
        "-----BEGIN A-----\nAAAA\n-----END X-----\n".to_owned(),
        block("A", "!!!!"),
        block("A", "AAA"),
        "-----BEGIN A-----\nAAAA\n-----END A----- x\n".to_owned(),
    ] {
        assert_eq!(
            kinds(&format!("{broken}{}", block("B", "AAAA"))),
            ["B"],
            "{broken:?}"
        );
    }
    // No END, or nothing after the type line: nothing.
    assert!(kinds("-----BEGIN A-----\nAAAA\n").is_empty());
    assert!(kinds("-----BEGIN A-----").is_empty());
    assert!(kinds("").is_empty());
    // The last BEGIN before the first END wins.
    assert_eq!(
        kinds(&format!("-----BEGIN X-----\n{}", block("A", "AAAA"))),
        ["A"]
    );
    // Empty block; spaces inside the base64.
    let empty = decode_all("-----BEGIN E-----\n-----END E-----\n");
    assert_eq!((empty[0].0.as_str(), empty[0].2.len()), ("E", 0));
    assert_eq!(
        decode_all(&block("S", "AA AA\tAA==")).remove(0).2,
        [0, 0, 0, 0]
    );

    // Headers: parsed, trimmed, written back with Proc-Type first and the rest sorted.
    let with_headers = "-----BEGIN RSA PRIVATE KEY-----\nzeta:  last \nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let (kind, headers, bytes) = decode_all(with_headers).remove(0);
    assert_eq!(headers.len(), 3);
    assert_eq!(
        headers.get(&b"zeta"[..]).map(Vec::as_slice),
        Some(&b"last"[..])
    );
    let encoded = go_pem_encode(kind.as_bytes(), &headers, &bytes);
    assert_eq!(
        text(&encoded),
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\nzeta: last\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
    );
    // A header block that runs into the END line is not a block.
    assert!(kinds("-----BEGIN A-----\nk: v\n-----END A-----\n").is_empty());
    // Unicode white space is trimmed from headers like Go's bytes.TrimSpace.
    assert_eq!(go_trim_space("\u{a0} k \u{2003}".as_bytes()), b"k");
    assert_eq!(go_trim_space(b"\x0b\x0ck\x85"), b"k\x85");
}

#[test]
fn pem_encoding_matches_go_for_every_length() {
    assert_eq!(
        text(&go_pem_encode(b"X", &BTreeMap::new(), &[])),
        "-----BEGIN X-----\n-----END X-----\n"
    );
    for len in 1..200 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let ours = go_pem_encode(b"CERTIFICATE", &BTreeMap::new(), &bytes);
        assert_eq!(text(&ours), pem_block("CERTIFICATE", &bytes), "{len}");
    }
}

#[test]
fn prefixes_of_pem_text_never_panic() {
    let [leaf, intermediate, _] = rsa_chain() else {
        panic!("expected three certificates")
    };
    let bundle = [
        crlf_pem("CERTIFICATE", leaf),
        pem_block("PRIVATE KEY", rsa_key()),
        pem_block("CERTIFICATE", intermediate),
    ]
    .concat();
    for len in 0..=bundle.len() {
        let (certs, keys) = split_cert_and_key(&bundle.as_bytes()[..len]);
        assert!(certs.len() + keys.len() <= 2 * len, "{len}");
    }
}
