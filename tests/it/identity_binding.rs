//! AKS identity binding (`useAzureTokenProxy: "true"`), with the provider as a process and
//! mock-vault's token proxy as the cluster's: the token request goes where the Go provider
//! (v1.8, azidentity's token-proxy transport) sends it, with the same TLS server name,
//! `Host` header and trust, and fails clearly when the node is not set up for it.

use std::path::Path;
use std::time::Duration;

use akv_bridge::proto::csi_v1alpha1 as csi;
use mock_vault::{Config, Fixture, MockVault, TokenProxyConfig};
use serde_json::json;
use tonic::Code;

use crate::common::*;

const BOUND: &str = "77777777-0000-0000-0000-0000000000b1";

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    secrets:
      - {name: db-password, value: "bound-secret"}
identities:
  - name: bound
    client_id: 77777777-0000-0000-0000-0000000000b1
    managed: user
    identity_bindings: ["system:serviceaccount:apps:web"]
    permissions: {kv1: {secrets: [get]}}
  - name: admin
    client_id: 00000000-0000-0000-0000-0000000000ad
    client_secret: admin-secret
"#;

async fn mock_with_proxy() -> MockVault {
    mock_vault::start(Config {
        fixture: Fixture::parse(FIXTURE).unwrap(),
        token_proxy: Some(TokenProxyConfig::default()),
        ..Config::default()
    })
    .await
    .unwrap()
}

struct Running {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    child: tokio::process::Child,
}

/// `akv-bridge csi` with the Go provider's identity-binding flags (`extra`), the pod's
/// environment (`KUBERNETES_SERVICE_HOST`/`PORT` at the mock's API server) and the cluster
/// CA at `ca_file`; Key Vault and Entra are the mock's.
async fn start(mock: &MockVault, ca_file: &Path, extra: &[String]) -> Running {
    let info = mock.info();
    let proxy = info.token_proxy.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let log = dir.path().join("csi.log");
    let mut args = vec!["csi".to_owned()];
    args.extend(csi_flags(mock, &socket));
    args.extend([
        format!("--token-proxy-url={}", proxy.url),
        format!("--token-proxy-ca-file={}", ca_file.display()),
        "-v=2".to_owned(),
    ]);
    args.extend(extra.iter().cloned());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args(&args)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", proxy.address.port().to_string())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&socket, &mut child).await;
    Running {
        _dir: dir,
        socket,
        log,
        child,
    }
}

/// A Mount as the driver sends it when the CSIDriver requests tokens for both audiences
/// (the Go chart's default): `tokens` maps audience to token.
async fn mount(
    running: &Running,
    mock: &MockVault,
    binding: bool,
    tokens: &[(&str, String)],
) -> Result<csi::MountResponse, tonic::Status> {
    let tokens: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .map(|(aud, token)| {
            (
                (*aud).to_owned(),
                json!({"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}),
            )
        })
        .collect();
    let attributes = json!({
        "keyvaultName": "kv1",
        "tenantID": mock.info().tenant_id,
        "clientID": BOUND,
        "useAzureTokenProxy": if binding { "true" } else { "false" },
        "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "apps",
        "csi.storage.k8s.io/serviceAccount.name": "web",
        "csi.storage.k8s.io/serviceAccount.tokens": serde_json::Value::Object(tokens).to_string(),
    });
    let mut client = csi::csi_driver_provider_client::CsiDriverProviderClient::new(
        channel(&running.socket).await,
    );
    client
        .mount(csi::MountRequest {
            attributes: attributes.to_string(),
            secrets: "{}".into(),
            target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
            permission: "420".into(),
            current_object_version: vec![],
        })
        .await
        .map(tonic::Response::into_inner)
}

const BINDING: &str = "api://AKSIdentityBinding";
const WORKLOAD: &str = "api://AzureADTokenExchange";

fn token(mock: &MockVault, sa: &str, audience: &str) -> String {
    mock.sa_token_for(
        &format!("system:serviceaccount:apps:{sa}"),
        &[audience],
        Duration::from_secs(3600),
    )
    .unwrap()
}

#[tokio::test]
async fn identity_binding_mounts_through_the_token_proxy_as_the_go_provider_sends_it() {
    let mock = mock_with_proxy().await;
    let proxy = mock.info().token_proxy.clone().unwrap();
    let mut running = start(&mock, &proxy.ca_pem_path, &[]).await;

    let both = [
        (BINDING, token(&mock, "web", BINDING)),
        (WORKLOAD, token(&mock, "web", WORKLOAD)),
    ];
    let mounted = mount(&running, &mock, true, &both).await.unwrap();
    assert_eq!(mounted.files.len(), 1);
    assert_eq!(mounted.files[0].path, "db-password");
    assert_eq!(mounted.files[0].contents, b"bound-secret");

    let log = mock.request_log(200);
    // The server name was computed from the API server's certificate, over TLS verified
    // for the API server's in-cluster name.
    let apiserver: Vec<_> = log.iter().filter(|r| r.operation == "apiserver").collect();
    assert_eq!(apiserver.len(), 1, "{apiserver:?}");
    assert_eq!(
        apiserver[0].server_name.as_deref(),
        Some("kubernetes.default.svc.cluster.local")
    );
    // The token request: at the proxy, under the identity-binding server name, Entra's path
    // and Host, as the pod's bound service account.
    let exchanges: Vec<_> = log
        .iter()
        .filter(|r| r.operation == "token_proxy.token")
        .collect();
    // Two, as for workload identity: the pod's token proven once (admission), and the
    // identity's credential getting its access token.
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    let authority = mock.info().authority_host.trim_start_matches("https://");
    for exchange in exchanges {
        assert_eq!(exchange.status, 200);
        assert_eq!(
            exchange.server_name.as_deref(),
            Some(proxy.sni_name.as_str())
        );
        assert_eq!(
            exchange.path,
            format!("/{}/oauth2/v2.0/token", mock.info().tenant_id)
        );
        assert_eq!(exchange.host.as_deref(), Some(authority));
        assert_eq!(exchange.identity.as_deref(), Some("bound"));
    }
    // Entra itself was never asked: the workload identity token was not used.
    assert!(!log.iter().any(|r| r.operation == "entra.token"), "{log:?}");
    // Key Vault was read as the bound identity.
    assert!(
        log.iter()
            .any(|r| r.vault.as_deref() == Some("kv1") && r.identity.as_deref() == Some("bound")),
        "{log:?}"
    );

    // A second pod of the same service account: its own token is proven at the proxy once,
    // the access token is reused, and the server name is not computed again.
    let again = [(BINDING, token(&mock, "web", BINDING))];
    mount(&running, &mock, true, &again).await.unwrap();
    let log = mock.request_log(200);
    assert_eq!(log.iter().filter(|r| r.operation == "apiserver").count(), 1);
    assert_eq!(
        log.iter()
            .filter(|r| r.operation == "token_proxy.token")
            .count(),
        3
    );

    // A service account the identity is not bound to: refused by the proxy, named as such.
    let other = [(BINDING, token(&mock, "other", BINDING))];
    let err = mount(&running, &mock, true, &other).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains("identity binding token proxy did not accept"),
        "{}",
        err.message()
    );

    // The driver sent no token for the identity-binding audience: the CSIDriver lacks it.
    let only_workload = [(WORKLOAD, token(&mock, "web", WORKLOAD))];
    let err = mount(&running, &mock, true, &only_workload)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(BINDING), "{}", err.message());

    // The proxy is down: unavailable, so kubelet retries; nothing cached is served to a
    // token never proven.
    mock.add_fault(fault(
        mock_vault::FaultKind::Outage,
        Some("token_proxy.token"),
    ))
    .unwrap();
    let fresh = [(BINDING, token(&mock, "web", BINDING))];
    let err = mount(&running, &mock, true, &fresh).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("identity binding token proxy is unavailable"),
        "{}",
        err.message()
    );
    mock.clear_faults();

    // Same clientID and service account without useAzureTokenProxy: another identity,
    // exchanged at Entra (where this managed identity has no federated credential), never
    // served from the identity-binding one.
    let entra_before = mock
        .request_log(500)
        .iter()
        .filter(|r| r.operation == "entra.token")
        .count();
    let workload = [(WORKLOAD, token(&mock, "web", WORKLOAD))];
    let err = mount(&running, &mock, false, &workload).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("Microsoft Entra did not accept"),
        "{}",
        err.message()
    );
    let entra_after = mock
        .request_log(500)
        .iter()
        .filter(|r| r.operation == "entra.token")
        .count();
    assert_eq!(entra_after, entra_before + 1);

    let text = std::fs::read_to_string(&running.log).unwrap();
    for (_, t) in both.iter().chain(&again).chain(&other).chain(&fresh) {
        assert!(!text.contains(t.as_str()), "a token in the log");
    }
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the provider exited"
    );
}

#[tokio::test]
async fn a_wrong_cluster_ca_fails_clearly_and_a_fixed_one_is_picked_up_without_a_restart() {
    let mock = mock_with_proxy().await;
    let proxy = mock.info().token_proxy.clone().unwrap();
    // The CA file starts with the wrong CA (the vaults', not the cluster's).
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.crt");
    std::fs::copy(&mock.info().ca_pem_path, &ca_file).unwrap();
    let running = start(&mock, &ca_file, &[]).await;
    let tokens = [(BINDING, token(&mock, "web", BINDING))];

    // Computing the server name fails on the API server's certificate.
    let err = mount(&running, &mock, true, &tokens).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let message = err.message();
    assert!(
        message.contains("API server's certificate") && message.contains("--sni-name"),
        "{message}"
    );
    assert!(message.contains("unknown issuer"), "{message}");

    // The cluster CA is rotated in (as kubelet updates the projected ca.crt). A failure is
    // answered again for 5 s (so mounts queued behind it do not each wait for their own
    // attempt); after that a mount computes the name and exchanges the token, without a
    // restart.
    std::fs::copy(&proxy.ca_pem_path, &ca_file).unwrap();
    let started = std::time::Instant::now();
    let again = mount(&running, &mock, true, &tokens).await.unwrap_err();
    assert_eq!(again.message(), err.message());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The provider's debug log (`-v=2`) has one line per attempt.
    let attempts = || {
        std::fs::read_to_string(&running.log)
            .unwrap()
            .matches("reading the API server's certificate")
            .count()
    };
    assert_eq!(attempts(), 1, "the failure was not reused");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mounted = mount(&running, &mock, true, &tokens).await.unwrap();
    assert_eq!(mounted.files[0].contents, b"bound-secret");
    assert_eq!(attempts(), 2);
}

#[tokio::test]
async fn the_token_proxy_is_verified_with_the_current_cluster_ca() {
    let mock = mock_with_proxy().await;
    let proxy = mock.info().token_proxy.clone().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.crt");
    std::fs::copy(&mock.info().ca_pem_path, &ca_file).unwrap();
    // The server name given: only the token requests use the CA.
    let running = start(&mock, &ca_file, &[format!("--sni-name={}", proxy.sni_name)]).await;
    let tokens = [(BINDING, token(&mock, "web", BINDING))];
    let err = mount(&running, &mock, true, &tokens).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let message = err.message();
    assert!(
        message.contains(&proxy.sni_name)
            && message.contains("could not be verified")
            && message.contains("unknown issuer")
            && message.contains(&ca_file.display().to_string()),
        "{message}"
    );
    // Rotated in place, as kubelet updates a projected ConfigMap: picked up by the next
    // token request.
    std::fs::copy(&proxy.ca_pem_path, &ca_file).unwrap();
    let mounted = mount(&running, &mock, true, &tokens).await.unwrap();
    assert_eq!(mounted.files[0].contents, b"bound-secret");
}

#[tokio::test]
async fn a_wrong_server_name_is_refused_by_tls_and_named() {
    let mock = mock_with_proxy().await;
    let proxy = mock.info().token_proxy.clone().unwrap();
    let running = start(
        &mock,
        &proxy.ca_pem_path,
        &["--sni-name=awrong.ests.aks".to_owned()],
    )
    .await;
    let tokens = [(BINDING, token(&mock, "web", BINDING))];
    let err = mount(&running, &mock, true, &tokens).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let message = err.message();
    assert!(
        message.contains("awrong.ests.aks")
            && message.contains("could not be verified")
            && message.contains("--sni-name"),
        "{message}"
    );
    // Given the name, the API server was not asked for it.
    assert!(
        !mock
            .request_log(100)
            .iter()
            .any(|r| r.operation == "apiserver")
    );
}

#[tokio::test]
async fn token_proxy_flags_are_checked_at_start_up() {
    for (flag, want) in [
        ("--token-proxy-url=http://proxy", "must be an https URL"),
        (
            "--token-proxy-url=https://proxy/?a=b",
            "must not contain a query",
        ),
        ("--sni-name=not a name", "is not a DNS name"),
        ("--token-proxy-ca-file=/nonexistent/ca.crt", "no such file"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
            .args(["csi", "--endpoint=unix:///nonexistent/dir/azure.sock", flag])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{flag}: {stderr}");
    }
}
