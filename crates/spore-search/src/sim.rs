//! A deterministic in-process simulation of many routers on a random
//! topology, for tests and the benchmark (`examples/search_bench.rs`).
//! Messages are delivered in order, instantly; the clock advances only
//! between searches. It measures what the protocol decides (who gets which
//! message), not transport timing.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use spore_core::Hash;

use crate::{
    dynamic::{DynamicQuery, Step, default_stages},
    query::{Filters, Query},
    record::{ItemKind, RecordBody, SignedRecord},
    router::{Action, Router, RouterConfig, Strategy},
    wire::Message,
};

const ADJECTIVES: &[&str] = &[
    "red", "blue", "green", "quiet", "loud", "fast", "slow", "happy", "dark", "bright", "old",
    "new", "tiny", "huge", "warm", "cold", "wild", "calm", "brave", "lazy",
];
const NOUNS: &[&str] = &[
    "river", "mountain", "forest", "city", "ocean", "desert", "garden", "castle", "island",
    "valley", "bridge", "harbor", "meadow", "canyon", "glacier", "village", "tower", "lake",
    "storm", "comet",
];
const EXTENSIONS: &[&str] = &["mkv", "mp4", "mp3", "flac", "pdf", "iso", "jpg", "zip"];

/// Shape of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Each node links to this many random others (average degree ~2x).
    pub links_per_node: usize,
    pub items_per_node: usize,
    pub router: RouterConfig,
    pub seed: u64,
}

impl SimConfig {
    pub fn new(nodes: usize, strategy: Strategy, seed: u64) -> Self {
        Self {
            nodes,
            links_per_node: 4,
            items_per_node: 5,
            router: RouterConfig {
                strategy,
                ..RouterConfig::default()
            },
            seed,
        }
    }
}

/// Messages of one search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub queries: u64,
    pub hits: u64,
}

impl Traffic {
    pub fn total(&self) -> u64 {
        self.queries + self.hits
    }
}

/// What one search found and cost.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub found: Vec<SignedRecord>,
    pub traffic: Traffic,
    pub stages: usize,
}

/// See the module docs.
#[derive(Debug)]
pub struct Sim {
    routers: Vec<Router<usize>>,
    items: Vec<Vec<SignedRecord>>,
    keys: Vec<SigningKey>,
    adjacency: Vec<Vec<usize>>,
    now: Instant,
    rng: StdRng,
    /// Filter messages and their bytes, over all exchanges.
    pub filter_messages: u64,
    pub filter_bytes: u64,
}

impl Sim {
    /// A random connected topology with generated items on every node.
    pub fn new(config: &SimConfig) -> Self {
        let n = config.nodes.max(2);
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut adjacency = vec![Vec::new(); n];
        // A ring keeps the graph connected; random links make it small-world.
        for i in 0..n {
            link(&mut adjacency, i, (i + 1) % n);
        }
        for i in 0..n {
            for _ in 0..config.links_per_node.saturating_sub(1) {
                let j = rng.random_range(0..n);
                if j != i {
                    link(&mut adjacency, i, j);
                }
            }
        }
        let now = Instant::now();
        let keys: Vec<SigningKey> = (0..n)
            .map(|_| SigningKey::from_bytes(&rng.random()))
            .collect();
        let mut sim = Self {
            routers: (0..n).map(|_| Router::new(config.router.clone())).collect(),
            items: vec![Vec::new(); n],
            keys,
            adjacency,
            now,
            rng,
            filter_messages: 0,
            filter_bytes: 0,
        };
        for node in 0..n {
            for (peer_idx, &peer) in sim.adjacency[node].clone().iter().enumerate() {
                let _ = peer_idx;
                sim.routers[node].add_neighbour(now, peer);
            }
            for _ in 0..config.items_per_node {
                let name = sim.generated_name();
                sim.share(node, &name);
            }
        }
        sim
    }

    fn generated_name(&mut self) -> String {
        let adj = ADJECTIVES.choose(&mut self.rng).copied().unwrap_or("red");
        let noun = NOUNS.choose(&mut self.rng).copied().unwrap_or("river");
        let ext = EXTENSIONS.choose(&mut self.rng).copied().unwrap_or("mkv");
        let n: u32 = self.rng.random_range(10..100_000);
        format!("{adj}-{noun}-{n}.{ext}")
    }

    /// A name no other item has: a random token plus common words.
    pub fn unique_name(&mut self) -> (String, String) {
        let token = format!("u{:012x}", self.rng.random::<u64>() & 0xffff_ffff_ffff);
        let base = self.generated_name();
        (format!("{token} {base}"), token)
    }

    pub fn len(&self) -> usize {
        self.routers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    pub fn neighbours(&self, node: usize) -> &[usize] {
        &self.adjacency[node]
    }

    pub fn random_node(&mut self) -> usize {
        self.rng.random_range(0..self.routers.len())
    }

    pub fn router(&self, node: usize) -> &Router<usize> {
        &self.routers[node]
    }

    /// Shares an item named `name` on `node` (call [`Sim::exchange_filters`] after).
    pub fn share(&mut self, node: usize, name: &str) -> SignedRecord {
        let body = RecordBody {
            id: Hash::of(format!("{node}/{name}").as_bytes()),
            name: name.to_owned(),
            size: 1 << 20,
            kind: ItemKind::Blob,
            parent: None,
        };
        let rec = SignedRecord::sign(body, &self.keys[node]);
        self.items[node].push(rec.clone());
        let words: Vec<String> = self.items[node]
            .iter()
            .flat_map(|r| r.body.keywords())
            .collect();
        self.routers[node].set_local_keywords(&words);
        rec
    }

    /// Every node sends its routing filter to its neighbours, `rounds`
    /// times (levels need as many rounds as they are deep).
    pub fn exchange_filters(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.now += Duration::from_secs(10);
            let filters: Vec<_> = self.routers.iter().map(Router::own_filter).collect();
            for (node, filter) in filters.into_iter().enumerate() {
                let Some(filter) = filter else { continue };
                let bytes = Message::Filter(filter.clone()).encode().len() as u64;
                let filter = std::sync::Arc::new(filter);
                for &peer in &self.adjacency[node] {
                    self.filter_messages += 1;
                    self.filter_bytes += bytes;
                    let _ = self.routers[peer].on_filter(self.now, node, filter.clone());
                }
            }
        }
    }

    /// Mean share of bits set in each level of the nodes' routing filters
    /// (false positives grow as fill^4).
    pub fn filter_fill(&self) -> Vec<f64> {
        let mut sums: Vec<f64> = Vec::new();
        let mut count: f64 = 0.0;
        for r in &self.routers {
            let Some(f) = r.own_filter() else { continue };
            count += 1.0;
            for (j, level) in f.levels.iter().enumerate() {
                if sums.len() <= j {
                    sums.push(0.0);
                }
                sums[j] += level.fill();
            }
        }
        sums.into_iter().map(|s| s / count.max(1.0)).collect()
    }

    /// Runs `query` from `origin` as one plain query (its hop limit as is).
    pub fn search_once(&mut self, origin: usize, query: Query) -> Outcome {
        self.now += Duration::from_secs(1);
        let mut out = Outcome {
            stages: 1,
            ..Outcome::default()
        };
        let actions = self.routers[origin].start_query(self.now, query.clone());
        self.run(origin, actions, &mut out);
        out.found.extend(
            self.items[origin]
                .iter()
                .filter(|r| query.matches(&r.body))
                .cloned(),
        );
        out
    }

    /// Runs `query` from `origin` with dynamic querying: stages of growing
    /// hop limits until `wanted` results are in.
    pub fn search_dynamic(&mut self, origin: usize, query: Query, wanted: usize) -> Outcome {
        self.now += Duration::from_secs(1);
        let mut out = Outcome::default();
        out.found.extend(
            self.items[origin]
                .iter()
                .filter(|r| query.matches(&r.body))
                .cloned(),
        );
        let stages = default_stages(query.hops);
        let mut dq = DynamicQuery::new(query, stages, wanted, self.now + Duration::from_secs(60));
        loop {
            match dq.poll(self.now, out.found.len()) {
                Step::Send(q) => {
                    out.stages += 1;
                    let actions = self.routers[origin].start_query(self.now, q);
                    self.run(origin, actions, &mut out);
                }
                Step::WaitUntil(t) => self.now = t,
                Step::Done => break,
            }
        }
        out
    }

    fn run(&mut self, origin: usize, first: Vec<Action<usize>>, out: &mut Outcome) {
        let mut queue: VecDeque<(usize, Action<usize>)> =
            first.into_iter().map(|a| (origin, a)).collect();
        while let Some((at, action)) = queue.pop_front() {
            match action {
                Action::Send { to, msg } => {
                    match msg {
                        Message::Query(_) => out.traffic.queries += 1,
                        Message::Hits { .. } => out.traffic.hits += 1,
                        Message::Filter(_) => {}
                    }
                    // Through the codec, as on the wire.
                    let actions = match Message::decode_frame(&msg.encode()) {
                        Ok(m) => self.routers[to].on_message(self.now, at, m),
                        Err(e) => self.routers[to].on_malformed(self.now, at, e),
                    };
                    queue.extend(actions.into_iter().map(|a| (to, a)));
                }
                Action::SearchLocal { query } => {
                    let hits: Vec<SignedRecord> = self.items[at]
                        .iter()
                        .filter(|r| query.matches(&r.body))
                        .take(query.result_limit())
                        .cloned()
                        .collect();
                    if !hits.is_empty() {
                        let actions = self.routers[at].local_hits(self.now, query.id, hits);
                        queue.extend(actions.into_iter().map(|a| (at, a)));
                    }
                }
                Action::Deliver { records, .. } => {
                    for r in records {
                        if !out.found.iter().any(|f| f == &r) {
                            out.found.push(r);
                        }
                    }
                }
                Action::Penalise { .. } => {}
            }
        }
    }
}

fn link(adjacency: &mut [Vec<usize>], a: usize, b: usize) {
    if a != b && !adjacency[a].contains(&b) {
        adjacency[a].push(b);
        adjacency[b].push(a);
    }
}

/// A query for `text` with `hops`, no filters.
pub fn query(text: &str, hops: u8) -> Option<Query> {
    Query::new(text, Filters::default(), hops).ok()
}
