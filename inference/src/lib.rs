//! Gateway API Inference Extension core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crd;
pub mod flow;
pub mod metrics;
pub mod request;
pub mod rewrite;
pub mod scheduler;
pub mod scrape;
