//! A simulated vLLM model server.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod kv;
pub mod tokenizer;
