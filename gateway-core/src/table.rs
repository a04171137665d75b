//! The compiled, immutable form of a [`Config`]: what the request path reads.
//!
//! A [`Table`] is built once per applied configuration, off the request path, and published
//! through an `ArcSwap`. Everything a request needs is precomputed here: routers, validated header
//! names and values, filter instances, cumulative backend weights, TLS certificates by SNI.
//!
//! Compiling is incremental ([`Table::compile`] with the active table as `previous`): the
//! compiled rules of a route equal to one of the previous table's on the same listener are
//! shared with it (same `Arc`s: filter instances, metric handles and backend state carry over),
//! a listener router whose routing inputs are unchanged is shared, and the compiled endpoints
//! of a backend are compiled once per table and shared by every rule and mirror naming it (and
//! with the previous table while the backend is unchanged). See `docs/architecture.md`,
//! "Incremental configuration".

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::backend::budget::RetryBudgetState;
use crate::backend::session::SessionCodec;
use crate::backend::{BackendState, Endpoint, EndpointPicker, PickerRegistry, StateStore};
use crate::body_headers::BodyHeaders;
use crate::config::{
    BackendPolicy, BackendProtocol, BackendTarget, Bind, Config, Listener, LoadBalancer,
    PathNormalization, Protocol, RequestMirror, Retry, Route, Rule, SessionPersistence, Timeouts,
    UpstreamTls,
};
use crate::dns::{self, DnsAddresses};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::FilterRegistry;
use crate::filter::RouteInfo;
use crate::filter::chain::Chain;
use crate::observe::ListenerObs;
use crate::observe::metrics::{BackendStats, Metrics, RouteStats};
use crate::routing::{self, BindRouter};
use crate::sample::Share;
use crate::tls::{CertIndex, ClientAuth};
use crate::upstream_tls::{ClientConfigs, CompiledTls};

/// The active routing state of a gateway.
#[derive(Default)]
pub(crate) struct Table {
    /// The configuration this table was compiled from.
    pub(crate) config: Config,
    /// Binds by local address.
    pub(crate) binds: HashMap<SocketAddr, Arc<CompiledBind>>,
    /// Listeners and routes left out because they were invalid, with the reason.
    pub(crate) rejected: Vec<String>,
    /// The addresses the DNS backends of `config` resolved to when this table was compiled.
    pub(crate) dns: DnsAddresses,
    /// The compiled endpoints of every backend this table uses, for the next compile to reuse.
    pub(crate) backends: BackendCache,
    /// The generation of the endpoint picker registry this table was compiled with
    /// ([`CompileCtx::pickers_generation`]).
    pub(crate) pickers_generation: u64,
}

/// What compiling needs besides the configuration.
pub(crate) struct CompileCtx<'a> {
    pub(crate) filters: &'a FilterRegistry,
    pub(crate) pickers: &'a PickerRegistry,
    pub(crate) state: &'a StateStore,
    /// What each DNS backend resolves to now; a name missing here has no endpoints.
    pub(crate) dns: &'a DnsAddresses,
    /// rustls client configs of TLS backends, shared across tables.
    pub(crate) tls: &'a ClientConfigs,
    /// Where the compiled rules get their metric handles.
    pub(crate) metrics: &'a Metrics,
    /// Changes whenever a picker is registered: a table compiled with another generation is not
    /// reused (its rules may name a picker that was missing then).
    pub(crate) pickers_generation: u64,
}

impl Table {
    /// Compiles `config`, building custom filters and pickers through the registries and reusing
    /// backend state from the store.
    ///
    /// With `previous` (the active table), what `config` shares with it is reused instead of
    /// compiled again: the compiled rules of each route equal to one on the previous table's
    /// listener of the same name (unless the route names a DNS backend whose addresses changed),
    /// the router of each listener whose routing inputs are unchanged, and the compiled
    /// endpoints of unchanged backends. Nothing is reused when the picker registry changed. The
    /// result serves exactly as a compile without `previous` would.
    pub(crate) fn compile(
        config: Config,
        cx: &CompileCtx<'_>,
        previous: Option<&Table>,
    ) -> Result<Table> {
        if let Some(field) = config.limits.invalid() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("limits: {field} must be above zero"),
            ));
        }
        let previous = previous.filter(|p| p.pickers_generation == cx.pickers_generation);
        let reuse = Reuse {
            dns_unchanged: previous.is_some_and(|p| p.dns == *cx.dns),
        };
        let mut backends = Backends {
            previous: previous.map(|p| &p.backends),
            current: BackendCache::default(),
            known: Default::default(),
        };
        let mut binds = HashMap::with_capacity(config.binds.len());
        let mut rejected = Vec::new();
        for bind in &config.binds {
            let before = previous
                .and_then(|p| p.binds.get(&bind.address))
                .filter(|b| b.protocol == bind.protocol)
                .map(|b| &**b);
            let compiled = CompiledBind::compile(bind, cx, before, &reuse, &mut backends)
                .map_err(|e| e.more_context(format_args!("bind {}", bind.address)))?;
            rejected.extend(compiled.router.rejected().iter().cloned());
            rejected.extend(compiled.tls_rejected.iter().cloned());
            for l in &compiled.listeners {
                rejected.extend(l.rejected.iter().cloned());
            }
            if binds.insert(bind.address, Arc::new(compiled)).is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("two binds share the address {}", bind.address),
                ));
            }
        }
        Ok(Table {
            config,
            binds,
            rejected,
            dns: cx.dns.clone(),
            backends: backends.current,
            pickers_generation: cx.pickers_generation,
        })
    }

    /// The bind that accepted a connection on `local`. A socket bound to an unspecified address
    /// (`0.0.0.0:p`) serves connections whose local address is any IP on port `p`.
    pub(crate) fn bind_for(&self, local: Option<&SocketAddr>) -> Option<&Arc<CompiledBind>> {
        let local = local?;
        self.binds.get(local).or_else(|| {
            let any = match local {
                SocketAddr::V4(a) => SocketAddr::from(([0, 0, 0, 0], a.port())),
                SocketAddr::V6(a) => SocketAddr::from(([0u16; 8], a.port())),
            };
            self.binds.get(&any)
        })
    }

    /// Every resolved backend of this table with an active health check, by name.
    pub(crate) fn health_checked(&self) -> HashMap<Arc<str>, Arc<CompiledEndpoints>> {
        let mut out = HashMap::new();
        for bind in self.binds.values() {
            for listener in &bind.listeners {
                for rule in listener.routes.iter().flat_map(|r| r.iter()) {
                    for b in &rule.backends {
                        if let CompiledTarget::Endpoints(t) = &b.target
                            && t.policy.health_check.is_some()
                        {
                            out.entry(b.name.clone()).or_insert_with(|| t.clone());
                        }
                    }
                }
            }
        }
        out
    }
}

/// What the certificate index of a bind reads of one listener: its name, hostname and first
/// certificate.
type CertInput = (String, Option<String>, Option<crate::config::Certificate>);

/// One bind, compiled.
pub(crate) struct CompiledBind {
    pub(crate) protocol: Protocol,
    pub(crate) router: BindRouter,
    pub(crate) listeners: Vec<CompiledListener>,
    pub(crate) certs: Arc<CertIndex>,
    /// What `certs` was built from: each listener's name, hostname and first certificate (for
    /// reuse by the next table; empty on plain HTTP).
    cert_inputs: Vec<CertInput>,
    /// Client certificate validation (TLS binds; `Off` on plain HTTP).
    pub(crate) client_auth: ClientAuth,
    /// TLS settings left out, with the reason (see [`ClientAuth::compile`]).
    pub(crate) tls_rejected: Vec<String>,
}

impl CompiledBind {
    fn compile(
        bind: &Bind,
        cx: &CompileCtx<'_>,
        previous: Option<&CompiledBind>,
        reuse: &Reuse,
        backends: &mut Backends<'_>,
    ) -> Result<Self> {
        let (client_auth, listeners, tls_rejected) = if bind.protocol == Protocol::Https {
            let compiled = ClientAuth::compile(&bind.listeners, bind.address);
            let listeners: Cow<'_, [Listener]> = if compiled.refused_listeners.is_empty() {
                Cow::Borrowed(&bind.listeners)
            } else {
                // A listener whose validation differs from the bind's serves nothing.
                Cow::Owned(
                    bind.listeners
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            let mut l = l.clone();
                            if compiled.refused_listeners.contains(&i) {
                                l.routes.clear();
                            }
                            l
                        })
                        .collect(),
                )
            };
            (compiled.auth, listeners, compiled.rejected)
        } else {
            (
                ClientAuth::Off,
                Cow::Borrowed(&bind.listeners[..]),
                Vec::new(),
            )
        };
        // The previous listener of the same name, by index in `previous`.
        let before: Vec<Option<usize>> = listeners
            .iter()
            .map(|l| previous.and_then(|p| p.listeners.iter().position(|pl| pl.obs.name == l.name)))
            .collect();
        let router = BindRouter::build_reusing(&listeners, |i| {
            let p = previous?;
            let j = before[i]?;
            let pl = &p.listeners[j];
            routing::same_routing(&listeners[i], pl.hostname.as_deref(), &pl.models)
                .then(|| p.router.listener_router(j).cloned())
                .flatten()
        })?;
        let compiled_listeners = listeners
            .iter()
            .zip(&before)
            .map(|(l, before)| {
                let previous = before.and_then(|j| previous.map(|p| &p.listeners[j]));
                CompiledListener::compile(l, cx, previous, reuse, backends)
            })
            .collect();
        // The certificates are parsed again only when some listener's hostname or certificate
        // changed.
        let (certs, cert_inputs) = if bind.protocol == Protocol::Https {
            let inputs: Vec<CertInput> = listeners
                .iter()
                .map(|l| {
                    let cert = l.tls.as_ref().and_then(|t| t.certificates.first());
                    (l.name.clone(), l.hostname.clone(), cert.cloned())
                })
                .collect();
            match previous.filter(|p| p.cert_inputs == inputs) {
                Some(p) => (p.certs.clone(), inputs),
                None => (Arc::new(CertIndex::build(&listeners)?), inputs),
            }
        } else {
            (Arc::new(CertIndex::default()), Vec::new())
        };
        Ok(CompiledBind {
            protocol: bind.protocol,
            router,
            listeners: compiled_listeners,
            certs,
            cert_inputs,
            client_auth,
            tls_rejected,
        })
    }
}

/// One listener, compiled: its routes' rules by `[route][rule]`, matching [`crate::routing::RouteHit`].
pub(crate) struct CompiledListener {
    /// Its name and the series of its requests that matched no route.
    pub(crate) obs: Arc<ListenerObs>,
    pub(crate) port: u16,
    /// How request paths are normalised before routing.
    pub(crate) path: PathNormalization,
    /// Headers derived from the JSON body before routing; `None` (the default) when the
    /// listener has none, so the request path checks one `Option`.
    pub(crate) body_headers: Option<BodyHeaders>,
    /// Why some of the listener's settings were left out (an invalid body header name).
    pub(crate) rejected: Vec<String>,
    /// Each route's rules behind one `Arc`, shared with the previous table while the route is
    /// unchanged (taken over without copying).
    pub(crate) routes: Vec<Arc<[Arc<CompiledRule>]>>,
    /// The listener hostname its router was compiled with (for reuse by the next table).
    hostname: Option<String>,
    /// The routes `routes` was compiled from, in the same order (the same `Arc`s as the
    /// configuration's, for reuse by the next table; empty for a listener refused by its bind).
    models: Vec<Arc<Route>>,
}

impl CompiledListener {
    /// Compiles the rules of `listener`, taking those of a route equal to one of `previous`
    /// (the previous table's listener of the same name) from it.
    fn compile(
        listener: &Listener,
        cx: &CompileCtx<'_>,
        previous: Option<&CompiledListener>,
        reuse: &Reuse,
        backends: &mut Backends<'_>,
    ) -> Self {
        // Routes of `previous` by name, built on the first route found neither where the
        // previous routes continue nor at its own index (a route added or moved).
        let mut by_name: Option<HashMap<(&str, &str), usize>> = None;
        // Where in `previous` the last route found was, relative to its index here: a route
        // added or removed before shifts the ones after it by one.
        let mut shift: isize = 0;
        let routes = listener
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                let found = previous.and_then(|p| {
                    let continued = index.checked_add_signed(shift);
                    for j in [continued, Some(index)].into_iter().flatten() {
                        if p.models.get(j).is_some_and(|m| m == route) {
                            shift = j as isize - index as isize;
                            return Some(j);
                        }
                    }
                    // The same route, changed where it was: compiled again, nothing to look up.
                    if continued
                        .and_then(|j| p.models.get(j))
                        .is_some_and(|m| m.namespace == route.namespace && m.name == route.name)
                    {
                        return None;
                    }
                    let names = by_name.get_or_insert_with(|| {
                        p.models
                            .iter()
                            .enumerate()
                            .map(|(i, m)| ((m.namespace.as_str(), m.name.as_str()), i))
                            .collect()
                    });
                    let i = names
                        .get(&(route.namespace.as_str(), route.name.as_str()))
                        .copied()
                        .filter(|&i| p.models[i] == *route)?;
                    shift = i as isize - index as isize;
                    Some(i)
                });
                match (previous, found) {
                    (Some(p), Some(i)) if reuse.route(route) => {
                        let rules = p.routes[i].clone();
                        backends.keep(route, &rules, cx);
                        rules
                    }
                    _ => route
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, rule)| {
                            Arc::new(CompiledRule::compile(
                                listener, route, i, rule, cx, backends,
                            ))
                        })
                        .collect::<Vec<_>>()
                        .into(),
                }
            })
            .collect();
        let (body_headers, problems) =
            BodyHeaders::compile(&listener.body_headers, listener.max_body_header_bytes);
        let rejected = problems
            .into_iter()
            .map(|p| {
                tracing::warn!(listener = %listener.name, problem = %p, "listener setting rejected");
                format!("listener {}: {p}", listener.name)
            })
            .collect();
        CompiledListener {
            body_headers,
            rejected,
            obs: match previous {
                Some(p) => p.obs.clone(),
                None => Arc::new(ListenerObs::new(cx.metrics, &listener.name)),
            },
            port: listener.port,
            path: listener.path_normalization,
            routes,
            hostname: listener.hostname.clone(),
            models: listener.routes.clone(),
        }
    }
}

/// What decides whether compiled rules can be reused, besides the route itself.
struct Reuse {
    /// Every DNS backend resolves to what it resolved to for the previous table.
    dns_unchanged: bool,
}

impl Reuse {
    /// Whether the previous compile of a route equal to `route` serves as this one: always,
    /// unless the route names a DNS backend and some DNS answer changed.
    fn route(&self, route: &Route) -> bool {
        if self.dns_unchanged {
            return true;
        }
        let mut keys = std::collections::BTreeSet::new();
        dns::route_targets(route, &mut keys);
        keys.is_empty()
    }
}

/// The compiled endpoints of the backends of one table, by backend name: each distinct
/// backend (name, target and, for a DNS backend, its addresses) is compiled once and shared.
#[derive(Default)]
pub(crate) struct BackendCache {
    by_name: HashMap<Arc<str>, Vec<CachedBackend>>,
}

/// One compiled backend of a [`BackendCache`].
struct CachedBackend {
    target: BackendTarget,
    /// The addresses a DNS backend was compiled with (empty for other targets, whose addresses
    /// are in `target`).
    resolved: Vec<SocketAddr>,
    compiled: Arc<CompiledEndpoints>,
}

impl BackendCache {
    fn find(
        &self,
        name: &str,
        target: &BackendTarget,
        resolved: &[SocketAddr],
    ) -> Option<&Arc<CompiledEndpoints>> {
        self.by_name
            .get(name)?
            .iter()
            .find(|c| c.target == *target && c.resolved == resolved)
            .map(|c| &c.compiled)
    }

    /// How many distinct backends are compiled.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }
}

/// The backends compiled for the table being built, and those of the previous table.
struct Backends<'a> {
    previous: Option<&'a BackendCache>,
    current: BackendCache,
    /// The compiled endpoints already in `current`, by address (each is held by `current`, so
    /// no address is reused while the table is built): a reused rule's backend is found here
    /// with one pointer hash instead of a lookup by name.
    known: std::collections::HashSet<usize>,
}

impl Backends<'_> {
    /// The compiled target of backend `name`: shared with an earlier rule of this table or with
    /// the previous table when the backend is the same, else compiled (and kept for the next
    /// rule). Unresolved targets are not kept.
    fn target(
        &mut self,
        name: &str,
        target: &BackendTarget,
        cx: &CompileCtx<'_>,
    ) -> CompiledTarget {
        let resolved: Vec<SocketAddr> = match target {
            BackendTarget::Dns(d) => dns_endpoints(d, cx),
            _ => Vec::new(),
        };
        if let Some(found) = self.current.find(name, target, &resolved) {
            return CompiledTarget::Endpoints(found.clone());
        }
        let compiled = match self.previous.and_then(|p| p.find(name, target, &resolved)) {
            Some(found) => CompiledTarget::Endpoints(found.clone()),
            None => CompiledTarget::compile(name, target, cx),
        };
        if let CompiledTarget::Endpoints(e) = &compiled {
            self.known.insert(Arc::as_ptr(e) as usize);
            let entry = CachedBackend {
                target: target.clone(),
                resolved,
                compiled: e.clone(),
            };
            match self.current.by_name.get_mut(name) {
                Some(list) => list.push(entry),
                None => {
                    self.current.by_name.insert(Arc::from(name), vec![entry]);
                }
            }
        }
        compiled
    }
}

impl Backends<'_> {
    /// Records the compiled endpoints of `rules` (reused from the previous table, compiled from
    /// `route`) in this table's cache, so that later tables keep sharing them.
    fn keep(&mut self, route: &Route, rules: &[Arc<CompiledRule>], cx: &CompileCtx<'_>) {
        for (model, compiled) in route.rules.iter().zip(rules) {
            for (b, c) in model.backends.iter().zip(&compiled.backends) {
                let CompiledTarget::Endpoints(e) = &c.target else {
                    continue;
                };
                if !self.known.insert(Arc::as_ptr(e) as usize) {
                    continue;
                }
                let resolved = match &b.target {
                    BackendTarget::Dns(d) => dns_endpoints(d, cx),
                    _ => Vec::new(),
                };
                let entry = CachedBackend {
                    target: b.target.clone(),
                    resolved,
                    compiled: e.clone(),
                };
                match self.current.by_name.get_mut(b.name.as_str()) {
                    Some(list) => list.push(entry),
                    None => {
                        self.current
                            .by_name
                            .insert(Arc::from(b.name.as_str()), vec![entry]);
                    }
                }
            }
        }
    }
}

/// The endpoints DNS backend `d` resolves to now.
fn dns_endpoints(d: &crate::config::DnsBackend, cx: &CompileCtx<'_>) -> Vec<SocketAddr> {
    cx.dns
        .get(&dns::key(d))
        .into_iter()
        .flatten()
        .map(|ip| SocketAddr::new(*ip, d.port))
        .collect()
}

/// A rule ready to serve.
pub(crate) struct CompiledRule {
    /// `namespace/route/rule` for logs.
    pub(crate) name: String,
    /// What filters see of the match.
    pub(crate) info: Arc<RouteInfo>,
    pub(crate) chain: Chain,
    pub(crate) backends: Vec<CompiledBackend>,
    pub(crate) total_weight: u64,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: Option<Retry>,
    pub(crate) session: Option<SessionPersistence>,
    /// The series of requests answered before a backend was chosen (redirects, direct
    /// responses, filter errors).
    pub(crate) stats: Arc<RouteStats>,
}

impl CompiledRule {
    fn compile(
        listener: &Listener,
        route: &Route,
        index: usize,
        rule: &Rule,
        cx: &CompileCtx<'_>,
        backends: &mut Backends<'_>,
    ) -> Self {
        let label = rule.name.clone().unwrap_or_else(|| index.to_string());
        // Mirrors and backends both take compiled endpoints from the table's cache.
        let cache = std::cell::RefCell::new(backends);
        let mirror = |m: &RequestMirror| CompiledMirror::compile(m, cx, &mut cache.borrow_mut());
        let mut chain = Chain::compile(&rule.filters, cx.filters, mirror);
        let sticky = rule
            .session_persistence
            .iter()
            .chain(rule.backends.iter().filter_map(|b| match &b.target {
                BackendTarget::Endpoints(e) => e.policy.session_persistence.as_ref(),
                BackendTarget::Dns(d) => d.policy.session_persistence.as_ref(),
                BackendTarget::Unresolved { .. } => None,
            }));
        for cfg in sticky {
            if let Err(e) = SessionCodec::validate(cfg) {
                chain
                    .invalid
                    .get_or_insert(format!("session persistence: {e}"));
            }
        }
        let route_label = format!("{}/{}", route.namespace, route.name);
        let stats = |backend: &str| {
            cx.metrics
                .route(&listener.name, &route_label, &label, backend)
        };
        let rule_stats = stats("");
        let backends = rule
            .backends
            .iter()
            .map(|b| {
                let name = Arc::from(b.name.as_str());
                let target = cache.borrow_mut().target(&b.name, &b.target, cx);
                CompiledBackend {
                    route_stats: stats(&b.name),
                    stats: cx.metrics.backend(&name),
                    name,
                    weight: b.weight,
                    target,
                    chain: Chain::compile(&b.filters, cx.filters, mirror),
                }
            })
            .collect();
        CompiledRule {
            name: format!("{route_label}/{label}"),
            info: Arc::new(RouteInfo {
                listener: listener.name.clone(),
                namespace: route.namespace.clone(),
                route: route.name.clone(),
                rule: label,
            }),
            chain,
            backends,
            total_weight: rule.backends.iter().map(|b| u64::from(b.weight)).sum(),
            timeouts: rule.timeouts,
            retry: rule.retry.clone(),
            session: rule.session_persistence.clone(),
            stats: rule_stats,
        }
    }

    /// Picks a backend by weight; `None` when there is none or all weights are 0.
    pub(crate) fn pick_backend(&self) -> Option<usize> {
        crate::backend::pick_weighted(self.backends.iter().map(|b| b.weight), self.total_weight)
    }
}

/// A weighted backend, compiled.
pub(crate) struct CompiledBackend {
    pub(crate) name: Arc<str>,
    /// The series of requests this rule sent to this backend.
    pub(crate) route_stats: Arc<RouteStats>,
    /// What is measured of the backend (connects, attempts, retries, ejections).
    pub(crate) stats: Arc<BackendStats>,
    pub(crate) weight: u32,
    pub(crate) target: CompiledTarget,
    pub(crate) chain: Chain,
}

/// Where a backend's requests go.
pub(crate) enum CompiledTarget {
    Endpoints(Arc<CompiledEndpoints>),
    Unresolved(String),
}

impl CompiledTarget {
    fn compile(name: &str, target: &BackendTarget, cx: &CompileCtx<'_>) -> Self {
        match target {
            BackendTarget::Endpoints(b) => Self::endpoints(
                name,
                &b.endpoints,
                b.protocol,
                &b.policy,
                b.tls.as_ref(),
                cx,
            ),
            BackendTarget::Unresolved { reason } => CompiledTarget::Unresolved(reason.clone()),
            BackendTarget::Dns(d) => {
                let endpoints = dns_endpoints(d, cx);
                Self::endpoints(name, &endpoints, d.protocol, &d.policy, d.tls.as_ref(), cx)
            }
        }
    }

    /// A backend of `endpoints`, with the state kept for backend `name`.
    fn endpoints(
        name: &str,
        endpoints: &[SocketAddr],
        protocol: BackendProtocol,
        policy: &BackendPolicy,
        tls: Option<&UpstreamTls>,
        cx: &CompileCtx<'_>,
    ) -> Self {
        let tls = match tls.map(|t| cx.tls.compile(name, t, protocol)).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "invalid backend TLS settings");
                return CompiledTarget::Unresolved(format!("backend TLS: {e}"));
            }
        };
        let picker = match &policy.load_balancer {
            LoadBalancer::RoundRobin => PickerKind::RoundRobin,
            LoadBalancer::LeastRequest => PickerKind::LeastRequest,
            LoadBalancer::Custom(picker) => match cx.pickers.get(picker) {
                Some(p) => PickerKind::Custom(p.clone()),
                None => {
                    return CompiledTarget::Unresolved(format!(
                        "no endpoint picker registered as {picker:?}"
                    ));
                }
            },
        };
        let state = cx.state.backend(name);
        CompiledTarget::Endpoints(Arc::new(CompiledEndpoints {
            endpoints: state.endpoints(endpoints),
            budget: policy.retry_budget.as_ref().map(|cfg| state.budget(cfg)),
            protocol,
            policy: policy.clone(),
            state,
            picker,
            tls,
        }))
    }
}

/// A backend's endpoints, how to talk to them, and their shared state.
pub(crate) struct CompiledEndpoints {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) protocol: BackendProtocol,
    pub(crate) policy: BackendPolicy,
    pub(crate) state: Arc<BackendState>,
    /// Retry budget counts, when the policy sets a budget.
    pub(crate) budget: Option<Arc<RetryBudgetState>>,
    pub(crate) picker: PickerKind,
    /// TLS to the endpoints; `None`: plain TCP.
    pub(crate) tls: Option<CompiledTls>,
}

/// The endpoint picker of a backend.
pub(crate) enum PickerKind {
    RoundRobin,
    LeastRequest,
    Custom(Arc<dyn EndpointPicker>),
}

/// A `RequestMirror` filter, compiled.
pub(crate) struct CompiledMirror {
    target: Arc<CompiledEndpoints>,
    /// The share of requests mirrored; `None`: every request.
    share: Option<Share>,
}

impl CompiledMirror {
    fn compile(
        m: &RequestMirror,
        cx: &CompileCtx<'_>,
        backends: &mut Backends<'_>,
    ) -> std::result::Result<Self, String> {
        if let Some((num, den)) = m.fraction
            && (den == 0 || num > den)
        {
            return Err(format!("mirror fraction {num}/{den} is not within 0..=1"));
        }
        match backends.target(&m.backend.name, &m.backend.target, cx) {
            CompiledTarget::Endpoints(target) => Ok(CompiledMirror {
                target,
                share: m.fraction.map(|(num, den)| Share::new(num, den)),
            }),
            CompiledTarget::Unresolved(reason) => {
                Err(format!("mirror backend {}: {reason}", m.backend.name))
            }
        }
    }

    /// Whether this request is mirrored: the configured share of requests, chosen at random
    /// with the count kept within one request of the exact share ([`Share`]).
    pub(crate) fn sampled(&self) -> bool {
        self.share.as_ref().is_none_or(Share::take)
    }

    /// The mirror endpoint for this request, round robin over available endpoints, with the
    /// backend's protocol and TLS settings.
    pub(crate) fn endpoint(&self) -> Option<(SocketAddr, BackendProtocol, Option<&CompiledTls>)> {
        let endpoints = &self.target.endpoints;
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let now = crate::backend::clock::now_ms();
        let start = self.target.state.next_index(n);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| endpoints[i].health.available(now))
            .unwrap_or(start);
        Some((
            endpoints[i].address(),
            self.target.protocol,
            self.target.tls.as_ref(),
        ))
    }
}

/// Builds a rustls certified key from PEM strings.
pub(crate) fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::because(ErrorKind::InvalidCertificate, "reading certificate PEM", e))?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidCertificate,
            "no certificate in PEM",
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| Error::because(ErrorKind::InvalidCertificate, "reading key PEM", e))?
        .ok_or_else(|| Error::new(ErrorKind::InvalidCertificate, "no private key in PEM"))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::because(ErrorKind::InvalidCertificate, "unsupported private key", e))?;
    Ok(CertifiedKey::new(certs, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PickerRegistry;
    use crate::config::{BackendRef, Filter, HeaderModifier};
    use crate::routing::RequestParts;

    /// Compiles tables the way a gateway does, with one state store and metrics registry.
    struct Compiler {
        filters: FilterRegistry,
        pickers: PickerRegistry,
        state: StateStore,
        dns: DnsAddresses,
        tls: ClientConfigs,
        metrics: Metrics,
    }

    impl Compiler {
        fn new() -> Self {
            Compiler {
                filters: FilterRegistry::with_builtins(),
                pickers: PickerRegistry::default(),
                state: StateStore::default(),
                dns: DnsAddresses::default(),
                tls: ClientConfigs::default(),
                metrics: Metrics::new(),
            }
        }

        fn compile(&self, config: Config, previous: Option<&Table>, pickers: u64) -> Table {
            let cx = CompileCtx {
                filters: &self.filters,
                pickers: &self.pickers,
                state: &self.state,
                dns: &self.dns,
                tls: &self.tls,
                metrics: &self.metrics,
                pickers_generation: pickers,
            };
            Table::compile(config, &cx, previous).expect("compiles")
        }
    }

    /// Route `r{i}`: prefix `/svc-{i}/` to backend `be` (or `other` for `i` = 99), adding
    /// header `x-route: {tag}`.
    fn route(i: usize, tag: &str) -> Route {
        let backend = if i == 99 { "other" } else { "be" };
        Route::new("ns", format!("r{i}")).rule(
            Rule::prefix(format!("/svc-{i}/"))
                .filter(Filter::RequestHeaderModifier(HeaderModifier {
                    add: vec![("x-route".into(), tag.into())],
                    ..Default::default()
                }))
                .backend(BackendRef::endpoints(
                    backend,
                    vec![SocketAddr::from(([127, 0, 0, 1], 9))],
                )),
        )
    }

    fn config(routes: &[Arc<Route>]) -> Config {
        let mut listener = Listener::new("ns/gw/http", 80);
        listener.routes = routes.to_vec();
        Config {
            binds: vec![Bind {
                address: SocketAddr::from(([127, 0, 0, 1], 8080)),
                protocol: Protocol::Http,
                listeners: vec![listener],
            }],
            ..Default::default()
        }
    }

    fn bind(table: &Table) -> &CompiledBind {
        table.binds.values().next().expect("one bind")
    }

    fn rule(table: &Table, route: usize) -> &Arc<CompiledRule> {
        &bind(table).listeners[0].routes[route][0]
    }

    fn endpoints(rule: &CompiledRule) -> &Arc<CompiledEndpoints> {
        match &rule.backends[0].target {
            CompiledTarget::Endpoints(e) => e,
            CompiledTarget::Unresolved(why) => panic!("unresolved: {why}"),
        }
    }

    /// The route index and the `x-route` value of the rule that takes `path`.
    fn lookup(table: &Table, path: &str) -> Option<(usize, String)> {
        let headers = http::HeaderMap::new();
        let hit = bind(table).router.lookup(&RequestParts {
            host: "example.com",
            path,
            query: None,
            method: "GET",
            headers: &headers,
        })?;
        let route = &table.config.binds[0].listeners[0].routes[hit.route];
        let Filter::RequestHeaderModifier(m) = &route.rules[hit.rule].filters[0] else {
            panic!("no header modifier");
        };
        Some((hit.route, m.add[0].1.clone()))
    }

    #[test]
    fn rules_naming_one_backend_share_its_compiled_endpoints() {
        let c = Compiler::new();
        let routes: Vec<Arc<Route>> = [1, 2, 99]
            .iter()
            .map(|&i| Arc::new(route(i, "a")))
            .collect();
        let table = c.compile(config(&routes), None, 0);
        assert!(Arc::ptr_eq(
            endpoints(rule(&table, 0)),
            endpoints(rule(&table, 1))
        ));
        assert!(!Arc::ptr_eq(
            endpoints(rule(&table, 0)),
            endpoints(rule(&table, 2))
        ));
        assert_eq!(table.backends.len(), 2);
    }

    #[test]
    fn an_unchanged_route_keeps_its_compiled_rules_and_a_changed_one_is_compiled_again() {
        let c = Compiler::new();
        let v1: Vec<Arc<Route>> = (0..3).map(|i| Arc::new(route(i, "a"))).collect();
        let t1 = c.compile(config(&v1), None, 0);

        // Route 1's filter changes (a new Arc); routing inputs are unchanged.
        let mut v2 = v1.clone();
        v2[1] = Arc::new(route(1, "b"));
        let t2 = c.compile(config(&v2), Some(&t1), 0);
        assert!(Arc::ptr_eq(rule(&t1, 0), rule(&t2, 0)));
        assert!(Arc::ptr_eq(rule(&t1, 2), rule(&t2, 2)));
        assert!(!Arc::ptr_eq(rule(&t1, 1), rule(&t2, 1)));
        // The changed rule still shares the backend's compiled endpoints (and so its state).
        assert!(Arc::ptr_eq(
            endpoints(rule(&t1, 1)),
            endpoints(rule(&t2, 1))
        ));
        assert!(Arc::ptr_eq(
            bind(&t1).router.listener_router(0).expect("router"),
            bind(&t2).router.listener_router(0).expect("router")
        ));
        assert_eq!(lookup(&t2, "/svc-1/x"), Some((1, "b".into())));
        assert_eq!(lookup(&t2, "/svc-2/x"), Some((2, "a".into())));

        // An equal route that is another Arc is reused too.
        let mut v3 = v2.clone();
        v3[0] = Arc::new(route(0, "a"));
        let t3 = c.compile(config(&v3), Some(&t2), 0);
        assert!(Arc::ptr_eq(rule(&t2, 0), rule(&t3, 0)));
    }

    #[test]
    fn a_changed_match_rebuilds_the_router_and_serves_the_new_path() {
        let c = Compiler::new();
        let v1: Vec<Arc<Route>> = (0..3).map(|i| Arc::new(route(i, "a"))).collect();
        let t1 = c.compile(config(&v1), None, 0);
        let mut v2 = v1.clone();
        v2[1] = Arc::new(Route::new("ns", "r1").rule(Rule::prefix("/moved/").filter(
            Filter::RequestHeaderModifier(HeaderModifier {
                add: vec![("x-route".into(), "m".into())],
                ..Default::default()
            }),
        )));
        let t2 = c.compile(config(&v2), Some(&t1), 0);
        assert!(!Arc::ptr_eq(
            bind(&t1).router.listener_router(0).expect("router"),
            bind(&t2).router.listener_router(0).expect("router")
        ));
        assert_eq!(lookup(&t2, "/moved/x"), Some((1, "m".into())));
        assert_eq!(lookup(&t2, "/svc-1/x"), None);
        assert_eq!(lookup(&t2, "/svc-0/x"), Some((0, "a".into())));
        assert!(Arc::ptr_eq(rule(&t1, 2), rule(&t2, 2)));

        // A route added in front shifts the others: they are found by name and reused.
        let mut v3 = vec![Arc::new(route(7, "n"))];
        v3.extend(v2.iter().cloned());
        let t3 = c.compile(config(&v3), Some(&t2), 0);
        assert!(Arc::ptr_eq(rule(&t2, 0), rule(&t3, 1)));
        assert!(Arc::ptr_eq(rule(&t2, 2), rule(&t3, 3)));
        assert_eq!(lookup(&t3, "/svc-7/x"), Some((0, "n".into())));
        assert_eq!(lookup(&t3, "/svc-2/x"), Some((3, "a".into())));
    }

    #[test]
    fn a_changed_backend_or_picker_registry_is_not_reused() {
        let c = Compiler::new();
        let v1: Vec<Arc<Route>> = (0..2).map(|i| Arc::new(route(i, "a"))).collect();
        let t1 = c.compile(config(&v1), None, 0);

        // Another picker generation: everything is compiled again (the backend state is the
        // store's, so it is still shared).
        let t2 = c.compile(config(&v1), Some(&t1), 1);
        assert!(!Arc::ptr_eq(rule(&t1, 0), rule(&t2, 0)));
        assert!(!Arc::ptr_eq(
            endpoints(rule(&t1, 0)),
            endpoints(rule(&t2, 0))
        ));
        assert!(Arc::ptr_eq(
            &endpoints(rule(&t1, 0)).state,
            &endpoints(rule(&t2, 0)).state
        ));

        // Route 1 moves to another endpoint of backend `be`: new compiled endpoints for it,
        // route 0 keeps the old ones.
        let mut moved = route(1, "a");
        moved.rules[0].backends[0] =
            BackendRef::endpoints("be", vec![SocketAddr::from(([127, 0, 0, 1], 10))]);
        let v3 = vec![v1[0].clone(), Arc::new(moved)];
        let t3 = c.compile(config(&v3), Some(&t2), 1);
        assert!(Arc::ptr_eq(rule(&t2, 0), rule(&t3, 0)));
        let new = endpoints(rule(&t3, 1));
        assert!(!Arc::ptr_eq(endpoints(rule(&t2, 1)), new));
        assert_eq!(
            new.endpoints[0].address(),
            SocketAddr::from(([127, 0, 0, 1], 10))
        );
        assert_eq!(t3.backends.len(), 2);
    }

    /// What serving from `table` depends on, as text: per route of the listener its name and
    /// per rule its backends (name, endpoints); the compiled backends; and which route, rule
    /// and `x-route` value takes each probe path.
    fn describe(table: &Table, probes: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let listener = &bind(table).listeners[0];
        let models = &table.config.binds[0].listeners[0].routes;
        assert_eq!(listener.routes.len(), models.len());
        for (model, rules) in models.iter().zip(&listener.routes) {
            assert_eq!(model.rules.len(), rules.len());
            for rule in rules.iter() {
                let backends: Vec<String> = rule
                    .backends
                    .iter()
                    .map(|b| match &b.target {
                        CompiledTarget::Endpoints(e) => format!(
                            "{} {:?}",
                            b.name,
                            e.endpoints.iter().map(|p| p.address()).collect::<Vec<_>>()
                        ),
                        CompiledTarget::Unresolved(why) => format!("{} unresolved {why}", b.name),
                    })
                    .collect();
                out.push(format!("{}/{}: {backends:?}", model.namespace, model.name));
            }
        }
        let mut backends: Vec<String> = table
            .backends
            .by_name
            .iter()
            .flat_map(|(name, list)| list.iter().map(move |c| format!("{name} {:?}", c.target)))
            .collect();
        backends.sort();
        out.extend(backends);
        for path in probes {
            out.push(format!("{path} -> {:?}", lookup(table, path)));
        }
        out
    }

    #[test]
    fn incremental_compiles_serve_as_fresh_ones_through_a_series_of_changes() {
        let c = Compiler::new();
        let probes: Vec<String> = (0..12)
            .map(|i| format!("/svc-{i}/x"))
            .chain(["/moved/x".to_string(), "/svc-99/x".to_string()])
            .collect();
        let mut routes: Vec<Arc<Route>> = (0..8).map(|i| Arc::new(route(i, "a"))).collect();
        let mut previous = c.compile(config(&routes), None, 0);
        let check = |routes: &[Arc<Route>], previous: &mut Table| {
            let patched = c.compile(config(routes), Some(previous), 0);
            let fresh = c.compile(config(routes), None, 0);
            assert_eq!(describe(&patched, &probes), describe(&fresh, &probes));
            // Every route the previous table had, unchanged, keeps its compiled rules.
            for (i, r) in routes.iter().enumerate() {
                let before = previous.config.binds[0].listeners[0]
                    .routes
                    .iter()
                    .position(|p| Arc::ptr_eq(p, r));
                if let Some(j) = before {
                    assert!(Arc::ptr_eq(
                        &bind(previous).listeners[0].routes[j],
                        &bind(&patched).listeners[0].routes[i]
                    ));
                }
            }
            *previous = patched;
        };
        // A filter changed.
        routes[2] = Arc::new(route(2, "b"));
        check(&routes, &mut previous);
        // Added in the middle, removed at the front.
        routes.insert(4, Arc::new(route(9, "n")));
        routes.remove(0);
        check(&routes, &mut previous);
        // A match changed (the router is rebuilt), a route to another backend added.
        routes[1] = Arc::new(Route::new("ns", "r2").rule(Rule::prefix("/moved/").filter(
            Filter::RequestHeaderModifier(HeaderModifier {
                add: vec![("x-route".into(), "m".into())],
                ..Default::default()
            }),
        )));
        routes.push(Arc::new(route(99, "o")));
        check(&routes, &mut previous);
        // Reordered (as a changed creation time reorders routes), and one moved to another
        // endpoint of the same backend.
        routes.swap(0, 3);
        let mut moved = route(5, "a");
        moved.rules[0].backends[0] =
            BackendRef::endpoints("be", vec![SocketAddr::from(([127, 0, 0, 1], 10))]);
        let at = routes.iter().position(|r| r.name == "r5").expect("r5");
        routes[at] = Arc::new(moved);
        check(&routes, &mut previous);
        // The backend `other` no longer used; everything removed; some back.
        routes.retain(|r| r.name != "r99");
        check(&routes, &mut previous);
        check(&[], &mut previous);
        routes.truncate(3);
        check(&routes, &mut previous);
    }
}
