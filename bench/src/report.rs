//! Figures: latency percentiles, one row per scenario run, the targets with pass/miss, and
//! the table and JSON document they are printed as. Pure: no I/O.

use serde::Serialize;

use super::procs::{CounterDelta, Measure};

/// Latencies of one run, in microseconds, sorted.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    sorted_us: Vec<u64>,
}

impl Latencies {
    /// Sorts `us`.
    pub fn new(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        Self { sorted_us: us }
    }

    /// Adds another run's latencies.
    pub fn merge(&mut self, other: Latencies) {
        self.sorted_us.extend(other.sorted_us);
        self.sorted_us.sort_unstable();
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.sorted_us.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted_us.is_empty()
    }

    /// The `p` quantile (0..=1) by nearest rank, in milliseconds; 0 when empty.
    pub fn ms(&self, p: f64) -> f64 {
        let n = self.sorted_us.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.sorted_us
            .get(rank - 1)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    }
}

/// One scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `kms`, `floor` (the bare tonic server), `kms-cold-start`, `kms-idle`, `csi-mount`,
    /// `csi-scale`.
    pub group: String,
    /// What was measured.
    pub scenario: String,
    /// Concurrent clients, each on its own connection.
    pub concurrency: usize,
    /// Latency mock-vault added to every vault request.
    pub kv_latency_ms: u64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub seconds: f64,
    /// Successful operations per second of wall time.
    pub ops_per_sec: f64,
    /// Latency percentiles of successful operations.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Key Vault requests during the run (challenge round trips included, Entra not).
    pub kv_calls: u64,
    /// `kv_calls / ops`.
    pub kv_calls_per_op: f64,
    /// Every counter that moved.
    pub kv: CounterDelta,
    /// Largest `VmRSS` of the server sampled during the run.
    pub server_rss_peak_mib: f64,
    /// CPU time the server used during the run (ms; `/proc` counts in 10 ms ticks).
    pub server_cpu_ms: f64,
    /// CPU time mock-vault used during the run (ms).
    pub mock_cpu_ms: f64,
    /// CPU time the bench's clients used during the run (ms).
    pub client_cpu_ms: f64,
    /// Server CPU per successful operation (µs).
    pub server_cpu_us_per_op: f64,
    /// mock-vault CPU per successful operation (µs).
    pub mock_cpu_us_per_op: f64,
    /// Client CPU per successful operation (µs).
    pub client_cpu_us_per_op: f64,
    /// Median time mock-vault took per authenticated vault request (its own log; whole
    /// ms, injected latency included), when the run made any.
    pub kv_side_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub kv_side_p99_ms: Option<f64>,
    /// Ids of the targets this row is judged by.
    pub targets: Vec<String>,
    /// Anything else worth knowing.
    pub note: String,
}

impl Row {
    /// A row from a run's figures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        group: &str,
        scenario: impl Into<String>,
        concurrency: usize,
        kv_latency_ms: u64,
        latencies: &Latencies,
        errors: u64,
        first_error: Option<String>,
        seconds: f64,
        m: Measure,
    ) -> Self {
        let ops = latencies.len() as u64;
        let per_op = |total: f64| {
            if ops > 0 { total / ops as f64 } else { 0.0 }
        };
        let Measure {
            kv,
            rss_kib,
            server_cpu_ms,
            mock_cpu_ms,
            client_cpu_ms,
            kv_side_ms,
        } = m;
        let kv_side = Latencies::new(kv_side_ms.iter().map(|ms| ms * 1000).collect());
        let side = |p: f64| (!kv_side.is_empty()).then(|| kv_side.ms(p));
        Self {
            group: group.to_owned(),
            scenario: scenario.into(),
            concurrency,
            kv_latency_ms,
            ops,
            errors,
            first_error,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            p50_ms: latencies.ms(0.50),
            p90_ms: latencies.ms(0.90),
            p99_ms: latencies.ms(0.99),
            max_ms: latencies.ms(1.0),
            kv_calls: kv.kv_requests,
            kv_calls_per_op: per_op(kv.kv_requests as f64),
            kv,
            server_rss_peak_mib: mib(rss_kib),
            server_cpu_ms,
            mock_cpu_ms,
            client_cpu_ms,
            server_cpu_us_per_op: per_op(server_cpu_ms * 1000.0),
            mock_cpu_us_per_op: per_op(mock_cpu_ms * 1000.0),
            client_cpu_us_per_op: per_op(client_cpu_ms * 1000.0),
            kv_side_p50_ms: side(0.5),
            kv_side_p99_ms: side(0.99),
            targets: Vec::new(),
            note: String::new(),
        }
    }
}

/// KiB → MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A target from issue 7, judged on this run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Short id (`T1`…), referenced from rows.
    pub id: String,
    /// The target as the issue states it.
    pub target: String,
    /// The figures measured, with the limit.
    pub figure: String,
    /// Whether it held.
    pub pass: bool,
    /// For a miss: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A ratio printed for reference beside the targets, judged by none.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// What is compared with what.
    pub what: String,
    /// The ratio (`None` when the divisor was zero).
    pub ratio: Option<f64>,
    /// The figures it comes from.
    pub figure: String,
}

/// A design figure of the Go plugins, for comparison (not measured here).
#[derive(Debug, Clone, Serialize)]
pub struct DesignFigure {
    /// The workload.
    pub workload: String,
    /// akv-bridge, measured in this run.
    pub akv_bridge_measured: String,
    /// The Go plugin's design, from its code paths (not measured).
    pub go_design: String,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// `release` or `debug` build of this executable.
    pub profile: String,
}

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `akv-bridge-bench`.
    pub tool: String,
    /// akv-bridge version and commit.
    pub version: String,
    /// The command line that produced it.
    pub command: String,
    /// Where.
    pub machine: Machine,
    /// The settings of the run (durations, sizes, scaling).
    pub settings: serde_json::Value,
    /// One row per scenario run.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Ratios for reference, with no target (the plugin against the floor).
    pub references: Vec<Reference>,
    /// Peak `VmHWM` of each server process kind over the whole run, in MiB.
    pub peak_rss_mib: serde_json::Value,
    /// The Go plugins' design figures beside ours.
    pub design_comparison: Vec<DesignFigure>,
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        group_thousands(r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

fn fmt_per_op(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// `12345` → `12,345`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The verdict shown in a row's target column.
    fn verdict(&self, row: &Row) -> String {
        let judged: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| row.targets.contains(&t.id))
            .collect();
        if judged.is_empty() {
            return String::new();
        }
        let ids: Vec<&str> = judged.iter().map(|t| t.id.as_str()).collect();
        let pass = judged.iter().all(|t| t.pass);
        format!("{} {}", ids.join(","), if pass { "pass" } else { "MISS" })
    }

    /// The rows as a Markdown table (readable in a terminal and pasteable into the README).
    pub fn table(&self) -> String {
        let header = [
            "scenario",
            "clients",
            "KV ms",
            "ops",
            "err",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "KV calls/op",
            "KV-side p50 ms",
            "server CPU µs/op",
            "RSS MiB",
            "target",
            "note",
        ];
        let mut lines: Vec<Vec<String>> = Vec::new();
        for r in &self.rows {
            lines.push(vec![
                r.scenario.clone(),
                r.concurrency.to_string(),
                r.kv_latency_ms.to_string(),
                group_thousands(r.ops),
                r.errors.to_string(),
                fmt_rate(r.ops_per_sec),
                fmt_ms(r.p50_ms),
                fmt_ms(r.p90_ms),
                fmt_ms(r.p99_ms),
                fmt_per_op(r.kv_calls_per_op),
                // mock-vault logs whole milliseconds.
                r.kv_side_p50_ms
                    .map(|ms| format!("{ms:.0}"))
                    .unwrap_or_default(),
                // Fewer than 10 ticks of 10 ms: too coarse to show.
                if r.server_cpu_ms >= 100.0 {
                    format!("{:.0}", r.server_cpu_us_per_op)
                } else {
                    String::new()
                },
                format!("{:.1}", r.server_rss_peak_mib),
                self.verdict(r),
                r.note.clone(),
            ]);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for l in &lines {
            for (w, cell) in widths.iter_mut().zip(l) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let numeric = |i: usize| (1..=12).contains(&i);
        let render = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                if numeric(i) {
                    s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                }
            }
            s
        };
        let mut out = String::new();
        out.push_str(&render(&header.map(str::to_owned)));
        out.push('\n');
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if numeric(i) {
                out.push_str(&format!("{}:|", "-".repeat(w + 1)));
            } else {
                out.push_str(&format!("{}|", "-".repeat(w + 2)));
            }
        }
        out.push('\n');
        for l in &lines {
            out.push_str(&render(l));
            out.push('\n');
        }
        out
    }

    /// The targets, one line each, with the reason for every miss.
    pub fn targets_text(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            out.push_str(&format!(
                "- **{}** {}: {} — {}\n",
                t.id,
                if t.pass { "pass" } else { "MISS" },
                t.target,
                t.figure
            ));
            if let Some(why) = &t.why {
                out.push_str(&format!("  - why: {why}\n"));
            }
        }
        out
    }

    /// The reference ratios, one line each.
    pub fn references_text(&self) -> String {
        self.references
            .iter()
            .map(|r| format!("- {}: {}\n", r.what, r.figure))
            .collect()
    }

    /// The design comparison as a table.
    pub fn design_text(&self) -> String {
        let mut out = String::from(
            "| workload | akv-bridge (measured here) | Go plugin (design figure, not measured) |\n|---|---|---|\n",
        );
        for d in &self.design_comparison {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                d.workload, d.akv_bridge_measured, d.go_design
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(|v| v * 1000).collect());
        assert!((l.ms(0.5) - 50.0).abs() < f64::EPSILON);
        assert!((l.ms(0.99) - 99.0).abs() < f64::EPSILON);
        assert!((l.ms(1.0) - 100.0).abs() < f64::EPSILON);
        assert!((Latencies::new(vec![7000]).ms(0.9) - 7.0).abs() < f64::EPSILON);
        assert!(Latencies::default().ms(0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }
}
