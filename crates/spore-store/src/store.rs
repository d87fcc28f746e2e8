//! The store: import, verified reads, downloads, removal and garbage
//! collection, written once over any [`Backend`].

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use rayon::prelude::*;
use spore_core::{
    Bitfield, Collection, CollectionEntry, ContentKind, GROUP_SIZE, Hash, RelativePath, group_count,
};

use crate::{
    Blob, BlobRecord, BlobState, ExternalFile, Location, PartialBlob, StoreError, Tag,
    backend::{Backend, FsBackend, MemBackend, Part},
    outboard,
    storage::Storage,
};

/// How a file's bytes get into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Reference the file where it is (no copy); a later change is detected.
    #[default]
    InPlace,
    /// Copy the bytes into the store.
    Copy,
}

/// Receives progress of a long import. All methods may be called from any thread.
pub trait Progress: Sync {
    /// The total number of bytes that will be hashed.
    fn start(&self, _total_bytes: u64) {}
    /// `bytes` more were hashed.
    fn advance(&self, _bytes: u64) {}
}

impl Progress for () {}

/// What an add produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub hash: Hash,
    pub kind: ContentKind,
    /// For a collection: the sum of its files' sizes.
    pub size: u64,
    pub name: String,
    /// Files in a collection (1 for a blob).
    pub files: usize,
    /// Entries that were skipped (symlinks, sockets...), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// What removing produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The blob and everything only it referenced are gone.
    Deleted { freed: Vec<Hash> },
    /// Untagged, but kept because these tagged collections still list it.
    KeptReferenced { by: Vec<Hash> },
}

/// The outcome of a full re-verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every byte matches the hash.
    Intact { bytes: u64 },
    /// The data matched, the outboard did not and was rewritten.
    OutboardRepaired { bytes: u64 },
}

/// A verified export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub files: usize,
    pub bytes: u64,
}

/// spore's content store. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens the on-disk store in `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::with_backend(Arc::new(FsBackend::open(dir)?)))
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> Self {
        Self::with_backend(Arc::new(MemBackend::default()))
    }

    pub fn with_backend(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    // ---- adding ----

    /// Adds a file (as a blob) or a directory (as a collection) and tags it.
    pub fn add_path(
        &self,
        path: &Path,
        mode: ImportMode,
        progress: &dyn Progress,
    ) -> Result<Added, StoreError> {
        let meta = std::fs::metadata(path)
            .map_err(StoreError::io(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            self.add_dir(path, mode, progress)
        } else if meta.is_file() {
            progress.start(meta.len());
            let (hash, size) = self.import_file(path, mode, progress)?;
            let name = display_name(path);
            self.tag(&hash, Tag::now(&name))?;
            Ok(Added {
                hash,
                kind: ContentKind::Blob,
                size,
                name,
                files: 1,
                skipped: Vec::new(),
            })
        } else {
            Err(StoreError::UnsupportedFileType {
                path: path.to_path_buf(),
            })
        }
    }

    /// Adds bytes held in memory as a tagged blob.
    pub fn add_bytes(&self, bytes: &[u8], name: &str) -> Result<Added, StoreError> {
        let hash = self.import_bytes(bytes, ContentKind::Blob)?;
        self.tag(&hash, Tag::now(name))?;
        Ok(Added {
            hash,
            kind: ContentKind::Blob,
            size: bytes.len() as u64,
            name: name.to_string(),
            files: 1,
            skipped: Vec::new(),
        })
    }

    /// Adds a directory tree as a collection: every regular file is imported
    /// (in parallel), then a manifest listing them is stored and tagged.
    pub fn add_dir(
        &self,
        dir: &Path,
        mode: ImportMode,
        progress: &dyn Progress,
    ) -> Result<Added, StoreError> {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        walk(dir, dir, &mut files, &mut skipped)?;
        progress.start(files.iter().map(|f| f.2).sum());
        let entries = files
            .par_iter()
            .map(|(path, rel, _, perms)| {
                let (hash, size) = self.import_file(path, mode, progress)?;
                Ok(CollectionEntry {
                    path: rel.clone(),
                    size,
                    hash,
                    mode: perms & spore_core::MODE_MASK,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let collection = Collection::new(entries).map_err(|source| StoreError::Collection {
            hash: Hash::EMPTY,
            source,
        })?;
        let manifest = collection.encode();
        let hash = self.import_bytes(&manifest, ContentKind::Collection)?;
        let name = display_name(dir);
        self.tag(&hash, Tag::now(&name))?;
        Ok(Added {
            hash,
            kind: ContentKind::Collection,
            size: collection.total_size(),
            name,
            files: collection.entries().len(),
            skipped,
        })
    }

    /// Imports one regular file without tagging it; returns its hash and size.
    fn import_file(
        &self,
        path: &Path,
        mode: ImportMode,
        progress: &dyn Progress,
    ) -> Result<(Hash, u64), StoreError> {
        let what = || format!("reading {}", path.display());
        if mode == ImportMode::Copy {
            let staged = self.backend.stage_file(path)?;
            let size = staged.storage.len().map_err(StoreError::io(what()))?;
            let (hash, ob) = outboard::compute(&staged.storage, size, &|n| progress.advance(n))
                .map_err(StoreError::io(what()))?;
            if self.has_complete(&hash)? {
                return Ok((hash, size));
            }
            self.write_outboard(&hash, &ob)?;
            self.backend.commit_data(staged, &hash)?;
            self.backend.put(&BlobRecord {
                hash,
                size,
                kind: ContentKind::Blob,
                state: BlobState::Complete,
                location: Location::Owned,
                tag: self.backend.get(&hash)?.and_then(|r| r.tag),
            })?;
            return Ok((hash, size));
        }
        let path = std::fs::canonicalize(path).map_err(StoreError::io(what()))?;
        let file = File::open(&path).map_err(StoreError::io(what()))?;
        let before = file.metadata().map_err(StoreError::io(what()))?;
        let external = ExternalFile::from_metadata(path.clone(), &before);
        let (hash, ob) =
            hash_file(&file, before.len(), progress).map_err(StoreError::io(what()))?;
        let after = std::fs::metadata(&path).map_err(StoreError::io(what()))?;
        if !external.matches(&after) {
            return Err(StoreError::ChangedDuringImport { path });
        }
        let existing = self.backend.get(&hash)?;
        if let Some(r) = &existing {
            if r.state == BlobState::Complete
                && (r.location == Location::Owned
                    || r.location == Location::External(external.clone()))
            {
                return Ok((hash, before.len()));
            }
            if r.location == Location::Owned {
                // a partial or broken owned copy is superseded by the file
                self.backend.delete(&hash)?;
            }
        }
        self.write_outboard(&hash, &ob)?;
        self.backend.put(&BlobRecord {
            hash,
            size: before.len(),
            kind: ContentKind::Blob,
            state: BlobState::Complete,
            location: Location::External(external),
            tag: existing.and_then(|r| r.tag),
        })?;
        Ok((hash, before.len()))
    }

    /// Stores bytes as an owned blob (no tag: only a tagged collection that
    /// lists it keeps it from garbage collection); returns their hash.
    pub fn import_bytes(&self, bytes: &[u8], kind: ContentKind) -> Result<Hash, StoreError> {
        let (hash, ob) =
            outboard::compute_slice(bytes, &|_| {}).map_err(StoreError::io("hashing"))?;
        if let Some(existing) = self.backend.get(&hash)? {
            if existing.state == BlobState::Complete {
                if existing.kind != kind && kind == ContentKind::Collection {
                    self.backend.put(&BlobRecord { kind, ..existing })?;
                }
                return Ok(hash);
            }
            self.backend.delete(&hash)?;
        }
        let staged = self.backend.stage_bytes(bytes)?;
        self.write_outboard(&hash, &ob)?;
        self.backend.commit_data(staged, &hash)?;
        self.backend.put(&BlobRecord {
            hash,
            size: bytes.len() as u64,
            kind,
            state: BlobState::Complete,
            location: Location::Owned,
            tag: None,
        })?;
        Ok(hash)
    }

    /// Small blobs (one chunk group) have an empty outboard and no file for it.
    fn write_outboard(&self, hash: &Hash, outboard: &[u8]) -> Result<(), StoreError> {
        if outboard.is_empty() {
            return Ok(());
        }
        self.backend.write_outboard(hash, outboard)
    }

    /// Marks `hash` as added by the user, under `tag`'s name.
    pub fn tag(&self, hash: &Hash, tag: Tag) -> Result<(), StoreError> {
        let record = self.backend.get(hash)?.ok_or(StoreError::NotFound(*hash))?;
        self.backend.put(&BlobRecord {
            tag: Some(tag),
            ..record
        })
    }

    // ---- looking ----

    pub fn get(&self, hash: &Hash) -> Result<Option<BlobRecord>, StoreError> {
        self.backend.get(hash)
    }

    pub fn has_complete(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self
            .backend
            .get(hash)?
            .is_some_and(|r| r.state == BlobState::Complete))
    }

    /// Everything the user added, and downloads in progress, oldest first.
    pub fn list(&self) -> Result<Vec<BlobRecord>, StoreError> {
        Ok(self
            .backend
            .list()?
            .into_iter()
            .filter(|r| r.tag.is_some() || matches!(r.state, BlobState::Partial(_)))
            .collect())
    }

    /// Every record, including blobs only reachable through collections.
    pub fn list_all(&self) -> Result<Vec<BlobRecord>, StoreError> {
        self.backend.list()
    }

    /// Opens a blob for verified reading. An in-place file that changed since
    /// it was added is re-verified first; if its bytes no longer match, the
    /// entry is marked broken and an error returned.
    pub fn blob(&self, hash: &Hash) -> Result<Blob, StoreError> {
        let record = self.backend.get(hash)?.ok_or(StoreError::NotFound(*hash))?;
        let available = match &record.state {
            BlobState::Complete => None,
            BlobState::Partial(bits) => Some(bits.clone()),
            BlobState::Broken(reason) => {
                return Err(StoreError::Broken {
                    hash: *hash,
                    reason: reason.clone(),
                });
            }
        };
        let data = match &record.location {
            Location::Owned => self.backend.open(hash, Part::Data, available.is_some())?,
            Location::External(ext) => self.open_external(&record, ext)?,
        };
        Ok(Blob {
            hash: *hash,
            kind: record.kind,
            data,
            outboard: outboard::view(
                *hash,
                record.size,
                self.open_outboard(&record, available.is_some())?,
            ),
            available,
        })
    }

    fn open_outboard(&self, record: &BlobRecord, create: bool) -> Result<Storage, StoreError> {
        if outboard::tree(record.size).outboard_size() == 0 {
            return Ok(Storage::memory(Vec::new()));
        }
        self.backend.open(&record.hash, Part::Outboard, create)
    }

    fn open_external(
        &self,
        record: &BlobRecord,
        ext: &ExternalFile,
    ) -> Result<Storage, StoreError> {
        let file = match File::open(&ext.path) {
            Ok(file) => file,
            Err(e) => {
                let reason = format!("{} cannot be read: {e}", ext.path.display());
                return Err(self.mark_broken(record, reason));
            }
        };
        let meta = file
            .metadata()
            .map_err(StoreError::io(format!("reading {}", ext.path.display())))?;
        if !ext.matches(&meta) {
            tracing::info!(path = %ext.path.display(), "file changed since it was added; verifying it again");
            let unchanged = meta.len() == record.size
                && hash_file(&file, meta.len(), &())
                    .map_err(StoreError::io(format!("reading {}", ext.path.display())))?
                    .0
                    == record.hash;
            if !unchanged {
                let reason = format!("{} changed since it was added", ext.path.display());
                return Err(self.mark_broken(record, reason));
            }
            // touched, not changed: remember the new identity
            self.backend.put(&BlobRecord {
                location: Location::External(ExternalFile::from_metadata(ext.path.clone(), &meta)),
                ..record.clone()
            })?;
        }
        Ok(Storage::File(Arc::new(file)))
    }

    fn mark_broken(&self, record: &BlobRecord, reason: String) -> StoreError {
        tracing::warn!(hash = %record.hash, "{reason}");
        if let Err(e) = self.backend.put(&BlobRecord {
            state: BlobState::Broken(reason.clone()),
            ..record.clone()
        }) {
            tracing::warn!(hash = %record.hash, "could not mark entry broken: {e}");
        }
        StoreError::Broken {
            hash: record.hash,
            reason,
        }
    }

    /// Reads `range` of a blob, verified, into `out`. An outboard is derived
    /// data: if it turns out damaged (a crash before it reached the disk, a
    /// flipped bit) while the data is intact, it is rebuilt and the read goes
    /// on where it stopped. Damaged data marks the entry broken.
    pub fn read_range(
        &self,
        hash: &Hash,
        range: std::ops::Range<u64>,
        out: &mut impl std::io::Write,
    ) -> Result<u64, StoreError> {
        let mut blob = self.blob(hash)?;
        let mut done = 0u64;
        let mut rebuilt = false;
        loop {
            let result = blob.read_with(range.start + done..range.end, |_, bytes| {
                done += bytes.len() as u64;
                out.write_all(bytes)
            });
            match result {
                Ok(()) => return Ok(done),
                Err(StoreError::Corrupt {
                    source: crate::verify::VerifyError::Outboard { .. },
                    ..
                }) if !rebuilt && blob.is_complete() => {
                    tracing::warn!(%hash, "outboard damaged; rebuilding it from the data");
                    rebuilt = true;
                    self.verify(hash)?;
                    blob = self.blob(hash)?;
                }
                Err(e) => return Err(self.broken_on_corruption(hash, e)),
            }
        }
    }

    fn broken_on_corruption(&self, hash: &Hash, e: StoreError) -> StoreError {
        match (&e, self.backend.get(hash)) {
            (StoreError::Corrupt { .. }, Ok(Some(record)))
                if record.state == BlobState::Complete =>
            {
                self.mark_broken(&record, e.to_string())
            }
            _ => e,
        }
    }

    /// Reads and decodes a collection manifest.
    pub fn collection(&self, hash: &Hash) -> Result<Collection, StoreError> {
        let blob = self.blob(hash)?;
        if blob.kind() != ContentKind::Collection {
            return Err(StoreError::NotACollection(*hash));
        }
        let mut bytes = Vec::with_capacity(blob.size() as usize);
        self.read_range(hash, 0..blob.size(), &mut bytes)?;
        Collection::decode(&bytes).map_err(|source| StoreError::Collection {
            hash: *hash,
            source,
        })
    }

    /// Re-hashes every byte of `hash`. A damaged outboard over intact data is
    /// rewritten; damaged data marks the entry broken.
    pub fn verify(&self, hash: &Hash) -> Result<Verified, StoreError> {
        let record = self.backend.get(hash)?.ok_or(StoreError::NotFound(*hash))?;
        let blob = match self.blob(hash) {
            Ok(blob) => blob,
            Err(StoreError::Broken { reason, .. }) if record.location == Location::Owned => {
                // owned bytes may have been marked broken by a bad outboard: look again
                tracing::info!(%hash, "re-verifying an entry marked broken: {reason}");
                let data = self.backend.open(hash, Part::Data, false)?;
                return self.verify_owned(&record, data);
            }
            Err(e) => return Err(e),
        };
        if let Some(available) = &blob.available {
            let mut bytes = 0;
            for groups in available.ones_ranges() {
                let range = groups.start * GROUP_SIZE..(groups.end * GROUP_SIZE).min(blob.size());
                bytes += blob.read_into(range, &mut std::io::sink())?;
            }
            return Ok(Verified::Intact { bytes });
        }
        self.verify_owned(&record, blob.data)
    }

    fn verify_owned(&self, record: &BlobRecord, data: Storage) -> Result<Verified, StoreError> {
        let what = format!("reading {}", record.hash);
        let (hash, ob) =
            outboard::compute(&data, record.size, &|_| {}).map_err(StoreError::io(&what))?;
        if hash != record.hash || data.len().map_err(StoreError::io(&what))? != record.size {
            let reason = "stored bytes do not match the hash".to_string();
            return Err(self.mark_broken(record, reason));
        }
        let stored = self.open_outboard(record, false);
        let intact = match &stored {
            Ok(s) => {
                let mut buf = vec![0u8; ob.len()];
                positioned_io::ReadAt::read_exact_at(s, 0, &mut buf).is_ok() && buf == ob
            }
            Err(_) => false,
        };
        let repaired = !intact || record.state != BlobState::Complete;
        if !intact {
            self.backend.write_outboard(&record.hash, &ob)?;
        }
        if record.state != BlobState::Complete {
            self.backend.put(&BlobRecord {
                state: BlobState::Complete,
                ..record.clone()
            })?;
        }
        Ok(if repaired {
            Verified::OutboardRepaired { bytes: record.size }
        } else {
            Verified::Intact { bytes: record.size }
        })
    }

    // ---- exporting ----

    /// Writes a blob to the file `dest`, or a collection under the directory
    /// `dest`. Files appear only once complete and verified (written aside,
    /// then renamed); existing files are not overwritten unless `overwrite`.
    pub fn export(
        &self,
        hash: &Hash,
        dest: &Path,
        overwrite: bool,
    ) -> Result<Exported, StoreError> {
        let record = self.backend.get(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if record.kind == ContentKind::Collection {
            let collection = self.collection(hash)?;
            std::fs::create_dir_all(dest)
                .map_err(StoreError::io(format!("creating {}", dest.display())))?;
            let mut bytes = 0;
            for entry in collection.entries() {
                let target = entry.path.to_fs_path(dest);
                refuse_symlinked_parents(dest, &entry.path)?;
                bytes += self.export_blob(&entry.hash, &target, overwrite, Some(entry.mode))?;
            }
            Ok(Exported {
                files: collection.entries().len(),
                bytes,
            })
        } else {
            let bytes = self.export_blob(hash, dest, overwrite, None)?;
            Ok(Exported { files: 1, bytes })
        }
    }

    fn export_blob(
        &self,
        hash: &Hash,
        dest: &Path,
        overwrite: bool,
        mode: Option<u32>,
    ) -> Result<u64, StoreError> {
        if !overwrite && std::fs::symlink_metadata(dest).is_ok() {
            return Err(StoreError::DestinationExists(dest.to_path_buf()));
        }
        let blob = self.blob(hash)?;
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(StoreError::io(format!("creating {}", parent.display())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".spore-export-")
            .tempfile_in(parent)
            .map_err(StoreError::io(format!("writing in {}", parent.display())))?;
        let written = {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let written = self.read_range(hash, 0..blob.size(), &mut out)?;
            std::io::Write::flush(&mut out)
                .map_err(StoreError::io(format!("writing {}", dest.display())))?;
            written
        };
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(mode & spore_core::MODE_MASK);
            tmp.as_file()
                .set_permissions(perms)
                .map_err(StoreError::io(format!(
                    "setting permissions of {}",
                    dest.display()
                )))?;
        }
        let persisted = if overwrite {
            tmp.persist(dest)
        } else {
            tmp.persist_noclobber(dest)
        };
        persisted.map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::DestinationExists(dest.to_path_buf()),
            _ => StoreError::io(format!("writing {}", dest.display()))(e.error),
        })?;
        Ok(written)
    }

    // ---- downloading ----

    /// Opens the download target for `hash`, creating it if new; a restarted
    /// download resumes from the groups the store already verified.
    pub fn partial(
        &self,
        hash: &Hash,
        size: u64,
        kind: ContentKind,
    ) -> Result<PartialBlob, StoreError> {
        let record = match self.backend.get(hash)? {
            Some(r) if matches!(r.state, BlobState::Partial(_)) => {
                if r.size != size {
                    return Err(StoreError::SizeMismatch {
                        hash: *hash,
                        size: r.size,
                        expected: size,
                    });
                }
                r
            }
            Some(r) if r.state == BlobState::Complete => {
                return Err(StoreError::AlreadyComplete(*hash));
            }
            _ => {
                if let Some(old) = self.backend.get(hash)? {
                    self.backend.delete(&old.hash)?;
                }
                let record = PartialBlob::new_record(*hash, size, kind);
                self.backend.put(&record)?;
                record
            }
        };
        let verified = match &record.state {
            BlobState::Partial(bits) => bits.clone(),
            _ => Bitfield::new(group_count(size)),
        };
        let data = self.backend.open_download(hash, size)?;
        let outboard_storage = self.open_outboard(&record, true)?;
        Ok(PartialBlob {
            backend: self.backend.clone(),
            data,
            outboard: outboard::view(*hash, size, outboard_storage),
            verified,
            dirty: false,
            flushing: None,
            record,
        })
    }

    // ---- removing ----

    /// Removes what the user added as `hash`, then collects garbage.
    pub fn remove(&self, hash: &Hash) -> Result<Removed, StoreError> {
        let record = self.backend.get(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if matches!(record.state, BlobState::Partial(_)) && record.tag.is_none() {
            self.backend.delete(hash)?;
            return Ok(Removed::Deleted { freed: vec![*hash] });
        }
        self.backend.put(&BlobRecord {
            tag: None,
            ..record
        })?;
        let freed = self.gc()?;
        if freed.contains(hash) {
            return Ok(Removed::Deleted { freed });
        }
        let by = self
            .list()?
            .into_iter()
            .filter(|r| r.kind == ContentKind::Collection && r.tag.is_some())
            .filter(|r| {
                self.collection(&r.hash)
                    .is_ok_and(|c| c.entries().iter().any(|e| e.hash == *hash))
            })
            .map(|r| r.hash)
            .collect();
        Ok(Removed::KeptReferenced { by })
    }

    /// Deletes complete or broken blobs that no tagged entry reaches. Downloads
    /// in progress are kept. If a tagged collection cannot be read, nothing
    /// is deleted (its files cannot be told apart from garbage).
    pub fn gc(&self) -> Result<Vec<Hash>, StoreError> {
        let records = self.backend.list()?;
        let mut live: HashSet<Hash> = HashSet::new();
        for record in records.iter().filter(|r| r.tag.is_some()) {
            live.insert(record.hash);
            if record.kind == ContentKind::Collection {
                match self.collection(&record.hash) {
                    Ok(c) => live.extend(c.entries().iter().map(|e| e.hash)),
                    Err(e) => {
                        tracing::warn!(hash = %record.hash, "garbage collection skipped: cannot read collection: {e}");
                        return Ok(Vec::new());
                    }
                }
            }
        }
        let mut freed = Vec::new();
        for record in records {
            if !live.contains(&record.hash) && !matches!(record.state, BlobState::Partial(_)) {
                self.backend.delete(&record.hash)?;
                freed.push(record.hash);
            }
        }
        Ok(freed)
    }
}

/// Hashes a file and builds its outboard. Files are mapped into memory, as
/// `b3sum` does, which is much faster than copying them through a buffer.
///
/// A map of a file that another process truncates while we hash it would
/// raise SIGBUS; small files and any map failure fall back to positioned reads.
fn hash_file(file: &File, len: u64, progress: &dyn Progress) -> std::io::Result<(Hash, Vec<u8>)> {
    const MAP_THRESHOLD: u64 = 4 << 20;
    if len >= MAP_THRESHOLD {
        // SAFETY: the map is read-only and dropped before we return. The file
        // may change under us; the size/mtime/inode check around the import
        // then rejects the result, and every later read is verified again.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) };
        if let Ok(map) = map {
            #[cfg(unix)]
            let _ = map.advise(memmap2::Advice::Sequential);
            return outboard::compute_slice(&map, &|n| progress.advance(n));
        }
    }
    outboard::compute(file, len, &|n| progress.advance(n))
}

fn display_name(path: &Path) -> String {
    std::fs::canonicalize(path)
        .ok()
        .as_deref()
        .unwrap_or(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

type WalkedFile = (PathBuf, RelativePath, u64, u32);

/// Collects the regular files under `dir`. Symbolic links and special files
/// are skipped and reported, so nothing outside the tree is ever imported.
fn walk(
    root: &Path,
    dir: &Path,
    files: &mut Vec<WalkedFile>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let read =
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?;
    for entry in read {
        let entry = entry.map_err(StoreError::io(format!("listing {}", dir.display())))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(StoreError::io(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            walk(root, &path, files, skipped)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            match RelativePath::from_fs(rel) {
                Ok(rel) => files.push((path.clone(), rel, meta.len(), meta.permissions().mode())),
                Err(e) => skipped.push((path.clone(), e.to_string())),
            }
        } else if meta.file_type().is_symlink() {
            skipped.push((path, "symbolic links are not followed".into()));
        } else {
            skipped.push((path, "not a regular file".into()));
        }
    }
    Ok(())
}

/// Refuses to write through a symbolic link planted inside the destination.
fn refuse_symlinked_parents(dest: &Path, rel: &RelativePath) -> Result<(), StoreError> {
    let mut at = dest.to_path_buf();
    let components: Vec<&str> = rel.components().collect();
    for part in &components[..components.len().saturating_sub(1)] {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(StoreError::SymlinkInDestination(at));
        }
    }
    Ok(())
}
