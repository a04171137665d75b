//! The endpoint picker: pluggable filters, weighted scorers and a picker, run per request.
//!
//! A [`Profile`] runs its [`Filter`]s in order (each keeps a subset of the candidates), gives
//! every remaining candidate the weighted sum of its [`Scorer`]s' scores (each clamped to
//! 0..=1), and lets its [`Picker`] order them: the first is the endpoint to use, the rest are
//! the fallbacks for retries, in order. After a pick every scorer hears which endpoint was
//! chosen ([`Scorer::picked`]; the prefix scorer records the prompt's blocks there).
//!
//! [`Scheduler::schedule`] adds the reference admission rules around a profile: no candidates
//! at all is `rejected-no-endpoints` (503); a sheddable request (priority < 0) while the pool is
//! saturated ([`SaturationDetector`]) is `rejected-saturated` (429); no candidate left after the
//! filters is `rejected-saturated` (429).
//!
//! [`Profile::reference_default`] is the reference endpoint picker's default: queue scorer 2,
//! KV-cache utilisation scorer 2, prefix-cache scorer 3, max-score picker, no filter.
//! [`Profile::load_aware`] is this crate's own: live load (the gateway's in-flight requests,
//! which move with every pick, not only with every scrape) and prefix affinity that spills over
//! from a busy endpoint. [`ProfileKind`] names the built-in profiles.

pub mod prefix;
mod saturation;
mod scorers;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::RngCore;
use rand::seq::SliceRandom;

pub use prefix::{PrefixConfig, PrefixIndex};
pub use saturation::{SaturationDetector, UtilizationFilter};
pub use scorers::{
    InFlightScorer, KvCacheScorer, LoadScorer, LoraAffinityScorer, PrefixAffinityScorer,
    PrefixCacheScorer, QueueScorer,
};

use crate::metrics::EndpointMetrics;
use crate::request::DroppedReason;

/// One endpoint the request may go to, as the data plane sees it now.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// `podIP:targetPort`.
    pub addr: SocketAddr,
    /// The latest scraped metrics; `None` before the first successful scrape.
    pub metrics: Option<Arc<EndpointMetrics>>,
    /// How old `metrics` are (`Duration::MAX` when there are none).
    pub metrics_age: Duration,
    /// Requests the gateway itself has in flight to this endpoint (known between scrapes).
    pub in_flight: u32,
}

impl Candidate {
    /// A candidate with fresh `metrics` and nothing in flight (tests and simple callers).
    pub fn new(addr: SocketAddr, metrics: Option<Arc<EndpointMetrics>>) -> Self {
        let metrics_age = if metrics.is_some() {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        Candidate {
            addr,
            metrics,
            metrics_age,
            in_flight: 0,
        }
    }
}

/// What the scheduler knows about a request.
#[derive(Debug)]
pub struct SchedRequest<'a> {
    /// The model name sent upstream (after any rewrite): seeds the prefix hashes.
    pub model: &'a str,
    /// The LoRA adapter the request targets, when the model is one; `None` for a base model.
    pub adapter: Option<&'a str>,
    /// The prompt text ([`crate::request::LlmRequest::prompt`]).
    pub prompt: &'a str,
    /// The priority of the request's objective (unset = 0; negative = sheddable).
    pub priority: i32,
    prefix_hashes: OnceLock<Vec<u64>>,
}

impl<'a> SchedRequest<'a> {
    /// A request for `model` with `prompt` and `priority`, no adapter.
    pub fn new(model: &'a str, prompt: &'a str, priority: i32) -> Self {
        SchedRequest {
            model,
            adapter: None,
            prompt,
            priority,
            prefix_hashes: OnceLock::new(),
        }
    }

    /// Sets the LoRA adapter.
    pub fn with_adapter(mut self, adapter: Option<&'a str>) -> Self {
        self.adapter = adapter;
        self
    }

    /// The prompt's prefix block hashes under `config`, computed once per request (the first
    /// caller's config wins; one profile uses one prefix config).
    pub fn prefix_hashes(&self, config: &PrefixConfig) -> &[u64] {
        self.prefix_hashes.get_or_init(|| {
            let mut out = Vec::new();
            config.hash_prompt(self.model, self.prompt, &mut out);
            out
        })
    }
}

/// The LoRA adapter `model` names for the scheduler, or `None` when it is a base model (or
/// the candidates' metrics cannot tell). Called once per pick, before the profile runs.
///
/// A model is an adapter when a candidate's `vllm:lora_requests_info` lists it as running or
/// waiting, or, for an adapter loaded nowhere yet, when the candidates report LoRA state and a
/// base model ([`EndpointMetrics::base_model`](crate::metrics::EndpointMetrics::base_model))
/// and none of them serves `model` as its base. A base model served under an extra alias
/// (vLLM's second `--served-model-name`) reads as an adapter by the second rule; the LoRA
/// scorer then only prefers servers with a free adapter slot.
pub fn lora_adapter<'a>(model: &'a str, candidates: &[Candidate]) -> Option<&'a str> {
    if model.is_empty() {
        return None;
    }
    let mut bases_known = false;
    for m in candidates.iter().filter_map(|c| c.metrics.as_deref()) {
        if let Some(lora) = &m.lora {
            if lora.active.iter().chain(&lora.waiting).any(|a| a == model) {
                return Some(model);
            }
            match m.base_model.as_deref() {
                Some(base) if base == model => return None,
                Some(_) => bases_known = true,
                None => {}
            }
        } else if m.base_model.as_deref() == Some(model) {
            return None;
        }
    }
    bases_known.then_some(model)
}

/// Keeps a subset of the candidates.
pub trait Filter: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Removes from `kept` (indices into `candidates`) the candidates to drop.
    fn filter(&self, req: &SchedRequest<'_>, candidates: &[Candidate], kept: &mut Vec<usize>);
}

/// Scores candidates in 0..=1 (higher is better).
pub trait Scorer: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Writes the score of `candidates[kept[i]]` to `out[i]`. Values outside 0..=1 are clamped
    /// by the profile.
    fn score(
        &self,
        req: &SchedRequest<'_>,
        candidates: &[Candidate],
        kept: &[usize],
        out: &mut [f64],
    );
    /// Called once the primary endpoint is chosen. Default: nothing.
    fn picked(&self, _req: &SchedRequest<'_>, _chosen: &Candidate) {}
}

/// Orders scored candidates.
pub trait Picker: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Returns the candidate indices of `scored` (`(index, total score)`) in the order to try
    /// them: first the primary, then the fallbacks. It returns each index at most once.
    fn pick(&self, scored: &[(usize, f64)], rng: &mut dyn RngCore) -> Vec<usize>;
}

/// Highest total score first; ties broken at random (shuffle, then a stable sort).
#[derive(Clone, Copy, Debug, Default)]
pub struct MaxScorePicker;

impl Picker for MaxScorePicker {
    fn name(&self) -> &'static str {
        "max-score-picker"
    }
    fn pick(&self, scored: &[(usize, f64)], rng: &mut dyn RngCore) -> Vec<usize> {
        let mut v = scored.to_vec();
        v.shuffle(rng);
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.into_iter().map(|(i, _)| i).collect()
    }
}

/// A uniformly random order, scores ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomPicker;

impl Picker for RandomPicker {
    fn name(&self) -> &'static str {
        "random-picker"
    }
    fn pick(&self, scored: &[(usize, f64)], rng: &mut dyn RngCore) -> Vec<usize> {
        let mut v: Vec<usize> = scored.iter().map(|(i, _)| *i).collect();
        v.shuffle(rng);
        v
    }
}

/// Rotates through the candidates: each pick starts one further along (scores ignored).
#[derive(Debug, Default)]
pub struct RoundRobinPicker {
    next: std::sync::atomic::AtomicUsize,
}

impl Picker for RoundRobinPicker {
    fn name(&self) -> &'static str {
        "round-robin-picker"
    }
    fn pick(&self, scored: &[(usize, f64)], _rng: &mut dyn RngCore) -> Vec<usize> {
        if scored.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % scored.len();
        scored[start..]
            .iter()
            .chain(&scored[..start])
            .map(|(i, _)| *i)
            .collect()
    }
}

/// Filters, weighted scorers and a picker.
#[derive(Clone)]
pub struct Profile {
    /// Run in order.
    pub filters: Vec<Arc<dyn Filter>>,
    /// Each with its weight (the reference gives 1 to a scorer without one).
    pub scorers: Vec<(Arc<dyn Scorer>, f64)>,
    /// Orders the scored candidates.
    pub picker: Arc<dyn Picker>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field(
                "filters",
                &self.filters.iter().map(|x| x.name()).collect::<Vec<_>>(),
            )
            .field(
                "scorers",
                &self
                    .scorers
                    .iter()
                    .map(|(s, w)| (s.name(), *w))
                    .collect::<Vec<_>>(),
            )
            .field("picker", &self.picker.name())
            .finish()
    }
}

impl Profile {
    /// The reference default: [`QueueScorer`] ×2, [`KvCacheScorer`] ×2,
    /// [`PrefixCacheScorer`] ×3 (a new [`PrefixIndex`] with default settings; one profile per
    /// pool), [`MaxScorePicker`], no filter.
    pub fn reference_default() -> Profile {
        Profile::reference_default_with(Arc::new(PrefixIndex::default()))
    }

    /// [`Self::reference_default`] over an existing prefix index.
    pub fn reference_default_with(index: Arc<PrefixIndex>) -> Profile {
        Profile {
            filters: Vec::new(),
            scorers: vec![
                (Arc::new(QueueScorer), 2.0),
                (Arc::new(KvCacheScorer), 2.0),
                (Arc::new(PrefixCacheScorer::new(index)), 3.0),
            ],
            picker: Arc::new(MaxScorePicker),
        }
    }

    /// This crate's profile (see docs/benchmarks/inference.md for how it compares): prefix
    /// affinity first, then the least live load. [`PrefixAffinityScorer`] ×4 (spill-over at
    /// [`PrefixAffinityScorer::DEFAULT_SPILL`] waiting requests above the least queued
    /// candidate),
    /// [`LoadScorer`] ×1, [`KvCacheScorer`] ×0.5, [`LoraAffinityScorer`] ×1 (neutral for
    /// base-model requests), [`MaxScorePicker`], no filter. The weights
    /// make the order nearly lexicographic: a cached prefix (which saves its whole prefill)
    /// outweighs the whole load range unless its holder queues `spill` requests more than
    /// another endpoint; without a cached prefix the least loaded endpoint wins (join the
    /// shortest queue, with the gateway's own in-flight counts, which move with every pick).
    pub fn load_aware() -> Profile {
        Profile::load_aware_with(Arc::new(PrefixIndex::default()))
    }

    /// [`Self::load_aware`] over an existing prefix index.
    pub fn load_aware_with(index: Arc<PrefixIndex>) -> Profile {
        Profile {
            filters: Vec::new(),
            scorers: vec![
                (
                    Arc::new(PrefixAffinityScorer::new(
                        index,
                        PrefixAffinityScorer::DEFAULT_SPILL,
                    )),
                    4.0,
                ),
                (Arc::new(LoadScorer), 1.0),
                (Arc::new(KvCacheScorer), 0.5),
                (Arc::new(LoraAffinityScorer), 1.0),
            ],
            picker: Arc::new(MaxScorePicker),
        }
    }

    /// Filters, scores and orders `candidates`, then tells the scorers the primary. Returns the
    /// candidate indices in order (primary first), or `rejected-saturated` when the filters left
    /// nothing (or there was nothing).
    pub fn pick(
        &self,
        req: &SchedRequest<'_>,
        candidates: &[Candidate],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<usize>, DroppedReason> {
        let mut kept: Vec<usize> = (0..candidates.len()).collect();
        for f in &self.filters {
            f.filter(req, candidates, &mut kept);
            if kept.is_empty() {
                tracing::debug!(filter = f.name(), "no candidate left");
                return Err(DroppedReason::Saturated);
            }
        }
        if kept.is_empty() {
            return Err(DroppedReason::Saturated);
        }
        let mut totals = vec![0.0; kept.len()];
        let mut scores = vec![0.0; kept.len()];
        for (scorer, weight) in &self.scorers {
            scores.fill(0.0);
            scorer.score(req, candidates, &kept, &mut scores);
            for (t, s) in totals.iter_mut().zip(&scores) {
                let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
                *t += s * weight;
            }
        }
        let scored: Vec<(usize, f64)> = kept.into_iter().zip(totals).collect();
        let order = self.picker.pick(&scored, rng);
        let Some(&primary) = order.first() else {
            return Err(DroppedReason::Saturated);
        };
        for (scorer, _) in &self.scorers {
            scorer.picked(req, &candidates[primary]);
        }
        Ok(order)
    }
}

/// The built-in profiles, by name (`reference` or `load-aware`), for configuration surfaces
/// such as a command-line flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// [`Profile::reference_default`] (the default).
    #[default]
    Reference,
    /// [`Profile::load_aware`].
    LoadAware,
}

impl ProfileKind {
    /// The name: `reference` or `load-aware`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Reference => "reference",
            ProfileKind::LoadAware => "load-aware",
        }
    }

    /// A fresh scheduler with this profile (a new prefix index) and the default saturation
    /// detector.
    pub fn scheduler(self) -> Scheduler {
        let profile = match self {
            ProfileKind::Reference => Profile::reference_default(),
            ProfileKind::LoadAware => Profile::load_aware(),
        };
        Scheduler {
            profile,
            detector: SaturationDetector::default(),
        }
    }
}

impl std::fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProfileKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(ProfileKind::Reference),
            "load-aware" => Ok(ProfileKind::LoadAware),
            other => Err(format!(
                "unknown scheduler profile {other:?} (known: reference, load-aware)"
            )),
        }
    }
}

/// A profile plus the reference admission rules.
#[derive(Clone, Debug)]
pub struct Scheduler {
    /// The profile run for admitted requests.
    pub profile: Profile,
    /// Decides pool saturation for sheddable requests.
    pub detector: SaturationDetector,
}

impl Scheduler {
    /// The reference default profile with the default saturation detector.
    pub fn reference_default() -> Scheduler {
        Scheduler {
            profile: Profile::reference_default(),
            detector: SaturationDetector::default(),
        }
    }

    /// Admits and picks: `rejected-no-endpoints` without candidates, `rejected-saturated` for a
    /// sheddable request while the pool is saturated or when no candidate passes the filters;
    /// otherwise the ordered candidate indices (see [`Profile::pick`]).
    pub fn schedule(
        &self,
        req: &SchedRequest<'_>,
        candidates: &[Candidate],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<usize>, DroppedReason> {
        if candidates.is_empty() {
            return Err(DroppedReason::NoEndpoints);
        }
        admit(req.priority, self.detector.pool_saturation(candidates))?;
        self.profile.pick(req, candidates, rng)
    }
}

/// The legacy admission rule: a sheddable request (priority < 0) is rejected with
/// `rejected-saturated` when the pool saturation is at least 1.0; everything else passes.
pub fn admit(priority: i32, pool_saturation: f64) -> Result<(), DroppedReason> {
    if priority < 0 && pool_saturation >= 1.0 {
        Err(DroppedReason::Saturated)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
