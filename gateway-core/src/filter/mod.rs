//! Filters: the Gateway API built-ins and the trait for custom `ExtensionRef` filters.
//!
//! Built-in filters are plain data applied by [`crate::proxy`] in the phase the spec puts them in:
//! redirects answer in `request_filter`, request header edits and URL rewrites change the upstream
//! request in `upstream_request_filter`, response header edits run in `response_filter`.
//!
//! Custom filters implement [`HttpFilter`] and are registered in a [`FilterRegistry`] under the
//! `(group, kind)` an HTTPRoute's `ExtensionRef` names. The registry is consulted when a
//! configuration is applied, never on the request path. A reference to a kind nobody registered
//! makes its rule answer 500, as the Gateway API requires.

mod builtin;

pub use builtin::{redirect_location, rewrite_path};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::ExtensionRef;
use crate::error::Result;

/// What a custom filter decides in the request phase.
#[derive(Debug)]
pub enum FilterAction {
    /// Carry on: the next filter runs, then the request goes to a backend.
    Continue,
    /// Answer the client now with this response; no backend is contacted.
    Respond(DirectResponse),
}

/// A response written by the gateway itself.
#[derive(Clone, Debug)]
pub struct DirectResponse {
    /// The status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body; `Content-Length` is set from it.
    pub body: Bytes,
}

impl DirectResponse {
    /// A response with `status` and a plain-text body.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        DirectResponse {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into(),
        }
    }
}

/// A custom filter, referenced from an HTTPRoute rule or backendRef through `ExtensionRef`.
///
/// One value serves every request of the rules that reference it, concurrently: keep per-request
/// state on the stack or in the session, shared state behind atomics. Every hook has a default
/// that does nothing, so implement only the phases you need.
#[async_trait]
pub trait HttpFilter: Send + Sync + 'static {
    /// Runs in Pingora's `request_filter` phase, after the route matched and before a backend is
    /// chosen, in the order the rule lists its filters. Return [`FilterAction::Respond`] to answer
    /// directly. An `Err` answers 500.
    async fn request(&self, _session: &mut Session) -> Result<FilterAction> {
        Ok(FilterAction::Continue)
    }

    /// Runs in `upstream_request_filter` on the request about to be sent to the backend, after
    /// the built-in header modifiers and rewrites.
    async fn upstream_request(
        &self,
        _session: &mut Session,
        _request: &mut RequestHeader,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs in `response_filter` on the response about to be sent to the client, for proxied
    /// responses, after the built-in response header modifiers.
    async fn response(&self, _session: &mut Session, _response: &mut ResponseHeader) -> Result<()> {
        Ok(())
    }
}

/// Builds a filter instance for one `ExtensionRef` (for example, looks up the named object's
/// settings). Called when a configuration is applied.
pub trait FilterFactory: Send + Sync + 'static {
    /// Creates the filter `reference` names. An error makes the rules using it answer 500.
    fn build(&self, reference: &ExtensionRef) -> Result<Arc<dyn HttpFilter>>;
}

impl<F> FilterFactory for F
where
    F: Fn(&ExtensionRef) -> Result<Arc<dyn HttpFilter>> + Send + Sync + 'static,
{
    fn build(&self, reference: &ExtensionRef) -> Result<Arc<dyn HttpFilter>> {
        self(reference)
    }
}

/// The custom filters a gateway knows, by `(group, kind)`.
///
/// Empty by default: every `ExtensionRef` then answers 500.
#[derive(Clone, Default)]
pub struct FilterRegistry {
    factories: HashMap<(String, String), Arc<dyn FilterFactory>>,
}

impl FilterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` for `ExtensionRef`s of `group` and `kind`, replacing an earlier one.
    pub fn register(
        &mut self,
        group: impl Into<String>,
        kind: impl Into<String>,
        factory: impl FilterFactory,
    ) -> &mut Self {
        self.factories
            .insert((group.into(), kind.into()), Arc::new(factory));
        self
    }

    /// Registers one shared filter for every object of `group` and `kind`.
    pub fn register_filter(
        &mut self,
        group: impl Into<String>,
        kind: impl Into<String>,
        filter: Arc<dyn HttpFilter>,
    ) -> &mut Self {
        self.register(group, kind, move |_: &ExtensionRef| Ok(filter.clone()))
    }

    /// Whether `(group, kind)` is registered.
    pub fn contains(&self, group: &str, kind: &str) -> bool {
        self.factories
            .contains_key(&(group.to_owned(), kind.to_owned()))
    }

    /// Builds the filter for `reference`, or `None` if its kind is not registered.
    pub fn build(&self, reference: &ExtensionRef) -> Option<Result<Arc<dyn HttpFilter>>> {
        self.factories
            .get(&(reference.group.clone(), reference.kind.clone()))
            .map(|f| f.build(reference))
    }
}

impl fmt::Debug for FilterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}
