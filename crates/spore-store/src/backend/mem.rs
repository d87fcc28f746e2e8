//! The in-memory backend, for tests: same behaviour as the disk backend,
//! nothing survives the process.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Mutex, MutexGuard},
};

use spore_core::Hash;

use super::{Backend, Part, Staged};
use crate::{BlobRecord, StoreError, storage::Storage};

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<Hash, BlobRecord>,
    bytes: HashMap<(Hash, bool), Storage>,
}

/// Records and owned bytes in memory.
#[derive(Debug, Default)]
pub struct MemBackend {
    state: Mutex<State>,
}

impl MemBackend {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key(hash: &Hash, part: Part) -> (Hash, bool) {
    (*hash, part == Part::Outboard)
}

impl Backend for MemBackend {
    fn get(&self, hash: &Hash) -> Result<Option<BlobRecord>, StoreError> {
        Ok(self.state().records.get(hash).cloned())
    }

    fn put(&self, record: &BlobRecord) -> Result<(), StoreError> {
        self.state().records.insert(record.hash, record.clone());
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobRecord>, StoreError> {
        let mut all: Vec<_> = self.state().records.values().cloned().collect();
        all.sort_by_key(|r| (r.tag.as_ref().map(|t| t.added_at), r.hash));
        Ok(all)
    }

    fn delete(&self, hash: &Hash) -> Result<(), StoreError> {
        let mut state = self.state();
        state.records.remove(hash);
        state.bytes.remove(&key(hash, Part::Data));
        state.bytes.remove(&key(hash, Part::Outboard));
        Ok(())
    }

    fn open(&self, hash: &Hash, part: Part, create: bool) -> Result<Storage, StoreError> {
        let mut state = self.state();
        match state.bytes.get(&key(hash, part)) {
            Some(storage) => Ok(storage.clone()),
            None if create => {
                let storage = Storage::memory(Vec::new());
                state.bytes.insert(key(hash, part), storage.clone());
                Ok(storage)
            }
            None => Err(StoreError::NotFound(*hash)),
        }
    }

    fn stage_file(&self, source: &Path) -> Result<Staged, StoreError> {
        let bytes = std::fs::read(source)
            .map_err(StoreError::io(format!("reading {}", source.display())))?;
        Ok(Staged {
            storage: Storage::memory(bytes),
            file: None,
        })
    }

    fn stage_bytes(&self, bytes: &[u8]) -> Result<Staged, StoreError> {
        Ok(Staged {
            storage: Storage::memory(bytes.to_vec()),
            file: None,
        })
    }

    fn commit_data(&self, staged: Staged, hash: &Hash) -> Result<(), StoreError> {
        self.state()
            .bytes
            .insert(key(hash, Part::Data), staged.storage);
        Ok(())
    }

    fn write_outboard(&self, hash: &Hash, outboard: &[u8]) -> Result<(), StoreError> {
        self.state().bytes.insert(
            key(hash, Part::Outboard),
            Storage::memory(outboard.to_vec()),
        );
        Ok(())
    }
}
