//! The inference data plane's metrics in the gateway's Prometheus registry, through loopback
//! sockets: a gateway in front of simulated vLLM servers serves requests (scheduled, refused as
//! sheddable, malformed, over the body bound, other paths), then its metrics text says which
//! endpoint was picked and which served, why requests were refused, how long scheduling took,
//! and what the scraper last saw of each server; a pool without endpoints counts its 503s; the
//! series of a pool go when no configuration references it; an external picker's choices, an
//! unreachable picker's fail-close answers and an unresolved one's fail-open fallbacks are
//! counted.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_core::Gateway;
use gateway_core::config::Config;
use gateway_inference::gateway::InferenceGateway;
use gateway_inference::scheduler::{Profile, SaturationDetector, Scheduler};
use gateway_inference::scrape::ScrapeConfig;
use gateway_inference::settings::{InferencePoolSettings, ObjectiveSettings};
use support::{Reply, free_port, gateway, send};
use vllm_sim::RunningSim;

async fn sim(pod: &str) -> RunningSim {
    support::sim(pod, 4, |_| {}).await
}

/// The pool over `endpoints`, with a sheddable objective `batch` and a `critical` one.
fn settings(endpoints: &[SocketAddr]) -> InferencePoolSettings {
    let mut pool = support::pool(endpoints);
    pool.objectives = vec![
        ObjectiveSettings {
            name: "batch".into(),
            priority: -1,
        },
        ObjectiveSettings {
            name: "critical".into(),
            priority: 10,
        },
    ];
    pool
}

/// A gateway on `port` whose one route sends everything to the pool, or none (404).
fn config(port: u16, settings: Option<&InferencePoolSettings>) -> Config {
    support::config(port, settings, None)
}

async fn chat(port: u16, text: &str, headers: &[(&str, &str)]) -> Reply {
    let body = support::chat_body("base", text, false);
    send(port, "POST", "/v1/chat/completions", &body, headers).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.header(name)
}

/// The value of the sample `series` (name and labels, exactly as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn sample(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

const POOL: &str = r#"pool="llm/pool""#;

fn per_endpoint(name: &str, endpoint: SocketAddr) -> String {
    format!(r#"{name}{{{POOL},endpoint="{endpoint}"}}"#)
}

fn rejected(reason: &str) -> String {
    format!(r#"gateway_inference_requests_rejected_total{{{POOL},reason="{reason}"}}"#)
}

/// The metrics text once `ready` holds for it (within 5 s). Requests are counted when they
/// end, just after the client has the response, so a scrape right after a response may not
/// show it yet.
async fn until(gw: &Gateway, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = gw.metrics().encode();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_text_reports_picks_serves_rejections_and_endpoint_state() {
    let a = sim("a").await;
    let b = sim("b").await;
    let endpoints = [a.local_addr(), b.local_addr()];
    // Metrics count as stale at once (staleness 0): a sheddable request always finds the pool
    // saturated (429), while flow control, which only trusts fresh metrics, never holds one.
    let inference =
        InferenceGateway::new(ScrapeConfig::default(), 1024).with_scheduler(|| Scheduler {
            profile: Profile::reference_default(),
            detector: SaturationDetector {
                staleness: Duration::ZERO,
                ..SaturationDetector::default()
            },
        });
    let pool = settings(&endpoints);
    let (gw, port) = gateway(&inference, &pool).await;

    // Before any traffic: the pool's series exist, at zero.
    let before = gw.metrics().encode();
    assert_eq!(
        sample(
            &before,
            &per_endpoint("gateway_inference_requests_served_total", endpoints[0])
        ),
        0.0
    );
    assert_eq!(
        sample(
            &before,
            &format!("gateway_inference_pool_endpoints{{{POOL}}}")
        ),
        2.0
    );

    // Three scheduled requests, each reporting the endpoint that served.
    let mut served = [0u32; 2];
    for i in 0..3 {
        let reply = chat(
            port,
            &format!("hello {i}"),
            &[("x-llm-d-inference-objective", "critical")],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let by = header(&reply, "x-gateway-destination-endpoint-served");
        let i = endpoints
            .iter()
            .position(|e| e.to_string() == by)
            .unwrap_or_else(|| panic!("served by {by:?}"));
        served[i] += 1;
    }
    // A sheddable request while the pool is saturated: 429.
    let shed = chat(port, "hi", &[("x-llm-d-inference-objective", "batch")]).await;
    assert_eq!(shed.status, 429, "{}", shed.body);
    assert_eq!(
        header(&shed, "x-llm-d-request-dropped-reason"),
        "rejected-saturated"
    );
    // Not an OpenAI request: 400.
    let bad = send(port, "POST", "/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // Over the body bound (1 KiB): 413.
    let over = chat(port, &"word ".repeat(400), &[]).await;
    assert_eq!(over.status, 413);
    // Another path: round robin, not scheduled, but served by an endpoint.
    let models = send(port, "GET", "/v1/models", "", &[]).await;
    assert_eq!(models.status, 200);
    let by = header(&models, "x-gateway-destination-endpoint-served");
    let i = endpoints
        .iter()
        .position(|e| e.to_string() == by)
        .unwrap_or_else(|| panic!("served by {by:?}"));
    served[i] += 1;

    // Every endpoint scraped, every request counted.
    let text = until(&gw, "scraped and counted", |text| {
        let name = "gateway_inference_endpoint_requests_running";
        let served: f64 = endpoints
            .iter()
            .filter_map(|e| {
                value(
                    text,
                    &per_endpoint("gateway_inference_requests_served_total", *e),
                )
            })
            .sum();
        // Idle again as the scraper last saw them (a scrape may land while a request runs).
        endpoints.iter().all(|e| {
            value(text, &per_endpoint(name, *e)) == Some(0.0)
                && value(
                    text,
                    &per_endpoint("gateway_inference_endpoint_requests_waiting", *e),
                ) == Some(0.0)
        }) && served == 4.0
            && value(text, &rejected("request-too-large")) == Some(1.0)
    })
    .await;
    // Per endpoint: served is what the responses said; the scheduler picked each request's
    // first endpoint (which served: every endpoint is up).
    let mut picked_total = 0.0;
    for (i, e) in endpoints.iter().enumerate() {
        assert_eq!(
            sample(
                &text,
                &per_endpoint("gateway_inference_requests_served_total", *e)
            ),
            f64::from(served[i]),
            "{e}\n{text}"
        );
        picked_total += sample(
            &text,
            &per_endpoint("gateway_inference_requests_picked_total", *e),
        );
    }
    assert_eq!(picked_total, 3.0, "{text}");
    assert_eq!(sample(&text, &rejected("rejected-saturated")), 1.0);
    assert_eq!(sample(&text, &rejected("malformed-request")), 1.0);
    assert_eq!(sample(&text, &rejected("request-too-large")), 1.0);
    assert_eq!(sample(&text, &rejected("rejected-no-endpoints")), 0.0);
    assert_eq!(sample(&text, &rejected("rejected-ttl-expired")), 0.0);
    // One scheduling observation per scheduled request.
    assert_eq!(
        sample(
            &text,
            &format!("gateway_inference_scheduler_duration_seconds_count{{{POOL}}}")
        ),
        3.0
    );
    // Flow control held nothing.
    assert_eq!(
        sample(
            &text,
            &format!("gateway_inference_flow_control_requests_waiting{{{POOL}}}")
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"gateway_inference_flow_control_queue_duration_seconds_count{{{POOL},outcome="dispatched"}}"#
            )
        ),
        0.0
    );
    // What the scraper saw (idle servers, above), metrics present but stale under this
    // detector.
    for e in endpoints {
        let kv = sample(
            &text,
            &per_endpoint("gateway_inference_endpoint_kv_cache_usage_ratio", e),
        );
        assert!((0.0..=1.0).contains(&kv), "{kv}");
        let age = sample(
            &text,
            &per_endpoint("gateway_inference_endpoint_metrics_age_seconds", e),
        );
        assert!((0.0..5.0).contains(&age), "{age}");
        assert_eq!(
            sample(
                &text,
                &per_endpoint("gateway_inference_endpoint_metrics_stale", e)
            ),
            1.0
        );
    }
    assert_eq!(
        sample(
            &text,
            &format!("gateway_inference_pool_saturation{{{POOL}}}")
        ),
        1.0
    );
    // No external picker: no picker series. No model label anywhere.
    assert!(!text.contains("gateway_inference_endpoint_picker_requests_total{"));
    assert!(!text.contains("model=") && !text.contains("model_name="));

    // The pool loses its endpoints: its requests get 503, counted; the endpoint series go.
    gw.apply(config(port, Some(&settings(&[]))))
        .await
        .expect("apply");
    let none = chat(port, "hi", &[]).await;
    assert_eq!(none.status, 503, "{}", none.body);
    let text = until(&gw, "the 503 counted", |text| {
        value(text, &rejected("rejected-no-endpoints")) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            &format!("gateway_inference_pool_endpoints{{{POOL}}}")
        ),
        0.0
    );
    assert!(!text.contains(&a.local_addr().to_string()), "{text}");
    // The counters of the pool go on across the swap.
    assert_eq!(sample(&text, &rejected("malformed-request")), 1.0);

    // No configuration references the pool: its series go.
    gw.apply(config(port, None)).await.expect("apply");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = gw.metrics().encode();
        if !text.contains(POOL) {
            assert!(text.contains("# TYPE gateway_inference_requests_served counter"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool's series stayed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_external_picker_counts_its_fail_open_fallbacks() {
    use gateway_inference::crd::v1::FailureMode;
    use gateway_inference::settings::EndpointPickerSettings;
    let server = sim("one").await;
    let mut pool = settings(&[server.local_addr()]);
    pool.endpoint_picker = Some(EndpointPickerSettings {
        failure_mode: FailureMode::FailOpen,
        addresses: vec![],
        unresolved: Some("no Service epp".into()),
    });
    let inference = InferenceGateway::default();
    let (gw, port) = gateway(&inference, &pool).await;
    for _ in 0..2 {
        let reply = chat(port, "hi", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let e = server.local_addr();
    let text = until(&gw, "both served", |text| {
        value(
            text,
            &per_endpoint("gateway_inference_requests_served_total", e),
        ) == Some(2.0)
    })
    .await;
    let result = |r: &str| {
        sample(
            &text,
            &format!(r#"gateway_inference_endpoint_picker_requests_total{{{POOL},result="{r}"}}"#),
        )
    };
    let error = |e: &str| {
        sample(
            &text,
            &format!(r#"gateway_inference_endpoint_picker_errors_total{{{POOL},error="{e}"}}"#),
        )
    };
    assert_eq!(result("fail-open"), 2.0);
    assert_eq!(result("picked"), 0.0);
    assert_eq!(result("fail-close"), 0.0);
    assert_eq!(error("unresolved"), 2.0);
    assert_eq!(error("timeout"), 0.0);
    // The in-process picker served them.
    assert_eq!(
        sample(
            &text,
            &per_endpoint("gateway_inference_requests_picked_total", e)
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            &per_endpoint("gateway_inference_requests_served_total", e)
        ),
        2.0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_picker_s_choices_and_failures_are_counted() {
    use gateway_inference::crd::v1::FailureMode;
    use gateway_inference::extproc::server::{PickerServer, RoundRobinPolicy};
    use gateway_inference::settings::EndpointPickerSettings;
    use std::sync::Arc;
    let a = sim("a").await;
    let b = sim("b").await;
    let endpoints = [a.local_addr(), b.local_addr()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let picker_addr = listener.local_addr().expect("address");
    let picker = tokio::spawn(
        PickerServer::new(Arc::new(RoundRobinPolicy::new(endpoints.to_vec()))).serve(listener),
    );
    let mut pool = settings(&endpoints);
    pool.endpoint_picker = Some(EndpointPickerSettings {
        failure_mode: FailureMode::FailClose,
        addresses: vec![picker_addr],
        unresolved: None,
    });
    let inference = InferenceGateway::default();
    let (gw, port) = gateway(&inference, &pool).await;
    // Round robin over both servers: each picked and served twice.
    for i in 0..4 {
        let reply = chat(port, &format!("hello {i}"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let text = until(&gw, "all served", |text| {
        endpoints.iter().all(|e| {
            value(
                text,
                &per_endpoint("gateway_inference_requests_served_total", *e),
            ) == Some(2.0)
        })
    })
    .await;
    for e in endpoints {
        assert_eq!(
            sample(
                &text,
                &per_endpoint("gateway_inference_requests_picked_total", e)
            ),
            2.0
        );
    }
    let result = |text: &str, r: &str| {
        sample(
            text,
            &format!(r#"gateway_inference_endpoint_picker_requests_total{{{POOL},result="{r}"}}"#),
        )
    };
    let error = |text: &str, e: &str| {
        sample(
            text,
            &format!(r#"gateway_inference_endpoint_picker_errors_total{{{POOL},error="{e}"}}"#),
        )
    };
    assert_eq!(result(&text, "picked"), 4.0);
    assert_eq!(result(&text, "fail-close"), 0.0);
    // The external picker decides: the in-process scheduler did not run.
    assert_eq!(
        sample(
            &text,
            &format!("gateway_inference_scheduler_duration_seconds_count{{{POOL}}}")
        ),
        0.0
    );

    // The pool's picker moves to an address where nothing listens: FailClose answers 503.
    pool.endpoint_picker = Some(EndpointPickerSettings {
        failure_mode: FailureMode::FailClose,
        addresses: vec![SocketAddr::from(([127, 0, 0, 1], free_port()))],
        unresolved: None,
    });
    gw.apply(config(port, Some(&pool))).await.expect("apply");
    let down = chat(port, "hi", &[]).await;
    assert_eq!(down.status, 503, "{}", down.body);
    let text = gw.metrics().encode();
    assert_eq!(result(&text, "fail-close"), 1.0);
    assert_eq!(result(&text, "picked"), 4.0);
    assert_eq!(error(&text, "unavailable"), 1.0);
    // The picker's 503 is its own answer, not a pool without endpoints.
    assert_eq!(sample(&text, &rejected("rejected-no-endpoints")), 0.0);
    picker.abort();
    a.shutdown().await;
    b.shutdown().await;
}
