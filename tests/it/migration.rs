//! Drop-in at the manifest level: our binary started with exactly the arguments of the Go
//! originals' manifests (no subcommand), probed as kubelet probes them and called as their
//! clients call them. Only what cannot run here is substituted: socket paths under a
//! temporary directory instead of `/opt` and `/provider`, and the environment that points
//! the servers at mock-vault (vault host names, its CA, its Entra) instead of Azure.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use mock_vault::{Config, Fixture, MockVault};
use sha2::Digest as _;

use crate::common::kms::{eventually, free_port, latest_version};
use crate::common::*;

/// The node's address as kubelet sees a `hostNetwork` pod: the address this machine would
/// use to leave it (no packet is sent). Loopback only where the machine has no route.
fn node_address() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// kubelet's `httpGet` probe: status code, or 0 when nothing answers.
async fn http_get(addr: IpAddr, port: u16, path: &str) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    match client
        .get(format!("http://{addr}:{port}{path}"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// mock-vault answering for `*.vault.azure.net`, as Azure does for the public cloud.
async fn public_cloud_mock(fixture: &str) -> MockVault {
    mock_vault::start(Config {
        fixture: Fixture::parse(fixture).unwrap(),
        vault_domain: "vault.azure.net".into(),
        ..Config::default()
    })
    .await
    .unwrap()
}

/// The environment that stands in for Azure: every flag it sets is ours, none is in the
/// Go arguments.
fn mock_env(mock: &MockVault) -> Vec<(&'static str, String)> {
    let info = mock.info();
    vec![
        ("AKV_BRIDGE_VAULT_CONNECT_ADDR", info.address.to_string()),
        (
            "AKV_BRIDGE_CA_BUNDLE",
            info.ca_pem_path.display().to_string(),
        ),
        ("AZURE_AUTHORITY_HOST", info.authority_host.clone()),
        // The mock's challenge names `https://vault.azure.net:<port>`.
        (
            "AKV_BRIDGE_INSECURE_SKIP_CHALLENGE_RESOURCE_VERIFICATION",
            "true".into(),
        ),
    ]
}

/// An address (`health` or `metrics`) a server logged in its "serving" line: it was told
/// port 0, so no other test can hold the port it got.
async fn logged_addr(log: &Path, which: &str) -> String {
    let key = format!("{which}=");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Text (`health=…`) or JSON lines (`"health":"…"`).
        let found = text
            .lines()
            .filter(|l| l.contains(" serving"))
            .find_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(json) => json[which].as_str().map(str::to_owned),
                Err(_) => l
                    .split(key.as_str())
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned),
            });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {which} address in the serving line within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(args: &[String], env: &[(&str, String)], log: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Azure/kubernetes-kms v0.11.0 `docs/manual-install.md`: the static pod's `args`, in
/// order, with `${KV_NAME}`, `${KEY_NAME}`, `${KEY_VERSION}` filled in. The image's
/// entrypoint is the binary, so these are its whole command line.
fn go_static_pod_args(socket: &Path, version: &str) -> Vec<String> {
    vec![
        format!("--listen-addr=unix://{}", socket.display()),
        "--keyvault-name=kv1".into(),
        "--key-name=kek".into(),
        format!("--key-version={version}"),
        "--log-format-json=false".into(),
        "--healthz-port=8787".into(),
        "--healthz-path=/healthz".into(),
        "--healthz-timeout=20s".into(),
        "--managed-hsm=false".into(),
        "-v=1".into(),
    ]
}

#[tokio::test]
async fn the_go_static_pod_runs_unchanged_and_kubelet_and_kube_apiserver_are_served() {
    let mock = public_cloud_mock(KMS_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let azure_json = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let socket = dir.path().join("azurekms.socket");
    let version = latest_version(&mock);
    let mut env = mock_env(&mock);
    // Not in the Go arguments: its default is /etc/kubernetes/azure.json (a hostPath), and
    // its metrics default (:8095) is moved to a port the kernel picks.
    env.push((
        "AKV_BRIDGE_CONFIG_FILE_PATH",
        azure_json.display().to_string(),
    ));
    env.push(("AKV_BRIDGE_METRICS_ADDR", "127.0.0.1:0".into()));
    let log = dir.path().join("kms.log");
    let mut child = spawn(&go_static_pod_args(&socket, &version), &env, &log);
    wait_for_child_socket(&socket, &mut child).await;

    // kubelet probes a hostNetwork pod at the node's address.
    let node = node_address();
    eventually(
        Duration::from_secs(20),
        "liveness at the node address",
        async || http_get(node, 8787, "/healthz").await == 200,
    )
    .await;

    // kube-apiserver: Status ok with the Go plugin's key_id, then a round trip.
    let mut client = v2(&socket).await;
    let want_key_id = hex::encode(sha2::Sha256::digest(format!(
        "https://kv1.vault.azure.net/keys/kek/{version}"
    )));
    let status = wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
    assert_eq!(status.key_id, want_key_id);
    assert_eq!(status.version, "v2beta1");
    let seed = [7u8; 32];
    let wrapped = client
        .encrypt(v2::EncryptRequest {
            plaintext: seed.to_vec(),
            uid: "migration".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrapped.key_id, want_key_id);
    let plain = client
        .decrypt(v2::DecryptRequest {
            ciphertext: wrapped.ciphertext,
            uid: "migration".into(),
            key_id: wrapped.key_id,
            annotations: wrapped.annotations,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext, seed);
    assert!(child.try_wait().unwrap().is_none(), "the plugin exited");

    // The Go plugin's metric, as its dashboards query it, beside ours.
    let metrics_addr = logged_addr(&log, "metrics").await;
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (operation, status) in [
        ("grpc_status", "success"),
        ("grpc_encrypt", "success"),
        ("encrypt", "success"),
        ("grpc_decrypt", "success"),
        ("decrypt", "success"),
    ] {
        let want = format!(
            r#"kms_request_count{{operation="{operation}",otel_scope_name="keyvaultkms",otel_scope_version="",status="{status}"}}"#
        );
        assert!(metrics.contains(&want), "no {want} in:\n{metrics}");
    }
    assert!(
        metrics.contains("akv_bridge_kms_rpc_requests_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"akv_bridge_kms_rpc_duration_seconds_count{method="v2.Encrypt"}"#),
        "{metrics}"
    );
    // `--log-format-json=false` to a file: plain text, no terminal colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("KMS plugin configured"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{text}"
    );
}

#[tokio::test]
async fn go_single_dash_flags_and_the_deprecated_config_flag_are_read_as_go_reads_them() {
    let mock = public_cloud_mock(KMS_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let azure_json = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let socket = dir.path().join("azurekms.socket");
    let args: Vec<String> = vec![
        format!("-listen-addr=unix://{}", socket.display()),
        "-keyvault-name=kv1".into(),
        "-key-name".into(),
        "kek".into(),
        // Ignored by the Go plugin, so by us: the file it names does not exist.
        "--configFilePath=/nonexistent/azure.json".into(),
        format!("-config-file-path={}", azure_json.display()),
        "-metrics-backend=Prometheus".into(),
        "-metrics-addr=127.0.0.1:0".into(),
        "-healthz-port=0".into(),
        "-managed-hsm=False".into(),
        "-log-format-json=1".into(),
    ];
    let log = dir.path().join("kms.log");
    let mut child = spawn(&args, &mock_env(&mock), &log);
    wait_for_child_socket(&socket, &mut child).await;
    wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
    let health = logged_addr(&log, "health").await;
    let health: std::net::SocketAddr = health.parse().unwrap();
    assert_eq!(http_get(health.ip(), health.port(), "/healthz").await, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    let warning = text
        .lines()
        .find(|l| l.contains("configFilePath"))
        .unwrap_or_else(|| panic!("no warning about --configFilePath in:\n{text}"));
    // JSON lines (`-log-format-json=1`), naming the file really read.
    let line: serde_json::Value = serde_json::from_str(warning).unwrap();
    assert_eq!(line["level"], "WARN", "{warning}");
    assert!(
        warning.contains(&azure_json.display().to_string()),
        "{warning}"
    );
}

#[tokio::test]
async fn flags_of_both_programs_without_a_subcommand_are_refused_at_once() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args(["--keyvault-name=kv1", "--endpoint=unix:///tmp/x.sock"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("put `kms` or `csi` first"), "{err}");
}

/// The provider as a process started with a Go manifest's arguments (`args` given its
/// socket), against mock-vault serving `*.vault.azure.net`; its metrics default (:8898)
/// moved to a port the kernel picks, on loopback.
struct GoProvider {
    mock: MockVault,
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    child: tokio::process::Child,
}

async fn start_go_provider(args: fn(&Path) -> Vec<String>) -> GoProvider {
    let mock = public_cloud_mock(CSI_SP_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let mut env = mock_env(&mock);
    env.push(("AKV_BRIDGE_PROMETHEUS_PORT", "0".into()));
    env.push(("AKV_BRIDGE_METRICS_BIND_ADDRESS", "127.0.0.1".into()));
    let log = dir.path().join("csi.log");
    let mut child = spawn(&args(&socket), &env, &log);
    wait_for_child_socket(&socket, &mut child).await;
    GoProvider {
        mock,
        dir,
        socket,
        log,
        child,
    }
}

/// provider-azure v1.8.2 `deployment/provider-azure-installer.yaml`: the DaemonSet's
/// `args`, in order.
fn go_daemonset_args(socket: &Path) -> Vec<String> {
    vec![
        format!("--endpoint=unix://{}", socket.display()),
        "--construct-pem-chain=true".into(),
        "--healthz-port=8989".into(),
        "--healthz-path=/healthz".into(),
        "--healthz-timeout=5s".into(),
    ]
}

#[tokio::test]
async fn the_go_daemonset_runs_unchanged_and_kubelet_and_the_driver_are_served() {
    let GoProvider {
        mock: _mock,
        dir: _dir,
        socket,
        log,
        mut child,
    } = start_go_provider(go_daemonset_args).await;

    // The DaemonSet is not hostNetwork: kubelet probes the pod IP, any address of the pod.
    let node = node_address();
    eventually(
        Duration::from_secs(20),
        "liveness at the pod address",
        async || http_get(node, 8989, "/healthz").await == 200,
    )
    .await;

    // The driver's first call.
    let mut client =
        csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel(&socket).await);
    let version = client
        .version(csi::VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "akv-bridge");
    assert!(child.try_wait().unwrap().is_none(), "the provider exited");

    // The Go provider's metric, beside ours.
    let metrics_addr = logged_addr(&log, "metrics").await;
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = r#"grpc_request_count{grpc_code="OK",grpc_message="",grpc_method="/v1alpha1.CSIDriverProvider/Version",os_type="linux",provider="azure",service_name="csi-secrets-store-provider-azure"}"#;
    assert!(metrics.contains(want), "no {want} in:\n{metrics}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{text}"
    );
}

/// provider-azure v1.8.2's Helm chart (`templates/provider-azure-installer.yaml`) with every
/// optional value set: `logFormatJSON`, `logVerbosity`, `constructPEMChain`,
/// `linux.customUserAgent`, `writeCertAndKeyInSeparateFiles`, and the health values (port 0
/// here, read back from the log, where the chart's default is 8989).
fn go_chart_args(socket: &Path) -> Vec<String> {
    vec![
        format!("--endpoint=unix://{}", socket.display()),
        "--log-format-json=true".into(),
        "-v=2".into(),
        "--construct-pem-chain=true".into(),
        "--custom-user-agent=contoso-provider/1.0".into(),
        "--healthz-port=0".into(),
        "--healthz-path=/healthz".into(),
        "--healthz-timeout=5s".into(),
        "--write-cert-and-key-in-separate-files=true".into(),
    ]
}

#[tokio::test]
async fn the_go_helm_chart_with_every_value_set_runs_and_mounts() {
    let GoProvider {
        mock,
        dir: _dir,
        socket,
        log,
        mut child,
    } = start_go_provider(go_chart_args).await;
    let health: std::net::SocketAddr = logged_addr(&log, "health").await.parse().unwrap();
    eventually(Duration::from_secs(20), "liveness", async || {
        http_get(node_address(), health.port(), "/healthz").await == 200
    })
    .await;

    // A Mount as the driver sends it for a SecretProviderClass written for the Go provider.
    let mut client =
        csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel(&socket).await);
    let objects = "array:\n  - |\n    objectName: one\n    objectType: secret\n";
    let mounted = client
        .mount(csi::MountRequest {
            attributes: serde_json::json!({
                "keyvaultName": "kv1",
                "tenantId": mock.info().tenant_id,
                "objects": objects,
                "csi.storage.k8s.io/pod.name": "app-0",
                "csi.storage.k8s.io/pod.namespace": "default",
            })
            .to_string(),
            secrets: serde_json::json!({
                "clientid": "33333333-0000-0000-0000-0000000005b1",
                "clientsecret": "sp-secret-value",
            })
            .to_string(),
            target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
            permission: "420".into(),
            current_object_version: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let files: Vec<_> = mounted.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["one"]);
    assert_eq!(mounted.files[0].contents, b"value-one");

    // JSON lines, as `logFormatJSON: true` asks.
    let text = std::fs::read_to_string(&log).unwrap();
    let audit = text
        .lines()
        .find(|l| l.contains("\"rpc\":\"Mount\""))
        .unwrap_or_else(|| panic!("no Mount audit line in:\n{text}"));
    serde_json::from_str::<serde_json::Value>(audit).unwrap();
    // The chart's user agent reached Key Vault, after ours.
    let agents: Vec<String> = mock
        .request_log(100)
        .into_iter()
        .filter(|r| r.vault.is_some())
        .filter_map(|r| r.user_agent)
        .collect();
    assert!(!agents.is_empty(), "no Key Vault request logged");
    for agent in &agents {
        assert!(
            agent.ends_with(" contoso-provider/1.0") && agent.contains(" akv-bridge/"),
            "{agent}"
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the provider exited");
}

/// Azure Stack Hub, as the Go plugin reads it: azure.json says `cloud: AzureStackCloud` and
/// `AZURE_ENVIRONMENT_FILEPATH` names the installation's environment file, which gives
/// Entra's endpoint and the vaults' DNS suffix.
#[tokio::test]
async fn azure_stack_hub_is_read_from_the_environment_file() {
    const SUFFIX: &str = "vault.local.azurestack.external";
    let mock = mock_vault::start(Config {
        fixture: Fixture::parse(KMS_FIXTURE).unwrap(),
        vault_domain: SUFFIX.into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let azure_json = dir.path().join("azure.json");
    std::fs::write(
        &azure_json,
        serde_json::json!({
            "cloud": "AzureStackCloud",
            "tenantId": mock.info().tenant_id,
            "aadClientId": "00000000-0000-0000-0000-00000000c0de",
            "aadClientSecret": "kms-secret",
        })
        .to_string(),
    )
    .unwrap();
    let environment = dir.path().join("azurestackcloud.json");
    std::fs::write(
        &environment,
        serde_json::json!({
            "name": "AzureStackCloud",
            "managementPortalURL": "https://portal.local.azurestack.external/",
            "activeDirectoryEndpoint": mock.info().authority_host,
            "keyVaultDNSSuffix": SUFFIX,
            "resourceIdentifiers": {"keyVault": format!("https://{SUFFIX}")},
        })
        .to_string(),
    )
    .unwrap();
    let socket = dir.path().join("azurekms.socket");
    let version = latest_version(&mock);
    let info = mock.info();
    // No AZURE_AUTHORITY_HOST and no vault URL: both come from the environment file.
    let env = vec![
        ("AKV_BRIDGE_VAULT_CONNECT_ADDR", info.address.to_string()),
        (
            "AKV_BRIDGE_CA_BUNDLE",
            info.ca_pem_path.display().to_string(),
        ),
        (
            "AKV_BRIDGE_INSECURE_SKIP_CHALLENGE_RESOURCE_VERIFICATION",
            "true".into(),
        ),
        (
            "AZURE_ENVIRONMENT_FILEPATH",
            environment.display().to_string(),
        ),
        (
            "AKV_BRIDGE_CONFIG_FILE_PATH",
            azure_json.display().to_string(),
        ),
        ("AKV_BRIDGE_METRICS_ADDR", "127.0.0.1:0".into()),
        ("AKV_BRIDGE_HEALTHZ_PORT", "0".into()),
    ];
    let mut args = go_static_pod_args(&socket, &version);
    args.retain(|a| !a.starts_with("--healthz-port"));
    let log = dir.path().join("kms.log");
    let mut child = spawn(&args, &env, &log);
    wait_for_child_socket(&socket, &mut child).await;
    let status = wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
    assert_eq!(
        status.key_id,
        hex::encode(sha2::Sha256::digest(format!(
            "https://kv1.{SUFFIX}/keys/kek/{version}"
        )))
    );

    // Without the variable, start-up stops naming it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args([
            "--keyvault-name=kv1".to_owned(),
            "--key-name=kek".into(),
            format!("--config-file-path={}", azure_json.display()),
        ])
        .env_remove("AZURE_ENVIRONMENT_FILEPATH")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AZURE_ENVIRONMENT_FILEPATH"), "{err}");
}

/// The Go provider's other flags (cmd/main.go, v1.8.2), which its manifests leave at their
/// defaults: `--cloud-name` is checked and used; `--enable-pprof` and `--pprof-port` are
/// accepted, with a warning that no profile endpoint is served; identity binding's
/// `--token-proxy-url` and `--sni-name` are accepted and checked (their use:
/// `identity_binding.rs`).
#[tokio::test]
async fn the_go_providers_cloud_and_pprof_flags_are_accepted_without_a_subcommand() {
    let mock = public_cloud_mock(CSI_SP_FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let mut env = mock_env(&mock);
    env.push(("AKV_BRIDGE_PROMETHEUS_PORT", "0".into()));
    let pprof_port = free_port();
    let mut args = go_daemonset_args(&socket);
    args.retain(|a| !a.starts_with("--healthz-port"));
    args.extend([
        "--healthz-port=0".into(),
        "--cloud-name=AzurePublicCloud".into(),
        "--enable-pprof=true".into(),
        format!("--pprof-port={pprof_port}"),
        "--token-proxy-url=https://proxy.local".into(),
        "--sni-name=aproxy.ests.aks".into(),
    ]);
    let log = dir.path().join("csi.log");
    let mut child = spawn(&args, &env, &log);
    wait_for_child_socket(&socket, &mut child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("--enable-pprof") && text.contains("no profile endpoint is served"),
        "{text}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", pprof_port))
            .await
            .is_err(),
        "nothing listens on the pprof port"
    );
    child.kill().await.unwrap();

    for (flag, named) in [
        ("--cloud-name=AzureMarsCloud", "--cloud-name"),
        ("--token-proxy-url=http://proxy.local", "--token-proxy-url"),
        ("--sni-name=proxy local", "--sni-name"),
    ] {
        let mut args = go_daemonset_args(&dir.path().join("refused.sock"));
        args.push(flag.into());
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{flag} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{flag}: {err}");
    }
}
