//! Tests of the one-shot probe against a fake plugin on a real Unix socket, and of the
//! display helpers.

use super::fixtures::{FakeKms, serve, step};
use super::*;
use crate::proto::kms_v2::key_management_service_server::KeyManagementServiceServer;
use std::collections::HashMap;

#[test]
fn uid_is_a_v4_uuid() {
    let uid = new_uid();
    assert_eq!(uid.len(), 36);
    assert_eq!(&uid[14..15], "4");
    assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
    assert_ne!(new_uid(), uid);
}

#[test]
fn display_helpers_hide_and_escape() {
    assert_eq!(show_annotation_value(b"1"), "\"1\"");
    assert_eq!(show_annotation_value(&[0xff, 0x00]), "<2 bytes>");
    assert_eq!(show_annotation_value(&[b'a'; 129]), "<129 bytes>");
    assert_eq!(printable("a\x1b[2Jb", 100), "a\\u{1b}[2Jb");
    assert!(printable(&"k".repeat(2000), 1024).ends_with("… (2000 bytes)"));
}

#[tokio::test]
async fn probe_passes_against_a_good_plugin() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let options = ProbeOptions {
        envelope: true,
        ..ProbeOptions::default()
    };
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "connect",
            "status",
            "encrypt",
            "decrypt",
            "envelope-write",
            "envelope-read"
        ]
    );
    assert_eq!(report.key_id.as_deref(), Some("key-1"));
    let encrypt = step(&report, "encrypt");
    assert!(
        encrypt.detail.contains("ciphertext 32 bytes"),
        "{}",
        encrypt.detail
    );
    assert!(encrypt.detail.contains("version.azure.akv.io = \"1\""));
    assert!(encrypt.detail.contains("blob.akv-bridge.io = <200 bytes>"));
    assert!(
        step(&report, "envelope-write")
            .detail
            .contains("k8s:enc:kms:v2:azurekmsprovider:")
    );
    assert!(table.contains("result: OK"));

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["timeout_ms"], 3000);
    assert_eq!(json["steps"].as_array().unwrap().len(), 6);
    assert!(json["steps"][1]["latency_ms"].is_number());
}

#[tokio::test]
async fn probe_without_envelope_has_three_steps() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let channel = connect(&socket, DEFAULT_TIMEOUT).await.unwrap();
    let report = probe_kms(channel, &ProbeOptions::default()).await;
    assert!(report.ok(), "{}", report.to_table());
    assert_eq!(report.steps.len(), 3);
}

#[tokio::test]
async fn probe_flags_a_key_id_mismatch() {
    let fake = FakeKms {
        encrypt_key_id: "key-2".into(),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!report.ok(), "{table}");
    let encrypt = step(&report, "encrypt");
    assert!(!encrypt.ok);
    assert!(
        encrypt
            .problems
            .iter()
            .any(|p| p.contains("key_id mismatch") && p.contains("key-2") && p.contains("key-1")),
        "{table}"
    );
    assert!(table.contains("key_id mismatch"), "{table}");
    assert!(table.contains("result: FAILED"), "{table}");
}

#[tokio::test]
async fn probe_flags_bad_annotations() {
    let fake = FakeKms {
        annotations: HashMap::from([("Not_A_Domain".into(), b"v".to_vec())]),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let options = ProbeOptions {
        envelope: true,
        ..ProbeOptions::default()
    };
    let report = probe_socket(&socket, &options).await;
    assert!(!report.ok());
    assert!(!step(&report, "encrypt").ok);
    assert!(!step(&report, "envelope-write").ok);
    assert!(step(&report, "envelope-read").skipped);
}

#[tokio::test]
async fn probe_times_out_instead_of_hanging() {
    let fake = FakeKms {
        status_delay: Duration::from_secs(30),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let options = ProbeOptions {
        timeout: Duration::from_millis(200),
        ..ProbeOptions::default()
    };
    let start = Instant::now();
    let report = probe_socket(&socket, &options).await;
    println!("{}", report.to_table());
    assert!(start.elapsed() < Duration::from_secs(5));
    let status = step(&report, "status");
    assert!(!status.ok);
    assert!(!report.ok());
    // The other calls still ran and answered.
    assert!(step(&report, "decrypt").ok, "{}", report.to_table());
}

#[tokio::test]
async fn connect_fails_cleanly_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = SocketAddress::Path(dir.path().join("missing.sock"));
    let err = connect(&socket, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Failed { .. }), "{err}");
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    println!("{}", report.to_table());
    assert!(!report.ok());
    assert_eq!(report.steps.len(), 1);
    assert!(report.to_table().contains("could not connect"));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn probe_over_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("akv-bridge-probe-test-{}", new_uid());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(FakeKms::good()))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let socket = SocketAddress::parse_endpoint(&format!("unix:///@{name}")).unwrap();
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    assert!(report.ok(), "{}", report.to_table());
}

#[tokio::test]
async fn invalid_options_are_a_failed_step() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let channel = connect(&socket, DEFAULT_TIMEOUT).await.unwrap();
    let options = ProbeOptions {
        provider_name: "bad:name".into(),
        ..ProbeOptions::default()
    };
    let report = probe_kms(channel, &options).await;
    assert!(!report.ok());
    assert_eq!(report.steps[0].name, "options");
}
