//! The download side: a controller task per download, a session task per
//! source, and a blocking worker that owns the partial blob.
//!
//! ```text
//!  sessions ──Event──►  controller (Scheduler)  ──Cmd──► sessions
//!  sessions ──payload──► worker (PartialBlob: ingest, flush, finish)
//!  worker   ──Done───►  controller;  worker ──view──► serve side
//! ```
//!
//! Nobody waits on a slower party in a cycle: the controller only
//! `try_send`s to sessions and never awaits the worker; sessions await the
//! controller's event queue and the worker's queue (back-pressure on the
//! stream); the worker awaits nothing but its queue.

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use spore_core::{Bitfield, ContentKind, GROUP_SIZE, Hash, group_count};
use spore_net::{Multiaddr, PeerId};
use spore_store::{Blob, BlobState, ChunkNum, ChunkRanges, IngestError, PartialBlob, StoreError};
use spore_transfer::{
    scheduler::{Request, RequestId, Scheduler, SchedulerConfig},
    wire::{self, ErrorCode, Message, Session, Status},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    DownloadRequest, DownloadState, Keep, Progress, Shared, SourceProgress, announce, lock, seed,
    stream_io::{self, FrameError},
};

/// Ids of the size-authenticating requests (the scheduler's count from 0).
const SIZING_IDS: u64 = 1 << 62;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const PING_AFTER: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer that lacked the blob waits before we ask it again
/// (unless it shows it has some sooner).
const MISSING_RETRY: Duration = Duration::from_secs(5);
/// How often the controller wakes up at most (timeouts, refills, progress).
const TICK: Duration = Duration::from_millis(100);
/// Progress snapshots at most this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// What we hold is shown to the serve side at most this often: a peer's
/// request held for a group coming to us (cut-through) is served once the
/// group shows there.
const VIEW_EVERY: Duration = Duration::from_millis(50);
/// Verified groups are made durable at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A download without any source for this long fails.
const NO_SOURCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Payloads queued for the worker (each ≤ ~1 MiB: bounded memory).
const WORKER_QUEUE: usize = 8;

/// From a session to the controller.
#[derive(Debug)]
enum Event {
    Up(PeerId),
    /// The peer's full have-set for a blob of `size` bytes.
    Avail {
        peer: PeerId,
        size: u64,
        bits: Bitfield,
    },
    Have {
        peer: PeerId,
        ranges: Vec<Range<u64>>,
    },
    /// The peer asked for these groups itself (see `Message::Coming`).
    Coming {
        peer: PeerId,
        ranges: Vec<Range<u64>>,
    },
    Choked {
        peer: PeerId,
        choked: bool,
    },
    /// A request got no (complete) payload.
    Failed {
        peer: PeerId,
        id: u64,
    },
    Closed {
        peer: PeerId,
        why: String,
        comeback: Comeback,
    },
    Providers(Vec<(PeerId, Vec<Multiaddr>)>),
    DiscoveryDone,
}

/// From the controller to a session.
#[derive(Debug)]
enum Cmd {
    Request { id: u64, groups: Range<u64> },
    Cancel { id: u64 },
}

/// To the worker.
#[derive(Debug)]
enum Work {
    Ingest {
        peer: PeerId,
        id: u64,
        groups: Range<u64>,
        chunks: Vec<Bytes>,
    },
    Tick,
    /// The size was wrong: drop the partial (and its record if empty) and stop.
    Discard,
}

/// From the worker.
#[derive(Debug)]
enum Done {
    Ingested {
        peer: PeerId,
        id: u64,
        new_groups: Vec<u64>,
        /// Bytes of groups that verified but were already present.
        duplicate_bytes: u64,
    },
    Bad {
        peer: PeerId,
        id: u64,
        group: u64,
        new_groups: Vec<u64>,
        duplicate_bytes: u64,
        /// Payload bytes of the response that were thrown away: all of it
        /// but the groups that verified before the bad one.
        wasted_bytes: u64,
    },
    /// A response that ended short (abandoned by its sender, or cut).
    Truncated {
        peer: PeerId,
        id: u64,
        new_groups: Vec<u64>,
        duplicate_bytes: u64,
        /// Payload bytes past the last whole group: received, then dropped.
        cut_bytes: u64,
    },
    Fatal(String),
    Finished,
}

#[derive(Debug, Default)]
struct Source {
    addrs: Vec<Multiaddr>,
    cmds: Option<mpsc::Sender<Cmd>>,
    up: bool,
    unchoked: bool,
    claim: Option<(u64, Bitfield)>,
    in_sched: bool,
    retry_at: Option<Instant>,
    failures: u32,
    permanent: bool,
    /// It said it lacks the blob: asked again once it shows it has some
    /// (it asks us for the blob, or the DHT lists it), or after a long wait.
    missing: bool,
    /// Heard of again while a session was being opened (see `missing`).
    heard_again: bool,
    useful_bytes: u64,
    duplicate_bytes: u64,
    wasted_bytes: u64,
    bad_groups: u32,
    /// Bad groups sent for the size check, before the scheduler existed
    /// (handed to the scheduler when the peer joins it, so the ban after
    /// `ban_after` bad groups counts them too).
    bad_sizing: u32,
    banned: bool,
}

struct Controller {
    shared: Arc<Shared>,
    hash: Hash,
    kind: ContentKind,
    discover: bool,
    /// Tag the blob when it completes (false for a collection's parts).
    tag: bool,
    cancel: spore_net::CancellationToken,
    sessions_cancel: spore_net::CancellationToken,
    sources: HashMap<PeerId, Source>,
    sessions: JoinSet<()>,
    events_tx: mpsc::Sender<Event>,
    results_tx: mpsc::Sender<Done>,
    worker_tx: watch::Sender<Option<mpsc::Sender<Work>>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    view_tx: Arc<watch::Sender<Option<Blob>>>,
    expected_tx: watch::Sender<Option<Bitfield>>,
    progress_tx: watch::Sender<Progress>,
    /// Authenticated size, once the last group verified.
    size: Option<u64>,
    /// Size being authenticated, and the request doing it.
    candidate: Option<(u64, Option<(PeerId, u64)>)>,
    next_sizing: u64,
    /// Verified groups (before the scheduler exists).
    verified: Option<Bitfield>,
    resumed_bytes: u64,
    sched: Option<Scheduler<PeerId>>,
    /// Size of a partial found in the store at start.
    stored_size: Option<u64>,
    discovering: bool,
    next_discovery: Instant,
    last_source_seen: Instant,
    rate: f64,
    rate_mark: (Instant, u64),
    finished: bool,
    failed: Option<String>,
    /// Streaming readers and their playhead (see `stream.rs`).
    stream: Arc<super::stream::StreamControl>,
    playhead: Option<u64>,
    /// Bytes of responses cut short that could not be kept (see `Done::Truncated`).
    cut_bytes: u64,
}

/// What a download feeds its serve side (see [`super::ActiveDownload`]).
pub(super) struct ServeFeed {
    pub(super) view: watch::Sender<Option<Blob>>,
    pub(super) expected: watch::Sender<Option<Bitfield>>,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    request: DownloadRequest,
    cancel: spore_net::CancellationToken,
    progress_tx: watch::Sender<Progress>,
    feed: ServeFeed,
    mut candidates: mpsc::Receiver<PeerId>,
    stream: Arc<super::stream::StreamControl>,
) {
    let mut playhead_rx = stream.playhead.subscribe();
    let hash = request.hash;
    let (events_tx, mut events_rx) = mpsc::channel(1024);
    let (results_tx, mut results_rx) = mpsc::channel(1024);
    let now = Instant::now();
    let mut c = Controller {
        hash,
        kind: request.kind,
        discover: request.discover,
        tag: request.keep == Keep::Tagged,
        sessions_cancel: cancel.child_token(),
        cancel,
        sources: HashMap::new(),
        sessions: JoinSet::new(),
        events_tx,
        results_tx,
        worker_tx: watch::channel(None).0,
        worker: None,
        view_tx: Arc::new(feed.view),
        expected_tx: feed.expected,
        progress_tx,
        size: None,
        candidate: None,
        next_sizing: SIZING_IDS,
        verified: None,
        resumed_bytes: 0,
        sched: None,
        stored_size: None,
        discovering: false,
        next_discovery: now,
        last_source_seen: now,
        rate: 0.0,
        rate_mark: (now, 0),
        finished: false,
        failed: None,
        stream,
        playhead: None,
        cut_bytes: 0,
        shared,
    };

    // Already here, or resuming?
    let store = c.shared.store.clone();
    let record = tokio::task::spawn_blocking(move || store.get(&hash)).await;
    match record {
        Ok(Ok(Some(r))) if r.state == BlobState::Complete => {
            c.size = Some(r.size);
            c.finished = true;
        }
        Ok(Ok(Some(r))) if matches!(r.state, BlobState::Partial(_)) => c.stored_size = Some(r.size),
        Ok(Err(e)) => c.failed = Some(e.to_string()),
        _ => {}
    }
    if let Some(size) = c.stored_size
        && let Err(e) = c.open_partial(size).await
    {
        c.failed = Some(e);
    }

    for (peer, addrs) in request.providers {
        c.add_source(peer, addrs);
    }
    c.publish();

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_publish = Instant::now();
    let mut last_worker_tick = Instant::now();
    while !c.finished && c.failed.is_none() {
        tokio::select! {
            _ = c.cancel.cancelled() => break,
            Some(ev) = events_rx.recv() => c.on_event(ev).await,
            Some(done) = results_rx.recv() => c.on_done(done),
            Some(peer) = candidates.recv() => c.add_source(peer, Vec::new()),
            Ok(()) = playhead_rx.changed() => {
                let playhead = *playhead_rx.borrow_and_update();
                c.on_playhead(playhead);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                c.on_tick(now);
                c.publish_expected();
                // a size check that failed is tried again (with another peer if there is one)
                c.try_sizing().await;
                if now.duration_since(last_worker_tick) >= FLUSH_EVERY / 2 {
                    last_worker_tick = now;
                    if let Some(tx) = c.worker_tx.borrow().as_ref() {
                        let _ = tx.try_send(Work::Tick);
                    }
                }
                if now.duration_since(last_publish) >= PUBLISH_EVERY {
                    last_publish = now;
                    c.publish();
                }
            }
        }
    }

    // Wind down: sessions first (they hold the worker's queue), then the worker.
    c.sessions_cancel.cancel();
    for s in c.sources.values_mut() {
        s.cmds = None;
    }
    while c.sessions.join_next().await.is_some() {}
    c.worker_tx.send_replace(None);
    if let Some(worker) = c.worker.take() {
        let _ = worker.await;
    }
    while let Ok(done) = results_rx.try_recv() {
        c.on_done(done);
    }
    if c.finished {
        // Tag what the user asked for (the worker did, unless it was already
        // here), then write it out if asked to.
        let (store, tag, dest) = (c.shared.store.clone(), c.tag, request.dest.clone());
        let exported = tokio::task::spawn_blocking(move || {
            if tag && store.get(&hash)?.is_some_and(|r| r.tag.is_none()) {
                store.tag(&hash, spore_store::Tag::now(hash.short()))?;
            }
            match dest {
                Some(dest) => store.export(&hash, &dest, false).map(|_| ()),
                None => Ok(()),
            }
        })
        .await;
        match exported {
            Ok(Ok(())) => {}
            Ok(Err(e)) => (c.finished, c.failed) = (false, Some(e.to_string())),
            Err(e) => (c.finished, c.failed) = (false, Some(e.to_string())),
        }
    }
    if c.finished {
        let net = c.shared.net.clone();
        let cancel = c.shared.cancel.clone();
        lock(&c.shared.tasks).spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = net.start_providing(hash) => {
                    if let Err(e) = r { tracing::debug!(%hash, "could not announce: {e}"); }
                }
            }
        });
    }
    c.publish();
    {
        let mut downloads = lock(&c.shared.downloads);
        if downloads
            .get(&hash)
            .is_some_and(|a| a.handle.progress.same_channel(&c.progress_tx.subscribe()))
        {
            downloads.remove(&hash);
        }
        // with nothing left to fetch, upload slots go round robin (seeding)
        if downloads.is_empty() {
            lock(&c.shared.choker).set_downloading(false);
        }
    }
    if let Some(sched) = &c.sched {
        tracing::info!(%hash, finished = c.finished, cut_bytes = c.cut_bytes, stats = ?sched.stats(), "download task ends");
    } else {
        tracing::debug!(%hash, finished = c.finished, "download task ends");
    }
}

impl Controller {
    fn group_len(&self, g: u64) -> u64 {
        let size = self.size.unwrap_or(0);
        ((g + 1) * GROUP_SIZE).min(size) - (g * GROUP_SIZE).min(size)
    }

    fn verified_bits(&self) -> Option<&Bitfield> {
        match &self.sched {
            Some(s) => Some(s.verified()),
            None => self.verified.as_ref(),
        }
    }

    fn verified_bytes(&self) -> u64 {
        let (Some(size), Some(bits)) = (
            self.size.or(self.candidate.map(|c| c.0)),
            self.verified_bits(),
        ) else {
            return 0;
        };
        let n = group_count(size);
        let mut bytes = bits.count_ones() * GROUP_SIZE;
        if bits.get(n - 1) {
            bytes = bytes - GROUP_SIZE + (size - (n - 1) * GROUP_SIZE);
        }
        bytes.min(size)
    }

    /// Tells the serve side what we will hold if our requests succeed.
    fn publish_expected(&self) {
        let Some(expected) = self.sched.as_ref().map(|s| s.expected()) else {
            return;
        };
        self.expected_tx.send_if_modified(|old| {
            let changed = old.as_ref() != Some(&expected);
            if changed {
                *old = Some(expected);
            }
            changed
        });
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let bytes = if self.finished {
            self.size.unwrap_or(0)
        } else {
            self.verified_bytes()
        };
        let (t0, b0) = self.rate_mark;
        let dt = now.duration_since(t0).as_secs_f64();
        if dt >= 0.2 {
            let inst = bytes.saturating_sub(b0) as f64 / dt;
            self.rate = if self.rate == 0.0 {
                inst
            } else {
                0.7 * self.rate + 0.3 * inst
            };
            self.rate_mark = (now, bytes);
        }
        let state = if self.finished {
            DownloadState::Done
        } else if let Some(e) = &self.failed {
            DownloadState::Failed(e.clone())
        } else if self.sched.is_some() {
            DownloadState::Downloading
        } else {
            DownloadState::Starting
        };
        let mut sources: Vec<SourceProgress> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.useful_bytes > 0 || s.duplicate_bytes > 0 || s.bad_groups > 0 || s.banned
            })
            .map(|(p, s)| SourceProgress {
                peer: *p,
                useful_bytes: s.useful_bytes,
                duplicate_bytes: s.duplicate_bytes,
                wasted_bytes: s.wasted_bytes,
                bad_groups: s.bad_groups,
                banned: s.banned,
            })
            .collect();
        sources.sort_by_key(|s| std::cmp::Reverse(s.useful_bytes));
        let progress = Progress {
            hash: self.hash.to_hex(),
            size: self.size,
            verified_bytes: bytes,
            resumed_bytes: self.resumed_bytes,
            duplicate_bytes: self.sources.values().map(|s| s.duplicate_bytes).sum(),
            wasted_bytes: self.sources.values().map(|s| s.wasted_bytes).sum(),
            peers: self.sources.values().filter(|s| s.up).count(),
            rate: self.rate,
            state,
            sources,
            files: None,
            files_done: 0,
        };
        self.progress_tx.send_replace(progress);
    }

    fn add_source(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == self.shared.net.local_peer_id() {
            return;
        }
        let max = self.shared.config.max_sources;
        let known = self.sources.len();
        let s = match self.sources.get_mut(&peer) {
            Some(s) => s,
            None if known < max * 4 => self.sources.entry(peer).or_default(),
            None => return,
        };
        for a in addrs {
            if !s.addrs.contains(&a) && s.addrs.len() < 16 {
                s.addrs.push(a);
            }
        }
        if s.cmds.is_some() {
            // its answer may be a NotFound sent before it started downloading
            s.heard_again = true;
        }
        if s.missing {
            // Heard of again (it asks us for the blob, or the DHT lists it):
            // a peer that lacked the blob may have some of it now.
            s.missing = false;
            s.retry_at = None;
        }
        if s.cmds.is_none() && !s.permanent && !s.banned && s.retry_at.is_none() {
            self.connect(peer);
        }
    }

    fn connect(&mut self, peer: PeerId) {
        let active = self.sources.values().filter(|s| s.cmds.is_some()).count();
        if active >= self.shared.config.max_sources || self.finished {
            return;
        }
        let Some(s) = self.sources.get_mut(&peer) else {
            return;
        };
        let (tx, rx) = mpsc::channel(512);
        s.cmds = Some(tx);
        s.up = false;
        s.unchoked = false;
        s.retry_at = None;
        s.heard_again = false;
        let ctx = SessionCtx {
            shared: self.shared.clone(),
            hash: self.hash,
            peer,
            addrs: s.addrs.clone(),
            events: self.events_tx.clone(),
            worker: self.worker_tx.subscribe(),
            view: self.view_tx.subscribe(),
            cancel: self.sessions_cancel.clone(),
        };
        self.sessions.spawn(fetch_session(ctx, rx));
    }

    fn send(&mut self, peer: &PeerId, cmd: Cmd) -> bool {
        self.sources
            .get(peer)
            .and_then(|s| s.cmds.as_ref())
            .is_some_and(|tx| tx.try_send(cmd).is_ok())
    }

    fn send_cancels(&mut self, cancels: Vec<Request<PeerId>>) {
        for r in cancels {
            tracing::debug!(peer = %r.peer, id = r.id.0, groups = ?r.groups, "cancel");
            self.send(&r.peer, Cmd::Cancel { id: r.id.0 });
        }
    }

    /// Sends `peer` as many requests as the scheduler gives it.
    fn fill(&mut self, peer: PeerId) {
        let ready = self
            .sources
            .get(&peer)
            .is_some_and(|s| s.up && s.unchoked && s.in_sched);
        if !ready {
            return;
        }
        let Some(sched) = self.sched.as_mut() else {
            return;
        };
        let actions = sched.requests_for(&peer, Instant::now());
        self.send_cancels(actions.cancels);
        for r in actions.requests {
            tracing::trace!(%peer, id = r.id.0, groups = ?r.groups, "request");
            let cmd = Cmd::Request {
                id: r.id.0,
                groups: r.groups.clone(),
            };
            if !self.send(&peer, cmd)
                && let Some(sched) = self.sched.as_mut()
            {
                sched.on_request_failed(&peer, r.id, Instant::now());
            }
        }
    }

    fn fill_all(&mut self) {
        let peers: Vec<PeerId> = self.sources.keys().copied().collect();
        for p in peers {
            self.fill(p);
        }
    }

    /// Opens the partial blob for `size` and starts its worker.
    async fn open_partial(&mut self, size: u64) -> Result<(), String> {
        let store = self.shared.store.clone();
        let (hash, kind) = (self.hash, self.kind);
        let partial = tokio::task::spawn_blocking(move || store.partial(&hash, size, kind))
            .await
            .map_err(|e| e.to_string())?;
        let partial = match partial {
            Ok(p) => p,
            Err(StoreError::AlreadyComplete(_)) => {
                self.size = Some(size);
                self.finished = true;
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        let verified = partial.verified().clone();
        let n = group_count(size);
        self.resumed_bytes = verified.count_ones() * GROUP_SIZE;
        let last_known = verified.get(n - 1);
        self.verified = Some(verified);
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let results = self.results_tx.clone();
        let view = self.view_tx.clone();
        let store = self.shared.store.clone();
        let tag = self.tag;
        let stream = self.stream.clone();
        self.worker = Some(tokio::task::spawn_blocking(move || {
            worker(partial, rx, results, &view, &store, tag, &stream);
        }));
        self.worker_tx.send_replace(Some(tx));
        self.candidate = Some((size, None));
        if last_known {
            self.authenticated();
        }
        Ok(())
    }

    /// The candidate size is proven: start the scheduler.
    fn authenticated(&mut self) {
        let Some((size, _)) = self.candidate.take() else {
            return;
        };
        self.size = Some(size);
        let verified = self
            .verified
            .take()
            .unwrap_or_else(|| Bitfield::new(group_count(size)));
        tracing::debug!(hash = %self.hash, size, "size verified");
        let config = SchedulerConfig {
            max_peers: self.shared.config.max_sources.max(1) * 2,
            ..SchedulerConfig::default()
        };
        match Scheduler::new(size, verified, config, seed()) {
            Ok(mut s) => {
                s.set_playhead(self.playhead, Instant::now());
                self.sched = Some(s);
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        }
        // Announce ourselves as a (partial) provider, so other downloaders find us.
        let net = self.shared.net.clone();
        let cancel = self.cancel.clone();
        let hash = self.hash;
        self.sessions.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = net.start_providing(hash) => {}
            }
        });
        let peers: Vec<PeerId> = self.sources.keys().copied().collect();
        for p in peers {
            self.join_scheduler(p);
        }
        self.fill_all();
        // Streaming readers wait for the size: tell them now, not at the next tick.
        self.publish();
    }

    /// Adds `peer` to the scheduler if its claim matches the size.
    fn join_scheduler(&mut self, peer: PeerId) {
        let (Some(size), Some(sched)) = (self.size, self.sched.as_mut()) else {
            return;
        };
        let Some(s) = self.sources.get_mut(&peer) else {
            return;
        };
        let Some((claimed, bits)) = s.claim.clone() else {
            return;
        };
        if claimed != size {
            // Wrong size: a liar, or a different blob. Either way, useless.
            s.permanent = true;
            s.cmds = None;
            return;
        }
        if !s.in_sched {
            let now = Instant::now();
            match sched.add_peer(peer, now) {
                Ok(()) => s.in_sched = true,
                Err(_) => return,
            }
            // its bad groups from the size check count towards its ban
            let last = group_count(size) - 1;
            let banned = (0..s.bad_sizing).any(|_| sched.on_bad_group(&peer, last, now).banned);
            if banned {
                self.ban(peer);
                return;
            }
        }
        // A source may withdraw groups (a `Have` slice with their bits
        // clear): what we asked of it for those is asked elsewhere.
        if let Ok(withdrawn) = sched.on_bitfield(&peer, bits, Instant::now())
            && !withdrawn.is_empty()
        {
            tracing::debug!(hash = %self.hash, %peer, requests = withdrawn.len(), "source withdrew groups");
            self.send_cancels(withdrawn);
        }
    }

    /// Without a size: pick one and verify the last group.
    async fn try_sizing(&mut self) {
        if self.size.is_some() || self.failed.is_some() || self.finished {
            return;
        }
        if self.candidate.is_none() {
            // a size claimed by a peer that failed the check before comes last
            let claim = self
                .sources
                .values()
                .filter(|s| !s.banned && s.claim.is_some())
                .min_by_key(|s| s.bad_sizing)
                .and_then(|s| s.claim.as_ref().map(|c| c.0));
            let Some(size) = self.stored_size.or(claim) else {
                return;
            };
            if let Err(e) = self.open_partial(size).await {
                self.failed = Some(e);
                return;
            }
            if self.size.is_some() || self.finished {
                return;
            }
        }
        let Some((size, None)) = self.candidate else {
            return;
        };
        let last = group_count(size) - 1;
        // peers that failed the check before come last
        let peer = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.up && s.unchoked
                    && !s.banned
                    && s.claim
                        .as_ref()
                        .is_some_and(|(sz, bits)| *sz == size && bits.get(last))
            })
            .min_by_key(|(_, s)| s.bad_sizing)
            .map(|(p, _)| *p);
        let Some(peer) = peer else {
            return;
        };
        let id = self.next_sizing;
        self.next_sizing += 1;
        if self.send(
            &peer,
            Cmd::Request {
                id,
                groups: last..last + 1,
            },
        ) {
            self.candidate = Some((size, Some((peer, id))));
        }
    }

    fn ban(&mut self, peer: PeerId) {
        if let Some(s) = self.sources.get_mut(&peer) {
            s.banned = true;
            s.permanent = true;
            s.cmds = None; // the session sees its queue close and says goodbye
            s.up = false;
            s.in_sched = false;
        }
        tracing::info!(hash = %self.hash, %peer, "peer banned for bad data");
    }

    async fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Up(peer) => {
                tracing::debug!(hash = %self.hash, %peer, "source session up");
                if let Some(s) = self.sources.get_mut(&peer) {
                    s.up = true;
                    s.failures = 0;
                }
                self.last_source_seen = now;
            }
            Event::Avail { peer, size, bits } => {
                tracing::debug!(hash = %self.hash, %peer, have = bits.count_ones(), "source availability");
                if let Some(s) = self.sources.get_mut(&peer) {
                    s.claim = Some((size, bits));
                }
                if self.size.is_some() {
                    self.join_scheduler(peer);
                    self.fill(peer);
                } else {
                    self.try_sizing().await;
                }
            }
            Event::Have { peer, ranges } => {
                if let Some(s) = self.sources.get_mut(&peer)
                    && let Some((_, bits)) = s.claim.as_mut()
                {
                    for r in &ranges {
                        bits.set_range(r.start..r.end.min(bits.len()));
                    }
                }
                if let Some(sched) = self.sched.as_mut() {
                    for r in ranges {
                        let _ = sched.on_have(&peer, r);
                    }
                }
                self.fill(peer);
            }
            Event::Coming { peer, ranges } => {
                if let Some(sched) = self.sched.as_mut() {
                    for r in ranges {
                        let _ = sched.on_coming(&peer, r);
                    }
                }
                self.fill(peer);
            }
            Event::Choked { peer, choked } => {
                if let Some(s) = self.sources.get_mut(&peer) {
                    s.unchoked = !choked;
                }
                if choked {
                    // Its pending requests are answered `Choked` one by one.
                } else if self.size.is_none() {
                    self.try_sizing().await;
                } else {
                    self.fill(peer);
                }
            }
            Event::Failed { peer, id } => {
                if id >= SIZING_IDS {
                    if let Some((size, Some((p, i)))) = self.candidate
                        && p == peer
                        && i == id
                    {
                        self.candidate = Some((size, None));
                    }
                } else if let Some(sched) = self.sched.as_mut() {
                    sched.on_request_failed(&peer, RequestId(id), now);
                }
            }
            Event::Closed {
                peer,
                why,
                comeback,
            } => {
                tracing::debug!(hash = %self.hash, %peer, "source session closed: {why}");
                if let Some(sched) = self.sched.as_mut() {
                    sched.remove_peer(&peer, now);
                }
                if let Some((size, Some((p, _)))) = self.candidate
                    && p == peer
                {
                    self.candidate = Some((size, None));
                }
                if let Some(s) = self.sources.get_mut(&peer) {
                    s.cmds = None;
                    s.up = false;
                    s.unchoked = false;
                    s.in_sched = false;
                    s.failures += 1;
                    s.permanent |= comeback == Comeback::Never;
                    s.missing = comeback == Comeback::WhenItHasIt;
                    let backoff = if s.missing && std::mem::take(&mut s.heard_again) {
                        // it asked us for the blob while its NotFound was on the way
                        s.missing = false;
                        Duration::from_millis(300)
                    } else if s.missing {
                        MISSING_RETRY
                    } else {
                        Duration::from_secs(1 << s.failures.min(5))
                    };
                    s.retry_at = Some(now + backoff);
                }
                self.fill_all();
                self.try_sizing().await;
            }
            Event::Providers(list) => {
                for (peer, addrs) in list {
                    self.add_source(peer, addrs);
                }
            }
            Event::DiscoveryDone => self.discovering = false,
        }
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Ingested {
                peer,
                id,
                new_groups,
                duplicate_bytes,
            } => {
                if duplicate_bytes > 0 {
                    tracing::debug!(%peer, id, duplicate_bytes, "response held groups we had");
                }
                self.verified_groups(peer, &new_groups, duplicate_bytes);
                if id >= SIZING_IDS {
                    if let Some((size, Some((_, i)))) = self.candidate
                        && i == id
                    {
                        let last = group_count(size) - 1;
                        let ok = self.verified.as_ref().is_some_and(|v| v.get(last));
                        if ok {
                            self.authenticated();
                        } else {
                            self.candidate = Some((size, None));
                        }
                    }
                } else {
                    self.fill(peer);
                }
            }
            Done::Bad {
                peer,
                id,
                group,
                new_groups,
                duplicate_bytes,
                wasted_bytes,
            } => {
                self.verified_groups(peer, &new_groups, duplicate_bytes);
                if let Some(s) = self.sources.get_mut(&peer) {
                    // responses in flight when it was banned still cost us
                    s.wasted_bytes += wasted_bytes;
                    if !s.banned {
                        s.bad_groups += 1;
                    }
                }
                if id >= SIZING_IDS {
                    // The last group or the claimed size is a lie; we cannot
                    // tell which, so it counts as one bad group like any
                    // other (banned at `ban_after`), and the peer is asked
                    // to prove the size again only if nobody else can.
                    let ban_after = SchedulerConfig::default().ban_after;
                    let ban = self.sources.get_mut(&peer).is_some_and(|s| {
                        s.bad_sizing += 1;
                        s.bad_groups >= ban_after
                    });
                    if ban {
                        self.ban(peer);
                    }
                    if let Some((size, Some((_, i)))) = self.candidate
                        && i == id
                    {
                        let others = self.sources.iter().any(|(p, s)| {
                            *p != peer && !s.banned && s.claim.as_ref().is_some_and(|c| c.0 == size)
                        });
                        let empty = self.verified.as_ref().is_none_or(|v| v.count_ones() == 0);
                        if !others && empty && ban {
                            // Nobody else claims this size: forget it.
                            if let Some(tx) = self.worker_tx.borrow().as_ref() {
                                let _ = tx.try_send(Work::Discard);
                            }
                            self.worker_tx.send_replace(None);
                            self.worker = None;
                            self.candidate = None;
                            self.stored_size = None;
                            self.verified = None;
                        } else {
                            self.candidate = Some((size, None));
                        }
                    }
                } else if let Some(sched) = self.sched.as_mut() {
                    let out = sched.on_bad_group(&peer, group, now);
                    let banned = out.banned;
                    self.send_cancels(out.cancels);
                    if banned {
                        self.ban(peer);
                    }
                    self.fill_all();
                }
            }
            Done::Truncated {
                peer,
                id,
                new_groups,
                duplicate_bytes,
                cut_bytes,
            } => {
                tracing::trace!(%peer, id, kept = new_groups.len(), cut_bytes, "a cut response's whole groups kept");
                self.cut_bytes += cut_bytes;
                self.verified_groups(peer, &new_groups, duplicate_bytes);
                if let Some(sched) = self.sched.as_mut() {
                    sched.on_request_failed(&peer, RequestId(id), now);
                }
                self.fill(peer);
            }
            Done::Fatal(e) => self.failed = Some(e),
            Done::Finished => {
                if self.size.is_none() {
                    self.size = self.candidate.map(|c| c.0);
                }
                self.finished = true;
            }
        }
    }

    /// Credits `peer` with the groups it delivered first and the bytes of
    /// those it delivered after someone else (endgame duplicates).
    fn verified_groups(&mut self, peer: PeerId, groups: &[u64], duplicate_bytes: u64) {
        let now = Instant::now();
        let mut bytes = 0;
        for &g in groups {
            bytes += self.group_len_any(g);
            if let Some(sched) = self.sched.as_mut() {
                let cancels = sched.on_group_verified(&peer, g, now);
                self.send_cancels(cancels);
            } else if let Some(v) = self.verified.as_mut() {
                v.set(g);
            }
        }
        if let Some(s) = self.sources.get_mut(&peer) {
            s.useful_bytes += bytes;
            s.duplicate_bytes += duplicate_bytes;
        }
        self.shared
            .downloaded
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        lock(&self.shared.choker).on_downloaded(&peer, bytes);
    }

    fn group_len_any(&self, g: u64) -> u64 {
        match (self.size, self.candidate) {
            (Some(_), _) => self.group_len(g),
            (None, Some((size, _))) => {
                ((g + 1) * GROUP_SIZE).min(size) - (g * GROUP_SIZE).min(size)
            }
            _ => 0,
        }
    }

    /// A streaming reader moved: fetch the window after it first.
    fn on_playhead(&mut self, playhead: Option<u64>) {
        self.playhead = playhead;
        if let Some(sched) = self.sched.as_mut() {
            let cancels = sched.set_playhead(playhead, Instant::now());
            self.send_cancels(cancels);
            self.fill_all();
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if let Some(sched) = self.sched.as_mut() {
            let poll = sched.poll(now);
            self.send_cancels(poll.timed_out);
        }
        // Reconnect sources whose backoff ended.
        let due: Vec<PeerId> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.cmds.is_none() && !s.permanent && s.retry_at.is_some_and(|t| t <= now)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            if let Some(s) = self.sources.get_mut(&p) {
                s.retry_at = None;
            }
            self.connect(p);
        }
        if self.sources.values().any(|s| s.up) {
            self.last_source_seen = now;
        } else if now.duration_since(self.last_source_seen) > NO_SOURCE_TIMEOUT {
            self.failed = Some("no source has the blob".into());
        }
        self.fill_all();
        if self.discover && !self.discovering && now >= self.next_discovery {
            self.discovering = true;
            self.next_discovery =
                now + Duration::from_secs(self.shared.config.discovery_interval_secs.max(1));
            let net = self.shared.net.clone();
            let events = self.events_tx.clone();
            let hash = self.hash;
            let cancel = self.sessions_cancel.clone();
            let known: HashSet<PeerId> = self.sources.keys().copied().collect();
            self.sessions.spawn(async move {
                let work = async {
                    let mut found = Vec::new();
                    if let Ok(list) = net
                        .find_providers_with(hash, 20, Duration::from_secs(5))
                        .await
                    {
                        found.extend(list.into_iter().map(|p| (p.peer_id, p.addrs)));
                    }
                    // Connected peers that speak the protocol may have it too.
                    if let Ok(peers) = net.peers().await {
                        for p in peers {
                            let speaks = p.protocols.is_empty()
                                || p.protocols.iter().any(|x| x == wire::PROTOCOL);
                            if speaks && !known.contains(&p.peer_id) {
                                found.push((p.peer_id, Vec::new()));
                            }
                        }
                    }
                    let _ = events.send(Event::Providers(found)).await;
                };
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = work => {}
                }
                let _ = events.try_send(Event::DiscoveryDone);
            });
        }
    }
}

/// The worker: owns the partial blob on a blocking thread.
fn worker(
    partial: PartialBlob,
    mut rx: mpsc::Receiver<Work>,
    results: mpsc::Sender<Done>,
    view: &watch::Sender<Option<Blob>>,
    store: &spore_store::Store,
    tag: bool,
    stream: &super::stream::StreamControl,
) {
    let report = |d: Done| {
        let _ = results.blocking_send(d);
    };
    let finish = |p: PartialBlob| match p.finish() {
        Ok(blob) => {
            // What the user fetched is theirs: tag it, so garbage collection keeps it.
            if tag
                && let Ok(Some(record)) = store.get(&blob.hash())
                && record.tag.is_none()
                && let Err(e) = store.tag(&blob.hash(), spore_store::Tag::now(blob.hash().short()))
            {
                tracing::warn!(hash = %blob.hash(), "could not tag the download: {e}");
            }
            view.send_replace(Some(blob));
            report(Done::Finished);
        }
        Err(e) => report(Done::Fatal(e.to_string())),
    };
    if partial.is_complete() {
        finish(partial);
        return;
    }
    view.send_replace(Some(partial.reader()));
    let mut partial = Some(partial);
    let mut last_flush = Instant::now();
    let mut last_view = Instant::now();
    while let Some(work) = rx.blocking_recv() {
        let Some(p) = partial.as_mut() else {
            continue; // finished: drain until the senders are gone
        };
        match work {
            Work::Tick => {}
            Work::Discard => {
                let hash = p.hash();
                let empty = p.verified().count_ones() == 0;
                drop(partial.take());
                if empty {
                    let _ = store.remove(&hash);
                }
                view.send_replace(None);
                return;
            }
            Work::Ingest {
                peer,
                id,
                groups,
                chunks,
            } => {
                let c = wire::group_chunks(groups);
                let ranges = ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end));
                let payload: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                let size = p.size();
                // Payload bytes not kept: all but the groups that verified.
                let dropped = |new: &[u64], duplicate_bytes: u64| {
                    let kept: u64 = new
                        .iter()
                        .map(|g| ((g + 1) * GROUP_SIZE).min(size) - (g * GROUP_SIZE).min(size))
                        .sum();
                    payload.saturating_sub(kept + duplicate_bytes)
                };
                let done = match p.ingest(&ranges, &chunks) {
                    Ok(ing) => Done::Ingested {
                        peer,
                        id,
                        new_groups: ing.new_groups,
                        duplicate_bytes: ing.duplicate_bytes,
                    },
                    Err(IngestError::BadData { group, ingested }) => Done::Bad {
                        peer,
                        id,
                        group,
                        wasted_bytes: dropped(&ingested.new_groups, ingested.duplicate_bytes),
                        new_groups: ingested.new_groups,
                        duplicate_bytes: ingested.duplicate_bytes,
                    },
                    Err(IngestError::Truncated { ingested, .. }) => Done::Truncated {
                        peer,
                        id,
                        cut_bytes: dropped(&ingested.new_groups, ingested.duplicate_bytes),
                        new_groups: ingested.new_groups,
                        duplicate_bytes: ingested.duplicate_bytes,
                    },
                    Err(IngestError::Store(e)) => Done::Fatal(e.to_string()),
                };
                report(done);
            }
        }
        if p.is_complete() {
            if let Some(p) = partial.take() {
                finish(p);
            }
            continue;
        }
        let now = Instant::now();
        if now.duration_since(last_flush) >= FLUSH_EVERY {
            last_flush = now;
            if let Err(e) = p.flush_in_background() {
                report(Done::Fatal(e.to_string()));
            }
        }
        // A streaming reader waits for every group: show them at once.
        if now.duration_since(last_view) >= VIEW_EVERY || stream.is_streaming() {
            last_view = now;
            view.send_replace(Some(p.reader()));
        }
    }
    if let Some(mut p) = partial
        && let Err(e) = p.flush()
    {
        tracing::warn!("flushing a download at exit: {e}");
    }
}

/// Hands `work` to the download's worker; false if there is none to take it.
async fn to_worker(ctx: &SessionCtx, work: Work) -> bool {
    let worker = ctx.worker.borrow().clone();
    match worker {
        Some(worker) => worker.send(work).await.is_ok(),
        None => false,
    }
}

struct SessionCtx {
    shared: Arc<Shared>,
    hash: Hash,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    events: mpsc::Sender<Event>,
    worker: watch::Receiver<Option<mpsc::Sender<Work>>>,
    /// What we hold of the blob so far (told to the source piece by piece).
    view: watch::Receiver<Option<Blob>>,
    cancel: spore_net::CancellationToken,
}

async fn fetch_session(ctx: SessionCtx, cmds: mpsc::Receiver<Cmd>) {
    let peer = ctx.peer;
    let events = ctx.events.clone();
    let (why, comeback) = tokio::select! {
        r = session_inner(&ctx, cmds) => r,
        _ = ctx.cancel.cancelled() => ("cancelled".to_string(), Comeback::Later),
    };
    let _ = events
        .send(Event::Closed {
            peer,
            why,
            comeback,
        })
        .await;
}

/// Whether to ask a peer again after its session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comeback {
    /// A transient failure: after a backoff.
    Later,
    /// It lacks the blob (NotFound): once it shows it has some, or after
    /// [`MISSING_RETRY`]. Peers that start the same download a moment after
    /// us answer this first, then become our best sources.
    WhenItHasIt,
    /// It refused us or broke the protocol.
    Never,
}

impl Comeback {
    fn after_error(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotFound => Self::WhenItHasIt,
            ErrorCode::Refused => Self::Never,
            _ => Self::Later,
        }
    }
}

/// Runs one source session; returns why it ended and whether to give up on the peer.
async fn session_inner(ctx: &SessionCtx, mut cmds: mpsc::Receiver<Cmd>) -> (String, Comeback) {
    let (peer, hash, net) = (ctx.peer, ctx.hash, &ctx.shared.net);
    if !ctx.addrs.is_empty() {
        let _ = tokio::time::timeout(DIAL_TIMEOUT, net.dial_peer(peer, ctx.addrs.clone())).await;
    }
    let stream = match net.open_stream(peer, wire::PROTOCOL).await {
        Ok(s) => s,
        Err(e) => return (format!("opening a stream: {e}"), Comeback::Later),
    };
    let (mut rd, mut wr) = stream_io::split(stream);
    let mut session = Session::new(hash, 1);
    let io = |e: FrameError| (e.to_string(), Comeback::Later);
    let hello = session.hello();
    // The source learns what we hold in whole pieces (a super-seeding one
    // follows it), not per verified batch: it does not download from us here.
    let mut view = Some(ctx.view.clone());
    let mut announced: Option<Bitfield> = None;
    let held = view.as_mut().and_then(|rx| rx.borrow_and_update().clone());
    let greeting = async {
        wr.send(&hello).await?;
        let whole = held.map(|b| (b.size(), announce::whole_pieces(&b.available())));
        match whole {
            Some((size, whole)) if whole.count_ones() > 0 => {
                announce::announce_growth(&mut wr, hash, size, whole, &mut announced).await?;
            }
            _ => wr.send(&Message::DontHave { hash }).await?,
        }
        wr.send(&Message::Interested).await
    };
    if let Err(e) = greeting.await {
        return io(e);
    }
    match rd.next_within(HELLO_TIMEOUT).await {
        Ok(msg @ Message::Hello(_)) => {
            if let Err(v) = session.receive(&msg) {
                wr.close_with(ErrorCode::ProtocolViolation, &v.to_string())
                    .await;
                return (v.to_string(), Comeback::Never);
            }
        }
        Ok(Message::Error { code, message }) => {
            return (
                format!("peer refused: {code:?} {message}"),
                Comeback::after_error(code),
            );
        }
        Ok(_) => {
            wr.close_with(ErrorCode::ProtocolViolation, "expected Hello")
                .await;
            return ("no Hello".into(), Comeback::Never);
        }
        Err(e) => return io(e),
    }
    if ctx.events.send(Event::Up(peer)).await.is_err() {
        return ("download ended".into(), Comeback::Later);
    }

    let mut size: Option<u64> = None;
    let mut bits: Option<Bitfield> = None;
    let mut inflight: HashMap<u64, Range<u64>> = HashMap::new();
    let mut current: Option<(u64, Vec<Bytes>)> = None;
    let mut last_heard = Instant::now();
    let mut last_sent = Instant::now();
    let outcome: Result<(String, Comeback), (ErrorCode, String)> = loop {
        let idle = tokio::time::Instant::from_std(last_heard + IDLE_TIMEOUT);
        let ping = tokio::time::Instant::from_std(last_sent + PING_AFTER);
        tokio::select! {
            _ = tokio::time::sleep_until(idle) => {
                break Err((ErrorCode::Timeout, "nothing heard for 30 s".into()));
            }
            _ = tokio::time::sleep_until(ping) => {
                if let Err(e) = wr.send(&Message::Ping { nonce: 1 }).await { break Ok(io(e)); }
                last_sent = Instant::now();
            }
            held = announce::next_view(&mut view) => {
                if let Some(blob) = held {
                    let whole = announce::whole_pieces(&blob.available());
                    match announce::announce_growth(&mut wr, hash, blob.size(), whole, &mut announced).await {
                        Ok(true) => last_sent = Instant::now(),
                        Ok(false) => {}
                        Err(e) => break Ok(io(e)),
                    }
                }
            }
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else {
                    break Err((ErrorCode::Goodbye, "done".into()));
                };
                match cmd {
                    Cmd::Request { id, groups } => {
                        let msg = size.ok_or(wire::Violation("no size"))
                            .and_then(|size| session.request(id, hash, groups.clone(), size));
                        match msg {
                            Ok(msg) => {
                                if let Err(e) = wr.send(&msg).await { break Ok(io(e)); }
                                inflight.insert(id, groups);
                                last_sent = Instant::now();
                            }
                            Err(_) => {
                                let _ = ctx.events.send(Event::Failed { peer, id }).await;
                            }
                        }
                    }
                    Cmd::Cancel { id } => {
                        if inflight.contains_key(&id) {
                            if let Err(e) = wr.send(&Message::Cancel { id }).await { break Ok(io(e)); }
                            last_sent = Instant::now();
                        }
                    }
                }
            }
            frame = rd.next() => {
                let msg = match frame {
                    Ok(m) => m,
                    Err(FrameError::Wire(w)) => break Err((w.code(), w.to_string())),
                    Err(e) => break Ok(io(e)),
                };
                last_heard = Instant::now();
                if let Err(v) = session.receive(&msg) {
                    break Err((ErrorCode::ProtocolViolation, v.to_string()));
                }
                match msg {
                    Message::HaveAll { hash: h, size: s } if h == hash => {
                        if size.is_some_and(|x| x != s) {
                            break Err((ErrorCode::ProtocolViolation, "size changed".into()));
                        }
                        size = Some(s);
                        let full = Bitfield::full(group_count(s));
                        bits = Some(full.clone());
                        if ctx.events.send(Event::Avail { peer, size: s, bits: full }).await.is_err() {
                            break Err((ErrorCode::Goodbye, "done".into()));
                        }
                    }
                    Message::Have(slice) if slice.hash == hash => {
                        if size.is_some_and(|x| x != slice.size) {
                            break Err((ErrorCode::ProtocolViolation, "size changed".into()));
                        }
                        size = Some(slice.size);
                        let b = bits.get_or_insert_with(|| Bitfield::new(group_count(slice.size)));
                        slice.apply(b);
                        let b = b.clone();
                        if ctx.events.send(Event::Avail { peer, size: slice.size, bits: b }).await.is_err() {
                            break Err((ErrorCode::Goodbye, "done".into()));
                        }
                    }
                    Message::HaveRanges { hash: h, ranges } if h == hash => {
                        let (Some(s), Some(b)) = (size, bits.as_mut()) else { continue };
                        let n = group_count(s);
                        if ranges.iter().any(|r| r.end > n) {
                            break Err((ErrorCode::ProtocolViolation, "range past the blob".into()));
                        }
                        for r in &ranges {
                            b.set_range(r.clone());
                        }
                        if ctx.events.send(Event::Have { peer, ranges }).await.is_err() {
                            break Err((ErrorCode::Goodbye, "done".into()));
                        }
                    }
                    Message::Coming { hash: h, ranges } if h == hash => {
                        let Some(s) = size else { continue };
                        if ranges.iter().any(|r| r.end > group_count(s)) {
                            break Err((ErrorCode::ProtocolViolation, "range past the blob".into()));
                        }
                        if ctx.events.send(Event::Coming { peer, ranges }).await.is_err() {
                            break Err((ErrorCode::Goodbye, "done".into()));
                        }
                    }
                    Message::DontHave { hash: h } if h == hash => {
                        if let Some(s) = size {
                            let empty = Bitfield::new(group_count(s));
                            bits = Some(empty.clone());
                            let _ = ctx.events.send(Event::Avail { peer, size: s, bits: empty }).await;
                        }
                    }
                    Message::Choke | Message::Unchoke => {
                        let choked = matches!(msg, Message::Choke);
                        let _ = ctx.events.send(Event::Choked { peer, choked }).await;
                    }
                    Message::Response { id, status } => {
                        if status == Status::Ok {
                            current = Some((id, Vec::new()));
                        } else {
                            inflight.remove(&id);
                            let _ = ctx.events.send(Event::Failed { peer, id }).await;
                        }
                    }
                    Message::Data { data, .. } => {
                        let n = data.len() as u64;
                        ctx.shared.throttle(&ctx.shared.download_limit, &peer, n).await;
                        if let Some((_, chunks)) = current.as_mut() {
                            chunks.push(data);
                        }
                    }
                    Message::End { id, status } => {
                        let groups = inflight.remove(&id);
                        let chunks = current.take().map(|c| c.1).unwrap_or_default();
                        // An abandoned response (cancelled, choked) still
                        // carries a verifiable prefix of the groups: keep it.
                        // Cancels of stolen requests often reach a holder
                        // that had begun sending them.
                        let salvage = status == Status::Ok || !chunks.is_empty();
                        let handed = match groups {
                            Some(groups) if salvage => {
                                to_worker(ctx, Work::Ingest { peer, id, groups, chunks }).await
                            }
                            _ => false,
                        };
                        if !handed {
                            let _ = ctx.events.send(Event::Failed { peer, id }).await;
                        }
                    }
                    Message::Ping { nonce } => {
                        if let Err(e) = wr.send(&Message::Pong { nonce }).await { break Ok(io(e)); }
                        last_sent = Instant::now();
                    }
                    Message::Request(r) => {
                        // We announced nothing on this stream.
                        let msg = Message::Response { id: r.id, status: Status::NotAvailable };
                        let _ = session.send(&msg);
                        if let Err(e) = wr.send(&msg).await { break Ok(io(e)); }
                    }
                    Message::Error { code, message } => {
                        break Ok((format!("peer closed: {code:?} {message}"), Comeback::after_error(code)));
                    }
                    _ => {}
                }
            }
        }
    };
    // A source that vanished mid-response (it quit, or its stream closed)
    // already spent its upload on the groups that arrived whole: verify
    // and keep them, as for a cancelled response.
    if let Some((id, chunks)) = current.take()
        && !chunks.is_empty()
        && let Some(groups) = inflight.remove(&id)
    {
        to_worker(
            ctx,
            Work::Ingest {
                peer,
                id,
                groups,
                chunks,
            },
        )
        .await;
    }
    match outcome {
        Ok(r) => r,
        Err((code, why)) => {
            wr.close_with(code, &why).await;
            let comeback = if matches!(code, ErrorCode::Goodbye | ErrorCode::Timeout) {
                Comeback::Later
            } else {
                Comeback::Never
            };
            (why, comeback)
        }
    }
}
