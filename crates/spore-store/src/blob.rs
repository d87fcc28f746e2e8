//! A readable blob: verified range reads, and the bao encoding peers receive.

use std::{io::Write, ops::Range};

use bao_tree::{ChunkRanges, io::outboard::PostOrderOutboard};
use spore_core::{Bitfield, ContentKind, GROUP_SIZE, Hash};

use crate::{StoreError, outboard, read_behind::ReadBehind, storage::Storage, verify};

/// A handle for reading one blob. Every byte it hands out has been verified
/// against the blob's hash on the way out.
#[derive(Debug, Clone)]
pub struct Blob {
    pub(crate) hash: Hash,
    pub(crate) kind: ContentKind,
    pub(crate) data: Storage,
    pub(crate) outboard: PostOrderOutboard<Storage>,
    /// `None` when complete; otherwise the chunk groups that may be read.
    pub(crate) available: Option<Bitfield>,
}

impl Blob {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.outboard.tree.size()
    }

    pub fn kind(&self) -> ContentKind {
        self.kind
    }

    pub fn is_complete(&self) -> bool {
        self.available.is_none()
    }

    /// Chunk groups that can be read (all of them when complete).
    pub fn available(&self) -> Bitfield {
        self.available
            .clone()
            .unwrap_or_else(|| Bitfield::full(spore_core::group_count(self.size())))
    }

    fn check_range(&self, range: &Range<u64>) -> Result<(), StoreError> {
        if range.start > range.end || range.end > self.size() {
            return Err(StoreError::RangeOutOfBounds {
                hash: self.hash,
                range: range.clone(),
                size: self.size(),
            });
        }
        if let Some(available) = &self.available
            && range.start < range.end
            && !available.all_set(range.start / GROUP_SIZE..range.end.div_ceil(GROUP_SIZE))
        {
            return Err(StoreError::NotAvailable {
                hash: self.hash,
                range: range.clone(),
            });
        }
        Ok(())
    }

    /// Calls `sink(offset, bytes)` with the verified bytes of `range`, in order.
    pub fn read_with(
        &self,
        range: Range<u64>,
        sink: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        self.check_range(&range)?;
        let outboard = self.outboard_for_one_walk();
        verify::read_verified(&self.data, &outboard, range, sink).map_err(|source| match source {
            verify::VerifyError::Io(e) => StoreError::io(format!("reading {}", self.hash))(e),
            source => StoreError::Corrupt {
                hash: self.hash,
                source,
            },
        })
    }

    /// Writes the verified bytes of `range` to `out`.
    pub fn read_into(&self, range: Range<u64>, out: &mut impl Write) -> Result<u64, StoreError> {
        let mut written = 0;
        self.read_with(range, |_, bytes| {
            written += bytes.len() as u64;
            out.write_all(bytes)
        })?;
        Ok(written)
    }

    pub fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity((range.end.saturating_sub(range.start)) as usize);
        self.read_into(range, &mut out)?;
        Ok(out)
    }

    pub fn read_all(&self) -> Result<Vec<u8>, StoreError> {
        self.read_range(0..self.size())
    }

    /// The outboard, read in blocks for the length of one walk over a range.
    fn outboard_for_one_walk(&self) -> PostOrderOutboard<ReadBehind<&Storage>> {
        outboard::view(self.hash, self.size(), ReadBehind::new(&self.outboard.data))
    }

    /// Writes the bao encoding of `ranges` (parents and chunk groups, in pre
    /// order) to `out`, validating everything against the hash as it goes:
    /// this is what a peer receives and checks with [`crate::PartialBlob::ingest`].
    pub fn encode(&self, ranges: &ChunkRanges, out: impl Write) -> Result<(), StoreError> {
        let outboard = self.outboard_for_one_walk();
        bao_tree::io::sync::encode_ranges_validated(&self.data, &outboard, ranges, out).map_err(
            |e| {
                StoreError::io(format!("encoding {}", self.hash))(std::io::Error::other(
                    e.to_string(),
                ))
            },
        )
    }
}
