//! `ExternalAuth`: every request is checked by an external authorization service before it
//! goes on, over gRPC (Envoy's `ext_authz` v3 `Authorization/Check`) or plain HTTP.
//!
//! This is the data plane of the Gateway API's HTTPRoute `ExternalAuth` filter (GEP-1494,
//! experimental channel; the configuration source translates that filter into this kind), and
//! the `extAuth` section of a `TrafficPolicy`.
//!
//! # When it runs
//!
//! In `request_headers`, unless `forwardBody` is set: then the filter asks for the request body
//! (see below) and checks in `request_body`, once, with the whole body. Nothing reaches a backend
//! before the service said yes.
//!
//! # gRPC (`protocol: GRPC`)
//!
//! One `CheckRequest` per request, with the client's and the gateway's addresses (`source`,
//! `destination`), and the request's method, path (with its query), host, scheme, protocol,
//! `x-request-id`, size (`Content-Length`, else -1), headers (every header, or only those of
//! `grpc.allowedHeaders`; repeated headers joined by `,`) and, when forwarded, the body (`body`
//! when it is UTF-8, else `rawBody`). The answer's status decides:
//!
//! * `OK`: the request goes on, changed as `okResponse` says: `headers` set on the request (the
//!   deprecated `append` wins when present: true appends, false overwrites; otherwise
//!   `appendAction`), `headersToRemove` removed (pseudo-headers and `Host` are never removed),
//!   `responseHeadersToAdd` added to the response the client gets.
//! * any other code: the client gets `deniedResponse`: its status (403 when unset), headers
//!   and body. The backend is not contacted.
//!
//! All the filter's checks share one HTTP/2 connection per endpoint (a tonic channel made on the
//! first request and kept while the filter's settings are unchanged), load-balanced over the
//! endpoints when there are several.
//!
//! # HTTP (`protocol: HTTP`)
//!
//! The service gets a request with the client request's method, its path (and query) after
//! `http.path` (a prefix; the prefix's trailing `/` is dropped), and these headers, as GEP-1494
//! asks: `Host` (the client's), `Authorization`, `Content-Length` (of what is forwarded: 0
//! without `forwardBody`) and those of `http.allowedHeaders`. A `200` answer lets the request
//! on, with the answer's headers copied onto it (replacing what the client sent): those named by
//! `http.allowedResponseHeaders`, or, when that list is empty, all but `Host`, the framing
//! headers (`Content-Length`, `Transfer-Encoding`, `Content-Type`) and hop-by-hop headers. Any
//! other status is the client's answer: status, headers (framing and hop-by-hop headers aside)
//! and body (at most 64 KiB; a longer one is a failure). Connections are kept alive and reused.
//!
//! # Failures, timeout and defaults
//!
//! A check that cannot be made (no endpoint, refused connection, a broken answer) or takes
//! longer than `timeoutMs` (default 10000, Envoy Gateway's; Envoy's own filter defaults to 200)
//! fails closed: the client gets `statusOnError` (default 403, Envoy's `status_on_error`) with
//! the body `external authorization failed`. With `failOpen: true` (Envoy's
//! `failure_mode_allow`) the request goes on unchanged instead, and a warning is logged.
//!
//! # Body (`forwardBody`)
//!
//! `forwardBody.maxSize` bytes (1 to 65536, the gateway's body buffer) of the request body are
//! sent to the service. A longer body is answered 413 (GEP-1494 asks for a 4xx; Envoy's
//! `with_request_body` without partial messages does the same), unless `allowPartial`: then the
//! first `maxSize` bytes are sent, for bodies up to 64 KiB (longer ones are still 413, the
//! gateway does not hold more). Unset or `maxSize: 0`: no body is sent and none is buffered.
//!
//! # Where it runs in a `TrafficPolicy`
//!
//! Section `extAuth`, after `ipAccess` and `requestLimits` (requests refused for who they are or
//! for their size never cost a round trip to the service) and before `jwt`, `basicAuth` and
//! `apiKeyAuth`, as in Envoy Gateway, where the external service decides first and the built-in
//! methods must pass as well. With `forwardBody`, the check waits for the body, so the later
//! sections' header hooks have already run when it happens.
//!
//! TLS towards the service is not supported: the backend is spoken to in plain text (h2c for
//! gRPC).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core_pb;
use envoy_types::pb::envoy::service::auth::v3 as auth_pb;
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use gateway_core::{
    DirectResponse, FilterAction, FilterCtx, HttpFilter, RequestHeader, ResponseHeader, Session,
    async_trait,
};
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::SpecError;

/// The kind of [`ExternalAuth`] objects.
pub const KIND: &str = "ExternalAuth";

/// Default of `timeoutMs`: Envoy Gateway's 10 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Default of `statusOnError`: Envoy's 403.
pub const DEFAULT_STATUS_ON_ERROR: u16 = 403;

/// The largest deny body read from an HTTP authorization service.
const MAX_DENY_BODY: usize = 64 * 1024;

/// Settings of an `ExternalAuth` filter.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "ExternalAuth",
    plural = "externalauths",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalAuthSpec {
    /// How the service is spoken to: `GRPC` (Envoy `ext_authz` v3) or `HTTP`.
    pub protocol: ExternalAuthProtocol,
    /// Where the service is.
    pub backend: ExternalAuthBackend,
    /// gRPC settings (only with `protocol: GRPC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAuthSpec>,
    /// HTTP settings (only with `protocol: HTTP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAuthSpec>,
    /// Send the request body too. Unset: no body is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_body: Option<ForwardBodySpec>,
    /// Milliseconds a check may take, connecting included; above 0. Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Let requests through when the check fails (no answer in time, no connection, a broken
    /// answer). Default: false (answer `statusOnError`).
    #[serde(default)]
    pub fail_open: bool,
    /// The status answered when the check fails and `failOpen` is false; 400 to 599. Default:
    /// 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<u16>,
}

/// The protocol of the authorization service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExternalAuthProtocol {
    /// Envoy's `envoy.service.auth.v3.Authorization/Check` over HTTP/2 (h2c).
    #[serde(rename = "GRPC")]
    Grpc,
    /// Plain HTTP/1.1: 200 allows, anything else denies.
    #[serde(rename = "HTTP")]
    Http,
}

/// Where the authorization service is: exactly one of `address` and `endpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalAuthBackend {
    /// `host:port`: a DNS name (resolved when connecting) or an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `ip:port` endpoints, used in turn (what the HTTPRoute `ExternalAuth` filter's Service
    /// resolves to). An empty list is allowed: every check then fails (`failOpen` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
}

/// gRPC settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcAuthSpec {
    /// The request headers sent in the `CheckRequest`. Empty (the default): every header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
}

/// HTTP settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAuthSpec {
    /// A prefix put before the client's path in the request to the service (starting with `/`).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Request headers sent besides `Host`, `Authorization` and `Content-Length`. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Headers of a `200` answer copied onto the request to the backend. Empty (the default):
    /// all but `Host`, framing and hop-by-hop headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_response_headers: Vec<String>,
}

/// How much of the request body is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardBodySpec {
    /// The most bytes sent, 0 to 65536; 0 sends no body.
    pub max_size: u32,
    /// Send the first `maxSize` bytes of a longer body instead of answering 413. Default: false.
    #[serde(default)]
    pub allow_partial: bool,
}

/// Headers that describe a message's framing or one connection: never copied between messages.
fn hop_or_framing(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn header_names(field: &str, names: &[String]) -> Result<Vec<HeaderName>, SpecError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                SpecError::invalid(
                    format!("{field}[{i}]"),
                    format!("{n:?} is not a header name"),
                )
            })
        })
        .collect()
}

/// Where checks go, compiled.
enum Target {
    /// One `host:port`.
    Address(String),
    /// Endpoints used in turn (possibly none).
    Endpoints(Vec<SocketAddr>),
}

/// The gRPC side: the channel, made on the first check (it needs the runtime).
struct Grpc {
    endpoints: Vec<Endpoint>,
    channel: OnceLock<Channel>,
    allowed: Vec<HeaderName>,
}

impl Grpc {
    fn client(&self) -> AuthorizationClient<Channel> {
        let channel = self.channel.get_or_init(|| {
            if self.endpoints.len() == 1 {
                self.endpoints[0].connect_lazy()
            } else {
                Channel::balance_list(self.endpoints.clone().into_iter())
            }
        });
        AuthorizationClient::new(channel.clone())
    }
}

/// The HTTP side.
struct HttpSide {
    client: Client<HttpConnector, Full<Bytes>>,
    prefix: String,
    allowed: Vec<HeaderName>,
    copy_back: Vec<HeaderName>,
    next: AtomicUsize,
}

/// The protocol side of a filter (the HTTP side, with its pooled client, is boxed: it is
/// several times the gRPC side's size).
enum Protocol {
    Grpc(Grpc),
    Http(Box<HttpSide>),
}

/// The `ExternalAuth` filter, built from an [`ExternalAuthSpec`].
pub struct ExternalAuthFilter {
    target: Target,
    protocol: Protocol,
    /// `(maxSize, allowPartial)`, when the body is forwarded.
    body: Option<(usize, bool)>,
    timeout: Duration,
    fail_open: bool,
    status_on_error: u16,
}

impl std::fmt::Debug for ExternalAuthFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::Address(a) => a.clone(),
            Target::Endpoints(e) => format!("{e:?}"),
        };
        f.debug_struct("ExternalAuthFilter")
            .field(
                "protocol",
                &match self.protocol {
                    Protocol::Grpc(_) => "GRPC",
                    Protocol::Http(_) => "HTTP",
                },
            )
            .field("target", &target)
            .field("timeout", &self.timeout)
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

/// What a check decided.
enum Verdict {
    /// Go on, after these changes.
    Allow(Changes),
    /// Answer the client with this.
    Deny(DirectResponse),
}

/// Changes an allowing answer makes to the request and the response.
#[derive(Default)]
struct Changes {
    /// `(name, value, how)` set on the request.
    set: Vec<(HeaderName, HeaderValue, Append)>,
    /// Removed from the request.
    remove: Vec<HeaderName>,
    /// Added to the client's response.
    response: Vec<(HeaderName, HeaderValue, Append)>,
}

/// How a header is put on a message (Envoy's `HeaderAppendAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Append {
    /// Added, next to any existing value.
    Add,
    /// Added only when absent.
    IfAbsent,
    /// Replaces any existing value, or is added.
    Overwrite,
    /// Replaces an existing value; nothing when absent.
    OverwriteIfExists,
}

/// Headers an answer added to the client's response, kept until `response_headers`.
#[derive(Clone, Default)]
struct ResponseAdditions(Vec<(HeaderName, HeaderValue, Append)>);

/// How many of this request's `ExternalAuth` filters wait for the body.
#[derive(Clone, Copy, Default)]
struct BodyChecks(u32);

impl ExternalAuthFilter {
    /// Checks `spec` and prepares the client; no connection is made until the first request.
    pub fn new(spec: ExternalAuthSpec) -> Result<Self, SpecError> {
        let target = match (&spec.backend.address, &spec.backend.endpoints) {
            (Some(address), None) => {
                let authority: http::uri::Authority = address.parse().map_err(|_| {
                    SpecError::invalid("backend.address", format!("{address:?} is not host:port"))
                })?;
                if authority.port_u16().is_none() || authority.as_str().contains('@') {
                    return Err(SpecError::invalid(
                        "backend.address",
                        format!("{address:?} is not host:port"),
                    ));
                }
                Target::Address(authority.as_str().to_owned())
            }
            (None, Some(endpoints)) => Target::Endpoints(
                endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        e.parse().map_err(|_| {
                            SpecError::invalid(
                                format!("backend.endpoints[{i}]"),
                                format!("{e:?} is not ip:port"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(SpecError::invalid(
                    "backend",
                    "set exactly one of address and endpoints",
                ));
            }
        };
        let timeout = match spec.timeout_ms {
            Some(0) => return Err(SpecError::invalid("timeoutMs", "must be above 0")),
            t => Duration::from_millis(t.unwrap_or(DEFAULT_TIMEOUT_MS)),
        };
        let status_on_error = spec.status_on_error.unwrap_or(DEFAULT_STATUS_ON_ERROR);
        if !(400..=599).contains(&status_on_error) {
            return Err(SpecError::invalid(
                "statusOnError",
                format!("{status_on_error} is not a 4xx or 5xx status"),
            ));
        }
        let body = match spec.forward_body {
            None | Some(ForwardBodySpec { max_size: 0, .. }) => None,
            Some(b) if b.max_size as usize > gateway_core::proxy::DEFAULT_BUFFERED_BODY => {
                return Err(SpecError::invalid(
                    "forwardBody.maxSize",
                    format!(
                        "{} is above {}, the most the gateway buffers",
                        b.max_size,
                        gateway_core::proxy::DEFAULT_BUFFERED_BODY
                    ),
                ));
            }
            Some(b) => Some((b.max_size as usize, b.allow_partial)),
        };
        let protocol = match spec.protocol {
            ExternalAuthProtocol::Grpc => {
                if spec.http.is_some() {
                    return Err(SpecError::invalid("http", "is for protocol HTTP"));
                }
                let allowed = header_names(
                    "grpc.allowedHeaders",
                    &spec.grpc.unwrap_or_default().allowed_headers,
                )?;
                let uris: Vec<String> = match &target {
                    Target::Address(a) => vec![format!("http://{a}")],
                    Target::Endpoints(e) => e.iter().map(|a| format!("http://{a}")).collect(),
                };
                let endpoints = uris
                    .into_iter()
                    .map(|u| {
                        Endpoint::from_shared(u.clone())
                            .map(|e| {
                                e.connect_timeout(timeout)
                                    .tcp_nodelay(true)
                                    .http2_keep_alive_interval(Duration::from_secs(30))
                                    .keep_alive_while_idle(true)
                            })
                            .map_err(|e| SpecError::invalid("backend", format!("{u}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Protocol::Grpc(Grpc {
                    endpoints,
                    channel: OnceLock::new(),
                    allowed,
                })
            }
            ExternalAuthProtocol::Http => {
                if spec.grpc.is_some() {
                    return Err(SpecError::invalid("grpc", "is for protocol GRPC"));
                }
                let http = spec.http.unwrap_or_default();
                let prefix = match http.path.as_deref() {
                    None | Some("") => String::new(),
                    Some(p) => {
                        let valid = p.starts_with('/')
                            && !p.contains(['?', '#'])
                            && !p.split('/').any(|s| s == ".." || s == ".")
                            && p.parse::<http::uri::PathAndQuery>().is_ok();
                        if !valid {
                            return Err(SpecError::invalid(
                                "http.path",
                                format!("{p:?} is not an absolute path without query"),
                            ));
                        }
                        p.trim_end_matches('/').to_owned()
                    }
                };
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                connector.set_nodelay(true);
                Protocol::Http(Box::new(HttpSide {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    prefix,
                    allowed: header_names("http.allowedHeaders", &http.allowed_headers)?,
                    copy_back: header_names(
                        "http.allowedResponseHeaders",
                        &http.allowed_response_headers,
                    )?,
                    next: AtomicUsize::new(0),
                }))
            }
        };
        Ok(ExternalAuthFilter {
            target,
            protocol,
            body,
            timeout,
            fail_open: spec.fail_open,
            status_on_error,
        })
    }

    /// Asks the service about the request, applies the answer, and returns what to do.
    async fn check(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: Option<&Bytes>,
    ) -> FilterAction {
        let body = body.map(|b| match self.body {
            Some((max, _)) if b.len() > max => b.slice(..max),
            _ => b.clone(),
        });
        let late = || Err(format!("no answer within {:?}", self.timeout));
        // The questions are made from the session first: no borrow of it is held while waiting.
        let verdict = match &self.protocol {
            Protocol::Grpc(g) => {
                let question = check_request(session, &g.allowed, body);
                tokio::time::timeout(self.timeout, self.grpc(g, question))
                    .await
                    .unwrap_or_else(|_| late())
            }
            Protocol::Http(h) => match self.http_request(h, session.req_header(), body) {
                Ok((authority, question)) => {
                    tokio::time::timeout(self.timeout, self.http(h, authority, question))
                        .await
                        .unwrap_or_else(|_| late())
                }
                Err(e) => Err(e),
            },
        };
        self.finish(session, ctx, verdict)
    }

    fn finish(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        verdict: Result<Verdict, String>,
    ) -> FilterAction {
        match verdict {
            Ok(Verdict::Allow(changes)) => {
                let req = session.req_header_mut();
                for name in &changes.remove {
                    req.remove_header(name);
                }
                for (name, value, how) in changes.set {
                    put_request(req, name, value, how);
                }
                if !changes.response.is_empty() {
                    ctx.extensions_mut()
                        .get_or_insert_default::<ResponseAdditions>()
                        .0
                        .extend(changes.response);
                }
                FilterAction::Continue
            }
            Ok(Verdict::Deny(response)) => FilterAction::Respond(response),
            Err(error) if self.fail_open => {
                tracing::warn!(filter = ?self, %error, "external authorization failed: failing open");
                FilterAction::Continue
            }
            Err(error) => {
                tracing::warn!(filter = ?self, %error, status = self.status_on_error, "external authorization failed");
                FilterAction::Respond(DirectResponse::text(
                    self.status_on_error,
                    "external authorization failed\n",
                ))
            }
        }
    }

    async fn grpc(&self, grpc: &Grpc, question: auth_pb::CheckRequest) -> Result<Verdict, String> {
        if matches!(&self.target, Target::Endpoints(e) if e.is_empty()) {
            return Err("the service has no endpoint".into());
        }
        let mut call = tonic::Request::new(question);
        call.set_timeout(self.timeout);
        let answer = grpc
            .client()
            .check(call)
            .await
            .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))?
            .into_inner();
        grpc_verdict(answer)
    }

    /// The request to an HTTP service, and the endpoint it goes to.
    fn http_request(
        &self,
        side: &HttpSide,
        req: &RequestHeader,
        body: Option<Bytes>,
    ) -> Result<(String, http::Request<Full<Bytes>>), String> {
        let authority = match &self.target {
            Target::Address(a) => a.clone(),
            Target::Endpoints(e) if e.is_empty() => {
                return Err("the service has no endpoint".into());
            }
            Target::Endpoints(e) => {
                e[side.next.fetch_add(1, Ordering::Relaxed) % e.len()].to_string()
            }
        };
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("http://{authority}{}{path}", side.prefix);
        let body = body.unwrap_or_default();
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .header(http::header::CONTENT_LENGTH, body.len());
        if let Some(host) = request_host(req) {
            builder = builder.header(http::header::HOST, host);
        }
        for (name, value) in req.headers.iter() {
            if (*name == http::header::AUTHORIZATION || side.allowed.contains(name))
                && *name != http::header::HOST
                && *name != http::header::CONTENT_LENGTH
            {
                builder = builder.header(name.clone(), value.clone());
            }
        }
        let question = builder
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        Ok((authority, question))
    }

    async fn http(
        &self,
        side: &HttpSide,
        authority: String,
        question: http::Request<Full<Bytes>>,
    ) -> Result<Verdict, String> {
        let response = side
            .client
            .request(question)
            .await
            .map_err(|e| format!("HTTP {authority}: {e:#}"))?;
        let (parts, body) = response.into_parts();
        if parts.status == http::StatusCode::OK {
            let mut changes = Changes::default();
            for (name, value) in parts.headers.iter() {
                let copy = if side.copy_back.is_empty() {
                    *name != http::header::HOST
                        && *name != http::header::CONTENT_TYPE
                        && !hop_or_framing(name)
                } else {
                    side.copy_back.contains(name)
                };
                if copy {
                    changes
                        .set
                        .push((name.clone(), value.clone(), Append::Overwrite));
                }
            }
            return Ok(Verdict::Allow(changes));
        }
        let body = Limited::new(body, MAX_DENY_BODY)
            .collect()
            .await
            .map_err(|e| format!("deny body: {e}"))?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| !hop_or_framing(n))
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        Ok(Verdict::Deny(DirectResponse {
            status: parts.status.as_u16(),
            headers,
            body,
        }))
    }
}

/// The request's host: its `Host` header, else the URI's authority.
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// Puts one header on the request, as `how` says.
fn put_request(req: &mut RequestHeader, name: HeaderName, value: HeaderValue, how: Append) {
    if name == http::header::HOST || hop_or_framing(&name) {
        tracing::debug!(header = %name, "external authorization may not set this header");
        return;
    }
    let present = req.headers.contains_key(&name);
    // A valid name and a valid value: the calls cannot fail.
    let _ = match how {
        Append::Add => req.append_header(name, value).map(|_| ()),
        Append::IfAbsent if present => Ok(()),
        Append::IfAbsent | Append::Overwrite => req.insert_header(name, value),
        Append::OverwriteIfExists if present => req.insert_header(name, value),
        Append::OverwriteIfExists => Ok(()),
    };
}

/// Puts one header on the response, as `how` says.
fn put_response(resp: &mut ResponseHeader, name: HeaderName, value: HeaderValue, how: Append) {
    if hop_or_framing(&name) {
        return;
    }
    let present = resp.headers.contains_key(&name);
    let _ = match how {
        Append::Add => resp.append_header(name, value).map(|_| ()),
        Append::IfAbsent if present => Ok(()),
        Append::IfAbsent | Append::Overwrite => resp.insert_header(name, value),
        Append::OverwriteIfExists if present => resp.insert_header(name, value),
        Append::OverwriteIfExists => Ok(()),
    };
}

/// An Envoy socket address.
fn peer(inet: Option<&SocketAddr>) -> Option<attribute_context::Peer> {
    let inet = inet?;
    Some(attribute_context::Peer {
        address: Some(core_pb::Address {
            address: Some(core_pb::address::Address::SocketAddress(
                core_pb::SocketAddress {
                    address: inet.ip().to_string(),
                    port_specifier: Some(core_pb::socket_address::PortSpecifier::PortValue(
                        u32::from(inet.port()),
                    )),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    })
}

/// The `CheckRequest` describing the request.
fn check_request(
    session: &Session,
    allowed: &[HeaderName],
    body: Option<Bytes>,
) -> auth_pb::CheckRequest {
    let req = session.req_header();
    let mut headers = std::collections::HashMap::with_capacity(req.headers.keys_len());
    for (name, value) in req.headers.iter() {
        if !allowed.is_empty() && !allowed.contains(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let size = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
        .unwrap_or(-1);
    let (body, raw_body) = match body {
        None => (String::new(), Vec::new()),
        Some(b) => match std::str::from_utf8(&b) {
            Ok(text) => (text.to_owned(), Vec::new()),
            Err(_) => (String::new(), b.to_vec()),
        },
    };
    let http = attribute_context::HttpRequest {
        id: req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        method: req.method.as_str().to_owned(),
        headers,
        path: req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        host: request_host(req).unwrap_or_default().to_owned(),
        scheme: if tls { "https" } else { "http" }.to_owned(),
        query: req.uri.query().unwrap_or_default().to_owned(),
        size,
        protocol: match req.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        }
        .to_owned(),
        body,
        raw_body,
        ..Default::default()
    };
    auth_pb::CheckRequest {
        attributes: Some(auth_pb::AttributeContext {
            source: peer(session.client_addr().and_then(|a| a.as_inet())),
            destination: peer(session.server_addr().and_then(|a| a.as_inet())),
            request: Some(attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

/// A header of an answer, with how to put it.
fn header_option(option: &core_pb::HeaderValueOption) -> Option<(HeaderName, HeaderValue, Append)> {
    let h = option.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    let value = if h.raw_value.is_empty() {
        HeaderValue::from_str(&h.value).ok()?
    } else {
        HeaderValue::from_bytes(&h.raw_value).ok()?
    };
    #[allow(deprecated)]
    let how = match &option.append {
        Some(append) if append.value => Append::Add,
        Some(_) => Append::Overwrite,
        None => {
            match core_pb::header_value_option::HeaderAppendAction::try_from(option.append_action) {
                Ok(core_pb::header_value_option::HeaderAppendAction::AddIfAbsent) => {
                    Append::IfAbsent
                }
                Ok(core_pb::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd) => {
                    Append::Overwrite
                }
                Ok(core_pb::header_value_option::HeaderAppendAction::OverwriteIfExists) => {
                    Append::OverwriteIfExists
                }
                _ => Append::Add,
            }
        }
    };
    Some((name, value, how))
}

/// What a `CheckResponse` decides.
fn grpc_verdict(answer: auth_pb::CheckResponse) -> Result<Verdict, String> {
    let code = answer.status.as_ref().map_or(-1, |s| s.code);
    if code == 0 {
        let mut changes = Changes::default();
        if let Some(auth_pb::check_response::HttpResponse::OkResponse(ok)) = answer.http_response {
            changes.set = ok.headers.iter().filter_map(header_option).collect();
            changes.remove = ok
                .headers_to_remove
                .iter()
                .filter(|n| !n.starts_with(':'))
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .filter(|n| *n != http::header::HOST)
                .collect();
            changes.response = ok
                .response_headers_to_add
                .iter()
                .filter_map(header_option)
                .collect();
        }
        return Ok(Verdict::Allow(changes));
    }
    let denied = match answer.http_response {
        Some(auth_pb::check_response::HttpResponse::DeniedResponse(d)) => d,
        _ => auth_pb::DeniedHttpResponse::default(),
    };
    let status = denied
        .status
        .as_ref()
        .and_then(|s| u16::try_from(s.code).ok())
        .filter(|c| (200..=599).contains(c))
        .unwrap_or(403);
    let headers = denied
        .headers
        .iter()
        .filter_map(header_option)
        .filter(|(n, _, _)| !hop_or_framing(n))
        .filter_map(|(n, v, _)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    Ok(Verdict::Deny(DirectResponse {
        status,
        headers,
        body: Bytes::from(denied.body),
    }))
}

#[async_trait]
impl HttpFilter for ExternalAuthFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if let Some((max, partial)) = self.body {
            ctx.buffer_request_body(if partial {
                gateway_core::proxy::DEFAULT_BUFFERED_BODY
            } else {
                max
            });
            ctx.extensions_mut().get_or_insert_default::<BodyChecks>().0 += 1;
            return Ok(FilterAction::Continue);
        }
        Ok(self.check(session, ctx, None).await)
    }

    async fn request_body(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        if self.body.is_none() || !end_of_stream {
            return Ok(FilterAction::Continue);
        }
        match ctx.extensions_mut().get_mut::<BodyChecks>() {
            Some(BodyChecks(n)) if *n > 0 => *n -= 1,
            _ => return Ok(FilterAction::Continue),
        }
        let whole = body.clone().unwrap_or_default();
        Ok(self.check(session, ctx, Some(&whole)).await)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        if let Some(additions) = ctx.extensions_mut().remove::<ResponseAdditions>() {
            for (name, value, how) in additions.0 {
                put_response(response, name, value, how);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ExternalAuthSpec {
        serde_json::from_value(json).unwrap()
    }

    fn refused(json: serde_json::Value) -> String {
        ExternalAuthFilter::new(spec(json)).unwrap_err().to_string()
    }

    #[test]
    fn settings_are_checked_and_errors_name_the_field() {
        assert!(
            ExternalAuthFilter::new(spec(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "authz.example:9001"}
            })))
            .is_ok()
        );
        assert!(
            ExternalAuthFilter::new(spec(serde_json::json!({
                "protocol": "HTTP", "backend": {"endpoints": []},
                "http": {"path": "/auth/"}, "forwardBody": {"maxSize": 1024}
            })))
            .is_ok()
        );
        assert_eq!(
            refused(serde_json::json!({"protocol": "GRPC", "backend": {}})),
            "backend: set exactly one of address and endpoints"
        );
        assert_eq!(
            refused(serde_json::json!({"protocol": "GRPC", "backend": {"address": "nope"}})),
            "backend.address: \"nope\" is not host:port"
        );
        assert_eq!(
            refused(serde_json::json!({"protocol": "GRPC", "backend": {"endpoints": ["1.2.3.4"]}})),
            "backend.endpoints[0]: \"1.2.3.4\" is not ip:port"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "HTTP", "backend": {"address": "a:1"}, "http": {"path": "auth"}
            })),
            "http.path: \"auth\" is not an absolute path without query"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "a:1"}, "forwardBody": {"maxSize": 70000}
            })),
            "forwardBody.maxSize: 70000 is above 65536, the most the gateway buffers"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "a:1"}, "timeoutMs": 0
            })),
            "timeoutMs: must be above 0"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "a:1"}, "statusOnError": 200
            })),
            "statusOnError: 200 is not a 4xx or 5xx status"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "a:1"}, "http": {}
            })),
            "http: is for protocol HTTP"
        );
        assert_eq!(
            refused(serde_json::json!({
                "protocol": "GRPC", "backend": {"address": "a:1"},
                "grpc": {"allowedHeaders": ["bad header"]}
            })),
            "grpc.allowedHeaders[0]: \"bad header\" is not a header name"
        );
    }

    #[test]
    #[allow(deprecated)]
    fn answers_become_verdicts() {
        use envoy_types::pb::google::protobuf::BoolValue;
        let option = |key: &str, value: &str, append: Option<bool>, action: i32| {
            core_pb::HeaderValueOption {
                header: Some(core_pb::HeaderValue {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                }),
                append: append.map(|value| BoolValue { value }),
                append_action: action,
                ..Default::default()
            }
        };
        let ok = auth_pb::CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code: 0,
                ..Default::default()
            }),
            http_response: Some(auth_pb::check_response::HttpResponse::OkResponse(
                auth_pb::OkHttpResponse {
                    headers: vec![
                        option("x-user", "alice", None, 2),
                        option("x-tag", "a", Some(true), 2),
                        option("x-only", "b", Some(false), 0),
                        option("x-new", "c", None, 1),
                    ],
                    headers_to_remove: vec![":path".into(), "host".into(), "cookie".into()],
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let Ok(Verdict::Allow(changes)) = grpc_verdict(ok) else {
            panic!("an OK status allows")
        };
        let hows: Vec<_> = changes
            .set
            .iter()
            .map(|(n, _, h)| (n.as_str(), *h))
            .collect();
        assert_eq!(
            hows,
            [
                ("x-user", Append::Overwrite),
                ("x-tag", Append::Add),
                ("x-only", Append::Overwrite),
                ("x-new", Append::IfAbsent)
            ]
        );
        assert_eq!(changes.remove, [http::header::COOKIE]);

        let denied = auth_pb::CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let Ok(Verdict::Deny(response)) = grpc_verdict(denied) else {
            panic!("PERMISSION_DENIED denies")
        };
        assert_eq!(response.status, 403, "no denied response: 403");
        assert!(matches!(
            grpc_verdict(auth_pb::CheckResponse::default()),
            Ok(Verdict::Deny(_))
        ));
    }
}
