//! The swarm task: the one place that owns and drives the libp2p Swarm.
//!
//! It serves commands from `NetHandle`s (each with a oneshot reply), reacts
//! to swarm events (discovery, identify → routing table, address book,
//! AutoNAT reachability, auto-relay), and on cancellation saves the address
//! book, closes connections and returns. It must never block for long (no
//! awaits inside event handlers), never panic on what peers send, and never
//! keep an unbounded queue: pending requests are keyed by query or connection
//! id and expire with their deadlines.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    allow_block_list::Blocked,
    core::transport::TransportError,
    core::{ConnectedPoint, Endpoint, transport::ListenerId},
    identity::Keypair,
    kad::{self, QueryId, QueryResult, RecordKey},
    multiaddr::Protocol,
    rendezvous,
    swarm::{
        ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use spore_core::Hash;
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

use crate::{
    address_book::AddressBook,
    behaviour::{
        Behaviour, BehaviourEvent, KAD_PROTOCOL, RELAY_HOP_PROTOCOL, RENDEZVOUS_NAMESPACE,
        build_swarm,
    },
    config::NetConfig,
    handle::{NetError, StartError},
    ip_limit::{TooManyFromIp, ip_of},
    kad_guard,
    lan::LanDialer,
    penalty::{Penalties, PenaltyPolicy},
    reannounce::Reannounce,
    types::{
        ConnectionInfo, Direction, DiscoverySource, LookupEnd, LookupStats, NetEvent, NetStatus,
        PeerInfo, Provider, ProviderLookup, Reachability, TransportKind,
    },
};

/// Identify data we keep per peer is capped, whatever the peer sends.
const MAX_PEER_ADDRS: usize = 16;
const MAX_PEER_PROTOCOLS: usize = 64;
const TICK: Duration = Duration::from_millis(500);
const BOOK_SAVE_EVERY: Duration = Duration::from_secs(30);
/// Relays we listen through at most, when private.
const MAX_RELAYS: usize = 2;
/// Registrations asked for per rendezvous discover.
const RENDEZVOUS_LIMIT: u64 = 200;
/// How long shutdown waits for connections to close cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest wait between two tries of an announcement that reached nobody.
const MAX_PROVIDE_RETRY: Duration = Duration::from_secs(30 * 60);
/// Announcements waiting for another try; more are left to the republish.
const MAX_REANNOUNCE: usize = 4096;
/// How often the whole routing table is refreshed (libp2p's own default for
/// its periodic bootstrap, which spore runs itself: see [`Bootstrap`]).
const ROUTING_REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

type Reply<T> = oneshot::Sender<T>;

/// How much of the routing table a Kademlia bootstrap fills.
///
/// libp2p-kad's bootstrap looks up our own id, then one random id in every
/// bucket farther than our closest neighbour's: ~190 requests and ~160 new
/// connections per node in a 500-node join, where the lookup of our own id
/// alone sends ~20 and finds lookups just as well (`dht_sim`). libp2p-kad
/// 0.49 also starts a full bootstrap by itself whenever a peer enters a
/// routing table of fewer than 20 entries, and its switch for that is not
/// public, so the actor cuts every bootstrap it did not start as a
/// [`Bootstrap::Refresh`] after its first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bootstrap {
    /// Our own id only: finds our neighbourhood (joining, a small table).
    Join,
    /// Our own id, then every farther bucket: run every
    /// [`ROUTING_REFRESH_EVERY`], as libp2p's periodic bootstrap would.
    Refresh,
}

/// What a `NetHandle` can ask of the swarm task.
pub(crate) enum Command {
    Status(Reply<NetStatus>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    ExternalAddrs(Reply<Vec<Multiaddr>>),
    AddExternalAddr {
        addr: Multiaddr,
        tx: Reply<()>,
    },
    Peers(Reply<Vec<PeerInfo>>),
    ListenOn {
        addr: Multiaddr,
        deadline: Instant,
        tx: Reply<Result<Multiaddr, NetError>>,
    },
    Dial {
        addr: Multiaddr,
        tx: Reply<Result<PeerId, NetError>>,
    },
    DialPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        tx: Reply<Result<(), NetError>>,
    },
    AddPeerAddrs {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        tx: Reply<()>,
    },
    Disconnect {
        peer: PeerId,
        tx: Reply<Result<(), NetError>>,
    },
    StartProviding {
        hash: Hash,
        tx: Reply<Result<(), NetError>>,
    },
    StopProviding {
        hash: Hash,
        tx: Reply<()>,
    },
    StoredProviders {
        hash: Hash,
        tx: Reply<Vec<PeerId>>,
    },
    FindProviders {
        hash: Hash,
        limit: usize,
        timeout: Duration,
        tx: Reply<Result<ProviderLookup, NetError>>,
    },
    Bootstrap {
        scope: Bootstrap,
        tx: Reply<Result<(), NetError>>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        tx: Reply<Result<(), NetError>>,
    },
    GetRecord {
        key: Vec<u8>,
        timeout: Duration,
        tx: Reply<Result<Vec<Vec<u8>>, NetError>>,
    },
}

pub(crate) struct Started {
    pub(crate) task: JoinHandle<()>,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) ready: oneshot::Receiver<()>,
}

enum PendingQuery {
    StartProviding {
        hash: Hash,
        /// `None` for a retry the actor started by itself.
        tx: Option<Reply<Result<(), NetError>>>,
    },
    Providers {
        tx: Option<Reply<Result<ProviderLookup, NetError>>>,
        found: Vec<Provider>,
        seen: HashSet<PeerId>,
        limit: usize,
        started: Instant,
        deadline: Instant,
        stats: LookupStats,
    },
    /// A bootstrap spore started. libp2p-kad starts others by itself (when a
    /// peer enters a routing table of fewer than 20 entries); those are not
    /// here and count as [`Bootstrap::Join`].
    Bootstrap {
        scope: Bootstrap,
        tx: Option<Reply<Result<(), NetError>>>,
    },
    PutRecord {
        tx: Reply<Result<(), NetError>>,
    },
    GetRecord {
        tx: Option<Reply<Result<Vec<Vec<u8>>, NetError>>>,
        /// Raw values found (each a whole record value), deduplicated.
        values: Vec<Vec<u8>>,
        deadline: Instant,
    },
}

/// Values collected by one record lookup, at most.
const MAX_RECORD_VALUES: usize = 64;

enum PendingDial {
    Addr(Reply<Result<PeerId, NetError>>),
    Peer(Reply<Result<(), NetError>>),
}

#[derive(Default)]
struct PeerState {
    conns: HashMap<ConnectionId, ConnectionInfo>,
    listen_addrs: Vec<Multiaddr>,
    protocols: Vec<String>,
    agent_version: Option<String>,
    latency: Option<Duration>,
}

struct Actor {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    events: broadcast::Sender<NetEvent>,
    cancel: CancellationToken,
    ready: Option<oneshot::Sender<()>>,
    awaiting_listeners: HashSet<ListenerId>,
    /// Every listener we opened, so shutdown can close them.
    listeners: HashSet<ListenerId>,
    listen_addrs: Vec<Multiaddr>,
    peers: HashMap<PeerId, PeerState>,
    book: AddressBook,
    last_book_save: Instant,
    dials: HashMap<ConnectionId, PendingDial>,
    queries: HashMap<QueryId, PendingQuery>,
    bootstrap_peers: HashSet<PeerId>,
    bootstrapped: bool,
    rendezvous_points: Vec<(PeerId, Multiaddr)>,
    rendezvous_cookies: HashMap<PeerId, rendezvous::Cookie>,
    last_rendezvous: Instant,
    reachability: Reachability,
    relay_listeners: HashMap<PeerId, ListenerId>,
    /// `listen_on` calls waiting for their listener's first address (for a
    /// relay circuit: for the reservation). One per call, each with a deadline.
    pending_listens: HashMap<ListenerId, (Instant, Reply<Result<Multiaddr, NetError>>)>,
    lan: LanDialer,
    /// Failed connection attempts by cause (see [`dial_error_cause`]).
    connection_errors: HashMap<&'static str, u64>,
    connections_opened: u64,
    routing_requests: u64,
    /// Misbehaviour scores; banned peers are blocked in `bans`.
    penalties: Penalties,
    /// Provider announcements that reached no other node, tried again.
    reannounce: Reannounce,
    next_routing_refresh: Instant,
}

/// Copies Kademlia's request counters into our lookup statistics.
fn record_query_stats(lookup: &mut LookupStats, kad: &kad::QueryStats) {
    lookup.requests = kad.num_requests();
    lookup.successes = kad.num_successes();
    lookup.failures = kad.num_failures();
}

/// A short, fixed label for why a dial failed (counted in the status).
fn dial_error_cause(error: &DialError) -> &'static str {
    match error {
        DialError::LocalPeerId { .. } => "outgoing: local peer id",
        DialError::NoAddresses => "outgoing: no addresses",
        DialError::DialPeerConditionFalse(_) => "outgoing: already dialling",
        DialError::Aborted => "outgoing: aborted",
        DialError::WrongPeerId { .. } => "outgoing: wrong peer id",
        DialError::Denied { cause } if cause.downcast_ref::<TooManyFromIp>().is_some() => {
            "outgoing: denied by per-IP limit"
        }
        DialError::Denied { cause } if cause.downcast_ref::<Blocked>().is_some() => {
            "outgoing: peer banned"
        }
        DialError::Denied { .. } => "outgoing: denied by limits",
        DialError::Transport(errors) => {
            let io_kind = errors.iter().find_map(|(_, e)| match e {
                TransportError::Other(io) => Some(io.kind()),
                TransportError::MultiaddrNotSupported(_) => None,
            });
            match io_kind {
                Some(std::io::ErrorKind::ConnectionRefused) => "outgoing: refused",
                Some(std::io::ErrorKind::TimedOut) => "outgoing: timed out",
                Some(_) => "outgoing: transport or handshake error",
                None => "outgoing: address not supported",
            }
        }
    }
}

/// A short, fixed label for why an inbound connection failed.
fn listen_error_cause(error: &ListenError) -> &'static str {
    match error {
        ListenError::Aborted => "incoming: aborted",
        ListenError::WrongPeerId { .. } => "incoming: wrong peer id",
        ListenError::LocalPeerId { .. } => "incoming: local peer id",
        ListenError::Denied { cause } if cause.downcast_ref::<TooManyFromIp>().is_some() => {
            "incoming: denied by per-IP limit"
        }
        ListenError::Denied { cause } if cause.downcast_ref::<Blocked>().is_some() => {
            "incoming: peer banned"
        }
        ListenError::Denied { .. } => "incoming: denied by limits",
        ListenError::Transport(_) => "incoming: transport or handshake error",
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The peer an address leads to: its trailing `/p2p/<id>`. A relayed address
/// (`…/p2p/<relay>/p2p-circuit/p2p/<target>`) names the relay first, so the
/// first `/p2p` is the wrong one to take.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// `addr` without its trailing `/p2p/<id>`. Inner ones stay: in a relayed
/// address they name the relay, and the address is useless without it.
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut out = addr.clone();
    if matches!(out.iter().last(), Some(Protocol::P2p(_))) {
        out.pop();
    }
    out
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_unspecified())
}

fn is_loopback(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip: IpAddr| ip.is_loopback())
}

fn listen_addrs_of(cfg: &NetConfig) -> Vec<Multiaddr> {
    let ip: Multiaddr = match cfg.listen_ip {
        IpAddr::V4(ip) => Multiaddr::empty().with(Protocol::Ip4(ip)),
        IpAddr::V6(ip) => Multiaddr::empty().with(Protocol::Ip6(ip)),
    };
    let mut out = Vec::new();
    if cfg.tcp {
        out.push(ip.clone().with(Protocol::Tcp(cfg.listen_port)));
    }
    if cfg.quic {
        out.push(
            ip.with(Protocol::Udp(cfg.listen_port))
                .with(Protocol::QuicV1),
        );
    }
    out.extend(cfg.extra_listen_addrs.iter().cloned());
    out
}

pub(crate) fn start(
    key: Keypair,
    config: NetConfig,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NetEvent>,
    cancel: CancellationToken,
) -> Result<Started, StartError> {
    let mut swarm = build_swarm(key, &config)?;
    let control = swarm.behaviour().stream.new_control();
    let mut awaiting_listeners = HashSet::new();
    for addr in listen_addrs_of(&config) {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| StartError::Listen {
                addr,
                reason: e.to_string(),
            })?;
        awaiting_listeners.insert(id);
    }
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    let book = match &config.address_book_file {
        Some(path) => AddressBook::load(path, config.address_book_capacity),
        None => AddressBook::new(config.address_book_capacity),
    };
    let rendezvous_points = config
        .rendezvous_points
        .iter()
        .filter_map(|a| match peer_of(a) {
            Some(p) => Some((p, a.clone())),
            None => {
                tracing::warn!(addr = %a, "rendezvous point has no /p2p/<peer id>; ignored");
                None
            }
        })
        .collect();
    let (ready_tx, ready) = oneshot::channel();
    // With no listener there is no address to wait for.
    let ready_tx = if awaiting_listeners.is_empty() {
        let _ = ready_tx.send(());
        None
    } else {
        Some(ready_tx)
    };
    let now = Instant::now();
    let provide_retry_secs = config.provide_retry_secs;
    let actor = Actor {
        swarm,
        config,
        commands,
        commands_open: true,
        events,
        cancel,
        ready: ready_tx,
        listeners: awaiting_listeners.clone(),
        awaiting_listeners,
        listen_addrs: Vec::new(),
        peers: HashMap::new(),
        book,
        last_book_save: now,
        dials: HashMap::new(),
        queries: HashMap::new(),
        bootstrap_peers: HashSet::new(),
        bootstrapped: false,
        rendezvous_points,
        rendezvous_cookies: HashMap::new(),
        last_rendezvous: now,
        reachability: Reachability::Unknown,
        relay_listeners: HashMap::new(),
        pending_listens: HashMap::new(),
        lan: LanDialer::default(),
        connection_errors: HashMap::new(),
        connections_opened: 0,
        routing_requests: 0,
        penalties: Penalties::new(PenaltyPolicy::default()),
        reannounce: Reannounce::new(
            Duration::from_secs(provide_retry_secs.max(1)),
            MAX_PROVIDE_RETRY,
            MAX_REANNOUNCE,
        ),
        next_routing_refresh: Instant::now() + ROUTING_REFRESH_EVERY,
    };
    let task = tokio::spawn(actor.run());
    Ok(Started {
        task,
        control,
        ready,
    })
}

impl Actor {
    async fn run(mut self) {
        self.on_start();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Local work before remote work, and cancellation before both.
                biased;
                _ = self.cancel.cancelled() => break,
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.commands_open = false,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.close().await;
    }

    fn emit(&self, event: NetEvent) {
        // No subscriber is fine; a lagging one loses old events.
        let _ = self.events.send(event);
    }

    fn on_start(&mut self) {
        // `start` added the configured external addresses before we ran.
        if self.has_direct_external_addr() {
            self.set_reachability(Reachability::Public);
        }
        self.update_kad_mode();
        let kad_known: Vec<_> = self.book.most_recent(self.config.redial_on_start);
        for (peer, addrs) in kad_known {
            for a in &addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
            self.swarm
                .behaviour_mut()
                .known_addrs
                .add(peer, addrs.iter().cloned());
            self.bootstrap_peers.insert(peer);
            self.dial_known(peer, addrs);
        }
        for addr in self.config.bootstrap.clone() {
            match peer_of(&addr) {
                Some(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, without_p2p(&addr));
                    self.bootstrap_peers.insert(peer);
                    self.dial_known(peer, vec![without_p2p(&addr)]);
                }
                None => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        tracing::warn!(%addr, error = %e, "cannot dial bootstrap address");
                    }
                }
            }
        }
        for (peer, addr) in self.rendezvous_points.clone() {
            self.dial_known(peer, vec![without_p2p(&addr)]);
        }
    }

    fn bootstrap(&mut self, scope: Bootstrap, tx: Option<Reply<Result<(), NetError>>>) {
        match self.swarm.behaviour_mut().kad.bootstrap() {
            Ok(id) => {
                self.queries
                    .insert(id, PendingQuery::Bootstrap { scope, tx });
            }
            Err(_) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(NetError::NoKnownPeers));
                }
            }
        }
    }

    fn dial_known(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial not started");
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Provider lookups past their deadline answer with what they have.
        let expired: Vec<QueryId> = self
            .queries
            .iter()
            .filter_map(|(id, q)| match q {
                PendingQuery::Providers { deadline, .. } if *deadline <= now => Some(*id),
                PendingQuery::GetRecord { deadline, .. } if *deadline <= now => Some(*id),
                _ => None,
            })
            .collect();
        for id in expired {
            if matches!(self.queries.get(&id), Some(PendingQuery::GetRecord { .. })) {
                self.finish_get_record(id);
            } else {
                self.finish_providers(id, LookupEnd::Deadline, Vec::new());
            }
        }
        let overdue: Vec<ListenerId> = self
            .pending_listens
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some((_, tx)) = self.pending_listens.remove(&id) {
                // The caller gave up; the listener is closed so it does not
                // linger half-made (a relay may still be thinking).
                self.swarm.remove_listener(id);
                let _ = tx.send(Err(NetError::Listen(
                    "no address before the deadline".into(),
                )));
            }
        }
        let interval = Duration::from_secs(self.config.rendezvous_interval_secs.max(1));
        if !self.rendezvous_points.is_empty()
            && now.duration_since(self.last_rendezvous) >= interval
        {
            self.last_rendezvous = now;
            self.rendezvous_refresh();
        }
        self.dial_lan_peers();
        if now >= self.next_routing_refresh {
            self.next_routing_refresh = now + ROUTING_REFRESH_EVERY;
            self.bootstrap(Bootstrap::Refresh, None);
        }
        for hash in self.reannounce.take_due(now) {
            self.announce(hash, None);
        }
        for peer in self.penalties.lift_expired(now) {
            tracing::info!(%peer, "ban ended");
            self.swarm.behaviour_mut().bans.unblock_peer(peer);
        }
        if self.book.is_dirty() && now.duration_since(self.last_book_save) >= BOOK_SAVE_EVERY {
            self.last_book_save = now;
            self.save_book();
        }
    }

    /// Stores a provider record for `hash` and sends it to the closest
    /// peers; with an empty routing table it is only stored, and retried.
    fn announce(&mut self, hash: Hash, tx: Option<Reply<Result<(), NetError>>>) {
        let key = RecordKey::new(hash.as_bytes());
        let kad = &mut self.swarm.behaviour_mut().kad;
        let alone = kad.kbuckets().all(|b| b.num_entries() == 0);
        match kad.start_providing(key) {
            Ok(_) if alone => {
                // The query finds nobody; `reannounce` tries once peers come.
                self.reannounce.failed(hash, Instant::now());
                if let Some(tx) = tx {
                    let _ = tx.send(Err(NetError::NoKnownPeers));
                }
            }
            Ok(id) => {
                self.queries
                    .insert(id, PendingQuery::StartProviding { hash, tx });
            }
            Err(e) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(NetError::Store(e.to_string())));
                }
            }
        }
    }

    fn save_book(&mut self) {
        if let Some(path) = self.config.address_book_file.clone()
            && let Err(e) = self.book.save(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot save address book");
        }
    }

    async fn close(mut self) {
        self.save_book();
        // Pending replies are dropped here: their handles see `Shutdown`.
        self.queries.clear();
        self.dials.clear();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let listeners: Vec<ListenerId> = self.listeners.drain().collect();
        for id in listeners {
            self.swarm.remove_listener(id);
        }
        let deadline = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(deadline);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = &mut deadline => break,
                _ = self.swarm.select_next_some() => {}
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network task stopped");
    }

    // ---------------------------------------------------------------- commands

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.listen_addrs.clone());
            }
            Command::ExternalAddrs(tx) => {
                let _ = tx.send(self.swarm.external_addresses().cloned().collect());
            }
            Command::AddExternalAddr { addr, tx } => {
                self.add_external_addr(addr);
                let _ = tx.send(());
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peer_infos());
            }
            Command::Dial { addr, tx } => self.dial_addr(addr, tx),
            Command::ListenOn { addr, deadline, tx } => self.listen_on(addr, deadline, tx),
            Command::DialPeer { peer, addrs, tx } => {
                if self.swarm.is_connected(&peer) {
                    let _ = tx.send(Ok(()));
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::Always)
                    .extend_addresses_through_behaviour()
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, PendingDial::Peer(tx));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(NetError::Dial(e.to_string())));
                    }
                }
            }
            Command::AddPeerAddrs { peer, addrs, tx } => {
                self.swarm
                    .behaviour_mut()
                    .known_addrs
                    .add(peer, addrs.into_iter().take(MAX_PEER_ADDRS));
                let _ = tx.send(());
            }
            Command::Disconnect { peer, tx } => {
                let r = self
                    .swarm
                    .disconnect_peer_id(peer)
                    .map_err(|()| NetError::NotConnected(peer));
                let _ = tx.send(r);
            }
            Command::StartProviding { hash, tx } => self.announce(hash, Some(tx)),
            Command::StoredProviders { hash, tx } => {
                let key = RecordKey::new(hash.as_bytes());
                let providers = kad::store::RecordStore::providers(
                    self.swarm.behaviour_mut().kad.store_mut(),
                    &key,
                );
                let _ = tx.send(providers.into_iter().map(|p| p.provider).collect());
            }
            Command::StopProviding { hash, tx } => {
                self.reannounce.done(&hash);
                let key = RecordKey::new(hash.as_bytes());
                self.swarm.behaviour_mut().kad.stop_providing(&key);
                let _ = tx.send(());
            }
            Command::FindProviders {
                hash,
                limit,
                timeout,
                tx,
            } => {
                let key = RecordKey::new(hash.as_bytes());
                let kad = &mut self.swarm.behaviour_mut().kad;
                let table: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
                let id = kad.get_providers(key);
                self.queries.insert(
                    id,
                    PendingQuery::Providers {
                        tx: Some(tx),
                        found: Vec::new(),
                        seen: HashSet::new(),
                        limit,
                        started: Instant::now(),
                        deadline: Instant::now() + timeout,
                        stats: LookupStats {
                            routing_table_size: u32::try_from(table).unwrap_or(u32::MAX),
                            ..LookupStats::default()
                        },
                    },
                );
            }
            Command::PutRecord { key, value, tx } => {
                let record = kad::Record::new(RecordKey::new(&key), value);
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    Ok(id) => {
                        self.queries.insert(id, PendingQuery::PutRecord { tx });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(NetError::Store(e.to_string())));
                    }
                }
            }
            Command::GetRecord { key, timeout, tx } => {
                let key = RecordKey::new(&key);
                // The local store answers too (it may hold the key).
                let local =
                    kad::store::RecordStore::get(self.swarm.behaviour_mut().kad.store_mut(), &key)
                        .map(|r| r.value.clone());
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.queries.insert(
                    id,
                    PendingQuery::GetRecord {
                        tx: Some(tx),
                        values: local.into_iter().collect(),
                        deadline: Instant::now() + timeout,
                    },
                );
            }
            Command::Bootstrap { scope, tx } => self.bootstrap(scope, Some(tx)),
        }
    }

    fn listen_on(
        &mut self,
        addr: Multiaddr,
        deadline: Instant,
        tx: Reply<Result<Multiaddr, NetError>>,
    ) {
        // A circuit address names its relay just before `/p2p-circuit`.
        let relay = if TransportKind::of(&addr) == TransportKind::Relay {
            let upto: Multiaddr = addr
                .iter()
                .take_while(|p| !matches!(p, Protocol::P2pCircuit))
                .collect();
            match peer_of(&upto) {
                Some(relay) => Some(relay),
                None => {
                    let _ = tx.send(Err(NetError::Listen(
                        "a relay address needs /p2p/<relay id> before /p2p-circuit".into(),
                    )));
                    return;
                }
            }
        } else {
            None
        };
        match self.swarm.listen_on(addr) {
            Ok(id) => {
                self.listeners.insert(id);
                if let Some(relay) = relay {
                    self.relay_listeners.insert(relay, id);
                }
                self.pending_listens.insert(id, (deadline, tx));
            }
            Err(e) => {
                let _ = tx.send(Err(NetError::Listen(e.to_string())));
            }
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr, tx: Reply<Result<PeerId, NetError>>) {
        let opts = match peer_of(&addr) {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = tx.send(Ok(peer));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![without_p2p(&addr)])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, PendingDial::Addr(tx));
            }
            Err(e) => {
                let _ = tx.send(Err(NetError::Dial(e.to_string())));
            }
        }
    }

    fn status(&mut self) -> NetStatus {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let routing_table_size = kad.kbuckets().map(|b| b.num_entries()).sum();
        let kad_server_mode = kad.mode() == kad::Mode::Server;
        let provided_keys = kad.store_mut().local_keys();
        let remote_provider_keys = kad.store_mut().remote_keys();
        NetStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            connected_peers: self.peers.len(),
            connections: self.peers.values().map(|p| p.conns.len()).sum(),
            routing_table_size,
            reachability: self.reachability,
            kad_server_mode,
            provided_keys,
            remote_provider_keys,
            address_book_size: self.book.len(),
            connection_errors: self
                .connection_errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            connections_opened: self.connections_opened,
            routing_requests: self.routing_requests,
            malformed_messages: self.penalties.offences(),
            penalised_peers: self.penalties.tracked(),
            banned_peers: self.penalties.banned(Instant::now()),
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, s)| PeerInfo {
                peer_id: *peer,
                connections: s.conns.values().cloned().collect(),
                listen_addrs: s.listen_addrs.clone(),
                protocols: s.protocols.clone(),
                agent_version: s.agent_version.clone(),
                latency: s.latency,
            })
            .collect();
        out.sort_by_key(|p| p.peer_id);
        out
    }

    /// Where we believe `peer` can be dialled: identify, connections, the
    /// routing table and live queries, the address book. Deduplicated, capped.
    fn addrs_of(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        if let Some(s) = self.peers.get(peer) {
            out.extend(s.listen_addrs.iter().cloned());
            out.extend(
                s.conns
                    .values()
                    .filter(|c| c.direction == Direction::Outbound)
                    .map(|c| without_p2p(&c.remote_addr)),
            );
        }
        // Kademlia keeps addresses learned during queries private; asking it
        // as if we were about to dial is the only way to read them. It has no
        // side effects in libp2p-kad 0.49 (reads k-buckets and live queries).
        if let Ok(addrs) = self
            .swarm
            .behaviour_mut()
            .kad
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                Some(*peer),
                &[],
                Endpoint::Dialer,
            )
        {
            out.extend(addrs);
        }
        if let Some(addrs) = self.book.addrs(peer) {
            out.extend(addrs.iter().cloned());
        }
        let mut dedup: Vec<Multiaddr> = Vec::new();
        for a in out {
            let a = without_p2p(&a);
            if !a.is_empty() && !dedup.contains(&a) && dedup.len() < MAX_PEER_ADDRS {
                dedup.push(a);
            }
        }
        dedup
    }

    fn finish_get_record(&mut self, id: QueryId) {
        if let Some(PendingQuery::GetRecord { tx, values, .. }) = self.queries.get_mut(&id)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(std::mem::take(values)));
        }
        self.queries.remove(&id);
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
    }

    /// Answers a provider lookup with what it found. `closest_peers` is
    /// what Kademlia reported when the query ended on its own.
    fn finish_providers(&mut self, id: QueryId, end: LookupEnd, closest_peers: Vec<PeerId>) {
        let live = self
            .swarm
            .behaviour_mut()
            .kad
            .query(&id)
            .map(|q| *q.stats());
        if let Some(PendingQuery::Providers {
            tx,
            found,
            started,
            stats,
            ..
        }) = self.queries.get_mut(&id)
            && let Some(tx) = tx.take()
        {
            if let Some(live) = live {
                record_query_stats(stats, &live);
            }
            stats.elapsed = started.elapsed();
            stats.end = end;
            let _ = tx.send(Ok(ProviderLookup {
                providers: std::mem::take(found),
                stats: *stats,
                closest_peers,
            }));
        }
        self.queries.remove(&id);
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
    }

    // ------------------------------------------------------------ swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                if self.config.advertise_listen_addrs
                    && !is_unspecified(&address)
                    && TransportKind::of(&address) != TransportKind::Relay
                {
                    self.add_external_addr(address.clone());
                }
                if self.awaiting_listeners.remove(&listener_id)
                    && self.awaiting_listeners.is_empty()
                    && let Some(ready) = self.ready.take()
                {
                    let _ = ready.send(());
                }
                if let Some((_, tx)) = self.pending_listens.remove(&listener_id) {
                    let _ = tx.send(Ok(address.clone()));
                }
                self.emit(NetEvent::NewListenAddr(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                if self.config.advertise_listen_addrs {
                    self.swarm.remove_external_address(&address);
                    if !self.has_direct_external_addr() && self.reachability == Reachability::Public
                    {
                        self.set_reachability(Reachability::Unknown);
                    }
                    self.update_kad_mode();
                }
                self.emit(NetEvent::ExpiredListenAddr(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                tracing::debug!(?listener_id, ?reason, "listener closed");
                if let Some((_, tx)) = self.pending_listens.remove(&listener_id) {
                    let why = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = tx.send(Err(NetError::Listen(why)));
                }
                self.relay_listeners.retain(|_, id| *id != listener_id);
                self.listeners.remove(&listener_id);
                if self.awaiting_listeners.remove(&listener_id)
                    && self.awaiting_listeners.is_empty()
                    && let Some(ready) = self.ready.take()
                {
                    let _ = ready.send(());
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.connections_opened += 1;
                self.on_connected(peer_id, connection_id, &endpoint, num_established.get());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(s) = self.peers.get_mut(&peer_id) {
                    s.conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    if let Some(id) = self.relay_listeners.remove(&peer_id) {
                        self.swarm.remove_listener(id);
                    }
                    self.emit(NetEvent::PeerDisconnected { peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                *self
                    .connection_errors
                    .entry(dial_error_cause(&error))
                    .or_default() += 1;
                match self.dials.remove(&connection_id) {
                    Some(PendingDial::Addr(tx)) => {
                        let _ = tx.send(Err(NetError::Dial(error.to_string())));
                    }
                    Some(PendingDial::Peer(tx)) => {
                        let _ = tx.send(Err(NetError::Dial(error.to_string())));
                    }
                    None => {}
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
                *self
                    .connection_errors
                    .entry(listen_error_cause(&error))
                    .or_default() += 1;
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                // The relay client confirms our circuit address once a relay
                // accepts a reservation: reachable, but only through the
                // relay, so still private.
                if TransportKind::of(&address) != TransportKind::Relay {
                    self.set_reachability(Reachability::Public);
                }
                self.update_kad_mode();
                self.emit(NetEvent::ExternalAddrConfirmed(address));
            }
            SwarmEvent::ExternalAddrExpired { .. } => {
                if !self.has_direct_external_addr() && self.reachability == Reachability::Public {
                    self.set_reachability(Reachability::Unknown);
                }
                self.update_kad_mode();
            }
            _ => {}
        }
    }

    fn on_connected(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: u32,
    ) {
        self.lan.connected(&peer);
        let (remote_addr, direction) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), Direction::Outbound),
            ConnectedPoint::Listener { send_back_addr, .. } => {
                (send_back_addr.clone(), Direction::Inbound)
            }
        };
        // On the listening side of a circuit the remote address is only
        // `/p2p/<id>`; the endpoint knows it came through a relay.
        let transport = if endpoint.is_relayed() {
            TransportKind::Relay
        } else {
            TransportKind::of(&remote_addr)
        };
        let info = ConnectionInfo {
            transport,
            remote_addr: remote_addr.clone(),
            direction,
        };
        self.peers
            .entry(peer)
            .or_default()
            .conns
            .insert(connection_id, info);
        match self.dials.remove(&connection_id) {
            Some(PendingDial::Addr(tx)) => {
                let _ = tx.send(Ok(peer));
            }
            Some(PendingDial::Peer(tx)) => {
                let _ = tx.send(Ok(()));
            }
            None => {}
        }
        if num_established == 1 {
            self.emit(NetEvent::PeerConnected {
                peer_id: peer,
                remote_addr,
                direction,
            });
        }
        if !self.bootstrapped && self.bootstrap_peers.contains(&peer) {
            self.bootstrapped = true;
            // The first known peer is up: find our neighbourhood.
            self.bootstrap(Bootstrap::Join, None);
        }
        if num_established == 1 && self.rendezvous_points.iter().any(|(p, _)| *p == peer) {
            self.rendezvous_with(peer);
        }
    }

    fn rendezvous_refresh(&mut self) {
        for (peer, addr) in self.rendezvous_points.clone() {
            if self.swarm.is_connected(&peer) {
                self.rendezvous_with(peer);
            } else {
                self.dial_known(peer, vec![without_p2p(&addr)]);
            }
        }
    }

    fn rendezvous_with(&mut self, point: PeerId) {
        let ns = rendezvous::Namespace::from_static(RENDEZVOUS_NAMESPACE);
        let cookie = self.rendezvous_cookies.get(&point).cloned();
        let rv = &mut self.swarm.behaviour_mut().rendezvous;
        if let Err(e) = rv.register(ns.clone(), point, None) {
            tracing::debug!(%point, error = %e, "rendezvous registration skipped");
        }
        rv.discover(Some(ns), cookie, Some(RENDEZVOUS_LIMIT), point);
    }

    /// Adds an address we know others can dial (config, a listen address we
    /// advertise, the API). The swarm reports no event for these, so the
    /// consequences are drawn here.
    fn add_external_addr(&mut self, addr: Multiaddr) {
        let direct = TransportKind::of(&addr) != TransportKind::Relay;
        self.swarm.add_external_address(addr);
        if direct {
            self.set_reachability(Reachability::Public);
        }
        self.update_kad_mode();
    }

    /// A confirmed external address that is not a relay circuit.
    fn has_direct_external_addr(&self) -> bool {
        self.swarm
            .external_addresses()
            .any(|a| TransportKind::of(a) != TransportKind::Relay)
    }

    /// Kademlia serves only when others can dial us directly. libp2p's own
    /// switch counts any confirmed address, relayed ones included, and a
    /// node reachable only through a relay's small, short-lived circuits
    /// would then be put in routing tables and queried through them. Left
    /// alone when the config forces a mode.
    fn update_kad_mode(&mut self) {
        if self.config.kad_server_mode.is_some() {
            return;
        }
        let mode = if self.has_direct_external_addr() {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.mode() != mode {
            tracing::info!(?mode, "kademlia mode");
            kad.set_mode(Some(mode));
        }
    }

    fn set_reachability(&mut self, r: Reachability) {
        if self.reachability != r {
            tracing::info!(reachability = ?r, "reachability changed");
            self.reachability = r;
            self.emit(NetEvent::ReachabilityChanged(r));
        }
    }

    fn on_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, source: DiscoverySource) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.emit(NetEvent::PeerDiscovered {
            peer_id: peer,
            source,
        });
        if self.swarm.is_connected(&peer) {
            return;
        }
        match source {
            DiscoverySource::Mdns => {
                let we_go_first = *self.swarm.local_peer_id() < peer;
                self.lan
                    .discovered(peer, addrs, we_go_first, Instant::now());
                self.dial_lan_peers();
            }
            DiscoverySource::Rendezvous => self.dial_known(peer, addrs),
        }
    }

    /// LAN peers whose turn it is: first dials and retries (see [`LanDialer`]).
    fn dial_lan_peers(&mut self) {
        for (peer, addrs) in self.lan.due(Instant::now()) {
            if !self.swarm.is_connected(&peer) {
                self.dial_known(peer, addrs);
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Bans(never)
            | BehaviourEvent::Limits(never)
            | BehaviourEvent::IpLimits(never)
            | BehaviourEvent::KnownAddrs(never) => match never {},
            BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id, info, ..
            }) => self.on_identified(peer_id, info),
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.latency = Some(rtt);
                }
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(kad_guard::Event::Kad(e)) => self.on_kad_event(e),
            BehaviourEvent::Kad(kad_guard::Event::Malformed {
                peer,
                connection,
                offence,
            }) => self.on_misbehaviour(peer, connection, &offence.to_string()),
            BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(list)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in list {
                    let addrs = by_peer.entry(peer).or_default();
                    if addrs.len() < MAX_PEER_ADDRS {
                        addrs.push(addr);
                    }
                }
                for (peer, addrs) in by_peer {
                    self.on_discovered(peer, addrs, DiscoverySource::Mdns);
                }
            }
            BehaviourEvent::Mdns(libp2p::mdns::Event::Expired(list)) => {
                for (peer, _) in list {
                    self.lan.expired(&peer);
                }
            }
            BehaviourEvent::Rendezvous(e) => self.on_rendezvous_event(e),
            BehaviourEvent::RendezvousServer(e) => tracing::debug!(?e, "rendezvous server"),
            BehaviourEvent::RelayClient(e) => tracing::debug!(?e, "relay client"),
            BehaviourEvent::RelayServer(e) => tracing::debug!(?e, "relay server"),
            BehaviourEvent::Dcutr(e) => {
                tracing::debug!(?e, "dcutr");
                let peer_id = e.remote_peer_id;
                self.emit(match e.result {
                    Ok(_) => NetEvent::HolePunchSucceeded { peer_id },
                    Err(err) => NetEvent::HolePunchFailed {
                        peer_id,
                        reason: err.to_string(),
                    },
                });
            }
            BehaviourEvent::AutonatClient(e) => {
                tracing::debug!(addr = %e.tested_addr, server = %e.server, ok = e.result.is_ok(), "autonat v2 probe");
                if e.result.is_ok() {
                    self.set_reachability(Reachability::Public);
                } else if !self.has_direct_external_addr() {
                    self.set_reachability(Reachability::Private);
                    self.try_auto_relay();
                }
            }
            BehaviourEvent::AutonatServer(_) => {}
            BehaviourEvent::Stream(()) => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: libp2p::identify::Info) {
        let peer_on_loopback = self
            .peers
            .get(&peer)
            .is_some_and(|s| s.conns.values().any(|c| is_loopback(&c.remote_addr)));
        // Loopback addresses are only meaningful if we reach the peer over loopback.
        let usable: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_unspecified(a) && (peer_on_loopback || !is_loopback(a)))
            .take(MAX_PEER_ADDRS)
            .map(without_p2p)
            .collect();
        let protocols: Vec<String> = info
            .protocols
            .iter()
            .take(MAX_PEER_PROTOCOLS)
            .map(|p| p.to_string())
            .collect();
        let is_spore = info.protocols.contains(&KAD_PROTOCOL);
        let is_relay = protocols.iter().any(|p| p == RELAY_HOP_PROTOCOL);
        if let Some(s) = self.peers.get_mut(&peer) {
            s.listen_addrs = usable.clone();
            s.protocols = protocols.clone();
            s.agent_version = Some(info.agent_version.chars().take(128).collect());
        }
        if is_spore && !usable.is_empty() {
            for a in &usable {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
            self.book.record(peer, usable, now_unix());
        }
        if is_relay {
            self.try_auto_relay();
        }
        self.emit(NetEvent::PeerIdentified {
            peer_id: peer,
            protocols,
        });
    }

    /// A peer sent a message a protocol rejects: it loses this connection
    /// and scores down; at the threshold it is banned (blocked: every
    /// connection closes and new ones are denied until the ban ends).
    fn on_misbehaviour(&mut self, peer: PeerId, connection: ConnectionId, reason: &str) {
        let verdict = self.penalties.offend(peer, Instant::now());
        tracing::info!(%peer, reason, score = verdict.score, banned = verdict.banned_now, "peer misbehaved");
        if verdict.banned_now {
            self.swarm.behaviour_mut().bans.block_peer(peer);
        } else {
            self.swarm.close_connection(connection);
        }
        self.emit(NetEvent::PeerPenalised {
            peer_id: peer,
            reason: reason.to_owned(),
            banned: verdict.banned_now,
        });
    }

    /// When private, listen through up to [`MAX_RELAYS`] connected relays.
    fn try_auto_relay(&mut self) {
        if !self.config.auto_relay || self.reachability != Reachability::Private {
            return;
        }
        let candidates: Vec<(PeerId, Multiaddr)> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                !self.relay_listeners.contains_key(p)
                    && s.protocols.iter().any(|x| x == RELAY_HOP_PROTOCOL)
            })
            .filter_map(|(p, s)| {
                s.conns
                    .values()
                    .find(|c| {
                        c.direction == Direction::Outbound && c.transport != TransportKind::Relay
                    })
                    .map(|c| c.remote_addr.clone())
                    .or_else(|| s.listen_addrs.first().cloned())
                    .map(|a| (*p, a))
            })
            .collect();
        for (peer, addr) in candidates {
            if self.relay_listeners.len() >= MAX_RELAYS {
                break;
            }
            let circuit = without_p2p(&addr)
                .with(Protocol::P2p(peer))
                .with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%circuit, "listening through relay");
                    self.listeners.insert(id);
                    self.relay_listeners.insert(peer, id);
                }
                Err(e) => tracing::debug!(%circuit, error = %e, "relay listen failed"),
            }
        }
    }

    fn on_rendezvous_event(&mut self, event: rendezvous::client::Event) {
        match event {
            rendezvous::client::Event::Discovered {
                rendezvous_node,
                registrations,
                cookie,
            } => {
                self.rendezvous_cookies.insert(rendezvous_node, cookie);
                for reg in registrations {
                    let peer = reg.record.peer_id();
                    let addrs: Vec<Multiaddr> = reg
                        .record
                        .addresses()
                        .iter()
                        .take(MAX_PEER_ADDRS)
                        .cloned()
                        .collect();
                    self.on_discovered(peer, addrs, DiscoverySource::Rendezvous);
                }
            }
            rendezvous::client::Event::Registered {
                rendezvous_node, ..
            } => tracing::debug!(%rendezvous_node, "registered at rendezvous point"),
            other => tracing::debug!(?other, "rendezvous"),
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id,
            result,
            step,
            stats,
        } = event
        else {
            return;
        };
        match result {
            QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let requests = stats.num_requests();
                let local = *self.swarm.local_peer_id();
                let mut new = Vec::new();
                if let Some(PendingQuery::Providers { seen, .. }) = self.queries.get_mut(&id) {
                    for p in providers {
                        if p != local && seen.insert(p) {
                            new.push(p);
                        }
                    }
                }
                let with_addrs: Vec<Provider> = new
                    .into_iter()
                    .map(|p| Provider {
                        addrs: self.addrs_of(&p),
                        peer_id: p,
                    })
                    .collect();
                let mut done = false;
                if let Some(PendingQuery::Providers {
                    found,
                    limit,
                    started,
                    stats: lookup,
                    ..
                }) = self.queries.get_mut(&id)
                {
                    if found.is_empty() && !with_addrs.is_empty() {
                        lookup.requests_to_first = Some(requests);
                        lookup.time_to_first = Some(started.elapsed());
                    }
                    record_query_stats(lookup, &stats);
                    found.extend(with_addrs);
                    done = found.len() >= *limit;
                }
                if done {
                    self.finish_providers(id, LookupEnd::FoundEnough, Vec::new());
                } else if step.last {
                    self.finish_providers(id, LookupEnd::Exhausted, Vec::new());
                }
            }
            QueryResult::GetProviders(r) if step.last => {
                if let Some(PendingQuery::Providers { stats: lookup, .. }) =
                    self.queries.get_mut(&id)
                {
                    record_query_stats(lookup, &stats);
                }
                match r {
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { closest_peers }) => {
                        self.finish_providers(id, LookupEnd::Exhausted, closest_peers);
                    }
                    Ok(kad::GetProvidersOk::FoundProviders { .. }) => {
                        self.finish_providers(id, LookupEnd::Exhausted, Vec::new());
                    }
                    Err(kad::GetProvidersError::Timeout { closest_peers, .. }) => {
                        self.finish_providers(id, LookupEnd::QueryTimeout, closest_peers);
                    }
                }
            }
            QueryResult::StartProviding(r) => {
                if step.last
                    && let Some(PendingQuery::StartProviding { hash, tx }) =
                        self.queries.remove(&id)
                {
                    let result = match &r {
                        Ok(_) => {
                            self.reannounce.done(&hash);
                            Ok(())
                        }
                        Err(e) => {
                            // libp2p-kad 0.49 sends the record only once its
                            // closest-peers phase has finished: a timeout
                            // there means no other node got it. The record is
                            // kept locally; `reannounce` tries again.
                            tracing::info!(%hash, error = %e, "provider announcement timed out; will try again");
                            self.reannounce.failed(hash, Instant::now());
                            Err(NetError::Query(format!("announcement timed out: {e}")))
                        }
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                }
            }
            QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                let mut full = false;
                if let Some(PendingQuery::GetRecord { values, .. }) = self.queries.get_mut(&id) {
                    if !values.contains(&found.record.value) {
                        values.push(found.record.value);
                    }
                    full = values.len() >= MAX_RECORD_VALUES;
                }
                if full || step.last {
                    self.finish_get_record(id);
                }
            }
            QueryResult::GetRecord(_) if step.last => self.finish_get_record(id),
            QueryResult::PutRecord(r) => {
                if let Err(e) = &r {
                    // Stored locally and republished; fewer peers got it this time.
                    tracing::debug!(error = %e, "record publication incomplete");
                }
                if step.last
                    && let Some(PendingQuery::PutRecord { tx }) = self.queries.remove(&id)
                {
                    let _ = tx.send(Ok(()));
                }
            }
            QueryResult::Bootstrap(r) => {
                self.routing_requests += u64::from(stats.num_requests());
                let scope = match self.queries.get(&id) {
                    Some(PendingQuery::Bootstrap { scope, .. }) => *scope,
                    _ => Bootstrap::Join,
                };
                if !step.last && scope == Bootstrap::Join {
                    // libp2p-kad has already queued the next bucket's lookup
                    // under this id, unsent: it ends before it asks anyone.
                    if let Some(mut next) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        next.finish();
                    }
                }
                if step.last
                    && let Some(PendingQuery::Bootstrap { tx, .. }) = self.queries.remove(&id)
                    && let Some(tx) = tx
                {
                    let _ = tx.send(r.map(|_| ()).map_err(|e| NetError::Query(e.to_string())));
                }
            }
            _ => {}
        }
    }
}
