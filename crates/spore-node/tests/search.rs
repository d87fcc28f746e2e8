//! Search end to end: real nodes on 127.0.0.1 in one process, talking
//! `/spore/search/1` over TCP, plus the DHT keyword index.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::time::Duration;

use common::TestNode;
use futures::AsyncWriteExt;
use spore_core::Hash;
use spore_net::{CancellationToken, Multiaddr, NetConfig, NetNode};
use spore_node::search::{SearchConfig, SearchEvent, SearchHit, SearchRequest};
use spore_search::{
    Filters, Media,
    dht::{self, KeywordRecord},
    wire::PROTOCOL,
};
use tempfile::TempDir;

async fn start() -> TestNode {
    common::start_with(TempDir::new().unwrap(), |config| {
        config.search = SearchConfig {
            filter_interval_secs: 1,
            reindex_interval_secs: 5,
            ..SearchConfig::default()
        };
    })
    .await
}

async fn addr(n: &TestNode) -> Multiaddr {
    let a = n.node.net().listen_addrs().await.unwrap()[0].clone();
    format!("{a}/p2p/{}", n.node.net().local_peer_id())
        .parse()
        .unwrap()
}

async fn share(n: &TestNode, name: &str) -> Hash {
    let store = n.node.store().clone();
    let (bytes, name) = (name.as_bytes().to_vec(), name.to_owned());
    let hash = tokio::task::spawn_blocking(move || store.add_bytes(&bytes, &name))
        .await
        .unwrap()
        .unwrap()
        .hash;
    n.node.search().reindex().await;
    hash
}

async fn collect(n: &TestNode, request: SearchRequest) -> Vec<SearchHit> {
    let mut rx = n.node.search().search(request).await.unwrap();
    let mut hits: Vec<SearchHit> = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            SearchEvent::Hit(h) => {
                hits.retain(|x| x.id != h.id);
                hits.push(h);
            }
            SearchEvent::Done { .. } => break,
        }
    }
    hits
}

/// `n` nodes: a chain, plus a link from node i to node i/2 (a tree): every
/// node reaches every other within a few hops, most not directly.
async fn network(n: usize) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(start().await);
    }
    for i in 1..n {
        let a = addr(&nodes[i - 1]).await;
        nodes[i].node.net().dial(a).await.unwrap();
        if i / 2 != i - 1 {
            let b = addr(&nodes[i / 2]).await;
            nodes[i].node.net().dial(b).await.unwrap();
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unique_item_is_found_from_every_node() {
    let nodes = network(10).await;
    let words = ["river", "castle", "meadow", "storm"];
    for (i, n) in nodes.iter().enumerate() {
        share(
            n,
            &format!("{} {} {i}.mkv", words[i % 4], words[(i + 1) % 4]),
        )
        .await;
    }
    let holder = 7;
    let id = share(&nodes[holder], "zebracorn documentary 2024.mkv").await;
    let holder_peer = nodes[holder].node.net().local_peer_id();
    // Filters need a few exchange rounds to reach 3 hops out.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let searches = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != holder)
        .map(|(i, n)| {
            let mut req = SearchRequest::new("Zebracorn");
            req.timeout = Duration::from_secs(15);
            req.wanted = 1;
            req.filters = Filters {
                media: Some(Media::Video),
                ..Default::default()
            };
            async move { (i, collect(n, req).await) }
        });
    for (i, hits) in futures::future::join_all(searches).await {
        let hit = hits
            .iter()
            .find(|h| h.id == id.to_hex())
            .unwrap_or_else(|| panic!("node {i} did not find the item: {hits:?}"));
        assert_eq!(hit.name, "zebracorn documentary 2024.mkv");
        assert_eq!(hit.publishers, [holder_peer.to_string()]);
        assert_eq!(hit.media, "video");
    }
    // A filter that excludes the item finds nothing.
    let mut req = SearchRequest::new("zebracorn");
    req.timeout = Duration::from_secs(3);
    req.filters.min_size = Some(1 << 30);
    assert!(collect(&nodes[0], req).await.is_empty());

    // Guided routing: far fewer query messages than nodes × neighbours.
    let mut sent = 0;
    for n in &nodes {
        sent += n.node.search().stats().await.unwrap().queries_sent;
    }
    eprintln!("query messages for 10 searches: {sent}");

    // The holder published its keywords to the DHT; any node reads them.
    let key = dht::dht_key("zebracorn");
    let mut found = false;
    for _ in 0..20 {
        let values = nodes[2]
            .node
            .net()
            .get_records(key.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        found = values.iter().any(|(publisher, v)| {
            let r = KeywordRecord::decode(v).unwrap();
            spore_net::peer_id_from_ed25519(publisher) == Some(holder_peer)
                && r.records.iter().any(|x| x.body.id == id)
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(found, "keyword record not found in the DHT");

    for n in nodes {
        n.node.clone().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_oversized_and_floods_are_rejected_and_the_node_still_answers() {
    let nodes = network(2).await;
    let id = share(&nodes[1], "quokka selfie.jpg").await;
    let target = nodes[1].node.net().local_peer_id();
    let attacker = NetNode::start(NetConfig::for_tests(), CancellationToken::new())
        .await
        .unwrap();
    let a = addr(&nodes[1]).await;
    attacker.handle().dial(a).await.unwrap();

    let send_raw = |bytes: Vec<u8>| {
        let h = attacker.handle().clone();
        async move {
            if let Ok(mut s) = h.open_stream(target, PROTOCOL).await {
                let _ = s.write_all(&bytes).await;
                let _ = s.close().await;
            }
        }
    };
    // Garbage, an oversized length, an over-limit hop count.
    send_raw(vec![0, 0, 0, 5, 9, 9, 9, 9, 9]).await;
    send_raw(vec![0xff, 0xff, 0xff, 0xff, 0]).await;
    let mut q = spore_search::Query::new("quokka", Filters::default(), 4).unwrap();
    q.hops = 99;
    send_raw(spore_search::Message::Query(q).encode()).await;
    // A flood of valid queries.
    for _ in 0..120 {
        let q = spore_search::Query::new("quokka", Filters::default(), 1).unwrap();
        send_raw(spore_search::Message::Query(q).encode()).await;
    }
    // The attacker is scored down to a ban once its streams are processed.
    let mut stats = nodes[1].node.search().stats().await.unwrap();
    for _ in 0..100 {
        if stats.banned >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = nodes[1].node.search().stats().await.unwrap();
    }
    assert!(stats.rejected >= 3, "{stats:?}");
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert_eq!(stats.banned, 1, "{stats:?}");
    // Honest peers are still served.
    let mut req = SearchRequest::new("quokka");
    req.timeout = Duration::from_secs(5);
    req.wanted = 1;
    let hits = collect(&nodes[0], req).await;
    assert!(hits.iter().any(|h| h.id == id.to_hex()), "{hits:?}");
    attacker.shutdown().await;
    for n in nodes {
        n.node.clone().shutdown().await;
    }
}

#[tokio::test]
async fn local_search_covers_tags_and_descriptions() {
    let n = start().await;
    let id = share(&n, "IMG_0042.jpg").await;
    n.node
        .search()
        .describe(id, vec!["paris".into()], "Eiffel tower at night".into())
        .await
        .unwrap();
    let hits = n
        .node
        .search()
        .search_local(SearchRequest::new("eiffel paris"), 10)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, id.to_hex());
    assert_eq!(hits[0].tags, ["paris"]);
    assert!(dht::KEY_PREFIX.starts_with(spore_net::multi_value::MULTI_VALUE_PREFIX));

    // Searches at once are capped (32 by default); the 33rd is refused.
    let mut running = Vec::new();
    let mut req = SearchRequest::new("nothing here");
    req.timeout = Duration::from_secs(30);
    for _ in 0..32 {
        running.push(n.node.search().search(req.clone()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        n.node.search().search(req.clone()).await,
        Err(spore_node::search::SearchError::Busy(32))
    ));
    drop(running);
    // Dropped receivers end their searches; new ones are accepted again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(n.node.search().search(req).await.is_ok());
    n.node.clone().shutdown().await;
}
