//! Metrics, health endpoints and logging.

pub mod go_metrics;
pub mod http;
pub mod logging;
pub mod metrics;
