//! Model-server metrics: which engine a Pod runs and the numbers the scheduler reads from its
//! Prometheus `/metrics` page.
//!
//! [`extract`] runs on every scrape (see [`crate::scrape`]) and turns one exposition page into
//! an [`EndpointMetrics`] using the metric names of the endpoint's [`Engine`]:
//!
//! | quantity | vLLM | SGLang | trtllm-serve | Triton TRT-LLM |
//! |---|---|---|---|---|
//! | waiting | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `trtllm_num_requests_waiting` | `nv_trt_llm_request_metrics{request_type="waiting"}` |
//! | running | `vllm:num_requests_running` | `sglang:num_running_reqs` | `trtllm_num_requests_running` | `nv_trt_llm_request_metrics{request_type="scheduled"}` |
//! | KV usage (0..1) | `vllm:kv_cache_usage_perc`, else `vllm:gpu_cache_usage_perc` | `sglang:token_usage` | `trtllm_kv_cache_utilization` | `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}` |
//! | block size | `vllm:cache_config_info{block_size}` | `sglang:cache_config_info{page_size}` | `trtllm_kv_cache_tokens_per_block` | `…{kv_cache_block_type="tokens_per"}` |
//! | blocks | `vllm:cache_config_info{num_gpu_blocks}` | `sglang:cache_config_info{num_pages}` | `trtllm_kv_cache_max_blocks` | `…{kv_cache_block_type="max"}` |
//! | LoRA | `vllm:lora_requests_info` (the series with the latest timestamp value) | – | – | – |
//! | base model | `model_name` label of the running gauge | `model_name` label of the running gauge | – | – |
//!
//! Several series of one gauge (for example one per `model_name`) are added up for the request
//! counts, and the largest KV usage is taken. Waiting, running and KV usage are required: a page
//! without one of them is a [`MetricsError`] (the endpoint keeps its previous metrics, which
//! then age into staleness).

pub mod text;

use std::collections::BTreeMap;

/// Pod label naming the model server engine.
pub const ENGINE_LABEL: &str = "llm-d.ai/engine-type";
/// Legacy pod label naming the engine, read when [`ENGINE_LABEL`] is absent.
pub const ENGINE_LABEL_LEGACY: &str = "inference.networking.k8s.io/engine-type";

/// The model server engine of an endpoint, which selects the metric names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Engine {
    /// vLLM (`vllm`; the default).
    #[default]
    Vllm,
    /// SGLang (`sglang`).
    Sglang,
    /// TensorRT-LLM's OpenAI server (`trtllm-serve`).
    TrtllmServe,
    /// Triton with the TensorRT-LLM backend (`triton-trtllm`).
    TritonTrtllm,
}

impl Engine {
    /// The engine named by a label value; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Engine> {
        match name {
            "vllm" => Some(Engine::Vllm),
            "sglang" => Some(Engine::Sglang),
            "trtllm-serve" => Some(Engine::TrtllmServe),
            "triton-trtllm" => Some(Engine::TritonTrtllm),
            _ => None,
        }
    }

    /// The label value of this engine.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::TrtllmServe => "trtllm-serve",
            Engine::TritonTrtllm => "triton-trtllm",
        }
    }

    /// The engine of a Pod from its labels: [`ENGINE_LABEL`], else [`ENGINE_LABEL_LEGACY`], else
    /// vLLM. An unknown name also gives vLLM (with a warning), as upstream does.
    pub fn from_pod_labels(labels: &BTreeMap<String, String>) -> Engine {
        let Some(name) = labels
            .get(ENGINE_LABEL)
            .or_else(|| labels.get(ENGINE_LABEL_LEGACY))
        else {
            return Engine::Vllm;
        };
        Engine::from_name(name).unwrap_or_else(|| {
            tracing::warn!(engine = %name, "unknown engine type label; reading vLLM metrics");
            Engine::Vllm
        })
    }
}

/// The LoRA adapter state of a vLLM server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoraMetrics {
    /// Adapters loaded and serving (`running_lora_adapters`).
    pub active: Vec<String>,
    /// Adapters requests are waiting for (`waiting_lora_adapters`).
    pub waiting: Vec<String>,
    /// How many adapters may be loaded at once (`max_lora`).
    pub max: u32,
}

/// What one scrape of an endpoint says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointMetrics {
    /// Requests queued in the server.
    pub waiting: u32,
    /// Requests being served.
    pub running: u32,
    /// KV cache usage, a fraction in 0..=1.
    pub kv_usage: f64,
    /// Tokens per KV block, when exposed.
    pub block_size: Option<u32>,
    /// KV blocks on the accelerator, when exposed.
    pub num_blocks: Option<u64>,
    /// LoRA state (vLLM only), when exposed.
    pub lora: Option<LoraMetrics>,
    /// The base model the server serves: the `model_name` label of its running-requests
    /// gauge (vLLM, SGLang), when exposed. A requested model that is not a base model of the
    /// pool is a LoRA adapter ([`crate::scheduler::lora_adapter`]).
    pub base_model: Option<String>,
}

/// A page without a metric the scheduler needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The named metric (and its fallback) is absent.
    #[error("metric {0} not found")]
    Missing(&'static str),
}

/// Reads the metrics of `engine` from a Prometheus text page. Malformed lines are skipped (a
/// debug log); see the module docs for the names.
pub fn extract(engine: Engine, page: &str) -> Result<EndpointMetrics, MetricsError> {
    let mut waiting: Option<f64> = None;
    let mut running: Option<f64> = None;
    let mut kv: Option<f64> = None;
    let mut kv_fallback: Option<f64> = None;
    let mut out = EndpointMetrics::default();
    let mut lora_ts = f64::NEG_INFINITY;
    let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
    let max = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.map_or(v, |s: f64| s.max(v)));
    for sample in text::samples(page) {
        let s = match sample {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics line skipped");
                continue;
            }
        };
        if !s.value.is_finite() {
            continue;
        }
        match engine {
            Engine::Vllm => match s.name {
                "vllm:num_requests_waiting" => add(&mut waiting, s.value),
                "vllm:num_requests_running" => {
                    add(&mut running, s.value);
                    if out.base_model.is_none() {
                        out.base_model = s.label("model_name").map(String::from);
                    }
                }
                "vllm:kv_cache_usage_perc" => max(&mut kv, s.value),
                "vllm:gpu_cache_usage_perc" => max(&mut kv_fallback, s.value),
                "vllm:cache_config_info" => {
                    out.block_size = s.label("block_size").and_then(|v| v.parse().ok());
                    out.num_blocks = s.label("num_gpu_blocks").and_then(|v| v.parse().ok());
                }
                "vllm:lora_requests_info" if s.value > lora_ts => {
                    lora_ts = s.value;
                    let list = |key| {
                        s.label(key).map_or_else(Vec::new, |v| {
                            v.split(',')
                                .map(str::trim)
                                .filter(|a| !a.is_empty())
                                .map(String::from)
                                .collect()
                        })
                    };
                    out.lora = Some(LoraMetrics {
                        active: list("running_lora_adapters"),
                        waiting: list("waiting_lora_adapters"),
                        max: s
                            .label("max_lora")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    });
                }
                _ => {}
            },
            Engine::Sglang => match s.name {
                "sglang:num_queue_reqs" => add(&mut waiting, s.value),
                "sglang:num_running_reqs" => {
                    add(&mut running, s.value);
                    if out.base_model.is_none() {
                        out.base_model = s.label("model_name").map(String::from);
                    }
                }
                "sglang:token_usage" => max(&mut kv, s.value),
                "sglang:cache_config_info" => {
                    out.block_size = s.label("page_size").and_then(|v| v.parse().ok());
                    out.num_blocks = s.label("num_pages").and_then(|v| v.parse().ok());
                }
                _ => {}
            },
            Engine::TrtllmServe => match s.name {
                "trtllm_num_requests_waiting" => add(&mut waiting, s.value),
                "trtllm_num_requests_running" => add(&mut running, s.value),
                "trtllm_kv_cache_utilization" => max(&mut kv, s.value),
                "trtllm_kv_cache_tokens_per_block" => out.block_size = Some(s.value as u32),
                "trtllm_kv_cache_max_blocks" => out.num_blocks = Some(s.value as u64),
                _ => {}
            },
            Engine::TritonTrtllm => match s.name {
                "nv_trt_llm_request_metrics" => match s.label("request_type").as_deref() {
                    Some("waiting") => add(&mut waiting, s.value),
                    Some("scheduled") => add(&mut running, s.value),
                    _ => {}
                },
                "nv_trt_llm_kv_cache_block_metrics" => {
                    match s.label("kv_cache_block_type").as_deref() {
                        Some("fraction") => max(&mut kv, s.value),
                        Some("tokens_per") => out.block_size = Some(s.value as u32),
                        Some("max") => out.num_blocks = Some(s.value as u64),
                        _ => {}
                    }
                }
                _ => {}
            },
        }
    }
    let (w, r, k) = match engine {
        Engine::Vllm => (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:kv_cache_usage_perc",
        ),
        Engine::Sglang => (
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            "sglang:token_usage",
        ),
        Engine::TrtllmServe => (
            "trtllm_num_requests_waiting",
            "trtllm_num_requests_running",
            "trtllm_kv_cache_utilization",
        ),
        Engine::TritonTrtllm => (
            "nv_trt_llm_request_metrics{request_type=\"waiting\"}",
            "nv_trt_llm_request_metrics{request_type=\"scheduled\"}",
            "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\"}",
        ),
    };
    out.waiting = waiting
        .ok_or(MetricsError::Missing(w))?
        .clamp(0.0, u32::MAX as f64) as u32;
    out.running = running
        .ok_or(MetricsError::Missing(r))?
        .clamp(0.0, u32::MAX as f64) as u32;
    out.kv_usage = kv
        .or(kv_fallback)
        .ok_or(MetricsError::Missing(k))?
        .clamp(0.0, 1.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like a vLLM v1 page: HELP/TYPE lines, a histogram, per-model series, the info
    /// gauges with label-encoded data and two LoRA series (the later timestamp wins).
    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4275
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="27153"} 1.0
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora,tweet-summary",waiting_lora_adapters="food-review"} 1.7000001e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 212.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 18.26
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 212.0
"#;

    #[test]
    fn vllm_page() {
        let m = extract(Engine::Vllm, VLLM).unwrap();
        assert_eq!(m.waiting, 7);
        assert_eq!(m.running, 3);
        assert!((m.kv_usage - 0.4275).abs() < 1e-12);
        assert_eq!(m.block_size, Some(16));
        assert_eq!(m.num_blocks, Some(27153));
        assert_eq!(
            m.base_model.as_deref(),
            Some("meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(
            m.lora,
            Some(LoraMetrics {
                active: vec!["sql-lora".into(), "tweet-summary".into()],
                waiting: vec!["food-review".into()],
                max: 4,
            })
        );
    }

    #[test]
    fn vllm_v0_cache_usage_fallback_and_summed_series() {
        let page = "vllm:num_requests_waiting{model_name=\"a\"} 2\nvllm:num_requests_waiting{model_name=\"b\"} 3\n\
                    vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.9\n";
        let m = extract(Engine::Vllm, page).unwrap();
        assert_eq!((m.waiting, m.running), (5, 1));
        assert!((m.kv_usage - 0.9).abs() < 1e-12);
        assert_eq!(
            (
                m.block_size,
                m.num_blocks,
                m.lora.clone(),
                m.base_model.clone()
            ),
            (None, None, None, None)
        );
        // The current name wins over the old one when both are present.
        let both = format!("{page}vllm:kv_cache_usage_perc 0.1\n");
        assert!((extract(Engine::Vllm, &both).unwrap().kv_usage - 0.1).abs() < 1e-12);
    }

    #[test]
    fn missing_required_metric_is_an_error() {
        let page = "vllm:num_requests_waiting 1\nvllm:num_requests_running 1\n";
        assert_eq!(
            extract(Engine::Vllm, page),
            Err(MetricsError::Missing("vllm:kv_cache_usage_perc"))
        );
        assert_eq!(
            extract(Engine::Sglang, VLLM),
            Err(MetricsError::Missing("sglang:num_queue_reqs"))
        );
    }

    #[test]
    fn sglang_page() {
        let page = r#"# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 12.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 4.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.61
# TYPE sglang:cache_config_info gauge
sglang:cache_config_info{num_pages="98304",page_size="1"} 1.0
"#;
        let m = extract(Engine::Sglang, page).unwrap();
        assert_eq!((m.waiting, m.running), (4, 12));
        assert!((m.kv_usage - 0.61).abs() < 1e-12);
        assert_eq!((m.block_size, m.num_blocks), (Some(1), Some(98304)));
    }

    #[test]
    fn trtllm_serve_page() {
        let page = "# TYPE trtllm_num_requests_waiting gauge\ntrtllm_num_requests_waiting{model_name=\"llama\",engine_type=\"trtllm\"} 0\n\
                    trtllm_num_requests_running{model_name=\"llama\",engine_type=\"trtllm\"} 9\n\
                    trtllm_kv_cache_utilization{model_name=\"llama\",engine_type=\"trtllm\"} 0.25\n\
                    trtllm_kv_cache_tokens_per_block{model_name=\"llama\",engine_type=\"trtllm\"} 32\n\
                    trtllm_kv_cache_max_blocks{model_name=\"llama\",engine_type=\"trtllm\"} 4096\n";
        let m = extract(Engine::TrtllmServe, page).unwrap();
        assert_eq!(
            (m.waiting, m.running, m.block_size, m.num_blocks),
            (0, 9, Some(32), Some(4096))
        );
        assert!((m.kv_usage - 0.25).abs() < 1e-12);
    }

    #[test]
    fn triton_trtllm_page() {
        let page = r#"# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 512
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 2
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 300
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 700
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 1000
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.3
"#;
        let m = extract(Engine::TritonTrtllm, page).unwrap();
        assert_eq!((m.waiting, m.running), (2, 6));
        assert!((m.kv_usage - 0.3).abs() < 1e-12);
        assert_eq!((m.block_size, m.num_blocks), (Some(64), Some(1000)));
    }

    #[test]
    fn engine_from_labels() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(Engine::from_pod_labels(&labels(&[])), Engine::Vllm);
        assert_eq!(
            Engine::from_pod_labels(&labels(&[(ENGINE_LABEL, "sglang")])),
            Engine::Sglang
        );
        assert_eq!(
            Engine::from_pod_labels(&labels(&[(ENGINE_LABEL_LEGACY, "triton-trtllm")])),
            Engine::TritonTrtllm
        );
        assert_eq!(
            Engine::from_pod_labels(&labels(&[
                (ENGINE_LABEL, "trtllm-serve"),
                (ENGINE_LABEL_LEGACY, "sglang")
            ])),
            Engine::TrtllmServe
        );
        assert_eq!(
            Engine::from_pod_labels(&labels(&[(ENGINE_LABEL, "mystery")])),
            Engine::Vllm
        );
        for e in [
            Engine::Vllm,
            Engine::Sglang,
            Engine::TrtllmServe,
            Engine::TritonTrtllm,
        ] {
            assert_eq!(Engine::from_name(e.name()), Some(e));
        }
    }

    #[test]
    fn values_are_clamped() {
        let page = "vllm:num_requests_waiting -3\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc 1.7\n";
        let m = extract(Engine::Vllm, page).unwrap();
        assert_eq!((m.waiting, m.kv_usage), (0, 1.0));
    }
}
