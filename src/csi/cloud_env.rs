//! Custom clouds (`cloudName: AzureStackCloud`): the Entra and Key Vault endpoints from a
//! go-autorest environment file, as the Go provider reads them.
//!
//! The Go provider sets the process's `AZURE_ENVIRONMENT_FILEPATH` to the
//! SecretProviderClass's `cloudEnvFileName` (any path, no restriction) and has go-autorest
//! read it when `cloudName` is `AzureStackCloud`. A path written by a namespace admin and
//! read by a node-privileged process is a file-read primitive, and the file decides where
//! credentials and tokens are sent, so akv-bridge reads `cloudEnvFileName` only under the
//! directory the operator names with `--cloud-env-dir` (none: refused), after resolving
//! symbolic links, as a regular file of at most [`MAX_ENV_FILE_BYTES`]. Errors never quote
//! the file's content. The operator's own default file (`--cloud-env-file`, or
//! `AZURE_ENVIRONMENT_FILEPATH` as with go-autorest) is read once at start-up and serves
//! `AzureStackCloud` mounts without `cloudEnvFileName`.
//!
//! The file is parsed as the KMS plugin parses it (`crate::azure::environment`):
//! `activeDirectoryEndpoint` (the Entra or AD FS authority, https) and `keyVaultDNSSuffix`
//! (vaults are `https://<name>.<suffix>`) are required; other keys are ignored
//! (`keyVaultEndpoint` too: the token's scope comes from the vault URL, which for a
//! well-formed file names the same host).

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::azure::environment::CustomCloud;
use crate::azure::environment::EnvironmentError;

/// Largest environment file read, in bytes (go-autorest's are under 2 KiB).
pub const MAX_ENV_FILE_BYTES: u64 = 64 * 1024;

/// Why a custom cloud's environment cannot be used. Never quotes the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEnvError {
    /// `cloudEnvFileName` is set but the provider reads none (`--cloud-env-dir` unset).
    #[error(
        "cloudEnvFileName: custom cloud environment files are not enabled on this provider: \
         its operator must name the directory they are in with --cloud-env-dir"
    )]
    Disabled,
    /// `cloudName: AzureStackCloud` without `cloudEnvFileName`, and no default file.
    #[error(
        "cloudName AzureStackCloud needs cloudEnvFileName (or a default environment file \
         given to the provider with --cloud-env-file / AZURE_ENVIRONMENT_FILEPATH)"
    )]
    NoFile,
    /// The path is not a regular file under `--cloud-env-dir` (symbolic links resolved),
    /// or it cannot be read.
    #[error("cloudEnvFileName {path:?} {reason}")]
    NotAllowed {
        /// The path as written (shortened).
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The file is not a usable environment.
    #[error("the cloud environment file {path:?} {reason}")]
    Invalid {
        /// The path as written (shortened).
        path: String,
        /// What is wrong: a JSON category and position, or the field at fault.
        reason: String,
    },
}

/// Parses a go-autorest environment file with the parser the KMS plugin uses
/// ([`CustomCloud::parse`]). `path` only names the file in errors.
pub fn parse_environment(bytes: &[u8], path: &str) -> Result<CustomCloud, CloudEnvError> {
    CustomCloud::parse(bytes, path).map_err(|e| CloudEnvError::Invalid {
        path: shorten(path),
        reason: match e {
            EnvironmentError::NotJson { reason, .. } => format!("is not a JSON object: {reason}"),
            EnvironmentError::Field { field, problem, .. } => format!("{field} {problem}"),
            EnvironmentError::TooLarge { .. } => "is too large".to_owned(),
            EnvironmentError::Read { .. } | EnvironmentError::NoFile => {
                "could not be read".to_owned()
            }
        },
    })
}

/// Where custom cloud environments may come from: the provider's flags.
#[derive(Debug, Clone, Default)]
pub struct CloudEnvFiles {
    /// `--cloud-env-dir`, symbolic links resolved; `None`: `cloudEnvFileName` is refused.
    dir: Option<PathBuf>,
    /// The default environment (`--cloud-env-file` / `AZURE_ENVIRONMENT_FILEPATH`), read at
    /// start-up.
    default: Option<Arc<CustomCloud>>,
}

impl CloudEnvFiles {
    /// Checks the flags at start-up: `dir` must be a directory; `default_file` is read and
    /// parsed now (the operator's file: no directory rule).
    pub fn new(dir: Option<&Path>, default_file: Option<&Path>) -> Result<Self, String> {
        let dir = match dir {
            None => None,
            Some(dir) => {
                let canonical = std::fs::canonicalize(dir)
                    .map_err(|e| format!("--cloud-env-dir {}: {e}", dir.display()))?;
                if !canonical.is_dir() {
                    return Err(format!(
                        "--cloud-env-dir {}: not a directory",
                        dir.display()
                    ));
                }
                Some(canonical)
            }
        };
        let default = match default_file {
            None => None,
            Some(file) => {
                let name = file.display().to_string();
                let bytes = read_bounded(file).map_err(|reason| {
                    format!("--cloud-env-file (AZURE_ENVIRONMENT_FILEPATH) {name}: {reason}")
                })?;
                let cloud = parse_environment(&bytes, &name)
                    .map_err(|e| format!("--cloud-env-file (AZURE_ENVIRONMENT_FILEPATH): {e}"))?;
                Some(Arc::new(cloud))
            }
        };
        Ok(Self { dir, default })
    }

    /// Whether a default environment was given (so `AzureStackCloud` is usable without
    /// `cloudEnvFileName`).
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The environment of a mount: `env_file` (`cloudEnvFileName`) read under the
    /// directory, else the default. Reads a small local file (blocking, off the runtime's
    /// worker thread).
    pub async fn resolve(&self, env_file: Option<&str>) -> Result<Arc<CustomCloud>, CloudEnvError> {
        let Some(name) = env_file else {
            return self.default.clone().ok_or(CloudEnvError::NoFile);
        };
        let Some(dir) = self.dir.clone() else {
            return Err(CloudEnvError::Disabled);
        };
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || read_in_dir(&dir, &name))
            .await
            .unwrap_or_else(|_| {
                Err(CloudEnvError::NotAllowed {
                    path: String::new(),
                    reason: "could not be read",
                })
            })
            .map(Arc::new)
    }
}

/// Reads `name` (absolute, or relative to `dir`) if it resolves to a regular file under
/// `dir`. Every refusal after the lexical check reads the same, so paths under the
/// directory are all that can be probed.
fn read_in_dir(dir: &Path, name: &str) -> Result<CustomCloud, CloudEnvError> {
    let not_allowed = |reason| CloudEnvError::NotAllowed {
        path: shorten(name),
        reason,
    };
    let outside = "is not a file under the provider's --cloud-env-dir";
    let path = dir.join(name);
    // Lexically outside: refused without touching the file system.
    if !path.starts_with(dir) {
        return Err(not_allowed(outside));
    }
    let unreadable = "is not a readable regular file under the provider's --cloud-env-dir";
    let canonical = std::fs::canonicalize(&path).map_err(|_| not_allowed(unreadable))?;
    if !canonical.starts_with(dir) || canonical == dir {
        return Err(not_allowed(outside));
    }
    let bytes = read_bounded(&canonical).map_err(|_| not_allowed(unreadable))?;
    parse_environment(&bytes, name)
}

/// A regular file's bytes, at most [`MAX_ENV_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > MAX_ENV_FILE_BYTES {
        return Err(format!("larger than {MAX_ENV_FILE_BYTES} bytes"));
    }
    crate::file::read_at_most(file, MAX_ENV_FILE_BYTES)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("larger than {MAX_ENV_FILE_BYTES} bytes"))
}

fn shorten(path: &str) -> String {
    match path.char_indices().nth(128) {
        None => path.to_owned(),
        Some((cut, _)) => format!("{}…", path.get(..cut).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests;
