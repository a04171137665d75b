//! The utilisation saturation detector and the filter built on it.

use std::time::Duration;

use super::{Candidate, Filter, SchedRequest};

/// The reference `utilization-detector`: an endpoint's saturation is
/// `max(waiting / queue_threshold, kv_usage / kv_threshold)`, or 1.0 when its metrics are missing
/// or older than `staleness`; the pool's is the mean over its endpoints (1.0 without endpoints).
/// An endpoint or pool is saturated at 1.0 or more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SaturationDetector {
    /// Waiting requests that count as full. Default: 5.
    pub queue_threshold: f64,
    /// KV usage that counts as full. Default: 0.8.
    pub kv_threshold: f64,
    /// Metrics older than this count as saturated. Default: 200 ms.
    pub staleness: Duration,
}

impl Default for SaturationDetector {
    fn default() -> Self {
        SaturationDetector {
            queue_threshold: 5.0,
            kv_threshold: 0.8,
            staleness: Duration::from_millis(200),
        }
    }
}

impl SaturationDetector {
    /// The saturation of one endpoint (see the type docs).
    pub fn endpoint_saturation(&self, c: &Candidate) -> f64 {
        match &c.metrics {
            Some(m) if c.metrics_age <= self.staleness => self.metrics_saturation(m),
            _ => 1.0,
        }
    }

    /// The saturation fresh `metrics` show: `max(waiting / queue_threshold, kv_usage /
    /// kv_threshold)`.
    pub fn metrics_saturation(&self, m: &crate::metrics::EndpointMetrics) -> f64 {
        (f64::from(m.waiting) / self.queue_threshold).max(m.kv_usage / self.kv_threshold)
    }

    /// The mean endpoint saturation (1.0 for no endpoints).
    pub fn pool_saturation(&self, candidates: &[Candidate]) -> f64 {
        if candidates.is_empty() {
            return 1.0;
        }
        candidates
            .iter()
            .map(|c| self.endpoint_saturation(c))
            .sum::<f64>()
            / candidates.len() as f64
    }

    /// Whether the pool is saturated (mean saturation at least 1.0).
    pub fn is_saturated(&self, candidates: &[Candidate]) -> bool {
        self.pool_saturation(candidates) >= 1.0
    }
}

/// The `utilization` filter: drops endpoints whose saturation is at least
/// `1.0 × (1 + headroom)`, unless that would drop every endpoint, in which case it keeps them
/// all (the scorers then choose among busy endpoints).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UtilizationFilter {
    /// The detector.
    pub detector: SaturationDetector,
    /// Extra allowance above saturation. Default: 0.
    pub headroom: f64,
}

impl Filter for UtilizationFilter {
    fn name(&self) -> &'static str {
        "utilization-filter"
    }
    fn filter(&self, _: &SchedRequest<'_>, candidates: &[Candidate], kept: &mut Vec<usize>) {
        let limit = 1.0 + self.headroom;
        if kept
            .iter()
            .all(|&i| self.detector.endpoint_saturation(&candidates[i]) >= limit)
        {
            return;
        }
        kept.retain(|&i| self.detector.endpoint_saturation(&candidates[i]) < limit);
    }
}
