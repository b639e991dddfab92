//! Metrics, health endpoints and logging.

pub(crate) mod go_metrics;
pub(crate) mod http;
pub mod logging;
pub(crate) mod metrics;
