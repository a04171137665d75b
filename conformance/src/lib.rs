//! Offline Gateway API conformance harness.
//!
//! Emulates what a Kubernetes cluster gives the upstream conformance suite (echo pods,
//! EndpointSlices, generated TLS Secrets, a GatewayClass), runs a file-driven gateway binary
//! against the upstream manifests, and checks the traffic assertions of `cases.tsv` and the
//! status conditions the upstream Go tests check. See `docs/conformance.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod cases;
pub mod certs;
pub mod client;
pub mod compare;
pub mod echo;
pub mod error;
pub mod frontend;
pub mod gateway;
pub mod inference;
pub mod manifests;
pub mod plan;
pub mod runner;
pub mod status;

pub use error::{Error, Result};
