//! `akv-bridge probe kms --store FILE`: a restarted kube-apiserver, replayed.
//!
//! A fresh [`ApiServer`] polls (Status, then Encrypt of its own seed), reads every record
//! already in FILE as kube-apiserver reads etcd after a restart (one Decrypt per distinct
//! DEK source), then writes one new sample record and appends it to FILE. Run it before and
//! after a plugin upgrade, a key rotation or a restore: a record that no longer reads is a
//! Secret a real kube-apiserver could no longer serve.
//!
//! FILE holds JSON lines, each
//! `{"storage_key": "...", "value": "<base64 etcd value>", "written_at": "<RFC 3339>",
//! "plaintext_sha256": "<hex>"}`. The values are ciphertext and the hash is of a random
//! sample document: nothing in FILE is secret. It is created 0600; each record is appended
//! with one write.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::{
    ApiServer, KEY_ID_MAX_SIZE, ProbeError, ProbeOptions, ProbeReport, ProbeStep, check_status,
    constant_time_eq, millis, printable,
};

/// Most records the replay reads from the store; more is an error (start a new file).
pub const STORE_MAX_RECORDS: usize = 10_000;
/// Largest store file the replay reads; larger is an error (start a new file).
pub const STORE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Failed records the `stored-read` step lists one by one; the rest are counted.
const FAILURES_LISTED: usize = 100;

/// One line of the store file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredRecord {
    /// The etcd key the value was written under (its AES-GCM additional data).
    pub(super) storage_key: String,
    /// The etcd value, base64 (standard alphabet, padded).
    pub(super) value: String,
    /// When it was written, RFC 3339 UTC.
    pub(super) written_at: String,
    /// SHA-256 (hex) of the sample document sealed in `value`; a read checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) plaintext_sha256: Option<String>,
}

/// One non-empty line of the store: its 1-based line number and the record, or why it is
/// not one.
type StoredLine = (usize, Result<StoredRecord, String>);

/// Replays a restarted kube-apiserver against the plugin on `channel` with the store at
/// `store`: steps `status`, `encrypt`, `stored-read`, `write`. Never fails: every failure
/// is a failed step.
pub(super) async fn replay(channel: Channel, options: &ProbeOptions, store: &Path) -> ProbeReport {
    let mut report = ProbeReport::new(None, options);
    let mut api = ApiServer::new(channel, options.clone());

    // The first poll after start: Status, and Encrypt if its key id is valid.
    let outcome = api.poll_steps().await;
    let (status_latency, status) = outcome.status;
    match &status {
        Err(e) => report.push(ProbeStep::new(
            "status",
            status_latency,
            String::new(),
            vec![e.clone()],
        )),
        Ok(seen) => {
            let detail = format!(
                "version={} healthz={} key_id={}",
                printable(&seen.version, 64),
                printable(&seen.healthz, 256),
                printable(&seen.key_id, KEY_ID_MAX_SIZE)
            );
            let problems = check_status(&seen.healthz, &seen.version, &seen.key_id);
            report.version = Some(seen.version.clone());
            report.key_id = Some(seen.key_id.clone());
            report.push(ProbeStep::new("status", status_latency, detail, problems));
        }
    }
    report.push(match (&status, outcome.encrypt) {
        (Err(_), _) => ProbeStep::skipped("encrypt", "Status did not answer"),
        (Ok(_), None) => ProbeStep::new(
            "encrypt",
            0.0,
            String::new(),
            vec![
                "no Encrypt sent: Status gave no valid key_id, so kube-apiserver has no \
                 transformer and every read and write of an encrypted object fails"
                    .to_owned(),
            ],
        ),
        (Ok(_), Some((latency, Err(e)))) => ProbeStep::new(
            "encrypt",
            latency,
            String::new(),
            vec![format!(
                "{e}; without a transformer every read and write fails"
            )],
        ),
        (Ok(_), Some((latency, Ok(response)))) => ProbeStep::new(
            "encrypt",
            latency,
            format!(
                "wrapped a fresh {}-byte seed: ciphertext {} bytes, key_id={} (matches \
                 Status), {} annotations; this is the write state",
                super::SEED_SIZE,
                response.ciphertext.len(),
                printable(&response.key_id, KEY_ID_MAX_SIZE),
                response.annotations.len()
            ),
            Vec::new(),
        ),
    });

    let loaded = load_store(store).await;
    let store_ok = loaded.is_ok();
    report.push(match loaded {
        Err(e) => ProbeStep::new("stored-read", 0.0, String::new(), vec![e.to_string()]),
        Ok(lines) => stored_read_step(&mut api, &options.provider_name, store, &lines).await,
    });

    report.push(if store_ok {
        write_step(&mut api, options, store).await
    } else {
        ProbeStep::skipped("write", "the store could not be read; nothing appended")
    });
    report
}

/// Reads every record as the restarted API server would, and lists the failures by
/// storage key.
async fn stored_read_step(
    api: &mut ApiServer,
    provider_name: &str,
    store: &Path,
    lines: &[StoredLine],
) -> ProbeStep {
    let start = Instant::now();
    if lines.is_empty() {
        return ProbeStep::new(
            "stored-read",
            0.0,
            format!(
                "{} holds no records yet (first run): nothing to read",
                store.display()
            ),
            Vec::new(),
        );
    }
    let decrypts_before = api.decrypt_calls();
    let mut failures = Vec::new();
    let mut other_key_ids = 0usize;
    for (line, record) in lines {
        let result = match record {
            Err(e) => Err(format!("line {line}: not a record: {e}")),
            Ok(record) => read_record(api, provider_name, record).await.map_err(|e| {
                format!(
                    "line {line}, storage key {:?}: {e}",
                    printable(&record.storage_key, 256)
                )
            }),
        };
        match result {
            Ok(key_id) if Some(key_id.as_str()) != api.write_key_id() => other_key_ids += 1,
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    let read = lines.len() - failures.len();
    let mut detail = format!(
        "{read} of {} records in {} opened and matched their plaintext_sha256; Decrypt \
         RPCs: {} (one per DEK source not seen before)",
        lines.len(),
        store.display(),
        api.decrypt_calls() - decrypts_before
    );
    if let Some((_, Ok(first))) = lines.first() {
        let _ = write!(
            detail,
            "\nfirst record written_at {}",
            printable(&first.written_at, 64)
        );
    }
    if other_key_ids > 0 {
        let _ = write!(
            detail,
            "\n{other_key_ids} under a key_id other than the write state's: a storage \
             migration would rewrite them"
        );
    }
    let mut problems: Vec<String> = failures.iter().take(FAILURES_LISTED).cloned().collect();
    if failures.len() > FAILURES_LISTED {
        problems.push(format!(
            "… and {} more records failed",
            failures.len() - FAILURES_LISTED
        ));
    }
    ProbeStep::new("stored-read", millis(start.elapsed()), detail, problems)
}

/// Reads one record through `api` and checks its content; returns the key id it was
/// written under.
async fn read_record(
    api: &mut ApiServer,
    provider_name: &str,
    record: &StoredRecord,
) -> Result<String, String> {
    let value = BASE64
        .decode(&record.value)
        .map_err(|e| format!("value is not base64: {e}"))?;
    let key_id = super::decode_etcd_value(provider_name, &value)
        .map(|object| object.key_id)
        .unwrap_or_default();
    let plaintext = api.read(&record.storage_key, &value).await?;
    if let Some(want) = &record.plaintext_sha256 {
        let got = hex::encode(Sha256::digest(plaintext.as_slice()));
        if !constant_time_eq(got.as_bytes(), want.to_ascii_lowercase().as_bytes()) {
            return Err(format!(
                "opened {} bytes whose SHA-256 differs from the record's plaintext_sha256",
                plaintext.len()
            ));
        }
    }
    Ok(key_id)
}

/// Writes one sample Secret with the write state, reads it back, and appends it to the
/// store.
async fn write_step(api: &mut ApiServer, options: &ProbeOptions, store: &Path) -> ProbeStep {
    let start = Instant::now();
    let fail = |problem: String| {
        ProbeStep::new(
            "write",
            millis(start.elapsed()),
            String::new(),
            vec![problem],
        )
    };
    let mut rng = rand::rng();
    let mut name = [0u8; 8];
    rng.fill_bytes(&mut name);
    let name = hex::encode(name);
    let mut marker = Zeroizing::new([0u8; 16]);
    rng.fill_bytes(marker.as_mut_slice());
    let storage_key = format!("{}-{name}", options.storage_key);
    let plaintext = sample_secret(&name, marker.as_slice());
    let value = match api.write(&storage_key, &plaintext) {
        Ok(value) => value,
        Err(e) => return fail(e),
    };
    // Read back: the API server's own seed, so no Decrypt.
    match api.read(&storage_key, &value).await {
        Ok(read) if constant_time_eq(&read, &plaintext) => {}
        Ok(_) => return fail("the value read back differs from the one written".to_owned()),
        Err(e) => return fail(format!("reading back the value just written: {e}")),
    }
    let written_at = match time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
    {
        Ok(t) => t,
        Err(e) => return fail(format!("formatting the time: {e}")),
    };
    let record = StoredRecord {
        storage_key: storage_key.clone(),
        value: BASE64.encode(&value),
        written_at,
        plaintext_sha256: Some(hex::encode(Sha256::digest(plaintext.as_slice()))),
    };
    if let Err(e) = append_record(store, &record).await {
        return fail(e.to_string());
    }
    ProbeStep::new(
        "write",
        millis(start.elapsed()),
        format!(
            "sealed a {}-byte sample Secret under {storage_key:?} with key_id={} ({}-byte \
             etcd value), read it back, appended it to {}",
            plaintext.len(),
            printable(api.write_key_id().unwrap_or_default(), KEY_ID_MAX_SIZE),
            value.len(),
            store.display()
        ),
        Vec::new(),
    )
}

/// A small Secret-like JSON document: `name` (random, also in the storage key) and a random
/// `marker` as its data, which appears nowhere else.
fn sample_secret(name: &str, marker: &[u8]) -> Zeroizing<Vec<u8>> {
    let data = Zeroizing::new(BASE64.encode(marker));
    Zeroizing::new(
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"akv-bridge-probe-{name}","namespace":"default"}},"type":"Opaque","data":{{"marker":"{}"}}}}"#,
            data.as_str()
        )
        .into_bytes(),
    )
}

/// Reads the store: no file is an empty store; more than [`STORE_MAX_BYTES`] or
/// [`STORE_MAX_RECORDS`] is an error. Blank lines are skipped; a line that is not a record
/// is kept as a failure with its line number.
pub(super) async fn load_store(path: &Path) -> Result<Vec<StoredLine>, ProbeError> {
    let store_error = |reason: String| ProbeError::Store {
        path: path.to_owned(),
        reason,
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(store_error(e.to_string())),
    };
    let too_big = |size: u64| {
        store_error(format!(
            "it is {size} bytes; the replay reads at most {STORE_MAX_BYTES} (16 MiB): \
             start a new store file"
        ))
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| store_error(e.to_string()))?
        .len();
    if size > STORE_MAX_BYTES {
        return Err(too_big(size));
    }
    // The file may grow while it is read: never read past the limit.
    let mut bytes = Vec::new();
    file.take(STORE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| store_error(e.to_string()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > STORE_MAX_BYTES {
        return Err(too_big(u64::try_from(bytes.len()).unwrap_or(u64::MAX)));
    }
    let mut lines = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if lines.len() == STORE_MAX_RECORDS {
            return Err(store_error(format!(
                "it holds more than {STORE_MAX_RECORDS} records, the most the replay reads: \
                 start a new store file"
            )));
        }
        let record = serde_json::from_slice::<StoredRecord>(line).map_err(|e| e.to_string());
        lines.push((index + 1, record));
    }
    Ok(lines)
}

/// Appends `record` as one JSON line with one write, creating the file 0600.
pub(super) async fn append_record(path: &Path, record: &StoredRecord) -> Result<(), ProbeError> {
    let store_error = |reason: String| ProbeError::Store {
        path: path.to_owned(),
        reason,
    };
    let mut line = serde_json::to_vec(record).map_err(|e| store_error(e.to_string()))?;
    line.push(b'\n');
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&owned)
            .map_err(|e| format!("cannot open it for appending: {e}"))?;
        // O_APPEND and one write of the whole line: concurrent probes do not interleave.
        file.write_all(&line)
            .map_err(|e| format!("cannot append: {e}"))?;
        file.sync_data().map_err(|e| format!("cannot sync: {e}"))
    })
    .await
    .map_err(|e| store_error(e.to_string()))?
    .map_err(store_error)
}

#[cfg(test)]
mod tests;
