//! The HTTP side of a server: liveness and readiness endpoints and Prometheus `/metrics`.
//! Liveness never calls Key Vault.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// What the health endpoints ask.
pub trait Health: Send + Sync + 'static {
    /// The process is serving (never calls Key Vault).
    fn live(&self) -> Result<(), String>;
    /// The server can do its job now.
    fn ready(&self) -> Result<(), String>;
}

#[derive(Clone)]
struct AppState {
    health: Arc<dyn Health>,
    registry: Option<Arc<Registry>>,
}

async fn live(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let body = s
        .registry
        .as_ref()
        .map(super::metrics::encode)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Routes for the health listener: `live_path`, `ready_path`, and `/metrics` when
/// `registry` is given.
pub fn router(
    health: Arc<dyn Health>,
    live_path: &str,
    ready_path: &str,
    registry: Option<Arc<Registry>>,
) -> Router {
    let with_metrics = registry.is_some();
    let state = AppState { health, registry };
    let mut r = Router::new()
        .route(live_path, get(live))
        .route(ready_path, get(ready));
    if with_metrics {
        r = r.route("/metrics", get(metrics));
    }
    r.with_state(state)
}

/// Metrics-only routes.
pub fn metrics_router(health: Arc<dyn Health>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(AppState {
            health,
            registry: Some(registry),
        })
}

/// Binds `addr` and serves `router` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "health/metrics server failed");
        }
    });
    Ok((local, task))
}
