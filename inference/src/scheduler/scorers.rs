//! The scorers: queue depth, KV-cache utilisation, LoRA affinity, prefix cache, in-flight.

use std::sync::Arc;

use super::{Candidate, PrefixIndex, SchedRequest, Scorer};

/// Min-max normalisation, lower is better: `(max - v) / (max - min)`, 1.0 for every candidate
/// when all values are equal; candidates without a value (`None`) score 0.
fn lower_is_better(values: impl Iterator<Item = Option<f64>> + Clone, out: &mut [f64]) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.clone().flatten() {
        min = min.min(v);
        max = max.max(v);
    }
    for (o, v) in out.iter_mut().zip(values) {
        *o = match v {
            None => 0.0,
            Some(_) if max <= min => 1.0,
            Some(v) => (max - v) / (max - min),
        };
    }
}

/// `queue-scorer`: `(maxQ - q) / (maxQ - minQ)` over the candidates, q = the server's waiting
/// queue; 1.0 for all when equal; 0 for a candidate without metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueScorer;

impl Scorer for QueueScorer {
    fn name(&self) -> &'static str {
        "queue-scorer"
    }
    fn score(&self, _: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        lower_is_better(
            kept.iter()
                .map(|&i| c[i].metrics.as_ref().map(|m| f64::from(m.waiting))),
            out,
        );
    }
}

/// `kv-cache-utilization-scorer`: `1 - kv_usage`; 0 for a candidate without metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvCacheScorer;

impl Scorer for KvCacheScorer {
    fn name(&self) -> &'static str {
        "kv-cache-utilization-scorer"
    }
    fn score(&self, _: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(kept) {
            *o = c[i].metrics.as_ref().map_or(0.0, |m| 1.0 - m.kv_usage);
        }
    }
}

/// `lora-affinity-scorer`: for the request's adapter, 1.0 when it is active on the server; else
/// 0.8 when the server has a free adapter slot (active + waiting < max); else 0.6 when the
/// adapter is waiting there; else 0. A request without an adapter gives every candidate 1.0
/// (the scorer is neutral).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoraAffinityScorer;

impl Scorer for LoraAffinityScorer {
    fn name(&self) -> &'static str {
        "lora-affinity-scorer"
    }
    fn score(&self, req: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        let Some(adapter) = req.adapter else {
            out.fill(1.0);
            return;
        };
        for (o, &i) in out.iter_mut().zip(kept) {
            *o = match c[i].metrics.as_ref().and_then(|m| m.lora.as_ref()) {
                None => 0.0,
                Some(l) if l.active.iter().any(|a| a == adapter) => 1.0,
                Some(l) if (l.active.len() + l.waiting.len()) < l.max as usize => 0.8,
                Some(l) if l.waiting.iter().any(|a| a == adapter) => 0.6,
                Some(_) => 0.0,
            };
        }
    }
}

/// `prefix-cache-scorer`: matched leading blocks / prompt blocks, from the pool's
/// [`PrefixIndex`]; 0 for every candidate when the prompt is shorter than one block. After a
/// pick it records the prompt's blocks under the chosen endpoint.
#[derive(Debug)]
pub struct PrefixCacheScorer {
    index: Arc<PrefixIndex>,
    config: super::PrefixConfig,
}

impl PrefixCacheScorer {
    /// A scorer over `index` (shared with nothing else, or with another profile of the pool).
    pub fn new(index: Arc<PrefixIndex>) -> Self {
        let config = index.config();
        PrefixCacheScorer { index, config }
    }

    /// The index.
    pub fn index(&self) -> &Arc<PrefixIndex> {
        &self.index
    }
}

impl Scorer for PrefixCacheScorer {
    fn name(&self) -> &'static str {
        "prefix-cache-scorer"
    }
    fn score(&self, req: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        let hashes = req.prefix_hashes(&self.config);
        if hashes.is_empty() {
            out.fill(0.0);
            return;
        }
        let addrs: Vec<_> = kept.iter().map(|&i| c[i].addr).collect();
        let mut matched = vec![0u32; kept.len()];
        self.index.match_lengths(hashes, &addrs, &mut matched);
        let total = hashes.len() as f64;
        for (o, m) in out.iter_mut().zip(matched) {
            *o = f64::from(m) / total;
        }
    }
    fn picked(&self, req: &SchedRequest<'_>, chosen: &Candidate) {
        self.index
            .record(chosen.addr, req.prefix_hashes(&self.config));
    }
}

/// `in-flight-scorer` (ours, not in the reference default): like the queue scorer, over the
/// requests the gateway itself has in flight to each endpoint, which it knows between scrapes.
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlightScorer;

impl Scorer for InFlightScorer {
    fn name(&self) -> &'static str {
        "in-flight-scorer"
    }
    fn score(&self, _: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        lower_is_better(kept.iter().map(|&i| Some(f64::from(c[i].in_flight))), out);
    }
}

/// An endpoint's load as the gateway can best tell it now: the larger of the requests it has in
/// flight there itself (exact, live) and the server's scraped running + waiting count (which
/// also sees other clients, but is up to one scrape interval old).
pub(crate) fn live_load(c: &Candidate) -> u32 {
    let scraped = c.metrics.as_ref().map_or(0, |m| m.running + m.waiting);
    c.in_flight.max(scraped)
}

/// `load-scorer` (ours): like the queue scorer, lower is better, over [`live_load`] instead of
/// the scraped waiting queue alone. Between two scrapes the scraped numbers do not move, so a
/// scorer over them sends every request of that interval to the same endpoint; the gateway's own
/// in-flight count moves with every pick. It also counts running requests: an endpoint with a
/// free slot starts a request at once, one whose slots are full queues it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadScorer;

impl Scorer for LoadScorer {
    fn name(&self) -> &'static str {
        "load-scorer"
    }
    fn score(&self, _: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        lower_is_better(kept.iter().map(|&i| Some(f64::from(live_load(&c[i])))), out);
    }
}

/// `prefix-affinity-scorer` (ours): the prefix-cache score of endpoints that are not queueing
/// much more than the least queued candidate, 0 for the others, so a hot prefix spills over to
/// other endpoints instead of queueing behind itself. An endpoint keeps its prefix score while
/// its scraped waiting queue is less than `spill` requests longer than the shortest among the
/// candidates (an endpoint without metrics counts as not queueing). A busy endpoint that still
/// has free running slots keeps its prefix: starting a request there costs little, prefilling
/// the prefix elsewhere costs the whole prefill. Records the chosen endpoint's blocks like
/// [`PrefixCacheScorer`].
#[derive(Debug)]
pub struct PrefixAffinityScorer {
    prefix: PrefixCacheScorer,
    spill: u32,
}

impl PrefixAffinityScorer {
    /// The default `spill`: 4 waiting requests more than the least queued candidate.
    pub const DEFAULT_SPILL: u32 = 4;

    /// A scorer over `index`, spilling over at `spill` (at least 1) waiting requests above the
    /// least queued candidate.
    pub fn new(index: Arc<PrefixIndex>, spill: u32) -> Self {
        PrefixAffinityScorer {
            prefix: PrefixCacheScorer::new(index),
            spill: spill.max(1),
        }
    }
}

impl Scorer for PrefixAffinityScorer {
    fn name(&self) -> &'static str {
        "prefix-affinity-scorer"
    }
    fn score(&self, req: &SchedRequest<'_>, c: &[Candidate], kept: &[usize], out: &mut [f64]) {
        self.prefix.score(req, c, kept, out);
        let waiting = |i: usize| c[i].metrics.as_ref().map_or(0, |m| m.waiting);
        let least = kept.iter().map(|&i| waiting(i)).min().unwrap_or(0);
        for (o, &i) in out.iter_mut().zip(kept) {
            if waiting(i) - least >= self.spill {
                *o = 0.0;
            }
        }
    }
    fn picked(&self, req: &SchedRequest<'_>, chosen: &Candidate) {
        self.prefix.picked(req, chosen);
    }
}
