//! Azure/kubernetes-kms's proxy mode, as its static pod would run it: every Entra and Key
//! Vault request goes in plain HTTP to a proxy on the node, routed by
//! `x-azure-proxy-target`. The proxy here forwards to mock-vault over TLS and records what
//! it was asked; the plugin is given no way to reach the vault itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use mock_vault::{Config, Fixture, MockVault};

use crate::common::kms::{decrypt_request, foreign};
use crate::common::*;

/// What the proxy saw: the target header and the path.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

struct TestProxy {
    addr: SocketAddr,
    seen: Seen,
}

/// A proxy as the Go plugin expects one: `KeyVault` requests carry the vault host as the
/// first path segment, `AzureActiveDirectory` requests the authority's path.
async fn start_proxy(mock: &MockVault) -> TestProxy {
    let info = mock.info();
    let authority = info.authority_host.trim_end_matches('/').to_owned();
    let mut upstream = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(mock.ca_pem().as_bytes()).unwrap());
    for host in info.resolve.keys() {
        upstream = upstream.resolve(host, info.address);
    }
    let upstream = upstream.build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (upstream, authority, log) = (upstream.clone(), authority.clone(), log.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (upstream, authority, log) =
                        (upstream.clone(), authority.clone(), log.clone());
                    async move { Ok::<_, Infallible>(forward(req, &upstream, &authority, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestProxy { addr, seen }
}

async fn forward(
    req: hyper::Request<Incoming>,
    upstream: &reqwest::Client,
    authority: &str,
    log: &Seen,
) -> hyper::Response<Full<Bytes>> {
    let target = req
        .headers()
        .get("x-azure-proxy-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    log.lock()
        .unwrap()
        .push((target.clone(), req.uri().path().to_owned()));
    let url = match target.as_str() {
        "KeyVault" => format!("https:/{path_and_query}"),
        "AzureActiveDirectory" => format!("{authority}{path_and_query}"),
        _ => {
            return hyper::Response::builder()
                .status(400)
                .body(Full::new(Bytes::from_static(b"no x-azure-proxy-target")))
                .unwrap();
        }
    };
    let method = req.method().clone();
    let mut headers = req.headers().clone();
    headers.remove(http::header::HOST);
    headers.remove("x-azure-proxy-target");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let answer = upstream
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = hyper::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::TRANSFER_ENCODING && name != http::header::CONTENT_LENGTH {
            response = response.header(name, value);
        }
    }
    let body = answer.bytes().await.unwrap();
    response.body(Full::new(body)).unwrap()
}

#[tokio::test]
async fn the_go_proxy_mode_sends_everything_through_the_proxy_with_its_target_header() {
    let mock = mock_vault::start(Config {
        fixture: Fixture::parse(KMS_FIXTURE).unwrap(),
        vault_domain: "vault.azure.net".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let proxy = start_proxy(&mock).await;
    let dir = tempfile::tempdir().unwrap();
    let azure_json = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let socket = dir.path().join("azurekms.socket");
    let log = dir.path().join("kms.log");
    // The Go static pod's flags plus its proxy flags; no CA bundle and no address for the
    // vault: the plugin can only reach it through the proxy.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args([
            format!("--listen-addr=unix://{}", socket.display()),
            "--keyvault-name=kv1".into(),
            "--key-name=kek".into(),
            format!("--config-file-path={}", azure_json.display()),
            "--proxy-mode".into(),
            "--proxy-address=127.0.0.1".into(),
            format!("--proxy-port={}", proxy.addr.port()),
            "--healthz-port=0".into(),
            "--metrics-addr=127.0.0.1:0".into(),
        ])
        .env("AZURE_AUTHORITY_HOST", &mock.info().authority_host)
        .env(
            "AKV_BRIDGE_INSECURE_SKIP_CHALLENGE_RESOURCE_VERIFICATION",
            "true",
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&socket, &mut child).await;
    let mut client = v2(&socket).await;
    let status = wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;

    // A seed another instance stored: its Decrypt needs Key Vault, through the proxy.
    let seed = [9u8; 32];
    let mut stored = foreign(&mock, &seed);
    stored.key_id = status.key_id.clone();
    let plain = client
        .decrypt(decrypt_request(&stored))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext, seed);

    let seen = proxy.seen.lock().unwrap().clone();
    let tenant = &mock.info().tenant_id;
    assert!(
        seen.iter()
            .any(|(target, path)| target == "AzureActiveDirectory"
                && path.starts_with(&format!("/{tenant}/oauth2/"))),
        "no token request through the proxy: {seen:?}"
    );
    for op in ["/keys/kek/", "/decrypt"] {
        assert!(
            seen.iter().any(|(target, path)| target == "KeyVault"
                && path.starts_with("/kv1.vault.azure.net/keys/kek")
                && path.contains(op)),
            "no Key Vault {op} through the proxy: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|(target, _)| !target.is_empty()),
        "a request without the target header: {seen:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("proxy mode"), "{text}");
}

#[tokio::test]
async fn proxy_mode_without_an_address_stops_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let azure = dir.path().join("azure.json");
    std::fs::write(
        &azure,
        r#"{"tenantId": "t", "aadClientId": "c", "aadClientSecret": "s"}"#,
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .args([
            "--keyvault-name=kv1".to_owned(),
            "--key-name=kek".into(),
            format!("--config-file-path={}", azure.display()),
            "--proxy-mode=true".into(),
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--proxy-address"), "{err}");
}
