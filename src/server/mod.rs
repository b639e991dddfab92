//! The gRPC server loop both servers run on their Unix socket: hyper's HTTP/2 server under
//! tonic's routes, with the connection and memory policy a local socket needs when any
//! local client may be hostile, buggy or leaking.
//!
//! # Connections
//!
//! Every connection is accepted at once; none waits in the listen backlog for a slot. At
//! most [`Limits::max_connections`] are served. When a new one arrives at the cap, one is
//! closed to make room: from the peer process holding the most connections (by
//! `SO_PEERCRED`), so a flooding process evicts its own connections first; and among
//! those, in this order:
//! 1. one that has never sent a request (half-open, zero-byte, slow preface), oldest first:
//!    closed at once;
//! 2. one whose answer has waited over 2 s for the client to read it: closed at once;
//! 3. one with no call in flight, least recently active first: sent GOAWAY, so a client
//!    that was about to use it retries on a new connection. Calls it starts more than 1 s
//!    after GOAWAY are refused (`UNAVAILABLE`); it is closed once idle for
//!    [`Limits::close_grace`], and at the latest after the call timeout. At most
//!    [`Limits::max_closing`] close this way at once; beyond, the oldest is closed at once;
//! 4. one whose calls in flight are all still receiving their request message, for over
//!    a second (a stalled upload), least recently active first: closed at once.
//!
//! Connections busy with complete requests whose answers are being read are never closed
//! for a newcomer; if every connection is such, the newcomer is closed at once (counted,
//! logged), never left hanging. A connection must send its first request within
//! [`Limits::first_request_timeout`]; one idle (no call in flight) for
//! [`Limits::idle_timeout`] is sent GOAWAY; one holding an answer its client has not read
//! for [`Limits::response_timeout`] is closed. None of this depends on the client
//! answering pings: an idle client that answers every ping is still idle.
//!
//! # Calls
//!
//! A call's request message must arrive in full within [`Limits::message_timeout`], and the
//! call must produce its answer within its `grpc-timeout` or [`Limits::call_timeout`],
//! whichever is sooner. Every call is charged to the server's in-flight byte [`budget`];
//! the handler finds its [`budget::Charge`] in the request's extensions, to reserve its
//! response before building it.

pub(crate) mod budget;
mod conn;
pub(crate) mod liveness;
pub mod process;

use std::collections::BTreeSet;
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
use conn::{Command, ConnState, GOAWAY_RACE, Rank, Table, lock, peer_of};

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
    /// Longest an answer may wait for the client to read it; a connection holding one
    /// longer is closed (its client is not reading).
    pub response_timeout: Duration,
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
    /// What both servers share; each sets its own message limit, budget, windows and
    /// timeouts on top (`kms::LIMITS`, `csi::LIMITS`).
    pub const COMMON: Self = Self {
        max_connections: 64,
        first_request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(300),
        close_grace: Duration::from_secs(2),
        response_timeout: Duration::from_secs(10),
        message_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(30),
        max_message: 64 * 1024,
        call_budget: 8 * 1024 * 1024,
        call_allowance: 16 * 1024,
        byte_budget: 16 * 1024 * 1024,
        max_concurrent_streams: 32,
        stream_window: 64 * 1024,
        connection_window: 256 * 1024,
        max_header_list: 16 * 1024,
    };

    /// Connections closing gracefully (sent GOAWAY to make room) on top of the cap.
    pub const fn max_closing(&self) -> usize {
        let quarter = self.max_connections / 4;
        if quarter == 0 { 1 } else { quarter }
    }

    /// Worst-case bytes that request data can hold: both pools, one held frame per call the
    /// calls pool admits, and what each connection (served or closing) may have sent into
    /// its window and not yet been read.
    pub const fn request_memory_bound(&self) -> usize {
        self.call_budget
            + (self.call_budget / self.call_allowance) * budget::MAX_FRAME
            + self.byte_budget
            + (self.max_connections + self.max_closing()) * self.connection_window as usize
    }
}

/// How long a call waits for room in the budget once stalled connections were closed.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);
/// Calls that may wait for room at once; more are refused at once.
const MAX_ADMISSIONS_WAITING: usize = 64;
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

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Makes room for a new connection; false if no connection may be closed for it.
    fn make_room(&self, table: &mut Table) -> bool {
        if table.live.len() < self.limits.max_connections {
            return true;
        }
        let now = Instant::now();
        let now_ms = self.now_ms();
        let mut best: Option<(usize, Rank, Command)> = None;
        for (i, c) in table.live.iter().enumerate() {
            let in_flight = c.in_flight.load(Ordering::Acquire);
            let last = c.last_active.load(Ordering::Relaxed);
            let candidate = if in_flight == 0 && !c.used.load(Ordering::Acquire) {
                Some((0, c.id, Command::Abort))
            } else if c.stuck(now) {
                Some((1, last, Command::Abort))
            } else if in_flight == 0 {
                Some((2, last, Command::Drain))
            } else if c.stalled(now_ms) {
                Some((3, last, Command::Abort))
            } else {
                None
            };
            if let Some((class, key, command)) = candidate {
                let rank = (std::cmp::Reverse(table.peer_count(c.peer)), class, key);
                if best.as_ref().is_none_or(|(_, r, _)| rank < *r) {
                    best = Some((i, rank, command));
                }
            }
        }
        let Some((i, (_, class, _), command)) = best else {
            return false;
        };
        let victim = table.take_live(i);
        victim.order(command, self.now_ms());
        self.metrics.closed(match class {
            0 => "evicted_unused",
            1 => "evicted_unread",
            2 => "evicted_idle",
            _ => "evicted_stalled",
        });
        if command == Command::Drain {
            table.closing.push_back(victim);
            while table.closing.len() > self.limits.max_closing() {
                if let Some(old) = table.closing.pop_front() {
                    old.order(Command::Abort, self.now_ms());
                }
            }
        }
        true
    }

    /// Admits a call. When the budget has no room, the connection most clearly abusing it
    /// (all its calls stalled uploads, or an answer unread) is closed, and the call waits up
    /// to [`ADMISSION_WAIT`] for the room that frees; otherwise it is refused.
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
        self.relieve();
        let deadline = Instant::now() + ADMISSION_WAIT;
        loop {
            let calls = self.budget.calls.released();
            let bytes = self.budget.bytes.released();
            tokio::pin!(calls);
            tokio::pin!(bytes);
            calls.as_mut().enable();
            bytes.as_mut().enable();
            if let Some(charge) = Charge::admit(&self.budget, header_bytes) {
                return Some(charge);
            }
            let released = async {
                tokio::select! {
                    () = calls => {}
                    () = bytes => {}
                }
            };
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }

    /// Closes the connection most clearly holding the budget without use: every call of it
    /// still receiving its request for over a second, or an answer it has not read for 2 s;
    /// from the peer with the most connections first. A connection with a call being
    /// served is never chosen.
    fn relieve(&self) {
        let now = Instant::now();
        let now_ms = self.now_ms();
        let mut table = self.table();
        let victim = table
            .live
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let receiving = c.receiving.load(Ordering::Acquire);
                (c.stalled(now_ms) || c.stuck(now))
                    .then(|| (i, (table.peer_count(c.peer), receiving)))
            })
            .max_by_key(|&(_, key)| key);
        if let Some((i, _)) = victim {
            let c = table.take_live(i);
            c.order(Command::Abort, self.now_ms());
            self.metrics.closed("evicted_stalled");
            self.metrics.open.set(table.live.len() as i64);
        }
    }

    fn remove(&self, id: u64) {
        let mut table = self.table();
        if let Some(i) = table.live.iter().position(|c| c.id == id) {
            table.take_live(i);
        }
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

/// The gRPC routes a server serves.
pub trait Routes:
    tower::Service<
        http::Request<BudgetedBody<Incoming>>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Routes for S where
    S: tower::Service<
            http::Request<BudgetedBody<Incoming>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `routes` (tonic's [`tonic::service::Routes`]) on `listener` under `limits` until
/// `shutdown` resolves; then stops accepting, sends every connection GOAWAY and returns
/// once they have all closed. `rewrite_authority` puts the [`crate::authority`] layer in
/// front of every connection.
pub async fn serve<S: Routes>(
    listener: UnixListener,
    routes: S,
    limits: Limits,
    rewrite_authority: bool,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Infallible> {
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
        let peer = peer_of(&stream);
        let state = {
            let mut table = shared.table();
            *table.peers.entry(peer).or_insert(0) += 1;
            let room = shared.make_room(&mut table);
            if !room {
                if let Some(n) = table.peers.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        table.peers.remove(&peer);
                    }
                }
                drop(table);
                shared.metrics.closed("refused");
                shared.log_refusal();
                drop(stream);
                continue;
            }
            table.next_id += 1;
            let state = Arc::new(ConnState {
                id: table.next_id,
                peer,
                accepted: Instant::now(),
                in_flight: AtomicUsize::new(0),
                receiving: AtomicUsize::new(0),
                receiving_since: AtomicU64::new(0),
                used: AtomicBool::new(false),
                last_active: AtomicU64::new(shared.now_ms()),
                responding: Mutex::new(BTreeSet::new()),
                next_call: AtomicU64::new(0),
                command: AtomicU8::new(Command::Run as u8),
                drain_ordered: AtomicU64::new(0),
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
                c.order(Command::Shutdown, shared.now_ms());
            }
        }
        emptied.await;
    }
    Ok(())
}

async fn connection<S: Routes>(
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    stream: tokio::net::UnixStream,
    routes: S,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
) {
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
        let now = Instant::now();
        let idle = state.in_flight.load(Ordering::Acquire) == 0;
        let last_active = shared.at_ms(state.last_active.load(Ordering::Acquire));
        // The next moment something must be decided, and what.
        let mut timer: Option<(Instant, &'static str)> = None;
        let mut at = |when: Instant, why: &'static str| {
            if timer.is_none_or(|(t, _)| when < t) {
                timer = Some((when, why));
            }
        };
        if let Some(since) = state.oldest_answer() {
            at(since + limits.response_timeout, "response_timeout");
        }
        match draining {
            Some(since) => {
                // GOAWAY was sent: a client that acknowledges it is closed by HTTP/2
                // itself; one that does not is closed once GOAWAY and its last answer are
                // a grace old, and in any case once a call could have run its course.
                if idle {
                    at(last_active.max(since) + limits.close_grace, "close_grace");
                }
                at(
                    since + limits.call_timeout + limits.close_grace,
                    "close_grace",
                );
            }
            None if !idle => {}
            None if state.used.load(Ordering::Acquire) => {
                at(last_active + limits.idle_timeout, "idle");
            }
            None => at(
                state.accepted + limits.first_request_timeout,
                "first_request_timeout",
            ),
        }
        let far = now + Duration::from_secs(86_400);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut wake => {}
            () = tokio::time::sleep_until(timer.map_or(far, |(t, _)| t)), if timer.is_some() => {
                let Some((_, why)) = timer else { continue };
                match why {
                    "response_timeout" | "first_request_timeout" => {
                        if why == "first_request_timeout"
                            && (state.used.load(Ordering::Acquire) || !idle_now(&state))
                        {
                            continue;
                        }
                        if why == "response_timeout"
                            && state
                                .oldest_answer()
                                .is_none_or(|s| Instant::now() < s + limits.response_timeout)
                        {
                            continue;
                        }
                        cause = why;
                        break;
                    }
                    "idle" => {
                        if idle_now(&state) {
                            cause = "idle";
                            state.order(Command::Drain, shared.now_ms());
                        }
                    }
                    _ => {
                        // close_grace: re-checked against the state of now.
                        let since = draining.unwrap_or(now);
                        let last = shared.at_ms(state.last_active.load(Ordering::Acquire));
                        let hard = since + limits.call_timeout + limits.close_grace;
                        let soft = last.max(since) + limits.close_grace;
                        let now = Instant::now();
                        if now >= hard || (idle_now(&state) && now >= soft) {
                            // Counted already, for why it was sent GOAWAY.
                            break;
                        }
                    }
                }
            }
        }
    }
    state.gone.cancel();
    if !cause.is_empty() {
        shared.metrics.closed(cause);
    }
    shared.remove(state.id);
}

fn idle_now(state: &ConnState) -> bool {
    state.in_flight.load(Ordering::Acquire) == 0
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
    call: u64,
    answered: Option<Instant>,
}

impl CallGuard {
    /// The answer is ready: from now on the client is the one who must act.
    fn answered(&mut self) {
        let now = Instant::now();
        self.answered = Some(now);
        lock(&self.state.responding).insert((now, self.call));
        self.state.wake.notify_one();
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(since) = self.answered {
            lock(&self.state.responding).remove(&(since, self.call));
        }
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

impl<S: Routes> hyper::service::Service<http::Request<Incoming>> for ConnService<S> {
    type Response = http::Response<CallBody>;
    type Error = Infallible;
    type Future = CallFuture;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let state = Arc::clone(&self.state);
        let routes = self.routes.clone();
        state.used.store(true, Ordering::Release);
        Box::pin(async move {
            let limits = &shared.limits;
            let ordered = state.drain_ordered.load(Ordering::Acquire);
            if ordered != 0
                && shared.now_ms().saturating_sub(ordered - 1)
                    > u64::try_from(GOAWAY_RACE.as_millis()).unwrap_or(u64::MAX)
            {
                shared.metrics.refused_call("goaway");
                return Ok(refuse(
                    tonic::Status::unavailable(
                        "this connection was sent GOAWAY; retry on a new connection",
                    ),
                    None,
                    None,
                ));
            }
            let Some(charge) = shared.admit(header_bytes(&request)).await else {
                shared.metrics.refused_call("budget");
                let status = tonic::Status::resource_exhausted(format!(
                    "the server has {} calls' worth of requests in flight across all connections; retry shortly",
                    limits.call_budget / limits.call_allowance
                ));
                return Ok(refuse(status, None, None));
            };
            state.in_flight.fetch_add(1, Ordering::AcqRel);
            state.receiving_started(shared.now_ms());
            state.last_active.store(shared.now_ms(), Ordering::Release);
            state.wake.notify_one();
            let mut guard = CallGuard {
                shared: Arc::clone(&shared),
                state: Arc::clone(&state),
                call: state.next_call.fetch_add(1, Ordering::Relaxed),
                answered: None,
            };
            let deadline = grpc_timeout(request.headers())
                .map_or(limits.call_timeout, |t| t.min(limits.call_timeout));
            let message_timeout = limits.message_timeout;
            let state_gone = state.gone.clone();
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(Arc::clone(&charge));
            let body = BudgetedBody::new(
                body,
                Arc::clone(&charge),
                limits.max_message,
                Box::new(move || state.receiving_ended()),
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
                    guard.answered();
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
            guard.answered();
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
