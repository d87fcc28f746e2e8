//! kill -9 while a download writes: the store reopens clean, every group it
//! claims is correct, and the download resumes from there.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

use std::{process::Command, time::Duration};

use spore_core::{ContentKind, GROUP_SIZE, group_count};
use spore_store::{ChunkNum, ChunkRanges, Store};

const CHILD_ENV: &str = "SPORE_CRASH_TEST_STORE";
// Large enough to be written behind (`write_behind.rs`), like a real download.
const SIZE: usize = 16 << 20;

fn source() -> (Store, spore_core::Hash) {
    let store = Store::in_memory();
    let bytes: Vec<u8> = (0..SIZE)
        .map(|i| (i % 253) as u8 ^ (i >> 14) as u8)
        .collect();
    let hash = store.add_bytes(&bytes, "x").unwrap().hash;
    (store, hash)
}

fn group_ranges(g: u64) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(g * 16)..ChunkNum((g + 1) * 16))
}

/// Not a test on its own: the body of the child process that the crash test
/// kills. It downloads, in a scrambled order, whatever is still missing.
#[test]
fn crash_test_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (source, hash) = source();
    let blob = source.blob(&hash).unwrap();
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let mut partial = store
        .partial(&hash, SIZE as u64, ContentKind::Blob)
        .unwrap();
    let groups = group_count(SIZE as u64);
    for i in 0..groups {
        let g = (i * 211) % groups; // 211 is coprime with 1,024: a permutation
        if partial.verified().get(g) {
            continue;
        }
        let mut encoded = Vec::new();
        blob.encode(&group_ranges(g), &mut encoded).unwrap();
        partial.ingest(&group_ranges(g), &[&encoded]).unwrap();
        // Mostly in the background, as a download does; now and then
        // inline, waiting for the one in flight.
        if i % 16 == 0 {
            partial.flush().unwrap();
        } else if i % 4 == 0 {
            partial.flush_in_background().unwrap();
        }
    }
    partial.finish().unwrap();
}

#[test]
fn kill_9_during_partial_writes_never_leaves_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (source, hash) = source();
    let original = source.blob(&hash).unwrap().read_all().unwrap();
    let mut last = 0;
    for kill_after_ms in [30, 80, 150, 250] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_test_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = Store::open(dir.path()).unwrap();
        if store.has_complete(&hash).unwrap() {
            assert_eq!(store.blob(&hash).unwrap().read_all().unwrap(), original);
            return;
        }
        let partial = store
            .partial(&hash, SIZE as u64, ContentKind::Blob)
            .unwrap();
        let verified = partial.verified().clone();
        assert!(verified.count_ones() >= last, "progress is never lost");
        last = verified.count_ones();
        eprintln!("after {kill_after_ms} ms: {last} groups verified");
        let reader = partial.reader();
        for g in verified.ones_ranges().flat_map(|r| r.start..r.end) {
            let range = g * GROUP_SIZE..((g + 1) * GROUP_SIZE).min(SIZE as u64);
            assert_eq!(
                reader.read_range(range.clone()).unwrap(),
                &original[range.start as usize..range.end as usize],
                "group {g} is claimed and must be right"
            );
        }
    }
    // finish what the crashes left, reusing every verified group
    let store = Store::open(dir.path()).unwrap();
    if !store.has_complete(&hash).unwrap() {
        let mut partial = store
            .partial(&hash, SIZE as u64, ContentKind::Blob)
            .unwrap();
        let before = partial.verified().count_ones();
        let mut encoded = Vec::new();
        source
            .blob(&hash)
            .unwrap()
            .encode(&ChunkRanges::all(), &mut encoded)
            .unwrap();
        let ingested = partial.ingest(&ChunkRanges::all(), &[&encoded]).unwrap();
        assert_eq!(
            ingested.new_groups.len() as u64,
            group_count(SIZE as u64) - before
        );
        partial.finish().unwrap();
    }
    assert_eq!(store.blob(&hash).unwrap().read_all().unwrap(), original);
}
