//! Kubernetes resources of the Gateway API Inference Extension and of llm-d.
//!
//! - [`v1`]: the GA `InferencePool` (`inference.networking.k8s.io/v1`), the form to serve.
//! - [`x_k8s`]: the older `inference.networking.x-k8s.io/v1alpha2` group: `InferencePool` (read
//!   only, converted to the v1 spec by [`x_k8s::InferencePoolSpec::to_v1`]),
//!   `InferenceObjective` and `InferenceModelRewrite`.
//! - [`llmd`]: `InferenceObjective` and `InferenceModelRewrite` in `llm-d.ai/v1alpha2`, where
//!   the endpoint picker's APIs live now.
//!
//! The types only describe and check objects: deserialising never fails on unknown fields
//! (upstream adds fields between versions), and each spec has a `validate()` that returns every
//! [`FieldError`] found, mirroring the CRDs' OpenAPI and CEL rules. An object that fails
//! validation should be rejected alone (its status says why) while everything else keeps
//! serving. Nothing here does I/O.

pub mod llmd;
pub mod v1;
pub mod x_k8s;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// API group of the GA `InferencePool`.
pub const GROUP: &str = "inference.networking.k8s.io";
/// API group of the pre-GA (v1alpha2) Inference Extension resources.
pub const GROUP_X_K8S: &str = "inference.networking.x-k8s.io";
/// API group of llm-d's `InferenceObjective` and `InferenceModelRewrite`.
pub const GROUP_LLM_D: &str = "llm-d.ai";
/// Kind name of the pool resource, the same in every group.
pub const KIND_INFERENCE_POOL: &str = "InferencePool";

/// Condition types and reasons written to `InferencePool.status.parents[].conditions`.
pub mod conditions {
    /// Condition type: whether the parent Gateway accepted the pool.
    pub const ACCEPTED: &str = "Accepted";
    /// Condition type: whether every reference of the pool (the endpoint picker) resolved.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// Condition type (multi-cluster): whether the pool is exported.
    pub const EXPORTED: &str = "Exported";

    /// `Accepted=True`: the parent serves the pool.
    pub const REASON_ACCEPTED: &str = "Accepted";
    /// `Accepted=False`: the parent does not support InferencePool backends.
    pub const REASON_NOT_SUPPORTED_BY_PARENT: &str = "NotSupportedByParent";
    /// `Accepted=False`: the HTTPRoute referring to the pool was not accepted.
    pub const REASON_HTTP_ROUTE_NOT_ACCEPTED: &str = "HTTPRouteNotAccepted";
    /// `Accepted=False`: the pool has no `endpointPickerRef` and the parent needs one.
    pub const REASON_ENDPOINT_PICKER_REF_MISSING: &str = "EndpointPickerRefMissing";
    /// `Accepted=Unknown`: not reconciled yet (the CRD's default condition).
    pub const REASON_PENDING: &str = "Pending";
    /// `ResolvedRefs=True`: every reference resolved.
    pub const REASON_RESOLVED_REFS: &str = "ResolvedRefs";
    /// `ResolvedRefs=False`: the `endpointPickerRef` is invalid or does not resolve.
    pub const REASON_INVALID_EXTENSION_REF: &str = "InvalidExtensionRef";
    /// `Exported=True`.
    pub const REASON_EXPORTED: &str = "Exported";
    /// `Exported=False`: export was not asked for.
    pub const REASON_NOT_REQUESTED: &str = "NotRequested";
    /// `Exported=False`: the implementation does not export pools.
    pub const REASON_NOT_SUPPORTED: &str = "NotSupported";
}

/// One problem found by a `validate()` method: the JSON path of the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.targetPorts[1].number`.
    pub field: String,
    /// What is wrong, for a status message.
    pub message: String,
}

/// Every problem `validate()` found in one object (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects [`FieldError`]s while a spec is checked.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { errors: self.0 })
        }
    }
}

/// A reference from an objective or rewrite to the `InferencePool` it applies to (in the same
/// namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolObjectReference {
    /// API group of the pool. Default: `inference.networking.k8s.io`.
    #[serde(default = "default_pool_group")]
    pub group: String,
    /// Kind of the pool. Default: `InferencePool`.
    #[serde(default = "default_pool_kind")]
    pub kind: String,
    /// Name of the pool.
    pub name: String,
}

fn default_pool_group() -> String {
    GROUP.to_owned()
}

fn default_pool_kind() -> String {
    KIND_INFERENCE_POOL.to_owned()
}

impl PoolObjectReference {
    /// A reference to the GA pool `name` (group and kind at their defaults).
    pub fn new(name: impl Into<String>) -> Self {
        PoolObjectReference {
            group: default_pool_group(),
            kind: default_pool_kind(),
            name: name.into(),
        }
    }

    /// Whether this names the pool `name` of kind `InferencePool` in either Inference
    /// Extension group.
    pub fn refers_to(&self, name: &str) -> bool {
        self.name == name
            && self.kind == KIND_INFERENCE_POOL
            && (self.group == GROUP || self.group == GROUP_X_K8S)
    }

    pub(crate) fn check(&self, path: &str, errors: &mut Errors) {
        if self.name.is_empty() {
            errors.push(format!("{path}.name"), "must not be empty");
        } else if self.name.len() > 253 {
            errors.push(format!("{path}.name"), "must be at most 253 characters");
        }
        if self.kind != KIND_INFERENCE_POOL {
            errors.push(
                format!("{path}.kind"),
                format!("must be {KIND_INFERENCE_POOL}"),
            );
        }
        if self.group != GROUP && self.group != GROUP_X_K8S {
            errors.push(
                format!("{path}.group"),
                format!("must be {GROUP} or {GROUP_X_K8S}"),
            );
        }
    }
}

/// Whether `s` is a valid label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with an alphanumeric (empty is allowed).
pub(crate) fn valid_label_value(s: &str) -> bool {
    s.is_empty() || valid_label_name(s)
}

/// A non-empty label name (or the name part of a key).
fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `s` is a valid label key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn valid_label_key(s: &str) -> bool {
    match s.split_once('/') {
        None => valid_label_name(s),
        Some((prefix, name)) => valid_dns_subdomain(prefix) && valid_label_name(name),
    }
}

/// A lower-case RFC 1123 subdomain of at most 253 characters.
pub(crate) fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values() {
        assert!(valid_label_key("app"));
        assert!(valid_label_key("llm-d.ai/engine-type"));
        assert!(!valid_label_key(""));
        assert!(!valid_label_key("-app"));
        assert!(!valid_label_key("Bad_Prefix/app"));
        assert!(!valid_label_key(&"a".repeat(64)));
        assert!(valid_label_value(""));
        assert!(valid_label_value("vllm-llama3-8b"));
        assert!(!valid_label_value("bad value"));
    }

    #[test]
    fn pool_reference_defaults_and_match() {
        let r: PoolObjectReference = serde_json::from_str(r#"{"name":"pool"}"#).unwrap();
        assert_eq!(r, PoolObjectReference::new("pool"));
        assert!(r.refers_to("pool"));
        assert!(!r.refers_to("other"));
        let mut errors = Errors::default();
        PoolObjectReference {
            group: "x".into(),
            kind: "Service".into(),
            name: String::new(),
        }
        .check("spec.poolRef", &mut errors);
        let err = errors.finish().unwrap_err();
        assert_eq!(err.errors.len(), 3);
        assert!(
            err.to_string()
                .contains("spec.poolRef.kind: must be InferencePool")
        );
    }
}
