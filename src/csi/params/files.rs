//! Where a mount's files go and with which mode: [`RelativeFilePath`], the driver's target
//! path and `permission`, objects' `filePermission`, and paths two objects would share.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::{ObjectLabel, ParamError, PathError};
use super::spec::ObjectSpec;
use super::{MAX_ECHO_CHARS, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS, snippet};

/// A relative, clean file path under the mount's target directory: see the module docs for
/// the rules. Once built it can be joined under any directory without leaving it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativeFilePath(String);

impl RelativeFilePath {
    /// Parses a path, refusing anything that is not relative and clean (see the module docs).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong { len: path.len() });
        }
        if path.contains('\0') {
            return Err(PathError::Nul);
        }
        if path.contains('\\') {
            return Err(PathError::Backslash);
        }
        if path.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let count = path.split('/').count();
        if count > MAX_SEGMENTS {
            return Err(PathError::TooManySegments { count });
        }
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(PathError::DotSegment);
            }
            if segment.starts_with("..") {
                return Err(PathError::DotDotPrefix);
            }
            if segment.len() > MAX_SEGMENT_BYTES {
                return Err(PathError::SegmentTooLong { len: segment.len() });
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path, `/`-separated, exactly as parsed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a [`Path`] (every component is `Normal`).
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// `self/segment`, checked like [`RelativeFilePath::parse`] (for history entries
    /// `<path>/<i>`).
    pub fn join_segment(&self, segment: &str) -> Result<Self, PathError> {
        Self::parse(&format!("{}/{segment}", self.0))
    }

    /// `self` + `suffix` on the last segment (for the `.crt`/`.key` files written beside a
    /// certificate), checked like [`RelativeFilePath::parse`].
    pub fn with_suffix(&self, suffix: &str) -> Result<Self, PathError> {
        Self::parse(&format!("{}{suffix}", self.0))
    }

    /// The proper ancestor directories, shortest first: `a`, `a/b` for `a/b/c`.
    fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0
            .match_indices('/')
            .filter_map(|(at, _)| self.0.get(..at))
    }
}

impl fmt::Debug for RelativeFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RelativeFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Path> for RelativeFilePath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

pub(super) fn parse_permission(text: &str) -> Result<u32, ParamError> {
    let invalid = || ParamError::InvalidPermission {
        value: snippet(text),
    };
    if text.len() > MAX_ECHO_CHARS {
        return Err(invalid());
    }
    match serde_json::from_str::<u32>(text) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(invalid()),
    }
}

pub(super) fn parse_target_path(text: &str) -> Result<PathBuf, ParamError> {
    let invalid = |reason| Err(ParamError::InvalidTargetPath { reason });
    if !text.starts_with('/') {
        return invalid("must be an absolute path");
    }
    if text.contains('\0') {
        return invalid("must not contain a NUL byte");
    }
    if text.len() > MAX_PATH_BYTES {
        return invalid("is longer than 4096 bytes");
    }
    Ok(PathBuf::from(text))
}

/// `filePermission`: empty → `None`; octal digits (at most 8) with a value ≤ 0o777.
pub(super) fn parse_file_permission(text: &str) -> Result<Option<u32>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "{:?} must be an octal file mode from 0000 to 0777, like \"0600\"",
            snippet(text)
        )
    };
    if text.len() > 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'7')) {
        return Err(bad());
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(Some(mode)),
        _ => Err(bad()),
    }
}

/// Refuses two objects writing the same file, or a file where another object needs a
/// directory.
pub(super) fn check_collisions(specs: &[ObjectSpec]) -> Result<(), ParamError> {
    let label = |i: usize| ObjectLabel {
        index: i,
        name: specs.get(i).map(|s| snippet(s.name.as_str())),
    };
    let collision = |first: usize, second: usize, path: &str, reason| ParamError::PathCollision {
        first: label(first),
        second: label(second),
        path: snippet(path),
        reason,
    };
    let mut files: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dirs: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        for file in &spec.files {
            let path = file.path.as_str();
            if let Some(&j) = files.get(path) {
                return Err(collision(j, i, path, "both write this file"));
            }
            if let Some(&j) = dirs.get(path) {
                return Err(collision(
                    j,
                    i,
                    path,
                    "the first needs it as a directory, the second writes it as a file",
                ));
            }
            for dir in file.path.ancestors() {
                if let Some(&j) = files.get(dir) {
                    return Err(collision(
                        j,
                        i,
                        dir,
                        "the first writes it as a file, the second needs it as a directory",
                    ));
                }
                dirs.entry(dir).or_insert(i);
            }
            files.insert(path, i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
