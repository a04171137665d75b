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
//! Runs in `request_headers`. A request over the limit is answered 429 with `Retry-After` (whole
//! seconds until a request would pass) and `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//! `X-RateLimit-Reset`; a request that passes gets the same three headers on its response
//! (unless `headers: false`). `X-RateLimit-Limit` is the burst, `X-RateLimit-Remaining` the
//! requests still allowed at once, `X-RateLimit-Reset` the seconds until the bucket is full again.
//!
//! Buckets live in a sharded map (the `governor` crate); a bucket back to full is dropped every
//! 4,096 requests, so memory follows the keys active within one `unit`, about 60 bytes each.
//! Buckets are kept when a configuration is applied with the same settings (see
//! [`crate::Filters`]).

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway_core::{FilterAction, FilterCtx, HttpFilter, ResponseHeader, Session, async_trait};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
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

enum Part {
    ClientIp,
    Header(HeaderName),
    Route,
}

type Limiter = RateLimiter<u64, DashMapStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// The `RateLimit` filter, built from a [`RateLimitSpec`].
pub struct RateLimitFilter {
    limiter: Limiter,
    parts: Vec<Part>,
    client_ip: ClientIpSpec,
    hasher: RandomState,
    headers: bool,
    burst: u32,
    replenish: Duration,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimitFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitFilter")
            .field("burst", &self.burst)
            .field("replenish", &self.replenish)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

/// What a passing request learned, for its response headers.
#[derive(Clone, Copy)]
struct Passed {
    remaining: u32,
}

impl RateLimitFilter {
    /// Checks `spec`: `local` is required (global limits are not built yet), `requests` and
    /// `burst` above 0, header names valid.
    pub fn new(spec: RateLimitSpec) -> Result<Self, SpecError> {
        let local = spec
            .local
            .ok_or_else(|| SpecError::invalid("local", "is required"))?;
        Self::local(local).map_err(|e| e.within("local"))
    }

    fn local(spec: LocalRateLimitSpec) -> Result<Self, SpecError> {
        let requests = NonZeroU32::new(spec.requests)
            .ok_or_else(|| SpecError::invalid("requests", "must be above 0"))?;
        let burst = match spec.burst {
            None => requests,
            Some(b) => {
                NonZeroU32::new(b).ok_or_else(|| SpecError::invalid("burst", "must be above 0"))?
            }
        };
        let replenish = spec.unit.duration() / requests.get();
        let quota = Quota::with_period(replenish)
            .ok_or_else(|| SpecError::invalid("requests", "too many for the unit"))?
            .allow_burst(burst);
        let mut parts = Vec::new();
        for (i, p) in spec.key.iter().enumerate() {
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
        Ok(RateLimitFilter {
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            parts,
            client_ip: spec.client_ip,
            hasher: RandomState::new(),
            headers: spec.headers,
            burst: burst.get(),
            replenish,
            checks: AtomicU64::new(0),
        })
    }

    /// The bucket key of a request: a 64-bit hash of its key parts (no allocation).
    fn key(&self, session: &Session, ctx: &FilterCtx) -> u64 {
        let mut h = self.hasher.build_hasher();
        for part in &self.parts {
            match part {
                Part::ClientIp => self.client_ip.client_ip(session).hash(&mut h),
                Part::Header(name) => {
                    for v in session.req_header().headers.get_all(name) {
                        v.as_bytes().hash(&mut h);
                    }
                    0xffu8.hash(&mut h);
                }
                Part::Route => {
                    let r = ctx.route();
                    (&r.listener, &r.namespace, &r.route, &r.rule).hash(&mut h);
                }
            }
        }
        h.finish()
    }

    /// Seconds until `used` requests' worth of the bucket has refilled, rounded up.
    fn seconds_for(&self, used: u32) -> u64 {
        (self.replenish * used).as_secs_f64().ceil() as u64
    }

    fn rate_headers(&self, remaining: u32) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.burst.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            (
                "x-ratelimit-reset",
                self.seconds_for(self.burst - remaining.min(self.burst))
                    .to_string(),
            ),
        ]
    }
}

#[async_trait]
impl HttpFilter for RateLimitFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let key = self.key(session, ctx);
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                if self.headers {
                    ctx.extensions_mut().insert(Passed {
                        remaining: snapshot.remaining_burst_capacity(),
                    });
                }
                Ok(FilterAction::Continue)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let mut headers = vec![(
                    "retry-after".to_owned(),
                    (wait.as_secs_f64().ceil() as u64).max(1).to_string(),
                )];
                if self.headers {
                    headers.extend(self.rate_headers(0).map(|(n, v)| (n.to_owned(), v)));
                }
                Ok(answer(429, "too many requests\n", headers))
            }
        }
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        if let Some(passed) = ctx.extensions().get::<Passed>().copied() {
            for (name, value) in self.rate_headers(passed.remaining) {
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
        let f = RateLimitFilter::new(spec).unwrap();
        assert_eq!(f.burst, 10);
        assert_eq!(f.replenish, Duration::from_secs(6));
        assert_eq!(f.seconds_for(3), 18);
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
            "local: is required"
        );
    }
}
