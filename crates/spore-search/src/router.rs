//! The `/spore/search/1` router: a pure state machine, one per node, that
//! decides what to do with each message. It does no I/O and reads no clock:
//! the driver (spore-node's search task, or the simulation in
//! [`crate::sim`]) feeds it messages with `now` and carries out the
//! [`Action`]s it returns.
//!
//! What it enforces: duplicate queries are dropped by id (bounded cache);
//! queries are forwarded only while hops remain, and with the guided
//! strategy only to neighbours whose routing filter may reach every word;
//! results travel back along the path the query came, only for queries
//! this node saw, only if signed by their publisher and matching the query,
//! and at most [`RouterConfig::max_hits_per_query`] per query; every peer's
//! queries and filters are rate limited; misbehaviour scores the peer and a
//! score past [`RouterConfig::ban_score`] bans it for a while.

use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration, time::Instant};

use crate::{
    filter::{Bloom, MAX_LEVELS, RouteFilter},
    limits::{Rate, RecentMap, TokenBucket},
    query::{Filters, Query, QueryId},
    record::SignedRecord,
    wire::{Message, WireError},
};

/// How queries spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Forward only to neighbours whose routing filter may reach the words.
    Guided,
    /// Plain TTL flooding: forward to every neighbour (the baseline).
    Flood,
}

/// Tunables of a [`Router`].
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub strategy: Strategy,
    /// Levels of the routing filter this node builds and sends.
    pub filter_levels: usize,
    /// Query ids remembered, and for how long.
    pub seen_capacity: usize,
    pub seen_ttl: Duration,
    /// Queries accepted from one peer.
    pub query_rate: Rate,
    /// Filter updates accepted from one peer.
    pub filter_rate: Rate,
    /// Neighbours tracked at once.
    pub max_neighbours: usize,
    /// Results relayed for one query, from all peers together.
    pub max_hits_per_query: usize,
    /// Misbehaviour points after which a peer is banned, and for how long.
    pub ban_score: u32,
    pub ban_time: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Guided,
            filter_levels: MAX_LEVELS,
            seen_capacity: 16 * 1024,
            seen_ttl: Duration::from_secs(120),
            query_rate: Rate {
                burst: 50.0,
                per_sec: 10.0,
            },
            filter_rate: Rate {
                burst: 4.0,
                per_sec: 0.5,
            },
            max_neighbours: 512,
            max_hits_per_query: 512,
            ban_score: 100,
            ban_time: Duration::from_secs(600),
        }
    }
}

/// What a peer did wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offence {
    /// Bytes that are not a valid message (or a message over a limit).
    Malformed(WireError),
    /// More queries or filters than its rate allows.
    Flood,
    /// A result whose signature does not verify.
    ForgedRecord,
    /// A result that does not match the query it claims to answer.
    Irrelevant,
}

impl Offence {
    /// Points towards a ban.
    pub fn score(&self) -> u32 {
        match self {
            Offence::Flood => 2,
            Offence::Irrelevant => 10,
            Offence::Malformed(_) => 25,
            Offence::ForgedRecord => 50,
        }
    }
}

impl std::fmt::Display for Offence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offence::Malformed(e) => write!(f, "malformed message: {e}"),
            Offence::Flood => f.write_str("over its rate limit"),
            Offence::ForgedRecord => f.write_str("a result with a bad signature"),
            Offence::Irrelevant => f.write_str("a result that does not match the query"),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<P> {
    /// Send `msg` to `to` (one stream per message).
    Send { to: P, msg: Message },
    /// Search the local index for `query` and hand the signed results to
    /// [`Router::local_hits`].
    SearchLocal { query: Query },
    /// Results for a query this node started.
    Deliver {
        id: QueryId,
        from: P,
        records: Vec<SignedRecord>,
    },
    /// `peer` misbehaved; when `banned`, disconnect it.
    Penalise {
        peer: P,
        offence: Offence,
        banned: bool,
    },
}

/// Counters, for metrics and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub queries_received: u64,
    pub duplicates: u64,
    pub queries_sent: u64,
    pub hits_sent: u64,
    pub filters_received: u64,
    pub rate_limited: u64,
    pub rejected: u64,
    pub unsolicited_hits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<P> {
    Local,
    Peer(P),
}

#[derive(Debug)]
struct Seen<P> {
    route: Route<P>,
    words: Vec<String>,
    filters: Filters,
    relayed: usize,
}

#[derive(Debug)]
struct Neighbour {
    filter: Option<Arc<RouteFilter>>,
    queries: TokenBucket,
    filters: TokenBucket,
}

/// See the module docs. `P` is the peer id type (libp2p's `PeerId` in the
/// node, an index in the simulation).
#[derive(Debug)]
pub struct Router<P> {
    config: RouterConfig,
    own: Bloom,
    neighbours: HashMap<P, Neighbour>,
    seen: RecentMap<QueryId, Seen<P>>,
    scores: RecentMap<P, u32>,
    banned: RecentMap<P, ()>,
    stats: RouterStats,
}

impl<P: Clone + Eq + Hash> Router<P> {
    pub fn new(config: RouterConfig) -> Self {
        let cap = config.max_neighbours.max(1) * 4;
        Self {
            seen: RecentMap::new(config.seen_capacity, config.seen_ttl),
            scores: RecentMap::new(cap, config.ban_time),
            banned: RecentMap::new(cap, config.ban_time),
            config,
            own: Bloom::new(),
            neighbours: HashMap::new(),
            stats: RouterStats::default(),
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Replaces the keywords of the local index (level 0 of our filter).
    pub fn set_local_keywords<S: AsRef<str>>(&mut self, words: impl IntoIterator<Item = S>) {
        let mut bloom = Bloom::new();
        for w in words {
            bloom.insert(w.as_ref());
        }
        self.own = bloom;
    }

    /// A connected peer; false if the table is full or the peer is banned.
    pub fn add_neighbour(&mut self, now: Instant, peer: P) -> bool {
        if self.is_banned(now, &peer) {
            return false;
        }
        if self.neighbours.contains_key(&peer) {
            return true;
        }
        if self.neighbours.len() >= self.config.max_neighbours {
            return false;
        }
        self.neighbours.insert(
            peer,
            Neighbour {
                filter: None,
                queries: TokenBucket::full(self.config.query_rate, now),
                filters: TokenBucket::full(self.config.filter_rate, now),
            },
        );
        true
    }

    pub fn remove_neighbour(&mut self, peer: &P) {
        self.neighbours.remove(peer);
    }

    pub fn neighbours(&self) -> impl Iterator<Item = &P> {
        self.neighbours.keys()
    }

    pub fn is_banned(&mut self, now: Instant, peer: &P) -> bool {
        self.banned.get_mut(now, peer).is_some()
    }

    /// The filter to send to neighbours; `None` with the flooding strategy.
    pub fn own_filter(&self) -> Option<RouteFilter> {
        if self.config.strategy == Strategy::Flood {
            return None;
        }
        let neighbours = self.neighbours.values().filter_map(|n| n.filter.as_deref());
        Some(RouteFilter::build(
            &self.own,
            neighbours,
            self.config.filter_levels,
        ))
    }

    /// Starts a query of our own: forwards it and remembers it as ours.
    pub fn start_query(&mut self, now: Instant, query: Query) -> Vec<Action<P>> {
        self.seen.insert_new(
            now,
            query.id,
            Seen {
                route: Route::Local,
                words: query.words.clone(),
                filters: query.filters.clone(),
                relayed: 0,
            },
        );
        let mut out = Vec::new();
        if query.hops > 0 {
            self.forward(None, &query, query.hops, &mut out);
        }
        out
    }

    /// A message from `from`, already decoded and checked by the codec.
    pub fn on_message(&mut self, now: Instant, from: P, msg: Message) -> Vec<Action<P>> {
        if self.is_banned(now, &from) {
            self.stats.rejected += 1;
            return Vec::new();
        }
        if let Err(e) = msg.check() {
            return self.penalise(now, from, Offence::Malformed(e));
        }
        // Unknown senders become neighbours if there is room (a connected
        // peer we had not heard of yet); otherwise they are not served.
        if !self.add_neighbour(now, from.clone()) {
            self.stats.rejected += 1;
            return Vec::new();
        }
        match msg {
            Message::Query(q) => self.on_query(now, from, q),
            Message::Hits { id, records } => self.on_hits(now, from, id, records),
            Message::Filter(f) => self.on_filter(now, from, Arc::new(f)),
        }
    }

    /// Bytes from `from` that did not decode.
    pub fn on_malformed(&mut self, now: Instant, from: P, error: WireError) -> Vec<Action<P>> {
        self.penalise(now, from, Offence::Malformed(error))
    }

    /// Signed results of the local index for query `id` (after
    /// [`Action::SearchLocal`]).
    pub fn local_hits(
        &mut self,
        now: Instant,
        id: QueryId,
        mut records: Vec<SignedRecord>,
    ) -> Vec<Action<P>> {
        let Some(seen) = self.seen.get_mut(now, &id) else {
            return Vec::new();
        };
        let room = self.config.max_hits_per_query.saturating_sub(seen.relayed);
        records.truncate(room.min(usize::from(crate::query::MAX_RESULTS_PER_PEER)));
        if records.is_empty() {
            return Vec::new();
        }
        seen.relayed += records.len();
        match seen.route.clone() {
            Route::Local => Vec::new(),
            Route::Peer(to) => {
                self.stats.hits_sent += 1;
                vec![Action::Send {
                    to,
                    msg: Message::Hits { id, records },
                }]
            }
        }
    }

    fn on_query(&mut self, now: Instant, from: P, query: Query) -> Vec<Action<P>> {
        let rate = self.config.query_rate;
        let allowed = self
            .neighbours
            .get_mut(&from)
            .is_some_and(|n| n.queries.take(rate, now));
        if !allowed {
            self.stats.rate_limited += 1;
            return self.penalise(now, from, Offence::Flood);
        }
        self.stats.queries_received += 1;
        let fresh = self.seen.insert_new(
            now,
            query.id,
            Seen {
                route: Route::Peer(from.clone()),
                words: query.words.clone(),
                filters: query.filters.clone(),
                relayed: 0,
            },
        );
        if !fresh {
            self.stats.duplicates += 1;
            return Vec::new();
        }
        let mut out = vec![Action::SearchLocal {
            query: query.clone(),
        }];
        let remaining = query.hops.saturating_sub(1);
        if remaining > 0 {
            self.forward(Some(&from), &query, remaining, &mut out);
        }
        out
    }

    /// Sends `query` with `hops` to every neighbour but `except` that may
    /// lead to a match within `hops - 1` hops past it.
    fn forward(&mut self, except: Option<&P>, query: &Query, hops: u8, out: &mut Vec<Action<P>>) {
        let past = usize::from(hops.saturating_sub(1));
        let guided = self.config.strategy == Strategy::Guided;
        let mut fwd = query.clone();
        fwd.hops = hops;
        for (peer, n) in &self.neighbours {
            if Some(peer) == except {
                continue;
            }
            let may = !guided
                || n.filter
                    .as_ref()
                    .is_none_or(|f| f.may_reach(&query.words, past));
            if may {
                self.stats.queries_sent += 1;
                out.push(Action::Send {
                    to: peer.clone(),
                    msg: Message::Query(fwd.clone()),
                });
            }
        }
    }

    fn on_hits(
        &mut self,
        now: Instant,
        from: P,
        id: QueryId,
        records: Vec<SignedRecord>,
    ) -> Vec<Action<P>> {
        let Some(seen) = self.seen.get_mut(now, &id) else {
            self.stats.unsolicited_hits += 1;
            return Vec::new();
        };
        if seen.route == Route::Peer(from.clone()) {
            // Results for a query from the peer that sent it to us.
            self.stats.unsolicited_hits += 1;
            return Vec::new();
        }
        if !records.iter().all(SignedRecord::verify) {
            return self.penalise(now, from, Offence::ForgedRecord);
        }
        let query = Query {
            id,
            hops: 0,
            words: seen.words.clone(),
            filters: seen.filters.clone(),
            max_results: crate::query::MAX_RESULTS_PER_PEER,
        };
        if !records.iter().all(|r| query.matches(&r.body)) {
            return self.penalise(now, from, Offence::Irrelevant);
        }
        let room = self.config.max_hits_per_query.saturating_sub(seen.relayed);
        let mut records = records;
        records.truncate(room);
        if records.is_empty() {
            return Vec::new();
        }
        seen.relayed += records.len();
        match seen.route.clone() {
            Route::Local => vec![Action::Deliver { id, from, records }],
            Route::Peer(to) => {
                self.stats.hits_sent += 1;
                vec![Action::Send {
                    to,
                    msg: Message::Hits { id, records },
                }]
            }
        }
    }

    /// A routing filter that was decoded and checked already, shared (the
    /// simulation hands one filter to every neighbour without copying it).
    pub fn on_filter(&mut self, now: Instant, from: P, filter: Arc<RouteFilter>) -> Vec<Action<P>> {
        if self.is_banned(now, &from) || !self.add_neighbour(now, from.clone()) {
            self.stats.rejected += 1;
            return Vec::new();
        }
        let rate = self.config.filter_rate;
        let Some(n) = self.neighbours.get_mut(&from) else {
            return Vec::new();
        };
        if !n.filters.take(rate, now) {
            self.stats.rate_limited += 1;
            return self.penalise(now, from, Offence::Flood);
        }
        self.stats.filters_received += 1;
        n.filter = Some(filter);
        Vec::new()
    }

    fn penalise(&mut self, now: Instant, peer: P, offence: Offence) -> Vec<Action<P>> {
        self.stats.rejected += 1;
        let points = offence.score();
        let total = match self.scores.get_mut(now, &peer) {
            Some(s) => {
                *s = s.saturating_add(points);
                *s
            }
            None => {
                self.scores.insert_new(now, peer.clone(), points);
                points
            }
        };
        let banned = total >= self.config.ban_score;
        if banned {
            self.banned.insert_new(now, peer.clone(), ());
            self.neighbours.remove(&peer);
        }
        vec![Action::Penalise {
            peer,
            offence,
            banned,
        }]
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use spore_core::Hash;

    use super::*;
    use crate::record::{ItemKind, RecordBody};

    fn t0() -> Instant {
        Instant::now()
    }

    fn router(strategy: Strategy) -> Router<u32> {
        Router::new(RouterConfig {
            strategy,
            ..Default::default()
        })
    }

    fn query(hops: u8) -> Query {
        Query::new("rare words", Filters::default(), hops).unwrap()
    }

    fn record(name: &str, key: u8) -> SignedRecord {
        SignedRecord::sign(
            RecordBody {
                id: Hash::of(name.as_bytes()),
                name: name.into(),
                size: 1,
                kind: ItemKind::Blob,
                parent: None,
            },
            &SigningKey::from_bytes(&[key; 32]),
        )
    }

    fn sends(actions: &[Action<u32>]) -> Vec<u32> {
        let mut v: Vec<u32> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn duplicates_are_dropped_and_hops_run_out() {
        let now = t0();
        let mut r = router(Strategy::Flood);
        for p in 1..=3 {
            r.add_neighbour(now, p);
        }
        let q = query(2);
        let a = r.on_message(now, 1, Message::Query(q.clone()));
        assert!(matches!(a[0], Action::SearchLocal { .. }));
        assert_eq!(sends(&a), [2, 3]);
        assert!(r.on_message(now, 2, Message::Query(q)).is_empty());
        assert_eq!(r.stats().duplicates, 1);
        let last = r.on_message(now, 1, Message::Query(query(1)));
        assert_eq!(sends(&last), Vec::<u32>::new());
    }

    #[test]
    fn guided_forwarding_follows_filters() {
        let now = t0();
        let mut r = router(Strategy::Guided);
        for p in 1..=3 {
            r.add_neighbour(now, p);
        }
        let mut has = Bloom::new();
        has.insert("rare");
        has.insert("words");
        let yes = RouteFilter::build(&has, std::iter::empty(), 1);
        let no = RouteFilter::build(&Bloom::new(), std::iter::empty(), 1);
        r.on_message(now, 2, Message::Filter(yes));
        r.on_message(now, 3, Message::Filter(no.clone()));
        // Peer 1 sent no filter: it may match. Peer 3's filter rules it out
        // for the last hop; past its deepest level it cannot.
        assert_eq!(sends(&r.start_query(now, query(1))), [1, 2]);
        assert_eq!(sends(&r.start_query(now, query(2))), [1, 2, 3]);
    }

    #[test]
    fn results_go_back_the_way_the_query_came() {
        let now = t0();
        let mut r = router(Strategy::Flood);
        r.add_neighbour(now, 1);
        r.add_neighbour(now, 2);
        let q = query(3);
        r.on_message(now, 1, Message::Query(q.clone()));
        let rec = record("rare words.txt", 9);
        let a = r.on_message(
            now,
            2,
            Message::Hits {
                id: q.id,
                records: vec![rec.clone()],
            },
        );
        assert_eq!(
            a,
            vec![Action::Send {
                to: 1,
                msg: Message::Hits {
                    id: q.id,
                    records: vec![rec.clone()]
                }
            }]
        );
        let mine = query(3);
        r.start_query(now, mine.clone());
        let d = r.on_message(
            now,
            2,
            Message::Hits {
                id: mine.id,
                records: vec![rec],
            },
        );
        assert!(matches!(&d[0], Action::Deliver { from: 2, .. }));
    }

    #[test]
    fn forged_irrelevant_and_unsolicited_results_are_refused() {
        let now = t0();
        let mut r = router(Strategy::Flood);
        r.add_neighbour(now, 1);
        r.add_neighbour(now, 2);
        let q = query(3);
        r.on_message(now, 1, Message::Query(q.clone()));
        let mut forged = record("rare words.txt", 9);
        forged.body.size = 1_000_000;
        let a = r.on_message(
            now,
            2,
            Message::Hits {
                id: q.id,
                records: vec![forged],
            },
        );
        assert!(matches!(
            &a[0],
            Action::Penalise {
                peer: 2,
                offence: Offence::ForgedRecord,
                ..
            }
        ));
        let a = r.on_message(
            now,
            2,
            Message::Hits {
                id: q.id,
                records: vec![record("something else.txt", 9)],
            },
        );
        assert!(matches!(
            &a[0],
            Action::Penalise {
                offence: Offence::Irrelevant,
                ..
            }
        ));
        let a = r.on_message(
            now,
            2,
            Message::Hits {
                id: QueryId([0; 16]),
                records: vec![record("rare words", 9)],
            },
        );
        assert!(a.is_empty());
        assert_eq!(r.stats().unsolicited_hits, 1);
    }

    #[test]
    fn a_query_flood_is_cut_off_and_the_peer_banned() {
        let now = t0();
        let mut r = router(Strategy::Flood);
        r.add_neighbour(now, 1);
        r.add_neighbour(now, 2);
        let mut answered = 0;
        let mut banned = false;
        for _ in 0..500 {
            let a = r.on_message(now, 1, Message::Query(query(4)));
            if a.iter().any(|a| matches!(a, Action::SearchLocal { .. })) {
                answered += 1;
            }
            banned |= a
                .iter()
                .any(|a| matches!(a, Action::Penalise { banned: true, .. }));
        }
        assert_eq!(answered, 50, "the burst is served, nothing more");
        assert!(banned);
        assert!(r.is_banned(now, &1));
        assert!(!r.neighbours().any(|p| *p == 1));
        // The other peer is unaffected.
        let a = r.on_message(now, 2, Message::Query(query(4)));
        assert!(matches!(a[0], Action::SearchLocal { .. }));
        // After the ban the peer is served again.
        let later = now + Duration::from_secs(601);
        let a = r.on_message(later, 1, Message::Query(query(4)));
        assert!(matches!(a[0], Action::SearchLocal { .. }));
    }
}
