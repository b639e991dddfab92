//! Audit lines, written off the request path.
//!
//! Every KMS call produces one line (target `audit`): the RPC, the caller's uid, the key id,
//! the outcome, the latency and the cache result. A call only moves a small record into a
//! bounded queue and never waits: formatting and writing happen on one writer thread. When
//! the queue is full (the log sink is slower than the calls), the record is dropped and
//! counted in `akv_bridge_kms_audit_lines_dropped`, so a slow or blocked stderr can never
//! slow down or stall kube-apiserver's calls.
//!
//! The writer formats the lines itself, in the shape of the other log lines (JSON with
//! `--log-format-json`, text otherwise). It wakes every 20 ms and writes what was queued
//! meanwhile, up to 256 lines per `write` to stderr: under load, one system call carries
//! many lines, and no call ever wakes the writer. The
//! log filter still applies: lines are written only when the `audit` target is enabled
//! at their level (`RUST_LOG=audit=off` silences them).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use crate::kms::envelope::loggable_uid;

/// Records the queue holds before it drops.
pub const QUEUE: usize = 8192;
/// Lines written with one system call at most.
const BATCH: usize = 256;
/// How often the writer drains the queue: a line reaches stderr at most this late.
const TICK: Duration = Duration::from_millis(20);

/// Cuts a uid to 64 characters before it is queued: a uid can be as long as a gRPC
/// message, and the queue holds thousands of records.
fn bound_uid(uid: &mut String) {
    if let Some((cut, _)) = uid.char_indices().nth(64) {
        uid.truncate(cut);
    }
}

/// Formats and writes a batch with one `write`, then answers the flushes in it.
fn write_batch(batch: &mut Vec<Message>, out: &mut Vec<u8>, json: bool) {
    let mut flushes = Vec::new();
    for message in batch.drain(..) {
        match message {
            Message::Line(record) => format_line(out, &record, json, record.at),
            Message::Flush(done) => flushes.push(done),
        }
    }
    if !out.is_empty() {
        // One write for the batch; a failing stderr loses these lines only.
        let _ = std::io::stderr().lock().write_all(out);
        out.clear();
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// One call's audit facts. Never secret: no plaintext, no ciphertext.
#[derive(Debug)]
pub struct Record {
    /// `Encrypt`, `Decrypt`, `v1beta1.Encrypt`, `v1beta1.Decrypt`.
    pub rpc: &'static str,
    /// The caller's uid as sent (made printable when written).
    pub uid: String,
    /// The key id involved, if known.
    pub key_id: Option<Arc<str>>,
    /// The failure, if the call failed.
    pub error: Option<String>,
    /// How long the call took.
    pub latency: Duration,
    /// When the call ended.
    pub at: SystemTime,
    /// The cache result of a Decrypt (`hit`, `miss`, ...), or how an Encrypt wrapped
    /// (`local`, `keyvault`).
    pub detail: &'static str,
}

enum Message {
    Line(Record),
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    dropped: Counter,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(r) => r.fmt(f),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// Starts the writer thread. `dropped` counts lines lost to a full queue.
    pub fn start(dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        // Its own OS thread: a stderr that blocks (a full pipe, a stuck log reader) blocks
        // this thread only, never a runtime worker serving calls.
        let writer = move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut out = Vec::with_capacity(BATCH * 256);
            let json = crate::observability::logging::json();
            loop {
                // Drain on a tick rather than on every line: a call's `try_send` then finds
                // no parked receiver to wake, so it costs no cross-thread wake-up.
                std::thread::sleep(TICK);
                loop {
                    let mut closed = false;
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    let full = batch.len() == BATCH;
                    write_batch(&mut batch, &mut out, json);
                    if closed {
                        return;
                    }
                    if !full {
                        break;
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(writer)
        {
            tracing::error!(error = %e, "cannot start the audit writer: audit lines are dropped and counted");
        }
        Self { tx, dropped }
    }

    /// Queues a line; never waits. A full queue drops it and counts it. Nothing is queued
    /// when the `audit` target is disabled at the line's level.
    pub fn log(&self, mut record: Record) {
        bound_uid(&mut record.uid);
        let enabled = if record.error.is_some() {
            tracing::enabled!(target: "audit", tracing::Level::WARN)
        } else {
            tracing::enabled!(target: "audit", tracing::Level::INFO)
        };
        if enabled {
            self.queue(record);
        }
    }

    fn queue(&self, record: Record) {
        if self.tx.try_send(Message::Line(record)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits (at most `timeout`) until every line queued before this call is written.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, self.tx.send(Message::Flush(done))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

/// Appends one line for `r`: JSON (the shape of the JSON log lines: `timestamp`, `level`,
/// the fields, `target`) or text. Strings from the caller are escaped (JSON) or made
/// printable ([`loggable_uid`]).
fn format_line(out: &mut Vec<u8>, r: &Record, json: bool, now: SystemTime) {
    // Milliseconds with three decimals: sub-millisecond calls stay visible, no float noise.
    let latency_ms = crate::observability::logging::millis(r.latency);
    let timestamp = humantime::format_rfc3339_micros(now);
    let uid = loggable_uid(&r.uid);
    let key_id = r.key_id.as_deref().unwrap_or("");
    let (level, outcome) = match r.error {
        None => ("INFO", "ok"),
        Some(_) => ("WARN", "error"),
    };
    if json {
        let error = r.error.as_deref().map(|e| serde_json::json!(e));
        let mut line = serde_json::json!({
            "timestamp": timestamp.to_string(),
            "level": level,
            "rpc": r.rpc,
            "uid": uid,
            "key_id": key_id,
            "outcome": outcome,
            "latency_ms": latency_ms,
            "detail": r.detail,
            "target": "audit",
        });
        if let (Some(error), Some(map)) = (error, line.as_object_mut()) {
            map.insert("error".into(), error);
        }
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
    } else {
        let _ = write!(
            out,
            "{timestamp} {level:>5} audit: rpc={} uid={uid} key_id={key_id} outcome={outcome}",
            r.rpc
        );
        if let Some(error) = &r.error {
            let _ = write!(out, " error={:?}", error);
        }
        let _ = writeln!(out, " latency_ms={latency_ms} detail={}", r.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            rpc: "Decrypt",
            uid: "u".into(),
            key_id: None,
            error: None,
            latency: Duration::from_micros(1234),
            at: SystemTime::now(),
            detail: "hit",
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dropped = Counter::default();
        // A queue with no writer: build the sender by hand so nothing drains it.
        let (tx, _rx) = mpsc::channel::<Message>(2);
        let log = AuditLog {
            tx,
            dropped: dropped.clone(),
        };
        for _ in 0..5 {
            log.queue(record());
        }
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn uids_are_bounded_before_they_are_queued() {
        let mut uid = "é".repeat(10_000);
        bound_uid(&mut uid);
        assert_eq!(uid.chars().count(), 64);
        let mut short = "abc".to_owned();
        bound_uid(&mut short);
        assert_eq!(short, "abc");
    }

    #[test]
    fn lines_are_json_or_text_and_escape_what_the_caller_sent() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut out = Vec::new();
        let mut r = record();
        r.uid = "a\"b\nc".into();
        r.error = Some("Key Vault is \"down\"".into());
        format_line(&mut out, &r, true, now);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["rpc"], "Decrypt");
        assert_eq!(line["uid"], "a\"b?c");
        assert_eq!(line["error"], "Key Vault is \"down\"");
        assert_eq!(line["latency_ms"], 1.234);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "audit");
        assert_eq!(line["timestamp"], "2027-01-15T08:00:00.000000Z");
        out.clear();
        format_line(&mut out, &record(), false, now);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("2027-01-15T08:00:00.000000Z  INFO audit: rpc=Decrypt uid=u"),
            "{text}"
        );
        assert!(text.ends_with("latency_ms=1.234 detail=hit\n"), "{text}");
    }

    #[tokio::test]
    async fn flush_returns_after_the_queued_lines() {
        let log = AuditLog::start(Counter::default());
        for _ in 0..100 {
            log.queue(record());
        }
        tokio::time::timeout(Duration::from_secs(5), log.flush(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(log.dropped.get(), 0);
    }
}
