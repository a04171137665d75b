//! Downstream connections: the whole-request-head deadline and the keep-alive idle timeout.
//!
//! Pingora bounds each *read* of a request head (60 s for the first request; on a reused
//! HTTP/1.1 connection it waits for the next request without any bound), so a client sending one
//! byte every few seconds holds a connection for as long as it likes (slowloris). The gateway
//! wraps every downstream stream in a [`GuardedStream`], which fails the read that would go past
//! [`crate::config::Limits::header_read_timeout`] counted from the first byte of a request head,
//! and drives the HTTP/1 keep-alive loop itself ([`serve_h1`]) so that the wait for the next
//! request is bounded by [`crate::config::Limits::keepalive_idle_timeout`].
//!
//! The deadline is armed per request without allocating: the timer is created once per
//! connection and reset; the proxy disarms it from its first phase ([`head_done`]) and the
//! keep-alive loop re-arms it before the next request ([`next_head`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proxy::GatewayProxy;

/// [`GuardedStream::phase`]: waiting for the first byte of the next request head (idle).
const WAITING: u8 = 0;
/// [`GuardedStream::phase`]: a request head has started; the deadline runs.
const HEAD: u8 = 1;
/// [`GuardedStream::phase`]: the head is complete; body and response are not bounded here.
const DONE: u8 = 2;

/// A downstream stream whose reads fail once a request head has taken longer than its limit.
#[derive(Debug)]
pub(crate) struct GuardedStream {
    inner: Stream,
    limit: Duration,
    /// [`WAITING`], [`HEAD`] or [`DONE`]; changed through a shared reference by [`head_done`]
    /// and [`next_head`].
    phase: AtomicU8,
    /// Fires at the deadline of the current head; reset, never re-created.
    timer: Pin<Box<Sleep>>,
}

impl GuardedStream {
    /// Wraps `inner`. `started`: when the first byte of the first request head arrived, if the
    /// accept path already read some (the h2c preface check); otherwise the deadline starts
    /// with the first byte read through the wrapper.
    pub(crate) fn new(inner: Stream, limit: Duration, started: Option<Instant>) -> Self {
        let (phase, deadline) = match started {
            Some(at) => (HEAD, at + limit),
            None => (WAITING, Instant::now() + limit),
        };
        GuardedStream {
            inner,
            limit,
            phase: AtomicU8::new(phase),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// The [`GuardedStream`] behind `stream`, if it is one.
fn guarded(stream: &Stream) -> Option<&GuardedStream> {
    (**stream).as_any().downcast_ref::<GuardedStream>()
}

/// Stops the head deadline of the current request: its head has been read. Called from the
/// proxy's first phase; a no-op for HTTP/2 streams and unwrapped streams.
pub(crate) fn head_done(stream: Option<&Stream>) {
    if let Some(g) = stream.and_then(guarded) {
        g.phase.store(DONE, Ordering::Release);
    }
}

/// Re-arms the head deadline for the next request on a kept-alive connection: it starts with
/// that request's first byte.
fn next_head(stream: &Stream) {
    if let Some(g) = guarded(stream) {
        g.phase.store(WAITING, Ordering::Release);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.phase.load(Ordering::Acquire);
        if phase == HEAD && this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete within the header read timeout",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if phase == WAITING && matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The first byte of a head: the deadline starts now. The timer registers its waker
            // on the next read, which the head parser makes as long as the head is incomplete.
            let _ = this
                .phase
                .compare_exchange(WAITING, HEAD, Ordering::AcqRel, Ordering::Acquire);
            this.timer.as_mut().reset(Instant::now() + this.limit);
        }
        read
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Pingora's keep-alive setting for an idle timeout: whole seconds, at least one (zero would
/// mean "no timeout").
fn idle_secs(idle: Duration) -> u64 {
    idle.as_secs().max(1)
}

/// Serves the HTTP/1 requests of one downstream connection until it closes, like Pingora's own
/// loop but with every wait for the next request bounded by `idle` (Pingora leaves a reused
/// HTTP/1.1 connection waiting forever) and the head deadline re-armed per request.
pub(crate) async fn serve_h1(
    proxy: &Arc<HttpProxy<GatewayProxy>>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    idle: Duration,
) {
    let keepalive = |session: &mut ServerSession, carried: bool| {
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else if !carried || session.get_keepalive().is_some() {
            session.set_keepalive(Some(idle_secs(idle)));
        }
    };
    let mut session = ServerSession::new_http1(stream);
    keepalive(&mut session, false);
    let mut reused = proxy.process_new_http(session, shutdown).await;
    while let Some((stream, settings)) = reused.map(|r| r.consume()) {
        next_head(&stream);
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            HttpPersistentSettings::apply_to_session(settings, &mut session);
        }
        keepalive(&mut session, true);
        reused = proxy.process_new_http(session, shutdown).await;
    }
}
