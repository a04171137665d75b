//! The InferencePool filter and picker in a real gateway, in front of simulated vLLM servers,
//! through loopback sockets: load-aware endpoint choice from scraped metrics, the served endpoint
//! reported, model rewrites there and back (JSON and SSE), sheddable requests refused while the
//! pool is saturated, malformed requests refused, other paths passed through.

mod support;

use std::time::{Duration, Instant};

use gateway_inference::gateway::InferenceGateway;
use gateway_inference::scrape::ScrapeConfig;
use gateway_inference::settings::{InferencePoolSettings, ObjectiveSettings, RewriteSettings};
use support::{Reply, gateway, post};
use vllm_sim::RunningSim;

async fn sim(pod: &str, max_num_seqs: usize, itl_ms: f64) -> RunningSim {
    support::sim(pod, max_num_seqs, |c| c.inter_token_latency_ms = itl_ms).await
}

/// The pool over `sims` with `objectives` and `rewrites`, no external picker.
fn settings(
    sims: &[&RunningSim],
    objectives: Vec<ObjectiveSettings>,
    rewrites: Vec<RewriteSettings>,
) -> InferencePoolSettings {
    let mut pool = support::pool(&support::addresses(sims));
    pool.objectives = objectives;
    pool.rewrites = rewrites;
    pool
}

async fn get(port: u16, path: &str) -> Reply {
    support::send(port, "GET", path, "", &[]).await
}

fn chat(model: &str, text: &str, stream: bool) -> String {
    support::chat_body(model, text, stream)
}

fn served(reply: &Reply) -> String {
    reply
        .headers
        .get("x-gateway-destination-endpoint-served")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_least_loaded_server_and_report_it() {
    let busy = sim("busy", 1, 200.0).await;
    let idle = sim("idle", 1, 0.0).await;
    let inference = InferenceGateway::default();
    let (_gw, port) = gateway(&inference, &settings(&[&busy, &idle], vec![], vec![])).await;

    // Both answer through the gateway, which names the endpoint that served.
    let first = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hello there", false),
        &[],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let endpoint = served(&first);
    assert!(
        endpoint == busy.local_addr().to_string() || endpoint == idle.local_addr().to_string(),
        "served by {endpoint:?}"
    );

    // Occupy `busy` directly for the rest of the test: one running, two waiting (200 ms per
    // token, 900 tokens each); the holders are dropped at the end.
    let busy_port = busy.local_addr().port();
    let mut holders = Vec::new();
    for i in 0..3 {
        let body = serde_json::json!({
            "model": "base", "prompt": format!("hold {i}"), "max_tokens": 900, "ignore_eos": true
        })
        .to_string();
        holders.push(tokio::spawn(async move {
            post(busy_port, "/v1/completions", &body, &[]).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while busy.state().await.waiting < 2 {
        assert!(Instant::now() < deadline, "the busy server never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the gateway has scraped the queue, every request goes to the idle server. A request
    // sent to the busy one before that waits in its queue: given up after a while, it counts
    // as not served by the idle one.
    let mut in_a_row = 0;
    let mut sent = 0;
    while in_a_row < 8 {
        assert!(
            sent < 100,
            "the gateway kept sending requests to the busy server"
        );
        sent += 1;
        let body = chat("base", &format!("question {sent}"), false);
        let reply = tokio::time::timeout(
            Duration::from_secs(3),
            post(port, "/v1/chat/completions", &body, &[]),
        )
        .await;
        match reply {
            Ok(reply) if served(&reply) == idle.local_addr().to_string() => {
                assert_eq!(reply.status, 200, "{}", reply.body);
                in_a_row += 1;
            }
            _ => {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for h in holders {
        h.abort();
    }
    busy.shutdown().await;
    idle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rewrites_apply_upstream_and_are_undone_in_responses() {
    let server = sim("one", 4, 0.0).await;
    let rewrite: RewriteSettings = serde_json::from_value(serde_json::json!({
        "name": "alias",
        "spec": {
            "poolRef": {"name": "pool"},
            "rules": [{"matches": [{"model": {"type": "Exact", "value": "alias"}}],
                       "targets": [{"modelRewrite": "base"}]}]
        }
    }))
    .expect("rewrite");
    let inference = InferenceGateway::default();
    let (_gw, port) = gateway(&inference, &settings(&[&server], vec![], vec![rewrite])).await;

    // The simulator knows only `base`: it answers because the gateway rewrote the request.
    let json = post(
        port,
        "/v1/chat/completions",
        &chat("alias", "hi", false),
        &[],
    )
    .await;
    assert_eq!(json.status, 200, "{}", json.body);
    let value: serde_json::Value = serde_json::from_str(&json.body).expect("json");
    assert_eq!(value["model"], "alias");
    assert!(json.headers.get("content-length").is_none_or(|l| {
        l.to_str().ok().and_then(|l| l.parse::<usize>().ok()) == Some(json.body.len())
    }));

    let sse = post(
        port,
        "/v1/chat/completions",
        &chat("alias", "hi", true),
        &[],
    )
    .await;
    assert_eq!(sse.status, 200, "{}", sse.body);
    let events: Vec<&str> = sse
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .collect();
    assert!(!events.is_empty(), "{}", sse.body);
    for event in events {
        let v: serde_json::Value = serde_json::from_str(event).expect("event");
        assert_eq!(v["model"], "alias", "{event}");
    }
    assert!(sse.body.trim_end().ends_with("data: [DONE]"));

    // Without a rewrite the model passes as asked.
    let plain = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[],
    )
    .await;
    assert_eq!(plain.status, 200);
    let value: serde_json::Value = serde_json::from_str(&plain.body).expect("json");
    assert_eq!(value["model"], "base");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheddable_requests_get_429_while_the_pool_is_saturated() {
    let server = sim("one", 4, 0.0).await;
    let objectives = vec![
        ObjectiveSettings {
            name: "batch".into(),
            priority: -1,
        },
        ObjectiveSettings {
            name: "critical".into(),
            priority: 10,
        },
    ];
    // Metrics never scrape (wrong path): every endpoint counts as saturated.
    let inference = InferenceGateway::new(
        ScrapeConfig {
            path: "/no-metrics-here".into(),
            ..ScrapeConfig::default()
        },
        1024,
    );
    let (_gw, port) = gateway(&inference, &settings(&[&server], objectives, vec![])).await;
    let shed = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[("x-llm-d-inference-objective", "batch")],
    )
    .await;
    assert_eq!(shed.status, 429, "{}", shed.body);
    assert_eq!(
        shed.headers
            .get("x-llm-d-request-dropped-reason")
            .and_then(|v| v.to_str().ok()),
        Some("rejected-saturated")
    );
    // Other priorities are served.
    for objective in ["critical", "unknown"] {
        let ok = post(
            port,
            "/v1/chat/completions",
            &chat("base", "hi", false),
            &[("x-llm-d-inference-objective", objective)],
        )
        .await;
        assert_eq!(ok.status, 200, "{objective}: {}", ok.body);
    }
    let ok = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[],
    )
    .await;
    assert_eq!(ok.status, 200);

    // Malformed inference requests are refused; over the body bound, 413.
    let bad = post(port, "/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let big = chat("base", &"word ".repeat(400), false);
    let over = post(port, "/v1/chat/completions", &big, &[]).await;
    assert_eq!(over.status, 413);
    // Other paths pass through (round robin).
    let models = get(port, "/v1/models").await;
    assert_eq!(models.status, 200);
    assert!(models.body.contains("base"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_naming_an_external_picker_is_served_as_when_the_picker_is_unavailable() {
    use gateway_inference::crd::v1::FailureMode;
    use gateway_inference::settings::EndpointPickerSettings;
    let server = sim("one", 4, 0.0).await;
    for (mode, expected) in [(FailureMode::FailOpen, 200), (FailureMode::FailClose, 503)] {
        let mut s = settings(&[&server], vec![], vec![]);
        s.endpoint_picker = Some(EndpointPickerSettings {
            failure_mode: mode,
            addresses: vec![],
            unresolved: Some("no Service epp".into()),
        });
        let inference = InferenceGateway::default();
        let (_gw, port) = gateway(&inference, &s).await;
        let reply = post(
            port,
            "/v1/chat/completions",
            &chat("base", "hi", false),
            &[],
        )
        .await;
        assert_eq!(reply.status, expected, "{mode:?}: {}", reply.body);
    }
    server.shutdown().await;
}

/// Holds `n` long requests at the simulator itself (not through the gateway) and waits until its
/// metrics show them queued.
async fn fill_queue(
    server: &RunningSim,
    n: usize,
    tokens: u32,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    let port = server.local_addr().port();
    let body = serde_json::json!({
        "model": "base",
        "messages": [{"role": "user", "content": "keep the server busy"}],
        "max_tokens": tokens,
        "ignore_eos": true,
    })
    .to_string();
    let held: Vec<_> = (0..n)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move { post(port, "/v1/chat/completions", &body, &[]).await })
        })
        .collect();
    loop {
        let page = get(port, "/metrics").await.body;
        let waiting = page
            .lines()
            .find(|l| l.starts_with("vllm:num_requests_waiting{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if waiting >= (n - 1) as f64 {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_at_the_gateway_while_the_pool_is_saturated() {
    use gateway_inference::flow::{BandConfig, FlowConfig};
    // One running slot: everything else queues in the server.
    let server = sim("one", 1, 10.0).await;
    let objectives = [("batch", -1), ("bounded", 5), ("critical", 10)]
        .into_iter()
        .map(|(name, priority)| ObjectiveSettings {
            name: name.into(),
            priority,
        })
        .collect();
    let short = BandConfig {
        ttl: Duration::from_millis(300),
        ..BandConfig::default()
    };
    let flow = FlowConfig {
        default_band: short,
        bands: [
            (
                10,
                BandConfig {
                    ttl: Duration::from_secs(60),
                    ..BandConfig::default()
                },
            ),
            (
                5,
                BandConfig {
                    max_requests: 0,
                    ..BandConfig::default()
                },
            ),
        ]
        .into(),
        ..FlowConfig::default()
    };
    let inference = InferenceGateway::default().with_flow_control(Some(flow));
    let (_gw, port) = gateway(&inference, &settings(&[&server], objectives, vec![])).await;
    // The first request starts the pool's scraper.
    let first = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);

    // Six long requests at the server: one running, five waiting (saturation 5 / 5).
    let held = fill_queue(&server, 6, 100).await;
    // Wait until the gateway's scrapes show it: a sheddable request is refused at once then. A
    // probe sent before that joins the server's queue (it is abandoned, and keeps the server busy).
    let mut probes = 0;
    loop {
        let probe = tokio::time::timeout(
            Duration::from_millis(300),
            post(
                port,
                "/v1/chat/completions",
                &chat("base", "probe", false),
                &[("x-llm-d-inference-objective", "batch")],
            ),
        )
        .await;
        if let Ok(probe) = probe {
            assert_eq!(probe.status, 429, "{}", probe.body);
            break;
        }
        probes += 1;
        assert!(probes < 50, "the gateway never saw the pool saturated");
    }

    // Priority 0 (default band, 300 ms TTL) waits at the gateway, then expires.
    let expired = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[],
    )
    .await;
    assert_eq!(expired.status, 429, "{}", expired.body);
    assert_eq!(
        expired
            .headers
            .get("x-llm-d-request-dropped-reason")
            .and_then(|v| v.to_str().ok()),
        Some("rejected-ttl-expired")
    );
    // Priority 5's band holds nothing: refused at once.
    let full = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[("x-llm-d-inference-objective", "bounded")],
    )
    .await;
    assert_eq!(full.status, 429, "{}", full.body);
    assert_eq!(
        full.headers
            .get("x-llm-d-request-dropped-reason")
            .and_then(|v| v.to_str().ok()),
        Some("rejected-saturated")
    );
    // Priority 10 (60 s TTL) waits until the server's queue drains, then is served, with its
    // fairness id taken off the request.
    let served_late = post(
        port,
        "/v1/chat/completions",
        &chat("base", "hi", false),
        &[
            ("x-llm-d-inference-objective", "critical"),
            ("x-llm-d-inference-fairness-id", "tenant-a"),
        ],
    )
    .await;
    assert_eq!(served_late.status, 200, "{}", served_late.body);
    for h in held {
        assert_eq!(h.await.expect("held request").status, 200);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_held_whole_and_sent_to_the_chosen_server() {
    // A server with room for a long context.
    let server = support::sim("long", 5, |c| {
        c.max_model_len = 400_000;
        c.kv_cache_size = 40_000;
    })
    .await;
    // The default bound (4 MiB), far above Pingora's 64 KiB replay buffer.
    let inference = InferenceGateway::default();
    let (_gw, port) = gateway(&inference, &settings(&[&server], vec![], vec![])).await;
    let words = 100_000;
    let long = chat("base", &"word ".repeat(words), false);
    assert!(long.len() > 4 * 64 * 1024);
    let ok = post(port, "/v1/chat/completions", &long, &[]).await;
    assert_eq!(ok.status, 200, "{}", &ok.body[..ok.body.len().min(300)]);
    let value: serde_json::Value = serde_json::from_str(&ok.body).expect("json");
    let prompt_tokens = value["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(
        prompt_tokens >= words as u64,
        "the server saw the whole prompt: {prompt_tokens} tokens"
    );
    // Over the bound: 413, at once when the Content-Length says so (the head alone is sent:
    // the gateway answers and closes without reading the body).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: llm\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        gateway_inference::gateway::DEFAULT_BODY_LIMIT + 1
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    server.shutdown().await;
}
