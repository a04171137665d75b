//! Synthetic, seeded workloads: what each request asks for (model, prompt, output length).
//!
//! Prompts are random lowercase words of 5 letters. vllm-sim's dummy tokenizer makes each word
//! exactly one token (see `docs/vllm-sim.md`, "Tokenizer"), so a prompt of *n* words is *n*
//! prompt tokens. Output lengths are forced with `ignore_eos: true` and `max_tokens`, so the
//! server generates exactly the drawn number of tokens.
//!
//! No dataset is downloaded: every generator draws from a fixed distribution with a seed, so the
//! same seed gives the same requests in the same order, whatever the target.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};
use serde::Serialize;

/// Which OpenAI endpoint the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/chat/completions`: the shared prefix (if any) is a `system` message, the rest a
    /// `user` message. The default.
    Chat,
    /// `POST /v1/completions`: the prompt is the shared prefix, a space and the rest.
    Completions,
}

impl Api {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        }
    }

    /// Prompt tokens the rendering adds around `messages` texts: with vllm-sim's chat template,
    /// each message adds its `<|role|>` marker (5 tokens) and the prompt ends with
    /// `<|assistant|>` (6 tokens). Completions add nothing.
    pub fn overhead(self, messages: usize) -> usize {
        match self {
            Api::Chat => 5 * messages + 6,
            Api::Completions => 0,
        }
    }
}

/// One request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// The `model` field: the base model or a LoRA adapter's name.
    pub model: String,
    /// Shared prefix text (the shared-prefix workload's group prompt), if any.
    pub prefix: Option<std::sync::Arc<str>>,
    /// The request's own text (a ShareGPT-like prompt, or a user's question).
    pub text: String,
    /// `max_tokens`, generated exactly (`ignore_eos`).
    pub max_tokens: usize,
    /// Prompt tokens the server will count (prefix, text and the chat template's markers).
    pub prompt_tokens: usize,
    /// The shared-prefix group, if any.
    pub group: Option<usize>,
}

impl RequestSpec {
    /// The JSON body of this request for `api`, always streamed (`stream: true`) with a final
    /// usage chunk (`stream_options.include_usage`).
    pub fn body(&self, api: Api) -> Vec<u8> {
        let v = match api {
            Api::Chat => {
                let mut messages = Vec::with_capacity(2);
                if let Some(p) = &self.prefix {
                    messages.push(serde_json::json!({"role": "system", "content": &**p}));
                }
                messages.push(serde_json::json!({"role": "user", "content": self.text}));
                serde_json::json!({
                    "model": self.model,
                    "messages": messages,
                    "max_tokens": self.max_tokens,
                    "ignore_eos": true,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                })
            }
            Api::Completions => {
                let prompt = match &self.prefix {
                    Some(p) => format!("{p} {}", self.text),
                    None => self.text.clone(),
                };
                serde_json::json!({
                    "model": self.model,
                    "prompt": prompt,
                    "max_tokens": self.max_tokens,
                    "ignore_eos": true,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                })
            }
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// `n` random 5-letter words separated by spaces: exactly `n` tokens for vllm-sim.
pub fn random_words(rng: &mut impl Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        // One draw per word: 26^5 < 2^32, five base-26 digits.
        let mut x: u32 = rng.random();
        for _ in 0..5 {
            s.push(char::from(b'a' + (x % 26) as u8));
            x /= 26;
        }
    }
    s
}

/// Parameters of the ShareGPT-like workload: log-normal prompt and output lengths.
///
/// The means are the ShareGPT statistics reported in the vLLM paper (Kwon et al., "Efficient
/// Memory Management for Large Language Model Serving with PagedAttention", SOSP 2023, Fig. 11:
/// mean input 161.31 tokens, mean output 337.99 tokens). The shape parameters (σ of the
/// underlying normal) are our choice to give the long right tail of that figure's histograms:
/// median = mean × e^(−σ²/2), so σ = 1.0 puts the prompt median near 98 tokens and σ = 0.8 the
/// output median near 245 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShareGptParams {
    /// Mean prompt length in tokens. Default 161.31.
    pub prompt_mean: f64,
    /// σ of the prompt length's log. Default 1.0.
    pub prompt_sigma: f64,
    /// Mean output length in tokens. Default 337.99.
    pub output_mean: f64,
    /// σ of the output length's log. Default 0.8.
    pub output_sigma: f64,
}

impl Default for ShareGptParams {
    fn default() -> Self {
        ShareGptParams {
            prompt_mean: 161.31,
            prompt_sigma: 1.0,
            output_mean: 337.99,
            output_sigma: 0.8,
        }
    }
}

/// A draw from the log-normal distribution with the given mean (not median) and σ of the log:
/// exp(μ + σ·z) with μ = ln(mean) − σ²/2 and z standard normal. A mean below 1 counts as 1 and a
/// σ that is negative or not finite as 0.
fn lognormal(rng: &mut impl Rng, mean: f64, sigma: f64) -> f64 {
    let sigma = if sigma.is_finite() && sigma > 0.0 {
        sigma
    } else {
        0.0
    };
    let mean = if mean.is_finite() { mean.max(1.0) } else { 1.0 };
    let z: f64 = StandardNormal.sample(rng);
    (mean.ln() - sigma * sigma / 2.0 + sigma * z).exp()
}

/// Parameters of the shared-prefix workload, after inference-perf's `shared_prefix` generator:
/// `groups` shared prefixes (system prompts) of `prefix_len` tokens, each with
/// `users_per_group` users whose fixed question has `question_len` tokens; every prompt is a
/// group's prefix followed by one user's question. The prompts are shuffled once and requests
/// cycle through them, so each prefix recurs every `groups` requests on average.
///
/// The defaults are the published llm-d test's shape ("KV-Cache Wins You Can See", llm-d blog,
/// 24 Sep 2025: 150 groups, 6,000-token prefix, 5 users, 1,200-token questions); the servers'
/// KV cache is scaled to keep that test's ratio (the prefixes fill 73% of the pool's KV), see
/// [`shared_prefix_kv_blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SharedPrefixParams {
    /// Number of groups (distinct shared prefixes). Default 150.
    pub groups: usize,
    /// Shared prefix length in tokens. Default 6,000.
    pub prefix_len: usize,
    /// Users (distinct questions) per group. Default 5.
    pub users_per_group: usize,
    /// Question length in tokens. Default 1,200.
    pub question_len: usize,
    /// Output length in tokens. Default 200 (our choice; the published test does not give one).
    pub output_len: usize,
}

impl Default for SharedPrefixParams {
    fn default() -> Self {
        SharedPrefixParams {
            groups: 150,
            prefix_len: 6_000,
            users_per_group: 5,
            question_len: 1_200,
            output_len: 200,
        }
    }
}

/// The share of the pool's KV cache the prefixes fill in the published llm-d test (about 73%).
pub const PUBLISHED_PREFIX_KV_SHARE: f64 = 0.73;

/// KV blocks per server so that the shared prefixes fill [`PUBLISHED_PREFIX_KV_SHARE`] of the
/// pool's KV cache, as in the published test (each server then holds about 1/`servers` of the
/// pool, so one server cannot cache every prefix but the pool can), and never less than what
/// one request of `max_model_len` tokens needs.
pub fn shared_prefix_kv_blocks(
    p: &SharedPrefixParams,
    servers: usize,
    block_size: usize,
    max_model_len: usize,
) -> usize {
    let prefix_tokens = (p.groups * p.prefix_len) as f64;
    let per_server = prefix_tokens / PUBLISHED_PREFIX_KV_SHARE / servers.max(1) as f64;
    let blocks = (per_server / block_size.max(1) as f64).ceil() as usize;
    blocks.max(max_model_len.div_ceil(block_size.max(1)))
}

/// Parameters of the LoRA workload: ShareGPT-like lengths, and each request names the base model
/// (with probability `base_share`) or one of `adapters` LoRA adapters drawn from a Zipf law with
/// exponent `zipf_s` (adapter `lora-0` is the most popular).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoraParams {
    /// Number of adapters (`lora-0` .. `lora-{n-1}`), all served by every server. Default 8.
    pub adapters: usize,
    /// Zipf exponent of adapter popularity. Default 1.0.
    pub zipf_s: f64,
    /// Share of requests for the base model. Default 0.2.
    pub base_share: f64,
}

impl Default for LoraParams {
    fn default() -> Self {
        LoraParams {
            adapters: 8,
            zipf_s: 1.0,
            base_share: 0.2,
        }
    }
}

impl LoraParams {
    /// The adapters' names.
    pub fn names(&self) -> Vec<String> {
        (0..self.adapters).map(|i| format!("lora-{i}")).collect()
    }
}

/// A workload and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Workload {
    /// ShareGPT-like prompt and output lengths.
    Sharegpt(ShareGptParams),
    /// Groups of long shared prefixes with per-user questions.
    SharedPrefix(SharedPrefixParams),
    /// ShareGPT-like lengths over a Zipf mix of LoRA adapters.
    Lora {
        /// Prompt and output lengths.
        lengths: ShareGptParams,
        /// Adapters and their popularity.
        lora: LoraParams,
    },
}

impl Workload {
    /// The command-line name (`sharegpt`, `shared-prefix`, `lora`).
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Sharegpt(_) => "sharegpt",
            Workload::SharedPrefix(_) => "shared-prefix",
            Workload::Lora { .. } => "lora",
        }
    }

    /// A generator of this workload's requests for `model` (the base model name) on `api`, with
    /// prompt + output clamped to `max_model_len`, seeded with `seed`.
    pub fn generator(&self, model: &str, api: Api, max_model_len: usize, seed: u64) -> Generator {
        let mut rng = StdRng::seed_from_u64(seed);
        let kind = match self {
            Workload::Sharegpt(p) => Kind::ShareGpt(*p, None),
            Workload::Lora { lengths, lora } => Kind::ShareGpt(
                *lengths,
                Some((
                    *lora,
                    Zipf::new(lora.adapters.max(1) as f64, lora.zipf_s.max(0.0)).ok(),
                )),
            ),
            Workload::SharedPrefix(p) => {
                let mut prompts = Vec::with_capacity(p.groups * p.users_per_group);
                for g in 0..p.groups {
                    let prefix: std::sync::Arc<str> = random_words(&mut rng, p.prefix_len).into();
                    for _ in 0..p.users_per_group {
                        prompts.push((g, prefix.clone(), random_words(&mut rng, p.question_len)));
                    }
                }
                prompts.shuffle(&mut rng);
                Kind::SharedPrefix(*p, prompts)
            }
        };
        Generator {
            model: model.to_string(),
            api,
            max_model_len,
            rng,
            kind,
            next: 0,
        }
    }
}

enum Kind {
    ShareGpt(ShareGptParams, Option<(LoraParams, Option<Zipf<f64>>)>),
    SharedPrefix(
        SharedPrefixParams,
        Vec<(usize, std::sync::Arc<str>, String)>,
    ),
}

/// Draws a workload's requests one after the other (an iterator without end).
pub struct Generator {
    model: String,
    api: Api,
    max_model_len: usize,
    rng: StdRng,
    kind: Kind,
    next: usize,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("model", &self.model)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Iterator for Generator {
    type Item = RequestSpec;

    fn next(&mut self) -> Option<RequestSpec> {
        let i = self.next;
        self.next += 1;
        let api = self.api;
        match &self.kind {
            Kind::ShareGpt(p, lora) => {
                let overhead = api.overhead(1);
                // Lengths below 4 tokens are raised to 4 (vLLM's ShareGPT sampler drops such
                // entries); prompt + output must fit max_model_len.
                let room = self.max_model_len.saturating_sub(overhead).max(8);
                let prompt = lognormal(&mut self.rng, p.prompt_mean, p.prompt_sigma);
                let prompt = (prompt.round() as usize).clamp(4, room - 4);
                let output = lognormal(&mut self.rng, p.output_mean, p.output_sigma);
                let output = (output.round() as usize).clamp(4, room - prompt);
                let model = match lora {
                    Some((l, zipf))
                        if l.adapters > 0 && self.rng.random::<f64>() >= l.base_share =>
                    {
                        let k = match zipf {
                            Some(z) => (z.sample(&mut self.rng) as usize).clamp(1, l.adapters) - 1,
                            None => self.rng.random_range(0..l.adapters),
                        };
                        format!("lora-{k}")
                    }
                    _ => self.model.clone(),
                };
                let text = random_words(&mut self.rng, prompt);
                Some(RequestSpec {
                    model,
                    prefix: None,
                    text,
                    max_tokens: output,
                    prompt_tokens: prompt + overhead,
                    group: None,
                })
            }
            Kind::SharedPrefix(p, prompts) => {
                if prompts.is_empty() {
                    return None;
                }
                let (group, prefix, question) = &prompts[i % prompts.len()];
                let prompt_tokens = p.prefix_len + p.question_len + api.overhead(2);
                let max_tokens = p
                    .output_len
                    .clamp(1, self.max_model_len.saturating_sub(prompt_tokens).max(1));
                Some(RequestSpec {
                    model: self.model.clone(),
                    prefix: Some(prefix.clone()),
                    text: question.clone(),
                    max_tokens,
                    prompt_tokens,
                    group: Some(*group),
                })
            }
        }
    }
}
