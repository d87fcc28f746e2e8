//! mDNS with tasks that end when the node ends.
//!
//! libp2p-mdns 0.49 spawns one task per network interface with
//! `tokio::spawn` and only aborts it when the interface goes away, not when
//! the behaviour is dropped, so every stopped node would leak those tasks
//! (and their UDP sockets) for the life of the process. This wrapper runs
//! the inner behaviour with a small runtime of its own entered, so those
//! tasks and sockets live there, and shuts that runtime down on drop. It must
//! stay a pure pass-through otherwise.

use std::task::{Context, Poll};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    mdns,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
};

type Inner = mdns::tokio::Behaviour;

pub(crate) struct Mdns {
    inner: Inner,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns").finish_non_exhaustive()
    }
}

impl Mdns {
    pub(crate) fn new(config: mdns::Config, peer: PeerId) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("spore-mdns")
            .enable_all()
            .build()?;
        let inner = {
            let _guard = runtime.enter();
            Inner::new(config, peer)?
        };
        Ok(Self {
            inner,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside the swarm
        // task; shutting it down in the background is.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl NetworkBehaviour for Mdns {
    type ConnectionHandler = <Inner as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = <Inner as NetworkBehaviour>::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let _guard = self.runtime.as_ref().map(|r| r.enter());
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let _guard = self.runtime.as_ref().map(|r| r.enter());
        self.inner.poll(cx)
    }
}
