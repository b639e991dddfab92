//! Tests of file paths, modes and collisions, with properties of accepted paths.

use std::path::Component;
use std::path::Path;

use proptest::prelude::*;

use crate::csi::params::fixtures::{DB, objects_of, objects_yaml, one, wi_attributes, yaml_quote};
use crate::csi::params::{
    MAX_PATH_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS, ParamError, PathError, RelativeFilePath,
    parse_mount,
};

#[test]
fn bad_permission_and_target_path() {
    let attributes = wi_attributes(&objects_yaml(&[DB]), &[]);
    for (permission, mode) in [("420", 0o644), ("0", 0), ("511", 0o777), (" 384 ", 0o600)] {
        assert_eq!(
            parse_mount(&attributes, "{}", permission, "/t")
                .unwrap()
                .default_mode,
            mode
        );
    }
    for bad in [
        "",
        "abc",
        "512",
        "4095",
        "-1",
        "420.0",
        "4.2e2",
        "0x1a4",
        "\"420\"",
        "420 420",
        "99999999999999999999",
    ] {
        let err = parse_mount(&attributes, "{}", bad, "/t").unwrap_err();
        assert!(
            matches!(err, ParamError::InvalidPermission { .. }),
            "{bad:?}: {err}"
        );
    }
    for bad in ["", "relative/path", "t", "/a\0b"] {
        let err = parse_mount(&attributes, "{}", "420", bad).unwrap_err();
        assert!(
            matches!(err, ParamError::InvalidTargetPath { .. }),
            "{bad:?}: {err}"
        );
    }
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    assert!(matches!(
        parse_mount(&attributes, "{}", "420", &long),
        Err(ParamError::InvalidTargetPath { .. })
    ));
}

#[test]
fn hostile_paths_are_refused() {
    let long_segment = "a".repeat(300);
    let many_segments = vec!["a"; 20].join("/");
    let too_long = vec!["a".repeat(250); 17].join("/");
    let table: Vec<(&str, PathError)> = vec![
        ("", PathError::Empty),
        ("../x", PathError::DotSegment),
        ("..", PathError::DotSegment),
        (".", PathError::DotSegment),
        ("/etc/passwd", PathError::Absolute),
        ("/", PathError::Absolute),
        ("a/../../b", PathError::DotSegment),
        ("a/..", PathError::DotSegment),
        ("a//b", PathError::EmptySegment),
        ("a/", PathError::EmptySegment),
        ("./a", PathError::DotSegment),
        ("a/./b", PathError::DotSegment),
        ("a\\b", PathError::Backslash),
        ("..\\..\\x", PathError::Backslash),
        ("a\0b", PathError::Nul),
        ("a\nb", PathError::Control),
        ("a\rb", PathError::Control),
        ("a\tb", PathError::Control),
        ("a\u{7f}b", PathError::Control),
        ("a\u{85}b", PathError::Control),
        ("..data", PathError::DotDotPrefix),
        ("x/..2024_01_01", PathError::DotDotPrefix),
        ("...", PathError::DotDotPrefix),
        (&long_segment, PathError::SegmentTooLong { len: 300 }),
        (&many_segments, PathError::TooManySegments { count: 20 }),
        (
            &too_long,
            PathError::TooLong {
                len: too_long.len(),
            },
        ),
    ];
    for (path, expected) in &table {
        assert_eq!(RelativeFilePath::parse(path), Err(*expected), "{path:?}");
        // And through objectAlias (an empty alias means "no alias"; values are trimmed,
        // so whitespace-only differences are not what this checks).
        if path.is_empty() || path.trim() != *path {
            continue;
        }
        let entry = format!("{DB}\nobjectAlias: {}", yaml_quote(path));
        let err = one(&entry).unwrap_err();
        assert!(
            matches!(&err, ParamError::InvalidFilePath { field: "objectAlias", source, .. } if source == expected),
            "{path:?}: {err:?}"
        );
    }
    // Literal names that look encoded or dotted are ordinary file names.
    for ok in [
        "%2e%2e",
        "%2e%2e/%2f",
        "a..b",
        "a.",
        ".a",
        ".hidden/x",
        "a/b/c.pem",
        "ünïcödé",
        "a b",
        "a:b",
        "~",
        "a/.b",
    ] {
        let path = RelativeFilePath::parse(ok).unwrap();
        assert_eq!(path.as_str(), ok);
        assert!(
            path.as_path()
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{ok}"
        );
    }
    let exactly = vec!["a"; MAX_SEGMENTS].join("/");
    assert!(RelativeFilePath::parse(&exactly).is_ok());
    assert!(RelativeFilePath::parse(&"a".repeat(MAX_SEGMENT_BYTES)).is_ok());
}

#[test]
fn history_suffix_must_still_be_a_valid_path() {
    let alias = vec!["a"; MAX_SEGMENTS].join("/");
    let entry = format!("{DB}\nobjectAlias: {alias}\nobjectVersionHistory: 2");
    let err = one(&entry).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidFilePath {
                source: PathError::TooManySegments { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(one(&format!("{DB}\nobjectAlias: {alias}")).is_ok());
}

#[test]
fn duplicate_paths_and_prefix_collisions_are_refused() {
    let collides = |entries: &[&str], first: usize, second: usize| {
        let err = objects_of(entries).unwrap_err();
        match &err {
            ParamError::PathCollision {
                first: a,
                second: b,
                ..
            } => {
                assert_eq!((a.index, b.index), (first, second), "{entries:?}: {err}");
            }
            other => panic!("{entries:?}: {other:?}"),
        }
        err.to_string()
    };
    // Same name twice; alias equal to another's name.
    let msg = collides(
        &[
            "objectName: a\nobjectType: secret",
            "objectName: a\nobjectType: secret",
        ],
        0,
        1,
    );
    assert!(
        msg.contains("objects[0] (\"a\") and objects[1] (\"a\")"),
        "{msg}"
    );
    collides(
        &[
            "objectName: a\nobjectType: secret",
            "objectName: b\nobjectType: cert\nobjectAlias: a",
        ],
        0,
        1,
    );
    // A file and a directory: `a` vs `a/0` (history), `a` vs `a/b`, both orders.
    collides(
        &[
            "objectName: a\nobjectType: secret",
            "objectName: b\nobjectType: key\nobjectAlias: a\nobjectVersionHistory: 2",
        ],
        0,
        1,
    );
    collides(
        &[
            "objectName: b\nobjectType: key\nobjectAlias: a\nobjectVersionHistory: 2",
            "objectName: a\nobjectType: secret",
        ],
        0,
        1,
    );
    collides(
        &[
            "objectName: a\nobjectType: secret",
            "objectName: b\nobjectType: secret\nobjectAlias: a/b",
        ],
        0,
        1,
    );
    collides(
        &[
            "objectName: b\nobjectType: secret\nobjectAlias: a/b/c",
            "objectName: a\nobjectType: secret",
        ],
        0,
        1,
    );
    collides(
        &[
            "objectName: b\nobjectType: secret\nobjectAlias: x/a/b",
            "objectName: c\nobjectType: secret\nobjectAlias: x/a",
        ],
        0,
        1,
    );
    // History entries vs a plain alias.
    collides(
        &[
            "objectName: k\nobjectType: key\nobjectVersionHistory: 3",
            "objectName: s\nobjectType: secret\nobjectAlias: k/2",
        ],
        0,
        1,
    );
    // Siblings in one directory are fine.
    let ok = objects_of(&[
        "objectName: a\nobjectType: secret\nobjectAlias: d/a",
        "objectName: b\nobjectType: secret\nobjectAlias: d/b",
        "objectName: c\nobjectType: secret\nobjectAlias: d/c/x",
        "objectName: ab\nobjectType: secret\nobjectAlias: d/a0",
    ]);
    assert!(ok.is_ok(), "{ok:?}");
}

fn path_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("\\".to_owned()),
            Just("\0".to_owned()),
            Just("\n".to_owned()),
            Just("%2e".to_owned()),
            "[a-z0-9._-]{1,4}",
            any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn accepted_paths_stay_inside_the_base(s in prop_oneof![any::<String>(), path_like()]) {
        if let Ok(path) = RelativeFilePath::parse(&s) {
            let relative: Vec<Component<'_>> = path.as_path().components().collect();
            prop_assert!(relative.iter().all(|c| matches!(c, Component::Normal(_))), "{s:?}");
            prop_assert_eq!(relative.len(), path.segments().count());
            let base = Path::new("/var/lib/kubelet/pods/uid/volumes/mount");
            let joined = base.join(path.as_path());
            prop_assert!(joined.starts_with(base));
            let extra: Vec<Component<'_>> = joined.components().skip(base.components().count()).collect();
            prop_assert!(extra.iter().all(|c| matches!(c, Component::Normal(_))));
            prop_assert_eq!(extra.len(), relative.len());
        }
    }

    #[test]
    fn accepted_paths_round_trip(s in path_like()) {
        if let Ok(path) = RelativeFilePath::parse(&s) {
            prop_assert_eq!(path.as_str(), s.as_str());
            prop_assert_eq!(path.to_string(), s.clone());
            prop_assert_eq!(RelativeFilePath::parse(&path.to_string()), Ok(path.clone()));
            let rebuilt = path.segments().collect::<Vec<_>>().join("/");
            prop_assert_eq!(RelativeFilePath::parse(&rebuilt), Ok(path));
        }
    }
}
