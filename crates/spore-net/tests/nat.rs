#![allow(clippy::unwrap_used)]
//! NAT traversal: relay v2 circuits, DCUtR hole punching and AutoNAT v2,
//! with real TCP on 127.0.0.1 and every node in this process.
//!
//! Loopback has no NAT, so "behind a NAT" is modelled by a node that does not
//! listen at all: it can dial out, but the address others observe for it is
//! an ephemeral port nobody accepts on, exactly what a symmetric NAT leaves.

mod common;

use std::time::Duration;

use common::{start_with, tcp_addr, wait_for_peers, wait_for_status};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use spore_net::{
    Multiaddr, NetConfig, NetEvent, NetHandle, NetNode, PeerId, PeerInfo, Reachability,
    TransportKind, multiaddr::Protocol,
};
use tokio::sync::broadcast;

const ECHO: &str = "/spore/test-echo/1";
const WAIT: Duration = Duration::from_secs(30);

fn relay(c: &mut NetConfig) {
    c.relay_server = true;
}

/// A node that dials out but cannot be dialled: no listener, nothing
/// advertised, Kademlia mode left to libp2p.
fn unreachable(c: &mut NetConfig) {
    c.tcp = false;
    c.advertise_listen_addrs = false;
    c.kad_server_mode = None;
}

/// A node that listens on loopback but advertises nothing, so only AutoNAT
/// (or a hole punch) can tell whether it is reachable.
fn quiet(c: &mut NetConfig) {
    c.advertise_listen_addrs = false;
    c.kad_server_mode = None;
}

fn circuit_via(relay_addr: &Multiaddr) -> Multiaddr {
    relay_addr.clone().with(Protocol::P2pCircuit)
}

/// Answers every stream on [`ECHO`] by echoing it, until dropped.
fn serve_echo(node: &NetNode) -> tokio::task::JoinHandle<()> {
    let mut incoming = node.handle().accept_streams(ECHO).unwrap();
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                    let _ = s.close().await;
                }
            });
        }
    })
}

async fn echo_round_trip(from: &NetHandle, to: PeerId, payload: &[u8]) {
    let mut s = from.open_stream(to, ECHO).await.expect("open stream");
    s.write_all(payload).await.expect("write");
    s.close().await.expect("close write side");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read echo");
    assert_eq!(back, payload);
}

/// Transports of the connections to `peer` in a peer list.
fn transports_in(peers: &[PeerInfo], peer: PeerId) -> Vec<TransportKind> {
    peers
        .iter()
        .filter(|p| p.peer_id == peer)
        .flat_map(|p| p.connections.iter().map(|c| c.transport))
        .collect()
}

/// Transports of our open connections to `peer`.
async fn transports_to(node: &NetHandle, peer: PeerId) -> Vec<TransportKind> {
    transports_in(&node.peers().await.unwrap(), peer)
}

/// Hole-punch outcomes for the pair (B, C), as either side reports them,
/// until one succeeds, or (with `stop_at_failure`) one fails, or [`WAIT`]
/// passes. DCUtR reports on the side that saw the attempt end, which may be
/// either.
async fn hole_punch_outcomes(
    b_events: &mut broadcast::Receiver<NetEvent>,
    b: PeerId,
    c_events: &mut broadcast::Receiver<NetEvent>,
    c: PeerId,
    stop_at_failure: bool,
) -> Vec<Result<(), String>> {
    fn about(
        ev: Result<NetEvent, broadcast::error::RecvError>,
        other: PeerId,
    ) -> Option<Result<(), String>> {
        match ev {
            Ok(NetEvent::HolePunchSucceeded { peer_id }) if peer_id == other => Some(Ok(())),
            Ok(NetEvent::HolePunchFailed { peer_id, reason }) if peer_id == other => {
                Some(Err(reason))
            }
            _ => None,
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let outcome = tokio::select! {
            ev = b_events.recv() => about(ev, c),
            ev = c_events.recv() => about(ev, b),
            _ = tokio::time::sleep_until(deadline) => return seen,
        };
        if let Some(o) = outcome {
            let done = o.is_ok() || stop_at_failure;
            seen.push(o);
            if done {
                return seen;
            }
        }
    }
}

/// (a) B cannot be dialled; it reserves a slot at relay A. C knows nothing
/// but B's relayed address, reaches B through A, and streams and pings work.
/// Neither B nor C accepts direct connections, so DCUtR has nothing to punch
/// and the connection must stay relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_is_reached_through_a_relay() {
    common::init_tracing();
    let a = start_with(relay).await;
    let b = start_with(unreachable).await;
    let c = start_with(unreachable).await;
    assert!(b.handle().listen_addrs().await.unwrap().is_empty());
    let _echo = serve_echo(&b);

    let a_addr = tcp_addr(&a).await;
    let relayed = b
        .handle()
        .listen_on(circuit_via(&a_addr), WAIT)
        .await
        .expect("reservation at the relay");
    let expected = circuit_via(&a_addr).with(Protocol::P2p(b.peer_id()));
    assert_eq!(relayed, expected);
    assert!(
        b.handle().listen_addrs().await.unwrap().contains(&relayed),
        "the circuit is one of B's listen addresses"
    );

    let mut c_events = c.handle().subscribe();
    let mut b_events = b.handle().subscribe();
    let reached = c
        .handle()
        .dial(relayed.clone())
        .await
        .expect("dial via relay");
    assert_eq!(
        reached,
        b.peer_id(),
        "the relayed address leads to B, not to A"
    );
    assert_eq!(
        transports_to(c.handle(), b.peer_id()).await,
        vec![TransportKind::Relay]
    );
    // B registers the inbound circuit a moment after C's dial returns.
    let c_id = c.peer_id();
    wait_for_peers(
        b.handle(),
        WAIT,
        "B sees the inbound circuit as relayed",
        |ps| transports_in(ps, c_id) == [TransportKind::Relay],
    )
    .await;

    let payload: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    echo_round_trip(c.handle(), b.peer_id(), &payload).await;

    // Ping runs over the circuit as well.
    let b_id = b.peer_id();
    wait_for_peers(
        c.handle(),
        WAIT,
        "a ping round trip to B over the relay",
        |ps| ps.iter().any(|p| p.peer_id == b_id && p.latency.is_some()),
    )
    .await;

    // No address to punch to: DCUtR gives up, the circuit stays in use.
    let outcomes =
        hole_punch_outcomes(&mut b_events, b.peer_id(), &mut c_events, c.peer_id(), true).await;
    assert!(
        matches!(outcomes.as_slice(), [Err(_)]),
        "hole punch between two undialable peers must fail, got {outcomes:?}"
    );
    assert_eq!(
        transports_to(c.handle(), b.peer_id()).await,
        vec![TransportKind::Relay]
    );
    echo_round_trip(c.handle(), b.peer_id(), b"still relayed").await;

    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// (b) Same as (a), but B and C listen on loopback (which both can dial), so
/// DCUtR's simultaneous dial succeeds and a direct connection appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_connection_is_upgraded_to_direct_by_dcutr() {
    common::init_tracing();
    let a = start_with(relay).await;
    let b = start_with(quiet).await;
    let c = start_with(quiet).await;
    let _echo = serve_echo(&b);

    let a_addr = tcp_addr(&a).await;
    let relayed = b
        .handle()
        .listen_on(circuit_via(&a_addr), WAIT)
        .await
        .expect("reservation at the relay");
    // DCUtR offers the addresses others observed us at (A's identify tells
    // B and C theirs); a relayed connection takes a snapshot of them when it
    // opens, so both must have heard from A first.
    c.handle().dial(a_addr.clone()).await.expect("C dials A");
    for node in [&b, &c] {
        let a_id = a.peer_id();
        wait_for_peers(node.handle(), WAIT, "A's identify received", |ps| {
            ps.iter()
                .any(|p| p.peer_id == a_id && !p.protocols.is_empty())
        })
        .await;
    }

    let mut b_events = b.handle().subscribe();
    let mut c_events = c.handle().subscribe();
    let reached = c.handle().dial(relayed).await.expect("dial via relay");
    assert_eq!(reached, b.peer_id());

    let outcomes = hole_punch_outcomes(
        &mut b_events,
        b.peer_id(),
        &mut c_events,
        c.peer_id(),
        false,
    )
    .await;
    assert!(
        outcomes.last().is_some_and(Result::is_ok),
        "DCUtR upgrade succeeds on loopback, got {outcomes:?}"
    );

    for (node, other, who) in [(&c, b.peer_id(), "C→B"), (&b, c.peer_id(), "B→C")] {
        wait_for_peers(
            node.handle(),
            WAIT,
            &format!("{who}: a direct TCP connection"),
            |ps| transports_in(ps, other).contains(&TransportKind::Tcp),
        )
        .await;
    }
    // Without the relay, only the direct connection is left, and it works.
    a.shutdown().await;
    let b_id = b.peer_id();
    wait_for_peers(
        c.handle(),
        WAIT,
        "the relayed connection gone with the relay",
        |ps| {
            let t = transports_in(ps, b_id);
            !t.is_empty() && t.iter().all(|t| *t == TransportKind::Tcp)
        },
    )
    .await;
    echo_round_trip(c.handle(), b.peer_id(), b"over the direct path").await;

    c.shutdown().await;
    b.shutdown().await;
}

/// (c) AutoNAT v2: a node that listens on loopback but advertises nothing
/// asks an AutoNAT server to dial it back. The dial-back succeeds, so its
/// address is confirmed, it becomes public and Kademlia switches to server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonat_confirms_a_dialable_address() {
    common::init_tracing();
    let server = start_with(|c| c.autonat_server = true).await;
    let x = start_with(quiet).await;
    let before = x.handle().status().await.unwrap();
    assert_eq!(before.reachability, Reachability::Unknown);
    assert!(before.external_addrs.is_empty());
    assert!(!before.kad_server_mode, "client mode until confirmed");

    x.handle()
        .dial(tcp_addr(&server).await)
        .await
        .expect("dial the AutoNAT server");
    let after = wait_for_status(x.handle(), WAIT, "X public with a confirmed address", |s| {
        s.reachability == Reachability::Public && !s.external_addrs.is_empty()
    })
    .await;
    let listen = x.handle().listen_addrs().await.unwrap();
    assert!(
        after.external_addrs.iter().all(|a| listen.contains(a)),
        "the confirmed address is the one X listens on: {:?} vs {listen:?}",
        after.external_addrs
    );
    assert!(after.kad_server_mode, "Kademlia serves once reachable");

    x.shutdown().await;
    server.shutdown().await;
}

/// (c, negative, plus auto-relay) A node nobody can dial asks the AutoNAT
/// server, the dial-back fails, and it learns it is private: it stays a
/// Kademlia client and, since the server is also a relay, listens through
/// it on its own. A third node then reaches it via that circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonat_private_node_listens_through_a_relay() {
    common::init_tracing();
    let server = start_with(|c| {
        c.autonat_server = true;
        c.relay_server = true;
    })
    .await;
    let x = start_with(|c| {
        unreachable(c);
        c.auto_relay = true;
    })
    .await;
    let _echo = serve_echo(&x);
    x.handle()
        .dial(tcp_addr(&server).await)
        .await
        .expect("dial the AutoNAT server");

    let s = wait_for_status(
        x.handle(),
        WAIT,
        "X private and listening through the relay",
        |s| {
            s.reachability == Reachability::Private
                && s.listen_addrs
                    .iter()
                    .any(|a| TransportKind::of(a) == TransportKind::Relay)
        },
    )
    .await;
    // The relay client confirms the circuit as an external address; no
    // direct one is confirmed, so the node stays private and a client.
    assert!(
        s.external_addrs
            .iter()
            .all(|a| TransportKind::of(a) == TransportKind::Relay),
        "{:?}",
        s.external_addrs
    );
    assert_eq!(s.reachability, Reachability::Private);
    assert!(
        !s.kad_server_mode,
        "a node behind a relay stays a Kademlia client"
    );
    let relayed = s
        .listen_addrs
        .iter()
        .find(|a| TransportKind::of(a) == TransportKind::Relay)
        .cloned()
        .unwrap();

    let y = start_with(|_| {}).await;
    assert_eq!(y.handle().dial(relayed).await.unwrap(), x.peer_id());
    echo_round_trip(y.handle(), x.peer_id(), b"found you").await;

    y.shutdown().await;
    x.shutdown().await;
    server.shutdown().await;
}
