//! Store behaviour, every test run against both the disk and the memory backend.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

use std::{fs, ops::Range, path::Path};

use spore_core::{ContentKind, GROUP_SIZE, Hash};
use spore_store::{
    Blob, BlobState, ChunkNum, ChunkRanges, ImportMode, IngestError, PartialBlob, Removed, Store,
    StoreError, Verified,
};
use tempfile::TempDir;

fn both(test: impl Fn(&Store, &Path)) {
    let dir = TempDir::new().unwrap();
    let disk = Store::open(&dir.path().join("store")).unwrap();
    test(&disk, dir.path());
    let dir = TempDir::new().unwrap();
    test(&Store::in_memory(), dir.path());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 11) as u8 ^ seed)
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

/// A blob of `len` patterned bytes, as a peer that holds it serves it.
fn served(len: usize, seed: u8) -> (Vec<u8>, Blob) {
    let source = Store::in_memory();
    let bytes = pattern(len, seed);
    let added = source.add_bytes(&bytes, "x").unwrap();
    (bytes, source.blob(&added.hash).unwrap())
}

/// What that peer sends for `ranges`: their bao encoding.
fn response(from: &Blob, ranges: &ChunkRanges) -> Vec<u8> {
    let mut encoded = Vec::new();
    from.encode(ranges, &mut encoded).unwrap();
    encoded
}

/// Chunk groups `groups`, as the chunk ranges a request asks for.
fn group_ranges(groups: Range<u64>) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(groups.start * 16)..ChunkNum(groups.end * 16))
}

/// A download of `from` into `store`.
fn download(store: &Store, from: &Blob) -> PartialBlob {
    store
        .partial(&from.hash(), from.size(), ContentKind::Blob)
        .unwrap()
}

#[test]
fn added_file_has_the_b3sum_hash_and_reads_back() {
    both(|store, dir| {
        let bytes = pattern(300_001, 1);
        let path = dir.join("file.bin");
        write(&path, &bytes);
        for mode in [ImportMode::InPlace, ImportMode::Copy] {
            let added = store.add_path(&path, mode, &()).unwrap();
            assert_eq!(added.hash, Hash::of(&bytes));
            assert_eq!(added.name, "file.bin");
            let blob = store.blob(&added.hash).unwrap();
            assert_eq!(blob.read_all().unwrap(), bytes);
            assert_eq!(blob.read_range(5..70_000).unwrap(), &bytes[5..70_000]);
            assert!(matches!(
                blob.read_range(0..300_002),
                Err(StoreError::RangeOutOfBounds { .. })
            ));
        }
        assert_eq!(
            store.list().unwrap().len(),
            1,
            "the same content is listed once"
        );
    });
}

#[test]
fn empty_and_tiny_files() {
    both(|store, dir| {
        for (name, len) in [("empty", 0), ("one", 1), ("group", GROUP_SIZE as usize)] {
            let path = dir.join(name);
            let bytes = pattern(len, 2);
            write(&path, &bytes);
            let added = store.add_path(&path, ImportMode::InPlace, &()).unwrap();
            assert_eq!(added.hash, Hash::of(&bytes));
            assert_eq!(store.blob(&added.hash).unwrap().read_all().unwrap(), bytes);
        }
    });
}

#[test]
fn copied_file_survives_its_source() {
    both(|store, dir| {
        let path = dir.join("gone.bin");
        write(&path, &pattern(50_000, 3));
        let added = store.add_path(&path, ImportMode::Copy, &()).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(
            store.blob(&added.hash).unwrap().read_all().unwrap(),
            pattern(50_000, 3)
        );
    });
}

#[test]
fn in_place_file_changed_after_add_is_never_served() {
    both(|store, dir| {
        let path = dir.join("changing.bin");
        let bytes = pattern(100_000, 4);
        write(&path, &bytes);
        let added = store.add_path(&path, ImportMode::InPlace, &()).unwrap();
        let mut changed = bytes.clone();
        changed[77_777] ^= 1;
        write(&path, &changed);
        let err = store.blob(&added.hash).unwrap_err();
        assert!(matches!(err, StoreError::Broken { .. }), "{err}");
        let record = store.get(&added.hash).unwrap().unwrap();
        assert!(matches!(record.state, BlobState::Broken(_)));
        // adding the original content again heals the entry
        write(&path, &bytes);
        store.add_path(&path, ImportMode::InPlace, &()).unwrap();
        assert_eq!(store.blob(&added.hash).unwrap().read_all().unwrap(), bytes);
    });
}

#[test]
fn change_that_keeps_size_and_mtime_is_caught_by_verification() {
    both(|store, dir| {
        let path = dir.join("sneaky.bin");
        let bytes = pattern(100_000, 5);
        write(&path, &bytes);
        let added = store.add_path(&path, ImportMode::InPlace, &()).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let mut changed = bytes.clone();
        changed[40_000] ^= 0x80;
        // rewrite in place (same inode), then restore the modification time
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&changed[40_000..40_001], 40_000).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let blob = store.blob(&added.hash).unwrap();
        // groups before the damaged one still verify; the damaged one never comes out
        assert_eq!(blob.read_range(0..32_768).unwrap(), &bytes[..32_768]);
        let mut out = Vec::new();
        let err = store
            .read_range(&added.hash, 0..100_000, &mut out)
            .unwrap_err();
        assert!(matches!(err, StoreError::Broken { .. }), "{err}");
        assert!(
            out.len() as u64 <= 32_768,
            "nothing from the damaged group was written"
        );
        assert!(matches!(
            store.get(&added.hash).unwrap().unwrap().state,
            BlobState::Broken(_)
        ));
    });
}

#[test]
fn touched_but_unchanged_file_is_still_served() {
    both(|store, dir| {
        let path = dir.join("touched.bin");
        let bytes = pattern(70_000, 6);
        write(&path, &bytes);
        let added = store.add_path(&path, ImportMode::InPlace, &()).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        drop(f);
        assert_eq!(store.blob(&added.hash).unwrap().read_all().unwrap(), bytes);
    });
}

#[test]
fn directory_becomes_a_collection_and_exports_identically() {
    both(|store, dir| {
        let src = dir.join("tree");
        write(&src.join("a.txt"), b"alpha");
        write(&src.join("sub/deeper/b.bin"), &pattern(40_000, 7));
        write(&src.join("sub/c"), b"");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let added = store.add_path(&src, ImportMode::InPlace, &()).unwrap();
        assert_eq!(added.kind, ContentKind::Collection);
        assert_eq!(added.files, 3);
        assert_eq!(
            added.skipped.len(),
            1,
            "the symlink is skipped and reported"
        );
        let again = store.add_path(&src, ImportMode::Copy, &()).unwrap();
        assert_eq!(again.hash, added.hash, "the same tree has the same id");

        let collection = store.collection(&added.hash).unwrap();
        let paths: Vec<_> = collection
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(paths, ["a.txt", "sub/c", "sub/deeper/b.bin"]);

        let out = dir.join("out");
        let exported = store.export(&added.hash, &out, false).unwrap();
        assert_eq!(exported.files, 3);
        assert_eq!(
            fs::read(out.join("sub/deeper/b.bin")).unwrap(),
            pattern(40_000, 7)
        );
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            fs::metadata(out.join("a.txt"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(matches!(
            store.export(&added.hash, &out, false),
            Err(StoreError::DestinationExists(_))
        ));
        store.export(&added.hash, &out, true).unwrap();
    });
}

#[test]
fn export_refuses_symlinks_planted_in_the_destination() {
    both(|store, dir| {
        let src = dir.join("t");
        write(&src.join("sub/x"), b"x");
        let added = store.add_path(&src, ImportMode::Copy, &()).unwrap();
        let out = dir.join("out");
        let elsewhere = dir.join("elsewhere");
        fs::create_dir_all(&out).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
        assert!(matches!(
            store.export(&added.hash, &out, true),
            Err(StoreError::SymlinkInDestination(_))
        ));
        assert!(!elsewhere.join("x").exists());
    });
}

#[test]
fn remove_keeps_what_a_collection_still_lists() {
    both(|store, dir| {
        let src = dir.join("d");
        write(&src.join("shared"), b"shared bytes");
        write(&src.join("only"), b"only in the collection");
        let collection = store.add_path(&src, ImportMode::Copy, &()).unwrap();
        let shared = store
            .add_path(&src.join("shared"), ImportMode::Copy, &())
            .unwrap();
        let only = Hash::of(b"only in the collection");
        match store.remove(&shared.hash).unwrap() {
            Removed::KeptReferenced { by } => assert_eq!(by, vec![collection.hash]),
            other => panic!("{other:?}"),
        }
        assert!(store.blob(&shared.hash).is_ok());
        match store.remove(&collection.hash).unwrap() {
            Removed::Deleted { freed } => {
                assert!(
                    freed.contains(&collection.hash)
                        && freed.contains(&only)
                        && freed.contains(&shared.hash)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(store.list_all().unwrap().is_empty());
        assert!(matches!(store.remove(&only), Err(StoreError::NotFound(_))));
    });
}

#[test]
fn partial_download_in_any_order_then_complete() {
    both(|store, dir| {
        let (bytes, from) = served(1_000_000, 8);
        let mut partial = download(store, &from);
        let groups = spore_core::group_count(bytes.len() as u64);
        let order: Vec<u64> = (0..groups)
            .rev()
            .step_by(2)
            .chain((0..groups).step_by(2))
            .collect();
        for g in order {
            let ranges = group_ranges(g..g + 1);
            partial
                .ingest(&ranges, &[response(&from, &ranges)])
                .unwrap();
            // what is verified is readable already, what is not is refused
            let reader = partial.reader();
            let at = g * GROUP_SIZE;
            assert!(
                reader
                    .read_range(at..(at + 10).min(bytes.len() as u64))
                    .is_ok()
            );
        }
        partial.flush().unwrap();
        let _ = dir;
        let blob = partial.finish().unwrap();
        assert_eq!(blob.read_all().unwrap(), bytes);
        assert!(store.has_complete(&from.hash()).unwrap());
        assert!(matches!(
            store.partial(&from.hash(), 1, ContentKind::Blob),
            Err(StoreError::AlreadyComplete(_))
        ));
    });
}

/// Large downloads are written past the page cache on a thread of their own
/// (`write_behind.rs`): what is verified reads back at once, before and after
/// a flush, and the finished file holds every byte, short last group included.
#[test]
fn a_large_download_written_behind_reads_back_at_every_step() {
    both(|store, _| {
        let (bytes, from) = served((20 << 20) + 5_000, 3);
        let mut partial = download(store, &from);
        let groups = spore_core::group_count(bytes.len() as u64);
        // Responses of 1 to 96 groups, in an order that jumps about.
        let mut starts: Vec<u64> = (0..groups).step_by(96).collect();
        starts.reverse();
        starts.rotate_left(3);
        for (i, start) in starts.into_iter().enumerate() {
            let end = (start + 96).min(groups);
            let mut g = start;
            while g < end {
                let n = (1 + (i as u64 * 7 + g) % 40).min(end - g);
                let ranges = group_ranges(g..g + n);
                let encoded = response(&from, &ranges);
                // As the frames carried it: groups and parents cut anywhere.
                let frames: Vec<&[u8]> = encoded.chunks(70_001).collect();
                partial.ingest(&ranges, &frames).unwrap();
                let at = g * GROUP_SIZE;
                let to = ((g + n) * GROUP_SIZE).min(bytes.len() as u64);
                let got = partial.reader().read_range(at..to).unwrap();
                assert_eq!(got, bytes[at as usize..to as usize]);
                g += n;
            }
            if i % 5 == 0 {
                partial.flush().unwrap();
            }
        }
        let blob = partial.finish().unwrap();
        assert_eq!(blob.read_all().unwrap(), bytes);
        drop(blob);
        let reopened = store.blob(&from.hash()).unwrap();
        assert_eq!(reopened.read_all().unwrap(), bytes);
    });
}

#[test]
fn corrupted_response_is_blamed_on_the_right_group_and_not_written() {
    both(|store, _| {
        let (bytes, from) = served(200_000, 9);
        let ranges = ChunkRanges::all();
        let mut encoded = response(&from, &ranges);
        // flip a byte deep inside the stream
        let at = encoded.len() * 2 / 3;
        encoded[at] ^= 0xff;
        let mut partial = download(store, &from);
        match partial.ingest(&ranges, &[&encoded]) {
            Err(IngestError::BadData { group, ingested }) => {
                assert!(!partial.verified().get(group));
                assert_eq!(
                    ingested.new_groups.len() as u64,
                    partial.verified().count_ones()
                );
                assert!(
                    partial
                        .reader()
                        .read_range(group * GROUP_SIZE..group * GROUP_SIZE + 1)
                        .is_err()
                );
            }
            other => panic!("{other:?}"),
        }
        // a truncated stream keeps what verified
        let good = response(&from, &ranges);
        let cut = &good[..good.len() / 2];
        assert!(matches!(
            partial.ingest(&ranges, &[cut]),
            Err(IngestError::Truncated { .. })
        ));
        // groups verified before come again: counted as duplicates, by their bytes
        let size = bytes.len() as u64;
        let present = partial.verified().clone();
        let present_bytes: u64 = (0..spore_core::group_count(size))
            .filter(|g| present.get(*g))
            .map(|g| ((g + 1) * GROUP_SIZE).min(size) - g * GROUP_SIZE)
            .sum();
        assert!(present_bytes > 0);
        let again = partial.ingest(&ranges, &[&good]).unwrap();
        assert_eq!(again.duplicate_groups, present.count_ones());
        assert_eq!(again.duplicate_bytes, present_bytes);
        assert!(partial.is_complete());
    });
}

#[test]
fn flipped_bytes_on_disk_are_detected_and_outboard_damage_repaired() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let bytes = pattern(500_000, 10);
    let added = store.add_bytes(&bytes, "x").unwrap();
    let hex = added.hash.to_hex();
    let shard = root.join("blobs").join(&hex[..2]);
    let flip = |file: &Path, at: u64| {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 1], at).unwrap();
    };
    // outboard damage: a raw blob read refuses, verify rewrites it from the intact data
    flip(&shard.join(format!("{hex}.obao")), 100);
    assert!(store.blob(&added.hash).unwrap().read_all().is_err());
    assert_eq!(
        store.verify(&added.hash).unwrap(),
        Verified::OutboardRepaired { bytes: 500_000 }
    );
    assert_eq!(store.blob(&added.hash).unwrap().read_all().unwrap(), bytes);
    assert_eq!(
        store.verify(&added.hash).unwrap(),
        Verified::Intact { bytes: 500_000 }
    );
    // and the store's own reads heal it on the way, continuing where they stopped
    for at in [100, 1_500] {
        flip(&shard.join(format!("{hex}.obao")), at);
        let mut out = Vec::new();
        assert_eq!(
            store.read_range(&added.hash, 1..500_000, &mut out).unwrap(),
            499_999
        );
        assert_eq!(out, &bytes[1..]);
        assert_eq!(
            store.verify(&added.hash).unwrap(),
            Verified::Intact { bytes: 500_000 }
        );
    }
    // data damage: the entry is marked broken and stays so
    flip(&shard.join(format!("{hex}.data")), 123_456);
    assert!(
        store
            .read_range(&added.hash, 0..500_000, &mut Vec::new())
            .is_err()
    );
    assert!(matches!(
        store.verify(&added.hash),
        Err(StoreError::Broken { .. })
    ));
    assert!(matches!(
        store.blob(&added.hash),
        Err(StoreError::Broken { .. })
    ));
}

#[test]
fn partial_progress_survives_reopening() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("store");
    let (bytes, from) = served(300_000, 11);
    let first_half = ChunkRanges::from(ChunkNum(0)..ChunkNum(160));
    {
        let store = Store::open(&root).unwrap();
        let mut partial = download(&store, &from);
        partial
            .ingest(&first_half, &[response(&from, &first_half)])
            .unwrap();
        partial.flush().unwrap();
    }
    let store = Store::open(&root).unwrap();
    let listed = store.list().unwrap();
    assert!(matches!(&listed[0].state, BlobState::Partial(b) if b.count_ones() == 10));
    let mut partial = download(&store, &from);
    assert_eq!(partial.verified().count_ones(), 10);
    let rest = ChunkRanges::from(ChunkNum(160)..);
    let ingested = partial.ingest(&rest, &[response(&from, &rest)]).unwrap();
    assert_eq!(
        ingested.new_groups.len(),
        9,
        "only the missing groups are written"
    );
    assert_eq!(partial.finish().unwrap().read_all().unwrap(), bytes);
}

#[test]
fn a_background_flush_persists_what_was_verified_when_it_began() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("store");
    let (bytes, from) = served(300_000, 12);
    let ingest = |partial: &mut PartialBlob, groups: Range<u64>| {
        let ranges = group_ranges(groups);
        partial
            .ingest(&ranges, &[response(&from, &ranges)])
            .unwrap();
    };
    let persisted = |store: &Store| match &store.list().unwrap()[0].state {
        BlobState::Partial(b) => b.ones_ranges().flatten().collect::<Vec<u64>>(),
        other => panic!("not partial: {other:?}"),
    };
    {
        let store = Store::open(&root).unwrap();
        let mut partial = download(&store, &from);
        ingest(&mut partial, 0..4);
        partial.flush_in_background().unwrap();
        // Verified while the flush runs: not claimed until a later flush.
        ingest(&mut partial, 10..12);
        // Dropping the blob waits for the flush.
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(persisted(&store), (0..4).collect::<Vec<u64>>());
    let mut partial = download(&store, &from);
    ingest(&mut partial, 4..8);
    partial.flush_in_background().unwrap();
    ingest(&mut partial, 8..10);
    // Either starts a flush of 0..10 or finds the last one running and
    // leaves it; `flush` then waits for whichever runs and syncs the rest.
    partial.flush_in_background().unwrap();
    partial.flush().unwrap();
    assert_eq!(persisted(&store), (0..10).collect::<Vec<u64>>());
    ingest(&mut partial, 10..19);
    partial.flush_in_background().unwrap();
    // Completion waits for the flush in flight, whose older bitfield must
    // not overwrite the complete record after it.
    assert_eq!(partial.finish().unwrap().read_all().unwrap(), bytes);
    assert!(store.has_complete(&from.hash()).unwrap());
}
