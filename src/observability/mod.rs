//! Metrics, health endpoints and logging.

pub mod http;
pub mod logging;
pub mod metrics;
