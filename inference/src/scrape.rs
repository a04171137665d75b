//! The metrics scraper: the crate's only I/O.
//!
//! A [`MetricsStore`] holds, per endpoint, the latest successfully scraped
//! [`EndpointMetrics`] and when they were scraped. Readers (the pickers, on every request) use
//! [`MetricsStore::get`] / [`MetricsStore::candidate`], which only load atomics (`arc-swap`):
//! no lock, no allocation besides the returned `Arc` clone.
//!
//! [`spawn`] starts the scraper on the current tokio runtime: one task per endpoint polls
//! `http://<ip>:<port><path>` every `interval` (default 50 ms) with a `timeout` (default 1 s),
//! over kept-alive HTTP/1.1 connections, and stores what [`crate::metrics::extract`] reads. A
//! failed or timed-out scrape keeps the previous value, whose age then grows: readers see
//! staleness through [`Scraped::age`] (the saturation detector treats metrics older than
//! 200 ms as saturated). [`MetricsStore::set_endpoints`] changes the endpoint set at any time;
//! the scraper starts and stops per-endpoint tasks to match. Dropping the [`ScraperHandle`]
//! stops every task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

use crate::metrics::{EndpointMetrics, Engine, extract};
use crate::scheduler::Candidate;

/// Default poll interval (the reference's minimum and default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// Default timeout of one scrape.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default metrics path.
pub const DEFAULT_PATH: &str = "/metrics";
/// Default age past which metrics count as stale for saturation (the reference's 200 ms).
pub const DEFAULT_STALENESS: Duration = Duration::from_millis(200);
/// Largest metrics page read (bigger pages fail the scrape).
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// How the scraper polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// Time between the starts of two scrapes of one endpoint. Default: 50 ms.
    pub interval: Duration,
    /// Time allowed for one scrape (connect, headers and body). Default: 1 s.
    pub timeout: Duration,
    /// Request path. Default: `/metrics`.
    pub path: String,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            path: DEFAULT_PATH.to_owned(),
        }
    }
}

/// One successful scrape.
#[derive(Clone, Debug)]
pub struct Scraped {
    /// What the page said.
    pub metrics: Arc<EndpointMetrics>,
    /// When the scrape finished.
    pub at: Instant,
}

impl Scraped {
    /// How old the metrics are at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }

    /// Whether the metrics are older than `threshold` at `now` (see [`DEFAULT_STALENESS`]).
    pub fn is_stale(&self, now: Instant, threshold: Duration) -> bool {
        self.age(now) > threshold
    }
}

/// The state of one endpoint.
#[derive(Debug)]
struct Slot {
    engine: Engine,
    latest: ArcSwapOption<Scraped>,
}

/// Latest metrics per endpoint, readable without locks.
#[derive(Debug, Default)]
pub struct MetricsStore {
    slots: ArcSwap<HashMap<SocketAddr, Arc<Slot>>>,
    changed: Notify,
    scraped: Notify,
}

impl MetricsStore {
    /// An empty store.
    pub fn new() -> Self {
        MetricsStore::default()
    }

    /// Replaces the endpoint set. Endpoints that stay (with the same engine) keep their latest
    /// metrics; new ones start without metrics; removed ones are forgotten. Wakes the scraper.
    /// Called when the pool's Pods change (not on the request path).
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = (SocketAddr, Engine)>) {
        let old = self.slots.load();
        let new: HashMap<SocketAddr, Arc<Slot>> = endpoints
            .into_iter()
            .map(|(addr, engine)| {
                let slot = match old.get(&addr) {
                    Some(s) if s.engine == engine => s.clone(),
                    _ => Arc::new(Slot {
                        engine,
                        latest: ArcSwapOption::empty(),
                    }),
                };
                (addr, slot)
            })
            .collect();
        self.slots.store(Arc::new(new));
        self.changed.notify_one();
    }

    /// The latest metrics of `addr`, or `None` when it was never scraped or is not in the set.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Scraped>> {
        self.slots
            .load()
            .get(&addr)
            .and_then(|s| s.latest.load_full())
    }

    /// A scheduling candidate for `addr` at `now`: its metrics and their age (`Duration::MAX`
    /// without metrics), `in_flight` 0 (the caller fills it in).
    pub fn candidate(&self, addr: SocketAddr, now: Instant) -> Candidate {
        match self.get(addr) {
            Some(s) => Candidate {
                addr,
                metrics: Some(s.metrics.clone()),
                metrics_age: s.age(now),
                in_flight: 0,
            },
            None => Candidate {
                addr,
                metrics: None,
                metrics_age: Duration::MAX,
                in_flight: 0,
            },
        }
    }

    /// The pool's saturation under `detector` at `now`, read from the latest metrics without
    /// building candidates (no allocation: called on the request path). With
    /// `unknown_saturated`, as [`crate::scheduler::SaturationDetector::pool_saturation`]: an
    /// endpoint without fresh metrics counts as saturated (1.0), an empty pool too. Without it,
    /// only endpoints with fresh metrics count, and a pool with none is not saturated (0.0).
    pub fn pool_saturation(
        &self,
        detector: &crate::scheduler::SaturationDetector,
        now: Instant,
        unknown_saturated: bool,
    ) -> f64 {
        let slots = self.slots.load();
        let (mut total, mut counted) = (0.0, 0usize);
        for slot in slots.values() {
            match slot.latest.load_full() {
                Some(s) if s.age(now) <= detector.staleness => {
                    total += detector.metrics_saturation(&s.metrics);
                    counted += 1;
                }
                _ if unknown_saturated => {
                    total += 1.0;
                    counted += 1;
                }
                _ => {}
            }
        }
        match counted {
            0 if unknown_saturated => 1.0,
            0 => 0.0,
            n => total / n as f64,
        }
    }

    /// Resolves when the next scrape result is stored (any endpoint).
    pub async fn scraped(&self) {
        self.scraped.notified().await;
    }

    /// How many endpoints the set has.
    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.load().is_empty()
    }

    /// The endpoints in the set and their engines.
    pub fn endpoints(&self) -> Vec<(SocketAddr, Engine)> {
        self.slots
            .load()
            .iter()
            .map(|(a, s)| (*a, s.engine))
            .collect()
    }

    /// Stores a scrape result for `addr` (ignored when `addr` is not in the set). The scraper
    /// calls this; it is public for callers that obtain metrics another way.
    pub fn store(&self, addr: SocketAddr, metrics: EndpointMetrics, at: Instant) {
        if let Some(slot) = self.slots.load().get(&addr) {
            slot.latest.store(Some(Arc::new(Scraped {
                metrics: Arc::new(metrics),
                at,
            })));
            self.scraped.notify_waiters();
        }
    }
}

/// Stops the scraper's tasks when dropped.
#[derive(Debug)]
pub struct ScraperHandle {
    supervisor: AbortHandle,
}

impl Drop for ScraperHandle {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Starts scraping the endpoints of `store` on the current tokio runtime (panics outside one,
/// like `tokio::spawn`). Keep the handle for as long as scraping should go on.
pub fn spawn(store: Arc<MetricsStore>, config: ScrapeConfig) -> ScraperHandle {
    let supervisor = tokio::spawn(supervise(store, config)).abort_handle();
    ScraperHandle { supervisor }
}

async fn supervise(store: Arc<MetricsStore>, config: ScrapeConfig) {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let config = Arc::new(config);
    // Dropping the set (when this task is aborted) aborts every endpoint task.
    let mut tasks = JoinSet::new();
    let mut running: HashMap<SocketAddr, (Arc<Slot>, AbortHandle)> = HashMap::new();
    loop {
        let slots = store.slots.load_full();
        running.retain(|addr, (slot, handle)| {
            let keep = slots.get(addr).is_some_and(|s| Arc::ptr_eq(s, slot));
            if !keep {
                handle.abort();
            }
            keep
        });
        for (addr, slot) in slots.iter() {
            if !running.contains_key(addr) {
                let handle = tasks.spawn(poll_endpoint(
                    *addr,
                    slot.clone(),
                    client.clone(),
                    config.clone(),
                    store.clone(),
                ));
                running.insert(*addr, (slot.clone(), handle));
            }
        }
        tokio::select! {
            _ = store.changed.notified() => {}
            // Reap finished (aborted) tasks so the set does not grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn poll_endpoint(
    addr: SocketAddr,
    slot: Arc<Slot>,
    client: Client<HttpConnector, Empty<Bytes>>,
    config: Arc<ScrapeConfig>,
    store: Arc<MetricsStore>,
) {
    let uri: hyper::Uri = match format!("http://{addr}{}", config.path).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(%addr, path = %config.path, error = %e, "invalid metrics URL");
            return;
        }
    };
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match tokio::time::timeout(config.timeout, scrape_once(&client, &uri, slot.engine)).await {
            Ok(Ok(metrics)) => {
                slot.latest.store(Some(Arc::new(Scraped {
                    metrics: Arc::new(metrics),
                    at: Instant::now(),
                })));
                store.scraped.notify_waiters();
            }
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "metrics scrape failed"),
            Err(_) => tracing::debug!(%addr, "metrics scrape timed out"),
        }
    }
}

/// Why one scrape failed (logged at debug; the endpoint's metrics then age).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The server answered with a non-2xx status.
    #[error("status {0}")]
    Status(http::StatusCode),
    /// Reading the body failed or it exceeded [`MAX_PAGE_BYTES`].
    #[error("body: {0}")]
    Body(String),
    /// The page is not UTF-8.
    #[error("page is not UTF-8")]
    NotUtf8,
    /// A required metric is missing.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

async fn scrape_once(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &hyper::Uri,
    engine: Engine,
) -> Result<EndpointMetrics, ScrapeError> {
    let req = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Empty::new())
        .map_err(|e| ScrapeError::Body(e.to_string()))?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES)
        .collect()
        .await
        .map_err(|e| ScrapeError::Body(e.to_string()))?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| ScrapeError::NotUtf8)?;
    Ok(extract(engine, text)?)
}
