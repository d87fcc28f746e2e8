//! Verified reads: bytes leave the store only after their chunk group has been
//! hashed and checked against the outboard, whose nodes are in turn checked
//! against the root hash on the way down.

use std::ops::Range;

use bao_tree::{ChunkNum, ChunkRanges, io::sync::Outboard, iter::BaoChunk};
use positioned_io::ReadAt;
use spore_core::GROUP_SIZE;

use crate::outboard::{leaf_hash, parent_cv};

/// What went wrong while reading verified bytes.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The data bytes of a chunk group do not hash to what the tree says.
    #[error("chunk group at byte {offset} does not match its hash")]
    Data { offset: u64 },
    /// An outboard node does not hash to its parent: the outboard is damaged.
    #[error("outboard node covering bytes {start}.. does not match its parent")]
    Outboard { start: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Chunk ranges covering whole chunk groups that contain `bytes`.
pub fn group_aligned_chunks(bytes: Range<u64>) -> ChunkRanges {
    let start = bytes.start / GROUP_SIZE * (GROUP_SIZE / 1024);
    let end = bytes.end.div_ceil(GROUP_SIZE) * (GROUP_SIZE / 1024);
    ChunkRanges::from(ChunkNum(start)..ChunkNum(end))
}

/// Reads `range` of a blob, calling `sink(offset, bytes)` with verified bytes
/// in order. Stops at the first group or node that fails verification, so the
/// sink never sees a wrong byte. `range` must lie within the blob.
pub fn read_verified(
    data: &impl ReadAt,
    outboard: &impl Outboard,
    range: Range<u64>,
    mut sink: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> Result<(), VerifyError> {
    let tree = outboard.tree();
    debug_assert!(range.end <= tree.size());
    if range.start >= range.end {
        return Ok(());
    }
    let chunks = group_aligned_chunks(range.clone());
    let mut stack = vec![outboard.root()];
    let mut buf = vec![0u8; GROUP_SIZE as usize];
    for item in tree.ranges_pre_order_chunks_iter_ref(&chunks, 0) {
        match item {
            BaoChunk::Parent {
                is_root,
                left,
                right,
                node,
                ..
            } => {
                let start = node.chunk_range().start.to_bytes();
                let (l, r) = outboard
                    .load(node)?
                    .ok_or(VerifyError::Outboard { start })?;
                if stack.pop() != Some(parent_cv(&l, &r, is_root)) {
                    return Err(VerifyError::Outboard { start });
                }
                if right {
                    stack.push(r);
                }
                if left {
                    stack.push(l);
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                size,
                is_root,
                ..
            } => {
                let offset = start_chunk.to_bytes();
                let group = &mut buf[..size];
                data.read_exact_at(offset, group)?;
                if stack.pop() != Some(leaf_hash(offset, &[group], is_root)) {
                    return Err(VerifyError::Data { offset });
                }
                let from = range.start.max(offset);
                let to = range.end.min(offset + size as u64);
                if from < to {
                    sink(
                        from,
                        &group[(from - offset) as usize..(to - offset) as usize],
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PostOrderMemOutboard;
    use proptest::prelude::*;

    use super::*;
    use crate::outboard::BLOCK_SIZE;

    fn blob(len: usize) -> (Vec<u8>, PostOrderMemOutboard) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let ob = PostOrderMemOutboard::create(&data, BLOCK_SIZE);
        (data, ob)
    }

    fn read(
        data: &[u8],
        ob: &PostOrderMemOutboard,
        range: Range<u64>,
    ) -> Result<Vec<u8>, VerifyError> {
        let mut out = Vec::new();
        let mut next = range.start;
        read_verified(&data, ob, range, |offset, bytes| {
            assert_eq!(offset, next, "sink sees bytes in order");
            next += bytes.len() as u64;
            out.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_range_reads_back_the_source(len in 0usize..200_000, a in any::<u64>(), b in any::<u64>()) {
            let (data, ob) = blob(len);
            let (s, e) = ((a % (len as u64 + 1)), (b % (len as u64 + 1)));
            let range = s.min(e)..s.max(e);
            prop_assert_eq!(read(&data, &ob, range.clone()).unwrap(), &data[range.start as usize..range.end as usize]);
        }

        #[test]
        fn any_flipped_data_byte_is_detected(len in 1usize..100_000, at in any::<usize>(), bit in 0u8..8) {
            let (mut data, ob) = blob(len);
            let at = at % len;
            data[at] ^= 1 << bit;
            let err = read(&data, &ob, 0..len as u64).unwrap_err();
            let is_data_error = matches!(err, VerifyError::Data { offset } if offset == at as u64 / GROUP_SIZE * GROUP_SIZE);
            prop_assert!(is_data_error);
            // a range that avoids the damaged group still reads
            let group_start = at as u64 / GROUP_SIZE * GROUP_SIZE;
            if group_start > 0 {
                prop_assert!(read(&data, &ob, 0..group_start).is_ok());
            }
        }

        #[test]
        fn any_flipped_outboard_byte_is_detected(len in (GROUP_SIZE as usize + 1)..150_000, at in any::<usize>(), bit in 0u8..8) {
            let (data, mut ob) = blob(len);
            let at = at % ob.data.len();
            ob.data[at] ^= 1 << bit;
            prop_assert!(read(&data, &ob, 0..len as u64).is_err());
        }
    }
}
