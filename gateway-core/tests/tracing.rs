//! OpenTelemetry tracing (feature `otel`) through real loopback sockets: an in-process OTLP
//! collector (OTLP/HTTP protobuf and OTLP/gRPC, decoded with opentelemetry-proto), a backend that
//! reports the headers it received, and the gateway between a client and both.
#![cfg(feature = "otel")]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway, OtlpProtocol, Tracing};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;

const LISTENER: &str = "test/gw/http";
const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the collector received: the exports' spans and the headers of the last export.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    resource: Arc<Mutex<HashMap<String, String>>>,
    headers: Arc<Mutex<http::HeaderMap>>,
}

impl Received {
    fn record(&self, headers: &http::HeaderMap, request: ExportTraceServiceRequest) {
        *self.headers.lock().unwrap() = headers.clone();
        for rs in request.resource_spans {
            for kv in rs.resource.into_iter().flat_map(|r| r.attributes) {
                if let Some(Value::StringValue(v)) = kv.value.and_then(|v| v.value) {
                    self.resource.lock().unwrap().insert(kv.key, v);
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `n` spans came; fails after 20 s.
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} spans (have {})",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An OTLP/HTTP collector on loopback (`POST /v1/traces`, protobuf).
async fn http_collector() -> (TestBackend, Received) {
    let received = Received::default();
    let r = received.clone();
    let server = serve(move |req: Request<Incoming>| {
        let r = r.clone();
        async move {
            let ok = req.uri().path() == "/v1/traces"
                && req.headers().get("content-type").map(|v| v.as_bytes())
                    == Some(b"application/x-protobuf");
            let headers = req.headers().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let status = match ExportTraceServiceRequest::decode(body) {
                Ok(export) if ok => {
                    r.record(&headers, export);
                    200
                }
                _ => 400,
            };
            let mut resp = Response::new(Full::new(Bytes::from(
                ExportTraceServiceResponse::default().encode_to_vec(),
            )));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            resp.headers_mut()
                .insert("content-type", "application/x-protobuf".parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    })
    .await;
    (server, received)
}

type GrpcBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// An OTLP/gRPC collector on loopback (h2c, `TraceService/Export`, status in trailers).
async fn grpc_collector() -> (TestBackend, Received) {
    let received = Received::default();
    let r = received.clone();
    let server = serve(move |req: Request<Incoming>| {
        let r = r.clone();
        async move {
            let ok = req.version() == http::Version::HTTP_2
                && req.uri().path()
                    == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                && req.headers().get("content-type").map(|v| v.as_bytes())
                    == Some(b"application/grpc");
            let headers = req.headers().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            // One uncompressed length-prefixed message.
            let decoded = (ok && body.len() >= 5 && body[0] == 0)
                .then(|| {
                    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                    (body.len() == 5 + len)
                        .then(|| ExportTraceServiceRequest::decode(body.slice(5..)).ok())
                        .flatten()
                })
                .flatten();
            let status = match decoded {
                Some(export) => {
                    r.record(&headers, export);
                    "0"
                }
                None => "3",
            };
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            let mut framed = vec![0];
            framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
            framed.extend_from_slice(&reply);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let body: GrpcBody = StreamBody::new(futures::stream::iter(vec![
                Ok(Frame::data(Bytes::from(framed))),
                Ok(Frame::trailers(trailers)),
            ]));
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    })
    .await;
    (server, received)
}

fn tracing(collector: SocketAddr) -> Tracing {
    let mut t = Tracing::new(format!("http://{collector}").parse().unwrap());
    t.batch_delay = Duration::from_millis(20);
    t.export_timeout = Duration::from_secs(2);
    t
}

/// A gateway on a free port: `/ok` to `backend` (rule "ok"), `/old` redirects, `/down` to a
/// port nothing listens on.
async fn gateway(backend: SocketAddr, tracing: Tracing) -> (Gateway, SocketAddr) {
    let port = free_port();
    let mut ok = Rule::prefix("/ok").backend(BackendRef::endpoints("v1", vec![backend]));
    ok.name = Some("ok".into());
    let redirect = Rule::exact("/old").filter(Filter::RequestRedirect(RequestRedirect {
        scheme: None,
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/new".into())),
        port: None,
        status_code: 302,
    }));
    let down =
        Rule::prefix("/down").backend(BackendRef::endpoints("dead", vec![addr(free_port())]));
    let mut listener = Listener::new(LISTENER, 80);
    listener.hostname = Some("app.example.com".into());
    listener.routes = vec![
        Route::new("ns", "r")
            .rule(ok)
            .rule(redirect)
            .rule(down)
            .into(),
    ];
    let cfg = Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    };
    let gw = Gateway::new(FilterRegistry::new());
    gw.set_tracing(Some(tracing)).unwrap();
    gw.apply(cfg).await.unwrap();
    (gw, addr(port))
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// The parts of a `traceparent` the backend saw: (trace id, parent id, flags).
fn traceparent(reply: &Reply) -> (String, String, String) {
    let value = reply
        .seen("traceparent")
        .expect("backend got a traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn find<'a>(spans: &'a [Span], path: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| attrs(s).get("url.path").map(String::as_str) == Some(path))
        .unwrap_or_else(|| panic!("no span for {path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_and_the_backend_continues_the_gateways() {
    let v1 = backend("v1").await;
    let (_collector, received) = http_collector().await;
    let mut cfg = tracing(_collector.addr);
    cfg.service_name = "edge".into();
    cfg.resource = vec![("deployment.environment.name".into(), "test".into())];
    cfg.headers = vec![("x-api-key".parse().unwrap(), "secret".parse().unwrap())];
    let (gw, to) = gateway(v1.addr, cfg).await;

    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let traced = get_with(
        to,
        "app.example.com:8080",
        "/ok/a?q=1",
        &[
            ("traceparent", &incoming),
            ("tracestate", "vendor=abc,other=x"),
            ("user-agent", "trace-test/1"),
        ],
    )
    .await;
    assert_eq!(traced.status, 200);
    let fresh = get(to, "app.example.com", "/ok/fresh").await;
    assert_eq!(fresh.status, 200);
    let invalid = get_with(
        to,
        "app.example.com",
        "/ok/invalid",
        &[
            ("traceparent", "00-zz-nothing-01"),
            ("tracestate", "orphan=1"),
        ],
    )
    .await;
    assert_eq!(invalid.status, 200);
    assert_eq!(get(to, "app.example.com", "/old").await.status, 302);
    assert_eq!(get(to, "app.example.com", "/nothing").await.status, 404);
    assert_eq!(get(to, "app.example.com", "/down").await.status, 503);

    let spans = received.wait_for(6).await;
    assert_eq!(spans.len(), 6);

    // The caller's trace continues: same trace id, the caller's span as parent.
    let span = find(&spans, "/ok/a");
    assert_eq!(hex(&span.trace_id), PARENT_TRACE);
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN);
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(span.name, "GET");
    assert_eq!(span.trace_state, "vendor=abc,other=x");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert!(span.start_time_unix_nano > 0);
    assert_eq!(span.status.as_ref().map_or(0, |s| s.code), 0, "unset");
    let a = attrs(span);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/ok/a"),
        ("url.scheme", "http"),
        ("server.address", "app.example.com"),
        ("server.port", "8080"),
        ("network.peer.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "trace-test/1"),
        ("http.response.status_code", "200"),
        ("gateway.listener", LISTENER),
        ("gateway.route", "ns/r"),
        ("gateway.rule", "ok"),
        ("gateway.backend", "v1"),
        ("gateway.retries", "0"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "{key} in {a:?}"
        );
    }
    assert_eq!(a["gateway.upstream.address"], v1.addr.to_string());
    // The backend's request continues the gateway's span; tracestate passes through.
    let (trace, parent, flags) = traceparent(&traced);
    assert_eq!(trace, PARENT_TRACE);
    assert_eq!(parent, hex(&span.span_id));
    assert_eq!(flags, "01");
    assert_eq!(
        traced.seen("tracestate").as_deref(),
        Some("vendor=abc,other=x")
    );

    // Without a traceparent (or with an invalid one) a new trace starts here.
    for (path, reply) in [("/ok/fresh", &fresh), ("/ok/invalid", &invalid)] {
        let span = find(&spans, path);
        assert!(span.parent_span_id.is_empty(), "{path}: a root span");
        assert_ne!(hex(&span.trace_id), PARENT_TRACE);
        let (trace, parent, flags) = traceparent(reply);
        assert_eq!(trace, hex(&span.trace_id), "{path}");
        assert_eq!(parent, hex(&span.span_id), "{path}");
        assert_eq!(flags, "01");
        assert_eq!(
            reply.seen("tracestate"),
            None,
            "{path}: a new trace has no tracestate"
        );
    }
    assert_ne!(
        find(&spans, "/ok/fresh").trace_id,
        find(&spans, "/ok/invalid").trace_id
    );

    // Answers the gateway gives itself have spans too; 5xx is an error.
    let redirect = attrs(find(&spans, "/old"));
    assert_eq!(redirect["http.response.status_code"], "302");
    assert_eq!(redirect["gateway.route"], "ns/r");
    assert!(!redirect.contains_key("gateway.backend"));
    let no_route = find(&spans, "/nothing");
    assert_eq!(attrs(no_route)["http.response.status_code"], "404");
    assert!(!attrs(no_route).contains_key("gateway.route"));
    assert_eq!(
        no_route.status.as_ref().map_or(0, |s| s.code),
        0,
        "4xx is not a server error"
    );
    let down = find(&spans, "/down");
    let d = attrs(down);
    assert_eq!(d["http.response.status_code"], "503");
    assert_eq!(d["gateway.backend"], "dead");
    assert_eq!(d["error.type"], "ConnectRefused");
    assert_eq!(down.status.as_ref().map(|s| s.code), Some(2), "ERROR");

    // Resource and export headers.
    let resource = received.resource.lock().unwrap().clone();
    assert_eq!(resource["service.name"], "edge");
    assert_eq!(resource["deployment.environment.name"], "test");
    assert_eq!(
        received.headers.lock().unwrap().get("x-api-key").unwrap(),
        "secret"
    );
    assert!(
        gw.metrics()
            .encode()
            .contains("gateway_trace_spans_dropped_total 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_export_over_grpc() {
    let v1 = backend("v1").await;
    let (collector, received) = grpc_collector().await;
    let mut cfg = tracing(collector.addr);
    cfg.protocol = OtlpProtocol::Grpc;
    let (_gw, to) = gateway(v1.addr, cfg).await;
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let reply = get_with(
        to,
        "app.example.com",
        "/ok/grpc",
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let spans = received.wait_for(1).await;
    let span = find(&spans, "/ok/grpc");
    assert_eq!(hex(&span.trace_id), PARENT_TRACE);
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN);
    assert_eq!(traceparent(&reply).1, hex(&span.span_id));
    assert_eq!(
        received.resource.lock().unwrap()["service.name"],
        "pingora-gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_export_nothing_but_still_propagate() {
    let v1 = backend("v1").await;
    let (collector, received) = http_collector().await;
    let mut cfg = tracing(collector.addr);
    cfg.sample_ratio = 0.0;
    let (_gw, to) = gateway(v1.addr, cfg).await;

    // New traces are not sampled at ratio 0: the backend still gets trace context, unsampled.
    let fresh = get(to, "app.example.com", "/ok/fresh").await;
    let (trace, parent, flags) = traceparent(&fresh);
    assert_eq!(flags, "00");
    assert_ne!(trace, "0".repeat(32));
    assert_ne!(parent, "0".repeat(16));
    // An unsampled caller stays unsampled, in the caller's trace.
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    let unsampled = get_with(
        to,
        "app.example.com",
        "/ok/unsampled",
        &[("traceparent", &incoming)],
    )
    .await;
    let (trace, parent, flags) = traceparent(&unsampled);
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "00"));
    assert_ne!(
        parent, PARENT_SPAN,
        "the gateway's span is the backend's parent"
    );
    // A sampled caller wins over the ratio (parent-based sampling).
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let sampled = get_with(
        to,
        "app.example.com",
        "/ok/sampled",
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(traceparent(&sampled).2, "01");

    // Spans leave in the order requests ended: had the unsampled ones been exported, they
    // would have come first.
    let spans = received.wait_for(1).await;
    assert_eq!(
        attrs(&spans[0])["url.path"],
        "/ok/sampled",
        "only the sampled request exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_fail_requests() {
    let v1 = backend("v1").await;
    let nothing = addr(free_port());
    let (gw, to) = gateway(v1.addr, tracing(nothing)).await;
    for i in 0..5 {
        let reply = get(to, "app.example.com", &format!("/ok/{i}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "v1");
        assert_eq!(traceparent(&reply).2, "01");
    }
    // The failed exports count their spans as dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = gw.metrics().encode();
        if text.contains("gateway_trace_spans_dropped_total 5") {
            break;
        }
        assert!(Instant::now() < deadline, "drops not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopping tracing leaves traceparent alone again.
    gw.set_tracing(None).unwrap();
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let reply = get_with(
        to,
        "app.example.com",
        "/ok/off",
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(reply.seen("traceparent"), Some(incoming));
    // An endpoint that is not http:// is refused.
    assert!(
        gw.set_tracing(Some(Tracing::new(
            "https://127.0.0.1:4318".parse().unwrap()
        )))
        .is_err()
    );
}
