//! One entry of `objects` as an [`ObjectSpec`]: name, type, version, history, format,
//! encoding, mode, extensions and planned files, checked together; then the object version
//! ids of the whole mount.

use std::collections::BTreeSet;
use std::fmt;

use super::attributes::parse_go_bool;
use super::error::{ObjectLabel, ParamError};
use super::field_path::{self, Document, FieldSelector};
use super::files::{RelativeFilePath, parse_file_permission};
use super::objects::{Field, RawObject};
use super::{MAX_JSON_KEY_BYTES, MAX_VERSION_HISTORY, VaultName, snippet};

/// A Key Vault object (secret, key or certificate) name: 1-127 characters of `[-A-Za-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

impl ObjectName {
    /// Parses an object name (1-127 characters of `[-A-Za-z0-9]`); `None` if it breaks the
    /// rule. The caller trims.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = (1..=127).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Key Vault object type (`objectType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `secret`: a secret's value (also a certificate's key and chain).
    Secret,
    /// `key`: a key's public part, PEM.
    Key,
    /// `cert`: a certificate's leaf, PEM.
    Cert,
}

impl ObjectKind {
    /// The canonical spelling, as used in object version ids: `secret`, `key`, `cert`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Cert => "cert",
        }
    }
}

/// How a certificate-backed secret is written (`objectFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObjectFormat {
    /// PEM (the default): a PFX is converted to PEM key + chain.
    #[default]
    Pem,
    /// The PFX as stored (secrets only).
    Pfx,
}

/// How a secret's value is decoded before it is written (`objectEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObjectEncoding {
    /// As-is (the default).
    #[default]
    Utf8,
    /// Hex-decoded.
    Hex,
    /// Base64-decoded (standard alphabet).
    Base64,
}

/// One file an object writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// Where, relative to the target path.
    pub path: RelativeFilePath,
    /// The `ObjectVersion.id` to report for it (unique within the mount).
    pub id: String,
    /// `None` for a plain object; `Some(i)` for history entry `i` (0 = newest), `i` in
    /// `0..=history`.
    pub history_index: Option<u32>,
}

/// One entry of `objects`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `objectName`.
    pub name: ObjectName,
    /// `objectType`.
    pub kind: ObjectKind,
    /// `objectVersion`: `None` for the newest (empty or `latest`); else 1-64 characters of
    /// `[A-Za-z0-9]`.
    pub version: Option<String>,
    /// `objectVersionHistory`, normalized: 0 for a single file (written 0, 1 or absent),
    /// else 2..=[`MAX_VERSION_HISTORY`].
    pub history: u32,
    /// The base file path: `objectAlias`, else `objectName`.
    pub path: RelativeFilePath,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`, if set (else the mount's default mode).
    pub mode: Option<u32>,
    /// Extension `optional`: skip the object if it does not exist, instead of failing.
    pub optional: bool,
    /// Extensions `objectJsonKey` and `objectYamlKey`: write only the value at this path of
    /// the secret's JSON or YAML value.
    pub field: Option<FieldSelector>,
    /// Extension `keyvaultName`: the vault to read from, when it differs from the mount's.
    pub vault: Option<VaultName>,
    /// Extension `failoverKeyvaultName`: the vault to read from when this object's vault is
    /// unreachable or throttling (see [`MountParams::failover_for`](super::MountParams::failover_for)).
    pub failover: Option<VaultName>,
    /// The base object version id (see the module docs); each of [`ObjectSpec::files`] has
    /// its own, equal to this one for a plain object.
    pub id: String,
    /// The files this object writes, in order: one, or `history + 1` entries `<path>/<i>`
    /// (the Go provider's count, one more than `objectVersionHistory` says).
    pub files: Vec<ObjectFile>,
}

pub(super) fn build_object(
    raw: &RawObject,
    index: usize,
    default_vault: &VaultName,
) -> Result<ObjectSpec, ParamError> {
    let name_text = raw.get(Field::ObjectName);
    let object = ObjectLabel {
        index,
        name: (!name_text.is_empty()).then(|| snippet(name_text)),
    };
    let invalid = |field: Field, reason: String| ParamError::InvalidObjectField {
        object: object.clone(),
        field: field.key(),
        reason,
    };
    let incompatible = |reason| ParamError::IncompatibleObjectFields {
        object: object.clone(),
        reason,
    };

    if name_text.is_empty() {
        return Err(ParamError::MissingObjectField {
            object,
            field: Field::ObjectName.key(),
        });
    }
    let name = ObjectName::parse(name_text).ok_or_else(|| {
        invalid(
            Field::ObjectName,
            "must be 1 to 127 characters of letters, digits and '-'".to_owned(),
        )
    })?;

    let kind = match raw.get(Field::ObjectType).to_ascii_lowercase().as_str() {
        "" => {
            return Err(ParamError::MissingObjectField {
                object,
                field: Field::ObjectType.key(),
            });
        }
        "secret" => ObjectKind::Secret,
        "key" => ObjectKind::Key,
        "cert" => ObjectKind::Cert,
        _ => {
            return Err(invalid(
                Field::ObjectType,
                format!(
                    "{:?} must be secret, key or cert",
                    snippet(raw.get(Field::ObjectType))
                ),
            ));
        }
    };

    let version = match raw.get(Field::ObjectVersion) {
        v if v.is_empty() || v.eq_ignore_ascii_case("latest") => None,
        v if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(v.to_owned()),
        v => {
            return Err(invalid(
                Field::ObjectVersion,
                format!(
                    "{:?} must be empty, `latest`, or a version id (1-64 letters and digits)",
                    snippet(v)
                ),
            ));
        }
    };

    let history = parse_history(raw.get(Field::ObjectVersionHistory))
        .map_err(|reason| invalid(Field::ObjectVersionHistory, reason))?;

    let format = match raw.get(Field::ObjectFormat) {
        "" => ObjectFormat::Pem,
        v if v.eq_ignore_ascii_case("pem") => ObjectFormat::Pem,
        v if v.eq_ignore_ascii_case("pfx") => ObjectFormat::Pfx,
        v => {
            return Err(invalid(
                Field::ObjectFormat,
                format!("{:?} must be pem or pfx", snippet(v)),
            ));
        }
    };
    if format == ObjectFormat::Pfx && kind != ObjectKind::Secret {
        return Err(incompatible(
            "objectFormat pfx is only supported with objectType secret (use secret to read \
             a certificate's PFX)",
        ));
    }

    let encoding_text = raw.get(Field::ObjectEncoding);
    let encoding = match encoding_text {
        "" => ObjectEncoding::Utf8,
        v if v.eq_ignore_ascii_case("utf-8") => ObjectEncoding::Utf8,
        v if v.eq_ignore_ascii_case("hex") => ObjectEncoding::Hex,
        v if v.eq_ignore_ascii_case("base64") => ObjectEncoding::Base64,
        v => {
            return Err(invalid(
                Field::ObjectEncoding,
                format!("{:?} must be utf-8, hex or base64", snippet(v)),
            ));
        }
    };
    if !encoding_text.is_empty() && kind != ObjectKind::Secret {
        return Err(incompatible(
            "objectEncoding is only supported with objectType secret",
        ));
    }

    let mode = parse_file_permission(raw.get(Field::FilePermission))
        .map_err(|reason| invalid(Field::FilePermission, reason))?;

    let optional = match raw.get(Field::Optional) {
        "" => false,
        v => parse_go_bool(v).ok_or_else(|| {
            invalid(
                Field::Optional,
                format!(
                    "{:?} must be a boolean (true/false, True/False, TRUE/FALSE, t/f, T/F, 1/0)",
                    snippet(v)
                ),
            )
        })?,
    };

    let field = match (raw.get(Field::ObjectJsonKey), raw.get(Field::ObjectYamlKey)) {
        ("", "") => None,
        (json, yaml) if !json.is_empty() && !yaml.is_empty() => {
            return Err(incompatible(
                "objectJsonKey and objectYamlKey cannot both be set",
            ));
        }
        (json, yaml) => {
            let (name, document, path) = if json.is_empty() {
                (Field::ObjectYamlKey, Document::Yaml, yaml)
            } else {
                (Field::ObjectJsonKey, Document::Json, json)
            };
            if path.len() > MAX_JSON_KEY_BYTES {
                return Err(invalid(
                    name,
                    format!("is longer than {MAX_JSON_KEY_BYTES} bytes"),
                ));
            }
            // objectJsonKey was one top-level key before it took paths, so any text stays
            // acceptable there (it is tried as a whole key first); objectYamlKey is new
            // and must be a path.
            if document == Document::Yaml
                && let Err(reason) = field_path::parse(path)
            {
                return Err(invalid(name, format!("is not a path: it {reason}")));
            }
            let json = document == Document::Json;
            if kind != ObjectKind::Secret {
                return Err(incompatible(if json {
                    "objectJsonKey is only supported with objectType secret"
                } else {
                    "objectYamlKey is only supported with objectType secret"
                }));
            }
            if format == ObjectFormat::Pfx {
                return Err(incompatible(if json {
                    "objectJsonKey cannot be combined with objectFormat pfx"
                } else {
                    "objectYamlKey cannot be combined with objectFormat pfx"
                }));
            }
            if encoding != ObjectEncoding::Utf8 {
                return Err(incompatible(if json {
                    "objectJsonKey cannot be combined with objectEncoding hex or base64"
                } else {
                    "objectYamlKey cannot be combined with objectEncoding hex or base64"
                }));
            }
            Some(FieldSelector {
                document,
                path: path.to_owned(),
            })
        }
    };

    let vault = match raw.get(Field::KeyvaultName) {
        "" => None,
        v => {
            let parsed = VaultName::parse(v).ok_or_else(|| ParamError::InvalidVaultName {
                origin: format!("{object} keyvaultName"),
                name: snippet(v),
            })?;
            (!parsed.as_str().eq_ignore_ascii_case(default_vault.as_str())).then_some(parsed)
        }
    };
    let failover = match raw.get(Field::FailoverKeyvaultName) {
        "" => None,
        v => {
            let parsed = VaultName::parse(v).ok_or_else(|| ParamError::InvalidVaultName {
                origin: format!("{object} failoverKeyvaultName"),
                name: snippet(v),
            })?;
            let primary = vault.as_ref().unwrap_or(default_vault);
            if !raw.get(Field::ObjectVersion).is_empty()
                && !raw.get(Field::ObjectVersion).eq_ignore_ascii_case("latest")
            {
                return Err(incompatible(
                    "failoverKeyvaultName cannot be combined with a pinned objectVersion: \
                     version ids belong to one vault",
                ));
            }
            if parsed.as_str().eq_ignore_ascii_case(primary.as_str()) {
                return Err(invalid(
                    Field::FailoverKeyvaultName,
                    "names the vault the object is read from; a failover vault is another one"
                        .to_owned(),
                ));
            }
            Some(parsed)
        }
    };

    let alias = raw.get(Field::ObjectAlias);
    let (path_field, path_text) = if alias.is_empty() {
        (Field::ObjectName, name.as_str())
    } else {
        (Field::ObjectAlias, alias)
    };
    let bad_path = |value: &str, source| ParamError::InvalidFilePath {
        object: object.clone(),
        field: path_field.key(),
        value: snippet(value),
        source,
    };
    let path = RelativeFilePath::parse(path_text).map_err(|e| bad_path(path_text, e))?;

    let files = if history == 0 {
        vec![ObjectFile {
            path: path.clone(),
            id: String::new(),
            history_index: None,
        }]
    } else {
        // N + 1 files, as the Go provider writes (see the module docs).
        (0..=history)
            .map(|i| {
                let segment = i.to_string();
                let file = path
                    .join_segment(&segment)
                    .map_err(|e| bad_path(&format!("{path}/{segment}"), e))?;
                Ok(ObjectFile {
                    path: file,
                    id: String::new(),
                    history_index: Some(i),
                })
            })
            .collect::<Result<Vec<_>, ParamError>>()?
    };

    Ok(ObjectSpec {
        name,
        kind,
        version,
        history,
        path,
        format,
        encoding,
        mode,
        optional,
        field,
        vault,
        failover,
        id: String::new(),
        files,
    })
}

/// `objectVersionHistory`: empty → 0; decimal 0..=100 (leading `+` and zeros allowed); 1 is
/// normalized to 0.
fn parse_history(text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let bad = || {
        format!(
            "{:?} must be a whole number from 0 to {MAX_VERSION_HISTORY}",
            snippet(text)
        )
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = text.strip_prefix('-') {
        return Err(if all_digits(rest) {
            "must not be negative".to_owned()
        } else {
            bad()
        });
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    if !all_digits(digits) {
        return Err(bad());
    }
    let significant = digits.trim_start_matches('0');
    let value = if significant.is_empty() {
        0
    } else if significant.len() > 3 {
        u32::MAX
    } else {
        significant.parse::<u32>().map_err(|_| bad())?
    };
    if value > MAX_VERSION_HISTORY {
        return Err(format!(
            "{:?} is more than the maximum, {MAX_VERSION_HISTORY}",
            snippet(text)
        ));
    }
    Ok(if value <= 1 { 0 } else { value })
}

/// Assigns object version ids (rule in the module docs).
pub(super) fn assign_ids(specs: &mut [ObjectSpec]) -> Result<(), ParamError> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (index, spec) in specs.iter_mut().enumerate() {
        let base = match &spec.vault {
            Some(vault) => format!("{}/{vault}/{}", spec.kind.as_str(), spec.name),
            None => format!("{}/{}", spec.kind.as_str(), spec.name),
        };
        let ids_for = |candidate: &str| -> Vec<String> {
            if spec.history == 0 {
                vec![candidate.to_owned()]
            } else {
                (0..=spec.history)
                    .map(|i| format!("{candidate}/{i}"))
                    .collect()
            }
        };
        // Each taken id blocks at most one candidate, so one of these is free.
        let attempts = taken.len().saturating_add(2);
        let mut chosen = None;
        for attempt in 0..attempts {
            let candidate = match attempt {
                0 => base.clone(),
                1 => format!("{base}#{}", spec.path),
                n => format!("{base}#{}#{n}", spec.path),
            };
            let ids = ids_for(&candidate);
            if ids.iter().all(|id| !taken.contains(id)) {
                chosen = Some((candidate, ids));
                break;
            }
        }
        let Some((candidate, ids)) = chosen else {
            return Err(ParamError::IdCollision {
                object: ObjectLabel {
                    index,
                    name: Some(snippet(spec.name.as_str())),
                },
            });
        };
        for (file, id) in spec.files.iter_mut().zip(ids) {
            file.id = id.clone();
            taken.insert(id);
        }
        spec.id = candidate;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
