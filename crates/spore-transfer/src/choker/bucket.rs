//! Token buckets for `--max-upload` / `--max-download`: one global bucket and
//! one per peer. Pure: the caller passes `now` and, when refused, is told how
//! long to wait.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A token bucket of bytes: refills at `rate` bytes per second up to `burst`.
///
/// A take larger than the burst is allowed once the bucket is full and
/// leaves it in debt, so large writes are never starved and the long-run rate
/// still holds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second; `None` is unlimited.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate` bytes per second with a burst of `burst` bytes (at least 1);
    /// starts full. A rate of 0 means unlimited.
    pub fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: (rate > 0).then_some(rate as f64),
            burst,
            tokens: burst,
            last: None,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(0, 1)
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none()
    }

    /// Bytes per second, `None` when unlimited.
    pub fn rate(&self) -> Option<u64> {
        self.rate.map(|r| r as u64)
    }

    /// Changes the rate and burst, keeping the tokens (clipped to the burst).
    pub fn set_rate(&mut self, rate: u64, burst: u64, now: Instant) {
        self.refill(now);
        self.rate = (rate > 0).then_some(rate as f64);
        self.burst = burst.max(1) as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        if let (Some(rate), Some(last)) = (self.rate, self.last)
            && now > last
        {
            let add = rate * now.duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + add).min(self.burst);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
    }

    /// Time until `bytes` may be taken (zero when it may be taken now).
    pub fn wait_for(&mut self, bytes: u64, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.refill(now);
        let need = (bytes as f64).min(self.burst);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            // Rounded up to whole microseconds, so that waiting exactly this
            // long is always enough.
            let micros = ((need - self.tokens) / rate * 1e6).ceil().min(1e15);
            Duration::from_micros(micros as u64)
        }
    }

    /// Takes `bytes` now, or says how long to wait before trying again.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        let wait = self.wait_for(bytes, now);
        if wait.is_zero() {
            self.take(bytes);
            Ok(())
        } else {
            Err(wait)
        }
    }

    fn take(&mut self, bytes: u64) {
        if self.rate.is_some() {
            self.tokens -= bytes as f64;
        }
    }
}

/// Rate limits in one direction: a global bucket plus one bucket per peer.
/// The table is bounded: past `max_peers`, new peers share one overflow
/// bucket. Remove peers that leave.
#[derive(Debug, Clone)]
pub struct RateLimiter<P> {
    global: TokenBucket,
    per_peer: Option<(u64, u64)>,
    peers: BTreeMap<P, TokenBucket>,
    overflow: TokenBucket,
    max_peers: usize,
}

impl<P: Ord + Clone> RateLimiter<P> {
    /// `global` and `per_peer` are (bytes per second, burst); `None` is unlimited.
    pub fn new(global: Option<(u64, u64)>, per_peer: Option<(u64, u64)>, max_peers: usize) -> Self {
        let bucket = |l: Option<(u64, u64)>| match l {
            Some((rate, burst)) => TokenBucket::new(rate, burst),
            None => TokenBucket::unlimited(),
        };
        Self {
            global: bucket(global),
            per_peer,
            peers: BTreeMap::new(),
            overflow: bucket(per_peer),
            max_peers,
        }
    }

    pub fn global(&self) -> &TokenBucket {
        &self.global
    }

    /// Takes `bytes` for `peer` from both its bucket and the global one, or
    /// from neither and says how long to wait.
    pub fn try_take(&mut self, peer: &P, bytes: u64, now: Instant) -> Result<(), Duration> {
        let global_wait = self.global.wait_for(bytes, now);
        let bucket = match self.per_peer {
            None => None,
            Some((rate, burst)) => {
                if !self.peers.contains_key(peer) && self.peers.len() < self.max_peers {
                    self.peers
                        .insert(peer.clone(), TokenBucket::new(rate, burst));
                }
                Some(self.peers.get_mut(peer).unwrap_or(&mut self.overflow))
            }
        };
        let peer_wait = match &bucket {
            Some(b) => {
                let mut b = (*b).clone();
                b.wait_for(bytes, now)
            }
            None => Duration::ZERO,
        };
        let wait = global_wait.max(peer_wait);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = bucket {
            b.wait_for(bytes, now);
            b.take(bytes);
        }
        self.global.take(bytes);
        Ok(())
    }

    pub fn remove_peer(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// Peers with their own bucket (bounded by `max_peers`).
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }
}
