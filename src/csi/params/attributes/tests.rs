//! Tests of the JSON inputs: shapes, sizes, Go booleans, and errors that never echo a
//! secret.

use crate::csi::params::fixtures::{DB, mount_with, objects_yaml, one, wi_attributes};
use crate::csi::params::{MAX_JSON_BYTES, ParamError, parse_mount};

#[test]
fn errors_never_echo_secret_values() {
    let attributes = wi_attributes(&objects_yaml(&[DB]), &[("clientID", "")]);
    for secrets in [
        r#"{"clientid": "a", "clientsecret": 12345678987654321}"#.to_owned(),
        r#"{"clientid": "a", "clientsecret": ["hunter2hunter2"]}"#.to_owned(),
        r#"{"clientid": "a", "clientsecret": {"v": "hunter2hunter2"}}"#.to_owned(),
        r#"{"clientid": "a", "clientsecret": "hunter2hunter2""#.to_owned(),
        r#"{"clientid": "a", "clientsecret": "hunter2hunter2" x}"#.to_owned(),
        r#"{"clientid": "a", "clientsecret": "hunter2\uZZZZhunter2"}"#.to_owned(),
        r#"["hunter2hunter2"]"#.to_owned(),
        r#""hunter2hunter2""#.to_owned(),
    ] {
        let err = parse_mount(&attributes, &secrets, "420", "/t").unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("12345678987654321"),
            "{text}"
        );
    }
}

#[test]
fn go_parse_bool() {
    for (value, expected) in [
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("true", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("false", false),
        ("False", false),
        ("", false),
        (" true ", true),
    ] {
        let p = mount_with(&[("csi.storage.k8s.io/ephemeral", value)]).unwrap();
        assert_eq!(p.pod.ephemeral, expected, "{value:?}");
        let spec = one(&format!("{DB}\noptional: '{value}'")).unwrap();
        assert_eq!(spec.optional, expected, "{value:?}");
    }
    for value in [
        "yes", "no", "on", "off", "tRue", "2", "y", "enabled", "truee",
    ] {
        let err = mount_with(&[("useVMManagedIdentity", value)]).unwrap_err();
        assert_eq!(
            err,
            ParamError::InvalidBool {
                name: "useVMManagedIdentity",
                value: value.to_owned()
            },
        );
        let err = one(&format!("{DB}\noptional: '{value}'")).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidObjectField {
                    field: "optional",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn json_shape_and_size_errors() {
    let attributes = wi_attributes(&objects_yaml(&[DB]), &[]);
    for bad in [
        "[]",
        "5",
        "\"x\"",
        "{",
        "{\"a\": 1}",
        "{\"a\": \"b\"} trailing",
    ] {
        let err = parse_mount(bad, "{}", "420", "/t").unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidJson {
                    what: "attributes",
                    ..
                } | ParamError::NotAString {
                    what: "attributes",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    let err = parse_mount(
        r#"{"keyvaultName": "a", "keyvaultName": "b"}"#,
        "{}",
        "420",
        "/t",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::DuplicateKey {
                what: "attributes",
                ..
            }
        ),
        "{err}"
    );
    let err = parse_mount(r#"{"keyvaultName": true}"#, "{}", "420", "/t").unwrap_err();
    assert_eq!(
        err,
        ParamError::NotAString {
            what: "attributes",
            key: "keyvaultName".into(),
            found: "a boolean"
        }
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_JSON_BYTES));
    let err = parse_mount(&huge, "{}", "420", "/t").unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::TooLarge {
                what: "attributes",
                ..
            }
        ),
        "{err}"
    );
    let err = parse_mount(&attributes, &huge, "420", "/t").unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::TooLarge {
                what: "secrets",
                ..
            }
        ),
        "{err}"
    );
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let err = parse_mount(&deep, "{}", "420", "/t").unwrap_err();
    assert_eq!(
        err,
        ParamError::NotAString {
            what: "attributes",
            key: "a".into(),
            found: "an array"
        }
    );
    let deep = "[".repeat(100_000);
    assert!(matches!(
        parse_mount(&deep, "{}", "420", "/t"),
        Err(ParamError::InvalidJson { .. })
    ));
    let deep = format!("{{\"a\": \"b\"{}", "}".repeat(100_000));
    assert!(matches!(
        parse_mount(&deep, "{}", "420", "/t"),
        Err(ParamError::InvalidJson { .. })
    ));
}
