//! DHT simulation: the Kademlia that spore runs (rust-libp2p's, with
//! k = 20, α = 3 requests in flight, 256 k-buckets, a provider lookup that
//! stops at the first provider), modelled without sockets so that 10,000+
//! nodes fit in one process. It answers what the real-node benchmark
//! (`dht_bench`) cannot at this size: how many round trips a lookup takes in
//! a large network, and how much content is still found after 30% of the
//! nodes die at once.
//!
//! `cargo run --release -p spore-net --example dht_sim -- --nodes 1000,10000 [--lookups 2000] [--keys 500] [--kill 0.3] [--dead-timeout 10]`
//!
//! The model, event-driven with time in units of the mean round trip:
//! - every node has an access delay w in [0.5, 1.5); a request from a to b
//!   answers after (w_a + w_b) / 2, so the mean RTT is 1;
//! - nodes join one after another through the bootstrap node and one random
//!   earlier node, then run libp2p's bootstrap (a lookup of their own id and
//!   of one random id per bucket); once all have joined, every node runs it
//!   again, as the periodic bootstrap does;
//! - a node that answers learns the asker (server mode: inbound peers enter
//!   the routing table through identify) and the asker learns it; a full
//!   bucket takes a newcomer only in place of a dead entry; a request to a
//!   dead node fails after `--dead-timeout` RTTs and removes it from the
//!   asker's table;
//! - a provider stores its record on the 20 closest nodes its lookup found.

mod common;

use common::{Args, Rng, percentile};
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    time::Instant,
};

const K: usize = 20;
const ALPHA: usize = 3;

type Id = [u8; 32];

fn distance(a: &Id, b: &Id) -> Id {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn bucket_index(own: &Id, other: &Id) -> Option<usize> {
    let d = distance(own, other);
    let zeros = d
        .iter()
        .position(|b| *b != 0)
        .map(|i| i * 8 + d[i].leading_zeros() as usize)?;
    Some(255 - zeros)
}

#[derive(Default)]
struct Stats {
    requests: u64,
    responses: u64,
}

struct Network {
    ids: Vec<Id>,
    delay: Vec<f64>,
    alive: Vec<bool>,
    /// Per node, 256 buckets of peer indices, least recently seen first.
    tables: Vec<Vec<Vec<u32>>>,
    /// Per node, the keys it holds provider records for, and the providers.
    records: Vec<HashMap<Id, Vec<u32>>>,
    dead_timeout: f64,
    stats: Stats,
}

/// What a lookup found.
struct Lookup {
    /// Round trips until the first provider (provider lookups) or until the
    /// lookup converged (node lookups).
    time: f64,
    requests: u32,
    providers: Vec<u32>,
    /// The closest nodes that answered, nearest first.
    closest: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Fresh,
    Waiting,
    Answered,
    Failed,
}

impl Network {
    fn new(n: usize, dead_timeout: f64, rng: &mut Rng) -> Self {
        Self {
            ids: (0..n).map(|_| rng.id()).collect(),
            delay: (0..n).map(|_| 0.5 + rng.unit()).collect(),
            alive: vec![true; n],
            tables: vec![vec![Vec::new(); 256]; n],
            records: vec![HashMap::new(); n],
            dead_timeout,
            stats: Stats::default(),
        }
    }

    /// `node` saw `peer` answer or ask: libp2p's routing table update.
    fn learn(&mut self, node: usize, peer: usize) {
        let Some(b) = bucket_index(&self.ids[node], &self.ids[peer]) else {
            return;
        };
        let peer32 = peer as u32;
        let alive = &self.alive;
        let bucket = &mut self.tables[node][b];
        if let Some(pos) = bucket.iter().position(|p| *p == peer32) {
            bucket.remove(pos);
            bucket.push(peer32);
        } else if bucket.len() < K {
            bucket.push(peer32);
        } else if let Some(pos) = bucket.iter().position(|p| !alive[*p as usize]) {
            // libp2p pings the least recently seen entry and replaces it
            // only if it is gone.
            bucket.remove(pos);
            bucket.push(peer32);
        }
    }

    fn forget(&mut self, node: usize, peer: usize) {
        if let Some(b) = bucket_index(&self.ids[node], &self.ids[peer]) {
            self.tables[node][b].retain(|p| *p as usize != peer);
        }
    }

    fn closest_in_table(&self, node: usize, key: &Id, count: usize) -> Vec<u32> {
        let mut all: Vec<(Id, u32)> = self.tables[node]
            .iter()
            .flatten()
            .map(|p| (distance(&self.ids[*p as usize], key), *p))
            .collect();
        if all.len() > count {
            all.select_nth_unstable(count);
            all.truncate(count);
        }
        all.sort_unstable();
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// An iterative lookup from `from` for `key`, α requests in flight, as
    /// libp2p's `ClosestPeersIter`: it ends when the k closest peers it knows
    /// have answered (or failed), or at the first provider when
    /// `stop_at_provider`.
    fn lookup(&mut self, from: usize, key: &Id, stop_at_provider: bool) -> Lookup {
        let mut peers: BTreeMap<Id, (u32, Peer)> = BTreeMap::new();
        for p in self.closest_in_table(from, key, K) {
            peers.insert(distance(&self.ids[p as usize], key), (p, Peer::Fresh));
        }
        // (time, peer) of requests in flight, earliest first.
        let mut in_flight: BinaryHeap<Reverse<(OrdF64, u32)>> = BinaryHeap::new();
        let mut now = 0.0;
        let mut requests = 0u32;
        let mut providers: Vec<u32> = Vec::new();
        loop {
            // Issue requests while fewer than α are in flight and one of the
            // k closest candidates has not been asked.
            while in_flight.len() < ALPHA {
                let next = peers
                    .values_mut()
                    .filter(|(_, s)| *s != Peer::Failed)
                    .take(K)
                    .find(|(_, s)| *s == Peer::Fresh);
                let Some((p, state)) = next else { break };
                *state = Peer::Waiting;
                let p = *p as usize;
                requests += 1;
                self.stats.requests += 1;
                let delay = if self.alive[p] {
                    (self.delay[from] + self.delay[p]) / 2.0
                } else {
                    self.dead_timeout
                };
                in_flight.push(Reverse((OrdF64(now + delay), p as u32)));
            }
            let Some(Reverse((OrdF64(t), p))) = in_flight.pop() else {
                break;
            };
            now = t;
            let p = p as usize;
            let d = distance(&self.ids[p], key);
            if !self.alive[p] {
                peers.insert(d, (p as u32, Peer::Failed));
                self.forget(from, p);
                continue;
            }
            self.stats.responses += 1;
            peers.insert(d, (p as u32, Peer::Answered));
            self.learn(p, from);
            self.learn(from, p);
            if let Some(found) = self.records[p].get(key) {
                providers.extend(found.iter().copied());
                if stop_at_provider {
                    break;
                }
            }
            for q in self.closest_in_table(p, key, K) {
                if q as usize != from {
                    peers
                        .entry(distance(&self.ids[q as usize], key))
                        .or_insert((q, Peer::Fresh));
                }
            }
        }
        let closest = peers
            .values()
            .filter(|(_, s)| *s == Peer::Answered)
            .take(K)
            .map(|(p, _)| *p)
            .collect();
        providers.sort_unstable();
        providers.dedup();
        Lookup {
            time: now,
            requests,
            providers,
            closest,
        }
    }

    /// libp2p's bootstrap: a lookup of the node's own id, then of a random id
    /// in each bucket from the closest non-empty one outwards.
    fn bootstrap(&mut self, node: usize, rng: &mut Rng) {
        let own = self.ids[node];
        self.lookup(node, &own, false);
        let nearest = (0..256).find(|b| !self.tables[node][*b].is_empty());
        let Some(nearest) = nearest else { return };
        for b in nearest + 1..256 {
            if b > nearest + 16 {
                break;
            }
            // A random id whose distance from ours has its top bit at b.
            let mut d = rng.id();
            let (byte, bit) = (31 - b / 8, b % 8);
            d[..byte].fill(0);
            d[byte] = (d[byte] & ((1u8 << bit) - 1)) | (1u8 << bit);
            let target = distance(&own, &d);
            self.lookup(node, &target, false);
        }
    }

    fn provide(&mut self, node: usize, key: Id) {
        let found = self.lookup(node, &key, false);
        for holder in found.closest {
            let list = self.records[holder as usize].entry(key).or_default();
            if !list.contains(&(node as u32)) {
                list.push(node as u32);
            }
        }
    }
}

/// Event times, ordered by `total_cmp` so they can key a heap.
#[derive(Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

struct Round {
    ok: usize,
    total: usize,
    times: Vec<f64>,
    requests: Vec<f64>,
}

impl Round {
    fn print(mut self, label: &str) {
        println!(
            "{label}: found {}/{} ({:.2}%); RTTs to first provider p50 {:.2}, p99 {:.2}; requests p50 {:.0}, p99 {:.0}",
            self.ok,
            self.total,
            100.0 * self.ok as f64 / self.total.max(1) as f64,
            percentile(&mut self.times, 0.5).unwrap_or(f64::NAN),
            percentile(&mut self.times, 0.99).unwrap_or(f64::NAN),
            percentile(&mut self.requests, 0.5).unwrap_or(f64::NAN),
            percentile(&mut self.requests, 0.99).unwrap_or(f64::NAN),
        );
    }
}

/// Lookups of random keys from random live nodes other than the provider;
/// only keys whose provider is alive count (a dead provider's content is
/// gone, whatever the DHT does).
fn measure(net: &mut Network, keys: &[(Id, usize)], lookups: usize, rng: &mut Rng) -> Round {
    let live_keys: Vec<&(Id, usize)> = keys.iter().filter(|(_, p)| net.alive[*p]).collect();
    let live_nodes: Vec<usize> = (0..net.ids.len()).filter(|i| net.alive[*i]).collect();
    let mut round = Round {
        ok: 0,
        total: 0,
        times: Vec::new(),
        requests: Vec::new(),
    };
    if live_keys.is_empty() || live_nodes.len() < 2 {
        return round;
    }
    for _ in 0..lookups {
        let (key, provider) = *live_keys[rng.below(live_keys.len())];
        let mut from = live_nodes[rng.below(live_nodes.len())];
        while from == provider {
            from = live_nodes[rng.below(live_nodes.len())];
        }
        let found = net.lookup(from, &key, true);
        round.total += 1;
        round.requests.push(found.requests as f64);
        if found.providers.contains(&(provider as u32)) {
            round.ok += 1;
            round.times.push(found.time);
        }
    }
    round
}

fn run(n: usize, lookups: usize, keys: usize, kill: f64, dead_timeout: f64) {
    let t0 = Instant::now();
    let mut rng = Rng(0x5eed_d475 ^ n as u64);
    let mut net = Network::new(n, dead_timeout, &mut rng);
    for node in 1..n {
        let other = rng.below(node);
        net.learn(node, 0);
        net.learn(node, other);
        net.bootstrap(node, &mut rng);
    }
    for node in 0..n {
        net.bootstrap(node, &mut rng);
    }
    let sizes: Vec<usize> = net
        .tables
        .iter()
        .map(|t| t.iter().map(Vec::len).sum())
        .collect();
    let join_requests = net.stats.requests;
    let keys: Vec<(Id, usize)> = (0..keys).map(|_| (rng.id(), rng.below(n))).collect();
    for (key, provider) in &keys {
        net.provide(*provider, *key);
    }
    println!("== {n} nodes (simulated) ==");
    println!(
        "routing table size min/mean/max {}/{:.0}/{}; {:.0} requests per node to join",
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().sum::<usize>() as f64 / n as f64,
        sizes.iter().max().copied().unwrap_or(0),
        join_requests as f64 / n as f64
    );
    measure(&mut net, &keys, lookups, &mut rng).print("all alive");

    let killed = (n as f64 * kill).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for node in order.into_iter().take(killed) {
        net.alive[node] = false;
    }
    measure(&mut net, &keys, lookups, &mut rng).print(&format!(
        "{:.0}% killed at once, no repair yet",
        kill * 100.0
    ));
    // What follows a kill in a running network: the periodic bootstrap
    // refreshes the routing tables and providers republish their records.
    for node in 0..n {
        if net.alive[node] {
            net.bootstrap(node, &mut rng);
        }
    }
    for (key, provider) in &keys {
        if net.alive[*provider] {
            net.provide(*provider, *key);
        }
    }
    measure(&mut net, &keys, lookups, &mut rng).print("after one routing refresh and republish");
    println!(
        "(a request to a dead node costs {dead_timeout} RTTs; {:.1} s of CPU for this size; {} responses simulated)",
        t0.elapsed().as_secs_f64(),
        net.stats.responses
    );
}

fn main() {
    let args = Args::from_env();
    let lookups = args.parse_or("--lookups", 2000usize);
    let keys = args.parse_or("--keys", 500usize).max(1);
    let kill = args.parse_or("--kill", 0.3f64).clamp(0.0, 0.99);
    let dead_timeout = args.parse_or("--dead-timeout", 10.0f64).max(0.0);
    for n in args.sizes("1000,10000") {
        run(n, lookups, keys, kill, dead_timeout);
    }
}
