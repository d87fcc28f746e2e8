//! The DHT keyword index (after eMule's Kad): for each keyword of each
//! shared item, a peer stores a [`KeywordRecord`] under
//! [`dht_key`]`(keyword)`: the peer's items with that keyword, each a
//! [`SignedRecord`]. spore-net keeps one value per publisher under a key
//! (signed by the publisher's node key, capped per key) and republishes
//! them; a search fetches the values for the query's rarest-looking word
//! and keeps the records that verify and match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{query::Query, record::SignedRecord, words};

/// Prefix of every keyword key in the DHT. It starts with spore-net's
/// multi-value prefix (`/spore/mv/`): one slot per publisher under a key.
pub const KEY_PREFIX: &[u8] = b"/spore/mv/kw/1/";
/// Items one publisher lists under one keyword.
pub const MAX_ITEMS_PER_KEYWORD: usize = 8;
/// Largest encoded keyword record (spore-net's limit for one slot's payload).
pub const MAX_RECORD_BYTES: usize = 4 * 1024;
/// Keywords published per item (its longest, which tend to be the rarest).
pub const KEYWORDS_PER_ITEM: usize = 6;

/// The DHT key of `keyword`.
pub fn dht_key(keyword: &str) -> Vec<u8> {
    let mut key = KEY_PREFIX.to_vec();
    key.extend_from_slice(blake3::hash(keyword.as_bytes()).as_bytes());
    key
}

/// One publisher's items under one keyword.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordRecord {
    pub keyword: String,
    pub records: Vec<SignedRecord>,
}

/// Why a keyword record from the DHT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is above {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("{0} items (at most {MAX_ITEMS_PER_KEYWORD})")]
    TooManyItems(usize),
    #[error("an item's signature does not verify")]
    BadSignature,
    #[error("an item does not have the keyword {0:?}")]
    WrongKeyword(String),
}

impl KeywordRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks every rule: size, item count, signatures, keyword.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let rec: Self =
            postcard::from_bytes(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if rec.records.len() > MAX_ITEMS_PER_KEYWORD {
            return Err(RecordError::TooManyItems(rec.records.len()));
        }
        for r in &rec.records {
            if !r.verify() {
                return Err(RecordError::BadSignature);
            }
            if !r.body.keywords().contains(&rec.keyword) {
                return Err(RecordError::WrongKeyword(rec.keyword.clone()));
            }
        }
        Ok(rec)
    }
}

/// Groups signed items into keyword records to publish: each item under
/// its [`KEYWORDS_PER_ITEM`] longest keywords, at most
/// [`MAX_ITEMS_PER_KEYWORD`] items per keyword, at most `max_keywords`
/// records (keywords with the fewest items first: they are the rare ones
/// the DHT index is for).
pub fn records_to_publish(items: &[SignedRecord], max_keywords: usize) -> Vec<KeywordRecord> {
    let mut by_word: BTreeMap<String, Vec<SignedRecord>> = BTreeMap::new();
    for item in items {
        let mut kws = item.body.keywords();
        kws.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        for w in kws.into_iter().take(KEYWORDS_PER_ITEM) {
            let list = by_word.entry(w).or_default();
            if list.len() < MAX_ITEMS_PER_KEYWORD {
                list.push(item.clone());
            }
        }
    }
    let mut out: Vec<KeywordRecord> = by_word
        .into_iter()
        .map(|(keyword, records)| {
            let mut r = KeywordRecord { keyword, records };
            // Long names: list fewer items rather than none.
            while r.encode().len() > MAX_RECORD_BYTES && !r.records.is_empty() {
                r.records.pop();
            }
            r
        })
        .filter(|r| !r.records.is_empty())
        .collect();
    out.sort_by_key(|r| r.records.len());
    out.truncate(max_keywords);
    out
}

/// The word of `query` to look up in the DHT: the longest (rarest-looking).
pub fn lookup_word(query: &Query) -> Option<&str> {
    query
        .words
        .iter()
        .max_by_key(|w| w.chars().count())
        .map(String::as_str)
        .filter(|w| words::is_keyword(w))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use spore_core::Hash;

    use super::*;
    use crate::{
        query::Filters,
        record::{ItemKind, RecordBody},
    };

    fn item(name: &str) -> SignedRecord {
        SignedRecord::sign(
            RecordBody {
                id: Hash::of(name.as_bytes()),
                name: name.into(),
                size: 3,
                kind: ItemKind::Blob,
                parent: None,
            },
            &SigningKey::from_bytes(&[5; 32]),
        )
    }

    #[test]
    fn publish_then_decode_round_trip() {
        let items = vec![item("debian netinst.iso"), item("debian dvd.iso")];
        let recs = records_to_publish(&items, 100);
        let debian = recs.iter().find(|r| r.keyword == "debian").unwrap();
        assert_eq!(debian.records.len(), 2);
        assert_eq!(KeywordRecord::decode(&debian.encode()).unwrap(), *debian);
        // Rare keywords come first.
        assert_eq!(recs[0].records.len(), 1);
        assert_eq!(records_to_publish(&items, 1).len(), 1);
        let q = Query::new("debian netinst", Filters::default(), 4).unwrap();
        assert_eq!(lookup_word(&q), Some("netinst"));
        assert_ne!(dht_key("a1"), dht_key("a2"));
    }

    #[test]
    fn forged_or_misfiled_records_are_refused() {
        let mut r = KeywordRecord {
            keyword: "debian".into(),
            records: vec![item("debian netinst.iso")],
        };
        r.records[0].body.size = 99;
        assert_eq!(
            KeywordRecord::decode(&r.encode()),
            Err(RecordError::BadSignature)
        );
        let wrong = KeywordRecord {
            keyword: "ubuntu".into(),
            records: vec![item("debian netinst.iso")],
        };
        assert!(matches!(
            KeywordRecord::decode(&wrong.encode()),
            Err(RecordError::WrongKeyword(_))
        ));
        assert!(KeywordRecord::decode(&[0xff; 40]).is_err());
        assert!(matches!(
            KeywordRecord::decode(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge(_))
        ));
    }
}
