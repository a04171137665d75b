use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_core::prometheus_client::collector::Collector;
use gateway_core::prometheus_client::encoding::DescriptorEncoder;
use gateway_core::prometheus_client::registry::Registry;

use super::*;
use crate::metrics::{EndpointMetrics, Engine};

const A: &str = "10.0.0.1:8000";
const B: &str = "10.0.0.2:8000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// One pool, encoded as the gateway's collector does it.
#[derive(Debug)]
struct OnePool(Arc<Pool>);

struct Pool {
    stats: PoolStats,
    store: MetricsStore,
    detector: SaturationDetector,
    waiting: Option<usize>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool")
    }
}

impl Collector for OnePool {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let p = &self.0;
        let view = PoolView {
            key: "llm/pool",
            stats: &p.stats,
            store: &p.store,
            detector: &p.detector,
            waiting: p.waiting,
        };
        encode(&mut encoder, &[view], Instant::now())
    }
}

fn pool(waiting: Option<usize>) -> Arc<Pool> {
    let pool = Pool {
        stats: PoolStats::default(),
        store: MetricsStore::new(),
        detector: SaturationDetector::default(),
        waiting,
    };
    pool.store
        .set_endpoints([(addr(A), Engine::Vllm), (addr(B), Engine::Vllm)]);
    pool.stats.set_endpoints([addr(B), addr(A), addr(A)]);
    Arc::new(pool)
}

fn text(pool: &Arc<Pool>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(OnePool(pool.clone())));
    let mut out = String::new();
    gateway_core::prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

/// The value of the sample whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn counters_gauges_and_histograms_of_a_pool() {
    let p = pool(Some(2));
    p.store.store(
        addr(A),
        EndpointMetrics {
            waiting: 3,
            running: 7,
            kv_usage: 0.25,
            ..EndpointMetrics::default()
        },
        Instant::now(),
    );
    let s = &p.stats;
    s.picked(addr(A));
    s.picked(addr(A));
    s.picked(addr(B));
    s.served(addr(A));
    // Not an endpoint of the pool: not counted, no series.
    s.served(addr("10.9.9.9:1"));
    s.rejected(Rejection::Saturated);
    s.rejected(Rejection::Malformed);
    s.rejected(Rejection::Malformed);
    s.rejected(Rejection::from_dropped(DroppedReason::TtlExpired));
    s.scheduled(Duration::from_micros(20));
    s.scheduled(Duration::from_millis(2));
    {
        let mut t = QueueTimer::start(s);
        t.finish(QueueOutcome::Dispatched);
    }
    drop(QueueTimer::start(s));

    let t = text(&p);
    let pool = r#"pool="llm/pool""#;
    let ep = |e: &str| format!(r#"{{{pool},endpoint="{e}"}}"#);
    let v = |series: String| value(&t, &series).unwrap_or_else(|| panic!("{series} in\n{t}"));
    assert_eq!(
        v(format!("gateway_inference_requests_picked_total{}", ep(A))),
        2.0
    );
    assert_eq!(
        v(format!("gateway_inference_requests_picked_total{}", ep(B))),
        1.0
    );
    assert_eq!(
        v(format!("gateway_inference_requests_served_total{}", ep(A))),
        1.0
    );
    assert_eq!(
        v(format!("gateway_inference_requests_served_total{}", ep(B))),
        0.0
    );
    assert!(!t.contains("10.9.9.9"));
    let rejected = |r: &str| {
        v(format!(
            r#"gateway_inference_requests_rejected_total{{{pool},reason="{r}"}}"#
        ))
    };
    assert_eq!(rejected("rejected-saturated"), 1.0);
    assert_eq!(rejected("malformed-request"), 2.0);
    assert_eq!(rejected("rejected-ttl-expired"), 1.0);
    assert_eq!(rejected("request-too-large"), 0.0);
    assert_eq!(rejected("rejected-no-endpoints"), 0.0);

    // The scheduling histogram: cumulative buckets, count, sum.
    let sched = |suffix: &str| {
        v(format!(
            "gateway_inference_scheduler_duration_seconds{suffix}"
        ))
    };
    assert_eq!(sched(&format!(r#"_bucket{{le="0.000025",{pool}}}"#)), 1.0);
    assert_eq!(sched(&format!(r#"_bucket{{le="0.0025",{pool}}}"#)), 2.0);
    assert_eq!(sched(&format!(r#"_bucket{{le="+Inf",{pool}}}"#)), 2.0);
    assert_eq!(sched(&format!("_count{{{pool}}}")), 2.0);
    assert!((sched(&format!("_sum{{{pool}}}")) - 0.00202).abs() < 1e-9);

    // Flow control.
    assert_eq!(
        v(format!(
            "gateway_inference_flow_control_requests_waiting{{{pool}}}"
        )),
        2.0
    );
    let queued = |o: &str| {
        v(format!(
            r#"gateway_inference_flow_control_queue_duration_seconds_count{{{pool},outcome="{o}"}}"#
        ))
    };
    assert_eq!(queued("dispatched"), 1.0);
    assert_eq!(queued("cancelled"), 1.0);
    assert_eq!(queued("rejected"), 0.0);

    // The endpoints' scraped state: A fresh, B never scraped (stale, no other gauge).
    assert_eq!(
        v(format!("gateway_inference_pool_endpoints{{{pool}}}")),
        2.0
    );
    assert_eq!(
        v(format!(
            "gateway_inference_endpoint_requests_waiting{}",
            ep(A)
        )),
        3.0
    );
    assert_eq!(
        v(format!(
            "gateway_inference_endpoint_requests_running{}",
            ep(A)
        )),
        7.0
    );
    assert_eq!(
        v(format!(
            "gateway_inference_endpoint_kv_cache_usage_ratio{}",
            ep(A)
        )),
        0.25
    );
    let age = v(format!(
        "gateway_inference_endpoint_metrics_age_seconds{}",
        ep(A)
    ));
    assert!((0.0..1.0).contains(&age), "{age}");
    assert_eq!(
        v(format!("gateway_inference_endpoint_metrics_stale{}", ep(A))),
        0.0
    );
    assert_eq!(
        v(format!("gateway_inference_endpoint_metrics_stale{}", ep(B))),
        1.0
    );
    assert!(
        value(
            &t,
            &format!("gateway_inference_endpoint_requests_waiting{}", ep(B))
        )
        .is_none()
    );
    // A: max(3 / 5, 0.25 / 0.8) = 0.6; B unknown: 1.0; the mean 0.8.
    let saturation = v(format!("gateway_inference_pool_saturation{{{pool}}}"));
    assert!((saturation - 0.8).abs() < 1e-9, "{saturation}");
    assert!(t.contains("# TYPE gateway_inference_endpoint_metrics_age_seconds gauge"));
    assert!(t.contains("# UNIT gateway_inference_endpoint_metrics_age_seconds seconds"));

    // No external picker: no picker series.
    assert!(!t.contains("gateway_inference_endpoint_picker_requests_total{"));
}

#[test]
fn endpoints_that_stay_keep_their_counts_and_removed_ones_go() {
    let p = pool(None);
    p.stats.picked(addr(A));
    p.stats.picked(addr(B));
    p.stats.set_endpoints([addr(A), addr("10.0.0.3:8000")]);
    p.stats.picked(addr(B));
    let t = text(&p);
    let picked = |e: &str| {
        value(
            &t,
            &format!(
                r#"gateway_inference_requests_picked_total{{pool="llm/pool",endpoint="{e}"}}"#
            ),
        )
    };
    assert_eq!(picked(A), Some(1.0));
    assert_eq!(picked("10.0.0.3:8000"), Some(0.0));
    assert_eq!(picked(B), None);
    // Flow control off: no flow-control series.
    assert!(!t.contains("gateway_inference_flow_control_requests_waiting{"));
    assert!(!t.contains("gateway_inference_flow_control_queue_duration_seconds_count{"));
}

#[test]
fn external_picker_outcomes_and_errors() {
    let p = pool(None);
    p.stats.set_external(true);
    p.stats.picker(PickerResult::Picked);
    p.stats.picker(PickerResult::FailOpen);
    p.stats
        .picker_failed(PickerFailure::of(&PickError::Timeout(Duration::from_secs(
            1,
        ))));
    p.stats.picker_failed(PickerFailure::Unresolved);
    let t = text(&p);
    let result = |r: &str| {
        value(
            &t,
            &format!(
                r#"gateway_inference_endpoint_picker_requests_total{{pool="llm/pool",result="{r}"}}"#
            ),
        )
    };
    let error = |e: &str| {
        value(
            &t,
            &format!(
                r#"gateway_inference_endpoint_picker_errors_total{{pool="llm/pool",error="{e}"}}"#
            ),
        )
    };
    assert_eq!(result("picked"), Some(1.0));
    assert_eq!(result("fail-open"), Some(1.0));
    assert_eq!(result("fail-close"), Some(0.0));
    assert_eq!(result("immediate"), Some(0.0));
    assert_eq!(error("timeout"), Some(1.0));
    assert_eq!(error("unresolved"), Some(1.0));
    assert_eq!(error("bad-answer"), Some(0.0));
}

#[test]
fn rejections_from_drop_reasons() {
    assert_eq!(
        Rejection::from_dropped(DroppedReason::Saturated),
        Rejection::Saturated
    );
    assert_eq!(
        Rejection::from_dropped(DroppedReason::NoEndpoints),
        Rejection::NoEndpoints
    );
    assert_eq!(
        Rejection::from_dropped(DroppedReason::ShuttingDown),
        Rejection::ShuttingDown
    );
    assert_eq!(Rejection::TooLarge.as_str(), "request-too-large");
}
