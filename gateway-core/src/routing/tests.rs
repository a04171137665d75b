//! Tests of [`BindRouter`]: listener selection and isolation, hostname intersection, precedence,
//! path semantics, and a randomised comparison of the indexed lookup with a brute-force `max()`.

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::config::{
    HeaderMatch, PathMatch, QueryParamMatch, Route, RouteMatch, Rule, StringMatch,
};

fn listener(hostname: Option<&str>, routes: Vec<Route>) -> Listener {
    let mut l = Listener::new(format!("l-{}", hostname.unwrap_or("any")), 80);
    l.hostname = hostname.map(str::to_owned);
    l.routes = routes.into_iter().map(std::sync::Arc::new).collect();
    l
}

fn route(name: &str, hostnames: &[&str], rules: Vec<Rule>) -> Route {
    let mut r = Route::new("ns", name);
    r.hostnames = hostnames.iter().map(|h| (*h).to_owned()).collect();
    r.rules = rules;
    r
}

fn path_match(path: PathMatch) -> RouteMatch {
    RouteMatch {
        path,
        ..RouteMatch::default()
    }
}

fn header(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: StringMatch::Exact(value.into()),
    }
}

fn query(name: &str, value: &str) -> QueryParamMatch {
    QueryParamMatch {
        name: name.into(),
        value: StringMatch::Exact(value.into()),
    }
}

/// A request for tests.
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: String,
    headers: HeaderMap,
}

impl Req {
    fn new(host: &str, path: &str) -> Self {
        Req {
            host: host.into(),
            path: path.into(),
            query: None,
            method: "GET".into(),
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn query(mut self, q: &str) -> Self {
        self.query = Some(q.into());
        self
    }

    fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            method: &self.method,
            headers: &self.headers,
        }
    }
}

fn build(listeners: Vec<Listener>) -> BindRouter {
    BindRouter::build(&listeners).expect("valid configuration")
}

/// (listener, route, rule) of a hit, `None` for 404.
type Hit = Option<(usize, usize, usize)>;

/// (listener, route, rule) of the hit.
fn hit(router: &BindRouter, req: &Req) -> Hit {
    router
        .lookup(&req.parts())
        .map(|h| (h.listener, h.route, h.rule))
}

fn get(router: &BindRouter, host: &str, path: &str) -> Hit {
    hit(router, &Req::new(host, path))
}

#[test]
fn listener_isolation_most_specific_listener_only() {
    let one = |name: &str| vec![route(name, &[], vec![Rule::prefix("/")])];
    let router = build(vec![
        listener(Some(""), one("empty")),
        listener(Some("*.example.com"), one("wild")),
        listener(Some("*.foo.example.com"), one("wild-foo")),
        listener(
            Some("abc.foo.example.com"),
            vec![route("abc", &[], vec![Rule::prefix("/abc")])],
        ),
    ]);
    assert_eq!(get(&router, "abc.foo.example.com", "/abc"), Some((3, 0, 0)));
    assert_eq!(get(&router, "bar.foo.example.com", "/"), Some((2, 0, 0)));
    assert_eq!(get(&router, "x.y.foo.example.com", "/"), Some((2, 0, 0)));
    assert_eq!(get(&router, "x.example.com", "/"), Some((1, 0, 0)));
    assert_eq!(get(&router, "foo.example.com", "/"), Some((1, 0, 0)));
    assert_eq!(get(&router, "example.com", "/"), Some((0, 0, 0)));
    assert_eq!(get(&router, "other.org", "/"), Some((0, 0, 0)));
    // Isolation: the most specific listener has no route for this path; no fallback.
    assert_eq!(get(&router, "abc.foo.example.com", "/other"), None);
    assert_eq!(router.listener_for("ABC.foo.example.com:8080"), Some(3));
    assert_eq!(router.listener_for("other.org"), Some(0));
}

#[test]
fn no_listener_for_host_is_404() {
    let router = build(vec![
        listener(
            Some("bar.com"),
            vec![route("a", &[], vec![Rule::prefix("/")])],
        ),
        listener(
            Some("*.foo.com"),
            vec![route("b", &[], vec![Rule::prefix("/")])],
        ),
    ]);
    assert_eq!(get(&router, "bar.com", "/"), Some((0, 0, 0)));
    assert_eq!(get(&router, "x.foo.com", "/"), Some((1, 0, 0)));
    assert_eq!(get(&router, "foo.com", "/"), None);
    assert_eq!(get(&router, "no.matching.host", "/"), None);
    assert_eq!(router.listener_for("foo.com"), None);
}

#[test]
fn host_port_case_and_trailing_dot() {
    let router = build(vec![
        listener(
            Some("very.specific.com"),
            vec![route("a", &[], vec![Rule::prefix("/")])],
        ),
        listener(None, vec![route("b", &[], vec![Rule::prefix("/")])]),
    ]);
    for host in [
        "very.specific.com:1234",
        "Very.Specific.COM",
        "very.specific.com.",
        "VERY.specific.com.:80",
    ] {
        assert_eq!(get(&router, host, "/"), Some((0, 0, 0)), "{host}");
    }
    assert_eq!(get(&router, "[::1]:80", "/"), Some((1, 0, 0)));
    assert_eq!(get(&router, "127.0.0.1:8080", "/"), Some((1, 0, 0)));
    assert_eq!(get(&router, "", "/"), Some((1, 0, 0)));
}

#[test]
fn hostname_intersection_like_conformance() {
    let prefix = |p: &str| vec![Rule::prefix(p)];
    let router = build(vec![
        listener(
            Some("very.specific.com"),
            vec![
                route(
                    "s1",
                    &[
                        "non.matching.com",
                        "*.nonmatchingwildcard.io",
                        "very.specific.com",
                    ],
                    prefix("/s1"),
                ),
                route("s3", &["non.matching.com", "*.specific.com"], prefix("/s3")),
            ],
        ),
        listener(
            Some("*.wildcard.io"),
            vec![route(
                "s2",
                &[
                    "non.matching.com",
                    "wildcard.io",
                    "foo.wildcard.io",
                    "bar.wildcard.io",
                    "foo.bar.wildcard.io",
                ],
                prefix("/s2"),
            )],
        ),
        listener(
            Some("*.anotherwildcard.io"),
            vec![
                route("s4", &["*.anotherwildcard.io"], prefix("/s4")),
                route(
                    "s5",
                    &["specific.but.wrong.com", "wildcard.io"],
                    prefix("/s5"),
                ),
            ],
        ),
    ]);
    let cases: &[(&str, &str, Hit)] = &[
        ("very.specific.com", "/s1", Some((0, 0, 0))),
        ("very.specific.com:1234", "/s1", Some((0, 0, 0))),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("very.specific.com", "/non-matching-prefix", None),
        ("foo.wildcard.io", "/s2", Some((1, 0, 0))),
        ("bar.wildcard.io", "/s2", Some((1, 0, 0))),
        ("foo.bar.wildcard.io", "/s2", Some((1, 0, 0))),
        ("baz.wildcard.io", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("very.specific.com", "/s3", Some((0, 1, 0))),
        ("foo.specific.com", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", Some((2, 0, 0))),
        ("foo.bar.anotherwildcard.io", "/s4", Some((2, 0, 0))),
        ("anotherwildcard.io", "/s4", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
        ("foo.anotherwildcard.io", "/s5", None),
    ];
    for (host, path, want) in cases {
        assert_eq!(get(&router, host, path), *want, "{host}{path}");
    }
}

#[test]
fn route_hostnames_on_catch_all_listener() {
    let router = build(vec![listener(
        None,
        vec![route(
            "all",
            &["first.com", "sub.first.com", "second.com", "sub.second.com"],
            vec![Rule::default()],
        )],
    )]);
    for host in ["first.com", "sub.first.com", "second.com", "sub.second.com"] {
        assert_eq!(get(&router, host, "/"), Some((0, 0, 0)), "{host}");
    }
    assert_eq!(get(&router, "third.com", "/"), None);
    assert_eq!(get(&router, "sub.third.com", "/"), None);
}

#[test]
fn route_wildcard_on_exact_listener_and_wildcard_narrowing() {
    let router = build(vec![
        listener(
            Some("foo.example.com"),
            vec![route("w", &["*.example.com"], vec![Rule::prefix("/")])],
        ),
        listener(
            Some("*.example.com"),
            vec![
                route("narrow", &["*.bar.example.com"], vec![Rule::prefix("/")]),
                route("wide", &["*.com"], vec![Rule::prefix("/wide")]),
            ],
        ),
    ]);
    assert_eq!(get(&router, "foo.example.com", "/x"), Some((0, 0, 0)));
    assert_eq!(get(&router, "a.bar.example.com", "/x"), Some((1, 0, 0)));
    // `*.com` narrows to the listener's `*.example.com`, a less specific virtual host than
    // `*.bar.example.com`: requests for a.bar.example.com do not fall back to it.
    assert_eq!(get(&router, "a.bar.example.com", "/wide"), Some((1, 0, 0)));
    assert_eq!(get(&router, "x.example.com", "/wide"), Some((1, 1, 0)));
    assert_eq!(get(&router, "x.example.com", "/"), None);
    assert_eq!(get(&router, "example.com", "/"), None);
}

#[test]
fn most_specific_route_hostname_without_fallback() {
    let router = build(vec![listener(
        None,
        vec![
            route("any", &[], vec![Rule::prefix("/")]),
            route("wild", &["*.example.com"], vec![Rule::prefix("/w")]),
            route(
                "wild-foo",
                &["*.foo.example.com"],
                vec![Rule::prefix("/wf")],
            ),
            route("exact", &["a.foo.example.com"], vec![Rule::exact("/e")]),
        ],
    )]);
    assert_eq!(get(&router, "a.foo.example.com", "/e"), Some((0, 3, 0)));
    assert_eq!(
        get(&router, "a.foo.example.com", "/wf"),
        None,
        "exact host, no fallback"
    );
    assert_eq!(get(&router, "b.foo.example.com", "/wf"), Some((0, 2, 0)));
    assert_eq!(get(&router, "b.foo.example.com", "/w"), None);
    assert_eq!(get(&router, "x.example.com", "/w/x"), Some((0, 1, 0)));
    assert_eq!(get(&router, "x.example.com", "/"), None);
    assert_eq!(get(&router, "example.com", "/anything"), Some((0, 0, 0)));
    assert_eq!(get(&router, "other.org", "/w"), Some((0, 0, 0)));
}

#[test]
fn route_not_intersecting_listener_is_not_served() {
    let router = build(vec![listener(
        Some("*.example.com"),
        vec![route(
            "other",
            &["other.org", "example.com"],
            vec![Rule::prefix("/")],
        )],
    )]);
    assert_eq!(get(&router, "a.example.com", "/"), None);
    assert_eq!(get(&router, "other.org", "/"), None);
    assert_eq!(get(&router, "example.com", "/"), None);
}

#[test]
fn segment_prefix_and_matched_prefix() {
    let router = build(vec![listener(
        None,
        vec![route(
            "r",
            &[],
            vec![
                Rule::prefix("/"),
                Rule::prefix("/v2/"),
                Rule::prefix("/prefix/one"),
                Rule::exact("/exact"),
            ],
        )],
    )]);
    let look = |path: &str| {
        router
            .lookup(&Req::new("h", path).parts())
            .map(|h| (h.rule, h.matched_prefix))
    };
    assert_eq!(look("/v2"), Some((1, Some(3))));
    assert_eq!(look("/v2/"), Some((1, Some(3))));
    assert_eq!(look("/v2/x"), Some((1, Some(3))));
    assert_eq!(look("/v2//x"), Some((1, Some(3))));
    assert_eq!(look("/v2example"), Some((0, Some(0))));
    assert_eq!(look("/foo/v2/example"), Some((0, Some(0))));
    assert_eq!(look("/V2"), Some((0, Some(0))));
    assert_eq!(look("/prefix/one/two"), Some((2, Some(11))));
    assert_eq!(look("/prefix/one"), Some((2, Some(11))));
    assert_eq!(look("/prefix/onetwo"), Some((0, Some(0))));
    assert_eq!(look("/exact"), Some((3, None)));
    assert_eq!(look("/"), Some((0, Some(0))));
    assert_eq!(look(""), Some((0, Some(0))));
    assert_eq!(look("*"), Some((0, Some(0))));
}

#[test]
fn exact_is_literal_and_case_sensitive() {
    let router = build(vec![listener(
        None,
        vec![route(
            "r",
            &[],
            vec![Rule::exact("/one"), Rule::exact("/two/")],
        )],
    )]);
    assert_eq!(get(&router, "h", "/one"), Some((0, 0, 0)));
    assert_eq!(get(&router, "h", "/One"), None);
    assert_eq!(get(&router, "h", "/one/"), None);
    assert_eq!(get(&router, "h", "/two/"), Some((0, 0, 1)));
    assert_eq!(get(&router, "h", "/two"), None);
    assert_eq!(get(&router, "h", "/three"), None);
}

#[test]
fn path_kind_precedence_across_routes() {
    let router = build(vec![listener(
        None,
        vec![
            route("prefix", &[], vec![Rule::prefix("/a")]),
            route("longer-prefix", &[], vec![Rule::prefix("/a/b")]),
            route(
                "regex",
                &[],
                vec![
                    Rule::default()
                        .matching(path_match(PathMatch::RegularExpression("/a/.*".into()))),
                ],
            ),
            route(
                "longer-regex",
                &[],
                vec![
                    Rule::default().matching(path_match(PathMatch::RegularExpression(
                        "/a/b/[a-z]+".into(),
                    ))),
                ],
            ),
            route("exact", &[], vec![Rule::exact("/a/b/c")]),
        ],
    )]);
    assert_eq!(
        get(&router, "h", "/a/b/c"),
        Some((0, 4, 0)),
        "exact beats regex and prefix"
    );
    assert_eq!(
        get(&router, "h", "/a/b/cd"),
        Some((0, 3, 0)),
        "longer regex beats shorter"
    );
    assert_eq!(
        get(&router, "h", "/a/b/1"),
        Some((0, 2, 0)),
        "regex beats prefix"
    );
    assert_eq!(
        get(&router, "h", "/a/b"),
        Some((0, 2, 0)),
        "regex /a/.* matches /a/b"
    );
    assert_eq!(get(&router, "h", "/a"), Some((0, 0, 0)));
    let no_regex = build(vec![listener(
        None,
        vec![
            route("prefix", &[], vec![Rule::prefix("/a")]),
            route("longer-prefix", &[], vec![Rule::prefix("/a/b")]),
        ],
    )]);
    assert_eq!(
        get(&no_regex, "h", "/a/b/c"),
        Some((0, 1, 0)),
        "longer prefix beats older route"
    );
    assert_eq!(get(&no_regex, "h", "/a/bc"), Some((0, 0, 0)));
}

#[test]
fn method_then_headers_then_query_precedence() {
    let m = |method: Option<&str>, headers: Vec<HeaderMatch>, q: Vec<QueryParamMatch>| RouteMatch {
        path: PathMatch::Prefix("/".into()),
        headers,
        query_params: q,
        method: method.map(str::to_owned),
    };
    let router = build(vec![listener(
        None,
        vec![
            route("plain", &[], vec![Rule::prefix("/")]),
            route(
                "q2",
                &[],
                vec![Rule::default().matching(m(
                    None,
                    vec![],
                    vec![query("a", "1"), query("b", "1")],
                ))],
            ),
            route(
                "q1",
                &[],
                vec![Rule::default().matching(m(None, vec![], vec![query("a", "1")]))],
            ),
            route(
                "h1",
                &[],
                vec![Rule::default().matching(m(
                    None,
                    vec![header("x", "1")],
                    vec![query("a", "1")],
                ))],
            ),
            route(
                "h2",
                &[],
                vec![Rule::default().matching(m(
                    None,
                    vec![header("x", "1"), header("y", "1")],
                    vec![],
                ))],
            ),
            route(
                "method",
                &[],
                vec![Rule::default().matching(m(Some("POST"), vec![], vec![]))],
            ),
        ],
    )]);
    let base = || Req::new("h", "/p");
    assert_eq!(hit(&router, &base()), Some((0, 0, 0)));
    assert_eq!(hit(&router, &base().query("a=1")), Some((0, 2, 0)));
    assert_eq!(
        hit(&router, &base().query("b=1&a=1")),
        Some((0, 1, 0)),
        "more query params"
    );
    assert_eq!(
        hit(&router, &base().query("a=1&b=1").header("x", "1")),
        Some((0, 3, 0)),
        "headers beat query params"
    );
    assert_eq!(
        hit(
            &router,
            &base().query("a=1").header("x", "1").header("y", "1")
        ),
        Some((0, 4, 0)),
        "more headers"
    );
    let all = base()
        .query("a=1&b=1")
        .header("x", "1")
        .header("y", "1")
        .method("POST");
    assert_eq!(hit(&router, &all), Some((0, 5, 0)), "method beats headers");
    assert_eq!(
        hit(&router, &base().method("POST").query("a=1")),
        Some((0, 5, 0))
    );
    // Longer path still beats everything else.
    let router = build(vec![listener(
        None,
        vec![
            route(
                "method",
                &[],
                vec![Rule::default().matching(m(Some("GET"), vec![header("x", "1")], vec![]))],
            ),
            route("path", &[], vec![Rule::prefix("/p")]),
        ],
    )]);
    assert_eq!(hit(&router, &base().header("x", "1")), Some((0, 1, 0)));
    assert_eq!(
        hit(&router, &Req::new("h", "/q").header("x", "1")),
        Some((0, 0, 0))
    );
}

#[test]
fn age_name_rule_and_match_order_break_ties() {
    let mut young = route("a-young", &[], vec![Rule::prefix("/")]);
    young.created = 20;
    let mut old = route("z-old", &[], vec![Rule::prefix("/")]);
    old.created = 10;
    let router = build(vec![listener(None, vec![young.clone(), old.clone()])]);
    assert_eq!(get(&router, "h", "/"), Some((0, 1, 0)), "older route wins");

    // Same age: `namespace/name` alphabetical, compared as one string ("a-b/x" < "a/x").
    let mut dash = Route::new("a-b", "x");
    dash.rules = vec![Rule::prefix("/")];
    let mut plain = Route::new("a", "x");
    plain.rules = vec![Rule::prefix("/")];
    let router = build(vec![listener(None, vec![plain.clone(), dash.clone()])]);
    assert_eq!(get(&router, "h", "/"), Some((0, 1, 0)));
    let router = build(vec![listener(None, vec![dash, plain])]);
    assert_eq!(get(&router, "h", "/"), Some((0, 0, 0)));

    // Same route: the first rule wins; matches are ORed.
    let r = route(
        "r",
        &[],
        vec![
            Rule::default()
                .matching(path_match(PathMatch::Exact("/x".into())))
                .matching(path_match(PathMatch::Prefix("/same".into()))),
            Rule::prefix("/same"),
        ],
    );
    let router = build(vec![listener(None, vec![r])]);
    assert_eq!(get(&router, "h", "/same/1"), Some((0, 0, 0)));
    assert_eq!(get(&router, "h", "/x"), Some((0, 0, 0)));
    assert_eq!(get(&router, "h", "/y"), None);
}

#[test]
fn rule_without_matches_is_prefix_root() {
    let router = build(vec![listener(
        None,
        vec![route("r", &[], vec![Rule::default()])],
    )]);
    let h = router.lookup(&Req::new("h", "/any/path").parts());
    assert_eq!(
        h,
        Some(RouteHit {
            listener: 0,
            route: 0,
            rule: 0,
            matched_prefix: Some(0)
        })
    );
}

#[test]
fn conformance_matching_scenario() {
    // HTTPRouteMatching: `/` -> v1, `/v2` -> v2, header version=two -> v2.
    let router = build(vec![listener(
        None,
        vec![route(
            "matching",
            &[],
            vec![
                Rule::prefix("/"),
                Rule::prefix("/v2"),
                Rule::default().matching(RouteMatch {
                    headers: vec![header("version", "two")],
                    ..RouteMatch::default()
                }),
            ],
        )],
    )]);
    let cases = [
        (Req::new("h", "/"), 0),
        (Req::new("h", "/example"), 0),
        (Req::new("h", "/").header("version", "one"), 0),
        (Req::new("h", "/v2"), 1),
        (Req::new("h", "/v2/example"), 1),
        (Req::new("h", "/").header("Version", "two"), 2),
        (Req::new("h", "/v2/"), 1),
        (Req::new("h", "/v2example"), 0),
        (Req::new("h", "/foo/v2/example"), 0),
    ];
    for (req, rule) in cases {
        assert_eq!(hit(&router, &req), Some((0, 0, rule)), "{}", req.path);
    }
}

#[test]
fn empty_and_missing_routes_are_404() {
    let router = build(vec![]);
    assert_eq!(get(&router, "h", "/"), None);
    let router = build(vec![listener(None, vec![])]);
    assert_eq!(get(&router, "h", "/"), None);
    let router = build(vec![listener(None, vec![route("r", &[], vec![])])]);
    assert_eq!(get(&router, "h", "/"), None);
    let router = build(vec![listener(
        None,
        vec![route("r", &[], vec![Rule::prefix("/a")])],
    )]);
    assert_eq!(get(&router, "h", "/b"), None);
    assert_eq!(get(&router, "h", "/"), None);
}

#[test]
fn an_invalid_route_is_left_out_alone_naming_route_and_rule() {
    let bad = route(
        "bad",
        &[],
        vec![
            Rule::prefix("/"),
            Rule::default().matching(path_match(PathMatch::RegularExpression(
                "/(unclosed".into(),
            ))),
        ],
    );
    let good = route("good", &[], vec![Rule::prefix("/")]);
    let router = BindRouter::build(&[listener(None, vec![bad, good])]).expect("builds");
    let rejected = router.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("ns/bad"), "{}", rejected[0]);
    assert!(rejected[0].contains("rule 1"), "{}", rejected[0]);
    // The whole bad route is out (its valid rule too); the good one serves.
    assert_eq!(get(&router, "a.com", "/"), Some((0, 1, 0)));
}

#[test]
fn invalid_hostnames_leave_out_their_listener_or_route() {
    let router = BindRouter::build(&[
        listener(
            Some("a.*.com"),
            vec![route("r0", &[], vec![Rule::prefix("/")])],
        ),
        listener(None, vec![route("r", &["*"], vec![Rule::prefix("/")])]),
    ])
    .expect("builds");
    let rejected = router.rejected();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0].starts_with("listener"), "{}", rejected[0]);
    assert!(rejected[1].contains("ns/r "), "{}", rejected[1]);
    assert_eq!(get(&router, "a.com", "/"), None);
}

#[test]
fn duplicate_listener_hostname_first_wins() {
    let router = build(vec![
        listener(
            Some("a.com"),
            vec![route("first", &[], vec![Rule::prefix("/")])],
        ),
        listener(
            Some("a.com"),
            vec![route("second", &[], vec![Rule::prefix("/")])],
        ),
    ]);
    assert_eq!(get(&router, "a.com", "/"), Some((0, 0, 0)));
}

/// The specificity of a hostname pattern: exact > longer wildcard > catch-all.
fn specificity(pattern: &str) -> (u8, usize) {
    if pattern.is_empty() {
        (0, 0)
    } else if pattern.starts_with("*.") {
        (1, pattern.len())
    } else {
        (2, pattern.len())
    }
}

/// Brute force: pick listener and route hostname by scanning, then the `max()` rank among every
/// compiled match whose conditions hold.
fn reference(listeners: &[Listener], router: &BindRouter, req: &Req) -> Option<RouteHit> {
    let host = host::normalize(host::strip_port(&req.host));
    let li = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| host::matches(l.hostname.as_deref().unwrap_or(""), &host))
        .max_by_key(|(i, l)| {
            (
                specificity(&host::normalize(l.hostname.as_deref().unwrap_or(""))),
                std::cmp::Reverse(*i),
            )
        })?
        .0;
    let l = &listeners[li];
    let served: Vec<Vec<String>> = l
        .routes
        .iter()
        .map(|r| {
            if r.hostnames.is_empty() {
                vec![host::normalize(l.hostname.as_deref().unwrap_or(""))]
            } else {
                r.hostnames
                    .iter()
                    .filter_map(|h| host::intersect(l.hostname.as_deref(), h))
                    .collect()
            }
        })
        .collect();
    let best_host = served
        .iter()
        .flatten()
        .filter(|p| host::matches(p, &host))
        .max_by_key(|p| specificity(p))?
        .clone();
    router.routers[li]
        .candidates()
        .iter()
        .filter(|c| served[c.route].contains(&best_host))
        .filter_map(|c| {
            let prefix = c.matcher.path.check(&req.path)?;
            c.matcher
                .rest
                .hold(&req.parts())
                .then_some((c.rank, c.route, c.rule, prefix))
        })
        .max_by_key(|(rank, ..)| *rank)
        .map(|(_, route, rule, matched_prefix)| RouteHit {
            listener: li,
            route,
            rule,
            matched_prefix,
        })
}

/// A tiny deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const LISTENER_HOSTS: &[Option<&str>] = &[
    None,
    Some("*.example.com"),
    Some("foo.example.com"),
    Some("*.foo.example.com"),
];
const ROUTE_HOSTS: &[&str] = &[
    "a.example.com",
    "foo.example.com",
    "*.example.com",
    "*.foo.example.com",
    "x.foo.example.com",
    "other.org",
    "*.org",
];
const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b"];
const REGEXES: &[&str] = &["/a/.*", "/a.*", "/[ab/]+", "/a/b/c"];
const HOSTS: &[&str] = &[
    "a.example.com",
    "foo.example.com",
    "x.foo.example.com",
    "y.x.foo.example.com",
    "example.com",
    "other.org",
    "z.other.org",
    "FOO.example.com:80",
];
const REQ_PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/a/b/", "/ab", "/a/b/c", "/a/b/c/d", "/b", "/c", "", "/a//b",
];

/// A random bind: one to three listeners with random routes, rules and matches.
fn random_listeners(rng: &mut Lcg) -> Vec<Listener> {
    let mut listeners = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let mut routes = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let mut route = Route::new(rng.pick(&["ns1", "ns2"]), format!("r{}", rng.below(3)));
            route.created = rng.below(3) as i64;
            for _ in 0..rng.below(3) {
                route.hostnames.push((rng.pick(ROUTE_HOSTS)).to_owned());
            }
            for _ in 0..rng.below(4) {
                let mut rule = Rule::default();
                for _ in 0..rng.below(3) {
                    let path = match rng.below(3) {
                        0 => PathMatch::Exact((rng.pick(PATHS)).into()),
                        1 => PathMatch::Prefix((rng.pick(PATHS)).into()),
                        _ => PathMatch::RegularExpression((rng.pick(REGEXES)).into()),
                    };
                    let headers = (0..rng.below(3))
                        .map(|_| header(rng.pick(&["x", "y"]), rng.pick(&["1", "2"])))
                        .collect();
                    let query_params = (0..rng.below(2))
                        .map(|_| query("q", rng.pick(&["1", "2"])))
                        .collect();
                    let method = [None, Some("GET"), Some("POST")][rng.below(3)].map(str::to_owned);
                    rule.matches.push(RouteMatch {
                        path,
                        headers,
                        query_params,
                        method,
                    });
                }
                route.rules.push(rule);
            }
            routes.push(route);
        }
        listeners.push(listener(rng.pick(LISTENER_HOSTS), routes));
    }
    listeners
}

/// A random request over the hosts, paths, headers and query strings of the generator.
fn random_req(rng: &mut Lcg) -> Req {
    let mut req = Req::new(rng.pick(HOSTS), rng.pick(REQ_PATHS)).method(rng.pick(&["GET", "POST"]));
    if rng.below(2) == 0 {
        req = req.header("x", "1");
    }
    if rng.below(2) == 0 {
        req = req.header("y", rng.pick(&["1", "2"]));
    }
    if rng.below(2) == 0 {
        req = req.query(rng.pick(&["q=1", "q=2", "q=2&q=1", "a=1&q=1"]));
    }
    req
}

#[test]
fn indexed_lookup_equals_brute_force_max() {
    let mut rng = Lcg(7);
    let mut hits = 0;
    for _ in 0..300 {
        let listeners = random_listeners(&mut rng);
        let router = build(listeners.clone());
        for _ in 0..100 {
            let req = random_req(&mut rng);
            let want = reference(&listeners, &router, &req);
            hits += usize::from(want.is_some());
            assert_eq!(
                router.lookup(&req.parts()),
                want,
                "{}{} in {listeners:#?}",
                req.host,
                req.path
            );
        }
    }
    assert!(
        hits > 3000,
        "the generator should produce many hits, got {hits}"
    );
}

/// `explain`'s trace agrees with the lookup: the greatest-ranked holding match of the trace is
/// the lookup's hit; a route whose matches hold (or not) in the trace is (or is not) hit by a
/// router holding that route alone, at the trace's best rule; a route none of whose hostnames
/// matches the host is not hit alone either.
#[test]
fn trace_agrees_with_lookup() {
    use trace::RouteTrace;
    let mut rng = Lcg(11);
    let (mut held, mut failed, mut hostname) = (0, 0, 0);
    for _ in 0..150 {
        let listeners = random_listeners(&mut rng);
        let router = build(listeners.clone());
        // Each route alone on its listener.
        let alone: Vec<Vec<BindRouter>> = listeners
            .iter()
            .map(|l| {
                l.routes
                    .iter()
                    .map(|r| {
                        let mut one = l.clone();
                        one.routes = vec![r.clone()];
                        build(vec![one])
                    })
                    .collect()
            })
            .collect();
        for _ in 0..40 {
            let req = random_req(&mut rng);
            let parts = req.parts();
            let listener = router.listener_with_pattern(&req.host).map(|(i, _)| i);
            assert_eq!(listener, router.listener_for(&req.host));
            let Some(li) = listener else {
                assert_eq!(router.lookup(&parts), None);
                continue;
            };
            let trace = router.trace(li, &parts).expect("listener traced");
            assert_eq!(trace.routes.len(), listeners[li].routes.len());
            let best = trace
                .routes
                .iter()
                .enumerate()
                .filter_map(|(route, t)| match t {
                    RouteTrace::Matches(ms) => Some(ms.iter().map(move |m| (route, m))),
                    _ => None,
                })
                .flatten()
                .filter(|(_, m)| m.outcome.is_ok())
                .max_by_key(|(_, m)| m.rank)
                .map(|(route, m)| RouteHit {
                    listener: li,
                    route,
                    rule: m.rule,
                    matched_prefix: *m.outcome.as_ref().expect("held"),
                });
            assert_eq!(best, router.lookup(&parts), "{}{}", req.host, req.path);
            for (ri, t) in trace.routes.iter().enumerate() {
                let alone_hit = alone[li][ri].lookup(&parts).map(|h| h.rule);
                match t {
                    RouteTrace::Matches(ms) => {
                        let best_rule = ms
                            .iter()
                            .filter(|m| m.outcome.is_ok())
                            .max_by_key(|m| m.rank)
                            .map(|m| m.rule);
                        if best_rule.is_some() {
                            held += 1;
                        } else {
                            failed += 1;
                        }
                        assert_eq!(alone_hit, best_rule, "route {ri} {}{}", req.host, req.path);
                    }
                    RouteTrace::Hostname { matching: None, .. } | RouteTrace::NotServed => {
                        hostname += 1;
                        assert_eq!(alone_hit, None, "route {ri} {}{}", req.host, req.path);
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        held > 300 && failed > 300 && hostname > 300,
        "the generator should cover every verdict: {held} held, {failed} failed, {hostname} hostname"
    );
}
