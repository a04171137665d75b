//! Gateway API HTTP semantics on Pingora.
//!
//! `gateway-core` is the data plane of the framework: a [`config::Config`] (listeners, routes,
//! filters, weighted backends, in plain Rust) is compiled into an immutable routing table that a
//! [`Gateway`] serves through Pingora's `ProxyHttp` phases. Nothing here depends on Kubernetes;
//! `gateway-k8s` turns Gateway API resources into the same model.
//!
//! ```no_run
//! use gateway_core::config::{BackendRef, Bind, Config, Listener, Protocol, Route, Rule};
//! use gateway_core::{FilterRegistry, Gateway};
//!
//! # async fn run() -> gateway_core::Result<()> {
//! let gateway = Gateway::new(FilterRegistry::new());
//! let route = Route::new("default", "web").rule(
//!     Rule::prefix("/").backend(BackendRef::endpoints("web", vec!["127.0.0.1:3000".parse().unwrap()])),
//! );
//! gateway
//!     .apply(Config {
//!         binds: vec![Bind {
//!             address: "127.0.0.1:8080".parse().unwrap(),
//!             protocol: Protocol::Http,
//!             listeners: vec![Listener::new("http", 8080).route(route)],
//!         }],
//!         ..Default::default()
//!     })
//!     .await?;
//! gateway_core::shutdown_signal().await?;
//! gateway.shutdown(std::time::Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod body_headers;
pub mod config;
pub mod dns;
mod downstream;
pub mod error;
pub mod explain;
pub mod filter;
mod limits;
mod mirror;
pub mod observe;
pub mod path;
pub mod proxy;
pub mod routing;
mod sample;
pub mod server;
mod syntax;
mod table;
mod tls;
mod upstream_tls;

pub use backend::{Endpoint, EndpointPicker, PickRequest};
pub use dns::DnsStatus;
pub use error::{Error, ErrorKind, Result};
pub use explain::{ExplainError, ExplainRequest, Explanation};
pub use filter::{
    ClientCertStatus, DirectResponse, DirectResponseFilter, FilterAction, FilterCtx, FilterFactory,
    FilterRegistry, HttpFilter, RouteInfo,
};
pub use observe::{AccessLog, AccessLogField, AccessLogSink, Metrics};
#[cfg(feature = "otel")]
pub use observe::{OtlpProtocol, Tracing};
pub use server::{ApplyReport, Gateway, MirrorStats, OverloadStats, shutdown_signal};

// What a filter or picker author needs, so `cargo add gateway-core` is enough.
pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use http;
pub use pingora_error::Error as ProxyError;
pub use pingora_http::{RequestHeader, ResponseHeader};
pub use pingora_proxy::Session;
/// The Prometheus client the gateway's [`Metrics`] registry comes from, to register metrics of
/// your own with [`Metrics::with_registry`].
pub use prometheus_client;
