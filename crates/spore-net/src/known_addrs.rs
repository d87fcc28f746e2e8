//! Addresses of peers we were told about (ticket hints, the address book)
//! but have no routing-table entry for, offered to the swarm when it dials.
//!
//! libp2p 0.57's `Swarm::add_peer_address` only notifies behaviours; nothing
//! in our set keeps those addresses for later dials, so `open_stream` to a
//! peer known only from a ticket would fail with "no addresses". Bounded
//! (oldest peer evicted first); never emits events.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

const MAX_PEERS: usize = 1024;
const MAX_ADDRS: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    order: VecDeque<PeerId>,
}

impl Behaviour {
    pub(crate) fn add(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if !self.addrs.contains_key(&peer) {
            if self.order.len() >= MAX_PEERS
                && let Some(old) = self.order.pop_front()
            {
                self.addrs.remove(&old);
            }
            self.order.push_back(peer);
        }
        let list = self.addrs.entry(peer).or_default();
        for a in addrs {
            if !list.contains(&a) {
                list.insert(0, a);
            }
        }
        list.truncate(MAX_ADDRS);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(maybe_peer
            .and_then(|p| self.addrs.get(&p).cloned())
            .unwrap_or_default())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first() {
        let mut b = Behaviour::default();
        let p = PeerId::random();
        let addr = |i: u16| -> Multiaddr { format!("/ip4/10.0.0.1/tcp/{i}").parse().unwrap() };
        b.add(p, (0..20).map(addr));
        let got = b
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(1),
                Some(p),
                &[],
                Endpoint::Dialer,
            )
            .unwrap();
        assert_eq!(got.len(), MAX_ADDRS);
        assert_eq!(got[0], addr(19));
        for _ in 0..MAX_PEERS {
            b.add(PeerId::random(), [addr(1)]);
        }
        assert!(!b.addrs.contains_key(&p), "oldest evicted");
        assert_eq!(b.addrs.len(), MAX_PEERS);
    }
}
