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
//! | `cloudName` | [`MountParams::cloud`]: empty means [`ParseOptions::default_cloud`] (`--cloud-name`, `AzurePublicCloud` by default); else `AzurePublicCloud` (or `AzureCloud`), `AzureUSGovernmentCloud` (or `AzureUSGovernment`) or `AzureChinaCloud`, ignoring ASCII case ([`Cloud::parse`]); `AzureStackCloud` is a custom cloud ([`MountCloud::Custom`]); `AzureGermanCloud` is refused |
//! | `cloudEnvFileName` | with `cloudName: AzureStackCloud` only (as in the Go provider, it is ignored otherwise): the custom cloud's environment file, at most 4096 bytes, no NUL or control character, no `..` segment. Whether the provider may read it is its rule, not this module's (`--cloud-env-dir`) |
//! | `usePodIdentity` | `true` is refused: aad-pod-identity is deprecated |
//! | `usePodServiceAccountAnnotation` | `true` is refused: akv-bridge does not read the Kubernetes API; set `clientID` |
//! | `useAzureTokenProxy` | `true`: AKS identity binding: workload identity with `clientID` (required), the pod's token for [`IDENTITY_BINDING_AUDIENCE`] exchanged at the cluster's token proxy ([`TokenExchange::IdentityBinding`]); not with `useVMManagedIdentity` |
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
//! are case-sensitive; a repeated key is an error naming it.
//!
//! An unknown key (a typo such as `objectAlais`, a field of another provider version) is
//! ignored with its value, whatever its shape, as the Go provider's YAML decoding ignores
//! it, and so is a key beside `array` in the document; [`MountParams::unknown_keys`]
//! reports each (the object or the document, and the key, never the value) so the caller
//! can log and count it. With [`ParseOptions::strict`]
//! (`--strict-parameters`) it is an error naming it instead, and `objectNotAfter` is
//! refused as unsupported.
//!
//! | key | meaning |
//! |---|---|
//! | `objectName` | required; 1-127 characters of `[-A-Za-z0-9]` |
//! | `objectType` | required; `secret`, `key` or `cert` (case-insensitive) |
//! | `objectVersion` | empty or `latest` (case-insensitive): the newest; else 1-64 characters of `[A-Za-z0-9]` |
//! | `objectVersionHistory` | decimal, 0..=100; 0 and 1 mean a single file (as in the Go provider), N ≥ 2 mounts up to N + 1 versions, newest first, starting at `objectVersion` (the Go provider's count; see "Files") |
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
//! - `objectJsonKey` (string, at most 1024 bytes): the secret's value is JSON and only the
//!   value at this path is written ([`field_path`]: `db.hosts[0].name`, `["tls.crt"]`),
//!   a JSON string as its text, any other JSON value serialized as compact JSON. The whole
//!   text is tried as a top-level key first, so any key (`a.b` included) still means what it
//!   meant when this parameter took one key, and any text is accepted here.
//! - `objectYamlKey` (same limit; must be a path): the same for a YAML value; a string is
//!   written as its text, a number or boolean as written, a mapping or list as YAML.
//!   Neither with the other, and both only with `objectType: secret`, not with
//!   `objectFormat: pfx`, and with no `objectEncoding` other than `utf-8`.
//! - `objectNamePrefix`, `objectTag`, `objectMaxCount`: an entry that selects every enabled
//!   secret by name prefix and/or tag, one file each, up to a count ([`selection`]).
//! - `failoverKeyvaultName` (top level, and per object; same rule as `keyvaultName`, not
//!   the vault it stands in for): where an object is read when its own vault is
//!   unreachable, failing, too slow or throttling past the deadline, never after an answer
//!   about the object (404, 403, a disabled version) or an identity failure. The top-level
//!   one covers the objects read from the top-level vault; an object with its own
//!   `keyvaultName` needs its own. Not for a pinned `objectVersion` (version ids belong to
//!   one vault). See [`MountParams::failover_for`].
//! - `keyvaultName` (same rule as the top-level one): read this object from another vault
//!   of the same tenant, cloud and identity, so one SecretProviderClass can read several
//!   vaults. A value equal (ignoring ASCII case) to the top-level vault is no override.
//!
//! ## Files
//!
//! An object's file path is its alias, else its name. With `objectVersionHistory: N` (N ≥ 2)
//! the files are `<path>/0` (newest) .. `<path>/<N>`: N + 1 files, fewer when fewer enabled
//! versions exist. That is one more than the Go provider's documentation says, and exactly
//! what its code writes (`getLatestNKeyVaultObjects` stops only once it holds more than N);
//! akv-bridge is a drop-in, and pods may read `<path>/<N>`, so it writes the same files. [`ObjectSpec::files`] lists the planned files. Two
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
//!
//! # Layout
//!
//! - here: [`parse_mount`], [`MountParams`], the top-level parameters (vault, tenant,
//!   cloud) and the limits;
//! - `attributes`: the `attributes` and `secrets` JSON objects of strings, and typed access
//!   to attributes (trimmed, required, Go booleans, pod attributes);
//! - `identity`: which identity a mount uses ([`AuthMode`]) and its secret values;
//! - `objects`: the `objects` YAML document and its entries, into raw fields;
//! - `spec`: one entry's fields into an [`ObjectSpec`], and object version ids;
//! - `files`: [`RelativeFilePath`], the target path, file modes and path collisions;
//! - `error`: [`ParamError`] and the labels it uses.

use std::fmt;
use std::path::PathBuf;

use crate::azure::cloud::Cloud;
use crate::secret::SecretString;

use self::attributes::{Attributes, parse_string_map};
use self::files::{parse_permission, parse_target_path};
use self::identity::parse_auth;

pub use self::error::ParamError;
#[cfg(test)]
pub use self::error::{ObjectLabel, PathError};
pub use self::field_path::FieldSelector;
pub use self::files::RelativeFilePath;
pub use self::identity::{AuthMode, TokenExchange};
pub use self::objects::UnknownKeys;
#[cfg(test)]
pub use self::objects::parse_objects;
#[cfg(test)]
pub use self::spec::ObjectFile;
pub use self::spec::{ObjectEncoding, ObjectFormat, ObjectKind, ObjectSpec};

mod attributes;
mod error;
pub mod field_path;
mod files;
mod identity;
mod objects;
pub mod selection;
mod spec;

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
/// Most ignored object keys reported one by one in [`MountParams::unknown_keys`] (all are
/// counted).
pub const MAX_REPORTED_UNKNOWN_KEYS: usize = 16;
/// The service-account token audience workload identity exchanges with Entra.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The audience of the pod token AKS identity binding exchanges (`useAzureTokenProxy`).
pub const IDENTITY_BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";
/// The cloud used when `cloudName` is empty.
pub const DEFAULT_CLOUD: Cloud = Cloud::AzurePublicCloud;

const P_KEYVAULT_NAME: &str = "keyvaultName";
const P_FAILOVER_KEYVAULT_NAME: &str = "failoverKeyvaultName";
const P_TENANT_ID: &str = "tenantID";
const P_TENANT_ID_LEGACY: &str = "tenantId";
const P_CLOUD_NAME: &str = "cloudName";
const P_CLOUD_ENV_FILE_NAME: &str = "cloudEnvFileName";
const P_USE_POD_IDENTITY: &str = "usePodIdentity";
const P_USE_POD_SA_ANNOTATION: &str = "usePodServiceAccountAnnotation";
const P_USE_AZURE_TOKEN_PROXY: &str = "useAzureTokenProxy";
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

/// Provider-wide settings of [`parse_mount_with`], from the provider's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// `--strict-parameters`: an unknown object key is an error instead of being ignored
    /// (and reported in [`MountParams::unknown_keys`]).
    pub strict: bool,
    /// `--cloud-name`: the cloud of a mount whose `cloudName` is empty.
    pub default_cloud: MountCloud,
}

/// The cloud a mount reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCloud {
    /// A cloud whose endpoints akv-bridge knows.
    Azure(Cloud),
    /// `AzureStackCloud`: a custom cloud whose Entra and Key Vault endpoints come from an
    /// environment file (go-autorest's JSON). The provider reads it.
    Custom {
        /// `cloudEnvFileName` as written (trimmed, checked lexically); `None`: the
        /// provider's default environment file (`AZURE_ENVIRONMENT_FILEPATH`).
        env_file: Option<String>,
    },
}

impl Default for MountCloud {
    fn default() -> Self {
        Self::Azure(DEFAULT_CLOUD)
    }
}

impl Default for ParseOptions {
    /// The flags' defaults: not strict, [`DEFAULT_CLOUD`].
    fn default() -> Self {
        Self {
            strict: false,
            default_cloud: MountCloud::default(),
        }
    }
}

/// Everything a mount needs, validated. `Debug` never prints the token or client secret.
#[derive(Debug)]
pub struct MountParams {
    /// `keyvaultName`: the vault objects are read from unless they override it.
    pub vault: VaultName,
    /// `failoverKeyvaultName` (extension): read objects of `vault` from here when `vault` is
    /// unreachable or throttling.
    pub failover: Option<VaultName>,
    /// `tenantID` (or `tenantId`).
    pub tenant_id: String,
    /// `cloudName` (with `cloudEnvFileName`); [`ParseOptions::default_cloud`] when empty.
    pub cloud: MountCloud,
    /// The identity to use.
    pub auth: AuthMode,
    /// `objects`, in order, with their files and ids (selections apart).
    pub objects: Vec<ObjectSpec>,
    /// `objects` entries with `objectNamePrefix` or `objectTag` ([`selection`]).
    pub selections: Vec<selection::SelectionSpec>,
    /// The pod.
    pub pod: PodInfo,
    /// `secretProviderClass`: the SecretProviderClass name, for logs.
    pub secret_provider_class: Option<String>,
    /// The driver's default file mode (`permission`), 0..=0o777.
    pub default_mode: u32,
    /// Where the driver mounts the files (absolute; owned by the driver).
    pub target_path: PathBuf,
    /// Object keys that were ignored because they are not object fields (never with
    /// [`ParseOptions::strict`]): for a warning and a counter.
    pub unknown_keys: UnknownKeys,
}

impl MountParams {
    /// The vault `object` is read from: its own, else the mount's.
    pub fn vault_for<'a>(&'a self, object: &'a ObjectSpec) -> &'a VaultName {
        object.vault.as_ref().unwrap_or(&self.vault)
    }

    /// The vault `object` fails over to: its own `failoverKeyvaultName`, else the mount's
    /// when the object is read from the mount's vault (another vault's failover is not the
    /// mount's to say). Only for the newest version: version ids belong to one vault.
    pub fn failover_for<'a>(&'a self, object: &'a ObjectSpec) -> Option<&'a VaultName> {
        if object.version.is_some() {
            return None;
        }
        object.failover.as_ref().or(match object.vault {
            None => self.failover.as_ref(),
            Some(_) => None,
        })
    }

    /// Every object of the mount once each selection's matches are known: `selected` pairs
    /// a selection's entry index with the secret names it matched. Each match is an entry
    /// of its own, checked with the objects (paths, collisions, ids) as if written out.
    pub fn with_selected(
        &self,
        selected: &[(usize, Vec<String>)],
    ) -> Result<Vec<ObjectSpec>, ParamError> {
        let mut all = self.objects.clone();
        for (index, names) in selected {
            let Some(selection) = self.selections.iter().find(|s| s.index == *index) else {
                continue;
            };
            for name in names {
                all.push(selection.entry_for(name, &self.vault)?);
            }
        }
        let count: usize = all.iter().map(|s| s.files.len()).sum();
        if count > MAX_FILES {
            return Err(ParamError::TooManyFiles {
                count,
                max: MAX_FILES,
            });
        }
        files::check_collisions(&all)?;
        spec::assign_ids(&mut all)?;
        Ok(all)
    }

    /// The mode of `file`s of `object`: its `filePermission`, else the default.
    pub fn mode_for(&self, object: &ObjectSpec) -> u32 {
        object.mode.unwrap_or(self.default_mode)
    }
}

/// Parses the strings of a `MountRequest` (`attributes`, `secrets`, `permission`,
/// `target_path`) into [`MountParams`] with the default `ParseOptions` (the flags'
/// defaults). See the module docs for every rule.
pub fn parse_mount(
    attributes: &str,
    secrets: &str,
    permission: &str,
    target_path: &str,
) -> Result<MountParams, ParamError> {
    parse_mount_with(
        attributes,
        secrets,
        permission,
        target_path,
        &ParseOptions::default(),
    )
}

/// [`parse_mount`] with the provider's [`ParseOptions`].
pub fn parse_mount_with(
    attributes: &str,
    secrets: &str,
    permission: &str,
    target_path: &str,
    options: &ParseOptions,
) -> Result<MountParams, ParamError> {
    let attrs = Attributes::parse(attributes)?;
    let secrets = parse_string_map::<SecretString>("secrets", secrets)?;
    let default_mode = parse_permission(permission)?;
    let target_path = parse_target_path(target_path)?;

    let vault_name = attrs.required(P_KEYVAULT_NAME)?;
    let vault = VaultName::parse(vault_name).ok_or_else(|| ParamError::InvalidVaultName {
        origin: P_KEYVAULT_NAME.to_owned(),
        name: snippet(vault_name),
    })?;
    let failover = match attrs.trimmed(P_FAILOVER_KEYVAULT_NAME) {
        "" => None,
        name => {
            let parsed = VaultName::parse(name).ok_or_else(|| ParamError::InvalidVaultName {
                origin: P_FAILOVER_KEYVAULT_NAME.to_owned(),
                name: snippet(name),
            })?;
            if parsed.as_str().eq_ignore_ascii_case(vault.as_str()) {
                return Err(ParamError::InvalidParameter {
                    name: P_FAILOVER_KEYVAULT_NAME,
                    reason: "is keyvaultName itself; a failover vault is another one".to_owned(),
                });
            }
            Some(parsed)
        }
    };
    let tenant_id = parse_tenant(&attrs)?;
    let cloud = parse_cloud(&attrs, &options.default_cloud)?;
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
    let (objects, selections, unknown_keys) =
        objects::parse_objects_with(objects_yaml, &vault, options.strict)?;

    Ok(MountParams {
        vault,
        failover,
        tenant_id,
        cloud,
        auth,
        objects,
        selections,
        pod,
        secret_provider_class,
        default_mode,
        target_path,
        unknown_keys,
    })
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

/// `cloudName`: empty means `default` (`--cloud-name`, [`DEFAULT_CLOUD`] unless set);
/// `AzureStackCloud` a custom cloud with `cloudEnvFileName`; else a name [`Cloud::parse`]
/// accepts. As in the Go provider, `cloudEnvFileName` is read only with an explicit
/// `cloudName: AzureStackCloud`.
fn parse_cloud(attrs: &Attributes, default: &MountCloud) -> Result<MountCloud, ParamError> {
    let value = attrs.trimmed(P_CLOUD_NAME);
    if value.is_empty() {
        return Ok(default.clone());
    }
    if value.eq_ignore_ascii_case("AzureStackCloud") {
        return Ok(MountCloud::Custom {
            env_file: parse_env_file(attrs.trimmed(P_CLOUD_ENV_FILE_NAME))?,
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
    Cloud::parse(value)
        .map(MountCloud::Azure)
        .map_err(ParamError::InvalidCloud)
}

/// `cloudEnvFileName`, checked lexically: at most [`MAX_PATH_BYTES`], no NUL or control
/// character, no `..` segment. Where it may be is the provider's rule (`--cloud-env-dir`).
fn parse_env_file(value: &str) -> Result<Option<String>, ParamError> {
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: &str| ParamError::InvalidParameter {
        name: P_CLOUD_ENV_FILE_NAME,
        reason: format!("{:?} {reason}", snippet(value)),
    };
    if value.len() > MAX_PATH_BYTES {
        return Err(invalid("is longer than 4096 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains a NUL or control character"));
    }
    if value.split('/').any(|segment| segment == "..") {
        return Err(invalid("has a '..' segment"));
    }
    Ok(Some(value.to_owned()))
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
mod fixtures;
#[cfg(test)]
mod tests;
