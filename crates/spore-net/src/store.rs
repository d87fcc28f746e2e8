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

use crate::multi_value;
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

/// How long a multi-value entry lives without being republished.
pub const MULTI_VALUE_TTL: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// One publisher's entry under a multi-valued key.
#[derive(Debug, Clone)]
struct Slot {
    publisher: [u8; 32],
    entry: Vec<u8>,
    expires: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct ProviderStore {
    local_id: PeerId,
    limits: Limits,
    records: HashMap<RecordKey, Record>,
    /// Multi-valued keys (see `multi_value`): one slot per publisher.
    multi: HashMap<RecordKey, Vec<Slot>>,
    local: HashMap<RecordKey, ProviderRecord>,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
}

impl ProviderStore {
    pub fn new(local_id: PeerId, limits: Limits) -> Self {
        Self {
            local_id,
            limits,
            records: HashMap::new(),
            multi: HashMap::new(),
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

    /// Publishers with an entry under `key`.
    pub fn multi_value_entries(&self, key: &RecordKey) -> usize {
        self.multi.get(key).map_or(0, Vec::len)
    }

    fn merged(&self, key: &RecordKey) -> Option<Record> {
        let now = Instant::now();
        let slots = self.multi.get(key)?;
        let live: Vec<&[u8]> = slots
            .iter()
            .filter(|s| s.expires > now)
            .map(|s| s.entry.as_slice())
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(Record {
            key: key.clone(),
            value: multi_value::encode_list(live),
            publisher: None,
            expires: slots.iter().map(|s| s.expires).max(),
        })
    }

    /// Merges every valid entry of `r` into the key's slots. Entries that do
    /// not verify are skipped; a value with none that verifies is refused.
    fn put_multi(&mut self, r: Record) -> Result<()> {
        let Some(entries) = multi_value::decode_list(&r.value) else {
            return Err(Error::ValueTooLarge);
        };
        let now = Instant::now();
        let expires = r
            .expires
            .unwrap_or(now + MULTI_VALUE_TTL)
            .min(now + MULTI_VALUE_TTL);
        let key = r.key;
        if !self.multi.contains_key(&key) && self.multi.len() >= self.limits.max_records {
            self.multi.retain(|_, slots| {
                slots.retain(|s| s.expires > now);
                !slots.is_empty()
            });
            if self.multi.len() >= self.limits.max_records {
                return Err(Error::MaxRecords);
            }
        }
        let slots = self.multi.entry(key.clone()).or_default();
        slots.retain(|s| s.expires > now);
        let mut accepted = 0;
        for entry in entries {
            let Some(opened) = multi_value::open(key.as_ref(), entry) else {
                continue;
            };
            accepted += 1;
            let publisher = opened.publisher;
            let total: usize = slots
                .iter()
                .filter(|s| s.publisher != publisher)
                .map(|s| s.entry.len() + 2)
                .sum();
            if total + entry.len() + 2 > multi_value::MAX_MERGED_BYTES {
                continue;
            }
            if let Some(slot) = slots.iter_mut().find(|s| s.publisher == publisher) {
                slot.entry = entry.to_vec();
                slot.expires = slot.expires.max(expires);
            } else if slots.len() < multi_value::MAX_ENTRIES_PER_KEY {
                slots.push(Slot {
                    publisher,
                    entry: entry.to_vec(),
                    expires,
                });
            }
        }
        if slots.is_empty() {
            self.multi.remove(&key);
        }
        if accepted == 0 {
            return Err(Error::ValueTooLarge);
        }
        Ok(())
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
type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        if multi_value::is_multi_value(k.as_ref()) {
            return self.merged(k).map(Cow::Owned);
        }
        self.records.get(k).map(Cow::Borrowed)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if multi_value::is_multi_value(r.key.as_ref()) {
            return self.put_multi(r);
        }
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
        self.multi.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        let plain = self.records.values().map(Cow::Borrowed);
        let multi = self
            .multi
            .keys()
            .filter_map(|k| self.merged(k))
            .map(Cow::Owned);
        plain.chain(multi).collect::<Vec<_>>().into_iter()
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
    fn multi_value_keys_keep_one_verified_slot_per_publisher() {
        use crate::identity::NodeSigner;
        let mut s = ProviderStore::new(PeerId::random(), limits());
        let key = RecordKey::new(&b"/spore/mv/kw/x".as_slice());
        let (a, b) = (NodeSigner::generate(), NodeSigner::generate());
        let put = |s: &mut ProviderStore, signer: &NodeSigner, payload: &[u8]| {
            let entry = multi_value::seal(signer, key.as_ref(), payload);
            s.put(Record::new(
                key.clone(),
                multi_value::encode_list([entry.as_slice()]),
            ))
        };
        put(&mut s, &a, b"a1").unwrap();
        put(&mut s, &b, b"b1").unwrap();
        put(&mut s, &a, b"a2").unwrap();
        assert_eq!(s.multi_value_entries(&key), 2);
        let merged = s.get(&key).unwrap().into_owned();
        let payloads: Vec<&[u8]> = multi_value::decode_list(&merged.value)
            .unwrap()
            .into_iter()
            .map(|e| multi_value::open(key.as_ref(), e).unwrap().payload)
            .collect();
        assert_eq!(payloads, [b"a2".as_slice(), b"b1".as_slice()]);
        // A replicated merged value merges again without duplicates.
        s.put(merged).unwrap();
        assert_eq!(s.multi_value_entries(&key), 2);
        // Forged entries and garbage are refused.
        let mut forged = multi_value::seal(&a, key.as_ref(), b"a3");
        *forged.last_mut().unwrap() ^= 1;
        assert!(
            s.put(Record::new(
                key.clone(),
                multi_value::encode_list([forged.as_slice()])
            ))
            .is_err()
        );
        assert!(s.put(Record::new(key.clone(), vec![0xff])).is_err());
        // Slots per key are capped.
        for _ in 0..40 {
            let _ = put(&mut s, &NodeSigner::generate(), b"x");
        }
        assert_eq!(
            s.multi_value_entries(&key),
            multi_value::MAX_ENTRIES_PER_KEY
        );
    }

    #[test]
    fn records_are_bounded() {
        let mut s = ProviderStore::new(PeerId::random(), limits());
        s.put(Record::new(key(1), vec![1])).unwrap();
        assert!(s.put(Record::new(key(2), vec![1])).is_err());
        assert!(s.put(Record::new(key(1), vec![0; 5])).is_err());
    }
}
