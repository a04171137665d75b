//! The data-plane side: InferencePool backends served by a gateway-core [`Gateway`].
//!
//! A configuration source (gateway-k8s) turns an HTTPRoute backendRef to an InferencePool into a
//! gateway-core backend whose endpoints are the pool's Pods x target ports, whose load balancer
//! is the custom picker [`PICKER`], and which carries one backend filter, an `ExtensionRef` of
//! group [`crate::crd::GROUP`] and kind [`POOL_KIND`] with the pool's
//! [`InferencePoolSettings`]. This
//! module provides both halves, registered with [`InferenceGateway::register_filters`] and
//! [`InferenceGateway::install`]:
//!
//! - the **pool filter** runs after the backend is chosen, before the endpoint: it takes the
//!   objective header (priority), asks for the whole body (bounded by
//!   [`InferenceGateway::body_limit`], 413 over), parses it as an OpenAI completions or chat
//!   request (400 when it is not one; other paths pass through), applies the pool's
//!   InferenceModelRewrites (the body sent upstream names the target model), and admits the
//!   request: a sheddable one (priority < 0) gets 429 with `x-llm-d-request-dropped-reason:
//!   rejected-saturated` while the pool is saturated. On the response it reports the endpoint
//!   that served in `x-gateway-destination-endpoint-served` and writes the requested model name
//!   back into JSON and SSE bodies;
//! - the **picker** orders the endpoints for each attempt with the pool's scheduler (the
//!   reference default profile over the scraped metrics and the gateway's own in-flight counts):
//!   the first is used, the rest are the fallbacks retries walk. A request the filter did not
//!   see (no parsed body) falls back to round robin.
//!
//! Each pool keeps one runtime across configuration swaps (by `namespace/name`): its metrics
//! store and scraper (every endpoint's `/metrics` every 50 ms, started by the pool's first
//! request), its prefix-cache index, its external picker's channel. It is dropped with the last
//! configuration that references the pool.
//!
//! **External endpoint picker.** A pool whose settings name an `endpointPickerRef` that
//! resolved is served by that picker over Envoy ext_proc ([`crate::extproc`]): the filter
//! buffers the body of every request (same bound), sends the headers, the body and the subset
//! hint (the pool's endpoints that are available now) on one `Process` stream, and applies the
//! answer: the picker's header changes and body go upstream, its `ImmediateResponse` goes to
//! the client as is, and its ordered endpoint list (metadata `envoy.lb`, else the header) is
//! what the picker walks: the first is used, the rest are retry fallbacks, and nothing else
//! (503 once they are exhausted). An answer naming an address that is not an endpoint of the
//! pool is a picker failure. The response phase reports the endpoint that served and applies
//! the picker's response header changes. When the picker fails (unreachable, unresolved
//! reference, gRPC error, timeout, unusable answer), `FailOpen` serves the request with the
//! in-process picker (the buffered body is sent) and `FailClose` answers 503; both are logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use crate::crd::v1::FailureMode;
use crate::extproc::ExtProcConfig;
use crate::extproc::client::{Answer, Exchange, PickError, PickInput, PickerClient};
use crate::flow::{FlowConfig, FlowController, FlowRequest};
use crate::objective::Objectives;
use crate::request::{self, ApiKind, DroppedReason};
use crate::rewrite::{ModelRewrites, RewriteSource};
use crate::scheduler::{Candidate, ProfileKind, SchedRequest, Scheduler, lora_adapter};
use crate::scrape::{self, MetricsStore, ScrapeConfig, ScraperHandle};
use crate::settings::InferencePoolSettings;
use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::{Bytes, BytesMut};
use gateway_core::config::ExtensionRef;
use gateway_core::{
    DirectResponse, Endpoint, EndpointPicker, Error, ErrorKind, FilterAction, FilterCtx,
    FilterRegistry, Gateway, HttpFilter, PickRequest, ResponseHeader, Session, async_trait,
};
use std::net::SocketAddr;

/// The `ExtensionRef` kind of the pool filter (group [`crate::crd::GROUP`]).
pub const POOL_KIND: &str = "InferencePool";
/// The name the pool picker is registered under ([`gateway_core::config::LoadBalancer::Custom`]);
/// the one gateway-k8s names ([`crate::settings::LOAD_BALANCER`]).
pub const PICKER: &str = crate::settings::LOAD_BALANCER;
/// Default bound of a buffered inference request body: 4 MiB (about a million characters of
/// prompt, several times a 128k-token context). A longer body is answered with 413. The most
/// [`InferenceGateway::new`] accepts is gateway-core's ceiling for a body held whole,
/// [`gateway_core::proxy::MAX_BUFFERED_BODY`] (16 MiB); every held body counts against
/// [`gateway_core::config::Limits::max_buffered_body_bytes`] (503 when it is used up).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The inference data plane of one gateway: the pool runtimes, the filter factory and the
/// picker. Clone it freely (shared).
#[derive(Clone)]
pub struct InferenceGateway {
    inner: Arc<Inner>,
}

/// Makes the scheduler of a new pool runtime (each pool has its own: the prefix index is per
/// pool).
type SchedulerFactory = Arc<dyn Fn() -> Scheduler + Send + Sync>;

struct Inner {
    pools: Mutex<HashMap<String, Weak<PoolRuntime>>>,
    scrape: ScrapeConfig,
    body_limit: usize,
    extproc: ExtProcConfig,
    scheduler: SchedulerFactory,
    /// For logs and `Debug`: the built-in profile's name, or `custom`.
    scheduler_name: &'static str,
    /// Flow control of every pool; `None`: requests are never held at the gateway.
    flow: Option<FlowConfig>,
}

impl Default for InferenceGateway {
    fn default() -> Self {
        InferenceGateway::new(ScrapeConfig::default(), DEFAULT_BODY_LIMIT)
    }
}

impl std::fmt::Debug for InferenceGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceGateway")
            .field("scrape", &self.inner.scrape)
            .field("body_limit", &self.inner.body_limit)
            .field("extproc", &self.inner.extproc)
            .field("scheduler", &self.inner.scheduler_name)
            .finish()
    }
}

impl InferenceGateway {
    /// Pools scraped with `scrape` (default every 50 ms), request bodies buffered up to
    /// `body_limit` bytes (default [`DEFAULT_BODY_LIMIT`]), endpoints chosen with the reference
    /// default profile ([`ProfileKind::Reference`]; see [`Self::with_profile`]).
    pub fn new(scrape: ScrapeConfig, body_limit: usize) -> Self {
        InferenceGateway::with_extproc(scrape, body_limit, ExtProcConfig::default())
    }

    /// As [`InferenceGateway::new`], with the timeouts of external endpoint pickers
    /// (default [`ExtProcConfig::default`]: 10 s per message of the pick, 1 s for the answer
    /// to the response headers).
    pub fn with_extproc(scrape: ScrapeConfig, body_limit: usize, extproc: ExtProcConfig) -> Self {
        InferenceGateway {
            inner: Arc::new(Inner {
                pools: Mutex::new(HashMap::new()),
                scrape,
                body_limit,
                extproc,
                scheduler: Arc::new(Scheduler::reference_default),
                scheduler_name: ProfileKind::Reference.as_str(),
                flow: Some(FlowConfig::default()),
            }),
        }
    }

    /// The same gateway with flow control set to `flow` for every pool (default:
    /// `Some(FlowConfig::default())`; `None` turns it off: requests are then admitted or
    /// refused, never held). Call it before the gateway serves.
    pub fn with_flow_control(self, flow: Option<FlowConfig>) -> Self {
        self.rebuilt(|inner| inner.flow = flow)
    }

    /// The same gateway with every pool scheduled by the built-in profile `kind`. Call it before
    /// the gateway serves (pools already created keep their scheduler).
    pub fn with_profile(self, kind: ProfileKind) -> Self {
        self.rebuilt(|inner| {
            inner.scheduler = Arc::new(move || kind.scheduler());
            inner.scheduler_name = kind.as_str();
        })
    }

    /// The same gateway with every pool scheduled by what `make` returns: called once per pool
    /// (give each its own prefix index), with your own filters, scorers and picker. Call it
    /// before the gateway serves.
    pub fn with_scheduler(self, make: impl Fn() -> Scheduler + Send + Sync + 'static) -> Self {
        self.rebuilt(|inner| {
            inner.scheduler = Arc::new(make);
            inner.scheduler_name = "custom";
        })
    }

    /// A new gateway with this one's pools and settings, then `change` applied.
    fn rebuilt(self, change: impl FnOnce(&mut Inner)) -> Self {
        let old = &self.inner;
        let mut inner = Inner {
            pools: Mutex::new(std::mem::take(
                &mut *old.pools.lock().unwrap_or_else(|e| e.into_inner()),
            )),
            scrape: old.scrape.clone(),
            body_limit: old.body_limit,
            extproc: old.extproc,
            scheduler: old.scheduler.clone(),
            scheduler_name: old.scheduler_name,
            flow: old.flow.clone(),
        };
        change(&mut inner);
        InferenceGateway {
            inner: Arc::new(inner),
        }
    }

    /// The bound of a buffered request body.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// Registers the pool filter ([`crate::crd::GROUP`] / [`POOL_KIND`]) in `registry`, for a
    /// [`Gateway::new`] and for the translator, which serves InferencePool backendRefs only when
    /// its registry has that kind.
    pub fn register_filters(&self, registry: &mut FilterRegistry) {
        let this = self.clone();
        registry.register(crate::crd::GROUP, POOL_KIND, move |r: &ExtensionRef| {
            this.build_filter(r)
        });
    }

    /// Registers the picker under [`PICKER`] with `gateway`.
    pub fn install(&self, gateway: &Gateway) {
        gateway.register_picker(PICKER, Arc::new(PoolPicker));
    }

    /// The pool filter for `reference`; creates or updates the pool's runtime. Runs when a
    /// configuration is applied.
    fn build_filter(&self, reference: &ExtensionRef) -> gateway_core::Result<Arc<dyn HttpFilter>> {
        let settings: InferencePoolSettings = match &reference.config {
            Some(config) => serde_json::from_value(config.clone()).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("InferencePool {}: settings: {e}", reference.name),
                )
            })?,
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("InferencePool {}: no settings", reference.name),
                ));
            }
        };
        let runtime = self.runtime(&settings);
        let external = settings.endpoint_picker.as_ref().map(|picker| {
            let client = match &picker.unresolved {
                None if !picker.addresses.is_empty() => {
                    match runtime.picker_client(&picker.addresses, self.inner.extproc) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(pool = %runtime.key, error = %e, "endpointPickerRef: unusable; served as unreachable");
                            None
                        }
                    }
                }
                unresolved => {
                    tracing::warn!(
                        pool = %runtime.key,
                        reason = unresolved.as_deref().unwrap_or("no ready address"),
                        failure_mode = ?picker.failure_mode,
                        "endpointPickerRef does not resolve; served as unreachable"
                    );
                    None
                }
            };
            let mut members: Vec<SocketAddr> = settings.endpoints.iter().map(|e| e.address).collect();
            members.sort_unstable();
            members.dedup();
            ExternalPicker {
                client,
                failure_mode: picker.failure_mode,
                members: members.into(),
            }
        });
        if external.is_none() {
            runtime.drop_picker_client();
        }
        Ok(Arc::new(PoolFilter {
            runtime,
            body_limit: self.inner.body_limit,
            external,
        }))
    }

    /// The runtime of the pool `settings` names, created on first use, updated to `settings`.
    fn runtime(&self, settings: &InferencePoolSettings) -> Arc<PoolRuntime> {
        let key = format!("{}/{}", settings.pool.namespace, settings.pool.name);
        let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, w| w.strong_count() > 0);
        let runtime = match pools.get(&key).and_then(Weak::upgrade) {
            Some(r) => r,
            None => {
                let r = Arc::new(PoolRuntime::new(
                    key.clone(),
                    &self.inner.scrape,
                    (self.inner.scheduler)(),
                    self.inner.flow.clone(),
                ));
                pools.insert(key, Arc::downgrade(&r));
                r
            }
        };
        runtime.update(settings);
        runtime
    }
}

/// One pool's state across configurations.
struct PoolRuntime {
    key: String,
    store: Arc<MetricsStore>,
    scrape: ScrapeConfig,
    /// Started by the first request (on the gateway's runtime; a translator that only builds
    /// filters to check settings starts nothing); stops scraping when the runtime is dropped.
    scraper: OnceLock<(ScraperHandle, Option<AbortOnDrop>)>,
    scheduler: Scheduler,
    objectives: ArcSwap<Objectives>,
    rewrites: ArcSwap<ModelRewrites>,
    /// The external picker's client, kept across swaps while its addresses and timeouts stay
    /// the same (touched only when a configuration is applied).
    picker_client: Mutex<Option<Arc<PickerClient>>>,
    /// The backend's endpoints as the gateway last handed them to the picker (their health is
    /// live), for the subset hint; cleared when the settings change.
    live: ArcSwapOption<Vec<Endpoint>>,
    /// The pool's flow control, when on.
    flow: Option<PoolFlow>,
}

/// A pool's flow-control queues and what its dispatcher needs.
struct PoolFlow {
    controller: FlowController,
    /// Requests waiting in `controller` (read on the request path without its lock).
    waiting: AtomicUsize,
    /// Whether the pool is saturated by its fresh metrics, as the dispatcher last computed it
    /// (on every scrape result and every scrape interval): the request path reads one atomic
    /// instead of every endpoint's metrics.
    saturated: Arc<AtomicBool>,
    /// Requests released since the last scrape result came in: the dispatcher's estimate of
    /// load the scraped metrics do not show yet.
    released: Arc<AtomicU32>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for PoolRuntime {
    fn drop(&mut self) {
        if let Some(flow) = &self.flow {
            flow.controller.close();
        }
    }
}

impl PoolRuntime {
    fn new(
        key: String,
        scrape: &ScrapeConfig,
        scheduler: Scheduler,
        flow: Option<FlowConfig>,
    ) -> Self {
        PoolRuntime {
            key,
            store: Arc::new(MetricsStore::new()),
            scrape: scrape.clone(),
            scraper: OnceLock::new(),
            scheduler,
            objectives: ArcSwap::from_pointee(Objectives::default()),
            rewrites: ArcSwap::from_pointee(ModelRewrites::default()),
            picker_client: Mutex::new(None),
            live: ArcSwapOption::empty(),
            flow: flow.map(|config| PoolFlow {
                controller: FlowController::new(config),
                waiting: AtomicUsize::new(0),
                saturated: Arc::new(AtomicBool::new(false)),
                released: Arc::new(AtomicU32::new(0)),
            }),
        }
    }

    /// The client of the external picker at `addresses`: the current one when it has the same
    /// addresses and timeouts, else a new one (not connected yet).
    fn picker_client(
        &self,
        addresses: &[SocketAddr],
        config: ExtProcConfig,
    ) -> Result<Arc<PickerClient>, PickError> {
        let mut current = self.picker_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref()
            && c.addresses() == addresses
            && c.config() == config
        {
            return Ok(c.clone());
        }
        let client = Arc::new(PickerClient::new(addresses, config)?);
        *current = Some(client.clone());
        Ok(client)
    }

    /// Forgets the external picker's client (the pool no longer names one).
    fn drop_picker_client(&self) {
        *self.picker_client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Remembers the backend's endpoints for the subset hint, once per settings change. One
    /// atomic load per pick afterwards.
    fn remember(&self, endpoints: &[Endpoint]) {
        if self.live.load().is_none() {
            self.live.store(Some(Arc::new(endpoints.to_vec())));
        }
    }

    /// The subset hint: the pool's endpoints (`members`, sorted) that are available now. Until
    /// the gateway has handed the picker its endpoints (first request after a change), or when
    /// none is available, every endpoint of the pool.
    fn eligible(&self, members: &[SocketAddr]) -> Vec<SocketAddr> {
        if let Some(live) = &*self.live.load() {
            let current = live.len() == members.len()
                && live
                    .iter()
                    .all(|e| members.binary_search(&e.address()).is_ok());
            if current {
                let available: Vec<SocketAddr> = live
                    .iter()
                    .filter(|e| e.is_available())
                    .map(Endpoint::address)
                    .collect();
                if !available.is_empty() {
                    return available;
                }
            } else {
                // Handed before the last configuration change: refreshed by the next pick.
                self.live.store(None);
            }
        }
        members.to_vec()
    }

    /// Starts the scraper (and the flow-control dispatcher) if they are not running. Called on
    /// the request path (inside the gateway's Tokio runtime): after the first request, one
    /// atomic load.
    fn ensure_scraping(&self) {
        self.scraper.get_or_init(|| {
            let scraper = scrape::spawn(self.store.clone(), self.scrape.clone());
            let dispatcher = self.flow.as_ref().map(|flow| {
                AbortOnDrop(
                    tokio::spawn(dispatch(
                        self.store.clone(),
                        flow.controller.clone(),
                        self.scheduler.detector,
                        flow.saturated.clone(),
                        flow.released.clone(),
                        self.scrape.interval,
                    ))
                    .abort_handle(),
                )
            });
            (scraper, dispatcher)
        });
    }

    fn update(&self, settings: &InferencePoolSettings) {
        self.live.store(None);
        self.store
            .set_endpoints(settings.endpoints.iter().map(|e| (e.address, e.engine)));
        if let Some(flow) = &self.flow {
            flow.controller
                .set_has_endpoints(!settings.endpoints.is_empty());
        }
        let objectives: Vec<(String, crate::crd::llmd::InferenceObjectiveSpec)> = settings
            .objectives
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    crate::crd::llmd::InferenceObjectiveSpec {
                        priority: Some(o.priority),
                        pool_ref: crate::crd::PoolObjectReference::new(&settings.pool.name),
                    },
                )
            })
            .collect();
        self.objectives.store(Arc::new(Objectives::new(
            objectives.iter().map(|(n, s)| (n.as_str(), s)),
        )));
        let rewrites = settings
            .rewrites
            .iter()
            .map(|r| RewriteSource {
                key: format!("{}/{}", settings.pool.namespace, r.name),
                created: r.created.clone(),
                spec: r.spec.clone(),
            })
            .collect();
        self.rewrites.store(Arc::new(ModelRewrites::new(rewrites)));
    }

    /// The candidates for `endpoints` now: scraped metrics and the gateway's in-flight counts;
    /// unavailable endpoints (ejected, failing health checks) left out. Returns the candidates
    /// and, for each, its index in `endpoints`.
    fn candidates(&self, endpoints: &[Endpoint], now: Instant) -> (Vec<Candidate>, Vec<usize>) {
        let mut candidates = Vec::with_capacity(endpoints.len());
        let mut index = Vec::with_capacity(endpoints.len());
        for (i, e) in endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_available())
        {
            let mut c = self.store.candidate(e.address(), now);
            c.in_flight = e.in_flight();
            candidates.push(c);
            index.push(i);
        }
        (candidates, index)
    }

    /// Holds the request in flow control when it has to wait: while the pool is saturated
    /// (fresh metrics only: a pool whose endpoints have no fresh metrics is not held), or while
    /// other requests wait (so that later arrivals do not overtake them). `Ok` when it may go
    /// on (at once, or once released).
    async fn flow_control(
        &self,
        priority: i32,
        flow_id: Option<&str>,
        bytes: usize,
    ) -> Result<(), DroppedReason> {
        let Some(flow) = &self.flow else {
            return Ok(());
        };
        if flow.waiting.load(Ordering::Acquire) == 0 && !flow.saturated.load(Ordering::Relaxed) {
            return Ok(());
        }
        let request = FlowRequest {
            priority,
            flow_id: flow_id.unwrap_or(request::DEFAULT_FAIRNESS_ID).to_owned(),
            bytes: bytes as u64,
        };
        flow.waiting.fetch_add(1, Ordering::AcqRel);
        // Counted down however the wait ends (also when the client goes away and the request
        // future is dropped).
        let _waiting = CountDown(&flow.waiting);
        match flow.controller.enqueue(request).await {
            Ok(admitted) => {
                tracing::debug!(pool = %self.key, priority, waited_ms = admitted.waited.as_millis() as u64, "released by flow control");
                Ok(())
            }
            Err(rejected) => Err(rejected.reason()),
        }
    }
}

/// Decrements a counter when dropped.
struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pool's flow-control dispatcher: whenever a scrape result comes in (and at least every
/// scrape interval), records whether the pool is saturated by its fresh metrics (for the
/// request path) and releases waiting requests, best first, while that saturation plus the
/// requests released since the last scrape result, spread over the endpoints' queues, stays
/// below 1.0.
async fn dispatch(
    store: Arc<MetricsStore>,
    flow: FlowController,
    detector: crate::scheduler::SaturationDetector,
    saturated: Arc<AtomicBool>,
    released: Arc<AtomicU32>,
    interval: std::time::Duration,
) {
    loop {
        tokio::select! {
            _ = store.scraped() => released.store(0, Ordering::Relaxed),
            _ = tokio::time::sleep(interval) => {}
        }
        let saturation = store.pool_saturation(&detector, Instant::now(), false);
        saturated.store(saturation >= 1.0, Ordering::Relaxed);
        if flow.is_empty() {
            continue;
        }
        let queues = store.len().max(1) as f64 * detector.queue_threshold;
        flow.dispatch(|| {
            let estimate = saturation + f64::from(released.load(Ordering::Relaxed)) / queues;
            let room = estimate < 1.0;
            if room {
                released.fetch_add(1, Ordering::Relaxed);
            }
            room
        });
    }
}

/// What the pool filter learnt about a request, for the picker and the response.
struct Scheduled {
    runtime: Arc<PoolRuntime>,
    /// The model sent upstream.
    model: String,
    prompt: String,
    priority: i32,
    /// The model the client asked for, when a rewrite changed it.
    requested: Option<String>,
    stream: bool,
    /// The endpoints in order of preference (indices into the request's backend endpoints,
    /// which stay the same for all its attempts), decided at the first attempt.
    order: OnceLock<Vec<usize>>,
    /// A JSON response body collected to write `requested` back at its end.
    collected: BytesMut,
}

/// What the request headers said, taken before the body is read: the objective's priority
/// and the fairness flow (`None`: the default flow).
struct Priority(i32, Option<String>);

struct PoolFilter {
    runtime: Arc<PoolRuntime>,
    body_limit: usize,
    /// The pool's `endpointPickerRef`, when it has one.
    external: Option<ExternalPicker>,
}

/// A pool's external endpoint picker, as one configuration has it.
struct ExternalPicker {
    /// `None` when the reference does not resolve: the picker is unreachable.
    client: Option<Arc<PickerClient>>,
    failure_mode: FailureMode,
    /// The pool's endpoints, sorted: an answer must name only these.
    members: Arc<[SocketAddr]>,
}

/// The external picker's decision for a request, for the picker and the response.
struct PickedExternally {
    runtime: Arc<PoolRuntime>,
    /// The endpoints it named, in order.
    endpoints: Vec<SocketAddr>,
    /// Their indices in the request's backend endpoints (the same for all its attempts).
    indices: OnceLock<Vec<usize>>,
    /// The open stream, taken in the response phase.
    exchange: sync_wrapper::SyncWrapper<Option<Exchange>>,
}

/// The request is to be sent to the external picker once its body is read.
struct Consult(Arc<PickerClient>);

/// A JSON error body in the OpenAI shape.
fn error_response(status: u16, message: &str, reason: Option<DroppedReason>) -> DirectResponse {
    let body = serde_json::json!({
        "error": {"message": message, "type": "invalid_request_error", "code": status}
    });
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(reason) = reason {
        headers.push((
            request::HEADER_DROPPED_REASON.to_owned(),
            reason.as_str().to_owned(),
        ));
    }
    DirectResponse {
        status,
        headers,
        body: Bytes::from(body.to_string()),
    }
}

impl PoolFilter {
    /// The request's objective priority and fairness flow, from its headers.
    fn priority(&self, session: &Session) -> Priority {
        let headers = &session.req_header().headers;
        let priority = self
            .runtime
            .objectives
            .load()
            .priority(request::objective_name(headers));
        let flow_id = headers
            .get(request::HEADER_FAIRNESS_ID)
            .map(|_| request::fairness_id(headers).to_owned());
        Priority(priority, flow_id)
    }

    /// The in-process path of a request whose body is read: parse (other paths pass through),
    /// rewrite the model, admit, and leave the picker its inputs.
    async fn in_process(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
    ) -> gateway_core::Result<FilterAction> {
        let Some(kind) = ApiKind::from_path(session.req_header().uri.path()) else {
            return Ok(FilterAction::Continue);
        };
        if ctx.state::<Scheduled>().is_some() {
            return Ok(FilterAction::Continue);
        }
        let (priority, flow_id) = match ctx.state_mut::<Priority>() {
            Some(p) => (p.0, p.1.take()),
            None => (0, None),
        };
        let bytes = body.clone().unwrap_or_default();
        let parsed = match request::parse_request(kind, &bytes) {
            Ok(p) => p,
            Err(e) => {
                return Ok(FilterAction::Respond(error_response(
                    400,
                    &e.to_string(),
                    None,
                )));
            }
        };
        let mut model = parsed.model.clone();
        let mut requested = None;
        let rewrites = self.runtime.rewrites.load();
        if let Some(targets) = rewrites.resolve(&parsed.model) {
            let target = targets.pick(rand::random::<u32>()).to_owned();
            if target != parsed.model {
                match request::rewrite_model(&bytes, &target) {
                    Ok(rewritten) => *body = Some(Bytes::from(rewritten)),
                    Err(e) => {
                        return Ok(FilterAction::Respond(error_response(
                            400,
                            &e.to_string(),
                            None,
                        )));
                    }
                }
                requested = Some(std::mem::replace(&mut model, target));
            }
        }
        // Only a sheddable request can be refused: the pool's saturation is computed for it alone
        // (endpoints without fresh metrics count as saturated, as in the reference).
        let saturation = if priority < 0 {
            self.runtime.store.pool_saturation(
                &self.runtime.scheduler.detector,
                Instant::now(),
                true,
            )
        } else {
            0.0
        };
        if let Err(reason) = crate::scheduler::admit(priority, saturation) {
            tracing::debug!(pool = %self.runtime.key, priority, saturation, "sheddable request dropped");
            return Ok(FilterAction::Respond(error_response(
                reason.status(),
                "the pool is saturated",
                Some(reason),
            )));
        }
        // The others wait here while the pool is saturated, best priority first.
        let size = body.as_ref().map_or(0, Bytes::len);
        if let Err(reason) = self
            .runtime
            .flow_control(priority, flow_id.as_deref(), size)
            .await
        {
            tracing::debug!(pool = %self.runtime.key, priority, reason = reason.as_str(), "request dropped by flow control");
            return Ok(FilterAction::Respond(error_response(
                reason.status(),
                "the pool is saturated",
                Some(reason),
            )));
        }
        ctx.insert_state(Scheduled {
            runtime: self.runtime.clone(),
            model,
            prompt: parsed.prompt,
            priority,
            requested,
            stream: parsed.stream,
            order: OnceLock::new(),
            collected: BytesMut::new(),
        });
        Ok(FilterAction::Continue)
    }

    /// Sends the request to the external picker and applies its answer; on a failure, the
    /// pool's failure mode.
    async fn consult(
        &self,
        client: &PickerClient,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
    ) -> gateway_core::Result<FilterAction> {
        let Some(external) = &self.external else {
            return self.in_process(session, ctx, body).await;
        };
        let bytes = body.clone().unwrap_or_default();
        let eligible = self.runtime.eligible(&external.members);
        let answer = client
            .pick(PickInput {
                request: session.req_header(),
                body: &bytes,
                eligible: &eligible,
            })
            .await;
        let route = match answer {
            Ok(Answer::Immediate(i)) => {
                tracing::debug!(pool = %self.runtime.key, status = i.status, details = %i.details, "endpoint picker answered the request");
                return Ok(FilterAction::Respond(DirectResponse {
                    status: i.status,
                    headers: i.headers,
                    body: i.body,
                }));
            }
            Ok(Answer::Route(route)) => match route
                .endpoints
                .iter()
                .find(|a| external.members.binary_search(a).is_err())
            {
                None => route,
                Some(stranger) => {
                    let e =
                        PickError::BadAnswer(format!("{stranger} is not an endpoint of the pool"));
                    return self.picker_failed(external, &e, session, ctx, body).await;
                }
            },
            Err(e) => {
                return self.picker_failed(external, &e, session, ctx, body).await;
            }
        };
        let route = *route;
        let header = session.req_header_mut();
        for name in &route.remove_headers {
            header.remove_header(name);
        }
        for (name, value) in route.set_headers {
            // The gateway frames the body it sends itself.
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                continue;
            }
            let _ = header.insert_header(name, value);
        }
        strip_picker_inputs(session);
        if let Some(replaced) = route.body {
            *body = Some(replaced);
        }
        ctx.insert_state(PickedExternally {
            runtime: self.runtime.clone(),
            endpoints: route.endpoints,
            indices: OnceLock::new(),
            exchange: sync_wrapper::SyncWrapper::new(Some(route.exchange)),
        });
        Ok(FilterAction::Continue)
    }

    /// The failure mode after the external picker failed with `error`.
    async fn picker_failed(
        &self,
        external: &ExternalPicker,
        error: &PickError,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
    ) -> gateway_core::Result<FilterAction> {
        if external.failure_mode == FailureMode::FailClose {
            tracing::warn!(pool = %self.runtime.key, %error, "endpoint picker failed: 503 (FailClose)");
            return Ok(FilterAction::Respond(picker_unavailable()));
        }
        tracing::warn!(pool = %self.runtime.key, %error, "endpoint picker failed: in-process picker (FailOpen)");
        strip_picker_inputs(session);
        self.in_process(session, ctx, body).await
    }
}

/// Removes the headers meant for the picker, not the model server.
fn strip_picker_inputs(session: &mut Session) {
    for name in [
        request::HEADER_OBJECTIVE,
        request::HEADER_OBJECTIVE_DEPRECATED,
        request::HEADER_FAIRNESS_ID,
    ] {
        session.req_header_mut().remove_header(name);
    }
}

/// The answer when the external picker cannot be used and the pool fails closed.
fn picker_unavailable() -> DirectResponse {
    error_response(503, "the pool's endpoint picker is unavailable", None)
}

#[async_trait]
impl HttpFilter for PoolFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if let Some(external) = &self.external {
            match &external.client {
                Some(client) => {
                    // Every request goes to the picker, with its whole body; the objective
                    // headers are the picker's to read (removed once it answered).
                    self.runtime.ensure_scraping();
                    let priority = self.priority(session);
                    ctx.insert_state(priority);
                    ctx.insert_state(Consult(client.clone()));
                    ctx.buffer_request_body(self.body_limit);
                    return Ok(FilterAction::Continue);
                }
                None if external.failure_mode == FailureMode::FailClose => {
                    tracing::warn!(pool = %self.runtime.key, "endpoint picker unreachable (reference does not resolve): 503 (FailClose)");
                    return Ok(FilterAction::Respond(picker_unavailable()));
                }
                None => {
                    tracing::debug!(pool = %self.runtime.key, "endpoint picker unreachable (reference does not resolve): in-process picker (FailOpen)");
                }
            }
        }
        self.runtime.ensure_scraping();
        let priority = self.priority(session);
        // The picker's inputs are for the gateway, not the model server.
        strip_picker_inputs(session);
        ctx.insert_state(priority);
        if ApiKind::from_path(session.req_header().uri.path()).is_some() {
            ctx.buffer_request_body(self.body_limit);
        }
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        if !end_of_stream {
            return Ok(FilterAction::Continue);
        }
        if let Some(Consult(client)) = ctx.remove_state::<Consult>() {
            return self.consult(&client, session, ctx, body).await;
        }
        self.in_process(session, ctx, body).await
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let served = ctx.endpoint();
        if let Some(endpoint) = served {
            let _ = response.insert_header(
                request::HEADER_DESTINATION_ENDPOINT_SERVED,
                endpoint.to_string(),
            );
        }
        if let Some(served) = served
            && let Some(picked) = ctx.state_mut::<PickedExternally>()
            && let Some(exchange) = picked.exchange.get_mut().take()
        {
            // The response phase of the external picker: it learns who served and may set
            // response headers. Its failure leaves the response as it is.
            match exchange
                .served(served, response.status.as_u16(), &response.headers)
                .await
            {
                Ok(changes) => {
                    for name in changes.remove.iter().filter(|n| {
                        **n != http::header::CONTENT_LENGTH
                            && **n != http::header::TRANSFER_ENCODING
                    }) {
                        response.remove_header(name);
                    }
                    for (name, value) in changes.set {
                        // The response's framing is the gateway's (pickers such as the
                        // conformance one echo every response header back).
                        if name == http::header::CONTENT_LENGTH
                            || name == http::header::TRANSFER_ENCODING
                            || name == http::header::CONNECTION
                        {
                            continue;
                        }
                        let _ = response.insert_header(name, value);
                    }
                }
                Err(e) => {
                    tracing::debug!(pool = %self.runtime.key, error = %e, "endpoint picker: response phase skipped");
                }
            }
        }
        if ctx
            .state::<Scheduled>()
            .is_some_and(|s| s.requested.is_some())
        {
            // The body is rewritten: its length changes.
            response.remove_header(&http::header::CONTENT_LENGTH);
        }
        Ok(())
    }

    fn response_body(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<()> {
        let Some(state) = ctx.state_mut::<Scheduled>() else {
            return Ok(());
        };
        let Some(requested) = state.requested.as_deref() else {
            return Ok(());
        };
        if state.stream {
            // Server-sent events: each chunk's `data:` events carry the model.
            if let Some(chunk) = body.as_ref()
                && let std::borrow::Cow::Owned(rewritten) =
                    request::rewrite_sse_event(chunk, requested)
            {
                *body = Some(Bytes::from(rewritten));
            }
            return Ok(());
        }
        // One JSON document: collect it, write it back whole at the end.
        if let Some(chunk) = body.take() {
            state.collected.extend_from_slice(&chunk);
        }
        if end_of_stream {
            let whole = std::mem::take(&mut state.collected).freeze();
            *body = Some(match request::rewrite_response_model(&whole, requested) {
                std::borrow::Cow::Owned(b) => Bytes::from(b),
                std::borrow::Cow::Borrowed(_) => whole,
            });
        }
        Ok(())
    }
}

/// Orders a pool's endpoints for each attempt (see the module documentation).
struct PoolPicker;

#[async_trait]
impl EndpointPicker for PoolPicker {
    async fn pick(
        &self,
        request: &PickRequest<'_>,
        endpoints: &[Endpoint],
        out: &mut Vec<usize>,
    ) -> gateway_core::Result<()> {
        if let Some(picked) = request.ctx.state::<PickedExternally>() {
            picked.runtime.remember(endpoints);
            let indices = picked.indices.get_or_init(|| {
                picked
                    .endpoints
                    .iter()
                    .filter_map(|a| endpoints.iter().position(|e| e.address() == *a))
                    .collect()
            });
            // Only the external picker's endpoints: once each had its attempt, or none is
            // available, the request fails (503) rather than going elsewhere.
            if request.attempt as usize > indices.len()
                || !indices.iter().any(|&i| endpoints[i].is_available())
            {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "the endpoint picker's endpoints are exhausted",
                ));
            }
            out.extend(indices.iter().copied());
            return Ok(());
        }
        let Some(state) = request.ctx.state::<Scheduled>() else {
            // Not an inference request the filter parsed: round robin.
            return Ok(());
        };
        state.runtime.remember(endpoints);
        let order = state.order.get_or_init(|| {
            let runtime = &state.runtime;
            let (candidates, index) = runtime.candidates(endpoints, Instant::now());
            let req = SchedRequest::new(&state.model, &state.prompt, state.priority)
                .with_adapter(lora_adapter(&state.model, &candidates));
            match runtime
                .scheduler
                .profile
                .pick(&req, &candidates, &mut rand::rng())
            {
                Ok(order) => order.into_iter().map(|i| index[i]).collect(),
                Err(reason) => {
                    tracing::debug!(pool = %runtime.key, reason = reason.as_str(), "no endpoint scored: round robin");
                    Vec::new()
                }
            }
        });
        out.extend(order.iter().copied().filter(|&i| i < endpoints.len()));
        Ok(())
    }
}
