//! `NetConfig`: every knob of the networking layer, as a plain serde struct.
//!
//! spore-node fills it from TOML and command-line flags; tests build it in
//! code with [`NetConfig::for_tests`]. This module only describes settings: it
//! must never open sockets or files.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Default port for TCP and QUIC (both use the same number).
pub const DEFAULT_PORT: u16 = 5322;

/// Settings of one node's networking.
///
/// Durations are whole seconds so the TOML form stays readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Address to bind; `0.0.0.0` (all interfaces) by default, `127.0.0.1` in tests.
    pub listen_ip: IpAddr,
    /// Port for both TCP and QUIC; 0 picks a free port (TCP and QUIC then differ).
    pub listen_port: u16,
    /// Listen on TCP.
    pub tcp: bool,
    /// Listen on QUIC (UDP).
    pub quic: bool,
    /// How long a QUIC dial waits before it starts, so that TCP to the same
    /// peer wins where it works (bulk data moves faster over TCP here; see
    /// `head_start.rs`). 0 lets both race from the start.
    pub quic_dial_delay_ms: u64,
    /// More addresses to listen on, verbatim.
    #[serde(with = "multiaddrs")]
    pub extra_listen_addrs: Vec<Multiaddr>,
    /// Addresses known to be reachable from outside (e.g. a forwarded port).
    #[serde(with = "multiaddrs")]
    pub external_addrs: Vec<Multiaddr>,
    /// Treat our own listen addresses as reachable (a LAN or a test on
    /// 127.0.0.1). Without it only AutoNAT or `external_addrs` confirm addresses.
    pub advertise_listen_addrs: bool,
    /// Peers dialled at start; addresses should end in `/p2p/<peer id>`.
    #[serde(with = "multiaddrs")]
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network by mDNS.
    pub mdns: bool,
    /// Serve rendezvous registrations (namespace `/spore`) for other peers.
    pub rendezvous_server: bool,
    /// Rendezvous servers to register at and discover from (`.../p2p/<id>`).
    #[serde(with = "multiaddrs")]
    pub rendezvous_points: Vec<Multiaddr>,
    /// How often to re-register and re-discover at rendezvous points.
    pub rendezvous_interval_secs: u64,
    /// Relay circuits for other peers (relay v2 server).
    pub relay_server: bool,
    /// When AutoNAT says we are private, listen through relays we are connected to.
    pub auto_relay: bool,
    /// Answer AutoNAT v2 dial-back requests of other peers.
    pub autonat_server: bool,
    /// Force Kademlia server (`Some(true)`) or client (`Some(false)`) mode;
    /// `None` lets libp2p switch to server once an external address is confirmed.
    pub kad_server_mode: Option<bool>,
    /// Upper bound of every Kademlia query. Provider lookups also end at
    /// their caller's deadline; a provider announcement stores its record
    /// on other nodes only if its closest-peers phase ends within this.
    pub kad_query_timeout_secs: u64,
    /// How often Kademlia itself republishes our provider records (`None`: never).
    pub provider_publication_interval_secs: Option<u64>,
    /// First wait before a provider announcement that reached no other node
    /// (empty routing table, or a timeout) is tried again; it doubles on
    /// each failure, up to 30 min.
    pub provide_retry_secs: u64,
    /// How long other peers keep our provider records (`None`: forever).
    pub provider_record_ttl_secs: Option<u64>,
    /// Keys we provide ourselves (local content); see `store.rs`.
    pub max_local_provided_keys: usize,
    /// Keys other peers asked us to remember providers for.
    pub max_remote_provider_keys: usize,
    /// Providers remembered per key.
    pub max_providers_per_key: usize,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Established inbound connections per remote IP (`None`: no limit).
    pub max_connections_per_ip: Option<u32>,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// A connection with no protocol in use closes after this long.
    pub idle_connection_timeout_secs: u64,
    /// Ed25519 key file (created 0600 if missing); `None`: a fresh key each start.
    pub identity_file: Option<PathBuf>,
    /// Address book file (peers we talked to); `None`: not persisted.
    pub address_book_file: Option<PathBuf>,
    /// Peers kept in the address book.
    pub address_book_capacity: usize,
    /// Address-book peers redialled at start.
    pub redial_on_start: usize,
    /// Capacity of the handle's command queue.
    pub command_queue: usize,
    /// Capacity of the event broadcast; slow subscribers miss the oldest events.
    pub event_queue: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::from([0, 0, 0, 0]),
            listen_port: DEFAULT_PORT,
            tcp: true,
            quic: true,
            quic_dial_delay_ms: 500,
            extra_listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            advertise_listen_addrs: false,
            bootstrap: Vec::new(),
            mdns: true,
            rendezvous_server: false,
            rendezvous_points: Vec::new(),
            rendezvous_interval_secs: 60,
            relay_server: false,
            auto_relay: true,
            autonat_server: true,
            kad_server_mode: None,
            kad_query_timeout_secs: 30,
            provide_retry_secs: 15,
            provider_publication_interval_secs: Some(12 * 3600),
            provider_record_ttl_secs: Some(48 * 3600),
            max_local_provided_keys: 4_000_000,
            max_remote_provider_keys: 200_000,
            max_providers_per_key: 32,
            max_connections: 512,
            max_connections_per_peer: 4,
            max_connections_per_ip: Some(16),
            max_pending_incoming: 64,
            idle_connection_timeout_secs: 60,
            identity_file: None,
            address_book_file: None,
            address_book_capacity: 512,
            redial_on_start: 32,
            command_queue: 256,
            event_queue: 1024,
        }
    }
}

impl NetConfig {
    /// A node on 127.0.0.1 with a random port, no mDNS, Kademlia in server
    /// mode, listen addresses advertised and no per-IP limit (every test peer
    /// shares one IP). Files are off; set them for persistence tests.
    pub fn for_tests() -> Self {
        Self {
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            listen_port: 0,
            quic: false,
            mdns: false,
            advertise_listen_addrs: true,
            kad_server_mode: Some(true),
            kad_query_timeout_secs: 10,
            provide_retry_secs: 1,
            max_connections_per_ip: None,
            autonat_server: false,
            auto_relay: false,
            ..Self::default()
        }
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.kad_query_timeout_secs.max(1))
    }
}

/// `Vec<Multiaddr>` as a list of strings, so TOML reads `["/ip4/…/tcp/…"]`.
mod multiaddrs {
    use libp2p::Multiaddr;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    pub(super) fn serialize<S: Serializer>(v: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for a in v {
            seq.serialize_element(&a.to_string())?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| {
                s.parse::<Multiaddr>()
                    .map_err(|e| D::Error::custom(format!("bad multiaddr {s:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs_round_trip_through_postcard_and_strings() {
        let cfg = NetConfig {
            bootstrap: vec![
                "/ip4/1.2.3.4/tcp/5/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                    .parse()
                    .unwrap(),
            ],
            ..NetConfig::default()
        };
        let bytes = postcard::to_allocvec(&cfg).unwrap();
        let back: NetConfig = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cfg);
    }
}
