//! Per-IP limit on inbound connections, as a tiny `NetworkBehaviour`.
//!
//! libp2p's connection-limits behaviour counts per peer and in total, but a
//! flood from one host with fresh peer ids per connection needs a per-address
//! cap. The counting is a pure [`IpCounter`] so it can be unit tested. This
//! behaviour never emits events and never touches outbound connections.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, multiaddr::Protocol, transport::PortUse},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::ListenFailure, dummy,
    },
};

/// The IP of an address, if it has one (relay circuits and DNS names do not).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Denial reason handed to the swarm.
#[derive(Debug)]
pub struct TooManyFromIp {
    pub ip: IpAddr,
    pub limit: u32,
}

impl fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} already has {} inbound connections (the per-IP limit)",
            self.ip, self.limit
        )
    }
}

impl std::error::Error for TooManyFromIp {}

/// Inbound connections per IP, pending and established alike.
#[derive(Debug, Default)]
pub struct IpCounter {
    max: u32,
    conns: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
}

impl IpCounter {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Admits connection `id` from `ip`, or says why not.
    pub fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), TooManyFromIp> {
        let count = self.per_ip.entry(ip).or_default();
        if *count >= self.max {
            return Err(TooManyFromIp {
                ip,
                limit: self.max,
            });
        }
        *count += 1;
        self.conns.insert(id, ip);
        Ok(())
    }

    /// Forgets connection `id` (closed, or failed before it was established).
    pub fn release(&mut self, id: ConnectionId) {
        if let Some(ip) = self.conns.remove(&id)
            && let Some(count) = self.per_ip.get_mut(&ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    pub fn count(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }
}

/// The behaviour: admits at the pending stage, releases on close or failure.
#[derive(Debug)]
pub struct Behaviour {
    counter: Option<IpCounter>,
}

impl Behaviour {
    /// `None` disables the limit.
    pub fn new(max_per_ip: Option<u32>) -> Self {
        Self {
            counter: max_per_ip.map(IpCounter::new),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if let (Some(counter), Some(ip)) = (self.counter.as_mut(), ip_of(remote_addr)) {
            counter
                .admit(connection_id, ip)
                .map_err(ConnectionDenied::new)?;
        }
        Ok(())
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

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let Some(counter) = self.counter.as_mut() else {
            return;
        };
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                counter.release(connection_id)
            }
            _ => {}
        }
    }

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
    fn limit_per_ip_and_release() {
        let mut c = IpCounter::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let id = ConnectionId::new_unchecked;
        c.admit(id(1), a).unwrap();
        c.admit(id(2), a).unwrap();
        let denied = c.admit(id(3), a).unwrap_err();
        assert_eq!(denied.ip, a);
        c.admit(id(4), b).unwrap();
        c.release(id(1));
        c.release(id(1)); // twice is harmless
        c.release(id(99)); // unknown is harmless
        assert_eq!(c.count(&a), 1);
        c.admit(id(5), a).unwrap();
        c.release(id(2));
        c.release(id(5));
        assert_eq!(c.count(&a), 0);
        assert!(!c.per_ip.contains_key(&a), "empty entries are dropped");
    }

    #[test]
    fn ip_is_read_from_tcp_quic_and_not_from_circuits() {
        let tcp: Multiaddr = "/ip4/1.2.3.4/tcp/5".parse().unwrap();
        let quic: Multiaddr = "/ip6/::1/udp/5/quic-v1".parse().unwrap();
        let dns: Multiaddr = "/dns4/example.com/tcp/5".parse().unwrap();
        assert_eq!(ip_of(&tcp), Some([1, 2, 3, 4].into()));
        assert!(ip_of(&quic).is_some());
        assert_eq!(ip_of(&dns), None);
    }
}
