//! Sampling a share of requests with a bounded error.
//!
//! A [`Share`] decides, request by request, whether a request belongs to the configured share
//! (`num / den`, e.g. a `RequestMirror`'s `percent` or `fraction`). Decisions are random, so a
//! client whose requests alternate between two kinds does not see one kind always chosen, but the
//! count chosen never drifts from `num / den` of the requests seen by more than one request: over
//! any window of consecutive requests it is within two of the exact share. Independent coin flips
//! (what a plain `random() < p` gives) drift by the square root of the count instead: at 20 % of
//! 500 requests the standard deviation is 9 requests.

use std::sync::atomic::{AtomicI64, Ordering};

/// A share `num / den` of requests, sampled with an error bounded by one request.
///
/// The state is one atomic credit, in units of `1 / den` request: every request adds `num`, every
/// chosen request takes `den`. The credit stays within `[-den, den)`: at or above `den` the
/// request is chosen, below zero it is not, in between it is chosen with probability
/// `credit / den`.
#[derive(Debug)]
pub(crate) struct Share {
    num: i64,
    den: i64,
    credit: AtomicI64,
}

impl Share {
    /// The share `num / den`. `den` must be positive and `num <= den`.
    pub(crate) fn new(num: u32, den: u32) -> Self {
        debug_assert!(den > 0 && num <= den);
        Share {
            num: i64::from(num),
            den: i64::from(den.max(1)),
            credit: AtomicI64::new(0),
        }
    }

    /// Whether this request is in the share. Lock-free; called once per request.
    pub(crate) fn take(&self) -> bool {
        self.take_with(|den| rand::random_range(0..den))
    }

    /// [`Share::take`] with the random draw in `0..den` supplied (for tests).
    fn take_with(&self, mut draw: impl FnMut(i64) -> i64) -> bool {
        let mut current = self.credit.load(Ordering::Relaxed);
        loop {
            let credit = current + self.num;
            let chosen = if credit >= self.den {
                true
            } else if credit <= 0 {
                false
            } else {
                draw(self.den) < credit
            };
            let next = if chosen { credit - self.den } else { credit };
            match self.credit.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return chosen,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(share: &Share, n: usize) -> usize {
        (0..n).filter(|_| share.take()).count()
    }

    #[test]
    fn every_window_is_within_two_of_the_exact_share() {
        for (num, den) in [
            (1, 5),
            (1, 3),
            (1, 2),
            (2, 3),
            (33, 100),
            (999, 1000),
            (1, 1000),
        ] {
            let share = Share::new(num, den);
            let picks: Vec<bool> = (0..20_000).map(|_| share.take()).collect();
            for window in [10, 500, 5_000] {
                for start in (0..picks.len() - window).step_by(97) {
                    let got = picks[start..start + window].iter().filter(|&&p| p).count() as f64;
                    let want = window as f64 * f64::from(num) / f64::from(den);
                    assert!(
                        (got - want).abs() <= 2.0,
                        "{num}/{den}: {got} of {window} from {start}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn none_and_all() {
        assert_eq!(count(&Share::new(0, 100), 1_000), 0);
        assert_eq!(count(&Share::new(100, 100), 1_000), 1_000);
    }

    #[test]
    fn alternating_requests_are_both_sampled() {
        // A deterministic "every other request" sampler would only ever pick one parity.
        let share = Share::new(1, 2);
        let (mut even, mut odd) = (0, 0);
        for i in 0..10_000 {
            if share.take() {
                if i % 2 == 0 { even += 1 } else { odd += 1 }
            }
        }
        assert_eq!(even + odd, 5_000);
        assert!(even > 1_000 && odd > 1_000, "even {even}, odd {odd}");
    }

    #[test]
    fn credit_decides_at_the_edges() {
        // 1/4: credit 1, 2, 3 (draws decide), then forced at 4.
        let share = Share::new(1, 4);
        let never = |_| i64::MAX;
        assert!(!share.take_with(never));
        assert!(!share.take_with(never));
        assert!(!share.take_with(never));
        assert!(
            share.take_with(never),
            "credit reached den: chosen whatever the draw"
        );
        // Credit back to 0; a draw below the credit chooses.
        assert!(share.take_with(|_| 0));
        // Credit now -3: not chosen whatever the draw, until it is positive again.
        assert!(!share.take_with(|_| 0));
    }
}
