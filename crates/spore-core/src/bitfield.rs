//! A fixed-length bit set over the chunk groups of one blob: which groups are
//! verified (store) or which a peer has (transfer).

use std::ops::Range;

/// A fixed-length set of bits, one per chunk group.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    len: u64,
    words: Vec<u64>,
    ones: u64,
}

/// Why bytes are not a bitfield of the expected length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield of {expected} bits needs {} bytes, got {got}", expected.div_ceil(8))]
    WrongLength { expected: u64, got: usize },
    #[error("bitfield has bits set past its length")]
    TrailingBits,
}

impl Bitfield {
    pub fn new(len: u64) -> Self {
        Self {
            len,
            words: vec![0; len.div_ceil(64) as usize],
            ones: 0,
        }
    }

    pub fn full(len: u64) -> Self {
        let mut b = Self::new(len);
        b.set_range(0..len);
        b
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count_ones(&self) -> u64 {
        self.ones
    }

    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was newly set. Out-of-range bits are ignored.
    pub fn set(&mut self, i: u64) -> bool {
        if i >= self.len {
            return false;
        }
        let word = &mut self.words[(i / 64) as usize];
        let mask = 1 << (i % 64);
        let newly = *word & mask == 0;
        *word |= mask;
        self.ones += u64::from(newly);
        newly
    }

    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            let word = &mut self.words[(i / 64) as usize];
            let mask = 1 << (i % 64);
            self.ones -= u64::from(*word & mask != 0);
            *word &= !mask;
        }
    }

    pub fn set_range(&mut self, range: Range<u64>) {
        for i in range.start..range.end.min(self.len) {
            self.set(i);
        }
    }

    /// True when every bit in `range` is set.
    pub fn all_set(&self, range: Range<u64>) -> bool {
        range.end <= self.len && (range.start..range.end).all(|i| self.get(i))
    }

    /// Maximal runs of set bits, in order.
    pub fn ones_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs(true)
    }

    /// Maximal runs of clear bits, in order.
    pub fn zeros_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs(false)
    }

    fn runs(&self, value: bool) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.len && self.get(i) != value {
                i += 1;
            }
            if i >= self.len {
                return None;
            }
            let start = i;
            while i < self.len && self.get(i) == value {
                i += 1;
            }
            Some(start..i)
        })
    }

    /// Little-endian bytes, bit `i` in byte `i / 8` at position `i % 8`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(self.len.div_ceil(8) as usize);
        out
    }

    pub fn from_bytes(len: u64, bytes: &[u8]) -> Result<Self, BitfieldError> {
        if bytes.len() as u64 != len.div_ceil(8) {
            return Err(BitfieldError::WrongLength {
                expected: len,
                got: bytes.len(),
            });
        }
        let mut b = Self::new(len);
        for (w, chunk) in b.words.iter_mut().zip(bytes.chunks(8)) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(word);
        }
        if let Some(last) = b.words.last()
            && !len.is_multiple_of(64)
            && last >> (len % 64) != 0
        {
            return Err(BitfieldError::TrailingBits);
        }
        b.ones = b.words.iter().map(|w| u64::from(w.count_ones())).sum();
        Ok(b)
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn set_clear_count() {
        let mut b = Bitfield::new(70);
        assert!(b.set(3));
        assert!(!b.set(3));
        assert!(b.set(69));
        assert!(!b.set(70));
        assert_eq!(b.count_ones(), 2);
        b.clear(3);
        assert_eq!(b.count_ones(), 1);
        assert_eq!(b.ones_ranges().collect::<Vec<_>>(), vec![69..70]);
        assert_eq!(b.zeros_ranges().collect::<Vec<_>>(), vec![0..69]);
        assert!(Bitfield::full(70).is_complete());
    }

    #[test]
    fn from_bytes_checks_length_and_padding() {
        assert!(matches!(
            Bitfield::from_bytes(9, &[0]),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert_eq!(
            Bitfield::from_bytes(4, &[0x10]),
            Err(BitfieldError::TrailingBits)
        );
    }

    proptest! {
        #[test]
        fn bytes_round_trip(len in 0u64..300, bits in proptest::collection::vec(0u64..300, 0..50)) {
            let mut b = Bitfield::new(len);
            for i in bits { b.set(i); }
            let back = Bitfield::from_bytes(len, &b.to_bytes()).unwrap();
            prop_assert_eq!(back.count_ones(), b.count_ones());
            prop_assert_eq!(back, b);
        }
    }
}
