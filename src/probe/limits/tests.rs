//! Tests of kube-apiserver's limits on plugin answers.

use super::*;

#[test]
fn annotation_keys_must_be_fully_qualified_domain_names() {
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    let name253 = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name253.len(), 253);
    let name254 = format!("{name253}e");
    let valid = [
        "version.azure.akv.io",
        "x-ms-request-id.azure.akv.io",
        "key-version.akv-bridge.io",
        "a.b",
        "1.2",
        "a-b.c-d",
        "a.b.",
        &format!("{label63}.io"),
        &name253,
        &format!("{name253}."),
    ];
    for key in valid {
        assert!(
            validate_annotation_key(key).is_ok(),
            "{key:?} should be valid"
        );
    }
    let invalid = [
        "",
        ".",
        "a.",
        "version",
        "Version.azure.akv.io",
        "a_b.io",
        "-a.io",
        "a-.io",
        "a.-b",
        "a..b",
        ".a.b",
        "a.b..",
        "a b.io",
        "a.b/c",
        "ä.io",
        "a.b\n",
        &format!("{label64}.io"),
        &name254,
    ];
    for key in invalid {
        assert!(
            validate_annotation_key(key).is_err(),
            "{key:?} should be invalid"
        );
    }
}

#[test]
fn annotation_total_size_is_limited_to_32_kib() {
    let key = "big.azure.akv.io".to_owned();
    let at_limit = HashMap::from([(key.clone(), vec![b'x'; ANNOTATIONS_MAX_SIZE - key.len()])]);
    assert_eq!(annotations_size(&at_limit), ANNOTATIONS_MAX_SIZE);
    assert!(validate_annotations(&at_limit).is_empty());
    let over = HashMap::from([(
        key.clone(),
        vec![b'x'; ANNOTATIONS_MAX_SIZE - key.len() + 1],
    )]);
    let problems = validate_annotations(&over);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("32769"), "{problems:?}");
    // Keys count too, across entries.
    let two = HashMap::from([
        ("a.io".to_owned(), vec![0u8; 16 * 1024]),
        ("b.io".to_owned(), vec![0u8; 16 * 1024 - 8]),
    ]);
    assert_eq!(annotations_size(&two), ANNOTATIONS_MAX_SIZE);
    assert!(validate_annotations(&two).is_empty());
}

#[test]
fn key_id_and_ciphertext_limits() {
    assert!(validate_key_id("").is_err());
    assert!(validate_key_id(&"k".repeat(1024)).is_ok());
    assert!(validate_key_id(&"k".repeat(1025)).is_err());
    assert!(validate_ciphertext(&[]).is_err());
    assert!(validate_ciphertext(&[1; 1024]).is_ok());
    assert!(validate_ciphertext(&[1; 1025]).is_err());
}
