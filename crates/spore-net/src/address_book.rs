//! The address book: peers we have talked to and where they listen, so a
//! restarted node can redial them without any bootstrap node.
//!
//! Pure data plus a text file format (`spore-address-book 1`, then one peer
//! per line: `<peer id> <last seen, unix seconds> <multiaddr>...`). It is
//! bounded (peers and addresses per peer), written atomically (temp file and
//! rename), and a damaged file costs us the damaged lines, never a panic.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::Path,
};

use libp2p::{Multiaddr, PeerId};

const HEADER: &str = "spore-address-book 1";
/// Addresses kept per peer; the most recently seen win.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// A file bigger than this is not ours (or is hostile); we read nothing from it.
const MAX_FILE_BYTES: u64 = 8 << 20;
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    addrs: Vec<Multiaddr>,
    last_seen: u64,
}

/// Bounded map of peer → recent addresses.
#[derive(Debug, Clone)]
pub struct AddressBook {
    capacity: usize,
    entries: HashMap<PeerId, Entry>,
    dirty: bool,
}

impl AddressBook {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            dirty: false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changed since the last successful save.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Notes that `peer` was seen at `now` listening on `addrs` (newest first).
    /// Evicts the least recently seen peer when full.
    pub fn record(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>, now: u64) {
        let new: Vec<Multiaddr> = addrs.into_iter().collect();
        if new.is_empty() {
            return;
        }
        if !self.entries.contains_key(&peer)
            && self.entries.len() >= self.capacity
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(p, _)| *p)
        {
            self.entries.remove(&oldest);
        }
        let entry = self.entries.entry(peer).or_insert(Entry {
            addrs: Vec::new(),
            last_seen: now,
        });
        let mut merged = Vec::with_capacity(MAX_ADDRS_PER_PEER);
        for a in new.into_iter().chain(entry.addrs.drain(..)) {
            if merged.len() < MAX_ADDRS_PER_PEER && !merged.contains(&a) {
                merged.push(a);
            }
        }
        entry.addrs = merged;
        entry.last_seen = entry.last_seen.max(now);
        self.dirty = true;
    }

    pub fn remove(&mut self, peer: &PeerId) {
        if self.entries.remove(peer).is_some() {
            self.dirty = true;
        }
    }

    pub fn addrs(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.entries.get(peer).map(|e| e.addrs.as_slice())
    }

    /// Up to `n` peers, most recently seen first.
    pub fn most_recent(&self, n: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut all: Vec<_> = self.entries.iter().collect();
        all.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(b.0)));
        all.into_iter()
            .take(n)
            .map(|(p, e)| (*p, e.addrs.clone()))
            .collect()
    }

    /// The file form. Peers are sorted so identical books give identical files.
    pub fn encode(&self) -> String {
        let mut out = String::from(HEADER);
        out.push('\n');
        for (peer, addrs) in self.most_recent(usize::MAX) {
            let last_seen = self.entries.get(&peer).map_or(0, |e| e.last_seen);
            out.push_str(&format!("{peer} {last_seen}"));
            for a in addrs {
                out.push(' ');
                out.push_str(&a.to_string());
            }
            out.push('\n');
        }
        out
    }

    /// Reads the file form; bad lines are skipped, a wrong header yields an empty book.
    pub fn decode(text: &str, capacity: usize) -> Self {
        let mut book = Self::new(capacity);
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(HEADER) {
            return book;
        }
        for line in lines {
            if line.len() > MAX_LINE {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let (Some(peer), Some(seen)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(peer), Ok(seen)) = (peer.parse::<PeerId>(), seen.parse::<u64>()) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = parts
                .filter_map(|a| a.parse().ok())
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            book.record(peer, addrs, seen);
        }
        book.dirty = false;
        book
    }

    /// Loads `path`; a missing, oversized or unreadable file gives an empty book.
    pub fn load(path: &Path, capacity: usize) -> Self {
        let too_big = fs::metadata(path).is_ok_and(|m| m.len() > MAX_FILE_BYTES);
        if too_big {
            tracing::warn!(path = %path.display(), "address book file too large; ignoring it");
            return Self::new(capacity);
        }
        match fs::read_to_string(path) {
            Ok(text) => Self::decode(&text, capacity),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read address book");
                }
                Self::new(capacity)
            }
        }
    }

    /// Writes atomically: a temp file in the same directory, fsync, rename.
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(self.encode().as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn bounded_and_evicts_least_recently_seen() {
        let mut book = AddressBook::new(2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        book.record(a, [addr(1)], 10);
        book.record(b, [addr(2)], 20);
        book.record(a, [addr(3)], 30);
        book.record(c, [addr(4)], 40);
        assert_eq!(book.len(), 2);
        assert!(book.addrs(&b).is_none(), "b was the least recently seen");
        assert_eq!(book.addrs(&a).unwrap(), &[addr(3), addr(1)]);
        assert_eq!(book.most_recent(1)[0].0, c);
    }

    #[test]
    fn addresses_per_peer_are_capped_and_deduplicated() {
        let mut book = AddressBook::new(4);
        let p = PeerId::random();
        book.record(p, (0..20).map(addr), 1);
        book.record(p, [addr(0), addr(0)], 2);
        let addrs = book.addrs(&p).unwrap();
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(addrs[0], addr(0));
        assert_eq!(addrs.iter().filter(|a| **a == addr(0)).count(), 1);
    }

    #[test]
    fn encode_decode_round_trip_and_garbage_lines_are_skipped() {
        let mut book = AddressBook::new(8);
        let (a, b) = (PeerId::random(), PeerId::random());
        book.record(a, [addr(1), addr(2)], 5);
        book.record(b, [addr(3)], 6);
        let mut text = book.encode();
        text.push_str("garbage line\n12D3Koo 5 /ip4/1.2.3.4/tcp/1\n");
        text.push_str(&format!("{} notanumber {}\n", PeerId::random(), addr(9)));
        text.push_str(&"x".repeat(MAX_LINE + 1));
        let back = AddressBook::decode(&text, 8);
        assert_eq!(back.len(), 2);
        assert_eq!(back.addrs(&a).unwrap(), &[addr(1), addr(2)]);
        assert!(!back.is_dirty());
        assert!(AddressBook::decode("wrong header\n", 8).is_empty());
    }

    #[test]
    fn save_is_atomic_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.txt");
        assert!(AddressBook::load(&path, 4).is_empty());
        let mut book = AddressBook::new(4);
        let p = PeerId::random();
        book.record(p, [addr(7)], 1);
        book.save(&path).unwrap();
        assert!(!book.is_dirty());
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(AddressBook::load(&path, 4).addrs(&p).unwrap(), &[addr(7)]);
    }
}
