//! Request routing: which listener, route and rule take a request. (Interface; the helper fills it in.)

use crate::config::Listener;
use crate::error::Result;

/// The parts of a request routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// The `Host` header or `:authority`, possibly with a port.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The method, upper case.
    pub method: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

/// Where a request goes: indices into the bind's listeners, the listener's routes and the route's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteHit {
    /// Index of the listener in the bind.
    pub listener: usize,
    /// Index of the route in the listener.
    pub route: usize,
    /// Index of the rule in the route.
    pub rule: usize,
    /// For a `PathPrefix` match: the byte length of the request path the prefix covered.
    pub matched_prefix: Option<usize>,
}

/// The compiled router of one bind.
#[derive(Debug)]
pub struct BindRouter {}

impl BindRouter {
    /// Compiles the listeners of a bind.
    pub fn build(_listeners: &[Listener]) -> Result<Self> {
        Ok(BindRouter {})
    }

    /// Finds the rule that takes the request, or `None` (404).
    pub fn lookup(&self, _req: &RequestParts<'_>) -> Option<RouteHit> {
        None
    }
}
