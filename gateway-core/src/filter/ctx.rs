//! The per-request context every filter hook gets.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

/// Which listener, route and rule took a request. Built once per rule when a configuration is
/// applied; requests share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The listener's name, as in [`crate::config::Listener::name`].
    pub listener: String,
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// The rule's name, or its index when it has none.
    pub rule: String,
}

/// What the client of a request showed of itself in the TLS handshake (see
/// [`FilterCtx::client_cert`]).
///
/// Client certificates are asked for only on TLS binds with client certificate validation
/// ([`crate::config::ClientValidation`]); elsewhere every request is `Absent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientCertStatus {
    /// No client certificate: plain HTTP, no validation on the bind, or the client sent none
    /// (possible only with `AllowInsecureFallback`).
    #[default]
    Absent,
    /// A certificate that verified against the bind's trusted CAs, as they were when the
    /// connection was set up.
    Verified,
    /// A certificate that did not verify (possible only with `AllowInsecureFallback`), or one
    /// presented while the bind had no validation any more. Nothing vouches for it.
    Unverified,
}

/// Per-request state shared by the filters of one request, from the route match to logging.
///
/// It carries typed values between hooks and filters ([`FilterCtx::extensions_mut`]), tells which
/// listener, route, rule and backend took the request, and lets a filter ask for the request body
/// or steer the backend and endpoint choice.
pub struct FilterCtx {
    route: Arc<RouteInfo>,
    extensions: http::Extensions,
    /// Values of [`FilterCtx::insert_state`]: few per request, so a list searched by type.
    state: Vec<Box<dyn Any + Send + Sync>>,
    backend: Option<Arc<str>>,
    wanted_backend: Option<String>,
    preferred_endpoint: Option<SocketAddr>,
    endpoint: Option<SocketAddr>,
    body_limit: Option<usize>,
    body: Option<Bytes>,
    client_cert: ClientCertStatus,
}

impl FilterCtx {
    pub(crate) fn new(route: Arc<RouteInfo>) -> Self {
        FilterCtx {
            route,
            extensions: http::Extensions::new(),
            state: Vec::new(),
            backend: None,
            wanted_backend: None,
            preferred_endpoint: None,
            endpoint: None,
            body_limit: None,
            body: None,
            client_cert: ClientCertStatus::Absent,
        }
    }

    /// Sets what the connection's handshake established about the client certificate.
    pub(crate) fn with_client_cert(mut self, status: ClientCertStatus) -> Self {
        self.client_cert = status;
        self
    }

    /// Whether the client presented a certificate in the TLS handshake of this request's
    /// connection, and whether it verified. With `AllowInsecureFallback` validation, this is how
    /// a filter tells verified clients from others (e.g. to refuse some routes to them).
    pub fn client_cert(&self) -> ClientCertStatus {
        self.client_cert
    }

    /// The listener, route and rule that took the request.
    pub fn route(&self) -> &RouteInfo {
        &self.route
    }

    /// The chosen backend's name (e.g. `namespace/service:port`), once chosen: rule filters'
    /// request hooks run before the choice and see `None`; backend filters and later hooks see it.
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// The endpoint of the current attempt, once chosen (from `upstream_request` on).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Typed per-request values, for sharing between hooks and filters.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Typed per-request values, mutable.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// Stores a per-request value that need not be `Clone` (an encoder, a buffer being
    /// filled), one per type, replacing and returning an earlier one. Unlike
    /// [`FilterCtx::extensions_mut`], values are reached by reference only, so a filter keeps
    /// mutable state across its hooks without a lock. Dropped when the request ends.
    pub fn insert_state<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        let old = self.remove_state::<T>();
        self.state.push(Box::new(value));
        old
    }

    /// The value of type `T` stored by [`FilterCtx::insert_state`], if any.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.iter().find_map(|v| v.downcast_ref::<T>())
    }

    /// The value of type `T` stored by [`FilterCtx::insert_state`], mutable.
    pub fn state_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.state.iter_mut().find_map(|v| v.downcast_mut::<T>())
    }

    /// Takes the value of type `T` stored by [`FilterCtx::insert_state`] out of the request.
    pub fn remove_state<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let index = self.state.iter().position(|v| v.is::<T>())?;
        self.state
            .swap_remove(index)
            .downcast::<T>()
            .ok()
            .map(|v| *v)
    }

    /// Asks for the whole request body, up to `limit` bytes, before the endpoint is chosen: the
    /// [`crate::HttpFilter::request_body`] hooks then run once with all of it, and endpoint pickers
    /// see it. A larger body is answered with 413. Several calls keep the largest limit. Call it
    /// from a request-headers hook. When the listener already read the body before routing (its
    /// [`crate::config::Listener::body_headers`]), that body is used, not read again.
    pub fn buffer_request_body(&mut self, limit: usize) {
        self.body_limit = Some(self.body_limit.map_or(limit, |l| l.max(limit)));
    }

    /// The limit asked for with [`FilterCtx::buffer_request_body`], if any.
    pub fn body_limit(&self) -> Option<usize> {
        self.body_limit
    }

    /// The buffered request body, once read (see [`FilterCtx::buffer_request_body`]; also set
    /// when the listener read the body before routing for its body headers).
    pub fn request_body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// Asks for the backend named `name` (a backendRef's name) instead of the weighted choice.
    /// Effective from a rule filter's request-headers hook; an unknown name falls back to the
    /// weighted choice.
    pub fn choose_backend(&mut self, name: impl Into<String>) {
        self.wanted_backend = Some(name.into());
    }

    /// Asks for `endpoint` first, if it is one of the chosen backend's endpoints and usable. The
    /// backend's picker orders the rest as fallbacks.
    pub fn prefer_endpoint(&mut self, endpoint: SocketAddr) {
        self.preferred_endpoint = Some(endpoint);
    }

    /// The endpoint asked for with [`FilterCtx::prefer_endpoint`].
    pub fn preferred_endpoint(&self) -> Option<SocketAddr> {
        self.preferred_endpoint
    }

    pub(crate) fn wanted_backend(&self) -> Option<&str> {
        self.wanted_backend.as_deref()
    }

    pub(crate) fn set_backend(&mut self, name: Arc<str>) {
        self.backend = Some(name);
    }

    pub(crate) fn set_endpoint(&mut self, endpoint: SocketAddr) {
        self.endpoint = Some(endpoint);
    }

    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = Some(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_holds_one_value_per_type_by_reference() {
        struct Buffer(Vec<u8>);
        let mut ctx = FilterCtx::new(Arc::new(RouteInfo {
            listener: "l".into(),
            namespace: "n".into(),
            route: "r".into(),
            rule: "0".into(),
        }));
        assert!(ctx.state::<Buffer>().is_none());
        assert!(ctx.insert_state(Buffer(vec![1])).is_none());
        ctx.insert_state(7u32);
        ctx.state_mut::<Buffer>().unwrap().0.push(2);
        assert_eq!(ctx.state::<Buffer>().unwrap().0, [1, 2]);
        let old = ctx.insert_state(Buffer(vec![9])).unwrap();
        assert_eq!(old.0, [1, 2]);
        assert_eq!(ctx.remove_state::<Buffer>().unwrap().0, [9]);
        assert!(ctx.state::<Buffer>().is_none());
        assert_eq!(ctx.state::<u32>(), Some(&7));
    }
}
