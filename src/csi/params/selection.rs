//! Extension: one `objects` entry that mounts every enabled secret whose name starts with
//! `objectNamePrefix` and/or that carries `objectTag`, one file each, up to
//! `objectMaxCount`.
//!
//! | key | meaning |
//! |---|---|
//! | `objectNamePrefix` | secret names starting with this (case-sensitive, as Key Vault names compare) |
//! | `objectTag` | `name=value`: secrets whose tag `name` is exactly `value`; `name`: secrets that have the tag |
//! | `objectMaxCount` | 1..=[`MAX_SELECTED`], default [`DEFAULT_MAX_SELECTED`]: more matches fail the mount, naming the count |
//! | `objectType` | `secret` (the only kind listed) |
//! | `objectAlias` | the directory the files go in (default: the mount's top level) |
//! | `objectEncoding`, `objectJsonKey`, `objectYamlKey`, `filePermission`, `keyvaultName` | as for one object, applied to each |
//! | `optional` | `true`: no match is no file; else no match fails the mount (`NOT_FOUND`) |
//!
//! `objectName`, `objectVersion`, `objectVersionHistory`, `objectFormat: pfx` and
//! `failoverKeyvaultName` are refused with a selection: versions belong to one secret, and a
//! listing of another vault is not the same set.
//!
//! Naming and collisions: each secret's file is `<objectAlias>/<secret name>` (or the name
//! alone), and its object version id is the one it would have listed by name
//! (`secret/<name>`, `secret/<vault>/<name>` from another vault). Each match is checked as
//! if it had been written as an object entry in place of the selection, with every rule of
//! [`super`] (paths, collisions, ids): a secret that is also listed by name, or a file
//! that another entry writes, fails the mount naming both. Matches are taken in name order.

use std::collections::HashMap;

use super::error::{ObjectLabel, ParamError};
use super::objects::{Field, RawObject};
use super::spec::build_object;
use super::{ObjectSpec, VaultName, snippet};

/// The most secrets one selection may mount.
pub const MAX_SELECTED: u32 = 500;

/// `objectMaxCount` when unset.
pub const DEFAULT_MAX_SELECTED: u32 = 50;

/// Longest `objectNamePrefix` / `objectTag` text, in characters.
const MAX_SELECTOR_CHARS: usize = 256;

/// One selection entry, checked.
#[derive(Debug, Clone)]
pub struct SelectionSpec {
    /// Its place in `objects`.
    pub index: usize,
    /// `objectNamePrefix` (empty: any name).
    pub prefix: String,
    /// `objectTag`: the tag's name and, if given, its value.
    pub tag: Option<(String, Option<String>)>,
    /// `objectMaxCount`.
    pub max: u32,
    /// `optional`.
    pub optional: bool,
    /// `keyvaultName`, when it differs from the mount's.
    pub vault: Option<VaultName>,
    /// The entry as written, for building each match as an object entry.
    raw: RawObject,
}

impl SelectionSpec {
    /// Whether a listed secret is selected.
    pub fn matches(&self, name: &str, enabled: bool, tags: &HashMap<String, String>) -> bool {
        enabled
            && name.starts_with(&self.prefix)
            && match &self.tag {
                None => true,
                Some((tag, None)) => tags.contains_key(tag),
                Some((tag, Some(value))) => tags.get(tag) == Some(value),
            }
    }

    /// What it selects, for messages: `secrets named app-* tagged team=payments`.
    pub fn describe(&self) -> String {
        let mut out = String::from("secrets");
        if !self.prefix.is_empty() {
            out.push_str(&format!(" named {}*", self.prefix));
        }
        match &self.tag {
            Some((tag, Some(value))) => out.push_str(&format!(" tagged {tag}={value}")),
            Some((tag, None)) => out.push_str(&format!(" tagged {tag}")),
            None => {}
        }
        out
    }

    /// The entry for one selected secret, as if written `objectName: <name>` with
    /// `objectAlias: <alias>/<name>`.
    pub(super) fn entry_for(
        &self,
        name: &str,
        default_vault: &VaultName,
    ) -> Result<ObjectSpec, ParamError> {
        let alias = match self.raw.get(Field::ObjectAlias) {
            "" => name.to_owned(),
            dir => format!("{}/{name}", dir.trim_end_matches('/')),
        };
        let raw = self.raw.for_selected(name, &alias);
        build_object(&raw, self.index, default_vault)
    }
}

/// Whether an entry is a selection.
pub(super) fn is_selection(raw: &RawObject) -> bool {
    !raw.get(Field::ObjectNamePrefix).is_empty() || !raw.get(Field::ObjectTag).is_empty()
}

/// Checks a selection entry: its own keys, and the rest by building the entry for a name
/// the prefix allows.
pub(super) fn build_selection(
    raw: &RawObject,
    index: usize,
    default_vault: &VaultName,
) -> Result<SelectionSpec, ParamError> {
    let label = ObjectLabel { index, name: None };
    let invalid = |field: Field, reason: String| ParamError::InvalidObjectField {
        object: label.clone(),
        field: field.key(),
        reason,
    };
    let incompatible = |reason| ParamError::IncompatibleObjectFields {
        object: label.clone(),
        reason,
    };
    for (field, reason) in [
        (
            Field::ObjectName,
            "objectName cannot be combined with objectNamePrefix or objectTag: a selection \
             names no single object",
        ),
        (
            Field::ObjectVersion,
            "objectVersion cannot be combined with a selection: versions belong to one secret",
        ),
        (
            Field::ObjectVersionHistory,
            "objectVersionHistory cannot be combined with a selection",
        ),
        (
            Field::FailoverKeyvaultName,
            "failoverKeyvaultName cannot be combined with a selection: another vault's \
             listing is another set of secrets",
        ),
    ] {
        if !raw.get(field).is_empty() {
            return Err(incompatible(reason));
        }
    }
    if !raw.get(Field::ObjectType).eq_ignore_ascii_case("secret") {
        return Err(incompatible(
            "objectNamePrefix and objectTag select secrets: set objectType: secret",
        ));
    }
    let prefix = raw.get(Field::ObjectNamePrefix);
    if prefix.chars().count() > MAX_SELECTOR_CHARS
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(
            Field::ObjectNamePrefix,
            format!(
                "{:?} is not the start of a secret name (letters, digits and '-')",
                snippet(prefix)
            ),
        ));
    }
    let tag = match raw.get(Field::ObjectTag) {
        "" => None,
        text if text.chars().count() > MAX_SELECTOR_CHARS => {
            return Err(invalid(
                Field::ObjectTag,
                format!("is longer than {MAX_SELECTOR_CHARS} characters"),
            ));
        }
        text => {
            let (name, value) = match text.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
                None => (text, None),
            };
            if name.is_empty() {
                return Err(invalid(
                    Field::ObjectTag,
                    "has no tag name: write name=value or name".to_owned(),
                ));
            }
            Some((name.to_owned(), value))
        }
    };
    let max = match raw.get(Field::ObjectMaxCount) {
        "" => DEFAULT_MAX_SELECTED,
        text => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_SELECTED).contains(n))
            .ok_or_else(|| {
                invalid(
                    Field::ObjectMaxCount,
                    format!(
                        "{:?} is not a count from 1 to {MAX_SELECTED}",
                        snippet(text)
                    ),
                )
            })?,
    };
    let selection = SelectionSpec {
        index,
        prefix: prefix.to_owned(),
        tag,
        max,
        optional: false,
        vault: None,
        raw: raw.clone(),
    };
    // Every other key is checked as it will be for each match (a name the prefix allows).
    let probe = if prefix.is_empty() { "x" } else { prefix };
    let template = selection.entry_for(probe, default_vault)?;
    if template.format == super::ObjectFormat::Pfx {
        return Err(incompatible(
            "objectFormat pfx cannot be combined with a selection: selected secrets are \
             written as stored",
        ));
    }
    Ok(SelectionSpec {
        optional: template.optional,
        vault: template.vault,
        ..selection
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn selection(prefix: &str, tag: Option<(&str, Option<&str>)>) -> SelectionSpec {
        SelectionSpec {
            index: 0,
            prefix: prefix.to_owned(),
            tag: tag.map(|(n, v)| (n.to_owned(), v.map(str::to_owned))),
            max: 50,
            optional: false,
            vault: None,
            raw: RawObject::default(),
        }
    }

    #[test]
    fn matching_by_prefix_tag_and_enabled() {
        let s = selection("app-", None);
        assert!(s.matches("app-db", true, &tags(&[])));
        assert!(!s.matches("app-db", false, &tags(&[])));
        assert!(!s.matches("App-db", true, &tags(&[])));
        assert!(!s.matches("other", true, &tags(&[])));
        let s = selection("", Some(("team", Some("payments"))));
        assert!(s.matches("x", true, &tags(&[("team", "payments")])));
        assert!(!s.matches("x", true, &tags(&[("team", "orders")])));
        assert!(!s.matches("x", true, &tags(&[])));
        let s = selection("app-", Some(("mount", None)));
        assert!(s.matches("app-x", true, &tags(&[("mount", "")])));
        assert!(!s.matches("app-x", true, &tags(&[])));
        assert!(!s.matches("x", true, &tags(&[("mount", "")])));
        assert_eq!(
            selection("app-", Some(("team", Some("payments")))).describe(),
            "secrets named app-* tagged team=payments"
        );
    }
}
