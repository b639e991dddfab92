//! [`ProbeStep`] and [`ProbeReport`]: the outcome of a probe, rendered as a table for the
//! terminal or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::ProbeOptions;

/// One step of the probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeStep {
    /// `connect`, `status`, `encrypt`, `decrypt`, `envelope-write`, `envelope-read`; with a
    /// store `connect`, `status`, `encrypt`, `stored-read`, `write` (or `options` when the
    /// options are invalid).
    pub name: String,
    /// Whether the step passed every check.
    pub ok: bool,
    /// Whether the step was not run because an earlier one failed.
    pub skipped: bool,
    /// Wall time of the step in milliseconds (the RPC for RPC steps).
    pub latency_ms: f64,
    /// What was seen, one fact per line; never secret bytes.
    pub detail: String,
    /// The checks that failed, one sentence each.
    pub problems: Vec<String>,
}

impl ProbeStep {
    pub(super) fn new(name: &str, latency_ms: f64, detail: String, problems: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            ok: problems.is_empty(),
            skipped: false,
            latency_ms,
            detail,
            problems,
        }
    }

    pub(super) fn skipped(name: &str, reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            ok: false,
            skipped: true,
            latency_ms: 0.0,
            detail: format!("skipped: {reason}"),
            problems: Vec::new(),
        }
    }
}

/// The outcome of a probe: a table for the terminal ([`ProbeReport::to_table`]) or JSON
/// (serde, with a top-level `ok`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The socket probed, when known.
    pub socket: Option<String>,
    /// The provider name used for the etcd prefix.
    pub provider_name: String,
    /// The per-call timeout.
    pub timeout: Duration,
    /// The API version from Status, if Status answered.
    pub version: Option<String>,
    /// The key id from Status, if Status answered.
    pub key_id: Option<String>,
    /// The steps, in order.
    pub steps: Vec<ProbeStep>,
}

impl ProbeReport {
    pub(super) fn new(socket: Option<String>, options: &ProbeOptions) -> Self {
        Self {
            socket,
            provider_name: options.provider_name.clone(),
            timeout: options.timeout,
            version: None,
            key_id: None,
            steps: Vec::new(),
        }
    }

    /// Whether every step ran and passed.
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// A human-readable table for the terminal.
    pub fn to_table(&self) -> String {
        const NAME_W: usize = 15;
        const RESULT_W: usize = 6;
        const LATENCY_W: usize = 11;
        let indent = " ".repeat(NAME_W + RESULT_W + LATENCY_W + 3);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "KMS v2 probe of {} (provider {}, call timeout {})",
            self.socket.as_deref().unwrap_or("<channel>"),
            self.provider_name,
            humantime::format_duration(self.timeout)
        );
        let _ = writeln!(
            out,
            "{:<NAME_W$} {:<RESULT_W$} {:>LATENCY_W$} DETAIL",
            "STEP", "RESULT", "LATENCY"
        );
        for step in &self.steps {
            let result = if step.skipped {
                "skip"
            } else if step.ok {
                "ok"
            } else {
                "FAIL"
            };
            let latency = if step.skipped {
                "-".to_owned()
            } else {
                format!("{:.1} ms", step.latency_ms)
            };
            let mut lines = step
                .detail
                .lines()
                .map(str::to_owned)
                .chain(step.problems.iter().map(|p| format!("error: {p}")));
            let first = lines.next().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<NAME_W$} {:<RESULT_W$} {:>LATENCY_W$} {first}",
                step.name, result, latency
            );
            for line in lines {
                let _ = writeln!(out, "{indent}{line}");
            }
        }
        let failed = self.steps.iter().filter(|s| !s.ok).count();
        if self.ok() {
            let _ = writeln!(out, "result: OK ({} steps passed)", self.steps.len());
        } else {
            let _ = writeln!(
                out,
                "result: FAILED ({failed} of {} steps did not pass)",
                self.steps.len()
            );
        }
        out
    }

    pub(super) fn push(&mut self, step: ProbeStep) {
        self.steps.push(step);
    }
}

impl Serialize for ProbeReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            ok: bool,
            socket: Option<&'a str>,
            provider_name: &'a str,
            timeout_ms: u64,
            version: Option<&'a str>,
            key_id: Option<&'a str>,
            steps: &'a [ProbeStep],
        }
        View {
            ok: self.ok(),
            socket: self.socket.as_deref(),
            provider_name: &self.provider_name,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            version: self.version.as_deref(),
            key_id: self.key_id.as_deref(),
            steps: &self.steps,
        }
        .serialize(serializer)
    }
}
