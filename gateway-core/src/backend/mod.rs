//! Backends at run time: endpoint choice, endpoint health, retry budgets, sticky sessions.
//!
//! Endpoint choice is the [`EndpointPicker`] trait, called in `upstream_peer` for every attempt
//! (retries included). The built-in pickers are round robin and least request (power of two
//! choices over in-flight counts); a custom one is registered with
//! [`crate::Gateway::register_picker`] and named by [`crate::config::LoadBalancer::Custom`].
//!
//! State that must outlive a configuration swap (round-robin position, in-flight counts,
//! outlier ejections, retry budgets) lives in a [`StateStore`] owned by the gateway. A swap looks
//! up each backend by name and each endpoint by address, so unchanged endpoints keep their state;
//! state nobody references any more is dropped.

pub(crate) mod budget;
pub(crate) mod clock;
pub(crate) mod health;
pub(crate) mod outlier;
pub(crate) mod session;
#[cfg(test)]
pub(crate) mod test_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::RequestHeader;

use crate::error::Result;
use crate::filter::FilterCtx;
use budget::RetryBudgetState;
use outlier::EndpointHealth;

/// One endpoint of a backend, as pickers see it.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    pub(crate) health: Arc<EndpointHealth>,
}

impl Endpoint {
    /// A fresh endpoint at `addr`: no request in flight, never ejected, no health check.
    ///
    /// The gateway builds its endpoints itself from the configuration (keeping their health
    /// across swaps); this is for exercising an [`EndpointPicker`] or the built-in choices
    /// ([`pick_least_request`]) outside a gateway, in tests and benchmarks.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            health: Arc::new(EndpointHealth::new()),
        }
    }

    /// The endpoint's address.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Requests in flight to this endpoint now, across every route using it.
    pub fn in_flight(&self) -> u32 {
        self.health.in_flight()
    }

    /// Whether the endpoint may take requests: not ejected by outlier detection and not failing
    /// active health checks.
    pub fn is_available(&self) -> bool {
        self.health.available(clock::now_ms())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// What a picker knows about the request an attempt is for.
pub struct PickRequest<'a> {
    /// The request as the filters left it.
    pub header: &'a RequestHeader,
    /// The whole request body, when a filter asked for it to be buffered or the listener read
    /// it before routing ([`crate::config::Listener::body_headers`]).
    pub body: Option<&'a Bytes>,
    /// The filters' per-request context (route, typed extensions, hints).
    pub ctx: &'a FilterCtx,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
}

/// Chooses endpoints for an attempt.
///
/// Called in `upstream_peer` for every attempt with the backend's endpoints (unavailable ones
/// included: check [`Endpoint::is_available`]). Push endpoint indices into `out` in order of
/// preference: the first usable one not already tried by this request is used, the rest are
/// fallbacks. An empty `out` falls back to round robin; an `Err` answers 503.
#[async_trait]
pub trait EndpointPicker: Send + Sync + 'static {
    /// Orders the candidates for this attempt.
    async fn pick(
        &self,
        request: &PickRequest<'_>,
        endpoints: &[Endpoint],
        out: &mut Vec<usize>,
    ) -> Result<()>;
}

/// Per-backend state that survives configuration swaps.
pub(crate) struct BackendState {
    /// Round-robin position.
    pub(crate) next: AtomicUsize,
    /// Retries against requests, for the retry budget (created with the budget's window).
    budget: Mutex<Option<Arc<RetryBudgetState>>>,
    /// Endpoint health by address.
    endpoints: Mutex<HashMap<SocketAddr, Weak<EndpointHealth>>>,
}

impl BackendState {
    fn new() -> Self {
        BackendState {
            next: AtomicUsize::new(0),
            budget: Mutex::new(None),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoints at `addrs`, keeping the health of those seen before.
    pub(crate) fn endpoints(&self, addrs: &[SocketAddr]) -> Vec<Endpoint> {
        let mut known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, w| w.strong_count() > 0);
        addrs
            .iter()
            .map(|&addr| {
                let health = match known.get(&addr).and_then(Weak::upgrade) {
                    Some(h) => h,
                    None => {
                        let h = Arc::new(EndpointHealth::new());
                        known.insert(addr, Arc::downgrade(&h));
                        h
                    }
                };
                Endpoint { addr, health }
            })
            .collect()
    }

    /// The retry budget counts for `cfg`, kept across swaps while the window stays the same.
    pub(crate) fn budget(&self, cfg: &crate::config::RetryBudget) -> Arc<RetryBudgetState> {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = RetryBudgetState::new(cfg);
        match budget.as_ref() {
            Some(b) if b.window_ms() == fresh.window_ms() => b.clone(),
            _ => {
                let b = Arc::new(fresh);
                *budget = Some(b.clone());
                b
            }
        }
    }

    /// The next round-robin position.
    pub(crate) fn next_index(&self, len: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % len.max(1)
    }
}

/// Backend state by backend name, shared by every table the gateway compiles. Only touched
/// when a configuration is applied.
#[derive(Default)]
pub(crate) struct StateStore {
    backends: Mutex<HashMap<String, Weak<BackendState>>>,
}

impl StateStore {
    /// The state of backend `name`, created on first use.
    pub(crate) fn backend(&self, name: &str) -> Arc<BackendState> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends.retain(|_, w| w.strong_count() > 0);
        if let Some(state) = backends.get(name).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(BackendState::new());
        backends.insert(name.to_owned(), Arc::downgrade(&state));
        state
    }
}

/// The pickers a gateway knows by name, besides the built-ins.
#[derive(Clone, Default)]
pub struct PickerRegistry {
    pickers: HashMap<String, Arc<dyn EndpointPicker>>,
}

impl PickerRegistry {
    /// Registers `picker` under `name`, replacing an earlier one.
    pub fn register(&mut self, name: impl Into<String>, picker: Arc<dyn EndpointPicker>) {
        self.pickers.insert(name.into(), picker);
    }

    /// The picker registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn EndpointPicker>> {
        self.pickers.get(name)
    }
}

impl std::fmt::Debug for PickerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.pickers.keys()).finish()
    }
}

/// The built-in least-request choice, as backends with
/// [`crate::config::LoadBalancer::LeastRequest`] use it: of two endpoints drawn at random, the
/// available one with fewer requests in flight ([`Endpoint::in_flight`]).
///
/// `None` when `endpoints` is empty or neither drawn endpoint is available; the gateway then
/// falls back to round robin over the available ones. Takes no lock and allocates nothing. A
/// custom [`EndpointPicker`] can delegate to it.
pub fn pick_least_request(endpoints: &[Endpoint]) -> Option<usize> {
    least_request(endpoints, clock::now_ms())
}

/// The weighted choice among a rule's backendRefs: index `i` with probability
/// `weights[i] / total`, where `total` is the sum of `weights` (the gateway precomputes it).
///
/// `None` when there is no backend or every weight is 0 (the rule answers 500, as the Gateway
/// API asks). A single backend with a weight above 0 is chosen without drawing a random number.
pub fn pick_weighted<I>(weights: I, total: u64) -> Option<usize>
where
    I: IntoIterator<Item = u32>,
    I::IntoIter: ExactSizeIterator,
{
    let mut weights = weights.into_iter();
    match weights.len() {
        0 => None,
        1 => (total > 0).then_some(0),
        _ if total == 0 => None,
        _ => {
            let mut point = rand::random_range(0..total);
            weights.position(|w| {
                let w = u64::from(w);
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            })
        }
    }
}

/// Least request: of two random usable endpoints, the one with fewer requests in flight.
pub(crate) fn least_request(endpoints: &[Endpoint], now_ms: u64) -> Option<usize> {
    let usable = |i: usize| endpoints[i].health.available(now_ms);
    match endpoints.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            match (usable(a), usable(b)) {
                (true, true) => Some(
                    if endpoints[b].health.in_flight() < endpoints[a].health.in_flight() {
                        b
                    } else {
                        a
                    },
                ),
                (true, false) => Some(a),
                (false, true) => Some(b),
                (false, false) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_skips_zero_weights_and_refuses_all_zero() {
        assert_eq!(pick_weighted([], 0), None);
        assert_eq!(pick_weighted([0], 0), None);
        assert_eq!(pick_weighted([5], 5), Some(0));
        assert_eq!(pick_weighted([0, 0], 0), None);
        for _ in 0..200 {
            assert_eq!(pick_weighted([0, 3, 0], 3), Some(1));
            let i = pick_weighted([1, 0, 1], 2).unwrap();
            assert!(i == 0 || i == 2, "{i}");
        }
    }

    #[test]
    fn least_request_prefers_the_idler_endpoint() {
        let a = Endpoint::new("127.0.0.1:1".parse().unwrap());
        let b = Endpoint::new("127.0.0.1:2".parse().unwrap());
        assert_eq!(pick_least_request(&[]), None);
        assert_eq!(pick_least_request(std::slice::from_ref(&a)), Some(0));
        let _busy = a.health.begin();
        for _ in 0..50 {
            assert_eq!(pick_least_request(&[a.clone(), b.clone()]), Some(1));
        }
    }
}
