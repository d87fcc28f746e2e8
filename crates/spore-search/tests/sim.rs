#![allow(clippy::unwrap_used)]
//! Many routers in one process: recall and message counts of spore's
//! guided search against plain flooding, and a misbehaving peer.

use std::time::Instant;

use spore_search::{
    Action, DEFAULT_HOPS, Message, Offence, Router, RouterConfig, Strategy,
    sim::{Sim, SimConfig, query},
    wire::WireError,
};

fn network(nodes: usize, strategy: Strategy, seed: u64) -> Sim {
    let mut sim = Sim::new(&SimConfig::new(nodes, strategy, seed));
    sim.exchange_filters(4);
    sim
}

#[test]
fn a_unique_item_is_found_from_every_node_with_a_tenth_of_the_messages() {
    const N: usize = 60;
    let mut guided = Sim::new(&SimConfig::new(N, Strategy::Guided, 7));
    let mut flood = Sim::new(&SimConfig::new(N, Strategy::Flood, 7));
    let holder = 17;
    let (name, token) = guided.unique_name();
    let item = guided.share(holder, &name);
    flood.share(holder, &name);
    guided.exchange_filters(4);
    flood.exchange_filters(4);

    let (mut guided_msgs, mut flood_msgs) = (0, 0);
    let mut flood_found = 0;
    for origin in (0..N).filter(|&o| o != holder) {
        let q = query(&token, DEFAULT_HOPS).unwrap();
        let out = guided.search_dynamic(origin, q.clone(), 1);
        assert!(
            out.found.iter().any(|r| r.body.id == item.body.id),
            "guided search from node {origin} missed the item"
        );
        assert!(out.found.iter().all(|r| r.verify()));
        guided_msgs += out.traffic.total();
        let f = flood.search_once(origin, q);
        flood_found += usize::from(f.found.iter().any(|r| r.body.id == item.body.id));
        flood_msgs += f.traffic.total();
    }
    eprintln!(
        "guided {guided_msgs} messages, flood {flood_msgs} ({flood_found}/{} found)",
        N - 1
    );
    assert_eq!(
        flood_found,
        N - 1,
        "a 4-hop flood reaches all {N} nodes here"
    );
    assert!(
        guided_msgs * 10 <= flood_msgs,
        "guided {guided_msgs} vs flood {flood_msgs}"
    );
}

#[test]
fn common_words_find_every_matching_item_within_reach() {
    let mut sim = network(50, Strategy::Guided, 3);
    let mut flood = network(50, Strategy::Flood, 3);
    // "river" is in many generated names; both must find the same set.
    let q = query("river", 7).unwrap();
    let a = sim.search_once(0, q.clone());
    let b = flood.search_once(0, q);
    let ids = |o: &spore_search::sim::Outcome| {
        let mut v: Vec<_> = o.found.iter().map(|r| r.body.id).collect();
        v.sort();
        v.dedup();
        v
    };
    assert!(!ids(&b).is_empty());
    assert_eq!(ids(&a), ids(&b));
    assert!(a.traffic.queries <= b.traffic.queries);
}

#[test]
fn routing_filters_follow_a_new_share() {
    let mut sim = network(50, Strategy::Guided, 11);
    let (name, token) = sim.unique_name();
    // Not shared yet: nothing found, and the filters keep the query home.
    let before = sim.search_once(5, query(&token, 4).unwrap());
    assert!(before.found.is_empty());
    assert_eq!(
        before.traffic.queries, 0,
        "no filter may match an unknown word"
    );
    sim.share(40, &name);
    sim.exchange_filters(4);
    let after = sim.search_once(5, query(&token, 7).unwrap());
    assert_eq!(after.found.len(), 1);
}

#[test]
fn malformed_oversized_and_flooding_peers_are_rejected_without_harm() {
    let now = Instant::now();
    let mut r: Router<u32> = Router::new(RouterConfig::default());
    r.add_neighbour(now, 1);
    r.add_neighbour(now, 2);
    // Oversized and garbage frames fail in the codec; the router scores them.
    let mut oversized = vec![0xff, 0xff, 0xff, 0xff];
    oversized.extend([0; 16]);
    let err = Message::decode_frame(&oversized).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLarge(_)));
    let a = r.on_malformed(now, 1, err);
    assert!(matches!(
        &a[0],
        Action::Penalise {
            offence: Offence::Malformed(_),
            banned: false,
            ..
        }
    ));
    let garbage = Message::decode_body(&[0, 200, 1, 2]).unwrap_err();
    r.on_malformed(now, 1, garbage);
    // A query flood from 1 gets it banned; 2 is still served.
    let mut banned = false;
    for _ in 0..200 {
        let a = r.on_message(now, 1, Message::Query(query("flood", 4).unwrap()));
        banned |= a
            .iter()
            .any(|a| matches!(a, Action::Penalise { banned: true, .. }));
    }
    assert!(banned);
    assert!(
        r.on_message(now, 1, Message::Query(query("after", 4).unwrap()))
            .is_empty()
    );
    let a = r.on_message(now, 2, Message::Query(query("fine", 4).unwrap()));
    assert!(matches!(a[0], Action::SearchLocal { .. }));
    assert!(r.stats().rejected > 100);
}
