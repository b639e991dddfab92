//! `akv-bridge dev`: everything on one machine. Starts mock-vault in-process with a fresh
//! RSA key, sample secrets, keys and a certificate chain; the KMS plugin and the CSI
//! provider on sockets in a local directory; prints the EncryptionConfiguration and a
//! sample SecretProviderClass; checks both servers as their clients would (a KMS round
//! trip, a CSI Mount with workload identity), and serves until Ctrl-C.
//!
//! Built only with the `dev` feature: the production binary and image carry no mock vault.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::probe::ProbeOptions;
use crate::socket::SocketAddress;

/// Flags of `akv-bridge dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the sockets, azure.json and the mock's CA (created, mode 0700).
    #[arg(long, default_value = ".dev")]
    pub dir: PathBuf,
    /// HTTPS port of the mock vault (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    pub vault_port: u16,
    /// Log JSON lines.
    #[arg(long)]
    pub log_format_json: bool,
    /// Stop after the self-check instead of serving (for scripts and CI).
    #[arg(long)]
    pub check_only: bool,
}

const FIXTURE: &str = r#"
vaults:
  - name: akv-bridge-dev
    keys:
      - {name: kms-kek, kty: RSA, size: 3072}
      - {name: signing-key, kty: EC, crv: P-256}
    secrets:
      - {name: db-password, value: "correct horse battery staple", content_type: text/plain}
      - {name: app-config, value: '{"user":"app","password":"dev-only-password"}', content_type: application/json}
      - {name: api-token, values: [dev-token-1, dev-token-2]}
    certificates:
      - {name: web-tls, dns_names: [web.dev.example], issuer: MockCA}
identities:
  - name: kms-plugin
    client_id: 6f3c9a2e-0b8d-4a51-9f6e-kms000000001
    client_secret: dev-only-kms-secret
    permissions: {akv-bridge-dev: {keys: [get, list, encrypt, decrypt]}}
  - name: app
    client_id: 6f3c9a2e-0b8d-4a51-9f6e-app000000001
    federated: [{subject: "system:serviceaccount:default:app"}]
    permissions: {akv-bridge-dev: {secrets: [get, list], certificates: [get], keys: [get]}}
  - name: developer
    client_id: 6f3c9a2e-0b8d-4a51-9f6e-dev000000001
    client_secret: dev-only-admin-secret
"#;

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("akv-bridge dev: {what}: {e}");
    ExitCode::FAILURE
}

/// Runs the development environment.
pub async fn main(args: DevArgs) -> ExitCode {
    crate::observability::logging::init(
        args.log_format_json,
        crate::observability::logging::Scale::Klog,
        0,
    );
    let dir = match prepare_dir(&args.dir) {
        Ok(d) => d,
        Err(e) => return fail("cannot prepare the directory", e),
    };
    let fixture = match mock_vault::Fixture::parse(FIXTURE) {
        Ok(f) => f,
        Err(e) => return fail("embedded fixture", e),
    };
    let mock = match mock_vault::start(mock_vault::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], args.vault_port)),
        fixture,
        ca_out: Some(dir.join("mock-vault-ca.pem")),
        ..mock_vault::Config::default()
    })
    .await
    {
        Ok(m) => m,
        Err(e) => return fail("mock vault", e),
    };
    let info = mock.info().clone();
    let Some(vault) = info.vaults.get("akv-bridge-dev") else {
        return fail("mock vault", "the dev vault is missing");
    };
    let azure_json = dir.join("azure.json");
    let body = json!({
        "cloud": "AzurePublicCloud",
        "tenantId": info.tenant_id,
        "aadClientId": "6f3c9a2e-0b8d-4a51-9f6e-kms000000001",
        "aadClientSecret": "dev-only-kms-secret",
    });
    if let Err(e) = write_private(&azure_json, body.to_string().as_bytes()) {
        return fail("cannot write azure.json", e);
    }
    let socket = dir.join("kms.sock");
    let mut argv = vec![
        format!("--listen-addr=unix://{}", socket.display()),
        format!("--vault-url={}", vault.url),
    ];
    argv.extend(mock_flags(&info));
    argv.extend([
        format!("--config-file-path={}", azure_json.display()),
        "--key-name=kms-kek".to_owned(),
        "--healthz-port=0".to_owned(),
        "--metrics-addr=127.0.0.1:0".to_owned(),
    ]);
    let kms_args = match crate::cli::parse_flags("kms", argv) {
        Ok(a) => a,
        Err(e) => return fail("plugin flags", e),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut plugin = tokio::spawn(crate::kms::run(kms_args, async {
        let _ = stop_rx.await;
    }));

    // The CSI provider, on the same mock.
    let csi_socket = dir.join("csi").join("azure.sock");
    let template = vault.url.replacen("akv-bridge-dev", "{name}", 1);
    let mut argv = vec![
        format!("--endpoint=unix://{}", csi_socket.display()),
        format!("--vault-url-template={template}"),
    ];
    argv.extend(mock_flags(&info));
    argv.extend([
        "--healthz-port=0".to_owned(),
        "--healthz-bind-address=127.0.0.1".to_owned(),
        "--prometheus-port=0".to_owned(),
        "--metrics-bind-address=127.0.0.1".to_owned(),
    ]);
    let csi_args = match crate::cli::parse_flags("csi", argv) {
        Ok(a) => a,
        Err(e) => return fail("provider flags", e),
    };
    let (csi_stop_tx, csi_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut provider = tokio::spawn(crate::csi::run(csi_args, async {
        let _ = csi_stop_rx.await;
    }));

    // Wait for both sockets, then check them the way their clients would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kms_up = tokio::net::UnixStream::connect(&socket).await.is_ok();
        let csi_up = tokio::net::UnixStream::connect(&csi_socket).await.is_ok();
        if kms_up && csi_up {
            break;
        }
        if plugin.is_finished() {
            return match (&mut plugin).await {
                Ok(Err(e)) => fail("KMS plugin", e),
                _ => fail("KMS plugin", "stopped"),
            };
        }
        if provider.is_finished() {
            return match (&mut provider).await {
                Ok(Err(e)) => fail("CSI provider", e),
                _ => fail("CSI provider", "stopped"),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return fail("servers", "did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec = SocketAddress::Path(socket.clone());
    // The plugin resolves its key in the background: wait for Status as kube-apiserver does.
    let ready = match crate::socket::connect(&spec, Duration::from_secs(5)).await {
        Ok(channel) => crate::probe::wait_for_status_ok(channel, Duration::from_secs(30)).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = ready {
        return fail("KMS plugin", e);
    }
    let report = crate::probe::probe_socket(
        &spec,
        &ProbeOptions {
            envelope: true,
            ..ProbeOptions::default()
        },
    )
    .await;

    // A SecretProviderClass and a pod token for workload identity.
    let spc_path = dir.join("secretproviderclass.yaml");
    let spc = secret_provider_class(&info.tenant_id);
    if let Err(e) = write_private(&spc_path, spc.as_bytes()) {
        return fail("cannot write the SecretProviderClass", e);
    }
    let token_path = dir.join("pod-token");
    let Some(token) = mock.sa_token(
        "system:serviceaccount:default:app",
        Duration::from_secs(24 * 3600),
    ) else {
        return fail("mock vault", "cannot issue a service account token");
    };
    if let Err(e) = write_private(&token_path, token.as_bytes()) {
        return fail("cannot write the pod token", e);
    }
    let mount_dir = dir.join("mount");
    let probe_args = crate::cli::ProbeCsiArgs {
        socket: format!("unix://{}", csi_socket.display()),
        spc: spc_path.clone(),
        pod_token: Some(token_path.clone()),
        secrets: None,
        pod_name: "app-0".into(),
        pod_namespace: "default".into(),
        service_account: "app".into(),
        permission: 0o644,
        out: Some(mount_dir.clone()),
        timeout: Duration::from_secs(60),
        json: false,
    };
    let csi_report = match crate::csi::probe::probe(&probe_args).await {
        Ok(r) => r,
        Err(e) => return fail("CSI self-check", e),
    };

    println!("akv-bridge dev: mock Key Vault, KMS plugin and CSI provider are running\n");
    println!("  vault          {}", vault.url);
    println!(
        "  vault address  {} (CA {})",
        info.address,
        info.ca_pem_path.display()
    );
    println!("  Entra          {}", info.authority_host);
    println!("  KMS socket     unix://{}", socket.display());
    println!("  CSI socket     unix://{}", csi_socket.display());
    println!("  mock control   {}", info.control_url);
    println!("\nEncryptionConfiguration for kube-apiserver (--encryption-provider-config):\n");
    println!("{}", encryption_configuration(&socket));
    println!("Self-check (as kube-apiserver):\n{}", report.to_table());
    println!("SecretProviderClass ({}):\n\n{spc}", spc_path.display());
    println!(
        "Self-check (as the Secrets Store CSI Driver, files in {}):\n{}",
        mount_dir.display(),
        csi_report.to_table()
    );
    let ok = report.ok() && csi_report.ok;
    if !ok {
        eprintln!("akv-bridge dev: the self-check failed");
    }
    if !args.check_only && ok {
        println!(
            "Serving until Ctrl-C. Try:\n  akv-bridge probe kms --socket unix://{} --envelope\n  \
             akv-bridge probe csi --socket unix://{} --spc {} --pod-token {} --out {}",
            socket.display(),
            csi_socket.display(),
            spc_path.display(),
            token_path.display(),
            mount_dir.display(),
        );
        crate::server::process::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    let _ = csi_stop_tx.send(());
    let stopped = plugin.await;
    let provider_stopped = provider.await;
    mock.shutdown().await;
    match (stopped, provider_stopped) {
        (Ok(Ok(())), Ok(Ok(()))) if ok => ExitCode::SUCCESS,
        (Ok(Err(e)), _) => fail("KMS plugin", e),
        (_, Ok(Err(e))) => fail("CSI provider", e),
        _ => ExitCode::FAILURE,
    }
}

/// The sample SecretProviderClass `akv-bridge dev` mounts: a secret, one JSON field, two
/// versions of a secret, a certificate's key and chain, and a public key.
pub fn secret_provider_class(tenant_id: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: akv-bridge-dev
  namespace: default
spec:
  provider: azure
  parameters:
    keyvaultName: akv-bridge-dev
    tenantId: \"{tenant_id}\"
    clientID: \"6f3c9a2e-0b8d-4a51-9f6e-app000000001\"   # workload identity
    objects: |
      array:
        - |
          objectName: db-password
          objectType: secret
        - |
          objectName: app-config
          objectType: secret
          objectJsonKey: password
          objectAlias: app/password
        - |
          objectName: api-token
          objectType: secret
          objectVersionHistory: 2
        - |
          objectName: web-tls
          objectType: secret
          objectAlias: tls/web.pem
        - |
          objectName: signing-key
          objectType: key
        - |
          objectName: not-yet-created
          objectType: secret
          optional: true
"
    )
}

/// The EncryptionConfiguration that points kube-apiserver at the socket.
pub fn encryption_configuration(socket: &Path) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: azurekmsprovider
          endpoint: unix://{}
          timeout: 3s
      - identity: {{}}
",
        socket.display()
    )
}

/// [`crate::cli::mock_vault_flags`] for the in-process mock.
fn mock_flags(info: &mock_vault::Info) -> Vec<String> {
    crate::cli::mock_vault_flags(info.address, &info.ca_pem_path, &info.authority_host)
}

fn prepare_dir(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::canonicalize(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
