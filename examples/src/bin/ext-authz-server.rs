//! A small external authorization service, for trying the `ExternalAuth` filter and for the
//! tests: Envoy's `ext_authz` v3 gRPC service and its plain-HTTP counterpart, with one policy.
//!
//! ```text
//! cargo run -p examples --bin ext-authz-server -- \
//!     --grpc 127.0.0.1:9191 --http 127.0.0.1:9192 --user alice=secret-a --user bob=secret-b
//! ```
//!
//! The policy, the same on both protocols:
//!
//! * a request whose `authorization` header is `Bearer <token>` with a token given by `--user`
//!   is allowed, and the request to the backend gets `x-user: <name>` (replacing what the client
//!   sent), `x-auth-body-bytes: <bytes of body the service received>` and, over HTTP,
//!   `x-auth-path: <the path the service was asked for>`; over gRPC the client's response also
//!   gets `x-auth-checked: grpc`;
//! * a body containing `deny-me` is denied, whatever the token;
//! * anything else is denied: 403, `x-denied-by: ext-authz-server`, and the body
//!   `denied by ext-authz-server`.
//!
//! Every answer waits `--delay-ms` first (default 0), or the request header
//! `x-ext-authz-delay-ms` when the service gets it: for trying timeouts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::google::rpc::Status;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::Service as _;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "An example ext_authz service (gRPC and HTTP) for the ExternalAuth filter")]
struct Args {
    /// Where the gRPC `envoy.service.auth.v3.Authorization` service listens.
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Where the HTTP service listens.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// An allowed user, `name=token` (repeatable).
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, String)>,
    /// Milliseconds every answer waits (the header `x-ext-authz-delay-ms` overrides it).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

fn parse_user(text: &str) -> Result<(String, String), String> {
    let (name, token) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=token"))?;
    Ok((name.to_owned(), token.to_owned()))
}

/// The policy: tokens to user names, and the default delay.
struct Policy {
    users: HashMap<String, String>,
    delay: Duration,
}

/// What the policy decided.
enum Decision {
    /// The user's name.
    Allow(String),
    Deny,
}

impl Policy {
    async fn decide(&self, headers: &HashMap<String, String>, body: &[u8]) -> Decision {
        let delay = headers
            .get("x-ext-authz-delay-ms")
            .and_then(|d| d.parse().ok())
            .map_or(self.delay, Duration::from_millis);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if body.windows(7).any(|w| w == b"deny-me") {
            return Decision::Deny;
        }
        let user = headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|token| self.users.get(token.trim()));
        match user {
            Some(name) => Decision::Allow(name.clone()),
            None => Decision::Deny,
        }
    }
}

const DENIED: &str = "denied by ext-authz-server\n";

struct Grpc(Arc<Policy>);

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for Grpc {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let body = if http.raw_body.is_empty() {
            http.body.into_bytes()
        } else {
            http.raw_body
        };
        let response = match self.0.decide(&http.headers, &body).await {
            Decision::Allow(user) => CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header("x-user", &user, HeaderAppendAction::OverwriteIfExistsOrAdd),
                        header(
                            "x-auth-body-bytes",
                            &body.len().to_string(),
                            HeaderAppendAction::OverwriteIfExistsOrAdd,
                        ),
                    ],
                    response_headers_to_add: vec![header(
                        "x-auth-checked",
                        "grpc",
                        HeaderAppendAction::AppendIfExistsOrAdd,
                    )],
                    ..Default::default()
                })),
                ..Default::default()
            },
            Decision::Deny => CheckResponse {
                status: Some(Status {
                    code: tonic::Code::PermissionDenied as i32,
                    message: "denied".into(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 403 }),
                    headers: vec![header(
                        "x-denied-by",
                        "ext-authz-server",
                        HeaderAppendAction::OverwriteIfExistsOrAdd,
                    )],
                    body: DENIED.into(),
                })),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(response))
    }
}

/// The HTTP service's answer to one request.
async fn http_check(policy: &Policy, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut response = http::Response::builder();
    let built = match policy.decide(&headers, &body).await {
        Decision::Allow(user) => {
            response = response
                .status(200)
                .header("x-user", user)
                .header("x-auth-body-bytes", body.len())
                .header("x-auth-path", path);
            response.body(Full::new(Bytes::new()))
        }
        Decision::Deny => response
            .status(403)
            .header("x-denied-by", "ext-authz-server")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(DENIED.as_bytes()))),
    };
    built.unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}

/// Accepts connections on `address` (`what` names the service in logs) and serves each on its
/// own task with hyper's auto (HTTP/1.1 + HTTP/2) builder and the service `make` returns, until
/// the process ends.
async fn serve<S, B>(address: SocketAddr, what: &str, make: impl Fn() -> S) -> std::io::Result<()>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "{what} authorization service listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let service = make();
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_http(address: SocketAddr, policy: Arc<Policy>) -> std::io::Result<()> {
    serve(address, "HTTP", || {
        let policy = policy.clone();
        service_fn(move |req| {
            let policy = policy.clone();
            async move { Ok::<_, Infallible>(http_check(&policy, req).await) }
        })
    })
    .await
}

/// Serves the gRPC `Authorization` service on `address` (HTTP/2 with prior knowledge, as gRPC
/// clients speak it), one task per connection, until the process ends.
async fn serve_grpc(
    address: SocketAddr,
    service: AuthorizationServer<Grpc>,
) -> std::io::Result<()> {
    serve(address, "gRPC", || {
        let service = service.clone();
        service_fn(move |req: http::Request<Incoming>| {
            let mut service = service.clone();
            async move { service.call(req).await }
        })
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    examples::init_logging();
    let args = Args::parse();
    if args.grpc.is_none() && args.http.is_none() {
        return Err("give --grpc, --http or both".into());
    }
    let policy = Arc::new(Policy {
        users: args.users.into_iter().map(|(n, t)| (t, n)).collect(),
        delay: Duration::from_millis(args.delay_ms),
    });
    // Both services on hyper's auto (HTTP/1.1 + HTTP/2) connection builder: the generated
    // `AuthorizationServer` is a tower service, so tonic's router (and axum under it) is not
    // needed for this one service.
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(address) = args.http {
        tasks.spawn(serve_http(address, policy.clone()));
    }
    if let Some(address) = args.grpc {
        tasks.spawn(serve_grpc(address, AuthorizationServer::new(Grpc(policy))));
    }
    tokio::select! {
        Some(r) = tasks.join_next() => r??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
