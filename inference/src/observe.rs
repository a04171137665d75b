//! Prometheus metrics of the inference data plane, served in the gateway's registry.
//!
//! Each pool runtime owns one [`PoolStats`]: counters and histograms the request path updates
//! with relaxed atomic additions only. Per-endpoint handles ([`EndpointStats`]) sit in a table
//! sorted by address that is rebuilt when the pool's endpoints change
//! ([`PoolStats::set_endpoints`]; endpoints that stay keep their handles and counts); the
//! request path finds one by a binary search on that table (one atomic load, no lock, no
//! allocation, no label built).
//!
//! Everything else happens at scrape time: [`encode`] writes every pool's series, reading the
//! endpoints' scraped state from the pool's [`MetricsStore`] then. The gateway module registers
//! a `prometheus_client` collector that calls it with the pools alive at that moment, so the
//! series of a pool no configuration references any more are gone from the next scrape.
//!
//! Names, types, labels and meanings are an interface: see `docs/observability.md`,
//! "Inference metrics".

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gateway_core::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use gateway_core::prometheus_client::metrics::MetricType;
use gateway_core::prometheus_client::metrics::counter::ConstCounter;
use gateway_core::prometheus_client::metrics::gauge::ConstGauge;
use gateway_core::prometheus_client::registry::Unit;

use gateway_core::observe::metrics::AtomicHistogram;

use crate::extproc::client::PickError;
use crate::request::DroppedReason;
use crate::scheduler::SaturationDetector;
use crate::scrape::MetricsStore;

const fn us(v: u64) -> u64 {
    v * 1_000
}

const fn ms(v: u64) -> u64 {
    v * 1_000_000
}

/// Upper bounds (nanoseconds) of the scheduling duration buckets: 10 µs to 100 ms (a pick of
/// the reference profile over 64 endpoints takes about 15 µs).
const SCHEDULE_BOUNDS: &[u64] = &[
    us(10),
    us(25),
    us(50),
    us(100),
    us(250),
    us(500),
    ms(1),
    us(2500),
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
];

/// Upper bounds (nanoseconds) of the flow-control wait buckets: 1 ms to 60 s (the default TTL).
const QUEUE_BOUNDS: &[u64] = &[
    ms(1),
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
    ms(250),
    ms(500),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(10000),
    ms(30000),
    ms(60000),
];

/// Why the pool filter refused a request: the `reason` label of
/// `gateway_inference_requests_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 429 `rejected-saturated`: a sheddable request while the pool was saturated, or a full
    /// flow-control band.
    Saturated,
    /// 429 `rejected-ttl-expired`: waited in flow control past its band's TTL.
    TtlExpired,
    /// 503 `rejected-no-endpoints`: the pool had no endpoint to serve it.
    NoEndpoints,
    /// 503 `rejected-shutting-down`: flow control closed while the request waited.
    ShuttingDown,
    /// 413: the body is over the bound.
    TooLarge,
    /// 400: not an OpenAI completions or chat request.
    Malformed,
}

impl Rejection {
    const ALL: [Rejection; 6] = [
        Rejection::Saturated,
        Rejection::TtlExpired,
        Rejection::NoEndpoints,
        Rejection::ShuttingDown,
        Rejection::TooLarge,
        Rejection::Malformed,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::Saturated => DroppedReason::Saturated.as_str(),
            Rejection::TtlExpired => DroppedReason::TtlExpired.as_str(),
            Rejection::NoEndpoints => DroppedReason::NoEndpoints.as_str(),
            Rejection::ShuttingDown => DroppedReason::ShuttingDown.as_str(),
            Rejection::TooLarge => "request-too-large",
            Rejection::Malformed => "malformed-request",
        }
    }

    /// The rejection a flow-control or admission drop reason is counted as.
    pub(crate) fn from_dropped(reason: DroppedReason) -> Rejection {
        match reason {
            DroppedReason::Saturated | DroppedReason::Evicted => Rejection::Saturated,
            DroppedReason::TtlExpired => Rejection::TtlExpired,
            DroppedReason::NoEndpoints => Rejection::NoEndpoints,
            DroppedReason::ShuttingDown
            | DroppedReason::ContextCancelled
            | DroppedReason::Internal => Rejection::ShuttingDown,
        }
    }
}

/// What happened with the external endpoint picker for one request: the `result` label of
/// `gateway_inference_endpoint_picker_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PickerResult {
    /// The picker named the endpoints.
    Picked,
    /// The picker answered the request itself (`ImmediateResponse`).
    Immediate,
    /// The picker failed; the in-process picker served the request (`FailOpen`).
    FailOpen,
    /// The picker failed; the client got 503 (`FailClose`).
    FailClose,
}

impl PickerResult {
    const ALL: [PickerResult; 4] = [
        PickerResult::Picked,
        PickerResult::Immediate,
        PickerResult::FailOpen,
        PickerResult::FailClose,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PickerResult::Picked => "picked",
            PickerResult::Immediate => "immediate",
            PickerResult::FailOpen => "fail-open",
            PickerResult::FailClose => "fail-close",
        }
    }
}

/// How the external picker failed: the `error` label of
/// `gateway_inference_endpoint_picker_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PickerFailure {
    /// The `endpointPickerRef` does not resolve (no ready address): not tried.
    Unresolved,
    /// The stream could not be opened or failed (unreachable, gRPC error).
    Unavailable,
    /// A message did not come in time.
    Timeout,
    /// The stream ended before an answer.
    Closed,
    /// The answer was unusable (no destination, an address outside the pool, ...).
    BadAnswer,
}

impl PickerFailure {
    const ALL: [PickerFailure; 5] = [
        PickerFailure::Unresolved,
        PickerFailure::Unavailable,
        PickerFailure::Timeout,
        PickerFailure::Closed,
        PickerFailure::BadAnswer,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PickerFailure::Unresolved => "unresolved",
            PickerFailure::Unavailable => "unavailable",
            PickerFailure::Timeout => "timeout",
            PickerFailure::Closed => "closed",
            PickerFailure::BadAnswer => "bad-answer",
        }
    }

    /// The kind of a client error.
    pub(crate) fn of(error: &PickError) -> PickerFailure {
        match error {
            PickError::Unavailable(_) => PickerFailure::Unavailable,
            PickError::Timeout(_) => PickerFailure::Timeout,
            PickError::Closed => PickerFailure::Closed,
            PickError::BadAnswer(_) => PickerFailure::BadAnswer,
        }
    }
}

/// How a wait in flow control ended: the `outcome` label of
/// `gateway_inference_flow_control_queue_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueOutcome {
    /// Released to the scheduler.
    Dispatched,
    /// Refused (band full, TTL expired, no endpoints, shutting down).
    Rejected,
    /// The client went away while it waited.
    Cancelled,
}

impl QueueOutcome {
    const ALL: [QueueOutcome; 3] = [
        QueueOutcome::Dispatched,
        QueueOutcome::Rejected,
        QueueOutcome::Cancelled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            QueueOutcome::Dispatched => "dispatched",
            QueueOutcome::Rejected => "rejected",
            QueueOutcome::Cancelled => "cancelled",
        }
    }
}

/// The counters of one endpoint of a pool.
#[derive(Default)]
struct EndpointStats {
    picked: AtomicU64,
    served: AtomicU64,
}

/// The endpoint handles of a pool, sorted by address.
type EndpointTable = Vec<(SocketAddr, Arc<EndpointStats>)>;

/// What the data plane counts for one pool (one per pool runtime, kept across configuration
/// swaps with it).
pub(crate) struct PoolStats {
    endpoints: ArcSwap<EndpointTable>,
    rejected: [AtomicU64; Rejection::ALL.len()],
    picker: [AtomicU64; PickerResult::ALL.len()],
    picker_errors: [AtomicU64; PickerFailure::ALL.len()],
    /// Whether the pool names an external picker (its series are written even at zero).
    external: AtomicBool,
    schedule: AtomicHistogram,
    queue: [AtomicHistogram; QueueOutcome::ALL.len()],
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            endpoints: ArcSwap::from_pointee(Vec::new()),
            rejected: Default::default(),
            picker: Default::default(),
            picker_errors: Default::default(),
            external: AtomicBool::new(false),
            schedule: AtomicHistogram::new(SCHEDULE_BOUNDS),
            queue: std::array::from_fn(|_| AtomicHistogram::new(QUEUE_BOUNDS)),
        }
    }
}

impl PoolStats {
    /// Makes the per-endpoint handles match `addresses` (duplicates collapse). Endpoints that
    /// stay keep their counts; removed ones take their series with them. Runs when a
    /// configuration is applied, not on the request path.
    pub(crate) fn set_endpoints(&self, addresses: impl IntoIterator<Item = SocketAddr>) {
        let old = self.endpoints.load();
        let mut table: EndpointTable = addresses
            .into_iter()
            .map(|a| {
                let stats = find(&old, a).cloned().unwrap_or_default();
                (a, stats)
            })
            .collect();
        table.sort_unstable_by_key(|(a, _)| *a);
        table.dedup_by_key(|(a, _)| *a);
        self.endpoints.store(Arc::new(table));
    }

    /// Whether the pool has endpoints in the active configuration.
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.endpoints.load().is_empty()
    }

    /// Records whether the pool names an external endpoint picker. Configuration time.
    pub(crate) fn set_external(&self, external: bool) {
        self.external.store(external, Ordering::Relaxed);
    }

    /// The scheduler (or the external picker) chose `endpoint` first for a request.
    pub(crate) fn picked(&self, endpoint: SocketAddr) {
        if let Some(s) = find(&self.endpoints.load(), endpoint) {
            s.picked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `endpoint` answered a request of the pool (the last attempt's endpoint).
    pub(crate) fn served(&self, endpoint: SocketAddr) {
        if let Some(s) = find(&self.endpoints.load(), endpoint) {
            s.served.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The pool filter refused a request.
    pub(crate) fn rejected(&self, why: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One pick by the in-process scheduler took `took`.
    pub(crate) fn scheduled(&self, took: Duration) {
        self.schedule.observe(took);
    }

    /// A request left flow control after waiting `waited`.
    pub(crate) fn dequeued(&self, outcome: QueueOutcome, waited: Duration) {
        let i = QueueOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.queue[i].observe(waited);
    }

    /// What the external picker did for one request.
    pub(crate) fn picker(&self, result: PickerResult) {
        let i = PickerResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.picker[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The external picker failed.
    pub(crate) fn picker_failed(&self, failure: PickerFailure) {
        let i = PickerFailure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or(0);
        self.picker_errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The handle of `addr` in a sorted table.
fn find(
    table: &[(SocketAddr, Arc<EndpointStats>)],
    addr: SocketAddr,
) -> Option<&Arc<EndpointStats>> {
    table
        .binary_search_by_key(&addr, |(a, _)| *a)
        .ok()
        .map(|i| &table[i].1)
}

/// Records the time a request spends in flow control when dropped: with the outcome set by
/// [`QueueTimer::finish`], or `cancelled` when the wait was abandoned (the client went away).
pub(crate) struct QueueTimer<'a> {
    stats: &'a PoolStats,
    started: Instant,
    outcome: QueueOutcome,
}

impl<'a> QueueTimer<'a> {
    /// Starts timing a wait of a request of `stats`' pool.
    pub(crate) fn start(stats: &'a PoolStats) -> Self {
        QueueTimer {
            stats,
            started: Instant::now(),
            outcome: QueueOutcome::Cancelled,
        }
    }

    /// Sets how the wait ended.
    pub(crate) fn finish(&mut self, outcome: QueueOutcome) {
        self.outcome = outcome;
    }
}

impl Drop for QueueTimer<'_> {
    fn drop(&mut self) {
        self.stats.dequeued(self.outcome, self.started.elapsed());
    }
}

/// One pool as the scrape sees it.
pub(crate) struct PoolView<'a> {
    /// `namespace/name`: the `pool` label.
    pub(crate) key: &'a str,
    pub(crate) stats: &'a PoolStats,
    pub(crate) store: &'a MetricsStore,
    pub(crate) detector: &'a SaturationDetector,
    /// Requests waiting in flow control now; `None` when flow control is off.
    pub(crate) waiting: Option<usize>,
}

/// An endpoint's scraped state at scrape time.
struct EndpointState {
    label: String,
    /// Waiting, running, KV usage and the metrics' age; `None` when never scraped.
    scraped: Option<(u32, u32, f64, Duration)>,
    stale: bool,
}

/// Writes the series of `pools` (sorted by key by the caller) at `now`. Scrape time only.
pub(crate) fn encode(
    encoder: &mut DescriptorEncoder<'_>,
    pools: &[PoolView<'_>],
    now: Instant,
) -> fmt::Result {
    // Endpoint state and labels, computed once per scrape.
    let states: Vec<Vec<EndpointState>> = pools.iter().map(|p| endpoint_states(p, now)).collect();
    let tables: Vec<Arc<EndpointTable>> = pools
        .iter()
        .map(|p| p.stats.endpoints.load_full())
        .collect();

    type Count = fn(&EndpointStats) -> &AtomicU64;
    let per_endpoint: [(&str, &str, Count); 2] = [
        (
            "gateway_inference_requests_picked",
            "Requests for which the pool's scheduler (or its external endpoint picker) chose the endpoint first, by pool and endpoint",
            |s| &s.picked,
        ),
        (
            "gateway_inference_requests_served",
            "Requests of the pool answered by an endpoint (the endpoint of the last attempt, after retries), by pool and endpoint",
            |s| &s.served,
        ),
    ];
    for (name, help, count) in per_endpoint {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (p, table) in pools.iter().zip(&tables) {
            for (addr, s) in table.iter() {
                let endpoint = addr.to_string();
                let labels = [("pool", p.key), ("endpoint", endpoint.as_str())];
                ConstCounter::new(count(s).load(Ordering::Relaxed))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_requests_rejected",
        "Requests the pool's filter refused, by pool and reason: rejected-saturated and rejected-ttl-expired (429), rejected-no-endpoints and rejected-shutting-down (503), request-too-large (413), malformed-request (400)",
        None,
        MetricType::Counter,
    )?;
    for p in pools {
        for (why, count) in Rejection::ALL.iter().zip(&p.stats.rejected) {
            let labels = [("pool", p.key), ("reason", why.as_str())];
            ConstCounter::new(count.load(Ordering::Relaxed)).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_scheduler_duration",
        "Time the in-process scheduler took to order the pool's endpoints for one request (candidates, filters, scorers, picker), by pool",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for p in pools {
        p.stats
            .schedule
            .encode(&mut m.encode_family(&[("pool", p.key)])?)?;
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_flow_control_requests_waiting",
        "Requests waiting in the pool's flow-control queues now, by pool (pools with flow control on)",
        None,
        MetricType::Gauge,
    )?;
    for p in pools {
        if let Some(waiting) = p.waiting {
            ConstGauge::new(i64::try_from(waiting).unwrap_or(i64::MAX))
                .encode(m.encode_family(&[("pool", p.key)])?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_flow_control_queue_duration",
        "Time requests waited in the pool's flow-control queues, by pool and outcome: dispatched, rejected (band full, TTL expired, no endpoints), cancelled (the client went away)",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for p in pools.iter().filter(|p| p.waiting.is_some()) {
        for (outcome, h) in QueueOutcome::ALL.iter().zip(&p.stats.queue) {
            let labels = [("pool", p.key), ("outcome", outcome.as_str())];
            h.encode(&mut m.encode_family(&labels)?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_pool_endpoints",
        "Endpoints of the pool in the active configuration, by pool",
        None,
        MetricType::Gauge,
    )?;
    for (p, s) in pools.iter().zip(&states) {
        ConstGauge::new(i64::try_from(s.len()).unwrap_or(i64::MAX))
            .encode(m.encode_family(&[("pool", p.key)])?)?;
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_pool_saturation",
        "The pool's saturation as admission sees it: the mean over its endpoints of max(waiting / queue threshold, KV usage / KV threshold), an endpoint without fresh metrics counting 1.0; sheddable requests are refused at 1.0 or more",
        None,
        MetricType::Gauge,
    )?;
    for p in pools {
        let saturation = p.store.pool_saturation(p.detector, now, true);
        ConstGauge::new(saturation).encode(m.encode_family(&[("pool", p.key)])?)?;
    }
    type Field = fn(&(u32, u32, f64, Duration)) -> f64;
    let gauges: [(&str, &str, Option<Unit>, Field); 4] = [
        (
            "gateway_inference_endpoint_requests_waiting",
            "Requests queued in the model server, from its last successful scrape, by pool and endpoint",
            None,
            |s| f64::from(s.0),
        ),
        (
            "gateway_inference_endpoint_requests_running",
            "Requests being served by the model server, from its last successful scrape, by pool and endpoint",
            None,
            |s| f64::from(s.1),
        ),
        (
            "gateway_inference_endpoint_kv_cache_usage_ratio",
            "KV cache usage of the model server (0 to 1), from its last successful scrape, by pool and endpoint",
            None,
            |s| s.2,
        ),
        (
            "gateway_inference_endpoint_metrics_age",
            "Age of the model server's last successful scrape, by pool and endpoint",
            Some(Unit::Seconds),
            |s| s.3.as_secs_f64(),
        ),
    ];
    for (name, help, unit, field) in gauges {
        let mut m = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (p, states) in pools.iter().zip(&states) {
            for e in states {
                if let Some(scraped) = &e.scraped {
                    let labels = [("pool", p.key), ("endpoint", e.label.as_str())];
                    ConstGauge::new(field(scraped)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_endpoint_metrics_stale",
        "1 when the model server's metrics are missing or older than the staleness threshold (200 ms by default; such an endpoint counts as saturated), else 0, by pool and endpoint",
        None,
        MetricType::Gauge,
    )?;
    for (p, states) in pools.iter().zip(&states) {
        for e in states {
            let labels = [("pool", p.key), ("endpoint", e.label.as_str())];
            ConstGauge::new(i64::from(e.stale)).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_endpoint_picker_requests",
        "Requests of pools with an external endpoint picker, by pool and result: picked (the picker named the endpoints), immediate (the picker answered the request itself), fail-open (the picker failed, the in-process picker served), fail-close (the picker failed, 503)",
        None,
        MetricType::Counter,
    )?;
    let external = |p: &&PoolView<'_>| {
        p.stats.external.load(Ordering::Relaxed)
            || p.stats
                .picker
                .iter()
                .chain(&p.stats.picker_errors)
                .any(|c| c.load(Ordering::Relaxed) > 0)
    };
    for p in pools.iter().filter(external) {
        for (result, count) in PickerResult::ALL.iter().zip(&p.stats.picker) {
            let labels = [("pool", p.key), ("result", result.as_str())];
            ConstCounter::new(count.load(Ordering::Relaxed)).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "gateway_inference_endpoint_picker_errors",
        "Failures of the external endpoint picker, by pool and error: unresolved (the reference has no ready address; not tried), unavailable (unreachable, gRPC error), timeout, closed (the stream ended before an answer), bad-answer (no destination, an address outside the pool)",
        None,
        MetricType::Counter,
    )?;
    for p in pools.iter().filter(external) {
        for (error, count) in PickerFailure::ALL.iter().zip(&p.stats.picker_errors) {
            let labels = [("pool", p.key), ("error", error.as_str())];
            ConstCounter::new(count.load(Ordering::Relaxed)).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The scraped state of `pool`'s endpoints at `now`, sorted by address.
fn endpoint_states(pool: &PoolView<'_>, now: Instant) -> Vec<EndpointState> {
    let mut addresses: Vec<SocketAddr> =
        pool.store.endpoints().into_iter().map(|(a, _)| a).collect();
    addresses.sort_unstable();
    addresses
        .into_iter()
        .map(|addr| {
            let latest = pool.store.get(addr);
            let stale = latest
                .as_ref()
                .is_none_or(|s| s.is_stale(now, pool.detector.staleness));
            EndpointState {
                label: addr.to_string(),
                scraped: latest.map(|s| {
                    (
                        s.metrics.waiting,
                        s.metrics.running,
                        s.metrics.kv_usage,
                        s.age(now),
                    )
                }),
                stale,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
