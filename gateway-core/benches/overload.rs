//! Overload run through real loopback sockets: a burst of concurrent large uploads through a
//! route with retries on, to see what the request-body buffering cap
//! (`Limits::max_buffered_body_bytes`) holds.
//!
//! Each scenario starts a gateway and a backend that streams request bodies without keeping
//! them (it counts bytes), then opens `UPLOADS` connections at once, each sending a
//! `Content-Length` POST of `SIZE` bytes in 64 KiB writes from one shared buffer (the clients
//! hold no per-upload copy). Reported per scenario: answers by status, connections that ended
//! without an answer, wall time, and the process's peak RSS (`VmHWM`, gateway, backend and
//! clients together) before and after the burst.
//!
//! Run: `cargo bench -p gateway-core --bench overload` (release). Optional arguments: the
//! number of uploads (default 200) and the size in MiB (default 10). Results are written up in
//! `docs/benchmarks.md`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads each body frame by frame (keeping none) and answers its length.
async fn counting_backend(received: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let mut body = req.into_body();
                        let mut len = 0u64;
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Some(data) = frame.data_ref() {
                                len += data.len() as u64;
                            }
                        }
                        received.fetch_add(len, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            len.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The process's peak resident set (`VmHWM`) in MiB, from /proc.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Uploads `size` bytes; returns the status, or 0 when the connection ended without one.
async fn upload(addr: SocketAddr, size: usize, chunk: Arc<Vec<u8>>) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
    let (mut rd, mut wr) = s.split();
    let send = async {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    };
    let recv = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < 12 {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
    };
    // The gateway may answer (503) before the body is sent: the answer decides.
    let (_, status) = tokio::join!(send, recv);
    status
}

async fn scenario(name: &str, uploads: usize, size: usize, cap: usize) {
    let received = Arc::new(AtomicU64::new(0));
    let backend = counting_backend(received.clone()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut rule = Rule::prefix("/").backend(BackendRef::endpoints("b", vec![backend]));
    rule.retry = Some(Retry {
        codes: vec![502, 503],
        ..Retry::default()
    });
    let mut listener = Listener::new("bench/gw/http", 80);
    listener.routes = vec![Route::new("bench", "upload").rule(rule).into()];
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(Config {
        binds: vec![Bind {
            address,
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        limits: Limits {
            max_buffered_body_bytes: cap,
            ..Limits::default()
        },
    })
    .await
    .unwrap();

    let chunk = Arc::new(vec![b'x'; 64 * 1024]);
    let before = peak_rss_mib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..uploads {
        tasks.spawn(upload(address, size, chunk.clone()));
    }
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(status) = tasks.join_next().await {
        *by_status.entry(status.unwrap_or(0)).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let after = peak_rss_mib();
    let mut held = gw.overload_stats().buffered_body_bytes;
    for _ in 0..100 {
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        held = gw.overload_stats().buffered_body_bytes;
    }
    let ok = by_status.get(&200).copied().unwrap_or(0);
    let refused = by_status.get(&503).copied().unwrap_or(0);
    let none = by_status.get(&0).copied().unwrap_or(0);
    let other: usize = by_status
        .iter()
        .filter(|(s, _)| ![0, 200, 503].contains(*s))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{name:<22} cap {:>9} KiB | 200: {ok:>4}  503: {refused:>4}  other: {other:>3}  no answer: {none:>3} | {:>6.2} s, {:>8.1} MiB/s to backend | peak RSS {before:>7.1} -> {after:>7.1} MiB | held after: {held} B",
        cap / 1024,
        elapsed.as_secs_f64(),
        received.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64(),
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let uploads = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let size_mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let size = size_mib * 1024 * 1024;
    println!("{uploads} concurrent uploads of {size_mib} MiB, retries on (502/503, 2 attempts)");
    scenario(
        "default cap",
        uploads,
        size,
        Limits::DEFAULT_MAX_BUFFERED_BODY_BYTES,
    )
    .await;
    scenario("cap 4 MiB", uploads, size, 4 * 1024 * 1024).await;
    scenario("cap 1 MiB", uploads, size, 1024 * 1024).await;
}
