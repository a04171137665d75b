//! `AIPrompt`: enrichment and guarding of OpenAI-style prompts.
//!
//! For requests with a body, the body is buffered (up to `maxBytes`, default 1 MiB; larger: 413)
//! and read as an OpenAI chat-completions request (`messages`: role and content, content a string
//! or a list of parts whose `text` parts are read) or completions request (`prompt`, a string or a
//! list of strings). A body that is not a JSON object is answered 400.
//!
//! * `promptEnrichment` puts `prepend` messages before the request's `messages` and `append`
//!   messages after them (for example a system prompt); a completions `prompt` gets the
//!   messages' contents before and after it, each on its own line.
//! * `promptGuard.request` checks every message content (after enrichment) against the
//!   `regex` patterns and `builtins` (`SSN`, `CreditCard`, `Email`, `PhoneNumber`). With
//!   `action: Reject` (default) a match is answered with `customResponse` (default 403 and an
//!   OpenAI-shaped JSON error); with `Mask` every match is replaced by `****` and the request goes
//!   on.
//!
//! Responses, streamed (SSE) or not, are not touched. A changed body is sent with its new
//! `Content-Length`.

use bytes::Bytes;
use gateway_core::{DirectResponse, FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use kube::CustomResource;
use regex::{Regex, RegexSet};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SpecError;
use crate::respond::answer;

/// The kind of [`AIPrompt`] objects.
pub const KIND: &str = "AIPrompt";

/// What a masked match becomes.
const MASK: &str = "****";

/// Settings of an `AIPrompt` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "AIPrompt",
    plural = "aiprompts",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiPromptSpec {
    /// Messages added around the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_enrichment: Option<PromptEnrichment>,
    /// Patterns a prompt may not contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_guard: Option<PromptGuard>,
    /// The largest request body read. Default: 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Messages added before and after the request's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptEnrichment {
    /// Put before the request's messages, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepend: Vec<Message>,
    /// Put after the request's messages, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<Message>,
}

/// A chat message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

/// The prompt guard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptGuard {
    /// Checks on the request's prompt.
    pub request: RequestGuard,
}

/// Checks on a request's prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestGuard {
    /// Regular expressions (Rust `regex` syntax) a prompt may not contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// Ready-made patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtins: Vec<Builtin>,
    /// What a match does. Default: `Reject`.
    #[serde(default)]
    pub action: GuardAction,
    /// The answer to a rejected request. Default: 403 with an OpenAI-shaped JSON error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_response: Option<CustomResponse>,
}

/// Ready-made guard patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Builtin {
    /// US social security numbers (`123-45-6789`).
    #[serde(rename = "SSN")]
    Ssn,
    /// Card numbers: 13 to 16 digits, optionally grouped by spaces or dashes.
    CreditCard,
    /// E-mail addresses.
    Email,
    /// North American phone numbers.
    PhoneNumber,
}

impl Builtin {
    fn pattern(self) -> &'static str {
        match self {
            Builtin::Ssn => r"\b\d{3}-\d{2}-\d{4}\b",
            Builtin::CreditCard => r"\b\d(?:[ -]?\d){12,15}\b",
            Builtin::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
            Builtin::PhoneNumber => r"(?:\+?1[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b",
        }
    }
}

/// What a guard match does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GuardAction {
    /// Answer with the custom response.
    #[default]
    Reject,
    /// Replace each match by `****` and go on.
    Mask,
}

/// The answer to a rejected prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomResponse {
    /// The status, 400 to 599. Default: 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The error message. Default: `the prompt was rejected by the gateway's prompt guard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The `AIPrompt` filter, built from an [`AiPromptSpec`].
#[derive(Debug)]
pub struct AiPromptFilter {
    prepend: Vec<Value>,
    append: Vec<Value>,
    detect: Option<RegexSet>,
    mask: Vec<Regex>,
    action: GuardAction,
    rejection: DirectResponse,
    max: usize,
}

impl AiPromptFilter {
    /// Compiles the patterns; one that does not compile is an error naming it.
    pub fn new(spec: AiPromptSpec) -> Result<Self, SpecError> {
        let enrichment = spec.prompt_enrichment.unwrap_or_default();
        let message = |m: Message| serde_json::json!({"role": m.role, "content": m.content});
        let guard = spec.prompt_guard.map(|g| g.request).unwrap_or_default();
        let mut patterns = Vec::new();
        for (i, p) in guard.regex.iter().enumerate() {
            Regex::new(p).map_err(|e| {
                SpecError::invalid(format!("promptGuard.request.regex[{i}]"), e.to_string())
            })?;
            patterns.push(p.clone());
        }
        patterns.extend(guard.builtins.iter().map(|b| b.pattern().to_owned()));
        let detect = if patterns.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(&patterns)
                    .map_err(|e| SpecError::invalid("promptGuard.request.regex", e.to_string()))?,
            )
        };
        let mask = patterns.iter().filter_map(|p| Regex::new(p).ok()).collect();
        let custom = guard.custom_response.unwrap_or_default();
        let status = custom.status_code.unwrap_or(403);
        if !(400..=599).contains(&status) {
            return Err(SpecError::invalid(
                "promptGuard.request.customResponse.statusCode",
                "must be 400 to 599",
            ));
        }
        let text = custom
            .message
            .unwrap_or_else(|| "the prompt was rejected by the gateway's prompt guard".into());
        let body = serde_json::json!({"error": {"message": text, "type": "invalid_request_error", "code": "prompt_rejected"}});
        let rejection = DirectResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        };
        if enrichment.prepend.is_empty() && enrichment.append.is_empty() && detect.is_none() {
            return Err(SpecError::invalid(
                "spec",
                "sets no enrichment and no guard pattern",
            ));
        }
        let max = usize::try_from(spec.max_bytes.unwrap_or(1 << 20))
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| SpecError::invalid("maxBytes", "must be above 0"))?;
        Ok(AiPromptFilter {
            prepend: enrichment.prepend.into_iter().map(message).collect(),
            append: enrichment.append.into_iter().map(message).collect(),
            detect,
            mask,
            action: guard.action,
            rejection,
            max,
        })
    }

    /// Adds the enrichment messages to a chat or completions request. Returns whether it changed.
    fn enrich(&self, request: &mut serde_json::Map<String, Value>) -> bool {
        if self.prepend.is_empty() && self.append.is_empty() {
            return false;
        }
        if let Some(Value::Array(messages)) = request.get_mut("messages") {
            let old = std::mem::take(messages);
            messages.extend(self.prepend.iter().cloned());
            messages.extend(old);
            messages.extend(self.append.iter().cloned());
            return true;
        }
        let content = |m: &Value| m["content"].as_str().unwrap_or("").to_owned();
        let wrap = |p: &str| {
            let mut lines: Vec<String> = self.prepend.iter().map(content).collect();
            lines.push(p.to_owned());
            lines.extend(self.append.iter().map(content));
            lines.join("\n")
        };
        match request.get_mut("prompt") {
            Some(Value::String(p)) => {
                *p = wrap(p);
                true
            }
            Some(Value::Array(ps)) => {
                for p in ps.iter_mut() {
                    if let Value::String(s) = p {
                        *s = wrap(s);
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Every prompt text of the request, mutable.
    fn texts(request: &mut serde_json::Map<String, Value>) -> Vec<&mut String> {
        let mut out = Vec::new();
        if request.get("messages").is_some_and(Value::is_array) {
            let Some(Value::Array(messages)) = request.get_mut("messages") else {
                return out;
            };
            for m in messages {
                match m.get_mut("content") {
                    Some(Value::String(s)) => out.push(s),
                    Some(Value::Array(parts)) => {
                        for part in parts {
                            if let Some(Value::String(s)) = part.get_mut("text") {
                                out.push(s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        } else {
            match request.get_mut("prompt") {
                Some(Value::String(s)) => out.push(s),
                Some(Value::Array(ps)) => out.extend(ps.iter_mut().filter_map(|p| match p {
                    Value::String(s) => Some(s),
                    _ => None,
                })),
                _ => {}
            }
        }
        out
    }
}

#[async_trait]
impl HttpFilter for AiPromptFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if !session.is_body_empty() {
            ctx.buffer_request_body(self.max);
        }
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        if !end_of_stream {
            return Ok(FilterAction::Continue);
        }
        let raw = body.as_deref().unwrap_or(&[]);
        let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(raw) else {
            return Ok(answer(
                400,
                "request body is not a JSON object\n",
                Vec::new(),
            ));
        };
        let mut changed = self.enrich(&mut request);
        if let Some(detect) = &self.detect {
            let mut texts = Self::texts(&mut request);
            if texts.iter().any(|t| detect.is_match(t)) {
                match self.action {
                    GuardAction::Reject => {
                        return Ok(FilterAction::Respond(self.rejection.clone()));
                    }
                    GuardAction::Mask => {
                        for t in texts.iter_mut() {
                            for re in &self.mask {
                                if let std::borrow::Cow::Owned(masked) = re.replace_all(t, MASK) {
                                    **t = masked;
                                }
                            }
                        }
                        changed = true;
                    }
                }
            }
        }
        if changed {
            *body = Some(Bytes::from(Value::Object(request).to_string()));
        }
        Ok(FilterAction::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(spec: serde_json::Value) -> AiPromptFilter {
        AiPromptFilter::new(serde_json::from_value(spec).unwrap()).unwrap()
    }

    #[test]
    fn enrichment_wraps_chat_and_completions() {
        let f = filter(serde_json::json!({"promptEnrichment": {
            "prepend": [{"role": "system", "content": "be brief"}],
            "append": [{"role": "user", "content": "answer in French"}]}}));
        let mut chat = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(f.enrich(chat.as_object_mut().unwrap()));
        let roles: Vec<&str> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "user"]);
        let mut completion = serde_json::json!({"prompt": "hi"});
        assert!(f.enrich(completion.as_object_mut().unwrap()));
        assert_eq!(completion["prompt"], "be brief\nhi\nanswer in French");
    }

    #[test]
    fn builtins_match_what_they_name() {
        let set = |b: Builtin| Regex::new(b.pattern()).unwrap();
        assert!(set(Builtin::Ssn).is_match("my ssn is 123-45-6789"));
        assert!(set(Builtin::CreditCard).is_match("card 4111 1111 1111 1111 ok"));
        assert!(!set(Builtin::CreditCard).is_match("order 12345"));
        assert!(set(Builtin::Email).is_match("write to a.b@example.com"));
        assert!(set(Builtin::PhoneNumber).is_match("call (555) 123-4567"));
        let err = AiPromptFilter::new(
            serde_json::from_value(
                serde_json::json!({"promptGuard": {"request": {"regex": ["("]}}}),
            )
            .unwrap(),
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .starts_with("promptGuard.request.regex[0]: ")
        );
    }
}
