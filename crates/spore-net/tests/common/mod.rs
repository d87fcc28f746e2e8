//! Helpers shared by the integration tests: start nodes on 127.0.0.1, wait
//! for conditions with a deadline (never sleep-and-hope).

#![allow(dead_code, unreachable_pub)]

use std::{future::Future, time::Duration};

use spore_net::{
    CancellationToken, Multiaddr, NetConfig, NetHandle, NetNode, NetStatus, PeerInfo,
    TransportKind, multiaddr::Protocol,
};

pub async fn start(cfg: NetConfig) -> NetNode {
    NetNode::start(cfg, CancellationToken::new())
        .await
        .expect("node starts")
}

/// Starts a node with [`NetConfig::for_tests`] changed by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut NetConfig)) -> NetNode {
    let mut cfg = NetConfig::for_tests();
    tweak(&mut cfg);
    start(cfg).await
}

/// First TCP listen address of `node`, with `/p2p/<id>` appended.
pub async fn tcp_addr(node: &NetNode) -> Multiaddr {
    let addrs = node.handle().listen_addrs().await.expect("listen addrs");
    let tcp = addrs
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .expect("a tcp listen address");
    tcp.with(Protocol::P2p(node.peer_id()))
}

/// `node`'s QUIC listen addresses.
pub async fn quic_addrs(node: &NetNode) -> Vec<Multiaddr> {
    let addrs = node.handle().listen_addrs().await.expect("listen addrs");
    addrs
        .into_iter()
        .filter(|a| TransportKind::of(a) == TransportKind::Quic)
        .collect()
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `handle`'s status every 100 ms until `pred` holds, and returns
/// that status; panics with `what` and the last status after `timeout`.
pub async fn wait_for_status(
    handle: &NetHandle,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&NetStatus) -> bool,
) -> NetStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = handle.status().await;
        match status {
            Ok(s) if pred(&s) => return s,
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for: {what}; last status: {status:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls `handle`'s connected peers every 100 ms until `pred` holds, and
/// returns them; panics with `what` and the last list after `timeout`.
pub async fn wait_for_peers(
    handle: &NetHandle,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[PeerInfo]) -> bool,
) -> Vec<PeerInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let peers = handle.peers().await;
        match peers {
            Ok(p) if pred(&p) => return p,
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for: {what}; last peers: {peers:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Whether `peer` is among `peers`.
pub fn has_peer(peers: &[PeerInfo], peer: spore_net::PeerId) -> bool {
    peers.iter().any(|p| p.peer_id == peer)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
