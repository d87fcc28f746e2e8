//! The composed libp2p behaviour of a spore node and the code that builds
//! its Swarm (transports, identity, protocol configs).
//!
//! This is configuration only: it must never spawn tasks or hold state of its
//! own beyond what the sub-behaviours keep. The swarm actor (`actor.rs`) is
//! the only code that drives it.

use std::time::Duration;

use libp2p::{
    StreamProtocol, Swarm, allow_block_list, autonat, connection_limits, dcutr, identify,
    identity::Keypair,
    kad, mdns, noise, ping, quic, relay, rendezvous,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp,
};

use crate::{
    batched_io::Batched,
    config::NetConfig,
    head_start::HeadStart,
    ip_limit,
    kad_guard::GuardedKad,
    muxer::Yamux,
    store::{Limits, ProviderStore},
    tls,
};

/// Kademlia protocol id: our own, never the IPFS default, so spore's DHT is
/// not merged with the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/spore/kad/1.0.0");
/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/spore/1.0.0";
/// Rendezvous namespace every spore node registers under.
pub const RENDEZVOUS_NAMESPACE: &str = "/spore";
/// Relay v2 hop protocol, used to spot relay servers in identify info.
pub const RELAY_HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// Largest Kademlia message accepted; larger ones close the stream.
pub const KAD_MAX_PACKET: usize = 16 * 1024;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    // Bans and limits first: they deny connections before other behaviours
    // spend anything on them.
    pub(crate) bans: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) ip_limits: ip_limit::Behaviour,
    pub(crate) known_addrs: crate::known_addrs::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    /// Kademlia, with malformed inbound messages reported (see kad_guard.rs).
    pub(crate) kad: GuardedKad,
    pub(crate) mdns: Toggle<crate::mdns::Mdns>,
    pub(crate) rendezvous: rendezvous::client::Behaviour,
    pub(crate) rendezvous_server: Toggle<rendezvous::server::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat_client: autonat::v2::client::Behaviour,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// Why a swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("transport setup failed: {0}")]
    Transport(String),
    #[error("mDNS could not start: {0}")]
    Mdns(std::io::Error),
}

fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    cfg: &NetConfig,
) -> Result<Behaviour, BuildError> {
    let peer_id = key.public().to_peer_id();

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
        .with_max_pending_incoming(Some(cfg.max_pending_incoming));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
            .with_agent_version(format!("spore/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true)
            .with_cache_size(256),
    );

    let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
    kad_cfg
        .set_query_timeout(cfg.query_timeout())
        .set_max_packet_size(KAD_MAX_PACKET)
        .set_provider_publication_interval(
            cfg.provider_publication_interval_secs
                .map(Duration::from_secs),
        )
        .set_provider_record_ttl(cfg.provider_record_ttl_secs.map(Duration::from_secs))
        // The actor refreshes the routing table itself (`actor::Bootstrap`).
        .set_periodic_bootstrap_interval(None);
    let store = ProviderStore::new(
        peer_id,
        Limits {
            max_local_keys: cfg.max_local_provided_keys,
            max_remote_keys: cfg.max_remote_provider_keys,
            max_providers_per_key: cfg.max_providers_per_key,
            max_records: 1024,
            max_value_bytes: KAD_MAX_PACKET,
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
    // Without a forced mode the swarm task switches it (see
    // `update_kad_mode` in actor.rs): libp2p's automatic switch would also
    // serve behind a relay circuit.
    kad.set_mode(Some(match cfg.kad_server_mode {
        Some(true) => kad::Mode::Server,
        Some(false) | None => kad::Mode::Client,
    }));

    let mdns = if cfg.mdns {
        Some(crate::mdns::Mdns::new(mdns::Config::default(), peer_id).map_err(BuildError::Mdns)?)
    } else {
        None
    };

    let rendezvous_server = cfg.rendezvous_server.then(|| {
        rendezvous::server::Behaviour::new(
            rendezvous::server::Config::default().with_max_registration_per_peer(4),
        )
    });
    let relay_server = cfg
        .relay_server
        .then(|| relay::Behaviour::new(peer_id, relay::Config::default()));
    let autonat_server = cfg
        .autonat_server
        .then(autonat::v2::server::Behaviour::default);

    Ok(Behaviour {
        bans: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        ip_limits: ip_limit::Behaviour::new(cfg.max_connections_per_ip),
        known_addrs: Default::default(),
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        kad: GuardedKad::new(kad),
        mdns: mdns.into(),
        rendezvous: rendezvous::client::Behaviour::new(key.clone()),
        rendezvous_server: rendezvous_server.into(),
        relay_client,
        relay_server: relay_server.into(),
        dcutr: dcutr::Behaviour::new(peer_id),
        autonat_client: autonat::v2::client::Behaviour::default(),
        autonat_server: autonat_server.into(),
        stream: libp2p_stream::Behaviour::new(),
    })
}

/// Builds the swarm: TCP (our TLS upgrade, which prefers AES-GCM, offered
/// before Noise; then Yamux), QUIC (its dials give TCP a head start), DNS, the relay client transport (same
/// security choice), and the behaviour above.
pub(crate) fn build_swarm(key: Keypair, cfg: &NetConfig) -> Result<Swarm<Behaviour>, BuildError> {
    let idle = Duration::from_secs(cfg.idle_connection_timeout_secs.max(1));
    let t = |e: &dyn std::fmt::Display| BuildError::Transport(e.to_string());
    // The behaviour constructor cannot return our error type through the
    // builder, so a failure is parked here and returned after.
    let mut failure = None;
    let mut make = |key: &Keypair,
                    relay: relay::client::Behaviour|
     -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
        match behaviour(key, relay, cfg) {
            Ok(b) => Ok(b),
            Err(e) => {
                let msg = e.to_string();
                failure = Some(e);
                Err(msg.into())
            }
        }
    };
    let tcp_cfg = tcp::Config::default().nodelay(true);
    let result = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp_cfg,
            (
                |key: &Keypair| tls::Config::new(key).map(Batched),
                noise::Config::new,
            ),
            Yamux::default,
        )
        .map_err(|e| t(&e))?
        .with_other_transport(|key| {
            HeadStart::new(
                quic::tokio::Transport::new(quic::Config::new(key)),
                Duration::from_millis(cfg.quic_dial_delay_ms),
            )
        })
        .map_err(|e| t(&e))?
        .with_dns()
        .map_err(|e| t(&e))?
        .with_relay_client((tls::Config::new, noise::Config::new), Yamux::default)
        .map_err(|e| t(&e))?
        .with_behaviour(|key, relay| make(key, relay));
    let swarm = match result {
        Ok(b) => b
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Err(e) => return Err(failure.take().unwrap_or_else(|| t(&e))),
    };
    Ok(swarm)
}
