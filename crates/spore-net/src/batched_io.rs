//! Fewer system calls between Yamux and the TCP socket.
//!
//! Yamux writes every frame as two writes, its 12-byte header and then the
//! body, and flushes after each frame; futures-rustls seals each write into
//! TLS records of its own and sends them at once. Without help, every Yamux
//! frame of bulk data (up to 64 KiB, `muxer.rs`) costs two `writev` calls,
//! and on the other side rustls reads the socket 4 KiB at a time.
//! [`Coalesce`] holds small writes back until the next write or flush, and
//! hands them to TLS together with that write, in one vectored call (no copy
//! of the large buffer); a [`BufReader`] under TLS takes what the socket has
//! in one read. [`Batched`] puts both around a
//! security upgrade (Noise buffers its own writes and needs neither).

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture, io::BufReader};
use libp2p::{
    PeerId,
    core::{
        UpgradeInfo,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    },
};

/// Writes up to this long are held back and joined to the next write.
const SMALL_WRITE: usize = 64;
/// Held-back bytes are written out once they reach this much.
const HOLD_MAX: usize = 512;
/// Read-ahead under TLS: a few records per read.
const READ_AHEAD: usize = 64 * 1024;

/// A security upgrade (`U`) that reads its socket through a buffer of
/// [`READ_AHEAD`] bytes and whose secured stream joins small writes.
#[derive(Debug, Clone)]
pub(crate) struct Batched<U>(pub(crate) U);

impl<U: UpgradeInfo> UpgradeInfo for Batched<U> {
    type Info = U::Info;
    type InfoIter = U::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

impl<C, U, S> InboundConnectionUpgrade<C> for Batched<U>
where
    U: InboundConnectionUpgrade<BufReader<C>, Output = (PeerId, S)>,
    U::Future: Send + 'static,
    C: AsyncRead,
{
    type Output = (PeerId, Coalesce<S>);
    type Error = U::Error;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        coalesced(self.0.upgrade_inbound(read_ahead(socket), info))
    }
}

impl<C, U, S> OutboundConnectionUpgrade<C> for Batched<U>
where
    U: OutboundConnectionUpgrade<BufReader<C>, Output = (PeerId, S)>,
    U::Future: Send + 'static,
    C: AsyncRead,
{
    type Output = (PeerId, Coalesce<S>);
    type Error = U::Error;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        coalesced(self.0.upgrade_outbound(read_ahead(socket), info))
    }
}

fn read_ahead<C: AsyncRead>(socket: C) -> BufReader<C> {
    BufReader::with_capacity(READ_AHEAD, socket)
}

/// The secured stream of a finished upgrade, with small writes joined.
fn coalesced<S, E>(
    upgrade: impl Future<Output = Result<(PeerId, S), E>> + Send + 'static,
) -> BoxFuture<'static, Result<(PeerId, Coalesce<S>), E>> {
    upgrade
        .map(|r| r.map(|(peer, secured)| (peer, Coalesce::new(secured))))
        .boxed()
}

/// Joins small writes (headers, window updates, pings) to the write that
/// follows them. Bytes held back reach the inner stream on the next write,
/// flush or close, so a writer that flushes loses no latency.
#[derive(Debug)]
pub(crate) struct Coalesce<S> {
    inner: S,
    held: Vec<u8>,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            held: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything held back.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() <= SMALL_WRITE && this.held.len() + buf.len() <= HOLD_MAX {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        while !this.held.is_empty() {
            let both = [IoSlice::new(&this.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = this.held.len();
            this.held.drain(..n.min(held));
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read_vectored(cx, bufs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt, executor::block_on, future::join};
    use libp2p::identity::Keypair;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    /// Records every write call it gets; accepts at most `limit` bytes per
    /// call and answers `Pending` to every `stall`-th call (waking at once).
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<u8>>,
        flushes: usize,
        closed: bool,
        limit: Option<usize>,
        stall: Option<usize>,
        attempts: usize,
    }

    impl Recorder {
        fn written(&self) -> Vec<u8> {
            self.calls.concat()
        }

        fn accept(
            &mut self,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.attempts += 1;
            if self.stall.is_some_and(|k| self.attempts.is_multiple_of(k)) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut call = Vec::new();
            let limit = self.limit.unwrap_or(usize::MAX);
            for b in bufs {
                let room = limit - call.len();
                call.extend_from_slice(&b[..b.len().min(room)]);
            }
            let n = call.len();
            self.calls.push(call);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().accept(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().accept(cx, bufs)
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().closed = true;
            Poll::Ready(Ok(()))
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_header_and_its_body_reach_the_stream_in_one_call() {
        let mut w = Coalesce::new(Recorder::default());
        let (header, body) = (bytes(12, 1), bytes(16 * 1024, 2));
        block_on(async {
            w.write_all(&header).await.unwrap();
            assert!(w.inner.calls.is_empty(), "the header waits for its body");
            w.write_all(&body).await.unwrap();
            w.flush().await.unwrap();
        });
        assert_eq!(w.inner.calls, vec![[header, body].concat()]);
        assert_eq!(w.inner.flushes, 1);
    }

    #[test]
    fn small_writes_alone_go_out_on_flush_and_on_close() {
        let mut w = Coalesce::new(Recorder::default());
        block_on(async {
            w.write_all(b"window update").await.unwrap();
            w.write_all(b" and a ping").await.unwrap();
            w.flush().await.unwrap();
            assert_eq!(w.inner.written(), b"window update and a ping");
            w.write_all(b"goodbye").await.unwrap();
            w.close().await.unwrap();
        });
        assert_eq!(w.inner.calls.len(), 2, "one call per flush or close");
        assert_eq!(w.inner.written(), b"window update and a pinggoodbye");
        assert!(w.inner.closed);
    }

    #[test]
    fn held_bytes_never_exceed_the_cap() {
        let mut w = Coalesce::new(Recorder::default());
        block_on(async {
            for i in 0..100u8 {
                w.write_all(&[i; 40]).await.unwrap();
                assert!(w.held.len() <= HOLD_MAX);
            }
            w.flush().await.unwrap();
        });
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 40]).collect();
        assert_eq!(w.inner.written(), expected);
    }

    /// Short writes and `Pending` from the stream below, in every pattern:
    /// every byte arrives once, in order.
    #[test]
    fn short_and_stalled_writes_lose_and_repeat_nothing() {
        let sizes = [12, 16 * 1024, 12, 12, 3, 70_000, 64, 65, 1, 12, 500, 12];
        for limit in [1, 5, 12, 13, 100, 4096, 16 * 1024] {
            for stall in [None, Some(2), Some(3), Some(7)] {
                let mut w = Coalesce::new(Recorder {
                    limit: Some(limit),
                    stall,
                    ..Recorder::default()
                });
                let mut expected = Vec::new();
                block_on(async {
                    for (i, len) in sizes.iter().enumerate() {
                        let b = bytes(*len, i as u8);
                        w.write_all(&b).await.unwrap();
                        expected.extend_from_slice(&b);
                        if i % 4 == 3 {
                            w.flush().await.unwrap();
                        }
                    }
                    w.close().await.unwrap();
                });
                assert!(
                    w.inner.written() == expected,
                    "limit {limit}, stall {stall:?}: bytes differ"
                );
            }
        }
    }

    /// The adaptor around spore's TLS upgrade: both ends authenticate and
    /// bulk data with small writes in between crosses both ways intact.
    #[tokio::test]
    async fn tls_through_the_adaptor_carries_data_both_ways() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (left, right) = tokio::io::duplex(64 * 1024);
        let both = join(
            Batched(crate::tls::Config::new(&a).unwrap())
                .upgrade_inbound(left.compat(), crate::tls::PROTOCOL_NAME),
            Batched(crate::tls::Config::new(&b).unwrap())
                .upgrade_outbound(right.compat(), crate::tls::PROTOCOL_NAME),
        );
        let (listener, dialer) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .unwrap();
        let ((seen_dialer, mut listener), (seen_listener, mut dialer)) =
            (listener.unwrap(), dialer.unwrap());
        assert_eq!(seen_dialer, b.public().to_peer_id());
        assert_eq!(seen_listener, a.public().to_peer_id());

        let sent: Vec<u8> = (0..40)
            .flat_map(|i| [bytes(12, i), bytes(16 * 1024 + usize::from(i), i)].concat())
            .collect();
        let send = async {
            for piece in sent.chunks(16 * 1024 + 12) {
                let (header, body) = piece.split_at(12);
                dialer.write_all(header).await.unwrap();
                dialer.write_all(body).await.unwrap();
                dialer.flush().await.unwrap();
            }
            dialer.write_all(b"fin").await.unwrap();
            dialer.flush().await.unwrap();
            let mut reply = [0u8; 5];
            dialer.read_exact(&mut reply).await.unwrap();
            reply
        };
        let receive = async {
            let mut got = vec![0u8; sent.len() + 3];
            listener.read_exact(&mut got).await.unwrap();
            listener.write_all(b"thanks").await.unwrap();
            listener.flush().await.unwrap();
            got
        };
        let (reply, got) = tokio::time::timeout(Duration::from_secs(10), join(send, receive))
            .await
            .unwrap();
        assert_eq!(&reply, b"thank");
        assert_eq!(got, [sent, b"fin".to_vec()].concat());
    }
}
