//! Super-seeding: how a complete source announces a blob when several peers
//! download it from us at once.
//!
//! A seed that announces everything to everyone lets every leecher ask it for
//! any piece, so the seed's upload goes to copies of pieces the swarm already
//! holds, and leechers end up with similar pieces and little to trade. Here,
//! as in BitTorrent's super-seeding (BEP 16), each peer is told only a few
//! pieces at a time, chosen among those no connected peer holds and that no
//! other peer was told or asked us for, so the seed hands out the whole blob
//! once before any piece twice and the leechers must trade for the rest.
//! What a peer holds comes from its own announcements (whoever it got the
//! groups from) and from what we delivered to it, so pieces a departed peer
//! alone held go out again, and pieces the swarm already trades are never
//! sent twice. Once the connected peers together hold every group (twice,
//! with three peers or more), everyone is told everything.
//!
//! A peer alone with us for `lone_grace` (200 ms) is told everything: there
//! is nobody to trade with, and a player streaming from a single seed must be
//! able to ask for any range. The short wait lets the peers of a swarm that
//! starts together arrive first; a peer told everything cannot be untold, and
//! whatever it asks for may be a piece another peer was just given. Meanwhile
//! it is told a window, like any peer, once it says it is interested (after
//! saying what it holds), so a download from a single seed starts at once.
//!
//! Pure state machine: the node calls it from its serving sessions and sends
//! what [`SuperSeed::take_reveal`] returns. Peers are keyed by session, so two
//! sessions of one peer are two peers here.

use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
    ops::Range,
    time::{Duration, Instant},
};

use spore_core::Bitfield;

use crate::{
    holders::Holders,
    scheduler::{piece_groups_for, rng::Rng},
};

/// Tunables of [`SuperSeed`].
#[derive(Debug, Clone)]
pub struct SuperSeedConfig {
    /// Pieces told to a peer and not yet requested by it.
    pub window_pieces: u32,
    /// A peer with no request pending at us this long got the pieces it
    /// was told elsewhere, does not want them, or cannot ask (choked): what
    /// it was told and did not request is free for others, and it is told a
    /// fresh window.
    pub stall: Duration,
    /// Peers followed at once; any more are told everything.
    pub max_peers: usize,
    /// Blobs with fewer groups are always announced whole.
    pub min_groups: u64,
    /// A peer alone with us this long is told everything.
    pub lone_grace: Duration,
    /// With at least this many peers followed, super-seeding lasts until
    /// every group is held by two of them, not one: a group one leecher
    /// alone holds is lost when it leaves, and a seed that spends its
    /// upload on copies once everything is held somewhere has nothing left
    /// to send it again with (churn).
    pub two_copies_from: usize,
}

impl Default for SuperSeedConfig {
    fn default() -> Self {
        Self {
            window_pieces: 4,
            stall: Duration::from_secs(1),
            max_peers: 256,
            min_groups: 256,
            lone_grace: Duration::from_millis(200),
            two_copies_from: 3,
        }
    }
}

/// What a session must announce next to its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    Nothing,
    /// These groups too (sorted, disjoint).
    Groups(Vec<Range<u64>>),
    /// Every group.
    All,
}

#[derive(Debug)]
struct PeerState {
    /// Told everything (or about to be).
    all: bool,
    /// `all` is set and the session has not taken it yet.
    all_pending: bool,
    /// Pieces told.
    told: Bitfield,
    /// Told, not yet taken by the session.
    pending: Vec<u32>,
    /// The last group, which proves the blob's size, is still to be told.
    size_proof_pending: bool,
    /// Told and not requested since.
    unrequested: BTreeSet<u32>,
    /// Pieces it requested from us after being told them (not counting a
    /// peer told everything).
    sent: Bitfield,
    /// It has no request pending at us.
    idle: bool,
    /// Since when it has neither requested nor been told a fresh window.
    idle_since: Instant,
}

/// Super-seeding state of one complete blob (see the module docs).
#[derive(Debug)]
pub struct SuperSeed<P> {
    config: SuperSeedConfig,
    groups: u64,
    piece_groups: u64,
    /// Per piece: connected peers that requested it from us after we told
    /// it to them piece by piece.
    copies: Vec<u32>,
    /// Per piece: peers told it that have not requested it yet.
    promised: Vec<u32>,
    /// Per group: connected peers that hold it, announced by them or
    /// delivered by us.
    holders: Holders<P>,
    /// Per piece: its groups no connected peer holds.
    missing: Vec<u32>,
    /// Groups no connected peer holds. Counted on delivery or announcement,
    /// not request: peers queue requests far ahead of what a slow seed sends.
    unheld: u64,
    /// The connected peers held every group once (twice, with
    /// `two_copies_from` peers or more): everyone is told everything.
    over: bool,
    /// Groups below this are held by two connected peers or more (as of
    /// the last look; reset when holdings shrink).
    twice_below: u64,
    peers: HashMap<P, PeerState>,
    /// The only peer, told nothing yet, and since when it is alone.
    lone: Option<(P, Instant)>,
    rng: Rng,
}

impl<P: Eq + Hash + Clone> SuperSeed<P> {
    /// For a blob of `groups` chunk groups.
    pub fn new(groups: u64, config: SuperSeedConfig, seed: u64) -> Self {
        let piece_groups = u64::from(piece_groups_for(groups));
        let pieces = groups.div_ceil(piece_groups).max(1);
        let over = groups < config.min_groups;
        let max_peers = config.max_peers.min(Holders::<P>::MAX_PEERS);
        let missing = (0..pieces)
            .map(|p| {
                let start = p * piece_groups;
                ((start + piece_groups).min(groups) - start) as u32
            })
            .collect();
        Self {
            config: SuperSeedConfig {
                max_peers,
                ..config
            },
            groups,
            piece_groups,
            copies: vec![0; pieces as usize],
            promised: vec![0; pieces as usize],
            holders: Holders::new(groups),
            missing,
            unheld: groups,
            over,
            twice_below: 0,
            peers: HashMap::new(),
            lone: None,
            rng: Rng::new(seed),
        }
    }

    /// Whether pieces are still being handed out one by one.
    pub fn is_active(&self) -> bool {
        !self.over
    }

    /// Peers followed now.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// What the followed peers hold.
    pub fn holders(&self) -> &Holders<P> {
        &self.holders
    }

    fn pieces(&self) -> u64 {
        self.copies.len() as u64
    }

    fn piece_of(&self, group: u64) -> u64 {
        group / self.piece_groups
    }

    /// The configuration.
    pub fn config(&self) -> &SuperSeedConfig {
        &self.config
    }

    /// A peer's session starts; its first announcement comes from
    /// [`take_reveal`](Self::take_reveal): everything if super-seeding is
    /// over, a window if others are here (the peer that waited alone gets its
    /// window now too), and if it is alone, only the last group (the size
    /// proof every downloader checks first) until another peer comes or
    /// [`poll`](Self::poll) finds it alone for `lone_grace`. Returns false,
    /// and follows nothing, when `max_peers` are followed already: tell that
    /// peer everything.
    pub fn add_peer(&mut self, peer: P, now: Instant) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= self.config.max_peers {
            return false;
        }
        let all = self.over;
        let alone = !all && self.peers.is_empty();
        let pieces = self.pieces();
        self.peers.insert(
            peer.clone(),
            PeerState {
                all,
                all_pending: all,
                told: Bitfield::new(pieces),
                pending: Vec::new(),
                size_proof_pending: !all,
                unrequested: BTreeSet::new(),
                sent: Bitfield::new(pieces),
                idle: false,
                idle_since: now,
            },
        );
        self.holders.add_peer(peer.clone());
        if alone {
            self.lone = Some((peer, now));
            return true;
        }
        if let Some((waiting, _)) = self.lone.take() {
            self.refill(&waiting, false);
        }
        self.refill(&peer, false);
        true
    }

    /// Whether the peer is alone with us and not yet told everything (it
    /// will be once alone for `lone_grace`, unless another peer comes).
    pub fn waits_alone(&self, peer: &P) -> bool {
        self.lone.as_ref().is_some_and(|(p, _)| p == peer)
    }

    /// The peer said it wants data; by then it has said what it holds. A
    /// peer alone with us and told no piece yet gets its window now, rather
    /// than wait for `lone_grace` with nothing to ask for. True if it has
    /// something to announce.
    pub fn on_interested(&mut self, peer: &P) -> bool {
        let fresh = self.waits_alone(peer)
            && self
                .peers
                .get(peer)
                .is_some_and(|s| s.told.count_ones() == 0);
        if fresh {
            self.refill(peer, false);
        }
        fresh && self.has_reveal(peer)
    }

    /// Whether the peer has something to announce ([`take_reveal`] would not
    /// say `Nothing`).
    ///
    /// [`take_reveal`]: Self::take_reveal
    pub fn has_reveal(&self, peer: &P) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| s.all_pending || s.size_proof_pending || !s.pending.is_empty())
    }

    /// The first peer is told everything once it has been alone for
    /// `lone_grace`; true if that happened now.
    fn settle_lone(&mut self, now: Instant) -> bool {
        let Some((peer, since)) = &self.lone else {
            return false;
        };
        if now.saturating_duration_since(*since) < self.config.lone_grace {
            return false;
        }
        let peer = peer.clone();
        self.lone = None;
        match self.peers.get_mut(&peer) {
            Some(state) if !state.all => {
                state.all = true;
                state.all_pending = true;
                true
            }
            _ => false,
        }
    }

    /// A peer's session ended: the groups only it held count as unheld
    /// again, and what it was told is free for others. Both are told at
    /// once to the peers with room in their windows, rather than at their
    /// next request or stall: a seed that leaves after a budget (churn) may
    /// have only a moment left to send them again. True if a session got
    /// something to announce.
    pub fn remove_peer(&mut self, peer: &P) -> bool {
        let Some(state) = self.peers.remove(peer) else {
            return false;
        };
        if self.lone.as_ref().is_some_and(|(p, _)| p == peer) {
            self.lone = None;
        }
        let freed = !state.unrequested.is_empty();
        for p in state.unrequested {
            self.promised[p as usize] -= 1;
        }
        for r in state.sent.ones_ranges() {
            for p in r {
                self.copies[p as usize] -= 1;
            }
        }
        self.twice_below = 0;
        let mut orphaned = false;
        self.holders.remove_peer(peer, |g| {
            orphaned = true;
            self.unheld += 1;
            self.missing[(g / self.piece_groups) as usize] += 1;
        });
        if self.over {
            return false;
        }
        if self.end_if_held_enough() {
            return true;
        }
        if !orphaned && !freed {
            return false;
        }
        // Idle peers first: they ask at once, where a busy peer's request
        // waits behind the ones it has queued with us.
        let mut others: Vec<(P, bool)> = self
            .peers
            .iter()
            .filter(|(_, s)| !s.all)
            .map(|(p, s)| (p.clone(), s.idle))
            .collect();
        others.sort_by_key(|(_, idle)| !idle);
        // One piece to each peer in turn: the seed's connection to a
        // leecher whose own upload is saturated crawls (its ACKs queue
        // behind its uploads), so the pieces go out over as many
        // connections as there are.
        let mut told = false;
        loop {
            let mut more = false;
            for (other, idle) in &others {
                more |= self.tell(other, *idle, 1);
            }
            if !more {
                break;
            }
            told = true;
        }
        told
    }

    /// Whether the peer is idle with us: it has no request pending. The
    /// stall clock runs only then: a peer with a queue of requests at a slow
    /// seed is not stalled.
    pub fn set_idle(&mut self, peer: &P, idle: bool, now: Instant) {
        if let Some(state) = self.peers.get_mut(peer)
            && state.idle != idle
        {
            state.idle = idle;
            state.idle_since = now;
        }
    }

    /// The peer requested `groups` from us.
    pub fn on_request(&mut self, peer: &P, groups: Range<u64>, now: Instant) {
        if groups.is_empty() || groups.end > self.groups {
            return;
        }
        let pieces = self.piece_of(groups.start)..=self.piece_of(groups.end - 1);
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        state.idle_since = now;
        for p in pieces {
            // The size proof alone (the last group, told to everyone) is not
            // a copy of the last piece. A peer told everything (a lone first
            // peer, or everyone once it is over) may queue the whole blob,
            // and may stop (paused, gone quiet) with it queued: its requests
            // keep nobody else from being told those pieces.
            if state.all || !state.told.get(p) {
                continue;
            }
            if state.unrequested.remove(&(p as u32)) {
                self.promised[p as usize] -= 1;
            }
            if state.sent.set(p) {
                self.copies[p as usize] += 1;
            }
        }
        if !self.over {
            self.refill(peer, false);
        }
    }

    /// We finished sending `groups` to the peer.
    pub fn on_delivered(&mut self, peer: &P, groups: Range<u64>) {
        self.on_have(peer, groups);
    }

    /// The peer announced that it holds `groups` (from us or from anyone).
    /// Once the connected peers together hold every group (twice, with
    /// `two_copies_from` peers or more), super-seeding is over: everyone is
    /// told everything.
    pub fn on_have(&mut self, peer: &P, groups: Range<u64>) {
        if groups.is_empty() || groups.end > self.groups {
            return;
        }
        self.holders.add(peer, groups, |g| {
            self.unheld -= 1;
            self.missing[(g / self.piece_groups) as usize] -= 1;
        });
        self.end_if_held_enough();
    }

    /// Ends super-seeding, telling everyone everything, once the connected
    /// peers hold every group often enough; true if it ended now.
    fn end_if_held_enough(&mut self) -> bool {
        if self.over || self.unheld > 0 || !self.held_enough() {
            return false;
        }
        self.over = true;
        for state in self.peers.values_mut() {
            if !state.all {
                state.all = true;
                state.all_pending = true;
            }
        }
        true
    }

    /// Every group is held by enough connected peers to end
    /// super-seeding: one, or two with `two_copies_from` peers or more.
    fn held_enough(&mut self) -> bool {
        if self.peers.len() < self.config.two_copies_from {
            return true;
        }
        while self.twice_below < self.groups && self.holders.count(self.twice_below) >= 2 {
            self.twice_below += 1;
        }
        self.twice_below == self.groups
    }

    /// The peer withdrew what it announced (`DontHave`): it holds nothing.
    pub fn on_dont_have(&mut self, peer: &P) {
        self.twice_below = 0;
        self.holders.clear(peer, |g| {
            self.unheld += 1;
            self.missing[(g / self.piece_groups) as usize] += 1;
        });
    }

    /// Tells a peer alone for `lone_grace` everything, and gives a fresh
    /// window to every idle peer that stalled; true if a session got
    /// something to announce.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.over {
            return false;
        }
        let settled = self.settle_lone(now);
        let stall = self.config.stall;
        let lone = self.lone.as_ref().map(|(p, _)| p);
        let stalled: Vec<P> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                !s.all
                    && Some(*p) != lone
                    && s.idle
                    && now.saturating_duration_since(s.idle_since) >= stall
            })
            .map(|(p, _)| p.clone())
            .collect();
        let refilled = settled || !stalled.is_empty();
        for peer in stalled {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.idle_since = now;
                for p in std::mem::take(&mut state.unrequested) {
                    self.promised[p as usize] -= 1;
                }
            }
            self.refill(&peer, true);
        }
        refilled
    }

    /// What the peer's session must announce now.
    pub fn take_reveal(&mut self, peer: &P) -> Reveal {
        let Some(state) = self.peers.get_mut(peer) else {
            return Reveal::Nothing;
        };
        if state.all_pending {
            state.all_pending = false;
            state.size_proof_pending = false;
            state.pending.clear();
            return Reveal::All;
        }
        if state.pending.is_empty() && !state.size_proof_pending {
            return Reveal::Nothing;
        }
        let mut pieces = std::mem::take(&mut state.pending);
        pieces.sort_unstable();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut add = |r: Range<u64>| match ranges.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => ranges.push(r),
        };
        for p in pieces {
            let start = u64::from(p) * self.piece_groups;
            let end = (start + self.piece_groups).min(self.groups);
            let missing = u64::from(self.missing[p as usize]);
            if missing == 0 || missing == end - start {
                add(start..end);
                continue;
            }
            // Partly held (a departed peer had the rest, or it is being
            // traded): only the groups nobody holds, so the peer fetches
            // the others from those who have them and the seed's upload
            // goes to groups nobody else can send.
            for g in (start..end).filter(|&g| self.holders.count(g) == 0) {
                add(g..g + 1);
            }
        }
        // Every downloader checks the size against the last group before
        // it asks for anything: each is told that group at once.
        if std::mem::take(&mut state.size_proof_pending)
            && ranges.last().is_none_or(|r| r.end < self.groups)
        {
            match ranges.last_mut() {
                Some(last) if last.end == self.groups - 1 => last.end = self.groups,
                _ => ranges.push(self.groups - 1..self.groups),
            }
        }
        Reveal::Groups(ranges)
    }

    /// Tells `peer` more pieces until `window_pieces` are unrequested; an
    /// idle peer (`idle`) may get second copies (see [`pick`](Self::pick)).
    fn refill(&mut self, peer: &P, idle: bool) {
        self.tell(peer, idle, usize::MAX);
    }

    /// Tells `peer` at most `most` more pieces, within its window; true if
    /// it was told any.
    fn tell(&mut self, peer: &P, idle: bool, most: usize) -> bool {
        let window = self.config.window_pieces.max(1) as usize;
        let Some(mut state) = self.peers.remove(peer) else {
            return false;
        };
        let mut told = 0;
        while !state.all && state.unrequested.len() < window && told < most {
            let Some(p) = self.pick(peer, &state, idle) else {
                break;
            };
            state.told.set(p);
            state.unrequested.insert(p as u32);
            state.pending.push(p as u32);
            self.promised[p as usize] += 1;
            told += 1;
        }
        self.peers.insert(peer.clone(), state);
        told > 0
    }

    /// The next piece to tell a peer: one it was not told, with a group no
    /// connected peer holds, that nobody asked us for or was told and may
    /// still ask (a told peer usually does: a piece promised to one peer is
    /// as good as sent, and telling it to a second would make the seed send
    /// it twice); the one missing the most groups, scanning from a random
    /// start so ties fall anywhere.
    ///
    /// When there is none, a peer that asks us for pieces gets nothing more
    /// and trades with the others meanwhile. A peer idle with us (`idle`)
    /// gets the piece the fewest peers asked for or were told, among those
    /// it lacks, rather than leave our upload unused, but only while no
    /// first copy is on its way: a second copy would slow the first ones
    /// down, and a seed that leaves early (churn) would leave groups never
    /// sent.
    fn pick(&mut self, key: &P, peer: &PeerState, idle: bool) -> Option<u64> {
        let n = self.pieces();
        let start = self.rng.below(n);
        let mut fresh: Option<(u32, u64)> = None;
        let mut second: Option<((u32, u32), u64)> = None;
        let mut first_on_its_way = false;
        for i in 0..n {
            let p = (start + i) % n;
            let (missing, copies, promised) = (
                self.missing[p as usize],
                self.copies[p as usize],
                self.promised[p as usize],
            );
            if missing > 0 && copies > 0 {
                first_on_its_way = true;
                continue;
            }
            if peer.told.get(p) {
                continue;
            }
            if missing > 0 && promised == 0 {
                if fresh.is_none_or(|(m, _)| missing > m) {
                    fresh = Some((missing, p));
                    if u64::from(missing) == self.piece_groups {
                        break;
                    }
                }
                continue;
            }
            if !idle || first_on_its_way {
                continue;
            }
            let first = p * self.piece_groups;
            if self
                .holders
                .holds_all(key, first..(first + self.piece_groups).min(self.groups))
            {
                continue;
            }
            let score = (copies + promised, copies);
            if second.is_none_or(|(s, _)| score < s) {
                second = Some((score, p));
            }
        }
        fresh
            .map(|(_, p)| p)
            .or(second.filter(|_| !first_on_its_way).map(|(_, p)| p))
    }

    /// Checks the counters against a recount (for tests).
    pub fn check_invariants(&self) {
        let n = self.pieces() as usize;
        let mut copies = vec![0u32; n];
        let mut promised = vec![0u32; n];
        self.holders.check_invariants();
        assert_eq!(self.holders.peer_count(), self.peers.len());
        let holders: Vec<u16> = (0..self.groups).map(|g| self.holders.count(g)).collect();
        for state in self.peers.values() {
            for r in state.sent.ones_ranges() {
                for p in r {
                    copies[p as usize] += 1;
                }
            }
            for &p in &state.unrequested {
                assert!(state.told.get(u64::from(p)), "unrequested but never told");
                promised[p as usize] += 1;
            }
            if !state.all {
                assert!(state.unrequested.len() <= self.config.window_pieces.max(1) as usize);
            }
        }
        assert_eq!(copies, self.copies);
        assert_eq!(promised, self.promised);
        let unheld = holders.iter().filter(|&&h| h == 0).count() as u64;
        assert_eq!(unheld, self.unheld);
        assert!(
            holders[..self.twice_below as usize].iter().all(|&h| h >= 2),
            "a group below twice_below is held less than twice"
        );
        for (p, &missing) in self.missing.iter().enumerate() {
            let start = p as u64 * self.piece_groups;
            let end = (start + self.piece_groups).min(self.groups);
            let recount = (start..end).filter(|&g| holders[g as usize] == 0).count();
            assert_eq!(missing as usize, recount, "piece {p}");
        }
        assert!(self.peers.len() <= self.config.max_peers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256 MiB: 16,384 groups in 256 pieces of 64.
    const GROUPS: u64 = 16_384;

    fn seeder() -> SuperSeed<u32> {
        SuperSeed::new(GROUPS, SuperSeedConfig::default(), 7)
    }

    /// 16 pieces of 64 groups: a few peers' windows take all of them.
    fn small_seeder(seed: u64) -> SuperSeed<u32> {
        SuperSeed::new(16 * 64, SuperSeedConfig::default(), seed)
    }

    /// A reveal of the last group alone.
    fn size_proof(groups: u64) -> Reveal {
        Reveal::Groups(std::iter::once(groups - 1..groups).collect())
    }

    /// The pieces of a reveal, leaving out the size proof (the last group
    /// alone).
    fn pieces_of(reveal: &Reveal, piece_groups: u64) -> Vec<u64> {
        match reveal {
            Reveal::Groups(ranges) => ranges
                .iter()
                .filter(|r| !(r.end - r.start == 1 && r.start % piece_groups != 0))
                .flat_map(|r| {
                    assert_eq!(r.start % piece_groups, 0);
                    (r.start / piece_groups)..r.end.div_ceil(piece_groups)
                })
                .collect(),
            other => panic!("expected groups, got {other:?}"),
        }
    }

    /// The pieces of a reveal, none for `Nothing`.
    fn told(s: &mut SuperSeed<u32>, peer: u32) -> Vec<u64> {
        match s.take_reveal(&peer) {
            Reveal::Nothing => Vec::new(),
            r => pieces_of(&r, 64),
        }
    }

    /// Adds peers 0 to `n` arriving together (peer 0 waits alone until
    /// peer 1 comes); returns their windows.
    fn swarm(s: &mut SuperSeed<u32>, n: u32, now: Instant) -> HashMap<u32, Vec<u64>> {
        assert!(s.add_peer(0, now));
        // Alone: only the size proof.
        let groups = s.groups;
        assert_eq!(s.take_reveal(&0), size_proof(groups));
        assert!(!s.has_reveal(&0));
        let mut windows: HashMap<u32, Vec<u64>> = (1..=n)
            .map(|p| {
                assert!(s.add_peer(p, now));
                (p, pieces_of(&s.take_reveal(&p), 64))
            })
            .collect();
        windows.insert(0, pieces_of(&s.take_reveal(&0), 64));
        windows
    }

    #[test]
    fn a_peer_alone_for_the_grace_is_told_everything() {
        let mut s = seeder();
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        assert_eq!(s.take_reveal(&1), size_proof(GROUPS));
        assert!(!s.poll(t0 + Duration::from_millis(199)));
        assert!(!s.has_reveal(&1));
        assert!(s.poll(t0 + Duration::from_millis(200)));
        assert_eq!(s.take_reveal(&1), Reveal::All);
        assert_eq!(s.take_reveal(&1), Reveal::Nothing);
        // Later peers get windows: the first one was told everything.
        assert!(s.add_peer(2, t0 + Duration::from_secs(1)));
        assert!(matches!(s.take_reveal(&2), Reveal::Groups(_)));
        s.check_invariants();
    }

    /// A peer alone with us does not wait for the grace to have something
    /// to ask for: once interested it gets a window of pieces it lacks.
    #[test]
    fn a_peer_alone_gets_a_window_once_interested() {
        let mut s = seeder();
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        assert_eq!(s.take_reveal(&1), size_proof(GROUPS));
        s.on_have(&1, 0..64 * 64);
        assert!(s.on_interested(&1));
        let window = pieces_of(&s.take_reveal(&1), 64);
        assert_eq!(window.len(), 4);
        assert!(
            window.iter().all(|&p| p >= 64),
            "told a piece it holds: {window:?}"
        );
        assert!(!s.on_interested(&1), "told once");
        assert!(s.waits_alone(&1));
        assert!(s.poll(t0 + Duration::from_millis(200)));
        assert_eq!(s.take_reveal(&1), Reveal::All);
        s.check_invariants();
    }

    /// A peer told everything may queue the whole blob and then stop (a
    /// paused download whose session lingers): a later peer is still told
    /// pieces.
    #[test]
    fn what_a_peer_told_everything_queued_blocks_nobody() {
        let mut s = seeder();
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        let _ = s.take_reveal(&1);
        assert!(s.poll(t0 + Duration::from_millis(200)));
        assert_eq!(s.take_reveal(&1), Reveal::All);
        s.on_request(&1, 0..GROUPS, t0);
        s.on_delivered(&1, 0..GROUPS / 8);
        assert!(s.add_peer(2, t0 + Duration::from_secs(1)));
        let window = told(&mut s, 2);
        assert_eq!(window.len(), 4);
        assert!(window.iter().all(|&p| p >= 32), "{window:?}");
        s.check_invariants();
    }

    #[test]
    fn a_peer_that_waited_alone_gets_a_window_when_another_comes() {
        let mut s = seeder();
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        assert!(s.add_peer(2, t0 + Duration::from_millis(50)));
        assert_eq!(pieces_of(&s.take_reveal(&1), 64).len(), 4);
        assert_eq!(pieces_of(&s.take_reveal(&2), 64).len(), 4);
        // No longer alone: the grace passing changes nothing.
        assert!(!s.poll(t0 + Duration::from_millis(300)));
        s.check_invariants();
    }

    /// Every downloader checks the blob's size against its last group
    /// first: each peer is told it at once, whatever else it is told.
    #[test]
    fn every_peer_is_told_the_size_proof_first() {
        let mut s = seeder();
        let windows = swarm(&mut s, 6, Instant::now());
        let late = 7;
        assert!(s.add_peer(late, Instant::now()));
        match s.take_reveal(&late) {
            Reveal::Groups(ranges) => assert_eq!(ranges.last().unwrap().end, GROUPS),
            other => panic!("expected groups, got {other:?}"),
        }
        // Told as a group, not as a piece: the last piece went to one peer.
        let holders = windows.values().filter(|w| w.contains(&255)).count();
        assert!(holders <= 1);
        // Everyone checks the size: no copy of the last piece for those not
        // told it, or it would count as on its way forever.
        for p in 0..=late {
            s.on_request(&p, GROUPS - 1..GROUPS, Instant::now());
        }
        assert_eq!(s.copies[255], holders as u32);
        s.check_invariants();
    }

    #[test]
    fn small_blobs_are_announced_whole() {
        let mut s = SuperSeed::new(100, SuperSeedConfig::default(), 1);
        let now = Instant::now();
        assert!(!s.is_active());
        for p in 0..3u32 {
            s.add_peer(p, now);
            assert_eq!(s.take_reveal(&p), Reveal::All);
        }
    }

    #[test]
    fn windows_of_concurrent_peers_are_disjoint() {
        let mut s = seeder();
        let windows = swarm(&mut s, 7, Instant::now());
        let mut seen = BTreeSet::new();
        for w in windows.values() {
            assert_eq!(w.len(), 4);
            for p in w {
                assert!(seen.insert(*p), "piece {p} told to two peers");
            }
        }
        s.check_invariants();
    }

    /// Peers request what they are told, one piece at a time, in turn: the
    /// seed hands out all 256 pieces exactly once, then tells everyone
    /// everything.
    #[test]
    fn every_piece_goes_out_once_before_any_twice() {
        let mut s = seeder();
        let mut now = Instant::now();
        let mut windows = swarm(&mut s, 8, now);
        let mut told: BTreeSet<u64> = windows.values().flatten().copied().collect();
        let mut requests = 0;
        let mut requested = BTreeSet::new();
        'outer: for _round in 0..1000 {
            for p in 0..=8u32 {
                now += Duration::from_millis(10);
                let w = windows.get_mut(&p).unwrap();
                let Some(piece) = w.pop() else { continue };
                assert!(requested.insert(piece), "piece {piece} told twice");
                s.on_request(&p, piece * 64..piece * 64 + 16, now);
                s.on_delivered(&p, piece * 64..(piece + 1) * 64);
                requests += 1;
                s.check_invariants();
                if !s.is_active() {
                    break 'outer;
                }
                let more = match s.take_reveal(&p) {
                    Reveal::Nothing => Vec::new(),
                    r => pieces_of(&r, 64),
                };
                told.extend(more.iter().copied());
                w.extend(more);
            }
        }
        assert_eq!(requests, 256);
        assert_eq!(told.len(), 256);
        // Every group is held once: it goes on until the peers, trading,
        // hold each twice (peer 0 alone holds its own pieces once).
        assert!(s.is_active());
        s.on_have(&0, 0..GROUPS);
        assert!(s.is_active());
        s.on_have(&1, 0..GROUPS);
        assert!(!s.is_active());
        for p in 1..=8 {
            assert_eq!(s.take_reveal(&p), Reveal::All);
        }
        s.add_peer(9, now);
        assert_eq!(s.take_reveal(&9), Reveal::All);
    }

    /// Peers queue requests far ahead of a slow seed: super-seeding lasts
    /// until every piece was delivered, not merely requested.
    #[test]
    fn it_ends_when_every_piece_is_delivered_not_requested() {
        let mut s = seeder();
        let now = Instant::now();
        let mut windows = swarm(&mut s, 4, now);
        let mut requested = BTreeSet::new();
        let mut queued = Vec::new();
        // Each peer at once requests every piece it is told.
        for (p, w) in &mut windows {
            while let Some(piece) = w.pop() {
                s.on_request(p, piece * 64..(piece + 1) * 64, now);
                requested.insert(piece);
                queued.push((*p, piece));
                match s.take_reveal(p) {
                    Reveal::Nothing => {}
                    r => w.extend(pieces_of(&r, 64)),
                }
            }
        }
        assert_eq!(requested.len(), 256);
        let mut delivered = BTreeSet::new();
        for (p, piece) in queued {
            assert!(
                s.is_active(),
                "over with {} pieces delivered",
                delivered.len()
            );
            s.on_delivered(&p, piece * 64..(piece + 1) * 64);
            delivered.insert(piece);
            if delivered.len() == 256 {
                break;
            }
        }
        assert!(s.is_active(), "on until every group is held twice");
        for p in 1..=2 {
            s.on_have(&p, 0..GROUPS);
        }
        assert!(!s.is_active());
        for p in 1..=4 {
            assert_eq!(s.take_reveal(&p), Reveal::All);
        }
        s.check_invariants();
    }

    /// With three peers or more, super-seeding lasts until every group is
    /// held twice: one leaver must not take a group's only copy after the
    /// seed has spent its upload on copies. With fewer, once is enough.
    #[test]
    fn it_lasts_until_every_group_is_held_twice() {
        let now = Instant::now();
        let mut pair = small_seeder(1);
        assert!(pair.add_peer(0, now) && pair.add_peer(1, now));
        pair.on_have(&0, 0..512);
        pair.on_have(&1, 512..1024);
        assert!(!pair.is_active(), "two peers: held once is enough");

        let mut s = small_seeder(2);
        for p in 0..4 {
            assert!(s.add_peer(p, now));
        }
        s.on_have(&0, 0..1024);
        s.on_have(&1, 0..1000);
        assert!(s.is_active());
        // Peer 1 leaves: groups 0..1000 are held once again.
        s.remove_peer(&1);
        s.on_have(&3, 1000..1024);
        assert!(s.is_active(), "groups 0..1000 are held once");
        s.on_have(&2, 0..1000);
        assert!(!s.is_active());
        s.check_invariants();
    }

    /// A piece whose first copy is on its way is told to nobody else, not
    /// even to an idle peer with nothing to do; only when its holder leaves
    /// with part of it does it go out again.
    #[test]
    fn a_first_copy_on_its_way_is_not_told_twice() {
        // Four peers' windows take all 16 pieces.
        let mut s = small_seeder(5);
        let t0 = Instant::now();
        let windows = swarm(&mut s, 3, t0);
        assert_eq!(windows.values().map(Vec::len).sum::<usize>(), 16);
        // Every piece is requested by the peer it was told to; none arrived.
        for (p, w) in &windows {
            for &piece in w {
                s.on_request(p, piece * 64..(piece + 1) * 64, t0);
            }
            let _ = s.take_reveal(p);
        }
        assert!(s.add_peer(4, t0));
        assert_eq!(told(&mut s, 4), Vec::<u64>::new());
        let piece = windows[&1][0];
        s.on_delivered(&1, piece * 64..piece * 64 + 32);
        s.set_idle(&4, true, t0);
        s.poll(t0 + Duration::from_secs(1));
        assert_eq!(s.take_reveal(&4), Reveal::Nothing);
        // Peer 1 leaves with half of it: the piece goes out again, with
        // peer 1's other pieces, at once, one to each peer in turn (the
        // idle one first).
        assert!(s.remove_peer(&1));
        let to_idle = pieces_of(&s.take_reveal(&4), 64);
        assert_eq!(to_idle.len(), 1);
        let mut again: Vec<u64> = [0, 2, 3].iter().flat_map(|p| told(&mut s, *p)).collect();
        assert!(again.len() <= 3);
        again.extend(to_idle);
        again.sort_unstable();
        let mut gone = windows[&1].clone();
        gone.sort_unstable();
        assert_eq!(again, gone);
        s.check_invariants();
    }

    /// What peers got from each other is never sent by the seed, and once the
    /// peers together hold every group, everyone is told everything.
    #[test]
    fn what_the_swarm_holds_is_not_sent_again() {
        let mut s = small_seeder(9);
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        // Peer 1 already holds pieces 0..12 (from other peers).
        s.on_have(&1, 0..12 * 64);
        assert!(s.add_peer(2, t0));
        let mut pieces = told(&mut s, 1);
        pieces.extend(told(&mut s, 2));
        pieces.sort_unstable();
        assert_eq!(pieces, vec![12, 13, 14, 15]);
        // Peer 2 holds half of piece 12 and all of 13..16; peer 1 the rest.
        s.on_have(&2, 12 * 64..12 * 64 + 32);
        s.on_have(&2, 13 * 64..16 * 64);
        assert!(s.is_active());
        s.on_delivered(&1, 12 * 64 + 32..13 * 64);
        assert!(!s.is_active());
        assert_eq!(s.take_reveal(&1), Reveal::All);
        assert_eq!(s.take_reveal(&2), Reveal::All);
        s.check_invariants();
    }

    /// A peer that withdraws what it announced no longer holds it.
    #[test]
    fn a_withdrawn_announcement_frees_its_pieces() {
        let mut s = small_seeder(11);
        let t0 = Instant::now();
        assert!(s.add_peer(1, t0));
        s.on_have(&1, 0..15 * 64);
        assert!(s.add_peer(2, t0));
        // Peer 1, here first, was told the one piece missing.
        assert_eq!(told(&mut s, 1), vec![15]);
        assert_eq!(told(&mut s, 2), Vec::<u64>::new());
        s.on_dont_have(&1);
        s.set_idle(&2, true, t0);
        s.poll(t0 + Duration::from_secs(1));
        assert_eq!(told(&mut s, 2).len(), 4);
        s.check_invariants();
    }

    #[test]
    fn pieces_only_a_departed_peer_got_are_handed_out_again() {
        let mut s = seeder();
        let now = Instant::now();
        let windows = swarm(&mut s, 2, now);
        let gone = windows[&1].clone();
        for &piece in &gone {
            s.on_request(&1, piece * 64..(piece + 1) * 64, now);
            s.on_delivered(&1, piece * 64..(piece + 1) * 64);
        }
        let _ = s.take_reveal(&1);
        s.remove_peer(&1);
        s.check_invariants();
        // Peer 2 works through pieces nobody holds; the departed peer's four
        // come back among them.
        let mut told: BTreeSet<u64> = windows[&2].iter().copied().collect();
        let mut queue = windows[&2].clone();
        while let Some(piece) = queue.pop() {
            s.on_request(&2, piece * 64..piece * 64 + 1, now);
            s.on_delivered(&2, piece * 64..(piece + 1) * 64);
            if !s.is_active() {
                break;
            }
            // Nothing once peer 2 was told every piece.
            let more = match s.take_reveal(&2) {
                Reveal::Nothing => Vec::new(),
                r => pieces_of(&r, 64),
            };
            told.extend(more.iter().copied());
            queue.extend(more);
        }
        for piece in gone {
            assert!(
                told.contains(&piece),
                "piece {piece} was not handed out again"
            );
        }
        s.check_invariants();
    }

    /// What a leaver alone held is told to the others as it leaves, not at
    /// their next request or stall: peers busy with what they were told
    /// would ask for nothing more until they had it.
    #[test]
    fn what_only_a_leaver_held_is_told_to_the_others_as_it_leaves() {
        let mut s = small_seeder(9);
        let now = Instant::now();
        let mut windows = swarm(&mut s, 2, now);
        // Everyone requests and gets what it is told until every piece
        // went out once.
        let mut held: HashMap<u32, Vec<u64>> = HashMap::new();
        while windows.values().any(|w| !w.is_empty()) {
            for (&p, w) in windows.iter_mut() {
                for piece in std::mem::take(w) {
                    s.on_request(&p, piece * 64..(piece + 1) * 64, now);
                    s.on_delivered(&p, piece * 64..(piece + 1) * 64);
                    held.entry(p).or_default().push(piece);
                }
                *w = told(&mut s, p);
            }
        }
        assert!(s.is_active(), "three peers: every group must be held twice");
        assert!(!held[&1].is_empty());
        // Nobody is idle, nobody stalled: peer 1 leaves. Its pieces are
        // told to both others, one each in turn.
        assert!(s.remove_peer(&1));
        let (to_0, to_2) = (told(&mut s, 0), told(&mut s, 2));
        assert!(to_0.len().abs_diff(to_2.len()) <= 1, "{to_0:?} {to_2:?}");
        let mut again: Vec<u64> = to_0.into_iter().chain(to_2).collect();
        again.sort_unstable();
        let mut gone = held[&1].clone();
        gone.sort_unstable();
        assert_eq!(again, gone);
        s.check_invariants();
        // A leaver that held nothing alone gives nobody anything.
        assert!(s.add_peer(3, now));
        let _ = s.take_reveal(&3);
        s.on_have(&3, 0..64);
        assert!(!s.remove_peer(&3));
        s.check_invariants();
    }

    #[test]
    fn a_piece_partly_held_is_told_only_for_the_groups_nobody_holds() {
        let mut s = small_seeder(3);
        let now = Instant::now();
        let windows = swarm(&mut s, 1, now);
        let promised: BTreeSet<u64> = windows.values().flatten().copied().collect();
        let x = (0..16).find(|p| !promised.contains(p)).unwrap();
        // Peer 1 got, by trading, every group but the second half of `x`.
        let half = x * 64 + 32..(x + 1) * 64;
        s.on_have(&1, 0..half.start);
        s.on_have(&1, half.end..16 * 64);
        s.check_invariants();
        assert!(s.is_active());
        // A newcomer is told `x`, but only what nobody can send it but us.
        assert!(s.add_peer(2, now));
        let mut expected = vec![half.clone()];
        if half.end < 16 * 64 {
            expected.push(16 * 64 - 1..16 * 64); // the size proof
        }
        assert_eq!(s.take_reveal(&2), Reveal::Groups(expected));
        s.check_invariants();
    }

    #[test]
    fn a_stalled_idle_peer_gets_a_fresh_window() {
        let mut s = seeder();
        let t0 = Instant::now();
        let windows = swarm(&mut s, 2, t0);
        // Peer 1 can request but does not (it got its pieces elsewhere).
        s.set_idle(&1, true, t0);
        assert!(!s.poll(t0 + Duration::from_millis(500)));
        assert_eq!(s.take_reveal(&1), Reveal::Nothing);
        assert!(s.poll(t0 + Duration::from_secs(1)));
        let fresh = pieces_of(&s.take_reveal(&1), 64);
        assert_eq!(fresh.len(), 4);
        assert!(fresh.iter().all(|p| !windows[&1].contains(p)));
        // Peer 2 is not idle (it has requests pending with us): its clock
        // does not run.
        s.poll(t0 + Duration::from_secs(5));
        assert_eq!(s.take_reveal(&2), Reveal::Nothing);
        s.check_invariants();
    }

    #[test]
    fn followed_peers_are_bounded() {
        let config = SuperSeedConfig {
            max_peers: 3,
            ..SuperSeedConfig::default()
        };
        let mut s = SuperSeed::new(GROUPS, config, 3);
        let now = Instant::now();
        for p in 0..3u32 {
            assert!(s.add_peer(p, now));
        }
        assert!(!s.add_peer(3, now));
        assert_eq!(s.take_reveal(&3), Reveal::Nothing);
        s.check_invariants();
    }

    #[test]
    fn random_events_keep_the_counters_consistent() {
        let mut rng = Rng::new(42);
        for case in 0..50 {
            let groups = 256 + rng.below(5000);
            let mut s = SuperSeed::new(groups, SuperSeedConfig::default(), case);
            let mut now = Instant::now();
            for _ in 0..400 {
                now += Duration::from_millis(rng.below(700));
                let peer = rng.below(6) as u32;
                match rng.below(6) {
                    0 => {
                        s.add_peer(peer, now);
                    }
                    1 => {
                        s.remove_peer(&peer);
                    }
                    2 => s.set_idle(&peer, rng.below(2) == 0, now),
                    3 => {
                        s.poll(now);
                    }
                    4 => {
                        let _ = s.take_reveal(&peer);
                    }
                    5 if rng.below(8) == 0 => s.on_dont_have(&peer),
                    _ => {
                        let start = rng.below(groups);
                        let end = (start + 1 + rng.below(128)).min(groups);
                        match rng.below(3) {
                            0 => s.on_have(&peer, start..end),
                            1 => s.on_request(&peer, start..end, now),
                            _ => {
                                s.on_request(&peer, start..end, now);
                                s.on_delivered(&peer, start..end);
                            }
                        }
                    }
                }
                s.check_invariants();
            }
        }
    }
}
