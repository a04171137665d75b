//! The configuration model: what the gateway serves, in plain Rust.
//!
//! A [`Config`] is a list of [`Bind`]s (sockets the gateway listens on). Each bind carries the
//! Gateway API listeners that share that socket, and each listener carries the routes attached to
//! it. Nothing here depends on Kubernetes types: `gateway-k8s` produces this model from Gateway API
//! resources, and an embedding program can build it by hand.
//!
//! The model is declarative and cheap to compare: [`crate::Gateway::apply`] compiles it into an
//! immutable routing table and swaps it in only when it differs from the active one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything one gateway process serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The sockets to listen on. Two binds must not share an address.
    pub binds: Vec<Bind>,
    /// Downstream connection limits, HTTP/1 timeouts and the request-body buffering cap. The
    /// defaults ([`Limits::default`]) suit a public-facing gateway; see `docs/security.md`.
    #[serde(default)]
    pub limits: Limits,
}

/// Overload protection and HTTP/1 timeouts: how many downstream connections the gateway holds,
/// how long a client may take to send a request head or stay idle between requests, and how
/// many bytes of request bodies it keeps in memory across all requests.
///
/// Every value must be above zero ([`crate::Gateway::apply`] rejects the configuration
/// otherwise). Changes apply to connections accepted after the apply (timeouts, connection
/// limits) and to requests that start after it (the buffering cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Open downstream connections across all binds. A connection accepted past it is closed at
    /// once (a rate-limited warning is logged). Default [`Limits::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Open downstream connections on each bind (socket). Default
    /// [`Limits::DEFAULT_MAX_CONNECTIONS_PER_BIND`].
    pub max_connections_per_bind: usize,
    /// How long a client may take to send a whole HTTP/1 request head, from its first byte to the
    /// blank line (slowloris). Also bounds the TLS handshake. Past it the connection is closed.
    /// Default [`Limits::DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle before its next request starts (and a new
    /// connection before its first byte). Past it the connection is closed. Pingora rounds it
    /// down to whole seconds (at least one). Default [`Limits::DEFAULT_KEEPALIVE_IDLE_TIMEOUT`].
    pub keepalive_idle_timeout: Duration,
    /// Bytes of request bodies held in memory across all requests: Pingora's retry replay buffer
    /// (the first 64 KiB of every proxied request body), bodies buffered for filters
    /// ([`crate::FilterCtx::buffer_request_body`]) and body chunks queued for mirrors. A request
    /// with a body that would go past it is answered 503; a mirror copy that would go past it is
    /// dropped. Default [`Limits::DEFAULT_MAX_BUFFERED_BODY_BYTES`].
    pub max_buffered_body_bytes: usize,
}

impl Limits {
    /// Default of [`Limits::max_connections`]: 50,000, well under the 1,048,576 file
    /// descriptors a container usually gets and at about 64 KiB of memory per idle connection
    /// (socket buffers, Pingora's session) some 3 GiB, so the process fails soft before the
    /// kernel or the allocator does. Envoy Gateway sets no default; nginx's `worker_connections`
    /// is 512 per worker.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
    /// Default of [`Limits::max_connections_per_bind`]: 20,000, so one busy or attacked
    /// listener cannot take every connection slot from the others.
    pub const DEFAULT_MAX_CONNECTIONS_PER_BIND: usize = 20_000;
    /// Default of [`Limits::header_read_timeout`]: 10 seconds (Envoy's `request_headers_timeout`
    /// is unset by default; nginx's `client_header_timeout` is 60 s).
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`Limits::keepalive_idle_timeout`]: 60 seconds (nginx's `keepalive_timeout` is
    /// 75 s, Envoy's HTTP/1 idle timeout 1 h).
    pub const DEFAULT_KEEPALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`Limits::max_buffered_body_bytes`]: 256 MiB, room for 4,096 requests holding
    /// a full 64 KiB replay buffer at once.
    pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 256 * 1024 * 1024;

    /// The first value that is not allowed (zero), by field name.
    pub fn invalid(&self) -> Option<&'static str> {
        [
            ("max_connections", self.max_connections == 0),
            (
                "max_connections_per_bind",
                self.max_connections_per_bind == 0,
            ),
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            (
                "keepalive_idle_timeout",
                self.keepalive_idle_timeout.is_zero(),
            ),
            ("max_buffered_body_bytes", self.max_buffered_body_bytes == 0),
        ]
        .into_iter()
        .find_map(|(name, bad)| bad.then_some(name))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_bind: Self::DEFAULT_MAX_CONNECTIONS_PER_BIND,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            keepalive_idle_timeout: Self::DEFAULT_KEEPALIVE_IDLE_TIMEOUT,
            max_buffered_body_bytes: Self::DEFAULT_MAX_BUFFERED_BODY_BYTES,
        }
    }
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
    /// The routes attached to this listener. Shared ([`Arc`]): a configuration source that keeps
    /// the routes it translated (`gateway-k8s`'s `Translator` does) hands the same `Arc` for an
    /// unchanged route, and [`crate::Gateway::apply`] then reuses what it compiled for it (an
    /// equal route is reused too; the pointer only makes the comparison free).
    #[serde(with = "shared_routes")]
    pub routes: Vec<Arc<Route>>,
    /// How request paths are normalised before routing: matching, filters and the backend all
    /// see the normalised path. Default: [`PathNormalization::default`] (dot segments removed,
    /// unreserved escapes decoded, slashes merged, escaped slashes redirected).
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// Request headers derived from the JSON request body before routing (body-based routing):
    /// for each entry, the header `header` is set to the value of the body's top-level string
    /// field `field`, so that routes can match on it (e.g. `X-Gateway-Model-Name` from an OpenAI
    /// request's `model`).
    ///
    /// Runs in `request_filter`, after the listener is chosen by host and the path normalised,
    /// before the route is looked up. When the list is not empty, every request on the listener
    /// first loses any header of these names the client sent (a client cannot spoof them); then,
    /// if it has a body whose `Content-Type` is JSON (`application/json` or a `+json` suffix,
    /// parameters ignored), the whole body is read (at most
    /// [`Listener::max_body_header_bytes`]; longer: 413; the gateway-wide buffering budget
    /// [`Limits::max_buffered_body_bytes`] refused: 503) and each header whose field is a
    /// top-level string is set. A body that is not a JSON object, not valid JSON, or lacks the
    /// field leaves the header unset and the request is routed without it (the backend judges
    /// the body). The body read here is the one filters, endpoint pickers and retries see and
    /// the one sent upstream, byte for byte.
    ///
    /// Default: empty (nothing is read before routing; bodies stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_headers: Vec<BodyHeader>,
    /// The longest body read for [`Listener::body_headers`]; a longer one is answered with 413.
    /// Values above [`crate::proxy::MAX_BUFFERED_BODY`] (16 MiB, the most the proxy holds
    /// whole) are lowered to it. Ignored without `body_headers`. Default
    /// [`Listener::DEFAULT_MAX_BODY_HEADER_BYTES`].
    #[serde(default = "Listener::default_max_body_header_bytes")]
    pub max_body_header_bytes: usize,
}

/// One request header derived from the JSON request body before routing
/// ([`Listener::body_headers`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BodyHeader {
    /// The header set, e.g. `x-gateway-model-name` (case-insensitive).
    pub header: String,
    /// The top-level key of the JSON object whose string value the header gets, e.g. `model`.
    pub field: String,
}

impl BodyHeader {
    /// `header` set from the body's top-level string field `field`.
    pub fn new(header: impl Into<String>, field: impl Into<String>) -> Self {
        BodyHeader {
            header: header.into(),
            field: field.into(),
        }
    }
}

/// (De)serialises shared routes as plain ones (serde's own `Arc` support needs its `rc`
/// feature, which would rebuild every crate depending on serde).
mod shared_routes {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Route;

    pub(super) fn serialize<S: Serializer>(routes: &[Arc<Route>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(routes.iter().map(|r| &**r))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Arc<Route>>, D::Error> {
        Ok(Vec::<Route>::deserialize(d)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }
}

/// How a listener normalises the path of every request before routing
/// ([`crate::path::normalize`] runs in `request_filter`, before the route is looked up).
///
/// Always done, whatever the settings: percent-encoded unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) are decoded and the remaining escapes get upper-case hex digits; a
/// literal backslash becomes `/`; dot segments (`.`, `..`, also when written `%2e`) are removed as
/// in RFC 3986 section 5.2.4, never above the root; invalid escapes (`%zz`, a truncated `%2`),
/// control characters and an encoded NUL (`%00`) are answered with 400.
///
/// The default is as strict as Envoy Gateway's: slashes merged and escaped slashes answered with
/// a redirect to the unescaped path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct PathNormalization {
    /// Merge runs of slashes into one (`/a//b` -> `/a/b`), before dot segments are removed.
    /// Default `true`. Not part of RFC 3986, but what most backends do when they resolve a path.
    pub merge_slashes: bool,
    /// What to do with an escaped slash or backslash (`%2F`, `%2f`, `%5C`, `%5c`).
    /// Default [`EscapedSlashesAction::UnescapeAndRedirect`].
    pub escaped_slashes: EscapedSlashesAction,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashesAction::default(),
        }
    }
}

/// What a listener does with `%2F` / `%5C` in a request path (the values of Envoy Gateway's
/// `ClientTrafficPolicy` `path.escapedSlashesAction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EscapedSlashesAction {
    /// Keep the escape (hex digits upper-cased); it is not a segment separator for routing. Use
    /// it for backends that give `%2F` a meaning (e.g. names with slashes in REST APIs), and only
    /// when no backend decodes it before resolving the path.
    KeepUnchanged,
    /// Answer 400.
    RejectRequest,
    /// Decode to `/` (both `%2F` and `%5C`), then normalise, route and forward. Path-based access
    /// control of anything in front of the gateway may disagree with what is served.
    UnescapeAndForward,
    /// Decode to `/` and normalise as [`EscapedSlashesAction::UnescapeAndForward`] does, but
    /// answer `307` with the normalised path (and the query) in `Location` instead of serving, so
    /// that every party sees the same path on the retried request. Requests without escaped
    /// slashes are served. The default.
    #[default]
    UnescapeAndRedirect,
}

/// TLS material of a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerTls {
    /// Certificates with their keys, in the order the Gateway lists them.
    pub certificates: Vec<Certificate>,
    /// Client certificate validation (mutual TLS) on this listener's port (Gateway API
    /// `spec.tls.frontend`). `None` (the default): no client certificate is asked for.
    ///
    /// Client certificates are checked during the TLS handshake, before the request (and so the
    /// listener) is known, which makes this a setting of the whole bind: the first TLS listener
    /// of a bind decides it, and a later listener of the bind that states a different value is
    /// rejected (it serves nothing; see [`crate::ApplyReport::rejected`]).
    #[serde(default)]
    pub client_validation: Option<ClientValidation>,
}

/// How client certificates are checked on a TLS bind (Gateway API `FrontendTLSValidation`).
///
/// The gateway asks every client for a certificate and verifies the chain against `ca_pem`
/// (signatures, validity dates, the `clientAuth` extended key usage when present). With an unusable
/// `ca_pem` (no certificate, bad PEM) the bind refuses every handshake rather than serve without
/// the validation it was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientValidation {
    /// Trusted CA certificates, PEM. Each entry is one bundle (e.g. one `caCertificateRefs`
    /// entry) and may hold several certificates; all of them are trusted.
    pub ca_pem: Vec<String>,
    /// What happens to a client without a valid certificate. Default: refused.
    #[serde(default)]
    pub mode: ClientValidationMode,
}

impl ClientValidation {
    /// Checks that the CA bundles can verify client certificates, exactly as applying the
    /// configuration would: every bundle parses as PEM, each certificate is a usable trust
    /// anchor, and there is at least one. A configuration source can use it to report a bad
    /// reference instead of having the bind refuse every handshake.
    pub fn check(&self) -> crate::Result<()> {
        crate::tls::check_validation(self)
    }
}

/// What a TLS bind with [`ClientValidation`] does with clients that present no certificate, or
/// one that does not verify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientValidationMode {
    /// The handshake fails unless the client presents a certificate that verifies
    /// (Gateway API `AllowValidOnly`, the default).
    #[default]
    AllowValidOnly,
    /// The handshake succeeds without a certificate or with one that does not verify; requests
    /// are routed as usual and filters see the outcome in
    /// [`crate::FilterCtx::client_cert`] (Gateway API `AllowInsecureFallback`). A certificate whose
    /// handshake signature is wrong (the client does not hold its key) still fails the handshake.
    AllowInsecureFallback,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Retries of failed attempts (Gateway API `retry`). `None`: only connection failures, which
    /// are always safe, are retried on another endpoint.
    pub retry: Option<Retry>,
    /// Sticky sessions for this rule (Gateway API `sessionPersistence`). Overrides the backend's.
    pub session_persistence: Option<SessionPersistence>,
}

/// When and how often a failed attempt is retried (Gateway API HTTPRoute `retry`).
///
/// A retry goes to another endpoint of the same backend when there is one, after `backoff`
/// (doubled each time, with jitter, capped at ten times the base). Connection failures are
/// retried whether or not they are listed; responses are retried when their status is in
/// `codes`. The request body is replayed from a bounded buffer; a larger body is never retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Response status codes that are retried (e.g. 500, 502, 503, 504).
    pub codes: Vec<u16>,
    /// Retries after the first attempt. Default 2 when the route does not say.
    pub attempts: u32,
    /// The minimum wait before each retry. `None`: 25 ms.
    pub backoff: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            codes: Vec::new(),
            attempts: 2,
            backoff: None,
        }
    }
}

/// Sticky sessions: requests carrying the same session token go to the same endpoint
/// (Gateway API `sessionPersistence`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPersistence {
    /// The name of the cookie or header carrying the token. `None`: `gw-session`.
    pub name: Option<String>,
    /// Cookie or header.
    pub kind: SessionKind,
    /// The session ends this long after it started. `None`: never (cookies: a session cookie).
    pub absolute_timeout: Option<Duration>,
    /// The session ends after this long without a request. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Cookies only: a permanent cookie (`Max-Age` = `absolute_timeout`) instead of a session one.
    pub permanent: bool,
    /// Cookies only: the cookie `Path`. `None`: `/`.
    pub path: Option<String>,
}

/// Where a session token travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    /// A cookie the gateway sets on the first response.
    Cookie,
    /// A header the gateway sets on the first response; the client sends it back.
    Header,
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
    /// Sends a copy of each request (or a share of them) to another backend, fire and forget.
    RequestMirror(Box<RequestMirror>),
    /// Cross-origin resource sharing: answers preflights, annotates responses.
    Cors(Cors),
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRef {
    /// API group of the filter kind, e.g. `filters.example.com`.
    pub group: String,
    /// Kind of the filter, e.g. `RateLimit`.
    pub kind: String,
    /// Name of the filter object; passed to the factory.
    pub name: String,
    /// The referenced object's `spec` (or, for kinds without one, the whole object), as resolved
    /// by the configuration source. `None` when the filter needs no settings or was built in Rust
    /// without them.
    pub config: Option<serde_json::Value>,
    /// For a policy merged from several attached objects (see
    /// [`FilterRegistry::register_policy`](crate::FilterRegistry::register_policy)): the object
    /// each top-level field of `config` came from, as `namespace/name`, so that a filter can keep
    /// one state (a rate limiter's budget) per contributing object whatever it was merged with.
    /// Empty for a plain reference: every field then comes from `name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<String, String>,
    /// The Secrets that `secretRef`s in `config` name, resolved by the configuration source
    /// (gateway-k8s resolves each `{"secretRef": {"name", "namespace"}}` object found in the
    /// settings, with ReferenceGrants for other namespaces). Never serialized: `/config` shows
    /// the references, not the data. Empty by default.
    #[serde(skip)]
    pub secrets: SecretData,
}

/// The data of Secrets, by `namespace/name` (or the name alone, when a reference has no
/// namespace), then key, decoded as UTF-8 text. Cheap to clone; its `Debug` shows only the
/// Secrets' names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(Arc<BTreeMap<String, BTreeMap<String, String>>>);

impl SecretData {
    /// Secret data from `(namespace/name, key -> text)` pairs.
    pub fn new(secrets: BTreeMap<String, BTreeMap<String, String>>) -> Self {
        SecretData(Arc::new(secrets))
    }

    /// The data of Secret `id` (`namespace/name`), if it was resolved.
    pub fn get(&self, id: &str) -> Option<&BTreeMap<String, String>> {
        self.0.get(id)
    }

    /// Whether no Secret was resolved.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every resolved Secret, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
        self.0.iter()
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ExtensionRef {
    /// A reference to the object `name` of `group`/`kind`, without settings.
    pub fn new(group: impl Into<String>, kind: impl Into<String>, name: impl Into<String>) -> Self {
        ExtensionRef {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            config: None,
            origins: Default::default(),
            secrets: Default::default(),
        }
    }

    /// The object `field` of [`ExtensionRef::config`] came from: its entry in
    /// [`ExtensionRef::origins`], else [`ExtensionRef::name`].
    pub fn origin(&self, field: &str) -> &str {
        self.origins.get(field).map_or(&self.name, String::as_str)
    }

    /// Attaches the referenced object's settings.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = Some(config);
        self
    }
}

/// The `RequestMirror` filter: a copy of matching requests goes to `backend`; its response is
/// discarded. The primary request never waits for, or fails because of, a mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMirror {
    /// Where copies go. Its weight and filters are ignored.
    pub backend: BackendRef,
    /// The share of requests mirrored, as `numerator / denominator`. `None`: every request.
    pub fraction: Option<(u32, u32)>,
}

/// The `CORS` filter (Gateway API `cors`).
///
/// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
/// gateway; other requests with an allowed `Origin` get the `Access-Control-Allow-*` headers on
/// their response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins: `*`, `scheme://host[:port]`, or with a `*.` wildcard host
    /// (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    /// Allowed methods, or `*`.
    pub allow_methods: Vec<String>,
    /// Allowed request headers, or `*`.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may expose to scripts, or `*`.
    pub expose_headers: Vec<String>,
    /// Whether credentials are allowed (`Access-Control-Allow-Credentials: true`).
    pub allow_credentials: bool,
    /// How long a preflight may be cached, in seconds. `None`: 5.
    pub max_age: Option<u32>,
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
    /// A set of endpoints, load-balanced by the backend's picker with keep-alive connection reuse.
    Endpoints(Backend),
    /// An external service by DNS name (`XBackend` of type `ExternalHostname`): the gateway
    /// resolves `hostname` and re-resolves it when the answer's TTL runs out.
    Dns(DnsBackend),
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
    /// Load balancing, health, retry budget and session persistence of this backend.
    pub policy: BackendPolicy,
    /// TLS to the endpoints (Gateway API BackendTLSPolicy). `None`: plain TCP.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

impl Backend {
    /// HTTP/1.1 endpoints with the default policy, over plain TCP.
    pub fn new(endpoints: Vec<SocketAddr>) -> Self {
        Backend {
            endpoints,
            protocol: BackendProtocol::Http1,
            policy: BackendPolicy::default(),
            tls: None,
        }
    }

    /// Talks TLS to the endpoints with these settings.
    pub fn with_tls(mut self, tls: UpstreamTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// TLS from the gateway to a backend: how the gateway verifies the backend's certificate and
/// what it presents (Gateway API BackendTLSPolicy `validation`, and the Gateway's
/// `spec.tls.backend.clientCertificateRef`).
///
/// Every connection to the backend is TLS 1.2 or 1.3 with full certificate verification: the
/// chain must lead to one of the trust roots, be valid now, and name the expected identity.
/// Connections are pooled (keep-alive) per endpoint and per settings, and new connections resume
/// earlier TLS sessions (tickets or session ids) of the same settings. ALPN offers `h2` to
/// [`BackendProtocol::H2c`] backends (HTTP/2 over TLS) and `http/1.1` otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// The server name sent in SNI. When `subject_alt_names` is empty the certificate must be
    /// valid for this name (a DNS name; wildcards in the certificate match as RFC 6125 says).
    pub hostname: String,
    /// When not empty, the certificate must carry one of these subject alternative names
    /// instead of `hostname` (SNI stays `hostname`). Empty (the default): `hostname` is verified.
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltName>,
    /// The certificate authorities the backend's chain must lead to.
    pub trust: UpstreamTrust,
    /// A certificate and key presented when the backend asks for one (mutual TLS). `None` (the
    /// default): none is presented, and a backend requiring one refuses the handshake.
    #[serde(default)]
    pub client_certificate: Option<Certificate>,
}

impl UpstreamTls {
    /// TLS verifying `hostname` against the PEM CA certificates `ca_pem`, without client
    /// certificate.
    pub fn new(hostname: impl Into<String>, ca_pem: impl Into<String>) -> Self {
        UpstreamTls {
            hostname: hostname.into(),
            subject_alt_names: Vec::new(),
            trust: UpstreamTrust::Pem(vec![ca_pem.into()]),
            client_certificate: None,
        }
    }
}

/// Trust roots for verifying a backend's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpstreamTrust {
    /// The operating system's trust store (BackendTLSPolicy `wellKnownCACertificates: System`),
    /// read with `rustls-native-certs` (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`) when the
    /// settings are first used.
    System,
    /// PEM bundles, each holding one or more CA certificates (BackendTLSPolicy
    /// `caCertificateRefs`). A bundle without a usable certificate makes the backend unresolved.
    Pem(Vec<String>),
}

/// A subject alternative name a backend's certificate may be verified against.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubjectAltName {
    /// A DNS name (`dNSName` SAN), matched like `hostname` (wildcards in the certificate apply).
    Hostname(String),
    /// A URI (`uniformResourceIdentifier` SAN), e.g. a SPIFFE ID, compared exactly.
    Uri(String),
}

/// An external backend reached by DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsBackend {
    /// The name to resolve (A and AAAA).
    pub hostname: String,
    /// The port to connect to.
    pub port: u16,
    /// The upstream protocol.
    pub protocol: BackendProtocol,
    /// Load balancing, health, retry budget and session persistence of this backend.
    pub policy: BackendPolicy,
    /// TLS to the resolved addresses. `None`: plain TCP.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// The protocol spoken to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP (WebSocket upgrades pass through).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over TCP (`kubernetes.io/h2c`); over TLS
    /// ([`Backend::tls`]), HTTP/2 negotiated with ALPN `h2`.
    H2c,
    /// HTTP/1.1 for WebSocket (`kubernetes.io/ws`): upgrades pass through, idle connections are
    /// not cut by the backend request timeout once upgraded.
    WebSocket,
}

/// How a backend's endpoints are chosen and kept healthy. The defaults: round robin, passive
/// outlier ejection on, no active health checks, no retry budget, no session persistence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPolicy {
    /// The endpoint picker.
    pub load_balancer: LoadBalancer,
    /// Passive health: eject endpoints that fail in a row. `None`: never eject.
    pub outlier_detection: Option<OutlierDetection>,
    /// Active HTTP health checks. `None`: none.
    pub health_check: Option<HealthCheck>,
    /// Bounds retries to this backend. `None`: only the route's attempt count bounds them.
    pub retry_budget: Option<RetryBudget>,
    /// Sticky sessions for every rule using this backend that sets none of its own.
    pub session_persistence: Option<SessionPersistence>,
}

impl Default for BackendPolicy {
    fn default() -> Self {
        BackendPolicy {
            load_balancer: LoadBalancer::RoundRobin,
            outlier_detection: Some(OutlierDetection::default()),
            health_check: None,
            retry_budget: None,
            session_persistence: None,
        }
    }
}

/// The endpoint picker of a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancer {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices over in-flight request counts.
    LeastRequest,
    /// A picker registered with [`crate::Gateway::register_picker`] under this name.
    Custom(String),
}

/// Passive outlier ejection: an endpoint that fails `consecutive_failures` times in a row
/// (connection errors, resets, 5xx responses) is skipped for `base_ejection` times the number of
/// times it was ejected before (capped at `max_ejection`). The last usable endpoint of a backend is
/// never ejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length. Default 5 s.
    pub base_ejection: Duration,
    /// The longest ejection. Default 300 s.
    pub max_ejection: Duration,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// Active HTTP health checks: every `interval`, each endpoint gets `GET path`; a 2xx or 3xx answer
/// within `timeout` is a success. `unhealthy_threshold` failures in a row mark it unhealthy,
/// `healthy_threshold` successes in a row mark it healthy again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The path to request. Default `/`.
    pub path: String,
    /// The `Host` header to send. `None`: the endpoint address.
    pub host: Option<String>,
    /// Time between checks. Default 5 s.
    pub interval: Duration,
    /// Time a check may take. Default 1 s.
    pub timeout: Duration,
    /// Failures in a row that mark an endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// Successes in a row that mark it healthy again. Default 2.
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".into(),
            host: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// A retry budget (XBackendTrafficPolicy `retryConstraint`): retries to a backend may add at most
/// `percent` % to its requests over the last `interval`, but `min_retries_per_second` are always
/// allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// Retries as a percentage of requests. Default 20.
    pub percent: u32,
    /// The window the percentage is computed over. Default 10 s.
    pub interval: Duration,
    /// Retries per second allowed whatever the percentage. Default 10.
    pub min_retries_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            interval: Duration::from_secs(10),
            min_retries_per_second: 10,
        }
    }
}

impl BackendRef {
    /// A backend of one weight over plain HTTP/1.1 endpoints.
    pub fn endpoints(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Self {
        BackendRef {
            name: name.into(),
            weight: 1,
            target: BackendTarget::Endpoints(Backend::new(endpoints)),
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
            path_normalization: PathNormalization::default(),
            body_headers: Vec::new(),
            max_body_header_bytes: Listener::DEFAULT_MAX_BODY_HEADER_BYTES,
        }
    }

    /// Default of [`Listener::max_body_header_bytes`]: 64 KiB
    /// ([`crate::proxy::DEFAULT_BUFFERED_BODY`]).
    pub const DEFAULT_MAX_BODY_HEADER_BYTES: usize = crate::proxy::DEFAULT_BUFFERED_BODY;

    fn default_max_body_header_bytes() -> usize {
        Self::DEFAULT_MAX_BODY_HEADER_BYTES
    }

    /// Adds a header derived from the JSON request body before routing
    /// ([`Listener::body_headers`]).
    pub fn body_header(mut self, header: BodyHeader) -> Self {
        self.body_headers.push(header);
        self
    }

    /// Sets the hostname.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Adds a route.
    pub fn route(mut self, route: impl Into<Arc<Route>>) -> Self {
        self.routes.push(route.into());
        self
    }

    /// Sets how request paths are normalised ([`PathNormalization`]).
    pub fn path_normalization(mut self, path_normalization: PathNormalization) -> Self {
        self.path_normalization = path_normalization;
        self
    }
}
