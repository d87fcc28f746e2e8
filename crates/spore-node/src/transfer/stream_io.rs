//! Frames of `/spore/blob/1` over a libp2p stream: a reader that decodes
//! with a bounded buffer and a writer with a timeout on every write.

use std::time::Duration;

use futures::{
    AsyncReadExt, AsyncWriteExt,
    io::{ReadHalf, WriteHalf},
};
use spore_net::Stream;
use spore_transfer::wire::{self, Decoder, Message, WireError};

/// Bytes read from the stream at once (the decoder holds at most one frame
/// beyond this).
const READ_CHUNK: usize = 64 * 1024;

/// No single write may take longer than this (a peer that stops reading).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("stream closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    #[error("timed out")]
    Timeout,
}

/// The read half: frames out, bytes in.
pub(crate) struct FrameReader {
    inner: ReadHalf<Stream>,
    decoder: Decoder,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.decoder.buffered())
            .finish()
    }
}

/// The write half.
pub(crate) struct FrameWriter {
    inner: WriteHalf<Stream>,
    scratch: Vec<u8>,
    /// Bytes written and flushes, for the session's closing log line.
    written: u64,
    flushes: u64,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").finish()
    }
}

pub(crate) fn split(stream: Stream) -> (FrameReader, FrameWriter) {
    let (r, w) = stream.split();
    (
        FrameReader {
            inner: r,
            decoder: Decoder::new(),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        },
        FrameWriter {
            inner: w,
            scratch: Vec::with_capacity(256),
            written: 0,
            flushes: 0,
        },
    )
}

impl FrameReader {
    /// The next frame. Cancel-safe: bytes are only consumed from the stream
    /// together with pushing them into the decoder.
    pub(crate) async fn next(&mut self) -> Result<Message, FrameError> {
        loop {
            if let Some(msg) = self.decoder.decode_next()? {
                return Ok(msg);
            }
            let room = self.decoder.read_limit(READ_CHUNK);
            let n = self.inner.read(&mut self.buf[..room]).await?;
            if n == 0 {
                return Err(FrameError::Closed);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    /// The next frame within `timeout`.
    pub(crate) async fn next_within(&mut self, timeout: Duration) -> Result<Message, FrameError> {
        tokio::time::timeout(timeout, self.next())
            .await
            .map_err(|_| FrameError::Timeout)?
    }
}

impl FrameWriter {
    pub(crate) async fn send(&mut self, msg: &Message) -> Result<(), FrameError> {
        self.scratch.clear();
        wire::encode(msg, &mut self.scratch)?;
        let bytes = std::mem::take(&mut self.scratch);
        let result = self.write_raw(&bytes).await;
        self.scratch = bytes;
        result
    }

    /// Bytes written so far, and in how many flushed writes.
    pub(crate) fn written(&self) -> (u64, u64) {
        (self.written, self.flushes)
    }

    /// Writes already framed bytes (data frames from the encoder).
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.written += bytes.len() as u64;
        self.flushes += 1;
        tokio::time::timeout(WRITE_TIMEOUT, async {
            self.inner.write_all(bytes).await?;
            self.inner.flush().await
        })
        .await
        .map_err(|_| FrameError::Timeout)?
        .map_err(FrameError::Io)
    }

    /// Sends `Error` (best effort, briefly) and closes the write half.
    pub(crate) async fn close_with(&mut self, code: wire::ErrorCode, message: &str) {
        let msg = Message::Error {
            code,
            message: message.chars().take(200).collect(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.send(&msg).await;
            let _ = self.inner.close().await;
        })
        .await;
    }
}
