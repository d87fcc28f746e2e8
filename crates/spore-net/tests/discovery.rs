//! Discovery without a bootstrap list: mDNS on the local network, and a
//! rendezvous server.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{has_peer, start_with, tcp_addr, wait_for_peers};
use spore_net::{DiscoverySource, NetConfig, NetEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_by_mdns() {
    common::init_tracing();
    // mDNS skips loopback interfaces, so these nodes listen on all
    // interfaces; the multicast goes out on the machine's real interface.
    let on_lan = |c: &mut NetConfig| {
        c.listen_ip = IpAddr::from([0, 0, 0, 0]);
        c.mdns = true;
    };
    let a = start_with(on_lan).await;
    let mut a_events = a.handle().subscribe();
    let b = start_with(on_lan).await;
    let b_id = b.peer_id();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match a_events.recv().await {
                Ok(NetEvent::PeerDiscovered {
                    peer_id,
                    source: DiscoverySource::Mdns,
                }) if peer_id == b_id => return true,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "a never discovered b by mDNS");
    wait_for_peers(
        a.handle(),
        Duration::from_secs(10),
        "a connected to b",
        |ps| has_peer(ps, b_id),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_through_a_rendezvous_server() {
    common::init_tracing();
    let server = start_with(|c| c.rendezvous_server = true).await;
    let point = tcp_addr(&server).await;
    let client = |c: &mut NetConfig| {
        c.rendezvous_points = vec![point.clone()];
        c.rendezvous_interval_secs = 1;
    };
    let a = start_with(client).await;
    let mut a_events = a.handle().subscribe();
    let b = start_with(client).await;
    let (a_id, b_id) = (a.peer_id(), b.peer_id());
    // The event says where a learned of b: the rendezvous server (the DHT
    // could also introduce them through the server, which would not count).
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match a_events.recv().await {
                Ok(NetEvent::PeerDiscovered {
                    peer_id,
                    source: DiscoverySource::Rendezvous,
                }) if peer_id == b_id => return true,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "a never discovered b through rendezvous");
    wait_for_peers(
        b.handle(),
        Duration::from_secs(10),
        "b connected to a",
        |ps| has_peer(ps, a_id),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}
