//! The in-flight byte budget one server shares across all its connections and streams.
//!
//! Two pools:
//! - **calls**: each call is charged, when it is dispatched, a fixed [`Charge`] allowance
//!   plus the size of its request headers. If the pool cannot cover that, the call is
//!   refused at once with `RESOURCE_EXHAUSTED`. The allowance is prepaid room for the
//!   request message: a request that fits in it (every KMS request, every ordinary Mount)
//!   never waits for the second pool. The pool also bounds the calls in flight.
//! - **bytes**: request message bytes beyond the allowance, charged as each HTTP/2 DATA
//!   frame is read. When the pool is spent, the call holds the frame it has read and reads
//!   no further: HTTP/2 stops granting window, so the client is flow-controlled, and what
//!   it has already sent stays within the windows. Response bytes are charged here too as
//!   they are produced, even past the limit, so answers waiting for a slow reader hold back
//!   new request bytes.
//!
//! What a call holds is given back when its response body is dropped. Request data in
//! memory is therefore at most: the calls pool, plus one held frame (16 KiB) per call
//! (at most one per allowance in the calls pool), plus the bytes pool, plus each
//! connection's HTTP/2 connection window (see [`super::Limits::request_memory_bound`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// HTTP/2's largest DATA frame we accept (we advertise the default
/// `SETTINGS_MAX_FRAME_SIZE`).
pub const MAX_FRAME: usize = 16 * 1024;

/// A limited count of bytes, taken and given back.
#[derive(Debug)]
pub struct Pool {
    limit: usize,
    used: AtomicUsize,
    released: Notify,
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            released: Notify::new(),
        }
    }

    /// Bytes taken now (the bytes pool may exceed its limit by responses).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A future resolving at the next release (enable it before checking for room).
    pub(super) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Takes `n` bytes if they fit, or if the pool is empty (one request larger than the
    /// whole pool goes alone rather than never).
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n)
                    .filter(|&total| total <= self.limit || used == 0)
            })
            .is_ok()
    }

    /// Takes `n` bytes whether or not they fit.
    fn force_take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` bytes back and wakes the waiters.
    fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            self.released.notify_waiters();
        }
    }
}

/// The two pools of one server.
#[derive(Debug)]
pub struct Budget {
    /// Calls in flight: allowance and headers.
    pub calls: Pool,
    /// Request bytes beyond the allowances, and responses.
    pub bytes: Pool,
    allowance: usize,
}

impl Budget {
    /// A budget of `calls` and `bytes`; each call is prepaid `allowance` bytes.
    pub fn new(calls: usize, bytes: usize, allowance: usize) -> Arc<Self> {
        Arc::new(Self {
            calls: Pool::new(calls),
            bytes: Pool::new(bytes),
            allowance,
        })
    }

    /// Waits until `n` bytes fit in the bytes pool, then takes them.
    async fn take_bytes(self: Arc<Self>, n: usize) {
        loop {
            let released = self.bytes.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.bytes.try_take(n) {
                return;
            }
            released.await;
        }
    }
}

/// What one call holds of the budget; given back when the last holder (the request body,
/// the response body, the call's future) is dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    /// In the calls pool.
    admitted: usize,
    /// In the bytes pool.
    held: AtomicUsize,
    /// Reserved for the answer and not yet produced.
    response_credit: AtomicUsize,
    /// Set once the request message has arrived in full (or the body was given up).
    received: AtomicBool,
    on_received: Notify,
}

impl Charge {
    /// Admits a call whose headers count `header_bytes`, if the calls pool has room for
    /// them and the allowance.
    /// Refused while answers overdraw the bytes pool: they hold back new work.
    pub fn admit(budget: &Arc<Budget>, header_bytes: usize) -> Option<Arc<Self>> {
        if budget.bytes.used() > budget.bytes.limit() {
            return None;
        }
        let admitted = budget.allowance + header_bytes;
        budget.calls.try_take(admitted).then(|| {
            Arc::new(Self {
                budget: Arc::clone(budget),
                admitted,
                held: AtomicUsize::new(0),
                response_credit: AtomicUsize::new(0),
                received: AtomicBool::new(false),
                on_received: Notify::new(),
            })
        })
    }

    /// Reserves `n` bytes for the call's answer before it is built, waiting while the
    /// bytes pool has no room (the caller's deadline bounds the wait). The answer's bytes
    /// are then not charged again as they are sent.
    pub async fn reserve_response(&self, n: usize) {
        Arc::clone(&self.budget).take_bytes(n).await;
        self.add(n);
        self.response_credit.fetch_add(n, Ordering::AcqRel);
    }

    /// Charges `n` bytes of the answer: from what was reserved, then past the limit.
    fn charge_response(&self, n: usize) {
        let from_credit = self
            .response_credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            })
            .map_or(0, |c| c.min(n));
        let rest = n - from_credit;
        if rest > 0 {
            self.budget.bytes.force_take(rest);
            self.add(rest);
        }
    }

    /// Whether the request message has arrived in full.
    pub fn received(&self) -> bool {
        self.received.load(Ordering::Acquire)
    }

    /// Resolves once the request message has arrived in full.
    pub async fn wait_received(&self) {
        loop {
            let notified = self.on_received.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.received() {
                return;
            }
            notified.await;
        }
    }

    fn mark_received(&self) {
        if !self.received.swap(true, Ordering::AcqRel) {
            self.on_received.notify_waiters();
        }
    }

    fn add(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.calls.release(self.admitted);
        self.budget.bytes.release(*self.held.get_mut());
    }
}

type Waiting = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// gRPC's message prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// A request body read only against the budget.
///
/// tonic reserves a buffer of the length a message's prefix announces as soon as it has
/// read the prefix, so the announced length of every message (when within the message
/// limit; beyond it tonic refuses the call) is charged before the frame completing its
/// prefix is handed over. Bytes beyond what was charged are charged as they come.
pub struct BudgetedBody<B> {
    inner: B,
    charge: Arc<Charge>,
    /// Bytes paid for (allowance included) and not yet delivered.
    credit: usize,
    delivered: usize,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes left of the current message's body (0: reading a prefix).
    body_left: usize,
    max_message: usize,
    /// A frame read and waiting for the bytes pool, what it owes, and the wait.
    held: Option<(Frame<Bytes>, usize, Waiting)>,
    /// Called once when the body ends (in full or not).
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> std::fmt::Debug for BudgetedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetedBody")
            .field("credit", &self.credit)
            .field("delivered", &self.delivered)
            .field("waiting", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> BudgetedBody<B> {
    /// Wraps `inner`, for a service that refuses messages over `max_message`; `on_end`
    /// runs once, when the body ends (in full or not).
    pub fn new(
        inner: B,
        charge: Arc<Charge>,
        max_message: usize,
        on_end: Box<dyn FnOnce() + Send>,
    ) -> Self {
        let credit = charge.budget.allowance;
        Self {
            inner,
            charge,
            credit,
            delivered: 0,
            prefix: [0; PREFIX],
            prefix_len: 0,
            body_left: 0,
            max_message,
            held: None,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            self.charge.mark_received();
            f();
        }
    }

    /// What must be paid before `data` may be handed over: its own bytes and, for every
    /// message prefix it completes, the rest of that message.
    fn owed(&mut self, data: &[u8]) -> usize {
        let mut want_end = self.delivered + data.len();
        let mut rest = data;
        while !rest.is_empty() {
            if self.body_left > 0 {
                let step = self.body_left.min(rest.len());
                self.body_left -= step;
                rest = rest.get(step..).unwrap_or_default();
                continue;
            }
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            if let Some(slot) = self.prefix.get_mut(self.prefix_len) {
                *slot = byte;
            }
            self.prefix_len += 1;
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let announced = u32::from_be_bytes([a, b, c, d]) as usize;
                self.body_left = announced;
                if announced <= self.max_message {
                    // The message ends here: after the frame's bytes read so far, and
                    // its whole body.
                    let at = self.delivered + (data.len() - rest.len());
                    want_end = want_end.max(at + announced);
                }
            }
        }
        want_end.saturating_sub(self.delivered + self.credit)
    }

    fn deliver(
        &mut self,
        frame: Frame<Bytes>,
        paid: usize,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body,
    {
        self.charge.add(paid);
        let n = frame.data_ref().map_or(0, Bytes::len);
        self.credit = (self.credit + paid).saturating_sub(n);
        self.delivered += n;
        if frame.is_trailers() || self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

impl<B> Drop for BudgetedBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some((_, _, waiting)) = this.held.as_mut() {
            ready!(waiting.as_mut().poll(cx));
            let Some((frame, owed, _)) = this.held.take() else {
                return Poll::Ready(None);
            };
            return this.deliver(frame, owed);
        }
        if this.on_end.is_none() {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let owed = frame.data_ref().map_or(0, |d| this.owed(d));
                if owed == 0 || this.charge.budget.bytes.try_take(owed) {
                    return this.deliver(frame, owed);
                }
                // Out of budget: keep this frame and read nothing more until it fits.
                let mut waiting: Waiting =
                    Box::pin(Arc::clone(&this.charge.budget).take_bytes(owed));
                if waiting.as_mut().poll(cx).is_ready() {
                    return this.deliver(frame, owed);
                }
                this.held = Some((frame, owed, waiting));
                Poll::Pending
            }
            Some(Err(e)) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.on_end.is_none() || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose bytes are charged to the call as they are produced, and which
/// keeps the call's charge (and whatever `guard` releases) until hyper drops it.
pub struct ChargedBody<B, G> {
    inner: B,
    charge: Option<Arc<Charge>>,
    _guard: G,
}

impl<B, G> std::fmt::Debug for ChargedBody<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargedBody").finish_non_exhaustive()
    }
}

impl<B, G> ChargedBody<B, G> {
    /// Wraps `inner`.
    pub fn new(inner: B, charge: Option<Arc<Charge>>, guard: G) -> Self {
        Self {
            inner,
            charge,
            _guard: guard,
        }
    }
}

impl<B, G> Body for ChargedBody<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(charge), Some(Ok(frame))) = (&this.charge, &frame)
            && let Some(data) = frame.data_ref()
        {
            charge.charge_response(data.len());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full, StreamBody};

    fn stalled(
        frames: Vec<Bytes>,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin> {
        let frames = futures::stream::iter(frames.into_iter().map(|b| Ok(Frame::data(b))));
        StreamBody::new(futures::StreamExt::chain(
            frames,
            futures::stream::pending(),
        ))
    }

    #[test]
    fn admission_counts_allowance_and_headers() {
        let budget = Budget::new(100, 0, 40);
        let a = Charge::admit(&budget, 20).unwrap();
        assert!(Charge::admit(&budget, 1).is_none(), "60 + 41 > 100");
        let b = Charge::admit(&budget, 0).unwrap();
        assert_eq!(budget.calls.used(), 100);
        drop(a);
        assert_eq!(budget.calls.used(), 40);
        drop(b);
        assert_eq!(budget.calls.used(), 0);
    }

    #[tokio::test]
    async fn a_message_within_the_allowance_never_waits_for_the_bytes_pool() {
        let budget = Budget::new(1 << 20, 0, 1000);
        let charge = Charge::admit(&budget, 0).unwrap();
        let body = BudgetedBody::new(
            Full::new(Bytes::from(vec![1u8; 1000])),
            Arc::clone(&charge),
            0,
            Box::new(|| {}),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 1000);
        assert!(charge.received());
        assert_eq!(budget.bytes.used(), 0);
    }

    #[tokio::test]
    async fn past_the_allowance_a_body_waits_for_the_bytes_pool() {
        let budget = Budget::new(1 << 20, 600, 100);
        let hog = Charge::admit(&budget, 0).unwrap();
        assert!(budget.bytes.try_take(600));
        hog.add(600);
        let charge = Charge::admit(&budget, 0).unwrap();
        let data = Bytes::from(vec![7u8; 500]);
        let body = BudgetedBody::new(
            Full::new(data.clone()),
            Arc::clone(&charge),
            0,
            Box::new(|| {}),
        );
        let read = tokio::spawn(async move { body.collect().await.unwrap().to_bytes() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "no budget: the frame is held");
        assert!(!charge.received());
        drop(hog);
        assert_eq!(read.await.unwrap(), data);
        assert!(charge.received());
        assert_eq!(budget.bytes.used(), 400, "500 less the 100 prepaid");
        drop(charge);
        assert_eq!(budget.bytes.used(), 0);
        assert_eq!(budget.calls.used(), 0);
    }

    #[tokio::test]
    async fn a_dropped_body_marks_the_end_and_gives_back_everything() {
        let budget = Budget::new(1 << 20, 1 << 20, 2);
        let charge = Charge::admit(&budget, 1).unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let mut body = BudgetedBody::new(
            stalled(vec![Bytes::from_static(b"abc")]),
            Arc::clone(&charge),
            0,
            Box::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert_eq!(budget.bytes.used(), 1);
        assert_eq!(budget.calls.used(), 3);
        drop(body);
        assert!(ended.load(Ordering::SeqCst));
        assert!(charge.received(), "a given-up body counts as ended");
        drop(charge);
        assert_eq!(budget.bytes.used() + budget.calls.used(), 0);
    }

    #[tokio::test]
    async fn an_announced_message_is_paid_for_before_its_prefix_is_handed_over() {
        let budget = Budget::new(1 << 20, 1000, 10);
        let charge = Charge::admit(&budget, 0).unwrap();
        // The prefix split over two frames, announcing 900 bytes.
        let mut body = BudgetedBody::new(
            stalled(vec![
                Bytes::from_static(&[0, 0, 0]),
                Bytes::from_static(&[3, 0x84, 1, 2]),
            ]),
            Arc::clone(&charge),
            4096,
            Box::new(|| {}),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 3);
        assert_eq!(budget.bytes.used(), 0, "three bytes fit in the allowance");
        let second = body.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap().len(), 4);
        assert_eq!(
            budget.bytes.used(),
            5 + 900 - 10,
            "the whole announced message, less the allowance"
        );
        let first_call = body;
        // An announcement over the message limit is not charged: tonic refuses it.
        let other = Charge::admit(&budget, 0).unwrap();
        let mut body = BudgetedBody::new(
            stalled(vec![Bytes::from_static(&[0, 0x7f, 0, 0, 0])]),
            Arc::clone(&other),
            4096,
            Box::new(|| {}),
        );
        let _ = body.frame().await.unwrap().unwrap();
        assert_eq!(budget.bytes.used(), 5 + 900 - 10);
        // A message that does not fit waits, holding its prefix.
        drop(body);
        drop(other);
        let third = Charge::admit(&budget, 0).unwrap();
        let mut body = BudgetedBody::new(
            stalled(vec![Bytes::from_static(&[0, 0, 0, 0, 200])]),
            Arc::clone(&third),
            4096,
            Box::new(|| {}),
        );
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), body.frame()).await;
        assert!(waiting.is_err(), "895 + 195 > 1000: held");
        drop((first_call, charge));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap().len(), 5);
        assert_eq!(budget.bytes.used(), 195);
    }

    #[tokio::test]
    async fn every_message_of_a_body_is_paid_for_when_its_prefix_completes() {
        let budget = Budget::new(1 << 20, 1 << 20, 10);
        let charge = Charge::admit(&budget, 0).unwrap();
        // A 3-byte message, then a prefix announcing 100 bytes, in one frame.
        let mut body = BudgetedBody::new(
            stalled(vec![Bytes::from_static(&[
                0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 100,
            ])]),
            Arc::clone(&charge),
            4096,
            Box::new(|| {}),
        );
        let _ = body.frame().await.unwrap().unwrap();
        assert_eq!(budget.bytes.used(), 13 + 100 - 10);
    }

    #[tokio::test]
    async fn a_reserved_answer_is_not_charged_twice_and_overdraw_stops_admission() {
        let budget = Budget::new(1 << 20, 100, 0);
        let charge = Charge::admit(&budget, 0).unwrap();
        charge.reserve_response(80).await;
        assert_eq!(budget.bytes.used(), 80);
        let mut body = ChargedBody::new(
            Full::new(Bytes::from(vec![0u8; 120])),
            Some(Arc::clone(&charge)),
            (),
        );
        let _ = body.frame().await.unwrap().unwrap();
        assert_eq!(budget.bytes.used(), 120, "80 reserved, 40 past it");
        assert!(
            Charge::admit(&budget, 0).is_none(),
            "overdrawn: no new calls"
        );
        drop((body, charge));
        assert_eq!(budget.bytes.used(), 0);
        assert!(Charge::admit(&budget, 0).is_some());
    }

    #[tokio::test]
    async fn responses_overdraw_and_hold_back_request_bytes() {
        let budget = Budget::new(1 << 20, 100, 0);
        let charge = Charge::admit(&budget, 10).unwrap();
        let mut body = ChargedBody::new(
            Full::new(Bytes::from(vec![0u8; 500])),
            Some(Arc::clone(&charge)),
            (),
        );
        let _ = body.frame().await.unwrap().unwrap();
        assert_eq!(budget.bytes.used(), 500);
        assert!(!budget.bytes.try_take(1));
        drop(body);
        drop(charge);
        assert_eq!(budget.bytes.used(), 0);
    }
}
