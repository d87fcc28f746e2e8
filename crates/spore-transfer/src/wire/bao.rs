//! The size of a response payload: the bao encoding of a range of chunk groups.
//!
//! bao-tree (as used by `spore_store::Blob::encode`) hashes a blob as a
//! binary tree whose leaves are the chunk groups. For `n` groups the root's
//! left subtree holds the largest power of two of groups below `n`, and so on
//! down (the BLAKE3 tree shape, seen from 16 KiB groups). The encoding of a
//! group range is that tree walked in pre-order, keeping each node whose
//! groups intersect the range: a 64-byte hash pair for every such inner node,
//! the bytes of every such leaf. No length prefix.

use std::ops::Range;

use spore_core::{CHUNK_GROUP_LOG, GROUP_SIZE, group_count};

/// Bytes of one parent node in the encoding: two 32-byte hashes.
const PARENT: u64 = 64;

/// A bound on the depth of any tree: a `u64` size has at most 2^50 groups.
const MAX_DEPTH: u64 = 64 - 14;

/// The exact number of bytes `Blob::encode` writes for chunk groups `groups`
/// of a blob of `size` bytes, or `None` if `groups` is empty or reaches past
/// the blob's last group.
pub fn encoded_len(size: u64, groups: Range<u64>) -> Option<u64> {
    let n = group_count(size);
    if groups.start >= groups.end || groups.end > n {
        return None;
    }
    let data_end = groups.end.saturating_mul(GROUP_SIZE).min(size);
    let data = data_end - (groups.start * GROUP_SIZE).min(data_end);
    Some(parents(0, n, &groups) * PARENT + data)
}

/// Inner nodes of the subtree over groups `lo..hi` whose groups meet `q`.
fn parents(lo: u64, hi: u64, q: &Range<u64>) -> u64 {
    let width = hi - lo;
    if width <= 1 || q.end <= lo || q.start >= hi {
        return 0;
    }
    if q.start <= lo && hi <= q.end {
        return width - 1;
    }
    // The largest power of two strictly below `width`.
    let left = 1u64 << (63 - (width - 1).leading_zeros());
    1 + parents(lo, lo + left, q) + parents(lo + left, hi, q)
}

/// A bound on [`encoded_len`] for `count` groups of any blob:
/// `count` full groups and `count - 1 + 2 * 50` parents (the inner nodes
/// with both children in the range, and at most two per level above them).
pub fn max_encoded_len(count: u64) -> u64 {
    count
        .saturating_mul(GROUP_SIZE)
        .saturating_add(count.saturating_sub(1).saturating_add(2 * MAX_DEPTH) * PARENT)
}

/// The 1 KiB chunk numbers that cover chunk groups `groups`: build the
/// `ChunkRanges` for `Blob::encode` and `PartialBlob::ingest` from this
/// (`ChunkRanges::from(ChunkNum(r.start)..ChunkNum(r.end))`).
pub fn group_chunks(groups: Range<u64>) -> Range<u64> {
    groups.start.saturating_mul(1 << CHUNK_GROUP_LOG)
        ..groups.end.saturating_mul(1 << CHUNK_GROUP_LOG)
}
