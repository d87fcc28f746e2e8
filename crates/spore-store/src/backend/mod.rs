//! Where records and owned bytes are kept. Two backends implement one trait:
//! [`FsBackend`] (SQLite and files under the store directory, the real one)
//! and [`MemBackend`] (plain maps, for tests). Everything above this trait,
//! import, verified reads, partial downloads, garbage collection, is written
//! once in [`crate::Store`].

mod fs;
mod mem;

use std::{fmt::Debug, path::Path};

pub use fs::FsBackend;
pub use mem::MemBackend;
use spore_core::Hash;

use crate::{BlobRecord, StoreError, storage::Storage};

/// The two byte streams kept per blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Data,
    Outboard,
}

/// Bytes written aside by a backend, not yet visible under any hash.
#[derive(Debug)]
pub struct Staged {
    pub storage: Storage,
    /// Dropping it removes the staged file (a no-op for memory).
    pub(crate) file: Option<tempfile::TempPath>,
}

/// Storage of records and owned bytes.
pub trait Backend: Send + Sync + Debug + 'static {
    fn get(&self, hash: &Hash) -> Result<Option<BlobRecord>, StoreError>;
    /// Inserts or replaces the record. Owned bytes it refers to must already be durable.
    fn put(&self, record: &BlobRecord) -> Result<(), StoreError>;
    fn list(&self) -> Result<Vec<BlobRecord>, StoreError>;
    /// Deletes the record, then its owned bytes.
    fn delete(&self, hash: &Hash) -> Result<(), StoreError>;

    /// Opens owned bytes of a blob; `create` makes them (empty) when missing.
    fn open(&self, hash: &Hash, part: Part, create: bool) -> Result<Storage, StoreError>;
    /// Opens (creating it if missing) the data of a download of `size` bytes.
    fn open_download(&self, hash: &Hash, _size: u64) -> Result<Storage, StoreError> {
        self.open(hash, Part::Data, true)
    }
    /// Copies a user's file aside, to be hashed and then committed.
    fn stage_file(&self, source: &Path) -> Result<Staged, StoreError>;
    /// Puts bytes aside, to be hashed and then committed.
    fn stage_bytes(&self, bytes: &[u8]) -> Result<Staged, StoreError>;
    /// Makes staged bytes the durable data of `hash`.
    fn commit_data(&self, staged: Staged, hash: &Hash) -> Result<(), StoreError>;
    /// Durably replaces the outboard of `hash`.
    fn write_outboard(&self, hash: &Hash, outboard: &[u8]) -> Result<(), StoreError>;
}
