//! Garbage on the Kademlia protocol and on the raw TCP port is rejected; the
//! node neither crashes nor stops serving, and a peer that sends malformed or
//! oversized kad messages is disconnected, scored down and, after three,
//! banned.

mod common;

use std::time::Duration;

use common::{has_peer, start, tcp_addr, wait_for_peers, wait_for_status};
use futures::{AsyncReadExt, AsyncWriteExt};
use spore_core::Hash;
use spore_net::{KAD_PROTOCOL, NetConfig, NetEvent, NetNode, PeerId, multiaddr::Protocol};
use tokio::{io::AsyncWriteExt as _, net::TcpStream, sync::broadcast};

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

/// Connects `attacker` to `target` and pins the target's address in its
/// address book. Each offence costs the attacker its connection, and the next
/// one redials: without the pinned address that redial would depend on
/// identify having finished before the connection dropped.
async fn know_target(attacker: &NetNode, target: &NetNode, addr: &spore_net::Multiaddr) -> bool {
    attacker
        .handle()
        .add_peer_addrs(target.peer_id(), vec![addr.clone()])
        .await
        .expect("address book");
    attacker.handle().dial(addr.clone()).await.expect("dial") == target.peer_id()
}

/// Waits for the target's next `PeerPenalised` event about `peer`.
async fn next_penalty(events: &mut broadcast::Receiver<NetEvent>, peer: PeerId) -> (String, bool) {
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await {
                Ok(NetEvent::PeerPenalised {
                    peer_id,
                    reason,
                    banned,
                }) if peer_id == peer => return Some((reason, banned)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await;
    found
        .ok()
        .flatten()
        .expect("the target penalised the sender of a bad kad message")
}

/// Sends `payload` on a fresh kad stream, checks that the target answered
/// nothing, penalised the sender for it and closed its connection.
async fn offend(
    attacker: &NetNode,
    target: &NetNode,
    events: &mut broadcast::Receiver<NetEvent>,
    payload: &[u8],
) -> (String, bool) {
    let answered = send_on_kad(attacker.handle(), target.peer_id(), payload).await;
    assert_eq!(answered, 0, "the target answered a bad kad message");
    let verdict = next_penalty(events, attacker.peer_id()).await;
    let t = target.peer_id();
    wait_for_peers(
        attacker.handle(),
        Duration::from_secs(10),
        "the target dropped the offending connection",
        |ps| !has_peer(ps, t),
    )
    .await;
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_kad_messages_are_penalised() {
    common::init_tracing();
    let target = start(NetConfig::for_tests()).await;
    let target_addr = tcp_addr(&target).await;
    let mut events = target.handle().subscribe();
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
    assert!(know_target(&attacker, &target, &target_addr).await);

    // 1. A length prefix claiming ~2^63 bytes.
    let huge_prefix = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3,
    ];
    let (reason, banned) = offend(&attacker, &target, &mut events, &huge_prefix).await;
    assert!(reason.contains("limit"), "{reason}");
    assert!(!banned, "one offence does not ban");
    // 2. A length prefix just over the 16 KiB limit, then that much data.
    let mut over = vec![0x81, 0x80, 0x01]; // varint 16385
    over.extend(std::iter::repeat_n(0u8, 16385));
    let (reason, banned) = offend(&attacker, &target, &mut events, &over).await;
    assert!(reason.contains("16385 bytes"), "{reason}");
    assert!(!banned);
    let s = target.handle().status().await.expect("status");
    assert_eq!(
        (s.malformed_messages, s.penalised_peers, s.banned_peers),
        (2, 1, 0)
    );
    // 3. A valid length with bytes that are not a protobuf message: the
    //    third offence bans the attacker.
    let mut junk = vec![64];
    junk.extend(std::iter::repeat_n(0xffu8, 64));
    let (reason, banned) = offend(&attacker, &target, &mut events, &junk).await;
    assert!(reason.contains("does not decode"), "{reason}");
    assert!(banned, "the third offence bans");
    let s = target.handle().status().await.expect("status");
    assert_eq!((s.malformed_messages, s.banned_peers), (3, 1));
    // A banned peer cannot connect again: the handshake completes (so the
    // dial may even report success), then the target denies the connection.
    let _ = attacker.handle().dial(target_addr.clone()).await;
    wait_for_status(
        target.handle(),
        Duration::from_secs(10),
        "the banned peer's new connection denied",
        |s| s.connection_errors.get("incoming: peer banned") >= Some(&1),
    )
    .await;
    let a = attacker.peer_id();
    let peers = target.handle().peers().await.expect("peers");
    assert!(!has_peer(&peers, a), "the banned peer is connected");

    // A second attacker: a truncated message (prefix says 100, stream ends
    // after 3), then a megabyte of noise.
    let second = start(NetConfig::for_tests()).await;
    assert!(know_target(&second, &target, &target_addr).await);
    let (reason, banned) = offend(&second, &target, &mut events, &[100, 1, 2, 3]).await;
    assert!(reason.contains("cut short"), "{reason}");
    assert!(!banned);
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // The noise behind a plausible length (16,000 bytes): only the guard's
    // decode of that first frame can tell. (A noise stream that happened to
    // start with a valid frame would be answered, and its rest dropped by
    // kad without a penalty: the guard checks the first frame of a stream,
    // and libp2p-kad sends one request per stream.)
    let mut noisy = vec![0x80, 0x7d];
    noisy.extend_from_slice(&noise);
    let (reason, banned) = offend(&second, &target, &mut events, &noisy).await;
    assert!(reason.contains("does not decode"), "{reason}");
    assert!(!banned, "two offences do not ban");
    let s = target.handle().status().await.expect("status");
    assert_eq!(
        (s.malformed_messages, s.penalised_peers, s.banned_peers),
        (5, 2, 1)
    );

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

    // Well-formed kad traffic is not penalised: the lookup above and the
    // provider's announcement added nothing to the count.
    let s = target.handle().status().await.expect("status");
    assert_eq!(s.malformed_messages, 5);

    for n in [fresh, second, attacker, provider, target] {
        n.shutdown().await;
    }
}
