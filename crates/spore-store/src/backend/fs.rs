//! The on-disk backend: records in SQLite (WAL), owned bytes as files.
//!
//! Layout under the store directory:
//! `meta.db` (SQLite), `blobs/ab/<hash>.data` and `.obao` (outboard),
//! `tmp/` for staged imports. Every file is made durable and renamed into
//! place before a record refers to it, so after a crash a record never points
//! at missing or half-written bytes; files without a record are removed at
//! open.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use rusqlite::{Connection, OptionalExtension, Row, params};
use spore_core::{Bitfield, ContentKind, Hash, group_count};

use super::{Backend, Part, Staged};
use crate::{BlobRecord, BlobState, ExternalFile, Location, StoreError, Tag, storage::Storage};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    hash       BLOB PRIMARY KEY,
    size       INTEGER NOT NULL,
    kind       INTEGER NOT NULL,  -- 0 blob, 1 collection
    state      INTEGER NOT NULL,  -- 0 complete, 1 partial, 2 broken
    bitfield   BLOB,              -- partial: verified chunk groups
    broken     TEXT,              -- broken: why
    ext_path   BLOB,              -- in-place file, or NULL when owned
    ext_len    INTEGER,
    ext_mtime  INTEGER,
    ext_inode  INTEGER,
    tag_name   TEXT,              -- set when the user added it
    tag_added  INTEGER
) STRICT;
";

/// Records in SQLite, owned bytes in files.
#[derive(Debug)]
pub struct FsBackend {
    dir: PathBuf,
    db: Mutex<Connection>,
}

impl FsBackend {
    /// Opens owned bytes of a blob for reading and writing; `create` makes
    /// them (empty, in a directory synced after) when missing.
    fn open_file(&self, hash: &Hash, part: Part, create: bool) -> Result<File, StoreError> {
        let path = self.path(hash, part);
        if create && let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(StoreError::io(format!("creating {}", parent.display())))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(*hash),
                _ => StoreError::io(format!("opening {}", path.display()))(e),
            })?;
        if create {
            self.sync_dir(&path);
        }
        Ok(file)
    }

    /// Opens (creating if needed) the store in `dir`, and cleans up what an
    /// interrupted run left behind.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for sub in ["blobs", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(StoreError::io(format!(
                "creating {}",
                dir.join(sub).display()
            )))?;
        }
        let db = Connection::open(dir.join("meta.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL lets a CLI read while a daemon writes. NORMAL may forget the last
        // commits on power loss, never corrupt: a forgotten record leaves an
        // orphan file (removed below), a forgotten bitfield refetches groups.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        let backend = Self {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
        };
        backend.remove_leftovers()?;
        Ok(backend)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn path(&self, hash: &Hash, part: Part) -> PathBuf {
        let hex = hash.to_hex();
        let ext = match part {
            Part::Data => "data",
            Part::Outboard => "obao",
        };
        self.dir
            .join("blobs")
            .join(&hex[..2])
            .join(format!("{hex}.{ext}"))
    }

    /// Staged files of a crashed import, and blob files no record refers to.
    fn remove_leftovers(&self) -> Result<(), StoreError> {
        let tmp = self.dir.join("tmp");
        for entry in
            fs::read_dir(&tmp).map_err(StoreError::io(format!("listing {}", tmp.display())))?
        {
            let entry = entry.map_err(StoreError::io("listing tmp"))?;
            let _ = fs::remove_file(entry.path());
        }
        let known: std::collections::HashSet<Hash> =
            self.list()?.into_iter().map(|r| r.hash).collect();
        let blobs = self.dir.join("blobs");
        for shard in fs::read_dir(&blobs)
            .map_err(StoreError::io("listing blobs"))?
            .flatten()
        {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let hash = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<Hash>().ok());
                if hash.is_none_or(|h| !known.contains(&h)) {
                    tracing::info!(path = %path.display(), "removing a file left by an interrupted run");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) {
        // Makes a rename durable; not every file system supports it, and the
        // rename itself already happened, so a failure is only logged.
        if let Some(parent) = path.parent()
            && let Err(e) = File::open(parent).and_then(|d| d.sync_all())
        {
            tracing::debug!(dir = %parent.display(), "fsync of directory failed: {e}");
        }
    }

    /// Writes `bytes` to a new file in `tmp/`, synced to disk when `durable`.
    fn write_aside(
        &self,
        bytes: &[u8],
        durable: bool,
    ) -> Result<tempfile::NamedTempFile, StoreError> {
        let mut staged = tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(StoreError::io("creating a file in the store"))?;
        staged
            .write_all(bytes)
            .map_err(StoreError::io("writing to the store"))?;
        if durable {
            staged
                .as_file()
                .sync_data()
                .map_err(StoreError::io("writing to the store"))?;
        }
        Ok(staged)
    }

    fn install(&self, staged: tempfile::TempPath, target: &Path) -> Result<(), StoreError> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(StoreError::io(format!("creating {}", parent.display())))?;
        }
        staged
            .persist(target)
            .map_err(|e| StoreError::io(format!("moving into {}", target.display()))(e.error))?;
        self.sync_dir(target);
        Ok(())
    }
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<BlobRecord> {
    let hash: [u8; 32] = row.get("hash")?;
    let size = row.get::<_, i64>("size")? as u64;
    let kind = match row.get::<_, i64>("kind")? {
        1 => ContentKind::Collection,
        _ => ContentKind::Blob,
    };
    let state = match row.get::<_, i64>("state")? {
        0 => BlobState::Complete,
        1 => {
            let bytes: Vec<u8> = row
                .get::<_, Option<Vec<u8>>>("bitfield")?
                .unwrap_or_default();
            // A damaged bitfield only costs a refetch; never trust it blindly.
            BlobState::Partial(
                Bitfield::from_bytes(group_count(size), &bytes)
                    .unwrap_or_else(|_| Bitfield::new(group_count(size))),
            )
        }
        _ => BlobState::Broken(row.get::<_, Option<String>>("broken")?.unwrap_or_default()),
    };
    let location = match row.get::<_, Option<Vec<u8>>>("ext_path")? {
        None => Location::Owned,
        Some(path) => {
            use std::os::unix::ffi::OsStringExt;
            Location::External(ExternalFile {
                path: PathBuf::from(std::ffi::OsString::from_vec(path)),
                len: row.get::<_, i64>("ext_len")? as u64,
                mtime_ns: row.get("ext_mtime")?,
                inode: row.get::<_, i64>("ext_inode")? as u64,
            })
        }
    };
    let tag = match row.get::<_, Option<String>>("tag_name")? {
        None => None,
        Some(name) => Some(Tag {
            name,
            added_at: row.get::<_, Option<i64>>("tag_added")?.unwrap_or(0),
        }),
    };
    Ok(BlobRecord {
        hash: Hash::from_bytes(hash),
        size,
        kind,
        state,
        location,
        tag,
    })
}

impl Backend for FsBackend {
    fn get(&self, hash: &Hash) -> Result<Option<BlobRecord>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT * FROM blobs WHERE hash = ?1",
                [hash.as_bytes()],
                record_from_row,
            )
            .optional()?)
    }

    fn put(&self, r: &BlobRecord) -> Result<(), StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let (state, bitfield, broken) = match &r.state {
            BlobState::Complete => (0, None, None),
            BlobState::Partial(b) => (1, Some(b.to_bytes()), None),
            BlobState::Broken(why) => (2, None, Some(why.as_str())),
        };
        let ext = match &r.location {
            Location::Owned => None,
            Location::External(e) => Some(e),
        };
        self.db().execute(
            "INSERT OR REPLACE INTO blobs
             (hash, size, kind, state, bitfield, broken, ext_path, ext_len, ext_mtime, ext_inode, tag_name, tag_added)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                r.hash.as_bytes(),
                r.size as i64,
                i64::from(r.kind == ContentKind::Collection),
                state,
                bitfield,
                broken,
                ext.map(|e| e.path.as_os_str().as_bytes().to_vec()),
                ext.map(|e| e.len as i64),
                ext.map(|e| e.mtime_ns),
                ext.map(|e| e.inode as i64),
                r.tag.as_ref().map(|t| t.name.as_str()),
                r.tag.as_ref().map(|t| t.added_at),
            ],
        )?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT * FROM blobs ORDER BY tag_added, hash")?;
        let rows = stmt.query_map([], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete(&self, hash: &Hash) -> Result<(), StoreError> {
        self.db()
            .execute("DELETE FROM blobs WHERE hash = ?1", [hash.as_bytes()])?;
        for part in [Part::Data, Part::Outboard] {
            let path = self.path(hash, part);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::io(format!("removing {}", path.display()))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn open(&self, hash: &Hash, part: Part, create: bool) -> Result<Storage, StoreError> {
        Ok(Storage::File(Arc::new(self.open_file(hash, part, create)?)))
    }

    #[cfg(target_os = "linux")]
    fn open_download(&self, hash: &Hash, size: u64) -> Result<Storage, StoreError> {
        let file = Arc::new(self.open_file(hash, Part::Data, true)?);
        if size < crate::write_behind::WORTH_IT_FROM {
            return Ok(Storage::File(file));
        }
        let path = self.path(hash, Part::Data);
        let slots = &crate::write_behind::FILES;
        match crate::write_behind::WriteBehind::open(file.clone(), &path, slots) {
            Ok(Some(w)) => Ok(Storage::WriteBehind(Arc::new(w))),
            Ok(None) => Ok(Storage::File(file)),
            Err(e) => Err(StoreError::io(format!("opening {}", path.display()))(e)),
        }
    }

    fn stage_file(&self, source: &Path) -> Result<Staged, StoreError> {
        let staged = tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(StoreError::io("creating a file in the store"))?;
        let mut from =
            File::open(source).map_err(StoreError::io(format!("reading {}", source.display())))?;
        let mut to = staged.as_file();
        std::io::copy(&mut from, &mut to).map_err(StoreError::io(format!(
            "copying {} into the store",
            source.display()
        )))?;
        to.sync_data()
            .map_err(StoreError::io("writing to the store"))?;
        let (file, path) = staged.into_parts();
        Ok(Staged {
            storage: Storage::File(Arc::new(file)),
            file: Some(path),
        })
    }

    fn stage_bytes(&self, bytes: &[u8]) -> Result<Staged, StoreError> {
        let (file, path) = self.write_aside(bytes, true)?.into_parts();
        Ok(Staged {
            storage: Storage::File(Arc::new(file)),
            file: Some(path),
        })
    }

    fn commit_data(&self, staged: Staged, hash: &Hash) -> Result<(), StoreError> {
        let Some(path) = staged.file else {
            return Err(StoreError::io("committing")(std::io::Error::other(
                "staged bytes are not a file",
            )));
        };
        self.install(path, &self.path(hash, Part::Data))
    }

    fn write_outboard(&self, hash: &Hash, outboard: &[u8]) -> Result<(), StoreError> {
        // Not synced: a complete blob's outboard is derived from its data, and
        // the store rebuilds one that a crash left damaged (Store::read_range).
        let staged = self.write_aside(outboard, false)?.into_temp_path();
        self.install(staged, &self.path(hash, Part::Outboard))
    }
}
