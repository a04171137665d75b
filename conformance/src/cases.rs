//! `cases.tsv` (one row per traffic assertion) and the table of tests the harness knows.

use serde_json::Value;

use crate::error::{Error, Result};

/// How the client talks to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
    /// HTTPS with HTTP/1.1 (ALPN `http/1.1`).
    Https,
    /// HTTPS with HTTP/2 (ALPN `h2`).
    HttpsH2,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Scheme::Http),
            "h2c-prior-knowledge" => Some(Scheme::H2c),
            "https" => Some(Scheme::Https),
            "https(h2)" => Some(Scheme::HttpsH2),
            _ => None,
        }
    }

    /// The URL scheme (`http` or `https`).
    pub fn url_scheme(self) -> &'static str {
        match self {
            Scheme::Http | Scheme::H2c => "http",
            Scheme::Https | Scheme::HttpsH2 => "https",
        }
    }

    /// The gateway listener port this scheme addresses by default (80 or 443).
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::H2c => 80,
            Scheme::Https | Scheme::HttpsH2 => 443,
        }
    }
}

/// The `expected_status` column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedStatus {
    /// Any of these codes.
    AnyOf(Vec<u16>),
    /// `!200`: any failure (any code but 200).
    Not200,
}

impl ExpectedStatus {
    /// Whether `code` is acceptable.
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            ExpectedStatus::AnyOf(codes) => codes.contains(&code),
            ExpectedStatus::Not200 => code != 200,
        }
    }

    /// Whether a 408/504 timeout code is among the expectations (§2.4 rule 1).
    pub fn expects_timeout(&self) -> bool {
        match self {
            ExpectedStatus::AnyOf(codes) => codes.iter().any(|c| *c == 408 || *c == 504),
            ExpectedStatus::Not200 => false,
        }
    }
}

/// A mirror expectation: `namespace/service[@percent%]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// Namespace of the mirror Service.
    pub namespace: String,
    /// Mirror Service name (pod-name prefix).
    pub name: String,
    /// Percentage of requests mirrored; `None` for all.
    pub percent: Option<f64>,
}

/// One row of `cases.tsv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// 1-based line number in the TSV.
    pub line: usize,
    /// Upstream test short name.
    pub test: String,
    /// Gateway name (in the infra namespace).
    pub gateway: String,
    /// Listener sectionNames named in the `gateway[listeners]` column.
    pub listeners: Vec<String>,
    /// Client protocol.
    pub scheme: Scheme,
    /// Host to send (may carry a port); empty means the gateway address.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// Request path, possibly with a query and `<fresh-uuid-per-probe>` placeholders.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Acceptable statuses.
    pub status: ExpectedStatus,
    /// Pod-name prefix of the backend (checked on 2xx).
    pub backend: String,
    /// Backend namespace (checked on 2xx).
    pub namespace: String,
    /// Host the backend must see; empty: not checked.
    pub backend_host: String,
    /// Path the backend must see; empty: the request path.
    pub backend_path: String,
    /// Headers the backend must see (values comma-joined).
    pub backend_headers: Vec<(String, String)>,
    /// Headers the backend must not see.
    pub backend_absent: Vec<String>,
    /// Response headers that must be present with these values.
    pub response_headers: Vec<(String, String)>,
    /// Response headers that must have one of several values.
    pub response_alternatives: Vec<(String, Vec<String>)>,
    /// Response headers that must be absent.
    pub response_absent: Vec<String>,
    /// Expected `Location` (`scheme://host[:port]/path`, host `*` = any).
    pub redirect: Option<String>,
    /// Mirror expectations.
    pub mirrored_to: Vec<Mirror>,
    /// Headers the echo server is told to emit via `X-Echo-Set-Header`.
    pub echo_set: Vec<(String, String)>,
    /// Upstream test case name.
    pub case_name: String,
    /// Free-form notes (may carry `TLS SNI=...`).
    pub notes: String,
    /// Upstream subtest name.
    pub subtest: String,
}

impl Case {
    /// The TLS server name to send: `TLS SNI=` from the notes, else the host without port.
    pub fn sni(&self) -> String {
        if let Some(rest) = self.notes.split("TLS SNI=").nth(1) {
            let end = rest.find([';', ' ']).unwrap_or(rest.len());
            return rest[..end].to_string();
        }
        strip_port(&self.host).to_string()
    }

    /// A `key=value` note (the notes are `;`-separated); `key` must start the item, so
    /// `SNI=` does not match inside `TLS SNI=`.
    fn note(&self, key: &str) -> Option<&str> {
        self.notes
            .split(';')
            .map(str::trim)
            .find_map(|item| item.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    }

    /// The TLS server name the backend must have seen (upstream `ExpectedRequest.SNI`, which
    /// defaults to `Request.SNI`): `backendSNI=` from the notes, else `SNI=`; empty when
    /// neither is given (not checked).
    pub fn backend_sni(&self) -> String {
        self.note("backendSNI")
            .or_else(|| self.note("SNI"))
            .unwrap_or("")
            .to_string()
    }

    /// Whether the row is upstream `MakeRequestAndExpectFailure` (`failure-expected` in the
    /// notes, or status `!200`): any response but a 200 (or a timeout) counts, 5 in a row.
    pub fn expects_failure(&self) -> bool {
        self.status == ExpectedStatus::Not200
            || self
                .notes
                .split(';')
                .any(|n| n.trim().starts_with("failure-expected"))
    }

    /// A short description for failure reports.
    pub fn describe(&self) -> String {
        let host = if self.host.is_empty() {
            String::new()
        } else {
            format!(" host={}", self.host)
        };
        format!(
            "line {}: {} {}{}{}",
            self.line,
            self.method,
            self.path,
            host,
            if self.headers.is_empty() {
                String::new()
            } else {
                format!(" headers={:?}", self.headers)
            }
        )
    }
}

/// `host:port` → `host` (IPv6 literals in brackets are kept whole).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn table_err(line: usize, message: impl Into<String>) -> Error {
    Error::Table {
        what: format!("cases.tsv line {line}"),
        message: message.into(),
    }
}

fn json_field(line: usize, col: &str, raw: &str) -> Result<Option<Value>> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(raw)
        .map(Some)
        .map_err(|e| table_err(line, format!("column {col}: invalid JSON: {e}")))
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_string).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn json_map(line: usize, col: &str, raw: &str) -> Result<Vec<(String, String)>> {
    match json_field(line, col, raw)? {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| (k.clone(), value_string(v)))
            .collect()),
        Some(_) => Err(table_err(
            line,
            format!("column {col}: expected a JSON object"),
        )),
    }
}

fn json_list(line: usize, col: &str, raw: &str) -> Result<Vec<String>> {
    match json_field(line, col, raw)? {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.iter().map(value_string).collect()),
        Some(_) => Err(table_err(
            line,
            format!("column {col}: expected a JSON list"),
        )),
    }
}

fn json_alternatives(line: usize, col: &str, raw: &str) -> Result<Vec<(String, Vec<String>)>> {
    match json_field(line, col, raw)? {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| {
                let alts = match v {
                    Value::Array(items) => items.iter().map(value_string).collect(),
                    other => vec![value_string(other)],
                };
                (k.clone(), alts)
            })
            .collect()),
        Some(_) => Err(table_err(
            line,
            format!("column {col}: expected a JSON object"),
        )),
    }
}

fn parse_status(line: usize, raw: &str) -> Result<ExpectedStatus> {
    let raw = raw.trim();
    if raw == "!200" {
        return Ok(ExpectedStatus::Not200);
    }
    if raw.is_empty() {
        return Ok(ExpectedStatus::AnyOf(vec![200]));
    }
    raw.split(',')
        .map(|c| {
            c.trim()
                .parse::<u16>()
                .map_err(|_| table_err(line, format!("invalid expected_status {raw:?}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(ExpectedStatus::AnyOf)
}

fn parse_mirror(line: usize, raw: &str) -> Result<Vec<Mirror>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(|item| {
            let (target, percent) = match item.split_once('@') {
                Some((t, p)) => {
                    let p = p.trim_end_matches('%').parse::<f64>().map_err(|_| {
                        table_err(line, format!("invalid mirror percentage in {item:?}"))
                    })?;
                    (t, Some(p))
                }
                None => (item, None),
            };
            let (namespace, name) = target
                .split_once('/')
                .ok_or_else(|| table_err(line, format!("mirror {item:?} is not namespace/name")))?;
            Ok(Mirror {
                namespace: namespace.trim().to_string(),
                name: name.trim().to_string(),
                percent,
            })
        })
        .collect()
}

/// `gw[l1,l2]` → (`gw`, [`l1`, `l2`]).
fn parse_gateway(raw: &str) -> (String, Vec<String>) {
    match raw.split_once('[') {
        Some((gw, rest)) => (
            gw.trim().to_string(),
            rest.trim_end_matches(']')
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        None => (raw.trim().to_string(), Vec::new()),
    }
}

/// Parses `cases.tsv`. Columns are found by their header names (README.md), so extra columns
/// are tolerated; a missing required column is an error.
pub fn parse_cases(text: &str) -> Result<Vec<Case>> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split('\t').collect())
        .ok_or_else(|| table_err(1, "empty file"))?;
    let col = |name: &str| -> Result<usize> {
        header
            .iter()
            .position(|h| *h == name || h.starts_with(&format!("{name}(")))
            .ok_or_else(|| table_err(1, format!("missing column {name}")))
    };
    let idx = [
        col("test")?,
        col("gateway[listeners]")?,
        col("scheme")?,
        col("request_host")?,
        col("method")?,
        col("request_path")?,
        col("request_headers")?,
        col("expected_status")?,
        col("expected_backend")?,
        col("expected_namespace")?,
        col("backend_sees_host")?,
        col("backend_sees_path")?,
        col("backend_sees_headers")?,
        col("backend_absent_headers")?,
        col("response_headers")?,
        col("response_header_alternatives")?,
        col("response_absent_headers")?,
        col("redirect_location")?,
        col("mirrored_to")?,
        col("echo_set_response_headers")?,
        col("case_name")?,
        col("notes")?,
        col("subtest")?,
    ];
    let mut cases = Vec::new();
    for (i, raw) in lines {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split('\t').collect();
        let f = |k: usize| fields.get(idx[k]).copied().unwrap_or("");
        let (gateway, listeners) = parse_gateway(f(1));
        let scheme = Scheme::parse(f(2).trim())
            .ok_or_else(|| table_err(line, format!("unknown scheme {:?}", f(2))))?;
        let method = if f(4).trim().is_empty() {
            "GET".to_string()
        } else {
            f(4).trim().to_string()
        };
        let redirect = Some(f(17).trim().to_string()).filter(|s| !s.is_empty());
        cases.push(Case {
            line,
            test: f(0).trim().to_string(),
            gateway,
            listeners,
            scheme,
            host: f(3).trim().to_string(),
            method,
            path: f(5).trim().to_string(),
            headers: json_map(line, "request_headers", f(6))?,
            status: parse_status(line, f(7))?,
            backend: f(8).trim().to_string(),
            namespace: f(9).trim().to_string(),
            backend_host: f(10).trim().to_string(),
            backend_path: f(11).trim().to_string(),
            backend_headers: json_map(line, "backend_sees_headers", f(12))?,
            backend_absent: json_list(line, "backend_absent_headers", f(13))?,
            response_headers: json_map(line, "response_headers", f(14))?,
            response_alternatives: json_alternatives(line, "response_header_alternatives", f(15))?,
            response_absent: json_list(line, "response_absent_headers", f(16))?,
            redirect,
            mirrored_to: parse_mirror(line, f(18))?,
            echo_set: json_map(line, "echo_set_response_headers", f(19))?,
            case_name: f(20).trim().to_string(),
            notes: f(21).trim().to_string(),
            subtest: f(22).trim().to_string(),
        });
    }
    Ok(cases)
}

/// What decides a test's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// Traffic rows from `cases.tsv` (after the Accepted/Programmed preconditions), possibly
    /// with extra status checks.
    Traffic,
    /// Status conditions only.
    Status,
    /// A WebSocket through the gateway (HTTPRouteBackendProtocolWebSocket; no rows).
    WebSocket,
    /// Frontend client-certificate validation: probes with and without client certificates,
    /// transcribed in `frontend.rs` (the rows name neither the Gateway nor the certificate).
    ClientCert,
}

/// One upstream test the harness can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestSpec {
    /// Upstream short name.
    pub name: &'static str,
    /// Its manifests under `tests/`.
    pub files: &'static [&'static str],
    /// Traffic or status.
    pub kind: TestKind,
    /// Why the harness cannot run it (it is then reported as skipped).
    pub unsupported: Option<&'static str>,
}

const fn t(name: &'static str, files: &'static [&'static str]) -> TestSpec {
    TestSpec {
        name,
        files,
        kind: TestKind::Traffic,
        unsupported: None,
    }
}

const fn s(name: &'static str, files: &'static [&'static str]) -> TestSpec {
    TestSpec {
        name,
        files,
        kind: TestKind::Status,
        unsupported: None,
    }
}

const fn skip(name: &'static str, files: &'static [&'static str], why: &'static str) -> TestSpec {
    TestSpec {
        name,
        files,
        kind: TestKind::Traffic,
        unsupported: Some(why),
    }
}

const fn ws(name: &'static str, files: &'static [&'static str]) -> TestSpec {
    TestSpec {
        name,
        files,
        kind: TestKind::WebSocket,
        unsupported: None,
    }
}

const fn cc(name: &'static str, files: &'static [&'static str]) -> TestSpec {
    TestSpec {
        name,
        files,
        kind: TestKind::ClientCert,
        unsupported: None,
    }
}

/// Every HTTP/HTTPS test of `cases.tsv`, the WebSocket test, and the status-only
/// Gateway/HTTPRoute tests.
pub const TESTS: &[TestSpec] = &[
    t("HTTPRoute303Redirect", &["httproute-303-redirect.yaml"]),
    t("HTTPRoute307Redirect", &["httproute-307-redirect.yaml"]),
    t("HTTPRoute308Redirect", &["httproute-308-redirect.yaml"]),
    t(
        "HTTPRouteBackendProtocolH2C",
        &["httproute-backend-protocol-h2c.yaml"],
    ),
    ws(
        "HTTPRouteBackendProtocolWebSocket",
        &["httproute-backend-protocol-websocket.yaml"],
    ),
    t(
        "HTTPRouteBackendRequestRedirect",
        &["httproute-backend-request-redirect.yaml"],
    ),
    t(
        "HTTPRouteBackendURLRewrite",
        &["httproute-backend-url-rewrite.yaml"],
    ),
    t("HTTPRouteCORS", &["httproute-cors.yaml"]),
    t(
        "HTTPRouteCrossNamespace",
        &["httproute-cross-namespace.yaml"],
    ),
    t(
        "HTTPRouteExactPathMatching",
        &["httproute-exact-path-matching.yaml"],
    ),
    t("HTTPRouteHTTPSListener", &["httproute-https-listener.yaml"]),
    t(
        "HTTPRouteHTTPSListenerDetectMisdirectedRequests",
        &["httproute-https-listener-detect-misdirected-requests.yaml"],
    ),
    t(
        "HTTPRouteHeaderMatching",
        &["httproute-header-matching.yaml"],
    ),
    t(
        "HTTPRouteHostnameIntersection",
        &["httproute-hostname-intersection.yaml"],
    ),
    t(
        "HTTPRouteInvalidBackendRefUnknownKind",
        &["httproute-invalid-backendref-unknown-kind.yaml"],
    ),
    t(
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        &["httproute-invalid-cross-namespace-backend-ref.yaml"],
    ),
    t(
        "HTTPRouteInvalidNonExistentBackendRef",
        &["httproute-invalid-nonexistent-backendref.yaml"],
    ),
    t(
        "HTTPRouteInvalidReferenceGrant",
        &["httproute-invalid-reference-grant.yaml"],
    ),
    t(
        "HTTPRouteListenerHostnameMatching",
        &["httproute-listener-hostname-matching.yaml"],
    ),
    t("HTTPRouteMatching", &["httproute-matching.yaml"]),
    t(
        "HTTPRouteMethodMatching",
        &["httproute-method-matching.yaml"],
    ),
    t("HTTPRouteNamedRule", &["httproute-named-rule.yaml"]),
    t(
        "HTTPRouteNoBackendRefs",
        &["httproute-omitted-backendrefs.yaml"],
    ),
    t(
        "HTTPRoutePathMatchOrder",
        &["httproute-path-match-order.yaml"],
    ),
    t(
        "HTTPRouteRedirectHostAndStatus",
        &["httproute-redirect-host-and-status.yaml"],
    ),
    t("HTTPRouteRedirectPath", &["httproute-redirect-path.yaml"]),
    t("HTTPRouteRedirectPort", &["httproute-redirect-port.yaml"]),
    t(
        "HTTPRouteRedirectScheme",
        &["httproute-redirect-scheme.yaml"],
    ),
    t(
        "HTTPRouteReferenceGrant",
        &["httproute-reference-grant.yaml"],
    ),
    t(
        "HTTPRouteRequestHeaderModifier",
        &["httproute-request-header-modifier.yaml"],
    ),
    t(
        "HTTPRouteRequestHeaderModifierBackendWeights",
        &["httproute-request-header-modifier-backend-weights.yaml"],
    ),
    t("HTTPRouteRequestMirror", &["httproute-request-mirror.yaml"]),
    t(
        "HTTPRouteRequestPercentageMirror",
        &["httproute-request-percentage-mirror.yaml"],
    ),
    t(
        "HTTPRouteResponseHeaderModifier",
        &["httproute-response-header-modifier.yaml"],
    ),
    t("HTTPRouteRetry", &["httproute-retry.yaml"]),
    t(
        "HTTPRouteRetryConnectionError",
        &["httproute-retry-connection-error.yaml"],
    ),
    t(
        "HTTPRouteRetryWithTimeouts",
        &["httproute-retry-with-timeouts.yaml"],
    ),
    t("HTTPRouteRewritePath", &["httproute-rewrite-path.yaml"]),
    t(
        "HTTPRouteSimpleSameNamespace",
        &["httproute-simple-same-namespace.yaml"],
    ),
    t(
        "HTTPRouteTimeoutBackendRequest",
        &["httproute-timeout-backend-request.yaml"],
    ),
    t("HTTPRouteWeight", &["httproute-weight.yaml"]),
    t(
        "GatewayHTTPListenerIsolation",
        &[
            "gateway-http-listener-isolation.yaml",
            "gateway-http-listener-isolation-with-hostname-intersection.yaml",
        ],
    ),
    t("ListenerSetHTTPRouting", &["listenerset-http-routing.yaml"]),
    t(
        "GatewayTLSBackendClientCertificate",
        &["gateway-tls-backend-client-certificate.yaml"],
    ),
    t("BackendTLSPolicy", &["backendtlspolicy.yaml"]),
    t(
        "BackendTLSPolicyConflictResolution",
        &["backendtlspolicy-conflict-resolution.yaml"],
    ),
    t(
        "BackendTLSPolicyInvalidCACertificateRef",
        &["backendtlspolicy-invalid-ca-certificate-ref.yaml"],
    ),
    t(
        "BackendTLSPolicyInvalidKind",
        &["backendtlspolicy-invalid-kind.yaml"],
    ),
    t(
        "BackendTLSPolicySANValidation",
        &["backendtlspolicy-san.yaml"],
    ),
    cc(
        "GatewayFrontendClientCertificateValidation",
        &["gateway-with-clientcertificate-validation.yaml"],
    ),
    cc(
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        &["gateway-with-clientcertificate-validation-insecure-fallback.yaml"],
    ),
    s(
        "GatewayInvalidFrontendClientCertificateValidation",
        &["gateway-with-invalid-clientcertificate-validation.yaml"],
    ),
    cc(
        "GatewayFrontendInvalidDefaultClientCertificateValidation",
        &["gateway-invalid-default-frontend-client-certificate-validation.yaml"],
    ),
    skip(
        "ListenerSetAllowedRoutesNamespaces",
        &["listenerset-allowed-routes-namespaces.yaml"],
        "cases.tsv rows name no gateway address",
    ),
    skip(
        "ListenerSetDualParentRefIndependence",
        &["listenerset-dual-parentref-independence.yaml"],
        "cases.tsv rows name no gateway address",
    ),
    skip(
        "ListenerSetGatewayParentSectionNameNotFound",
        &["listenerset-gateway-parent-section-name-not-found.yaml"],
        "cases.tsv rows name no gateway address",
    ),
    s(
        "HTTPRouteDisallowedKind",
        &["httproute-disallowed-kind.yaml"],
    ),
    s(
        "HTTPRouteInvalidCrossNamespaceParentRef",
        &["httproute-invalid-cross-namespace-parent-ref.yaml"],
    ),
    s(
        "HTTPRouteInvalidParentRefNotMatchingSectionName",
        &["httproute-invalid-parentref-not-matching-section-name.yaml"],
    ),
    s(
        "HTTPRouteInvalidParentRefNotMatchingListenerPort",
        &["httproute-invalid-parentref-not-matching-listener-port.yaml"],
    ),
    s(
        "HTTPRouteInvalidParentRefSectionNameNotMatchingPort",
        &["httproute-invalid-parentref-section-name-not-matching-port.yaml"],
    ),
    s(
        "GatewayWithAttachedRoutes",
        &["gateway-with-attached-routes.yaml"],
    ),
    s(
        "GatewayWithAttachedRoutesWithPort8080",
        &["gateway-with-attached-routes-with-port-8080.yaml"],
    ),
    s(
        "GatewayInvalidRouteKind",
        &["gateway-invalid-route-kind.yaml"],
    ),
    s(
        "GatewayListenerUnsupportedProtocol",
        &["gateway-invalid-listeners-unsupported-protocol.yaml"],
    ),
    s(
        "GatewayInvalidTLSConfiguration",
        &["gateway-invalid-tls-configuration.yaml"],
    ),
    s(
        "GatewayInvalidTLSBackendConfiguration",
        &["gateway-invalid-tls-backend-configuration.yaml"],
    ),
    s(
        "GatewaySecretMissingReferenceGrant",
        &["gateway-secret-missing-reference-grant.yaml"],
    ),
    s(
        "GatewaySecretInvalidReferenceGrant",
        &["gateway-secret-invalid-reference-grant.yaml"],
    ),
    s(
        "GatewaySecretReferenceGrantAllInNamespace",
        &["gateway-secret-reference-grant-all-in-namespace.yaml"],
    ),
    s(
        "GatewaySecretReferenceGrantSpecific",
        &["gateway-secret-reference-grant-specific.yaml"],
    ),
    s(
        "GatewayObservedGenerationBump",
        &["gateway-observed-generation-bump.yaml"],
    ),
    s(
        "HTTPRouteObservedGenerationBump",
        &["httproute-observed-generation-bump.yaml"],
    ),
    s(
        "GatewayInvalidParametersRef",
        &["gateway-invalid-parameters-ref.yaml"],
    ),
    s(
        "GatewayClassObservedGenerationBump",
        &["gatewayclass-observed-generation-bump.yaml"],
    ),
    s("GatewayModifyListeners", &["gateway-modify-listeners.yaml"]),
];

/// Looks a test up by name.
pub fn find_test(name: &str) -> Option<&'static TestSpec> {
    TESTS.iter().find(|t| t.name == name)
}

/// Parses an expected-pass list: one test name per line; `#` comments and blanks ignored.
pub fn parse_expected(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "test\tgateway[listeners]\tscheme\trequest_host\tmethod\trequest_path\trequest_headers\texpected_status\texpected_backend\texpected_namespace\tbackend_sees_host\tbackend_sees_path\tbackend_sees_headers\tbackend_absent_headers\tresponse_headers\tresponse_header_alternatives\tresponse_absent_headers\tredirect_location(scheme://host[:port]path)\tmirrored_to\techo_set_response_headers\tcase_name\tnotes\tsubtest";

    fn row(cols: &[&str]) -> String {
        let mut all: Vec<&str> = cols.to_vec();
        all.resize(23, "");
        all.join("\t")
    }

    #[test]
    fn parses_rows() {
        let text = format!(
            "{HEADER}\n{}\n{}\n{}\n",
            row(&[
                "T1",
                "gw[l1, l2]",
                "https(h2)",
                "foo.com:8080",
                "",
                "/a?b=c",
                r#"{"Version": "one", "Multi": ["a", "b"]}"#,
                "200,204",
                "infra-backend-v1",
                "ns",
                "",
                "/x",
                r#"{"X-Add": "a,b"}"#,
                r#"["X-Gone"]"#,
                r#"{"R": "v"}"#,
                r#"{"A": ["1", "2"]}"#,
                r#"["Y"]"#,
                "https://*:8443/p",
                "ns/mirror@20%",
                r#"{"S": "t"}"#,
                "case",
                "TLS SNI=sni.example; other",
                "sub",
            ]),
            row(&["T2", "same-namespace", "http", "", "POST", "/", "", "!200"]),
            row(&[
                "T3",
                "same-namespace",
                "http",
                "",
                "GET",
                "/",
                "",
                "500,503"
            ]),
        );
        let cases = parse_cases(&text).expect("parse");
        assert_eq!(cases.len(), 3);
        let c = &cases[0];
        assert_eq!(c.line, 2);
        assert_eq!(c.gateway, "gw");
        assert_eq!(c.listeners, vec!["l1", "l2"]);
        assert_eq!(c.scheme, Scheme::HttpsH2);
        assert_eq!(c.method, "GET");
        assert_eq!(
            c.headers,
            vec![
                ("Multi".to_string(), "a,b".to_string()),
                ("Version".to_string(), "one".to_string())
            ]
        );
        assert_eq!(c.status, ExpectedStatus::AnyOf(vec![200, 204]));
        assert_eq!(c.backend_absent, vec!["X-Gone"]);
        assert_eq!(
            c.response_alternatives,
            vec![("A".to_string(), vec!["1".to_string(), "2".to_string()])]
        );
        assert_eq!(c.redirect.as_deref(), Some("https://*:8443/p"));
        assert_eq!(c.mirrored_to[0].percent, Some(20.0));
        assert_eq!(c.mirrored_to[0].name, "mirror");
        assert_eq!(c.sni(), "sni.example");
        assert_eq!(cases[1].status, ExpectedStatus::Not200);
        assert!(cases[1].status.accepts(404));
        assert!(!cases[1].status.accepts(200));
        assert!(cases[2].status.accepts(503));
        assert!(!cases[2].status.accepts(502));
        assert_eq!(cases[2].sni(), "");
        // `TLS SNI=` is the client's server name, not the backend's.
        assert_eq!(c.backend_sni(), "");
        assert!(cases[1].expects_failure());
        assert!(!cases[2].expects_failure());
    }

    #[test]
    fn backend_sni_notes() {
        let text = format!(
            "{HEADER}\n{}\n{}\n",
            row(&[
                "BackendTLSPolicy",
                "gw",
                "https",
                "h.org",
                "GET",
                "/",
                "",
                "200",
                "",
                "ns",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "SNI=h.org;backendSNI=abc.example.com;",
            ]),
            row(&[
                "BackendTLSPolicy",
                "gw",
                "http",
                "h",
                "GET",
                "/",
                "",
                "!200",
                "",
                "ns",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "SNI=abc.example.com;failure-expected(!=200);",
            ]),
        );
        let cases = parse_cases(&text).expect("parse");
        assert_eq!(cases[0].backend_sni(), "abc.example.com");
        assert_eq!(cases[0].sni(), "h.org");
        assert!(!cases[0].expects_failure());
        assert_eq!(cases[1].backend_sni(), "abc.example.com");
        assert!(cases[1].expects_failure());
    }

    #[test]
    fn rejects_bad_rows() {
        let bad_scheme = format!("{HEADER}\n{}\n", row(&["T", "gw", "ftp"]));
        assert!(parse_cases(&bad_scheme).is_err());
        let bad_json = format!(
            "{HEADER}\n{}\n",
            row(&["T", "gw", "http", "", "GET", "/", "{not json"])
        );
        assert!(parse_cases(&bad_json).is_err());
        let bad_status = format!(
            "{HEADER}\n{}\n",
            row(&["T", "gw", "http", "", "GET", "/", "", "abc"])
        );
        assert!(parse_cases(&bad_status).is_err());
        assert!(parse_cases("test\tscheme\n").is_err());
    }

    #[test]
    fn parses_the_shared_cases_file() {
        let path = std::path::Path::new(crate::manifests::DEFAULT_CASES_PATH);
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{} (../shared beside the checkout): {e}", path.display()));
        let cases = parse_cases(&text).expect("shared cases.tsv parses");
        assert!(cases.len() > 250);
        for c in &cases {
            if c.gateway.is_empty() {
                continue;
            }
            assert!(find_test(&c.test).is_some(), "no TestSpec for {}", c.test);
        }
    }

    #[test]
    fn strips_ports_and_reads_expected_lists() {
        assert_eq!(strip_port("very.specific.com:1234"), "very.specific.com");
        assert_eq!(strip_port("example.org"), "example.org");
        assert_eq!(
            parse_expected("A\n# comment\n\nB # trailing\n"),
            vec!["A".to_string(), "B".to_string()]
        );
    }
}
