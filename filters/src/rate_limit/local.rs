//! The local limit: a keyed GCRA in this process.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway_core::{FilterCtx, Session};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, KeyParts, LocalRateLimitSpec, Verdict};
use crate::SpecError;

type Limiter = RateLimiter<u64, DashMapStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// A [`LocalRateLimitSpec`], compiled.
pub(super) struct LocalLimit {
    limiter: Limiter,
    key: KeyParts,
    hasher: RandomState,
    headers: bool,
    burst: u32,
    replenish: Duration,
    checks: AtomicU64,
}

impl std::fmt::Debug for LocalLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimit")
            .field("burst", &self.burst)
            .field("replenish", &self.replenish)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl LocalLimit {
    pub(super) fn new(spec: LocalRateLimitSpec) -> Result<Self, SpecError> {
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
        Ok(LocalLimit {
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            key: KeyParts::new(&spec.key, spec.client_ip)?,
            hasher: RandomState::new(),
            headers: spec.headers,
            burst: burst.get(),
            replenish,
            checks: AtomicU64::new(0),
        })
    }

    /// Seconds until `used` requests' worth of the bucket has refilled, rounded up.
    fn seconds_for(&self, used: u32) -> u64 {
        (self.replenish * used).as_secs_f64().ceil() as u64
    }

    fn verdict(&self, remaining: u32) -> Verdict {
        Verdict {
            limit: self.burst,
            remaining,
            reset: self.seconds_for(self.burst - remaining.min(self.burst)),
            headers: self.headers,
        }
    }

    pub(super) fn check(&self, session: &Session, ctx: &FilterCtx) -> Decision {
        let mut h = self.hasher.build_hasher();
        self.key.hash(session, ctx, &mut h);
        let key = std::hash::Hasher::finish(&h);
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key) {
            Ok(snapshot) => Decision::Pass(self.verdict(snapshot.remaining_burst_capacity())),
            Err(not_until) => Decision::Over(
                self.verdict(0),
                not_until.wait_time_from(self.limiter.clock().now()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replenish_and_reset_follow_the_unit() {
        let spec: LocalRateLimitSpec =
            serde_json::from_str(r#"{"requests": 10, "unit": "Minute"}"#).unwrap();
        let l = LocalLimit::new(spec).unwrap();
        assert_eq!(l.burst, 10);
        assert_eq!(l.replenish, Duration::from_secs(6));
        assert_eq!(l.verdict(7).reset, 18);
    }
}
