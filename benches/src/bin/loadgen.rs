//! An open-loop, constant-rate HTTP load generator for the peer comparison
//! (`benches/peers/peers.py`), with latency measured from each request's intended send time.
//!
//! ```text
//! loadgen --url http://127.0.0.1:18090/ --routes 1000 --rate 10000 --connections 50 --duration 8
//! loadgen --url https://127.0.0.1:18443/ --ca cert.pem --sni bench.example.com --h2 --streams 100
//! loadgen --url https://127.0.0.1:18443/ --ca cert.pem --new-connection-per-request --rate 0
//! loadgen --url http://127.0.0.1:18090/ --idle 10000 --duration 5
//! ```
//!
//! **Load model.** `--connections` connections (HTTP/1.1 keep-alive, or HTTP/2 with `--h2`, each
//! carrying `--streams` concurrent streams) are opened first. Each sender (one per HTTP/1
//! connection, one per HTTP/2 stream) sends one request at a time. With `--rate R` the senders
//! together send R requests per second on a fixed schedule: sender `w` of `W` intends its
//! `k`-th request at `start + (w + k·W) / R`. With `--rate 0` every sender sends its next request
//! as soon as the previous one is answered (closed loop, like wrk: that measures saturation).
//!
//! **Latency.** A request's latency runs to the end of its response body from its *intended*
//! send time when its sender was still busy with the previous request at that time (the server
//! fell behind: that waiting is counted, so coordinated omission is not hidden), and from the
//! actual send time when the sender was idle and woke up late (the timer's slack of up to a
//! millisecond is the load generator's, not the server's). Intended requests not sent by the
//! end of the run are reported as `missed`. Latencies go to an HdrHistogram (1 µs to 60 s, 3
//! significant digits).
//!
//! **Modes.** `--new-connection-per-request`: every request opens its own TCP (and TLS)
//! connection and closes it after the response (`Connection: close`). `new_connections` in the
//! output counts every connection opened, including reconnections: a connection the server
//! closes (its keep-alive request limit, `Connection: close`) is replaced, and a request it
//! refused unsent is sent again once on the new connection, not counted as an error. `--idle N`: open N keep-alive connections, send one request on each,
//! print `ready` on stderr, hold them open for `--duration` seconds, then report how many stayed
//! open. TLS (`https://` URLs) is TLS 1.3 only, verified against `--ca` with the name `--sni`.
//!
//! Output: one JSON object on stdout (fields documented in docs/benchmarks.md).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Open-loop constant-rate HTTP load generator (see the module documentation).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen")]
struct Args {
    /// Target: `http://IP:PORT/path` or `https://IP:PORT/path`. With `--routes`, the path is
    /// replaced per request.
    #[arg(long)]
    url: Uri,

    /// Requests go to `/svc-{i}/x` for a random `i` below this (the peer comparison's route
    /// table); 0 keeps the URL's path.
    #[arg(long, default_value_t = 0)]
    routes: u32,

    /// The last path segment with `--routes` (`/svc-{i}/{tail}`).
    #[arg(long, default_value = "x")]
    tail: String,

    /// A request header `name: value` sent with every request (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,

    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,

    /// The request body sent with every request (a `content-length` body); default: none.
    #[arg(long)]
    body: Option<String>,

    /// Total requests per second across all senders; 0: closed loop (as fast as answered).
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Connections to open.
    #[arg(long, default_value_t = 50)]
    connections: usize,

    /// Concurrent streams per connection (HTTP/2 only).
    #[arg(long, default_value_t = 1)]
    streams: usize,

    /// Speak HTTP/2 (prior knowledge on `http://`, ALPN `h2` on `https://`).
    #[arg(long)]
    h2: bool,

    /// Seconds to send for (or, with `--idle`, to hold the connections).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,

    /// A new connection for every request, closed after the response.
    #[arg(long)]
    new_connection_per_request: bool,

    /// Open this many keep-alive connections, one request each, and hold them idle.
    #[arg(long)]
    idle: Option<usize>,

    /// PEM file of the CA (or self-signed certificate) that signs the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,

    /// The TLS server name (SNI and certificate check); default: the URL's host.
    #[arg(long)]
    sni: Option<String>,

    /// The `Host` header; default: the SNI name on TLS, the URL's authority otherwise.
    #[arg(long)]
    host: Option<String>,

    /// Disable TLS session resumption (every new connection does a full handshake).
    #[arg(long)]
    no_tls_resume: bool,

    /// Seconds before an unanswered request counts as an error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,

    /// Tokio worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where and how to connect, shared by every sender.
struct Target {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    h2: bool,
    scheme: &'static str,
    host: String,
    routes: u32,
    tail: String,
    path: String,
    method: http::Method,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Target {
    fn from_args(a: &Args) -> Result<Self, BoxError> {
        let scheme = match a.url.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            other => return Err(format!("unsupported scheme {other:?}").into()),
        };
        let authority = a.url.authority().ok_or("the URL has no host")?;
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let ip: std::net::IpAddr = authority
            .host()
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| "the URL's host must be an IP address")?;
        let addr = SocketAddr::new(ip, port);
        let sni = a.sni.clone().unwrap_or_else(|| authority.host().to_owned());
        let tls = if scheme == "https" {
            let mut roots = rustls::RootCertStore::empty();
            let ca = a.ca.as_ref().ok_or("https needs --ca")?;
            for cert in CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![if a.h2 {
                b"h2".to_vec()
            } else {
                b"http/1.1".to_vec()
            }];
            if a.no_tls_resume {
                config.resumption = rustls::client::Resumption::disabled();
            }
            let name = ServerName::try_from(sni.clone())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let host = a.host.clone().unwrap_or_else(|| {
            if tls.is_some() {
                sni.clone()
            } else {
                authority.to_string()
            }
        });
        Ok(Target {
            addr,
            tls,
            h2: a.h2,
            scheme,
            host,
            routes: a.routes,
            tail: a.tail.clone(),
            path: a
                .url
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string()),
            method: a.method.parse()?,
            headers: a
                .headers
                .iter()
                .map(|h| {
                    let (name, value) = h.split_once(':').ok_or("--header needs name: value")?;
                    Ok::<_, BoxError>((name.trim().parse()?, value.trim().parse()?))
                })
                .collect::<Result<_, _>>()?,
            body: Bytes::from(a.body.clone().unwrap_or_default()),
        })
    }

    async fn connect(&self) -> Result<Sender, BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                self.handshake(tls).await
            }
            None => self.handshake(tcp).await,
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Sender, BoxError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if self.h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    fn request(&self, rng: &mut u64, close: bool) -> Request<Full<Bytes>> {
        let path = if self.routes > 0 {
            // xorshift64: cheap, and every sender has its own sequence.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            format!("/svc-{}/{}", *rng % u64::from(self.routes), self.tail)
        } else {
            self.path.clone()
        };
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(if self.h2 {
                format!("{}://{}{path}", self.scheme, self.host)
            } else {
                path
            });
        if !self.h2 {
            b = b.header(http::header::HOST, &self.host);
            if close {
                b = b.header(http::header::CONNECTION, "close");
            }
        }
        for (name, value) in &self.headers {
            b = b.header(name, value);
        }
        b.body(Full::new(self.body.clone()))
            .expect("a valid request")
    }
}

/// How a request ended.
enum Exchange {
    /// Answered: the status, the body bytes, and whether the server closes the connection.
    Done(u16, u64, bool),
    /// Never sent: the connection was closed before (the server's keep-alive or stream limit);
    /// safe to send again on a new connection.
    NotSent,
    /// Failed after it may have reached the server.
    Failed,
}

/// Sends one request and reads the whole body.
async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Exchange {
    let sent = match sender {
        Sender::H1(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(_) => return Exchange::NotSent,
        },
        Sender::H2(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(_) => return Exchange::NotSent,
        },
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.is_canceled() => return Exchange::NotSent,
        Err(_) => return Exchange::Failed,
    };
    let status = resp.status().as_u16();
    let close = resp
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            Err(_) => return Exchange::Failed,
        }
    }
    Exchange::Done(status, bytes, close)
}

/// What one sender counted.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    missed: u64,
    bytes: u64,
    connections: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            non_2xx: 0,
            errors: 0,
            missed: 0,
            bytes: 0,
            connections: 0,
        }
    }

    fn merge(&mut self, o: Tally) {
        self.hist
            .add(o.hist)
            .expect("histograms of the same bounds");
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        self.missed += o.missed;
        self.bytes += o.bytes;
        self.connections += o.connections;
    }
}

/// One sender: requests on `sender` (or on a new connection each), on schedule, until `end`.
#[allow(clippy::too_many_arguments)]
async fn run_sender(
    target: Arc<Target>,
    mut sender: Option<Sender>,
    index: usize,
    senders: usize,
    rate: u64,
    start: Instant,
    end: Instant,
    timeout: Duration,
    new_conn: bool,
) -> Tally {
    let mut t = Tally::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((index as u64 + 1) << 17);
    let interval = (rate > 0).then(|| Duration::from_secs_f64(senders as f64 / rate as f64));
    let offset = Duration::from_secs_f64(if rate > 0 {
        index as f64 / rate as f64
    } else {
        0.0
    });
    let mut k: u32 = 0;
    loop {
        let now = Instant::now();
        let intended = match interval {
            Some(iv) => start + offset + iv * k,
            None => now,
        };
        if intended >= end || now >= end {
            // Past the window: what is still due is missed, not sent late.
            break;
        }
        k += 1;
        let begin = if intended > now {
            tokio::time::sleep_until(intended.into()).await;
            // Idle sender woken by the timer: count from the actual send.
            Instant::now()
        } else {
            // Busy past the intended time: the server made us wait, count it.
            intended
        };
        // A request whose connection was closed before it went out (the server's keep-alive
        // limit) is sent again once on a new connection; its latency still runs from `begin`.
        let mut outcome = Exchange::NotSent;
        for _ in 0..2 {
            if new_conn || sender.is_none() {
                match target.connect().await {
                    Ok(s) => {
                        t.connections += 1;
                        sender = Some(s);
                    }
                    Err(_) => {
                        outcome = Exchange::Failed;
                        break;
                    }
                }
            }
            let req = target.request(&mut rng, new_conn);
            let s = sender.as_mut().expect("connected above");
            outcome = tokio::time::timeout(timeout, exchange(s, req))
                .await
                .unwrap_or(Exchange::Failed);
            if !matches!(outcome, Exchange::NotSent) {
                break;
            }
            sender = None;
        }
        match outcome {
            Exchange::Done(status, bytes, close) => {
                let us = begin.elapsed().as_micros().max(1) as u64;
                t.hist.saturating_record(us);
                t.bytes += bytes;
                if (200..300).contains(&status) {
                    t.ok += 1;
                } else {
                    t.non_2xx += 1;
                }
                if close || new_conn {
                    sender = None;
                }
            }
            Exchange::NotSent | Exchange::Failed => {
                t.errors += 1;
                sender = None;
            }
        }
    }
    if let Some(iv) = interval {
        // Intended sends the run ended before reaching.
        let due = ((end.saturating_duration_since(start + offset)).as_secs_f64() / iv.as_secs_f64())
            .ceil() as u64;
        t.missed = due.saturating_sub(u64::from(k));
    }
    t
}

async fn load(a: Args, target: Arc<Target>) -> Result<serde_json::Value, BoxError> {
    let streams = if a.h2 { a.streams.max(1) } else { 1 };
    let senders_n = a.connections.max(1) * streams;
    let mut senders: Vec<Option<Sender>> = Vec::with_capacity(senders_n);
    let mut opened = 0u64;
    if !a.new_connection_per_request {
        for _ in 0..a.connections.max(1) {
            let s = target.connect().await?;
            opened += 1;
            match s {
                Sender::H2(h2) => {
                    for _ in 0..streams {
                        senders.push(Some(Sender::H2(h2.clone())));
                    }
                }
                h1 => senders.push(Some(h1)),
            }
        }
    } else {
        senders.resize_with(senders_n, || None);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(a.duration);
    let timeout = Duration::from_secs_f64(a.timeout);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(run_sender(
                target.clone(),
                s,
                i,
                senders_n,
                a.rate,
                start,
                end,
                timeout,
                a.new_connection_per_request,
            ))
        })
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        total.merge(task.await?);
    }
    let elapsed = start.elapsed().as_secs_f64().max(a.duration);
    let done = total.ok + total.non_2xx;
    let q = |p: f64| total.hist.value_at_quantile(p);
    Ok(serde_json::json!({
        "mode": if a.h2 { "h2" } else { "http/1.1" },
        "tls": target.tls.is_some(),
        "new_connection_per_request": a.new_connection_per_request,
        "connections": a.connections,
        "streams": streams,
        "target_rate": a.rate,
        "duration_s": elapsed,
        "requests": done,
        "ok": total.ok,
        "non_2xx": total.non_2xx,
        "errors": total.errors,
        "missed": total.missed,
        "bytes": total.bytes,
        "rps": done as f64 / elapsed,
        "new_connections": opened + total.connections,
        "latency_us": {
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "max": total.hist.max(), "mean": total.hist.mean(),
        },
    }))
}

async fn idle(a: Args, target: Arc<Target>, n: usize) -> Result<serde_json::Value, BoxError> {
    let failed = Arc::new(AtomicU64::new(0));
    let mut held = Vec::with_capacity(n);
    // Open in batches so the listener's accept backlog is never the limit.
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let target = target.clone();
                let failed = failed.clone();
                tokio::spawn(async move {
                    let mut rng = i as u64 + 1;
                    let mut s = target.connect().await.ok()?;
                    let req = target.request(&mut rng, false);
                    match exchange(&mut s, req).await {
                        Exchange::Done(status, _, false) if (200..300).contains(&status) => Some(s),
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                    }
                })
            })
            .collect();
        for task in batch {
            if let Some(s) = task.await? {
                held.push(s);
            }
        }
    }
    let opened = held.len();
    eprintln!("ready {opened}");
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let still_open = held
        .iter_mut()
        .filter(|s| match s {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        })
        .count();
    Ok(serde_json::json!({
        "mode": "idle",
        "tls": target.tls.is_some(),
        "requested": n,
        "opened": opened,
        "failed": n - opened,
        "still_open": still_open,
        "held_s": a.duration,
    }))
}

fn main() {
    let a = Args::parse();
    let mut rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    };
    let rt = rt.enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        let target = Arc::new(Target::from_args(&a)?);
        match a.idle {
            Some(n) => idle(a.clone(), target, n).await,
            None => load(a.clone(), target).await,
        }
    });
    match result {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
