//! The compiled, immutable form of a [`Config`]: what the request path reads.
//!
//! A [`Table`] is built once per applied configuration, off the request path, and published
//! through an `ArcSwap`. Everything a request needs is precomputed here: routers, validated header
//! names and values, filter instances, cumulative backend weights, TLS certificates by SNI.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::backend::budget::RetryBudgetState;
use crate::backend::session::SessionCodec;
use crate::backend::{BackendState, Endpoint, EndpointPicker, PickerRegistry, StateStore};
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
use crate::routing::BindRouter;
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
}

impl Table {
    /// Compiles `config`, building custom filters and pickers through the registries and reusing
    /// backend state from the store.
    pub(crate) fn compile(config: Config, cx: &CompileCtx<'_>) -> Result<Table> {
        if let Some(field) = config.limits.invalid() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("limits: {field} must be above zero"),
            ));
        }
        let mut binds = HashMap::with_capacity(config.binds.len());
        let mut rejected = Vec::new();
        for bind in &config.binds {
            let compiled = CompiledBind::compile(bind, cx)
                .map_err(|e| e.more_context(format_args!("bind {}", bind.address)))?;
            rejected.extend(compiled.router.rejected().iter().cloned());
            rejected.extend(compiled.tls_rejected.iter().cloned());
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
                for rule in listener.routes.iter().flatten() {
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

/// One bind, compiled.
pub(crate) struct CompiledBind {
    pub(crate) protocol: Protocol,
    pub(crate) router: BindRouter,
    pub(crate) listeners: Vec<CompiledListener>,
    pub(crate) certs: CertIndex,
    /// Client certificate validation (TLS binds; `Off` on plain HTTP).
    pub(crate) client_auth: ClientAuth,
    /// TLS settings left out, with the reason (see [`ClientAuth::compile`]).
    pub(crate) tls_rejected: Vec<String>,
}

impl CompiledBind {
    fn compile(bind: &Bind, cx: &CompileCtx<'_>) -> Result<Self> {
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
        let router = BindRouter::build(&listeners)?;
        let compiled_listeners = listeners
            .iter()
            .map(|l| CompiledListener {
                obs: Arc::new(ListenerObs::new(cx.metrics, &l.name)),
                port: l.port,
                path: l.path_normalization,
                routes: l
                    .routes
                    .iter()
                    .map(|route| {
                        route
                            .rules
                            .iter()
                            .enumerate()
                            .map(|(i, rule)| Arc::new(CompiledRule::compile(l, route, i, rule, cx)))
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        let certs = if bind.protocol == Protocol::Https {
            CertIndex::build(&listeners)?
        } else {
            CertIndex::default()
        };
        Ok(CompiledBind {
            protocol: bind.protocol,
            router,
            listeners: compiled_listeners,
            certs,
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
    pub(crate) routes: Vec<Vec<Arc<CompiledRule>>>,
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
    ) -> Self {
        let label = rule.name.clone().unwrap_or_else(|| index.to_string());
        let mirror = |m: &RequestMirror| CompiledMirror::compile(m, cx);
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
                CompiledBackend {
                    route_stats: stats(&b.name),
                    stats: cx.metrics.backend(&name),
                    name,
                    weight: b.weight,
                    target: CompiledTarget::compile(&b.name, &b.target, cx),
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
                let endpoints: Vec<SocketAddr> = cx
                    .dns
                    .get(&dns::key(d))
                    .into_iter()
                    .flatten()
                    .map(|ip| SocketAddr::new(*ip, d.port))
                    .collect();
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
    fn compile(m: &RequestMirror, cx: &CompileCtx<'_>) -> std::result::Result<Self, String> {
        if let Some((num, den)) = m.fraction
            && (den == 0 || num > den)
        {
            return Err(format!("mirror fraction {num}/{den} is not within 0..=1"));
        }
        match CompiledTarget::compile(&m.backend.name, &m.backend.target, cx) {
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
