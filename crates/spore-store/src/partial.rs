//! Partial blobs: the target of a download.
//!
//! Data arrives as bao-encoded ranges and is verified group by group before a
//! byte is written (`ingest.rs`). Writes are positional, in any order. The set
//! of verified groups is kept in memory and persisted by
//! [`PartialBlob::flush`] only after the data and outboard files are synced,
//! so after a crash the persisted bitfield never claims a group whose bytes
//! are not on disk.
//!
//! A download flushes every second. Syncing a second of data takes the disk
//! a good part of a second, so [`PartialBlob::flush_in_background`] does it
//! on a thread of its own while verified groups go on being written; writing
//! and syncing in turn left the disk idle half the time.
//!
//! Once synced, the data's pages leave the page cache. Kept, they would only
//! pile up (a download is written once and read back by peers soon, or
//! never), and the next second's writes would need fresh pages, which cost
//! far more than pages just freed: on the benchmark's VM a fresh page is also
//! faulted in by the hypervisor. Dropping them cut the receiving node's system
//! CPU by a third (docs/benchmarks.md, 2026-12-03). Downloads of 16 MiB or
//! more skip the page cache altogether (`write_behind.rs`); the drop is for
//! the rest, and for what `O_DIRECT` cannot take.

use std::{sync::Arc, thread::JoinHandle};

use bao_tree::io::outboard::PostOrderOutboard;
use spore_core::{Bitfield, ContentKind, GROUP_SIZE, Hash, group_count};

use crate::{
    Blob, BlobRecord, BlobState, Location, StoreError, backend::Backend, storage::Storage,
};

/// A blob being downloaded.
#[derive(Debug)]
pub struct PartialBlob {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) record: BlobRecord,
    pub(crate) data: Storage,
    pub(crate) outboard: PostOrderOutboard<Storage>,
    pub(crate) verified: Bitfield,
    pub(crate) dirty: bool,
    /// The flush running on its own thread, if any: at most one at a time,
    /// so bitfields are persisted in the order they were taken.
    pub(crate) flushing: Option<JoinHandle<Result<(), StoreError>>>,
}

impl PartialBlob {
    pub fn hash(&self) -> Hash {
        self.record.hash
    }

    pub fn size(&self) -> u64 {
        self.record.size
    }

    /// Verified chunk groups, including those not yet flushed.
    pub fn verified(&self) -> &Bitfield {
        &self.verified
    }

    pub fn is_complete(&self) -> bool {
        self.verified.is_complete()
    }

    /// Makes the verified groups durable: data and outboard first, then the
    /// bitfield. Waits for a flush running in the background first.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.wait_for_flush()?;
        match self.take_flush() {
            Some(flush) => flush.run(),
            None => Ok(()),
        }
    }

    /// Starts making the groups verified so far durable on a thread of its
    /// own, and returns at once. If the previous background flush is still
    /// running, nothing starts (the next call catches up); if it failed, its
    /// error is returned now.
    pub fn flush_in_background(&mut self) -> Result<(), StoreError> {
        if self.flushing.as_ref().is_some_and(|f| !f.is_finished()) {
            return Ok(());
        }
        self.wait_for_flush()?;
        if let Some(flush) = self.take_flush() {
            let hash = self.record.hash;
            let thread = std::thread::Builder::new()
                .name("spore-flush".into())
                .spawn(move || flush.run())
                .map_err(StoreError::io(format!("starting to sync {hash}")))?;
            self.flushing = Some(thread);
        }
        Ok(())
    }

    /// Waits for the background flush, if one runs, and returns its result.
    fn wait_for_flush(&mut self) -> Result<(), StoreError> {
        match self.flushing.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }

    /// What a flush of the groups verified now must sync and persist, or
    /// `None` if nothing changed since the last one.
    fn take_flush(&mut self) -> Option<Flush> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut record = self.record.clone();
        record.state = BlobState::Partial(self.verified.clone());
        Some(Flush {
            backend: self.backend.clone(),
            record,
            data: self.data.clone(),
            outboard: self.outboard.data.clone(),
        })
    }

    /// A reader over what is verified so far (unflushed groups included: their
    /// bytes are written, and reads verify them again anyway).
    pub fn reader(&self) -> Blob {
        Blob {
            hash: self.record.hash,
            kind: self.record.kind,
            data: self.data.clone(),
            outboard: self.outboard.clone(),
            available: if self.is_complete() {
                None
            } else {
                Some(self.verified.clone())
            },
        }
    }

    /// Marks the download complete once every group is verified.
    pub fn finish(mut self) -> Result<Blob, StoreError> {
        if !self.is_complete() {
            let missing = self.verified.zeros_ranges().next().unwrap_or(0..0);
            return Err(StoreError::NotAvailable {
                hash: self.record.hash,
                range: missing.start * GROUP_SIZE..(missing.end * GROUP_SIZE).min(self.size()),
            });
        }
        self.dirty = true;
        self.flush()?;
        self.record.state = BlobState::Complete;
        self.backend.put(&self.record)?;
        Ok(self.reader())
    }

    pub(crate) fn new_record(hash: Hash, size: u64, kind: ContentKind) -> BlobRecord {
        BlobRecord {
            hash,
            size,
            kind,
            state: BlobState::Partial(Bitfield::new(group_count(size))),
            location: Location::Owned,
            tag: None,
        }
    }
}

impl Drop for PartialBlob {
    /// Waits for a background flush: whoever removes or reopens the blob
    /// next must not see its bitfield persisted behind their back.
    fn drop(&mut self) {
        if let Err(e) = self.wait_for_flush() {
            tracing::warn!(hash = %self.record.hash, "flushing a download: {e}");
        }
    }
}

/// One flush of a partial blob: what it syncs, then the record it persists.
struct Flush {
    backend: Arc<dyn Backend>,
    record: BlobRecord,
    data: Storage,
    outboard: Storage,
}

impl Flush {
    fn run(self) -> Result<(), StoreError> {
        let what = format!("syncing {}", self.record.hash);
        self.data.sync().map_err(StoreError::io(&what))?;
        self.data.drop_cached();
        self.outboard.sync().map_err(StoreError::io(&what))?;
        self.backend.put(&self.record)
    }
}
