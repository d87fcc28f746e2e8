//! `NetHandle`: the cheap, cloneable way the rest of spore talks to the
//! swarm task, and `NetNode`: start-up and explicit shutdown of that task.
//!
//! Every call sends one command on a bounded queue with a oneshot for the
//! reply and waits with a timeout, so a stuck swarm shows up as
//! `NetError::Timeout`, never as a hang. The handle must never touch the
//! Swarm itself; only `actor.rs` does.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use spore_core::{Hash, ProviderHint};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    actor::{self, Bootstrap, Command},
    behaviour::BuildError,
    config::NetConfig,
    hint,
    identity::{self, IdentityError, NodeSigner},
    multi_value,
    types::{NetEvent, NetStatus, PeerInfo, Provider, ProviderLookup},
};

/// How long a plain command may take before we call the swarm stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of a provider lookup.
pub const FIND_PROVIDERS_TIMEOUT: Duration = Duration::from_secs(20);
/// Default number of providers after which a lookup stops early.
pub const FIND_PROVIDERS_LIMIT: usize = 20;
/// How long `open_stream` may take (dial included).
const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong with a request to the network layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("the network task has shut down")]
    Shutdown,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("dial failed: {0}")]
    Dial(String),
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    #[error("the routing table is empty: no peer to ask")]
    NoKnownPeers,
    #[error("provider store refused the key: {0}")]
    Store(String),
    #[error("{0:?} is not a valid protocol name (it must start with '/')")]
    InvalidProtocol(String),
    #[error("protocol {0} is already being accepted by someone else")]
    AlreadyAccepting(String),
    #[error("stream to {peer} failed: {reason}")]
    Stream { peer: PeerId, reason: String },
    #[error("kademlia query failed: {0}")]
    Query(String),
    #[error("cannot listen: {0}")]
    Listen(String),
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// Accepted inbound streams of one protocol: `(peer, stream)` pairs.
/// Drop it to stop accepting. Read it promptly: libp2p-stream drops inbound
/// streams that arrive while nobody is waiting here.
pub type IncomingStreams = libp2p_stream::IncomingStreams;

/// Cheap to clone; every clone talks to the same swarm task.
#[derive(Clone)]
pub struct NetHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NetEvent>,
    control: libp2p_stream::Control,
    signer: Option<NodeSigner>,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl NetHandle {
    async fn ask<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands
                .send(make(tx))
                .await
                .map_err(|_| NetError::Shutdown)?;
            rx.await.map_err(|_| NetError::Shutdown)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| NetError::Timeout(timeout))?
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs with this node's identity key (Ed25519), for records published
    /// under its name. `None` only for a non-Ed25519 key, which spore never makes.
    pub fn signer(&self) -> Option<&NodeSigner> {
        self.signer.as_ref()
    }

    /// Subscribes to node events (bounded; see [`NetEvent`]).
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    pub async fn status(&self) -> Result<NetStatus, NetError> {
        self.ask(COMMAND_TIMEOUT, Command::Status).await
    }

    /// Addresses we listen on (interfaces resolved, not `0.0.0.0`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(COMMAND_TIMEOUT, Command::ListenAddrs).await
    }

    /// Addresses confirmed reachable from outside.
    pub async fn external_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(COMMAND_TIMEOUT, Command::ExternalAddrs).await
    }

    /// Adds an address others can reach us at (e.g. a forwarded port).
    pub async fn add_external_addr(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::AddExternalAddr { addr, tx })
            .await
    }

    /// Opens one more listener and waits for its first address, at most
    /// `timeout`. For a relay circuit (`…/p2p/<relay id>/p2p-circuit`) this
    /// reserves a slot at the relay (dialling it if needed) and returns our
    /// relayed address, `…/p2p/<relay id>/p2p-circuit/p2p/<our id>`; peers
    /// reach us through it. The listener closes if the relay connection does.
    pub async fn listen_on(
        &self,
        addr: Multiaddr,
        timeout: Duration,
    ) -> Result<Multiaddr, NetError> {
        let deadline = std::time::Instant::now() + timeout;
        self.ask(timeout + Duration::from_secs(1), |tx| Command::ListenOn {
            addr,
            deadline,
            tx,
        })
        .await?
    }

    /// Connected peers with their connections, identify info and latency.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.ask(COMMAND_TIMEOUT, Command::Peers).await
    }

    /// Number of peers in the Kademlia routing table.
    pub async fn routing_table_size(&self) -> Result<usize, NetError> {
        Ok(self.status().await?.routing_table_size)
    }

    /// Dials an address and waits until connected; returns who answered.
    /// If the address ends in `/p2p/<id>` and we are connected already, returns at once.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::Dial { addr, tx })
            .await?
    }

    /// Connects to `peer` using `addrs` plus whatever we already know of it.
    pub async fn dial_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::DialPeer { peer, addrs, tx })
            .await?
    }

    /// Remembers addresses of a peer (from a ticket, say) without dialling.
    pub async fn add_peer_addrs(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::AddPeerAddrs {
            peer,
            addrs,
            tx,
        })
        .await
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::Disconnect { peer, tx })
            .await?
    }

    /// Announces that we provide `hash`, and waits until the announcement
    /// reached the closest peers. The record is stored locally at once; if
    /// it reached no other node (`NoKnownPeers`: the routing table is empty;
    /// `Query`: libp2p-kad's closest-peers phase, which it runs first, timed
    /// out within `kad_query_timeout_secs`), the network task tries again by
    /// itself, after `provide_retry_secs` and then less and less often, until
    /// one try succeeds or [`stop_providing`](Self::stop_providing) is
    /// called. Bound your own concurrency when announcing many keys (e.g. 8
    /// at a time).
    pub async fn start_providing(&self, hash: Hash) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT * 2, |tx| Command::StartProviding {
            hash,
            tx,
        })
        .await?
    }

    /// Peers this node's record store holds as providers of `hash` (its own
    /// announcement and those other peers stored here), for diagnostics.
    pub async fn stored_providers(&self, hash: Hash) -> Result<Vec<PeerId>, NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::StoredProviders { hash, tx })
            .await
    }

    /// Stops announcing `hash` (others forget us when their records expire).
    pub async fn stop_providing(&self, hash: Hash) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT, |tx| Command::StopProviding { hash, tx })
            .await
    }

    /// Providers of `hash` other than us (up to 20, within 20 s).
    pub async fn find_providers(&self, hash: Hash) -> Result<Vec<Provider>, NetError> {
        self.find_providers_with(hash, FIND_PROVIDERS_LIMIT, FIND_PROVIDERS_TIMEOUT)
            .await
    }

    /// Providers of `hash`, stopping after `limit` or `timeout` (returning
    /// what was found so far; an empty list is not an error).
    pub async fn find_providers_with(
        &self,
        hash: Hash,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<Provider>, NetError> {
        Ok(self.lookup_providers(hash, limit, timeout).await?.providers)
    }

    /// Like [`Self::find_providers_with`], with the lookup's statistics.
    pub async fn lookup_providers(
        &self,
        hash: Hash,
        limit: usize,
        timeout: Duration,
    ) -> Result<ProviderLookup, NetError> {
        let limit = limit.max(1);
        self.ask(timeout + Duration::from_secs(5), |tx| {
            Command::FindProviders {
                hash,
                limit,
                timeout,
                tx,
            }
        })
        .await?
    }

    /// Looks up our own id in the DHT, which fills the routing table with
    /// our neighbourhood, and waits for it to finish: what a node joining
    /// the network needs. The node also does this by itself when its first
    /// bootstrap peer connects.
    pub async fn bootstrap(&self) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT * 2, |tx| Command::Bootstrap {
            scope: Bootstrap::Join,
            tx,
        })
        .await?
    }

    /// A full Kademlia bootstrap: our own id, then a random id in every
    /// bucket farther than our closest neighbour's. The node runs one every
    /// five minutes; this runs one now and waits for it.
    pub async fn refresh_routing(&self) -> Result<(), NetError> {
        self.ask(COMMAND_TIMEOUT * 4, |tx| Command::Bootstrap {
            scope: Bootstrap::Refresh,
            tx,
        })
        .await?
    }

    /// Publishes `payload` under the multi-valued DHT key `key` (which must
    /// start with [`crate::multi_value::MULTI_VALUE_PREFIX`]), in this node's
    /// slot, signed with its identity (see [`crate::multi_value`]). Waits
    /// until the closest peers were asked; a partial success is not an error.
    pub async fn put_record(&self, key: Vec<u8>, payload: Vec<u8>) -> Result<(), NetError> {
        if !multi_value::is_multi_value(&key) {
            return Err(NetError::Store(
                "only multi-valued keys can be published".into(),
            ));
        }
        if payload.len() > multi_value::MAX_PAYLOAD_BYTES {
            return Err(NetError::Store(format!(
                "payload of {} bytes is above {}",
                payload.len(),
                multi_value::MAX_PAYLOAD_BYTES
            )));
        }
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| NetError::Store("the node key cannot sign".into()))?;
        let entry = multi_value::seal(signer, &key, &payload);
        let value = multi_value::encode_list([entry.as_slice()]);
        self.ask(COMMAND_TIMEOUT * 2, |tx| Command::PutRecord {
            key,
            value,
            tx,
        })
        .await?
    }

    /// The verified payloads stored under the multi-valued key `key` (ours
    /// included), from the DHT, within `timeout`: one per publisher, as
    /// `(publisher's Ed25519 key, payload)`.
    pub async fn get_records(
        &self,
        key: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<([u8; 32], Vec<u8>)>, NetError> {
        let lookup_key = key.clone();
        let values = self
            .ask(timeout + Duration::from_secs(5), |tx| Command::GetRecord {
                key: lookup_key,
                timeout,
                tx,
            })
            .await??;
        let mut out: Vec<([u8; 32], Vec<u8>)> = Vec::new();
        for value in &values {
            for entry in multi_value::decode_list(value).unwrap_or_default() {
                if let Some(e) = multi_value::open(&key, entry)
                    && !out.iter().any(|(p, v)| *p == e.publisher && v == e.payload)
                {
                    out.push((e.publisher, e.payload.to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// A ticket hint for this node: peer id plus external, then listen addresses.
    pub async fn local_provider_hint(&self) -> Result<ProviderHint, NetError> {
        let mut addrs = self.external_addrs().await?;
        addrs.extend(self.listen_addrs().await?);
        Ok(hint::to_hint(&self.peer_id, &addrs))
    }

    /// Opens a stream to `peer` for `protocol` (dialling if needed).
    pub async fn open_stream(&self, peer: PeerId, protocol: &str) -> Result<Stream, NetError> {
        let protocol = parse_protocol(protocol)?;
        let mut control = self.control.clone();
        let open = control.open_stream(peer, protocol);
        match tokio::time::timeout(OPEN_STREAM_TIMEOUT, open).await {
            Err(_) => Err(NetError::Timeout(OPEN_STREAM_TIMEOUT)),
            Ok(Err(e)) => Err(NetError::Stream {
                peer,
                reason: e.to_string(),
            }),
            Ok(Ok(s)) => Ok(s),
        }
    }

    /// Starts accepting inbound streams for `protocol`; one acceptor per protocol.
    pub fn accept_streams(&self, protocol: &str) -> Result<IncomingStreams, NetError> {
        let protocol = parse_protocol(protocol)?;
        self.control
            .clone()
            .accept(protocol.clone())
            .map_err(|_| NetError::AlreadyAccepting(protocol.to_string()))
    }
}

fn parse_protocol(protocol: &str) -> Result<StreamProtocol, NetError> {
    StreamProtocol::try_from_owned(protocol.to_owned())
        .map_err(|_| NetError::InvalidProtocol(protocol.to_owned()))
}

/// A running node: the handle plus what it takes to stop it.
///
/// Dropping it cancels the swarm task as a backstop; call
/// [`NetNode::shutdown`] to stop it and wait until it is gone.
#[derive(Debug)]
pub struct NetNode {
    handle: NetHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl NetNode {
    /// Loads or creates the identity, builds the swarm, binds the listeners
    /// and starts the swarm task. Returns once every listener has an address.
    /// The node stops when `cancel` (or a parent of it) is cancelled.
    pub async fn start(config: NetConfig, cancel: CancellationToken) -> Result<Self, StartError> {
        let key = match &config.identity_file {
            Some(path) => identity::load_or_create(path)?,
            None => libp2p::identity::Keypair::generate_ed25519(),
        };
        let peer_id = key.public().to_peer_id();
        let signer = NodeSigner::new(&key);
        let (commands, command_rx) = mpsc::channel(config.command_queue.max(1));
        let (events, _) = broadcast::channel(config.event_queue.max(1));
        let started = actor::start(key, config, command_rx, events.clone(), cancel.clone())?;
        let handle = NetHandle {
            peer_id,
            commands,
            events,
            control: started.control,
            signer,
        };
        let node = Self {
            handle,
            cancel,
            task: Some(started.task),
        };
        // A listener that never reports an address is not fatal (the node can
        // still dial out); the wait is bounded.
        let _ = tokio::time::timeout(Duration::from_secs(5), started.ready).await;
        Ok(node)
    }

    pub fn handle(&self) -> &NetHandle {
        &self.handle
    }

    pub fn peer_id(&self) -> PeerId {
        self.handle.peer_id
    }

    /// The token that stops this node.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Stops the swarm task, saves the address book, closes connections and
    /// waits until the task has ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "network task ended abnormally");
        }
    }
}

impl Drop for NetNode {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
