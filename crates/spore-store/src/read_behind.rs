//! Fewer reads of a post-order outboard while a range is encoded or read.
//!
//! Serving a range loads one 64-byte parent per chunk group, each with a
//! system call of its own: about half the seed's `pread`s on the 2 GiB
//! loopback benchmark. In post order a node's descendants lie just before
//! it, and a walk in pre order (what bao encodes and what verification
//! follows) visits a node before its descendants. So [`ReadBehind`] answers
//! a miss with the block that *ends* at the bytes asked for: the subtree
//! below a node comes in with it, and the walk through that subtree is
//! answered from memory. The ancestors above a range cost a read each, as
//! before. Meant to live for one walk: a block is never read again, so it
//! must not outlive a change to what it caches.

use std::{cell::RefCell, collections::VecDeque, io};

use positioned_io::ReadAt;

/// Bytes read on a miss: 64 parents, the subtree of 32 chunk groups.
const BLOCK: u64 = 4096;
/// Blocks kept, most recent first: one per level of a path from the root
/// to a range in blobs up to 2^16 groups of 16 KiB (1 TiB), and then some.
const BLOCKS: usize = 24;

/// A [`ReadAt`] over an outboard (`inner`) that reads it in blocks of
/// [`BLOCK`] bytes ending at the first byte it lacks.
#[derive(Debug)]
pub(crate) struct ReadBehind<R> {
    inner: R,
    blocks: RefCell<VecDeque<Block>>,
}

#[derive(Debug)]
struct Block {
    start: u64,
    bytes: Vec<u8>,
}

impl<R: ReadAt> ReadBehind<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            blocks: RefCell::new(VecDeque::with_capacity(BLOCKS)),
        }
    }
}

impl<R: ReadAt> ReadAt for ReadBehind<R> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if len > BLOCK {
            return self.inner.read_at(pos, buf);
        }
        let end = pos.saturating_add(len);
        let mut blocks = self.blocks.borrow_mut();
        let hit = blocks
            .iter()
            .find(|b| b.start <= pos && end <= b.start + b.bytes.len() as u64);
        if let Some(block) = hit {
            let at = (pos - block.start) as usize;
            buf.copy_from_slice(&block.bytes[at..at + buf.len()]);
            return Ok(buf.len());
        }
        let start = end.saturating_sub(BLOCK);
        let mut bytes = vec![0u8; (end - start) as usize];
        if self.inner.read_exact_at(start, &mut bytes).is_err() {
            // Past the end, say: leave the answer (a short read) to `inner`.
            return self.inner.read_at(pos, buf);
        }
        buf.copy_from_slice(&bytes[(pos - start) as usize..]);
        if blocks.len() == BLOCKS {
            blocks.pop_back();
        }
        blocks.push_front(Block { start, bytes });
        Ok(buf.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::Cell;

    use bao_tree::io::sync::encode_ranges_validated;
    use proptest::prelude::*;
    use spore_core::{GROUP_SIZE, Hash};

    use super::*;
    use crate::{outboard, verify::group_aligned_chunks};

    /// Counts the reads that reach it.
    struct Counting<'a> {
        bytes: &'a [u8],
        reads: Cell<usize>,
    }

    impl ReadAt for Counting<'_> {
        fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            self.bytes.read_at(pos, buf)
        }
    }

    fn blob(groups: u64) -> (Vec<u8>, Hash, Vec<u8>) {
        let size = groups * GROUP_SIZE - 1000;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 7001) as u8).collect();
        let (hash, ob) = outboard::compute(&data.as_slice(), size, &|_| {}).unwrap();
        (data, hash, ob)
    }

    fn encode(data: &[u8], hash: Hash, ob: impl ReadAt, groups: std::ops::Range<u64>) -> Vec<u8> {
        let outboard = outboard::view(hash, data.len() as u64, ob);
        let chunks = group_aligned_chunks(groups.start * GROUP_SIZE..groups.end * GROUP_SIZE);
        let mut out = Vec::new();
        encode_ranges_validated(data, &outboard, &chunks, &mut out).unwrap();
        out
    }

    #[test]
    fn a_piece_costs_a_read_per_ancestor_not_per_group() {
        let (data, hash, ob) = blob(4096);
        let direct = Counting {
            bytes: &ob,
            reads: Cell::new(0),
        };
        let plain = encode(&data, hash, &direct, 1024..1088);
        let through = Counting {
            bytes: &ob,
            reads: Cell::new(0),
        };
        let cached = encode(&data, hash, ReadBehind::new(&through), 1024..1088);
        assert_eq!(cached, plain);
        // 63 parents inside the piece and 6 above it.
        assert_eq!(direct.reads.get(), 69);
        // At most one per ancestor and one for the piece's subtree.
        assert!(through.reads.get() <= 7, "{} reads", through.reads.get());
    }

    #[test]
    fn reads_past_the_end_are_answered_as_the_inner_reader_does() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let cached = ReadBehind::new(bytes.as_slice());
        let mut buf = [0u8; 64];
        assert_eq!(cached.read_at(60, &mut buf).unwrap(), 40);
        assert_eq!(&buf[..40], &bytes[60..]);
        assert_eq!(cached.read_at(200, &mut buf).unwrap(), 0);
        assert_eq!(cached.read_at(36, &mut buf).unwrap(), 64);
        assert_eq!(&buf[..], &bytes[36..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever is asked, in whatever order, the answers are the bytes.
        #[test]
        fn every_answer_is_the_bytes_at_that_place(
            reads in prop::collection::vec((0u64..20_000, 0usize..5000), 1..200),
        ) {
            let bytes: Vec<u8> = (0..16_000u32).map(|i| (i * 13 + i / 251) as u8).collect();
            let cached = ReadBehind::new(bytes.as_slice());
            for (pos, len) in reads {
                let mut got = vec![0u8; len];
                let mut want = vec![0u8; len];
                let n = cached.read_at(pos, &mut got).unwrap();
                let m = bytes.as_slice().read_at(pos, &mut want).unwrap();
                prop_assert_eq!(&got[..n], &want[..m]);
            }
        }

        /// Encoding any range through it gives what bao-tree gives without it.
        #[test]
        fn encodings_are_unchanged(groups in 1u64..300, a in 0u64..300, len in 1u64..80) {
            let (data, hash, ob) = blob(groups);
            let start = a % groups;
            let end = (start + len).min(groups);
            let plain = encode(&data, hash, ob.as_slice(), start..end);
            let cached = encode(&data, hash, ReadBehind::new(ob.as_slice()), start..end);
            prop_assert_eq!(cached, plain);
        }
    }
}
