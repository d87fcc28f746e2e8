//! The userspace link emulator: delay, jitter and loss (this kernel has no
//! netem).
//!
//! [`DelayLine`] is the pure part: packets go in with the time they arrived,
//! each is dropped with probability `loss` (a seeded RNG, so a run repeats) or
//! scheduled for `arrival + delay ± jitter`, and come out when the injected
//! clock passes their release time. [`run_relay`] is the I/O around it: it
//! runs inside a host's namespace, reads the packets the host sends from a TUN
//! device (the host's route to the testbed network) and, once released, writes
//! them to the host's veth through a raw IP socket whose packets carry a
//! firewall mark that policy routing sends out the veth (see `net.rs`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// What one direction of a link does to the packets that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkShape {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform offset in `[-jitter, +jitter]`
    /// (never below zero).
    pub jitter: Duration,
    /// Probability that a packet is dropped, in `[0, 1]`.
    pub loss: f64,
    /// Let jitter reorder packets (as netem does). Off by default: packets then
    /// keep their order and a later packet waits for an earlier one's release.
    pub reorder: bool,
    /// At most this many packets wait in the line; more are dropped (tail drop).
    pub queue_packets: usize,
}

impl Default for LinkShape {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: false,
            queue_packets: 10_000,
        }
    }
}

/// What [`DelayLine::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued; released at this time (on the line's clock).
    Queued(Duration),
    /// Dropped by the loss model.
    Lost,
    /// Dropped because the line was full.
    Overflow,
}

/// Counters of a [`DelayLine`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineStats {
    pub offered: u64,
    pub lost: u64,
    pub overflowed: u64,
    pub released: u64,
}

#[derive(Debug)]
struct Entry<T> {
    release: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // reversed: BinaryHeap is a max-heap and the earliest release comes first
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

/// A bounded queue ordered by release time, with seeded loss and jitter.
/// Time is whatever the caller says it is (a `Duration` since any epoch).
#[derive(Debug)]
pub struct DelayLine<T> {
    shape: LinkShape,
    rng: StdRng,
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    last_release: Duration,
    stats: LineStats,
}

impl<T> DelayLine<T> {
    pub fn new(shape: LinkShape, seed: u64) -> Self {
        Self {
            shape,
            rng: StdRng::seed_from_u64(seed),
            heap: BinaryHeap::new(),
            seq: 0,
            last_release: Duration::ZERO,
            stats: LineStats::default(),
        }
    }

    pub fn shape(&self) -> &LinkShape {
        &self.shape
    }

    /// Changes the shape for packets offered from now on.
    pub fn set_shape(&mut self, shape: LinkShape) {
        self.shape = shape;
    }

    pub fn stats(&self) -> LineStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// A packet arrived at `now`.
    pub fn offer(&mut self, now: Duration, item: T) -> Verdict {
        self.stats.offered += 1;
        if self.shape.loss > 0.0 && self.rng.random_bool(self.shape.loss.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        if self.heap.len() >= self.shape.queue_packets {
            self.stats.overflowed += 1;
            return Verdict::Overflow;
        }
        let mut delay = self.shape.delay;
        if !self.shape.jitter.is_zero() {
            let j = self.shape.jitter.as_secs_f64();
            let offset = self.rng.random_range(-j..=j);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        let mut release = now + delay;
        if !self.shape.reorder {
            release = release.max(self.last_release);
        }
        self.last_release = self.last_release.max(release);
        self.seq += 1;
        self.heap.push(Entry {
            release,
            seq: self.seq,
            item,
        });
        Verdict::Queued(release)
    }

    /// When the next packet is due, if any waits.
    pub fn next_release(&self) -> Option<Duration> {
        self.heap.peek().map(|e| e.release)
    }

    /// The next packet due at or before `now`.
    pub fn pop_ready(&mut self, now: Duration) -> Option<T> {
        if self.heap.peek()?.release > now {
            return None;
        }
        self.stats.released += 1;
        self.heap.pop().map(|e| e.item)
    }
}

/// The destination of an IPv4 packet, or `None` for anything else.
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}

/// Settings of one relay process.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name of the TUN device to create.
    pub tun: String,
    pub mtu: u16,
    /// Firewall mark on the relay's raw socket; policy routing sends marked
    /// packets out the veth instead of back into the TUN.
    pub mark: u32,
    pub shape: LinkShape,
    pub seed: u64,
    /// Where to write the line's counters (JSON) once a second.
    pub stats_file: Option<std::path::PathBuf>,
}

/// Runs the relay until the process is killed or the TUN device fails.
/// Prints `ready` on stdout once the TUN device exists.
pub fn run_relay(config: &RelayConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::sync::mpsc;

    let tun = tun_rs::DeviceBuilder::new()
        .name(&config.tun)
        .mtu(config.mtu)
        .build_sync()
        .with_context(|| format!("creating TUN device {}", config.tun))?;
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(255)), // IPPROTO_RAW: we send whole IP packets
    )
    .context("opening a raw IP socket")?;
    socket.set_mark(config.mark).context("setting SO_MARK")?;
    println!("ready");
    std::io::stdout().flush().ok();

    // the reader thread only reads; the line is owned by this thread
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(4096);
    let mtu = usize::from(config.mtu).max(1500) + 64;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; mtu];
        loop {
            match tun.recv(&mut buf) {
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });

    let epoch = Instant::now();
    let mut line: DelayLine<Vec<u8>> = DelayLine::new(config.shape, config.seed);
    let mut send_errors = 0u64;
    let mut last_stats = Instant::now();
    loop {
        let now = epoch.elapsed();
        let received = match line.next_release() {
            Some(due) if due <= now => None,
            Some(due) => match rx.recv_timeout(due - now) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some((at, packet)) = received {
            line.offer(at.duration_since(epoch), packet);
            // take everything already waiting without sleeping in between
            while let Ok((at, packet)) = rx.try_recv() {
                line.offer(at.duration_since(epoch), packet);
            }
        }
        let now = epoch.elapsed();
        while let Some(packet) = line.pop_ready(now) {
            let Some(dst) = ipv4_destination(&packet) else {
                continue;
            };
            let addr = socket2::SockAddr::from(SocketAddrV4::new(dst, 0));
            // ENOBUFS when the veth's rate-limit queue is full: the packet is
            // dropped, as a router would
            if socket.send_to(&packet, &addr).is_err() {
                send_errors += 1;
            }
        }
        if let Some(path) = &config.stats_file
            && last_stats.elapsed() >= Duration::from_secs(1)
        {
            last_stats = Instant::now();
            let stats = serde_json::json!({"line": line.stats(), "send_errors": send_errors});
            let _ = std::fs::write(path, stats.to_string());
        }
    }
    anyhow::bail!("the TUN device {} closed", config.tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn packets_wait_for_the_delay_and_keep_their_order() {
        let shape = LinkShape {
            delay: ms(10),
            ..LinkShape::default()
        };
        let mut line = DelayLine::new(shape, 1);
        assert_eq!(line.offer(ms(0), 'a'), Verdict::Queued(ms(10)));
        assert_eq!(line.offer(ms(3), 'b'), Verdict::Queued(ms(13)));
        assert_eq!(line.pop_ready(ms(9)), None);
        assert_eq!(line.next_release(), Some(ms(10)));
        assert_eq!(line.pop_ready(ms(10)), Some('a'));
        assert_eq!(line.pop_ready(ms(12)), None);
        assert_eq!(line.pop_ready(ms(20)), Some('b'));
        assert!(line.is_empty());
        assert_eq!(line.stats().released, 2);
    }

    #[test]
    fn jitter_stays_in_bounds_and_without_reorder_keeps_order() {
        let shape = LinkShape {
            delay: ms(20),
            jitter: ms(5),
            ..LinkShape::default()
        };
        let mut line = DelayLine::new(shape, 7);
        let mut releases = Vec::new();
        for i in 0..1000u64 {
            let now = Duration::from_micros(i * 100);
            match line.offer(now, i) {
                Verdict::Queued(r) => {
                    assert!(r >= now + ms(15), "released too early: {r:?} for {now:?}");
                    releases.push((r, now));
                }
                v => panic!("unexpected {v:?}"),
            }
        }
        // monotone releases; most packets are not held back by a predecessor
        assert!(releases.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut out = Vec::new();
        while let Some(i) = line.pop_ready(Duration::from_secs(10)) {
            out.push(i);
        }
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
        let spread = releases
            .iter()
            .map(|(r, now)| (*r - *now).as_secs_f64())
            .fold((f64::MAX, 0.0f64), |(lo, hi), d| (lo.min(d), hi.max(d)));
        assert!(
            spread.1 - spread.0 > 0.004,
            "jitter had no effect: {spread:?}"
        );
    }

    #[test]
    fn reorder_lets_jitter_swap_packets() {
        let shape = LinkShape {
            delay: ms(20),
            jitter: ms(10),
            reorder: true,
            ..LinkShape::default()
        };
        let mut line = DelayLine::new(shape, 3);
        for i in 0..200u64 {
            line.offer(Duration::from_micros(i * 50), i);
        }
        let mut out = Vec::new();
        while let Some(i) = line.pop_ready(Duration::from_secs(1)) {
            out.push(i);
        }
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).any(|w| w[0] > w[1]), "nothing was reordered");
    }

    #[test]
    fn loss_rate_matches_and_repeats_with_the_seed() {
        let shape = LinkShape {
            loss: 0.1,
            ..LinkShape::default()
        };
        let run = |seed| {
            let mut line = DelayLine::new(shape, seed);
            (0..20_000u32)
                .map(|i| line.offer(Duration::ZERO, i) == Verdict::Lost)
                .collect::<Vec<_>>()
        };
        let a = run(42);
        let lost = a.iter().filter(|l| **l).count();
        assert!((1_800..2_200).contains(&lost), "lost {lost} of 20000");
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
    }

    #[test]
    fn a_full_line_drops_the_tail() {
        let shape = LinkShape {
            delay: ms(5),
            queue_packets: 3,
            ..LinkShape::default()
        };
        let mut line = DelayLine::new(shape, 1);
        for i in 0..3 {
            assert!(matches!(line.offer(ms(0), i), Verdict::Queued(_)));
        }
        assert_eq!(line.offer(ms(0), 3), Verdict::Overflow);
        assert_eq!(line.stats().overflowed, 1);
        assert_eq!(line.pop_ready(ms(5)), Some(0));
        assert!(matches!(line.offer(ms(1), 4), Verdict::Queued(_)));
    }

    #[test]
    fn only_ipv4_packets_have_a_destination() {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 77, 0, 3]);
        assert_eq!(ipv4_destination(&p), Some(Ipv4Addr::new(10, 77, 0, 3)));
        p[0] = 0x60;
        assert_eq!(ipv4_destination(&p), None);
        assert_eq!(ipv4_destination(&[0x45; 10]), None);
    }
}
