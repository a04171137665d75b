//! Reuse of translated HTTPRoutes from one translation to the next.
//!
//! Translating a route's rules ([`super::route::translate_rules`]) reads the route and other
//! objects (Services, EndpointSlices, ReferenceGrants, policies, untyped objects such as
//! XBackends and `ExtensionRef` targets), never another HTTPRoute. So its result can be reused
//! when the route is the same object as last time and no object other than an HTTPRoute
//! changed. Objects come behind [`Arc`]s ([`Resources`]), and a source that keeps unchanged
//! documents ([`crate::source::FileSource`]) hands the same `Arc` again: "the same object" is a
//! pointer comparison. The cache keeps a clone of each `Arc` it compared, so a pointer can
//! never be freed and reused by another object while it is remembered.
//!
//! The attachment of a route to the Gateways (the listeners it is served on and its status)
//! depends only on the route and on objects other than HTTPRoutes, never on another route. So
//! it is reused with the translation: when a route's translation is the one of the previous
//! call (the same `Arc<TranslatedRoute>`), its attachment is replayed (the same
//! [`Arc`]`<HttpRouteStatus>`, the same served routes) instead of computed again. What depends
//! on all routes together (`attachedRoutes`, policy ancestors, XBackend statuses) is still
//! computed by every translation, from the replayed attachments, so statuses are exactly those
//! of a translation from scratch.
//!
//! When only HTTPRoutes changed, a translation does not even replay the attachments of the
//! unchanged routes: it patches what the previous translation kept (see `kept`).
//!
//! The attachments also keep the `lastTransitionTime` of each route condition: when a route's
//! status is computed again, a condition whose status is unchanged keeps the time it has in the
//! route's previous status (see [`RouteAttachment::previous_time`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_api::experimental::httproutes::{HttpRoute, HttpRouteStatus};
use gateway_core::config::Route;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::created_seconds;
use super::route::RouteRules;
use crate::resources::{Object, ObjectKey, Resources};

/// The translation of one HTTPRoute, shared by the cache and the translation that uses it.
#[derive(Debug)]
pub(super) struct TranslatedRoute {
    /// The object translated (kept alive so that pointer comparisons stay sound).
    pub object: Arc<Object<HttpRoute>>,
    /// The route as served: its kept rules. The same `Arc` goes into every listener the route
    /// attaches to (unless its Gateway adds a backend client certificate).
    pub route: Arc<Route>,
    /// What translating the rules found besides the rules themselves (its `rules` is empty:
    /// they moved into `route`).
    pub rules: RouteRules,
    /// [`RouteRules::refusal`], computed before the rules moved.
    pub refusal: Option<String>,
    /// [`RouteRules::partially_invalid`], computed before the rules moved.
    pub partially_invalid: Option<String>,
}

impl TranslatedRoute {
    /// Wraps the translated `rules` of route `key` (`object`).
    pub fn new(key: &ObjectKey, object: &Arc<Object<HttpRoute>>, mut rules: RouteRules) -> Self {
        let refusal = rules.refusal();
        let partially_invalid = rules.partially_invalid();
        let route = Route {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            hostnames: object.object.spec.hostnames.clone().unwrap_or_default(),
            created: created_seconds(&object.object.metadata),
            rules: std::mem::take(&mut rules.rules),
        };
        TranslatedRoute {
            object: object.clone(),
            route: Arc::new(route),
            rules,
            refusal,
            partially_invalid,
        }
    }
}

/// A listener (its index in the Gateway's plan) and the route as served there.
pub(super) type ServedOn = (usize, Arc<Route>);

/// What attaching one route to the Gateways gave (see the module documentation).
#[derive(Debug)]
pub(super) struct RouteAttachment {
    /// The translation it was computed from: the attachment is reused only with this very
    /// translation (kept alive so that the pointer comparison stays sound).
    pub translated: Arc<TranslatedRoute>,
    /// The route's status; `None` when no parentRef names one of our Gateways.
    pub status: Option<Arc<HttpRouteStatus>>,
    /// The parentRef index of each entry of `status.parents`, in the same order.
    pub parent_indices: Vec<usize>,
    /// Where the route is served: the Gateway, and per listener (its index in the Gateway's
    /// plan) the route as served there (the translation's, or a copy with the Gateway's backend
    /// client certificate and the filter policies attached on that listener).
    pub served: Vec<(ObjectKey, Vec<ServedOn>)>,
}

impl RouteAttachment {
    /// The `lastTransitionTime` to keep for condition `type_` of parentRef `parent` when its
    /// status is `status` (`"True"` / `"False"`): the previous one when the condition had that
    /// status, else `None` (it transitions now).
    pub fn previous_time(&self, parent: usize, type_: &str, status: &str) -> Option<&Time> {
        let at = self.parent_indices.iter().position(|&i| i == parent)?;
        let parents = &self.status.as_ref()?.parents;
        parents
            .get(at)?
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| &c.last_transition_time)
    }
}

/// The translated routes of the previous translation and the other objects they were
/// translated against.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    /// Every object but the HTTPRoutes, as of the previous translation.
    inputs: Option<Inputs>,
    routes: HashMap<ObjectKey, Arc<TranslatedRoute>>,
    /// The attachment of every route of the previous translation. Kept when the translations
    /// are forgotten (its condition times still hold); reused only with its own translation.
    attachments: HashMap<ObjectKey, RouteAttachment>,
    /// How many routes the current (or last) translation reused and translated.
    reused: usize,
    translated: usize,
}

impl RouteCache {
    /// Starts a translation of `resources`: forgets every route when an object other than an
    /// HTTPRoute was added, removed or replaced since the previous translation. Returns whether
    /// the translations were kept (no such object changed).
    pub fn begin(&mut self, resources: &Resources) -> bool {
        let inputs = Inputs::of(resources);
        let same = self.inputs.as_ref().is_some_and(|i| i.same(&inputs));
        if !same {
            self.routes.clear();
        }
        self.inputs = Some(inputs);
        self.reused = 0;
        self.translated = 0;
        same
    }

    /// Forgets route `key` (removed from the input), its translation and attachment.
    pub fn forget_route(&mut self, key: &ObjectKey) {
        self.routes.remove(key);
        self.attachments.remove(key);
    }

    /// Counts `routes` routes that were not looked at as reused (a translation that patched
    /// only the changed routes into the kept state).
    pub fn count_untouched(&mut self, routes: usize) {
        self.reused += routes;
    }

    /// The translation of route `key`: the previous one when `object` is the object it was
    /// made from, else `translate(object)` (which is remembered).
    pub fn get_or_translate(
        &mut self,
        key: &ObjectKey,
        object: &Arc<Object<HttpRoute>>,
        translate: impl FnOnce(&Arc<Object<HttpRoute>>) -> TranslatedRoute,
    ) -> Arc<TranslatedRoute> {
        if let Some(t) = self.routes.get(key)
            && Arc::ptr_eq(&t.object, object)
        {
            self.reused += 1;
            return t.clone();
        }
        self.translated += 1;
        let t = Arc::new(translate(object));
        self.routes.insert(key.clone(), t.clone());
        t
    }

    /// Forgets every translation (and so every reusable attachment); condition times are kept.
    pub fn forget_translations(&mut self) {
        self.inputs = None;
        self.routes.clear();
    }

    /// The attachment of route `key` made by the previous translation (or earlier in this one).
    pub fn attachment(&self, key: &ObjectKey) -> Option<&RouteAttachment> {
        self.attachments.get(key)
    }

    /// The attachment of route `key` when it was computed from `translated` (and so holds for
    /// it now: nothing else it depends on changed, or the translation would not be reused).
    pub fn reusable_attachment(
        &self,
        key: &ObjectKey,
        translated: &Arc<TranslatedRoute>,
    ) -> Option<&RouteAttachment> {
        self.attachments
            .get(key)
            .filter(|a| Arc::ptr_eq(&a.translated, translated))
    }

    /// Remembers the attachment of route `key` for the next translation.
    pub fn remember_attachment(&mut self, key: &ObjectKey, attachment: RouteAttachment) {
        match self.attachments.get_mut(key) {
            Some(slot) => *slot = attachment,
            None => {
                self.attachments.insert(key.clone(), attachment);
            }
        }
    }

    /// Ends a translation of `resources`: forgets the routes that are gone.
    pub fn finish(&mut self, resources: &Resources) {
        if self.routes.len() != resources.http_routes.len() {
            self.routes
                .retain(|key, _| resources.http_routes.contains_key(key));
        }
        if self.attachments.len() != resources.http_routes.len() {
            self.attachments
                .retain(|key, _| resources.http_routes.contains_key(key));
        }
        tracing::debug!(
            reused = self.reused,
            translated = self.translated,
            "HTTPRoutes translated"
        );
    }

    /// How many routes the last translation reused and translated.
    pub fn counts(&self) -> (usize, usize) {
        (self.reused, self.translated)
    }
}

/// Every object of a [`Resources`] except the HTTPRoutes (the `Arc`s, not copies).
#[derive(Debug)]
struct Inputs {
    gateway_classes: Map<gateway_api::gatewayclasses::GatewayClass>,
    gateways: Map<gateway_api::gateways::Gateway>,
    reference_grants: Map<gateway_api::referencegrants::ReferenceGrant>,
    namespaces: Map<k8s_openapi::api::core::v1::Namespace>,
    services: Map<k8s_openapi::api::core::v1::Service>,
    secrets: Map<k8s_openapi::api::core::v1::Secret>,
    endpoint_slices: Map<k8s_openapi::api::discovery::v1::EndpointSlice>,
    backend_traffic_policies: Map<crate::crds::XBackendTrafficPolicy>,
    others: BTreeMap<crate::resources::GenericKey, Arc<Object<serde_json::Value>>>,
}

type Map<T> = BTreeMap<ObjectKey, Arc<Object<T>>>;

impl Inputs {
    // Every map of `Resources` but `http_routes` must be listed here: an object kind missing
    // from this list would let a route keep a translation made against an older version of it.
    fn of(r: &Resources) -> Self {
        Inputs {
            gateway_classes: r.gateway_classes.clone(),
            gateways: r.gateways.clone(),
            reference_grants: r.reference_grants.clone(),
            namespaces: r.namespaces.clone(),
            services: r.services.clone(),
            secrets: r.secrets.clone(),
            endpoint_slices: r.endpoint_slices.clone(),
            backend_traffic_policies: r.backend_traffic_policies.clone(),
            others: r.others.clone(),
        }
    }

    /// Whether both hold the same objects (the same `Arc`s under the same keys).
    fn same(&self, other: &Inputs) -> bool {
        same(&self.gateway_classes, &other.gateway_classes)
            && same(&self.gateways, &other.gateways)
            && same(&self.reference_grants, &other.reference_grants)
            && same(&self.namespaces, &other.namespaces)
            && same(&self.services, &other.services)
            && same(&self.secrets, &other.secrets)
            && same(&self.endpoint_slices, &other.endpoint_slices)
            && same(
                &self.backend_traffic_policies,
                &other.backend_traffic_policies,
            )
            && same(&self.others, &other.others)
    }
}

fn same<K: Eq, T>(a: &BTreeMap<K, Arc<T>>, b: &BTreeMap<K, Arc<T>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
}
