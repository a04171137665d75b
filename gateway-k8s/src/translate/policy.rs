//! XBackendTrafficPolicy: a retry budget and session persistence for the Services it targets.
//!
//! Policies are taken oldest first (creation time, then namespace/name). A policy applies to its
//! targets when it is valid, every target is a core Service that exists in the policy's namespace,
//! and no older policy already claimed one of them; otherwise it applies to none and its
//! `Accepted` condition says why (`Invalid`, `TargetNotFound`, `Conflicted`).

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::experimental::xbackendtrafficpolicies::{
    XBackendTrafficPolicySessionPersistenceCookieConfigLifetimeType,
    XBackendTrafficPolicySessionPersistenceType,
};
use gateway_core::config::{BackendPolicy, RetryBudget, SessionKind};

use super::backend::BackendPolicies;
use super::listener::Problem;
use super::route::{parse_duration, session_persistence};
use crate::crds::{XBackendTrafficPolicy, XBackendTrafficPolicySpec};
use crate::resources::{ObjectKey, Resources};

/// What was decided about one policy.
#[derive(Clone, Debug)]
pub(crate) struct PolicyPlan {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    /// The targeted Services (existing or not).
    pub targets: Vec<ObjectKey>,
    /// `Err`: `Accepted=False` with this reason and message.
    pub outcome: Result<(), Problem>,
}

/// Plans every policy and returns the backend policy of each targeted Service.
pub(crate) fn plan(resources: &Resources) -> (Vec<PolicyPlan>, BackendPolicies) {
    let mut policies: Vec<(&ObjectKey, &XBackendTrafficPolicy)> = resources
        .backend_traffic_policies
        .iter()
        .map(|(k, o)| (k, &o.object))
        .collect();
    policies.sort_by_key(|(key, p)| (super::created_seconds(&p.metadata), (*key).clone()));

    let mut claimed: BTreeMap<ObjectKey, ObjectKey> = BTreeMap::new();
    let mut effects = BackendPolicies::new();
    let mut plans = Vec::new();
    for (key, policy) in policies {
        let targets: Vec<ObjectKey> = policy
            .spec
            .target_refs
            .iter()
            .map(|t| ObjectKey::new(key.namespace.clone(), t.name.clone()))
            .collect();
        let outcome = decide(resources, key, &policy.spec, &claimed);
        match &outcome {
            Ok(effect) => {
                for target in &targets {
                    claimed.insert(target.clone(), key.clone());
                    effects.insert(target.clone(), effect.clone());
                }
            }
            Err((reason, message)) => {
                tracing::debug!(policy = %key, reason, message, "XBackendTrafficPolicy not applied");
            }
        }
        plans.push(PolicyPlan {
            key: key.clone(),
            generation: policy.metadata.generation,
            targets,
            outcome: outcome.map(|_| ()),
        });
    }
    (plans, effects)
}

fn decide(
    resources: &Resources,
    key: &ObjectKey,
    spec: &XBackendTrafficPolicySpec,
    claimed: &BTreeMap<ObjectKey, ObjectKey>,
) -> Result<BackendPolicy, Problem> {
    let effect = effect(spec).map_err(|m| ("Invalid", m))?;
    if spec.target_refs.is_empty() {
        return Err(("Invalid", "the policy has no targetRefs".to_string()));
    }
    for t in &spec.target_refs {
        if !t.group.is_empty() || t.kind != "Service" {
            return Err((
                "Invalid",
                format!(
                    "target {}/{} {} is not a core Service",
                    t.group, t.kind, t.name
                ),
            ));
        }
        let target = ObjectKey::new(key.namespace.clone(), t.name.clone());
        if !resources.services.contains_key(&target) {
            return Err(("TargetNotFound", format!("Service {target} does not exist")));
        }
        if let Some(owner) = claimed.get(&target) {
            return Err((
                "Conflicted",
                format!("Service {target} is already targeted by the older policy {owner}"),
            ));
        }
    }
    Ok(effect)
}

/// The backend policy a valid spec gives.
fn effect(spec: &XBackendTrafficPolicySpec) -> Result<BackendPolicy, String> {
    let mut policy = BackendPolicy::default();
    if let Some(rc) = &spec.retry_constraint {
        let mut budget = RetryBudget::default();
        if let Some(b) = &rc.budget {
            if let Some(p) = b.percent {
                budget.percent = u32::try_from(p)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("retry budget percent {p} is outside 0-100"))?;
            }
            if let Some(interval) = &b.interval {
                budget.interval = parse_duration(interval)
                    .map_err(|e| format!("retry budget interval: {e}"))?
                    .ok_or_else(|| "retry budget interval must not be zero".to_string())?;
            }
        }
        if let Some(rate) = &rc.min_retry_rate {
            let count = rate.count.unwrap_or(10);
            let count = u64::try_from(count)
                .map_err(|_| format!("minRetryRate count {count} is negative"))?;
            let interval = match &rate.interval {
                Some(i) => parse_duration(i)
                    .map_err(|e| format!("minRetryRate interval: {e}"))?
                    .ok_or_else(|| "minRetryRate interval must not be zero".to_string())?,
                None => std::time::Duration::from_secs(1),
            };
            // Retries per second, rounded up, at least one.
            let millis = u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let per_second = count.saturating_mul(1000).div_ceil(millis).max(1);
            budget.min_retries_per_second = u32::try_from(per_second).unwrap_or(u32::MAX);
        }
        policy.retry_budget = Some(budget);
    }
    if let Some(s) = &spec.session_persistence {
        let kind = match s.r#type {
            Some(XBackendTrafficPolicySessionPersistenceType::Header) => SessionKind::Header,
            Some(XBackendTrafficPolicySessionPersistenceType::Cookie) | None => SessionKind::Cookie,
        };
        let permanent = s
            .cookie_config
            .as_ref()
            .and_then(|c| c.lifetime_type.as_ref())
            == Some(&XBackendTrafficPolicySessionPersistenceCookieConfigLifetimeType::Permanent);
        policy.session_persistence = Some(session_persistence(
            kind,
            s.session_name.as_deref(),
            s.absolute_timeout.as_deref(),
            s.idle_timeout.as_deref(),
            permanent,
        )?);
    }
    Ok(policy)
}

/// The Gateways each policy is relevant to: those serving a route that refers to one of its
/// targets. At most 16, as the status schema allows.
pub(crate) fn ancestors(
    plan: &PolicyPlan,
    service_gateways: &BTreeMap<ObjectKey, BTreeMap<ObjectKey, usize>>,
) -> Vec<ObjectKey> {
    let gateways: BTreeSet<&ObjectKey> = plan
        .targets
        .iter()
        .filter_map(|t| service_gateways.get(t))
        .flat_map(BTreeMap::keys)
        .collect();
    gateways.into_iter().take(16).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> XBackendTrafficPolicySpec {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("yaml");
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn retry_budget_rounds_the_minimum_rate_up() {
        let p = effect(&spec(
            "targetRefs: []\nretryConstraint:\n  budget: {percent: 35, interval: 20s}\n  minRetryRate: {count: 7, interval: 2s}\n",
        ))
        .expect("valid");
        let budget = p.retry_budget.expect("budget");
        assert_eq!(budget.percent, 35);
        assert_eq!(budget.interval, std::time::Duration::from_secs(20));
        assert_eq!(budget.min_retries_per_second, 4);

        let p = effect(&spec(
            "targetRefs: []\nretryConstraint:\n  minRetryRate: {count: 1, interval: 1m}\n",
        ))
        .expect("valid");
        let budget = p.retry_budget.expect("budget");
        assert_eq!(budget.min_retries_per_second, 1);
        assert_eq!(budget.percent, RetryBudget::default().percent);

        assert!(
            effect(&spec(
                "targetRefs: []\nretryConstraint:\n  budget: {percent: 101}\n"
            ))
            .is_err()
        );
        assert!(
            effect(&spec(
                "targetRefs: []\nretryConstraint:\n  budget: {interval: 0s}\n"
            ))
            .is_err()
        );
    }
}
