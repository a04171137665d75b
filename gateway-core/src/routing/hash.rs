//! A fast, unkeyed hasher for the routing indices.
//!
//! The indices are built from configuration and only read on the request path: a client chooses
//! the keys it looks up but cannot insert, so it cannot flood a bucket. That makes SipHash's
//! protection unnecessary here, and a word-at-a-time multiply hash (in the style of `FxHash`,
//! finished with a folded 128-bit multiply for good high and low bits) is several times cheaper
//! on short keys such as hostnames and path prefixes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` using [`WordHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Hashes eight bytes at a time; see the module docs for when it is appropriate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WordHasher(u64);

impl WordHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(26);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
        self.add(bytes.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let wide = u128::from(self.0) * u128::from(K);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

/// The set of key lengths present in an index, so lookups can skip probes that cannot hit
/// without hashing. Lengths of 256 bytes and more share one flag.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LenSet {
    short: [u64; 4],
    long: bool,
}

impl LenSet {
    /// Records a key length. Runs when the index is built.
    pub(crate) fn insert(&mut self, len: usize) {
        match self.short.get_mut(len / 64) {
            Some(word) => *word |= 1 << (len % 64),
            None => self.long = true,
        }
    }

    /// Whether a key of this length may be present.
    #[inline]
    pub(crate) fn may_contain(&self, len: usize) -> bool {
        match self.short.get(len / 64) {
            Some(word) => word & (1 << (len % 64)) != 0,
            None => self.long,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn len_set() {
        let mut s = LenSet::default();
        assert!(!s.may_contain(0));
        for len in [0, 7, 63, 64, 255] {
            s.insert(len);
        }
        for len in [0, 7, 63, 64, 255] {
            assert!(s.may_contain(len), "{len}");
        }
        for len in [1, 62, 65, 254, 256, 1000] {
            assert!(!s.may_contain(len), "{len}");
        }
        s.insert(300);
        assert!(s.may_contain(256) && s.may_contain(1000));
    }

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(s)
    }

    #[test]
    fn distinct_keys_hash_differently() {
        let keys = [
            "",
            "/",
            "/a",
            "/a\0",
            "svc1.example.com",
            "svc2.example.com",
            "12345678",
            "123456789",
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(hash("svc1.example.com"), hash("svc1.example.com"));
    }

    #[test]
    fn map_works_with_many_similar_keys() {
        let mut m = FastMap::default();
        for i in 0..10_000 {
            m.insert(format!("svc{i}.example.com"), i);
        }
        for i in 0..10_000 {
            assert_eq!(m.get(format!("svc{i}.example.com").as_str()), Some(&i));
        }
        assert_eq!(m.get("svc10000.example.com"), None);
    }
}
