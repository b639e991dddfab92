//! Local clients that hold connections or memory, against both servers run as processes
//! over their real Unix sockets: idle, leaked, half-open and zero-byte connection floods;
//! partial messages parked on many streams of many connections, with the process's RSS
//! sampled; a socket that can no longer take new clients. See `akv_bridge::server` for
//! the policy these tests hold the servers to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::kms::{PluginProcess, eventually, free_port};
use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Channel;

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Kms,
    Csi,
}

/// A server process and what a test needs of it.
struct Proc {
    child: tokio::process::Child,
    socket: PathBuf,
    healthz_port: u16,
    metrics_port: u16,
    kind: Kind,
    // Kept alive for the process's life.
    _env: Box<dyn std::any::Any>,
}

impl Proc {
    async fn start(kind: Kind) -> Self {
        match kind {
            Kind::Kms => {
                let env = crate::common::kms::env(&[]).await;
                let p = PluginProcess::start(&env, &["--healthz-timeout=2s"], "kms.log").await;
                let socket = env.socket.clone();
                // Status answers at once; wait until it is ok so every call is served.
                wait_status(&socket, |s| s.healthz == "ok", "Status ok").await;
                Self {
                    child: p.child,
                    socket,
                    healthz_port: p.healthz_port,
                    metrics_port: p.metrics_port,
                    kind,
                    _env: Box::new(env),
                }
            }
            Kind::Csi => Self::start_csi(CSI_SP_FIXTURE).await,
        }
    }

    /// The mock of a CSI process.
    fn mock(&self) -> Option<&mock_vault::MockVault> {
        self._env
            .downcast_ref::<(mock_vault::MockVault, tempfile::TempDir)>()
            .map(|(m, _)| m)
    }

    async fn start_csi(fixture: &str) -> Self {
        let kind = Kind::Csi;
        {
            {
                let mock = mock(fixture).await;
                let dir = tempfile::tempdir().unwrap();
                let socket = dir.path().join("azure.sock");
                let healthz_port = free_port();
                let metrics_port = free_port();
                let flags: Vec<String> = csi_flags(&mock, &socket)
                    .into_iter()
                    .filter(|f| {
                        !f.starts_with("--healthz-port") && !f.starts_with("--prometheus-port")
                    })
                    .chain([
                        format!("--healthz-port={healthz_port}"),
                        format!("--prometheus-port={metrics_port}"),
                        "--healthz-timeout=2s".to_owned(),
                    ])
                    .collect();
                let log = std::fs::File::create(dir.path().join("csi.log")).unwrap();
                let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
                    .arg("csi")
                    .args(&flags)
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("provider starts");
                wait_for_child_socket(&socket, &mut child).await;
                Self {
                    child,
                    socket,
                    healthz_port,
                    metrics_port,
                    kind,
                    _env: Box::new((mock, dir)),
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident memory of the process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    async fn healthz(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.healthz_port))
            .await
            .expect("health endpoint answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// One sample of a metric (`name{labels}` as printed), 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        let prefix = match self.kind {
            Kind::Kms => "akv_bridge_kms_",
            Kind::Csi => "akv_bridge_csi_",
        };
        let wanted = format!("{prefix}{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The server's cheapest call, as its real client makes it.
    async fn call(&self, channel: Channel) -> Result<(), tonic::Status> {
        match self.kind {
            Kind::Kms => {
                let mut c =
                    v2::key_management_service_client::KeyManagementServiceClient::new(channel);
                c.status(v2::StatusRequest {}).await.map(|_| ())
            }
            Kind::Csi => {
                let mut c = csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel);
                c.version(csi::VersionRequest {
                    version: "v1alpha1".into(),
                })
                .await
                .map(|_| ())
            }
        }
    }

    fn max_connections(&self) -> usize {
        match self.kind {
            Kind::Kms => akv_bridge::kms::LIMITS.max_connections,
            Kind::Csi => akv_bridge::csi::LIMITS.max_connections,
        }
    }
}

/// Connects, retrying while the listen backlog is full.
async fn dial(socket: &Path) -> Option<tokio::net::UnixStream> {
    for _ in 0..50 {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => return Some(s),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

/// A new client's first call: connect and call, answered within a generous bound.
async fn new_client_call(p: &Proc) -> Duration {
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let channel = channel(&p.socket).await;
        p.call(channel).await
    })
    .await
    .expect("a new client is answered, not left waiting");
    answered.expect("the call succeeds");
    started.elapsed()
}

async fn a_new_client_is_answered_promptly_whatever_others_hold(kind: Kind) {
    let p = Proc::start(kind).await;
    let max = p.max_connections();

    // Leaked channels: each made one call and is kept open, idle, answering pings. Twice
    // as many as the server serves at once.
    let mut leaked = Vec::new();
    for _ in 0..2 * max {
        let made = tokio::time::timeout(Duration::from_secs(5), async {
            let ch = channel(&p.socket).await;
            p.call(ch.clone()).await.map(|()| ch)
        })
        .await;
        if let Ok(Ok(ch)) = made {
            leaked.push(ch);
        }
    }
    // Half-open connections (half a preface) and zero-byte ones.
    let mut held = Vec::new();
    for i in 0..4000 {
        let Some(mut s) = dial(&p.socket).await else {
            continue;
        };
        if i % 8 == 0 {
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n").await;
        }
        held.push(s);
    }
    assert!(held.len() >= 3000, "only {} connections made", held.len());

    // A new client is answered at once: well inside the 10 s a silent connection gets,
    // which is what it used to wait for at best.
    let took = new_client_call(&p).await;
    println!(
        "{kind:?}: {} leaked channels, {} silent connections held; a new client's first call took {took:?}",
        leaked.len(),
        held.len()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The server holds no more than its cap, and says why it closed the others.
    let open = p.metric("connections").await;
    assert!(open <= max as f64, "{open} connections open");
    assert!(
        p.metric("connections_closed_total{reason=\"evicted_unused\"}")
            .await
            >= 3000.0
    );
    assert!(
        p.metric("connections_closed_total{reason=\"evicted_idle\"}")
            .await
            >= 1.0
    );
    assert_eq!(p.healthz("/healthz").await.0, 200);

    // A client whose idle connection was closed to make room was sent GOAWAY: its next
    // call goes over a new connection and succeeds, as gRPC clients do.
    let first = leaked.first().expect("a leaked channel").clone();
    tokio::time::timeout(Duration::from_secs(10), p.call(first))
        .await
        .expect("answered")
        .expect("a client sent GOAWAY reconnects and is served");
}

#[tokio::test]
async fn kms_a_new_client_is_answered_promptly_whatever_other_local_clients_hold() {
    a_new_client_is_answered_promptly_whatever_others_hold(Kind::Kms).await;
}

#[tokio::test]
async fn csi_a_new_client_is_answered_promptly_whatever_other_local_clients_hold() {
    a_new_client_is_answered_promptly_whatever_others_hold(Kind::Csi).await;
}

async fn liveness_follows_the_socket(kind: Kind) {
    let p = Proc::start(kind).await;
    eventually(Duration::from_secs(30), "live", async || {
        p.healthz("/healthz").await.0 == 200
    })
    .await;
    // The socket file goes (a cleaned host directory, another process binding the path):
    // no new client can reach the server, however healthy the process looks otherwise.
    std::fs::remove_file(&p.socket).unwrap();
    eventually(Duration::from_secs(40), "liveness fails", async || {
        p.healthz("/healthz").await.0 == 503
    })
    .await;
    let (_, why) = p.healthz("/healthz").await;
    assert!(why.contains("new client"), "{why}");
    assert_eq!(p.healthz("/readyz").await.0, 503);
}

#[tokio::test]
async fn kms_liveness_fails_when_the_socket_cannot_take_a_new_client() {
    liveness_follows_the_socket(Kind::Kms).await;
}

#[tokio::test]
async fn csi_liveness_fails_when_the_socket_cannot_take_a_new_client() {
    liveness_follows_the_socket(Kind::Csi).await;
}

/// Opens `connections` HTTP/2 connections with `window` as their stream window, and on
/// each starts `calls` calls to `path` with the bodies `body` makes; every answer is held,
/// unread. Returns what keeps them open.
async fn raw_calls<B>(
    socket: &Path,
    path: &'static str,
    connections: usize,
    calls: usize,
    window: u32,
    body: impl Fn() -> B,
) -> Vec<tokio::task::JoinHandle<()>>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let Some(stream) = dial(socket).await else {
            continue;
        };
        let Ok((sender, conn)) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(window)
                .handshake::<_, B>(hyper_util::rt::TokioIo::new(stream))
                .await
        else {
            continue;
        };
        tasks.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in 0..calls {
            let mut sender = sender.clone();
            let body = body();
            tasks.push(tokio::spawn(async move {
                if sender.ready().await.is_err() {
                    return;
                }
                let request = http::Request::post(format!("http://localhost{path}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body)
                    .unwrap();
                if let Ok(response) = sender.send_request(request).await {
                    std::future::pending::<()>().await;
                    drop(response);
                }
            }));
        }
    }
    tasks
}

/// Calls to `path` on `streams` streams of each of `connections` connections, each
/// announcing a `message`-byte request and sending all but its last byte, as fast as
/// flow control allows, then nothing more.
async fn park_partial_messages(
    socket: &Path,
    path: &'static str,
    connections: usize,
    streams: usize,
    message: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    raw_calls(socket, path, connections, streams, 1 << 20, || {
        StreamBody::new(PartialMessage::new(message))
    })
    .await
}

/// A gRPC message prefix announcing `len` bytes, then `len - 1` bytes in 16 KiB chunks,
/// then nothing, forever.
struct PartialMessage {
    left: usize,
    prefix: Option<usize>,
}

impl PartialMessage {
    fn new(len: usize) -> Self {
        Self {
            left: len - 1,
            prefix: Some(len),
        }
    }
}

impl futures::Stream for PartialMessage {
    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(len) = self.prefix.take() {
            let mut p = vec![0u8];
            p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            return std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(p)))));
        }
        if self.left == 0 {
            return std::task::Poll::Pending;
        }
        let n = self.left.min(16 * 1024);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0x41u8; n])))))
    }
}

async fn partial_messages_stay_within_the_memory_limit(
    kind: Kind,
    connections: usize,
    streams: usize,
) {
    let p = Proc::start(kind).await;
    let (path, limits) = match kind {
        Kind::Kms => ("/v2.KeyManagementService/Decrypt", akv_bridge::kms::LIMITS),
        Kind::Csi => ("/v1alpha1.CSIDriverProvider/Mount", akv_bridge::csi::LIMITS),
    };
    // The memory limit of the manifests in deploy/ (KMS and CSI containers alike).
    let manifest_limit_kib = 256 * 1024;
    // Warm up, then measure the baseline.
    new_client_call(&p).await;
    let baseline = p.rss_kib();
    let tasks =
        park_partial_messages(&p.socket, path, connections, streams, limits.max_message).await;
    // Sample while the messages are parked (they are failed after the message timeout).
    let mut peak = baseline;
    let sampling = Instant::now();
    let mut answered_during = None;
    while sampling.elapsed() < limits.message_timeout - Duration::from_secs(1) {
        peak = peak.max(p.rss_kib());
        if answered_during.is_none() && sampling.elapsed() > Duration::from_secs(2) {
            // A small call is not held back by the parked bytes.
            answered_during = Some(new_client_call(&p).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bound_kib = (limits.request_memory_bound() / 1024) as u64;
    println!(
        "{kind:?}: {connections} connections x {streams} streams of partial {} KiB messages: \
         RSS {baseline} KiB before, peak {peak} KiB (+{} KiB; bound on request data {bound_kib} KiB); \
         a new client's call during the flood took {:?}",
        limits.max_message / 1024,
        peak - baseline,
        answered_during
    );
    assert!(
        peak < manifest_limit_kib,
        "peak RSS {peak} KiB is over the manifests' 256 MiB limit"
    );
    // Allocator slack on top of the bound: 32 MiB.
    assert!(
        peak - baseline < bound_kib + 32 * 1024,
        "grew by {} KiB, bound {bound_kib} KiB",
        peak - baseline
    );
    assert!(answered_during.is_some());
    // The parked calls end: at the message timeout, or sooner when their connection is
    // closed to make room in the budget; what they held is given back.
    eventually(Duration::from_secs(30), "parked calls ended", async || {
        p.metric("calls_refused_total{reason=\"message_timeout\"}")
            .await
            + p.metric("connections_closed_total{reason=\"evicted_stalled\"}")
                .await
            >= 1.0
    })
    .await;
    for t in tasks {
        t.abort();
    }
    eventually(Duration::from_secs(30), "budget given back", async || {
        p.metric("in_flight_bytes{pool=\"bytes\"}").await == 0.0
    })
    .await;
    new_client_call(&p).await;
}

#[tokio::test]
async fn csi_partial_messages_on_many_streams_stay_within_the_memory_limit() {
    // 4 MiB announced per stream: 512 MiB if each were buffered in full.
    partial_messages_stay_within_the_memory_limit(Kind::Csi, 4, 32).await;
}

#[tokio::test]
async fn kms_partial_messages_on_many_streams_stay_within_the_memory_limit() {
    // 64 KiB announced per stream: 192 MiB if each were buffered in full.
    partial_messages_stay_within_the_memory_limit(Kind::Kms, 12, 256).await;
}

/// A gRPC request body: one message.
fn grpc_body(message: &impl prost::Message) -> http_body_util::Full<Bytes> {
    let encoded = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&encoded);
    http_body_util::Full::new(Bytes::from(body))
}

/// Opens `connections` HTTP/2 connections that never let the server send a byte of an
/// answer (a stream window of 0), and on each sends `calls` copies of a complete request.
async fn unread_answers(
    socket: &Path,
    path: &'static str,
    body: http_body_util::Full<Bytes>,
    connections: usize,
    calls: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    raw_calls(socket, path, connections, calls, 0, || body.clone()).await
}

async fn unread_answers_do_not_keep_new_clients_out(kind: Kind) {
    let p = Proc::start(kind).await;
    let (path, body) = match kind {
        Kind::Kms => (
            "/v2.KeyManagementService/Status",
            grpc_body(&v2::StatusRequest {}),
        ),
        Kind::Csi => (
            "/v1alpha1.CSIDriverProvider/Version",
            grpc_body(&csi::VersionRequest {
                version: "v1alpha1".into(),
            }),
        ),
    };
    let max = p.max_connections();
    let tasks = unread_answers(&p.socket, path, body, max, 1).await;
    // Every connection now holds an answer its client does not read.
    eventually(
        Duration::from_secs(10),
        "all connections hold answers",
        async || p.metric("connections").await >= max as f64,
    )
    .await;
    // Once an answer has waited 2 s, its connection makes room for a new client.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let took = new_client_call(&p).await;
    println!(
        "{kind:?}: {max} connections holding unread answers; a new client's call took {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        p.metric("connections_closed_total{reason=\"evicted_unread\"}")
            .await
            >= 1.0
    );
    // And every such connection is closed once its answer has waited 10 s.
    eventually(
        Duration::from_secs(30),
        "unread answers closed",
        async || {
            p.metric("connections_closed_total{reason=\"response_timeout\"}")
                .await
                >= (max - 1) as f64
        },
    )
    .await;
    assert_eq!(p.healthz("/healthz").await.0, 200);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn kms_clients_that_never_read_their_answers_do_not_keep_new_clients_out() {
    unread_answers_do_not_keep_new_clients_out(Kind::Kms).await;
}

#[tokio::test]
async fn csi_clients_that_never_read_their_answers_do_not_keep_new_clients_out() {
    unread_answers_do_not_keep_new_clients_out(Kind::Csi).await;
}

#[tokio::test]
async fn csi_unread_mount_answers_stay_within_the_memory_limit() {
    // 40 secrets of 25 KB: each Mount of all of them answers 1 MB.
    let mut fixture = String::from("vaults:\n  - name: kv1\n    secrets:\n");
    for i in 0..40 {
        fixture.push_str(&format!(
            "      - {{name: big{i}, value: \"{}\"}}\n",
            "x".repeat(25_000)
        ));
    }
    fixture.push_str(
        "identities:\n  - name: sp\n    client_id: 33333333-0000-0000-0000-0000000005b1\n    \
         client_secret: sp-secret-value\n    permissions: {kv1: {secrets: [get, list]}}\n",
    );
    let p = Proc::start_csi(&fixture).await;
    let mock = p.mock().expect("the CSI process keeps its mock");
    let mut objects = String::from("array:\n");
    for i in 0..40 {
        objects.push_str(&format!(
            "  - |\n    objectName: big{i}\n    objectType: secret\n"
        ));
    }
    let request = csi::MountRequest {
        attributes: serde_json::json!({
            "keyvaultName": "kv1",
            "tenantId": mock.info().tenant_id,
            "objects": objects,
        })
        .to_string(),
        secrets: serde_json::json!({
            "clientid": "33333333-0000-0000-0000-0000000005b1",
            "clientsecret": "sp-secret-value",
        })
        .to_string(),
        target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
        permission: "420".into(),
        current_object_version: Vec::new(),
    };
    // One Mount read normally, so the objects are cached and the baseline includes them.
    {
        let mut client =
            csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel(&p.socket).await)
                .max_decoding_message_size(8 << 20);
        let r = client.mount(request.clone()).await.unwrap().into_inner();
        assert_eq!(r.files.len(), 40);
    }
    let baseline = p.rss_kib();
    // 16 connections x 8 Mounts whose 1 MB answers are never read: 128 MB of answers if
    // each were built and held.
    let tasks = unread_answers(
        &p.socket,
        "/v1alpha1.CSIDriverProvider/Mount",
        grpc_body(&request),
        16,
        8,
    )
    .await;
    let mut peak = baseline;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(8) {
        peak = peak.max(p.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limits = akv_bridge::csi::LIMITS;
    let bound_kib = (limits.request_memory_bound() / 1024) as u64;
    println!(
        "Csi: 16 connections x 8 Mounts of 1 MB answers never read: RSS {baseline} KiB before, \
         peak {peak} KiB (+{} KiB; bound {bound_kib} KiB)",
        peak - baseline
    );
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB is over 256 MiB");
    assert!(
        peak - baseline < bound_kib + 32 * 1024,
        "grew by {} KiB, bound {bound_kib} KiB",
        peak - baseline
    );
    for t in tasks {
        t.abort();
    }
    // Everything held is given back, and the provider serves again.
    eventually(Duration::from_secs(30), "budget given back", async || {
        p.metric("in_flight_bytes{pool=\"bytes\"}").await == 0.0
    })
    .await;
    new_client_call(&p).await;
}
