//! HTTP/1 edge cases and overload protection over raw loopback sockets: Host rules, the
//! whole-request-head deadline, the keep-alive idle timeout, connection limits and the
//! request-body buffering cap.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http::Response;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn bind(port: u16, rule: Rule) -> Bind {
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = vec![Route::new("ns", "r").rule(rule).into()];
    Bind {
        address: addr(port),
        protocol: Protocol::Http,
        listeners: vec![listener],
    }
}

async fn start(binds: Vec<Bind>, limits: Limits) -> Gateway {
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(Config { binds, limits }).await.unwrap();
    gw
}

/// Reads one response with a `Content-Length` body; returns (status, body).
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let status = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while raw.len() < end + 4 + len {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed inside a response body");
                raw.extend_from_slice(&buf[..n]);
            }
            return (status, raw[end + 4..end + 4 + len].to_vec());
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(raw.get(9..12)?).parse().ok()
}

#[tokio::test]
async fn http11_without_host_is_400_and_http10_without_host_gets_the_backend_authority() {
    let be = backend("b").await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let gw = start(vec![bind(port, rule)], Limits::default()).await;

    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let raw = read_to_close(&mut s).await;
    assert_eq!(
        status_of(&raw),
        Some(400),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"GET /x HTTP/1.0\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let raw = read_to_close(&mut s).await;
    assert_eq!(
        status_of(&raw),
        Some(200),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let seen: serde_json::Value = serde_json::from_slice(&raw[body_at..]).unwrap();
    assert_eq!(seen["path"], "/x");
    assert_eq!(seen["host"], be.addr.to_string());

    // With a Host, HTTP/1.0 keeps it.
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"GET /x HTTP/1.0\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    let raw = read_to_close(&mut s).await;
    let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let seen: serde_json::Value = serde_json::from_slice(&raw[body_at..]).unwrap();
    assert_eq!(seen["host"], "example.com");
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Limits with a short head deadline; everything else default.
fn short_head() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// Sends `first`, then `line` every 100 ms (at most 200 times) until the gateway closes the
/// connection; returns what the gateway sent and whether it closed before the trickle ended.
async fn trickle(stream: TcpStream, first: &[u8], line: &'static [u8]) -> (Vec<u8>, bool) {
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(first).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(line).await.is_err() {
                return;
            }
        }
        // Keep the socket open until the reader is done.
        std::future::pending::<()>().await;
    });
    let raw = tokio::select! {
        raw = read_to_close(&mut rd) => raw,
        _ = async { while !writer.is_finished() { tokio::time::sleep(Duration::from_millis(50)).await } } => Vec::new(),
    };
    let closed_first = !writer.is_finished();
    writer.abort();
    (raw, closed_first)
}

/// A backend that reads the whole request body and answers with its length.
async fn body_length() -> TestBackend {
    serve(|req: http::Request<hyper::body::Incoming>| async move {
        let len = req
            .into_body()
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
    })
    .await
}

#[tokio::test]
async fn a_slow_request_head_is_cut_at_the_header_read_timeout_but_a_slow_body_is_not() {
    let be = body_length().await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let gw = start(vec![bind(port, rule)], short_head()).await;

    // Slowloris: a header line every 100 ms, each read well within every per-read timeout.
    let s = TcpStream::connect(addr(port)).await.unwrap();
    let (raw, closed) = trickle(s, b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-Slow: 1\r\n").await;
    assert!(closed, "the gateway never closed a head that kept growing");
    assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));

    // The deadline covers the head only: a body trickled for longer than it still goes through.
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"x").await.unwrap();
    }
    assert_eq!(read_response(&mut s).await, (200, b"20".to_vec()));

    // On the same kept-alive connection the deadline is armed again for the next head.
    let (raw, closed) = trickle(s, b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-Slow: 1\r\n").await;
    assert!(closed, "the second head was not bounded");
    assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let be = backend("b").await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let limits = Limits {
        keepalive_idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let gw = start(vec![bind(port, rule)], limits).await;

    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (status, _) = read_response(&mut s).await;
        assert_eq!(status, 200);
    }
    // Pingora alone would keep this connection open for ever.
    let rest = read_to_close(&mut s).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // A connection that never sends anything is closed too.
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kept_alive_connections_serve_pipelined_and_split_heads_after_waiting_idle() {
    let be = backend("b").await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let gw = start(vec![bind(port, rule)], Limits::default()).await;

    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // The connection now waits idle between requests. Two requests in one write: the bytes
    // the wait takes in carry both heads, and both are answered in order.
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert_eq!(read_response(&mut s).await.0, 200);
    // A head that arrives in pieces after the wait: the rest is read after the first bytes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"GET /4 HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"TP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // A head larger than one read of the wait (4 KiB) still arrives whole.
    let long = format!(
        "GET /5 HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n",
        "v".repeat(6000)
    );
    s.write_all(long.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // A request with a body, then another, in one write.
    s.write_all(
        b"POST /6 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /7 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert_eq!(read_response(&mut s).await.0, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let be = backend("b").await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let gw = start(vec![bind(port, rule)], Limits::default()).await;
    let mut s = held(port).await;
    let stopping = tokio::spawn({
        let gw = gw.clone();
        async move { gw.shutdown(Duration::from_secs(30)).await }
    });
    // Closed by the gateway well before the idle timeout (60 s) or the grace period (30 s).
    let rest = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut s))
        .await
        .expect("the idle connection was not closed by the shutdown");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    stopping.await.unwrap();
}

/// Opens a connection and completes one keep-alive request on it, so the gateway holds it.
async fn held(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    s
}

/// Whether a new connection to `port` is closed without an answer.
async fn refused(port: u16) -> bool {
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    read_to_close(&mut s).await.is_empty()
}

/// Retries `held` until the gateway has freed a slot (closing is asynchronous).
async fn eventually_held(port: u16) -> TcpStream {
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr(port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        if matches!(s.peek(&mut buf).await, Ok(1)) {
            assert_eq!(read_response(&mut s).await.0, 200);
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no connection slot came back");
}

#[tokio::test]
async fn connections_past_the_per_bind_and_total_limits_are_closed() {
    let be = backend("b").await;
    let (p1, p2) = (free_port(), free_port());
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let limits = Limits {
        max_connections: 3,
        max_connections_per_bind: 2,
        ..Limits::default()
    };
    let gw = start(vec![bind(p1, rule.clone()), bind(p2, rule)], limits).await;

    let a1 = held(p1).await;
    let _a2 = held(p1).await;
    assert!(refused(p1).await, "a third connection on one bind");
    let _b1 = held(p2).await;
    assert!(refused(p2).await, "a fourth connection in total");
    let stats = gw.overload_stats();
    assert_eq!(stats.open_connections, 3);
    assert_eq!(stats.refused_connections, 2);

    // Closing one frees its slot on both counts.
    drop(a1);
    let _a3 = eventually_held(p1).await;
    assert!(refused(p2).await);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_buffered_body_cap_holds_under_a_burst_of_large_uploads() {
    const UPLOADS: usize = 50;
    const SIZE: usize = 2 * 1024 * 1024;
    // Room for four replay buffers (64 KiB each) at once.
    const CAP: usize = 4 * 64 * 1024;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let be = serve(move |req: http::Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            if len == SIZE {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                len.to_string(),
            ))))
        }
    })
    .await;
    let port = free_port();
    let mut rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    rule.retry = Some(Retry {
        codes: vec![503],
        ..Retry::default()
    });
    let limits = Limits {
        max_buffered_body_bytes: CAP,
        ..Limits::default()
    };
    let gw = start(vec![bind(port, rule)], limits).await;

    // Every upload sends its head and the first KiB, then waits: the gateway has decided about
    // all of them (a reservation, or 503) before any body outgrows its replay buffer.
    let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n");
    let refused = Arc::new(AtomicUsize::new(0));
    let decided = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..UPLOADS {
        let head = head.clone();
        let refused = refused.clone();
        let decided = decided.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr(port)).await.unwrap();
            let body = vec![b'x'; SIZE];
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body[..1024]).await.unwrap();
            let mut buf = [0u8; 1];
            let go = decided.notified();
            tokio::pin!(go);
            go.as_mut().enable();
            tokio::select! {
                _ = s.peek(&mut buf) => {
                    let (status, _) = read_response(&mut s).await;
                    assert_eq!(status, 503);
                    if refused.fetch_add(1, Ordering::SeqCst) + 1 == UPLOADS - 4 {
                        decided.notify_waiters();
                    }
                    503
                }
                _ = go => {
                    s.write_all(&body[1024..]).await.unwrap();
                    let (status, answer) = read_response(&mut s).await;
                    assert_eq!(status, 200);
                    assert_eq!(answer, SIZE.to_string().as_bytes());
                    200
                }
            }
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 503).count(), UPLOADS - 4);
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 4);
    assert_eq!(received.load(Ordering::SeqCst), 4);
    let stats = gw.overload_stats();
    assert_eq!(stats.refused_body_reservations, (UPLOADS - 4) as u64);

    // Everything reserved is given back once the requests are over.
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = gw.overload_stats().buffered_body_bytes;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0);
    // And the gateway still serves.
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, (200, b"3".to_vec()));
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn zero_limits_are_rejected_and_the_active_config_keeps_serving() {
    let be = backend("b").await;
    let port = free_port();
    let rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![be.addr]));
    let gw = start(vec![bind(port, rule.clone())], Limits::default()).await;
    let bad = Config {
        binds: vec![bind(port, rule)],
        limits: Limits {
            header_read_timeout: Duration::ZERO,
            ..Limits::default()
        },
    };
    let err = gw.apply(bad).await.unwrap_err();
    assert!(err.to_string().contains("header_read_timeout"), "{err}");
    assert_eq!(get(addr(port), "a", "/").await.status, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}
