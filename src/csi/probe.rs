//! `akv-bridge probe csi`: a Mount sent exactly as the Secrets Store CSI Driver sends it,
//! from a SecretProviderClass file, with the answer listed (never printed) or written out.
//!
//! The driver's request: `attributes` = the SecretProviderClass `spec.parameters` merged with
//! the pod information (`secretProviderClass`, `csi.storage.k8s.io/pod.name`,
//! `…/pod.namespace`, `…/pod.uid`, `…/serviceAccount.name`, `…/ephemeral`, and
//! `…/serviceAccount.tokens` when a token is given); `secrets` = the `nodePublishSecretRef`
//! Secret's data; `permission` = the default file mode in decimal; `target_path` = the
//! volume's directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::ProbeCsiArgs;
use crate::csi::params::{RelativeFilePath, WORKLOAD_IDENTITY_AUDIENCE};
use crate::proto::csi_v1alpha1 as pb;
use crate::secret::SecretString;
use crate::socket::SocketAddress;

/// Largest input file read (SecretProviderClass, token, Secret).
const MAX_INPUT: u64 = 1024 * 1024;

/// What went wrong before or around the Mount.
#[derive(Debug, thiserror::Error)]
pub enum ProbeCsiError {
    /// An input file.
    #[error("{path}: {reason}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The socket address.
    #[error("{0}")]
    Socket(String),
    /// Writing the files out.
    #[error("writing {path}: {reason}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

/// One returned file, described without its contents.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// Relative path.
    pub path: String,
    /// Mode, octal.
    pub mode: String,
    /// Size in bytes.
    pub bytes: usize,
}

/// The probe's findings.
#[derive(Debug, Serialize, Default)]
pub struct ProbeCsiReport {
    /// `Version`'s answer: `v1alpha1 akv-bridge 0.1.0`, or the error.
    pub version: String,
    /// Whether the Mount succeeded.
    pub ok: bool,
    /// The gRPC code of a failed Mount.
    pub code: Option<String>,
    /// Its message.
    pub error: Option<String>,
    /// Files returned.
    pub files: Vec<FileReport>,
    /// Object versions returned.
    pub object_versions: BTreeMap<String, String>,
    /// Where the files were written, if they were.
    pub written_to: Option<PathBuf>,
    /// Milliseconds the Mount took.
    pub mount_ms: u128,
}

impl ProbeCsiReport {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = format!("Version: {}\n", self.version);
        if self.ok {
            out.push_str(&format!(
                "Mount: ok in {} ms, {} files\n",
                self.mount_ms,
                self.files.len()
            ));
            for f in &self.files {
                out.push_str(&format!(
                    "  {:<48} {} {:>8} bytes\n",
                    f.path, f.mode, f.bytes
                ));
            }
            out.push_str("Object versions:\n");
            for (id, v) in &self.object_versions {
                let v = if v.is_empty() {
                    "(optional, absent)"
                } else {
                    v
                };
                out.push_str(&format!("  {id:<48} {v}\n"));
            }
            if let Some(dir) = &self.written_to {
                out.push_str(&format!("Written to {}\n", dir.display()));
            }
        } else {
            out.push_str(&format!(
                "Mount: FAILED ({}) after {} ms: {}\n",
                self.code.as_deref().unwrap_or("?"),
                self.mount_ms,
                self.error.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

/// The file at `path` as text, held as a secret (a token file, a Secret manifest).
fn read_input(path: &Path) -> Result<SecretString, ProbeCsiError> {
    let input = |reason: String| ProbeCsiError::Input {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| input(e.to_string()))?;
    if meta.len() > MAX_INPUT {
        return Err(input(format!("larger than {MAX_INPUT} bytes")));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| input(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| input("not UTF-8".into()))?;
    Ok(SecretString::from(text))
}

fn scalar(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `(name, parameters)` of a SecretProviderClass document.
pub fn spc_parameters(yaml: &str) -> Result<(Option<String>, BTreeMap<String, String>), String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some("SecretProviderClass") {
        return Err("not a SecretProviderClass (kind)".into());
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned);
    let spec = doc.get("spec").ok_or("no spec")?;
    if let Some(provider) = spec.get("provider").and_then(|p| p.as_str())
        && provider != "azure"
    {
        return Err(format!("spec.provider is {provider:?}, not \"azure\""));
    }
    let params = spec
        .get("parameters")
        .and_then(|p| p.as_mapping())
        .ok_or("no spec.parameters map")?;
    let mut out = BTreeMap::new();
    for (k, v) in params {
        let key = k.as_str().ok_or("a parameter name is not a string")?;
        let value = scalar(v).ok_or_else(|| format!("parameter {key} is not a string"))?;
        out.insert(key.to_owned(), value);
    }
    Ok((name, out))
}

/// The `nodePublishSecretRef` data from a map or a Kubernetes Secret manifest.
pub fn secret_data(yaml: &str) -> Result<BTreeMap<String, String>, String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let mut out = BTreeMap::new();
    if doc.get("kind").and_then(|k| k.as_str()) == Some("Secret") {
        if let Some(data) = doc.get("data").and_then(|d| d.as_mapping()) {
            for (k, v) in data {
                let key = k.as_str().ok_or("a data key is not a string")?;
                let encoded = v
                    .as_str()
                    .ok_or_else(|| format!("data.{key} is not a string"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| format!("data.{key} is not base64"))?;
                let text =
                    String::from_utf8(bytes).map_err(|_| format!("data.{key} is not UTF-8"))?;
                out.insert(key.to_owned(), text);
            }
        }
        if let Some(data) = doc.get("stringData").and_then(|d| d.as_mapping()) {
            for (k, v) in data {
                let key = k.as_str().ok_or("a stringData key is not a string")?;
                out.insert(
                    key.to_owned(),
                    scalar(v).ok_or_else(|| format!("stringData.{key} is not a string"))?,
                );
            }
        }
        return Ok(out);
    }
    let map = doc.as_mapping().ok_or("not a map")?;
    for (k, v) in map {
        let key = k.as_str().ok_or("a key is not a string")?;
        out.insert(
            key.to_owned(),
            scalar(v).ok_or_else(|| format!("{key} is not a string"))?,
        );
    }
    Ok(out)
}

/// The Mount request the driver would send.
pub fn build_request(
    args: &ProbeCsiArgs,
    spc_name: Option<String>,
    mut attributes: BTreeMap<String, String>,
    token: Option<&str>,
    secrets: &BTreeMap<String, String>,
    target_path: &Path,
) -> Result<pb::MountRequest, String> {
    let pod = |k: &str| format!("csi.storage.k8s.io/{k}");
    if let Some(name) = spc_name {
        attributes.insert("secretProviderClass".into(), name);
    }
    attributes.insert(pod("pod.name"), args.pod_name.clone());
    attributes.insert(pod("pod.namespace"), args.pod_namespace.clone());
    attributes.insert(
        pod("pod.uid"),
        "00000000-0000-4000-8000-00000000a0be".into(),
    );
    attributes.insert(pod("serviceAccount.name"), args.service_account.clone());
    attributes.insert(pod("ephemeral"), "false".into());
    if let Some(token) = token {
        let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let expiry = expiry
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?;
        let tokens = json!({
            WORKLOAD_IDENTITY_AUDIENCE: {"token": token.trim(), "expirationTimestamp": expiry}
        });
        attributes.insert(pod("serviceAccount.tokens"), tokens.to_string());
    }
    Ok(pb::MountRequest {
        attributes: serde_json::to_string(&attributes).map_err(|e| e.to_string())?,
        secrets: serde_json::to_string(secrets).map_err(|e| e.to_string())?,
        target_path: target_path.display().to_string(),
        permission: args.permission.to_string(),
        current_object_version: Vec::new(),
    })
}

/// Writes the files as the driver does: each path checked, parents created, contents
/// written to a temporary file and renamed into place with its mode.
pub fn write_files(dir: &Path, files: &[pb::File]) -> Result<(), ProbeCsiError> {
    let out = |path: &Path, reason: String| ProbeCsiError::Output {
        path: path.to_owned(),
        reason,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| out(dir, e.to_string()))?;
    for file in files {
        let relative = RelativeFilePath::parse(&file.path)
            .map_err(|e| out(Path::new(&file.path), format!("unsafe path refused: {e}")))?;
        let mode = u32::try_from(file.mode)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| out(Path::new(&file.path), format!("bad mode {}", file.mode)))?;
        let target = dir.join(relative.as_path());
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| out(parent, e.to_string()))?;
        }
        let tmp = target.with_extension("akv-bridge-tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| out(&tmp, e.to_string()))?;
        f.write_all(&file.contents)
            .and_then(|()| f.sync_all())
            .map_err(|e| out(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, &target).map_err(|e| out(&target, e.to_string()))?;
    }
    Ok(())
}

/// Runs the probe.
pub async fn probe(args: &ProbeCsiArgs) -> Result<ProbeCsiReport, ProbeCsiError> {
    let input = |path: &Path| {
        let path = path.to_owned();
        move |reason: String| ProbeCsiError::Input { path, reason }
    };
    let socket = SocketAddress::parse_endpoint(&args.socket)
        .map_err(|e| ProbeCsiError::Socket(e.to_string()))?;
    let spc = read_input(&args.spc)?;
    let (name, params) = spc_parameters(spc.expose_secret()).map_err(input(&args.spc))?;
    let token = match &args.pod_token {
        Some(p) => Some(read_input(p)?),
        None => None,
    };
    let secrets = match &args.secrets {
        Some(p) => secret_data(read_input(p)?.expose_secret()).map_err(input(p))?,
        None => BTreeMap::new(),
    };
    let target = match &args.out {
        Some(dir) => std::path::absolute(dir).map_err(|e| ProbeCsiError::Output {
            path: dir.clone(),
            reason: e.to_string(),
        })?,
        None => {
            PathBuf::from("/var/lib/kubelet/pods/probe/volumes/kubernetes.io~csi/secrets/mount")
        }
    };
    let request = build_request(
        args,
        name,
        params,
        token.as_ref().map(SecretString::expose_secret),
        &secrets,
        &target,
    )
    .map_err(input(&args.spc))?;

    let mut report = ProbeCsiReport::default();
    let channel = match crate::socket::connect(&socket, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => {
            report.version = format!("cannot connect: {e}");
            report.code = Some("UNAVAILABLE".into());
            report.error = Some(e.to_string());
            return Ok(report);
        }
    };
    let mut client = pb::csi_driver_provider_client::CsiDriverProviderClient::new(channel)
        .max_decoding_message_size(crate::csi::service::MAX_RESPONSE_BYTES);
    report.version = match client
        .version(pb::VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
    {
        Ok(v) => {
            let v = v.into_inner();
            format!("{} {} {}", v.version, v.runtime_name, v.runtime_version)
        }
        Err(status) => format!("failed: {}", status.message()),
    };
    let started = std::time::Instant::now();
    let mut call = tonic::Request::new(request);
    call.set_timeout(args.timeout);
    let answer = client.mount(call).await;
    report.mount_ms = started.elapsed().as_millis();
    match answer {
        Err(status) => {
            report.code = Some(crate::observability::metrics::code_name(status.code()).into());
            report.error = Some(status.message().to_owned());
        }
        Ok(response) => {
            let response = response.into_inner();
            if let Some(code) = response
                .error
                .as_ref()
                .map(|e| e.code.clone())
                .filter(|c| !c.is_empty())
            {
                report.code = Some(code.clone());
                report.error = Some(format!("provider error code {code}"));
                return Ok(report);
            }
            report.ok = true;
            report.files = response
                .files
                .iter()
                .map(|f| FileReport {
                    path: f.path.clone(),
                    mode: format!("{:04o}", f.mode),
                    bytes: f.contents.len(),
                })
                .collect();
            report.object_versions = response
                .object_version
                .iter()
                .map(|v| (v.id.clone(), v.version.clone()))
                .collect();
            if let Some(dir) = &args.out {
                write_files(dir, &response.files)?;
                report.written_to = Some(dir.clone());
            }
            // The contents go when `response` does; scrub them first.
            let mut files = response.files;
            for f in &mut files {
                zeroize::Zeroize::zeroize(&mut f.contents);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_secrets_are_read_as_the_driver_sees_them() {
        let (name, params) = spc_parameters(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {name: app}\nspec:\n  provider: azure\n  parameters:\n    \
             keyvaultName: kv1\n    useVMManagedIdentity: \"true\"\n    objects: |\n      array: []\n",
        )
        .unwrap();
        assert_eq!(name.as_deref(), Some("app"));
        assert_eq!(params["keyvaultName"], "kv1");
        assert_eq!(params["useVMManagedIdentity"], "true");
        assert!(spc_parameters("kind: Pod").is_err());
        let s = secret_data("kind: Secret\ndata: {clientid: YWJj}\nstringData: {clientsecret: x}")
            .unwrap();
        assert_eq!(
            (s["clientid"].as_str(), s["clientsecret"].as_str()),
            ("abc", "x")
        );
        let s = secret_data("{clientid: a, clientsecret: b}").unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn unsafe_paths_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let bad = pb::File {
            path: "../escape".into(),
            mode: 0o644,
            contents: b"x".to_vec(),
        };
        assert!(write_files(dir.path(), &[bad]).is_err());
        assert!(!dir.path().parent().unwrap().join("escape").exists());
        let good = pb::File {
            path: "a/b.txt".into(),
            mode: 0o640,
            contents: b"x".to_vec(),
        };
        write_files(dir.path(), &[good]).unwrap();
        let meta = std::fs::metadata(dir.path().join("a/b.txt")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    }
}
