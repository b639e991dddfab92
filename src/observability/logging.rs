//! `tracing` set-up: text or JSON lines on stderr, verbosity from `-v` (on the Go
//! original's scale, [`Scale`]) or `RUST_LOG`.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON (for writers that format their own lines, such as the KMS
/// audit writer, so every line on stderr has one shape).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// How a Go original reads `-v`, which its manifests pass unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Azure/kubernetes-kms (`monis.app/mlog`): 0 warnings and errors, 2 info, 4 debug,
    /// 6 trace. Our info lines (start-up, serving, and one audit line per request) are what
    /// the Go plugin prints whatever `-v` is (`mlog.Always`) plus the audit trail, so they
    /// stay on below 2 as well: 0-3 info, 4-5 debug, 6+ trace.
    Mlog,
    /// The provider-azure (klog): 0-1 info, 2-4 debug (its V(2) request details), 5+ trace
    /// (its V(5) per-call lines).
    Klog,
}

/// The level `-v` selects on `scale`.
pub fn level(scale: Scale, verbosity: u8) -> &'static str {
    match (scale, verbosity) {
        (Scale::Mlog, 0..=3) | (Scale::Klog, 0 | 1) => "info",
        (Scale::Mlog, 4 | 5) | (Scale::Klog, 2..=4) => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber at the level `-v` (`verbosity`) selects on `scale`.
pub fn init(json: bool, scale: Scale, verbosity: u8) {
    JSON.store(json, Ordering::Relaxed);
    let level = level(scale, verbosity);
    // Dependencies stay at warn unless RUST_LOG says otherwise.
    let default = format!("warn,akv_bridge={level},audit={level}");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: kubelet's log files and journald keep plain
    // text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already installed (tests, dev) is fine.
    let _ = result;
}

/// A latency for a log line, in milliseconds rounded to the microsecond (`0.541`, not
/// `0.5408270000000001`).
pub fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_program_reads_v_on_its_go_originals_scale() {
        let kms: Vec<_> = (0..=7).map(|v| level(Scale::Mlog, v)).collect();
        assert_eq!(
            kms,
            [
                "info", "info", "info", "info", "debug", "debug", "trace", "trace"
            ]
        );
        let csi: Vec<_> = (0..=6).map(|v| level(Scale::Klog, v)).collect();
        assert_eq!(
            csi,
            ["info", "info", "debug", "debug", "debug", "trace", "trace"]
        );
        assert_eq!(level(Scale::Mlog, u8::MAX), "trace");
    }

    #[test]
    fn latencies_print_rounded_to_the_microsecond() {
        assert_eq!(millis(Duration::from_nanos(540_827)).to_string(), "0.541");
        assert_eq!(millis(Duration::from_micros(1234)).to_string(), "1.234");
        assert_eq!(millis(Duration::from_secs(2)).to_string(), "2000");
    }
}
