//! Metrics and access logs through real loopback sockets: what a scrape shows after proxied
//! requests, 404s, redirects, connection failures, retries, ejections and mirrors; access log
//! lines; and a sink that never drains, which must not hold requests up.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gateway_core::config::*;
use gateway_core::{AccessLog, AccessLogField, AccessLogSink, FilterRegistry, Gateway};
use support::*;

const LISTENER: &str = "test/gw/http";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(port: u16, routes: Vec<Route>) -> Config {
    let mut listener = Listener::new(LISTENER, 80);
    listener.hostname = Some("app.example.com".into());
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

/// The value of the sample whose name and labels are exactly `series` (e.g.
/// `foo_total{a="b"}`); `None` when the scrape has no such sample.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Polls `check` until it holds; fails after 20 s (the request's `logging` phase runs just after
/// the client has its response).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer that appends to a shared buffer (the embedder's sink).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("UTF-8 log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn server_count(rule: &str, backend: &str, class: &str) -> String {
    let route = if rule.is_empty() { "" } else { "ns/r" };
    format!(
        r#"http_server_request_duration_seconds_count{{listener="{LISTENER}",route="{route}",rule="{rule}",backend="{backend}",status_class="{class}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_and_access_logs_show_what_requests_did() {
    let v1 = backend("v1").await;
    let bad = fixed("bad", 500).await;
    let good = backend("good").await;
    let dead = free_port();
    let port = free_port();

    let mut redirect = Rule::exact("/old").filter(Filter::RequestRedirect(RequestRedirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status_code: 301,
    }));
    redirect.name = Some("redir".into());
    let mut down = Rule::prefix("/down").backend(BackendRef::endpoints("dead", vec![addr(dead)]));
    down.name = Some("down".into());
    let mut flaky_backend = BackendRef::endpoints("flaky", vec![bad.addr, good.addr]);
    if let BackendTarget::Endpoints(b) = &mut flaky_backend.target {
        b.policy.outlier_detection = Some(OutlierDetection {
            consecutive_failures: 1,
            ..OutlierDetection::default()
        });
    }
    let mut flaky = Rule::prefix("/flaky").backend(flaky_backend);
    flaky.name = Some("flaky".into());
    flaky.retry = Some(Retry {
        codes: vec![500],
        attempts: 1,
        backoff: Some(Duration::from_millis(1)),
    });
    let mut mirrored = Rule::prefix("/mirrored")
        .filter(Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef::endpoints("copy", vec![v1.addr]),
            fraction: None,
        })))
        .backend(BackendRef::endpoints("v1", vec![v1.addr]));
    mirrored.name = Some("mirrored".into());
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/ok").backend(BackendRef::endpoints("v1", vec![v1.addr])))
        .rule(redirect)
        .rule(down)
        .rule(flaky)
        .rule(mirrored);

    let gw = Gateway::new(FilterRegistry::new());
    let log = Capture::default();
    gw.set_access_log(Some(AccessLog::new(AccessLogSink::Writer(Box::new(
        log.clone(),
    )))))
    .unwrap();
    let cfg = config(port, vec![route]);
    assert!(gw.apply(cfg.clone()).await.unwrap().changed);
    assert!(!gw.apply(cfg.clone()).await.unwrap().changed);
    let mut invalid = cfg.clone();
    invalid.limits.max_connections = 0;
    assert!(gw.apply(invalid).await.is_err());

    let to = addr(port);
    let headers = [("x-request-id", "req-1"), ("user-agent", "obs-test")];
    assert_eq!(
        get_with(to, "app.example.com", "/ok?x=1", &headers)
            .await
            .status,
        200
    );
    assert_eq!(get(to, "app.example.com", "/ok").await.status, 200);
    assert_eq!(get(to, "app.example.com", "/nothing").await.status, 404);
    assert_eq!(get(to, "other.example.com", "/ok").await.status, 404);
    assert_eq!(get(to, "app.example.com", "/old").await.status, 301);
    assert_eq!(get(to, "app.example.com", "/down").await.status, 503);
    for _ in 0..2 {
        assert_eq!(get(to, "app.example.com", "/flaky").await.backend(), "good");
    }
    assert_eq!(get(to, "app.example.com", "/mirrored").await.status, 200);

    let metrics = gw.metrics();
    let expected = [
        (server_count("0", "v1", "2xx"), 2.0),
        // Matched the listener, no route: empty route labels.
        (server_count("", "", "4xx"), 1.0),
        // Matched no listener at all.
        (
            r#"http_server_request_duration_seconds_count{listener="",route="",rule="",backend="",status_class="4xx"}"#.into(),
            1.0,
        ),
        // Answered by the rule's filter, before a backend was chosen.
        (server_count("redir", "", "3xx"), 1.0),
        (server_count("down", "dead", "5xx"), 1.0),
        (server_count("flaky", "flaky", "2xx"), 2.0),
        (server_count("mirrored", "v1", "2xx"), 1.0),
        (
            r#"http_client_request_duration_seconds_count{backend="flaky",status_class="5xx"}"#.into(),
            1.0,
        ),
        (
            r#"http_client_request_duration_seconds_count{backend="flaky",status_class="2xx"}"#.into(),
            2.0,
        ),
        (
            r#"http_client_request_duration_seconds_count{backend="v1",status_class="2xx"}"#.into(),
            3.0,
        ),
        (r#"gateway_upstream_connect_errors_total{backend="dead"}"#.into(), 1.0),
        (r#"gateway_upstream_connect_errors_total{backend="v1"}"#.into(), 0.0),
        (r#"gateway_upstream_retries_total{backend="flaky"}"#.into(), 1.0),
        (r#"gateway_endpoint_ejections_total{backend="flaky"}"#.into(), 1.0),
        (r#"gateway_mirror_requests_total{result="completed"}"#.into(), 1.0),
        (r#"gateway_mirror_requests_total{result="failed"}"#.into(), 0.0),
        (r#"gateway_config_applies_total{result="changed"}"#.into(), 1.0),
        (r#"gateway_config_applies_total{result="unchanged"}"#.into(), 1.0),
        (r#"gateway_config_applies_total{result="rejected"}"#.into(), 1.0),
        ("gateway_access_log_dropped_total".into(), 0.0),
    ];
    eventually("every request to be counted", || {
        let text = metrics.encode();
        expected
            .iter()
            .all(|(series, v)| sample(&text, series) == Some(*v))
    })
    .await;
    let text = metrics.encode();
    for (series, v) in &expected {
        assert_eq!(sample(&text, series), Some(*v), "{series} in\n{text}");
    }
    // Histograms carry their buckets; connect times were measured.
    let inf = format!(
        r#"http_server_request_duration_seconds_bucket{{le="+Inf",listener="{LISTENER}",route="ns/r",rule="0",backend="v1",status_class="2xx"}}"#
    );
    assert_eq!(sample(&text, &inf), Some(2.0), "{text}");
    let first = format!(
        r#"http_server_request_duration_seconds_bucket{{le="0.005",listener="{LISTENER}",route="ns/r",rule="0",backend="v1",status_class="2xx"}}"#
    );
    assert!(sample(&text, &first).is_some(), "{text}");
    assert!(
        sample(
            &text,
            r#"gateway_upstream_connect_duration_seconds_count{backend="v1"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(sample(&text, "gateway_config_last_apply_timestamp_seconds").is_some_and(|t| t > 0.0));
    assert!(sample(&text, "gateway_downstream_connections_active").is_some());
    assert!(text.contains(r#"gateway_build_info{version=""#));
    // Cardinality: no path, client or status code appears in a label.
    assert!(!text.contains("/ok") && !text.contains("/nothing") && !text.contains("127.0.0.1"));
    assert!(text.ends_with("# EOF\n"));

    // One JSON line per request, with what served it.
    eventually("the access log lines", || log.lines().len() == 9).await;
    // Found by request, not by position: a request's line is written after its client has the
    // response, so two requests in a row may log in either order.
    let lines = log.lines();
    let line = |authority: &str, path: &str| {
        lines
            .iter()
            .find(|l| l["authority"] == authority && l["path"] == path)
            .unwrap_or_else(|| panic!("no access log line for {authority}{path}: {lines:?}"))
    };
    let ok = line("app.example.com", "/ok?x=1");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/ok?x=1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["response_code"], 200);
    assert!(ok["error"].is_null());
    assert_eq!(ok["x-request-id"], "req-1");
    assert_eq!(ok["user-agent"], "obs-test");
    assert_eq!(ok["authority"], "app.example.com");
    assert_eq!(ok["listener"], LISTENER);
    assert_eq!(ok["route"], "ns/r");
    assert_eq!(ok["rule"], "0");
    assert_eq!(ok["backend"], "v1");
    assert_eq!(ok["upstream_host"], v1.addr.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["downstream_local_address"], to.to_string());
    assert!(ok["bytes_sent"].as_u64().is_some_and(|n| n > 0));
    assert!(ok["duration"].is_u64() && ok["upstream_service_time"].is_u64());
    assert!(ok["start_time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let no_route = line("app.example.com", "/nothing");
    assert_eq!(
        (&no_route["response_code"], &no_route["error"]),
        (&serde_json::json!(404), &serde_json::json!("NoRoute"))
    );
    assert_eq!(no_route["listener"], LISTENER);
    assert!(no_route["route"].is_null() && no_route["backend"].is_null());
    assert!(line("other.example.com", "/ok")["listener"].is_null());
    assert_eq!(line("app.example.com", "/old")["response_code"], 301);
    assert_eq!(line("app.example.com", "/old")["rule"], "redir");
    let down = line("app.example.com", "/down");
    assert_eq!(down["response_code"], 503);
    assert_eq!(down["error"], "ConnectRefused");
    assert_eq!(down["backend"], "dead");
    assert!(down["upstream_service_time"].is_null());
    let retried = lines
        .iter()
        .find(|l| l["attempts"] == 2)
        .expect("a retried request");
    assert_eq!(retried["upstream_host"], good.addr.to_string());
    assert_eq!(retried["backend"], "flaky");
    gw.set_access_log(None).unwrap();
    gw.shutdown(Duration::from_secs(1)).await;
}

/// A sink whose writes wait until the test opens the gate.
struct Gated {
    gate: Arc<(Mutex<bool>, Condvar)>,
    out: Capture,
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_drains_drops_lines_not_requests() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let out = Capture::default();
    let mut log = AccessLog::new(AccessLogSink::Writer(Box::new(Gated {
        gate: gate.clone(),
        out: out.clone(),
    })))
    .with_fields(vec![AccessLogField::Path, AccessLogField::ResponseCode]);
    log.queue = 2;
    gw.set_access_log(Some(log)).unwrap();
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("v1", vec![v1.addr])));
    gw.apply(config(port, vec![route])).await.unwrap();

    // One line, then time for the writer to flush it into the gate and get stuck there.
    assert_eq!(
        get(addr(port), "app.example.com", "/first").await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    const REQUESTS: usize = 12;
    let requests = async {
        for i in 0..REQUESTS {
            let r = get(addr(port), "app.example.com", &format!("/{i}")).await;
            assert_eq!(r.status, 200);
        }
    };
    // A request that waited for the stuck sink would never finish.
    tokio::time::timeout(Duration::from_secs(20), requests)
        .await
        .expect("requests held up by the access log");
    // The writer is stuck on the first line: at most the queue (2) of these get through.
    let metrics = gw.metrics();
    let dropped = || sample(&metrics.encode(), "gateway_access_log_dropped_total").unwrap_or(0.0);
    eventually("lines to be dropped", || dropped() >= (REQUESTS - 2) as f64).await;

    let (open, cv) = &*gate;
    *open.lock().unwrap() = true;
    cv.notify_all();
    eventually("the queued lines to be written", || {
        out.lines().len() + dropped() as usize == REQUESTS + 1
    })
    .await;
    for line in out.lines() {
        let fields = line.as_object().unwrap();
        assert_eq!(fields.len(), 2, "{line}");
        assert_eq!(line["response_code"], 200);
    }
    gw.set_access_log(None).unwrap();
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_keep_counting_across_swaps_and_leave_with_their_route() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let kept = || {
        Route::new("ns", "r")
            .rule(Rule::prefix("/a").backend(BackendRef::endpoints("v1", vec![v1.addr])))
    };
    let gone = Route::new("ns", "old")
        .rule(Rule::prefix("/b").backend(BackendRef::endpoints("v1", vec![v1.addr])));
    gw.apply(config(port, vec![kept(), gone])).await.unwrap();
    assert_eq!(get(addr(port), "app.example.com", "/a").await.status, 200);
    assert_eq!(get(addr(port), "app.example.com", "/b").await.status, 200);
    let metrics = gw.metrics();
    let a = server_count("0", "v1", "2xx");
    let b = a.replace(r#"route="ns/r""#, r#"route="ns/old""#);
    eventually("both requests counted", || {
        let text = metrics.encode();
        sample(&text, &a) == Some(1.0) && sample(&text, &b) == Some(1.0)
    })
    .await;

    // A new configuration without the second route: the first keeps its count.
    let mut next = config(port, vec![kept()]);
    next.limits.max_connections -= 1;
    assert!(gw.apply(next).await.unwrap().changed);
    assert_eq!(get(addr(port), "app.example.com", "/a").await.status, 200);
    eventually("the kept route to count on", || {
        sample(&metrics.encode(), &a) == Some(2.0)
    })
    .await;
    assert_eq!(
        sample(&metrics.encode(), &b),
        None,
        "a removed route's series goes"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

/// A backend that answers every request with `100 Continue` and then `200 OK` (what a server
/// does for a request with `Expect: 100-continue`).
async fn continuing_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_interim_100_continue_is_not_counted_as_a_backend_response() {
    let be = continuing_backend().await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let route =
        Route::new("ns", "r").rule(Rule::prefix("/").backend(BackendRef::endpoints("c", vec![be])));
    gw.apply(config(port, vec![route])).await.unwrap();
    let reply = get(addr(port), "app.example.com", "/x").await;
    assert_eq!(reply.status, 200);
    let metrics = gw.metrics();
    let final_response =
        r#"http_client_request_duration_seconds_count{backend="c",status_class="2xx"}"#;
    eventually("the response counted", || {
        sample(&metrics.encode(), final_response) == Some(1.0)
    })
    .await;
    let text = metrics.encode();
    assert!(
        !text.contains(r#"backend="c",status_class="1xx""#),
        "the interim response was counted:\n{text}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_returns_after_every_access_log_line_is_written() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let dir = std::env::temp_dir().join(format!("gw-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    gw.set_access_log(Some(AccessLog::new(AccessLogSink::File(path.clone()))))
        .unwrap();
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/").backend(BackendRef::endpoints("v1", vec![v1.addr])));
    gw.apply(config(port, vec![route])).await.unwrap();
    for i in 0..20 {
        let path = format!("/n{i}");
        assert_eq!(get(addr(port), "app.example.com", &path).await.status, 200);
    }
    gw.shutdown(Duration::from_secs(5)).await;
    // No waiting here: the writer has flushed before shutdown returned.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.contains("/n19"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
