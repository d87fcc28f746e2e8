//! Garbage on the Kademlia protocol and on the raw TCP port is rejected; the
//! node neither crashes nor stops serving.

mod common;

use std::time::Duration;

use common::{start, tcp_addr};
use futures::{AsyncReadExt, AsyncWriteExt};
use spore_core::Hash;
use spore_net::{KAD_PROTOCOL, NetConfig, multiaddr::Protocol};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

/// Writes `payload` on a fresh kad stream to `target`, then reads until the
/// target closes it. Returns how many bytes the target answered with.
async fn send_on_kad(
    attacker: &spore_net::NetHandle,
    target: spore_net::PeerId,
    payload: &[u8],
) -> usize {
    let mut s = attacker
        .open_stream(target, KAD_PROTOCOL.as_ref())
        .await
        .expect("kad stream opens");
    // The target may reset the stream half way through a big write.
    let _ = s.write_all(payload).await;
    // Half-close our side: a peer that stalls mid-message instead is bounded
    // by kad's cap on inbound streams per connection, not by a read timeout.
    let _ = s.close().await;
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    eprintln!(
        "payload of {} bytes: closed after {:?}: {:?}",
        payload.len(),
        t0.elapsed(),
        read
    );
    assert!(read.is_ok(), "target kept a garbage stream open");
    buf.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_kad_messages_are_rejected() {
    common::init_tracing();
    let target = start(NetConfig::for_tests()).await;
    let target_addr = tcp_addr(&target).await;
    let provider = start(NetConfig {
        bootstrap: vec![target_addr.clone()],
        ..NetConfig::for_tests()
    })
    .await;
    provider.handle().bootstrap().await.ok();
    let hash = Hash::of(b"still served");
    provider
        .handle()
        .start_providing(hash)
        .await
        .expect("provide");

    let attacker = start(NetConfig::for_tests()).await;
    attacker
        .handle()
        .dial(target_addr.clone())
        .await
        .expect("dial");
    let a = attacker.handle();
    let t = target.peer_id();

    // 1. A length prefix claiming ~2^63 bytes.
    let huge_prefix = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3,
    ];
    assert_eq!(send_on_kad(a, t, &huge_prefix).await, 0);
    // 2. A length prefix just over the 16 KiB limit, then that much data.
    let mut over = vec![0x81, 0x80, 0x01]; // varint 16385
    over.extend(std::iter::repeat_n(0u8, 16385));
    assert_eq!(send_on_kad(a, t, &over).await, 0);
    // 3. A valid length with bytes that are not a protobuf message.
    let mut junk = vec![64];
    junk.extend(std::iter::repeat_n(0xffu8, 64));
    assert_eq!(send_on_kad(a, t, &junk).await, 0);
    // 4. A truncated message: prefix says 100, stream ends after 3.
    send_on_kad(a, t, &[100, 1, 2, 3]).await;
    // 5. A megabyte of noise.
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_on_kad(a, t, &noise).await;

    // 6. Garbage straight onto the TCP port, before any handshake.
    let port = target_addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");
    for payload in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 4096][..],
        &noise[..],
    ] {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        let _ = sock.write_all(payload).await;
        let _ = sock.shutdown().await;
    }

    // The target still answers: a fresh node finds the provider through it.
    let fresh = start(NetConfig {
        bootstrap: vec![target_addr],
        ..NetConfig::for_tests()
    })
    .await;
    let found = fresh
        .handle()
        .find_providers_with(hash, 1, Duration::from_secs(10))
        .await
        .expect("lookup");
    assert!(
        found.iter().any(|p| p.peer_id == provider.peer_id()),
        "target stopped serving after garbage: {found:?}"
    );
    let status = target.handle().status().await.expect("target alive");
    assert!(status.connected_peers >= 2);

    for n in [fresh, attacker, provider, target] {
        n.shutdown().await;
    }
}
