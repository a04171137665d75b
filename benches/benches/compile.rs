//! Configuration compile time with 10, 1,000 and 10,000 HTTPRoutes: what "time to ready" costs
//! apart from I/O.
//!
//! Run: `cargo bench -p gateway-benches --bench compile`. The input is the peer comparison's
//! route table ([`gateway_benches::route_table_yaml`]), already in memory. Four cases per route
//! count:
//!
//! * `parse`: the YAML text into `gateway_k8s::Resources` (`Resources::parse_yaml`);
//! * `translate`: those resources into a `gateway_core::config::Config` plus status
//!   (`Translator::translate`, a fresh translator each time, as at start-up);
//! * `core`: that config into the data plane's routing table (`Gateway::check`: everything
//!   `Gateway::apply` compiles, without binding sockets or swapping the table);
//! * `total`: the three in a row, i.e. time to ready minus reading files and binding sockets.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_benches::{CONTROLLER_NAME, ROUTE_COUNTS, route_table_yaml};
use gateway_core::{FilterRegistry, Gateway};
use gateway_k8s::{Resources, TranslateOptions, Translator};

fn options() -> TranslateOptions {
    let mut options = TranslateOptions::new(CONTROLLER_NAME);
    options.port_map = BTreeMap::from([(80, 18090)]);
    options
}

fn bench_compile(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _entered = runtime.enter();
    let gateway = Gateway::new(FilterRegistry::with_builtins());

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for routes in ROUTE_COUNTS {
        let yaml = route_table_yaml(routes, (18080, 18079));
        let resources = Resources::parse_yaml(&yaml, "bench.yaml");
        let translation = Translator::new(options()).translate(&resources);
        // Check the input is what the benchmark claims before timing it.
        assert!(
            translation.diagnostics.is_empty(),
            "{:?}",
            translation.diagnostics
        );
        let compiled: usize = translation
            .config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .map(|l| l.routes.len())
            .sum();
        assert_eq!(compiled, routes, "every route attached");
        let rejected = gateway
            .check(translation.config.clone())
            .expect("the benchmark configuration compiles");
        assert!(rejected.is_empty(), "{rejected:?}");

        group.bench_with_input(BenchmarkId::new("parse", routes), &yaml, |b, yaml| {
            b.iter(|| Resources::parse_yaml(black_box(yaml), "bench.yaml"))
        });
        group.bench_with_input(
            BenchmarkId::new("translate", routes),
            &resources,
            |b, resources| b.iter(|| Translator::new(options()).translate(black_box(resources))),
        );
        group.bench_function(BenchmarkId::new("core", routes), |b| {
            b.iter_batched(
                || translation.config.clone(),
                |config| gateway.check(config),
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("total", routes), &yaml, |b, yaml| {
            b.iter(|| {
                let resources = Resources::parse_yaml(black_box(yaml), "bench.yaml");
                let translation = Translator::new(options()).translate(&resources);
                gateway.check(translation.config)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
