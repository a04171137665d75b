//! Flow control: requests wait at the gateway while the pool is saturated, instead of piling
//! onto busy servers.
//!
//! Order of dispatch, as in the reference endpoint picker:
//! 1. **priority bands**, strictly: a request waits while any request of a higher priority
//!    waits;
//! 2. **fairness** inside a band: round-robin between flows (the
//!    [`crate::request::HEADER_FAIRNESS_ID`] value, default `default-flow`), one request per
//!    flow per turn;
//! 3. **FIFO** inside a flow.
//!
//! Each band is bounded ([`BandConfig::max_requests`], default 5000, and
//! [`BandConfig::max_bytes`], default 1 GiB): a request over the bound is rejected at once with
//! [`Rejected::QueueFull`] (429 `rejected-saturated`). A request that waits longer than its
//! band's TTL (default 60 s) gets [`Rejected::TtlExpired`] (429 `rejected-ttl-expired`); while
//! the pool has no endpoints the TTL is [`FlowConfig::no_endpoint_ttl`] (default 60 s) and the
//! answer [`Rejected::NoEndpoints`] (503 `rejected-no-endpoints`).
//!
//! The controller does not measure saturation itself: the data plane calls
//! [`FlowController::dispatch`] whenever capacity may have appeared (a scrape came in, a
//! request finished) with a closure that says whether the pool can take one more request; the
//! highest-ranked waiter is released each time it says yes. [`FlowController::enqueue`]
//! registers the request at once (so a `dispatch` right after it sees it) and returns a future
//! that resolves when the request is admitted or rejected. The future is cancellation-safe:
//! dropping it (the client went away) removes the request from its queue.
//!
//! The queues sit behind one mutex held for a few pointer operations (never across an await
//! or the caller's closure); it is only touched by requests that have to wait.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::request::DroppedReason;

/// Limits of one priority band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandConfig {
    /// Most requests waiting in the band. Default: 5000.
    pub max_requests: usize,
    /// Most request-body bytes waiting in the band. Default: 1 GiB.
    pub max_bytes: u64,
    /// Longest wait before [`Rejected::TtlExpired`]. Default: 60 s.
    pub ttl: Duration,
}

impl Default for BandConfig {
    fn default() -> Self {
        BandConfig {
            max_requests: 5000,
            max_bytes: 1 << 30,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Flow control settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowConfig {
    /// Limits of bands without an entry in `bands`.
    pub default_band: BandConfig,
    /// Limits per priority.
    pub bands: BTreeMap<i32, BandConfig>,
    /// Longest wait while the pool has no endpoints. Default: 60 s (set by
    /// [`FlowController::new`] when zero).
    pub no_endpoint_ttl: Duration,
}

impl FlowConfig {
    fn band(&self, priority: i32) -> BandConfig {
        self.bands
            .get(&priority)
            .copied()
            .unwrap_or(self.default_band)
    }
}

/// A request entering flow control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRequest {
    /// Its priority (higher first).
    pub priority: i32,
    /// Its fairness flow.
    pub flow_id: String,
    /// Its body size, counted against [`BandConfig::max_bytes`].
    pub bytes: u64,
}

/// A request released to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// How long it waited.
    pub waited: Duration,
}

/// Why flow control turned a request away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Its band was full (429 `rejected-saturated`).
    #[error("the priority band's queue is full")]
    QueueFull,
    /// It waited longer than the band's TTL (429 `rejected-ttl-expired`).
    #[error("waited longer than the queue TTL")]
    TtlExpired,
    /// The pool had no endpoints for the no-endpoint TTL (503 `rejected-no-endpoints`).
    #[error("the pool has no endpoints")]
    NoEndpoints,
    /// The controller was closed (503 `rejected-shutting-down`).
    #[error("flow control is shutting down")]
    ShuttingDown,
}

impl Rejected {
    /// The dropped-reason header value and status to answer with.
    pub fn reason(self) -> DroppedReason {
        match self {
            Rejected::QueueFull => DroppedReason::Saturated,
            Rejected::TtlExpired => DroppedReason::TtlExpired,
            Rejected::NoEndpoints => DroppedReason::NoEndpoints,
            Rejected::ShuttingDown => DroppedReason::ShuttingDown,
        }
    }
}

struct Entry {
    id: u64,
    bytes: u64,
    enqueued: Instant,
    tx: oneshot::Sender<Result<Admitted, Rejected>>,
}

#[derive(Default)]
struct Band {
    flows: HashMap<Arc<str>, VecDeque<Entry>>,
    /// Flows with waiting requests, in turn order.
    turns: VecDeque<Arc<str>>,
    len: usize,
    bytes: u64,
}

impl Band {
    fn pop(&mut self) -> Option<Entry> {
        let flow = self.turns.pop_front()?;
        let queue = self.flows.get_mut(&flow)?;
        let entry = queue.pop_front()?;
        if queue.is_empty() {
            self.flows.remove(&flow);
        } else {
            self.turns.push_back(flow);
        }
        self.len -= 1;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn remove(&mut self, flow: &str, id: u64) -> Option<Entry> {
        let queue = self.flows.get_mut(flow)?;
        let pos = queue.iter().position(|e| e.id == id)?;
        let entry = queue.remove(pos)?;
        if queue.is_empty() {
            self.flows.remove(flow);
            self.turns.retain(|f| &**f != flow);
        }
        self.len -= 1;
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

#[derive(Default)]
struct State {
    bands: BTreeMap<i32, Band>,
    next_id: u64,
    closed: bool,
}

struct Shared {
    config: FlowConfig,
    state: Mutex<State>,
    has_endpoints: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, priority: i32, flow: &str, id: u64) -> Option<Entry> {
        let mut state = self.lock();
        let band = state.bands.get_mut(&priority)?;
        let entry = band.remove(flow, id);
        if band.len == 0 {
            state.bands.remove(&priority);
        }
        entry
    }
}

/// The flow-control queues of one pool (cheap to clone; clones share the queues).
#[derive(Clone)]
pub struct FlowController {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FlowController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowController")
            .field("waiting", &self.len())
            .finish()
    }
}

impl FlowController {
    /// A controller with `config` (a zero `no_endpoint_ttl` becomes 60 s). The pool is assumed
    /// to have endpoints until [`Self::set_has_endpoints`] says otherwise.
    pub fn new(mut config: FlowConfig) -> Self {
        if config.no_endpoint_ttl.is_zero() {
            config.no_endpoint_ttl = Duration::from_secs(60);
        }
        FlowController {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                has_endpoints: watch::Sender::new(true),
            }),
        }
    }

    /// Registers `req` now and returns a future that resolves when it is dispatched or rejected.
    /// A full band rejects at once. Dropping the future withdraws the request. Must be awaited
    /// inside a tokio runtime with a timer.
    pub fn enqueue(
        &self,
        req: FlowRequest,
    ) -> impl Future<Output = Result<Admitted, Rejected>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let band_config = self.shared.config.band(req.priority);
        let flow: Arc<str> = Arc::from(req.flow_id.as_str());
        let enqueued = Instant::now();
        let registered = {
            let mut state = self.shared.lock();
            if state.closed {
                Err(Rejected::ShuttingDown)
            } else {
                let id = state.next_id;
                state.next_id += 1;
                let band = state.bands.entry(req.priority).or_default();
                if band.len >= band_config.max_requests
                    || band.bytes.saturating_add(req.bytes) > band_config.max_bytes
                {
                    if band.len == 0 {
                        state.bands.remove(&req.priority);
                    }
                    Err(Rejected::QueueFull)
                } else {
                    let queue = band.flows.entry(flow.clone()).or_default();
                    if queue.is_empty() {
                        band.turns.push_back(flow.clone());
                    }
                    queue.push_back(Entry {
                        id,
                        bytes: req.bytes,
                        enqueued,
                        tx,
                    });
                    band.len += 1;
                    band.bytes += req.bytes;
                    Ok(id)
                }
            }
        };
        let waiter = registered.map(|id| Waiter {
            shared: self.shared.clone(),
            priority: req.priority,
            flow,
            id,
            done: false,
        });
        let ttl = band_config.ttl;
        let no_endpoint_ttl = self.shared.config.no_endpoint_ttl;
        let mut endpoints = self.shared.has_endpoints.subscribe();
        async move {
            let mut waiter = waiter?;
            let mut rx = rx;
            loop {
                let no_endpoints = !*endpoints.borrow_and_update();
                let deadline = enqueued + if no_endpoints { no_endpoint_ttl } else { ttl };
                tokio::select! {
                    biased;
                    result = &mut rx => {
                        waiter.done = true;
                        return result.unwrap_or(Err(Rejected::ShuttingDown));
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        waiter.done = true;
                        if waiter.shared.remove(waiter.priority, &waiter.flow, waiter.id).is_some() {
                            return Err(if no_endpoints { Rejected::NoEndpoints } else { Rejected::TtlExpired });
                        }
                        // Dispatched or closed at the same moment: that decision stands.
                        return rx.await.unwrap_or(Err(Rejected::ShuttingDown));
                    }
                    changed = endpoints.changed() => {
                        if changed.is_err() {
                            // The controller is gone; the sender side will close too.
                            return rx.await.unwrap_or(Err(Rejected::ShuttingDown));
                        }
                    }
                }
            }
        }
    }

    /// Releases waiting requests, best first, as long as `has_capacity()` says yes (it is asked
    /// before each release, without the queue lock held). Returns how many were released.
    /// Requests whose waiter has gone are skipped without consuming capacity.
    pub fn dispatch(&self, mut has_capacity: impl FnMut() -> bool) -> usize {
        let mut released = 0;
        while !self.is_empty() && has_capacity() {
            loop {
                let entry = {
                    let mut state = self.shared.lock();
                    let Some(mut band) = state.bands.last_entry() else {
                        return released;
                    };
                    let entry = band.get_mut().pop();
                    if band.get().len == 0 {
                        band.remove();
                    }
                    entry
                };
                let Some(entry) = entry else { return released };
                let admitted = Admitted {
                    waited: entry.enqueued.elapsed(),
                };
                if entry.tx.send(Ok(admitted)).is_ok() {
                    released += 1;
                    break;
                }
            }
        }
        released
    }

    /// Tells flow control whether the pool has endpoints (changes which TTL applies to waiting
    /// requests).
    pub fn set_has_endpoints(&self, has: bool) {
        self.shared
            .has_endpoints
            .send_if_modified(|v| std::mem::replace(v, has) != has);
    }

    /// Rejects every waiting request and all later ones with [`Rejected::ShuttingDown`].
    pub fn close(&self) {
        let bands = {
            let mut state = self.shared.lock();
            state.closed = true;
            std::mem::take(&mut state.bands)
        };
        for (_, band) in bands {
            for (_, queue) in band.flows {
                for e in queue {
                    let _ = e.tx.send(Err(Rejected::ShuttingDown));
                }
            }
        }
    }

    /// Requests waiting in all bands.
    pub fn len(&self) -> usize {
        self.shared.lock().bands.values().map(|b| b.len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().bands.is_empty()
    }

    /// Requests waiting at `priority`.
    pub fn band_len(&self, priority: i32) -> usize {
        self.shared.lock().bands.get(&priority).map_or(0, |b| b.len)
    }
}

/// Withdraws its request from the queue when the waiting future is dropped early.
struct Waiter {
    shared: Arc<Shared>,
    priority: i32,
    flow: Arc<str>,
    id: u64,
    done: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done {
            self.shared.remove(self.priority, &self.flow, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    type Fut = Pin<Box<dyn Future<Output = Result<Admitted, Rejected>> + Send>>;

    fn req(priority: i32, flow: &str) -> FlowRequest {
        FlowRequest {
            priority,
            flow_id: flow.into(),
            bytes: 10,
        }
    }

    fn enqueue(fc: &FlowController, priority: i32, flow: &str) -> Fut {
        Box::pin(fc.enqueue(req(priority, flow)))
    }

    /// Polls once without waiting.
    fn poll_now(f: &mut Fut) -> Poll<Result<Admitted, Rejected>> {
        let waker = std::task::Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    /// Releases one request at a time and reports which of `futs` completed, in order.
    async fn drain_order(fc: &FlowController, futs: &mut [(String, Fut)]) -> Vec<String> {
        let mut order = Vec::new();
        let mut done = vec![false; futs.len()];
        for _ in 0..futs.len() {
            let mut once = true;
            assert_eq!(fc.dispatch(|| std::mem::replace(&mut once, false)), 1);
            tokio::task::yield_now().await;
            for (i, (name, f)) in futs.iter_mut().enumerate() {
                if !done[i]
                    && let Poll::Ready(r) = poll_now(f)
                {
                    r.unwrap();
                    done[i] = true;
                    order.push(name.clone());
                }
            }
        }
        order
    }

    #[tokio::test(start_paused = true)]
    async fn strict_priority_between_bands() {
        let fc = FlowController::new(FlowConfig::default());
        let mut futs: Vec<(String, Fut)> = vec![
            ("low".into(), enqueue(&fc, -1, "a")),
            ("mid".into(), enqueue(&fc, 0, "a")),
            ("high".into(), enqueue(&fc, 10, "a")),
            ("mid2".into(), enqueue(&fc, 0, "a")),
        ];
        for (_, f) in &mut futs {
            assert!(poll_now(f).is_pending());
        }
        assert_eq!(fc.len(), 4);
        assert_eq!(fc.band_len(0), 2);
        assert_eq!(
            drain_order(&fc, &mut futs).await,
            vec!["high", "mid", "mid2", "low"]
        );
        assert!(fc.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_between_flows_fifo_within() {
        let fc = FlowController::new(FlowConfig::default());
        let mut futs: Vec<(String, Fut)> = vec![
            ("a1".into(), enqueue(&fc, 0, "a")),
            ("a2".into(), enqueue(&fc, 0, "a")),
            ("a3".into(), enqueue(&fc, 0, "a")),
            ("b1".into(), enqueue(&fc, 0, "b")),
            ("c1".into(), enqueue(&fc, 0, "c")),
            ("b2".into(), enqueue(&fc, 0, "b")),
        ];
        for (_, f) in &mut futs {
            assert!(poll_now(f).is_pending());
        }
        assert_eq!(
            drain_order(&fc, &mut futs).await,
            vec!["a1", "b1", "c1", "a2", "b2", "a3"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dispatch_stops_when_capacity_ends() {
        let fc = FlowController::new(FlowConfig::default());
        let mut futs: Vec<Fut> = (0..5).map(|_| enqueue(&fc, 0, "a")).collect();
        let mut budget = 2;
        let released = fc.dispatch(|| {
            budget -= 1;
            budget >= 0
        });
        assert_eq!(released, 2);
        assert_eq!(fc.len(), 3);
        assert!(matches!(poll_now(&mut futs[0]), Poll::Ready(Ok(_))));
        assert!(matches!(poll_now(&mut futs[1]), Poll::Ready(Ok(_))));
        assert!(poll_now(&mut futs[2]).is_pending());
        assert_eq!(fc.dispatch(|| false), 0);
        assert_eq!(fc.dispatch(|| true), 3);
        assert_eq!(fc.dispatch(|| true), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn band_bound_rejects_with_queue_full() {
        let config = FlowConfig {
            bands: BTreeMap::from([(
                0,
                BandConfig {
                    max_requests: 2,
                    ..BandConfig::default()
                },
            )]),
            default_band: BandConfig {
                max_bytes: 25,
                ..BandConfig::default()
            },
            ..FlowConfig::default()
        };
        let fc = FlowController::new(config);
        let _a = enqueue(&fc, 0, "a");
        let _b = enqueue(&fc, 0, "b");
        let mut c = enqueue(&fc, 0, "c");
        assert_eq!(poll_now(&mut c), Poll::Ready(Err(Rejected::QueueFull)));
        assert_eq!(Rejected::QueueFull.reason().as_str(), "rejected-saturated");
        assert_eq!(Rejected::QueueFull.reason().status(), 429);
        // Another band has its own bound (here by bytes: 10 + 10 fit in 25, 30 does not).
        let _d = enqueue(&fc, 5, "a");
        let _e = enqueue(&fc, 5, "a");
        let mut f = enqueue(&fc, 5, "a");
        assert_eq!(poll_now(&mut f), Poll::Ready(Err(Rejected::QueueFull)));
        assert_eq!(fc.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expiry_rejects_and_leaves_the_queue() {
        let config = FlowConfig {
            default_band: BandConfig {
                ttl: Duration::from_secs(2),
                ..BandConfig::default()
            },
            ..FlowConfig::default()
        };
        let fc = FlowController::new(config);
        let first = fc.enqueue(req(0, "a"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = fc.enqueue(req(0, "a"));
        assert_eq!(first.await, Err(Rejected::TtlExpired));
        assert_eq!(fc.len(), 1);
        let mut second: Fut = Box::pin(second);
        assert!(poll_now(&mut second).is_pending());
        assert_eq!(fc.dispatch(|| true), 1);
        let admitted = second.await.unwrap();
        assert!(admitted.waited >= Duration::from_secs(1));
        assert_eq!(Rejected::TtlExpired.reason().status(), 429);
    }

    #[tokio::test(start_paused = true)]
    async fn no_endpoints_ttl_gives_503() {
        let config = FlowConfig {
            default_band: BandConfig {
                ttl: Duration::from_secs(60),
                ..BandConfig::default()
            },
            no_endpoint_ttl: Duration::from_secs(5),
            ..FlowConfig::default()
        };
        let fc = FlowController::new(config);
        let waiting = fc.enqueue(req(0, "a"));
        let handle = tokio::spawn(waiting);
        tokio::time::sleep(Duration::from_secs(1)).await;
        fc.set_has_endpoints(false);
        let result = handle.await.unwrap();
        assert_eq!(result, Err(Rejected::NoEndpoints));
        assert_eq!(result.unwrap_err().reason().status(), 503);
        assert!(fc.is_empty());
        // With endpoints back, the normal TTL applies again.
        fc.set_has_endpoints(true);
        let mut f: Fut = Box::pin(fc.enqueue(req(0, "a")));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(poll_now(&mut f).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_waiter_leaves_the_queue() {
        let fc = FlowController::new(FlowConfig::default());
        let gone = enqueue(&fc, 0, "a");
        let mut polled_then_gone = enqueue(&fc, 0, "b");
        assert!(poll_now(&mut polled_then_gone).is_pending());
        let mut stays = enqueue(&fc, 0, "a");
        assert_eq!(fc.len(), 3);
        drop(gone);
        drop(polled_then_gone);
        assert_eq!(fc.len(), 1);
        // The next dispatch goes to the remaining waiter, not to a ghost.
        assert_eq!(fc.dispatch(|| true), 1);
        assert!(matches!(poll_now(&mut stays), Poll::Ready(Ok(_))));
        assert!(fc.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn close_rejects_waiting_and_new_requests() {
        let fc = FlowController::new(FlowConfig::default());
        let mut waiting = enqueue(&fc, 0, "a");
        fc.close();
        assert_eq!(
            poll_now(&mut waiting),
            Poll::Ready(Err(Rejected::ShuttingDown))
        );
        let mut late = enqueue(&fc, 0, "a");
        assert_eq!(
            poll_now(&mut late),
            Poll::Ready(Err(Rejected::ShuttingDown))
        );
        assert!(fc.is_empty());
    }
}
