//! The gateway's own cost per inference request: the same chat completion sent straight to one
//! simulated server and through a gateway, with every simulated latency at zero, so what is left
//! is the network path and the gateway's work (body buffering, parsing, scheduling, proxying).
//!
//! [`measure`] runs a closed loop: `connections` tasks each send one request after the other on
//! a kept-alive connection for the warm-up and then the measured window, and the latencies of
//! the window's requests (from sending the head to reading the last body byte) are summarised.
//! [`cpu_seconds`] reads a process's user + system CPU time, so the caller can divide the
//! gateway's CPU over a window by the requests it served. The `inference-overhead` binary
//! starts the server and a `file-gateway` process and runs both paths side by side
//! (docs/benchmarks/inference.md, "Gateway overhead").

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use vllm_sim::SimConfig;

use crate::driver::HttpClient;
use crate::stats::quantile;

/// A simulated server that answers as fast as it can: no prefill, decode or LoRA time, no
/// jitter, and enough running slots and KV blocks that nothing ever waits.
pub fn zero_latency_sim(model: &str) -> SimConfig {
    SimConfig {
        model: model.to_string(),
        max_num_seqs: 4096,
        max_waiting_queue_length: 100_000,
        max_model_len: 32_768,
        kv_cache_size: 1 << 20,
        seed: Some(1),
        ..SimConfig::default()
    }
}

/// One request of the loop.
#[derive(Clone, Debug)]
pub struct OverheadRequest {
    /// Full URL (`http://127.0.0.1:PORT/v1/chat/completions`).
    pub url: String,
    /// `Host` header to send; `None` keeps the URL's authority.
    pub host: Option<String>,
    /// The JSON body.
    pub body: Bytes,
}

impl OverheadRequest {
    /// A chat completion of `model` with a user message of `prompt_words` words and
    /// `max_tokens` output tokens, streamed (SSE) when `stream`.
    pub fn chat(
        url: String,
        host: Option<String>,
        model: &str,
        prompt_words: usize,
        max_tokens: u32,
        stream: bool,
    ) -> Self {
        let words = [
            "the", "gateway", "routes", "each", "request", "to", "a", "server",
        ];
        let content: Vec<&str> = (0..prompt_words).map(|i| words[i % words.len()]).collect();
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": content.join(" ")}],
            "max_tokens": max_tokens,
            "stream": stream,
        });
        OverheadRequest {
            url,
            host,
            body: Bytes::from(body.to_string()),
        }
    }
}

/// Latencies of one measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Requests completed with 200 in the window.
    pub requests: u64,
    /// Requests that failed (status other than 200, transport error) in the window.
    pub errors: u64,
    /// Completed requests per wall second.
    pub requests_per_s: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
}

/// Runs `connections` closed loops of `request` for `warmup` and then `window`; returns the
/// window's latencies. Each loop keeps its own connection (the client pools one per loop).
pub async fn measure(
    client: &HttpClient,
    request: &OverheadRequest,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> LatencySummary {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let client = client.clone();
        let request = request.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = send(&client, &request).await;
                let done = Instant::now();
                if sent >= measure_from && done <= end {
                    if ok {
                        latencies.push((done - sent).as_secs_f64() * 1e6);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (latencies, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latencies, e)) = joined {
            all.extend(latencies);
            errors += e;
        }
    }
    summarize(all, errors, window)
}

fn summarize(mut latencies: Vec<f64>, errors: u64, window: Duration) -> LatencySummary {
    latencies.sort_by(f64::total_cmp);
    let q = |p| quantile(&latencies, p).unwrap_or(f64::NAN);
    let n = latencies.len();
    LatencySummary {
        requests: n as u64,
        errors,
        requests_per_s: n as f64 / window.as_secs_f64(),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        mean_us: if n == 0 {
            f64::NAN
        } else {
            latencies.iter().sum::<f64>() / n as f64
        },
    }
}

/// Sends one request and reads the whole body; true on a 200.
async fn send(client: &HttpClient, request: &OverheadRequest) -> bool {
    let mut builder = http::Request::post(&request.url).header("content-type", "application/json");
    if let Some(host) = &request.host {
        builder = builder.header("host", host);
    }
    let Ok(req) = builder.body(Full::new(request.body.clone())) else {
        return false;
    };
    match client.request(req).await {
        Ok(response) => {
            let ok = response.status() == http::StatusCode::OK;
            response.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// User + system CPU seconds of process `pid` (all its threads, including finished ones), from
/// `/proc/PID/stat`; `None` when it cannot be read. Resolution: one clock tick (10 ms at the
/// kernel's `USER_HZ` of 100), so measure over thousands of requests.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds (`USER_HZ` = 100).
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_from_a_stat_line() {
        let line =
            "4242 (file gateway) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_cpu_seconds(line), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        // This process has used some CPU by now.
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn percentiles_of_a_window() {
        let s = summarize(
            (1..=100).map(f64::from).collect(),
            2,
            Duration::from_secs(2),
        );
        assert_eq!((s.requests, s.errors), (100, 2));
        assert_eq!(s.requests_per_s, 50.0);
        assert!(s.p50_us >= 50.0 && s.p50_us <= 51.0, "{}", s.p50_us);
        assert!(s.p99_us >= 99.0, "{}", s.p99_us);
    }
}
