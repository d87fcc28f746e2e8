//! Kademlia record store that keeps our own provider keys apart from the
//! ones other peers ask us to remember.
//!
//! libp2p's `MemoryStore` counts local and remote provider keys against one
//! limit (1,024 by default), so a busy node refuses its own `start_providing`
//! and a peer flooding ADD_PROVIDER can lock us out of announcing our own
//! content. Here the two have separate bounds: local keys are capped only by
//! the number of blobs a node can plausibly hold, remote keys by a memory
//! budget. Nothing here may grow without a bound or panic on peer input.

use std::{
    borrow::Cow,
    collections::{HashMap, hash_map},
    iter,
    time::Instant,
};

use libp2p::{
    PeerId,
    kad::{
        ProviderRecord, Record, RecordKey,
        store::{Error, RecordStore, Result},
    },
};

/// Bounds of a [`ProviderStore`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Keys we provide. Each costs ~150 bytes, so 4 M keys is ~600 MiB only
    /// for a node holding 4 M blobs; the default is a ceiling, not a budget.
    pub max_local_keys: usize,
    /// Keys remembered for others. With 32 providers of ~200 bytes each a
    /// full key costs ~6 KiB; most keys hold one or two providers.
    pub max_remote_keys: usize,
    /// Providers remembered per remote key. Above K (20) so popular content
    /// lists more sources; the first ones stay (Sybil floods cannot evict them).
    pub max_providers_per_key: usize,
    /// Plain records (unused by spore today), kept small.
    pub max_records: usize,
    /// Largest plain record value.
    pub max_value_bytes: usize,
}

/// See the module docs.
#[derive(Debug)]
pub struct ProviderStore {
    local_id: PeerId,
    limits: Limits,
    records: HashMap<RecordKey, Record>,
    local: HashMap<RecordKey, ProviderRecord>,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
}

impl ProviderStore {
    pub fn new(local_id: PeerId, limits: Limits) -> Self {
        Self {
            local_id,
            limits,
            records: HashMap::new(),
            local: HashMap::new(),
            remote: HashMap::new(),
        }
    }

    /// Number of keys we provide ourselves.
    pub fn local_keys(&self) -> usize {
        self.local.len()
    }

    /// Number of keys we remember providers for on behalf of others.
    pub fn remote_keys(&self) -> usize {
        self.remote.len()
    }

    fn purge_expired_remote(&mut self) {
        let now = Instant::now();
        self.remote.retain(|_, ps| {
            ps.retain(|p| !p.is_expired(now));
            !ps.is_empty()
        });
    }
}

type ProvidedIter<'a> = iter::Map<
    hash_map::Values<'a, RecordKey, ProviderRecord>,
    fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
>;
type RecordsIter<'a> =
    iter::Map<hash_map::Values<'a, RecordKey, Record>, fn(&'a Record) -> Cow<'a, Record>>;

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.records.get(k).map(Cow::Borrowed)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        let full = self.records.len() >= self.limits.max_records;
        match self.records.entry(r.key.clone()) {
            hash_map::Entry::Occupied(mut e) => {
                e.insert(r);
            }
            hash_map::Entry::Vacant(_) if full => return Err(Error::MaxRecords),
            hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.records.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.records.values().map(Cow::Borrowed)
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local_id {
            let full = self.local.len() >= self.limits.max_local_keys;
            match self.local.entry(record.key.clone()) {
                hash_map::Entry::Occupied(mut e) => {
                    e.insert(record);
                }
                hash_map::Entry::Vacant(_) if full => return Err(Error::MaxProvidedKeys),
                hash_map::Entry::Vacant(e) => {
                    e.insert(record);
                }
            }
            return Ok(());
        }
        if !self.remote.contains_key(&record.key)
            && self.remote.len() >= self.limits.max_remote_keys
        {
            self.purge_expired_remote();
            if self.remote.len() >= self.limits.max_remote_keys {
                return Err(Error::MaxProvidedKeys);
            }
        }
        let providers = self.remote.entry(record.key.clone()).or_default();
        if let Some(existing) = providers.iter_mut().find(|p| p.provider == record.provider) {
            *existing = record;
        } else if providers.len() < self.limits.max_providers_per_key {
            providers.push(record);
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let local = self.local.get(key).cloned();
        let remote = self.remote.get(key).into_iter().flatten().cloned();
        local.into_iter().chain(remote).collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.local.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local_id {
            self.local.remove(key);
            return;
        }
        if let hash_map::Entry::Occupied(mut e) = self.remote.entry(key.clone()) {
            e.get_mut().retain(|p| p.provider != *provider);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_local_keys: 5,
            max_remote_keys: 3,
            max_providers_per_key: 2,
            max_records: 1,
            max_value_bytes: 4,
        }
    }

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    #[test]
    fn remote_flood_does_not_block_local_providing() {
        let me = PeerId::random();
        let mut s = ProviderStore::new(me, limits());
        for i in 0..10 {
            let _ = s.add_provider(ProviderRecord::new(key(i), PeerId::random(), vec![]));
        }
        assert_eq!(s.remote_keys(), 3);
        for i in 100..105 {
            s.add_provider(ProviderRecord::new(key(i), me, vec![]))
                .unwrap();
        }
        assert!(
            s.add_provider(ProviderRecord::new(key(200), me, vec![]))
                .is_err()
        );
        assert_eq!(s.provided().count(), 5);
        s.remove_provider(&key(100), &me);
        assert_eq!(s.local_keys(), 4);
    }

    #[test]
    fn providers_per_key_are_capped_first_come_first_kept() {
        let mut s = ProviderStore::new(PeerId::random(), limits());
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [a, b, c, a] {
            s.add_provider(ProviderRecord::new(key(1), p, vec![]))
                .unwrap();
        }
        let ps: Vec<_> = s
            .providers(&key(1))
            .into_iter()
            .map(|r| r.provider)
            .collect();
        assert_eq!(ps, vec![a, b]);
        s.remove_provider(&key(1), &a);
        s.remove_provider(&key(1), &b);
        assert_eq!(s.remote_keys(), 0);
    }

    #[test]
    fn records_are_bounded() {
        let mut s = ProviderStore::new(PeerId::random(), limits());
        s.put(Record::new(key(1), vec![1])).unwrap();
        assert!(s.put(Record::new(key(2), vec![1])).is_err());
        assert!(s.put(Record::new(key(1), vec![0; 5])).is_err());
    }
}
