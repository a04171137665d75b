//! A cheap monotonic clock in milliseconds.
//!
//! Endpoint health, retry budgets and health checks keep their times as `u64` milliseconds in
//! atomics; this module is the one place those milliseconds come from.

use std::sync::OnceLock;
use std::time::Instant;

/// The instant the clock counts from: set by the first call to [`now_ms`].
static BASE: OnceLock<Instant> = OnceLock::new();

/// Monotonic milliseconds since the first call in this process (the first call returns 0).
///
/// Never goes backwards and is unaffected by wall-clock changes. Called on the request path: it
/// takes no lock (after the first call the base is a plain read) and does not allocate.
pub(crate) fn now_ms() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::now_ms;
    use std::time::Duration;

    #[test]
    fn monotonic_and_advances() {
        let a = now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = now_ms();
        assert!(b >= a + 20, "{a} -> {b}");
        assert!(now_ms() >= b);
    }
}
