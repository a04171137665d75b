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
//! keep-alive loop re-arms it before the next request ([`serve_h1`]), which also waits for that
//! request without holding Pingora's request state or any buffer (see [`serve_h1`]).
//!
//! The wrapper also coalesces writes: a small write (a response head) is held until the next
//! write or flush and then leaves in the same system call (one vectored write), so a response
//! head and a small body cost one `sendto`, not two. At most one write is held at a time, and a
//! flush or shutdown always sends it: nothing waits longer than until the writer's next step
//! (Pingora flushes at the end of every response and after every chunk of a chunked one).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
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
    /// and [`GuardedStream::start_idle`].
    phase: AtomicU8,
    /// Fires at the deadline of the current head; reset, never re-created.
    timer: Pin<Box<Sleep>>,
    /// A small write held back to leave with the next one (see the module docs); its first
    /// `held_from` bytes are already sent. Allocated with the first held write, then reused.
    held: Vec<u8>,
    held_from: usize,
    /// The first bytes of the next request head, read by [`GuardedStream::poll_next_request`]
    /// while the connection waited idle; reads return them before reading the socket again.
    /// Empty (no allocation) otherwise.
    pushback: Vec<u8>,
    pushback_from: usize,
}

/// The largest write held back to be coalesced with the next: a response head fits.
const HOLD_MAX: usize = 4096;

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
            held: Vec::new(),
            held_from: 0,
            pushback: Vec::new(),
            pushback_from: 0,
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

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pushback_from < this.pushback.len() {
            // Bytes the idle wait read: already counted as the start of a head.
            let rest = &this.pushback[this.pushback_from..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pushback_from += n;
            if this.pushback_from == this.pushback.len() {
                this.pushback = Vec::new();
                this.pushback_from = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.poll_read_guarded(cx, buf)
    }
}

/// The most bytes the idle wait takes in one read (Pingora's initial request-head buffer): a
/// typical request head arrives whole and costs the same single read as before.
const NEXT_REQUEST_READ: usize = 4096;

impl GuardedStream {
    /// Reads from the inner stream, failing once the current head is past its deadline, and
    /// starting the deadline with the first byte of a head.
    fn poll_read_guarded(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let phase = self.phase.load(Ordering::Acquire);
        if phase == HEAD && self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete within the header read timeout",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if phase == WAITING && matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The first byte of a head: the deadline starts now. The timer registers its waker
            // on the next read, which the head parser makes as long as the head is incomplete.
            let _ = self
                .phase
                .compare_exchange(WAITING, HEAD, Ordering::AcqRel, Ordering::Acquire);
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        read
    }

    /// Arms the idle bound of [`GuardedStream::poll_next_request`]: the next request's first
    /// byte must come within `idle` from now. Reuses the head deadline's timer, which is idle
    /// until that byte comes.
    fn start_idle(&mut self, idle: Duration) {
        self.phase.store(WAITING, Ordering::Release);
        self.timer.as_mut().reset(Instant::now() + idle);
    }

    /// Waits for the first bytes of the next request while holding no buffer: the read goes
    /// into a buffer on the stack of this call (not into the connection's future), and the
    /// bytes are kept only once they came. While the wait is pending the held-write buffer is
    /// released too, so an idle keep-alive connection costs only its task and stream structs.
    ///
    /// Ready with `true` when bytes came, `false` when the peer closed, an error when the idle
    /// bound of [`GuardedStream::start_idle`] passed or the read failed.
    fn poll_next_request(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.pushback_from < self.pushback.len() {
            return Poll::Ready(Ok(true));
        }
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); NEXT_REQUEST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        match self.poll_read_guarded(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) => {
                self.pushback = buf.filled().to_vec();
                self.pushback_from = 0;
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.held.capacity() > 0 && self.held.is_empty() {
                    self.held = Vec::new();
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the keep-alive idle timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl GuardedStream {
    /// Sends what is held, together with `next` when given (one vectored write). Ready with the
    /// number of `next`'s bytes that went out once nothing is held any more.
    fn poll_send_held(
        &mut self,
        cx: &mut Context<'_>,
        next: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        while self.held_from < self.held.len() {
            let pending = &self.held[self.held_from..];
            let written = if next.is_empty() {
                ready!(Pin::new(&mut *self.inner).poll_write(cx, pending))?
            } else {
                let bufs = [std::io::IoSlice::new(pending), std::io::IoSlice::new(next)];
                ready!(Pin::new(&mut *self.inner).poll_write_vectored(cx, &bufs))?
            };
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            let of_held = written.min(pending.len());
            self.held_from += of_held;
            if self.held_from == self.held.len() {
                self.held.clear();
                self.held_from = 0;
                return Poll::Ready(Ok(written - of_held));
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.held.is_empty() {
            if buf.len() <= HOLD_MAX {
                // Held until the next write or flush (module docs).
                this.held.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
            return Pin::new(&mut *this.inner).poll_write(cx, buf);
        }
        let sent = ready!(this.poll_send_held(cx, buf))?;
        if sent > 0 {
            return Poll::Ready(Ok(sent));
        }
        // The held bytes went out alone: write `buf` now, not held (at most one write waits).
        Pin::new(&mut *this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_held(cx, &[]))?;
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_held(cx, &[]))?;
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_send_held(cx, &[]))?;
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        // What is held goes out first; a failure here shows again in the shutdown.
        let _ = std::future::poll_fn(|cx| self.poll_send_held(cx, &[])).await;
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
///
/// Between requests the connection waits in [`GuardedStream::poll_next_request`], outside
/// Pingora's request future: that future (about 15 KB, with the session and its head buffer) is
/// boxed per request by Pingora and freed when the response is done, so an idle keep-alive
/// connection holds only this loop's small state, the stream structs and no buffer. A shutdown
/// closes idle connections at once.
pub(crate) async fn serve_h1(
    proxy: &Arc<HttpProxy<GatewayProxy>>,
    mut stream: Box<GuardedStream>,
    shutdown: &ShutdownWatch,
    idle: Duration,
) {
    let mut stopping = shutdown.clone();
    let mut settings: Option<HttpPersistentSettings> = None;
    let mut first = true;
    loop {
        // The first request of a plain connection already started (its first bytes were read
        // by the h2c preface check) and keeps its head deadline.
        if !first || stream.phase.load(Ordering::Acquire) == WAITING {
            stream.start_idle(idle);
        }
        if *stopping.borrow_and_update() {
            return;
        }
        // A pipelined request read with the previous one is served without waiting.
        let pipelined = settings.as_ref().is_some_and(|s| s.has_pipelined_prefix());
        if !pipelined {
            let next = std::future::poll_fn(|cx| stream.poll_next_request(cx));
            let came = tokio::select! {
                biased;
                came = next => came,
                _ = stopping.changed() => return,
            };
            match came {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "closing the connection while waiting for a request");
                    return;
                }
            }
        }
        let mut session = ServerSession::new_http1(stream);
        match settings.take() {
            Some(settings) => HttpPersistentSettings::apply_to_session(settings, &mut session),
            // RFC 9112 section 9.3.2: requests a client pipelines are answered in order (one
            // at a time), not dropped with the connection (Pingora's default).
            None => session.set_pipelining_enabled(true),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else if first || session.get_keepalive().is_some() {
            session.set_keepalive(Some(idle_secs(idle)));
        }
        first = false;
        // Pingora's request future is boxed by the method itself (an `async_trait` method).
        let reused = proxy.process_new_http(session, shutdown).await;
        let Some((next, carried)) = reused.map(|r| r.consume()) else {
            return;
        };
        // Pingora hands back the stream it was given: the wrapper, in the same box.
        let Ok(next) = next.into_any().downcast::<GuardedStream>() else {
            return;
        };
        stream = next;
        settings = carried;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// An inner stream that records each write call (a vectored write is one call).
    #[derive(Debug, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.calls.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = joined.len();
            self.calls.lock().unwrap().push(joined);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[async_trait]
    impl Shutdown for Recorder {
        async fn shutdown(&mut self) {}
    }
    impl UniqueID for Recorder {
        fn id(&self) -> UniqueIDType {
            0
        }
    }
    impl Ssl for Recorder {}
    impl GetTimingDigest for Recorder {
        fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
            Vec::new()
        }
    }
    impl GetProxyDigest for Recorder {
        fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
            None
        }
    }
    impl GetSocketDigest for Recorder {
        fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
            None
        }
    }
    impl Peek for Recorder {}

    fn guarded() -> (GuardedStream, Arc<Mutex<Vec<Vec<u8>>>>) {
        let recorder = Recorder::default();
        let calls = recorder.calls.clone();
        let stream = GuardedStream::new(Box::new(recorder), Duration::from_secs(10), None);
        (stream, calls)
    }

    #[tokio::test]
    async fn head_and_small_body_leave_in_one_write() {
        let (mut s, calls) = guarded();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n")
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty(), "the head is held");
        s.write_all(b"ok\n").await.unwrap();
        s.flush().await.unwrap();
        let calls = calls.lock().unwrap();
        assert_eq!(
            *calls,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec()]
        );
    }

    #[tokio::test]
    async fn at_most_one_write_is_held_and_flush_sends_it() {
        let (mut s, calls) = guarded();
        s.write_all(b"a").await.unwrap();
        s.write_all(b"b").await.unwrap();
        // "a" went out with "b"; "b" itself is not held back.
        assert_eq!(*calls.lock().unwrap(), vec![b"ab".to_vec()]);
        s.write_all(b"c").await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 1, "c is held");
        s.flush().await.unwrap();
        assert_eq!(calls.lock().unwrap()[1], b"c");
        // Large writes are never held.
        let big = vec![b'x'; HOLD_MAX + 1];
        s.write_all(&big).await.unwrap();
        assert_eq!(calls.lock().unwrap()[2], big);
        // Shutdown sends what is held.
        s.write_all(b"d").await.unwrap();
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        assert_eq!(calls.lock().unwrap()[3], b"d");
        s.write_all(b"e").await.unwrap();
        Shutdown::shutdown(&mut s).await;
        assert_eq!(calls.lock().unwrap()[4], b"e");
    }

    /// One end of an in-memory pipe as a Pingora stream.
    #[derive(Debug)]
    struct Pipe(tokio::io::DuplexStream);

    impl AsyncRead for Pipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    #[async_trait]
    impl Shutdown for Pipe {
        async fn shutdown(&mut self) {}
    }
    impl UniqueID for Pipe {
        fn id(&self) -> UniqueIDType {
            0
        }
    }
    impl Ssl for Pipe {}
    impl GetTimingDigest for Pipe {
        fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
            Vec::new()
        }
    }
    impl GetProxyDigest for Pipe {
        fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
            None
        }
    }
    impl GetSocketDigest for Pipe {
        fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
            None
        }
    }
    impl Peek for Pipe {}

    fn piped() -> (GuardedStream, tokio::io::DuplexStream) {
        let (ours, peer) = tokio::io::duplex(64 * 1024);
        let stream = GuardedStream::new(Box::new(Pipe(ours)), Duration::from_secs(10), None);
        (stream, peer)
    }

    #[tokio::test]
    async fn the_idle_wait_holds_no_buffer_and_hands_the_first_bytes_to_the_next_read() {
        use tokio::io::AsyncReadExt;
        let (mut s, mut peer) = piped();
        // A response leaves through the held-write buffer, which stays allocated for reuse.
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        s.flush().await.unwrap();
        assert!(s.held.capacity() > 0);

        s.start_idle(Duration::from_secs(60));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(s.poll_next_request(&mut cx).is_pending());
        assert_eq!(
            s.held.capacity(),
            0,
            "an idle connection releases the held-write buffer"
        );
        assert_eq!(s.pushback.capacity(), 0);
        assert_eq!(s.phase.load(Ordering::Acquire), WAITING);

        peer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let came = std::future::poll_fn(|cx| s.poll_next_request(cx)).await;
        assert!(came.unwrap());
        assert_eq!(
            s.phase.load(Ordering::Acquire),
            HEAD,
            "the head deadline runs"
        );
        peer.write_all(b"Host: a\r\n\r\n").await.unwrap();
        // Reads see the bytes the wait took first, then the socket, in order.
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n");
        assert_eq!(
            s.pushback.capacity(),
            0,
            "the kept bytes are freed once read"
        );
        let n = s.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"Host: a\r\n\r\n");

        // The peer closing while the connection waits ends the wait without an error.
        s.start_idle(Duration::from_secs(60));
        drop(peer);
        let came = std::future::poll_fn(|cx| s.poll_next_request(cx)).await;
        assert!(!came.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_wait_ends_at_the_idle_timeout() {
        let (mut s, _peer) = piped();
        s.start_idle(Duration::from_secs(5));
        let started = Instant::now();
        let came = std::future::poll_fn(|cx| s.poll_next_request(cx)).await;
        assert_eq!(came.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
