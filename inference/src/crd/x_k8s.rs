//! The pre-GA `inference.networking.x-k8s.io/v1alpha2` resources, read so that existing
//! objects keep working: `InferencePool` (converted with [`InferencePoolSpec::to_v1`]),
//! `InferenceObjective` and `InferenceModelRewrite` (converted into the [`super::llmd`]
//! specs with `From`).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::llmd::{self, ConditionStatus, RewriteRule};
use super::v1::{self, FailureMode, LabelSelector, Port};
use super::{PoolObjectReference, ValidationError};

/// The endpoint picker port assumed when a v1alpha2 `extensionRef` to a Service has no
/// `portNumber` (the upstream API says implementations should infer 9002).
pub const DEFAULT_EXTENSION_PORT: i32 = 9002;

/// Desired state of a v1alpha2 `InferencePool` (GIE v0.x).
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "inference.networking.x-k8s.io",
    version = "v1alpha2",
    kind = "InferencePool",
    plural = "inferencepools",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Label key to value; all must match (v1: `selector.matchLabels`).
    pub selector: BTreeMap<String, String>,
    /// The one model-server port (v1: `targetPorts`).
    pub target_port_number: i32,
    /// The endpoint picker (v1: `endpointPickerRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<ExtensionRef>,
}

/// A v1alpha2 endpoint picker reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRef {
    /// Default: `""`.
    #[serde(default)]
    pub group: String,
    /// Default: `Service`.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// The Service port. Unset: [`DEFAULT_EXTENSION_PORT`] for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<i32>,
    /// Default: `FailClose`.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_service_kind() -> String {
    "Service".to_owned()
}

impl InferencePoolSpec {
    /// The equivalent v1 spec: `selector` becomes `selector.matchLabels`, `targetPortNumber`
    /// the single `targetPorts` entry, `extensionRef` the `endpointPickerRef` (port 9002 when
    /// a Service port is unset). `appProtocol` is left unset (HTTP/1.1), as v1alpha2 had none.
    pub fn to_v1(&self) -> v1::InferencePoolSpec {
        v1::InferencePoolSpec {
            selector: LabelSelector {
                match_labels: self.selector.clone(),
            },
            target_ports: vec![Port {
                number: self.target_port_number,
            }],
            app_protocol: None,
            endpoint_picker_ref: self.extension_ref.as_ref().map(|e| v1::EndpointPickerRef {
                group: e.group.clone(),
                kind: e.kind.clone(),
                name: e.name.clone(),
                port: match e.port_number {
                    Some(number) => Some(Port { number }),
                    None if e.kind == "Service" => Some(Port {
                        number: DEFAULT_EXTENSION_PORT,
                    }),
                    None => None,
                },
                failure_mode: e.failure_mode,
            }),
        }
    }

    /// Validates the converted v1 spec (field paths are the v1 ones).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.to_v1().validate()
    }
}

/// Desired state of an `InferenceObjective` in the x-k8s group (same fields as
/// [`llmd::InferenceObjectiveSpec`]).
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "inference.networking.x-k8s.io",
    version = "v1alpha2",
    kind = "InferenceObjective",
    plural = "inferenceobjectives",
    status = "ConditionStatus",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceObjectiveSpec {
    /// Unset counts as 0; negative is sheddable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The pool the objective applies to.
    pub pool_ref: PoolObjectReference,
}

impl From<InferenceObjectiveSpec> for llmd::InferenceObjectiveSpec {
    fn from(s: InferenceObjectiveSpec) -> Self {
        llmd::InferenceObjectiveSpec {
            priority: s.priority,
            pool_ref: s.pool_ref,
        }
    }
}

/// Desired state of an `InferenceModelRewrite` in the x-k8s group (same fields as
/// [`llmd::InferenceModelRewriteSpec`]).
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "inference.networking.x-k8s.io",
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
    /// Ordered rules.
    pub rules: Vec<RewriteRule>,
}

impl From<InferenceModelRewriteSpec> for llmd::InferenceModelRewriteSpec {
    fn from(s: InferenceModelRewriteSpec) -> Self {
        llmd::InferenceModelRewriteSpec {
            pool_ref: s.pool_ref,
            rules: s.rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1alpha2_pool_converts_with_port_default() {
        let spec: InferencePoolSpec = serde_json::from_str(
            r#"{"selector":{"app":"vllm"},"targetPortNumber":8000,
                "extensionRef":{"name":"epp","failureMode":"FailOpen"}}"#,
        )
        .unwrap();
        let v1 = spec.to_v1();
        assert_eq!(v1.selector.match_labels["app"], "vllm");
        assert_eq!(v1.target_ports, vec![Port { number: 8000 }]);
        let epp = v1.endpoint_picker_ref.unwrap();
        assert_eq!(
            epp.port,
            Some(Port {
                number: DEFAULT_EXTENSION_PORT
            })
        );
        assert_eq!(epp.failure_mode, FailureMode::FailOpen);
        assert_eq!(epp.kind, "Service");
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn v1alpha2_pool_invalid_port_reported_on_v1_path() {
        let spec = InferencePoolSpec {
            selector: BTreeMap::from([("app".into(), "vllm".into())]),
            target_port_number: 0,
            extension_ref: None,
        };
        assert_eq!(
            spec.validate().unwrap_err().errors[0].field,
            "spec.targetPorts[0].number"
        );
    }
}
