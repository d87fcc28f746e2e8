//! TCP gets a head start over QUIC when a peer is dialled on both.
//!
//! The swarm dials every address of a peer at once and keeps the first
//! connection that completes. QUIC needs fewer round trips than TCP with
//! TLS and Yamux, so it won nearly every race, yet bulk data moves slower
//! over it here: ~600 MiB/s against ~1,000 on loopback (DESIGN.md §3), and
//! the testbed swarm finished 15–25% later with QUIC connections than with
//! TCP ones (`docs/benchmarks.md`). So a QUIC dial waits a moment before it
//! sends its first packet: where TCP works it wins, and the QUIC dial is
//! dropped before it has cost a handshake; where TCP is slow or blocked,
//! QUIC goes ahead after the wait.
//!
//! Only dials in the dialer role wait. A hole punch (DCUtR) dials in the
//! listener role on one side; that side keeps punching, so the other
//! side's later start still meets it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, Transport,
    core::{
        Endpoint,
        transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    },
};

/// A transport whose outbound dials start `wait` late.
///
/// It relies on the inner transport doing nothing on the wire before its
/// dial future is first polled, which holds for libp2p-quic (the QUIC
/// handshake starts inside the future).
pub(crate) struct HeadStart<T> {
    inner: T,
    wait: Duration,
}

impl<T> HeadStart<T> {
    pub(crate) fn new(inner: T, wait: Duration) -> Self {
        Self { inner, wait }
    }
}

impl<T> Transport for HeadStart<T>
where
    T: Transport + Unpin,
    T::Dial: Send + 'static,
{
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<T::Output, T::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let wait = match opts.role {
            Endpoint::Dialer => self.wait,
            Endpoint::Listener => Duration::ZERO,
        };
        let dial = self.inner.dial(addr, opts)?;
        Ok(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            dial.await
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use libp2p::core::transport::PortUse;
    use tokio::time::Instant;

    use super::*;

    /// A transport whose dials record when they are first polled, then
    /// fail (so nothing real is dialled).
    #[derive(Default)]
    struct Probe {
        first_polls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Transport for Probe {
        type Output = ();
        type Error = std::io::Error;
        type ListenerUpgrade = futures::future::Pending<Result<(), std::io::Error>>;
        type Dial = BoxFuture<'static, Result<(), std::io::Error>>;

        fn listen_on(
            &mut self,
            _: ListenerId,
            a: Multiaddr,
        ) -> Result<(), TransportError<Self::Error>> {
            Err(TransportError::MultiaddrNotSupported(a))
        }

        fn remove_listener(&mut self, _: ListenerId) -> bool {
            false
        }

        fn dial(
            &mut self,
            _: Multiaddr,
            _: DialOpts,
        ) -> Result<Self::Dial, TransportError<Self::Error>> {
            let polls = Arc::clone(&self.first_polls);
            Ok(async move {
                polls.lock().unwrap().push(Instant::now());
                Err(std::io::Error::other("probe"))
            }
            .boxed())
        }

        fn poll(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
            Poll::Pending
        }
    }

    fn opts(role: Endpoint) -> DialOpts {
        DialOpts {
            role,
            port_use: PortUse::Reuse,
        }
    }

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap()
    }

    /// When a dial in `role` through a head start of `wait` first touched
    /// the inner transport, counted from the dial.
    async fn first_touch(wait: Duration, role: Endpoint) -> Duration {
        let probe = Probe::default();
        let polls = Arc::clone(&probe.first_polls);
        let mut transport = HeadStart::new(probe, wait);
        let t0 = Instant::now();
        let dial = transport.dial(addr(), opts(role)).unwrap();
        assert!(polls.lock().unwrap().is_empty(), "touched before polled");
        assert!(dial.await.is_err());
        let polls = polls.lock().unwrap();
        assert_eq!(polls.len(), 1);
        polls[0] - t0
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_touches_the_inner_transport_only_after_the_wait() {
        let wait = Duration::from_millis(500);
        assert_eq!(first_touch(wait, Endpoint::Dialer).await, wait);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hole_punch_in_the_listener_role_starts_at_once() {
        let wait = Duration::from_millis(500);
        assert_eq!(first_touch(wait, Endpoint::Listener).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn no_head_start_means_no_wait() {
        assert_eq!(
            first_touch(Duration::ZERO, Endpoint::Dialer).await,
            Duration::ZERO
        );
    }
}
