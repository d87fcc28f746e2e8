//! Availability: slices of a bitfield, and building them from a `Bitfield`.

use bytes::Bytes;
use spore_core::{Bitfield, Hash, group_count};

use super::{HaveSlice, MAX_HAVE_BYTES, Message, WireError, kind};

pub(super) fn validate_slice(s: &HaveSlice) -> Result<(), WireError> {
    let malformed = |reason| {
        Err(WireError::Malformed {
            kind: kind::HAVE,
            reason,
        })
    };
    if s.bits.is_empty() {
        return malformed("empty bitfield slice");
    }
    if s.bits.len() > MAX_HAVE_BYTES {
        return Err(WireError::TooLarge {
            kind: kind::HAVE,
            what: "bitfield slice bytes",
            got: s.bits.len() as u64,
            max: MAX_HAVE_BYTES as u64,
        });
    }
    if !s.start.is_multiple_of(8) {
        return malformed("slice start is not a multiple of 8");
    }
    let groups = group_count(s.size);
    let first_byte = s.start / 8;
    let total_bytes = groups.div_ceil(8);
    if first_byte + s.bits.len() as u64 > total_bytes {
        return malformed("slice reaches past the blob's last group");
    }
    if first_byte + s.bits.len() as u64 == total_bytes
        && !groups.is_multiple_of(8)
        && s.bits.last().is_some_and(|b| b >> (groups % 8) != 0)
    {
        return malformed("bits set past the blob's last group");
    }
    Ok(())
}

impl HaveSlice {
    /// The groups this slice speaks for.
    pub fn groups(&self) -> std::ops::Range<u64> {
        let end = (self.start + 8 * self.bits.len() as u64).min(group_count(self.size));
        self.start..end
    }

    /// Whether the slice says group `g` is present (false outside the slice).
    pub fn has(&self, g: u64) -> bool {
        self.groups().contains(&g) && {
            let i = g - self.start;
            self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
        }
    }

    /// The runs of groups the slice says are present, in order.
    pub fn present(&self) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        let groups = self.groups();
        let mut g = groups.start;
        std::iter::from_fn(move || {
            while g < groups.end && !self.has(g) {
                g += 1;
            }
            let start = g;
            while g < groups.end && self.has(g) {
                g += 1;
            }
            (start < g).then_some(start..g)
        })
    }

    /// Sets `bitfield`'s bits for the groups of this slice to exactly what it
    /// says. `bitfield` must have `group_count(self.size)` bits.
    pub fn apply(&self, bitfield: &mut Bitfield) {
        for g in self.groups() {
            if self.has(g) {
                bitfield.set(g);
            } else {
                bitfield.clear(g);
            }
        }
    }
}

/// The frames announcing `have` (a bitfield over the groups of a blob of
/// `size` bytes): `HaveAll` when complete, `DontHave` when empty, otherwise
/// `Have` slices of at most [`MAX_HAVE_BYTES`] that together cover the blob.
pub fn have_messages(hash: Hash, size: u64, have: &Bitfield) -> Vec<Message> {
    debug_assert_eq!(have.len(), group_count(size));
    if have.is_complete() {
        return vec![Message::HaveAll { hash, size }];
    }
    if have.count_ones() == 0 {
        return vec![Message::DontHave { hash }];
    }
    let bytes = Bytes::from(have.to_bytes());
    (0..bytes.len())
        .step_by(MAX_HAVE_BYTES)
        .map(|at| {
            Message::Have(HaveSlice {
                hash,
                size,
                start: at as u64 * 8,
                bits: bytes.slice(at..(at + MAX_HAVE_BYTES).min(bytes.len())),
            })
        })
        .collect()
}
