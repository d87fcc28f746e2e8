//! spore's content store: blobs addressed by their BLAKE3 hash, each with a
//! bao outboard so that any range can be read verified, partial blobs that
//! downloads fill in any order, and collections (directory manifests).
//!
//! Invariant: no byte leaves the store unverified. Reads hash every 16 KiB
//! chunk group against the outboard, whose nodes are checked against the root
//! hash; a mismatch is an error, never data. The store never panics on what it
//! reads from disk or from peers.

pub mod backend;
mod blob;
mod error;
mod ingest;
pub mod outboard;
mod partial;
mod read_behind;
mod record;
mod storage;
mod store;
pub mod verify;
#[cfg(target_os = "linux")]
mod write_behind;

/// Re-exported so callers can build range requests without naming bao-tree.
pub use bao_tree::{ChunkNum, ChunkRanges};
pub use blob::Blob;
pub use error::StoreError;
pub use ingest::{IngestError, Ingested};
pub use partial::PartialBlob;
pub use record::{BlobRecord, BlobState, ExternalFile, Location, Tag};
pub use storage::Storage;
pub use store::{Added, Exported, ImportMode, Progress, Removed, Store, Verified};
