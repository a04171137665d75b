//! The Gateway API request path as Pingora [`ProxyHttp`] phases.
//!
//! | phase | what happens |
//! |---|---|
//! | `request_filter` | bind and listener (by host); the path normalised under the listener's settings ([`crate::path`]: 400 for an invalid path, 307 for an escaped slash when so configured), the URI replaced when it changed; the listener's body headers when it has some ([`crate::config::Listener::body_headers`]: the client's headers of those names removed, a JSON body read whole, 413 over the bound, and its top-level string fields copied into the headers); route and rule ([`crate::routing`]); the rule's filter chain in order (header edits, rewrites, redirects, CORS preflights, mirrors, custom request hooks); the backend (weighted, or the one a filter chose); the backend's chain; the whole body when a filter asked for it (over the bound: 413) or the listener read it for its body headers (not read twice) and the body hooks |
//! | `upstream_peer` | every attempt: deadline check (504), backoff before a retry, the endpoint (sticky session, filter hint, then the backend's picker, skipping ejected and already-tried endpoints), h1/h2c, per-attempt timeouts |
//! | `fail_to_connect` | outlier accounting; a connection failure is retried on another endpoint (always safe), or under the route's retry policy |
//! | `upstream_request_filter` | the trace context (`traceparent`, feature `otel`); custom `upstream_request` hooks; `Content-Length` of a buffered, filtered body |
//! | `request_body_filter` | replays the buffered body on every attempt; tees the body to mirrors; streaming body hooks |
//! | `upstream_response_filter` | outlier accounting; a status in the retry policy's codes becomes a retry while attempts and the budget last |
//! | `error_while_proxy` | outlier accounting; resets and timeouts retried under the retry policy (or, without one, a reused keep-alive connection that failed, as Pingora does) |
//! | `response_filter` | response hooks of the steps reached, in order; the sticky-session token |
//! | `response_body_filter` | custom response body hooks |
//! | `fail_to_proxy` | timeouts and expired deadlines 504, refused or reset connections 503, invalid answers 502; the response hooks still run |
//! | `connected_to_upstream` | the connect time of a new backend connection ([`crate::observe`]) |
//! | `logging` | custom logging hooks of the steps reached; metrics, the access log line and the trace span ([`crate::observe`]); a `tracing` debug event |
//!
//! Gateway-written responses (404, redirects, direct responses, preflights, errors) go through
//! the same response hooks as proxied ones.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::Uri;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error as PError, ErrorType, Result as PResult};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::backend::clock::now_ms;
use crate::backend::outlier::InFlightGuard;
use crate::backend::session::SessionCodec;
use crate::backend::{PickRequest, least_request};
use crate::body_headers::{self, BodyHeaders};
use crate::config::{BackendProtocol, PathNormalization, Protocol};
use crate::filter::chain::{Chain, Step};
use crate::filter::{
    ClientCertStatus, DirectResponse, FilterAction, FilterCtx, apply_url_rewrite, redirect_location,
};
use crate::limits::{BodyBudget, BodyPermit};
use crate::mirror::{MirrorBody, Mirrors};
use crate::observe::{Observe, RequestObs, Served};
use crate::path::{self, Normalized};
use crate::routing::RequestParts;
use crate::table::{
    CompiledBind, CompiledEndpoints, CompiledRule, CompiledTarget, PickerKind, Table,
};
use crate::tls::TlsInfo;

/// The largest request body the gateway holds whole for filters and endpoint pickers (16 MiB):
/// a filter asking for a larger buffer ([`crate::filter::FilterCtx::buffer_request_body`]) gets
/// this, and a longer body is answered with 413. A held body is sent upstream, and resent on a
/// retry, from Pingora's replay buffer, which the gateway widens to the filter's bound for that
/// request (vendor/README.md). The bytes held by all requests together are bounded by
/// [`crate::config::Limits::max_buffered_body_bytes`] (503 above it).
pub const MAX_BUFFERED_BODY: usize = 16 * 1024 * 1024;

/// The usual bound of a body held for inspection where a configuration names none (64 KiB):
/// [`crate::config::Listener::DEFAULT_MAX_BODY_HEADER_BYTES`] and the ready-made filters'
/// defaults.
pub const DEFAULT_BUFFERED_BODY: usize = 64 * 1024;

/// The request-body bytes Pingora keeps to replay a *streamed* body on a retry (its default
/// replay buffer, 64 KiB). Once a streamed body is longer, Pingora drops the buffer and the
/// request is no longer retried.
pub const REPLAY_BUFFER: usize = 64 * 1024;

/// The default wait before a retry when the route's retry policy names none.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// Connection failures retried on other endpoints without a retry policy.
const CONNECT_FAILOVERS: u32 = 3;

/// The [`ProxyHttp`] implementation behind every bind of a [`crate::Gateway`].
pub struct GatewayProxy {
    pub(crate) table: Arc<ArcSwap<Table>>,
    pub(crate) mirrors: Arc<Mirrors>,
    pub(crate) sessions: Arc<SessionCodec>,
    /// Request-body bytes held in memory across all requests
    /// ([`crate::config::Limits::max_buffered_body_bytes`]).
    pub(crate) body_budget: Arc<BodyBudget>,
    /// Metrics and the access log.
    pub(crate) observe: Arc<Observe>,
}

/// Per-request state carried between phases.
#[derive(Default)]
pub struct RequestCtx {
    routed: Option<Routed>,
    filter: Option<FilterCtx>,
    /// Attempts made so far (1 during the first).
    attempt: u32,
    /// Endpoint indices tried, as a bit set (index mod 64).
    tried: u64,
    /// The endpoint of the current attempt.
    endpoint: Option<usize>,
    in_flight: Option<InFlightGuard>,
    deadline: Option<Instant>,
    /// Retries spent under the route's retry policy.
    retries: u32,
    /// Connection failures failed over without a policy.
    failovers: u32,
    /// Wait before the next attempt.
    backoff: Option<Duration>,
    /// The current attempt's response is being turned into a retry.
    status_retry: bool,
    /// When the request's sticky session started, if it carried a valid one.
    session_started: Option<u64>,
    mirrors: Vec<MirrorBody>,
    /// The attempt the buffered body was last replayed for.
    body_sent: u32,
    /// Budget held for Pingora's replay buffer of this request's body; given back once the
    /// body outgrows the buffer, or with the request.
    replay_permit: Option<BodyPermit>,
    /// Budget held for the body read whole (for body headers or filters).
    buffer_permit: Option<BodyPermit>,
    /// The body read before routing for the listener's body headers, until
    /// [`GatewayProxy::buffer_body`] hands it to the filters.
    body: Option<Bytes>,
    /// Body bytes read from the client so far (first attempt).
    body_seen: usize,
    /// Timings and handles for metrics and the access log.
    obs: RequestObs,
}

/// What the route match decided, and how far the chains got.
struct Routed {
    rule: Arc<CompiledRule>,
    backend: Option<usize>,
    matched_prefix: Option<usize>,
    protocol: Protocol,
    listener_port: u16,
    /// Steps of the rule's chain the request reached.
    reached_rule: usize,
    /// Steps of the backend's chain the request reached.
    reached_backend: usize,
}

impl Routed {
    /// The metric handles of the chosen backend.
    fn backend_stats(&self) -> Option<&crate::observe::metrics::BackendStats> {
        Some(&self.rule.backends.get(self.backend?)?.stats)
    }

    fn backend_chain(&self) -> Option<&Chain> {
        self.backend.map(|b| &self.rule.backends[b].chain)
    }

    fn target(&self) -> Option<&Arc<CompiledEndpoints>> {
        match &self.rule.backends.get(self.backend?)?.target {
            CompiledTarget::Endpoints(t) => Some(t),
            CompiledTarget::Unresolved(_) => None,
        }
    }

    /// The reached steps: the rule's, then the backend's.
    fn reached(&self) -> impl Iterator<Item = &Step> {
        let backend = self
            .backend_chain()
            .map_or(&[][..], |c| &c.steps[..self.reached_backend]);
        self.rule.chain.steps[..self.reached_rule]
            .iter()
            .chain(backend.iter())
    }
}

/// A response the gateway writes itself.
enum Reply {
    Status(u16),
    Redirect(String, u16),
    Direct(DirectResponse),
    Header(Box<ResponseHeader>),
}

fn host_of(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The SNI the client sent on this connection's TLS handshake, if any.
fn sni_of(session: &Session) -> Option<&str> {
    tls_info(session)?.sni.as_deref()
}

/// What this connection's TLS handshake recorded (TLS binds only).
fn tls_info(session: &Session) -> Option<&TlsInfo> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    ssl.extension.get::<TlsInfo>()
}

fn internal(context: String) -> Box<PError> {
    PError::explain(ErrorType::InternalError, context)
}

/// The error that turns a retriable response status into another attempt.
const STATUS_RETRY: ErrorType = ErrorType::Custom("retriable response status");

/// Normalises the request path under the listener's settings ([`crate::path`]) before routing,
/// replacing the URI when the path changes so that filters and the backend see what routing saw.
/// `Some`: the gateway answers (400 for a refused path, 307 for an escaped slash under
/// `UnescapeAndRedirect`).
fn normalize_path(session: &mut Session, opts: &PathNormalization) -> PResult<Option<Reply>> {
    let req = session.req_header();
    if !req.raw_path_is_utf8() {
        // Pingora would forward the original bytes, not the path routing saw.
        tracing::debug!("request target is not UTF-8: 400");
        return Ok(Some(Reply::Status(400)));
    }
    let path = req.uri.path();
    let normalized = match path::normalize(path, opts) {
        Ok(Normalized::Forward(Cow::Borrowed(p))) if p.len() == path.len() => return Ok(None),
        Ok(Normalized::Forward(p)) => p.into_owned(),
        Ok(Normalized::Redirect(mut location)) => {
            if let Some(q) = req.uri.query() {
                location.push('?');
                location.push_str(q);
            }
            tracing::debug!(path, %location, "escaped slash in the path: 307");
            return Ok(Some(Reply::Redirect(location, 307)));
        }
        Err(e) => {
            tracing::debug!(path, error = %e, "invalid request path: 400");
            return Ok(Some(Reply::Status(400)));
        }
    };
    tracing::trace!(path, normalized, "path normalised");
    set_path(session.req_header_mut(), normalized)?;
    Ok(None)
}

/// Replaces the path of the request's URI, keeping the query (and an absolute-form URI's scheme
/// and authority).
fn set_path(req: &mut RequestHeader, mut path: String) -> PResult<()> {
    if let Some(q) = req.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|_| internal(format!("normalised path {path:?} is not a valid URI")))?,
    );
    let uri =
        Uri::from_parts(parts).map_err(|e| internal(format!("normalised URI invalid: {e}")))?;
    req.set_uri(uri);
    Ok(())
}

/// Looks up the route and rule of the request on `listener` of `bind` and records them in
/// `ctx`. `Some`: the answer instead (404 when nothing matches).
fn match_route(
    session: &Session,
    ctx: &mut RequestCtx,
    bind: &CompiledBind,
    listener: usize,
) -> Option<Reply> {
    let hit = {
        let req = session.req_header();
        let parts = RequestParts {
            host: host_of(req),
            path: req.uri.path(),
            query: req.uri.query(),
            method: req.method.as_str(),
            headers: &req.headers,
        };
        match bind.router.lookup_in(listener, &parts) {
            Some(hit) => hit,
            None => return Some(Reply::Status(404)),
        }
    };
    let listener = &bind.listeners[hit.listener];
    let Some(rule) = listener
        .routes
        .get(hit.route)
        .and_then(|r| r.get(hit.rule))
        .cloned()
    else {
        return Some(Reply::Status(500));
    };
    let client_cert = tls_info(session).map_or(ClientCertStatus::Absent, |t| t.client_cert);
    ctx.filter = Some(FilterCtx::new(rule.info.clone()).with_client_cert(client_cert));
    ctx.routed = Some(Routed {
        rule,
        backend: None,
        matched_prefix: hit.matched_prefix,
        protocol: bind.protocol,
        listener_port: listener.port,
        reached_rule: 0,
        reached_backend: 0,
    });
    None
}

/// The wait before retry number `n` (1-based): the base doubled each time, capped at ten times
/// the base, plus up to a quarter of the base of jitter. Never less than the base.
fn backoff(base: Duration, n: u32) -> Duration {
    let doubled = base.saturating_mul(1 << n.saturating_sub(1).min(10));
    let capped = doubled.min(base.saturating_mul(10));
    let jitter_ms = (base.as_millis() / 4) as u64;
    capped
        + Duration::from_millis(if jitter_ms > 0 {
            rand::random_range(0..=jitter_ms)
        } else {
            0
        })
}

impl GatewayProxy {
    /// Routes the request and runs the request side of the chains. `None`: proxy it.
    async fn route(&self, session: &mut Session, ctx: &mut RequestCtx) -> PResult<Option<Reply>> {
        let table = self.table.load();
        let Some(bind) = table.bind_for(session.server_addr().and_then(|a| a.as_inet())) else {
            return Ok(Some(Reply::Status(404)));
        };
        if bind.protocol == Protocol::Https && !bind.client_auth.admits(|| tls_info(session)) {
            // The connection's client certificate was judged under other client validation
            // settings (a CA or mode change since): the client must reconnect and be judged anew.
            session.set_keepalive(None);
            return Ok(Some(Reply::Status(421)));
        }
        if bind.protocol == Protocol::Https
            && let Some(sni) = sni_of(session)
            && bind.router.listener_for(sni)
                != bind.router.listener_for(host_of(session.req_header()))
        {
            // The connection was made for another listener (HTTP/2 connection reuse, or a
            // client sending one name in SNI and another in Host): RFC 9110 section 15.5.20.
            return Ok(Some(Reply::Status(421)));
        }
        let Some(listener) = bind.router.listener_for(host_of(session.req_header())) else {
            return Ok(Some(Reply::Status(404)));
        };
        ctx.obs.listener(&bind.listeners[listener].obs);
        if let Some(reply) = normalize_path(session, &bind.listeners[listener].path)? {
            return Ok(Some(reply));
        }
        if bind.listeners[listener].body_headers.is_none() {
            if let Some(reply) = match_route(session, ctx, bind, listener) {
                return Ok(Some(reply));
            }
            drop(table);
        } else {
            // Reading the body waits on the client: hold the bind, not the table's guard.
            let bind = bind.clone();
            drop(table);
            if let Some(headers) = &bind.listeners[listener].body_headers
                && let Some(reply) = self.derive_body_headers(session, ctx, headers).await?
            {
                return Ok(Some(reply));
            }
            if let Some(reply) = match_route(session, ctx, &bind, listener) {
                return Ok(Some(reply));
            }
        }

        if let Some(reply) = self.run_chain(session, ctx, false).await? {
            return Ok(Some(reply));
        }
        let (Some(routed), Some(filter)) = (ctx.routed.as_mut(), ctx.filter.as_mut()) else {
            return Err(internal("request context lost its route".into()));
        };
        let rule = &routed.rule;
        let chosen = filter
            .wanted_backend()
            .and_then(|name| rule.backends.iter().position(|b| &*b.name == name))
            .or_else(|| rule.pick_backend());
        let Some(backend) = chosen else {
            tracing::debug!(rule = %rule.name, "no backend to choose: 500");
            return Ok(Some(Reply::Status(500)));
        };
        routed.backend = Some(backend);
        filter.set_backend(rule.backends[backend].name.clone());
        if let Some(reply) = self.run_chain(session, ctx, true).await? {
            return Ok(Some(reply));
        }
        let Some(routed) = ctx.routed.as_ref() else {
            return Err(internal("request context lost its route".into()));
        };
        let b = &routed.rule.backends[backend];
        let target = match &b.target {
            CompiledTarget::Unresolved(reason) => {
                tracing::debug!(rule = %routed.rule.name, backend = %b.name, %reason, "unresolved backend: 500");
                return Ok(Some(Reply::Status(500)));
            }
            CompiledTarget::Endpoints(t) if t.endpoints.is_empty() => {
                tracing::debug!(rule = %routed.rule.name, backend = %b.name, "no ready endpoint: 503");
                return Ok(Some(Reply::Status(503)));
            }
            CompiledTarget::Endpoints(t) => t.clone(),
        };
        if !session.is_body_empty() {
            // Pingora keeps the first 64 KiB of every proxied body to replay it on a retry; it
            // counts against the buffering cap. Past the cap the request is refused, not sent
            // without a replay buffer: Pingora fills that buffer whatever the gateway decides.
            let expected = content_length(session.req_header())
                .map_or(REPLAY_BUFFER, |n| n.min(REPLAY_BUFFER));
            match self
                .body_budget
                .try_reserve(expected, "retry replay buffer")
            {
                Some(permit) => ctx.replay_permit = Some(permit),
                None => return Ok(Some(overloaded(session))),
            }
        }
        if let Some(reply) = self.buffer_body(session, ctx).await? {
            return Ok(Some(reply));
        }
        if let Some(routed) = ctx.routed.as_ref() {
            if let Some(limit) = routed.rule.timeouts.request {
                ctx.deadline = Some(Instant::now() + limit);
            }
            if let Some(cfg) = routed
                .rule
                .session
                .as_ref()
                .or(target.policy.session_persistence.as_ref())
            {
                ctx.session_started = self.sessions.started(cfg, session.req_header(), unix_now());
            }
        }
        if let Some(budget) = &target.budget {
            budget.record_request(now_ms());
        }
        Ok(None)
    }

    /// Runs the request side of the rule's chain (`backend` false) or the chosen backend's,
    /// step by step, recording how far it got.
    async fn run_chain(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        backend: bool,
    ) -> PResult<Option<Reply>> {
        let RequestCtx {
            routed,
            filter,
            mirrors,
            ..
        } = ctx;
        let (Some(routed), Some(filter)) = (routed.as_mut(), filter.as_mut()) else {
            return Ok(None);
        };
        let chain = if backend {
            routed.backend_chain()
        } else {
            Some(&routed.rule.chain)
        };
        if chain.is_none_or(|c| c.steps.is_empty() && c.invalid.is_none()) {
            // Most rules have no filters: nothing to run, nothing to record.
            return Ok(None);
        }
        // The chain borrows the rule while `routed` records how far the request got.
        let rule = routed.rule.clone();
        let chain = if backend {
            match routed.backend {
                Some(b) => &rule.backends[b].chain,
                None => return Ok(None),
            }
        } else {
            &rule.chain
        };
        if let Some(reason) = &chain.invalid {
            tracing::debug!(rule = %rule.name, %reason, "invalid filter: 500");
            return Ok(Some(Reply::Status(500)));
        }
        for (i, step) in chain.steps.iter().enumerate() {
            if backend {
                routed.reached_backend = i + 1;
            } else {
                routed.reached_rule = i + 1;
            }
            match step {
                Step::RequestHeaders(m) => m.apply_request(session.req_header_mut())?,
                Step::ResponseHeaders(_) => {}
                Step::Rewrite(r) => {
                    apply_url_rewrite(session.req_header_mut(), r, routed.matched_prefix)?
                }
                Step::Redirect(redirect) => {
                    let req = session.req_header();
                    let location = redirect_location(
                        redirect,
                        routed.protocol,
                        routed.listener_port,
                        crate::routing::host::strip_port(host_of(req)),
                        req.uri.path(),
                        req.uri.query(),
                        routed.matched_prefix,
                    );
                    return Ok(Some(Reply::Redirect(location, redirect.status_code)));
                }
                Step::Cors(cors) => {
                    if let Some(resp) = cors.preflight(session.req_header()) {
                        return Ok(Some(Reply::Header(Box::new(resp))));
                    }
                }
                Step::Mirror(m) => {
                    if !m.sampled() || self.mirrors.refuse_if_full() {
                        continue;
                    }
                    let Some((addr, protocol, tls)) = m.endpoint() else {
                        continue;
                    };
                    let has_body = !session.is_body_empty();
                    if let Some(body) = self.mirrors.start_with(
                        session.req_header().clone(),
                        addr,
                        protocol,
                        tls.cloned(),
                        has_body,
                    ) && has_body
                    {
                        mirrors.push(body);
                    }
                }
                Step::Custom(f) => match f.request_headers(session, filter).await {
                    Ok(FilterAction::Continue) => {}
                    Ok(FilterAction::Respond(r)) => return Ok(Some(Reply::Direct(r))),
                    Err(e) => {
                        tracing::warn!(rule = %rule.name, error = %e, "custom filter failed: 500");
                        return Ok(Some(Reply::Status(500)));
                    }
                },
            }
        }
        Ok(None)
    }

    /// Sets the listener's body headers ([`crate::config::Listener::body_headers`]) before the
    /// route is looked up: removes the client's headers of those names, then, for a JSON body,
    /// reads the whole body ([`GatewayProxy::read_body`], kept in the request context for
    /// [`GatewayProxy::buffer_body`]) and sets each header whose field is a top-level string.
    async fn derive_body_headers(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        headers: &BodyHeaders,
    ) -> PResult<Option<Reply>> {
        let req = session.req_header_mut();
        for name in headers.names.iter() {
            req.remove_header(name);
        }
        let json = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| body_headers::is_json(v.as_bytes()));
        if !json || session.is_body_empty() {
            return Ok(None);
        }
        let body = match self
            .read_body(session, ctx, headers.limit, "body-based routing")
            .await?
        {
            Ok(body) => body,
            Err(reply) => return Ok(Some(reply)),
        };
        for (i, value) in body_headers::derive(headers, &body) {
            session
                .req_header_mut()
                .insert_header(&headers.names[i], value)?;
        }
        ctx.body = Some(body);
        Ok(None)
    }

    /// Reads the whole request body, at most `limit` bytes, holding its size from the buffering
    /// budget in `ctx` and with Pingora's replay buffer on (so the proxy sends it, once per
    /// attempt, through `request_body_filter`). `Err`: the answer instead (413 over `limit`,
    /// at once when `Content-Length` says so; 503 when the budget refuses).
    async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        limit: usize,
        what: &str,
    ) -> PResult<Result<Bytes, Reply>> {
        let declared = content_length(session.req_header());
        if declared.is_some_and(|n| n > limit) {
            tracing::debug!(limit, what, "declared request body over the bound: 413");
            return Ok(Err(Reply::Status(413)));
        }
        let expected = declared.map_or(limit, |n| n.min(limit));
        // The body is held twice: here and in Pingora's replay buffer, whose first 64 KiB the
        // replay reservation already covers.
        let held = |n: usize| n + n.saturating_sub(REPLAY_BUFFER);
        let Some(permit) = self.body_budget.try_reserve(held(expected), what) else {
            return Ok(Err(overloaded(session)));
        };
        let permit = ctx.buffer_permit.insert(permit);
        // The held body goes upstream from Pingora's replay buffer: room for all of it.
        session.as_mut().enable_retry_buffering_up_to(limit);
        // Room for a declared length at once; a chunked body grows the buffer as it comes.
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = session.read_request_body().await? {
            if buf.len() + chunk.len() > limit {
                tracing::debug!(limit, what, "request body over the bound: 413");
                return Ok(Err(Reply::Status(413)));
            }
            buf.extend_from_slice(&chunk);
        }
        permit.shrink_to(held(buf.len()));
        Ok(Ok(buf.freeze()))
    }

    /// Gives the filters the whole request body when one asked for it, or when the listener
    /// read it before routing (then it is not read again), and runs the body hooks on it.
    async fn buffer_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> PResult<Option<Reply>> {
        let asked = ctx
            .filter
            .as_ref()
            .and_then(FilterCtx::body_limit)
            .map(|l| l.min(MAX_BUFFERED_BODY));
        let body = match (ctx.body.take(), asked) {
            (None, None) => return Ok(None),
            (Some(body), Some(limit)) if body.len() > limit => {
                tracing::debug!(limit, "request body over a filter's bound: 413");
                return Ok(Some(Reply::Status(413)));
            }
            (Some(body), _) => body,
            (None, Some(limit)) => match self
                .read_body(session, ctx, limit, "filter body buffer")
                .await?
            {
                Ok(body) => body,
                Err(reply) => return Ok(Some(reply)),
            },
        };
        let RequestCtx { routed, filter, .. } = ctx;
        let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) else {
            return Ok(None);
        };
        let mut body = Some(body);
        for step in routed.reached() {
            if let Step::Custom(f) = step {
                match f.request_body(session, filter, &mut body, true).await {
                    Ok(FilterAction::Continue) => {}
                    Ok(FilterAction::Respond(r)) => return Ok(Some(Reply::Direct(r))),
                    Err(e) => {
                        tracing::warn!(rule = %routed.rule.name, error = %e, "custom body filter failed: 500");
                        return Ok(Some(Reply::Status(500)));
                    }
                }
            }
        }
        filter.set_body(body.unwrap_or_default());
        Ok(None)
    }

    /// Runs the response side of the reached steps on `resp`, then sets the sticky-session token.
    async fn response_steps(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        resp: &mut ResponseHeader,
    ) -> PResult<()> {
        let RequestCtx {
            routed,
            filter,
            endpoint,
            session_started,
            ..
        } = ctx;
        let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) else {
            return Ok(());
        };
        for step in routed.reached() {
            match step {
                Step::ResponseHeaders(m) => m.apply_response(resp)?,
                Step::Cors(cors) => {
                    cors.annotate(session.req_header().headers.get(http::header::ORIGIN), resp)
                }
                Step::Custom(f) => f
                    .response_headers(session, filter, resp)
                    .await
                    .map_err(|e| internal(format!("custom filter: {e}")))?,
                _ => {}
            }
        }
        if let (Some(target), Some(index)) = (routed.target(), *endpoint)
            && let Some(cfg) = routed
                .rule
                .session
                .as_ref()
                .or(target.policy.session_persistence.as_ref())
        {
            let now = unix_now();
            let started = session_started.unwrap_or(now);
            self.sessions
                .set(cfg, resp, target.endpoints[index].address(), started, now);
        }
        Ok(())
    }

    /// Writes a gateway-made response, through the response hooks of the reached steps.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
    ) -> PResult<()> {
        let (mut resp, body) = match reply {
            Reply::Status(code) => {
                let mut resp = ResponseHeader::build(code, Some(2))?;
                resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
                if code >= 400 {
                    resp.insert_header(http::header::CACHE_CONTROL, "private, no-store")?;
                }
                (resp, Bytes::new())
            }
            Reply::Redirect(location, code) => {
                let mut resp = ResponseHeader::build(code, Some(2))?;
                resp.insert_header(http::header::LOCATION, location)?;
                resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
                (resp, Bytes::new())
            }
            Reply::Direct(r) => {
                let mut resp = ResponseHeader::build(r.status, Some(r.headers.len() + 1))?;
                for (name, value) in r.headers {
                    resp.append_header(name, value)?;
                }
                resp.insert_header(http::header::CONTENT_LENGTH, r.body.len())?;
                (resp, r.body)
            }
            Reply::Header(resp) => (*resp, Bytes::new()),
        };
        if let Err(e) = self.response_steps(session, ctx, &mut resp).await {
            tracing::warn!(error = %e, "response filter failed on a gateway response");
        }
        let body = self.gateway_body(session, ctx, &mut resp, body);
        let empty = body.is_empty();
        session.write_response_header(Box::new(resp), empty).await?;
        if !empty {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    /// Runs the custom response body hooks of the reached steps on the whole body of a
    /// gateway-made response (one chunk, the end of the stream), as they run on a proxied one,
    /// and frames the result by its length: a hook may have changed the body (compressed it) and
    /// its header hook may have dropped `Content-Length` expecting a stream. A hook's error keeps
    /// the body as it was.
    fn gateway_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        resp: &mut ResponseHeader,
        body: Bytes,
    ) -> Bytes {
        let RequestCtx { routed, filter, .. } = ctx;
        let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) else {
            return body;
        };
        let mut custom = routed.reached().filter_map(|s| match s {
            Step::Custom(f) => Some(f),
            _ => None,
        });
        let Some(first) = custom.next() else {
            return body;
        };
        let original = body.clone();
        let mut chunk = Some(body);
        for f in std::iter::once(first).chain(custom) {
            if let Err(e) = f.response_body(session, filter, &mut chunk, true) {
                tracing::warn!(error = %e, "response body filter failed on a gateway response");
                chunk = Some(original);
                break;
            }
        }
        let body = chunk.unwrap_or_default();
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        // A number is always a valid header value.
        let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len());
        body
    }

    /// Chooses the endpoint of this attempt: a valid sticky session's, the filters' hint, then the
    /// picker's order, skipping ejected endpoints and those this request already tried.
    async fn choose(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        target: &CompiledEndpoints,
    ) -> PResult<usize> {
        let endpoints = &target.endpoints;
        let now = now_ms();
        let tried = |i: usize| ctx.tried & (1u64 << (i % 64)) != 0;
        let usable = |i: usize| !tried(i) && endpoints[i].health.available(now);
        let by_addr = |addr: SocketAddr| endpoints.iter().position(|e| e.address() == addr);
        if let Some(routed) = ctx.routed.as_ref()
            && let Some(cfg) = routed
                .rule
                .session
                .as_ref()
                .or(target.policy.session_persistence.as_ref())
            && let Some(i) = self
                .sessions
                .endpoint(cfg, session.req_header(), unix_now())
                .and_then(by_addr)
            && usable(i)
        {
            return Ok(i);
        }
        if let Some(filter) = ctx.filter.as_ref() {
            if let Some(i) = filter.preferred_endpoint().and_then(by_addr)
                && usable(i)
            {
                return Ok(i);
            }
            if let PickerKind::Custom(picker) = &target.picker {
                let mut out = Vec::new();
                let request = PickRequest {
                    header: session.req_header(),
                    body: filter.request_body(),
                    ctx: filter,
                    attempt: ctx.attempt,
                };
                picker
                    .pick(&request, endpoints, &mut out)
                    .await
                    .map_err(|e| {
                        PError::explain(ErrorType::HTTPStatus(503), format!("endpoint picker: {e}"))
                    })?;
                if let Some(&i) = out.iter().find(|&&i| i < endpoints.len() && usable(i)) {
                    return Ok(i);
                }
            }
        }
        if matches!(target.picker, PickerKind::LeastRequest)
            && let Some(i) = least_request(endpoints, now)
            && !tried(i)
        {
            return Ok(i);
        }
        // Round robin over usable endpoints; then untried ones whatever their health (never
        // leave a backend without endpoints); then anything.
        let n = endpoints.len();
        let start = target.state.next_index(n);
        let scan = |ok: &dyn Fn(usize) -> bool| (0..n).map(|k| (start + k) % n).find(|&i| ok(i));
        Ok(scan(&usable)
            .or_else(|| scan(&|i| !tried(i)))
            .or_else(|| scan(&|i| endpoints[i].health.available(now)))
            .unwrap_or(start))
    }

    /// Counts a failure of the current endpoint for outlier detection.
    fn endpoint_failed(&self, ctx: &RequestCtx) {
        let (Some(target), Some(i)) = (ctx.routed.as_ref().and_then(Routed::target), ctx.endpoint)
        else {
            return;
        };
        let Some(cfg) = target.policy.outlier_detection.as_ref() else {
            return;
        };
        let now = now_ms();
        let others = target
            .endpoints
            .iter()
            .enumerate()
            .any(|(j, e)| j != i && e.health.available(now));
        if target.endpoints[i].health.record_failure(cfg, now, others) {
            if let Some(stats) = ctx.routed.as_ref().and_then(Routed::backend_stats) {
                stats.ejected();
            }
            tracing::info!(
                endpoint = %target.endpoints[i].address(),
                times = target.endpoints[i].health.times_ejected(),
                "endpoint ejected"
            );
        }
    }

    /// Whether the route's retry policy allows one more retry now; spends it if so.
    fn policy_retry(&self, session: &Session, ctx: &mut RequestCtx) -> bool {
        let Some(routed) = ctx.routed.as_ref() else {
            return false;
        };
        let Some(retry) = routed.rule.retry.as_ref() else {
            return false;
        };
        if ctx.retries >= retry.attempts || !body_replayable(session, ctx) {
            return false;
        }
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if let Some(target) = routed.target()
            && let (Some(cfg), Some(budget)) = (target.policy.retry_budget.as_ref(), &target.budget)
            && !budget.try_retry(cfg, now_ms())
        {
            tracing::debug!(rule = %routed.rule.name, "retry budget exhausted");
            return false;
        }
        ctx.retries += 1;
        ctx.backoff = Some(backoff(
            retry.backoff.unwrap_or(DEFAULT_BACKOFF),
            ctx.retries,
        ));
        true
    }
}

/// Whether the request body can be sent again: buffered whole, or within Pingora's replay buffer.
fn body_replayable(session: &Session, ctx: &RequestCtx) -> bool {
    ctx.filter
        .as_ref()
        .is_some_and(|f| f.request_body().is_some())
        || !session.as_ref().retry_buffer_truncated()
}

/// The request's `Content-Length`, when it has one (Pingora has validated it; chunked requests
/// have none).
fn content_length(req: &RequestHeader) -> Option<usize> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The answer to a request whose body would go past the buffering cap: 503, and the connection
/// is closed rather than drained of the body.
fn overloaded(session: &mut Session) -> Reply {
    session.set_keepalive(None);
    Reply::Status(503)
}

/// Seconds since the UNIX epoch, for sticky-session tokens.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules. Pingora's default registers its response-compression module at
    /// level 0 (disabled), which never changes a response but is still built for every request
    /// and called (each call a boxed future) in every request and response phase; the gateway
    /// does not compress, so it registers nothing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        // The head is in: stop its deadline (Limits::header_read_timeout).
        crate::downstream::head_done(session.stream());
        self.observe.request_head(session, &mut ctx.obs);
        let req = session.req_header();
        if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
            // RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
            return Err(PError::explain(
                ErrorType::HTTPStatus(400),
                "HTTP/1.1 request without Host",
            ));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> PResult<bool> {
        match self.route(session, ctx).await? {
            None => Ok(false),
            Some(reply) => {
                self.respond(session, ctx, reply).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> PResult<Box<HttpPeer>> {
        let Some(target) = ctx.routed.as_ref().and_then(Routed::target).cloned() else {
            return Err(internal("upstream_peer without a routed request".into()));
        };
        ctx.attempt += 1;
        ctx.status_retry = false;
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if let Some(wait) = ctx.backoff.take() {
            tokio::time::sleep(remaining.map_or(wait, |r| wait.min(r))).await;
        }
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            return Err(PError::explain(
                ErrorType::HTTPStatus(504),
                "request timeout",
            ));
        }
        let index = self.choose(session, ctx, &target).await?;
        let endpoint = &target.endpoints[index];
        ctx.tried |= 1u64 << (index % 64);
        ctx.endpoint = Some(index);
        ctx.in_flight = Some(endpoint.health.begin());
        if let Some(filter) = ctx.filter.as_mut() {
            filter.set_endpoint(endpoint.address());
        }
        if ctx.attempt > 1
            && let Some(stats) = ctx.routed.as_ref().and_then(Routed::backend_stats)
        {
            stats.retry();
        }
        ctx.obs.attempt_started();
        let mut peer = HttpPeer::new(endpoint.address(), false, String::new());
        if target.protocol == BackendProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        if let Some(tls) = &target.tls {
            tls.apply(&mut peer);
        }
        let backend_request = ctx
            .routed
            .as_ref()
            .and_then(|r| r.rule.timeouts.backend_request);
        let limit = match (remaining, backend_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        peer.options.connection_timeout = Some(Duration::from_secs(10));
        if let Some(limit) = limit {
            peer.options.total_connection_timeout = Some(limit);
            if target.protocol != BackendProtocol::WebSocket {
                // Each read waits at most this long: the response headers must come within it,
                // and a streaming body must not stall longer between chunks.
                peer.options.read_timeout = Some(limit);
                peer.options.write_timeout = Some(limit);
            }
        }
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        if !reused
            && let (Some(stats), Some(took)) = (
                ctx.routed.as_ref().and_then(Routed::backend_stats),
                ctx.obs.attempt_elapsed(),
            )
        {
            stats.connected(took);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<PError>,
    ) -> Box<PError> {
        self.endpoint_failed(ctx);
        ctx.in_flight = None;
        if let Some(stats) = ctx.routed.as_ref().and_then(Routed::backend_stats) {
            stats.connect_failed();
        }
        let untried = ctx
            .routed
            .as_ref()
            .and_then(Routed::target)
            .is_some_and(|t| {
                let now = now_ms();
                (0..t.endpoints.len()).any(|i| {
                    ctx.tried & (1u64 << (i % 64)) == 0 && t.endpoints[i].health.available(now)
                })
            });
        let expired = ctx.deadline.is_some_and(|d| Instant::now() >= d);
        // Nothing reached the backend: trying another endpoint is always safe.
        let retry = !expired
            && if untried && ctx.failovers < CONNECT_FAILOVERS {
                ctx.failovers += 1;
                true
            } else {
                self.policy_retry(session, ctx)
            };
        tracing::debug!(%peer, error = %e, retry, "connection to endpoint failed");
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        ctx.obs.upstream_request(upstream)?;
        let RequestCtx {
            routed,
            filter,
            endpoint,
            ..
        } = ctx;
        let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) else {
            return Ok(());
        };
        if session.req_header().version <= http::Version::HTTP_10
            && !upstream.headers.contains_key(http::header::HOST)
            && let (Some(target), Some(i)) = (routed.target(), *endpoint)
        {
            // An HTTP/1.0 request may come without Host; the backend gets its own authority.
            let authority = target.endpoints[i].address().to_string();
            upstream.insert_header(http::header::HOST, authority)?;
        }
        if let Some(body) = filter.request_body() {
            upstream.remove_header(&http::header::TRANSFER_ENCODING);
            upstream.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        }
        for step in routed.reached() {
            if let Step::Custom(f) = step {
                f.upstream_request(session, filter, upstream)
                    .await
                    .map_err(|e| internal(format!("custom filter: {e}")))?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        if ctx.attempt <= 1 {
            ctx.body_seen += body.as_ref().map_or(0, Bytes::len);
            if let Some(permit) = ctx.replay_permit.as_mut() {
                if session.as_ref().retry_buffer_truncated() {
                    // The body outgrew Pingora's replay buffer, which Pingora then dropped.
                    ctx.replay_permit = None;
                } else if end_of_stream {
                    permit.shrink_to(ctx.body_seen);
                }
            }
        }
        let buffered = ctx.filter.as_ref().and_then(|f| f.request_body().cloned());
        if let Some(whole) = buffered {
            // Every attempt sends the body the filters left, once.
            *body = (ctx.body_sent != ctx.attempt).then_some(whole);
            ctx.body_sent = ctx.attempt;
        } else if ctx.attempt <= 1 {
            let RequestCtx { routed, filter, .. } = ctx;
            if let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) {
                for step in routed.reached() {
                    if let Step::Custom(f) = step {
                        match f.request_body(session, filter, body, end_of_stream).await {
                            Ok(FilterAction::Continue) => {}
                            Ok(FilterAction::Respond(_)) => {
                                return Err(internal(
                                    "a streaming body filter cannot answer; ask for buffering"
                                        .into(),
                                ));
                            }
                            Err(e) => return Err(internal(format!("custom body filter: {e}"))),
                        }
                    }
                }
            }
        }
        if ctx.attempt <= 1 && !ctx.mirrors.is_empty() {
            let done = end_of_stream || body.is_none();
            if let Some(chunk) = body.as_ref().filter(|c| !c.is_empty()) {
                // A mirror that cannot keep up is dropped, never the primary.
                ctx.mirrors.retain_mut(|m| m.send(chunk.clone()));
            }
            if done {
                for m in ctx.mirrors.drain(..) {
                    m.finish();
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        let status = upstream_response.status.as_u16();
        if upstream_response.status.is_informational() && status != 101 {
            // An interim response (100 Continue, 103 Early Hints): the final one follows and is
            // the one counted, checked for health and for retries. 101 ends the exchange.
            return Ok(());
        }
        if let Some(took) = ctx.obs.attempt_elapsed() {
            ctx.obs.upstream_answered(took);
            if let Some(stats) = ctx.routed.as_ref().and_then(Routed::backend_stats) {
                stats.response(status, took);
            }
        }
        if status >= 500 {
            self.endpoint_failed(ctx);
        } else if let (Some(target), Some(i)) =
            (ctx.routed.as_ref().and_then(Routed::target), ctx.endpoint)
        {
            target.endpoints[i].health.record_success();
        }
        let listed = ctx
            .routed
            .as_ref()
            .and_then(|r| r.rule.retry.as_ref())
            .is_some_and(|r| r.codes.contains(&status));
        if listed && session.response_written().is_none() && self.policy_retry(session, ctx) {
            ctx.status_retry = true;
            let mut e = PError::explain(STATUS_RETRY, format!("backend answered {status}"));
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<PError>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<PError> {
        ctx.in_flight = None;
        if ctx.status_retry {
            e.set_retry(true);
            return e;
        }
        if *e.esource() == pingora_error::ErrorSource::Upstream {
            self.endpoint_failed(ctx);
        }
        let unanswered = session.response_written().is_none();
        let retry = unanswered
            && *e.esource() == pingora_error::ErrorSource::Upstream
            && if ctx.routed.as_ref().is_some_and(|r| r.rule.retry.is_some()) {
                self.policy_retry(session, ctx)
            } else {
                // No policy: as Pingora does, retry an idempotent request whose reused
                // keep-alive connection turned out to be closed.
                e.retry.decide_reuse(client_reused);
                session.req_header().method.is_idempotent()
                    && body_replayable(session, ctx)
                    && e.retry()
            };
        tracing::debug!(%peer, error = %e, retry, "upstream failed");
        e.set_retry(retry);
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        self.response_steps(session, ctx, response).await
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> PResult<Option<Duration>> {
        let RequestCtx { routed, filter, .. } = ctx;
        if let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) {
            for step in routed.reached() {
                if let Step::Custom(f) = step {
                    f.response_body(session, filter, body, end_of_stream)
                        .map_err(|e| internal(format!("custom filter: {e}")))?;
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &PError,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        ctx.in_flight = None;
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => 503,
            // The backend went away before answering (reset, closed): as Envoy does, 503.
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
                if *e.esource() == pingora_error::ErrorSource::Upstream =>
            {
                503
            }
            _ => match e.esource() {
                // An invalid answer from the backend.
                pingora_error::ErrorSource::Upstream => 502,
                pingora_error::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0
            && session.response_written().is_none()
            && let Err(err) = self.respond(session, ctx, Reply::Status(code)).await
        {
            tracing::debug!(error = %err, "could not send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&PError>, ctx: &mut RequestCtx) {
        ctx.in_flight = None;
        // A mirror whose body did not end with the primary's is abandoned, never sent cut short.
        ctx.mirrors.clear();
        let RequestCtx {
            routed,
            filter,
            attempt,
            endpoint,
            obs,
            ..
        } = ctx;
        if let (Some(routed), Some(filter)) = (routed.as_ref(), filter.as_mut()) {
            for step in routed.reached() {
                if let Step::Custom(f) = step {
                    f.logging(session, filter, e).await;
                }
            }
        }
        let backend = routed
            .as_ref()
            .and_then(|r| r.rule.backends.get(r.backend?));
        let served = match routed.as_ref() {
            Some(r) => Served {
                stats: Some(backend.map_or(&r.rule.stats, |b| &b.route_stats)),
                info: Some(&r.rule.info),
                backend: backend.map(|b| &*b.name),
                upstream: r
                    .target()
                    .zip(*endpoint)
                    .map(|(t, i)| t.endpoints[i].address()),
                attempts: *attempt,
            },
            None => Served::default(),
        };
        self.observe.finish(session, e, obs, served);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            let rule = routed.as_ref().map_or("", |r| r.rule.name.as_str());
            let req = session.req_header();
            let client_cert = filter.as_ref().map(FilterCtx::client_cert);
            tracing::debug!(
                method = %req.method,
                path = %req.uri,
                status,
                rule,
                client_cert = ?client_cert,
                attempts = *attempt,
                error = e.map(|e| e.to_string()),
                "request"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for n in 1..20 {
            let wait = backoff(base, n);
            assert!(wait >= base, "retry {n}: {wait:?}");
            assert!(wait <= base * 10 + base / 4, "retry {n}: {wait:?}");
        }
        assert!(backoff(base, 2) >= base * 2);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
