//! The engine model: running slots, the FIFO waiting queue, LoRA slots and the KV block cache,
//! and the latency plan of each admitted request. Pure logic: the caller passes the time
//! (`now`) and gets back which requests start, so it is tested without sockets or clocks.
//!
//! * **Slots.** At most `max_num_seqs` requests run at once; the others wait in a FIFO queue of
//!   at most `max_waiting_queue_length` (a request that finds it full is rejected: 429).
//! * **LoRA.** At most `max_loras` adapters are loaded. A request for an adapter that is not
//!   loaded waits until a slot is free or an idle adapter (no running request) can be evicted
//!   (least recently used first); loading takes `lora_load_latency_ms`, which delays the first
//!   token of the requests using it.
//! * **Dequeue order.** When a slot frees up, the oldest waiting request whose adapter is loaded
//!   (or that uses the base model) starts; if there is none, the oldest whose adapter can now be
//!   loaded. A request whose KV blocks do not fit stops the dequeue until blocks are released
//!   (first come, first served, as vLLM's scheduler).
//! * **KV cache** ([`KvCache`]). A request holds its prompt's hashed blocks and private blocks
//!   for the rest of its prompt and all its output (reserved when it starts, a simplification of
//!   vLLM's incremental allocation; `max_model_len` must fit in the cache so any request fits
//!   alone). Leading prompt blocks found in the cache are not prefilled again (at least one
//!   prompt token is always computed, as in vLLM).
//! * **Latency.** Time to first token = LoRA load wait + (prefill_overhead + uncached prompt
//!   tokens x prefill_time_per_token) x load factor, with [`jitter`]; decode emits one token per
//!   inter-token latency x load factor ([`load_factor`] with the running count at that moment).

use crate::config::SimConfig;
use crate::kv::KvCache;
use crate::tokenizer::PromptBlocks;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many recent [`LatencyPlan`]s [`EngineState::recent_plans`] keeps.
pub const RECENT_PLANS: usize = 256;

/// The load factor: `1 + (time_factor_under_load - 1) * (running - 1) / (max_num_seqs - 1)`,
/// 1 when `max_num_seqs <= 1` or `running <= 1`.
pub fn load_factor(time_factor_under_load: f64, max_num_seqs: usize, running: usize) -> f64 {
    if max_num_seqs <= 1 || running <= 1 {
        return 1.0;
    }
    let running = running.min(max_num_seqs);
    1.0 + (time_factor_under_load - 1.0) * (running - 1) as f64 / (max_num_seqs - 1) as f64
}

/// A Gaussian sample around `mean` with standard deviation `std_dev` capped at 30 % of the mean,
/// clamped to `[0.3 * mean, 1.7 * mean]` (±70 %). Returns `mean` when either is 0.
pub fn jitter<R: Rng + ?Sized>(rng: &mut R, mean: f64, std_dev: f64) -> f64 {
    if mean <= 0.0 || std_dev <= 0.0 {
        return mean.max(0.0);
    }
    let sd = std_dev.min(0.3 * mean);
    match Normal::new(mean, sd) {
        Ok(n) => n.sample(rng).clamp(0.3 * mean, 1.7 * mean),
        Err(_) => mean,
    }
}

/// A duration of `ms` milliseconds (fractions allowed), rounded to the nanosecond.
pub fn millis(ms: f64) -> Duration {
    Duration::from_nanos((ms.max(0.0) * 1e6).round() as u64)
}

/// The simulated duration of a wall-clock duration under `time_scale`.
fn sim_duration(wall: Duration, time_scale: f64) -> Duration {
    Duration::from_nanos((wall.as_nanos() as f64 / time_scale).round() as u64)
}

/// A request handed to the engine.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    /// Unique id (the server numbers requests in arrival order).
    pub id: u64,
    /// The LoRA adapter, or `None` for the base model.
    pub adapter: Option<Arc<str>>,
    /// Prompt token count and block hashes.
    pub prompt: PromptBlocks,
    /// Number of tokens the request will generate (decided before it is queued).
    pub output_tokens: usize,
}

/// What the engine decided for a request when it started running. Durations are simulated.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyPlan {
    /// The request's id.
    pub request_id: u64,
    /// Its LoRA adapter, if any.
    pub adapter: Option<Arc<str>>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache (not prefilled).
    pub cached_tokens: usize,
    /// Tokens it will generate.
    pub output_tokens: usize,
    /// Time spent in the waiting queue.
    pub queue_time: Duration,
    /// Wait for its LoRA adapter to finish loading.
    pub lora_load_wait: Duration,
    /// Load factor at start (running count including this request).
    pub load_factor: f64,
    /// Prefill time: (overhead + uncached tokens x per-token time) with jitter, x load factor.
    pub prefill: Duration,
    /// Time from start to the first token: `lora_load_wait + prefill`.
    pub ttft: Duration,
}

/// A request that starts running now: the caller's payload and its plan.
#[derive(Debug)]
pub struct Started<T> {
    /// What the caller attached to the request in [`Engine::submit`].
    pub payload: T,
    /// The latency plan.
    pub plan: LatencyPlan,
}

/// The result of [`Engine::submit`].
#[derive(Debug)]
pub struct Submitted<T> {
    /// The submitted request's payload when the waiting queue was full (429).
    pub rejected: Option<T>,
    /// Requests that start now (possibly including the submitted one).
    pub started: Vec<Started<T>>,
}

/// A snapshot of the engine, as `/metrics` and tests see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineState {
    /// Running requests.
    pub running: usize,
    /// Waiting requests.
    pub waiting: usize,
    /// KV blocks held by running requests.
    pub kv_used_blocks: usize,
    /// Unused blocks still caching a prefix.
    pub kv_cached_blocks: usize,
    /// KV capacity in blocks.
    pub kv_total_blocks: usize,
    /// `kv_used_blocks / kv_total_blocks`.
    pub kv_usage: f64,
    /// Loaded LoRA adapters (running or idle), in load order.
    pub loaded_loras: Vec<String>,
    /// Adapters of running requests, sorted.
    pub running_loras: Vec<String>,
    /// Adapters of waiting requests, sorted.
    pub waiting_loras: Vec<String>,
    /// Prompt tokens of started requests (vLLM's prefix cache queries).
    pub prefix_cache_queries: u64,
    /// Of those, tokens found in the prefix cache (vLLM's prefix cache hits).
    pub prefix_cache_hits: u64,
    /// The plans of the last [`RECENT_PLANS`] started requests, oldest first.
    pub recent_plans: Vec<LatencyPlan>,
}

struct Waiting<T> {
    req: EngineRequest,
    payload: T,
    since: Instant,
}

struct Running {
    adapter: Option<Arc<str>>,
    hashes: Vec<u64>,
    private: usize,
}

struct LoraSlot {
    name: Arc<str>,
    refs: usize,
    ready_at: Instant,
    last_used: u64,
}

/// The engine; `T` is what the caller attaches to each request (the server uses the channel that
/// wakes the request up).
pub struct Engine<T> {
    cfg: SimConfig,
    rng: StdRng,
    waiting: VecDeque<Waiting<T>>,
    running: HashMap<u64, Running>,
    loras: Vec<LoraSlot>,
    lora_tick: u64,
    kv: KvCache,
    prefix_queries: u64,
    prefix_hits: u64,
    recent: VecDeque<LatencyPlan>,
}

impl<T> Engine<T> {
    /// An idle engine for `cfg` (which should have passed [`SimConfig::validate`]). Its random
    /// draws (prefill jitter) are seeded from `cfg.seed` when set.
    pub fn new(cfg: &SimConfig) -> Engine<T> {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Engine {
            cfg: cfg.clone(),
            rng,
            waiting: VecDeque::new(),
            running: HashMap::new(),
            loras: Vec::new(),
            lora_tick: 0,
            kv: KvCache::new(cfg.kv_cache_size),
            prefix_queries: 0,
            prefix_hits: 0,
            recent: VecDeque::new(),
        }
    }

    /// Number of running requests.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Number of waiting requests.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a request and starts whatever can start. The request is rejected (its payload
    /// returned in [`Submitted::rejected`]) when it cannot start now and the queue is full.
    pub fn submit(&mut self, req: EngineRequest, payload: T, now: Instant) -> Submitted<T> {
        let id = req.id;
        self.waiting.push_back(Waiting {
            req,
            payload,
            since: now,
        });
        let started = self.schedule(now);
        let mut rejected = None;
        if self.waiting.len() > self.cfg.max_waiting_queue_length
            && self.waiting.back().is_some_and(|w| w.req.id == id)
        {
            rejected = self.waiting.pop_back().map(|w| w.payload);
        }
        Submitted { rejected, started }
    }

    /// Ends a request: a running one gives back its slot, KV blocks and adapter reference; a
    /// waiting one (its client left) leaves the queue. Returns the requests that start now.
    pub fn finish(&mut self, id: u64, now: Instant) -> Vec<Started<T>> {
        if let Some(r) = self.running.remove(&id) {
            self.kv.release(&r.hashes, r.private);
            if let Some(name) = &r.adapter {
                self.lora_tick += 1;
                if let Some(slot) = self.loras.iter_mut().find(|s| s.name == *name) {
                    slot.refs = slot.refs.saturating_sub(1);
                    slot.last_used = self.lora_tick;
                }
            }
        } else if let Some(pos) = self.waiting.iter().position(|w| w.req.id == id) {
            self.waiting.remove(pos);
        }
        self.schedule(now)
    }

    fn adapter_loaded(&self, adapter: &Option<Arc<str>>) -> bool {
        match adapter {
            None => true,
            Some(name) => self.loras.iter().any(|s| s.name == *name),
        }
    }

    fn adapter_loadable(&self) -> bool {
        self.loras.len() < self.cfg.max_loras || self.loras.iter().any(|s| s.refs == 0)
    }

    /// Takes a reference on `adapter`, loading it (evicting the least recently used idle one if
    /// needed). Returns the wait until it is loaded, in simulated time.
    fn acquire_adapter(&mut self, adapter: &Option<Arc<str>>, now: Instant) -> Duration {
        let Some(name) = adapter else {
            return Duration::ZERO;
        };
        if let Some(slot) = self.loras.iter_mut().find(|s| s.name == *name) {
            slot.refs += 1;
            let wall = slot.ready_at.saturating_duration_since(now);
            return sim_duration(wall, self.cfg.time_scale);
        }
        if self.loras.len() >= self.cfg.max_loras
            && let Some(victim) = self
                .loras
                .iter()
                .enumerate()
                .filter(|(_, s)| s.refs == 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
        {
            let evicted = self.loras.remove(victim);
            tracing::debug!(adapter = %evicted.name, "LoRA adapter evicted");
        }
        let latency = self.cfg.lora_load_latency_ms;
        self.loras.push(LoraSlot {
            name: name.clone(),
            refs: 1,
            ready_at: now + self.cfg.wall(latency),
            last_used: self.lora_tick,
        });
        tracing::debug!(adapter = %name, "LoRA adapter loading");
        millis(latency)
    }

    fn schedule(&mut self, now: Instant) -> Vec<Started<T>> {
        let mut started = Vec::new();
        while self.running.len() < self.cfg.max_num_seqs {
            let idx = self
                .waiting
                .iter()
                .position(|w| self.adapter_loaded(&w.req.adapter))
                .or_else(|| {
                    if self.adapter_loadable() {
                        (!self.waiting.is_empty()).then_some(0)
                    } else {
                        None
                    }
                });
            let Some(idx) = idx else { break };
            let req = &self.waiting[idx].req;
            let bs = self.cfg.block_size;
            let total_blocks = (req.prompt.tokens + req.output_tokens).div_ceil(bs);
            let private = total_blocks.saturating_sub(req.prompt.hashes.len());
            let Some(hit_blocks) = self.kv.allocate(&req.prompt.hashes, private) else {
                break;
            };
            let Some(w) = self.waiting.remove(idx) else {
                break;
            };
            let lora_load_wait = self.acquire_adapter(&w.req.adapter, now);
            let prompt_tokens = w.req.prompt.tokens;
            let cached_blocks = hit_blocks.min(prompt_tokens.saturating_sub(1) / bs);
            let cached_tokens = cached_blocks * bs;
            self.prefix_queries += prompt_tokens as u64;
            self.prefix_hits += cached_tokens as u64;
            self.running.insert(
                w.req.id,
                Running {
                    adapter: w.req.adapter.clone(),
                    hashes: w.req.prompt.hashes,
                    private,
                },
            );
            let f = load_factor(
                self.cfg.time_factor_under_load,
                self.cfg.max_num_seqs,
                self.running.len(),
            );
            let mean = self.cfg.prefill_overhead_ms
                + (prompt_tokens - cached_tokens) as f64 * self.cfg.prefill_time_per_token_ms;
            let prefill_ms = jitter(&mut self.rng, mean, self.cfg.prefill_time_std_dev_ms) * f;
            let prefill = millis(prefill_ms);
            let queue_wall = now.saturating_duration_since(w.since);
            let plan = LatencyPlan {
                request_id: w.req.id,
                adapter: w.req.adapter,
                prompt_tokens,
                cached_tokens,
                output_tokens: w.req.output_tokens,
                queue_time: sim_duration(queue_wall, self.cfg.time_scale),
                lora_load_wait,
                load_factor: f,
                prefill,
                ttft: lora_load_wait + prefill,
            };
            if self.recent.len() == RECENT_PLANS {
                self.recent.pop_front();
            }
            self.recent.push_back(plan.clone());
            started.push(Started {
                payload: w.payload,
                plan,
            });
        }
        started
    }

    /// A snapshot of the engine's state.
    pub fn state(&self) -> EngineState {
        let mut running_loras: Vec<String> = self
            .running
            .values()
            .filter_map(|r| r.adapter.as_deref().map(str::to_string))
            .collect();
        running_loras.sort();
        running_loras.dedup();
        let mut waiting_loras: Vec<String> = self
            .waiting
            .iter()
            .filter_map(|w| w.req.adapter.as_deref().map(str::to_string))
            .collect();
        waiting_loras.sort();
        waiting_loras.dedup();
        EngineState {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_used_blocks: self.kv.used(),
            kv_cached_blocks: self.kv.unused_cached(),
            kv_total_blocks: self.kv.total(),
            kv_usage: self.kv.usage(),
            loaded_loras: self.loras.iter().map(|s| s.name.to_string()).collect(),
            running_loras,
            waiting_loras,
            prefix_cache_queries: self.prefix_queries,
            prefix_cache_hits: self.prefix_hits,
            recent_plans: self.recent.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::prompt_blocks;

    fn cfg() -> SimConfig {
        SimConfig {
            max_num_seqs: 2,
            max_waiting_queue_length: 3,
            max_loras: 1,
            lora_modules: vec!["a".into(), "b".into()],
            block_size: 4,
            kv_cache_size: 64,
            max_model_len: 64,
            prefill_overhead_ms: 10.0,
            prefill_time_per_token_ms: 1.0,
            ..SimConfig::default()
        }
    }

    fn req(id: u64, adapter: Option<&str>, prompt: &str, out: usize) -> EngineRequest {
        EngineRequest {
            id,
            adapter: adapter.map(Arc::from),
            prompt: prompt_blocks("m", prompt, 4),
            output_tokens: out,
        }
    }

    fn ids(s: &[Started<u64>]) -> Vec<u64> {
        s.iter().map(|s| s.payload).collect()
    }

    #[test]
    fn load_factor_is_linear_between_one_and_the_factor() {
        assert_eq!(load_factor(2.0, 16, 1), 1.0);
        assert_eq!(load_factor(2.0, 16, 16), 2.0);
        assert!((load_factor(3.0, 5, 3) - 2.0).abs() < 1e-12);
        assert_eq!(load_factor(3.0, 1, 1), 1.0);
        assert_eq!(load_factor(3.0, 1, 5), 1.0);
        assert_eq!(load_factor(1.0, 8, 8), 1.0);
    }

    #[test]
    fn jitter_stays_within_seventy_percent_and_caps_the_std_dev() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut lo, mut hi, mut sum) = (f64::MAX, f64::MIN, 0.0);
        for _ in 0..20_000 {
            let x = jitter(&mut rng, 10.0, 100.0);
            lo = lo.min(x);
            hi = hi.max(x);
            sum += x;
        }
        assert!(lo >= 3.0 && hi <= 17.0, "{lo} {hi}");
        // With the std-dev capped at 3, the clamp at 3..17 is rarely hit and the mean stays ~10.
        assert!((sum / 20_000.0 - 10.0).abs() < 0.2);
        assert!(
            lo < 5.0 && hi > 15.0,
            "the Gaussian tails reach the clamp region: {lo} {hi}"
        );
        assert_eq!(jitter(&mut rng, 10.0, 0.0), 10.0);
        assert_eq!(jitter(&mut rng, 0.0, 5.0), 0.0);
    }

    #[test]
    fn slots_queue_and_rejection() {
        let mut e: Engine<u64> = Engine::new(&cfg());
        let t = Instant::now();
        assert_eq!(ids(&e.submit(req(1, None, "x", 1), 1, t).started), vec![1]);
        assert_eq!(ids(&e.submit(req(2, None, "x", 1), 2, t).started), vec![2]);
        for i in 3..=5 {
            let s = e.submit(req(i, None, "x", 1), i, t);
            assert!(s.started.is_empty() && s.rejected.is_none());
        }
        assert_eq!(e.submit(req(6, None, "x", 1), 6, t).rejected, Some(6));
        assert_eq!((e.running(), e.waiting()), (2, 3));
        // FIFO: finishing 1 starts 3.
        assert_eq!(ids(&e.finish(1, t)), vec![3]);
        // A waiting request that leaves is dropped from the queue.
        assert!(e.finish(4, t).is_empty());
        assert_eq!(ids(&e.finish(2, t)), vec![5]);
    }

    #[test]
    fn dequeue_prefers_loaded_adapters_then_loadable_ones() {
        let mut e: Engine<u64> = Engine::new(&cfg());
        let t = Instant::now();
        assert_eq!(
            ids(&e.submit(req(1, Some("a"), "x", 1), 1, t).started),
            vec![1]
        );
        // "b" cannot load: the only slot holds "a", which is busy.
        assert!(e.submit(req(2, Some("b"), "x", 1), 2, t).started.is_empty());
        // A later request for the loaded "a" overtakes the older "b" one.
        assert_eq!(
            ids(&e.submit(req(3, Some("a"), "x", 1), 3, t).started),
            vec![3]
        );
        let s = e.state();
        assert_eq!(
            (s.running_loras.clone(), s.waiting_loras.clone()),
            (vec!["a".into()], vec!["b".into()])
        );
        assert!(e.finish(1, t).is_empty(), "a is still used by 3");
        // When "a" is idle it is evicted and "b" loads.
        assert_eq!(ids(&e.finish(3, t)), vec![2]);
        assert_eq!(e.state().loaded_loras, vec!["b".to_string()]);
    }

    #[test]
    fn lora_loading_delays_the_first_token_until_the_adapter_is_loaded() {
        let c = SimConfig {
            lora_load_latency_ms: 100.0,
            time_scale: 0.5,
            ..cfg()
        };
        let mut e: Engine<u64> = Engine::new(&c);
        let t = Instant::now();
        let p1 = e
            .submit(req(1, Some("a"), "x", 1), 1, t)
            .started
            .remove(0)
            .plan;
        assert_eq!(p1.lora_load_wait, Duration::from_millis(100));
        assert_eq!(p1.ttft, p1.lora_load_wait + p1.prefill);
        // 20 ms of wall-clock time later (40 ms simulated at scale 0.5) the load is 60 % done.
        let later = t + Duration::from_millis(20);
        let p2 = e
            .submit(req(2, Some("a"), "x", 1), 2, later)
            .started
            .remove(0)
            .plan;
        assert_eq!(p2.lora_load_wait, Duration::from_millis(60));
        let p3 = e.submit(req(3, None, "x", 1), 3, later);
        assert!(p3.started.is_empty(), "both slots are busy");
        assert_eq!(e.finish(1, later)[0].plan.lora_load_wait, Duration::ZERO);
    }

    #[test]
    fn cached_prefix_reduces_the_planned_ttft() {
        let mut e: Engine<u64> = Engine::new(&cfg());
        let t = Instant::now();
        let prompt = "one two three four five six seven eight nine ten eleven twelve";
        let first = e
            .submit(req(1, None, prompt, 2), 1, t)
            .started
            .remove(0)
            .plan;
        assert_eq!((first.prompt_tokens, first.cached_tokens), (12, 0));
        assert_eq!(first.ttft, Duration::from_millis(22));
        e.finish(1, t);
        let second = e
            .submit(req(2, None, prompt, 2), 2, t)
            .started
            .remove(0)
            .plan;
        // 3 cached blocks, but the last prompt token is always computed: 2 blocks = 8 tokens.
        assert_eq!(second.cached_tokens, 8);
        assert_eq!(second.ttft, Duration::from_millis(14));
        let s = e.state();
        assert_eq!((s.prefix_cache_queries, s.prefix_cache_hits), (24, 8));
    }

    #[test]
    fn kv_blocks_limit_admission_and_usage_falls_after_finish() {
        let c = SimConfig {
            kv_cache_size: 8,
            max_model_len: 32,
            ..cfg()
        };
        let mut e: Engine<u64> = Engine::new(&c);
        let t = Instant::now();
        assert_eq!(
            ids(&e.submit(req(1, None, "a b c d", 20), 1, t).started),
            vec![1]
        );
        assert_eq!(e.state().kv_used_blocks, 6);
        // Needs 4 blocks, 2 free: waits although a slot is free.
        assert!(
            e.submit(req(2, None, "e f g h", 12), 2, t)
                .started
                .is_empty()
        );
        assert_eq!(ids(&e.finish(1, t)), vec![2]);
        e.finish(2, t);
        let s = e.state();
        assert_eq!((s.kv_used_blocks, s.kv_usage), (0, 0.0));
        assert_eq!(s.kv_cached_blocks, 2);
    }

    #[test]
    fn load_factor_applies_to_prefill() {
        let c = SimConfig {
            time_factor_under_load: 3.0,
            ..cfg()
        };
        let mut e: Engine<u64> = Engine::new(&c);
        let t = Instant::now();
        let p1 = e.submit(req(1, None, "a", 1), 1, t).started.remove(0).plan;
        let p2 = e.submit(req(2, None, "b", 1), 2, t).started.remove(0).plan;
        assert_eq!((p1.load_factor, p2.load_factor), (1.0, 3.0));
        assert_eq!(p2.prefill, p1.prefill * 3);
    }
}
