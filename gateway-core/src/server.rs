//! The gateway runtime: sockets, accept loops, TLS handshakes, configuration swaps and draining.
//!
//! Pingora fixes its listeners when a `Server` starts; Gateway API listeners come and go at run
//! time. So [`Gateway`] owns the accept loops: one task per bound socket hands each connection
//! (after the TLS handshake on HTTPS binds) to a shared Pingora `HttpProxy`, which runs the
//! [`crate::proxy::GatewayProxy`] phases. Every bind shares the proxy's upstream connection pool.
//!
//! On plain binds the accept loop tells HTTP/2 with prior knowledge (h2c) from HTTP/1 itself,
//! reading only as many bytes as it takes to diverge from the HTTP/2 preface. (Pingora's own
//! check waits for all 24 bytes of it, so a shorter HTTP/1 request, such as
//! `GET / HTTP/1.0\r\n\r\n`, would hang.) h2c connections go to a second `HttpProxy` with the
//! same phases and its own upstream pool; everything else goes to the first.
//!
//! [`Gateway::apply`] compiles a [`Config`], binds the sockets it adds, swaps the routing table
//! atomically and closes the sockets it drops. Connections on sockets that stay keep running;
//! in-flight requests finish on the table they started with.
//!
//! DNS backends ([`crate::config::BackendTarget::Dns`]) get a watcher per (hostname, port)
//! ([`crate::dns`]). `apply` starts the watchers a configuration needs (stopping the others),
//! waits up to [`FIRST_RESOLUTION_WAIT`] for names it has not seen before, and compiles each
//! DNS backend as the endpoints its watcher knows. When a watcher's addresses change, the table
//! is recompiled from the active configuration and swapped, without a new `apply`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::listener::Listener as L4Listener;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::HttpProxy;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::backend::health::HealthChecker;
use crate::backend::session::SessionCodec;
use crate::backend::{EndpointPicker, PickerRegistry, StateStore};
use crate::config::{Config, HealthCheck, Limits, Protocol};
use crate::dns::{self, DnsKey, DnsStatus, DnsWatchers};
use crate::downstream::{GuardedStream, serve_h1};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::FilterRegistry;
use crate::limits::{BodyBudget, Gauge, Slot, Throttle};
use crate::mirror::Mirrors;
use crate::observe::metrics::{ApplyResult, RuntimeStats};
use crate::observe::{AccessLog, Metrics, Observe};
use crate::proxy::GatewayProxy;
use crate::table::{CompileCtx, Table};
use crate::tls;
use crate::upstream_tls::ClientConfigs;

/// Mirrored requests in flight at once, across the gateway; more are dropped.
const MAX_MIRRORS_IN_FLIGHT: usize = 1024;

/// How long [`Gateway::apply`] waits for the first resolution of DNS backend names it has not
/// seen before, so a freshly applied route to them works at once.
pub const FIRST_RESOLUTION_WAIT: Duration = Duration::from_secs(2);

/// What [`Gateway::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Whether the configuration differed from the active one and was swapped in.
    pub changed: bool,
    /// Sockets bound by this apply.
    pub bound: Vec<SocketAddr>,
    /// Sockets closed by this apply.
    pub closed: Vec<SocketAddr>,
    /// Sockets that could not be bound, with the reason. Their routes are compiled but unreachable;
    /// the next apply tries to bind them again.
    pub failed: Vec<(SocketAddr, String)>,
    /// Listeners and routes left out because they were invalid, with the reason. Everything else
    /// in the configuration serves.
    pub rejected: Vec<String>,
}

/// Counts of mirrored requests, from [`Gateway::mirror_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Mirrored requests in flight now.
    pub in_flight: usize,
    /// Mirrored requests dropped since start: over the in-flight bound, or too slow for the body.
    pub dropped: u64,
    /// Mirrored requests that failed since start (connect, protocol or timeout errors).
    pub failed: u64,
}

/// Overload counters, from [`Gateway::overload_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverloadStats {
    /// Downstream connections open now, across all binds.
    pub open_connections: usize,
    /// Connections closed at accept since start because a connection limit
    /// ([`Limits::max_connections`] or [`Limits::max_connections_per_bind`]) was reached.
    pub refused_connections: u64,
    /// Request-body bytes held now against [`Limits::max_buffered_body_bytes`].
    pub buffered_body_bytes: usize,
    /// Buffering reservations refused since start (requests answered 503, mirror copies
    /// dropped) because the cap was reached.
    pub refused_body_reservations: u64,
}

/// An embeddable Gateway API data plane.
///
/// Create it with [`Gateway::new`] inside a Tokio runtime, feed it configurations with
/// [`Gateway::apply`], and stop it with [`Gateway::shutdown`]. Cloning is cheap and shares state.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    table: Arc<ArcSwap<Table>>,
    registry: FilterRegistry,
    /// The registered pickers, and how many registrations there were (a table compiled before
    /// a registration is not reused).
    pickers: std::sync::Mutex<(PickerRegistry, u64)>,
    state: StateStore,
    /// rustls client configs of TLS backends, kept across swaps so sessions resume.
    tls: ClientConfigs,
    /// Active health checks by backend name, with the settings they run with.
    health: Mutex<HashMap<Arc<str>, RunningCheck>>,
    mirrors: Arc<Mirrors>,
    /// One watcher per DNS backend (hostname, port) of the active configuration.
    dns: DnsWatchers,
    /// Whether the task recompiling the table on DNS changes runs.
    dns_refresher: AtomicBool,
    /// Serves HTTP/1 and, after ALPN, HTTP/2 over TLS.
    proxy: Arc<HttpProxy<GatewayProxy>>,
    /// Serves connections that opened with the HTTP/2 preface on plain binds.
    proxy_h2c: Arc<HttpProxy<GatewayProxy>>,
    sockets: Mutex<HashMap<SocketAddr, Socket>>,
    shutdown: watch::Sender<bool>,
    connections: Arc<Connections>,
    /// The request-body buffering budget shared by every request and mirror.
    body_budget: Arc<BodyBudget>,
    /// Metrics and the access log.
    observe: Arc<Observe>,
}

/// An active health check and what it was started with.
struct RunningCheck {
    cfg: HealthCheck,
    addrs: Vec<SocketAddr>,
    /// The pool key of the backend's TLS settings (0: plain TCP).
    tls: u64,
    /// Stops the checks when dropped.
    _checker: HealthChecker,
}

struct Socket {
    protocol: Protocol,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Counts open downstream connections so shutdown can wait for them, and refuses those past
/// [`Limits::max_connections`].
#[derive(Default)]
struct Connections {
    open: AtomicUsize,
    idle: Notify,
    /// Connections refused at accept for a connection limit.
    refused: AtomicU64,
    /// Rate-limits the warning about refused connections.
    refused_log: Throttle,
}

struct ConnectionGuard(Arc<Connections>);

impl Connections {
    /// Takes a slot when fewer than `max` connections are open.
    fn try_enter(self: &Arc<Self>, max: usize) -> Option<ConnectionGuard> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionGuard(self.clone()))
    }

    /// Counts a connection refused at accept on `addr` and logs it (at most once a second).
    fn refuse(&self, addr: SocketAddr, which: &str, max: usize) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.refused_log.allow() {
            tracing::warn!(
                address = %addr,
                limit = which,
                max,
                refused_total = total,
                suppressed,
                "connection limit reached: closing new connections"
            );
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Gateway {
    /// A gateway serving nothing yet. `registry` resolves `ExtensionRef` filters.
    pub fn new(registry: FilterRegistry) -> Self {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let body_budget = BodyBudget::new(Limits::default().max_buffered_body_bytes);
        let mirrors = Arc::new(Mirrors::with_budget(
            MAX_MIRRORS_IN_FLIGHT,
            body_budget.clone(),
        ));
        let mirror_counts = mirrors.clone();
        let sessions = Arc::new(SessionCodec::new());
        let observe = Arc::new(Observe::new());
        let connections: Arc<Connections> = Arc::default();
        {
            let (connections, mirrors, budget) =
                (connections.clone(), mirrors.clone(), body_budget.clone());
            observe
                .metrics
                .set_runtime_source(Box::new(move || RuntimeStats {
                    open_connections: connections.open.load(Ordering::Acquire),
                    refused_connections: connections.refused.load(Ordering::Relaxed),
                    buffered_body_bytes: budget.used(),
                    refused_body_reservations: budget.refused(),
                    mirrors_in_flight: mirrors.in_flight(),
                    mirrors_completed: mirrors.completed(),
                    mirrors_dropped: mirrors.dropped(),
                    mirrors_failed: mirrors.failed(),
                }));
        }
        let new_proxy = |h2c: bool| {
            let mut proxy = HttpProxy::new(
                GatewayProxy {
                    table: table.clone(),
                    mirrors: mirrors.clone(),
                    sessions: sessions.clone(),
                    body_budget: body_budget.clone(),
                    observe: observe.clone(),
                },
                Arc::new(ServerConf::default()),
            );
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            // Pingora reads these options from the proxy built here, so the HTTP/2 idle timeout
            // is the default keep-alive idle timeout and does not follow `Limits`.
            options.h2_idle_timeout = Some(Limits::DEFAULT_KEEPALIVE_IDLE_TIMEOUT);
            proxy.server_options = Some(options);
            proxy.handle_init_modules();
            Arc::new(proxy)
        };
        let proxy = new_proxy(false);
        let proxy_h2c = new_proxy(true);
        let (shutdown, _) = watch::channel(false);
        Gateway {
            inner: Arc::new(Inner {
                table,
                registry,
                pickers: std::sync::Mutex::new((PickerRegistry::default(), 0)),
                state: StateStore::default(),
                tls: ClientConfigs::default(),
                health: Mutex::new(HashMap::new()),
                mirrors: mirror_counts,
                dns: DnsWatchers::default(),
                dns_refresher: AtomicBool::new(false),
                proxy,
                proxy_h2c,
                sockets: Mutex::new(HashMap::new()),
                shutdown,
                connections,
                body_budget,
                observe,
            }),
        }
    }

    /// Registers an endpoint picker under `name`, for backends whose
    /// [`crate::config::LoadBalancer`] is `Custom(name)`. Takes effect at the next
    /// [`Gateway::apply`]; until a picker is registered, such backends answer 500.
    pub fn register_picker(&self, name: impl Into<String>, picker: Arc<dyn EndpointPicker>) {
        let mut pickers = self.inner.pickers.lock().unwrap_or_else(|e| e.into_inner());
        pickers.0.register(name, picker);
        pickers.1 += 1;
    }

    /// Counts of mirrored requests: in flight now, dropped (over the in-flight bound, or a mirror
    /// that could not keep up with the body) and failed (connect, protocol or timeout errors).
    pub fn mirror_stats(&self) -> MirrorStats {
        let m = &self.inner.mirrors;
        MirrorStats {
            in_flight: m.in_flight(),
            dropped: m.dropped(),
            failed: m.failed(),
        }
    }

    /// Overload counters: open and refused connections, request-body bytes buffered now and
    /// buffering reservations refused (see [`Limits`]).
    pub fn overload_stats(&self) -> OverloadStats {
        let c = &self.inner.connections;
        OverloadStats {
            open_connections: c.open.load(Ordering::Acquire),
            refused_connections: c.refused.load(Ordering::Relaxed),
            buffered_body_bytes: self.inner.body_budget.used(),
            refused_body_reservations: self.inner.body_budget.refused(),
        }
    }

    /// The gateway's Prometheus metrics (always collected; see `docs/observability.md`). Serve
    /// [`Metrics::encode`] on an admin endpoint, or add metrics of your own to the same registry
    /// with [`Metrics::with_registry`].
    pub fn metrics(&self) -> Metrics {
        self.inner.observe.metrics.clone()
    }

    /// Writes a JSON access log line per request as `log` says, from requests that end after
    /// this call; `None` stops it (the default: no access log). A previous log writes what it
    /// has queued and closes. Fails (changing nothing) when the log file cannot be opened.
    pub fn set_access_log(&self, log: Option<AccessLog>) -> Result<()> {
        self.inner.observe.set_access_log(log)
    }

    /// Records an OpenTelemetry span per request and exports it over OTLP as `tracing` says,
    /// for requests that start after this call; `None` stops it (the default: no spans, and
    /// `traceparent` passes to backends untouched). While on, every request to a backend
    /// carries a `traceparent` whose parent is the gateway's span. A previous tracer exports
    /// what it has queued and ends. Fails (changing nothing) when the endpoint is not an
    /// `http://` URL or the sample ratio is outside 0..=1. Only with the cargo feature `otel`;
    /// see `docs/observability.md`.
    #[cfg(feature = "otel")]
    pub fn set_tracing(&self, tracing: Option<crate::observe::Tracing>) -> Result<()> {
        self.inner.observe.set_tracing(tracing)
    }

    /// Uses these name servers (UDP and TCP, in order) for DNS backends instead of the system's
    /// `/etc/resolv.conf`; the hosts file and search domains are then not used. Names already
    /// watched are resolved again at once through them (keeping their addresses until they
    /// answer). Tests and embedders with their own DNS use this; call it before
    /// [`Gateway::apply`] to have the first resolution go there too.
    pub fn set_dns_servers(&self, servers: Vec<SocketAddr>) {
        self.inner.dns.set_servers(Some(servers));
    }

    /// What the gateway knows about each DNS backend (XBackend) of the active configuration:
    /// the addresses requests go to, the last resolution error and when the name last resolved.
    /// Sorted by hostname and port.
    pub fn dns_status(&self) -> Vec<DnsStatus> {
        self.inner.dns.status()
    }

    /// A counter bumped whenever [`Gateway::dns_status`] changes in substance: a name's addresses
    /// change, a resolution starts or stops failing, or a name stops being watched. Wait on it
    /// (`changed().await`) to republish status.
    pub fn dns_updates(&self) -> watch::Receiver<u64> {
        self.inner.dns.signals.updates.subscribe()
    }

    /// The active routing table (for `explain`).
    pub(crate) fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.inner.table.load()
    }

    /// The active configuration.
    pub fn config(&self) -> Config {
        self.inner.table.load().config.clone()
    }

    /// The addresses with a socket bound now.
    pub async fn bound(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.inner.sockets.lock().await.keys().copied().collect();
        v.sort();
        v
    }

    /// Makes `config` the active configuration.
    ///
    /// An identical configuration changes nothing. An invalid one (see [`ErrorKind::InvalidConfig`])
    /// is rejected and the active one keeps serving. Sockets are bound before the swap, so new
    /// listeners route from their first connection; sockets whose bind fails are reported in
    /// [`ApplyReport::failed`] and the rest of the configuration still applies.
    pub async fn apply(&self, config: Config) -> Result<ApplyReport> {
        let started = std::time::Instant::now();
        let result = self.apply_inner(config).await;
        let metrics = &self.inner.observe.metrics;
        match &result {
            Ok(report) if report.changed => {
                metrics.config_applied(
                    ApplyResult::Changed,
                    started.elapsed(),
                    report.rejected.len(),
                );
            }
            Ok(_) => metrics.config_applied(ApplyResult::Unchanged, started.elapsed(), 0),
            Err(_) => metrics.config_applied(ApplyResult::Rejected, started.elapsed(), 0),
        }
        result
    }

    async fn apply_inner(&self, config: Config) -> Result<ApplyReport> {
        let mut sockets = self.inner.sockets.lock().await;
        let started = std::time::Instant::now();
        // Cheap for routes shared with the active configuration (`Arc`s compare by pointer first).
        let unchanged = self.inner.table.load().config == config;
        let compared = started.elapsed();
        let mut report = ApplyReport::default();
        let wanted: HashMap<SocketAddr, Protocol> = config
            .binds
            .iter()
            .map(|b| (b.address, b.protocol))
            .collect();
        let missing = wanted
            .iter()
            .any(|(a, p)| sockets.get(a).is_none_or(|s| s.protocol != *p));
        if unchanged && !missing {
            return Ok(report);
        }
        let dns_wanted = dns::targets(&config);
        self.resolve_new_names(&dns_wanted).await;
        let active = self.inner.table.load_full();
        let compile_started = std::time::Instant::now();
        let table = match self.compile(config, &dns_wanted, Some(&active)) {
            Ok(table) => table,
            Err(e) => {
                // Keep watching only what the active table uses.
                let active = dns::targets(&self.inner.table.load().config);
                self.inner.dns.retain(&active);
                return Err(e);
            }
        };
        self.inner.dns.retain(&dns_wanted);
        for ((hostname, port), addrs) in &table.dns {
            if addrs.is_empty() {
                tracing::warn!(%hostname, port, "DNS backend has no address yet: its requests get 503");
            }
        }
        let compiled = compile_started.elapsed();
        report.rejected = table.rejected.clone();
        self.restart_health_checks(&table).await;

        // Sockets to close: gone, or their protocol changed.
        let stale: Vec<SocketAddr> = sockets
            .iter()
            .filter(|(a, s)| wanted.get(a) != Some(&s.protocol))
            .map(|(a, _)| *a)
            .collect();
        for addr in &stale {
            if let Some(s) = sockets.remove(addr) {
                let _ = s.stop.send(true);
                let _ = s.task.await;
                if !wanted.contains_key(addr) {
                    report.closed.push(*addr);
                }
            }
        }

        // Bind the new ones before the swap; start accepting after it.
        let mut fresh = Vec::new();
        for (addr, protocol) in &wanted {
            if sockets.contains_key(addr) {
                continue;
            }
            let acceptor = match protocol {
                Protocol::Https => match tls::acceptor(self.inner.table.clone(), *addr) {
                    Ok(acceptor) => Some(Arc::new(acceptor)),
                    Err(e) => {
                        tracing::warn!(address = %addr, error = %e, "cannot set up TLS");
                        report.failed.push((*addr, e.to_string()));
                        continue;
                    }
                },
                Protocol::Http => None,
            };
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => fresh.push((*addr, *protocol, l, acceptor)),
                Err(e) => {
                    tracing::warn!(address = %addr, error = %e, "cannot bind listener");
                    report.failed.push((*addr, e.to_string()));
                }
            }
        }
        self.inner
            .body_budget
            .set_cap(table.config.limits.max_buffered_body_bytes);
        let swap_started = std::time::Instant::now();
        self.inner.table.store(Arc::new(table));
        // The old table's parts not shared with the new one are freed here, unless a request
        // still holds it.
        drop(active);
        tracing::debug!(
            target: "gateway_core::apply",
            compare_us = compared.as_micros() as u64,
            compile_us = compiled.as_micros() as u64,
            swap_us = swap_started.elapsed().as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "configuration compiled and swapped"
        );
        report.changed = !unchanged;
        for (addr, protocol, listener, acceptor) in fresh {
            sockets.insert(
                addr,
                self.spawn_accept_loop(addr, protocol, listener, acceptor),
            );
            report.bound.push(addr);
            tracing::info!(address = %addr, ?protocol, "listening");
        }
        report.bound.sort();
        report.closed.sort();
        Ok(report)
    }

    /// Compiles `config` exactly as [`Gateway::apply`] would (same filter and picker registries,
    /// same validation), without binding sockets, resolving DNS names or making it active.
    ///
    /// Returns what [`ApplyReport::rejected`] would list, or the error `apply` would refuse the
    /// configuration with. DNS backends get the addresses this gateway already knows for their
    /// names (none for a name it has not resolved yet). Runs on the calling thread; the active
    /// configuration keeps serving. Useful to check a configuration before applying it, and to
    /// measure compile time (the `gateway-benches` crate does).
    pub fn check(&self, config: Config) -> Result<Vec<String>> {
        let keys = dns::targets(&config);
        let active = self.inner.table.load_full();
        self.compile(config, &keys, Some(&active))
            .map(|table| table.rejected)
    }

    /// Compiles `config` with the addresses the DNS watchers of `dns_keys` know now, reusing
    /// what it shares with `previous` (see [`Table::compile`]).
    fn compile(
        &self,
        config: Config,
        dns_keys: &BTreeSet<DnsKey>,
        previous: Option<&Table>,
    ) -> Result<Table> {
        let (pickers, pickers_generation) = self
            .inner
            .pickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dns = self.inner.dns.addresses(dns_keys);
        Table::compile(
            config,
            &CompileCtx {
                filters: &self.inner.registry,
                pickers: &pickers,
                state: &self.inner.state,
                dns: &dns,
                tls: &self.inner.tls,
                metrics: &self.inner.observe.metrics,
                pickers_generation,
            },
            previous,
        )
    }

    /// Starts a watcher for each DNS name in `wanted` not watched yet, and waits (at most
    /// [`FIRST_RESOLUTION_WAIT`] in all) for their first resolution.
    async fn resolve_new_names(&self, wanted: &BTreeSet<DnsKey>) {
        if wanted.is_empty() {
            return;
        }
        if !self.inner.dns_refresher.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh_on_dns_changes(Arc::downgrade(&self.inner)));
        }
        let fresh = self.inner.dns.ensure(wanted);
        let deadline = tokio::time::Instant::now() + FIRST_RESOLUTION_WAIT;
        for mut first in fresh {
            let done = tokio::time::timeout_at(deadline, first.wait_for(|done| *done));
            if done.await.is_err() {
                tracing::warn!(
                    "DNS backends not resolved within {FIRST_RESOLUTION_WAIT:?}; applying without them"
                );
                break;
            }
        }
    }

    /// Recompiles the active configuration when a DNS backend's addresses changed since the
    /// table was compiled, and swaps the new table in. Sockets are untouched.
    async fn refresh_dns(&self) {
        let _sockets = self.inner.sockets.lock().await;
        let active = self.inner.table.load_full();
        let keys = dns::targets(&active.config);
        if self.inner.dns.addresses(&keys) == active.dns {
            return;
        }
        match self.compile(active.config.clone(), &keys, Some(&active)) {
            Ok(table) => {
                self.restart_health_checks(&table).await;
                for ((hostname, port), addrs) in &table.dns {
                    if active.dns.get(&(hostname.clone(), *port)) != Some(addrs) {
                        tracing::info!(%hostname, port, addresses = ?addrs, "DNS backend changed; table recompiled");
                    }
                }
                self.inner.table.store(Arc::new(table));
            }
            Err(e) => {
                tracing::error!(error = %e, "recompiling after a DNS change failed; the table keeps its addresses");
            }
        }
    }

    /// Starts, keeps or stops the active health checks so they match `table`'s backends. A
    /// check whose backend, endpoints and settings are unchanged keeps running.
    async fn restart_health_checks(&self, table: &Table) {
        let wanted = table.health_checked();
        let mut running = self.inner.health.lock().await;
        running.retain(|name, check| {
            wanted.get(name).is_some_and(|t| {
                t.policy.health_check.as_ref() == Some(&check.cfg)
                    && t.tls.as_ref().map_or(0, |t| t.group_key()) == check.tls
                    && t.endpoints
                        .iter()
                        .map(|e| e.address())
                        .eq(check.addrs.iter().copied())
            })
        });
        for (name, target) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let Some(cfg) = target.policy.health_check.clone() else {
                continue;
            };
            let targets: Vec<_> = target
                .endpoints
                .iter()
                .map(|e| (e.address(), e.health.clone()))
                .collect();
            let addrs = targets.iter().map(|(a, _)| *a).collect();
            let checker = HealthChecker::start_with(
                name.to_string(),
                targets,
                target.protocol,
                target.tls.clone(),
                cfg.clone(),
            );
            running.insert(
                name,
                RunningCheck {
                    cfg,
                    addrs,
                    tls: target.tls.as_ref().map_or(0, |t| t.group_key()),
                    _checker: checker,
                },
            );
        }
    }

    fn spawn_accept_loop(
        &self,
        addr: SocketAddr,
        protocol: Protocol,
        listener: tokio::net::TcpListener,
        acceptor: Option<Arc<Acceptor>>,
    ) -> Socket {
        let (stop, mut stopped) = watch::channel(false);
        let proxy = self.inner.proxy.clone();
        let proxy_h2c = self.inner.proxy_h2c.clone();
        let connections = self.inner.connections.clone();
        let table = self.inner.table.clone();
        let shutdown = self.inner.shutdown.subscribe();
        let listener = L4Listener::from(listener);
        // Connections open on this socket, against `Limits::max_connections_per_bind`.
        let on_bind = Arc::new(Gauge::default());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(stream) => {
                            let limits = table.load().config.limits;
                            let Some(bind_slot) = Slot::try_take(&on_bind, limits.max_connections_per_bind) else {
                                connections.refuse(addr, "max_connections_per_bind", limits.max_connections_per_bind);
                                drop(stream);
                                continue;
                            };
                            let Some(guard) = connections.try_enter(limits.max_connections) else {
                                connections.refuse(addr, "max_connections", limits.max_connections);
                                drop(stream);
                                continue;
                            };
                            let proxy = proxy.clone();
                            let proxy_h2c = proxy_h2c.clone();
                            let acceptor = acceptor.clone();
                            let shutdown = shutdown.clone();
                            tokio::spawn(async move {
                                let _slots = (guard, bind_slot);
                                serve_connection(stream, acceptor, proxy, proxy_h2c, &shutdown, &limits).await;
                            });
                        }
                        Err(e) => {
                            tracing::warn!(address = %addr, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        });
        Socket {
            protocol,
            stop,
            task,
        }
    }

    /// Stops accepting, lets in-flight requests finish, and returns when every connection has
    /// closed or `grace` has passed. Idle keep-alive connections are closed at once; busy ones
    /// are closed after their current request. Then the access log (if any) is closed: its
    /// queued lines are written and flushed (waiting at most 5 s for a slow sink).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.dns.clear();
        {
            let mut sockets = self.inner.sockets.lock().await;
            for (_, s) in sockets.drain() {
                let _ = s.stop.send(true);
                let _ = s.task.await;
            }
        }
        let _ = self.inner.shutdown.send(true);
        self.inner.proxy.cleanup().await;
        self.inner.proxy_h2c.cleanup().await;
        let connections = &self.inner.connections;
        let drained = async {
            loop {
                let idle = connections.idle.notified();
                if connections.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = connections.open.load(Ordering::Acquire),
                "shutdown grace period over; closing remaining connections"
            );
        }
        // The finished requests' access log lines reach the sink before this returns.
        self.inner
            .observe
            .close_access_log(Duration::from_secs(5))
            .await;
    }
}

/// Recompiles the table of the gateway behind `inner` whenever a DNS watcher's addresses change;
/// ends when the gateway is dropped.
async fn refresh_on_dns_changes(inner: Weak<Inner>) {
    let signals = match inner.upgrade() {
        Some(inner) => inner.dns.signals.clone(),
        None => return,
    };
    loop {
        signals.changed.notified().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        Gateway { inner }.refresh_dns().await;
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C). Binaries call this, then [`Gateway::shutdown`].
pub async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::because(ErrorKind::Io, "installing the SIGTERM handler", e))?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => {
            r.map_err(|e| Error::because(ErrorKind::Io, "installing the SIGINT handler", e))?;
        }
    }
    Ok(())
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one accepted connection: the TLS handshake (HTTPS binds) or the h2c preface check
/// (plain binds), then HTTP/2 through Pingora or HTTP/1 through [`serve_h1`], with the
/// request-head deadline and keep-alive idle timeout of `limits`.
async fn serve_connection(
    mut stream: L4Stream,
    acceptor: Option<Arc<Acceptor>>,
    proxy: Arc<HttpProxy<GatewayProxy>>,
    proxy_h2c: Arc<HttpProxy<GatewayProxy>>,
    shutdown: &watch::Receiver<bool>,
    limits: &Limits,
) {
    if let Err(e) = stream.set_nodelay() {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let (stream, started, h2c): (Stream, _, _) = match acceptor {
        Some(acceptor) => {
            // The handshake is bounded like a request head: a client trickling its
            // ClientHello must not hold the connection.
            // Boxed: the handshake's state is large and would otherwise stay in every
            // connection's future for its whole life (see `serve_h1`).
            let handshake = tokio::time::timeout(
                limits.header_read_timeout,
                Box::pin(acceptor.tls_handshake(stream)),
            );
            match handshake.await {
                Ok(Ok(tls)) => (Box::new(tls), None, false),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake not complete within the header read timeout");
                    return;
                }
            }
        }
        None => {
            let first = tokio::time::timeout(
                limits.keepalive_idle_timeout,
                starts_with_h2_preface(&mut stream, limits.header_read_timeout),
            );
            match first.await {
                Ok(Ok((h2c, started))) => (Box::new(stream), started, h2c),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("no request within the keep-alive idle timeout");
                    return;
                }
            }
        }
    };
    let h2 = h2c || matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
    let stream = Box::new(GuardedStream::new(
        stream,
        limits.header_read_timeout,
        started,
    ));
    // Pingora's `process_new` boxes its own state (an `async_trait` method), so HTTP/2 does not
    // size every connection's future either.
    if h2c {
        proxy_h2c.process_new(stream, shutdown).await;
    } else if h2 {
        proxy.process_new(stream, shutdown).await;
    } else {
        serve_h1(&proxy, stream, shutdown, limits.keepalive_idle_timeout).await;
    }
}

/// Reads from a new plain connection until its bytes either leave the HTTP/2 preface (HTTP/1)
/// or complete it (h2c with prior knowledge), then puts them back for the proxy to read.
/// A connection closed before that counts as HTTP/1. Returns whether it is h2c and when the
/// first byte came (the request head's deadline counts from it); once a byte came, the rest of
/// the check must finish within `head_limit`.
async fn starts_with_h2_preface(
    stream: &mut L4Stream,
    head_limit: Duration,
) -> std::io::Result<(bool, Option<tokio::time::Instant>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let mut started = None;
    while filled < buf.len() {
        let read = stream.read(&mut buf[filled..]);
        let n = match started {
            None => read.await?,
            Some(at) => match tokio::time::timeout_at(at + head_limit, read).await {
                Ok(n) => n?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request head not complete within the header read timeout",
                    ));
                }
            },
        };
        if n == 0 {
            break;
        }
        started.get_or_insert_with(tokio::time::Instant::now);
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            break;
        }
    }
    stream.rewind(&buf[..filled]);
    Ok((&buf[..filled] == H2_PREFACE, started))
}
