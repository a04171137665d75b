//! Open-loop arrival times: a Poisson process (exponential gaps) at a fixed rate.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

/// Arrival times, in simulated seconds from 0 (exclusive) to `duration` (exclusive), of a
/// Poisson process with `rate` arrivals per simulated second, seeded with `seed`. The same
/// arguments always give the same times. A rate that is not positive gives no arrivals.
pub fn poisson(rate: f64, duration: f64, seed: u64) -> Vec<f64> {
    let Ok(exp) = Exp::new(rate) else {
        return Vec::new();
    };
    if !(rate > 0.0 && rate.is_finite()) {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity((rate * duration * 1.1) as usize + 16);
    let mut t = 0.0;
    loop {
        t += exp.sample(&mut rng);
        if t >= duration {
            break;
        }
        out.push(t);
    }
    out
}
