//! `InferenceObjective` and `InferenceModelRewrite` in `llm-d.ai/v1alpha2`.
//!
//! An objective gives the requests that name it (header
//! [`crate::request::HEADER_OBJECTIVE`]) a priority; a rewrite maps a requested model name to
//! one of several weighted target models (see [`crate::rewrite`]). The same shapes exist in the
//! older `inference.networking.x-k8s.io` group ([`super::x_k8s`]), which convert into these.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Errors, PoolObjectReference, ValidationError};

/// Smallest allowed target weight.
pub const MIN_WEIGHT: i32 = 1;
/// Largest allowed target weight.
pub const MAX_WEIGHT: i32 = 1_000_000;

/// Desired state of an `InferenceObjective`: the priority of the requests that name it.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "llm-d.ai",
    version = "v1alpha2",
    kind = "InferenceObjective",
    plural = "inferenceobjectives",
    status = "ConditionStatus",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceObjectiveSpec {
    /// Higher is served first; negative values are allowed and mean "sheddable" (rejected with
    /// 429 when the pool is saturated). Unset counts as 0 (see [`Self::priority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The pool the objective applies to.
    pub pool_ref: PoolObjectReference,
}

impl InferenceObjectiveSpec {
    /// The priority with the default applied (unset = 0).
    pub fn priority(&self) -> i32 {
        self.priority.unwrap_or(0)
    }

    /// Checks the pool reference.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Errors::default();
        self.pool_ref.check("spec.poolRef", &mut errors);
        errors.finish()
    }
}

/// Observed state of an objective or a rewrite: its conditions (`Accepted` with reason
/// `Accepted` or `Pending`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConditionStatus {
    /// At most 8 conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Desired state of an `InferenceModelRewrite`: rules mapping requested model names to target
/// models for one pool.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "llm-d.ai",
    version = "v1alpha2",
    kind = "InferenceModelRewrite",
    plural = "inferencemodelrewrites",
    status = "ConditionStatus",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelRewriteSpec {
    /// The pool the rewrite applies to.
    pub pool_ref: PoolObjectReference,
    /// Ordered rules; precedence across rules and resources is described in
    /// [`crate::rewrite`].
    pub rules: Vec<RewriteRule>,
}

/// One rewrite rule: when any match holds (or there are no matches), choose a target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRule {
    /// Alternatives (OR). Empty: the rule matches every request (a generic rule, which loses
    /// to any exact match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<ModelRewriteMatch>,
    /// Weighted targets (at least one).
    #[serde(default)]
    pub targets: Vec<TargetModel>,
}

/// A match on the request body's `model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRewriteMatch {
    /// The model criterion.
    pub model: ModelMatch,
}

/// How to compare the request's model name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelMatch {
    /// Only `Exact` exists. Default: `Exact`.
    #[serde(default, rename = "type")]
    pub match_type: MatchType,
    /// The model name (not empty).
    pub value: String,
}

/// Kind of model-name comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchType {
    /// Byte-for-byte equality (the default and only value).
    #[default]
    Exact,
}

/// A weighted destination model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetModel {
    /// The model name written into the request.
    pub model_rewrite: String,
    /// Share = weight / sum of the rule's weights; 1..=1,000,000. Set on all targets of a rule
    /// or on none (none: equal shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

impl InferenceModelRewriteSpec {
    /// Checks the pool reference and the rules: at least one rule; each rule has at least one
    /// target, targets with a non-empty `modelRewrite`, weights in 1..=1,000,000 set on all
    /// targets or none; each match has a non-empty value. Returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Errors::default();
        self.pool_ref.check("spec.poolRef", &mut errors);
        if self.rules.is_empty() {
            errors.push("spec.rules", "must have at least one rule");
        }
        for (r, rule) in self.rules.iter().enumerate() {
            for (m, matched) in rule.matches.iter().enumerate() {
                if matched.model.value.is_empty() {
                    errors.push(
                        format!("spec.rules[{r}].matches[{m}].model.value"),
                        "must not be empty",
                    );
                }
            }
            if rule.targets.is_empty() {
                errors.push(
                    format!("spec.rules[{r}].targets"),
                    "must have at least one target",
                );
            }
            let weighted: BTreeSet<bool> =
                rule.targets.iter().map(|t| t.weight.is_some()).collect();
            if weighted.len() > 1 {
                errors.push(
                    format!("spec.rules[{r}].targets"),
                    "weight must be set on all targets or on none",
                );
            }
            for (t, target) in rule.targets.iter().enumerate() {
                if target.model_rewrite.is_empty() {
                    errors.push(
                        format!("spec.rules[{r}].targets[{t}].modelRewrite"),
                        "must not be empty",
                    );
                }
                if let Some(w) = target.weight
                    && !(MIN_WEIGHT..=MAX_WEIGHT).contains(&w)
                {
                    errors.push(
                        format!("spec.rules[{r}].targets[{t}].weight"),
                        format!("must be in {MIN_WEIGHT}..={MAX_WEIGHT}"),
                    );
                }
            }
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(model: &str, weight: Option<i32>) -> TargetModel {
        TargetModel {
            model_rewrite: model.into(),
            weight,
        }
    }

    #[test]
    fn objective_priority_defaults_to_zero() {
        let spec: InferenceObjectiveSpec =
            serde_json::from_str(r#"{"poolRef":{"name":"pool"}}"#).unwrap();
        assert_eq!(spec.priority(), 0);
        assert!(spec.validate().is_ok());
        let spec: InferenceObjectiveSpec =
            serde_json::from_str(r#"{"priority":-1,"poolRef":{"name":"pool"}}"#).unwrap();
        assert_eq!(spec.priority(), -1);
    }

    #[test]
    fn rewrite_validation() {
        let mut spec = InferenceModelRewriteSpec {
            pool_ref: PoolObjectReference::new("pool"),
            rules: vec![RewriteRule {
                matches: vec![ModelRewriteMatch {
                    model: ModelMatch {
                        match_type: MatchType::Exact,
                        value: "llama".into(),
                    },
                }],
                targets: vec![target("llama-v1", Some(90)), target("llama-v2", Some(10))],
            }],
        };
        assert!(spec.validate().is_ok());
        spec.rules[0].targets[1].weight = None;
        spec.rules[0].targets[0].weight = Some(0);
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec!["spec.rules[0].targets", "spec.rules[0].targets[0].weight"]
        );
        spec.rules[0].targets = vec![target("", Some(2_000_000))];
        spec.rules[0].matches[0].model.value.clear();
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.rules[0].matches[0].model.value",
                "spec.rules[0].targets[0].modelRewrite",
                "spec.rules[0].targets[0].weight"
            ]
        );
        spec.rules[0].targets.clear();
        assert!(spec.validate().is_err());
        spec.rules.clear();
        assert_eq!(spec.validate().unwrap_err().errors[0].field, "spec.rules");
    }
}
