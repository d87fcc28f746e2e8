//! DHT benchmark: N real nodes in one process on 127.0.0.1, joined through
//! one bootstrap node; keys provided on random nodes, looked up from random
//! other nodes. Prints lookup latency (ms and Kademlia requests until the
//! first provider, p50/p99), success rate, and RSS per idle node.
//!
//! `cargo run --release -p spore-net --example dht_bench -- --nodes 100,500 [--lookups 300] [--keys 50]`
//!
//! All nodes share this machine's cores, so milliseconds include scheduling
//! delay; "requests" is the runtime-independent cost of a lookup.

use std::{
    time::{Duration, Instant},
    vec,
};

use futures::{StreamExt, stream};
use spore_core::Hash;
use spore_net::{CancellationToken, NetConfig, NetNode, multiaddr::Protocol};

/// User + system CPU time of this process, in clock ticks (1/100 s).
fn cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Cheap deterministic PRNG (xorshift), so runs are repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn pct<T: Copy + Ord>(v: &mut [T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}

fn bench_config() -> NetConfig {
    NetConfig {
        max_connections: 1024,
        // Idle connections close (libp2p's default), as in a real network;
        // with hundreds of nodes in one process longer timeouts exhaust the
        // file descriptor limit (20,000 here).
        idle_connection_timeout_secs: 10,
        kad_query_timeout_secs: 10,
        ..NetConfig::for_tests()
    }
}

async fn run(want_nodes: usize, lookups: usize, keys: usize) {
    let mut n = want_nodes;
    let mut rng = Rng(0x5eed_0000 + want_nodes as u64);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let boot = NetNode::start(bench_config(), CancellationToken::new())
        .await
        .expect("boot node");
    let boot_addr = boot
        .handle()
        .listen_addrs()
        .await
        .expect("addrs")
        .remove(0)
        .with(Protocol::P2p(boot.peer_id()));
    let mut addrs = vec![boot_addr.clone()];
    let mut nodes = vec![boot];
    for _ in 1..n {
        // The bootstrap node plus one random earlier node, as a real
        // bootstrap list would spread the load.
        let other = addrs[rng.below(addrs.len())].clone();
        let cfg = NetConfig {
            bootstrap: vec![boot_addr.clone(), other],
            ..bench_config()
        };
        let node = match NetNode::start(cfg, CancellationToken::new()).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("node {} did not start: {e}; stopping here", nodes.len());
                break;
            }
        };
        if let Ok(mut a) = node.handle().listen_addrs().await
            && !a.is_empty()
        {
            addrs.push(a.remove(0).with(Protocol::P2p(node.peer_id())));
        }
        nodes.push(node);
    }
    n = nodes.len();
    let started = t0.elapsed();
    // Each node bootstraps by itself once connected to the bootstrap node;
    // wait (bounded) until every routing table has a useful size, and give
    // laggards one explicit bootstrap.
    let want = (n - 1).min(15);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut tables: Vec<usize>;
    let mut nudged = false;
    loop {
        tables = Vec::new();
        for node in &nodes {
            tables.push(node.handle().routing_table_size().await.unwrap_or(0));
        }
        let low: Vec<usize> = (0..n).filter(|i| tables[*i] < want).collect();
        if low.is_empty() || Instant::now() >= deadline {
            break;
        }
        if !nudged && t0.elapsed() > started + Duration::from_secs(10) {
            nudged = true;
            stream::iter(low.iter().map(|i| nodes[*i].handle().clone()))
                .for_each_concurrent(32, |h| async move {
                    let _ = h.bootstrap().await;
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the join storm (bootstrap lookups, handshakes) settle: all nodes
    // share two cores, and lookups measured during it measure the CPU queue.
    let settle_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let c0 = cpu_ticks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = (cpu_ticks() - c0) as f64 / 2.0;
        if busy < 60.0 || Instant::now() >= settle_deadline {
            break;
        }
    }
    let joined = t0.elapsed();
    let cpu0 = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu_ticks() - cpu0) as f64 / 5.0; // percent of one core
    let rss_idle = rss_bytes().saturating_sub(rss0);

    // Keys provided by random nodes.
    let providers: Vec<(Hash, usize)> = (0..keys)
        .map(|k| {
            (
                Hash::of(format!("bench key {n} {k}").as_bytes()),
                rng.below(n),
            )
        })
        .collect();
    stream::iter(
        providers
            .iter()
            .map(|(h, i)| (*h, nodes[*i].handle().clone())),
    )
    .for_each_concurrent(16, |(h, handle)| async move {
        let _ = handle.start_providing(h).await;
    })
    .await;

    // Lookups from random other nodes.
    let jobs: Vec<(Hash, usize, usize)> = (0..lookups)
        .map(|_| {
            let (h, p) = providers[rng.below(keys)];
            let mut from = rng.below(n);
            if from == p {
                from = (from + 1) % n;
            }
            (h, p, from)
        })
        .collect();
    let results: Vec<(bool, Option<Duration>, Option<u32>, u32)> = stream::iter(jobs)
        .map(|(h, p, from)| {
            let handle = nodes[from].handle().clone();
            let want = nodes[p].peer_id();
            async move {
                match handle.lookup_providers(h, 1, Duration::from_secs(10)).await {
                    Ok(l) => (
                        l.providers.iter().any(|x| x.peer_id == want),
                        l.stats.time_to_first,
                        l.stats.requests_to_first,
                        l.stats.requests,
                    ),
                    Err(_) => (false, None, None, 0),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.0).count();
    let mut ms: Vec<u64> = results
        .iter()
        .filter_map(|r| r.1.map(|d| d.as_micros() as u64))
        .collect();
    let mut reqs: Vec<u32> = results.iter().filter_map(|r| r.2).collect();

    // Mean ping RTT, to express latency in round trips.
    let mut rtts = Vec::new();
    for node in nodes.iter().take(20) {
        if let Ok(peers) = node.handle().peers().await {
            rtts.extend(peers.iter().filter_map(|p| p.latency));
        }
    }
    let rtt_us = if rtts.is_empty() {
        0.0
    } else {
        rtts.iter().map(|d| d.as_micros() as f64).sum::<f64>() / rtts.len() as f64
    };

    let mut t = tables.clone();
    let t_mid = pct(&mut t, 0.5).unwrap_or(0);
    let p50 = |v: &mut Vec<u64>| pct(v, 0.5).map_or(f64::NAN, |x| x as f64 / 1000.0);
    let p99 = |v: &mut Vec<u64>| pct(v, 0.99).map_or(f64::NAN, |x| x as f64 / 1000.0);
    println!("== {n} nodes ==");
    println!(
        "start {:.1}s, joined {:.1}s; routing table size min/p50/max {}/{}/{}",
        started.as_secs_f64(),
        joined.as_secs_f64(),
        t.first().copied().unwrap_or(0),
        t_mid,
        t.last().copied().unwrap_or(0)
    );
    println!(
        "lookups {lookups} over {keys} keys: success {ok}/{lookups} ({:.2}%)",
        100.0 * ok as f64 / lookups.max(1) as f64
    );
    println!(
        "time to first provider: p50 {:.2} ms, p99 {:.2} ms (mean last ping RTT, measured under the same load: {:.2} ms)",
        p50(&mut ms),
        p99(&mut ms),
        rtt_us / 1000.0
    );
    println!(
        "kad requests to first provider: p50 {}, p99 {} (alpha = 3 in flight, so rounds ~ requests/3)",
        pct(&mut reqs, 0.5).unwrap_or(0),
        pct(&mut reqs, 0.99).unwrap_or(0)
    );
    println!("CPU while idle: {idle_cpu:.0}% of one core for {n} nodes");
    println!(
        "RSS: {:.1} MiB for {n} idle nodes = {:.2} MiB per node",
        rss_idle as f64 / (1 << 20) as f64,
        rss_idle as f64 / (1 << 20) as f64 / n as f64
    );

    let t_down = Instant::now();
    stream::iter(nodes)
        .for_each_concurrent(64, |n| n.shutdown())
        .await;
    println!("shutdown {:.1}s", t_down.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = arg("--nodes")
        .unwrap_or_else(|| "100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n >= 2)
        .collect();
    let lookups = arg("--lookups").and_then(|s| s.parse().ok()).unwrap_or(300);
    let keys = arg("--keys")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
        .max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    for n in sizes {
        rt.block_on(run(n, lookups, keys));
    }
}
