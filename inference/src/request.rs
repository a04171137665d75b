//! OpenAI request bodies: parsing (model, prompt text, stream, max tokens), rewriting the
//! `model` field in request and response bodies, and the header names of the Inference
//! Extension and llm-d.
//!
//! Called by the data plane after the request body has been buffered: [`parse_request`] gives
//! the model name (also exposed as [`HEADER_MODEL_NAME`] for body-based routing) and the prompt
//! text the prefix-cache scorer hashes. A [`RequestError`] means a malformed client request:
//! the gateway answers 400. When an `InferenceModelRewrite` changed the model,
//! [`rewrite_model`] edits the request body and [`rewrite_response_model`] /
//! [`rewrite_sse_event`] put the requested name back into the response.
//!
//! The rewrite functions edit only the bytes of the top-level `"model"` value: key order,
//! whitespace and number formatting of the rest of the body are kept byte for byte.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Deserialize;

/// Request header naming the `InferenceObjective` (and so the priority) of a request.
pub const HEADER_OBJECTIVE: &str = "x-llm-d-inference-objective";
/// Deprecated alias of [`HEADER_OBJECTIVE`], read when the new header is absent.
pub const HEADER_OBJECTIVE_DEPRECATED: &str = "x-gateway-inference-objective";
/// Request header naming the fairness flow of a request inside its priority band.
pub const HEADER_FAIRNESS_ID: &str = "x-llm-d-inference-fairness-id";
/// The flow of requests without [`HEADER_FAIRNESS_ID`].
pub const DEFAULT_FAIRNESS_ID: &str = "default-flow";
/// Request header asking for a model name rewrite (llm-d), stripped before forwarding.
pub const HEADER_MODEL_NAME_REWRITE: &str = "x-llm-d-model-name-rewrite";
/// The picked endpoints, `ip:port[,ip:port...]`: the first is the primary, the rest are
/// fallbacks in order (header set toward the upstream and metadata key in `envoy.lb`).
pub const HEADER_DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// The endpoint that actually served the request (`ip:port`), reported in the response phase.
pub const HEADER_DESTINATION_ENDPOINT_SERVED: &str = "x-gateway-destination-endpoint-served";
/// The request body's model name, set before route matching (body-based routing). Header names
/// are case-insensitive; upstream spells it `X-Gateway-Model-Name`, this is the lower-case
/// form the `http` crate needs.
pub const HEADER_MODEL_NAME: &str = "x-gateway-model-name";
/// Response header carrying a [`DroppedReason`] when the gateway rejects or evicts a request.
pub const HEADER_DROPPED_REASON: &str = "x-llm-d-request-dropped-reason";

/// The objective a request names: [`HEADER_OBJECTIVE`], else [`HEADER_OBJECTIVE_DEPRECATED`];
/// `None` when neither is present (or not visible ASCII), which means priority 0.
pub fn objective_name(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(HEADER_OBJECTIVE)
        .or_else(|| headers.get(HEADER_OBJECTIVE_DEPRECATED))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The fairness flow of a request: [`HEADER_FAIRNESS_ID`], or [`DEFAULT_FAIRNESS_ID`] when it
/// is absent, empty or not visible ASCII.
pub fn fairness_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(HEADER_FAIRNESS_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_FAIRNESS_ID)
}

/// Why a request was not served, sent in [`HEADER_DROPPED_REASON`] with [`Self::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DroppedReason {
    /// `rejected-saturated` (429): the pool lacked capacity (sheddable request while saturated,
    /// no candidate left after filtering, or a full flow-control band).
    Saturated,
    /// `rejected-no-endpoints` (503): the pool has no endpoint.
    NoEndpoints,
    /// `rejected-ttl-expired` (429): the request waited in flow control longer than its TTL.
    TtlExpired,
    /// `rejected-context-cancelled` (503): the client went away while the request waited.
    ContextCancelled,
    /// `rejected-shutting-down` (503): the gateway is stopping.
    ShuttingDown,
    /// `rejected-internal` (500).
    Internal,
    /// `evicted` (429): a dispatched request was ended by flow control.
    Evicted,
}

impl DroppedReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DroppedReason::Saturated => "rejected-saturated",
            DroppedReason::NoEndpoints => "rejected-no-endpoints",
            DroppedReason::TtlExpired => "rejected-ttl-expired",
            DroppedReason::ContextCancelled => "rejected-context-cancelled",
            DroppedReason::ShuttingDown => "rejected-shutting-down",
            DroppedReason::Internal => "rejected-internal",
            DroppedReason::Evicted => "evicted",
        }
    }

    /// The HTTP status the reference endpoint picker answers with.
    pub fn status(self) -> u16 {
        match self {
            DroppedReason::Saturated | DroppedReason::TtlExpired | DroppedReason::Evicted => 429,
            DroppedReason::NoEndpoints
            | DroppedReason::ContextCancelled
            | DroppedReason::ShuttingDown => 503,
            DroppedReason::Internal => 500,
        }
    }
}

/// Which OpenAI API a request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    /// `POST /v1/completions`: `prompt`.
    Completions,
    /// `POST /v1/chat/completions`: `messages`.
    ChatCompletions,
}

impl ApiKind {
    /// The API of a request path (a query string is ignored); `None` for other paths, which the
    /// gateway forwards without parsing.
    pub fn from_path(path: &str) -> Option<ApiKind> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path {
            "/v1/completions" => Some(ApiKind::Completions),
            "/v1/chat/completions" => Some(ApiKind::ChatCompletions),
            _ => None,
        }
    }
}

/// A malformed inference request; the gateway answers 400 with the message.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON or a field has the wrong type.
    #[error("invalid request body: {0}")]
    Json(#[from] serde_json::Error),
    /// `model` is missing or empty.
    #[error("the request body has no \"model\"")]
    MissingModel,
    /// A completions request without `prompt`.
    #[error("the request body has no \"prompt\"")]
    MissingPrompt,
    /// A chat request without `messages` (or with an empty list).
    #[error("the request body has no \"messages\"")]
    MissingMessages,
    /// The body is not a JSON object (rewrite functions).
    #[error("the body is not a JSON object")]
    NotAnObject,
}

/// What the scheduler needs from an inference request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmRequest {
    /// The requested model (before any rewrite).
    pub model: String,
    /// The prompt as text, rendered prefix-stably (see [`parse_request`]); only used for
    /// prefix hashing, never forwarded.
    pub prompt: String,
    /// `stream: true` (an SSE response).
    pub stream: bool,
    /// `max_tokens`, or for chat `max_completion_tokens` when set.
    pub max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Parses a completions or chat-completions body.
///
/// The prompt text: for completions a string prompt as is, a list of strings joined with `\n`,
/// token-id prompts as decimal ids separated by `,` (lists by `\n`). For chat each message is
/// rendered as `<role>\n<content>\n` in order, where array content contributes its text parts
/// and `[<type>]` for other parts (images etc.); the rendering of a message never depends on
/// later messages, so a conversation's text is a prefix of its continuation's text.
pub fn parse_request(kind: ApiKind, body: &[u8]) -> Result<LlmRequest, RequestError> {
    let raw: RawRequest<'_> = serde_json::from_slice(body)?;
    let model = match raw.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(RequestError::MissingModel),
    };
    let (prompt, max_tokens) = match kind {
        ApiKind::Completions => {
            let prompt = match raw.prompt.ok_or(RequestError::MissingPrompt)? {
                Prompt::Text(s) => s,
                Prompt::Texts(v) => v.join("\n"),
                Prompt::Tokens(t) => render_tokens(&t),
                Prompt::TokenLists(l) => l
                    .iter()
                    .map(|t| render_tokens(t))
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            (prompt, raw.max_tokens)
        }
        ApiKind::ChatCompletions => {
            let messages = raw.messages.filter(|m| !m.is_empty());
            let messages = messages.ok_or(RequestError::MissingMessages)?;
            (
                render_chat(&messages),
                raw.max_completion_tokens.or(raw.max_tokens),
            )
        }
    };
    Ok(LlmRequest {
        model,
        prompt,
        stream: raw.stream.unwrap_or(false),
        max_tokens,
    })
}

fn render_tokens(tokens: &[u64]) -> String {
    let mut s = String::with_capacity(tokens.len() * 6);
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{t}");
    }
    s
}

fn render_chat(messages: &[Message]) -> String {
    let len: usize = messages
        .iter()
        .map(|m| {
            m.role.len()
                + 2
                + match &m.content {
                    Some(Content::Text(t)) => t.len(),
                    Some(Content::Parts(p)) => p
                        .iter()
                        .map(|p| p.text.as_ref().map_or(p.kind.len() + 2, String::len))
                        .sum(),
                    None => 0,
                }
        })
        .sum();
    let mut out = String::with_capacity(len);
    for m in messages {
        out.push_str(&m.role);
        out.push('\n');
        match &m.content {
            Some(Content::Text(t)) => out.push_str(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    match &p.text {
                        Some(t) if p.kind == "text" || p.kind.is_empty() => out.push_str(t),
                        _ => {
                            out.push('[');
                            out.push_str(&p.kind);
                            out.push(']');
                        }
                    }
                }
            }
            None => {}
        }
        out.push('\n');
    }
    out
}

/// Replaces the top-level `"model"` value of a JSON request body with `model` (adding the field
/// when it is missing). The body should be one [`parse_request`] accepted; everything but the
/// model value is kept byte for byte. The data plane must then fix `Content-Length`.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Vec<u8>, RequestError> {
    let encoded = serde_json::to_string(model)?;
    match top_level_field(body, "model")? {
        FieldSpan::Value(span) => Ok(splice(body, span, encoded.as_bytes())),
        FieldSpan::Missing { open } => {
            let mut out = Vec::with_capacity(body.len() + encoded.len() + 10);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(b"\"model\":");
            out.extend_from_slice(encoded.as_bytes());
            let rest = &body[open + 1..];
            if rest.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            Ok(out)
        }
    }
}

/// Puts the requested model name back into a complete (non-streamed) JSON response body.
/// Borrowed and unchanged when the body has no top-level `"model"` or is not a JSON object
/// (an error page, say); a response is never made worse by the rewrite.
pub fn rewrite_response_model<'a>(body: &'a [u8], model: &str) -> Cow<'a, [u8]> {
    match top_level_field(body, "model") {
        Ok(FieldSpan::Value(span)) => match serde_json::to_string(model) {
            Ok(encoded) => Cow::Owned(splice(body, span, encoded.as_bytes())),
            Err(_) => Cow::Borrowed(body),
        },
        _ => Cow::Borrowed(body),
    }
}

/// Puts the requested model name back into the `data:` lines of SSE events (one or more whole
/// events, as a streamed response chunk normally carries). Lines that are not `data:` JSON
/// objects (comments, `event:`, `data: [DONE]`) pass unchanged. The caller must pass whole
/// lines: a chunk that ends inside a line is rewritten only in its complete lines and the
/// partial line passes unchanged.
pub fn rewrite_sse_event<'a>(chunk: &'a [u8], model: &str) -> Cow<'a, [u8]> {
    let Ok(encoded) = serde_json::to_string(model) else {
        return Cow::Borrowed(chunk);
    };
    let mut out: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < chunk.len() {
        let end = chunk[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|i| start + i);
        let Some(end) = end else { break };
        let line = &chunk[start..end];
        if let Some(payload) = line.strip_prefix(b"data:") {
            let offset = start + 5 + payload.iter().take_while(|c| **c == b' ').count();
            let json = &chunk[offset..end];
            let json = json.strip_suffix(b"\r").unwrap_or(json);
            if let Ok(FieldSpan::Value(span)) = top_level_field(json, "model") {
                let buf = out.get_or_insert_with(|| {
                    let mut v = Vec::with_capacity(chunk.len() + 32);
                    v.extend_from_slice(&chunk[..start]);
                    v
                });
                buf.extend_from_slice(&chunk[start..offset]);
                buf.extend_from_slice(&splice(json, span, encoded.as_bytes()));
                buf.extend_from_slice(&chunk[offset + json.len()..=end]);
                start = end + 1;
                continue;
            }
        }
        if let Some(buf) = out.as_mut() {
            buf.extend_from_slice(&chunk[start..=end]);
        }
        start = end + 1;
    }
    match out {
        Some(mut buf) => {
            buf.extend_from_slice(&chunk[start..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(chunk),
    }
}

fn splice(body: &[u8], span: Range<usize>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() - span.len() + value.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(value);
    out.extend_from_slice(&body[span.end..]);
    out
}

enum FieldSpan {
    /// The byte range of the field's value.
    Value(Range<usize>),
    /// The field is absent; the object's `{` is at this index.
    Missing { open: usize },
}

/// Finds a top-level field of a JSON object by scanning (no allocation unless a key has
/// escapes). Structural errors give [`RequestError::NotAnObject`].
fn top_level_field(body: &[u8], name: &str) -> Result<FieldSpan, RequestError> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return Err(RequestError::NotAnObject);
    }
    let open = i;
    i = skip_ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        return Ok(FieldSpan::Missing { open });
    }
    loop {
        if body.get(i) != Some(&b'"') {
            return Err(RequestError::NotAnObject);
        }
        let key_end = string_end(body, i)?;
        let raw_key = &body[i..key_end];
        let is_name = if raw_key.contains(&b'\\') {
            serde_json::from_slice::<String>(raw_key)
                .map(|k| k == name)
                .unwrap_or(false)
        } else {
            &raw_key[1..raw_key.len() - 1] == name.as_bytes()
        };
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return Err(RequestError::NotAnObject);
        }
        let value_start = skip_ws(body, i + 1);
        let value_end = value_end(body, value_start)?;
        if is_name {
            return Ok(FieldSpan::Value(value_start..value_end));
        }
        i = skip_ws(body, value_end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b'}') => return Ok(FieldSpan::Missing { open }),
            _ => return Err(RequestError::NotAnObject),
        }
    }
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `body[start]` is `"`; returns the index after the closing quote.
fn string_end(body: &[u8], start: usize) -> Result<usize, RequestError> {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(RequestError::NotAnObject)
}

/// The index after the JSON value starting at `start`.
fn value_end(body: &[u8], start: usize) -> Result<usize, RequestError> {
    match body.get(start) {
        None => Err(RequestError::NotAnObject),
        Some(b'"') => string_end(body, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < body.len() {
                match body[i] {
                    b'"' => {
                        i = string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(RequestError::NotAnObject)
        }
        Some(_) => {
            let mut i = start;
            while i < body.len()
                && !matches!(body[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            if i == start {
                Err(RequestError::NotAnObject)
            } else {
                Ok(i)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_kind_from_path() {
        assert_eq!(
            ApiKind::from_path("/v1/completions"),
            Some(ApiKind::Completions)
        );
        assert_eq!(
            ApiKind::from_path("/v1/chat/completions?x=1"),
            Some(ApiKind::ChatCompletions)
        );
        assert_eq!(ApiKind::from_path("/v1/models"), None);
    }

    #[test]
    fn completions_string_prompt() {
        let r = parse_request(
            ApiKind::Completions,
            br#"{"model":"llama","prompt":"Hello","max_tokens":16,"stream":true}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            LlmRequest {
                model: "llama".into(),
                prompt: "Hello".into(),
                stream: true,
                max_tokens: Some(16)
            }
        );
    }

    #[test]
    fn completions_list_and_token_prompts() {
        let r =
            parse_request(ApiKind::Completions, br#"{"model":"m","prompt":["a","b"]}"#).unwrap();
        assert_eq!(r.prompt, "a\nb");
        assert!(!r.stream);
        assert_eq!(r.max_tokens, None);
        let r = parse_request(
            ApiKind::Completions,
            br#"{"model":"m","prompt":[1,22,333]}"#,
        )
        .unwrap();
        assert_eq!(r.prompt, "1,22,333");
        let r = parse_request(
            ApiKind::Completions,
            br#"{"model":"m","prompt":[[1],[2,3]]}"#,
        )
        .unwrap();
        assert_eq!(r.prompt, "1\n2,3");
    }

    #[test]
    fn chat_rendering_is_prefix_stable() {
        let first = parse_request(
            ApiKind::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]}],
                "max_completion_tokens":7,"max_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(
            first.prompt,
            "system\nBe brief.\nuser\nHi [image_url]there\n"
        );
        assert_eq!(first.max_tokens, Some(7));
        let longer = parse_request(
            ApiKind::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]},
                {"role":"assistant","content":"Hello!"},{"role":"user","content":null}]}"#,
        )
        .unwrap();
        assert!(longer.prompt.starts_with(&first.prompt));
        assert_eq!(longer.max_tokens, None);
    }

    #[test]
    fn malformed_requests_are_errors() {
        let cases: [(ApiKind, &[u8]); 8] = [
            (ApiKind::Completions, b"not json"),
            (ApiKind::Completions, br#"{"prompt":"x"}"#),
            (ApiKind::Completions, br#"{"model":"","prompt":"x"}"#),
            (ApiKind::Completions, br#"{"model":"m"}"#),
            (ApiKind::Completions, br#"{"model":"m","prompt":{"a":1}}"#),
            (ApiKind::ChatCompletions, br#"{"model":"m","messages":[]}"#),
            (
                ApiKind::ChatCompletions,
                br#"{"model":"m","messages":"hi"}"#,
            ),
            (ApiKind::Completions, br#"["model"]"#),
        ];
        for (kind, body) in cases {
            assert!(
                parse_request(kind, body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse_request(ApiKind::Completions, br#"{"prompt":"x"}"#),
            Err(RequestError::MissingModel)
        ));
    }

    #[test]
    fn rewrite_request_model_keeps_other_bytes() {
        let body =
            br#"{ "prompt" : "say \"model\": x", "model" : "food-review", "n": [1, {"model":2}] }"#;
        let out = rewrite_model(body, "food-review-v2").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "prompt" : "say \"model\": x", "model" : "food-review-v2", "n": [1, {"model":2}] }"#
        );
        let out = rewrite_model(br#"{"prompt":"x"}"#, "m\"q").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"m\"q","prompt":"x"}"#
        );
        let out = rewrite_model(b"{ }", "m").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"model":"m" }"#);
        let out = rewrite_model(br#"{"\u006dodel":"a"}"#, "b").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"\u006dodel":"b"}"#);
        assert!(rewrite_model(b"[1]", "m").is_err());
        assert!(rewrite_model(br#"{"model":"unterminated}"#, "m").is_err());
    }

    #[test]
    fn rewrite_response_body() {
        let body =
            br#"{"id":"cmpl-1","object":"text_completion","model":"food-review-v1","choices":[]}"#;
        let out = rewrite_response_model(body, "food-review");
        assert_eq!(
            &*out,
            br#"{"id":"cmpl-1","object":"text_completion","model":"food-review","choices":[]}"#
        );
        assert!(matches!(
            rewrite_response_model(b"upstream error", "m"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            rewrite_response_model(br#"{"error":{}}"#, "m"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn rewrite_sse_chunks() {
        let chunk = b"data: {\"id\":\"1\",\"model\":\"v1\",\"choices\":[]}\n\n: keep-alive\ndata:{\"model\":\"v1\"}\r\n\r\ndata: [DONE]\n\n";
        let out = rewrite_sse_event(chunk, "base");
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            "data: {\"id\":\"1\",\"model\":\"base\",\"choices\":[]}\n\n: keep-alive\ndata:{\"model\":\"base\"}\r\n\r\ndata: [DONE]\n\n"
        );
        assert!(matches!(
            rewrite_sse_event(b"data: [DONE]\n\n", "m"),
            Cow::Borrowed(_)
        ));
        let partial = b"data: {\"model\":\"v1\"}\ndata: {\"mod";
        assert_eq!(
            &*rewrite_sse_event(partial, "b"),
            b"data: {\"model\":\"b\"}\ndata: {\"mod"
        );
    }

    #[test]
    fn objective_and_fairness_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(objective_name(&h), None);
        assert_eq!(fairness_id(&h), DEFAULT_FAIRNESS_ID);
        h.insert(HEADER_OBJECTIVE_DEPRECATED, "old".parse().unwrap());
        assert_eq!(objective_name(&h), Some("old"));
        h.insert(HEADER_OBJECTIVE, "batch".parse().unwrap());
        assert_eq!(objective_name(&h), Some("batch"));
        h.insert(HEADER_FAIRNESS_ID, "tenant-a".parse().unwrap());
        assert_eq!(fairness_id(&h), "tenant-a");
        h.insert(HEADER_FAIRNESS_ID, "".parse().unwrap());
        assert_eq!(fairness_id(&h), DEFAULT_FAIRNESS_ID);
    }

    #[test]
    fn dropped_reasons() {
        assert_eq!(DroppedReason::Saturated.as_str(), "rejected-saturated");
        assert_eq!(DroppedReason::Saturated.status(), 429);
        assert_eq!(DroppedReason::TtlExpired.as_str(), "rejected-ttl-expired");
        assert_eq!(DroppedReason::TtlExpired.status(), 429);
        assert_eq!(DroppedReason::NoEndpoints.status(), 503);
        assert_eq!(DroppedReason::Evicted.as_str(), "evicted");
        assert!(http::HeaderName::from_static(HEADER_MODEL_NAME).as_str() == HEADER_MODEL_NAME);
    }
}
