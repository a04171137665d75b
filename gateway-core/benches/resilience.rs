//! Load runs through real loopback sockets that measure what the resilience features buy:
//!
//! - **failover**: three endpoints under steady load; one is killed (its listener and every open
//!   connection closed) a third of the way in. Reported: requests, failures, failure rate, and the
//!   time from the kill to the gateway's "endpoint ejected" event. Run with and without a retry
//!   policy (`retry: attempts 2, codes 502/503`).
//! - **mirror**: the primary's latency with no mirror, and with a mirror whose every answer
//!   takes 1 s. Reported: p50 / p99 / max of the primary.
//!
//! Run: `cargo bench -p gateway-core --bench resilience` (release). Optional arguments:
//! `failover`, `mirror`, `mirror-paced` (the mirror run at a fixed 2,000 requests per second);
//! default: all. `MIRROR_DELAY_MS` sets the mirror's answer delay (default 1000; 0 measures the
//! cost of mirroring itself). Results are written up in `docs/benchmarks.md`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const CONCURRENCY: usize = 32;

/// A backend that answers `ok`, after `delay`; `kill()` closes its listener and connections.
struct Backend {
    addr: SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    async fn start(delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let conns = tasks.clone();
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                conns.lock().unwrap().spawn(async move {
                    let service = service_fn(move |_req| async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok\n",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, tasks }
    }

    fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

/// Records when the gateway logs "endpoint ejected".
#[derive(Clone, Default)]
struct EjectionClock(Arc<Mutex<Vec<Instant>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EjectionClock {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "endpoint ejected" {
                    self.0 = true;
                }
            }
        }
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            self.0.lock().unwrap().push(Instant::now());
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Paced requests sent more than 2 ms after they were due (the connection was still busy).
    late: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

/// `CONCURRENCY` keep-alive connections sending GETs to `path` for `duration`: each sends its next
/// request as soon as the last is answered (`pace: None`, closed loop, as fast as the machine
/// goes), or every `pace` (open loop at `CONCURRENCY / pace` requests per second).
async fn load(
    port: u16,
    path: &'static str,
    duration: Duration,
    pace: Option<Duration>,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    let began = tokio::time::Instant::now();
    for worker in 0..CONCURRENCY {
        let (tally, stop) = (tally.clone(), stop.clone());
        workers.spawn(async move {
            let mut local = Vec::new();
            // Paced: each connection sends every `p`, the connections' ticks spread evenly over
            // `p` (an even arrival rate, not bursts of CONCURRENCY requests at once).
            let mut ticks = pace.map(|p| {
                let offset = p.mul_f64(worker as f64 / CONCURRENCY as f64);
                let mut t = tokio::time::interval_at(began + offset, p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            'connect: while !stop.load(Ordering::Relaxed) {
                let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                else {
                    continue;
                };
                tokio::spawn(conn);
                while !stop.load(Ordering::Relaxed) {
                    // Paced latency counts from the send (Tokio's timer wakes up to 1 ms late,
                    // which is not the gateway's); a request due while the one before it on the
                    // connection is still out is counted in `late`.
                    if let Some(ticks) = ticks.as_mut() {
                        let due = ticks.tick().await;
                        if due.elapsed() > Duration::from_millis(2) {
                            tally.late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let req = hyper::Request::get(path)
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let start = Instant::now();
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            let body = resp.into_body().collect().await;
                            if ok && body.is_ok() {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                local.push(start.elapsed().as_micros() as u32);
                            } else {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                continue 'connect;
                            }
                        }
                        Err(_) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            continue 'connect;
                        }
                    }
                }
            }
            tally.latencies_us.lock().unwrap().extend(local);
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    tally
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(port: u16, rule: Rule) -> Config {
    let mut listener = Listener::new("bench/gw/http", 80);
    listener.routes = vec![Route::new("bench", "r").rule(rule).into()];
    Config {
        binds: vec![Bind {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    }
}

async fn failover(with_retries: bool, clock: &EjectionClock) {
    let backends = [
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
    ];
    let mut rule = Rule::prefix("/").backend(BackendRef::endpoints(
        "bench/three:80",
        backends.iter().map(|b| b.addr).collect(),
    ));
    if with_retries {
        rule.retry = Some(Retry {
            codes: vec![502, 503],
            attempts: 2,
            backoff: Some(Duration::from_millis(5)),
        });
    }
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(config(port, rule)).await.unwrap();
    clock.0.lock().unwrap().clear();
    let run = tokio::spawn(load(port, "/", Duration::from_secs(9), None));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    backends[1].kill();
    let tally = run.await.unwrap();
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let ejected = clock
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|t| **t >= killed)
        .map(|t| t.duration_since(killed));
    println!(
        "failover retries={:<5} requests={:>7} failed={:>4} failure_rate={:.4}% ejected_after={}",
        if with_retries { "on" } else { "off" },
        ok + failed,
        failed,
        100.0 * failed as f64 / (ok + failed).max(1) as f64,
        ejected.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis())),
    );
    gw.shutdown(Duration::from_secs(1)).await;
    for b in &backends {
        b.kill();
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `rate`: `None` for the closed loop, else requests per second across all connections.
async fn mirror(with_mirror: bool, rate: Option<u32>) {
    let pace = rate.map(|r| Duration::from_secs_f64(CONCURRENCY as f64 / f64::from(r)));
    let primary = Backend::start(Duration::ZERO).await;
    // The mirror's answer delay: 1 s, or `MIRROR_DELAY_MS` (0 measures the cost of mirroring
    // itself, every copy delivered at once).
    let delay_ms: u64 = std::env::var("MIRROR_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let slow_mirror = Backend::start(Duration::from_millis(delay_ms)).await;
    let mut rule = Rule::prefix("/").backend(BackendRef::endpoints(
        "bench/primary:80",
        vec![primary.addr],
    ));
    if with_mirror {
        rule = rule.filter(Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef::endpoints("bench/mirror:80", vec![slow_mirror.addr]),
            fraction: None,
        })));
    }
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(config(port, rule)).await.unwrap();
    // Warm up connections and the mirror's in-flight bound.
    load(port, "/", Duration::from_secs(1), pace).await;
    let tally = load(port, "/", Duration::from_secs(6), pace).await;
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let stats = gw.mirror_stats();
    println!(
        "mirror {:<9} load={:<9} requests={:>7} failed={} p50={} µs p99={} µs max={} µs late={} mirrors_dropped={} mirrors_in_flight={}",
        if with_mirror {
            format!("{delay_ms} ms")
        } else {
            "none".to_owned()
        },
        rate.map_or("max".to_owned(), |r| format!("{r}/s")),
        lat.len(),
        tally.failed.load(Ordering::Relaxed),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        tally.late.load(Ordering::Relaxed),
        stats.dropped,
        stats.in_flight,
    );
    gw.shutdown(Duration::from_secs(1)).await;
    primary.kill();
    slow_mirror.kill();
}

fn main() {
    use tracing_subscriber::layer::SubscriberExt;
    let clock = EjectionClock::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(clock.clone());
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("failover") {
            failover(false, &clock).await;
            failover(true, &clock).await;
        }
        if want("mirror") {
            mirror(false, None).await;
            mirror(true, None).await;
        }
        if want("mirror-paced") {
            mirror(false, Some(2_000)).await;
            mirror(true, Some(2_000)).await;
        }
    });
}
