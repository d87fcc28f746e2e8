//! The `/spore/blob/1` wire protocol as a pure codec: messages, their byte
//! layout, limits, and an incremental decoder. No I/O and no clock; the node
//! drives it over a libp2p stream. The normative spec is `docs/protocol.md`
//! (section "/spore/blob/1"); this module implements exactly that.
//!
//! # Shape
//!
//! One bidirectional stream per peer pair (a few at most), opened by the
//! peer that wants to download. Both sides first send [`Hello`]; after that
//! the session is symmetric: either side may announce what it has, request
//! chunk-group ranges and answer requests. Many requests are pipelined, each
//! with an id that its response echoes. A response is a
//! [`Message::Response`] header, then (when the status is `Ok`) the bao
//! encoding of the requested groups cut into [`Message::Data`] frames, then
//! [`Message::End`]. The payload is exactly what `spore_store::Blob::encode`
//! writes for [`group_chunks`] of the request, [`encoded_len`] bytes of it,
//! and the receiver feeds it to `PartialBlob::ingest`.
//!
//! # Framing
//!
//! `type: u8 | body length: LEB128 varint | body`. The type comes first so a
//! decoder knows the limit that applies before it reads the length: control
//! frames carry at most [`MAX_CONTROL_BODY`] bytes of body, data frames at
//! most [`MAX_DATA_BODY`]. Integers inside bodies are unsigned LEB128 varints
//! in their shortest form, hashes are 32 raw bytes, bitfields use
//! `spore_core::Bitfield`'s byte layout.
//!
//! # Why hand-written varints and not postcard
//!
//! postcard would give the same varints, but its format is whatever serde
//! derives make of our types: the spec would have to describe postcard's
//! rules for enums, options and sequences, a second implementation would
//! need a postcard port, and limits (the length of a string, the number of
//! ranges) are only checked after postcard has allocated. The layout here is
//! small enough to write by hand, each limit is checked before anything is
//! allocated, and encodings are canonical (one byte string per message), so
//! a decoded frame re-encodes to exactly its input. `bytes` is used so that
//! data frames are handed out as slices of the receive buffer, without a copy.
//!
//! # Errors
//!
//! The decoder distinguishes "need more bytes" (`Ok(None)`) from a frame that
//! is too large ([`WireError::TooLarge`]) or malformed
//! ([`WireError::Malformed`]). Either error ends the session: send
//! [`Message::Error`] with [`WireError::code`], close the stream, and count it
//! against the peer. Unknown frame types (other than `0x00`) are decoded as
//! [`Message::Unknown`] and must be ignored: that is how the protocol grows
//! without a new protocol id.
//!
//! Rules that span frames (handshake first, requests in flight, one payload
//! at a time and its exact length) are checked by [`Session`], which the
//! caller feeds every frame it sends and receives; a [`Violation`] ends the
//! session like a decode error, with `ErrorCode::ProtocolViolation`.

mod bao;
mod codec;
mod have;
mod session;
#[cfg(test)]
mod tests;

use std::ops::Range;

use bytes::Bytes;
use spore_core::Hash;

pub use bao::{encoded_len, group_chunks, max_encoded_len};
pub use codec::{DataWriter, Decoder, decode, encode, encode_data_header};
pub use have::have_messages;
pub use session::{Receiving, Session, Violation};

/// The libp2p protocol id.
pub const PROTOCOL: &str = "/spore/blob/1";

/// The revision of `/spore/blob/1` this code speaks, sent in [`Hello`].
pub const VERSION: u32 = 2;

/// Largest body of any frame except [`Message::Data`]: 64 KiB.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

/// Largest payload of one [`Message::Data`] frame: 256 KiB.
pub const MAX_DATA_PAYLOAD: usize = 256 * 1024;

/// Largest body of a [`Message::Data`] frame: the request id (at most 10
/// bytes as a varint) and the payload.
pub const MAX_DATA_BODY: usize = MAX_DATA_PAYLOAD + 10;

/// The longest frame header: the type byte and a 3-byte length.
pub const MAX_HEADER: usize = 4;

/// Most chunk groups one [`Request`] may ask for: 1024 groups, 16 MiB of data.
pub const MAX_REQUEST_GROUPS: u64 = 1024;

/// Highest `max_in_flight` a [`Hello`] may announce.
pub const MAX_IN_FLIGHT: u32 = 1024;

/// What this node announces as `max_in_flight` unless configured otherwise:
/// 256 requests of 1 MiB cover 1 GiB/s at 250 ms round trip.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;

/// Most bitfield bytes in one [`HaveSlice`]: 32 KiB, 262,144 groups, 4 GiB of blob.
pub const MAX_HAVE_BYTES: usize = 32 * 1024;

/// Most ranges in one [`Message::HaveRanges`] or [`Message::Coming`].
pub const MAX_HAVE_RANGES: usize = 2048;

/// Longest [`Message::Error`] text, in bytes of UTF-8.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Frame type bytes.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const ERROR: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const PONG: u8 = 0x04;
    pub const HAVE_ALL: u8 = 0x10;
    pub const HAVE: u8 = 0x11;
    pub const HAVE_RANGES: u8 = 0x12;
    pub const DONT_HAVE: u8 = 0x13;
    pub const WANT_HAVE: u8 = 0x14;
    pub const COMING: u8 = 0x15;
    pub const INTERESTED: u8 = 0x20;
    pub const NOT_INTERESTED: u8 = 0x21;
    pub const CHOKE: u8 = 0x22;
    pub const UNCHOKE: u8 = 0x23;
    pub const REQUEST: u8 = 0x30;
    pub const CANCEL: u8 = 0x31;
    pub const RESPONSE: u8 = 0x32;
    pub const DATA: u8 = 0x33;
    pub const END: u8 = 0x34;

    /// Whether `kind` is a type this revision defines.
    pub const fn is_known(kind: u8) -> bool {
        matches!(
            kind,
            HELLO
                | ERROR
                | PING
                | PONG
                | HAVE_ALL
                | HAVE
                | HAVE_RANGES
                | DONT_HAVE
                | WANT_HAVE
                | COMING
                | INTERESTED
                | NOT_INTERESTED
                | CHOKE
                | UNCHOKE
                | REQUEST
                | CANCEL
                | RESPONSE
                | DATA
                | END
        )
    }

    /// The largest body a frame of this type may have.
    pub const fn max_body(kind: u8) -> usize {
        if kind == DATA {
            super::MAX_DATA_BODY
        } else {
            super::MAX_CONTROL_BODY
        }
    }
}

/// One frame of `/spore/blob/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First frame in each direction.
    Hello(Hello),
    /// The sender is closing the session, and why. Last frame it sends.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Keep-alive; answered with [`Message::Pong`] carrying the same nonce.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The sender has every chunk group of `hash`, a blob of `size` bytes.
    HaveAll {
        hash: Hash,
        size: u64,
    },
    /// Exactly which groups of one stretch of a blob the sender has.
    Have(HaveSlice),
    /// The sender has newly verified these groups of `hash` (sorted, disjoint).
    HaveRanges {
        hash: Hash,
        ranges: Vec<Range<u64>>,
    },
    /// The sender has no group of `hash` (an answer to `WantHave`, or a withdrawal).
    DontHave {
        hash: Hash,
    },
    /// Please tell me what you have of `hash` (a collection member, say).
    WantHave {
        hash: Hash,
    },
    /// The sender has asked for these groups of `hash` (sorted, disjoint)
    /// and will answer requests for them as soon as they verify (revision 2).
    Coming {
        hash: Hash,
        ranges: Vec<Range<u64>>,
    },
    /// The sender wants to download from the receiver.
    Interested,
    NotInterested,
    /// The sender will answer the receiver's requests with [`Status::Choked`].
    Choke,
    /// The sender will serve the receiver's requests.
    Unchoke,
    Request(Request),
    /// Withdraws request `id`; it still gets exactly one final answer.
    Cancel {
        id: u64,
    },
    /// Answer to request `id`. `Ok` is followed by `Data` frames and `End`;
    /// any other status is final.
    Response {
        id: u64,
        status: Status,
    },
    /// A piece of the bao payload of request `id` (1 to [`MAX_DATA_PAYLOAD`] bytes).
    Data {
        id: u64,
        data: Bytes,
    },
    /// End of the payload of request `id`: `Ok` when it is complete, any
    /// other status when the sender gave up part way.
    End {
        id: u64,
        status: Status,
    },
    /// A frame type this revision does not define: ignore it.
    Unknown {
        kind: u8,
        body: Bytes,
    },
}

/// The handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest revision of `/spore/blob/1` the sender speaks (≥ 1).
    pub version: u32,
    /// The blob or collection this session is about.
    pub hash: Hash,
    /// How many of the receiver's requests the sender accepts at once
    /// (1..=[`MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
    /// Optional features, one bit each; none are defined in revision 1 and
    /// unknown bits are ignored.
    pub capabilities: u64,
}

/// Exactly which groups of `start..start + 8 * bits.len()` (cut at the
/// blob's last group) the sender has: a set bit means verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaveSlice {
    pub hash: Hash,
    pub size: u64,
    /// First group of the slice; a multiple of 8.
    pub start: u64,
    /// Bit `i` (byte `i / 8`, bit `i % 8`, least significant first) is group `start + i`.
    pub bits: Bytes,
}

/// A request for the bao encoding of chunk groups `groups` of `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub hash: Hash,
    /// 1..=[`MAX_REQUEST_GROUPS`] groups, within the blob.
    pub groups: Range<u64>,
}

/// How a request was answered, or how a payload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The payload follows (in `Response`) or is complete (in `End`).
    Ok,
    /// The sender does not know this hash.
    NotFound,
    /// The sender knows the hash but has not verified all requested groups.
    NotAvailable,
    /// The sender is choking the receiver.
    Choked,
    /// The sender is overloaded; retry later or elsewhere.
    Busy,
    /// The request was cancelled before (or while) it was served.
    Cancelled,
    /// The request is out of the blob's bounds or breaks a session rule.
    BadRequest,
    /// The sender failed (a disk error, say); not the requester's fault.
    Internal,
    /// A status a later revision defines; treat like a failure.
    Other(u8),
}

impl Status {
    pub const fn to_byte(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::NotAvailable => 2,
            Status::Choked => 3,
            Status::Busy => 4,
            Status::Cancelled => 5,
            Status::BadRequest => 6,
            Status::Internal => 7,
            Status::Other(b) => b,
        }
    }

    pub const fn from_byte(b: u8) -> Self {
        match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::NotAvailable,
            3 => Status::Choked,
            4 => Status::Busy,
            5 => Status::Cancelled,
            6 => Status::BadRequest,
            7 => Status::Internal,
            b => Status::Other(b),
        }
    }
}

/// Why a session is closed, in [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A normal close: done, or no longer interested.
    Goodbye,
    /// The peer sent a frame that does not decode.
    Malformed,
    /// The peer sent a frame over its limit.
    TooLarge,
    /// The peer's `Hello` has a version this node cannot speak.
    UnsupportedVersion,
    /// This node does not have the session's hash.
    NotFound,
    /// This node will not serve the peer (too many peers or streams, banned).
    Refused,
    /// The peer broke a session rule (no `Hello` first, too many requests in
    /// flight, an answer to a request never made, ...).
    ProtocolViolation,
    /// The peer sent nothing for too long.
    Timeout,
    /// This node is shutting down.
    Shutdown,
    /// A code a later revision defines.
    Other(u8),
}

impl ErrorCode {
    pub const fn to_byte(self) -> u8 {
        match self {
            ErrorCode::Goodbye => 0,
            ErrorCode::Malformed => 1,
            ErrorCode::TooLarge => 2,
            ErrorCode::UnsupportedVersion => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::Refused => 5,
            ErrorCode::ProtocolViolation => 6,
            ErrorCode::Timeout => 7,
            ErrorCode::Shutdown => 8,
            ErrorCode::Other(b) => b,
        }
    }

    pub const fn from_byte(b: u8) -> Self {
        match b {
            0 => ErrorCode::Goodbye,
            1 => ErrorCode::Malformed,
            2 => ErrorCode::TooLarge,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::NotFound,
            5 => ErrorCode::Refused,
            6 => ErrorCode::ProtocolViolation,
            7 => ErrorCode::Timeout,
            8 => ErrorCode::Shutdown,
            b => ErrorCode::Other(b),
        }
    }
}

/// A frame that cannot be accepted. Both kinds end the session: send
/// `Error { code: err.code() }`, close the stream and penalise the peer.
/// From [`encode`] it means the caller built an invalid message (a bug here,
/// not the peer's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A length or count over its limit. Detected before anything is allocated.
    #[error("frame type {kind:#04x}: {what} is {got}, over the limit of {max}")]
    TooLarge {
        kind: u8,
        what: &'static str,
        got: u64,
        max: u64,
    },
    /// Bytes that are not a valid frame.
    #[error("frame type {kind:#04x} is malformed: {reason}")]
    Malformed { kind: u8, reason: &'static str },
}

impl WireError {
    /// The code to put in the `Error` frame sent before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            WireError::Malformed { .. } => ErrorCode::Malformed,
        }
    }

    /// The frame type the error is about.
    pub fn kind(&self) -> u8 {
        match self {
            WireError::TooLarge { kind, .. } | WireError::Malformed { kind, .. } => *kind,
        }
    }
}

impl Message {
    /// The frame type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Error { .. } => kind::ERROR,
            Message::Ping { .. } => kind::PING,
            Message::Pong { .. } => kind::PONG,
            Message::HaveAll { .. } => kind::HAVE_ALL,
            Message::Have(_) => kind::HAVE,
            Message::HaveRanges { .. } => kind::HAVE_RANGES,
            Message::DontHave { .. } => kind::DONT_HAVE,
            Message::WantHave { .. } => kind::WANT_HAVE,
            Message::Coming { .. } => kind::COMING,
            Message::Interested => kind::INTERESTED,
            Message::NotInterested => kind::NOT_INTERESTED,
            Message::Choke => kind::CHOKE,
            Message::Unchoke => kind::UNCHOKE,
            Message::Request(_) => kind::REQUEST,
            Message::Cancel { .. } => kind::CANCEL,
            Message::Response { .. } => kind::RESPONSE,
            Message::Data { .. } => kind::DATA,
            Message::End { .. } => kind::END,
            Message::Unknown { kind, .. } => *kind,
        }
    }

    /// Checks every limit and rule of the spec that a single frame can break.
    /// [`encode`] refuses what fails here, and the decoder rejects it.
    pub fn validate(&self) -> Result<(), WireError> {
        let k = self.kind();
        let malformed = |reason| Err(WireError::Malformed { kind: k, reason });
        let too_large = |what, got: u64, max: u64| {
            Err(WireError::TooLarge {
                kind: k,
                what,
                got,
                max,
            })
        };
        match self {
            Message::Hello(h) => {
                if h.version == 0 {
                    return malformed("version 0");
                }
                if h.max_in_flight == 0 {
                    return malformed("max_in_flight is 0");
                }
                if h.max_in_flight > MAX_IN_FLIGHT {
                    return too_large(
                        "max_in_flight",
                        h.max_in_flight.into(),
                        MAX_IN_FLIGHT.into(),
                    );
                }
            }
            Message::Error { code, message } => {
                if matches!(code, ErrorCode::Other(b) if !matches!(ErrorCode::from_byte(*b), ErrorCode::Other(_)))
                {
                    return malformed("error code spelled as Other");
                }
                if message.len() > MAX_ERROR_MESSAGE {
                    return too_large(
                        "error message",
                        message.len() as u64,
                        MAX_ERROR_MESSAGE as u64,
                    );
                }
            }
            Message::Have(slice) => return have::validate_slice(slice),
            Message::HaveRanges { ranges, .. } | Message::Coming { ranges, .. } => {
                if ranges.is_empty() {
                    return malformed("no ranges");
                }
                if ranges.len() > MAX_HAVE_RANGES {
                    return too_large("range count", ranges.len() as u64, MAX_HAVE_RANGES as u64);
                }
                let mut prev_end = 0;
                for r in ranges {
                    if r.start >= r.end {
                        return malformed("empty range");
                    }
                    if r.start < prev_end {
                        return malformed("ranges not sorted and disjoint");
                    }
                    prev_end = r.end;
                }
            }
            Message::Request(r) => {
                if r.groups.start >= r.groups.end {
                    return malformed("empty group range");
                }
                let count = r.groups.end - r.groups.start;
                if count > MAX_REQUEST_GROUPS {
                    return too_large("request groups", count, MAX_REQUEST_GROUPS);
                }
            }
            Message::Response { status, .. } | Message::End { status, .. } => {
                if matches!(status, Status::Other(b) if !matches!(Status::from_byte(*b), Status::Other(_)))
                {
                    return malformed("status spelled as Other");
                }
            }
            Message::Data { data, .. } => {
                if data.is_empty() {
                    return malformed("empty data frame");
                }
                if data.len() > MAX_DATA_PAYLOAD {
                    return too_large("data payload", data.len() as u64, MAX_DATA_PAYLOAD as u64);
                }
            }
            Message::Unknown { kind, body } => {
                if *kind == 0 || kind::is_known(*kind) {
                    return malformed("type 0 or a known type as Unknown");
                }
                if body.len() > MAX_CONTROL_BODY {
                    return too_large("body length", body.len() as u64, MAX_CONTROL_BODY as u64);
                }
            }
            Message::Ping { .. }
            | Message::Pong { .. }
            | Message::HaveAll { .. }
            | Message::DontHave { .. }
            | Message::WantHave { .. }
            | Message::Interested
            | Message::NotInterested
            | Message::Choke
            | Message::Unchoke
            | Message::Cancel { .. } => {}
        }
        Ok(())
    }
}
