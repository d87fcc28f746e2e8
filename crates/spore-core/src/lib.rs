//! Shared vocabulary of spore: content ids, tickets, collection manifests,
//! sanitised relative paths and chunk-group bitfields.
//!
//! This crate does no I/O and knows nothing of tokio or libp2p, so every other
//! crate can depend on it cheaply. Everything that parses untrusted bytes here
//! returns a typed error and never panics.

pub mod bitfield;
pub mod collection;
pub mod hash;
pub mod path;
pub mod ticket;

pub use bitfield::{Bitfield, BitfieldError};
pub use collection::{Collection, CollectionEntry, CollectionError, MODE_MASK};
pub use hash::{Hash, HashParseError};
pub use path::{PathError, RelativePath};
pub use ticket::{ContentKind, ContentRefError, ProviderHint, Ticket, TicketError};

/// BLAKE3 hashes 1 KiB chunks; bao-tree groups `2^GROUP_LOG` chunks into one
/// verifiable unit.
pub const CHUNK_GROUP_LOG: u8 = 4;

/// Size of a chunk group, the unit of verification: 16 KiB.
pub const GROUP_SIZE: u64 = 1024 << CHUNK_GROUP_LOG;

/// Number of chunk groups a blob of `size` bytes has (an empty blob has one, empty, group).
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_SIZE).max(1)
}
