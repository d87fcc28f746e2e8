use std::{io, ops::Range, path::PathBuf};

use spore_core::{CollectionError, Hash, PathError};

use crate::verify::VerifyError;

/// Everything a store operation can fail with, each variant carrying what a
/// user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not in the store")]
    NotFound(Hash),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("store database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("{hash} is broken and will not be served: {reason}")]
    Broken { hash: Hash, reason: String },
    #[error("{hash} failed verification")]
    Corrupt {
        hash: Hash,
        #[source]
        source: VerifyError,
    },
    #[error("{path} changed while it was being added; add it again once it is stable")]
    ChangedDuringImport { path: PathBuf },
    #[error("bytes {}..{} of {hash} are not downloaded yet", range.start, range.end)]
    NotAvailable { hash: Hash, range: Range<u64> },
    #[error("range {}..{} is outside {hash}, which has {size} bytes", range.start, range.end)]
    RangeOutOfBounds {
        hash: Hash,
        range: Range<u64>,
        size: u64,
    },
    #[error("{0} is not a collection")]
    NotACollection(Hash),
    #[error("collection {hash} is not valid")]
    Collection {
        hash: Hash,
        #[source]
        source: CollectionError,
    },
    #[error("{path} has an unusable name")]
    BadPath {
        path: PathBuf,
        #[source]
        source: PathError,
    },
    #[error("{path} is neither a regular file nor a directory")]
    UnsupportedFileType { path: PathBuf },
    #[error("{0} exists already; choose another destination or remove it first")]
    DestinationExists(PathBuf),
    #[error("{0} is complete already")]
    AlreadyComplete(Hash),
    #[error("{0} is a symbolic link inside the destination; refusing to write through it")]
    SymlinkInDestination(PathBuf),
    #[error("{hash} is a {size}-byte blob, not a partial download of {expected} bytes")]
    SizeMismatch {
        hash: Hash,
        size: u64,
        expected: u64,
    },
}

impl StoreError {
    /// Wraps an I/O error with what was being done, e.g. "reading /x/y".
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }

    /// True when the disk is full (for our files or for the database);
    /// callers may want to say so prominently.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::StorageFull,
            StoreError::Database(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }
}
