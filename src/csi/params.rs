//! What the Secrets Store CSI Driver sends in a `MountRequest`, parsed into typed, validated
//! values: [`parse_mount`] → [`MountParams`].
//!
//! Pure: no I/O, no clock, no environment. Every input byte is attacker-controlled (a pod
//! author can set volume attributes, a namespace admin writes the SecretProviderClass), so
//! nothing here panics, every input is size-bounded before it is parsed, and every failure
//! is a [`ParamError`] that names the parameter or object at fault. Errors never contain a
//! secret value: JSON errors are reduced to a category and a position, and the client
//! secret and service-account tokens are never formatted.
//!
//! # Inputs
//!
//! - `attributes`: a JSON object of strings, the SecretProviderClass `parameters` merged with
//!   the pod information the driver adds (`csi.storage.k8s.io/pod.name`, `.../pod.namespace`,
//!   `.../pod.uid`, `.../serviceAccount.name`, `.../ephemeral`, `.../serviceAccount.tokens`)
//!   and `secretProviderClass`. A key given twice is refused. Keys are case-sensitive, as in
//!   the Go provider; when a required parameter is missing but a key differing only in case
//!   is present, the error says so.
//! - `secrets`: a JSON object of strings (or `null`, or empty), the data of the pod's
//!   `nodePublishSecretRef` Secret. `clientid` and `clientsecret` are matched
//!   case-insensitively; two keys matching the same name are refused (the Go provider picks
//!   one at random).
//! - `permission`: the driver's default file mode as a JSON number (`"420"` is `0644`),
//!   0..=0o777.
//! - `target_path`: kept as given once checked absolute, NUL-free and at most 4096 bytes.
//!
//! # Parameters
//!
//! Values are whitespace-trimmed. Booleans follow Go's `strconv.ParseBool` (`1 t T TRUE true
//! True 0 f F FALSE false False`); empty means `false`.
//!
//! | parameter | meaning |
//! |---|---|
//! | `keyvaultName` | required; 3-24 characters of `[-A-Za-z0-9]` (the Go provider's rule) |
//! | `tenantID` (legacy `tenantId`) | required; `tenantID` wins when both are set; 1-253 characters of `[-.A-Za-z0-9]` (a GUID or a domain: it becomes part of the Entra URL) |
//! | `cloudName` | trimmed and returned as [`MountParams::cloud`] for `crate::azure::cloud::Cloud::parse`; empty means `AzurePublicCloud`; `AzureStackCloud` is refused |
//! | `cloudEnvFileName` | refused: custom cloud environment files are not supported |
//! | `usePodIdentity` | `true` is refused: aad-pod-identity is deprecated |
//! | `usePodServiceAccountAnnotation` | `true` is refused: akv-bridge does not read the Kubernetes API; set `clientID` |
//! | `useVMManagedIdentity`, `userAssignedIdentityID` | managed identity (system-assigned, or the user-assigned identity with that client id) |
//! | `clientID` | workload identity |
//! | `objects` | required; see below |
//!
//! Identity ([`AuthMode`]):
//! - `clientID` set: workload identity, with the pod's token for the audience
//!   [`WORKLOAD_IDENTITY_AUDIENCE`] from `csi.storage.k8s.io/serviceAccount.tokens`;
//! - else `useVMManagedIdentity: true`: managed identity;
//! - else a service principal from `secrets` (`clientid` + `clientsecret`).
//!
//! `clientID` together with `useVMManagedIdentity: true` is refused
//! ([`ParamError::ConflictingIdentity`]): the Go provider silently uses the managed identity
//! there, and choosing either silently risks reading secrets with an identity the operator
//! did not mean. Client ids (`clientID`, `userAssignedIdentityID`, the secret's `clientid`)
//! must be 1-128 characters of `[-._A-Za-z0-9]` (they are GUIDs).
//!
//! # Objects
//!
//! `objects` is a YAML document `array:` whose entries are YAML strings (`- |`), each a YAML
//! mapping describing one object. Every value is trimmed; `null` or empty means unset. Keys
//! are case-sensitive and an unknown or repeated key is an error naming it: a typo must not
//! silently change what is mounted (the Go provider ignores unknown keys). The Go provider's
//! `objectNotAfter` is refused as unsupported rather than ignored.
//!
//! | key | meaning |
//! |---|---|
//! | `objectName` | required; 1-127 characters of `[-A-Za-z0-9]` |
//! | `objectType` | required; `secret`, `key` or `cert` (case-insensitive) |
//! | `objectVersion` | empty or `latest` (case-insensitive): the newest; else 1-64 characters of `[A-Za-z0-9]` |
//! | `objectVersionHistory` | decimal, 0..=100; 0 and 1 mean a single file (as in the Go provider), N ≥ 2 mounts the N newest versions starting at `objectVersion` |
//! | `objectAlias` | the file path (a [`RelativeFilePath`], may contain `/`); default `objectName` |
//! | `objectFormat` | `pem` (default) or `pfx` (case-insensitive); `pfx` only with `secret` |
//! | `objectEncoding` | `utf-8` (default), `hex` or `base64` (case-insensitive); only with `secret` |
//! | `filePermission` | octal digits (`0600`, `600`; quoted or not), at most `0777`; default: the driver's `permission` |
//!
//! ## akv-bridge extensions
//!
//! - `optional` (boolean, Go syntax, default `false`): when Key Vault says the object (or
//!   the requested version) does not exist, its files are skipped instead of failing the
//!   whole mount. Every other failure (forbidden, throttled, unreachable, undecodable) still
//!   fails it.
//! - `objectJsonKey` (string, at most 1024 bytes): the secret's value is a JSON object and
//!   only this top-level key's value is written: a JSON string as its text, any other JSON
//!   value serialized as JSON. Only with `objectType: secret`, not with `objectFormat: pfx`,
//!   and with no `objectEncoding` other than `utf-8`.
//! - `keyvaultName` (same rule as the top-level one): read this object from another vault
//!   of the same tenant, cloud and identity, so one SecretProviderClass can read several
//!   vaults. A value equal (ignoring ASCII case) to the top-level vault is no override.
//!
//! ## Files
//!
//! An object's file path is its alias, else its name. With `objectVersionHistory: N` (N ≥ 2)
//! the files are `<path>/0` (newest) .. `<path>/<N-1>`, as in the Go provider; fewer are
//! written when fewer versions exist. [`ObjectSpec::files`] lists the planned files. Two
//! objects may not write the same file, and no object may write a file where another needs
//! a directory (`a` and `a/0`, or `a` and `a/b`); both are errors naming both objects.
//!
//! ## Object version ids
//!
//! Each file's `ObjectVersion.id` (sent back to the driver, shown in
//! SecretProviderClassPodStatus) is, in order of the objects:
//! - `<type>/<name>` for a plain object, `<type>/<name>/<i>` for history entry `i`
//!   (the Go provider's ids);
//! - `<type>/<vault>/<name>` (and `.../<i>`) when the object's vault is overridden;
//! - when any id of an object is already taken by an earlier object (the same object
//!   mounted twice, say as `pem` and as `pfx`), that object's base id becomes
//!   `<base>#<path>` (its file path, unique within the mount), then `<base>#<path>#2`,
//!   `#3`, ... until none of its ids is taken. `#` cannot occur in a name, type or vault, so
//!   the first object keeps the Go provider's id and later ones are stable across mounts.
//!
//! # File paths
//!
//! [`RelativeFilePath`] accepts only relative, clean paths: non-empty, at most 4096 bytes
//! and 16 segments, segments of at most 255 bytes separated by single `/`; no leading or
//! trailing `/`, no empty, `.` or `..` segment, no segment starting with `..` (the driver's
//! atomic writer keeps `..data` and `..<timestamp>` beside the files, and Kubernetes refuses
//! such names), no NUL, backslash or control character. Nothing is decoded: `%2e%2e` is
//! an ordinary file name of six characters, and so is `...`. Other UTF-8 is allowed.
//!
//! # Limits
//!
//! `attributes` and `secrets` at most [`MAX_JSON_BYTES`] each; `objects` at most
//! [`MAX_OBJECTS_YAML_BYTES`] (also after YAML alias expansion), [`MAX_OBJECTS`] entries and
//! [`MAX_FILES`] files in all (history included), `objectVersionHistory` at most
//! [`MAX_VERSION_HISTORY`]. YAML and JSON nesting is bounded by the parsers (128 levels).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

/// Largest `attributes` or `secrets` JSON accepted, in bytes.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// Largest `objects` YAML accepted, in bytes; also the bound on the total size of its
/// entries after alias expansion.
pub const MAX_OBJECTS_YAML_BYTES: usize = 256 * 1024;
/// Most entries in `objects`.
pub const MAX_OBJECTS: usize = 256;
/// Most files one mount may plan (each history entry is a file): bounds the Key Vault
/// requests of one mount.
pub const MAX_FILES: usize = 1024;
/// Largest `objectVersionHistory`.
pub const MAX_VERSION_HISTORY: u32 = 100;
/// Longest [`RelativeFilePath`], in bytes (Linux `PATH_MAX`, the driver's limit).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest segment of a [`RelativeFilePath`], in bytes (Linux `NAME_MAX`, the driver's limit).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Most segments in a [`RelativeFilePath`].
pub const MAX_SEGMENTS: usize = 16;
/// Longest `objectJsonKey`, in bytes.
pub const MAX_JSON_KEY_BYTES: usize = 1024;
/// The service-account token audience workload identity exchanges with Entra.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The cloud name used when `cloudName` is empty.
pub const DEFAULT_CLOUD: &str = "AzurePublicCloud";

const P_KEYVAULT_NAME: &str = "keyvaultName";
const P_TENANT_ID: &str = "tenantID";
const P_TENANT_ID_LEGACY: &str = "tenantId";
const P_CLOUD_NAME: &str = "cloudName";
const P_CLOUD_ENV_FILE_NAME: &str = "cloudEnvFileName";
const P_USE_POD_IDENTITY: &str = "usePodIdentity";
const P_USE_POD_SA_ANNOTATION: &str = "usePodServiceAccountAnnotation";
const P_USE_VM_MANAGED_IDENTITY: &str = "useVMManagedIdentity";
const P_USER_ASSIGNED_IDENTITY_ID: &str = "userAssignedIdentityID";
const P_CLIENT_ID: &str = "clientID";
const P_OBJECTS: &str = "objects";
const A_POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const A_POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const A_POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const A_SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
const A_EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
const A_SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const A_SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
const S_CLIENT_ID: &str = "clientid";
const S_CLIENT_SECRET: &str = "clientsecret";

/// Longest pod attribute (name, namespace, uid, service account, class name) accepted.
const MAX_POD_ATTRIBUTE_BYTES: usize = 253;
/// Longest value echoed in an error message, in characters.
const MAX_ECHO_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

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

/// Why a string is not a [`RelativeFilePath`]. Never contains the path itself.
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

/// Errors turning a `MountRequest` into [`MountParams`]. None carries a secret value; values
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
    /// `objects` has more than [`MAX_OBJECTS`] entries.
    #[error("`objects` has more than {max} entries")]
    TooManyObjects {
        /// The limit.
        max: usize,
    },
    /// The objects would write more than [`MAX_FILES`] files.
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
    /// An object has a key that is not a known object field.
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

// ---------------------------------------------------------------------------------------
// Secret values
// ---------------------------------------------------------------------------------------

/// A Kubernetes service-account token (a JWT) the driver requested for the pod. Zeroized on
/// drop; `Debug` prints `[redacted]`; no `Display`, `Clone` or `Serialize`.
pub struct ServiceAccountToken(Zeroizing<String>);

impl ServiceAccountToken {
    /// The token, to hand to the credential as a client assertion. The only way out.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceAccountToken([redacted])")
    }
}

impl<'de> de::Deserialize<'de> for ServiceAccountToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(ZeroizingStringVisitor)
            .map(ServiceAccountToken)
    }
}

/// A service principal's client secret, from the `nodePublishSecretRef` Secret. Zeroized on
/// drop; `Debug` prints `[redacted]`; no `Display`, `Clone` or `Serialize`.
pub struct ClientSecret(Zeroizing<String>);

impl ClientSecret {
    /// The secret, to hand to the credential. The only way out.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// Deserializes a JSON string straight into a zeroizing buffer.
struct ZeroizingStringVisitor;

impl Visitor<'_> for ZeroizingStringVisitor {
    type Value = Zeroizing<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Zeroizing::new(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Zeroizing::new(v))
    }
}

// ---------------------------------------------------------------------------------------
// Output types
// ---------------------------------------------------------------------------------------

/// A Key Vault name: 3-24 characters of `[-A-Za-z0-9]`, kept as written (DNS names are
/// case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultName(String);

impl VaultName {
    /// Parses a vault name by the Go provider's rule (3-24 characters of `[-A-Za-z0-9]`);
    /// `None` if it breaks it. The caller trims.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = (3..=24).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// One file an object writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// Where, relative to the target path.
    pub path: RelativeFilePath,
    /// The `ObjectVersion.id` to report for it (unique within the mount).
    pub id: String,
    /// `None` for a plain object; `Some(i)` for history entry `i` (0 = newest).
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
    /// Extension `objectJsonKey`: write only this top-level key of the secret's JSON value.
    pub json_key: Option<String>,
    /// Extension `keyvaultName`: the vault to read from, when it differs from the mount's.
    pub vault: Option<VaultName>,
    /// The base object version id (see the module docs); each of [`ObjectSpec::files`] has
    /// its own, equal to this one for a plain object.
    pub id: String,
    /// The files this object writes, in order: one, or `history` entries `<path>/<i>`.
    pub files: Vec<ObjectFile>,
}

/// How the provider authenticates to Entra for this mount.
#[derive(Debug)]
pub enum AuthMode {
    /// Workload identity: exchange the pod's service-account token for an Entra token of
    /// `client_id` (an app registration or user-assigned identity).
    WorkloadIdentity {
        /// `clientID`.
        client_id: String,
        /// The pod's token for [`WORKLOAD_IDENTITY_AUDIENCE`].
        token: ServiceAccountToken,
        /// The token's `expirationTimestamp` as the driver sent it (RFC 3339), if any.
        token_expiration: Option<String>,
    },
    /// The node's managed identity (IMDS).
    ManagedIdentity {
        /// `userAssignedIdentityID`: the client id of a user-assigned identity; `None` for
        /// the system-assigned one.
        user_assigned_client_id: Option<String>,
    },
    /// A service principal with a client secret from the `nodePublishSecretRef` Secret.
    ServicePrincipal {
        /// The Secret's `clientid`.
        client_id: String,
        /// The Secret's `clientsecret`.
        client_secret: ClientSecret,
    },
}

/// The pod the volume is for, as the driver reports it (all `None` when the CSIDriver does
/// not set `podInfoOnMount`). Trimmed, at most 253 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    /// `csi.storage.k8s.io/pod.namespace`.
    pub namespace: Option<String>,
    /// `csi.storage.k8s.io/pod.name`.
    pub name: Option<String>,
    /// `csi.storage.k8s.io/pod.uid`.
    pub uid: Option<String>,
    /// `csi.storage.k8s.io/serviceAccount.name`.
    pub service_account: Option<String>,
    /// `csi.storage.k8s.io/ephemeral`: an inline (ephemeral) volume.
    pub ephemeral: bool,
}

/// Everything a mount needs, validated. `Debug` never prints the token or client secret.
#[derive(Debug)]
pub struct MountParams {
    /// `keyvaultName`: the vault objects are read from unless they override it.
    pub vault: VaultName,
    /// `tenantID` (or `tenantId`).
    pub tenant_id: String,
    /// `cloudName`, trimmed, [`DEFAULT_CLOUD`] when empty; for
    /// `crate::azure::cloud::Cloud::parse` (which refuses unknown names).
    pub cloud: String,
    /// The identity to use.
    pub auth: AuthMode,
    /// `objects`, in order, with their files and ids.
    pub objects: Vec<ObjectSpec>,
    /// The pod.
    pub pod: PodInfo,
    /// `secretProviderClass`: the SecretProviderClass name, for logs.
    pub secret_provider_class: Option<String>,
    /// The driver's default file mode (`permission`), 0..=0o777.
    pub default_mode: u32,
    /// Where the driver mounts the files (absolute; owned by the driver).
    pub target_path: PathBuf,
}

impl MountParams {
    /// The vault `object` is read from: its own, else the mount's.
    pub fn vault_for<'a>(&'a self, object: &'a ObjectSpec) -> &'a VaultName {
        object.vault.as_ref().unwrap_or(&self.vault)
    }

    /// The mode of `file`s of `object`: its `filePermission`, else the default.
    pub fn mode_for(&self, object: &ObjectSpec) -> u32 {
        object.mode.unwrap_or(self.default_mode)
    }
}

// ---------------------------------------------------------------------------------------
// parse_mount
// ---------------------------------------------------------------------------------------

/// Parses the strings of a `MountRequest` (`attributes`, `secrets`, `permission`,
/// `target_path`) into [`MountParams`]. See the module docs for every rule.
pub fn parse_mount(
    attributes: &str,
    secrets: &str,
    permission: &str,
    target_path: &str,
) -> Result<MountParams, ParamError> {
    let attrs = Attributes::parse(attributes)?;
    let secrets = parse_string_map::<Zeroizing<String>>("secrets", secrets)?;
    let default_mode = parse_permission(permission)?;
    let target_path = parse_target_path(target_path)?;

    let vault_name = attrs.required(P_KEYVAULT_NAME)?;
    let vault = VaultName::parse(vault_name).ok_or_else(|| ParamError::InvalidVaultName {
        origin: P_KEYVAULT_NAME.to_owned(),
        name: snippet(vault_name),
    })?;
    let tenant_id = parse_tenant(&attrs)?;
    let cloud = parse_cloud(&attrs)?;
    if !attrs.trimmed(P_CLOUD_ENV_FILE_NAME).is_empty() {
        return Err(ParamError::Unsupported {
            name: P_CLOUD_ENV_FILE_NAME,
            reason: "custom cloud environment files are not supported; use AzurePublicCloud, \
                     AzureUSGovernmentCloud or AzureChinaCloud",
        });
    }
    let auth = parse_auth(&attrs, &secrets)?;
    let pod = PodInfo {
        namespace: attrs.pod_attribute(A_POD_NAMESPACE)?,
        name: attrs.pod_attribute(A_POD_NAME)?,
        uid: attrs.pod_attribute(A_POD_UID)?,
        service_account: attrs.pod_attribute(A_SERVICE_ACCOUNT_NAME)?,
        ephemeral: attrs.bool(A_EPHEMERAL)?,
    };
    let secret_provider_class = attrs.pod_attribute(A_SECRET_PROVIDER_CLASS)?;
    let objects_yaml = attrs.required(P_OBJECTS)?;
    let objects = parse_objects(objects_yaml, &vault)?;

    Ok(MountParams {
        vault,
        tenant_id,
        cloud,
        auth,
        objects,
        pod,
        secret_provider_class,
        default_mode,
        target_path,
    })
}

/// The `attributes` map, with duplicate keys refused.
struct Attributes(BTreeMap<String, String>);

impl Attributes {
    fn parse(text: &str) -> Result<Self, ParamError> {
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
    fn trimmed(&self, key: &str) -> &str {
        self.0.get(key).map_or("", |v| v.trim())
    }

    /// The trimmed value of a required parameter.
    fn required(&self, name: &'static str) -> Result<&str, ParamError> {
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
    fn bool(&self, name: &'static str) -> Result<bool, ParamError> {
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
    fn pod_attribute(&self, name: &'static str) -> Result<Option<String>, ParamError> {
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
    fn case_hint(&self, name: &str, except: &[&str]) -> String {
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
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_permission(text: &str) -> Result<u32, ParamError> {
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

fn parse_target_path(text: &str) -> Result<PathBuf, ParamError> {
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

fn parse_tenant(attrs: &Attributes) -> Result<String, ParamError> {
    let (name, value) = match attrs.trimmed(P_TENANT_ID) {
        "" => (P_TENANT_ID_LEGACY, attrs.trimmed(P_TENANT_ID_LEGACY)),
        value => (P_TENANT_ID, value),
    };
    if value.is_empty() {
        return Err(ParamError::MissingParameter {
            name: P_TENANT_ID,
            // `tenantId` is the legitimate legacy spelling; only others get a hint.
            hint: attrs.case_hint(P_TENANT_ID, &[P_TENANT_ID_LEGACY]),
        });
    }
    let ok = value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        return Err(ParamError::InvalidParameter {
            name,
            reason: format!(
                "{:?} is not a tenant id: expected a GUID or a domain name (1-253 characters \
                 of letters, digits, '-' and '.')",
                snippet(value)
            ),
        });
    }
    Ok(value.to_owned())
}

fn parse_cloud(attrs: &Attributes) -> Result<String, ParamError> {
    let value = attrs.trimmed(P_CLOUD_NAME);
    if value.is_empty() {
        return Ok(DEFAULT_CLOUD.to_owned());
    }
    if value.eq_ignore_ascii_case("AzureStackCloud") {
        return Err(ParamError::Unsupported {
            name: P_CLOUD_NAME,
            reason: "AzureStackCloud has per-installation endpoints; use AzurePublicCloud, \
                     AzureUSGovernmentCloud or AzureChinaCloud",
        });
    }
    if value.len() > MAX_ECHO_CHARS || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParamError::InvalidParameter {
            name: P_CLOUD_NAME,
            reason: format!(
                "{:?} is not a cloud name: expected AzurePublicCloud, \
                 AzureUSGovernmentCloud or AzureChinaCloud",
                snippet(value)
            ),
        });
    }
    Ok(value.to_owned())
}

/// Checks a client id: 1-128 characters of `[-._A-Za-z0-9]`.
fn is_client_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn client_id_param(attrs: &Attributes, name: &'static str) -> Result<Option<String>, ParamError> {
    let value = attrs.trimmed(name);
    if value.is_empty() {
        return Ok(None);
    }
    if !is_client_id(value) {
        return Err(ParamError::InvalidParameter {
            name,
            reason: format!(
                "{:?} is not a client id (1-128 characters of letters, digits, '-', '.', '_')",
                snippet(value)
            ),
        });
    }
    Ok(Some(value.to_owned()))
}

fn parse_auth(
    attrs: &Attributes,
    secrets: &[(String, Zeroizing<String>)],
) -> Result<AuthMode, ParamError> {
    if attrs.bool(P_USE_POD_IDENTITY)? {
        return Err(ParamError::PodIdentityUnsupported);
    }
    if attrs.bool(P_USE_POD_SA_ANNOTATION)? {
        return Err(ParamError::Unsupported {
            name: P_USE_POD_SA_ANNOTATION,
            reason: "akv-bridge does not read the Kubernetes API; set clientID in the \
                     SecretProviderClass",
        });
    }
    let use_vm = attrs.bool(P_USE_VM_MANAGED_IDENTITY)?;
    let client_id = client_id_param(attrs, P_CLIENT_ID)?;

    if let Some(client_id) = client_id {
        if use_vm {
            return Err(ParamError::ConflictingIdentity);
        }
        let (token, token_expiration) =
            workload_identity_token(attrs.trimmed(A_SERVICE_ACCOUNT_TOKENS))?;
        return Ok(AuthMode::WorkloadIdentity {
            client_id,
            token,
            token_expiration,
        });
    }
    if use_vm {
        return Ok(AuthMode::ManagedIdentity {
            user_assigned_client_id: client_id_param(attrs, P_USER_ASSIGNED_IDENTITY_ID)?,
        });
    }

    let client_id = find_secret(secrets, S_CLIENT_ID)?;
    let client_secret = find_secret(secrets, S_CLIENT_SECRET)?;
    match (client_id, client_secret) {
        (None, None) => Err(ParamError::NoIdentity {
            hint: attrs.case_hint(P_CLIENT_ID, &[]),
        }),
        (Some(_), None) => Err(ParamError::IncompleteServicePrincipal {
            missing: S_CLIENT_SECRET,
        }),
        (None, Some(_)) => Err(ParamError::IncompleteServicePrincipal {
            missing: S_CLIENT_ID,
        }),
        (Some(id), Some(secret)) => {
            if !is_client_id(id) {
                // Not echoed: it comes from a Secret. A trailing newline is the usual cause.
                return Err(ParamError::InvalidParameter {
                    name: "nodePublishSecretRef clientid",
                    reason: "is not a client id (1-128 characters of letters, digits, '-', \
                             '.', '_'; is there a trailing newline?)"
                        .to_owned(),
                });
            }
            Ok(AuthMode::ServicePrincipal {
                client_id: id.to_owned(),
                client_secret: ClientSecret(Zeroizing::new(secret.to_owned())),
            })
        }
    }
}

/// The non-empty value of the one key of `secrets` equal to `name` ignoring ASCII case.
fn find_secret<'a>(
    secrets: &'a [(String, Zeroizing<String>)],
    name: &'static str,
) -> Result<Option<&'a str>, ParamError> {
    let mut found = None;
    for (key, value) in secrets {
        if key.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(ParamError::DuplicateKey {
                    what: "secrets",
                    key: name.to_owned(),
                });
            }
            found = Some(value.as_str());
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// One entry of `csi.storage.k8s.io/serviceAccount.tokens`.
#[derive(serde::Deserialize)]
struct TokenEntry {
    #[serde(default)]
    token: Option<ServiceAccountToken>,
    #[serde(default, rename = "expirationTimestamp")]
    expiration: Option<String>,
}

fn workload_identity_token(
    tokens: &str,
) -> Result<(ServiceAccountToken, Option<String>), ParamError> {
    const WHAT: &str = "attribute csi.storage.k8s.io/serviceAccount.tokens";
    if tokens.is_empty() {
        return Err(ParamError::MissingWorkloadIdentityToken);
    }
    let mut entries: BTreeMap<String, TokenEntry> = serde_json::from_str::<Option<_>>(tokens)
        .map_err(|e| ParamError::InvalidJson {
            what: WHAT,
            reason: json_reason(
                &e,
                "expected a JSON object mapping audiences to {\"token\": string, \
                     \"expirationTimestamp\": string}",
            ),
        })?
        .unwrap_or_default();
    match entries.remove(WORKLOAD_IDENTITY_AUDIENCE) {
        Some(TokenEntry {
            token: Some(token),
            expiration,
        }) if !token.expose_secret().is_empty() => {
            let expiration = expiration
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty() && e.len() <= MAX_ECHO_CHARS);
            Ok((token, expiration))
        }
        _ => Err(ParamError::MissingWorkloadIdentityToken),
    }
}

// ---------------------------------------------------------------------------------------
// JSON objects of strings
// ---------------------------------------------------------------------------------------

/// What a JSON string becomes: a plain or a zeroizing `String`.
trait FromJsonString: Sized {
    fn from_json_str(value: &str) -> Self;
}

impl FromJsonString for String {
    fn from_json_str(value: &str) -> Self {
        value.to_owned()
    }
}

impl FromJsonString for Zeroizing<String> {
    fn from_json_str(value: &str) -> Self {
        Zeroizing::new(value.to_owned())
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
fn parse_string_map<T: FromJsonString>(
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
fn json_reason(error: &serde_json::Error, data_reason: &str) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "unexpected end of JSON",
        Category::Data => data_reason,
        Category::Io => "read error",
    };
    format!("{what} (line {}, column {})", error.line(), error.column())
}

// ---------------------------------------------------------------------------------------
// objects
// ---------------------------------------------------------------------------------------

/// Parses the `objects` YAML into validated objects whose default vault is `vault`: paths
/// checked for collisions, ids assigned. [`parse_mount`] calls it; it is public for tests
/// and fuzzing.
pub fn parse_objects(yaml: &str, vault: &VaultName) -> Result<Vec<ObjectSpec>, ParamError> {
    if yaml.len() > MAX_OBJECTS_YAML_BYTES {
        return Err(ParamError::TooLarge {
            what: P_OBJECTS,
            len: yaml.len(),
            max: MAX_OBJECTS_YAML_BYTES,
        });
    }
    let entries = parse_objects_document(yaml)?;
    if entries.is_empty() {
        return Err(ParamError::NoObjects);
    }
    let mut specs = Vec::with_capacity(entries.len());
    let mut file_count = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let raw = parse_object_entry(entry.as_deref(), index)?;
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
    Ok(specs)
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

/// The `objects` document: a mapping with one key, `array`, a sequence of strings.
/// Returns the entries (`None` for a null entry).
fn parse_objects_document(yaml: &str) -> Result<Vec<Option<String>>, ParamError> {
    let mut problem = None;
    let result = ObjectsDocument {
        problem: &mut problem,
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
}

impl<'de> DeserializeSeed<'de> for ObjectsDocument<'_> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectsDocument<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML mapping with the key `array`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut array = None;
        while let Some(YamlScalar(key)) = map.next_key::<YamlScalar>()? {
            let key = key.unwrap_or_default();
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
        Ok(array.unwrap_or_default())
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
enum Field {
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
    KeyvaultName,
}

impl Field {
    const ALL: [Self; 11] = [
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
        Self::KeyvaultName,
    ];

    const fn key(self) -> &'static str {
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
            Self::KeyvaultName => "keyvaultName",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// An object entry's fields: raw scalar text, untrimmed, `None` for null.
struct RawObject(Vec<(Field, Option<String>)>);

impl RawObject {
    /// The trimmed value of `field`, empty when absent or null.
    fn get(&self, field: Field) -> &str {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .and_then(|(_, v)| v.as_deref())
            .map_or("", str::trim)
    }
}

fn parse_object_entry(entry: Option<&str>, index: usize) -> Result<RawObject, ParamError> {
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

/// One object's YAML: a mapping of known keys to scalars. Stops at the first unknown or
/// repeated key, so at most 11 values are ever materialized.
struct ObjectEntry<'p> {
    problem: &'p mut Problem,
    index: usize,
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
        Ok(RawObject(fields))
    }
}

fn build_object(
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

    let json_key = match raw.get(Field::ObjectJsonKey) {
        "" => None,
        v if v.len() > MAX_JSON_KEY_BYTES => {
            return Err(invalid(
                Field::ObjectJsonKey,
                format!("is longer than {MAX_JSON_KEY_BYTES} bytes"),
            ));
        }
        v => {
            if kind != ObjectKind::Secret {
                return Err(incompatible(
                    "objectJsonKey is only supported with objectType secret",
                ));
            }
            if format == ObjectFormat::Pfx {
                return Err(incompatible(
                    "objectJsonKey cannot be combined with objectFormat pfx",
                ));
            }
            if encoding != ObjectEncoding::Utf8 {
                return Err(incompatible(
                    "objectJsonKey cannot be combined with objectEncoding hex or base64",
                ));
            }
            Some(v.to_owned())
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
        (0..history)
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
        json_key,
        vault,
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

/// `filePermission`: empty → `None`; octal digits (at most 8) with a value ≤ 0o777.
fn parse_file_permission(text: &str) -> Result<Option<u32>, String> {
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
fn check_collisions(specs: &[ObjectSpec]) -> Result<(), ParamError> {
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

/// Assigns object version ids (rule in the module docs).
fn assign_ids(specs: &mut [ObjectSpec]) -> Result<(), ParamError> {
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
                (0..spec.history)
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

/// `value`, shortened to [`MAX_ECHO_CHARS`] characters, for error messages.
fn snippet(value: &str) -> String {
    snippet_n(value, MAX_ECHO_CHARS)
}

fn snippet_n(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        None => value.to_owned(),
        Some((cut, _)) => {
            let mut short = value.get(..cut).unwrap_or_default().to_owned();
            short.push('…');
            short
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0b0d7c5e-1111-2222-3333-4444c8c8c8c8";
    const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2EtdG9rZW4tcGF5bG9hZA.c2lnbmF0dXJl";
    const SP_SECRET: &str = "sp-s3cr3t~value";

    fn json(pairs: &[(&str, &str)]) -> String {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        serde_json::to_string(&map).unwrap()
    }

    fn tokens_json(audience: &str, token: &str) -> String {
        serde_json::json!({
            audience: {"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"},
            "other-audience": {"token": "not-this-one", "expirationTimestamp": "2030-01-01T00:00:00Z"},
        })
        .to_string()
    }

    /// `array:` of the given object YAML texts, as `- |` block strings.
    fn objects_yaml(entries: &[&str]) -> String {
        let mut out = String::from("array:\n");
        for entry in entries {
            out.push_str("  - |\n");
            for line in entry.lines() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    const DB: &str = "objectName: db-password\nobjectType: secret";

    /// A predicate on an expected error.
    type Check = fn(&ParamError) -> bool;

    /// A YAML double-quoted scalar for `s`, every control character escaped.
    fn yaml_quote(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Workload-identity attributes plus `extra` (which may override or, with "", unset).
    fn wi_attributes(objects: &str, extra: &[(&str, &str)]) -> String {
        let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, SA_TOKEN);
        let mut map: BTreeMap<&str, &str> = [
            ("keyvaultName", "kv-prod"),
            ("tenantID", TENANT),
            ("clientID", CLIENT),
            ("objects", objects),
            ("secretProviderClass", "app-secrets"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            (
                "csi.storage.k8s.io/pod.uid",
                "5d8e3c1e-0000-4000-8000-000000000001",
            ),
            ("csi.storage.k8s.io/serviceAccount.name", "web"),
            ("csi.storage.k8s.io/ephemeral", "false"),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            map.insert(k, v);
        }
        serde_json::to_string(&map).unwrap()
    }

    fn mount_with(extra: &[(&str, &str)]) -> Result<MountParams, ParamError> {
        parse_mount(
            &wi_attributes(&objects_yaml(&[DB]), extra),
            "{}",
            "420",
            "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount",
        )
    }

    fn objects_of(entries: &[&str]) -> Result<Vec<ObjectSpec>, ParamError> {
        parse_objects(
            &objects_yaml(entries),
            &VaultName::parse("kv-prod").unwrap(),
        )
    }

    fn one(entry: &str) -> Result<ObjectSpec, ParamError> {
        objects_of(&[entry]).map(|mut v| v.remove(0))
    }

    fn paths(spec: &ObjectSpec) -> Vec<&str> {
        spec.files.iter().map(|f| f.path.as_str()).collect()
    }

    fn ids(specs: &[ObjectSpec]) -> Vec<&str> {
        specs
            .iter()
            .flat_map(|s| s.files.iter().map(|f| f.id.as_str()))
            .collect()
    }

    // ---- the spec's example ---------------------------------------------------------

    #[test]
    fn spec_example_parses_to_the_expected_objects() {
        let objects = "array:
  - |
    objectName: db-password
    objectType: secret
  - |
    objectName: tls-cert
    objectType: secret        # the cert's private key and chain
    objectAlias: tls/bundle.pem
  - |
    objectName: signing-key
    objectType: key
    objectVersionHistory: 2
";
        let attributes = wi_attributes(objects, &[]);
        let params = parse_mount(&attributes, "null", "420", "/mnt/target").unwrap();
        assert_eq!(params.vault.as_str(), "kv-prod");
        assert_eq!(params.tenant_id, TENANT);
        assert_eq!(params.cloud, "AzurePublicCloud");
        assert_eq!(params.default_mode, 0o644);
        assert_eq!(params.target_path, PathBuf::from("/mnt/target"));
        assert_eq!(params.secret_provider_class.as_deref(), Some("app-secrets"));
        assert_eq!(
            params.pod,
            PodInfo {
                namespace: Some("shop".into()),
                name: Some("web-0".into()),
                uid: Some("5d8e3c1e-0000-4000-8000-000000000001".into()),
                service_account: Some("web".into()),
                ephemeral: false,
            }
        );
        match &params.auth {
            AuthMode::WorkloadIdentity {
                client_id,
                token,
                token_expiration,
            } => {
                assert_eq!(client_id, CLIENT);
                assert_eq!(token.expose_secret(), SA_TOKEN);
                assert_eq!(token_expiration.as_deref(), Some("2030-01-01T00:00:00Z"));
            }
            other => panic!("expected workload identity, got {other:?}"),
        }

        let o = &params.objects;
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].name.as_str(), "db-password");
        assert_eq!(o[0].kind, ObjectKind::Secret);
        assert_eq!(o[0].path.as_str(), "db-password");
        assert_eq!(o[0].id, "secret/db-password");
        assert_eq!(
            o[0].files,
            vec![ObjectFile {
                path: RelativeFilePath::parse("db-password").unwrap(),
                id: "secret/db-password".into(),
                history_index: None
            }]
        );
        assert_eq!(o[1].kind, ObjectKind::Secret);
        assert_eq!(paths(&o[1]), ["tls/bundle.pem"]);
        assert_eq!(o[1].id, "secret/tls-cert");
        assert_eq!(o[2].kind, ObjectKind::Key);
        assert_eq!(o[2].history, 2);
        assert_eq!(paths(&o[2]), ["signing-key/0", "signing-key/1"]);
        assert_eq!(ids(&o[2..]), ["key/signing-key/0", "key/signing-key/1"]);
        assert_eq!(o[2].files[1].history_index, Some(1));
        assert_eq!(params.vault_for(&o[0]).as_str(), "kv-prod");
        assert_eq!(params.mode_for(&o[0]), 0o644);
    }

    // ---- defaults and every parameter -------------------------------------------------

    #[test]
    fn object_defaults() {
        let spec = one(DB).unwrap();
        assert_eq!(spec.version, None);
        assert_eq!(spec.history, 0);
        assert_eq!(spec.format, ObjectFormat::Pem);
        assert_eq!(spec.encoding, ObjectEncoding::Utf8);
        assert_eq!(spec.mode, None);
        assert!(!spec.optional);
        assert_eq!(spec.json_key, None);
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
        assert_eq!(paths(&spec), ["conf/app/0", "conf/app/1", "conf/app/2"]);
        assert_eq!(spec.encoding, ObjectEncoding::Base64);
        assert_eq!(spec.mode, Some(0o600));
        assert!(spec.optional);
        assert_eq!(spec.vault.as_ref().map(VaultName::as_str), Some("kv-other"));
        assert_eq!(spec.id, "secret/kv-other/app-config");
        assert_eq!(spec.files[2].id, "secret/kv-other/app-config/2");

        let spec = one("objectName: cfg\nobjectType: secret\nobjectJsonKey: ' password '\nobjectEncoding: utf-8")
            .unwrap();
        assert_eq!(spec.json_key.as_deref(), Some("password"));
        assert_eq!(spec.encoding, ObjectEncoding::Utf8);

        let spec = one(
            "objectName: bundle\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
        )
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
        assert_eq!(spec.files.len(), 100);
    }

    #[test]
    fn top_level_parameters_and_defaults() {
        let p = mount_with(&[]).unwrap();
        assert_eq!(p.cloud, DEFAULT_CLOUD);
        for cloud in [
            "AzureUSGovernmentCloud",
            "AzureChinaCloud",
            "azurepubliccloud",
        ] {
            let p = mount_with(&[("cloudName", &format!(" {cloud} "))]).unwrap();
            assert_eq!(p.cloud, cloud);
        }
        // Legacy tenantId, and tenantID winning over it.
        let p = mount_with(&[("tenantID", ""), ("tenantId", " contoso.onmicrosoft.com ")]).unwrap();
        assert_eq!(p.tenant_id, "contoso.onmicrosoft.com");
        let p = mount_with(&[("tenantId", "other-tenant")]).unwrap();
        assert_eq!(p.tenant_id, TENANT);
        // Values are trimmed; usePodIdentity false is fine.
        let p =
            mount_with(&[("keyvaultName", "  kv-prod\n"), ("usePodIdentity", "false")]).unwrap();
        assert_eq!(p.vault.as_str(), "kv-prod");
        // Pod info absent: all None.
        let attributes = json(&[
            ("keyvaultName", "kv1"),
            ("tenantId", TENANT),
            ("useVMManagedIdentity", "true"),
            ("objects", &objects_yaml(&[DB])),
        ]);
        let p = parse_mount(&attributes, "", "0", "/t").unwrap();
        assert_eq!(p.pod, PodInfo::default());
        assert_eq!(p.secret_provider_class, None);
        assert_eq!(p.default_mode, 0);
        let p = mount_with(&[("csi.storage.k8s.io/ephemeral", "True")]).unwrap();
        assert!(p.pod.ephemeral);
    }

    #[test]
    fn managed_identity() {
        let p = mount_with(&[("clientID", ""), ("useVMManagedIdentity", "true")]).unwrap();
        assert!(matches!(
            p.auth,
            AuthMode::ManagedIdentity {
                user_assigned_client_id: None
            }
        ));
        let p = mount_with(&[
            ("clientID", ""),
            ("useVMManagedIdentity", "1"),
            ("userAssignedIdentityID", CLIENT),
        ])
        .unwrap();
        match p.auth {
            AuthMode::ManagedIdentity {
                user_assigned_client_id,
            } => {
                assert_eq!(user_assigned_client_id.as_deref(), Some(CLIENT));
            }
            other => panic!("{other:?}"),
        }
        let err = mount_with(&[
            ("clientID", ""),
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", "a b"),
        ])
        .unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidParameter {
                    name: "userAssignedIdentityID",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn service_principal_secrets_match_case_insensitively() {
        let attributes = wi_attributes(&objects_yaml(&[DB]), &[("clientID", "")]);
        for secrets in [
            json(&[("clientid", CLIENT), ("clientsecret", SP_SECRET)]),
            json(&[
                ("ClientID", CLIENT),
                ("CLIENTSECRET", SP_SECRET),
                ("other", "x"),
            ]),
        ] {
            let p = parse_mount(&attributes, &secrets, "420", "/t").unwrap();
            match &p.auth {
                AuthMode::ServicePrincipal {
                    client_id,
                    client_secret,
                } => {
                    assert_eq!(client_id, CLIENT);
                    assert_eq!(client_secret.expose_secret(), SP_SECRET);
                }
                other => panic!("{other:?}"),
            }
            assert!(!format!("{p:?}").contains(SP_SECRET));
        }
        let secrets =
            format!(r#"{{"clientid":"{CLIENT}","ClientId":"{CLIENT}","clientsecret":"x"}}"#);
        let err = parse_mount(&attributes, &secrets, "420", "/t").unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::DuplicateKey {
                    what: "secrets",
                    ..
                }
            ),
            "{err}"
        );
        let err =
            parse_mount(&attributes, &json(&[("clientid", CLIENT)]), "420", "/t").unwrap_err();
        assert_eq!(
            err,
            ParamError::IncompleteServicePrincipal {
                missing: "clientsecret"
            }
        );
        let err = parse_mount(
            &attributes,
            &json(&[("clientsecret", SP_SECRET)]),
            "420",
            "/t",
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParamError::IncompleteServicePrincipal {
                missing: "clientid"
            }
        );
        let err = parse_mount(
            &attributes,
            &json(&[("clientid", CLIENT), ("clientsecret", "")]),
            "420",
            "/t",
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParamError::IncompleteServicePrincipal {
                missing: "clientsecret"
            }
        );
        // A trailing newline in clientid is refused without echoing it.
        let secrets = json(&[
            ("clientid", &format!("{CLIENT}\n")),
            ("clientsecret", SP_SECRET),
        ]);
        let err = parse_mount(&attributes, &secrets, "420", "/t").unwrap_err();
        assert!(err.to_string().contains("trailing newline"), "{err}");
        assert!(!err.to_string().contains(SP_SECRET));
    }

    #[test]
    fn no_identity() {
        let attributes = wi_attributes(&objects_yaml(&[DB]), &[("clientID", "")]);
        for secrets in ["", "null", "{}", "  "] {
            let err = parse_mount(&attributes, secrets, "420", "/t").unwrap_err();
            assert!(
                matches!(err, ParamError::NoIdentity { .. }),
                "{secrets:?}: {err}"
            );
            assert!(err.to_string().starts_with(
                "no identity: set clientID for workload identity, useVMManagedIdentity, or \
                 nodePublishSecretRef with clientid/clientsecret"
            ));
        }
        // A mis-cased clientID gets a hint.
        let attributes = wi_attributes(
            &objects_yaml(&[DB]),
            &[("clientID", ""), ("clientId", CLIENT)],
        );
        let err = parse_mount(&attributes, "{}", "420", "/t").unwrap_err();
        assert!(err.to_string().contains("found \"clientId\""), "{err}");
    }

    #[test]
    fn workload_identity_token_extraction() {
        let objects = objects_yaml(&[DB]);
        // Missing attribute, empty, null, other audience only, empty token, null token.
        for tokens in [
            None,
            Some(String::new()),
            Some("null".to_owned()),
            Some("{}".to_owned()),
            Some(tokens_json("api://AKSIdentityBinding", SA_TOKEN)),
            Some(tokens_json(WORKLOAD_IDENTITY_AUDIENCE, "")),
            Some(format!(
                r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":null}}}}"#
            )),
            Some(format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{}}}}"#)),
        ] {
            let mut map: BTreeMap<String, String> =
                serde_json::from_str(&wi_attributes(&objects, &[])).unwrap();
            match &tokens {
                None => map.remove(A_SERVICE_ACCOUNT_TOKENS),
                Some(t) => map.insert(A_SERVICE_ACCOUNT_TOKENS.to_owned(), t.clone()),
            };
            let err =
                parse_mount(&serde_json::to_string(&map).unwrap(), "{}", "420", "/t").unwrap_err();
            assert_eq!(err, ParamError::MissingWorkloadIdentityToken, "{tokens:?}");
            let text = err.to_string();
            assert!(
                text.contains("tokenRequests") && text.contains(WORKLOAD_IDENTITY_AUDIENCE),
                "{text}"
            );
        }
        // Malformed token JSON: an error that does not quote the token.
        for bad in [
            format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":["{SA_TOKEN}"]}}}}"#),
            format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":"{SA_TOKEN}"}}"#),
            format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":"{SA_TOKEN}""#),
            format!(r#"["{SA_TOKEN}"]"#),
        ] {
            let attributes = wi_attributes(&objects, &[(A_SERVICE_ACCOUNT_TOKENS, &bad)]);
            let err = parse_mount(&attributes, "{}", "420", "/t").unwrap_err();
            assert!(
                matches!(err, ParamError::InvalidJson { .. }),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains(SA_TOKEN), "{err}");
            assert!(!format!("{err:?}").contains(SA_TOKEN), "{err:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let p = mount_with(&[]).unwrap();
        let debug = format!("{p:?}");
        assert!(!debug.contains(SA_TOKEN), "{debug}");
        assert!(!debug.contains("c2EtdG9rZW4"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(debug.contains("kv-prod"));
        let secret = ClientSecret(Zeroizing::new(SP_SECRET.to_owned()));
        assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
        assert_eq!(format!("{:#?}", secret), "ClientSecret([redacted])");
    }

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

    // ---- top-level errors -------------------------------------------------------------

    #[test]
    fn top_level_errors() {
        let err = mount_with(&[("keyvaultName", "")]).unwrap_err();
        assert_eq!(
            err,
            ParamError::MissingParameter {
                name: "keyvaultName",
                hint: String::new()
            }
        );
        let err = mount_with(&[("keyvaultName", ""), ("keyVaultName", "kv-prod")]).unwrap_err();
        assert!(err.to_string().contains("found \"keyVaultName\""), "{err}");
        for bad in [
            "kv",
            "a234567890123456789012345",
            "kv_prod",
            "kv.prod",
            "kv prod",
            "kv/x",
            "kvé1",
        ] {
            let err = mount_with(&[("keyvaultName", bad)]).unwrap_err();
            assert!(
                matches!(err, ParamError::InvalidVaultName { .. }),
                "{bad}: {err}"
            );
        }
        let err = mount_with(&[("tenantID", "")]).unwrap_err();
        assert_eq!(
            err,
            ParamError::MissingParameter {
                name: "tenantID",
                hint: String::new()
            }
        );
        for bad in ["../evil", "a/b", "tenant?x=1", "t enant"] {
            let err = mount_with(&[("tenantID", bad)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ParamError::InvalidParameter {
                        name: "tenantID",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            mount_with(&[("usePodIdentity", "true")]).unwrap_err(),
            ParamError::PodIdentityUnsupported
        );
        assert_eq!(
            ParamError::PodIdentityUnsupported.to_string(),
            "usePodIdentity: aad-pod-identity is deprecated and not supported; use workload identity (clientID)"
        );
        let err = mount_with(&[("usePodServiceAccountAnnotation", "true")]).unwrap_err();
        assert!(matches!(
            err,
            ParamError::Unsupported {
                name: "usePodServiceAccountAnnotation",
                ..
            }
        ));
        let err = mount_with(&[("cloudName", "AzureStackCloud")]).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::Unsupported {
                    name: "cloudName",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not supported"));
        let err = mount_with(&[("cloudName", "Azure Cloud/../x")]).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidParameter {
                    name: "cloudName",
                    ..
                }
            ),
            "{err}"
        );
        let err = mount_with(&[("cloudEnvFileName", "/etc/kubernetes/custom.json")]).unwrap_err();
        assert!(matches!(
            err,
            ParamError::Unsupported {
                name: "cloudEnvFileName",
                ..
            }
        ));
        assert_eq!(
            mount_with(&[("useVMManagedIdentity", "true")]).unwrap_err(),
            ParamError::ConflictingIdentity
        );
        let err = mount_with(&[("clientID", "not a guid")]).unwrap_err();
        assert!(matches!(
            err,
            ParamError::InvalidParameter {
                name: "clientID",
                ..
            }
        ));
        let err = mount_with(&[("objects", "")]).unwrap_err();
        assert_eq!(
            err,
            ParamError::MissingParameter {
                name: "objects",
                hint: String::new()
            }
        );
        let err = mount_with(&[("csi.storage.k8s.io/pod.name", "web\n0")]).unwrap_err();
        assert!(matches!(
            err,
            ParamError::InvalidParameter {
                name: A_POD_NAME,
                ..
            }
        ));
    }

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

    // ---- object errors ----------------------------------------------------------------

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
    fn objects_document_errors() {
        let vault = VaultName::parse("kv-prod").unwrap();
        for (yaml, check) in [
            (
                "array: []",
                (|e| matches!(e, ParamError::NoObjects)) as Check,
            ),
            ("array:", |e| matches!(e, ParamError::NoObjects)),
            ("{}", |e| matches!(e, ParamError::NoObjects)),
            (
                "arrays:\n  - |\n    objectName: a",
                |e| matches!(e, ParamError::InvalidObjectsYaml { reason } if reason.contains("arrays")),
            ),
            ("array: []\narray: []", |e| {
                matches!(e, ParamError::InvalidObjectsYaml { .. })
            }),
            ("- a", |e| {
                matches!(e, ParamError::InvalidObjectsYaml { .. })
            }),
            ("array: x", |e| {
                matches!(e, ParamError::InvalidObjectsYaml { .. })
            }),
            (
                "array:\n  - objectName: a\n    objectType: secret",
                |e| matches!(e, ParamError::InvalidObjectYaml { reason, .. } if reason.contains("- |")),
            ),
            ("array:\n  -\n", |e| {
                matches!(e, ParamError::InvalidObjectYaml { .. })
            }),
            ("array: [\"\"]", |e| {
                matches!(e, ParamError::InvalidObjectYaml { .. })
            }),
            ("array: [unclosed", |e| {
                matches!(
                    e,
                    ParamError::InvalidObjectsYaml { .. } | ParamError::InvalidObjectYaml { .. }
                )
            }),
            ("a: 1\n---\nb: 2", |e| {
                matches!(e, ParamError::InvalidObjectsYaml { .. })
            }),
        ] {
            let err = parse_objects(yaml, &vault).unwrap_err();
            assert!(check(&err), "{yaml:?}: {err:?}");
        }
    }

    #[test]
    fn object_count_and_size_limits() {
        let entries: Vec<String> = (0..MAX_OBJECTS)
            .map(|i| format!("objectName: s{i}\nobjectType: secret"))
            .collect();
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        assert_eq!(objects_of(&refs).unwrap().len(), MAX_OBJECTS);
        let entries: Vec<String> = (0..=MAX_OBJECTS)
            .map(|i| format!("objectName: s{i}\nobjectType: secret"))
            .collect();
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        assert_eq!(
            objects_of(&refs).unwrap_err(),
            ParamError::TooManyObjects { max: MAX_OBJECTS }
        );

        let big = format!("{DB}\n# {}", "x".repeat(MAX_OBJECTS_YAML_BYTES));
        assert!(matches!(
            objects_of(&[&big]),
            Err(ParamError::TooLarge {
                what: "objects",
                ..
            })
        ));
        let attributes = wi_attributes(&objects_yaml(&[&big]), &[]);
        assert!(matches!(
            parse_mount(&attributes, "{}", "420", "/t"),
            Err(ParamError::TooLarge {
                what: "objects",
                ..
            })
        ));

        // 11 objects with 100 versions each: more than MAX_FILES files.
        let entries: Vec<String> = (0..11)
            .map(|i| format!("objectName: s{i}\nobjectType: secret\nobjectVersionHistory: 100"))
            .collect();
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        assert!(matches!(
            objects_of(&refs),
            Err(ParamError::TooManyFiles { .. })
        ));
    }

    #[test]
    fn yaml_alias_expansion_is_bounded() {
        // One 100 KiB scalar repeated by aliases: far more than the limit once expanded.
        let big = format!(
            "objectName: a\\nobjectType: secret\\n# {}",
            "x".repeat(100 * 1024)
        );
        let mut yaml = format!("array:\n  - &big \"{big}\"\n");
        for _ in 0..200 {
            yaml.push_str("  - *big\n");
        }
        let err = parse_objects(&yaml, &VaultName::parse("kv-prod").unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::TooLarge { .. } | ParamError::TooManyObjects { .. }
            ),
            "{err}"
        );
        // Billion laughs inside one object: refused without expansion.
        let lol = "objectName: a\nobjectType: secret\nobjectAlias: &a [x, x, x]\n";
        assert!(one(lol).is_err());
    }

    // ---- paths ------------------------------------------------------------------------

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
                "secret/kv2/0#other",
                "secret/kv2#again/0",
                "secret/kv2#again/1"
            ]
        );
        assert_eq!(specs[2].id, "secret/kv2#again");

        // Many duplicates of one object stay unique.
        let entries: Vec<String> = (0..50)
            .map(|i| format!("objectName: x\nobjectType: secret\nobjectAlias: p{i}\nobjectVersionHistory: {}", i % 3))
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

    // ---- properties -------------------------------------------------------------------

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

        #[test]
        fn parse_objects_never_panics(s in any::<String>()) {
            let _ = parse_objects(&s, &VaultName::parse("kv-prod").unwrap());
        }

        #[test]
        fn parse_object_entries_never_panic(
            keys in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("objectName"), Just("objectType"), Just("objectVersion"),
                        Just("objectVersionHistory"), Just("objectAlias"), Just("objectFormat"),
                        Just("objectEncoding"), Just("filePermission"), Just("optional"),
                        Just("objectJsonKey"), Just("keyvaultName"),
                    ],
                    prop_oneof![Just("secret".to_owned()), Just("pfx".to_owned()), "[ -~]{0,12}"],
                ),
                0..8,
            )
        ) {
            let entry: String = keys.iter().map(|(k, v)| format!("{k}: {}\n", serde_json::to_string(v).unwrap())).collect();
            if let Ok(specs) = objects_of(&[&entry, DB]) {
                let all = ids(&specs);
                let unique: BTreeSet<&str> = all.iter().copied().collect();
                prop_assert_eq!(unique.len(), all.len());
            }
        }

        #[test]
        fn parse_mount_never_panics(a in any::<String>(), s in any::<String>(), p in any::<String>(), t in any::<String>()) {
            let _ = parse_mount(&a, &s, &p, &t);
        }
    }
}
