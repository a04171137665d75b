//! `APIKeyAuth`: API keys looked up in headers, query parameters or cookies.
//!
//! Runs in `request_headers`. The sources in `extractFrom` are tried in order and the first one
//! present is the request's key; a request without one, or with a key that is not configured, is
//! answered 401. Keys are kept and compared as SHA-256 digests. The client the key belongs to can
//! be passed to the backend (`forwardClientIDHeader`), and the key removed from the request before
//! it goes on (`sanitize`).

use std::collections::HashMap;

use gateway_core::{FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use http::HeaderName;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::digest;
use crate::SpecError;
use crate::request::Location;
use crate::respond::answer;
use crate::secret::SecretSource;

/// The kind of [`APIKeyAuth`] objects.
pub const KIND: &str = "APIKeyAuth";

/// Settings of an `APIKeyAuth` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "APIKeyAuth",
    plural = "apikeyauths",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuthSpec {
    /// The accepted keys and the client each belongs to. With `keysFrom`, at least one key in
    /// all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ApiKey>,
    /// More keys, from Secrets: each entry of a Secret's data is one client, its key the
    /// client's id and its value the API key (`key` set: that entry only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_from: Vec<SecretSource>,
    /// Where the key is looked for, in order. Default: the `x-api-key` header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extract_from: Vec<KeySource>,
    /// A request header set to the client's id before the request goes on. Unset: none.
    #[serde(
        default,
        rename = "forwardClientIDHeader",
        skip_serializing_if = "Option::is_none"
    )]
    pub forward_client_id_header: Option<String>,
    /// Remove the key from the request (its header, query parameter or cookie) before it goes
    /// on. Default: false.
    #[serde(default)]
    pub sanitize: bool,
}

/// One accepted API key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who the key belongs to (the value of `forwardClientIDHeader`).
    pub client: String,
    /// The key itself.
    pub key: String,
}

/// Where a request carries its API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeySource {
    /// A request header, by name (its whole value is the key).
    Header(String),
    /// A query parameter, by name (its value, percent-decoded, is the key).
    Query(String),
    /// A cookie, by name.
    Cookie(String),
}

/// The `APIKeyAuth` filter, built from an [`ApiKeyAuthSpec`].
pub struct ApiKeyAuthFilter {
    keys: HashMap<[u8; 32], String>,
    sources: Vec<Location>,
    forward: Option<HeaderName>,
    sanitize: bool,
}

impl std::fmt::Debug for ApiKeyAuthFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyAuthFilter")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn header_name(field: &str, name: &str) -> Result<HeaderName, SpecError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| SpecError::invalid(field, format!("{name:?} is not a header name")))
}

impl ApiKeyAuthFilter {
    /// Checks `spec`: at least one key, no empty or repeated key, valid header names.
    pub fn new(spec: ApiKeyAuthSpec) -> Result<Self, SpecError> {
        let mut all: Vec<(String, &str, &str)> = spec
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("keys[{i}].key"), k.client.as_str(), k.key.as_str()))
            .collect();
        for (i, source) in spec.keys_from.iter().enumerate() {
            let field = format!("keysFrom[{i}]");
            for (client, key) in source.entries(&field)? {
                all.push((format!("{field} entry {client}"), client, key.trim()));
            }
        }
        if all.is_empty() {
            return Err(SpecError::invalid("keys", "at least one key is needed"));
        }
        let mut keys = HashMap::with_capacity(all.len());
        for (field, client, key) in all {
            if key.is_empty() {
                return Err(SpecError::invalid(field, "is empty"));
            }
            if keys
                .insert(digest(key.as_bytes()), client.to_string())
                .is_some()
            {
                return Err(SpecError::invalid(field, "is the same as an earlier key"));
            }
        }
        let mut sources = Vec::new();
        for (i, s) in spec.extract_from.iter().enumerate() {
            let field = format!("extractFrom[{i}]");
            sources.push(match s {
                KeySource::Header(h) => Location::Header(header_name(&field, h)?, None),
                KeySource::Query(q) if !q.is_empty() => Location::Query(q.clone()),
                KeySource::Cookie(c) if !c.is_empty() => Location::Cookie(c.clone()),
                _ => return Err(SpecError::invalid(field, "the name is empty")),
            });
        }
        if sources.is_empty() {
            sources.push(Location::Header(HeaderName::from_static("x-api-key"), None));
        }
        let forward = spec
            .forward_client_id_header
            .as_deref()
            .map(|h| header_name("forwardClientIDHeader", h))
            .transpose()?;
        Ok(ApiKeyAuthFilter {
            keys,
            sources,
            forward,
            sanitize: spec.sanitize,
        })
    }

    /// The first source present in the request and the key it holds.
    fn find(&self, session: &Session) -> Option<(&Location, String)> {
        let req = session.req_header();
        self.sources.iter().find_map(|s| Some((s, s.find(req)?)))
    }
}

#[async_trait]
impl HttpFilter for ApiKeyAuthFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let Some((source, key)) = self.find(session) else {
            return Ok(answer(401, "unauthorized\n", Vec::new()));
        };
        let Some(client) = self.keys.get(&digest(key.as_bytes())) else {
            return Ok(answer(401, "unauthorized\n", Vec::new()));
        };
        if self.sanitize {
            source.remove(session.req_header_mut());
        }
        if let Some(h) = &self.forward
            && session
                .req_header_mut()
                .insert_header(h.clone(), client.as_str())
                .is_err()
        {
            return Ok(answer(401, "unauthorized\n", Vec::new()));
        }
        Ok(FilterAction::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_name_the_field() {
        let spec = |keys: Vec<(&str, &str)>| ApiKeyAuthSpec {
            keys: keys
                .into_iter()
                .map(|(c, k)| ApiKey {
                    client: c.into(),
                    key: k.into(),
                })
                .collect(),
            ..Default::default()
        };
        let err = |s| ApiKeyAuthFilter::new(s).unwrap_err().to_string();
        assert_eq!(err(spec(vec![])), "keys: at least one key is needed");
        assert_eq!(
            err(spec(vec![("a", "k"), ("b", "k")])),
            "keys[1].key: is the same as an earlier key"
        );
        let mut s = spec(vec![("a", "k")]);
        s.extract_from = vec![KeySource::Header("bad header".into())];
        assert_eq!(
            err(s),
            "extractFrom[0]: \"bad header\" is not a header name"
        );
        let parsed: ApiKeyAuthSpec = serde_json::from_str(
            r#"{"keys":[{"client":"a","key":"k"}],"extractFrom":[{"query":"api_key"},{"cookie":"k"}],"forwardClientIDHeader":"x-client","sanitize":true}"#,
        )
        .unwrap();
        assert_eq!(parsed.extract_from[0], KeySource::Query("api_key".into()));
        assert!(ApiKeyAuthFilter::new(parsed).is_ok());
    }
}
