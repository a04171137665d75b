//! The gateway's side of the endpoint picker protocol: asks an external picker where a request
//! goes (see the [module documentation](super) for the messages).
//!
//! A [`PickerClient`] is made per pool runtime when a configuration names the picker, and kept
//! across configuration swaps while the picker's addresses stay the same. Its tonic channel is
//! made on the first request (it needs the runtime), connects lazily, reconnects by itself and
//! multiplexes every request's stream over one HTTP/2 connection per picker address (several
//! addresses are balanced). [`PickerClient::pick`] opens one `Process` stream per request; the
//! [`Exchange`] it returns keeps that stream open for the response phase
//! ([`Exchange::served`]).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, CommonResponse, HeaderMutation, HttpBody, HttpHeaders, ProcessingRequest,
    ProcessingResponse, body_mutation::Mutation, common_response::ResponseStatus,
    processing_request::Request, processing_response::Response,
};
use envoy_types::pb::google::protobuf::value::Kind;
use http::{HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use super::{
    ExtProcConfig, LB_NAMESPACE, MAX_BODY, SUBSET_HINT_KEY, SUBSET_HINT_NAMESPACE, header_map,
    header_value, list_value, namespaced, string_entries, string_value,
};
use crate::request::{HEADER_DESTINATION_ENDPOINT, HEADER_DESTINATION_ENDPOINT_SERVED};

/// Why the picker gave no usable answer; the pool's failure mode decides what happens then.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The stream could not be opened or failed (picker unreachable, gRPC error).
    #[error("endpoint picker unavailable: {0}")]
    Unavailable(#[from] tonic::Status),
    /// The picker did not send its next message in time.
    #[error("endpoint picker timed out after {0:?}")]
    Timeout(Duration),
    /// The picker closed the stream before it answered.
    #[error("endpoint picker closed the stream without an answer")]
    Closed,
    /// The answer is unusable (no destination, an address that is not an `ip:port`, one that is
    /// not an endpoint of the pool, a body over [`MAX_BODY`], a message out of place).
    #[error("endpoint picker answer: {0}")]
    BadAnswer(String),
}

/// The external picker of one pool.
pub struct PickerClient {
    addresses: Vec<SocketAddr>,
    endpoints: Vec<Endpoint>,
    channel: OnceLock<Channel>,
    config: ExtProcConfig,
}

impl std::fmt::Debug for PickerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickerClient")
            .field("addresses", &self.addresses)
            .field("config", &self.config)
            .finish()
    }
}

/// What the gateway sends for one request.
#[derive(Debug)]
pub struct PickInput<'a> {
    /// The request's method, path, `Host` and headers, as the client sent them.
    pub request: &'a http::request::Parts,
    /// The whole request body.
    pub body: &'a Bytes,
    /// The endpoints the picker may choose from (the subset hint).
    pub eligible: &'a [SocketAddr],
}

/// The picker's answer.
#[derive(Debug)]
pub enum Answer {
    /// Send the request to `endpoints`.
    Route(Box<Route>),
    /// Answer the client with this response (`ImmediateResponse`), as is.
    Immediate(Immediate),
}

/// Where the picker sends a request, and what it changed.
#[derive(Debug)]
pub struct Route {
    /// The endpoints in order: the first is the primary, the rest are retry fallbacks. Never
    /// empty.
    pub endpoints: Vec<SocketAddr>,
    /// Headers to set on the upstream request (pseudo-headers left out).
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove from the upstream request.
    pub remove_headers: Vec<HeaderName>,
    /// The body to send upstream when the picker replaced it; `None`: the body sent is kept.
    pub body: Option<Bytes>,
    /// The open stream, for the response phase.
    pub exchange: Exchange,
}

/// A response the picker wants sent to the client instead of proxying.
#[derive(Debug)]
pub struct Immediate {
    /// The status (an out-of-range code reads as 500).
    pub status: u16,
    /// Its headers (pseudo-headers and invalid ones left out).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Bytes,
    /// The picker's `details`, for logs.
    pub details: String,
}

/// The header changes the picker asks for in the response phase.
#[derive(Debug, Default)]
pub struct HeaderChanges {
    /// Headers to set on the client response.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove from it.
    pub remove: Vec<HeaderName>,
}

/// One request's open `Process` stream, after the pick.
pub struct Exchange {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: Streaming<ProcessingResponse>,
    timeout: Duration,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PickerClient {
    /// A client of the picker at `addresses` (one or more `ip:port`, balanced). Nothing is
    /// connected until the first pick.
    pub fn new(addresses: &[SocketAddr], config: ExtProcConfig) -> Result<Self, PickError> {
        if addresses.is_empty() {
            return Err(PickError::BadAnswer("no picker address".into()));
        }
        let endpoints = addresses
            .iter()
            .map(|a| {
                Endpoint::from_shared(format!("http://{a}"))
                    .map(|e| {
                        e.connect_timeout(config.message_timeout)
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(30))
                            .keep_alive_while_idle(true)
                    })
                    .map_err(|e| PickError::BadAnswer(format!("{a}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PickerClient {
            addresses: addresses.to_vec(),
            endpoints,
            channel: OnceLock::new(),
            config,
        })
    }

    /// The picker's addresses.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The timeouts.
    pub fn config(&self) -> ExtProcConfig {
        self.config
    }

    fn client(&self) -> ExternalProcessorClient<Channel> {
        let channel = self.channel.get_or_init(|| {
            if self.endpoints.len() == 1 {
                self.endpoints[0].connect_lazy()
            } else {
                Channel::balance_list(self.endpoints.clone().into_iter())
            }
        });
        ExternalProcessorClient::new(channel.clone())
    }

    /// Opens a stream, sends the request headers and the whole body, and reads the answer.
    /// Each wait is bounded by [`ExtProcConfig::message_timeout`]. The endpoints of a
    /// [`Route`] are parsed but not checked against the pool (the caller does).
    pub async fn pick(&self, input: PickInput<'_>) -> Result<Answer, PickError> {
        let timeout = self.config.message_timeout;
        let (tx, requests) = mpsc::channel(4);
        let eligible = list_value(input.eligible.iter().map(ToString::to_string));
        let metadata = Metadata {
            filter_metadata: [(
                SUBSET_HINT_NAMESPACE.to_owned(),
                namespaced(SUBSET_HINT_KEY, eligible),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let headers = request_headers(input.request);
        // Both messages are queued before the call: a picker that sends its response headers
        // only with its first message (grpc-go does) answers after the end of the body.
        let messages = [
            ProcessingRequest {
                request: Some(Request::RequestHeaders(HttpHeaders {
                    headers: Some(headers),
                    end_of_stream: false,
                    ..Default::default()
                })),
                metadata_context: Some(metadata),
                ..Default::default()
            },
            ProcessingRequest {
                request: Some(Request::RequestBody(HttpBody {
                    body: input.body.to_vec(),
                    end_of_stream: true,
                    ..Default::default()
                })),
                ..Default::default()
            },
        ];
        for message in messages {
            if tx.try_send(message).is_err() {
                return Err(PickError::Closed);
            }
        }
        let mut client = self.client();
        let call = client.process(ReceiverStream::new(requests));
        let mut rx = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| PickError::Timeout(timeout))??
            .into_inner();
        let mut answer = Reading::default();
        loop {
            let message = tokio::time::timeout(timeout, rx.message())
                .await
                .map_err(|_| PickError::Timeout(timeout))??;
            let Some(message) = message else {
                // Closed cleanly: what was said so far stands if it named a destination.
                break;
            };
            if let Some(immediate) = answer.read(message)? {
                return Ok(Answer::Immediate(immediate));
            }
            if answer.headers_done && answer.body_done {
                break;
            }
        }
        let endpoints = answer.endpoints()?;
        Ok(Answer::Route(Box::new(Route {
            endpoints,
            set_headers: answer.set_headers,
            remove_headers: answer.remove_headers,
            body: answer.body.map(BytesMut::freeze),
            exchange: Exchange {
                tx,
                rx,
                timeout: self.config.response_timeout,
            },
        })))
    }
}

/// The request's headers as Envoy sends them: the pseudo-headers first, then every header.
fn request_headers(
    request: &http::request::Parts,
) -> envoy_types::pb::envoy::config::core::v3::HeaderMap {
    let path = request
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let authority = request
        .headers
        .get(http::header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| request.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    let scheme = request.uri.scheme_str().unwrap_or("http");
    let pseudo = [
        (":method", request.method.as_str().as_bytes()),
        (":path", path.as_bytes()),
        (":authority", authority),
        (":scheme", scheme.as_bytes()),
    ];
    header_map(
        pseudo.into_iter().chain(
            request
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        ),
    )
}

/// The answer as it comes in.
#[derive(Default)]
struct Reading {
    headers_done: bool,
    body_done: bool,
    header_destination: Option<String>,
    metadata_destination: Option<Vec<String>>,
    set_headers: Vec<(HeaderName, HeaderValue)>,
    remove_headers: Vec<HeaderName>,
    body: Option<BytesMut>,
}

impl Reading {
    /// Takes in one message; an `ImmediateResponse` ends the reading.
    fn read(&mut self, message: ProcessingResponse) -> Result<Option<Immediate>, PickError> {
        if let Some(metadata) = &message.dynamic_metadata
            && let Some(lb) = metadata.fields.get(LB_NAMESPACE)
            && let Some(Kind::StructValue(lb)) = &lb.kind
            && let Some(value) = lb.fields.get(HEADER_DESTINATION_ENDPOINT)
        {
            self.metadata_destination = Some(string_entries(value).ok_or_else(|| {
                PickError::BadAnswer("the destination metadata is not a string or list".into())
            })?);
        }
        match message.response {
            Some(Response::ImmediateResponse(i)) => {
                let status = i
                    .status
                    .and_then(|s| u16::try_from(s.code).ok())
                    .filter(|c| (200..=599).contains(c))
                    .unwrap_or(500);
                let mut headers = Vec::new();
                if let Some(m) = &i.headers {
                    for option in &m.set_headers {
                        if let Some(h) = &option.header
                            && !h.key.starts_with(':')
                            && HeaderName::from_bytes(h.key.as_bytes()).is_ok()
                            && let Ok(v) = std::str::from_utf8(header_value(h))
                            && HeaderValue::from_str(v).is_ok()
                        {
                            headers.push((h.key.to_ascii_lowercase(), v.to_owned()));
                        }
                    }
                }
                return Ok(Some(Immediate {
                    status,
                    headers,
                    body: Bytes::from(i.body),
                    details: i.details,
                }));
            }
            Some(Response::RequestHeaders(h)) => {
                self.headers_done = true;
                if let Some(common) = h.response {
                    let replace = common.status == ResponseStatus::ContinueAndReplace as i32;
                    self.common(common, replace)?;
                }
            }
            Some(Response::RequestBody(b)) => {
                match b.response {
                    Some(common) => self.common(common, true)?,
                    None => self.body_done = true,
                }
                if !self.headers_done {
                    // Answers come headers first; a body answer before them means the
                    // headers were left as they are.
                    self.headers_done = true;
                }
            }
            Some(Response::RequestTrailers(_)) => {}
            Some(_) => {
                return Err(PickError::BadAnswer(
                    "a response-phase message before the pick".into(),
                ));
            }
            None => {}
        }
        Ok(None)
    }

    /// A `CommonResponse`: header mutation, and the body when `body` (a body answer, or a
    /// headers answer with `CONTINUE_AND_REPLACE`).
    fn common(&mut self, common: CommonResponse, body: bool) -> Result<(), PickError> {
        if let Some(mutation) = common.header_mutation {
            self.mutation(mutation);
        }
        if !body {
            return Ok(());
        }
        match common.body_mutation {
            None | Some(BodyMutation { mutation: None }) => self.body_done = true,
            Some(BodyMutation {
                mutation: Some(mutation),
            }) => match mutation {
                Mutation::Body(b) => {
                    self.body = Some(BytesMut::from(&b[..]));
                    self.body_done = true;
                }
                Mutation::ClearBody(clear) => {
                    if clear {
                        self.body = Some(BytesMut::new());
                    }
                    self.body_done = true;
                }
                Mutation::StreamedResponse(s) => {
                    let body = self.body.get_or_insert_with(BytesMut::new);
                    if body.len() + s.body.len() > MAX_BODY {
                        return Err(PickError::BadAnswer(format!(
                            "the body is over {MAX_BODY} bytes"
                        )));
                    }
                    body.extend_from_slice(&s.body);
                    if s.end_of_stream || s.end_of_stream_without_message {
                        self.body_done = true;
                    }
                }
            },
        }
        Ok(())
    }

    fn mutation(&mut self, mutation: HeaderMutation) {
        for option in mutation.set_headers {
            let Some(h) = option.header else { continue };
            if h.key.starts_with(':') {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.key.as_bytes()),
                HeaderValue::from_bytes(header_value(&h)),
            ) else {
                tracing::debug!(header = %h.key, "endpoint picker: invalid header left out");
                continue;
            };
            if name == HEADER_DESTINATION_ENDPOINT {
                self.header_destination = value.to_str().ok().map(str::to_owned);
            }
            self.set_headers.push((name, value));
        }
        for key in mutation.remove_headers {
            if let Ok(name) = HeaderName::from_bytes(key.as_bytes())
                && !key.starts_with(':')
            {
                self.remove_headers.push(name);
            }
        }
    }

    /// The destination: the metadata's list, else the header's. When both are given and
    /// disagree the metadata wins (and it is logged).
    fn endpoints(&self) -> Result<Vec<SocketAddr>, PickError> {
        let header = self.header_destination.as_deref().map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        let entries = match (&self.metadata_destination, header) {
            (Some(m), Some(h)) => {
                if *m != h {
                    tracing::warn!(metadata = ?m, header = ?h, "endpoint picker: the destination header and metadata disagree; the metadata is used");
                }
                m.clone()
            }
            (Some(m), None) => m.clone(),
            (None, Some(h)) => h,
            (None, None) if !self.headers_done => return Err(PickError::Closed),
            (None, None) => {
                return Err(PickError::BadAnswer("no destination endpoint".into()));
            }
        };
        if entries.is_empty() {
            return Err(PickError::BadAnswer("an empty destination".into()));
        }
        super::parse_endpoint_list(&entries).ok_or_else(|| {
            PickError::BadAnswer(format!("a destination that is not ip:port: {entries:?}"))
        })
    }
}

impl Exchange {
    /// Tells the picker which endpoint served (`served`) with the response's status and
    /// headers, and returns the header changes it asks for on the client response. Waits at
    /// most [`ExtProcConfig::response_timeout`]. The stream is closed afterwards; response
    /// bodies are not sent to the picker.
    pub async fn served(
        mut self,
        served: SocketAddr,
        status: u16,
        headers: &http::HeaderMap,
    ) -> Result<HeaderChanges, PickError> {
        let status = status.to_string();
        let map = header_map(
            std::iter::once((":status", status.as_bytes()))
                .chain(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
        );
        let metadata = Metadata {
            filter_metadata: [(
                LB_NAMESPACE.to_owned(),
                namespaced(
                    HEADER_DESTINATION_ENDPOINT_SERVED,
                    string_value(served.to_string()),
                ),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        self.tx
            .try_send(ProcessingRequest {
                request: Some(Request::ResponseHeaders(HttpHeaders {
                    headers: Some(map),
                    end_of_stream: false,
                    ..Default::default()
                })),
                metadata_context: Some(metadata),
                ..Default::default()
            })
            .map_err(|_| PickError::Closed)?;
        let timeout = self.timeout;
        let read = async {
            loop {
                match self.rx.message().await? {
                    None => return Err(PickError::Closed),
                    Some(ProcessingResponse {
                        response: Some(Response::ResponseHeaders(h)),
                        ..
                    }) => {
                        let mut reading = Reading::default();
                        if let Some(m) = h.response.and_then(|c| c.header_mutation) {
                            reading.mutation(m);
                        }
                        return Ok(HeaderChanges {
                            set: reading.set_headers,
                            remove: reading.remove_headers,
                        });
                    }
                    Some(ProcessingResponse {
                        response: Some(Response::ImmediateResponse(_)),
                        ..
                    }) => {
                        return Err(PickError::BadAnswer(
                            "an immediate response after the response started".into(),
                        ));
                    }
                    // Late request-phase messages (body chunks after the pick) are skipped.
                    Some(_) => {}
                }
            }
        };
        let result = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| PickError::Timeout(timeout))?;
        // Half-close first: the picker sees the end of the stream, not a reset.
        drop(self.tx);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::ext_proc::v3::{BodyResponse, HeadersResponse};
    use envoy_types::pb::google::protobuf::Struct;

    fn headers_answer(header: Option<&str>, metadata: Option<&str>) -> ProcessingResponse {
        let mut mutation = HeaderMutation::default();
        if let Some(h) = header {
            mutation
                .set_headers
                .push(super::super::set_header(HEADER_DESTINATION_ENDPOINT, h));
        }
        ProcessingResponse {
            response: Some(Response::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse {
                    header_mutation: Some(mutation),
                    ..Default::default()
                }),
            })),
            dynamic_metadata: metadata.map(|m| Struct {
                fields: [(
                    LB_NAMESPACE.to_owned(),
                    envoy_types::pb::google::protobuf::Value {
                        kind: Some(Kind::StructValue(namespaced(
                            HEADER_DESTINATION_ENDPOINT,
                            string_value(m),
                        ))),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        }
    }

    fn body_answer(chunk: &[u8], end: bool) -> ProcessingResponse {
        ProcessingResponse {
            response: Some(Response::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(BodyMutation {
                        mutation: Some(Mutation::StreamedResponse(
                            envoy_types::pb::envoy::service::ext_proc::v3::StreamedBodyResponse {
                                body: chunk.to_vec(),
                                end_of_stream: end,
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_wins_over_a_disagreeing_header() {
        let mut r = Reading::default();
        r.read(headers_answer(
            Some("10.0.0.1:80"),
            Some("10.0.0.2:80,10.0.0.3:80"),
        ))
        .unwrap();
        assert_eq!(
            r.endpoints().unwrap(),
            vec![
                "10.0.0.2:80".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:80".parse().unwrap()
            ]
        );
        let mut r = Reading::default();
        r.read(headers_answer(Some("10.0.0.1:80"), None)).unwrap();
        assert_eq!(r.endpoints().unwrap(), vec!["10.0.0.1:80".parse().unwrap()]);
        let mut r = Reading::default();
        r.read(headers_answer(None, None)).unwrap();
        assert!(matches!(r.endpoints(), Err(PickError::BadAnswer(_))));
        let mut r = Reading::default();
        r.read(headers_answer(Some("pod-a"), None)).unwrap();
        assert!(matches!(r.endpoints(), Err(PickError::BadAnswer(_))));
    }

    #[test]
    fn streamed_body_chunks_make_the_body() {
        let mut r = Reading::default();
        r.read(headers_answer(Some("10.0.0.1:80"), None)).unwrap();
        assert!(r.headers_done && !r.body_done);
        r.read(body_answer(b"{\"a\":", false)).unwrap();
        assert!(!r.body_done);
        r.read(body_answer(b"1}", true)).unwrap();
        assert!(r.body_done);
        assert_eq!(&r.body.unwrap()[..], b"{\"a\":1}");
        // An empty body answer keeps the body.
        let mut r = Reading::default();
        r.read(ProcessingResponse {
            response: Some(Response::RequestBody(BodyResponse {
                response: Some(CommonResponse::default()),
            })),
            ..Default::default()
        })
        .unwrap();
        assert!(r.body_done && r.body.is_none());
    }

    #[test]
    fn immediate_response_keeps_status_headers_and_body() {
        let mut r = Reading::default();
        let i = r
            .read(ProcessingResponse {
                response: Some(Response::ImmediateResponse(
                    envoy_types::pb::envoy::service::ext_proc::v3::ImmediateResponse {
                        status: Some(envoy_types::pb::envoy::r#type::v3::HttpStatus { code: 429 }),
                        headers: Some(HeaderMutation {
                            set_headers: vec![
                                super::super::set_header(
                                    "x-llm-d-request-dropped-reason",
                                    "rejected-saturated",
                                ),
                                super::super::set_header(":status", "200"),
                            ],
                            ..Default::default()
                        }),
                        body: b"busy".to_vec(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
            .unwrap()
            .unwrap();
        assert_eq!(i.status, 429);
        assert_eq!(
            i.headers,
            vec![(
                "x-llm-d-request-dropped-reason".to_owned(),
                "rejected-saturated".to_owned()
            )]
        );
        assert_eq!(&i.body[..], b"busy");
    }
}
