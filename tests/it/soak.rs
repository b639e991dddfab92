//! Soak: mixed KMS and CSI requests at high concurrency against both servers running as
//! real processes, with random faults injected in the vault (5xx, resets, latency). Every
//! request must be answered (success or a clear availability code), no process may die,
//! and resident memory must stay bounded. CI runs a short soak; the figures in
//! RELIABILITY.md come from `AKV_BRIDGE_SOAK_REQUESTS=100000`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use mock_vault::{FaultKind, FaultSpec};
use serde_json::json;
use tonic::Code;

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    keys: [{name: kek, kty: RSA, size: 2048}]
    secrets:
      - {name: s1, value: "soak-1"}
      - {name: s2, value: "soak-2"}
      - {name: s3, value: "soak-3"}
identities:
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions: {kv1: {keys: [get, list, encrypt, decrypt]}}
  - name: sp
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: sp-secret-value
    permissions: {kv1: {secrets: [get]}}
"#;

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_with_random_faults_is_always_answered() {
    let total: usize = std::env::var("AKV_BRIDGE_SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let concurrency = 64;
    let mock = mock(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_akv-bridge");
    let kms_socket = dir.path().join("kms.sock");
    let azure = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let mut kms = tokio::process::Command::new(exe)
        .arg("kms")
        .args(kms_flags(&mock, &kms_socket, &azure))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&kms_socket, &mut kms).await;
    wait_status(&kms_socket, |s| s.healthz == "ok", "Status ok").await;
    let csi_socket = dir.path().join("azure.sock");
    let mut csi_flags = csi_flags(&mock, &csi_socket);
    csi_flags.push("--latest-cache-ttl=200ms".into());
    csi_flags.push("--stale-if-error=0s".into());
    let mut provider = tokio::process::Command::new(exe)
        .arg("csi")
        .args(&csi_flags)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&csi_socket, &mut provider).await;

    // Ciphertexts to decrypt: a pool, so the cache both hits and misses.
    let mut k = v2(&kms_socket).await;
    let mut pool = Vec::new();
    for i in 0..200u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        pool.push(
            k.encrypt(v2::EncryptRequest {
                plaintext: seed.to_vec(),
                uid: format!("seed-{i}"),
            })
            .await
            .unwrap()
            .into_inner(),
        );
    }
    let pool = Arc::new(pool);
    let rss_start = (rss_kib(kms.id().unwrap()), rss_kib(provider.id().unwrap()));

    // Faults for the whole run.
    mock.add_fault(FaultSpec {
        fraction: Some(0.05),
        ..fault(FaultKind::Status { status: 503 }, None)
    })
    .unwrap();
    mock.add_fault(FaultSpec {
        fraction: Some(0.01),
        ..fault(FaultKind::Reset, None)
    })
    .unwrap();
    mock.add_fault(fault(
        FaultKind::Latency {
            fixed_ms: None,
            min_ms: Some(0),
            max_ms: Some(10),
        },
        None,
    ))
    .unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let tenant = mock.info().tenant_id.clone();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let next = Arc::clone(&next);
        let pool = Arc::clone(&pool);
        let kms_channel = channel(&kms_socket).await;
        let csi_channel = channel(&csi_socket).await;
        let tenant = tenant.clone();
        workers.push(tokio::spawn(async move {
            let mut k = v2::key_management_service_client::KeyManagementServiceClient::new(kms_channel);
            let mut c = csi::csi_driver_provider_client::CsiDriverProviderClient::new(csi_channel);
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let code = match i % 10 {
                    0 => k.status(v2::StatusRequest {}).await.map(|_| ()),
                    1 | 2 => k
                        .encrypt(v2::EncryptRequest { plaintext: vec![(i % 251) as u8; 32], uid: format!("e-{i}") })
                        .await
                        .map(|_| ()),
                    3..=6 => {
                        let e = &pool[(i * 7 + w) % pool.len()];
                        k.decrypt(v2::DecryptRequest {
                            ciphertext: e.ciphertext.clone(),
                            uid: format!("d-{i}"),
                            key_id: e.key_id.clone(),
                            annotations: e.annotations.clone(),
                        })
                        .await
                        .map(|_| ())
                    }
                    _ => c
                        .mount(csi::MountRequest {
                            attributes: json!({
                                "keyvaultName": "kv1",
                                "tenantId": tenant,
                                "objects": "array:\n  - |\n    objectName: s1\n    objectType: secret\n  - |\n    objectName: s2\n    objectType: secret\n  - |\n    objectName: s3\n    objectType: secret\n",
                                "csi.storage.k8s.io/pod.name": format!("pod-{}", i % 20),
                            })
                            .to_string(),
                            secrets: json!({"clientid": "33333333-0000-0000-0000-0000000005b1", "clientsecret": "sp-secret-value"}).to_string(),
                            target_path: "/var/lib/kubelet/pods/p/mount".into(),
                            permission: "420".into(),
                            current_object_version: vec![],
                        })
                        .await
                        .map(|r| assert_eq!(r.into_inner().files.len(), 3)),
                };
                let label = match code {
                    Ok(()) => "OK".to_owned(),
                    Err(s) => {
                        assert!(
                            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted),
                            "unexpected failure: {s:?}"
                        );
                        format!("{:?}", s.code())
                    }
                };
                *codes.entry(label).or_default() += 1;
            }
            codes
        }));
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for w in workers {
        for (k, v) in w.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    assert!(kms.try_wait().unwrap().is_none(), "the KMS plugin died");
    assert!(
        provider.try_wait().unwrap().is_none(),
        "the CSI provider died"
    );
    let answered: usize = codes.values().sum();
    assert_eq!(answered, total, "every request answered");
    let rss_end = (rss_kib(kms.id().unwrap()), rss_kib(provider.id().unwrap()));
    let stats = mock.stats();
    let faults_fired = stats.by_status.get(&503).copied().unwrap_or(0);
    println!(
        "{}",
        json!({
            "requests": total,
            "concurrency": concurrency,
            "seconds": elapsed.as_secs_f64(),
            "requests_per_second": total as f64 / elapsed.as_secs_f64(),
            "answers": codes,
            "vault_requests": stats.total,
            "vault_503_injected": faults_fired,
            "kms_rss_kib": {"start": rss_start.0.0, "end": rss_end.0.0, "peak": rss_end.0.1},
            "csi_rss_kib": {"start": rss_start.1.0, "end": rss_end.1.0, "peak": rss_end.1.1},
        })
    );
    // Bounded: neither process grows by more than 64 MiB over the run.
    assert!(
        rss_end.0.0 < rss_start.0.0 + 64 * 1024,
        "KMS RSS grew: {rss_start:?} → {rss_end:?}"
    );
    assert!(
        rss_end.1.0 < rss_start.1.0 + 64 * 1024,
        "CSI RSS grew: {rss_start:?} → {rss_end:?}"
    );
    assert!(
        codes.get("OK").copied().unwrap_or(0) > total / 2,
        "{codes:?}"
    );
}
