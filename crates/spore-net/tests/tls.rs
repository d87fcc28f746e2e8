#![allow(clippy::unwrap_used)]
//! A stock rust-libp2p swarm that offers only libp2p-tls (no Noise) reaches
//! a spore node over TCP, so spore's own TLS upgrade is what secures the
//! connection; and a dial naming the wrong peer id fails.

mod common;

use std::time::Duration;

use common::{start, tcp_addr};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder,
    multiaddr::Protocol,
    swarm::{DialError, SwarmEvent, dummy},
    tcp, tls, yamux,
};
use spore_net::NetConfig;

fn stock_tls_only_swarm() -> Swarm<dummy::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            tls::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| dummy::Behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Dials `addr` and returns the first connection outcome for that dial.
async fn dial(swarm: &mut Swarm<dummy::Behaviour>, addr: Multiaddr) -> Result<PeerId, String> {
    swarm.dial(addr).unwrap();
    let outcome = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(match error {
                        DialError::WrongPeerId { obtained, .. } => format!("wrong peer {obtained}"),
                        other => other.to_string(),
                    });
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .expect("the dial ends within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_libp2p_tls_dialer_connects_to_a_spore_node() {
    common::init_tracing();
    let node = start(NetConfig::for_tests()).await;
    let mut stock = stock_tls_only_swarm();
    let reached = dial(&mut stock, tcp_addr(&node).await).await.unwrap();
    assert_eq!(reached, node.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_a_spore_node_under_another_peer_id_fails() {
    common::init_tracing();
    let node = start(NetConfig::for_tests()).await;
    let mut stock = stock_tls_only_swarm();
    let mut addr = tcp_addr(&node).await;
    addr.pop();
    let impostor_id = PeerId::random();
    let refused = dial(&mut stock, addr.with(Protocol::P2p(impostor_id)))
        .await
        .unwrap_err();
    assert_eq!(refused, format!("wrong peer {}", node.peer_id()));
}
