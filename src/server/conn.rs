//! What the server knows of each connection, and the table of them: the state the
//! eviction policy in `mod.rs` reads (in flight, receiving, unread answers, idle time, the
//! peer process) and the commands it gives (GOAWAY, shutdown, abort).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// An answer unread for this long makes its connection evictable for a newcomer.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(2);
/// Calls still receiving their request for this long make their connection a stalled
/// upload.
pub(super) const STALLED_AFTER: Duration = Duration::from_secs(1);
/// After GOAWAY, calls already on their way are still served for this long.
pub(super) const GOAWAY_RACE: Duration = Duration::from_secs(1);

/// How a connection is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Command {
    Run = 0,
    /// GOAWAY; see the module documentation.
    Drain = 1,
    /// As `Drain`, for the server's shutdown.
    Shutdown = 2,
    /// Closed at once.
    Abort = 3,
}

/// Who is at the other end, for fairness: the process (or, without a pid, the user).
pub(super) type Peer = i64;

pub(super) fn peer_of(stream: &tokio::net::UnixStream) -> Peer {
    match stream.peer_cred() {
        Ok(cred) => match cred.pid() {
            Some(pid) => i64::from(pid),
            None => -1 - i64::from(cred.uid()),
        },
        Err(_) => i64::MIN,
    }
}

/// What the server knows of one connection.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) id: u64,
    pub(super) peer: Peer,
    pub(super) accepted: Instant,
    pub(super) in_flight: AtomicUsize,
    pub(super) receiving: AtomicUsize,
    /// Milliseconds since the server's epoch, plus one, since when a call has been
    /// receiving without a pause (0: none is).
    pub(super) receiving_since: AtomicU64,
    /// A call has arrived on it (set before admission, so a client is not taken for an
    /// unused connection while its first call waits).
    pub(super) used: AtomicBool,
    /// Milliseconds since the server's epoch of the last call start or end.
    pub(super) last_active: AtomicU64,
    /// Answers produced and not yet taken by the client: (since, call).
    pub(super) responding: Mutex<BTreeSet<(Instant, u64)>>,
    pub(super) next_call: AtomicU64,
    pub(super) command: AtomicU8,
    /// Milliseconds since the server's epoch when GOAWAY was ordered, plus one (0: never).
    pub(super) drain_ordered: AtomicU64,
    pub(super) wake: Notify,
    /// Cancelled when the connection is gone: its calls stop at once.
    pub(super) gone: tokio_util::sync::CancellationToken,
}

impl ConnState {
    pub(super) fn command(&self) -> Command {
        match self.command.load(Ordering::Acquire) {
            1 => Command::Drain,
            2 => Command::Shutdown,
            3 => Command::Abort,
            _ => Command::Run,
        }
    }

    /// Raises the command (never lowers it: an abort stays an abort).
    pub(super) fn order(&self, command: Command, now_ms: u64) {
        if command != Command::Run {
            let _ = self.drain_ordered.compare_exchange(
                0,
                now_ms.saturating_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        self.command.fetch_max(command as u8, Ordering::AcqRel);
        if command == Command::Abort {
            self.gone.cancel();
        }
        self.wake.notify_one();
    }

    pub(super) fn oldest_answer(&self) -> Option<Instant> {
        lock(&self.responding).first().map(|(since, _)| *since)
    }

    /// Every call in flight is still receiving its request, and has been for a while.
    pub(super) fn stalled(&self, now_ms: u64) -> bool {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let since = self.receiving_since.load(Ordering::Acquire);
        in_flight > 0
            && self.receiving.load(Ordering::Acquire) >= in_flight
            && since != 0
            && now_ms.saturating_sub(since - 1)
                >= u64::try_from(STALLED_AFTER.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn receiving_started(&self, now_ms: u64) {
        if self.receiving.fetch_add(1, Ordering::AcqRel) == 0 {
            self.receiving_since
                .store(now_ms.saturating_add(1), Ordering::Release);
        }
    }

    pub(super) fn receiving_ended(&self) {
        if self.receiving.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.receiving_since.store(0, Ordering::Release);
        }
    }

    pub(super) fn stuck(&self, now: Instant) -> bool {
        self.oldest_answer()
            .is_some_and(|since| now.saturating_duration_since(since) >= STUCK_AFTER)
    }
}

/// Locks, going on with the data if a holder panicked: none of these maps can be left in a
/// state that matters more than serving.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How eagerly a connection is closed for a newcomer, lowest first: its peer's
/// connections (most first), its class, its age.
pub(super) type Rank = (std::cmp::Reverse<usize>, u8, u64);

#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) next_id: u64,
    pub(super) live: Vec<Arc<ConnState>>,
    pub(super) closing: VecDeque<Arc<ConnState>>,
    /// Live connections per peer.
    pub(super) peers: HashMap<Peer, usize>,
}

impl Table {
    pub(super) fn take_live(&mut self, i: usize) -> Arc<ConnState> {
        let c = self.live.swap_remove(i);
        if let Some(n) = self.peers.get_mut(&c.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.peers.remove(&c.peer);
            }
        }
        c
    }

    pub(super) fn peer_count(&self, peer: Peer) -> usize {
        self.peers.get(&peer).copied().unwrap_or(0)
    }
}
