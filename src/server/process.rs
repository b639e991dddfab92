//! The process shell both servers run in: bind the socket, serve health, readiness and
//! metrics, serve gRPC until a signal, drain, and clean up. What differs between the KMS
//! plugin and the CSI provider is the [`Served`] they bring.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::UnixListener;
use tonic::transport::Channel;

use super::liveness::Liveness;
use crate::observability::http as health_http;
use crate::socket::{self, SocketAddress, SocketError};

/// Where a server process listens and how it stops.
#[derive(Debug, Clone)]
pub struct Shell {
    /// The gRPC socket.
    pub address: SocketAddress,
    /// Its permissions.
    pub socket_mode: u32,
    /// The health endpoints' address.
    pub healthz_addr: SocketAddr,
    /// Liveness path.
    pub healthz_path: String,
    /// Readiness path.
    pub readyz_path: String,
    /// The Prometheus endpoint's address.
    pub metrics_addr: SocketAddr,
    /// Timeout of the liveness self-check.
    pub healthz_timeout: Duration,
    /// How long in-flight calls get after the signal.
    pub shutdown_grace: Duration,
    /// Put the [`crate::authority`] layer in front of every connection.
    pub rewrite_authority: bool,
}

/// Why a server process could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The health or metrics listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// What a server brings to the shell.
pub trait Served: Send + Sync + 'static {
    /// The server's name in log lines (`KMS plugin`, `CSI provider`).
    const NAME: &'static str;
    /// Names the calls in flight in log lines (`calls`, `mounts`).
    const IN_FLIGHT: &'static str;
    /// The call the liveness self-check makes, e.g. `Status`.
    const LIVENESS_CALL: &'static str;
    /// Makes that call on `channel`; whether the server answered it.
    fn liveness_call(channel: Channel) -> impl Future<Output = bool> + Send;
    /// Readiness beyond liveness.
    fn ready(&self) -> Result<(), String>;
    /// Serves gRPC on `listener` until `stop` resolves, then drains.
    fn serve(
        self: Arc<Self>,
        listener: UnixListener,
        rewrite_authority: bool,
        stop: StopSignal,
    ) -> impl Future<Output = ()> + Send;
}

/// Liveness: a new client's call over the socket. Readiness: that and the server's own.
struct ShellHealth<S> {
    served: Arc<S>,
    liveness: Arc<Liveness>,
}

impl<S: Served> health_http::Health for ShellHealth<S> {
    fn live(&self) -> Result<(), String> {
        self.liveness.check()
    }

    fn ready(&self) -> Result<(), String> {
        self.live()?;
        self.served.ready()
    }
}

/// Runs `served` in the shell until `shutdown` resolves: binds the socket (the only step
/// that can fail besides the HTTP listeners), serves, drains within the grace, stops the
/// listeners and the self-check, and removes the socket.
pub async fn run<S: Served>(
    shell: Shell,
    served: Arc<S>,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ShellError> {
    let bound = socket::bind(&shell.address, shell.socket_mode)?;
    let (listener, socket_guard) = bound.into_parts();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let (liveness, checker) = Liveness::spawn(
        &shell.address,
        shell.healthz_timeout,
        S::LIVENESS_CALL,
        S::liveness_call,
        stop_rx.clone(),
    );
    let health: Arc<dyn health_http::Health> = Arc::new(ShellHealth {
        served: Arc::clone(&served),
        liveness,
    });
    let listeners = async {
        let router = health_http::router(
            Arc::clone(&health),
            &shell.healthz_path,
            &shell.readyz_path,
            None,
        );
        let (health_addr, health_task) =
            health_http::serve(shell.healthz_addr, router, stopped(stop_rx.clone()))
                .await
                .map_err(|source| ShellError::Listen {
                    addr: shell.healthz_addr,
                    source,
                })?;
        let metrics_router = health_http::metrics_router(health, registry);
        let (metrics_addr, metrics_task) =
            health_http::serve(shell.metrics_addr, metrics_router, stopped(stop_rx.clone()))
                .await
                .map_err(|source| ShellError::Listen {
                    addr: shell.metrics_addr,
                    source,
                })?;
        Ok::<_, ShellError>((health_addr, health_task, metrics_addr, metrics_task))
    };
    let (health_addr, health_task, metrics_addr, metrics_task) = match listeners.await {
        Ok(tasks) => tasks,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = checker.await;
            drop(socket_guard);
            return Err(e);
        }
    };
    tracing::info!(
        socket = %shell.address,
        health = %health_addr,
        metrics = %metrics_addr,
        "{} serving",
        S::NAME
    );
    let rewrite = shell.rewrite_authority;
    let result: Result<(), std::convert::Infallible> = serve_and_drain(
        |stop| async move {
            served.serve(listener, rewrite, stop).await;
            Ok(())
        },
        shutdown,
        shell.shutdown_grace,
        S::IN_FLIGHT,
    )
    .await;
    let Ok(()) = result;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(checker, health_task, metrics_task);
    drop(socket_guard);
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// A future that resolves once a server must stop accepting calls.
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs a server until it ends or `shutdown` resolves; then it stops accepting and its
/// in-flight calls get at most `grace` to finish. `serve` receives the signal to stop
/// accepting; `in_flight` names the calls (`calls`, `mounts`) in the log lines.
pub async fn serve_and_drain<F, E>(
    serve: impl FnOnce(StopSignal) -> F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
    in_flight: &'static str,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight {in_flight}");
        let _ = signal_tx.send(true);
    });
    let signalled = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let served = serve(Box::pin(signalled(signal_rx.clone())));
    tokio::pin!(served);
    tokio::select! {
        r = &mut served => r,
        () = async {
            signalled(signal_rx).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "drain timed out; stopping with {in_flight} in flight");
            Ok(())
        }
    }
}
