//! Collection downloads and pause / resume / cancel through the engine:
//! real nodes on 127.0.0.1 in one process.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::{path::Path, time::Duration};

use common::{MIB, data, fast, limited, provider, seed_with, start, wait, wait_for_bytes};
use spore_core::{Collection, CollectionEntry, ContentKind, GROUP_SIZE, Hash, RelativePath};
use spore_net::{Multiaddr, PeerId};
use spore_node::transfer::{DownloadRequest, DownloadState};
use spore_store::{BlobState, ImportMode};
use tempfile::TempDir;

fn request(hash: Hash, kind: ContentKind, from: (PeerId, Vec<Multiaddr>)) -> DownloadRequest {
    DownloadRequest::new(hash, kind, vec![from])
}

/// A tree with nested directories, an empty file, two files with the same
/// content and one of several chunk groups.
fn make_tree(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("top.bin", data(3 * MIB + 17, 1)),
        ("a/b/c/deep.txt", b"deep down".to_vec()),
        ("a/b/same1", data(100_000, 2)),
        ("a/other/same2", data(100_000, 2)),
        ("a/empty", Vec::new()),
        ("z.dat", data(GROUP_SIZE * 5 + 1, 3)),
    ];
    for (path, bytes) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_downloads_with_its_tree() {
    let seed = start(fast()).await;
    let src = TempDir::new().unwrap();
    let files = make_tree(src.path());
    let store = seed.node.store().clone();
    let path = src.path().to_path_buf();
    let added = tokio::task::spawn_blocking(move || store.add_path(&path, ImportMode::Copy, &()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(added.kind, ContentKind::Collection);

    let leecher = start(fast()).await;
    let out = TempDir::new().unwrap();
    let dest = out.path().join("tree");
    let mut req = request(added.hash, ContentKind::Collection, provider(&seed).await);
    req.dest = Some(dest.clone());
    let handle = leecher.node.start_download(req);
    let progress = wait(&handle, 60).await;
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(progress.size, Some(total));
    assert_eq!(progress.verified_bytes, total);
    assert_eq!(progress.files, Some(files.len()));
    assert_eq!(progress.files_done, files.len());
    assert!(progress.sources.iter().any(|s| s.useful_bytes > 0));
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(dest.join(path)).unwrap(), bytes, "{path}");
    }

    // only the collection is the user's; its files are kept by its tag
    let store = leecher.node.store().clone();
    let hash = added.hash;
    tokio::task::spawn_blocking(move || {
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1, "one tagged entry: {listed:?}");
        assert_eq!(listed[0].hash, hash);
        let collection = store.collection(&hash).unwrap();
        for e in collection.entries() {
            let r = store.get(&e.hash).unwrap().unwrap();
            assert!(
                r.tag.is_none(),
                "{} is not tagged on its own",
                e.path.as_str()
            );
            assert_eq!(r.state, BlobState::Complete);
        }
        assert!(store.gc().unwrap().is_empty(), "gc keeps the members");
    })
    .await
    .unwrap();
    // listed once, as a collection (its manifest's download is not listed)
    let listed = leecher.node.transfer().downloads();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind(), ContentKind::Collection);

    // a second download into the same place refuses to clobber
    let mut req = request(added.hash, ContentKind::Collection, provider(&seed).await);
    req.dest = Some(dest.clone());
    let again = leecher.node.start_download(req);
    let err = tokio::time::timeout(Duration::from_secs(30), again.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");

    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

/// A valid one-entry manifest whose path is then replaced by `hostile`
/// (postcard: entry count, path length, path bytes, ...).
fn hostile_manifest(hostile: &str, content: &[u8]) -> Vec<u8> {
    let placeholder = "placeholder-path";
    let valid = Collection::new(vec![CollectionEntry {
        path: RelativePath::new(placeholder).unwrap(),
        size: content.len() as u64,
        hash: Hash::of(content),
        mode: 0o644,
    }])
    .unwrap()
    .encode();
    let at = valid
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .unwrap();
    assert_eq!(valid[at - 1] as usize, placeholder.len());
    assert!(hostile.len() < 128);
    let mut bytes = valid[..at - 1].to_vec();
    bytes.push(hostile.len() as u8);
    bytes.extend_from_slice(hostile.as_bytes());
    bytes.extend_from_slice(&valid[at + placeholder.len()..]);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifest_paths_are_refused_and_nothing_is_written() {
    let seed = start(fast()).await;
    let leecher = start(fast()).await;
    let out = TempDir::new().unwrap();
    let content = b"owned".to_vec();
    let escape = out.path().join("escaped");
    let hostile = [
        "../escaped".to_string(),
        "a/../../escaped".to_string(),
        escape.display().to_string(), // absolute
        "a/./b".to_string(),
        "a//b".to_string(),
        "bad\u{1}name".to_string(),
        "a\\..\\escaped".to_string(),
        String::new(),
    ];
    let store = seed.node.store().clone();
    let c = content.clone();
    tokio::task::spawn_blocking(move || store.add_bytes(&c, "member").unwrap())
        .await
        .unwrap();
    for path in hostile {
        let manifest = hostile_manifest(&path, &content);
        let store = seed.node.store().clone();
        let hash = tokio::task::spawn_blocking(move || {
            store
                .import_bytes(&manifest, ContentKind::Collection)
                .unwrap()
        })
        .await
        .unwrap();
        let dest = out.path().join("dest");
        let mut req = request(hash, ContentKind::Collection, provider(&seed).await);
        req.dest = Some(dest.clone());
        let handle = leecher.node.start_download(req);
        let err = tokio::time::timeout(Duration::from_secs(30), handle.wait())
            .await
            .unwrap()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("invalid") && message.contains("path"),
            "{path:?}: {message}"
        );
        assert!(!escape.exists(), "{path:?} escaped the destination");
        assert!(!dest.exists(), "{path:?}: nothing is written");
        // the member was never fetched, the refused manifest is not kept
        let store = leecher.node.store().clone();
        let member = Hash::of(&content);
        tokio::task::spawn_blocking(move || {
            assert!(store.get(&member).unwrap().is_none());
            assert!(store.list().unwrap().is_empty(), "nothing tagged");
        })
        .await
        .unwrap();
    }
    // and a ticket of a plain file announced as a collection
    let store = seed.node.store().clone();
    let plain = tokio::task::spawn_blocking(move || store.add_bytes(b"not a manifest", "x"))
        .await
        .unwrap()
        .unwrap();
    let handle = leecher.node.start_download(request(
        plain.hash,
        ContentKind::Collection,
        provider(&seed).await,
    ));
    let err = handle.wait().await.unwrap_err().to_string();
    assert!(err.contains("not a spore collection manifest"), "{err}");
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keeps_verified_groups_and_resume_fetches_only_the_rest() {
    let content = data(12 * MIB, 7);
    let seed = start(limited(3 * MIB)).await;
    let hash = seed_with(&seed, &content).await;
    let leecher = start(fast()).await;
    let transfer = leecher.node.transfer().clone();
    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    wait_for_bytes(&handle, 4 * MIB).await;

    let paused = transfer.pause(&hash).await.unwrap();
    assert_eq!(paused.progress().state, DownloadState::Paused);
    let store = leecher.node.store().clone();
    let kept =
        tokio::task::spawn_blocking(move || match store.get(&hash).unwrap().unwrap().state {
            BlobState::Partial(bits) => bits.count_ones() * GROUP_SIZE,
            other => panic!("not partial: {other:?}"),
        })
        .await
        .unwrap();
    assert!(kept >= 3 * MIB, "only {kept} bytes kept");
    // paused means paused: nothing more arrives (once the seed has seen
    // the streams close)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uploaded = seed.node.transfer().upload_stats().total;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        seed.node.transfer().upload_stats().total,
        uploaded,
        "a paused download fetches nothing"
    );
    assert!(transfer.resume(&Hash::of(b"nope")).await.is_err());

    let resumed = transfer.resume(&hash).await.unwrap();
    let progress = wait(&resumed, 60).await;
    assert!(progress.resumed_bytes >= kept);
    let second = seed.node.transfer().upload_stats().total - uploaded;
    let missing = content.len() as u64 - kept;
    assert!(
        second <= missing + 2 * MIB,
        "resume fetched {second} bytes for {missing} missing"
    );
    let store = leecher.node.store().clone();
    let bytes = tokio::task::spawn_blocking(move || store.blob(&hash).unwrap().read_all().unwrap())
        .await
        .unwrap();
    assert!(bytes == content);
    // finished: no pause, no resume
    assert!(transfer.pause(&hash).await.is_err());
    assert!(transfer.resume(&hash).await.is_err());
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_the_partial_data_and_forgets_the_download() {
    let content = data(12 * MIB, 8);
    let seed = start(limited(3 * MIB)).await;
    let hash = seed_with(&seed, &content).await;
    let leecher = start(fast()).await;
    let transfer = leecher.node.transfer().clone();
    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    wait_for_bytes(&handle, 2 * MIB).await;
    transfer.cancel(&hash).await.unwrap();
    assert_eq!(handle.progress().state, DownloadState::Cancelled);
    assert!(transfer.find_download(&hash).is_none());
    let store = leecher.node.store().clone();
    let gone = tokio::task::spawn_blocking(move || store.get(&hash).unwrap().is_none())
        .await
        .unwrap();
    assert!(gone, "the partial blob is dropped");
    assert!(transfer.cancel(&hash).await.is_err(), "forgotten");
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_pauses_and_resumes() {
    let seed = start(limited(4 * MIB)).await;
    let src = TempDir::new().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("d{}/f{i}", i % 2), data(2 * MIB, 20 + i as u8)))
        .collect();
    for (p, b) in &files {
        std::fs::create_dir_all(src.path().join(p).parent().unwrap()).unwrap();
        std::fs::write(src.path().join(p), b).unwrap();
    }
    let store = seed.node.store().clone();
    let path = src.path().to_path_buf();
    let added =
        tokio::task::spawn_blocking(move || store.add_path(&path, ImportMode::InPlace, &()))
            .await
            .unwrap()
            .unwrap();
    let leecher = start(fast()).await;
    let transfer = leecher.node.transfer().clone();
    let handle = leecher.node.start_download(request(
        added.hash,
        ContentKind::Collection,
        provider(&seed).await,
    ));
    wait_for_bytes(&handle, 3 * MIB).await;
    let paused = transfer.pause(&added.hash).await.unwrap();
    let at_pause = paused.progress();
    assert_eq!(at_pause.state, DownloadState::Paused);
    let uploaded = seed.node.transfer().upload_stats().total;
    let resumed = transfer.resume(&added.hash).await.unwrap();
    let done = wait(&resumed, 60).await;
    assert_eq!(done.files_done, files.len());
    assert!(
        done.resumed_bytes >= at_pause.verified_bytes.saturating_sub(2 * MIB),
        "the second run resumed {} bytes, {} were verified at the pause",
        done.resumed_bytes,
        at_pause.verified_bytes
    );
    let second = seed.node.transfer().upload_stats().total - uploaded;
    let total = 12 * MIB;
    assert!(
        second <= total - at_pause.verified_bytes + 4 * MIB,
        "resume fetched {second} bytes, {} were verified at the pause",
        at_pause.verified_bytes
    );
    let out = TempDir::new().unwrap();
    let store = leecher.node.store().clone();
    let dest = out.path().join("x");
    let d = dest.clone();
    tokio::task::spawn_blocking(move || store.export(&added.hash, &d, false).unwrap())
        .await
        .unwrap();
    for (p, b) in &files {
        assert!(&std::fs::read(dest.join(p)).unwrap() == b);
    }
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}
