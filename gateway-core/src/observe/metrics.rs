//! Prometheus metrics of a [`crate::Gateway`]: one registry per gateway, encoded on demand.
//!
//! Metrics are always on. The request path only does relaxed atomic additions on handles the
//! routing table resolved when it was compiled ([`RouteStats`] per listener, route, rule and
//! backend; [`BackendStats`] per backend): no label is built, no lock taken and no map searched
//! per request. The first request of a status class on a series allocates that class's buckets
//! once. Everything else (labels, sorting, text) happens when the metrics are scraped.
//!
//! The names, labels and meanings are an interface: see `docs/observability.md`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (nanoseconds) of the request duration buckets: OpenTelemetry's advice for
/// `http.server.request.duration`, 5 ms to 10 s.
const DURATION_BOUNDS: &[u64] = &[
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(75),
    ms(100),
    ms(250),
    ms(500),
    ms(750),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(7500),
    ms(10000),
];

/// Upper bounds (nanoseconds) of the upstream connect time buckets: 0.5 ms to 10 s.
const CONNECT_BOUNDS: &[u64] = &[
    us(500),
    ms(1),
    us(2500),
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
];

/// The most bounds an [`AtomicHistogram`] has (one more bucket holds what is above them all).
pub const MAX_BOUNDS: usize = 14;

const fn ms(v: u64) -> u64 {
    v * 1_000_000
}

const fn us(v: u64) -> u64 {
    v * 1_000
}

/// The `status_class` label values, by [`status_class`] index.
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`CLASSES`] of a response status; 0 (`none`) when no response was sent.
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

/// A histogram of durations whose observations are two relaxed atomic additions: what the
/// gateway's own duration histograms use, public so that other crates (the inference data
/// plane) record theirs on the request path the same way and encode them from their own
/// [`Collector`]. Bounds are nanoseconds, ascending, at most [`MAX_BOUNDS`].
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [u64],
    /// Per-bucket (not cumulative) counts; the last holds observations above every bound.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (nanoseconds, ascending, at most [`MAX_BOUNDS`]).
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.len() <= MAX_BOUNDS);
        AtomicHistogram {
            bounds,
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration: two relaxed atomic additions, no lock, no allocation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .bounds
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the series in seconds, buckets cumulative (the count is the buckets' total, so
    /// the two always agree). Called when the metrics are scraped.
    pub fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> fmt::Result {
        let mut buckets = [(0.0, 0u64); MAX_BOUNDS + 1];
        let n = self.bounds.len();
        for (i, slot) in buckets.iter_mut().enumerate().take(n + 1) {
            let bound = self
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / 1e9);
            *slot = (bound, self.counts[i].load(Ordering::Relaxed));
        }
        let count = buckets[..=n].iter().map(|(_, c)| c).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets[..=n], None)
    }
}

/// One [`AtomicHistogram`] per status class, each allocated by its first observation.
struct ClassHistograms {
    bounds: &'static [u64],
    classes: [OnceLock<Box<AtomicHistogram>>; 6],
}

impl ClassHistograms {
    fn new(bounds: &'static [u64]) -> Self {
        ClassHistograms {
            bounds,
            classes: Default::default(),
        }
    }

    fn observe(&self, status: u16, d: Duration) {
        self.classes[status_class(status)]
            .get_or_init(|| Box::new(AtomicHistogram::new(self.bounds)))
            .observe(d);
    }

    /// The classes observed at least once, with their label value.
    fn used(&self) -> impl Iterator<Item = (&'static str, &AtomicHistogram)> {
        CLASSES
            .iter()
            .zip(&self.classes)
            .filter_map(|(name, h)| Some((*name, h.get()?.as_ref())))
    }
}

/// The request counts and durations of one (listener, route, rule, backend): the handle a
/// compiled rule keeps for `http_server_request_duration_seconds`.
pub(crate) struct RouteStats {
    requests: ClassHistograms,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            requests: ClassHistograms::new(DURATION_BOUNDS),
        }
    }

    /// Counts a finished request: `status` 0 when no response was sent.
    pub(crate) fn request(&self, status: u16, d: Duration) {
        self.requests.observe(status, d);
    }
}

/// What the gateway measures of one backend (by name).
pub(crate) struct BackendStats {
    connect: AtomicHistogram,
    responses: ClassHistograms,
    connect_errors: AtomicU64,
    retries: AtomicU64,
    ejections: AtomicU64,
}

impl BackendStats {
    fn new() -> Self {
        BackendStats {
            connect: AtomicHistogram::new(CONNECT_BOUNDS),
            responses: ClassHistograms::new(DURATION_BOUNDS),
            connect_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// A new connection to an endpoint took `d` (TCP, and TLS for TLS backends).
    pub(crate) fn connected(&self, d: Duration) {
        self.connect.observe(d);
    }

    /// A connection to an endpoint failed.
    pub(crate) fn connect_failed(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt got the response head `status` after `d`.
    pub(crate) fn response(&self, status: u16, d: Duration) {
        self.responses.observe(status, d);
    }

    /// Another attempt of a request started (a retry, or a failover to another endpoint).
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Outlier detection ejected one of the backend's endpoints.
    pub(crate) fn ejected(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads one counter of a [`BackendStats`].
type BackendCounter = fn(&BackendStats) -> &AtomicU64;

/// (listener, route as `namespace/name`, rule, backend), each interned ([`Labels`]): with
/// 10,000 routes the listener, rule and backend labels are a handful of strings shared by every
/// series, and each route label is stored once for the series of all its rules and backends.
type RouteKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>);

/// The route series and the label strings they share.
#[derive(Default)]
struct RouteSeries {
    series: BTreeMap<RouteKey, Arc<RouteStats>>,
    labels: Labels,
}

impl RouteSeries {
    /// Forgets the series no table (and no request) holds any more, which belong to removed
    /// routes, and the labels only they used.
    fn prune(&mut self) {
        self.series.retain(|_, s| Arc::strong_count(s) > 1);
        self.labels.0.retain(|l| Arc::strong_count(l) > 1);
    }
}

/// The label values of the route series, each stored once.
#[derive(Default)]
struct Labels(HashSet<Arc<str>>);

impl Labels {
    /// The shared copy of `value`.
    fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(known) = self.0.get(value) {
            return known.clone();
        }
        let value: Arc<str> = Arc::from(value);
        self.0.insert(value.clone());
        value
    }
}

/// Counters the gateway keeps elsewhere, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RuntimeStats {
    pub(crate) open_connections: usize,
    pub(crate) refused_connections: u64,
    pub(crate) buffered_body_bytes: usize,
    pub(crate) refused_body_reservations: u64,
    pub(crate) mirrors_in_flight: usize,
    pub(crate) mirrors_completed: u64,
    pub(crate) mirrors_dropped: u64,
    pub(crate) mirrors_failed: u64,
}

type RuntimeSource = Box<dyn Fn() -> RuntimeStats + Send + Sync>;

/// The series the request path writes, and the scrape-time sources; encoded by [`Series`]'s
/// [`Collector`] implementation.
struct Series {
    routes: Mutex<RouteSeries>,
    backends: Mutex<BTreeMap<Arc<str>, Arc<BackendStats>>>,
    runtime: OnceLock<RuntimeSource>,
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Series").finish_non_exhaustive()
    }
}

/// Locks `m`, going on if a holder panicked (the maps stay consistent: every change is one
/// insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        {
            // Series no table (and no request) holds any more belong to removed routes.
            let mut routes = lock(&self.routes);
            routes.prune();
            let mut m = encoder.encode_descriptor(
                "http_server_request_duration",
                "Duration of requests, from the request head received to the response sent, by listener, route, rule, backend and status class. A request that matched no route has empty route, rule and backend labels",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for ((listener, route, rule, backend), stats) in routes.series.iter() {
                for (class, h) in stats.requests.used() {
                    let labels = [
                        ("listener", &**listener),
                        ("route", &**route),
                        ("rule", &**rule),
                        ("backend", &**backend),
                        ("status_class", class),
                    ];
                    h.encode(&mut m.encode_family(&labels)?)?;
                }
            }
        }
        let mut backends = lock(&self.backends);
        backends.retain(|_, s| Arc::strong_count(s) > 1);
        {
            let mut m = encoder.encode_descriptor(
                "http_client_request_duration",
                "Duration of attempts to backends, from choosing the endpoint to the response head received, by backend and status class",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (backend, stats) in backends.iter() {
                for (class, h) in stats.responses.used() {
                    let labels = [("backend", &**backend), ("status_class", class)];
                    h.encode(&mut m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "gateway_upstream_connect_duration",
                "Time to open a new connection to a backend endpoint (TCP, and the TLS handshake for TLS backends), by backend",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (backend, stats) in backends.iter() {
                if stats.connect.count() > 0 {
                    let labels = [("backend", &**backend)];
                    stats.connect.encode(&mut m.encode_family(&labels)?)?;
                }
            }
        }
        let counters: [(&str, &str, BackendCounter); 3] = [
            (
                "gateway_upstream_connect_errors",
                "Connections to backend endpoints that failed (refused, timed out, TLS errors), by backend",
                |s| &s.connect_errors,
            ),
            (
                "gateway_upstream_retries",
                "Attempts after the first of a request (retries under a retry policy and connection failovers to another endpoint), by backend",
                |s| &s.retries,
            ),
            (
                "gateway_endpoint_ejections",
                "Endpoints ejected by passive outlier detection, by backend",
                |s| &s.ejections,
            ),
        ];
        for (name, help, field) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (backend, stats) in backends.iter() {
                let labels = [("backend", &**backend)];
                ConstCounter::new(field(stats).load(Ordering::Relaxed))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        drop(backends);

        let Some(source) = self.runtime.get() else {
            return Ok(());
        };
        let r = source();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: usize| {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)
        };
        gauge(
            &mut encoder,
            "gateway_downstream_connections_active",
            "Downstream (client) connections open now, across all binds",
            r.open_connections,
        )?;
        counter(
            &mut encoder,
            "gateway_downstream_connections_refused",
            "Downstream connections closed at accept because a connection limit was reached",
            r.refused_connections,
        )?;
        gauge(
            &mut encoder,
            "gateway_buffered_body_bytes",
            "Request-body bytes held in memory now (replay buffers, filter buffers, mirror queues)",
            r.buffered_body_bytes,
        )?;
        counter(
            &mut encoder,
            "gateway_body_reservations_refused",
            "Request-body buffering refused because the buffering cap was reached (requests answered 503, mirror copies dropped)",
            r.refused_body_reservations,
        )?;
        gauge(
            &mut encoder,
            "gateway_mirror_requests_in_flight",
            "Mirrored requests on their way now",
            r.mirrors_in_flight,
        )?;
        let mut m = encoder.encode_descriptor(
            "gateway_mirror_requests",
            "Mirrored requests by result: completed (the mirror answered), dropped (over the in-flight bound, or could not keep up with the body), failed (connect, protocol or timeout errors)",
            None,
            MetricType::Counter,
        )?;
        for (result, v) in [
            ("completed", r.mirrors_completed),
            ("dropped", r.mirrors_dropped),
            ("failed", r.mirrors_failed),
        ] {
            ConstCounter::new(v).encode(m.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

/// The result label of `gateway_config_applies_total`.
type ResultLabel = [(&'static str, &'static str); 1];

/// The metrics of one [`crate::Gateway`], from [`crate::Gateway::metrics`].
///
/// Cheap to clone; clones share the registry. [`Metrics::encode`] renders the OpenMetrics text
/// exposition (serve it with [`Metrics::CONTENT_TYPE`]); [`Metrics::with_registry`] adds an
/// embedder's own metrics to the same exposition.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    series: Arc<Series>,
    applies: Family<ResultLabel, Counter>,
    last_apply: Gauge<f64, AtomicU64>,
    apply_duration: Histogram,
    rejected_items: Gauge,
    access_log_dropped: Counter,
    #[cfg(feature = "otel")]
    trace_spans_dropped: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What [`Metrics::config_applied`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApplyResult {
    /// A new configuration was swapped in.
    Changed,
    /// The configuration equalled the active one.
    Unchanged,
    /// The configuration was refused; the active one keeps serving.
    Rejected,
}

impl Metrics {
    /// The HTTP `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics 1.0 text, which
    /// Prometheus scrapes natively).
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// A registry with the gateway's metrics (see `docs/observability.md`) and nothing counted.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "gateway_build",
            "The gateway-core version serving",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let series = Arc::new(Series {
            routes: Mutex::default(),
            backends: Mutex::default(),
            runtime: OnceLock::new(),
        });
        registry.register_collector(Box::new(series.clone()));
        let applies = Family::<ResultLabel, Counter>::default();
        for result in ["changed", "unchanged", "rejected"] {
            drop(applies.get_or_create(&[("result", result)]));
        }
        registry.register(
            "gateway_config_applies",
            "Configurations given to Gateway::apply, by result: changed (swapped in), unchanged (equal to the active one), rejected (invalid; the active one keeps serving)",
            applies.clone(),
        );
        let last_apply = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "gateway_config_last_apply_timestamp",
            "When the active configuration was swapped in (UNIX time)",
            Unit::Seconds,
            last_apply.clone(),
        );
        let apply_duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0]);
        registry.register_with_unit(
            "gateway_config_apply_duration",
            "How long Gateway::apply took for configurations that changed (compiling, DNS waits, binding sockets)",
            Unit::Seconds,
            apply_duration.clone(),
        );
        let rejected_items = Gauge::default();
        registry.register(
            "gateway_config_rejected_items",
            "Listeners and routes of the active configuration left out because they were invalid",
            rejected_items.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "gateway_access_log_dropped",
            "Access log lines dropped because the writer could not keep up (the queue was full)",
            access_log_dropped.clone(),
        );
        #[cfg(feature = "otel")]
        let trace_spans_dropped = Counter::default();
        #[cfg(feature = "otel")]
        registry.register(
            "gateway_trace_spans_dropped",
            "Trace spans lost: the export queue was full (the collector could not keep up) or the export failed (collector down, refused or too slow)",
            trace_spans_dropped.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            series,
            applies,
            last_apply,
            apply_duration,
            rejected_items,
            access_log_dropped,
            #[cfg(feature = "otel")]
            trace_spans_dropped,
        }
    }

    /// Renders every metric (the gateway's and those added with [`Metrics::with_registry`]) in
    /// the OpenMetrics text format, ending with `# EOF`. Runs at scrape time only.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = lock(&self.registry);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Runs `f` on the registry, e.g. to register an embedder's own metrics so that they are
    /// served with the gateway's. Blocks scrapes while `f` runs; not for the request path.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut lock(&self.registry))
    }

    /// The handle of (listener, route, rule, backend), created on first use. Compile time only.
    pub(crate) fn route(
        &self,
        listener: &str,
        route: &str,
        rule: &str,
        backend: &str,
    ) -> Arc<RouteStats> {
        let mut routes = lock(&self.series.routes);
        let labels = &mut routes.labels;
        let key = (
            labels.intern(listener),
            labels.intern(route),
            labels.intern(rule),
            labels.intern(backend),
        );
        routes
            .series
            .entry(key)
            .or_insert_with(|| Arc::new(RouteStats::new()))
            .clone()
    }

    /// The handle of backend `name`, created on first use. Compile time only.
    pub(crate) fn backend(&self, name: &Arc<str>) -> Arc<BackendStats> {
        lock(&self.series.backends)
            .entry(name.clone())
            .or_insert_with(|| Arc::new(BackendStats::new()))
            .clone()
    }

    /// Sets where the scrape reads the gateway's connection, buffering and mirror counters.
    pub(crate) fn set_runtime_source(&self, source: RuntimeSource) {
        let _ = self.series.runtime.set(source);
    }

    /// Records one [`crate::Gateway::apply`]; `rejected_items` is what the active table left
    /// out (for a change).
    pub(crate) fn config_applied(
        &self,
        result: ApplyResult,
        took: Duration,
        rejected_items: usize,
    ) {
        let label = match result {
            ApplyResult::Changed => "changed",
            ApplyResult::Unchanged => "unchanged",
            ApplyResult::Rejected => "rejected",
        };
        self.applies.get_or_create(&[("result", label)]).inc();
        // The series of the routes a change removed go now, not at the next scrape.
        lock(&self.series.routes).prune();
        if result == ApplyResult::Changed {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_apply.set(now);
            self.apply_duration.observe(took.as_secs_f64());
            self.rejected_items
                .set(i64::try_from(rejected_items).unwrap_or(i64::MAX));
        }
    }

    /// The counter of dropped access log lines.
    pub(crate) fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The counter of lost trace spans.
    #[cfg(feature = "otel")]
    pub(crate) fn trace_spans_dropped(&self) -> Counter {
        self.trace_spans_dropped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[status_class(0)], "none");
        assert_eq!(CLASSES[status_class(101)], "1xx");
        assert_eq!(CLASSES[status_class(200)], "2xx");
        assert_eq!(CLASSES[status_class(308)], "3xx");
        assert_eq!(CLASSES[status_class(404)], "4xx");
        assert_eq!(CLASSES[status_class(599)], "5xx");
        assert_eq!(CLASSES[status_class(600)], "none");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounded() {
        let m = Metrics::new();
        let r = m.route("l", "ns/r", "0", "b");
        r.request(200, Duration::from_millis(3));
        r.request(200, Duration::from_millis(30));
        r.request(200, Duration::from_secs(60));
        r.request(503, Duration::from_millis(1));
        let text = m.encode();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} missing in\n{text}"))
                .to_owned()
        };
        let labels = r#"listener="l",route="ns/r",rule="0",backend="b",status_class="2xx""#;
        let bucket = |le: &str| line(&format!(r#"_bucket{{le="{le}",{labels}}}"#));
        assert!(line(&format!("_count{{{labels}}}")).ends_with(" 3"));
        assert!(bucket("0.005").ends_with(" 1"));
        assert!(bucket("0.05").ends_with(" 2"));
        assert!(bucket("10.0").ends_with(" 2"));
        assert!(bucket("+Inf").ends_with(" 3"));
        assert!(text.contains(r#"status_class="5xx""#));
        assert!(
            !text.contains(r#"status_class="4xx""#),
            "unused classes stay out"
        );
        assert!(text.contains(r#"gateway_build_info{version=""#));
        assert!(text.ends_with("# EOF\n"));
        // Dropped by every table: gone from the next scrape.
        drop(r);
        assert!(!m.encode().contains(r#"route="ns/r""#));
    }

    #[test]
    fn route_series_share_their_labels_and_go_with_their_routes() {
        let m = Metrics::new();
        let a = m.route("http", "ns/a", "0", "ns/be");
        let b = m.route("http", "ns/b", "0", "ns/be");
        assert!(Arc::ptr_eq(&a, &m.route("http", "ns/a", "0", "ns/be")));
        assert!(!Arc::ptr_eq(&a, &b));
        {
            let routes = lock(&m.series.routes);
            // http, ns/a, ns/b, 0, ns/be: each stored once.
            assert_eq!(routes.labels.0.len(), 5);
            let keys: Vec<_> = routes.series.keys().collect();
            assert!(Arc::ptr_eq(&keys[0].0, &keys[1].0));
            assert!(Arc::ptr_eq(&keys[0].3, &keys[1].3));
        }
        // A route removed by a change: its series and its own label go at the next apply.
        drop(a);
        m.config_applied(ApplyResult::Changed, Duration::ZERO, 0);
        let routes = lock(&m.series.routes);
        assert_eq!(routes.series.len(), 1);
        assert_eq!(routes.labels.0.len(), 4);
        assert!(!routes.labels.0.contains("ns/a"));
        drop(routes);
        drop(b);
    }
}
