//! Misbehaviour scores: a peer that sends what our protocols reject (a
//! malformed or oversized Kademlia message, say) gains points that decay
//! over time; one whose score reaches the ban threshold is banned for a
//! while (the swarm task blocks it: its connections close and new ones are
//! denied). Pure state, driven with `now`, so it is tested without sockets.
//!
//! Bounded: at most [`PenaltyPolicy::max_tracked`] peers are remembered; when
//! full, the lowest score that is not banned is forgotten first.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How offences add up to a ban.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PenaltyPolicy {
    /// Points per offence.
    pub per_offence: f64,
    /// A score at or above this bans the peer.
    pub ban_at: f64,
    /// A score halves in this long without new offences.
    pub half_life: Duration,
    /// How long a ban lasts.
    pub ban_for: Duration,
    /// Peers remembered at most.
    pub max_tracked: usize,
}

impl Default for PenaltyPolicy {
    /// Three offences within a few minutes ban a peer for ten minutes (the
    /// threshold sits below 3 so decay between them does not save it); a
    /// single glitch is forgotten (halved every 10 minutes).
    fn default() -> Self {
        Self {
            per_offence: 1.0,
            ban_at: 2.5,
            half_life: Duration::from_secs(600),
            ban_for: Duration::from_secs(600),
            max_tracked: 1024,
        }
    }
}

/// What an offence led to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The peer's score after this offence.
    pub score: f64,
    /// This offence started a ban (false if the peer was banned already).
    pub banned_now: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    updated: Instant,
    banned_until: Option<Instant>,
}

impl Entry {
    fn decayed(&self, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let half = half_life.as_secs_f64().max(1e-3);
        self.score * 0.5f64.powf(elapsed / half)
    }
}

/// Scores and bans of misbehaving peers.
#[derive(Debug)]
pub struct Penalties {
    policy: PenaltyPolicy,
    peers: HashMap<PeerId, Entry>,
    offences: u64,
}

impl Penalties {
    pub fn new(policy: PenaltyPolicy) -> Self {
        Self {
            policy,
            peers: HashMap::new(),
            offences: 0,
        }
    }

    /// Records one offence of `peer`.
    pub fn offend(&mut self, peer: PeerId, now: Instant) -> Verdict {
        self.offences += 1;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.policy.max_tracked {
            self.forget_one(now);
        }
        let policy = self.policy;
        let entry = self.peers.entry(peer).or_insert(Entry {
            score: 0.0,
            updated: now,
            banned_until: None,
        });
        entry.score = entry.decayed(now, policy.half_life) + policy.per_offence;
        entry.updated = now;
        let already = entry.banned_until.is_some_and(|t| t > now);
        let banned_now = !already && entry.score >= policy.ban_at;
        if banned_now {
            entry.banned_until = Some(now + policy.ban_for);
        }
        Verdict {
            score: entry.score,
            banned_now,
        }
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|e| e.banned_until)
            .is_some_and(|t| t > now)
    }

    /// Peers whose ban ended by `now`; they are unbanned (their score stays
    /// and keeps decaying, so a relapse bans them again sooner).
    pub fn lift_expired(&mut self, now: Instant) -> Vec<PeerId> {
        let mut lifted = Vec::new();
        for (peer, e) in &mut self.peers {
            if e.banned_until.is_some_and(|t| t <= now) {
                e.banned_until = None;
                lifted.push(*peer);
            }
        }
        lifted
    }

    /// Peers banned at `now`.
    pub fn banned(&self, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|e| e.banned_until.is_some_and(|t| t > now))
            .count()
    }

    /// Peers with a score (banned or not).
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Offences recorded since start.
    pub fn offences(&self) -> u64 {
        self.offences
    }

    /// Forgets the unbanned peer with the lowest score now (or, if every
    /// one is banned, the one whose ban ends first).
    fn forget_one(&mut self, now: Instant) {
        let half_life = self.policy.half_life;
        let victim = self
            .peers
            .iter()
            .filter(|(_, e)| e.banned_until.is_none_or(|t| t <= now))
            .min_by(|a, b| {
                a.1.decayed(now, half_life)
                    .total_cmp(&b.1.decayed(now, half_life))
            })
            .map(|(p, _)| *p)
            .or_else(|| {
                self.peers
                    .iter()
                    .min_by_key(|(_, e)| e.banned_until)
                    .map(|(p, _)| *p)
            });
        if let Some(p) = victim {
            self.peers.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_offences_ban_and_the_ban_expires() {
        let mut p = Penalties::new(PenaltyPolicy::default());
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!(!p.offend(peer, t0).banned_now);
        assert!(!p.offend(peer, t0).banned_now);
        let v = p.offend(peer, t0);
        assert!(v.banned_now);
        assert!((v.score - 3.0).abs() < 1e-9);
        assert!(p.is_banned(&peer, t0));
        // A fourth offence while banned does not start a second ban.
        assert!(!p.offend(peer, t0).banned_now);
        assert_eq!(p.banned(t0), 1);
        let later = t0 + Duration::from_secs(601);
        assert_eq!(p.lift_expired(later), vec![peer]);
        assert!(!p.is_banned(&peer, later));
        assert_eq!(p.offences(), 4);
    }

    #[test]
    fn scores_decay_so_rare_glitches_never_ban() {
        let mut p = Penalties::new(PenaltyPolicy::default());
        let peer = PeerId::random();
        let t0 = Instant::now();
        for i in 0..20u64 {
            // One offence per hour: the score stays near 1.
            let v = p.offend(peer, t0 + Duration::from_secs(3600 * i));
            assert!(
                !v.banned_now,
                "banned at offence {i} with score {}",
                v.score
            );
        }
    }

    #[test]
    fn tracked_peers_are_bounded_and_bans_survive_eviction_pressure() {
        let policy = PenaltyPolicy {
            max_tracked: 4,
            ..PenaltyPolicy::default()
        };
        let mut p = Penalties::new(policy);
        let t0 = Instant::now();
        let bad = PeerId::random();
        for _ in 0..3 {
            p.offend(bad, t0);
        }
        for _ in 0..100 {
            p.offend(PeerId::random(), t0);
        }
        assert!(p.tracked() <= 4);
        assert!(p.is_banned(&bad, t0));
    }
}
