//! The external endpoint picker protocol end to end, through loopback sockets: a gateway-core
//! Gateway with the InferencePool filter, simulated vLLM servers, and the ext_proc
//! [`PickerServer`] (the conformance round robin, the in-process scheduler, or test policies
//! built from [`PickPolicy`]). Covers the picker's choice and the served endpoint reported back,
//! the conformance selection header, an `ImmediateResponse` passed to the client, a body the
//! picker rewrote, the subset hint, and both failure modes with the picker down, unresolved or
//! answering an address outside the pool.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::Retry;
use gateway_inference::crd::v1::FailureMode;
use gateway_inference::extproc::server::{
    PickOutcome, PickPolicy, PickRequest, PickerServer, Rejection, RoundRobinPolicy, Route,
    SchedulerPolicy,
};
use gateway_inference::gateway::InferenceGateway;
use gateway_inference::metrics::Engine;
use gateway_inference::request::DroppedReason;
use gateway_inference::settings::{EndpointPickerSettings, InferencePoolSettings, PoolEndpoint};
use support::{Reply, free_port, gateway, gateway_with};
use tokio::task::JoinHandle;
use vllm_sim::RunningSim;

async fn sim(pod: &str) -> RunningSim {
    support::sim(pod, 4, |c| c.max_model_len = 16384).await
}

/// The picker server for `policy` on a free loopback port.
async fn picker<P: PickPolicy>(policy: P) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(PickerServer::new(Arc::new(policy)).serve(listener));
    (addr, task)
}

/// The pool over `sims`, chosen by the external `picker`.
fn settings(sims: &[&RunningSim], picker: EndpointPickerSettings) -> InferencePoolSettings {
    let mut pool = support::pool(&support::addresses(sims));
    pool.endpoint_picker = Some(picker);
    pool
}

fn epp(failure_mode: FailureMode, address: SocketAddr) -> EndpointPickerSettings {
    EndpointPickerSettings {
        failure_mode,
        addresses: vec![address],
        unresolved: None,
    }
}

async fn post(port: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
    support::post(port, "/v1/chat/completions", body, headers).await
}

fn chat(model: &str, text: &str) -> String {
    support::chat_body(model, text, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_picker_chooses_the_server_and_hears_back_who_served() {
    let sims = [sim("pod-0").await, sim("pod-1").await, sim("pod-2").await];
    let addrs: Vec<SocketAddr> = sims.iter().map(RunningSim::local_addr).collect();
    let (picker_addr, picker_task) = picker(RoundRobinPolicy::new(addrs.clone())).await;
    let inference = InferenceGateway::default();
    let pool = settings(
        &sims.iter().collect::<Vec<_>>(),
        epp(FailureMode::FailClose, picker_addr),
    );
    let (gw, port) = gateway(&inference, &pool).await;
    let pod_of = |a: &str| {
        addrs
            .iter()
            .position(|x| x.to_string() == a)
            .map(|i| format!("pod-{i}"))
    };

    // Round robin: every server in turn; the served endpoint the gateway reports reaches the
    // picker and comes back in the conformance header; it is the server that answered.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let reply = post(port, &chat("base", "hello"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let served = reply
            .header("x-gateway-destination-endpoint-served")
            .to_owned();
        assert_eq!(reply.header("x-conformance-test-served-endpoint"), served);
        assert_eq!(reply.header("x-went-into-resp-headers"), "true");
        assert_eq!(
            Some(reply.header("x-inference-pod").to_owned()),
            pod_of(&served)
        );
        seen.insert(served);
    }
    assert_eq!(seen.len(), 3, "round robin over all: {seen:?}");

    // The selection header restricts the picker: one endpoint, then two.
    let only = addrs[1].to_string();
    for _ in 0..4 {
        let reply = post(
            port,
            &chat("base", "hello"),
            &[("test-epp-endpoint-selection", &only)],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-conformance-test-served-endpoint"), only);
        assert_eq!(reply.header("x-inference-pod"), "pod-1");
    }
    let two = format!("{},{}", addrs[0], addrs[2]);
    for _ in 0..4 {
        let reply = post(
            port,
            &chat("base", "hello"),
            &[("test-epp-endpoint-selection", &two)],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_ne!(reply.header("x-inference-pod"), "pod-1");
    }
    // Nothing eligible: the picker's 503 reaches the client with its reason.
    let reply = post(
        port,
        &chat("base", "hello"),
        &[("test-epp-endpoint-selection", "127.0.0.1:1")],
    )
    .await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.header("x-llm-d-request-dropped-reason"),
        "rejected-no-endpoints"
    );

    gw.shutdown(Duration::from_secs(1)).await;
    picker_task.abort();
    for s in sims {
        s.shutdown().await;
    }
}

/// A test policy: refuses requests whose body mentions "refuse", rewrites the model `alias`
/// to `base`, routes to `targets` in that order (which may be outside the pool), and records
/// the subset hints it received.
struct TestPolicy {
    targets: Vec<SocketAddr>,
    hints: Mutex<Vec<Option<Vec<String>>>>,
}

#[gateway_core::async_trait]
impl PickPolicy for TestPolicy {
    async fn pick(&self, request: &PickRequest) -> PickOutcome {
        self.hints
            .lock()
            .expect("hints")
            .push(request.subset.clone());
        let text = String::from_utf8_lossy(&request.body);
        if text.contains("refuse") {
            return PickOutcome::Reject(Rejection::dropped(
                DroppedReason::Saturated,
                "refused by the test picker",
            ));
        }
        let body = text.contains("\"alias\"").then(|| {
            Bytes::from(
                gateway_inference::request::rewrite_model(&request.body, "base").expect("rewrite"),
            )
        });
        PickOutcome::Route(Route {
            endpoints: self.targets.clone(),
            headers: vec![],
            body,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_answers_reach_the_client_and_its_body_the_server() {
    let a = sim("pod-a").await;
    let b = sim("pod-b").await;
    let policy = Arc::new(TestPolicy {
        targets: vec![b.local_addr()],
        hints: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let picker_addr = listener.local_addr().expect("addr");
    let picker_task = tokio::spawn(PickerServer::new(policy.clone()).serve(listener));
    let inference = InferenceGateway::default();
    let (gw, port) = gateway(
        &inference,
        &settings(&[&a, &b], epp(FailureMode::FailClose, picker_addr)),
    )
    .await;

    // The picker's ImmediateResponse is the client's response: status, reason header, body.
    let reply = post(port, &chat("base", "please refuse"), &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(
        reply.header("x-llm-d-request-dropped-reason"),
        "rejected-saturated"
    );
    assert!(
        reply.body.contains("refused by the test picker"),
        "{}",
        reply.body
    );

    // The body the picker sent back is what the server got: the simulator knows only `base`
    // and answers 404 for `alias`. A large prompt shows the whole body made the trip.
    let long = "word ".repeat(4000);
    let reply = post(port, &chat("alias", &long), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-inference-pod"), "pod-b");
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(json["model"], "base");
    assert!(
        json["usage"]["prompt_tokens"].as_u64().unwrap_or(0) >= 4000,
        "{}",
        reply.body
    );

    // The subset hint named the pool's endpoints.
    let mut expected = vec![a.local_addr().to_string(), b.local_addr().to_string()];
    expected.sort();
    for hint in policy.hints.lock().expect("hints").iter() {
        let mut hint = hint.clone().expect("a subset hint");
        hint.sort();
        assert_eq!(hint, expected);
    }

    gw.shutdown(Duration::from_secs(1)).await;
    picker_task.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_picker_serves_through_the_gateway() {
    let a = sim("pod-a").await;
    let b = sim("pod-b").await;
    let mut policy = SchedulerPolicy::new(
        vec![
            (a.local_addr(), Engine::Vllm),
            (b.local_addr(), Engine::Vllm),
        ],
        &[],
    );
    policy.start_scraping(Default::default());
    let (picker_addr, picker_task) = picker(policy).await;
    let inference = InferenceGateway::default();
    let (gw, port) = gateway(
        &inference,
        &settings(&[&a, &b], epp(FailureMode::FailClose, picker_addr)),
    )
    .await;
    for _ in 0..4 {
        let reply = post(port, &chat("base", "hello there"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let served = reply.header("x-gateway-destination-endpoint-served");
        assert!(
            served == a.local_addr().to_string() || served == b.local_addr().to_string(),
            "{served}"
        );
    }
    // A streamed response goes through whole (the picker's response phase happens at its
    // headers).
    let streamed = serde_json::json!({
        "model": "base",
        "messages": [{"role": "user", "content": "stream please"}],
        "max_tokens": 4,
        "stream": true,
    })
    .to_string();
    let reply = post(port, &streamed, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("data: ") && reply.body.contains("[DONE]"),
        "{}",
        reply.body
    );
    // A malformed body is the picker's 400.
    let reply = post(port, "{not json", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);

    gw.shutdown(Duration::from_secs(1)).await;
    picker_task.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_modes_with_the_picker_down_unresolved_or_wrong() {
    let a = sim("pod-a").await;
    let b = sim("pod-b").await;
    // Nothing listens there.
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // A picker that names an address outside the pool.
    let (stranger_addr, stranger_task) = picker(TestPolicy {
        targets: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
        hints: Mutex::new(Vec::new()),
    })
    .await;
    let unresolved = |mode| EndpointPickerSettings {
        failure_mode: mode,
        addresses: vec![],
        unresolved: Some("Service llm/epp does not exist".into()),
    };
    let long = "token ".repeat(3000);
    for (picker, name) in [
        (epp(FailureMode::FailOpen, down), "down"),
        (unresolved(FailureMode::FailOpen), "unresolved"),
        (epp(FailureMode::FailOpen, stranger_addr), "stranger"),
    ] {
        let inference = InferenceGateway::default();
        let (gw, port) = gateway(&inference, &settings(&[&a, &b], picker)).await;
        // FailOpen: the in-process picker serves, with the whole buffered body.
        for _ in 0..2 {
            let reply = post(port, &chat("base", &long), &[]).await;
            assert_eq!(reply.status, 200, "{name}: {}", reply.body);
            let pod = reply.header("x-inference-pod");
            assert!(pod == "pod-a" || pod == "pod-b", "{name}: {pod}");
            let json: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
            assert!(
                json["usage"]["prompt_tokens"].as_u64().unwrap_or(0) >= 3000,
                "{name}: {}",
                reply.body
            );
        }
        gw.shutdown(Duration::from_secs(1)).await;
    }
    for (picker, name) in [
        (epp(FailureMode::FailClose, down), "down"),
        (unresolved(FailureMode::FailClose), "unresolved"),
        (epp(FailureMode::FailClose, stranger_addr), "stranger"),
    ] {
        let inference = InferenceGateway::default();
        let (gw, port) = gateway(&inference, &settings(&[&a, &b], picker)).await;
        let reply = post(port, &chat("base", "hello"), &[]).await;
        assert_eq!(reply.status, 503, "{name}: {}", reply.body);
        assert!(reply.headers.get("x-inference-pod").is_none(), "{name}");
        gw.shutdown(Duration::from_secs(1)).await;
    }

    stranger_task.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_walk_the_pickers_fallbacks_and_nothing_else() {
    let a = sim("pod-a").await;
    let b = sim("pod-b").await;
    // A pool endpoint where nothing listens: every attempt there fails.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let retry = Retry {
        codes: vec![502, 503],
        attempts: 2,
        backoff: Some(Duration::from_millis(1)),
    };
    let mut pool = settings(&[&a, &b], epp(FailureMode::FailClose, dead));
    pool.endpoints.push(PoolEndpoint {
        address: dead,
        pod: "llm/dead".into(),
        engine: Engine::Vllm,
    });
    pool.endpoints.sort_by_key(|e| e.address);

    // The primary fails; the retry goes to the first fallback, b, never to a.
    let (with_fallback, task_1) = picker(TestPolicy {
        targets: vec![dead, b.local_addr()],
        hints: Mutex::new(Vec::new()),
    })
    .await;
    pool.endpoint_picker = Some(epp(FailureMode::FailClose, with_fallback));
    let inference = InferenceGateway::default();
    let (gw, port) = gateway_with(&inference, &pool, Some(retry.clone())).await;
    for _ in 0..3 {
        let reply = post(port, &chat("base", "hello"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-inference-pod"), "pod-b");
        assert_eq!(
            reply.header("x-gateway-destination-endpoint-served"),
            b.local_addr().to_string()
        );
    }
    gw.shutdown(Duration::from_secs(1)).await;

    // Only the dead endpoint named: the retries do not go elsewhere.
    let (alone, task_2) = picker(TestPolicy {
        targets: vec![dead],
        hints: Mutex::new(Vec::new()),
    })
    .await;
    pool.endpoint_picker = Some(epp(FailureMode::FailClose, alone));
    let inference = InferenceGateway::default();
    let (gw, port) = gateway_with(&inference, &pool, Some(retry)).await;
    let reply = post(port, &chat("base", "hello"), &[]).await;
    assert!(reply.status >= 500, "{}: {}", reply.status, reply.body);
    assert!(reply.headers.get("x-inference-pod").is_none());
    gw.shutdown(Duration::from_secs(1)).await;

    task_1.abort();
    task_2.abort();
    a.shutdown().await;
    b.shutdown().await;
}
