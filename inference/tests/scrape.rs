//! The scraper against real loopback HTTP servers: values are picked up as they change, an
//! endpoint that stops answering goes stale, removed endpoints are forgotten.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_inference::metrics::Engine;
use gateway_inference::request::DroppedReason;
use gateway_inference::scheduler::{SaturationDetector, SchedRequest, Scheduler};
use gateway_inference::scrape::{self, DEFAULT_STALENESS, MetricsStore, ScrapeConfig};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A model server's `/metrics`: `waiting` as set, and it hangs while `hang` is set.
struct FakeServer {
    addr: SocketAddr,
    waiting: Arc<AtomicU32>,
    hang: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_server(engine: Engine) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let waiting = Arc::new(AtomicU32::new(1));
    let hang = Arc::new(AtomicBool::new(false));
    let (w, h) = (waiting.clone(), hang.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (w, h) = (w.clone(), h.clone());
            conns.spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (w, h) = (w.clone(), h.clone());
                    async move {
                        if h.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let page = match (req.uri().path(), engine) {
                            ("/metrics", Engine::Sglang) => format!(
                                "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs {}\nsglang:num_running_reqs 2\nsglang:token_usage 0.5\n",
                                w.load(Ordering::SeqCst)
                            ),
                            ("/metrics", _) => format!(
                                "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"m\"}} {}\nvllm:num_requests_running{{model_name=\"m\"}} 3\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.25\n",
                                w.load(Ordering::SeqCst)
                            ),
                            _ => String::new(),
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(page))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeServer {
        addr,
        waiting,
        hang,
        task,
    }
}

/// Polls `cond` every 10 ms until it holds; panics after 10 s (a generous bound for a busy
/// machine; the test never asserts on how long it took).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn scrapes_changes_staleness_and_endpoint_set() {
    let vllm = fake_server(Engine::Vllm).await;
    let sglang = fake_server(Engine::Sglang).await;
    let store = Arc::new(MetricsStore::new());
    store.set_endpoints([(vllm.addr, Engine::Vllm), (sglang.addr, Engine::Sglang)]);
    let config = ScrapeConfig {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(100),
        ..ScrapeConfig::default()
    };
    assert_eq!(config.path, "/metrics");
    let handle = scrape::spawn(store.clone(), config);

    eventually("both scraped", || {
        store.get(vllm.addr).is_some() && store.get(sglang.addr).is_some()
    })
    .await;
    let v = store.get(vllm.addr).unwrap();
    assert_eq!(
        (v.metrics.waiting, v.metrics.running, v.metrics.kv_usage),
        (1, 3, 0.25)
    );
    let s = store.get(sglang.addr).unwrap();
    assert_eq!(
        (s.metrics.waiting, s.metrics.running, s.metrics.kv_usage),
        (1, 2, 0.5)
    );

    // New values are picked up by later polls.
    vllm.waiting.store(9, Ordering::SeqCst);
    eventually("new value", || {
        store.get(vllm.addr).is_some_and(|m| m.metrics.waiting == 9)
    })
    .await;

    // An endpoint that stops answering keeps its last metrics, which grow stale.
    sglang.hang.store(true, Ordering::SeqCst);
    let detector = SaturationDetector::default();
    eventually("stale", || {
        let c = store.candidate(sglang.addr, Instant::now());
        c.metrics.is_some() && c.metrics_age > detector.staleness
    })
    .await;
    let now = Instant::now();
    assert_eq!(
        detector.endpoint_saturation(&store.candidate(sglang.addr, now)),
        1.0
    );
    // The healthy endpoint stays fresh meanwhile.
    eventually("fresh", || {
        store.candidate(vllm.addr, Instant::now()).metrics_age < detector.staleness
    })
    .await;

    // It recovers when it answers again.
    sglang.hang.store(false, Ordering::SeqCst);
    sglang.waiting.store(4, Ordering::SeqCst);
    eventually("recovered", || {
        store
            .get(sglang.addr)
            .is_some_and(|m| m.metrics.waiting == 4)
    })
    .await;

    // Removing an endpoint forgets it; a new one is scraped.
    let third = fake_server(Engine::Vllm).await;
    third.waiting.store(7, Ordering::SeqCst);
    store.set_endpoints([(vllm.addr, Engine::Vllm), (third.addr, Engine::Vllm)]);
    assert!(store.get(sglang.addr).is_none());
    assert_eq!(
        store.candidate(sglang.addr, Instant::now()).metrics_age,
        Duration::MAX
    );
    assert!(
        store.get(vllm.addr).is_some(),
        "a kept endpoint keeps its metrics"
    );
    eventually("third scraped", || {
        store
            .get(third.addr)
            .is_some_and(|m| m.metrics.waiting == 7)
    })
    .await;
    let mut endpoints = store.endpoints();
    endpoints.sort_by_key(|e| e.0);
    let mut expected = vec![(vllm.addr, Engine::Vllm), (third.addr, Engine::Vllm)];
    expected.sort_by_key(|e| e.0);
    assert_eq!(endpoints, expected);
    drop(handle);
}

#[tokio::test]
async fn unreachable_and_wrong_pages_never_produce_metrics() {
    // A closed port and a server whose page lacks the engine's metrics.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let wrong_engine = fake_server(Engine::Sglang).await;
    let good = fake_server(Engine::Vllm).await;
    let store = Arc::new(MetricsStore::new());
    store.set_endpoints([
        (closed, Engine::Vllm),
        (wrong_engine.addr, Engine::Vllm),
        (good.addr, Engine::Vllm),
    ]);
    let handle = scrape::spawn(
        store.clone(),
        ScrapeConfig {
            interval: Duration::from_millis(10),
            ..ScrapeConfig::default()
        },
    );
    // Once the good endpoint has been scraped several times, the others have been tried too.
    good.waiting.store(2, Ordering::SeqCst);
    eventually("good scraped", || {
        store.get(good.addr).is_some_and(|m| m.metrics.waiting == 2)
    })
    .await;
    good.waiting.store(3, Ordering::SeqCst);
    eventually("good scraped again", || {
        store.get(good.addr).is_some_and(|m| m.metrics.waiting == 3)
    })
    .await;
    assert!(store.get(closed).is_none());
    assert!(store.get(wrong_engine.addr).is_none());
    drop(handle);
}

#[tokio::test]
async fn scheduler_picks_from_scraped_metrics() {
    let servers = [
        fake_server(Engine::Vllm).await,
        fake_server(Engine::Vllm).await,
        fake_server(Engine::Vllm).await,
    ];
    for (s, waiting) in servers.iter().zip([3, 0, 8]) {
        s.waiting.store(waiting, Ordering::SeqCst);
    }
    let store = Arc::new(MetricsStore::new());
    store.set_endpoints(servers.iter().map(|s| (s.addr, Engine::Vllm)));
    let handle = scrape::spawn(
        store.clone(),
        ScrapeConfig {
            interval: Duration::from_millis(10),
            ..ScrapeConfig::default()
        },
    );
    eventually("all scraped", || {
        servers
            .iter()
            .zip([3, 0, 8])
            .all(|(s, w)| store.get(s.addr).is_some_and(|m| m.metrics.waiting == w))
    })
    .await;
    let scheduler = Scheduler::reference_default();
    let mut rng = rand::rng();
    // Fresh metrics: least queue first, most loaded last (KV usage and prefix are equal).
    let mut order = None;
    eventually("fresh pick", || {
        let now = Instant::now();
        let candidates: Vec<_> = servers
            .iter()
            .map(|s| store.candidate(s.addr, now))
            .collect();
        if candidates.iter().any(|c| c.metrics_age > DEFAULT_STALENESS) {
            return false;
        }
        let picked =
            scheduler.schedule(&SchedRequest::new("m", "hello", -1), &candidates, &mut rng);
        order = Some(
            picked
                .unwrap()
                .into_iter()
                .map(|i| candidates[i].addr)
                .collect::<Vec<_>>(),
        );
        true
    })
    .await;
    assert_eq!(
        order.unwrap(),
        vec![servers[1].addr, servers[0].addr, servers[2].addr]
    );

    // Every server over the queue threshold: a sheddable request is refused, others pass.
    for s in &servers {
        s.waiting.store(10, Ordering::SeqCst);
    }
    eventually("saturated", || {
        servers
            .iter()
            .all(|s| store.get(s.addr).is_some_and(|m| m.metrics.waiting == 10))
    })
    .await;
    let now = Instant::now();
    let candidates: Vec<_> = servers
        .iter()
        .map(|s| store.candidate(s.addr, now))
        .collect();
    assert_eq!(
        scheduler.schedule(&SchedRequest::new("m", "hello", -1), &candidates, &mut rng),
        Err(DroppedReason::Saturated)
    );
    assert_eq!(
        scheduler
            .schedule(&SchedRequest::new("m", "hello", 0), &candidates, &mut rng)
            .unwrap()
            .len(),
        3
    );
    drop(handle);
}
