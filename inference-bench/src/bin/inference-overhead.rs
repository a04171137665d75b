//! What the gateway adds to one inference request: latency (p50 / p99) and CPU per request.
//!
//! ```text
//! cargo build --release -p examples --bin file-gateway -p inference-bench --bin inference-overhead
//! target/release/inference-overhead --gateway target/release/file-gateway --connections 1,16
//! ```
//!
//! Starts one simulated vLLM server with every latency at zero, writes a configuration with one
//! Gateway and two HTTPRoutes to that server (host `pool.bench` through an InferencePool, so the
//! body is buffered and parsed and the in-process picker chooses; host `plain.bench` to a plain
//! Service, for comparison), starts the gateway binary on free loopback ports, and for each
//! connection count runs the same chat completion in a closed loop: straight to the server,
//! through the plain route, through the pool. Prints a JSON report (and Markdown with
//! `--markdown`): latency percentiles per path, what the gateway adds to the direct p50 / p99,
//! and the gateway process's CPU time per request (user + system, from `/proc`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use inference_bench::driver::http_client;
use inference_bench::overhead::{
    LatencySummary, OverheadRequest, cpu_seconds, measure, zero_latency_sim,
};
use serde::Serialize;
use vllm_sim::Simulator;

const MODEL: &str = "bench-model";

/// Gateway overhead per inference request, against one zero-latency simulated server.
#[derive(Parser, Debug)]
#[command(name = "inference-overhead")]
struct Args {
    /// The gateway binary (`file-gateway`).
    #[arg(long)]
    gateway: PathBuf,
    /// Closed-loop connections, comma-separated; each count is run on every path.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 16])]
    connections: Vec<usize>,
    /// Measured window per path and connection count, seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Words in the user message (about one token each).
    #[arg(long, default_value_t = 200)]
    prompt_words: usize,
    /// Output tokens per request.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Streamed (SSE) responses instead of one JSON body.
    #[arg(long)]
    stream: bool,
    /// The in-process picker's profile (passed as `--inference-profile`).
    #[arg(long, default_value = "reference")]
    inference_profile: String,
    /// Write the JSON report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a Markdown table here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The gateway's stdout and stderr go here (default: discarded).
    #[arg(long)]
    gateway_log: Option<PathBuf>,
}

/// One path at one connection count.
#[derive(Debug, Serialize)]
struct Row {
    path: &'static str,
    connections: usize,
    #[serde(flatten)]
    latency: LatencySummary,
    /// Added to the direct path's p50 / p99 at the same connection count, microseconds.
    added_p50_us: Option<f64>,
    added_p99_us: Option<f64>,
    /// Gateway CPU (user + system) per completed request over the window, microseconds.
    gateway_cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    prompt_words: usize,
    max_tokens: u32,
    stream: bool,
    duration_s: f64,
    warmup_s: f64,
    rows: Vec<Row>,
}

/// Kills the gateway and removes the configuration directory however the run ends.
struct Cleanup {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The gateway's configuration: one listener, a route to the pool and a route to a Service,
/// both to the one server.
fn config_yaml(listener: u16, server: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: bench}}
spec: {{controllerName: gateway.pingora.rs/controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  gatewayClassName: bench
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, port: {listener}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: pool, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  hostnames: [pool.bench]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: sims}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  hostnames: [plain.bench]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    backendRefs: [{{name: sim, port: 80}}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: sims, namespace: default}}
spec:
  selector: {{matchLabels: {{app: sim}}}}
  targetPorts: [{{number: {server}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: sim-0, namespace: default, labels: {{app: sim}}}}
status:
  podIP: 127.0.0.1
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: sim, namespace: default}}
spec:
  selector: {{app: sim}}
  ports: [{{name: http, port: 80, targetPort: {server}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sim-0
  namespace: default
  labels: {{kubernetes.io/service-name: sim}}
addressType: IPv4
ports: [{{name: http, port: {server}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"#
    )
}

async fn wait_ready(admin: u16, deadline: Duration) -> Result<(), String> {
    let client = http_client();
    let start = Instant::now();
    let url = format!("http://127.0.0.1:{admin}/readyz");
    while start.elapsed() < deadline {
        let req = http::Request::get(&url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        if let Ok(r) = client.request(req).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the gateway was not ready within {deadline:?}"))
}

fn start_gateway(args: &Args, dir: &Path, admin: u16) -> Result<Child, String> {
    let (out, err) = match &args.gateway_log {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let g = f.try_clone().map_err(|e| e.to_string())?;
            (Stdio::from(f), Stdio::from(g))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    Command::new(&args.gateway)
        .arg("--config")
        .arg(dir)
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--inference-profile")
        .arg(&args.inference_profile)
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.gateway.display()))
}

fn markdown(report: &Report) -> String {
    let mut s = String::from(
        "| connections | path | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | gateway CPU µs/req | errors |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    for r in &report.rows {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
            r.connections,
            r.path,
            r.latency.requests_per_s,
            r.latency.p50_us,
            r.latency.p90_us,
            r.latency.p99_us,
            f(r.added_p50_us),
            f(r.added_p99_us),
            f(r.gateway_cpu_us_per_request),
            r.latency.errors,
        ));
    }
    s
}

async fn run(args: Args) -> Result<(), String> {
    let sim = Simulator::serve(
        zero_latency_sim(MODEL),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(|e| format!("cannot start the simulated server: {e}"))?;
    let server = sim.local_addr().port();
    let listener = free_port().map_err(|e| e.to_string())?;
    let admin = free_port().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("inference-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cleanup = Cleanup {
        child: None,
        dir: dir.clone(),
    };
    std::fs::write(dir.join("bench.yaml"), config_yaml(listener, server))
        .map_err(|e| e.to_string())?;
    let child = start_gateway(&args, &dir, admin)?;
    let pid = child.id();
    cleanup.child = Some(child);
    wait_ready(admin, Duration::from_secs(30)).await?;

    let path = "/v1/chat/completions";
    let request = |base: String, host: Option<&str>| {
        OverheadRequest::chat(
            format!("{base}{path}"),
            host.map(String::from),
            MODEL,
            args.prompt_words,
            args.max_tokens,
            args.stream,
        )
    };
    let direct = request(format!("http://127.0.0.1:{server}"), None);
    let via = format!("http://127.0.0.1:{listener}");
    let plain = request(via.clone(), Some("plain.bench"));
    let pool = request(via, Some("pool.bench"));
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.duration);

    let mut rows = Vec::new();
    for &connections in &args.connections {
        let mut direct_row: Option<(f64, f64)> = None;
        for (name, req, through_gateway) in [
            ("direct", &direct, false),
            ("gateway, plain route", &plain, true),
            ("gateway, InferencePool", &pool, true),
        ] {
            // A fresh client per run: connections of one path never serve another.
            let client = http_client();
            // The gateway's CPU over the window: read at its start and end.
            let cpu_task = through_gateway.then(|| {
                tokio::spawn(async move {
                    tokio::time::sleep(warmup).await;
                    let before = cpu_seconds(pid);
                    tokio::time::sleep(window).await;
                    before.zip(cpu_seconds(pid)).map(|(b, a)| a - b)
                })
            });
            let latency = measure(&client, req, connections, warmup, window).await;
            let cpu = match cpu_task {
                Some(task) => task.await.ok().flatten(),
                None => None,
            };
            eprintln!(
                "{connections} connection(s), {name}: {} requests, p50 {:.0} µs, p99 {:.0} µs",
                latency.requests, latency.p50_us, latency.p99_us
            );
            let (added_p50_us, added_p99_us) = match direct_row {
                Some((p50, p99)) if through_gateway => {
                    (Some(latency.p50_us - p50), Some(latency.p99_us - p99))
                }
                _ => (None, None),
            };
            if !through_gateway {
                direct_row = Some((latency.p50_us, latency.p99_us));
            }
            let gateway_cpu_us_per_request = cpu
                .filter(|_| latency.requests > 0)
                .map(|s| s * 1e6 / latency.requests as f64);
            rows.push(Row {
                path: name,
                connections,
                latency,
                added_p50_us,
                added_p99_us,
                gateway_cpu_us_per_request,
            });
        }
    }
    sim.shutdown().await;
    drop(cleanup);

    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        prompt_words: args.prompt_words,
        max_tokens: args.max_tokens,
        stream: args.stream,
        duration_s: args.duration,
        warmup_s: args.warmup,
        rows,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{json}");
    if let Some(path) = &args.out {
        std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(&report)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inference-overhead: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
