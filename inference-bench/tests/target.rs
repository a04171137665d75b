//! Target parsing and the tool's own routers.

use inference_bench::target::TargetSpec;

fn servers(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
        .collect()
}

#[test]
fn parses_every_target_name() {
    assert_eq!(
        TargetSpec::parse("direct-rr").ok(),
        Some(TargetSpec::DirectRr)
    );
    assert_eq!(
        TargetSpec::parse("direct-random").ok(),
        Some(TargetSpec::DirectRandom)
    );
    assert_eq!(
        TargetSpec::parse("direct-least-queue").ok(),
        Some(TargetSpec::DirectLeastQueue)
    );
    let url = TargetSpec::parse("url:http://127.0.0.1:8080/").expect("url");
    assert_eq!(
        url,
        TargetSpec::Url {
            url: "http://127.0.0.1:8080".into(),
            label: None
        }
    );
    assert_eq!(url.name(), "url:http://127.0.0.1:8080");
    assert!(!url.is_direct());
    let labelled = TargetSpec::parse("ours=url:http://127.0.0.1:8081").expect("labelled");
    assert_eq!(labelled.name(), "ours");
    assert!(!labelled.is_direct());
    let built = labelled.build(&servers(2), 1);
    assert_eq!(built.name, "ours");
    assert_eq!(built.urls, vec!["http://127.0.0.1:8081".to_string()]);
    assert!(TargetSpec::parse("ours=url:ftp://x").is_err());
    assert!(TargetSpec::parse("ours=direct-rr").is_err());
    assert!(TargetSpec::parse("url:https://x").is_err());
    assert!(TargetSpec::parse("url:").is_err());
    assert!(TargetSpec::parse("least-queue").is_err());
}

#[test]
fn round_robin_cycles_and_url_uses_its_one_address() {
    let t = TargetSpec::DirectRr.build(&servers(3), 1);
    let picks: Vec<usize> = (0..7).map(|s| t.router.pick(s)).collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    let u = TargetSpec::parse("url:http://127.0.0.1:8080")
        .expect("url")
        .build(&servers(3), 1);
    assert_eq!(u.urls, vec!["http://127.0.0.1:8080".to_string()]);
    assert!((0..5).all(|s| u.router.pick(s) == 0));
}

#[test]
fn random_is_seeded_and_covers_every_server() {
    let a = TargetSpec::DirectRandom.build(&servers(4), 9);
    let b = TargetSpec::DirectRandom.build(&servers(4), 9);
    let pa: Vec<usize> = (0..400).map(|s| a.router.pick(s)).collect();
    let pb: Vec<usize> = (0..400).map(|s| b.router.pick(s)).collect();
    assert_eq!(pa, pb);
    for i in 0..4 {
        let n = pa.iter().filter(|p| **p == i).count();
        assert!((60..=140).contains(&n), "server {i}: {n}");
    }
}

#[test]
fn least_queue_picks_the_least_loaded_and_counts_releases() {
    let t = TargetSpec::DirectLeastQueue.build(&servers(3), 5);
    // Three picks fill each server once.
    let mut first: Vec<usize> = (0..3).map(|s| t.router.pick(s)).collect();
    first.sort_unstable();
    assert_eq!(first, vec![0, 1, 2]);
    // Server 1 finishes: the next pick is server 1.
    t.router.release(1);
    assert_eq!(t.router.pick(3), 1);
    t.router.release(2);
    t.router.release(0);
    let next = t.router.pick(4);
    assert!(next == 0 || next == 2);
}
