//! The upload side: which peers may download from us (choking), how fast
//! (token buckets), and how many of their requests we serve at once.
//!
//! A pure state machine like the scheduler: no I/O, `now` is an argument,
//! randomness comes from a seeded PRNG. One choker per node.
//!
//! Rules (libtorrent's defaults):
//! - `upload_slots` regular slots. Every `rechoke_interval` (10 s): while we
//!   download anything, the interested peers that sent us the most bytes over
//!   the last interval get them (tit-for-tat; ties random). While only
//!   seeding, slots rotate round-robin among interested peers (or go to the
//!   peers we upload to fastest, [`SeedChoking::FastestUpload`]).
//! - `optimistic_slots` more, rotated every `optimistic_interval` (30 s) to a
//!   random choked interested peer; peers connected less than `new_peer_age`
//!   ago are `new_peer_weight` times as likely.
//! - A slot freed between rechokes (peer left or lost interest) is refilled at
//!   once.
//! - A peer may have at most `max_requests_per_peer` requests being served,
//!   and only while unchoked.

mod bucket;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use bucket::{RateLimiter, TokenBucket};

use crate::scheduler::rng::Rng;

/// How slots are given while only seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedChoking {
    /// Rotate through interested peers, each holding a slot for one interval.
    RoundRobin,
    /// Peers we upload to fastest keep their slots.
    FastestUpload,
}

#[derive(Debug, Clone)]
pub struct ChokerConfig {
    pub upload_slots: usize,
    pub optimistic_slots: usize,
    pub rechoke_interval: Duration,
    pub optimistic_interval: Duration,
    pub new_peer_age: Duration,
    pub new_peer_weight: u32,
    pub seeding: SeedChoking,
    pub max_peers: usize,
    pub max_requests_per_peer: usize,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            upload_slots: 4,
            optimistic_slots: 1,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            new_peer_age: Duration::from_secs(60),
            new_peer_weight: 3,
            seeding: SeedChoking::RoundRobin,
            max_peers: 256,
            max_requests_per_peer: 16,
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChokeEvent<P> {
    Choke(P),
    Unchoke(P),
}

/// Outcome of [`Choker::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChokerPoll<P> {
    pub events: Vec<ChokeEvent<P>>,
    pub next_deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChokerError {
    #[error("peer table full ({0} peers)")]
    Full(usize),
    #[error("peer already added")]
    AlreadyAdded,
}

/// Why a request from a peer is not served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown peer")]
    Unknown,
    #[error("peer is choked")]
    Choked,
    #[error("too many requests in progress")]
    Busy,
}

#[derive(Debug, Clone)]
struct Peer {
    connected_at: Instant,
    interested: bool,
    unchoked: bool,
    downloaded: u64,
    uploaded: u64,
    download_rate: f64,
    upload_rate: f64,
    /// Round-robin position: lower waited longer.
    turn: u64,
    serving: usize,
}

#[derive(Debug)]
pub struct Choker<P> {
    config: ChokerConfig,
    peers: BTreeMap<P, Peer>,
    optimistic: Vec<P>,
    downloading: bool,
    rng: Rng,
    last_rechoke: Instant,
    next_rechoke: Instant,
    next_optimistic: Instant,
    turns: u64,
}

impl<P: Clone + Ord + std::fmt::Debug> Choker<P> {
    pub fn new(config: ChokerConfig, seed: u64, now: Instant) -> Self {
        Self {
            next_rechoke: now + config.rechoke_interval,
            next_optimistic: now,
            config,
            peers: BTreeMap::new(),
            optimistic: Vec::new(),
            downloading: false,
            rng: Rng::new(seed),
            last_rechoke: now,
            turns: 0,
        }
    }

    pub fn add_peer(&mut self, peer: P, now: Instant) -> Result<(), ChokerError> {
        if self.peers.contains_key(&peer) {
            return Err(ChokerError::AlreadyAdded);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(ChokerError::Full(self.config.max_peers));
        }
        self.turns += 1;
        self.peers.insert(
            peer,
            Peer {
                connected_at: now,
                interested: false,
                unchoked: false,
                downloaded: 0,
                uploaded: 0,
                download_rate: 0.0,
                upload_rate: 0.0,
                turn: self.turns,
                serving: 0,
            },
        );
        Ok(())
    }

    /// The peer left; a slot it held is refilled at once.
    pub fn remove_peer(&mut self, peer: &P, now: Instant) -> Vec<ChokeEvent<P>> {
        let was_unchoked = self.peers.remove(peer).is_some_and(|p| p.unchoked);
        self.optimistic.retain(|p| p != peer);
        if was_unchoked {
            self.fill(now)
        } else {
            Vec::new()
        }
    }

    /// The peer is (not) interested in our data. Losing interest chokes it
    /// and frees its slot; gaining it takes a free slot if there is one.
    pub fn set_interested(
        &mut self,
        peer: &P,
        interested: bool,
        now: Instant,
    ) -> Vec<ChokeEvent<P>> {
        let mut events = Vec::new();
        let Some(p) = self.peers.get_mut(peer) else {
            return events;
        };
        if p.interested == interested {
            return events;
        }
        p.interested = interested;
        if !interested && p.unchoked {
            p.unchoked = false;
            self.optimistic.retain(|o| o != peer);
            events.push(ChokeEvent::Choke(peer.clone()));
        }
        events.extend(self.fill(now));
        events
    }

    /// Whether we download anything (tit-for-tat) or only seed.
    pub fn set_downloading(&mut self, downloading: bool) {
        self.downloading = downloading;
    }

    /// We received `bytes` of verified data from `peer`.
    pub fn on_downloaded(&mut self, peer: &P, bytes: u64) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.downloaded += bytes;
        }
    }

    /// We sent `bytes` to `peer`.
    pub fn on_uploaded(&mut self, peer: &P, bytes: u64) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.uploaded += bytes;
        }
    }

    pub fn is_unchoked(&self, peer: &P) -> bool {
        self.peers.get(peer).is_some_and(|p| p.unchoked)
    }

    /// Unchoked peers, in order.
    pub fn unchoked(&self) -> Vec<P> {
        self.peers
            .iter()
            .filter(|(_, p)| p.unchoked)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Peers holding an optimistic slot.
    pub fn optimistic(&self) -> &[P] {
        &self.optimistic
    }

    /// Bytes per second received from and sent to `peer` over the last interval.
    pub fn rates(&self, peer: &P) -> Option<(f64, f64)> {
        self.peers
            .get(peer)
            .map(|p| (p.download_rate, p.upload_rate))
    }

    /// Start serving a request from `peer`, if it is unchoked and under its bound.
    pub fn begin_request(&mut self, peer: &P) -> Result<(), Refusal> {
        let p = self.peers.get_mut(peer).ok_or(Refusal::Unknown)?;
        if !p.unchoked {
            return Err(Refusal::Choked);
        }
        if p.serving >= self.config.max_requests_per_peer {
            return Err(Refusal::Busy);
        }
        p.serving += 1;
        Ok(())
    }

    /// A request begun with [`Choker::begin_request`] finished or failed.
    pub fn end_request(&mut self, peer: &P) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.serving = p.serving.saturating_sub(1);
        }
    }

    /// Rechokes when the interval has elapsed.
    pub fn poll(&mut self, now: Instant) -> ChokerPoll<P> {
        let events = if now >= self.next_rechoke {
            self.rechoke(now)
        } else {
            Vec::new()
        };
        ChokerPoll {
            events,
            next_deadline: self.next_rechoke,
        }
    }

    /// Recomputes the unchoked set now and returns the changes.
    pub fn rechoke(&mut self, now: Instant) -> Vec<ChokeEvent<P>> {
        let elapsed = now
            .saturating_duration_since(self.last_rechoke)
            .max(Duration::from_millis(1))
            .as_secs_f64();
        for p in self.peers.values_mut() {
            p.download_rate = p.downloaded as f64 / elapsed;
            p.upload_rate = p.uploaded as f64 / elapsed;
            p.downloaded = 0;
            p.uploaded = 0;
        }
        self.last_rechoke = now;
        self.next_rechoke = now + self.config.rechoke_interval;
        let rotate = now >= self.next_optimistic;
        if rotate {
            self.optimistic.clear();
            self.next_optimistic = now + self.config.optimistic_interval;
        }
        self.optimistic
            .retain(|o| self.peers.get(o).is_some_and(|p| p.interested));
        let regular = self.ranked(self.config.upload_slots);
        for r in &regular {
            self.optimistic.retain(|o| o != r);
        }
        if self.config.seeding == SeedChoking::RoundRobin && !self.downloading {
            for r in &regular {
                self.turns += 1;
                if let Some(p) = self.peers.get_mut(r) {
                    p.turn = self.turns;
                }
            }
        }
        self.pick_optimistic(&regular, now);
        let chosen: Vec<P> = regular
            .into_iter()
            .chain(self.optimistic.iter().cloned())
            .collect();
        self.apply(&chosen)
    }

    /// Interested peers in slot order, best first, excluding optimistic ones.
    fn ranked(&mut self, n: usize) -> Vec<P> {
        let mut c: Vec<(P, f64, u64, u64)> = Vec::new();
        for (k, p) in &self.peers {
            if p.interested && !self.optimistic.contains(k) {
                c.push((k.clone(), 0.0, p.turn, 0));
            }
        }
        for e in c.iter_mut() {
            let p = &self.peers[&e.0];
            e.1 = if self.downloading {
                p.download_rate
            } else {
                p.upload_rate
            };
            e.3 = self.rng.next_u64();
        }
        if !self.downloading && self.config.seeding == SeedChoking::RoundRobin {
            c.sort_by_key(|e| e.2);
        } else {
            c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.3.cmp(&b.3)));
        }
        c.into_iter().take(n).map(|e| e.0).collect()
    }

    fn pick_optimistic(&mut self, regular: &[P], now: Instant) {
        while self.optimistic.len() < self.config.optimistic_slots {
            let mut pool: Vec<(P, u64)> = Vec::new();
            for (k, p) in &self.peers {
                if p.interested && !regular.contains(k) && !self.optimistic.contains(k) {
                    let young =
                        now.saturating_duration_since(p.connected_at) < self.config.new_peer_age;
                    let w = if young {
                        self.config.new_peer_weight.max(1)
                    } else {
                        1
                    };
                    pool.push((k.clone(), u64::from(w)));
                }
            }
            let total: u64 = pool.iter().map(|e| e.1).sum();
            if total == 0 {
                return;
            }
            let mut x = self.rng.below(total);
            for (k, w) in pool {
                if x < w {
                    self.optimistic.push(k);
                    break;
                }
                x -= w;
            }
        }
    }

    /// Fills free slots between rechokes.
    fn fill(&mut self, now: Instant) -> Vec<ChokeEvent<P>> {
        let regular: Vec<P> = self
            .peers
            .iter()
            .filter(|(k, p)| p.unchoked && !self.optimistic.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        let free = self.config.upload_slots.saturating_sub(regular.len());
        let mut chosen = regular.clone();
        if free > 0 {
            let extra: Vec<P> = self
                .ranked(usize::MAX)
                .into_iter()
                .filter(|k| !regular.contains(k))
                .take(free)
                .collect();
            chosen.extend(extra);
        }
        self.pick_optimistic(&chosen, now);
        chosen.extend(self.optimistic.iter().cloned());
        self.apply(&chosen)
    }

    fn apply(&mut self, chosen: &[P]) -> Vec<ChokeEvent<P>> {
        let mut chokes = Vec::new();
        let mut unchokes = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            let want = chosen.contains(k);
            if want && !p.unchoked {
                unchokes.push(ChokeEvent::Unchoke(k.clone()));
            } else if !want && p.unchoked {
                chokes.push(ChokeEvent::Choke(k.clone()));
            }
            p.unchoked = want;
        }
        chokes.extend(unchokes);
        chokes
    }
}

#[cfg(test)]
mod tests;
