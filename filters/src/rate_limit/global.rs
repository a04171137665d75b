//! The global limit: fixed-window counters in Redis, shared by every replica.
//!
//! Per request: one Lua script call (`INCR` of the key's counter for the current window, and
//! `PEXPIRE` when the counter is new), so a counter lives as long as its window. The Redis key is
//! `{keyPrefix}:{settings}:{key}:{window}`, where `settings` is a digest of the limit's settings
//! (two limits with different settings never share counters) and `key` a digest of the request's
//! key parts (so the key stays short whatever the header values are). The connection is made on
//! the first request and re-made after a failure (the `redis` crate's connection manager); each
//! check waits at most `timeoutMs`.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_core::{FilterCtx, Session};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Decision, KeyPart, KeyParts, RateUnit, Verdict};
use crate::SpecError;
use crate::client_ip::ClientIpSpec;

/// A limit counted in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalRateLimitSpec {
    /// Requests allowed per `unit` window; above 0.
    pub requests: u32,
    /// The window.
    pub unit: RateUnit,
    /// What a counter is kept per, all parts together. Default: `[clientIP]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<KeyPart>,
    /// Where the client address comes from. Default: the connection's peer.
    #[serde(default, rename = "clientIP")]
    pub client_ip: ClientIpSpec,
    /// Whether responses carry the `X-RateLimit-*` headers. Default: true.
    #[serde(default = "super::yes")]
    pub headers: bool,
    /// The Redis server.
    pub redis: RedisSpec,
    /// What happens when Redis does not answer in time. Default: `FailOpen`.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Milliseconds a check may wait for Redis. Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The start of every Redis key of this limit. Default: `gateway-ratelimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// Where Redis is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
}

/// What a global limit does when Redis cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureMode {
    /// Let the request through (logged). Envoy's rate limit filter does this by default.
    #[default]
    FailOpen,
    /// Answer 503.
    FailClosed,
}

/// INCR the counter, start its expiry when new; returns the count.
const SCRIPT: &str = r"
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c
";

/// A [`GlobalRateLimitSpec`], compiled.
pub(super) struct GlobalLimit {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    script: redis::Script,
    key: KeyParts,
    prefix: String,
    requests: u32,
    window: Duration,
    timeout: Duration,
    failure: FailureMode,
    headers: bool,
}

impl std::fmt::Debug for GlobalLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalLimit")
            .field("prefix", &self.prefix)
            .field("requests", &self.requests)
            .field("window", &self.window)
            .finish()
    }
}

/// Lower-case hex of `bytes`, into one string (runs per request for the counter key).
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl GlobalLimit {
    pub(super) fn new(spec: GlobalRateLimitSpec) -> Result<Self, SpecError> {
        let requests = NonZeroU32::new(spec.requests)
            .ok_or_else(|| SpecError::invalid("requests", "must be above 0"))?;
        let client = redis::Client::open(spec.redis.url.as_str())
            .map_err(|e| SpecError::invalid("redis.url", e.to_string()))?;
        if spec.timeout_ms == Some(0) {
            return Err(SpecError::invalid("timeoutMs", "must be above 0"));
        }
        let settings =
            serde_json::to_vec(&(&spec.requests, &spec.unit, &spec.key, &spec.client_ip))
                .map_err(|e| SpecError::invalid("spec", e.to_string()))?;
        let prefix = format!(
            "{}:{}",
            spec.key_prefix.as_deref().unwrap_or("gateway-ratelimit"),
            &hex(&Sha256::digest(&settings))[..16]
        );
        Ok(GlobalLimit {
            client,
            connection: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            key: KeyParts::new(&spec.key, spec.client_ip)?,
            prefix,
            requests: requests.get(),
            window: spec.unit.duration(),
            timeout: Duration::from_millis(spec.timeout_ms.unwrap_or(100)),
            failure: spec.failure_mode,
            headers: spec.headers,
        })
    }

    /// The connection manager, made on first use (inside the runtime; it connects lazily).
    fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.connection.get_or_init(|| made).clone())
    }

    pub(super) async fn check(&self, session: &Session, ctx: &FilterCtx) -> Decision {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let window_ms = self.window.as_millis() as u64;
        let now_ms = now.as_millis() as u64;
        let window = now_ms / window_ms;
        let ends_in = Duration::from_millis((window + 1) * window_ms - now_ms);
        let key = format!(
            "{}:{}:{window}",
            self.prefix,
            &hex(&Sha256::digest(self.key.text(session, ctx).as_bytes()))[..32]
        );
        let count = async {
            let mut conn = self.connection()?;
            self.script
                .key(&key)
                .arg(window_ms)
                .invoke_async::<u64>(&mut conn)
                .await
        };
        let count = match tokio::time::timeout(self.timeout, count).await {
            Ok(Ok(c)) => c,
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                };
                tracing::warn!(%error, failure_mode = ?self.failure, "global rate limit: Redis unavailable");
                return match self.failure {
                    FailureMode::FailOpen => Decision::Pass(Verdict {
                        limit: self.requests,
                        remaining: self.requests,
                        reset: 0,
                        headers: false,
                    }),
                    FailureMode::FailClosed => Decision::Unavailable,
                };
            }
        };
        let verdict = Verdict {
            limit: self.requests,
            remaining: self
                .requests
                .saturating_sub(count.min(u64::from(u32::MAX)) as u32),
            reset: ends_in.as_secs_f64().ceil() as u64,
            headers: self.headers,
        };
        if count > u64::from(self.requests) {
            Decision::Over(verdict, ends_in)
        } else {
            Decision::Pass(verdict)
        }
    }
}
