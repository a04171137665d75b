//! Where requests go: the tool's own balancing over the simulated servers (`direct-*`) or a
//! gateway in front of them (`url:`).
//!
//! A target is a list of base URLs and a [`Router`] choosing one per request. Adding a strategy
//! is one `Router` implementation, a `TargetSpec` variant, and one arm each in
//! [`TargetSpec::parse`], [`TargetSpec::name`] and [`TargetSpec::build`].

use std::sync::atomic::{AtomicUsize, Ordering};

/// Chooses a base URL (by index) for each request. `pick` is called in arrival order from one
/// task; `release` when the request ends (answered, failed or timed out).
pub trait Router: Send + Sync {
    /// The index of the base URL for request number `seq` (0, 1, 2, ... in arrival order).
    fn pick(&self, seq: u64) -> usize;
    /// The request sent to `index` has ended. Default: nothing.
    fn release(&self, _index: usize) {}
}

/// SplitMix64: a fixed, seedable hash used for the tool's random choices (no shared RNG state,
/// so no lock).
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Round-robin over `n` URLs, starting at 0.
#[derive(Debug)]
pub struct RoundRobin {
    n: usize,
    next: AtomicUsize,
}

impl Router for RoundRobin {
    fn pick(&self, _seq: u64) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.n
    }
}

/// Uniformly random over `n` URLs (seeded: the same seed gives the same choices).
#[derive(Debug)]
pub struct Random {
    n: usize,
    seed: u64,
}

impl Router for Random {
    fn pick(&self, seq: u64) -> usize {
        (mix(self.seed ^ mix(seq)) % self.n as u64) as usize
    }
}

/// The URL with the fewest of this tool's requests in flight; ties broken at random (seeded).
#[derive(Debug)]
pub struct LeastQueue {
    in_flight: Vec<AtomicUsize>,
    seed: u64,
}

impl Router for LeastQueue {
    fn pick(&self, seq: u64) -> usize {
        let n = self.in_flight.len();
        let start = (mix(self.seed ^ mix(seq)) % n as u64) as usize;
        let mut best = start;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.in_flight[i].load(Ordering::Relaxed);
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        self.in_flight[best].fetch_add(1, Ordering::Relaxed);
        best
    }

    fn release(&self, index: usize) {
        self.in_flight[index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Always the one URL (a gateway).
#[derive(Debug)]
pub struct Single;

impl Router for Single {
    fn pick(&self, _seq: u64) -> usize {
        0
    }
}

/// A parsed `--target` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `direct-rr`: round-robin over the servers (the baseline every ratio is taken against).
    DirectRr,
    /// `direct-random`: a uniformly random server.
    DirectRandom,
    /// `direct-least-queue`: the server with the fewest of the tool's requests in flight.
    DirectLeastQueue,
    /// `url:http://HOST:PORT`, or `LABEL=url:http://HOST:PORT` to name it in reports: a gateway
    /// (or any OpenAI-compatible endpoint) in front of the servers.
    Url {
        /// Base URL, without a trailing slash.
        url: String,
        /// Report name; `url:<url>` when unset.
        label: Option<String>,
    },
}

/// Errors parsing a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a known target name.
    #[error(
        "unknown target {0:?} (expected direct-rr, direct-random, direct-least-queue, url:http://HOST:PORT or LABEL=url:http://HOST:PORT)"
    )]
    Unknown(String),
    /// `url:` without an `http://` URL.
    #[error("target {0:?}: the URL must start with http:// (TLS is not supported)")]
    BadUrl(String),
}

impl TargetSpec {
    /// Parses one target name.
    pub fn parse(s: &str) -> Result<TargetSpec, TargetError> {
        let s = s.trim();
        if let Some((label, rest)) = s.split_once('=')
            && rest.starts_with("url:")
            && !label.is_empty()
            && !label.contains(':')
        {
            return match TargetSpec::parse(rest)? {
                TargetSpec::Url { url, .. } => Ok(TargetSpec::Url {
                    url,
                    label: Some(label.to_string()),
                }),
                _ => Err(TargetError::BadUrl(s.to_string())),
            };
        }
        match s {
            "direct-rr" => Ok(TargetSpec::DirectRr),
            "direct-random" => Ok(TargetSpec::DirectRandom),
            "direct-least-queue" => Ok(TargetSpec::DirectLeastQueue),
            other => match other.strip_prefix("url:") {
                Some(u) if u.starts_with("http://") && u.len() > 7 => Ok(TargetSpec::Url {
                    url: u.trim_end_matches('/').to_string(),
                    label: None,
                }),
                Some(_) => Err(TargetError::BadUrl(other.to_string())),
                None => Err(TargetError::Unknown(other.to_string())),
            },
        }
    }

    /// The name used in reports (`direct-rr`, ..., `url:http://...`).
    pub fn name(&self) -> String {
        match self {
            TargetSpec::DirectRr => "direct-rr".into(),
            TargetSpec::DirectRandom => "direct-random".into(),
            TargetSpec::DirectLeastQueue => "direct-least-queue".into(),
            TargetSpec::Url { label: Some(l), .. } => l.clone(),
            TargetSpec::Url { url, label: None } => format!("url:{url}"),
        }
    }

    /// Whether requests go straight to the servers (the tool balances them itself).
    pub fn is_direct(&self) -> bool {
        !matches!(self, TargetSpec::Url { .. })
    }

    /// The target for servers at `servers` (base URLs such as `http://127.0.0.1:41000`), with a
    /// fresh router (in-flight counts at zero) seeded with `seed`.
    pub fn build(&self, servers: &[String], seed: u64) -> Target {
        let n = servers.len().max(1);
        let (urls, router): (Vec<String>, Box<dyn Router>) = match self {
            TargetSpec::DirectRr => (
                servers.to_vec(),
                Box::new(RoundRobin {
                    n,
                    next: AtomicUsize::new(0),
                }),
            ),
            TargetSpec::DirectRandom => (servers.to_vec(), Box::new(Random { n, seed })),
            TargetSpec::DirectLeastQueue => (
                servers.to_vec(),
                Box::new(LeastQueue {
                    in_flight: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                    seed,
                }),
            ),
            TargetSpec::Url { url, .. } => (vec![url.clone()], Box::new(Single)),
        };
        Target {
            name: self.name(),
            urls,
            router,
        }
    }
}

/// A target ready to drive: its base URLs and its router.
pub struct Target {
    /// The report name.
    pub name: String,
    /// Base URLs (`http://host:port`, no trailing slash).
    pub urls: Vec<String>,
    /// The strategy.
    pub router: Box<dyn Router>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}
