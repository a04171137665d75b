//! Filter policies attached by `targetRefs` and `targetSelectors` (Gateway API policy
//! attachment, GEP-713): objects of the kinds a filter registry marks as policies
//! ([`gateway_core::FilterRegistry::register_policy`], e.g. the filters crate's
//! `TrafficPolicy`).
//!
//! A policy targets, in its own namespace, a Gateway (every listener), one listener of it
//! (`sectionName`), an HTTPRoute (every rule) or one named rule (`sectionName`); by name
//! (`spec.targetRefs`) or by label (`spec.targetSelectors`, whole objects). Its settings are
//! its `spec` less those two fields.
//!
//! **Merging.** A rule served by a listener gets, per policy kind, one `ExtensionRef` whose
//! settings merge the policies attached to the Gateway, the listener, the route and the rule,
//! in that order: per top-level field of the settings (a `TrafficPolicy` section such as
//! `jwt` or `rateLimit`), the more specific attachment wins and replaces the field as a whole;
//! fields nobody more specific sets are inherited. The reference records which object each
//! field came from ([`gateway_core::config::ExtensionRef::origins`]), so state such as a rate
//! limiter's budget belongs to that object. Attached policies run before the rule's own
//! filters.
//!
//! **Status** (one entry per ancestor, at most 16, `Accepted` condition):
//! - `Invalid`: the settings do not build (the filter's own error), or a target is not a
//!   `gateway.networking.k8s.io` Gateway or HTTPRoute. An invalid policy applies nowhere.
//! - `TargetNotFound`: no such Gateway, listener, HTTPRoute or rule in the policy's namespace.
//! - `Conflicted`: an older policy of the same kind (creation time, then namespace/name)
//!   already attaches to exactly the same target; the newer one does not apply there.
//! - `Accepted`: the policy applies.
//!
//! The ancestor of a Gateway or listener target is that Gateway (and listener); of an HTTPRoute
//! or rule target, each Gateway of this controller the route's `parentRefs` name. Targets on
//! Gateways of another controller, and on routes naming none of ours, are left alone: no effect
//! and no status entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::experimental::httproutes::HttpRoute;
use gateway_core::FilterRegistry;
use gateway_core::config::{ExtensionRef, Filter, Route, SecretData};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

use super::listener::Problem;
use super::refs::RefFrom;
use super::secret_refs;
use crate::crds::{PolicyAncestorRef, PolicyTargetRef, PolicyTargetSelector};
use crate::diagnostic::Diagnostic;
use crate::resources::{GATEWAY_GROUP, GenericKey, ObjectKey, Resources};

/// At most this many ancestors are reported per policy (the Gateway API's bound).
const MAX_ANCESTORS: usize = 16;

/// What a policy attaches to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Gateway(ObjectKey),
    Listener(ObjectKey, String),
    Route(ObjectKey),
    Rule(ObjectKey, String),
}

/// The settings one policy gives one slot.
#[derive(Clone, Debug)]
struct Layer {
    /// Index of the kind in [`AttachedPolicies::kinds`].
    kind: usize,
    /// `namespace/name` of the policy.
    origin: String,
    settings: Arc<Map<String, Value>>,
    /// The Secrets its settings name.
    secrets: SecretData,
}

/// What was decided about one attached policy, for its status.
pub(crate) type AttachedPlan = super::client_policy::PolicyPlan<GenericKey>;

/// Every attached filter policy, decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct AttachedPolicies {
    /// The policy kinds, as `(group, kind)`, in the registry's order (the order their filters
    /// run in on a rule).
    kinds: Vec<(String, String)>,
    layers: BTreeMap<Slot, Vec<Layer>>,
    /// Routes with a rule-level layer.
    rule_routes: BTreeSet<ObjectKey>,
    pub plans: Vec<AttachedPlan>,
    /// Policies whose targets cannot be read: no status can be written for them.
    pub diagnostics: Vec<Diagnostic>,
}

/// A policy read from its document.
struct Parsed<'a> {
    key: GenericKey,
    kind: usize,
    meta: ObjectMeta,
    refs: Vec<PolicyTargetRef>,
    selectors: Vec<PolicyTargetSelector>,
    settings: Result<(Arc<Map<String, Value>>, SecretData), String>,
    raw: &'a Value,
}

/// One target, named or selected.
struct Target {
    group: String,
    kind: String,
    name: String,
    section: Option<String>,
}

/// Decides every object of the policy kinds `registry` knows against the Gateways of this
/// controller (`ours`: Gateway -> its listener names).
pub(crate) fn plan(
    resources: &Resources,
    ours: &BTreeMap<ObjectKey, Vec<String>>,
    registry: Option<&FilterRegistry>,
) -> AttachedPolicies {
    let mut out = AttachedPolicies::default();
    let Some(registry) = registry else {
        return out;
    };
    out.kinds = registry
        .policy_kinds()
        .map(|(g, k)| (g.to_string(), k.to_string()))
        .collect();
    if out.kinds.is_empty() {
        return out;
    }
    let mut policies = Vec::new();
    for (key, object) in &resources.others {
        let Some(kind) = out
            .kinds
            .iter()
            .position(|(g, k)| *g == key.group && *k == key.kind)
        else {
            continue;
        };
        let raw = &object.object;
        let meta = super::client_policy::object_meta(raw);
        let read = |field: &str| raw.pointer(&format!("/spec/{field}")).cloned();
        let refs = read("targetRefs").map(serde_json::from_value::<Vec<PolicyTargetRef>>);
        let selectors =
            read("targetSelectors").map(serde_json::from_value::<Vec<PolicyTargetSelector>>);
        let (refs, selectors) = match (refs.transpose(), selectors.transpose()) {
            (Ok(r), Ok(s)) => (r.unwrap_or_default(), s.unwrap_or_default()),
            (Err(e), _) | (_, Err(e)) => {
                out.diagnostics.push(Diagnostic::document(
                    &object.origin,
                    object.document,
                    format!(
                        "{}/{} {}/{}: spec.targetRefs or spec.targetSelectors is unreadable ({e}); the policy attaches nowhere",
                        key.group, key.kind, key.namespace, key.name
                    ),
                ));
                continue;
            }
        };
        if refs.is_empty() && selectors.is_empty() {
            // Only referenced by `ExtensionRef`s: nothing to attach, no status.
            continue;
        }
        let settings = settings(registry, resources, key, raw);
        policies.push(Parsed {
            key: key.clone(),
            kind,
            meta,
            refs,
            selectors,
            settings,
            raw,
        });
    }
    policies.sort_by_key(|p| (super::created_seconds(&p.meta), p.key.clone()));

    for policy in &policies {
        let mut ancestors = Vec::new();
        for target in targets(resources, policy) {
            decide(resources, ours, policy, &target, &mut out, &mut ancestors);
        }
        ancestors.truncate(MAX_ANCESTORS);
        out.plans.push(AttachedPlan {
            key: policy.key.clone(),
            generation: policy
                .raw
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            ancestors,
        });
    }
    out
}

/// The settings of a policy (its `spec` less the attachment fields, Secret references
/// resolved), checked by building its filter once; `Err` with the reason when they do not
/// build.
fn settings(
    registry: &FilterRegistry,
    resources: &Resources,
    key: &GenericKey,
    raw: &Value,
) -> Result<(Arc<Map<String, Value>>, SecretData), String> {
    let mut spec = match raw.get("spec") {
        Some(Value::Object(spec)) => spec.clone(),
        _ => return Err("the policy has no spec".into()),
    };
    spec.remove("targetRefs");
    spec.remove("targetSelectors");
    let mut spec = Value::Object(spec);
    let from = RefFrom {
        group: &key.group,
        kind: &key.kind,
        namespace: &key.namespace,
    };
    let secrets = secret_refs::resolve(resources, from, &mut spec).map_err(|(_, m)| m)?;
    let mut check = ExtensionRef::new(key.group.clone(), key.kind.clone(), key.name.clone());
    check.config = Some(spec);
    check.secrets = secrets.clone();
    match registry.build(&check) {
        Some(Ok(_)) => match check.config {
            Some(Value::Object(spec)) => Ok((Arc::new(spec), secrets)),
            _ => Err("the policy has no spec".into()),
        },
        Some(Err(e)) => Err(format!("invalid settings: {e}")),
        None => Err(format!(
            "no filter of kind {}/{} is registered",
            key.group, key.kind
        )),
    }
}

/// The targets of `policy`: its `targetRefs`, then the objects its `targetSelectors` select.
fn targets(resources: &Resources, policy: &Parsed<'_>) -> Vec<Target> {
    let mut out: Vec<Target> = policy
        .refs
        .iter()
        .map(|r| Target {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            section: r.section_name.clone().filter(|s| !s.is_empty()),
        })
        .collect();
    let namespace = &policy.key.namespace;
    for selector in &policy.selectors {
        let matches = |labels: Option<&BTreeMap<String, String>>| {
            selector
                .match_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        };
        let mut names: Vec<String> = match (selector.group.as_str(), selector.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => resources
                .gateways
                .iter()
                .filter(|(k, g)| {
                    k.namespace == *namespace && matches(g.object.metadata.labels.as_ref())
                })
                .map(|(k, _)| k.name.clone())
                .collect(),
            (GATEWAY_GROUP, "HTTPRoute") => resources
                .http_routes
                .iter()
                .filter(|(k, r)| {
                    k.namespace == *namespace && matches(r.object.metadata.labels.as_ref())
                })
                .map(|(k, _)| k.name.clone())
                .collect(),
            _ => {
                // Reported as Invalid by `decide`.
                vec![String::new()]
            }
        };
        names.sort();
        for name in names {
            if out.iter().any(|t| {
                t.group == selector.group
                    && t.kind == selector.kind
                    && t.name == name
                    && t.section.is_none()
            }) {
                continue;
            }
            out.push(Target {
                group: selector.group.clone(),
                kind: selector.kind.clone(),
                name,
                section: None,
            });
        }
    }
    out
}

/// Decides one target of `policy`, claiming its slot when accepted, and records the outcome
/// for each ancestor.
fn decide(
    resources: &Resources,
    ours: &BTreeMap<ObjectKey, Vec<String>>,
    policy: &Parsed<'_>,
    target: &Target,
    out: &mut AttachedPolicies,
    ancestors: &mut Vec<(PolicyAncestorRef, Result<String, Problem>)>,
) {
    let namespace = &policy.key.namespace;
    let object = ObjectKey::new(namespace.clone(), target.name.clone());
    let itself = PolicyAncestorRef {
        group: target.group.clone(),
        kind: target.kind.clone(),
        namespace: namespace.clone(),
        name: target.name.clone(),
        section_name: target.section.clone(),
    };
    // The slot the target names and the ancestors to report on, or why it cannot apply.
    let found: Result<(Slot, Vec<PolicyAncestorRef>), (PolicyAncestorRef, Problem)> =
        match (target.group.as_str(), target.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => {
                let exists = resources.gateways.contains_key(&object);
                match ours.get(&object) {
                    None if exists => return, // another controller's Gateway
                    None => Err((
                        itself.clone(),
                        ("TargetNotFound", format!("Gateway {object} does not exist")),
                    )),
                    Some(listeners) => match &target.section {
                        Some(s) if !listeners.contains(s) => Err((
                            itself.clone(),
                            (
                                "TargetNotFound",
                                format!("Gateway {object} has no listener {s}"),
                            ),
                        )),
                        Some(s) => Ok((
                            Slot::Listener(object.clone(), s.clone()),
                            vec![itself.clone()],
                        )),
                        None => Ok((Slot::Gateway(object.clone()), vec![itself.clone()])),
                    },
                }
            }
            (GATEWAY_GROUP, "HTTPRoute") => match resources.http_routes.get(&object) {
                None => Err((
                    itself.clone(),
                    (
                        "TargetNotFound",
                        format!("HTTPRoute {object} does not exist"),
                    ),
                )),
                Some(route) => {
                    let parents = route_parents(&route.object, &object, ours);
                    if parents.is_empty() {
                        return; // a route of other controllers only
                    }
                    match &target.section {
                        Some(s) if !has_rule(&route.object, s) => {
                            let problem = (
                                "TargetNotFound",
                                format!("HTTPRoute {object} has no rule named {s}"),
                            );
                            for parent in parents {
                                ancestors.push((parent, Err(problem.clone())));
                            }
                            return;
                        }
                        Some(s) => Ok((Slot::Rule(object.clone(), s.clone()), parents)),
                        None => Ok((Slot::Route(object.clone()), parents)),
                    }
                }
            },
            _ => Err((
                itself.clone(),
                (
                    "Invalid",
                    format!(
                        "target {}/{} {} is not a {GATEWAY_GROUP} Gateway or HTTPRoute",
                        target.group, target.kind, target.name
                    ),
                ),
            )),
        };
    let (slot, parents) = match found {
        Ok(found) => found,
        Err((ancestor, problem)) => {
            ancestors.push((ancestor, Err(problem)));
            return;
        }
    };
    let outcome = match &policy.settings {
        Err(message) => Err(("Invalid", message.clone())),
        Ok((settings, secrets)) => {
            let layers = out.layers.entry(slot.clone()).or_default();
            if let Some(owner) = layers.iter().find(|l| l.kind == policy.kind) {
                Err((
                    "Conflicted",
                    format!(
                        "{} is already targeted by the older policy {}",
                        describe(&slot),
                        owner.origin
                    ),
                ))
            } else {
                layers.push(Layer {
                    kind: policy.kind,
                    origin: format!("{}/{}", policy.key.namespace, policy.key.name),
                    settings: settings.clone(),
                    secrets: secrets.clone(),
                });
                if let Slot::Rule(route, _) = &slot {
                    out.rule_routes.insert(route.clone());
                }
                Ok(format!("policy applied to {}", describe(&slot)))
            }
        }
    };
    for parent in parents {
        ancestors.push((parent, outcome.clone()));
    }
}

fn describe(slot: &Slot) -> String {
    match slot {
        Slot::Gateway(g) => format!("Gateway {g}"),
        Slot::Listener(g, l) => format!("listener {l} of Gateway {g}"),
        Slot::Route(r) => format!("HTTPRoute {r}"),
        Slot::Rule(r, s) => format!("rule {s} of HTTPRoute {r}"),
    }
}

fn has_rule(route: &HttpRoute, name: &str) -> bool {
    route
        .spec
        .rules
        .iter()
        .flatten()
        .any(|r| r.name.as_deref() == Some(name))
}

/// The Gateways of ours `route` names as parents (with the parentRef's sectionName), deduplicated.
fn route_parents(
    route: &HttpRoute,
    key: &ObjectKey,
    ours: &BTreeMap<ObjectKey, Vec<String>>,
) -> Vec<PolicyAncestorRef> {
    let mut out: Vec<PolicyAncestorRef> = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
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
        if !ours.contains_key(&ObjectKey::new(namespace, parent.name.clone())) {
            continue;
        }
        let ancestor = PolicyAncestorRef {
            group: GATEWAY_GROUP.to_string(),
            kind: "Gateway".to_string(),
            namespace: namespace.to_string(),
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
        };
        if !out.contains(&ancestor) {
            out.push(ancestor);
        }
    }
    out
}

impl AttachedPolicies {
    /// `route` as served by listener `listener` of Gateway `gateway`: each rule with one
    /// `ExtensionRef` per policy kind attached to it, before its own filters. The same `Arc`
    /// when no policy applies.
    pub fn apply(
        &self,
        gateway: &ObjectKey,
        listener: &str,
        key: &ObjectKey,
        route: &Arc<Route>,
    ) -> Arc<Route> {
        if self.layers.is_empty() {
            return route.clone();
        }
        let none = Vec::new();
        let get = |slot: Slot| self.layers.get(&slot).unwrap_or(&none);
        let wide = [
            get(Slot::Gateway(gateway.clone())),
            get(Slot::Listener(gateway.clone(), listener.to_string())),
            get(Slot::Route(key.clone())),
        ];
        let by_rule = self.rule_routes.contains(key);
        if !by_rule && wide.iter().all(|l| l.is_empty()) {
            return route.clone();
        }
        let mut served = Route::clone(route);
        for rule in &mut served.rules {
            let own = match (&rule.name, by_rule) {
                (Some(name), true) => get(Slot::Rule(key.clone(), name.clone())),
                _ => &none,
            };
            let mut attached = Vec::new();
            for (index, (group, kind)) in self.kinds.iter().enumerate() {
                let layers = wide
                    .iter()
                    .chain([&own])
                    .flat_map(|l| l.iter())
                    .filter(|l| l.kind == index);
                if let Some(reference) = merge(group, kind, layers) {
                    attached.push(Filter::ExtensionRef(reference));
                }
            }
            if !attached.is_empty() {
                attached.append(&mut rule.filters);
                rule.filters = attached;
            }
        }
        Arc::new(served)
    }
}

/// The reference whose settings merge `layers` (least specific first), or `None` when there
/// is no layer.
fn merge<'a>(
    group: &str,
    kind: &str,
    layers: impl Iterator<Item = &'a Layer>,
) -> Option<ExtensionRef> {
    let mut config = Map::new();
    let mut origins = BTreeMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut secrets = BTreeMap::new();
    for layer in layers {
        for (field, value) in layer.settings.iter() {
            config.insert(field.clone(), value.clone());
            origins.insert(field.clone(), layer.origin.clone());
        }
        for (id, data) in layer.secrets.iter() {
            secrets.insert(id.clone(), data.clone());
        }
    }
    for origin in origins.values() {
        if !names.contains(&origin.as_str()) {
            names.push(origin);
        }
    }
    let name = match names.as_slice() {
        [] => return None,
        [one] => (*one).to_string(),
        many => many.join("+"),
    };
    let single = names.len() == 1;
    let mut reference = ExtensionRef::new(group, kind, name);
    reference.config = Some(Value::Object(config));
    reference.secrets = SecretData::new(secrets);
    if !single {
        reference.origins = origins;
    }
    Some(reference)
}
