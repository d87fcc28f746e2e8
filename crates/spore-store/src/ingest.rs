//! Verifying a download's responses where they lie: [`PartialBlob::ingest`].
//!
//! A response is a bao encoding (parents and chunk groups in pre order) and
//! reaches us as the slices of the data frames that carried it. bao-tree's
//! own decoder reads it through `io::Read`: for every group it zero-fills a
//! buffer, copies the group into it, hashes it there and hands it out in a
//! fresh allocation, which we then copied once more into storage. On the
//! 2 GiB loopback benchmark the copy out of the frames alone was 18% of the
//! receiver's memmove samples, and growing the buffer 4.5% more.
//!
//! So this walks the same response (bao-tree's [`ResponseIterRef`] says what
//! comes next), hashes each group over the slices it spans, and once it
//! verifies hands those same slices to storage. The only copy left is the
//! one into the page cache or a write-behind run. Only a parent (64 bytes)
//! is copied, and only to read its two hashes.

use bao_tree::{
    ChunkNum, ChunkRanges,
    io::sync::OutboardMut,
    iter::{BaoChunk, ResponseIterRef},
};
use spore_core::GROUP_SIZE;

use crate::{
    PartialBlob, StoreError,
    outboard::{leaf_hash, parent_cv},
};

/// What one call to [`PartialBlob::ingest`] achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Chunk groups newly verified and written.
    pub new_groups: Vec<u64>,
    /// Chunk groups that were verified again but were already present.
    pub duplicate_groups: u64,
    /// Their bytes (the last group of a blob may be short).
    pub duplicate_bytes: u64,
}

/// Why an ingest stopped. Groups verified before the failure are kept.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sender is to blame: this group (or the node above it) did not verify.
    #[error("chunk group {group} failed verification")]
    BadData { group: u64, ingested: Ingested },
    /// The stream ended or failed before the requested ranges were complete.
    #[error("the stream ended early")]
    Truncated {
        ingested: Ingested,
        #[source]
        source: std::io::Error,
    },
    /// Our own disk failed; the sender is not to blame.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PartialBlob {
    /// Verifies and writes a bao-encoded response for `ranges`, as produced by
    /// [`crate::Blob::encode`] on the sending side, given as the slices it
    /// arrived in (one slice is fine too). Bytes past the response are ignored.
    pub fn ingest(
        &mut self,
        ranges: &ChunkRanges,
        payload: &[impl AsRef<[u8]>],
    ) -> Result<Ingested, IngestError> {
        let mut ingested = Ingested::default();
        let tree = self.outboard.tree;
        let ranges = with_last_chunk(ranges, tree.size());
        let mut payload = Payload::new(payload);
        // The hashes the next nodes must have, the next one on top.
        let mut expected = vec![blake3::Hash::from(self.record.hash)];
        let mut pieces = Vec::new();
        for item in ResponseIterRef::new(tree, &ranges) {
            match item {
                BaoChunk::Parent {
                    node,
                    is_root,
                    left,
                    right,
                    ..
                } => {
                    let group = node.chunk_range().start.to_bytes() / GROUP_SIZE;
                    if !payload.take(64, &mut pieces) {
                        let what = format!("inside the parent above group {group}");
                        return Err(truncated(ingested, what));
                    }
                    let mut pair = [[0u8; 32]; 2];
                    let mut at = 0;
                    for piece in &pieces {
                        pair.as_flattened_mut()[at..at + piece.len()].copy_from_slice(piece);
                        at += piece.len();
                    }
                    let [l, r] = pair.map(blake3::Hash::from);
                    if expected.pop() != Some(parent_cv(&l, &r, is_root)) {
                        return Err(IngestError::BadData { group, ingested });
                    }
                    if right {
                        expected.push(r);
                    }
                    if left {
                        expected.push(l);
                    }
                    // Messages are formatted on failure only, not once per node.
                    self.outboard.save(node, &(l, r)).map_err(|e| {
                        StoreError::io(format!("writing outboard of {}", self.record.hash))(e)
                    })?;
                }
                BaoChunk::Leaf {
                    start_chunk,
                    size,
                    is_root,
                    ..
                } => {
                    let offset = start_chunk.to_bytes();
                    let group = offset / GROUP_SIZE;
                    if !payload.take(size, &mut pieces) {
                        return Err(truncated(ingested, format!("inside group {group}")));
                    }
                    if expected.pop() != Some(leaf_hash(offset, &pieces, is_root)) {
                        return Err(IngestError::BadData { group, ingested });
                    }
                    // A request for less than a group (never ours, but valid
                    // bao) brings parts of it: written, not counted.
                    let whole_group = offset % GROUP_SIZE == 0
                        && (size as u64 == GROUP_SIZE || offset + size as u64 == self.size());
                    if self.verified.get(group) {
                        ingested.duplicate_groups += 1;
                        ingested.duplicate_bytes += size as u64;
                        continue;
                    }
                    self.data
                        .write_pieces_at(offset, &pieces)
                        .map_err(|e| StoreError::io(format!("writing {}", self.record.hash))(e))?;
                    if whole_group && self.verified.set(group) {
                        ingested.new_groups.push(group);
                        self.dirty = true;
                    }
                }
            }
        }
        Ok(ingested)
    }
}

/// `ranges` as bao answers them: a request reaching the blob's last chunk or
/// past it gets the last chunk (which proves the size), and whatever lies in
/// between.
fn with_last_chunk(ranges: &ChunkRanges, size: u64) -> ChunkRanges {
    let last = ChunkNum(ChunkNum::chunks(size).0.saturating_sub(1));
    let tail = ChunkRanges::from(last..);
    if ranges.intersects(&tail) {
        ranges | &tail
    } else {
        ranges.clone()
    }
}

fn truncated(ingested: Ingested, what: String) -> IngestError {
    IngestError::Truncated {
        ingested,
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the response ended {what}"),
        ),
    }
}

/// A read position in a payload kept as slices.
struct Payload<'a, B> {
    /// The slices not yet read to their end; `at` bytes of the first are read.
    slices: &'a [B],
    at: usize,
}

impl<'a, B: AsRef<[u8]>> Payload<'a, B> {
    fn new(slices: &'a [B]) -> Self {
        Payload { slices, at: 0 }
    }

    /// Moves on by `n` bytes and puts where they lie into `pieces` (no empty
    /// piece among them); false if the payload ends first.
    fn take(&mut self, mut n: usize, pieces: &mut Vec<&'a [u8]>) -> bool {
        pieces.clear();
        while n > 0 {
            let Some((first, rest)) = self.slices.split_first() else {
                return false;
            };
            let unread = &first.as_ref()[self.at..];
            let k = n.min(unread.len());
            if k > 0 {
                pieces.push(&unread[..k]);
            }
            n -= k;
            if k == unread.len() {
                self.slices = rest;
                self.at = 0;
            } else {
                self.at += k;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on setup failures

    use bao_tree::io::{BaoContentItem, DecodeError, sync::DecodeResponseIter};
    use positioned_io::ReadAt;
    use proptest::prelude::*;
    use spore_core::{ContentKind, Hash, group_count};

    use super::*;
    use crate::{Store, storage::Storage};

    const G: u64 = GROUP_SIZE;

    /// The ingest this module replaced, over bao-tree's own decoder: the
    /// reference the new one must match, acceptance, bytes and blame alike.
    fn ingest_with_bao(
        p: &mut PartialBlob,
        ranges: &ChunkRanges,
        encoded: &[u8],
    ) -> Result<Ingested, IngestError> {
        let mut ingested = Ingested::default();
        let root = p.record.hash.into();
        for item in DecodeResponseIter::new(root, p.outboard.tree, encoded, ranges) {
            match item {
                Ok(BaoContentItem::Parent(parent)) => {
                    p.outboard.save(parent.node, &parent.pair).unwrap();
                }
                Ok(BaoContentItem::Leaf(leaf)) => {
                    let group = leaf.offset / G;
                    let len = leaf.data.len() as u64;
                    let whole_group =
                        leaf.offset % G == 0 && (len == G || leaf.offset + len == p.size());
                    if p.verified.get(group) {
                        ingested.duplicate_groups += 1;
                        ingested.duplicate_bytes += len;
                        continue;
                    }
                    p.data.write_at_offset(leaf.offset, &leaf.data).unwrap();
                    if whole_group && p.verified.set(group) {
                        ingested.new_groups.push(group);
                    }
                }
                Err(DecodeError::LeafHashMismatch(chunk)) => {
                    let group = chunk.to_bytes() / G;
                    return Err(IngestError::BadData { group, ingested });
                }
                Err(DecodeError::ParentHashMismatch(node)) => {
                    let group = node.chunk_range().start.to_bytes() / G;
                    return Err(IngestError::BadData { group, ingested });
                }
                Err(e) => {
                    let source = std::io::Error::other(e.to_string());
                    return Err(IngestError::Truncated { ingested, source });
                }
            }
        }
        Ok(ingested)
    }

    /// An ingest's result, comparable.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok(Ingested),
        Bad(u64, Ingested),
        Truncated(Ingested),
    }

    fn outcome(r: Result<Ingested, IngestError>) -> Outcome {
        match r {
            Ok(i) => Outcome::Ok(i),
            Err(IngestError::BadData { group, ingested }) => Outcome::Bad(group, ingested),
            Err(IngestError::Truncated { ingested, .. }) => Outcome::Truncated(ingested),
            Err(IngestError::Store(e)) => panic!("memory storage failed: {e}"),
        }
    }

    /// Bytes in 1..=127: written or not is told by zero, and a byte flipped
    /// by 0x80 differs from every byte of the blob.
    fn blob_bytes(size: u64, seed: u8) -> Vec<u8> {
        (0..size)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed) % 127 + 1)
            .collect()
    }

    fn raw(storage: &Storage) -> Vec<u8> {
        let mut buf = vec![0u8; storage.len().unwrap() as usize];
        storage.read_exact_at(0, &mut buf).unwrap();
        buf
    }

    /// The blob, its hash and the encoding a sender sends for `ranges`.
    fn encoded(bytes: &[u8], ranges: &ChunkRanges) -> (Hash, Vec<u8>) {
        let source = Store::in_memory();
        let hash = source.add_bytes(bytes, "x").unwrap().hash;
        let mut out = Vec::new();
        source
            .blob(&hash)
            .unwrap()
            .encode(ranges, &mut out)
            .unwrap();
        (hash, out)
    }

    /// A download target holding `groups` already (put there by bao).
    fn target(hash: Hash, bytes: &[u8], groups: &[u64]) -> PartialBlob {
        let size = bytes.len() as u64;
        let mut p = Store::in_memory()
            .partial(&hash, size, ContentKind::Blob)
            .unwrap();
        for &g in groups {
            let ranges = ChunkRanges::from(ChunkNum(g * 16)..ChunkNum((g + 1) * 16));
            let (_, enc) = encoded(bytes, &ranges);
            ingest_with_bao(&mut p, &ranges, &enc).unwrap();
        }
        p
    }

    /// Runs both ingests on fresh targets and checks they agree on the
    /// outcome and on every byte written, data and outboard.
    fn compare(
        bytes: &[u8],
        hash: Hash,
        held: &[u64],
        ranges: &ChunkRanges,
        payload: &[u8],
        slices: &[&[u8]],
    ) -> (Outcome, PartialBlob) {
        let mut old = target(hash, bytes, held);
        let mut new = target(hash, bytes, held);
        let expected = outcome(ingest_with_bao(&mut old, ranges, payload));
        let got = outcome(new.ingest(ranges, slices));
        assert_eq!(got, expected);
        assert_eq!(new.verified, old.verified);
        let (Outcome::Ok(i) | Outcome::Bad(_, i) | Outcome::Truncated(i)) = &got;
        assert_eq!(new.dirty, !i.new_groups.is_empty(), "a flush is due");
        assert_eq!(raw(&new.data), raw(&old.data), "data written");
        assert_eq!(
            raw(&new.outboard.data),
            raw(&old.outboard.data),
            "outboard written"
        );
        // Nothing unverified: every byte is either untouched or the blob's.
        for (i, (&w, &b)) in raw(&new.data).iter().zip(bytes).enumerate() {
            assert!(w == 0 || w == b, "byte {i} written unverified");
        }
        (got, new)
    }

    /// Sizes around the edges that matter, and a few large ones.
    fn size() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => prop::sample::select(vec![0, 1, 2, 1023, 1024, 1025, G - 1, G, G + 1]),
            3 => (1..=9u64, -1..=1i64).prop_map(|(k, d)| (k * G).saturating_add_signed(d)),
            3 => 1..300_000u64,
            1 => 1..(5u64 << 20),
        ]
    }

    /// Requests as a download makes them (group ranges, possibly past the
    /// end), whole blobs, and chunk ranges that cut groups.
    fn ranges(size: u64) -> impl Strategy<Value = ChunkRanges> {
        let groups = group_count(size);
        let chunks = ChunkNum::chunks(size).0.max(1);
        let group_ranges =
            prop::collection::vec((0..groups + 2, 0..groups + 2), 1..4).prop_map(|rs| {
                rs.into_iter().fold(ChunkRanges::empty(), |acc, (s, n)| {
                    acc | ChunkRanges::from(ChunkNum(s * 16)..ChunkNum((s + n) * 16))
                })
            });
        let chunk_ranges = prop::collection::vec((0..chunks + 20, 0..40u64), 1..4).prop_map(|rs| {
            rs.into_iter().fold(ChunkRanges::empty(), |acc, (s, n)| {
                acc | ChunkRanges::from(ChunkNum(s)..ChunkNum(s + n))
            })
        });
        prop_oneof![
            4 => group_ranges,
            1 => Just(ChunkRanges::all()),
            1 => Just(ChunkRanges::from(ChunkNum(chunks + 5)..)),
            2 => chunk_ranges,
        ]
    }

    /// `payload` cut at `cuts` (empty slices included), or into single
    /// bytes when `bytewise` and it is short enough.
    fn split<'a>(payload: &'a [u8], cuts: &[prop::sample::Index], bytewise: bool) -> Vec<&'a [u8]> {
        if bytewise && payload.len() <= 100_000 {
            return payload.chunks(1).collect();
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
        at.push(0);
        at.push(payload.len());
        at.sort_unstable();
        at.windows(2).map(|w| &payload[w[0]..w[1]]).collect()
    }

    /// Groups a target holds before the response comes.
    fn held(size: u64, picks: &[prop::sample::Index]) -> Vec<u64> {
        picks
            .iter()
            .map(|i| i.index(group_count(size) as usize) as u64)
            .collect()
    }

    type Picks = Vec<prop::sample::Index>;

    fn case() -> impl Strategy<Value = (u64, ChunkRanges, Picks, Picks, bool)> {
        size().prop_flat_map(|size| {
            (
                Just(size),
                ranges(size),
                prop::collection::vec(any::<prop::sample::Index>(), 0..24),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                prop::bool::weighted(0.2),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn accepts_what_bao_accepts_and_writes_the_same_bytes(
            (size, ranges, cuts, held_picks, bytewise) in case(),
            seed in any::<u8>(),
        ) {
            let bytes = blob_bytes(size, seed);
            let (hash, payload) = encoded(&bytes, &ranges);
            let slices = split(&payload, &cuts, bytewise);
            let held = held(size, &held_picks);
            let (got, p) = compare(&bytes, hash, &held, &ranges, &payload, &slices);
            prop_assert!(matches!(got, Outcome::Ok(_)), "{got:?}");
            // and what it verified reads back
            for g in p.verified().ones_ranges().flatten() {
                let range = g * G..((g + 1) * G).min(size);
                let want = &bytes[range.start as usize..range.end as usize];
                prop_assert_eq!(p.reader().read_range(range).unwrap(), want);
            }
        }

        #[test]
        fn a_flipped_byte_is_blamed_on_the_same_group_and_never_written(
            (size, ranges, cuts, held_picks, bytewise) in case(),
            seed in any::<u8>(),
            at in any::<prop::sample::Index>(),
        ) {
            let bytes = blob_bytes(size, seed);
            let (hash, mut payload) = encoded(&bytes, &ranges);
            prop_assume!(!payload.is_empty());
            let at = at.index(payload.len());
            payload[at] ^= 0x80;
            let slices = split(&payload, &cuts, bytewise);
            let held = held(size, &held_picks);
            let (got, _) = compare(&bytes, hash, &held, &ranges, &payload, &slices);
            prop_assert!(matches!(got, Outcome::Bad(..)), "{got:?}");
        }

        #[test]
        fn a_cut_response_is_truncated_and_keeps_what_verified(
            (size, ranges, cuts, held_picks, bytewise) in case(),
            seed in any::<u8>(),
            len in any::<prop::sample::Index>(),
        ) {
            let bytes = blob_bytes(size, seed);
            let (hash, payload) = encoded(&bytes, &ranges);
            prop_assume!(!payload.is_empty());
            let payload = &payload[..len.index(payload.len())];
            let slices = split(payload, &cuts, bytewise);
            let held = held(size, &held_picks);
            let (got, p) = compare(&bytes, hash, &held, &ranges, payload, &slices);
            let Outcome::Truncated(ingested) = got else {
                panic!("{got:?}");
            };
            for g in ingested.new_groups {
                prop_assert!(p.verified().get(g));
                let range = g * G..((g + 1) * G).min(size);
                let want = &bytes[range.start as usize..range.end as usize];
                prop_assert_eq!(p.reader().read_range(range).unwrap(), want);
            }
        }
    }

    #[test]
    fn a_request_reaching_the_end_asks_for_the_last_chunk() {
        for size in [1, G - 1, G, 5 * G + 7, 40 * G] {
            let chunks = ChunkNum::chunks(size).0;
            let last = ChunkNum(chunks - 1);
            for (ranges, want) in [
                (
                    ChunkRanges::from(ChunkNum(chunks + 3)..ChunkNum(chunks + 9)),
                    ChunkRanges::from(last..),
                ),
                (
                    ChunkRanges::from(ChunkNum(0)..ChunkNum(chunks - 1)),
                    ChunkRanges::from(ChunkNum(0)..last),
                ),
                (ChunkRanges::all(), ChunkRanges::all()),
            ] {
                assert_eq!(with_last_chunk(&ranges, size), want, "{size}");
            }
        }
    }
}
