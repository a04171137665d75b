//! The compiled routes of one listener: a hostname index of virtual hosts, each with a path
//! index of candidate matches sorted by [`MatchRank`].
//!
//! Built by [`super::BindRouter::build`]; looked up on every request the listener takes.

use std::cmp::Reverse;

use super::RequestParts;
use super::cond::{CompiledMatch, PathCond};
use super::hash::{FastMap, LenSet};
use super::host::{self, HostIndex, HostPattern};
use super::rank::{MatchRank, PathRank};
use crate::config::{Listener, Route, RouteMatch};
use crate::error::{Error, ErrorKind, Result};

/// One match of one rule, compiled, with its precedence.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) rank: MatchRank,
    pub(crate) route: usize,
    pub(crate) rule: usize,
    pub(crate) matcher: CompiledMatch,
}

/// The candidates of one route hostname (Envoy virtual host), indexed by path. Each list holds
/// indices into [`ListenerRouter::candidates`], greatest rank first.
#[derive(Debug, Default)]
pub(super) struct VirtualHost {
    /// `Exact` paths.
    exact: FastMap<Box<str>, Vec<u32>>,
    /// The lengths of the `exact` keys, to skip probes that cannot hit.
    exact_lens: LenSet,
    /// `PathPrefix` values without trailing slashes (`/` is the empty key).
    prefix: FastMap<Box<str>, Vec<u32>>,
    /// The lengths of the `prefix` keys.
    prefix_lens: LenSet,
    /// `RegularExpression` paths.
    regex: Vec<u32>,
}

/// The routes of one listener, compiled.
#[derive(Debug)]
pub(crate) struct ListenerRouter {
    pub(super) vhosts: HostIndex<VirtualHost>,
    pub(super) candidates: Vec<Candidate>,
    rejected: Vec<String>,
    /// What each route (by index) serves on this listener, for `explain` ([`super::trace`]).
    pub(super) route_hosts: Vec<RouteHosts>,
}

/// The hostnames a route serves on its listener, kept for `explain`.
#[derive(Debug)]
pub(crate) enum RouteHosts {
    /// The route was left out, with the reason.
    Rejected(String),
    /// The route hostnames intersected with the listener's (empty: none intersects).
    Served(Vec<HostPattern>),
}

/// The rule a listener chose: route index, rule index, covered prefix length.
pub(crate) type ListenerHit = (usize, usize, Option<usize>);

impl ListenerRouter {
    /// Compiles the routes of `listener`. Routes whose hostnames do not intersect the listener's
    /// are left out. A route with a bad regular expression, header name or hostname is left out
    /// alone and listed in [`ListenerRouter::rejected`]; the others are served.
    pub(crate) fn build(listener: &Listener) -> Result<Self> {
        let order = route_order(&listener.routes);
        let mut candidates = Vec::new();
        let mut vhosts = HostIndex::<VirtualHost>::default();
        let mut rejected = Vec::new();
        let mut route_hosts = Vec::with_capacity(listener.routes.len());
        for (route_index, route) in listener.routes.iter().enumerate() {
            let first = candidates.len();
            // One bad route is left out alone; the others keep serving.
            let patterns =
                match compile_route(route, route_index, order[route_index], &mut candidates)
                    .and_then(|()| route_patterns(listener.hostname.as_deref(), route))
                {
                    Ok(patterns) => patterns,
                    Err(e) => {
                        candidates.truncate(first);
                        tracing::warn!(
                            route = %format_args!("{}/{}", route.namespace, route.name),
                            listener = %listener.name,
                            error = %e,
                            "route rejected"
                        );
                        rejected.push(format!(
                            "route {}/{} on listener {}: {}",
                            route.namespace, route.name, listener.name, e.context
                        ));
                        route_hosts.push(RouteHosts::Rejected(e.context.clone()));
                        continue;
                    }
                };
            if patterns.is_empty() {
                tracing::debug!(
                    route = %format_args!("{}/{}", route.namespace, route.name),
                    listener = %listener.name,
                    "no route hostname intersects the listener hostname; route not served"
                );
            }
            for pattern in &patterns {
                let vhost = vhosts.entry(pattern, VirtualHost::default);
                for (index, candidate) in candidates.iter().enumerate().skip(first) {
                    let index = u32::try_from(index).map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidConfig,
                            "too many route matches on one listener",
                        )
                    })?;
                    vhost.add(index, &candidate.matcher.path);
                }
            }
            route_hosts.push(RouteHosts::Served(patterns));
        }
        for vhost in vhosts.values_mut() {
            vhost.sort(&candidates);
        }
        Ok(ListenerRouter {
            vhosts,
            candidates,
            rejected,
            route_hosts,
        })
    }

    /// The routes left out by [`ListenerRouter::build`], with the reason.
    pub(crate) fn rejected(&self) -> &[String] {
        &self.rejected
    }

    /// The greatest-ranked match holding for the request, within the most specific route
    /// hostname matching `host` (normalised). No allocation beyond what conditions need.
    pub(crate) fn lookup(&self, host: &str, req: &RequestParts<'_>) -> Option<ListenerHit> {
        let vhost = self.vhosts.find(host)?;
        let path = req.path;
        let hit = |list: &[u32], prefix: Option<usize>| {
            list.iter().find_map(|&i| {
                let c = &self.candidates[i as usize];
                c.matcher
                    .rest
                    .hold(req)
                    .then_some((c.route, c.rule, prefix))
            })
        };
        if vhost.exact_lens.may_contain(path.len())
            && let Some(found) = vhost.exact.get(path).and_then(|list| hit(list, None))
        {
            return Some(found);
        }
        for &i in &vhost.regex {
            let c = &self.candidates[i as usize];
            if let PathCond::Regex(re, _) = &c.matcher.path
                && re.is_match(path)
                && c.matcher.rest.hold(req)
            {
                return Some((c.route, c.rule, None));
            }
        }
        if vhost.prefix.is_empty() {
            return None;
        }
        let probe = |key: &str| {
            if !vhost.prefix_lens.may_contain(key.len()) {
                return None;
            }
            vhost
                .prefix
                .get(key)
                .and_then(|list| hit(list, Some(key.len())))
        };
        // Segment boundaries from the longest to the shortest: the whole path, then before each
        // `/`, and finally the empty key (`/`), which covers everything.
        if !path.is_empty()
            && !path.ends_with('/')
            && let Some(found) = probe(path)
        {
            return Some(found);
        }
        let bytes = path.as_bytes();
        let mut end = bytes.len();
        while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
            if slash == 0 {
                break;
            }
            if let Some(found) = probe(&path[..slash]) {
                return Some(found);
            }
            end = slash;
        }
        probe("")
    }
}

impl VirtualHost {
    fn add(&mut self, index: u32, path: &PathCond) {
        match path {
            PathCond::Exact(p) => {
                self.exact_lens.insert(p.len());
                self.exact.entry(p.clone()).or_default().push(index);
            }
            PathCond::Prefix(p) => {
                self.prefix_lens.insert(p.len());
                self.prefix.entry(p.clone()).or_default().push(index);
            }
            PathCond::Regex(..) => self.regex.push(index),
        }
    }

    /// Sorts every list greatest rank first, so the first candidate that holds is the winner.
    fn sort(&mut self, candidates: &[Candidate]) {
        let by_rank = |list: &mut Vec<u32>| {
            list.sort_unstable_by_key(|&i| Reverse(candidates[i as usize].rank));
            list.dedup();
            list.shrink_to_fit();
        };
        self.exact.values_mut().for_each(by_rank);
        self.prefix.values_mut().for_each(by_rank);
        by_rank(&mut self.regex);
    }
}

/// For each route index, its position when sorted by (`created`, `namespace/name`, index).
fn route_order(routes: &[std::sync::Arc<Route>]) -> Vec<usize> {
    let mut keys: Vec<(i64, String, usize)> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.created, format!("{}/{}", r.namespace, r.name), i))
        .collect();
    keys.sort_unstable();
    let mut order = vec![0; routes.len()];
    for (position, (_, _, index)) in keys.into_iter().enumerate() {
        order[index] = position;
    }
    order
}

/// The hostnames a route serves on a listener: its hostnames intersected with the listener's,
/// deduplicated; the listener's own pattern when the route names none; empty when none
/// intersects.
fn route_patterns(listener: Option<&str>, route: &Route) -> Result<Vec<HostPattern>> {
    let bad = |e: String| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("route {}/{}: {e}", route.namespace, route.name),
        )
    };
    if route.hostnames.is_empty() {
        return Ok(vec![HostPattern::parse(listener).map_err(bad)?]);
    }
    let mut patterns = Vec::with_capacity(route.hostnames.len());
    for name in &route.hostnames {
        HostPattern::parse(Some(name)).map_err(bad)?;
        if let Some(served) = host::intersect(listener, name) {
            let pattern = HostPattern::parse(Some(&served)).map_err(bad)?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
    }
    Ok(patterns)
}

/// Compiles every match of every rule of `route` into `out`. A rule without matches gets one
/// match of prefix `/`.
fn compile_route(
    route: &Route,
    route_index: usize,
    route_order: usize,
    out: &mut Vec<Candidate>,
) -> Result<()> {
    let default_match = [RouteMatch::default()];
    for (rule_index, rule) in route.rules.iter().enumerate() {
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches[..]
        };
        for (match_index, m) in matches.iter().enumerate() {
            let matcher = CompiledMatch::compile(m).map_err(|e| {
                e.more_context(format_args!(
                    "route {}/{} rule {rule_index} match {match_index}",
                    route.namespace, route.name
                ))
            })?;
            let path = match &matcher.path {
                PathCond::Exact(p) => PathRank::Exact(p.len()),
                PathCond::Prefix(p) => PathRank::Prefix(p.len()),
                PathCond::Regex(_, len) => PathRank::RegularExpression(*len),
            };
            let rank = MatchRank {
                path,
                method: m.method.is_some(),
                headers: m.headers.len(),
                query_params: m.query_params.len(),
                route_order: Reverse(route_order),
                rule: Reverse(rule_index),
                match_index: Reverse(match_index),
            };
            out.push(Candidate {
                rank,
                route: route_index,
                rule: rule_index,
                matcher,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
impl ListenerRouter {
    /// The compiled candidates, for the reference implementation in the tests.
    pub(crate) fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }
}
