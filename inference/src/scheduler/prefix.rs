//! The approximate prefix-cache index: which prompt blocks each endpoint probably holds in its
//! KV cache, learnt from the gateway's own picks (no information from the servers).
//!
//! Hashing ([`PrefixConfig::hash_prompt`], the character-based variant of the reference
//! scheduler): the prompt's UTF-8 bytes are cut into blocks of `block_bytes` (default 64, about
//! 16 tokens at 4 characters per token), a trailing partial block is dropped, at most
//! `max_blocks` (default 256) are kept; the hashes are chained xxHash64,
//! `h_0 = xxh64(block_0, seed = xxh64(model))`, `h_i = xxh64(block_i, seed = h_{i-1})`, so a
//! block's hash stands for the whole prefix up to it and different models never share blocks.
//!
//! The index ([`PrefixIndex`]) keeps, per endpoint, an LRU of at most `capacity_per_endpoint`
//! (default 31,250) block hashes, plus a map from hash to the endpoints holding it. A lookup
//! finds, per endpoint, the longest run of leading blocks it holds. It is behind one mutex,
//! held for the lookup or the update only (no allocation or await inside a lookup); this is
//! the only lock on the pick path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;

use xxhash_rust::xxh64::xxh64;

/// Default bytes per block (64 characters, about 16 tokens).
pub const DEFAULT_BLOCK_BYTES: usize = 64;
/// Default most blocks hashed per prompt (16 KiB of prompt).
pub const DEFAULT_MAX_BLOCKS: usize = 256;
/// Default LRU capacity per endpoint, in blocks.
pub const DEFAULT_CAPACITY_PER_ENDPOINT: usize = 31_250;

/// How prompts are cut and how much each endpoint remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixConfig {
    /// Bytes per block. Default: [`DEFAULT_BLOCK_BYTES`].
    pub block_bytes: usize,
    /// Most blocks per prompt. Default: [`DEFAULT_MAX_BLOCKS`].
    pub max_blocks: usize,
    /// Block hashes remembered per endpoint. Default: [`DEFAULT_CAPACITY_PER_ENDPOINT`].
    pub capacity_per_endpoint: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            block_bytes: DEFAULT_BLOCK_BYTES,
            max_blocks: DEFAULT_MAX_BLOCKS,
            capacity_per_endpoint: DEFAULT_CAPACITY_PER_ENDPOINT,
        }
    }
}

impl PrefixConfig {
    /// The chained block hashes of `prompt` for `model`, appended to `out` (cleared first).
    pub fn hash_prompt(&self, model: &str, prompt: &str, out: &mut Vec<u64>) {
        out.clear();
        let block = self.block_bytes.max(1);
        let n = (prompt.len() / block).min(self.max_blocks);
        out.reserve(n);
        let mut h = xxh64(model.as_bytes(), 0);
        for chunk in prompt.as_bytes().chunks_exact(block).take(n) {
            h = xxh64(chunk, h);
            out.push(h);
        }
    }
}

/// Hashes in the index are already xxHash64 outputs: use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashMapU64<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    hash: u64,
    prev: u32,
    next: u32,
}

/// The LRU list of one endpoint, in a slab (node indices are stable).
struct Lru {
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
}

impl Lru {
    fn new() -> Self {
        Lru {
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev == NIL {
            self.head = next
        } else {
            self.nodes[prev as usize].next = next
        }
        if next == NIL {
            self.tail = prev
        } else {
            self.nodes[next as usize].prev = prev
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

struct Inner {
    config: PrefixConfig,
    /// Endpoint address to its id (an index into `lrus`).
    ids: HashMap<SocketAddr, u32>,
    /// Per id; `None` for a removed endpoint's free id.
    lrus: Vec<Option<Lru>>,
    free_ids: Vec<u32>,
    /// Block hash to `(endpoint id, node index)` of every endpoint holding it.
    blocks: HashMapU64<Vec<(u32, u32)>>,
    /// Scratch for lookups: endpoint id to candidate position.
    position: Vec<u32>,
}

/// The approximate prefix-cache index of one pool (see the module docs).
pub struct PrefixIndex {
    inner: Mutex<Inner>,
}

impl Default for PrefixIndex {
    fn default() -> Self {
        PrefixIndex::new(PrefixConfig::default())
    }
}

impl std::fmt::Debug for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixIndex")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

impl PrefixIndex {
    /// An empty index.
    pub fn new(config: PrefixConfig) -> Self {
        PrefixIndex {
            inner: Mutex::new(Inner {
                config,
                ids: HashMap::new(),
                lrus: Vec::new(),
                free_ids: Vec::new(),
                blocks: HashMapU64::default(),
                position: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent-enough index (worst case stale
        // hints), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> PrefixConfig {
        self.lock().config
    }

    /// For each endpoint in `endpoints`, how many leading blocks of `hashes` it holds, written to
    /// `out` (same length as `endpoints`).
    pub fn match_lengths(&self, hashes: &[u64], endpoints: &[SocketAddr], out: &mut [u32]) {
        out.fill(0);
        if hashes.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let len = inner.lrus.len();
        inner.position.clear();
        inner.position.resize(len, NIL);
        let mut any = false;
        for (pos, addr) in endpoints.iter().enumerate() {
            if let Some(&id) = inner.ids.get(addr) {
                inner.position[id as usize] = pos as u32;
                any = true;
            }
        }
        if !any {
            return;
        }
        for (i, h) in hashes.iter().enumerate() {
            let Some(holders) = inner.blocks.get(h) else {
                break;
            };
            let mut extended = false;
            for &(id, _) in holders {
                let pos = inner.position[id as usize];
                if pos != NIL && out[pos as usize] == i as u32 {
                    out[pos as usize] = i as u32 + 1;
                    extended = true;
                }
            }
            if !extended {
                break;
            }
        }
    }

    /// Records that `endpoint` now holds the blocks `hashes` (called after it was picked). The
    /// leading blocks end up most recently used, so they are evicted last.
    pub fn record(&self, endpoint: SocketAddr, hashes: &[u64]) {
        if hashes.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let capacity = inner.config.capacity_per_endpoint;
        if capacity == 0 {
            return;
        }
        let id = match inner.ids.get(&endpoint) {
            Some(&id) => id,
            None => {
                let id = match inner.free_ids.pop() {
                    Some(id) => {
                        inner.lrus[id as usize] = Some(Lru::new());
                        id
                    }
                    None => {
                        inner.lrus.push(Some(Lru::new()));
                        (inner.lrus.len() - 1) as u32
                    }
                };
                inner.ids.insert(endpoint, id);
                id
            }
        };
        let Inner { lrus, blocks, .. } = inner;
        let lru = lrus[id as usize].as_mut().expect("id in use has an LRU");
        for &h in hashes.iter().rev() {
            let holders = blocks.entry(h).or_default();
            if let Some(&(_, node)) = holders.iter().find(|(e, _)| *e == id) {
                lru.unlink(node);
                lru.push_front(node);
                continue;
            }
            let node = if lru.nodes.len() < capacity {
                lru.nodes.push(Node {
                    hash: h,
                    prev: NIL,
                    next: NIL,
                });
                (lru.nodes.len() - 1) as u32
            } else {
                let victim = lru.tail;
                lru.unlink(victim);
                let old = lru.nodes[victim as usize].hash;
                lru.nodes[victim as usize].hash = h;
                // `old != h`: h was not held by this endpoint.
                if let Some(list) = blocks.get_mut(&old) {
                    list.retain(|(e, _)| *e != id);
                    if list.is_empty() {
                        blocks.remove(&old);
                    }
                }
                victim
            };
            lru.push_front(node);
            blocks.entry(h).or_default().push((id, node));
        }
    }

    /// Forgets an endpoint (it left the pool).
    pub fn remove(&self, endpoint: SocketAddr) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(id) = inner.ids.remove(&endpoint) else {
            return;
        };
        if let Some(lru) = inner.lrus[id as usize].take() {
            for node in &lru.nodes {
                if let Some(list) = inner.blocks.get_mut(&node.hash) {
                    list.retain(|(e, _)| *e != id);
                    if list.is_empty() {
                        inner.blocks.remove(&node.hash);
                    }
                }
            }
        }
        inner.free_ids.push(id);
    }

    /// Forgets every endpoint for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        let gone: Vec<SocketAddr> = self
            .lock()
            .ids
            .keys()
            .filter(|a| !keep(a))
            .copied()
            .collect();
        for addr in gone {
            self.remove(addr);
        }
    }

    /// How many blocks `endpoint` holds.
    pub fn len(&self, endpoint: SocketAddr) -> usize {
        let inner = self.lock();
        inner
            .ids
            .get(&endpoint)
            .and_then(|&id| inner.lrus[id as usize].as_ref())
            .map_or(0, |l| l.nodes.len())
    }

    /// Whether no endpoint holds any block.
    pub fn is_empty(&self) -> bool {
        self.lock().blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn hashes(model: &str, prompt: &str) -> Vec<u64> {
        let mut out = Vec::new();
        PrefixConfig::default().hash_prompt(model, prompt, &mut out);
        out
    }

    #[test]
    fn hashing_blocks_chain_and_model_seed() {
        let text = "x".repeat(64 * 3 + 10);
        let h = hashes("m", &text);
        assert_eq!(h.len(), 3, "the trailing partial block is dropped");
        // Equal blocks get different hashes: each covers its whole prefix.
        assert_ne!(h[0], h[1]);
        assert_ne!(hashes("other", &text)[0], h[0]);
        let mut longer = text.clone();
        longer.push_str(&"y".repeat(200));
        assert_eq!(&hashes("m", &longer)[..3], &h[..]);
        assert_eq!(hashes("m", &"z".repeat(64 * 300)).len(), DEFAULT_MAX_BLOCKS);
        assert!(hashes("m", "short").is_empty());
    }

    #[test]
    fn longest_leading_run_per_endpoint() {
        let index = PrefixIndex::default();
        let a = "a".repeat(64 * 4);
        let h = hashes("m", &a);
        index.record(addr(1), &h[..4]);
        index.record(addr(2), &h[..2]);
        // Endpoint 3 holds block 1 and 2 but not block 0: no leading run.
        index.record(addr(3), &h[1..3]);
        let endpoints = [addr(1), addr(2), addr(3), addr(4)];
        let mut out = [9; 4];
        index.match_lengths(&h, &endpoints, &mut out);
        assert_eq!(out, [4, 2, 0, 0]);
        index.match_lengths(&[], &endpoints, &mut out);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn lru_evicts_least_recent_and_keeps_prefix_blocks() {
        let index = PrefixIndex::new(PrefixConfig {
            capacity_per_endpoint: 4,
            ..Default::default()
        });
        let first = hashes("m", &"a".repeat(64 * 3));
        index.record(addr(1), &first);
        assert_eq!(index.len(addr(1)), 3);
        let second = hashes("m", &"b".repeat(64 * 3));
        index.record(addr(1), &second);
        assert_eq!(index.len(addr(1)), 4);
        let mut out = [0];
        // The second prompt is fully held; of the first, its last blocks went first, so its
        // first block (the most recently inserted of it) survived.
        index.match_lengths(&second, &[addr(1)], &mut out);
        assert_eq!(out, [3]);
        index.match_lengths(&first, &[addr(1)], &mut out);
        assert_eq!(out, [1]);
        // Touching moves to the front: re-recording the first prompt evicts from the second.
        index.record(addr(1), &first);
        index.match_lengths(&first, &[addr(1)], &mut out);
        assert_eq!(out, [3]);
        index.match_lengths(&second, &[addr(1)], &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn remove_and_retain_forget_endpoints() {
        let index = PrefixIndex::default();
        let h = hashes("m", &"a".repeat(128));
        index.record(addr(1), &h);
        index.record(addr(2), &h);
        index.remove(addr(1));
        let mut out = [0; 2];
        index.match_lengths(&h, &[addr(1), addr(2)], &mut out);
        assert_eq!(out, [0, 2]);
        // The freed id is reused without mixing state.
        index.record(addr(3), &h[..1]);
        index.match_lengths(&h, &[addr(3), addr(2)], &mut out);
        assert_eq!(out, [1, 2]);
        index.retain(|a| *a == addr(3));
        index.match_lengths(&h, &[addr(3), addr(2)], &mut out);
        assert_eq!(out, [1, 0]);
        index.remove(addr(3));
        assert!(index.is_empty());
    }
}
