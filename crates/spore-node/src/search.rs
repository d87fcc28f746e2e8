//! The search service: keeps the local index in step with the store, and
//! drives spore-search's router over libp2p streams (`/spore/search/1`, one
//! message per stream).
//!
//! One task owns the [`Router`] and every search in progress; the rest
//! talks to it over bounded channels. Inbound streams are read by short
//! tasks (a semaphore caps them; a stream over the cap is dropped), each
//! with a timeout, and their decoded messages queued to the router task
//! with `try_send` (a full queue drops the message, it never blocks the
//! accept loop). Outbound messages go out the same way. SQLite work runs on
//! blocking threads. A peer the router bans is disconnected.
//!
//! This module must never trust a byte from a peer: frames are length
//! checked before allocation, decoded by spore-search's codec, and results
//! verified (signature, match) before anything is shown to the user.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use serde::{Deserialize, Serialize};
use spore_core::{ContentKind, Hash};
use spore_net::{CancellationToken, NetEvent, NetHandle, NodeSigner, PeerId, Stream};
use spore_search::{
    Action, Filters, ItemKind, Message, Query, QueryError, QueryId, RecordBody, Router,
    RouterConfig, SignedRecord, WireError,
    dht::{self, KeywordRecord},
    dynamic::{DynamicQuery, Step, default_stages},
    filter::RouteFilter,
    index::{Index, IndexError},
    results::{Added, ResultSet},
    wire,
};
use spore_store::{BlobState, Store, StoreError};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

/// Settings of the search service (`[search]` in spore.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// How often the routing filter is recomputed and sent where it changed.
    pub filter_interval_secs: u64,
    /// How often the index is brought in step with the store.
    pub reindex_interval_secs: u64,
    /// How often keyword records are published to the DHT again.
    pub dht_republish_secs: u64,
    /// Keyword records published per round (rarest keywords first).
    pub dht_max_keywords: usize,
    /// Streams read at once; more are dropped.
    pub max_inbound_streams: usize,
    /// Messages being sent at once; more are dropped.
    pub max_outbound_streams: usize,
    /// Searches of this node running at once.
    pub max_searches: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            filter_interval_secs: 10,
            reindex_interval_secs: 60,
            dht_republish_secs: 30 * 60,
            dht_max_keywords: 2048,
            max_inbound_streams: 64,
            max_outbound_streams: 64,
            max_searches: 32,
        }
    }
}

/// No stream may take longer than this to read or write one message.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Queue from stream readers and blocking jobs to the router task.
const INTERNAL_QUEUE: usize = 1024;
/// Events buffered per search for its consumer.
const EVENT_QUEUE: usize = 512;
/// Local index lookups running at once for other peers' queries.
const LOCAL_SEARCHES: usize = 8;

/// A user's search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub text: String,
    pub filters: Filters,
    /// Hop limit of the widest stage (default 4, at most 7).
    pub hops: u8,
    /// Stop after this long.
    pub timeout: Duration,
    /// Stop widening once this many distinct results are in.
    pub wanted: usize,
}

impl SearchRequest {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            filters: Filters::default(),
            hops: spore_search::DEFAULT_HOPS,
            timeout: Duration::from_secs(10),
            wanted: 50,
        }
    }
}

/// One result, merged by content id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// Content id (what `spore get` takes).
    pub id: String,
    pub name: String,
    pub size: u64,
    /// `blob`, `collection` or `file` (a file inside a collection).
    pub kind: String,
    pub media: String,
    /// The collection a `file` is in.
    pub parent: Option<String>,
    /// Distinct peers that offer it.
    pub sources: usize,
    /// Their peer ids.
    pub publishers: Vec<String>,
    /// 0..=1: the share of the name's words the query asked for.
    pub relevance: f64,
    /// Tags and description (local results only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// What a running search reports, in order: hits (a hit is sent again when
/// it gains a source), then `Done`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SearchEvent {
    Hit(SearchHit),
    Done {
        results: usize,
        /// Stages of dynamic querying sent.
        stages: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many searches running (at most {0}); try again shortly")]
    Busy(usize),
    #[error("the search service has stopped")]
    Stopped,
}

/// Every item the store shares under a name: blobs and collections the user
/// added, and the files inside those collections.
pub fn shared_items(store: &Store) -> Result<Vec<RecordBody>, StoreError> {
    let mut out = Vec::new();
    for r in store.list()? {
        let (Some(tag), BlobState::Complete) = (&r.tag, &r.state) else {
            continue;
        };
        match r.kind {
            ContentKind::Blob => out.push(RecordBody {
                id: r.hash,
                name: tag.name.clone(),
                size: r.size,
                kind: ItemKind::Blob,
                parent: None,
            }),
            ContentKind::Collection => {
                let Ok(collection) = store.collection(&r.hash) else {
                    continue;
                };
                out.push(RecordBody {
                    id: r.hash,
                    name: tag.name.clone(),
                    size: collection.total_size(),
                    kind: ItemKind::Collection,
                    parent: None,
                });
                for e in collection.entries() {
                    out.push(RecordBody {
                        id: e.hash,
                        name: e.path.as_str().to_owned(),
                        size: e.size,
                        kind: ItemKind::File,
                        parent: Some(r.hash),
                    });
                }
            }
        }
    }
    out.retain(|b| b.check().is_ok());
    Ok(out)
}

/// The index file of a node.
pub fn index_path(home: &crate::Home) -> PathBuf {
    home.data.join("search.db")
}

/// Searches the local index only (blocking): brings it in step with the
/// store first. Tags and descriptions count.
pub fn search_local(
    index: &mut Index,
    store: &Store,
    request: &SearchRequest,
    limit: usize,
) -> Result<Vec<SearchHit>, SearchError> {
    let query = Query::new(&request.text, request.filters.clone(), 0)?;
    index.sync(&shared_items(store)?)?;
    Ok(index
        .search(&query, false, limit)?
        .into_iter()
        .map(|h| {
            let mut hit = hit_of(
                &h.body,
                &[],
                spore_search::results::relevance(&query, &h.body.name),
            );
            hit.tags = h.tags;
            hit.description = h.description;
            hit
        })
        .collect())
}

fn hit_of(body: &RecordBody, publishers: &[[u8; 32]], relevance: f64) -> SearchHit {
    SearchHit {
        id: body.id.to_hex(),
        name: body.name.clone(),
        size: body.size,
        kind: body.kind.as_str().to_owned(),
        media: body.media().as_str().to_owned(),
        parent: body.parent.map(|p| p.to_hex()),
        sources: publishers.len(),
        publishers: publishers
            .iter()
            .filter_map(spore_net::peer_id_from_ed25519)
            .map(|p| p.to_string())
            .collect(),
        relevance,
        tags: Vec::new(),
        description: String::new(),
    }
}

enum Command {
    Start {
        query: Query,
        wanted: usize,
        timeout: Duration,
        events: mpsc::Sender<SearchEvent>,
    },
    /// Answered once the index holds what the store holds.
    Reindex(tokio::sync::oneshot::Sender<()>),
    Stats(tokio::sync::oneshot::Sender<SearchStats>),
}

/// Counters of the service, for status and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchStats {
    pub neighbours: usize,
    pub indexed_items: usize,
    pub queries_received: u64,
    pub duplicates: u64,
    pub queries_sent: u64,
    pub hits_sent: u64,
    pub rejected: u64,
    pub rate_limited: u64,
    pub dropped_streams: u64,
    /// Peers banned (and disconnected) for misbehaving.
    pub banned: u64,
}

enum Internal {
    Inbound {
        peer: PeerId,
        msg: Result<Message, WireError>,
    },
    LocalHits {
        id: QueryId,
        records: Vec<SignedRecord>,
    },
    SessionHits {
        session: u64,
        records: Vec<SignedRecord>,
        local: Vec<spore_search::index::Hit>,
    },
    Indexed {
        keywords: Vec<String>,
        items: usize,
        changed: bool,
    },
    DroppedStream,
}

/// The running service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Search {
    commands: mpsc::Sender<Command>,
    /// Searches running (the driver counts them; checked before queueing one).
    active: Arc<AtomicUsize>,
    max_searches: usize,
    index: Arc<Mutex<Index>>,
    store: Store,
}

impl Search {
    /// Opens the index, starts accepting `/spore/search/1` and the router task.
    pub fn start(
        index_path: PathBuf,
        store: Store,
        net: NetHandle,
        config: SearchConfig,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Result<Self, SearchError> {
        let index = Arc::new(Mutex::new(Index::open(&index_path)?));
        let incoming = net
            .accept_streams(wire::PROTOCOL)
            .map_err(|_| SearchError::Stopped)?;
        let (commands, command_rx) = mpsc::channel(64);
        let (internal, internal_rx) = mpsc::channel(INTERNAL_QUEUE);
        tasks.spawn(accept_loop(
            incoming,
            internal.clone(),
            Arc::new(Semaphore::new(config.max_inbound_streams.max(1))),
            cancel.clone(),
        ));
        let active = Arc::new(AtomicUsize::new(0));
        let max_searches = config.max_searches.max(1);
        let driver = Driver {
            active: active.clone(),
            router: Router::new(RouterConfig::default()),
            signer: net.signer().cloned(),
            net,
            index: index.clone(),
            store: store.clone(),
            internal,
            outbound: Arc::new(Semaphore::new(config.max_outbound_streams.max(1))),
            local_searches: Arc::new(Semaphore::new(LOCAL_SEARCHES)),
            sessions: HashMap::new(),
            by_query: HashMap::new(),
            next_session: 0,
            sent_filters: HashMap::new(),
            stats: SearchStats::default(),
            config,
            jobs: JoinSet::new(),
            publish_due: false,
        };
        tasks.spawn(driver.run(command_rx, internal_rx, cancel));
        Ok(Self {
            commands,
            active,
            max_searches,
            index,
            store,
        })
    }

    /// Starts a network search; results arrive on the receiver, then `Done`.
    /// The node's own matching items come first.
    pub async fn search(
        &self,
        request: SearchRequest,
    ) -> Result<mpsc::Receiver<SearchEvent>, SearchError> {
        let query = Query::new(&request.text, request.filters.clone(), request.hops)?;
        if self.active.load(Ordering::Relaxed) >= self.max_searches {
            return Err(SearchError::Busy(self.max_searches));
        }
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        self.commands
            .send(Command::Start {
                query,
                wanted: request.wanted,
                timeout: request.timeout,
                events,
            })
            .await
            .map_err(|_| SearchError::Stopped)?;
        Ok(rx)
    }

    /// Searches only this node's index (tags and descriptions count).
    pub async fn search_local(
        &self,
        request: SearchRequest,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let index = self.index.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut index = index.lock().map_err(|_| SearchError::Stopped)?;
            search_local(&mut index, &store, &request, limit)
        })
        .await
        .map_err(|_| SearchError::Stopped)?
    }

    /// Sets the tags and description of a content id in the local index.
    pub async fn describe(
        &self,
        id: Hash,
        tags: Vec<String>,
        description: String,
    ) -> Result<(), SearchError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || {
            let mut index = index.lock().map_err(|_| SearchError::Stopped)?;
            Ok(index.set_meta(&id, &tags, &description)?)
        })
        .await
        .map_err(|_| SearchError::Stopped)?
    }

    /// Brings the index in step with the store now (after an add), and
    /// returns once it is: a search started afterwards finds what was added.
    pub async fn reindex(&self) {
        let (done, synced) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Reindex(done)).await.is_ok() {
            let _ = synced.await;
        }
    }

    pub async fn stats(&self) -> Result<SearchStats, SearchError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| SearchError::Stopped)?;
        rx.await.map_err(|_| SearchError::Stopped)
    }
}

async fn accept_loop(
    mut incoming: spore_net::IncomingStreams,
    internal: mpsc::Sender<Internal>,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut readers = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    let _ = internal.try_send(Internal::DroppedStream);
                    continue;
                };
                let internal = internal.clone();
                readers.spawn(async move {
                    let msg = read_message(stream).await;
                    drop(permit);
                    if let Some(msg) = msg {
                        let _ = internal.try_send(Internal::Inbound { peer, msg });
                    }
                });
            }
        }
    }
    readers.shutdown().await;
}

/// One frame from the stream; `None` when the stream failed (not the
/// peer's provable fault), `Some(Err)` when the bytes were bad.
async fn read_message(mut stream: Stream) -> Option<Result<Message, WireError>> {
    let work = async {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.ok()?;
        let len = match wire::frame_len(&prefix) {
            Ok(len) => len,
            Err(e) => return Some(Err(e)),
        };
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(Message::decode_body(&body))
    };
    tokio::time::timeout(IO_TIMEOUT, work).await.ok().flatten()
}

async fn send_message(net: NetHandle, peer: PeerId, frame: Vec<u8>) {
    let work = async {
        let mut stream = net.open_stream(peer, wire::PROTOCOL).await.ok()?;
        stream.write_all(&frame).await.ok()?;
        stream.close().await.ok()
    };
    if tokio::time::timeout(IO_TIMEOUT, work).await.is_err() {
        tracing::debug!(%peer, "search message timed out");
    }
}

struct Session {
    dq: DynamicQuery,
    set: ResultSet,
    events: mpsc::Sender<SearchEvent>,
    stages: usize,
}

struct Driver {
    active: Arc<AtomicUsize>,
    router: Router<PeerId>,
    net: NetHandle,
    signer: Option<NodeSigner>,
    index: Arc<Mutex<Index>>,
    store: Store,
    internal: mpsc::Sender<Internal>,
    outbound: Arc<Semaphore>,
    local_searches: Arc<Semaphore>,
    sessions: HashMap<u64, Session>,
    by_query: HashMap<QueryId, u64>,
    next_session: u64,
    /// Hash of the filter last sent to each neighbour.
    sent_filters: HashMap<PeerId, [u8; 32]>,
    stats: SearchStats,
    config: SearchConfig,
    jobs: JoinSet<()>,
    publish_due: bool,
}

struct Signer(NodeSigner);

impl spore_search::RecordSigner for Signer {
    fn public_key(&self) -> [u8; 32] {
        self.0.public_key()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message)
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut internal: mpsc::Receiver<Internal>,
        cancel: CancellationToken,
    ) {
        let mut events = self.net.subscribe();
        if let Ok(peers) = self.net.peers().await {
            for p in peers {
                self.router.add_neighbour(Instant::now(), p.peer_id);
            }
        }
        self.reindex(None);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let filter_every = Duration::from_secs(self.config.filter_interval_secs.max(1));
        let reindex_every = Duration::from_secs(self.config.reindex_interval_secs.max(5));
        let publish_every = Duration::from_secs(self.config.dht_republish_secs.max(60));
        let mut next_filter = Instant::now() + Duration::from_millis(500);
        let mut next_reindex = Instant::now() + reindex_every;
        let mut next_publish = Instant::now() + Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = commands.recv() => self.on_command(cmd),
                Some(msg) = internal.recv() => self.on_internal(msg),
                event = events.recv() => match event {
                    Ok(NetEvent::PeerConnected { peer_id, .. }) => {
                        if self.router.add_neighbour(Instant::now(), peer_id) {
                            // Tell the newcomer our filter soon.
                            next_filter = next_filter.min(Instant::now() + Duration::from_millis(300));
                        }
                    }
                    Ok(NetEvent::PeerDisconnected { peer_id }) => {
                        self.router.remove_neighbour(&peer_id);
                        self.sent_filters.remove(&peer_id);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.resync_neighbours().await;
                    }
                    Err(_) => break,
                },
                Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => {}
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.poll_sessions(now);
                    if now >= next_filter {
                        self.send_filters();
                        next_filter = now + filter_every;
                    }
                    if now >= next_reindex {
                        self.reindex(None);
                        next_reindex = now + reindex_every;
                    }
                    if self.publish_due {
                        self.publish_due = false;
                        next_publish = next_publish.min(now + Duration::from_secs(2));
                    }
                    if now >= next_publish {
                        self.publish_keywords();
                        next_publish = now + publish_every;
                    }
                }
            }
        }
        self.active.store(0, Ordering::Relaxed);
        for (_, s) in self.sessions.drain() {
            let _ = s.events.try_send(SearchEvent::Done {
                results: s.set.len(),
                stages: s.stages,
            });
        }
        self.jobs.shutdown().await;
    }

    async fn resync_neighbours(&mut self) {
        let Ok(peers) = self.net.peers().await else {
            return;
        };
        let connected: HashSet<PeerId> = peers.into_iter().map(|p| p.peer_id).collect();
        let known: Vec<PeerId> = self.router.neighbours().copied().collect();
        for p in known {
            if !connected.contains(&p) {
                self.router.remove_neighbour(&p);
            }
        }
        for p in connected {
            self.router.add_neighbour(Instant::now(), p);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Start {
                query,
                wanted,
                timeout,
                events,
            } => self.start_session(query, wanted, timeout, events),
            Command::Reindex(done) => self.reindex(Some(done)),
            Command::Stats(tx) => {
                let r = self.router.stats();
                let mut stats = self.stats.clone();
                stats.neighbours = self.router.neighbours().count();
                stats.queries_received = r.queries_received;
                stats.duplicates = r.duplicates;
                stats.queries_sent = r.queries_sent;
                stats.hits_sent = r.hits_sent;
                stats.rejected = r.rejected;
                stats.rate_limited = r.rate_limited;
                let _ = tx.send(stats);
            }
        }
    }

    fn start_session(
        &mut self,
        query: Query,
        wanted: usize,
        timeout: Duration,
        events: mpsc::Sender<SearchEvent>,
    ) {
        if self.sessions.len() >= self.config.max_searches {
            let _ = events.try_send(SearchEvent::Done {
                results: 0,
                stages: 0,
            });
            return;
        }
        let id = self.next_session;
        self.next_session += 1;
        self.active
            .store(self.sessions.len() + 1, Ordering::Relaxed);
        let now = Instant::now();
        let stages = default_stages(query.hops);
        self.sessions.insert(
            id,
            Session {
                dq: DynamicQuery::new(query.clone(), stages, wanted, now + timeout),
                set: ResultSet::new(query.clone(), 1024),
                events,
                stages: 0,
            },
        );
        // Our own items, then the DHT keyword index, while the query spreads.
        let index = self.index.clone();
        let internal = self.internal.clone();
        let signer = self.signer.clone();
        let local_query = query.clone();
        self.jobs.spawn(async move {
            let found = tokio::task::spawn_blocking(move || {
                let index = index.lock().ok()?;
                index.search(&local_query, true, 256).ok()
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            let records = match &signer {
                Some(s) => found
                    .iter()
                    .map(|h| SignedRecord::sign(h.body.clone(), &Signer(s.clone())))
                    .collect(),
                None => Vec::new(),
            };
            let _ = internal
                .send(Internal::SessionHits {
                    session: id,
                    records,
                    local: found,
                })
                .await;
        });
        if let Some(word) = dht::lookup_word(&query).map(str::to_owned) {
            let net = self.net.clone();
            let internal = self.internal.clone();
            self.jobs.spawn(async move {
                let key = dht::dht_key(&word);
                let Ok(values) = net
                    .get_records(key, timeout.min(Duration::from_secs(10)))
                    .await
                else {
                    return;
                };
                // Only items signed by the slot's owner count: nobody can
                // list items under another peer's name.
                let records: Vec<SignedRecord> = values
                    .iter()
                    .filter_map(|(publisher, v)| {
                        KeywordRecord::decode(v).ok().map(|r| (publisher, r))
                    })
                    .filter(|(_, r)| r.keyword == word)
                    .flat_map(|(publisher, r)| {
                        r.records
                            .into_iter()
                            .filter(move |x| x.publisher == *publisher)
                    })
                    .collect();
                if !records.is_empty() {
                    let _ = internal
                        .send(Internal::SessionHits {
                            session: id,
                            records,
                            local: Vec::new(),
                        })
                        .await;
                }
            });
        }
        self.poll_sessions(now);
    }

    fn poll_sessions(&mut self, now: Instant) {
        let mut finished = Vec::new();
        let mut to_send = Vec::new();
        for (&id, s) in &mut self.sessions {
            if s.events.is_closed() {
                finished.push(id);
                continue;
            }
            loop {
                match s.dq.poll(now, s.set.len()) {
                    Step::Send(q) => {
                        s.stages += 1;
                        to_send.push((id, q));
                    }
                    Step::WaitUntil(_) => break,
                    Step::Done => {
                        finished.push(id);
                        break;
                    }
                }
            }
        }
        for (id, q) in to_send {
            self.by_query.insert(q.id, id);
            let actions = self.router.start_query(now, q);
            self.apply(actions);
        }
        for id in finished {
            if let Some(s) = self.sessions.remove(&id) {
                self.active.store(self.sessions.len(), Ordering::Relaxed);
                for qid in s.dq.ids() {
                    self.by_query.remove(qid);
                }
                let _ = s.events.try_send(SearchEvent::Done {
                    results: s.set.len(),
                    stages: s.stages,
                });
            }
        }
    }

    fn on_internal(&mut self, msg: Internal) {
        let now = Instant::now();
        match msg {
            Internal::Inbound { peer, msg } => {
                let actions = match msg {
                    Ok(m) => self.router.on_message(now, peer, m),
                    Err(e) => self.router.on_malformed(now, peer, e),
                };
                self.apply(actions);
            }
            Internal::LocalHits { id, records } => {
                let actions = self.router.local_hits(now, id, records);
                self.apply(actions);
            }
            Internal::SessionHits {
                session,
                records,
                local,
            } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                let query = s.set_query();
                for r in records {
                    if r.verify() && query.matches(&r.body) {
                        let extra = local.iter().find(|h| h.body == r.body);
                        Self::add_result(s, r, extra);
                    }
                }
            }
            Internal::Indexed {
                keywords,
                items,
                changed,
            } => {
                self.router.set_local_keywords(&keywords);
                self.stats.indexed_items = items;
                if changed {
                    // New items: publish their keywords soon (debounced).
                    self.publish_due = true;
                }
            }
            Internal::DroppedStream => self.stats.dropped_streams += 1,
        }
    }

    fn add_result(s: &mut Session, record: SignedRecord, local: Option<&spore_search::index::Hit>) {
        let id = record.body.id;
        if s.set.add(record) == Added::Nothing {
            return;
        }
        let Some(m) = s.set.get(&id) else { return };
        let mut hit = hit_of(&m.record.body, &m.publishers, m.relevance);
        if let Some(l) = local {
            hit.tags = l.tags.clone();
            hit.description = l.description.clone();
        }
        // A consumer that cannot keep up misses updates, never stalls the router.
        let _ = s.events.try_send(SearchEvent::Hit(hit));
    }

    fn apply(&mut self, actions: Vec<Action<PeerId>>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => self.send(to, &msg),
                Action::SearchLocal { query } => self.answer_locally(query),
                Action::Deliver { id, records, .. } => {
                    let Some(s) = self
                        .by_query
                        .get(&id)
                        .and_then(|sid| self.sessions.get_mut(sid))
                    else {
                        continue;
                    };
                    for r in records {
                        Self::add_result(s, r, None);
                    }
                }
                Action::Penalise {
                    peer,
                    offence,
                    banned,
                } => {
                    tracing::debug!(%peer, %offence, banned, "search: peer misbehaved");
                    if banned {
                        self.stats.banned += 1;
                        tracing::info!(%peer, %offence, "search: banning peer");
                        let net = self.net.clone();
                        self.jobs.spawn(async move {
                            let _ = net.disconnect(peer).await;
                        });
                    }
                }
            }
        }
    }

    fn send(&mut self, to: PeerId, msg: &Message) {
        let Ok(permit) = self.outbound.clone().try_acquire_owned() else {
            self.stats.dropped_streams += 1;
            return;
        };
        let frame = msg.encode();
        let net = self.net.clone();
        self.jobs.spawn(async move {
            send_message(net, to, frame).await;
            drop(permit);
        });
    }

    fn answer_locally(&mut self, query: Query) {
        let Some(signer) = self.signer.clone() else {
            return;
        };
        let Ok(permit) = self.local_searches.clone().try_acquire_owned() else {
            // Overloaded: this query gets no local answer (it was still forwarded).
            return;
        };
        let index = self.index.clone();
        let internal = self.internal.clone();
        self.jobs.spawn(async move {
            let id = query.id;
            let limit = query.result_limit();
            let records = tokio::task::spawn_blocking(move || {
                let index = index.lock().ok()?;
                let hits = index.search(&query, true, limit).ok()?;
                let signer = Signer(signer);
                Some(
                    hits.into_iter()
                        .filter(|h| query.matches(&h.body))
                        .map(|h| SignedRecord::sign(h.body, &signer))
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            drop(permit);
            if !records.is_empty() {
                let _ = internal.send(Internal::LocalHits { id, records }).await;
            }
        });
    }

    fn send_filters(&mut self) {
        let Some(filter) = self.router.own_filter() else {
            return;
        };
        let digest = filter_digest(&filter);
        let msg = Message::Filter(filter);
        let peers: Vec<PeerId> = self.router.neighbours().copied().collect();
        for p in peers {
            if self.sent_filters.get(&p) == Some(&digest) {
                continue;
            }
            self.sent_filters.insert(p, digest);
            self.send(p, &msg);
        }
    }

    fn reindex(&mut self, synced: Option<tokio::sync::oneshot::Sender<()>>) {
        let index = self.index.clone();
        let store = self.store.clone();
        let internal = self.internal.clone();
        self.jobs.spawn(async move {
            let indexed = tokio::task::spawn_blocking(move || {
                let items = shared_items(&store).ok()?;
                let mut index = index.lock().ok()?;
                let (added, removed) = index.sync(&items).ok()?;
                Some((index.keywords().ok()?, items.len(), added + removed > 0))
            })
            .await
            .ok()
            .flatten();
            if let Some((keywords, items, changed)) = indexed {
                let _ = internal
                    .send(Internal::Indexed {
                        keywords,
                        items,
                        changed,
                    })
                    .await;
            }
            if let Some(synced) = synced {
                let _ = synced.send(());
            }
        });
    }

    fn publish_keywords(&mut self) {
        let Some(signer) = self.signer.clone() else {
            return;
        };
        let index = self.index.clone();
        let net = self.net.clone();
        let max = self.config.dht_max_keywords;
        self.jobs.spawn(async move {
            let records = tokio::task::spawn_blocking(move || {
                let items = index.lock().ok()?.items().ok()?;
                let signer = Signer(signer);
                let signed: Vec<SignedRecord> = items
                    .into_iter()
                    .map(|b| SignedRecord::sign(b, &signer))
                    .collect();
                Some(dht::records_to_publish(&signed, max))
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            // A few at a time: each put is a DHT query.
            let count = records.len();
            futures::stream::iter(records)
                .for_each_concurrent(4, |r| {
                    let net = net.clone();
                    async move {
                        let key = dht::dht_key(&r.keyword);
                        if let Err(e) = net.put_record(key, r.encode()).await {
                            tracing::debug!(keyword = %r.keyword, "keyword record not published: {e}");
                        }
                    }
                })
                .await;
            tracing::debug!(count, "keyword records published");
        });
    }
}

impl Session {
    fn set_query(&self) -> Query {
        self.set.query().clone()
    }
}

fn filter_digest(filter: &RouteFilter) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for l in &filter.levels {
        h.update(l.as_bytes());
    }
    *h.finalize().as_bytes()
}
