//! The download scheduler: which chunk groups of one blob to ask which peer
//! for, and when. A pure state machine in the manner of quinn-proto: it does
//! no I/O, reads no clock (`now` is always an argument) and draws randomness
//! from a PRNG seeded at construction, so a run is reproducible event by event.
//! The node feeds it peer events and verification results and sends what it
//! returns. The rules and invariants are in `crates/spore-transfer/DESIGN.md`.
//!
//! Vocabulary: a *group* is a 16 KiB chunk group, the unit of verification; a
//! *piece* is a run of groups used to pick what to fetch (rarity is counted
//! per piece); a *request* asks one peer for a contiguous range of groups
//! inside one piece, and is answered in order.

mod rate;
pub(crate) mod rng;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use spore_core::{Bitfield, GROUP_SIZE, group_count};

pub use rate::RateEstimator;
use rng::Rng;

/// Tuning knobs. The defaults follow libtorrent where it has an answer.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Peers the scheduler tracks at once; more are refused.
    pub max_peers: usize,
    /// Outstanding requests per peer.
    pub max_requests_per_peer: usize,
    /// Groups per piece; `None` adapts it to the blob size (see [`piece_groups_for`]).
    pub piece_groups: Option<u32>,
    /// Pieces picked at random before rarest first takes over.
    pub random_first_pieces: u32,
    /// Seconds of a peer's measured rate kept queued at it (libtorrent: 3 s).
    pub queue_time: Duration,
    /// Floor of a peer's queue, also the queue of a peer not yet measured.
    pub min_queue_bytes: u64,
    /// Cap of a peer's queue.
    pub max_queue_bytes: u64,
    /// One request is at most this much of the peer's rate, so a slow peer
    /// never holds a large request.
    pub request_time: Duration,
    /// Cap of one request, in groups.
    pub max_request_groups: u32,
    /// Floor of one request, in groups (unless fewer are open): every
    /// response carries the bao parents above its groups, about 12% of a
    /// lone group against 1.3% of four.
    pub min_request_groups: u32,
    /// Timeout of a peer whose round trip and rate are not yet known.
    pub initial_timeout: Duration,
    /// Floor of the adaptive timeout.
    pub min_timeout: Duration,
    /// Cap of the adaptive timeout.
    pub max_timeout: Duration,
    /// Groups failing verification after which a peer is banned.
    pub ban_after: u32,
    /// Work moves from peer A to peer B when A would finish it more than this
    /// many times later than B.
    pub steal_factor: f64,
    /// Queued work the holder would start within this long (or two of its
    /// round trips, if longer) and within `steal_horizon_bytes` is never
    /// stolen: its bytes may already sit in the holder's socket and link
    /// buffers, and would then arrive twice. (Bytes bound it on fast links,
    /// where buffers hold a small fraction of a second.)
    pub steal_horizon: Duration,
    pub steal_horizon_bytes: u64,
    /// Extra requests per group in endgame (1: a group is asked of at most 2 peers).
    pub max_duplicates: u8,
    /// Rate assumed for a peer that has work but no measurement yet, bytes/s.
    pub initial_rate: f64,
    /// Streaming: bytes after the playhead fetched first, in order.
    pub stream_window: u64,
    /// Streaming: read-ahead added to the window.
    pub stream_readahead: u64,
    /// Banned peers remembered (oldest forgotten first).
    pub max_banned: usize,
    /// Cut-through: groups at most asked of one peer ahead of time, among
    /// those it said are coming to it (`on_coming`) and no connected peer
    /// holds. It serves them as they verify, so a fresh group leaves its
    /// first holder before that holder could even announce it. 0 turns it off.
    pub max_early_groups: u64,
    /// An early request not answered within this is dropped (to cancel).
    pub early_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_peers: 64,
            max_requests_per_peer: 128,
            piece_groups: None,
            random_first_pieces: 4,
            queue_time: Duration::from_secs(3),
            min_queue_bytes: 256 * 1024,
            max_queue_bytes: 64 * 1024 * 1024,
            request_time: Duration::from_millis(250),
            max_request_groups: 64,
            min_request_groups: 4,
            initial_timeout: Duration::from_secs(10),
            min_timeout: Duration::from_secs(2),
            max_timeout: Duration::from_secs(30),
            ban_after: 3,
            steal_factor: 2.0,
            steal_horizon: Duration::from_secs(2),
            steal_horizon_bytes: 1024 * 1024,
            max_duplicates: 1,
            initial_rate: 256.0 * 1024.0,
            stream_window: 4 * 1024 * 1024,
            stream_readahead: 4 * 1024 * 1024,
            max_banned: 1024,
            max_early_groups: 64,
            early_timeout: Duration::from_secs(6),
        }
    }
}

/// Groups per piece for a blob of `groups` groups: 64 (1 MiB) by default,
/// fewer for small blobs so that at least 16 pieces exist and several peers
/// can help, more for huge blobs so that at most 16,384 pieces exist.
/// Always a power of two.
pub fn piece_groups_for(groups: u64) -> u32 {
    const DEFAULT: u64 = 64;
    const MIN_PIECES: u64 = 16;
    const MAX_PIECES: u64 = 16_384;
    let small = groups.div_ceil(MIN_PIECES).max(1);
    let large = groups.div_ceil(MAX_PIECES);
    let pg = DEFAULT.min(small).max(large).next_power_of_two();
    u32::try_from(pg).unwrap_or(1 << 31)
}

/// Identifies one request for its whole life; never reused by a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Ask `peer` for the groups `groups` (a contiguous range, answered in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<P> {
    pub id: RequestId,
    pub peer: P,
    pub groups: Range<u64>,
}

impl<P> Request<P> {
    /// Byte range of the request in a blob of `size` bytes.
    pub fn byte_range(&self, size: u64) -> Range<u64> {
        (self.groups.start * GROUP_SIZE).min(size)..(self.groups.end * GROUP_SIZE).min(size)
    }
}

/// What to send now: new requests to the peer asked about, and cancels of
/// requests at other peers (work stolen from them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions<P> {
    pub requests: Vec<Request<P>>,
    pub cancels: Vec<Request<P>>,
}

impl<P> Default for Actions<P> {
    fn default() -> Self {
        Self {
            requests: Vec::new(),
            cancels: Vec::new(),
        }
    }
}

/// Outcome of [`Scheduler::on_bad_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadGroup<P> {
    /// The peer reached [`SchedulerConfig::ban_after`] bad groups: disconnect it.
    /// It is already removed and will be refused by [`Scheduler::add_peer`].
    pub banned: bool,
    /// Bad groups this peer has sent so far.
    pub bad_groups: u32,
    /// Requests of this peer dropped (the one that carried the bad group, or
    /// all of them on a ban): cancel them; their groups are reassigned.
    pub cancels: Vec<Request<P>>,
}

/// Outcome of [`Scheduler::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll<P> {
    /// Requests that timed out: cancel them; their groups are reassigned.
    pub timed_out: Vec<Request<P>>,
    /// Call `poll` again at this time at the latest.
    pub next_deadline: Option<Instant>,
}

/// Why a peer event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer table full ({0} peers)")]
    Full(usize),
    #[error("peer is banned")]
    Banned,
    #[error("peer already added")]
    AlreadyAdded,
    #[error("unknown peer")]
    Unknown,
    #[error("bitfield has {got} groups, the blob has {expected}")]
    WrongLength { expected: u64, got: u64 },
}

/// Why a scheduler cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("verified bitfield has {got} groups, a blob of {size} bytes has {expected}")]
    WrongLength { size: u64, expected: u64, got: u64 },
}

/// Counters of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of groups this peer was first to deliver.
    pub useful_bytes: u64,
    /// Groups this peer was first to deliver.
    pub useful_groups: u64,
    /// Groups it delivered that were already verified.
    pub duplicate_groups: u64,
    /// Groups it sent that failed verification.
    pub bad_groups: u32,
    /// Requests sent to it.
    pub requests: u64,
    /// Times all its requests timed out.
    pub timeouts: u32,
    /// Requests taken from it and given to a faster peer.
    pub stolen_from: u64,
}

/// Counters of the whole download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub useful_bytes: u64,
    pub duplicate_groups: u64,
    pub duplicate_bytes: u64,
    pub bad_groups: u64,
    pub requests: u64,
    /// Requests cancelled because others delivered all their groups.
    pub redundant_cancels: u64,
    /// Requests moved from a slow peer to a faster one.
    pub steals: u64,
    /// Duplicate requests sent in endgame or for the streaming window.
    pub endgame_requests: u64,
    /// Requests for groups a peer said are coming to it (cut-through).
    pub early_requests: u64,
    pub timeouts: u64,
    pub banned: u64,
}

#[derive(Debug, Clone)]
struct Piece {
    len: u32,
    verified: u32,
    /// Groups neither verified nor covered by any outstanding request.
    open: u32,
    /// Copies among connected peers of the groups we still need.
    avail: u32,
    /// Groups we still need that some connected peer holds.
    held: u32,
    /// Open groups exactly one connected peer holds: copy them while it is here.
    lone: u32,
    /// Random tie-break among equally rare pieces.
    key: u32,
}

/// (has lone groups, copies, groups held, started, random key) of a
/// candidate piece.
type PieceKey = (bool, u64, u64, bool, u32);

#[derive(Debug, Clone)]
struct Req {
    id: RequestId,
    groups: Range<u64>,
    /// Groups of the range not yet verified (from anyone).
    remaining: u64,
}

/// A request for groups the peer said are coming to it: it holds the
/// request until they verify there. Kept out of the peer's queue: it says
/// nothing about the peer's rate, and waiting is not stalling.
#[derive(Debug, Clone)]
struct Early {
    req: Req,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Peer<P> {
    id: P,
    has: Bitfield,
    /// Groups the peer said it has asked for itself (`Coming`), once told.
    coming: Option<Bitfield>,
    early: Vec<Early>,
    /// Groups this peer sent bad data for: never asked of it again.
    refused: BTreeSet<u64>,
    queue: VecDeque<Req>,
    /// Sum of `remaining` over `queue`.
    pending: u64,
    rate: RateEstimator,
    srtt: Option<Duration>,
    rtt_probe: Option<Instant>,
    /// Last delivery, or when its queue became non-empty.
    last_progress: Instant,
    /// Timeout fixed at the last delivery (a stalled peer's rate decays; its
    /// timeout must not grow with it).
    timeout: Duration,
    /// Timed out and not delivered since: one group at a time.
    snubbed: bool,
    stats: PeerStats,
}

impl<P> Peer<P> {
    fn can_take(&self, g: u64) -> bool {
        self.has.get(g) && !self.refused.contains(&g)
    }

    /// Whether the peer said `g` is coming to it and does not have it yet.
    fn expects(&self, g: u64) -> bool {
        self.coming.as_ref().is_some_and(|c| c.get(g))
            && !self.has.get(g)
            && !self.refused.contains(&g)
    }

    fn early_groups(&self) -> u64 {
        self.early.iter().map(|e| e.req.remaining).sum()
    }

    fn requests_group(&self, g: u64) -> bool {
        self.queue.iter().any(|r| r.groups.contains(&g))
    }
}

/// The download scheduler for one blob. `P` identifies peers (for the node,
/// a libp2p `PeerId`; any ordered type works).
#[derive(Debug)]
pub struct Scheduler<P> {
    config: SchedulerConfig,
    size: u64,
    groups: u64,
    piece_groups: u64,
    verified: Bitfield,
    pieces: Vec<Piece>,
    complete_pieces: u64,
    /// Per group: outstanding requests covering it.
    inflight: Vec<u8>,
    /// Per group: connected peers that hold it.
    holders: Vec<u16>,
    peers: Vec<Option<Peer<P>>>,
    index: BTreeMap<P, usize>,
    banned: BTreeSet<P>,
    banned_order: VecDeque<P>,
    rng: Rng,
    next_request: u64,
    playhead: Option<u64>,
    stats: SchedulerStats,
}

impl<P: Clone + Ord + fmt::Debug> Scheduler<P> {
    /// A scheduler for a blob of `size` bytes of which the groups in
    /// `verified` are already present (resume); `Bitfield::new(group_count(size))`
    /// for a fresh download.
    pub fn new(
        size: u64,
        verified: Bitfield,
        config: SchedulerConfig,
        seed: u64,
    ) -> Result<Self, SchedulerError> {
        let groups = group_count(size);
        if verified.len() != groups {
            return Err(SchedulerError::WrongLength {
                size,
                expected: groups,
                got: verified.len(),
            });
        }
        let mut rng = Rng::new(seed);
        let piece_groups = u64::from(
            config
                .piece_groups
                .unwrap_or_else(|| piece_groups_for(groups))
                .max(1),
        );
        let n = groups.div_ceil(piece_groups);
        let mut pieces = Vec::with_capacity(n as usize);
        let mut complete_pieces = 0;
        for p in 0..n {
            let range = p * piece_groups..((p + 1) * piece_groups).min(groups);
            let len = (range.end - range.start) as u32;
            let done = range.clone().filter(|&g| verified.get(g)).count() as u32;
            complete_pieces += u64::from(done == len);
            pieces.push(Piece {
                len,
                verified: done,
                open: len - done,
                avail: 0,
                held: 0,
                lone: 0,
                key: rng.next_u64() as u32,
            });
        }
        Ok(Self {
            config,
            size,
            groups,
            piece_groups,
            verified,
            pieces,
            complete_pieces,
            inflight: vec![0; groups as usize],
            holders: vec![0; groups as usize],
            peers: Vec::new(),
            index: BTreeMap::new(),
            banned: BTreeSet::new(),
            banned_order: VecDeque::new(),
            rng,
            next_request: 0,
            playhead: None,
            stats: SchedulerStats::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn group_count(&self) -> u64 {
        self.groups
    }

    pub fn piece_groups(&self) -> u64 {
        self.piece_groups
    }

    pub fn verified(&self) -> &Bitfield {
        &self.verified
    }

    pub fn is_complete(&self) -> bool {
        self.verified.is_complete()
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    pub fn peer_stats(&self, peer: &P) -> Option<&PeerStats> {
        self.peer(peer).map(|p| &p.stats)
    }

    /// Measured rate of `peer` in bytes per second.
    pub fn peer_rate(&self, peer: &P) -> Option<f64> {
        self.peer(peer).and_then(|p| p.rate.rate())
    }

    /// Smoothed round-trip time of `peer`.
    pub fn peer_rtt(&self, peer: &P) -> Option<Duration> {
        self.peer(peer).and_then(|p| p.srtt)
    }

    /// Outstanding requests of `peer`, oldest first.
    pub fn outstanding(&self, peer: &P) -> Vec<Request<P>> {
        self.peer(peer)
            .map(|p| {
                p.queue
                    .iter()
                    .map(|r| Request {
                        id: r.id,
                        peer: p.id.clone(),
                        groups: r.groups.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups outstanding at `peer` and not yet verified.
    pub fn pending_groups(&self, peer: &P) -> u64 {
        self.peer(peer).map_or(0, |p| p.pending)
    }

    /// Bytes `peer` may have queued now (its measured rate × queue time,
    /// within the floor and the cap).
    pub fn queue_target_bytes(&self, peer: &P) -> u64 {
        self.peer(peer)
            .map_or(0, |p| self.target_groups(p) * GROUP_SIZE)
    }

    /// Connected peers, in a deterministic order.
    pub fn peers(&self) -> impl Iterator<Item = &P> + '_ {
        self.index.keys()
    }

    pub fn is_banned(&self, peer: &P) -> bool {
        self.banned.contains(peer)
    }

    /// Whether `peer` has a group we miss (send "interested").
    pub fn is_interested(&self, peer: &P) -> bool {
        self.peer(peer).is_some_and(|p| {
            p.has
                .ones_ranges()
                .any(|r| r.into_iter().any(|g| !self.verified.get(g)))
        })
    }

    pub fn add_peer(&mut self, peer: P, now: Instant) -> Result<(), PeerError> {
        if self.banned.contains(&peer) {
            return Err(PeerError::Banned);
        }
        if self.index.contains_key(&peer) {
            return Err(PeerError::AlreadyAdded);
        }
        if self.index.len() >= self.config.max_peers {
            return Err(PeerError::Full(self.config.max_peers));
        }
        let slot = self
            .peers
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.peers.len());
        let state = Peer {
            id: peer.clone(),
            has: Bitfield::new(self.groups),
            coming: None,
            early: Vec::new(),
            refused: BTreeSet::new(),
            queue: VecDeque::new(),
            pending: 0,
            rate: RateEstimator::default(),
            srtt: None,
            rtt_probe: None,
            last_progress: now,
            timeout: self.config.initial_timeout,
            snubbed: false,
            stats: PeerStats::default(),
        };
        if slot == self.peers.len() {
            self.peers.push(Some(state));
        } else {
            self.peers[slot] = Some(state);
        }
        self.index.insert(peer, slot);
        Ok(())
    }

    /// The peer left: its requests are dropped and their groups reassigned.
    /// Returns its counters.
    pub fn remove_peer(&mut self, peer: &P, now: Instant) -> Option<PeerStats> {
        let slot = *self.index.get(peer)?;
        self.drop_all(slot, now);
        self.drop_all_early(slot);
        let state = self.peers[slot].take()?;
        self.index.remove(peer);
        for r in state.has.ones_ranges() {
            for g in r {
                self.count_holder(g, false);
            }
        }
        Some(state.stats)
    }

    /// The peer's full have-set (replaces what it announced before). A
    /// source may withdraw groups (it lost data, say): its requests that
    /// cover any of them are dropped and returned, to cancel.
    pub fn on_bitfield(
        &mut self,
        peer: &P,
        has: Bitfield,
        now: Instant,
    ) -> Result<Vec<Request<P>>, PeerError> {
        if has.len() != self.groups {
            return Err(PeerError::WrongLength {
                expected: self.groups,
                got: has.len(),
            });
        }
        let slot = *self.index.get(peer).ok_or(PeerError::Unknown)?;
        let Some(p) = self.peers[slot].as_mut() else {
            return Err(PeerError::Unknown);
        };
        let old = std::mem::replace(&mut p.has, Bitfield::new(self.groups));
        for r in old.ones_ranges() {
            for g in r {
                self.count_holder(g, false);
            }
        }
        for r in has.ones_ranges() {
            for g in r {
                self.count_holder(g, true);
            }
        }
        let Some(p) = self.peers[slot].as_mut() else {
            return Err(PeerError::Unknown);
        };
        p.has = has;
        let withdrawn: Vec<usize> = (p.queue.iter().enumerate())
            .filter(|(_, r)| r.groups.clone().any(|g| !p.can_take(g)))
            .map(|(i, _)| i)
            .collect();
        let mut cancels = Vec::with_capacity(withdrawn.len());
        for pos in withdrawn.into_iter().rev() {
            cancels.extend(self.drop_request(slot, pos, now));
        }
        Ok(cancels)
    }

    /// The peer announced it now has `groups` (ranges past the blob are clipped).
    pub fn on_have(&mut self, peer: &P, groups: Range<u64>) -> Result<(), PeerError> {
        let slot = *self.index.get(peer).ok_or(PeerError::Unknown)?;
        let end = groups.end.min(self.groups);
        for g in groups.start..end {
            let Some(p) = self.peers[slot].as_mut() else {
                break;
            };
            if let Some(coming) = p.coming.as_mut() {
                coming.clear(g);
            }
            if p.has.set(g) {
                self.count_holder(g, true);
            }
        }
        Ok(())
    }

    /// The peer has asked for `groups` itself and will serve them as they
    /// verify there (ranges past the blob are clipped): see
    /// [`SchedulerConfig::max_early_groups`].
    pub fn on_coming(&mut self, peer: &P, groups: Range<u64>) -> Result<(), PeerError> {
        let slot = *self.index.get(peer).ok_or(PeerError::Unknown)?;
        let n = self.groups;
        let end = groups.end.min(n);
        if let Some(p) = self.peers[slot].as_mut()
            && groups.start < end
        {
            p.coming
                .get_or_insert_with(|| Bitfield::new(n))
                .set_range(groups.start..end);
        }
        Ok(())
    }

    /// Groups verified or asked of a peer that has them: what this download
    /// will hold if its requests succeed, and may tell its own peers are
    /// coming. Early requests do not count: two peers that each said a
    /// group is coming would otherwise ask each other for it ahead, and
    /// each hold the other's request until both gave up.
    pub fn expected(&self) -> Bitfield {
        let mut out = self.verified.clone();
        for p in self.peers.iter().flatten() {
            for r in &p.queue {
                out.set_range(r.groups.clone());
            }
        }
        out
    }

    /// Early requests outstanding at `peer` (see [`SchedulerConfig::max_early_groups`]).
    pub fn early_requests(&self, peer: &P) -> Vec<Request<P>> {
        self.peer(peer)
            .map(|p| {
                (p.early.iter())
                    .map(|e| Request {
                        id: e.req.id,
                        peer: p.id.clone(),
                        groups: e.req.groups.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A round-trip sample from outside (e.g. libp2p ping).
    pub fn on_rtt(&mut self, peer: &P, rtt: Duration) {
        if let Some(&slot) = self.index.get(peer)
            && let Some(p) = self.peers[slot].as_mut()
        {
            add_rtt(p, rtt);
        }
    }

    /// Streaming: the reader is at `offset` (bytes); the window after it is
    /// fetched first, in order. `None` returns to rarest first.
    ///
    /// On a seek (the playhead jumps outside the previous window) whose
    /// first missing group is not being served right now, the queued
    /// requests that do not touch the new window (all but the one each peer
    /// is serving) are dropped and returned: cancel them, so the window is
    /// not stuck behind seconds of queue. Their groups are fetched again later.
    pub fn set_playhead(&mut self, offset: Option<u64>, now: Instant) -> Vec<Request<P>> {
        let old = self.window();
        self.playhead = offset.map(|o| o.min(self.size));
        let mut cancels = Vec::new();
        let Some(window) = self.window() else {
            return cancels;
        };
        if old.is_some_and(|w| w.contains(&window.start)) {
            return cancels;
        }
        let Some(first) = window.clone().find(|&g| !self.verified.get(g)) else {
            return cancels;
        };
        let serving = self
            .peers
            .iter()
            .flatten()
            .any(|p| p.queue.front().is_some_and(|r| r.groups.contains(&first)));
        if serving {
            return cancels;
        }
        for slot in 0..self.peers.len() {
            let mut pos = 1;
            while let Some(r) = self.peers[slot].as_ref().and_then(|p| p.queue.get(pos)) {
                if r.groups.start < window.end && window.start < r.groups.end {
                    pos += 1;
                    continue;
                }
                if let Some(req) = self.drop_request(slot, pos, now) {
                    cancels.push(req);
                }
            }
        }
        cancels
    }

    /// Requests to send to `peer` now, to fill its queue up to its rate ×
    /// queue time; and cancels of work stolen from slower peers.
    pub fn requests_for(&mut self, peer: &P, now: Instant) -> Actions<P> {
        let mut out = Actions::default();
        let Some(&slot) = self.index.get(peer) else {
            return out;
        };
        if self.is_complete() {
            return out;
        }
        if let Some(p) = self.peers[slot].as_mut() {
            p.rate.advance(now);
        }
        let window = self.window();
        while let Some(p) = self.peers[slot].as_ref() {
            if p.queue.len() >= self.config.max_requests_per_peer {
                break;
            }
            let target = self.target_groups(p);
            let budget = target.saturating_sub(p.pending);
            let size = self.request_groups(p);
            // As TCP avoids silly windows: while the queue holds work, wait
            // until a whole request fits rather than send a sliver of one.
            if budget < size.min(target) {
                break;
            }
            let max_len = budget.min(size);
            let run = window
                .clone()
                .and_then(|w| self.pick_open(slot, w, max_len))
                .or_else(|| {
                    window
                        .clone()
                        .and_then(|w| self.pick_steal(slot, Some(w), max_len, now, &mut out))
                })
                .or_else(|| self.pick_piece(slot, max_len))
                .or_else(|| self.pick_steal(slot, None, max_len, now, &mut out));
            let Some(req) = run.and_then(|run| self.push_request(slot, run, now)) else {
                break;
            };
            out.requests.push(req);
        }
        while let Some(run) = self.pick_early(slot) {
            let Some(req) = self.push_early(slot, run, now) else {
                break;
            };
            out.requests.push(req);
        }
        out
    }

    /// `group` arrived from `peer` and verified. Returns requests at other
    /// peers made redundant (all their groups are now verified): cancel them.
    pub fn on_group_verified(&mut self, peer: &P, group: u64, now: Instant) -> Vec<Request<P>> {
        let mut cancels = Vec::new();
        if group >= self.groups {
            return cancels;
        }
        let len = self.group_len(group);
        let slot = self.index.get(peer).copied();
        let duplicate = self.verified.get(group);
        let mut newly_held = false;
        if let Some(slot) = slot
            && let Some(p) = self.peers[slot].as_mut()
        {
            p.rate.record(len, now);
            p.last_progress = now;
            p.snubbed = false;
            if let Some(t0) = p.rtt_probe.take() {
                add_rtt(p, now.saturating_duration_since(t0));
            }
            newly_held = p.has.set(group);
            if duplicate {
                p.stats.duplicate_groups += 1;
            } else {
                p.stats.useful_bytes += len;
                p.stats.useful_groups += 1;
            }
            p.timeout = peer_timeout(&self.config, p);
        }
        if newly_held {
            self.count_holder(group, true);
        }
        if duplicate {
            self.stats.duplicate_groups += 1;
            self.stats.duplicate_bytes += len;
            return cancels;
        }
        self.stats.useful_bytes += len;
        self.mark_verified(group, slot, now, &mut cancels);
        cancels
    }

    /// `group` from `peer` failed verification. The peer is blamed for that
    /// group only: it is never asked for it again, the rest of the request
    /// that carried it is dropped, and after [`SchedulerConfig::ban_after`]
    /// bad groups the peer is banned and all its requests are dropped.
    pub fn on_bad_group(&mut self, peer: &P, group: u64, now: Instant) -> BadGroup<P> {
        let mut out = BadGroup {
            banned: false,
            bad_groups: 0,
            cancels: Vec::new(),
        };
        let Some(&slot) = self.index.get(peer) else {
            return out;
        };
        self.stats.bad_groups += 1;
        let Some(p) = self.peers[slot].as_mut() else {
            return out;
        };
        p.stats.bad_groups += 1;
        p.refused.insert(group);
        out.bad_groups = p.stats.bad_groups;
        let early = p.early.iter().position(|e| e.req.groups.contains(&group));
        if let Some(pos) = p.queue.iter().position(|r| r.groups.contains(&group))
            && let Some(req) = self.drop_request(slot, pos, now)
        {
            out.cancels.push(req);
        } else if let Some(pos) = early
            && let Some(req) = self.drop_early(slot, pos)
        {
            out.cancels.push(req);
        }
        if out.bad_groups >= self.config.ban_after {
            out.banned = true;
            out.cancels.extend(self.drop_all(slot, now));
            out.cancels.extend(self.drop_all_early(slot));
            self.remove_peer(peer, now);
            self.stats.banned += 1;
            self.banned.insert(peer.clone());
            self.banned_order.push_back(peer.clone());
            while self.banned_order.len() > self.config.max_banned {
                if let Some(old) = self.banned_order.pop_front() {
                    self.banned.remove(&old);
                }
            }
        }
        out
    }

    /// The request failed (stream error, rejected, truncated): its groups
    /// not yet verified are reassigned. Returns whether it was outstanding.
    pub fn on_request_failed(&mut self, peer: &P, request: RequestId, now: Instant) -> bool {
        let Some(&slot) = self.index.get(peer) else {
            return false;
        };
        let Some(p) = self.peers[slot].as_ref() else {
            return false;
        };
        if let Some(pos) = p.queue.iter().position(|r| r.id == request) {
            return self.drop_request(slot, pos, now).is_some();
        }
        // The peer no longer expects those groups (its own request failed,
        // say): they are asked of it once it has them, like any others.
        match p.early.iter().position(|e| e.req.id == request) {
            Some(pos) => self.drop_early(slot, pos).is_some(),
            None => false,
        }
    }

    /// Time-driven work: a peer that delivered nothing for its timeout loses
    /// all its requests (returned, to cancel) and is snubbed to one group at
    /// a time until it delivers again.
    pub fn poll(&mut self, now: Instant) -> Poll<P> {
        let mut out = Poll {
            timed_out: Vec::new(),
            next_deadline: None,
        };
        for slot in 0..self.peers.len() {
            while let Some(pos) = self.peers[slot]
                .as_ref()
                .and_then(|p| p.early.iter().position(|e| now >= e.deadline))
            {
                out.timed_out.extend(self.drop_early(slot, pos));
            }
            let Some(p) = self.peers[slot].as_mut() else {
                continue;
            };
            p.rate.advance(now);
            if let Some(d) = p.early.iter().map(|e| e.deadline).min() {
                out.next_deadline = Some(out.next_deadline.map_or(d, |n| n.min(d)));
            }
            if p.queue.is_empty() {
                continue;
            }
            let deadline = p.last_progress + p.timeout;
            if now >= deadline {
                p.snubbed = true;
                p.stats.timeouts += 1;
                p.last_progress = now;
                self.stats.timeouts += 1;
                out.timed_out.extend(self.drop_all(slot, now));
            } else {
                out.next_deadline = Some(out.next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
        }
        out
    }

    /// Checks every internal invariant; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut inflight = vec![0u32; self.groups as usize];
        let mut holders = vec![0u16; self.groups as usize];
        for p in self.peers.iter().flatten() {
            if !self.index.contains_key(&p.id) {
                return Err(format!("{:?} not indexed", p.id));
            }
            if p.queue.len() > self.config.max_requests_per_peer {
                return Err(format!("{:?} has {} requests", p.id, p.queue.len()));
            }
            let mut pending = 0;
            for (i, r) in p.queue.iter().enumerate() {
                let remaining = r.groups.clone().filter(|&g| !self.verified.get(g)).count();
                if remaining as u64 != r.remaining {
                    return Err(format!("{} remaining {} != {remaining}", r.id, r.remaining));
                }
                pending += r.remaining;
                for g in r.groups.clone() {
                    inflight[g as usize] += 1;
                    if !p.can_take(g) {
                        return Err(format!("{:?} asked for group {g} it lacks", p.id));
                    }
                }
                for o in p.queue.iter().skip(i + 1) {
                    if o.groups.start < r.groups.end && r.groups.start < o.groups.end {
                        return Err(format!("{:?}: {} overlaps {}", p.id, r.id, o.id));
                    }
                }
            }
            if pending != p.pending {
                return Err(format!("{:?} pending {} != {pending}", p.id, p.pending));
            }
            for e in &p.early {
                let r = &e.req;
                let remaining = r.groups.clone().filter(|&g| !self.verified.get(g)).count();
                if remaining as u64 != r.remaining {
                    return Err(format!("{} remaining {} != {remaining}", r.id, r.remaining));
                }
                for g in r.groups.clone() {
                    inflight[g as usize] += 1;
                }
            }
            if p.early_groups() > self.config.max_early_groups {
                return Err(format!("{:?} has {} early groups", p.id, p.early_groups()));
            }
            for r in p.has.ones_ranges() {
                for g in r {
                    holders[g as usize] += 1;
                }
            }
        }
        for g in 0..self.groups {
            let n = inflight[g as usize];
            if n != u32::from(self.inflight[g as usize]) {
                return Err(format!(
                    "group {g} inflight {n} != {}",
                    self.inflight[g as usize]
                ));
            }
            if n > 1 + u32::from(self.config.max_duplicates) {
                return Err(format!("group {g} requested {n} times"));
            }
        }
        if holders != self.holders {
            return Err("group holders wrong".into());
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            let range = self.piece_range(i as u64);
            let open = range
                .clone()
                .filter(|&g| !self.verified.get(g) && self.inflight[g as usize] == 0)
                .count() as u32;
            let lone = range.clone().filter(|&g| self.is_lone(g)).count() as u32;
            let needed = || range.clone().filter(|&g| !self.verified.get(g));
            let avail: u32 = needed().map(|g| u32::from(self.holders[g as usize])).sum();
            let held = needed().filter(|&g| self.holders[g as usize] > 0).count() as u32;
            let verified = (range.end - range.start) as u32 - needed().count() as u32;
            if open != piece.open
                || verified != piece.verified
                || avail != piece.avail
                || held != piece.held
                || lone != piece.lone
            {
                return Err(format!("piece {i} counters wrong: {piece:?}"));
            }
        }
        Ok(())
    }

    // ---- internals ----

    fn peer(&self, peer: &P) -> Option<&Peer<P>> {
        self.index.get(peer).and_then(|&s| self.peers[s].as_ref())
    }

    fn group_len(&self, g: u64) -> u64 {
        (self.size - (g * GROUP_SIZE).min(self.size)).min(GROUP_SIZE)
    }

    fn piece_range(&self, piece: u64) -> Range<u64> {
        piece * self.piece_groups..((piece + 1) * self.piece_groups).min(self.groups)
    }

    fn window(&self) -> Option<Range<u64>> {
        let ph = self.playhead?;
        let start = ph / GROUP_SIZE;
        let end_byte = ph
            .saturating_add(self.config.stream_window)
            .saturating_add(self.config.stream_readahead);
        let end = end_byte
            .div_ceil(GROUP_SIZE)
            .min(self.groups)
            .max(start + 1);
        Some(start.min(self.groups)..end.min(self.groups))
    }

    fn target_groups(&self, p: &Peer<P>) -> u64 {
        if p.snubbed {
            return 1;
        }
        let c = &self.config;
        let bytes = match p.rate.rate() {
            Some(r) => {
                let rtt2 = p.srtt.unwrap_or_default() * 2;
                (r * c.queue_time.max(rtt2).as_secs_f64()) as u64
            }
            None => c.min_queue_bytes,
        };
        bytes
            .clamp(c.min_queue_bytes, c.max_queue_bytes.max(c.min_queue_bytes))
            .div_ceil(GROUP_SIZE)
            .max(1)
    }

    /// Groups per request: `request_time` of the peer's rate; half the
    /// queue floor while the rate is unknown, so two requests are in flight
    /// and the peer never waits a round trip between them.
    fn request_groups(&self, p: &Peer<P>) -> u64 {
        let c = &self.config;
        let bytes = match p.rate.rate() {
            Some(r) => (r * c.request_time.as_secs_f64()) as u64,
            None => c.min_queue_bytes / 2,
        };
        let max = u64::from(c.max_request_groups.max(1));
        (bytes / GROUP_SIZE).clamp(u64::from(c.min_request_groups).clamp(1, max), max)
    }

    fn is_open(&self, g: u64) -> bool {
        !self.verified.get(g) && self.inflight[g as usize] == 0
    }

    fn is_lone(&self, g: u64) -> bool {
        self.holders[g as usize] == 1 && self.is_open(g)
    }

    /// A connected peer gained (`added`) or lost group `g`.
    fn count_holder(&mut self, g: u64, added: bool) {
        let was_lone = self.is_lone(g);
        let needed = !self.verified.get(g);
        let holders = &mut self.holders[g as usize];
        let piece = &mut self.pieces[(g / self.piece_groups) as usize];
        if added {
            *holders += 1;
        } else {
            *holders -= 1;
        }
        if needed {
            match (added, *holders) {
                (true, 1) => piece.held += 1,
                (false, 0) => piece.held -= 1,
                _ => {}
            }
            if added {
                piece.avail += 1;
            } else {
                piece.avail -= 1;
            }
        }
        self.recount_lone(g, was_lone);
    }

    /// Group `g` may have become (or stopped being) lone since `was_lone`.
    fn recount_lone(&mut self, g: u64, was_lone: bool) {
        let lone = self.is_lone(g);
        let piece = &mut self.pieces[(g / self.piece_groups) as usize];
        match (was_lone, lone) {
            (false, true) => piece.lone += 1,
            (true, false) => piece.lone -= 1,
            _ => {}
        }
    }

    /// The first run of open groups in `range` that the peer has, at most
    /// `max_len` long and inside one piece.
    fn pick_open(&self, slot: usize, range: Range<u64>, max_len: u64) -> Option<Range<u64>> {
        let p = self.peers[slot].as_ref()?;
        let ok = |g: u64| self.is_open(g) && p.can_take(g);
        let start = range.clone().find(|&g| ok(g))?;
        let piece_end = (start / self.piece_groups + 1) * self.piece_groups;
        let limit = range.end.min(piece_end).min(start + max_len);
        let mut end = start + 1;
        while end < limit && ok(end) {
            end += 1;
        }
        Some(start..end)
    }

    /// Random pieces first, then rarest first: pieces with a group only one
    /// connected peer holds (when this peer is that one), then the fewest
    /// copies per group we need that anyone holds; ties go to pieces already
    /// started, then a random key.
    fn pick_piece(&mut self, slot: usize, max_len: u64) -> Option<Range<u64>> {
        let p = self.peers[slot].as_ref()?;
        let seed = p.has.is_complete() && p.refused.is_empty();
        let random_phase = self.complete_pieces < u64::from(self.config.random_first_pieces);
        let mut best: Option<(usize, PieceKey)> = None;
        let mut ties = 0u64;
        for (i, piece) in self.pieces.iter().enumerate() {
            if piece.open == 0 || piece.held == 0 {
                continue;
            }
            let started = piece.open < piece.len;
            let lone = !random_phase
                && piece.lone > 0
                && (seed || self.lone_groups(slot, i).next().is_some());
            let candidate = |b: &Option<(usize, PieceKey)>| -> bool {
                let Some((_, (blone, avail, held, bstarted, key))) = *b else {
                    return true;
                };
                if random_phase {
                    return started && !bstarted;
                }
                if lone != blone {
                    return lone;
                }
                // Rarer first: fewer copies per needed group that anyone
                // holds (avail/held smaller, compared exactly).
                let lhs = u64::from(piece.avail) * held;
                let rhs = avail * u64::from(piece.held);
                lhs < rhs
                    || (lhs == rhs
                        && ((started && !bstarted) || (started == bstarted && piece.key < key)))
            };
            let better = candidate(&best);
            let tie = random_phase
                && best
                    .as_ref()
                    .is_some_and(|(_, (_, _, _, bstarted, _))| *bstarted == started);
            if !better && !tie {
                continue;
            }
            if !seed && !lone {
                let range = self.piece_range(i as u64);
                if !range.into_iter().any(|g| self.is_open(g) && p.can_take(g)) {
                    continue;
                }
            }
            let key = (
                lone,
                u64::from(piece.avail),
                u64::from(piece.held),
                started,
                piece.key,
            );
            if better {
                best = Some((i, key));
                ties = 1;
            } else {
                // Reservoir sampling among equal candidates of the random phase.
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = Some((i, key));
                }
            }
        }
        let (i, (lone, ..)) = best?;
        let mut range = self.piece_range(i as u64);
        if lone {
            // Every peer downloading from the lone holder ranks its groups
            // alike: each starts at a random one, so that the holder's
            // upload makes distinct copies. Starts are aligned to the
            // request size, so a request never begins in the middle of
            // another one's run (a fast peer's requests span whole pieces).
            let count = self.lone_groups(slot, i).count() as u64;
            let nth = self.rng.below(count) as usize;
            if let Some(g) = self.lone_groups(slot, i).nth(nth) {
                range.start = g - (g - range.start) % max_len.max(1);
            }
        }
        self.pick_open(slot, range, max_len)
    }

    /// The groups of piece `i` that only the peer in `slot` holds and
    /// nobody serves yet.
    fn lone_groups(&self, slot: usize, i: usize) -> impl Iterator<Item = u64> + '_ {
        let p = self.peers[slot].as_ref();
        self.piece_range(i as u64)
            .filter(move |&g| self.is_lone(g) && p.is_some_and(|p| p.can_take(g)))
    }

    /// Estimated seconds for a peer to deliver `groups` more groups after its
    /// current queue.
    /// Unmeasured peers are assumed to run at [`SchedulerConfig::initial_rate`].
    fn eta(&self, p: &Peer<P>, ahead: u64) -> f64 {
        let rate = p.rate.rate().unwrap_or(self.config.initial_rate);
        if rate <= 0.0 {
            return f64::INFINITY;
        }
        (ahead * GROUP_SIZE) as f64 / rate
    }

    /// When the peer has nothing open to fetch: take over a request queued at
    /// a much slower peer behind the two it is serving and beyond its
    /// `steal_horizon` (cancelling it there), or in endgame (or for the
    /// streaming window) duplicate the tail of the request a much slower peer
    /// is serving. The holder's estimated finish must exceed
    /// `steal_factor` × ours.
    fn pick_steal(
        &mut self,
        slot: usize,
        window: Option<Range<u64>>,
        max_len: u64,
        now: Instant,
        out: &mut Actions<P>,
    ) -> Option<Range<u64>> {
        let thief = self.peers[slot].as_ref()?;
        if thief.snubbed {
            return None;
        }
        let base = thief.srtt.unwrap_or_default().as_secs_f64();
        let endgame = window.is_some() || self.pieces.iter().all(|p| p.open == 0);
        let max_inflight = 1 + self.config.max_duplicates;
        let dup_ok = |g: u64| {
            !self.verified.get(g)
                && thief.can_take(g)
                && self.inflight[g as usize] < max_inflight
                && !thief.requests_group(g)
        };
        // (score, holder slot, position, steal whole?)
        let mut best: Option<(f64, usize, usize, bool)> = None;
        for (qs, q) in self.peers.iter().enumerate() {
            let Some(q) = q.as_ref() else { continue };
            if qs == slot {
                continue;
            }
            let horizon = self
                .config
                .steal_horizon
                .max(q.srtt.unwrap_or_default() * 2)
                .as_secs_f64();
            let mut ahead = 0;
            for (pos, r) in q.queue.iter().enumerate() {
                let starts_in = self.eta(q, ahead);
                ahead += r.remaining;
                if r.remaining == 0 {
                    continue;
                }
                if let Some(w) = &window
                    && !(r.groups.start < w.end && w.start < r.groups.end)
                {
                    continue;
                }
                let eta_q = self.eta(q, ahead);
                let eta_p = self.eta(thief, thief.pending + r.remaining.min(max_len));
                if eta_q <= self.config.steal_factor * (eta_p + base) {
                    continue;
                }
                // The request after the head may be on its way already (the
                // holder starts it as the head ends, before we hear so):
                // taking it over would fetch its bytes twice.
                if pos == 1 {
                    continue;
                }
                let buffered = starts_in < horizon
                    && (ahead - r.remaining) * GROUP_SIZE < self.config.steal_horizon_bytes;
                let steal = pos > 1 && !buffered;
                // Endgame duplicates only the request being served.
                if !steal && (pos > 0 || !endgame) {
                    continue;
                }
                let usable = if steal {
                    r.groups
                        .clone()
                        .any(|g| !self.verified.get(g) && thief.can_take(g))
                } else {
                    r.groups.clone().any(dup_ok)
                };
                if !usable {
                    continue;
                }
                let score = match &window {
                    Some(_) => -(r.groups.start as f64),
                    None => eta_q,
                };
                if best.as_ref().is_none_or(|b| score > b.0) {
                    best = Some((score, qs, pos, steal));
                }
            }
        }
        let (_, qs, pos, steal) = best?;
        let range = self.peers[qs].as_ref()?.queue.get(pos)?.groups.clone();
        if steal {
            let cancelled = self.drop_request(qs, pos, now)?;
            if let Some(q) = self.peers[qs].as_mut() {
                q.stats.stolen_from += 1;
            }
            self.stats.steals += 1;
            out.cancels.push(cancelled);
            return self.pick_open(slot, range, max_len);
        }
        // Duplicate the tail: the holder reaches it last.
        let thief = self.peers[slot].as_ref()?;
        let dup_ok = |g: u64| {
            !self.verified.get(g)
                && thief.can_take(g)
                && self.inflight[g as usize] < max_inflight
                && !thief.requests_group(g)
        };
        let end = range.clone().rev().find(|&g| dup_ok(g))? + 1;
        let mut start = end - 1;
        while start > range.start && end - start < max_len && dup_ok(start - 1) {
            start -= 1;
        }
        self.stats.endgame_requests += 1;
        Some(start..end)
    }

    fn push_request(&mut self, slot: usize, run: Range<u64>, now: Instant) -> Option<Request<P>> {
        let peer = self.peers[slot].as_ref()?.id.clone();
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let remaining = self.claim(run.clone());
        self.stats.requests += 1;
        let p = self.peers[slot].as_mut()?;
        if p.queue.is_empty() {
            p.rtt_probe = Some(now);
            p.last_progress = now;
            p.rate.set_busy(true, now);
        }
        p.queue.push_back(Req {
            id,
            groups: run.clone(),
            remaining,
        });
        p.pending += remaining;
        p.stats.requests += 1;
        Some(Request {
            id,
            peer,
            groups: run,
        })
    }

    /// Counts a new request for `run` in flight; returns how many of its
    /// groups are not yet verified.
    fn claim(&mut self, run: Range<u64>) -> u64 {
        let mut remaining = 0;
        for g in run {
            if self.verified.get(g) {
                continue;
            }
            remaining += 1;
            let was_lone = self.is_lone(g);
            if self.inflight[g as usize] == 0 {
                self.pieces[(g / self.piece_groups) as usize].open -= 1;
            }
            self.inflight[g as usize] += 1;
            self.recount_lone(g, was_lone);
        }
        remaining
    }

    /// The undoing of [`Self::claim`]: unverified groups with no other
    /// request reopen.
    fn release(&mut self, run: Range<u64>) {
        for g in run {
            self.inflight[g as usize] -= 1;
            if self.inflight[g as usize] == 0 && !self.verified.get(g) {
                self.pieces[(g / self.piece_groups) as usize].open += 1;
                self.recount_lone(g, false);
            }
        }
    }

    /// Removes a request; its unverified groups with no other request reopen.
    fn drop_request(&mut self, slot: usize, pos: usize, now: Instant) -> Option<Request<P>> {
        let p = self.peers[slot].as_mut()?;
        let req = p.queue.remove(pos)?;
        p.pending -= req.remaining;
        if p.queue.is_empty() {
            p.rtt_probe = None;
            p.rate.set_busy(false, now);
        }
        let peer = p.id.clone();
        self.release(req.groups.clone());
        Some(Request {
            id: req.id,
            peer,
            groups: req.groups,
        })
    }

    /// The first run of groups the peer in `slot` said are coming to it,
    /// that nobody connected holds or serves yet, within its early budget,
    /// a request's size and one piece.
    fn pick_early(&self, slot: usize) -> Option<Range<u64>> {
        let p = self.peers[slot].as_ref()?;
        let budget = self
            .config
            .max_early_groups
            .saturating_sub(p.early_groups());
        if budget == 0 || p.snubbed {
            return None;
        }
        let max_len = self.request_groups(p).min(budget);
        let ok = |g: u64| p.expects(g) && self.is_open(g) && self.holders[g as usize] == 0;
        for run in p.coming.as_ref()?.ones_ranges() {
            let Some(start) = run.clone().find(|&g| ok(g)) else {
                continue;
            };
            let piece_end = (start / self.piece_groups + 1) * self.piece_groups;
            let limit = run.end.min(piece_end).min(start + max_len);
            let mut end = start + 1;
            while end < limit && ok(end) {
                end += 1;
            }
            return Some(start..end);
        }
        None
    }

    fn push_early(&mut self, slot: usize, run: Range<u64>, now: Instant) -> Option<Request<P>> {
        let peer = self.peers[slot].as_ref()?.id.clone();
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let remaining = self.claim(run.clone());
        self.stats.requests += 1;
        self.stats.early_requests += 1;
        let deadline = now + self.config.early_timeout;
        let p = self.peers[slot].as_mut()?;
        p.stats.requests += 1;
        p.early.push(Early {
            req: Req {
                id,
                groups: run.clone(),
                remaining,
            },
            deadline,
        });
        Some(Request {
            id,
            peer,
            groups: run,
        })
    }

    /// Removes an early request. Its groups are no longer expected of the
    /// peer: they are asked of it once it has them, like any others.
    fn drop_early(&mut self, slot: usize, pos: usize) -> Option<Request<P>> {
        let p = self.peers[slot].as_mut()?;
        if pos >= p.early.len() {
            return None;
        }
        let req = p.early.swap_remove(pos).req;
        if let Some(coming) = p.coming.as_mut() {
            for g in req.groups.clone() {
                coming.clear(g);
            }
        }
        let peer = p.id.clone();
        self.release(req.groups.clone());
        Some(Request {
            id: req.id,
            peer,
            groups: req.groups,
        })
    }

    fn drop_all_early(&mut self, slot: usize) -> Vec<Request<P>> {
        let mut out = Vec::new();
        while let Some(r) = self.drop_early(slot, 0) {
            out.push(r);
        }
        out
    }

    fn drop_all(&mut self, slot: usize, now: Instant) -> Vec<Request<P>> {
        let mut out = Vec::new();
        while let Some(r) = self.drop_request(slot, 0, now) {
            out.push(r);
        }
        out
    }

    fn mark_verified(
        &mut self,
        group: u64,
        from: Option<usize>,
        now: Instant,
        cancels: &mut Vec<Request<P>>,
    ) {
        let was_lone = self.is_lone(group);
        self.verified.set(group);
        self.recount_lone(group, was_lone);
        for p in self.peers.iter_mut().flatten() {
            if let Some(coming) = p.coming.as_mut() {
                coming.clear(group);
            }
        }
        let holders = self.holders[group as usize];
        let piece = &mut self.pieces[(group / self.piece_groups) as usize];
        piece.avail -= u32::from(holders);
        piece.held -= u32::from(holders > 0);
        piece.verified += 1;
        if piece.verified == piece.len {
            self.complete_pieces += 1;
        }
        let mut left = self.inflight[group as usize];
        if left == 0 {
            piece.open -= 1;
            return;
        }
        let order = from
            .into_iter()
            .chain((0..self.peers.len()).filter(|&s| Some(s) != from));
        // (slot, request, cancel it?, early?)
        let mut done: Vec<(usize, RequestId, bool, bool)> = Vec::new();
        for slot in order {
            if left == 0 {
                break;
            }
            let Some(p) = self.peers[slot].as_mut() else {
                continue;
            };
            let cancel = Some(slot) != from;
            for r in p.queue.iter_mut().filter(|r| r.groups.contains(&group)) {
                r.remaining -= 1;
                p.pending -= 1;
                left -= 1;
                if r.remaining == 0 {
                    done.push((slot, r.id, cancel, false));
                }
            }
            let early = p.early.iter_mut().map(|e| &mut e.req);
            for r in early.filter(|r| r.groups.contains(&group)) {
                r.remaining -= 1;
                left -= 1;
                if r.remaining == 0 {
                    done.push((slot, r.id, cancel, true));
                }
            }
        }
        for (slot, id, cancel, early) in done {
            let Some(p) = self.peers[slot].as_ref() else {
                continue;
            };
            let dropped = if early {
                let pos = p.early.iter().position(|e| e.req.id == id);
                pos.and_then(|pos| self.drop_early(slot, pos))
            } else {
                let pos = p.queue.iter().position(|r| r.id == id);
                pos.and_then(|pos| self.drop_request(slot, pos, now))
            };
            if let Some(req) = dropped
                && cancel
            {
                self.stats.redundant_cancels += 1;
                cancels.push(req);
            }
        }
    }
}

fn add_rtt<P>(p: &mut Peer<P>, sample: Duration) {
    p.srtt = Some(match p.srtt {
        None => sample,
        Some(s) => (s * 7 + sample) / 8,
    });
}

fn peer_timeout<P>(c: &SchedulerConfig, p: &Peer<P>) -> Duration {
    let Some(rtt) = p.srtt else {
        return c.initial_timeout;
    };
    let group = match p.rate.rate() {
        Some(rate) if rate > 0.0 => Duration::from_secs_f64((GROUP_SIZE as f64 / rate).min(3600.0)),
        _ => Duration::ZERO,
    };
    (rtt * 4 + group * 8).clamp(c.min_timeout, c.max_timeout.max(c.min_timeout))
}

#[cfg(test)]
mod tests;
