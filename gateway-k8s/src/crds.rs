//! Custom resources the gateway-api crate lacks: this project's `DirectResponse` and
//! `ClientTrafficPolicy`, and the experimental kinds translated here.
//!
//! `XBackendTrafficPolicy` is re-exported from the gateway-api crate's experimental channel,
//! which already defines it.

use http::{HeaderName, HeaderValue};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use gateway_api::experimental::xbackendtrafficpolicies::{
    self, XBackendTrafficPolicy, XBackendTrafficPolicySpec, XBackendTrafficPolicyStatus,
};

/// The API group of this project's own resources (`DirectResponse`, `ClientTrafficPolicy`).
pub const DIRECT_RESPONSE_GROUP: &str = "gateway.pingora-gateway.dev";

/// The kind of [`DirectResponse`].
pub const DIRECT_RESPONSE_KIND: &str = "DirectResponse";

/// The settings of a `DirectResponse` filter object: the gateway answers the request itself with
/// this status, headers and body, and nothing goes to a backend.
///
/// Referenced from an HTTPRoute rule as an `ExtensionRef` filter
/// (`group: gateway.pingora-gateway.dev`, `kind: DirectResponse`, `name`).
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "DirectResponse",
    plural = "directresponses",
    namespaced,
    derive = "PartialEq"
)]
pub struct DirectResponseSpec {
    /// The status code, 200 to 599.
    #[schemars(range(min = 200, max = 599))]
    pub status: u16,
    /// Response headers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<DirectResponseHeader>,
    /// The response body. None: an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One header of a [`DirectResponseSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DirectResponseHeader {
    /// The header name.
    pub name: String,
    /// The header value.
    pub value: String,
}

/// Why a [`DirectResponseSpec`] cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectResponseError {
    /// The status is outside 200-599.
    #[error("status {0} is outside 200-599")]
    Status(u16),
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value holds characters HTTP does not allow.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
}

impl DirectResponseSpec {
    /// Checks what the data plane needs: a status in 200-599 and valid header names and values.
    pub fn validate(&self) -> Result<(), DirectResponseError> {
        if !(200..=599).contains(&self.status) {
            return Err(DirectResponseError::Status(self.status));
        }
        for h in &self.headers {
            HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| DirectResponseError::HeaderName(h.name.clone()))?;
            HeaderValue::from_str(&h.value)
                .map_err(|_| DirectResponseError::HeaderValue(h.name.clone()))?;
        }
        Ok(())
    }
}

/// The kind of [`ClientTrafficPolicy`] (API group [`DIRECT_RESPONSE_GROUP`]).
pub const CLIENT_TRAFFIC_POLICY_KIND: &str = "ClientTrafficPolicy";

/// How a Gateway's listeners treat their clients' requests, attached to a Gateway (all its
/// listeners) or to one listener (`sectionName`), as a Gateway API direct policy (GEP-713).
///
/// Only request path normalisation (`path`) for now; further client-side settings belong here.
/// Field names and values follow Envoy Gateway's `ClientTrafficPolicy`, so a policy written for
/// it keeps its meaning.
///
/// A listener without a policy gets the defaults of [`ClientTrafficPolicyPath`]. A policy naming
/// a listener overrides one naming the whole Gateway; between two policies naming the same
/// target, the older one (creation time, then namespace/name) applies and the newer one is
/// `Accepted=False`, reason `Conflicted`.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "ClientTrafficPolicy",
    plural = "clienttrafficpolicies",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicySpec {
    /// The Gateways (in the policy's namespace) the policy applies to; `sectionName` narrows a
    /// target to one listener.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<PolicyTargetRef>,
    /// How request paths are normalised before routing. Unset: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<ClientTrafficPolicyPath>,
}

/// A target of a policy by name, in the policy's namespace
/// (`LocalPolicyTargetReferenceWithSectionName`): a Gateway (of a [`ClientTrafficPolicy`] or
/// an attached filter policy) or an HTTPRoute (of an attached filter policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io`.
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// A listener of the Gateway, or a rule of the HTTPRoute, by name: the policy applies to
    /// that section only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// A target of a policy by label (`LocalPolicyTargetSelector`): every object of `group` and
/// `kind`, in the policy's namespace, whose labels include all of `matchLabels`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetSelector {
    /// `gateway.networking.k8s.io`.
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    pub kind: String,
    /// Labels the targets must all have. Empty: every object of the kind in the namespace.
    #[serde(default)]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// Request path normalisation settings of a [`ClientTrafficPolicy`]. Dot segments are always
/// removed, escaped unreserved characters decoded and invalid escapes answered with 400; these
/// fields choose the rest. See `gateway_core::config::PathNormalization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicyPath {
    /// What to do with `%2F` / `%5C` in a path. Default `UnescapeAndRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_slashes_action: Option<EscapedSlashesAction>,
    /// `true` keeps runs of slashes (`//`) as they are. Default `false`: they are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_merge_slashes: Option<bool>,
}

/// `path.escapedSlashesAction` of a [`ClientTrafficPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EscapedSlashesAction {
    /// Keep `%2F` / `%5C` escaped (not a separator for routing).
    KeepUnchanged,
    /// Answer 400.
    RejectRequest,
    /// Decode to `/`, then route and forward.
    UnescapeAndForward,
    /// Answer 307 with the decoded, normalised path.
    UnescapeAndRedirect,
}

/// The status this controller writes on a policy (a [`ClientTrafficPolicy`], or a filter
/// policy attached by `targetRefs`): one entry per ancestor (`PolicyAncestorStatus` of
/// GEP-713), with an `Accepted` condition: `True` (`Accepted`), or `False` with reason
/// `Invalid`, `TargetNotFound` or `Conflicted`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// One entry per ancestor; at most 16.
    #[serde(default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The status of a [`ClientTrafficPolicy`]: one entry per target, in `targetRefs` order.
pub type ClientTrafficPolicyStatus = PolicyStatus;

/// The status of a policy for one ancestor (the targeted Gateway, or one of its listeners).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The Gateway (and listener, when the target names one).
    pub ancestor_ref: PolicyAncestorRef,
    /// This controller's name.
    pub controller_name: String,
    /// The conditions: `Accepted`.
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// A parent reference in a [`PolicyAncestorStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorRef {
    /// `gateway.networking.k8s.io`.
    pub group: String,
    /// `Gateway`.
    pub kind: String,
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// The listener, when the target names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// The kind of [`XBackend`].
pub const XBACKEND_KIND: &str = "XBackend";

/// An external backend (`gateway.networking.x-k8s.io/v1alpha1` `XBackend`, GEP-4488), usable as
/// a `backendRef` (`group: gateway.networking.x-k8s.io`, `kind: XBackend`).
///
/// The gateway-api crate does not have this kind yet; this is the subset this project
/// translates: type `ExternalHostname` with a DNS name, a port, the application protocol and a
/// TLS mode (only plain connections are served: the configuration model has no upstream TLS).
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.x-k8s.io",
    version = "v1alpha1",
    kind = "XBackend",
    plural = "xbackends",
    namespaced,
    derive = "PartialEq"
)]
pub struct XBackendSpec {
    /// The backend type. Only `ExternalHostname`.
    #[serde(rename = "type")]
    pub type_: XBackendType,
    /// The DNS name to resolve (type `ExternalHostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port to connect to. A backendRef's own `port` takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The application protocol. Default `HTTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<XBackendProtocol>,
    /// TLS towards the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<XBackendTls>,
}

/// The status this controller writes on an XBackend that a route of one of its Gateways refers
/// to: `Accepted` (whether the object can be served) and, once the data plane reports on its
/// name, `ResolvedRefs` (whether the name resolved, with the addresses).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct XBackendStatus {
    /// The conditions, `Accepted` first.
    #[serde(default)]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// The type of an [`XBackendSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum XBackendType {
    /// A backend reached by DNS name.
    ExternalHostname,
}

/// The application protocol of an [`XBackendSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum XBackendProtocol {
    /// HTTP/1.1.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/2 with prior knowledge.
    #[serde(rename = "H2C")]
    H2c,
    /// HTTP/1.1 carrying WebSocket upgrades.
    #[serde(rename = "WebSocket")]
    WebSocket,
}

/// TLS settings of an [`XBackendSpec`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct XBackendTls {
    /// `None` (plain connections) or a TLS mode (e.g. `Simple`), which this project cannot serve
    /// yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use kube::Resource;

    #[test]
    fn direct_response_parses_and_validates() {
        let value = serde_json::json!({
            "apiVersion": "gateway.pingora-gateway.dev/v1alpha1",
            "kind": "DirectResponse",
            "metadata": {"name": "teapot", "namespace": "n"},
            "spec": {
                "status": 418,
                "headers": [{"name": "x-tea", "value": "earl grey"}],
                "body": "I'm a teapot"
            }
        });
        let dr: DirectResponse = serde_json::from_value(value).expect("parses");
        assert_eq!(dr.spec.status, 418);
        assert_eq!(dr.spec.body.as_deref(), Some("I'm a teapot"));
        assert_eq!(dr.spec.validate(), Ok(()));
        assert_eq!(DirectResponse::group(&()), DIRECT_RESPONSE_GROUP);
        assert_eq!(DirectResponse::kind(&()), DIRECT_RESPONSE_KIND);

        let mut bad = dr.spec.clone();
        bad.status = 99;
        assert_eq!(bad.validate(), Err(DirectResponseError::Status(99)));
        let mut bad = dr.spec.clone();
        bad.headers[0].name = "bad name".into();
        assert!(matches!(
            bad.validate(),
            Err(DirectResponseError::HeaderName(_))
        ));
        let mut bad = dr.spec;
        bad.headers[0].value = "a\nb".into();
        assert!(matches!(
            bad.validate(),
            Err(DirectResponseError::HeaderValue(_))
        ));
    }

    #[test]
    fn client_traffic_policy_parses_and_has_a_crd() {
        let value = serde_json::json!({
            "apiVersion": "gateway.pingora-gateway.dev/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"}],
                "path": {"escapedSlashesAction": "KeepUnchanged", "disableMergeSlashes": true}
            }
        });
        let p: ClientTrafficPolicy = serde_json::from_value(value).expect("parses");
        assert_eq!(p.spec.target_refs[0].section_name.as_deref(), Some("http"));
        let path = p.spec.path.expect("path");
        assert_eq!(
            path.escaped_slashes_action,
            Some(EscapedSlashesAction::KeepUnchanged)
        );
        assert_eq!(path.disable_merge_slashes, Some(true));
        let bad = serde_json::json!({
            "apiVersion": "gateway.pingora-gateway.dev/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": {"name": "p"},
            "spec": {"targetRefs": [], "path": {"escapedSlashesAction": "Sometimes"}}
        });
        assert!(serde_json::from_value::<ClientTrafficPolicy>(bad).is_err());

        let crd = ClientTrafficPolicy::crd();
        assert_eq!(crd.spec.group, DIRECT_RESPONSE_GROUP);
        assert_eq!(crd.spec.names.kind, CLIENT_TRAFFIC_POLICY_KIND);
        assert_eq!(crd.spec.scope, "Namespaced");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["targetRefs"]));
        let action = &spec["properties"]["path"]["properties"]["escapedSlashesAction"];
        assert!(
            action.to_string().contains("UnescapeAndRedirect"),
            "{action}"
        );
    }

    #[test]
    fn direct_response_crd_is_namespaced_with_status_range() {
        let crd = DirectResponse::crd();
        assert_eq!(crd.spec.group, DIRECT_RESPONSE_GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let status = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["status"];
        assert_eq!(status["minimum"].as_f64(), Some(200.0));
        assert_eq!(status["maximum"].as_f64(), Some(599.0));
        let required = &schema["openAPIV3Schema"]["properties"]["spec"]["required"];
        assert_eq!(required, &serde_json::json!(["status"]));
    }
}
