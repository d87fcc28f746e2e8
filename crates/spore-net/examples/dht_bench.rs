//! DHT benchmark: N real nodes on 127.0.0.1, joined through one bootstrap
//! node; keys provided on random nodes, looked up from random other nodes.
//! Prints lookup latency (ms and Kademlia requests until the first provider,
//! p50/p99), success rate, and RSS per idle node.
//!
//! `cargo run --release -p spore-net --example dht_bench -- --nodes 100,500 [--processes 4] [--lookups 300] [--keys 50] [--phase-timeout 600] [--idle-timeout 10] [--refresh] [--kill 30]`
//!
//! With `--kill PCT`, PCT% of the nodes (never a provider) then stop at
//! once, and the lookups run again from the survivors, right away: how much
//! content is still found before any routing table is repaired.
//!
//! With `--refresh`, every node runs one full routing refresh after the
//! join (`NetHandle::refresh_routing`), as every node does every 5 minutes
//! (with the old, full join, this phase did not finish within 400 s at 500
//! nodes on the loaded 2-core machine, so it is off by default). For each failed lookup
//! the benchmark records how it ended and how close it got to the nodes
//! holding the provider record, and prints a breakdown.
//!
//! The nodes are spread over `--processes` OS processes (children of this
//! one, running this same binary with `--child`), because one process
//! cannot hold many hundreds of nodes: each needs sockets, and the open-file
//! limit is per process. The parent only coordinates: it passes the first
//! node's address to every child, steps them through the phases together
//! (join, provide, look up, stop) with JSON lines on their stdin and stdout,
//! and merges what they measured. Lookups cross processes: a child looks up
//! keys provided by nodes of every child. Every phase has a deadline; a
//! child that misses it is killed and the size is reported as failed.
//!
//! All nodes share this machine's cores, so milliseconds include scheduling
//! delay; "requests" is the runtime-independent cost of a lookup.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{Args, Rng, percentile};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use spore_core::Hash;
use spore_net::{CancellationToken, Multiaddr, NetConfig, NetHandle, NetNode, NetStatus, PeerId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

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

fn bench_config(idle_timeout_secs: u64) -> NetConfig {
    NetConfig {
        max_connections: 1024,
        // Several processes join at once, all through the first node.
        max_pending_incoming: 512,
        // Idle connections close (10 s by default, libp2p's default), as in
        // a real network; longer timeouts keep hundreds of sockets per
        // process open.
        idle_connection_timeout_secs: idle_timeout_secs,
        // The budget of provide and bootstrap queries (lookups have their
        // own 10 s deadline below). libp2p-kad stores a provider record
        // only after its closest-peers phase ends in time: a provide that
        // times out there is stored on no other node. With a 10 s budget
        // and ~1.7 s round trips on this overloaded machine, most keys of
        // the 500-node run were held by their provider alone.
        kad_query_timeout_secs: 60,
        ..NetConfig::for_tests()
    }
}

fn key_hash(n: usize, k: usize) -> Hash {
    Hash::of(format!("bench key {n} {k}").as_bytes())
}

fn main() {
    let args = Args::from_env();
    if args.get("--child").is_some() {
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
        if let Err(e) = rt.block_on(child::run(&args)) {
            eprintln!("child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let processes = args.parse_or("--processes", 1usize).max(1);
    let plan = parent::Plan {
        lookups: args.parse_or("--lookups", 300usize),
        keys: args.parse_or("--keys", 50usize).max(1),
        timeout: Duration::from_secs(args.parse_or("--phase-timeout", 600u64).max(10)),
        idle_timeout: args.parse_or("--idle-timeout", 10u64).max(1),
        refresh: std::env::args().any(|a| a == "--refresh"),
        kill_percent: args.parse_or("--kill", 0u64).min(90),
    };
    for n in args.sizes("100,500") {
        if let Err(e) = parent::run(n, processes.min(n / 2).max(1), &plan) {
            println!("== {n} nodes: FAILED: {e} ==");
        }
    }
}

/// The coordinating process: spawns the children and merges their numbers.
mod parent {
    use super::*;

    struct Children {
        procs: Vec<Child>,
        stdins: Vec<ChildStdin>,
        lines: mpsc::Receiver<(usize, String)>,
        lines_tx: mpsc::SyncSender<(usize, String)>,
        timeout: Duration,
        idle_timeout: u64,
    }

    impl Children {
        fn spawn(
            &mut self,
            index: usize,
            count: usize,
            n: usize,
            boot: Option<&str>,
        ) -> Result<(), String> {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(exe);
            cmd.args([
                "--child",
                &index.to_string(),
                "--count",
                &count.to_string(),
                "--total",
                &n.to_string(),
                "--idle-timeout",
                &self.idle_timeout.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            if let Some(boot) = boot {
                cmd.args(["--boot", boot]);
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("spawn child {index}: {e}"))?;
            let stdin = child.stdin.take().ok_or("no child stdin")?;
            let stdout = child.stdout.take().ok_or("no child stdout")?;
            let tx = self.lines_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((index, line)).is_err() {
                        break;
                    }
                }
            });
            self.procs.push(child);
            self.stdins.push(stdin);
            Ok(())
        }

        fn send_to(&mut self, index: usize, msg: &Value) -> Result<(), String> {
            let stdin = self.stdins.get_mut(index).ok_or("no such child")?;
            writeln!(stdin, "{msg}")
                .and_then(|()| stdin.flush())
                .map_err(|e| format!("child {index} stdin: {e}"))
        }

        /// The next `event` line from each of `from`, within the phase timeout.
        fn collect(&mut self, event: &str, from: &[usize]) -> Result<Vec<Value>, String> {
            let deadline = Instant::now() + self.timeout;
            let mut got: Vec<Option<Value>> = vec![None; self.procs.len()];
            while from.iter().any(|i| got[*i].is_none()) {
                let left = deadline.saturating_duration_since(Instant::now());
                let (i, line) = self.lines.recv_timeout(left).map_err(|_| {
                    format!("no '{event}' from every child within {:?}", self.timeout)
                })?;
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["event"] == event && from.contains(&i) => got[i] = Some(v),
                    Ok(v) if v["event"] == "error" => {
                        return Err(format!("child {i}: {}", v["message"]));
                    }
                    _ => eprintln!("[child {i}] {line}"),
                }
            }
            Ok(from.iter().filter_map(|i| got[*i].take()).collect())
        }
    }

    impl Drop for Children {
        fn drop(&mut self) {
            // Closing stdin tells a child to stop; one that does not is killed.
            self.stdins.clear();
            let deadline = Instant::now() + Duration::from_secs(30);
            for (i, child) in self.procs.iter_mut().enumerate() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        _ => {
                            eprintln!("child {i} did not stop; killing it");
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// What every size runs through (the command line's options).
    pub(super) struct Plan {
        pub(super) lookups: usize,
        pub(super) keys: usize,
        /// Deadline of each phase.
        pub(super) timeout: Duration,
        pub(super) idle_timeout: u64,
        pub(super) refresh: bool,
        pub(super) kill_percent: u64,
    }

    pub(super) fn run(n: usize, processes: usize, plan: &Plan) -> Result<(), String> {
        let &Plan {
            lookups,
            keys,
            timeout,
            idle_timeout,
            refresh,
            kill_percent,
        } = plan;
        let t0 = Instant::now();
        let (lines_tx, lines) = mpsc::sync_channel(4096);
        let mut kids = Children {
            procs: Vec::new(),
            stdins: Vec::new(),
            lines,
            lines_tx,
            timeout,
            idle_timeout,
        };
        let share = |i: usize| n / processes + usize::from(i < n % processes);
        kids.spawn(0, share(0), n, None)?;
        let boot = kids.collect("boot", &[0])?.remove(0);
        let boot_addr = boot["addr"].as_str().ok_or("boot without addr")?.to_owned();
        for i in 1..processes {
            kids.spawn(i, share(i), n, Some(&boot_addr))?;
        }
        let all: Vec<usize> = (0..processes).collect();
        let started = kids.collect("started", &all)?;
        let all_peers: Vec<PeerId> = started
            .iter()
            .flat_map(|v| v["peers"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str()?.parse().ok())
            .collect();
        let nodes: usize = started
            .iter()
            .filter_map(|v| v["nodes"].as_u64())
            .sum::<u64>() as usize;
        let start_secs = t0.elapsed().as_secs_f64();

        // Join only once every process has started its nodes, so the
        // routing tables can cover all of them.
        for i in 0..processes {
            kids.send_to(i, &json!({"cmd": "join", "processes": processes}))?;
        }
        let joined = kids.collect("joined", &all)?;
        let join_secs = t0.elapsed().as_secs_f64();
        let mut tables: Vec<u64> = joined
            .iter()
            .flat_map(|v| v["tables"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_u64())
            .collect();
        let rss_idle: u64 = joined.iter().filter_map(|v| v["rss_idle"].as_u64()).sum();
        let idle_cpu: f64 = joined.iter().filter_map(|v| v["idle_cpu"].as_f64()).sum();
        let mut refreshed_tables: Vec<u64> = Vec::new();
        let mut refresh_secs = 0.0f64;
        if refresh {
            for i in 0..processes {
                kids.send_to(
                    i,
                    &json!({"cmd": "refresh", "processes": processes, "concurrency": (16 / processes).max(2)}),
                )?;
            }
            for v in kids.collect("refreshed", &all)? {
                refresh_secs = refresh_secs.max(v["secs"].as_f64().unwrap_or(0.0));
                refreshed_tables.extend(
                    v["tables"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_u64),
                );
            }
        }

        // Keys go to processes in proportion to their nodes; each child
        // picks random local nodes to provide them and says which.
        for i in 0..processes {
            let mine: Vec<usize> = (0..keys).filter(|k| k % processes == i).collect();
            kids.send_to(i, &json!({"cmd": "provide", "keys": mine}))?;
        }
        let provided: Vec<Value> = kids
            .collect("provided", &all)?
            .into_iter()
            .flat_map(|v| v["keys"].as_array().cloned().unwrap_or_default())
            .collect();
        if provided.is_empty() {
            return Err("no key was provided".into());
        }
        let key_ids: Vec<u64> = provided.iter().filter_map(|v| v[0].as_u64()).collect();
        for i in 0..processes {
            kids.send_to(i, &json!({"cmd": "holders", "keys": key_ids}))?;
        }
        let mut holders: HashMap<u64, Vec<PeerId>> = HashMap::new();
        for v in kids.collect("holders", &all)? {
            for h in v["holders"].as_array().cloned().unwrap_or_default() {
                let Some(k) = h[0].as_u64() else { continue };
                holders.entry(k).or_default().extend(
                    h[1].as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| p.as_str()?.parse::<PeerId>().ok()),
                );
            }
        }
        let lookup_round = |kids: &mut Children| -> Result<Lookups, String> {
            for i in 0..processes {
                let count = lookups * share(i) / n.max(1);
                kids.send_to(
                    i,
                    &json!({"cmd": "lookup", "count": count, "keys": provided, "concurrency": (16 / processes).max(4)}),
                )?;
            }
            Ok(Lookups::of(&kids.collect("looked_up", &all)?))
        };
        let mut before = lookup_round(&mut kids)?;
        let mut after_kill = None;
        if kill_percent > 0 {
            let keep: Vec<Value> = provided.iter().map(|v| v[1].clone()).collect();
            for i in 0..processes {
                kids.send_to(
                    i,
                    &json!({"cmd": "kill", "percent": kill_percent, "keep": keep}),
                )?;
            }
            let killed: u64 = kids
                .collect("killed", &all)?
                .iter()
                .filter_map(|v| v["killed"].as_u64())
                .sum();
            after_kill = Some((killed, lookup_round(&mut kids)?));
        }

        for i in 0..processes {
            kids.send_to(i, &json!({"cmd": "stop"}))?;
        }
        let t_down = Instant::now();
        kids.collect("stopped", &all)?;
        let down_secs = t_down.elapsed().as_secs_f64();
        drop(kids);

        println!("== {nodes} nodes in {processes} process(es) ==");
        println!(
            "start {start_secs:.1}s, joined {join_secs:.1}s; routing table size min/p50/max {}/{}/{}",
            percentile(&mut tables, 0.0).unwrap_or(0),
            percentile(&mut tables, 0.5).unwrap_or(0),
            percentile(&mut tables, 1.0).unwrap_or(0),
        );
        if refresh {
            println!(
                "after one bootstrap on every node ({refresh_secs:.1}s): routing table size min/p50/max {}/{}/{}",
                percentile(&mut refreshed_tables, 0.0).unwrap_or(0),
                percentile(&mut refreshed_tables, 0.5).unwrap_or(0),
                percentile(&mut refreshed_tables, 1.0).unwrap_or(0),
            );
        }
        // Counted over the whole run: the last round's answers hold them.
        let conn_errors = after_kill
            .as_ref()
            .map_or(&before, |(_, a)| a)
            .conn_errors
            .clone();
        before.print(provided.len());
        print_holders(n, &holders, &all_peers, &provided);
        print_failures(n, &before.failed, &holders, &all_peers);
        if let Some((killed, mut after)) = after_kill {
            println!(
                "-- after {killed} of {nodes} nodes ({kill_percent}%, no provider among them) stopped at once, before any repair --"
            );
            after.print(provided.len());
            print_failures(n, &after.failed, &holders, &all_peers);
        }
        println!("connection errors (all nodes, whole run): {conn_errors:?}");
        println!("CPU while idle: {idle_cpu:.0}% of one core for {nodes} nodes");
        println!(
            "RSS: {:.1} MiB for {nodes} idle nodes = {:.2} MiB per node (each process's growth after start-up, summed)",
            rss_idle as f64 / (1 << 20) as f64,
            rss_idle as f64 / (1 << 20) as f64 / nodes.max(1) as f64
        );
        println!(
            "shutdown {down_secs:.1}s; total {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// One round of lookups, merged from every child's answer.
struct Lookups {
    ok: usize,
    total: usize,
    /// Time to the first provider, per lookup that found one.
    ms: Vec<f64>,
    /// Kademlia requests sent before the first provider was known.
    requests: Vec<u64>,
    /// Mean ping round trip under the same load.
    rtt_ms: f64,
    failed: Vec<Value>,
    tables: Vec<u64>,
    conn_errors: BTreeMap<String, u64>,
}

impl Lookups {
    fn of(looked: &[Value]) -> Self {
        let mut l = Lookups {
            ok: 0,
            total: 0,
            ms: Vec::new(),
            requests: Vec::new(),
            rtt_ms: f64::NAN,
            failed: Vec::new(),
            tables: Vec::new(),
            conn_errors: BTreeMap::new(),
        };
        let mut rtts: Vec<f64> = Vec::new();
        for v in looked {
            for r in v["results"].as_array().cloned().unwrap_or_default() {
                l.total += 1;
                if let Some(t) = r["table"].as_u64() {
                    l.tables.push(t);
                }
                if let Some(us) = r["us"].as_u64() {
                    l.ms.push(us as f64 / 1000.0);
                }
                if let Some(q) = r["req_first"].as_u64() {
                    l.requests.push(q);
                }
                if r["ok"].as_bool() == Some(true) {
                    l.ok += 1;
                } else {
                    l.failed.push(r);
                }
            }
            if let Some(m) = v["connection_errors"].as_object() {
                for (cause, n) in m {
                    *l.conn_errors.entry(cause.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
            rtts.extend(
                v["rtts_us"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_f64),
            );
        }
        if !rtts.is_empty() {
            l.rtt_ms = rtts.iter().sum::<f64>() / rtts.len() as f64 / 1000.0;
        }
        l
    }

    fn print(&mut self, keys: usize) {
        let (ok, total, rtt_ms) = (self.ok, self.total, self.rtt_ms);
        let p50_ms = percentile(&mut self.ms, 0.5).unwrap_or(f64::NAN);
        let p99_ms = percentile(&mut self.ms, 0.99).unwrap_or(f64::NAN);
        println!(
            "lookups {total} over {keys} keys: success {ok}/{total} ({:.2}%)",
            100.0 * ok as f64 / total.max(1) as f64
        );
        println!(
            "time to first provider: p50 {p50_ms:.2} ms, p99 {p99_ms:.2} ms (mean last ping RTT, under the same load: {rtt_ms:.2} ms; p50 {:.1} RTT, p99 {:.1} RTT)",
            p50_ms / rtt_ms,
            p99_ms / rtt_ms,
        );
        println!(
            "kad requests to first provider: p50 {}, p99 {} (alpha = 3 in flight, so rounds ~ requests/3)",
            percentile(&mut self.requests, 0.5).unwrap_or(0),
            percentile(&mut self.requests, 0.99).unwrap_or(0)
        );
        println!(
            "routing table of the asking node at lookup time: min/p50/max {}/{}/{}",
            percentile(&mut self.tables, 0.0).unwrap_or(0),
            percentile(&mut self.tables, 0.5).unwrap_or(0),
            percentile(&mut self.tables, 1.0).unwrap_or(0),
        );
    }
}

/// Kademlia's distance between a peer and a provider key (XOR of SHA-256s).
fn distance(peer: &PeerId, key: &Hash) -> libp2p::kad::KBucketDistance {
    let k = libp2p::kad::KBucketKey::new(libp2p::kad::RecordKey::new(key.as_bytes()));
    libp2p::kad::KBucketKey::from(*peer).distance(&k)
}

/// Rank (0 = closest) of each peer of `all` by distance to `key`.
fn ranks(all: &[PeerId], key: &Hash) -> HashMap<PeerId, usize> {
    let mut by_distance: Vec<(libp2p::kad::KBucketDistance, PeerId)> =
        all.iter().map(|p| (distance(p, key), *p)).collect();
    by_distance.sort();
    by_distance
        .into_iter()
        .enumerate()
        .map(|(i, (_, p))| (p, i))
        .collect()
}

fn key_of(total_nodes: usize, k: u64) -> Hash {
    key_hash(total_nodes, k as usize)
}

/// How many nodes hold each key's provider record, and whether they are the
/// 20 closest to the key (where a lookup looks).
fn print_holders(
    n: usize,
    holders: &HashMap<u64, Vec<PeerId>>,
    all: &[PeerId],
    provided: &[Value],
) {
    let mut counts: Vec<usize> = Vec::new();
    let mut in_top20: Vec<usize> = Vec::new();
    for v in provided {
        let Some(k) = v[0].as_u64() else { continue };
        let key = key_of(n, k);
        let rank = ranks(all, &key);
        let hs = holders.get(&k).cloned().unwrap_or_default();
        counts.push(hs.len());
        in_top20.push(
            hs.iter()
                .filter(|p| rank.get(p).is_some_and(|r| *r < 20))
                .count(),
        );
    }
    println!(
        "provider records per key: holders min/p50/max {}/{}/{}; of them among the key's 20 closest nodes min/p50/max {}/{}/{}",
        percentile(&mut counts, 0.0).unwrap_or(0),
        percentile(&mut counts, 0.5).unwrap_or(0),
        percentile(&mut counts, 1.0).unwrap_or(0),
        percentile(&mut in_top20, 0.0).unwrap_or(0),
        percentile(&mut in_top20, 0.5).unwrap_or(0),
        percentile(&mut in_top20, 1.0).unwrap_or(0),
    );
}

/// Why the failed lookups failed: how each ended, its request failures,
/// the asker's routing table, and how close to the key it got compared with
/// where the records are.
fn print_failures(n: usize, failed: &[Value], holders: &HashMap<u64, Vec<PeerId>>, all: &[PeerId]) {
    if failed.is_empty() {
        println!("failed lookups: none");
        return;
    }
    let mut by_end: BTreeMap<String, usize> = BTreeMap::new();
    let mut with_failures = 0usize;
    let mut failures: Vec<u64> = Vec::new();
    let mut requests: Vec<u64> = Vec::new();
    let mut tables: Vec<u64> = Vec::new();
    let mut elapsed: Vec<u64> = Vec::new();
    let mut reached_holder = 0usize;
    let mut best_rank: Vec<usize> = Vec::new();
    let mut no_closest = 0usize;
    for r in failed {
        *by_end
            .entry(r["end"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        let f = r["failures"].as_u64().unwrap_or(0);
        if f > 0 {
            with_failures += 1;
        }
        failures.push(f);
        requests.push(r["requests"].as_u64().unwrap_or(0));
        tables.push(r["table"].as_u64().unwrap_or(0));
        elapsed.push(r["elapsed_ms"].as_u64().unwrap_or(0));
        let Some(k) = r["key"].as_u64() else { continue };
        let closest: Vec<PeerId> = r["closest"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_str()?.parse().ok())
            .collect();
        if closest.is_empty() {
            no_closest += 1;
            continue;
        }
        let hs = holders.get(&k).cloned().unwrap_or_default();
        if closest.iter().any(|p| hs.contains(p)) {
            reached_holder += 1;
        }
        let rank = ranks(all, &key_of(n, k));
        if let Some(best) = closest.iter().filter_map(|p| rank.get(p)).min() {
            best_rank.push(*best);
        }
    }
    println!(
        "failed lookups: {} — how they ended: {by_end:?}",
        failed.len()
    );
    println!(
        "  with ≥1 failed request: {with_failures}; failed requests p50/max {}/{}; requests p50/max {}/{}; elapsed ms p50/max {}/{}",
        percentile(&mut failures, 0.5).unwrap_or(0),
        percentile(&mut failures, 1.0).unwrap_or(0),
        percentile(&mut requests, 0.5).unwrap_or(0),
        percentile(&mut requests, 1.0).unwrap_or(0),
        percentile(&mut elapsed, 0.5).unwrap_or(0),
        percentile(&mut elapsed, 1.0).unwrap_or(0),
    );
    println!(
        "  asker's routing table p50/min {}/{}; closest peers reported by {} of them, {reached_holder} include a record holder; best rank reached (0 = the key's closest node) p50/max {}/{}",
        percentile(&mut tables, 0.5).unwrap_or(0),
        percentile(&mut tables, 0.0).unwrap_or(0),
        failed.len() - no_closest,
        percentile(&mut best_rank, 0.5).unwrap_or(0),
        percentile(&mut best_rank, 1.0).unwrap_or(0),
    );
}

/// One child process: runs its share of the nodes and does what the parent
/// says, one JSON line per command and per answer.
mod child {
    use super::*;

    async fn say(out: &mut tokio::io::Stdout, v: Value) -> Result<(), String> {
        out.write_all(format!("{v}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())
    }

    fn first_addr_of(addrs: Vec<Multiaddr>, peer: PeerId) -> Option<Multiaddr> {
        addrs
            .into_iter()
            .next()
            .map(|a| a.with(spore_net::multiaddr::Protocol::P2p(peer)))
    }

    pub(super) async fn run(args: &Args) -> Result<(), String> {
        let index: usize = args.parse_or("--child", 0);
        let count: usize = args.parse_or("--count", 1usize).max(1);
        let total: usize = args.parse_or("--total", count);
        let idle_timeout: u64 = args.parse_or("--idle-timeout", 10u64).max(1);
        let mut rng = Rng(0x5eed_0000 + (total as u64) * 1000 + index as u64);
        let mut out = tokio::io::stdout();
        let rss0 = rss_bytes();
        let t0 = Instant::now();

        let mut nodes: Vec<NetNode> = Vec::with_capacity(count);
        let mut addrs: Vec<Multiaddr> = Vec::with_capacity(count);
        let boot_addr: Multiaddr = match args.get("--boot") {
            Some(a) => a.parse().map_err(|e| format!("bad --boot: {e}"))?,
            None => {
                let boot = NetNode::start(bench_config(idle_timeout), CancellationToken::new())
                    .await
                    .map_err(|e| format!("boot node: {e}"))?;
                let addr = first_addr_of(
                    boot.handle()
                        .listen_addrs()
                        .await
                        .map_err(|e| e.to_string())?,
                    boot.peer_id(),
                )
                .ok_or("boot node has no address")?;
                say(&mut out, json!({"event": "boot", "addr": addr.to_string()})).await?;
                addrs.push(addr.clone());
                nodes.push(boot);
                addr
            }
        };
        while nodes.len() < count {
            // The bootstrap node plus one random earlier node of this
            // process, as a real bootstrap list would spread the load.
            let mut bootstrap = vec![boot_addr.clone()];
            if !addrs.is_empty() {
                bootstrap.push(addrs[rng.below(addrs.len())].clone());
            }
            let cfg = NetConfig {
                bootstrap,
                ..bench_config(idle_timeout)
            };
            let node = match NetNode::start(cfg, CancellationToken::new()).await {
                Ok(node) => node,
                Err(e) => {
                    eprintln!(
                        "child {index}: node {} did not start: {e}; stopping here",
                        nodes.len()
                    );
                    break;
                }
            };
            if let Ok(a) = node.handle().listen_addrs().await
                && let Some(a) = first_addr_of(a, node.peer_id())
            {
                addrs.push(a);
            }
            nodes.push(node);
        }
        let mut handles: Vec<NetHandle> = nodes.iter().map(|n| n.handle().clone()).collect();
        say(
            &mut out,
            json!({
                "event": "started",
                "nodes": nodes.len(),
                "secs": t0.elapsed().as_secs_f64(),
                "peers": handles.iter().map(|h| h.local_peer_id().to_string()).collect::<Vec<_>>(),
            }),
        )
        .await?;

        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        // A closed stdin (the parent is gone) means stop.
        while let Ok(Some(line)) = commands.next_line().await {
            let Ok(cmd) = serde_json::from_str::<Value>(&line) else {
                say(
                    &mut out,
                    json!({"event": "error", "message": format!("bad command {line:?}")}),
                )
                .await?;
                continue;
            };
            match cmd["cmd"].as_str() {
                Some("join") => {
                    let processes = cmd["processes"].as_u64().unwrap_or(1).max(1) as f64;
                    let (tables, idle_cpu) = join(&handles, total, processes).await;
                    let rss_idle = rss_bytes().saturating_sub(rss0);
                    say(
                        &mut out,
                        json!({"event": "joined", "tables": tables, "rss_idle": rss_idle, "idle_cpu": idle_cpu}),
                    )
                    .await?;
                }
                Some("refresh") => {
                    // One full routing refresh on every node once all have
                    // joined: what libp2p's periodic bootstrap (every 5
                    // minutes) does in a network older than this benchmark.
                    // Early joiners otherwise only know the nodes that were
                    // there when they joined, or that happened to ask them.
                    let t = Instant::now();
                    let concurrency = cmd["concurrency"].as_u64().unwrap_or(8).max(1) as usize;
                    stream::iter(handles.iter())
                        .for_each_concurrent(concurrency, |h| async move {
                            let _ = h.refresh_routing().await;
                        })
                        .await;
                    let mut tables = Vec::with_capacity(handles.len());
                    for h in &handles {
                        tables.push(h.routing_table_size().await.unwrap_or(0));
                    }
                    let processes = cmd["processes"].as_u64().unwrap_or(1).max(1) as f64;
                    settle_cpu(processes).await;
                    say(
                        &mut out,
                        json!({"event": "refreshed", "tables": tables, "secs": t.elapsed().as_secs_f64()}),
                    )
                    .await?;
                }
                Some("provide") => {
                    let keys: Vec<usize> = cmd["keys"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|k| k.as_u64().map(|k| k as usize))
                        .collect();
                    let assigned: Vec<(usize, usize)> = keys
                        .iter()
                        .map(|k| (*k, rng.below(handles.len())))
                        .collect();
                    stream::iter(
                        assigned
                            .iter()
                            .map(|(k, i)| (key_hash(total, *k), handles[*i].clone())),
                    )
                    .for_each_concurrent(16, |(h, handle)| async move {
                        let _ = handle.start_providing(h).await;
                    })
                    .await;
                    let list: Vec<Value> = assigned
                        .iter()
                        .map(|(k, i)| json!([k, handles[*i].local_peer_id().to_string()]))
                        .collect();
                    say(&mut out, json!({"event": "provided", "keys": list})).await?;
                }
                Some("holders") => {
                    // Which local nodes store a provider record for each key
                    // (after every process has provided).
                    let keys: Vec<usize> = cmd["keys"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|k| k.as_u64().map(|k| k as usize))
                        .collect();
                    // Every (key, node) pair is one command to that node's
                    // swarm task: asked concurrently, since one at a time
                    // did not finish in 400 s on the loaded machine.
                    let pairs: Vec<(usize, &NetHandle)> = keys
                        .iter()
                        .flat_map(|k| handles.iter().map(move |h| (*k, h)))
                        .collect();
                    let held: Vec<(usize, String)> = stream::iter(pairs)
                        .map(|(k, handle)| async move {
                            let stored = handle.stored_providers(key_hash(total, k)).await;
                            stored
                                .is_ok_and(|p| !p.is_empty())
                                .then(|| (k, handle.local_peer_id().to_string()))
                        })
                        .buffer_unordered(64)
                        .filter_map(|x| async move { x })
                        .collect()
                        .await;
                    let mut by_key: BTreeMap<usize, Vec<String>> =
                        keys.iter().map(|k| (*k, Vec::new())).collect();
                    for (k, peer) in held {
                        by_key.entry(k).or_default().push(peer);
                    }
                    let holders: Vec<Value> =
                        by_key.into_iter().map(|(k, ids)| json!([k, ids])).collect();
                    say(&mut out, json!({"event": "holders", "holders": holders})).await?;
                }
                Some("lookup") => {
                    let keys: Vec<(usize, Hash, PeerId)> = cmd["keys"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| {
                            let k = v[0].as_u64()? as usize;
                            let p: PeerId = v[1].as_str()?.parse().ok()?;
                            Some((k, key_hash(total, k), p))
                        })
                        .collect();
                    let count = cmd["count"].as_u64().unwrap_or(0) as usize;
                    let concurrency = cmd["concurrency"].as_u64().unwrap_or(4).max(1) as usize;
                    let (results, rtts) =
                        lookups(&handles, &keys, count, concurrency, &mut rng).await;
                    let mut conn_errors: std::collections::BTreeMap<String, u64> =
                        Default::default();
                    for h in &handles {
                        if let Ok(st) = h.status().await {
                            for (cause, n) in st.connection_errors {
                                *conn_errors.entry(cause).or_default() += n;
                            }
                        }
                    }
                    say(
                        &mut out,
                        json!({"event": "looked_up", "results": results, "rtts_us": rtts, "connection_errors": conn_errors}),
                    )
                    .await?;
                }
                Some("kill") => {
                    let keep: HashSet<String> = cmd["keep"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect();
                    let percent = cmd["percent"].as_u64().unwrap_or(0) as usize;
                    let mut candidates: Vec<usize> = (0..nodes.len())
                        .filter(|i| !keep.contains(&nodes[*i].peer_id().to_string()))
                        .collect();
                    let want = (nodes.len() * percent / 100).min(candidates.len());
                    let mut doomed = HashSet::new();
                    while doomed.len() < want {
                        doomed.insert(candidates.swap_remove(rng.below(candidates.len())));
                    }
                    let (dead, alive): (Vec<_>, Vec<_>) = std::mem::take(&mut nodes)
                        .into_iter()
                        .enumerate()
                        .partition(|(i, _)| doomed.contains(i));
                    nodes = alive.into_iter().map(|(_, n)| n).collect();
                    handles = nodes.iter().map(|n| n.handle().clone()).collect();
                    // At once: every shutdown runs concurrently.
                    futures::future::join_all(dead.into_iter().map(|(_, n)| n.shutdown())).await;
                    say(&mut out, json!({"event": "killed", "killed": want})).await?;
                }
                Some("stop") => break,
                _ => {
                    say(
                        &mut out,
                        json!({"event": "error", "message": format!("unknown command {line:?}")}),
                    )
                    .await?;
                }
            }
        }
        let t_down = Instant::now();
        stream::iter(nodes)
            .for_each_concurrent(64, |n| n.shutdown())
            .await;
        // The parent may be gone already; nothing to do about that.
        let _ = say(
            &mut out,
            json!({"event": "stopped", "secs": t_down.elapsed().as_secs_f64()}),
        )
        .await;
        Ok(())
    }

    /// Waits (bounded) until every local routing table has a useful size,
    /// nudging laggards once, then until this process's CPU use settles
    /// (lookups measured during the join storm measure the CPU queue).
    /// Returns the table sizes and the idle CPU (percent of one core).
    async fn join(handles: &[NetHandle], total: usize, processes: f64) -> (Vec<usize>, f64) {
        let want = (total - 1).min(15);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(90);
        let mut nudged = false;
        let mut tables: Vec<usize>;
        let mut last_report = t0;
        let mut ticks = cpu_ticks();
        loop {
            // Asked concurrently: under the join storm one answer can take
            // a second, and hundreds in a row would outlast the phase.
            tables = stream::iter(handles)
                .map(|h| async move { h.routing_table_size().await.unwrap_or(0) })
                .buffered(64)
                .collect()
                .await;
            let low: Vec<&NetHandle> = handles
                .iter()
                .zip(&tables)
                .filter(|(_, t)| **t < want)
                .map(|(h, _)| h)
                .collect();
            if last_report.elapsed() >= Duration::from_secs(10) {
                let now_ticks = cpu_ticks();
                eprintln!(
                    "join {:.0}s: {} of {} nodes below {want} routing-table entries; {:.0}% of a core; {} connections opened and {} routing requests sent so far",
                    t0.elapsed().as_secs_f64(),
                    low.len(),
                    handles.len(),
                    (now_ticks - ticks) as f64 / last_report.elapsed().as_secs_f64(),
                    connections_opened(handles).await,
                    routing_requests(handles).await,
                );
                last_report = Instant::now();
                ticks = now_ticks;
            }
            if low.is_empty() || Instant::now() >= deadline {
                break;
            }
            if !nudged && t0.elapsed() > Duration::from_secs(10) {
                nudged = true;
                stream::iter(low)
                    .for_each_concurrent(32, |h| async move {
                        let _ = h.bootstrap().await;
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        settle_cpu(processes).await;
        // Three windows of 5 s: whether the cost decays (the tail of the
        // join) or stays (the cost of idling). The last one is reported,
        // with how many connections the nodes opened meanwhile.
        let mut cpu = 0.0;
        for window in 1..=3 {
            let opened0 = connections_opened(handles).await;
            let c0 = cpu_ticks();
            tokio::time::sleep(Duration::from_secs(5)).await;
            cpu = (cpu_ticks() - c0) as f64 / 5.0;
            let opened = connections_opened(handles).await - opened0;
            eprintln!(
                "idle window {window}: {cpu:.0}% of a core for {} nodes, {:.1} connections opened per node per minute",
                handles.len(),
                opened as f64 * 12.0 / handles.len().max(1) as f64
            );
        }
        (tables, cpu)
    }

    async fn connections_opened(handles: &[NetHandle]) -> u64 {
        sum_status(handles, |s| s.connections_opened).await
    }

    async fn routing_requests(handles: &[NetHandle]) -> u64 {
        sum_status(handles, |s| s.routing_requests).await
    }

    async fn sum_status(handles: &[NetHandle], field: fn(&NetStatus) -> u64) -> u64 {
        stream::iter(handles)
            .map(|h| async move { h.status().await.map_or(0, |s| field(&s)) })
            .buffer_unordered(64)
            .fold(0, |n, c| async move { n + c })
            .await
    }

    /// Waits (at most 180 s) until this process is busy below its share of
    /// 60% of one core across all processes.
    async fn settle_cpu(processes: f64) {
        let threshold = (60.0 / processes).max(5.0);
        let t0 = Instant::now();
        let settle_deadline = t0 + Duration::from_secs(180);
        let mut rounds = 0u32;
        loop {
            let c0 = cpu_ticks();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let busy = (cpu_ticks() - c0) as f64 / 2.0;
            if busy < threshold || Instant::now() >= settle_deadline {
                break;
            }
            rounds += 1;
            if rounds.is_multiple_of(5) {
                eprintln!(
                    "settling {:.0}s: {busy:.0}% of a core, waiting for {threshold:.0}%",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// `count` lookups of random keys from random local nodes (never the
    /// provider itself). Each result is `[found the provider, µs to first
    /// provider, requests to first provider]`; also the ping RTTs (µs) of
    /// up to 20 local nodes, to express latency in round trips.
    async fn lookups(
        handles: &[NetHandle],
        keys: &[(usize, Hash, PeerId)],
        count: usize,
        concurrency: usize,
        rng: &mut Rng,
    ) -> (Vec<Value>, Vec<u64>) {
        let mut jobs = Vec::with_capacity(count);
        if !keys.is_empty() {
            for _ in 0..count {
                let (k, h, provider) = keys[rng.below(keys.len())];
                let mut from = rng.below(handles.len());
                if handles[from].local_peer_id() == provider {
                    if handles.len() < 2 {
                        continue;
                    }
                    from = (from + 1) % handles.len();
                }
                jobs.push((k, h, provider, handles[from].clone()));
            }
        }
        let results: Vec<Value> = stream::iter(jobs)
            .map(|(k, h, want, handle)| async move {
                match handle.lookup_providers(h, 1, Duration::from_secs(10)).await {
                    Ok(l) => {
                        let ok = l.providers.iter().any(|x| x.peer_id == want);
                        json!({
                            "ok": ok,
                            "key": k,
                            "us": l.stats.time_to_first.map(|d| d.as_micros() as u64),
                            "req_first": l.stats.requests_to_first,
                            "end": l.stats.end,
                            "elapsed_ms": l.stats.elapsed.as_millis() as u64,
                            "requests": l.stats.requests,
                            "successes": l.stats.successes,
                            "failures": l.stats.failures,
                            "table": l.stats.routing_table_size,
                            "closest": if ok {
                                Vec::new()
                            } else {
                                l.closest_peers.iter().map(|p| p.to_string()).collect()
                            },
                        })
                    }
                    Err(e) => json!({"ok": false, "key": k, "end": "handle_error", "error": e.to_string()}),
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut rtts = Vec::new();
        for h in handles.iter().take(20) {
            if let Ok(peers) = h.peers().await {
                rtts.extend(
                    peers
                        .iter()
                        .filter_map(|p| p.latency.map(|d| d.as_micros() as u64)),
                );
            }
        }
        (results, rtts)
    }
}
