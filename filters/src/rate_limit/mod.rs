//! `RateLimit`: request rate limits, answered with 429.
//!
//! `local` limits count in this process (each replica has its own buckets): a GCRA (the
//! continuous form of a token bucket) of `requests` per `unit`, with `burst` requests allowed at
//! once (default: `requests`), one bucket per key. The key is made of the parts listed in `key`
//! (default: the client address): the client address ([`ClientIpSpec`]), the value of a request
//! header (a request without the header counts under the empty value), and the route and rule
//! that matched. A filter object attached to many routes shares its buckets among them unless
//! the key has `route`.
//!
//! `global` limits count in Redis, shared by every replica that points at the same server: a
//! fixed window of `requests` per `unit` per key (one `INCR` per request, the counter expiring with
//! its window, as Envoy's rate limit service counts). Each check waits for Redis at most
//! `timeoutMs` (default 100); when Redis cannot answer, `failureMode` decides: `FailOpen` (the
//! default) lets the request through, `FailClosed` answers 503. See [`global`].
//!
//! Runs in `request_headers`, local limit first. A request over a limit is answered 429 with `Retry-After` (whole
//! seconds until a request would pass) and `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//! `X-RateLimit-Reset`; a request that passes gets the same three headers on its response
//! (unless `headers: false`; with both limits, the one with fewer requests remaining).
//! `X-RateLimit-Limit` is the burst (local) or `requests` (global), `X-RateLimit-Remaining` the
//! requests still allowed at once, `X-RateLimit-Reset` the seconds until the bucket is full again
//! (local) or the window ends (global).
//!
//! Buckets live in a sharded map (the `governor` crate); a bucket back to full is dropped every
//! 4,096 requests, so memory follows the keys active within one `unit`, about 60 bytes each.
//! Buckets are kept when a configuration is applied with the same settings (see
//! [`crate::Filters`]).

pub mod global;
mod local;

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use gateway_core::{FilterAction, FilterCtx, HttpFilter, ResponseHeader, Session, async_trait};
use http::HeaderName;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::client_ip::ClientIpSpec;
use crate::respond::answer;

/// The kind of [`RateLimit`] objects.
pub const KIND: &str = "RateLimit";

/// Settings of a `RateLimit` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "RateLimit",
    plural = "ratelimits",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// A limit counted in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimitSpec>,
    /// A limit counted in Redis, across replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<global::GlobalRateLimitSpec>,
}

/// A limit counted in this process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimitSpec {
    /// Requests allowed per `unit`, on average; above 0.
    pub requests: u32,
    /// The time unit of `requests`.
    pub unit: RateUnit,
    /// Requests allowed at once after a quiet period. Default: `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What a bucket is kept per, all parts together. Default: `[clientIP]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<KeyPart>,
    /// Where the client address comes from. Default: the connection's peer.
    #[serde(default, rename = "clientIP")]
    pub client_ip: ClientIpSpec,
    /// Whether responses carry the `X-RateLimit-*` headers. Default: true.
    #[serde(default = "yes")]
    pub headers: bool,
}

fn yes() -> bool {
    true
}

/// The unit of a [`LocalRateLimitSpec`]'s `requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateUnit {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl RateUnit {
    fn duration(self) -> Duration {
        Duration::from_secs(match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
        })
    }
}

/// One part of a rate limit key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeyPart {
    /// The client address.
    #[serde(rename = "clientIP")]
    ClientIp,
    /// The value of this request header (all its lines); absent counts as empty.
    Header(String),
    /// The route and rule that matched.
    Route,
}

/// What a limit's key is made of, compiled.
#[derive(Debug)]
enum Part {
    ClientIp,
    Header(HeaderName),
    Route,
}

/// The key parts of one limit and where the client address comes from.
#[derive(Debug)]
struct KeyParts {
    parts: Vec<Part>,
    client_ip: ClientIpSpec,
}

impl KeyParts {
    /// Checks the header names of `key`; empty means `[clientIP]`.
    fn new(key: &[KeyPart], client_ip: ClientIpSpec) -> Result<Self, SpecError> {
        let mut parts = Vec::new();
        for (i, p) in key.iter().enumerate() {
            parts.push(match p {
                KeyPart::ClientIp => Part::ClientIp,
                KeyPart::Route => Part::Route,
                KeyPart::Header(h) => {
                    Part::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        SpecError::invalid(
                            format!("key[{i}].header"),
                            format!("{h:?} is not a header name"),
                        )
                    })?)
                }
            });
        }
        if parts.is_empty() {
            parts.push(Part::ClientIp);
        }
        Ok(KeyParts { parts, client_ip })
    }

    /// Feeds the request's key to `h` (no allocation).
    fn hash(&self, session: &Session, ctx: &FilterCtx, h: &mut impl Hasher) {
        for part in &self.parts {
            match part {
                Part::ClientIp => self.client_ip.client_ip(session).hash(h),
                Part::Header(name) => {
                    for v in session.req_header().headers.get_all(name) {
                        v.as_bytes().hash(h);
                    }
                    0xffu8.hash(h);
                }
                Part::Route => {
                    let r = ctx.route();
                    (&r.listener, &r.namespace, &r.route, &r.rule).hash(h);
                }
            }
        }
    }

    /// The request's key as text, the same in every process (for a shared counter).
    fn text(&self, session: &Session, ctx: &FilterCtx) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::ClientIp => match self.client_ip.client_ip(session) {
                    Some(ip) => {
                        let _ = write!(out, "ip={ip}");
                    }
                    None => out.push_str("ip="),
                },
                Part::Header(name) => {
                    let _ = write!(out, "h:{name}=");
                    for v in session.req_header().headers.get_all(name) {
                        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        out.push(',');
                    }
                }
                Part::Route => {
                    let r = ctx.route();
                    let _ = write!(
                        out,
                        "r={}/{}/{}/{}",
                        r.listener, r.namespace, r.route, r.rule
                    );
                }
            }
            out.push('\u{1f}');
        }
        out
    }
}

/// A limit's answer for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    /// `X-RateLimit-Limit`.
    limit: u32,
    /// `X-RateLimit-Remaining`.
    remaining: u32,
    /// `X-RateLimit-Reset`, seconds.
    reset: u64,
    /// Whether this limit sends the headers.
    headers: bool,
}

impl Verdict {
    fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
        ]
    }
}

/// What a limit decided.
enum Decision {
    Pass(Verdict),
    /// Over the limit; a request would pass after this long.
    Over(Verdict, Duration),
    /// The counter could not be reached and the limit fails closed.
    Unavailable,
}

/// The `RateLimit` filter, built from a [`RateLimitSpec`].
#[derive(Debug)]
pub struct RateLimitFilter {
    local: Option<local::LocalLimit>,
    global: Option<global::GlobalLimit>,
}

/// The verdict a passing request's response headers report.
#[derive(Clone, Copy)]
struct Passed(Verdict);

impl RateLimitFilter {
    /// Checks `spec`: at least one of `local` and `global`; numbers above 0; header names and
    /// the Redis URL valid. Nothing is connected here: Redis is reached on the first request.
    pub fn new(spec: RateLimitSpec) -> Result<Self, SpecError> {
        if spec.local.is_none() && spec.global.is_none() {
            return Err(SpecError::invalid("spec", "sets neither local nor global"));
        }
        Ok(RateLimitFilter {
            local: spec
                .local
                .map(|l| local::LocalLimit::new(l).map_err(|e| e.within("local")))
                .transpose()?,
            global: spec
                .global
                .map(|g| global::GlobalLimit::new(g).map_err(|e| e.within("global")))
                .transpose()?,
        })
    }
}

fn over(verdict: Verdict, wait: Duration) -> FilterAction {
    let mut headers = vec![(
        "retry-after".to_owned(),
        (wait.as_secs_f64().ceil() as u64).max(1).to_string(),
    )];
    if verdict.headers {
        headers.extend(verdict.headers().map(|(n, v)| (n.to_owned(), v)));
    }
    answer(429, "too many requests\n", headers)
}

#[async_trait]
impl HttpFilter for RateLimitFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let mut shown: Option<Verdict> = None;
        let mut show = |v: Verdict| {
            if v.headers && shown.is_none_or(|s| v.remaining < s.remaining) {
                shown = Some(v);
            }
        };
        if let Some(local) = &self.local {
            match local.check(session, ctx) {
                Decision::Pass(v) => show(v),
                Decision::Over(v, wait) => return Ok(over(v, wait)),
                Decision::Unavailable => {}
            }
        }
        if let Some(global) = &self.global {
            match global.check(session, ctx).await {
                Decision::Pass(v) => show(v),
                Decision::Over(v, wait) => return Ok(over(v, wait)),
                Decision::Unavailable => {
                    return Ok(answer(503, "rate limit service unavailable\n", Vec::new()));
                }
            }
        }
        if let Some(v) = shown {
            ctx.extensions_mut().insert(Passed(v));
        }
        Ok(FilterAction::Continue)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        if let Some(Passed(v)) = ctx.extensions().get::<Passed>().copied() {
            for (name, value) in v.headers() {
                // Names are static and values digits: this cannot fail.
                let _ = response.insert_header(name, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reads_key_parts_and_checks_numbers() {
        let spec: RateLimitSpec = serde_json::from_str(
            r#"{"local": {"requests": 10, "unit": "Minute", "key": ["clientIP", {"header": "x-user"}, "route"]}}"#,
        )
        .unwrap();
        let local = spec.local.clone().unwrap();
        assert_eq!(
            local.key,
            vec![
                KeyPart::ClientIp,
                KeyPart::Header("x-user".into()),
                KeyPart::Route
            ]
        );
        assert!(local.headers);
        assert!(RateLimitFilter::new(spec).is_ok());
        let zero: RateLimitSpec =
            serde_json::from_str(r#"{"local": {"requests": 0, "unit": "Second"}}"#).unwrap();
        assert_eq!(
            RateLimitFilter::new(zero).unwrap_err().to_string(),
            "local.requests: must be above 0"
        );
        assert_eq!(
            RateLimitFilter::new(RateLimitSpec::default())
                .unwrap_err()
                .to_string(),
            "spec: sets neither local nor global"
        );
        let bad: RateLimitSpec = serde_json::from_str(
            r#"{"global": {"requests": 5, "unit": "Second", "redis": {"url": "http://x"}}}"#,
        )
        .unwrap();
        assert!(
            RateLimitFilter::new(bad)
                .unwrap_err()
                .to_string()
                .starts_with("global.redis.url: ")
        );
    }
}
