//! Status round-trip throughput over the real Unix socket, with and without the
//! `:authority` layer, in the same run on the same machine. Prints a table and one JSON line.
//!
//! `cargo bench --bench authority [-- SECONDS CONCURRENCY]` (defaults: 3 s per round, 32).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use akv_bridge::proto::kms_v2::StatusRequest;
use akv_bridge::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use tonic::transport::Channel;

const FIXTURE: &str = r#"
vaults: [{name: kv1, keys: [{name: kek}]}]
identities: [{name: kms, client_id: 00000000-0000-0000-0000-00000000c0de, client_secret: s}]
"#;

async fn channel(path: std::path::PathBuf) -> Channel {
    akv_bridge::socket::connect(
        &akv_bridge::socket::SocketAddress::Path(path),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

struct Round {
    ops: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

async fn round(socket: &std::path::Path, seconds: u64, concurrency: usize) -> Round {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let ch = channel(socket.to_owned()).await;
        tasks.push(tokio::spawn(async move {
            let mut client = KeyManagementServiceClient::new(ch);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.status(StatusRequest {}).await.unwrap();
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    latencies_us.sort_unstable();
    Round {
        ops: latencies_us.len() as u64,
        latencies_us,
        elapsed: started.elapsed(),
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);

    let mock = mock_vault::start(mock_vault::Config {
        fixture: mock_vault::Fixture::parse(FIXTURE).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let info = mock.info();
    let azure = dir.path().join("azure.json");
    std::fs::write(
        &azure,
        serde_json::json!({"tenantId": info.tenant_id, "aadClientId": "00000000-0000-0000-0000-00000000c0de", "aadClientSecret": "s"}).to_string(),
    )
    .unwrap();
    let mut flags = vec![format!("--vault-url={}", info.vaults["kv1"].url)];
    flags.extend(akv_bridge::cli::mock_vault_flags(
        info.address,
        &info.ca_pem_path,
        &info.authority_host,
    ));
    flags.extend([
        format!("--config-file-path={}", azure.display()),
        "--key-name=kek".to_owned(),
    ]);
    let kms_args: akv_bridge::cli::KmsArgs = akv_bridge::cli::parse_flags("kms", flags).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let prepared = akv_bridge::kms::prepare(&kms_args, &mut registry)
        .await
        .unwrap();
    let kms = Arc::clone(&prepared.kms);
    let mut sockets = Vec::new();
    for (name, rewrite) in [("with layer", true), ("without layer", false)] {
        let path = dir.path().join(format!("{rewrite}.sock"));
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(akv_bridge::kms::serve(
            listener,
            Arc::clone(&kms),
            rewrite,
            std::future::pending(),
        ));
        sockets.push((name, path));
    }
    // Warm up, then alternate rounds so drift affects both equally.
    for (_, path) in &sockets {
        round(path, 1, concurrency).await;
    }
    let mut results: Vec<(&str, Vec<Round>)> =
        sockets.iter().map(|(n, _)| (*n, Vec::new())).collect();
    for _ in 0..3 {
        for (i, (_, path)) in sockets.iter().enumerate() {
            let r = round(path, seconds, concurrency).await;
            results[i].1.push(r);
        }
    }
    println!(
        "Status round trips over a Unix socket, {concurrency} concurrent clients, 3 rounds x {seconds}s each, alternating"
    );
    println!(
        "{:<15} {:>12} {:>10} {:>10} {:>10}",
        "config", "ops/s", "p50 us", "p90 us", "p99 us"
    );
    let mut summary = Vec::new();
    for (name, rounds) in &results {
        let ops: u64 = rounds.iter().map(|r| r.ops).sum();
        let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let mut lat: Vec<u64> = rounds
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let rate = ops as f64 / secs;
        println!(
            "{name:<15} {rate:>12.0} {:>10} {:>10} {:>10}",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99)
        );
        summary.push(serde_json::json!({"config": name, "ops_per_sec": rate.round(), "p50_us": pct(&lat, 0.5), "p90_us": pct(&lat, 0.9), "p99_us": pct(&lat, 0.99)}));
    }
    let on = summary[0]["ops_per_sec"].as_f64().unwrap();
    let off = summary[1]["ops_per_sec"].as_f64().unwrap();
    let overhead = (off - on) / off * 100.0;
    println!("layer cost: {overhead:.1} % of throughput (target: under 5 %)");
    println!(
        "{}",
        serde_json::json!({"benchmark": "authority-layer", "concurrency": concurrency, "seconds_per_round": seconds, "results": summary, "overhead_percent": (overhead * 10.0).round() / 10.0})
    );
    mock.shutdown().await;
}
