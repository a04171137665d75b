//! `Transformation`: request and response headers and bodies rewritten by templates.
//!
//! Templates use Jinja2 syntax (the `minijinja` engine) and are compiled when the filter is built:
//! a template that does not compile refuses the settings, naming the field, so no template error
//! is found on the request path. What a template sees:
//!
//! | name | request templates | response templates |
//! |---|---|---|
//! | `method`, `path`, `query` (map of first values) | the request's | the request's |
//! | `headers` (map, lower-case names, repeated values joined by `,`) | the request's | the response's |
//! | `request_headers` | - | the request's |
//! | `status` | - | the response status |
//! | `body` | the request body (`parseAs: AsJson`: parsed; else text), in `body` templates | the response body, in `body` templates |
//!
//! Functions: `header(name)` (the current headers), `request_header(name)`,
//! `base64_encode(s)`, `base64_decode(s)`, `substring(s, start, length)`, and Jinja's built-in
//! filters (`tojson`, `trim`, `replace`, `lower`, `default`, ...). Each render is bounded (fuel);
//! an undefined value prints as empty.
//!
//! Order: `remove`, then `set` (replacing), then `add` (appending), then `body`. Header templates
//! run in `request_headers` / `response_headers`. A request `body` template makes the gateway
//! buffer the request body (up to `maxBytes`, larger: 413) and send the rendered body with its new
//! `Content-Length`; a body that does not parse as JSON under `AsJson` is answered 400. A response
//! `body` template buffers the response body (up to `maxBytes`): the rendered body is sent
//! instead; a longer body, or one that does not parse, is passed on unchanged (logged). A header
//! whose rendered value is not a valid header value is left out (logged).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use gateway_core::{
    FilterAction, FilterCtx, HttpFilter, RequestHeader, ResponseHeader, Session, async_trait,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use kube::CustomResource;
use minijinja::value::Serde;
use minijinja::{Environment, State, UndefinedBehavior};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SpecError;
use crate::request::query_pairs;
use crate::respond::answer;

/// The kind of [`Transformation`] objects.
pub const KIND: &str = "Transformation";

/// The most template instructions one render may run.
const FUEL: u64 = 200_000;

/// Settings of a `Transformation` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "Transformation",
    plural = "transformations",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformationSpec {
    /// What is done to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Transform>,
    /// What is done to the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Transform>,
}

/// Header and body templates for one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transform {
    /// Headers set (replacing), with templated values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderTemplate>,
    /// Headers appended, with templated values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderTemplate>,
    /// Header names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// The body, rendered from a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyTemplate>,
}

/// A header and its value template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderTemplate {
    /// The header name.
    pub name: String,
    /// The value template.
    pub value: String,
}

/// A body template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyTemplate {
    /// How the body is given to the template as `body`. Default: `AsString`.
    #[serde(default)]
    pub parse_as: ParseAs,
    /// The template of the new body.
    pub value: String,
    /// The largest body buffered for it. Default: 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// How a body is given to a template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ParseAs {
    /// As text (invalid UTF-8 replaced).
    #[default]
    AsString,
    /// Parsed as JSON.
    AsJson,
}

struct Side {
    set: Vec<(HeaderName, String)>,
    add: Vec<(HeaderName, String)>,
    remove: Vec<HeaderName>,
    body: Option<(ParseAs, String, usize)>,
}

/// The `Transformation` filter, built from a [`TransformationSpec`].
pub struct TransformationFilter {
    env: Environment<'static>,
    request: Option<Side>,
    response: Option<Side>,
}

impl std::fmt::Debug for TransformationFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformationFilter")
            .finish_non_exhaustive()
    }
}

/// The request as response templates see it, captured in `request_headers` (request state,
/// [`FilterCtx::insert_state`]).
struct SeenRequest(Value);

/// A response body being collected for its template (request state; `None` once given up).
struct Collecting(Option<BytesMut>);

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    out
}

fn request_context(req: &RequestHeader) -> Value {
    let mut query = serde_json::Map::new();
    for (name, value) in req.uri.query().map(query_pairs).into_iter().flatten() {
        query.entry(name).or_insert(Value::String(value));
    }
    serde_json::json!({
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "query": query,
        "headers": header_map(&req.headers),
    })
}

fn lookup_header(state: &State, map: &str, name: &str) -> Option<String> {
    let headers = state.lookup(map)?;
    let v = headers.get_attr(&name.to_ascii_lowercase()).ok()?;
    v.as_str().map(str::to_owned)
}

impl TransformationFilter {
    /// Compiles every template of `spec`; one that does not compile is an error naming its field
    /// and the engine's message.
    pub fn new(spec: TransformationSpec) -> Result<Self, SpecError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(FUEL));
        env.add_function("header", |state: &State, name: &str| {
            lookup_header(state, "headers", name)
        });
        env.add_function("request_header", |state: &State, name: &str| {
            lookup_header(state, "request_headers", name).or_else(|| {
                // In request templates, the request's own headers.
                state
                    .lookup("request_headers")
                    .is_none()
                    .then(|| lookup_header(state, "headers", name))
                    .flatten()
            })
        });
        env.add_function("base64_encode", |s: &str| STANDARD.encode(s));
        env.add_function("base64_decode", |s: &str| {
            STANDARD
                .decode(s.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        });
        env.add_function("substring", |s: &str, start: usize, len: Option<usize>| {
            let chars = s.chars().skip(start);
            match len {
                Some(n) => chars.take(n).collect::<String>(),
                None => chars.collect(),
            }
        });
        let request = spec
            .request
            .map(|t| Self::side(&mut env, "request", t))
            .transpose()?;
        let response = spec
            .response
            .map(|t| Self::side(&mut env, "response", t))
            .transpose()?;
        if request.is_none() && response.is_none() {
            return Err(SpecError::invalid(
                "spec",
                "sets neither request nor response",
            ));
        }
        Ok(TransformationFilter {
            env,
            request,
            response,
        })
    }

    fn side(env: &mut Environment<'static>, prefix: &str, t: Transform) -> Result<Side, SpecError> {
        let mut compile = |field: String, source: String| -> Result<String, SpecError> {
            env.add_template_owned(field.clone(), source).map_err(|e| {
                SpecError::invalid(&field, format!("template does not compile: {e}"))
            })?;
            Ok(field)
        };
        let name = |field: &str, n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| SpecError::invalid(field, format!("{n:?} is not a header name")))
        };
        let mut set = Vec::new();
        for (i, h) in t.set.into_iter().enumerate() {
            let field = format!("{prefix}.set[{i}]");
            set.push((
                name(&field, &h.name)?,
                compile(format!("{field}.value"), h.value)?,
            ));
        }
        let mut add = Vec::new();
        for (i, h) in t.add.into_iter().enumerate() {
            let field = format!("{prefix}.add[{i}]");
            add.push((
                name(&field, &h.name)?,
                compile(format!("{field}.value"), h.value)?,
            ));
        }
        let remove = t
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| name(&format!("{prefix}.remove[{i}]"), n))
            .collect::<Result<_, _>>()?;
        let body = match t.body {
            None => None,
            Some(b) => {
                let max = b.max_bytes.unwrap_or(1 << 20);
                let max = usize::try_from(max)
                    .ok()
                    .filter(|m| *m > 0)
                    .ok_or_else(|| {
                        SpecError::invalid(format!("{prefix}.body.maxBytes"), "must be above 0")
                    })?;
                Some((
                    b.parse_as,
                    compile(format!("{prefix}.body.value"), b.value)?,
                    max,
                ))
            }
        };
        Ok(Side {
            set,
            add,
            remove,
            body,
        })
    }

    fn render(&self, template: &str, ctx: &Value) -> Result<String, minijinja::Error> {
        self.env.get_template(template)?.render(Serde(ctx))
    }

    /// Applies the header templates of `side` to `headers`.
    fn edit_headers(&self, side: &Side, ctx: &Value, headers: &mut impl EditHeaders) {
        for name in &side.remove {
            headers.remove(name);
        }
        for (name, template, append) in side
            .set
            .iter()
            .map(|(n, t)| (n, t, false))
            .chain(side.add.iter().map(|(n, t)| (n, t, true)))
        {
            match self.render(template, ctx).map(HeaderValue::try_from) {
                Ok(Ok(value)) => headers.put(name.clone(), value, append),
                Ok(Err(_)) => {
                    tracing::debug!(header = %name, "transformation: rendered value is not a header value")
                }
                Err(e) => {
                    tracing::debug!(header = %name, error = %e, "transformation: template failed")
                }
            }
        }
    }
}

/// Request and response headers alike.
trait EditHeaders {
    fn remove(&mut self, name: &HeaderName);
    fn put(&mut self, name: HeaderName, value: HeaderValue, append: bool);
}

/// Request and response headers share Pingora's setters. They fail only on invalid names or
/// values, which are already checked.
macro_rules! edit_headers {
    ($($t:ty),*) => {$(
        impl EditHeaders for $t {
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
            fn put(&mut self, name: HeaderName, value: HeaderValue, append: bool) {
                let _ = if append {
                    self.append_header(name, value).map(|_| ())
                } else {
                    self.insert_header(name, value)
                };
            }
        }
    )*};
}

edit_headers!(RequestHeader, ResponseHeader);

fn parse_body(parse_as: ParseAs, body: &[u8]) -> Option<Value> {
    match parse_as {
        ParseAs::AsString => Some(Value::String(String::from_utf8_lossy(body).into_owned())),
        ParseAs::AsJson => serde_json::from_slice(body).ok(),
    }
}

#[async_trait]
impl HttpFilter for TransformationFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if let Some(side) = &self.request {
            let context = request_context(session.req_header());
            self.edit_headers(side, &context, session.req_header_mut());
            if let Some((_, _, max)) = &side.body {
                ctx.buffer_request_body(*max);
            }
        }
        if self.response.is_some() {
            let mut seen = request_context(session.req_header());
            if let Some(map) = seen.as_object_mut()
                && let Some(h) = map.remove("headers")
            {
                map.insert("request_headers".into(), h);
            }
            ctx.insert_state(SeenRequest(seen));
        }
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        let Some((parse_as, template, _)) = self.request.as_ref().and_then(|s| s.body.as_ref())
        else {
            return Ok(FilterAction::Continue);
        };
        if !end_of_stream {
            return Ok(FilterAction::Continue);
        }
        let raw = body.as_deref().unwrap_or(&[]);
        let Some(parsed) = parse_body(*parse_as, raw) else {
            return Ok(answer(400, "request body is not JSON\n", Vec::new()));
        };
        let mut context = request_context(session.req_header());
        if let Some(map) = context.as_object_mut() {
            map.insert("body".into(), parsed);
        }
        match self.render(template, &context) {
            Ok(rendered) => *body = Some(Bytes::from(rendered)),
            Err(e) => {
                tracing::warn!(error = %e, "transformation: request body template failed; body unchanged");
            }
        }
        Ok(FilterAction::Continue)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let Some(side) = &self.response else {
            return Ok(());
        };
        let Some(SeenRequest(seen)) = ctx.state::<SeenRequest>() else {
            return Ok(());
        };
        let mut context = seen.clone();
        if let Some(map) = context.as_object_mut() {
            map.insert("status".into(), response.status.as_u16().into());
            map.insert(
                "headers".into(),
                serde_json::to_value(header_map(&response.headers)).unwrap_or_default(),
            );
        }
        self.edit_headers(side, &context, response);
        if side.body.is_some() {
            response.remove_header(&http::header::CONTENT_LENGTH);
            if let Some(map) = context.as_object_mut() {
                map.insert(
                    "headers".into(),
                    serde_json::to_value(header_map(&response.headers)).unwrap_or_default(),
                );
            }
            ctx.insert_state(SeenRequest(context));
            ctx.insert_state(Collecting(Some(BytesMut::new())));
        }
        Ok(())
    }

    fn response_body(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<()> {
        let Some((parse_as, template, max)) = self.response.as_ref().and_then(|s| s.body.as_ref())
        else {
            return Ok(());
        };
        let Some(Collecting(slot)) = ctx.state_mut::<Collecting>() else {
            return Ok(());
        };
        let Some(buf) = slot.as_mut() else {
            // Gave up on this body: it passes unchanged.
            return Ok(());
        };
        if let Some(chunk) = body.take() {
            buf.extend_from_slice(&chunk);
        }
        if buf.len() > *max {
            tracing::warn!(
                limit = max,
                "transformation: response body over maxBytes; sent unchanged"
            );
            *body = slot.take().map(BytesMut::freeze);
            return Ok(());
        }
        if !end_of_stream {
            return Ok(());
        }
        let raw = slot.take().map(BytesMut::freeze).unwrap_or_default();
        let Some(parsed) = parse_body(*parse_as, &raw) else {
            tracing::debug!("transformation: response body does not parse; sent unchanged");
            *body = Some(raw);
            return Ok(());
        };
        let mut context = ctx
            .remove_state::<SeenRequest>()
            .map(|s| s.0)
            .unwrap_or_default();
        if let Some(map) = context.as_object_mut() {
            map.insert("body".into(), parsed);
        }
        *body = Some(match self.render(template, &context) {
            Ok(rendered) => Bytes::from(rendered),
            Err(e) => {
                tracing::warn!(error = %e, "transformation: response body template failed; sent unchanged");
                raw
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_when_built_and_errors_name_the_field() {
        let spec: TransformationSpec = serde_json::from_value(serde_json::json!({
            "request": {"set": [{"name": "x-a", "value": "{{ header('x-b') }}"}, {"name": "x-c", "value": "{{ oops"}]}
        }))
        .unwrap();
        let err = TransformationFilter::new(spec).unwrap_err().to_string();
        assert!(
            err.starts_with("request.set[1].value: template does not compile"),
            "{err}"
        );
        assert_eq!(
            TransformationFilter::new(TransformationSpec::default())
                .unwrap_err()
                .to_string(),
            "spec: sets neither request nor response"
        );
    }

    #[test]
    fn functions_and_context() {
        let spec: TransformationSpec = serde_json::from_value(serde_json::json!({
            "request": {"body": {"parseAs": "AsJson", "value": "{{ body.model | upper }}|{{ header('X-Id') }}|{{ base64_encode('hi') }}|{{ base64_decode('aGk=') }}|{{ substring('abcdef', 1, 3) }}|{{ query.q }}|{{ missing }}"}}
        }))
        .unwrap();
        let f = TransformationFilter::new(spec).unwrap();
        let ctx = serde_json::json!({"headers": {"x-id": "7"}, "query": {"q": "v"}, "body": {"model": "gpt"}});
        assert_eq!(
            f.render("request.body.value", &ctx).unwrap(),
            "GPT|7|aGk=|hi|bcd|v|"
        );
    }
}
