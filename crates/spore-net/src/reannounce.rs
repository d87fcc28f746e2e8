//! Provider announcements that reached no other node are tried again.
//!
//! An announcement stores the record locally at once, but reaches other nodes
//! only if the routing table has peers and libp2p-kad's closest-peers phase
//! finishes within the query timeout. Otherwise nobody can find the content
//! until the next republish, hours later: content shared right after start-up,
//! before the node joined, would be invisible that long. So a failed
//! announcement is retried with exponential backoff until one succeeds or the
//! key is no longer provided.
//!
//! Pure schedule: the swarm task calls it with `now` and does the announcing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use spore_core::Hash;

/// Keys waiting for another try, bounded.
#[derive(Debug)]
pub(crate) struct Reannounce {
    first_retry: Duration,
    max_retry: Duration,
    cap: usize,
    /// When each key is tried next (far in the future while a try runs).
    due: HashMap<Hash, Retry>,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    at: Instant,
}

/// How long a try may take before the key is tried again anyway.
const IN_FLIGHT: Duration = Duration::from_secs(600);

impl Reannounce {
    /// Retries after `first_retry`, doubling up to `max_retry`; at most `cap`
    /// keys wait (more are left to the periodic republish).
    pub(crate) fn new(first_retry: Duration, max_retry: Duration, cap: usize) -> Self {
        Self {
            first_retry,
            max_retry: max_retry.max(first_retry),
            cap,
            due: HashMap::new(),
        }
    }

    /// An announcement of `hash` reached no other node.
    pub(crate) fn failed(&mut self, hash: Hash, now: Instant) {
        let failures = self.due.get(&hash).map_or(0, |r| r.failures);
        if failures == 0 && !self.due.contains_key(&hash) && self.due.len() >= self.cap {
            tracing::debug!(%hash, "too many announcements to retry; left to the republish");
            return;
        }
        let backoff = self
            .first_retry
            .saturating_mul(1u32 << failures.min(16))
            .min(self.max_retry);
        self.due.insert(
            hash,
            Retry {
                failures: failures.saturating_add(1),
                at: now + backoff,
            },
        );
    }

    /// An announcement of `hash` reached the closest peers, or it is no
    /// longer provided.
    pub(crate) fn done(&mut self, hash: &Hash) {
        self.due.remove(hash);
    }

    /// Keys to announce again now. Each stays followed until [`done`] or
    /// [`failed`] says how the try went.
    ///
    /// [`done`]: Self::done
    /// [`failed`]: Self::failed
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Hash> {
        let mut out = Vec::new();
        for (hash, retry) in &mut self.due {
            if retry.at <= now {
                retry.at = now + IN_FLIGHT;
                out.push(*hash);
            }
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash {
        Hash::of(&[n])
    }

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let mut r = Reannounce::new(Duration::from_secs(15), Duration::from_secs(60), 10);
        let t0 = Instant::now();
        r.failed(h(1), t0);
        assert!(r.take_due(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(r.take_due(t0 + Duration::from_secs(15)), vec![h(1)]);
        // Being tried: not handed out twice.
        assert!(r.take_due(t0 + Duration::from_secs(16)).is_empty());
        let t1 = t0 + Duration::from_secs(20);
        r.failed(h(1), t1);
        assert!(r.take_due(t1 + Duration::from_secs(29)).is_empty());
        assert_eq!(r.take_due(t1 + Duration::from_secs(30)), vec![h(1)]);
        for _ in 0..10 {
            r.failed(h(1), t1);
        }
        assert_eq!(r.take_due(t1 + Duration::from_secs(60)), vec![h(1)]);
        r.done(&h(1));
        assert_eq!(r.len(), 0);
        assert!(r.take_due(t1 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_try_that_never_reports_is_handed_out_again() {
        let mut r = Reannounce::new(Duration::from_secs(1), Duration::from_secs(60), 10);
        let t0 = Instant::now();
        r.failed(h(1), t0);
        assert_eq!(r.take_due(t0 + Duration::from_secs(1)), vec![h(1)]);
        assert_eq!(
            r.take_due(t0 + Duration::from_secs(1) + IN_FLIGHT),
            vec![h(1)]
        );
    }

    #[test]
    fn is_bounded() {
        let mut r = Reannounce::new(Duration::from_secs(1), Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for n in 0..10 {
            r.failed(h(n), t0);
        }
        assert_eq!(r.len(), 3);
        // A key already followed still backs off.
        r.failed(h(0), t0);
        assert_eq!(r.len(), 3);
        assert_eq!(r.take_due(t0 + Duration::from_secs(1)).len(), 2);
    }
}
