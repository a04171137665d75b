//! The open-loop driver: sends each request at its arrival time, whatever is in flight, and
//! measures it on the client side from the SSE stream.

use crate::target::Target;
use crate::workload::{Api, RequestSpec};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The HTTP client the driver uses (HTTP/1.1, pooled connections, no TLS).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 client with `TCP_NODELAY`, keeping idle connections for reuse.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// How one rate is run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunParams {
    /// Requests per simulated second.
    pub rate: f64,
    /// Measured window, simulated seconds (after the warm-up).
    pub duration_s: f64,
    /// Warm-up, simulated seconds: requests arriving in it are sent but not counted.
    pub warmup_s: f64,
    /// Wall seconds per simulated second (the servers' `time_scale`).
    pub time_scale: f64,
    /// The OpenAI endpoint.
    pub api: Api,
    /// In-flight bound: an arrival finding this many requests in flight is not sent and is
    /// counted as `in_flight_cap`.
    pub max_in_flight: usize,
    /// A request not finished after this many simulated seconds is abandoned (`timeout`).
    pub request_timeout_s: f64,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// 200 and a complete stream (`data: [DONE]`).
    Ok,
    /// An HTTP status other than 200 (429 is counted apart in the summary).
    Status(u16),
    /// Connection or protocol error.
    Transport(String),
    /// 200 but the stream ended without `data: [DONE]`, or a malformed event.
    Incomplete,
    /// Not finished within the request timeout.
    Timeout,
    /// Not sent: the in-flight bound was reached.
    InFlightCap,
}

/// One request's measurements. Times are simulated seconds (wall / time scale) from the
/// request's scheduled arrival, so a late send counts against the target, not in its favour.
#[derive(Debug, Clone, Serialize)]
pub struct RequestResult {
    /// Arrival order.
    pub seq: u64,
    /// Scheduled arrival, simulated seconds from the start of the run.
    pub arrival_s: f64,
    /// Whether it arrived after the warm-up (counted in the summary).
    pub measured: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Time to the first token's event.
    pub ttft_s: Option<f64>,
    /// Time to the end of the stream (or of the failure).
    pub e2e_s: f64,
    /// Token events received (chunks carrying a completion's `text` or a chat `delta.content`,
    /// the chat role chunk excluded).
    pub tokens: usize,
    /// `usage.completion_tokens` of the final usage chunk.
    pub usage_completion_tokens: Option<usize>,
    /// `usage.prompt_tokens`.
    pub usage_prompt_tokens: Option<usize>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<usize>,
    /// Tokens asked for (`max_tokens`, generated exactly with `ignore_eos`).
    pub expected_tokens: usize,
    /// Prompt tokens the workload built.
    pub expected_prompt_tokens: usize,
    /// The `x-inference-pod` response header (which server answered).
    pub server: Option<String>,
    /// How late the request was sent after its scheduled time, wall milliseconds.
    pub send_lag_ms: f64,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    text: Option<IgnoredAny>,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<IgnoredAny>,
    #[serde(default)]
    role: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<usize>,
}

/// What an SSE stream carried, as [`SseParser`] saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseSummary {
    /// Token events.
    pub tokens: usize,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<usize>,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<usize>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<usize>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An event's data was not JSON.
    pub malformed: bool,
}

/// An incremental parser of an OpenAI SSE stream: feed it the body's bytes as they come;
/// events are separated by a blank line, and only their `data:` lines are read.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// What was seen so far.
    pub summary: SseSummary,
}

impl SseParser {
    /// Adds bytes; returns how many new token events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        self.buf.extend_from_slice(bytes);
        let before = self.summary.tokens;
        let mut start = 0;
        while let Some(pos) = find_event_end(&self.buf[start..]) {
            let (event, sep) = (start..start + pos.0, pos.1);
            self.event(event);
            start += pos.0 + sep;
        }
        self.buf.drain(..start);
        self.summary.tokens - before
    }

    fn event(&mut self, range: std::ops::Range<usize>) {
        let text = &self.buf[range];
        for line in text.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.summary.done = true;
                continue;
            }
            match serde_json::from_slice::<Chunk>(data) {
                Ok(chunk) => {
                    if let Some(u) = chunk.usage {
                        self.summary.completion_tokens = Some(u.completion_tokens);
                        self.summary.prompt_tokens = Some(u.prompt_tokens);
                        self.summary.cached_tokens =
                            u.prompt_tokens_details.and_then(|d| d.cached_tokens);
                    }
                    for c in chunk.choices {
                        let token = match &c.delta {
                            Some(d) => d.content.is_some() && d.role.is_none(),
                            None => c.text.is_some(),
                        };
                        if token {
                            self.summary.tokens += 1;
                        }
                    }
                }
                Err(_) => self.summary.malformed = true,
            }
        }
    }
}

/// The end of the first event in `buf`: (its length, the separator's length).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// Drives one target at one rate: request *k* (of `specs`) is sent at `arrivals[k]` simulated
/// seconds after the start, to the base URL the target's router picks, and measured until its
/// stream ends. Returns one result per arrival, in arrival order, after every request ended.
pub async fn run(
    target: Arc<Target>,
    client: HttpClient,
    specs: Vec<RequestSpec>,
    arrivals: &[f64],
    p: RunParams,
) -> Vec<RequestResult> {
    let scale = p.time_scale;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = JoinSet::new();
    let mut results: Vec<RequestResult> = Vec::with_capacity(arrivals.len());
    for (seq, (spec, &t)) in specs.into_iter().zip(arrivals).enumerate() {
        let seq = seq as u64;
        let due = start + Duration::from_secs_f64(t * scale);
        tokio::time::sleep_until(due.into()).await;
        let measured = t >= p.warmup_s;
        if in_flight.load(Ordering::Relaxed) >= p.max_in_flight {
            results.push(RequestResult {
                seq,
                arrival_s: t,
                measured,
                outcome: Outcome::InFlightCap,
                ttft_s: None,
                e2e_s: 0.0,
                tokens: 0,
                usage_completion_tokens: None,
                usage_prompt_tokens: None,
                cached_tokens: None,
                expected_tokens: spec.max_tokens,
                expected_prompt_tokens: spec.prompt_tokens,
                server: None,
                send_lag_ms: 0.0,
            });
            continue;
        }
        let index = target.router.pick(seq);
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, client, in_flight) = (target.clone(), client.clone(), in_flight.clone());
        set.spawn(async move {
            let r = one(&target, index, &client, spec, seq, t, measured, due, &p).await;
            target.router.release(index);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            r
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by_key(|r| r.seq);
    results
}

#[allow(clippy::too_many_arguments)]
async fn one(
    target: &Target,
    index: usize,
    client: &HttpClient,
    spec: RequestSpec,
    seq: u64,
    arrival_s: f64,
    measured: bool,
    due: Instant,
    p: &RunParams,
) -> RequestResult {
    let sim = |d: Duration| d.as_secs_f64() / p.time_scale;
    let mut r = RequestResult {
        seq,
        arrival_s,
        measured,
        outcome: Outcome::Incomplete,
        ttft_s: None,
        e2e_s: 0.0,
        tokens: 0,
        usage_completion_tokens: None,
        usage_prompt_tokens: None,
        cached_tokens: None,
        expected_tokens: spec.max_tokens,
        expected_prompt_tokens: spec.prompt_tokens,
        server: None,
        send_lag_ms: Instant::now().saturating_duration_since(due).as_secs_f64() * 1e3,
    };
    let url = format!("{}{}", target.urls[index], p.api.path());
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(spec.body(p.api))));
    let request = match request {
        Ok(req) => req,
        Err(e) => {
            r.outcome = Outcome::Transport(e.to_string());
            return r;
        }
    };
    let timeout = Duration::from_secs_f64(p.request_timeout_s * p.time_scale);
    let exchange = async {
        let resp = match client.request(request).await {
            Ok(resp) => resp,
            Err(e) => {
                r.outcome = Outcome::Transport(e.to_string());
                return;
            }
        };
        r.server = resp
            .headers()
            .get("x-inference-pod")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status();
        let mut body = resp.into_body();
        if status != http::StatusCode::OK {
            while let Some(Ok(_)) = body.frame().await {}
            r.outcome = Outcome::Status(status.as_u16());
            return;
        }
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(data) = f.data_ref()
                        && parser.feed(data) > 0
                        && r.ttft_s.is_none()
                    {
                        r.ttft_s = Some(sim(due.elapsed()));
                    }
                }
                Err(e) => {
                    r.outcome = Outcome::Transport(e.to_string());
                    break;
                }
            }
        }
        let s = parser.summary;
        r.tokens = s.tokens;
        r.usage_completion_tokens = s.completion_tokens;
        r.usage_prompt_tokens = s.prompt_tokens;
        r.cached_tokens = s.cached_tokens;
        if r.outcome == Outcome::Incomplete && s.done && !s.malformed {
            r.outcome = Outcome::Ok;
        }
    };
    if tokio::time::timeout(timeout, exchange).await.is_err() {
        r.outcome = Outcome::Timeout;
    }
    r.e2e_s = sim(due.elapsed());
    r
}
