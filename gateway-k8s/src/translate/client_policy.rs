//! ClientTrafficPolicy (`gateway.pingora-gateway.dev/v1alpha1`): request path normalisation of
//! the listeners of the Gateways it targets.
//!
//! Each target is decided on its own, oldest policy first (creation time, then namespace/name):
//! - `Invalid`: the spec does not parse, or the target is not a `gateway.networking.k8s.io`
//!   Gateway. An invalid policy applies nowhere; nothing else is affected.
//! - `TargetNotFound`: no such Gateway in the policy's namespace, or no such listener.
//! - `Conflicted`: an older policy already targets the same Gateway (or the same listener).
//! - `Accepted`: the settings apply to the listener named by `sectionName`, or to every listener
//!   of the Gateway that no listener-level policy overrides.
//!
//! Targets on Gateways of another controller are left alone: no effect and no status entry.

use std::collections::{BTreeMap, BTreeSet};

use gateway_core::config::{EscapedSlashesAction, PathNormalization};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::listener::Problem;
use crate::crds::{
    CLIENT_TRAFFIC_POLICY_KIND, ClientTrafficPolicySpec, DIRECT_RESPONSE_GROUP,
    EscapedSlashesAction as CrdAction, PolicyAncestorRef, PolicyTargetRef,
};
use crate::diagnostic::Diagnostic;
use crate::resources::{GATEWAY_GROUP, ObjectKey, Resources};

/// A (Gateway, listener) pair; `None` names the whole Gateway.
type Target = (ObjectKey, Option<String>);

/// What was decided about one policy, for its status: `K` names the policy (an [`ObjectKey`]
/// for a kind of this crate, a `GenericKey` for a filter policy kind).
#[derive(Clone, Debug)]
pub(crate) struct PolicyPlan<K> {
    pub key: K,
    pub generation: Option<i64>,
    /// One entry per reported target: the ancestor and `Ok(message)` or `Err` (reason, message).
    pub ancestors: Vec<(PolicyAncestorRef, Result<String, Problem>)>,
}

/// What was decided about one ClientTrafficPolicy.
pub(crate) type ClientPolicyPlan = PolicyPlan<ObjectKey>;

/// Every ClientTrafficPolicy, decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientPolicies {
    pub plans: Vec<ClientPolicyPlan>,
    /// The path normalisation of each listener a policy applies to, by Gateway and listener name.
    pub path: BTreeMap<(ObjectKey, String), PathNormalization>,
    /// Policies whose target list cannot be read: no status can be written for them.
    pub diagnostics: Vec<Diagnostic>,
}

impl ClientPolicies {
    /// The path normalisation of listener `listener` of Gateway `gateway`: its policy's, or the
    /// default.
    pub fn path_of(&self, gateway: &ObjectKey, listener: &str) -> PathNormalization {
        self.path
            .get(&(gateway.clone(), listener.to_string()))
            .copied()
            .unwrap_or_default()
    }
}

/// A policy read from its document.
struct Parsed<'a> {
    key: ObjectKey,
    meta: ObjectMeta,
    targets: Vec<PolicyTargetRef>,
    /// The settings, or why the spec is invalid.
    effect: Result<PathNormalization, String>,
    raw: &'a Value,
}

/// Decides every ClientTrafficPolicy against the Gateways of this controller (`ours`: Gateway ->
/// its listener names).
pub(crate) fn plan(
    resources: &Resources,
    ours: &BTreeMap<ObjectKey, Vec<String>>,
) -> ClientPolicies {
    let mut out = ClientPolicies::default();
    let mut policies = Vec::new();
    for (key, object) in &resources.others {
        if key.group != DIRECT_RESPONSE_GROUP || key.kind != CLIENT_TRAFFIC_POLICY_KIND {
            continue;
        }
        let raw = &object.object;
        let meta = object_meta(raw);
        let targets = raw
            .pointer("/spec/targetRefs")
            .cloned()
            .map(serde_json::from_value::<Vec<PolicyTargetRef>>);
        let targets = match targets {
            Some(Ok(t)) => t,
            _ => {
                out.diagnostics.push(Diagnostic::document(
                    &object.origin,
                    object.document,
                    format!(
                        "ClientTrafficPolicy {}/{}: spec.targetRefs is missing or unreadable; the policy applies nowhere",
                        key.namespace, key.name
                    ),
                ));
                continue;
            }
        };
        policies.push(Parsed {
            key: ObjectKey::new(key.namespace.clone(), key.name.clone()),
            meta,
            targets,
            effect: effect(raw),
            raw,
        });
    }
    policies.sort_by_key(|p| (super::created_seconds(&p.meta), p.key.clone()));

    let mut claimed: BTreeMap<Target, (ObjectKey, PathNormalization)> = BTreeMap::new();
    // (policy index, ancestor index) of each accepted Gateway-wide target, to note overrides.
    let mut gateway_wide = Vec::new();
    for (index, policy) in policies.iter().enumerate() {
        let mut ancestors = Vec::new();
        for target in policy.targets.iter().take(16) {
            let gateway = ObjectKey::new(policy.key.namespace.clone(), target.name.clone());
            let exists = resources.gateways.contains_key(&gateway);
            let listeners = ours.get(&gateway);
            if exists && listeners.is_none() {
                // Another controller's Gateway.
                continue;
            }
            let ancestor = PolicyAncestorRef {
                group: GATEWAY_GROUP.to_string(),
                kind: "Gateway".to_string(),
                namespace: gateway.namespace.clone(),
                name: gateway.name.clone(),
                section_name: target.section_name.clone(),
            };
            let outcome = decide(policy, target, &gateway, listeners, &claimed);
            if let Ok(effect) = outcome {
                let slot = (gateway.clone(), target.section_name.clone());
                claimed.insert(slot, (policy.key.clone(), effect));
                if target.section_name.is_none() {
                    gateway_wide.push((index, ancestors.len()));
                }
            }
            ancestors.push((ancestor, outcome.map(|_| "policy applied".to_string())));
        }
        out.plans.push(ClientPolicyPlan {
            key: policy.key.clone(),
            generation: policy
                .raw
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            ancestors,
        });
    }

    // Listener-level policies override Gateway-wide ones.
    for (gateway, listeners) in ours {
        for listener in listeners {
            let own = claimed.get(&(gateway.clone(), Some(listener.clone())));
            let wide = claimed.get(&(gateway.clone(), None));
            if let Some((_, effect)) = own.or(wide) {
                out.path
                    .insert((gateway.clone(), listener.clone()), *effect);
            }
        }
    }
    for (index, ancestor) in gateway_wide {
        let plan = &mut out.plans[index];
        let (gateway_ref, outcome) = &mut plan.ancestors[ancestor];
        let gateway = ObjectKey::new(gateway_ref.namespace.clone(), gateway_ref.name.clone());
        let overridden: BTreeSet<String> = claimed
            .iter()
            .filter_map(|((g, section), (owner, _))| {
                let section = section.as_ref()?;
                (g == &gateway).then(|| format!("{section} (by {owner})"))
            })
            .collect();
        if !overridden.is_empty() {
            *outcome = Ok(format!(
                "policy applied, except on listeners overridden by listener-level policies: {}",
                overridden.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out
}

/// The metadata of an untyped object; the default when it has none or it does not parse.
pub(super) fn object_meta(raw: &Value) -> ObjectMeta {
    raw.get("metadata")
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default()
}

fn decide(
    policy: &Parsed<'_>,
    target: &PolicyTargetRef,
    gateway: &ObjectKey,
    listeners: Option<&Vec<String>>,
    claimed: &BTreeMap<Target, (ObjectKey, PathNormalization)>,
) -> Result<PathNormalization, Problem> {
    let effect = policy.effect.clone().map_err(|m| ("Invalid", m))?;
    if target.group != GATEWAY_GROUP || target.kind != "Gateway" {
        return Err((
            "Invalid",
            format!(
                "target {}/{} {} is not a Gateway",
                target.group, target.kind, target.name
            ),
        ));
    }
    let Some(listeners) = listeners else {
        return Err((
            "TargetNotFound",
            format!("Gateway {gateway} does not exist"),
        ));
    };
    if let Some(section) = &target.section_name
        && !listeners.contains(section)
    {
        return Err((
            "TargetNotFound",
            format!("Gateway {gateway} has no listener {section}"),
        ));
    }
    let slot = (gateway.clone(), target.section_name.clone());
    if let Some((owner, _)) = claimed.get(&slot) {
        let what = match &target.section_name {
            Some(section) => format!("listener {section} of Gateway {gateway}"),
            None => format!("Gateway {gateway}"),
        };
        return Err((
            "Conflicted",
            format!("{what} is already targeted by the older policy {owner}"),
        ));
    }
    Ok(effect)
}

/// The path normalisation a policy document gives, or why its spec is invalid.
fn effect(raw: &Value) -> Result<PathNormalization, String> {
    let spec = raw
        .get("spec")
        .cloned()
        .ok_or_else(|| "the policy has no spec".to_string())?;
    let spec: ClientTrafficPolicySpec =
        serde_json::from_value(spec).map_err(|e| format!("invalid spec: {e}"))?;
    let mut path = PathNormalization::default();
    if let Some(p) = &spec.path {
        if let Some(action) = p.escaped_slashes_action {
            path.escaped_slashes = match action {
                CrdAction::KeepUnchanged => EscapedSlashesAction::KeepUnchanged,
                CrdAction::RejectRequest => EscapedSlashesAction::RejectRequest,
                CrdAction::UnescapeAndForward => EscapedSlashesAction::UnescapeAndForward,
                CrdAction::UnescapeAndRedirect => EscapedSlashesAction::UnescapeAndRedirect,
            };
        }
        path.merge_slashes = !p.disable_merge_slashes.unwrap_or(false);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).expect("yaml")
    }

    #[test]
    fn effect_maps_every_field_and_defaults() {
        let p = effect(&doc("spec: {targetRefs: []}")).expect("valid");
        assert_eq!(p, PathNormalization::default());
        let p = effect(&doc(
            "spec:\n  targetRefs: []\n  path: {escapedSlashesAction: KeepUnchanged, disableMergeSlashes: true}\n",
        ))
        .expect("valid");
        assert_eq!(p.escaped_slashes, EscapedSlashesAction::KeepUnchanged);
        assert!(!p.merge_slashes);
        for (name, want) in [
            ("RejectRequest", EscapedSlashesAction::RejectRequest),
            (
                "UnescapeAndForward",
                EscapedSlashesAction::UnescapeAndForward,
            ),
            (
                "UnescapeAndRedirect",
                EscapedSlashesAction::UnescapeAndRedirect,
            ),
        ] {
            let p = effect(&doc(&format!(
                "spec:\n  targetRefs: []\n  path: {{escapedSlashesAction: {name}}}\n"
            )))
            .expect("valid");
            assert_eq!(p.escaped_slashes, want);
            assert!(p.merge_slashes);
        }
        let e = effect(&doc(
            "spec:\n  targetRefs: []\n  path: {escapedSlashesAction: Whatever}\n",
        ))
        .expect_err("invalid");
        assert!(e.contains("Whatever"), "{e}");
        assert!(
            effect(&doc(
                "spec:\n  targetRefs: []\n  path: {disableMergeSlashes: 3}\n"
            ))
            .is_err()
        );
    }
}
