//! The `/spore/search/1` codec: one message per stream, as a frame of a
//! 4-byte big-endian length and that many bytes of postcard. Lengths are
//! checked before anything is allocated, and every decoded message is
//! validated ([`Message::check`]) before it reaches the router. Spec:
//! docs/protocol.md.

use serde::{Deserialize, Serialize};

use crate::{
    filter::{FILTER_BYTES, MAX_LEVELS, RouteFilter},
    query::{MAX_RESULTS_PER_PEER, Query, QueryError, QueryId},
    record::SignedRecord,
};

/// The protocol id on libp2p streams.
pub const PROTOCOL: &str = "/spore/search/1";
/// Largest frame body (a full routing filter, or 64 results, fit).
pub const MAX_FRAME: usize = MAX_LEVELS * FILTER_BYTES + 8 * 1024;
/// Largest encoded query: anything longer is refused unread.
pub const MAX_QUERY_BYTES: usize = 1024;

/// A message of `/spore/search/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A query to answer and maybe forward.
    Query(Query),
    /// Results for a query, travelling back towards its origin.
    Hits {
        id: QueryId,
        records: Vec<SignedRecord>,
    },
    /// The sender's routing filter (replaces the previous one).
    Filter(RouteFilter),
}

/// Why bytes are not a valid message. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is above the limit of {MAX_FRAME}")]
    FrameTooLarge(usize),
    #[error("query of {0} bytes is above the limit of {MAX_QUERY_BYTES}")]
    QueryTooLarge(usize),
    #[error("frame is truncated")]
    Truncated,
    #[error("bytes after the frame")]
    TrailingBytes,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("bad query: {0}")]
    Query(#[from] QueryError),
    #[error("{0} results in one message (at most {MAX_RESULTS_PER_PEER})")]
    TooManyResults(usize),
    #[error("routing filter with {0} levels (at most {MAX_LEVELS})")]
    TooManyLevels(usize),
    #[error("routing filter level of {0} bytes (must be {FILTER_BYTES})")]
    BadLevelSize(usize),
}

impl Message {
    /// Checks the limits and rules a decoder must enforce. Signatures are
    /// checked separately (by the router), because they cost more.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            Message::Query(q) => Ok(q.check()?),
            Message::Hits { records, .. } => {
                if records.len() > usize::from(MAX_RESULTS_PER_PEER) {
                    return Err(WireError::TooManyResults(records.len()));
                }
                Ok(())
            }
            Message::Filter(f) => {
                if f.levels.len() > MAX_LEVELS {
                    return Err(WireError::TooManyLevels(f.levels.len()));
                }
                if let Some(l) = f.levels.iter().find(|l| l.as_bytes().len() != FILTER_BYTES) {
                    return Err(WireError::BadLevelSize(l.as_bytes().len()));
                }
                Ok(())
            }
        }
    }

    /// The frame for this message: length, then body.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a frame body (without its length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Self, WireError> {
        if body.len() > MAX_FRAME {
            return Err(WireError::FrameTooLarge(body.len()));
        }
        // Tag 0 is a query: refuse oversized ones before parsing.
        if body.first() == Some(&0) && body.len() > MAX_QUERY_BYTES {
            return Err(WireError::QueryTooLarge(body.len()));
        }
        let (msg, rest): (Message, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        msg.check()?;
        Ok(msg)
    }

    /// Decodes a whole frame (length prefix included).
    pub fn decode_frame(frame: &[u8]) -> Result<Self, WireError> {
        let len = frame_len(frame)?;
        let body = &frame[4..];
        if body.len() < len {
            return Err(WireError::Truncated);
        }
        if body.len() > len {
            return Err(WireError::TrailingBytes);
        }
        Self::decode_body(body)
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Query(_) => "query",
            Message::Hits { .. } => "hits",
            Message::Filter(_) => "filter",
        }
    }
}

/// Reads and checks the length prefix of a frame.
pub fn frame_len(prefix: &[u8]) -> Result<usize, WireError> {
    let Some(&[a, b, c, d]) = prefix.get(..4).and_then(|s| <&[u8; 4]>::try_from(s).ok()) else {
        return Err(WireError::Truncated);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::FrameTooLarge(len));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use spore_core::Hash;

    use super::*;
    use crate::{
        filter::Bloom,
        query::Filters,
        record::{ItemKind, Media, RecordBody},
    };

    fn query() -> Query {
        Query::new(
            "debian netinst",
            Filters {
                min_size: Some(1),
                media: Some(Media::Archive),
                ..Default::default()
            },
            4,
        )
        .unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let rec = SignedRecord::sign(
            RecordBody {
                id: Hash::of(b"a"),
                name: "debian netinst.iso".into(),
                size: 5,
                kind: ItemKind::Blob,
                parent: None,
            },
            &key,
        );
        let mut bloom = Bloom::new();
        bloom.insert("debian");
        for msg in [
            Message::Query(query()),
            Message::Hits {
                id: QueryId([3; 16]),
                records: vec![rec; 64],
            },
            Message::Filter(RouteFilter {
                levels: vec![bloom; MAX_LEVELS],
            }),
        ] {
            let frame = msg.encode();
            assert!(
                frame.len() - 4 <= MAX_FRAME,
                "{} is {}",
                msg.kind(),
                frame.len()
            );
            assert_eq!(Message::decode_frame(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut big = vec![0u8; 8];
        big[..4].copy_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert_eq!(
            Message::decode_frame(&big),
            Err(WireError::FrameTooLarge(MAX_FRAME + 1))
        );
        let mut q = query();
        q.words = (0..8).map(|i| format!("{i}{}", "w".repeat(60))).collect();
        q.filters.extension = Some("x".repeat(10));
        let mut long = Message::Query(q).encode();
        // Pad a query past the size limit with a trailing name.
        long.extend(std::iter::repeat_n(1u8, 600));
        let body = &long[4..];
        assert!(matches!(
            Message::decode_body(body),
            Err(WireError::QueryTooLarge(_))
        ));
        assert!(matches!(
            Message::decode_body(&[9, 9, 9]),
            Err(WireError::Malformed(_))
        ));
        let mut hops = query();
        hops.hops = 200;
        let frame = Message::Query(hops).encode();
        assert!(matches!(
            Message::decode_frame(&frame),
            Err(WireError::Query(QueryError::TooManyHops(200)))
        ));
        let bad_filter = Message::Filter(RouteFilter {
            levels: vec![Bloom::new(); MAX_LEVELS + 1],
        });
        assert!(matches!(
            Message::decode_body(&bad_filter.encode()[4..]),
            Err(WireError::FrameTooLarge(_) | WireError::TooManyLevels(_))
        ));
        assert_eq!(Message::decode_frame(&[0, 0]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode_frame(&bytes);
            let _ = Message::decode_body(&bytes);
        }

        #[test]
        fn queries_round_trip(words in proptest::collection::vec("[a-z0-9]{2,12}", 1..8),
                              hops in 0u8..=7, min in proptest::option::of(any::<u64>())) {
            let q = Query::new(&words.join(" "), Filters { min_size: min, ..Default::default() }, hops).unwrap();
            let msg = Message::Query(q);
            prop_assert_eq!(Message::decode_frame(&msg.encode()).unwrap(), msg);
        }

        #[test]
        fn corrupted_frames_are_errors_or_valid(words in proptest::collection::vec("[a-z]{2,8}", 1..4),
                                                flip in any::<usize>(), to in any::<u8>()) {
            let mut frame = Message::Query(Query::new(&words.join(" "), Filters::default(), 3).unwrap()).encode();
            let i = flip % frame.len();
            frame[i] = to;
            if let Ok(m) = Message::decode_frame(&frame) {
                prop_assert!(m.check().is_ok());
            }
        }
    }
}
