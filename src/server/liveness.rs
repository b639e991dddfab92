//! Liveness from a real call over the server's own socket, on a new connection each time,
//! as a new client would make it (the Go plugin's health check does the same). A server
//! whose socket cannot serve a new client is not live, whatever its HTTP port says.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic::transport::Channel;

use crate::socket::SocketAddress;

/// How often the check runs.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The latest self-check's outcome.
#[derive(Debug)]
pub struct Liveness {
    alive: AtomicBool,
    what: &'static str,
}

impl Liveness {
    /// Starts checking `address` with `call` (which answers whether the call succeeded)
    /// now and every [`PERIOD`], each check within `timeout`, until `stop` turns true.
    /// `what` names the call in the failure message, e.g. `Version`.
    pub fn spawn<F, Fut>(
        address: &SocketAddress,
        timeout: Duration,
        what: &'static str,
        call: F,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>)
    where
        F: Fn(Channel) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let liveness = Arc::new(Self {
            alive: AtomicBool::new(true),
            what,
        });
        let address = address.clone();
        let state = Arc::clone(&liveness);
        let task = tokio::spawn(async move {
            loop {
                let check = async {
                    match crate::socket::connect(&address, timeout).await {
                        Ok(channel) => call(channel).await,
                        Err(_) => false,
                    }
                };
                let ok = tokio::select! {
                    _ = stop.wait_for(|v| *v) => break,
                    r = tokio::time::timeout(timeout, check) => matches!(r, Ok(true)),
                };
                if !ok {
                    tracing::warn!(
                        call = what,
                        "liveness self-check: a new client's {what} over the socket failed"
                    );
                }
                state.alive.store(ok, Ordering::Relaxed);
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => break,
                    () = tokio::time::sleep(PERIOD) => {}
                }
            }
        });
        (liveness, task)
    }

    /// Ok while the latest check succeeded.
    pub fn check(&self) -> Result<(), String> {
        if self.alive.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(format!(
                "a new client's {} over the socket failed: the server cannot serve new clients",
                self.what
            ))
        }
    }
}
