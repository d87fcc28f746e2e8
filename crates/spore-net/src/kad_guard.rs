//! Kademlia behind a guard that reports malformed inbound messages.
//!
//! libp2p-kad 0.49 drops an inbound stream whose message does not decode or
//! is larger than the packet limit, and tells nobody (a trace log), so the
//! node could not score the sender down. This wrapper puts one step in front
//! of kad's inbound upgrade: it reads the first length-prefixed frame of
//! every inbound `/spore/kad/1.0.0` stream itself (bounded by
//! [`KAD_MAX_PACKET`] and by the swarm's upgrade timeout), checks that it
//! decodes with kad's own codec, and then hands kad the stream with that
//! frame put back in front of its read buffer. A frame that is oversized,
//! truncated or undecodable fails the upgrade instead, and the handler
//! reports it to the behaviour, which emits [`Event::Malformed`].
//!
//! libp2p-kad opens one stream per request, so checking the first frame
//! covers every request a conforming peer sends; later frames on a reused
//! stream are still checked by kad (and dropped silently).
//!
//! Everything else passes through untouched; the actor uses the inner
//! behaviour through `Deref`.

use std::{
    collections::VecDeque,
    fmt,
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use futures::{AsyncReadExt, StreamExt, future::BoxFuture};
use libp2p::{
    Multiaddr, PeerId, Stream,
    core::{Endpoint, UpgradeInfo, transport::PortUse, upgrade::InboundUpgrade},
    kad,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound, ListenUpgradeError},
    },
};

use crate::{behaviour::KAD_MAX_PACKET, store::ProviderStore};

type Kad = kad::Behaviour<ProviderStore>;
type KadHandler = THandler<Kad>;
type KadInbound = <KadHandler as ConnectionHandler>::InboundProtocol;
type KadHandlerIn = <KadHandler as ConnectionHandler>::FromBehaviour;
type KadHandlerOut = <KadHandler as ConnectionHandler>::ToBehaviour;

/// Offences reported per connection before the behaviour reads them; more
/// are dropped (the peer is disconnected after the first anyway).
const MAX_PENDING_PER_CONNECTION: usize = 8;
/// Offences waiting for the swarm task, across connections.
const MAX_PENDING: usize = 256;

/// What was wrong with a peer's Kademlia message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KadOffence {
    /// The length prefix is not a valid varint.
    BadLengthPrefix,
    /// The length prefix announces more than [`KAD_MAX_PACKET`] bytes.
    Oversized(u64),
    /// The stream ended inside the frame.
    Truncated,
    /// The frame is not a Kademlia message.
    Undecodable,
}

impl fmt::Display for KadOffence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLengthPrefix => write!(f, "kad message with a bad length prefix"),
            Self::Oversized(n) => write!(
                f,
                "kad message of {n} bytes (over the {KAD_MAX_PACKET}-byte limit)"
            ),
            Self::Truncated => write!(f, "kad message cut short"),
            Self::Undecodable => write!(f, "kad message that does not decode"),
        }
    }
}

/// Why the guarded inbound upgrade failed.
#[derive(Debug)]
pub(crate) enum GuardError<E> {
    /// The peer sent something kad would reject.
    Malformed(KadOffence),
    /// Reading failed (reset, closed connection): not the peer's fault as
    /// far as we can tell.
    Io(std::io::Error),
    /// Kad's own upgrade failed.
    Inner(E),
}

impl<E: fmt::Debug> fmt::Display for GuardError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(o) => write!(f, "{o}"),
            Self::Io(e) => write!(f, "reading a kad message: {e}"),
            Self::Inner(e) => write!(f, "kad upgrade: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for GuardError<E> {}

/// Reads one unsigned-varint length-prefixed frame, prefix included.
/// `Ok(None)`: the stream ended before its first byte (nothing was sent).
async fn read_first_frame(
    stream: &mut Stream,
    max: usize,
) -> Result<Option<Vec<u8>>, GuardError<std::convert::Infallible>> {
    let mut frame = Vec::new();
    let mut len: u64 = 0;
    for i in 0..10u32 {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(GuardError::Malformed(KadOffence::Truncated)),
            Ok(_) => {}
            Err(e) => return Err(GuardError::Io(e)),
        }
        frame.push(byte[0]);
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if len > max as u64 {
            return Err(GuardError::Malformed(KadOffence::Oversized(len)));
        }
        if byte[0] & 0x80 == 0 {
            let body_len = usize::try_from(len).unwrap_or(usize::MAX);
            let start = frame.len();
            frame.resize(start + body_len, 0);
            return match stream.read_exact(&mut frame[start..]).await {
                Ok(()) => Ok(Some(frame)),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Err(GuardError::Malformed(KadOffence::Truncated))
                }
                Err(e) => Err(GuardError::Io(e)),
            };
        }
    }
    Err(GuardError::Malformed(KadOffence::BadLengthPrefix))
}

/// Kad's inbound upgrade with the first frame checked first.
#[derive(Clone)]
pub(crate) struct GuardedUpgrade(KadInbound);

impl UpgradeInfo for GuardedUpgrade {
    type Info = <KadInbound as UpgradeInfo>::Info;
    type InfoIter = <KadInbound as UpgradeInfo>::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

type KadInboundError = <KadInbound as InboundUpgrade<Stream>>::Error;

impl InboundUpgrade<Stream> for GuardedUpgrade {
    type Output = <KadInbound as InboundUpgrade<Stream>>::Output;
    type Error = GuardError<KadInboundError>;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, mut socket: Stream, info: Self::Info) -> Self::Future {
        Box::pin(async move {
            let first = match read_first_frame(&mut socket, KAD_MAX_PACKET).await {
                Ok(first) => first.unwrap_or_default(),
                Err(GuardError::Malformed(o)) => return Err(GuardError::Malformed(o)),
                Err(GuardError::Io(e)) => return Err(GuardError::Io(e)),
                Err(GuardError::Inner(never)) => match never {},
            };
            if !first.is_empty() {
                // Decode a copy with kad's own codec (its types are private;
                // the upgrade is generic over the I/O, so memory will do).
                let copy = futures::io::Cursor::new(first.clone());
                let trial = InboundUpgrade::upgrade_inbound(self.0.clone(), copy, info.clone())
                    .await
                    .map_err(GuardError::Inner)?;
                let decodes = match trial {
                    futures::future::Either::Left(mut framed) => {
                        matches!(framed.next().await, Some(Ok(_)))
                    }
                    futures::future::Either::Right(never) => match never {},
                };
                if !decodes {
                    return Err(GuardError::Malformed(KadOffence::Undecodable));
                }
            }
            let out = InboundUpgrade::upgrade_inbound(self.0, socket, info)
                .await
                .map_err(GuardError::Inner)?;
            Ok(match out {
                futures::future::Either::Left(framed) => {
                    // Kad decodes from its read buffer before reading the
                    // socket, so the frame we took is read first.
                    let mut parts = framed.into_parts();
                    let rest = std::mem::take(&mut parts.read_buffer);
                    parts.read_buffer.extend_from_slice(&first);
                    parts.read_buffer.extend_from_slice(&rest);
                    futures::future::Either::Left(asynchronous_codec::Framed::from_parts(parts))
                }
                right => right,
            })
        })
    }
}

/// What the guarded handler tells the behaviour.
#[derive(Debug)]
pub(crate) enum HandlerOut {
    Kad(KadHandlerOut),
    Malformed(KadOffence),
}

/// Kad's connection handler with the guarded inbound upgrade.
pub(crate) struct Handler {
    inner: KadHandler,
    offences: VecDeque<KadOffence>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = KadHandlerIn;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = GuardedUpgrade;
    type OutboundProtocol = <KadHandler as ConnectionHandler>::OutboundProtocol;
    type InboundOpenInfo = <KadHandler as ConnectionHandler>::InboundOpenInfo;
    type OutboundOpenInfo = <KadHandler as ConnectionHandler>::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        let inner = self.inner.listen_protocol();
        let timeout = *inner.timeout();
        let (upgrade, info) = inner.into_upgrade();
        SubstreamProtocol::new(GuardedUpgrade(upgrade), info).with_timeout(timeout)
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(o) = self.offences.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                HandlerOut::Malformed(o),
            ));
        }
        self.inner.poll(cx).map(|e| e.map_custom(HandlerOut::Kad))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx).map(|e| e.map(HandlerOut::Kad))
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.inner.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { protocol, info }) => {
                self.inner
                    .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(
                        FullyNegotiatedInbound { protocol, info },
                    ));
            }
            ConnectionEvent::ListenUpgradeError(ListenUpgradeError { info, error }) => {
                match error {
                    GuardError::Malformed(o) => {
                        if self.offences.len() < MAX_PENDING_PER_CONNECTION {
                            self.offences.push_back(o);
                        }
                    }
                    GuardError::Io(e) => tracing::debug!(error = %e, "kad inbound stream failed"),
                    GuardError::Inner(error) => {
                        self.inner
                            .on_connection_event(ConnectionEvent::ListenUpgradeError(
                                ListenUpgradeError { info, error },
                            ));
                    }
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(e) => self
                .inner
                .on_connection_event(ConnectionEvent::FullyNegotiatedOutbound(e)),
            ConnectionEvent::DialUpgradeError(e) => self
                .inner
                .on_connection_event(ConnectionEvent::DialUpgradeError(e)),
            ConnectionEvent::AddressChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::AddressChange(e)),
            ConnectionEvent::LocalProtocolsChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::LocalProtocolsChange(e)),
            ConnectionEvent::RemoteProtocolsChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::RemoteProtocolsChange(e)),
            _ => {}
        }
    }
}

/// What the guarded behaviour reports.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "kad's own event is large; boxing it would allocate for every kad event to shrink the rare offence"
)]
pub(crate) enum Event {
    Kad(kad::Event),
    /// `peer` sent a message on `connection` that kad would have dropped.
    Malformed {
        peer: PeerId,
        connection: ConnectionId,
        offence: KadOffence,
    },
}

/// Kademlia plus the malformed-message guard. Derefs to the kad behaviour.
pub(crate) struct GuardedKad {
    inner: Kad,
    offences: VecDeque<(PeerId, ConnectionId, KadOffence)>,
}

impl GuardedKad {
    pub(crate) fn new(inner: Kad) -> Self {
        Self {
            inner,
            offences: VecDeque::new(),
        }
    }

    fn wrap(inner: KadHandler) -> Handler {
        Handler {
            inner,
            offences: VecDeque::new(),
        }
    }
}

impl Deref for GuardedKad {
    type Target = Kad;
    fn deref(&self) -> &Kad {
        &self.inner
    }
}

impl DerefMut for GuardedKad {
    fn deref_mut(&mut self) -> &mut Kad {
        &mut self.inner
    }
}

impl NetworkBehaviour for GuardedKad {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

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
        self.inner
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(Self::wrap)
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
        self.inner
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(Self::wrap)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerOut::Kad(e) => self.inner.on_connection_handler_event(peer, connection, e),
            HandlerOut::Malformed(offence) => {
                if self.offences.len() < MAX_PENDING {
                    self.offences.push_back((peer, connection, offence));
                }
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer, connection, offence)) = self.offences.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(Event::Malformed {
                peer,
                connection,
                offence,
            }));
        }
        self.inner.poll(cx).map(|e| e.map_out(Event::Kad))
    }
}
