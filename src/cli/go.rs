//! The command lines of the Go originals, read as they wrote them.
//!
//! An operator who swaps only the image keeps the Go manifests' arguments, which differ
//! from ours in two ways that clap alone would refuse:
//! - **No subcommand.** Azure/kubernetes-kms's static pod and the provider-azure DaemonSet
//!   pass flags only (`--keyvault-name=…`, `--endpoint=…`). The flags name their program:
//!   [`infer_command`] puts `kms` or `csi` in front when a flag only one of them has is
//!   present, and refuses a mix.
//! - **Go's single-dash long flags** (`-keyvault-name=kv`): Go's `flag` package treats `-x`
//!   and `--x` alike. A single-dash token whose name is a long flag of the command is
//!   rewritten to the double-dash form; `-v=2` (a one-letter flag) is left alone.
//!
//! Pure: the caller passes the arguments and the command tree; nothing reads the process.

use std::ffi::OsString;

/// Flags only Azure/kubernetes-kms has (v0.11.0, `cmd/server/main.go`).
const KMS_ONLY: &[&str] = &[
    "listen-addr",
    "keyvault-name",
    "key-name",
    "key-version",
    "managed-hsm",
    "config-file-path",
    "configFilePath",
    "metrics-addr",
    "proxy-mode",
    "proxy-address",
    "proxy-port",
];

/// Flags only the provider-azure has (v1.8, `cmd/main.go`).
const CSI_ONLY: &[&str] = &[
    "endpoint",
    "construct-pem-chain",
    "write-cert-and-key-in-separate-files",
    "prometheus-port",
    "custom-user-agent",
    "cloud-name",
    "enable-pprof",
    "pprof-port",
    "token-proxy-url",
    "sni-name",
];

/// Why a command line cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoArgsError {
    /// Flags of both programs, no subcommand to say which is meant.
    #[error(
        "the flags mix the KMS plugin's (--{kms}) and the CSI provider's (--{csi}); \
         put `kms` or `csi` first"
    )]
    Mixed {
        /// A KMS-only flag present.
        kms: String,
        /// A CSI-only flag present.
        csi: String,
    },
}

/// The flag name of a token: `--key-name=x` and `-key-name` give `key-name`; `None` for
/// values, `-`, `--` and tokens that are not UTF-8.
fn flag_name(token: &OsString) -> Option<&str> {
    let s = token.to_str()?;
    let body = s.strip_prefix("--").or_else(|| s.strip_prefix('-'))?;
    let name = body.split_once('=').map_or(body, |(name, _)| name);
    (!name.is_empty()).then_some(name)
}

/// `kms` or `csi` when `args` (program name first) start with a flag instead of a
/// subcommand and their flags belong to exactly one of the two programs; `None` when a
/// subcommand is given, or no flag says which program is meant (clap then explains).
pub fn infer_command(args: &[OsString]) -> Result<Option<&'static str>, GoArgsError> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(None);
    };
    if !first.starts_with('-') || matches!(first, "-h" | "--help" | "-V" | "--version") {
        return Ok(None);
    }
    let mut kms = None;
    let mut csi = None;
    for token in args.iter().skip(1) {
        if token == "--" {
            break;
        }
        let Some(name) = flag_name(token) else {
            continue;
        };
        if kms.is_none() && KMS_ONLY.contains(&name) {
            kms = Some(name.to_owned());
        }
        if csi.is_none() && CSI_ONLY.contains(&name) {
            csi = Some(name.to_owned());
        }
    }
    match (kms, csi) {
        (Some(kms), Some(csi)) => Err(GoArgsError::Mixed { kms, csi }),
        (Some(_), None) => Ok(Some("kms")),
        (None, Some(_)) => Ok(Some("csi")),
        (None, None) => Ok(None),
    }
}

/// The command line as clap should see it: the inferred subcommand inserted, and the
/// subcommand's single-dash long flags given their second dash. `tree` is the whole
/// command tree (`Cli::command()`).
pub fn normalize(
    mut args: Vec<OsString>,
    tree: &clap::Command,
) -> Result<Vec<OsString>, GoArgsError> {
    if let Some(command) = infer_command(&args)? {
        args.insert(1, command.into());
    }
    let Some(sub) = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|name| tree.find_subcommand(name))
    else {
        return Ok(args);
    };
    let longs: Vec<&str> = sub
        .get_arguments()
        .flat_map(|a| a.get_long_and_visible_aliases().unwrap_or_default())
        .collect();
    for token in args.iter_mut().skip(2) {
        if token == "--" {
            break;
        }
        let Some(s) = token.to_str() else {
            continue;
        };
        if s.starts_with("--") || !s.starts_with('-') {
            continue;
        }
        match flag_name(token) {
            Some(name) if name.chars().count() > 1 && longs.contains(&name) => {
                let mut long = OsString::from("-");
                long.push(&*token);
                *token = long;
            }
            _ => {}
        }
    }
    Ok(args)
}

/// Go's `strconv.ParseBool`, which Go's boolean flags use: `1 t T TRUE true True` and
/// `0 f F FALSE false False`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true, false, 1, 0, t, f)")),
    }
}

#[cfg(test)]
mod tests;
