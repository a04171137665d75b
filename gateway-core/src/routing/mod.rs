//! Request routing: which listener, route and rule take a request (Gateway API v1 `HTTPRoute`).
//!
//! [`BindRouter::build`] compiles the listeners of one bind when a configuration is applied;
//! [`BindRouter::lookup`] runs once per request, without locking and without allocation for
//! ordinary requests.
//!
//! Lookup, in order:
//! 1. **Listener.** The request host (port stripped, lowercased, trailing dot dropped) selects the
//!    listener with the most specific matching hostname: exact, then the longest wildcard, then
//!    a listener without hostname. Only that listener's routes are considered (listener
//!    isolation).
//! 2. **Route hostname.** Route hostnames are intersected with the listener's
//!    ([`host::intersect`]); the most specific served hostname matching the request is chosen
//!    (exact, longest wildcard, catch-all), with no fallback to a less specific one.
//! 3. **Rule.** Among the matches of the routes served under that hostname, the greatest
//!    [`MatchRank`] whose conditions hold wins: path `Exact` > `RegularExpression` > `PathPrefix`
//!    (longer first), then method, more headers, more query parameters, older route,
//!    `namespace/name`, rule order, match order. Candidates are found through hash indices
//!    (exact path, prefix probed at each segment boundary) and walked in rank order.

pub(crate) mod cond;
mod hash;
pub mod host;
mod listener;
pub mod rank;
#[cfg(test)]
mod tests;
pub(crate) mod trace;

use std::sync::Arc;

use crate::config::{Listener, Route};
use crate::error::Result;
use host::{HostIndex, HostPattern};
pub(crate) use listener::ListenerRouter;

pub use rank::{MatchRank, PathRank, RankField};

/// The parts of a request routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// The `Host` header or `:authority`, possibly with a port.
    pub host: &'a str,
    /// The path, without the query, as the listener normalised it ([`crate::path`]).
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The method, upper case.
    pub method: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

/// Where a request goes: indices into the bind's listeners, the listener's routes and the route's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteHit {
    /// Index of the listener in the bind.
    pub listener: usize,
    /// Index of the route in the listener.
    pub route: usize,
    /// Index of the rule in the route.
    pub rule: usize,
    /// For a `PathPrefix` match: the byte length of the request path the prefix covered, which
    /// is the prefix without trailing slashes (`/v2/` on `/v2/x` covers 3 bytes, `/` covers 0), so
    /// the rest of the path is empty or starts with `/`. `None` for `Exact` and
    /// `RegularExpression` matches.
    pub matched_prefix: Option<usize>,
}

/// The compiled router of one bind.
#[derive(Debug)]
pub struct BindRouter {
    /// Listener indices by listener hostname.
    listeners: HostIndex<usize>,
    /// One compiled router per listener, in bind order. Shared with the previous table's
    /// router when the listener's routing inputs are unchanged ([`BindRouter::build_reusing`]).
    routers: Vec<Arc<ListenerRouter>>,
    /// What was left out, with the reason.
    rejected: Vec<String>,
}

impl BindRouter {
    /// Compiles the listeners of a bind. Runs when a configuration is applied.
    ///
    /// Fails with `InvalidConfig` on an invalid regular expression, header name or hostname,
    /// naming the listener, route (`namespace/name`) and rule index. When two listeners share a
    /// hostname, the first one takes its requests.
    pub fn build(listeners: &[Listener]) -> Result<Self> {
        Self::build_reusing(listeners, |_| None)
    }

    /// Like [`BindRouter::build`], taking the router of listener `i` from `reuse(i)` when it
    /// gives one instead of compiling it. `reuse` must only give a router compiled from a
    /// listener with the same hostname and routes equal in everything routing reads
    /// ([`same_routing`]), so the result is the one [`BindRouter::build`] would compile.
    pub(crate) fn build_reusing(
        listeners: &[Listener],
        reuse: impl Fn(usize) -> Option<Arc<ListenerRouter>>,
    ) -> Result<Self> {
        let mut index = HostIndex::default();
        let mut routers = Vec::with_capacity(listeners.len());
        let mut rejected = Vec::new();
        for (i, listener) in listeners.iter().enumerate() {
            let in_listener =
                |e: crate::Error| e.more_context(format_args!("listener {}", listener.name));
            let pattern = match HostPattern::parse(listener.hostname.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    // A listener with a bad hostname serves nothing; the others still do.
                    tracing::warn!(listener = %listener.name, error = %e, "listener rejected");
                    rejected.push(format!("listener {}: {e}", listener.name));
                    routers.push(Arc::new(
                        ListenerRouter::build(&Listener {
                            routes: Vec::new(),
                            ..listener.clone()
                        })
                        .map_err(in_listener)?,
                    ));
                    continue;
                }
            };
            if index.contains(&pattern) {
                tracing::warn!(
                    listener = %listener.name,
                    hostname = ?listener.hostname,
                    "another listener of the bind has the same hostname; this one gets no requests"
                );
            } else {
                index.entry(&pattern, || i);
            }
            let router = match reuse(i) {
                Some(router) => router,
                None => Arc::new(ListenerRouter::build(listener).map_err(in_listener)?),
            };
            rejected.extend(router.rejected().iter().cloned());
            routers.push(router);
        }
        Ok(BindRouter {
            listeners: index,
            routers,
            rejected,
        })
    }

    /// The compiled router of listener `i` (bind order), to reuse in the next table.
    pub(crate) fn listener_router(&self, i: usize) -> Option<&Arc<ListenerRouter>> {
        self.routers.get(i)
    }

    /// Listeners and routes left out of this bind because they were invalid, with the reason.
    pub fn rejected(&self) -> &[String] {
        &self.rejected
    }

    /// Finds the rule that takes the request, or `None` (404). Runs once per request.
    pub fn lookup(&self, req: &RequestParts<'_>) -> Option<RouteHit> {
        host::with_request_host(req.host, |host| {
            let listener = *self.listeners.find(host)?;
            let (route, rule, matched_prefix) = self.routers.get(listener)?.lookup(host, req)?;
            Some(RouteHit {
                listener,
                route,
                rule,
                matched_prefix,
            })
        })
    }

    /// Finds the rule that takes the request among the routes of listener `listener` (an index
    /// from [`BindRouter::listener_for`] for the request's host), or `None` (404). Runs once per
    /// request, after the path was normalised under that listener's settings.
    pub fn lookup_in(&self, listener: usize, req: &RequestParts<'_>) -> Option<RouteHit> {
        host::with_request_host(req.host, |host| {
            let (route, rule, matched_prefix) = self.routers.get(listener)?.lookup(host, req)?;
            Some(RouteHit {
                listener,
                route,
                rule,
                matched_prefix,
            })
        })
    }

    /// The index of the listener that takes requests for `host` (a `Host` header value, possibly
    /// with a port), or `None` when no listener hostname matches it.
    pub fn listener_for(&self, host: &str) -> Option<usize> {
        host::with_request_host(host, |h| self.listeners.find(h).copied())
    }
}

/// Whether a listener router compiled from `hostname` and `routes` can serve `listener` as it is:
/// the same hostname, and the same routes in the same order, equal in everything routing reads
/// (namespace, name, hostnames, creation order, and the matches of each rule; not the filters
/// or backends, which the compiled rules hold). Free for routes that are the same [`Arc`].
pub(crate) fn same_routing(
    listener: &Listener,
    hostname: Option<&str>,
    routes: &[Arc<Route>],
) -> bool {
    listener.hostname.as_deref() == hostname
        && listener.routes.len() == routes.len()
        && listener.routes.iter().zip(routes).all(|(a, b)| {
            Arc::ptr_eq(a, b)
                || (a.namespace == b.namespace
                    && a.name == b.name
                    && a.hostnames == b.hostnames
                    && a.created == b.created
                    && a.rules.len() == b.rules.len()
                    && a.rules
                        .iter()
                        .zip(&b.rules)
                        .all(|(x, y)| x.matches == y.matches))
        })
}
