//! The local index: every item a node shares, in SQLite with an FTS5 table,
//! plus the user's tags and description per content id.
//!
//! Names are indexed as the keywords of [`crate::words`] (joined by spaces,
//! under FTS5's `unicode61` tokenizer), so the index matches exactly the
//! words the network protocol and the routing filters use. Tags and
//! descriptions are searched locally only: network results must match by
//! name, which every forwarder can check against the signed record.
//!
//! Blocking: call it from a blocking thread.

use std::{collections::HashSet, path::Path};

use rusqlite::{Connection, OptionalExtension, params};
use spore_core::Hash;

use crate::{
    query::Query,
    record::{ItemKind, RecordBody},
    words,
};

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("search index: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// An indexed item with its local metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub body: RecordBody,
    pub tags: Vec<String>,
    pub description: String,
}

/// See the module docs.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS item (
    rowid INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    parent BLOB,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind TEXT NOT NULL,
    media TEXT NOT NULL,
    ext TEXT,
    UNIQUE (id, parent, name)
);
CREATE TABLE IF NOT EXISTS meta (
    id BLOB PRIMARY KEY,
    tags TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS item_fts USING fts5(
    name, tags, description, tokenize = 'unicode61 remove_diacritics 0'
);
";

/// rowid, id, parent, name.
type Row = (i64, Vec<u8>, Option<Vec<u8>>, String);

fn kind_from(s: &str) -> ItemKind {
    ItemKind::parse(s).unwrap_or(ItemKind::Blob)
}

fn hash_from(bytes: Vec<u8>) -> Option<Hash> {
    <[u8; 32]>::try_from(bytes).ok().map(Hash::from_bytes)
}

impl Index {
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let err = |source| IndexError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { conn })
    }

    pub fn in_memory() -> Result<Self, IndexError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// Makes the index hold exactly `items` (unchanged rows stay).
    /// Returns (added, removed).
    pub fn sync(&mut self, items: &[RecordBody]) -> Result<(usize, usize), IndexError> {
        let tx = self.conn.transaction()?;
        let mut have: Vec<Row> = Vec::new();
        {
            let mut st = tx.prepare("SELECT rowid, id, parent, name FROM item")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            for row in rows {
                have.push(row?);
            }
        }
        let key = |id: &[u8], parent: Option<&[u8]>, name: &str| {
            (id.to_vec(), parent.map(<[u8]>::to_vec), name.to_owned())
        };
        let want: HashSet<_> = items
            .iter()
            .map(|b| {
                key(
                    b.id.as_bytes(),
                    b.parent.as_ref().map(|p| p.as_bytes().as_slice()),
                    &b.name,
                )
            })
            .collect();
        let mut removed = 0;
        let mut present = HashSet::new();
        for (rowid, id, parent, name) in have {
            let k = key(&id, parent.as_deref(), &name);
            if want.contains(&k) {
                present.insert(k);
            } else {
                tx.execute("DELETE FROM item WHERE rowid = ?1", [rowid])?;
                tx.execute("DELETE FROM item_fts WHERE rowid = ?1", [rowid])?;
                removed += 1;
            }
        }
        let mut added = 0;
        for b in items {
            let k = key(
                b.id.as_bytes(),
                b.parent.as_ref().map(|p| p.as_bytes().as_slice()),
                &b.name,
            );
            if present.contains(&k) {
                continue;
            }
            present.insert(k);
            tx.execute(
                "INSERT INTO item (id, parent, name, size, kind, media, ext)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    b.id.as_bytes().as_slice(),
                    b.parent.as_ref().map(|p| p.as_bytes().to_vec()),
                    b.name,
                    b.size as i64,
                    b.kind.as_str(),
                    b.media().as_str(),
                    words::extension(&b.name),
                ],
            )?;
            let rowid = tx.last_insert_rowid();
            let (tags, description): (String, String) = tx
                .query_row(
                    "SELECT tags, description FROM meta WHERE id = ?1",
                    [b.id.as_bytes().as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO item_fts (rowid, name, tags, description) VALUES (?1, ?2, ?3, ?4)",
                params![
                    rowid,
                    words::keywords(&b.name).join(" "),
                    words::keywords(&tags).join(" "),
                    words::keywords(&description).join(" ")
                ],
            )?;
            added += 1;
        }
        tx.commit()?;
        Ok((added, removed))
    }

    /// Sets the user's tags and description of a content id (searched by
    /// `--local`; kept across syncs).
    pub fn set_meta(
        &mut self,
        id: &Hash,
        tags: &[String],
        description: &str,
    ) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        let tags = tags.join(", ");
        tx.execute(
            "INSERT INTO meta (id, tags, description) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, description = excluded.description",
            params![id.as_bytes().as_slice(), tags, description],
        )?;
        tx.execute(
            "UPDATE item_fts SET tags = ?2, description = ?3
             WHERE rowid IN (SELECT rowid FROM item WHERE id = ?1)",
            params![
                id.as_bytes().as_slice(),
                words::keywords(&tags).join(" "),
                words::keywords(description).join(" ")
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Items matching `query`, best first (FTS5's bm25). With
    /// `names_only`, every word must be in the name (what the network
    /// answers); otherwise tags and description count too.
    pub fn search(
        &self,
        query: &Query,
        names_only: bool,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        if query.words.is_empty() {
            return Ok(Vec::new());
        }
        // Keywords are alphanumeric, so quoting each is a safe FTS5 phrase.
        let terms: Vec<String> = query.words.iter().map(|w| format!("\"{w}\"")).collect();
        let fts = if names_only {
            format!("name : ({})", terms.join(" AND "))
        } else {
            terms.join(" AND ")
        };
        let f = &query.filters;
        let mut st = self.conn.prepare(
            "SELECT item.id, item.parent, item.name, item.size, item.kind,
                    COALESCE(meta.tags, ''), COALESCE(meta.description, '')
             FROM item_fts JOIN item ON item.rowid = item_fts.rowid
             LEFT JOIN meta ON meta.id = item.id
             WHERE item_fts MATCH ?1
               AND (?2 IS NULL OR item.size >= ?2)
               AND (?3 IS NULL OR item.size <= ?3)
               AND (?4 IS NULL OR item.media = ?4)
               AND (?5 IS NULL OR item.ext = ?5)
               AND (?6 IS NULL OR item.kind = ?6)
             ORDER BY bm25(item_fts), item.name
             LIMIT ?7",
        )?;
        let clamp = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        let rows = st.query_map(
            params![
                fts,
                clamp(f.min_size),
                clamp(f.max_size),
                f.media.map(|m| m.as_str()),
                f.extension,
                f.kind.map(|k| k.as_str()),
                limit as i64,
            ],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, parent, name, size, kind, tags, description) = row?;
            let Some(id) = hash_from(id) else { continue };
            let body = RecordBody {
                id,
                parent: parent.and_then(hash_from),
                name,
                size: size.max(0) as u64,
                kind: kind_from(&kind),
            };
            out.push(Hit {
                body,
                tags: tags
                    .split(", ")
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                description,
            });
        }
        Ok(out)
    }

    /// Every keyword of every indexed name (level 0 of the routing filter).
    pub fn keywords(&self) -> Result<Vec<String>, IndexError> {
        let mut st = self.conn.prepare("SELECT name FROM item")?;
        let names = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = HashSet::new();
        for name in names {
            out.extend(words::keywords(&name?));
        }
        Ok(out.into_iter().collect())
    }

    /// Every indexed item (for DHT publishing).
    pub fn items(&self) -> Result<Vec<RecordBody>, IndexError> {
        let mut st = self
            .conn
            .prepare("SELECT id, parent, name, size, kind FROM item ORDER BY rowid")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, parent, name, size, kind) = row?;
            if let Some(id) = hash_from(id) {
                out.push(RecordBody {
                    id,
                    parent: parent.and_then(hash_from),
                    name,
                    size: size.max(0) as u64,
                    kind: kind_from(&kind),
                });
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> Result<usize, IndexError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM item", [], |r| r.get(0))?;
        Ok(n.max(0) as usize)
    }

    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Filters, Media};

    fn blob(name: &str, size: u64) -> RecordBody {
        RecordBody {
            id: Hash::of(name.as_bytes()),
            name: name.into(),
            size,
            kind: ItemKind::Blob,
            parent: None,
        }
    }

    fn q(text: &str, filters: Filters) -> Query {
        Query::new(text, filters, 4).unwrap()
    }

    #[test]
    fn blobs_collections_and_files_inside_are_found() {
        let mut ix = Index::in_memory().unwrap();
        let dir = Hash::of(b"dir");
        let items = vec![
            blob("debian-12-amd64-netinst.iso", 600 << 20),
            blob("Talk about Rust.mkv", 1 << 30),
            RecordBody {
                id: dir,
                name: "holiday photos".into(),
                size: 10,
                kind: ItemKind::Collection,
                parent: None,
            },
            RecordBody {
                id: Hash::of(b"beach"),
                name: "2024/beach sunset.jpg".into(),
                size: 5,
                kind: ItemKind::File,
                parent: Some(dir),
            },
        ];
        assert_eq!(ix.sync(&items).unwrap(), (4, 0));
        assert_eq!(ix.sync(&items).unwrap(), (0, 0));
        let names = |hits: Vec<Hit>| hits.into_iter().map(|h| h.body.name).collect::<Vec<_>>();
        assert_eq!(
            names(
                ix.search(&q("NETINST debian", Filters::default()), true, 10)
                    .unwrap()
            ),
            ["debian-12-amd64-netinst.iso"]
        );
        let sunset = ix
            .search(&q("sunset", Filters::default()), true, 10)
            .unwrap();
        assert_eq!(sunset[0].body.parent, Some(dir));
        assert_eq!(sunset[0].body.kind, ItemKind::File);
        let video = Filters {
            media: Some(Media::Video),
            min_size: Some(1 << 20),
            ..Default::default()
        };
        assert_eq!(
            names(ix.search(&q("rust", video), true, 10).unwrap()),
            ["Talk about Rust.mkv"]
        );
        let small = Filters {
            max_size: Some(100),
            ..Default::default()
        };
        assert!(ix.search(&q("rust", small), true, 10).unwrap().is_empty());
        assert!(ix.keywords().unwrap().contains(&"holiday".to_owned()));
        // Removing an item from the store removes it from the index.
        assert_eq!(ix.sync(&items[1..]).unwrap(), (0, 1));
        assert!(
            ix.search(&q("netinst", Filters::default()), true, 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tags_and_descriptions_are_searched_locally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("search.db");
        let item = blob("IMG_0042.jpg", 1);
        {
            let mut ix = Index::open(&path).unwrap();
            ix.set_meta(
                &item.id,
                &["Paris".into(), "trip".into()],
                "Eiffel tower at night",
            )
            .unwrap();
            ix.sync(std::slice::from_ref(&item)).unwrap();
        }
        let ix = Index::open(&path).unwrap();
        let hits = ix
            .search(&q("eiffel paris", Filters::default()), false, 10)
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].tags, ["Paris", "trip"]);
        assert!(
            ix.search(&q("eiffel", Filters::default()), true, 10)
                .unwrap()
                .is_empty()
        );
    }
}
