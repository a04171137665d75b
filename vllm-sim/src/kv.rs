//! The KV block cache with prefix reuse (always on).
//!
//! The cache holds [`KvCache::total`] blocks. A running request holds its prompt's full blocks,
//! named by their chained hashes (shared with other running requests that have the same prefix),
//! plus *private* blocks for its partial last prompt block and its output tokens. When a request
//! finishes, its private blocks are freed and its hashed blocks that no other request uses move
//! to the *unused* list, ordered least recently used first: they still count as cached (a later
//! request with the same prefix reuses them) and are evicted, oldest first, when space is needed.
//! `kv usage = used blocks / total blocks`, where used blocks are the blocks of running requests.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy)]
struct Block {
    refs: u32,
    /// Position in the unused LRU while `refs == 0`.
    tick: u64,
}

/// The block cache. Pure bookkeeping, no I/O; see the module documentation.
#[derive(Debug)]
pub struct KvCache {
    total: usize,
    blocks: HashMap<u64, Block>,
    /// Unused hashed blocks by release order (oldest first).
    unused: BTreeMap<u64, u64>,
    tick: u64,
    /// Hashed blocks with `refs > 0`.
    shared_used: usize,
    /// Private (unhashed) blocks of running requests.
    private_used: usize,
}

impl KvCache {
    /// An empty cache of `total` blocks.
    pub fn new(total: usize) -> KvCache {
        KvCache {
            total,
            blocks: HashMap::new(),
            unused: BTreeMap::new(),
            tick: 0,
            shared_used: 0,
            private_used: 0,
        }
    }

    /// Capacity in blocks.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Blocks held by running requests.
    pub fn used(&self) -> usize {
        self.shared_used + self.private_used
    }

    /// Blocks no running request holds but that still cache a prefix (evictable).
    pub fn unused_cached(&self) -> usize {
        self.unused.len()
    }

    /// Used blocks over total blocks, 0..=1.
    pub fn usage(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.used() as f64 / self.total as f64
        }
    }

    /// How many leading blocks of `hashes` are in the cache (used or unused).
    pub fn leading_hits(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.blocks.contains_key(h))
            .count()
    }

    /// Whether the cache holds the block `hash`.
    pub fn contains(&self, hash: u64) -> bool {
        self.blocks.contains_key(&hash)
    }

    /// Takes the blocks of a request: its hashed prompt blocks (reused when cached) and
    /// `private` new blocks, evicting unused blocks (least recently used first) as needed.
    /// Returns the number of leading cached blocks, or `None` (and changes nothing) when the
    /// blocks do not fit.
    pub fn allocate(&mut self, hashes: &[u64], private: usize) -> Option<usize> {
        let hits = self.leading_hits(hashes);
        let mut missing = 0;
        let mut reactivate = 0;
        for h in hashes {
            match self.blocks.get(h) {
                Some(b) if b.refs == 0 => reactivate += 1,
                Some(_) => {}
                None => missing += 1,
            }
        }
        let need = missing + private;
        let free = self.total - self.used() - self.unused.len();
        if need > free + (self.unused.len() - reactivate) {
            return None;
        }
        for h in hashes {
            if let Some(b) = self.blocks.get_mut(h) {
                if b.refs == 0 {
                    self.unused.remove(&b.tick);
                    self.shared_used += 1;
                }
                b.refs += 1;
            }
        }
        while self.total - self.used() - self.unused.len() < need {
            let Some((_, victim)) = self.unused.pop_first() else {
                break;
            };
            self.blocks.remove(&victim);
        }
        for h in hashes {
            if let std::collections::hash_map::Entry::Vacant(e) = self.blocks.entry(*h) {
                e.insert(Block { refs: 1, tick: 0 });
                self.shared_used += 1;
            }
        }
        self.private_used += private;
        Some(hits)
    }

    /// Gives back what [`KvCache::allocate`] took for the same `hashes` and `private`.
    pub fn release(&mut self, hashes: &[u64], private: usize) {
        self.private_used = self.private_used.saturating_sub(private);
        for h in hashes {
            let Some(b) = self.blocks.get_mut(h) else {
                continue;
            };
            if b.refs == 0 {
                continue;
            }
            b.refs -= 1;
            if b.refs == 0 {
                self.tick += 1;
                b.tick = self.tick;
                self.unused.insert(self.tick, *h);
                self.shared_used -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_blocks_are_shared_and_reused_after_release() {
        let mut kv = KvCache::new(10);
        assert_eq!(kv.allocate(&[1, 2, 3], 1), Some(0));
        assert_eq!(kv.used(), 4);
        // A second request with the same two leading blocks shares them.
        assert_eq!(kv.allocate(&[1, 2, 9], 0), Some(2));
        assert_eq!(kv.used(), 5);
        kv.release(&[1, 2, 3], 1);
        assert_eq!((kv.used(), kv.unused_cached()), (3, 1));
        kv.release(&[1, 2, 9], 0);
        assert_eq!((kv.used(), kv.unused_cached()), (0, 4));
        assert_eq!(kv.usage(), 0.0);
        // Finished blocks are still a cache hit.
        assert_eq!(kv.allocate(&[1, 2, 3, 4], 0), Some(3));
        assert_eq!(kv.usage(), 0.4);
    }

    #[test]
    fn lru_eviction_takes_the_oldest_unused_block_first() {
        let mut kv = KvCache::new(4);
        kv.allocate(&[1, 2], 0).unwrap();
        kv.allocate(&[3, 4], 0).unwrap();
        kv.release(&[3, 4], 0); // 3 and 4 become unused first (older)
        kv.release(&[1, 2], 0);
        // Needs 2 new blocks: evicts 3 then 4, keeps 1 and 2.
        assert_eq!(kv.allocate(&[5, 6], 0), Some(0));
        assert!(kv.contains(1) && kv.contains(2));
        assert!(!kv.contains(3) && !kv.contains(4));
        // Reusing 1 makes it most recent; the next eviction takes 2.
        kv.release(&[5, 6], 0);
        kv.allocate(&[1], 0).unwrap();
        kv.release(&[1], 0);
        assert_eq!(kv.allocate(&[7], 0), Some(0));
        assert!(!kv.contains(2) && kv.contains(1));
    }

    #[test]
    fn allocation_that_does_not_fit_changes_nothing() {
        let mut kv = KvCache::new(4);
        kv.allocate(&[1, 2], 1).unwrap();
        assert_eq!(kv.allocate(&[3, 4], 0), None);
        assert_eq!(kv.used(), 3);
        // Cached blocks that the request reuses do not need free space.
        kv.release(&[1, 2], 1);
        assert_eq!(kv.allocate(&[1, 2, 3], 1), Some(2));
        assert_eq!(kv.used(), 4);
        assert_eq!(kv.allocate(&[], 1), None);
    }
}
