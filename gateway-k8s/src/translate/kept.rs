//! What a translation keeps for the next one, so that a change of a few HTTPRoutes costs work
//! proportional to the change rather than to the number of routes.
//!
//! A translation from scratch attaches every route, oldest first, to the listeners of the
//! Gateways (see `incremental` for why an unchanged route's attachment can be replayed). Its
//! results that depend on all routes together are kept here: the routes served on each
//! listener (in precedence order: creation time, then namespace and name), the status of every
//! route (a [`RouteStatuses`], shared with the [`crate::StatusReport`] handed out), how many
//! served routes refer to each Service, XBackend and InferencePool per Gateway
//! ([`Aggregates`]), and the diagnostics of each route.
//!
//! The next translation, when no object other than an HTTPRoute changed (the condition under
//! which translations are reused at all) and no attached filter policy exists (their plan reads
//! the routes), finds the routes that were added, removed or replaced by comparing the
//! `Arc`s of the kept routes with the new ones ([`Kept::changes`]: a pointer comparison per
//! route), takes each changed route's previous attachment out of the kept state and puts its new
//! one in at its place in precedence order. The result is exactly what a translation from
//! scratch gives (`gateway-k8s/tests/incremental_patch.rs` checks it through series of changes).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_api::experimental::httproutes::HttpRoute;
use gateway_core::config::Route;

use crate::diagnostic::Diagnostic;
use crate::resources::{GenericKey, Object, ObjectKey, Resources};
use crate::status::RouteStatuses;

use super::GatewayPlan;
use super::incremental::{RouteAttachment, TranslatedRoute};
use super::listener::ListenerPlan;
use super::route::RouteRules;

/// The precedence of a route among the routes of a listener: older first, then by namespace
/// and name (the order of a translation from scratch).
pub(super) fn precedence(route: &Route) -> (i64, &str, &str) {
    (route.created, &route.namespace, &route.name)
}

/// Adds `route` to the routes of `listener`, at its place in precedence order (after routes of
/// equal precedence: the same route attached twice keeps its attachment order).
pub(super) fn insert_route(listener: &mut ListenerPlan, route: Arc<Route>) {
    if super::listener::uses_model_header(&route) {
        listener.model_routes += 1;
    }
    let key = precedence(&route);
    let routes = &mut listener.routes;
    if routes.last().is_none_or(|last| precedence(last) <= key) {
        routes.push(route);
    } else {
        let at = routes.partition_point(|r| precedence(r) <= key);
        routes.insert(at, route);
    }
}

/// Removes every entry of the route `route` names (namespace, name, creation time) from the
/// routes of `listener`.
pub(super) fn remove_route(listener: &mut ListenerPlan, route: &Route) {
    let key = precedence(route);
    let routes = &mut listener.routes;
    let start = routes.partition_point(|r| precedence(r) < key);
    let end = start + routes[start..].partition_point(|r| precedence(r) == key);
    for r in routes.drain(start..end) {
        if super::listener::uses_model_header(&r) {
            listener.model_routes -= 1;
        }
    }
}

/// How many served routes refer to each Service, XBackend and InferencePool, per Gateway: what
/// the statuses of policies, XBackends and pools are computed from.
#[derive(Debug, Default)]
pub(super) struct Aggregates {
    /// Service -> Gateway serving a route that refers to it -> how many times.
    pub services: BTreeMap<ObjectKey, BTreeMap<ObjectKey, usize>>,
    /// XBackend -> how many times a served route refers to it.
    pub xbackends: BTreeMap<ObjectKey, usize>,
    /// InferencePool -> (how many routes refer to it, served or not; Gateway serving such a
    /// route -> how many times).
    pub pools: BTreeMap<GenericKey, (usize, BTreeMap<ObjectKey, usize>)>,
}

impl Aggregates {
    /// Counts what the route with `rules` served as `served` refers to.
    pub fn add(&mut self, rules: &RouteRules, attachment: &RouteAttachment) {
        for pool in &rules.pools {
            count_up(&mut self.pools, pool).0 += 1;
        }
        for (gateway, _) in &attachment.served {
            for x in &rules.xbackends {
                *count_up(&mut self.xbackends, x) += 1;
            }
            for pool in &rules.pools {
                *count_up(&mut count_up(&mut self.pools, pool).1, gateway) += 1;
            }
            for service in &rules.services {
                *count_up(count_up(&mut self.services, service), gateway) += 1;
            }
        }
    }

    /// Takes back what [`Aggregates::add`] counted for the same arguments.
    pub fn remove(&mut self, rules: &RouteRules, attachment: &RouteAttachment) {
        for (gateway, _) in &attachment.served {
            for x in &rules.xbackends {
                count_down(&mut self.xbackends, x, |n| {
                    *n -= 1;
                    *n == 0
                });
            }
            for pool in &rules.pools {
                count_down(&mut self.pools, pool, |(_, gateways)| {
                    count_down(gateways, gateway, |n| {
                        *n -= 1;
                        *n == 0
                    });
                    false
                });
            }
            for service in &rules.services {
                count_down(&mut self.services, service, |gateways| {
                    count_down(gateways, gateway, |n| {
                        *n -= 1;
                        *n == 0
                    });
                    gateways.is_empty()
                });
            }
        }
        for pool in &rules.pools {
            count_down(&mut self.pools, pool, |(n, _)| {
                *n -= 1;
                *n == 0
            });
        }
    }
}

/// The entry of `key`, made (default) when missing; the key is cloned only then.
fn count_up<'a, K: Ord + Clone, V: Default>(map: &'a mut BTreeMap<K, V>, key: &K) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.clone(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Updates the entry of `key` with `down`, removing it when `down` says it is done.
fn count_down<K: Ord, V>(map: &mut BTreeMap<K, V>, key: &K, down: impl FnOnce(&mut V) -> bool) {
    if let Some(v) = map.get_mut(key)
        && down(v)
    {
        map.remove(key);
    }
}

/// The results of attaching routes that depend on all routes together, as one translation
/// leaves them (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct RouteState {
    pub aggregates: Aggregates,
    /// The status of every route that names one of our Gateways.
    pub statuses: RouteStatuses,
    /// The diagnostics of each route that has some, in precedence order.
    pub diagnostics: BTreeMap<(i64, ObjectKey), Vec<Diagnostic>>,
}

impl RouteState {
    /// Puts route `key`'s `attachment` in: its entries into the listeners of `plans` (at their
    /// place in precedence order), its references, status and diagnostics.
    pub fn attach(
        &mut self,
        plans: &mut [GatewayPlan],
        key: &ObjectKey,
        attachment: &RouteAttachment,
    ) {
        let translated = &attachment.translated;
        for (gateway, listeners) in &attachment.served {
            if let Some(plan) = plans.iter_mut().find(|p| p.key == *gateway) {
                for (i, route) in listeners {
                    insert_route(&mut plan.listeners[*i], route.clone());
                }
            }
        }
        self.aggregates.add(&translated.rules, attachment);
        if let Some(status) = &attachment.status {
            self.statuses.insert(key.clone(), status.clone());
        }
        let diagnostics = route_diagnostics(key, translated);
        if !diagnostics.is_empty() {
            self.diagnostics
                .insert((translated.route.created, key.clone()), diagnostics);
        }
    }

    /// Takes route `key`'s `attachment` (put in by [`RouteState::attach`]) out again.
    pub fn detach(
        &mut self,
        plans: &mut [GatewayPlan],
        key: &ObjectKey,
        attachment: &RouteAttachment,
    ) {
        let translated = &attachment.translated;
        for (gateway, listeners) in &attachment.served {
            if let Some(plan) = plans.iter_mut().find(|p| p.key == *gateway) {
                for (i, route) in listeners {
                    remove_route(&mut plan.listeners[*i], route);
                }
            }
        }
        self.aggregates.remove(&translated.rules, attachment);
        self.statuses.remove(key);
        self.diagnostics
            .remove(&(translated.route.created, key.clone()));
    }
}

/// What translating route `key` found that its status does not say: rules dropped, or the
/// route not served.
fn route_diagnostics(key: &ObjectKey, translated: &TranslatedRoute) -> Vec<Diagnostic> {
    let route = &*translated.object;
    let rules = &translated.rules;
    let mut out: Vec<Diagnostic> = rules
        .invalid
        .iter()
        .map(|(label, message)| {
            Diagnostic::document(
                &route.origin,
                route.document,
                format!("HTTPRoute {key}: rule {label}: {message}; the rule is dropped"),
            )
        })
        .collect();
    if let Some(message) = &rules.unsupported {
        out.push(Diagnostic::document(
            &route.origin,
            route.document,
            format!("HTTPRoute {key}: {message}; the route is not served"),
        ));
    }
    out
}

/// A route added, replaced or removed since the previous translation.
#[derive(Debug)]
pub(super) struct Change {
    pub key: ObjectKey,
    /// The route now; `None` when it was removed.
    pub object: Option<Arc<Object<HttpRoute>>>,
}

/// The routes served on one listener, in precedence order, and how many of them match on the
/// model header ([`ListenerPlan::routes`], [`ListenerPlan::model_routes`]).
pub(super) type KeptListener = (Vec<Arc<Route>>, usize);

/// What a translation keeps for the next one (see the module documentation).
#[derive(Debug)]
pub(super) struct Kept {
    /// The HTTPRoutes translated, in key order (the `Arc`s, for [`Kept::changes`]).
    pub routes: Vec<(ObjectKey, Arc<Object<HttpRoute>>)>,
    /// Per Gateway plan, in plan order: the Gateway, and per listener the routes served there
    /// and how many of them match on the model header.
    pub listeners: Vec<(ObjectKey, Vec<KeptListener>)>,
    pub state: RouteState,
}

impl Kept {
    /// Whether `listeners` are shaped as the kept ones: the same Gateways in the same order,
    /// each with as many listeners.
    pub fn fits(&self, listeners: &[(&ObjectKey, usize)]) -> bool {
        self.listeners.len() == listeners.len()
            && self
                .listeners
                .iter()
                .zip(listeners)
                .all(|((key, kept), (plan, count))| key == *plan && kept.len() == *count)
    }

    /// The routes of `resources` that are not the kept ones (added, replaced, removed), in key
    /// order, and the kept routes updated to them; `None` (the kept routes untouched) when more
    /// than `limit` changed.
    pub fn changes(&mut self, resources: &Resources, limit: usize) -> Option<Vec<Change>> {
        let mut changes = Vec::new();
        let mut kept = self.routes.iter().peekable();
        let mut now = resources.http_routes.iter().peekable();
        loop {
            let order = match (kept.peek(), now.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                // The same object is the same route (its key is read from the object).
                (Some((_, a)), Some((_, b))) if Arc::ptr_eq(a, b) => {
                    kept.next();
                    now.next();
                    continue;
                }
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            let change = match order {
                Ordering::Less => kept.next().map(|(key, _)| Change {
                    key: key.clone(),
                    object: None,
                }),
                Ordering::Greater => now.next().map(|(key, object)| Change {
                    key: key.clone(),
                    object: Some(object.clone()),
                }),
                Ordering::Equal => {
                    kept.next();
                    now.next().map(|(key, object)| Change {
                        key: key.clone(),
                        object: Some(object.clone()),
                    })
                }
            };
            changes.extend(change);
            if changes.len() > limit {
                return None;
            }
        }
        for change in &changes {
            let found = self.routes.binary_search_by(|(k, _)| k.cmp(&change.key));
            match (found, &change.object) {
                (Ok(i), Some(object)) => self.routes[i].1 = object.clone(),
                (Ok(i), None) => {
                    self.routes.remove(i);
                }
                (Err(i), Some(object)) => {
                    self.routes.insert(i, (change.key.clone(), object.clone()));
                }
                (Err(_), None) => {}
            }
        }
        Some(changes)
    }
}
