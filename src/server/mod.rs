//! The gRPC server loop both servers run on their Unix socket: hyper's HTTP/2 server under
//! tonic's routes, with the connection and memory policy a local socket needs when any
//! local client may be hostile, buggy or leaking.
//!
//! # Connections
//!
//! Every connection is accepted at once; none waits in the listen backlog for a slot. At
//! most [`Limits::max_connections`] are served; when a new one arrives at the cap, one is
//! closed to make room, in this order:
//! 1. one that has never sent a request (half-open, zero-byte, slow preface), oldest first:
//!    closed at once;
//! 2. one with no call in flight, least recently active first: sent GOAWAY, so a client
//!    that was about to use it retries on a new connection, and closed at the latest
//!    [`Limits::close_grace`] later;
//! 3. one whose calls in flight are all still receiving their request message (a stalled
//!    upload), least recently active first: closed at once.
//!
//! Only connections busy with complete requests are never closed for a newcomer; if every
//! connection is such, the newcomer is closed at once (counted, logged), never left hanging.
//! A connection must send its first request within [`Limits::first_request_timeout`], and
//! one idle (no call in flight) for [`Limits::idle_timeout`] is sent GOAWAY. Neither
//! depends on the client answering pings: an idle client that answers every ping is still
//! idle.
//!
//! # Calls
//!
//! A call's request message must arrive in full within [`Limits::message_timeout`], and the
//! call must finish within its `grpc-timeout` or [`Limits::call_timeout`], whichever is
//! sooner. Every call is charged to the server's in-flight byte [`budget`].

pub mod budget;
pub mod liveness;
pub mod process;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::authority::AuthorityRewrite;
use crate::observability::metrics::ConnectionMetrics;
use budget::{Budget, BudgetedBody, Charge, ChargedBody};

/// The numbers of the policy. See the module documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a new connection has to send its first request.
    pub first_request_timeout: Duration,
    /// A connection with no call in flight for this long is sent GOAWAY.
    pub idle_timeout: Duration,
    /// How long a connection sent GOAWAY for idleness or to make room may take to close.
    pub close_grace: Duration,
    /// The services' request message limit (tonic refuses larger ones).
    pub max_message: usize,
    /// Time a call's request message has to arrive in full.
    pub message_timeout: Duration,
    /// Longest a call may run.
    pub call_timeout: Duration,
    /// The calls pool of the [`budget`]: every call in flight holds its allowance and its
    /// headers' size here.
    pub call_budget: usize,
    /// Prepaid room for each call's request message, charged to the calls pool.
    pub call_allowance: usize,
    /// The bytes pool of the [`budget`]: request bytes beyond the allowances, and
    /// responses, across all connections and streams.
    pub byte_budget: usize,
    /// Concurrent streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// HTTP/2 initial stream window.
    pub stream_window: u32,
    /// HTTP/2 initial connection window.
    pub connection_window: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list: u32,
}

impl Limits {
    /// Worst-case bytes that request data can hold: both pools, one held frame per call the
    /// calls pool admits, and what each connection may have sent into its window and not
    /// yet been read.
    pub const fn request_memory_bound(&self) -> usize {
        self.call_budget
            + (self.call_budget / self.call_allowance) * budget::MAX_FRAME
            + self.byte_budget
            + self.max_connections * self.connection_window as usize
    }
}

/// How a connection is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Command {
    Run = 0,
    /// GOAWAY; closed by HTTP/2 once its calls are done, or by us once it has been idle
    /// for `close_grace`.
    Drain = 1,
    /// As `Drain`, for the server's shutdown.
    Shutdown = 2,
    /// Closed at once.
    Abort = 3,
}

/// What the server knows of one connection.
#[derive(Debug)]
struct ConnState {
    id: u64,
    accepted: Instant,
    in_flight: AtomicUsize,
    receiving: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds since the server's epoch of the last call start or end.
    last_active: AtomicU64,
    command: AtomicU8,
    wake: Notify,
    /// Cancelled when the connection is gone: its calls stop at once.
    gone: tokio_util::sync::CancellationToken,
}

impl ConnState {
    fn command(&self) -> Command {
        match self.command.load(Ordering::Acquire) {
            1 => Command::Drain,
            2 => Command::Shutdown,
            3 => Command::Abort,
            _ => Command::Run,
        }
    }

    /// Raises the command (never lowers it: an abort stays an abort).
    fn order(&self, command: Command) {
        self.command.fetch_max(command as u8, Ordering::AcqRel);
        if command == Command::Abort {
            self.gone.cancel();
        }
        self.wake.notify_one();
    }
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: Vec<Arc<ConnState>>,
    closing: VecDeque<Arc<ConnState>>,
}

struct Shared {
    limits: Limits,
    budget: Arc<Budget>,
    metrics: ConnectionMetrics,
    table: Mutex<Table>,
    emptied: Notify,
    epoch: Instant,
    last_refusal_log: AtomicU64,
    admissions_waiting: AtomicUsize,
    rewrite_authority: bool,
}

/// How long a call waits for room in the calls pool once stalled uploads were closed.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);
/// Calls that may wait for room at once; more are refused at once.
const MAX_ADMISSIONS_WAITING: usize = 64;

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table inconsistent in a way that
        // matters more than serving: keep going with what is there.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for a new connection; false if no connection may be closed for it.
    fn make_room(&self, table: &mut Table) -> bool {
        if table.live.len() < self.limits.max_connections {
            return true;
        }
        let mut best: Option<(usize, (u8, u64), Command)> = None;
        for (i, c) in table.live.iter().enumerate() {
            let in_flight = c.in_flight.load(Ordering::Acquire);
            let receiving = c.receiving.load(Ordering::Acquire);
            let candidate = if in_flight == 0 && !c.served.load(Ordering::Acquire) {
                Some(((0, c.id), Command::Abort))
            } else if in_flight == 0 {
                Some(((1, c.last_active.load(Ordering::Relaxed)), Command::Drain))
            } else if receiving >= in_flight {
                Some(((2, c.last_active.load(Ordering::Relaxed)), Command::Abort))
            } else {
                None
            };
            if let Some((rank, command)) = candidate
                && best.as_ref().is_none_or(|(_, r, _)| rank < *r)
            {
                best = Some((i, rank, command));
            }
        }
        let Some((i, (class, _), command)) = best else {
            return false;
        };
        let victim = table.live.swap_remove(i);
        victim.order(command);
        self.metrics.closed(match class {
            0 => "evicted_unused",
            1 => "evicted_idle",
            _ => "evicted_stalled",
        });
        if command == Command::Drain {
            table.closing.push_back(victim);
            // Connections closing gracefully are bounded too.
            while table.closing.len() > self.limits.max_connections {
                if let Some(old) = table.closing.pop_front() {
                    old.order(Command::Abort);
                }
            }
        }
        true
    }

    /// Admits a call. When the calls pool is full, the connection with the most calls
    /// still receiving their request (stalled uploads) is closed to make room, and the
    /// call waits up to [`ADMISSION_WAIT`] for it; a full pool of calls being served is
    /// never relieved that way, and the call is refused.
    async fn admit(&self, header_bytes: usize) -> Option<Arc<Charge>> {
        if let Some(charge) = Charge::admit(&self.budget, header_bytes) {
            return Some(charge);
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.admissions_waiting.fetch_add(1, Ordering::AcqRel) >= MAX_ADMISSIONS_WAITING {
            self.admissions_waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _waiting = Waiting(&self.admissions_waiting);
        self.relieve_stalled();
        let deadline = Instant::now() + ADMISSION_WAIT;
        loop {
            let released = self.budget.calls.released();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(charge) = Charge::admit(&self.budget, header_bytes) {
                return Some(charge);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }

    /// Closes the connection with the most calls still receiving their request.
    fn relieve_stalled(&self) {
        let mut table = self.table();
        let victim = table
            .live
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.receiving.load(Ordering::Acquire)))
            .filter(|&(_, receiving)| receiving > 0)
            .max_by_key(|&(_, receiving)| receiving);
        if let Some((i, _)) = victim {
            let c = table.live.swap_remove(i);
            c.order(Command::Abort);
            self.metrics.closed("evicted_stalled");
            self.metrics.open.set(table.live.len() as i64);
        }
    }

    fn remove(&self, id: u64) {
        let mut table = self.table();
        table.live.retain(|c| c.id != id);
        table.closing.retain(|c| c.id != id);
        self.metrics.open.set(table.live.len() as i64);
        if table.live.is_empty() && table.closing.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    fn log_refusal(&self) {
        let now = self.now_ms();
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_refusal_log
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                "refusing a connection: every connection is busy with calls (logged at most every 10 s; see the connections_closed metric)"
            );
        }
    }
}

/// Serves `routes` (tonic's [`tonic::service::Routes`]) on `listener` under `limits` until
/// `shutdown` resolves; then stops accepting, sends every connection GOAWAY and returns
/// once they have all closed. `rewrite_authority` puts the [`crate::authority`] layer in
/// front of every connection.
pub async fn serve<S>(
    listener: UnixListener,
    routes: S,
    limits: Limits,
    rewrite_authority: bool,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Infallible>
where
    S: tower::Service<
            http::Request<BudgetedBody<Incoming>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let shared = Arc::new(Shared {
        budget: Budget::new(
            limits.call_budget,
            limits.byte_budget,
            limits.call_allowance,
        ),
        limits,
        metrics,
        table: Mutex::new(Table::default()),
        emptied: Notify::new(),
        epoch: Instant::now(),
        last_refusal_log: AtomicU64::new(0),
        admissions_waiting: AtomicUsize::new(0),
        rewrite_authority,
    });
    shared.metrics.set_limits(limits_of(&shared.budget));
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(shared.limits.max_concurrent_streams)
        .initial_stream_window_size(shared.limits.stream_window)
        .initial_connection_window_size(shared.limits.connection_window)
        .adaptive_window(false)
        .max_frame_size(u32::try_from(budget::MAX_FRAME).unwrap_or(16_384))
        .max_header_list_size(shared.limits.max_header_list)
        // Over a Unix socket a vanished peer is seen at once; pings prove nothing about a
        // client's use of the connection (any HTTP/2 client answers them).
        .keep_alive_interval(None);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or memory: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = {
            let mut table = shared.table();
            if !shared.make_room(&mut table) {
                drop(table);
                shared.metrics.closed("refused");
                shared.log_refusal();
                drop(stream);
                continue;
            }
            table.next_id += 1;
            let state = Arc::new(ConnState {
                id: table.next_id,
                accepted: Instant::now(),
                in_flight: AtomicUsize::new(0),
                receiving: AtomicUsize::new(0),
                served: AtomicBool::new(false),
                last_active: AtomicU64::new(shared.now_ms()),
                command: AtomicU8::new(Command::Run as u8),
                wake: Notify::new(),
                gone: tokio_util::sync::CancellationToken::new(),
            });
            table.live.push(Arc::clone(&state));
            shared.metrics.open.set(table.live.len() as i64);
            state
        };
        tokio::spawn(connection(
            Arc::clone(&shared),
            state,
            stream,
            routes.clone(),
            h2.clone(),
        ));
    }
    drop(listener);
    // Stop: GOAWAY to every connection; they close when their calls are done.
    loop {
        let emptied = shared.emptied.notified();
        tokio::pin!(emptied);
        emptied.as_mut().enable();
        {
            let table = shared.table();
            if table.live.is_empty() && table.closing.is_empty() {
                break;
            }
            for c in table.live.iter().chain(table.closing.iter()) {
                c.order(Command::Shutdown);
            }
        }
        emptied.await;
    }
    Ok(())
}

async fn connection<S>(
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    stream: tokio::net::UnixStream,
    routes: S,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
) where
    S: tower::Service<
            http::Request<BudgetedBody<Incoming>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(AuthorityRewrite::new(stream, shared.rewrite_authority));
    let service = ConnService {
        routes,
        shared: Arc::clone(&shared),
        state: Arc::clone(&state),
    };
    let conn = h2.serve_connection(io, service);
    tokio::pin!(conn);
    let limits = &shared.limits;
    // When GOAWAY was sent.
    let mut draining: Option<Instant> = None;
    // Why we close it, for the metric; empty when the table already counted it.
    let mut cause: &'static str = "client";
    loop {
        let wake = state.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let command = state.command();
        if command == Command::Abort {
            cause = "";
            break;
        }
        if command != Command::Run && draining.is_none() {
            conn.as_mut().graceful_shutdown();
            draining = Some(Instant::now());
            match command {
                Command::Shutdown => cause = "shutdown",
                // Counted by the table when it chose this connection to make room.
                _ if cause == "client" => cause = "",
                _ => {}
            }
        }
        let idle = state.in_flight.load(Ordering::Acquire) == 0;
        let last_active =
            shared.epoch + Duration::from_millis(state.last_active.load(Ordering::Acquire));
        let timer = if !idle {
            None
        } else if let Some(since) = draining {
            // GOAWAY was sent: a client that acknowledges it is closed by HTTP/2 itself;
            // one that does not is closed once GOAWAY and its last answer are a grace old.
            Some(last_active.max(since) + limits.close_grace)
        } else if state.served.load(Ordering::Acquire) {
            Some(last_active + limits.idle_timeout)
        } else {
            Some(state.accepted + limits.first_request_timeout)
        };
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut wake => {}
            () = tokio::time::sleep_until(timer.unwrap_or(far)), if timer.is_some() => {
                if state.in_flight.load(Ordering::Acquire) != 0 {
                    continue;
                }
                if draining.is_some() {
                    if cause == "client" {
                        cause = "close_grace";
                    }
                    break;
                }
                if !state.served.load(Ordering::Acquire) {
                    cause = "first_request_timeout";
                    break;
                }
                cause = "idle";
                state.order(Command::Drain);
            }
        }
    }
    state.gone.cancel();
    if !cause.is_empty() {
        shared.metrics.closed(cause);
    }
    shared.remove(state.id);
}

/// The service of one connection: charges and tracks each call, then hands it to `routes`.
struct ConnService<S> {
    routes: S,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
}

/// Ends a call's tracking when the response body is dropped.
struct CallGuard {
    shared: Arc<Shared>,
    state: Arc<ConnState>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.state
            .last_active
            .store(self.shared.now_ms(), Ordering::Release);
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.wake.notify_one();
        self.shared.metrics.set_used(used_of(&self.shared.budget));
    }
}

type CallBody = ChargedBody<tonic::body::Body, Option<CallGuard>>;
type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<CallBody>, Infallible>> + Send>>;

fn refuse(
    status: tonic::Status,
    charge: Option<Arc<Charge>>,
    guard: Option<CallGuard>,
) -> http::Response<CallBody> {
    status
        .into_http::<tonic::body::Body>()
        .map(|b| ChargedBody::new(b, charge, guard))
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: tower::Service<
            http::Request<BudgetedBody<Incoming>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<CallBody>;
    type Error = Infallible;
    type Future = CallFuture;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let state = Arc::clone(&self.state);
        let routes = self.routes.clone();
        Box::pin(async move {
            let limits = &shared.limits;
            let Some(charge) = shared.admit(header_bytes(&request)).await else {
                shared.metrics.refused_call("budget");
                let status = tonic::Status::resource_exhausted(format!(
                    "the server has {} calls' worth of requests in flight across all connections; retry shortly",
                    limits.call_budget / limits.call_allowance
                ));
                return Ok(refuse(status, None, None));
            };
            state.served.store(true, Ordering::Release);
            state.receiving.fetch_add(1, Ordering::AcqRel);
            state.in_flight.fetch_add(1, Ordering::AcqRel);
            state.last_active.store(shared.now_ms(), Ordering::Release);
            state.wake.notify_one();
            let guard = CallGuard {
                shared: Arc::clone(&shared),
                state: Arc::clone(&state),
            };
            let deadline = grpc_timeout(request.headers())
                .map_or(limits.call_timeout, |t| t.min(limits.call_timeout));
            let message_timeout = limits.message_timeout;
            let state_gone = state.gone.clone();
            let (parts, body) = request.into_parts();
            let body = BudgetedBody::new(
                body,
                Arc::clone(&charge),
                limits.max_message,
                Box::new(move || {
                    state.receiving.fetch_sub(1, Ordering::AcqRel);
                }),
            );
            let call = tower::ServiceExt::oneshot(routes, http::Request::from_parts(parts, body));
            shared.metrics.set_used(used_of(&shared.budget));
            let message_late = async {
                if tokio::time::timeout(message_timeout, charge.wait_received())
                    .await
                    .is_ok()
                {
                    std::future::pending::<()>().await;
                }
            };
            let status = tokio::select! {
                () = state_gone.cancelled() => {
                    tonic::Status::cancelled("the connection was closed")
                }
                r = call => {
                    let Ok(response) = r;
                    return Ok(response.map(|b| ChargedBody::new(b, Some(charge), Some(guard))));
                }
                () = message_late => {
                    shared.metrics.refused_call("message_timeout");
                    tonic::Status::deadline_exceeded(format!(
                        "the request message did not arrive in full within {message_timeout:?}"
                    ))
                }
                () = tokio::time::sleep(deadline) => {
                    shared.metrics.refused_call("call_timeout");
                    tonic::Status::deadline_exceeded(format!(
                        "the call did not finish within {deadline:?}"
                    ))
                }
            };
            Ok(refuse(status, Some(charge), Some(guard)))
        })
    }
}

fn limits_of(budget: &Budget) -> (usize, usize) {
    (budget.calls.limit(), budget.bytes.limit())
}

fn used_of(budget: &Budget) -> (usize, usize) {
    (budget.calls.used(), budget.bytes.used())
}

/// The size a call's headers count for: RFC 7541's measure (name + value + 32 per field)
/// plus the path.
fn header_bytes<B>(request: &http::Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + request.uri().path().len()
}

/// The `grpc-timeout` header: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("2999m"), Some(Duration::from_millis(2999)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("123456789S"), None, "at most 8 digits");
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
