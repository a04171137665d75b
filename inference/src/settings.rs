//! The settings of one `InferencePool` backend, as the configuration source (gateway-k8s)
//! hands them to the data plane.
//!
//! gateway-k8s translates an HTTPRoute backendRef of kind `InferencePool` into a backend whose
//! endpoints are the pool's (every target port of every Ready Pod), whose load balancer is
//! [`LOAD_BALANCER`], and whose filters end with an `ExtensionRef` of group [`crate::crd::GROUP`]
//! and kind [`crate::crd::KIND_INFERENCE_POOL`] named after the pool. That reference's `config`
//! is an [`InferencePoolSettings`] in JSON (camelCase). Both sides use this one definition, so
//! the shape cannot drift: gateway-k8s serialises it, the filter factory deserialises it.
//!
//! ```json
//! { "pool": {"namespace": "ns", "name": "pool"},
//!   "targetPorts": [8000],
//!   "appProtocol": "http",
//!   "endpoints": [{"address": "10.0.0.1:8000", "pod": "ns/pod-a", "engine": "vllm"}],
//!   "endpointPicker": {"failureMode": "FailClose", "addresses": ["10.0.0.9:9002"], "unresolved": null},
//!   "objectives": [{"name": "batch", "priority": -1}],
//!   "rewrites": [{"name": "canary", "created": "2026-01-01T00:00:00Z", "spec": {"poolRef": {"name": "pool"}, "rules": []}}] }
//! ```

use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::crd::llmd::InferenceModelRewriteSpec;
use crate::crd::v1::{AppProtocol, FailureMode};
use crate::metrics::Engine;

/// The name of the custom load balancer (`gateway_core::config::LoadBalancer::Custom`) an
/// InferencePool backend asks for: the endpoint picker the data plane registers under it.
pub const LOAD_BALANCER: &str = "inference.networking.k8s.io/InferencePool";

/// Everything the data plane needs to serve one InferencePool backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSettings {
    /// The pool.
    pub pool: PoolName,
    /// The pool's `targetPorts` numbers, in spec order.
    pub target_ports: Vec<u16>,
    /// The protocol spoken to the endpoints (`http`, the default, or `kubernetes.io/h2c`).
    #[serde(default)]
    pub app_protocol: AppProtocol,
    /// The endpoints, in the same order as the backend's endpoints (sorted by address): one per
    /// target port of every Ready Pod with an IP that is not terminating.
    #[serde(default)]
    pub endpoints: Vec<PoolEndpoint>,
    /// The external endpoint picker; `None` when the pool has no `endpointPickerRef` (the
    /// in-process picker chooses).
    #[serde(default)]
    pub endpoint_picker: Option<EndpointPickerSettings>,
    /// The InferenceObjectives (both groups) whose `poolRef` names this pool, sorted by name,
    /// invalid ones left out.
    #[serde(default)]
    pub objectives: Vec<ObjectiveSettings>,
    /// The InferenceModelRewrites (both groups) whose `poolRef` names this pool, sorted by
    /// name, invalid ones left out.
    #[serde(default)]
    pub rewrites: Vec<RewriteSettings>,
}

/// Namespace and name of a pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolName {
    /// The pool's namespace (its Pods, objectives, rewrites and picker Service are there too).
    pub namespace: String,
    /// The pool's name.
    pub name: String,
}

/// One endpoint of a pool: a target port of one Pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEndpoint {
    /// `podIP:port` (IPv6 addresses in brackets).
    pub address: SocketAddr,
    /// The Pod, as `namespace/name`.
    pub pod: String,
    /// The model server engine, from the Pod label `llm-d.ai/engine-type` (else the legacy
    /// `inference.networking.k8s.io/engine-type`; default and unknown values: `vllm`).
    #[serde(with = "engine_name", default)]
    pub engine: Engine,
}

/// The external endpoint picker of a pool (its `endpointPickerRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerSettings {
    /// What to do when the picker does not answer.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// The picker's ready endpoints (`ip:port`), sorted; empty when it does not resolve.
    #[serde(default)]
    pub addresses: Vec<SocketAddr>,
    /// Why the reference does not resolve (no such Service, no ready endpoint, an ExternalName
    /// Service, a kind other than Service); `None` when it resolves.
    #[serde(default)]
    pub unresolved: Option<String>,
}

/// An InferenceObjective of the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveSettings {
    /// The objective's name, which requests give in `x-llm-d-inference-objective`.
    pub name: String,
    /// Its priority with the default applied (unset: 0; negative: sheddable).
    #[serde(default)]
    pub priority: i32,
}

/// An InferenceModelRewrite of the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteSettings {
    /// The rewrite's name (in the pool's namespace).
    pub name: String,
    /// Its `metadata.creationTimestamp` (older rewrites win ties); `None` when unset.
    #[serde(default)]
    pub created: Option<Time>,
    /// The spec (an x-k8s one converted).
    pub spec: InferenceModelRewriteSpec,
}

/// [`Engine`] as its label value (`vllm`, `sglang`, `trtllm-serve`, `triton-trtllm`); an
/// unknown value reads as vLLM, as an unknown Pod label does.
mod engine_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::metrics::Engine;

    pub fn serialize<S: Serializer>(engine: &Engine, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(engine.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Engine, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Engine::from_name(&name).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_in_the_documented_shape() {
        let text = r#"{
            "pool": {"namespace": "ns", "name": "pool"},
            "targetPorts": [8000, 8002],
            "appProtocol": "kubernetes.io/h2c",
            "endpoints": [
                {"address": "10.0.0.1:8000", "pod": "ns/a", "engine": "sglang"},
                {"address": "[fd00::1]:8002", "pod": "ns/b", "engine": "mystery"}
            ],
            "endpointPicker": {"failureMode": "FailOpen", "addresses": [], "unresolved": "Service ns/epp does not exist"},
            "objectives": [{"name": "batch", "priority": -1}],
            "rewrites": [{"name": "canary", "created": "2026-01-01T00:00:00Z",
                          "spec": {"poolRef": {"name": "pool"}, "rules": [{"targets": [{"modelRewrite": "m"}]}]}}]
        }"#;
        let s: InferencePoolSettings = serde_json::from_str(text).unwrap();
        assert_eq!(s.app_protocol, AppProtocol::H2c);
        assert_eq!(s.target_ports, vec![8000, 8002]);
        assert_eq!(s.endpoints[0].engine, Engine::Sglang);
        assert_eq!(s.endpoints[1].engine, Engine::Vllm);
        assert_eq!(s.endpoints[1].address, "[fd00::1]:8002".parse().unwrap());
        let picker = s.endpoint_picker.as_ref().unwrap();
        assert_eq!(picker.failure_mode, FailureMode::FailOpen);
        assert!(picker.unresolved.is_some());
        assert_eq!(s.objectives[0].priority, -1);
        assert!(s.rewrites[0].created.is_some());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["endpoints"][0]["address"], "10.0.0.1:8000");
        assert_eq!(json["endpoints"][1]["engine"], "vllm");
        assert_eq!(json["endpointPicker"]["failureMode"], "FailOpen");
        assert_eq!(json["appProtocol"], "kubernetes.io/h2c");
        let back: InferencePoolSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn minimal_settings_default_the_rest() {
        let s: InferencePoolSettings = serde_json::from_str(
            r#"{"pool": {"namespace": "ns", "name": "p"}, "targetPorts": [8000], "endpointPicker": null}"#,
        )
        .unwrap();
        assert_eq!(s.app_protocol, AppProtocol::Http);
        assert!(s.endpoints.is_empty() && s.endpoint_picker.is_none());
        assert_eq!(
            serde_json::to_value(&s).unwrap()["endpointPicker"],
            serde_json::Value::Null
        );
    }
}
