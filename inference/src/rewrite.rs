//! `InferenceModelRewrite` resolution: which target model a request for a model is sent as.
//!
//! [`ModelRewrites::new`] compiles the (valid) rewrites of one pool into a lookup table when the
//! configuration changes; [`ModelRewrites::resolve`] runs per request without allocating.
//! Precedence, as upstream defines it:
//! 1. a rule with an `Exact` match on the requested model beats a rule with no matches (which
//!    applies to every model);
//! 2. between resources, the oldest (creation timestamp; equal or missing timestamps are
//!    ordered by `namespace/name`, missing timestamps last) wins;
//! 3. within a resource, the first matching rule wins.
//!
//! Then one target of the winning rule is chosen with probability weight / sum of weights
//! (unset weights count 1 each). The caller passes the random number ([`Targets::pick`]) or a
//! generator ([`Targets::pick_with`]), so tests are deterministic.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::Rng;

use crate::crd::llmd::InferenceModelRewriteSpec;

/// One rewrite resource as input to [`ModelRewrites::new`].
#[derive(Clone, Debug)]
pub struct RewriteSource {
    /// `namespace/name`, for ordering ties and logs.
    pub key: String,
    /// `metadata.creationTimestamp` (unset sorts after every set one).
    pub created: Option<Time>,
    /// The spec (x-k8s specs convert with `into()`).
    pub spec: InferenceModelRewriteSpec,
}

/// The weighted targets of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets {
    /// `(model, weight)`; weights are at least 1.
    models: Vec<(String, u64)>,
    total: u64,
    /// The resource the rule came from (`namespace/name`).
    source: String,
}

impl Targets {
    /// The target for a uniformly random `r`: the weight range `r` falls into, where `r` is
    /// scaled onto the sum of the weights.
    pub fn pick(&self, r: u32) -> &str {
        let point = (u64::from(r) * self.total) >> 32;
        let mut acc = 0;
        for (model, weight) in &self.models {
            acc += weight;
            if point < acc {
                return model;
            }
        }
        // Unreachable for total > 0 (point < total); keeps the function total.
        &self.models[self.models.len() - 1].0
    }

    /// [`Self::pick`] with a number drawn from `rng`.
    pub fn pick_with<R: Rng + ?Sized>(&self, rng: &mut R) -> &str {
        self.pick(rng.random())
    }

    /// The `(model, weight)` pairs in spec order.
    pub fn models(&self) -> impl Iterator<Item = (&str, u64)> {
        self.models.iter().map(|(m, w)| (m.as_str(), *w))
    }

    /// The rewrite resource (`namespace/name`) the rule belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The compiled rewrites of one pool.
#[derive(Clone, Debug, Default)]
pub struct ModelRewrites {
    exact: HashMap<String, Targets>,
    generic: Option<Targets>,
}

impl ModelRewrites {
    /// Compiles the rewrites of a pool. Specs that fail
    /// [`InferenceModelRewriteSpec::validate`] are skipped (with a warning): they are rejected
    /// alone. The pool reference is not checked here; pass only the pool's rewrites.
    pub fn new(mut sources: Vec<RewriteSource>) -> Self {
        sources.sort_by(|a, b| match (&a.created, &b.created) {
            (Some(x), Some(y)) => x.cmp(y).then_with(|| a.key.cmp(&b.key)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.key.cmp(&b.key),
        });
        let mut table = ModelRewrites::default();
        for source in &sources {
            if let Err(e) = source.spec.validate() {
                tracing::warn!(rewrite = %source.key, error = %e, "invalid InferenceModelRewrite skipped");
                continue;
            }
            for rule in &source.spec.rules {
                let targets = Targets {
                    models: rule
                        .targets
                        .iter()
                        .map(|t| (t.model_rewrite.clone(), t.weight.map_or(1, |w| w as u64)))
                        .collect(),
                    total: rule
                        .targets
                        .iter()
                        .map(|t| t.weight.map_or(1, |w| w as u64))
                        .sum(),
                    source: source.key.clone(),
                };
                if rule.matches.is_empty() {
                    if table.generic.is_none() {
                        table.generic = Some(targets);
                    }
                } else {
                    for m in &rule.matches {
                        table
                            .exact
                            .entry(m.model.value.clone())
                            .or_insert_with(|| targets.clone());
                    }
                }
            }
        }
        table
    }

    /// The rule that applies to a request for `model`, if any.
    pub fn resolve(&self, model: &str) -> Option<&Targets> {
        self.exact.get(model).or(self.generic.as_ref())
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.generic.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PoolObjectReference;
    use crate::crd::llmd::{MatchType, ModelMatch, ModelRewriteMatch, RewriteRule, TargetModel};
    use rand::SeedableRng;

    fn rule(matches: &[&str], targets: &[(&str, Option<i32>)]) -> RewriteRule {
        RewriteRule {
            matches: matches
                .iter()
                .map(|v| ModelRewriteMatch {
                    model: ModelMatch {
                        match_type: MatchType::Exact,
                        value: (*v).into(),
                    },
                })
                .collect(),
            targets: targets
                .iter()
                .map(|(m, w)| TargetModel {
                    model_rewrite: (*m).into(),
                    weight: *w,
                })
                .collect(),
        }
    }

    fn source(key: &str, secs: Option<i64>, rules: Vec<RewriteRule>) -> RewriteSource {
        RewriteSource {
            key: key.into(),
            created: secs.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())),
            spec: InferenceModelRewriteSpec {
                pool_ref: PoolObjectReference::new("pool"),
                rules,
            },
        }
    }

    fn only(t: Option<&Targets>) -> &str {
        let t = t.expect("a rule applies");
        assert_eq!(t.models().count(), 1);
        t.pick(0)
    }

    #[test]
    fn exact_beats_generic_even_when_newer() {
        let table = ModelRewrites::new(vec![
            source("ns/old", Some(10), vec![rule(&[], &[("generic", None)])]),
            source(
                "ns/new",
                Some(20),
                vec![rule(&["llama"], &[("exact", None)])],
            ),
        ]);
        assert_eq!(only(table.resolve("llama")), "exact");
        assert_eq!(only(table.resolve("other")), "generic");
    }

    #[test]
    fn oldest_resource_then_first_rule() {
        let table = ModelRewrites::new(vec![
            source("ns/b-new", Some(20), vec![rule(&["m"], &[("newer", None)])]),
            source(
                "ns/a-untimed",
                None,
                vec![rule(&["m"], &[("untimed", None)])],
            ),
            source(
                "ns/c-old",
                Some(10),
                vec![
                    rule(&["x", "m"], &[("old-first", None)]),
                    rule(&["m"], &[("old-second", None)]),
                ],
            ),
        ]);
        assert_eq!(only(table.resolve("m")), "old-first");
        assert_eq!(table.resolve("m").unwrap().source(), "ns/c-old");
        assert_eq!(only(table.resolve("x")), "old-first");
        assert!(table.resolve("nope").is_none());
        assert!(!table.is_empty());
        assert!(ModelRewrites::new(vec![]).is_empty());
    }

    #[test]
    fn invalid_rewrites_are_skipped() {
        let table = ModelRewrites::new(vec![
            source("ns/bad", Some(1), vec![rule(&["m"], &[("bad", Some(0))])]),
            source("ns/good", Some(2), vec![rule(&["m"], &[("good", None)])]),
        ]);
        assert_eq!(only(table.resolve("m")), "good");
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let table = ModelRewrites::new(vec![source(
            "ns/canary",
            Some(1),
            vec![rule(
                &["food-review"],
                &[("v1", Some(90)), ("v2", Some(10))],
            )],
        )]);
        let t = table.resolve("food-review").unwrap();
        assert_eq!(t.pick(0), "v1");
        assert_eq!(t.pick(u32::MAX), "v2");
        // The boundary: 90% of the u32 range maps to v1.
        let edge = (u64::from(u32::MAX) * 9 / 10) as u32;
        assert_eq!(t.pick(edge - 1), "v1");
        assert_eq!(t.pick(edge + 2), "v2");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let v2 = (0..10_000)
            .filter(|_| t.pick_with(&mut rng) == "v2")
            .count();
        assert!((700..1300).contains(&v2), "v2 chosen {v2} times of 10000");
    }

    #[test]
    fn unset_weights_are_equal() {
        let table = ModelRewrites::new(vec![source(
            "ns/r",
            None,
            vec![rule(&[], &[("a", None), ("b", None)])],
        )]);
        let t = table.resolve("anything").unwrap();
        assert_eq!(t.pick(0), "a");
        assert_eq!(t.pick(u32::MAX / 2 + 1), "b");
    }
}
