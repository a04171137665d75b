//! What the inference crate's end-to-end tests share: simulated vLLM servers, a gateway-core
//! Gateway whose one route sends everything to an InferencePool, and a small HTTP client.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use gateway_inference::gateway::{InferenceGateway, PICKER, POOL_KIND};
use gateway_inference::metrics::Engine;
use gateway_inference::settings::{InferencePoolSettings, PoolEndpoint, PoolName};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vllm_sim::{RunningSim, SimConfig, Simulator};

/// A free loopback port (bound, then released), never one this test process handed out
/// before.
pub fn free_port() -> u16 {
    // Tests run on parallel threads: a port released by one call can come back from the next
    // before its taker binds it, so a port is handed out once per test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The tests' simulator: model `base`, no decode time, seed 7, named `pod`, `max_num_seqs`
/// running slots; `tweak` changes the rest.
pub async fn sim(pod: &str, max_num_seqs: usize, tweak: impl FnOnce(&mut SimConfig)) -> RunningSim {
    let mut config = SimConfig {
        model: "base".into(),
        max_num_seqs,
        inter_token_latency_ms: 0.0,
        pod_name: Some(pod.into()),
        seed: Some(7),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::serve(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator")
}

/// Pool `llm/pool` over `endpoints` (vLLM, pods `llm/vllm-<i>`), without a picker, objectives
/// or rewrites.
pub fn pool(endpoints: &[SocketAddr]) -> InferencePoolSettings {
    InferencePoolSettings {
        pool: PoolName {
            namespace: "llm".into(),
            name: "pool".into(),
        },
        target_ports: endpoints.iter().map(|a| a.port()).collect(),
        app_protocol: Default::default(),
        endpoints: endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| PoolEndpoint {
                address: *a,
                pod: format!("llm/vllm-{i}"),
                engine: Engine::Vllm,
            })
            .collect(),
        endpoint_picker: None,
        objectives: vec![],
        rewrites: vec![],
    }
}

/// The addresses of `sims`.
pub fn addresses(sims: &[&RunningSim]) -> Vec<SocketAddr> {
    sims.iter().map(|s| s.local_addr()).collect()
}

/// The configuration of a gateway on `port` whose one route sends everything to the pool
/// (`settings`), retrying with `retry`; with `settings` `None` the listener has no route (404).
pub fn config(port: u16, settings: Option<&InferencePoolSettings>, retry: Option<Retry>) -> Config {
    let mut listener = Listener::new("llm/gw/http", 80);
    if let Some(settings) = settings {
        let mut backend = BackendRef::endpoints(
            "llm/pool",
            settings.endpoints.iter().map(|e| e.address).collect(),
        );
        if let BackendTarget::Endpoints(b) = &mut backend.target {
            b.policy.load_balancer = LoadBalancer::Custom(PICKER.into());
        }
        let mut ext = ExtensionRef::new(gateway_inference::crd::GROUP, POOL_KIND, "pool");
        ext.config = Some(serde_json::to_value(settings).expect("settings"));
        backend.filters = vec![Filter::ExtensionRef(ext)];
        let mut rule = Rule::prefix("/").backend(backend);
        rule.retry = retry;
        listener.routes = vec![Route::new("llm", "chat").rule(rule).into()];
    }
    Config {
        binds: vec![Bind {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    }
}

/// A gateway with `inference` installed on a free port, serving [`config`].
pub async fn gateway_with(
    inference: &InferenceGateway,
    settings: &InferencePoolSettings,
    retry: Option<Retry>,
) -> (Gateway, u16) {
    let mut registry = FilterRegistry::new();
    inference.register_filters(&mut registry);
    let gw = Gateway::new(registry);
    inference.install(&gw);
    let port = free_port();
    gw.apply(config(port, Some(settings), retry))
        .await
        .expect("apply");
    (gw, port)
}

/// A gateway whose one route sends everything to the pool, without retries.
pub async fn gateway(
    inference: &InferenceGateway,
    settings: &InferencePoolSettings,
) -> (Gateway, u16) {
    gateway_with(inference, settings, None).await
}

/// A response, its body as text.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The header's value, empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends `method path` to the gateway on `port` with a JSON `body` and `headers`.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// POSTs `body` to `path`.
pub async fn post(port: u16, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    send(port, "POST", path, body, headers).await
}

/// A chat completion body for `model` with one user message, 4 output tokens.
pub fn chat_body(model: &str, text: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "stream": stream,
    })
    .to_string()
}
