//! A standalone endpoint picker (EPP): the Envoy `ext_proc` gRPC service of the Gateway API
//! Inference Extension protocol, for this gateway's InferencePool `endpointPickerRef` or for
//! an Envoy-based gateway.
//!
//! ```text
//! # the in-process scheduler (reference default profile over the servers' scraped /metrics)
//! cargo run -p examples --bin endpoint-picker -- \
//!     --listen 127.0.0.1:9002 --endpoint 127.0.0.1:8000 --endpoint 127.0.0.1:8001
//!
//! # the conformance test picker (round robin, `test-epp-endpoint-selection`, and the served
//! # endpoint echoed in `x-conformance-test-served-endpoint`)
//! cargo run -p examples --bin endpoint-picker -- \
//!     --listen 127.0.0.1:9002 --conformance --endpoint 127.0.0.1:8000 --endpoint 127.0.0.1:8001
//! ```
//!
//! `--endpoint` (repeatable) lists the pool's endpoints (`ip:port`); the gateway's subset hint
//! further restricts each request. `--objective name=priority` (repeatable) names the
//! InferenceObjectives requests may give in `x-llm-d-inference-objective`: a negative priority
//! is sheddable, refused with 429 `rejected-saturated` while the endpoints are saturated.
//! `--scrape-interval-ms` (default 50) is how often the servers' `/metrics` are read (not in
//! conformance mode). Ctrl-C stops it. docs/inference.md describes the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use gateway_inference::extproc::server::{PickerServer, RoundRobinPolicy, SchedulerPolicy};
use gateway_inference::metrics::Engine;
use gateway_inference::scrape::ScrapeConfig;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "An ext_proc endpoint picker for InferencePools")]
struct Args {
    /// Where the gRPC service listens (port 0: any free port; the bound address is printed on
    /// stdout as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: SocketAddr,
    /// An endpoint of the pool, `ip:port` (repeatable, at least one).
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<SocketAddr>,
    /// The conformance test picker (round robin) instead of the scheduler.
    #[arg(long)]
    conformance: bool,
    /// An InferenceObjective, `name=priority` (repeatable; scheduler only).
    #[arg(long = "objective", value_parser = parse_objective)]
    objectives: Vec<(String, i32)>,
    /// Milliseconds between two reads of every endpoint's `/metrics` (scheduler only).
    #[arg(long, default_value_t = 50)]
    scrape_interval_ms: u64,
}

fn parse_objective(text: &str) -> Result<(String, i32), String> {
    let (name, priority) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=priority"))?;
    let priority = priority
        .parse()
        .map_err(|e| format!("{text:?}: priority: {e}"))?;
    Ok((name.to_owned(), priority))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    examples::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, endpoints = ?args.endpoints, conformance = args.conformance, "endpoint picker listening");
    // The bound address on stdout, for callers that asked for port 0.
    println!("listening on {address}");
    let serve = if args.conformance {
        tokio::spawn(
            PickerServer::new(Arc::new(RoundRobinPolicy::new(args.endpoints))).serve(listener),
        )
    } else {
        let mut policy = SchedulerPolicy::new(
            args.endpoints.iter().map(|&a| (a, Engine::Vllm)).collect(),
            &args.objectives,
        );
        policy.start_scraping(ScrapeConfig {
            interval: Duration::from_millis(args.scrape_interval_ms.max(1)),
            ..ScrapeConfig::default()
        });
        tokio::spawn(PickerServer::new(Arc::new(policy)).serve(listener))
    };
    tokio::select! {
        r = serve => r??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
