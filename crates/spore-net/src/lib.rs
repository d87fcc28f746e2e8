//! spore-net: the only crate of spore that knows libp2p.
//!
//! One task owns the libp2p Swarm ([`NetNode::start`]); everything else talks
//! to it through a cloneable [`NetHandle`] (bounded command queue, a oneshot
//! reply per command, a timeout on every call) and listens to [`NetEvent`]s
//! on a bounded broadcast. The swarm speaks TCP (TLS preferring AES-GCM, then Noise; Yamux) and
//! QUIC, identify, ping, Kademlia on `/spore/kad/1.0.0`, mDNS, rendezvous,
//! relay v2, DCUtR, AutoNAT v2, and raw streams (libp2p-stream) for bulk data.
//!
//! This crate must never let a peer crash or stall the node: every queue is
//! bounded, every query has a deadline, and nothing parsed from the network
//! is unwrapped. Callers need not depend on libp2p: [`PeerId`],
//! [`Multiaddr`] and [`Stream`] are re-exported here.

mod actor;
pub mod address_book;
mod batched_io;
mod behaviour;
pub mod config;
mod handle;
mod head_start;
pub mod hint;
pub mod identity;
pub mod ip_limit;
mod kad_guard;
mod known_addrs;
mod lan;
mod mdns;
pub mod multi_value;
mod muxer;
pub mod penalty;
mod reannounce;
pub mod store;
mod tls;
mod types;

pub use behaviour::{
    BuildError, IDENTIFY_PROTOCOL_VERSION, KAD_MAX_PACKET, KAD_PROTOCOL, RELAY_HOP_PROTOCOL,
    RENDEZVOUS_NAMESPACE,
};
pub use config::{DEFAULT_PORT, NetConfig};
pub use handle::{
    FIND_PROVIDERS_LIMIT, FIND_PROVIDERS_TIMEOUT, IncomingStreams, NetError, NetHandle, NetNode,
    StartError,
};
pub use hint::{HintError, from_hint, to_hint};
pub use identity::{NodeSigner, peer_id_from_ed25519, verify_by_peer};
pub use libp2p::{Multiaddr, PeerId, Stream, multiaddr};
pub use tokio_util::sync::CancellationToken;
pub use types::{
    ConnectionInfo, Direction, DiscoverySource, LookupEnd, LookupStats, NetEvent, NetStatus,
    PeerInfo, Provider, ProviderLookup, Reachability, TransportKind,
};
