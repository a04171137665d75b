//! `conformance`: runs the offline Gateway API (or, with `--suite inference`, the Inference
//! Extension) conformance harness against a gateway binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use conformance::inference::InferenceOptions;
use conformance::runner::{RunnerOptions, read_expected, render, run, unmet_expectations};

/// Offline Gateway API conformance runner.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The file-gateway binary under test.
    #[arg(long)]
    gateway_bin: PathBuf,
    /// Run only these tests (repeatable); default: all known tests.
    #[arg(long = "test")]
    tests: Vec<String>,
    /// Expected-pass list; the exit code is non-zero if one of them does not pass.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// cases.tsv (default: next to the conformance data).
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Upstream conformance folder (default: $GATEWAY_API_CONFORMANCE_DIR or the shared copy).
    #[arg(long)]
    conformance_dir: Option<PathBuf>,
    /// GatewayClass name.
    #[arg(long, default_value = "gateway-conformance")]
    gateway_class: String,
    /// Controller name the gateway serves.
    #[arg(long, default_value = conformance::gateway::DEFAULT_CONTROLLER)]
    controller_name: String,
    /// Seconds a case may take to become consistent.
    #[arg(long, default_value_t = 15)]
    deadline_secs: u64,
    /// Which suite: `gateway-api` (the Gateway API tests and cases.tsv) or `inference` (the
    /// Inference Extension tests, data from $GATEWAY_API_INFERENCE_CONFORMANCE_DIR or the
    /// shared copy; `--conformance-dir` overrides it).
    #[arg(long, default_value = "gateway-api")]
    suite: String,
    /// Inference suite: how many tests run at once.
    #[arg(long, default_value_t = 3)]
    parallel: usize,
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
    if args.suite == "inference" {
        return run_inference(args);
    }
    if args.suite != "gateway-api" {
        eprintln!(
            "error: unknown suite {:?} (gateway-api or inference)",
            args.suite
        );
        return ExitCode::from(2);
    }
    let mut opts = RunnerOptions::new(args.gateway_bin);
    if let Some(dir) = args.conformance_dir {
        opts.conformance_dir = dir;
    }
    if let Some(cases) = args.cases {
        opts.cases_path = cases;
    }
    opts.tests = args.tests;
    opts.class_name = args.gateway_class;
    opts.controller = args.controller_name;
    opts.deadline = Duration::from_secs(args.deadline_secs);
    let expected = match args.expected.as_deref().map(read_expected).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let results = match runtime.block_on(run(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&results));
    let unmet: Vec<String> = unmet_expectations(&results, &expected)
        .into_iter()
        .filter(|t| opts.tests.is_empty() || opts.tests.contains(t))
        .collect();
    if unmet.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("expected to pass but did not: {}", unmet.join(", "));
        ExitCode::FAILURE
    }
}

/// `--suite inference`: the Gateway API Inference Extension tests.
fn run_inference(args: Args) -> ExitCode {
    let mut opts = InferenceOptions::new(args.gateway_bin);
    if let Some(dir) = args.conformance_dir {
        opts.dir = dir;
    }
    opts.tests = args.tests;
    opts.class_name = args.gateway_class;
    opts.controller = args.controller_name;
    opts.deadline = Duration::from_secs(args.deadline_secs);
    opts.parallel = args.parallel;
    let expected = match args.expected.as_deref().map(read_expected).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let results = match tokio::runtime::Runtime::new()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(conformance::inference::run(&opts))
                .map_err(|e| e.to_string())
        }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&results));
    let unmet: Vec<String> = unmet_expectations(&results, &expected)
        .into_iter()
        .filter(|t| opts.tests.is_empty() || opts.tests.contains(t))
        .collect();
    if unmet.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("expected to pass but did not: {}", unmet.join(", "));
        ExitCode::FAILURE
    }
}
