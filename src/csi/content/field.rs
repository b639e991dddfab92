//! `objectJsonKey` and `objectYamlKey`: one value picked out of a JSON or YAML secret by a
//! path ([`crate::csi::params::field_path`]). A string is written as its text, anything else
//! in the document's own syntax as the parser reads it (compact JSON; YAML): numbers are
//! normalised (`1.10` is written `1.1`, YAML's `0x1F` `31`). Errors name the path and where it
//! stopped, never a value.
//!
//! The parsed document's strings are zeroized before it is dropped; the parsers' own
//! buffers (serde_json's scratch space, libyaml's events) are not, as no parser here offers
//! that. YAML is parsed under a node budget ([`super::yaml_budget`]): alias expansion is
//! stopped before it can take the memory a small secret could otherwise claim.

use zeroize::{Zeroize as _, Zeroizing};

use super::ContentError;
use crate::csi::params::field_path::{self, Document, Step};

/// The value at `path` in `content`.
pub(super) fn extract(
    content: &[u8],
    document: Document,
    path: &str,
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    match document {
        Document::Json => extract_json(content, path),
        Document::Yaml => extract_yaml(content, path),
    }
}

fn steps(path: &str, document: Document) -> Result<Vec<Step>, ContentError> {
    // objectJsonKey accepts any text (a whole top-level key first); text that is neither
    // that key nor a path is said to be both.
    field_path::parse(path).map_err(|reason| ContentError::BadPath {
        document: document.name(),
        path: path.to_owned(),
        reason,
    })
}

fn mismatch(document: Document, path: &str, steps: &[Step], i: usize) -> ContentError {
    ContentError::FieldMismatch {
        document: document.name(),
        path: path.to_owned(),
        at: field_path::prefix(steps, i),
        expected: match steps.get(i) {
            Some(Step::Index(_)) => "a list",
            _ => "a mapping",
        },
    }
}

fn missing(document: Document, path: &str, steps: &[Step], i: usize) -> ContentError {
    ContentError::MissingField {
        document: document.name(),
        path: path.to_owned(),
        at: field_path::prefix(steps, i + 1),
    }
}

fn extract_json(content: &[u8], path: &str) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let document: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| ContentError::InvalidJson {
            key: path.to_owned(),
            line: e.line(),
            column: e.column(),
        })?;
    // The whole text as one top-level key first: the one-key form keeps its meaning.
    let mut value = match document {
        serde_json::Value::Object(mut map) if map.contains_key(path) => {
            let found = map.remove(path);
            scrub_json(serde_json::Value::Object(map));
            found.unwrap_or_default()
        }
        document => {
            let steps = match steps(path, Document::Json) {
                Ok(s) => s,
                Err(e) => {
                    scrub_json(document);
                    return Err(e);
                }
            };
            let mut value = document;
            for (i, step) in steps.iter().enumerate() {
                let next = match (value, step) {
                    (serde_json::Value::Object(mut map), Step::Key(k)) => {
                        let found = map.remove(k);
                        scrub_json(serde_json::Value::Object(map));
                        found.ok_or_else(|| missing(Document::Json, path, &steps, i))
                    }
                    (serde_json::Value::Array(items), Step::Index(n)) => {
                        let mut found = None;
                        for (j, item) in items.into_iter().enumerate() {
                            if j == *n {
                                found = Some(item);
                            } else {
                                scrub_json(item);
                            }
                        }
                        found.ok_or_else(|| missing(Document::Json, path, &steps, i))
                    }
                    (other, _) => {
                        scrub_json(other);
                        Err(mismatch(Document::Json, path, &steps, i))
                    }
                };
                value = next?;
            }
            value
        }
    };
    match &mut value {
        serde_json::Value::String(text) => Ok(Zeroizing::new(std::mem::take(text).into_bytes())),
        _ => {
            // Compact JSON is rarely longer than its source; the margin covers number
            // re-formatting so the buffer is not reallocated.
            let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 64));
            let written = serde_json::to_writer(&mut *out, &value);
            scrub_json(value);
            written.map_err(|_| ContentError::MissingField {
                document: "JSON",
                path: path.to_owned(),
                at: String::new(),
            })?;
            Ok(out)
        }
    }
}

/// Zeroizes every string (and object key) of a parsed JSON document.
pub(super) fn scrub_json(value: serde_json::Value) {
    match value {
        serde_json::Value::String(mut text) => text.zeroize(),
        serde_json::Value::Array(items) => items.into_iter().for_each(scrub_json),
        serde_json::Value::Object(map) => {
            for (mut key, item) in map {
                key.zeroize();
                scrub_json(item);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// A YAML mapping key as a path key: strings as they are, numbers and booleans as written.
fn yaml_key_matches(key: &serde_yaml_ng::Value, wanted: &str) -> bool {
    match key {
        serde_yaml_ng::Value::String(s) => s == wanted,
        serde_yaml_ng::Value::Number(n) => n.to_string() == wanted,
        serde_yaml_ng::Value::Bool(b) => b.to_string() == wanted,
        _ => false,
    }
}

fn untag(value: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    match value {
        serde_yaml_ng::Value::Tagged(tagged) => untag(tagged.value),
        other => other,
    }
}

fn yaml_take(map: serde_yaml_ng::Mapping, wanted: &str) -> Option<serde_yaml_ng::Value> {
    let mut found = None;
    for (key, item) in map {
        if found.is_none() && yaml_key_matches(&key, wanted) {
            found = Some(item);
        } else {
            scrub_yaml(item);
        }
        scrub_yaml(key);
    }
    found
}

fn extract_yaml(content: &[u8], path: &str) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let document: serde_yaml_ng::Value =
        super::yaml_budget::parse(content).map_err(|e| ContentError::InvalidYaml {
            key: path.to_owned(),
            // The location only: the error's text may quote the document.
            line: e.location().map_or(0, |l| l.line()),
            column: e.location().map_or(0, |l| l.column()),
        })?;
    let document = untag(document);
    // A path only (objectYamlKey has no one-key past to keep): `a.b` is always nested.
    let value = {
        let steps = match steps(path, Document::Yaml) {
            Ok(s) => s,
            Err(e) => {
                scrub_yaml(document);
                return Err(e);
            }
        };
        let mut value = document;
        for (i, step) in steps.iter().enumerate() {
            let next = match (untag(value), step) {
                (serde_yaml_ng::Value::Mapping(map), Step::Key(k)) => {
                    yaml_take(map, k).ok_or_else(|| missing(Document::Yaml, path, &steps, i))
                }
                (serde_yaml_ng::Value::Sequence(items), Step::Index(n)) => {
                    let mut found = None;
                    for (j, item) in items.into_iter().enumerate() {
                        if j == *n {
                            found = Some(item);
                        } else {
                            scrub_yaml(item);
                        }
                    }
                    found.ok_or_else(|| missing(Document::Yaml, path, &steps, i))
                }
                (other, _) => {
                    scrub_yaml(other);
                    Err(mismatch(Document::Yaml, path, &steps, i))
                }
            };
            value = next?;
        }
        untag(value)
    };
    Ok(match value {
        serde_yaml_ng::Value::String(text) => Zeroizing::new(text.into_bytes()),
        serde_yaml_ng::Value::Number(n) => Zeroizing::new(n.to_string().into_bytes()),
        serde_yaml_ng::Value::Bool(b) => Zeroizing::new(b.to_string().into_bytes()),
        serde_yaml_ng::Value::Null => Zeroizing::new(b"null".to_vec()),
        other => {
            let text = serde_yaml_ng::to_string(&other).map(|t| Zeroizing::new(t.into_bytes()));
            scrub_yaml(other);
            text.map_err(|_| ContentError::MissingField {
                document: "YAML",
                path: path.to_owned(),
                at: String::new(),
            })?
        }
    })
}

/// Zeroizes every string (and mapping key) of a parsed YAML document.
fn scrub_yaml(value: serde_yaml_ng::Value) {
    match value {
        serde_yaml_ng::Value::String(mut text) => text.zeroize(),
        serde_yaml_ng::Value::Sequence(items) => items.into_iter().for_each(scrub_yaml),
        serde_yaml_ng::Value::Mapping(map) => {
            for (key, item) in map {
                scrub_yaml(key);
                scrub_yaml(item);
            }
        }
        serde_yaml_ng::Value::Tagged(tagged) => {
            let mut tagged = *tagged;
            scrub_yaml(std::mem::take(&mut tagged.value));
        }
        serde_yaml_ng::Value::Null
        | serde_yaml_ng::Value::Bool(_)
        | serde_yaml_ng::Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "s3cr3t-marker";

    fn json(doc: &str, path: &str) -> Result<String, ContentError> {
        extract(doc.as_bytes(), Document::Json, path)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    fn yaml(doc: &str, path: &str) -> Result<String, ContentError> {
        extract(doc.as_bytes(), Document::Yaml, path)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn json_paths_reach_nested_values() {
        let doc = format!(
            r#"{{"db":{{"hosts":[{{"name":"a","port":5432}},{{"name":"b"}}],"password":"{MARKER}"}},
                "tls.crt":"PEM","list":[[1,2],[3]],"a.b":"whole"}}"#
        );
        assert_eq!(json(&doc, "db.password").unwrap(), MARKER);
        assert_eq!(json(&doc, "db.hosts[1].name").unwrap(), "b");
        assert_eq!(json(&doc, "db.hosts[0].port").unwrap(), "5432");
        assert_eq!(
            json(&doc, "db.hosts[0]").unwrap(),
            r#"{"name":"a","port":5432}"#
        );
        assert_eq!(json(&doc, r#"["tls.crt"]"#).unwrap(), "PEM");
        assert_eq!(json(&doc, "list[0][1]").unwrap(), "2");
        // The whole text as a top-level key wins: the one-key form keeps its meaning.
        assert_eq!(json(&doc, "a.b").unwrap(), "whole");
        assert_eq!(json(&doc, "tls.crt").unwrap(), "PEM");
        assert_eq!(json("[1,{\"k\":\"v\"}]", "[1].k").unwrap(), "v");
    }

    #[test]
    fn json_path_errors_say_where_they_stopped_and_quote_no_value() {
        let doc = format!(r#"{{"db":{{"hosts":["{MARKER}"],"password":"{MARKER}"}}}}"#);
        let errors = [
            json(&doc, "db.user").unwrap_err(),
            json(&doc, "db.hosts[3]").unwrap_err(),
            json(&doc, "db.password.x").unwrap_err(),
            json(&doc, "db[0]").unwrap_err(),
            json(&format!(r#"["{MARKER}"]"#), "password").unwrap_err(),
            json(&format!(r#"{{"a": "{MARKER}""#), "a").unwrap_err(),
        ];
        assert!(
            matches!(&errors[0], ContentError::MissingField { at, .. } if at == "db.user"),
            "{}",
            errors[0]
        );
        assert!(matches!(&errors[1], ContentError::MissingField { at, .. } if at == "db.hosts[3]"));
        assert!(
            matches!(&errors[2], ContentError::FieldMismatch { at, expected: "a mapping", .. } if at == "db.password")
        );
        assert!(matches!(
            &errors[3],
            ContentError::FieldMismatch {
                expected: "a list",
                ..
            }
        ));
        assert!(matches!(&errors[4], ContentError::FieldMismatch { at, .. } if at.is_empty()));
        assert!(matches!(&errors[5], ContentError::InvalidJson { .. }));
        // Neither a top-level key nor a path: both said.
        let err = json(&doc, "db.hosts[0").unwrap_err();
        assert!(
            matches!(&err, ContentError::BadPath { .. }) && err.to_string().contains("expects ']'"),
            "{err}"
        );
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(MARKER), "{shown}");
        }
        assert!(errors[0].to_string().contains("'db.user'"), "{}", errors[0]);
    }

    #[test]
    fn yaml_paths_reach_nested_values() {
        let doc = format!(
            "db:\n  hosts:\n    - name: a\n      port: 5432\n    - name: b\n  password: {MARKER}\n\
             8080: http\ntrue: yes-key\nflag: true\nnothing: null\n\"a.b\": whole\n\
             tagged: !secret tagged-value\n"
        );
        assert_eq!(yaml(&doc, "db.password").unwrap(), MARKER);
        assert_eq!(yaml(&doc, "db.hosts[1].name").unwrap(), "b");
        assert_eq!(yaml(&doc, "db.hosts[0].port").unwrap(), "5432");
        assert_eq!(yaml(&doc, "db.hosts[0]").unwrap(), "name: a\nport: 5432\n");
        assert_eq!(yaml(&doc, "8080").unwrap(), "http");
        assert_eq!(yaml(&doc, "true").unwrap(), "yes-key");
        assert_eq!(yaml(&doc, "flag").unwrap(), "true");
        assert_eq!(yaml(&doc, "nothing").unwrap(), "null");
        // YAML takes paths only: a key with a dot is quoted.
        assert_eq!(yaml(&doc, r#"["a.b"]"#).unwrap(), "whole");
        assert!(matches!(
            yaml(&doc, "a.b"),
            Err(ContentError::MissingField { .. })
        ));
        assert_eq!(yaml(&doc, "tagged").unwrap(), "tagged-value");
        let errors = [
            yaml(&doc, "db.user").unwrap_err(),
            yaml(&doc, "db.password[0]").unwrap_err(),
            yaml(&format!("a: [{MARKER}"), "a").unwrap_err(),
        ];
        assert!(matches!(
            &errors[0],
            ContentError::MissingField {
                document: "YAML",
                ..
            }
        ));
        assert!(matches!(
            &errors[1],
            ContentError::FieldMismatch {
                expected: "a list",
                ..
            }
        ));
        assert!(matches!(&errors[2], ContentError::InvalidYaml { .. }));
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(MARKER), "{shown}");
        }
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_not_expanded() {
        // "Billion laughs": nine levels of ten aliases each.
        let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(doc.len() < 1024);
        assert!(matches!(
            yaml(&doc, "a8"),
            Err(ContentError::InvalidYaml { .. })
        ));
    }
}
