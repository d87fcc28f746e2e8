//! `PartialBlob::ingest` on responses from a hostile peer: never panics,
//! marks verified only groups that were requested and are in fact the
//! original bytes, and accepts an honest response in full.
//!
//! One fixed blob is added to a source store once. Each run opens a fresh
//! partial for it in a second in-memory store and feeds it a few responses:
//! fuzzer-made bytes, or the honest `Blob::encode` output of some ranges,
//! then edited (bits flipped, bytes inserted or removed, cut short), and cut
//! into the slices the frames would have carried (down to single bytes).
#![no_main]

use std::{ops::Range, sync::OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spore_core::{ContentKind, GROUP_SIZE, Hash, group_count};
use spore_store::{Blob, ChunkNum, ChunkRanges, IngestError, Ingested, Store};

/// 300 KiB and a bit: 19 chunk groups, the last one short.
const SIZE: u64 = 300 * 1024 + 123;
const CHUNKS: u64 = SIZE.div_ceil(1024);
const GROUPS: u64 = SIZE.div_ceil(GROUP_SIZE);

struct Fixture {
    original: Vec<u8>,
    hash: Hash,
    blob: Blob,
    /// Keeps the blob's storage alive.
    _store: Store,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut original = vec![0; SIZE as usize];
        blake3::Hasher::new()
            .update(b"spore partial_ingest fuzz blob")
            .finalize_xof()
            .fill(&mut original);
        let store = Store::in_memory();
        let added = store
            .add_bytes(&original, "fuzz")
            .expect("adding to a memory store");
        assert_eq!(added.size, SIZE);
        let blob = store.blob(&added.hash).expect("the blob just added");
        Fixture {
            original,
            hash: added.hash,
            blob,
            _store: store,
        }
    })
}

/// A chunk range: `start..start + len`, open-ended when `len` is 0. Starts
/// may lie past the end of the blob.
#[derive(Debug, Arbitrary)]
struct Span {
    start: u16,
    len: u8,
}

fn chunk_ranges(spans: &[Span]) -> ChunkRanges {
    let mut ranges = ChunkRanges::empty();
    for span in spans {
        let start = u64::from(span.start) % (CHUNKS + 40);
        ranges |= match span.len {
            0 => ChunkRanges::from(ChunkNum(start)..),
            len => ChunkRanges::from(ChunkNum(start)..ChunkNum(start + u64::from(len))),
        };
    }
    ranges
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Flip { at: u32, mask: u8 },
    Insert { at: u32, byte: u8 },
    Remove { at: u32 },
    Truncate { at: u32 },
}

#[derive(Debug, Arbitrary)]
enum Response {
    /// Bytes the fuzzer made up.
    Raw(Vec<u8>),
    /// The honest encoding of the requested ranges, then edited.
    Honest(Vec<Edit>),
    /// The honest encoding of other ranges than those requested, then edited.
    Other(Vec<Span>, Vec<Edit>),
}

#[derive(Debug, Arbitrary)]
struct Step {
    request: Vec<Span>,
    response: Response,
    /// The response arrives in slices of `1 + slice` bytes.
    slice: u16,
}

fn encode(ranges: &ChunkRanges) -> Vec<u8> {
    let mut out = Vec::new();
    fixture()
        .blob
        .encode(ranges, &mut out)
        .expect("encoding a complete blob");
    out
}

/// Applies `edits`; returns whether the bytes changed.
fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) -> bool {
    let before = bytes.clone();
    for edit in edits {
        let at = |at: u32, len: usize| (at as usize) % len.max(1);
        match *edit {
            Edit::Flip { at: i, mask } if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] ^= mask;
            }
            Edit::Insert { at: i, byte } => {
                let i = at(i, bytes.len() + 1);
                bytes.insert(i, byte);
            }
            Edit::Remove { at: i } if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate { at: i } => bytes.truncate(at(i, bytes.len() + 1)),
            _ => {}
        }
    }
    *bytes != before
}

/// Which chunk groups a response to `ranges` carries whole: only those can
/// become verified. bao-tree clips ranges to the blob, and a range reaching
/// the last chunk or beyond asks for all of it (this proves the size). A group
/// only partly requested comes as smaller subtrees, which verify their bytes
/// but not the group.
fn whole_groups(ranges: &ChunkRanges) -> Vec<bool> {
    let mut clipped = ranges & &ChunkRanges::from(ChunkNum(0)..ChunkNum(CHUNKS));
    if ranges.intersects(&ChunkRanges::from(ChunkNum(CHUNKS - 1)..)) {
        clipped |= ChunkRanges::from(ChunkNum(CHUNKS - 1)..ChunkNum(CHUNKS));
    }
    let chunks_per_group = GROUP_SIZE / 1024;
    (0..GROUPS)
        .map(|g| {
            (g * chunks_per_group..((g + 1) * chunks_per_group).min(CHUNKS))
                .all(|c| clipped.contains(&ChunkNum(c)))
        })
        .collect()
}

fn group_bytes(group: u64) -> Range<u64> {
    group * GROUP_SIZE..((group + 1) * GROUP_SIZE).min(SIZE)
}

fuzz_target!(|steps: Vec<Step>| {
    let fixture = fixture();
    let store = Store::in_memory();
    let mut partial = store
        .partial(&fixture.hash, SIZE, ContentKind::Blob)
        .expect("opening a partial in a memory store");
    assert_eq!(group_count(SIZE), GROUPS);
    for step in steps.iter().take(4) {
        let ranges = chunk_ranges(&step.request);
        let (bytes, honest) = match &step.response {
            Response::Raw(bytes) => (bytes.clone(), false),
            Response::Honest(edits) => {
                let mut bytes = encode(&ranges);
                let edited = apply(&mut bytes, edits);
                (bytes, !edited)
            }
            Response::Other(spans, edits) => {
                let mut bytes = encode(&chunk_ranges(spans));
                apply(&mut bytes, edits);
                (bytes, false)
            }
        };
        let before = partial.verified().clone();
        let slices: Vec<&[u8]> = bytes.chunks(1 + usize::from(step.slice)).collect();
        let result = partial.ingest(&ranges, &slices);
        let ingested: &Ingested = match &result {
            Ok(ingested) => ingested,
            Err(
                IngestError::BadData { ingested, .. } | IngestError::Truncated { ingested, .. },
            ) => ingested,
            Err(e @ IngestError::Store(_)) => panic!("a memory store failed: {e}"),
        };
        let after = partial.verified();
        let whole = whole_groups(&ranges);
        for g in 0..GROUPS {
            let newly = after.get(g) && !before.get(g);
            assert!(!before.get(g) || after.get(g), "group {g} was un-verified");
            assert!(
                !newly || whole[g as usize],
                "group {g} verified but not requested whole"
            );
            assert_eq!(
                ingested.new_groups.contains(&g),
                newly,
                "group {g}: reported {:?}",
                ingested.new_groups
            );
        }
        if honest {
            assert!(result.is_ok(), "an honest response was refused: {result:?}");
            for g in 0..GROUPS {
                assert!(
                    !whole[g as usize] || after.get(g),
                    "honest group {g} not verified"
                );
            }
        }
    }
    // Verified groups read back as the original bytes; others are refused.
    let reader = partial.reader();
    for g in 0..GROUPS {
        let range = group_bytes(g);
        let read = reader.read_range(range.clone());
        if partial.verified().get(g) {
            match read {
                Ok(bytes) => assert!(
                    bytes == fixture.original[range.start as usize..range.end as usize],
                    "verified group {g} reads back different bytes"
                ),
                Err(e) => panic!("verified group {g} cannot be read: {e}"),
            }
        } else {
            assert!(read.is_err(), "unverified group {g} was readable");
        }
    }
    if partial.is_complete() {
        let blob = partial.finish().expect("finishing a complete partial");
        assert!(blob.read_all().expect("reading a complete blob") == fixture.original);
    }
});
