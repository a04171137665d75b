//! Gateway API Inference Extension core for the gateway: the types and the decisions of an
//! inference gateway, without the data plane.
//!
//! - [`crd`]: `InferencePool` (v1, and v1alpha2 read and converted), `InferenceObjective`,
//!   `InferenceModelRewrite`, with `validate()` and status condition constants.
//! - [`request`]: OpenAI completions/chat body parsing into [`request::LlmRequest`], `model`
//!   rewriting in request, response and SSE bodies, header names, drop reasons.
//! - [`objective`]: the priority of a request from the `InferenceObjective` it names.
//! - [`rewrite`]: which target model an `InferenceModelRewrite` sends a request to.
//! - [`metrics`]: model-server engines and [`metrics::EndpointMetrics`] from Prometheus text.
//! - [`scrape`]: the only I/O, a scraper polling `/metrics` into a lock-free store.
//! - [`scheduler`]: pluggable filters, scorers and pickers; the reference default profile; the
//!   prefix-cache index; saturation and admission.
//! - [`flow`]: flow-control queues with strict priority bands, fair flows and TTLs.
//! - [`settings`]: [`settings::InferencePoolSettings`], what gateway-k8s hands the data plane
//!   for one InferencePool backend.
//!
//! - [`gateway`] (cargo feature `gateway`, on by default): the data-plane side on gateway-core,
//!   the InferencePool filter and endpoint picker.
//! - [`extproc`] (feature `gateway`): the Gateway <-> endpoint picker protocol over Envoy
//!   ext_proc, both sides: the gateway's client and a standalone picker server. The data
//!   plane's Prometheus metrics (`gateway_inference_*`) are served in the gateway's registry.
//!
//! Without the `gateway` feature nothing here depends on gateway-core or Pingora: the data plane
//! calls these pieces per request (parse, resolve objective and rewrite, admit or queue,
//! schedule, rewrite the response back). Libraries never install a tracing subscriber; this one only logs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crd;
#[cfg(feature = "gateway")]
pub mod extproc;
pub mod flow;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod metrics;
pub mod objective;
#[cfg(feature = "gateway")]
mod observe;
pub mod request;
pub mod rewrite;
pub mod scheduler;
pub mod scrape;
pub mod settings;
