//! `inference-bench`: starts simulated vLLM servers in process and drives open-loop Poisson
//! load at several rates against one or more targets (see `docs/benchmarks/inference.md`).
#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use inference_bench::bench::{self, BenchConfig};
use inference_bench::report;
use inference_bench::servers::{SimPool, endpoints_document};
use inference_bench::target::TargetSpec;
use inference_bench::workload::{
    Api, LoraParams, ShareGptParams, SharedPrefixParams, Workload, shared_prefix_kv_blocks,
};
use std::path::PathBuf;
use std::process::ExitCode;
use vllm_sim::Profile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadName {
    Sharegpt,
    SharedPrefix,
    Lora,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ApiName {
    Chat,
    Completions,
}

/// Open-loop benchmark of inference endpoint-picking strategies over simulated vLLM servers.
/// Latencies are reported in simulated seconds (measured wall time / --time-scale).
#[derive(Debug, Parser)]
#[command(name = "inference-bench", version)]
struct Args {
    /// Simulated servers to start on 127.0.0.1.
    #[arg(long, default_value_t = 8)]
    servers: usize,
    /// Latency profile of the servers: 8b-h100 or 70b-h100-tp8 (vllm-sim presets).
    #[arg(long, default_value = "8b-h100")]
    profile: String,
    /// Wall seconds per simulated second (0.1 = ten times faster than real time).
    #[arg(long, default_value_t = 0.1)]
    time_scale: f64,
    /// KV cache blocks per server. Default: the profile's (28,000 for 8b-h100), except for
    /// shared-prefix: sized so the prefixes fill 73% of the pool's KV as in the published test.
    #[arg(long)]
    kv_cache_size: Option<usize>,
    /// Running slots per server. Default: the profile's (16 for 8b-h100).
    #[arg(long)]
    max_num_seqs: Option<usize>,
    /// Context length per server. Default: the profile's (8192).
    #[arg(long)]
    max_model_len: Option<usize>,
    /// Waiting-queue bound per server (429 beyond). Default: the profile's (1000).
    #[arg(long)]
    max_waiting_queue_length: Option<usize>,
    /// First server port (server i listens on base-port + i); 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// One target: direct-rr, direct-random, direct-least-queue or url:http://HOST:PORT.
    #[arg(long)]
    target: Option<String>,
    /// Several targets, comma-separated, run in one invocation with the same arrivals and
    /// requests (direct-rr is added first when missing, for the ratios).
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
    /// Workload.
    #[arg(long, value_enum, default_value_t = WorkloadName::Sharegpt)]
    workload: WorkloadName,
    /// OpenAI endpoint: chat (/v1/chat/completions) or completions (/v1/completions).
    #[arg(long, value_enum, default_value_t = ApiName::Chat)]
    api: ApiName,
    /// Rates in requests per simulated second, comma-separated. Default: 4,8,12,16,20
    /// (sharegpt, lora) or 4,8,12,16 (shared-prefix).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Measured window per rate and target, simulated seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Warm-up before each window, simulated seconds (requests sent, not counted).
    #[arg(long, default_value_t = 30.0)]
    warmup: f64,
    /// Seed of the arrivals, the workload and the servers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// In-flight bound of the driver (arrivals beyond it are not sent and are reported).
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Per-request timeout, simulated seconds.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Keep the servers (and their caches) across runs instead of restarting them.
    #[arg(long)]
    keep_servers: bool,
    /// Wall seconds to wait for a url: target to answer a probe request before each run.
    #[arg(long, default_value_t = 60.0)]
    target_wait: f64,
    /// JSON report file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Markdown table file (also printed on stdout).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// SVG plot file (p90 TTFT and p90 e2e against rate, one line per target).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the servers' addresses (YAML, or JSON for a .json name) for a gateway config.
    #[arg(long)]
    write_endpoints: Option<PathBuf>,
    /// Only start the servers, print and write their addresses, and exit (with --base-port,
    /// to prepare a gateway configuration before the run).
    #[arg(long)]
    endpoints_only: bool,
    /// ShareGPT-like (and lora) mean prompt length, tokens.
    #[arg(long, default_value_t = 161.31)]
    prompt_mean: f64,
    /// σ of the log of the prompt length.
    #[arg(long, default_value_t = 1.0)]
    prompt_sigma: f64,
    /// ShareGPT-like (and lora) mean output length, tokens.
    #[arg(long, default_value_t = 337.99)]
    output_mean: f64,
    /// σ of the log of the output length.
    #[arg(long, default_value_t = 0.8)]
    output_sigma: f64,
    /// shared-prefix: groups (distinct prefixes).
    #[arg(long, default_value_t = 150)]
    groups: usize,
    /// shared-prefix: prefix length, tokens.
    #[arg(long, default_value_t = 6_000)]
    prefix_len: usize,
    /// shared-prefix: users (distinct questions) per group.
    #[arg(long, default_value_t = 5)]
    users_per_group: usize,
    /// shared-prefix: question length, tokens.
    #[arg(long, default_value_t = 1_200)]
    question_len: usize,
    /// shared-prefix: output length, tokens.
    #[arg(long, default_value_t = 200)]
    output_len: usize,
    /// lora: adapters lora-0 .. lora-{n-1}, served by every server.
    #[arg(long, default_value_t = 8)]
    lora_adapters: usize,
    /// lora: Zipf exponent of adapter popularity.
    #[arg(long, default_value_t = 1.0)]
    lora_zipf: f64,
    /// lora: share of requests for the base model.
    #[arg(long, default_value_t = 0.2)]
    lora_base_share: f64,
    /// lora: adapter slots per server (max_loras).
    #[arg(long, default_value_t = 2)]
    max_loras: usize,
    /// lora: adapter load time, simulated ms.
    #[arg(long, default_value_t = 100.0)]
    lora_load_latency: f64,
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn main_inner(args: Args) -> Result<(), String> {
    let profile = Profile::parse(&args.profile).ok_or_else(|| {
        format!(
            "unknown profile {:?} (expected 8b-h100 or 70b-h100-tp8)",
            args.profile
        )
    })?;
    let mut sim = profile.config();
    sim.time_scale = args.time_scale;
    sim.seed = Some(args.seed);
    if let Some(v) = args.max_num_seqs {
        sim.max_num_seqs = v;
    }
    if let Some(v) = args.max_model_len {
        sim.max_model_len = v;
    }
    if let Some(v) = args.max_waiting_queue_length {
        sim.max_waiting_queue_length = v;
    }
    let lengths = ShareGptParams {
        prompt_mean: args.prompt_mean,
        prompt_sigma: args.prompt_sigma,
        output_mean: args.output_mean,
        output_sigma: args.output_sigma,
    };
    let (workload, default_rates) = match args.workload {
        WorkloadName::Sharegpt => (
            Workload::Sharegpt(lengths),
            vec![4.0, 8.0, 12.0, 16.0, 20.0],
        ),
        WorkloadName::SharedPrefix => {
            let p = SharedPrefixParams {
                groups: args.groups,
                prefix_len: args.prefix_len,
                users_per_group: args.users_per_group,
                question_len: args.question_len,
                output_len: args.output_len,
            };
            if args.kv_cache_size.is_none() {
                sim.kv_cache_size =
                    shared_prefix_kv_blocks(&p, args.servers, sim.block_size, sim.max_model_len);
            }
            (Workload::SharedPrefix(p), vec![4.0, 8.0, 12.0, 16.0])
        }
        WorkloadName::Lora => {
            let lora = LoraParams {
                adapters: args.lora_adapters,
                zipf_s: args.lora_zipf,
                base_share: args.lora_base_share,
            };
            sim.lora_modules = lora.names();
            sim.max_loras = args.max_loras;
            sim.lora_load_latency_ms = args.lora_load_latency;
            (
                Workload::Lora { lengths, lora },
                vec![4.0, 8.0, 12.0, 16.0, 20.0],
            )
        }
    };
    if let Some(v) = args.kv_cache_size {
        sim.kv_cache_size = v;
    }
    sim.validate()
        .map_err(|e| format!("server configuration: {e}"))?;
    let mut targets = Vec::new();
    if !args.compare.is_empty() {
        for t in &args.compare {
            targets.push(TargetSpec::parse(t).map_err(|e| e.to_string())?);
        }
        if !targets.contains(&TargetSpec::DirectRr) {
            targets.insert(0, TargetSpec::DirectRr);
        }
    }
    if let Some(t) = &args.target {
        let t = TargetSpec::parse(t).map_err(|e| e.to_string())?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        targets.push(TargetSpec::DirectRr);
    }
    let rates = if args.rates.is_empty() {
        default_rates
    } else {
        args.rates.clone()
    };
    if rates.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
        return Err("--rates must be positive numbers".into());
    }
    let positive = |v: f64| v > 0.0 && v.is_finite();
    let ok = positive(args.duration)
        && positive(args.request_timeout)
        && (args.warmup == 0.0 || positive(args.warmup));
    if !ok {
        return Err(
            "--duration and --request-timeout must be positive, --warmup not negative".into(),
        );
    }
    for (name, v) in [
        ("--prompt-mean", args.prompt_mean),
        ("--output-mean", args.output_mean),
    ] {
        if !(v >= 1.0 && v.is_finite()) {
            return Err(format!("{name} must be at least 1"));
        }
    }
    for (name, v) in [
        ("--prompt-sigma", args.prompt_sigma),
        ("--output-sigma", args.output_sigma),
        ("--lora-zipf", args.lora_zipf),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(format!("{name} must be a number >= 0"));
        }
    }
    if !(0.0..=1.0).contains(&args.lora_base_share) {
        return Err("--lora-base-share must be between 0 and 1".into());
    }
    if args.servers == 0 {
        return Err("--servers must be at least 1".into());
    }

    let mut pool = SimPool::start(sim.clone(), args.servers, args.base_port)
        .await
        .map_err(|e| format!("cannot start the servers: {e}"))?;
    println!(
        "{} simulated servers ({}, model {}, time scale {}, kv_cache_size {} blocks):",
        args.servers, args.profile, sim.model, sim.time_scale, sim.kv_cache_size
    );
    for (i, url) in pool.urls().iter().enumerate() {
        println!("  sim-{i} {url}");
    }
    if let Some(path) = &args.write_endpoints {
        write(
            path,
            &endpoints_document(&sim.model, &sim.lora_modules, pool.ports(), path),
        )?;
        println!("endpoints written to {}", path.display());
    }
    if args.endpoints_only {
        pool.shutdown().await;
        return Ok(());
    }
    let cfg = BenchConfig {
        targets,
        workload,
        api: match args.api {
            ApiName::Chat => Api::Chat,
            ApiName::Completions => Api::Completions,
        },
        rates,
        duration_s: args.duration,
        warmup_s: args.warmup,
        seed: args.seed,
        max_in_flight: args.max_in_flight,
        request_timeout_s: args.request_timeout,
        fresh_servers: !args.keep_servers,
        target_wait_s: args.target_wait,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let result = bench::run(&cfg, &mut pool, |s| {
        eprintln!(
            "rate {:>6} {:<22} done {}/{}  p90 ttft {:.3}s  p90 e2e {:.2}s  429 {}  errors {}",
            s.rate,
            s.target,
            s.completed,
            s.sent,
            s.ttft.p90.unwrap_or(f64::NAN),
            s.e2e.p90.unwrap_or(f64::NAN),
            s.rejected_429,
            s.errors.values().sum::<usize>() + s.in_flight_cap_hits,
        );
    })
    .await;
    pool.shutdown().await;
    let report = result.map_err(|e| e.to_string())?;
    let md = report::markdown(&report);
    println!("\n{md}");
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        write(path, &(json + "\n"))?;
    }
    if let Some(path) = &args.markdown {
        write(path, &md)?;
    }
    if let Some(path) = &args.svg {
        write(path, &report::svg(&report))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inference-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main_inner(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inference-bench: {e}");
            ExitCode::from(2)
        }
    }
}
