//! Merging results as they arrive: one entry per content id, with every
//! distinct publisher counted as a source, sorted by relevance and then by
//! sources.

use std::collections::HashMap;

use spore_core::Hash;

use crate::{query::Query, record::SignedRecord, words};

/// One merged result.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub record: SignedRecord,
    /// Distinct publishers (Ed25519 keys) that offered this content id.
    pub publishers: Vec<[u8; 32]>,
    /// 0..=1: the share of the name's keywords that the query asked for
    /// (a name that is all query words ranks first).
    pub relevance: f64,
}

impl Merged {
    pub fn sources(&self) -> usize {
        self.publishers.len()
    }
}

/// Relevance of `name` for `query`.
pub fn relevance(query: &Query, name: &str) -> f64 {
    let have = words::keywords(name);
    if have.is_empty() {
        return 0.0;
    }
    let hit = have.iter().filter(|w| query.words.contains(w)).count();
    hit as f64 / have.len() as f64
}

/// What [`ResultSet::add`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A content id not seen before.
    New,
    /// Another source for a known content id.
    NewSource,
    /// Nothing new (or the set is full).
    Nothing,
}

/// Results of one search, bounded by `capacity` content ids.
#[derive(Debug)]
pub struct ResultSet {
    query: Query,
    capacity: usize,
    items: HashMap<Hash, Merged>,
}

/// Most sources counted per content id.
pub const MAX_SOURCES: usize = 256;

impl ResultSet {
    pub fn new(query: Query, capacity: usize) -> Self {
        Self {
            query,
            capacity,
            items: HashMap::new(),
        }
    }

    /// Adds a record (checked by the caller: signed, matching).
    pub fn add(&mut self, record: SignedRecord) -> Added {
        if let Some(m) = self.items.get_mut(&record.body.id) {
            if m.publishers.contains(&record.publisher) || m.publishers.len() >= MAX_SOURCES {
                return Added::Nothing;
            }
            m.publishers.push(record.publisher);
            return Added::NewSource;
        }
        if self.items.len() >= self.capacity {
            return Added::Nothing;
        }
        let relevance = relevance(&self.query, &record.body.name);
        self.items.insert(
            record.body.id,
            Merged {
                publishers: vec![record.publisher],
                record,
                relevance,
            },
        );
        Added::New
    }

    /// The query these results answer.
    pub fn query(&self) -> &Query {
        &self.query
    }

    pub fn get(&self, id: &Hash) -> Option<&Merged> {
        self.items.get(id)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Results, best first: relevance, then sources, then name.
    pub fn sorted(&self) -> Vec<&Merged> {
        let mut v: Vec<&Merged> = self.items.values().collect();
        v.sort_by(|a, b| {
            b.relevance
                .total_cmp(&a.relevance)
                .then(b.sources().cmp(&a.sources()))
                .then(a.record.body.name.cmp(&b.record.body.name))
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::{
        query::Filters,
        record::{ItemKind, RecordBody},
    };

    fn rec(name: &str, id: &[u8], key: u8) -> SignedRecord {
        SignedRecord::sign(
            RecordBody {
                id: Hash::of(id),
                name: name.into(),
                size: 1,
                kind: ItemKind::Blob,
                parent: None,
            },
            &SigningKey::from_bytes(&[key; 32]),
        )
    }

    #[test]
    fn merged_by_id_and_sorted_by_relevance_then_sources() {
        let q = Query::new("debian netinst", Filters::default(), 4).unwrap();
        let mut set = ResultSet::new(q, 10);
        assert_eq!(
            set.add(rec("debian netinst amd64 iso", b"a", 1)),
            Added::New
        );
        assert_eq!(
            set.add(rec("debian netinst amd64 iso", b"a", 2)),
            Added::NewSource
        );
        assert_eq!(
            set.add(rec("debian netinst amd64 iso", b"a", 2)),
            Added::Nothing
        );
        assert_eq!(set.add(rec("debian netinst i386 iso", b"b", 3)), Added::New);
        assert_eq!(set.add(rec("debian netinst", b"c", 3)), Added::New);
        let order: Vec<(String, usize)> = set
            .sorted()
            .iter()
            .map(|m| (m.record.body.name.clone(), m.sources()))
            .collect();
        assert_eq!(
            order,
            [
                ("debian netinst".to_owned(), 1),
                ("debian netinst amd64 iso".to_owned(), 2),
                ("debian netinst i386 iso".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn capacity_bounds_the_set() {
        let q = Query::new("x1", Filters::default(), 4).unwrap();
        let mut set = ResultSet::new(q, 2);
        for i in 0..5u8 {
            set.add(rec("x1", &[i], 1));
        }
        assert_eq!(set.len(), 2);
    }
}
