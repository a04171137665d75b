//! `vllm-sim`: serves one simulated vLLM model server (see `docs/vllm-sim.md`).
//!
//! The configuration is built in this order, each step overriding the previous one: the plain
//! defaults, `--profile`, `--config FILE`, then the other flags. `POD_NAME` and `POD_NAMESPACE`
//! fill the pod headers when neither the file nor a flag sets them.
#![forbid(unsafe_code)]

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use vllm_sim::{OutputMode, Profile, SimConfig, Simulator};

/// A simulated vLLM OpenAI-compatible model server.
#[derive(Debug, Parser)]
#[command(name = "vllm-sim", version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: std::net::IpAddr,
    /// Latency preset applied before the file and flags: 8b-h100 or 70b-h100-tp8.
    #[arg(long, value_parser = parse_profile)]
    profile: Option<Profile>,
    /// YAML or JSON file with SimConfig fields (snake_case, e.g. max_num_seqs: 16).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Base model name [default: vllm-sim-model].
    #[arg(long)]
    model: Option<String>,
    /// Served LoRA adapter names (comma-separated or repeated) [default: none].
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    lora_modules: Option<Vec<String>>,
    /// Running slots [default: 5].
    #[arg(long)]
    max_num_seqs: Option<usize>,
    /// Waiting-queue bound; 429 when full [default: 1000].
    #[arg(long)]
    max_waiting_queue_length: Option<usize>,
    /// Loaded LoRA adapter slots [default: 1].
    #[arg(long)]
    max_loras: Option<usize>,
    /// LoRA adapter load time, ms [default: 0].
    #[arg(long)]
    lora_load_latency: Option<f64>,
    /// Context length in tokens [default: 1024].
    #[arg(long)]
    max_model_len: Option<usize>,
    /// KV cache size in blocks [default: 1024].
    #[arg(long)]
    kv_cache_size: Option<usize>,
    /// Tokens per KV block [default: 16].
    #[arg(long)]
    block_size: Option<usize>,
    /// Fixed prefill time, ms [default: 0].
    #[arg(long)]
    prefill_overhead: Option<f64>,
    /// Prefill time per uncached prompt token, ms [default: 0].
    #[arg(long)]
    prefill_time_per_token: Option<f64>,
    /// Std-dev of the prefill time, ms [default: 0].
    #[arg(long)]
    prefill_time_std_dev: Option<f64>,
    /// Time between output tokens, ms [default: 0].
    #[arg(long)]
    inter_token_latency: Option<f64>,
    /// Std-dev of the inter-token latency, ms [default: 0].
    #[arg(long)]
    inter_token_latency_std_dev: Option<f64>,
    /// Slow-down factor with all slots busy (>= 1) [default: 1].
    #[arg(long)]
    time_factor_under_load: Option<f64>,
    /// Wall-clock seconds per simulated second (0.1 = 10x faster) [default: 1].
    #[arg(long)]
    time_scale: Option<f64>,
    /// Output text: random or echo [default: random].
    #[arg(long, value_parser = parse_mode)]
    mode: Option<OutputMode>,
    /// x-inference-pod header [default: $POD_NAME].
    #[arg(long)]
    pod_name: Option<String>,
    /// x-inference-namespace header [default: $POD_NAMESPACE].
    #[arg(long)]
    pod_namespace: Option<String>,
    /// Seed of all random draws [default: random].
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).ok_or_else(|| format!("unknown profile {s:?} (8b-h100, 70b-h100-tp8)"))
}

fn parse_mode(s: &str) -> Result<OutputMode, String> {
    match s {
        "random" => Ok(OutputMode::Random),
        "echo" => Ok(OutputMode::Echo),
        _ => Err(format!("unknown mode {s:?} (random, echo)")),
    }
}

/// Overlays the file's fields on `base` (fields absent from the file keep `base`'s values).
fn overlay_file(base: SimConfig, path: &std::path::Path) -> Result<SimConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    match (file, &mut merged) {
        (serde_json::Value::Object(fields), serde_json::Value::Object(target)) => {
            for (k, v) in fields {
                target.insert(k, v);
            }
        }
        (serde_json::Value::Null, _) => {}
        _ => {
            return Err(format!(
                "{}: expected a mapping of SimConfig fields",
                path.display()
            ));
        }
    }
    serde_json::from_value(merged).map_err(|e| format!("{}: {e}", path.display()))
}

fn build_config(a: &Args) -> Result<SimConfig, String> {
    let mut c = a.profile.map(Profile::config).unwrap_or_default();
    if let Some(path) = &a.config {
        c = overlay_file(c, path)?;
    }
    macro_rules! set {
        ($($flag:ident => $field:ident),* $(,)?) => {
            $(if let Some(v) = &a.$flag { c.$field = v.clone(); })*
        };
    }
    set!(
        model => model,
        lora_modules => lora_modules,
        max_num_seqs => max_num_seqs,
        max_waiting_queue_length => max_waiting_queue_length,
        max_loras => max_loras,
        lora_load_latency => lora_load_latency_ms,
        max_model_len => max_model_len,
        kv_cache_size => kv_cache_size,
        block_size => block_size,
        prefill_overhead => prefill_overhead_ms,
        prefill_time_per_token => prefill_time_per_token_ms,
        prefill_time_std_dev => prefill_time_std_dev_ms,
        inter_token_latency => inter_token_latency_ms,
        inter_token_latency_std_dev => inter_token_latency_std_dev_ms,
        time_factor_under_load => time_factor_under_load,
        time_scale => time_scale,
        mode => output_mode,
    );
    if let Some(v) = &a.pod_name {
        c.pod_name = Some(v.clone());
    }
    if let Some(v) = &a.pod_namespace {
        c.pod_namespace = Some(v.clone());
    }
    if a.seed.is_some() {
        c.seed = a.seed;
    }
    if c.pod_name.is_none() {
        c.pod_name = std::env::var("POD_NAME").ok().filter(|v| !v.is_empty());
    }
    if c.pod_namespace.is_none() {
        c.pod_namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|v| !v.is_empty());
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vllm-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::serve(config, SocketAddr::new(args.host, args.port)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vllm-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("vllm-sim listening on http://{}", sim.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_profile() {
        let dir = std::env::temp_dir().join(format!("vllm-sim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sim.yaml");
        std::fs::write(&file, "max_num_seqs: 7\ninter_token_latency_ms: 3\n").unwrap();
        let args = Args::parse_from([
            "vllm-sim",
            "--profile",
            "8b-h100",
            "--config",
            file.to_str().unwrap(),
            "--inter-token-latency",
            "4",
            "--lora-modules",
            "a,b",
            "--pod-name",
            "p1",
        ]);
        let c = build_config(&args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.max_num_seqs, 7);
        assert_eq!(c.inter_token_latency_ms, 4.0);
        assert_eq!(c.prefill_overhead_ms, 30.0, "from the profile");
        assert_eq!(c.lora_modules, vec!["a", "b"]);
        assert_eq!(c.pod_name.as_deref(), Some("p1"));
        let bad = Args::parse_from(["vllm-sim", "--time-scale", "0"]);
        assert!(build_config(&bad).is_err());
    }
}
