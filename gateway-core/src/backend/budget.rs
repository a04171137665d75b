//! Retry budgets: a sliding window of request and retry counts per backend, lock-free.
//!
//! The window is [`BUCKETS`] buckets of `interval / BUCKETS` each. Every counter is one
//! `AtomicU64` holding the bucket's epoch (which `bucket_ms`-long period since the clock's start
//! it counts) in the high 32 bits and the count in the low 32 bits, so a bucket that comes round
//! again is recognised as stale and restarted without a lock. The request path calls
//! [`RetryBudgetState::record_request`] once per client request and
//! [`RetryBudgetState::try_retry`] before each retry; both are a few atomic operations and never
//! allocate.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RetryBudget;

/// Buckets in a window.
const BUCKETS: usize = 10;

/// The sliding-window counts behind one backend's [`RetryBudget`].
#[derive(Debug)]
pub(crate) struct RetryBudgetState {
    /// The width of a bucket in milliseconds: the configured interval / [`BUCKETS`], at least 1.
    bucket_ms: u64,
    /// Client requests per bucket, packed as `epoch << 32 | count`.
    requests: [AtomicU64; BUCKETS],
    /// Retries per bucket, packed likewise.
    retries: [AtomicU64; BUCKETS],
}

impl RetryBudgetState {
    /// Empty counts for `cfg`'s window. The window length (`cfg.interval`, default 10 s) is fixed
    /// here: a configuration with another interval needs a new state. Built when the backend is
    /// compiled.
    pub(crate) fn new(cfg: &RetryBudget) -> Self {
        let interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX);
        RetryBudgetState {
            bucket_ms: (interval_ms / BUCKETS as u64).max(1),
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    /// The window length in milliseconds (a whole number of buckets).
    pub(crate) fn window_ms(&self) -> u64 {
        self.bucket_ms.saturating_mul(BUCKETS as u64)
    }

    /// Counts a client request to the backend at `now_ms` ([`super::clock::now_ms`]). Called once
    /// per request, not per attempt: retries are counted by [`Self::try_retry`].
    pub(crate) fn record_request(&self, now_ms: u64) {
        let (slot, epoch) = self.position(now_ms);
        bump(&self.requests[slot], epoch);
    }

    /// Whether a retry may be sent at `now_ms`; if so it is counted.
    ///
    /// Allowed while the retries in the window are fewer than the larger of `cfg.percent` % of
    /// the requests in the window and `cfg.min_retries_per_second` times the window's length in
    /// seconds. Concurrent callers may together exceed the budget by the number of racing calls:
    /// the check and the count are separate atomic steps.
    pub(crate) fn try_retry(&self, cfg: &RetryBudget, now_ms: u64) -> bool {
        let (slot, epoch) = self.position(now_ms);
        let requests = window_sum(&self.requests, epoch);
        let retries = window_sum(&self.retries, epoch);
        let by_percent = requests.saturating_mul(u64::from(cfg.percent)) / 100;
        let floor = u64::from(cfg.min_retries_per_second).saturating_mul(self.window_ms()) / 1000;
        if retries >= by_percent.max(floor) {
            return false;
        }
        bump(&self.retries[slot], epoch);
        true
    }

    /// The bucket index and epoch tag for `now_ms`.
    fn position(&self, now_ms: u64) -> (usize, u32) {
        let period = now_ms / self.bucket_ms;
        // The remainder is below BUCKETS, so it fits; the tag keeps the low 32 bits of the period.
        ((period % BUCKETS as u64) as usize, period as u32)
    }
}

/// The epoch tag of a packed counter.
fn tag(packed: u64) -> u32 {
    (packed >> 32) as u32
}

/// The count of a packed counter.
fn count(packed: u64) -> u64 {
    packed & u64::from(u32::MAX)
}

/// `(epoch, count)` packed.
fn pack(epoch: u32, count: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(count)
}

/// Whether tag `t` belongs to a later period than `epoch` (wrapping comparison).
fn newer(t: u32, epoch: u32) -> bool {
    let ahead = t.wrapping_sub(epoch);
    ahead != 0 && ahead < u32::MAX / 2
}

/// Adds one to `slot` for `epoch`, restarting the slot if it still holds an older period.
///
/// The common case is one `fetch_add`. When that lands on a stale period, the slot is replaced by
/// `(epoch, 1)` with a compare-exchange; a caller that finds the slot already restarted by
/// someone else adds its one to the new period instead (the stale increments are discarded with
/// the old period). A slot already holding a later period (a caller that read the clock just
/// before a long pause) drops the count.
fn bump(slot: &AtomicU64, epoch: u32) {
    let prev = slot.fetch_add(1, Ordering::Relaxed);
    if tag(prev) == epoch {
        return;
    }
    let mut seen = prev.wrapping_add(1);
    loop {
        let t = tag(seen);
        if t == epoch {
            slot.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if newer(t, epoch) {
            return;
        }
        match slot.compare_exchange_weak(seen, pack(epoch, 1), Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(now) => seen = now,
        }
    }
}

/// The sum of the counts in `slots` whose period is within the window ending at `epoch`.
fn window_sum(slots: &[AtomicU64; BUCKETS], epoch: u32) -> u64 {
    slots
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|&v| epoch.wrapping_sub(tag(v)) < BUCKETS as u32)
        .map(count)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn cfg(percent: u32, min_rps: u32) -> RetryBudget {
        RetryBudget {
            percent,
            interval: Duration::from_secs(10),
            min_retries_per_second: min_rps,
        }
    }

    fn retries_allowed(state: &RetryBudgetState, cfg: &RetryBudget, now: u64) -> usize {
        (0..100_000)
            .take_while(|_| state.try_retry(cfg, now))
            .count()
    }

    #[test]
    fn percent_of_requests_in_window() {
        let c = cfg(20, 0);
        let s = RetryBudgetState::new(&c);
        for _ in 0..100 {
            s.record_request(5_000);
        }
        assert_eq!(retries_allowed(&s, &c, 5_000), 20);
        // Refused retries are not counted: more requests make room again.
        for _ in 0..10 {
            s.record_request(5_500);
        }
        assert_eq!(retries_allowed(&s, &c, 5_500), 2);
    }

    #[test]
    fn min_retries_per_second_is_a_floor() {
        let c = cfg(20, 3);
        let s = RetryBudgetState::new(&c);
        // No requests at all: 3/s over a 10 s window.
        assert_eq!(retries_allowed(&s, &c, 0), 30);
        // With many requests the percentage is larger and wins.
        let s = RetryBudgetState::new(&c);
        for _ in 0..1000 {
            s.record_request(0);
        }
        assert_eq!(retries_allowed(&s, &c, 0), 200);
    }

    #[test]
    fn zero_budget_refuses() {
        let c = cfg(0, 0);
        let s = RetryBudgetState::new(&c);
        for _ in 0..100 {
            s.record_request(0);
        }
        assert!(!s.try_retry(&c, 0));
    }

    #[test]
    fn window_slides() {
        let c = cfg(50, 0);
        let s = RetryBudgetState::new(&c);
        let base = 1_000_000;
        for _ in 0..10 {
            s.record_request(base);
        }
        assert_eq!(retries_allowed(&s, &c, base), 5);
        // 9.9 s later the requests and retries are still in the window.
        assert!(!s.try_retry(&c, base + 9_900));
        // 10 s later (a full window) they have gone: nothing is allowed without new requests.
        assert!(!s.try_retry(&c, base + 10_000));
        for _ in 0..4 {
            s.record_request(base + 10_000);
        }
        assert_eq!(retries_allowed(&s, &c, base + 10_000), 2);
    }

    #[test]
    fn old_retries_stop_counting() {
        let c = cfg(50, 0);
        let s = RetryBudgetState::new(&c);
        for t in (0..20_000).step_by(100) {
            s.record_request(t);
        }
        // Requests over the last 10 s (buckets 10..=19 s, 100 requests): 50 retries at 19 s.
        assert_eq!(retries_allowed(&s, &c, 19_999), 50);
        // 5 s later half the requests have left the window but the retries are all still in it.
        assert!(!s.try_retry(&c, 24_999));
        // Another 5 s on, the old retries have left too; no requests remain either.
        for _ in 0..10 {
            s.record_request(30_000);
        }
        assert_eq!(retries_allowed(&s, &c, 30_000), 5);
    }

    #[test]
    fn stale_bucket_restarts_after_wrapping_round() {
        let c = cfg(100, 0);
        let s = RetryBudgetState::new(&c);
        for _ in 0..7 {
            s.record_request(0);
        }
        // The same slot a window later: the old 7 are gone, the new 1 counts.
        s.record_request(10_000);
        assert_eq!(retries_allowed(&s, &c, 10_000), 1);
    }

    #[test]
    fn short_interval_has_millisecond_buckets() {
        let c = RetryBudget {
            percent: 100,
            interval: Duration::from_millis(5),
            min_retries_per_second: 0,
        };
        let s = RetryBudgetState::new(&c);
        assert_eq!(s.window_ms(), 10);
        s.record_request(0);
        assert_eq!(retries_allowed(&s, &c, 9), 1);
        s.record_request(10);
        assert_eq!(retries_allowed(&s, &c, 10), 0);
        assert_eq!(retries_allowed(&s, &c, 20), 0);
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let c = cfg(100, 0);
        let s = Arc::new(RetryBudgetState::new(&c));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                // Every thread crosses into a fresh bucket at the same time.
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.record_request(50_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(retries_allowed(&s, &c, 50_000), 4000);
    }

    #[test]
    fn packing_round_trips() {
        let v = pack(0xdead_beef, 42);
        assert_eq!(tag(v), 0xdead_beef);
        assert_eq!(count(v), 42);
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(0, 1));
        assert!(!newer(5, 5));
    }
}
