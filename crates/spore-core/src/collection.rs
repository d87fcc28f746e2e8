//! Collections: a directory tree as a manifest blob.
//!
//! Encoding: the 9-byte magic `SPORECOL\x01`, then postcard of the entry list,
//! sorted by path bytes. Decoding re-encodes and compares, so exactly one byte
//! string describes a given tree and the same tree always has the same id.

use serde::{Deserialize, Serialize};

use crate::{Hash, PathError, RelativePath};

const MAGIC: &[u8; 9] = b"SPORECOL\x01";

/// Most entries a manifest may list.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Only permission bits travel; set-uid, set-gid and sticky never do.
pub const MODE_MASK: u32 = 0o777;

/// One file of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionEntry {
    pub path: RelativePath,
    pub size: u64,
    pub hash: Hash,
    /// Unix permission bits (`0o644`, `0o755`, ...).
    pub mode: u32,
}

/// The entry as it travels, before its path is checked (so a bad path is
/// reported as such, not as a generic decoding error).
#[derive(Deserialize)]
struct WireEntry {
    path: String,
    size: u64,
    hash: Hash,
    mode: u32,
}

/// A validated manifest: paths are safe, unique, sorted, and no file is also
/// used as a directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Collection {
    entries: Vec<CollectionEntry>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    #[error("not a spore collection manifest (bad magic)")]
    BadMagic,
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    #[error("manifest is not in canonical form")]
    NotCanonical,
    #[error("manifest has {0} entries, the limit is {MAX_ENTRIES}")]
    TooManyEntries(usize),
    #[error("unsafe path in manifest: {0}")]
    Path(#[from] PathError),
    #[error("path {0:?} appears twice")]
    Duplicate(String),
    #[error("{file:?} is a file but {nested:?} treats it as a directory")]
    FileIsDirectory { file: String, nested: String },
    #[error("the files' sizes add up to more than 2^64 bytes")]
    TotalTooLarge,
    #[error("mode {mode:o} of {path:?} has bits outside {MODE_MASK:o}")]
    BadMode { path: String, mode: u32 },
}

impl Collection {
    /// Builds a collection from entries in any order; the result is sorted.
    pub fn new(mut entries: Vec<CollectionEntry>) -> Result<Self, CollectionError> {
        entries.sort_by(|a, b| a.path.as_str().as_bytes().cmp(b.path.as_str().as_bytes()));
        Self::validate(&entries)?;
        Ok(Self { entries })
    }

    pub fn entries(&self) -> &[CollectionEntry] {
        &self.entries
    }

    /// The sum of the files' sizes (validated not to overflow).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.size)
            .fold(0, u64::saturating_add)
    }

    pub fn find(&self, path: &str) -> Option<&CollectionEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Serialising plain owned data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(&self.entries).unwrap_or_default());
        out
    }

    /// Cheap check whether a blob looks like a manifest (before a full decode).
    pub fn has_magic(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CollectionError> {
        let body = bytes.strip_prefix(MAGIC).ok_or(CollectionError::BadMagic)?;
        // Refuse absurd counts before allocating for them: every entry takes at least 36 bytes.
        if body.len() / 36 > MAX_ENTRIES {
            return Err(CollectionError::TooManyEntries(body.len() / 36));
        }
        let wire: Vec<WireEntry> =
            postcard::from_bytes(body).map_err(|e| CollectionError::Malformed(e.to_string()))?;
        if wire.len() > MAX_ENTRIES {
            return Err(CollectionError::TooManyEntries(wire.len()));
        }
        let entries = wire
            .into_iter()
            .map(|w| {
                Ok(CollectionEntry {
                    path: RelativePath::new(w.path)?,
                    size: w.size,
                    hash: w.hash,
                    mode: w.mode,
                })
            })
            .collect::<Result<Vec<_>, PathError>>()?;
        let collection = Self::new(entries)?;
        if collection.encode() != bytes {
            return Err(CollectionError::NotCanonical);
        }
        Ok(collection)
    }

    fn validate(sorted: &[CollectionEntry]) -> Result<(), CollectionError> {
        if sorted.len() > MAX_ENTRIES {
            return Err(CollectionError::TooManyEntries(sorted.len()));
        }
        if sorted
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.size))
            .is_none()
        {
            return Err(CollectionError::TotalTooLarge);
        }
        for entry in sorted {
            if entry.mode & !MODE_MASK != 0 {
                return Err(CollectionError::BadMode {
                    path: entry.path.to_string(),
                    mode: entry.mode,
                });
            }
        }
        for pair in sorted.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if a == b {
                return Err(CollectionError::Duplicate(a.to_string()));
            }
        }
        // In byte order a directory's descendants ("a/...") may be separated
        // from "a" by siblings such as "a.txt" ('.' < '/'), so look them up.
        for entry in sorted {
            let prefix = format!("{}/", entry.path);
            let start = sorted.partition_point(|e| e.path.as_str() < prefix.as_str());
            if let Some(nested) = sorted
                .get(start)
                .filter(|e| entry.path.is_ancestor_of(&e.path))
            {
                return Err(CollectionError::FileIsDirectory {
                    file: entry.path.to_string(),
                    nested: nested.path.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(path: &str, size: u64) -> CollectionEntry {
        CollectionEntry {
            path: RelativePath::new(path).unwrap(),
            size,
            hash: Hash::of(path.as_bytes()),
            mode: 0o644,
        }
    }

    #[test]
    fn order_of_input_does_not_change_the_encoding() {
        let a = Collection::new(vec![entry("b", 1), entry("a/x", 2), entry("a.txt", 3)]).unwrap();
        let b = Collection::new(vec![entry("a.txt", 3), entry("b", 1), entry("a/x", 2)]).unwrap();
        assert_eq!(a.encode(), b.encode());
        assert_eq!(Collection::decode(&a.encode()).unwrap(), a);
        assert_eq!(a.find("a/x").map(|e| e.size), Some(2));
        assert_eq!(a.total_size(), 6);
    }

    #[test]
    fn rejects_sizes_that_overflow() {
        // regression: fuzz/corpus/collection_decode/regression-total-size-overflow
        assert_eq!(
            Collection::new(vec![entry("a", 1 << 63), entry("b", 1 << 63)]),
            Err(CollectionError::TotalTooLarge)
        );
    }

    #[test]
    fn rejects_duplicates_and_file_directory_clashes() {
        assert_eq!(
            Collection::new(vec![entry("a", 1), entry("a", 2)]),
            Err(CollectionError::Duplicate("a".into()))
        );
        assert!(matches!(
            Collection::new(vec![entry("a", 1), entry("a.txt", 1), entry("a/b", 2)]),
            Err(CollectionError::FileIsDirectory { .. })
        ));
    }

    #[test]
    fn decode_rejects_hostile_manifests() {
        #[derive(Serialize)]
        struct Raw<'a> {
            path: &'a str,
            size: u64,
            hash: Hash,
            mode: u32,
        }
        let encode_raw = |items: &[Raw<'_>]| {
            let mut out = MAGIC.to_vec();
            out.extend(postcard::to_stdvec(items).unwrap());
            out
        };
        let raw = |path| Raw {
            path,
            size: 1,
            hash: Hash::EMPTY,
            mode: 0o644,
        };
        for bad in ["../etc/passwd", "/abs", "a//b", "x/./y", "tab\there"] {
            assert!(
                matches!(
                    Collection::decode(&encode_raw(&[raw(bad)])),
                    Err(CollectionError::Path(_))
                ),
                "{bad}"
            );
        }
        // unsorted input is not canonical
        assert_eq!(
            Collection::decode(&encode_raw(&[raw("b"), raw("a")])),
            Err(CollectionError::NotCanonical)
        );
        assert_eq!(
            Collection::decode(&encode_raw(&[raw("a"), raw("a")])),
            Err(CollectionError::Duplicate("a".into()))
        );
        let setuid = Raw {
            mode: 0o4755,
            ..raw("a")
        };
        assert!(matches!(
            Collection::decode(&encode_raw(&[setuid])),
            Err(CollectionError::BadMode { .. })
        ));
        assert_eq!(Collection::decode(b"nope"), Err(CollectionError::BadMagic));
        assert!(matches!(
            Collection::decode(b"SPORECOL\x01\xff\xff\xff"),
            Err(CollectionError::Malformed(_))
        ));
    }

    fn arb_entries() -> impl Strategy<Value = Vec<CollectionEntry>> {
        proptest::collection::btree_map(
            "[a-z]{1,3}(/[a-z]{1,3}){0,2}",
            (any::<u64>(), any::<[u8; 32]>(), 0u32..0o777),
            0..20,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(path, (size, hash, mode))| CollectionEntry {
                    path: RelativePath::new(path).unwrap(),
                    size,
                    hash: Hash::from_bytes(hash),
                    mode,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn round_trips_when_valid(entries in arb_entries()) {
            if let Ok(c) = Collection::new(entries) {
                let bytes = c.encode();
                prop_assert_eq!(Collection::decode(&bytes), Ok(c));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(tail);
            if let Ok(c) = Collection::decode(&bytes) {
                prop_assert_eq!(c.encode(), bytes);
            }
        }
    }
}
