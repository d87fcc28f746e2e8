//! A query: words that must all appear in an item's name, optional filters,
//! an id for duplicate detection and routing results back, and a hop limit.

use serde::{Deserialize, Serialize};

use crate::{
    record::{ItemKind, Media, RecordBody},
    words,
};

/// Hops a query travels unless the user asks for more.
pub const DEFAULT_HOPS: u8 = 4;
/// The most hops a query may travel; a larger value is a protocol error.
pub const MAX_HOPS: u8 = 7;
/// Most words in one query.
pub const MAX_WORDS: usize = 8;
/// Most results one peer returns for one query.
pub const MAX_RESULTS_PER_PEER: u16 = 64;

/// Random 128-bit id chosen by the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryId(pub [u8; 16]);

impl QueryId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Display for QueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Conditions besides the words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub media: Option<Media>,
    /// A file extension, lower case, without the dot.
    pub extension: Option<String>,
    pub kind: Option<ItemKind>,
}

impl Filters {
    pub fn matches(&self, item: &RecordBody) -> bool {
        self.min_size.is_none_or(|m| item.size >= m)
            && self.max_size.is_none_or(|m| item.size <= m)
            && self.media.is_none_or(|m| item.media() == m)
            && self
                .extension
                .as_ref()
                .is_none_or(|e| words::extension(&item.name).as_ref() == Some(e))
            && self.kind.is_none_or(|k| item.kind == k)
    }
}

/// A query as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub id: QueryId,
    /// How many more times the query may be forwarded; each receiver
    /// decrements it before forwarding, and forwards only while it is > 0.
    pub hops: u8,
    /// Keywords (see [`crate::words`]); an item matches if it has all of them.
    pub words: Vec<String>,
    pub filters: Filters,
    /// Most results a peer should return (at most [`MAX_RESULTS_PER_PEER`]).
    pub max_results: u16,
}

/// Why a query is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query has no keyword (words of 2 or more letters or digits)")]
    NoWords,
    #[error("too many words: {0} (at most {MAX_WORDS})")]
    TooManyWords(usize),
    #[error("{0:?} is not a keyword in normal form")]
    BadWord(String),
    #[error("hop limit {0} is above the maximum {MAX_HOPS}")]
    TooManyHops(u8),
    #[error("the size range is empty (min {min} > max {max})")]
    EmptySizeRange { min: u64, max: u64 },
    #[error("{0:?} is not a valid extension")]
    BadExtension(String),
}

impl Query {
    /// A query for the keywords of `text` (what a user typed).
    pub fn new(text: &str, filters: Filters, hops: u8) -> Result<Self, QueryError> {
        let words = words::keywords(text);
        let query = Self {
            id: QueryId::random(),
            hops,
            words,
            filters,
            max_results: MAX_RESULTS_PER_PEER,
        };
        query.check()?;
        Ok(query)
    }

    /// Checks everything a peer must check before acting on a query.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.words.is_empty() {
            return Err(QueryError::NoWords);
        }
        if self.words.len() > MAX_WORDS {
            return Err(QueryError::TooManyWords(self.words.len()));
        }
        if let Some(w) = self.words.iter().find(|w| !words::is_keyword(w)) {
            return Err(QueryError::BadWord(w.clone()));
        }
        if self.hops > MAX_HOPS {
            return Err(QueryError::TooManyHops(self.hops));
        }
        if let (Some(min), Some(max)) = (self.filters.min_size, self.filters.max_size)
            && min > max
        {
            return Err(QueryError::EmptySizeRange { min, max });
        }
        if let Some(e) = &self.filters.extension
            && (e.is_empty() || e.len() > 10 || !e.chars().all(|c| c.is_alphanumeric()))
        {
            return Err(QueryError::BadExtension(e.clone()));
        }
        Ok(())
    }

    /// Whether `item` answers this query: every word is one of its keywords
    /// and the filters hold.
    pub fn matches(&self, item: &RecordBody) -> bool {
        let have = item.keywords();
        self.words.iter().all(|w| have.contains(w)) && self.filters.matches(item)
    }

    /// How many results a peer may return.
    pub fn result_limit(&self) -> usize {
        usize::from(self.max_results.min(MAX_RESULTS_PER_PEER))
    }
}

/// Parses a size as a user writes it: `1500`, `10M`, `1.5G`, `700MiB`, `2k`
/// (K, M, G, T are powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try 1500, 10M, 1.5G)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G or T)")),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use spore_core::Hash;

    use super::*;

    fn item(name: &str, size: u64) -> RecordBody {
        RecordBody {
            id: Hash::of(name.as_bytes()),
            name: name.into(),
            size,
            kind: ItemKind::Blob,
            parent: None,
        }
    }

    #[test]
    fn all_words_and_filters_must_match() {
        let q = Query::new(
            "Debian netinst",
            Filters {
                min_size: Some(100),
                ..Default::default()
            },
            DEFAULT_HOPS,
        )
        .unwrap();
        assert!(q.matches(&item("debian-12-amd64-netinst.iso", 200)));
        assert!(!q.matches(&item("debian-12-amd64-netinst.iso", 50)));
        assert!(!q.matches(&item("debian-12-dvd.iso", 200)));
        let video = Query::new(
            "talk",
            Filters {
                media: Some(Media::Video),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert!(video.matches(&item("talk.mkv", 1)));
        assert!(!video.matches(&item("talk.pdf", 1)));
    }

    #[test]
    fn sizes_parse_like_a_user_writes_them() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("700MiB"), Ok(700 << 20));
        assert_eq!(parse_size("2kb"), Ok(2048));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn bad_queries_are_refused() {
        assert_eq!(
            Query::new("a . -", Filters::default(), 4),
            Err(QueryError::NoWords)
        );
        assert_eq!(
            Query::new("big", Filters::default(), 8),
            Err(QueryError::TooManyHops(8))
        );
        let mut q = Query::new("big", Filters::default(), 4).unwrap();
        q.words.push("Not Normal".into());
        assert!(matches!(q.check(), Err(QueryError::BadWord(_))));
        let many = (0..9)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            Query::new(&many, Filters::default(), 4),
            Err(QueryError::TooManyWords(9))
        );
    }
}
