//! Recall and messages per query: plain TTL flooding beside spore's guided
//! search, on simulated networks (`spore_search::sim`).
//!
//!     cargo run --release -p spore-search --example search_bench [-- N...]
//!
//! Each trial shares one unique item on a random node and searches for it
//! from another random node. Recall is the share of trials that found it.

use spore_search::{
    DEFAULT_HOPS, MAX_HOPS, RouterConfig, Strategy,
    sim::{Sim, SimConfig, query},
};

const TRIALS: usize = 200;

struct Row {
    name: String,
    found: usize,
    queries: u64,
    hits: u64,
}

fn run(nodes: usize, name: &str, config: SimConfig, dynamic: bool, hops: u8) -> (Row, Sim) {
    let mut sim = Sim::new(&config);
    let mut row = Row {
        name: name.to_owned(),
        found: 0,
        queries: 0,
        hits: 0,
    };
    // Every trial's item is shared first, then filters are exchanged once
    // (a real node resends its filter when it changes).
    let mut trials = Vec::new();
    for _ in 0..TRIALS {
        let holder = sim.random_node();
        let mut origin = sim.random_node();
        while origin == holder {
            origin = sim.random_node();
        }
        let (item_name, token) = sim.unique_name();
        let item = sim.share(holder, &item_name);
        trials.push((origin, token, item));
    }
    sim.exchange_filters(config.router.filter_levels);
    for (origin, token, item) in trials {
        let q = query(&token, hops).expect("generated tokens are keywords");
        let out = if dynamic {
            sim.search_dynamic(origin, q, 1)
        } else {
            sim.search_once(origin, q)
        };
        row.found += usize::from(out.found.iter().any(|r| r.body.id == item.body.id));
        row.queries += out.traffic.queries;
        row.hits += out.traffic.hits;
    }
    let _ = nodes;
    (row, sim)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 500, 1000]
    } else {
        sizes
    };
    println!(
        "search benchmark: simulated networks, avg degree ~8, 5 items per node, {TRIALS} trials of one unique item"
    );
    for n in sizes {
        println!("\nN = {n}");
        println!(
            "{:<34} {:>8} {:>12} {:>10} {:>12}",
            "strategy", "recall", "msgs/query", "hits/q", "vs flood-4"
        );
        let flood = |_hops: u8| SimConfig::new(n, Strategy::Flood, 42);
        let guided = SimConfig::new(n, Strategy::Guided, 42);
        let mut qrp = SimConfig::new(n, Strategy::Guided, 42);
        qrp.router = RouterConfig {
            strategy: Strategy::Guided,
            filter_levels: 1,
            ..RouterConfig::default()
        };
        let mut rows = Vec::new();
        rows.push(run(n, "flood, TTL 4", flood(DEFAULT_HOPS), false, DEFAULT_HOPS).0);
        rows.push(run(n, "flood, TTL 7", flood(MAX_HOPS), false, MAX_HOPS).0);
        rows.push(run(n, "QRP last hop only, TTL 4", qrp, false, DEFAULT_HOPS).0);
        let (spore, sim) = run(
            n,
            "spore: 4-level filters + dynamic",
            guided,
            true,
            DEFAULT_HOPS,
        );
        rows.push(spore);
        let base = rows[0].queries + rows[0].hits;
        for r in &rows {
            let msgs = (r.queries + r.hits) as f64 / TRIALS as f64;
            println!(
                "{:<34} {:>7.1}% {:>12.1} {:>10.2} {:>11.3}x",
                r.name,
                100.0 * r.found as f64 / TRIALS as f64,
                msgs,
                r.hits as f64 / TRIALS as f64,
                (r.queries + r.hits) as f64 / base.max(1) as f64
            );
        }
        let fill: Vec<String> = sim
            .filter_fill()
            .iter()
            .map(|f| format!("{:.1}%", 100.0 * f))
            .collect();
        println!("routing filter fill by level (spore): {}", fill.join(", "));
        let per_node = sim.filter_messages as f64 / n as f64;
        println!(
            "filter exchange (spore): {:.0} filter messages per node ({} rounds), {:.1} KiB each",
            per_node,
            spore_search::filter::MAX_LEVELS,
            sim.filter_bytes as f64 / sim.filter_messages.max(1) as f64 / 1024.0
        );
    }
}
