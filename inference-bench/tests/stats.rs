//! Summaries, ratios and the report's formats, from fixed results (no network).

use inference_bench::driver::{Outcome, RequestResult};
use inference_bench::report::{self, Report};
use inference_bench::stats::{Percentiles, quantile, summarize};

fn result(
    seq: u64,
    arrival: f64,
    outcome: Outcome,
    ttft: f64,
    e2e: f64,
    tokens: usize,
) -> RequestResult {
    RequestResult {
        seq,
        arrival_s: arrival,
        measured: arrival >= 10.0,
        outcome,
        ttft_s: Some(ttft),
        e2e_s: e2e,
        tokens,
        usage_completion_tokens: Some(tokens),
        usage_prompt_tokens: Some(100),
        cached_tokens: Some(25),
        expected_tokens: tokens,
        expected_prompt_tokens: 100,
        server: Some(format!("sim-{}", seq % 2)),
        send_lag_ms: 1.0,
    }
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(quantile(&v, 0.5), Some(50.0));
    assert_eq!(quantile(&v, 0.9), Some(90.0));
    assert_eq!(quantile(&v, 0.99), Some(99.0));
    assert_eq!(quantile(&[], 0.5), None);
    let p = Percentiles::of(vec![3.0, 1.0, f64::NAN, 2.0]);
    assert_eq!((p.p50, p.p99, p.mean), (Some(2.0), Some(3.0), Some(2.0)));
}

#[test]
fn summary_counts_windows_and_latencies() {
    let mut rs = vec![
        // Warm-up request completing inside the window: throughput only.
        result(0, 5.0, Outcome::Ok, 1.0, 6.0, 11),
        // Measured, completing inside the window.
        result(1, 10.0, Outcome::Ok, 1.0, 3.0, 11),
        result(2, 12.0, Outcome::Ok, 2.0, 4.0, 21),
        // Measured, completing after the window: latencies only.
        result(3, 19.0, Outcome::Ok, 0.5, 10.5, 101),
        result(4, 13.0, Outcome::Status(429), 0.0, 0.1, 0),
        result(5, 14.0, Outcome::Status(503), 0.0, 0.1, 0),
        result(6, 15.0, Outcome::Timeout, 0.0, 100.0, 0),
        result(7, 16.0, Outcome::InFlightCap, 0.0, 0.0, 0),
    ];
    // A completed request whose stream had fewer token events than its usage says.
    let mut bad = result(8, 17.0, Outcome::Ok, 1.0, 2.0, 5);
    bad.usage_completion_tokens = Some(6);
    rs.push(bad);
    let s = summarize("direct-rr", 4.0, (10.0, 20.0), &rs);
    assert_eq!(s.sent, 7);
    assert_eq!(s.completed, 4);
    assert_eq!(s.rejected_429, 1);
    assert_eq!(s.errors.get("status_503"), Some(&1));
    assert_eq!(s.errors.get("timeout"), Some(&1));
    assert_eq!(s.in_flight_cap_hits, 1);
    assert_eq!(s.token_mismatches, 1);
    // In the window: seq 0 (ends 11), 1 (13), 2 (16), 8 (19); seq 3 ends at 29.5.
    assert!(
        (s.throughput_rps - 0.4).abs() < 1e-9,
        "{}",
        s.throughput_rps
    );
    assert!((s.output_tokens_per_s - 4.8).abs() < 1e-9);
    assert_eq!(s.ttft.p50, Some(1.0));
    assert_eq!(s.ttft.p99, Some(2.0));
    assert_eq!(s.e2e.p99, Some(10.5));
    // TPOT: (3-1)/10 = 0.2, (4-2)/20 = 0.1, (10.5-0.5)/100 = 0.1, (2-1)/4 = 0.25.
    assert_eq!(s.tpot.p50, Some(0.1));
    assert_eq!(s.tpot.p99, Some(0.25));
    assert_eq!(s.cached_prompt_share, Some(0.25));
    assert_eq!(s.per_server.values().sum::<usize>(), 4);
}

#[test]
fn ratios_markdown_and_svg() {
    let base = vec![
        result(1, 10.0, Outcome::Ok, 2.0, 8.0, 11),
        result(2, 11.0, Outcome::Ok, 2.0, 8.0, 11),
    ];
    let better = vec![
        result(1, 10.0, Outcome::Ok, 0.5, 4.0, 11),
        result(2, 11.0, Outcome::Ok, 0.5, 4.0, 11),
    ];
    let results = vec![
        summarize("direct-rr", 2.0, (10.0, 30.0), &base),
        summarize("url:http://127.0.0.1:8080", 2.0, (10.0, 30.0), &better),
        summarize("direct-rr", 4.0, (10.0, 30.0), &base),
        summarize("url:http://127.0.0.1:8080", 4.0, (10.0, 30.0), &better),
    ];
    let ratios = report::ratios(&results);
    assert_eq!(ratios.len(), 2);
    assert_eq!(ratios[0].ttft_p90, Some(0.25));
    assert_eq!(ratios[0].e2e_p90, Some(0.5));
    assert_eq!(ratios[0].output_tokens_per_s, Some(1.0));
    let report = Report {
        command: "inference-bench --test".into(),
        workload: serde_json::json!({"name": "sharegpt"}),
        settings: serde_json::json!({}),
        units: "simulated seconds".into(),
        results,
        ratios,
    };
    let md = report::markdown(&report);
    assert!(
        md.contains("| 2 | url:http://127.0.0.1:8080 | 2/2 |"),
        "{md}"
    );
    assert!(md.contains("| 0.25× | 0.50× | 1.00× |"), "{md}");
    let svg = report::svg(&report);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(svg.matches("<polyline").count(), 4);
    assert!(svg.contains(">url:http://127.0.0.1:8080</text>"));
    assert!(svg.trim_end().ends_with("</svg>"));
}
