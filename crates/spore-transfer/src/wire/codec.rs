//! Byte layout: encoding, the stateless decoder and the buffered [`Decoder`].

use std::{io::Write, ops::Range};

use bytes::{Buf, Bytes, BytesMut};
use spore_core::Hash;

use super::{
    ErrorCode, HaveSlice, Hello, MAX_CONTROL_BODY, MAX_DATA_PAYLOAD, MAX_HEADER, Message, Request,
    Status, WireError, kind,
};

/// Length of `v` as an unsigned LEB128 varint.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Outcome of reading a varint from a buffer that may end early.
enum Varint {
    Value(u64, usize),
    Incomplete,
    Invalid(&'static str),
}

/// Reads a canonical (shortest-form) LEB128 varint of at most 10 bytes.
fn read_varint(buf: &[u8]) -> Varint {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let payload = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Varint::Invalid("varint overflows 64 bits");
        }
        value |= payload << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Varint::Invalid("varint not in shortest form");
            }
            return Varint::Value(value, i + 1);
        }
    }
    if buf.len() >= 10 {
        Varint::Invalid("varint longer than 10 bytes")
    } else {
        Varint::Incomplete
    }
}

/// The exact body length of `msg`.
fn body_len(msg: &Message) -> usize {
    const H: usize = 32;
    match msg {
        Message::Hello(h) => {
            varint_len(h.version.into())
                + H
                + varint_len(h.max_in_flight.into())
                + varint_len(h.capabilities)
        }
        Message::Error { message, .. } => 1 + varint_len(message.len() as u64) + message.len(),
        Message::Ping { nonce } | Message::Pong { nonce } => varint_len(*nonce),
        Message::HaveAll { size, .. } => H + varint_len(*size),
        Message::Have(s) => H + varint_len(s.size) + varint_len(s.start) + s.bits.len(),
        Message::HaveRanges { ranges, .. } | Message::Coming { ranges, .. } => {
            let mut len = H + varint_len(ranges.len() as u64);
            let mut prev_end = 0;
            for r in ranges {
                len += varint_len(r.start - prev_end) + varint_len(r.end - r.start);
                prev_end = r.end;
            }
            len
        }
        Message::DontHave { .. } | Message::WantHave { .. } => H,
        Message::Interested | Message::NotInterested | Message::Choke | Message::Unchoke => 0,
        Message::Request(r) => {
            varint_len(r.id)
                + H
                + varint_len(r.groups.start)
                + varint_len(r.groups.end - r.groups.start)
        }
        Message::Cancel { id } => varint_len(*id),
        Message::Response { id, .. } | Message::End { id, .. } => varint_len(*id) + 1,
        Message::Data { id, data } => varint_len(*id) + data.len(),
        Message::Unknown { body, .. } => body.len(),
    }
}

/// Appends the frame for `msg` to `out`. Fails, writing nothing, when `msg`
/// breaks a limit or rule ([`Message::validate`]): that is a bug of the caller.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    msg.validate()?;
    let k = msg.kind();
    let len = body_len(msg);
    let max = kind::max_body(k);
    if len > max {
        return Err(WireError::TooLarge {
            kind: k,
            what: "body length",
            got: len as u64,
            max: max as u64,
        });
    }
    out.reserve(MAX_HEADER + len);
    out.push(k);
    put_varint(out, len as u64);
    let start = out.len();
    match msg {
        Message::Hello(h) => {
            put_varint(out, h.version.into());
            out.extend_from_slice(h.hash.as_bytes());
            put_varint(out, h.max_in_flight.into());
            put_varint(out, h.capabilities);
        }
        Message::Error { code, message } => {
            out.push(code.to_byte());
            put_varint(out, message.len() as u64);
            out.extend_from_slice(message.as_bytes());
        }
        Message::Ping { nonce } | Message::Pong { nonce } => put_varint(out, *nonce),
        Message::HaveAll { hash, size } => {
            out.extend_from_slice(hash.as_bytes());
            put_varint(out, *size);
        }
        Message::Have(s) => {
            out.extend_from_slice(s.hash.as_bytes());
            put_varint(out, s.size);
            put_varint(out, s.start);
            out.extend_from_slice(&s.bits);
        }
        Message::HaveRanges { hash, ranges } | Message::Coming { hash, ranges } => {
            out.extend_from_slice(hash.as_bytes());
            put_varint(out, ranges.len() as u64);
            let mut prev_end = 0;
            for r in ranges {
                put_varint(out, r.start - prev_end);
                put_varint(out, r.end - r.start);
                prev_end = r.end;
            }
        }
        Message::DontHave { hash } | Message::WantHave { hash } => {
            out.extend_from_slice(hash.as_bytes());
        }
        Message::Interested | Message::NotInterested | Message::Choke | Message::Unchoke => {}
        Message::Request(r) => {
            put_varint(out, r.id);
            out.extend_from_slice(r.hash.as_bytes());
            put_varint(out, r.groups.start);
            put_varint(out, r.groups.end - r.groups.start);
        }
        Message::Cancel { id } => put_varint(out, *id),
        Message::Response { id, status } | Message::End { id, status } => {
            put_varint(out, *id);
            out.push(status.to_byte());
        }
        Message::Data { id, data } => {
            put_varint(out, *id);
            out.extend_from_slice(data);
        }
        Message::Unknown { body, .. } => out.extend_from_slice(body),
    }
    debug_assert_eq!(out.len() - start, len, "body_len disagrees with encode");
    Ok(())
}

/// Appends the header of a `Data` frame for request `id` carrying
/// `payload_len` bytes, so the payload can be written straight after it
/// without a copy. `payload_len` must be 1..=[`MAX_DATA_PAYLOAD`].
pub fn encode_data_header(id: u64, payload_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    if payload_len == 0 {
        return Err(WireError::Malformed {
            kind: kind::DATA,
            reason: "empty data frame",
        });
    }
    if payload_len > MAX_DATA_PAYLOAD {
        return Err(WireError::TooLarge {
            kind: kind::DATA,
            what: "data payload",
            got: payload_len as u64,
            max: MAX_DATA_PAYLOAD as u64,
        });
    }
    out.push(kind::DATA);
    put_varint(out, (varint_len(id) + payload_len) as u64);
    put_varint(out, id);
    Ok(())
}

/// Where a frame starts: its type and body length, and the header's size.
struct Header {
    kind: u8,
    body_len: usize,
    header_len: usize,
}

/// Parses a frame header. `Ok(None)`: more bytes needed.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    let Some(&k) = buf.first() else {
        return Ok(None);
    };
    if k == 0 {
        return Err(WireError::Malformed {
            kind: k,
            reason: "frame type 0 is reserved",
        });
    }
    let max = kind::max_body(k);
    let too_large = |got: u64| WireError::TooLarge {
        kind: k,
        what: "body length",
        got,
        max: max as u64,
    };
    // Every limit is below 2^21: a valid length has at most 3 bytes.
    let len_bytes = &buf[1..buf.len().min(MAX_HEADER)];
    match read_varint(len_bytes) {
        Varint::Value(len, n) => {
            if len > max as u64 {
                return Err(too_large(len));
            }
            Ok(Some(Header {
                kind: k,
                body_len: len as usize,
                header_len: 1 + n,
            }))
        }
        Varint::Incomplete if len_bytes.len() < MAX_HEADER - 1 => Ok(None),
        // Three bytes with the continuation bit: at least 2^21.
        Varint::Incomplete => Err(too_large(1 << 21)),
        Varint::Invalid(reason) => Err(WireError::Malformed { kind: k, reason }),
    }
}

/// Reads the fields of one body; every read is bounds-checked.
struct Body {
    kind: u8,
    buf: Bytes,
}

impl Body {
    fn err(&self, reason: &'static str) -> WireError {
        WireError::Malformed {
            kind: self.kind,
            reason,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        match read_varint(&self.buf) {
            Varint::Value(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            Varint::Incomplete => Err(self.err("body ends inside a varint")),
            Varint::Invalid(reason) => Err(self.err(reason)),
        }
    }

    fn varint_u32(&mut self) -> Result<u32, WireError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.err("value does not fit 32 bits"))
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        if self.buf.is_empty() {
            return Err(self.err("body ends early"));
        }
        Ok(self.buf.get_u8())
    }

    fn hash(&mut self) -> Result<Hash, WireError> {
        if self.buf.len() < 32 {
            return Err(self.err("body ends inside a hash"));
        }
        let mut bytes = [0u8; 32];
        self.buf.copy_to_slice(&mut bytes);
        Ok(Hash::from_bytes(bytes))
    }

    /// `count:varint (gap:varint len:varint) × count`, as absolute ranges.
    fn ranges(&mut self) -> Result<Vec<Range<u64>>, WireError> {
        let count = self.varint()?;
        if count > super::MAX_HAVE_RANGES as u64 {
            return Err(WireError::TooLarge {
                kind: self.kind,
                what: "range count",
                got: count,
                max: super::MAX_HAVE_RANGES as u64,
            });
        }
        // Each range takes at least two bytes: never allocate past the body.
        if count > self.buf.len() as u64 / 2 {
            return Err(self.err("range count runs past the end of the body"));
        }
        let mut ranges = Vec::with_capacity(count as usize);
        let mut prev_end: u64 = 0;
        for _ in 0..count {
            let gap = self.varint()?;
            let len = self.varint()?;
            let start = prev_end
                .checked_add(gap)
                .ok_or_else(|| self.err("range overflows 64 bits"))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| self.err("range overflows 64 bits"))?;
            ranges.push(start..end);
            prev_end = end;
        }
        Ok(ranges)
    }

    fn take(&mut self, n: u64) -> Result<Bytes, WireError> {
        if n > self.buf.len() as u64 {
            return Err(self.err("length runs past the end of the body"));
        }
        Ok(self.buf.split_to(n as usize))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("bytes left over after the last field"))
        }
    }
}

/// Decodes the body of a frame of type `k`.
fn decode_body(k: u8, buf: Bytes) -> Result<Message, WireError> {
    let mut b = Body { kind: k, buf };
    let msg = match k {
        kind::HELLO => Message::Hello(Hello {
            version: b.varint_u32()?,
            hash: b.hash()?,
            max_in_flight: b.varint_u32()?,
            capabilities: b.varint()?,
        }),
        kind::ERROR => {
            let code = ErrorCode::from_byte(b.byte()?);
            let len = b.varint()?;
            if len > super::MAX_ERROR_MESSAGE as u64 {
                return Err(WireError::TooLarge {
                    kind: k,
                    what: "error message",
                    got: len,
                    max: super::MAX_ERROR_MESSAGE as u64,
                });
            }
            let text = b.take(len)?;
            let message = std::str::from_utf8(&text)
                .map_err(|_| b.err("error message is not UTF-8"))?
                .to_owned();
            Message::Error { code, message }
        }
        kind::PING => Message::Ping { nonce: b.varint()? },
        kind::PONG => Message::Pong { nonce: b.varint()? },
        kind::HAVE_ALL => Message::HaveAll {
            hash: b.hash()?,
            size: b.varint()?,
        },
        kind::HAVE => Message::Have(HaveSlice {
            hash: b.hash()?,
            size: b.varint()?,
            start: b.varint()?,
            bits: b.rest(),
        }),
        kind::HAVE_RANGES => Message::HaveRanges {
            hash: b.hash()?,
            ranges: b.ranges()?,
        },
        kind::DONT_HAVE => Message::DontHave { hash: b.hash()? },
        kind::WANT_HAVE => Message::WantHave { hash: b.hash()? },
        kind::COMING => Message::Coming {
            hash: b.hash()?,
            ranges: b.ranges()?,
        },
        kind::INTERESTED => Message::Interested,
        kind::NOT_INTERESTED => Message::NotInterested,
        kind::CHOKE => Message::Choke,
        kind::UNCHOKE => Message::Unchoke,
        kind::REQUEST => {
            let id = b.varint()?;
            let hash = b.hash()?;
            let start = b.varint()?;
            let count = b.varint()?;
            let end = start
                .checked_add(count)
                .ok_or_else(|| b.err("group range overflows 64 bits"))?;
            Message::Request(Request {
                id,
                hash,
                groups: start..end,
            })
        }
        kind::CANCEL => Message::Cancel { id: b.varint()? },
        kind::RESPONSE => Message::Response {
            id: b.varint()?,
            status: Status::from_byte(b.byte()?),
        },
        kind::DATA => Message::Data {
            id: b.varint()?,
            data: b.rest(),
        },
        kind::END => Message::End {
            id: b.varint()?,
            status: Status::from_byte(b.byte()?),
        },
        _ => Message::Unknown {
            kind: k,
            body: b.rest(),
        },
    };
    b.finish()?;
    msg.validate()?;
    Ok(msg)
}

/// Decodes the first frame of `buf`. `Ok(None)` means `buf` holds a correct
/// but incomplete prefix: read more. `Ok(Some((msg, used)))` consumed `used`
/// bytes. Copies the body; [`Decoder`] avoids that.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(h) = parse_header(buf)? else {
        return Ok(None);
    };
    let total = h.header_len + h.body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = Bytes::copy_from_slice(&buf[h.header_len..total]);
    Ok(Some((decode_body(h.kind, body)?, total)))
}

/// An incremental decoder over a byte stream.
///
/// Read at most [`read_limit`](Self::read_limit) bytes from the stream,
/// [`push`](Self::push) them, then call [`decode_next`](Self::decode_next)
/// until it returns `Ok(None)`. Data payloads are slices of the receive
/// buffer, not copies. The buffer holds at most one frame (≤
/// [`super::MAX_DATA_BODY`] + header) beyond what was pushed and not yet
/// decoded, so reads of bounded size, drained before the next, bound memory.
/// After an error the decoder stays failed and returns that error again.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<WireError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    ///
    /// When they start a frame, room for the whole frame is made at once, so
    /// the rest of it is appended in place and never moved. Reads of at most
    /// [`read_limit`](Self::read_limit) let every frame start in a fresh
    /// buffer: the previous frames' payloads still hold the old one.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.buf.is_empty()
            && let Ok(Some(h)) = parse_header(bytes)
        {
            self.buf
                .reserve((h.header_len + h.body_len).max(bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes to read next: `chunk`, or less if the frame under way
    /// ends sooner, so that no read reaches into the frame after it.
    pub fn read_limit(&self, chunk: usize) -> usize {
        match parse_header(&self.buf) {
            Ok(Some(h)) if h.header_len + h.body_len > self.buf.len() => {
                (h.header_len + h.body_len - self.buf.len()).min(chunk)
            }
            _ => chunk,
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the next frame needs, at least (1 when its header
    /// is incomplete; 0 when a frame is ready or the decoder failed).
    pub fn wanted(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match parse_header(&self.buf) {
            Ok(Some(h)) => (h.header_len + h.body_len).saturating_sub(self.buf.len()),
            Ok(None) => 1,
            Err(_) => 0,
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn decode_next(&mut self) -> Result<Option<Message>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.try_next();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        }
        result
    }

    fn try_next(&mut self) -> Result<Option<Message>, WireError> {
        let Some(h) = parse_header(&self.buf)? else {
            return Ok(None);
        };
        let total = h.header_len + h.body_len;
        if self.buf.len() < total {
            // Room for the rest of this frame only: bounded by the type's limit.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total).freeze();
        frame.advance(h.header_len);
        decode_body(h.kind, frame).map(Some)
    }
}

/// A [`Write`] adapter that cuts the bao payload of request `id` into `Data`
/// frames of at most `frame_payload` bytes and hands each whole frame to
/// `sink`. Each frame is built in place, its header slot first, so every
/// payload byte is copied once, into the frame that leaves. Hand it to
/// `Blob::encode`, then call [`finish`](Self::finish) and send
/// `End { id, status: Ok }`.
pub struct DataWriter<S> {
    id: u64,
    frame_payload: usize,
    /// The header's size in a full frame: where the payload starts.
    header_slot: usize,
    /// The open frame (empty when none is open): header slot, then payload.
    frame: Vec<u8>,
    sink: S,
    written: u64,
}

impl<S> std::fmt::Debug for DataWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataWriter")
            .field("id", &self.id)
            .field("frame_payload", &self.frame_payload)
            .field("written", &self.written)
            .finish()
    }
}

impl<S: FnMut(Vec<u8>) -> std::io::Result<()>> DataWriter<S> {
    /// Frames of `frame_payload` bytes (clamped to 1..=[`MAX_DATA_PAYLOAD`]);
    /// 64 KiB or more keeps secure transports fast.
    pub fn new(id: u64, frame_payload: usize, sink: S) -> Self {
        let frame_payload = frame_payload.clamp(1, MAX_DATA_PAYLOAD);
        Self {
            id,
            frame_payload,
            header_slot: data_header_len(id, frame_payload),
            frame: Vec::new(),
            sink,
            written: 0,
        }
    }

    /// Payload bytes accepted so far.
    pub fn payload_written(&self) -> u64 {
        self.written
    }

    /// Sends what is buffered as a last (short) frame.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.close_frame()
    }

    fn close_frame(&mut self) -> std::io::Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let mut frame = std::mem::take(&mut self.frame);
        let payload = frame.len() - self.header_slot;
        let mut header = Vec::with_capacity(self.header_slot);
        encode_data_header(self.id, payload, &mut header).map_err(std::io::Error::other)?;
        // A shorter payload never has a longer header. A short last frame
        // whose length takes fewer varint bytes than a full frame's (with
        // 256 KiB frames: under 16 KiB) has a shorter one; its header then
        // starts later in the slot, and the unused front is dropped.
        let start = self.header_slot - header.len();
        frame[start..self.header_slot].copy_from_slice(&header);
        if start > 0 {
            frame.drain(..start);
        }
        (self.sink)(frame)
    }
}

/// The size of a `Data` frame's header for request `id` and `payload_len` bytes.
fn data_header_len(id: u64, payload_len: usize) -> usize {
    let body = varint_len(id) + payload_len;
    1 + varint_len(body as u64) + varint_len(id)
}

impl<S: FnMut(Vec<u8>) -> std::io::Result<()>> Write for DataWriter<S> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let accepted = data.len();
        let full = self.header_slot + self.frame_payload;
        while !data.is_empty() {
            if self.frame.is_empty() {
                self.frame.reserve_exact(full);
                self.frame.resize(self.header_slot, 0);
            }
            let room = full - self.frame.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.frame.extend_from_slice(now);
            data = rest;
            if self.frame.len() == full {
                self.close_frame()?;
            }
        }
        self.written += accepted as u64;
        Ok(accepted)
    }

    /// Frames are only cut at `frame_payload` bytes or on `finish`, so small
    /// writes never make small frames: nothing to do.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const _: () = assert!(MAX_CONTROL_BODY < 1 << 21 && super::MAX_DATA_BODY < 1 << 21);
