//! The gateway that external harnesses drive: Gateway API YAML files in, traffic and status out.
//!
//! ```text
//! cargo run -p examples --bin file-gateway -- --config examples/quickstart.yaml \
//!     --listener-port-map 80=8080 --status-file /tmp/status.yaml
//! ```
//!
//! `file-gateway explain --config ... --host ... --path ...` prints where a request would go
//! instead of serving (nothing is bound).
//!
//! Its command line is a contract (see docs/file-gateway.md): bad flags exit 2 with a message;
//! bad configuration never exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use examples::admin::{self, AdminState};
use examples::runner::{Input, Runner};
use gateway_core::Gateway;

/// Serves Gateway API resources (GatewayClass, Gateway, HTTPRoute, ReferenceGrant, Service,
/// EndpointSlice, Secret, Namespace) read from YAML files, reloading them when they change.
#[derive(Parser, Debug)]
#[command(
    name = "file-gateway",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    source: examples::cli::SourceArgs,

    /// Write every resource with its computed status to this YAML file after every change.
    #[arg(long, value_name = "PATH")]
    status_file: Option<PathBuf>,

    /// The admin endpoint: /healthz, /readyz, /status, /config, /diagnostics, /metrics, /explain.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,

    /// A DNS server (IP:PORT, UDP and TCP) for the names of XBackends, instead of
    /// /etc/resolv.conf. Repeatable; tried in order.
    #[arg(long = "dns-server", value_name = "ADDR")]
    dns_servers: Vec<SocketAddr>,

    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_seconds: u64,

    /// Worker threads serving connections. Default: one per CPU the process may run on (honours
    /// taskset, CPU sets and cgroup quotas). With one, everything runs on the main thread (a
    /// current-thread Tokio runtime: no hand-off between threads, no work-stealing bookkeeping);
    /// with more, one multi-threaded Tokio runtime with work stealing.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// How the in-process endpoint picker of InferencePool backends (pools without an
    /// `endpointPickerRef`) chooses: `reference` (the Inference Extension's default profile:
    /// queue 2, KV cache 2, prefix cache 3, over scraped metrics) or `load-aware` (live
    /// in-flight load and prefix affinity that spills over from busy servers). See
    /// docs/benchmarks/inference.md for how they compare.
    #[arg(long, value_name = "PROFILE", default_value_t = gateway_inference::scheduler::ProfileKind::Reference)]
    inference_profile: gateway_inference::scheduler::ProfileKind,

    #[command(flatten)]
    limits: examples::cli::LimitArgs,

    #[command(flatten)]
    access_log: examples::cli::AccessLogArgs,

    #[command(flatten)]
    tracing: examples::cli::TracingArgs,
}

/// mimalloc instead of the system allocator: cheaper allocation on the request path, and freed
/// memory goes back to the OS (docs/benchmarks.md has the numbers). The `system-allocator`
/// feature keeps the system allocator, for heap profilers such as heaptrack.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory freed by a load back to the OS. mimalloc purges freed pages lazily, on
/// later allocations by the thread that owns them, so without this a large configuration's
/// transient peak (parsed YAML, status documents: about 280 MB at 10,000 routes) stays resident in
/// an idle gateway (docs/benchmarks.md: 361 MB resident after loading 10,000 routes without it).
fn return_freed_memory() {
    // SAFETY: `mi_collect` only walks the allocator's own free lists; it takes no pointers and
    // may be called from any thread at any time.
    #[cfg(not(feature = "system-allocator"))]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks the kernel for huge pages
/// on its heap, and a 2 MiB page is resident as soon as one byte of it is touched: 10 MB more at
/// 10 routes, and idle keep-alive connections or a revert to a small configuration leave whole
/// huge pages resident (docs/benchmarks.md, "Memory"). Faults after this call get 4 KiB pages.
fn keep_the_heap_in_small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("could not turn transparent huge pages off: {e}");
    }
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Explains where a request would go under the YAML configuration, and why, without binding
    /// anything: bind, listener, route, rule, filters, backends, and why every other route of
    /// the listener did not take it. Exits 0 with the explanation, 2 on bad arguments.
    Explain(ExplainArgs),
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    #[command(flatten)]
    source: examples::cli::SourceArgs,

    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,

    /// The Host header (or :authority), possibly with a port.
    #[arg(long, default_value = "")]
    host: String,

    /// The request target: a path with an optional ?query.
    #[arg(long, default_value = "/")]
    path: String,

    /// A request header as NAME:VALUE. Repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = examples::explain::parse_header)]
    headers: Vec<(String, String)>,

    /// A query parameter as NAME=VALUE, appended to the path's query. Repeatable.
    #[arg(long = "query", value_name = "NAME=VALUE")]
    query: Vec<String>,

    /// The port the request arrives on: a bound port, or a Gateway listener port.
    #[arg(long)]
    port: Option<u16>,

    /// The local address the request arrives on (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,

    /// Print the explanation as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `file-gateway explain`: loads and translates the YAML as the server does, then explains.
fn explain(args: ExplainArgs) -> i32 {
    let options = args.source.translate_options();
    let loaded = gateway_k8s::source::FileSource::new(args.source.config).load();
    // Only the configuration is needed: no status documents.
    let translation = gateway_k8s::Translator::new(options)
        .with_filters(examples::filter_registry())
        .translate_unrendered(&loaded.resources);
    for d in loaded.diagnostics.iter().chain(&translation.diagnostics) {
        eprintln!("file-gateway: {d}");
    }
    let mut path = args.path;
    examples::explain::append_query(&mut path, &args.query);
    let req = gateway_core::ExplainRequest {
        bind: args.bind,
        port: args.port,
        method: args.method,
        host: args.host,
        path,
        headers: args.headers,
    };
    match gateway_core::explain::explain_config(
        translation.config,
        &examples::filter_registry(),
        &req,
    ) {
        Ok(explanation) if args.json => match serde_json::to_string_pretty(&explanation) {
            Ok(json) => {
                println!("{json}");
                0
            }
            Err(e) => {
                eprintln!("file-gateway explain: {e}");
                1
            }
        },
        Ok(explanation) => {
            print!("{explanation}");
            0
        }
        Err(e) => {
            eprintln!("file-gateway explain: {e}");
            2
        }
    }
}

/// The runtime serving `workers` threads (default: one per usable CPU). One worker gets a
/// current-thread runtime driven by the main thread: on a single core a multi-threaded runtime
/// only adds a second thread to switch to and cross-thread queue bookkeeping on every wake-up
/// (docs/benchmarks.md, "Where a request's CPU goes").
fn runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

fn main() {
    keep_the_heap_in_small_pages();
    let args = Args::parse();
    match runtime(args.workers) {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("file-gateway: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) {
    if let Some(Command::Explain(explain_args)) = args.command {
        std::process::exit(explain(explain_args));
    }
    examples::init_logging();

    if !examples::init_inference(
        gateway_inference::gateway::InferenceGateway::default()
            .with_profile(args.inference_profile),
    ) {
        tracing::warn!("the inference data plane was set up before its profile was chosen");
    }
    let gateway = Gateway::new(examples::filter_registry());
    examples::inference().install(&gateway);
    if !args.dns_servers.is_empty() {
        gateway.set_dns_servers(args.dns_servers.clone());
    }
    if let Some(log) = args.access_log.access_log()
        && let Err(e) = gateway.set_access_log(Some(log))
    {
        eprintln!("file-gateway: {e}");
        std::process::exit(2);
    }
    if let Err(e) = args.tracing.apply(&gateway) {
        eprintln!("file-gateway: {e}");
        std::process::exit(2);
    }
    let state = Arc::new(AdminState::default());
    if let Err(e) = admin::serve(args.admin, state.clone(), gateway.clone()).await {
        eprintln!(
            "file-gateway: cannot bind the admin endpoint {}: {e}",
            args.admin
        );
        std::process::exit(2);
    }
    let options = args.source.translate_options();
    let runner = Runner::new(gateway.clone(), options, state, args.status_file)
        .with_filters(examples::filter_registry())
        .with_limits(args.limits.limits())
        .on_applied(return_freed_memory);
    let running = tokio::spawn(runner.run(Input::Files(args.source.config)));

    if let Err(e) = gateway_core::shutdown_signal().await {
        tracing::error!(error = %e, "signal handling failed");
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.abort();
    gateway
        .shutdown(Duration::from_secs(args.drain_seconds))
        .await;
}
