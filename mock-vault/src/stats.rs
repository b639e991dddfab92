//! Request counters (per vault, operation, identity and status) and a bounded request log.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// Entries kept in the request log.
pub const LOG_CAPACITY: usize = 10_000;

/// One logged request. Never holds bodies, tokens or secret values.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogEntry {
    /// Sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// Vault name, for vault requests.
    pub vault: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Operation name, e.g. `keys.decrypt`.
    pub operation: String,
    /// Identity name, when authenticated.
    pub identity: Option<String>,
    /// Status answered (0 when the connection was dropped).
    pub status: u16,
    /// `x-ms-request-id` answered.
    pub request_id: String,
    /// Time spent, in milliseconds.
    pub latency_ms: u64,
    /// Fault rule ids that fired.
    pub faults: Vec<u64>,
    /// The client's `User-Agent` (its first 256 characters), so tests see who called.
    pub user_agent: Option<String>,
    /// The request's `Host` (token-proxy requests only: the proxy sees Entra's host there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The connection's TLS server name (token-proxy requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl LogEntry {
    /// A log entry for a request just received: now, its method and path, its
    /// `User-Agent` (first 256 characters); the rest filled in as it is served.
    pub fn begin(
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        request_id: String,
    ) -> Self {
        Self {
            seq: 0,
            time_ms: i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX),
            vault: None,
            method: method.to_string(),
            path: path.to_owned(),
            operation: String::new(),
            identity: None,
            status: 0,
            request_id,
            latency_ms: 0,
            faults: Vec::new(),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
            host: None,
            server_name: None,
        }
    }
}

/// A counter key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CounterKey {
    /// Vault name (`-` for Entra).
    pub vault: String,
    /// Operation.
    pub operation: String,
    /// Identity (`-` when unauthenticated).
    pub identity: String,
    /// Status.
    pub status: u16,
}

/// Counters and log.
#[derive(Debug, Default)]
pub struct Stats {
    seq: u64,
    counters: BTreeMap<CounterKey, u64>,
    log: VecDeque<LogEntry>,
}

/// A snapshot for the control API and tests.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    /// All requests counted.
    pub total: u64,
    /// Totals by operation (every status).
    pub by_operation: BTreeMap<String, u64>,
    /// Totals by identity.
    pub by_identity: BTreeMap<String, u64>,
    /// Totals by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Every counter.
    pub counters: Vec<(CounterKey, u64)>,
}

impl Snapshot {
    /// Requests of an operation (exact name), any status.
    pub fn operation(&self, op: &str) -> u64 {
        self.by_operation.get(op).copied().unwrap_or(0)
    }

    /// Requests of an operation that reached the handler with an identity (not the
    /// unauthenticated challenge round trip).
    pub fn authenticated(&self, op: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.operation == op && k.identity != "-")
            .map(|(_, n)| n)
            .sum()
    }
}

impl Stats {
    /// Records one request.
    pub fn record(&mut self, mut entry: LogEntry) {
        self.seq += 1;
        entry.seq = self.seq;
        let key = CounterKey {
            vault: entry.vault.clone().unwrap_or_else(|| "-".into()),
            operation: entry.operation.clone(),
            identity: entry.identity.clone().unwrap_or_else(|| "-".into()),
            status: entry.status,
        };
        *self.counters.entry(key).or_default() += 1;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    /// Aggregated counters.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            total: 0,
            by_operation: BTreeMap::new(),
            by_identity: BTreeMap::new(),
            by_status: BTreeMap::new(),
            counters: self.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        for (k, n) in &self.counters {
            s.total += n;
            *s.by_operation.entry(k.operation.clone()).or_default() += n;
            *s.by_identity.entry(k.identity.clone()).or_default() += n;
            *s.by_status.entry(k.status).or_default() += n;
        }
        s
    }

    /// The last `limit` log entries, oldest first.
    pub fn log(&self, limit: usize) -> Vec<LogEntry> {
        let skip = self.log.len().saturating_sub(limit);
        self.log.iter().skip(skip).cloned().collect()
    }

    /// Forgets counters and log.
    pub fn reset(&mut self) {
        self.counters.clear();
        self.log.clear();
    }
}
