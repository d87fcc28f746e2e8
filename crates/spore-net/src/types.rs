//! Plain data the handle returns and the events the node broadcasts.
//!
//! These types carry libp2p's `PeerId` and `Multiaddr` (re-exported by the
//! crate) but nothing else from libp2p, so callers stay libp2p-free. They
//! must stay cheap to clone and hold no handles to the swarm.

use std::{collections::BTreeMap, time::Duration};

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The transport under a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Tcp,
    Quic,
    /// A relay v2 circuit.
    Relay,
    Other,
}

impl TransportKind {
    pub fn of(addr: &Multiaddr) -> Self {
        use libp2p::multiaddr::Protocol;
        let mut kind = TransportKind::Other;
        for p in addr.iter() {
            match p {
                Protocol::P2pCircuit => return TransportKind::Relay,
                Protocol::QuicV1 | Protocol::Quic => kind = TransportKind::Quic,
                Protocol::Tcp(_) if kind == TransportKind::Other => kind = TransportKind::Tcp,
                _ => {}
            }
        }
        kind
    }
}

/// Whether others can dial us, as far as AutoNAT and confirmed addresses tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// No test has finished yet.
    Unknown,
    /// At least one external address is confirmed.
    Public,
    /// Tests failed and no external address is confirmed.
    Private,
}

/// One open connection to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The remote address of this connection.
    #[serde(serialize_with = "ser_display")]
    pub remote_addr: Multiaddr,
    pub direction: Direction,
    pub transport: TransportKind,
}

/// A connected peer as we see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    pub connections: Vec<ConnectionInfo>,
    /// Addresses the peer says it listens on (identify).
    #[serde(serialize_with = "ser_display_vec")]
    pub listen_addrs: Vec<Multiaddr>,
    /// Protocols the peer supports (identify).
    pub protocols: Vec<String>,
    pub agent_version: Option<String>,
    /// Last ping round trip.
    pub latency: Option<Duration>,
}

/// A summary of the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetStatus {
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    #[serde(serialize_with = "ser_display_vec")]
    pub listen_addrs: Vec<Multiaddr>,
    #[serde(serialize_with = "ser_display_vec")]
    pub external_addrs: Vec<Multiaddr>,
    pub connected_peers: usize,
    pub connections: usize,
    pub routing_table_size: usize,
    pub reachability: Reachability,
    /// Kademlia answers queries (server mode) rather than only asking.
    pub kad_server_mode: bool,
    /// Keys we announce as a provider.
    pub provided_keys: usize,
    /// Keys we remember providers for, for other peers.
    pub remote_provider_keys: usize,
    pub address_book_size: usize,
    /// Failed connection attempts since start, by direction and cause
    /// (`"outgoing: refused"`, `"incoming: denied by limits"`, …). The
    /// causes are a fixed set, so the map stays small.
    pub connection_errors: BTreeMap<String, u64>,
    /// Connections established since start, both directions (with
    /// `connections`, how much a node churns its connections).
    pub connections_opened: u64,
    /// Kademlia requests sent since start to join and to refresh the
    /// routing table (bootstraps), as opposed to lookups for content.
    pub routing_requests: u64,
    /// Malformed or oversized protocol messages received since start.
    pub malformed_messages: u64,
    /// Peers with a misbehaviour score (see `penalty.rs`).
    pub penalised_peers: usize,
    /// Peers banned right now.
    pub banned_peers: usize,
}

/// A peer that provides some content, and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    #[serde(serialize_with = "ser_display_vec")]
    pub addrs: Vec<Multiaddr>,
}

/// How a provider lookup went (for benchmarks and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    /// Kademlia requests sent before the first provider was known.
    pub requests_to_first: Option<u32>,
    /// Time until the first provider was known.
    pub time_to_first: Option<Duration>,
    /// Kademlia requests sent in total.
    pub requests: u32,
    /// Time until the lookup answered.
    pub elapsed: Duration,
    /// Requests that were answered.
    pub successes: u32,
    /// Requests that failed: the peer could not be dialled, refused or
    /// reset the stream, or did not answer within Kademlia's request timeout.
    pub failures: u32,
    /// Peers in our routing table when the lookup started.
    pub routing_table_size: u32,
    /// Why the lookup stopped.
    pub end: LookupEnd,
}

/// Why a provider lookup stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupEnd {
    /// As many providers as asked for were found.
    #[default]
    FoundEnough,
    /// The query ran out of closer peers to ask (it converged, or every
    /// candidate failed).
    Exhausted,
    /// Kademlia's own query timeout ended it.
    QueryTimeout,
    /// The caller's deadline ended it.
    Deadline,
}

/// Providers found by a lookup, with its statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderLookup {
    pub providers: Vec<Provider>,
    pub stats: LookupStats,
    /// When the query finished on its own: the closest peers to the key it
    /// got answers from (at most k), closest first. Empty otherwise.
    #[serde(serialize_with = "ser_display_vec")]
    pub closest_peers: Vec<PeerId>,
}

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoverySource {
    Mdns,
    Rendezvous,
}

/// Something happened in the network layer. Broadcast on a bounded channel:
/// a subscriber that falls behind misses the oldest events (and is told so
/// by `RecvError::Lagged`), it never slows the swarm down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    PeerConnected {
        peer_id: PeerId,
        remote_addr: Multiaddr,
        direction: Direction,
    },
    /// The last connection to the peer closed.
    PeerDisconnected {
        peer_id: PeerId,
    },
    /// Identify told us what the peer supports.
    PeerIdentified {
        peer_id: PeerId,
        protocols: Vec<String>,
    },
    NewListenAddr(Multiaddr),
    ExpiredListenAddr(Multiaddr),
    ExternalAddrConfirmed(Multiaddr),
    ReachabilityChanged(Reachability),
    PeerDiscovered {
        peer_id: PeerId,
        source: DiscoverySource,
    },
    /// DCUtR turned a relayed connection to the peer into a direct one.
    HolePunchSucceeded {
        peer_id: PeerId,
    },
    /// The peer sent something our protocols reject: it was disconnected
    /// and its misbehaviour score went up; at the threshold it is banned
    /// (its connections are denied until the ban ends).
    PeerPenalised {
        peer_id: PeerId,
        reason: String,
        banned: bool,
    },
    /// DCUtR could not; the relayed connection stays in use.
    HolePunchFailed {
        peer_id: PeerId,
        reason: String,
    },
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_display_vec<T: std::fmt::Display, S: serde::Serializer>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_kind_from_address() {
        let p = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert_eq!(
            TransportKind::of(&p("/ip4/1.2.3.4/tcp/1")),
            TransportKind::Tcp
        );
        assert_eq!(
            TransportKind::of(&p("/ip4/1.2.3.4/udp/1/quic-v1")),
            TransportKind::Quic
        );
        assert_eq!(
            TransportKind::of(&p(
                "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            )),
            TransportKind::Relay
        );
    }
}
