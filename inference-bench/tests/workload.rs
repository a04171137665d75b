//! Workload generators and the Poisson schedule: deterministic for a seed, with the documented
//! shapes (means over many samples, shared prefixes, adapter skew).

use inference_bench::arrivals::poisson;
use inference_bench::workload::{
    Api, LoraParams, ShareGptParams, SharedPrefixParams, Workload, shared_prefix_kv_blocks,
};
use std::collections::HashMap;
use vllm_sim::tokenizer;

const MODEL: &str = "base-model";

fn rendered_tokens(spec: &inference_bench::workload::RequestSpec, api: Api) -> usize {
    match api {
        Api::Chat => {
            let mut messages = Vec::new();
            if let Some(p) = &spec.prefix {
                messages.push(("system", &**p));
            }
            messages.push(("user", spec.text.as_str()));
            tokenizer::count(&tokenizer::render_chat(messages))
        }
        Api::Completions => match &spec.prefix {
            Some(p) => tokenizer::count(&format!("{p} {}", spec.text)),
            None => tokenizer::count(&spec.text),
        },
    }
}

#[test]
fn same_seed_same_requests_other_seed_other_requests() {
    for w in [
        Workload::Sharegpt(ShareGptParams::default()),
        Workload::SharedPrefix(SharedPrefixParams {
            groups: 4,
            prefix_len: 50,
            users_per_group: 3,
            question_len: 10,
            output_len: 20,
        }),
        Workload::Lora {
            lengths: ShareGptParams::default(),
            lora: LoraParams::default(),
        },
    ] {
        let a: Vec<_> = w.generator(MODEL, Api::Chat, 8192, 7).take(50).collect();
        let b: Vec<_> = w.generator(MODEL, Api::Chat, 8192, 7).take(50).collect();
        let c: Vec<_> = w.generator(MODEL, Api::Chat, 8192, 8).take(50).collect();
        assert_eq!(a, b, "{}", w.name());
        assert_ne!(a, c, "{}", w.name());
    }
}

#[test]
fn sharegpt_lengths_have_the_documented_means_and_tail() {
    let p = ShareGptParams::default();
    let n = 20_000;
    let specs: Vec<_> = Workload::Sharegpt(p)
        .generator(MODEL, Api::Completions, 1_000_000, 42)
        .take(n)
        .collect();
    let prompt: Vec<usize> = specs.iter().map(|s| s.prompt_tokens).collect();
    let output: Vec<usize> = specs.iter().map(|s| s.max_tokens).collect();
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let (pm, om) = (mean(&prompt), mean(&output));
    assert!((pm / p.prompt_mean - 1.0).abs() < 0.05, "prompt mean {pm}");
    assert!((om / p.output_mean - 1.0).abs() < 0.05, "output mean {om}");
    // Long right tail: the median is well below the mean (e^(-σ²/2) ≈ 0.61 for σ = 1).
    let mut sorted = prompt.clone();
    sorted.sort_unstable();
    let median = sorted[n / 2] as f64;
    assert!(median < 0.75 * pm && median > 0.45 * pm, "median {median}");
    assert!(sorted[n - 1] as f64 > 5.0 * pm, "max {}", sorted[n - 1]);
    // Every prompt is exactly its token count for vllm-sim's tokenizer.
    for s in specs.iter().take(200) {
        assert_eq!(rendered_tokens(s, Api::Completions), s.prompt_tokens);
        assert_eq!(s.model, MODEL);
        assert!(s.prompt_tokens >= 4 && s.max_tokens >= 4);
    }
}

#[test]
fn sharegpt_requests_fit_the_context_length() {
    for api in [Api::Chat, Api::Completions] {
        for s in Workload::Sharegpt(ShareGptParams::default())
            .generator(MODEL, api, 512, 3)
            .take(5_000)
        {
            assert!(
                s.prompt_tokens + s.max_tokens <= 512,
                "{} + {}",
                s.prompt_tokens,
                s.max_tokens
            );
        }
        for s in Workload::Sharegpt(ShareGptParams::default())
            .generator(MODEL, api, 8192, 3)
            .take(100)
        {
            assert_eq!(rendered_tokens(&s, api), s.prompt_tokens);
        }
    }
}

#[test]
fn shared_prefix_groups_share_the_exact_prefix() {
    let p = SharedPrefixParams {
        groups: 6,
        prefix_len: 300,
        users_per_group: 4,
        question_len: 40,
        output_len: 25,
    };
    let cycle = p.groups * p.users_per_group;
    for api in [Api::Chat, Api::Completions] {
        let specs: Vec<_> = Workload::SharedPrefix(p)
            .generator(MODEL, api, 8192, 11)
            .take(2 * cycle)
            .collect();
        let mut prefixes: HashMap<usize, String> = HashMap::new();
        let mut questions: HashMap<usize, Vec<String>> = HashMap::new();
        for s in &specs[..cycle] {
            let g = s.group.expect("group");
            let prefix = s.prefix.as_deref().expect("prefix").to_string();
            assert_eq!(tokenizer::count(&prefix), p.prefix_len);
            assert_eq!(tokenizer::count(&s.text), p.question_len);
            assert_eq!(s.max_tokens, p.output_len);
            assert_eq!(rendered_tokens(s, api), s.prompt_tokens);
            let known = prefixes.entry(g).or_insert_with(|| prefix.clone());
            assert_eq!(*known, prefix, "group {g} prefix differs");
            questions.entry(g).or_default().push(s.text.clone());
        }
        assert_eq!(prefixes.len(), p.groups);
        let distinct: std::collections::HashSet<&String> = prefixes.values().collect();
        assert_eq!(distinct.len(), p.groups, "groups have distinct prefixes");
        for q in questions.values() {
            assert_eq!(q.len(), p.users_per_group, "every user once per cycle");
        }
        // Requests cycle through the shuffled prompts.
        assert_eq!(specs[..cycle], specs[cycle..]);
        // Shuffled: not group after group.
        let groups: Vec<usize> = specs[..cycle]
            .iter()
            .map(|s| s.group.unwrap_or(0))
            .collect();
        let mut sorted = groups.clone();
        sorted.sort_unstable();
        assert_ne!(groups, sorted);
    }
}

#[test]
fn shared_prefix_kv_size_keeps_the_published_ratio() {
    let p = SharedPrefixParams::default();
    let blocks = shared_prefix_kv_blocks(&p, 8, 16, 8192);
    let pool_tokens = (blocks * 16 * 8) as f64;
    let share = (p.groups * p.prefix_len) as f64 / pool_tokens;
    assert!((share - 0.73).abs() < 0.01, "prefix share {share}");
    // Never below one full-length request.
    assert_eq!(
        shared_prefix_kv_blocks(
            &SharedPrefixParams {
                groups: 1,
                prefix_len: 10,
                ..p
            },
            8,
            16,
            8192
        ),
        512
    );
}

#[test]
fn lora_mix_is_skewed_with_the_base_model_share() {
    let lora = LoraParams::default();
    let n = 20_000;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for s in (Workload::Lora {
        lengths: ShareGptParams::default(),
        lora,
    })
    .generator(MODEL, Api::Chat, 8192, 5)
    .take(n)
    {
        *counts.entry(s.model).or_insert(0) += 1;
    }
    let share = |name: &str| *counts.get(name).unwrap_or(&0) as f64 / n as f64;
    assert!(
        (share(MODEL) - lora.base_share).abs() < 0.02,
        "base {}",
        share(MODEL)
    );
    // Zipf(s = 1) over 8: P(lora-0) = 1 / H_8 ≈ 0.368 of the adapter requests.
    let h8: f64 = (1..=8).map(|k| 1.0 / k as f64).sum();
    let expect0 = (1.0 - lora.base_share) / h8;
    assert!(
        (share("lora-0") - expect0).abs() < 0.02,
        "lora-0 {}",
        share("lora-0")
    );
    for k in 0..7 {
        assert!(
            share(&format!("lora-{k}")) > share(&format!("lora-{}", k + 1)),
            "{counts:?}"
        );
    }
    assert_eq!(counts.len(), 9, "{counts:?}");
}

#[test]
fn poisson_schedule_has_the_right_mean_rate() {
    let (rate, duration) = (25.0, 4_000.0);
    let t = poisson(rate, duration, 9);
    assert_eq!(t, poisson(rate, duration, 9));
    assert_ne!(t, poisson(rate, duration, 10));
    let observed = t.len() as f64 / duration;
    assert!((observed / rate - 1.0).abs() < 0.02, "rate {observed}");
    assert!(t.windows(2).all(|w| w[0] < w[1]));
    assert!(t.iter().all(|x| *x > 0.0 && *x < duration));
    // Exponential gaps: standard deviation ≈ mean (coefficient of variation 1).
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    assert!(
        (var.sqrt() / mean - 1.0).abs() < 0.03,
        "cv {}",
        var.sqrt() / mean
    );
    assert!(poisson(0.0, 10.0, 1).is_empty());
}
