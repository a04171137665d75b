//! The compiled, immutable form of a [`Config`]: what the request path reads.
//!
//! A [`Table`] is built once per applied configuration, off the request path, and published
//! through an `ArcSwap`. Everything a request needs is precomputed here: routers, validated header
//! names and values, filter instances, cumulative backend weights, TLS certificates by SNI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, HeaderValue};
use rustls::sign::CertifiedKey;

use crate::config::{
    BackendProtocol, BackendTarget, Bind, Config, Filter, HeaderModifier, Protocol,
    RequestRedirect, Timeouts, UrlRewrite,
};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::{FilterRegistry, HttpFilter};
use crate::routing::BindRouter;
use crate::tls::CertIndex;

/// The active routing state of a gateway.
#[derive(Default)]
pub(crate) struct Table {
    /// The configuration this table was compiled from.
    pub(crate) config: Config,
    /// Binds by local address.
    pub(crate) binds: HashMap<SocketAddr, Arc<CompiledBind>>,
}

impl Table {
    /// Compiles `config`, building custom filters through `registry`.
    pub(crate) fn compile(config: Config, registry: &FilterRegistry) -> Result<Table> {
        let mut binds = HashMap::with_capacity(config.binds.len());
        for bind in &config.binds {
            let compiled = CompiledBind::compile(bind, registry)
                .map_err(|e| e.more_context(format_args!("bind {}", bind.address)))?;
            if binds.insert(bind.address, Arc::new(compiled)).is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("two binds share the address {}", bind.address),
                ));
            }
        }
        Ok(Table { config, binds })
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
}

/// One bind, compiled.
pub(crate) struct CompiledBind {
    pub(crate) protocol: Protocol,
    pub(crate) router: BindRouter,
    pub(crate) listeners: Vec<CompiledListener>,
    pub(crate) certs: CertIndex,
}

impl CompiledBind {
    fn compile(bind: &Bind, registry: &FilterRegistry) -> Result<Self> {
        let router = BindRouter::build(&bind.listeners)?;
        let listeners = bind
            .listeners
            .iter()
            .map(|l| CompiledListener {
                port: l.port,
                routes: l
                    .routes
                    .iter()
                    .map(|route| {
                        route
                            .rules
                            .iter()
                            .enumerate()
                            .map(|(i, rule)| {
                                let name = match &rule.name {
                                    Some(n) => format!("{}/{}/{n}", route.namespace, route.name),
                                    None => format!("{}/{}/{i}", route.namespace, route.name),
                                };
                                Arc::new(CompiledRule {
                                    filters: CompiledFilters::compile(&rule.filters, registry),
                                    backends: rule
                                        .backends
                                        .iter()
                                        .map(|b| CompiledBackend {
                                            name: b.name.clone(),
                                            weight: b.weight,
                                            target: CompiledTarget::from(&b.target),
                                            filters: CompiledFilters::compile(&b.filters, registry),
                                        })
                                        .collect(),
                                    total_weight: rule
                                        .backends
                                        .iter()
                                        .map(|b| u64::from(b.weight))
                                        .sum(),
                                    timeouts: rule.timeouts,
                                    name,
                                })
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        let certs = if bind.protocol == Protocol::Https {
            CertIndex::build(&bind.listeners)?
        } else {
            CertIndex::default()
        };
        Ok(CompiledBind {
            protocol: bind.protocol,
            router,
            listeners,
            certs,
        })
    }
}

/// One listener, compiled: its routes' rules by `[route][rule]`, matching [`crate::routing::RouteHit`].
pub(crate) struct CompiledListener {
    pub(crate) port: u16,
    pub(crate) routes: Vec<Vec<Arc<CompiledRule>>>,
}

/// A rule ready to serve.
pub(crate) struct CompiledRule {
    /// `namespace/route/rule` for logs.
    pub(crate) name: String,
    pub(crate) filters: CompiledFilters,
    pub(crate) backends: Vec<CompiledBackend>,
    pub(crate) total_weight: u64,
    pub(crate) timeouts: Timeouts,
}

impl CompiledRule {
    /// Picks a backend by weight; `None` when there is none or all weights are 0.
    pub(crate) fn pick_backend(&self) -> Option<usize> {
        match self.backends.len() {
            0 => None,
            1 => (self.total_weight > 0).then_some(0),
            _ if self.total_weight == 0 => None,
            _ => {
                let mut point = rand::random_range(0..self.total_weight);
                self.backends.iter().position(|b| {
                    let w = u64::from(b.weight);
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
}

/// A weighted backend, compiled.
pub(crate) struct CompiledBackend {
    pub(crate) name: String,
    #[allow(dead_code)]
    pub(crate) weight: u32,
    pub(crate) target: CompiledTarget,
    pub(crate) filters: CompiledFilters,
}

/// Where a backend's requests go.
pub(crate) enum CompiledTarget {
    Endpoints {
        endpoints: Vec<SocketAddr>,
        protocol: BackendProtocol,
        next: AtomicUsize,
    },
    Unresolved(String),
}

impl CompiledTarget {
    /// The next endpoint, round robin.
    pub(crate) fn next_endpoint(&self) -> Option<(SocketAddr, BackendProtocol)> {
        match self {
            CompiledTarget::Endpoints {
                endpoints,
                protocol,
                next,
            } if !endpoints.is_empty() => {
                let i = next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
                Some((endpoints[i], *protocol))
            }
            _ => None,
        }
    }
}

impl From<&BackendTarget> for CompiledTarget {
    fn from(target: &BackendTarget) -> Self {
        match target {
            BackendTarget::Endpoints(b) => CompiledTarget::Endpoints {
                endpoints: b.endpoints.clone(),
                protocol: b.protocol,
                next: AtomicUsize::new(0),
            },
            BackendTarget::Unresolved { reason } => CompiledTarget::Unresolved(reason.clone()),
            BackendTarget::Dns(d) => {
                CompiledTarget::Unresolved(format!("DNS backend {} is not served yet", d.hostname))
            }
        }
    }
}

/// Header edits with names and values validated up front.
#[derive(Default)]
pub(crate) struct CompiledHeaderModifier {
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

impl CompiledHeaderModifier {
    fn compile(m: &HeaderModifier) -> std::result::Result<Self, String> {
        fn pair(
            (name, value): &(String, String),
        ) -> std::result::Result<(HeaderName, HeaderValue), String> {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            Ok((n, v))
        }
        Ok(CompiledHeaderModifier {
            set: m
                .set
                .iter()
                .map(pair)
                .collect::<std::result::Result<_, _>>()?,
            add: m
                .add
                .iter()
                .map(pair)
                .collect::<std::result::Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("invalid header name {n:?}"))
                })
                .collect::<std::result::Result<_, _>>()?,
        })
    }
}

/// The filters of a rule or backend, sorted by the phase they run in.
#[derive(Default)]
pub(crate) struct CompiledFilters {
    /// Set when a filter cannot work: requests reaching it get 500.
    pub(crate) invalid: Option<String>,
    pub(crate) redirect: Option<RequestRedirect>,
    pub(crate) rewrite: Option<UrlRewrite>,
    pub(crate) request_headers: Vec<CompiledHeaderModifier>,
    pub(crate) response_headers: Vec<CompiledHeaderModifier>,
    pub(crate) extensions: Vec<Arc<dyn HttpFilter>>,
}

impl CompiledFilters {
    fn compile(filters: &[Filter], registry: &FilterRegistry) -> Self {
        let mut out = CompiledFilters::default();
        for filter in filters {
            let problem = match filter {
                Filter::RequestHeaderModifier(m) => CompiledHeaderModifier::compile(m)
                    .map(|m| out.request_headers.push(m))
                    .err(),
                Filter::ResponseHeaderModifier(m) => CompiledHeaderModifier::compile(m)
                    .map(|m| out.response_headers.push(m))
                    .err(),
                Filter::RequestRedirect(r) => {
                    out.redirect = Some(r.clone());
                    None
                }
                Filter::UrlRewrite(r) => {
                    out.rewrite = Some(r.clone());
                    None
                }
                Filter::ExtensionRef(reference) => match registry.build(reference) {
                    Some(Ok(f)) => {
                        out.extensions.push(f);
                        None
                    }
                    Some(Err(e)) => Some(format!(
                        "filter {}/{} {:?}: {e}",
                        reference.group, reference.kind, reference.name
                    )),
                    None => Some(format!(
                        "no filter registered for group {:?} kind {:?}",
                        reference.group, reference.kind
                    )),
                },
                Filter::Invalid { reason } => Some(reason.clone()),
                Filter::RequestMirror(_) => Some("RequestMirror is not served yet".into()),
                Filter::Cors(_) => Some("CORS is not served yet".into()),
            };
            if let Some(problem) = problem {
                out.invalid.get_or_insert(problem);
            }
        }
        out
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
