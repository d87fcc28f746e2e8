//! Yamux, with data frames as large as a bulk write.
//!
//! rust-yamux cuts every stream write into data frames of at most 16 KiB
//! unless told otherwise, and libp2p-yamux offers no way to tell it. Each of
//! those frames is its own TLS record flush and its own `writev`, and on
//! the other side its own allocation and wake-up: 16 of each per 256 KiB
//! data frame of `/spore/blob/1`. [`Yamux`] is the same multiplexer
//! (`/yamux/1.0.0`, wire-compatible with every other Yamux) with frames of
//! up to [`SPLIT_SEND_SIZE`]. Receivers accept any frame their window
//! allows, and rust-yamux's windows start at 256 KiB.

use std::{
    collections::VecDeque,
    io, iter,
    pin::Pin,
    task::{Context, Poll, Waker, ready},
};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::{
    UpgradeInfo,
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
};

/// The largest Yamux data frame this node sends.
///
/// 64 KiB: four TLS records per system call, while a control message on
/// another stream of a slow link (25 Mbit/s) waits at most ~20 ms behind a
/// frame already started.
pub(crate) const SPLIT_SEND_SIZE: usize = 64 * 1024;

/// Inbound streams held while nobody accepts them; more are reset (as
/// libp2p-yamux does, and equal to rust-yamux's ACK backlog, so a
/// well-behaved peer never opens more).
const MAX_BUFFERED_INBOUND_STREAMS: usize = 256;

/// The Yamux upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Yamux(yamux::Config);

impl Default for Yamux {
    fn default() -> Self {
        let mut config = yamux::Config::default();
        config.set_split_send_size(SPLIT_SEND_SIZE);
        Self(config)
    }
}

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Client)))
    }
}

/// One multiplexed connection.
#[derive(Debug)]
pub(crate) struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams that arrived while the connection was driven by
    /// [`StreamMuxer::poll`] rather than [`StreamMuxer::poll_inbound`]:
    /// Yamux only makes progress through `poll_next_inbound`.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Muxer<C> {
    fn new(io: C, config: yamux::Config, mode: yamux::Mode) -> Self {
        Self {
            connection: yamux::Connection::new(io, config, mode),
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }

    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Error>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(stream) => Poll::Ready(stream.map_err(Error)),
            None => Poll::Ready(Err(Error(yamux::ConnectionError::Closed))),
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> StreamMuxer for Muxer<C> {
    type Substream = yamux::Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(result) = this.poll_next_inbound(cx) {
            return Poll::Ready(result);
        }
        this.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut()
            .connection
            .poll_new_outbound(cx)
            .map_err(Error)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx).map_err(Error)
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_next_inbound(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND_STREAMS {
            tracing::warn!(%stream, "inbound stream reset: too many waiting to be accepted");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Let the caller run other work before driving the connection again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A Yamux connection failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Error(yamux::ConnectionError);

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err.0 {
            yamux::ConnectionError::Io(e) => e,
            e => io::Error::other(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::muxing::StreamMuxerExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    /// Keeps a copy of every byte written through it.
    struct Tap<S> {
        inner: S,
        wire: Arc<Mutex<Vec<u8>>>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            this.wire.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_close(cx)
        }
    }

    /// Drives a connection (Yamux moves frames only while polled).
    fn drive<C: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut muxer: Muxer<C>) {
        tokio::spawn(future::poll_fn(move |cx| {
            while let Poll::Ready(result) = muxer.poll_unpin(cx) {
                if result.is_err() {
                    return Poll::Ready(());
                }
            }
            Poll::<()>::Pending
        }));
    }

    /// The data frames on the wire, as (type, length) of each Yamux header.
    fn frames(mut wire: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        while wire.len() >= 12 {
            let (kind, len) = (wire[1], u32::from_be_bytes(wire[8..12].try_into().unwrap()));
            // Only data frames (type 0) carry a body; the others' length is a value.
            let body = if kind == 0 { len as usize } else { 0 };
            out.push((kind, len as usize));
            wire = &wire[12 + body..];
        }
        out
    }

    #[tokio::test]
    async fn bulk_writes_leave_in_frames_of_64_kib_and_arrive_whole() {
        let (left, right) = tokio::io::duplex(1 << 20);
        let wire = Arc::new(Mutex::new(Vec::new()));
        let tapped = Tap {
            inner: left.compat(),
            wire: wire.clone(),
        };
        let mut dialer = Yamux::default()
            .upgrade_outbound(tapped, "/yamux/1.0.0")
            .await
            .unwrap();
        let mut listener = Yamux::default()
            .upgrade_inbound(right.compat(), "/yamux/1.0.0")
            .await
            .unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

        let mut outbound = future::poll_fn(|cx| dialer.poll_outbound_unpin(cx))
            .await
            .unwrap();
        drive(dialer);
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            outbound.write_all(&expected).await.unwrap();
            outbound.close().await.unwrap();
        });
        let mut inbound = future::poll_fn(|cx| listener.poll_inbound_unpin(cx))
            .await
            .unwrap();
        drive(listener);
        let mut received = Vec::new();
        inbound.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();

        assert_eq!(received, payload);
        let data: Vec<usize> = frames(&wire.lock().unwrap())
            .into_iter()
            .filter(|&(kind, len)| kind == 0 && len > 0)
            .map(|(_, len)| len)
            .collect();
        assert_eq!(data.iter().sum::<usize>(), payload.len());
        assert!(data.iter().all(|&len| len <= SPLIT_SEND_SIZE), "{data:?}");
        assert_eq!(data[0], SPLIT_SEND_SIZE, "{data:?}");
    }
}
