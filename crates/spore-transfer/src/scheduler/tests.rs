//! Unit tests of each scheduling rule on a virtual clock.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn groups_of(reqs: &[Request<u32>]) -> Vec<u64> {
    reqs.iter().flat_map(|r| r.groups.clone()).collect()
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        random_first_pieces: 0,
        ..SchedulerConfig::default()
    }
}

fn sched(groups: u64, config: SchedulerConfig, seed: u64) -> Scheduler<u32> {
    let size = groups * GROUP_SIZE;
    Scheduler::new(size, Bitfield::new(groups), config, seed).unwrap()
}

fn seed_peer(s: &mut Scheduler<u32>, peer: u32, now: Instant) {
    s.add_peer(peer, now).unwrap();
    s.on_bitfield(&peer, Bitfield::full(s.group_count()), now)
        .unwrap();
}

/// (interval, next delivery, queue of (request, next group)) of a driven peer.
type DrivenPeer = (Duration, Instant, Vec<(Request<u32>, u64)>);

/// A tiny driver: each peer serves its requests in order, one group every
/// `interval`, with no latency. Returns the finish time.
struct Driver {
    s: Scheduler<u32>,
    now: Instant,
    peers: BTreeMap<u32, DrivenPeer>,
    cancels: Vec<Request<u32>>,
}

impl Driver {
    fn new(s: Scheduler<u32>, now: Instant) -> Self {
        Self {
            s,
            now,
            peers: BTreeMap::new(),
            cancels: Vec::new(),
        }
    }

    fn add(&mut self, peer: u32, interval: Duration) {
        seed_peer(&mut self.s, peer, self.now);
        self.peers
            .insert(peer, (interval, self.now + interval, Vec::new()));
    }

    fn cancel(&mut self, r: &Request<u32>) {
        if let Some(p) = self.peers.get_mut(&r.peer) {
            p.2.retain(|(q, _)| q.id != r.id);
        }
        self.cancels.push(r.clone());
    }

    fn refill(&mut self) {
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for id in ids {
            let a = self.s.requests_for(&id, self.now);
            for c in &a.cancels {
                self.cancel(c);
            }
            let p = self.peers.get_mut(&id).unwrap();
            if p.2.is_empty() {
                p.1 = self.now + p.0;
            }
            for r in a.requests {
                let start = r.groups.start;
                p.2.push((r, start));
            }
        }
        self.s.check_invariants().unwrap();
    }

    /// One delivery; false when nothing is outstanding.
    fn step(&mut self) -> bool {
        let next = self
            .peers
            .iter()
            .filter(|(_, p)| !p.2.is_empty())
            .min_by_key(|(id, p)| (p.1, **id))
            .map(|(id, p)| (*id, p.1));
        let Some((id, at)) = next else { return false };
        self.now = at;
        let p = self.peers.get_mut(&id).unwrap();
        let (req, g) = &mut p.2[0];
        let group = *g;
        *g += 1;
        if *g == req.groups.end {
            p.2.remove(0);
        }
        p.1 = at + p.0;
        for c in self.s.on_group_verified(&id, group, at) {
            self.cancel(&c);
        }
        true
    }

    fn run(&mut self) -> Instant {
        self.refill();
        while !self.s.is_complete() {
            if !self.step() {
                self.refill();
                assert!(self.step(), "stuck with nothing outstanding");
            }
            self.refill();
        }
        self.now
    }
}

#[test]
fn piece_size_adapts_to_blob_size() {
    assert_eq!(piece_groups_for(1), 1);
    assert_eq!(piece_groups_for(64), 4); // 1 MiB blob: 16 pieces of 64 KiB
    assert_eq!(piece_groups_for(65_536), 64); // 1 GiB: 1 MiB pieces
    assert_eq!(piece_groups_for(1 << 20), 64); // 16 GiB: still 1 MiB
    assert_eq!(piece_groups_for(100 << 16), 512); // 100 GiB: 8 MiB pieces
}

#[test]
fn random_pieces_first() {
    let mut firsts = BTreeSet::new();
    for seed in 0..20 {
        let cfg = SchedulerConfig {
            piece_groups: Some(4),
            ..SchedulerConfig::default()
        };
        let mut s = sched(256, cfg, seed);
        let t0 = Instant::now();
        seed_peer(&mut s, 1, t0);
        let a = s.requests_for(&1, t0);
        // The whole first batch stays in one random piece before moving on.
        firsts.insert(a.requests[0].groups.start / 4);
    }
    assert!(firsts.len() > 10, "first pieces not random: {firsts:?}");
}

#[test]
fn rarest_first_after_random_phase() {
    let cfg = SchedulerConfig {
        piece_groups: Some(4),
        min_queue_bytes: 8 * GROUP_SIZE,
        ..config()
    };
    let mut s = sched(64, cfg, 1);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    s.add_peer(2, t0).unwrap();
    let mut half = Bitfield::new(64);
    half.set_range(0..32);
    s.on_bitfield(&2, half, t0).unwrap();
    let a = s.requests_for(&1, t0);
    assert_eq!(groups_of(&a.requests).len(), 8);
    assert!(
        groups_of(&a.requests).iter().all(|&g| g >= 32),
        "took common groups first: {:?}",
        a.requests
    );
}

/// A source that withdraws groups (it lost data, say) is no longer asked
/// for them: its requests covering any of them come back to cancel, the
/// rest stay, and the withdrawn groups are open again for whoever holds
/// them.
#[test]
fn withdrawn_groups_cancel_the_requests_that_cover_them() {
    let cfg = SchedulerConfig {
        piece_groups: Some(4),
        min_queue_bytes: 16 * GROUP_SIZE,
        min_request_groups: 4,
        max_request_groups: 4,
        ..config()
    };
    let mut s = sched(64, cfg, 1);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let asked = s.requests_for(&1, t0).requests;
    assert_eq!(groups_of(&asked).len(), 16);
    let victim = asked[1].groups.clone();
    let mut less = Bitfield::full(64);
    less.clear(victim.start + 1);
    let cancels = s.on_bitfield(&1, less, t0).unwrap();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].id, asked[1].id);
    assert_eq!(s.outstanding(&1).len(), asked.len() - 1);
    s.check_invariants().unwrap();
    // Another peer that holds the withdrawn group gets it.
    s.add_peer(2, t0).unwrap();
    let mut has = Bitfield::new(64);
    has.set_range(victim.clone());
    s.on_bitfield(&2, has, t0).unwrap();
    let taken = groups_of(&s.requests_for(&2, t0).requests);
    assert!(taken.contains(&(victim.start + 1)), "{taken:?}");
    // Asked again of peer 1, its requests avoid the withdrawn group.
    let again = groups_of(&s.requests_for(&1, t0).requests);
    assert!(!again.contains(&(victim.start + 1)));
    s.check_invariants().unwrap();
}

/// A group only one peer holds outranks a piece that is rarer on average:
/// if that peer leaves, the group is gone (a churn run lost such groups
/// sitting in pieces the swarm otherwise held well).
#[test]
fn a_group_one_peer_alone_holds_comes_first() {
    let cfg = SchedulerConfig {
        piece_groups: Some(4),
        min_request_groups: 1,
        ..config()
    };
    let t0 = Instant::now();
    // Groups as (start, end) pairs.
    let holding = |ranges: &[(u64, u64)]| {
        let mut has = Bitfield::new(8);
        for &(start, end) in ranges {
            has.set_range(start..end);
        }
        has
    };
    // Piece 0 (groups 0..4): 10 copies, but group 3 is only at peer 1.
    // Piece 1 (groups 4..8): 8 copies, rarer on average.
    let swarm = || {
        let mut s = sched(8, cfg.clone(), 1);
        for (peer, has) in [
            (1, holding(&[(0, 8)])),
            (2, holding(&[(0, 3), (4, 8)])),
            (3, holding(&[(0, 3)])),
        ] {
            s.add_peer(peer, t0).unwrap();
            s.on_bitfield(&peer, has, t0).unwrap();
        }
        s
    };
    let mut s = swarm();
    let a = s.requests_for(&1, t0);
    assert!(a.requests[0].groups.contains(&3), "the lone group first");
    assert_eq!(a.requests[1].groups.start, 4, "then the rarer piece");
    s.check_invariants().unwrap();
    let mut s = swarm();
    let a = s.requests_for(&2, t0);
    assert_eq!(
        a.requests[0].groups.start, 4,
        "peer 2 lacks it: the rarer piece"
    );
    s.check_invariants().unwrap();
}

/// Downloaders that all want the groups one partial peer alone holds start
/// at different places, so its upload makes distinct copies rather than the
/// same group six times over (as a churn run showed).
#[test]
fn downloaders_spread_over_the_groups_a_lone_holder_has() {
    let cfg = SchedulerConfig {
        piece_groups: Some(64),
        ..config()
    };
    let t0 = Instant::now();
    let starts: BTreeSet<u64> = (0..16)
        .map(|seed| {
            let mut s = sched(128, cfg.clone(), seed);
            s.add_peer(1, t0).unwrap();
            let mut has = Bitfield::new(128);
            has.set_range(0..64);
            s.on_bitfield(&1, has, t0).unwrap();
            let a = s.requests_for(&1, t0);
            s.check_invariants().unwrap();
            a.requests[0].groups.start
        })
        .collect();
    assert!(starts.len() >= 4, "first requests start at {starts:?}");
    assert!(
        starts.iter().all(|g| g % 8 == 0),
        "aligned to requests: {starts:?}"
    );
}

#[test]
fn never_asks_a_peer_for_what_it_lacks() {
    let mut s = sched(200, config(), 3);
    let t0 = Instant::now();
    s.add_peer(1, t0).unwrap();
    let mut has = Bitfield::new(200);
    for g in (0..200).filter(|g| g % 3 == 0) {
        has.set(g);
    }
    s.on_bitfield(&1, has.clone(), t0).unwrap();
    let a = s.requests_for(&1, t0);
    assert!(!a.requests.is_empty());
    assert!(groups_of(&a.requests).iter().all(|&g| has.get(g)));
    // A have-update makes more available.
    s.on_have(&1, 1..2).unwrap();
    assert!(s.is_interested(&1));
    s.check_invariants().unwrap();
}

#[test]
fn queue_depth_tracks_rate() {
    for rate_mb in [1u64, 4] {
        let interval = Duration::from_secs_f64(GROUP_SIZE as f64 / (rate_mb * 1_000_000) as f64);
        let mut d = Driver::new(sched(8192, config(), 5), Instant::now());
        d.add(1, interval);
        d.refill();
        let t0 = d.now;
        while d.now < t0 + Duration::from_secs(4) {
            d.step();
            d.refill();
        }
        let rate = d.s.peer_rate(&1).unwrap();
        let target = d.s.queue_target_bytes(&1) as f64;
        let queued = (d.s.pending_groups(&1) * GROUP_SIZE) as f64;
        let want = (rate_mb * 3_000_000) as f64;
        assert!(
            (rate / (rate_mb * 1_000_000) as f64 - 1.0).abs() < 0.1,
            "rate {rate}"
        );
        assert!(
            (target / want - 1.0).abs() < 0.15,
            "target {target} want {want}"
        );
        assert!(queued >= target * 0.9 && queued <= target + 65.0 * GROUP_SIZE as f64);
    }
}

/// A peer not yet measured gets two requests of half the queue floor, so
/// the second is in flight while the first completes.
#[test]
fn an_unmeasured_peer_has_two_requests_in_flight() {
    let mut s = sched(1024, config(), 5);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let first = s.requests_for(&1, t0);
    let half = SchedulerConfig::default().min_queue_bytes / 2 / GROUP_SIZE;
    let sizes: Vec<u64> = first
        .requests
        .iter()
        .map(|r| r.groups.end - r.groups.start)
        .collect();
    assert_eq!(sizes, vec![half, half]);
    s.check_invariants().unwrap();
}

/// The first rate sample of a peer that is slow to start (its first bytes
/// wait a round trip and a queue) is low. Sizing requests by it alone cut
/// the queue into single groups, each costing as much in bao parents as
/// in data; requests stay at `min_request_groups` or more, and a sliver of
/// room waits until a whole request fits.
#[test]
fn a_slow_first_measurement_does_not_cut_requests_into_single_groups() {
    let mut s = sched(1024, config(), 5);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let first = s.requests_for(&1, t0);
    let head = first.requests[0].groups.clone();
    let now = t0 + MS * 400;
    s.on_group_verified(&1, head.start, now);
    assert!(s.peer_rate(&1).unwrap() < 100_000.0, "a slow first sample");
    assert!(
        s.requests_for(&1, now).requests.is_empty(),
        "one group of room is not worth a request"
    );
    let min = u64::from(SchedulerConfig::default().min_request_groups);
    for g in head.start + 1..head.start + min {
        s.on_group_verified(&1, g, now + MS * 10);
    }
    let more = s.requests_for(&1, now + MS * 10);
    assert!(!more.requests.is_empty(), "room for a whole request");
    for r in &more.requests {
        assert!(r.groups.end - r.groups.start >= min, "{:?}", r.groups);
    }
    s.check_invariants().unwrap();
}

#[test]
fn endgame_duplicates_the_tail_and_cancels_the_loser() {
    let cfg = SchedulerConfig {
        piece_groups: Some(16),
        // Unmeasured, a peer gets requests of half this: one of all 16 groups.
        min_queue_bytes: 32 * GROUP_SIZE,
        initial_rate: 10e6,
        ..config()
    };
    let mut s = sched(16, cfg, 7);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let a = s.requests_for(&1, t0);
    assert_eq!(groups_of(&a.requests), (0..16).collect::<Vec<_>>());
    // Peer 1 is slow: a group every 100 ms.
    for g in 0..3 {
        s.on_group_verified(&1, g, t0 + MS * 100 * (g as u32 + 1));
    }
    let now = t0 + MS * 300;
    assert!(s.peer_rate(&1).unwrap() < 200_000.0);
    seed_peer(&mut s, 2, now);
    let b = s.requests_for(&2, now);
    assert!(b.cancels.is_empty(), "the head request is not stolen");
    assert_eq!(s.stats().endgame_requests, 1);
    let dup = groups_of(&b.requests);
    assert_eq!(dup, (3..16).collect::<Vec<_>>(), "duplicates the tail");
    s.check_invariants().unwrap();
    let mut cancels = Vec::new();
    for g in 3..16 {
        cancels.extend(s.on_group_verified(&2, g, now + MS * g as u32));
    }
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].peer, 1);
    assert_eq!(cancels[0].id, a.requests[0].id);
    assert!(s.is_complete());
    assert_eq!(s.stats().duplicate_groups, 0);
    // A late group from the loser is counted as a duplicate.
    s.on_group_verified(&1, 3, now + MS * 20);
    assert_eq!(s.stats().duplicate_groups, 1);
    s.check_invariants().unwrap();
}

#[test]
fn endgame_duplication_is_bounded() {
    let cfg = SchedulerConfig {
        piece_groups: Some(16),
        // Unmeasured, a peer gets requests of half this: one of all 16 groups.
        min_queue_bytes: 32 * GROUP_SIZE,
        initial_rate: 10e6,
        ..config()
    };
    let mut s = sched(16, cfg, 7);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    s.requests_for(&1, t0);
    for g in 0..3 {
        s.on_group_verified(&1, g, t0 + MS * 100 * (g as u32 + 1));
    }
    let now = t0 + MS * 300;
    for p in 2..6 {
        seed_peer(&mut s, p, now);
        s.requests_for(&p, now);
    }
    s.check_invariants().unwrap();
    // max_duplicates = 1: peers 3..6 got nothing.
    for p in 3..6 {
        assert_eq!(s.pending_groups(&p), 0);
    }
}

#[test]
fn a_fast_peer_steals_queued_work_from_a_slow_one() {
    let cfg = SchedulerConfig {
        piece_groups: Some(8),
        max_request_groups: 8,
        min_queue_bytes: 32 * GROUP_SIZE,
        initial_rate: 10e6,
        ..config()
    };
    let mut s = sched(32, cfg, 9);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let a = s.requests_for(&1, t0);
    assert_eq!(a.requests.len(), 4);
    // 5 groups/s (80 KB/s): the queued requests start more than the steal
    // horizon (2 s) from now.
    for g in 0..3 {
        s.on_group_verified(
            &1,
            a.requests[0].groups.start + g,
            t0 + MS * 200 * (g as u32 + 1),
        );
    }
    let now = t0 + MS * 600;
    seed_peer(&mut s, 2, now);
    let b = s.requests_for(&2, now);
    // The head is being served and the next may be on its way: the two
    // behind them move.
    let stolen: BTreeSet<RequestId> = b.cancels.iter().map(|c| c.id).collect();
    let expected: BTreeSet<RequestId> = a.requests[2..].iter().map(|r| r.id).collect();
    assert_eq!(stolen, expected, "the two queued behind move");
    assert!(b.cancels.iter().all(|c| c.peer == 1));
    let taken: BTreeSet<u64> = groups_of(&b.requests).into_iter().collect();
    for r in &a.requests[2..] {
        assert!(r.groups.clone().all(|g| taken.contains(&g)));
    }
    assert_eq!(s.outstanding(&1).len(), 2, "the two being served stay");
    assert_eq!(s.stats().steals, 2);
    assert_eq!(s.peer_stats(&1).unwrap().stolen_from, 2);
    s.check_invariants().unwrap();
}

#[test]
fn work_the_holder_may_have_sent_already_is_not_stolen() {
    // A holder at ~0.4 MB/s (a leecher uploading to many) with a deep queue;
    // a fast thief arrives with nothing open. Only requests the holder would
    // start beyond the steal horizon (2 s here, since 1 MiB is further) move:
    // nearer ones may already be in its buffers, and would arrive twice.
    let cfg = SchedulerConfig {
        piece_groups: Some(8),
        max_request_groups: 4,
        min_queue_bytes: 256 * GROUP_SIZE,
        initial_rate: 10e6,
        ..config()
    };
    let mut s = sched(256, cfg.clone(), 21);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let mut now = t0;
    let mut queued = s.requests_for(&1, now).requests;
    // It delivers 24 groups, one per 40 ms (~410 KB/s), topping up.
    for _ in 0..24 {
        now += MS * 40;
        let head = s.outstanding(&1)[0].groups.clone();
        let g = head.clone().find(|&g| !s.verified().get(g)).unwrap();
        s.on_group_verified(&1, g, now);
        queued.extend(s.requests_for(&1, now).requests);
    }
    let rate = s.peer_rate(&1).expect("measured");
    assert!((2e5..8e5).contains(&rate), "rate {rate}");
    let before = s.outstanding(&1);
    assert!(before.len() > 8, "a deep queue: {}", before.len());

    seed_peer(&mut s, 2, now);
    let b = s.requests_for(&2, now);
    assert!(!b.cancels.is_empty(), "the tail of a deep queue moves");
    let stolen: BTreeSet<RequestId> = b.cancels.iter().map(|c| c.id).collect();
    // Groups the holder would send before each of its requests.
    let mut ahead = 0u64;
    for r in &before {
        let starts_in = (ahead * GROUP_SIZE) as f64 / rate;
        let near = starts_in < cfg.steal_horizon.as_secs_f64()
            && ahead * GROUP_SIZE < cfg.steal_horizon_bytes;
        if near {
            assert!(!stolen.contains(&r.id), "{r:?} starts in {starts_in:.2} s");
        }
        ahead += r.groups.clone().filter(|&g| !s.verified().get(g)).count() as u64;
    }
    assert_eq!(s.stats().steals, stolen.len() as u64);
    s.check_invariants().unwrap();
}

#[test]
fn equal_peers_share_evenly_without_duplicates() {
    let cfg = SchedulerConfig {
        piece_groups: Some(8),
        ..config()
    };
    let mut d = Driver::new(sched(2048, cfg, 11), Instant::now());
    let t0 = d.now;
    for p in 1..=4 {
        d.add(p, MS);
    }
    let end = d.run();
    let st = d.s.stats().clone();
    assert_eq!(st.duplicate_groups, 0, "{st:?}");
    for p in 1..=4 {
        let share = d.s.peer_stats(&p).unwrap().useful_groups;
        assert!((460..=564).contains(&share), "peer {p}: {share} of 2048");
    }
    assert!(end - t0 < MS * 560, "took {:?}", end - t0);
}

#[test]
fn slow_peer_does_not_hold_the_download_hostage() {
    let cfg = SchedulerConfig {
        piece_groups: Some(8),
        ..config()
    };
    let mut d = Driver::new(sched(4096, cfg, 13), Instant::now());
    let t0 = d.now;
    d.add(1, MS); // 16 MB/s
    d.add(2, MS * 50); // 0.3 MB/s
    let end = d.run();
    // Ideal: 4096 groups at 1.02 groups/ms ≈ 4.0 s.
    let took = end - t0;
    assert!(took < Duration::from_millis(4400), "took {took:?}");
    assert!(d.s.stats().steals > 0);
}

#[test]
fn adaptive_timeout_reassigns_a_stalled_peer() {
    let mut s = sched(1024, config(), 15);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    s.requests_for(&1, t0);
    s.on_rtt(&1, MS * 20);
    let mut now = t0;
    for i in 0..40u32 {
        now = t0 + MS * 10 * (i + 1);
        let g = s.outstanding(&1)[0].groups.start;
        let g = (g..).find(|&g| !s.verified().get(g)).unwrap();
        s.on_group_verified(&1, g, now);
        s.requests_for(&1, now);
    }
    assert!(s.peer_rate(&1).is_some());
    let p = s.poll(now + MS * 1999);
    assert!(p.timed_out.is_empty());
    assert_eq!(p.next_deadline, Some(now + Duration::from_secs(2)));
    let p = s.poll(now + Duration::from_secs(2));
    assert!(!p.timed_out.is_empty());
    assert_eq!(s.pending_groups(&1), 0);
    assert_eq!(s.peer_stats(&1).unwrap().timeouts, 1);
    // Snubbed: one group at a time.
    let again = s.requests_for(&1, now + Duration::from_secs(2));
    assert_eq!(groups_of(&again.requests).len(), 1);
    // Another peer takes the reassigned groups.
    seed_peer(&mut s, 2, now);
    let b = s.requests_for(&2, now + Duration::from_secs(2));
    let freed: BTreeSet<u64> = groups_of(&p.timed_out).into_iter().collect();
    assert!(groups_of(&b.requests).iter().any(|g| freed.contains(g)));
    s.check_invariants().unwrap();
}

#[test]
fn initial_timeout_applies_before_measurements() {
    let mut s = sched(64, config(), 1);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    s.requests_for(&1, t0);
    assert_eq!(s.poll(t0).next_deadline, Some(t0 + Duration::from_secs(10)));
}

#[test]
fn ban_after_exactly_three_bad_groups_with_precise_blame() {
    let mut s = sched(256, config(), 17);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    seed_peer(&mut s, 2, t0);
    s.requests_for(&2, t0);
    let mut bad = Vec::new();
    for i in 0..3 {
        s.requests_for(&1, t0);
        let r = s.outstanding(&1)[0].clone();
        let g = r.groups.start;
        bad.push(g);
        let out = s.on_bad_group(&1, g, t0 + MS * i as u32);
        assert_eq!(out.bad_groups, i as u32 + 1);
        assert_eq!(out.banned, i == 2, "banned after exactly 3");
        assert!(out.cancels.iter().any(|c| c.id == r.id));
        if i < 2 {
            // Never asked for that group again.
            let more = s.requests_for(&1, t0 + MS * i as u32);
            assert!(!groups_of(&more.requests).contains(&g));
            assert!(s.outstanding(&1).iter().all(|q| !q.groups.contains(&g)));
        }
        s.check_invariants().unwrap();
    }
    assert!(s.is_banned(&1));
    assert_eq!(s.add_peer(1, t0), Err(PeerError::Banned));
    assert_eq!(
        s.peer_stats(&2).unwrap().bad_groups,
        0,
        "the honest peer is not blamed"
    );
    assert_eq!(s.stats().banned, 1);
    // The liar's groups go to the honest peer.
    let mut next = s.requests_for(&2, t0 + Duration::from_secs(1));
    let mut got: Vec<u64> = groups_of(&next.requests);
    got.extend(s.outstanding(&2).iter().flat_map(|r| r.groups.clone()));
    next.requests.clear();
    for g in bad {
        assert!(got.contains(&g) || !s.verified().get(g));
    }
}

#[test]
fn resume_skips_verified_groups() {
    let groups = 512;
    let mut verified = Bitfield::new(groups);
    for g in (0..groups).filter(|g| g % 2 == 0) {
        verified.set(g);
    }
    let s = Scheduler::new(groups * GROUP_SIZE, verified.clone(), config(), 19).unwrap();
    let mut d = Driver::new(s, Instant::now());
    d.add(1, MS);
    d.add(2, MS);
    d.run();
    let st = d.s.stats();
    assert_eq!(st.useful_bytes, groups / 2 * GROUP_SIZE);
    assert_eq!(st.duplicate_groups, 0);
    assert!(Scheduler::<u32>::new(100, Bitfield::new(3), config(), 0).is_err());
}

#[test]
fn streaming_window_first_in_order() {
    let cfg = SchedulerConfig {
        stream_window: 32 * GROUP_SIZE,
        stream_readahead: 0,
        max_request_groups: 8,
        min_queue_bytes: 64 * GROUP_SIZE,
        ..config()
    };
    let mut s = sched(1024, cfg, 21);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    assert!(s.set_playhead(Some(500 * GROUP_SIZE + 7), t0).is_empty());
    let a = s.requests_for(&1, t0);
    let first: Vec<u64> = groups_of(&a.requests).into_iter().take(32).collect();
    assert_eq!(first, (500..532).collect::<Vec<_>>(), "window in order");
    s.check_invariants().unwrap();
    // A seek: requests queued outside the new window are cancelled.
    let cancels = s.set_playhead(Some(100 * GROUP_SIZE), t0 + MS);
    assert!(!cancels.is_empty());
    assert!(
        cancels
            .iter()
            .all(|c| c.groups.end <= 100 || c.groups.start >= 132)
    );
    assert_eq!(s.outstanding(&1).len(), 1, "the request being served stays");
    let a = s.requests_for(&1, t0 + MS);
    assert_eq!(a.requests[0].groups.start, 100);
    s.check_invariants().unwrap();
    // Back to normal.
    assert!(s.set_playhead(None, t0 + MS).is_empty());
}

#[test]
fn request_failure_and_peer_leaving_reassign() {
    let mut s = sched(128, config(), 23);
    let t0 = Instant::now();
    seed_peer(&mut s, 1, t0);
    let a = s.requests_for(&1, t0);
    assert!(s.on_request_failed(&1, a.requests[0].id, t0));
    assert!(!s.on_request_failed(&1, a.requests[0].id, t0));
    s.check_invariants().unwrap();
    seed_peer(&mut s, 2, t0);
    let b = s.requests_for(&2, t0);
    assert!(groups_of(&b.requests).contains(&a.requests[0].groups.start));
    let stats = s.remove_peer(&2, t0).unwrap();
    assert_eq!(stats.requests, b.requests.len() as u64);
    s.check_invariants().unwrap();
    let again = s.requests_for(&1, t0);
    assert!(groups_of(&again.requests).contains(&a.requests[0].groups.start));
}

#[test]
fn peer_table_is_bounded() {
    let cfg = SchedulerConfig {
        max_peers: 2,
        ..config()
    };
    let mut s = sched(8, cfg, 0);
    let t0 = Instant::now();
    s.add_peer(1, t0).unwrap();
    s.add_peer(2, t0).unwrap();
    assert_eq!(s.add_peer(3, t0), Err(PeerError::Full(2)));
    assert_eq!(s.add_peer(2, t0), Err(PeerError::AlreadyAdded));
    assert!(matches!(
        s.on_bitfield(&1, Bitfield::new(9), t0),
        Err(PeerError::WrongLength { .. })
    ));
}

#[test]
fn empty_and_tiny_blobs_complete() {
    for size in [0u64, 1, GROUP_SIZE, GROUP_SIZE + 1] {
        let s = Scheduler::new(size, Bitfield::new(group_count(size)), config(), 0).unwrap();
        let mut d = Driver::new(s, Instant::now());
        d.add(1, MS);
        d.run();
        assert_eq!(d.s.stats().useful_bytes, size);
    }
}

/// Cut-through: groups a peer says are coming to it, and that no connected
/// peer holds, are asked of it ahead, beside its queue and within a budget.
#[test]
fn groups_coming_to_a_peer_are_asked_of_it_ahead() {
    let cfg = SchedulerConfig {
        max_early_groups: 12,
        min_request_groups: 4,
        ..config()
    };
    let t0 = Instant::now();
    // 256 groups, pieces of 16.
    let mut s = sched(256, cfg.clone(), 5);
    let mut has1 = Bitfield::new(256);
    has1.set_range(0..16);
    let mut has2 = Bitfield::new(256);
    has2.set_range(16..32);
    s.add_peer(1, t0).unwrap();
    s.on_bitfield(&1, has1, t0).unwrap();
    s.add_peer(2, t0).unwrap();
    s.on_bitfield(&2, has2, t0).unwrap();
    // Peer 1 expects 20..24 (peer 2 holds them), 40..60 (across a piece
    // boundary at 48) and groups past the blob (clipped).
    for r in [20..24, 40..60, 250..300] {
        s.on_coming(&1, r).unwrap();
    }
    assert_eq!(s.on_coming(&9, 0..1), Err(PeerError::Unknown));
    let a = s.requests_for(&1, t0);
    s.check_invariants().unwrap();
    let early = s.early_requests(&1);
    let early_groups = groups_of(&early);
    assert_eq!(early_groups.len(), 12, "the budget, no more");
    assert!(
        early
            .iter()
            .all(|r| r.groups.end <= 48 || r.groups.start >= 48),
        "one piece per request: {early:?}"
    );
    assert!(
        early_groups.iter().all(|g| (40..60).contains(g)),
        "{early:?}"
    );
    assert!(
        early
            .iter()
            .all(|e| a.requests.iter().any(|r| r.id == e.id)),
        "early requests are sent like the others"
    );
    // They are not the peer's queue: its pending work is what it holds.
    let queued = groups_of(&s.outstanding(&1));
    assert!(queued.iter().all(|&g| g < 16), "{queued:?}");
    assert_eq!(s.pending_groups(&1), queued.len() as u64);
    let expected = s.expected();
    assert!(queued.iter().all(|&g| expected.get(g)));
    assert!(
        early_groups.iter().all(|&g| !expected.get(g)),
        "what is asked ahead is not told coming in turn (two peers would wait for each other)"
    );

    // Peer 2 does not re-ask what is already asked of peer 1 ahead.
    s.on_have(&2, 40..44).unwrap();
    let b = s.requests_for(&2, t0);
    assert!(groups_of(&b.requests).iter().all(|g| !(40..52).contains(g)));
    s.check_invariants().unwrap();

    // An early request ends as its groups verify; the budget then asks for more.
    let first = early[0].clone();
    for g in first.groups.clone() {
        let cancels = s.on_group_verified(&1, g, t0 + 500 * MS);
        assert!(cancels.is_empty());
    }
    s.check_invariants().unwrap();
    assert!(s.early_requests(&1).iter().all(|r| r.id != first.id));
    s.requests_for(&1, t0 + 500 * MS);
    let more = groups_of(&s.early_requests(&1));
    assert_eq!(more.len(), 12, "{more:?}");
    assert!(more.iter().all(|g| !first.groups.contains(g)));
    s.check_invariants().unwrap();

    // A failed early request is not asked ahead again.
    let failed = s.early_requests(&1)[0].clone();
    assert!(s.on_request_failed(&1, failed.id, t0 + 600 * MS));
    s.requests_for(&1, t0 + 600 * MS);
    let after = groups_of(&s.early_requests(&1));
    assert!(
        after.iter().all(|g| !failed.groups.contains(g)),
        "{after:?}"
    );
    s.check_invariants().unwrap();

    // Waiting is not stalling: at the early timeout the early requests go
    // (to cancel), and the peer is not snubbed for it.
    let late = t0 + 600 * MS + cfg.early_timeout;
    for r in s.outstanding(&1) {
        for g in r.groups {
            s.on_group_verified(&1, g, late - 10 * MS);
        }
    }
    let waiting = s.early_requests(&1);
    assert!(!waiting.is_empty());
    let poll = s.poll(late);
    assert!(
        waiting
            .iter()
            .all(|w| poll.timed_out.iter().any(|t| t.id == w.id))
    );
    assert!(s.early_requests(&1).is_empty());
    assert_eq!(s.peer_stats(&1).unwrap().timeouts, 0);
    assert!(s.stats().early_requests >= 4);
    s.check_invariants().unwrap();

    // Off with a budget of 0.
    let mut s = sched(
        256,
        SchedulerConfig {
            max_early_groups: 0,
            ..cfg
        },
        5,
    );
    s.add_peer(1, t0).unwrap();
    s.on_coming(&1, 40..60).unwrap();
    s.requests_for(&1, t0);
    assert!(s.early_requests(&1).is_empty());
}

/// What a peer said is coming and then announced it has is asked of it in
/// its queue; a peer that leaves takes its early requests with it.
#[test]
fn coming_groups_once_held_are_ordinary_and_leave_with_the_peer() {
    let t0 = Instant::now();
    let mut s = sched(256, config(), 6);
    s.add_peer(1, t0).unwrap();
    s.on_bitfield(&1, Bitfield::new(256), t0).unwrap();
    s.on_coming(&1, 0..8).unwrap();
    s.requests_for(&1, t0);
    let early = groups_of(&s.early_requests(&1));
    assert!(
        !early.is_empty() && early.iter().all(|&g| g < 8),
        "{early:?}"
    );
    s.on_have(&1, 0..16).unwrap();
    s.requests_for(&1, t0);
    let queued = groups_of(&s.outstanding(&1));
    assert!(
        queued.iter().all(|g| !early.contains(g)),
        "asked once: {queued:?}"
    );
    s.check_invariants().unwrap();
    s.remove_peer(&1, t0).unwrap();
    s.check_invariants().unwrap();
    assert_eq!(s.expected().count_ones(), 0, "its groups are open again");
}
