//! Status checks against the gateway's status file (multi-document YAML of every resource with
//! its computed `status`), mirroring the upstream `conformance/utils/kubernetes` helpers.

use std::path::Path;

use serde_json::Value;

use crate::certs::INFRA_NS;
use crate::error::Result;
use crate::manifests::{kind, load_docs, name, namespace};

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One parsed status file.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    docs: Vec<Value>,
}

/// An expected condition; an empty `status` accepts any status and an empty `reason` any reason
/// (upstream `findConditionInList`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// `"True"`, `"False"`, or "" for any.
    pub status: &'static str,
    /// Reason, or "" for any.
    pub reason: &'static str,
}

/// Shorthand for a [`Cond`].
pub const fn cond(type_: &'static str, status: &'static str, reason: &'static str) -> Cond {
    Cond {
        type_,
        status,
        reason,
    }
}

/// An expected listener status (upstream `GatewayStatusMustHaveListeners`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerExpect {
    /// Listener name.
    pub name: &'static str,
    /// Kinds that must be in `supportedKinds` (group defaults to Gateway API); an empty list
    /// requires an empty `supportedKinds`.
    pub supported_kinds: &'static [&'static str],
    /// Conditions that must be present.
    pub conditions: Vec<Cond>,
    /// Exact `attachedRoutes`.
    pub attached_routes: i64,
}

/// An expected `status.parents` entry (upstream `RouteParentStatus` in `HTTPRouteMustHaveParents`):
/// parentRef group `gateway.networking.k8s.io`, kind `Gateway`, the Gateway's name and namespace,
/// our controllerName, and these conditions (an empty status or reason matches any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentExpect {
    /// The parent Gateway.
    pub gateway: ObjRef,
    /// `controllerName` the entry must carry.
    pub controller: String,
    /// Conditions that must be present.
    pub conditions: Vec<Cond>,
}

/// A reference to an object in the status file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjRef {
    /// An object in the infra namespace.
    pub fn infra(name: &str) -> Self {
        ObjRef {
            namespace: INFRA_NS.to_string(),
            name: name.to_string(),
        }
    }

    /// An object in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A cluster-scoped object (GatewayClass).
    pub fn cluster(name: &str) -> Self {
        ObjRef {
            namespace: String::new(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

fn conditions(v: &Value) -> &[Value] {
    v["conditions"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether `conds` holds `want` (type; status and reason when given).
pub fn has_condition(conds: &[Value], want: &Cond) -> bool {
    conds.iter().any(|c| {
        c["type"] == want.type_
            && (want.status.is_empty() || c["status"] == want.status)
            && (want.reason.is_empty() || c["reason"] == want.reason)
    })
}

fn show_conditions(conds: &[Value]) -> String {
    let parts: Vec<String> = conds
        .iter()
        .map(|c| {
            format!(
                "{}={}/{}@{}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["observedGeneration"]
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

impl Snapshot {
    /// Reads and parses the status file.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Snapshot {
            docs: load_docs(path, "")?,
        })
    }

    /// A snapshot over given documents (tests).
    pub fn from_docs(docs: Vec<Value>) -> Self {
        Snapshot { docs }
    }

    /// Finds an object.
    pub fn get(&self, k: &str, r: &ObjRef) -> Result<&Value, String> {
        self.docs
            .iter()
            .find(|d| kind(d) == k && namespace(d) == r.namespace && name(d) == r.name)
            .ok_or_else(|| format!("{k} {r} not in the status file"))
    }

    /// The address upstream `WaitForGatewayAddress` uses: once every Gateway condition is at
    /// the Gateway's generation, the value of the first `status.addresses` entry that has a
    /// `type`.
    pub fn gateway_address(&self, gw: &ObjRef) -> Result<String, String> {
        self.gateway_latest(gw)?;
        let g = self.get("Gateway", gw)?;
        g["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"].as_str().is_some_and(|t| !t.is_empty()))
            .and_then(|a| a["value"].as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("Gateway {gw} has no typed address in status.addresses"))
    }

    /// Every listener has ResolvedRefs, Accepted and Programmed True (upstream
    /// `GatewayAndHTTPRoutesMustBeAccepted`), and there is a status entry per spec listener.
    pub fn gateway_listeners_ready(&self, gw: &ObjRef) -> Result<(), String> {
        let g = self.get("Gateway", gw)?;
        let spec_count = g["spec"]["listeners"].as_array().map_or(0, Vec::len);
        let listeners = g["status"]["listeners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if listeners.len() != spec_count {
            return Err(format!(
                "Gateway {gw}: {} listener statuses for {spec_count} listeners",
                listeners.len()
            ));
        }
        for l in listeners {
            for t in ["ResolvedRefs", "Accepted", "Programmed"] {
                if !has_condition(conditions(l), &cond(t, "True", "")) {
                    return Err(format!(
                        "Gateway {gw} listener {}: want {t}=True, have {}",
                        l["name"],
                        show_conditions(conditions(l))
                    ));
                }
            }
        }
        Ok(())
    }

    /// Gateway-level condition (upstream `GatewayMustHaveCondition`): the Gateway's conditions
    /// are all at its generation, and one of them matches `want`.
    pub fn gateway_condition(&self, gw: &ObjRef, want: &Cond) -> Result<(), String> {
        self.object_condition("Gateway", gw, want)
    }

    /// All Gateway conditions carry `observedGeneration == metadata.generation`
    /// (upstream `GatewayMustHaveLatestConditions`).
    pub fn gateway_latest(&self, gw: &ObjRef) -> Result<(), String> {
        self.object_latest("Gateway", gw)
    }

    /// GatewayClass condition (upstream `GWCMustHaveAcceptedConditionAny` / `...True` with the
    /// condition they look for): the class's conditions are all at its generation, and one of
    /// them matches `want`.
    pub fn gateway_class_condition(&self, class: &ObjRef, want: &Cond) -> Result<(), String> {
        self.object_condition("GatewayClass", class, want)
    }

    /// All GatewayClass conditions carry `observedGeneration == metadata.generation`
    /// (upstream `GatewayClassMustHaveLatestConditions`).
    pub fn gateway_class_latest(&self, class: &ObjRef) -> Result<(), String> {
        self.object_latest("GatewayClass", class)
    }

    /// `status.conditions` of an object are all at its generation (upstream
    /// `ConditionsHaveLatestObservedGeneration`).
    fn object_latest(&self, k: &str, r: &ObjRef) -> Result<(), String> {
        let o = self.get(k, r)?;
        latest(&format!("{k} {r}"), o, conditions(&o["status"]))
    }

    /// Latest conditions, and one of them matches `want`.
    fn object_condition(&self, k: &str, r: &ObjRef, want: &Cond) -> Result<(), String> {
        self.object_latest(k, r)?;
        let conds = conditions(&self.get(k, r)?["status"]);
        if has_condition(conds, want) {
            Ok(())
        } else {
            Err(format!(
                "{k} {r}: want {}, have {}",
                show_want(want),
                show_conditions(conds)
            ))
        }
    }

    /// The status file shows the object at `metadata.generation == generation`: the gateway has
    /// read the spec change the harness wrote. (On a cluster the API server bumps the generation
    /// as it stores the change, so every upstream read after the patch sees it.)
    pub fn seen_generation(&self, k: &str, r: &ObjRef, generation: i64) -> Result<(), String> {
        let o = self.get(k, r)?;
        match o["metadata"]["generation"].as_i64() {
            Some(g) if g == generation => Ok(()),
            g => Err(format!(
                "{k} {r}: the gateway reports metadata.generation {}, want {generation} \
                 (the update was not read)",
                g.map_or_else(|| "none".to_string(), |g| g.to_string())
            )),
        }
    }

    /// Upstream `NamespacesMustBeReady` (the Gateway half; the emulated echo pods are always
    /// ready): every Gateway in `ns` not annotated `gateway-api/skip-this-for-readiness: "true"`
    /// has all conditions at its generation, Accepted=True and Programmed=True.
    pub fn namespace_ready(&self, ns: &str) -> Result<(), String> {
        for g in self
            .docs
            .iter()
            .filter(|d| kind(d) == "Gateway" && namespace(d) == ns)
        {
            if g["metadata"]["annotations"][SKIP_READINESS_ANNOTATION] == "true" {
                continue;
            }
            let r = ObjRef::new(ns, name(g));
            let conds = conditions(&g["status"]);
            latest(&format!("Gateway {r}"), g, conds)?;
            for t in ["Accepted", "Programmed"] {
                if !has_condition(conds, &cond(t, "True", "")) {
                    return Err(format!(
                        "Gateway {r}: want {t}=True, have {}",
                        show_conditions(conds)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Upstream `GatewayListenerMustHaveConditions`: the listener named `listener` has every
    /// condition of `want` (an empty reason matches any).
    pub fn listener_conditions(
        &self,
        gw: &ObjRef,
        listener: &str,
        want: &[Cond],
    ) -> Result<(), String> {
        let g = self.get("Gateway", gw)?;
        let l = g["status"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == listener)
            .ok_or_else(|| format!("Gateway {gw}: no status for listener {listener}"))?;
        for c in want {
            if !has_condition(conditions(l), c) {
                return Err(format!(
                    "Gateway {gw} listener {listener}: want {}, have {}",
                    show_want(c),
                    show_conditions(conditions(l))
                ));
            }
        }
        Ok(())
    }

    /// Upstream `GatewayStatusMustHaveListeners`: Gateway conditions at its generation, then
    /// same count, matched by name, expected kinds present (empty means none), exact
    /// attachedRoutes, expected conditions present.
    pub fn gateway_listeners(&self, gw: &ObjRef, want: &[ListenerExpect]) -> Result<(), String> {
        self.gateway_latest(gw)?;
        let g = self.get("Gateway", gw)?;
        let have = g["status"]["listeners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if have.len() != want.len() {
            return Err(format!(
                "Gateway {gw}: {} listener statuses, want {}",
                have.len(),
                want.len()
            ));
        }
        for w in want {
            let l = have
                .iter()
                .find(|l| l["name"] == w.name)
                .ok_or_else(|| format!("Gateway {gw}: no status for listener {}", w.name))?;
            let kinds: Vec<(String, String)> = l["supportedKinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    (
                        k["group"].as_str().unwrap_or(GATEWAY_GROUP).to_string(),
                        k["kind"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            if w.supported_kinds.is_empty() && !kinds.is_empty() {
                return Err(format!(
                    "Gateway {gw} listener {}: supportedKinds {kinds:?}, want none",
                    w.name
                ));
            }
            for k in w.supported_kinds {
                if !kinds.iter().any(|(g, kk)| g == GATEWAY_GROUP && kk == k) {
                    return Err(format!(
                        "Gateway {gw} listener {}: supportedKinds {kinds:?} lacks {k}",
                        w.name
                    ));
                }
            }
            if l["attachedRoutes"].as_i64() != Some(w.attached_routes) {
                return Err(format!(
                    "Gateway {gw} listener {}: attachedRoutes {}, want {}",
                    w.name, l["attachedRoutes"], w.attached_routes
                ));
            }
            for c in &w.conditions {
                if !has_condition(conditions(l), c) {
                    return Err(format!(
                        "Gateway {gw} listener {}: want {}, have {}",
                        w.name,
                        show_want(c),
                        show_conditions(conditions(l))
                    ));
                }
            }
        }
        Ok(())
    }

    /// Upstream `GatewayMustHaveZeroRoutes`: Gateway conditions at its generation, and no
    /// listener statuses or one with 0 attached.
    pub fn gateway_zero_routes(&self, gw: &ObjRef) -> Result<(), String> {
        self.gateway_latest(gw)?;
        let g = self.get("Gateway", gw)?;
        let have = g["status"]["listeners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match have {
            [] => Ok(()),
            [one] if one["attachedRoutes"].as_i64() == Some(0) => Ok(()),
            _ => Err(format!(
                "Gateway {gw}: want zero listeners or one with 0 attachedRoutes, have {}",
                Value::Array(have.to_vec())
            )),
        }
    }

    fn route_parents<'a>(&'a self, kind_: &str, route: &ObjRef) -> Result<&'a [Value], String> {
        let r = self.get(kind_, route)?;
        Ok(r["status"]["parents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]))
    }

    /// Every condition of every parent entry of a route is at the route's generation (upstream
    /// `ConditionsHaveLatestObservedGeneration` over `status.parents`).
    fn route_parents_latest(&self, kind_: &str, route: &ObjRef) -> Result<(), String> {
        let r = self.get(kind_, route)?;
        for p in self.route_parents(kind_, route)? {
            let conds = conditions(p);
            if !conds.is_empty() {
                latest(
                    &format!(
                        "{kind_} {route} parent {}",
                        show_parent_ref(&p["parentRef"])
                    ),
                    r,
                    conds,
                )?;
            }
        }
        Ok(())
    }

    /// Upstream `HTTPRouteMustHaveCondition`: every parent's conditions are at the route's
    /// generation, and some parent entry for `gw` holds `want`.
    pub fn route_condition(&self, route: &ObjRef, gw: &ObjRef, want: &Cond) -> Result<(), String> {
        self.route_parents_latest("HTTPRoute", route)?;
        let parents = self.route_parents("HTTPRoute", route)?;
        let mut seen = Vec::new();
        for p in parents {
            let pr = &p["parentRef"];
            let ns_ok = pr["namespace"].is_null() || pr["namespace"] == gw.namespace.as_str();
            if pr["name"] == gw.name.as_str() && ns_ok {
                if has_condition(conditions(p), want) {
                    return Ok(());
                }
                seen.push(show_conditions(conditions(p)));
            }
        }
        Err(format!(
            "HTTPRoute {route} parent {gw}: want {}, have {}",
            show_want(want),
            if seen.is_empty() {
                "no parent entry".to_string()
            } else {
                seen.join(" ")
            }
        ))
    }

    /// Upstream `BackendTLSPolicyMustHaveCondition` (for any policy kind with
    /// `status.ancestors`): every ancestor's conditions carry the policy's generation, and an
    /// ancestor entry for `gw` (ancestorRef name, namespace when set) holds `want`.
    pub fn policy_condition(
        &self,
        k: &str,
        policy: &ObjRef,
        gw: &ObjRef,
        want: &Cond,
    ) -> Result<(), String> {
        let p = self.get(k, policy)?;
        let generation = p["metadata"]["generation"].as_i64().unwrap_or(1);
        let ancestors = p["status"]["ancestors"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut seen = Vec::new();
        for a in ancestors {
            if let Some(stale) = conditions(a)
                .iter()
                .find(|c| c["observedGeneration"].as_i64() != Some(generation))
            {
                return Err(format!(
                    "{k} {policy}: ancestor condition {} observedGeneration {}, want {generation}",
                    stale["type"], stale["observedGeneration"]
                ));
            }
            let r = &a["ancestorRef"];
            let ns_ok = r["namespace"].is_null() || r["namespace"] == gw.namespace.as_str();
            if r["name"] == gw.name.as_str() && ns_ok {
                if has_condition(conditions(a), want) {
                    return Ok(());
                }
                seen.push(show_conditions(conditions(a)));
            }
        }
        Err(format!(
            "{k} {policy} ancestor {gw}: want {}, have {}",
            show_want(want),
            if seen.is_empty() {
                "no ancestor entry".to_string()
            } else {
                seen.join(" ")
            }
        ))
    }

    /// The route is accepted by `gw` for each of its parentRefs that target `gw` (upstream
    /// `GatewayAndHTTPRoutesMustBeAccepted` → `RouteMustHaveParents`): every parent's conditions
    /// are at the route's generation, and for each such parentRef there is a status entry with
    /// the same name and sectionName whose parentRef is group `gateway.networking.k8s.io`, kind
    /// `Gateway` (the CRD defaults when absent, as the API server fills them in), namespace the
    /// Gateway's (required when the route lives elsewhere), with our `controllerName` and
    /// Accepted=True (reason Accepted).
    pub fn route_accepted(
        &self,
        route_doc: &Value,
        gw: &ObjRef,
        controller: &str,
    ) -> Result<(), String> {
        let k = kind(route_doc);
        let route = ObjRef::new(namespace(route_doc), name(route_doc));
        self.route_parents_latest(k, &route)?;
        let parents = self.route_parents(k, &route)?;
        let namespace_required = route.namespace != gw.namespace;
        for pref in parent_refs_to(route_doc, gw) {
            let section = pref["sectionName"].as_str();
            let entries: Vec<&Value> = parents
                .iter()
                .filter(|p| {
                    let pr = &p["parentRef"];
                    pr["name"] == gw.name.as_str() && pr["sectionName"].as_str() == section
                })
                .collect();
            let what = || {
                format!(
                    "{k} {route} parent {gw}{}",
                    section.map(|s| format!(" section {s}")).unwrap_or_default()
                )
            };
            if entries.is_empty() {
                return Err(format!("{}: no status.parents entry", what()));
            }
            let want = ParentExpect {
                gateway: gw.clone(),
                controller: controller.to_string(),
                conditions: vec![cond("Accepted", "True", "Accepted")],
            };
            let mut why = Vec::new();
            let matched = entries.iter().any(|e| {
                parent_matches(e, &want, namespace_required)
                    .map_err(|w| why.push(w))
                    .is_ok()
            });
            if !matched {
                return Err(format!("{}: {}", what(), why.join("; ")));
            }
        }
        Ok(())
    }

    /// Upstream `HTTPRouteMustHaveParents`: every parent's conditions are at the route's
    /// generation, and each expected parent has a matching `status.parents` entry: same
    /// controllerName, parentRef group and kind (Gateway API defaults when absent), name,
    /// namespace (compared when `namespace_required` or when the entry sets one), and the
    /// expected conditions present.
    pub fn route_must_have_parents(
        &self,
        route: &ObjRef,
        want: &[ParentExpect],
        namespace_required: bool,
    ) -> Result<(), String> {
        self.route_parents_latest("HTTPRoute", route)?;
        let parents = self.route_parents("HTTPRoute", route)?;
        for w in want {
            let mut why = Vec::new();
            let matched = parents.iter().any(|p| {
                parent_matches(p, w, namespace_required)
                    .map_err(|e| why.push(e))
                    .is_ok()
            });
            if !matched {
                return Err(format!(
                    "HTTPRoute {route}: no status.parents entry for {} matches ({})",
                    w.gateway,
                    if why.is_empty() {
                        "no parents".to_string()
                    } else {
                        why.join("; ")
                    }
                ));
            }
        }
        Ok(())
    }

    /// Upstream `HTTPRouteMustHaveNoAcceptedParents`: no parents, or exactly one with
    /// Accepted=False. (`polls` counts how often an empty list has been seen; upstream waits
    /// for a second look before trusting an empty list.)
    pub fn route_no_accepted_parents(
        &self,
        route: &ObjRef,
        empty_seen: bool,
    ) -> Result<(), String> {
        let parents = self.route_parents("HTTPRoute", route)?;
        if let [_] = parents {
            self.route_parents_latest("HTTPRoute", route)?;
        }
        match parents {
            [] if empty_seen => Ok(()),
            [] => Err(format!("HTTPRoute {route}: empty parents (checking again)")),
            [one] if has_condition(conditions(one), &cond("Accepted", "False", "")) => Ok(()),
            _ => Err(format!(
                "HTTPRoute {route}: want no accepted parents, have {}",
                Value::Array(parents.to_vec())
            )),
        }
    }

    /// Whether a route's status has no parents (for the two-look rule above).
    pub fn route_parents_empty(&self, route: &ObjRef) -> bool {
        self.route_parents("HTTPRoute", route)
            .map(|p| p.is_empty())
            .unwrap_or(false)
    }

    /// Every condition of every parent carries the route's current generation (upstream
    /// `HTTPRouteMustHaveLatestConditions`).
    pub fn route_latest(&self, route: &ObjRef) -> Result<(), String> {
        let r = self.get("HTTPRoute", route)?;
        let parents = r["status"]["parents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if parents.is_empty() {
            return Err(format!("HTTPRoute {route}: no status.parents"));
        }
        for p in parents {
            latest(&format!("HTTPRoute {route}"), r, conditions(p))?;
        }
        Ok(())
    }
}

/// Upstream `parentsForRouteMatch` for one entry: `Err` says what differs.
fn parent_matches(p: &Value, want: &ParentExpect, namespace_required: bool) -> Result<(), String> {
    let pr = &p["parentRef"];
    let field = |k: &str, default: &'static str| -> Option<String> {
        match &pr[k] {
            Value::Null => Some(default.to_string()),
            v => v.as_str().map(str::to_string),
        }
    };
    let here = show_parent_ref(pr);
    if p["controllerName"] != want.controller.as_str() {
        return Err(format!(
            "{here}: controllerName {}, want {:?}",
            p["controllerName"], want.controller
        ));
    }
    if field("group", GATEWAY_GROUP).as_deref() != Some(GATEWAY_GROUP) {
        return Err(format!(
            "{here}: group {}, want {GATEWAY_GROUP}",
            pr["group"]
        ));
    }
    if field("kind", "Gateway").as_deref() != Some("Gateway") {
        return Err(format!("{here}: kind {}, want Gateway", pr["kind"]));
    }
    if pr["name"] != want.gateway.name.as_str() {
        return Err(format!(
            "{here}: name {}, want {}",
            pr["name"], want.gateway.name
        ));
    }
    if (namespace_required || !pr["namespace"].is_null())
        && pr["namespace"] != want.gateway.namespace.as_str()
    {
        return Err(format!(
            "{here}: namespace {}, want {:?}",
            pr["namespace"], want.gateway.namespace
        ));
    }
    let conds = conditions(p);
    for c in &want.conditions {
        if !has_condition(conds, c) {
            return Err(format!(
                "{here}: want {}, have {}",
                show_want(c),
                show_conditions(conds)
            ));
        }
    }
    Ok(())
}

/// `namespace/name[/section]` of a status parentRef, for messages.
fn show_parent_ref(pr: &Value) -> String {
    let mut s = match pr["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", pr["name"].as_str().unwrap_or("?")),
        None => pr["name"].as_str().unwrap_or("?").to_string(),
    };
    if let Some(section) = pr["sectionName"].as_str() {
        s.push('/');
        s.push_str(section);
    }
    s
}

/// The annotation that exempts a Gateway from `NamespacesMustBeReady`.
pub const SKIP_READINESS_ANNOTATION: &str = "gateway-api/skip-this-for-readiness";

/// `Type=Status/Reason`, with `any` for an empty status and no `/Reason` for an empty reason.
fn show_want(c: &Cond) -> String {
    let status = if c.status.is_empty() { "any" } else { c.status };
    if c.reason.is_empty() {
        format!("{}={status}", c.type_)
    } else {
        format!("{}={status}/{}", c.type_, c.reason)
    }
}

fn latest(what: &str, obj: &Value, conds: &[Value]) -> Result<(), String> {
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    if conds.is_empty() {
        return Err(format!("{what}: no conditions"));
    }
    for c in conds {
        if c["observedGeneration"].as_i64() != Some(generation) {
            return Err(format!(
                "{what}: condition {} observedGeneration {}, want {generation}",
                c["type"], c["observedGeneration"]
            ));
        }
    }
    Ok(())
}

/// The parentRefs of `route_doc` that name Gateway `gw`.
pub fn parent_refs_to<'a>(route_doc: &'a Value, gw: &ObjRef) -> Vec<&'a Value> {
    let route_ns = namespace(route_doc);
    route_doc["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let k = p["kind"].as_str().unwrap_or("Gateway");
            let ns = p["namespace"].as_str().unwrap_or(route_ns);
            k == "Gateway" && ns == gw.namespace && p["name"] == gw.name.as_str()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap() -> Snapshot {
        Snapshot::from_docs(vec![
            json!({
                "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": INFRA_NS, "generation": 2},
                "spec": {"listeners": [{"name": "http", "port": 80}]},
                "status": {
                    "addresses": [{"type": "IPAddress", "value": "127.20.1.1"}],
                    "conditions": [
                        {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2},
                        {"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": 1},
                    ],
                    "listeners": [{
                        "name": "http",
                        "attachedRoutes": 1,
                        "supportedKinds": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}],
                        "conditions": [
                            {"type": "Accepted", "status": "True", "reason": "Accepted"},
                            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
                            {"type": "Programmed", "status": "True", "reason": "Programmed"},
                        ],
                    }],
                },
            }),
            json!({
                "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": INFRA_NS, "generation": 1},
                "spec": {"parentRefs": [{"name": "gw"}]},
                "status": {"parents": [{
                    "parentRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gw", "namespace": INFRA_NS},
                    "controllerName": "ctl",
                    "conditions": [
                        {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1},
                        {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "observedGeneration": 1},
                    ],
                }]},
            }),
        ])
    }

    #[test]
    fn gateway_checks() {
        let mut s = snap();
        let gw = ObjRef::infra("gw");
        assert!(
            s.gateway_latest(&gw).is_err(),
            "Programmed is at generation 1"
        );
        s.docs[0]["status"]["conditions"][1]["observedGeneration"] = json!(2);
        assert!(s.gateway_latest(&gw).is_ok());
        assert_eq!(s.gateway_address(&gw).as_deref(), Ok("127.20.1.1"));
        assert!(s.gateway_listeners_ready(&gw).is_ok());
        assert!(
            s.gateway_condition(&gw, &cond("Accepted", "True", ""))
                .is_ok()
        );
        assert!(
            s.gateway_condition(&gw, &cond("Accepted", "False", ""))
                .is_err()
        );
        let l = |kinds: &'static [&'static str], attached, c: Vec<Cond>| ListenerExpect {
            name: "http",
            supported_kinds: kinds,
            conditions: c,
            attached_routes: attached,
        };
        assert!(
            s.gateway_listeners(
                &gw,
                &[l(&["HTTPRoute"], 1, vec![cond("Accepted", "True", "")])]
            )
            .is_ok()
        );
        assert!(s.gateway_listeners(&gw, &[l(&[], 1, vec![])]).is_err());
        assert!(
            s.gateway_listeners(&gw, &[l(&["HTTPRoute"], 2, vec![])])
                .is_err()
        );
        assert!(
            s.gateway_listeners(
                &gw,
                &[l(&["HTTPRoute"], 1, vec![cond("Accepted", "True", "Nope")])]
            )
            .is_err()
        );
        assert!(s.gateway_zero_routes(&gw).is_err());
        assert!(s.get("Gateway", &ObjRef::infra("missing")).is_err());
        assert!(s.seen_generation("Gateway", &gw, 2).is_ok());
        assert!(s.seen_generation("Gateway", &gw, 3).is_err());
    }

    #[test]
    fn latest_generation_gates_listener_and_condition_checks() {
        let mut s = snap();
        let gw = ObjRef::infra("gw");
        let want = [ListenerExpect {
            name: "http",
            supported_kinds: &["HTTPRoute"],
            conditions: vec![cond("Accepted", "True", "")],
            attached_routes: 1,
        }];
        // Programmed is at generation 1 of 2: upstream helpers wait for the latest generation.
        let err = s.gateway_listeners(&gw, &want).expect_err("stale");
        assert!(err.contains("observedGeneration 1, want 2"), "{err}");
        assert!(
            s.gateway_condition(&gw, &cond("Accepted", "True", ""))
                .is_err()
        );
        s.docs[0]["status"]["conditions"][1]["observedGeneration"] = json!(2);
        assert!(s.gateway_listeners(&gw, &want).is_ok());
        assert!(
            s.gateway_condition(&gw, &cond("Accepted", "True", "Accepted"))
                .is_ok()
        );
        let err = s
            .gateway_condition(&gw, &cond("Accepted", "False", "InvalidParameters"))
            .expect_err("wrong status");
        assert!(
            err.contains("want Accepted=False/InvalidParameters"),
            "{err}"
        );
    }

    #[test]
    fn empty_status_matches_any_status() {
        let conds =
            vec![json!({"type": "Accepted", "status": "False", "reason": "InvalidParameters"})];
        assert!(has_condition(&conds, &cond("Accepted", "", "")));
        assert!(has_condition(
            &conds,
            &cond("Accepted", "", "InvalidParameters")
        ));
        assert!(!has_condition(&conds, &cond("Accepted", "True", "")));
        assert!(!has_condition(&conds, &cond("Programmed", "", "")));
        assert_eq!(show_want(&cond("Accepted", "", "")), "Accepted=any");
    }

    #[test]
    fn gateway_class_checks() {
        let class = |generation: i64, observed: i64| {
            Snapshot::from_docs(vec![json!({
                "kind": "GatewayClass",
                "metadata": {"name": "c", "generation": generation},
                "spec": {"controllerName": "ctl"},
                "status": {"conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": observed},
                ]},
            })])
        };
        let c = ObjRef::cluster("c");
        assert_eq!(c.to_string(), "c");
        let s = class(2, 2);
        assert!(s.gateway_class_latest(&c).is_ok());
        assert!(
            s.gateway_class_condition(&c, &cond("Accepted", "", ""))
                .is_ok()
        );
        assert!(s.seen_generation("GatewayClass", &c, 2).is_ok());
        let s = class(2, 1);
        assert!(s.gateway_class_latest(&c).is_err());
        assert!(
            s.gateway_class_condition(&c, &cond("Accepted", "", ""))
                .is_err()
        );
    }

    #[test]
    fn namespace_readiness() {
        let gw = |name: &str, programmed: &str, skip: bool| {
            let mut g = json!({
                "kind": "Gateway",
                "metadata": {"name": name, "namespace": INFRA_NS, "generation": 1},
                "status": {"conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1},
                    {"type": "Programmed", "status": programmed, "reason": "X", "observedGeneration": 1},
                ]},
            });
            if skip {
                g["metadata"]["annotations"] = json!({SKIP_READINESS_ANNOTATION: "true"});
            }
            g
        };
        let s = Snapshot::from_docs(vec![gw("a", "True", false), gw("b", "False", true)]);
        assert!(s.namespace_ready(INFRA_NS).is_ok(), "b is exempt");
        let s = Snapshot::from_docs(vec![gw("a", "True", false), gw("b", "False", false)]);
        let err = s.namespace_ready(INFRA_NS).expect_err("b not programmed");
        assert!(err.contains("b: want Programmed=True"), "{err}");
        assert!(s.namespace_ready("elsewhere").is_ok());
    }

    #[test]
    fn route_checks() {
        let s = snap();
        let gw = ObjRef::infra("gw");
        let r = ObjRef::infra("r");
        let route_doc = s.get("HTTPRoute", &r).expect("route").clone();
        assert!(s.route_accepted(&route_doc, &gw, "ctl").is_ok());
        assert!(s.route_accepted(&route_doc, &gw, "other").is_err());
        assert!(
            s.route_condition(&r, &gw, &cond("ResolvedRefs", "False", "BackendNotFound"))
                .is_ok()
        );
        assert!(
            s.route_condition(&r, &gw, &cond("ResolvedRefs", "False", "RefNotPermitted"))
                .is_err()
        );
        assert!(s.route_no_accepted_parents(&r, true).is_err());
        assert!(s.route_latest(&r).is_ok());
    }

    #[test]
    fn policy_ancestor_conditions() {
        let policy = |generation: i64, observed: i64| {
            Snapshot::from_docs(vec![json!({
                "kind": "BackendTLSPolicy",
                "metadata": {"name": "p", "namespace": INFRA_NS, "generation": generation},
                "status": {"ancestors": [
                    {
                        "ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gw", "namespace": INFRA_NS},
                        "controllerName": "ctl",
                        "conditions": [
                            {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": observed},
                            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": observed},
                        ],
                    },
                    {
                        "ancestorRef": {"name": "other"},
                        "controllerName": "ctl",
                        "conditions": [
                            {"type": "Accepted", "status": "False", "reason": "Conflicted", "observedGeneration": observed},
                        ],
                    },
                ]},
            })])
        };
        let s = policy(1, 1);
        let p = ObjRef::infra("p");
        let check = |s: &Snapshot, gw: &str, c: Cond| {
            s.policy_condition("BackendTLSPolicy", &p, &ObjRef::infra(gw), &c)
        };
        assert!(check(&s, "gw", cond("Accepted", "True", "Accepted")).is_ok());
        assert!(check(&s, "gw", cond("ResolvedRefs", "True", "ResolvedRefs")).is_ok());
        assert!(check(&s, "gw", cond("Accepted", "False", "Conflicted")).is_err());
        // An ancestorRef without a namespace matches the Gateway's.
        assert!(check(&s, "other", cond("Accepted", "False", "Conflicted")).is_ok());
        let err = check(&s, "missing", cond("Accepted", "True", "")).expect_err("no ancestor");
        assert!(err.contains("no ancestor entry"), "{err}");
        // A stale ancestor condition fails every check.
        let stale = policy(2, 1);
        assert!(check(&stale, "gw", cond("Accepted", "True", "Accepted")).is_err());
    }

    #[test]
    fn route_checks_need_latest_generations() {
        let mut s = snap();
        let gw = ObjRef::infra("gw");
        let r = ObjRef::infra("r");
        s.docs[1]["metadata"]["generation"] = json!(2);
        let route_doc = s.docs[1].clone();
        let err = s
            .route_accepted(&route_doc, &gw, "ctl")
            .expect_err("stale parent conditions");
        assert!(err.contains("observedGeneration 1, want 2"), "{err}");
        assert!(
            s.route_condition(&r, &gw, &cond("ResolvedRefs", "False", "BackendNotFound"))
                .is_err()
        );
        for c in s.docs[1]["status"]["parents"][0]["conditions"]
            .as_array_mut()
            .expect("conditions")
        {
            c["observedGeneration"] = json!(2);
        }
        assert!(s.route_accepted(&route_doc, &gw, "ctl").is_ok());
    }

    #[test]
    fn route_parent_refs_are_compared_like_upstream() {
        let mut s = snap();
        let gw = ObjRef::infra("gw");
        let r = ObjRef::infra("r");
        let route_doc = s.docs[1].clone();
        // The API server's defaults stand in for an absent group and kind.
        let pr = &mut s.docs[1]["status"]["parents"][0]["parentRef"];
        pr.as_object_mut().expect("ref").remove("group");
        pr.as_object_mut().expect("ref").remove("kind");
        assert!(s.route_accepted(&route_doc, &gw, "ctl").is_ok());
        s.docs[1]["status"]["parents"][0]["parentRef"]["kind"] = json!("ListenerSet");
        let err = s.route_accepted(&route_doc, &gw, "ctl").expect_err("kind");
        assert!(err.contains("kind"), "{err}");
        s.docs[1]["status"]["parents"][0]["parentRef"]["kind"] = json!("Gateway");
        // A namespace, when set, must be the Gateway's; when the route lives elsewhere it must
        // be set.
        s.docs[1]["status"]["parents"][0]["parentRef"]["namespace"] = json!("elsewhere");
        assert!(s.route_accepted(&route_doc, &gw, "ctl").is_err());
        s.docs[1]["status"]["parents"][0]["parentRef"]
            .as_object_mut()
            .expect("ref")
            .remove("namespace");
        assert!(s.route_accepted(&route_doc, &gw, "ctl").is_ok());
        let want = |conditions| {
            vec![ParentExpect {
                gateway: gw.clone(),
                controller: "ctl".into(),
                conditions,
            }]
        };
        assert!(
            s.route_must_have_parents(&r, &want(vec![cond("Accepted", "True", "")]), false)
                .is_ok()
        );
        let err = s
            .route_must_have_parents(&r, &want(vec![cond("Accepted", "True", "")]), true)
            .expect_err("namespace required");
        assert!(err.contains("namespace"), "{err}");
        s.docs[1]["status"]["parents"][0]["parentRef"]["namespace"] = json!(INFRA_NS);
        assert!(
            s.route_must_have_parents(&r, &want(vec![cond("Accepted", "True", "")]), true)
                .is_ok()
        );
        assert!(
            s.route_must_have_parents(
                &r,
                &want(vec![cond(
                    "Accepted",
                    "False",
                    "NoMatchingListenerHostname"
                )]),
                true
            )
            .is_err()
        );
        let mut other = want(vec![]);
        other[0].controller = "other".into();
        assert!(s.route_must_have_parents(&r, &other, true).is_err());
    }

    #[test]
    fn gateway_address_needs_a_typed_address_and_latest_conditions() {
        let mut s = snap();
        let gw = ObjRef::infra("gw");
        assert!(s.gateway_address(&gw).is_err(), "Programmed is stale");
        s.docs[0]["status"]["conditions"][1]["observedGeneration"] = json!(2);
        assert_eq!(s.gateway_address(&gw).as_deref(), Ok("127.20.1.1"));
        s.docs[0]["status"]["addresses"] = json!([{"value": "127.20.1.1"}]);
        assert!(s.gateway_address(&gw).is_err(), "no type");
        s.docs[0]["status"]["addresses"] =
            json!([{"value": "x"}, {"type": "IPAddress", "value": "127.20.1.2"}]);
        assert_eq!(s.gateway_address(&gw).as_deref(), Ok("127.20.1.2"));
    }
}
