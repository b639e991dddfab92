//! `tracing` set-up: text or JSON lines on stderr, verbosity from `-v` (klog style) or
//! `RUST_LOG`.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON (for writers that format their own lines, such as the KMS
/// audit writer, so every line on stderr has one shape).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `verbosity` follows klog: 0-1 info, 2-4 debug, 5+ trace.
pub fn init(json: bool, verbosity: u8) {
    JSON.store(json, Ordering::Relaxed);
    let level = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
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
    fn latencies_print_rounded_to_the_microsecond() {
        assert_eq!(millis(Duration::from_nanos(540_827)).to_string(), "0.541");
        assert_eq!(millis(Duration::from_micros(1234)).to_string(), "1.234");
        assert_eq!(millis(Duration::from_secs(2)).to_string(), "2000");
    }
}
