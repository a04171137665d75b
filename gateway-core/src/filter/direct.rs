//! `DirectResponse`: the first built-in custom filter. It answers every request that reaches it
//! with a fixed status, headers and body; nothing is proxied.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_proxy::Session;
use serde::Deserialize;

use super::{DirectResponse, FilterAction, FilterCtx, HttpFilter};
use crate::config::ExtensionRef;
use crate::error::{Error, ErrorKind, Result};

/// The API group of the project's own filter kinds.
pub const DIRECT_RESPONSE_GROUP: &str = "gateway.pingora-gateway.dev";
/// The kind an `ExtensionRef` names for a [`DirectResponseFilter`].
pub const DIRECT_RESPONSE_KIND: &str = "DirectResponse";

/// Answers with a fixed response.
///
/// From YAML, an HTTPRoute filter `{type: ExtensionRef, extensionRef: {group:
/// gateway.pingora-gateway.dev, kind: DirectResponse, name: NAME}}` names a `DirectResponse`
/// object whose spec is `{status: 200-599, headers: [{name, value}], body: "..."}`. From Rust,
/// build it with [`DirectResponseFilter::new`] and register it, or put an [`ExtensionRef`] with
/// that spec as its config on a rule of a gateway made with
/// [`crate::FilterRegistry::with_builtins`].
#[derive(Debug)]
pub struct DirectResponseFilter {
    response: DirectResponse,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    status: u16,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    value: String,
}

impl DirectResponseFilter {
    /// A filter answering `response`. Fails when the status is outside 200-599 or a header
    /// name or value is invalid.
    pub fn new(response: DirectResponse) -> Result<Self> {
        if !(200..=599).contains(&response.status) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "DirectResponse status {} is not in 200-599",
                    response.status
                ),
            ));
        }
        for (name, value) in &response.headers {
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("DirectResponse header name {name:?} is invalid"),
                )
            })?;
            http::HeaderValue::from_str(value).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("DirectResponse value of header {name:?} is invalid"),
                )
            })?;
        }
        Ok(DirectResponseFilter { response })
    }

    /// The [`crate::FilterFactory`] for `DirectResponse` references: reads the object's spec
    /// from [`ExtensionRef::config`].
    pub fn factory(reference: &ExtensionRef) -> Result<Arc<dyn HttpFilter>> {
        let config = reference.config.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("DirectResponse {:?} has no spec", reference.name),
            )
        })?;
        let spec: Spec = serde_json::from_value(config).map_err(|e| {
            Error::because(
                ErrorKind::InvalidConfig,
                format!("DirectResponse {:?} spec", reference.name),
                e,
            )
        })?;
        let filter = DirectResponseFilter::new(DirectResponse {
            status: spec.status,
            headers: spec
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: Bytes::from(spec.body.unwrap_or_default()),
        })?;
        Ok(Arc::new(filter))
    }
}

#[async_trait]
impl HttpFilter for DirectResponseFilter {
    async fn request_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> Result<FilterAction> {
        Ok(FilterAction::Respond(self.response.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(config: serde_json::Value) -> ExtensionRef {
        ExtensionRef::new(DIRECT_RESPONSE_GROUP, DIRECT_RESPONSE_KIND, "x").with_config(config)
    }

    #[test]
    fn factory_reads_the_spec() {
        let spec = serde_json::json!({
            "status": 418,
            "headers": [{"name": "x-tea", "value": "pot"}],
            "body": "short and stout"
        });
        assert!(DirectResponseFilter::factory(&reference(spec)).is_ok());
    }

    #[test]
    fn factory_rejects_bad_specs() {
        for spec in [
            serde_json::json!({"status": 99}),
            serde_json::json!({"status": 600}),
            serde_json::json!({"status": 200, "headers": [{"name": "bad name", "value": "v"}]}),
            serde_json::json!({"status": 200, "headers": [{"name": "x", "value": "a\nb"}]}),
            serde_json::json!({"status": 200, "colour": "red"}),
            serde_json::json!({"body": "no status"}),
        ] {
            assert!(
                DirectResponseFilter::factory(&reference(spec.clone())).is_err(),
                "{spec}"
            );
        }
        assert!(
            DirectResponseFilter::factory(&ExtensionRef::new(
                DIRECT_RESPONSE_GROUP,
                DIRECT_RESPONSE_KIND,
                "x"
            ))
            .is_err()
        );
    }
}
