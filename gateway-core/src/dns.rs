//! DNS backends ([`crate::config::BackendTarget::Dns`]): one watcher per (hostname, port) keeps
//! the name resolved, and the gateway recompiles its table when an answer changes.
//!
//! A watcher resolves A and AAAA records, then again when the answer's TTL runs out (clamped to
//! [`MIN_TTL`]..=[`MAX_TTL`]). A failed resolution keeps the last good addresses and is retried
//! with a doubling backoff ([`MIN_RETRY`] to [`MAX_RETRY`]). When a watcher's address set changes
//! it wakes the gateway, which recompiles the table from the last applied configuration and
//! swaps it in; backend state survives because it is keyed by backend name and endpoint address.
//!
//! Nothing here is on the request path: the table holds the addresses as plain endpoints.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{BackendTarget, Config, DnsBackend, Filter, Route};

/// The shortest time an answer is kept before it is resolved again.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest time an answer is kept before it is resolved again.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// The first wait after a failed resolution; it doubles on every failure in a row.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest wait after a failed resolution.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long one resolution may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway knows about one DNS backend name, from [`crate::Gateway::dns_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsStatus {
    /// The name, lower-cased, without a trailing dot.
    pub hostname: String,
    /// The port the backend is reached on.
    pub port: u16,
    /// The addresses requests go to now, sorted: the last successful answer (A and AAAA). Empty
    /// until the name first resolves; such a backend answers 503.
    pub addresses: Vec<IpAddr>,
    /// Why the latest resolution failed, if it did. Cleared by the next success; the addresses of
    /// the last success are kept meanwhile.
    pub last_error: Option<String>,
    /// When the name last resolved successfully.
    pub resolved_at: Option<SystemTime>,
}

/// A watcher's key: the name (lower-cased, no trailing dot) and the port.
pub(crate) type DnsKey = (String, u16);

/// The addresses each DNS backend resolves to, as a table was compiled with them.
pub(crate) type DnsAddresses = HashMap<DnsKey, Vec<IpAddr>>;

/// The key of a DNS backend.
pub(crate) fn key(d: &DnsBackend) -> DnsKey {
    (normalize(&d.hostname), d.port)
}

fn normalize(hostname: &str) -> String {
    hostname.trim_end_matches('.').to_ascii_lowercase()
}

/// Every DNS backend `config` refers to (rule backends and mirror targets).
pub(crate) fn targets(config: &Config) -> BTreeSet<DnsKey> {
    let mut out = BTreeSet::new();
    for bind in &config.binds {
        for listener in &bind.listeners {
            for route in &listener.routes {
                route_targets(route, &mut out);
            }
        }
    }
    out
}

/// Adds the DNS backends `route` names (backends and mirrors) to `out`.
pub(crate) fn route_targets(route: &Route, out: &mut BTreeSet<DnsKey>) {
    let filters = |filters: &[Filter], out: &mut BTreeSet<DnsKey>| {
        for f in filters {
            if let Filter::RequestMirror(m) = f
                && let BackendTarget::Dns(d) = &m.backend.target
            {
                out.insert(key(d));
            }
        }
    };
    for rule in &route.rules {
        filters(&rule.filters, out);
        for b in &rule.backends {
            if let BackendTarget::Dns(d) = &b.target {
                out.insert(key(d));
            }
            filters(&b.filters, out);
        }
    }
}

/// What a watcher knows; read when tables are compiled and by [`crate::Gateway::dns_status`].
#[derive(Clone, Debug, Default)]
struct Known {
    addresses: Vec<IpAddr>,
    last_error: Option<String>,
    resolved_at: Option<SystemTime>,
}

/// How watchers tell the gateway about changes.
pub(crate) struct Signals {
    /// Woken when a watcher's address set changes: the gateway recompiles its table.
    pub(crate) changed: Notify,
    /// Bumped when what any watcher reports changes (addresses, or an error appearing or
    /// clearing); see [`crate::Gateway::dns_updates`].
    pub(crate) updates: watch::Sender<u64>,
}

impl Signals {
    fn bump(&self) {
        self.updates.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Watcher {
    known: Arc<Mutex<Known>>,
    /// True once the first resolution has finished, successfully or not.
    first: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the resolver's name servers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Servers {
    /// `/etc/resolv.conf` (and `/etc/hosts`).
    System,
    /// These servers, over UDP and TCP; no hosts file, no search domains.
    Fixed(Vec<SocketAddr>),
}

struct State {
    servers: Servers,
    /// Built on first use; an error (e.g. an unreadable `/etc/resolv.conf`) is reported by every
    /// watcher.
    resolver: Option<Result<TokioResolver, String>>,
    running: HashMap<DnsKey, Watcher>,
}

/// The gateway's DNS watchers.
pub(crate) struct DnsWatchers {
    state: Mutex<State>,
    pub(crate) signals: Arc<Signals>,
}

impl Default for DnsWatchers {
    fn default() -> Self {
        DnsWatchers {
            state: Mutex::new(State {
                servers: Servers::System,
                resolver: None,
                running: HashMap::new(),
            }),
            signals: Arc::new(Signals {
                changed: Notify::new(),
                updates: watch::channel(0).0,
            }),
        }
    }
}

impl Drop for DnsWatchers {
    fn drop(&mut self) {
        // Lets the gateway's refresh task see that the gateway is gone.
        self.signals.changed.notify_one();
    }
}

impl DnsWatchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uses `servers` instead of the system configuration (`None`: back to `/etc/resolv.conf`).
    /// Running watchers restart at once with the new resolver, keeping their addresses until it
    /// answers.
    pub(crate) fn set_servers(&self, servers: Option<Vec<SocketAddr>>) {
        let servers = servers.map_or(Servers::System, Servers::Fixed);
        let mut state = self.lock();
        if state.servers == servers && state.resolver.is_some() {
            return;
        }
        state.servers = servers;
        state.resolver = None;
        let keys: Vec<DnsKey> = state.running.keys().cloned().collect();
        for key in keys {
            let Some(old) = state.running.remove(&key) else {
                continue;
            };
            let known = old.known.clone();
            let first = old.first.clone();
            drop(old);
            let resolver = resolver(&mut state);
            let (tx, _) = watch::channel(*first.borrow());
            let rx = tx.subscribe();
            let task = tokio::spawn(run(
                key.0.clone(),
                resolver,
                known.clone(),
                tx,
                self.signals.clone(),
            ));
            state.running.insert(
                key,
                Watcher {
                    known,
                    first: rx,
                    task,
                },
            );
        }
    }

    /// Starts a watcher for every key in `wanted` that has none. Returns what tells when the new
    /// ones have finished their first resolution.
    pub(crate) fn ensure(&self, wanted: &BTreeSet<DnsKey>) -> Vec<watch::Receiver<bool>> {
        let mut state = self.lock();
        let mut fresh = Vec::new();
        for key in wanted {
            if state.running.contains_key(key) {
                continue;
            }
            let resolver = resolver(&mut state);
            let known = Arc::new(Mutex::new(Known::default()));
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(run(
                key.0.clone(),
                resolver,
                known.clone(),
                tx,
                self.signals.clone(),
            ));
            fresh.push(rx.clone());
            state.running.insert(
                key.clone(),
                Watcher {
                    known,
                    first: rx,
                    task,
                },
            );
        }
        fresh
    }

    /// Stops the watchers whose key is not in `wanted`.
    pub(crate) fn retain(&self, wanted: &BTreeSet<DnsKey>) {
        let mut state = self.lock();
        let before = state.running.len();
        state.running.retain(|k, _| wanted.contains(k));
        if state.running.len() != before {
            self.signals.bump();
        }
    }

    /// Stops every watcher.
    pub(crate) fn clear(&self) {
        self.lock().running.clear();
    }

    /// The addresses each of `keys` resolves to now (empty when unknown).
    pub(crate) fn addresses(&self, keys: &BTreeSet<DnsKey>) -> DnsAddresses {
        let state = self.lock();
        keys.iter()
            .map(|k| {
                let addrs = state
                    .running
                    .get(k)
                    .map(|w| {
                        w.known
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .addresses
                            .clone()
                    })
                    .unwrap_or_default();
                (k.clone(), addrs)
            })
            .collect()
    }

    /// What every watcher knows, sorted by hostname and port.
    pub(crate) fn status(&self) -> Vec<DnsStatus> {
        let state = self.lock();
        let mut out: Vec<DnsStatus> = state
            .running
            .iter()
            .map(|((hostname, port), w)| {
                let known = w.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
                DnsStatus {
                    hostname: hostname.clone(),
                    port: *port,
                    addresses: known.addresses,
                    last_error: known.last_error,
                    resolved_at: known.resolved_at,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.hostname, a.port).cmp(&(&b.hostname, b.port)));
        out
    }
}

/// The resolver of `state`, built on first use.
fn resolver(state: &mut State) -> Result<TokioResolver, String> {
    if state.resolver.is_none() {
        state.resolver = Some(build_resolver(&state.servers));
    }
    state
        .resolver
        .clone()
        .unwrap_or_else(|| Err("no resolver".into()))
}

fn build_resolver(servers: &Servers) -> Result<TokioResolver, String> {
    let builder = match servers {
        Servers::System => {
            let mut builder = TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
            builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            builder
        }
        Servers::Fixed(addrs) => {
            let name_servers = addrs
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            let mut options = ResolverOpts::default();
            options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            options.use_hosts_file = ResolveHosts::Never;
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), name_servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(options)
        }
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// One resolution: the sorted, distinct addresses and how long they may be kept.
async fn resolve(
    resolver: &TokioResolver,
    hostname: &str,
) -> Result<(Vec<IpAddr>, Duration), String> {
    // The name is absolute: no search domains apply.
    let fqdn = format!("{hostname}.");
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(fqdn.as_str()))
        .await
        .map_err(|_| format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let addresses: BTreeSet<IpAddr> = lookup.iter().collect();
    if addresses.is_empty() {
        return Err("no A or AAAA record".into());
    }
    let ttl = lookup
        .valid_until()
        .saturating_duration_since(Instant::now())
        .clamp(MIN_TTL, MAX_TTL);
    Ok((addresses.into_iter().collect(), ttl))
}

/// A watcher's task: resolve, publish, sleep for the TTL (or the backoff), again.
async fn run(
    hostname: String,
    resolver: Result<TokioResolver, String>,
    known: Arc<Mutex<Known>>,
    first: watch::Sender<bool>,
    signals: Arc<Signals>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = match &resolver {
            Ok(r) => resolve(r, &hostname).await,
            Err(e) => Err(e.clone()),
        };
        let wait = {
            let mut k = known.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok((addresses, ttl)) => {
                    failures = 0;
                    let changed = k.addresses != addresses;
                    let recovered = k.last_error.take().is_some();
                    if changed {
                        tracing::info!(%hostname, ?addresses, "DNS backend resolved");
                        k.addresses = addresses;
                    }
                    k.resolved_at = Some(SystemTime::now());
                    drop(k);
                    if changed {
                        signals.changed.notify_one();
                    }
                    if changed || recovered {
                        signals.bump();
                    }
                    ttl
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = MIN_RETRY
                        .saturating_mul(1 << (failures - 1).min(10))
                        .min(MAX_RETRY);
                    let kept = k.addresses.len();
                    let new_error = k.last_error.as_deref() != Some(error.as_str());
                    if failures == 1 {
                        tracing::warn!(%hostname, %error, kept, retry_in = ?wait, "DNS resolution failed");
                    } else {
                        tracing::debug!(%hostname, %error, kept, retry_in = ?wait, "DNS resolution failed again");
                    }
                    k.last_error = Some(error);
                    drop(k);
                    if new_error {
                        signals.bump();
                    }
                    wait
                }
            }
        };
        first.send_if_modified(|done| !std::mem::replace(done, true));
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        BackendPolicy, BackendProtocol, BackendRef, Bind, Listener, Protocol, RequestMirror, Route,
        Rule,
    };

    fn dns(hostname: &str, port: u16) -> BackendRef {
        BackendRef {
            name: hostname.into(),
            weight: 1,
            target: BackendTarget::Dns(DnsBackend {
                hostname: hostname.into(),
                port,
                protocol: BackendProtocol::Http1,
                policy: BackendPolicy::default(),
                tls: None,
            }),
            filters: Vec::new(),
        }
    }

    #[test]
    fn targets_cover_backends_and_mirrors_with_normalised_names() {
        let mirror = |b: BackendRef| {
            Filter::RequestMirror(Box::new(RequestMirror {
                backend: b,
                fraction: None,
            }))
        };
        let rule = Rule::prefix("/")
            .filter(mirror(dns("Mirror.Example.", 80)))
            .backend(dns("API.example.com.", 8080).filter(mirror(dns("m2.example", 81))))
            .backend(dns("api.example.com", 8080))
            .backend(dns("api.example.com", 9090))
            .backend(BackendRef::endpoints(
                "plain",
                vec!["127.0.0.1:1".parse().unwrap()],
            ));
        let config = Config {
            binds: vec![Bind {
                address: "127.0.0.1:1".parse().unwrap(),
                protocol: Protocol::Http,
                listeners: vec![Listener::new("l", 80).route(Route::new("n", "r").rule(rule))],
            }],
            ..Default::default()
        };
        let keys: Vec<DnsKey> = targets(&config).into_iter().collect();
        assert_eq!(
            keys,
            vec![
                ("api.example.com".to_string(), 8080),
                ("api.example.com".to_string(), 9090),
                ("m2.example".to_string(), 81),
                ("mirror.example".to_string(), 80),
            ]
        );
    }
}
