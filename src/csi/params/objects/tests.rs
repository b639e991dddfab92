//! Tests of the `objects` document: its shape, its limits and alias expansion.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::csi::params::fixtures::{Check, DB, ids, objects_of, objects_yaml, one, wi_attributes};
use crate::csi::params::{
    MAX_OBJECTS, MAX_OBJECTS_YAML_BYTES, MAX_REPORTED_UNKNOWN_KEYS, ObjectLabel, ParamError,
    ParseOptions, VaultName, parse_mount, parse_mount_with, parse_objects,
};

#[test]
fn objects_document_errors() {
    let vault = VaultName::parse("kv-prod").unwrap();
    for (yaml, check) in [
        (
            "array: []",
            (|e| matches!(e, ParamError::NoObjects)) as Check,
        ),
        ("array:", |e| matches!(e, ParamError::NoObjects)),
        ("{}", |e| matches!(e, ParamError::NoObjects)),
        (
            "arrays:\n  - |\n    objectName: a",
            |e| matches!(e, ParamError::InvalidObjectsYaml { reason } if reason.contains("arrays")),
        ),
        ("array: []\narray: []", |e| {
            matches!(e, ParamError::InvalidObjectsYaml { .. })
        }),
        ("- a", |e| {
            matches!(e, ParamError::InvalidObjectsYaml { .. })
        }),
        ("array: x", |e| {
            matches!(e, ParamError::InvalidObjectsYaml { .. })
        }),
        (
            "array:\n  - objectName: a\n    objectType: secret",
            |e| matches!(e, ParamError::InvalidObjectYaml { reason, .. } if reason.contains("- |")),
        ),
        ("array:\n  -\n", |e| {
            matches!(e, ParamError::InvalidObjectYaml { .. })
        }),
        ("array: [\"\"]", |e| {
            matches!(e, ParamError::InvalidObjectYaml { .. })
        }),
        ("array: [unclosed", |e| {
            matches!(
                e,
                ParamError::InvalidObjectsYaml { .. } | ParamError::InvalidObjectYaml { .. }
            )
        }),
        ("a: 1\n---\nb: 2", |e| {
            matches!(e, ParamError::InvalidObjectsYaml { .. })
        }),
    ] {
        let err = parse_objects(yaml, &vault).unwrap_err();
        assert!(check(&err), "{yaml:?}: {err:?}");
    }
}

/// The Go provider's YAML decoding ignores keys that are not object fields; so do we,
/// reporting the object and the key (never the value), unless `--strict-parameters`.
#[test]
fn unknown_object_keys_are_ignored_and_reported_unless_strict() {
    let entries = [
        "objectName: db-password\nobjectType: secret\nobjectAlais: pw\nsecretHint: s3cr3t-Value",
        "objectType: secret\nfutureField: [a, {b: c}]\nobjectName: api-key\nobjectNotAfter: 2026-01-01",
        "objectName: plain\nobjectType: secret",
    ];
    let attributes = wi_attributes(&objects_yaml(&entries), &[]);
    let p = parse_mount(&attributes, "{}", "420", "/t").unwrap();
    assert_eq!(p.objects.len(), 3);
    assert_eq!(
        p.objects[0].path.as_str(),
        "db-password",
        "the typo changes nothing"
    );
    assert_eq!(p.unknown_keys.count, 4);
    let label = |index, name: &str| {
        Some(ObjectLabel {
            index,
            name: Some(name.to_owned()),
        })
    };
    assert_eq!(
        p.unknown_keys.first,
        [
            (label(0, "db-password"), "objectAlais".to_owned()),
            (label(0, "db-password"), "secretHint".to_owned()),
            // Named even when objectName comes after the key.
            (label(1, "api-key"), "futureField".to_owned()),
            (label(1, "api-key"), "objectNotAfter".to_owned()),
        ]
    );
    // Values are never kept.
    assert!(!format!("{p:?}").contains("s3cr3t-Value"));

    // Known keys are not reported.
    let p = parse_mount(&wi_attributes(&objects_yaml(&[DB]), &[]), "{}", "420", "/t").unwrap();
    assert_eq!(p.unknown_keys.count, 0);
    assert!(p.unknown_keys.first.is_empty());

    // Strict: the first unknown key is an error naming it and the object.
    let strict = ParseOptions {
        strict: true,
        ..ParseOptions::default()
    };
    let err = parse_mount_with(&attributes, "{}", "420", "/t", &strict).unwrap_err();
    assert!(
        matches!(&err, ParamError::UnknownObjectKey { key, object } if key == "objectAlais" && object.index == 0),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t-Value"), "{err}");
    let not_after = wi_attributes(&objects_yaml(&[entries[1]]), &[]);
    let err = parse_mount_with(&not_after, "{}", "420", "/t", &strict).unwrap_err();
    assert!(matches!(err, ParamError::UnknownObjectKey { .. }), "{err}");

    // Many unknown keys: all counted, the first few reported, each shortened.
    let long = "k".repeat(300);
    let mut entry = format!("{DB}\n{long}: 1");
    for i in 0..40 {
        entry.push_str(&format!("\nextra{i}: {i}"));
    }
    let p = parse_mount(
        &wi_attributes(&objects_yaml(&[&entry]), &[]),
        "{}",
        "420",
        "/t",
    )
    .unwrap();
    assert_eq!(p.unknown_keys.count, 41);
    assert_eq!(p.unknown_keys.first.len(), MAX_REPORTED_UNKNOWN_KEYS);
    assert!(p.unknown_keys.first[0].1.chars().count() <= 65);

    // Keys beside `array` are ignored too (Go decodes the document into a struct), and
    // reported for the document itself.
    let yaml = format!("{}version: 2\n", objects_yaml(&[DB]));
    let p = parse_mount(&wi_attributes(&yaml, &[]), "{}", "420", "/t").unwrap();
    assert_eq!(p.unknown_keys.first, [(None, "version".to_owned())]);
    assert!(parse_mount_with(&wi_attributes(&yaml, &[]), "{}", "420", "/t", &strict).is_err());

    // Unknown keys do not lift any other rule: a repeated known key, malformed YAML.
    for bad in [
        "objectName: a\nobjectType: secret\nextra: 1\nobjectName: b",
        "objectName: a\nobjectType: secret\nextra: [unclosed",
    ] {
        let attributes = wi_attributes(&objects_yaml(&[bad]), &[]);
        assert!(
            parse_mount(&attributes, "{}", "420", "/t").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn object_count_and_size_limits() {
    let entries: Vec<String> = (0..MAX_OBJECTS)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    assert_eq!(objects_of(&refs).unwrap().len(), MAX_OBJECTS);
    let entries: Vec<String> = (0..=MAX_OBJECTS)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    assert_eq!(
        objects_of(&refs).unwrap_err(),
        ParamError::TooManyObjects { max: MAX_OBJECTS }
    );

    let big = format!("{DB}\n# {}", "x".repeat(MAX_OBJECTS_YAML_BYTES));
    assert!(matches!(
        objects_of(&[&big]),
        Err(ParamError::TooLarge {
            what: "objects",
            ..
        })
    ));
    let attributes = wi_attributes(&objects_yaml(&[&big]), &[]);
    assert!(matches!(
        parse_mount(&attributes, "{}", "420", "/t"),
        Err(ParamError::TooLarge {
            what: "objects",
            ..
        })
    ));

    // 11 objects with 100 versions each: more than MAX_FILES files.
    let entries: Vec<String> = (0..11)
        .map(|i| format!("objectName: s{i}\nobjectType: secret\nobjectVersionHistory: 100"))
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    assert!(matches!(
        objects_of(&refs),
        Err(ParamError::TooManyFiles { .. })
    ));
}

#[test]
fn yaml_alias_expansion_is_bounded() {
    // One 100 KiB scalar repeated by aliases: far more than the limit once expanded.
    let big = format!(
        "objectName: a\\nobjectType: secret\\n# {}",
        "x".repeat(100 * 1024)
    );
    let mut yaml = format!("array:\n  - &big \"{big}\"\n");
    for _ in 0..200 {
        yaml.push_str("  - *big\n");
    }
    let err = parse_objects(&yaml, &VaultName::parse("kv-prod").unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::TooLarge { .. } | ParamError::TooManyObjects { .. }
        ),
        "{err}"
    );
    // Billion laughs inside one object: refused without expansion.
    let lol = "objectName: a\nobjectType: secret\nobjectAlias: &a [x, x, x]\n";
    assert!(one(lol).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_objects_never_panics(s in any::<String>()) {
        let _ = parse_objects(&s, &VaultName::parse("kv-prod").unwrap());
    }

    #[test]
    fn parse_object_entries_never_panic(
        keys in proptest::collection::vec(
            (
                prop_oneof![
                    Just("objectName"), Just("objectType"), Just("objectVersion"),
                    Just("objectVersionHistory"), Just("objectAlias"), Just("objectFormat"),
                    Just("objectEncoding"), Just("filePermission"), Just("optional"),
                    Just("objectJsonKey"), Just("keyvaultName"),
                ],
                prop_oneof![Just("secret".to_owned()), Just("pfx".to_owned()), "[ -~]{0,12}"],
            ),
            0..8,
        )
    ) {
        let entry: String = keys.iter().map(|(k, v)| format!("{k}: {}\n", serde_json::to_string(v).unwrap())).collect();
        if let Ok(specs) = objects_of(&[&entry, DB]) {
            let all = ids(&specs);
            let unique: BTreeSet<&str> = all.iter().copied().collect();
            prop_assert_eq!(unique.len(), all.len());
        }
    }
}
