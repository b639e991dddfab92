//! The driver's `attributes` and `secrets`: JSON objects of strings parsed with a size bound
//! and errors that never quote content, and typed access to attributes (trimmed, required,
//! Go booleans, pod attributes).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::secret::SecretString;

use super::error::ParamError;
use super::{MAX_JSON_BYTES, MAX_POD_ATTRIBUTE_BYTES, snippet};

/// The `attributes` map, with duplicate keys refused.
pub(super) struct Attributes(BTreeMap<String, String>);

impl Attributes {
    pub(super) fn parse(text: &str) -> Result<Self, ParamError> {
        let mut map = BTreeMap::new();
        for (key, value) in parse_string_map::<String>("attributes", text)? {
            if map.contains_key(&key) {
                return Err(ParamError::DuplicateKey {
                    what: "attributes",
                    key: snippet(&key),
                });
            }
            map.insert(key, value);
        }
        Ok(Self(map))
    }

    /// The trimmed value of `key`, empty when absent.
    pub(super) fn trimmed(&self, key: &str) -> &str {
        self.0.get(key).map_or("", |v| v.trim())
    }

    /// The trimmed value of a required parameter.
    pub(super) fn required(&self, name: &'static str) -> Result<&str, ParamError> {
        let value = self.trimmed(name);
        if value.is_empty() {
            return Err(ParamError::MissingParameter {
                name,
                hint: self.case_hint(name, &[]),
            });
        }
        Ok(value)
    }

    /// A boolean parameter, Go syntax, empty meaning `false`.
    pub(super) fn bool(&self, name: &'static str) -> Result<bool, ParamError> {
        let value = self.trimmed(name);
        if value.is_empty() {
            return Ok(false);
        }
        parse_go_bool(value).ok_or_else(|| ParamError::InvalidBool {
            name,
            value: snippet(value),
        })
    }

    /// A pod attribute: trimmed, empty → `None`, bounded, no control characters.
    pub(super) fn pod_attribute(&self, name: &'static str) -> Result<Option<String>, ParamError> {
        let value = self.trimmed(name);
        if value.is_empty() {
            return Ok(None);
        }
        if value.len() > MAX_POD_ATTRIBUTE_BYTES {
            return Err(ParamError::InvalidParameter {
                name,
                reason: format!("is longer than {MAX_POD_ATTRIBUTE_BYTES} bytes"),
            });
        }
        if value.chars().any(char::is_control) {
            return Err(ParamError::InvalidParameter {
                name,
                reason: "contains a control character".to_owned(),
            });
        }
        Ok(Some(value.to_owned()))
    }

    /// ` (found "keyVaultName": ...)` when a key other than `name` and `except` equals
    /// `name` ignoring ASCII case.
    pub(super) fn case_hint(&self, name: &str, except: &[&str]) -> String {
        self.0
            .keys()
            .find(|k| {
                k.as_str() != name && !except.contains(&k.as_str()) && k.eq_ignore_ascii_case(name)
            })
            .map(|k| {
                format!(
                    " (found {:?}: parameter names are case-sensitive)",
                    snippet(k)
                )
            })
            .unwrap_or_default()
    }
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// What a JSON string becomes: a plain `String` or a [`SecretString`].
pub(super) trait FromJsonString: Sized {
    fn from_json_str(value: &str) -> Self;
}

impl FromJsonString for String {
    fn from_json_str(value: &str) -> Self {
        value.to_owned()
    }
}

impl FromJsonString for SecretString {
    fn from_json_str(value: &str) -> Self {
        SecretString::from(value)
    }
}

/// A JSON value that should be a string; anything else is kept as its type name only.
enum JsonField<T> {
    Str(T),
    Other(&'static str),
}

struct JsonFieldVisitor<T>(PhantomData<T>);

impl<'de, T: FromJsonString> Visitor<'de> for JsonFieldVisitor<T> {
    type Value = JsonField<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonField::Str(T::from_json_str(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(JsonField::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(JsonField::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(JsonField::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(JsonField::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonField::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonField::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonField::Other("an object"))
    }
}

impl<'de, T: FromJsonString> de::Deserialize<'de> for JsonField<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonFieldVisitor(PhantomData))
    }
}

/// A JSON object (or `null`) as its entries, in order, duplicates kept.
struct JsonStringMap<T>(Vec<(String, JsonField<T>)>);

struct JsonStringMapVisitor<T>(PhantomData<T>);

impl<'de, T: FromJsonString> Visitor<'de> for JsonStringMapVisitor<T> {
    type Value = JsonStringMap<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonStringMap(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, JsonField<T>>()? {
            entries.push((key, value));
        }
        Ok(JsonStringMap(entries))
    }
}

impl<'de, T: FromJsonString> de::Deserialize<'de> for JsonStringMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonStringMapVisitor(PhantomData))
    }
}

/// Parses a JSON object of strings; `null` or blank is empty. Errors never quote content.
pub(super) fn parse_string_map<T: FromJsonString>(
    what: &'static str,
    text: &str,
) -> Result<Vec<(String, T)>, ParamError> {
    if text.len() > MAX_JSON_BYTES {
        return Err(ParamError::TooLarge {
            what,
            len: text.len(),
            max: MAX_JSON_BYTES,
        });
    }
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let JsonStringMap(entries) =
        serde_json::from_str::<JsonStringMap<T>>(text).map_err(|e| ParamError::InvalidJson {
            what,
            reason: json_reason(&e, "the top level must be a JSON object of strings"),
        })?;
    entries
        .into_iter()
        .map(|(key, value)| match value {
            JsonField::Str(value) => Ok((key, value)),
            JsonField::Other(found) => Err(ParamError::NotAString {
                what,
                key: snippet(&key),
                found,
            }),
        })
        .collect()
}

/// A JSON error as its category and position only: `serde_json`'s own messages can quote
/// values (`invalid type: integer `5``), and these inputs carry secrets.
pub(super) fn json_reason(error: &serde_json::Error, data_reason: &str) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "unexpected end of JSON",
        Category::Data => data_reason,
        Category::Io => "read error",
    };
    format!("{what} (line {}, column {})", error.line(), error.column())
}

#[cfg(test)]
mod tests;
