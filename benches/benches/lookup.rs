//! `BindRouter::lookup` latency with 10, 1,000 and 10,000 HTTPRoutes on one bind.
//!
//! Run: `cargo bench -p gateway-benches --bench lookup`. Results are written up in
//! `docs/benchmarks.md`.
//!
//! The bind has three listeners (no hostname, `*.internal.example.org`, `api.example.org`); all
//! benchmark routes are on the first. Route `i` has a hostname (`svc{i}.example.com`,
//! `*.team{i}.example.net`, or none for every 50th route) and up to three rules: a path prefix `/api/v{i%3}/svc{i}`, an exact path `/exact/{i}`, and every 5th
//! route a prefix with a header match (`x-canary: true`). Each measured iteration looks up the
//! next of 1,024 pre-built requests, so caches see varied hosts and paths.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_core::config::{
    HeaderMatch, Listener, PathMatch, Route, RouteMatch, Rule, StringMatch,
};
use gateway_core::routing::{BindRouter, RequestParts};
use http::{HeaderMap, HeaderValue};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const REQUESTS: usize = 1_024;

fn hostname(i: usize) -> Option<String> {
    match i % 50 {
        0 => None,
        n if n % 7 == 0 => Some(format!("*.team{i}.example.net")),
        _ => Some(format!("svc{i}.example.com")),
    }
}

/// The host a request for route `i` uses.
fn request_host(i: usize) -> String {
    match hostname(i) {
        None => "anything.example.io".to_owned(),
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => format!("Web.{suffix}:8080"),
            None => h,
        },
    }
}

fn route(i: usize) -> Route {
    let mut r = Route::new(format!("ns{}", i % 17), format!("route-{i}"));
    r.created = (i % 100) as i64;
    r.hostnames.extend(hostname(i));
    r.rules
        .push(Rule::prefix(format!("/api/v{}/svc{i}", i % 3)));
    r.rules.push(Rule::exact(format!("/exact/{i}")));
    if i.is_multiple_of(5) {
        r.rules.push(Rule::default().matching(RouteMatch {
            path: PathMatch::Prefix(format!("/api/v{}", i % 3)),
            headers: vec![HeaderMatch {
                name: "x-canary".into(),
                value: StringMatch::Exact("true".into()),
            }],
            ..RouteMatch::default()
        }));
    }
    r
}

fn listeners(routes: usize) -> Vec<Listener> {
    let mut any = Listener::new("bench/gw/http", 80);
    any.routes = (0..routes).map(|i| route(i).into()).collect();
    let wildcard = Listener::new("bench/gw/wildcard", 80)
        .hostname("*.internal.example.org")
        .route(Route::new("bench", "wildcard").rule(Rule::prefix("/")));
    let exact = Listener::new("bench/gw/exact", 80)
        .hostname("api.example.org")
        .route(Route::new("bench", "exact").rule(Rule::prefix("/")));
    vec![any, wildcard, exact]
}

/// An owned request; `parts()` borrows it like the proxy does.
struct Req {
    host: String,
    path: String,
    headers: HeaderMap,
}

impl Req {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            host: &self.host,
            path: &self.path,
            query: Some("page=2&sort=asc"),
            method: "GET",
            headers: &self.headers,
        }
    }
}

fn headers(canary: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    if canary {
        h.insert("x-canary", HeaderValue::from_static("true"));
    }
    h
}

/// A pseudo-random route index for request `k`.
fn pick(k: usize, routes: usize) -> usize {
    (k.wrapping_mul(2_654_435_761) >> 7) % routes
}

/// Kinds of request measured: name, and the request for route `i`.
type Make = fn(usize) -> Req;

const KINDS: [(&str, Make); 5] = [
    ("hit_prefix", |i| Req {
        host: request_host(i),
        path: format!("/api/v{}/svc{i}/items/42", i % 3),
        headers: headers(false),
    }),
    ("hit_exact", |i| Req {
        host: request_host(i),
        path: format!("/exact/{i}"),
        headers: headers(false),
    }),
    ("hit_header", |i| {
        // Only every 5th route has the header rule; use the nearest one.
        let i = i - i % 5;
        Req {
            host: request_host(i),
            path: format!("/api/v{}/other/path", i % 3),
            headers: headers(true),
        }
    }),
    ("miss_path", |i| Req {
        host: request_host(i),
        path: format!("/nothing/here/{i}"),
        headers: headers(false),
    }),
    ("miss_host", |i| Req {
        host: format!("unknown{i}.example.com"),
        path: format!("/unknown/{i}"),
        headers: headers(false),
    }),
];

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for routes in SIZES {
        let router =
            BindRouter::build(&listeners(routes)).expect("benchmark configuration is valid");
        for (kind, make) in KINDS {
            let reqs: Vec<Req> = (0..REQUESTS).map(|k| make(pick(k, routes))).collect();
            // Check the scenario does what its name says before timing it.
            let hits = reqs
                .iter()
                .filter(|r| router.lookup(&r.parts()).is_some())
                .count();
            let expect_hit = kind.starts_with("hit");
            let want = if expect_hit { REQUESTS } else { 0 };
            assert_eq!(hits, want, "{kind} with {routes} routes");
            group.bench_with_input(BenchmarkId::new(kind, routes), &reqs, |b, reqs| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) % REQUESTS;
                    black_box(router.lookup(black_box(&reqs[k].parts())))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
