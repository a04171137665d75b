//! The HTTP server: OpenAI endpoints, `/health`, `/metrics`, and the engine task.
//!
//! The [`Engine`] lives in one task that owns it (no lock): request tasks send it messages
//! (submit, finish, snapshot) over a channel and get their [`LatencyPlan`] back when their request
//! starts running. The request task then sleeps through the plan (scaled by `time_scale`) and
//! emits tokens at the simulated pace; the running count the load factor needs is published in an
//! atomic.

use crate::api::{self, ChatRequest, CompletionRequest, Output, Prompt};
use crate::config::{ConfigError, SimConfig};
use crate::engine::{Engine, EngineRequest, EngineState, LatencyPlan, jitter, load_factor};
use crate::metrics::Metrics;
use crate::tokenizer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Largest request body accepted (larger: 413).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Response body type of the simulator.
type Body = BoxBody<Bytes, Infallible>;

/// Errors starting a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listening socket could not be bound or read.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Where [`Simulator::serve`] listens: a bound listener or an address to bind.
#[derive(Debug)]
pub enum Listen {
    /// An already bound listener (for example on `127.0.0.1:0`).
    Listener(TcpListener),
    /// An address to bind.
    Addr(SocketAddr),
}

impl From<TcpListener> for Listen {
    fn from(l: TcpListener) -> Listen {
        Listen::Listener(l)
    }
}

impl From<SocketAddr> for Listen {
    fn from(a: SocketAddr) -> Listen {
        Listen::Addr(a)
    }
}

enum Msg {
    Submit {
        req: EngineRequest,
        accepted: oneshot::Sender<bool>,
        start: oneshot::Sender<LatencyPlan>,
    },
    Finish(u64),
    State(oneshot::Sender<EngineState>),
}

struct Shared {
    cfg: SimConfig,
    tx: mpsc::UnboundedSender<Msg>,
    running: Arc<AtomicUsize>,
    next_id: AtomicU64,
    metrics: Metrics,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Shared {
    async fn state(&self) -> Option<EngineState> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::State(tx)).ok()?;
        rx.await.ok()
    }
}

/// Ends the request in the engine when dropped (finished, failed or its client left).
struct InFlight {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Finish(self.id));
    }
}

async fn run_engine(
    cfg: SimConfig,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    running: Arc<AtomicUsize>,
) {
    let mut engine: Engine<oneshot::Sender<LatencyPlan>> = Engine::new(&cfg);
    while let Some(msg) = rx.recv().await {
        let now = Instant::now();
        let started = match msg {
            Msg::Submit {
                req,
                accepted,
                start,
            } => {
                let s = engine.submit(req, start, now);
                let _ = accepted.send(s.rejected.is_none());
                s.started
            }
            Msg::Finish(id) => engine.finish(id, now),
            Msg::State(reply) => {
                let _ = reply.send(engine.state());
                Vec::new()
            }
        };
        running.store(engine.running(), Ordering::Relaxed);
        for s in started {
            // A closed receiver means the client left; its Finish message follows.
            let _ = s.payload.send(s.plan);
        }
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Validates `config` and serves it on `listen` (a [`TcpListener`] or a [`SocketAddr`]) until
    /// [`RunningSim::shutdown`] or the handle is dropped. Must run inside a Tokio runtime.
    /// Serves HTTP/1.1 and HTTP/2 (prior knowledge, h2c).
    pub async fn serve(
        config: SimConfig,
        listen: impl Into<Listen>,
    ) -> Result<RunningSim, SimError> {
        config.validate()?;
        let listener = match listen.into() {
            Listen::Listener(l) => l,
            Listen::Addr(a) => TcpListener::bind(a).await?,
        };
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run_engine(config.clone(), rx, running.clone()));
        let mut headers = Vec::new();
        let mut add = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.push((HeaderName::from_static(name), v));
            }
        };
        if let Some(pod) = &config.pod_name {
            add("x-inference-pod", pod);
        }
        if let Some(ns) = &config.pod_namespace {
            add("x-inference-namespace", ns);
        }
        add("x-inference-port", &addr.port().to_string());
        let shared = Arc::new(Shared {
            metrics: Metrics::new(&config.model),
            cfg: config,
            tx,
            running,
            next_id: AtomicU64::new(1),
            headers,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        tracing::info!(%addr, model = %shared.cfg.model, "vLLM simulator listening");
        Ok(RunningSim {
            addr,
            shared,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(req, shared).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A running simulator. Dropping it stops accepting connections (in-flight requests finish);
/// [`RunningSim::shutdown`] also waits for them.
pub struct RunningSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its configuration.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// A snapshot of the engine (running, waiting, KV usage, LoRA adapters, recent plans).
    pub async fn state(&self) -> EngineState {
        match self.shared.state().await {
            Some(s) => s,
            None => Engine::<()>::new(&self.shared.cfg).state(),
        }
    }

    /// Stops accepting connections and waits until in-flight requests have been answered and
    /// their connections closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An OpenAI-style error response.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        404 => "NotFoundError",
        405 => "MethodNotAllowed",
        413 => "RequestTooLarge",
        429 => "TooManyRequestsError",
        s if s >= 500 => "InternalServerError",
        _ => "Error",
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": status.as_u16()}}),
    )
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let request_id = req.headers().get("x-request-id").cloned();
    let mut resp = route(req, &shared).await;
    let h = resp.headers_mut();
    for (name, value) in &shared.headers {
        h.insert(name.clone(), value.clone());
    }
    if let Some(id) = request_id {
        h.insert(HeaderName::from_static("x-request-id"), id);
    }
    resp
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let path = req.uri().path();
    let chat = match path {
        "/v1/chat/completions" => true,
        "/v1/completions" => false,
        "/health" | "/v1/models" | "/metrics" => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            return match path {
                "/health" => Response::new(full(Bytes::new())),
                "/v1/models" => models(&shared.cfg),
                _ => metrics(shared).await,
            };
        }
        _ => return error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    };
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    if let Some(v) = req.headers().get("x-return-error") {
        return match v.to_str().ok().and_then(|s| s.trim().parse::<u16>().ok()) {
            Some(code @ 400..=599) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                error(status, "error forced by the X-Return-Error header")
            }
            _ => error(
                StatusCode::BAD_REQUEST,
                "X-Return-Error must be a status code 400..599",
            ),
        };
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
    };
    let parsed = if chat {
        parse_chat(&body)
    } else {
        parse_completion(&body)
    };
    match parsed {
        Ok(p) => generate(p, shared).await,
        Err(Rejection(status, message)) => error(status, &message),
    }
}

fn models(cfg: &SimConfig) -> Response<Body> {
    let created = unix_now();
    let mut data = vec![json!({
        "id": cfg.model, "object": "model", "created": created, "owned_by": "vllm",
        "root": cfg.model, "parent": null, "max_model_len": cfg.max_model_len,
    })];
    for lora in &cfg.lora_modules {
        data.push(json!({
            "id": lora, "object": "model", "created": created, "owned_by": "vllm",
            "root": lora, "parent": cfg.model,
        }));
    }
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn metrics(shared: &Shared) -> Response<Body> {
    let Some(state) = shared.state().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "engine stopped");
    };
    let text = shared
        .metrics
        .render(&state, shared.cfg.max_loras, shared.cfg.block_size);
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// A parsed generation request.
struct Parsed {
    chat: bool,
    model: String,
    prompt: String,
    /// Echo mode's text when it is not the prompt (chat: the last message).
    echo_source: Option<String>,
    max_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

/// A request error found while parsing: status and message.
struct Rejection(StatusCode, String);

fn bad_json(e: serde_json::Error) -> Rejection {
    Rejection(
        StatusCode::BAD_REQUEST,
        format!("invalid request body: {e}"),
    )
}

fn parse_completion(body: &[u8]) -> Result<Parsed, Rejection> {
    let r: CompletionRequest = serde_json::from_slice(body).map_err(bad_json)?;
    let prompt = match r.prompt {
        Prompt::One(p) => p,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(_) => {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "the simulator serves exactly one prompt per request".into(),
            ));
        }
    };
    Ok(Parsed {
        chat: false,
        model: r.model,
        echo_source: None,
        prompt,
        max_tokens: r.max_tokens,
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        ignore_eos: r.ignore_eos,
    })
}

fn parse_chat(body: &[u8]) -> Result<Parsed, Rejection> {
    let r: ChatRequest = serde_json::from_slice(body).map_err(bad_json)?;
    if r.messages.is_empty() {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            "messages must not be empty".into(),
        ));
    }
    let (prompt, last) = api::chat_prompt(&r.messages);
    Ok(Parsed {
        chat: true,
        model: r.model,
        prompt,
        echo_source: Some(last),
        max_tokens: r.max_completion_tokens.or(r.max_tokens),
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        ignore_eos: r.ignore_eos,
    })
}

fn request_rng(seed: Option<u64>, id: u64) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        None => StdRng::from_rng(&mut rand::rng()),
    }
}

/// Everything a generation needs once it is admitted.
struct Generation {
    shared: Arc<Shared>,
    parsed: Parsed,
    output: Output,
    prompt_tokens: usize,
    id: u64,
    rng: StdRng,
    arrival: Instant,
    guard: InFlight,
}

async fn generate(p: Parsed, shared: &Arc<Shared>) -> Response<Body> {
    let arrival = Instant::now();
    let cfg = &shared.cfg;
    if !cfg.serves(&p.model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("The model `{}` does not exist.", p.model),
        );
    }
    let blocks = tokenizer::prompt_blocks(&cfg.model, &p.prompt, cfg.block_size);
    let prompt_tokens = blocks.tokens;
    if p.max_tokens == Some(0) {
        return error(StatusCode::BAD_REQUEST, "max_tokens must be at least 1");
    }
    let wanted = p.max_tokens.unwrap_or(1) as usize;
    if prompt_tokens.saturating_add(wanted) > cfg.max_model_len {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the messages, {} in the completion).",
                cfg.max_model_len,
                prompt_tokens.saturating_add(wanted),
                prompt_tokens,
                wanted
            ),
        );
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut rng = request_rng(cfg.seed, id);
    let room = cfg.max_model_len - prompt_tokens;
    let output = api::generate(
        &mut rng,
        cfg.output_mode,
        p.max_tokens.map(|m| m as usize),
        p.ignore_eos,
        room,
        p.echo_source.as_deref().unwrap_or(&p.prompt),
    );
    let adapter = (p.model != cfg.model).then(|| Arc::<str>::from(p.model.as_str()));
    let req = EngineRequest {
        id,
        adapter,
        prompt: blocks,
        output_tokens: output.tokens(),
    };
    let (acc_tx, acc_rx) = oneshot::channel();
    let (start_tx, start_rx) = oneshot::channel();
    if shared
        .tx
        .send(Msg::Submit {
            req,
            accepted: acc_tx,
            start: start_tx,
        })
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "engine stopped");
    }
    let guard = InFlight {
        id,
        tx: shared.tx.clone(),
    };
    match acc_rx.await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "the server is busy: its waiting queue is full",
            );
        }
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "engine stopped"),
    }
    let stream = p.stream;
    let g = Generation {
        shared: shared.clone(),
        parsed: p,
        output,
        prompt_tokens,
        id,
        rng,
        arrival,
        guard,
    };
    if stream {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            // A client that leaves while its request waits takes it out of the queue.
            let plan = tokio::select! {
                plan = start_rx => plan,
                _ = tx.closed() => return,
            };
            let Ok(plan) = plan else { return };
            g.stream(plan, &tx).await;
        });
        let mut r = Response::new(SseBody { rx }.boxed());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        r
    } else {
        let Ok(plan) = start_rx.await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "engine stopped");
        };
        g.complete(plan).await
    }
}

/// Sleeps through a plan token by token and records the latency metrics.
///
/// Tokens are due on absolute deadlines (each one the previous deadline plus its gap), so the
/// timer's millisecond resolution delays single tokens but never accumulates over a stream, even
/// with a small `time_scale`.
struct Pacer {
    plan: LatencyPlan,
    next: usize,
    start: Instant,
    /// When the last token was due.
    due: Instant,
    first: Option<Instant>,
    last: Instant,
}

impl Generation {
    fn scale(&self) -> f64 {
        self.shared.cfg.time_scale
    }

    fn pacer(&self, plan: LatencyPlan) -> Pacer {
        let now = Instant::now();
        Pacer {
            plan,
            next: 0,
            due: now,
            start: now,
            first: None,
            last: now,
        }
    }

    /// Waits for the next token; returns its index, or `None` after the last.
    async fn next_token(&mut self, p: &mut Pacer) -> Option<usize> {
        if p.next >= self.output.tokens() {
            return None;
        }
        let cfg = &self.shared.cfg;
        if p.next == 0 {
            p.due += cfg.wall(p.plan.ttft.as_secs_f64() * 1000.0);
            sleep_until(p.due).await;
            let now = Instant::now();
            p.first = Some(now);
            p.last = now;
            let m = &self.shared.metrics;
            m.ttft
                .observe(now.duration_since(self.arrival).as_secs_f64() / self.scale());
        } else {
            let running = self.shared.running.load(Ordering::Relaxed);
            let f = load_factor(cfg.time_factor_under_load, cfg.max_num_seqs, running);
            let ms = jitter(
                &mut self.rng,
                cfg.inter_token_latency_ms,
                cfg.inter_token_latency_std_dev_ms,
            ) * f;
            p.due += cfg.wall(ms);
            sleep_until(p.due).await;
            let now = Instant::now();
            let gap = now.duration_since(p.last).as_secs_f64() / self.scale();
            p.last = now;
            self.shared.metrics.itl.observe(gap);
            self.shared.metrics.tpot.observe(gap);
        }
        p.next += 1;
        Some(p.next - 1)
    }

    fn record_end(&self, p: &Pacer) {
        let m = &self.shared.metrics;
        let s = self.scale();
        let end = Instant::now();
        m.e2e
            .observe(end.duration_since(self.arrival).as_secs_f64() / s);
        m.queue.observe(p.plan.queue_time.as_secs_f64());
        let first = p.first.unwrap_or(end);
        m.prefill
            .observe(first.duration_since(p.start).as_secs_f64() / s);
        m.decode
            .observe(end.duration_since(first).as_secs_f64() / s);
        m.finished(self.output.finish, self.prompt_tokens, self.output.tokens());
    }

    fn usage(&self, cached: usize) -> Value {
        let n = self.output.tokens();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }

    fn object_id(&self) -> String {
        if self.parsed.chat {
            format!("chatcmpl-{}", self.id)
        } else {
            format!("cmpl-{}", self.id)
        }
    }

    async fn complete(mut self, plan: LatencyPlan) -> Response<Body> {
        let cached = plan.cached_tokens;
        let mut p = self.pacer(plan);
        while self.next_token(&mut p).await.is_some() {}
        self.record_end(&p);
        let finish = self.output.finish.as_str();
        let choice = if self.parsed.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": self.output.text}, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": self.output.text, "logprobs": null, "finish_reason": finish})
        };
        let body = json!({
            "id": self.object_id(),
            "object": if self.parsed.chat { "chat.completion" } else { "text_completion" },
            "created": unix_now(),
            "model": self.parsed.model,
            "choices": [choice],
            "usage": self.usage(cached),
        });
        drop(self.guard);
        json_response(StatusCode::OK, &body)
    }

    fn chunk(&self, created: u64, choices: Value, usage: Option<Value>) -> Bytes {
        let mut v = json!({
            "id": self.object_id(),
            "object": if self.parsed.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": created,
            "model": self.parsed.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// Sends the SSE events at the simulated pace; stops when the client leaves.
    async fn stream(mut self, plan: LatencyPlan, tx: &mpsc::Sender<Bytes>) {
        let _ = self.stream_events(plan, tx).await;
    }

    async fn stream_events(
        &mut self,
        plan: LatencyPlan,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<(), mpsc::error::SendError<Bytes>> {
        let cached = plan.cached_tokens;
        let created = unix_now();
        let mut p = self.pacer(plan);
        let last = self.output.tokens() - 1;
        loop {
            let next = tokio::select! {
                next = self.next_token(&mut p) => next,
                _ = tx.closed() => return Err(mpsc::error::SendError(Bytes::new())),
            };
            let Some(i) = next else { break };
            let finish = if i == last {
                json!(self.output.finish.as_str())
            } else {
                Value::Null
            };
            let piece = self.output.piece(i);
            if self.parsed.chat {
                if i == 0 {
                    let role = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                    tx.send(self.chunk(created, role, None)).await?;
                }
                let c = json!([{"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": finish}]);
                tx.send(self.chunk(created, c, None)).await?;
            } else {
                let c =
                    json!([{"index": 0, "text": piece, "logprobs": null, "finish_reason": finish}]);
                tx.send(self.chunk(created, c, None)).await?;
            }
        }
        self.record_end(&p);
        if self.parsed.include_usage {
            let u = self.usage(cached);
            tx.send(self.chunk(created, json!([]), Some(u))).await?;
        }
        tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await?;
        Ok(())
    }
}

/// The body of an SSE response: the events the pacing task sends.
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Sleeps until `due` unless it has passed.
async fn sleep_until(due: Instant) {
    if due > Instant::now() {
        tokio::time::sleep_until(due.into()).await;
    }
}
