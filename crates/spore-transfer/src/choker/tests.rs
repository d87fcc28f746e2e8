//! Unit tests of the choking rules and the token buckets on a virtual clock.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const S: Duration = Duration::from_secs(1);

fn choker(slots: usize, optimistic: usize, seed: u64, now: Instant) -> Choker<u32> {
    let cfg = ChokerConfig {
        upload_slots: slots,
        optimistic_slots: optimistic,
        ..ChokerConfig::default()
    };
    Choker::new(cfg, seed, now)
}

#[test]
fn tit_for_tat_unchokes_the_fastest_uploaders() {
    let t0 = Instant::now();
    let mut c = choker(3, 1, 1, t0);
    c.set_downloading(true);
    for p in 0..8 {
        c.add_peer(p, t0).unwrap();
        c.set_interested(&p, true, t0);
        c.on_downloaded(&p, u64::from(p) * 1000);
    }
    c.rechoke(t0 + S * 10);
    let unchoked: BTreeSet<u32> = c.unchoked().into_iter().collect();
    assert!(
        unchoked.is_superset(&BTreeSet::from([5, 6, 7])),
        "{unchoked:?}"
    );
    assert_eq!(unchoked.len(), 4, "3 regular + 1 optimistic");
    let opt = c.optimistic()[0];
    assert!(opt < 5);
    // Rates change: peer 0 becomes the best uploader.
    c.on_downloaded(&0, 1_000_000);
    let events = c.rechoke(t0 + S * 20);
    assert!(c.is_unchoked(&0));
    assert!(!events.is_empty());
    assert_eq!(c.rates(&0).map(|r| r.0), Some(100_000.0));
}

#[test]
fn a_choked_peer_is_refused_and_requests_are_bounded() {
    let t0 = Instant::now();
    let mut c = choker(1, 0, 1, t0);
    c.add_peer(1, t0).unwrap();
    c.add_peer(2, t0).unwrap();
    assert_eq!(c.begin_request(&1), Err(Refusal::Choked));
    assert_eq!(c.begin_request(&9), Err(Refusal::Unknown));
    // A free slot is taken at once.
    assert_eq!(c.set_interested(&1, true, t0), vec![ChokeEvent::Unchoke(1)]);
    assert!(c.set_interested(&2, true, t0).is_empty(), "no free slot");
    for _ in 0..16 {
        c.begin_request(&1).unwrap();
    }
    assert_eq!(c.begin_request(&1), Err(Refusal::Busy));
    c.end_request(&1);
    c.begin_request(&1).unwrap();
    // Leaving frees the slot for the next interested peer.
    assert_eq!(c.remove_peer(&1, t0), vec![ChokeEvent::Unchoke(2)]);
    assert_eq!(
        c.set_interested(&2, false, t0),
        vec![ChokeEvent::Choke(2)],
        "losing interest chokes"
    );
}

#[test]
fn seeding_rotates_round_robin() {
    let t0 = Instant::now();
    let mut c = choker(4, 0, 2, t0);
    for p in 0..8 {
        c.add_peer(p, t0).unwrap();
        c.set_interested(&p, true, t0);
    }
    let mut turns: BTreeMap<u32, u32> = BTreeMap::new();
    for i in 1..=4 {
        c.rechoke(t0 + S * 10 * i);
        for p in c.unchoked() {
            *turns.entry(p).or_default() += 1;
        }
    }
    assert_eq!(turns.len(), 8, "everyone had a turn: {turns:?}");
    assert!(turns.values().all(|&n| n == 2), "{turns:?}");
}

#[test]
fn seeding_fastest_upload_keeps_fast_peers() {
    let t0 = Instant::now();
    let cfg = ChokerConfig {
        upload_slots: 2,
        optimistic_slots: 0,
        seeding: SeedChoking::FastestUpload,
        ..ChokerConfig::default()
    };
    let mut c = Choker::new(cfg, 3, t0);
    for p in 0..5 {
        c.add_peer(p, t0).unwrap();
        c.set_interested(&p, true, t0);
    }
    for i in 1..=3 {
        c.on_uploaded(&3, 5000);
        c.on_uploaded(&4, 9000);
        c.rechoke(t0 + S * 10 * i);
        assert_eq!(c.unchoked(), vec![3, 4]);
    }
}

#[test]
fn optimistic_unchoke_rotates_every_30s_and_prefers_new_peers() {
    let t0 = Instant::now();
    let mut c = choker(1, 1, 4, t0);
    c.set_downloading(true);
    for p in 0..10 {
        c.add_peer(p, t0).unwrap();
        c.set_interested(&p, true, t0);
    }
    let mut history = Vec::new();
    let mut next = t0;
    for i in 1..=12u32 {
        let now = t0 + S * 10 * i;
        c.on_downloaded(&0, 10_000);
        let poll = c.poll(now);
        assert_eq!(poll.next_deadline, now + S * 10);
        if i % 3 == 1 {
            next = now;
        }
        let _ = next;
        history.push(c.optimistic()[0]);
    }
    // Stable within a 30 s period, rotated at its end.
    for chunk in history.chunks(3) {
        assert!(chunk.iter().all(|&p| p == chunk[0]), "{history:?}");
        assert_ne!(chunk[0], 0, "the regular slot holder is not optimistic");
    }
    assert!(
        history
            .chunks(3)
            .map(|c| c[0])
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    );

    // Newly connected peers are three times as likely.
    let mut new_hits = 0;
    let trials = 300;
    for seed in 0..trials {
        let mut c = choker(0, 1, seed, t0);
        for p in 0..4 {
            c.add_peer(p, t0).unwrap();
            c.set_interested(&p, true, t0);
        }
        let later = t0 + S * 120;
        for p in 4..8 {
            c.add_peer(p, later).unwrap();
            c.set_interested(&p, true, later);
        }
        c.rechoke(later + S);
        new_hits += u32::from(c.optimistic()[0] >= 4);
    }
    // Expected 3/4 of the trials.
    assert!((195..=255).contains(&new_hits), "{new_hits}/{trials}");
}

#[test]
fn peer_table_is_bounded() {
    let t0 = Instant::now();
    let cfg = ChokerConfig {
        max_peers: 2,
        ..ChokerConfig::default()
    };
    let mut c = Choker::new(cfg, 0, t0);
    c.add_peer(1, t0).unwrap();
    assert_eq!(c.add_peer(1, t0), Err(ChokerError::AlreadyAdded));
    c.add_peer(2, t0).unwrap();
    assert_eq!(c.add_peer(3, t0), Err(ChokerError::Full(2)));
}

#[test]
fn token_bucket_holds_its_rate_with_a_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(1_000_000, 100_000);
    assert!(b.try_take(100_000, t0).is_ok(), "starts full");
    let wait = b.try_take(50_000, t0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(50));
    assert!(b.try_take(50_000, t0 + wait).is_ok());
    // Over 10 s of greedy 16 KiB takes, about 10 MB (+ the burst) passes.
    let mut now = t0 + wait;
    let mut total = 0u64;
    let end = now + S * 10;
    while now < end {
        match b.try_take(16_384, now) {
            Ok(()) => total += 16_384,
            Err(w) => now += w,
        }
    }
    assert!((9_900_000..=10_150_000).contains(&total), "{total}");
    // Larger than the burst: allowed when full, then in debt.
    let mut b = TokenBucket::new(1000, 100);
    assert!(b.try_take(1000, t0).is_ok());
    assert_eq!(
        b.try_take(1, t0 + S / 2).unwrap_err(),
        Duration::from_millis(401)
    );
    assert!(TokenBucket::unlimited().try_take(u64::MAX, t0).is_ok());
}

#[test]
fn rate_limiter_applies_global_and_per_peer_limits() {
    let t0 = Instant::now();
    let mut l: RateLimiter<u32> = RateLimiter::new(Some((3000, 3000)), Some((2000, 2000)), 2);
    assert!(l.try_take(&1, 2000, t0).is_ok());
    assert!(l.try_take(&1, 1, t0).is_err(), "peer 1 at its limit");
    assert!(l.try_take(&2, 1000, t0).is_ok());
    let wait = l.try_take(&2, 1000, t0).unwrap_err();
    assert_eq!(wait, Duration::from_micros(333_334), "global at its limit");
    assert!(l.try_take(&2, 1000, t0 + wait).is_ok());
    // Bounded table: peer 3 shares the overflow bucket.
    assert!(l.try_take(&3, 10, t0 + S).is_ok());
    assert_eq!(l.tracked_peers(), 2);
    l.remove_peer(&1);
    assert_eq!(l.tracked_peers(), 1);
}
