//! Discovery without a bootstrap list: mDNS on the local network, and a
//! rendezvous server.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{start, tcp_addr, wait_until};
use spore_net::{DiscoverySource, NetConfig, NetEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_by_mdns() {
    common::init_tracing();
    // mDNS skips loopback interfaces, so these nodes listen on all
    // interfaces; the multicast goes out on the machine's real interface.
    let cfg = || NetConfig {
        listen_ip: IpAddr::from([0, 0, 0, 0]),
        mdns: true,
        ..NetConfig::for_tests()
    };
    let a = start(cfg()).await;
    let mut a_events = a.handle().subscribe();
    let b = start(cfg()).await;
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
    let h = a.handle().clone();
    wait_until(Duration::from_secs(10), "a connected to b", || {
        let h = h.clone();
        async move {
            h.peers()
                .await
                .map(|ps| ps.iter().any(|p| p.peer_id == b_id))
                .unwrap_or(false)
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_through_a_rendezvous_server() {
    common::init_tracing();
    let server = start(NetConfig {
        rendezvous_server: true,
        ..NetConfig::for_tests()
    })
    .await;
    let point = tcp_addr(&server).await;
    let client = || NetConfig {
        rendezvous_points: vec![point.clone()],
        rendezvous_interval_secs: 1,
        ..NetConfig::for_tests()
    };
    let a = start(client()).await;
    let mut a_events = a.handle().subscribe();
    let b = start(client()).await;
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
    let hb = b.handle().clone();
    wait_until(Duration::from_secs(10), "b connected to a", || {
        let hb = hb.clone();
        async move {
            hb.peers()
                .await
                .map(|ps| ps.iter().any(|p| p.peer_id == a_id))
                .unwrap_or(false)
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}
