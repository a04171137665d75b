//! Ready-made filters for [`gateway_core`], written on its public filter API
//! ([`gateway_core::HttpFilter`]), and the `TrafficPolicy` that bundles them.
//!
//! Every filter is configured by a small custom resource of the project's API group
//! ([`GROUP`]), so it can be used three ways:
//!
//! * from YAML, by an HTTPRoute rule's `ExtensionRef` naming an object of the filter's kind
//!   (for example `kind: RateLimit`), or of kind `TrafficPolicy` with several sections;
//! * from YAML, by a `TrafficPolicy` whose `targetRefs` attach it to a Gateway, a listener, an
//!   HTTPRoute or one rule (policy attachment; the configuration source turns it into the same
//!   `ExtensionRef`);
//! * from Rust, by building the filter from its spec ([`rate_limit::RateLimitFilter::new`] and
//!   so on) and registering it, or by [`register`]ing the factories and referencing them with
//!   [`gateway_core::config::ExtensionRef::with_config`].
//!
//! Settings are checked when a configuration is applied (the factory's build); an invalid one
//! never reaches the request path: the rules that use it answer 500, as the Gateway API requires
//! for an unusable `ExtensionRef`, and the error says why.
//!
//! | kind | module | what it does |
//! |---|---|---|
//! | `IPAccess` | [`access`] | allow and deny lists of CIDRs, by connection or `X-Forwarded-For` address: 403 |
//! | `RequestLimits` | [`limits`] | request body size (413), header count and size (431) |
//! | `ExternalAuth` | [`auth::ext_authz`] | asks an external service (gRPC `ext_authz` v3 or HTTP): its answer allows or denies |
//! | `JWTAuth` | [`auth::jwt`] | JSON Web Tokens against inline, file or remote JWKS: 401 with `WWW-Authenticate` |
//! | `BasicAuth` | [`auth::basic`] | htpasswd users (bcrypt, `{SHA}`): 401 with `WWW-Authenticate` |
//! | `APIKeyAuth` | [`auth::api_key`] | API keys from headers, query parameters or cookies: 401 |
//! | `RateLimit` | [`rate_limit`] | local GCRA and global Redis limits keyed by client, header and route: 429 with `Retry-After` |
//! | `Compression` | [`compression`] | gzip, brotli and zstd by `Accept-Encoding`, minimum size and media types |
//! | `Transformation` | [`transformation`] | request and response headers and bodies rewritten by Jinja templates |
//! | `AIPrompt` | [`ai`] | OpenAI prompts enriched with messages, guarded by patterns (reject or mask) |
//! | `TrafficPolicy` | [`policy`] | any of the above in one object, run in a fixed order |
//!
//! Filters are built once per configuration and shared by every request of the rules that use
//! them; state that must outlive a configuration change (a rate limiter's buckets) is kept
//! across applies while the filter's settings are unchanged (see [`Filters`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod ai;
pub mod auth;
pub mod client_ip;
pub mod compression;
mod error;
pub mod limits;
pub mod policy;
pub mod rate_limit;
mod registry;
mod request;
mod respond;
pub mod secret;
pub mod transformation;

pub use error::SpecError;
pub use registry::{Filters, register};

/// The API group of every kind of this crate (the project's own group).
pub const GROUP: &str = "gateway.pingora-gateway.dev";
