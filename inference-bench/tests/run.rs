//! End to end over loopback: the library driver and the binary against in-process simulators
//! at a tiny rate with time scale 0.01. Checks the accounting and the SSE parsing, not timings.

use inference_bench::bench::{self, BenchConfig};
use inference_bench::driver::{Outcome, SseParser};
use inference_bench::report;
use inference_bench::servers::SimPool;
use inference_bench::target::TargetSpec;
use inference_bench::workload::{Api, LoraParams, ShareGptParams, SharedPrefixParams, Workload};
use vllm_sim::{Profile, SimConfig};

fn sim_config() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        seed: Some(1),
        ..Profile::Llama8bH100.config()
    }
}

fn config(targets: Vec<TargetSpec>, workload: Workload, api: Api) -> BenchConfig {
    BenchConfig {
        targets,
        workload,
        api,
        rates: vec![2.0, 4.0],
        duration_s: 3.0,
        warmup_s: 1.0,
        seed: 3,
        max_in_flight: 10_000,
        request_timeout_s: 3_000.0,
        fresh_servers: true,
        target_wait_s: 10.0,
        command: "test".into(),
    }
}

/// A small well-formedness check of XML (tags nest and close, attributes are quoted).
fn xml_well_formed(s: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let Some(end) = rest.find('>') else {
            return false;
        };
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if !tag.matches('"').count().is_multiple_of(2) {
            return false;
        }
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name.trim()) {
                return false;
            }
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or("").to_string();
            stack.push(name);
        }
    }
    stack.is_empty()
}

#[test]
fn sse_parser_counts_tokens_across_frames_and_reads_usage() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a \\\"b\\\" \"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"},\"finish_reason\":\"length\"}]}\r\n\r\n",
        ": a comment\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
    );
    // Every split point gives the same result.
    for cut in 0..stream.len() {
        let mut p = SseParser::default();
        let first = p.feed(&stream.as_bytes()[..cut]);
        let second = p.feed(&stream.as_bytes()[cut..]);
        assert_eq!(first + second, 2, "cut {cut}");
        let s = &p.summary;
        assert_eq!(s.tokens, 2);
        assert_eq!(s.completion_tokens, Some(2));
        assert_eq!(s.prompt_tokens, Some(7));
        assert_eq!(s.cached_tokens, Some(4));
        assert!(s.done && !s.malformed);
    }
    let mut p = SseParser::default();
    p.feed(b"data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\ndata: {not json}\n\n");
    assert_eq!(p.summary.tokens, 1);
    assert!(p.summary.malformed && !p.summary.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_url_targets_complete_every_request() {
    let mut pool = SimPool::start(sim_config(), 2, 0).await.expect("servers");
    // A url: target pointing at one simulator stands in for a gateway.
    let url = pool.urls()[1].clone();
    let targets = vec![
        TargetSpec::DirectRr,
        TargetSpec::DirectRandom,
        TargetSpec::DirectLeastQueue,
        TargetSpec::parse(&format!("url:{url}")).expect("url target"),
    ];
    let names: Vec<String> = targets.iter().map(|t| t.name()).collect();
    let cfg = config(
        targets,
        Workload::Sharegpt(ShareGptParams::default()),
        Api::Chat,
    );
    let mut seen = Vec::new();
    let report = bench::run(&cfg, &mut pool, |s| seen.push(s.target.clone()))
        .await
        .expect("run");
    pool.shutdown().await;
    assert_eq!(report.results.len(), 8);
    assert_eq!(seen.len(), 8);
    let arrivals_at = |rate: f64| {
        inference_bench::arrivals::poisson(
            rate,
            4.0,
            3 ^ inference_bench::target::mix(if rate == 2.0 { 1 } else { 2 }),
        )
        .iter()
        .filter(|t| **t >= 1.0)
        .count()
    };
    for r in &report.results {
        assert!(names.contains(&r.target));
        assert_eq!(r.sent, arrivals_at(r.rate), "{} at {}", r.target, r.rate);
        assert_eq!(r.completed, r.sent, "{r:?}");
        assert_eq!(r.rejected_429, 0);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.token_mismatches, 0);
        assert!(r.ttft.p50.is_some() && r.e2e.p99.is_some());
        assert!(r.ttft.p99 <= r.e2e.p99);
        let served: usize = r.per_server.values().sum();
        assert_eq!(served, r.completed);
        if r.target.starts_with("url:") {
            assert_eq!(r.per_server.keys().collect::<Vec<_>>(), vec!["sim-1"]);
        } else if r.target == "direct-rr" && r.completed >= 2 {
            assert_eq!(r.per_server.len(), 2);
        }
    }
    assert_eq!(report.ratios.len(), 6);
    let json = serde_json::to_string(&report).expect("json");
    let back: serde_json::Value = serde_json::from_str(&json).expect("parse");
    assert_eq!(back["results"].as_array().map(Vec::len), Some(8));
    let md = report::markdown(&report);
    assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 1 + 8);
    let svg = report::svg(&report);
    assert!(xml_well_formed(&svg), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 2 * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_measurements_match_the_servers_usage() {
    use inference_bench::driver::{self, RunParams};
    for (workload, api) in [
        (
            Workload::SharedPrefix(SharedPrefixParams {
                groups: 2,
                prefix_len: 256,
                users_per_group: 2,
                question_len: 32,
                output_len: 8,
            }),
            Api::Completions,
        ),
        (
            Workload::Lora {
                lengths: ShareGptParams {
                    prompt_mean: 40.0,
                    output_mean: 20.0,
                    ..ShareGptParams::default()
                },
                lora: LoraParams {
                    adapters: 3,
                    ..LoraParams::default()
                },
            },
            Api::Chat,
        ),
    ] {
        let sim = SimConfig {
            lora_modules: (0..3).map(|i| format!("lora-{i}")).collect(),
            max_loras: 1,
            lora_load_latency_ms: 50.0,
            ..sim_config()
        };
        let pool = SimPool::start(sim.clone(), 2, 0).await.expect("servers");
        let target = std::sync::Arc::new(TargetSpec::DirectRr.build(&pool.urls(), 1));
        let times: Vec<f64> = (0..12).map(|i| 0.5 * (i + 1) as f64).collect();
        let specs: Vec<_> = workload
            .generator(&sim.model, api, sim.max_model_len, 1)
            .take(times.len())
            .collect();
        let p = RunParams {
            rate: 2.0,
            duration_s: 6.0,
            warmup_s: 0.0,
            time_scale: 0.01,
            api,
            max_in_flight: 100,
            request_timeout_s: 3_000.0,
        };
        let results = driver::run(target, driver::http_client(), specs.clone(), &times, p).await;
        pool.shutdown().await;
        assert_eq!(results.len(), times.len());
        let mut cached_seen = false;
        for (r, spec) in results.iter().zip(&specs) {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            let ttft = r.ttft_s.expect("ttft");
            assert!(ttft > 0.0 && ttft <= r.e2e_s, "{r:?}");
            assert_eq!(r.usage_completion_tokens, Some(r.tokens));
            assert_eq!(r.tokens, spec.max_tokens);
            assert_eq!(r.usage_prompt_tokens, Some(spec.prompt_tokens));
            cached_seen |= r.cached_tokens.unwrap_or(0) > 0;
        }
        if matches!(workload, Workload::SharedPrefix(_)) {
            assert!(cached_seen, "shared prefixes hit the servers' caches");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_the_in_flight_bound_are_counted() {
    // One slot and a one-request queue per server, 40 requests in a burst: some get 429.
    let sim = SimConfig {
        max_num_seqs: 1,
        max_waiting_queue_length: 1,
        time_scale: 0.1,
        ..sim_config()
    };
    let mut pool = SimPool::start(sim, 1, 0).await.expect("servers");
    let mut cfg = config(
        vec![TargetSpec::DirectRr],
        Workload::SharedPrefix(SharedPrefixParams {
            groups: 1,
            prefix_len: 16,
            users_per_group: 1,
            question_len: 16,
            output_len: 100,
        }),
        Api::Chat,
    );
    cfg.rates = vec![200.0];
    cfg.duration_s = 0.2;
    cfg.warmup_s = 0.0;
    let report = bench::run(&cfg, &mut pool, |_| {}).await.expect("run");
    let r = &report.results[0];
    assert!(r.rejected_429 > 0, "{r:?}");
    assert!(r.completed >= 2, "{r:?}");
    assert_eq!(
        r.completed + r.rejected_429 + r.errors.values().sum::<usize>(),
        r.sent
    );
    // With an in-flight bound of 1, later arrivals of the burst are not sent and are reported.
    cfg.max_in_flight = 1;
    let report = bench::run(&cfg, &mut pool, |_| {}).await.expect("run");
    pool.shutdown().await;
    let r = &report.results[0];
    assert!(r.in_flight_cap_hits > 0, "{r:?}");
    assert_eq!(r.rejected_429, 0, "{r:?}");
}

#[test]
fn the_binary_runs_and_writes_json_markdown_svg_and_endpoints() {
    let dir = std::env::temp_dir().join(format!("inference-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (json, md, svg, eps) = (
        dir.join("r.json"),
        dir.join("r.md"),
        dir.join("r.svg"),
        dir.join("eps.json"),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inference-bench"))
        .args([
            "--servers",
            "2",
            "--workload",
            "lora",
            "--lora-adapters",
            "3",
            "--rates",
            "2",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--time-scale",
            "0.01",
            "--compare",
            "direct-least-queue",
            "--prompt-mean",
            "50",
            "--output-mean",
            "30",
        ])
        .arg("--out")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .arg("--write-endpoints")
        .arg(&eps)
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sim-0 http://127.0.0.1:"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["target"], "direct-rr");
    assert_eq!(results[1]["target"], "direct-least-queue");
    for r in results {
        assert_eq!(r["completed"], r["sent"], "{r}");
    }
    assert_eq!(doc["settings"]["server_config"]["max_loras"], 2);
    assert_eq!(doc["workload"]["name"], "lora");
    let table = std::fs::read_to_string(&md).expect("md");
    assert!(table.contains("| 2 | direct-least-queue |"), "{table}");
    assert!(xml_well_formed(
        &std::fs::read_to_string(&svg).expect("svg")
    ));
    let eps: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eps).expect("eps")).expect("parse");
    assert_eq!(eps["endpoints"].as_array().map(Vec::len), Some(2));
    assert_eq!(eps["lora_adapters"][2], "lora-2");
    // Invalid arguments: exit status 2 and a message.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_inference-bench"))
        .args(["--target", "direct-nope", "--servers", "1"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown target"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The overhead tool's closed loop against a zero-latency server: every request completes and
/// is timed; against a closed port, every request is an error.
#[tokio::test]
async fn overhead_loop_times_requests_and_counts_failures() {
    use inference_bench::driver::http_client;
    use inference_bench::overhead::{OverheadRequest, measure, zero_latency_sim};
    use std::time::Duration;

    let sim = vllm_sim::Simulator::serve(
        zero_latency_sim("m"),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let url = format!("http://{}/v1/chat/completions", sim.local_addr());
    for stream in [false, true] {
        let req = OverheadRequest::chat(url.clone(), None, "m", 50, 4, stream);
        let s = measure(
            &http_client(),
            &req,
            2,
            Duration::from_millis(100),
            Duration::from_millis(400),
        )
        .await;
        assert!(s.requests > 10, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        assert!(s.p50_us > 0.0 && s.p50_us <= s.p99_us, "{s:?}");
    }
    // A wrong model is a 404 from the server: counted as an error, never as a latency.
    let wrong = OverheadRequest::chat(url, None, "no-such-model", 5, 4, false);
    let s = measure(
        &http_client(),
        &wrong,
        1,
        Duration::ZERO,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(s.requests, 0, "{s:?}");
    assert!(s.errors > 0, "{s:?}");
    sim.shutdown().await;
}
