//! Tickets: everything needed to fetch content, as one line of text.
//!
//! Text form: `spore` + format version digit (`1`) + lowercase unpadded
//! base32 of `postcard(TicketBody) || checksum`, where the checksum is the
//! first 4 bytes of BLAKE3 over the body. Peer ids and addresses are carried as
//! their libp2p binary encodings; this crate does not interpret them.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Hash, HashParseError};

const PREFIX: &str = "spore";
const VERSION: char = '1';
const CHECKSUM_LEN: usize = 4;

pub const MAX_PROVIDERS: usize = 16;
pub const MAX_ADDRS_PER_PROVIDER: usize = 8;
pub const MAX_PEER_ID_LEN: usize = 64;
pub const MAX_ADDR_LEN: usize = 256;
/// Longest ticket text accepted, so a hostile paste cannot make us allocate
/// much. It covers the largest ticket the per-field limits above allow
/// (16 × (64 + 8 × 256) bytes, about 55,000 characters in base32), so every
/// ticket `encode` prints can be read back.
pub const MAX_TICKET_LEN: usize = 64 * 1024;

/// What a ticket points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentKind {
    /// A single blob of bytes.
    Blob,
    /// A collection manifest and the blobs it lists.
    Collection,
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContentKind::Blob => "blob",
            ContentKind::Collection => "collection",
        })
    }
}

/// A peer that had the content when the ticket was made, and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderHint {
    /// libp2p `PeerId` bytes.
    pub peer_id: Vec<u8>,
    /// libp2p `Multiaddr` bytes.
    pub addrs: Vec<Vec<u8>>,
}

/// A reference to content: kind, id and optional providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub kind: ContentKind,
    pub hash: Hash,
    pub providers: Vec<ProviderHint>,
}

/// Why a ticket could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("a ticket starts with \"spore1\"")]
    BadPrefix,
    #[error("ticket format version {0:?} is not supported (this spore reads version 1)")]
    UnsupportedVersion(char),
    #[error("ticket is {0} characters long, the limit is {MAX_TICKET_LEN}")]
    TooLong(usize),
    #[error("ticket is not valid base32 at character {0}")]
    BadEncoding(usize),
    #[error("ticket is too short ({0} bytes) to hold a checksum")]
    TooShort(usize),
    #[error("ticket checksum does not match: it was mistyped or cut short")]
    BadChecksum,
    #[error("ticket body is malformed: {0}")]
    Malformed(String),
    #[error("ticket body has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("ticket exceeds a limit: {0}")]
    Limit(String),
}

/// Why text is neither a ticket nor a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentRefError {
    #[error("bad ticket: {0}")]
    Ticket(#[from] TicketError),
    #[error("not a content id nor a ticket ({0})")]
    Id(#[from] HashParseError),
}

const BASE32: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

impl Ticket {
    pub fn new(kind: ContentKind, hash: Hash) -> Self {
        Self {
            kind,
            hash,
            providers: Vec::new(),
        }
    }

    /// Reads what a user may give where content is expected: a ticket, or a
    /// bare content id (a blob, providers to be found in the DHT).
    pub fn from_ticket_or_id(text: &str) -> Result<Self, ContentRefError> {
        let text = text.trim();
        if text
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        {
            return Ok(text.parse()?);
        }
        Ok(Self::new(ContentKind::Blob, text.parse()?))
    }

    pub fn with_providers(mut self, providers: Vec<ProviderHint>) -> Self {
        self.providers = providers;
        self
    }

    fn check_limits(&self) -> Result<(), TicketError> {
        if self.providers.len() > MAX_PROVIDERS {
            return Err(TicketError::Limit(format!(
                "{} providers, at most {MAX_PROVIDERS}",
                self.providers.len()
            )));
        }
        for p in &self.providers {
            if p.peer_id.len() > MAX_PEER_ID_LEN {
                return Err(TicketError::Limit(format!(
                    "peer id of {} bytes",
                    p.peer_id.len()
                )));
            }
            if p.addrs.len() > MAX_ADDRS_PER_PROVIDER {
                return Err(TicketError::Limit(format!(
                    "{} addresses for one provider, at most {MAX_ADDRS_PER_PROVIDER}",
                    p.addrs.len()
                )));
            }
            if let Some(a) = p.addrs.iter().find(|a| a.len() > MAX_ADDR_LEN) {
                return Err(TicketError::Limit(format!("address of {} bytes", a.len())));
            }
        }
        Ok(())
    }

    /// Serialises the ticket. Tickets over the limits are trimmed (extra
    /// providers and addresses dropped) so a ticket we print can always be read.
    pub fn encode(&self) -> String {
        let mut trimmed = self.clone();
        trimmed.providers.truncate(MAX_PROVIDERS);
        trimmed
            .providers
            .retain(|p| p.peer_id.len() <= MAX_PEER_ID_LEN);
        for p in &mut trimmed.providers {
            p.addrs.retain(|a| a.len() <= MAX_ADDR_LEN);
            p.addrs.truncate(MAX_ADDRS_PER_PROVIDER);
        }
        let mut bytes = postcard::to_stdvec(&trimmed).unwrap_or_default();
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(&checksum.as_bytes()[..CHECKSUM_LEN]);
        let mut out = String::with_capacity(PREFIX.len() + 1 + BASE32.encode_len(bytes.len()));
        out.push_str(PREFIX);
        out.push(VERSION);
        out.push_str(&BASE32.encode(&bytes).to_ascii_lowercase());
        out
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(s.len()));
        }
        let rest = s
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &s[PREFIX.len()..])
            .ok_or(TicketError::BadPrefix)?;
        let mut chars = rest.chars();
        match chars.next() {
            Some(VERSION) => {}
            Some(other) => return Err(TicketError::UnsupportedVersion(other)),
            None => return Err(TicketError::TooShort(0)),
        }
        let body = chars.as_str().to_ascii_uppercase();
        let bytes = BASE32
            .decode(body.as_bytes())
            .map_err(|e| TicketError::BadEncoding(e.position + PREFIX.len() + 1))?;
        if bytes.len() <= CHECKSUM_LEN {
            return Err(TicketError::TooShort(bytes.len()));
        }
        let (payload, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if &blake3::hash(payload).as_bytes()[..CHECKSUM_LEN] != checksum {
            return Err(TicketError::BadChecksum);
        }
        let (ticket, trailing): (Ticket, _) = postcard::take_from_bytes(payload)
            .map_err(|e| TicketError::Malformed(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(TicketError::TrailingBytes(trailing.len()));
        }
        ticket.check_limits()?;
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Ticket {
        Ticket::new(ContentKind::Collection, Hash::of(b"x")).with_providers(vec![ProviderHint {
            peer_id: vec![0, 36, 8, 1, 18, 32, 7],
            addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x14, 0xd3]],
        }])
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with("spore1"), "{text}");
        assert_eq!(text.parse::<Ticket>(), Ok(t.clone()));
        assert_eq!(text.to_uppercase().parse::<Ticket>(), Ok(t));
        let bare = Ticket::new(ContentKind::Blob, Hash::EMPTY).encode();
        assert!(bare.len() < 70, "a bare ticket stays compact: {bare}");
    }

    #[test]
    fn errors_name_the_problem() {
        let text = sample().encode();
        assert_eq!("magnet:?xt".parse::<Ticket>(), Err(TicketError::BadPrefix));
        assert_eq!(
            text.replacen("spore1", "spore2", 1).parse::<Ticket>(),
            Err(TicketError::UnsupportedVersion('2'))
        );
        assert!(matches!(
            format!("{text}!").parse::<Ticket>(),
            Err(TicketError::BadEncoding(_))
        ));
        // one character changed: the checksum catches it
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(typo.parse::<Ticket>(), Err(TicketError::BadChecksum));
        // cut short
        assert!(text[..20].parse::<Ticket>().is_err());
        assert_eq!("spore1".parse::<Ticket>(), Err(TicketError::TooShort(0)));
        assert!(matches!(
            "x".repeat(MAX_TICKET_LEN + 1).parse::<Ticket>(),
            Err(TicketError::TooLong(_))
        ));
    }

    #[test]
    fn the_largest_ticket_within_limits_reads_back() {
        // regression: fuzz/corpus/ticket_encode/regression-encode-exceeds-max-ticket-len
        let provider = ProviderHint {
            peer_id: vec![0xff; MAX_PEER_ID_LEN],
            addrs: vec![vec![0xff; MAX_ADDR_LEN]; MAX_ADDRS_PER_PROVIDER],
        };
        let t = Ticket::new(ContentKind::Blob, Hash::EMPTY)
            .with_providers(vec![provider; MAX_PROVIDERS]);
        assert_eq!(t.encode().parse::<Ticket>(), Ok(t));
    }

    #[test]
    fn ticket_or_id() {
        let t = sample();
        assert_eq!(Ticket::from_ticket_or_id(&t.encode()), Ok(t));
        let h = Hash::of(b"x");
        assert_eq!(
            Ticket::from_ticket_or_id(&format!(" {h} ")),
            Ok(Ticket::new(ContentKind::Blob, h))
        );
        assert!(matches!(
            Ticket::from_ticket_or_id("spore1zz"),
            Err(ContentRefError::Ticket(_))
        ));
        assert!(matches!(
            Ticket::from_ticket_or_id("abc"),
            Err(ContentRefError::Id(_))
        ));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "spore1[a-z2-7]{0,200}") {
            let _ = s.parse::<Ticket>();
        }

        #[test]
        fn round_trips_any_ticket(hash in any::<[u8; 32]>(), peers in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..4)), 0..5)) {
            let t = Ticket::new(ContentKind::Blob, Hash::from_bytes(hash)).with_providers(
                peers.into_iter().map(|(peer_id, addrs)| ProviderHint { peer_id, addrs }).collect());
            prop_assert_eq!(t.encode().parse::<Ticket>(), Ok(t));
        }
    }
}
