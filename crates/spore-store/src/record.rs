//! What the store knows about each blob, independent of where it is kept.

use std::path::PathBuf;

use spore_core::{Bitfield, ContentKind, Hash};

/// Everything the store records about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub hash: Hash,
    pub size: u64,
    /// `Collection` when the blob is a manifest that was added or fetched as one.
    pub kind: ContentKind,
    pub state: BlobState,
    pub location: Location,
    /// Set when the user added this blob (a root of garbage collection).
    pub tag: Option<Tag>,
}

/// How far along a blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobState {
    /// Every chunk group is present and verified.
    Complete,
    /// Being downloaded: the bitfield says which chunk groups are durable and verified.
    Partial(Bitfield),
    /// The bytes no longer match the hash (an in-place file changed); never served.
    Broken(String),
}

impl BlobState {
    pub fn name(&self) -> &'static str {
        match self {
            BlobState::Complete => "complete",
            BlobState::Partial(_) => "partial",
            BlobState::Broken(_) => "broken",
        }
    }
}

/// Where the data bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In the store's own files (copied in, downloaded, or small).
    Owned,
    /// In the user's file, referenced in place.
    External(ExternalFile),
}

/// A file referenced in place, with what identified it when it was added, so a
/// change is noticed before its bytes are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl ExternalFile {
    pub fn from_metadata(path: PathBuf, meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            path,
            len: meta.len(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }

    /// True when `meta` describes the same, unchanged file.
    pub fn matches(&self, meta: &std::fs::Metadata) -> bool {
        Self::from_metadata(self.path.clone(), meta) == *self
    }
}

/// The user's name for something they added, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub added_at: i64,
}

impl Tag {
    pub fn now(name: impl Into<String>) -> Self {
        let added_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self {
            name: name.into(),
            added_at,
        }
    }
}
