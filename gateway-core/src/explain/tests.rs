//! `explain` over a compiled table: a table of cases covering listener choice, path
//! normalisation, each kind of failed condition and each precedence field, each checked against
//! the router's own lookup.

use super::*;
use crate::config::{
    BackendRef, Bind, HeaderMatch, Listener, PathNormalization, QueryParamMatch, Rule, UrlRewrite,
};

fn ep(port: u16) -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], port))]
}

fn route(name: &str, created: i64) -> Route {
    let mut r = Route::new("ns", name);
    r.created = created;
    r
}

fn with_match(rule: Rule, f: impl FnOnce(&mut RouteMatch)) -> Rule {
    let mut m = RouteMatch {
        path: PathMatch::Prefix("/api".into()),
        ..RouteMatch::default()
    };
    f(&mut m);
    rule.matching(m)
}

fn config() -> Config {
    let api = |name: &str, created: i64, backend: &str, port: u16| {
        route(name, created)
            .rule(Rule::prefix("/api").backend(BackendRef::endpoints(backend, ep(port))))
    };
    let old = route("old", 1).rule(
        Rule::prefix("/api")
            .filter(Filter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-a".into(), "1".into())],
                ..HeaderModifier::default()
            }))
            .filter(Filter::UrlRewrite(UrlRewrite {
                hostname: None,
                path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            }))
            .backend(BackendRef::endpoints("b1", ep(1001)).weight(3))
            .backend(BackendRef::endpoints("b2", ep(1002)).weight(1)),
    );
    let exact = route("exact", 3).rule(with_match(
        Rule::default().backend(BackendRef::endpoints("b4", ep(1004))),
        |m| {
            m.path = PathMatch::Exact("/api/v1".into());
            m.method = Some("POST".into());
        },
    ));
    let hdr = route("hdr", 3).rule(with_match(
        Rule::default().backend(BackendRef::endpoints("b5", ep(1005))),
        |m| {
            m.headers.push(HeaderMatch {
                name: "x-v".into(),
                value: StringMatch::Exact("2".into()),
            })
        },
    ));
    let q = route("q", 4).rule(with_match(
        Rule::default().backend(BackendRef::endpoints("b6", ep(1006))),
        |m| {
            m.query_params.push(QueryParamMatch {
                name: "debug".into(),
                value: StringMatch::Exact("1".into()),
            })
        },
    ));
    let elsewhere = route("elsewhere", 1)
        .hostname("b.example.com")
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("b7", ep(1007))));
    // Same age: the name decides.
    let tie_b = api("tie-b", 5, "b8", 1008);
    let mut tie_a =
        route("tie-a", 5).rule(Rule::prefix("/tie").backend(BackendRef::endpoints("b9", ep(1009))));
    tie_a
        .rules
        .push(Rule::prefix("/tie").backend(BackendRef::endpoints("b10", ep(1010))));
    let tie_b = tie_b.rule(Rule::prefix("/tie").backend(BackendRef::endpoints("b11", ep(1011))));
    let redirect = route("redirect", 6).rule(Rule::exact("/moved").filter(
        Filter::RequestRedirect(crate::config::RequestRedirect {
            path: Some(PathModifier::ReplaceFullPath("/new".into())),
            status_code: 301,
            ..Default::default()
        }),
    ));
    Config {
        binds: vec![Bind {
            address: "127.0.0.1:18080".parse().unwrap(),
            protocol: Protocol::Http,
            listeners: vec![
                Listener::new("wild", 80)
                    .hostname("*.example.com")
                    .route(api("wild-route", 1, "w", 2001)),
                Listener::new("exact", 80)
                    .hostname("a.example.com")
                    .path_normalization(PathNormalization::default())
                    .route(api("new", 2, "b3", 1003))
                    .route(old)
                    .route(exact)
                    .route(hdr)
                    .route(q)
                    .route(elsewhere)
                    .route(tie_b)
                    .route(tie_a)
                    .route(redirect),
                Listener::new("any", 80),
            ],
        }],
        ..Config::default()
    }
}

fn explain(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Explanation {
    let req = ExplainRequest {
        port: Some(18080),
        method: method.into(),
        host: host.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        ..ExplainRequest::default()
    };
    explain_config(config(), &FilterRegistry::with_builtins(), &req).expect("explained")
}

fn verdict<'a>(e: &'a Explanation, route: &str) -> &'a RouteVerdict {
    &e.routes
        .iter()
        .find(|r| r.route == format!("ns/{route}"))
        .unwrap_or_else(|| panic!("no report for {route}: {e}"))
        .verdict
}

fn lost_reason(e: &Explanation, route: &str) -> String {
    match verdict(e, route) {
        RouteVerdict::LostOnPrecedence { reason, .. } => reason.clone(),
        other => panic!("{route} did not lose on precedence: {other:?}\n{e}"),
    }
}

fn failed_condition(e: &Explanation, route: &str) -> String {
    match verdict(e, route) {
        RouteVerdict::NoMatch { failures } => {
            assert_eq!(failures.len(), 1, "{e}");
            failures[0].condition.clone()
        }
        other => panic!("{route} did not fail: {other:?}\n{e}"),
    }
}

/// The router's own answer for the same request, through the compiled table.
fn router_pick(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let table = Table::compile(
        config(),
        &CompileCtx {
            filters: &FilterRegistry::with_builtins(),
            pickers: &PickerRegistry::default(),
            state: &StateStore::default(),
            dns: &DnsAddresses::default(),
            tls: &ClientConfigs::default(),
            // A throwaway registry: nothing is served from this table.
            metrics: &crate::observe::metrics::Metrics::new(),
            pickers_generation: 0,
        },
        None,
    )
    .expect("compiles");
    let bind = table.binds.values().next().expect("one bind");
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        map.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let uri: http::Uri = path.parse().unwrap();
    let listener = bind.router.listener_for(host)?;
    let normalized = match path::normalize(uri.path(), &bind.listeners[listener].path) {
        Ok(Normalized::Forward(p)) => p.into_owned(),
        _ => return None,
    };
    let hit = bind.router.lookup_in(
        listener,
        &RequestParts {
            host,
            path: &normalized,
            query: uri.query(),
            method,
            headers: &map,
        },
    )?;
    let route = &table.config.binds[0].listeners[hit.listener].routes[hit.route];
    Some(format!(
        "{}/{} rule {}",
        route.namespace, route.name, hit.rule
    ))
}

#[test]
fn table_of_cases_agrees_with_the_router() {
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
    );
    let cases: &[Case] = &[
        ("GET", "a.example.com", "/api/x", &[], Some("ns/old rule 0")),
        (
            "POST",
            "a.example.com",
            "/api/v1",
            &[],
            Some("ns/exact rule 0"),
        ),
        (
            "GET",
            "a.example.com",
            "/api/v1",
            &[],
            Some("ns/old rule 0"),
        ),
        (
            "GET",
            "a.example.com",
            "/api/x",
            &[("x-v", "2")],
            Some("ns/hdr rule 0"),
        ),
        (
            "GET",
            "a.example.com",
            "/api/x?debug=1",
            &[],
            Some("ns/q rule 0"),
        ),
        (
            "GET",
            "a.example.com",
            "/api/x?debug=1",
            &[("X-V", "2")],
            Some("ns/hdr rule 0"),
        ),
        ("GET", "a.example.com", "/tie", &[], Some("ns/tie-a rule 0")),
        (
            "GET",
            "A.Example.COM.:80",
            "/api",
            &[],
            Some("ns/old rule 0"),
        ),
        (
            "GET",
            "z.example.com",
            "/api",
            &[],
            Some("ns/wild-route rule 0"),
        ),
        ("GET", "a.example.com", "/apix", &[], None),
        (
            "GET",
            "a.example.com",
            "/x/../api/./y",
            &[],
            Some("ns/old rule 0"),
        ),
        ("GET", "other.org", "/api", &[], None),
        (
            "GET",
            "a.example.com",
            "/moved",
            &[],
            Some("ns/redirect rule 0"),
        ),
    ];
    for &(method, host, path, headers, want) in cases {
        let e = explain(method, host, path, headers);
        let got = e
            .selected
            .as_ref()
            .map(|s| format!("{} rule {}", s.route, s.rule));
        assert_eq!(got.as_deref(), want, "{method} {host}{path}\n{e}");
        assert_eq!(
            got,
            router_pick(method, host, path, headers),
            "{method} {host}{path}"
        );
        // Exactly the selected route says so; every other report names no winner twice.
        let selected = e
            .routes
            .iter()
            .filter(|r| matches!(r.verdict, RouteVerdict::Selected { .. }))
            .count();
        assert_eq!(selected, usize::from(want.is_some()), "{e}");
    }
}

#[test]
fn first_failed_condition_of_each_route() {
    let e = explain("GET", "a.example.com", "/api/v1", &[]);
    assert_eq!(e.selected.as_ref().unwrap().route, "ns/old");
    assert_eq!(failed_condition(&e, "exact"), "method");
    assert_eq!(failed_condition(&e, "hdr"), "header");
    assert_eq!(failed_condition(&e, "q"), "query_param");
    assert_eq!(failed_condition(&e, "redirect"), "path");
    match verdict(&e, "elsewhere") {
        RouteVerdict::Hostname { reason } => assert!(reason.contains("intersects"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The detail names what the request had.
    let RouteVerdict::NoMatch { failures } = verdict(&e, "hdr") else {
        unreachable!()
    };
    assert!(
        failures[0].detail.contains("none"),
        "{}",
        failures[0].detail
    );
    let e = explain("GET", "a.example.com", "/api/v1?debug=0", &[("x-v", "1")]);
    let RouteVerdict::NoMatch { failures } = verdict(&e, "q") else {
        panic!("{e}")
    };
    assert!(
        failures[0].detail.contains("\"0\""),
        "{}",
        failures[0].detail
    );
    let RouteVerdict::NoMatch { failures } = verdict(&e, "hdr") else {
        panic!("{e}")
    };
    assert!(
        failures[0].detail.contains("\"1\""),
        "{}",
        failures[0].detail
    );
}

#[test]
fn precedence_reasons_follow_the_spec_order() {
    // Path: exact beats prefix.
    let e = explain("POST", "a.example.com", "/api/v1", &[]);
    assert!(lost_reason(&e, "old").starts_with("path:"), "{e}");
    // Age: old (created 1) beats new (created 2), same path.
    let e = explain("GET", "a.example.com", "/api/x", &[]);
    assert!(lost_reason(&e, "new").starts_with("route age:"), "{e}");
    // Headers: more header matches.
    let e = explain("GET", "a.example.com", "/api/x", &[("x-v", "2")]);
    assert!(lost_reason(&e, "old").starts_with("headers:"), "{e}");
    // Header count beats query parameter count.
    let e = explain("GET", "a.example.com", "/api/x?debug=1", &[("x-v", "2")]);
    assert!(lost_reason(&e, "q").starts_with("headers:"), "{e}");
    // Query parameters.
    let e = explain("GET", "a.example.com", "/api/x?debug=1", &[]);
    assert!(lost_reason(&e, "old").starts_with("query params:"), "{e}");
    // Same age: namespace/name decides.
    let e = explain("GET", "a.example.com", "/tie", &[]);
    assert!(lost_reason(&e, "tie-b").starts_with("route name:"), "{e}");
    assert_eq!(e.selected.as_ref().unwrap().rule, 0, "rule order: {e}");
}

#[test]
fn listener_choice_filters_backends_and_outcome() {
    let e = explain("GET", "a.example.com", "/api/x", &[]);
    let l = e.listener.as_ref().unwrap();
    assert_eq!(
        (l.name.as_str(), l.matched),
        ("exact", HostMatchKind::Exact)
    );
    let s = e.selected.as_ref().unwrap();
    let kinds: Vec<_> = s.filters.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["RequestHeaderModifier", "URLRewrite"]);
    let backends: Vec<_> = s
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.weight, b.share_percent))
        .collect();
    assert_eq!(backends, [("b1", 3, 75.0), ("b2", 1, 25.0)]);
    assert!(s.backends[0].target.contains("127.0.0.1:1001"));
    assert_eq!(e.outcome.status, None);
    assert!(e.outcome.summary.contains("2 backends"), "{e}");

    let e = explain("GET", "z.example.com", "/nothing", &[]);
    assert_eq!(
        e.listener.as_ref().unwrap().matched,
        HostMatchKind::Wildcard
    );
    assert_eq!(e.outcome.status, Some(404));
    let e = explain("GET", "other.org", "/", &[]);
    assert_eq!(
        e.listener.as_ref().unwrap().matched,
        HostMatchKind::CatchAll
    );
    assert_eq!(e.outcome.status, Some(404));

    let e = explain("GET", "a.example.com", "/moved", &[]);
    assert_eq!(e.outcome.status, Some(301), "{e}");
    // The path routing saw.
    let e = explain("GET", "a.example.com", "/x/../api/%7Ey", &[]);
    assert_eq!(e.normalized_path.as_deref(), Some("/api/~y"));
    let e = explain("GET", "a.example.com", "/api/%00", &[]);
    assert_eq!(e.outcome.status, Some(400), "{e}");
    // The human form names the route and the losers.
    let text = explain("GET", "a.example.com", "/api/x", &[]).to_string();
    assert!(text.contains("route: ns/old rule 0"), "{text}");
    assert!(
        text.contains("ns/new: rule 0 match 0 matches but loses to ns/old"),
        "{text}"
    );
}

#[test]
fn json_shape() {
    let e = explain("GET", "a.example.com", "/api/v1", &[]);
    let json = serde_json::to_value(&e).expect("serialises");
    assert_eq!(json["selected"]["route"], "ns/old");
    assert_eq!(json["listener"]["matched"], "exact");
    let exact = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "ns/exact")
        .unwrap();
    assert_eq!(exact["verdict"]["result"], "no_match");
    assert_eq!(exact["verdict"]["failures"][0]["condition"], "method");
}

#[test]
fn bad_requests_and_bind_choice() {
    let reg = FilterRegistry::with_builtins();
    let bad = |req: ExplainRequest| explain_config(config(), &reg, &req).expect_err("refused");
    assert!(matches!(
        bad(ExplainRequest {
            headers: vec![("bad name".into(), "v".into())],
            ..ExplainRequest::default()
        }),
        ExplainError::HeaderName(_)
    ));
    assert!(matches!(
        bad(ExplainRequest {
            method: "G T".into(),
            ..ExplainRequest::default()
        }),
        ExplainError::Method(_)
    ));
    assert!(matches!(
        bad(ExplainRequest {
            path: "/a b".into(),
            ..ExplainRequest::default()
        }),
        ExplainError::Path(..)
    ));
    // By listener port, by bind port, by address, and nothing on another port.
    for req in [
        ExplainRequest {
            port: Some(80),
            ..ExplainRequest::default()
        },
        ExplainRequest::default(),
        ExplainRequest {
            bind: Some("127.0.0.1:18080".parse().unwrap()),
            ..ExplainRequest::default()
        },
    ] {
        let e = explain_config(config(), &reg, &req).unwrap();
        assert_eq!(e.bind.as_ref().unwrap().address.port(), 18080, "{req:?}");
    }
    let e = explain_config(
        config(),
        &reg,
        &ExplainRequest {
            port: Some(9),
            ..ExplainRequest::default()
        },
    )
    .unwrap();
    assert!(e.bind.is_none());
    assert!(e.outcome.summary.contains("refused"));
    // Two binds without a port: ambiguous.
    let mut two = config();
    let mut second = two.binds[0].clone();
    second.address = "127.0.0.1:18081".parse().unwrap();
    two.binds.push(second);
    assert!(matches!(
        explain_config(two, &reg, &ExplainRequest::default()),
        Err(ExplainError::AmbiguousBind(_))
    ));
}
