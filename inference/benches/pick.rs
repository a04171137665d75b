//! One pick with the reference default profile (queue 2, KV 2, prefix 3, max-score picker)
//! over 64 endpoints with metrics and a 4,000-token (~16,000-character) chat prompt, prefix
//! hashing included. The index is warmed with 200 earlier conversations spread over the
//! endpoints, a quarter of which share the benchmark prompt's system prefix. Target (issue 9):
//! p99 under 50 µs. Besides criterion's estimate, the bench prints p50/p99 of 20,000 single
//! picks timed one by one (`cargo bench -p gateway-inference --bench pick`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use gateway_inference::metrics::EndpointMetrics;
use gateway_inference::scheduler::{Candidate, Profile, SchedRequest};
use rand::SeedableRng;
use rand::rngs::StdRng;

const ENDPOINTS: usize = 64;

fn candidates() -> Vec<Candidate> {
    (0..ENDPOINTS)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8000));
            let metrics = EndpointMetrics {
                waiting: (i * 7 % 13) as u32,
                running: (i % 16) as u32,
                kv_usage: (i * 37 % 100) as f64 / 100.0,
                block_size: Some(16),
                num_blocks: Some(27_153),
                lora: None,
                base_model: None,
            };
            Candidate::new(addr, Some(Arc::new(metrics)))
        })
        .collect()
}

/// A ~16,000-character prompt: a shared 4,000-character system prefix then `variant`'s text.
fn prompt(variant: usize) -> String {
    let system = "You are a careful assistant for a retail analytics team. ".repeat(80);
    let mut p = String::with_capacity(16_100);
    p.push_str("system\n");
    p.push_str(&system[..4_000]);
    p.push_str("\nuser\n");
    let mut i = 0;
    while p.len() < 16_000 {
        p.push_str(&format!(
            "Question {variant}-{i}: summarise the weekly sales of store {i}. "
        ));
        i += 1;
    }
    p
}

fn warmed_profile(candidates: &[Candidate]) -> Profile {
    let profile = Profile::reference_default();
    let mut rng = StdRng::seed_from_u64(42);
    for v in 0..200 {
        let text = if v % 4 == 0 {
            prompt(1000 + v)
        } else {
            format!("{v} {}", prompt(v))
        };
        let req = SchedRequest::new("meta-llama/Llama-3.1-8B-Instruct", &text, 0);
        profile.pick(&req, candidates, &mut rng).expect("pick");
    }
    profile
}

fn main() {
    let candidates = candidates();
    let profile = warmed_profile(&candidates);
    let text = prompt(7);
    let mut rng = StdRng::seed_from_u64(7);

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("pick_reference_default_64_endpoints_16k_prompt", |b| {
        b.iter(|| {
            let req = SchedRequest::new("meta-llama/Llama-3.1-8B-Instruct", black_box(&text), 0);
            black_box(profile.pick(&req, &candidates, &mut rng).expect("pick"))
        })
    });
    c.final_summary();

    // Percentiles of single picks (criterion reports means over batches).
    if std::env::args().any(|a| a == "--bench") {
        let mut samples: Vec<u128> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                let req = SchedRequest::new("meta-llama/Llama-3.1-8B-Instruct", &text, 0);
                black_box(profile.pick(&req, &candidates, &mut rng).expect("pick"));
                start.elapsed().as_nanos()
            })
            .collect();
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "single pick over {ENDPOINTS} endpoints, {} chars: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            text.len(),
            at(0.50) as f64 / 1000.0,
            at(0.99) as f64 / 1000.0,
            *samples.last().unwrap() as f64 / 1000.0
        );
    }
}
