//! The Gateway API `CORS` filter, compiled once per configuration.
//!
//! [`CompiledCors::compile`] runs when a configuration is applied: it validates the origins,
//! methods and header names and turns every fixed answer into a ready [`HeaderValue`]. On the
//! request path, [`CompiledCors::preflight`] answers preflights in `request_filter` and
//! [`CompiledCors::annotate`] adds the `Access-Control-*` headers to other responses in
//! `response_filter`; neither allocates except for the preflight response itself and the rare
//! answers that must echo the request.
//!
//! Choices where the Gateway API leaves room:
//!
//! - "Credentialed" is read as `allowCredentials: true`: a preflight never carries credentials, so
//!   the configuration is the only signal. With it, no `Access-Control-Allow-*` header is ever `*`.
//! - `allowOrigins: ["*"]` without credentials answers `Access-Control-Allow-Origin: *` on every
//!   response of the rule and adds no `Vary`, as Fetch's "CORS protocol and HTTP caches" advises for
//!   a static answer. Every other configuration answers per origin, so every response of the rule
//!   carries `Vary: Origin`, including those to requests whose origin is not allowed.
//! - `allowHeaders: ["*"]` echoes `Access-Control-Request-Headers` when the preflight has one, even
//!   without credentials, because a `*` answer does not cover `Authorization` in browsers. Without
//!   that header: `*`, or nothing when credentials are allowed.
//! - `exposeHeaders: ["*"]` with credentials lists the names of the headers the response actually
//!   carries; on a preflight there are none, so the header is omitted there.
//! - A preflight is always answered `204`. When the origin, the requested method or a requested
//!   header is not allowed, the answer carries no `Access-Control-Allow-*` header at all, so the
//!   browser fails the request (the API allows 204/200 without headers or 403).
//! - When the origin is not allowed, headers the backend set itself are left alone.

use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

/// `Access-Control-Max-Age` when the configuration sets none (the Gateway API default).
const DEFAULT_MAX_AGE: u32 = 5;

const ALLOW_ORIGIN: &str = "Access-Control-Allow-Origin";
const ALLOW_CREDENTIALS: &str = "Access-Control-Allow-Credentials";
const ALLOW_METHODS: &str = "Access-Control-Allow-Methods";
const ALLOW_HEADERS: &str = "Access-Control-Allow-Headers";
const EXPOSE_HEADERS: &str = "Access-Control-Expose-Headers";
const MAX_AGE: &str = "Access-Control-Max-Age";
const VARY: &str = "Vary";

/// The `CORS` filter of one rule, ready for the request path.
///
/// Built by [`CompiledCors::compile`] when a configuration is applied; shared read-only by every
/// request of the rule.
#[derive(Clone, Debug)]
pub(crate) struct CompiledCors {
    /// `None`: every origin (`*`). Otherwise the origins that are allowed.
    origins: Option<Box<[OriginPattern]>>,
    /// `allowCredentials`.
    credentials: bool,
    methods: AllowList,
    headers: AllowList,
    expose: AllowList,
    /// `Access-Control-Max-Age`.
    max_age: HeaderValue,
}

/// A configured list of methods or header names.
#[derive(Clone, Debug)]
enum AllowList {
    /// `*`.
    Any,
    /// The names (lower-cased for header names, as written for methods) and, unless the list is
    /// empty, the response header value listing them.
    Names {
        names: Box<[Box<str>]>,
        value: Option<HeaderValue>,
    },
}

/// One `allowOrigins` entry other than `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OriginPattern {
    https: bool,
    host: HostPattern,
    /// Explicit, or the scheme's default (80 or 443).
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `*`: every host.
    Any,
    /// This host, lower-cased.
    Exact(Box<str>),
    /// `*` followed by this lower-cased suffix: hosts that end with it after at least one more
    /// character (`*.example.com` matches `a.example.com` and `a.b.example.com`, not
    /// `example.com`).
    Suffix(Box<str>),
}

static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

impl CompiledCors {
    /// Validates `cfg` and precomputes its response headers. Runs when a configuration is applied.
    ///
    /// Errors name the offending entry: an origin that is not `*` or
    /// `http(s)://host[:port]` (the host may be `*` or start with `*`), a method that is not an
    /// HTTP token, a header name that is not valid. `*` next to other entries means `*`.
    /// `max_age` defaults to 5 seconds.
    pub(crate) fn compile(cfg: &crate::config::Cors) -> Result<Self, String> {
        let origins = if cfg.allow_origins.iter().any(|o| o == "*") {
            None
        } else {
            let patterns = cfg
                .allow_origins
                .iter()
                .map(|o| parse_pattern(o).ok_or_else(|| format!("invalid CORS origin {o:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            Some(patterns.into_boxed_slice())
        };
        for m in &cfg.allow_methods {
            if m != "*" && !crate::syntax::is_token(m) {
                return Err(format!("invalid CORS method {m:?}"));
            }
        }
        let methods = compile_list(&cfg.allow_methods, false);
        for h in cfg.allow_headers.iter().chain(&cfg.expose_headers) {
            if h != "*" && http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!("invalid CORS header name {h:?}"));
            }
        }
        let headers = compile_list(&cfg.allow_headers, true);
        let expose = compile_list(&cfg.expose_headers, true);
        let max_age = HeaderValue::from(cfg.max_age.unwrap_or(DEFAULT_MAX_AGE));
        Ok(CompiledCors {
            origins,
            credentials: cfg.allow_credentials,
            methods,
            headers,
            expose,
            max_age,
        })
    }

    /// Whether the answer is the same for every origin (`*` without credentials): then
    /// `Access-Control-Allow-Origin: *` goes on every response and no `Vary: Origin` is needed.
    fn is_static(&self) -> bool {
        self.origins.is_none() && !self.credentials
    }

    /// Whether the request's `Origin` value is allowed.
    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Some(patterns) = &self.origins else {
            return true;
        };
        let Some((https, host, port)) = origin.to_str().ok().and_then(split_origin) else {
            return false;
        };
        patterns
            .iter()
            .any(|p| p.https == https && p.port == port && p.host.matches(host))
    }

    /// The value of `Access-Control-Allow-Origin` for an allowed `origin`: `*` in the static
    /// case, otherwise the origin itself.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.is_static() {
            STAR.clone()
        } else {
            origin.clone()
        }
    }

    /// Answers a CORS preflight. Runs in `request_filter`, before a backend is chosen.
    ///
    /// `None` unless `req` is a preflight: `OPTIONS` with both `Origin` and
    /// `Access-Control-Request-Method`; other requests (including plain `OPTIONS`) go on to the
    /// backend. For a preflight the gateway answers `204` itself, with no body. The
    /// `Access-Control-Allow-*` and `Access-Control-Max-Age` headers are present only when the
    /// origin is allowed, the requested method is a CORS-safelisted one (`GET`, `HEAD`, `POST`)
    /// or allowed, and every name in `Access-Control-Request-Headers` is allowed
    /// (case-insensitively). `Vary: Origin` is set unless the answer is the same for every origin.
    pub(crate) fn preflight(&self, req: &RequestHeader) -> Option<ResponseHeader> {
        if req.method != http::Method::OPTIONS {
            return None;
        }
        let origin = req.headers.get(http::header::ORIGIN)?;
        let method = req
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let requested_headers = req
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS);

        let mut resp = ResponseHeader::build(204, Some(8)).ok()?;
        if !self.is_static() {
            let _ = resp.insert_header(VARY, ORIGIN.clone());
        }
        if !self.origin_allowed(origin)
            || !self.method_allowed(method.as_bytes())
            || !requested_headers.is_none_or(|h| self.headers_allowed(h.as_bytes()))
        {
            return Some(resp);
        }

        let _ = resp.insert_header(ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            let _ = resp.insert_header(ALLOW_CREDENTIALS, TRUE.clone());
        }
        match &self.methods {
            AllowList::Any if self.credentials => {
                let _ = resp.insert_header(ALLOW_METHODS, method.clone());
            }
            AllowList::Any => {
                let _ = resp.insert_header(ALLOW_METHODS, STAR.clone());
            }
            AllowList::Names { value, .. } => {
                if let Some(v) = value {
                    let _ = resp.insert_header(ALLOW_METHODS, v.clone());
                }
            }
        }
        match (&self.headers, requested_headers) {
            (AllowList::Any, Some(requested)) => {
                let _ = resp.insert_header(ALLOW_HEADERS, requested.clone());
            }
            (AllowList::Any, None) => {
                if !self.credentials {
                    let _ = resp.insert_header(ALLOW_HEADERS, STAR.clone());
                }
            }
            (AllowList::Names { value, .. }, _) => {
                if let Some(v) = value {
                    let _ = resp.insert_header(ALLOW_HEADERS, v.clone());
                }
            }
        }
        match &self.expose {
            // Nothing to list on a preflight: it has no response headers of interest.
            AllowList::Any if self.credentials => {}
            AllowList::Any => {
                let _ = resp.insert_header(EXPOSE_HEADERS, STAR.clone());
            }
            AllowList::Names { value, .. } => {
                if let Some(v) = value {
                    let _ = resp.insert_header(EXPOSE_HEADERS, v.clone());
                }
            }
        }
        let _ = resp.insert_header(MAX_AGE, self.max_age.clone());
        Some(resp)
    }

    /// Adds the CORS headers to the response of a request that was not a preflight. Runs in
    /// `response_filter`, for proxied and gateway-written responses alike.
    ///
    /// `origin` is the request's `Origin` header. When it is allowed, sets
    /// `Access-Control-Allow-Origin` (the origin itself, or `*` for `allowOrigins: ["*"]` without
    /// credentials), `Access-Control-Allow-Credentials: true` when credentials are allowed, and
    /// `Access-Control-Expose-Headers` when the configuration lists any, replacing what the backend
    /// sent under those names. With `allowOrigins: ["*"]` and no credentials, those headers go on
    /// every response, `Origin` or not. In every other configuration `Origin` is added to `Vary`
    /// (kept alongside the backend's `Vary` values) whether or not the origin is allowed.
    pub(crate) fn annotate(&self, origin: Option<&HeaderValue>, resp: &mut ResponseHeader) {
        let allow_origin = if self.is_static() {
            STAR.clone()
        } else {
            add_vary_origin(resp);
            match origin {
                Some(origin) if self.origin_allowed(origin) => origin.clone(),
                _ => return,
            }
        };
        let expose = match &self.expose {
            // `*` would not be honoured: list what this response carries (before our own headers).
            AllowList::Any if self.credentials => response_header_names(resp),
            AllowList::Any => Some(STAR.clone()),
            AllowList::Names { value, .. } => value.clone(),
        };
        let _ = resp.insert_header(ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            let _ = resp.insert_header(ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(expose) = expose {
            let _ = resp.insert_header(EXPOSE_HEADERS, expose);
        }
    }

    /// Whether a preflight's `Access-Control-Request-Method` is allowed. Method names are
    /// case-sensitive; the CORS-safelisted `GET`, `HEAD` and `POST` are always allowed.
    fn method_allowed(&self, method: &[u8]) -> bool {
        if matches!(method, b"GET" | b"HEAD" | b"POST") {
            return true;
        }
        match &self.methods {
            AllowList::Any => true,
            AllowList::Names { names, .. } => names.iter().any(|n| n.as_bytes() == method),
        }
    }

    /// Whether every name in a preflight's `Access-Control-Request-Headers` is allowed.
    fn headers_allowed(&self, requested: &[u8]) -> bool {
        let AllowList::Names { names, .. } = &self.headers else {
            return true;
        };
        requested
            .split(|&b| b == b',')
            .map(trim_ows)
            .filter(|h| !h.is_empty())
            .all(|h| names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(h)))
    }
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// Compiles a method or header-name list. `lower`: compare case-insensitively (header names).
fn compile_list(entries: &[String], lower: bool) -> AllowList {
    if entries.iter().any(|e| e == "*") {
        return AllowList::Any;
    }
    let value = (!entries.is_empty())
        .then(|| HeaderValue::from_str(&entries.join(", ")).ok())
        .flatten();
    let names = entries
        .iter()
        .map(|e| {
            if lower {
                e.to_ascii_lowercase().into_boxed_str()
            } else {
                e.clone().into_boxed_str()
            }
        })
        .collect();
    AllowList::Names { names, value }
}

/// Parses an `allowOrigins` entry other than `*`.
fn parse_pattern(origin: &str) -> Option<OriginPattern> {
    let (https, host, port) = split_origin(origin)?;
    let host = if host == "*" {
        HostPattern::Any
    } else if let Some(suffix) = host.strip_prefix('*') {
        if !valid_host(suffix) || suffix.starts_with('[') {
            return None;
        }
        HostPattern::Suffix(suffix.to_ascii_lowercase().into_boxed_str())
    } else {
        if !valid_host(host) {
            return None;
        }
        HostPattern::Exact(host.to_ascii_lowercase().into_boxed_str())
    };
    Some(OriginPattern { https, host, port })
}

/// Splits `scheme://host[:port]` into (is https, host, port with the scheme's default). `None`
/// for other schemes, a path, an empty host or a bad port. IPv6 hosts keep their brackets.
fn split_origin(origin: &str) -> Option<(bool, &str, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return None;
    };
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || (!host.starts_with('[') && host.contains(['/', '?', '#', '@', ':'])) {
        return None;
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(p) => p,
            }
        }
    };
    Some((https, host, port))
}

/// Host characters an `allowOrigins` entry may use: DNS names (letters, digits, `-`, `_`, `.`)
/// or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Strips optional whitespace (spaces and tabs) around a list element.
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let Some(start) = start else {
        return &[];
    };
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(start);
    &s[start..=end]
}

/// Adds `Origin` to the response's `Vary`, unless a `Vary` value already names it or is `*`.
fn add_vary_origin(resp: &mut ResponseHeader) {
    let covered = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(trim_ows)
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"origin"))
    });
    if !covered {
        let _ = resp.append_header(VARY, ORIGIN.clone());
    }
}

/// The distinct names of the response's headers, joined for `Access-Control-Expose-Headers`
/// (`Vary` aside: it is meaningless to scripts).
fn response_header_names(resp: &ResponseHeader) -> Option<HeaderValue> {
    let mut joined = String::new();
    for name in resp.headers.keys().filter(|n| *n != http::header::VARY) {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(name.as_str());
    }
    if joined.is_empty() {
        None
    } else {
        HeaderValue::from_str(&joined).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cors;

    fn cors(
        origins: &[&str],
        methods: &[&str],
        headers: &[&str],
        expose: &[&str],
        credentials: bool,
        max_age: Option<u32>,
    ) -> CompiledCors {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        CompiledCors::compile(&Cors {
            allow_origins: list(origins),
            allow_methods: list(methods),
            allow_headers: list(headers),
            expose_headers: list(expose),
            allow_credentials: credentials,
            max_age,
        })
        .unwrap()
    }

    /// `cors-1` of the conformance suite.
    fn cors1() -> CompiledCors {
        cors(
            &["https://www.foo.com", "https://*.bar.com"],
            &["GET", "OPTIONS"],
            &["x-header-1", "x-header-2"],
            &["x-header-3", "x-header-4"],
            true,
            Some(3600),
        )
    }

    /// `cors-2`.
    fn cors2() -> CompiledCors {
        cors(&["https://www.foo.com"], &["*"], &[], &[], false, None)
    }

    /// `cors-wildcard-origin`.
    fn wildcard_origin() -> CompiledCors {
        cors(&["*"], &["PUT"], &[], &[], false, None)
    }

    /// `cors-wildcard-methods-headers` (`credentials`) and `...-unauth` (not).
    fn wildcard_all(credentials: bool) -> CompiledCors {
        cors(&["*"], &["*"], &["*"], &[], credentials, None)
    }

    fn request(method: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/cors", None).unwrap();
        for (name, value) in headers {
            req.append_header(*name, *value).unwrap();
        }
        req
    }

    fn preflight(c: &CompiledCors, headers: &[(&'static str, &str)]) -> ResponseHeader {
        let resp = c
            .preflight(&request("OPTIONS", headers))
            .expect("a preflight is answered");
        assert!(matches!(resp.status.as_u16(), 200 | 204));
        resp
    }

    /// The response of a simple request with `origin`, from a backend that sent `headers`.
    fn simple(
        c: &CompiledCors,
        origin: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            resp.append_header(*name, *value).unwrap();
        }
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        c.annotate(origin.as_ref(), &mut resp);
        resp
    }

    fn get<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        resp.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn all<'a>(resp: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
        resp.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    fn no_allow_headers(resp: &ResponseHeader) {
        for name in [
            ALLOW_ORIGIN,
            ALLOW_CREDENTIALS,
            ALLOW_METHODS,
            ALLOW_HEADERS,
            EXPOSE_HEADERS,
            MAX_AGE,
        ] {
            assert_eq!(get(resp, name), None, "{name}");
        }
    }

    // ---- cases.tsv, HTTPRouteCORS ----

    #[test]
    fn conformance_cors1_preflight_from_allowed_origins() {
        let c = cors1();
        for origin in [
            "https://www.foo.com",
            "https://www.bar.com",
            "https://xpto.www.bar.com",
        ] {
            let resp = preflight(
                &c,
                &[
                    ("Origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
            );
            assert_eq!(get(&resp, ALLOW_ORIGIN), Some(origin));
            assert_eq!(get(&resp, ALLOW_METHODS), Some("GET, OPTIONS"));
            assert_eq!(get(&resp, ALLOW_HEADERS), Some("x-header-1, x-header-2"));
            assert_eq!(get(&resp, EXPOSE_HEADERS), Some("x-header-3, x-header-4"));
            assert_eq!(get(&resp, MAX_AGE), Some("3600"));
            assert_eq!(get(&resp, ALLOW_CREDENTIALS), Some("true"));
            assert_eq!(get(&resp, VARY), Some("Origin"));
        }
    }

    #[test]
    fn conformance_cors1_preflight_from_other_origin() {
        let resp = preflight(
            &cors1(),
            &[
                ("Origin", "https://foobar.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        no_allow_headers(&resp);
        assert_eq!(get(&resp, VARY), Some("Origin"));
    }

    #[test]
    fn conformance_cors1_simple_requests() {
        let c = cors1();
        for origin in ["https://www.foo.com", "https://www.bar.com"] {
            let resp = simple(&c, Some(origin), &[]);
            assert_eq!(get(&resp, ALLOW_ORIGIN), Some(origin));
            assert_eq!(get(&resp, ALLOW_CREDENTIALS), Some("true"));
            assert_eq!(get(&resp, EXPOSE_HEADERS), Some("x-header-3, x-header-4"));
            assert_eq!(get(&resp, VARY), Some("Origin"));
            assert_eq!(get(&resp, MAX_AGE), None);
            assert_eq!(get(&resp, ALLOW_METHODS), None);
        }
        let resp = simple(&c, Some("https://foobar.com"), &[]);
        no_allow_headers(&resp);
        assert_eq!(get(&resp, VARY), Some("Origin"));
    }

    #[test]
    fn conformance_cors2_wildcard_methods_without_credentials() {
        let resp = preflight(
            &cors2(),
            &[
                ("Origin", "https://www.foo.com"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://www.foo.com"));
        assert!(matches!(get(&resp, ALLOW_METHODS), Some("POST" | "*")));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);
        assert_eq!(get(&resp, MAX_AGE), Some("5"));
    }

    #[test]
    fn conformance_wildcard_origin() {
        let c = wildcard_origin();
        for origin in ["https://foobar.com", "https://foobar.com:12345"] {
            let resp = preflight(
                &c,
                &[("Origin", origin), ("access-control-request-method", "PUT")],
            );
            let allowed = get(&resp, ALLOW_ORIGIN);
            assert!(allowed == Some(origin) || allowed == Some("*"));
            assert_eq!(get(&resp, ALLOW_METHODS), Some("PUT"));
            assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);

            let resp = simple(&c, Some(origin), &[]);
            let allowed = get(&resp, ALLOW_ORIGIN);
            assert!(allowed == Some(origin) || allowed == Some("*"));
            assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);
        }
    }

    #[test]
    fn conformance_wildcard_methods_headers_with_credentials() {
        let c = wildcard_all(true);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://other.foo.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://other.foo.com"));
        assert_eq!(get(&resp, ALLOW_METHODS), Some("PUT"));
        assert_eq!(get(&resp, ALLOW_HEADERS), Some("x-header-1, x-header-2"));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(&resp, VARY), Some("Origin"));

        let resp = simple(&c, Some("https://other.foo.com"), &[]);
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://other.foo.com"));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), Some("true"));
    }

    #[test]
    fn conformance_wildcard_methods_headers_without_credentials() {
        let c = wildcard_all(false);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://other.foo.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        );
        assert!(matches!(
            get(&resp, ALLOW_ORIGIN),
            Some("https://other.foo.com" | "*")
        ));
        assert!(matches!(get(&resp, ALLOW_METHODS), Some("PUT" | "*")));
        assert!(matches!(
            get(&resp, ALLOW_HEADERS),
            Some("x-header-1, x-header-2" | "*")
        ));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);

        let resp = simple(&c, Some("https://other.foo.com"), &[]);
        assert!(matches!(
            get(&resp, ALLOW_ORIGIN),
            Some("https://other.foo.com" | "*")
        ));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);
    }

    // ---- preflight detection ----

    #[test]
    fn only_options_with_origin_and_request_method_is_a_preflight() {
        let c = cors1();
        let origin = ("Origin", "https://www.foo.com");
        let method = ("access-control-request-method", "GET");
        assert!(c.preflight(&request("GET", &[origin, method])).is_none());
        assert!(c.preflight(&request("OPTIONS", &[origin])).is_none());
        assert!(c.preflight(&request("OPTIONS", &[method])).is_none());
        assert!(c.preflight(&request("OPTIONS", &[])).is_none());
        assert!(
            c.preflight(&request("OPTIONS", &[origin, method]))
                .is_some()
        );
    }

    // ---- allowMethods ----

    #[test]
    fn requested_method_must_be_safelisted_or_allowed() {
        let c = cors(&["https://a.com"], &["PUT"], &[], &[], false, None);
        let ask = |m| {
            preflight(
                &c,
                &[
                    ("Origin", "https://a.com"),
                    ("access-control-request-method", m),
                ],
            )
        };
        for m in ["GET", "HEAD", "POST", "PUT"] {
            let resp = ask(m);
            assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://a.com"), "{m}");
            assert_eq!(get(&resp, ALLOW_METHODS), Some("PUT"), "{m}");
        }
        // Case-sensitive, and not listed.
        no_allow_headers(&ask("put"));
        no_allow_headers(&ask("DELETE"));
    }

    #[test]
    fn empty_allow_methods_allows_only_safelisted_and_sends_no_methods_header() {
        let c = cors(&["https://a.com"], &[], &[], &[], false, None);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://a.com"));
        assert_eq!(get(&resp, ALLOW_METHODS), None);
        assert_eq!(get(&resp, ALLOW_HEADERS), None);
        assert_eq!(get(&resp, EXPOSE_HEADERS), None);
        assert_eq!(get(&resp, MAX_AGE), Some("5"));
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "PATCH"),
            ],
        );
        no_allow_headers(&resp);
    }

    #[test]
    fn wildcard_methods_with_credentials_echo_the_requested_method() {
        let c = cors(&["https://a.com"], &["*"], &[], &[], true, None);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "PATCH"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_METHODS), Some("PATCH"));
        let c = cors(&["https://a.com"], &["*"], &[], &[], false, None);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "PATCH"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_METHODS), Some("*"));
    }

    // ---- allowHeaders ----

    #[test]
    fn requested_headers_must_all_be_allowed_case_insensitively() {
        let c = cors(
            &["https://a.com"],
            &[],
            &["X-Token", "content-type"],
            &[],
            false,
            None,
        );
        let ask = |h| {
            preflight(
                &c,
                &[
                    ("Origin", "https://a.com"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", h),
                ],
            )
        };
        for ok in [
            "x-token",
            "X-TOKEN,Content-Type",
            " x-token ,\tcontent-type ",
            "",
            " , ",
        ] {
            let resp = ask(ok);
            assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://a.com"), "{ok:?}");
            assert_eq!(get(&resp, ALLOW_HEADERS), Some("X-Token, content-type"));
        }
        no_allow_headers(&ask("x-token, x-other"));
        no_allow_headers(&ask("x-tok"));
    }

    #[test]
    fn empty_allow_headers_rejects_any_requested_header() {
        let c = cors(&["https://a.com"], &[], &[], &[], false, None);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-a"),
            ],
        );
        no_allow_headers(&resp);
    }

    #[test]
    fn wildcard_headers_without_request_headers() {
        let ask = |c: &CompiledCors| {
            preflight(
                c,
                &[
                    ("Origin", "https://a.com"),
                    ("access-control-request-method", "GET"),
                ],
            )
        };
        let with = cors(&["https://a.com"], &[], &["*"], &[], true, None);
        let resp = ask(&with);
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://a.com"));
        assert_eq!(get(&resp, ALLOW_HEADERS), None);
        let without = cors(&["https://a.com"], &[], &["*"], &[], false, None);
        assert_eq!(get(&ask(&without), ALLOW_HEADERS), Some("*"));
    }

    #[test]
    fn wildcard_headers_echo_authorization_even_without_credentials() {
        let c = wildcard_all(false);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        );
        assert_eq!(get(&resp, ALLOW_HEADERS), Some("authorization"));
    }

    // ---- exposeHeaders ----

    #[test]
    fn wildcard_expose_headers() {
        let without = cors(&["https://a.com"], &[], &[], &["*"], false, None);
        let resp = simple(&without, Some("https://a.com"), &[("x-one", "1")]);
        assert_eq!(get(&resp, EXPOSE_HEADERS), Some("*"));

        let with = cors(&["https://a.com"], &[], &[], &["*"], true, None);
        let resp = simple(
            &with,
            Some("https://a.com"),
            &[("x-one", "1"), ("x-two", "2"), ("x-one", "3")],
        );
        assert_eq!(get(&resp, EXPOSE_HEADERS), Some("x-one, x-two"));
        let resp = preflight(
            &with,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert_eq!(get(&resp, EXPOSE_HEADERS), None);
    }

    // ---- allowCredentials ----

    #[test]
    fn credentials_header_only_when_enabled() {
        let resp = simple(&cors2(), Some("https://www.foo.com"), &[]);
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("https://www.foo.com"));
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), None);
        let resp = simple(&cors1(), Some("https://www.foo.com"), &[]);
        assert_eq!(get(&resp, ALLOW_CREDENTIALS), Some("true"));
    }

    #[test]
    fn wildcard_origin_with_credentials_echoes_and_varies() {
        let c = cors(&["*"], &[], &[], &[], true, None);
        let resp = simple(&c, Some("null"), &[]);
        assert_eq!(get(&resp, ALLOW_ORIGIN), Some("null"));
        assert_eq!(get(&resp, VARY), Some("Origin"));
        let resp = simple(&c, None, &[]);
        no_allow_headers(&resp);
        assert_eq!(get(&resp, VARY), Some("Origin"));
    }

    // ---- maxAge ----

    #[test]
    fn max_age_default_and_configured() {
        let ask = |c: &CompiledCors| {
            let resp = preflight(
                c,
                &[
                    ("Origin", "https://a.com"),
                    ("access-control-request-method", "GET"),
                ],
            );
            get(&resp, MAX_AGE).map(str::to_owned)
        };
        assert_eq!(
            ask(&cors(&["https://a.com"], &[], &[], &[], false, None)),
            Some("5".into())
        );
        assert_eq!(
            ask(&cors(&["https://a.com"], &[], &[], &[], false, Some(86400))),
            Some("86400".into())
        );
    }

    // ---- allowOrigins ----

    #[test]
    fn origin_matching() {
        let c = cors(
            &[
                "https://www.foo.com",
                "HTTP://Mixed.Example.COM:8080",
                "https://*.bar.com",
                "http://*",
                "https://[2001:db8::1]:8443",
            ],
            &[],
            &[],
            &[],
            false,
            None,
        );
        let allowed = |o: &str| c.origin_allowed(&HeaderValue::from_str(o).unwrap());
        // Exact, case-insensitive scheme and host, default port.
        assert!(allowed("https://www.foo.com"));
        assert!(allowed("https://WWW.FOO.COM"));
        assert!(allowed("HTTPS://www.foo.com"));
        assert!(allowed("https://www.foo.com:443"));
        assert!(!allowed("https://www.foo.com:8443"));
        assert!(!allowed("https://foo.com"));
        assert!(!allowed("https://www.foo.com.evil.com"));
        assert!(allowed("http://mixed.example.com:8080"));
        assert!(!allowed("https://mixed.example.com:8080"));
        // Wildcard host: one or more labels, never the bare domain or another domain.
        assert!(allowed("https://a.bar.com"));
        assert!(allowed("https://a.b.c.BAR.com"));
        assert!(!allowed("https://bar.com"));
        assert!(!allowed("https://foobar.com"));
        assert!(!allowed("https://a.bar.com:8443"));
        // `http://*`: every host on port 80.
        assert!(allowed("http://anything.example"));
        assert!(allowed("http://anything.example:80"));
        assert!(!allowed("http://anything.example:81"));
        // IPv6.
        assert!(allowed("https://[2001:db8::1]:8443"));
        assert!(!allowed("https://[2001:db8::1]"));
        // Not origins.
        for bad in [
            "null",
            "",
            "https://",
            "ftp://www.foo.com",
            "https://www.foo.com:0",
            "https://www.foo.com:x",
        ] {
            assert!(!allowed(bad), "{bad:?}");
        }
    }

    #[test]
    fn origin_port_must_match_exactly_when_given() {
        let c = cors(&["http://localhost:3000"], &[], &[], &[], false, None);
        let allowed = |o: &str| c.origin_allowed(&HeaderValue::from_str(o).unwrap());
        assert!(allowed("http://localhost:3000"));
        assert!(!allowed("http://localhost"));
        assert!(!allowed("http://localhost:30000"));
    }

    #[test]
    fn wildcard_origin_without_credentials_is_static() {
        let c = wildcard_origin();
        // `*` on every response, Origin or not, and no Vary.
        for origin in [Some("https://x.com"), None] {
            let resp = simple(&c, origin, &[]);
            assert_eq!(get(&resp, ALLOW_ORIGIN), Some("*"));
            assert_eq!(get(&resp, VARY), None);
        }
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://x.com"),
                ("access-control-request-method", "PUT"),
            ],
        );
        assert_eq!(get(&resp, VARY), None);
    }

    // ---- Vary ----

    #[test]
    fn vary_is_merged_with_the_backends() {
        let c = cors1();
        let resp = simple(
            &c,
            Some("https://www.foo.com"),
            &[("vary", "Accept-Encoding")],
        );
        assert_eq!(all(&resp, VARY), ["Accept-Encoding", "Origin"]);
        let resp = simple(
            &c,
            Some("https://www.foo.com"),
            &[("vary", "accept, origin")],
        );
        assert_eq!(all(&resp, VARY), ["accept, origin"]);
        let resp = simple(&c, Some("https://www.foo.com"), &[("vary", "*")]);
        assert_eq!(all(&resp, VARY), ["*"]);
        // No Origin: not a CORS request, but the answer still depends on it.
        let resp = simple(&c, None, &[]);
        no_allow_headers(&resp);
        assert_eq!(all(&resp, VARY), ["Origin"]);
    }

    #[test]
    fn allowed_origin_replaces_backend_cors_headers() {
        let c = cors1();
        let resp = simple(
            &c,
            Some("https://www.foo.com"),
            &[("access-control-allow-origin", "*")],
        );
        assert_eq!(all(&resp, ALLOW_ORIGIN), ["https://www.foo.com"]);
        // A disallowed origin leaves the backend's answer alone.
        let resp = simple(
            &c,
            Some("https://evil.com"),
            &[("access-control-allow-origin", "https://evil.com")],
        );
        assert_eq!(all(&resp, ALLOW_ORIGIN), ["https://evil.com"]);
    }

    // ---- compile ----

    #[test]
    fn compile_rejects_invalid_entries() {
        let bad_origin = |o: &str| {
            CompiledCors::compile(&Cors {
                allow_origins: vec![o.into()],
                ..Cors::default()
            })
            .is_err()
        };
        for o in [
            "www.foo.com",
            "ftp://foo.com",
            "https://",
            "https://foo.com/",
            "https://foo.com/path",
            "https://foo.com:0",
            "https://foo.com:65536",
            "https://foo.com:",
            "https://foo.*.com",
            "https://**.foo.com",
            "https://foo com",
            "https://[::1",
            "https://[nope]",
            "https://user@foo.com",
        ] {
            assert!(bad_origin(o), "{o:?} should be rejected");
        }
        for o in [
            "*",
            "https://*",
            "http://*.foo.com:8080",
            "https://[::1]:8443",
            "https://foo.com",
        ] {
            assert!(!bad_origin(o), "{o:?} should be accepted");
        }
        assert!(
            CompiledCors::compile(&Cors {
                allow_methods: vec!["GET POST".into()],
                ..Cors::default()
            })
            .is_err()
        );
        assert!(
            CompiledCors::compile(&Cors {
                allow_headers: vec!["x header".into()],
                ..Cors::default()
            })
            .is_err()
        );
        assert!(
            CompiledCors::compile(&Cors {
                expose_headers: vec!["x:y".into()],
                ..Cors::default()
            })
            .is_err()
        );
    }

    #[test]
    fn star_next_to_other_entries_means_star() {
        let c = cors(
            &["https://a.com", "*"],
            &["GET", "*"],
            &[],
            &[],
            false,
            None,
        );
        assert!(c.origins.is_none());
        assert!(matches!(c.methods, AllowList::Any));
    }

    #[test]
    fn no_origins_allows_nothing() {
        let c = cors(&[], &["*"], &["*"], &[], false, None);
        let resp = preflight(
            &c,
            &[
                ("Origin", "https://a.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        no_allow_headers(&resp);
        no_allow_headers(&simple(&c, Some("https://a.com"), &[]));
    }
}
