// PATCH(pingora-gateway): this whole file is added by the gateway's patch (vendor/README.md).
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0

//! The pool of idle upstream streams of a [`super::TransportConnector`].
//!
//! Pingora's own pool (`pingora_pool::ConnectionPool`) spawns a task for every stream it is given
//! back, wraps the stream in an `Arc<tokio::sync::Mutex<_>>` held by that task, and records it in
//! a global LRU and a `DashMap`; the next request that takes the stream wakes the task and waits
//! for it to let go of the lock. Under keep-alive load that is a task spawn, several allocations
//! and two extra task polls for every proxied request.
//!
//! This pool keeps idle streams in a plain map from the peer's reuse key to a list of streams,
//! newest last (the next request takes the most recently used one, as Pingora's hot queue does).
//! Taking and returning a stream is a short critical section and no task. What the per-stream
//! task did is done as follows:
//! - a stream the server closed (or wrote to) while idle is found when it is taken
//!   (`test_reusable_stream` reads it without waiting, as Pingora already did on every reuse),
//!   and by one background sweep task per pool that looks at every idle stream each
//!   [`SWEEP_EVERY`] and closes those that ended or passed their idle timeout, so a closed
//!   socket does not stay open for long;
//! - the idle timeout is checked when a stream is taken (an expired one is closed, never used)
//!   and by the sweep;
//! - the size bound evicts the least recently returned stream (over all peers), as Pingora's LRU
//!   did, and reports it to the keep-alive pool callback.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::PoolCallback;
use crate::protocols::Stream;

/// How often the sweep looks at the idle streams.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One idle stream.
struct Idle {
    stream: Stream,
    /// When it was returned to the pool.
    since: Instant,
    /// When its idle timeout passes, if it has one.
    expires: Option<Instant>,
    /// Order of return over the whole pool, for the size bound.
    seq: u64,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

#[derive(Default)]
struct Inner {
    groups: HashMap<u64, VecDeque<Idle>>,
    count: usize,
    next_seq: u64,
    /// A sweep task runs (or is about to).
    sweeping: bool,
}

/// Idle upstream streams by reuse key (module documentation).
pub(crate) struct IdlePool {
    inner: Mutex<Inner>,
    size: usize,
}

impl IdlePool {
    /// A pool holding at most `size` idle streams.
    pub(crate) fn new(size: usize) -> Self {
        IdlePool {
            inner: Mutex::new(Inner::default()),
            size,
        }
    }

    /// Takes the most recently returned stream of `key` whose idle timeout has not passed.
    /// Expired ones met on the way are closed (after the lock is released).
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut inner = self.inner.lock();
            let mut found = None;
            let mut taken = 0;
            if let Some(group) = inner.groups.get_mut(&key) {
                while let Some(idle) = group.pop_back() {
                    taken += 1;
                    if idle.expired(now) {
                        expired.push(idle);
                    } else {
                        found = Some(idle.stream);
                        break;
                    }
                }
            }
            inner.count -= taken;
            found
        };
        drop(expired);
        found
    }

    /// Returns `stream` to the pool under `key`. When the pool is over its size, the least
    /// recently returned stream is closed and `callback` told how long it was idle.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        callback: Option<&PoolCallback>,
        unexpected_data: &Arc<AtomicU64>,
    ) {
        if self.size == 0 {
            return;
        }
        let now = Instant::now();
        let (evicted, start_sweep) = {
            let mut inner = self.inner.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.groups.entry(key).or_default().push_back(Idle {
                stream,
                since: now,
                expires: idle_timeout.map(|t| now + t),
                seq,
            });
            inner.count += 1;
            let evicted = if inner.count > self.size {
                inner.evict_oldest()
            } else {
                None
            };
            (evicted, !std::mem::replace(&mut inner.sweeping, true))
        };
        if let Some(idle) = evicted {
            if let Some(callback) = callback {
                callback(idle.since.elapsed());
            }
        }
        if start_sweep {
            self.start_sweep(unexpected_data);
        }
    }

    /// Starts the sweep task. Outside a Tokio runtime no sweep runs (streams are still checked
    /// when taken) and the next `put` tries again.
    fn start_sweep(self: &Arc<Self>, unexpected_data: &Arc<AtomicU64>) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweep_loop(Arc::downgrade(self), unexpected_data.clone()));
            }
            Err(_) => self.inner.lock().sweeping = false,
        }
    }

    /// Closes the idle streams that ended, received data or passed their idle timeout. Returns
    /// whether any idle stream is left.
    fn sweep(&self, unexpected_data: &AtomicU64) -> bool {
        let now = Instant::now();
        let mut closed = Vec::new();
        let left = {
            let mut inner = self.inner.lock();
            let mut removed = 0;
            inner.groups.retain(|_, group| {
                let before = group.len();
                let mut keep = VecDeque::with_capacity(0);
                for mut idle in group.drain(..) {
                    if !idle.expired(now)
                        && super::test_reusable_stream(&mut idle.stream, unexpected_data)
                    {
                        keep.push_back(idle);
                    } else {
                        closed.push(idle);
                    }
                }
                removed += before - keep.len();
                if keep.is_empty() {
                    return false;
                }
                *group = keep;
                true
            });
            inner.count -= removed;
            inner.count > 0
        };
        drop(closed);
        left
    }

    /// The number of idle streams (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().count
    }
}

impl Inner {
    /// Removes the least recently returned stream of the whole pool.
    fn evict_oldest(&mut self) -> Option<Idle> {
        let key = self
            .groups
            .iter()
            .filter_map(|(k, g)| g.front().map(|i| (i.seq, *k)))
            .min()?
            .1;
        let group = self.groups.get_mut(&key)?;
        let idle = group.pop_front()?;
        if group.is_empty() {
            self.groups.remove(&key);
        }
        self.count -= 1;
        Some(idle)
    }
}

/// The sweep task: every [`SWEEP_EVERY`] while the pool has idle streams; it ends when the pool
/// is empty (the next `put` starts another) or gone.
async fn sweep_loop(pool: Weak<IdlePool>, unexpected_data: Arc<AtomicU64>) {
    let mut running = SweepRunning(Some(pool.clone()));
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if pool.sweep(&unexpected_data) {
            continue;
        }
        // Decided under the lock: a `put` either comes before (and the pool is not empty) or
        // after (and sees that no sweep runs).
        let mut inner = pool.inner.lock();
        if inner.count == 0 {
            inner.sweeping = false;
            running.0 = None;
            return;
        }
    }
}

/// Clears the pool's `sweeping` flag when the sweep task is dropped before it ended on its own
/// (its runtime shut down): the next `put` then starts another.
struct SweepRunning(Option<Weak<IdlePool>>);

impl Drop for SweepRunning {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take().and_then(|p| p.upgrade()) {
            pool.inner.lock().sweeping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client: crate::protocols::l4::stream::Stream = client.unwrap().into();
        (Box::new(client), server.unwrap().0)
    }

    #[tokio::test]
    async fn takes_the_newest_stream_of_the_key_and_honours_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = evictions.clone();
        let callback: PoolCallback = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let unexpected = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(IdlePool::new(2));
        let mut servers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (s, server) = pair(&listener).await;
            ids.push(s.id());
            servers.push(server);
            pool.put(1, s, None, Some(&callback), &unexpected);
        }
        assert_eq!(pool.len(), 2, "the oldest was evicted");
        assert_eq!(evictions.load(Ordering::Relaxed), 1);
        assert!(pool.take(2).is_none());
        assert_eq!(pool.take(1).unwrap().id(), ids[2]);
        assert_eq!(pool.take(1).unwrap().id(), ids[1]);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn expired_streams_are_not_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unexpected = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(IdlePool::new(8));
        let (s, _server) = pair(&listener).await;
        pool.put(1, s, Some(Duration::ZERO), None, &unexpected);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn the_sweep_closes_streams_the_server_closed_or_wrote_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unexpected = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(IdlePool::new(8));
        let (a, server_a) = pair(&listener).await;
        let (b, mut server_b) = pair(&listener).await;
        let (c, _server_c) = pair(&listener).await;
        let kept = c.id();
        pool.put(1, a, None, None, &unexpected);
        pool.put(1, b, None, None, &unexpected);
        pool.put(2, c, None, None, &unexpected);
        drop(server_a);
        server_b.write_all(b"x").await.unwrap();
        // Let the reactor see both events.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !pool.sweep(&unexpected) || pool.len() == 1 {
                break;
            }
        }
        assert_eq!(pool.len(), 1);
        assert_eq!(unexpected.load(Ordering::Relaxed), 1);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.take(2).unwrap().id(), kept);
    }
}
