//! Cross-namespace permission (ReferenceGrant) and namespace label selection.

use std::collections::BTreeMap;

use crate::resources::{ObjectKey, Resources};

/// One side of a reference: API group (`""` for core), kind and namespace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefFrom<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// Whether a ReferenceGrant in `to_namespace` lets `from` refer to the object `to_group`/`to_kind`
/// named `to_name` there. References within one namespace need no grant.
pub(crate) fn permitted(
    resources: &Resources,
    from: RefFrom<'_>,
    to_group: &str,
    to_kind: &str,
    to_namespace: &str,
    to_name: &str,
) -> bool {
    if from.namespace == to_namespace {
        return true;
    }
    resources
        .reference_grants
        .iter()
        .filter(|(key, _)| key.namespace == to_namespace)
        .any(|(_, grant)| {
            let spec = &grant.object.spec;
            let from_ok = spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            });
            let to_ok = spec.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to_name)
            });
            from_ok && to_ok
        })
}

/// The labels of namespace `name`: those of its Namespace object (if any) plus
/// `kubernetes.io/metadata.name`, which the API server always sets.
pub(crate) fn namespace_labels(resources: &Resources, name: &str) -> BTreeMap<String, String> {
    let mut labels = resources
        .namespaces
        .get(&ObjectKey::new("", name))
        .and_then(|ns| ns.object.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), name.to_string());
    labels
}

/// A label selector requirement (`matchExpressions` entry).
#[derive(Clone, Debug)]
pub(crate) struct Requirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// A label selector: `matchLabels` AND `matchExpressions`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy the selector. An unknown operator never matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_operators() {
        let sel = Selector {
            match_labels: labels(&[("a", "1")]),
            match_expressions: vec![
                Requirement {
                    key: "b".into(),
                    operator: "In".into(),
                    values: vec!["x".into(), "y".into()],
                },
                Requirement {
                    key: "c".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        assert!(sel.matches(&labels(&[("a", "1"), ("b", "y")])));
        assert!(!sel.matches(&labels(&[("a", "1"), ("b", "z")])));
        assert!(!sel.matches(&labels(&[("a", "1"), ("b", "x"), ("c", "")])));
        assert!(!sel.matches(&labels(&[("b", "x")])));
        let bogus = Selector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "a".into(),
                operator: "Near".into(),
                values: vec![],
            }],
        };
        assert!(!bogus.matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn grants() {
        let r = Resources::parse_yaml(
            r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: target}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: src}]
  to: [{group: "", kind: Service, name: only}]
"#,
            "g.yaml",
        );
        let from = RefFrom {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: "src",
        };
        assert!(permitted(&r, from, "", "Service", "target", "only"));
        assert!(!permitted(&r, from, "", "Service", "target", "other"));
        assert!(!permitted(
            &r,
            RefFrom {
                namespace: "else",
                ..from
            },
            "",
            "Service",
            "target",
            "only"
        ));
        assert!(permitted(
            &r,
            RefFrom {
                namespace: "target",
                ..from
            },
            "",
            "Service",
            "target",
            "x"
        ));
        assert_eq!(
            namespace_labels(&r, "n")["kubernetes.io/metadata.name"],
            "n"
        );
    }
}
