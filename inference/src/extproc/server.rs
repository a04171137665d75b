//! A standalone endpoint picker: the picker's side of the protocol (see the
//! [module documentation](super)), serving a [`PickPolicy`].
//!
//! [`PickerServer::serve`] accepts HTTP/2 (gRPC) connections and runs one task per `Process`
//! stream. A stream's request phase is buffered until the end of the body (at most
//! [`MAX_BODY`] bytes, else the stream fails with `RESOURCE_EXHAUSTED`), then the policy picks:
//!
//! - a [`Route`] is answered with a `HeadersResponse` (`clear_route_cache`, header mutation
//!   setting [`HEADER_DESTINATION_ENDPOINT`], the policy's headers, and `Content-Length` when
//!   the body changed) carrying the top-level `dynamic_metadata`
//!   `envoy.lb/x-gateway-destination-endpoint`, then the body (the policy's, or the one
//!   received) as streamed `BodyResponse` chunks of at most 62 KiB, the last with
//!   `end_of_stream`, as Envoy's `FULL_DUPLEX_STREAMED` mode expects;
//! - a [`Rejection`] is answered with an `ImmediateResponse` and ends the stream.
//!
//! In the response phase the served endpoint the gateway reports is handed to
//! [`PickPolicy::served`], whose headers are set on the client response; response body chunks
//! are passed back unchanged, trailers are answered empty.
//!
//! Policies: [`SchedulerPolicy`] (the in-process scheduler over scraped metrics) and
//! [`RoundRobinPolicy`] (the conformance test picker).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse,
    body_mutation::Mutation, processing_request::Request, processing_response::Response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service as _;
use tonic::{Status, Streaming};

use super::{
    HEADER_CONFORMANCE_SERVED, HEADER_TEST_SELECTION, LB_NAMESPACE, MAX_BODY, SUBSET_HINT_KEY,
    SUBSET_HINT_NAMESPACE, header_value, lookup, set_header, string_entries,
};
use crate::metrics::Engine;
use crate::objective::Objectives;
use crate::request::{
    self, ApiKind, DroppedReason, HEADER_DESTINATION_ENDPOINT, HEADER_DESTINATION_ENDPOINT_SERVED,
};
use crate::scheduler::{SchedRequest, Scheduler};
use crate::scrape::{self, MetricsStore, ScrapeConfig, ScraperHandle};

/// The size of the body chunks sent back (Envoy's reference picker uses the same bound).
const BODY_CHUNK: usize = 62 * 1024;

/// One request, as the gateway described it.
#[derive(Clone, Debug, Default)]
pub struct PickRequest {
    /// `:method`.
    pub method: String,
    /// `:path` (with the query).
    pub path: String,
    /// Every header that is not a pseudo-header (invalid ones left out).
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The subset hint: the endpoints (`ip:port`, or IPs) the gateway allows; `None` when the
    /// gateway sent none (every endpoint is allowed).
    pub subset: Option<Vec<String>>,
}

impl PickRequest {
    /// Whether `addr` is in the subset hint (always, without one). An entry that is an IP
    /// allows every port of it; an `ip:port` allows that endpoint only.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.subset
            .as_deref()
            .is_none_or(|entries| entry_allows(entries, addr))
    }
}

/// Whether one of `entries` (`ip` or `ip:port`) names `addr`.
fn entry_allows(entries: &[String], addr: SocketAddr) -> bool {
    entries.iter().any(|e| {
        let e = e.trim();
        match e.parse::<SocketAddr>() {
            Ok(a) => a == addr,
            Err(_) => e
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip == addr.ip()),
        }
    })
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The endpoints, primary first, then fallbacks. Must not be empty.
    pub endpoints: Vec<SocketAddr>,
    /// Headers to set on the request sent upstream.
    pub headers: Vec<(String, String)>,
    /// A replacement body, `None` to keep the client's.
    pub body: Option<Bytes>,
}

/// An answer for the client instead of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Bytes,
}

impl Rejection {
    /// The reference picker's rejection for `reason`: its status, the
    /// [`request::HEADER_DROPPED_REASON`] header and a JSON error body in the OpenAI shape.
    pub fn dropped(reason: DroppedReason, message: &str) -> Self {
        let status = reason.status();
        let body = serde_json::json!({
            "error": {"message": message, "type": "invalid_request_error", "code": status}
        });
        Rejection {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    request::HEADER_DROPPED_REASON.into(),
                    reason.as_str().into(),
                ),
            ],
            body: Bytes::from(body.to_string()),
        }
    }
}

/// What a policy decides for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickOutcome {
    /// Send it there.
    Route(Route),
    /// Answer the client with this.
    Reject(Rejection),
}

/// How a [`PickerServer`] chooses. One value serves every stream concurrently.
#[gateway_core::async_trait]
pub trait PickPolicy: Send + Sync + 'static {
    /// Chooses for `request`, after its whole body arrived.
    async fn pick(&self, request: &PickRequest) -> PickOutcome;

    /// The headers to set on the client response once the gateway reported the endpoint that
    /// `served` (`None`: it reported none) for a request routed to `picked`. Default: none.
    fn served(
        &self,
        request: &PickRequest,
        picked: &[SocketAddr],
        served: Option<&str>,
    ) -> Vec<(String, String)> {
        let _ = (request, picked, served);
        Vec::new()
    }
}

/// The endpoint picker service for `policy`.
pub struct PickerServer<P> {
    policy: Arc<P>,
}

impl<P> Clone for PickerServer<P> {
    fn clone(&self) -> Self {
        PickerServer {
            policy: self.policy.clone(),
        }
    }
}

impl<P: PickPolicy> PickerServer<P> {
    /// A server for `policy`.
    pub fn new(policy: Arc<P>) -> Self {
        PickerServer { policy }
    }

    /// The gRPC service, for a tonic router or any tower-based server.
    pub fn service(&self) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(self.clone())
            .max_decoding_message_size(MAX_BODY + 64 * 1024)
            .max_encoding_message_size(MAX_BODY + 64 * 1024)
    }

    /// Serves `listener` (gRPC over HTTP/2 with prior knowledge) until the task is dropped or
    /// accepting fails repeatedly; one task per connection.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let service = self.service();
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "endpoint picker: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let mut service = service.clone();
                    async move { service.call(req).await }
                });
                if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "endpoint picker: connection ended");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl<P: PickPolicy> ExternalProcessor for PickerServer<P> {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let inbound = request.into_inner();
        let policy = self.policy.clone();
        tokio::spawn(async move {
            if let Err(status) = run(&*policy, inbound, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

type Outbound = mpsc::Sender<Result<ProcessingResponse, Status>>;

async fn send(tx: &Outbound, response: Response, metadata: Option<Struct>) -> Result<(), Status> {
    tx.send(Ok(ProcessingResponse {
        response: Some(response),
        dynamic_metadata: metadata,
        ..Default::default()
    }))
    .await
    .map_err(|_| Status::cancelled("the gateway went away"))
}

/// One stream.
async fn run<P: PickPolicy + ?Sized>(
    policy: &P,
    mut inbound: Streaming<ProcessingRequest>,
    tx: &Outbound,
) -> Result<(), Status> {
    let mut request = PickRequest::default();
    let mut body = BytesMut::new();
    let mut picked: Vec<SocketAddr> = Vec::new();
    while let Some(message) = inbound.message().await? {
        let metadata = message
            .metadata_context
            .map(|m| m.filter_metadata)
            .unwrap_or_default();
        match message.request {
            Some(Request::RequestHeaders(h)) => {
                for header in h.headers.map(|m| m.headers).unwrap_or_default() {
                    let value = header_value(&header);
                    match header.key.as_str() {
                        ":method" => request.method = String::from_utf8_lossy(value).into_owned(),
                        ":path" => request.path = String::from_utf8_lossy(value).into_owned(),
                        k if k.starts_with(':') => {}
                        k => {
                            if let (Ok(name), Ok(value)) = (
                                http::HeaderName::from_bytes(k.as_bytes()),
                                http::HeaderValue::from_bytes(value),
                            ) {
                                request.headers.append(name, value);
                            }
                        }
                    }
                }
                request.subset = lookup(&metadata, SUBSET_HINT_NAMESPACE, SUBSET_HINT_KEY)
                    .map(|v| string_entries(v).unwrap_or_default());
                if h.end_of_stream && !answer(policy, &mut request, tx, &mut picked).await? {
                    return Ok(());
                }
            }
            Some(Request::RequestBody(b)) => {
                if body.len() + b.body.len() > MAX_BODY {
                    return Err(Status::resource_exhausted(format!(
                        "the request body is over {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&b.body);
                if b.end_of_stream {
                    request.body = std::mem::take(&mut body).freeze();
                    if !answer(policy, &mut request, tx, &mut picked).await? {
                        return Ok(());
                    }
                }
            }
            Some(Request::ResponseHeaders(_)) => {
                let served = lookup(&metadata, LB_NAMESPACE, HEADER_DESTINATION_ENDPOINT_SERVED)
                    .and_then(|v| match &v.kind {
                        Some(Kind::StringValue(s)) => Some(s.as_str()),
                        _ => None,
                    });
                let headers = policy.served(&request, &picked, served);
                let mutation = HeaderMutation {
                    set_headers: headers
                        .iter()
                        .map(|(k, v)| set_header(k, v.as_str()))
                        .collect(),
                    ..Default::default()
                };
                send(
                    tx,
                    Response::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse {
                            header_mutation: Some(mutation),
                            ..Default::default()
                        }),
                    }),
                    None,
                )
                .await?;
            }
            Some(Request::ResponseBody(b)) => {
                send(
                    tx,
                    Response::ResponseBody(streamed(b.body, b.end_of_stream)),
                    None,
                )
                .await?;
            }
            Some(Request::RequestTrailers(_)) => {
                send(
                    tx,
                    Response::RequestTrailers(TrailersResponse::default()),
                    None,
                )
                .await?;
            }
            Some(Request::ResponseTrailers(_)) => {
                send(
                    tx,
                    Response::ResponseTrailers(TrailersResponse::default()),
                    None,
                )
                .await?;
            }
            None => {}
        }
    }
    Ok(())
}

/// A body answer carrying `chunk`.
fn streamed(chunk: Vec<u8>, end_of_stream: bool) -> BodyResponse {
    BodyResponse {
        response: Some(CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                    body: chunk,
                    end_of_stream,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }
}

/// Picks and answers the request phase. `false` when the stream is over (rejected).
async fn answer<P: PickPolicy + ?Sized>(
    policy: &P,
    request: &mut PickRequest,
    tx: &Outbound,
    picked: &mut Vec<SocketAddr>,
) -> Result<bool, Status> {
    match policy.pick(request).await {
        PickOutcome::Reject(r) => {
            let response = ImmediateResponse {
                status: Some(HttpStatus {
                    code: i32::from(r.status),
                }),
                headers: Some(HeaderMutation {
                    set_headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| set_header(k, v.as_str()))
                        .collect(),
                    ..Default::default()
                }),
                body: r.body.to_vec(),
                details: "endpoint picker rejection".into(),
                ..Default::default()
            };
            send(tx, Response::ImmediateResponse(response), None).await?;
            Ok(false)
        }
        PickOutcome::Route(route) => {
            if route.endpoints.is_empty() {
                return Err(Status::internal("the policy chose no endpoint"));
            }
            let destination = route
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut set: Vec<HeaderValueOption> = vec![set_header(
                HEADER_DESTINATION_ENDPOINT,
                destination.as_str(),
            )];
            set.extend(route.headers.iter().map(|(k, v)| set_header(k, v.as_str())));
            let body = match route.body {
                Some(b) => {
                    set.push(set_header("content-length", b.len().to_string()));
                    b
                }
                None => request.body.clone(),
            };
            let metadata = Struct {
                fields: [(
                    LB_NAMESPACE.to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(super::namespaced(
                            HEADER_DESTINATION_ENDPOINT,
                            super::string_value(destination),
                        ))),
                    },
                )]
                .into_iter()
                .collect(),
            };
            send(
                tx,
                Response::RequestHeaders(HeadersResponse {
                    response: Some(CommonResponse {
                        clear_route_cache: true,
                        header_mutation: Some(HeaderMutation {
                            set_headers: set,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                }),
                Some(metadata),
            )
            .await?;
            let mut chunks = body.chunks(BODY_CHUNK).peekable();
            if chunks.peek().is_none() {
                send(tx, Response::RequestBody(streamed(Vec::new(), true)), None).await?;
            }
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                send(
                    tx,
                    Response::RequestBody(streamed(chunk.to_vec(), last)),
                    None,
                )
                .await?;
            }
            *picked = route.endpoints;
            Ok(true)
        }
    }
}

/// The in-process scheduler as a picker: the reference default profile over the endpoints'
/// scraped metrics (see [`crate::scheduler`]), with the reference admission (a sheddable
/// request, priority < 0 from the objective header, is refused with 429
/// `rejected-saturated` while the endpoints are saturated).
///
/// Requests on the OpenAI paths are parsed (400 when malformed); other paths are scheduled
/// without a model or prompt. Candidates are the endpoints the subset hint allows; none gives
/// 503 `rejected-no-endpoints`. The answer lists every candidate in the scheduler's order
/// (primary first, then fallbacks).
pub struct SchedulerPolicy {
    scheduler: Scheduler,
    store: Arc<MetricsStore>,
    endpoints: Vec<SocketAddr>,
    objectives: Objectives,
    scraper: Option<ScraperHandle>,
}

impl std::fmt::Debug for SchedulerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerPolicy")
            .field("endpoints", &self.endpoints)
            .field("scraping", &self.scraper.is_some())
            .finish()
    }
}

impl SchedulerPolicy {
    /// A policy over `endpoints` (with their engines, for the metric names) and the
    /// objectives `(name, priority)` requests may name in
    /// [`request::HEADER_OBJECTIVE`]. Nothing is scraped until [`Self::start_scraping`].
    pub fn new(endpoints: Vec<(SocketAddr, Engine)>, objectives: &[(String, i32)]) -> Self {
        let store = Arc::new(MetricsStore::new());
        store.set_endpoints(endpoints.iter().copied());
        let specs: Vec<(String, crate::crd::llmd::InferenceObjectiveSpec)> = objectives
            .iter()
            .map(|(name, priority)| {
                (
                    name.clone(),
                    crate::crd::llmd::InferenceObjectiveSpec {
                        priority: Some(*priority),
                        pool_ref: crate::crd::PoolObjectReference::new("pool"),
                    },
                )
            })
            .collect();
        SchedulerPolicy {
            scheduler: Scheduler::reference_default(),
            store,
            endpoints: endpoints.into_iter().map(|(a, _)| a).collect(),
            objectives: Objectives::new(specs.iter().map(|(n, s)| (n.as_str(), s))),
            scraper: None,
        }
    }

    /// Starts scraping every endpoint's metrics with `config` (on the current Tokio runtime);
    /// stops when the policy is dropped.
    pub fn start_scraping(&mut self, config: ScrapeConfig) {
        self.scraper = Some(scrape::spawn(self.store.clone(), config));
    }

    /// The metrics the scheduler reads.
    pub fn store(&self) -> &Arc<MetricsStore> {
        &self.store
    }
}

#[gateway_core::async_trait]
impl PickPolicy for SchedulerPolicy {
    async fn pick(&self, request: &PickRequest) -> PickOutcome {
        let parsed = match ApiKind::from_path(&request.path) {
            Some(kind) => match request::parse_request(kind, &request.body) {
                Ok(p) => Some(p),
                Err(e) => {
                    return PickOutcome::Reject(Rejection {
                        status: 400,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: Bytes::from(
                            serde_json::json!({"error": {"message": e.to_string(), "type": "invalid_request_error", "code": 400}})
                                .to_string(),
                        ),
                    });
                }
            },
            None => None,
        };
        let now = Instant::now();
        let candidates: Vec<_> = self
            .endpoints
            .iter()
            .filter(|&&a| request.allows(a))
            .map(|&a| self.store.candidate(a, now))
            .collect();
        let priority = self
            .objectives
            .priority(request::objective_name(&request.headers));
        let (model, prompt) = parsed
            .as_ref()
            .map_or(("", ""), |p| (p.model.as_str(), p.prompt.as_str()));
        let req = SchedRequest::new(model, prompt, priority)
            .with_adapter(crate::scheduler::lora_adapter(model, &candidates));
        match self.scheduler.schedule(&req, &candidates, &mut rand::rng()) {
            Ok(order) => PickOutcome::Route(Route {
                endpoints: order.into_iter().map(|i| candidates[i].addr).collect(),
                headers: Vec::new(),
                body: None,
            }),
            Err(reason) => {
                tracing::debug!(
                    reason = reason.as_str(),
                    priority,
                    "endpoint picker: request refused"
                );
                PickOutcome::Reject(Rejection::dropped(
                    reason,
                    "no endpoint can take the request",
                ))
            }
        }
    }
}

/// The conformance test picker (the upstream "lwepp"): round robin over the endpoints.
///
/// The request header [`HEADER_TEST_SELECTION`] (`ip[,ip...]`, IPs or `ip:port`) restricts the
/// choice; without it, the subset hint does. An IP entry allows every port of it, an
/// `ip:port` entry that endpoint only (upstream matches IPs only; with one IP per Pod the two
/// agree). When the restriction leaves nothing, the answer is 503 `rejected-no-endpoints`. The
/// upstream request gets `X-Echo-Set-Header: x-conformance-test-served-endpoint:<picked>`
/// (for echo backends), and in the response phase the client response gets
/// [`HEADER_CONFORMANCE_SERVED`] set to the served endpoint the gateway reported (or a `fail:`
/// text when it reported none) and `x-went-into-resp-headers: true`.
#[derive(Debug)]
pub struct RoundRobinPolicy {
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl RoundRobinPolicy {
    /// Round robin over `endpoints`.
    pub fn new(endpoints: Vec<SocketAddr>) -> Self {
        RoundRobinPolicy {
            endpoints,
            next: AtomicUsize::new(0),
        }
    }
}

#[gateway_core::async_trait]
impl PickPolicy for RoundRobinPolicy {
    async fn pick(&self, request: &PickRequest) -> PickOutcome {
        let selection: Option<Vec<String>> = request
            .headers
            .get(HEADER_TEST_SELECTION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(|e| e.trim().to_owned()).collect());
        let candidates: Vec<SocketAddr> = self
            .endpoints
            .iter()
            .copied()
            .filter(|&a| match &selection {
                Some(entries) => entry_allows(entries, a),
                None => request.allows(a),
            })
            .collect();
        if candidates.is_empty() {
            return PickOutcome::Reject(Rejection::dropped(
                DroppedReason::NoEndpoints,
                "no endpoint is eligible",
            ));
        }
        let picked = candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()];
        PickOutcome::Route(Route {
            endpoints: vec![picked],
            headers: vec![(
                "x-echo-set-header".into(),
                format!("{HEADER_CONFORMANCE_SERVED}:{picked}"),
            )],
            body: None,
        })
    }

    fn served(
        &self,
        _request: &PickRequest,
        _picked: &[SocketAddr],
        served: Option<&str>,
    ) -> Vec<(String, String)> {
        vec![
            (
                HEADER_CONFORMANCE_SERVED.into(),
                served
                    .unwrap_or("fail: missing destination endpoint served metadata")
                    .to_owned(),
            ),
            ("x-went-into-resp-headers".into(), "true".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_match_ips_or_exact_endpoints() {
        let entries = vec!["10.0.0.1".to_owned(), "10.0.0.2:8000".to_owned()];
        assert!(entry_allows(&entries, addr("10.0.0.1:9")));
        assert!(entry_allows(&entries, addr("10.0.0.2:8000")));
        assert!(!entry_allows(&entries, addr("10.0.0.2:8002")));
        assert!(entry_allows(
            &["[fd00::1]".to_owned()],
            addr("[fd00::1]:80")
        ));
        let request = PickRequest::default();
        assert!(request.allows(addr("10.9.9.9:1")));
        let request = PickRequest {
            subset: Some(Vec::new()),
            ..Default::default()
        };
        assert!(!request.allows(addr("10.9.9.9:1")));
    }

    #[tokio::test]
    async fn round_robin_follows_the_selection_header_then_the_subset() {
        let policy = RoundRobinPolicy::new(vec![
            addr("10.0.0.1:80"),
            addr("10.0.0.2:80"),
            addr("10.0.0.3:80"),
        ]);
        let mut request = PickRequest {
            subset: Some(vec!["10.0.0.3:80".into()]),
            ..Default::default()
        };
        for _ in 0..3 {
            let PickOutcome::Route(r) = policy.pick(&request).await else {
                panic!("rejected")
            };
            assert_eq!(r.endpoints, vec![addr("10.0.0.3:80")]);
        }
        request
            .headers
            .insert(HEADER_TEST_SELECTION, "10.0.0.1, 10.0.0.2".parse().unwrap());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let PickOutcome::Route(r) = policy.pick(&request).await else {
                panic!("rejected")
            };
            seen.insert(r.endpoints[0]);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]
        );
        request
            .headers
            .insert(HEADER_TEST_SELECTION, "10.0.0.9".parse().unwrap());
        let PickOutcome::Reject(r) = policy.pick(&request).await else {
            panic!("routed")
        };
        assert_eq!(r.status, 503);
    }

    #[tokio::test]
    async fn scheduler_policy_refuses_an_empty_subset_and_orders_the_rest() {
        let policy = SchedulerPolicy::new(
            vec![
                (addr("10.0.0.1:80"), Engine::Vllm),
                (addr("10.0.0.2:80"), Engine::Vllm),
            ],
            &[],
        );
        let mut request = PickRequest {
            path: "/v1/completions".into(),
            body: Bytes::from_static(br#"{"model":"m","prompt":"hi"}"#),
            subset: Some(vec!["10.0.0.2:80".into()]),
            ..Default::default()
        };
        let PickOutcome::Route(r) = policy.pick(&request).await else {
            panic!("rejected")
        };
        assert_eq!(r.endpoints, vec![addr("10.0.0.2:80")]);
        request.subset = Some(Vec::new());
        let PickOutcome::Reject(r) = policy.pick(&request).await else {
            panic!("routed")
        };
        assert_eq!(r.status, 503);
        request.subset = None;
        request.body = Bytes::from_static(b"not json");
        let PickOutcome::Reject(r) = policy.pick(&request).await else {
            panic!("routed")
        };
        assert_eq!(r.status, 400);
    }
}
