//! The whole benchmark: every rate × every target, on one server pool, with the same seeded
//! arrivals and requests for every target at a rate.

use crate::arrivals;
use crate::driver::{self, RunParams};
use crate::report::{self, Report};
use crate::servers::SimPool;
use crate::stats::{self, RunSummary};
use crate::target::{TargetSpec, mix};
use crate::workload::{Api, Workload};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run (the servers are started separately, see [`SimPool`]).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Targets, in report order; ratios are taken to `direct-rr` when it is among them.
    pub targets: Vec<TargetSpec>,
    /// The workload.
    pub workload: Workload,
    /// Chat or completions.
    pub api: Api,
    /// Offered rates, requests per simulated second.
    pub rates: Vec<f64>,
    /// Measured window per rate and target, simulated seconds.
    pub duration_s: f64,
    /// Warm-up before the window, simulated seconds (sent, not counted).
    pub warmup_s: f64,
    /// Seed of the arrivals and the workload.
    pub seed: u64,
    /// In-flight bound of the driver.
    pub max_in_flight: usize,
    /// Per-request timeout, simulated seconds.
    pub request_timeout_s: f64,
    /// Restart the servers (empty caches and queues) before every run but the first.
    pub fresh_servers: bool,
    /// How long to wait (wall seconds) for a `url:` target to answer a probe request with 200
    /// before each of its runs.
    pub target_wait_s: f64,
    /// The command line, recorded in the report.
    pub command: String,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A simulator could not be (re)started.
    #[error("simulator: {0}")]
    Sim(#[from] vllm_sim::SimError),
    /// A `url:` target did not answer the probe in time.
    #[error("target {0} did not answer a probe request with 200 within {1} s")]
    NotReady(String, f64),
}

/// Sends a one-token request to `base` until it answers 200 or `wait` passes.
async fn wait_ready(base: &str, model: &str, api: Api, wait: Duration) -> bool {
    let client = driver::http_client();
    let body = match api {
        Api::Chat => serde_json::json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        Api::Completions => serde_json::json!({"model": model, "prompt": "ping", "max_tokens": 1}),
    }
    .to_string();
    let deadline = Instant::now() + wait;
    loop {
        let req = http::Request::post(format!("{base}{}", api.path()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())));
        if let Ok(req) = req
            && let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(5), client.request(req)).await
        {
            let ok = resp.status() == http::StatusCode::OK;
            let _ = resp.into_body().collect().await;
            if ok {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs every rate (ascending order as given) and, at each rate, every target in turn, calling
/// `progress` after each run. At a rate, every target gets the same arrival times and the same
/// requests. With `fresh_servers`, the pool is restarted before every run but the first.
pub async fn run(
    cfg: &BenchConfig,
    pool: &mut SimPool,
    mut progress: impl FnMut(&RunSummary),
) -> Result<Report, BenchError> {
    let sim = pool.config().clone();
    let mut results = Vec::new();
    let mut first = true;
    for (ri, &rate) in cfg.rates.iter().enumerate() {
        let times = arrivals::poisson(
            rate,
            cfg.warmup_s + cfg.duration_s,
            cfg.seed ^ mix(ri as u64 + 1),
        );
        for spec in &cfg.targets {
            if cfg.fresh_servers && !first {
                pool.restart().await?;
            }
            first = false;
            let requests: Vec<_> = cfg
                .workload
                .generator(&sim.model, cfg.api, sim.max_model_len, cfg.seed)
                .take(times.len())
                .collect();
            let target = Arc::new(spec.build(&pool.urls(), cfg.seed ^ mix(ri as u64)));
            if !spec.is_direct() {
                let wait = Duration::from_secs_f64(cfg.target_wait_s.max(0.0));
                if !wait_ready(&target.urls[0], &sim.model, cfg.api, wait).await {
                    return Err(BenchError::NotReady(target.name.clone(), cfg.target_wait_s));
                }
            }
            let params = RunParams {
                rate,
                duration_s: cfg.duration_s,
                warmup_s: cfg.warmup_s,
                time_scale: sim.time_scale,
                api: cfg.api,
                max_in_flight: cfg.max_in_flight,
                request_timeout_s: cfg.request_timeout_s,
            };
            let out = driver::run(target, driver::http_client(), requests, &times, params).await;
            let window = (cfg.warmup_s, cfg.warmup_s + cfg.duration_s);
            let summary = stats::summarize(&spec.name(), rate, window, &out);
            progress(&summary);
            results.push(summary);
        }
    }
    let settings = serde_json::json!({
        "servers": pool.ports().len(),
        "server_config": sim,
        "api": cfg.api,
        "rates": cfg.rates,
        "duration_s": cfg.duration_s,
        "warmup_s": cfg.warmup_s,
        "seed": cfg.seed,
        "max_in_flight": cfg.max_in_flight,
        "request_timeout_s": cfg.request_timeout_s,
        "fresh_servers": cfg.fresh_servers,
        "targets": cfg.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
    });
    let ratios = report::ratios(&results);
    Ok(Report {
        command: cfg.command.clone(),
        workload: serde_json::to_value(&cfg.workload).unwrap_or_default(),
        settings,
        units: "seconds of simulated time (client-measured wall time / time_scale); TPOT in the Markdown table in simulated ms".into(),
        results,
        ratios,
    })
}
