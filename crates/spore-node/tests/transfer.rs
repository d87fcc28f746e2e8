//! The transfer engine end to end: real nodes on 127.0.0.1 in one process.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{
    MIB, TestNode, assert_stored, connected_leechers, data, fast, limited, provider, seed_with,
    start, start_in, wait, wait_for_bytes,
};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use spore_core::{GROUP_SIZE, Hash, group_count};
use spore_net::{CancellationToken, Multiaddr, NetConfig, NetNode, PeerId};
use spore_node::transfer::TransferConfig;
use spore_store::{ChunkNum, ChunkRanges, Store};
use spore_transfer::wire::{self, DataWriter, Decoder, Hello, Message, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_one_leecher() {
    let seed = start(fast()).await;
    let leecher = start(fast()).await;
    let content = data(8 * MIB + 1234, 1);
    let hash = seed_with(&seed, &content).await;
    assert_eq!(hash, Hash::of(&content));

    let started = std::time::Instant::now();
    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    let progress = wait(&handle, 30).await;
    eprintln!("1→1 8 MiB in {:?}: {progress:?}", started.elapsed());
    assert_eq!(progress.size, Some(content.len() as u64));
    assert_eq!(progress.verified_bytes, content.len() as u64);
    assert_stored(&leecher, hash, &content).await;

    // The leecher now serves it too.
    let third = start(fast()).await;
    let handle = third.node.download(hash, vec![provider(&leecher).await]);
    wait(&handle, 30).await;
    assert_stored(&third, hash, &content).await;

    for n in [seed, leecher, third] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_seeds_all_contribute() {
    let content = data(16 * MIB, 2);
    let mut seeds = Vec::new();
    for _ in 0..4 {
        let s = start(limited(4 * MIB)).await;
        seed_with(&s, &content).await;
        seeds.push(s);
    }
    let hash = Hash::of(&content);
    let leecher = start(fast()).await;
    let mut providers = Vec::new();
    for s in &seeds {
        providers.push(provider(s).await);
    }
    let started = std::time::Instant::now();
    let handle = leecher.node.download(hash, providers);
    let progress = wait(&handle, 60).await;
    eprintln!(
        "4→1 16 MiB in {:?}: {:?}",
        started.elapsed(),
        progress.sources
    );
    assert_stored(&leecher, hash, &content).await;
    for s in &seeds {
        let id = s.node.net().local_peer_id();
        let got = progress
            .sources
            .iter()
            .find(|p| p.peer == id)
            .map_or(0, |p| p.useful_bytes);
        assert!(got >= MIB, "seed {id} contributed only {got} bytes");
    }
    leecher.node.shutdown().await;
    for s in seeds {
        s.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_upload_to_each_other() {
    let content = data(12 * MIB, 3);
    let seed = start(limited(3 * MIB)).await;
    let hash = seed_with(&seed, &content).await;
    let seed_provider = provider(&seed).await;
    let mut leechers = Vec::new();
    for _ in 0..3 {
        leechers.push(start(fast()).await);
    }
    let started = std::time::Instant::now();
    let handles: Vec<_> = leechers
        .iter()
        .map(|l| l.node.download(hash, vec![seed_provider.clone()]))
        .collect();
    for (h, l) in handles.iter().zip(&leechers) {
        wait(h, 90).await;
        assert_stored(l, hash, &content).await;
    }
    let seed_up = seed.node.transfer().upload_stats().total;
    let leecher_up: u64 = leechers
        .iter()
        .map(|l| l.node.transfer().upload_stats().total)
        .sum();
    let share = leecher_up as f64 / (leecher_up + seed_up) as f64;
    eprintln!(
        "1→3 12 MiB in {:?}: seed uploaded {seed_up}, leechers {leecher_up} ({:.0}%)",
        started.elapsed(),
        share * 100.0
    );
    assert!(
        share >= 0.3,
        "leechers uploaded only {:.0}% of the bytes",
        share * 100.0
    );
    seed.node.shutdown().await;
    for l in leechers {
        l.node.shutdown().await;
    }
}

/// The testbed's swarm: leechers already connected to each other start one
/// after another. The first asks the others before they have anything (they
/// answer NotFound); once they download too, they must become its sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_lacked_the_blob_become_sources_once_they_download_it() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let content = data(12 * MIB, 9);
    // Without super-seeding: the first leecher, alone for a while, is told
    // everything and fetches most of the blob from the seed; a super-seed
    // tells the others only pieces nobody holds, so the first leecher would
    // get little from them (as it should: the seed's upload is the bound
    // either way). This test is about sources.
    let seed = start(TransferConfig {
        super_seed: false,
        ..limited(2 * MIB)
    })
    .await;
    let hash = seed_with(&seed, &content).await;
    let seed_provider = provider(&seed).await;
    let leechers = connected_leechers(4).await;
    let first = leechers[0].node.download(hash, vec![seed_provider.clone()]);
    // long enough for the first to ask the others and hear NotFound
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rest: Vec<_> = leechers[1..]
        .iter()
        .map(|l| l.node.download(hash, vec![seed_provider.clone()]))
        .collect();
    let progress = wait(&first, 90).await;
    for (h, l) in rest.iter().zip(&leechers[1..]) {
        let p = wait(h, 90).await;
        eprintln!("a later leecher's sources: {:?}", p.sources);
        assert_stored(l, hash, &content).await;
    }
    assert_stored(&leechers[0], hash, &content).await;
    let from_leechers: u64 = progress
        .sources
        .iter()
        .filter(|s| s.peer != seed_provider.0)
        .map(|s| s.useful_bytes)
        .sum();
    eprintln!("first leecher's sources: {:?}", progress.sources);
    assert!(
        from_leechers >= content.len() as u64 / 5,
        "the first leecher got only {from_leechers} bytes from the other leechers"
    );
    seed.node.shutdown().await;
    for l in leechers {
        l.node.shutdown().await;
    }
}

/// 1 seed (2 MiB/s up) → 5 connected leechers that start together, 24 MiB:
/// super-seeding tells each leecher a few pieces at a time, so the seed sends
/// the blob about once and the leechers trade the rest. (With
/// `super_seed: false` the same swarm with a 3 MiB/s seed made it send
/// 1.40–1.51 F.) It runs alone (`.config/nextest.toml`): with the other
/// tests beside it, CPU-starved leechers trade slowly and the seed, told to
/// announce everything once every piece is out, sends more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_super_seed_sends_the_blob_about_once() {
    let content = data(24 * MIB, 11);
    let seed = start(limited(2 * MIB)).await;
    let hash = seed_with(&seed, &content).await;
    let seed_provider = provider(&seed).await;
    let leechers = connected_leechers(5).await;
    let started = std::time::Instant::now();
    let handles: Vec<_> = leechers
        .iter()
        .map(|l| l.node.download(hash, vec![seed_provider.clone()]))
        .collect();
    for (h, l) in handles.iter().zip(&leechers) {
        wait(h, 120).await;
        assert_stored(l, hash, &content).await;
    }
    let sent = seed.node.transfer().upload_stats().total as f64 / content.len() as f64;
    eprintln!(
        "1→5 24 MiB in {:?}, the seed sent {sent:.2} F",
        started.elapsed()
    );
    assert!(sent <= 1.35, "the super-seed sent {sent:.2} F");
    seed.node.shutdown().await;
    for l in leechers {
        l.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_leaves_halfway() {
    let content = data(12 * MIB, 4);
    let a = start(limited(3 * MIB)).await;
    let b = start(limited(3 * MIB)).await;
    let hash = seed_with(&a, &content).await;
    seed_with(&b, &content).await;
    let leecher = start(fast()).await;
    let handle = leecher
        .node
        .download(hash, vec![provider(&a).await, provider(&b).await]);
    wait_for_bytes(&handle, content.len() as u64 / 3).await;
    a.node.shutdown().await;
    let progress = wait(&handle, 60).await;
    eprintln!("seed left halfway: {:?}", progress.sources);
    assert_stored(&leecher, hash, &content).await;
    leecher.node.shutdown().await;
    b.node.shutdown().await;
}

/// A shared file damaged on disk (same size and mtime, so only hashing
/// notices): the seed never sends the bad groups, re-hashes its copy after
/// the first failed read, marks it broken and withdraws it; the download
/// completes from the other seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_whose_copy_is_damaged_withdraws_it() {
    let content = data(8 * MIB, 13);
    let damaged = start(fast()).await;
    let path = damaged.dir.path().join("shared.bin");
    std::fs::write(&path, &content).unwrap();
    let store = damaged.node.store().clone();
    let add_path = path.clone();
    let added = tokio::task::spawn_blocking(move || {
        store.add_path(&add_path, spore_store::ImportMode::InPlace, &())
    })
    .await
    .unwrap()
    .unwrap();
    let hash = added.hash;
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for mib in 0..8 {
            let at = mib * MIB + 100;
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&[!content[at as usize]]).unwrap();
        }
        file.set_modified(mtime).unwrap();
    }
    let intact = start(limited(MIB / 2)).await;
    seed_with(&intact, &content).await;
    let leecher = start(fast()).await;
    let handle = leecher.node.download(
        hash,
        vec![provider(&damaged).await, provider(&intact).await],
    );
    let progress = wait(&handle, 60).await;
    eprintln!("sources: {:?}", progress.sources);
    assert_stored(&leecher, hash, &content).await;
    assert!(
        progress.sources.iter().all(|s| s.bad_groups == 0),
        "a damaged group reached the wire: {:?}",
        progress.sources
    );
    let state = damaged.node.store().get(&hash).unwrap().unwrap().state;
    assert!(
        matches!(state, spore_store::BlobState::Broken(_)),
        "the damaged copy is still {state:?}"
    );
    for n in [damaged, intact, leecher] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_banned_and_the_download_completes() {
    let content = data(8 * MIB, 5);
    let honest = start(limited(4 * MIB)).await;
    let hash = seed_with(&honest, &content).await;
    let FakePeer {
        peer: liar,
        addrs: liar_addrs,
        cancel: liar_cancel,
        task: liar_task,
        sent: liar_sent,
        ..
    } = start_fake(&content, Payloads::CorruptAllButLast, Duration::ZERO).await;
    let leecher = start(fast()).await;
    let handle = leecher
        .node
        .download(hash, vec![(liar, liar_addrs), provider(&honest).await]);
    let progress = wait(&handle, 60).await;
    eprintln!("with a liar: {:?}", progress.sources);
    assert_stored(&leecher, hash, &content).await;
    let l = progress
        .sources
        .iter()
        .find(|p| p.peer == liar)
        .expect("the liar was used");
    assert!(l.banned, "the liar is banned");
    assert_eq!(l.bad_groups, 3, "banned at the third bad group");
    // its bad responses were thrown away, and no more than it sent
    let sent = liar_sent.load(Ordering::SeqCst);
    assert!(l.wasted_bytes > 0, "{l:?}");
    assert!(
        l.wasted_bytes <= sent,
        "wasted {} of {sent} sent",
        l.wasted_bytes
    );
    assert_eq!(
        progress.wasted_bytes,
        progress.sources.iter().map(|s| s.wasted_bytes).sum::<u64>()
    );
    liar_cancel.cancel();
    liar_task.await.unwrap();
    leecher.node.shutdown().await;
    honest.node.shutdown().await;
}

/// A downloader tells its source what it holds in whole pieces, not per
/// verified batch: a super-seeding source follows those announcements, and a
/// piece is the unit a peer can be asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloader_tells_its_source_each_whole_piece() {
    let content = data(4 * MIB, 41);
    // 50 ms per response: the download lasts long enough to announce.
    let source = start_fake(&content, Payloads::Honest, Duration::from_millis(50)).await;
    let leecher = source.fetched_whole(&content).await;
    let hash = Hash::of(&content);

    let groups = group_count(content.len() as u64);
    let piece = u64::from(spore_transfer::scheduler::piece_groups_for(groups));
    assert!(
        groups / piece >= 8,
        "several pieces: {groups} groups of {piece}"
    );
    let heard = source.heard.lock().unwrap().clone();
    assert!(
        matches!(heard.first(), Some(Message::DontHave { .. })),
        "it starts with nothing: {heard:?}"
    );
    // Then its first whole pieces as a bitfield (`Have`: the source learns
    // the size), and each piece after that as a range.
    let mut told = spore_core::Bitfield::new(groups);
    let mut announcements = 0;
    for m in &heard[1..] {
        let ranges: Vec<std::ops::Range<u64>> = match m {
            Message::Have(slice) if slice.hash == hash => slice.present().collect(),
            Message::HaveRanges { hash: h, ranges } if *h == hash => ranges.clone(),
            other => panic!("after DontHave only Have and HaveRanges: {other:?}"),
        };
        for r in ranges {
            assert_eq!(r.start % piece, 0, "{r:?} starts inside a piece");
            assert!(
                r.end % piece == 0 || r.end == groups,
                "{r:?} ends inside a piece"
            );
            told.set_range(r);
        }
        announcements += 1;
    }
    // Announcements can trail the end of the download (the session closes),
    // but most of the blob was told, in far fewer messages than batches.
    assert!(
        told.count_ones() >= groups / 2,
        "told {} of {groups}",
        told.count_ones()
    );
    assert!(
        announcements <= groups / piece,
        "{announcements} announcements"
    );
    source.cancel.cancel();
    source.task.await.unwrap();
    leecher.node.shutdown().await;
}

/// Bad data in the size check counts like any bad group: the liar is
/// banned at its third, whether they came during the size check, after it,
/// or both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_caught_at_the_size_check_is_banned_at_its_third_bad_group() {
    let content = data(4 * MIB, 10);
    let honest = start(limited(2 * MIB)).await;
    let hash = seed_with(&honest, &content).await;
    let FakePeer {
        peer: liar,
        addrs: liar_addrs,
        cancel: liar_cancel,
        task: liar_task,
        ..
    } = start_fake(&content, Payloads::CorruptAll, Duration::ZERO).await;
    let leecher = start(fast()).await;
    // the ticket names only the liar; the honest seed is found among connected peers
    let (honest_id, honest_addrs) = provider(&honest).await;
    leecher
        .node
        .net()
        .dial_peer(honest_id, honest_addrs)
        .await
        .unwrap();
    let handle = leecher.node.download(hash, vec![(liar, liar_addrs)]);
    let progress = wait(&handle, 60).await;
    eprintln!("liar at the size check: {:?}", progress.sources);
    assert_stored(&leecher, hash, &content).await;
    let l = progress
        .sources
        .iter()
        .find(|p| p.peer == liar)
        .expect("the liar was used");
    assert!(l.banned, "the liar is banned");
    assert_eq!(l.bad_groups, 3, "banned at the third bad group");
    liar_cancel.cancel();
    liar_task.await.unwrap();
    leecher.node.shutdown().await;
    honest.node.shutdown().await;
}

/// The real binary's lying mode (`--debug-lie-uploads`): a node that
/// corrupts what it uploads is banned at its third bad group, the download
/// verifies from the honest seed, and what the liar sent is counted as
/// wasted (never more than it sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_lying_mode_is_banned_and_its_waste_counted() {
    let content = data(8 * MIB, 11);
    let honest = start(limited(4 * MIB)).await;
    let hash = seed_with(&honest, &content).await;
    let liar = start(TransferConfig {
        debug_lie_uploads: true,
        ..fast()
    })
    .await;
    seed_with(&liar, &content).await;
    let leecher = start(fast()).await;
    let handle = leecher
        .node
        .download(hash, vec![provider(&liar).await, provider(&honest).await]);
    let progress = wait(&handle, 60).await;
    eprintln!("with a lying node: {:?}", progress.sources);
    assert_stored(&leecher, hash, &content).await;
    let liar_id = liar.node.net().local_peer_id();
    let l = progress
        .sources
        .iter()
        .find(|p| p.peer == liar_id)
        .expect("the liar was used");
    assert!(l.banned, "the liar is banned: {l:?}");
    assert_eq!(l.bad_groups, 3, "banned at the third bad group");
    assert_eq!(l.useful_bytes, 0, "every group it sent was bad");
    let sent = liar.node.transfer().upload_stats().per_peer[&leecher.node.net().local_peer_id()];
    assert!(l.wasted_bytes > 0, "{l:?}");
    assert!(
        l.wasted_bytes <= sent,
        "wasted {} of {sent} sent",
        l.wasted_bytes
    );
    let h = progress
        .sources
        .iter()
        .find(|p| p.peer == honest.node.net().local_peer_id())
        .unwrap();
    assert_eq!((h.bad_groups, h.wasted_bytes, h.banned), (0, 0, false));
    assert_eq!(h.useful_bytes, content.len() as u64);
    assert_eq!(progress.wasted_bytes, l.wasted_bytes);
    for n in [leecher, liar, honest] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_download_resumes_where_it_was() {
    let content = data(12 * MIB, 6);
    let seed = start(limited(3 * MIB)).await;
    let hash = seed_with(&seed, &content).await;
    let leecher = start(fast()).await;
    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    wait_for_bytes(&handle, 5 * MIB).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // a flush happened
    let TestNode { node, dir } = leecher;
    node.shutdown().await;
    assert!(handle.wait().await.is_err(), "the first run did not finish");
    let uploaded_before = seed.node.transfer().upload_stats().total;

    let leecher = start_in(dir, fast()).await;
    let store = leecher.node.store().clone();
    let record = tokio::task::spawn_blocking(move || store.get(&hash).unwrap())
        .await
        .unwrap()
        .expect("the partial survived");
    let spore_store::BlobState::Partial(bits) = record.state else {
        panic!("not partial: {:?}", record.state)
    };
    let kept = bits.count_ones() * GROUP_SIZE;
    assert!(kept >= 4 * MIB, "only {kept} bytes kept");

    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    let progress = wait(&handle, 60).await;
    assert_stored(&leecher, hash, &content).await;
    let second = seed.node.transfer().upload_stats().total - uploaded_before;
    let missing = content.len() as u64 - kept;
    eprintln!(
        "resume: kept {kept}, resumed {}, second run fetched {second} for {missing} missing",
        progress.resumed_bytes
    );
    assert!(progress.resumed_bytes >= kept);
    assert!(
        second <= missing + content.len() as u64 / 10,
        "the second run fetched {second} bytes for {missing} missing"
    );
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_from_one_peer_is_capped_and_others_still_download() {
    let seed = start(TransferConfig {
        max_sessions_per_peer: 4,
        ..fast()
    })
    .await;
    let content = data(4 * MIB, 9);
    let hash = seed_with(&seed, &content).await;

    // A bare peer opens 12 sessions, one after the other, and keeps them.
    let (cancel, flooder, seed_id) = bare_peer_of(&seed).await;
    let mut held = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..12 {
        let mut raw = RawSession::open(&flooder, seed_id).await;
        raw.send(&[raw_hello(hash)]).await;
        match raw.next().await {
            Message::Hello(_) => {
                accepted += 1;
                held.push(raw);
            }
            Message::Error {
                code: wire::ErrorCode::Refused,
                message,
            } => {
                assert!(message.contains("this peer"), "{message}");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((accepted, refused), (4, 8), "the flooder got its own cap");

    // Meanwhile another peer downloads as usual.
    let leecher = start(fast()).await;
    let handle = leecher.node.download(hash, vec![provider(&seed).await]);
    wait(&handle, 30).await;
    assert_stored(&leecher, hash, &content).await;

    // Once the flooder lets go, its slots come back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut raw = RawSession::open(&flooder, seed_id).await;
    raw.send(&[raw_hello(hash)]).await;
    assert!(matches!(raw.next().await, Message::Hello(_)));
    cancel.cancel();
    flooder.shutdown().await;
    leecher.node.shutdown().await;
    seed.node.shutdown().await;
}

/// A holder that abandons a response halfway (it read our `Cancel`, or
/// choked us) has still sent whole groups that verify: they are kept, and
/// only the rest is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verified_part_of_an_abandoned_response_is_kept() {
    let content = data(4 * MIB, 43);
    let source = start_fake(
        &content,
        Payloads::AbandonFirstThree,
        Duration::from_millis(20),
    )
    .await;
    let leecher = source.fetched_whole(&content).await;

    let requests = source.requests.lock().unwrap().clone();
    let abandoned: Vec<(usize, std::ops::Range<u64>, u64)> = requests
        .iter()
        .enumerate()
        .filter_map(|(i, (r, cut))| cut.map(|k| (i, r.clone(), k)))
        .collect();
    assert_eq!(abandoned.len(), 3, "{requests:?}");
    // How often `g` was asked for after request `i`.
    let asked_after = |i: usize, g: u64| {
        requests[i + 1..]
            .iter()
            .filter(|(r, _)| r.contains(&g))
            .count()
    };
    for (i, r, kept) in &abandoned {
        for g in r.start..r.start + kept {
            assert_eq!(
                asked_after(*i, g),
                0,
                "group {g}, delivered before {r:?} was abandoned, asked again: {requests:?}"
            );
        }
        for g in r.start + kept..r.end {
            assert!(
                asked_after(*i, g) >= 1,
                "group {g}, never delivered, not asked again: {requests:?}"
            );
        }
    }
    source.cancel.cancel();
    source.task.await.unwrap();
    leecher.node.shutdown().await;
}

/// A source that quits in the middle of a response spent its upload on
/// the groups that arrived whole: they are verified and kept, not asked
/// for again.
#[tokio::test]
async fn the_verified_part_of_a_response_cut_by_a_vanishing_source_is_kept() {
    let content = data(4 * MIB, 44);
    let source = start_fake(&content, Payloads::QuitMidFirst, Duration::from_millis(20)).await;
    let leecher = source.fetched_whole(&content).await;

    let requests = source.requests.lock().unwrap().clone();
    let (i, cut, kept) = requests
        .iter()
        .enumerate()
        .find_map(|(i, (r, cut))| cut.map(|k| (i, r.clone(), k)))
        .expect("a response was cut");
    assert!(kept >= 2, "{requests:?}");
    let asked_again = |g: u64| requests[i + 1..].iter().any(|(r, _)| r.contains(&g));
    for g in cut.start..cut.start + kept {
        assert!(
            !asked_again(g),
            "group {g}, whole before the source quit, asked again: {requests:?}"
        );
    }
    assert!(
        (cut.start + kept..cut.end).all(asked_again),
        "the rest of {cut:?} must be asked again: {requests:?}"
    );
    source.cancel.cancel();
    source.task.await.unwrap();
    leecher.node.shutdown().await;
}

/// A request the seed encodes ahead (while it sends the one before) and
/// that is then cancelled gets `Response { Cancelled }` and not one byte;
/// the requests around it are answered in full and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_encoded_ahead_sends_nothing() {
    let seed = start(fast()).await;
    let content = data(8 * MIB, 17);
    let hash = seed_with(&seed, &content).await;
    let (cancel, downloader, seed_id) = bare_peer_of(&seed).await;
    let mut raw = RawSession::unchoked(&downloader, seed_id, hash).await;

    let piece = |i: u64| i * 64..(i + 1) * 64;
    let requests = [(1, piece(0)), (2, piece(1)), (3, piece(2))];
    raw.send(
        &requests
            .clone()
            .map(|(id, groups)| Message::Request(wire::Request { id, hash, groups })),
    )
    .await;
    let mut log: Vec<Message> = Vec::new();
    loop {
        let msg = raw.next().await;
        let started = matches!(msg, Message::Response { id: 1, .. });
        log.push(msg);
        if started {
            // Request 2 is being encoded ahead now (or is about to be).
            raw.send(&[Message::Cancel { id: 2 }]).await;
            break;
        }
    }
    while !matches!(log.last(), Some(Message::End { id: 3, .. })) {
        log.push(raw.next().await);
    }

    let payload = |id: u64| -> Vec<u8> {
        log.iter()
            .filter_map(|m| match m {
                Message::Data { id: i, data } if *i == id => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let encoded = |groups: std::ops::Range<u64>| {
        let c = wire::group_chunks(groups);
        let mut out = Vec::new();
        let blob = seed.node.store().blob(&hash).unwrap();
        blob.encode(
            &ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end)),
            &mut out,
        )
        .unwrap();
        out
    };
    let answers: Vec<&Message> = log
        .iter()
        .filter(|m| matches!(m, Message::Response { .. } | Message::End { .. }))
        .collect();
    assert_eq!(
        answers,
        [
            &Message::Response {
                id: 1,
                status: Status::Ok
            },
            &Message::Response {
                id: 2,
                status: Status::Cancelled
            },
            &Message::End {
                id: 1,
                status: Status::Ok
            },
            &Message::Response {
                id: 3,
                status: Status::Ok
            },
            &Message::End {
                id: 3,
                status: Status::Ok
            },
        ]
    );
    assert!(payload(2).is_empty(), "the cancelled request sent data");
    assert!(
        payload(1) == encoded(piece(0)),
        "request 1's payload differs"
    );
    assert!(
        payload(3) == encoded(piece(2)),
        "request 3's payload differs"
    );
    cancel.cancel();
    downloader.shutdown().await;
    seed.node.shutdown().await;
}

/// A seed starts the queued request for groups none of its other peers
/// holds before requests for groups they hold (any of them could send
/// those), whatever order they were asked in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_groups_nobody_else_holds_is_served_first() {
    let seed = start(fast()).await;
    // 128 groups: under super-seeding's floor, so both peers are told all.
    let content = data(2 * MIB, 29);
    let size = content.len() as u64;
    let hash = seed_with(&seed, &content).await;
    let (cancel, downloader, seed_id) = bare_peer_of(&seed).await;

    // One session says it holds the first half ...
    let _holder = RawSession::holding(&downloader, seed_id, hash, size, 0..64).await;
    // ... and another asks for two runs of that half, then one of the other.
    let mut asker = RawSession::unchoked(&downloader, seed_id, hash).await;
    let requests = [(1, 0..8), (2, 8..16), (3, 100..108)];
    asker
        .send(
            &requests
                .clone()
                .map(|(id, groups)| Message::Request(wire::Request { id, hash, groups })),
        )
        .await;
    let started = asker.served_order(requests.len()).await;
    // Request 1 may have started before the others were read.
    assert!(
        started == [3, 1, 2] || started == [1, 3, 2],
        "served in the order {started:?}"
    );
    cancel.cancel();
    downloader.shutdown().await;
    seed.node.shutdown().await;
}

/// A response encoded ahead that only copies what another peer holds gives
/// way to a request for groups nobody else holds that arrives after it: the
/// first copy goes out right after the response being sent, not one later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_encoded_ahead_gives_way_to_a_first_copy() {
    // 1 MiB/s: the first response (512 KiB) takes about half a second.
    let seed = start(limited(MIB)).await;
    // 128 groups: under super-seeding's floor, so both peers are told all.
    let content = data(2 * MIB, 31);
    let size = content.len() as u64;
    let hash = seed_with(&seed, &content).await;
    let (cancel, downloader, seed_id) = bare_peer_of(&seed).await;

    // One session holds groups 0..96. Another asks for three runs of them;
    // once the first is under way (the second is then encoded ahead), for a
    // run nobody holds.
    let _holder = RawSession::holding(&downloader, seed_id, hash, size, 0..96).await;
    let mut asker = RawSession::unchoked(&downloader, seed_id, hash).await;
    let request = |id, groups| Message::Request(wire::Request { id, hash, groups });
    asker
        .send(&[request(1, 0..32), request(2, 32..40), request(3, 40..48)])
        .await;
    while !matches!(asker.next().await, Message::Response { id: 1, .. }) {}
    asker.send(&[request(4, 100..108)]).await;
    let mut started = vec![1];
    started.extend(asker.served_order(4).await);
    // (2 and 3 then go in either order: 2 counts as held by the asker
    // since it was encoded.)
    assert_eq!(started[..2], [1, 4], "served in the order {started:?}");
    cancel.cancel();
    downloader.shutdown().await;
    seed.node.shutdown().await;
}

/// A downloader alone with a super-seeding seed is told a window of pieces
/// once it is interested, and everything after its lone grace, though it
/// sends nothing more: the seed's session runs the blob's clock by itself
/// (a timer at the grace's end, ~0.2 s here; without it the next tick of
/// the session told it, ~1 s), not only when the peer speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_peer_is_told_everything_when_its_grace_ends_unprompted() {
    let seed = start(fast()).await;
    // 512 groups: over super-seeding's 256-group floor.
    let content = data(8 * MIB, 23);
    let hash = seed_with(&seed, &content).await;
    let (cancel, downloader, seed_id) = bare_peer_of(&seed).await;
    let mut raw = RawSession::open(&downloader, seed_id).await;
    raw.send(&[raw_hello(hash), Message::Interested]).await;
    let started = std::time::Instant::now();
    let mut windows = 0;
    loop {
        match raw.next().await {
            Message::HaveAll { .. } => break,
            Message::Have(_) | Message::HaveRanges { .. } => windows += 1,
            _ => {}
        }
    }
    eprintln!("told everything {:?} after Interested", started.elapsed());
    assert!(windows > 0, "told everything at once, never a window");
    cancel.cancel();
    downloader.shutdown().await;
    seed.node.shutdown().await;
}

/// Cut-through: a downloader tells its peers which groups it has asked for
/// (`Coming`), and holds a peer's request for such a group until the group
/// verifies, then serves it, instead of answering `NotAvailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_groups_coming_to_a_downloader_is_served_once_they_verify() {
    // A slow source: each response waits 200 ms.
    let content = data(2 * MIB, 41);
    let hash = Hash::of(&content);
    let source = start_fake(&content, Payloads::Honest, Duration::from_millis(200)).await;
    let leecher = start(fast()).await;
    let download = leecher
        .node
        .download(hash, vec![(source.peer, source.addrs.clone())]);
    let (cancel, asker, leecher_id) = bare_peer_of(&leecher).await;
    let mut raw = RawSession::open(&asker, leecher_id).await;
    raw.send(&[raw_hello(hash), Message::Interested]).await;

    // Read until a group is told coming that the leecher has not announced.
    let size = content.len() as u64;
    let mut have = spore_core::Bitfield::new(group_count(size));
    let mut unchoked = false;
    let group = loop {
        match raw.next().await {
            Message::Unchoke => unchoked = true,
            Message::Have(slice) => slice.apply(&mut have),
            Message::HaveRanges { ranges, .. } => {
                ranges.into_iter().for_each(|r| have.set_range(r))
            }
            Message::Coming { hash: h, ranges } => {
                assert_eq!(h, hash);
                let fresh = ranges.into_iter().flatten().find(|&g| !have.get(g));
                if let Some(g) = fresh
                    && unchoked
                {
                    break g;
                }
            }
            _ => {}
        }
    };
    raw.send(&[Message::Request(wire::Request {
        id: 1,
        hash,
        groups: group..group + 1,
    })])
    .await;
    let mut payload = Vec::new();
    loop {
        match raw.next().await {
            Message::Response { id: 1, status } => assert_eq!(status, Status::Ok),
            Message::Data { id: 1, data } => payload.extend_from_slice(&data),
            Message::End { id: 1, status } => {
                assert_eq!(status, Status::Ok);
                break;
            }
            _ => {}
        }
    }
    let reference = Store::in_memory();
    reference.add_bytes(&content, "blob").unwrap();
    let c = wire::group_chunks(group..group + 1);
    let mut expected = Vec::new();
    reference
        .blob(&hash)
        .unwrap()
        .encode(
            &ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end)),
            &mut expected,
        )
        .unwrap();
    assert!(payload == expected, "group {group}'s payload differs");
    wait(&download, 60).await;
    cancel.cancel();
    asker.shutdown().await;
    leecher.node.shutdown().await;
    source.cancel.cancel();
}

/// A bare libp2p peer (no store, no transfer engine) connected to `seed`:
/// its cancel token, the peer, and the seed's id.
async fn bare_peer_of(seed: &TestNode) -> (CancellationToken, NetNode, PeerId) {
    let (seed_id, seed_addrs) = provider(seed).await;
    let cancel = CancellationToken::new();
    let peer = NetNode::start(NetConfig::for_tests(), cancel.child_token())
        .await
        .unwrap();
    peer.handle().dial_peer(seed_id, seed_addrs).await.unwrap();
    (cancel, peer, seed_id)
}

/// Both halves of a raw `/spore/blob/1` stream, with its frame decoder.
struct RawSession {
    r: futures::io::ReadHalf<spore_net::Stream>,
    w: futures::io::WriteHalf<spore_net::Stream>,
    decoder: Decoder,
}

/// The `Hello` of a bare downloader of `hash`.
fn raw_hello(hash: Hash) -> Message {
    Message::Hello(Hello {
        version: wire::VERSION,
        hash,
        max_in_flight: 8,
        capabilities: 0,
    })
}

impl RawSession {
    /// A new `/spore/blob/1` stream from `node` to `peer` (connected).
    async fn open(node: &NetNode, peer: PeerId) -> Self {
        let stream = node
            .handle()
            .open_stream(peer, wire::PROTOCOL)
            .await
            .unwrap();
        let (r, w) = stream.split();
        Self {
            r,
            w,
            decoder: Decoder::new(),
        }
    }

    /// A session that says it holds `held` of `hash` (a blob of `size`
    /// bytes), once `peer` has read that (it answered a `Ping` sent after).
    async fn holding(
        node: &NetNode,
        peer: PeerId,
        hash: Hash,
        size: u64,
        held: std::ops::Range<u64>,
    ) -> Self {
        let mut session = Self::open(node, peer).await;
        let mut bits = spore_core::Bitfield::new(group_count(size));
        bits.set_range(held);
        let mut greeting = vec![raw_hello(hash)];
        greeting.extend(wire::have_messages(hash, size, &bits));
        greeting.push(Message::Ping { nonce: 7 });
        session.send(&greeting).await;
        while !matches!(session.next().await, Message::Pong { nonce: 7 }) {}
        session
    }

    /// A session that wants `hash` and that `peer` has unchoked.
    async fn unchoked(node: &NetNode, peer: PeerId, hash: Hash) -> Self {
        let mut session = Self::open(node, peer).await;
        session.send(&[raw_hello(hash), Message::Interested]).await;
        while !matches!(session.next().await, Message::Unchoke) {}
        session
    }

    /// Reads until `responses` payloads have ended, each `Ok`; the ids in
    /// the order their responses started.
    async fn served_order(&mut self, responses: usize) -> Vec<u64> {
        let (mut started, mut ended) = (Vec::new(), 0);
        while ended < responses {
            match self.next().await {
                Message::Response { id, status } => {
                    assert_eq!(status, Status::Ok);
                    started.push(id);
                }
                Message::End { status, .. } => {
                    assert_eq!(status, Status::Ok);
                    ended += 1;
                }
                _ => {}
            }
        }
        started
    }

    async fn send(&mut self, msgs: &[Message]) {
        let mut out = Vec::new();
        for m in msgs {
            wire::encode(m, &mut out).unwrap();
        }
        self.w.write_all(&out).await.unwrap();
        self.w.flush().await.unwrap();
    }

    /// The next frame; panics if none comes within 10 s.
    async fn next(&mut self) -> Message {
        let mut buf = vec![0u8; 64 * 1024];
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(m) = self.decoder.decode_next().unwrap() {
                    return m;
                }
                let n = self.r.read(&mut buf).await.unwrap();
                assert!(n > 0, "the seed closed the stream");
                self.decoder.push(&buf[..n]);
            }
        })
        .await
        .expect("a frame within 10 s")
    }
}

// ---- fake sources: honest, or lying ----

/// What a fake source does to the payloads it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payloads {
    Honest,
    /// Every payload corrupted except where it holds the blob's last group
    /// (so it passes the size check and has to be caught per group).
    CorruptAllButLast,
    /// Every payload corrupted (caught by the size check too).
    CorruptAll,
    /// Honest, but its first three responses of four groups or more are
    /// abandoned halfway: their first half of whole groups and a few bytes
    /// of the next, then `End { Cancelled }` (a holder that read a
    /// `Cancel` mid-response, or choked).
    AbandonFirstThree,
    /// Honest, but in the middle of its first response of four groups or
    /// more (after its first half of whole groups and a few bytes of the
    /// next) it closes the stream without ending the response: a source
    /// that quit, or whose connection broke.
    QuitMidFirst,
}

/// The groups of every request a fake source got, and whether it abandoned
/// the response after this many whole groups.
type RequestLog = Arc<Mutex<Vec<(std::ops::Range<u64>, Option<u64>)>>>;

/// A bare network node speaking `/spore/blob/1` as a source of one blob.
struct FakePeer {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Payload bytes it sent.
    sent: Arc<AtomicU64>,
    /// What downloaders told it they hold (`Have…` and `DontHave` frames).
    heard: Arc<Mutex<Vec<Message>>>,
    requests: RequestLog,
}

impl FakePeer {
    /// A fresh node downloads `content` from this source alone and stores
    /// it intact.
    async fn fetched_whole(&self, content: &[u8]) -> TestNode {
        let leecher = start(fast()).await;
        let hash = Hash::of(content);
        let handle = leecher
            .node
            .download(hash, vec![(self.peer, self.addrs.clone())]);
        wait(&handle, 60).await;
        assert_stored(&leecher, hash, content).await;
        leecher
    }
}

/// `pace`: how long it waits before each response.
async fn start_fake(content: &[u8], payloads: Payloads, pace: Duration) -> FakePeer {
    let store = Store::in_memory();
    let hash = store.add_bytes(content, "blob").unwrap().hash;
    let blob = store.blob(&hash).unwrap();
    let size = content.len() as u64;
    let cancel = CancellationToken::new();
    let net = NetNode::start(NetConfig::for_tests(), cancel.child_token())
        .await
        .unwrap();
    let peer = net.peer_id();
    let addrs = net.handle().listen_addrs().await.unwrap();
    let mut incoming = net.handle().accept_streams(wire::PROTOCOL).unwrap();
    let stop = cancel.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (counter, log, asked) = (sent.clone(), heard.clone(), requests.clone());
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                next = incoming.next() => {
                    let Some((_, stream)) = next else { break };
                    let fake = FakeSession { hash, size, blob: blob.clone(), payloads, pace, sent: counter.clone(), heard: log.clone(), requests: asked.clone() };
                    sessions.spawn(fake.run(stream));
                }
            }
        }
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
        net.shutdown().await;
    });
    FakePeer {
        peer,
        addrs,
        cancel,
        task,
        sent,
        heard,
        requests,
    }
}

struct FakeSession {
    hash: Hash,
    size: u64,
    blob: spore_store::Blob,
    payloads: Payloads,
    pace: Duration,
    sent: Arc<AtomicU64>,
    heard: Arc<Mutex<Vec<Message>>>,
    requests: RequestLog,
}

impl FakeSession {
    async fn run(self, stream: spore_net::Stream) {
        let Self {
            hash,
            size,
            blob,
            payloads,
            pace,
            sent,
            heard,
            requests,
        } = self;
        let (mut r, mut w) = stream.split();
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let last = group_count(size) - 1;
        loop {
            let msg = loop {
                match decoder.decode_next() {
                    Ok(Some(m)) => break m,
                    Ok(None) => {}
                    Err(_) => return,
                }
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => decoder.push(&buf[..n]),
                }
            };
            let mut out = Vec::new();
            match msg {
                Message::Hello(_) => {
                    for m in [
                        Message::Hello(Hello {
                            version: 1,
                            hash,
                            max_in_flight: 64,
                            capabilities: 0,
                        }),
                        Message::HaveAll { hash, size },
                    ] {
                        wire::encode(&m, &mut out).unwrap();
                    }
                }
                Message::Interested => wire::encode(&Message::Unchoke, &mut out).unwrap(),
                Message::Have(_) | Message::HaveRanges { .. } | Message::DontHave { .. } => {
                    heard.lock().unwrap().push(msg);
                }
                Message::Request(req) => {
                    tokio::time::sleep(pace).await;
                    let c = wire::group_chunks(req.groups.clone());
                    let ranges = ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end));
                    let mut payload = Vec::new();
                    blob.encode(&ranges, &mut payload).unwrap();
                    let corrupt = match payloads {
                        Payloads::Honest | Payloads::AbandonFirstThree | Payloads::QuitMidFirst => {
                            false
                        }
                        Payloads::CorruptAllButLast => !req.groups.contains(&last),
                        Payloads::CorruptAll => true,
                    };
                    let n = req.groups.end - req.groups.start;
                    let abandon_after = {
                        let mut log = requests.lock().unwrap();
                        let abandoned = log.iter().filter(|(_, a)| a.is_some()).count();
                        let cut = match payloads {
                            Payloads::AbandonFirstThree => n >= 4 && abandoned < 3,
                            Payloads::QuitMidFirst => n >= 4 && abandoned < 1,
                            _ => false,
                        }
                        .then_some(n / 2);
                        log.push((req.groups.clone(), cut));
                        cut
                    };
                    if let Some(kept) = abandon_after {
                        // A range's encoding starts with the encoding of its
                        // first groups (pre-order): cut there, plus a few
                        // bytes of what follows.
                        let c = wire::group_chunks(req.groups.start..req.groups.start + kept);
                        let mut prefix = Vec::new();
                        blob.encode(
                            &ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end)),
                            &mut prefix,
                        )
                        .unwrap();
                        assert_eq!(&payload[..prefix.len()], &prefix[..]);
                        payload.truncate(prefix.len() + 100);
                    }
                    if corrupt {
                        let at = payload.len() - 1;
                        payload[at] ^= 0xff; // the request's last group is bad
                    }
                    sent.fetch_add(payload.len() as u64, Ordering::SeqCst);
                    let header = Message::Response {
                        id: req.id,
                        status: Status::Ok,
                    };
                    wire::encode(&header, &mut out).unwrap();
                    let mut frames = DataWriter::new(req.id, 256 * 1024, |f: Vec<u8>| {
                        out.extend_from_slice(&f);
                        Ok(())
                    });
                    std::io::Write::write_all(&mut frames, &payload).unwrap();
                    frames.finish().unwrap();
                    if abandon_after.is_some() && payloads == Payloads::QuitMidFirst {
                        let _ = w.write_all(&out).await;
                        let _ = w.close().await;
                        return;
                    }
                    let end = Message::End {
                        id: req.id,
                        status: if abandon_after.is_some() {
                            Status::Cancelled
                        } else {
                            Status::Ok
                        },
                    };
                    wire::encode(&end, &mut out).unwrap();
                }
                Message::Ping { nonce } => {
                    wire::encode(&Message::Pong { nonce }, &mut out).unwrap()
                }
                Message::Error { .. } => return,
                _ => {}
            }
            if !out.is_empty() && (w.write_all(&out).await.is_err() || w.flush().await.is_err()) {
                return;
            }
        }
    }
}
