//! The status assertions of the Inference Extension suite (upstream
//! `conformance/utils/kubernetes`), evaluated against the gateway's status file.

use serde_json::Value;

use crate::status::{Cond, ObjRef, Snapshot, cond, has_condition};

/// One status assertion of an Inference Extension test.
#[derive(Clone, Debug, PartialEq)]
pub enum InfCheck {
    /// `HTTPRouteMustHaveCondition` (route, gateway, condition).
    Route(ObjRef, ObjRef, Cond),
    /// `InferencePoolMustHaveCondition` (pool, gateway, condition): the pool's
    /// `status.parents` entry for the Gateway holds the condition (reason "" = any).
    Pool(ObjRef, ObjRef, Cond),
    /// `InferencePoolMustHaveOneOfConditions`: as [`InfCheck::Pool`], any one of them.
    PoolAnyOf(ObjRef, ObjRef, Vec<Cond>),
    /// `InferencePoolMustHaveNoParents`: no `status.parents` entry (or no status at all).
    PoolNoParents(ObjRef),
}

/// `HTTPRouteMustBeAcceptedAndResolved`: `Accepted=True/Accepted` and
/// `ResolvedRefs=True/ResolvedRefs` for the Gateway.
pub fn route_accepted_and_resolved(route: &ObjRef, gw: &ObjRef) -> Vec<InfCheck> {
    vec![
        InfCheck::Route(
            route.clone(),
            gw.clone(),
            cond("Accepted", "True", "Accepted"),
        ),
        InfCheck::Route(
            route.clone(),
            gw.clone(),
            cond("ResolvedRefs", "True", "ResolvedRefs"),
        ),
    ]
}

/// `InferencePoolMustBeAcceptedByParent`: `Accepted=True/Accepted` for the Gateway.
pub fn pool_accepted(pool: &ObjRef, gw: &ObjRef) -> InfCheck {
    InfCheck::Pool(
        pool.clone(),
        gw.clone(),
        cond("Accepted", "True", "Accepted"),
    )
}

fn show(conds: &[Value]) -> String {
    let parts: Vec<String> = conds
        .iter()
        .map(|c| {
            format!(
                "{}={}/{}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn show_want(c: &Cond) -> String {
    format!(
        "{}={}/{}",
        c.type_,
        c.status,
        if c.reason.is_empty() { "*" } else { c.reason }
    )
}

/// The pool's `status.parents` (empty when the pool has no status in the file).
fn pool_parents<'a>(s: &'a Snapshot, pool: &ObjRef) -> &'a [Value] {
    s.get("InferencePool", pool)
        .ok()
        .and_then(|p| p["status"]["parents"].as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn pool_any_of(s: &Snapshot, pool: &ObjRef, gw: &ObjRef, wants: &[Cond]) -> Result<(), String> {
    s.get("InferencePool", pool)?;
    let parents = pool_parents(s, pool);
    let mut seen = Vec::new();
    for p in parents {
        let pr = &p["parentRef"];
        let ns_ok = pr["namespace"].is_null() || pr["namespace"] == gw.namespace.as_str();
        if pr["name"] != gw.name.as_str() || !ns_ok {
            continue;
        }
        let conds = p["conditions"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if wants.iter().any(|w| has_condition(conds, w)) {
            return Ok(());
        }
        seen.push(show(conds));
    }
    let wanted: Vec<String> = wants.iter().map(show_want).collect();
    Err(format!(
        "InferencePool {pool} parent {gw}: want {}, have {}",
        wanted.join(" or "),
        if seen.is_empty() {
            format!("no parent entry ({} entries)", parents.len())
        } else {
            seen.join(" ")
        }
    ))
}

impl InfCheck {
    /// Evaluates the check on one snapshot of the status file.
    pub fn eval(&self, s: &Snapshot) -> Result<(), String> {
        match self {
            InfCheck::Route(r, gw, c) => s.route_condition(r, gw, c),
            InfCheck::Pool(p, gw, c) => pool_any_of(s, p, gw, std::slice::from_ref(c)),
            InfCheck::PoolAnyOf(p, gw, cs) => pool_any_of(s, p, gw, cs),
            InfCheck::PoolNoParents(p) => {
                let parents = pool_parents(s, p);
                if parents.is_empty() {
                    Ok(())
                } else {
                    let names: Vec<String> = parents
                        .iter()
                        .map(|e| e["parentRef"]["name"].as_str().unwrap_or("?").to_string())
                        .collect();
                    Err(format!(
                        "InferencePool {p}: want no parents, have {}",
                        names.join(", ")
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(parents: Value) -> Snapshot {
        Snapshot::from_docs(vec![json!({
            "kind": "InferencePool",
            "metadata": {"name": "pool", "namespace": "app"},
            "status": {"parents": parents},
        })])
    }

    #[test]
    fn pool_conditions_are_read_per_parent() {
        let gw = ObjRef::new("infra", "primary");
        let other = ObjRef::new("infra", "secondary");
        let pool = ObjRef::new("app", "pool");
        let s = snapshot(json!([{
            "parentRef": {"name": "primary", "namespace": "infra"},
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted"},
                {"type": "ResolvedRefs", "status": "False", "reason": "InvalidExtensionRef"},
            ],
        }]));
        assert!(pool_accepted(&pool, &gw).eval(&s).is_ok());
        assert!(pool_accepted(&pool, &other).eval(&s).is_err());
        assert!(
            InfCheck::Pool(pool.clone(), gw.clone(), cond("ResolvedRefs", "False", ""))
                .eval(&s)
                .is_ok()
        );
        let any = InfCheck::PoolAnyOf(
            pool.clone(),
            gw.clone(),
            vec![
                cond("Accepted", "False", "EndpointPickerRefMissing"),
                cond("ResolvedRefs", "False", ""),
            ],
        );
        assert!(any.eval(&s).is_ok());
        let err = InfCheck::PoolNoParents(pool.clone())
            .eval(&s)
            .expect_err("has a parent");
        assert!(err.contains("primary"), "{err}");
        assert!(
            InfCheck::PoolNoParents(pool)
                .eval(&snapshot(json!([])))
                .is_ok()
        );
    }
}
