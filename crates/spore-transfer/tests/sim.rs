//! A deterministic swarm simulation: a downloader running the scheduler and N
//! simulated peers with given upload rates and round-trip times, on a virtual
//! clock stepped from event to event (no real time, no threads).
//!
//! Each peer serves the requests it received in order, one 16 KiB group at a
//! time at its current rate; a group reaches the downloader half an RTT after
//! it was sent, a request or a cancel reaches the peer half an RTT after the
//! scheduler issued it. A cancelled request stops after the group on the wire.
#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use spore_core::{Bitfield, GROUP_SIZE, group_count};
use spore_transfer::scheduler::{Request, RequestId, Scheduler, SchedulerConfig};

const MBIT: f64 = 1_000_000.0 / 8.0;
const MS: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct PeerSpec {
    /// (from, bytes per second): the rate changes at these times.
    rates: Vec<(Duration, f64)>,
    rtt: Duration,
    /// Groups it has (None: all).
    has: Option<Bitfield>,
    /// Sends bad data for every `n`th group it serves.
    liar_every: Option<u64>,
    /// Disconnects at this time.
    leaves_at: Option<Duration>,
}

impl PeerSpec {
    fn seed(mbit: f64, rtt_ms: u64) -> Self {
        Self {
            rates: vec![(Duration::ZERO, mbit * MBIT)],
            rtt: MS * rtt_ms as u32,
            has: None,
            liar_every: None,
            leaves_at: None,
        }
    }

    fn rate_at(&self, t: Duration) -> f64 {
        self.rates
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map_or(0.0, |r| r.1)
    }
}

#[derive(Debug)]
enum Ev {
    RequestArrives(usize, Request<usize>),
    CancelArrives(usize, RequestId),
    GroupServed(usize, u64),
    Deliver(usize, u64, bool),
    Leave(usize),
    Tick,
    /// The player seeks to this byte offset.
    Seek(u64),
}

struct SimPeer {
    spec: PeerSpec,
    queue: VecDeque<(RequestId, u64, u64)>, // id, next group, end
    serving: bool,
    served: u64,
    gone: bool,
}

#[derive(Debug, Default)]
struct Report {
    time: Duration,
    ideal: Duration,
    goodput: f64,
    duplicate_bytes: u64,
    duplicate_pct: f64,
    steals: u64,
    endgame: u64,
    timeouts: u64,
    per_peer: Vec<u64>,
    bad_groups: Vec<u32>,
    banned: Vec<bool>,
}

struct Sim {
    s: Scheduler<usize>,
    t0: Instant,
    now: Duration,
    seq: u64,
    events: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    payloads: Vec<Option<Ev>>,
    peers: Vec<SimPeer>,
    size: u64,
    per_peer: Vec<u64>,
    bad: Vec<u32>,
    banned: Vec<bool>,
    /// Streaming: groups the player waits for, since when.
    watch: Option<(std::ops::Range<u64>, Duration)>,
    /// How long each wait for the first 4 MiB after a seek took.
    playable_after: Vec<Duration>,
}

impl Sim {
    fn new(size: u64, specs: Vec<PeerSpec>, config: SchedulerConfig, seed: u64) -> Self {
        let groups = group_count(size);
        let s = Scheduler::new(size, Bitfield::new(groups), config, seed).unwrap();
        let n = specs.len();
        let mut sim = Self {
            s,
            t0: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: Vec::new(),
            peers: specs
                .into_iter()
                .map(|spec| SimPeer {
                    spec,
                    queue: VecDeque::new(),
                    serving: false,
                    served: 0,
                    gone: false,
                })
                .collect(),
            size,
            per_peer: vec![0; n],
            bad: vec![0; n],
            banned: vec![false; n],
            watch: None,
            playable_after: Vec::new(),
        };
        for i in 0..n {
            let t0 = sim.t0;
            sim.s.add_peer(i, t0).unwrap();
            let has = sim.peers[i]
                .spec
                .has
                .clone()
                .unwrap_or_else(|| Bitfield::full(groups));
            sim.s.on_bitfield(&i, has, t0).unwrap();
            sim.s.on_rtt(&i, sim.peers[i].spec.rtt);
            if let Some(at) = sim.peers[i].spec.leaves_at {
                sim.at(at, Ev::Leave(i));
            }
        }
        sim.at(Duration::ZERO, Ev::Tick);
        sim
    }

    fn at(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.payloads.push(Some(ev));
        self.events
            .push(Reverse((t, self.seq, self.payloads.len() - 1)));
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn send_cancels(&mut self, cancels: Vec<Request<usize>>) {
        for c in cancels {
            let half = self.peers[c.peer].spec.rtt / 2;
            self.at(self.now + half, Ev::CancelArrives(c.peer, c.id));
        }
    }

    fn pump(&mut self) {
        let now = self.instant();
        for i in 0..self.peers.len() {
            if self.peers[i].gone || self.banned[i] {
                continue;
            }
            let a = self.s.requests_for(&i, now);
            self.send_cancels(a.cancels);
            let half = self.peers[i].spec.rtt / 2;
            for r in a.requests {
                self.at(self.now + half, Ev::RequestArrives(i, r));
            }
        }
    }

    fn serve_next(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.gone || p.serving {
            return;
        }
        let Some(&(_, g, _)) = p.queue.front() else {
            return;
        };
        let len = (self.size - (g * GROUP_SIZE).min(self.size)).min(GROUP_SIZE);
        let rate = p.spec.rate_at(self.now);
        if rate <= 0.0 {
            return; // stalled forever
        }
        p.serving = true;
        let t = self.now + Duration::from_secs_f64(len as f64 / rate);
        self.at(t, Ev::GroupServed(i, g));
    }

    fn run(&mut self, limit: Duration) -> Report {
        while let Some(Reverse((t, _, idx))) = self.events.pop() {
            assert!(t <= limit, "simulation did not finish within {limit:?}");
            self.now = t;
            let Some(ev) = self.payloads[idx].take() else {
                continue;
            };
            match ev {
                Ev::RequestArrives(i, r) => {
                    self.peers[i]
                        .queue
                        .push_back((r.id, r.groups.start, r.groups.end));
                    self.serve_next(i);
                }
                Ev::CancelArrives(i, id) => {
                    let p = &mut self.peers[i];
                    // The request being served stops after the group on the wire.
                    p.queue.retain(|q| q.0 != id);
                }
                Ev::GroupServed(i, g) => {
                    let p = &mut self.peers[i];
                    p.serving = false;
                    p.served += 1;
                    let bad = p
                        .spec
                        .liar_every
                        .is_some_and(|n| p.served.is_multiple_of(n));
                    if let Some(front) = p.queue.front_mut()
                        && front.1 == g
                    {
                        front.1 += 1;
                        if front.1 == front.2 {
                            p.queue.pop_front();
                        }
                    }
                    let half = p.spec.rtt / 2;
                    self.at(self.now + half, Ev::Deliver(i, g, bad));
                    self.serve_next(i);
                }
                Ev::Deliver(i, g, bad) => {
                    if self.banned[i] || self.peers[i].gone {
                        continue;
                    }
                    let now = self.instant();
                    if bad {
                        self.bad[i] += 1;
                        let out = self.s.on_bad_group(&i, g, now);
                        assert_eq!(out.bad_groups, self.bad[i], "blame is precise");
                        if out.banned {
                            self.banned[i] = true;
                            self.peers[i].gone = true;
                        } else {
                            self.send_cancels(out.cancels);
                        }
                    } else {
                        let len = (self.size - (g * GROUP_SIZE).min(self.size)).min(GROUP_SIZE);
                        self.per_peer[i] += len;
                        let cancels = self.s.on_group_verified(&i, g, now);
                        self.send_cancels(cancels);
                    }
                    if let Some((range, since)) = self.watch.clone()
                        && self.s.verified().all_set(range)
                    {
                        self.playable_after.push(self.now - since);
                        self.watch = None;
                    }
                    if self.s.is_complete() {
                        break;
                    }
                    self.pump();
                }
                Ev::Leave(i) => {
                    self.peers[i].gone = true;
                    self.s.remove_peer(&i, self.instant());
                    self.pump();
                }
                Ev::Seek(offset) => {
                    let cancels = self.s.set_playhead(Some(offset), self.instant());
                    self.send_cancels(cancels);
                    let start = offset / GROUP_SIZE;
                    let end = (start + (4 << 20) / GROUP_SIZE).min(group_count(self.size));
                    self.watch = Some((start..end, self.now));
                    self.pump();
                }
                Ev::Tick => {
                    let poll = self.s.poll(self.instant());
                    self.send_cancels(poll.timed_out);
                    self.pump();
                    self.at(self.now + MS * 50, Ev::Tick);
                }
            }
        }
        assert!(self.s.is_complete(), "download did not complete");
        self.s.check_invariants().unwrap();
        let st = self.s.stats();
        let ideal = self.ideal();
        let time = self.now;
        Report {
            time,
            ideal,
            goodput: ideal.as_secs_f64() / time.as_secs_f64(),
            duplicate_bytes: st.duplicate_bytes,
            duplicate_pct: 100.0 * st.duplicate_bytes as f64 / self.size as f64,
            steals: st.steals,
            endgame: st.endgame_requests,
            timeouts: st.timeouts,
            per_peer: self.per_peer.clone(),
            bad_groups: self.bad.clone(),
            banned: self.banned.clone(),
        }
    }

    /// Time for the honest peers' total upload (as it changes) to carry the blob.
    fn ideal(&self) -> Duration {
        let step = MS;
        let mut t = Duration::ZERO;
        let mut carried = 0.0;
        while carried < self.size as f64 {
            let total: f64 = self
                .peers
                .iter()
                .filter(|p| p.spec.liar_every.is_none())
                .filter(|p| p.spec.leaves_at.is_none_or(|l| l > t))
                .map(|p| p.spec.rate_at(t))
                .sum();
            carried += total * step.as_secs_f64();
            t += step;
        }
        t
    }
}

fn print(name: &str, r: &Report) {
    let mib: Vec<String> = r
        .per_peer
        .iter()
        .map(|b| format!("{:.1}", *b as f64 / (1 << 20) as f64))
        .collect();
    println!(
        "{name}: {:.2} s (ideal {:.2} s, goodput {:.1}% of the seeds' upload), duplicates {} KiB ({:.3}%), steals {}, endgame requests {}, timeouts {}, MiB per peer [{}], bad groups {:?}, banned {:?}",
        r.time.as_secs_f64(),
        r.ideal.as_secs_f64(),
        100.0 * r.goodput,
        r.duplicate_bytes / 1024,
        r.duplicate_pct,
        r.steals,
        r.endgame,
        r.timeouts,
        mib.join(", "),
        r.bad_groups,
        r.banned,
    );
}

#[test]
fn fan_in_four_seeds_one_slows_to_5_mbit() {
    let size = 256 << 20;
    let mut specs: Vec<PeerSpec> = (0..4).map(|_| PeerSpec::seed(100.0, 20)).collect();
    // Ideal at 400 Mbit/s: 5.4 s; seed 0 drops to 5 Mbit/s at 2.5 s.
    specs[0]
        .rates
        .push((Duration::from_millis(2500), 5.0 * MBIT));
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 1);
    let r = sim.run(Duration::from_secs(60));
    print("fan-in 4 seeds, one 100->5 Mbit/s", &r);
    assert!(r.goodput >= 0.95, "goodput {:.3}", r.goodput);
    assert!(r.duplicate_pct <= 1.0);
    assert!(r.per_peer.iter().all(|&b| b > 0), "all four contribute");
}

#[test]
fn a_liar_is_banned_within_three_bad_groups() {
    let size = 64 << 20;
    let mut specs: Vec<PeerSpec> = (0..4)
        .map(|i| PeerSpec::seed(20.0 + 20.0 * i as f64, 10 + 10 * i as u64))
        .collect();
    let mut liar = PeerSpec::seed(200.0, 5);
    liar.liar_every = Some(3);
    specs.push(liar);
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 2);
    let r = sim.run(Duration::from_secs(60));
    print("4 seeds + 1 liar (every 3rd group bad)", &r);
    assert!(r.banned[4]);
    assert_eq!(r.bad_groups[4], 3, "banned at its third bad group");
    assert!(r.bad_groups[..4].iter().all(|&b| b == 0));
    assert!(r.duplicate_pct <= 1.0);
}

#[test]
fn thirty_percent_liars() {
    let size = 32 << 20;
    let mut specs: Vec<PeerSpec> = (0..7)
        .map(|i| PeerSpec::seed(30.0 + 10.0 * i as f64, 20))
        .collect();
    for every in [1, 2, 5] {
        let mut liar = PeerSpec::seed(100.0, 10);
        liar.liar_every = Some(every);
        specs.push(liar);
    }
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 3);
    let r = sim.run(Duration::from_secs(60));
    print("7 seeds + 3 liars", &r);
    assert!(r.banned[7..].iter().all(|&b| b));
    assert!(r.bad_groups[7..].iter().all(|&b| b == 3));
}

#[test]
fn heterogeneous_partial_seeders() {
    let size = 128 << 20;
    let groups = group_count(size);
    let mut rng = 12345u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut specs = vec![PeerSpec::seed(10.0, 150)];
    for i in 0..7u64 {
        let mut p = PeerSpec::seed(5.0 + 15.0 * i as f64, 5 + 30 * i);
        let mut has = Bitfield::new(groups);
        for g in 0..groups {
            if next() % 100 < 60 {
                has.set(g);
            }
        }
        p.has = Some(has);
        specs.push(p);
    }
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 4);
    let r = sim.run(Duration::from_secs(120));
    print("1 slow seed + 7 partial seeders (60%), RTT 5-185 ms", &r);
    assert!(r.duplicate_pct <= 1.0);
}

#[test]
fn a_seed_leaves_halfway_and_one_stalls() {
    let size = 128 << 20;
    let mut specs: Vec<PeerSpec> = (0..4).map(|_| PeerSpec::seed(50.0, 20)).collect();
    specs[1].leaves_at = Some(Duration::from_secs(1));
    specs[2].rates.push((Duration::from_secs(1), 0.0)); // stalls, never answers again
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 5);
    let r = sim.run(Duration::from_secs(60));
    print("4 seeds, one leaves at 1 s, one stalls at 1 s", &r);
    assert!(r.timeouts >= 1, "the stalled peer's last request timed out");
    assert!(r.duplicate_pct <= 1.0);
}

#[test]
fn streaming_first_4_mib_and_a_seek() {
    let size = 256 << 20;
    let specs: Vec<PeerSpec> = (0..4).map(|_| PeerSpec::seed(100.0, 20)).collect();
    let mut sim = Sim::new(size, specs, SchedulerConfig::default(), 7);
    sim.at(Duration::ZERO, Ev::Seek(0));
    sim.at(Duration::from_secs(2), Ev::Seek(200 << 20));
    let r = sim.run(Duration::from_secs(60));
    print("streaming, 4 seeds at 100 Mbit/s", &r);
    println!(
        "streaming: first 4 MiB playable after {:?}, 4 MiB after a seek to 200 MiB after {:?}",
        sim.playable_after[0], sim.playable_after[1]
    );
    assert_eq!(sim.playable_after.len(), 2);
    assert!(
        sim.playable_after
            .iter()
            .all(|&t| t < Duration::from_millis(1500))
    );
    assert!(r.duplicate_pct <= 1.0);
}

#[test]
fn simulation_is_deterministic() {
    let run = || {
        let mut specs: Vec<PeerSpec> = (0..3)
            .map(|i| PeerSpec::seed(10.0 * (i + 1) as f64, 20))
            .collect();
        specs[0]
            .rates
            .push((Duration::from_millis(500), 1.0 * MBIT));
        let mut sim = Sim::new(8 << 20, specs, SchedulerConfig::default(), 6);
        let r = sim.run(Duration::from_secs(60));
        (r.time, r.per_peer, r.duplicate_bytes, r.steals)
    };
    assert_eq!(run(), run());
}
