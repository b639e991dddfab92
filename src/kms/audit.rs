//! Audit lines, written off the request path.
//!
//! Every KMS call produces one line (target `audit`): the RPC, the caller's uid, the key id,
//! the outcome, the latency and the cache result. A call only moves a small record into a
//! bounded queue and never waits: formatting and writing happen on one writer task. When
//! the queue is full (the log sink is slower than the calls), the record is dropped and
//! counted in `akv_bridge_kms_audit_lines_dropped`, so a slow or blocked stderr can never
//! slow down or stall kube-apiserver's calls.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use crate::kms::envelope::loggable_uid;

/// Records the queue holds before it drops.
pub const QUEUE: usize = 8192;

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
    /// Starts the writer task (on the current Tokio runtime). `dropped` counts lines lost
    /// to a full queue.
    pub fn start(dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Line(record) => write(&record),
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { tx, dropped }
    }

    /// Queues a line; never waits. A full queue drops it and counts it.
    pub fn log(&self, record: Record) {
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

fn write(r: &Record) {
    // Milliseconds with three decimals: sub-millisecond calls stay visible, no float noise.
    let latency_ms = (r.latency.as_secs_f64() * 1e6).round() / 1e3;
    let uid = loggable_uid(&r.uid);
    let key_id = r.key_id.as_deref().unwrap_or("");
    match &r.error {
        None => tracing::info!(
            target: "audit", rpc = r.rpc, uid = %uid, key_id, outcome = "ok", latency_ms, detail = r.detail
        ),
        Some(error) => tracing::warn!(
            target: "audit", rpc = r.rpc, uid = %uid, key_id, outcome = "error", error = %error, latency_ms, detail = r.detail
        ),
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
            log.log(record());
        }
        assert_eq!(dropped.get(), 3);
    }

    #[tokio::test]
    async fn flush_returns_after_the_queued_lines() {
        let log = AuditLog::start(Counter::default());
        for _ in 0..100 {
            log.log(record());
        }
        tokio::time::timeout(Duration::from_secs(5), log.flush(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(log.dropped.get(), 0);
    }
}
