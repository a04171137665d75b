//! A simulated vLLM model server, faithful enough for endpoint pickers and benchmarks.
//!
//! It speaks vLLM's OpenAI-compatible API (`POST /v1/completions`, `POST /v1/chat/completions`
//! with JSON or SSE streaming, `GET /v1/models`, `GET /health`, `GET /metrics` with vLLM's metric
//! names) and models what makes a real server slow or fast for a given request, after
//! llm-d-inference-sim: running slots and a FIFO waiting queue (429 when full), LoRA adapter slots
//! with loading and eviction, a KV block cache with prefix reuse and LRU eviction, a time to first
//! token that grows with the uncached prompt, an inter-token latency, a load factor that slows
//! both as the batch grows, and bounded Gaussian jitter. A time scale runs it faster than real
//! time. See `docs/vllm-sim.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vllm_sim::SimError> {
//! use vllm_sim::{Profile, SimConfig, Simulator};
//! let config = SimConfig { time_scale: 0.1, ..Profile::Llama8bH100.config() };
//! let sim = Simulator::serve(config, "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()).await?;
//! println!("listening on {}", sim.local_addr());
//! let state = sim.state().await; // running, waiting, KV usage, LoRA adapters
//! assert_eq!(state.running, 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: [`config`] (settings and presets), [`engine`] (the scheduling and latency model, pure
//! logic), [`kv`] (the block cache), [`tokenizer`] (the dummy tokenizer, chat rendering, block
//! hashes), [`metrics`] (Prometheus text), [`api`] (request bodies and output text), [`server`]
//! (HTTP).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod engine;
pub mod kv;
pub mod metrics;
pub mod server;
pub mod tokenizer;

pub use config::{ConfigError, OutputMode, Profile, SimConfig};
pub use engine::{EngineState, LatencyPlan};
pub use server::{Listen, RunningSim, SimError, Simulator};
