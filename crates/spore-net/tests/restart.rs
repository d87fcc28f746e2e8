//! A restarted node keeps its peer id (identity file) and reconnects to a
//! peer it knew (address book) with no bootstrap list.

mod common;

use std::time::Duration;

use common::{has_peer, start, start_with, tcp_addr, wait_for_peers, wait_for_status};
use spore_net::{NetConfig, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_peer_id_and_redials_known_peer() {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let known = start_with(|c| c.quic = true).await;
    let known_addr = tcp_addr(&known).await;

    let cfg = NetConfig {
        quic: true,
        identity_file: Some(dir.path().join("identity.key")),
        address_book_file: Some(dir.path().join("peers.txt")),
        ..NetConfig::for_tests()
    };
    let first = start(cfg.clone()).await;
    let first_id = first.peer_id();
    let got = first.handle().dial(known_addr).await.expect("dial");
    assert_eq!(got, known.peer_id());
    // Wait for identify, which is what puts a peer in the address book.
    wait_for_status(
        first.handle(),
        Duration::from_secs(10),
        "known peer in address book",
        |s| s.address_book_size >= 1,
    )
    .await;
    let peers = first.handle().peers().await.expect("peers");
    let p = peers
        .iter()
        .find(|p| p.peer_id == known.peer_id())
        .expect("connected");
    assert_eq!(p.connections[0].transport, TransportKind::Tcp);
    assert!(p.protocols.iter().any(|x| x == "/spore/kad/1.0.0"));
    first.shutdown().await;
    assert!(
        dir.path().join("peers.txt").exists(),
        "book saved on shutdown"
    );

    let second = start(cfg).await;
    assert_eq!(second.peer_id(), first_id, "same identity after restart");
    let known_id = known.peer_id();
    wait_for_peers(
        second.handle(),
        Duration::from_secs(15),
        "reconnected to known peer",
        |ps| has_peer(ps, known_id),
    )
    .await;
    second.shutdown().await;
    known.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_dial_works() {
    common::init_tracing();
    let a = start_with(|c| c.quic = true).await;
    let b = start(NetConfig::for_tests()).await;
    let quic = common::quic_addrs(&a)
        .await
        .into_iter()
        .next()
        .expect("quic listen address");
    let peer = b.handle().dial(quic).await.expect("quic dial");
    assert_eq!(peer, a.peer_id());
    let peers = b.handle().peers().await.expect("peers");
    assert_eq!(peers[0].connections[0].transport, TransportKind::Quic);
    a.shutdown().await;
    b.shutdown().await;
}
