//! Helpers shared by the node's integration tests: real nodes on 127.0.0.1
//! in one process, each in its own temporary home.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test file uses a part; setup failures may panic

use std::{sync::Arc, time::Duration};

use spore_core::Hash;
use spore_net::{CancellationToken, Multiaddr, NetConfig, PeerId};
use spore_node::{
    Home, Node, NodeConfig,
    transfer::{DownloadHandle, Progress, TransferConfig},
};
use tempfile::TempDir;

pub const MIB: u64 = 1024 * 1024;

pub struct TestNode {
    pub node: Arc<Node>,
    /// The node's home; kept so that a test can restart a node in it.
    pub dir: TempDir,
}

/// Starts a node in `dir` with the test network settings (keeping the
/// identity and address book in `dir`), after `adjust` has set what the test
/// needs.
pub async fn start_with(dir: TempDir, adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let home = Home::under(dir.path());
    let mut config = NodeConfig::load(&home).unwrap();
    let files = (
        config.net.identity_file.clone(),
        config.net.address_book_file.clone(),
    );
    config.net = NetConfig::for_tests();
    (config.net.identity_file, config.net.address_book_file) = files;
    adjust(&mut config);
    let node = Node::start(home, config, CancellationToken::new())
        .await
        .unwrap();
    TestNode { node, dir }
}

pub async fn start_in(dir: TempDir, transfer: TransferConfig) -> TestNode {
    start_with(dir, |config| config.transfer = transfer).await
}

pub async fn start(transfer: TransferConfig) -> TestNode {
    start_in(TempDir::new().unwrap(), transfer).await
}

/// Uploads at most `bytes_per_sec`; looks for sources every second.
pub fn limited(bytes_per_sec: u64) -> TransferConfig {
    TransferConfig {
        max_upload: bytes_per_sec,
        ..fast()
    }
}

/// Uploads without a limit; looks for sources every second.
pub fn fast() -> TransferConfig {
    TransferConfig {
        discovery_interval_secs: 1,
        ..TransferConfig::default()
    }
}

pub async fn provider(n: &TestNode) -> (PeerId, Vec<Multiaddr>) {
    (
        n.node.net().local_peer_id(),
        n.node.net().listen_addrs().await.unwrap(),
    )
}

/// `n` nodes with `fast()` settings, each connected to every other one.
pub async fn connected_leechers(n: usize) -> Vec<TestNode> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(start(fast()).await);
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let (peer, addrs) = provider(b).await;
            a.node.net().dial_peer(peer, addrs).await.unwrap();
        }
    }
    nodes
}

/// Deterministic pseudo-random bytes.
pub fn data(len: u64, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Adds `bytes` to the node's store as a single blob.
pub async fn seed_with(n: &TestNode, bytes: &[u8]) -> Hash {
    let store = n.node.store().clone();
    let bytes = bytes.to_vec();
    let added = tokio::task::spawn_blocking(move || store.add_bytes(&bytes, "blob"))
        .await
        .unwrap()
        .unwrap();
    added.hash
}

pub async fn wait(handle: &DownloadHandle, secs: u64) -> Progress {
    tokio::time::timeout(Duration::from_secs(secs), handle.wait())
        .await
        .unwrap_or_else(|_| panic!("download timed out: {:?}", handle.progress()))
        .unwrap()
}

/// Waits until at least `bytes` are verified.
pub async fn wait_for_bytes(handle: &DownloadHandle, bytes: u64) {
    let mut rx = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if rx.borrow_and_update().verified_bytes >= bytes {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
}

pub async fn assert_stored(n: &TestNode, hash: Hash, expected: &[u8]) {
    let store = n.node.store().clone();
    let (complete, bytes) = tokio::task::spawn_blocking(move || {
        (
            store.has_complete(&hash).unwrap(),
            store.blob(&hash).unwrap().read_all().unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(complete, "the blob is complete in the store");
    assert!(bytes == expected, "content differs");
}
