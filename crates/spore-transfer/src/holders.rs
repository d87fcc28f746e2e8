//! Who holds what: for each chunk group of a blob, how many of the peers
//! connected to us hold it, from what they announce and what we send them.
//!
//! An uploader serves the request for the rarest groups first: a group that
//! only we hold (a piece the seed gave us alone, the seed since gone) must be
//! copied before we leave, and a peer queues seconds of requests ahead, so
//! in arrival order the one copy that matters would wait behind copies
//! anyone could send. Super-seeding keeps one of these tables too, for the
//! groups no connected peer holds.
//!
//! The same holds across the peers we serve: a copy of a group someone
//! already holds waits while another peer's queue asks for a group nobody
//! holds ([`Holders::first_copies_queued`]). Our upload is shared by every
//! peer we send to, and a seed that leaves after a budget of bytes must
//! spend it on first copies: copies sent beside them left groups unsent
//! when the seed went.

use std::{
    collections::HashMap,
    hash::Hash,
    ops::Range,
    time::{Duration, Instant},
};

use spore_core::Bitfield;

/// Per group, the connected peers that hold it (see the module docs).
#[derive(Debug)]
pub struct Holders<P> {
    counts: Vec<u16>,
    peers: HashMap<P, Bitfield>,
    /// What each peer has asked us for and we have not started sending.
    queued: HashMap<P, Vec<Range<u64>>>,
}

impl<P: Eq + Hash + Clone> Holders<P> {
    /// Peers followed at most: a count must fit in a `u16`.
    pub const MAX_PEERS: usize = u16::MAX as usize;
    /// Queued requests followed per peer at most (the rest are not seen by
    /// [`first_copies_queued`](Self::first_copies_queued)).
    pub const MAX_QUEUED: usize = 64;

    /// For a blob of `groups` chunk groups, nobody following yet.
    pub fn new(groups: u64) -> Self {
        Self {
            counts: vec![0; groups as usize],
            peers: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    /// Chunk groups of the blob.
    pub fn groups(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Peers followed now.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Follows `peer`, which holds nothing yet. False (and nothing follows)
    /// when [`MAX_PEERS`](Self::MAX_PEERS) are followed already.
    pub fn add_peer(&mut self, peer: P) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= Self::MAX_PEERS {
            return false;
        }
        let groups = self.groups();
        self.peers.insert(peer, Bitfield::new(groups));
        true
    }

    /// The peer holds `groups` too (the part past the blob's end is
    /// ignored). `first` sees each group that no other peer held.
    pub fn add(&mut self, peer: &P, groups: Range<u64>, mut first: impl FnMut(u64)) {
        let Some(holds) = self.peers.get_mut(peer) else {
            return;
        };
        for g in groups.start..groups.end.min(self.counts.len() as u64) {
            if holds.set(g) {
                let count = &mut self.counts[g as usize];
                if *count == 0 {
                    first(g);
                }
                *count += 1;
            }
        }
    }

    /// The peer holds nothing now (it withdrew what it announced). `last`
    /// sees each group that nobody holds any more.
    pub fn clear(&mut self, peer: &P, last: impl FnMut(u64)) {
        if let Some(holds) = self.peers.get_mut(peer) {
            let holds = std::mem::replace(holds, Bitfield::new(self.counts.len() as u64));
            Self::release(&mut self.counts, &holds, last);
        }
    }

    /// Stops following the peer. `last` sees each group that nobody holds
    /// any more.
    pub fn remove_peer(&mut self, peer: &P, last: impl FnMut(u64)) {
        self.queued.remove(peer);
        if let Some(holds) = self.peers.remove(peer) {
            Self::release(&mut self.counts, &holds, last);
        }
    }

    fn release(counts: &mut [u16], holds: &Bitfield, mut last: impl FnMut(u64)) {
        for g in holds.ones_ranges().flatten() {
            let count = &mut counts[g as usize];
            *count -= 1;
            if *count == 0 {
                last(g);
            }
        }
    }

    /// How many followed peers hold `group` (0 past the blob's end).
    pub fn count(&self, group: u64) -> u16 {
        self.counts.get(group as usize).copied().unwrap_or(0)
    }

    /// Whether the peer holds every group of `groups`.
    pub fn holds_all(&self, peer: &P, groups: Range<u64>) -> bool {
        self.peers.get(peer).is_some_and(|h| h.all_set(groups))
    }

    /// How many peers hold the least held group of `groups`, and how many
    /// of its groups more peers hold than that: the lower, the rarer.
    fn scarcity(&self, groups: &Range<u64>) -> (u16, usize) {
        let end = groups.end.min(self.counts.len() as u64);
        let start = groups.start.min(end);
        let counts = &self.counts[start as usize..end as usize];
        let least = counts.iter().copied().min().unwrap_or(0);
        (least, counts.iter().filter(|&&c| c > least).count())
    }

    /// Which of these requests to serve first: the first one whose least
    /// held group is held by the fewest peers, and of those, the one with
    /// the fewest groups held more widely (a request for eight groups of
    /// which one is new is mostly a copy). `None` if there is none.
    pub fn rarest<'a>(&self, requests: impl IntoIterator<Item = &'a Range<u64>>) -> Option<usize> {
        let mut best: Option<((u16, usize), usize)> = None;
        for (i, groups) in requests.into_iter().enumerate() {
            let scarcity = self.scarcity(groups);
            if best.is_none_or(|(s, _)| scarcity < s) {
                best = Some((scarcity, i));
                if scarcity == (0, 0) {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Whether every group of `groups` is held by a followed peer already:
    /// sending them makes a copy, not a first copy.
    pub fn all_held(&self, groups: &Range<u64>) -> bool {
        self.scarcity(groups).0 > 0
    }

    /// What `peer` has queued with us now, in arrival order (only the first
    /// [`MAX_QUEUED`](Self::MAX_QUEUED) are kept).
    pub fn set_queued<'a>(&mut self, peer: &P, requests: impl IntoIterator<Item = &'a Range<u64>>) {
        if !self.peers.contains_key(peer) {
            return;
        }
        let queued = self.queued.entry(peer.clone()).or_default();
        queued.clear();
        queued.extend(requests.into_iter().take(Self::MAX_QUEUED).cloned());
    }

    /// Whether a peer other than `peer` has queued a request for a group
    /// that no followed peer holds.
    pub fn first_copies_queued(&self, peer: &P) -> bool {
        self.queued
            .iter()
            .filter(|(p, _)| *p != peer)
            .flat_map(|(_, queued)| queued)
            .any(|groups| {
                self.scarcity(groups).0 == 0 && groups.start < groups.end.min(self.groups())
            })
    }

    /// Checks the counts against a recount (for tests).
    pub fn check_invariants(&self) {
        let mut counts = vec![0u16; self.counts.len()];
        for g in self.peers.values().flat_map(|h| h.ones_ranges().flatten()) {
            counts[g as usize] += 1;
        }
        assert_eq!(counts, self.counts);
        assert!(self.peers.len() <= Self::MAX_PEERS);
        assert!(self.queued.keys().all(|p| self.peers.contains_key(p)));
        assert!(self.queued.values().all(|q| q.len() <= Self::MAX_QUEUED));
    }
}

/// How long one serve session holds back its copies while other peers wait
/// for first copies ([`Holders::first_copies_queued`]): up to
/// [`MAX`](Self::MAX) at a time, then not again for as long. A peer that
/// queues first copies and stalls its session thus slows our copies to
/// others by half at most.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyWait {
    since: Option<Instant>,
}

impl CopyWait {
    /// A copy waits at most this long before it goes ahead.
    pub const MAX: Duration = Duration::from_secs(1);

    /// Whether a copy may wait now.
    pub fn may_wait(&self, now: Instant) -> bool {
        self.since.is_none_or(|t| {
            let waited = now.saturating_duration_since(t);
            waited < Self::MAX || waited >= 2 * Self::MAX
        })
    }

    /// A copy waits from `now` (its first wait starts the clock).
    pub fn waiting(&mut self, now: Instant) {
        if self
            .since
            .is_none_or(|t| now.saturating_duration_since(t) >= 2 * Self::MAX)
        {
            self.since = Some(now);
        }
    }

    /// A request started at `now`. If it started before the wait ran out,
    /// the next copy may wait afresh; if the wait ran out, the pause after
    /// it holds.
    pub fn started(&mut self, now: Instant) {
        if self
            .since
            .is_some_and(|t| now.saturating_duration_since(t) < Self::MAX)
        {
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_announcements_withdrawals_and_departures() {
        let mut h = Holders::new(10);
        assert!(h.add_peer(1));
        assert!(h.add_peer(2));
        let mut first = Vec::new();
        h.add(&1, 0..4, |g| first.push(g));
        h.add(&2, 2..6, |g| first.push(g));
        // Past the end, and a peer we do not follow: ignored.
        h.add(&2, 8..40, |g| first.push(g));
        h.add(&3, 0..10, |g| first.push(g));
        assert_eq!(first, [0, 1, 2, 3, 4, 5, 8, 9]);
        assert_eq!(
            (0..10).map(|g| h.count(g)).collect::<Vec<_>>(),
            [1, 1, 2, 2, 1, 1, 0, 0, 1, 1]
        );
        assert!(h.holds_all(&2, 2..6));
        assert!(!h.holds_all(&2, 1..6));
        h.check_invariants();

        let mut last = Vec::new();
        h.clear(&2, |g| last.push(g));
        assert_eq!(last, [4, 5, 8, 9]);
        assert_eq!(h.peer_count(), 2);
        h.remove_peer(&1, |g| last.push(g));
        assert_eq!(last, [4, 5, 8, 9, 0, 1, 2, 3]);
        assert!((0..10).all(|g| h.count(g) == 0));
        h.check_invariants();
    }

    #[test]
    fn the_request_for_a_group_nobody_else_holds_goes_first() {
        let mut h = Holders::new(8);
        for p in 0..3 {
            h.add_peer(p);
        }
        h.add(&0, 0..8, |_| {});
        h.add(&1, 0..6, |_| {});
        h.add(&2, 0..2, |_| {});
        // Least held groups: 0..2 by 3 peers, 2..6 by 2, 6..8 by 1.
        let queue = [0..2, 2..4, 5..7, 4..6];
        assert_eq!(h.rarest(&queue), Some(2));
        // Equally scarce: the earlier request.
        assert_eq!(h.rarest(&[2..4, 4..6, 0..2]), Some(0));
        assert_eq!(h.rarest(&[]), None);
        // A range past the end counts what is inside it.
        assert_eq!(h.rarest(&[0..2, 7..20, 9..12]), Some(2));
        // Both hold a group only peer 0 holds; 5..8 holds fewer held more widely.
        assert_eq!(h.rarest(&[3..7, 5..8]), Some(1));
        assert!(h.all_held(&(0..8)));
    }

    #[test]
    fn a_copy_knows_when_another_peer_waits_for_a_first_copy() {
        let mut h = Holders::new(8);
        for p in 0..3 {
            h.add_peer(p);
        }
        h.add(&0, 0..4, |_| {});
        // Peer 1 asks for copies, peer 2 for a group nobody holds.
        h.set_queued(&1, &[0..2, 2..4]);
        h.set_queued(&2, &[2..3, 3..6]);
        assert!(h.all_held(&(0..2)));
        assert!(!h.all_held(&(3..6)));
        assert!(h.first_copies_queued(&1));
        assert!(!h.first_copies_queued(&2), "its own queue does not count");
        // Once 4..6 is on its way to peer 2, nothing new is queued.
        h.set_queued(&2, std::iter::once(&(2..3)));
        h.add(&2, 3..6, |_| {});
        assert!(!h.first_copies_queued(&1));
        // An empty request, or one past the blob's end, asks for nothing.
        h.set_queued(&2, &[5..5, 8..12]);
        assert!(!h.first_copies_queued(&1));
        // A peer we do not follow queues nothing; a departed peer's queue goes.
        h.set_queued(&7, std::iter::once(&(6..8)));
        assert!(!h.first_copies_queued(&1));
        h.set_queued(&2, std::iter::once(&(6..8)));
        assert!(h.first_copies_queued(&1));
        h.remove_peer(&2, |_| {});
        assert!(!h.first_copies_queued(&1));
        // Only the first MAX_QUEUED requests are followed.
        let many: Vec<_> = (0..Holders::<u32>::MAX_QUEUED as u64 + 5)
            .map(|_| 0..1)
            .collect();
        h.set_queued(&1, &many);
        h.check_invariants();
    }

    #[test]
    fn copies_wait_a_second_at_most_then_go_ahead_as_long() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = CopyWait::default();
        assert!(w.may_wait(t0));
        // Waiting that ends early (the first copies left): the clock resets.
        w.waiting(t0);
        w.waiting(ms(20));
        assert!(w.may_wait(ms(400)));
        w.started(ms(400));
        w.waiting(ms(900));
        assert!(w.may_wait(ms(1800)), "a fresh wait began at 900 ms");
        // Waiting that runs out: the copy goes ahead, and the next ones for
        // a second too, even when they start meanwhile.
        assert!(!w.may_wait(ms(1900)));
        w.started(ms(1900));
        assert!(!w.may_wait(ms(2500)));
        w.started(ms(2500));
        assert!(w.may_wait(ms(2900)));
        w.waiting(ms(2900));
        assert!(w.may_wait(ms(3800)));
        assert!(!w.may_wait(ms(3900)));
    }
}
