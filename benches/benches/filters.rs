//! The per-request cost of the built-in filters, as the gateway runs them on every request a
//! rule with filters takes: header edits alone, `URLRewrite` alone, and a typical chain.
//!
//! Run: `cargo bench -p gateway-benches --bench filters`. The route count does not enter here:
//! filters are compiled per rule and a request only runs its own rule's chain, so these figures
//! hold at any table size (the table size shows in `lookup` and `compile`).
//!
//! Every case runs the public functions the gateway's request path calls
//! ([`CompiledHeaderModifier::apply_request`] / [`CompiledHeaderModifier::apply_response`],
//! [`apply_url_rewrite`]) on a copy of a realistic request or response (8 request headers,
//! 4 response headers); making the copy is not timed.
//!
//! * `header_edits/request_set1`: one `set` (the peer comparison's `x-route` header);
//! * `header_edits/request_mixed`: 2 `set`, 2 `add`, 2 `remove`;
//! * `header_edits/response_mixed`: the same on a response;
//! * `rewrite/prefix`: `URLRewrite` `ReplacePrefixMatch` with a query string kept;
//! * `rewrite/full_path_and_host`: `ReplaceFullPath` plus a new hostname;
//! * `chain/typical`: `RequestHeaderModifier` (mixed), `URLRewrite` (prefix), then
//!   `ResponseHeaderModifier` (mixed) on the response: one request's whole filter work.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gateway_core::config::{HeaderModifier, PathModifier, UrlRewrite};
use gateway_core::filter::{CompiledHeaderModifier, apply_url_rewrite};
use gateway_core::{RequestHeader, ResponseHeader};

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn modifier(m: HeaderModifier) -> CompiledHeaderModifier {
    CompiledHeaderModifier::compile(&m).expect("valid header modifier")
}

fn mixed() -> CompiledHeaderModifier {
    modifier(HeaderModifier {
        set: pairs(&[("x-route", "42"), ("x-forwarded-proto", "https")]),
        add: pairs(&[("x-env", "bench"), ("via", "1.1 gateway")]),
        remove: vec!["x-debug".into(), "cookie".into()],
    })
}

fn request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/svc-42/items/7?page=2&sort=asc", None)
        .expect("valid request");
    for (n, v) in [
        ("host", "svc42.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, br"),
        ("x-request-id", "5d0c2f1e-8a6b-4c3d-9e7f-0a1b2c3d4e5f"),
        ("x-debug", "1"),
        ("cookie", "session=abcdef0123456789"),
        ("x-forwarded-for", "192.0.2.10"),
    ] {
        req.insert_header(n, v).expect("valid header");
    }
    req
}

fn response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).expect("valid response");
    for (n, v) in [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("cache-control", "no-store"),
        ("x-debug", "backend-7"),
    ] {
        resp.insert_header(n, v).expect("valid header");
    }
    resp
}

fn bench_filters(c: &mut Criterion) {
    let set1 = modifier(HeaderModifier {
        set: pairs(&[("x-route", "42")]),
        ..HeaderModifier::default()
    });
    let mixed_req = mixed();
    let mixed_resp = mixed();
    let prefix = UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch("/api/v2".into())),
    };
    let full = UrlRewrite {
        hostname: Some("internal.example.net".into()),
        path: Some(PathModifier::ReplaceFullPath("/index".into())),
    };
    // "/svc-42/" is the matched prefix: 7 bytes ("/svc-42").
    let matched = Some(7);

    // Check the cases do what their names say before timing them.
    let mut r = request();
    mixed_req.apply_request(&mut r).unwrap();
    apply_url_rewrite(&mut r, &prefix, matched).unwrap();
    assert_eq!(r.uri.path(), "/api/v2/items/7");
    assert_eq!(r.uri.query(), Some("page=2&sort=asc"));
    assert!(r.headers.get("cookie").is_none());
    assert_eq!(r.headers.get("x-route").unwrap(), "42");
    let mut r = request();
    apply_url_rewrite(&mut r, &full, matched).unwrap();
    assert_eq!(r.uri.path(), "/index");
    assert_eq!(r.headers.get("host").unwrap(), "internal.example.net");

    let mut group = c.benchmark_group("filters");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let req = request();
    let resp = response();
    group.bench_function("header_edits/request_set1", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| set1.apply_request(black_box(r)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("header_edits/request_mixed", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| mixed_req.apply_request(black_box(r)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("header_edits/response_mixed", |b| {
        b.iter_batched_ref(
            || resp.clone(),
            |r| mixed_resp.apply_response(black_box(r)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rewrite/prefix", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| apply_url_rewrite(black_box(r), &prefix, matched),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rewrite/full_path_and_host", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| apply_url_rewrite(black_box(r), &full, matched),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("chain/typical", |b| {
        b.iter_batched_ref(
            || (req.clone(), resp.clone()),
            |(rq, rs)| {
                mixed_req.apply_request(black_box(rq))?;
                apply_url_rewrite(rq, &prefix, matched)?;
                mixed_resp.apply_response(black_box(rs))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_filters);
criterion_main!(benches);
