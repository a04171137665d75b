//! The comparison rules of CATALOG.md §2.4 (upstream `CompareRoundTrip`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cases::{Case, Scheme};

/// The JSON body echo-basic returns (the fields the rules look at).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct EchoBody {
    /// RequestURI the backend saw.
    #[serde(default)]
    pub path: String,
    /// Host the backend saw.
    #[serde(default)]
    pub host: String,
    /// Method the backend saw.
    #[serde(default)]
    pub method: String,
    /// Protocol the backend saw.
    #[serde(default)]
    pub proto: String,
    /// Request headers the backend saw.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// The pod's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The pod's name.
    #[serde(default)]
    pub pod: String,
    /// What the pod saw of the TLS connection (only on echo-basic's HTTPS listener).
    #[serde(default)]
    pub tls: Option<EchoTlsBody>,
    /// The port the request arrived on (echo-basic's `httpPort`; the Inference Extension's
    /// data-parallelism test reads it).
    #[serde(default, rename = "httpPort")]
    pub http_port: String,
}

/// echo-basic's `TLSAssertions` (the fields the rules look at).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct EchoTlsBody {
    /// The SNI the backend received ("" for none).
    #[serde(default, rename = "serverName")]
    pub server_name: String,
    /// The client's certificates, PEM.
    #[serde(default, rename = "peerCertificates")]
    pub peer_certificates: Vec<String>,
}

/// What came back for one request.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The parsed echo body, when `Content-Type` was exactly `application/json`.
    pub echo: Option<EchoBody>,
    /// The raw body (for reports; truncated by the client).
    pub body_snippet: String,
}

impl Observed {
    /// A one-line summary for failure reports.
    pub fn summary(&self) -> String {
        match &self.echo {
            Some(e) => format!(
                "{} from pod {:?} ns {:?} path {:?} host {:?}",
                self.status, e.pod, e.namespace, e.path, e.host
            ),
            None => {
                let loc = self
                    .headers
                    .get(http::header::LOCATION)
                    .map(|l| format!(" location {:?}", String::from_utf8_lossy(l.as_bytes())))
                    .unwrap_or_default();
                format!("{}{loc} body {:?}", self.status, self.body_snippet)
            }
        }
    }
}

/// The concrete request derived from a case (placeholders filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Path actually sent.
    pub request_path: String,
    /// Path the backend must see (on 200/204). Empty only where the upstream test expects an
    /// empty path, i.e. a reply the gateway makes itself (see [`crate::plan::row_quirks`]).
    pub backend_path: String,
    /// Compare response header values with whitespace removed (upstream
    /// `Response.IgnoreWhitespace`).
    pub ignore_whitespace: bool,
    /// The TLS server name the backend must have seen (upstream `ExpectedRequest.SNI`); empty:
    /// not checked.
    pub backend_sni: String,
    /// A certificate (PEM) that must be among the backend's TLS peer certificates (upstream
    /// `Request.ClientCert`); the runner fills it in from [`crate::plan::RowQuirks`].
    pub client_cert: Option<String>,
}

impl Expectation {
    /// Fills `<fresh-uuid-per-probe>` with `uuid` in the request and expected backend paths, and
    /// applies what the upstream test expects beyond the row ([`crate::plan::row_quirks`]).
    pub fn for_case(case: &Case, uuid: &str) -> Self {
        let quirks = crate::plan::row_quirks(case);
        let request_path = case.path.replace("<fresh-uuid-per-probe>", uuid);
        let backend_path = if quirks.gateway_reply {
            String::new()
        } else if case.backend_path.is_empty() {
            request_path.clone()
        } else {
            case.backend_path.replace("<fresh-uuid-per-probe>", uuid)
        };
        Expectation {
            request_path,
            backend_path,
            ignore_whitespace: quirks.ignore_whitespace,
            backend_sni: case.backend_sni(),
            client_cert: None,
        }
    }
}

fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name.to_ascii_lowercase().as_str())
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(","))
    }
}

fn echo_header(echo: &EchoBody, name: &str) -> Option<String> {
    let values: Vec<&String> = echo
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(
            values
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// Applies the §2.4 rules. `Ok(())` when the response matches the case.
pub fn compare(case: &Case, exp: &Expectation, obs: &Observed) -> Result<(), String> {
    let code = obs.status;
    if (code == 408 || code == 504) && case.status.expects_timeout() {
        return Ok(());
    }
    if !case.status.accepts(code) {
        return Err(format!("status {code}, want {:?}", case.status));
    }
    if code == 200 || code == 204 {
        return compare_success(case, exp, obs);
    }
    if (300..400).contains(&code) {
        return match &case.redirect {
            Some(want) => compare_redirect(case.scheme, &exp.request_path, want, obs),
            None => Ok(()),
        };
    }
    Ok(())
}

/// Whitespace-insensitive header comparison when the case asks for it.
fn same_value(got: &str, want: &str, ignore_whitespace: bool) -> bool {
    if ignore_whitespace {
        let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        strip(got) == strip(want)
    } else {
        got == want
    }
}

fn compare_success(case: &Case, exp: &Expectation, obs: &Observed) -> Result<(), String> {
    // Upstream's roundtripper parses the body only when Content-Type is application/json;
    // otherwise the captured request holds just the method that was sent, so every other
    // expectation (path, namespace, pod, headers) must be empty for the response to pass.
    let no_echo;
    let echo = match &obs.echo {
        Some(echo) => echo,
        None => {
            no_echo = EchoBody {
                method: case.method.clone(),
                ..EchoBody::default()
            };
            &no_echo
        }
    };
    let check = |r: Result<(), String>| -> Result<(), String> {
        r.map_err(|e| {
            if obs.echo.is_none() {
                format!(
                    "{e} (status {} without an application/json echo body: {:?})",
                    obs.status, obs.body_snippet
                )
            } else {
                e
            }
        })
    };
    check(compare_echo(case, exp, obs, echo))
}

fn compare_echo(
    case: &Case,
    exp: &Expectation,
    obs: &Observed,
    echo: &EchoBody,
) -> Result<(), String> {
    if !case.backend_host.is_empty() && echo.host != case.backend_host {
        return Err(format!(
            "backend saw host {:?}, want {:?}",
            echo.host, case.backend_host
        ));
    }
    if echo.path != exp.backend_path {
        return Err(format!(
            "backend saw path {:?}, want {:?}",
            echo.path, exp.backend_path
        ));
    }
    if !echo.method.eq_ignore_ascii_case(&case.method) {
        return Err(format!(
            "backend saw method {:?}, want {:?}",
            echo.method, case.method
        ));
    }
    if echo.namespace != case.namespace {
        return Err(format!(
            "backend namespace {:?}, want {:?}",
            echo.namespace, case.namespace
        ));
    }
    for (name, want) in &case.backend_headers {
        match echo_header(echo, name) {
            Some(got) if &got == want => {}
            Some(got) => {
                return Err(format!("backend saw header {name}: {got:?}, want {want:?}"));
            }
            None => return Err(format!("backend did not see header {name} (want {want:?})")),
        }
    }
    for (name, want) in &case.response_headers {
        match joined(&obs.headers, name) {
            Some(got) if same_value(&got, want, exp.ignore_whitespace) => {}
            Some(got) => return Err(format!("response header {name}: {got:?}, want {want:?}")),
            None => return Err(format!("response lacks header {name} (want {want:?})")),
        }
    }
    for (name, alternatives) in &case.response_alternatives {
        match joined(&obs.headers, name) {
            Some(got)
                if alternatives
                    .iter()
                    .any(|a| same_value(&got, a, exp.ignore_whitespace)) => {}
            Some(got) => {
                return Err(format!(
                    "response header {name}: {got:?}, want one of {alternatives:?}"
                ));
            }
            None => {
                return Err(format!(
                    "response lacks header {name} (want one of {alternatives:?})"
                ));
            }
        }
    }
    for name in &case.response_absent {
        if let Some(got) = joined(&obs.headers, name) {
            return Err(format!(
                "response header {name} should be absent, got {got:?}"
            ));
        }
    }
    for name in &case.backend_absent {
        if let Some(got) = echo_header(echo, name) {
            return Err(format!(
                "backend header {name} should be absent, got {got:?}"
            ));
        }
    }
    if !echo.pod.starts_with(&case.backend) {
        return Err(format!(
            "served by pod {:?}, want prefix {:?}",
            echo.pod, case.backend
        ));
    }
    if !exp.backend_sni.is_empty() {
        match &echo.tls {
            Some(tls) if tls.server_name == exp.backend_sni => {}
            Some(tls) => {
                return Err(format!(
                    "backend saw TLS server name {:?}, want {:?}",
                    tls.server_name, exp.backend_sni
                ));
            }
            None => {
                return Err(format!(
                    "backend connection was not TLS (want server name {:?})",
                    exp.backend_sni
                ));
            }
        }
    }
    if let Some(want) = &exp.client_cert {
        // Upstream compares the Secret's certificate with the peer certificates the echo
        // lists; the Secret holds the leaf first.
        let want = pem_der(want).into_iter().next().unwrap_or_default();
        let peers = echo
            .tls
            .as_ref()
            .map(|t| t.peer_certificates.as_slice())
            .unwrap_or(&[]);
        if want.is_empty() || !peers.iter().any(|p| pem_der(p).contains(&want)) {
            return Err(format!(
                "backend did not see the expected client certificate ({} peer certificates)",
                peers.len()
            ));
        }
    }
    Ok(())
}

/// The DER bytes of the certificates in a PEM text (empty when none parse).
fn pem_der(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// The parts of a `Location` URL (or an expected redirect) the rules compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    /// `http` or `https`.
    pub scheme: String,
    /// Host without port; `*` in an expectation means any.
    pub host: String,
    /// Port; empty when none is given.
    pub port: String,
    /// Path without query.
    pub path: String,
}

/// Parses `scheme://host[:port]/path[?query]`.
pub fn parse_location(url: &str) -> Option<RedirectTarget> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split('?').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
        _ => (authority, ""),
    };
    Some(RedirectTarget {
        scheme: scheme.to_ascii_lowercase(),
        host: host.to_string(),
        port: port.to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    })
}

fn compare_redirect(
    scheme: Scheme,
    request_path: &str,
    want: &str,
    obs: &Observed,
) -> Result<(), String> {
    let Some(location) = obs.headers.get(http::header::LOCATION) else {
        return Err(format!("{} without a Location header", obs.status));
    };
    let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let got = parse_location(&location)
        .ok_or_else(|| format!("Location {location:?} is not an absolute URL"))?;
    let mut want = parse_location(want).ok_or_else(|| format!("bad expected redirect {want:?}"))?;
    if want.scheme.is_empty() {
        want.scheme = scheme.url_scheme().to_string();
    }
    if want.path.is_empty() {
        want.path = request_path.split('?').next().unwrap_or("/").to_string();
    }
    let mismatch = |what: &str, g: &str, w: &str| {
        Err(format!("Location {location:?}: {what} {g:?}, want {w:?}"))
    };
    if got.scheme != want.scheme {
        return mismatch("scheme", &got.scheme, &want.scheme);
    }
    if want.host != "*" && !got.host.eq_ignore_ascii_case(&want.host) {
        return mismatch("host", &got.host, &want.host);
    }
    if want.port.is_empty() {
        let default = if got.scheme == "https" { "443" } else { "80" };
        if !got.port.is_empty() && got.port != default {
            return mismatch("port", &got.port, "empty or the scheme default");
        }
    } else if got.port != want.port {
        return mismatch("port", &got.port, &want.port);
    }
    if got.path != want.path {
        return mismatch("path", &got.path, &want.path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ExpectedStatus;

    fn case() -> Case {
        Case {
            line: 2,
            test: "T".into(),
            gateway: "same-namespace".into(),
            listeners: vec![],
            scheme: Scheme::Http,
            host: String::new(),
            method: "GET".into(),
            path: "/p?q=1".into(),
            headers: vec![],
            status: ExpectedStatus::AnyOf(vec![200]),
            backend: "infra-backend-v1".into(),
            namespace: "gateway-conformance-infra".into(),
            backend_host: String::new(),
            backend_path: String::new(),
            backend_headers: vec![],
            backend_absent: vec![],
            response_headers: vec![],
            response_alternatives: vec![],
            response_absent: vec![],
            redirect: None,
            mirrored_to: vec![],
            echo_set: vec![],
            case_name: String::new(),
            notes: String::new(),
            subtest: String::new(),
        }
    }

    fn echo() -> EchoBody {
        EchoBody {
            path: "/p?q=1".into(),
            host: "gw".into(),
            method: "GET".into(),
            proto: "HTTP/1.1".into(),
            headers: BTreeMap::from([("X-Add".to_string(), vec!["a".into(), "b".into()])]),
            namespace: "gateway-conformance-infra".into(),
            pod: "infra-backend-v1-xyz-0".into(),
            tls: None,
            http_port: "3000".into(),
        }
    }

    fn ok_obs() -> Observed {
        let mut headers = http::HeaderMap::new();
        headers.append("x-resp", "1".parse().expect("value"));
        headers.append("x-resp", "2".parse().expect("value"));
        Observed {
            status: 200,
            headers,
            echo: Some(echo()),
            body_snippet: String::new(),
        }
    }

    fn run(c: &Case, o: &Observed) -> Result<(), String> {
        compare(c, &Expectation::for_case(c, "u"), o)
    }

    #[test]
    fn backend_tls_rules() {
        let certs = crate::certs::SuiteCerts::generate().expect("certs");
        let client = certs
            .secret(crate::certs::BACKEND_CLIENT_CERT)
            .expect("client secret");
        let other = certs
            .secret("tls-validity-checks-client-certificate")
            .expect("other client secret");
        let mut c = case();
        c.notes = "SNI=abc.example.com;".into();
        assert_eq!(c.backend_sni(), "abc.example.com");
        // Not TLS at all: the expected server name cannot have been seen.
        let err = run(&c, &ok_obs()).expect_err("plain backend");
        assert!(err.contains("not TLS"), "{err}");
        let mut tls = ok_obs();
        tls.echo.as_mut().expect("echo").tls = Some(EchoTlsBody {
            server_name: "abc.example.com".into(),
            peer_certificates: vec![client.cert_pem.clone()],
        });
        assert!(run(&c, &tls).is_ok());
        c.notes = "SNI=other.example.com;".into();
        assert!(run(&c, &tls).is_err(), "wrong server name");
        // backendSNI overrides SNI (ExpectedRequest.SNI).
        c.notes = "SNI=other.example.com;backendSNI=abc.example.com;".into();
        assert!(run(&c, &tls).is_ok());

        let mut exp = Expectation::for_case(&c, "u");
        exp.client_cert = Some(client.cert_pem.clone());
        assert!(compare(&c, &exp, &tls).is_ok());
        exp.client_cert = Some(other.cert_pem.clone());
        assert!(compare(&c, &exp, &tls).is_err(), "another certificate");
        let mut no_peer = tls.clone();
        no_peer.echo.as_mut().expect("echo").tls = Some(EchoTlsBody {
            server_name: "abc.example.com".into(),
            peer_certificates: vec![],
        });
        exp.client_cert = Some(client.cert_pem.clone());
        assert!(
            compare(&c, &exp, &no_peer).is_err(),
            "no client certificate"
        );
        // A failure status is compared by code only.
        let mut bad = ok_obs();
        bad.status = 502;
        bad.echo = None;
        c.status = ExpectedStatus::AnyOf(vec![500, 502, 503]);
        assert!(run(&c, &bad).is_ok());
    }

    #[test]
    fn success_rules() {
        let c = case();
        assert!(run(&c, &ok_obs()).is_ok());

        let mut wrong_pod = ok_obs();
        wrong_pod.echo.as_mut().expect("echo").pod = "infra-backend-v2-a".into();
        assert!(run(&c, &wrong_pod).is_err());

        let mut wrong_path = ok_obs();
        wrong_path.echo.as_mut().expect("echo").path = "/p".into();
        assert!(run(&c, &wrong_path).is_err(), "query must be compared");

        let mut c2 = case();
        c2.namespace = String::new();
        assert!(run(&c2, &ok_obs()).is_err(), "namespace is always compared");

        let mut c3 = case();
        c3.backend_headers = vec![("x-add".into(), "a,b".into())];
        assert!(run(&c3, &ok_obs()).is_ok());
        c3.backend_headers = vec![("x-add".into(), "b".into())];
        assert!(run(&c3, &ok_obs()).is_err());

        let mut c4 = case();
        c4.backend_absent = vec!["X-ADD".into()];
        assert!(run(&c4, &ok_obs()).is_err());

        let mut c5 = case();
        c5.response_headers = vec![("X-Resp".into(), "1,2".into())];
        assert!(run(&c5, &ok_obs()).is_ok());
        c5.response_absent = vec!["x-resp".into()];
        assert!(run(&c5, &ok_obs()).is_err());

        let mut c6 = case();
        c6.response_alternatives = vec![("x-resp".into(), vec!["2,1".into(), "1,2".into()])];
        assert!(run(&c6, &ok_obs()).is_ok());
        c6.response_alternatives = vec![("x-resp".into(), vec!["2,1".into()])];
        assert!(run(&c6, &ok_obs()).is_err());

        let mut no_json = ok_obs();
        no_json.echo = None;
        assert!(run(&c, &no_json).is_err());

        let mut c7 = case();
        c7.backend_host = "other".into();
        assert!(run(&c7, &ok_obs()).is_err());
    }

    #[test]
    fn cors_preflights_must_be_answered_by_the_gateway() {
        let mut c = case();
        c.test = "HTTPRouteCORS".into();
        c.method = "OPTIONS".into();
        c.path = "/cors-1".into();
        c.namespace = String::new();
        c.backend = String::new();
        c.status = ExpectedStatus::AnyOf(vec![200, 204]);
        c.response_alternatives = vec![(
            "access-control-allow-headers".into(),
            vec![
                "x-header-1, x-header-2".into(),
                "x-header-2, x-header-1".into(),
            ],
        )];
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "access-control-allow-headers",
            "x-header-2,x-header-1".parse().expect("value"),
        );
        let own_reply = Observed {
            status: 204,
            headers,
            echo: None,
            body_snippet: String::new(),
        };
        // No echo body: upstream captures only the method, and expects an empty path and
        // namespace; whitespace is ignored in the header values of this preflight.
        assert!(run(&c, &own_reply).is_ok(), "{:?}", run(&c, &own_reply));
        // Forwarded to the backend: the echo shows a path and a namespace.
        let mut forwarded = own_reply.clone();
        forwarded.status = 200;
        forwarded.echo = Some(EchoBody {
            method: "OPTIONS".into(),
            path: "/cors-1".into(),
            namespace: "gateway-conformance-infra".into(),
            ..EchoBody::default()
        });
        assert!(run(&c, &forwarded).is_err());
        // Other CORS paths compare whitespace exactly.
        c.path = "/cors-wildcard-methods-headers-unauth".into();
        assert!(run(&c, &own_reply).is_err());
        // A simple request still needs the backend.
        let mut get = case();
        get.test = "HTTPRouteCORS".into();
        let e = Expectation::for_case(&get, "u");
        assert_eq!(e.backend_path, get.path);
        assert!(!e.ignore_whitespace);
    }

    #[test]
    fn without_an_echo_only_the_method_is_known() {
        // A 200 that is not an echo passes only when nothing but the method is expected.
        let mut c = case();
        let mut o = ok_obs();
        o.echo = None;
        let err = run(&c, &o).expect_err("path and namespace are expected");
        assert!(
            err.contains("without an application/json echo body"),
            "{err}"
        );
        c.test = "HTTPRouteCORS".into();
        c.method = "OPTIONS".into();
        c.namespace = String::new();
        assert!(run(&c, &o).is_err(), "a pod prefix is still expected");
        c.backend = String::new();
        assert!(run(&c, &o).is_ok());
    }

    #[test]
    fn status_rules() {
        let mut c = case();
        c.status = ExpectedStatus::AnyOf(vec![404]);
        let mut o = ok_obs();
        o.status = 404;
        o.echo = None;
        assert!(run(&c, &o).is_ok(), "non-2xx compares only the code");
        o.status = 200;
        assert!(run(&c, &o).is_err());

        let mut t = case();
        t.status = ExpectedStatus::AnyOf(vec![504]);
        let mut timeout = ok_obs();
        timeout.status = 408;
        assert!(
            run(&t, &timeout).is_ok(),
            "408 passes when a timeout is expected"
        );
    }

    fn redirect_obs(status: u16, location: &str) -> Observed {
        let mut headers = http::HeaderMap::new();
        headers.insert("location", location.parse().expect("value"));
        Observed {
            status,
            headers,
            echo: None,
            body_snippet: String::new(),
        }
    }

    #[test]
    fn redirect_rules() {
        let mut c = case();
        c.status = ExpectedStatus::AnyOf(vec![302]);
        c.redirect = Some("http://*/replacement".into());
        assert!(run(&c, &redirect_obs(302, "http://1.2.3.4/replacement")).is_ok());
        assert!(run(&c, &redirect_obs(302, "http://1.2.3.4:80/replacement")).is_ok());
        assert!(run(&c, &redirect_obs(302, "http://1.2.3.4:8080/replacement")).is_err());
        assert!(run(&c, &redirect_obs(302, "https://1.2.3.4/replacement")).is_err());
        assert!(run(&c, &redirect_obs(302, "http://1.2.3.4/other")).is_err());
        assert!(run(&c, &redirect_obs(301, "http://1.2.3.4/replacement")).is_err());
        assert!(run(&c, &redirect_obs(302, "/replacement")).is_err());

        c.redirect = Some("https://example.org/p".into());
        assert!(run(&c, &redirect_obs(302, "https://example.org:443/p")).is_ok());
        assert!(run(&c, &redirect_obs(302, "https://example.org:80/p")).is_err());
        assert!(run(&c, &redirect_obs(302, "https://other.org/p")).is_err());

        c.redirect = Some("http://example.org:8083/p".into());
        assert!(run(&c, &redirect_obs(302, "http://example.org:8083/p")).is_ok());
        assert!(run(&c, &redirect_obs(302, "http://example.org/p")).is_err());
    }

    #[test]
    fn fresh_uuid_placeholders() {
        let mut c = case();
        c.path = "/retry/x?uuid=<fresh-uuid-per-probe>".into();
        c.backend_path = "/retry/x?uuid=<fresh-uuid-per-probe>".into();
        let e = Expectation::for_case(&c, "abc");
        assert_eq!(e.request_path, "/retry/x?uuid=abc");
        assert_eq!(e.backend_path, "/retry/x?uuid=abc");
    }
}
