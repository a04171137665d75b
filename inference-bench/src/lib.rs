//! `inference-bench`: an open-loop benchmark of inference endpoint-picking strategies over
//! in-process simulated vLLM servers ([`vllm_sim`]).
//!
//! * [`workload`]: seeded synthetic workloads (ShareGPT-like, shared prefix, LoRA mix).
//! * [`arrivals`]: Poisson arrival times.
//! * [`target`]: where requests go (the tool's own round-robin, random, least-queue, or a
//!   gateway URL) behind the small [`target::Router`] trait.
//! * [`driver`]: sends each request at its arrival time and measures TTFT, TPOT and end-to-end
//!   latency from the SSE stream.
//! * [`stats`], [`report`]: summaries, ratios to round-robin, JSON/Markdown/SVG output.
//! * [`overhead`]: the gateway's own latency and CPU per request (the `inference-overhead`
//!   binary).
//! * [`servers`]: the pool of simulators; [`mod@bench`]: the whole run.
//!
//! See `docs/benchmarks/inference.md` for the command line and what each figure means.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arrivals;
pub mod bench;
pub mod driver;
pub mod overhead;
pub mod report;
pub mod servers;
pub mod stats;
pub mod target;
pub mod workload;
