//! `explain`: where a described request would go, and why.
//!
//! [`Gateway::explain`](crate::Gateway::explain) (the active table) and [`explain_config`] (a
//! configuration compiled on the spot, without binding anything) answer an [`ExplainRequest`]
//! with an [`Explanation`]: the bind and listener chosen (and which kind of hostname match chose
//! it), the path after the listener's normalisation, the route, rule and match that take the
//! request, the filters the rule runs in order, the backends with their weights, and for every
//! other route of the listener either the first condition of each match that failed or, when it
//! matched too, the precedence field it lost on.
//!
//! Nothing is re-implemented here: the bind comes from the table's own lookup, the listener
//! and route hostname from the router's host index, the path from [`crate::path::normalize`]
//! with the listener's settings, the winner from [`crate::routing::BindRouter::lookup_in`], and
//! the per-match verdicts from the compiled matchers the lookup runs (see
//! `routing::trace`). It runs off the request path and may allocate freely.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::backend::PickerRegistry;
use crate::backend::StateStore;
use crate::config::{
    BackendRef, BackendTarget, BodyHeader, Config, Filter, HeaderModifier, PathMatch, PathModifier,
    Protocol, Route, RouteMatch, StringMatch,
};
use crate::dns::DnsAddresses;
use crate::filter::FilterRegistry;
use crate::path::{self, Normalized};
use crate::routing::cond::{Failed, first_query_value};
use crate::routing::host::HostPattern;
use crate::routing::trace::{MatchTrace, RouteTrace};
use crate::routing::{MatchRank, PathRank, RankField, RequestParts};
use crate::table::{CompileCtx, CompiledBind, CompiledTarget, Table};
use crate::upstream_tls::ClientConfigs;

/// A request to explain: where it arrives and what it looks like.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExplainRequest {
    /// The local address the connection arrives on: a bind's address, or any IP on the port of
    /// a bind listening on an unspecified address. Takes precedence over `port`.
    pub bind: Option<SocketAddr>,
    /// The port the connection arrives on: the port of a bind, or, when no bind listens on it,
    /// a listener's (Gateway) port. With neither `bind` nor `port`, a configuration with one
    /// bind uses it.
    pub port: Option<u16>,
    /// The method; empty means `GET`.
    pub method: String,
    /// The `Host` header (or `:authority`), possibly with a port.
    pub host: String,
    /// The request target: a path with an optional `?query`, as sent (before normalisation).
    /// Empty means `/`.
    pub path: String,
    /// Request headers as (name, value), in order; a repeated name gives several values.
    pub headers: Vec<(String, String)>,
}

/// Why an [`ExplainRequest`] could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The method is not a valid HTTP method token.
    #[error("invalid method {0:?}")]
    Method(String),
    /// The path is not a valid request target.
    #[error("invalid request target {0:?}: {1}")]
    Path(String, String),
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value holds characters a header value cannot.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
    /// Several binds could take the connection; name one with `bind` or `port`.
    #[error("several binds could take the request ({0}); give a port or a bind address")]
    AmbiguousBind(String),
    /// The configuration does not compile ([`explain_config`] only).
    #[error("the configuration does not compile: {0}")]
    Config(#[from] crate::Error),
}

/// What a request would meet, step by step. Serialisable (the admin endpoint answers it as JSON);
/// [`fmt::Display`] gives a human-readable form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The request as understood (method defaulted, target split).
    pub request: ExplainedRequest,
    /// The bind that takes the connection; `None` when no bind does.
    pub bind: Option<BindChoice>,
    /// The listener selected by the request host; `None` when none matches.
    pub listener: Option<ListenerChoice>,
    /// The path after the listener's normalisation (what routing sees).
    pub normalized_path: Option<String>,
    /// The route hostname (of the listener's routes) that takes the request: the most specific
    /// served hostname matching the host.
    pub route_hostname: Option<String>,
    /// The route, rule and match that take the request, with the filters and backends.
    pub selected: Option<Selection>,
    /// Every route of the selected listener and how it stands, in configuration order.
    pub routes: Vec<RouteReport>,
    /// What happens to the request in the end.
    pub outcome: Outcome,
    /// Anything else worth knowing (filters that may answer, offline DNS...).
    pub notes: Vec<String>,
}

/// The request as `explain` understood it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExplainedRequest {
    /// The method.
    pub method: String,
    /// The host, as given.
    pub host: String,
    /// The path, before normalisation.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The headers, as given.
    pub headers: Vec<(String, String)>,
}

/// The bind chosen for the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindChoice {
    /// Its address.
    pub address: SocketAddr,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    /// Why this one: which parameter selected it.
    pub reason: String,
}

/// How a hostname pattern matched the request host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostMatchKind {
    /// The hostname equals the host.
    Exact,
    /// A `*.` wildcard covers the host (the longest such suffix wins).
    Wildcard,
    /// No hostname: every host.
    CatchAll,
}

/// The listener chosen by the request host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerChoice {
    /// Its index in the bind.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its hostname, if any.
    pub hostname: Option<String>,
    /// Its (Gateway) port.
    pub port: u16,
    /// How its hostname matched: exact beats the longest wildcard beats catch-all.
    pub matched: HostMatchKind,
    /// Headers the listener derives from the JSON request body before routing
    /// ([`crate::config::Listener::body_headers`]). `explain` reads no body: give their values
    /// in [`ExplainRequest::headers`] as the body would set them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_headers: Vec<BodyHeader>,
}

/// The route, rule and match that take the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Selection {
    /// `namespace/name` of the route.
    pub route: String,
    /// The rule index in the route.
    pub rule: usize,
    /// The rule's name, if it has one.
    pub rule_name: Option<String>,
    /// The match index in the rule.
    pub match_index: usize,
    /// The match, described.
    pub matched: String,
    /// The rule's filters, in the order they run.
    pub filters: Vec<FilterStep>,
    /// The rule's backends with their weights.
    pub backends: Vec<BackendChoice>,
}

/// One filter of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilterStep {
    /// The filter type (`RequestHeaderModifier`, `URLRewrite`, ...).
    pub kind: String,
    /// What it does, in short.
    pub detail: String,
}

/// One backend of the selected rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendChoice {
    /// The backend's name.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its share of requests in percent (its weight over the rule's total; 0 when all are 0).
    pub share_percent: f64,
    /// Where its requests go: endpoint addresses, a DNS name, or why it is unresolved.
    pub target: String,
    /// The backend's own filters, in order (after the rule's).
    pub filters: Vec<FilterStep>,
}

/// How one route of the selected listener stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    /// `namespace/name`.
    pub route: String,
    /// The verdict.
    pub verdict: RouteVerdict,
}

/// Why a route takes the request or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RouteVerdict {
    /// This route's rule takes the request.
    Selected {
        /// Rule index.
        rule: usize,
        /// Match index.
        match_index: usize,
    },
    /// A match of this route holds, but another route's match has precedence.
    LostOnPrecedence {
        /// Rule index of this route's best holding match.
        rule: usize,
        /// Its match index.
        match_index: usize,
        /// The winner: `namespace/name rule R match M`.
        winner: String,
        /// The precedence field that decided, and how.
        reason: String,
    },
    /// No match of the route holds: for each match, the first condition that failed.
    NoMatch {
        /// One per match of every rule.
        failures: Vec<MatchFailure>,
    },
    /// The route is not under the route hostname that takes the request.
    Hostname {
        /// Why.
        reason: String,
    },
    /// The route was left out of the configuration as invalid.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The first condition of one match that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchFailure {
    /// Rule index.
    pub rule: usize,
    /// Match index in the rule.
    pub match_index: usize,
    /// `path`, `method`, `header` or `query_param`.
    pub condition: String,
    /// The condition and what the request had.
    pub detail: String,
}

/// What finally happens to the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The status the gateway itself answers with; `None` when the request is proxied (or the
    /// connection is refused).
    pub status: Option<u16>,
    /// In words.
    pub summary: String,
}

impl crate::Gateway {
    /// Explains where `req` would go under the active configuration, and why. Pure: reads the
    /// active routing table, sends nothing, changes nothing.
    pub fn explain(&self, req: &ExplainRequest) -> Result<Explanation, ExplainError> {
        explain_table(&self.table(), req)
    }
}

/// Explains `req` under `config`, compiled on the spot with `registry` for `ExtensionRef`
/// filters (no socket is bound, no health check or DNS watcher started). DNS backends have no
/// addresses here: they are reported by name.
pub fn explain_config(
    config: Config,
    registry: &FilterRegistry,
    req: &ExplainRequest,
) -> Result<Explanation, ExplainError> {
    let table = Table::compile(
        config,
        &CompileCtx {
            filters: registry,
            pickers: &PickerRegistry::default(),
            state: &StateStore::default(),
            dns: &DnsAddresses::default(),
            tls: &ClientConfigs::default(),
            // A throwaway registry: nothing is served from this table.
            metrics: &crate::observe::metrics::Metrics::new(),
            pickers_generation: 0,
        },
        None,
    )?;
    let mut explanation = explain_table(&table, req)?;
    let uses_dns = explanation
        .selected
        .as_ref()
        .is_some_and(|s| s.backends.iter().any(|b| b.target.starts_with("DNS name")));
    if uses_dns {
        explanation
            .notes
            .push("offline explain does not resolve DNS backends".to_owned());
    }
    Ok(explanation)
}

/// The parsed parts of an [`ExplainRequest`].
struct Parsed {
    method: String,
    host: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
}

fn parse(req: &ExplainRequest) -> Result<Parsed, ExplainError> {
    let method = if req.method.is_empty() {
        "GET".to_owned()
    } else {
        http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ExplainError::Method(req.method.clone()))?
            .as_str()
            .to_owned()
    };
    let target = if req.path.is_empty() { "/" } else { &req.path };
    let uri: http::Uri = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| ExplainError::Path(target.to_owned(), e.to_string()))?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &req.headers {
        let n = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ExplainError::HeaderName(name.clone()))?;
        let v = http::HeaderValue::from_str(value.trim())
            .map_err(|_| ExplainError::HeaderValue(name.clone()))?;
        headers.append(n, v);
    }
    // As the proxy: the Host header, else the target's authority.
    let host = if req.host.is_empty() {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_owned()
    } else {
        req.host.clone()
    };
    Ok(Parsed {
        method,
        host,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
    })
}

/// Picks the bind for `req`: the table's own lookup for an address, else by port.
fn choose_bind<'t>(
    table: &'t Table,
    req: &ExplainRequest,
) -> Result<Option<(SocketAddr, &'t CompiledBind, String)>, ExplainError> {
    let found = |addr: SocketAddr| table.binds.get_key_value(&addr).map(|(a, b)| (*a, &**b));
    if let Some(local) = req.bind {
        return Ok(table.bind_for(Some(&local)).and_then(|b| {
            let (addr, bind) = table
                .binds
                .iter()
                .find(|(_, v)| std::sync::Arc::ptr_eq(v, b))?;
            let reason = if *addr == local {
                format!("bind address {local}")
            } else {
                format!("{local} arrives on the unspecified address {addr}")
            };
            Some((*addr, &**bind, reason))
        }));
    }
    let mut addrs: Vec<SocketAddr> = table.binds.keys().copied().collect();
    addrs.sort();
    let (candidates, reason) = match req.port {
        Some(port) => {
            let on_port: Vec<_> = addrs.iter().copied().filter(|a| a.port() == port).collect();
            if on_port.is_empty() {
                let by_listener: Vec<_> = table
                    .config
                    .binds
                    .iter()
                    .filter(|b| b.listeners.iter().any(|l| l.port == port))
                    .map(|b| b.address)
                    .collect();
                (
                    by_listener,
                    format!("a listener of the bind has port {port}"),
                )
            } else {
                (on_port, format!("the bind listens on port {port}"))
            }
        }
        None => (addrs, "the only bind of the configuration".to_owned()),
    };
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(found(*one).map(|(a, b)| (a, b, reason))),
        many => Err(ExplainError::AmbiguousBind(
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Explains `req` against a compiled table.
pub(crate) fn explain_table(
    table: &Table,
    req: &ExplainRequest,
) -> Result<Explanation, ExplainError> {
    let parsed = parse(req)?;
    let mut out = Explanation {
        request: ExplainedRequest {
            method: parsed.method.clone(),
            host: parsed.host.clone(),
            path: parsed.path.clone(),
            query: parsed.query.clone(),
            headers: req.headers.clone(),
        },
        bind: None,
        listener: None,
        normalized_path: None,
        route_hostname: None,
        selected: None,
        routes: Vec::new(),
        outcome: Outcome {
            status: None,
            summary: String::new(),
        },
        notes: Vec::new(),
    };
    let Some((address, bind, reason)) = choose_bind(table, req)? else {
        out.outcome.summary = match (req.bind, req.port) {
            (Some(a), _) => format!("no bind listens on {a}: the connection is refused"),
            (None, Some(p)) => format!("no bind listens on port {p}: the connection is refused"),
            (None, None) => "the configuration has no bind".to_owned(),
        };
        return Ok(out);
    };
    let Some(bind_cfg) = table.config.binds.iter().find(|b| b.address == address) else {
        out.outcome.summary = "the bind is not in the configuration".to_owned();
        return Ok(out);
    };
    out.bind = Some(BindChoice {
        address,
        protocol: match bind.protocol {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
        }
        .to_owned(),
        reason,
    });
    if bind.protocol == Protocol::Https {
        out.notes.push(
            "HTTPS: the TLS SNI must select the same listener as the host, or the answer is 421"
                .to_owned(),
        );
    }

    // Listener: the router's host index.
    let Some((listener, pattern)) = bind.router.listener_with_pattern(&parsed.host) else {
        out.outcome = Outcome {
            status: Some(404),
            summary: format!(
                "no listener hostname of the bind matches the host {:?}",
                parsed.host
            ),
        };
        return Ok(out);
    };
    let listener_cfg = &bind_cfg.listeners[listener];
    out.listener = Some(ListenerChoice {
        index: listener,
        name: listener_cfg.name.clone(),
        hostname: listener_cfg.hostname.clone(),
        port: listener_cfg.port,
        matched: match pattern {
            HostPattern::Exact(_) => HostMatchKind::Exact,
            HostPattern::Wildcard(_) => HostMatchKind::Wildcard,
            HostPattern::Any => HostMatchKind::CatchAll,
        },
        body_headers: listener_cfg.body_headers.clone(),
    });

    // Path: the listener's normalisation, as the proxy does.
    let compiled_listener = &bind.listeners[listener];
    let normalized = match path::normalize(&parsed.path, &compiled_listener.path) {
        Ok(Normalized::Forward(p)) => p.into_owned(),
        Ok(Normalized::Redirect(mut location)) => {
            if let Some(q) = &parsed.query {
                location.push('?');
                location.push_str(q);
            }
            out.outcome = Outcome {
                status: Some(307),
                summary: format!("escaped slash in the path: redirected to {location}"),
            };
            return Ok(out);
        }
        Err(e) => {
            out.outcome = Outcome {
                status: Some(400),
                summary: format!("invalid request path: {e}"),
            };
            return Ok(out);
        }
    };
    out.normalized_path = Some(normalized.clone());

    let parts = RequestParts {
        host: &parsed.host,
        path: &normalized,
        query: parsed.query.as_deref(),
        method: &parsed.method,
        headers: &parsed.headers,
    };
    let hit = bind.router.lookup_in(listener, &parts);
    let Some(trace) = bind.router.trace(listener, &parts) else {
        out.outcome.summary = "the listener is not compiled".to_owned();
        return Ok(out);
    };
    out.route_hostname = trace.vhost.as_ref().map(HostPattern::display);
    let routes = &listener_cfg.routes;
    if trace.routes.len() < routes.len() {
        out.notes.push(format!(
            "the listener serves none of its {} routes (it was refused; see the rejected list)",
            routes.len()
        ));
    }
    let winner = hit.and_then(|h| {
        let t = trace.routes.get(h.route)?;
        let RouteTrace::Matches(ms) = t else {
            return None;
        };
        ms.iter()
            .filter(|m| m.rule == h.rule && m.outcome.is_ok())
            .max_by_key(|m| m.rank)
            .map(|m| (h, m))
    });
    for (i, t) in trace.routes.iter().enumerate() {
        let Some(route) = routes.get(i) else { continue };
        out.routes.push(RouteReport {
            route: route_name(route),
            verdict: verdict(
                i,
                route,
                t,
                winner.map(|(h, m)| (h.route, m)),
                routes,
                &parts,
            ),
        });
    }
    let Some((hit, winning)) = winner else {
        out.outcome = Outcome {
            status: Some(404),
            summary: if trace.vhost.is_none() {
                format!(
                    "no route hostname of the listener matches {:?}",
                    parsed.host
                )
            } else {
                "no route matches".to_owned()
            },
        };
        return Ok(out);
    };

    let route = &routes[hit.route];
    let rule_cfg = &route.rules[hit.rule];
    let compiled_rule = &compiled_listener.routes[hit.route][hit.rule];
    let backends: Vec<BackendChoice> = rule_cfg
        .backends
        .iter()
        .zip(&compiled_rule.backends)
        .map(|(cfg, compiled)| BackendChoice {
            name: cfg.name.clone(),
            weight: cfg.weight,
            share_percent: if compiled_rule.total_weight == 0 {
                0.0
            } else {
                f64::from(cfg.weight) * 100.0 / compiled_rule.total_weight as f64
            },
            target: describe_target(cfg, &compiled.target),
            filters: cfg.filters.iter().map(describe_filter).collect(),
        })
        .collect();
    let filters: Vec<FilterStep> = rule_cfg.filters.iter().map(describe_filter).collect();
    out.outcome = outcome(compiled_rule, rule_cfg, &backends);
    for f in rule_cfg
        .filters
        .iter()
        .chain(rule_cfg.backends.iter().flat_map(|b| &b.filters))
    {
        match f {
            Filter::ExtensionRef(e) => out.notes.push(format!(
                "custom filter {}/{} {:?} may answer the request itself",
                e.group, e.kind, e.name
            )),
            Filter::Cors(_) => out.notes.push(
                "CORS: a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered by the gateway"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    let default_match = RouteMatch::default();
    out.selected = Some(Selection {
        route: route_name(route),
        rule: hit.rule,
        rule_name: rule_cfg.name.clone(),
        match_index: winning.match_index,
        matched: describe_match(
            rule_cfg
                .matches
                .get(winning.match_index)
                .unwrap_or(&default_match),
        ),
        filters,
        backends,
    });
    Ok(out)
}

/// What the gateway does once the rule is chosen: a filter's answer, a 500 for a broken rule,
/// or proxying.
fn outcome(
    compiled: &crate::table::CompiledRule,
    rule: &crate::config::Rule,
    backends: &[BackendChoice],
) -> Outcome {
    if let Some(reason) = &compiled.chain.invalid {
        return Outcome {
            status: Some(500),
            summary: format!("a filter of the rule is invalid: {reason}"),
        };
    }
    if let Some(r) = rule.filters.iter().find_map(|f| match f {
        Filter::RequestRedirect(r) => Some(r),
        _ => None,
    }) {
        return Outcome {
            status: Some(r.status_code),
            summary: "the rule's RequestRedirect filter answers with a redirect".to_owned(),
        };
    }
    if backends.is_empty() || compiled.total_weight == 0 {
        return Outcome {
            status: Some(500),
            summary: "the rule has no backend with a weight above 0".to_owned(),
        };
    }
    let usable = backends.iter().filter(|b| b.weight > 0).count();
    Outcome {
        status: None,
        summary: if usable == 1 {
            "proxied to the rule's backend".to_owned()
        } else {
            format!("proxied to one of {usable} backends, chosen by weight")
        },
    }
}

fn route_name(route: &Route) -> String {
    format!("{}/{}", route.namespace, route.name)
}

/// The verdict for route `index` given its trace and the winning match.
fn verdict(
    index: usize,
    route: &Route,
    trace: &RouteTrace,
    winner: Option<(usize, &MatchTrace)>,
    routes: &[std::sync::Arc<Route>],
    req: &RequestParts<'_>,
) -> RouteVerdict {
    match trace {
        RouteTrace::Rejected(reason) => RouteVerdict::Rejected {
            reason: reason.clone(),
        },
        RouteTrace::NotServed => RouteVerdict::Hostname {
            reason: "no hostname of the route intersects the listener's hostname".to_owned(),
        },
        RouteTrace::Hostname { served, matching } => RouteVerdict::Hostname {
            reason: match matching {
                Some(m) => format!(
                    "its hostname {m} matches the host, but a more specific route hostname takes it (no fallback)"
                ),
                None => format!(
                    "none of its hostnames ({}) matches the host",
                    served.join(", ")
                ),
            },
        },
        RouteTrace::Matches(matches) => {
            if let Some((route_index, win)) = winner
                && route_index == index
            {
                return RouteVerdict::Selected {
                    rule: win.rule,
                    match_index: win.match_index,
                };
            }
            let best = matches
                .iter()
                .filter(|m| m.outcome.is_ok())
                .max_by_key(|m| m.rank);
            match (best, winner) {
                (Some(best), Some((wi, win))) => RouteVerdict::LostOnPrecedence {
                    rule: best.rule,
                    match_index: best.match_index,
                    winner: format!(
                        "{} rule {} match {}",
                        route_name(&routes[wi]),
                        win.rule,
                        win.match_index
                    ),
                    reason: precedence_reason(&win.rank, &best.rank, &routes[wi], route),
                },
                _ => RouteVerdict::NoMatch {
                    failures: matches
                        .iter()
                        .filter_map(|m| {
                            let failed = m.outcome.err()?;
                            Some(describe_failure(route, m, failed, req))
                        })
                        .collect(),
                },
            }
        }
    }
}

fn describe_path_rank(rank: PathRank) -> String {
    match rank {
        PathRank::Exact(n) => format!("Exact ({n} bytes)"),
        PathRank::RegularExpression(n) => format!("RegularExpression ({n}-byte pattern)"),
        PathRank::Prefix(n) => format!("PathPrefix ({n} bytes)"),
    }
}

/// Why `win` beats `lost`, naming the first precedence field that differs (Gateway API order:
/// path match kind and length, method, header count, query parameter count, oldest route,
/// `namespace/name`, rule order, match order).
fn precedence_reason(
    win: &MatchRank,
    lost: &MatchRank,
    win_route: &Route,
    lost_route: &Route,
) -> String {
    match win.decisive_field(lost) {
        Some(RankField::Path) => format!(
            "path: {} wins over {} (Exact > RegularExpression > PathPrefix, then longer)",
            describe_path_rank(win.path),
            describe_path_rank(lost.path)
        ),
        Some(RankField::Method) => "method: the winner also matches the method".to_owned(),
        Some(RankField::Headers) => format!(
            "headers: more header matches ({} > {})",
            win.headers, lost.headers
        ),
        Some(RankField::QueryParams) => format!(
            "query params: more query parameter matches ({} > {})",
            win.query_params, lost.query_params
        ),
        Some(RankField::RouteOrder) => {
            if win_route.created != lost_route.created {
                format!(
                    "route age: the winner's route is older (created {} < {})",
                    win_route.created, lost_route.created
                )
            } else if route_name(win_route) != route_name(lost_route) {
                format!(
                    "route name: same age, {} sorts before {}",
                    route_name(win_route),
                    route_name(lost_route)
                )
            } else {
                "route order: same age and name, the earlier route in the configuration".to_owned()
            }
        }
        Some(RankField::Rule) => format!(
            "rule order: rule {} comes before rule {}",
            win.rule.0, lost.rule.0
        ),
        Some(RankField::MatchIndex) => format!(
            "match order: match {} comes before match {}",
            win.match_index.0, lost.match_index.0
        ),
        None => "identical precedence; the first found wins".to_owned(),
    }
}

fn describe_string_match(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("= {v:?}"),
        StringMatch::RegularExpression(p) => format!("~ /{p}/"),
    }
}

fn describe_path_match(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(v) => format!("path Exact {v:?}"),
        PathMatch::Prefix(v) => format!("path PathPrefix {v:?}"),
        PathMatch::RegularExpression(v) => format!("path RegularExpression /{v}/"),
    }
}

fn describe_match(m: &RouteMatch) -> String {
    let mut parts = vec![describe_path_match(&m.path)];
    if let Some(method) = &m.method {
        parts.push(format!("method {method}"));
    }
    for h in &m.headers {
        parts.push(format!(
            "header {} {}",
            h.name,
            describe_string_match(&h.value)
        ));
    }
    for q in &m.query_params {
        parts.push(format!(
            "query param {} {}",
            q.name,
            describe_string_match(&q.value)
        ));
    }
    parts.join(", ")
}

/// The first failed condition of match `m` of `route`, with what the request had.
fn describe_failure(
    route: &Route,
    m: &MatchTrace,
    failed: Failed,
    req: &RequestParts<'_>,
) -> MatchFailure {
    let default_match = RouteMatch::default();
    let cfg = route
        .rules
        .get(m.rule)
        .and_then(|r| r.matches.get(m.match_index))
        .unwrap_or(&default_match);
    let had = || match request_value(req, failed, cfg) {
        Some(v) => format!("the request has {v:?}"),
        None => "the request has none".to_owned(),
    };
    let (condition, detail) = match failed {
        Failed::Path => (
            "path",
            format!(
                "{} does not match {:?}",
                describe_path_match(&cfg.path),
                req.path
            ),
        ),
        Failed::Method => (
            "method",
            format!(
                "wants {}, the request is {}",
                cfg.method.as_deref().unwrap_or(""),
                req.method
            ),
        ),
        Failed::Header(i) => match cfg.headers.get(i) {
            Some(h) => (
                "header",
                format!("{} {}; {}", h.name, describe_string_match(&h.value), had()),
            ),
            None => ("header", String::new()),
        },
        Failed::QueryParam(i) => match cfg.query_params.get(i) {
            Some(q) => (
                "query_param",
                format!("{} {}; {}", q.name, describe_string_match(&q.value), had()),
            ),
            None => ("query_param", String::new()),
        },
    };
    MatchFailure {
        rule: m.rule,
        match_index: m.match_index,
        condition: condition.to_owned(),
        detail,
    }
}

fn describe_modifier(m: &HeaderModifier) -> String {
    let mut parts = Vec::new();
    for (n, v) in &m.set {
        parts.push(format!("set {n}: {v}"));
    }
    for (n, v) in &m.add {
        parts.push(format!("add {n}: {v}"));
    }
    for n in &m.remove {
        parts.push(format!("remove {n}"));
    }
    parts.join(", ")
}

fn describe_path_modifier(p: &PathModifier) -> String {
    match p {
        PathModifier::ReplaceFullPath(v) => format!("path -> {v}"),
        PathModifier::ReplacePrefixMatch(v) => format!("matched prefix -> {v}"),
    }
}

fn describe_filter(f: &Filter) -> FilterStep {
    let (kind, detail) = match f {
        Filter::RequestHeaderModifier(m) => ("RequestHeaderModifier", describe_modifier(m)),
        Filter::ResponseHeaderModifier(m) => ("ResponseHeaderModifier", describe_modifier(m)),
        Filter::RequestRedirect(r) => {
            let mut parts = Vec::new();
            if let Some(s) = &r.scheme {
                parts.push(format!("scheme {s}"));
            }
            if let Some(h) = &r.hostname {
                parts.push(format!("hostname {h}"));
            }
            if let Some(p) = &r.path {
                parts.push(describe_path_modifier(p));
            }
            if let Some(p) = r.port {
                parts.push(format!("port {p}"));
            }
            parts.push(format!("status {}", r.status_code));
            ("RequestRedirect", parts.join(", "))
        }
        Filter::UrlRewrite(r) => {
            let mut parts = Vec::new();
            if let Some(h) = &r.hostname {
                parts.push(format!("hostname -> {h}"));
            }
            if let Some(p) = &r.path {
                parts.push(describe_path_modifier(p));
            }
            ("URLRewrite", parts.join(", "))
        }
        Filter::RequestMirror(m) => (
            "RequestMirror",
            match m.fraction {
                Some((n, d)) => format!("to {} ({n}/{d} of requests)", m.backend.name),
                None => format!("to {}", m.backend.name),
            },
        ),
        Filter::Cors(c) => ("CORS", format!("origins {}", c.allow_origins.join(" "))),
        Filter::ExtensionRef(e) => (
            "ExtensionRef",
            format!("{}/{} {:?}", e.group, e.kind, e.name),
        ),
        Filter::Invalid { reason } => ("Invalid", reason.clone()),
    };
    FilterStep {
        kind: kind.to_owned(),
        detail,
    }
}

fn describe_target(cfg: &BackendRef, compiled: &CompiledTarget) -> String {
    match compiled {
        CompiledTarget::Unresolved(reason) => format!("unresolved ({reason}): answered 500"),
        CompiledTarget::Endpoints(t) => {
            let addrs: Vec<String> = t
                .endpoints
                .iter()
                .map(|e| e.address().to_string())
                .collect();
            let what = match &cfg.target {
                BackendTarget::Dns(d) => format!("DNS name {}:{}", d.hostname, d.port),
                _ => "endpoints".to_owned(),
            };
            if addrs.is_empty() {
                format!("{what}, no ready endpoint: answered 503")
            } else {
                format!("{what} {}", addrs.join(", "))
            }
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        write!(f, "request: {} {}", r.method, r.path)?;
        if let Some(q) = &r.query {
            write!(f, "?{q}")?;
        }
        writeln!(f, " host {:?}", r.host)?;
        for (n, v) in &r.headers {
            writeln!(f, "  {n}: {v}")?;
        }
        match &self.bind {
            Some(b) => writeln!(f, "bind: {} {} ({})", b.protocol, b.address, b.reason)?,
            None => writeln!(f, "bind: none")?,
        }
        if let Some(l) = &self.listener {
            let kind = match l.matched {
                HostMatchKind::Exact => "exact hostname match",
                HostMatchKind::Wildcard => "wildcard hostname match",
                HostMatchKind::CatchAll => "no hostname: catch-all",
            };
            writeln!(
                f,
                "listener: {} (port {}, hostname {}; {kind})",
                l.name,
                l.port,
                l.hostname.as_deref().unwrap_or("*")
            )?;
            for h in &l.body_headers {
                writeln!(
                    f,
                    "  header {} is set from the JSON body's top-level field {:?} before routing \
                     (the client's is dropped; explain takes it from the given headers)",
                    h.header, h.field
                )?;
            }
        }
        if let Some(p) = &self.normalized_path
            && *p != r.path
        {
            writeln!(f, "normalised path: {p}")?;
        }
        if let Some(h) = &self.route_hostname {
            writeln!(f, "route hostname: {h}")?;
        }
        if let Some(s) = &self.selected {
            write!(f, "route: {} rule {}", s.route, s.rule)?;
            if let Some(n) = &s.rule_name {
                write!(f, " ({n})")?;
            }
            writeln!(f, " match {}: {}", s.match_index, s.matched)?;
            if !s.filters.is_empty() {
                writeln!(f, "filters, in order:")?;
                for (i, step) in s.filters.iter().enumerate() {
                    writeln!(f, "  {}. {} {}", i + 1, step.kind, step.detail)?;
                }
            }
            writeln!(f, "backends:")?;
            for b in &s.backends {
                writeln!(
                    f,
                    "  {} weight {} ({:.1}%): {}",
                    b.name, b.weight, b.share_percent, b.target
                )?;
                for step in &b.filters {
                    writeln!(f, "    filter {} {}", step.kind, step.detail)?;
                }
            }
        }
        if !self.routes.is_empty() {
            writeln!(f, "routes of the listener:")?;
        }
        for report in &self.routes {
            match &report.verdict {
                RouteVerdict::Selected { rule, match_index } => writeln!(
                    f,
                    "  {}: selected (rule {rule} match {match_index})",
                    report.route
                )?,
                RouteVerdict::LostOnPrecedence {
                    rule,
                    match_index,
                    winner,
                    reason,
                } => writeln!(
                    f,
                    "  {}: rule {rule} match {match_index} matches but loses to {winner}: {reason}",
                    report.route
                )?,
                RouteVerdict::NoMatch { failures } => {
                    writeln!(f, "  {}: no match", report.route)?;
                    for m in failures {
                        writeln!(
                            f,
                            "    rule {} match {}: {} failed: {}",
                            m.rule, m.match_index, m.condition, m.detail
                        )?;
                    }
                }
                RouteVerdict::Hostname { reason } => {
                    writeln!(f, "  {}: hostname: {reason}", report.route)?
                }
                RouteVerdict::Rejected { reason } => {
                    writeln!(f, "  {}: rejected: {reason}", report.route)?
                }
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        match self.outcome.status {
            Some(code) => writeln!(f, "outcome: {code} - {}", self.outcome.summary),
            None => writeln!(f, "outcome: {}", self.outcome.summary),
        }
    }
}

/// The value the request has for a failed header or query condition, for messages.
fn request_value(req: &RequestParts<'_>, failed: Failed, m: &RouteMatch) -> Option<String> {
    match failed {
        Failed::Header(i) => {
            let name = &m.headers.get(i)?.name;
            let values: Vec<&str> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        }
        Failed::QueryParam(i) => {
            let name = &m.query_params.get(i)?.name;
            first_query_value(req.query?, name).map(|v| String::from_utf8_lossy(&v).into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
