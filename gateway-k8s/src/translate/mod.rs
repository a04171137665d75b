//! The translator: resources in, configuration and status out. No I/O.

mod attached;
mod backend;
mod backend_tls;
mod client_policy;
mod frontend;
mod hostname;
mod incremental;
mod inference;
mod kept;
mod listener;
mod policy;
mod refs;
mod route;
mod secret_refs;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use gateway_api::backendtlspolicies::{
    BackendTlsPolicyStatus, BackendTlsPolicyStatusAncestors,
    BackendTlsPolicyStatusAncestorsAncestorRef,
};
use gateway_api::experimental::httproutes::{
    HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use gateway_api::experimental::xbackendtrafficpolicies::{
    XBackendTrafficPolicyStatus, XBackendTrafficPolicyStatusAncestors,
    XBackendTrafficPolicyStatusAncestorsAncestorRef,
};
use gateway_api::gatewayclasses::{GatewayClassStatus, GatewayClassStatusSupportedFeatures};
use gateway_api::gateways::{
    Gateway, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use gateway_core::DnsStatus;
use gateway_core::config::{Bind, ClientValidation, Config, Listener, Protocol, Route};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crds::{
    PolicyAncestorRef, PolicyAncestorStatus, PolicyStatus, XBACKEND_KIND, XBackendStatus,
};
use crate::diagnostic::Diagnostic;
use crate::resources::{GATEWAY_GROUP, GATEWAY_X_GROUP, GenericKey, Object, ObjectKey, Resources};
use crate::status::{Cond, ConditionClock, SUPPORTED_FEATURES, StatusReport, XBackendEntry};
use incremental::{RouteAttachment, RouteCache, TranslatedRoute};
use listener::{ListenerPlan, Problem};

/// How the translator serves Gateways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Only GatewayClasses whose `spec.controllerName` equals this are served.
    pub controller_name: String,
    /// Declared listener port -> port actually bound (e.g. 80 -> 8080 when not root). Ports not
    /// in the map are bound as declared.
    pub port_map: BTreeMap<u16, u16>,
    /// Addresses handed to Gateways that ask for none (one per Gateway, network and broadcast
    /// addresses skipped). `None`: every such Gateway binds `default_address`.
    pub address_pool: Option<IpNet>,
    /// The address of Gateways without `spec.addresses` when there is no pool. Default 127.0.0.1.
    pub default_address: IpAddr,
}

impl TranslateOptions {
    /// Options for `controller_name` with no port mapping, no pool and address 127.0.0.1.
    pub fn new(controller_name: impl Into<String>) -> Self {
        TranslateOptions {
            controller_name: controller_name.into(),
            port_map: BTreeMap::new(),
            address_pool: None,
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn mapped_port(&self, port: u16) -> u16 {
        self.port_map.get(&port).copied().unwrap_or(port)
    }
}

/// The result of [`Translator::translate`].
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// What to serve: one bind per (address, bound port).
    pub config: Config,
    /// The status of every managed GatewayClass, Gateway and HTTPRoute, and every input object.
    pub status: StatusReport,
    /// Problems the translator noticed that are not expressed in status (e.g. dropped rules).
    pub diagnostics: Vec<Diagnostic>,
}

/// Translates [`Resources`] into a [`Config`] and a [`StatusReport`].
///
/// The translator keeps state between calls: the pool address given to each Gateway (kept while
/// the Gateway exists; freed addresses are reused only after their Gateway is gone), the
/// `lastTransitionTime` of each condition (kept while the condition's status is unchanged), and
/// the translated rules of every HTTPRoute: a route that is the same object (the same [`Arc`],
/// as [`crate::source::FileSource`] hands an unchanged document) as in the previous call is not
/// translated again while no other object changed, and its [`gateway_core::config::Route`] is
/// the same `Arc` as before (which lets [`gateway_core::Gateway::apply`] reuse its compiled
/// form). See `docs/architecture.md`, "Incremental configuration".
///
/// It also keeps what attaching every route gave (the routes of each listener in precedence
/// order, the route statuses, the Services, XBackends and InferencePools served routes refer
/// to, the route diagnostics): when only HTTPRoutes changed since the previous call, only the
/// routes added, removed or replaced are taken out of and put into that state, so a change of
/// one route among 10,000 costs about as much as among ten, plus a pointer comparison per route
/// ([`Translator::patched_last`]).
///
/// [`Arc`]: std::sync::Arc
#[derive(Debug)]
pub struct Translator {
    options: TranslateOptions,
    /// The translated HTTPRoutes of the previous call, and what they were translated against.
    routes: RouteCache,
    /// What the previous call's attachment of all routes gave (see `kept`).
    kept: Option<kept::Kept>,
    /// Whether the last call patched `kept` ([`Translator::patched_last`]).
    patched: bool,
    pool_addresses: BTreeMap<ObjectKey, IpAddr>,
    clock: ConditionClock,
    /// The clock of the XBackend `ResolvedRefs` conditions, built by
    /// [`Translator::resolution_status`].
    dns_clock: ConditionClock,
    /// The filters `ExtensionRef`s are checked against (see [`Translator::with_filters`]).
    filters: Option<gateway_core::FilterRegistry>,
}

/// How a Gateway got (or did not get) its address.
#[derive(Clone, Debug)]
enum AddressOutcome {
    Bound(IpAddr),
    /// `Accepted=False`, reason UnsupportedAddress.
    Unsupported(String),
    /// `Programmed=False` with this reason (AddressNotUsable, AddressNotAssigned).
    Failed(&'static str, String),
}

/// Everything decided about one managed Gateway.
struct GatewayPlan {
    key: ObjectKey,
    generation: Option<i64>,
    /// Why `spec.infrastructure.parametersRef` cannot be honoured: the Gateway is refused.
    invalid_parameters: Option<String>,
    address: AddressOutcome,
    listeners: Vec<ListenerPlan>,
    /// `spec.tls.backend.clientCertificateRef`: the certificate presented to TLS backends, or
    /// why it cannot be (`ResolvedRefs=False`).
    backend_client_cert: Result<Option<gateway_core::config::Certificate>, Problem>,
    /// Some HTTPS listener validates client certificates in `AllowInsecureFallback` mode.
    insecure_frontend: bool,
}

impl GatewayPlan {
    /// The address to serve on; `None` for a refused Gateway.
    fn ip(&self) -> Option<IpAddr> {
        match self.address {
            AddressOutcome::Bound(ip) if self.invalid_parameters.is_none() => Some(ip),
            _ => None,
        }
    }
}

/// This controller reads no infrastructure parameters kind, so a Gateway naming one is refused
/// (`Accepted=False`, `InvalidParameters`), as the spec asks for an unsupported referent.
fn invalid_parameters(gateway: &Gateway) -> Option<String> {
    let p = gateway
        .spec
        .infrastructure
        .as_ref()?
        .parameters_ref
        .as_ref()?;
    Some(format!(
        "infrastructure.parametersRef {}/{} {} is not supported by this controller",
        p.group, p.kind, p.name
    ))
}

impl Translator {
    /// A translator with no sticky state yet.
    pub fn new(options: TranslateOptions) -> Self {
        Translator {
            options,
            routes: RouteCache::default(),
            kept: None,
            patched: false,
            pool_addresses: BTreeMap::new(),
            clock: ConditionClock::default(),
            dns_clock: ConditionClock::default(),
            filters: None,
        }
    }

    /// Checks every `ExtensionRef` filter against `registry` while translating, as the data
    /// plane will build it: a reference to a `(group, kind)` the registry does not know makes the
    /// route `ResolvedRefs=False` with reason `InvalidKind`, and settings the kind's factory
    /// refuses make it `ResolvedRefs=False` with reason `InvalidExtensionRef` and the factory's
    /// message; either way the rule answers 500, as it would without the check. Without a
    /// registry (the default) only the project's `DirectResponse` settings are checked.
    ///
    /// The registry also decides whether HTTPRoute backendRefs of kind `InferencePool`
    /// (`inference.networking.k8s.io`, or the v1alpha2 `inference.networking.x-k8s.io`) are
    /// served: only when it has the kind `("inference.networking.k8s.io", "InferencePool")`.
    /// Such a reference then becomes a backend named `<namespace>/<pool>` whose endpoints are
    /// every target port of every Ready, addressed, non-terminating Pod the pool selects
    /// (sorted), with protocol HTTP/1.1 or h2c (`appProtocol`), load balancer
    /// `Custom("inference.networking.k8s.io/InferencePool")`, and, after the backendRef's own
    /// filters, an `ExtensionRef` of that kind named after the pool whose `config` is a
    /// [`gateway_inference::settings::InferencePoolSettings`] (endpoints with Pods and engines,
    /// the endpoint picker resolved to addresses, the pool's objectives and rewrites). That
    /// filter is not built here. Without the kind the reference is `InvalidKind`, as before.
    /// See `docs/gateway-k8s.md`, "InferencePool backends".
    ///
    /// The filters built for the check are dropped at once; use the registry the gateway serves
    /// with. Give a new translator when the registry changes (translations of unchanged routes
    /// are reused).
    pub fn with_filters(mut self, registry: gateway_core::FilterRegistry) -> Self {
        self.set_filters(Some(registry));
        self
    }

    /// Sets or clears the registry of [`Translator::with_filters`]; forgets the reusable route
    /// translations, which were checked against the previous one.
    pub fn set_filters(&mut self, registry: Option<gateway_core::FilterRegistry>) {
        self.filters = registry;
        self.routes.forget_translations();
        self.kept = None;
    }

    /// The options this translator was built with.
    pub fn options(&self) -> &TranslateOptions {
        &self.options
    }

    /// How many HTTPRoutes the last translation took from the one before it (the same object,
    /// and no object other than an HTTPRoute changed), and how many it translated. `(0, 0)`
    /// before the first translation.
    pub fn route_reuse(&self) -> (usize, usize) {
        self.routes.counts()
    }

    /// Whether the last translation patched what the one before it kept (the listeners' route
    /// lists, route statuses, references and diagnostics: only the HTTPRoutes added, removed or
    /// replaced since were taken out and attached again, at their place in precedence order)
    /// instead of attaching every route. The result is the same either way. `false` before the first
    /// translation, after one where an object other than an HTTPRoute changed, with attached
    /// filter policies, or when more than a quarter of the routes changed.
    pub fn patched_last(&self) -> bool {
        self.patched
    }

    /// Translates `resources`, stamping new condition transitions with the current time.
    pub fn translate(&mut self, resources: &Resources) -> Translation {
        self.translate_at(resources, Time(Timestamp::now()))
    }

    /// Translates `resources`, stamping new condition transitions with `now` (for tests and
    /// reproducible output).
    pub fn translate_at(&mut self, resources: &Resources, now: Time) -> Translation {
        let mut out = self.translate_unrendered_at(resources, now);
        out.status.render(resources);
        out
    }

    /// Like [`Translator::translate`], without rendering the status documents: the statuses are
    /// computed, [`StatusReport::documents`] and [`StatusReport::to_yaml`] stay empty until
    /// [`StatusReport::render`] is called with the same `resources`. For a caller that applies
    /// the configuration first and publishes the status after (with 10,000 routes, rendering
    /// is about a quarter of a translation).
    pub fn translate_unrendered(&mut self, resources: &Resources) -> Translation {
        self.translate_unrendered_at(resources, Time(Timestamp::now()))
    }

    /// [`Translator::translate_unrendered`] stamping new condition transitions with `now`.
    pub fn translate_unrendered_at(&mut self, resources: &Resources, now: Time) -> Translation {
        self.clock.begin();
        let mut out = Translation::default();

        // GatewayClasses of our controller.
        let mut classes = BTreeSet::new();
        for (key, class) in &resources.gateway_classes {
            if class.object.spec.controller_name != self.options.controller_name {
                continue;
            }
            let generation = class.object.metadata.generation;
            let scope = format!("GatewayClass/{}", key.name);
            // This controller reads no parameters kind, so any parametersRef is one it cannot
            // honour: the class is refused and its Gateways are left alone.
            let accepted = match &class.object.spec.parameters_ref {
                Some(p) => Cond::new(
                    "Accepted",
                    false,
                    "InvalidParameters",
                    format!(
                        "parametersRef {}/{} {} is not supported by this controller",
                        p.group, p.kind, p.name
                    ),
                ),
                None => {
                    classes.insert(key.name.clone());
                    Cond::new("Accepted", true, "Accepted", "handled by this controller")
                }
            };
            let accepted = self.clock.build(&scope, accepted, generation, &now);
            out.status.gateway_classes.insert(
                key.name.clone(),
                GatewayClassStatus {
                    conditions: Some(vec![accepted]),
                    supported_features: Some(
                        SUPPORTED_FEATURES
                            .iter()
                            .map(|f| GatewayClassStatusSupportedFeatures {
                                name: f.to_string(),
                            })
                            .collect(),
                    ),
                },
            );
        }

        // Our Gateways, oldest first (they win address and bind conflicts).
        let mut gateways: Vec<(&ObjectKey, &Object<Gateway>)> = resources
            .gateways
            .iter()
            .filter(|(_, g)| classes.contains(&g.object.spec.gateway_class_name))
            .map(|(key, g)| (key, &**g))
            .collect();
        gateways.sort_by_key(|(key, g)| (created_seconds(&g.object.metadata), (*key).clone()));

        let addresses = self.assign_addresses(&gateways, &mut out.diagnostics);
        let mut plans: Vec<GatewayPlan> = gateways
            .iter()
            .zip(addresses)
            .map(|((key, object), address)| {
                let (listeners, insecure_frontend) =
                    listener::plan_listeners(resources, &key.namespace, &object.object);
                GatewayPlan {
                    key: (*key).clone(),
                    generation: object.object.metadata.generation,
                    invalid_parameters: invalid_parameters(&object.object),
                    address,
                    listeners,
                    insecure_frontend,
                    backend_client_cert: backend_tls::client_certificate(
                        resources,
                        &key.namespace,
                        &object.object,
                    ),
                }
            })
            .collect();
        self.mark_bind_conflicts(&mut plans);

        // ClientTrafficPolicies: the path normalisation of each listener.
        let ours: BTreeMap<ObjectKey, Vec<String>> = plans
            .iter()
            .map(|p| {
                let names = p.listeners.iter().map(|l| l.name.clone()).collect();
                (p.key.clone(), names)
            })
            .collect();
        let client_policies = client_policy::plan(resources, &ours);
        out.diagnostics
            .extend(client_policies.diagnostics.iter().cloned());
        for plan in &client_policies.plans {
            let scope = format!("ClientTrafficPolicy/{}", plan.key);
            if let Some(status) =
                self.policy_ancestors_status(&scope, plan.generation, &plan.ancestors, &now)
            {
                out.status
                    .client_traffic_policies
                    .insert(plan.key.clone(), status);
            }
        }

        // Filter policies attached by targetRefs / targetSelectors.
        let attached = attached::plan(resources, &ours, self.filters.as_ref());
        out.diagnostics.extend(attached.diagnostics.iter().cloned());
        for plan in &attached.plans {
            let scope = format!("{}/{}", plan.key.kind, plan.key);
            if let Some(status) =
                self.policy_ancestors_status(&scope, plan.generation, &plan.ancestors, &now)
            {
                out.status
                    .attached_policies
                    .insert(plan.key.clone(), status);
            }
        }

        // XBackendTrafficPolicies, then HTTPRoutes (whose backends carry the policies).
        let (policy_plans, backend_policies) = policy::plan(resources);
        let (tls_plans, backend_tls) = backend_tls::plan(resources);
        let inference = inference::InferenceIndex::new(resources);
        // Routes translated by the previous call, reused when nothing else changed.
        let mut cache = std::mem::take(&mut self.routes);
        let inputs_same = cache.begin(resources);
        let shape: Vec<(&ObjectKey, usize)> =
            plans.iter().map(|p| (&p.key, p.listeners.len())).collect();
        let total = resources.http_routes.len();
        // Only the changed routes are attached again when nothing else changed and no attached
        // filter policy (whose plan reads the routes) exists (see `kept`).
        let patch = self
            .kept
            .take()
            .filter(|k| inputs_same && attached.plans.is_empty() && k.fits(&shape))
            .and_then(|mut k| {
                let changes = k.changes(resources, total / 4 + 16)?;
                Some((k, changes))
            });
        drop(shape);
        let ctx = route::RouteCtx {
            resources,
            policies: &backend_policies,
            tls: &backend_tls,
            namespace: "",
            filters: self.filters.as_ref(),
            inference: &inference,
        };
        let attach = RouteAttach {
            resources,
            attached: &attached,
            now: &now,
        };
        self.patched = patch.is_some();
        let (kept_routes, state) = match patch {
            Some((mut kept, changes)) => {
                for (plan, (_, listeners)) in plans.iter_mut().zip(&mut kept.listeners) {
                    for (l, (routes, models)) in plan.listeners.iter_mut().zip(listeners) {
                        l.routes = std::mem::take(routes);
                        l.model_routes = *models;
                    }
                }
                let mut state = kept.state;
                for change in &changes {
                    if let Some(old) = cache.attachment(&change.key) {
                        state.detach(&mut plans, &change.key, old);
                    }
                    let Some(object) = &change.object else {
                        cache.forget_route(&change.key);
                        continue;
                    };
                    let route = cache.get_or_translate(&change.key, object, |object| {
                        TranslatedRoute::new(
                            &change.key,
                            object,
                            route::translate_rules(
                                route::RouteCtx {
                                    namespace: &change.key.namespace,
                                    ..ctx
                                },
                                &object.object,
                            ),
                        )
                    });
                    self.attach_route(
                        &attach,
                        &mut plans,
                        &mut state,
                        &mut cache,
                        &change.key,
                        &route,
                    );
                }
                let (reused, translated) = cache.counts();
                cache.count_untouched(total.saturating_sub(reused + translated));
                (kept.routes, state)
            }
            None => {
                let mut state = kept::RouteState::default();
                let mut routes: Vec<_> = resources
                    .http_routes
                    .iter()
                    .map(|(key, r)| (created_seconds(&r.object.metadata), key, r))
                    .collect();
                // Stable, and the map's order breaks ties: oldest first, then by key.
                routes.sort_by_key(|(created, _, _)| *created);
                for (_, key, object) in routes {
                    let route = cache.get_or_translate(key, object, |object| {
                        TranslatedRoute::new(
                            key,
                            object,
                            route::translate_rules(
                                route::RouteCtx {
                                    namespace: &key.namespace,
                                    ..ctx
                                },
                                &object.object,
                            ),
                        )
                    });
                    self.attach_route(&attach, &mut plans, &mut state, &mut cache, key, &route);
                }
                let kept_routes = resources
                    .http_routes
                    .iter()
                    .map(|(key, r)| (key.clone(), r.clone()))
                    .collect();
                (kept_routes, state)
            }
        };
        cache.finish(resources);
        self.routes = cache;
        out.diagnostics
            .extend(state.diagnostics.values().flatten().cloned());
        out.status.http_routes = state.statuses.clone();
        self.pool_statuses(
            resources,
            &inference,
            &state.aggregates.pools,
            &now,
            &mut out,
        );
        for key in state.aggregates.xbackends.keys() {
            if let Some(entry) = self.xbackend_status(resources, key, &now) {
                out.status.xbackends.insert(key.clone(), entry);
            }
        }
        let service_gateways = &state.aggregates.services;
        for plan in &tls_plans {
            if let Some(status) = self.tls_policy_status(plan, service_gateways, &now) {
                out.status
                    .backend_tls_policies
                    .insert(plan.key.clone(), status);
            }
        }
        for plan in &policy_plans {
            if let Some(status) = self.policy_status(plan, service_gateways, &now) {
                out.status
                    .backend_traffic_policies
                    .insert(plan.key.clone(), status);
            }
        }

        // Config and Gateway status.
        let mut binds: BTreeMap<SocketAddr, Bind> = BTreeMap::new();
        for plan in &plans {
            let status = self.gateway_status(plan, &now);
            if let Some(ip) = plan.ip() {
                for l in plan.listeners.iter().filter(|l| l.programmable()) {
                    let Some(protocol) = l.protocol else { continue };
                    let address = SocketAddr::new(ip, self.options.mapped_port(l.port));
                    let bind = binds.entry(address).or_insert_with(|| Bind {
                        address,
                        protocol,
                        listeners: Vec::new(),
                    });
                    bind.listeners.push(Listener {
                        name: format!("{}/{}/{}", plan.key.namespace, plan.key.name, l.name),
                        hostname: l.hostname.clone(),
                        port: l.port,
                        tls: l.tls.clone(),
                        routes: l.routes.clone(),
                        path_normalization: client_policies.path_of(&plan.key, &l.name),
                        body_headers: listener::body_headers(l.model_routes),
                        max_body_header_bytes: listener::BODY_HEADER_BYTES,
                    });
                }
            }
            out.status.gateways.insert(plan.key.clone(), status);
        }
        out.config = Config {
            binds: binds.into_values().collect(),
            ..Default::default()
        };
        self.kept = Some(kept::Kept {
            routes: kept_routes,
            listeners: plans
                .iter_mut()
                .map(|plan| {
                    let listeners = plan
                        .listeners
                        .iter_mut()
                        .map(|l| (std::mem::take(&mut l.routes), l.model_routes))
                        .collect();
                    (plan.key.clone(), listeners)
                })
                .collect(),
            state,
        });
        self.clock.finish();
        out
    }

    /// The status of every InferencePool routes refer to: for a v1 pool, one `status.parents`
    /// entry per Gateway of ours serving such a route, with `Accepted` and `ResolvedRefs`
    /// (`InvalidExtensionRef` when its endpoint picker does not resolve); an invalid pool gets
    /// `Accepted=False` (`NotSupportedByParent`) and a diagnostic. v1alpha2 pools are served but
    /// get no status (their `status.parent` schema is not written).
    fn pool_statuses(
        &mut self,
        resources: &Resources,
        index: &inference::InferenceIndex<'_>,
        pool_refs: &BTreeMap<GenericKey, (usize, BTreeMap<ObjectKey, usize>)>,
        now: &Time,
        out: &mut Translation,
    ) {
        use gateway_inference::crd::conditions as c;
        use gateway_inference::crd::v1::{InferencePoolStatus, ParentReference, ParentStatus};
        /// At most this many parents (the CRD's bound).
        const MAX_PARENTS: usize = 32;
        for (key, (_, gateways)) in pool_refs {
            let Some(object) = resources.others.get(key) else {
                continue;
            };
            let outcome = index.pool(key);
            if let Err((_, message)) = &*outcome {
                out.diagnostics.push(Diagnostic::document(
                    &object.origin,
                    object.document,
                    format!("{message}; routes to it answer 500"),
                ));
            }
            if key.group != inference::POOL_GROUP || gateways.is_empty() {
                continue;
            }
            if gateways.len() > MAX_PARENTS {
                out.diagnostics.push(Diagnostic::document(
                    &object.origin,
                    object.document,
                    format!(
                        "InferencePool {}/{} is used by {} Gateways; its status lists the first {MAX_PARENTS}",
                        key.namespace,
                        key.name,
                        gateways.len()
                    ),
                ));
            }
            let generation = object
                .object
                .pointer("/metadata/generation")
                .and_then(serde_json::Value::as_i64);
            let parents = gateways
                .keys()
                .take(MAX_PARENTS)
                .map(|gateway| {
                    let scope = format!(
                        "InferencePool/{}/{}/parent/{gateway}",
                        key.namespace, key.name
                    );
                    let conds = match &*outcome {
                        Err((_, message)) => vec![Cond::new(
                            c::ACCEPTED,
                            false,
                            c::REASON_NOT_SUPPORTED_BY_PARENT,
                            message.clone(),
                        )],
                        Ok(served) => vec![
                            Cond::new(
                                c::ACCEPTED,
                                true,
                                c::REASON_ACCEPTED,
                                "served by the gateway",
                            ),
                            match &served.picker_unresolved {
                                None => Cond::new(
                                    c::RESOLVED_REFS,
                                    true,
                                    c::REASON_RESOLVED_REFS,
                                    "all references resolved",
                                ),
                                Some(why) => Cond::new(
                                    c::RESOLVED_REFS,
                                    false,
                                    c::REASON_INVALID_EXTENSION_REF,
                                    why.clone(),
                                ),
                            },
                        ],
                    };
                    ParentStatus {
                        parent_ref: ParentReference {
                            group: GATEWAY_GROUP.to_string(),
                            kind: "Gateway".to_string(),
                            name: gateway.name.clone(),
                            namespace: Some(gateway.namespace.clone()),
                        },
                        controller_name: self.options.controller_name.clone(),
                        conditions: conds
                            .into_iter()
                            .map(|cond| self.clock.build(&scope, cond, generation, now))
                            .collect(),
                    }
                })
                .collect();
            out.status.inference_pools.insert(
                ObjectKey::new(key.namespace.clone(), key.name.clone()),
                InferencePoolStatus { parents },
            );
        }
    }

    /// The `Accepted` condition of an XBackend a served route refers to; `None` when it does not
    /// exist.
    fn xbackend_status(
        &mut self,
        resources: &Resources,
        key: &ObjectKey,
        now: &Time,
    ) -> Option<XBackendEntry> {
        let object = resources.other(GATEWAY_X_GROUP, XBACKEND_KIND, &key.namespace, &key.name)?;
        let generation = object
            .pointer("/metadata/generation")
            .and_then(serde_json::Value::as_i64);
        let (accepted, hostname) = match backend::parse_xbackend(object) {
            Ok(x) => (
                Cond::new(
                    "Accepted",
                    true,
                    "Accepted",
                    format!("served by resolving {}", x.hostname),
                ),
                Some(x.hostname),
            ),
            Err(backend::XBackendProblem::Invalid(message)) => {
                (Cond::new("Accepted", false, "Invalid", message), None)
            }
            Err(backend::XBackendProblem::Unsupported(message)) => (
                Cond::new("Accepted", false, "UnsupportedValue", message),
                None,
            ),
        };
        let scope = format!("XBackend/{key}");
        let accepted = self.clock.build(&scope, accepted, generation, now);
        Some(XBackendEntry {
            status: XBackendStatus {
                conditions: vec![accepted],
            },
            generation,
            hostname,
        })
    }

    /// Adds to the XBackends of `report` a `ResolvedRefs` condition from what the data plane
    /// reports on their names ([`gateway_core::Gateway::dns_status`]), stamping new transitions
    /// with the current time. Call it after applying the translation's configuration, and again
    /// whenever the report changes ([`gateway_core::Gateway::dns_updates`]).
    pub fn resolution_status(&mut self, report: &mut StatusReport, dns: &[DnsStatus]) {
        self.resolution_status_at(report, dns, Time(Timestamp::now()));
    }

    /// [`Translator::resolution_status`] stamping new transitions with `now`.
    ///
    /// For an XBackend that can be served (`Accepted=True`), `ResolvedRefs` is `True`
    /// (`ResolvedRefs`) when its name has addresses, listed in the message (with the last error
    /// when the latest resolution failed and the previous addresses are kept); `False`
    /// `ResolutionFailed` when the name has no address and resolving failed; `False` `Pending`
    /// when the data plane has no answer yet (or does not watch the name).
    pub fn resolution_status_at(
        &mut self,
        report: &mut StatusReport,
        dns: &[DnsStatus],
        now: Time,
    ) {
        self.dns_clock.begin();
        for (key, entry) in &mut report.xbackends {
            entry
                .status
                .conditions
                .retain(|c| c.type_ != "ResolvedRefs");
            let Some(hostname) = &entry.hostname else {
                continue;
            };
            let name = hostname.trim_end_matches('.').to_ascii_lowercase();
            let watched: Vec<&DnsStatus> = dns.iter().filter(|d| d.hostname == name).collect();
            let addresses: BTreeSet<IpAddr> = watched
                .iter()
                .flat_map(|d| d.addresses.iter().copied())
                .collect();
            let error = watched.iter().find_map(|d| d.last_error.as_deref());
            let list = || {
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let cond = match (addresses.is_empty(), error) {
                (false, None) => Cond::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    format!("{hostname} resolves to {}", list()),
                ),
                (false, Some(error)) => Cond::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    format!(
                        "{hostname} resolved to {}; the latest resolution failed ({error}), so these addresses are kept",
                        list()
                    ),
                ),
                (true, Some(error)) => Cond::new(
                    "ResolvedRefs",
                    false,
                    "ResolutionFailed",
                    format!("{hostname} does not resolve: {error}"),
                ),
                (true, None) => Cond::new(
                    "ResolvedRefs",
                    false,
                    "Pending",
                    format!("{hostname} has not been resolved yet"),
                ),
            };
            let scope = format!("XBackend/{key}");
            let built = self.dns_clock.build(&scope, cond, entry.generation, &now);
            entry.status.conditions.push(built);
        }
        self.dns_clock.finish();
        report.rerender_xbackends();
    }

    /// Picks each Gateway's address: the first IPAddress in `spec.addresses`, else a sticky pool
    /// address, else the default address.
    fn assign_addresses(
        &mut self,
        gateways: &[(&ObjectKey, &Object<Gateway>)],
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Vec<AddressOutcome> {
        let mut outcomes: Vec<Option<AddressOutcome>> = Vec::with_capacity(gateways.len());
        let mut static_ips = BTreeSet::new();
        for (_, gw) in gateways {
            let requested = gw.object.spec.addresses.iter().flatten().find(|a| {
                a.value.as_deref().is_some_and(|v| !v.is_empty())
                    || a.r#type.as_deref().is_some_and(|t| t != "IPAddress")
            });
            let outcome = match requested {
                None => None,
                Some(a) => {
                    let kind = a.r#type.as_deref().unwrap_or("IPAddress");
                    let value = a.value.as_deref().unwrap_or("");
                    if kind != "IPAddress" {
                        Some(AddressOutcome::Unsupported(format!(
                            "address type {kind} is not supported"
                        )))
                    } else {
                        match value.parse::<IpAddr>() {
                            Ok(ip) => {
                                static_ips.insert(ip);
                                Some(AddressOutcome::Bound(ip))
                            }
                            Err(_) => Some(AddressOutcome::Failed(
                                "AddressNotUsable",
                                format!("{value:?} is not an IP address"),
                            )),
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }

        let Some(pool) = self.options.address_pool else {
            self.pool_addresses.clear();
            let default = self.options.default_address;
            return outcomes
                .into_iter()
                .map(|o| o.unwrap_or(AddressOutcome::Bound(default)))
                .collect();
        };

        // Keep addresses of Gateways that still want one from the pool.
        let wanting: BTreeSet<ObjectKey> = gateways
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_none())
            .map(|((k, _), _)| (*k).clone())
            .collect();
        self.pool_addresses
            .retain(|k, ip| wanting.contains(k) && pool.contains(&*ip));
        let mut used: BTreeSet<IpAddr> = self.pool_addresses.values().copied().collect();
        used.extend(static_ips);

        let mut candidates = pool.hosts();
        gateways
            .iter()
            .zip(outcomes)
            .map(|((key, _), outcome)| {
                if let Some(o) = outcome {
                    return o;
                }
                if let Some(ip) = self.pool_addresses.get(*key) {
                    return AddressOutcome::Bound(*ip);
                }
                match candidates.by_ref().find(|ip| !used.contains(ip)) {
                    Some(ip) => {
                        used.insert(ip);
                        self.pool_addresses.insert((*key).clone(), ip);
                        AddressOutcome::Bound(ip)
                    }
                    None => {
                        diagnostics.push(Diagnostic::origin(
                            &format!("Gateway {key}"),
                            format!("address pool {pool} is exhausted"),
                        ));
                        AddressOutcome::Failed(
                            "AddressNotAssigned",
                            format!("address pool {pool} is exhausted"),
                        )
                    }
                }
            })
            .collect()
    }

    /// Listeners of different Gateways (or different ports mapped to one) that land on the same
    /// socket must agree on the protocol and use distinct hostnames; later ones are conflicted.
    fn mark_bind_conflicts(&self, plans: &mut [GatewayPlan]) {
        let mut claimed: BTreeMap<SocketAddr, (Protocol, BTreeSet<Option<String>>)> =
            BTreeMap::new();
        // Client certificates are validated per socket: the first HTTPS listener on a socket sets
        // the validation, and one that asks for another cannot be served there.
        let mut validation: BTreeMap<SocketAddr, (String, Option<ClientValidation>)> =
            BTreeMap::new();
        for plan in plans.iter_mut() {
            let Some(ip) = plan.ip() else { continue };
            for l in plan.listeners.iter_mut().filter(|l| l.programmable()) {
                let Some(protocol) = l.protocol else { continue };
                let address = SocketAddr::new(ip, self.options.mapped_port(l.port));
                let host = l.hostname.as_ref().map(|h| h.to_ascii_lowercase());
                let entry = claimed
                    .entry(address)
                    .or_insert_with(|| (protocol, BTreeSet::new()));
                if entry.0 != protocol {
                    l.conflicted = Some((
                        "ProtocolConflict",
                        format!("{address} is already served with another protocol"),
                    ));
                } else if let Some((owner, first)) = l.tls.as_ref().and_then(|tls| {
                    let (owner, first) = validation.entry(address).or_insert_with(|| {
                        (
                            format!("{}/{}", plan.key, l.name),
                            tls.client_validation.clone(),
                        )
                    });
                    (*first != tls.client_validation).then(|| (owner.clone(), first.is_some()))
                }) {
                    l.accepted = Err((
                        "PortUnavailable",
                        format!(
                            "{address} is served by listener {owner} with {} client certificate validation",
                            if first { "other" } else { "no" }
                        ),
                    ));
                } else if !entry.1.insert(host) {
                    l.conflicted = Some((
                        "HostnameConflict",
                        format!(
                            "another listener on {address} has hostname {}",
                            l.hostname.as_deref().unwrap_or("(none)")
                        ),
                    ));
                }
            }
        }
    }

    /// Attaches route `key` (translated as `translated`) to the listeners that accept it and
    /// records its status, diagnostics and references in `state`. When `cache` holds the
    /// attachment computed from this very translation, it is replayed (see `incremental`);
    /// otherwise it is computed; either way it is remembered for the next translation.
    fn attach_route(
        &self,
        attach: &RouteAttach<'_>,
        plans: &mut [GatewayPlan],
        state: &mut kept::RouteState,
        cache: &mut RouteCache,
        key: &ObjectKey,
        translated: &Arc<TranslatedRoute>,
    ) {
        if let Some(previous) = cache.reusable_attachment(key, translated) {
            state.attach(plans, key, previous);
            return;
        }
        let attachment =
            self.route_attachment(attach, plans, cache.attachment(key), key, translated);
        state.attach(plans, key, &attachment);
        cache.remember_attachment(key, attachment);
    }

    /// Computes the route's status for each parentRef naming one of our Gateways and the
    /// listeners that accept it (with the route as served there). `previous` is the route's
    /// previous attachment, whose condition times are kept while a condition holds.
    fn route_attachment(
        &self,
        attach: &RouteAttach<'_>,
        plans: &[GatewayPlan],
        previous: Option<&RouteAttachment>,
        key: &ObjectKey,
        translated: &Arc<TranslatedRoute>,
    ) -> RouteAttachment {
        let RouteAttach {
            resources,
            attached,
            now,
        } = attach;
        let (resources, now) = (*resources, *now);
        let route = &*translated.object;
        let spec = &route.object.spec;
        let generation = route.object.metadata.generation;
        let rules = &translated.rules;
        // A condition keeps its previous transition time while its status holds.
        let condition = |index: usize, cond: Cond<'_>| {
            let status = if cond.ok { "True" } else { "False" };
            let time = previous
                .and_then(|p| p.previous_time(index, cond.type_, status))
                .unwrap_or(now);
            crate::status::condition(cond, generation, time)
        };
        let refusal = &translated.refusal;
        let partially_invalid = &translated.partially_invalid;
        let hostnames = &translated.route.hostnames;
        let config_route = &translated.route;

        let mut parents = Vec::new();
        let mut parent_indices = Vec::new();
        let mut served_on = Vec::new();
        for (index, parent) in spec.parent_refs.iter().flatten().enumerate() {
            let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = parent.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || kind != "Gateway" {
                continue;
            }
            let namespace = parent
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&key.namespace);
            let Some(plan) = plans
                .iter()
                .find(|p| p.key.namespace == namespace && p.key.name == parent.name)
            else {
                continue;
            };
            let gateway_key = &plan.key;
            let selected: Vec<usize> = plan
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    parent.section_name.as_deref().is_none_or(|s| s == l.name)
                        && parent.port.is_none_or(|p| p == i32::from(l.port))
                })
                .map(|(i, _)| i)
                .collect();
            let accepted: Result<Vec<usize>, Problem> = if selected.is_empty() {
                Err((
                    "NoMatchingParent",
                    "no listener matches the parentRef's sectionName and port".into(),
                ))
            } else {
                let allowed: Vec<usize> = selected
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let l = &plan.listeners[i];
                        l.takes_routes()
                            && l.allows_namespace(resources, &gateway_key.namespace, &key.namespace)
                    })
                    .collect();
                if allowed.is_empty() {
                    Err((
                        "NotAllowedByListeners",
                        format!(
                            "no listener of Gateway {gateway_key} allows this route (kind or namespace)"
                        ),
                    ))
                } else {
                    let fitting: Vec<usize> = allowed
                        .into_iter()
                        .filter(|&i| {
                            hostname::route_fits_listener(
                                plan.listeners[i].hostname.as_deref(),
                                hostnames,
                            )
                        })
                        .collect();
                    if fitting.is_empty() {
                        Err((
                            "NoMatchingListenerHostname",
                            "no listener hostname intersects the route's hostnames".into(),
                        ))
                    } else {
                        Ok(fitting)
                    }
                }
            };

            let mut conditions: Vec<Condition> = Vec::new();
            match accepted {
                Ok(_) if refusal.is_some() => {
                    let message = refusal.clone().unwrap_or_default();
                    conditions.push(condition(
                        index,
                        Cond::new("Accepted", false, "UnsupportedValue", message),
                    ));
                }
                Ok(listeners) => {
                    let served = match &plan.backend_client_cert {
                        Ok(Some(cert)) => {
                            Arc::new(backend_tls::with_client_certificate(config_route, cert))
                        }
                        _ => config_route.clone(),
                    };
                    // Each listener gets the route with the filter policies attached to it
                    // there (the same `Arc` when none is).
                    let per_listener: Vec<(usize, Arc<Route>)> = listeners
                        .iter()
                        .map(|&i| {
                            let l = &plan.listeners[i];
                            (i, attached.apply(&plan.key, &l.name, key, &served))
                        })
                        .collect();
                    served_on.push((plan.key.clone(), per_listener));
                    conditions.push(condition(
                        index,
                        Cond::new("Accepted", true, "Accepted", "accepted"),
                    ));
                    if let Some(message) = &partially_invalid {
                        conditions.push(condition(
                            index,
                            Cond::new(
                                "PartiallyInvalid",
                                true,
                                "UnsupportedValue",
                                message.clone(),
                            ),
                        ));
                    }
                }
                Err((reason, message)) => {
                    conditions.push(condition(
                        index,
                        Cond::new("Accepted", false, reason, message),
                    ));
                }
            }
            let resolved = match &rules.unresolved {
                None => Cond::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all references resolved",
                ),
                Some((reason, message)) => {
                    Cond::new("ResolvedRefs", false, reason, message.clone())
                }
            };
            conditions.push(condition(index, resolved));
            parent_indices.push(index);
            parents.push(HttpRouteStatusParents {
                conditions,
                controller_name: self.options.controller_name.clone(),
                parent_ref: HttpRouteStatusParentsParentRef {
                    group: parent.group.clone(),
                    kind: parent.kind.clone(),
                    name: parent.name.clone(),
                    namespace: parent.namespace.clone(),
                    port: parent.port,
                    section_name: parent.section_name.clone(),
                },
            });
        }
        let status = (!parents.is_empty()).then(|| Arc::new(HttpRouteStatus { parents }));
        RouteAttachment {
            translated: translated.clone(),
            status,
            parent_indices,
            served: served_on,
        }
    }

    /// The status of an XBackendTrafficPolicy: one entry per Gateway it is relevant to. `None`
    /// when no Gateway of ours serves a route referring to its targets.
    fn policy_status(
        &mut self,
        plan: &policy::PolicyPlan,
        service_gateways: &BTreeMap<ObjectKey, BTreeMap<ObjectKey, usize>>,
        now: &Time,
    ) -> Option<XBackendTrafficPolicyStatus> {
        let gateways = policy::ancestors(plan, service_gateways);
        if gateways.is_empty() {
            return None;
        }
        let ancestors = gateways
            .into_iter()
            .map(|gateway| {
                let scope = format!("XBackendTrafficPolicy/{}/ancestor/{gateway}", plan.key);
                let cond = match &plan.outcome {
                    Ok(()) => Cond::new("Accepted", true, "Accepted", "policy applied"),
                    Err((reason, message)) => Cond::new("Accepted", false, reason, message.clone()),
                };
                XBackendTrafficPolicyStatusAncestors {
                    ancestor_ref: XBackendTrafficPolicyStatusAncestorsAncestorRef {
                        group: Some(GATEWAY_GROUP.to_string()),
                        kind: Some("Gateway".to_string()),
                        name: gateway.name.clone(),
                        namespace: Some(gateway.namespace.clone()),
                        port: None,
                        section_name: None,
                    },
                    conditions: vec![self.clock.build(&scope, cond, plan.generation, now)],
                    controller_name: self.options.controller_name.clone(),
                }
            })
            .collect();
        Some(XBackendTrafficPolicyStatus { ancestors })
    }

    /// The status of a BackendTLSPolicy: one entry per Gateway serving a route to one of its
    /// Services, with `Accepted` and `ResolvedRefs`. `None` when there is no such Gateway.
    fn tls_policy_status(
        &mut self,
        plan: &backend_tls::TlsPolicyPlan,
        service_gateways: &BTreeMap<ObjectKey, BTreeMap<ObjectKey, usize>>,
        now: &Time,
    ) -> Option<BackendTlsPolicyStatus> {
        let gateways = backend_tls::ancestors(plan, service_gateways);
        if gateways.is_empty() {
            return None;
        }
        let ancestors = gateways
            .into_iter()
            .map(|gateway| {
                let scope = format!("BackendTLSPolicy/{}/ancestor/{gateway}", plan.key);
                let accepted = match &plan.accepted {
                    Ok(()) => Cond::new("Accepted", true, "Accepted", "policy applied"),
                    Err((reason, message)) => Cond::new("Accepted", false, reason, message.clone()),
                };
                let resolved = match &plan.resolved {
                    Ok(()) => Cond::new(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all CA certificate references resolved",
                    ),
                    Err((reason, message)) => {
                        Cond::new("ResolvedRefs", false, reason, message.clone())
                    }
                };
                BackendTlsPolicyStatusAncestors {
                    ancestor_ref: BackendTlsPolicyStatusAncestorsAncestorRef {
                        group: Some(GATEWAY_GROUP.to_string()),
                        kind: Some("Gateway".to_string()),
                        name: gateway.name.clone(),
                        namespace: Some(gateway.namespace.clone()),
                        port: None,
                        section_name: None,
                    },
                    conditions: [accepted, resolved]
                        .into_iter()
                        .map(|c| self.clock.build(&scope, c, plan.generation, now))
                        .collect(),
                    controller_name: self.options.controller_name.clone(),
                }
            })
            .collect();
        Some(BackendTlsPolicyStatus { ancestors })
    }

    /// The status of a policy (a ClientTrafficPolicy or an attached filter policy) from its
    /// decided ancestors; `scope` names the policy for the condition clock. `None` when there is
    /// no ancestor to report on (it targets only objects of other controllers).
    fn policy_ancestors_status(
        &mut self,
        scope: &str,
        generation: Option<i64>,
        ancestors: &[(PolicyAncestorRef, Result<String, Problem>)],
        now: &Time,
    ) -> Option<PolicyStatus> {
        if ancestors.is_empty() {
            return None;
        }
        let ancestors = ancestors
            .iter()
            .map(|(ancestor, outcome)| {
                let mut scope = format!(
                    "{scope}/ancestor/{}/{}/{}/{}",
                    ancestor.kind,
                    ancestor.namespace,
                    ancestor.name,
                    ancestor.section_name.as_deref().unwrap_or("")
                );
                if ancestor.section_name.is_none() {
                    scope.pop();
                }
                let cond = match outcome {
                    Ok(message) => Cond::new("Accepted", true, "Accepted", message.clone()),
                    Err((reason, message)) => Cond::new("Accepted", false, reason, message.clone()),
                };
                PolicyAncestorStatus {
                    ancestor_ref: ancestor.clone(),
                    controller_name: self.options.controller_name.clone(),
                    conditions: vec![self.clock.build(&scope, cond, generation, now)],
                }
            })
            .collect();
        Some(PolicyStatus { ancestors })
    }

    fn gateway_status(&mut self, plan: &GatewayPlan, now: &Time) -> GatewayStatus {
        let generation = plan.generation;
        let scope = format!("Gateway/{}", plan.key);
        let ip = plan.ip();
        let mut listener_statuses = Vec::new();
        let mut valid = 0usize;
        let mut programmed_count = 0usize;
        for l in &plan.listeners {
            let lscope = format!("{scope}/listener/{}", l.name);
            let accepted = match (&l.accepted, &l.conflicted) {
                (Err((reason, message)), _) => {
                    Cond::new("Accepted", false, reason, message.clone())
                }
                (Ok(()), Some((reason, message))) => {
                    Cond::new("Accepted", false, reason, message.clone())
                }
                (Ok(()), None) => Cond::new("Accepted", true, "Accepted", "listener accepted"),
            };
            if accepted.ok {
                valid += 1;
            }
            let resolved = match (
                &l.invalid_kinds,
                l.cert_problem.as_ref().or(l.ca_problem.as_ref()),
            ) {
                (Some(message), _) => {
                    Cond::new("ResolvedRefs", false, "InvalidRouteKinds", message.clone())
                }
                (None, Some((reason, message))) => {
                    Cond::new("ResolvedRefs", false, reason, message.clone())
                }
                (None, None) => Cond::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all references resolved",
                ),
            };
            let programmed = if !l.programmable() {
                Cond::new("Programmed", false, "Invalid", "listener is not valid")
            } else if plan.invalid_parameters.is_some() {
                Cond::new(
                    "Programmed",
                    false,
                    "Invalid",
                    "the Gateway is not accepted",
                )
            } else if ip.is_none() {
                Cond::new("Programmed", false, "Invalid", "the Gateway has no address")
            } else {
                Cond::new("Programmed", true, "Programmed", "listener is served")
            };
            if programmed.ok {
                programmed_count += 1;
            }
            let conflicted = match &l.conflicted {
                Some((reason, message)) => Cond::new("Conflicted", true, reason, message.clone()),
                None => Cond::new("Conflicted", false, "NoConflicts", "no conflicts"),
            };
            let conditions = [accepted, programmed, resolved, conflicted]
                .into_iter()
                .map(|c| self.clock.build(&lscope, c, generation, now))
                .collect();
            let supported_kinds = if l.protocol.is_some() && l.http_route_allowed {
                vec![GatewayStatusListenersSupportedKinds {
                    group: Some(GATEWAY_GROUP.to_string()),
                    kind: "HTTPRoute".to_string(),
                }]
            } else {
                Vec::new()
            };
            listener_statuses.push(GatewayStatusListeners {
                attached_routes: i32::try_from(l.routes.len()).unwrap_or(i32::MAX),
                conditions,
                name: l.name.clone(),
                supported_kinds: Some(supported_kinds),
            });
        }

        let total = plan.listeners.len();
        let accepted = match &plan.address {
            _ if plan.invalid_parameters.is_some() => Cond::new(
                "Accepted",
                false,
                "InvalidParameters",
                plan.invalid_parameters.clone().unwrap_or_default(),
            ),
            AddressOutcome::Unsupported(message) => {
                Cond::new("Accepted", false, "UnsupportedAddress", message.clone())
            }
            _ if valid == 0 => Cond::new(
                "Accepted",
                false,
                "ListenersNotValid",
                "no listener is valid",
            ),
            _ if valid < total => Cond::new(
                "Accepted",
                true,
                "ListenersNotValid",
                format!("{} of {total} listeners are not valid", total - valid),
            ),
            _ => Cond::new("Accepted", true, "Accepted", "gateway accepted"),
        };
        let programmed = match &plan.address {
            _ if plan.invalid_parameters.is_some() => Cond::new(
                "Programmed",
                false,
                "Invalid",
                "the gateway is not accepted",
            ),
            AddressOutcome::Failed(reason, message) => {
                Cond::new("Programmed", false, reason, message.clone())
            }
            AddressOutcome::Unsupported(message) => {
                Cond::new("Programmed", false, "Invalid", message.clone())
            }
            AddressOutcome::Bound(_) if programmed_count == 0 => {
                Cond::new("Programmed", false, "Invalid", "no listener is programmed")
            }
            AddressOutcome::Bound(_) => {
                Cond::new("Programmed", true, "Programmed", "gateway is served")
            }
        };
        let resolved = match &plan.backend_client_cert {
            Ok(None) => None,
            Ok(Some(_)) => Some(Cond::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "backend client certificate resolved",
            )),
            Err((reason, message)) => {
                Some(Cond::new("ResolvedRefs", false, reason, message.clone()))
            }
        };
        let insecure = plan.insecure_frontend.then(|| {
            Cond::new(
                "InsecureFrontendValidationMode",
                true,
                "ConfigurationChanged",
                "client certificate validation runs in AllowInsecureFallback mode on some HTTPS listener: clients without a valid certificate are admitted",
            )
        });
        let conditions = [Some(accepted), Some(programmed), resolved, insecure]
            .into_iter()
            .flatten()
            .map(|c| self.clock.build(&scope, c, generation, now))
            .collect();
        GatewayStatus {
            addresses: ip.map(|ip| {
                vec![GatewayStatusAddresses {
                    r#type: Some("IPAddress".to_string()),
                    value: ip.to_string(),
                }]
            }),
            attached_listener_sets: None,
            conditions: Some(conditions),
            listeners: Some(listener_statuses),
        }
    }
}

/// What attaching a route reads besides the Gateway plans.
struct RouteAttach<'a> {
    resources: &'a Resources,
    /// Filter policies attached to Gateways, listeners, routes and rules.
    attached: &'a attached::AttachedPolicies,
    now: &'a Time,
}

/// The creation time of an object in Unix seconds; 0 when unknown.
fn created_seconds(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}
