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

/// An expected condition; an empty `reason` accepts any reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// `"True"` or `"False"`.
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
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn conditions(v: &Value) -> &[Value] {
    v["conditions"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether `conds` holds `want` (type and status; reason when given).
pub fn has_condition(conds: &[Value], want: &Cond) -> bool {
    conds.iter().any(|c| {
        c["type"] == want.type_
            && c["status"] == want.status
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

    /// `status.addresses[0].value` of a Gateway, when its type is IPAddress or absent.
    pub fn gateway_address(&self, gw: &ObjRef) -> Result<String, String> {
        let g = self.get("Gateway", gw)?;
        g["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"].is_null() || a["type"] == "IPAddress")
            .and_then(|a| a["value"].as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("Gateway {gw} has no IPAddress in status.addresses"))
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

    /// Gateway-level condition (upstream `GatewayMustHaveCondition`).
    pub fn gateway_condition(&self, gw: &ObjRef, want: &Cond) -> Result<(), String> {
        let g = self.get("Gateway", gw)?;
        let conds = conditions(&g["status"]);
        if has_condition(conds, want) {
            Ok(())
        } else {
            Err(format!(
                "Gateway {gw}: want {}={}{}, have {}",
                want.type_,
                want.status,
                reason_suffix(want),
                show_conditions(conds)
            ))
        }
    }

    /// All Gateway conditions carry `observedGeneration == metadata.generation`
    /// (upstream `GatewayMustHaveLatestConditions`).
    pub fn gateway_latest(&self, gw: &ObjRef) -> Result<(), String> {
        let g = self.get("Gateway", gw)?;
        latest(&format!("Gateway {gw}"), g, conditions(&g["status"]))
    }

    /// Upstream `GatewayStatusMustHaveListeners`: same count, matched by name, expected kinds
    /// present (empty means none), exact attachedRoutes, expected conditions present.
    pub fn gateway_listeners(&self, gw: &ObjRef, want: &[ListenerExpect]) -> Result<(), String> {
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
                        "Gateway {gw} listener {}: want {}={}{}, have {}",
                        w.name,
                        c.type_,
                        c.status,
                        reason_suffix(c),
                        show_conditions(conditions(l))
                    ));
                }
            }
        }
        Ok(())
    }

    /// Upstream `GatewayMustHaveZeroRoutes`: no listener statuses, or one with 0 attached.
    pub fn gateway_zero_routes(&self, gw: &ObjRef) -> Result<(), String> {
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

    /// Upstream `HTTPRouteMustHaveCondition`: some parent entry for `gw` holds `want`.
    pub fn route_condition(&self, route: &ObjRef, gw: &ObjRef, want: &Cond) -> Result<(), String> {
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
            "HTTPRoute {route} parent {gw}: want {}={}{}, have {}",
            want.type_,
            want.status,
            reason_suffix(want),
            if seen.is_empty() {
                "no parent entry".to_string()
            } else {
                seen.join(" ")
            }
        ))
    }

    /// The route is accepted by `gw` for each of its parentRefs that target `gw`: a parent
    /// status entry with the same name/sectionName, our `controllerName` and Accepted=True
    /// (reason Accepted). Upstream `GatewayAndHTTPRoutesMustBeAccepted`.
    pub fn route_accepted(
        &self,
        route_doc: &Value,
        gw: &ObjRef,
        controller: &str,
    ) -> Result<(), String> {
        let route = ObjRef::new(namespace(route_doc), name(route_doc));
        let parents = self.route_parents(kind(route_doc), &route)?;
        for pref in parent_refs_to(route_doc, gw) {
            let section = pref["sectionName"].as_str();
            let entry = parents.iter().find(|p| {
                let pr = &p["parentRef"];
                let ns_ok = pr["namespace"].is_null() || pr["namespace"] == gw.namespace.as_str();
                pr["name"] == gw.name.as_str() && ns_ok && pr["sectionName"].as_str() == section
            });
            let Some(entry) = entry else {
                return Err(format!(
                    "{} {route}: no status.parents entry for {gw}{}",
                    kind(route_doc),
                    section.map(|s| format!(" section {s}")).unwrap_or_default()
                ));
            };
            if entry["controllerName"] != controller {
                return Err(format!(
                    "{} {route}: parent {gw} controllerName {}, want {controller:?}",
                    kind(route_doc),
                    entry["controllerName"]
                ));
            }
            if !has_condition(conditions(entry), &cond("Accepted", "True", "Accepted")) {
                return Err(format!(
                    "{} {route}: parent {gw}: want Accepted=True/Accepted, have {}",
                    kind(route_doc),
                    show_conditions(conditions(entry))
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

fn reason_suffix(c: &Cond) -> String {
    if c.reason.is_empty() {
        String::new()
    } else {
        format!("/{}", c.reason)
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
        let s = snap();
        let gw = ObjRef::infra("gw");
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
        assert!(
            s.gateway_latest(&gw).is_err(),
            "Programmed is at generation 1"
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
}
