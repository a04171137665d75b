//! Per-endpoint health: passive outlier ejection, the active health-check verdict and the
//! in-flight request count.
//!
//! One [`EndpointHealth`] exists per endpoint of a backend. The request path reads and updates it
//! with atomics only: no lock, no allocation. The proxy records the outcome of every attempt
//! ([`EndpointHealth::record_success`], [`EndpointHealth::record_failure`]); the active health
//! checker ([`super::health::HealthChecker`]) sets its verdict with
//! [`EndpointHealth::set_active_healthy`]; the picker skips endpoints that are not
//! [`EndpointHealth::available`] and, for least-request, compares [`EndpointHealth::in_flight`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::OutlierDetection;

/// Health state of one endpoint, shared by the request path and the health checker.
///
/// A new endpoint is available: no failures, never ejected, healthy for active checks.
#[derive(Debug)]
pub(crate) struct EndpointHealth {
    /// Failures in a row since the last success (or the last ejection). Saturates.
    consecutive_failures: AtomicU32,
    /// [`super::clock::now_ms`] until which the endpoint is ejected; 0 (or any past time): not
    /// ejected.
    ejected_until_ms: AtomicU64,
    /// Ejections that count towards the next ejection's length. Reset once the endpoint has
    /// stayed un-ejected for `max_ejection` after its last ejection ended.
    times_ejected: AtomicU32,
    /// When `times_ejected` is forgiven: end of the last ejection plus that configuration's
    /// `max_ejection`. 0: nothing to forgive.
    forgive_at_ms: AtomicU64,
    /// The active health checks' verdict. `true` until a checker says otherwise.
    active_healthy: AtomicBool,
    /// Requests to this endpoint that have started and not yet ended.
    in_flight: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointHealth {
    /// A healthy endpoint with no history. Built when a backend's endpoints are compiled.
    pub(crate) fn new() -> Self {
        EndpointHealth {
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            forgive_at_ms: AtomicU64::new(0),
            active_healthy: AtomicBool::new(true),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Whether the picker may choose this endpoint at `now_ms` ([`super::clock::now_ms`]): it is
    /// not ejected and active health checks (if any) have not marked it unhealthy.
    pub(crate) fn available(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed) && !self.ejected(now_ms)
    }

    /// Whether passive outlier detection has ejected the endpoint at `now_ms`.
    pub(crate) fn ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Records a successful attempt (a response that is not a 5xx): the failure streak ends.
    ///
    /// The ejection count survives, so an endpoint that is ejected again soon after coming back is
    /// ejected for longer; it is forgiven (reset to 0) once the endpoint has not been ejected
    /// for the configuration's `max_ejection` after its last ejection ended. Only reads shared
    /// state on the common path (no failures, never ejected), so successes do not contend.
    pub(crate) fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.times_ejected.load(Ordering::Relaxed) != 0 {
            self.forgive(super::clock::now_ms());
        }
    }

    /// Resets the ejection count if its forgiveness time has come.
    fn forgive(&self, now_ms: u64) {
        let at = self.forgive_at_ms.load(Ordering::Relaxed);
        if at != 0 && now_ms >= at {
            self.times_ejected.store(0, Ordering::Relaxed);
            self.forgive_at_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed attempt (connection error, reset, timeout or 5xx response).
    ///
    /// When the failure streak reaches `cfg.consecutive_failures` (0 counts as 1) and `may_eject`
    /// is true, the endpoint is ejected for `cfg.base_ejection` times the number of times it has
    /// been ejected (this one included), capped at `cfg.max_ejection`, and the streak restarts
    /// from 0. The caller passes `may_eject = false` when this is the backend's last available
    /// endpoint: the streak keeps counting and the endpoint is ejected by the first failure
    /// after another endpoint becomes available. Failures while the endpoint is already ejected
    /// (requests that started before the ejection) are ignored.
    ///
    /// Returns true if this call ejected the endpoint (exactly one of several racing callers
    /// does), so the caller can log it.
    pub(crate) fn record_failure(
        &self,
        cfg: &OutlierDetection,
        now_ms: u64,
        may_eject: bool,
    ) -> bool {
        if self.ejected(now_ms) {
            return false;
        }
        let threshold = cfg.consecutive_failures.max(1);
        let streak = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak == u32::MAX {
            // Keep a streak of a never-ejectable endpoint from wrapping to 0.
            self.consecutive_failures
                .store(u32::MAX - 1, Ordering::Relaxed);
        }
        if streak < threshold || !may_eject {
            return false;
        }
        // Of the callers that saw the threshold reached, the one that takes the streak ejects.
        if self.consecutive_failures.swap(0, Ordering::Relaxed) < threshold {
            return false;
        }
        self.forgive(now_ms);
        let times = self
            .times_ejected
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let base = duration_ms(cfg.base_ejection);
        let max = duration_ms(cfg.max_ejection);
        let length = base.saturating_mul(u64::from(times)).min(max);
        let until = now_ms.saturating_add(length);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.forgive_at_ms
            .store(until.saturating_add(max).max(1), Ordering::Relaxed);
        true
    }

    /// Sets the active health checks' verdict. Called by the health checker on a transition.
    pub(crate) fn set_active_healthy(&self, healthy: bool) {
        self.active_healthy.store(healthy, Ordering::Relaxed);
    }

    /// The active health checks' verdict: true unless a checker marked the endpoint unhealthy.
    pub(crate) fn active_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Ejections counting towards the next ejection's length (for logs and metrics).
    pub(crate) fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Requests to this endpoint in flight now: the least-request picker's load measure.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request to this endpoint as in flight until the returned guard is dropped.
    /// Takes the `Arc` so the guard can live in per-request state (`'static`); no allocation.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(self))
    }
}

/// Keeps one request counted in [`EndpointHealth::in_flight`]; the count drops with the guard.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<EndpointHealth>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `d` in whole milliseconds, saturating.
fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(12),
        }
    }

    #[test]
    fn new_endpoint_is_available() {
        let h = EndpointHealth::new();
        assert!(h.available(0));
        assert!(h.available(u64::MAX));
        assert_eq!(h.in_flight(), 0);
        assert_eq!(h.times_ejected(), 0);
    }

    #[test]
    fn ejects_after_consecutive_failures_for_base() {
        let h = EndpointHealth::new();
        let c = cfg();
        assert!(!h.record_failure(&c, 1000, true));
        assert!(!h.record_failure(&c, 1000, true));
        assert!(h.available(1000));
        assert!(h.record_failure(&c, 1000, true));
        assert!(!h.available(1000));
        assert!(!h.available(5999));
        assert!(h.available(6000));
        assert_eq!(h.times_ejected(), 1);
    }

    #[test]
    fn success_resets_the_streak() {
        let h = EndpointHealth::new();
        let c = cfg();
        h.record_failure(&c, 0, true);
        h.record_failure(&c, 0, true);
        h.record_success();
        assert!(!h.record_failure(&c, 0, true));
        assert!(!h.record_failure(&c, 0, true));
        assert!(h.available(0));
        assert!(h.record_failure(&c, 0, true));
    }

    #[test]
    fn failures_while_ejected_are_ignored() {
        let h = EndpointHealth::new();
        let c = cfg();
        for _ in 0..3 {
            h.record_failure(&c, 0, true);
        }
        for _ in 0..10 {
            assert!(!h.record_failure(&c, 100, true));
        }
        assert!(h.available(5000));
        // The streak restarted at the ejection: one failure after it does not eject again.
        assert!(!h.record_failure(&c, 5000, true));
        assert!(h.available(5000));
    }

    #[test]
    fn last_endpoint_is_not_ejected_until_allowed() {
        let h = EndpointHealth::new();
        let c = cfg();
        for _ in 0..10 {
            assert!(!h.record_failure(&c, 0, false));
        }
        assert!(h.available(0));
        // Another endpoint came back: the next failure ejects.
        assert!(h.record_failure(&c, 0, true));
        assert!(!h.available(0));
    }

    #[test]
    fn ejection_backs_off_and_is_capped() {
        let h = EndpointHealth::new();
        let c = cfg();
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                h.record_failure(&c, now, true);
            }
            let start = now;
            while !h.available(now) {
                now += 1000;
            }
            lengths.push(now - start);
        }
        assert_eq!(lengths, vec![5000, 10000, 12000, 12000]);
        assert_eq!(h.times_ejected(), 4);
    }

    #[test]
    fn ejection_count_is_forgiven_after_a_long_healthy_period() {
        // Synthetic times far beyond the real clock, so `record_success` (which reads the real
        // clock) never forgives here.
        const T: u64 = 1 << 40;
        let h = EndpointHealth::new();
        let c = cfg();
        for _ in 0..3 {
            h.record_failure(&c, T, true);
        }
        // Ejected T..T+5000; forgiven at T + 5000 + 12000.
        h.record_success();
        assert_eq!(h.times_ejected(), 1);
        // Ejected again before forgiveness: twice as long.
        for _ in 0..3 {
            h.record_failure(&c, T + 6000, true);
        }
        assert!(!h.available(T + 15999));
        assert!(h.available(T + 16000));
        // The next ejection comes 12 s after that one ended: forgiven first, so base length.
        for _ in 0..3 {
            h.record_failure(&c, T + 28000, true);
        }
        assert_eq!(h.times_ejected(), 1);
        assert!(!h.available(T + 32999));
        assert!(h.available(T + 33000));
    }

    #[test]
    fn record_success_forgives_with_the_real_clock() {
        let h = EndpointHealth::new();
        let c = OutlierDetection {
            consecutive_failures: 1,
            base_ejection: Duration::ZERO,
            max_ejection: Duration::ZERO,
        };
        let now = crate::backend::clock::now_ms();
        assert!(h.record_failure(&c, now, true));
        assert_eq!(h.times_ejected(), 1);
        h.record_success();
        assert_eq!(h.times_ejected(), 0);
    }

    #[test]
    fn zero_threshold_ejects_on_first_failure() {
        let h = EndpointHealth::new();
        let c = OutlierDetection {
            consecutive_failures: 0,
            ..cfg()
        };
        assert!(h.record_failure(&c, 0, true));
    }

    #[test]
    fn active_verdict_gates_availability() {
        let h = EndpointHealth::new();
        h.set_active_healthy(false);
        assert!(!h.available(0));
        assert!(!h.active_healthy());
        h.set_active_healthy(true);
        assert!(h.available(0));
    }

    #[test]
    fn in_flight_guard_counts() {
        let h = Arc::new(EndpointHealth::new());
        let a = h.begin();
        let b = h.begin();
        assert_eq!(h.in_flight(), 2);
        drop(a);
        assert_eq!(h.in_flight(), 1);
        let seen = h.clone();
        let moved = std::thread::spawn(move || {
            assert_eq!(seen.in_flight(), 1);
            drop(b);
        });
        moved.join().unwrap();
        assert_eq!(h.in_flight(), 0);
    }

    #[test]
    fn racing_failures_eject_once() {
        let h = Arc::new(EndpointHealth::new());
        let c = OutlierDetection {
            consecutive_failures: 100,
            ..cfg()
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                let c = c.clone();
                std::thread::spawn(move || {
                    (0..50).filter(|_| h.record_failure(&c, 0, true)).count()
                })
            })
            .collect();
        let ejections: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ejections, 1);
        assert_eq!(h.times_ejected(), 1);
    }
}
