//! Property tests of the scheduler: random peers, random have-sets and a
//! random sequence of events (deliveries, failures, departures, bad data,
//! time jumps, seeks, groups a source withdraws and announces again, groups
//! a peer says are coming and then gets), then an honest finish.
//!
//! Properties: a peer is never asked for a group twice at once; a verified
//! group is never requested; a peer is never asked for a group it lacks,
//! unless early, for a group it said is coming;
//! duplication stays within its bound; the internal counters stay
//! consistent; and the download always completes when some peer has every
//! group.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use spore_core::{Bitfield, GROUP_SIZE};
use spore_transfer::scheduler::{Request, RequestId, Scheduler, SchedulerConfig};

#[derive(Debug, Clone)]
struct Case {
    groups: u64,
    tail: u64,
    peers: Vec<Vec<bool>>,
    liar: bool,
    ops: Vec<(u8, usize, u16)>,
    seed: u64,
    piece_groups: Option<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u64..160,
        0u64..GROUP_SIZE,
        1usize..5,
        any::<bool>(),
        any::<u64>(),
        prop::option::of(1u32..9),
    )
        .prop_flat_map(|(groups, tail, n, liar, seed, piece_groups)| {
            (
                prop::collection::vec(prop::collection::vec(any::<bool>(), groups as usize), n),
                prop::collection::vec((0u8..11, 0..n + 1, any::<u16>()), 0..150),
            )
                .prop_map(move |(peers, ops)| Case {
                    groups,
                    tail,
                    peers,
                    liar,
                    ops,
                    seed,
                    piece_groups,
                })
        })
}

struct Driver {
    s: Scheduler<usize>,
    haves: Vec<Bitfield>,
    /// Groups each peer said are coming to it and has not got yet.
    coming: Vec<Bitfield>,
    liar: Option<usize>,
    connected: Vec<bool>,
    cursor: BTreeMap<RequestId, u64>,
    now: Instant,
}

impl Driver {
    fn check_new(&self, reqs: &[Request<usize>]) -> Result<(), TestCaseError> {
        for r in reqs {
            prop_assert!(!r.groups.is_empty());
            let early = (self.s.early_requests(&r.peer).iter()).any(|e| e.id == r.id);
            for g in r.groups.clone() {
                prop_assert!(!self.s.verified().get(g), "requested verified group {}", g);
                let (has, coming) = (self.haves[r.peer].get(g), self.coming[r.peer].get(g));
                prop_assert!(
                    if early { coming && !has } else { has },
                    "asked {} for {} (early: {}, has: {}, coming: {})",
                    r.peer,
                    g,
                    early,
                    has,
                    coming
                );
            }
        }
        self.s.check_invariants().map_err(TestCaseError::fail)
    }

    fn ask(&mut self, p: usize) -> Result<(), TestCaseError> {
        let a = self.s.requests_for(&p, self.now);
        self.check_new(&a.requests)
    }

    /// Delivers the next group of `p`'s oldest request, or else of an early
    /// request whose groups it has got; returns false if none.
    fn deliver(&mut self, p: usize, honest: bool) -> Result<bool, TestCaseError> {
        let got = |r: &Request<usize>| r.groups.clone().all(|g| self.haves[p].get(g));
        let early = self.s.early_requests(&p).into_iter().find(got);
        let Some(r) = self.s.outstanding(&p).into_iter().next().or(early) else {
            return Ok(false);
        };
        let cur = self.cursor.entry(r.id).or_insert(r.groups.start);
        let g = *cur;
        *cur += 1;
        if self.liar == Some(p) && !honest {
            self.s.on_bad_group(&p, g, self.now);
        } else {
            self.s.on_group_verified(&p, g, self.now);
        }
        self.s.check_invariants().map_err(TestCaseError::fail)?;
        Ok(true)
    }
}

impl Driver {
    /// What `p` said was coming arrives, and it announces it.
    fn arrive(&mut self, p: usize) {
        let runs: Vec<_> = self.coming[p].ones_ranges().collect();
        for r in runs {
            self.haves[p].set_range(r.clone());
            let _ = self.s.on_have(&p, r);
        }
        self.coming[p] = Bitfield::new(self.coming[p].len());
    }
}

fn run(c: Case) -> Result<(), TestCaseError> {
    let size = (c.groups - 1) * GROUP_SIZE + c.tail.max(1);
    let config = SchedulerConfig {
        piece_groups: c.piece_groups,
        min_queue_bytes: 4 * GROUP_SIZE,
        max_requests_per_peer: 8,
        ..SchedulerConfig::default()
    };
    let groups = spore_core::group_count(size);
    let mut s = Scheduler::new(size, Bitfield::new(groups), config, c.seed).unwrap();
    let t0 = Instant::now();
    let n = c.peers.len() + 1;
    let mut haves = vec![Bitfield::full(groups)]; // peer 0 is an honest seed
    for bits in &c.peers {
        let mut b = Bitfield::new(groups);
        for (g, &set) in bits.iter().enumerate() {
            if set {
                b.set(g as u64);
            }
        }
        haves.push(b);
    }
    for (i, h) in haves.iter().enumerate() {
        s.add_peer(i, t0).unwrap();
        s.on_bitfield(&i, h.clone(), t0).unwrap();
    }
    let liar = (c.liar && n > 1).then_some(n - 1);
    let mut d = Driver {
        s,
        coming: vec![Bitfield::new(groups); n],
        haves,
        liar,
        connected: vec![true; n],
        cursor: BTreeMap::new(),
        now: t0,
    };
    for (op, peer, arg) in c.ops {
        let p = peer % n;
        match op {
            0 | 1 => d.ask(p)?,
            2 | 3 => {
                d.deliver(p, false)?;
            }
            4 => {
                if let Some(r) = d.s.outstanding(&p).first() {
                    d.s.on_request_failed(&p, r.id, d.now);
                }
            }
            5 => {
                if d.connected[p] {
                    d.s.remove_peer(&p, d.now);
                    d.connected[p] = false;
                } else if d.s.add_peer(p, d.now).is_ok() {
                    d.s.on_bitfield(&p, d.haves[p].clone(), d.now).unwrap();
                    d.connected[p] = true;
                }
            }
            8 if d.connected[p] => {
                // The source withdraws a stretch (it lost data, say), then
                // announces it again.
                let n = d.s.group_count();
                let start = u64::from(arg) % n;
                let end = (start + u64::from(arg % 17) + 1).min(n);
                let mut less = d.haves[p].clone();
                for g in start..end {
                    less.clear(g);
                }
                let before: Vec<RequestId> = d.s.outstanding(&p).iter().map(|r| r.id).collect();
                // (A banned liar is no longer known.)
                let Ok(cancels) = d.s.on_bitfield(&p, less, d.now) else {
                    continue;
                };
                d.s.check_invariants().map_err(TestCaseError::fail)?;
                for r in &cancels {
                    prop_assert!(r.groups.start < end && start < r.groups.end);
                    prop_assert!(before.contains(&r.id));
                }
                let after = d.s.outstanding(&p);
                prop_assert_eq!(after.len() + cancels.len(), before.len());
                prop_assert!(
                    after
                        .iter()
                        .all(|r| r.groups.end <= start || end <= r.groups.start)
                );
                d.s.on_bitfield(&p, d.haves[p].clone(), d.now).unwrap();
            }
            6 => {
                d.now += Duration::from_millis(u64::from(arg) * 4);
                let _ = d.s.poll(d.now);
            }
            9 if d.connected[p] => {
                // The peer says a stretch it lacks is coming to it.
                let n = d.s.group_count();
                let start = u64::from(arg) % n;
                let end = (start + u64::from(arg % 23) + 1).min(n);
                for g in (start..end).filter(|&g| !d.haves[p].get(g)) {
                    d.coming[p].set(g);
                    // (A banned liar is no longer known.)
                    let _ = d.s.on_coming(&p, g..g + 1);
                }
            }
            10 if d.connected[p] => d.arrive(p),
            _ => {
                let off = u64::from(arg) * 1024;
                let _ = d.s.set_playhead((arg % 3 != 0).then_some(off), d.now);
            }
        }
        d.s.check_invariants().map_err(TestCaseError::fail)?;
    }
    // Honest finish: the liar leaves, what was coming arrives, everyone
    // else delivers.
    if let Some(l) = liar {
        d.s.remove_peer(&l, d.now);
    }
    for p in 0..n {
        if d.connected[p] && Some(p) != liar {
            d.arrive(p);
        }
    }
    if !d.connected[0] {
        d.s.add_peer(0, d.now).unwrap();
        d.s.on_bitfield(&0, d.haves[0].clone(), d.now).unwrap();
    }
    let honest: Vec<usize> = (0..n).filter(|&p| Some(p) != liar).collect();
    let mut idle_rounds = 0;
    for _ in 0..(groups * 40 + 1000) {
        if d.s.is_complete() {
            break;
        }
        let mut progressed = false;
        for &p in &honest {
            d.ask(p)?;
            d.now += Duration::from_millis(1);
            progressed |= d.deliver(p, true)?;
        }
        if !progressed {
            idle_rounds += 1;
            prop_assert!(
                idle_rounds < 3,
                "stuck: nothing outstanding and not complete"
            );
        } else {
            idle_rounds = 0;
        }
    }
    prop_assert!(d.s.is_complete(), "did not complete");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_properties(c in case()) {
        run(c)?;
    }
}
