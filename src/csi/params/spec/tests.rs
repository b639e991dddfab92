//! Tests of object entries: defaults, every field, Go spellings, errors, ids, labels.

use std::collections::BTreeSet;

use crate::csi::params::field_path::Document;
use crate::csi::params::fixtures::{Check, DB, ids, objects_of, one, paths};
use crate::csi::params::{ObjectEncoding, ObjectFormat, ObjectKind, ParamError, VaultName};

#[test]
fn object_defaults() {
    let spec = one(DB).unwrap();
    assert_eq!(spec.version, None);
    assert_eq!(spec.history, 0);
    assert_eq!(spec.format, ObjectFormat::Pem);
    assert_eq!(spec.encoding, ObjectEncoding::Utf8);
    assert_eq!(spec.mode, None);
    assert!(!spec.optional);
    assert_eq!(spec.field, None);
    assert_eq!(spec.vault, None);
}

#[test]
fn every_object_field() {
    let spec = one(
        "objectName: app-config\nobjectType: SECRET\nobjectVersion: 0123456789abcdef0123456789abcdef\n\
         objectVersionHistory: 3\nobjectAlias: conf/app\nobjectFormat: PEM\nobjectEncoding: Base64\n\
         filePermission: 0600\noptional: true\nkeyvaultName: kv-other",
    )
    .unwrap();
    assert_eq!(spec.kind, ObjectKind::Secret);
    assert_eq!(
        spec.version.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(spec.history, 3);
    // N + 1 files, as the Go provider writes them.
    assert_eq!(
        paths(&spec),
        ["conf/app/0", "conf/app/1", "conf/app/2", "conf/app/3"]
    );
    assert_eq!(spec.encoding, ObjectEncoding::Base64);
    assert_eq!(spec.mode, Some(0o600));
    assert!(spec.optional);
    assert_eq!(spec.vault.as_ref().map(VaultName::as_str), Some("kv-other"));
    assert_eq!(spec.id, "secret/kv-other/app-config");
    assert_eq!(spec.files[2].id, "secret/kv-other/app-config/2");

    let spec = one(
        "objectName: cfg\nobjectType: secret\nobjectJsonKey: ' password '\nobjectEncoding: utf-8",
    )
    .unwrap();
    assert_eq!(
        spec.field.as_ref().map(|f| (f.document, f.path.as_str())),
        Some((Document::Json, "password"))
    );
    assert_eq!(spec.encoding, ObjectEncoding::Utf8);

    // A path; objectJsonKey accepts any text (it is tried as a whole key first), and
    // objectYamlKey must be a path.
    let spec = one("objectName: cfg\nobjectType: secret\nobjectJsonKey: 'db.hosts[0'").unwrap();
    assert_eq!(spec.field.map(|f| f.path), Some("db.hosts[0".to_owned()));
    let spec =
        one("objectName: cfg\nobjectType: secret\nobjectYamlKey: 'db.hosts[0].name'").unwrap();
    assert_eq!(
        spec.field.as_ref().map(|f| (f.document, f.path.as_str())),
        Some((Document::Yaml, "db.hosts[0].name"))
    );
    let err = one("objectName: cfg\nobjectType: secret\nobjectYamlKey: 'db.hosts[0'").unwrap_err();
    assert!(
        err.to_string().contains("objectYamlKey") && err.to_string().contains("expects ']'"),
        "{err}"
    );
    for bad in [
        "objectName: cfg\nobjectType: secret\nobjectJsonKey: a\nobjectYamlKey: b",
        "objectName: cfg\nobjectType: key\nobjectYamlKey: b",
        "objectName: cfg\nobjectType: secret\nobjectEncoding: base64\nobjectYamlKey: b",
    ] {
        assert!(
            matches!(one(bad), Err(ParamError::IncompatibleObjectFields { .. })),
            "{bad}"
        );
    }

    let spec =
        one("objectName: bundle\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64")
            .unwrap();
    assert_eq!(
        (spec.format, spec.encoding),
        (ObjectFormat::Pfx, ObjectEncoding::Base64)
    );
    let spec = one("objectName: blob\nobjectType: secret\nobjectEncoding: HEX").unwrap();
    assert_eq!(spec.encoding, ObjectEncoding::Hex);
    assert_eq!(
        one("objectName: c\nobjectType: Cert").unwrap().kind,
        ObjectKind::Cert
    );
}

#[test]
fn go_compatible_spellings() {
    // Null and empty values, `latest`, history 0 and 1, quoted and unquoted modes, trimming.
    for entry in [
        "objectName: a\nobjectType: secret\nobjectVersion: \"\"",
        "objectName: a\nobjectType: secret\nobjectVersion:",
        "objectName: a\nobjectType: secret\nobjectVersion: ~",
        "objectName: a\nobjectType: secret\nobjectVersion: latest",
        "objectName: a\nobjectType: secret\nobjectVersion: LATEST",
        "objectName: a\nobjectType: secret\nobjectVersionHistory: 0",
        "objectName: a\nobjectType: secret\nobjectVersionHistory: 1",
        "objectName: a\nobjectType: secret\nobjectVersionHistory: \"1\"",
        "objectName: '  a  '\nobjectType: ' secret '\nobjectAlias: \"\"",
    ] {
        let spec = one(entry).unwrap_or_else(|e| panic!("{entry:?}: {e}"));
        assert_eq!(
            (spec.version.as_deref(), spec.history),
            (None, 0),
            "{entry:?}"
        );
        assert_eq!(paths(&spec), ["a"], "{entry:?}");
        assert_eq!(spec.id, "secret/a", "{entry:?}");
    }
    for (text, mode) in [
        ("0600", 0o600),
        ("'0600'", 0o600),
        ("\"0755\"", 0o755),
        ("600", 0o600),
        ("0", 0),
        ("0777", 0o777),
        ("00000644", 0o644),
    ] {
        let spec = one(&format!(
            "objectName: a\nobjectType: secret\nfilePermission: {text}"
        ))
        .unwrap();
        assert_eq!(spec.mode, Some(mode), "{text}");
    }
    let spec = one("objectName: a\nobjectType: secret\nobjectVersionHistory: '+007'").unwrap();
    assert_eq!(spec.history, 7);
    let spec = one("objectName: a\nobjectType: secret\nobjectVersionHistory: 100").unwrap();
    assert_eq!(spec.files.len(), 101, "N + 1 files, as the Go provider");
}

#[test]
fn object_errors() {
    let cases: &[(&str, Check)] = &[
        ("objectType: secret", |e| {
            matches!(
                e,
                ParamError::MissingObjectField {
                    field: "objectName",
                    ..
                }
            )
        }),
        ("objectName: a", |e| {
            matches!(
                e,
                ParamError::MissingObjectField {
                    field: "objectType",
                    ..
                }
            )
        }),
        ("objectName: a_b\nobjectType: secret", |e| {
            matches!(
                e,
                ParamError::InvalidObjectField {
                    field: "objectName",
                    ..
                }
            )
        }),
        ("objectName: a\nobjectType: certificate", |e| {
            matches!(
                e,
                ParamError::InvalidObjectField {
                    field: "objectType",
                    ..
                }
            )
        }),
        (
            "objectName: a\nobjectType: secret\nobjectVersion: v1.2",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectVersion",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: -1",
            |e| matches!(e, ParamError::InvalidObjectField { field: "objectVersionHistory", reason, .. } if reason.contains("negative")),
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: 101",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectVersionHistory",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: 99999999999999999999",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectVersionHistory",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: two",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectVersionHistory",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectFormat: der",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectFormat",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectEncoding: utf-16",
            |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectField {
                        field: "objectEncoding",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: key\nobjectFormat: pfx",
            |e| matches!(e, ParamError::IncompatibleObjectFields { reason, .. } if reason.contains("pfx")),
        ),
        ("objectName: a\nobjectType: cert\nobjectFormat: PFX", |e| {
            matches!(e, ParamError::IncompatibleObjectFields { .. })
        }),
        (
            "objectName: a\nobjectType: cert\nobjectEncoding: base64",
            |e| matches!(e, ParamError::IncompatibleObjectFields { reason, .. } if reason.contains("objectEncoding")),
        ),
        (
            "objectName: a\nobjectType: key\nobjectEncoding: utf-8",
            |e| matches!(e, ParamError::IncompatibleObjectFields { .. }),
        ),
        (
            "objectName: a\nobjectType: secret\nobjectFormat: pfx\nobjectJsonKey: k",
            |e| matches!(e, ParamError::IncompatibleObjectFields { reason, .. } if reason.contains("pfx")),
        ),
        (
            "objectName: a\nobjectType: secret\nobjectEncoding: base64\nobjectJsonKey: k",
            |e| matches!(e, ParamError::IncompatibleObjectFields { reason, .. } if reason.contains("objectEncoding")),
        ),
        ("objectName: a\nobjectType: key\nobjectJsonKey: k", |e| {
            matches!(e, ParamError::IncompatibleObjectFields { .. })
        }),
        (
            "objectName: a\nobjectType: secret\nkeyvaultName: x",
            |e| matches!(e, ParamError::InvalidVaultName { origin, .. } if origin.contains("objects[0]")),
        ),
        (
            "objectName: a\nobjectType: secret\nobjectNotAfter: 2026-01-01T00:00:00Z",
            |e| {
                matches!(
                    e,
                    ParamError::UnsupportedObjectField {
                        field: "objectNotAfter",
                        ..
                    }
                )
            },
        ),
        (
            "objectName: a\nobjectType: secret\nobjectname: b",
            |e| matches!(e, ParamError::UnknownObjectKey { key, .. } if key == "objectname"),
        ),
        (
            "objectName: a\nobjectType: secret\nobjectAlais: b",
            |e| matches!(e, ParamError::UnknownObjectKey { key, .. } if key == "objectAlais"),
        ),
        ("objectName: a\nobjectType: secret\nobjectName: b", |e| {
            matches!(
                e,
                ParamError::DuplicateObjectKey {
                    key: "objectName",
                    ..
                }
            )
        }),
        ("objectName: a\nobjectType: [secret]", |e| {
            matches!(
                e,
                ParamError::InvalidObjectField {
                    field: "objectType",
                    ..
                }
            )
        }),
        ("objectName: a\nobjectType: {x: y}", |e| {
            matches!(
                e,
                ParamError::InvalidObjectField {
                    field: "objectType",
                    ..
                }
            )
        }),
        ("just a string", |e| {
            matches!(e, ParamError::InvalidObjectYaml { .. })
        }),
        ("- a\n- b", |e| {
            matches!(e, ParamError::InvalidObjectYaml { .. })
        }),
        ("objectName: [unclosed", |e| {
            matches!(
                e,
                ParamError::InvalidObjectYaml { .. } | ParamError::InvalidObjectField { .. }
            )
        }),
    ];
    for (entry, check) in cases {
        let err = one(entry).unwrap_err();
        assert!(check(&err), "{entry:?}: {err:?}");
    }
    for mode in [
        "0800",
        "1000",
        "0o600",
        "rw-------",
        "-600",
        "+600",
        "0x180",
        "777777777",
    ] {
        let err = one(&format!("{DB}\nfilePermission: '{mode}'")).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidObjectField {
                    field: "filePermission",
                    ..
                }
            ),
            "{mode}: {err}"
        );
    }
    // The unknown-key error names the key and the object.
    let err = one("objectName: db\nobjectType: secret\nobjectAlais: b").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("objects[0] (\"db\"): unknown key \"objectAlais\""),
        "{err}"
    );
}

#[test]
fn ids_are_unique_and_deterministic() {
    let specs = objects_of(&[
        "objectName: tls\nobjectType: secret",
        "objectName: tls\nobjectType: secret\nobjectFormat: pfx\nobjectAlias: tls.pfx",
        "objectName: tls\nobjectType: secret\nobjectAlias: tls-copy",
        "objectName: tls\nobjectType: cert\nobjectAlias: tls.crt",
        "objectName: tls\nobjectType: secret\nkeyvaultName: kv-dr\nobjectAlias: dr/tls",
        "objectName: tls\nobjectType: secret\nkeyvaultName: KV-PROD\nobjectAlias: same-vault",
    ])
    .unwrap();
    assert_eq!(
        ids(&specs),
        [
            "secret/tls",
            "secret/tls#tls.pfx",
            "secret/tls#tls-copy",
            "cert/tls",
            "secret/kv-dr/tls",
            "secret/tls#same-vault",
        ]
    );
    assert_eq!(specs[5].vault, None, "the mount's own vault is no override");

    // Crafted clash: history id `secret/kv2/0` vs vault-override id of object `0` in `kv2`.
    let specs = objects_of(&[
        "objectName: kv2\nobjectType: secret\nobjectVersionHistory: 2",
        "objectName: 0\nobjectType: secret\nkeyvaultName: kv2\nobjectAlias: other",
        "objectName: kv2\nobjectType: secret\nobjectAlias: again\nobjectVersionHistory: 2",
    ])
    .unwrap();
    assert_eq!(
        ids(&specs),
        [
            "secret/kv2/0",
            "secret/kv2/1",
            "secret/kv2/2",
            "secret/kv2/0#other",
            "secret/kv2#again/0",
            "secret/kv2#again/1",
            "secret/kv2#again/2"
        ]
    );
    assert_eq!(specs[2].id, "secret/kv2#again");

    // Many duplicates of one object stay unique.
    let entries: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "objectName: x\nobjectType: secret\nobjectAlias: p{i}\nobjectVersionHistory: {}",
                i % 3
            )
        })
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let specs = objects_of(&refs).unwrap();
    let all = ids(&specs);
    let unique: BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len());
    // Deterministic: the same input gives the same ids.
    assert_eq!(ids(&objects_of(&refs).unwrap()), all);
}

#[test]
fn object_labels_in_errors() {
    let err = objects_of(&[DB, "objectName: bad_name!\nobjectType: secret"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("objects[1] (\"bad_name!\"): `objectName`"),
        "{err}"
    );
    let long = "n".repeat(500);
    let err = one(&format!("objectName: {long}\nobjectType: secret")).unwrap_err();
    assert!(err.to_string().len() < 300, "{err}");
}
