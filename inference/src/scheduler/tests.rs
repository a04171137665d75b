use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::metrics::{EndpointMetrics, LoraMetrics};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 8000))
}

fn cand(i: usize, waiting: u32, kv: f64) -> Candidate {
    Candidate::new(
        addr(i),
        Some(Arc::new(EndpointMetrics {
            waiting,
            kv_usage: kv,
            ..Default::default()
        })),
    )
}

fn scores(scorer: &dyn Scorer, req: &SchedRequest<'_>, c: &[Candidate]) -> Vec<f64> {
    let kept: Vec<usize> = (0..c.len()).collect();
    let mut out = vec![f64::NAN; c.len()];
    scorer.score(req, c, &kept, &mut out);
    out
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(1)
}

#[test]
fn queue_scorer_min_max_and_equal() {
    let req = SchedRequest::new("m", "", 0);
    let c = [
        cand(1, 0, 0.0),
        cand(2, 5, 0.0),
        cand(3, 10, 0.0),
        Candidate::new(addr(4), None),
    ];
    assert_eq!(scores(&QueueScorer, &req, &c), vec![1.0, 0.5, 0.0, 0.0]);
    let equal = [cand(1, 3, 0.0), cand(2, 3, 0.0)];
    assert_eq!(scores(&QueueScorer, &req, &equal), vec![1.0, 1.0]);
}

#[test]
fn kv_cache_scorer_is_one_minus_usage() {
    let req = SchedRequest::new("m", "", 0);
    let c = [
        cand(1, 0, 0.25),
        cand(2, 0, 1.0),
        Candidate::new(addr(3), None),
    ];
    assert_eq!(scores(&KvCacheScorer, &req, &c), vec![0.75, 0.0, 0.0]);
}

#[test]
fn lora_affinity_levels() {
    let lora = |active: &[&str], waiting: &[&str], max| {
        let mut c = cand(1, 0, 0.0);
        c.metrics = Some(Arc::new(EndpointMetrics {
            lora: Some(LoraMetrics {
                active: active.iter().map(|s| s.to_string()).collect(),
                waiting: waiting.iter().map(|s| s.to_string()).collect(),
                max,
            }),
            ..Default::default()
        }));
        c
    };
    let c = [
        lora(&["sql"], &[], 1),
        lora(&["tweet"], &[], 2),
        lora(&["tweet"], &["sql"], 2),
        lora(&["tweet"], &["x"], 2),
        cand(5, 0, 0.0),
    ];
    let req = SchedRequest::new("sql", "", 0).with_adapter(Some("sql"));
    assert_eq!(
        scores(&LoraAffinityScorer, &req, &c),
        vec![1.0, 0.8, 0.6, 0.0, 0.0]
    );
    let base = SchedRequest::new("base", "", 0);
    assert_eq!(scores(&LoraAffinityScorer, &base, &c), vec![1.0; 5]);
}

#[test]
fn in_flight_scorer_prefers_idle() {
    let req = SchedRequest::new("m", "", 0);
    let mut c = [cand(1, 0, 0.0), cand(2, 0, 0.0)];
    c[0].in_flight = 4;
    assert_eq!(scores(&InFlightScorer, &req, &c), vec![0.0, 1.0]);
}

#[test]
fn prefix_scorer_scores_then_records_the_pick() {
    let index = Arc::new(PrefixIndex::default());
    let scorer = PrefixCacheScorer::new(index.clone());
    let prompt = "p".repeat(64 * 4);
    let c = [cand(1, 0, 0.0), cand(2, 0, 0.0)];
    let req = SchedRequest::new("m", &prompt, 0);
    assert_eq!(scores(&scorer, &req, &c), vec![0.0, 0.0]);
    scorer.picked(&req, &c[1]);
    assert_eq!(
        scores(&scorer, &SchedRequest::new("m", &prompt, 0), &c),
        vec![0.0, 1.0]
    );
    // Half the blocks shared: a longer prompt with the same first half.
    let longer = format!("{}{}", "p".repeat(64 * 4), "q".repeat(64 * 4));
    assert_eq!(
        scores(&scorer, &SchedRequest::new("m", &longer, 0), &c),
        vec![0.0, 0.5]
    );
    // Another model never matches.
    assert_eq!(
        scores(&scorer, &SchedRequest::new("other", &prompt, 0), &c),
        vec![0.0, 0.0]
    );
    // A prompt shorter than a block scores 0 everywhere.
    assert_eq!(
        scores(&scorer, &SchedRequest::new("m", "short", 0), &c),
        vec![0.0, 0.0]
    );
    assert_eq!(index.len(addr(2)), 4);
}

#[test]
fn max_score_picker_orders_and_breaks_ties_randomly() {
    let scored = [(0, 1.0), (1, 3.0), (2, 2.0), (3, 3.0)];
    let mut first = [0usize; 4];
    let mut r = rng();
    for _ in 0..200 {
        let order = MaxScorePicker.pick(&scored, &mut r);
        assert_eq!(order.len(), 4);
        assert!(order[0] == 1 || order[0] == 3);
        assert_eq!(&order[2..], &[2, 0]);
        first[order[0]] += 1;
    }
    assert!(
        first[1] > 50 && first[3] > 50,
        "ties split at random: {first:?}"
    );
}

#[test]
fn random_and_round_robin_pickers() {
    let scored = [(0, 0.0), (1, 0.0), (2, 0.0)];
    let mut r = rng();
    let mut order = RandomPicker.pick(&scored, &mut r);
    order.sort();
    assert_eq!(order, vec![0, 1, 2]);
    let rr = RoundRobinPicker::default();
    assert_eq!(rr.pick(&scored, &mut r), vec![0, 1, 2]);
    assert_eq!(rr.pick(&scored, &mut r), vec![1, 2, 0]);
    assert_eq!(rr.pick(&scored, &mut r), vec![2, 0, 1]);
    assert_eq!(rr.pick(&scored, &mut r), vec![0, 1, 2]);
    assert!(rr.pick(&[], &mut r).is_empty());
}

#[test]
fn saturation_detector_formula_and_staleness() {
    let d = SaturationDetector::default();
    assert_eq!(d.endpoint_saturation(&cand(1, 0, 0.0)), 0.0);
    assert_eq!(d.endpoint_saturation(&cand(1, 5, 0.4)), 1.0);
    assert_eq!(d.endpoint_saturation(&cand(1, 1, 0.4)), 0.5);
    assert_eq!(d.endpoint_saturation(&Candidate::new(addr(1), None)), 1.0);
    let mut stale = cand(1, 0, 0.0);
    stale.metrics_age = Duration::from_millis(201);
    assert_eq!(d.endpoint_saturation(&stale), 1.0);
    stale.metrics_age = Duration::from_millis(200);
    assert_eq!(d.endpoint_saturation(&stale), 0.0);
    assert_eq!(d.pool_saturation(&[cand(1, 10, 0.0), cand(2, 0, 0.0)]), 1.0);
    assert!(d.is_saturated(&[cand(1, 10, 0.0), cand(2, 0, 0.0)]));
    assert!(!d.is_saturated(&[cand(1, 9, 0.0), cand(2, 0, 0.0)]));
    assert_eq!(d.pool_saturation(&[]), 1.0);
}

#[test]
fn utilization_filter_drops_saturated_but_never_all() {
    let f = UtilizationFilter::default();
    let req = SchedRequest::new("m", "", 0);
    let c = [cand(1, 8, 0.0), cand(2, 0, 0.9), cand(3, 1, 0.1)];
    let mut kept = vec![0, 1, 2];
    f.filter(&req, &c, &mut kept);
    assert_eq!(kept, vec![2]);
    let busy = [cand(1, 6, 0.0), cand(2, 0, 0.9)];
    let mut kept = vec![0, 1];
    f.filter(&req, &busy, &mut kept);
    assert_eq!(kept, vec![0, 1]);
    let roomy = UtilizationFilter {
        headroom: 0.5,
        ..Default::default()
    };
    let mut kept = vec![0, 1, 2];
    roomy.filter(&req, &c, &mut kept);
    assert_eq!(kept, vec![1, 2]);
}

#[test]
fn admission_rejects_only_sheddable_when_saturated() {
    assert_eq!(admit(-1, 1.0), Err(DroppedReason::Saturated));
    assert_eq!(admit(-1, 0.99), Ok(()));
    assert_eq!(admit(0, 5.0), Ok(()));
    let s = Scheduler::reference_default();
    let saturated = [cand(1, 10, 0.9), cand(2, 10, 0.9)];
    let mut r = rng();
    assert_eq!(
        s.schedule(&SchedRequest::new("m", "", -5), &saturated, &mut r),
        Err(DroppedReason::Saturated)
    );
    assert_eq!(
        s.schedule(&SchedRequest::new("m", "", 0), &saturated, &mut r)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.schedule(&SchedRequest::new("m", "", 0), &[], &mut r),
        Err(DroppedReason::NoEndpoints)
    );
}

struct DropAll;
impl Filter for DropAll {
    fn name(&self) -> &'static str {
        "drop-all"
    }
    fn filter(&self, _: &SchedRequest<'_>, _: &[Candidate], kept: &mut Vec<usize>) {
        kept.clear();
    }
}

struct Constant(f64);
impl Scorer for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }
    fn score(&self, _: &SchedRequest<'_>, _: &[Candidate], _: &[usize], out: &mut [f64]) {
        out.fill(self.0);
    }
}

#[test]
fn no_candidate_after_filters_is_saturated() {
    let mut profile = Profile::reference_default();
    profile.filters.push(Arc::new(DropAll));
    let c = [cand(1, 0, 0.0)];
    assert_eq!(
        profile.pick(&SchedRequest::new("m", "", 0), &c, &mut rng()),
        Err(DroppedReason::Saturated)
    );
}

#[test]
fn scores_are_clamped_and_weighted() {
    // A scorer returning 7.0 counts as 1.0; with weight 1 it cannot beat a real score of 1.0
    // under weight 2.
    let profile = Profile {
        filters: vec![],
        scorers: vec![
            (Arc::new(Constant(7.0)), 1.0),
            (Arc::new(KvCacheScorer), 2.0),
        ],
        picker: Arc::new(MaxScorePicker),
    };
    let c = [cand(1, 0, 1.0), cand(2, 0, 0.0)];
    let order = profile
        .pick(&SchedRequest::new("m", "", 0), &c, &mut rng())
        .unwrap();
    assert_eq!(order, vec![1, 0]);
    let nan = Profile {
        filters: vec![],
        scorers: vec![
            (Arc::new(Constant(f64::NAN)), 5.0),
            (Arc::new(KvCacheScorer), 1.0),
        ],
        picker: Arc::new(MaxScorePicker),
    };
    assert_eq!(
        nan.pick(&SchedRequest::new("m", "", 0), &c, &mut rng())
            .unwrap(),
        vec![1, 0]
    );
}

#[test]
fn reference_default_prefers_cached_prefix_then_load() {
    let profile = Profile::reference_default();
    assert_eq!(
        format!("{profile:?}"),
        "Profile { filters: [], scorers: [(\"queue-scorer\", 2.0), (\"kv-cache-utilization-scorer\", 2.0), (\"prefix-cache-scorer\", 3.0)], picker: \"max-score-picker\" }"
    );
    let prompt = "You are a helpful assistant. ".repeat(40);
    let c: Vec<Candidate> = (1..=4).map(|i| cand(i, 2, 0.3)).collect();
    let mut r = rng();
    let first = profile
        .pick(&SchedRequest::new("m", &prompt, 0), &c, &mut r)
        .unwrap();
    assert_eq!(first.len(), 4);
    // The same prompt goes where its prefix was recorded, every time.
    for _ in 0..10 {
        let again = profile
            .pick(&SchedRequest::new("m", &prompt, 0), &c, &mut r)
            .unwrap();
        assert_eq!(again[0], first[0]);
    }
    // Unless that endpoint is much busier: queue 2 + kv 2 outweigh prefix 3.
    let mut busy = c.clone();
    busy[first[0]] = cand(first[0] + 1, 20, 0.95);
    let moved = profile
        .pick(&SchedRequest::new("m", &prompt, 0), &busy, &mut r)
        .unwrap();
    assert_ne!(moved[0], first[0]);
    assert_eq!(
        *moved.last().unwrap(),
        first[0],
        "the busy endpoint is the last fallback"
    );
}

fn loaded(i: usize, in_flight: u32, running: u32, waiting: u32) -> Candidate {
    let mut c = Candidate::new(
        addr(i),
        Some(Arc::new(EndpointMetrics {
            running,
            waiting,
            ..Default::default()
        })),
    );
    c.in_flight = in_flight;
    c
}

#[test]
fn load_scorer_takes_the_larger_of_live_and_scraped_load() {
    let req = SchedRequest::new("m", "", 0);
    // Live in-flight counts move with every pick; scraped ones also see other clients.
    let c = [loaded(1, 4, 0, 0), loaded(2, 0, 2, 0), loaded(3, 1, 4, 2)];
    assert_eq!(scores(&LoadScorer, &req, &c), vec![0.5, 1.0, 0.0]);
    // The queue scorer sees none of the gateway's own load.
    assert_eq!(scores(&QueueScorer, &req, &c)[..2], [1.0, 1.0]);
}

#[test]
fn prefix_affinity_spills_over_from_a_queueing_endpoint() {
    let index = Arc::new(PrefixIndex::default());
    let scorer = PrefixAffinityScorer::new(index, 4);
    let prompt = "a shared system prompt that is long enough to fill several blocks ".repeat(8);
    let req = SchedRequest::new("m", &prompt, 0);
    scorer.picked(&req, &loaded(1, 0, 0, 0));
    // Equal load: the endpoint holding the prefix scores 1, the others 0.
    let idle = [loaded(1, 0, 0, 0), loaded(2, 0, 0, 0)];
    assert_eq!(scores(&scorer, &req, &idle), vec![1.0, 0.0]);
    // Far more requests in flight, but running, not queued: the prefix still counts.
    let busier = [loaded(1, 14, 14, 0), loaded(2, 0, 0, 0)];
    assert_eq!(scores(&scorer, &req, &busier), vec![1.0, 0.0]);
    // Three more waiting than the least queued endpoint: still below the spill-over.
    let queued = [loaded(1, 20, 16, 4), loaded(2, 17, 16, 1)];
    assert_eq!(scores(&scorer, &req, &queued), vec![1.0, 0.0]);
    // Four more waiting: the cached prefix no longer counts.
    let hot = [loaded(1, 21, 16, 5), loaded(2, 17, 16, 1)];
    assert_eq!(scores(&scorer, &req, &hot), vec![0.0, 0.0]);
}

#[test]
fn load_aware_profile_keeps_affinity_until_the_holder_queues() {
    let profile = Profile::load_aware();
    let prompt = "the same long few-shot prefix for every user of this group ".repeat(8);
    let req = SchedRequest::new("m", &prompt, 0);
    let first = profile
        .pick(&req, &[loaded(1, 0, 0, 0), loaded(2, 0, 0, 0)], &mut rng())
        .unwrap()[0];
    let holder = first + 1;
    let other = 3 - holder;
    // Busier than the other endpoint, nothing queued: the prefix wins.
    let c = [loaded(holder, 10, 10, 0), loaded(other, 0, 0, 0)];
    assert_eq!(profile.pick(&req, &c, &mut rng()).unwrap()[0], 0);
    // Queueing: the request spills over to the idle endpoint.
    let c = [loaded(holder, 22, 16, 6), loaded(other, 0, 0, 0)];
    assert_eq!(profile.pick(&req, &c, &mut rng()).unwrap()[0], 1);
}

#[test]
fn load_aware_profile_sends_an_adapter_where_it_runs_or_can_load() {
    let profile = Profile::load_aware();
    let server = |i: usize, in_flight: u32, adapters: &[&str]| {
        let mut c = loaded(i, in_flight, in_flight, 0);
        let mut m = (**c.metrics.as_ref().unwrap()).clone();
        m.base_model = Some("llama".into());
        m.lora = Some(LoraMetrics {
            active: adapters.iter().map(|s| s.to_string()).collect(),
            waiting: Vec::new(),
            max: 2,
        });
        c.metrics = Some(Arc::new(m));
        c
    };
    // 1 runs `sql` and is busier; 2 is idle but both its adapter slots are taken.
    let c = [server(1, 3, &["sql", "tweet"]), server(2, 0, &["x", "y"])];
    let adapter = SchedRequest::new("sql", "", 0).with_adapter(lora_adapter("sql", &c));
    assert_eq!(adapter.adapter, Some("sql"));
    assert_eq!(profile.pick(&adapter, &c, &mut rng()).unwrap()[0], 0);
    // The base model needs no slot: the idle server.
    let base = SchedRequest::new("llama", "", 0).with_adapter(lora_adapter("llama", &c));
    assert_eq!(base.adapter, None);
    assert_eq!(profile.pick(&base, &c, &mut rng()).unwrap()[0], 1);
}

#[test]
fn profile_kinds_parse_and_build() {
    for kind in [ProfileKind::Reference, ProfileKind::LoadAware] {
        assert_eq!(kind.as_str().parse::<ProfileKind>(), Ok(kind));
        assert!(!kind.scheduler().profile.scorers.is_empty());
    }
    assert!("fastest".parse::<ProfileKind>().is_err());
    assert_eq!(ProfileKind::default(), ProfileKind::Reference);
}

#[test]
fn lora_adapter_is_told_from_the_base_model() {
    let server = |base: Option<&str>, active: &[&str], waiting: &[&str]| {
        let mut c = cand(1, 0, 0.0);
        c.metrics = Some(Arc::new(EndpointMetrics {
            lora: Some(LoraMetrics {
                active: active.iter().map(|s| s.to_string()).collect(),
                waiting: waiting.iter().map(|s| s.to_string()).collect(),
                max: 2,
            }),
            base_model: base.map(String::from),
            ..Default::default()
        }));
        c
    };
    let pool = [
        server(Some("llama"), &["sql"], &[]),
        server(Some("llama"), &[], &["tweet"]),
    ];
    // Named by a server's running or waiting adapters.
    assert_eq!(lora_adapter("sql", &pool), Some("sql"));
    assert_eq!(lora_adapter("tweet", &pool), Some("tweet"));
    // Loaded nowhere yet, but not the base model either.
    assert_eq!(lora_adapter("food", &pool), Some("food"));
    // The base model.
    assert_eq!(lora_adapter("llama", &pool), None);
    assert_eq!(lora_adapter("", &pool), None);
    // Without a base model in the metrics, only a listed adapter is known to be one.
    let unnamed = [server(None, &["sql"], &[])];
    assert_eq!(lora_adapter("sql", &unnamed), Some("sql"));
    assert_eq!(lora_adapter("food", &unnamed), None);
    // Servers without LoRA state (no metrics, or an engine without the series): no adapter.
    assert_eq!(
        lora_adapter("sql", &[cand(1, 0, 0.0), Candidate::new(addr(2), None)]),
        None
    );
}
