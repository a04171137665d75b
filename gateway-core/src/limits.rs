//! Overload accounting: connection slots and the request-body buffering budget.
//!
//! Everything here is a counter in an atomic with an RAII guard that gives back what it took:
//! the request path takes no lock and allocates nothing (a guard holds an `Arc` clone).
//! [`crate::config::Limits`] sets the bounds; `docs/security.md` explains the defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::backend::clock::now_ms;

/// A count of things held (connections, bytes) that refuses to go past a bound.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    held: AtomicUsize,
}

impl Gauge {
    /// Takes `n` if the total stays at or under `max`; `None` (taking nothing) otherwise.
    fn try_take(&self, n: usize, max: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// What is held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// One connection slot of a [`Gauge`]; freed on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Gauge>);

impl Slot {
    /// Takes a slot when fewer than `max` are held.
    pub(crate) fn try_take(gauge: &Arc<Gauge>, max: usize) -> Option<Slot> {
        gauge.try_take(1, max).then(|| Slot(gauge.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.give_back(1);
    }
}

/// The gateway-wide budget of request-body bytes held in memory
/// ([`crate::config::Limits::max_buffered_body_bytes`]).
#[derive(Debug)]
pub(crate) struct BodyBudget {
    used: Gauge,
    cap: AtomicUsize,
    /// Reservations refused since start.
    refused: AtomicU64,
    log: Throttle,
}

impl BodyBudget {
    /// A budget of `cap` bytes.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            used: Gauge::default(),
            cap: AtomicUsize::new(cap),
            refused: AtomicU64::new(0),
            log: Throttle::default(),
        })
    }

    /// Changes the cap; reservations already held stay.
    pub(crate) fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Release);
    }

    /// Reserves `bytes`, or returns `None` (counting a refusal and logging a rate-limited
    /// warning naming `what`) when that would go past the cap.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize, what: &str) -> Option<BodyPermit> {
        let cap = self.cap.load(Ordering::Acquire);
        if self.used.try_take(bytes, cap) {
            return Some(BodyPermit {
                budget: self.clone(),
                bytes,
            });
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                what,
                bytes,
                held = self.used.held(),
                cap,
                refused_total = refused,
                suppressed,
                "request body buffering cap reached"
            );
        }
        None
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used.held()
    }

    /// Reservations refused since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Bytes reserved from a [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub(crate) struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyPermit {
    /// Gives back what is reserved past `bytes` (nothing when it holds less).
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.used.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.budget.used.give_back(self.bytes);
    }
}

/// Lets a repeated warning through at most once a second; counts what it held back.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// [`now_ms`] before which nothing is let through.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    const INTERVAL_MS: u64 = 1000;

    /// `Some(held back since the last one)` when this occurrence should be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Ordering::Acquire);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + Self::INTERVAL_MS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_bound_and_come_back_on_drop() {
        let gauge = Arc::new(Gauge::default());
        let a = Slot::try_take(&gauge, 2).unwrap();
        let _b = Slot::try_take(&gauge, 2).unwrap();
        assert!(Slot::try_take(&gauge, 2).is_none());
        assert_eq!(gauge.held(), 2);
        drop(a);
        assert!(Slot::try_take(&gauge, 2).is_some());
        assert_eq!(gauge.held(), 1);
    }

    #[test]
    fn body_budget_refuses_past_the_cap_and_gives_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.try_reserve(60, "test").unwrap();
        assert!(budget.try_reserve(41, "test").is_none());
        assert_eq!(budget.refused(), 1);
        let b = budget.try_reserve(40, "test").unwrap();
        assert_eq!(budget.used(), 100);
        a.shrink_to(10);
        assert_eq!(budget.used(), 50);
        a.shrink_to(30); // never grows
        assert_eq!(budget.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
        budget.set_cap(10);
        assert!(budget.try_reserve(11, "test").is_none());
        assert!(budget.try_reserve(usize::MAX, "test").is_none());
        assert!(budget.try_reserve(0, "test").is_some());
    }

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.next_ms.store(0, Ordering::Release);
        assert_eq!(t.allow(), Some(2));
    }
}
