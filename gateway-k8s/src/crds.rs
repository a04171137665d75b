//! Custom resources the gateway-api crate lacks: this project's `DirectResponse`, and the
//! experimental kinds translated here.
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

/// The API group of this project's own resources (`DirectResponse`).
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
