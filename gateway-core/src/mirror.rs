//! Fire-and-forget request mirroring (the `RequestMirror` filter).
//!
//! [`Mirrors`] is shared by the whole gateway. For each mirrored request the proxy calls
//! [`Mirrors::start`] with a copy of the request header; a background task connects to the
//! mirror endpoint, sends the copy, streams the request body as the proxy feeds it through
//! [`MirrorBody::send`], reads the response and discards it. The primary request never waits for
//! a mirror and never fails because of one:
//!
//! - at most `max_in_flight` copies are on their way at once; beyond that [`Mirrors::start`]
//!   refuses (and counts a drop) without allocating;
//! - the body goes through a bounded channel of [`BODY_CHUNKS`] chunks; when the mirror falls
//!   that far behind, [`MirrorBody::send`] returns false and the copy is abandoned;
//! - connecting may take [`CONNECT_TIMEOUT`] and the whole exchange [`TOTAL_TIMEOUT`];
//! - errors are counted and logged at debug level, never returned to the proxy.
//!
//! Copies are sent from a thread of their own (`gateway-mirror`, a single-threaded Tokio runtime
//! started with the first copy) that runs at the lowest CPU priority the OS offers an ordinary
//! process (nice 19 on Linux). Mirroring is best-effort background work: the proxy's workers
//! never queue behind a mirror task, and when the CPU is saturated the kernel gives the primary
//! requests the time first; a mirror that falls behind then reaches the in-flight bound and
//! further copies are dropped (counted). Connections are pooled (keep-alive) in the mirrors' own
//! pingora connector, apart from the proxy's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use http::header;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::BackendProtocol;
use crate::limits::{BodyBudget, BodyPermit};
use crate::upstream_tls::CompiledTls;

/// Body chunks buffered between the proxy and a mirror task before the mirror is abandoned.
pub(crate) const BODY_CHUNKS: usize = 16;

/// How long a mirror task may take to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a mirror task may take in all, from start to the end of the response.
pub(crate) const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a mirror connection may stay idle in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Hop-by-hop headers that are not copied to a mirror (besides those named in `Connection`).
/// `Expect` goes too: the body is sent without waiting for `100 Continue`.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "transfer-encoding",
    "http2-settings",
    "expect",
];

/// The gateway's request mirroring: a connector with its own pool, a bound on copies in flight
/// and counters. Cheap to clone (all clones share the same state).
#[derive(Clone)]
pub(crate) struct Mirrors {
    shared: Arc<Shared>,
    /// The mirror thread, started with the first copy. Its tasks hold only `shared`, so the
    /// thread stops once the last `Mirrors` clone is gone.
    runtime: Arc<OnceLock<Option<MirrorRuntime>>>,
}

/// The thread that runs every mirror task: a current-thread Tokio runtime at low CPU priority.
/// Dropping this stops the thread (tasks still running are cancelled, freeing their slots).
struct MirrorRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped to stop the thread.
    _stop: oneshot::Sender<()>,
}

impl MirrorRuntime {
    /// Starts the thread; `None` (logged) when the OS refuses a thread or the runtime cannot be
    /// built, in which case copies are counted as failed.
    fn start() -> Option<MirrorRuntime> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(error) => {
                tracing::warn!(%error, "request mirror: cannot build the mirror runtime");
                return None;
            }
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("gateway-mirror".into())
            .spawn(move || {
                // Best effort: an OS that refuses leaves the thread at normal priority.
                if let Err(error) = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                ) {
                    tracing::debug!(?error, "request mirror: cannot lower the thread's priority");
                }
                let _ = runtime.block_on(stopped);
                // Leaving cancels the tasks still running; their slots are released.
                drop(runtime);
            });
        match spawned {
            Ok(_) => Some(MirrorRuntime {
                handle,
                _stop: stop,
            }),
            Err(error) => {
                tracing::warn!(%error, "request mirror: cannot start the mirror thread");
                None
            }
        }
    }
}

/// State shared by [`Mirrors`] and its tasks.
struct Shared {
    connector: Connector,
    /// The most copies in flight at once.
    max_in_flight: usize,
    /// Copies started and not yet finished.
    in_flight: AtomicUsize,
    /// Copies refused at start or abandoned before their body was complete.
    dropped: AtomicU64,
    /// Copies that failed: connection, protocol or timeout errors.
    failed: AtomicU64,
    /// Copies the mirror backend answered.
    completed: AtomicU64,
    /// Body chunks queued for mirrors count against the gateway's buffering cap.
    budget: Arc<BodyBudget>,
}

/// Holds one in-flight slot; frees it when the mirror task ends (or never starts).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mirrors {
    /// Mirroring with at most `max_in_flight` copies on their way at once (0 refuses every
    /// copy). Built once per gateway.
    #[cfg(test)]
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self::with_budget(max_in_flight, BodyBudget::new(usize::MAX))
    }

    /// Like [`Mirrors::new`], with queued body chunks counted against `budget`: a chunk that
    /// would go past it abandons the copy (counted as dropped), as a mirror that cannot keep up
    /// does.
    pub(crate) fn with_budget(max_in_flight: usize, budget: Arc<BodyBudget>) -> Self {
        Mirrors {
            shared: Arc::new(Shared {
                connector: Connector::new(None),
                max_in_flight,
                in_flight: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                budget,
            }),
            runtime: Arc::new(OnceLock::new()),
        }
    }

    /// Starts sending a copy of `req` to `addr` over `protocol` (WebSocket is sent as plain
    /// HTTP/1.1: upgrade headers are not copied). Called on the request path once the request
    /// header is final; returns at once.
    ///
    /// Returns `None`, counting a drop, when `max_in_flight` copies are already in flight (or,
    /// counting a failure, when the mirror thread could not be started). With `has_body`, the returned [`MirrorBody`]
    /// must be fed the request body and [finished](MirrorBody::finish); the request is complete
    /// on the wire when the body ends. Without, the copy is sent as it is and the returned
    /// `MirrorBody` takes nothing.
    ///
    /// The copy is adjusted for its protocol: hop-by-hop headers are removed; for HTTP/1.1 the
    /// request-target is made origin-form, `Host` is set from the URI authority (or `addr`) if
    /// missing, and a body of unknown length is sent chunked; for h2c `Host` becomes
    /// `:authority`.
    #[cfg(test)]
    pub(crate) fn start(
        &self,
        req: RequestHeader,
        addr: SocketAddr,
        protocol: BackendProtocol,
        has_body: bool,
    ) -> Option<MirrorBody> {
        self.start_with(req, addr, protocol, None, has_body)
    }

    /// [`Self::start`] for a backend reached over TLS when `tls` is set (the same settings,
    /// pooling and session resumption as the proxy's connections to it).
    pub(crate) fn start_with(
        &self,
        req: RequestHeader,
        addr: SocketAddr,
        protocol: BackendProtocol,
        tls: Option<CompiledTls>,
        has_body: bool,
    ) -> Option<MirrorBody> {
        let shared = &self.shared;
        if shared.in_flight.fetch_add(1, Ordering::Relaxed) >= shared.max_in_flight {
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let slot = Slot(Arc::clone(shared));
        let Some(rt) = self.runtime.get_or_init(MirrorRuntime::start) else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, "request mirror: no mirror thread");
            return None;
        };
        let (body, feed) = if has_body {
            let (tx, rx) = mpsc::channel(BODY_CHUNKS);
            let state = Arc::new(BodyState {
                phase: AtomicU8::new(OPEN),
                abandon: Notify::new(),
            });
            let body = MirrorBody {
                tx: Some(tx),
                state: Some(Arc::clone(&state)),
                budget: Some(shared.budget.clone()),
            };
            (body, Some(Feed { rx, state }))
        } else {
            let body = MirrorBody {
                tx: None,
                state: None,
                budget: None,
            };
            (body, None)
        };
        rt.handle
            .spawn(run(slot, req, addr, protocol, tls, has_body, feed));
        Some(body)
    }

    /// Copies refused by [`Self::start`] for the in-flight bound, plus copies abandoned before
    /// their body was complete (the mirror fell [`BODY_CHUNKS`] chunks behind, or the primary
    /// request's body did not finish).
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Copies the mirror backend answered.
    pub(crate) fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Copies that failed: connect, write, read or protocol errors and timeouts.
    pub(crate) fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Copies on their way now.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Refuses a copy up front, counting a drop, when the bound is already reached: the request
    /// path calls this before it clones the request for [`Mirrors::start`]. `start` checks again,
    /// so a race only costs a clone.
    pub(crate) fn refuse_if_full(&self) -> bool {
        let shared = &self.shared;
        if shared.in_flight.load(Ordering::Relaxed) >= shared.max_in_flight {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// [`BodyState::phase`]: the body is still being fed.
const OPEN: u8 = 0;
/// [`BodyState::phase`]: the body ended normally ([`MirrorBody::finish`]).
const FINISHED: u8 = 1;
/// [`BodyState::phase`]: the copy was given up ([`MirrorBody::send`] failed, or the
/// `MirrorBody` was dropped unfinished).
const ABANDONED: u8 = 2;

/// What a [`MirrorBody`] and its task share.
struct BodyState {
    /// [`OPEN`], [`FINISHED`] or [`ABANDONED`].
    phase: AtomicU8,
    /// Woken on abandonment, so a task blocked on the mirror stops at once.
    abandon: Notify,
}

impl BodyState {
    fn abandon(&self) {
        if self
            .phase
            .compare_exchange(OPEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.abandon.notify_one();
        }
    }
}

/// The proxy's end of a mirrored request body: a bounded channel to the mirror task.
///
/// Dropping it without [`Self::finish`] abandons the copy (an incomplete body is never sent as
/// if it were complete).
pub(crate) struct MirrorBody {
    /// `None` when the request has no body, or once the copy was abandoned.
    tx: Option<mpsc::Sender<(Bytes, BodyPermit)>>,
    state: Option<Arc<BodyState>>,
    /// What queued chunks count against; `None` without a body.
    budget: Option<Arc<BodyBudget>>,
}

impl MirrorBody {
    /// Passes a body chunk to the mirror without waiting. Called from the proxy's request body
    /// phase for each chunk.
    ///
    /// Returns false when the mirror cannot keep up ([`BODY_CHUNKS`] chunks already queued), has
    /// failed or timed out, or was abandoned before, or when the request was started without a
    /// body: the copy is then abandoned (its task stops, the connection is closed) and later
    /// calls return false too. Empty chunks are accepted and not forwarded.
    pub(crate) fn send(&mut self, chunk: Bytes) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if chunk.is_empty() {
            return true;
        }
        // The chunk's bytes are held until the mirror task has written them.
        let permit = self
            .budget
            .as_ref()
            .and_then(|b| b.try_reserve(chunk.len(), "mirror body"));
        if let Some(permit) = permit
            && tx.try_send((chunk, permit)).is_ok()
        {
            return true;
        }
        self.tx = None;
        if let Some(state) = &self.state {
            state.abandon();
        }
        false
    }

    /// Ends the body: the mirror task completes the request. Called once the primary request's
    /// body has been read in full. Does nothing for a request without a body or an abandoned
    /// copy.
    pub(crate) fn finish(mut self) {
        if let Some(state) = &self.state {
            let _ =
                state
                    .phase
                    .compare_exchange(OPEN, FINISHED, Ordering::AcqRel, Ordering::Acquire);
        }
        self.tx = None;
    }
}

impl Drop for MirrorBody {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.abandon();
        }
    }
}

/// The mirror task's end of the body.
struct Feed {
    rx: mpsc::Receiver<(Bytes, BodyPermit)>,
    state: Arc<BodyState>,
}

/// Why a copy did not complete.
enum Failure {
    /// The body was abandoned by the proxy side.
    Abandoned,
    /// An error talking to the mirror.
    Error(String),
}

impl<E: std::fmt::Display> From<Box<E>> for Failure {
    fn from(e: Box<E>) -> Self {
        Failure::Error(e.to_string())
    }
}

/// The mirror task: one copy, start to end, within [`TOTAL_TIMEOUT`]. Holds the in-flight slot.
async fn run(
    slot: Slot,
    req: RequestHeader,
    addr: SocketAddr,
    protocol: BackendProtocol,
    tls: Option<CompiledTls>,
    has_body: bool,
    feed: Option<Feed>,
) {
    let shared = &slot.0;
    let abandon = feed.as_ref().map(|f| Arc::clone(&f.state));
    let exchange = tokio::time::timeout(
        TOTAL_TIMEOUT,
        exchange(&shared.connector, req, addr, protocol, tls, has_body, feed),
    );
    let outcome = match abandon {
        Some(state) => tokio::select! {
            biased;
            // Only an unfinished body is ever abandoned, so this cannot cut a complete request.
            _ = state.abandon.notified() => Ok(Err(Failure::Abandoned)),
            outcome = exchange => outcome,
        },
        None => exchange.await,
    };
    match outcome {
        Ok(Ok(())) => {
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(Failure::Abandoned)) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, "request mirror abandoned: body not fed in full");
        }
        Ok(Err(Failure::Error(error))) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, %error, "request mirror failed");
        }
        Err(_) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, timeout = ?TOTAL_TIMEOUT, "request mirror timed out");
        }
    }
}

/// Sends the copy and reads the answer; the connection goes back to the pool on success.
async fn exchange(
    connector: &Connector,
    mut req: RequestHeader,
    addr: SocketAddr,
    protocol: BackendProtocol,
    tls: Option<CompiledTls>,
    has_body: bool,
    feed: Option<Feed>,
) -> Result<(), Failure> {
    prepare(&mut req, addr, protocol, has_body).map_err(Failure::Error)?;
    let mut peer = HttpPeer::new(addr, false, String::new());
    if protocol == BackendProtocol::H2c {
        peer.options.set_http_version(2, 2);
    }
    if let Some(tls) = &tls {
        tls.apply(&mut peer);
    }
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
    let (mut session, _reused) = connector.get_http_session(&peer).await?;
    session.write_request_header(Box::new(req)).await?;
    if let Some(mut feed) = feed {
        while let Some((chunk, _permit)) = feed.rx.recv().await {
            session.write_request_body(chunk, false).await?;
        }
        if feed.state.phase.load(Ordering::Acquire) != FINISHED {
            return Err(Failure::Abandoned);
        }
    }
    session.finish_request_body().await?;
    let status = read_final_header(&mut session).await?;
    if status == 101 {
        // Cannot happen with the upgrade headers removed; never pool such a connection.
        return Ok(());
    }
    while session.read_response_body().await?.is_some() {}
    connector
        .release_http_session(session, &peer, Some(POOL_IDLE_TIMEOUT))
        .await;
    Ok(())
}

/// Reads response headers until a final (non-1xx, or 101) one; returns its status.
async fn read_final_header(session: &mut HttpSession) -> Result<u16, Failure> {
    for _ in 0..4 {
        session.read_response_header().await?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .ok_or_else(|| Failure::Error("no response header".into()))?;
        if !(100..200).contains(&status) || status == 101 {
            return Ok(status);
        }
    }
    Err(Failure::Error("too many interim responses".into()))
}

/// Turns the proxy's copy of the request into one fit for `protocol` (see [`Mirrors::start`]).
fn prepare(
    req: &mut RequestHeader,
    addr: SocketAddr,
    protocol: BackendProtocol,
    has_body: bool,
) -> Result<(), String> {
    let named: Vec<HeaderName> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        req.remove_header(name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(name);
    }
    if !has_body {
        req.remove_header(&header::CONTENT_LENGTH);
    }
    let authority = match req.headers.get(header::HOST) {
        Some(host) => host
            .to_str()
            .map_err(|_| "Host is not visible ASCII".to_owned())?
            .to_owned(),
        None => match req.uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => addr.to_string(),
        },
    };
    let path_and_query = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match protocol {
        BackendProtocol::H2c => {
            req.remove_header(&header::HOST);
            let uri = http::Uri::builder()
                .scheme("http")
                .authority(authority.as_str())
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| format!("cannot build the h2c request URI: {e}"))?;
            req.set_uri(uri);
        }
        BackendProtocol::Http1 | BackendProtocol::WebSocket => {
            req.set_version(http::Version::HTTP_11);
            let target = req.raw_path();
            if !target.starts_with(b"/") && target != b"*" {
                let uri = path_and_query
                    .parse::<http::Uri>()
                    .map_err(|e| format!("cannot build the request target: {e}"))?;
                req.set_uri(uri);
            }
            if !req.headers.contains_key(header::HOST) {
                req.insert_header(header::HOST, authority.as_str())
                    .map_err(|e| e.to_string())?;
            }
            if has_body && !req.headers.contains_key(header::CONTENT_LENGTH) {
                req.insert_header(header::TRANSFER_ENCODING, "chunked")
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_server::{TestServer, closed_port, host_of, respond, serve, wait_for};
    use http_body_util::BodyExt;
    use std::path::PathBuf;
    use std::time::Instant;

    /// What a mirror endpoint received.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        host: String,
        headers: http::HeaderMap,
        version: http::Version,
        body: Bytes,
    }

    /// A server that reports every request it receives, after sleeping `delay`.
    async fn recorder(h2: bool, delay: Duration) -> (TestServer, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let server = serve(h2, move |req: http::Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                let method = req.method().to_string();
                let target = req
                    .uri()
                    .path_and_query()
                    .map_or("", |p| p.as_str())
                    .to_owned();
                let host = host_of(&req);
                let headers = req.headers().clone();
                let version = req.version();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                tokio::time::sleep(delay).await;
                let _ = tx.send(Seen {
                    method,
                    target,
                    host,
                    headers,
                    version,
                    body,
                });
                respond(200, "mirrored")
            }
        })
        .await;
        (server, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the mirror received nothing")
            .unwrap()
    }

    fn h1_request(method: &str, target: &str) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        req.insert_header("Host", "example.com").unwrap();
        req
    }

    #[tokio::test]
    async fn mirror_receives_method_path_headers_and_body() {
        let (server, mut seen) = recorder(false, Duration::ZERO).await;
        let mirrors = Mirrors::new(8);
        let mut req = h1_request("POST", "/upload?x=1");
        req.insert_header("X-Test", "yes").unwrap();
        req.insert_header("Content-Length", "11").unwrap();
        req.insert_header("Connection", "keep-alive, X-Hop")
            .unwrap();
        req.insert_header("X-Hop", "1").unwrap();
        req.insert_header("Expect", "100-continue").unwrap();
        let mut body = mirrors
            .start(req, server.addr, BackendProtocol::Http1, true)
            .unwrap();
        assert!(body.send(Bytes::from_static(b"hello ")));
        assert!(body.send(Bytes::new()));
        assert!(body.send(Bytes::from_static(b"world")));
        body.finish();

        let s = next(&mut seen).await;
        assert_eq!(s.method, "POST");
        assert_eq!(s.target, "/upload?x=1");
        assert_eq!(s.host, "example.com");
        assert_eq!(s.headers["x-test"], "yes");
        assert_eq!(s.headers["content-length"], "11");
        assert!(s.headers.get("x-hop").is_none());
        assert!(s.headers.get("expect").is_none());
        assert_eq!(s.body, "hello world");
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        assert_eq!((mirrors.dropped(), mirrors.failed()), (0, 0));
    }

    #[tokio::test]
    async fn bodiless_requests_reuse_a_pooled_connection() {
        let (server, mut seen) = recorder(false, Duration::ZERO).await;
        let mirrors = Mirrors::new(8);
        for i in 0..3 {
            let mut body = mirrors
                .start(
                    h1_request("GET", &format!("/{i}")),
                    server.addr,
                    BackendProtocol::WebSocket,
                    false,
                )
                .unwrap();
            // Nothing to feed.
            assert!(!body.send(Bytes::from_static(b"x")));
            body.finish();
            let s = next(&mut seen).await;
            assert_eq!(
                (s.method.as_str(), s.target.as_str()),
                ("GET", format!("/{i}").as_str())
            );
            assert_eq!(s.body, "");
            assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!((mirrors.dropped(), mirrors.failed()), (0, 0));
    }

    /// A request as the proxy sees one that arrived over HTTP/2: absolute URI, no `Host`.
    fn h2_style_request() -> RequestHeader {
        let mut req = RequestHeader::build("PUT", b"/p?q", None).unwrap();
        req.set_uri("https://example.com/p?q".parse().unwrap());
        req.set_version(http::Version::HTTP_2);
        req
    }

    #[tokio::test]
    async fn h2_request_mirrored_over_h1_is_chunked_with_host() {
        let (server, mut seen) = recorder(false, Duration::ZERO).await;
        let mirrors = Mirrors::new(8);
        let mut body = mirrors
            .start(
                h2_style_request(),
                server.addr,
                BackendProtocol::Http1,
                true,
            )
            .unwrap();
        assert!(body.send(Bytes::from_static(b"abc")));
        assert!(body.send(Bytes::from_static(b"def")));
        body.finish();
        let s = next(&mut seen).await;
        assert_eq!(s.version, http::Version::HTTP_11);
        assert_eq!((s.method.as_str(), s.target.as_str()), ("PUT", "/p?q"));
        assert_eq!(s.host, "example.com");
        assert_eq!(s.headers["transfer-encoding"], "chunked");
        assert_eq!(s.body, "abcdef");
    }

    #[tokio::test]
    async fn h1_request_mirrored_over_h2c() {
        let (server, mut seen) = recorder(true, Duration::ZERO).await;
        let mirrors = Mirrors::new(8);
        let mut req = h1_request("POST", "/h2");
        req.insert_header("Transfer-Encoding", "chunked").unwrap();
        req.insert_header("Connection", "keep-alive").unwrap();
        let mut body = mirrors
            .start(req, server.addr, BackendProtocol::H2c, true)
            .unwrap();
        assert!(body.send(Bytes::from_static(b"over h2")));
        body.finish();
        let s = next(&mut seen).await;
        assert_eq!(s.version, http::Version::HTTP_2);
        assert_eq!((s.method.as_str(), s.target.as_str()), ("POST", "/h2"));
        assert_eq!(s.host, "example.com");
        assert_eq!(s.body, "over h2");
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        assert_eq!(mirrors.failed(), 0);

        // And without a body, from an HTTP/2-style request.
        mirrors
            .start(h2_style_request(), server.addr, BackendProtocol::H2c, false)
            .unwrap();
        let s = next(&mut seen).await;
        assert_eq!(
            (s.method.as_str(), s.target.as_str(), s.host.as_str()),
            ("PUT", "/p?q", "example.com")
        );
    }

    #[tokio::test]
    async fn slow_mirror_does_not_block() {
        let (server, mut seen) = recorder(false, Duration::from_secs(1)).await;
        let mirrors = Mirrors::new(8);
        let began = Instant::now();
        let mut req = h1_request("POST", "/slow");
        req.insert_header("Content-Length", "4").unwrap();
        let mut body = mirrors
            .start(req, server.addr, BackendProtocol::Http1, true)
            .unwrap();
        assert!(body.send(Bytes::from_static(b"data")));
        body.finish();
        assert!(
            began.elapsed() < Duration::from_millis(100),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(mirrors.in_flight(), 1);
        let s = next(&mut seen).await;
        assert_eq!(s.body, "data");
        assert!(began.elapsed() >= Duration::from_secs(1));
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        assert_eq!((mirrors.dropped(), mirrors.failed()), (0, 0));
    }

    #[tokio::test]
    async fn over_the_bound_start_refuses() {
        let (server, mut seen) = recorder(false, Duration::from_millis(300)).await;
        let mirrors = Mirrors::new(1);
        assert!(
            mirrors
                .start(
                    h1_request("GET", "/1"),
                    server.addr,
                    BackendProtocol::Http1,
                    false
                )
                .is_some()
        );
        assert!(
            mirrors
                .start(
                    h1_request("GET", "/2"),
                    server.addr,
                    BackendProtocol::Http1,
                    false
                )
                .is_none()
        );
        assert_eq!(mirrors.dropped(), 1);
        assert_eq!(mirrors.in_flight(), 1);
        // The request path's early check refuses too, counting the drop.
        assert!(mirrors.refuse_if_full());
        assert_eq!(mirrors.dropped(), 2);
        assert_eq!(next(&mut seen).await.target, "/1");
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        assert!(!mirrors.refuse_if_full());
        // Room again.
        assert!(
            mirrors
                .start(
                    h1_request("GET", "/3"),
                    server.addr,
                    BackendProtocol::Http1,
                    false
                )
                .is_some()
        );
        assert_eq!(next(&mut seen).await.target, "/3");
        assert_eq!(mirrors.dropped(), 2);
        assert!(
            Mirrors::new(0)
                .start(
                    h1_request("GET", "/"),
                    server.addr,
                    BackendProtocol::Http1,
                    false
                )
                .is_none()
        );
    }

    #[tokio::test]
    async fn stalled_mirror_is_abandoned_not_waited_for() {
        // Accepts connections and never reads from them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mirrors = Mirrors::new(4);
        let mut req = h1_request("POST", "/big");
        req.insert_header("Content-Length", "1000000000").unwrap();
        let mut body = mirrors
            .start(req, addr, BackendProtocol::Http1, true)
            .unwrap();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut slowest = Duration::ZERO;
        let mut accepted = 0;
        let began = Instant::now();
        while accepted < 15_000 {
            let t = Instant::now();
            let ok = body.send(chunk.clone());
            slowest = slowest.max(t.elapsed());
            if !ok {
                break;
            }
            accepted += 1;
            tokio::task::yield_now().await;
        }
        assert!(accepted < 15_000, "the channel never filled");
        assert!(accepted >= BODY_CHUNKS);
        assert!(slowest < Duration::from_millis(50), "{slowest:?}");
        assert!(began.elapsed() < Duration::from_secs(5));
        // Abandoned for good, and its task stops at once rather than at the timeout.
        assert!(!body.send(chunk.clone()));
        body.finish();
        assert!(wait_for(2, || mirrors.in_flight() == 0).await);
        assert_eq!((mirrors.dropped(), mirrors.failed()), (1, 0));
        holder.abort();
    }

    #[tokio::test]
    async fn unfinished_body_is_abandoned() {
        let (server, mut seen) = recorder(false, Duration::ZERO).await;
        let mirrors = Mirrors::new(4);
        let mut req = h1_request("POST", "/cut");
        req.insert_header("Content-Length", "10").unwrap();
        let mut body = mirrors
            .start(req, server.addr, BackendProtocol::Http1, true)
            .unwrap();
        assert!(body.send(Bytes::from_static(b"12345")));
        drop(body);
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        assert_eq!(mirrors.dropped(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), seen.recv())
                .await
                .map_or(true, |s| s.is_none()),
            "a cut body reached the mirror as a complete request"
        );
    }

    #[tokio::test]
    async fn unreachable_mirror_counts_a_failure() {
        let addr = closed_port().await;
        let mirrors = Mirrors::new(4);
        let mut req = h1_request("POST", "/");
        req.insert_header("Content-Length", "1").unwrap();
        let mut body = mirrors
            .start(req, addr, BackendProtocol::Http1, true)
            .unwrap();
        assert!(wait_for(5, || mirrors.failed() == 1).await);
        assert!(wait_for(5, || mirrors.in_flight() == 0).await);
        // The task is gone: feeding fails instead of blocking.
        assert!(!body.send(Bytes::from_static(b"x")));
        body.finish();
        assert_eq!(mirrors.dropped(), 0);
    }

    #[test]
    fn copies_run_on_a_low_priority_thread_that_ends_with_the_last_handle() {
        // No Tokio runtime here: the copy still goes out, from the mirror's own thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (server, mut seen) = rt.block_on(recorder(false, Duration::ZERO));
        let mirrors = Mirrors::new(4);
        assert!(
            mirrors
                .start(
                    h1_request("GET", "/outside"),
                    server.addr,
                    BackendProtocol::Http1,
                    false
                )
                .is_some()
        );
        assert_eq!(rt.block_on(next(&mut seen)).target, "/outside");
        // Ask the mirror runtime which OS thread runs its tasks.
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = mirrors
            .runtime
            .get()
            .unwrap()
            .as_ref()
            .unwrap()
            .handle
            .clone();
        handle.spawn(async move {
            let _ = tx.send(std::fs::read_link("/proc/thread-self").unwrap());
        });
        let task = PathBuf::from("/proc").join(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        assert_eq!(comm.trim(), "gateway-mirror");
        // Field 19 of stat is the nice value (fields counted after the command's parenthesis).
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        assert_eq!(fields[16], "19", "{stat}");
        // Dropping the last handle stops the thread.
        drop(handle);
        drop(mirrors);
        let mut gone = false;
        for _ in 0..250 {
            if !task.exists() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the mirror thread outlived its last handle");
    }
}
