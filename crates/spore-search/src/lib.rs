//! spore-search: keyword search for spore.
//!
//! - [`index`]: the local full-text index (SQLite FTS5) of everything a
//!   node shares: blobs, collections, the files inside collections, and the
//!   user's tags and descriptions.
//! - The network protocol `/spore/search/1` (spec: docs/protocol.md) as pure
//!   logic: [`words`] (the one keyword rule), [`query`], [`record`] (signed
//!   results), [`wire`] (the codec, with its limits), [`filter`] (keyword
//!   Bloom filters exchanged by neighbours, Gnutella QRP style, over several
//!   hops), [`router`] (duplicate cache, forwarding, rate limits, penalties,
//!   results routed back), [`dynamic`] (widening a search until enough
//!   results), [`results`] (merging by content id), [`dht`] (signed keyword
//!   records for the DHT keyword index).
//! - [`sim`]: many routers in one process, for tests and the benchmark.
//!
//! This crate must never do network I/O or read a clock: the node
//! (spore-node's `search` module) drives it over libp2p streams and passes
//! `now` in. It does not depend on libp2p: publishers are Ed25519 keys.

pub mod dht;
pub mod dynamic;
pub mod filter;
#[cfg(feature = "index")]
pub mod index;
pub mod limits;
pub mod query;
pub mod record;
pub mod results;
pub mod router;
pub mod sim;
pub mod wire;
pub mod words;

pub use query::{DEFAULT_HOPS, Filters, MAX_HOPS, Query, QueryError, QueryId, parse_size};
pub use record::{ItemKind, Media, RecordBody, RecordSigner, SignedRecord};
pub use router::{Action, Offence, Router, RouterConfig, Strategy};
pub use wire::{MAX_FRAME, Message, PROTOCOL, WireError};
