//! Prometheus metrics with vLLM's names (`/metrics`).
//!
//! Counters and histograms are lock-free atomics updated by the request tasks; the gauges and
//! the info series come from an [`EngineState`] snapshot taken when `/metrics` is scraped.
//! Histograms are in simulated seconds (wall-clock durations divided by `time_scale`). Every
//! series has the label `model_name` (the base model).

use crate::engine::EngineState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// vLLM's bucket bounds for time to first token (seconds).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's bucket bounds for time per output token and inter-token latency (seconds).
pub const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's bucket bounds for end-to-end, queue and phase times (seconds).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A fixed-bucket histogram of atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b:?}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum:?}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Why a request finished (`finished_reason` label of `vllm:request_success_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended the text.
    Stop,
    /// `max_tokens` (or the context length) was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI / vLLM spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The simulator's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    model_label: String,
    /// `vllm:prompt_tokens_total`.
    pub prompt_tokens: AtomicU64,
    /// `vllm:generation_tokens_total`.
    pub generation_tokens: AtomicU64,
    /// `vllm:request_success_total{finished_reason="stop"}`.
    pub success_stop: AtomicU64,
    /// `vllm:request_success_total{finished_reason="length"}`.
    pub success_length: AtomicU64,
    /// `vllm:time_to_first_token_seconds` (from arrival, queue included).
    pub ttft: Histogram,
    /// `vllm:time_per_output_token_seconds` (one sample per token gap).
    pub tpot: Histogram,
    /// `vllm:inter_token_latency_seconds` (same samples as `tpot`, vLLM's newer name).
    pub itl: Histogram,
    /// `vllm:e2e_request_latency_seconds`.
    pub e2e: Histogram,
    /// `vllm:request_queue_time_seconds`.
    pub queue: Histogram,
    /// `vllm:request_prefill_time_seconds` (start to first token).
    pub prefill: Histogram,
    /// `vllm:request_decode_time_seconds` (first token to last).
    pub decode: Histogram,
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Empty metrics for the base model `model`.
    pub fn new(model: &str) -> Metrics {
        Metrics {
            model_label: format!("model_name=\"{}\"", escape(model)),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success_stop: AtomicU64::new(0),
            success_length: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BUCKETS),
            tpot: Histogram::new(TPOT_BUCKETS),
            itl: Histogram::new(TPOT_BUCKETS),
            e2e: Histogram::new(REQUEST_BUCKETS),
            queue: Histogram::new(REQUEST_BUCKETS),
            prefill: Histogram::new(REQUEST_BUCKETS),
            decode: Histogram::new(REQUEST_BUCKETS),
        }
    }

    /// Counts a finished request.
    pub fn finished(&self, reason: FinishReason, prompt_tokens: usize, output_tokens: usize) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(output_tokens as u64, Ordering::Relaxed);
        match reason {
            FinishReason::Stop => &self.success_stop,
            FinishReason::Length => &self.success_length,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, with `state`'s gauges.
    pub fn render(&self, state: &EngineState, max_loras: usize, block_size: usize) -> String {
        let l = &self.model_label;
        let mut out = String::with_capacity(16 * 1024);
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {v:?}"
            );
        };
        gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            state.running as f64,
        );
        gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            state.waiting as f64,
        );
        gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            state.kv_usage,
        );
        gauge(
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage (vLLM v0 name). 1 means 100 percent usage.",
            state.kv_usage,
        );
        let _ = writeln!(
            out,
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig.\n\
             # TYPE vllm:cache_config_info gauge\n\
             vllm:cache_config_info{{{l},block_size=\"{block_size}\",num_gpu_blocks=\"{}\"}} 1",
            state.kv_total_blocks
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "# HELP vllm:lora_requests_info Running stats on LoRA requests.\n\
             # TYPE vllm:lora_requests_info gauge\n\
             vllm:lora_requests_info{{{l},max_lora=\"{max_loras}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} {now:?}",
            escape(&state.running_loras.join(",")),
            escape(&state.waiting_loras.join(","))
        );
        let mut counter = |name: &str, help: &str, extra: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{l}{extra}}} {v}"
            );
        };
        counter(
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            "",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            "",
            self.generation_tokens.load(Ordering::Relaxed),
        );
        counter(
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            "",
            state.prefix_cache_queries,
        );
        counter(
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            "",
            state.prefix_cache_hits,
        );
        let _ = writeln!(
            out,
            "# HELP vllm:request_success_total Count of successfully processed requests.\n\
             # TYPE vllm:request_success_total counter\n\
             vllm:request_success_total{{{l},finished_reason=\"stop\"}} {}\n\
             vllm:request_success_total{{{l},finished_reason=\"length\"}} {}",
            self.success_stop.load(Ordering::Relaxed),
            self.success_length.load(Ordering::Relaxed)
        );
        for (h, name, help) in [
            (
                &self.ttft,
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
            ),
            (
                &self.tpot,
                "vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds.",
            ),
            (
                &self.itl,
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
            ),
            (
                &self.e2e,
                "vllm:e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.",
            ),
            (
                &self.queue,
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
            ),
            (
                &self.prefill,
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
            ),
            (
                &self.decode,
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
            ),
        ] {
            h.render(&mut out, name, help, l);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        let mut s = String::new();
        h.render(&mut s, "x", "help", "model_name=\"m\"");
        assert!(s.contains("x_bucket{model_name=\"m\",le=\"1.0\"} 1\n"));
        assert!(s.contains("x_bucket{model_name=\"m\",le=\"2.0\"} 2\n"));
        assert!(s.contains("x_bucket{model_name=\"m\",le=\"+Inf\"} 3\n"));
        assert!(s.contains("x_sum{model_name=\"m\"} 11.0\n"));
        assert!(s.contains("x_count{model_name=\"m\"} 3\n"));
    }
}
