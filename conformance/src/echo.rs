//! An echo backend reproducing the upstream `echo-basic` image (CATALOG.md §2.3).
//!
//! One [`EchoPod`] stands for one Kubernetes pod: it listens on a loopback address on every
//! container port its Services target, serves HTTP/1.1 and h2c (prior knowledge) on each, and
//! answers with a JSON echo of the request. Special paths: `/health`, `/status/NNN`, `?delay=`,
//! the `/retry/` simulator and the `/ws` WebSocket echo (RFC 6455 over HTTP/1.1, as echo-basic's
//! `golang.org/x/net/websocket` handler). Every request's RequestURI is recorded so mirror tests
//! can ask whether, and how often, a pod saw a request.
//!
//! A pod may also have echo-basic's HTTPS listener ([`EchoTls`]): on that port it speaks TLS
//! (ALPN `h2` and `http/1.1`), optionally verifies a client certificate when one is given, and
//! adds echo-basic's `tls` object to the echo (version, the SNI it saw, ALPN, cipher suite and
//! the client's certificates as PEM).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::error::{Error, Result};

/// Who a pod is: the values echo-basic reads from its environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// `POD_NAME`, e.g. `infra-backend-v1-7f9c-0`.
    pub pod: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `SERVICE_NAME` (unset in the upstream manifests, so usually empty).
    pub service: String,
    /// `INGRESS_NAME` (unset in the upstream manifests, so usually empty).
    pub ingress: String,
}

/// State shared by all ports of one pod: the request log and the retry simulator's counters.
#[derive(Debug, Default)]
struct PodState {
    identity: PodIdentity,
    requests: Mutex<Vec<String>>,
    retry_attempts: Mutex<HashMap<String, u32>>,
}

/// echo-basic's HTTPS listener: the port and the server configuration (serving certificate,
/// optional client CA).
#[derive(Clone, Debug)]
pub struct EchoTls {
    /// The port served with TLS (`HTTPS_PORT`, 8443 by default).
    pub port: u16,
    config: Arc<rustls::ServerConfig>,
}

impl EchoTls {
    /// Builds the listener's configuration from PEM: the certificate chain, its private key, and
    /// optionally the CAs a client certificate must chain to. As echo-basic
    /// (`tls.VerifyClientCertIfGiven`), a client without a certificate is still served; one
    /// presenting a certificate the CAs do not vouch for fails the handshake.
    pub fn new(
        port: u16,
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self> {
        let tls_err =
            |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("echo {what}: {e}"));
        let certs = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_err("certificate", &e))?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| tls_err("private key", &e))?
            .ok_or_else(|| Error::Tls("echo private key: no key in PEM".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", &e))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut &pem[..]) {
                    let c = c.map_err(|e| tls_err("client CA", &e))?;
                    roots.add(c).map_err(|e| tls_err("client CA", &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err("client verifier", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| tls_err("certificate", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(EchoTls {
            port,
            config: Arc::new(config),
        })
    }
}

/// echo-basic's `TLSAssertions`: what the pod saw of a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TlsSeen {
    version: String,
    server_name: String,
    negotiated_protocol: String,
    cipher_suite: String,
    peer_certificates: Vec<String>,
}

impl TlsSeen {
    fn of(conn: &rustls::ServerConnection) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        // Go names TLS 1.3 suites `TLS_AES_...`; rustls says `TLS13_AES_...`.
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .map(|s| s.replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default();
        TlsSeen {
            version: version.to_string(),
            server_name: conn.server_name().unwrap_or("").to_string(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite,
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or(&[])
                .iter()
                .map(|c| pem_certificate(c.as_ref()))
                .collect(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "version": self.version,
            "serverName": self.server_name,
            "cipherSuite": self.cipher_suite,
        });
        if !self.negotiated_protocol.is_empty() {
            v["negotiatedProtocol"] = serde_json::json!(self.negotiated_protocol);
        }
        if !self.peer_certificates.is_empty() {
            v["peerCertificates"] = serde_json::json!(self.peer_certificates);
        }
        v
    }
}

/// A DER certificate as a PEM block (64-column base64, as Go's `pem.Encode`).
pub fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A running echo pod. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct EchoPod {
    ip: IpAddr,
    ports: Vec<u16>,
    state: Arc<PodState>,
    tasks: Vec<JoinHandle<()>>,
}

impl EchoPod {
    /// Binds `ip:port` for every port and starts serving plain HTTP/1.1 and h2c. Runs on the
    /// current tokio runtime.
    pub async fn start(ip: IpAddr, ports: &[u16], identity: PodIdentity) -> Result<Self> {
        Self::start_with_tls(ip, ports, identity, None).await
    }

    /// [`EchoPod::start`], serving the port of `tls` (when it is among `ports`) with TLS.
    pub async fn start_with_tls(
        ip: IpAddr,
        ports: &[u16],
        identity: PodIdentity,
        tls: Option<EchoTls>,
    ) -> Result<Self> {
        let state = Arc::new(PodState {
            identity,
            ..PodState::default()
        });
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        for &port in ports {
            let listener = TcpListener::bind(SocketAddr::new(ip, port))
                .await
                .map_err(|e| Error::io(format!("echo listen {ip}:{port}"), e))?;
            let acceptor = tls
                .as_ref()
                .filter(|t| t.port == port)
                .map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)));
            let port = listener.local_addr()?.port();
            bound.push(port);
            tasks.push(tokio::spawn(accept_loop(
                listener,
                port,
                Arc::clone(&state),
                acceptor,
            )));
        }
        Ok(EchoPod {
            ip,
            ports: bound,
            state,
            tasks,
        })
    }

    /// The loopback address the pod listens on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The ports actually bound (a requested port 0 shows the chosen one).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The pod's identity.
    pub fn identity(&self) -> &PodIdentity {
        &self.state.identity
    }

    /// Every RequestURI this pod has received, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether this pod has received a request whose RequestURI contains `needle`.
    pub fn saw_request_containing(&self, needle: &str) -> bool {
        self.count_requests(|r| r.contains(needle)) > 0
    }

    /// How many received requests (every one counts, repeats included) have a RequestURI
    /// for which `matches` holds: the number of matching log lines upstream would find.
    pub fn count_requests(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| matches(r))
            .count()
    }
}

impl Drop for EchoPod {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    state: Arc<PodState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            port,
            Arc::clone(&state),
            tls.clone(),
        ));
    }
}

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection (after the TLS handshake on the HTTPS port). The retry simulator's
/// "TCP RST" mode asks, through `abort`, for the connection to be reset: the socket gets
/// SO_LINGER 0 and is closed.
async fn serve_connection(
    stream: TcpStream,
    port: u16,
    state: Arc<PodState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(spare) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    match tls {
        None => serve_io(stream, spare, port, state, None).await,
        Some(acceptor) => {
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(pod = %state.identity.pod, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let seen = Arc::new(TlsSeen::of(tls_stream.get_ref().1));
            serve_io(tls_stream, spare, port, state, Some(seen)).await;
        }
    }
}

async fn serve_io<I>(
    io: I,
    spare: std::net::TcpStream,
    port: u16,
    state: Arc<PodState>,
    tls: Option<Arc<TlsSeen>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let abort = Arc::new(Notify::new());
    let svc_abort = Arc::clone(&abort);
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        let abort = Arc::clone(&svc_abort);
        let tls = tls.clone();
        async move { Ok::<_, Infallible>(handle(state, port, tls.as_deref(), abort, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut conn = Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    let reset = tokio::select! {
        _ = conn.as_mut() => false,
        _ = abort.notified() => true,
    };
    if reset && let Ok(spare) = TcpStream::from_std(spare) {
        let _ = spare.set_zero_linger();
        // Closing the served half first leaves `spare` as the last descriptor, whose close
        // then sends the RST.
        drop(conn);
        drop(spare);
    }
}

/// The RequestURI as Go's `http.Request.RequestURI` shows it: path plus raw query.
fn request_uri<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string())
}

/// Splits a raw query into `(name, value)` pairs without percent-decoding (the simulator's
/// parameters are plain tokens).
pub fn query_pairs(uri: &str) -> Vec<(String, String)> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn query_param(uri: &str, name: &str) -> Option<String> {
    query_pairs(uri)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Parses a Go duration string (`1s`, `300ms`, `1m30s`, `1.5s`). Returns `None` when malformed.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
    }
    Some(Duration::from_secs_f64(total))
}

/// Go's `http.CanonicalHeaderKey`: `x-header-set` becomes `X-Header-Set`. Names with characters
/// outside the token set are returned unchanged, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
        upper = c == '-';
    }
    out
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

async fn handle(
    state: Arc<PodState>,
    port: u16,
    tls: Option<&TlsSeen>,
    abort: Arc<Notify>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let uri = request_uri(&req);
    state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(uri.clone());
    tracing::debug!(pod = %state.identity.pod, "Echoing back request made to {uri}");
    let path = req.uri().path().to_string();

    if path == "/health" {
        return plain(StatusCode::OK, "OK");
    }
    if path == "/ws" {
        return websocket(req);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => plain(status, ""),
            None => plain(StatusCode::BAD_REQUEST, "invalid status code"),
        };
    }
    if path.starts_with("/retry/")
        && let Some(resp) = retry_simulator(&state, &uri, &abort).await
    {
        return resp;
    }
    if let Some(delay) = query_param(&uri, "delay") {
        match parse_go_duration(&delay) {
            Some(d) => tokio::time::sleep(d).await,
            None => return plain(StatusCode::BAD_REQUEST, "invalid delay"),
        }
    }
    echo_response(&state.identity, port, tls, &uri, &req)
}

/// The `/retry/` simulator: fails the first `succeedAfter` attempts per `uuid` (after sleeping
/// `delayRetry`), with `responseCode` or, when absent, a TCP reset. Returns `None` to echo.
async fn retry_simulator(
    state: &PodState,
    uri: &str,
    abort: &Notify,
) -> Option<Response<Full<Bytes>>> {
    let uuid = query_param(uri, "uuid").unwrap_or_default();
    let succeed_after: u32 = match query_param(uri, "succeedAfter").map(|v| v.parse()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return Some(plain(StatusCode::BAD_REQUEST, "invalid succeedAfter")),
        None => 0,
    };
    let attempt = {
        let mut counters = state
            .retry_attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = counters.entry(uuid).or_insert(0);
        *n += 1;
        *n
    };
    if attempt > succeed_after {
        return None;
    }
    if let Some(d) = query_param(uri, "delayRetry").and_then(|d| parse_go_duration(&d)) {
        tokio::time::sleep(d).await;
    }
    match query_param(uri, "responseCode") {
        Some(code) => Some(
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => plain(status, ""),
                None => plain(StatusCode::BAD_REQUEST, "invalid responseCode"),
            },
        ),
        None => {
            abort.notify_one();
            std::future::pending::<()>().await;
            None
        }
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2: base64 of the SHA-1 of
/// the key followed by the protocol GUID).
pub fn websocket_accept(key: &str) -> String {
    derive_accept_key(key.as_bytes())
}

/// The `/ws` endpoint, as echo-basic's `websocket.Handler` (golang.org/x/net/websocket) serves
/// it: the opening handshake is checked in the same order and with the same answers (405 for a
/// method other than GET, 400 without `Upgrade: websocket` and `Connection: upgrade`, without a
/// key, or for a version other than 13, 403 without an `Origin`), then 101 with
/// `Sec-WebSocket-Accept`, and every text or binary message is echoed back until the client
/// closes.
fn websocket(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    if req.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    if req.version() != http::Version::HTTP_11
        || !header("upgrade").eq_ignore_ascii_case("websocket")
        || !header("connection")
            .to_ascii_lowercase()
            .contains("upgrade")
    {
        return plain(StatusCode::BAD_REQUEST, "not a websocket handshake");
    }
    let key = header("sec-websocket-key");
    if key.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    }
    if header("sec-websocket-version") != "13" {
        let mut resp = plain(StatusCode::BAD_REQUEST, "unsupported websocket version");
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return resp;
    }
    let origin = header("origin");
    if origin.is_empty() || origin.parse::<http::Uri>().is_err() {
        return plain(StatusCode::FORBIDDEN, "");
    }
    let Ok(accept) = HeaderValue::from_str(&websocket_accept(&key)) else {
        return plain(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            echo_frames(ws).await;
        }
    });
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// Echoes text and binary messages with their type. Pings are answered and a close is returned
/// by tungstenite itself while reading; the loop ends when the connection does.
async fn echo_frames<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

fn echo_response<B>(
    identity: &PodIdentity,
    port: u16,
    tls: Option<&TlsSeen>,
    uri: &str,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == http::header::HOST {
            continue;
        }
        headers
            .entry(canonical_header_key(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let proto = match req.version() {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let mut body = serde_json::json!({
        "path": uri,
        "host": host,
        "method": req.method().as_str(),
        "proto": proto,
        "headers": headers,
        "namespace": identity.namespace,
        "ingress": identity.ingress,
        "service": identity.service,
        "pod": identity.pod,
        "httpPort": port.to_string(),
    });
    if let Some(tls) = tls {
        body["tls"] = tls.to_json();
    }
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    let out = resp.headers_mut();
    out.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    for list in req.headers().get_all("x-echo-set-header") {
        let Ok(list) = list.to_str() else { continue };
        for pair in list.split(',') {
            let Some((name, value)) = pair.trim().split_once(':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) else {
                continue;
            };
            match out.get(&name).map(|v| v.as_bytes().to_vec()) {
                Some(mut existing) => {
                    existing.push(b',');
                    existing.extend_from_slice(value.as_bytes());
                    if let Ok(joined) = HeaderValue::from_bytes(&existing) {
                        out.insert(name, joined);
                    }
                }
                None => {
                    out.insert(name, value);
                }
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::net::Ipv4Addr;

    async fn pod() -> EchoPod {
        EchoPod::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[0],
            PodIdentity {
                pod: "infra-backend-v1-abc-0".into(),
                namespace: "gateway-conformance-infra".into(),
                ..PodIdentity::default()
            },
        )
        .await
        .expect("start echo pod")
    }

    async fn get_h1(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::result::Result<(StatusCode, http::HeaderMap, Bytes), hyper::Error> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", "example.com");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send
            .send_request(req.body(Full::new(Bytes::new())).expect("request"))
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }

    fn addr(p: &EchoPod) -> SocketAddr {
        SocketAddr::new(p.ip(), p.ports()[0])
    }

    #[tokio::test]
    async fn echoes_request_as_json() {
        let p = pod().await;
        let (status, headers, body) = get_h1(
            addr(&p),
            "/some/path?x=1&y",
            &[("x-header-set", "a"), ("x-multi", "1"), ("x-multi", "2")],
        )
        .await
        .expect("request");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["path"], "/some/path?x=1&y");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["proto"], "HTTP/1.1");
        assert_eq!(v["pod"], "infra-backend-v1-abc-0");
        assert_eq!(v["namespace"], "gateway-conformance-infra");
        assert_eq!(v["headers"]["X-Header-Set"][0], "a");
        assert_eq!(v["headers"]["X-Multi"], serde_json::json!(["1", "2"]));
        assert!(v["headers"].get("Host").is_none());
        assert_eq!(v["httpPort"], p.ports()[0].to_string());
        assert!(p.saw_request_containing("/some/path?x=1"));
    }

    #[tokio::test]
    async fn sets_response_headers_from_x_echo_set_header() {
        let p = pod().await;
        let (_, headers, _) = get_h1(
            addr(&p),
            "/",
            &[("x-echo-set-header", "X-Foo:bar, X-Foo:baz,Other: v")],
        )
        .await
        .expect("request");
        assert_eq!(headers["x-foo"], "bar,baz");
        assert_eq!(headers["other"], "v");
        let (_, headers, _) = get_h1(addr(&p), "/", &[("x-echo-set-header", "")])
            .await
            .expect("request");
        assert!(headers.get("x-foo").is_none());
    }

    #[tokio::test]
    async fn status_and_health_endpoints() {
        let p = pod().await;
        let (status, _, _) = get_h1(addr(&p), "/status/418", &[]).await.expect("req");
        assert_eq!(status.as_u16(), 418);
        let (status, _, body) = get_h1(addr(&p), "/health", &[]).await.expect("req");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"OK");
    }

    #[tokio::test]
    async fn delay_query_delays_response() {
        let p = pod().await;
        let start = std::time::Instant::now();
        let (status, _, _) = get_h1(addr(&p), "/?delay=200ms", &[]).await.expect("req");
        assert_eq!(status, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn retry_simulator_fails_then_succeeds() {
        let p = pod().await;
        let path = "/retry/x?responseCode=503&succeedAfter=2&uuid=u1";
        for _ in 0..2 {
            let (status, _, _) = get_h1(addr(&p), path, &[]).await.expect("req");
            assert_eq!(status.as_u16(), 503);
        }
        let (status, _, body) = get_h1(addr(&p), path, &[]).await.expect("req");
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["path"], path);
        // Another uuid starts from zero.
        let (status, _, _) = get_h1(
            addr(&p),
            "/retry/x?responseCode=500&succeedAfter=1&uuid=u2",
            &[],
        )
        .await
        .expect("req");
        assert_eq!(status.as_u16(), 500);
    }

    #[tokio::test]
    async fn retry_simulator_resets_connection_without_response_code() {
        let p = pod().await;
        let path = "/retry/x?succeedAfter=1&uuid=rst";
        let first = get_h1(addr(&p), path, &[]).await;
        assert!(first.is_err(), "expected a connection error, got {first:?}");
        let (status, _, _) = get_h1(addr(&p), path, &[]).await.expect("second attempt");
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_h2c_prior_knowledge() {
        let p = pod().await;
        let stream = TcpStream::connect(addr(&p)).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("http://h2.example/abc?q=1")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["proto"], "HTTP/2.0");
        assert_eq!(v["host"], "h2.example");
        assert_eq!(v["path"], "/abc?q=1");
    }

    #[tokio::test]
    async fn retry_simulator_delays_failing_attempts_only() {
        let p = pod().await;
        let path = "/retry/x?responseCode=500&succeedAfter=1&delayRetry=300ms&uuid=slow";
        let start = std::time::Instant::now();
        let (status, _, _) = get_h1(addr(&p), path, &[]).await.expect("req");
        assert_eq!(status.as_u16(), 500);
        assert!(start.elapsed() >= Duration::from_millis(300));
        let start = std::time::Instant::now();
        let (status, _, _) = get_h1(addr(&p), path, &[]).await.expect("req");
        assert_eq!(status, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "success is not delayed"
        );
    }

    #[tokio::test]
    async fn counts_recorded_requests() {
        let p = pod().await;
        for path in ["/m?id=1", "/m?id=1", "/m?id=2", "/other"] {
            get_h1(addr(&p), path, &[]).await.expect("req");
        }
        assert_eq!(p.count_requests(|r| r.starts_with("/m?")), 3);
        assert_eq!(p.count_requests(|r| r.ends_with("id=1")), 2);
        assert!(p.saw_request_containing("/other"));
        assert!(!p.saw_request_containing("id=3"));
    }

    #[test]
    fn websocket_accept_matches_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Writes `request` on a fresh connection and reads the response head.
    async fn raw_exchange(addr: SocketAddr, request: &str) -> (TcpStream, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
                .await
                .expect("response in time")
                .expect("read");
            assert_eq!(
                n,
                1,
                "connection closed after {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        (stream, String::from_utf8_lossy(&head).to_ascii_lowercase())
    }

    fn upgrade_request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: gw.example:80\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    #[tokio::test]
    async fn websocket_handshake_and_echo() {
        let p = pod().await;
        let (stream, head) = raw_exchange(
            addr(&p),
            &upgrade_request("Sec-WebSocket-Version: 13\r\nOrigin: ws://gateway/test\r\n"),
        )
        .await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket\r\n"), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
            "{head}"
        );
        let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
        ws.send(Message::text("Websocket Support!"))
            .await
            .expect("send text");
        let reply = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(reply, Message::text("Websocket Support!"));
        let bytes = Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]);
        ws.send(Message::Binary(bytes.clone()))
            .await
            .expect("send binary");
        let reply = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(reply, Message::Binary(bytes));
        ws.close(None).await.expect("close");
        assert!(p.saw_request_containing("/ws"));
    }

    #[tokio::test]
    async fn websocket_rejects_bad_handshakes() {
        let p = pod().await;
        // No Origin: x/net/websocket's Handler refuses with 403.
        let (_, head) =
            raw_exchange(addr(&p), &upgrade_request("Sec-WebSocket-Version: 13\r\n")).await;
        assert!(head.starts_with("http/1.1 403"), "{head}");
        // An unsupported version: 400 naming the supported one.
        let (_, head) = raw_exchange(
            addr(&p),
            &upgrade_request("Sec-WebSocket-Version: 8\r\nOrigin: http://o\r\n"),
        )
        .await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(head.contains("sec-websocket-version: 13\r\n"), "{head}");
        // A plain request to /ws is not a handshake.
        let (status, _, _) = get_h1(addr(&p), "/ws", &[]).await.expect("req");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Only GET opens a websocket.
        let (_, head) = raw_exchange(
            addr(&p),
            "POST /ws HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("http/1.1 405"), "{head}");
    }

    #[test]
    fn go_durations_and_header_keys() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(canonical_header_key("x-header-SET"), "X-Header-Set");
        assert_eq!(canonical_header_key("version"), "Version");
        assert_eq!(canonical_header_key("bad header"), "bad header");
    }
}
