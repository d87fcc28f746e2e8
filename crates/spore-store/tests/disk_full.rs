//! A disk that fills up during a large download (one written behind, past
//! the page cache): the download fails with our own error, never blamed on
//! the sender, and what was flushed before stays on disk and resumable.
//!
//! Needs root to mount a small ext4 image (CI runs as root); skipped without.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use spore_core::{ContentKind, GROUP_SIZE, group_count};
use spore_store::{ChunkNum, ChunkRanges, IngestError, Store, StoreError};
use tempfile::TempDir;

/// A small ext4 file system on a loop device, unmounted on drop.
struct SmallDisk {
    mount_point: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> Option<Self> {
        let image = dir.join("disk.img");
        fs::File::create(&image).ok()?.set_len(mib << 20).ok()?;
        let mount_point = dir.join("disk");
        fs::create_dir(&mount_point).ok()?;
        let quiet = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = quiet(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let mounted = made
            && quiet(
                Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(&mount_point),
            );
        mounted.then_some(SmallDisk { mount_point })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn a_disk_filling_up_during_a_large_download_loses_nothing_flushed() {
    let dir = TempDir::new().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path(), 24) else {
        eprintln!("skipping: mounting a small ext4 image needs root and mkfs.ext4 (CI has both)");
        return;
    };
    let store_dir = disk.mount_point.join("store");
    let source = Store::in_memory();
    let bytes = pattern(32 << 20, 7);
    let size = bytes.len() as u64;
    let added = source.add_bytes(&bytes, "big").unwrap();
    let from = source.blob(&added.hash).unwrap();

    let store = Store::open(&store_dir).unwrap();
    let mut partial = store.partial(&added.hash, size, ContentKind::Blob).unwrap();
    let mut failure: Option<StoreError> = None;
    for (i, start) in (0..group_count(size)).step_by(64).enumerate() {
        let ranges = ChunkRanges::from(ChunkNum(start * 16)..ChunkNum((start + 64) * 16));
        let mut encoded = Vec::new();
        from.encode(&ranges, &mut encoded).unwrap();
        let step = match partial.ingest(&ranges, &[&encoded]) {
            Ok(_) if i % 4 == 3 => partial.flush(),
            Ok(_) => Ok(()),
            Err(IngestError::Store(e)) => Err(e),
            Err(e) => panic!("a full disk is not the sender's fault: {e}"),
        };
        if let Err(e) = step {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("32 MiB cannot fit on a 24 MiB disk");
    assert!(failure.is_disk_full(), "{failure}");
    drop(partial);
    drop(store);

    // Reopened, the download resumes from what was flushed, and every group
    // it claims reads back verified.
    let store = Store::open(&store_dir).unwrap();
    let resumed = store.partial(&added.hash, size, ContentKind::Blob).unwrap();
    let kept = resumed.verified().count_ones();
    assert!(
        kept >= 64,
        "the groups flushed before the disk filled are kept"
    );
    let reader = resumed.reader();
    for groups in resumed.verified().ones_ranges() {
        let at = groups.start * GROUP_SIZE;
        let to = (groups.end * GROUP_SIZE).min(size);
        let got = reader.read_range(at..to).unwrap();
        assert_eq!(got, bytes[at as usize..to as usize]);
    }
}
