//! Body-based routing through real loopback sockets: a listener with body headers
//! (`Listener::body_headers`) sets `x-gateway-model-name` from the JSON body's `model` before
//! routing; the body read for it is the one the backend, filters, pickers and retries get.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{
    Endpoint, EndpointPicker, FilterAction, FilterCtx, FilterRegistry, Gateway, HttpFilter,
    PickRequest, ResponseHeader, Session, async_trait,
};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MODEL: &str = "x-gateway-model-name";
const CHAT: &str = "/v1/chat/completions";
const JSON: (&str, &str) = ("content-type", "application/json");

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A backend answering with the request body, byte for byte, `x-backend: name` and `x-model`:
/// the `x-gateway-model-name` it saw (`-` without one). Every body it got is kept in `bodies`.
async fn echo(name: &'static str, bodies: Arc<Mutex<Vec<Bytes>>>) -> TestBackend {
    echo_failing_first(name, bodies, 0).await
}

/// [`echo`], answering 503 to the first `failures` requests (after reading their bodies).
async fn echo_failing_first(
    name: &'static str,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    failures: usize,
) -> TestBackend {
    serve(move |req: Request<Incoming>| {
        let bodies = bodies.clone();
        async move {
            let model = req
                .headers()
                .get(MODEL)
                .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut seen = bodies.lock().unwrap();
                seen.push(body.clone());
                seen.len()
            };
            let mut resp = Response::new(Full::new(body));
            if n <= failures {
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            resp.headers_mut()
                .insert("x-backend", name.parse().unwrap());
            resp.headers_mut().insert("x-model", model.parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    })
    .await
}

fn by_model(model: &str, to: &TestBackend, name: &str) -> Rule {
    Rule::default()
        .matching(RouteMatch {
            headers: vec![HeaderMatch {
                name: "X-Gateway-Model-Name".into(),
                value: StringMatch::Exact(model.into()),
            }],
            ..RouteMatch::default()
        })
        .backend(BackendRef::endpoints(name, vec![to.addr]))
}

/// A bind with one listener: `llama` -> `a`, `mistral` -> `b`, everything else -> `d`.
fn model_listener(a: &TestBackend, b: &TestBackend, d: &TestBackend) -> Listener {
    let route = Route::new("ns", "models")
        .rule(by_model("llama", a, "a"))
        .rule(by_model("mistral", b, "b"))
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("d", vec![d.addr])));
    Listener::new("test/gw/models", 80)
        .route(route)
        .body_header(BodyHeader::new(MODEL, "model"))
}

fn bind(port: u16, listener: Listener) -> Bind {
    Bind {
        address: addr(port),
        protocol: Protocol::Http,
        listeners: vec![listener],
    }
}

async fn start(registry: FilterRegistry, binds: Vec<Bind>) -> Gateway {
    let gw = Gateway::new(registry);
    gw.apply(Config {
        binds,
        ..Default::default()
    })
    .await
    .unwrap();
    gw
}

async fn post(port: u16, headers: &[(&str, &str)], body: &str) -> (u16, http::HeaderMap, Bytes) {
    send_body(
        addr(port),
        "POST",
        "a",
        CHAT,
        headers,
        Bytes::from(body.to_owned()),
    )
    .await
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn bodies() -> Arc<Mutex<Vec<Bytes>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test]
async fn json_bodies_route_by_model_and_reach_the_backend_byte_for_byte() {
    let (a, b, d) = (
        echo("a", bodies()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let port = free_port();
    let gw = start(
        FilterRegistry::new(),
        vec![bind(port, model_listener(&a, &b, &d))],
    )
    .await;

    let llama = r#"{"model":"llama","messages":[{"role":"user","content":"say \"hi\"\n","model":"mistral"}],"stream":false}"#;
    let (status, h, body) = post(port, &[JSON], llama).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "a"));
    assert_eq!(header(&h, "x-model"), "llama");
    assert_eq!(&body[..], llama.as_bytes());

    // Escapes, whitespace, a `+json` type with parameters: still the top-level `model`.
    let mistral =
        " {\n \"temperature\": 0.5 ,\t\"model\" : \"mi\\u0073tral\", \"n\": [1, {\"a\": null}] }\n";
    let (status, h, body) = post(
        port,
        &[("content-type", "application/vnd.openai+json; charset=utf-8")],
        mistral,
    )
    .await;
    assert_eq!((status, header(&h, "x-backend")), (200, "b"));
    assert_eq!(header(&h, "x-model"), "mistral");
    assert_eq!(&body[..], mistral.as_bytes());

    // A model no rule names: the catch-all rule, with the header set.
    let (status, h, _) = post(port, &[JSON], r#"{"model":"gpt"}"#).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "d"));
    assert_eq!(header(&h, "x-model"), "gpt");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_sent_model_header_is_dropped() {
    let (a, b, d) = (
        echo("a", bodies()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let port = free_port();
    let gw = start(
        FilterRegistry::new(),
        vec![bind(port, model_listener(&a, &b, &d))],
    )
    .await;

    // A JSON body without the field.
    let (status, h, _) = post(port, &[JSON, (MODEL, "llama")], r#"{"messages":[]}"#).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "d"));
    assert_eq!(header(&h, "x-model"), "-");
    // A non-string field.
    let (_, h, _) = post(port, &[JSON, (MODEL, "llama")], r#"{"model":7}"#).await;
    assert_eq!((header(&h, "x-backend"), header(&h, "x-model")), ("d", "-"));
    // The body's value wins over the client's.
    let (_, h, _) = post(port, &[JSON, (MODEL, "llama")], r#"{"model":"mistral"}"#).await;
    assert_eq!(
        (header(&h, "x-backend"), header(&h, "x-model")),
        ("b", "mistral")
    );
    // No body at all: a GET is routed as usual, without the client's header.
    let r = H1::connect(addr(port))
        .await
        .unwrap()
        .send("GET", "a", "/v1/models", &[(MODEL, "llama")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-backend"], "d");
    assert_eq!(r.headers["x-model"], "-");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn non_json_types_and_invalid_json_route_as_without_the_header() {
    let (a, b, d) = (
        echo("a", bodies()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let port = free_port();
    let gw = start(
        FilterRegistry::new(),
        vec![bind(port, model_listener(&a, &b, &d))],
    )
    .await;

    let body = r#"{"model":"llama"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let headers: &[(&str, &str)] = if ct.is_empty() {
            &[]
        } else {
            &[("content-type", ct)]
        };
        let (status, h, echoed) = post(port, headers, body).await;
        assert_eq!((status, header(&h, "x-backend")), (200, "d"), "{ct}");
        assert_eq!(header(&h, "x-model"), "-");
        assert_eq!(&echoed[..], body.as_bytes());
    }
    for invalid in [
        r#"{"model":"llama","#,
        r#"{"model":"llama"} trailing"#,
        r#"["model","llama"]"#,
        "not json at all",
    ] {
        let (status, h, echoed) = post(port, &[JSON, (MODEL, "llama")], invalid).await;
        assert_eq!((status, header(&h, "x-backend")), (200, "d"), "{invalid}");
        assert_eq!(header(&h, "x-model"), "-");
        assert_eq!(&echoed[..], invalid.as_bytes(), "sent unchanged");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_body_over_the_bound_is_413() {
    let (a, b, d) = (
        echo("a", bodies()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let port = free_port();
    let mut listener = model_listener(&a, &b, &d);
    listener.max_body_header_bytes = 1024;
    let gw = start(FilterRegistry::new(), vec![bind(port, listener)]).await;

    let long = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "x".repeat(1100));
    let (status, _, _) = post(port, &[JSON], &long).await;
    assert_eq!(status, 413);
    // Within the bound: served.
    let short = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "x".repeat(900));
    let (status, h, echoed) = post(port, &[JSON], &short).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "a"));
    assert_eq!(echoed.len(), short.len());

    // Chunked, so the length is only known while reading: 413 once past the bound.
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    let chunk = "y".repeat(1500);
    s.write_all(
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let raw = read_to_close(&mut s).await;
    assert!(
        raw.starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(d.connections.load(std::sync::atomic::Ordering::SeqCst) == 0);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_chunked_json_body_is_read_and_sent_whole() {
    let seen = bodies();
    let (a, b, d) = (
        echo("a", seen.clone()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let port = free_port();
    let gw = start(
        FilterRegistry::new(),
        vec![bind(port, model_listener(&a, &b, &d))],
    )
    .await;
    let (first, second) = (r#"{"messages":[],"#, r#""model":"llama"}"#);
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let raw = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-backend: a"), "{raw}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got, [Bytes::from(format!("{first}{second}"))]);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_retry_replays_the_body_read_before_routing() {
    let seen = bodies();
    let flaky = echo_failing_first("a", seen.clone(), 1).await;
    let (b, d) = (echo("b", bodies()).await, echo("d", bodies()).await);
    let port = free_port();
    let mut rule = by_model("llama", &flaky, "a");
    rule.retry = Some(Retry {
        codes: vec![503],
        attempts: 2,
        backoff: Some(Duration::from_millis(1)),
    });
    let route = Route::new("ns", "models")
        .rule(rule)
        .rule(by_model("mistral", &b, "b"))
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("d", vec![d.addr])));
    let listener = Listener::new("test/gw/models", 80)
        .route(route)
        .body_header(BodyHeader::new(MODEL, "model"));
    let gw = start(FilterRegistry::new(), vec![bind(port, listener)]).await;

    let body = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "p".repeat(20_000));
    let (status, h, echoed) = post(port, &[JSON], &body).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "a"));
    assert_eq!(&echoed[..], body.as_bytes());
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one failed attempt, one retry");
    assert!(got.iter().all(|b| b[..] == *body.as_bytes()));
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Asks for the whole body (at most 1 MiB) and reports the length its body hook got.
struct BodyLength;

#[derive(Clone, Copy)]
struct Got(usize);

#[async_trait]
impl HttpFilter for BodyLength {
    async fn request_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        ctx.buffer_request_body(1 << 20);
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        assert!(end_of_stream);
        let n = body.as_ref().map_or(0, Bytes::len);
        let calls = ctx.extensions().get::<Got>().map_or(0, |g| g.0 + 1);
        assert_eq!(calls, 0, "the body hook runs once");
        ctx.extensions_mut().insert(Got(n));
        Ok(FilterAction::Continue)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let n = ctx.extensions().get::<Got>().map_or(0, |g| g.0);
        response.insert_header("x-filter-body", n).unwrap();
        Ok(())
    }
}

/// Records the body length each pick saw, then lets the default order decide.
struct BodySeenByPicker(Arc<Mutex<Vec<Option<usize>>>>);

#[async_trait]
impl EndpointPicker for BodySeenByPicker {
    async fn pick(
        &self,
        request: &PickRequest<'_>,
        _endpoints: &[Endpoint],
        out: &mut Vec<usize>,
    ) -> gateway_core::Result<()> {
        self.0.lock().unwrap().push(request.body.map(Bytes::len));
        out.push(0);
        Ok(())
    }
}

#[tokio::test]
async fn filters_and_pickers_get_the_body_read_before_routing() {
    let seen = bodies();
    let (a, d) = (echo("a", seen.clone()).await, echo("d", bodies()).await);
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "BodyLength", Arc::new(BodyLength));
    let port = free_port();
    let gw = Gateway::new(registry);
    let picks = Arc::new(Mutex::new(Vec::new()));
    gw.register_picker("body-seen", Arc::new(BodySeenByPicker(picks.clone())));
    let mut to_a = BackendRef::endpoints("a", vec![a.addr]);
    if let BackendTarget::Endpoints(e) = &mut to_a.target {
        e.policy.load_balancer = LoadBalancer::Custom("body-seen".into());
    }
    let mut llama = Rule::default().matching(RouteMatch {
        headers: vec![HeaderMatch {
            name: MODEL.into(),
            value: StringMatch::Exact("llama".into()),
        }],
        ..RouteMatch::default()
    });
    llama.filters.push(Filter::ExtensionRef(ExtensionRef::new(
        "test.example",
        "BodyLength",
        "x",
    )));
    llama.backends.push(to_a);
    let route = Route::new("ns", "models")
        .rule(llama)
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("d", vec![d.addr])));
    let listener = Listener::new("test/gw/models", 80)
        .route(route)
        .body_header(BodyHeader::new(MODEL, "model"));
    gw.apply(Config {
        binds: vec![bind(port, listener)],
        ..Default::default()
    })
    .await
    .unwrap();

    let body = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "q".repeat(3000));
    let (status, h, echoed) = post(port, &[JSON], &body).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "a"));
    assert_eq!(header(&h, "x-filter-body"), body.len().to_string());
    assert_eq!(&echoed[..], body.as_bytes());
    assert_eq!(*picks.lock().unwrap(), [Some(body.len())]);
    assert_eq!(seen.lock().unwrap().len(), 1);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_listener_without_body_headers_does_not_buffer() {
    let (a, b, d) = (
        echo("a", bodies()).await,
        echo("b", bodies()).await,
        echo("d", bodies()).await,
    );
    let (with, without) = (free_port(), free_port());
    let mut plain = model_listener(&a, &b, &d);
    plain.body_headers.clear();
    let gw = start(
        FilterRegistry::new(),
        vec![bind(with, model_listener(&a, &b, &d)), bind(without, plain)],
    )
    .await;

    // Larger than any bound the body-header read allows: refused where bodies are read...
    let big = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "z".repeat(200_000));
    let (status, _, _) = post(with, &[JSON], &big).await;
    assert_eq!(status, 413);
    // ... streamed where they are not; the client's header is routed on as sent.
    let (status, h, echoed) = post(without, &[JSON, (MODEL, "mistral")], &big).await;
    assert_eq!((status, header(&h, "x-backend")), (200, "b"));
    assert_eq!(echoed.len(), big.len());
    assert!(echoed[..] == *big.as_bytes());
    let (_, h, _) = post(without, &[JSON], r#"{"model":"llama"}"#).await;
    assert_eq!((header(&h, "x-backend"), header(&h, "x-model")), ("d", "-"));
    gw.shutdown(Duration::from_secs(1)).await;
}
