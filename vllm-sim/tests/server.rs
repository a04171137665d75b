//! End-to-end tests of the simulator through loopback sockets. No assertion depends on elapsed
//! time: latencies are checked on the engine's plans, and waits poll the engine state.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use vllm_sim::{EngineState, OutputMode, RunningSim, SimConfig, Simulator};

async fn start(config: SimConfig) -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::serve(config, listener).await.unwrap()
}

/// An open request: the connection task and the response head (body not yet read).
struct Held {
    conn: JoinHandle<()>,
    resp: Response<Incoming>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Held {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "sim");
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    Held { conn, resp }
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut held = open(addr, method, path, headers, body).await;
    let status = held.resp.status();
    let headers = held.resp.headers().clone();
    let body = held.resp.body_mut().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Answer {
    send(addr, "POST", path, &[], &body.to_string()).await
}

/// Polls the engine until `cond` holds (at most ~20 s, then fails).
async fn wait_for(
    sim: &RunningSim,
    what: &str,
    cond: impl Fn(&EngineState) -> bool,
) -> EngineState {
    for _ in 0..2000 {
        let s = sim.state().await;
        if cond(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {what}: {:?}", sim.state().await);
}

/// A streaming request that lasts (simulated output of 1000 tokens at the configured pace).
async fn hold(addr: SocketAddr, model: &str, prompt: &str) -> Held {
    let body = json!({"model": model, "prompt": prompt, "max_tokens": 1000, "ignore_eos": true, "stream": true});
    let held = open(addr, "POST", "/v1/completions", &[], &body.to_string()).await;
    assert_eq!(held.resp.status(), StatusCode::OK);
    held
}

fn fast() -> SimConfig {
    SimConfig {
        model: "base".into(),
        lora_modules: vec!["lora-a".into(), "lora-b".into()],
        pod_name: Some("pod-1".into()),
        pod_namespace: Some("ns-1".into()),
        seed: Some(1),
        ..SimConfig::default()
    }
}

/// Held requests emit a token every 20 ms of wall-clock time (200 ms simulated x 0.1).
fn slow() -> SimConfig {
    SimConfig {
        inter_token_latency_ms: 200.0,
        time_scale: 0.1,
        ..fast()
    }
}

fn metric(text: &str, name_and_labels_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels_prefix} in\n{text}"))
}

#[tokio::test]
async fn completion_and_chat_json_with_usage_and_headers() {
    let sim = start(SimConfig {
        output_mode: OutputMode::Echo,
        ..fast()
    })
    .await;
    let addr = sim.local_addr();
    let body =
        json!({"model": "base", "prompt": "Hello there, world", "max_tokens": 50}).to_string();
    let a = send(
        addr,
        "POST",
        "/v1/completions",
        &[("x-request-id", "req-42")],
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.header("x-inference-pod"), "pod-1");
    assert_eq!(a.header("x-inference-namespace"), "ns-1");
    assert_eq!(a.header("x-inference-port"), addr.port().to_string());
    assert_eq!(a.header("x-request-id"), "req-42");
    let v = a.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "base");
    assert_eq!(v["choices"][0]["text"], "Hello there, world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 8);

    let chat = json!({"model": "lora-a", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "say hi"}]}
    ], "max_completion_tokens": 1});
    let a = post(addr, "/v1/chat/completions", chat).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "lora-a", "the model as requested");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "say");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // "<|system|>\nbe brief\n<|user|>\nsay hi\n<|assistant|>\n": 5 + 2 + 5 + 2 + 6 tokens
    // ("assistant" has 9 characters: two tokens).
    assert_eq!(v["usage"]["prompt_tokens"], 20);
    assert_eq!(v["usage"]["completion_tokens"], 1);
    assert_eq!(v["usage"]["total_tokens"], 21);

    // Random mode with max_tokens: between 1 and max_tokens.
    let sim2 = start(fast()).await;
    let a = post(
        sim2.local_addr(),
        "/v1/completions",
        json!({"model": "base", "prompt": "x", "max_tokens": 7}),
    )
    .await;
    let n = a.json()["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=7).contains(&n));
    sim2.shutdown().await;
    sim.shutdown().await;
}

fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad event {e:?}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn sse_streaming_chunks_done_and_include_usage() {
    let sim = start(SimConfig {
        output_mode: OutputMode::Echo,
        ..fast()
    })
    .await;
    let addr = sim.local_addr();
    let a = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "base", "messages": [{"role": "user", "content": "one two three"}],
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "text/event-stream");
    assert_eq!(a.header("x-inference-pod"), "pod-1");
    let events = sse_events(&a.body);
    // role chunk, 3 token chunks, usage chunk, [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    let chunks: Vec<Value> = events[..5]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three");
    for c in &chunks[..5] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "base");
    }
    assert!(chunks[2]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert_eq!(events[5], "[DONE]");

    // Completions stream without include_usage: token chunks then [DONE], no usage.
    let a = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": "a b", "stream": true}),
    )
    .await;
    let events = sse_events(&a.body);
    assert_eq!(events.len(), 3, "{events:?}");
    let c: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["choices"][0]["text"], " b");
    assert!(c.get("usage").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn models_health_errors_and_forced_errors() {
    let sim = start(fast()).await;
    let addr = sim.local_addr();
    let a = send(addr, "GET", "/v1/models", &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    let ids: Vec<String> = a.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["base", "lora-a", "lora-b"]);
    assert_eq!(a.json()["data"][1]["parent"], "base");
    assert_eq!(
        send(addr, "GET", "/health", &[], "").await.status,
        StatusCode::OK
    );

    let a = send(
        addr,
        "POST",
        "/v1/completions",
        &[],
        "{\"model\": \"base\", \"prompt\": ",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["code"], 400);
    let a = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "base", "messages": "nope"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = post(
        addr,
        "/v1/completions",
        json!({"model": "other", "prompt": "x"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["type"], "NotFoundError");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("other")
    );
    // Context length: prompt + max_tokens above max_model_len (1024).
    let a = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": "x", "max_tokens": 1024}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("maximum context length"));

    let body = json!({"model": "base", "prompt": "x"}).to_string();
    let a = send(
        addr,
        "POST",
        "/v1/completions",
        &[("x-return-error", "503"), ("x-request-id", "r1")],
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"]["code"], 503);
    assert_eq!(a.header("x-request-id"), "r1");
    assert_eq!(a.header("x-inference-pod"), "pod-1");
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("x-return-error", "429")],
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let a = send(
        addr,
        "POST",
        "/v1/completions",
        &[("x-return-error", "200")],
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        send(addr, "GET", "/v2/nothing", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(addr, "GET", "/v1/completions", &[], "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Nothing ran: every error was answered before the engine.
    assert_eq!(sim.state().await.prefix_cache_queries, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn full_slots_and_queue_answer_429() {
    let sim = start(SimConfig {
        max_num_seqs: 2,
        max_waiting_queue_length: 1,
        ..slow()
    })
    .await;
    let addr = sim.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(hold(addr, "base", "hold me").await);
    }
    wait_for(&sim, "2 running", |s| s.running == 2).await;
    // A non-streaming request waits in the queue (its response comes at the end).
    let queued = tokio::spawn(async move {
        let body =
            json!({"model": "base", "prompt": "queued", "max_tokens": 1000, "ignore_eos": true});
        post(addr, "/v1/completions", body).await
    });
    wait_for(&sim, "2 running, 1 waiting", |s| {
        s.running == 2 && s.waiting == 1
    })
    .await;
    let m = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(metric(&m, "vllm:num_requests_running{"), 2.0);
    assert_eq!(metric(&m, "vllm:num_requests_waiting{"), 1.0);
    let a = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": "x", "max_tokens": 1}),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"]["code"], 429);
    // The clients leave: their requests end (running and waiting) and the server is free again.
    queued.abort();
    let _ = queued.await;
    wait_for(&sim, "the queued client left", |s| s.waiting == 0).await;
    held.clear();
    wait_for(&sim, "idle", |s| s.running == 0 && s.waiting == 0).await;
    let a = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": "x", "max_tokens": 1}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_lora_adapter_waits_until_the_first_is_idle() {
    let sim = start(SimConfig {
        max_loras: 1,
        ..slow()
    })
    .await;
    let addr = sim.local_addr();
    let first = hold(addr, "lora-a", "adapter a").await;
    wait_for(&sim, "lora-a running", |s| s.running_loras == ["lora-a"]).await;
    let waiter = tokio::spawn(async move {
        post(
            addr,
            "/v1/completions",
            json!({"model": "lora-b", "prompt": "adapter b", "max_tokens": 2}),
        )
        .await
    });
    let s = wait_for(&sim, "lora-b waiting", |s| s.waiting_loras == ["lora-b"]).await;
    assert_eq!(
        (s.running, s.waiting),
        (1, 1),
        "a free slot does not help: the LoRA slot is busy"
    );
    assert_eq!(s.loaded_loras, ["lora-a"]);
    let m = send(addr, "GET", "/metrics", &[], "").await.body;
    let info = m
        .lines()
        .find(|l| l.starts_with("vllm:lora_requests_info{"))
        .unwrap();
    assert!(info.contains("max_lora=\"1\""), "{info}");
    assert!(info.contains("running_lora_adapters=\"lora-a\""), "{info}");
    assert!(info.contains("waiting_lora_adapters=\"lora-b\""), "{info}");
    let ts: f64 = info.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ts > 1.6e9, "value is a Unix timestamp: {ts}");

    drop(first);
    let a = waiter.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["model"], "lora-b");
    let s = wait_for(&sim, "idle", |s| s.running == 0).await;
    assert_eq!(s.loaded_loras, ["lora-b"], "lora-a was evicted once idle");
    sim.shutdown().await;
}

fn plan_of(state: &EngineState, answer: &Answer) -> vllm_sim::LatencyPlan {
    let id: u64 = answer.json()["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("cmpl-")
        .parse()
        .unwrap();
    state
        .recent_plans
        .iter()
        .find(|p| p.request_id == id)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn shared_prefix_hits_the_cache_and_shortens_the_planned_ttft() {
    let config = SimConfig {
        prefill_overhead_ms: 5.0,
        prefill_time_per_token_ms: 1.0,
        time_scale: 0.001,
        ..fast()
    };
    let sim = start(config).await;
    let addr = sim.local_addr();
    let prefix: String = (0..200).map(|i| format!("w{i} ")).collect();
    let first = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": format!("{prefix} first question"), "max_tokens": 1}),
    )
    .await;
    let second = post(
        addr,
        "/v1/completions",
        json!({"model": "base", "prompt": format!("{prefix} second question"), "max_tokens": 1}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        first.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
        0
    );
    // 200 shared tokens = 12 full blocks of 16.
    assert_eq!(
        second.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
        192
    );
    let s = sim.state().await;
    let (p1, p2) = (plan_of(&s, &first), plan_of(&s, &second));
    assert_eq!((p1.prompt_tokens, p1.cached_tokens), (202, 0));
    assert_eq!(p2.cached_tokens, 192);
    assert_eq!(p1.ttft, Duration::from_millis(5 + 202));
    assert_eq!(p2.ttft, Duration::from_millis(5 + 10));
    let m = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(metric(&m, "vllm:prefix_cache_hits_total{"), 192.0);
    assert_eq!(metric(&m, "vllm:prefix_cache_queries_total{"), 404.0);
    assert_eq!(metric(&m, "vllm:prompt_tokens_total{"), 404.0);
    assert_eq!(metric(&m, "vllm:generation_tokens_total{"), 2.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn kv_usage_rises_while_requests_run_and_falls_after() {
    let sim = start(SimConfig {
        kv_cache_size: 100,
        max_model_len: 1600,
        ..slow()
    })
    .await;
    let addr = sim.local_addr();
    let prompt: String = (0..64).map(|i| format!("t{i} ")).collect();
    let held = hold(addr, "base", &prompt).await;
    // 64 prompt + 1000 output tokens = 67 blocks of 16.
    let s = wait_for(&sim, "running", |s| s.running == 1).await;
    assert_eq!(s.kv_used_blocks, 67);
    let m = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(metric(&m, "vllm:kv_cache_usage_perc{"), 0.67);
    assert_eq!(metric(&m, "vllm:gpu_cache_usage_perc{"), 0.67);
    drop(held);
    let s = wait_for(&sim, "finished", |s| s.running == 0).await;
    assert_eq!((s.kv_used_blocks, s.kv_usage), (0, 0.0));
    assert_eq!(s.kv_cached_blocks, 4, "the prompt's 4 blocks stay cached");
    let m = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(metric(&m, "vllm:kv_cache_usage_perc{"), 0.0);
    sim.shutdown().await;
}

/// Checks one sample line `name{k="v",...} value` of the Prometheus text format.
fn check_sample(line: &str) -> String {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "bad name in {line:?}"
    );
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let mut s = labels;
        loop {
            let eq = s
                .find("=\"")
                .unwrap_or_else(|| panic!("bad labels in {line:?}"));
            let key = &s[..eq];
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line:?}"
            );
            let mut chars = s[eq + 2..].char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = Some(eq + 2 + i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated value in {line:?}"));
            s = &s[end + 1..];
            if let Some(r) = s.strip_prefix(',') {
                s = r;
            } else if let Some(r) = s.strip_prefix('}') {
                rest = r;
                break;
            } else {
                panic!("bad label separator in {line:?}");
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    assert!(
        value == "+Inf" || value.parse::<f64>().is_ok(),
        "bad value in {line:?}"
    );
    assert!(
        line.contains("model_name=\"base\""),
        "no model_name in {line:?}"
    );
    name.to_string()
}

#[tokio::test]
async fn metrics_text_is_well_formed_and_has_the_vllm_names() {
    let sim = start(fast()).await;
    let addr = sim.local_addr();
    for stream in [false, true] {
        let a = post(
            addr,
            "/v1/completions",
            json!({"model": "base", "prompt": "x y", "max_tokens": 3, "stream": stream}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let a = send(addr, "GET", "/metrics", &[], "").await;
    assert!(a.header("content-type").starts_with("text/plain"));
    let mut names = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in a.body.lines() {
        if let Some(h) = line.strip_prefix("# HELP ") {
            assert!(
                h.split_once(' ').is_some_and(|(_, text)| !text.is_empty()),
                "{line:?}"
            );
        } else if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            assert!(
                ["gauge", "counter", "histogram"].contains(&kind),
                "{line:?}"
            );
            typed.insert(name.to_string());
        } else {
            let name = check_sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(&name)
                .to_string();
            assert!(typed.contains(&family), "sample before its TYPE: {line:?}");
            names.insert(family);
        }
    }
    for n in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:cache_config_info",
        "vllm:lora_requests_info",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ] {
        assert!(names.contains(n), "{n} missing");
    }
    let m = &a.body;
    assert!(m.contains(
        "vllm:cache_config_info{model_name=\"base\",block_size=\"16\",num_gpu_blocks=\"1024\"} 1\n"
    ));
    assert_eq!(metric(m, "vllm:e2e_request_latency_seconds_count{"), 2.0);
    assert_eq!(metric(m, "vllm:time_to_first_token_seconds_count{"), 2.0);
    let ok = metric(
        m,
        "vllm:request_success_total{model_name=\"base\",finished_reason=\"stop\"}",
    ) + metric(
        m,
        "vllm:request_success_total{model_name=\"base\",finished_reason=\"length\"}",
    );
    assert_eq!(ok, 2.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn serves_http2_prior_knowledge_and_shuts_down() {
    let sim = start(fast()).await;
    let addr = sim.local_addr();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}/v1/completions"))
        .body(Full::new(Bytes::from(
            json!({"model": "base", "prompt": "h2", "max_tokens": 2}).to_string(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["model"], "base");
    drop(sender);
    let _ = conn.await;
    sim.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
