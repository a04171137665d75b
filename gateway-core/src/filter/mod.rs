//! Filters: the Gateway API built-ins and the trait for custom `ExtensionRef` filters.
//!
//! Every filter of a rule, built-in or custom, is one step of an ordered chain, run in the order
//! the rule lists them (the rule's chain, then the chosen backend's). Each step sees the request
//! as the steps before it left it:
//!
//! | hook | runs in | built-ins that act here |
//! |---|---|---|
//! | [`HttpFilter::request_headers`] | `request_filter`, after the route matched | `RequestHeaderModifier`, `URLRewrite`, `RequestRedirect` (answers), `CORS` (answers preflights), `RequestMirror` (starts the copy) |
//! | [`HttpFilter::request_body`] | once with the whole body when a step asked for it with [`FilterCtx::buffer_request_body`] or the listener read it before routing for its body headers ([`crate::config::Listener::body_headers`]); otherwise chunk by chunk as it streams to the backend | `RequestMirror` (tees the body) |
//! | [`HttpFilter::upstream_request`] | `upstream_request_filter`, once per attempt | — |
//! | [`HttpFilter::response_headers`] | `response_filter`, and for every response the gateway writes itself (redirects, direct responses, errors) | `ResponseHeaderModifier`, `CORS` (annotates) |
//! | [`HttpFilter::response_body`] | `response_body_filter`, chunk by chunk; once with the whole body of a response the gateway writes itself | — |
//! | [`HttpFilter::logging`] | at the end of every request, whatever happened | — |
//!
//! Only the steps a request reached take part in its response and logging hooks: when a step
//! answers (a redirect, a direct response), the steps after it never saw the request.
//!
//! Custom filters implement [`HttpFilter`] and are registered in a [`FilterRegistry`] under the
//! `(group, kind)` an HTTPRoute's `ExtensionRef` names. The registry is consulted when a
//! configuration is applied, never on the request path; the factory gets the referenced object's
//! settings ([`ExtensionRef::config`]). A reference to a kind nobody registered makes its rule
//! answer 500, as the Gateway API requires.

mod builtin;
pub(crate) mod chain;
pub(crate) mod cors;
mod ctx;
mod direct;

pub use builtin::{apply_url_rewrite, redirect_location, rewrite_path};
pub use chain::CompiledHeaderModifier;
pub use ctx::{ClientCertStatus, FilterCtx, RouteInfo};
pub use direct::{DIRECT_RESPONSE_GROUP, DIRECT_RESPONSE_KIND, DirectResponseFilter};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::ExtensionRef;
use crate::error::Result;

/// What a filter decides in a request hook.
#[derive(Debug)]
pub enum FilterAction {
    /// Carry on: the next step runs, then the request goes to a backend.
    Continue,
    /// Answer the client now with this response; no backend is contacted. The response hooks of
    /// the steps the request reached still run on it.
    Respond(DirectResponse),
}

/// A response written by the gateway itself.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// One value serves every request of the rules that reference it, concurrently: keep
/// per-request state in [`FilterCtx::extensions_mut`], shared state behind atomics. Every hook has
/// a default that does nothing, so implement only the phases you need. An `Err` from a request
/// hook answers 500; from a later hook it ends the request with 500 if nothing was sent yet.
#[async_trait]
pub trait HttpFilter: Send + Sync + 'static {
    /// Runs after the route matched, in the order the rule lists its filters, before the backend
    /// (rule filters) or the endpoint (backend filters) is chosen. The request headers can be
    /// changed through `session.req_header_mut()`; the changes reach the backend. Return
    /// [`FilterAction::Respond`] to answer directly. Call [`FilterCtx::buffer_request_body`] here
    /// to get the whole body in [`HttpFilter::request_body`] before the endpoint is chosen.
    async fn request_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> Result<FilterAction> {
        Ok(FilterAction::Continue)
    }

    /// Sees the request body. When some step asked for buffering, runs once with the whole body
    /// (`end_of_stream` true) before the endpoint is chosen, and may still answer; a changed body
    /// is what every attempt sends. Otherwise runs for each chunk as it streams to the backend
    /// (first attempt only), and [`FilterAction::Respond`] is an error there (500).
    async fn request_body(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> Result<FilterAction> {
        Ok(FilterAction::Continue)
    }

    /// Runs on the request about to be sent to the backend, once per attempt (retries included),
    /// after every request hook.
    async fn upstream_request(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _request: &mut RequestHeader,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs on the response about to be sent to the client: the backend's, or one the gateway
    /// writes itself (redirect, direct response, error). In the order the rule lists its filters.
    async fn response_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _response: &mut ResponseHeader,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs for each chunk of a proxied response body, and once with the whole body
    /// (`end_of_stream` true) of a response the gateway writes itself (redirect, direct response,
    /// error), which is then sent with a `Content-Length` of what the hooks left. Synchronous, as
    /// Pingora's phase is: do no blocking work here.
    fn response_body(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs once when the request ends, for every request that reached this filter, whatever
    /// happened to it: proxied, answered by a filter, redirected, or failed (`error`).
    async fn logging(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _error: Option<&pingora_error::Error>,
    ) {
    }
}

/// Builds a filter instance for one `ExtensionRef`. Called when a configuration is applied, with
/// the reference and the referenced object's settings ([`ExtensionRef::config`]).
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
/// Empty by default: every `ExtensionRef` then answers 500. [`FilterRegistry::with_builtins`]
/// starts with the project's own filters (`DirectResponse`).
#[derive(Clone, Default)]
pub struct FilterRegistry {
    factories: HashMap<(String, String), Arc<dyn FilterFactory>>,
    /// The kinds registered with [`FilterRegistry::register_policy`], in registration order.
    policies: Vec<(String, String)>,
}

impl FilterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in custom filters: [`DirectResponseFilter`] under
    /// ([`DIRECT_RESPONSE_GROUP`], [`DIRECT_RESPONSE_KIND`]).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register(
            DIRECT_RESPONSE_GROUP,
            DIRECT_RESPONSE_KIND,
            DirectResponseFilter::factory,
        );
        registry
    }

    /// Registers `factory` for `ExtensionRef`s of `group` and `kind`, replacing an earlier one
    /// (and its policy mark, see [`FilterRegistry::register_policy`]).
    pub fn register(
        &mut self,
        group: impl Into<String>,
        kind: impl Into<String>,
        factory: impl FilterFactory,
    ) -> &mut Self {
        let key = (group.into(), kind.into());
        self.policies.retain(|k| *k != key);
        self.factories.insert(key, Arc::new(factory));
        self
    }

    /// Registers `factory` for `group` and `kind` like [`FilterRegistry::register`], and marks the
    /// kind as a *policy*: besides being named by `ExtensionRef`s, its objects may attach
    /// themselves to Gateways, listeners, routes and rules. gateway-core does nothing else with
    /// the mark; a configuration source that reads attachments (gateway-k8s reads
    /// `spec.targetRefs` and `spec.targetSelectors`, GEP-713) asks [`FilterRegistry::policy_kinds`]
    /// which kinds to read, merges the attached objects' settings, and puts an
    /// [`ExtensionRef`](crate::config::ExtensionRef) with the merged settings on each rule.
    pub fn register_policy(
        &mut self,
        group: impl Into<String>,
        kind: impl Into<String>,
        factory: impl FilterFactory,
    ) -> &mut Self {
        let (group, kind) = (group.into(), kind.into());
        self.register(group.clone(), kind.clone(), factory);
        self.policies.push((group, kind));
        self
    }

    /// The kinds registered with [`FilterRegistry::register_policy`], as `(group, kind)`, in
    /// registration order.
    pub fn policy_kinds(&self) -> impl Iterator<Item = (&str, &str)> {
        self.policies.iter().map(|(g, k)| (g.as_str(), k.as_str()))
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
