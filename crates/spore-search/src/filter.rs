//! Keyword routing filters, in the manner of Gnutella's query routing
//! protocol (QRP), extended to several levels ("attenuated" Bloom filters).
//!
//! A [`Bloom`] holds a set of keywords in [`FILTER_BITS`] bits with
//! [`FILTER_HASHES`] hash functions; it may say yes wrongly, never no
//! wrongly. A [`RouteFilter`] is what a peer tells its neighbours: level 0
//! holds its own keywords, level `j` the keywords of every peer within `j`
//! hops of it (its own, plus level `j - 1` of each neighbour's filter). A
//! peer holding a query that may travel `r` more hops past a neighbour
//! forwards it there only if that neighbour's level `r` (or its deepest
//! level) may hold every word. The hash construction is part of the
//! protocol (docs/protocol.md), so it is written out here, not borrowed
//! from a crate with its own.

use serde::{Deserialize, Serialize};

/// Bits per level: 2^17 (16 KiB).
pub const FILTER_BITS: usize = 1 << 17;
/// Bytes per level.
pub const FILTER_BYTES: usize = FILTER_BITS / 8;
/// Hash functions per keyword.
pub const FILTER_HASHES: u64 = 4;
/// Most levels a filter may carry (levels 0..=3 cover 3 hops past the peer).
pub const MAX_LEVELS: usize = 4;
/// Domain separation for keyword hashes.
pub const BLOOM_CONTEXT: &[u8] = b"spore-search-bloom/1";

/// A Bloom filter of keywords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bloom {
    #[serde(with = "serde_bytes_compat")]
    bits: Vec<u8>,
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bloom({} bits set)", self.count_ones())
    }
}

impl Default for Bloom {
    fn default() -> Self {
        Self::new()
    }
}

fn positions(word: &str) -> impl Iterator<Item = usize> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(BLOOM_CONTEXT);
    hasher.update(word.as_bytes());
    let h = hasher.finalize();
    let b = h.as_bytes();
    let h1 = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let h2 = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]) | 1;
    (0..FILTER_HASHES)
        .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % FILTER_BITS as u64) as usize)
}

impl Bloom {
    pub fn new() -> Self {
        Self {
            bits: vec![0; FILTER_BYTES],
        }
    }

    /// A filter from raw bits; `None` unless exactly [`FILTER_BYTES`] long.
    pub fn from_bytes(bits: Vec<u8>) -> Option<Self> {
        (bits.len() == FILTER_BYTES).then_some(Self { bits })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn insert(&mut self, word: &str) {
        for p in positions(word) {
            if let Some(byte) = self.bits.get_mut(p / 8) {
                *byte |= 1 << (p % 8);
            }
        }
    }

    pub fn contains(&self, word: &str) -> bool {
        positions(word).all(|p| {
            self.bits
                .get(p / 8)
                .is_some_and(|b| b & (1 << (p % 8)) != 0)
        })
    }

    pub fn contains_all<S: AsRef<str>>(&self, words: &[S]) -> bool {
        words.iter().all(|w| self.contains(w.as_ref()))
    }

    /// Adds every keyword of `other`.
    pub fn union_with(&mut self, other: &Bloom) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    pub fn count_ones(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Share of bits set (false positives grow with it: ~fill^k).
    pub fn fill(&self) -> f64 {
        f64::from(self.count_ones()) / FILTER_BITS as f64
    }
}

/// A peer's routing filter, level 0 first (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFilter {
    pub levels: Vec<Bloom>,
}

impl RouteFilter {
    /// Whether a query that may still travel `hops_past` hops past this peer
    /// could find every word here. Beyond the deepest level the filter does
    /// not know; it answers yes.
    pub fn may_reach(&self, words: &[String], hops_past: usize) -> bool {
        if self.levels.is_empty() || hops_past >= self.levels.len() {
            return true;
        }
        self.levels[hops_past].contains_all(words)
    }

    /// Level 0 from `own`, level j from `own` plus level j-1 of each neighbour.
    pub fn build<'a>(
        own: &Bloom,
        neighbours: impl Iterator<Item = &'a RouteFilter> + Clone,
        levels: usize,
    ) -> Self {
        let levels = levels.clamp(1, MAX_LEVELS);
        let mut out = Vec::with_capacity(levels);
        for j in 0..levels {
            let mut level = own.clone();
            if j > 0 {
                for n in neighbours.clone() {
                    // A neighbour with fewer levels gives its deepest one.
                    if let Some(l) = n.levels.get(j - 1).or(n.levels.last()) {
                        level.union_with(l);
                    }
                }
            }
            out.push(level);
        }
        Self { levels: out }
    }
}

/// Serialises the bit vector as one byte string (postcard: a varint length,
/// then the bytes) rather than a sequence of separately tagged integers.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bits: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bits)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(d)?;
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::new();
        let words: Vec<String> = (0..5000).map(|i| format!("word{i}")).collect();
        for w in &words {
            b.insert(w);
        }
        assert!(words.iter().all(|w| b.contains(w)));
        let fp = (0..10_000)
            .filter(|i| b.contains(&format!("other{i}")))
            .count();
        // Expected (1 - e^(-4*5000/2^17))^4 ≈ 0.05%.
        assert!(fp < 50, "{fp} false positives in 10,000");
    }

    #[test]
    fn levels_accumulate_neighbourhoods() {
        let mut own = Bloom::new();
        own.insert("mine");
        let mut far = Bloom::new();
        far.insert("theirs");
        let neighbour = RouteFilter::build(&far, std::iter::empty(), 3);
        let f = RouteFilter::build(&own, std::iter::once(&neighbour), 3);
        let w = |s: &str| vec![s.to_owned()];
        assert!(f.may_reach(&w("mine"), 0));
        assert!(!f.may_reach(&w("theirs"), 0));
        assert!(f.may_reach(&w("theirs"), 1));
        assert!(f.may_reach(&w("theirs"), 2));
        assert!(!f.may_reach(&w("nobody"), 2));
        // Past the deepest level the filter cannot rule anything out.
        assert!(f.may_reach(&w("nobody"), 3));
    }

    #[test]
    fn wrong_length_is_refused() {
        assert!(Bloom::from_bytes(vec![0; 3]).is_none());
        assert!(Bloom::from_bytes(vec![0; FILTER_BYTES]).is_some());
    }
}
