//! The `objects` YAML: [`parse_objects_with`] reads the document `array:` of strings, each an
//! object's own YAML mapping, into raw fields (bounded in count and size; errors name the
//! entry and key), then has each built, their paths checked and their ids assigned.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::{ObjectLabel, ParamError};
use super::files::check_collisions;
use super::selection::{SelectionSpec, build_selection, is_selection};
use super::spec::{ObjectSpec, assign_ids, build_object};
use super::{
    MAX_FILES, MAX_OBJECTS, MAX_OBJECTS_YAML_BYTES, MAX_REPORTED_UNKNOWN_KEYS, P_OBJECTS,
    VaultName, snippet, snippet_n,
};

/// Parses the `objects` YAML into validated objects whose default vault is `vault`: paths
/// checked for collisions, ids assigned. Strict: an unknown object key is an error, as with
/// `--strict-parameters`. [`parse_mount`](super::parse_mount) parses through the same code;
/// this is for tests.
#[cfg(test)]
pub fn parse_objects(yaml: &str, vault: &VaultName) -> Result<Vec<ObjectSpec>, ParamError> {
    parse_objects_with(yaml, vault, true).map(|(specs, ..)| specs)
}

/// Object keys that were ignored (not `strict`), as [`MountParams`](super::MountParams)
/// reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownKeys {
    /// The first [`MAX_REPORTED_UNKNOWN_KEYS`] of them, in order: the object (`None`: the
    /// `objects` document itself, a key beside `array`) and the key (shortened to 64
    /// characters). Values are never kept.
    pub first: Vec<(Option<ObjectLabel>, String)>,
    /// How many there were in all.
    pub count: usize,
}

/// Parses `objects`; unless `strict`, unknown object keys are ignored (as the Go provider's
/// YAML decoding ignores them) and reported in the second value.
pub(super) fn parse_objects_with(
    yaml: &str,
    vault: &VaultName,
    strict: bool,
) -> Result<(Vec<ObjectSpec>, Vec<SelectionSpec>, UnknownKeys), ParamError> {
    if yaml.len() > MAX_OBJECTS_YAML_BYTES {
        return Err(ParamError::TooLarge {
            what: P_OBJECTS,
            len: yaml.len(),
            max: MAX_OBJECTS_YAML_BYTES,
        });
    }
    let (entries, document_unknown) = parse_objects_document(yaml, strict)?;
    if entries.is_empty() {
        return Err(ParamError::NoObjects);
    }
    let mut specs = Vec::with_capacity(entries.len());
    let mut selections = Vec::new();
    let mut unknown = document_unknown;
    let mut file_count = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let raw = parse_object_entry(entry.as_deref(), index, strict)?;
        if raw.unknown_count > 0 {
            let label = ObjectLabel {
                index,
                name: Some(raw.get(Field::ObjectName))
                    .filter(|n| !n.is_empty())
                    .map(snippet),
            };
            unknown.count = unknown.count.saturating_add(raw.unknown_count);
            for key in &raw.unknown {
                if unknown.first.len() < MAX_REPORTED_UNKNOWN_KEYS {
                    unknown.first.push((Some(label.clone()), key.clone()));
                }
            }
        }
        if is_selection(&raw) {
            let selection = build_selection(&raw, index, vault)?;
            // Counted at its most, so the expanded mount stays within MAX_FILES.
            file_count = file_count.saturating_add(selection.max as usize);
            if file_count > MAX_FILES {
                return Err(ParamError::TooManyFiles {
                    count: file_count,
                    max: MAX_FILES,
                });
            }
            selections.push(selection);
            continue;
        }
        let spec = build_object(&raw, index, vault)?;
        file_count = file_count.saturating_add(spec.files.len());
        if file_count > MAX_FILES {
            return Err(ParamError::TooManyFiles {
                count: file_count,
                max: MAX_FILES,
            });
        }
        specs.push(spec);
    }
    check_collisions(&specs)?;
    assign_ids(&mut specs)?;
    Ok((specs, selections, unknown))
}

/// Shortens a parser message.
fn yaml_reason(error: &serde_yaml_ng::Error) -> String {
    snippet_n(&error.to_string(), 200)
}

/// The raw text of a YAML scalar (tags ignored, no type resolution: `0600` stays `0600`),
/// or `None` for null / empty.
struct YamlScalar(Option<String>);

struct YamlScalarVisitor;

impl<'de> Visitor<'de> for YamlScalarVisitor {
    type Value = YamlScalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (a YAML scalar), not a list or mapping")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(YamlScalar(Some(v.to_owned())))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(YamlScalar(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(YamlScalar(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> de::Deserialize<'de> for YamlScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(YamlScalarVisitor)
    }
}

/// Where the `objects` visitors leave a precise error before aborting the parse.
type Problem = Option<ParamError>;

/// Aborts a parse after recording `problem` (the YAML error that results is discarded).
fn abort<E: de::Error>(slot: &mut Problem, problem: ParamError) -> E {
    *slot = Some(problem);
    E::custom("aborted")
}

/// The `objects` document: a mapping with the key `array`, a sequence of strings; other
/// keys are errors when `strict`, else skipped and reported (as the Go provider's YAML
/// decoding ignores them). Returns the entries (`None` for a null entry).
fn parse_objects_document(
    yaml: &str,
    strict: bool,
) -> Result<(Vec<Option<String>>, UnknownKeys), ParamError> {
    let mut problem = None;
    let result = ObjectsDocument {
        problem: &mut problem,
        strict,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(yaml));
    match (result, problem) {
        (_, Some(problem)) => Err(problem),
        (Ok(entries), None) => Ok(entries),
        (Err(e), None) => Err(ParamError::InvalidObjectsYaml {
            reason: yaml_reason(&e),
        }),
    }
}

struct ObjectsDocument<'p> {
    problem: &'p mut Problem,
    strict: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectsDocument<'_> {
    type Value = (Vec<Option<String>>, UnknownKeys);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectsDocument<'_> {
    type Value = (Vec<Option<String>>, UnknownKeys);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML mapping with the key `array`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut array = None;
        let mut unknown = UnknownKeys::default();
        while let Some(YamlScalar(key)) = map.next_key::<YamlScalar>()? {
            let key = key.unwrap_or_default();
            if key != "array" && !self.strict {
                if let Err(e) = map.next_value::<de::IgnoredAny>() {
                    return Err(abort(
                        self.problem,
                        ParamError::InvalidObjectsYaml {
                            reason: snippet_n(&e.to_string(), 200),
                        },
                    ));
                }
                unknown.count = unknown.count.saturating_add(1);
                if unknown.first.len() < MAX_REPORTED_UNKNOWN_KEYS {
                    unknown.first.push((None, snippet(&key)));
                }
                continue;
            }
            if key != "array" {
                return Err(abort(
                    self.problem,
                    ParamError::InvalidObjectsYaml {
                        reason: format!("unknown key {:?}: the only key is `array`", snippet(&key)),
                    },
                ));
            }
            if array.is_some() {
                return Err(abort(
                    self.problem,
                    ParamError::InvalidObjectsYaml {
                        reason: "key `array` appears more than once".to_owned(),
                    },
                ));
            }
            array = Some(map.next_value_seed(ObjectsArray {
                problem: &mut *self.problem,
            })?);
        }
        Ok((array.unwrap_or_default(), unknown))
    }
}

/// `array:`: null (empty) or a sequence of strings, bounded in count and total size.
struct ObjectsArray<'p> {
    problem: &'p mut Problem,
}

impl<'de> DeserializeSeed<'de> for ObjectsArray<'_> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectsArray<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML list of strings")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut total = 0usize;
        loop {
            let index = entries.len();
            let entry = match seq.next_element_seed(ObjectsEntry) {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    // Not a string (a mapping written without `- |`), or malformed.
                    let reason = snippet_n(&e.to_string(), 200);
                    return Err(abort(
                        self.problem,
                        ParamError::InvalidObjectYaml {
                            object: ObjectLabel { index, name: None },
                            reason,
                        },
                    ));
                }
            };
            if index >= MAX_OBJECTS {
                return Err(abort(
                    self.problem,
                    ParamError::TooManyObjects { max: MAX_OBJECTS },
                ));
            }
            // Aliases can repeat one large scalar many times: bound what is materialized.
            total = total.saturating_add(entry.as_ref().map_or(0, String::len));
            if total > MAX_OBJECTS_YAML_BYTES {
                return Err(abort(
                    self.problem,
                    ParamError::TooLarge {
                        what: "objects entries (after YAML alias expansion)",
                        len: total,
                        max: MAX_OBJECTS_YAML_BYTES,
                    },
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// One entry of `array`: a string (the object's own YAML) or null.
struct ObjectsEntry;

impl<'de> DeserializeSeed<'de> for ObjectsEntry {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectsEntry {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML string holding the object's YAML (write `- |` before it)")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
}

/// The fields of an object entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    ObjectName,
    ObjectType,
    ObjectVersion,
    ObjectVersionHistory,
    ObjectAlias,
    ObjectFormat,
    ObjectEncoding,
    FilePermission,
    Optional,
    ObjectJsonKey,
    ObjectYamlKey,
    KeyvaultName,
    FailoverKeyvaultName,
    ObjectNamePrefix,
    ObjectTag,
    ObjectMaxCount,
}

impl Field {
    const ALL: [Self; 16] = [
        Self::ObjectName,
        Self::ObjectType,
        Self::ObjectVersion,
        Self::ObjectVersionHistory,
        Self::ObjectAlias,
        Self::ObjectFormat,
        Self::ObjectEncoding,
        Self::FilePermission,
        Self::Optional,
        Self::ObjectJsonKey,
        Self::ObjectYamlKey,
        Self::KeyvaultName,
        Self::FailoverKeyvaultName,
        Self::ObjectNamePrefix,
        Self::ObjectTag,
        Self::ObjectMaxCount,
    ];

    pub(super) const fn key(self) -> &'static str {
        match self {
            Self::ObjectName => "objectName",
            Self::ObjectType => "objectType",
            Self::ObjectVersion => "objectVersion",
            Self::ObjectVersionHistory => "objectVersionHistory",
            Self::ObjectAlias => "objectAlias",
            Self::ObjectFormat => "objectFormat",
            Self::ObjectEncoding => "objectEncoding",
            Self::FilePermission => "filePermission",
            Self::Optional => "optional",
            Self::ObjectJsonKey => "objectJsonKey",
            Self::ObjectYamlKey => "objectYamlKey",
            Self::KeyvaultName => "keyvaultName",
            Self::FailoverKeyvaultName => "failoverKeyvaultName",
            Self::ObjectNamePrefix => "objectNamePrefix",
            Self::ObjectTag => "objectTag",
            Self::ObjectMaxCount => "objectMaxCount",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// An object entry's fields: raw scalar text, untrimmed, `None` for null; and the unknown
/// keys that were ignored (the first [`MAX_REPORTED_UNKNOWN_KEYS`], shortened) and their count.
#[derive(Debug, Clone, Default)]
pub(super) struct RawObject {
    fields: Vec<(Field, Option<String>)>,
    unknown: Vec<String>,
    unknown_count: usize,
}

impl RawObject {
    /// The trimmed value of `field`, empty when absent or null.
    pub(super) fn get(&self, field: Field) -> &str {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .and_then(|(_, v)| v.as_deref())
            .map_or("", str::trim)
    }

    /// This selection entry as the entry of one selected secret: `objectName: <name>`,
    /// `objectAlias: <alias>`, without the selection's own keys.
    pub(super) fn for_selected(&self, name: &str, alias: &str) -> Self {
        let mut fields: Vec<(Field, Option<String>)> = self
            .fields
            .iter()
            .filter(|(f, _)| {
                !matches!(
                    f,
                    Field::ObjectName
                        | Field::ObjectAlias
                        | Field::ObjectNamePrefix
                        | Field::ObjectTag
                        | Field::ObjectMaxCount
                )
            })
            .cloned()
            .collect();
        fields.push((Field::ObjectName, Some(name.to_owned())));
        fields.push((Field::ObjectAlias, Some(alias.to_owned())));
        Self {
            fields,
            unknown: Vec::new(),
            unknown_count: 0,
        }
    }
}

fn parse_object_entry(
    entry: Option<&str>,
    index: usize,
    strict: bool,
) -> Result<RawObject, ParamError> {
    let label = ObjectLabel { index, name: None };
    let Some(text) = entry.filter(|t| !t.trim().is_empty()) else {
        return Err(ParamError::InvalidObjectYaml {
            object: label,
            reason: "the entry is empty".to_owned(),
        });
    };
    let mut problem = None;
    let result = ObjectEntry {
        problem: &mut problem,
        index,
        strict,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(text));
    match (result, problem) {
        (_, Some(problem)) => Err(problem),
        (Ok(raw), None) => Ok(raw),
        (Err(e), None) => Err(ParamError::InvalidObjectYaml {
            object: label,
            reason: yaml_reason(&e),
        }),
    }
}

/// One object's YAML: a mapping of known keys to scalars. Stops at the first repeated key,
/// and (`strict`) at the first unknown key; otherwise unknown keys are noted and their values
/// skipped unread, so at most 11 values are ever materialized.
struct ObjectEntry<'p> {
    problem: &'p mut Problem,
    index: usize,
    strict: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectEntry<'_> {
    type Value = RawObject;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectEntry<'_> {
    type Value = RawObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML mapping of object fields (objectName, objectType, ...)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(Field, Option<String>)> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let mut unknown_count = 0usize;
        let index = self.index;
        // Labels in errors name the object when `objectName` came first (it usually does).
        let label = |fields: &[(Field, Option<String>)]| ObjectLabel {
            index,
            name: fields
                .iter()
                .find(|(f, _)| *f == Field::ObjectName)
                .and_then(|(_, v)| v.as_deref())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(snippet),
        };
        while let Some(YamlScalar(key)) = map.next_key::<YamlScalar>()? {
            let key = key.unwrap_or_default();
            let Some(field) = Field::from_key(&key) else {
                if !self.strict {
                    // As the Go provider's YAML decoding: the key and its value (whatever
                    // its shape) are ignored. Only the key is kept, for the log.
                    if let Err(e) = map.next_value::<de::IgnoredAny>() {
                        let problem = ParamError::InvalidObjectYaml {
                            object: label(&fields),
                            reason: snippet_n(&e.to_string(), 200),
                        };
                        return Err(abort(self.problem, problem));
                    }
                    unknown_count = unknown_count.saturating_add(1);
                    if unknown.len() < MAX_REPORTED_UNKNOWN_KEYS {
                        unknown.push(snippet(&key));
                    }
                    continue;
                }
                let object = label(&fields);
                let problem = if key == "objectNotAfter" {
                    ParamError::UnsupportedObjectField {
                        object,
                        field: "objectNotAfter",
                        reason: "akv-bridge does not select versions by date; use \
                                 objectVersion",
                    }
                } else {
                    ParamError::UnknownObjectKey {
                        object,
                        key: snippet(&key),
                    }
                };
                return Err(abort(self.problem, problem));
            };
            if fields.iter().any(|(f, _)| *f == field) {
                let object = label(&fields);
                return Err(abort(
                    self.problem,
                    ParamError::DuplicateObjectKey {
                        object,
                        key: field.key(),
                    },
                ));
            }
            match map.next_value::<YamlScalar>() {
                Ok(YamlScalar(value)) => fields.push((field, value)),
                Err(e) => {
                    // A list or mapping where a single value belongs, or malformed YAML.
                    let problem = ParamError::InvalidObjectField {
                        object: label(&fields),
                        field: field.key(),
                        reason: format!("has an invalid value: {}", snippet_n(&e.to_string(), 200)),
                    };
                    return Err(abort(self.problem, problem));
                }
            }
        }
        Ok(RawObject {
            fields,
            unknown,
            unknown_count,
        })
    }
}

#[cfg(test)]
mod tests;
