//! [`ParamError`], every way a `MountRequest` can be refused, with the [`ObjectLabel`] that
//! names an entry of `objects` and the [`PathError`] rules of a file path.

use std::fmt;

use crate::azure::cloud::CloudError;

use super::{
    IDENTITY_BINDING_AUDIENCE, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS,
    WORKLOAD_IDENTITY_AUDIENCE,
};

/// Which entry of `objects` an error is about: its index, and its `objectName` when known
/// (shortened to 64 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLabel {
    /// Position in the `objects` array, from 0.
    pub index: usize,
    /// The trimmed `objectName`, if the entry has one (possibly invalid, shortened).
    pub name: Option<String>,
}

impl fmt::Display for ObjectLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "objects[{}] ({name:?})", self.index),
            None => write!(f, "objects[{}]", self.index),
        }
    }
}

/// Why a string is not a [`RelativeFilePath`](super::RelativeFilePath). Never contains the path itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("it is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("it is {len} bytes long, more than {MAX_PATH_BYTES}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The path starts with `/`.
    #[error("it is absolute (starts with '/')")]
    Absolute,
    /// The path has more than [`MAX_SEGMENTS`] segments.
    #[error("it has {count} segments, more than {MAX_SEGMENTS}")]
    TooManySegments {
        /// How many segments it has.
        count: usize,
    },
    /// The path has an empty segment: `a//b`, or a trailing `/`.
    #[error("it has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    /// A segment is `.` or `..`.
    #[error("it has a '.' or '..' segment")]
    DotSegment,
    /// A segment starts with `..` (reserved by the driver's atomic writer: `..data`).
    #[error("a segment starts with '..' (reserved by the driver's atomic writer)")]
    DotDotPrefix,
    /// A segment is longer than [`MAX_SEGMENT_BYTES`].
    #[error("a segment is {len} bytes long, more than {MAX_SEGMENT_BYTES}")]
    SegmentTooLong {
        /// The segment's length in bytes.
        len: usize,
    },
    /// The path contains a NUL byte.
    #[error("it contains a NUL byte")]
    Nul,
    /// The path contains a backslash.
    #[error("it contains a backslash")]
    Backslash,
    /// The path contains a control character (newline, tab, DEL, C1 controls...).
    #[error("it contains a control character")]
    Control,
}

/// Errors turning a `MountRequest` into [`MountParams`](super::MountParams). None carries a secret value; values
/// echoed (names, paths, non-secret parameters) are shortened to 64 characters and quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// An input is larger than its limit.
    #[error("{what} is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Which input: `attributes`, `secrets`, `objects`, ...
        what: &'static str,
        /// Its size in bytes (a lower bound when the parse stopped early).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `attributes`, `secrets` or the service-account tokens are not valid JSON of the
    /// expected shape. The reason is a category and a position, never content.
    #[error("{what} is not valid: {reason}")]
    InvalidJson {
        /// Which input.
        what: &'static str,
        /// The category of error and where it is (line, column).
        reason: String,
    },
    /// A value in `attributes` or `secrets` is not a JSON string.
    #[error("{what}: the value of {key:?} must be a JSON string, found {found}")]
    NotAString {
        /// Which input.
        what: &'static str,
        /// The key (shortened).
        key: String,
        /// The JSON type found (never the value).
        found: &'static str,
    },
    /// A key appears twice in `attributes`, or two keys of `secrets` match `clientid` or
    /// `clientsecret` ignoring case.
    #[error("{what} has more than one {key:?} key")]
    DuplicateKey {
        /// Which input.
        what: &'static str,
        /// The key (shortened).
        key: String,
    },
    /// A required parameter is missing or empty.
    #[error("SecretProviderClass parameter `{name}` is not set{hint}")]
    MissingParameter {
        /// The parameter.
        name: &'static str,
        /// Empty, or a note on a key that differs only in case.
        hint: String,
    },
    /// A top-level parameter or pod attribute has an invalid value.
    #[error("`{name}` {reason}")]
    InvalidParameter {
        /// The parameter or attribute.
        name: &'static str,
        /// What is wrong (may quote the shortened value; never for secrets).
        reason: String,
    },
    /// A vault name breaks the naming rule (3-24 characters of `[-A-Za-z0-9]`).
    #[error(
        "{origin}: invalid Key Vault name {name:?}: it must be 3 to 24 characters of letters, \
         digits and '-'"
    )]
    InvalidVaultName {
        /// `keyvaultName`, or the object whose `keyvaultName` it is.
        origin: String,
        /// The rejected name (shortened).
        name: String,
    },
    /// A boolean parameter is not one of Go's `strconv.ParseBool` spellings.
    #[error(
        "`{name}` must be a boolean (true/false, True/False, TRUE/FALSE, t/f, T/F, 1/0), \
         found {value:?}"
    )]
    InvalidBool {
        /// The parameter.
        name: &'static str,
        /// The rejected value (shortened).
        value: String,
    },
    /// `usePodIdentity: true`.
    #[error(
        "usePodIdentity: aad-pod-identity is deprecated and not supported; use workload \
         identity (clientID)"
    )]
    PodIdentityUnsupported,
    /// A parameter selects a feature of the Go provider that akv-bridge does not support.
    #[error("`{name}` is not supported: {reason}")]
    Unsupported {
        /// The parameter.
        name: &'static str,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// `cloudName` is well-formed but names no cloud akv-bridge supports: unknown, or
    /// refused by `crate::azure::cloud::Cloud::parse` (`AzureGermanCloud`). The value is
    /// at most 64 letters and digits, checked before.
    #[error("cloudName: {0}")]
    InvalidCloud(CloudError),
    /// `clientID` and `useVMManagedIdentity: true` are both set.
    #[error(
        "both `clientID` (workload identity) and `useVMManagedIdentity: true` are set: keep \
         one (the Go provider silently used the VM managed identity here)"
    )]
    ConflictingIdentity,
    /// Workload identity is configured but the driver sent no token for its audience.
    #[error(
        "workload identity (clientID) needs the pod's service-account token for audience \
         {WORKLOAD_IDENTITY_AUDIENCE}, and the driver sent none: set `tokenRequests: \
         [{{audience: {WORKLOAD_IDENTITY_AUDIENCE}}}]` on the secrets-store.csi.k8s.io \
         CSIDriver"
    )]
    MissingWorkloadIdentityToken,
    /// Identity binding is configured but the driver sent no token for its audience.
    #[error(
        "identity binding (useAzureTokenProxy) needs the pod's service-account token for \
         audience {IDENTITY_BINDING_AUDIENCE}, and the driver sent none: add \
         `{{audience: {IDENTITY_BINDING_AUDIENCE}}}` to `tokenRequests` on the \
         secrets-store.csi.k8s.io CSIDriver"
    )]
    MissingIdentityBindingToken,
    /// No identity is configured.
    #[error(
        "no identity: set clientID for workload identity, useVMManagedIdentity, or \
         nodePublishSecretRef with clientid/clientsecret{hint}"
    )]
    NoIdentity {
        /// Empty, or a note on a key that differs only in case from `clientID`.
        hint: String,
    },
    /// The `nodePublishSecretRef` Secret has one of `clientid`/`clientsecret` but not the other.
    #[error("the nodePublishSecretRef Secret has no `{missing}` (or it is empty)")]
    IncompleteServicePrincipal {
        /// The missing key.
        missing: &'static str,
    },
    /// The driver's `permission` is not a JSON number in 0..=0o777.
    #[error("permission {value:?} must be a JSON number from 0 to 511 (0777)")]
    InvalidPermission {
        /// The rejected value (shortened).
        value: String,
    },
    /// The driver's `target_path` is not usable.
    #[error("target path {reason}")]
    InvalidTargetPath {
        /// What is wrong.
        reason: &'static str,
    },
    /// The `objects` YAML is malformed or not `array:` of strings.
    #[error("`objects`: {reason}")]
    InvalidObjectsYaml {
        /// What is wrong (parser message with position, shortened).
        reason: String,
    },
    /// The `objects` array is empty.
    #[error("`objects` lists no object (expected `array:` with at least one entry)")]
    NoObjects,
    /// `objects` has more than [`MAX_OBJECTS`](super::MAX_OBJECTS) entries.
    #[error("`objects` has more than {max} entries")]
    TooManyObjects {
        /// The limit.
        max: usize,
    },
    /// The objects would write more than [`MAX_FILES`](super::MAX_FILES) files.
    #[error("the objects would write {count} files (version history included), more than {max}")]
    TooManyFiles {
        /// Files planned so far.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An entry of `objects` is not a YAML mapping, or is malformed.
    #[error("{object}: {reason}")]
    InvalidObjectYaml {
        /// The entry.
        object: ObjectLabel,
        /// What is wrong (parser message with position, shortened).
        reason: String,
    },
    /// An object has a key that is not a known object field (strict parsing only;
    /// otherwise it is ignored and reported).
    #[error(
        "{object}: unknown key {key:?} (known: objectName, objectType, objectVersion, \
         objectVersionHistory, objectAlias, objectFormat, objectEncoding, filePermission, \
         optional, objectJsonKey, keyvaultName; keys are case-sensitive)"
    )]
    UnknownObjectKey {
        /// The object.
        object: ObjectLabel,
        /// The unknown key (shortened).
        key: String,
    },
    /// An object has the same key twice.
    #[error("{object}: key `{key}` appears more than once")]
    DuplicateObjectKey {
        /// The object.
        object: ObjectLabel,
        /// The repeated key.
        key: &'static str,
    },
    /// An object lacks a required field.
    #[error("{object}: `{field}` is required")]
    MissingObjectField {
        /// The object.
        object: ObjectLabel,
        /// The missing field.
        field: &'static str,
    },
    /// An object field has an invalid value.
    #[error("{object}: `{field}` {reason}")]
    InvalidObjectField {
        /// The object.
        object: ObjectLabel,
        /// The field.
        field: &'static str,
        /// What is wrong (may quote the shortened value).
        reason: String,
    },
    /// An object uses a field of the Go provider that akv-bridge does not support.
    #[error("{object}: `{field}` is not supported: {reason}")]
    UnsupportedObjectField {
        /// The object.
        object: ObjectLabel,
        /// The field.
        field: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// Two fields of an object do not go together.
    #[error("{object}: {reason}")]
    IncompatibleObjectFields {
        /// The object.
        object: ObjectLabel,
        /// Which fields and why.
        reason: &'static str,
    },
    /// An object's file path is unsafe.
    #[error("{object}: `{field}` {value:?} is not a safe relative file path: {source}")]
    InvalidFilePath {
        /// The object.
        object: ObjectLabel,
        /// `objectAlias` (or `objectName` when there is no alias).
        field: &'static str,
        /// The path that was refused (shortened); with history, the entry's path.
        value: String,
        /// The rule it breaks.
        source: PathError,
    },
    /// Two objects would write the same file, or one writes a file where the other needs a
    /// directory.
    #[error("{first} and {second} collide on {path:?}: {reason}")]
    PathCollision {
        /// The earlier object.
        first: ObjectLabel,
        /// The later object.
        second: ObjectLabel,
        /// The contested path (shortened).
        path: String,
        /// How they collide.
        reason: &'static str,
    },
    /// No unique object version id could be found for an object. Unreachable by
    /// construction (see the module docs); kept so a bug fails the mount instead of
    /// returning duplicate ids.
    #[error("{object}: no unique object version id")]
    IdCollision {
        /// The object.
        object: ObjectLabel,
    },
}
