//! Tests of `probe kms --store`: a restarted kube-apiserver, replayed against the fake
//! plugin.

use super::*;
use crate::probe::fixtures::{FakeKms, serve, step};
use crate::probe::{NIL_TRANSFORMER, probe_socket, replay};

fn store_options(store: &std::path::Path) -> ProbeOptions {
    ProbeOptions {
        store: Some(store.to_owned()),
        ..ProbeOptions::default()
    }
}

fn store_lines(store: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(store)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn store_replay_reads_the_previous_runs_records() {
    use std::os::unix::fs::PermissionsExt as _;
    let fake = FakeKms::good();
    let (dir, socket) = serve(fake.clone()).await;
    let store = dir.path().join("probe-store.jsonl");
    let options = store_options(&store);

    // First run: nothing stored yet; Status, Encrypt, one record written.
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["connect", "status", "encrypt", "stored-read", "write"]
    );
    assert!(
        step(&report, "stored-read")
            .detail
            .contains("no records yet")
    );
    assert_eq!((fake.encrypts(), fake.decrypts()), (1, 0));
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let lines = store_lines(&store);
    assert_eq!(lines.len(), 1);
    let record = &lines[0];
    let storage_key = record["storage_key"].as_str().unwrap();
    assert!(storage_key.starts_with("/registry/secrets/default/akv-bridge-probe-"));
    let value = base64::engine::general_purpose::STANDARD
        .decode(record["value"].as_str().unwrap())
        .unwrap();
    assert!(value.starts_with(b"k8s:enc:kms:v2:azurekmsprovider:"));
    assert_eq!(record["plaintext_sha256"].as_str().unwrap().len(), 64);
    time::OffsetDateTime::parse(
        record["written_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // Second run, a new API server: the first run's record costs exactly one Decrypt.
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let detail = &step(&report, "stored-read").detail;
    assert!(detail.contains("1 of 1 records"), "{detail}");
    assert!(detail.contains("Decrypt RPCs: 1 "), "{detail}");
    assert_eq!((fake.encrypts(), fake.decrypts()), (2, 1));
    assert_eq!(store_lines(&store).len(), 2);

    // Third run: two records under two DEK sources, two Decrypts.
    let report = probe_socket(&socket, &options).await;
    assert!(report.ok(), "{}", report.to_table());
    assert_eq!((fake.encrypts(), fake.decrypts()), (3, 3));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["steps"][3]["name"], "stored-read");
}

#[tokio::test]
async fn store_replay_fails_when_a_stored_record_no_longer_reads() {
    let fake = FakeKms::good();
    let (dir, socket) = serve(fake.clone()).await;
    let store = dir.path().join("store.jsonl");
    let options = store_options(&store);
    assert!(probe_socket(&socket, &options).await.ok());

    // A record moved to another etcd key, a line that is no record, a blank line.
    let mut moved = store_lines(&store).remove(0);
    moved["storage_key"] = "/registry/secrets/default/moved".into();
    let mut text = std::fs::read_to_string(&store).unwrap();
    text.push_str(&format!("{moved}\nnot json\n\n"));
    std::fs::write(&store, text).unwrap();

    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!report.ok(), "{table}");
    let read = step(&report, "stored-read");
    assert!(!read.ok);
    assert!(read.detail.contains("1 of 3 records"), "{}", read.detail);
    assert_eq!(read.problems.len(), 2, "{:?}", read.problems);
    assert!(
        read.problems[0].contains("line 2")
            && read.problems[0].contains("/registry/secrets/default/moved")
            && read.problems[0].contains("authentication failed"),
        "{:?}",
        read.problems
    );
    assert!(read.problems[1].starts_with("line 3: not a record"));
    // The run still wrote its own record.
    assert!(step(&report, "write").ok);
    assert_eq!(store_lines_raw(&store), 5);
}

fn store_lines_raw(store: &std::path::Path) -> usize {
    std::fs::read_to_string(store).unwrap().lines().count()
}

#[tokio::test]
async fn store_replay_without_a_transformer_fails_every_read_and_the_write() {
    let good = FakeKms::good();
    let (dir, socket) = serve(good).await;
    let store = dir.path().join("store.jsonl");
    assert!(probe_socket(&socket, &store_options(&store)).await.ok());

    let broken = FakeKms {
        status_key_id: String::new(),
        ..FakeKms::good()
    };
    let (_dir2, socket2) = serve(broken.clone()).await;
    let report = probe_socket(&socket2, &store_options(&store)).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!step(&report, "status").ok);
    let encrypt = step(&report, "encrypt");
    assert!(!encrypt.ok && encrypt.problems[0].contains("no Encrypt sent"));
    let read = step(&report, "stored-read");
    assert!(read.problems[0].contains(NIL_TRANSFORMER), "{table}");
    let write = step(&report, "write");
    assert_eq!(write.problems, [NIL_TRANSFORMER]);
    assert_eq!(broken.encrypts() + broken.decrypts(), 0);
    assert_eq!(store_lines_raw(&store), 1);
}

#[tokio::test]
async fn store_limits_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    assert!(replay::load_store(&missing).await.unwrap().is_empty());

    let big = dir.path().join("big.jsonl");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(STORE_MAX_BYTES + 1)
        .unwrap();
    let err = replay::load_store(&big).await.unwrap_err().to_string();
    assert!(err.contains("16 MiB") && err.contains("big.jsonl"), "{err}");

    let many = dir.path().join("many.jsonl");
    std::fs::write(&many, "{}\n".repeat(STORE_MAX_RECORDS + 1)).unwrap();
    let err = replay::load_store(&many).await.unwrap_err().to_string();
    assert!(err.contains("more than 10000 records"), "{err}");
    std::fs::write(&many, "{}\n".repeat(STORE_MAX_RECORDS)).unwrap();
    assert_eq!(
        replay::load_store(&many).await.unwrap().len(),
        STORE_MAX_RECORDS
    );

    // Over the limit the replay reads nothing and appends nothing.
    let (_sock_dir, socket) = serve(FakeKms::good()).await;
    let report = probe_socket(&socket, &store_options(&big)).await;
    assert!(!report.ok());
    assert!(!step(&report, "stored-read").ok);
    assert!(step(&report, "write").skipped);
    assert_eq!(std::fs::metadata(&big).unwrap().len(), STORE_MAX_BYTES + 1);
}
