//! Bounded bookkeeping for the router: the cache of recent query ids (to
//! drop duplicates and route results back) and per-peer token buckets.
//! Both take `now` from the caller and never grow past their capacity.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

/// A map with a capacity and a time to live: the oldest entry is evicted
/// when full, and entries older than the TTL are gone.
#[derive(Debug)]
pub struct RecentMap<K, V> {
    capacity: usize,
    ttl: Duration,
    map: HashMap<K, (Instant, V)>,
    order: VecDeque<(Instant, K)>,
}

impl<K: Clone + Eq + Hash, V> RecentMap<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl && self.order.len() <= self.capacity {
                break;
            }
            if let Some((t, k)) = self.order.pop_front()
                && self.map.get(&k).is_some_and(|(at, _)| *at == t)
            {
                self.map.remove(&k);
            }
        }
    }

    /// Inserts `key` unless present; returns false if it was there already.
    pub fn insert_new(&mut self, now: Instant, key: K, value: V) -> bool {
        self.expire(now);
        if self.map.contains_key(&key) {
            return false;
        }
        self.map.insert(key.clone(), (now, value));
        self.order.push_back((now, key));
        self.expire(now);
        true
    }

    pub fn get_mut(&mut self, now: Instant, key: &K) -> Option<&mut V> {
        self.expire(now);
        self.map.get_mut(key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// Rate of a [`TokenBucket`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_map_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut m = RecentMap::new(3, Duration::from_secs(10));
        for i in 0..5 {
            assert!(m.insert_new(t0, i, ()));
        }
        assert_eq!(m.len(), 3);
        assert!(!m.contains(&0) && m.contains(&4));
        assert!(!m.insert_new(t0, 4, ()));
        assert!(m.get_mut(t0 + Duration::from_secs(11), &4).is_none());
        assert!(m.is_empty());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let rate = Rate {
            burst: 3.0,
            per_sec: 1.0,
        };
        let mut b = TokenBucket::full(rate, t0);
        assert_eq!((0..10).filter(|_| b.take(rate, t0)).count(), 3);
        assert!(b.take(rate, t0 + Duration::from_secs(1)));
        assert!(!b.take(rate, t0 + Duration::from_secs(1)));
    }
}
