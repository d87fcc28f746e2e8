//! Hashing a blob and building its bao outboard, in parallel.
//!
//! The outboard holds the parent nodes of the BLAKE3 tree down to 16 KiB chunk
//! groups, in post order (bao-tree's `PostOrderOutboard` layout, no size
//! suffix). The chunk groups are hashed on all cores; only the cheap merge of
//! their chaining values into parents is sequential. The result is identical
//! to bao-tree's own single-threaded outboard and the root equals `b3sum`.

use std::io;

use bao_tree::{BaoTree, BlockSize, io::outboard::PostOrderOutboard, iter::BaoChunk};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use positioned_io::ReadAt;
use rayon::prelude::*;
use spore_core::{CHUNK_GROUP_LOG, GROUP_SIZE, Hash};

/// Chunk groups of 16 KiB, the unit of verification everywhere in spore.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(CHUNK_GROUP_LOG);

/// Bytes each parallel task reads and hashes at once.
const SEGMENT: u64 = 1 << 17;

/// The tree geometry of a blob of `size` bytes.
pub fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK_SIZE)
}

/// A bao-tree view of an outboard stored in `data`.
pub fn view<D>(hash: Hash, size: u64, data: D) -> PostOrderOutboard<D> {
    PostOrderOutboard {
        root: hash.into(),
        tree: tree(size),
        data,
    }
}

/// Chaining value of one chunk group starting at byte `offset` of a blob that
/// has more than one group.
pub(crate) fn group_cv(offset: u64, bytes: &[u8]) -> blake3::Hash {
    leaf_hash(offset, &[bytes], false)
}

/// The hash the leaf at `offset` must have in the tree: its chaining value,
/// or the blob's hash when the leaf is the whole blob (`is_root`). `pieces`
/// are its bytes in order (a group received across two frames is hashed
/// where it lies).
pub(crate) fn leaf_hash(offset: u64, pieces: &[&[u8]], is_root: bool) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    if !is_root {
        hasher.set_input_offset(offset);
    }
    for piece in pieces {
        hasher.update(piece);
    }
    if is_root {
        hasher.finalize()
    } else {
        let cv: ChainingValue = hasher.finalize_non_root();
        blake3::Hash::from(cv)
    }
}

pub(crate) fn parent_cv(left: &blake3::Hash, right: &blake3::Hash, is_root: bool) -> blake3::Hash {
    if is_root {
        merge_subtrees_root(left.as_bytes(), right.as_bytes(), Mode::Hash)
    } else {
        blake3::Hash::from(merge_subtrees_non_root(
            left.as_bytes(),
            right.as_bytes(),
            Mode::Hash,
        ))
    }
}

/// Hashes `size` bytes of `data` and returns the root hash and the outboard.
/// `progress` is called with the number of bytes just hashed, from any thread.
pub fn compute(
    data: &(impl ReadAt + Sync),
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(Hash, Vec<u8>)> {
    if size <= GROUP_SIZE {
        let mut buf = vec![0u8; size as usize];
        data.read_exact_at(0, &mut buf)?;
        progress(size);
        return Ok((Hash::of(&buf), Vec::new()));
    }
    let segments = size.div_ceil(SEGMENT);
    let per_segment: Vec<Vec<blake3::Hash>> = (0..segments)
        .into_par_iter()
        .map_init(
            || vec![0u8; SEGMENT as usize],
            |buf, segment| {
                let start = segment * SEGMENT;
                let len = (size - start).min(SEGMENT) as usize;
                let buf = &mut buf[..len];
                data.read_exact_at(start, buf)?;
                progress(len as u64);
                Ok(segment_cvs(start, buf))
            },
        )
        .collect::<io::Result<_>>()?;
    finish(size, per_segment)
}

/// Like [`compute`] for bytes already in memory (or mapped), without copying them.
pub fn compute_slice(data: &[u8], progress: &(dyn Fn(u64) + Sync)) -> io::Result<(Hash, Vec<u8>)> {
    let size = data.len() as u64;
    if size <= GROUP_SIZE {
        progress(size);
        return Ok((Hash::of(data), Vec::new()));
    }
    // Large tasks, and chaining values written in place: the per-task cost
    // stays far below the hashing itself.
    const GROUPS_PER_TASK: usize = 256;
    let group = GROUP_SIZE as usize;
    let mut cvs = vec![blake3::Hash::from_bytes([0; 32]); data.len().div_ceil(group)];
    cvs.par_chunks_mut(GROUPS_PER_TASK)
        .zip(data.par_chunks(GROUPS_PER_TASK * group))
        .enumerate()
        .for_each(|(task, (out, bytes))| {
            let start = (task * GROUPS_PER_TASK * group) as u64;
            for (i, (cv, chunk)) in out.iter_mut().zip(bytes.chunks(group)).enumerate() {
                *cv = group_cv(start + (i * group) as u64, chunk);
            }
            progress(bytes.len() as u64);
        });
    finish(size, vec![cvs])
}

fn segment_cvs(start: u64, bytes: &[u8]) -> Vec<blake3::Hash> {
    bytes
        .chunks(GROUP_SIZE as usize)
        .enumerate()
        .map(|(i, group)| group_cv(start + i as u64 * GROUP_SIZE, group))
        .collect()
}

/// Merges the chaining values of all groups into the post-order outboard.
fn finish(size: u64, per_segment: Vec<Vec<blake3::Hash>>) -> io::Result<(Hash, Vec<u8>)> {
    let mut leaves = per_segment.into_iter().flatten();
    let tree = tree(size);
    let mut outboard = Vec::with_capacity(tree.outboard_size() as usize);
    let mut stack: Vec<blake3::Hash> = Vec::with_capacity(64);
    for item in tree.post_order_chunks_iter() {
        match item {
            BaoChunk::Leaf { .. } => {
                stack.push(
                    leaves
                        .next()
                        .ok_or_else(|| io::Error::other("tree has more leaves than data"))?,
                );
            }
            BaoChunk::Parent { is_root, .. } => {
                let (Some(right), Some(left)) = (stack.pop(), stack.pop()) else {
                    return Err(io::Error::other("unbalanced bao tree"));
                };
                outboard.extend_from_slice(left.as_bytes());
                outboard.extend_from_slice(right.as_bytes());
                stack.push(parent_cv(&left, &right, is_root));
            }
        }
    }
    let root = stack
        .pop()
        .ok_or_else(|| io::Error::other("empty bao tree"))?;
    Ok((root.into(), outboard))
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PostOrderMemOutboard;
    use proptest::prelude::*;

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn matches_bao_tree_and_blake3_at_boundaries() {
        for len in [
            0,
            1,
            1024,
            16384,
            16385,
            32768,
            100_000,
            1 << 20,
            (1 << 20) + 1,
            3 << 20,
        ] {
            let bytes = data(len);
            let (hash, ob) = compute(&bytes.as_slice(), len as u64, &|_| {}).unwrap();
            assert_eq!(hash, Hash::of(&bytes), "root of {len}");
            let reference = PostOrderMemOutboard::create(&bytes, BLOCK_SIZE);
            assert_eq!(ob, reference.data, "outboard of {len}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_bao_tree_for_any_size(len in 0usize..300_000) {
            let bytes = data(len);
            let (hash, ob) = compute(&bytes.as_slice(), len as u64, &|_| {}).unwrap();
            prop_assert_eq!(hash, Hash::of(&bytes));
            prop_assert_eq!(ob, PostOrderMemOutboard::create(&bytes, BLOCK_SIZE).data);
        }
    }
}
