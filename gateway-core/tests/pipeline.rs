//! End-to-end tests of the request pipeline through real loopback sockets: filter order, the
//! filter API (typed context, route info, body hooks, logging), DirectResponse, endpoint
//! pickers, connection failover, outlier ejection, retries and budgets, timeouts, mirrors, CORS,
//! sticky sessions and WebSocket upgrades.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{
    DirectResponse, Endpoint, EndpointPicker, FilterAction, FilterCtx, FilterRegistry, Gateway,
    HttpFilter, PickRequest, ProxyError, ResponseHeader, Session, async_trait,
};
use http_body_util::{BodyExt, Full};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(port: u16, routes: Vec<Route>) -> Config {
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = routes.into_iter().map(Into::into).collect();
    Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    }
}

fn to(backends: &[&TestBackend], name: &str) -> BackendRef {
    BackendRef::endpoints(name, backends.iter().map(|b| b.addr).collect())
}

fn with_policy(mut b: BackendRef, f: impl FnOnce(&mut BackendPolicy)) -> BackendRef {
    if let BackendTarget::Endpoints(e) = &mut b.target {
        f(&mut e.policy);
    }
    b
}

fn set(name: &str, value: &str) -> Filter {
    Filter::RequestHeaderModifier(HeaderModifier {
        set: vec![(name.into(), value.into())],
        ..HeaderModifier::default()
    })
}

fn ext(kind: &str) -> Filter {
    Filter::ExtensionRef(ExtensionRef::new("test.example", kind, "x"))
}

async fn start(registry: FilterRegistry, routes: Vec<Route>) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::new(registry);
    gw.apply(config(port, routes)).await.unwrap();
    (gw, port)
}

/// Copies `x-a` into `x-b` as `saw-<x-a>`, stores a typed value, and echoes it and the route
/// name on the response.
struct Observer;

#[derive(Clone)]
struct Seen(String);

#[async_trait]
impl HttpFilter for Observer {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let a = session
            .req_header()
            .headers
            .get("x-a")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        session
            .req_header_mut()
            .insert_header("x-b", format!("saw-{a}"))
            .unwrap();
        ctx.extensions_mut().insert(Seen(a));
        Ok(FilterAction::Continue)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let seen = ctx.extensions().get::<Seen>().map_or("", |s| s.0.as_str());
        response.insert_header("x-seen", seen).unwrap();
        let route = format!(
            "{}/{}/{}",
            ctx.route().namespace,
            ctx.route().route,
            ctx.route().rule
        );
        response.insert_header("x-route", route).unwrap();
        response
            .insert_header("x-chosen-backend", ctx.backend().unwrap_or("-"))
            .unwrap();
        Ok(())
    }
}

#[tokio::test]
async fn filters_run_in_the_order_the_rule_lists_them() {
    let v1 = backend("v1").await;
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "Observer", Arc::new(Observer));
    let route = Route::new("ns", "r").rule(
        Rule::prefix("/")
            .filter(set("x-a", "1"))
            .filter(ext("Observer"))
            .filter(set("x-a", "2"))
            .backend(to(&[&v1], "ns/v1:80")),
    );
    let (gw, port) = start(registry, vec![route]).await;
    let r = get(addr(port), "a", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-a").as_deref(), Some("2"));
    assert_eq!(r.seen("x-b").as_deref(), Some("saw-1"));
    assert_eq!(r.headers["x-seen"], "1");
    assert_eq!(r.headers["x-route"], "ns/r/0");
    assert_eq!(r.headers["x-chosen-backend"], "ns/v1:80");
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Answers 403 unless `x-allow` is present.
struct Gate;

#[async_trait]
impl HttpFilter for Gate {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if session.req_header().headers.contains_key("x-allow") {
            Ok(FilterAction::Continue)
        } else {
            Ok(FilterAction::Respond(DirectResponse::text(403, "no")))
        }
    }
}

/// Counts logging calls and marks responses.
struct Counter(Arc<AtomicUsize>);

#[async_trait]
impl HttpFilter for Counter {
    async fn response_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        response.insert_header("x-counted", "1").unwrap();
        Ok(())
    }

    async fn logging(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        _error: Option<&ProxyError>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_filter_that_answers_stops_the_chain_and_response_and_logging_hooks_always_run() {
    let v1 = backend("v1").await;
    let logged = Arc::new(AtomicUsize::new(0));
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "Gate", Arc::new(Gate));
    registry.register_filter("test.example", "Counter", Arc::new(Counter(logged.clone())));
    let redirect = Filter::RequestRedirect(RequestRedirect {
        hostname: Some("elsewhere.example".into()),
        ..RequestRedirect::default()
    });
    let dead = BackendRef::endpoints("dead", vec![addr(free_port())]);
    let route = Route::new("ns", "r")
        // The gate comes first: without x-allow, 403 and no redirect.
        .rule(
            Rule::prefix("/gate-then-redirect")
                .filter(ext("Counter"))
                .filter(ext("Gate"))
                .filter(redirect.clone()),
        )
        // The redirect comes first: the gate after it never runs.
        .rule(
            Rule::prefix("/redirect-then-gate")
                .filter(ext("Counter"))
                .filter(redirect)
                .filter(ext("Gate")),
        )
        .rule(
            Rule::prefix("/proxied")
                .filter(ext("Counter"))
                .backend(to(&[&v1], "v1")),
        )
        .rule(Rule::prefix("/error").filter(ext("Counter")).backend(dead));
    let (gw, port) = start(registry, vec![route]).await;
    let r = get(addr(port), "a", "/gate-then-redirect").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["x-counted"], "1");
    let r = get_with(addr(port), "a", "/gate-then-redirect", &[("x-allow", "1")]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["x-counted"], "1");
    let r = get(addr(port), "a", "/redirect-then-gate").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers["location"],
        "http://elsewhere.example/redirect-then-gate"
    );
    let r = get(addr(port), "a", "/proxied").await;
    assert_eq!((r.status, r.backend()), (200, "v1"));
    assert_eq!(r.headers["x-counted"], "1");
    let r = get(addr(port), "a", "/error").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-counted"], "1");
    // Logging runs after the response is written; give the last one a moment.
    for _ in 0..50 {
        if logged.load(Ordering::SeqCst) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(logged.load(Ordering::SeqCst), 5);
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Buffers up to 16 bytes and upper-cases the body; a body saying "stop" is answered with 400.
struct Upper;

#[async_trait]
impl HttpFilter for Upper {
    async fn request_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        ctx.buffer_request_body(16);
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        assert!(end_of_stream, "a buffered body comes whole");
        let text = body
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if text == "stop" {
            return Ok(FilterAction::Respond(DirectResponse::text(400, "stopped")));
        }
        *body = Some(Bytes::from(format!("{}!", text.to_uppercase())));
        Ok(FilterAction::Continue)
    }
}

/// Echoes the request body, prefixed with its content-length header.
async fn body_echo() -> TestBackend {
    serve(|req: http::Request<hyper::body::Incoming>| async move {
        let length = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{length}:{}",
            String::from_utf8_lossy(&body)
        )))))
    })
    .await
}

#[tokio::test]
async fn body_hooks_see_the_whole_buffered_body_and_change_what_the_backend_gets() {
    let echo = body_echo().await;
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "Upper", Arc::new(Upper));
    let route = Route::new("ns", "r").rule(
        Rule::prefix("/")
            .filter(ext("Upper"))
            .backend(to(&[&echo], "echo")),
    );
    let (gw, port) = start(registry, vec![route]).await;
    let (status, _, body) = send_body(
        addr(port),
        "POST",
        "a",
        "/",
        &[],
        Bytes::from_static(b"hello"),
    )
    .await;
    assert_eq!((status, &body[..]), (200, &b"6:HELLO!"[..]));
    let (status, _, _) = send_body(
        addr(port),
        "POST",
        "a",
        "/",
        &[],
        Bytes::from_static(b"stop"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = send_body(
        addr(port),
        "POST",
        "a",
        "/",
        &[],
        Bytes::from(vec![b'x'; 17]),
    )
    .await;
    assert_eq!(status, 413);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn direct_response_from_an_extension_ref_with_its_settings() {
    let route = Route::new("ns", "r").rule(
        Rule::prefix("/").filter(Filter::ExtensionRef(
            ExtensionRef::new(
                gateway_core::filter::DIRECT_RESPONSE_GROUP,
                gateway_core::filter::DIRECT_RESPONSE_KIND,
                "teapot",
            )
            .with_config(serde_json::json!({
                "status": 418,
                "headers": [{"name": "x-tea", "value": "earl-grey"}],
                "body": "short and stout"
            })),
        )),
    );
    let (gw, port) = start(FilterRegistry::with_builtins(), vec![route]).await;
    let (status, headers, body) = send_body(addr(port), "GET", "a", "/", &[], Bytes::new()).await;
    assert_eq!(status, 418);
    assert_eq!(headers["x-tea"], "earl-grey");
    assert_eq!(&body[..], b"short and stout");
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Picks the endpoint whose port the `x-port` header names.
struct ByPort;

#[async_trait]
impl EndpointPicker for ByPort {
    async fn pick(
        &self,
        request: &PickRequest<'_>,
        endpoints: &[Endpoint],
        out: &mut Vec<usize>,
    ) -> gateway_core::Result<()> {
        let wanted = request
            .header
            .headers
            .get("x-port")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok());
        out.extend(
            endpoints
                .iter()
                .position(|e| Some(e.address().port()) == wanted),
        );
        Ok(())
    }
}

#[tokio::test]
async fn a_custom_endpoint_picker_chooses_per_attempt() {
    let a = backend("a").await;
    let b = backend("b").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    gw.register_picker("by-port", Arc::new(ByPort));
    let route = Route::new("ns", "r").rule(
        Rule::prefix("/").backend(with_policy(to(&[&a, &b], "ab"), |p| {
            p.load_balancer = LoadBalancer::Custom("by-port".into())
        })),
    );
    gw.apply(config(port, vec![route])).await.unwrap();
    let b_port = b.addr.port().to_string();
    for _ in 0..6 {
        let r = get_with(addr(port), "x", "/", &[("x-port", &b_port)]).await;
        assert_eq!(r.backend(), "b");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_unregistered_picker_answers_500() {
    let a = backend("a").await;
    let route =
        Route::new("ns", "r").rule(Rule::prefix("/").backend(with_policy(to(&[&a], "a"), |p| {
            p.load_balancer = LoadBalancer::Custom("nobody".into())
        })));
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    assert_eq!(get(addr(port), "x", "/").await.status, 500);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn least_request_prefers_the_idle_endpoint() {
    // Every answer of `slow` takes 400 ms; `fast` answers at once.
    let slow = serve(|_req| async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut resp = http::Response::new(Full::new(Bytes::from_static(b"slow")));
        resp.headers_mut()
            .insert("x-backend", "slow".parse().unwrap());
        Ok::<_, Infallible>(resp)
    })
    .await;
    let fast = fixed("fast", 200).await;
    let route = Route::new("ns", "r").rule(
        Rule::prefix("/").backend(with_policy(to(&[&slow, &fast], "lr"), |p| {
            p.load_balancer = LoadBalancer::LeastRequest
        })),
    );
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    // Twenty overlapping requests: round robin would send ten to each; least request sends
    // most to the endpoint that is not busy.
    let mut requests = Vec::new();
    for _ in 0..20 {
        requests.push(tokio::spawn(async move {
            let (_, headers, _) = send_body(addr(port), "GET", "x", "/", &[], Bytes::new()).await;
            headers["x-backend"].to_str().unwrap().to_owned()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fast_hits = 0;
    for r in requests {
        if r.await.unwrap() == "fast" {
            fast_hits += 1;
        }
    }
    assert!(fast_hits >= 15, "fast got {fast_hits} of 20");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_refused_endpoint_is_failed_over_without_a_retry_policy_and_ejected() {
    let live = backend("live").await;
    let dead_addr = addr(free_port());
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("two", vec![live.addr, dead_addr])));
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    for i in 0..40 {
        let r = get(addr(port), "x", "/").await;
        assert_eq!((r.status, r.backend()), (200, "live"), "request {i}");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn consecutive_5xx_eject_an_endpoint_but_never_the_last_one() {
    let good = backend("good").await;
    let bad = fixed("bad", 500).await;
    let route = Route::new("ns", "r")
        .rule(
            Rule::prefix("/two").backend(with_policy(to(&[&good, &bad], "two"), |p| {
                p.outlier_detection = Some(OutlierDetection {
                    consecutive_failures: 2,
                    ..OutlierDetection::default()
                })
            })),
        )
        .rule(
            Rule::prefix("/one").backend(with_policy(to(&[&bad], "one"), |p| {
                p.outlier_detection = Some(OutlierDetection {
                    consecutive_failures: 1,
                    ..OutlierDetection::default()
                })
            })),
        );
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(addr(port), "x", "/two").await.status);
    }
    let failures = statuses.iter().filter(|&&s| s == 500).count();
    assert_eq!(failures, 2, "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 200), "{statuses:?}");
    // The only endpoint keeps getting requests.
    for _ in 0..3 {
        assert_eq!(get(addr(port), "x", "/one").await.status, 500);
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

fn retry(codes: &[u16], attempts: u32) -> Option<Retry> {
    Some(Retry {
        codes: codes.to_vec(),
        attempts,
        backoff: Some(Duration::from_millis(1)),
    })
}

#[tokio::test]
async fn listed_statuses_are_retried_on_another_endpoint_within_the_budget() {
    let good = backend("good").await;
    let bad = fixed("bad", 503).await;
    let no_outliers = |b: BackendRef| with_policy(b, |p| p.outlier_detection = None);
    let mut retried = Rule::prefix("/retried").backend(no_outliers(to(&[&bad, &good], "a")));
    retried.retry = retry(&[503], 2);
    let plain = Rule::prefix("/plain").backend(no_outliers(to(&[&bad, &good], "b")));
    let mut unlisted = Rule::prefix("/unlisted").backend(no_outliers(to(&[&bad, &good], "c")));
    unlisted.retry = retry(&[500], 2);
    let mut broke = Rule::prefix("/broke").backend(with_policy(to(&[&bad, &good], "d"), |p| {
        p.outlier_detection = None;
        p.retry_budget = Some(RetryBudget {
            percent: 0,
            interval: Duration::from_secs(10),
            min_retries_per_second: 0,
        });
    }));
    broke.retry = retry(&[503], 2);
    let route = Route::new("ns", "r")
        .rule(retried)
        .rule(plain)
        .rule(unlisted)
        .rule(broke);
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    let count = |path: &'static str| async move {
        let mut ok = 0;
        for _ in 0..10 {
            if get(addr(port), "x", path).await.status == 200 {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(count("/retried").await, 10);
    assert_eq!(count("/plain").await, 5);
    assert_eq!(count("/unlisted").await, 5);
    assert_eq!(count("/broke").await, 5);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_last_attempt_answer_is_passed_through_when_retries_run_out() {
    let bad = fixed("bad", 503).await;
    let mut rule = Rule::prefix("/").backend(with_policy(to(&[&bad], "bad"), |p| {
        p.outlier_detection = None
    }));
    rule.retry = retry(&[503], 2);
    let (gw, port) = start(
        FilterRegistry::new(),
        vec![Route::new("ns", "r").rule(rule)],
    )
    .await;
    let (status, headers, body) = send_body(addr(port), "GET", "x", "/", &[], Bytes::new()).await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-backend"], "bad");
    assert_eq!(&body[..], b"bad says 503");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connection_resets_are_retried_under_a_policy_with_the_body_replayed() {
    let reset = resetter().await;
    let echo = body_echo().await;
    let no_outliers = |b: BackendRef| with_policy(b, |p| p.outlier_detection = None);
    let mut rule = Rule::prefix("/").backend(no_outliers(to(&[&reset, &echo], "mixed")));
    rule.retry = retry(&[], 2);
    let only_reset = Rule::prefix("/reset").backend(no_outliers(to(&[&reset], "reset")));
    let (gw, port) = start(
        FilterRegistry::new(),
        vec![Route::new("ns", "r").rule(rule).rule(only_reset)],
    )
    .await;
    // A backend that closes without answering is unavailable: 503, not 502.
    let (status, _, _) = send_body(addr(port), "POST", "x", "/reset", &[], Bytes::new()).await;
    assert_eq!(status, 503);
    for _ in 0..6 {
        let (status, _, body) = send_body(
            addr(port),
            "POST",
            "x",
            "/",
            &[],
            Bytes::from_static(b"payload"),
        )
        .await;
        assert_eq!((status, &body[..]), (200, &b"7:payload"[..]));
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Holds the whole request body (up to 1 MiB) without changing it, as an endpoint picker does.
struct Hold;

#[async_trait]
impl HttpFilter for Hold {
    async fn request_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        ctx.buffer_request_body(1024 * 1024);
        Ok(FilterAction::Continue)
    }
}

#[tokio::test]
async fn a_held_body_over_the_default_replay_buffer_is_proxied_and_replayed_on_a_retry() {
    let reset = resetter().await;
    let echo = body_echo().await;
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "Hold", Arc::new(Hold));
    let mut rule = Rule::prefix("/")
        .filter(ext("Hold"))
        .backend(with_policy(to(&[&reset, &echo], "mixed"), |p| {
            p.outlier_detection = None
        }));
    rule.retry = retry(&[], 2);
    let (gw, port) = start(registry, vec![Route::new("ns", "r").rule(rule)]).await;
    // Four times Pingora's default 64 KiB replay buffer.
    let large: Vec<u8> = (0..256 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    for _ in 0..4 {
        // Round robin: every other request starts on the resetting endpoint and is retried.
        let sent = send_body(
            addr(port),
            "POST",
            "x",
            "/",
            &[],
            Bytes::from(large.clone()),
        );
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("answered (a held body the proxy cannot send upstream hangs the request)");
        assert_eq!(status, 200);
        let expected = format!("{}:", large.len());
        assert_eq!(&body[..expected.len()], expected.as_bytes());
        assert!(
            body[expected.len()..] == large[..],
            "the backend got the whole body"
        );
    }
    // Over the filter's bound: 413.
    let (status, _, _) = send_body(
        addr(port),
        "POST",
        "x",
        "/",
        &[],
        Bytes::from(vec![b'x'; 1024 * 1024 + 1]),
    )
    .await;
    assert_eq!(status, 413);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn request_timeout_answers_504_but_a_streaming_response_is_not_cut() {
    let v1 = backend("v1").await;
    let streamer = serve(|_req| async move {
        // Five chunks, 100 ms apart: longer in total than the timeout, never idle as long.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(8);
        tokio::spawn(async move {
            for i in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from(format!("{i}")))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
        Ok::<_, Infallible>(http::Response::new(body))
    })
    .await;
    let mut slow = Rule::prefix("/slow").backend(to(&[&v1], "v1"));
    slow.timeouts.request = Some(Duration::from_millis(200));
    let mut stream = Rule::prefix("/stream").backend(to(&[&streamer], "s"));
    stream.timeouts.request = Some(Duration::from_millis(300));
    let mut attempt = Rule::prefix("/attempt").backend(to(&[&v1], "v1b"));
    attempt.timeouts.backend_request = Some(Duration::from_millis(200));
    let route = Route::new("ns", "r").rule(slow).rule(stream).rule(attempt);
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    assert_eq!(get(addr(port), "x", "/slow?delay=1000").await.status, 504);
    assert_eq!(get(addr(port), "x", "/slow?delay=10").await.status, 200);
    assert_eq!(
        get(addr(port), "x", "/attempt?delay=1000").await.status,
        504
    );
    let (status, _, body) = send_body(addr(port), "GET", "x", "/stream", &[], Bytes::new()).await;
    assert_eq!((status, &body[..]), (200, &b"01234"[..]));
    gw.shutdown(Duration::from_secs(1)).await;
}

/// A stream over an mpsc receiver, for streaming response bodies.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}

/// A backend that records what it received (path and body) and, after `delay`, sets `done`.
async fn recorder(
    delay: Duration,
) -> (
    TestBackend,
    Arc<std::sync::Mutex<Vec<(String, Bytes)>>>,
    Arc<AtomicBool>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (seen.clone(), done.clone());
    let b = serve(move |req: http::Request<hyper::body::Incoming>| {
        let (s, d) = (s.clone(), d.clone());
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            s.lock().unwrap().push((path, body));
            tokio::time::sleep(delay).await;
            d.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"mirror",
            ))))
        }
    })
    .await;
    (b, seen, done)
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn mirror(to: &TestBackend, name: &str, fraction: Option<(u32, u32)>) -> Filter {
    Filter::RequestMirror(Box::new(RequestMirror {
        backend: BackendRef::endpoints(name, vec![to.addr]),
        fraction,
    }))
}

#[tokio::test]
async fn mirrors_get_a_copy_with_the_body_and_a_slow_mirror_never_delays_the_primary() {
    let echo = body_echo().await;
    let (fast, fast_seen, _) = recorder(Duration::ZERO).await;
    let (slow, slow_seen, slow_done) = recorder(Duration::from_secs(3)).await;
    let (half, half_seen, _) = recorder(Duration::ZERO).await;
    let route = Route::new("ns", "r")
        .rule(
            Rule::prefix("/both")
                .filter(mirror(&fast, "fast", None))
                .filter(mirror(&slow, "slow", None))
                .backend(to(&[&echo], "echo")),
        )
        .rule(
            Rule::prefix("/half")
                .filter(mirror(&half, "half", Some((1, 2))))
                .backend(to(&[&echo], "echo")),
        );
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    let (status, _, body) = send_body(
        addr(port),
        "POST",
        "x",
        "/both",
        &[],
        Bytes::from_static(b"copy me"),
    )
    .await;
    assert_eq!((status, &body[..]), (200, &b"7:copy me"[..]));
    // The primary answered while the slow mirror is still busy.
    assert!(!slow_done.load(Ordering::SeqCst));
    assert!(eventually(|| fast_seen.lock().unwrap().len() == 1).await);
    assert_eq!(
        fast_seen.lock().unwrap()[0],
        ("/both".to_owned(), Bytes::from_static(b"copy me"))
    );
    assert!(eventually(|| slow_seen.lock().unwrap().len() == 1).await);
    for _ in 0..100 {
        assert_eq!(get(addr(port), "x", "/half").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mirrored = half_seen.lock().unwrap().len();
    assert!(
        (20..=80).contains(&mirrored),
        "{mirrored} of 100 mirrored at 1/2"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn cors_preflights_are_answered_and_simple_requests_annotated() {
    let v1 = backend("v1").await;
    let cors = Filter::Cors(Cors {
        allow_origins: vec!["https://www.foo.com".into(), "https://*.bar.com".into()],
        allow_methods: vec!["GET".into(), "PUT".into()],
        allow_headers: vec!["x-header-1".into()],
        expose_headers: vec!["x-exposed".into()],
        allow_credentials: true,
        max_age: Some(600),
    });
    let route =
        Route::new("ns", "r").rule(Rule::prefix("/").filter(cors).backend(to(&[&v1], "v1")));
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    let mut conn = H1::connect(addr(port)).await.unwrap();
    let pre = conn
        .send(
            "OPTIONS",
            "x",
            "/",
            &[
                ("origin", "https://a.bar.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1"),
            ],
        )
        .await;
    assert!(matches!(pre.status, 200 | 204), "{}", pre.status);
    assert_eq!(
        pre.headers["access-control-allow-origin"],
        "https://a.bar.com"
    );
    assert_eq!(pre.headers["access-control-allow-credentials"], "true");
    assert_eq!(pre.headers["access-control-max-age"], "600");
    assert_eq!(
        pre.body["backend"],
        serde_json::Value::Null,
        "answered by the gateway"
    );
    let simple = conn
        .send("GET", "x", "/", &[("origin", "https://www.foo.com")])
        .await;
    assert_eq!(simple.backend(), "v1");
    assert_eq!(
        simple.headers["access-control-allow-origin"],
        "https://www.foo.com"
    );
    let other = conn
        .send("GET", "x", "/", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(other.backend(), "v1");
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sticky_sessions_by_cookie_and_by_header() {
    let a = backend("a").await;
    let b = backend("b").await;
    let sticky = |kind, name: Option<&str>| SessionPersistence {
        name: name.map(str::to_owned),
        kind,
        absolute_timeout: None,
        idle_timeout: None,
        permanent: false,
        path: None,
    };
    let mut cookie = Rule::prefix("/cookie").backend(to(&[&a, &b], "ab"));
    cookie.session_persistence = Some(sticky(SessionKind::Cookie, None));
    let mut header = Rule::prefix("/header").backend(to(&[&a, &b], "ab2"));
    header.session_persistence = Some(sticky(SessionKind::Header, Some("x-session")));
    let (gw, port) = start(
        FilterRegistry::new(),
        vec![Route::new("ns", "r").rule(cookie).rule(header)],
    )
    .await;
    let first = get(addr(port), "x", "/cookie").await;
    let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("gw-session="), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    let token = set_cookie.split(';').next().unwrap().to_owned();
    for _ in 0..8 {
        let r = get_with(addr(port), "x", "/cookie", &[("cookie", &token)]).await;
        assert_eq!(r.backend(), first.backend());
    }
    let first = get(addr(port), "x", "/header").await;
    let token = first.headers["x-session"].to_str().unwrap().to_owned();
    for _ in 0..8 {
        let r = get_with(addr(port), "x", "/header", &[("x-session", &token)]).await;
        assert_eq!(r.backend(), first.backend());
    }
    // A forged token is ignored: requests still succeed, spread over both endpoints.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let r = get_with(addr(port), "x", "/header", &[("x-session", "forged")]).await;
        seen.insert(r.backend().to_owned());
    }
    assert_eq!(seen.len(), 2);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that switches protocols, then echoes raw bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            got += s.read(&mut buf[got..]).await.unwrap();
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let mut backend = BackendRef::endpoints("ws", vec![ws_addr]);
    if let BackendTarget::Endpoints(e) = &mut backend.target {
        e.protocol = BackendProtocol::WebSocket;
    }
    let mut rule = Rule::prefix("/").backend(backend);
    rule.timeouts.backend_request = Some(Duration::from_millis(200));
    let (gw, port) = start(
        FilterRegistry::new(),
        vec![Route::new("ns", "r").rule(rule)],
    )
    .await;
    let mut c = tokio::net::TcpStream::connect(addr(port)).await.unwrap();
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        got += c.read(&mut buf[got..]).await.unwrap();
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..got])
    );
    // Idle for longer than the backend request timeout: an upgraded connection is not cut.
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.write_all(b"hello over the upgrade").await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"hello over the upgrade");
    server.await.unwrap();
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn active_health_checks_take_a_failing_endpoint_out() {
    let good = backend("good").await;
    let sick = fixed("sick", 500).await;
    let route = Route::new("ns", "r").rule(Rule::prefix("/").backend(with_policy(
        to(&[&good, &sick], "checked"),
        |p| {
            p.outlier_detection = None;
            p.health_check = Some(HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(500),
                unhealthy_threshold: 1,
                healthy_threshold: 1,
                host: None,
            });
        },
    )));
    let (gw, port) = start(FilterRegistry::new(), vec![route]).await;
    let settled = async {
        for _ in 0..50 {
            let mut ok = true;
            for _ in 0..4 {
                ok &= get(addr(port), "x", "/").await.status == 200;
            }
            if ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(settled.await, "the sick endpoint kept getting requests");
    for _ in 0..10 {
        assert_eq!(get(addr(port), "x", "/").await.backend(), "good");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn endpoint_state_survives_a_configuration_swap() {
    let bad = fixed("bad", 500).await;
    let good = backend("good").await;
    let eject_after_one = |b: BackendRef| {
        with_policy(b, |p| {
            p.outlier_detection = Some(OutlierDetection {
                consecutive_failures: 1,
                base_ejection: Duration::from_secs(60),
                ..OutlierDetection::default()
            })
        })
    };
    // The bad endpoint is listed first: a fresh round robin would try it first.
    let rule = || Rule::prefix("/").backend(eject_after_one(to(&[&bad, &good], "ns/two:80")));
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(config(port, vec![Route::new("ns", "r").rule(rule())]))
        .await
        .unwrap();
    assert_eq!(get(addr(port), "x", "/").await.status, 500);
    assert_eq!(get(addr(port), "x", "/").await.status, 200);
    // A different configuration (one more route) with the same backend: the ejection holds.
    let other = Route::new("ns", "other").rule(Rule::prefix("/other").backend(to(&[&good], "g")));
    let report = gw
        .apply(config(
            port,
            vec![Route::new("ns", "r").rule(rule()), other],
        ))
        .await
        .unwrap();
    assert!(report.changed);
    for _ in 0..6 {
        assert_eq!(get(addr(port), "x", "/").await.backend(), "good");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_body_over_the_replay_bound_is_not_retried() {
    let reset = resetter().await;
    let echo = body_echo().await;
    let mut rule = Rule::prefix("/").backend(with_policy(to(&[&reset, &echo], "mixed"), |p| {
        p.outlier_detection = None
    }));
    rule.retry = retry(&[], 2);
    let (gw, port) = start(
        FilterRegistry::new(),
        vec![Route::new("ns", "r").rule(rule)],
    )
    .await;
    let small = Bytes::from(vec![b's'; 1024]);
    let large = Bytes::from(vec![b'l'; gateway_core::proxy::REPLAY_BUFFER + 1]);
    let mut large_failed = 0;
    for _ in 0..4 {
        // Round robin alternates: every other attempt starts on the resetting endpoint.
        let (status, _, _) = send_body(addr(port), "POST", "x", "/", &[], small.clone()).await;
        assert_eq!(status, 200);
        let (status, _, _) = send_body(addr(port), "POST", "x", "/", &[], large.clone()).await;
        if status != 200 {
            assert_eq!(status, 503);
            large_failed += 1;
        }
    }
    assert!(
        large_failed >= 1,
        "a large body that hit the reset was retried"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
