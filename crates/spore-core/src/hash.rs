use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A content id: the BLAKE3 hash of a blob's bytes, the same value `b3sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The hash of the empty blob.
    pub const EMPTY: Hash = Hash([
        0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9,
        0x49, 0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f,
        0x32, 0x62,
    ]);

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Hashes `data` in one go (single-threaded; the store has the parallel path).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0[..4])
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl From<Hash> for blake3::Hash {
    fn from(h: Hash) -> Self {
        blake3::Hash::from_bytes(h.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// Why a string is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    #[error("a content id is 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("a content id is hex, found {found:?} at position {position}")]
    NotHex { position: usize, found: char },
}

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((position, found)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(HashParseError::NotHex { position, found });
        }
        if s.len() != 64 {
            return Err(HashParseError::Length(s.chars().count()));
        }
        let mut bytes = [0u8; 32];
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(s.as_bytes(), &mut bytes)
            .map_err(|_| HashParseError::Length(s.len()))?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hash_matches_blake3() {
        assert_eq!(Hash::of(b""), Hash::EMPTY);
    }

    #[test]
    fn hex_round_trip_and_case_insensitive() {
        let h = Hash::of(b"hello");
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert_eq!(h.to_hex().to_uppercase().parse::<Hash>(), Ok(h));
        // b3sum's output for "hello"
        assert_eq!(
            h.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!("abc".parse::<Hash>(), Err(HashParseError::Length(3)));
        assert_eq!(
            "zz".parse::<Hash>(),
            Err(HashParseError::NotHex {
                position: 0,
                found: 'z'
            })
        );
    }
}
