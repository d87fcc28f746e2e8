//! Who holds what: for each chunk group of a blob, how many of the peers
//! connected to us hold it, from what they announce and what we send them.
//!
//! An uploader serves the request for the rarest groups first: a group that
//! only we hold (a piece the seed gave us alone, the seed since gone) must be
//! copied before we leave, and a peer queues seconds of requests ahead, so
//! in arrival order the one copy that matters would wait behind copies
//! anyone could send. Super-seeding keeps one of these tables too, for the
//! groups no connected peer holds.

use std::{collections::HashMap, hash::Hash, ops::Range};

use spore_core::Bitfield;

/// Per group, the connected peers that hold it (see the module docs).
#[derive(Debug)]
pub struct Holders<P> {
    counts: Vec<u16>,
    peers: HashMap<P, Bitfield>,
}

impl<P: Eq + Hash + Clone> Holders<P> {
    /// Peers followed at most: a count must fit in a `u16`.
    pub const MAX_PEERS: usize = u16::MAX as usize;

    /// For a blob of `groups` chunk groups, nobody following yet.
    pub fn new(groups: u64) -> Self {
        Self {
            counts: vec![0; groups as usize],
            peers: HashMap::new(),
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

    /// How many peers hold the least held group of `groups`.
    fn scarcity(&self, groups: &Range<u64>) -> u16 {
        let end = groups.end.min(self.counts.len() as u64);
        let start = groups.start.min(end);
        self.counts[start as usize..end as usize]
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
    }

    /// Which of these requests to serve first: the first one whose least
    /// held group is held by the fewest peers. `None` if there is none.
    pub fn rarest<'a>(&self, requests: impl IntoIterator<Item = &'a Range<u64>>) -> Option<usize> {
        let mut best: Option<(u16, usize)> = None;
        for (i, groups) in requests.into_iter().enumerate() {
            let scarcity = self.scarcity(groups);
            if best.is_none_or(|(s, _)| scarcity < s) {
                best = Some((scarcity, i));
                if scarcity == 0 {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Checks the counts against a recount (for tests).
    pub fn check_invariants(&self) {
        let mut counts = vec![0u16; self.counts.len()];
        for g in self.peers.values().flat_map(|h| h.ones_ranges().flatten()) {
            counts[g as usize] += 1;
        }
        assert_eq!(counts, self.counts);
        assert!(self.peers.len() <= Self::MAX_PEERS);
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
    }
}
