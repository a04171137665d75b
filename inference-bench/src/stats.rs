//! Per-run summaries: counts, throughput and latency percentiles.

use crate::driver::{Outcome, RequestResult};
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of one latency, simulated seconds (`None` when nothing was measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The `q` quantile (0..=1) of sorted `v`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

impl Percentiles {
    /// Percentiles of `values` (any order; NaNs dropped).
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let mean = if values.is_empty() {
            None
        } else {
            Some(values.iter().sum::<f64>() / values.len() as f64)
        };
        Percentiles {
            mean,
            p50: quantile(&values, 0.5),
            p90: quantile(&values, 0.9),
            p99: quantile(&values, 0.99),
        }
    }
}

/// The summary of one target at one rate. Latencies are simulated seconds.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Target name.
    pub target: String,
    /// Offered rate, requests per simulated second.
    pub rate: f64,
    /// Requests that arrived in the measured window (after the warm-up).
    pub sent: usize,
    /// Of those, answered 200 with a complete stream.
    pub completed: usize,
    /// Answered 429.
    pub rejected_429: usize,
    /// Other failures by kind (`status_503`, `transport`, `incomplete`, `timeout`).
    pub errors: BTreeMap<String, usize>,
    /// Arrivals not sent because the in-flight bound was reached (warm-up included).
    pub in_flight_cap_hits: usize,
    /// Completed requests whose token events differ from `usage.completion_tokens` or from
    /// `max_tokens` (should be 0).
    pub token_mismatches: usize,
    /// Requests completed inside the measured window (whenever they arrived) per simulated
    /// second: the rate the pool sustains (equal to the offered rate when it keeps up).
    pub throughput_rps: f64,
    /// Output tokens of the requests completed inside the window, per simulated second.
    pub output_tokens_per_s: f64,
    /// Time to first token (scheduled arrival to the first token event).
    pub ttft: Percentiles,
    /// Time per output token: (e2e − ttft) / (tokens − 1), requests with at least 2 tokens.
    pub tpot: Percentiles,
    /// End-to-end latency (scheduled arrival to the end of the stream).
    pub e2e: Percentiles,
    /// Share of prompt tokens the servers reported as cached (`cached_tokens / prompt_tokens`).
    pub cached_prompt_share: Option<f64>,
    /// Completed requests per answering server (`x-inference-pod`).
    pub per_server: BTreeMap<String, usize>,
    /// 99th percentile of how late requests were sent (wall milliseconds): large values mean
    /// the machine running the tool could not keep up and latencies are inflated.
    pub send_lag_p99_ms: Option<f64>,
}

/// Summarizes one run's results.
///
/// `window` is the measured window (start, end) in simulated seconds from the start of the run:
/// requests arriving in it are counted in the latencies; requests completing in it are counted
/// in the throughput.
pub fn summarize(
    target: &str,
    rate: f64,
    window: (f64, f64),
    results: &[RequestResult],
) -> RunSummary {
    let measured: Vec<&RequestResult> = results.iter().filter(|r| r.measured).collect();
    let mut errors = BTreeMap::new();
    let mut rejected_429 = 0;
    let mut ok = Vec::new();
    for r in &measured {
        match &r.outcome {
            Outcome::Ok => ok.push(*r),
            Outcome::Status(429) => rejected_429 += 1,
            Outcome::Status(s) => *errors.entry(format!("status_{s}")).or_insert(0) += 1,
            Outcome::Transport(_) => *errors.entry("transport".into()).or_insert(0) += 1,
            Outcome::Incomplete => *errors.entry("incomplete".into()).or_insert(0) += 1,
            Outcome::Timeout => *errors.entry("timeout".into()).or_insert(0) += 1,
            Outcome::InFlightCap => {}
        }
    }
    let in_flight_cap_hits = results
        .iter()
        .filter(|r| r.outcome == Outcome::InFlightCap)
        .count();
    let token_mismatches = ok
        .iter()
        .filter(|r| r.usage_completion_tokens != Some(r.tokens) || r.tokens != r.expected_tokens)
        .count();
    // Steady-state throughput: requests (warm-up ones included) that completed inside the
    // measured window, over the window's length.
    let in_window: Vec<&RequestResult> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter(|r| {
            let end = r.arrival_s + r.e2e_s;
            end >= window.0 && end < window.1
        })
        .collect();
    let length = window.1 - window.0;
    let tokens: usize = in_window.iter().map(|r| r.tokens).sum();
    let (throughput_rps, output_tokens_per_s) = if length > 0.0 {
        (in_window.len() as f64 / length, tokens as f64 / length)
    } else {
        (0.0, 0.0)
    };
    let prompt: usize = ok.iter().filter_map(|r| r.usage_prompt_tokens).sum();
    let cached: usize = ok.iter().filter_map(|r| r.cached_tokens).sum();
    let mut per_server = BTreeMap::new();
    for r in &ok {
        let name = r.server.clone().unwrap_or_else(|| "(unknown)".into());
        *per_server.entry(name).or_insert(0) += 1;
    }
    RunSummary {
        target: target.to_string(),
        rate,
        sent: measured
            .iter()
            .filter(|r| r.outcome != Outcome::InFlightCap)
            .count(),
        completed: ok.len(),
        rejected_429,
        errors,
        in_flight_cap_hits,
        token_mismatches,
        throughput_rps,
        output_tokens_per_s,
        ttft: Percentiles::of(ok.iter().filter_map(|r| r.ttft_s).collect()),
        tpot: Percentiles::of(
            ok.iter()
                .filter(|r| r.tokens >= 2)
                .filter_map(|r| r.ttft_s.map(|t| (r.e2e_s - t) / (r.tokens - 1) as f64))
                .collect(),
        ),
        e2e: Percentiles::of(ok.iter().map(|r| r.e2e_s).collect()),
        cached_prompt_share: (prompt > 0).then(|| cached as f64 / prompt as f64),
        per_server,
        send_lag_p99_ms: Percentiles::of(results.iter().map(|r| r.send_lag_ms).collect()).p99,
    }
}
