//! Who dials a peer found on the LAN, and when to try again.
//!
//! Two LAN peers usually discover each other at the same moment; when both
//! dial, both handshakes can fail. So the peer with the smaller id dials
//! first and the other only after a grace period (in case it never heard the
//! mDNS answer: discovery can be one-sided). A failed dial is retried with
//! exponential backoff until the peer connects, expires from mDNS, or the
//! attempts run out. Pure: `now` is passed in.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

/// How long the larger peer id waits for the smaller one to dial.
pub(crate) const GRACE: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: u32 = 8;
/// LAN peers tracked at once; the oldest entry makes room.
const CAPACITY: usize = 256;

#[derive(Debug)]
struct Entry {
    addrs: Vec<Multiaddr>,
    next_try: Instant,
    attempts: u32,
    seen: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct LanDialer {
    peers: HashMap<PeerId, Entry>,
}

impl LanDialer {
    /// mDNS announced `peer` at `addrs`. `we_go_first` is true when our id is
    /// the smaller one.
    pub(crate) fn discovered(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        we_go_first: bool,
        now: Instant,
    ) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.addrs = addrs;
            e.seen = now;
            return;
        }
        if self.peers.len() >= CAPACITY
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.seen)
                .map(|(p, _)| *p)
        {
            self.peers.remove(&oldest);
        }
        let next_try = if we_go_first { now } else { now + GRACE };
        self.peers.insert(
            peer,
            Entry {
                addrs,
                next_try,
                attempts: 0,
                seen: now,
            },
        );
    }

    /// Connected (in either direction): nothing more to do for it.
    pub(crate) fn connected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// mDNS says the peer is gone.
    pub(crate) fn expired(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// The peers to dial now; each is rescheduled with a doubled backoff, and
    /// dropped after its last attempt.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out = Vec::new();
        self.peers.retain(|peer, e| {
            if e.next_try > now {
                return true;
            }
            out.push((*peer, e.addrs.clone()));
            e.attempts += 1;
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (e.attempts - 1).min(16))
                .min(MAX_BACKOFF);
            e.next_try = now + backoff;
            e.attempts < MAX_ATTEMPTS
        });
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Vec<Multiaddr> {
        vec!["/ip4/192.168.1.2/tcp/5322".parse().expect("multiaddr")]
    }

    #[test]
    fn smaller_id_dials_at_once_larger_after_the_grace_period() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut d = LanDialer::default();
        d.discovered(a, addr(), true, t0);
        d.discovered(b, addr(), false, t0);
        let now: Vec<PeerId> = d.due(t0).into_iter().map(|(p, _)| p).collect();
        assert_eq!(now, vec![a]);
        let before_grace = d.due(t0 + GRACE - Duration::from_millis(1));
        assert!(before_grace.iter().all(|(p, _)| *p != b));
        let at_grace: Vec<PeerId> = d.due(t0 + GRACE).into_iter().map(|(p, _)| p).collect();
        assert_eq!(at_grace, vec![b]);
    }

    #[test]
    fn failed_dials_back_off_exponentially_then_give_up() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let mut d = LanDialer::default();
        d.discovered(p, addr(), true, t0);
        let mut now = t0;
        let mut tries = Vec::new();
        for _ in 0..2000 {
            if !d.due(now).is_empty() {
                tries.push(now - t0);
            }
            now += Duration::from_millis(500);
        }
        let secs: Vec<u64> = tries.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 1, 3, 7, 15, 31, 63, 123]);
        assert_eq!(d.len(), 0, "dropped after the last attempt");
    }

    #[test]
    fn connecting_or_expiring_stops_the_redials() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut d = LanDialer::default();
        d.discovered(a, addr(), true, t0);
        d.discovered(b, addr(), true, t0);
        assert_eq!(d.due(t0).len(), 2);
        d.connected(&a);
        d.expired(&b);
        assert!(d.due(t0 + Duration::from_secs(10)).is_empty());
        // Rediscovery of a known peer keeps its schedule.
        d.discovered(a, addr(), true, t0);
        d.discovered(a, addr(), true, t0 + Duration::from_secs(1));
        assert_eq!(d.due(t0 + Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut d = LanDialer::default();
        for i in 0..CAPACITY as u64 + 50 {
            d.discovered(
                PeerId::random(),
                addr(),
                false,
                t0 + Duration::from_millis(i),
            );
        }
        assert_eq!(d.len(), CAPACITY);
    }
}
