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
use crate::respond::answer;

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
    /// The accepted keys and the client each belongs to. At least one.
    pub keys: Vec<ApiKey>,
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

enum Source {
    Header(HeaderName),
    Query(String),
    Cookie(String),
}

/// The `APIKeyAuth` filter, built from an [`ApiKeyAuthSpec`].
pub struct ApiKeyAuthFilter {
    keys: HashMap<[u8; 32], String>,
    sources: Vec<Source>,
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
        if spec.keys.is_empty() {
            return Err(SpecError::invalid("keys", "at least one key is needed"));
        }
        let mut keys = HashMap::with_capacity(spec.keys.len());
        for (i, k) in spec.keys.iter().enumerate() {
            if k.key.is_empty() {
                return Err(SpecError::invalid(format!("keys[{i}].key"), "is empty"));
            }
            if keys
                .insert(digest(k.key.as_bytes()), k.client.clone())
                .is_some()
            {
                return Err(SpecError::invalid(
                    format!("keys[{i}].key"),
                    "is the same as an earlier key",
                ));
            }
        }
        let mut sources = Vec::new();
        for (i, s) in spec.extract_from.iter().enumerate() {
            let field = format!("extractFrom[{i}]");
            sources.push(match s {
                KeySource::Header(h) => Source::Header(header_name(&field, h)?),
                KeySource::Query(q) if !q.is_empty() => Source::Query(q.clone()),
                KeySource::Cookie(c) if !c.is_empty() => Source::Cookie(c.clone()),
                _ => return Err(SpecError::invalid(field, "the name is empty")),
            });
        }
        if sources.is_empty() {
            sources.push(Source::Header(HeaderName::from_static("x-api-key")));
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
    fn find<'s>(&'s self, session: &Session) -> Option<(&'s Source, String)> {
        let req = session.req_header();
        self.sources.iter().find_map(|source| {
            let key = match source {
                Source::Header(h) => req.headers.get(h)?.to_str().ok()?.trim().to_owned(),
                Source::Query(q) => query_pairs(req.uri.query()?)
                    .find(|(n, _)| n == q)
                    .map(|(_, v)| v)?,
                Source::Cookie(c) => cookies(req)
                    .find(|(n, _)| n == c)
                    .map(|(_, v)| v.to_owned())?,
            };
            Some((source, key))
        })
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` as a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(n), decode(v))
    })
}

fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (b, escaped) {
            (_, Some(e)) => {
                out.push(e);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `name=value` cookies of every `Cookie` header line.
fn cookies(req: &gateway_core::RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|c| {
            let (n, v) = c.trim().split_once('=')?;
            Some((n.trim(), v.trim().trim_matches('"')))
        })
}

/// Removes the key from the request, as found at `source`.
fn remove(session: &mut Session, source: &Source) {
    let req = session.req_header_mut();
    match source {
        Source::Header(h) => {
            req.remove_header(h);
        }
        Source::Query(q) => {
            let Some(query) = req.uri.query() else { return };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && decode(p.split_once('=').map_or(*p, |(n, _)| n)) != *q)
                .collect();
            let path = req.uri.path();
            let target = if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            if let Ok(uri) = target.parse::<http::Uri>() {
                req.set_uri(uri);
            }
        }
        Source::Cookie(c) => {
            let kept: Vec<String> = cookies(req)
                .filter(|(n, _)| n != c)
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            req.remove_header(&http::header::COOKIE);
            if !kept.is_empty() {
                let _ = req.insert_header(http::header::COOKIE, kept.join("; "));
            }
        }
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
            remove(session, source);
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
    fn query_values_are_decoded() {
        let pairs: Vec<_> = query_pairs("a=1&api_key=x%2By+z&&b").collect();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("api_key".into(), "x+y z".into()),
                ("b".into(), String::new())
            ]
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%41"), "A");
    }

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
