//! TEST ONLY: a serving side that lies (`spore node --debug-lie-uploads`).
//!
//! Bans, strikes and wasted bytes can only be measured against a peer that
//! sends bad data through the real protocol; a damaged stored copy does not
//! do it, because the encoder validates what it reads and refuses damaged
//! groups. This writer sits between the bao encoder and the framing, so the
//! frames stay well formed and only the chunk content is wrong: the
//! receiver's verification fails on every group.

use std::io::Write;

/// The encoder writes each parent node as one 64-byte pair of hashes; every
/// other write is the content of one leaf (a chunk group).
const PARENT_PAIR: usize = 64;

/// Passes the bao stream through, or with one byte of every leaf flipped.
pub(super) struct MaybeLying<W> {
    inner: W,
    lie: bool,
    scratch: Vec<u8>,
}

/// `out` itself when `lie` is false.
pub(super) fn maybe_lying<W: Write>(lie: bool, out: W) -> MaybeLying<W> {
    MaybeLying {
        inner: out,
        lie,
        scratch: Vec::new(),
    }
}

impl<W: Write> Write for MaybeLying<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !self.lie || data.len() == PARENT_PAIR || data.is_empty() {
            return self.inner.write(data);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        let middle = self.scratch.len() / 2;
        self.scratch[middle] ^= 0x5a;
        self.inner.write_all(&self.scratch)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use spore_core::{ContentKind, GROUP_SIZE, group_count};
    use spore_store::{ChunkNum, ChunkRanges, IngestError, Store};

    use super::*;

    fn encoded(
        store: &Store,
        hash: &spore_core::Hash,
        groups: std::ops::Range<u64>,
        lie: bool,
    ) -> Vec<u8> {
        let ranges = ChunkRanges::from(ChunkNum(groups.start * 16)..ChunkNum(groups.end * 16));
        let mut out = Vec::new();
        store
            .blob(hash)
            .unwrap()
            .encode(&ranges, maybe_lying(lie, &mut out))
            .unwrap();
        out
    }

    #[test]
    fn a_lying_stream_has_the_same_shape_and_fails_verification_at_its_first_group() {
        let store = Store::in_memory();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let added = store.add_bytes(&bytes, "x").unwrap();
        let size = bytes.len() as u64;
        let groups = group_count(size);
        for range in [0..groups, 3..7, groups - 1..groups] {
            let honest = encoded(&store, &added.hash, range.clone(), false);
            let lying = encoded(&store, &added.hash, range.clone(), true);
            // same length: frames built from it parse the same way
            assert_eq!(honest.len(), lying.len());
            // one byte per leaf (group) differs
            let changed = honest.iter().zip(&lying).filter(|(a, b)| a != b).count();
            assert_eq!(changed as u64, range.end - range.start, "{range:?}");

            let receiver = Store::in_memory();
            let mut partial = receiver
                .partial(&added.hash, size, ContentKind::Blob)
                .unwrap();
            let ranges = ChunkRanges::from(ChunkNum(range.start * 16)..ChunkNum(range.end * 16));
            match partial.ingest(&ranges, &[&lying]) {
                Err(IngestError::BadData { group, ingested }) => {
                    assert_eq!(group, range.start);
                    assert!(ingested.new_groups.is_empty());
                }
                other => panic!("{range:?}: {other:?}"),
            }
            // the honest one verifies
            let ok = partial.ingest(&ranges, &[&honest]).unwrap();
            assert_eq!(ok.new_groups.len() as u64, range.end - range.start);
        }
        assert!(GROUP_SIZE * (groups - 1) < size);
    }
}
