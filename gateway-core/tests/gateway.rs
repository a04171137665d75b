//! End-to-end tests of the data plane through real loopback sockets: routing, filters, backends,
//! configuration swaps, runtime listeners, TLS by SNI, h2c and draining.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::config::*;
use gateway_core::{
    DirectResponse, FilterAction, FilterCtx, FilterRegistry, Gateway, HttpFilter, ResponseHeader,
    Session, async_trait,
};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn http_bind(port: u16, routes: Vec<Route>) -> Bind {
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = routes.into_iter().map(Into::into).collect();
    Bind {
        address: addr(port),
        protocol: Protocol::Http,
        listeners: vec![listener],
    }
}

fn to(backend: &TestBackend, name: &str) -> BackendRef {
    BackendRef::endpoints(name, vec![backend.addr])
}

#[tokio::test]
async fn routes_by_path_and_answers_404_when_nothing_matches() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route = Route::new("ns", "r")
        .rule(Rule::exact("/one").backend(to(&v1, "v1")))
        .rule(Rule::prefix("/two").backend(to(&v2, "v2")));
    let report = gw
        .apply(Config {
            binds: vec![http_bind(port, vec![route])],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.changed);
    assert_eq!(report.bound, vec![addr(port)]);

    assert_eq!(get(addr(port), "example.com", "/one").await.backend(), "v1");
    assert_eq!(
        get(addr(port), "example.com", "/two/x").await.backend(),
        "v2"
    );
    assert_eq!(get(addr(port), "example.com", "/one/x").await.status, 404);
    assert_eq!(get(addr(port), "example.com", "/twox").await.status, 404);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn header_modifiers_rewrite_and_redirect() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route = Route::new("ns", "r")
        .rule(
            Rule::prefix("/headers")
                .filter(Filter::RequestHeaderModifier(HeaderModifier {
                    set: vec![("x-set".into(), "set".into())],
                    add: vec![("x-add".into(), "added".into())],
                    remove: vec!["x-remove".into()],
                }))
                .filter(Filter::ResponseHeaderModifier(HeaderModifier {
                    set: vec![("x-resp".into(), "yes".into())],
                    add: vec![],
                    remove: vec!["x-backend".into()],
                }))
                .backend(to(&v1, "v1")),
        )
        .rule(
            Rule::prefix("/prefix/one")
                .filter(Filter::UrlRewrite(UrlRewrite {
                    hostname: Some("rewritten.example".into()),
                    path: Some(PathModifier::ReplacePrefixMatch("/one".into())),
                }))
                .backend(to(&v1, "v1")),
        )
        .rule(
            Rule::prefix("/old").filter(Filter::RequestRedirect(RequestRedirect {
                path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
                status_code: 301,
                ..RequestRedirect::default()
            })),
        );
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();

    let r = get_with(
        addr(port),
        "h.example",
        "/headers",
        &[("x-set", "orig"), ("x-add", "orig"), ("x-remove", "gone")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-set").as_deref(), Some("set"));
    assert_eq!(r.seen("x-add").as_deref(), Some("orig,added"));
    assert_eq!(r.seen("x-remove"), None);
    assert_eq!(r.headers.get("x-resp").unwrap(), "yes");
    assert!(r.headers.get("x-backend").is_none());

    let r = get(addr(port), "h.example", "/prefix/one/two?q=1").await;
    assert_eq!(r.body["path"], "/one/two?q=1");
    assert_eq!(r.body["host"], "rewritten.example");

    let r = get(addr(port), "h.example:8080", "/old/page?x=y").await;
    assert_eq!(r.status, 301);
    // The listener's port is 80, so it is elided; the request's port is not carried over.
    assert_eq!(
        r.headers.get("location").unwrap(),
        "http://h.example/new/page?x=y"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn weights_unresolved_backends_and_rules_without_backends() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route = Route::new("ns", "r")
        .rule(
            Rule::prefix("/split")
                .backend(to(&v1, "v1").weight(1))
                .backend(to(&v2, "v2").weight(0)),
        )
        .rule(Rule::prefix("/none"))
        .rule(Rule::prefix("/broken").backend(BackendRef {
            name: "missing".into(),
            weight: 1,
            target: BackendTarget::Unresolved {
                reason: "Service not found".into(),
            },
            filters: vec![],
        }))
        .rule(Rule::prefix("/empty").backend(BackendRef::endpoints("empty", vec![])));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut conn = H1::connect(addr(port)).await.unwrap();
    for _ in 0..20 {
        assert_eq!(conn.send("GET", "a", "/split", &[]).await.backend(), "v1");
    }
    assert_eq!(get(addr(port), "a", "/none").await.status, 500);
    assert_eq!(get(addr(port), "a", "/broken").await.status, 500);
    assert_eq!(get(addr(port), "a", "/empty").await.status, 503);
    gw.shutdown(Duration::from_secs(1)).await;
}

struct Deny;

#[async_trait]
impl HttpFilter for Deny {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if session.req_header().headers.contains_key("x-allow") {
            Ok(FilterAction::Continue)
        } else {
            Ok(FilterAction::Respond(DirectResponse::text(403, "denied")))
        }
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        response.insert_header("x-filtered", "1").unwrap();
        Ok(())
    }
}

#[tokio::test]
async fn extension_filters_answer_or_pass_and_unknown_ones_answer_500() {
    let v1 = backend("v1").await;
    let port = free_port();
    let mut registry = FilterRegistry::new();
    registry.register_filter("example.com", "Deny", Arc::new(Deny));
    let gw = Gateway::new(registry);
    let ext = |kind: &str| Filter::ExtensionRef(ExtensionRef::new("example.com", kind, "x"));
    let route = Route::new("ns", "r")
        .rule(
            Rule::prefix("/known")
                .filter(ext("Deny"))
                .backend(to(&v1, "v1")),
        )
        .rule(
            Rule::prefix("/unknown")
                .filter(ext("Nope"))
                .backend(to(&v1, "v1")),
        );
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    let denied = get(addr(port), "a", "/known").await;
    assert_eq!(denied.status, 403);
    // The response hook runs on the filter's own answer too.
    assert_eq!(denied.headers.get("x-filtered").unwrap(), "1");
    let r = get_with(addr(port), "a", "/known", &[("x-allow", "1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-filtered").unwrap(), "1");
    assert_eq!(get(addr(port), "a", "/unknown").await.status, 500);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn swaps_keep_in_flight_requests_and_listeners_change_at_run_time() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let (p1, p2) = (free_port(), free_port());
    let gw = Gateway::new(FilterRegistry::new());
    let first = Config {
        binds: vec![http_bind(
            p1,
            vec![Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v1, "v1")))],
        )],
        ..Default::default()
    };
    gw.apply(first.clone()).await.unwrap();
    assert!(
        !gw.apply(first).await.unwrap().changed,
        "identical config is not swapped"
    );

    // A keep-alive connection and a slow request in flight on p1.
    let mut kept = H1::connect(addr(p1)).await.unwrap();
    assert_eq!(kept.send("GET", "a", "/", &[]).await.backend(), "v1");
    let slow = tokio::spawn(async move { get(addr(p1), "a", "/?delay=400").await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Swap: p1 now routes to v2, and a new listener p2 appears.
    let second = Config {
        binds: vec![
            http_bind(
                p1,
                vec![Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v2, "v2")))],
            ),
            http_bind(
                p2,
                vec![Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v1, "v1")))],
            ),
        ],
        ..Default::default()
    };
    let report = gw.apply(second).await.unwrap();
    assert_eq!(report.bound, vec![addr(p2)]);
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status, r.backend()),
        (200, "v1"),
        "in-flight request finished"
    );
    assert_eq!(kept.send("GET", "a", "/", &[]).await.backend(), "v2");
    assert_eq!(get(addr(p2), "a", "/").await.backend(), "v1");

    // Remove p2: p1's kept connection is untouched, p2 refuses connections.
    let third = Config {
        binds: vec![http_bind(
            p1,
            vec![Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v2, "v2")))],
        )],
        ..Default::default()
    };
    let report = gw.apply(third).await.unwrap();
    assert_eq!(report.closed, vec![addr(p2)]);
    assert!(H1::connect(addr(p2)).await.is_err());
    assert_eq!(kept.send("GET", "a", "/", &[]).await.backend(), "v2");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_invalid_route_is_rejected_alone_and_the_rest_keeps_serving() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let good = Route::new("ns", "good").rule(Rule::prefix("/").backend(to(&v1, "v1")));
    let bad = Route::new("ns", "bad").rule(
        Rule::default()
            .matching(RouteMatch {
                path: PathMatch::RegularExpression("([".into()),
                ..RouteMatch::default()
            })
            .backend(to(&v1, "v1")),
    );
    let bad_header = Route::new("ns", "bad-header").rule(
        Rule::default()
            .matching(RouteMatch {
                headers: vec![HeaderMatch {
                    name: "not a header name".into(),
                    value: StringMatch::Exact("x".into()),
                }],
                ..RouteMatch::default()
            })
            .backend(to(&v1, "v1")),
    );
    let config = Config {
        binds: vec![http_bind(port, vec![good, bad, bad_header])],
        ..Default::default()
    };
    // `check` compiles the same way without binding or activating anything.
    let checked = gw.check(config.clone()).unwrap();
    assert!(gw.bound().await.is_empty());
    let report = gw.apply(config.clone()).await.unwrap();
    assert_eq!(report.rejected, checked);
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    assert!(
        report.rejected[0].contains("ns/bad "),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[1].contains("ns/bad-header"),
        "{:?}",
        report.rejected
    );
    assert_eq!(get(addr(port), "a", "/").await.backend(), "v1");
    // A configuration `apply` would refuse is refused by `check` too, and the active one serves on.
    let mut refused = config;
    refused.limits.max_connections = 0;
    assert!(gw.check(refused).is_err());
    assert_eq!(get(addr(port), "a", "/").await.backend(), "v1");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn h2c_prior_knowledge_and_h2c_backends() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let mut h2c = to(&v1, "v1");
    if let BackendTarget::Endpoints(b) = &mut h2c.target {
        b.protocol = BackendProtocol::H2c;
    }
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/h2c").backend(h2c))
        .rule(Rule::prefix("/").backend(to(&v1, "v1")));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    let r = get_h2c(addr(port), "example.com", "/plain").await;
    assert_eq!(
        (r.status, r.body["version"].as_str()),
        (200, Some("HTTP/1.1"))
    );
    let r = get(addr(port), "example.com", "/h2c").await;
    assert_eq!(
        (r.status, r.body["version"].as_str()),
        (200, Some("HTTP/2.0"))
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tls_certificates_are_chosen_by_sni() {
    let v1 = backend("v1").await;
    let port = free_port();
    let (a_cert, a_key, a_der) = self_signed(&["a.example.com"]);
    let (w_cert, w_key, w_der) = self_signed(&["*.wild.example.com"]);
    let (d_cert, d_key, d_der) = self_signed(&["default.example.com"]);
    let listener = |name: &str, host: Option<&str>, cert: &str, key: &str| {
        let route = Route::new("ns", name).rule(Rule::prefix("/").backend(to(&v1, "v1")));
        let mut l = Listener::new(name, 443).route(route);
        l.hostname = host.map(Into::into);
        l.tls = Some(ListenerTls {
            certificates: vec![Certificate {
                cert_pem: cert.into(),
                key_pem: key.into(),
            }],
            ..ListenerTls::default()
        });
        l
    };
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Https,
            listeners: vec![
                listener("a", Some("a.example.com"), &a_cert, &a_key),
                listener("w", Some("*.wild.example.com"), &w_cert, &w_key),
                listener("d", None, &d_cert, &d_key),
            ],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let trust = vec![a_der.clone(), w_der.clone(), d_der.clone()];
    let (cert, _, _) = tls_handshake(addr(port), "a.example.com", &trust, &[b"http/1.1"]).await;
    assert_eq!(cert, a_der);
    let (cert, _, _) =
        tls_handshake(addr(port), "x.wild.example.com", &trust, &[b"http/1.1"]).await;
    assert_eq!(cert, w_der);
    let (cert, _, tls) =
        tls_handshake(addr(port), "default.example.com", &trust, &[b"http/1.1"]).await;
    assert_eq!(cert, d_der);
    let r = get_over_tls(tls, "default.example.com", "/").await;
    assert_eq!((r.status, r.backend()), (200, "v1"));
    let (_, alpn, _) =
        tls_handshake(addr(port), "a.example.com", &trust, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // A Host that selects another listener than the SNI did is misdirected: 421.
    for (sni, host, status) in [
        ("a.example.com", "a.example.com", 200),
        ("a.example.com", "A.Example.com:443", 200),
        ("a.example.com", "default.example.com", 421),
        ("default.example.com", "a.example.com", 421),
        ("default.example.com", "other.example.com", 200),
        ("x.wild.example.com", "y.wild.example.com", 200),
        ("x.wild.example.com", "a.example.com", 421),
    ] {
        let (_, _, tls) = tls_handshake(addr(port), sni, &trust, &[b"http/1.1"]).await;
        let r = get_over_tls(tls, host, "/").await;
        assert_eq!(r.status, status, "SNI {sni}, Host {host}");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(Config {
        binds: vec![http_bind(
            port,
            vec![Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v1, "v1")))],
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    let slow = tokio::spawn(async move { get(addr(port), "a", "/?delay=500").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gw2 = gw.clone();
    let stopping = tokio::spawn(async move { gw2.shutdown(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        H1::connect(addr(port)).await.is_err(),
        "no new connections while draining"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    stopping.await.unwrap();
}

/// A gateway on a free port whose one route sends everything to backend `v1`.
async fn one_route_to_v1() -> (TestBackend, u16, Gateway) {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route = Route::new("ns", "r").rule(Rule::prefix("/").backend(to(&v1, "v1")));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    (v1, port, gw)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (v1, port, gw) = one_route_to_v1().await;
    // Each request comes on a new downstream connection; upstream, one kept-alive connection
    // serves them in turn.
    for _ in 0..20 {
        assert_eq!(get(addr(port), "example.com", "/").await.backend(), "v1");
    }
    let used = v1.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        used < 5,
        "{used} upstream connections for 20 sequential requests"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

/// The upstream pool keeps no task per idle connection (vendor/README.md): a connection the
/// backend closes while it is pooled is still closed by the gateway, and the next request goes
/// out on a new one.
#[tokio::test]
async fn a_pooled_connection_the_backend_closes_is_closed_and_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                // One request, one keep-alive answer; then, once the gateway has pooled the
                // connection, the backend closes its side and waits for the gateway to close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if conn.write_all(answer).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = conn.shutdown().await;
                let eof = matches!(conn.read(&mut buf).await, Ok(0));
                let _ = closed_tx.send(eof);
            });
        }
    });
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("b", vec![backend_addr])));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..2 {
        assert_eq!(get(addr(port), "example.com", "/").await.status, 200);
        let closed = tokio::time::timeout(Duration::from_secs(30), closed_rx.recv())
            .await
            .expect("the gateway did not close the connection the backend closed");
        assert_eq!(closed, Some(true), "the gateway closed it without writing");
    }
    backend.abort();
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_v1, port, gw) = one_route_to_v1().await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: example.com\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr(port)).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .unwrap_or_else(|_| panic!("no answer to {garbage:?}"));
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{garbage:?} got {text:?}"
        );
    }
    assert_eq!(get(addr(port), "example.com", "/").await.backend(), "v1");
    // A request shorter than the HTTP/2 preface is served, not held waiting for more bytes.
    let mut stream = tokio::net::TcpStream::connect(addr(port)).await.unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("a short HTTP/1.0 request is answered")
        .unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
    gw.shutdown(Duration::from_secs(1)).await;
}
