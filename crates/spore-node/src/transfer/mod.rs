//! The transfer engine: `/spore/blob/1` over libp2p streams.
//!
//! - [`serve`](self::serve): the upload side. Every node accepts
//!   `/spore/blob/1` streams and serves what it has: complete blobs, and the
//!   verified groups of blobs it is downloading (announced as they verify).
//!   A [`Choker`] decides who is served, a [`RateLimiter`] how fast.
//! - [`fetch`](self::fetch): the download side. One controller task per
//!   download drives a [`spore_transfer::scheduler::Scheduler`], one session
//!   task per source peer pipelines requests on one stream, and one blocking
//!   worker owns the [`spore_store::PartialBlob`], verifies and writes what
//!   arrives, and flushes it every second.
//! - [`stream_io`](self::stream_io): frames over a stream, bounded and with
//!   timeouts.
//! - [`lying`](self::lying): a test-only mode in which the serving side
//!   corrupts the chunk data it sends (`--debug-lie-uploads`).
//!
//! - [`collection`](self::collection): a collection download: the manifest
//!   blob first (validated before anything else happens), then its member
//!   blobs, a few at a time, sharing the sources; files are written under the
//!   destination by the store's export (sanitised paths, no clobbering).
//!
//! Downloads can be paused (the task stops, verified groups stay), resumed
//! (a new task starts from the groups the store has) and cancelled (the
//! partial data is dropped). Only what the user asked for is tagged: the
//! members of a collection are kept by the collection's tag.

mod announce;
mod collection;
mod fetch;
mod holders;
mod lying;
mod serve;
mod stream;
mod stream_io;
mod superseed;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use spore_core::{Bitfield, ContentKind, Hash};
use spore_net::{CancellationToken, Multiaddr, NetHandle, PeerId};
use spore_store::{Blob, Store};
use spore_transfer::choker::{ChokeEvent, Choker, ChokerConfig, RateLimiter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use spore_transfer::wire::PROTOCOL;
pub use stream::{BlobStream, StreamError};

/// Settings of the transfer engine (`[transfer]` in `spore.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Upload limit over all peers, bytes per second (`--max-upload`); 0 is unlimited.
    pub max_upload: u64,
    /// Download limit over all peers, bytes per second (`--max-download`); 0 is unlimited.
    pub max_download: u64,
    /// Upload limit per peer, bytes per second; 0 is unlimited.
    pub max_upload_per_peer: u64,
    /// Regular upload slots of the choker.
    pub upload_slots: usize,
    /// Inbound `/spore/blob/1` sessions served at once.
    pub max_serve_sessions: usize,
    /// Inbound `/spore/blob/1` sessions one peer may hold at once; more are
    /// refused (`Refused`), so a flood degrades only that peer.
    pub max_sessions_per_peer: usize,
    /// Source peers one download uses at once.
    pub max_sources: usize,
    /// Seconds between two provider lookups during a download.
    pub discovery_interval_secs: u64,
    /// Super-seeding: while several peers download a complete blob from us,
    /// tell each only a few pieces at a time, so the blob goes out once
    /// before any piece twice and the peers trade the rest among themselves.
    pub super_seed: bool,
    /// TEST ONLY (`spore node --debug-lie-uploads`, never read from
    /// `spore.toml`): corrupt every chunk group this node uploads, so that
    /// tests and the testbed can measure bans and wasted bytes against a
    /// real lying peer. See [`lying`](self::lying).
    #[serde(skip)]
    pub debug_lie_uploads: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_upload: 0,
            max_download: 0,
            max_upload_per_peer: 0,
            upload_slots: 64,
            max_serve_sessions: 256,
            max_sessions_per_peer: 16,
            max_sources: 32,
            discovery_interval_secs: 5,
            super_seed: true,
            debug_lie_uploads: false,
        }
    }
}

/// What to download.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub hash: Hash,
    /// A [`ContentKind::Collection`] downloads its manifest, then its files.
    pub kind: ContentKind,
    /// Providers from a ticket: dialled directly.
    pub providers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Also look for providers in the DHT and among connected peers.
    pub discover: bool,
    /// Once complete, write the blob to this file, or the collection's files
    /// under this directory (never outside it, never over an existing file).
    pub dest: Option<PathBuf>,
    /// Whether the download is the user's, or one blob that something else
    /// keeps.
    pub keep: Keep,
}

/// Who keeps what a download fetches (see the invariant that only what the
/// user asked for is tagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The user's download: listed, and tagged once complete so that garbage
    /// collection keeps it. A collection is fetched whole: its manifest, then
    /// every file.
    Tagged,
    /// One blob, not listed and not tagged (for a collection, only its
    /// manifest): a part of a collection download, which the collection's
    /// tag keeps, or a manifest the gateway reads.
    Untagged,
}

impl DownloadRequest {
    /// A user's download of `hash`, from `providers` and whatever discovery finds.
    pub fn new(hash: Hash, kind: ContentKind, providers: Vec<(PeerId, Vec<Multiaddr>)>) -> Self {
        Self {
            hash,
            kind,
            providers,
            discover: true,
            dest: None,
            keep: Keep::Tagged,
        }
    }
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "error")]
pub enum DownloadState {
    /// Looking for sources and the blob's size.
    Starting,
    Downloading,
    Done,
    Failed(String),
    /// Stopped by [`Transfer::pause`]; verified groups stay, [`Transfer::resume`] goes on.
    Paused,
    /// Stopped by [`Transfer::cancel`] or the node's shutdown.
    Cancelled,
}

/// One source of a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceProgress {
    #[serde(serialize_with = "ser_display")]
    pub peer: PeerId,
    /// Bytes of verified groups this peer delivered first.
    pub useful_bytes: u64,
    /// Bytes of groups it delivered that verified but were already present
    /// (another peer was first, e.g. in endgame).
    pub duplicate_bytes: u64,
    /// Payload bytes of its responses that failed verification, thrown
    /// away (the bad group and the rest of that response).
    pub wasted_bytes: u64,
    /// Groups it sent that failed verification (its strikes).
    pub bad_groups: u32,
    pub banned: bool,
}

fn ser_display<S: serde::Serializer>(v: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A snapshot of a download, published through a `watch` channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub hash: String,
    /// Known once a source announced it and its last group verified.
    pub size: Option<u64>,
    /// Bytes verified and written (including those present at resume).
    pub verified_bytes: u64,
    /// Bytes that were already present when the download started.
    pub resumed_bytes: u64,
    /// Sum of the sources' `duplicate_bytes`.
    pub duplicate_bytes: u64,
    /// Sum of the sources' `wasted_bytes`.
    pub wasted_bytes: u64,
    /// Sources with an open session.
    pub peers: usize,
    /// Verified bytes per second over the last few seconds.
    pub rate: f64,
    pub state: DownloadState,
    /// Every peer that delivered, lied or was used.
    pub sources: Vec<SourceProgress>,
    /// For a collection, once its manifest is validated: how many files it lists.
    pub files: Option<usize>,
    /// For a collection: files complete so far.
    pub files_done: usize,
}

impl Progress {
    fn new(hash: Hash) -> Self {
        Self {
            hash: hash.to_hex(),
            size: None,
            verified_bytes: 0,
            resumed_bytes: 0,
            duplicate_bytes: 0,
            wasted_bytes: 0,
            peers: 0,
            rate: 0.0,
            state: DownloadState::Starting,
            sources: Vec::new(),
            files: None,
            files_done: 0,
        }
    }

    /// Done or failed (paused and cancelled downloads are stopped, not finished).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, DownloadState::Done | DownloadState::Failed(_))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error("download failed: {0}")]
    Failed(String),
    #[error("the download was paused")]
    Paused,
    #[error("the download was cancelled")]
    Cancelled,
    #[error("the node is shutting down")]
    Shutdown,
}

/// Why [`Transfer::pause`], [`Transfer::resume`] or [`Transfer::cancel`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no download of {0}")]
    NotFound(Hash),
    #[error("the download of {0} is already finished")]
    Finished(Hash),
    #[error("the download of {0} is not paused")]
    NotPaused(Hash),
    #[error("could not drop the partial data of {hash}: {message}")]
    Store { hash: Hash, message: String },
}

/// A running (or finished) download. Cheap to clone; dropping it does not
/// stop the download (use [`DownloadHandle::cancel`]).
#[derive(Debug, Clone)]
pub struct DownloadHandle {
    hash: Hash,
    progress: watch::Receiver<Progress>,
    cancel: CancellationToken,
    /// Set before `cancel` by [`Transfer::pause`].
    paused: Arc<AtomicBool>,
    /// What started it (a resume starts it again).
    request: Arc<DownloadRequest>,
}

impl DownloadHandle {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn kind(&self) -> ContentKind {
        self.request.kind
    }

    /// The latest progress snapshot. A stopped download that did not finish
    /// says why it stopped ([`DownloadState::Paused`] or [`DownloadState::Cancelled`]).
    pub fn progress(&self) -> Progress {
        let mut p = self.progress.borrow().clone();
        if self.cancel.is_cancelled() && !p.is_finished() {
            p.state = if self.paused.load(Ordering::SeqCst) {
                DownloadState::Paused
            } else {
                DownloadState::Cancelled
            };
        }
        p
    }

    /// Waits until the download's task has ended (after a pause or cancel,
    /// its partial blob is closed and flushed then).
    pub async fn stopped(&self) {
        let mut rx = self.progress.clone();
        while rx.changed().await.is_ok() {}
    }

    /// True once [`DownloadHandle::cancel`] (or the node's shutdown) stopped it.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops the download's task (verified groups stay in the store; a later
    /// download of the same hash resumes). [`Transfer::cancel`] also drops them.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits until the download is done or failed; returns the last snapshot.
    pub async fn wait(&self) -> Result<Progress, DownloadError> {
        let mut rx = self.progress.clone();
        loop {
            let p = rx.borrow_and_update().clone();
            match &p.state {
                DownloadState::Done => return Ok(p),
                DownloadState::Failed(e) => return Err(DownloadError::Failed(e.clone())),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return match self.progress().state {
                    DownloadState::Done => Ok(p),
                    DownloadState::Failed(e) => Err(DownloadError::Failed(e)),
                    DownloadState::Paused => Err(DownloadError::Paused),
                    DownloadState::Cancelled => Err(DownloadError::Cancelled),
                    _ => Err(DownloadError::Shutdown),
                };
            }
        }
    }
}

/// What a download shares with the serve side: the verified groups so far,
/// and a way to tell it about peers that want the same blob.
#[derive(Debug, Clone)]
pub(crate) struct ActiveDownload {
    /// A reader over the verified groups (updated as groups verify, batched).
    pub(crate) view: watch::Receiver<Option<Blob>>,
    /// Groups verified or asked of a peer that has them
    /// (`Scheduler::expected`): the serve side
    /// tells its peers those it lacks are coming, and holds their requests
    /// for them until they verify (cut-through).
    pub(crate) expected: watch::Receiver<Option<Bitfield>>,
    /// Peers that opened a session for this hash (they may have groups too).
    pub(crate) candidates: mpsc::Sender<PeerId>,
    pub(crate) handle: DownloadHandle,
    /// Where streaming readers move the scheduler's playhead.
    pub(crate) stream: Arc<stream::StreamControl>,
}

/// Upload counters, for tests and status.
#[derive(Debug, Default, Clone)]
pub struct UploadStats {
    /// Payload bytes sent, per peer.
    pub per_peer: HashMap<PeerId, u64>,
    pub total: u64,
    pub requests: u64,
}

/// Where a serve session hears the choker's decisions about its peer.
pub(crate) type ChokeControl = mpsc::Sender<ChokeEvent<PeerId>>;

/// State shared by every task of the engine.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) net: NetHandle,
    pub(crate) config: TransferConfig,
    pub(crate) cancel: CancellationToken,
    pub(crate) downloads: Mutex<HashMap<Hash, ActiveDownload>>,
    /// Collection downloads running, by the collection's id.
    pub(crate) collections: Mutex<HashMap<Hash, DownloadHandle>>,
    /// The latest downloads, finished ones included, for the API (bounded).
    pub(crate) recent: Mutex<std::collections::VecDeque<DownloadHandle>>,
    pub(crate) choker: Mutex<Choker<PeerId>>,
    pub(crate) upload_limit: Mutex<RateLimiter<PeerId>>,
    pub(crate) download_limit: Mutex<RateLimiter<PeerId>>,
    /// Serve sessions per peer, to deliver choke decisions: peer → (session id → control).
    pub(crate) serve_sessions: Mutex<HashMap<PeerId, HashMap<u64, ChokeControl>>>,
    pub(crate) uploads: Mutex<UploadStats>,
    pub(crate) super_seeds: Mutex<superseed::SuperSeeds>,
    /// What the peers of each blob being served hold.
    pub(crate) holders: Mutex<holders::BlobHolders>,
    /// Complete blobs being re-hashed after a failed read.
    pub(crate) rechecking: Mutex<std::collections::HashSet<Hash>>,
    /// Bytes of chunk groups downloaded and verified (new ones only).
    pub(crate) downloaded: std::sync::atomic::AtomicU64,
    pub(crate) tasks: Mutex<JoinSet<()>>,
}

/// Locks a std mutex; a poisoned lock (a panic elsewhere) still yields the data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn limiter(rate: u64, per_peer: u64) -> RateLimiter<PeerId> {
    let spec = |r: u64| (r > 0).then(|| (r, (r / 4).max(512 * 1024)));
    RateLimiter::new(spec(rate), spec(per_peer), 1024)
}

impl Shared {
    /// Delivers choke decisions to the serve sessions of their peers.
    pub(crate) fn dispatch(&self, events: Vec<ChokeEvent<PeerId>>) {
        if events.is_empty() {
            return;
        }
        let sessions = lock(&self.serve_sessions);
        for ev in events {
            let peer = match &ev {
                ChokeEvent::Choke(p) | ChokeEvent::Unchoke(p) => *p,
            };
            if let Some(map) = sessions.get(&peer) {
                for tx in map.values() {
                    let _ = tx.try_send(ev.clone());
                }
            }
        }
    }

    /// Sleeps until `bytes` may pass `limiter` for `peer` (or the node stops).
    pub(crate) async fn throttle(
        &self,
        limiter: &Mutex<RateLimiter<PeerId>>,
        peer: &PeerId,
        bytes: u64,
    ) {
        loop {
            let wait = match lock(limiter).try_take(peer, bytes, Instant::now()) {
                Ok(()) => return,
                Err(wait) => wait.min(Duration::from_secs(1)),
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// How many downloads [`Transfer::downloads`] remembers, finished ones included.
const MAX_RECENT_DOWNLOADS: usize = 256;

/// The engine a node owns: serves every stored blob and runs downloads.
#[derive(Debug, Clone)]
pub struct Transfer {
    shared: Arc<Shared>,
}

impl Transfer {
    /// Starts accepting `/spore/blob/1` streams and the choker's clock.
    pub fn start(
        store: Store,
        net: NetHandle,
        config: TransferConfig,
        cancel: CancellationToken,
    ) -> Result<Self, spore_net::NetError> {
        let incoming = net.accept_streams(PROTOCOL)?;
        if config.debug_lie_uploads {
            tracing::warn!(
                "--debug-lie-uploads: this node corrupts every chunk group it uploads (a test mode; peers will ban it)"
            );
        }
        let now = Instant::now();
        let choker = Choker::new(
            ChokerConfig {
                upload_slots: config.upload_slots.max(1),
                max_peers: 1024,
                ..ChokerConfig::default()
            },
            seed(),
            now,
        );
        let shared = Arc::new(Shared {
            upload_limit: Mutex::new(limiter(config.max_upload, config.max_upload_per_peer)),
            download_limit: Mutex::new(limiter(config.max_download, 0)),
            store,
            net,
            config,
            cancel,
            downloads: Mutex::new(HashMap::new()),
            collections: Mutex::new(HashMap::new()),
            recent: Mutex::new(std::collections::VecDeque::new()),
            choker: Mutex::new(choker),
            serve_sessions: Mutex::new(HashMap::new()),
            uploads: Mutex::new(UploadStats::default()),
            super_seeds: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            rechecking: Mutex::new(std::collections::HashSet::new()),
            downloaded: std::sync::atomic::AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        {
            let mut tasks = lock(&shared.tasks);
            tasks.spawn(serve::accept_loop(shared.clone(), incoming));
            tasks.spawn(serve::choker_clock(shared.clone()));
        }
        Ok(Self { shared })
    }

    /// Starts downloading (or joins the download already running for the hash).
    pub fn download(&self, request: DownloadRequest) -> DownloadHandle {
        if request.kind == ContentKind::Collection && request.keep == Keep::Tagged {
            return self.download_collection(request);
        }
        let mut downloads = lock(&self.shared.downloads);
        if let Some(active) = downloads.get(&request.hash)
            && !active.handle.cancel.is_cancelled()
            && !active.handle.progress().is_finished()
        {
            return active.handle.clone();
        }
        let (progress_tx, progress_rx) = watch::channel(Progress::new(request.hash));
        let (view_tx, view_rx) = watch::channel(None);
        let (expected_tx, expected_rx) = watch::channel(None);
        let (cand_tx, cand_rx) = mpsc::channel(64);
        let stream = stream::StreamControl::new();
        let handle = self.new_handle(&request, progress_rx);
        downloads.insert(
            request.hash,
            ActiveDownload {
                view: view_rx,
                expected: expected_rx,
                candidates: cand_tx,
                handle: handle.clone(),
                stream: stream.clone(),
            },
        );
        // while downloading, upload slots go to the peers that upload to us fastest
        lock(&self.shared.choker).set_downloading(true);
        drop(downloads);
        if request.keep == Keep::Tagged {
            self.remember(&handle);
        }
        let task = fetch::run(
            self.shared.clone(),
            request,
            handle.cancel.clone(),
            progress_tx,
            fetch::ServeFeed {
                view: view_tx,
                expected: expected_tx,
            },
            cand_rx,
            stream,
        );
        lock(&self.shared.tasks).spawn(task);
        handle
    }

    fn new_handle(
        &self,
        request: &DownloadRequest,
        progress: watch::Receiver<Progress>,
    ) -> DownloadHandle {
        DownloadHandle {
            hash: request.hash,
            progress,
            cancel: self.shared.cancel.child_token(),
            paused: Arc::new(AtomicBool::new(false)),
            request: Arc::new(request.clone()),
        }
    }

    /// Lists `handle` for the API (replacing an older download of the same hash).
    fn remember(&self, handle: &DownloadHandle) {
        let mut recent = lock(&self.shared.recent);
        recent.retain(|h| h.hash != handle.hash);
        if recent.len() >= MAX_RECENT_DOWNLOADS {
            recent.pop_front();
        }
        recent.push_back(handle.clone());
    }

    fn download_collection(&self, request: DownloadRequest) -> DownloadHandle {
        let mut collections = lock(&self.shared.collections);
        if let Some(running) = collections.get(&request.hash)
            && !running.cancel.is_cancelled()
            && !running.progress().is_finished()
        {
            return running.clone();
        }
        let (progress_tx, progress_rx) = watch::channel(Progress::new(request.hash));
        let handle = self.new_handle(&request, progress_rx);
        collections.insert(request.hash, handle.clone());
        drop(collections);
        self.remember(&handle);
        let task = collection::run(self.clone(), request, handle.cancel.clone(), progress_tx);
        lock(&self.shared.tasks).spawn(task);
        handle
    }

    /// Pauses a download: its task stops once the verified groups are
    /// flushed; [`Transfer::resume`] starts it again from them.
    pub async fn pause(&self, hash: &Hash) -> Result<DownloadHandle, ControlError> {
        let handle = self
            .find_download(hash)
            .ok_or(ControlError::NotFound(*hash))?;
        if handle.progress().is_finished() {
            return Err(ControlError::Finished(*hash));
        }
        if !handle.cancel.is_cancelled() {
            handle.paused.store(true, Ordering::SeqCst);
            handle.cancel.cancel();
        }
        handle.stopped().await;
        Ok(handle)
    }

    /// Resumes a paused download: a new task that starts from the groups the
    /// store verified (none of them is fetched again).
    pub async fn resume(&self, hash: &Hash) -> Result<DownloadHandle, ControlError> {
        let handle = self
            .find_download(hash)
            .ok_or(ControlError::NotFound(*hash))?;
        let state = handle.progress().state;
        if state != DownloadState::Paused {
            return Err(match state {
                DownloadState::Done | DownloadState::Failed(_) => ControlError::Finished(*hash),
                _ => ControlError::NotPaused(*hash),
            });
        }
        // the old task must have let go of the partial blob first
        handle.stopped().await;
        Ok(self.download((*handle.request).clone()))
    }

    /// Cancels a download and forgets it: a running or paused one stops and
    /// its partial data is dropped (content that completed stays in the
    /// store, untagged unless the user tagged it otherwise); a finished one
    /// is only removed from the list.
    pub async fn cancel(&self, hash: &Hash) -> Result<(), ControlError> {
        let handle = self
            .find_download(hash)
            .ok_or(ControlError::NotFound(*hash))?;
        let finished = handle.progress().is_finished();
        lock(&self.shared.recent).retain(|h| h.hash != *hash);
        if finished {
            return Ok(());
        }
        handle.paused.store(false, Ordering::SeqCst);
        handle.cancel.cancel();
        handle.stopped().await;
        let store = self.shared.store.clone();
        let hash = *hash;
        let kind = handle.kind();
        let dropped =
            tokio::task::spawn_blocking(move || collection::drop_partial(&store, &hash, kind))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        dropped.map_err(|message| ControlError::Store { hash, message })
    }

    /// The latest downloads (at most 256), running ones first.
    pub fn downloads(&self) -> Vec<DownloadHandle> {
        let mut all: Vec<DownloadHandle> = lock(&self.shared.recent).iter().cloned().collect();
        all.sort_by_key(|h| h.progress().is_finished());
        all
    }

    pub fn find_download(&self, hash: &Hash) -> Option<DownloadHandle> {
        lock(&self.shared.recent)
            .iter()
            .find(|h| h.hash == *hash)
            .cloned()
    }

    /// What this node uploaded so far.
    pub fn upload_stats(&self) -> UploadStats {
        lock(&self.shared.uploads).clone()
    }

    /// Bytes downloaded and verified since the node started (every download).
    pub fn downloaded_bytes(&self) -> u64 {
        self.shared
            .downloaded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for every task of the engine; call after cancelling the node's token.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        while tasks.join_next().await.is_some() {}
        // Tasks spawned while we waited (a download started during shutdown).
        let mut late = std::mem::take(&mut *lock(&self.shared.tasks));
        while late.join_next().await.is_some() {}
    }
}

/// A seed for the pure state machines' PRNGs.
pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
