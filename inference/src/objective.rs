//! `InferenceObjective` resolution: the priority of a request from the objective it names.
//!
//! [`Objectives::new`] compiles the objectives of one pool when the configuration changes;
//! [`Objectives::priority`] runs per request (one hash lookup, no allocation). A request that
//! names no objective, or one that does not exist for the pool, gets priority 0 (the upstream
//! default for an unset priority). Negative priorities are sheddable.

use std::collections::HashMap;

use crate::crd::llmd::InferenceObjectiveSpec;

/// The objectives of one pool by name.
#[derive(Clone, Debug, Default)]
pub struct Objectives {
    by_name: HashMap<String, i32>,
}

impl Objectives {
    /// Compiles `(name, spec)` pairs (objectives live in the pool's namespace, so the name is
    /// the key). Specs that fail validation are skipped with a warning; the pool reference is
    /// not checked here: pass only the pool's objectives.
    pub fn new<'a>(
        objectives: impl IntoIterator<Item = (&'a str, &'a InferenceObjectiveSpec)>,
    ) -> Self {
        let mut by_name = HashMap::new();
        for (name, spec) in objectives {
            if let Err(e) = spec.validate() {
                tracing::warn!(objective = %name, error = %e, "invalid InferenceObjective skipped");
                continue;
            }
            by_name.insert(name.to_owned(), spec.priority());
        }
        Objectives { by_name }
    }

    /// The priority for a request naming `objective` (see
    /// [`crate::request::objective_name`]): the objective's priority, else 0.
    pub fn priority(&self, objective: Option<&str>) -> i32 {
        objective
            .and_then(|n| self.by_name.get(n))
            .copied()
            .unwrap_or(0)
    }

    /// Whether an objective of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PoolObjectReference;

    fn spec(priority: Option<i32>) -> InferenceObjectiveSpec {
        InferenceObjectiveSpec {
            priority,
            pool_ref: PoolObjectReference::new("pool"),
        }
    }

    #[test]
    fn priorities_by_name_with_defaults() {
        let (critical, batch, unset) = (spec(Some(100)), spec(Some(-5)), spec(None));
        let invalid = InferenceObjectiveSpec {
            priority: Some(9),
            pool_ref: PoolObjectReference::new(""),
        };
        let o = Objectives::new([
            ("critical", &critical),
            ("batch", &batch),
            ("unset", &unset),
            ("invalid", &invalid),
        ]);
        assert_eq!(o.priority(Some("critical")), 100);
        assert_eq!(o.priority(Some("batch")), -5);
        assert_eq!(o.priority(Some("unset")), 0);
        assert_eq!(o.priority(Some("unknown")), 0);
        assert_eq!(o.priority(None), 0);
        assert!(!o.contains("invalid"));
        assert!(o.contains("batch"));
    }
}
