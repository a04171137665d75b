//! Observability of the data plane: Prometheus [`metrics`], JSON [`access_log`]s and, with the
//! cargo feature `otel`, OpenTelemetry tracing (`trace`).
//!
//! All are owned by the [`crate::Gateway`]: [`crate::Gateway::metrics`] gives the registry to
//! serve (always on), [`crate::Gateway::set_access_log`] turns the access log on (off by
//! default), `Gateway::set_tracing` turns tracing on (off by default). The proxy phases call in here at a few points; the per-request work is atomic
//! additions on handles the routing table holds, and, with an access log, one formatted line
//! queued without waiting. See `docs/observability.md`.

pub mod access_log;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use pingora_error::{Error as PError, ErrorType};
use pingora_proxy::Session;

pub use access_log::{AccessLog, AccessLogField, AccessLogSink};
pub use metrics::Metrics;
#[cfg(feature = "otel")]
pub use trace::{OtlpProtocol, Tracing};

use access_log::{AccessLogger, Record};
use metrics::RouteStats;

use crate::RouteInfo;
use crate::error::Result;

/// The gateway's metrics and access log, shared by both proxies.
pub(crate) struct Observe {
    pub(crate) metrics: Metrics,
    /// The series of requests that reached no listener.
    unrouted: Arc<RouteStats>,
    access_log: ArcSwapOption<AccessLogger>,
    #[cfg(feature = "otel")]
    tracer: ArcSwapOption<trace::Tracer>,
}

impl Observe {
    pub(crate) fn new() -> Self {
        let metrics = Metrics::new();
        Observe {
            unrouted: metrics.route("", "", "", ""),
            metrics,
            access_log: ArcSwapOption::empty(),
            #[cfg(feature = "otel")]
            tracer: ArcSwapOption::empty(),
        }
    }

    /// Starts tracing as `cfg` says (`None`: stops). The previous tracer exports what it has
    /// queued and ends.
    #[cfg(feature = "otel")]
    pub(crate) fn set_tracing(&self, cfg: Option<Tracing>) -> Result<()> {
        let tracer = match cfg {
            Some(cfg) => Some(Arc::new(trace::Tracer::start(
                cfg,
                self.metrics.trace_spans_dropped(),
            )?)),
            None => None,
        };
        self.tracer.store(tracer);
        Ok(())
    }

    /// Starts writing access logs as `cfg` says (`None`: stops). The previous log writes what
    /// it has queued and ends.
    pub(crate) fn set_access_log(&self, cfg: Option<AccessLog>) -> Result<()> {
        let logger = match cfg {
            Some(cfg) => Some(Arc::new(AccessLogger::start(
                cfg,
                self.metrics.access_log_dropped(),
            )?)),
            None => None,
        };
        self.access_log.store(logger);
        Ok(())
    }

    /// Stops the access log and waits (at most `wait`) until its thread has written and
    /// flushed every queued line. Called by [`crate::Gateway::shutdown`] once requests are done,
    /// so the last requests' lines reach the sink before the process exits.
    pub(crate) async fn close_access_log(&self, wait: std::time::Duration) {
        let Some(logger) = self.access_log.swap(None) else {
            return;
        };
        let writer = logger.take_writer();
        // The thread ends when the last clone is gone (a request still finishing holds one).
        drop(logger);
        let Some(writer) = writer else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(wait, joined).await.is_err() {
            tracing::warn!("the access log did not finish writing within the shutdown wait");
        }
    }

    /// The request head is in (before normalisation and rewrites).
    pub(crate) fn request_head(&self, session: &Session, obs: &mut RequestObs) {
        #[cfg(feature = "otel")]
        if let Some(tracer) = self.tracer.load().as_deref() {
            let span = tracer.begin(&session.req_header().headers);
            if span.sampled {
                obs.original = Some(session.req_header().uri.clone());
            }
            obs.span = Some(span);
        }
        if obs.original.is_none() && self.access_log.load().is_some() {
            obs.original = Some(session.req_header().uri.clone());
        }
    }

    /// The request is over (the `logging` phase): counts it, queues its span (when traced and
    /// sampled) and writes its access log line.
    pub(crate) fn finish(
        &self,
        session: &Session,
        e: Option<&PError>,
        obs: &RequestObs,
        served: Served<'_>,
    ) {
        let duration = obs.start.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        served
            .stats
            .or(obs.listener.as_ref().map(|l| &*l.stats))
            .unwrap_or(&self.unrouted)
            .request(status, duration);
        #[cfg(feature = "otel")]
        if let Some(span) = obs.span.as_ref().filter(|s| s.sampled) {
            self.end_span(session, e, obs, &served, span, status, duration);
        }
        let log = self.access_log.load();
        let Some(log) = log.as_deref() else {
            return;
        };
        let req = session.req_header();
        let error = match e {
            Some(e) => Some(error_name(e)),
            None if served.info.is_none() && status == 404 => Some("NoRoute"),
            None => None,
        };
        let original = obs.original.as_ref().unwrap_or(&req.uri);
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<crate::tls::TlsInfo>());
        log.log(&Record {
            start: SystemTime::now()
                .checked_sub(duration)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            method: req.method.as_str(),
            path: original.path_and_query().map_or("/", |p| p.as_str()),
            version: req.version,
            status,
            error,
            bytes_received: session.as_ref().body_bytes_read(),
            bytes_sent: session.as_ref().body_bytes_sent(),
            duration,
            upstream_time: obs.upstream_time,
            headers: &req.headers,
            authority: req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .unwrap_or(""),
            upstream: served.upstream,
            remote: session.client_addr().map(|a| a as _),
            local: session.server_addr().map(|a| a as _),
            sni: tls.and_then(|t| t.sni.as_deref()),
            route: served.info,
            listener: obs.listener.as_ref().map(|l| l.name.as_str()),
            backend: served.backend,
            attempts: served.attempts,
        });
    }
}

impl Observe {
    /// Queues the span of a sampled request that is over.
    #[cfg(feature = "otel")]
    #[allow(clippy::too_many_arguments)]
    fn end_span(
        &self,
        session: &Session,
        e: Option<&PError>,
        obs: &RequestObs,
        served: &Served<'_>,
        span: &trace::SpanCtx,
        status: u16,
        duration: Duration,
    ) {
        let tracer = self.tracer.load();
        let Some(tracer) = tracer.as_deref() else {
            return;
        };
        let req = session.req_header();
        let original = obs.original.as_ref().unwrap_or(&req.uri);
        let end = SystemTime::now();
        tracer.end(trace::SpanRecord {
            ctx: span.clone(),
            start: end.checked_sub(duration).unwrap_or(SystemTime::UNIX_EPOCH),
            end,
            method: req.method.clone(),
            path: original.path().to_owned(),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            version: req.version,
            host: req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .map(str::to_owned),
            peer: session.client_addr().and_then(|a| a.as_inet()).copied(),
            user_agent: req
                .headers
                .get(http::header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            status,
            error: match e {
                Some(e) => Some(error_name(e)),
                None if served.info.is_none() && status == 404 => Some("NoRoute"),
                None => None,
            },
            listener: served
                .info
                .map(|i| i.listener.as_str())
                .or(obs.listener.as_ref().map(|l| l.name.as_str()))
                .map(str::to_owned),
            route: served
                .info
                .map(|i| (format!("{}/{}", i.namespace, i.route), i.rule.clone())),
            backend: served.backend.map(str::to_owned),
            upstream: served.upstream,
            attempts: served.attempts,
        });
    }
}

/// The name of what ended a request in error.
fn error_name(e: &PError) -> &'static str {
    match e.etype() {
        ErrorType::HTTPStatus(_) => "HTTPStatus",
        other => other.as_str(),
    }
}

/// What a request recorded for the metrics and the access log, carried in the request context.
pub(crate) struct RequestObs {
    /// When the request head was received.
    start: Instant,
    /// The listener that took the request (its series counts the request if no route matches).
    listener: Option<Arc<ListenerObs>>,
    /// When the current attempt chose its endpoint.
    attempt_start: Option<Instant>,
    /// How long the last attempt waited for its response head.
    upstream_time: Option<Duration>,
    /// The request target as received, kept when an access log is on or the request is traced.
    original: Option<http::Uri>,
    /// The request's trace context, when tracing is on.
    #[cfg(feature = "otel")]
    span: Option<trace::SpanCtx>,
}

impl Default for RequestObs {
    fn default() -> Self {
        RequestObs {
            start: Instant::now(),
            listener: None,
            attempt_start: None,
            upstream_time: None,
            original: None,
            #[cfg(feature = "otel")]
            span: None,
        }
    }
}

impl RequestObs {
    /// The request reached `listener`.
    pub(crate) fn listener(&mut self, listener: &Arc<ListenerObs>) {
        self.listener = Some(listener.clone());
    }

    /// An attempt chose its endpoint and starts connecting.
    pub(crate) fn attempt_started(&mut self) {
        self.attempt_start = Some(Instant::now());
    }

    /// Time since the current attempt chose its endpoint.
    pub(crate) fn attempt_elapsed(&self) -> Option<Duration> {
        self.attempt_start.map(|t| t.elapsed())
    }

    /// An attempt's request to the backend is ready: with tracing on, it carries the request's
    /// trace context (`traceparent` naming the gateway's span; `tracestate` passes through,
    /// and is removed when the gateway started a new trace). Without the `otel` feature this
    /// does nothing.
    #[inline]
    pub(crate) fn upstream_request(
        &self,
        upstream: &mut pingora_http::RequestHeader,
    ) -> pingora_error::Result<()> {
        #[cfg(feature = "otel")]
        if let Some(span) = &self.span {
            upstream.insert_header("traceparent", span.traceparent())?;
            if span.restarted() {
                upstream.remove_header("tracestate");
            }
        }
        #[cfg(not(feature = "otel"))]
        let _ = upstream;
        Ok(())
    }

    /// The backend answered the current attempt's request after `d`.
    pub(crate) fn upstream_answered(&mut self, d: Duration) {
        self.upstream_time = Some(d);
    }
}

/// A listener's name and the series of its requests that matched no route; compiled with it.
pub(crate) struct ListenerObs {
    pub(crate) name: String,
    pub(crate) stats: Arc<RouteStats>,
}

impl ListenerObs {
    pub(crate) fn new(metrics: &Metrics, name: &str) -> Self {
        ListenerObs {
            name: name.to_owned(),
            stats: metrics.route(name, "", "", ""),
        }
    }
}

/// What served a request, as far as it got.
#[derive(Default)]
pub(crate) struct Served<'a> {
    /// The (listener, route, rule, backend) series; `None`: no route matched.
    pub(crate) stats: Option<&'a RouteStats>,
    pub(crate) info: Option<&'a RouteInfo>,
    pub(crate) backend: Option<&'a str>,
    /// The endpoint of the last attempt.
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) attempts: u32,
}
