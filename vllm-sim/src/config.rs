//! The simulator's configuration: [`SimConfig`], its latency [`Profile`] presets and its
//! validation.
//!
//! The plain defaults ([`SimConfig::default`]) are llm-d-inference-sim's defaults: 5 running
//! slots, a waiting queue of 1000, one LoRA slot, a context of 1024 tokens, 1024 KV blocks of 16
//! tokens and no latency at all. The presets ([`Profile`]) carry the two reference latency
//! profiles (8B on one H100, 70B on eight H100s with tensor parallelism).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Errors found by [`SimConfig::validate`] (and by [`SimConfig::from_yaml`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value the simulator cannot run with; the message names the field.
    #[error("invalid simulator configuration: {0}")]
    Invalid(String),
    /// The configuration text is not valid YAML/JSON for [`SimConfig`].
    #[error("cannot parse simulator configuration: {0}")]
    Parse(String),
}

/// How the text of a completion is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// Default. Random words; the number of tokens is drawn from llm-d-inference-sim's 6-bucket
    /// histogram (probabilities 20/30/20/5/10/15 %) when the request sets `max_tokens`, and from
    /// N(40, 20) capped by the context left otherwise.
    #[default]
    Random,
    /// The prompt (completions) or the last message's content (chat) is returned, truncated to
    /// `max_tokens`.
    Echo,
}

/// The reference latency profiles (llm-d-inference-sim's `manifests/latency-profiles/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    /// Llama 3.1 8B on one H100, balanced: 16 running slots, inter-token latency 12 ms ± 2 ms,
    /// prefill overhead 30 ms + 250 µs per uncached prompt token (std-dev 5 ms), load factor 2.0.
    #[serde(rename = "8b-h100")]
    Llama8bH100,
    /// Llama 3.1 70B on eight H100s (tensor parallel 8), throughput: 64 running slots,
    /// inter-token latency 25 ms ± 4 ms, prefill overhead 80 ms + 500 µs per uncached prompt
    /// token, load factor 3.0.
    #[serde(rename = "70b-h100-tp8")]
    Llama70bH100Tp8,
}

impl Profile {
    /// Parses the command-line spelling (`8b-h100`, `70b-h100-tp8`).
    pub fn parse(name: &str) -> Option<Profile> {
        match name {
            "8b-h100" => Some(Profile::Llama8bH100),
            "70b-h100-tp8" => Some(Profile::Llama70bH100Tp8),
            _ => None,
        }
    }

    /// The full configuration of this preset (fields the profile does not set keep
    /// [`SimConfig::default`]'s values).
    pub fn config(self) -> SimConfig {
        match self {
            Profile::Llama8bH100 => SimConfig {
                model: "meta-llama/Llama-3.1-8B-Instruct".to_string(),
                max_num_seqs: 16,
                max_model_len: 8192,
                // Our estimate (not in the reference profile): ~58 GB of KV memory at 128 KiB per
                // token (32 layers x 8 KV heads x 128 x 2 x fp16) = ~450k tokens.
                kv_cache_size: 28_000,
                prefill_overhead_ms: 30.0,
                prefill_time_per_token_ms: 0.25,
                prefill_time_std_dev_ms: 5.0,
                inter_token_latency_ms: 12.0,
                inter_token_latency_std_dev_ms: 2.0,
                time_factor_under_load: 2.0,
                ..SimConfig::default()
            },
            Profile::Llama70bH100Tp8 => SimConfig {
                model: "meta-llama/Llama-3.1-70B-Instruct".to_string(),
                max_num_seqs: 64,
                max_model_len: 8192,
                // Our estimate: ~430 GB of KV memory over 8 GPUs at 320 KiB per token
                // (80 layers x 8 KV heads x 128 x 2 x fp16) = ~1.36M tokens.
                kv_cache_size: 85_000,
                prefill_overhead_ms: 80.0,
                prefill_time_per_token_ms: 0.5,
                // Our choice (the reference profile gives none): the same 1/8 ratio as the 8B one.
                prefill_time_std_dev_ms: 10.0,
                inter_token_latency_ms: 25.0,
                inter_token_latency_std_dev_ms: 4.0,
                time_factor_under_load: 3.0,
                ..SimConfig::default()
            },
        }
    }
}

/// Everything the simulated server does. Build it in Rust (`SimConfig { max_num_seqs: 8,
/// ..SimConfig::default() }`, or from a [`Profile`]) or deserialize it from YAML/JSON (every field
/// optional; missing fields take the defaults below; unknown fields are rejected).
///
/// Durations are milliseconds of *simulated* time (fractions allowed); [`time_scale`]
/// (`SimConfig::time_scale`) converts them to wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The base model's name, listed by `/v1/models` and accepted in requests' `model`.
    /// Default `"vllm-sim-model"`.
    pub model: String,
    /// Served LoRA adapter names; a request naming one uses that adapter. Default none.
    pub lora_modules: Vec<String>,
    /// Running slots (`--max-num-seqs`): requests decoded at the same time. Default 5.
    pub max_num_seqs: usize,
    /// Waiting-queue bound (FIFO): a request finding the queue full gets 429. Default 1000.
    pub max_waiting_queue_length: usize,
    /// LoRA adapters loaded at the same time (`--max-loras`). Default 1.
    pub max_loras: usize,
    /// Time to load a LoRA adapter into a free slot; requests using it start after it. Default 0.
    pub lora_load_latency_ms: f64,
    /// Context length: prompt tokens + `max_tokens` above it get 400. Default 1024.
    pub max_model_len: usize,
    /// KV cache size in blocks (`--kv-cache-size`). Default 1024.
    pub kv_cache_size: usize,
    /// Tokens per KV block (`--block-size`). Default 16.
    pub block_size: usize,
    /// Fixed part of the time to first token. Default 0.
    pub prefill_overhead_ms: f64,
    /// Time to first token per prompt token not found in the prefix cache. Default 0.
    pub prefill_time_per_token_ms: f64,
    /// Standard deviation of the time to first token (Gaussian; capped at 30 % of the mean,
    /// samples clamped to ±70 % of the mean). Default 0 (no jitter).
    pub prefill_time_std_dev_ms: f64,
    /// Time between two output tokens. Default 0.
    pub inter_token_latency_ms: f64,
    /// Standard deviation of the inter-token latency (same bounds as above). Default 0.
    pub inter_token_latency_std_dev_ms: f64,
    /// Slow-down with all slots busy: the load factor is
    /// `1 + (time_factor_under_load - 1) * (running - 1) / (max_num_seqs - 1)` and multiplies the
    /// prefill and inter-token times. Default 1.0 (no slow-down); must be >= 1.
    pub time_factor_under_load: f64,
    /// Wall-clock seconds per simulated second: 0.1 makes every simulated duration 10x shorter.
    /// Metrics report simulated seconds. Default 1.0; must be > 0.
    pub time_scale: f64,
    /// How completion text is produced. Default [`OutputMode::Random`].
    pub output_mode: OutputMode,
    /// Value of the `x-inference-pod` response header; omitted when unset. Default unset (the
    /// binary reads `POD_NAME`).
    pub pod_name: Option<String>,
    /// Value of the `x-inference-namespace` response header; omitted when unset. Default unset
    /// (the binary reads `POD_NAMESPACE`).
    pub pod_namespace: Option<String>,
    /// Seed of every random draw (output lengths, words, jitter) for reproducible runs. Default
    /// unset (seeded from the OS).
    pub seed: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "vllm-sim-model".to_string(),
            lora_modules: Vec::new(),
            max_num_seqs: 5,
            max_waiting_queue_length: 1000,
            max_loras: 1,
            lora_load_latency_ms: 0.0,
            max_model_len: 1024,
            kv_cache_size: 1024,
            block_size: 16,
            prefill_overhead_ms: 0.0,
            prefill_time_per_token_ms: 0.0,
            prefill_time_std_dev_ms: 0.0,
            inter_token_latency_ms: 0.0,
            inter_token_latency_std_dev_ms: 0.0,
            time_factor_under_load: 1.0,
            time_scale: 1.0,
            output_mode: OutputMode::Random,
            pod_name: None,
            pod_namespace: None,
            seed: None,
        }
    }
}

impl SimConfig {
    /// The preset of `profile` (same as [`Profile::config`]).
    pub fn from_profile(profile: Profile) -> SimConfig {
        profile.config()
    }

    /// Parses YAML (or JSON, which is YAML) into a configuration and validates it.
    pub fn from_yaml(text: &str) -> Result<SimConfig, ConfigError> {
        let config: SimConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the simulator can run with these values. [`crate::Simulator::serve`] calls
    /// it; the message names the first wrong field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.model.is_empty() {
            return bad("model must not be empty".into());
        }
        for (i, name) in self.lora_modules.iter().enumerate() {
            if name.is_empty() || *name == self.model || self.lora_modules[..i].contains(name) {
                return bad(format!(
                    "lora_modules: {name:?} is empty, the base model or listed twice"
                ));
            }
        }
        if self.max_num_seqs == 0 {
            return bad("max_num_seqs must be at least 1".into());
        }
        if self.max_loras == 0 && !self.lora_modules.is_empty() {
            return bad("max_loras must be at least 1 when LoRA adapters are served".into());
        }
        if self.block_size == 0 || self.kv_cache_size == 0 || self.max_model_len == 0 {
            return bad("block_size, kv_cache_size and max_model_len must be at least 1".into());
        }
        if self.max_model_len > self.kv_cache_size.saturating_mul(self.block_size) {
            return bad(format!(
                "max_model_len {} does not fit in the KV cache ({} blocks of {} tokens)",
                self.max_model_len, self.kv_cache_size, self.block_size
            ));
        }
        for (name, v) in [
            ("lora_load_latency_ms", self.lora_load_latency_ms),
            ("prefill_overhead_ms", self.prefill_overhead_ms),
            ("prefill_time_per_token_ms", self.prefill_time_per_token_ms),
            ("prefill_time_std_dev_ms", self.prefill_time_std_dev_ms),
            ("inter_token_latency_ms", self.inter_token_latency_ms),
            (
                "inter_token_latency_std_dev_ms",
                self.inter_token_latency_std_dev_ms,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if !(self.time_factor_under_load.is_finite() && self.time_factor_under_load >= 1.0) {
            return bad("time_factor_under_load must be >= 1".into());
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return bad("time_scale must be a finite number > 0".into());
        }
        Ok(())
    }

    /// Converts simulated milliseconds into the wall-clock duration to sleep.
    pub fn wall(&self, simulated_ms: f64) -> Duration {
        Duration::from_secs_f64((simulated_ms * self.time_scale / 1000.0).max(0.0))
    }

    /// Whether `name` is the base model or a served LoRA adapter.
    pub fn serves(&self, name: &str) -> bool {
        name == self.model || self.lora_modules.iter().any(|l| l == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_llm_d_inference_sim_defaults_and_valid() {
        let c = SimConfig::default();
        assert_eq!(
            (c.max_num_seqs, c.max_waiting_queue_length, c.max_loras),
            (5, 1000, 1)
        );
        assert_eq!(
            (c.max_model_len, c.kv_cache_size, c.block_size),
            (1024, 1024, 16)
        );
        c.validate().unwrap();
        Profile::Llama8bH100.config().validate().unwrap();
        Profile::Llama70bH100Tp8.config().validate().unwrap();
    }

    #[test]
    fn yaml_overrides_only_given_fields_and_rejects_bad_values() {
        let c = SimConfig::from_yaml("max_num_seqs: 8\nlora_modules: [a, b]\noutput_mode: echo\n")
            .unwrap();
        assert_eq!(c.max_num_seqs, 8);
        assert_eq!(c.lora_modules, vec!["a", "b"]);
        assert_eq!(c.output_mode, OutputMode::Echo);
        assert_eq!(c.block_size, 16);
        assert!(SimConfig::from_yaml("time_scale: 0\n").is_err());
        assert!(SimConfig::from_yaml("no_such_field: 1\n").is_err());
        assert!(SimConfig::from_yaml("max_model_len: 100000\n").is_err());
    }
}
