//! `Bitfield::from_bytes` on untrusted bytes (a peer's have-set, a stored
//! record): never panics, accepts exactly the canonical encodings of a
//! bitfield of the given length, and the result agrees with a plain model.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spore_core::{Bitfield, BitfieldError};

#[derive(Debug, Arbitrary)]
enum Len {
    /// A length that fits the bytes: `8 * bytes.len()` minus `short % 8`.
    Fitting { short: u8 },
    /// Any length at all.
    Any(u64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    len: Len,
    bytes: Vec<u8>,
    /// Bits to flip after decoding, to check the counters stay right.
    flips: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let bytes = &input.bytes;
    let len = match input.len {
        Len::Fitting { short } => (bytes.len() as u64 * 8).saturating_sub(u64::from(short % 8)),
        Len::Any(len) => len,
    };
    let bit = |i: u64| bytes[(i / 8) as usize] & (1 << (i % 8)) != 0;
    let mut field = match Bitfield::from_bytes(len, bytes) {
        Ok(field) => field,
        Err(BitfieldError::WrongLength { expected, got }) => {
            assert_eq!((expected, got), (len, bytes.len()));
            assert_ne!(len.div_ceil(8), bytes.len() as u64);
            return;
        }
        Err(BitfieldError::TrailingBits) => {
            assert_eq!(len.div_ceil(8), bytes.len() as u64);
            assert!((len..bytes.len() as u64 * 8).any(bit));
            return;
        }
    };
    assert_eq!(field.len(), len);
    assert_eq!(field.to_bytes(), *bytes);
    let mut model: Vec<bool> = (0..len).map(bit).collect();
    for flip in input.flips.iter().map(|&f| u64::from(f)) {
        if field.get(flip) {
            field.clear(flip);
        } else {
            assert_eq!(field.set(flip), flip < len);
        }
        if let Some(b) = model.get_mut(flip as usize) {
            *b = !*b;
        }
    }
    for (i, &b) in model.iter().enumerate() {
        assert_eq!(field.get(i as u64), b, "bit {i}");
    }
    assert!(!field.get(len));
    let ones = model.iter().filter(|&&b| b).count() as u64;
    assert_eq!(field.count_ones(), ones);
    assert_eq!(field.is_complete(), ones == len);
    // The runs of ones and zeros tile 0..len in order, alternating.
    let mut runs: Vec<_> = field
        .ones_ranges()
        .map(|r| (r, true))
        .chain(field.zeros_ranges().map(|r| (r, false)))
        .collect();
    runs.sort_by_key(|(r, _)| r.start);
    let mut next = 0;
    for (i, (range, value)) in runs.iter().enumerate() {
        assert_eq!(range.start, next);
        assert!(range.start < range.end);
        assert!(
            model[range.start as usize..range.end as usize]
                .iter()
                .all(|b| b == value)
        );
        if i > 0 {
            assert_ne!(runs[i - 1].1, *value);
        }
        next = range.end;
    }
    assert_eq!(next, len);
    assert_eq!(
        Bitfield::from_bytes(len, &field.to_bytes()).as_ref(),
        Ok(&field)
    );
});
