//! OpenTelemetry tracing (cargo feature `otel`): a SERVER span per request, W3C trace context
//! propagation to the backend, and OTLP export from a thread of its own.
//!
//! When the request head arrives, [`Tracer::begin`] reads the request's `traceparent`: a valid
//! one makes the gateway's span its child (same trace id, the sampled flag followed); without
//! one (or with an invalid one) a new trace starts, sampled with [`Tracing::sample_ratio`]. Each
//! attempt to a backend carries a `traceparent` naming the gateway's span as parent; `tracestate`
//! passes through unchanged. When the request is over, a sampled span is queued for the exporter
//! without waiting ([`crossbeam_channel::Sender::try_send`]); a full queue drops it and counts it
//! (`gateway_trace_spans_dropped_total`). The exporter thread turns spans into OTLP protobuf
//! messages and posts them in batches (OTLP/HTTP or OTLP/gRPC), so a slow or unreachable
//! collector never holds a request. See `docs/observability.md`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prometheus_client::metrics::counter::Counter;
use prost::Message;

use crate::error::{Error, ErrorKind, Result};
use crate::limits::Throttle;

/// Spans that may wait for the exporter by default ([`Tracing::queue`]; the OpenTelemetry SDKs'
/// default).
pub const DEFAULT_QUEUE: usize = 2048;

/// Spans sent in one export at most by default ([`Tracing::max_batch`]).
pub const DEFAULT_MAX_BATCH: usize = 512;

/// How long a span waits at most for a batch to fill by default ([`Tracing::batch_delay`]).
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(1);

/// How long one export may take by default ([`Tracing::export_timeout`]; the OTLP exporters'
/// default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `service.name` resource attribute by default ([`Tracing::service_name`]).
pub const DEFAULT_SERVICE_NAME: &str = "pingora-gateway";

/// The path OTLP/HTTP collectors receive traces on (added to an endpoint without a path).
const HTTP_TRACES_PATH: &str = "/v1/traces";

/// The gRPC method of the OTLP trace service.
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How the exporter talks to the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`, `application/x-protobuf`), the
    /// default; collectors listen on port 4318 for it.
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC (HTTP/2 without TLS, unary `TraceService/Export`); collectors listen on port
    /// 4317 for it.
    Grpc,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    /// `http/protobuf` or `grpc`, the values of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "http/protobuf" | "http" => Ok(Self::HttpProtobuf),
            "grpc" => Ok(Self::Grpc),
            other => Err(format!(
                "unknown OTLP protocol {other:?} (known: http/protobuf, grpc)"
            )),
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::Grpc => "grpc",
        })
    }
}

/// Tracing settings, given to [`crate::Gateway::set_tracing`]. The gateway records no span and
/// leaves `traceparent` alone until one is set.
#[derive(Clone, Debug)]
pub struct Tracing {
    /// The collector, as an `http://` URL (TLS to the collector is not supported: run a
    /// collector or agent beside the gateway). For [`OtlpProtocol::HttpProtobuf`] an endpoint
    /// without a path gets `/v1/traces`, one with a path is used as it is; for
    /// [`OtlpProtocol::Grpc`] the path is not used.
    pub endpoint: Uri,
    /// How to talk to the collector. Default [`OtlpProtocol::HttpProtobuf`].
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute. Default [`DEFAULT_SERVICE_NAME`].
    pub service_name: String,
    /// More resource attributes (string values), e.g. `deployment.environment.name`. Default
    /// none.
    pub resource: Vec<(String, String)>,
    /// Headers sent with every export (an API key, a tenant). Default none.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The share of new traces recorded, from 0.0 (none) to 1.0 (all, the default), decided by
    /// the trace id as OpenTelemetry's `TraceIdRatioBased` sampler does. A request whose valid
    /// `traceparent` carries a sampling decision follows it instead (parent-based sampling).
    /// Unsampled requests still propagate trace context to the backend.
    pub sample_ratio: f64,
    /// Spans that may wait for the exporter; once that many wait, new spans are dropped (and
    /// counted). Default [`DEFAULT_QUEUE`]; 0 counts as 1.
    pub queue: usize,
    /// Spans sent in one export at most. Default [`DEFAULT_MAX_BATCH`]; 0 counts as 1.
    pub max_batch: usize,
    /// A batch is sent when it is full or when its oldest span has waited this long. Default
    /// [`DEFAULT_BATCH_DELAY`].
    pub batch_delay: Duration,
    /// How long one export may take before it is abandoned (its spans counted as dropped).
    /// Default [`DEFAULT_EXPORT_TIMEOUT`].
    pub export_timeout: Duration,
}

impl Tracing {
    /// Exports every request's span to `endpoint` over OTLP/HTTP, with the defaults above.
    pub fn new(endpoint: Uri) -> Self {
        Tracing {
            endpoint,
            protocol: OtlpProtocol::default(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource: Vec::new(),
            headers: Vec::new(),
            sample_ratio: 1.0,
            queue: DEFAULT_QUEUE,
            max_batch: DEFAULT_MAX_BATCH,
            batch_delay: DEFAULT_BATCH_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }

    /// The URL the exporter posts to.
    fn export_uri(&self) -> Result<Uri> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("tracing endpoint {}: {why}", self.endpoint),
            )
        };
        if self.endpoint.scheme_str() != Some("http") {
            return Err(invalid(
                "must be an http:// URL (TLS to the collector is not supported)",
            ));
        }
        let Some(authority) = self.endpoint.authority() else {
            return Err(invalid("has no host"));
        };
        let path = match self.protocol {
            OtlpProtocol::Grpc => GRPC_EXPORT_PATH,
            OtlpProtocol::HttpProtobuf => match self.endpoint.path_and_query() {
                Some(p) if p.as_str() != "/" && !p.as_str().is_empty() => p.as_str(),
                _ => HTTP_TRACES_PATH,
            },
        };
        Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::because(ErrorKind::InvalidConfig, "tracing endpoint", e))
    }
}

/// A request's trace context: its span's ids, its parent and whether it is recorded.
#[derive(Clone, Debug)]
pub(crate) struct SpanCtx {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The span id of the incoming `traceparent`; `None`: the gateway started the trace.
    parent: Option<[u8; 8]>,
    /// The span is recorded and exported.
    pub(crate) sampled: bool,
    /// The incoming `tracestate` (kept for a sampled span's `trace_state`).
    trace_state: Option<HeaderValue>,
}

impl SpanCtx {
    /// The `traceparent` of requests to backends: this span as parent.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        hex_into(&mut buf[3..35], &self.trace_id);
        buf[35] = b'-';
        hex_into(&mut buf[36..52], &self.span_id);
        buf[52] = b'-';
        hex_into(&mut buf[53..55], &[u8::from(self.sampled)]);
        HeaderValue::from_bytes(&buf).expect("hex digits and dashes are a valid header value")
    }

    /// The trace was started here (no valid `traceparent` came): an incoming `tracestate` does
    /// not belong to it.
    pub(crate) fn restarted(&self) -> bool {
        self.parent.is_none()
    }
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// `text` as lowercase hex digits into `out` (W3C trace context allows no uppercase).
fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(text[2 * i])? << 4 | digit(text[2 * i + 1])?;
    }
    Some(())
}

/// A parsed `traceparent`: trace id, parent span id, sampled flag. `None` when invalid (W3C
/// Trace Context level 1: version `ff` and all-zero ids are invalid; a future version may add
/// fields after a dash).
fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut version = [0u8; 1];
    unhex(&value[..2], &mut version)?;
    match version[0] {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    unhex(&value[3..35], &mut trace_id)?;
    let mut span_id = [0u8; 8];
    unhex(&value[36..52], &mut span_id)?;
    let mut flags = [0u8; 1];
    unhex(&value[53..55], &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags[0] & 1 == 1))
}

/// A random non-zero id.
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// What a finished request's span says; built on the request path (for sampled requests only),
/// turned into OTLP on the exporter thread.
pub(crate) struct SpanRecord {
    pub(crate) ctx: SpanCtx,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) tls: bool,
    pub(crate) version: http::Version,
    pub(crate) host: Option<String>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) user_agent: Option<String>,
    /// The status sent to the client; 0 when none was.
    pub(crate) status: u16,
    /// Why the request failed, when it did (the access log's `error`).
    pub(crate) error: Option<&'static str>,
    pub(crate) listener: Option<String>,
    /// `namespace/name`, rule, as the access log writes them.
    pub(crate) route: Option<(String, String)>,
    pub(crate) backend: Option<String>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) attempts: u32,
}

/// A running tracer: the sampling setting and the queue to the exporter thread. Dropping it
/// lets the thread export what is queued and end.
pub(crate) struct Tracer {
    spans: Sender<SpanRecord>,
    /// New traces whose id (its last 8 bytes, shifted right by one) is below this are sampled.
    ratio_bound: u64,
    dropped: Counter,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer").finish_non_exhaustive()
    }
}

impl Tracer {
    /// Checks `cfg` and starts the exporter thread.
    pub(crate) fn start(cfg: Tracing, dropped: Counter) -> Result<Self> {
        let uri = cfg.export_uri()?;
        if !(0.0..=1.0).contains(&cfg.sample_ratio) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "tracing sample ratio {} is not between 0 and 1",
                    cfg.sample_ratio
                ),
            ));
        }
        let ratio_bound = if cfg.sample_ratio >= 1.0 {
            u64::MAX
        } else {
            // OpenTelemetry's TraceIdRatioBased: 63 bits of the trace id against ratio * 2^63.
            (cfg.sample_ratio * (1u64 << 63) as f64) as u64
        };
        let (spans, to_export) = crossbeam_channel::bounded(cfg.queue.max(1));
        let exporter = Exporter {
            uri,
            protocol: cfg.protocol,
            headers: cfg.headers,
            resource: Resource {
                attributes: std::iter::once(kv_str("service.name", cfg.service_name))
                    .chain([
                        kv_str("telemetry.sdk.name", "gateway-core".into()),
                        kv_str("telemetry.sdk.language", "rust".into()),
                        kv_str("telemetry.sdk.version", env!("CARGO_PKG_VERSION").into()),
                    ])
                    .chain(cfg.resource.into_iter().map(|(k, v)| kv_str_owned(k, v)))
                    .collect(),
                ..Default::default()
            },
            max_batch: cfg.max_batch.max(1),
            batch_delay: cfg.batch_delay,
            export_timeout: cfg.export_timeout,
            dropped: dropped.clone(),
            errors: Throttle::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::because(ErrorKind::Io, "starting the trace exporter", e))?;
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || runtime.block_on(exporter.run(to_export)))
            .map_err(|e| Error::because(ErrorKind::Io, "starting the trace exporter thread", e))?;
        Ok(Tracer {
            spans,
            ratio_bound,
            dropped,
        })
    }

    /// The trace context of a request with these headers: a child of a valid `traceparent`, or
    /// a new trace.
    pub(crate) fn begin(&self, headers: &HeaderMap) -> SpanCtx {
        let mut values = headers.get_all("traceparent").iter();
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        let span_id = random_id();
        match parent {
            Some((trace_id, parent, sampled)) => SpanCtx {
                trace_id,
                span_id,
                parent: Some(parent),
                sampled,
                trace_state: if sampled {
                    headers.get("tracestate").cloned()
                } else {
                    None
                },
            },
            None => {
                let trace_id = random_id::<16>();
                let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
                SpanCtx {
                    trace_id,
                    span_id,
                    parent: None,
                    sampled: self.ratio_bound == u64::MAX || low < self.ratio_bound,
                    trace_state: None,
                }
            }
        }
    }

    /// Queues a finished span; drops (and counts) it when the queue is full.
    pub(crate) fn end(&self, span: SpanRecord) {
        match self.spans.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The exporter thread's settings and state.
struct Exporter {
    uri: Uri,
    protocol: OtlpProtocol,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Resource,
    max_batch: usize,
    batch_delay: Duration,
    export_timeout: Duration,
    dropped: Counter,
    errors: Throttle,
}

/// How often the exporter looks at the queue. It polls instead of sleeping on the queue so that
/// queueing a span never has to wake a thread (as the access log does); the queue holds
/// [`Tracing::queue`] spans between two looks.
const POLL: Duration = Duration::from_millis(10);

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

impl Exporter {
    /// Collects spans into batches and exports them until the tracer is dropped; then exports
    /// what is left and ends.
    async fn run(self, spans: Receiver<SpanRecord>) {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.export_timeout));
        let client: Client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(self.protocol == OtlpProtocol::Grpc)
                .build(connector);
        let mut batch: Vec<SpanRecord> = Vec::with_capacity(self.max_batch);
        let mut oldest = Instant::now();
        loop {
            let ended = loop {
                match spans.try_recv() {
                    Ok(span) => {
                        if batch.is_empty() {
                            oldest = Instant::now();
                        }
                        batch.push(span);
                        if batch.len() >= self.max_batch {
                            self.export(&client, &mut batch).await;
                        }
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if !batch.is_empty() && (ended || oldest.elapsed() >= self.batch_delay) {
                self.export(&client, &mut batch).await;
            }
            if ended {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `batch` (emptying it); its spans are counted as dropped when that fails.
    async fn export(&self, client: &Client, batch: &mut Vec<SpanRecord>) {
        let count = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "gateway-core".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch.drain(..).map(to_otlp).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let result = tokio::time::timeout(
            self.export_timeout,
            self.send(client, &request.encode_to_vec()),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        if let Err(e) = result {
            self.dropped.inc_by(count);
            if let Some(suppressed) = self.errors.allow() {
                tracing::warn!(
                    endpoint = %self.uri, error = %e, spans = count, suppressed,
                    "trace export failed"
                );
            }
        }
    }

    /// Posts one encoded `ExportTraceServiceRequest`.
    async fn send(&self, client: &Client, message: &[u8]) -> std::result::Result<(), String> {
        let (content_type, body) = match self.protocol {
            OtlpProtocol::HttpProtobuf => {
                ("application/x-protobuf", Bytes::copy_from_slice(message))
            }
            OtlpProtocol::Grpc => {
                // A gRPC message: uncompressed flag, big-endian length, the protobuf bytes.
                let len = u32::try_from(message.len()).map_err(|_| "batch too large")?;
                let mut framed = Vec::with_capacity(5 + message.len());
                framed.push(0);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(message);
                ("application/grpc", Bytes::from(framed))
            }
        };
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        if self.protocol == OtlpProtocol::Grpc {
            request
                .headers_mut()
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let response = client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        })?;
        let (head, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?;
        if !head.status.is_success() {
            return Err(format!("collector answered {}", head.status));
        }
        if self.protocol == OtlpProtocol::Grpc {
            // A trailers-only answer puts grpc-status among the headers.
            let status = head
                .headers
                .get("grpc-status")
                .or_else(|| body.trailers().and_then(|t| t.get("grpc-status")))
                .ok_or("no grpc-status in the collector's answer")?;
            if status.as_bytes() != b"0" {
                let message = head
                    .headers
                    .get("grpc-message")
                    .or_else(|| body.trailers().and_then(|t| t.get("grpc-message")))
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "collector answered grpc-status {} {message}",
                    String::from_utf8_lossy(status.as_bytes())
                ));
            }
        }
        Ok(())
    }
}

fn kv_str(key: &'static str, value: String) -> KeyValue {
    kv_str_owned(key.to_owned(), value)
}

fn kv_str_owned(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn kv_int(key: &'static str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The method as OpenTelemetry's HTTP conventions name it: a known method, or `_OTHER`.
fn method_name(method: &http::Method) -> Option<&'static str> {
    Some(match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::CONNECT => "CONNECT",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::PATCH => "PATCH",
        _ => return None,
    })
}

/// The OTLP span of a request (OpenTelemetry HTTP server semantic conventions, plus the
/// gateway's own `gateway.*` attributes).
fn to_otlp(r: SpanRecord) -> Span {
    let known = method_name(&r.method);
    let mut attributes = Vec::with_capacity(20);
    attributes.push(kv_str(
        "http.request.method",
        known.unwrap_or("_OTHER").to_owned(),
    ));
    if known.is_none() {
        attributes.push(kv_str(
            "http.request.method_original",
            r.method.as_str().to_owned(),
        ));
    }
    attributes.push(kv_str("url.path", r.path));
    attributes.push(kv_str(
        "url.scheme",
        if r.tls { "https" } else { "http" }.to_owned(),
    ));
    attributes.push(kv_str(
        "network.protocol.version",
        match r.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        }
        .to_owned(),
    ));
    if let Some(host) = r.host {
        // Host may carry a port: server.address is the name, server.port the number.
        match host.parse::<http::uri::Authority>() {
            Ok(a) => {
                let name = a.host().trim_start_matches('[').trim_end_matches(']');
                attributes.push(kv_str("server.address", name.to_owned()));
                if let Some(port) = a.port_u16() {
                    attributes.push(kv_int("server.port", i64::from(port)));
                }
            }
            Err(_) => attributes.push(kv_str("server.address", host)),
        }
    }
    if let Some(peer) = r.peer {
        attributes.push(kv_str("network.peer.address", peer.ip().to_string()));
        attributes.push(kv_int("network.peer.port", i64::from(peer.port())));
        attributes.push(kv_str("client.address", peer.ip().to_string()));
    }
    if let Some(ua) = r.user_agent {
        attributes.push(kv_str("user_agent.original", ua));
    }
    if r.status > 0 {
        attributes.push(kv_int("http.response.status_code", i64::from(r.status)));
    }
    let failed = r.status >= 500 || (r.status == 0 && r.error.is_some());
    if failed {
        attributes.push(kv_str(
            "error.type",
            match r.error {
                Some(e) if e != "HTTPStatus" => e.to_owned(),
                _ => r.status.to_string(),
            },
        ));
    }
    if let Some(listener) = r.listener {
        attributes.push(kv_str("gateway.listener", listener));
    }
    if let Some((route, rule)) = r.route {
        attributes.push(kv_str("gateway.route", route));
        attributes.push(kv_str("gateway.rule", rule));
    }
    if let Some(backend) = r.backend {
        attributes.push(kv_str("gateway.backend", backend));
    }
    if let Some(upstream) = r.upstream {
        attributes.push(kv_str("gateway.upstream.address", upstream.to_string()));
    }
    if r.attempts > 0 {
        attributes.push(kv_int("gateway.attempts", i64::from(r.attempts)));
        attributes.push(kv_int(
            "gateway.retries",
            i64::from(r.attempts.saturating_sub(1)),
        ));
    }
    Span {
        trace_id: r.ctx.trace_id.to_vec(),
        span_id: r.ctx.span_id.to_vec(),
        trace_state: r
            .ctx
            .trace_state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        parent_span_id: r.ctx.parent.map_or_else(Vec::new, |p| p.to_vec()),
        // W3C trace flags (sampled), and whether the parent is remote (it always is: bits 8, 9).
        flags: u32::from(r.ctx.sampled) | 0x100 | if r.ctx.parent.is_some() { 0x200 } else { 0 },
        name: known.unwrap_or("HTTP").to_owned(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(r.start),
        end_time_unix_nano: unix_nanos(r.end),
        attributes,
        status: Some(if failed {
            Status {
                message: match r.error {
                    Some(e) if r.status >= 500 => format!("{} {e}", r.status),
                    Some(e) => e.to_owned(),
                    None => r.status.to_string(),
                },
                code: status::StatusCode::Error as i32,
            }
        } else {
            Status::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let valid = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span, sampled) = parse_traceparent(valid).unwrap();
        assert_eq!(trace[0], 0x4b);
        assert_eq!(span[7], 0xb7);
        assert!(sampled);
        assert!(
            !parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .2
        );
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may add fields after a dash.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn traceparent_round_trip() {
        let ctx = SpanCtx {
            trace_id: random_id(),
            span_id: random_id(),
            parent: None,
            sampled: true,
            trace_state: None,
        };
        let (trace, span, sampled) = parse_traceparent(ctx.traceparent().as_bytes()).unwrap();
        assert_eq!((trace, span, sampled), (ctx.trace_id, ctx.span_id, true));
    }

    #[test]
    fn export_urls() {
        let uri = |endpoint: &str, protocol| {
            let mut t = Tracing::new(endpoint.parse().unwrap());
            t.protocol = protocol;
            t.export_uri().map(|u| u.to_string())
        };
        let http = OtlpProtocol::HttpProtobuf;
        assert_eq!(
            uri("http://c:4318", http).unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            uri("http://c:4318/", http).unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            uri("http://c/otlp/traces", http).unwrap(),
            "http://c/otlp/traces"
        );
        assert_eq!(
            uri("http://c:4317/x", OtlpProtocol::Grpc).unwrap(),
            "http://c:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert!(uri("https://c:4318", http).is_err());
        assert!(uri("/v1/traces", http).is_err());
    }

    #[test]
    fn ratio_sampling_of_new_traces() {
        let tracer = |ratio: f64| {
            let mut cfg = Tracing::new("http://127.0.0.1:9".parse().unwrap());
            cfg.sample_ratio = ratio;
            Tracer::start(cfg, Counter::default()).unwrap()
        };
        let headers = HeaderMap::new();
        let none = tracer(0.0);
        let all = tracer(1.0);
        let half = tracer(0.5);
        let sampled = (0..2000).filter(|_| half.begin(&headers).sampled).count();
        assert!((600..1400).contains(&sampled), "{sampled} of 2000 at 0.5");
        for _ in 0..100 {
            assert!(!none.begin(&headers).sampled);
            assert!(all.begin(&headers).sampled);
        }
        // A parent's decision wins over the ratio.
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(none.begin(&headers).sampled);
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        assert!(!all.begin(&headers).sampled);
        assert!(
            Tracer::start(
                Tracing {
                    sample_ratio: 1.5,
                    ..Tracing::new("http://127.0.0.1:9".parse().unwrap())
                },
                Counter::default()
            )
            .is_err()
        );
    }
}
