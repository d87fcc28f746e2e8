//! Raw streams for the transfer protocol, and the per-IP connection limit.

mod common;

use std::time::Duration;

use common::{start, start_with, tcp_addr, wait_for_status};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use spore_net::{NetConfig, NetError, TransportKind};

const ECHO: &str = "/spore/test-echo/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_accept_raw_streams() {
    common::init_tracing();
    let a = start(NetConfig::for_tests()).await;
    let b = start(NetConfig::for_tests()).await;
    let mut incoming = b.handle().accept_streams(ECHO).expect("accept");
    assert!(matches!(
        b.handle().accept_streams(ECHO),
        Err(NetError::AlreadyAccepting(_))
    ));
    assert!(matches!(
        b.handle().accept_streams("no-slash"),
        Err(NetError::InvalidProtocol(_))
    ));
    let a_id = a.peer_id();
    let server = tokio::spawn(async move {
        let (peer, mut s) = incoming.next().await.expect("a stream");
        assert_eq!(peer, a_id);
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        s.write_all(&buf).await.expect("echo");
        s.close().await.expect("close");
        buf.len()
    });
    // Not connected yet: open_stream dials through the addresses we add.
    let b_addr = tcp_addr(&b).await;
    a.handle()
        .add_peer_addrs(b.peer_id(), vec![b_addr])
        .await
        .expect("addrs");
    let mut s = a
        .handle()
        .open_stream(b.peer_id(), ECHO)
        .await
        .expect("open");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).await.expect("write");
    s.close().await.expect("close write side");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read echo");
    assert_eq!(back, data);
    assert_eq!(server.await.expect("server task"), data.len());

    // A protocol the peer does not accept fails cleanly.
    let err = a
        .handle()
        .open_stream(b.peer_id(), "/spore/nobody-home/1")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Stream { .. }), "{err:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_refuses_extra_inbound_connections() {
    common::init_tracing();
    let target = start_with(|c| c.max_connections_per_ip = Some(2)).await;
    let addr = tcp_addr(&target).await;
    let mut clients = Vec::new();
    let mut ok = 0;
    for _ in 0..4 {
        let c = start(NetConfig::for_tests()).await;
        if c.handle().dial(addr.clone()).await.is_ok() {
            ok += 1;
        }
        clients.push(c);
    }
    assert_eq!(
        ok, 2,
        "two connections from 127.0.0.1 allowed, the rest refused"
    );
    // The refused ones did not hurt the node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = target.handle().status().await.expect("status");
    assert_eq!(s.connected_peers, 2);
    // Closing one frees a slot.
    let first = clients.remove(0);
    first.shutdown().await;
    wait_for_status(target.handle(), Duration::from_secs(5), "slot freed", |s| {
        s.connected_peers == 1
    })
    .await;
    assert!(clients[2].handle().dial(addr).await.is_ok());
    for c in clients {
        c.shutdown().await;
    }
    target.shutdown().await;
}

/// The head start only delays QUIC: a peer known by its QUIC address alone
/// is still reached, over QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_known_only_by_quic_is_still_reached() {
    common::init_tracing();
    let a = start_with(|c| c.quic = true).await;
    let b = start_with(|c| c.quic = true).await;
    let quic = common::quic_addrs(&b).await;
    assert!(!quic.is_empty());
    tokio::time::timeout(
        Duration::from_secs(10),
        a.handle().dial_peer(b.peer_id(), quic),
    )
    .await
    .expect("dial in time")
    .expect("dial");
    let peers = a.handle().peers().await.expect("peers");
    let b_info = peers
        .iter()
        .find(|p| p.peer_id == b.peer_id())
        .expect("b connected");
    assert!(
        b_info
            .connections
            .iter()
            .all(|c| c.transport == TransportKind::Quic),
        "{peers:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
