//! The configuration model: what the gateway serves, in plain Rust.
//!
//! A [`Config`] is a list of [`Bind`]s (sockets the gateway listens on). Each bind carries the
//! Gateway API listeners that share that socket, and each listener carries the routes attached to
//! it. Nothing here depends on Kubernetes types: `gateway-k8s` produces this model from Gateway API
//! resources, and an embedding program can build it by hand.
//!
//! The model is declarative and cheap to compare: [`crate::Gateway::apply`] compiles it into an
//! immutable routing table and swaps it in only when it differs from the active one.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything one gateway process serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The sockets to listen on. Two binds must not share an address.
    pub binds: Vec<Bind>,
}

/// One listening socket and the Gateway API listeners that share it.
///
/// All listeners on a bind share its protocol. On a request, the listener with the most specific
/// hostname matching the request's host is chosen first (exact, then the longest wildcard, then a
/// listener without hostname); only that listener's routes are considered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// The local address to bind, e.g. `127.0.0.1:8080`.
    pub address: SocketAddr,
    /// Plain HTTP (with h2c prior knowledge) or TLS-terminated HTTPS (with ALPN `h2`).
    pub protocol: Protocol,
    /// The Gateway API listeners served on this socket.
    pub listeners: Vec<Listener>,
}

/// The application protocol of a bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    Http,
    /// TLS termination; HTTP/1.1 or HTTP/2 chosen by ALPN.
    Https,
}

impl Protocol {
    /// The URL scheme of this protocol (`http` or `https`).
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }

    /// The port a URL of this scheme implies when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Https => 443,
        }
    }
}

/// A Gateway API listener: a hostname filter and the routes attached to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// A name for logs and the admin API, e.g. `namespace/gateway/listener`.
    pub name: String,
    /// The listener's hostname: exact (`foo.example.com`) or wildcard (`*.example.com`).
    /// `None` accepts every host.
    pub hostname: Option<String>,
    /// The port number the Gateway declares for this listener. It may differ from the bound port
    /// (port mapping); redirects and routing see this one.
    pub port: u16,
    /// Certificates served on TLS binds; chosen by SNI.
    pub tls: Option<ListenerTls>,
    /// The routes attached to this listener.
    pub routes: Vec<Route>,
}

/// TLS material of a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerTls {
    /// Certificates with their keys, in the order the Gateway lists them.
    pub certificates: Vec<Certificate>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The PEM-encoded chain, leaf first.
    pub cert_pem: String,
    /// The PEM-encoded private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing)]
    pub key_pem: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// An HTTP route: hostnames and an ordered list of rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The namespace of the route; part of the precedence tie-break.
    pub namespace: String,
    /// The name of the route; part of the precedence tie-break.
    pub name: String,
    /// Hostnames this route serves, exact or `*.` wildcards. Empty means every host the
    /// listener accepts. They are intersected with the listener hostname when compiled.
    pub hostnames: Vec<String>,
    /// The creation order of the route: older (smaller) routes win precedence ties.
    /// For Kubernetes resources this is the creation timestamp in seconds.
    pub created: i64,
    /// The rules, in order: the first rule wins ties within a route.
    pub rules: Vec<Rule>,
}

/// A routing rule: matches, filters and weighted backends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// An optional rule name (Gateway API `name`), shown in logs.
    pub name: Option<String>,
    /// The matches, ORed. Empty means one match of path prefix `/`.
    pub matches: Vec<RouteMatch>,
    /// Filters applied to every request the rule takes, in order.
    pub filters: Vec<Filter>,
    /// Weighted backends. Empty means the rule answers 500 (unless a filter answers first).
    pub backends: Vec<BackendRef>,
    /// Timeouts of this rule.
    pub timeouts: Timeouts,
}

/// Request and backend timeouts of a rule (Gateway API `timeouts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// The whole request, from the gateway receiving it to the response headers. `None`: no limit.
    pub request: Option<Duration>,
    /// One attempt to a backend: connect, send, until response headers. `None`: no limit.
    pub backend_request: Option<Duration>,
}

/// One way a request can match a rule: all given conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Header conditions, ANDed. Names compare case-insensitively.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, ANDed. Names compare exactly.
    pub query_params: Vec<QueryParamMatch>,
    /// The method, if the match requires one (upper case, e.g. `GET`).
    pub method: Option<String>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    /// The path equals this string (case-sensitive, no normalisation of trailing slashes).
    Exact(String),
    /// The path starts with these whole segments: `/v2` matches `/v2` and `/v2/x`, not `/v2x`.
    /// A trailing slash in the prefix is ignored.
    Prefix(String),
    /// The whole path matches this regular expression (Rust `regex` syntax).
    RegularExpression(String),
}

/// How a string value is compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// The whole value matches this regular expression.
    RegularExpression(String),
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// The header name (case-insensitive).
    pub name: String,
    /// The value condition.
    pub value: StringMatch,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryParamMatch {
    /// The parameter name (exact).
    pub name: String,
    /// The value condition; the first occurrence of the parameter is compared.
    pub value: StringMatch,
}

/// A filter, applied at rule level or on one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// Changes the request headers sent to the backend.
    RequestHeaderModifier(HeaderModifier),
    /// Changes the response headers sent to the client.
    ResponseHeaderModifier(HeaderModifier),
    /// Answers with a redirect instead of proxying.
    RequestRedirect(RequestRedirect),
    /// Rewrites the host and path sent to the backend.
    UrlRewrite(UrlRewrite),
    /// A custom filter registered with [`crate::FilterRegistry`] under (group, kind).
    ExtensionRef(ExtensionRef),
    /// A filter the configuration could not express (e.g. an unresolvable reference).
    /// Requests reaching it get this status (500 per the Gateway API).
    Invalid {
        /// Why the filter is invalid (logged, not sent to clients).
        reason: String,
    },
}

/// Header edits: `set` replaces, `add` appends (joined with `,` by the backend's view), `remove`
/// deletes. Names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Headers to set, replacing existing values.
    pub set: Vec<(String, String)>,
    /// Headers to add, keeping existing values.
    pub add: Vec<(String, String)>,
    /// Header names to remove.
    pub remove: Vec<String>,
}

/// A path modification used by redirects and rewrites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part of the path the rule's `PathPrefix` matched.
    ReplacePrefixMatch(String),
}

/// The `RequestRedirect` filter. Unset fields keep the request's values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRedirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// The host to redirect to.
    pub hostname: Option<String>,
    /// The path to redirect to.
    pub path: Option<PathModifier>,
    /// The port to redirect to. When unset: the listener's port, unless the scheme changes, in
    /// which case the scheme's default. A port equal to the scheme's default is left out.
    pub port: Option<u16>,
    /// The status code: 301, 302 (default), 303, 307 or 308.
    pub status_code: u16,
}

impl Default for RequestRedirect {
    fn default() -> Self {
        RequestRedirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: 302,
        }
    }
}

/// The `URLRewrite` filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewrite {
    /// The host the backend sees.
    pub hostname: Option<String>,
    /// The path the backend sees.
    pub path: Option<PathModifier>,
}

/// A reference to a custom filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExtensionRef {
    /// API group of the filter kind, e.g. `filters.example.com`.
    pub group: String,
    /// Kind of the filter, e.g. `RateLimit`.
    pub kind: String,
    /// Name of the filter object; passed to the factory.
    pub name: String,
}

/// A weighted backend of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    /// A name for logs, e.g. `namespace/service:port`.
    pub name: String,
    /// The relative weight. Weight 0 is never chosen.
    pub weight: u32,
    /// Where requests go.
    pub target: BackendTarget,
    /// Filters applied only when this backend is chosen, after the rule's filters.
    pub filters: Vec<Filter>,
}

/// What a backend reference resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendTarget {
    /// A set of endpoints, load-balanced round robin with keep-alive connection reuse.
    Endpoints(Backend),
    /// The reference could not be resolved; its share of requests is answered with 500.
    Unresolved {
        /// Why (logged, not sent to clients).
        reason: String,
    },
}

/// A resolved backend: endpoints and how to talk to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Endpoint addresses. Empty means no ready endpoint: requests get 503.
    pub endpoints: Vec<SocketAddr>,
    /// The upstream protocol.
    pub protocol: BackendProtocol,
}

/// The protocol spoken to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP (WebSocket upgrades pass through).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over TCP (`kubernetes.io/h2c`).
    H2c,
}

impl BackendRef {
    /// A backend of one weight over plain HTTP/1.1 endpoints.
    pub fn endpoints(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Self {
        BackendRef {
            name: name.into(),
            weight: 1,
            target: BackendTarget::Endpoints(Backend {
                endpoints,
                protocol: BackendProtocol::Http1,
            }),
            filters: Vec::new(),
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a backend-level filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }
}

impl Route {
    /// A route with no hostnames (every host) and no rules.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Route {
            namespace: namespace.into(),
            name: name.into(),
            hostnames: Vec::new(),
            created: 0,
            rules: Vec::new(),
        }
    }

    /// Adds a hostname.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostnames.push(hostname.into());
        self
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }
}

impl Rule {
    /// A rule matching path prefix `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Rule::default().matching(RouteMatch {
            path: PathMatch::Prefix(prefix.into()),
            ..RouteMatch::default()
        })
    }

    /// A rule matching exactly `path`.
    pub fn exact(path: impl Into<String>) -> Self {
        Rule::default().matching(RouteMatch {
            path: PathMatch::Exact(path.into()),
            ..RouteMatch::default()
        })
    }

    /// Adds a match (matches are ORed).
    pub fn matching(mut self, m: RouteMatch) -> Self {
        self.matches.push(m);
        self
    }

    /// Adds a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds a backend.
    pub fn backend(mut self, backend: BackendRef) -> Self {
        self.backends.push(backend);
        self
    }
}

impl Listener {
    /// A listener named `name` for `port`, with no hostname, TLS or routes.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Listener {
            name: name.into(),
            hostname: None,
            port,
            tls: None,
            routes: Vec::new(),
        }
    }

    /// Sets the hostname.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }
}
