//! The Gateway API request path as Pingora [`ProxyHttp`] phases.
//!
//! | phase | what happens |
//! |---|---|
//! | `request_filter` | bind by local address, listener and rule by host/path/headers ([`crate::routing`]); rule filters: invalid -> 500, `RequestRedirect` -> 3xx, `ExtensionRef` request hooks; weighted backend choice; backend filters likewise; no match -> 404, no backend -> 500 |
//! | `upstream_peer` | next endpoint of the chosen backend (round robin), h1 or h2c, backend timeouts |
//! | `upstream_request_filter` | `RequestHeaderModifier`, `URLRewrite` (rule, then backend), `ExtensionRef` upstream hooks |
//! | `response_filter` | `ResponseHeaderModifier` (rule, then backend), `ExtensionRef` response hooks |
//! | `fail_to_proxy` | upstream timeouts -> 504, other upstream errors -> 502 |

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Uri;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error as PError, ErrorType, Result as PResult};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{BackendProtocol, Protocol};
use crate::filter::{DirectResponse, FilterAction, redirect_location, rewrite_path};
use crate::routing::RequestParts;
use crate::table::{CompiledFilters, CompiledHeaderModifier, CompiledRule, CompiledTarget, Table};
use crate::tls::Sni;

/// The [`ProxyHttp`] implementation behind every bind of a [`crate::Gateway`].
pub struct GatewayProxy {
    pub(crate) table: Arc<ArcSwap<Table>>,
}

/// Per-request state carried between phases.
#[derive(Default)]
pub struct RequestCtx {
    selected: Option<Selected>,
}

struct Selected {
    rule: Arc<CompiledRule>,
    backend: usize,
    matched_prefix: Option<usize>,
}

impl Selected {
    fn filter_sets(&self) -> [&CompiledFilters; 2] {
        [
            &self.rule.filters,
            &self.rule.backends[self.backend].filters,
        ]
    }
}

/// What `request_filter` decided.
enum Decision {
    Proxy(Selected),
    Respond(DirectResponse),
    Redirect(String, u16),
    Status(u16),
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
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    ssl.extension.get::<Sni>().map(|sni| sni.0.as_str())
}

impl GatewayProxy {
    async fn decide(&self, session: &mut Session) -> Decision {
        let table = self.table.load_full();
        let Some(bind) = table.bind_for(session.server_addr().and_then(|a| a.as_inet())) else {
            return Decision::Status(404);
        };
        if bind.protocol == Protocol::Https
            && let Some(sni) = sni_of(session)
            && bind.router.listener_for(sni)
                != bind.router.listener_for(host_of(session.req_header()))
        {
            // The connection was made for another listener (HTTP/2 connection reuse, or a
            // client sending one name in SNI and another in Host): RFC 9110 section 15.5.20.
            return Decision::Status(421);
        }
        let (hit, protocol) = {
            let req = session.req_header();
            let parts = RequestParts {
                host: host_of(req),
                path: req.uri.path(),
                query: req.uri.query(),
                method: req.method.as_str(),
                headers: &req.headers,
            };
            match bind.router.lookup(&parts) {
                Some(hit) => (hit, bind.protocol),
                None => return Decision::Status(404),
            }
        };
        let listener = &bind.listeners[hit.listener];
        let Some(rule) = listener
            .routes
            .get(hit.route)
            .and_then(|r| r.get(hit.rule))
            .cloned()
        else {
            return Decision::Status(500);
        };

        if let Some(d) = self
            .run_request_filters(
                session,
                &rule.filters,
                &rule.name,
                protocol,
                listener.port,
                hit.matched_prefix,
            )
            .await
        {
            return d;
        }
        let Some(backend) = rule.pick_backend() else {
            tracing::debug!(rule = %rule.name, "no backend to choose: 500");
            return Decision::Status(500);
        };
        let b = &rule.backends[backend];
        if let Some(d) = self
            .run_request_filters(
                session,
                &b.filters,
                &rule.name,
                protocol,
                listener.port,
                hit.matched_prefix,
            )
            .await
        {
            return d;
        }
        match &b.target {
            CompiledTarget::Unresolved(reason) => {
                tracing::debug!(rule = %rule.name, backend = %b.name, %reason, "unresolved backend: 500");
                Decision::Status(500)
            }
            CompiledTarget::Endpoints { endpoints, .. } if endpoints.is_empty() => {
                tracing::debug!(rule = %rule.name, backend = %b.name, "no ready endpoint: 503");
                Decision::Status(503)
            }
            CompiledTarget::Endpoints { .. } => Decision::Proxy(Selected {
                rule,
                backend,
                matched_prefix: hit.matched_prefix,
            }),
        }
    }

    /// Runs the request-phase part of a filter set; `Some` ends the request.
    async fn run_request_filters(
        &self,
        session: &mut Session,
        filters: &CompiledFilters,
        rule: &str,
        protocol: Protocol,
        listener_port: u16,
        matched_prefix: Option<usize>,
    ) -> Option<Decision> {
        if let Some(reason) = &filters.invalid {
            tracing::debug!(%rule, %reason, "invalid filter: 500");
            return Some(Decision::Status(500));
        }
        if let Some(redirect) = &filters.redirect {
            let req = session.req_header();
            let location = redirect_location(
                redirect,
                protocol,
                listener_port,
                crate::routing::host::strip_port(host_of(req)),
                req.uri.path(),
                req.uri.query(),
                matched_prefix,
            );
            return Some(Decision::Redirect(location, redirect.status_code));
        }
        for ext in &filters.extensions {
            match ext.request(session).await {
                Ok(FilterAction::Continue) => {}
                Ok(FilterAction::Respond(r)) => return Some(Decision::Respond(r)),
                Err(e) => {
                    tracing::warn!(%rule, error = %e, "custom filter failed: 500");
                    return Some(Decision::Status(500));
                }
            }
        }
        None
    }
}

async fn write_direct(session: &mut Session, r: DirectResponse) -> PResult<()> {
    let mut resp = ResponseHeader::build(r.status, Some(r.headers.len() + 1))?;
    for (name, value) in r.headers {
        resp.append_header(name, value)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, r.body.len())?;
    let empty = r.body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(r.body), true).await?;
    }
    Ok(())
}

fn apply_request_headers(req: &mut RequestHeader, m: &CompiledHeaderModifier) -> PResult<()> {
    for (n, v) in &m.set {
        req.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &m.add {
        req.append_header(n.clone(), v.clone())?;
    }
    for n in &m.remove {
        req.remove_header(n);
    }
    Ok(())
}

fn apply_response_headers(resp: &mut ResponseHeader, m: &CompiledHeaderModifier) -> PResult<()> {
    for (n, v) in &m.set {
        resp.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &m.add {
        resp.append_header(n.clone(), v.clone())?;
    }
    for n in &m.remove {
        resp.remove_header(n);
    }
    Ok(())
}

fn internal(context: String) -> Box<PError> {
    PError::explain(ErrorType::InternalError, context)
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> PResult<bool> {
        match self.decide(session).await {
            Decision::Proxy(selected) => {
                ctx.selected = Some(selected);
                Ok(false)
            }
            Decision::Status(code) => {
                session.respond_error(code).await?;
                Ok(true)
            }
            Decision::Redirect(location, code) => {
                let mut resp = ResponseHeader::build(code, Some(2))?;
                resp.insert_header(http::header::LOCATION, location)?;
                resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
                session.write_response_header(Box::new(resp), true).await?;
                Ok(true)
            }
            Decision::Respond(r) => {
                write_direct(session, r).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> PResult<Box<HttpPeer>> {
        let selected = ctx
            .selected
            .as_ref()
            .ok_or_else(|| internal("upstream_peer without a routed request".into()))?;
        let backend = &selected.rule.backends[selected.backend];
        let (addr, protocol) = backend
            .target
            .next_endpoint()
            .ok_or_else(|| PError::explain(ErrorType::HTTPStatus(503), "no ready endpoint"))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        if protocol == BackendProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        let timeouts = selected.rule.timeouts;
        let limit = match (timeouts.request, timeouts.backend_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(limit) = limit {
            peer.options.total_connection_timeout = Some(limit);
            peer.options.read_timeout = Some(limit);
            peer.options.write_timeout = Some(limit);
        } else {
            peer.options.connection_timeout = Some(Duration::from_secs(10));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        let Some(selected) = ctx.selected.as_ref() else {
            return Ok(());
        };
        let mut rewrite = None;
        for set in selected.filter_sets() {
            for m in &set.request_headers {
                apply_request_headers(upstream, m)?;
            }
            if set.rewrite.is_some() {
                rewrite = set.rewrite.as_ref();
            }
        }
        if let Some(rewrite) = rewrite {
            if let Some(host) = &rewrite.hostname {
                upstream.insert_header(http::header::HOST, host.as_str())?;
            }
            // An absolute-form URI (HTTP/2 `:authority`) carries the host too.
            let authority = rewrite
                .hostname
                .as_ref()
                .filter(|_| upstream.uri.authority().is_some());
            if rewrite.path.is_some() || authority.is_some() {
                let mut parts = upstream.uri.clone().into_parts();
                if let Some(modifier) = &rewrite.path {
                    let mut pq =
                        rewrite_path(upstream.uri.path(), modifier, selected.matched_prefix);
                    if let Some(q) = upstream.uri.query() {
                        pq.push('?');
                        pq.push_str(q);
                    }
                    parts.path_and_query = Some(pq.parse().map_err(|_| {
                        internal(format!("rewritten path {pq:?} is not a valid URI"))
                    })?);
                }
                if let Some(host) = authority {
                    parts.authority = Some(host.parse().map_err(|_| {
                        internal(format!(
                            "rewritten hostname {host:?} is not a valid authority"
                        ))
                    })?);
                }
                let uri = Uri::from_parts(parts)
                    .map_err(|e| internal(format!("rewritten URI invalid: {e}")))?;
                upstream.set_uri(uri);
            }
        }
        for set in selected.filter_sets() {
            for ext in &set.extensions {
                ext.upstream_request(session, upstream)
                    .await
                    .map_err(|e| internal(format!("custom filter: {e}")))?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> PResult<()> {
        let Some(selected) = ctx.selected.as_ref() else {
            return Ok(());
        };
        for set in selected.filter_sets() {
            for m in &set.response_headers {
                apply_response_headers(response, m)?;
            }
        }
        for set in selected.filter_sets() {
            for ext in &set.extensions {
                ext.response(session, response)
                    .await
                    .map_err(|e| internal(format!("custom filter: {e}")))?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &PError,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => 503,
            _ => match e.esource() {
                pingora_error::ErrorSource::Upstream => 502,
                pingora_error::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0
            && let Err(err) = session.respond_error(code).await
        {
            tracing::debug!(error = %err, "could not send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&PError>, ctx: &mut RequestCtx) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            let rule = ctx.selected.as_ref().map_or("", |s| s.rule.name.as_str());
            let req = session.req_header();
            tracing::debug!(
                method = %req.method,
                path = %req.uri,
                status,
                rule,
                error = e.map(|e| e.to_string()),
                "request"
            );
        }
    }
}
