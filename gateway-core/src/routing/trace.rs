//! What `explain` ([`crate::explain`]) asks of the router: for one request, the route hostname
//! that takes it on a listener, and for every route of that listener whether each of its
//! matches holds or which condition failed first.
//!
//! Runs only for `explain`, never on the request path. It evaluates the very matchers the
//! lookup uses ([`PathCond::check`], [`super::cond::Conditions::first_failure`], whose
//! `is_none()` is `Conditions::hold`), over the same compiled candidates and host index; the
//! tests hold the trace to [`BindRouter::lookup_in`] on a table of cases.

use super::cond::Failed;
use super::host::{self, HostPattern, MatchedHost};
use super::listener::{ListenerRouter, RouteHosts};
use super::rank::MatchRank;
use super::{BindRouter, RequestParts};

/// How one listener's routes stand for a request.
#[derive(Debug)]
pub(crate) struct ListenerTrace {
    /// The route hostname whose routes take the request; `None` when no route hostname of the
    /// listener matches the host (404).
    pub(crate) vhost: Option<HostPattern>,
    /// One entry per route of the listener, in configuration order.
    pub(crate) routes: Vec<RouteTrace>,
}

/// How one route stands for a request.
#[derive(Debug)]
pub(crate) enum RouteTrace {
    /// The route was left out of the configuration, with the reason.
    Rejected(String),
    /// None of the route's hostnames intersects the listener's hostname.
    NotServed,
    /// The route serves these hostnames (on this listener) and is not under the route hostname
    /// that takes the request. `matching`: one of them matches the host, but a more specific
    /// route hostname of another route takes it (no fallback).
    Hostname {
        served: Vec<String>,
        matching: Option<String>,
    },
    /// The route is under the route hostname that takes the request: each match, in rule and
    /// match order.
    Matches(Vec<MatchTrace>),
}

/// One match of one rule, evaluated.
#[derive(Debug)]
pub(crate) struct MatchTrace {
    pub(crate) rule: usize,
    pub(crate) match_index: usize,
    pub(crate) rank: MatchRank,
    /// `Ok` with the covered prefix length (for a `PathPrefix`) when every condition holds;
    /// otherwise the first condition that failed.
    pub(crate) outcome: Result<Option<usize>, Failed>,
}

impl MatchedHost<'_> {
    fn to_pattern(self) -> HostPattern {
        match self {
            MatchedHost::Exact(h) => HostPattern::Exact(h.to_owned()),
            MatchedHost::Wildcard(s) => HostPattern::Wildcard(s.to_owned()),
            MatchedHost::Any => HostPattern::Any,
        }
    }
}

impl BindRouter {
    /// The listener that takes requests for `host` and the listener hostname pattern that
    /// matched it: the same index walk as [`BindRouter::listener_for`].
    pub(crate) fn listener_with_pattern(&self, host: &str) -> Option<(usize, HostPattern)> {
        host::with_request_host(host, |h| {
            self.listeners
                .find_with_pattern(h)
                .map(|(i, m)| (*i, m.to_pattern()))
        })
    }

    /// How the routes of listener `listener` stand for `req` (whose path is already normalised
    /// under that listener's settings). `None` for an unknown listener index.
    pub(crate) fn trace(&self, listener: usize, req: &RequestParts<'_>) -> Option<ListenerTrace> {
        let router = self.routers.get(listener)?;
        Some(host::with_request_host(req.host, |h| router.trace(h, req)))
    }
}

impl ListenerRouter {
    fn trace(&self, host: &str, req: &RequestParts<'_>) -> ListenerTrace {
        let vhost = self
            .vhosts
            .find_with_pattern(host)
            .map(|(_, m)| m.to_pattern());
        let routes = self
            .route_hosts
            .iter()
            .enumerate()
            .map(|(route, hosts)| match hosts {
                RouteHosts::Rejected(reason) => RouteTrace::Rejected(reason.clone()),
                RouteHosts::Served(patterns) if patterns.is_empty() => RouteTrace::NotServed,
                RouteHosts::Served(patterns) => {
                    if vhost.as_ref().is_some_and(|v| patterns.contains(v)) {
                        RouteTrace::Matches(self.trace_route(route, req))
                    } else {
                        RouteTrace::Hostname {
                            served: patterns.iter().map(HostPattern::display).collect(),
                            matching: patterns
                                .iter()
                                .find(|p| p.covers(host))
                                .map(HostPattern::display),
                        }
                    }
                }
            })
            .collect();
        ListenerTrace { vhost, routes }
    }

    fn trace_route(&self, route: usize, req: &RequestParts<'_>) -> Vec<MatchTrace> {
        self.candidates
            .iter()
            .filter(|c| c.route == route)
            .map(|c| MatchTrace {
                rule: c.rule,
                match_index: c.rank.match_index.0,
                rank: c.rank,
                outcome: match c.matcher.path.check(req.path) {
                    None => Err(Failed::Path),
                    Some(prefix) => match c.matcher.rest.first_failure(req) {
                        None => Ok(prefix),
                        Some(failed) => Err(failed),
                    },
                },
            })
            .collect()
    }
}
