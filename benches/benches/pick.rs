//! Endpoint and backend choice: what the gateway does once per attempt after routing.
//!
//! Run: `cargo bench -p gateway-benches --bench pick`. The route count does not enter here
//! (each rule holds its own backends); the number of backends or endpoints does, so each case
//! runs at several sizes.
//!
//! * `weighted/{1,2,4,16}`: [`pick_weighted`], the weighted choice among a rule's backendRefs
//!   (weights 1, 2, 3, ...);
//! * `least_request/{2,8,64}`: [`pick_least_request`], power of two choices over in-flight
//!   counts;
//! * `round_robin/{2,8,64}`: the round-robin step of the request path: one shared counter
//!   (`fetch_add`, as the gateway's per-backend position) and the scan from it to the first
//!   available endpoint ([`Endpoint::is_available`]). The scan itself lives in the proxy; this
//!   case repeats its two steps with the public endpoint API.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_core::Endpoint;
use gateway_core::backend::{pick_least_request, pick_weighted};

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))))
        .collect()
}

fn round_robin(position: &AtomicUsize, endpoints: &[Endpoint]) -> usize {
    let n = endpoints.len();
    let start = position.fetch_add(1, Ordering::Relaxed) % n;
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| endpoints[i].is_available())
        .unwrap_or(start)
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [1usize, 2, 4, 16] {
        let weights: Vec<u32> = (1..=n as u32).collect();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        assert!(pick_weighted(weights.iter().copied(), total).is_some_and(|i| i < n));
        group.bench_with_input(BenchmarkId::new("weighted", n), &weights, |b, w| {
            b.iter(|| pick_weighted(black_box(w).iter().copied(), total))
        });
    }
    for n in [2usize, 8, 64] {
        let eps = endpoints(n);
        assert!(pick_least_request(&eps).is_some_and(|i| i < n));
        group.bench_with_input(BenchmarkId::new("least_request", n), &eps, |b, eps| {
            b.iter(|| pick_least_request(black_box(eps)))
        });
        let position = AtomicUsize::new(0);
        assert_eq!(round_robin(&position, &eps), 0);
        assert_eq!(round_robin(&position, &eps), 1);
        group.bench_with_input(BenchmarkId::new("round_robin", n), &eps, |b, eps| {
            b.iter(|| round_robin(&position, black_box(eps)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
