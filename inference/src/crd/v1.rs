//! `InferencePool` in `inference.networking.k8s.io/v1` (GA, short name `infpool`).
//!
//! A pool is a set of model-server endpoints: every port in `targetPorts` of every Ready Pod
//! that matches `selector.matchLabels` in the pool's namespace. An HTTPRoute points at it with a
//! backendRef of kind `InferencePool` (the backendRef's port is ignored). With an
//! `endpointPickerRef` an external endpoint picker chooses the endpoint per request; without one
//! the gateway's in-process picker does.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Errors, ValidationError, valid_label_key, valid_label_value};

/// Most `matchLabels` entries a pool selector may have.
pub const MAX_SELECTOR_LABELS: usize = 64;
/// Most `targetPorts` a pool may have.
pub const MAX_TARGET_PORTS: usize = 8;

/// Desired state of an `InferencePool`.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    plural = "inferencepools",
    shortname = "infpool",
    status = "InferencePoolStatus",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Which Pods (in the pool's namespace) serve the pool.
    pub selector: LabelSelector,
    /// The model-server ports on each Pod (1 to 8, unique); each `podIP:port` is one endpoint,
    /// which is how data-parallel ranks are modelled.
    pub target_ports: Vec<Port>,
    /// The protocol spoken to the endpoints. Unset means [`AppProtocol::Http`] (HTTP/1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
    /// The external endpoint picker. Unset: the gateway picks endpoints itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker_ref: Option<EndpointPickerRef>,
}

/// The Pods of a pool: all `matchLabels` must match (1 to 64 entries). `matchExpressions` is
/// deliberately not supported upstream (the selector stays usable as a Service selector).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Label key to value; all must match.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl LabelSelector {
    /// Whether a Pod with `labels` is selected (every entry present with the same value).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A port number (1 to 65535 when valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Port {
    /// The port number.
    pub number: i32,
}

/// The protocol the gateway speaks to a pool's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AppProtocol {
    /// `http`: HTTP/1.1 (the default).
    #[default]
    #[serde(rename = "http")]
    Http,
    /// `kubernetes.io/h2c`: HTTP/2 over cleartext.
    #[serde(rename = "kubernetes.io/h2c")]
    H2c,
}

/// What the gateway does when the external endpoint picker does not answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureMode {
    /// Forward to an endpoint of the gateway's own choosing (the buffered body is replayed).
    FailOpen,
    /// Drop the request with a 5xx (the default).
    #[default]
    FailClose,
}

/// The external endpoint picker (an ext_proc gRPC server) of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    /// API group of the referent. Default: `""` (core).
    #[serde(default)]
    pub group: String,
    /// Kind of the referent. Default: `Service`.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Name of the referent, in the pool's namespace.
    pub name: String,
    /// The Service port (not a target port). Required when the kind is `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// What to do when the picker fails. Default: [`FailureMode::FailClose`].
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_service_kind() -> String {
    "Service".to_owned()
}

impl EndpointPickerRef {
    /// Whether the referent is a core `Service` (the only kind the gateway resolves).
    pub fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

/// Observed state of an `InferencePool`: one entry per parent Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolStatus {
    /// One entry per Gateway that uses the pool (at most 32). A controller writes and removes
    /// only its own entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentStatus>,
}

/// The status of a pool as seen by one parent Gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    /// The parent Gateway (not the route).
    pub parent_ref: ParentReference,
    /// The controller that wrote this entry.
    #[serde(default)]
    pub controller_name: String,
    /// Conditions (at most 8); types and reasons in [`super::conditions`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A reference to a parent Gateway in a pool's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Default: `gateway.networking.k8s.io`.
    #[serde(default = "default_gateway_group")]
    pub group: String,
    /// Default: `Gateway`.
    #[serde(default = "default_gateway_kind")]
    pub kind: String,
    /// Name of the Gateway.
    pub name: String,
    /// Namespace of the Gateway (unset: the pool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_gateway_group() -> String {
    "gateway.networking.k8s.io".to_owned()
}

fn default_gateway_kind() -> String {
    "Gateway".to_owned()
}

impl InferencePoolSpec {
    /// Checks the CRD's schema and CEL rules: 1 to 64 valid selector labels; 1 to 8 target
    /// ports, each in 1..=65535 and unique; an `endpointPickerRef` with a name, and a port in
    /// range that is present when the kind is `Service`. Returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Errors::default();
        let labels = &self.selector.match_labels;
        if labels.is_empty() || labels.len() > MAX_SELECTOR_LABELS {
            errors.push(
                "spec.selector.matchLabels",
                format!(
                    "must have 1 to {MAX_SELECTOR_LABELS} entries, has {}",
                    labels.len()
                ),
            );
        }
        for (k, v) in labels {
            if !valid_label_key(k) {
                errors.push(
                    format!("spec.selector.matchLabels[{k}]"),
                    "invalid label key",
                );
            }
            if !valid_label_value(v) {
                errors.push(
                    format!("spec.selector.matchLabels[{k}]"),
                    "invalid label value",
                );
            }
        }
        if self.target_ports.is_empty() || self.target_ports.len() > MAX_TARGET_PORTS {
            errors.push(
                "spec.targetPorts",
                format!(
                    "must have 1 to {MAX_TARGET_PORTS} entries, has {}",
                    self.target_ports.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.target_ports.iter().enumerate() {
            if !(1..=65535).contains(&p.number) {
                errors.push(
                    format!("spec.targetPorts[{i}].number"),
                    "must be in 1..=65535",
                );
            } else if !seen.insert(p.number) {
                errors.push(
                    format!("spec.targetPorts[{i}].number"),
                    "port numbers must be unique",
                );
            }
        }
        if let Some(epp) = &self.endpoint_picker_ref {
            if epp.name.is_empty() {
                errors.push("spec.endpointPickerRef.name", "must not be empty");
            }
            match epp.port {
                Some(p) if !(1..=65535).contains(&p.number) => {
                    errors.push("spec.endpointPickerRef.port.number", "must be in 1..=65535")
                }
                None if epp.kind == "Service" => errors.push(
                    "spec.endpointPickerRef.port",
                    "is required when kind is Service",
                ),
                _ => {}
            }
        }
        errors.finish()
    }

    /// The target port numbers, in spec order (only meaningful once [`Self::validate`] passed).
    pub fn port_numbers(&self) -> impl Iterator<Item = u16> + '_ {
        self.target_ports
            .iter()
            .filter_map(|p| u16::try_from(p.number).ok())
    }

    /// The app protocol, with the default applied.
    pub fn app_protocol(&self) -> AppProtocol {
        self.app_protocol.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ports: &[i32]) -> InferencePoolSpec {
        InferencePoolSpec {
            selector: LabelSelector {
                match_labels: BTreeMap::from([("app".to_owned(), "vllm".to_owned())]),
            },
            target_ports: ports.iter().map(|&number| Port { number }).collect(),
            app_protocol: None,
            endpoint_picker_ref: None,
        }
    }

    fn fields(spec: &InferencePoolSpec) -> Vec<String> {
        match spec.validate() {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn valid_pool_passes() {
        assert!(spec(&[8000, 8001]).validate().is_ok());
        assert_eq!(spec(&[8000]).app_protocol(), AppProtocol::Http);
        assert_eq!(
            spec(&[8000, 8002]).port_numbers().collect::<Vec<_>>(),
            vec![8000, 8002]
        );
    }

    #[test]
    fn ports_counted_ranged_and_unique() {
        assert_eq!(fields(&spec(&[])), vec!["spec.targetPorts"]);
        assert_eq!(
            fields(&spec(&[1, 2, 3, 4, 5, 6, 7, 8, 9])),
            vec!["spec.targetPorts"]
        );
        assert_eq!(
            fields(&spec(&[0, 70000])),
            vec!["spec.targetPorts[0].number", "spec.targetPorts[1].number"]
        );
        assert_eq!(
            fields(&spec(&[8000, 8000])),
            vec!["spec.targetPorts[1].number"]
        );
    }

    #[test]
    fn selector_bounds() {
        let mut s = spec(&[8000]);
        s.selector.match_labels.clear();
        assert_eq!(fields(&s), vec!["spec.selector.matchLabels"]);
        s.selector.match_labels = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(fields(&s), vec!["spec.selector.matchLabels"]);
        s.selector.match_labels = BTreeMap::from([("bad key".to_owned(), "v".to_owned())]);
        assert_eq!(fields(&s), vec!["spec.selector.matchLabels[bad key]"]);
    }

    #[test]
    fn selector_matches_all_labels() {
        let s = spec(&[8000]).selector;
        let mut labels = BTreeMap::from([("app".to_owned(), "vllm".to_owned())]);
        assert!(s.matches(&labels));
        labels.insert("extra".into(), "x".into());
        assert!(s.matches(&labels));
        labels.insert("app".into(), "sglang".into());
        assert!(!s.matches(&labels));
    }

    #[test]
    fn endpoint_picker_ref_defaults_and_port_rule() {
        let epp: EndpointPickerRef = serde_json::from_str(r#"{"name":"epp"}"#).unwrap();
        assert_eq!(epp.group, "");
        assert_eq!(epp.kind, "Service");
        assert_eq!(epp.failure_mode, FailureMode::FailClose);
        assert!(epp.is_service());
        let mut s = spec(&[8000]);
        s.endpoint_picker_ref = Some(epp.clone());
        assert_eq!(fields(&s), vec!["spec.endpointPickerRef.port"]);
        s.endpoint_picker_ref = Some(EndpointPickerRef {
            port: Some(Port { number: 9002 }),
            ..epp
        });
        assert!(s.validate().is_ok());
    }
}
