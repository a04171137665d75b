//! Shared pieces of the example gateways: the YAML runner, the admin endpoint, the quickstart's
//! demo backends, the command-line parsers and `explain`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod demo;
pub mod explain;
pub mod runner;
mod serve;

/// The GatewayClass `controllerName` the example gateways serve unless told otherwise.
pub const DEFAULT_CONTROLLER_NAME: &str = "gateway.pingora.rs/controller";

/// The filters the example gateways know: gateway-core's built-ins (`DirectResponse`), every
/// kind of the `gateway-filters` crate (`TrafficPolicy`, `RateLimit`, `BasicAuth`, `APIKeyAuth`,
/// `IPAccess`, `RequestLimits`, `ExternalAuth`, ...), referenced from HTTPRoutes by `ExtensionRef`
/// (and, for `ExternalAuth`, by the HTTPRoute filter type of that name), and the InferencePool
/// backend filter of [`inference`] (which also makes the translator serve HTTPRoute backendRefs to
/// InferencePools).
pub fn filter_registry() -> gateway_core::FilterRegistry {
    let mut registry = gateway_core::FilterRegistry::with_builtins();
    gateway_filters::register(&mut registry);
    inference().register_filters(&mut registry);
    registry
}

/// The process's inference data plane (InferencePool runtimes: metrics scrapers, prefix
/// indexes), shared by every registry [`filter_registry`] makes. A gateway serving InferencePools
/// also needs its picker: `examples::inference().install(&gateway)`.
pub fn inference() -> &'static gateway_inference::gateway::InferenceGateway {
    INFERENCE.get_or_init(Default::default)
}

/// Sets the process's inference data plane ([`inference`]) to `inference` (e.g. with another
/// scheduler profile). Call it before the first [`inference`] or [`filter_registry`]; returns
/// false, changing nothing, when the data plane was already set up.
pub fn init_inference(inference: gateway_inference::gateway::InferenceGateway) -> bool {
    INFERENCE.set(inference).is_ok()
}

static INFERENCE: std::sync::OnceLock<gateway_inference::gateway::InferenceGateway> =
    std::sync::OnceLock::new();

/// Installs a `tracing` subscriber reading `RUST_LOG` (default `info`). Binaries only.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
